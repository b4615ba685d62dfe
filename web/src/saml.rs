//! The SAML 2.0 IdP's endpoints under `/idp`, built as a client of the CAS
//! core: the SSO endpoints check the AuthnRequest, keep it in the store and
//! send the browser to `/login` with the IdP's callback as the service; the
//! callback validates the service ticket through the engine and posts a
//! signed Response to the SP's assertion consumer service.

use crate::app::SharedState;
use crate::client_address::ClientAddress;
use crate::config::SamlSettings;
use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, PostRedirectPage};
use crate::respond::{error_page as page, redirect, unavailable};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{
    EngineError, FrontChannelVisit, Initiator, LogoutMode, LogoutNotification, RegisteredService,
    ValidationRequest,
};
use castellan_saml::binding::{self, BindingParameters, QuerySignature};
use castellan_saml::request::{self, Binding, Limits};
use castellan_saml::response::{self, ResponseContext, Subject};
use castellan_saml::{nameid, status, IdpCredentials, SamlError, ServiceProvider};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct IdentityProvider {
    pub settings: SamlSettings,
    credentials: Arc<IdpCredentials>,
    persistent_secret: Vec<u8>,
    /// `{public_url}/idp`: the endpoints' base.
    base: String,
    /// `{public_url}/idp/callback?sp=`: every callback service starts so.
    callback_prefix: String,
    metadata: String,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A checked AuthnRequest waiting for the login (or an IdP-initiated one).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    sp: String,
    request_id: Option<String>,
    acs_url: String,
    relay_state: Option<String>,
    force_authn: bool,
    is_passive: bool,
    /// From the request's NameIDPolicy; the SP's configured one when None.
    name_id_format: Option<String>,
}

fn pending_key(id: &str) -> String {
    format!("saml:req:{id}")
}

impl IdentityProvider {
    pub fn new(
        settings: SamlSettings,
        public_url: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let base = format!("{}/idp", public_url.trim_end_matches('/'));
        let host = url::Url::parse(public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "castellan".into());
        let configured = settings
            .signing_key
            .as_ref()
            .map(|(k, c)| (k.as_path(), c.as_path()));
        // Nodes starting together on one data_dir: only the first generates.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(".signing-keys.lock"))
            .ok();
        if let Some(lock) = &lock {
            lock.lock()?;
        }
        let credentials = IdpCredentials::load_or_generate(data_dir, configured, &host)?;
        let persistent_secret = castellan_saml::keys::persistent_secret(
            data_dir,
            settings.persistent_id_secret.as_deref(),
        )?;
        drop(lock);
        let mut metadata = response::metadata(&settings.entity_id, &base, &credentials);
        if settings.sign_metadata {
            metadata = sign_metadata(&metadata, &credentials)?;
        }
        Ok(Self {
            callback_prefix: format!("{base}/callback?sp="),
            base,
            metadata,
            credentials: Arc::new(credentials),
            persistent_secret,
            http: castellan_cas::proxy_callback::http_client(false, Duration::from_secs(5))?,
            settings,
        })
    }

    /// The IdP's key and certificate; Castellan signs with them as a SAML
    /// SP of its upstreams too.
    pub fn credentials(&self) -> Arc<IdpCredentials> {
        self.credentials.clone()
    }

    fn callback(&self, sp: &str, request_id: &str) -> String {
        format!("{}{}&req={request_id}", self.callback_prefix, enc(sp))
    }

    /// The implicit CAS registrations of the callbacks, one per SP: the
    /// core releases that SP's attributes and records the session's SPs.
    pub fn callback_services(&self) -> anyhow::Result<Vec<RegisteredService>> {
        self.settings
            .sps
            .iter()
            .map(|sp| {
                let pattern = format!(
                    "{}[A-Za-z0-9-]+",
                    regex::escape(&format!("{}{}&req=", self.callback_prefix, enc(&sp.name)))
                );
                let logout = if sp.slo(castellan_saml::BINDING_SOAP).is_some() {
                    LogoutMode::BackChannel
                } else {
                    LogoutMode::None
                };
                Ok(RegisteredService::new(
                    sp.name.clone(),
                    &pattern,
                    sp.release.clone(),
                    None,
                    logout,
                )?
                .internal())
            })
            .collect()
    }

    fn sp_by_name(&self, name: &str) -> Option<&ServiceProvider> {
        self.settings.sps.iter().find(|sp| sp.name == name)
    }

    fn sp_of_callback(&self, service: &str) -> Option<&ServiceProvider> {
        let rest = service.strip_prefix(&self.callback_prefix)?;
        let (name, _) = rest.split_once("&req=")?;
        let name = url::form_urlencoded::parse(format!("n={name}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        self.sp_by_name(&name)
    }

    /// The SP name of a callback service URL.
    pub fn party(&self, service: &str) -> Option<String> {
        self.sp_of_callback(service).map(|sp| sp.name.clone())
    }

    /// How the login page names an SP.
    pub fn display_name(&self, service: &str) -> Option<String> {
        let sp = self.sp_of_callback(service)?;
        let host = sp
            .acs
            .first()
            .and_then(|a| url::Url::parse(&a.url).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        Some(match host {
            Some(h) => format!("{} ({h})", sp.name),
            None => sp.name.clone(),
        })
    }

    fn limits(&self, now_ms: u64) -> Limits {
        Limits {
            now_ms,
            skew_ms: self.settings.clock_skew.as_millis() as u64,
            max_age_ms: self.settings.request_max_age.as_millis() as u64,
            destinations: vec![
                format!("{}/profile/SAML2/Redirect/SSO", self.base),
                format!("{}/profile/SAML2/POST/SSO", self.base),
                format!("{}/profile/SAML2/Redirect/SLO", self.base),
                format!("{}/profile/SAML2/POST/SLO", self.base),
            ],
        }
    }

    /// The NameID an SP sees for a user.
    fn name_id(
        &self,
        sp: &ServiceProvider,
        format: &str,
        principal: &castellan_core::Principal,
    ) -> Option<String> {
        match format {
            nameid::EMAIL => principal
                .attributes
                .get("mail")
                .and_then(|m| m.first())
                .cloned(),
            nameid::PERSISTENT => {
                // Opaque, stable per SP and user, unlinkable across SPs.
                let key = PKey::hmac(&self.persistent_secret).ok()?;
                let mut signer = Signer::new(MessageDigest::sha256(), &key).ok()?;
                for part in [sp.entity_id.as_str(), principal.id.as_str()] {
                    signer.update(&(part.len() as u64).to_be_bytes()).ok()?;
                    signer.update(part.as_bytes()).ok()?;
                }
                signer.sign_to_vec().ok().map(|d| STANDARD.encode(d))
            }
            nameid::TRANSIENT => Some(castellan_saml::xml::new_id()),
            _ => Some(principal.id.clone()),
        }
    }
}

fn sign_metadata(xml: &str, credentials: &IdpCredentials) -> Result<String, SamlError> {
    // An ID on the EntityDescriptor and a signature template after its start tag.
    let id = castellan_saml::xml::new_id();
    let body = castellan_saml::keys::strip_declaration(xml);
    let Some(end) = body.find("><md:IDPSSODescriptor") else {
        return Ok(xml.to_owned());
    };
    let template = format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/></ds:Reference>\
</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        credentials.cert_base64
    );
    let with_id = format!(
        "{} ID=\"{id}\">{template}{}",
        &body[..end],
        &body[end + 1..]
    );
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
        credentials.sign_xml(&with_id)?
    ))
}

// ------------------------------------------------------------------ helpers

fn invalid(state: &SharedState, message: &str) -> Response {
    page(state, StatusCode::BAD_REQUEST, "Invalid request", message)
}

/// An SP's message as the handlers act on it: the request's XML, how its
/// signature came, and the RelayState, all from one parse of the query
/// string or form body.
struct Message {
    xml: String,
    binding: Binding,
    relay_state: Option<String>,
}

/// An SP's SAMLRequest over HTTP-Redirect: inflated, and its query
/// signature checked against the SP its Issuer names, over the very
/// parameters the request and RelayState are read from.
fn redirect_message(state: &SharedState, p: &BindingParameters) -> Result<Message, SamlError> {
    let message = p
        .get("SAMLRequest")
        .ok_or_else(|| SamlError::untrusted("The request carries no SAMLRequest."))?;
    let relay_state = p.relay_state()?.map(str::to_owned);
    let xml = binding::decode_redirect(message)?;
    let signature = match request::issuer_of(&xml)
        .ok()
        .and_then(|i| state.saml.settings.sps.iter().find(|sp| sp.entity_id == i))
    {
        Some(sp) => p.verify_signature("SAMLRequest", &sp.signing_certs),
        None => QuerySignature::Absent,
    };
    Ok(Message {
        xml,
        binding: Binding::Redirect(signature),
        relay_state,
    })
}

/// An SP's SAMLRequest over HTTP-POST (its signature, if any, is inside).
fn post_message(p: &BindingParameters) -> Result<Message, SamlError> {
    let message = p
        .get("SAMLRequest")
        .ok_or_else(|| SamlError::untrusted("The request carries no SAMLRequest."))?;
    let relay_state = p.relay_state()?.map(str::to_owned);
    Ok(Message {
        xml: binding::decode_post(message)?,
        binding: Binding::Post,
        relay_state,
    })
}

/// Posts a SAML message to the SP (HTTP-POST binding): an auto-submitting
/// form that also works without JavaScript.
fn post_to(
    state: &SharedState,
    action: &str,
    message: &str,
    xml: &str,
    relay_state: Option<&str>,
) -> Response {
    let mut fields = vec![(message.to_owned(), STANDARD.encode(xml.as_bytes()))];
    if let Some(r) = relay_state {
        fields.push(("RelayState".to_owned(), r.to_owned()));
    }
    let mut response = render(
        StatusCode::OK,
        &PostRedirectPage {
            prefix: state.prefix().to_owned(),
            action: action.to_owned(),
            fields,
        },
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Signing is CPU work (RSA): off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SamlError> + Send + 'static,
) -> Result<T, SamlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SamlError::Crypto(e.to_string()))?
}

/// An error Response posted to an ACS from the SP's metadata.
async fn error_response(
    state: &SharedState,
    sp: &ServiceProvider,
    acs_url: &str,
    in_response_to: Option<&str>,
    relay_state: Option<&str>,
    code: &'static str,
    message: &str,
) -> Response {
    tracing::warn!(sp = %sp.name, status = code, %message, "SAML error response");
    let idp = state.saml.clone_for_blocking();
    let (sp_c, acs, irt, msg) = (
        sp.clone(),
        acs_url.to_owned(),
        in_response_to.map(str::to_owned),
        message.to_owned(),
    );
    let now = state.now();
    let xml = blocking(move || {
        let ctx = ResponseContext {
            idp_entity_id: &idp.entity_id,
            sp: &sp_c,
            acs_url: &acs,
            in_response_to: irt.as_deref(),
            now_ms: now,
            skew_ms: idp.skew_ms,
            ttl_ms: idp.ttl_ms,
        };
        response::failure(&ctx, code, &msg, &idp.credentials)
    })
    .await;
    match xml {
        Ok(xml) => post_to(state, acs_url, "SAMLResponse", &xml, relay_state),
        Err(e) => {
            tracing::error!(error = %e, "building a SAML error response failed");
            page(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "The response could not be built.",
            )
        }
    }
}

/// What a blocking signing task needs of the IdP.
struct IdpHandle {
    entity_id: String,
    credentials: Arc<IdpCredentials>,
    skew_ms: u64,
    ttl_ms: u64,
}

impl IdentityProvider {
    fn clone_for_blocking(&self) -> IdpHandle {
        IdpHandle {
            entity_id: self.settings.entity_id.clone(),
            credentials: self.credentials.clone(),
            skew_ms: self.settings.clock_skew.as_millis() as u64,
            ttl_ms: self.settings.assertion_ttl.as_millis() as u64,
        }
    }
}

// ------------------------------------------------------------------ metadata

pub async fn metadata(State(state): State<SharedState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/samlmetadata+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        state.saml.metadata.clone(),
    )
        .into_response()
}

// ------------------------------------------------------------------ SSO

pub async fn sso_redirect(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let message = BindingParameters::parse(&query).and_then(|p| redirect_message(&state, &p));
    match message {
        Ok(m) => sso(&state, client, m).await,
        Err(e) => invalid(&state, &e.to_string()),
    }
}

pub async fn sso_post(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    body: Bytes,
) -> Response {
    match BindingParameters::parse_form(&body).and_then(|p| post_message(&p)) {
        Ok(m) => sso(&state, client, m).await,
        Err(e) => invalid(&state, &e.to_string()),
    }
}

async fn sso(state: &SharedState, client: Option<IpAddr>, message: Message) -> Response {
    let Message {
        xml,
        binding,
        relay_state,
    } = message;
    let xml = xml.as_str();
    let idp = &state.saml;
    let limits = idp.limits(state.now());
    let checked = match request::check_authn_request(xml, binding, &idp.settings.sps, &limits) {
        Ok(c) => c,
        Err(SamlError::Status { status, message }) => {
            return match request::error_target(xml, &idp.settings.sps) {
                Some((sp, acs, id)) => {
                    error_response(
                        state,
                        sp,
                        &acs,
                        Some(&id),
                        relay_state.as_deref(),
                        status,
                        &message,
                    )
                    .await
                }
                None => page(state, StatusCode::BAD_REQUEST, "Invalid request", &message),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SAML AuthnRequest refused");
            return page(
                state,
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &e.to_string(),
            );
        }
    };
    // One use per request ID and SP within the accepted window.
    let window = idp.settings.request_max_age + idp.settings.clock_skew * 2;
    let replay_key = format!("saml:seen:{}:{}", checked.sp.entity_id, checked.id);
    match state
        .engine
        .store()
        .add_record(&replay_key, b"", window)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return error_response(
                state,
                checked.sp,
                &checked.acs_url,
                Some(&checked.id),
                relay_state.as_deref(),
                status::REQUESTER,
                "this AuthnRequest was already used",
            )
            .await
        }
        Err(e) => return unavailable(state, &e.into()),
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
    to_login(state, client, pending).await
}

async fn to_login(state: &SharedState, client: Option<IpAddr>, pending: Pending) -> Response {
    if let Err(e) = state.engine.admit_pending_flow(client) {
        return unavailable(state, &e);
    }
    let id = new_ticket_id("SR");
    let Ok(bytes) = serde_json::to_vec(&pending) else {
        return page(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "The request could not be kept.",
        );
    };
    if let Err(e) = state
        .engine
        .store()
        .put_record(
            &pending_key(&id),
            &bytes,
            state.engine.policy().login_flow_ttl,
        )
        .await
    {
        return unavailable(state, &e.into());
    }
    let service = state.saml.callback(&pending.sp, &id);
    redirect(&crate::respond::login_location(
        state,
        &service,
        pending.force_authn,
        pending.is_passive,
    ))
}

pub async fn unsolicited(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let p = match BindingParameters::parse(&query) {
        Ok(p) => p,
        Err(e) => return invalid(&state, &e.to_string()),
    };
    let Some(provider) = p.get("providerId") else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "providerId is missing.",
        );
    };
    let Some(sp) = state
        .saml
        .settings
        .sps
        .iter()
        .find(|sp| sp.entity_id == provider)
    else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The service provider is not registered.",
        );
    };
    let acs = match p.get("shire").or_else(|| p.get("acsURL")) {
        Some(url) => sp.acs_for(Some(url), None),
        None => sp.default_acs(),
    };
    let Some(acs) = acs else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The consumer service is not in the service provider's metadata.",
        );
    };
    let relay_state = p.get("target").or_else(|| p.get("RelayState"));
    if relay_state.is_some_and(|r| binding::check_relay_state(r).is_err()) {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The target is too long.",
        );
    }
    let relay_state = relay_state.map(str::to_owned);
    let pending = Pending {
        sp: sp.name.clone(),
        request_id: None,
        acs_url: acs.url.clone(),
        relay_state,
        force_authn: false,
        is_passive: false,
        name_id_format: None,
    };
    to_login(&state, client, pending).await
}

pub async fn callback(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let parsed = BindingParameters::parse(&query);
    let expired = || {
        page(
            &state,
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in request expired or was already used. Go back to the application and sign in again.",
        )
    };
    let Ok(p) = parsed else {
        return expired();
    };
    let (Some(sp_name), Some(request_id)) = (p.get("sp"), p.get("req")) else {
        return expired();
    };
    if request_id.len() > 64 {
        return expired();
    }
    let pending: Pending = match state
        .engine
        .store()
        .take_record(&pending_key(request_id))
        .await
    {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(_) => return expired(),
        },
        Ok(None) => return expired(),
        Err(e) => return unavailable(&state, &e.into()),
    };
    let Some(sp) = state
        .saml
        .sp_by_name(&pending.sp)
        .filter(|sp| sp.name == sp_name)
    else {
        return expired();
    };
    let relay = pending.relay_state.as_deref();
    let irt = pending.request_id.as_deref();
    let Some(ticket) = p.get("ticket") else {
        return error_response(
            &state,
            sp,
            &pending.acs_url,
            irt,
            relay,
            status::NO_PASSIVE,
            "the user is not signed in",
        )
        .await;
    };
    let service = state.saml.callback(&pending.sp, request_id);
    let assertion = match state
        .engine
        .validate(ValidationRequest {
            ticket,
            service: &service,
            renew: pending.force_authn,
            pgt_url: None,
            allow_proxy_tickets: false,
            in_process: true,
        })
        .await
    {
        Ok(a) => a,
        Err(e @ EngineError::Store(_)) => return unavailable(&state, &e),
        Err(e) => {
            tracing::warn!(error = %e, sp = %sp.name, "SAML callback with an invalid ticket");
            return error_response(
                &state,
                sp,
                &pending.acs_url,
                irt,
                relay,
                status::AUTHN_FAILED,
                "the sign-in could not be confirmed",
            )
            .await;
        }
    };
    let format = pending
        .name_id_format
        .as_deref()
        .unwrap_or(sp.name_id_format.as_str());
    let Some(name_id) = state.saml.name_id(sp, format, &assertion.principal) else {
        return error_response(
            &state,
            sp,
            &pending.acs_url,
            irt,
            relay,
            status::RESPONDER,
            "no NameID of the configured format for this user",
        )
        .await;
    };
    let session_index = session_tag(&assertion.session_id)
        .unwrap_or_default()
        .to_owned();
    let idp = state.saml.clone_for_blocking();
    let now = state.now();
    let (sp_c, acs, irt_c, fmt) = (
        sp.clone(),
        pending.acs_url.clone(),
        pending.request_id.clone(),
        format.to_owned(),
    );
    let attributes = assertion.attributes.clone();
    let authn_instant = assertion.authenticated_at;
    let xml = blocking(move || {
        let ctx = ResponseContext {
            idp_entity_id: &idp.entity_id,
            sp: &sp_c,
            acs_url: &acs,
            in_response_to: irt_c.as_deref(),
            now_ms: now,
            skew_ms: idp.skew_ms,
            ttl_ms: idp.ttl_ms,
        };
        let subject = Subject {
            name_id: &name_id,
            name_id_format: &fmt,
            attributes: &attributes,
            authn_instant,
            session_index: &session_index,
        };
        response::success(&ctx, &subject, &idp.credentials)
    })
    .await;
    match xml {
        Ok(xml) => {
            Metrics::inc(&state.metrics.saml_responses_issued);
            post_to(&state, &pending.acs_url, "SAMLResponse", &xml, relay)
        }
        Err(e) => {
            tracing::error!(error = %e, "building a SAML response failed");
            page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "The response could not be built.",
            )
        }
    }
}

// ------------------------------------------------------------------ SLO

pub async fn slo_redirect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let p = match BindingParameters::parse(&query) {
        Ok(p) => p,
        Err(e) => return invalid(&state, &e.to_string()),
    };
    if p.contains("SAMLResponse") {
        // An SP answering a logout request of a chain: on to the next.
        return chain_response(&state, p.get("RelayState")).await;
    }
    match redirect_message(&state, &p) {
        Ok(m) => slo(&state, &headers, m).await,
        Err(e) => invalid(&state, &e.to_string()),
    }
}

pub async fn slo_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match BindingParameters::parse_form(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&state, &e.to_string()),
    };
    if p.contains("SAMLResponse") {
        return chain_response(&state, p.get("RelayState")).await;
    }
    match post_message(&p) {
        Ok(m) => slo(&state, &headers, m).await,
        Err(e) => invalid(&state, &e.to_string()),
    }
}

async fn slo(state: &SharedState, headers: &HeaderMap, message: Message) -> Response {
    let Message {
        xml,
        binding,
        relay_state,
    } = message;
    let xml = xml.as_str();
    let idp = &state.saml;
    let limits = idp.limits(state.now());
    let checked = match request::check_logout_request(xml, binding, &idp.settings.sps, &limits) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "SAML LogoutRequest refused");
            return page(
                state,
                StatusCode::BAD_REQUEST,
                "Invalid logout request",
                &e.to_string(),
            );
        }
    };
    let sp = checked.sp;
    let mut code = status::SUCCESS;
    let session_id = cookies::session_id(headers);
    // The request must name this browser's session (SessionIndex) and user
    // (NameID): a signed request about another session ends nothing. A
    // transient NameID cannot be derived again, so for it the SessionIndex
    // must be there and name this session.
    if let Some(id) = &session_id {
        match state.engine.session(id).await {
            Ok(Some(session)) => {
                let tag = session_tag(&session.id).unwrap_or_default();
                let format = sp.name_id_format.as_str();
                let name_checked = format != nameid::TRANSIENT
                    && checked.name_id_format.as_deref() != Some(nameid::TRANSIENT);
                let name_ok = !name_checked
                    || idp
                        .name_id(sp, format, &session.principal)
                        .is_some_and(|expected| expected == checked.name_id);
                let index_ok = if checked.session_indexes.is_empty() {
                    name_checked
                } else {
                    checked.session_indexes.iter().any(|i| i == tag)
                };
                if !index_ok || !name_ok {
                    tracing::warn!(sp = %sp.name, "LogoutRequest names another session or user: nothing ended");
                    code = status::REQUESTER;
                }
            }
            Ok(None) => {}
            Err(e) => return unavailable(state, &e),
        }
    }
    let mut front = Vec::new();
    if let Some(id) = session_id.filter(|_| code == status::SUCCESS) {
        // The requester learns it from the LogoutResponse; SPs with only
        // browser SLO endpoints are visited in a chain first.
        let initiator = Initiator {
            participant: PARTICIPANT,
            party: sp.name.clone(),
        };
        match state.engine.logout(&id, Some(&initiator)).await {
            Ok(out) => {
                Metrics::inc(&state.metrics.logouts);
                front.extend(
                    out.visits
                        .iter()
                        .filter(|v| v.participant == PARTICIPANT)
                        .filter_map(|v| serde_json::from_str::<ChainStep>(&v.data).ok()),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "logout failed on the ticket store");
                code = status::RESPONDER;
            }
        }
    }
    let requester = Requester {
        sp: sp.name.clone(),
        request_id: checked.id.clone(),
        relay_state,
        code: code.to_owned(),
    };
    let clear = cookies::clear_session(state.prefix(), state.settings.secure_cookies());
    let mut response = if front.is_empty() {
        answer_requester(state, &requester).await
    } else {
        let chain = Chain {
            requester,
            next: front,
            awaiting: None,
        };
        continue_chain(state, &new_ticket_id("SL"), chain).await
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

/// The SP that sent a LogoutRequest, to be answered once the chain is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Requester {
    sp: String,
    request_id: String,
    relay_state: Option<String>,
    code: String,
}

/// One SP to visit in the front-channel logout chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChainStep {
    sp: String,
    session_index: String,
    principal_id: String,
}

/// A front-channel logout in progress (kept in the store between the
/// browser's visits to the SPs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Chain {
    requester: Requester,
    next: Vec<ChainStep>,
    /// The ID of the LogoutRequest whose response is awaited.
    awaiting: Option<String>,
}

fn chain_key(id: &str) -> String {
    format!("saml:slo:{id}")
}

const CHAIN_TTL: Duration = Duration::from_secs(600);

/// Sends the browser to the next SP of the chain with a LogoutRequest
/// (RelayState = the chain), or, when none is left, answers the requester.
async fn continue_chain(state: &SharedState, chain_id: &str, mut chain: Chain) -> Response {
    let idp = &state.saml;
    while let Some(step) = chain.next.first().cloned() {
        chain.next.remove(0);
        let Some(sp) = idp.sp_by_name(&step.sp) else {
            continue;
        };
        let format = sp.name_id_format.clone();
        let principal = castellan_core::Principal::new(step.principal_id.clone());
        let name_id = match format.as_str() {
            nameid::PERSISTENT | nameid::UNSPECIFIED => idp.name_id(sp, &format, &principal),
            _ => None,
        };
        let Some(name_id) = name_id else {
            tracing::info!(sp = %sp.name, "front-channel logout skipped: NameID format not derivable");
            continue;
        };
        let (binding, ep) = match (
            sp.slo(castellan_saml::BINDING_REDIRECT),
            sp.slo(castellan_saml::BINDING_POST),
        ) {
            (Some(ep), _) => (castellan_saml::BINDING_REDIRECT, ep.clone()),
            (None, Some(ep)) => (castellan_saml::BINDING_POST, ep.clone()),
            (None, None) => continue,
        };
        let handle = idp.clone_for_blocking();
        let (sp_entity, location, now, relay) = (
            sp.entity_id.clone(),
            ep.location.clone(),
            state.now(),
            chain_id.to_owned(),
        );
        let redirect_binding = binding == castellan_saml::BINDING_REDIRECT;
        let loc = location.clone();
        let built = blocking(move || {
            let params = response::LogoutRequestParams {
                idp_entity_id: &handle.entity_id,
                sp_entity_id: &sp_entity,
                destination: &loc,
                name_id: &name_id,
                name_id_format: &format,
                session_index: &step.session_index,
                now_ms: now,
            };
            let (id, xml) =
                response::logout_request(&params, !redirect_binding, &handle.credentials)?;
            if redirect_binding {
                let query = binding::encode_redirect(
                    "SAMLRequest",
                    &xml,
                    Some(&relay),
                    &handle.credentials,
                )?;
                Ok((id, query))
            } else {
                Ok((id, xml))
            }
        })
        .await;
        let (id, payload) = match built {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, sp = %sp.name, "building a LogoutRequest failed");
                continue;
            }
        };
        chain.awaiting = Some(id);
        let stored = serde_json::to_vec(&chain)
            .map_err(|e| EngineError::Store(castellan_core::StoreError::Corrupt(e.to_string())));
        match stored {
            Ok(bytes) => {
                if let Err(e) = state
                    .engine
                    .store()
                    .put_record(&chain_key(chain_id), &bytes, CHAIN_TTL)
                    .await
                {
                    return unavailable(state, &e.into());
                }
            }
            Err(e) => return unavailable(state, &e),
        }
        tracing::info!(sp = %sp.name, "front-channel logout: visiting the service provider");
        return if redirect_binding {
            let sep = if location.contains('?') { '&' } else { '?' };
            redirect(&format!("{location}{sep}{payload}"))
        } else {
            post_to(state, &location, "SAMLRequest", &payload, Some(chain_id))
        };
    }
    answer_requester(state, &chain.requester).await
}

/// An SP's LogoutResponse in a chain we started: on to the next SP.
async fn chain_response(state: &SharedState, relay_state: Option<&str>) -> Response {
    let Some(chain_id) = relay_state.filter(|r| r.starts_with("SL-") && r.len() <= 64) else {
        return crate::logout::signed_out(state);
    };
    match state.engine.store().take_record(&chain_key(chain_id)).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Chain>(&bytes) {
            Ok(chain) => continue_chain(state, chain_id, chain).await,
            Err(_) => crate::logout::signed_out(state),
        },
        Ok(None) => crate::logout::signed_out(state),
        Err(e) => unavailable(state, &e.into()),
    }
}

/// The signed LogoutResponse to the SP that asked for the logout, at its
/// SLO endpoint: Redirect binding when it has one, else POST.
async fn answer_requester(state: &SharedState, requester: &Requester) -> Response {
    let Some(sp) = state.saml.sp_by_name(&requester.sp) else {
        return crate::logout::signed_out(state);
    };
    let code: &'static str = if requester.code == status::SUCCESS {
        status::SUCCESS
    } else if requester.code == status::REQUESTER {
        status::REQUESTER
    } else {
        status::RESPONDER
    };
    let (redirect_binding, ep) = match (
        sp.slo(castellan_saml::BINDING_REDIRECT),
        sp.slo(castellan_saml::BINDING_POST),
    ) {
        (Some(ep), _) => (true, ep),
        (None, Some(ep)) => (false, ep),
        (None, None) => return crate::logout::signed_out(state),
    };
    let destination = ep
        .response_location
        .clone()
        .unwrap_or_else(|| ep.location.clone());
    let handle = state.saml.clone_for_blocking();
    let (now, irt, dest) = (
        state.now(),
        requester.request_id.clone(),
        destination.clone(),
    );
    let relay = requester.relay_state.clone();
    // The Redirect binding signs the query, the POST binding the document.
    let built = blocking(move || {
        let xml = response::logout_response(
            &handle.entity_id,
            &dest,
            &irt,
            code,
            now,
            !redirect_binding,
            &handle.credentials,
        )?;
        if redirect_binding {
            binding::encode_redirect("SAMLResponse", &xml, relay.as_deref(), &handle.credentials)
        } else {
            Ok(xml)
        }
    })
    .await;
    match built {
        Ok(query) if redirect_binding => {
            let sep = if destination.contains('?') { '&' } else { '?' };
            redirect(&format!("{destination}{sep}{query}"))
        }
        Ok(xml) => post_to(
            state,
            &destination,
            "SAMLResponse",
            &xml,
            requester.relay_state.as_deref(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "building a LogoutResponse failed");
            crate::logout::signed_out(state)
        }
    }
}

/// The name SAML goes by in single logout.
pub const PARTICIPANT: &str = "saml";

/// The SPs of an ended session that have only browser SLO endpoints: to be
/// visited in a front-channel chain, once per SP and session index.
pub fn front_channel_visits(
    state: &SharedState,
    notifications: &[LogoutNotification],
) -> Vec<FrontChannelVisit> {
    let mut front: Vec<ChainStep> = Vec::new();
    for n in notifications {
        let Some(s) = state.saml.sp_of_callback(&n.service) else {
            continue;
        };
        let front_only = s.slo(castellan_saml::BINDING_SOAP).is_none()
            && (s.slo(castellan_saml::BINDING_REDIRECT).is_some()
                || s.slo(castellan_saml::BINDING_POST).is_some());
        if !front_only {
            continue;
        }
        let index = session_tag(&n.ticket_id).unwrap_or_default().to_owned();
        if !front
            .iter()
            .any(|f| f.sp == s.name && f.session_index == index)
        {
            front.push(ChainStep {
                sp: s.name.clone(),
                session_index: index,
                principal_id: n.principal_id.clone(),
            });
        }
    }
    front
        .into_iter()
        .filter_map(|step| {
            Some(FrontChannelVisit {
                participant: PARTICIPANT.into(),
                party: step.sp.clone(),
                data: serde_json::to_string(&step).ok()?,
            })
        })
        .collect()
}

/// Back-channel (SOAP) LogoutRequests to the SPs of an ended session that
/// offer a SOAP SingleLogoutService.
pub fn notify_logout(state: &SharedState, notifications: Vec<LogoutNotification>) {
    let mut told = std::collections::HashSet::new();
    for n in notifications {
        if n.mode != LogoutMode::BackChannel {
            continue;
        }
        let Some(sp) = state.saml.sp_of_callback(&n.service) else {
            continue;
        };
        let Some(ep) = sp.slo(castellan_saml::BINDING_SOAP) else {
            continue;
        };
        let session_index = session_tag(&n.ticket_id).unwrap_or_default().to_owned();
        if !told.insert((sp.name.clone(), session_index.clone())) {
            continue;
        }
        let format = sp.name_id_format.clone();
        let principal = castellan_core::Principal::new(n.principal_id.clone());
        let name_id = match format.as_str() {
            nameid::PERSISTENT | nameid::UNSPECIFIED => state.saml.name_id(sp, &format, &principal),
            // Not derivable again from the user id alone.
            _ => None,
        };
        let Some(name_id) = name_id else {
            tracing::info!(sp = %sp.name, "SAML back-channel logout skipped: NameID format not derivable");
            continue;
        };
        let handle = state.saml.clone_for_blocking();
        let http = state.saml.http.clone();
        let (location, name, now) = (ep.location.clone(), sp.name.clone(), state.now());
        let sp_entity = sp.entity_id.clone();
        tokio::spawn(async move {
            let loc = location.clone();
            let xml = blocking(move || {
                let params = response::LogoutRequestParams {
                    idp_entity_id: &handle.entity_id,
                    sp_entity_id: &sp_entity,
                    destination: &loc,
                    name_id: &name_id,
                    name_id_format: &format,
                    session_index: &session_index,
                    now_ms: now,
                };
                response::logout_request(&params, true, &handle.credentials).map(|(_, xml)| xml)
            })
            .await;
            let Ok(xml) = xml else {
                tracing::error!(sp = %name, "building a LogoutRequest failed");
                return;
            };
            let envelope = format!(
                "<soap11:Envelope xmlns:soap11=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap11:Body>{xml}</soap11:Body></soap11:Envelope>"
            );
            match http
                .post(&location)
                .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
                .header(
                    "SOAPAction",
                    "http://www.oasis-open.org/committees/security",
                )
                .body(envelope)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(sp = %name, "SAML back-channel logout delivered")
                }
                Ok(r) => {
                    tracing::warn!(sp = %name, status = %r.status(), "SAML back-channel logout refused")
                }
                Err(e) => tracing::warn!(sp = %name, error = %e, "SAML back-channel logout failed"),
            }
        });
    }
}
