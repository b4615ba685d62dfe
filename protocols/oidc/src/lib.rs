//! The OpenID Connect provider and OAuth 2.0 authorization server of
//! Castellan, a client of the CAS core: an authorization request waits in the
//! ticket store while the browser logs in at `/login`, and comes back with a
//! service ticket that the provider validates through the engine API.
//!
//! This crate holds the provider's rules, independent of HTTP framing: the
//! web crate parses requests, calls a [`Provider`] method and renders its
//! answer.

pub mod access;
pub mod acr;
pub mod authorize;
pub mod claims;
pub mod client;
pub mod client_assertion;
pub mod config;
pub mod cors;
pub mod device;
pub mod discovery;
pub mod dpop;
pub mod error;
pub mod exchange;
pub mod grants;
mod id_tokens;
pub mod keys;
pub mod logout;
pub mod par;
pub mod parameters;
pub mod provider;
pub mod records;
pub mod sign_in;
pub mod signing_keys;
pub mod tokens;

pub use client::{ClientRegistry, GrantTypes, OidcClient, Subject};
pub use discovery::DiscoveryError;
pub use error::{ErrorCode, OAuthError};
pub use keys::{Algorithm, KeyError, Keyring, SigningKeys};
pub use logout::{EndSessionError, OidcLogout};
pub use parameters::{parameters, MAX_TOKEN_LEN};
pub use provider::{OidcSettings, Provider};
pub use records::ResponseMode;
pub use sign_in::{ClientAnswer, LoginRequest, SignInError};
pub use signing_keys::{KeyCell, SigningKeysError};

#[cfg(test)]
mod advanced_tests;
#[cfg(test)]
mod tests;
