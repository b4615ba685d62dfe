//! WebAuthn ceremonies (webauthn-rs' core): user verification preferred,
//! platform and roaming authenticators alike, no attestation required.

use crate::MfaError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::time::Duration;
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticationResult, AuthenticationState, COSEAlgorithm,
    Credential, CredentialID, PublicKeyCredential, RegisterPublicKeyCredential, RegistrationState,
    RequestRegistrationExtensions, UserVerificationPolicy,
};
use webauthn_rs_core::WebauthnCore;

/// The largest browser response accepted (serialized JSON).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long the browser may take (sent as `timeout`).
const CEREMONY_TIMEOUT: Duration = Duration::from_secs(300);

/// A ceremony's state between its two requests, bound to the user it was
/// started for. Versioned: a node of the next version never misreads one.
#[derive(Serialize, Deserialize)]
struct Pending<S> {
    v: u8,
    user: String,
    state: S,
}

pub(crate) struct RelyingParty {
    core: WebauthnCore,
}

fn webauthn(e: WebauthnError) -> MfaError {
    match e {
        WebauthnError::CredentialPossibleCompromise => MfaError::ClonedCredential,
        e => MfaError::WebAuthn(e.to_string()),
    }
}

/// The browser's JSON as a webauthn-rs type; oversized or malformed is an error.
fn response<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, MfaError> {
    let bytes = serde_json::to_vec(value).map_err(|e| MfaError::WebAuthn(e.to_string()))?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(MfaError::InvalidInput(
            "WebAuthn response over 64 KiB".into(),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| MfaError::WebAuthn(format!("not a WebAuthn response: {e}")))
}

fn seal_state<S: Serialize>(user: &str, state: S) -> Result<Vec<u8>, MfaError> {
    serde_json::to_vec(&Pending {
        v: 1,
        user: user.to_owned(),
        state,
    })
    .map_err(|e| MfaError::WebAuthn(e.to_string()))
}

fn open_state<S: DeserializeOwned>(user: &str, bytes: &[u8]) -> Result<S, MfaError> {
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(MfaError::WebAuthn("ceremony state too large".into()));
    }
    let p: Pending<S> = serde_json::from_slice(bytes)
        .map_err(|_| MfaError::WebAuthn("not a ceremony state of this version".into()))?;
    if p.v != 1 || p.user != user {
        return Err(MfaError::WebAuthn(
            "the ceremony was started for another user".into(),
        ));
    }
    Ok(p.state)
}

/// WebAuthn §5.1.4.1 (via the HTML "registrable domain suffix" rule): the
/// RP id is the origin's host or a parent domain of it.
fn check_rp_id(origin: &url::Url, rp_id: &str) -> Result<(), MfaError> {
    let host = origin
        .host_str()
        .ok_or_else(|| MfaError::WebAuthn(format!("origin {origin} has no host")))?;
    if rp_id.is_empty() || !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
        return Err(MfaError::WebAuthn(format!(
            "the relying-party id {rp_id} is not the host of {origin} or a parent domain of it"
        )));
    }
    Ok(())
}

impl RelyingParty {
    pub fn new(origin: &url::Url, rp_id: &str, rp_name: &str) -> Result<Self, MfaError> {
        check_rp_id(origin, rp_id)?;
        let origin = url::Url::parse(&origin.origin().ascii_serialization())
            .map_err(|e| MfaError::WebAuthn(format!("origin {origin}: {e}")))?;
        Ok(RelyingParty {
            core: WebauthnCore::new_unsafe_experts_only(
                rp_name,
                rp_id,
                vec![origin],
                CEREMONY_TIMEOUT,
                None,
                None,
            ),
        })
    }

    pub fn start_registration(
        &self,
        handle: &[u8],
        user: &str,
        exclude: Vec<CredentialID>,
    ) -> Result<(serde_json::Value, Vec<u8>), MfaError> {
        let builder = self
            .core
            .new_challenge_register_builder(handle, user, user)
            .map_err(webauthn)?
            .attestation(AttestationConveyancePreference::None)
            .credential_algorithms(COSEAlgorithm::secure_algs())
            .user_verification_policy(UserVerificationPolicy::Preferred)
            .require_resident_key(false)
            .authenticator_attachment(None)
            .reject_synchronised_authenticators(false)
            .exclude_credentials(Some(exclude))
            .hints(None)
            .extensions(Some(RequestRegistrationExtensions {
                cred_protect: None,
                uvm: Some(true),
                cred_props: Some(true),
                min_pin_length: None,
                hmac_create_secret: None,
            }));
        let (options, state) = self
            .core
            .generate_challenge_register(builder)
            .map_err(webauthn)?;
        let options =
            serde_json::to_value(options).map_err(|e| MfaError::WebAuthn(e.to_string()))?;
        Ok((options, seal_state::<RegistrationState>(user, state)?))
    }

    /// The new credential and whether it is a roaming authenticator.
    pub fn finish_registration(
        &self,
        user: &str,
        state: &[u8],
        value: &serde_json::Value,
    ) -> Result<(Credential, bool), MfaError> {
        let state: RegistrationState = open_state(user, state)?;
        let reg: RegisterPublicKeyCredential = response(value)?;
        let credential = self
            .core
            .register_credential(&reg, &state, None)
            .map_err(webauthn)?;
        // webauthn-rs' type drops it: the browser's own word (WebAuthn §5.1
        // authenticatorAttachment) on a roaming key.
        let hardware = value
            .get("authenticatorAttachment")
            .and_then(|a| a.as_str())
            == Some("cross-platform");
        Ok((credential, hardware))
    }

    pub fn start_authentication(
        &self,
        user: &str,
        credentials: Vec<Credential>,
    ) -> Result<(serde_json::Value, Vec<u8>), MfaError> {
        let builder = self
            .core
            .new_challenge_authenticate_builder(
                credentials,
                Some(UserVerificationPolicy::Preferred),
            )
            .map_err(webauthn)?
            .allow_backup_eligible_upgrade(true)
            .hints(None);
        let (options, state) = self
            .core
            .generate_challenge_authenticate(builder)
            .map_err(webauthn)?;
        let options =
            serde_json::to_value(options).map_err(|e| MfaError::WebAuthn(e.to_string()))?;
        Ok((options, seal_state::<AuthenticationState>(user, state)?))
    }

    /// Verifies the assertion against the credentials the ceremony was
    /// started with. webauthn-rs itself refuses a counter that did not grow
    /// (CredentialPossibleCompromise, mapped to ClonedCredential); the store
    /// checks again against the current counter when recording it.
    pub fn finish_authentication(
        &self,
        user: &str,
        state: &[u8],
        value: &serde_json::Value,
    ) -> Result<AuthenticationResult, MfaError> {
        let state: AuthenticationState = open_state(user, state)?;
        let assertion: PublicKeyCredential = response(value)?;
        self.core
            .authenticate_credential(&assertion, &state)
            .map_err(webauthn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp() -> RelyingParty {
        RelyingParty::new(
            &url::Url::parse("https://id.example.org:8443/cas").unwrap(),
            "example.org",
            "Castellan",
        )
        .unwrap()
    }

    #[test]
    fn rp_id_must_be_the_origin_host_or_a_parent() {
        let o = url::Url::parse("https://id.example.org/").unwrap();
        assert!(check_rp_id(&o, "id.example.org").is_ok());
        assert!(check_rp_id(&o, "example.org").is_ok());
        assert!(check_rp_id(&o, "other.org").is_err());
        assert!(check_rp_id(&o, "ample.org").is_err());
        assert!(check_rp_id(&o, "").is_err());
    }

    #[test]
    fn registration_options_prefer_user_verification_and_allow_any_authenticator() {
        let (options, state) = rp().start_registration(&[1; 16], "alice", vec![]).unwrap();
        let pk = &options["publicKey"];
        assert_eq!(pk["rp"]["id"], "example.org");
        assert_eq!(pk["rp"]["name"], "Castellan");
        assert_eq!(pk["user"]["name"], "alice");
        assert_eq!(
            pk["authenticatorSelection"]["userVerification"],
            "preferred"
        );
        assert!(pk["authenticatorSelection"]
            .get("authenticatorAttachment")
            .is_none_or(|a| a.is_null()));
        assert!(pk.get("hints").is_none_or(|h| h.is_null()));
        assert!(!state.is_empty());
    }

    #[test]
    fn state_is_bound_to_its_user_and_garbage_is_an_error() {
        let rp = rp();
        let (_, state) = rp.start_registration(&[1; 16], "alice", vec![]).unwrap();
        let garbage =
            serde_json::json!({"id": "x", "rawId": "eA", "type": "public-key", "response": {}});
        assert!(matches!(
            rp.finish_registration("bob", &state, &garbage),
            Err(MfaError::WebAuthn(_))
        ));
        assert!(rp.finish_registration("alice", &state, &garbage).is_err());
        assert!(rp
            .finish_registration("alice", b"\xff\x00garbage", &garbage)
            .is_err());
        assert!(rp
            .finish_registration("alice", &state, &serde_json::json!(42))
            .is_err());
        let huge = serde_json::json!({ "id": "a".repeat(MAX_RESPONSE_BYTES) });
        assert!(matches!(
            rp.finish_registration("alice", &state, &huge),
            Err(MfaError::InvalidInput(_))
        ));
        assert!(rp.finish_authentication("alice", &state, &garbage).is_err());
    }
}
