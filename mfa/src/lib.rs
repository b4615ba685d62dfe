//! Castellan's second factors: TOTP authenticator apps, WebAuthn passkeys
//! and one-time recovery codes, kept in SQLite (one node) or PostgreSQL
//! (several nodes), with TOTP secrets encrypted at rest.
//!
//! No HTTP here: the web crate calls [`Factors`] and renders.

mod error;
mod factors;
mod key;
mod passkey;
mod recovery;
mod settings;
mod store;
mod totp;

pub use error::MfaError;
pub use factors::{Enrolment, FactorInfo, FactorKind, Factors, Verified};
pub use passkey::MAX_RESPONSE_BYTES;
pub use recovery::RecoveryCodes;
pub use settings::{KeySource, MfaSettings, StoreLocation};
pub use totp::{code_at as totp_code_at, TotpEnrolment};

/// The longest code accepted in the `otp` field.
pub const MAX_CODE_CHARS: usize = 64;
/// The longest factor label.
pub const MAX_LABEL_CHARS: usize = 100;
