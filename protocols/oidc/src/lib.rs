//! The OpenID Connect provider of Castellan. So far: its token signing keys
//! (generated in `data_dir`, rotated, published as a JWKS). The provider's
//! flows come with the OIDC issue.

pub mod keys;

pub use keys::{KeyError, SigningKeys};
