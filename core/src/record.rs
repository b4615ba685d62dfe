//! The one encoding of every record a protocol module keeps between two
//! requests (a pending authorization request, a logout chain): a format
//! version byte, then postcard. A node never misreads a record another
//! version wrote: an unknown version is refused, not guessed at.
//!
//! Records written before versioning (JSON, first byte `{`) are still read,
//! so that flows in progress survive the upgrade of a node.

use crate::error::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format version, first byte of every record.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![VERSION])
        .map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

/// Decodes a versioned record, or a JSON one of the release before.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Corrupt(format!("decoding a record: {e}"))),
        Some((b'{', _)) => serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("decoding a JSON record: {e}"))),
        _ => Err(StoreError::Corrupt("record of an unknown format".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pending {
        sp: String,
        force_authn: bool,
        relay_state: Option<String>,
    }

    #[test]
    fn a_record_starts_with_its_version_and_reads_back() {
        let p = Pending {
            sp: "wiki".into(),
            force_authn: true,
            relay_state: None,
        };
        let bytes = encode(&p).unwrap();
        // Pinned: another node of this version must read the same bytes.
        assert_eq!(bytes, [1, 4, b'w', b'i', b'k', b'i', 1, 0]);
        assert_eq!(decode::<Pending>(&bytes).unwrap(), p);
    }

    #[test]
    fn a_json_record_of_the_release_before_still_reads() {
        let old = br#"{"sp":"wiki","force_authn":false,"relay_state":"r"}"#;
        let p: Pending = decode(old).unwrap();
        assert_eq!(p.relay_state.as_deref(), Some("r"));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        assert!(decode::<Pending>(&[2, 4, b'w', b'i', b'k', b'i', 1, 0]).is_err());
        assert!(decode::<Pending>(&[]).is_err());
    }
}
