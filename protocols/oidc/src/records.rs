//! What the provider keeps in the shared ticket store between two requests:
//! authorization requests waiting for a login, codes, grants and refresh
//! tokens. Each is a store record, so that any node continues any flow.

pub use castellan_core::record::{decode, encode};
use castellan_core::{Attributes, StoreError, TicketStore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

// Every record is encoded as the core encodes all flow records: a format
// version byte (1), then postcard. The fixture test below pins the bytes.

pub fn request_key(id: &str) -> String {
    format!("oidc:req:{id}")
}
pub fn code_key(code: &str) -> String {
    format!("oidc:code:{code}")
}
pub fn grant_key(id: &str) -> String {
    format!("oidc:grant:{id}")
}
/// The `acr_values` of a pending request (kept beside it only when asked).
pub fn acr_request_key(request: &str) -> String {
    format!("oidc:acr:{request}")
}
/// A pending request that said `prompt=consent` (kept beside it only
/// then): the user is asked again whatever they decided before.
pub fn consent_prompt_key(request: &str) -> String {
    format!("oidc:consent:{request}")
}
/// How the user of a grant authenticated (beside the grant: nodes of the
/// release before read grants without it, and issue tokens without
/// `amr`).
pub fn authn_key(grant: &str) -> String {
    format!("oidc:authn:{grant}")
}

/// What the ID tokens of a grant say of its login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthnContext {
    pub amr: Vec<String>,
    pub acr: String,
}
pub fn refresh_key(token: &str) -> String {
    format!("oidc:rt:{token}")
}
pub fn revoked_key(jti: &str) -> String {
    format!("oidc:revoked:{jti}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseMode {
    Query,
    FormPost,
}

/// A checked authorization request, waiting for the login to come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub response_mode: ResponseMode,
    pub prompt_none: bool,
    pub renew: bool,
    pub max_age: Option<u64>,
}

/// An authorization code: one-time, bound to client, redirect_uri and PKCE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub grant: Grant,
    /// The id the grant gets once redeemed (known beforehand so that a
    /// replay can revoke it).
    pub grant_id: String,
}

/// What a user granted a client: the base of every token issued from one
/// authorization, removed as a whole when revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub principal_id: String,
    /// The released attributes, as they were at login.
    pub attributes: Attributes,
    pub scopes: Vec<String>,
    /// The SSO session it came from; a grant without offline_access dies with it.
    pub session_id: String,
    /// Unix seconds.
    pub auth_time: u64,
    pub fresh_login: bool,
    pub offline: bool,
}

/// A used code or a rotated refresh token: kept until it would have expired,
/// so that presenting it again is recognized as a replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spent {
    pub grant_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CodeRecord {
    Live(Box<Code>),
    Spent(Spent),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    pub grant_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RefreshRecord {
    Live(RefreshToken),
    Spent(Spent),
    /// A public client's token bound to its DPoP key (RFC 9449 §5): a new
    /// variant, so that the records of the release before read the same.
    Bound(BoundRefresh),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundRefresh {
    pub token: RefreshToken,
    /// The RFC 7638 thumbprint of the key.
    pub jkt: String,
}

impl RefreshRecord {
    /// A live token and the key it is bound to, if any.
    pub fn live(self) -> Option<(RefreshToken, Option<String>)> {
        match self {
            RefreshRecord::Live(t) => Some((t, None)),
            RefreshRecord::Bound(b) => Some((b.token, Some(b.jkt))),
            RefreshRecord::Spent(_) => None,
        }
    }

    pub fn new(token: RefreshToken, jkt: Option<String>) -> Self {
        match jkt {
            None => RefreshRecord::Live(token),
            Some(jkt) => RefreshRecord::Bound(BoundRefresh { token, jkt }),
        }
    }
}

/// The outcome of presenting a one-time token.
pub enum Redemption<T> {
    /// First use: the token's content.
    First(T),
    /// Presented before: the grant it belongs to must be revoked.
    Replay {
        grant_id: String,
    },
    Unknown,
}

/// Typed access to the provider's records.
pub struct Records<'a> {
    pub store: &'a dyn TicketStore,
}

impl Records<'_> {
    pub async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.store.put_record(key, &encode(value)?, ttl).await
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.store
            .record(key)
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.store
            .take_record(key)
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Redeems a code: atomically marks it spent, so that exactly one
    /// caller gets it and later ones are told of the replay.
    pub async fn redeem_code(&self, code: &str) -> Result<Redemption<Code>, StoreError> {
        self.redeem(&code_key(code), |r: CodeRecord| match r {
            CodeRecord::Live(c) => {
                let grant_id = c.grant_id.clone();
                (Redemption::First(*c), grant_id)
            }
            CodeRecord::Spent(s) => (
                Redemption::Replay {
                    grant_id: s.grant_id.clone(),
                },
                s.grant_id,
            ),
        })
        .await
        .map(|(r, _)| r)
    }

    /// Redeems a refresh token: its content and the DPoP key it is bound
    /// to, if any.
    pub async fn redeem_refresh(
        &self,
        token: &str,
    ) -> Result<Redemption<(RefreshToken, Option<String>)>, StoreError> {
        self.redeem(&refresh_key(token), |r: RefreshRecord| match r {
            RefreshRecord::Live(t) => {
                let grant_id = t.grant_id.clone();
                (Redemption::First((t, None)), grant_id)
            }
            RefreshRecord::Bound(b) => {
                let grant_id = b.token.grant_id.clone();
                (Redemption::First((b.token, Some(b.jkt))), grant_id)
            }
            RefreshRecord::Spent(s) => (
                Redemption::Replay {
                    grant_id: s.grant_id.clone(),
                },
                s.grant_id,
            ),
        })
        .await
        .map(|(r, _)| r)
    }

    /// Swaps the record for a `Spent` marker of its grant. The marker is
    /// encoded the same way for codes and refresh tokens: variant 1.
    async fn redeem<R, T>(
        &self,
        key: &str,
        split: impl FnOnce(R) -> (Redemption<T>, String),
    ) -> Result<(Redemption<T>, String), StoreError>
    where
        R: DeserializeOwned,
    {
        // The marker's grant id is not known before the swap; an empty one
        // is written, then the real one if this was the first use.
        let placeholder = encode(&CodeRecord::Spent(Spent {
            grant_id: String::new(),
        }))?;
        let Some(previous) = self.store.swap_record(key, &placeholder).await? else {
            return Ok((Redemption::Unknown, String::new()));
        };
        let (redemption, grant_id) = split(decode::<R>(&previous)?);
        if let Redemption::First(_) = &redemption {
            let marker = encode(&CodeRecord::Spent(Spent {
                grant_id: grant_id.clone(),
            }))?;
            // Keeps the expiry; a replay racing this line sees the
            // placeholder and is still refused (it just revokes nothing).
            self.store.swap_record(key, &marker).await?;
        }
        Ok((redemption, grant_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_markers_decode_as_both_record_kinds() {
        let bytes = encode(&CodeRecord::Spent(Spent {
            grant_id: "G".into(),
        }))
        .unwrap();
        match decode::<RefreshRecord>(&bytes).unwrap() {
            RefreshRecord::Spent(s) => assert_eq!(s.grant_id, "G"),
            _ => panic!("a marker decoded as a live token"),
        }
    }

    /// Pinned: nodes of the release before and after share these records
    /// on one store, so their bytes may not change.
    #[test]
    fn a_pending_request_and_a_grant_keep_their_bytes() {
        let request = PendingRequest {
            client_id: "rp".into(),
            redirect_uri: "https://rp/cb".into(),
            scopes: vec!["openid".into()],
            state: Some("S".into()),
            nonce: None,
            code_challenge: None,
            response_mode: ResponseMode::FormPost,
            prompt_none: false,
            renew: true,
            max_age: Some(300),
        };
        let mut expected = vec![1, 2, b'r', b'p', 13];
        expected.extend_from_slice(b"https://rp/cb");
        expected.extend_from_slice(&[1, 6]);
        expected.extend_from_slice(b"openid");
        // state Some("S"), nonce None, code_challenge None, FormPost,
        // prompt_none false, renew true, max_age Some(300) as a varint.
        expected.extend_from_slice(&[1, 1, b'S', 0, 0, 1, 0, 1, 1, 0xAC, 0x02]);
        let bytes = encode(&request).unwrap();
        assert_eq!(bytes, expected);
        let back: PendingRequest = decode(&bytes).unwrap();
        assert_eq!(back.max_age, Some(300));
        assert_eq!(back.response_mode, ResponseMode::FormPost);

        let mut attributes = Attributes::new();
        attributes.insert("mail".into(), vec!["a@x".into()]);
        let grant = Grant {
            client_id: "rp".into(),
            principal_id: "alice".into(),
            attributes,
            scopes: vec!["openid".into()],
            session_id: "TGT-1".into(),
            auth_time: 1_700_000_000,
            fresh_login: true,
            offline: false,
        };
        let mut expected = vec![1, 2, b'r', b'p', 5];
        expected.extend_from_slice(b"alice");
        expected.extend_from_slice(&[1, 4]);
        expected.extend_from_slice(b"mail");
        expected.extend_from_slice(&[1, 3]);
        expected.extend_from_slice(b"a@x");
        expected.extend_from_slice(&[1, 6]);
        expected.extend_from_slice(b"openid");
        expected.push(5);
        expected.extend_from_slice(b"TGT-1");
        expected.extend_from_slice(&[0x80, 0xE2, 0xCF, 0xAA, 0x06, 1, 0]);
        let bytes = encode(&grant).unwrap();
        assert_eq!(bytes, expected);
        let back: Grant = decode(&bytes).unwrap();
        assert_eq!(back.attributes, grant.attributes);
        assert_eq!(back.auth_time, grant.auth_time);
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(decode::<Spent>(&[9, 0]).is_err());
        assert!(decode::<Spent>(&[]).is_err());
    }
}
