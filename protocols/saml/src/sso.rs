//! Single sign-on as a client of the CAS core: a checked AuthnRequest is
//! kept while the browser logs in at `/login` with the IdP's callback as
//! the service; the ticket that comes back is validated through the
//! engine and turned into a signed Response for the SP's ACS.

use crate::binding::{self, BindingParameters, QuerySignature};
use crate::idp::{signing_step, IdentityProvider};
use crate::records::{self, Issued, Pending};
use crate::request::{self, Binding};
use crate::response::{self, ResponseContext, Subject};
use crate::{status, SamlError, ServiceProvider};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{Engine, EngineError, InProcessClient};
use std::net::IpAddr;

/// An SP's message as the IdP acts on it: the XML, how its signature came,
/// and the RelayState, all from one parse of the query string or form.
pub struct SamlMessage {
    pub xml: String,
    pub binding: Binding,
    pub relay_state: Option<String>,
}

/// An auto-submitting form to an SP (HTTP-POST binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostForm {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl PostForm {
    /// `xml` as the base64 `field` (SAMLRequest, SAMLResponse).
    pub fn message(action: &str, field: &str, xml: &str, relay_state: Option<&str>) -> Self {
        let mut fields = vec![(field.to_owned(), STANDARD.encode(xml.as_bytes()))];
        if let Some(r) = relay_state {
            fields.push(("RelayState".to_owned(), r.to_owned()));
        }
        Self {
            action: action.to_owned(),
            fields,
        }
    }
}

/// Where the browser goes to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToLogin {
    /// The callback service URL for `/login`.
    pub service: String,
    /// ForceAuthn: a fresh login.
    pub renew: bool,
    /// IsPassive: no login form.
    pub gateway: bool,
}

/// What answers an AuthnRequest.
#[derive(Debug)]
pub enum SsoNext {
    Login(ToLogin),
    /// A signed error Response to the SP's ACS.
    Refused(PostForm),
}

/// What the callback answers the SP.
#[derive(Debug)]
pub struct Answer {
    pub form: PostForm,
    /// A successful Response (not an error status).
    pub success: bool,
}

/// An SP's SAMLRequest over HTTP-POST (its signature, if any, is inside).
pub fn post_message(p: &BindingParameters) -> Result<SamlMessage, SamlError> {
    let message = p
        .get("SAMLRequest")
        .ok_or_else(|| SamlError::untrusted("The request carries no SAMLRequest."))?;
    let relay_state = p.relay_state()?.map(str::to_owned);
    Ok(SamlMessage {
        xml: binding::decode_post(message)?,
        binding: Binding::Post,
        relay_state,
    })
}

impl IdentityProvider {
    /// An SP's SAMLRequest over HTTP-Redirect: inflated, and its query
    /// signature checked against the SP its Issuer names, over the very
    /// parameters the request and RelayState are read from.
    pub fn redirect_message(&self, p: &BindingParameters) -> Result<SamlMessage, SamlError> {
        let message = p
            .get("SAMLRequest")
            .ok_or_else(|| SamlError::untrusted("The request carries no SAMLRequest."))?;
        let relay_state = p.relay_state()?.map(str::to_owned);
        let xml = binding::decode_redirect(message)?;
        let signature = match request::issuer_of(&xml)
            .ok()
            .and_then(|i| self.sp_by_entity_id(&i))
        {
            Some(sp) => p.verify_signature("SAMLRequest", &sp.signing_certs),
            None => QuerySignature::Absent,
        };
        Ok(SamlMessage {
            xml,
            binding: Binding::Redirect(signature),
            relay_state,
        })
    }

    /// Checks an AuthnRequest (once per ID and SP) and keeps it for the
    /// login; an SP that can be answered learns a refusal at its ACS.
    pub async fn authn_request(
        &self,
        engine: &Engine,
        client: Option<IpAddr>,
        message: SamlMessage,
    ) -> Result<SsoNext, SamlError> {
        let SamlMessage {
            xml,
            binding,
            relay_state,
        } = message;
        let limits = self.limits(engine.clock().now());
        let checked = match request::check_authn_request(&xml, binding, &self.settings.sps, &limits)
        {
            Ok(c) => c,
            Err(SamlError::Status { status, message }) => {
                return match request::error_target(&xml, &self.settings.sps) {
                    Some((sp, acs, id)) => self
                        .refusal(
                            engine,
                            sp,
                            &acs,
                            Some(&id),
                            relay_state.as_deref(),
                            status,
                            &message,
                        )
                        .await
                        .map(SsoNext::Refused),
                    None => Err(SamlError::Untrusted(message)),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SAML AuthnRequest refused");
                return Err(SamlError::Untrusted(e.to_string()));
            }
        };
        // One use per request ID and SP within the accepted window.
        let window = self.settings.request_max_age + self.settings.clock_skew * 2;
        let replay_key = format!("saml:seen:{}:{}", checked.sp.entity_id, checked.id);
        if !engine.store().add_record(&replay_key, b"", window).await? {
            return self
                .refusal(
                    engine,
                    checked.sp,
                    &checked.acs_url,
                    Some(&checked.id),
                    relay_state.as_deref(),
                    status::REQUESTER,
                    "this AuthnRequest was already used",
                )
                .await
                .map(SsoNext::Refused);
        }
        let pending = Pending {
            sp: checked.sp.name.clone(),
            request_id: Some(checked.id.clone()),
            acs_url: checked.acs_url.clone(),
            relay_state,
            force_authn: checked.force_authn,
            is_passive: checked.is_passive,
            name_id_format: Some(checked.name_id_format.clone()),
        };
        self.keep(engine, client, pending, checked.authn_context.clone())
            .await
            .map(SsoNext::Login)
    }

    /// An IdP-initiated sign-in (Shibboleth's unsolicited SSO profile):
    /// `providerId`, then `shire` or `acsURL`, then `target` or `RelayState`.
    pub async fn unsolicited(
        &self,
        engine: &Engine,
        client: Option<IpAddr>,
        p: &BindingParameters<'_>,
    ) -> Result<ToLogin, SamlError> {
        let provider = p
            .get("providerId")
            .ok_or_else(|| SamlError::untrusted("providerId is missing."))?;
        let sp = self
            .sp_by_entity_id(provider)
            .ok_or_else(|| SamlError::untrusted("The service provider is not registered."))?;
        let acs = match p.get("shire").or_else(|| p.get("acsURL")) {
            Some(url) => sp.acs_for(Some(url), None),
            None => sp.default_acs(),
        }
        .ok_or_else(|| {
            SamlError::untrusted("The consumer service is not in the service provider's metadata.")
        })?;
        let relay_state = p.get("target").or_else(|| p.get("RelayState"));
        if relay_state.is_some_and(|r| binding::check_relay_state(r).is_err()) {
            return Err(SamlError::untrusted("The target is too long."));
        }
        let pending = Pending {
            sp: sp.name.clone(),
            request_id: None,
            acs_url: acs.url.clone(),
            relay_state: relay_state.map(str::to_owned),
            force_authn: false,
            is_passive: false,
            name_id_format: None,
        };
        self.keep(engine, client, pending, None).await
    }

    /// Keeps the request for the login. The class a `RequestedAuthnContext`
    /// asked for waits beside it (nodes of the release before read the
    /// request without it), and one that needs a second factor sends the
    /// login to the callback the core requires it for.
    async fn keep(
        &self,
        engine: &Engine,
        client: Option<IpAddr>,
        pending: Pending,
        authn_context: Option<String>,
    ) -> Result<ToLogin, SamlError> {
        engine.admit_pending_flow(client)?;
        let id = new_ticket_id("SR");
        let ttl = engine.policy().login_flow_ttl;
        if let Some(class) = &authn_context {
            engine
                .store()
                .put_record(&records::authn_context_key(&id), class.as_bytes(), ttl)
                .await?;
        }
        let bytes = records::encode(&pending)?;
        engine
            .store()
            .put_record(&records::pending_key(&id), &bytes, ttl)
            .await?;
        let service = match &authn_context {
            Some(class) if crate::authn_context::needs_mfa(class) => {
                self.callbacks().build_asking_mfa(&pending.sp, &id)
            }
            _ => self.callback_url(&pending.sp, &id),
        };
        Ok(ToLogin {
            service,
            renew: pending.force_authn,
            gateway: pending.is_passive,
        })
    }

    /// The login came back to the callback of `sp`'s pending `request_id`
    /// with a service ticket (none: a passive login found no session).
    /// Answers the SP's ACS; keeps what the SP was sent for single logout.
    pub async fn callback(
        &self,
        engine: &Engine,
        sp_name: &str,
        request_id: &str,
        ticket: Option<&str>,
        refusal: Option<castellan_core::ConsentRefusal>,
    ) -> Result<Answer, SamlError> {
        if request_id.len() > castellan_core::client::MAX_REQUEST_ID {
            return Err(SamlError::Expired);
        }
        let pending: Pending = match engine
            .store()
            .take_record(&records::pending_key(request_id))
            .await?
        {
            Some(bytes) => {
                engine.release_pending_flow();
                records::decode(&bytes).map_err(|_| SamlError::Expired)?
            }
            None => return Err(SamlError::Expired),
        };
        let sp = self
            .sp_by_name(&pending.sp)
            .filter(|sp| sp.name == sp_name)
            .ok_or(SamlError::Expired)?;
        let relay = pending.relay_state.as_deref();
        let irt = pending.request_id.as_deref();
        let acs_url = pending.acs_url.as_str();
        let failed = |code, message| async move {
            self.refusal(engine, sp, acs_url, irt, relay, code, message)
                .await
                .map(|form| Answer {
                    form,
                    success: false,
                })
        };
        match (refusal, ticket) {
            (Some(castellan_core::ConsentRefusal::Declined), _) => {
                return failed(
                    status::REQUEST_DENIED,
                    "the user declined to share their information",
                )
                .await;
            }
            (Some(castellan_core::ConsentRefusal::Required), None) => {
                return failed(
                    status::NO_PASSIVE,
                    "the user's consent is required, and IsPassive forbids asking",
                )
                .await;
            }
            _ => {}
        }
        let Some(ticket) = ticket else {
            return failed(status::NO_PASSIVE, "the user is not signed in").await;
        };
        let authn_context = engine
            .store()
            .take_record(&records::authn_context_key(request_id))
            .await?
            .and_then(|b| String::from_utf8(b).ok());
        let service = match &authn_context {
            Some(class) if crate::authn_context::needs_mfa(class) => {
                self.callbacks().build_asking_mfa(&pending.sp, request_id)
            }
            _ => self.callback_url(&pending.sp, request_id),
        };
        let assertion = match engine
            .validate_callback(ticket, &service, pending.force_authn)
            .await
        {
            Ok(a) => a,
            Err(e @ EngineError::Store(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, sp = %sp.name, "SAML callback with an invalid ticket");
                return failed(status::AUTHN_FAILED, "the sign-in could not be confirmed").await;
            }
        };
        let format = pending
            .name_id_format
            .as_deref()
            .unwrap_or(sp.name_id_format.as_str());
        let Some(name_id) = self.issue_name_id(sp, format, &assertion.principal) else {
            return failed(
                status::RESPONDER,
                "no NameID of the configured format for this user",
            )
            .await;
        };
        let session_index = session_tag(&assertion.session_id)
            .unwrap_or_default()
            .to_owned();
        let signing = self.signing();
        let class = crate::authn_context::stated(authn_context.as_deref(), assertion.methods);
        let ctx = ResponseContext {
            idp_entity_id: &signing.entity_id,
            sp,
            acs_url: &pending.acs_url,
            in_response_to: pending.request_id.as_deref(),
            now_ms: engine.clock().now(),
            skew_ms: signing.skew_ms,
            ttl_ms: signing.ttl_ms,
        };
        let subject = Subject {
            name_id: &name_id.value,
            name_id_format: &name_id.format,
            attributes: &assertion.attributes,
            authn_instant: assertion.authenticated_at,
            session_index: &session_index,
            authn_context_class: &class,
        };
        let xml = signing_step(|| response::success(&ctx, &subject, &signing.credentials))
            .inspect_err(|e| tracing::error!(error = %e, "building a SAML response failed"))?;
        // Single logout names the subject to this SP as it was named here,
        // for as long as the session can last.
        let issued = Issued {
            sp: sp.name.clone(),
            name_id,
            session_index,
        };
        engine
            .store()
            .put_record(
                &records::issued_key(ticket),
                &records::encode(&issued)?,
                engine.policy().session_ttl,
            )
            .await?;
        Ok(Answer {
            form: PostForm::message(&pending.acs_url, "SAMLResponse", &xml, relay),
            success: true,
        })
    }

    /// A signed error Response to an ACS from the SP's metadata.
    #[allow(clippy::too_many_arguments)]
    async fn refusal(
        &self,
        engine: &Engine,
        sp: &ServiceProvider,
        acs_url: &str,
        in_response_to: Option<&str>,
        relay_state: Option<&str>,
        code: &'static str,
        message: &str,
    ) -> Result<PostForm, SamlError> {
        tracing::warn!(sp = %sp.name, status = code, %message, "SAML error response");
        let signing = self.signing();
        let ctx = ResponseContext {
            idp_entity_id: &signing.entity_id,
            sp,
            acs_url,
            in_response_to,
            now_ms: engine.clock().now(),
            skew_ms: signing.skew_ms,
            ttl_ms: signing.ttl_ms,
        };
        let xml = signing_step(|| response::failure(&ctx, code, message, &signing.credentials))
            .inspect_err(
                |e| tracing::error!(error = %e, "building a SAML error response failed"),
            )?;
        Ok(PostForm::message(
            acs_url,
            "SAMLResponse",
            &xml,
            relay_state,
        ))
    }
}
