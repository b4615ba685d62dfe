//! The second step of a sign-in, as the login page runs it: what to show
//! (a code field, a passkey, or the enrolment of a first factor) and how a
//! submitted proof is checked. Its state between the page and the POST is
//! opaque bytes the caller keeps (the core's deferred sign-in).

use crate::{Factors, MfaError, RecoveryCodes, Verified, MAX_RESPONSE_BYTES};
use serde::{Deserialize, Serialize};

/// What a second-step page keeps between its rendering and its POST.
#[derive(Default, Serialize, Deserialize)]
struct Challenge {
    /// Enrolment: the secret offered and the recovery codes shown with it
    /// (both saved only once the first code or passkey passed).
    totp: Option<Offer>,
    recovery: Option<RecoveryCodes>,
    passkey_registration: Option<Vec<u8>>,
    passkey_authentication: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Offer {
    secret: String,
    uri: String,
    qr_svg: String,
}

/// The sealed state is bound to its user and to this use.
const STATE_LABEL: &str = "second-step";

impl Factors {
    /// Seals a page's state for the ticket store: it may hold a TOTP
    /// secret and recovery codes in the clear, which must not lie there
    /// readable (nor be moved to another user).
    pub fn seal_state(&self, user: &str, state: &[u8]) -> Result<Vec<u8>, MfaError> {
        Ok(self.keys().seal(user, STATE_LABEL, state)?.into_bytes())
    }

    /// The state [`Factors::seal_state`] sealed for `user`; empty when
    /// there is none or it does not open.
    pub fn open_state(&self, user: &str, sealed: &[u8]) -> Vec<u8> {
        std::str::from_utf8(sealed)
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| self.keys().open(user, STATE_LABEL, s).ok())
            .unwrap_or_default()
    }

    fn read_challenge(&self, user: &str, sealed: &[u8]) -> Challenge {
        serde_json::from_slice(&self.open_state(user, sealed)).unwrap_or_default()
    }

    fn seal_challenge(&self, user: &str, challenge: &Challenge) -> Result<Vec<u8>, MfaError> {
        self.seal_state(user, &serde_json::to_vec(challenge).unwrap_or_default())
    }
}

/// What the page shows.
#[derive(Debug, Default)]
pub struct StepView {
    /// Enrolment: the `otpauth://` URI and its QR code (inline SVG).
    pub enrol: Option<(String, String)>,
    /// Enrolment: the recovery codes, shown with it.
    pub recovery_codes: Vec<String>,
    /// `navigator.credentials.get` options, for a `<script type="application/json">`.
    pub passkey_options: Option<String>,
    /// `navigator.credentials.create` options, likewise (enrolment).
    pub passkey_create_options: Option<String>,
}

/// What the user submitted.
pub enum Proof {
    /// A TOTP or recovery code.
    Code(String),
    Passkey(serde_json::Value),
    NewPasskey(serde_json::Value),
}

impl Proof {
    /// From the form's fields (`otp`, `webauthn`, `webauthn_register`).
    pub fn from_fields(
        otp: Option<&str>,
        webauthn: Option<&str>,
        webauthn_register: Option<&str>,
    ) -> Option<Proof> {
        let json = |text: &str| {
            (text.len() <= MAX_RESPONSE_BYTES)
                .then(|| serde_json::from_str(text).ok())
                .flatten()
        };
        match (otp, webauthn, webauthn_register) {
            (_, Some(w), _) if !w.is_empty() => json(w).map(Proof::Passkey),
            (_, _, Some(w)) if !w.is_empty() => json(w).map(Proof::NewPasskey),
            // Apps show "123 456"; people paste "123456 ".
            (Some(code), _, _) => Some(Proof::Code(
                code.chars()
                    .filter(|c| !c.is_whitespace())
                    .take(crate::MAX_CODE_CHARS + 1)
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// JSON for a `<script type="application/json">`: no `<` can end it early.
pub fn script_json(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

impl Factors {
    /// The page of the second step for `user`, with a fresh passkey
    /// challenge, and the state to keep for its POST. An enrolment keeps
    /// its secret and codes across renderings: what is shown is what will
    /// be saved.
    pub async fn prepare_step(
        &self,
        user: &str,
        state: &[u8],
    ) -> Result<(StepView, Vec<u8>), MfaError> {
        let mut challenge = self.read_challenge(user, state);
        let mut view = StepView::default();
        if self.has_factor(user).await? {
            // Enrolled meanwhile (another tab): nothing of the offer stays.
            challenge = Challenge::default();
            if let Some((options, st)) = self.start_passkey_authentication(user).await? {
                view.passkey_options = Some(script_json(&options));
                challenge.passkey_authentication = Some(st);
            }
        } else {
            let offer = challenge.totp.get_or_insert_with(|| {
                let t = self.new_totp(user);
                Offer {
                    secret: t.secret,
                    uri: t.uri,
                    qr_svg: t.qr_svg,
                }
            });
            view.enrol = Some((offer.uri.clone(), offer.qr_svg.clone()));
            let codes = challenge
                .recovery
                .get_or_insert_with(|| self.new_recovery_codes(user));
            view.recovery_codes = codes.codes.clone();
            let (options, st) = self.start_passkey_registration(user).await?;
            view.passkey_create_options = Some(script_json(&options));
            challenge.passkey_registration = Some(st);
        }
        Ok((view, self.seal_challenge(user, &challenge)?))
    }

    /// Checks what the user submitted against the step's state: what it
    /// proved, or `Ok(None)` for a wrong, replayed or cloned one. An
    /// enrolment saves the factor and its recovery codes here.
    pub async fn check_step(
        &self,
        user: &str,
        state: &[u8],
        proof: &Proof,
        now_unix: u64,
    ) -> Result<Option<Verified>, MfaError> {
        let challenge = self.read_challenge(user, state);
        // An enrolment offered while the user had no factor is void once
        // they have one: a flow started earlier must not add a factor or
        // replace the recovery codes behind the user's back.
        let enrolling = challenge.totp.is_some() || challenge.passkey_registration.is_some();
        if enrolling && self.has_factor(user).await? {
            tracing::warn!(user = %user, "an enrolment offered before the user had a factor was refused");
            return Ok(None);
        }
        let outcome = match proof {
            Proof::Code(code) => match (&challenge.totp, &challenge.recovery) {
                (Some(offer), Some(codes)) => self
                    .enrol_totp(
                        user,
                        &offer.secret,
                        code,
                        "Authenticator app",
                        &codes.hashes,
                        now_unix,
                    )
                    .await
                    .map(|f| Verified::Totp { factor: f.id }),
                _ => self.verify_otp(user, code, now_unix).await,
            },
            Proof::Passkey(response) => match &challenge.passkey_authentication {
                Some(st) => self.finish_passkey_authentication(user, st, response).await,
                None => Err(MfaError::InvalidCode),
            },
            Proof::NewPasskey(response) => {
                match (&challenge.passkey_registration, &challenge.recovery) {
                    (Some(st), Some(codes)) => {
                        match self
                            .finish_passkey_registration(user, st, response, "Passkey")
                            .await
                        {
                            Ok(info) => {
                                self.save_recovery_codes(user, &codes.hashes).await?;
                                let hardware = matches!(
                                    info.kind,
                                    crate::FactorKind::Passkey { hardware: true }
                                );
                                Ok(Verified::Passkey {
                                    factor: info.id,
                                    hardware,
                                })
                            }
                            Err(e) => Err(e),
                        }
                    }
                    _ => Err(MfaError::InvalidCode),
                }
            }
        };
        match outcome {
            Ok(verified) => Ok(Some(verified)),
            Err(MfaError::ClonedCredential) => {
                tracing::warn!(user = %user, "passkey refused: its signature counter went backwards (cloned?)");
                Ok(None)
            }
            Err(
                MfaError::InvalidCode
                | MfaError::Replayed
                | MfaError::NotFound
                | MfaError::InvalidInput(_)
                | MfaError::WebAuthn(_),
            ) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
