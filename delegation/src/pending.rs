//! A login waiting at an upstream, kept in the shared ticket store under its
//! one-time state between the start (`/login?client_name=NAME`) and the
//! callback, so that any node takes the callback.
//!
//! Encoded as every record kept between requests
//! ([`castellan_core::record`]): versioned, so that a node of another
//! version never misreads one; the JSON records of the release before are
//! still read.

use castellan_core::{record, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a login may stay at the upstream.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// The store key of a pending login (unchanged since the JSON records).
pub fn state_key(state: &str) -> String {
    format!("deleg:state:{state}")
}

/// A login waiting at an upstream. The field order is the encoding: new
/// fields go at the end, with a new record version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub upstream: String,
    pub service: Option<String>,
    /// CAS `method=POST`: the ticket goes back by form post.
    #[serde(default)]
    pub method: Option<String>,
    pub renew: bool,
    pub gateway: bool,
    /// When the login went to the upstream (seconds since the epoch): an
    /// authentication there before it is not a fresh one.
    #[serde(default)]
    pub started_at: u64,
    /// The browser's binding value (its cookie).
    pub binding: String,
    /// What the connector needs back.
    pub saved: String,
}

impl PendingLogin {
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        record::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        record::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingLogin {
        PendingLogin {
            upstream: "campus".into(),
            service: Some("https://a/".into()),
            method: None,
            renew: true,
            gateway: false,
            started_at: 1_700_000_000,
            binding: "DS-b".into(),
            saved: "n".into(),
        }
    }

    #[test]
    fn the_key_is_unchanged() {
        assert_eq!(state_key("DS-1-abc"), "deleg:state:DS-1-abc");
    }

    #[test]
    fn the_record_bytes_are_pinned() {
        let bytes = pending().encode().unwrap();
        // Pinned: a node of this version must read what another one wrote.
        let expected: &[u8] = &[
            1, // the record version
            6, b'c', b'a', b'm', b'p', b'u', b's', // upstream
            1, 10, b'h', b't', b't', b'p', b's', b':', b'/', b'/', b'a', b'/', // service
            0,    // method
            1,    // renew
            0,    // gateway
            0x80, 0xe2, 0xcf, 0xaa, 0x06, // started_at, a varint
            4, b'D', b'S', b'-', b'b', // binding
            1, b'n', // saved
        ];
        assert_eq!(bytes, expected);
        assert_eq!(PendingLogin::decode(&bytes).unwrap(), pending());
    }

    #[test]
    fn a_json_record_of_the_release_before_still_reads() {
        // As written by 5f713fd (serde_json of the same fields).
        let old = br#"{"upstream":"campus","service":"https://a/","method":null,"renew":true,"gateway":false,"started_at":1700000000,"binding":"DS-b","saved":"n"}"#;
        assert_eq!(PendingLogin::decode(old).unwrap(), pending());
        // And one from before `method` and `started_at`.
        let older = br#"{"upstream":"campus","service":null,"renew":false,"gateway":true,"binding":"DS-b","saved":""}"#;
        let p = PendingLogin::decode(older).unwrap();
        assert_eq!((p.method, p.started_at, p.gateway), (None, 0, true));
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        let mut bytes = pending().encode().unwrap();
        bytes[0] = 2;
        assert!(PendingLogin::decode(&bytes).is_err());
        assert!(PendingLogin::decode(b"").is_err());
        assert!(PendingLogin::decode(&[1, 200]).is_err());
    }
}
