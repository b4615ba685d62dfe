//! Registered service providers, read from their metadata.

use crate::{nameid, SamlError, BINDING_POST, BINDING_REDIRECT, BINDING_SOAP};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use samael::metadata::{EntityDescriptor, IndexedEndpoint};

/// Which parts of a Response carry a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMode {
    Assertion,
    Response,
    Both,
}

impl SignMode {
    pub fn assertion(self) -> bool {
        matches!(self, SignMode::Assertion | SignMode::Both)
    }
    pub fn response(self) -> bool {
        matches!(self, SignMode::Response | SignMode::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeNameFormat {
    /// `urn:oid:…` names for the usual eduPerson / inetOrgPerson attributes.
    Uri,
    Basic,
}

#[derive(Debug, Clone)]
pub struct Acs {
    pub url: String,
    pub index: usize,
    pub is_default: bool,
}

#[derive(Debug, Clone)]
pub struct SloEndpoint {
    pub binding: String,
    pub location: String,
    pub response_location: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceProvider {
    pub name: String,
    pub entity_id: String,
    /// HTTP-POST assertion consumer services, the only binding answered.
    pub acs: Vec<Acs>,
    pub slo: Vec<SloEndpoint>,
    pub signing_certs: Vec<Vec<u8>>,
    pub encryption_cert: Option<Vec<u8>>,
    pub require_signed_requests: bool,
    pub release: Vec<String>,
    pub name_id_format: String,
    pub sign: SignMode,
    pub encrypt: bool,
    pub attribute_format: AttributeNameFormat,
    /// A second factor asked of every login for this SP.
    pub mfa: Option<castellan_core::MfaPolicy>,
    /// Attribute release consent asked of users, remembered this long.
    pub consent: Option<std::time::Duration>,
}

fn cert_der(text: &str) -> Result<Vec<u8>, SamlError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|e| SamlError::Metadata(format!("a certificate is not base64: {e}")))
}

/// Settings of a registration that are not in the metadata.
pub struct Registration {
    pub name: String,
    pub release: Vec<String>,
    pub name_id_format: Option<String>,
    pub sign: SignMode,
    pub encrypt: bool,
    pub attribute_format: AttributeNameFormat,
    pub require_signed_requests: bool,
    pub mfa: Option<castellan_core::MfaPolicy>,
    pub consent: Option<std::time::Duration>,
}

impl ServiceProvider {
    pub fn from_metadata(xml: &str, r: Registration) -> Result<Self, SamlError> {
        crate::xml::refuse_dtd(xml).map_err(|_| SamlError::Metadata("has a DTD".into()))?;
        let entity: EntityDescriptor = xml
            .parse()
            .map_err(|e| SamlError::Metadata(format!("not an EntityDescriptor: {e}")))?;
        let entity_id = entity
            .entity_id
            .clone()
            .ok_or_else(|| SamlError::Metadata("no entityID".into()))?;
        let sp = entity
            .sp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| SamlError::Metadata("no SPSSODescriptor".into()))?;
        let acs: Vec<Acs> = sp
            .assertion_consumer_services
            .iter()
            .filter(|e: &&IndexedEndpoint| e.binding == BINDING_POST)
            .map(|e| Acs {
                url: e.location.clone(),
                index: e.index,
                is_default: e.is_default.unwrap_or(false),
            })
            .collect();
        if acs.is_empty() {
            return Err(SamlError::Metadata(
                "no AssertionConsumerService with the HTTP-POST binding".into(),
            ));
        }
        let slo = sp
            .single_logout_services
            .iter()
            .flatten()
            .filter(|e| {
                [BINDING_REDIRECT, BINDING_POST, BINDING_SOAP].contains(&e.binding.as_str())
            })
            .map(|e| SloEndpoint {
                binding: e.binding.clone(),
                location: e.location.clone(),
                response_location: e.response_location.clone(),
            })
            .collect();
        let mut signing_certs = Vec::new();
        let mut encryption_cert = None;
        for kd in sp.key_descriptors.iter().flatten() {
            let certs = kd
                .key_info
                .x509_data
                .iter()
                .flat_map(|d| d.certificates.iter())
                .map(|c| cert_der(c))
                .collect::<Result<Vec<_>, _>>()?;
            match kd.key_use.as_deref() {
                Some("signing") => signing_certs.extend(certs),
                Some("encryption") => {
                    encryption_cert = encryption_cert.or_else(|| certs.first().cloned())
                }
                _ => {
                    encryption_cert = encryption_cert.or_else(|| certs.first().cloned());
                    signing_certs.extend(certs);
                }
            }
        }
        if r.encrypt && encryption_cert.is_none() {
            return Err(SamlError::Metadata(
                "encrypt_assertions is set, but the metadata has no encryption certificate".into(),
            ));
        }
        let require_signed_requests =
            r.require_signed_requests || sp.authn_requests_signed.unwrap_or(false);
        if require_signed_requests && signing_certs.is_empty() {
            return Err(SamlError::Metadata(
                "signed requests are required, but the metadata has no signing certificate".into(),
            ));
        }
        let name_id_format = r
            .name_id_format
            .unwrap_or_else(|| nameid::UNSPECIFIED.into());
        if !nameid::ALL.contains(&name_id_format.as_str()) {
            return Err(SamlError::Metadata(format!(
                "name_id_format {name_id_format} is not one of {}",
                nameid::ALL.join(", ")
            )));
        }
        Ok(Self {
            name: r.name,
            entity_id,
            acs,
            slo,
            signing_certs,
            encryption_cert,
            require_signed_requests,
            release: r.release,
            name_id_format,
            sign: r.sign,
            encrypt: r.encrypt,
            attribute_format: r.attribute_format,
            mfa: r.mfa,
            consent: r.consent,
        })
    }

    /// The ACS a request names (by URL or index), only when in the
    /// metadata; the default one when it names none.
    pub fn acs_for(&self, url: Option<&str>, index: Option<usize>) -> Option<&Acs> {
        match (url, index) {
            (Some(u), _) => self.acs.iter().find(|a| a.url == u),
            (None, Some(i)) => self.acs.iter().find(|a| a.index == i),
            (None, None) => self.default_acs(),
        }
    }

    pub fn default_acs(&self) -> Option<&Acs> {
        self.acs
            .iter()
            .find(|a| a.is_default)
            .or_else(|| self.acs.iter().min_by_key(|a| a.index))
    }

    pub fn slo(&self, binding: &str) -> Option<&SloEndpoint> {
        self.slo.iter().find(|e| e.binding == binding)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example/shibboleth">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="false">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example/slo"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact" Location="https://sp.example/art" index="0"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="1"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs2" index="2" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

    pub fn registration() -> Registration {
        Registration {
            name: "sp".into(),
            release: vec!["mail".into()],
            name_id_format: None,
            sign: SignMode::Assertion,
            encrypt: false,
            attribute_format: AttributeNameFormat::Uri,
            require_signed_requests: false,
            mfa: None,
            consent: None,
        }
    }

    #[test]
    fn acs_only_from_metadata() {
        let sp = ServiceProvider::from_metadata(METADATA, registration()).unwrap();
        assert_eq!(sp.entity_id, "https://sp.example/shibboleth");
        assert_eq!(sp.acs.len(), 2, "only HTTP-POST endpoints");
        assert_eq!(
            sp.acs_for(None, None).unwrap().url,
            "https://sp.example/acs2"
        );
        assert_eq!(
            sp.acs_for(Some("https://sp.example/acs"), None)
                .unwrap()
                .index,
            1
        );
        assert!(sp.acs_for(Some("https://evil.example/acs"), None).is_none());
        assert!(
            sp.acs_for(None, Some(0)).is_none(),
            "the artifact endpoint is not answered"
        );
        assert!(sp.slo(crate::BINDING_REDIRECT).is_some());
    }

    #[test]
    fn encryption_needs_a_key_in_metadata() {
        let mut r = registration();
        r.encrypt = true;
        assert!(ServiceProvider::from_metadata(METADATA, r).is_err());
    }
}
