use std::path::PathBuf;

/// Where the factors are kept, how they are labelled and protected.
#[derive(Debug, Clone)]
pub struct MfaSettings {
    pub store: StoreLocation,
    /// The label in authenticator apps ("Castellan").
    pub issuer: String,
    pub key: KeySource,
    /// The WebAuthn origin: the public URL's origin.
    pub rp_origin: url::Url,
    /// The WebAuthn relying-party id: the public URL's host.
    pub rp_id: String,
    /// The name the browser shows.
    pub rp_name: String,
}

#[derive(Clone)]
pub enum StoreLocation {
    /// One node: a file (in data_dir).
    Sqlite { path: PathBuf },
    /// Several nodes.
    Postgres { url: String },
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            // The URL may hold a password.
            StoreLocation::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &crate::store::redact_url(url))
                .finish(),
        }
    }
}

/// The 32-byte key that encrypts TOTP secrets and keys the recovery-code
/// hashes. Every node on one store needs the same.
#[derive(Clone)]
pub enum KeySource {
    Configured([u8; 32]),
    /// Base64 in a text file; generated (0600) when absent.
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Configured(_) => f.write_str("Configured(..)"),
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}
