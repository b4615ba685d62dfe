/// What went wrong with a second factor. Codes, secrets and keys never
/// appear in a message.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The code matches no factor of the user (nor an unused recovery code).
    #[error("the code is not valid")]
    InvalidCode,
    /// The code was right, but its time step was already accepted.
    #[error("the code was already used")]
    Replayed,
    /// A passkey's signature counter did not grow: two copies of its key exist.
    #[error("the passkey's signature counter went backwards: the credential may be cloned")]
    ClonedCredential,
    #[error("no such factor")]
    NotFound,
    /// Input over its limit or malformed (a label too long, a user name with NUL...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The store holds factors encrypted under another key.
    #[error("{0}")]
    KeyMismatch(String),
    #[error("MFA store: {0}")]
    Store(String),
    #[error("MFA key: {0}")]
    Key(String),
    #[error("WebAuthn: {0}")]
    WebAuthn(String),
}

impl From<sqlx::Error> for MfaError {
    fn from(e: sqlx::Error) -> Self {
        MfaError::Store(e.to_string())
    }
}
