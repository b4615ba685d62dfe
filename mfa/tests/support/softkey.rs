//! A software authenticator (P-256, "none" attestation) answering
//! webauthn-rs' options as a browser with a security key or a platform
//! passkey would: enough to run both ceremonies without a browser, with
//! the signature counter under the test's control.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64U;
use base64::Engine;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct SoftKey {
    key: EcKey<Private>,
    pub credential_id: Vec<u8>,
    pub origin: String,
    pub rp_id: String,
    /// "cross-platform" or "platform".
    pub attachment: &'static str,
}

fn head(major: u8, len: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=255 => out.extend([m | 24, len as u8]),
        _ => {
            out.push(m | 25);
            out.extend((len as u16).to_be_bytes());
        }
    }
}

fn text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len(), out);
    out.extend(s.as_bytes());
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len(), out);
    out.extend(b);
}

fn client_data(kind: &str, options: &Value, origin: &str) -> Vec<u8> {
    let challenge = options["publicKey"]["challenge"]
        .as_str()
        .expect("a challenge");
    serde_json::to_vec(&json!({
        "type": kind,
        "challenge": challenge,
        "origin": origin,
        "crossOrigin": false,
    }))
    .unwrap()
}

impl SoftKey {
    pub fn new(origin: &str, rp_id: &str, attachment: &'static str) -> SoftKey {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut credential_id = vec![0u8; 32];
        openssl::rand::rand_bytes(&mut credential_id).unwrap();
        SoftKey {
            key: EcKey::generate(&group).unwrap(),
            credential_id,
            origin: origin.into(),
            rp_id: rp_id.into(),
            attachment,
        }
    }

    /// The same credential, used from another origin (a phishing page).
    pub fn at_origin(&self, origin: &str) -> SoftKey {
        SoftKey {
            key: self.key.clone(),
            credential_id: self.credential_id.clone(),
            origin: origin.into(),
            rp_id: self.rp_id.clone(),
            attachment: self.attachment,
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut x = openssl::bn::BigNum::new().unwrap();
        let mut y = openssl::bn::BigNum::new().unwrap();
        self.key
            .public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let mut out = Vec::new();
        head(5, 5, &mut out);
        out.extend([0x01, 0x02]); // kty: EC2
        out.extend([0x03, 0x26]); // alg: ES256 (-7)
        out.extend([0x20, 0x01]); // crv: P-256
        out.push(0x21); // x
        bytes(&x.to_vec_padded(32).unwrap(), &mut out);
        out.push(0x22); // y
        bytes(&y.to_vec_padded(32).unwrap(), &mut out);
        out
    }

    fn auth_data(&self, counter: u32, attested: bool) -> Vec<u8> {
        let mut out = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        // UP, UV, and AT when a credential is attached.
        out.push(0x01 | 0x04 | if attested { 0x40 } else { 0 });
        out.extend(counter.to_be_bytes());
        if attested {
            out.extend([0u8; 16]); // AAGUID
            out.extend((self.credential_id.len() as u16).to_be_bytes());
            out.extend(&self.credential_id);
            out.extend(self.cose_key());
        }
        out
    }

    /// The browser's answer to `navigator.credentials.create(options)`.
    pub fn register(&self, options: &Value, counter: u32) -> Value {
        let client = client_data("webauthn.create", options, &self.origin);
        let mut attestation = Vec::new();
        head(5, 3, &mut attestation);
        text("fmt", &mut attestation);
        text("none", &mut attestation);
        text("attStmt", &mut attestation);
        head(5, 0, &mut attestation);
        text("authData", &mut attestation);
        bytes(&self.auth_data(counter, true), &mut attestation);
        json!({
            "id": B64U.encode(&self.credential_id),
            "rawId": B64U.encode(&self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": self.attachment,
            "response": {
                "attestationObject": B64U.encode(attestation),
                "clientDataJSON": B64U.encode(client),
            },
            "clientExtensionResults": {},
        })
    }

    /// The browser's answer to `navigator.credentials.get(options)`, signed
    /// with the signature counter `counter`.
    pub fn assert(&self, options: &Value, counter: u32) -> Value {
        let client = client_data("webauthn.get", options, &self.origin);
        let auth_data = self.auth_data(counter, false);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client));
        let digest = Sha256::digest(&signed);
        let signature = openssl::ecdsa::EcdsaSig::sign(&digest, &self.key)
            .unwrap()
            .to_der()
            .unwrap();
        json!({
            "id": B64U.encode(&self.credential_id),
            "rawId": B64U.encode(&self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": self.attachment,
            "response": {
                "authenticatorData": B64U.encode(auth_data),
                "clientDataJSON": B64U.encode(client),
                "signature": B64U.encode(signature),
                "userHandle": null,
            },
            "clientExtensionResults": {},
        })
    }
}
