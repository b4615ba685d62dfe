//! The identity provider: its credentials and metadata, its registered
//! SPs, its callback service URLs (it is an in-process client of the CAS
//! core), and the NameIDs it issues.

use crate::keys::{self, IdpCredentials};
use crate::request::Limits;
use crate::settings::SamlSettings;
use crate::{nameid, response, SamlError, ServiceProvider, BINDING_SOAP};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_core::{CallbackUrls, InProcessClient, LogoutMode, Principal, RegisteredService};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A NameID as the IdP issued it (SAML Core §2.2.3), qualifiers included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameId {
    pub value: String,
    pub format: String,
    pub name_qualifier: Option<String>,
    pub sp_name_qualifier: Option<String>,
}

pub struct IdentityProvider {
    pub settings: SamlSettings,
    credentials: Arc<IdpCredentials>,
    persistent_secret: Vec<u8>,
    /// `{public_url}/idp`: the endpoints' base.
    base: String,
    /// `{public_url}/idp/callback?sp=`: every callback service starts so.
    callbacks: CallbackUrls,
    metadata: String,
}

impl IdentityProvider {
    /// Loads (or, on first start, generates in `data_dir`) the signing key,
    /// certificate and persistent-NameID secret.
    pub fn new(
        settings: SamlSettings,
        public_url: &str,
        data_dir: &Path,
    ) -> Result<Self, SamlError> {
        let host = url::Url::parse(public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "castellan".into());
        let configured = settings
            .signing_key
            .as_ref()
            .map(|(k, c)| (k.as_path(), c.as_path()));
        // Nodes starting together on one data_dir: only the first generates.
        let lock_path = data_dir.join(".signing-keys.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok();
        if let Some(lock) = &lock {
            lock.lock()
                .map_err(|e| SamlError::Credentials(format!("{}: {e}", lock_path.display())))?;
        }
        let credentials = IdpCredentials::load_or_generate(data_dir, configured, &host)?;
        let persistent_secret =
            keys::persistent_secret(data_dir, settings.persistent_id_secret.as_deref())?;
        drop(lock);
        Self::with_credentials(settings, public_url, credentials, persistent_secret)
    }

    /// An IdP of already loaded credentials.
    pub fn with_credentials(
        settings: SamlSettings,
        public_url: &str,
        credentials: IdpCredentials,
        persistent_secret: Vec<u8>,
    ) -> Result<Self, SamlError> {
        let base = format!("{}/idp", public_url.trim_end_matches('/'));
        let mut metadata = response::metadata(&settings.entity_id, &base, &credentials);
        if settings.sign_metadata {
            metadata = sign_metadata(&metadata, &credentials)?;
        }
        Ok(Self {
            callbacks: CallbackUrls::new(format!("{base}/callback?sp=")),
            base,
            metadata,
            credentials: Arc::new(credentials),
            persistent_secret,
            settings,
        })
    }

    /// The IdP's key and certificate; Castellan signs with them as a SAML
    /// SP of its upstreams too.
    pub fn credentials(&self) -> Arc<IdpCredentials> {
        self.credentials.clone()
    }

    /// The metadata document served at `/idp/metadata`.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The service URL a login for `sp`'s pending request returns to.
    pub fn callback_url(&self, sp: &str, request_id: &str) -> String {
        self.callbacks.build(sp, request_id)
    }

    /// The implicit CAS registrations of the callbacks, one per SP: the
    /// core releases that SP's attributes and records the session's SPs.
    pub fn callback_services(&self) -> Result<Vec<RegisteredService>, SamlError> {
        self.settings
            .sps
            .iter()
            .map(|sp| {
                let logout = if sp.slo(BINDING_SOAP).is_some() {
                    LogoutMode::BackChannel
                } else {
                    LogoutMode::None
                };
                self.callbacks
                    .registration(
                        &sp.name,
                        &sp.name,
                        sp.release.clone(),
                        logout,
                        sp.mfa,
                        sp.consent,
                    )
                    .map_err(|e| SamlError::Metadata(format!("{}: {e}", sp.name)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|r| r.into_iter().flatten().collect())
    }

    pub fn sp_by_name(&self, name: &str) -> Option<&ServiceProvider> {
        self.settings.sps.iter().find(|sp| sp.name == name)
    }

    pub fn sp_by_entity_id(&self, entity_id: &str) -> Option<&ServiceProvider> {
        self.settings
            .sps
            .iter()
            .find(|sp| sp.entity_id == entity_id)
    }

    /// The SP a callback service URL belongs to.
    pub fn sp_of_callback(&self, service: &str) -> Option<&ServiceProvider> {
        let (name, _) = self.callbacks.parse(service)?;
        self.sp_by_name(&name)
    }

    /// The SP name of a callback service URL.
    pub fn party(&self, service: &str) -> Option<String> {
        self.sp_of_callback(service).map(|sp| sp.name.clone())
    }

    pub(crate) fn limits(&self, now_ms: u64) -> Limits {
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

    /// The NameID of `format` an SP sees for a user; `None` when the user
    /// has none of that format (no mail for emailAddress).
    pub fn issue_name_id(
        &self,
        sp: &ServiceProvider,
        format: &str,
        principal: &Principal,
    ) -> Option<NameId> {
        let value = match format {
            nameid::EMAIL => principal
                .attributes
                .get("mail")
                .and_then(|m| m.first())
                .cloned()?,
            nameid::PERSISTENT => self.persistent_id(sp, &principal.id)?,
            nameid::TRANSIENT => crate::xml::new_id(),
            _ => principal.id.clone(),
        };
        let (name_qualifier, sp_name_qualifier) =
            qualifiers(format, &self.settings.entity_id, &sp.entity_id);
        Some(NameId {
            value,
            format: format.to_owned(),
            name_qualifier,
            sp_name_qualifier,
        })
    }

    /// Opaque, stable per SP and user, unlinkable across SPs.
    fn persistent_id(&self, sp: &ServiceProvider, user: &str) -> Option<String> {
        let key = PKey::hmac(&self.persistent_secret).ok()?;
        let mut signer = Signer::new(MessageDigest::sha256(), &key).ok()?;
        for part in [sp.entity_id.as_str(), user] {
            signer.update(&(part.len() as u64).to_be_bytes()).ok()?;
            signer.update(part.as_bytes()).ok()?;
        }
        signer.sign_to_vec().ok().map(|d| STANDARD.encode(d))
    }

    /// The NameID a session issued before NameIDs were kept would have
    /// carried, where it can be derived again (persistent, unspecified).
    pub(crate) fn derived_name_id(&self, sp: &ServiceProvider, user: &str) -> Option<NameId> {
        let format = sp.name_id_format.as_str();
        match format {
            nameid::PERSISTENT | nameid::UNSPECIFIED => {
                self.issue_name_id(sp, format, &Principal::new(user.to_owned()))
            }
            _ => None,
        }
    }

    pub(crate) fn signing(&self) -> Signing {
        Signing {
            entity_id: self.settings.entity_id.clone(),
            credentials: self.credentials.clone(),
            skew_ms: self.settings.clock_skew.as_millis() as u64,
            ttl_ms: self.settings.assertion_ttl.as_millis() as u64,
        }
    }
}

/// The qualifiers the IdP puts on a NameID of `format`: persistent and
/// transient identifiers are scoped to the pair of IdP and SP (Core §8.3.7-8).
pub(crate) fn qualifiers(
    format: &str,
    idp_entity_id: &str,
    sp_entity_id: &str,
) -> (Option<String>, Option<String>) {
    if format == nameid::PERSISTENT || format == nameid::TRANSIENT {
        (
            Some(idp_entity_id.to_owned()),
            Some(sp_entity_id.to_owned()),
        )
    } else {
        (None, None)
    }
}

/// What a signing step needs of the IdP.
pub(crate) struct Signing {
    pub entity_id: String,
    pub credentials: Arc<IdpCredentials>,
    pub skew_ms: u64,
    pub ttl_ms: u64,
}

/// Runs a step that signs (one RSA-2048 signature: ~0.4 ms of a core)
/// where the request is served, as the OIDC provider signs its ID tokens.
/// Tokio's blocking pool measured slower under load: it started a thread
/// per concurrent signature (57 threads at 32 connections) and cost two
/// thread hand-offs per Response. The step holds no lock and does no I/O.
pub(crate) fn signing_step<T>(f: impl FnOnce() -> Result<T, SamlError>) -> Result<T, SamlError> {
    f()
}

#[async_trait::async_trait]
impl InProcessClient for IdentityProvider {
    fn callbacks(&self) -> &CallbackUrls {
        &self.callbacks
    }

    fn protocol(&self) -> &'static str {
        "saml"
    }

    /// The SP's name and the host of its first consumer service.
    fn display_name(&self, party: &str) -> Option<String> {
        let sp = self.sp_by_name(party)?;
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
}

/// The metadata with an enveloped signature over its EntityDescriptor.
fn sign_metadata(xml: &str, credentials: &IdpCredentials) -> Result<String, SamlError> {
    // An ID on the EntityDescriptor and a signature template after its start tag.
    let id = crate::xml::new_id();
    let body = keys::strip_declaration(xml);
    let Some(end) = body.find("><md:IDPSSODescriptor") else {
        return Ok(xml.to_owned());
    };
    let template = response::signature_template(&id, &credentials.cert_base64);
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
