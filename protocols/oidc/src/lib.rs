//! The OpenID Connect provider and OAuth 2.0 authorization server of
//! Castellan, a client of the CAS core: an authorization request waits in the
//! ticket store while the browser logs in at `/login`, and comes back with a
//! service ticket that the provider validates through the engine API.
//!
//! This crate holds what is independent of HTTP: clients, request checks,
//! the records kept in the store, the tokens and the signing keys. The web
//! crate maps them to endpoints.

pub mod authorize;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod records;
pub mod tokens;

pub use client::{ClientRegistry, GrantTypes, OidcClient, Subject};
pub use error::{ErrorCode, OAuthError};
pub use keys::{Algorithm, KeyError, Keyring, SigningKeys};
