//! The user's factors: what the login step and the `/mfa` page call.

use crate::key::{self, Keys};
use crate::passkey::RelyingParty;
use crate::store::{FactorRow, NewFactor, Store};
use crate::{recovery, totp};
use crate::{MfaError, MfaSettings, RecoveryCodes, TotpEnrolment, MAX_CODE_CHARS, MAX_LABEL_CHARS};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use webauthn_rs_core::proto::Credential;

/// A registered factor, as the user's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorInfo {
    pub id: String,
    pub kind: FactorKind,
    pub label: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum FactorKind {
    Totp,
    /// `hardware`: a roaming authenticator (OIDC amr "hwk"); else "swk".
    Passkey {
        hardware: bool,
    },
}

/// What a second step proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Verified {
    Totp { factor: String },
    RecoveryCode { left: usize },
    Passkey { factor: String, hardware: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub factors: Vec<FactorInfo>,
    pub recovery_codes_left: usize,
}

/// The factors of every user. Cheap to share in an `Arc`.
pub struct Factors {
    store: Store,
    keys: Keys,
    issuer: String,
    relying_party: RelyingParty,
}

impl std::fmt::Debug for Factors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factors")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn unix(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_time(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

impl From<FactorRow> for FactorInfo {
    fn from(r: FactorRow) -> Self {
        FactorInfo {
            kind: if r.kind == "passkey" {
                FactorKind::Passkey {
                    hardware: r.hardware != 0,
                }
            } else {
                FactorKind::Totp
            },
            id: r.id,
            label: r.label,
            created_at: unix(r.created_at),
            last_used_at: r.last_used_at.map(unix),
        }
    }
}

/// User names are the store's keys: PostgreSQL text cannot hold NUL, and
/// no account is named with one or with kilobytes.
fn storable_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 1024 && !user.contains('\0')
}

fn check_user(user: &str) -> Result<(), MfaError> {
    if storable_user(user) {
        Ok(())
    } else {
        Err(MfaError::InvalidInput("not a user name".into()))
    }
}

fn check_label(label: &str) -> Result<String, MfaError> {
    let label = label.trim();
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(MfaError::InvalidInput(format!(
            "a label has at most {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(MfaError::InvalidInput(
            "a label has no control characters".into(),
        ));
    }
    Ok(label.to_owned())
}

fn new_id() -> Result<String, MfaError> {
    Ok(key::hex(&key::random::<16>()?))
}

impl Factors {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Opens the store (creating its tables), loads or generates the key,
    /// and checks that the store's factors were written with this key.
    pub async fn open(settings: MfaSettings) -> Result<Factors, MfaError> {
        let relying_party =
            RelyingParty::new(&settings.rp_origin, &settings.rp_id, &settings.rp_name)?;
        let master = key::load(&settings.key)?;
        let keys = Keys::new(&master);
        let store = Store::open(&settings.store).await?;
        let held = store.key_check(&keys.check).await?;
        if !bool::from(held.as_bytes().ct_eq(keys.check.as_bytes())) {
            store.close().await;
            let what = match &settings.key {
                crate::KeySource::File(p) => format!(
                    "the MFA store was written with another key than this node's key file {}: \
                     copy that file from a node already using this store to this node (same \
                     path, mode 0600) and start again",
                    p.display()
                ),
                crate::KeySource::Configured(_) => "the MFA store was written with another key \
                     than the configured [mfa] key: configure the same key on every node sharing \
                     the store"
                    .to_owned(),
            };
            return Err(MfaError::KeyMismatch(what));
        }
        Ok(Factors {
            store,
            keys,
            issuer: settings.issuer,
            relying_party,
        })
    }

    pub async fn list(&self, user: &str) -> Result<Enrolment, MfaError> {
        if !storable_user(user) {
            return Ok(Enrolment {
                factors: vec![],
                recovery_codes_left: 0,
            });
        }
        let factors = self
            .store
            .factors(user)
            .await?
            .into_iter()
            .map(FactorInfo::from)
            .collect();
        let recovery_codes_left = self.store.recovery_hashes(user).await?.len();
        Ok(Enrolment {
            factors,
            recovery_codes_left,
        })
    }

    /// A TOTP or a passkey (recovery codes alone do not count).
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub async fn has_factor(&self, user: &str) -> Result<bool, MfaError> {
        if !storable_user(user) {
            return Ok(false);
        }
        self.store.has_factor(user).await
    }

    /// A fresh secret, its URI and QR code; nothing is saved.
    pub fn new_totp(&self, user: &str) -> TotpEnrolment {
        let secret = totp::encode_secret(&totp::new_secret());
        let uri = totp::uri(&self.issuer, user, &secret);
        let qr_svg = totp::qr_svg(&uri);
        TotpEnrolment {
            secret,
            uri,
            qr_svg,
        }
    }

    /// The new TOTP factor's row, once `code` proved the user holds `secret`.
    fn proven_totp(
        &self,
        user: &str,
        secret: &str,
        code: &str,
        label: &str,
        now_unix: u64,
    ) -> Result<(String, String, i64, String), MfaError> {
        check_user(user)?;
        let label = check_label(label)?;
        let bytes = totp::decode_secret(secret)?;
        if code.chars().count() > MAX_CODE_CHARS {
            return Err(MfaError::InvalidCode);
        }
        let digits = totp::digits(code).ok_or(MfaError::InvalidCode)?;
        let step = totp::matching_step(&bytes, &digits, now_unix).ok_or(MfaError::InvalidCode)?;
        let id = new_id()?;
        let sealed = self.keys.seal(user, &id, &bytes)?;
        Ok((id, sealed, sql_time(step), label))
    }

    /// Verifies `code` against `secret`; on success saves the factor (the
    /// code's time step counts as used).
    pub async fn confirm_totp(
        &self,
        user: &str,
        secret: &str,
        code: &str,
        label: &str,
        now_unix: u64,
    ) -> Result<FactorInfo, MfaError> {
        let (id, sealed, step, label) = self.proven_totp(user, secret, code, label, now_unix)?;
        let row = totp_row(&id, user, &label, now_unix, &sealed, step);
        self.store.insert_factor(&row).await?;
        Ok(totp_info(id, label, now_unix))
    }

    /// Saves a TOTP factor and the recovery codes in one transaction.
    pub async fn enrol_totp(
        &self,
        user: &str,
        secret: &str,
        code: &str,
        label: &str,
        recovery: &[String],
        now_unix: u64,
    ) -> Result<FactorInfo, MfaError> {
        recovery::check_hashes(recovery)?;
        let (id, sealed, step, label) = self.proven_totp(user, secret, code, label, now_unix)?;
        let row = totp_row(&id, user, &label, now_unix, &sealed, step);
        self.store
            .insert_with_recovery(Some(&row), user, recovery)
            .await?;
        Ok(totp_info(id, label, now_unix))
    }

    /// A code typed in the `otp` field: the user's TOTP factors first, then
    /// the unused recovery codes.
    pub async fn verify_otp(
        &self,
        user: &str,
        code: &str,
        now_unix: u64,
    ) -> Result<Verified, MfaError> {
        if code.chars().count() > MAX_CODE_CHARS || !storable_user(user) {
            return Err(MfaError::InvalidCode);
        }
        if let Some(digits) = totp::digits(code) {
            let mut replayed = false;
            for factor in self.store.totp_factors(user).await? {
                let secret = match self.keys.open(user, &factor.id, &factor.sealed) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(user = %user, factor = %factor.id, error = %e, "TOTP secret unusable");
                        continue;
                    }
                };
                let Some(step) = totp::matching_step(&secret, &digits, now_unix) else {
                    continue;
                };
                let step = sql_time(step);
                // RFC 6238 §5.2: a code is accepted once; the UPDATE's
                // condition decides between racing nodes.
                if step > factor.last_step
                    && self
                        .store
                        .accept_step(&factor.id, step, sql_time(now_unix))
                        .await?
                {
                    return Ok(Verified::Totp { factor: factor.id });
                }
                replayed = true;
            }
            return Err(if replayed {
                MfaError::Replayed
            } else {
                MfaError::InvalidCode
            });
        }
        let Some(canonical) = recovery::canonical(code) else {
            return Err(MfaError::InvalidCode);
        };
        let typed = self.keys.recovery_hash(user, &canonical);
        let hashes = self.store.recovery_hashes(user).await?;
        let mut matched: Option<&String> = None;
        for h in &hashes {
            // Every stored hash is compared, in constant time.
            if bool::from(h.as_bytes().ct_eq(typed.as_bytes())) {
                matched = Some(h);
            }
        }
        match matched {
            Some(h) if self.store.consume_recovery(user, h).await? => Ok(Verified::RecoveryCode {
                left: hashes.len().saturating_sub(1),
            }),
            // Another request consumed it between the read and the delete.
            Some(_) => Err(MfaError::Replayed),
            None => Err(MfaError::InvalidCode),
        }
    }

    /// Ten fresh codes; nothing is saved.
    pub fn new_recovery_codes(&self, user: &str) -> RecoveryCodes {
        recovery::generate(&self.keys, user)
    }

    /// Replaces the user's recovery codes with these hashes.
    pub async fn save_recovery_codes(&self, user: &str, hashes: &[String]) -> Result<(), MfaError> {
        check_user(user)?;
        recovery::check_hashes(hashes)?;
        self.store.replace_recovery(user, hashes).await
    }

    async fn credentials(&self, user: &str) -> Result<Vec<(String, Credential, bool)>, MfaError> {
        let mut out = Vec::new();
        for row in self.store.passkeys(user).await? {
            match serde_json::from_str::<Credential>(&row.credential) {
                Ok(mut c) => {
                    // The column is authoritative: it is what the UPDATE checks.
                    c.counter = u32::try_from(row.counter).unwrap_or(u32::MAX);
                    out.push((row.id, c, row.hardware != 0));
                }
                Err(e) => {
                    tracing::error!(user = %user, factor = %row.id, error = %e, "stored passkey unreadable")
                }
            }
        }
        Ok(out)
    }

    /// Options for `navigator.credentials.create()` and the state to hand
    /// back to [`Factors::finish_passkey_registration`].
    pub async fn start_passkey_registration(
        &self,
        user: &str,
    ) -> Result<(serde_json::Value, Vec<u8>), MfaError> {
        check_user(user)?;
        let exclude = self
            .credentials(user)
            .await?
            .into_iter()
            .map(|(_, c, _)| c.cred_id)
            .collect();
        self.relying_party
            .start_registration(&self.keys.user_handle(user), user, exclude)
    }

    pub async fn finish_passkey_registration(
        &self,
        user: &str,
        state: &[u8],
        response: &serde_json::Value,
        label: &str,
    ) -> Result<FactorInfo, MfaError> {
        self.finish_passkey_registration_at(user, state, response, label, now())
            .await
    }

    /// [`Factors::finish_passkey_registration`] at a given time.
    pub async fn finish_passkey_registration_at(
        &self,
        user: &str,
        state: &[u8],
        response: &serde_json::Value,
        label: &str,
        now_unix: u64,
    ) -> Result<FactorInfo, MfaError> {
        check_user(user)?;
        let label = check_label(label)?;
        let (credential, hardware) = self
            .relying_party
            .finish_registration(user, state, response)?;
        let id = new_id()?;
        let json =
            serde_json::to_string(&credential).map_err(|e| MfaError::WebAuthn(e.to_string()))?;
        let credential_id = base64_url(credential.cred_id.as_ref());
        self.store
            .insert_factor(&NewFactor {
                id: &id,
                user,
                kind: "passkey",
                label: &label,
                created_at: sql_time(now_unix),
                secret: None,
                last_step: -1,
                credential_id: Some(&credential_id),
                credential: Some(&json),
                counter: i64::from(credential.counter),
                hardware: i64::from(hardware),
            })
            .await?;
        Ok(FactorInfo {
            id,
            kind: FactorKind::Passkey { hardware },
            label,
            created_at: now_unix,
            last_used_at: None,
        })
    }

    /// Options for `navigator.credentials.get()` and the state; None when
    /// the user has no passkey.
    pub async fn start_passkey_authentication(
        &self,
        user: &str,
    ) -> Result<Option<(serde_json::Value, Vec<u8>)>, MfaError> {
        if !storable_user(user) {
            return Ok(None);
        }
        let credentials: Vec<Credential> = self
            .credentials(user)
            .await?
            .into_iter()
            .map(|(_, c, _)| c)
            .collect();
        if credentials.is_empty() {
            return Ok(None);
        }
        self.relying_party
            .start_authentication(user, credentials)
            .map(Some)
    }

    pub async fn finish_passkey_authentication(
        &self,
        user: &str,
        state: &[u8],
        response: &serde_json::Value,
    ) -> Result<Verified, MfaError> {
        self.finish_passkey_authentication_at(user, state, response, now())
            .await
    }

    /// [`Factors::finish_passkey_authentication`] at a given time.
    pub async fn finish_passkey_authentication_at(
        &self,
        user: &str,
        state: &[u8],
        response: &serde_json::Value,
        now_unix: u64,
    ) -> Result<Verified, MfaError> {
        check_user(user)?;
        let result = match self
            .relying_party
            .finish_authentication(user, state, response)
        {
            Err(MfaError::ClonedCredential) => {
                tracing::warn!(user = %user, "passkey signature counter did not grow: possibly a cloned authenticator; refused");
                return Err(MfaError::ClonedCredential);
            }
            other => other?,
        };
        let (id, mut credential, hardware) = self
            .credentials(user)
            .await?
            .into_iter()
            .find(|(_, c, _)| &c.cred_id == result.cred_id())
            // Removed between the two requests.
            .ok_or(MfaError::NotFound)?;
        credential.counter = result.counter();
        credential.backup_state = result.backup_state();
        credential.backup_eligible |= result.backup_eligible();
        let json =
            serde_json::to_string(&credential).map_err(|e| MfaError::WebAuthn(e.to_string()))?;
        if !self
            .store
            .record_assertion(&id, i64::from(result.counter()), &json, sql_time(now_unix))
            .await?
        {
            tracing::warn!(user = %user, factor = %id, "passkey signature counter did not grow past the stored one: possibly a cloned authenticator; refused");
            return Err(MfaError::ClonedCredential);
        }
        Ok(Verified::Passkey {
            factor: id,
            hardware,
        })
    }

    pub async fn remove(&self, user: &str, factor_id: &str) -> Result<bool, MfaError> {
        if !storable_user(user) || factor_id.len() > 64 {
            return Ok(false);
        }
        self.store.remove(user, factor_id).await
    }

    /// Removes every factor and recovery code of the user; how many factors.
    pub async fn reset(&self, user: &str) -> Result<usize, MfaError> {
        if !storable_user(user) {
            return Ok(0);
        }
        self.store.reset(user).await
    }

    /// One factor of the user.
    pub async fn get(&self, user: &str, factor_id: &str) -> Result<FactorInfo, MfaError> {
        if !storable_user(user) {
            return Err(MfaError::NotFound);
        }
        self.store
            .factor(user, factor_id)
            .await?
            .map(FactorInfo::from)
            .ok_or(MfaError::NotFound)
    }

    /// The stored (sealed) secret text of a factor: for tests.
    #[doc(hidden)]
    pub async fn stored_secret(&self, factor_id: &str) -> Result<Option<String>, MfaError> {
        self.store.raw_secret(factor_id).await
    }

    /// Overwrites a factor's stored secret text: for tests.
    #[doc(hidden)]
    pub async fn overwrite_stored_secret(
        &self,
        factor_id: &str,
        sealed: &str,
    ) -> Result<(), MfaError> {
        self.store.set_raw_secret(factor_id, sealed).await
    }

    /// Closes the store's connections.
    pub async fn close(&self) {
        self.store.close().await
    }
}

fn totp_row<'a>(
    id: &'a str,
    user: &'a str,
    label: &'a str,
    now_unix: u64,
    sealed: &'a str,
    step: i64,
) -> NewFactor<'a> {
    NewFactor {
        id,
        user,
        kind: "totp",
        label,
        created_at: sql_time(now_unix),
        secret: Some(sealed),
        last_step: step,
        credential_id: None,
        credential: None,
        counter: 0,
        hardware: 0,
    }
}

fn totp_info(id: String, label: String, now_unix: u64) -> FactorInfo {
    FactorInfo {
        id,
        kind: FactorKind::Totp,
        label,
        created_at: now_unix,
        last_used_at: None,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
