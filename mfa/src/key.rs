//! The MFA key: loaded from config or from a file generated on the first
//! start, and the keys derived from it (one per purpose).

use crate::{KeySource, MfaError};
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

const NONCE_LEN: usize = 12;
/// The format of a sealed value, first in the stored text.
const SEALED_PREFIX: &str = "v1.";

pub(crate) struct Keys {
    encryption: Aes256Gcm,
    recovery: [u8; 32],
    user_handle: [u8; 32],
    /// HMAC(key, "castellan mfa key check"), hex: what the store keeps to
    /// tell whether a node has the key its factors were written with.
    pub check: String,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A user name framed by its length, so that (user, code) pairs cannot
/// run into each other.
fn framed(user: &str) -> [u8; 8] {
    (user.len() as u64).to_be_bytes()
}

impl Keys {
    pub fn new(master: &[u8; 32]) -> Keys {
        let encryption = hmac(master, &[b"castellan mfa totp secret encryption"]);
        Keys {
            encryption: Aes256Gcm::new(&encryption.into()),
            recovery: hmac(master, &[b"castellan mfa recovery codes"]),
            user_handle: hmac(master, &[b"castellan mfa webauthn user handle"]),
            check: hex(&hmac(master, &[b"castellan mfa key check"])),
        }
    }

    fn associated_data(user: &str, factor_id: &str) -> Vec<u8> {
        let mut aad = b"castellan mfa totp secret\0".to_vec();
        aad.extend_from_slice(&framed(user));
        aad.extend_from_slice(user.as_bytes());
        aad.extend_from_slice(factor_id.as_bytes());
        aad
    }

    /// AES-256-GCM, a random nonce per value; the user and the factor id
    /// are bound in as associated data: copied to another row, it does not
    /// decrypt.
    pub fn seal(&self, user: &str, factor_id: &str, secret: &[u8]) -> Result<String, MfaError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = Self::associated_data(user, factor_id);
        let ct = self
            .encryption
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| MfaError::Key("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    pub fn open(&self, user: &str, factor_id: &str, sealed: &str) -> Result<Vec<u8>, MfaError> {
        let undecryptable =
            || MfaError::Key(format!("the secret of factor {factor_id} does not decrypt"));
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or_else(undecryptable)?;
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let aad = Self::associated_data(user, factor_id);
        self.encryption
            .decrypt(nonce.into(), Payload { msg: ct, aad: &aad })
            .map_err(|_| undecryptable())
    }

    /// HMAC-SHA256(key, user || code), hex: all the store keeps of a recovery code.
    pub fn recovery_hash(&self, user: &str, canonical_code: &str) -> String {
        hex(&hmac(
            &self.recovery,
            &[&framed(user), user.as_bytes(), canonical_code.as_bytes()],
        ))
    }

    /// The WebAuthn user handle: stable for a user, and not the user name
    /// (authenticators keep it; WebAuthn §14.6.1 wants no personal data in it).
    pub fn user_handle(&self, user: &str) -> [u8; 16] {
        let h = hmac(&self.user_handle, &[user.as_bytes()]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], MfaError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| MfaError::Key(format!("no randomness: {e}")))?;
    Ok(out)
}

/// The key from config, or from its file (created when absent).
pub(crate) fn load(source: &KeySource) -> Result<[u8; 32], MfaError> {
    match source {
        KeySource::Configured(k) => Ok(*k),
        KeySource::File(path) => load_or_generate(path),
    }
}

fn parse(path: &Path, text: &str) -> Result<[u8; 32], MfaError> {
    B64.decode(text.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| {
            MfaError::Key(format!(
                "{}: not a key (32 bytes in base64 expected)",
                path.display()
            ))
        })
}

fn load_or_generate(path: &Path) -> Result<[u8; 32], MfaError> {
    let io =
        |what: &str, e: std::io::Error| MfaError::Key(format!("{what} {}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| MfaError::Key(format!("{}: not a file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    // Nodes starting together on one shared data_dir: the first generates,
    // the others wait here and read its key. A read-only directory (the key
    // mounted from a secret) takes no lock, and nothing can be written there.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".{name}.lock")))
        .ok();
    if let Some(lock) = &lock {
        lock.lock().map_err(|e| io("locking", e))?;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            return parse(path, &text);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", e)),
    }
    let key: [u8; 32] = random()?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        writeln!(f, "{}", B64.encode(key)).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("writing", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("writing", e))?;
    tracing::info!(path = %path.display(), "MFA key generated: every node sharing the MFA store needs this file");
    drop(lock);
    Ok(key)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the MFA key file is readable by other users: chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_for_its_user_and_factor() {
        let keys = Keys::new(&[7; 32]);
        let sealed = keys.seal("alice", "f1", b"secret bytes").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(keys.open("alice", "f1", &sealed).unwrap(), b"secret bytes");
        assert!(matches!(
            keys.open("bob", "f1", &sealed),
            Err(MfaError::Key(_))
        ));
        assert!(matches!(
            keys.open("alice", "f2", &sealed),
            Err(MfaError::Key(_))
        ));
        assert!(Keys::new(&[8; 32]).open("alice", "f1", &sealed).is_err());
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, keys.seal("alice", "f1", b"secret bytes").unwrap());
        for garbage in ["", "v1.", "v1.AAAA", "v2.abc", "v1.!!!"] {
            assert!(keys.open("alice", "f1", garbage).is_err());
        }
    }

    #[test]
    fn key_file_is_generated_once_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.key");
        let k1 = load(&KeySource::File(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&KeySource::File(path.clone())).unwrap(), k1);
        std::fs::write(&path, "not base64 at all\n").unwrap();
        assert!(matches!(
            load(&KeySource::File(path)),
            Err(MfaError::Key(_))
        ));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.key");
        let keys: Vec<[u8; 32]> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || load(&KeySource::File(p)).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]));
    }
}
