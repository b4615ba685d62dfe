//! The device authorization grant (RFC 8628): a device without a browser
//! gets a `device_code` to poll with and a short `user_code` the user types
//! at `/oidc/device`. That page signs the user in through `/login`, as an
//! authorization request does (the provider is a CAS client of the core:
//! SSO, second factors and consent apply), then asks them to confirm the
//! device; the device's next poll gets the tokens.
//!
//! Everything is kept in the ticket store: the device's authorization under
//! its `device_code` (its status written once, by the confirmation), the
//! user code pointing to it, the polling pace apart from it (so that a poll
//! never overwrites a decision).

use crate::client::OidcClient;
use crate::error::{ErrorCode, OAuthError};
use crate::grants::narrow_scopes;
use crate::parameters::required;
use crate::provider::Provider;
use crate::records::{authn_key, request_key, AuthnContext, Grant, PendingRequest, ResponseMode};
use crate::sign_in::LoginRequest;
use castellan_core::client::MAX_REQUEST_ID;
use castellan_core::ids::new_ticket_id;
use castellan_core::{ConsentRefusal, Engine, EngineError};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §6.1: consonants only (no vowels, so no words), no look-alikes.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const USER_CODE_LEN: usize = 8;
/// How long a device code lives by default (`[oidc] device_code_ttl`), and
/// how often a device may poll at first.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(600);
pub const INTERVAL_SECS: u64 = 5;
/// RFC 8628 §3.5: `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN_SECS: u64 = 5;
/// The records outlive the code a little, so that a late poll is told
/// `expired_token` rather than that the code is unknown.
const GRACE: Duration = Duration::from_secs(300);
/// Wrong user codes one client address may type in a window (RFC 8628
/// §5.1: the codes are short, so guessing must be slowed down).
pub const MAX_WRONG_CODES: u32 = 20;
pub const WRONG_CODES_WINDOW: Duration = Duration::from_secs(300);
/// Request ids of a device's login, at the provider's callback.
pub const REQUEST_PREFIX: &str = "DR-";

fn device_key(code: &str) -> String {
    format!("oidc:device:{code}")
}
fn polling_key(code: &str) -> String {
    format!("oidc:devpoll:{code}")
}
fn user_code_key(user_code: &str) -> String {
    format!("oidc:usercode:{user_code}")
}
/// The device code a login (request id) or a confirmation is for.
fn device_login_key(request: &str) -> String {
    format!("oidc:devlogin:{request}")
}
fn confirmation_key(id: &str) -> String {
    format!("oidc:devconfirm:{id}")
}

/// A device's authorization, under its device code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceAuthorization {
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
    pub status: DeviceStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeviceStatus {
    Pending,
    Approved {
        grant: Box<Grant>,
        authn: AuthnContext,
    },
    Denied,
}

/// When the device last polled, and how long it must wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Polling {
    /// Unix milliseconds.
    last: u64,
    interval: u64,
}

/// A signed-in user's decision to take: which device, for whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Confirmation {
    device_code: String,
    grant: Grant,
    authn: AuthnContext,
}

/// What the confirmation page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationPage {
    /// The one-time id the page posts back.
    pub id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The user code is unknown, used or expired (shown to the user).
    #[error("the code is unknown or expired")]
    UnknownCode,
    /// Too many wrong codes from this address lately.
    #[error("too many wrong codes")]
    Throttled,
    /// The login or the confirmation is gone, or the ticket did not validate.
    #[error("the device sign-in expired or was already used")]
    Expired,
    #[error("the user declined")]
    Declined,
    #[error(transparent)]
    Unavailable(#[from] EngineError),
}

impl From<castellan_core::StoreError> for DeviceError {
    fn from(e: castellan_core::StoreError) -> Self {
        DeviceError::Unavailable(e.into())
    }
}

/// A new user code: 8 characters of the alphabet, uniformly (rejection
/// sampling), about 34.5 bits; shown as `XXXX-XXXX`.
pub fn new_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LEN + 1);
    let mut chosen = 0;
    while chosen < USER_CODE_LEN {
        let mut byte = [0u8; 1];
        OsRng.fill_bytes(&mut byte);
        // 240 = 12 × 20: the bytes above would favour the first letters.
        if byte[0] < 240 {
            if chosen == USER_CODE_LEN / 2 {
                code.push('-');
            }
            code.push(char::from(USER_CODE_ALPHABET[usize::from(byte[0] % 20)]));
            chosen += 1;
        }
    }
    code
}

/// A user code as typed: case, spaces and dashes do not matter (RFC 8628
/// §6.1). `None`: it cannot be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    if typed.len() > 64 {
        return None;
    }
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let well_formed =
        code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    well_formed.then(|| format!("{}-{}", &code[..4], &code[4..]))
}

/// Whether a callback's request id is a device's login.
pub fn is_device_request(request: &str) -> bool {
    request.starts_with(REQUEST_PREFIX)
}

impl Provider {
    /// `/oidc/device_authorization` (RFC 8628 §3.1, §3.2).
    pub async fn device_authorization(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
        client_address: Option<IpAddr>,
    ) -> Result<Value, OAuthError> {
        let client = self.authenticate_client(engine, basic, params).await?;
        if !client.grant_types.device_code {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use the device authorization grant",
            ));
        }
        let scopes = narrow_scopes(params, &client.scopes)?;
        // Each code waits for a user, as a pending sign-in does.
        engine.admit_pending_flow(client_address)?;
        let device_code = new_ticket_id("DC");
        let store = engine.store();
        let lifetime = self.settings.device_code_ttl;
        let ttl = lifetime + GRACE;
        let mut user_code = new_user_code();
        let mut tries = 0;
        while !store
            .add_record(&user_code_key(&user_code), device_code.as_bytes(), ttl)
            .await?
        {
            tries += 1;
            if tries >= 5 {
                return Err(OAuthError::server_error());
            }
            user_code = new_user_code();
        }
        let authorization = DeviceAuthorization {
            client_id: client.client_id.clone(),
            scopes,
            expires_at: self.now() + lifetime.as_secs(),
            status: DeviceStatus::Pending,
        };
        self.records(store.as_ref())
            .put(&device_key(&device_code), &authorization, ttl)
            .await?;
        let verification_uri = format!("{}/device", self.issuer);
        let complete: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user_code", &user_code)
            .finish();
        Ok(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?{complete}"),
            "expires_in": lifetime.as_secs(),
            "interval": INTERVAL_SECS,
        }))
    }

    /// `/oidc/device` with a user code: the login to go through, for the
    /// device's client. The code is used up.
    pub async fn device_user_code(
        &self,
        engine: &Engine,
        typed: &str,
        client_address: Option<IpAddr>,
    ) -> Result<LoginRequest, DeviceError> {
        let store = engine.store();
        // Each try counts until it proves right, as a password does.
        let guesses = client_address.map(|ip| format!("oidc:devguess:{ip}"));
        if let Some(key) = &guesses {
            if !store
                .reserve_attempt(key, MAX_WRONG_CODES, WRONG_CODES_WINDOW)
                .await?
            {
                tracing::warn!(client = ?client_address, "too many wrong device user codes");
                return Err(DeviceError::Throttled);
            }
        }
        let user_code = normalize_user_code(typed).ok_or(DeviceError::UnknownCode)?;
        let device_code = store
            .take_record(&user_code_key(&user_code))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(DeviceError::UnknownCode)?;
        if let Some(key) = &guesses {
            store.release_attempt(key).await?;
        }
        let records = self.records(store.as_ref());
        let authorization: DeviceAuthorization = records
            .get(&device_key(&device_code))
            .await?
            .ok_or(DeviceError::UnknownCode)?;
        if !matches!(authorization.status, DeviceStatus::Pending)
            || authorization.expires_at <= self.now()
        {
            return Err(DeviceError::UnknownCode);
        }
        engine.admit_pending_flow(client_address)?;
        let id = new_ticket_id(REQUEST_PREFIX.trim_end_matches('-'));
        let ttl = engine.policy().login_flow_ttl;
        // As an authorization request waits: so that the consent step
        // shows what the scopes release.
        let request = PendingRequest {
            client_id: authorization.client_id.clone(),
            redirect_uri: String::new(),
            scopes: authorization.scopes,
            state: None,
            nonce: None,
            code_challenge: None,
            response_mode: ResponseMode::Query,
            prompt_none: false,
            renew: false,
            max_age: None,
        };
        records.put(&request_key(&id), &request, ttl).await?;
        store
            .put_record(&device_login_key(&id), device_code.as_bytes(), ttl)
            .await?;
        Ok(LoginRequest {
            service: self.callback_url(&authorization.client_id, &id),
            renew: false,
            gateway: false,
            login_hint: None,
        })
    }

    /// The login of a device's user came back to the callback: what the
    /// confirmation page shows. A declined consent denies the device.
    pub async fn device_callback(
        &self,
        engine: &Engine,
        client_id: &str,
        request_id: &str,
        ticket: Option<&str>,
        refusal: Option<ConsentRefusal>,
    ) -> Result<ConfirmationPage, DeviceError> {
        if request_id.len() > MAX_REQUEST_ID {
            return Err(DeviceError::Expired);
        }
        let store = engine.store();
        let records = self.records(store.as_ref());
        let request: PendingRequest = records
            .take(&request_key(request_id))
            .await?
            .ok_or(DeviceError::Expired)?;
        let device_code = store
            .take_record(&device_login_key(request_id))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(DeviceError::Expired)?;
        let client = self
            .clients
            .get(&request.client_id)
            .filter(|c| c.client_id == client_id)
            .ok_or(DeviceError::Expired)?;
        if refusal == Some(ConsentRefusal::Declined) {
            self.decide(engine, &device_code, None).await?;
            return Err(DeviceError::Declined);
        }
        let ticket = ticket.ok_or(DeviceError::Expired)?;
        let service = self.callback_url(client_id, request_id);
        let assertion = match engine.validate_callback(ticket, &service, false).await {
            Ok(a) => a,
            Err(e @ EngineError::Store(_)) => return Err(DeviceError::Unavailable(e)),
            Err(e) => {
                tracing::warn!(error = %e, client = %client.name, "device login with an invalid ticket");
                return Err(DeviceError::Expired);
            }
        };
        let offline = request.scopes.iter().any(|s| s == "offline_access")
            && client.grant_types.refresh_token;
        let authn = AuthnContext {
            amr: assertion
                .methods
                .amr()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            acr: crate::acr::of_login(None, assertion.methods, assertion.from_new_login),
        };
        let user = assertion.principal.id.clone();
        let confirmation = Confirmation {
            device_code,
            grant: Grant {
                client_id: client.client_id.clone(),
                principal_id: assertion.principal.id.clone(),
                attributes: assertion.attributes,
                scopes: request.scopes.clone(),
                session_id: assertion.session_id,
                auth_time: assertion.authenticated_at / 1000,
                fresh_login: assertion.from_new_login,
                offline,
            },
            authn,
        };
        let id = new_ticket_id("DV");
        records
            .put(
                &confirmation_key(&id),
                &confirmation,
                engine.policy().login_flow_ttl,
            )
            .await?;
        Ok(ConfirmationPage {
            id,
            client_name: client.name.clone(),
            scopes: request.scopes,
            user,
        })
    }

    /// The user's answer on the confirmation page (one-time). `Ok(true)`:
    /// the device is authorized.
    pub async fn device_confirm(
        &self,
        engine: &Engine,
        confirmation: &str,
        approve: bool,
    ) -> Result<bool, DeviceError> {
        if confirmation.len() > MAX_REQUEST_ID {
            return Err(DeviceError::Expired);
        }
        let c: Confirmation = self
            .records(engine.store().as_ref())
            .take(&confirmation_key(confirmation))
            .await?
            .ok_or(DeviceError::Expired)?;
        let decision = approve.then_some((c.grant, c.authn));
        self.decide(engine, &c.device_code, decision).await?;
        Ok(approve)
    }

    /// Writes the decision on a pending device authorization.
    async fn decide(
        &self,
        engine: &Engine,
        device_code: &str,
        approved: Option<(Grant, AuthnContext)>,
    ) -> Result<(), DeviceError> {
        let records = self.records(engine.store().as_ref());
        let key = device_key(device_code);
        let mut authorization: DeviceAuthorization =
            records.get(&key).await?.ok_or(DeviceError::Expired)?;
        let now = self.now();
        if !matches!(authorization.status, DeviceStatus::Pending) || authorization.expires_at <= now
        {
            return Err(DeviceError::Expired);
        }
        authorization.status = match approved {
            Some((grant, authn)) => DeviceStatus::Approved {
                grant: Box::new(grant),
                authn,
            },
            None => DeviceStatus::Denied,
        };
        let left = authorization.expires_at.saturating_sub(now) + GRACE.as_secs();
        records
            .put(&key, &authorization, Duration::from_secs(left))
            .await?;
        Ok(())
    }

    /// The token endpoint's device_code grant (RFC 8628 §3.4, §3.5).
    pub(crate) async fn device_grant(
        &self,
        engine: &Engine,
        client: &OidcClient,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if !client.grant_types.device_code {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use the device authorization grant",
            ));
        }
        let device_code = required(params, "device_code")?;
        if device_code.len() > MAX_REQUEST_ID {
            return Err(OAuthError::invalid_grant("the device_code is unknown"));
        }
        let store = engine.store();
        let records = self.records(store.as_ref());
        let key = device_key(device_code);
        let Some(authorization) = records.get::<DeviceAuthorization>(&key).await? else {
            return Err(OAuthError::invalid_grant("the device_code is unknown"));
        };
        if authorization.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the device_code was issued to another client",
            ));
        }
        let now = self.now();
        if authorization.expires_at <= now {
            return Err(OAuthError::new(
                ErrorCode::ExpiredToken,
                "the device_code has expired",
            ));
        }
        match authorization.status {
            DeviceStatus::Pending => Err(self.pace(engine, device_code).await?),
            DeviceStatus::Denied => {
                store.remove_record(&key).await?;
                Err(OAuthError::new(
                    ErrorCode::AccessDenied,
                    "the user denied the device",
                ))
            }
            DeviceStatus::Approved { .. } => {
                // One-time: exactly one poll takes it.
                let Some(DeviceAuthorization {
                    status: DeviceStatus::Approved { grant, authn },
                    ..
                }) = records.take::<DeviceAuthorization>(&key).await?
                else {
                    return Err(OAuthError::invalid_grant(
                        "the device_code was already used",
                    ));
                };
                store.remove_record(&polling_key(device_code)).await?;
                let grant_id = new_ticket_id("OG");
                let ttl = if grant.offline {
                    self.settings.offline_token_ttl
                } else {
                    self.settings.refresh_token_ttl
                };
                records.put(&authn_key(&grant_id), &authn, ttl).await?;
                self.issue(engine, client, *grant, &grant_id, None, jkt)
                    .await
            }
        }
    }

    /// A poll of a pending authorization: `slow_down` (and 5 s more to wait)
    /// when it came too early, else `authorization_pending`.
    async fn pace(&self, engine: &Engine, device_code: &str) -> Result<OAuthError, OAuthError> {
        let records = self.records(engine.store().as_ref());
        let key = polling_key(device_code);
        let now = self.clock_millis();
        let previous: Option<Polling> = records.get(&key).await?;
        let (interval, early) = match previous {
            Some(p) if now.saturating_sub(p.last) < p.interval * 1000 => {
                (p.interval + SLOW_DOWN_SECS, true)
            }
            Some(p) => (p.interval, false),
            None => (INTERVAL_SECS, false),
        };
        records
            .put(
                &key,
                &Polling {
                    last: now,
                    interval,
                },
                self.settings.device_code_ttl + GRACE,
            )
            .await?;
        Ok(if early {
            OAuthError::new(
                ErrorCode::SlowDown,
                format!("poll at most every {interval} seconds"),
            )
        } else {
            OAuthError::new(
                ErrorCode::AuthorizationPending,
                "the user has not answered yet",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_consonants_in_two_groups() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(&code[4..5], "-");
            assert!(code
                .bytes()
                .filter(|b| *b != b'-')
                .all(|b| USER_CODE_ALPHABET.contains(&b)));
            seen.insert(code);
        }
        assert!(seen.len() > 190, "user codes repeat");
    }

    #[test]
    fn typed_user_codes_are_normalized() {
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(
            normalize_user_code(" BCDF GHJK ").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(
            normalize_user_code("BCDFGHJK").as_deref(),
            Some("BCDF-GHJK")
        );
        for bad in [
            "BCDF-GHJ",
            "ABCD-EFGH",
            "BCDF-GHJKL",
            "",
            "ß",
            &"B".repeat(100),
        ] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }
}
