//! The CAS 1/2/3 protocol (Apereo "CAS Protocol 3.0 Specification").
//!
//! This crate holds the protocol's rules: which parameters the validation
//! endpoints take, how the engine's outcome is rendered (CAS 1 text, CAS 2/3
//! XML, JSON, SAML 1.1), how PGTs reach a proxy callback and how single
//! logout reaches a service. The web layer only routes HTTP to it.

pub mod config;
pub mod error;
pub mod proxy;
pub mod proxy_callback;
pub mod response;
pub mod saml11;
pub mod service_url;
pub mod single_logout;
pub mod time_format;
pub mod validate;
pub mod xml;

pub use error::{CasError, CasErrorCode};
pub use proxy::{proxy, ProxyParams};
pub use proxy_callback::HttpProxyCallback;
pub use response::CasResponse;
pub use saml11::saml_validate;
pub use single_logout::CasLogout;
pub use validate::{validate, ValidateParams, ValidationEndpoint};

/// Longest service URL accepted anywhere (browsers stop near 2k-8k).
pub const MAX_SERVICE_LEN: usize = 8 * 1024;
/// Longest ticket accepted before it is even looked at.
pub const MAX_TICKET_LEN: usize = 256;
