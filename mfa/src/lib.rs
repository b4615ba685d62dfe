//! Castellan's second factors: TOTP authenticator apps, WebAuthn passkeys
//! and one-time recovery codes, kept in SQLite (one node) or PostgreSQL
//! (several nodes), with TOTP secrets encrypted at rest.
//!
//! The same store keeps users' attribute release consent decisions.
//!
//! No HTTP here: the web crate calls [`Factors`] and renders.

mod consents;
mod error;
mod factors;
mod key;
mod passkey;
mod recovery;
mod settings;
mod step;
mod store;
mod totp;

pub use error::MfaError;
pub use factors::{Enrolment, FactorInfo, FactorKind, Factors, Verified};
pub use passkey::MAX_RESPONSE_BYTES;
pub use recovery::RecoveryCodes;
pub use settings::{KeySource, MfaSettings, StoreLocation};
pub use step::{script_json, Proof, StepView};
pub use totp::{code_at as totp_code_at, TotpEnrolment};

/// How recent a full login must be to add a factor (on `/mfa`, or at a
/// step-up that would enrol the first one): whoever holds an old session
/// must not bind their own phone to the account.
pub const FRESH_LOGIN: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The longest code accepted in the `otp` field.
pub const MAX_CODE_CHARS: usize = 64;
/// The longest factor label.
pub const MAX_LABEL_CHARS: usize = 100;

/// The TOTP check without the store, for the benchmark.
#[doc(hidden)]
pub mod bench {
    use crate::key::Keys;

    /// A sealed TOTP secret as a row holds it.
    pub struct SealedTotp {
        keys: Keys,
        sealed: String,
    }

    impl SealedTotp {
        pub fn new(secret_b32: &str) -> SealedTotp {
            let keys = Keys::new(&[9; 32]);
            let secret = crate::totp::decode_secret(secret_b32).expect("a secret");
            let sealed = keys.seal("alice", "f", &secret).expect("sealed");
            SealedTotp { keys, sealed }
        }

        /// What verify_otp does per factor: open the secret, check the window.
        pub fn verify(&self, code: &str, now_unix: u64) -> Option<u64> {
            let secret = self.keys.open("alice", "f", &self.sealed).ok()?;
            crate::totp::matching_step(&secret, &crate::totp::digits(code)?, now_unix)
        }
    }
}
