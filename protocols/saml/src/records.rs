//! What the IdP keeps in the ticket store between two requests, each in the
//! core's one versioned record encoding (`castellan_core::record`), under
//! key names that stay fixed across releases:
//! - `saml:req:{id}`: a checked AuthnRequest waiting for the login;
//! - `saml:issued:{ticket}`: the NameID and SessionIndex an SP was sent
//!   at sign-in, by the service ticket validated at the callback;
//! - `saml:slo:{id}`: a front-channel logout chain in progress.
//!
//! Records of the release before were JSON: they still read.

use crate::idp::NameId;
use castellan_core::record;
use castellan_core::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A checked AuthnRequest waiting for the login (or an IdP-initiated one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub sp: String,
    pub request_id: Option<String>,
    pub acs_url: String,
    pub relay_state: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    /// From the request's NameIDPolicy; the SP's configured one when None.
    pub name_id_format: Option<String>,
}

pub fn pending_key(id: &str) -> String {
    format!("saml:req:{id}")
}

/// The `AuthnContextClassRef` a pending request asked for.
pub fn authn_context_key(id: &str) -> String {
    format!("saml:acr:{id}")
}

/// What an SP was told at sign-in: single logout names the subject to it
/// exactly so, and an SP's LogoutRequest must name it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub sp: String,
    pub name_id: NameId,
    pub session_index: String,
}

pub fn issued_key(ticket_id: &str) -> String {
    format!("saml:issued:{ticket_id}")
}

/// The SP that sent a LogoutRequest, to be answered once the chain is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub sp: String,
    pub request_id: String,
    pub relay_state: Option<String>,
    pub code: String,
}

/// One SP to visit in the front-channel logout chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    pub sp: String,
    pub session_index: String,
    pub principal_id: String,
    /// The NameID the SP holds; absent in steps of the release before
    /// (then derived again, where it can be).
    #[serde(default)]
    pub name_id: Option<NameId>,
}

/// A front-channel logout in progress (kept between the browser's visits
/// to the SPs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The SP whose LogoutRequest started the chain; none when the logout
    /// started elsewhere (CAS, OIDC).
    pub requester: Option<Requester>,
    pub next: Vec<ChainStep>,
    /// The ID of the LogoutRequest whose response is awaited.
    pub awaiting: Option<String>,
    /// Where the browser goes at the end when there is no requester to
    /// answer; the signed-out page when none.
    #[serde(default)]
    pub destination: Option<String>,
}

pub fn chain_key(id: &str) -> String {
    format!("saml:slo:{id}")
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    record::encode(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    record::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nameid;

    #[test]
    fn a_pending_request_s_bytes_are_pinned() {
        let p = Pending {
            sp: "hr".into(),
            request_id: Some("_r1".into()),
            acs_url: "https://a/".into(),
            relay_state: None,
            force_authn: true,
            is_passive: false,
            name_id_format: None,
        };
        let bytes = encode(&p).unwrap();
        // Pinned: another node of this version must read the same bytes.
        let mut expected = vec![1, 2, b'h', b'r', 1, 3, b'_', b'r', b'1', 10];
        expected.extend_from_slice(b"https://a/");
        expected.extend_from_slice(&[0, 1, 0, 0]);
        assert_eq!(bytes, expected);
        assert_eq!(decode::<Pending>(&bytes).unwrap(), p);
    }

    #[test]
    fn an_issued_record_s_bytes_are_pinned() {
        let i = Issued {
            sp: "a".into(),
            name_id: NameId {
                value: "v".into(),
                format: "f".into(),
                name_qualifier: Some("i".into()),
                sp_name_qualifier: None,
            },
            session_index: "s".into(),
        };
        let bytes = encode(&i).unwrap();
        assert_eq!(
            bytes,
            [1, 1, b'a', 1, b'v', 1, b'f', 1, 1, b'i', 0, 1, b's']
        );
        assert_eq!(decode::<Issued>(&bytes).unwrap(), i);
    }

    #[test]
    fn json_records_of_the_release_before_still_read() {
        let pending = br#"{"sp":"hr","request_id":null,"acs_url":"https://a/","relay_state":"r","force_authn":false,"is_passive":false,"name_id_format":null}"#;
        let p: Pending = decode(pending).unwrap();
        assert_eq!(p.relay_state.as_deref(), Some("r"));
        let chain = br#"{"requester":{"sp":"main","request_id":"_q","relay_state":null,"code":"urn:oasis:names:tc:SAML:2.0:status:Success"},"next":[{"sp":"other","session_index":"abc","principal_id":"casuser"}],"awaiting":"_x"}"#;
        let c: Chain = decode(chain).unwrap();
        assert_eq!(c.requester.unwrap().sp, "main");
        assert_eq!(c.next[0].name_id, None);
        assert_eq!(c.destination, None);
        assert_eq!(c.awaiting.as_deref(), Some("_x"));
    }

    #[test]
    fn a_chain_reads_back() {
        let c = Chain {
            requester: None,
            next: vec![ChainStep {
                sp: "x".into(),
                session_index: "t".into(),
                principal_id: "u".into(),
                name_id: Some(NameId {
                    value: "_t1".into(),
                    format: nameid::TRANSIENT.into(),
                    name_qualifier: None,
                    sp_name_qualifier: None,
                }),
            }],
            awaiting: None,
            destination: Some("https://app/".into()),
        };
        assert_eq!(decode::<Chain>(&encode(&c).unwrap()).unwrap(), c);
    }
}
