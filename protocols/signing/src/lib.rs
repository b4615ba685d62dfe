//! RSA signatures for the protocols that sign what they answer (SAML
//! Responses, OIDC ID tokens): RSASSA-PKCS1-v1_5 with SHA-256 under one
//! loaded key. A crate of its own: the protocols share it without calling
//! each other, and the core stays free of crypto libraries.

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use std::sync::Mutex;

/// Contexts kept for reuse at most: more signatures than this at once
/// (more than the cores) each set one up.
const KEPT_CONTEXTS: usize = 16;

/// An RSA key with its signing contexts, each set up once (PKCS#1 v1.5,
/// SHA-256) and reused: OpenSSL 3 looks the algorithms up again, under its
/// locks, for every new `Signer` (2 % of a SAML round trip's CPU). One
/// context per signature in progress.
pub struct RsaSha256 {
    key: PKey<Private>,
    contexts: Mutex<Vec<PkeyCtx<Private>>>,
}

impl RsaSha256 {
    pub fn new(key: PKey<Private>) -> Self {
        Self {
            key,
            contexts: Mutex::new(Vec::new()),
        }
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The signature of `message` (hashed here with SHA-256).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ErrorStack> {
        let digest = openssl::sha::sha256(message);
        let kept = self.contexts.lock().ok().and_then(|mut kept| kept.pop());
        let mut ctx = match kept {
            Some(ctx) => ctx,
            None => {
                let mut ctx = PkeyCtx::new(&self.key)?;
                ctx.sign_init()?;
                ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
                ctx.set_signature_md(openssl::md::Md::sha256())?;
                ctx
            }
        };
        let mut signature = Vec::with_capacity(self.key.size());
        ctx.sign_to_vec(&digest, &mut signature)?;
        if let Ok(mut kept) = self.contexts.lock() {
            if kept.len() < KEPT_CONTEXTS {
                kept.push(ctx);
            }
        }
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::sign::Verifier;

    #[test]
    fn each_signature_verifies_for_its_own_message_only() {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let signer = RsaSha256::new(key.clone());
        let verifies = |message: &[u8], signature: &[u8]| {
            let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
            v.update(message).unwrap();
            v.verify(signature).unwrap()
        };
        // The first signature sets a context up, the next ones reuse it.
        for message in [&b"header.payload"[..], b"other", b"header.payload"] {
            let signature = signer.sign(message).unwrap();
            assert_eq!(signature.len(), 256);
            assert!(verifies(message, &signature));
            assert!(!verifies(b"tampered", &signature));
        }
        assert_eq!(signer.contexts.lock().unwrap().len(), 1);
    }
}
