//! An upstream SAML 2.0 IdP, with Castellan as its service provider: an
//! AuthnRequest signed over the Redirect binding, and the Response at the
//! ACS verified by castellan-saml (xmlsec signature over the assertion
//! actually used, Destination, InResponseTo, Audience, time window, no
//! comment in the NameID).

use crate::{Authenticated, Connector, DelegationError, Finish, Start, Started};
use async_trait::async_trait;
use castellan_core::Principal;
use castellan_saml::binding::encode_redirect;
use castellan_saml::sp_side::{authn_request, sp_metadata, verify_response, Expect, UpstreamIdp};
use castellan_saml::{IdpCredentials, SamlError};
use std::sync::Arc;

pub struct SamlConnector {
    name: String,
    display_name: String,
    idp: UpstreamIdp,
    /// `{public_url}/delegated/NAME/metadata`
    entity_id: String,
    /// `{public_url}/delegated/NAME/acs`
    acs: String,
    credentials: Arc<IdpCredentials>,
    skew_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SamlConnector {
    pub fn new(
        name: String,
        display_name: String,
        idp: UpstreamIdp,
        public_url: &str,
        credentials: Arc<IdpCredentials>,
    ) -> Self {
        let base = format!("{}/delegated/{name}", public_url.trim_end_matches('/'));
        Self {
            entity_id: format!("{base}/metadata"),
            acs: format!("{base}/acs"),
            name,
            display_name,
            idp,
            credentials,
            skew_ms: 60_000,
        }
    }
}

fn refused(e: SamlError) -> DelegationError {
    match e {
        SamlError::Status { message, .. } => DelegationError::Invalid(message),
        other => DelegationError::Invalid(other.to_string()),
    }
}

#[async_trait]
impl Connector for SamlConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn supports_passive(&self) -> bool {
        true
    }

    fn proves_fresh_login(&self) -> bool {
        true
    }

    fn metadata(&self) -> Option<String> {
        Some(sp_metadata(&self.entity_id, &self.acs, &self.credentials))
    }

    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError> {
        let (id, xml) = authn_request(
            &self.entity_id,
            &self.acs,
            &self.idp.sso_redirect,
            start.renew,
            start.passive && !start.renew,
            now_ms(),
        );
        let query = encode_redirect("SAMLRequest", &xml, Some(start.state), &self.credentials)
            .map_err(|e| DelegationError::Invalid(e.to_string()))?;
        let sep = if self.idp.sso_redirect.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(Started {
            redirect: format!("{}{sep}{query}", self.idp.sso_redirect),
            saved: id,
        })
    }

    async fn finish(&self, finish: &Finish<'_>) -> Result<Authenticated, DelegationError> {
        let response = finish
            .params
            .get("SAMLResponse")
            .ok_or_else(|| DelegationError::Refused("no SAMLResponse came back".into()))?;
        let expect = Expect {
            idp: &self.idp,
            sp_entity_id: &self.entity_id,
            acs: &self.acs,
            request_id: finish.saved,
            now_ms: now_ms(),
            skew_ms: self.skew_ms,
        };
        let identity = verify_response(response, &expect).map_err(refused)?;
        // AuthnInstant is read from the signed assertion: ForceAuthn asked
        // for a fresh login, this says whether there was one.
        let instant = identity
            .authn_instant_ms
            .and_then(|ms| u64::try_from(ms / 1000).ok());
        let fresh = crate::authenticated_since(instant, finish.started_at);
        let mfa = identity
            .authn_context_class
            .as_deref()
            .is_some_and(castellan_saml::authn_context::says_mfa);
        let mut principal = Principal::new(identity.name_id);
        principal.attributes = identity.attributes;
        Ok(Authenticated {
            principal,
            fresh,
            mfa,
        })
    }
}
