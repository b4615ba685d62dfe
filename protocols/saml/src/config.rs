//! The IdP's configuration: SAML service providers as the configuration
//! file registers them (`[[services]]` with `protocol = "saml"`, each read
//! from its metadata file), and the `[saml]` section.
//!
//! The web crate parses the file, resolves its relative paths and knows
//! where each key was written; this module gets the plain values and names
//! the key of every problem (`key()` of each error), so that the file's line
//! can be told.

use crate::sp::{AttributeNameFormat, Registration};
use crate::{ServiceProvider, SignMode};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// The keys a SAML SP may have; any other key written for it (an OIDC
/// client's `client_id`, a CAS service's `proxy_callback`) is an error.
pub const KEYS: &[&str] = &[
    "name",
    "protocol",
    "release",
    "metadata",
    "name_id_format",
    "sign",
    "encrypt_assertions",
    "attribute_name_format",
    "require_signed_requests",
    "mfa",
];

/// One `[[services]]` entry with `protocol = "saml"`.
#[derive(Debug, Clone, Default)]
pub struct ServiceProviderInput {
    pub name: String,
    /// The SP's metadata file, its path resolved.
    pub metadata: Option<PathBuf>,
    pub release: Vec<String>,
    pub name_id_format: Option<String>,
    /// "assertion" (default), "response" or "both".
    pub sign: Option<String>,
    pub encrypt_assertions: Option<bool>,
    /// "uri" (default) or "basic".
    pub attribute_name_format: Option<String>,
    pub require_signed_requests: Option<bool>,
    /// "required" or "optional" (a second factor).
    pub mfa: Option<String>,
    /// Attribute release consent, remembered this long (read by the
    /// caller, common to every protocol).
    pub consent: Option<std::time::Duration>,
    /// Every key written in the entry, for the check that each belongs to a
    /// SAML SP.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceProviderConfigError {
    #[error("service {name:?}: {key} is not a key of a SAML service provider")]
    ForeignKey { name: String, key: String },
    #[error(
        "service {name:?}: metadata (the SP's metadata file) is required for protocol \"saml\""
    )]
    MissingMetadata { name: String },
    #[error("services.metadata: {path}: {message}")]
    UnreadableMetadata { path: String, message: String },
    #[error("service {name:?}: {path}: {message}")]
    BadMetadata {
        name: String,
        path: String,
        message: String,
    },
    #[error("services.sign: {0:?} is not \"assertion\", \"response\" or \"both\"")]
    BadSign(String),
    #[error("services.attribute_name_format: {0:?} is not \"uri\" or \"basic\"")]
    BadAttributeNameFormat(String),
    #[error("services.metadata: entityID {0:?} is registered twice")]
    DuplicateEntityId(String),
    #[error("services.mfa: {0:?} is not \"required\" or \"optional\"")]
    BadMfa(String),
}

impl ServiceProviderConfigError {
    /// The key whose value is wrong; `None`: the SP as a whole.
    pub fn key(&self) -> Option<&str> {
        use ServiceProviderConfigError::*;
        match self {
            ForeignKey { key, .. } => Some(key),
            UnreadableMetadata { .. } | BadMetadata { .. } => Some("metadata"),
            BadSign(_) => Some("sign"),
            BadAttributeNameFormat(_) => Some("attribute_name_format"),
            BadMfa(_) => Some("mfa"),
            MissingMetadata { .. } | DuplicateEntityId(_) => None,
        }
    }
}

/// The registered service providers, checked one by one and against each
/// other.
#[derive(Debug, Default)]
pub struct ServiceProviders {
    sps: Vec<ServiceProvider>,
    entity_ids: HashSet<String>,
}

impl ServiceProviders {
    /// Reads and checks one SP and registers it; every problem found is
    /// returned.
    pub fn add(
        &mut self,
        input: ServiceProviderInput,
    ) -> Result<(), Vec<ServiceProviderConfigError>> {
        let sp = service_provider(input)?;
        let duplicate = !self.entity_ids.insert(sp.entity_id.clone());
        let entity_id = sp.entity_id.clone();
        self.sps.push(sp);
        if duplicate {
            return Err(vec![ServiceProviderConfigError::DuplicateEntityId(
                entity_id,
            )]);
        }
        Ok(())
    }

    pub fn into_vec(self) -> Vec<ServiceProvider> {
        self.sps
    }
}

/// Reads and checks one SP on its own.
pub fn service_provider(
    input: ServiceProviderInput,
) -> Result<ServiceProvider, Vec<ServiceProviderConfigError>> {
    use ServiceProviderConfigError::*;
    let name = input.name;
    let mut problems: Vec<_> = input
        .keys
        .iter()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| ForeignKey {
            name: name.clone(),
            key: k.clone(),
        })
        .collect();
    let Some(path) = input.metadata else {
        problems.push(MissingMetadata { name });
        return Err(problems);
    };
    let xml = match std::fs::read_to_string(&path) {
        Ok(x) => x,
        Err(e) => {
            problems.push(UnreadableMetadata {
                path: path.display().to_string(),
                message: e.to_string(),
            });
            return Err(problems);
        }
    };
    let sign = match input.sign.as_deref() {
        None | Some("assertion") => SignMode::Assertion,
        Some("response") => SignMode::Response,
        Some("both") => SignMode::Both,
        Some(other) => {
            problems.push(BadSign(other.to_owned()));
            return Err(problems);
        }
    };
    let attribute_format = match input.attribute_name_format.as_deref() {
        None | Some("uri") => AttributeNameFormat::Uri,
        Some("basic") => AttributeNameFormat::Basic,
        Some(other) => {
            problems.push(BadAttributeNameFormat(other.to_owned()));
            return Err(problems);
        }
    };
    let mfa = match input.mfa.as_deref() {
        None => None,
        Some(word) => match castellan_core::MfaPolicy::parse(word) {
            Some(policy) => Some(policy),
            None => {
                problems.push(BadMfa(word.to_owned()));
                return Err(problems);
            }
        },
    };
    let registration = Registration {
        name: name.clone(),
        release: input.release,
        name_id_format: input.name_id_format,
        sign,
        encrypt: input.encrypt_assertions.unwrap_or(false),
        attribute_format,
        require_signed_requests: input.require_signed_requests.unwrap_or(false),
        mfa,
        consent: input.consent,
    };
    match ServiceProvider::from_metadata(&xml, registration) {
        Ok(sp) if problems.is_empty() => Ok(sp),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(BadMetadata {
                name,
                path: path.display().to_string(),
                message: e.to_string(),
            });
            Err(problems)
        }
    }
}

/// The `[saml]` section, durations already read and paths resolved.
#[derive(Debug, Clone, Default)]
pub struct IdentityProviderInput {
    pub entity_id: Option<String>,
    pub signing_key: Option<PathBuf>,
    pub signing_certificate: Option<PathBuf>,
    pub sign_metadata: Option<bool>,
    pub clock_skew: Option<Duration>,
    pub request_max_age: Option<Duration>,
    pub assertion_ttl: Option<Duration>,
    pub persistent_id_secret: Option<String>,
}

/// The `[saml]` section, checked, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProviderConfig {
    /// Default `{public_url}/idp`.
    pub entity_id: String,
    /// The key and the certificate, or none (made in the data directory).
    pub signing_key: Option<(PathBuf, PathBuf)>,
    pub sign_metadata: bool,
    pub clock_skew: Duration,
    pub request_max_age: Duration,
    pub assertion_ttl: Duration,
    pub persistent_id_secret: Option<String>,
}

impl IdentityProviderConfig {
    /// The section's defaults: the entityID `{public_url}/idp`, a key made
    /// in the data directory.
    pub fn defaults(public_url: &str) -> Self {
        IdentityProviderConfig {
            entity_id: format!("{}/idp", public_url.trim_end_matches('/')),
            signing_key: None,
            sign_metadata: false,
            clock_skew: Duration::from_secs(60),
            request_max_age: Duration::from_secs(300),
            assertion_ttl: Duration::from_secs(300),
            persistent_id_secret: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityProviderConfigError {
    #[error("saml.entity_id: empty")]
    EmptyEntityId,
    /// One of the pair is given; it names the one given.
    #[error("saml: give both signing_key and signing_certificate, or neither")]
    HalfSigningPair { given: &'static str },
}

impl IdentityProviderConfigError {
    /// The key of the `[saml]` section whose value is wrong.
    pub fn key(&self) -> Option<&str> {
        match self {
            IdentityProviderConfigError::EmptyEntityId => Some("entity_id"),
            IdentityProviderConfigError::HalfSigningPair { given } => Some(given),
        }
    }
}

/// Checks the `[saml]` section; the entityID defaults to `{public_url}/idp`.
pub fn identity_provider(
    input: IdentityProviderInput,
    public_url: &str,
) -> Result<IdentityProviderConfig, Vec<IdentityProviderConfigError>> {
    let mut problems = Vec::new();
    let defaults = IdentityProviderConfig::defaults(public_url);
    let entity_id = match input.entity_id {
        Some(e) if !e.is_empty() => e,
        Some(_) => {
            problems.push(IdentityProviderConfigError::EmptyEntityId);
            String::new()
        }
        None => defaults.entity_id,
    };
    let signing_key = match (input.signing_key, input.signing_certificate) {
        (Some(k), Some(c)) => Some((k, c)),
        (None, None) => None,
        (Some(_), None) => {
            problems.push(IdentityProviderConfigError::HalfSigningPair {
                given: "signing_key",
            });
            None
        }
        (None, Some(_)) => {
            problems.push(IdentityProviderConfigError::HalfSigningPair {
                given: "signing_certificate",
            });
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(IdentityProviderConfig {
        entity_id,
        signing_key,
        sign_metadata: input.sign_metadata.unwrap_or(defaults.sign_metadata),
        clock_skew: input.clock_skew.unwrap_or(defaults.clock_skew),
        request_max_age: input.request_max_age.unwrap_or(defaults.request_max_age),
        assertion_ttl: input.assertion_ttl.unwrap_or(defaults.assertion_ttl),
        persistent_id_secret: input.persistent_id_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example/shibboleth">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example/slo"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="1"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

    /// A metadata file of this test's own, removed at the end.
    struct MetadataFile(PathBuf);

    impl MetadataFile {
        fn new(test: &str, xml: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "castellan-saml-config-{}-{test}.xml",
                std::process::id()
            ));
            std::fs::write(&path, xml).unwrap();
            MetadataFile(path)
        }
    }

    impl Drop for MetadataFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn input(file: &MetadataFile, extra_keys: &[&str]) -> ServiceProviderInput {
        ServiceProviderInput {
            name: "hr".into(),
            metadata: Some(file.0.clone()),
            release: vec!["mail".into()],
            keys: ["name", "protocol", "metadata", "release"]
                .iter()
                .chain(extra_keys)
                .map(|k| k.to_string())
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_sp_is_read_from_its_metadata_with_its_options() {
        let file = MetadataFile::new("options", METADATA);
        let mut i = input(&file, &["sign", "attribute_name_format", "name_id_format"]);
        i.sign = Some("both".into());
        i.attribute_name_format = Some("basic".into());
        i.name_id_format = Some(crate::nameid::PERSISTENT.into());
        let sp = service_provider(i).unwrap();
        assert_eq!(sp.entity_id, "https://sp.example/shibboleth");
        assert_eq!(sp.sign, SignMode::Both);
        assert_eq!(sp.attribute_format, AttributeNameFormat::Basic);
        assert_eq!(sp.name_id_format, crate::nameid::PERSISTENT);
        assert_eq!(sp.release, ["mail"]);
        let plain = service_provider(input(&file, &[])).unwrap();
        assert_eq!(plain.sign, SignMode::Assertion);
        assert_eq!(plain.name_id_format, crate::nameid::UNSPECIFIED);
        assert!(!plain.encrypt);
    }

    #[test]
    fn keys_of_another_protocol_are_errors() {
        let file = MetadataFile::new("foreign", METADATA);
        for key in [
            "client_id",
            "redirect_uris",
            "proxy_callback",
            "service",
            "logout",
        ] {
            let problems = service_provider(input(&file, &[key])).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key(), Some(key));
            assert_eq!(
                problems[0].to_string(),
                format!("service \"hr\": {key} is not a key of a SAML service provider")
            );
        }
    }

    #[test]
    fn metadata_is_required_readable_and_valid() {
        let mut i = ServiceProviderInput {
            name: "hr".into(),
            ..Default::default()
        };
        let problems = service_provider(i.clone()).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "service \"hr\": metadata (the SP's metadata file) is required for protocol \"saml\""
        );
        assert_eq!(problems[0].key(), None);
        i.metadata = Some(PathBuf::from("/nonexistent/castellan/sp.xml"));
        let problems = service_provider(i).unwrap_err();
        assert!(
            problems[0]
                .to_string()
                .starts_with("services.metadata: /nonexistent/castellan/sp.xml: "),
            "{}",
            problems[0]
        );
        assert_eq!(problems[0].key(), Some("metadata"));
        let file = MetadataFile::new("no-acs", &METADATA.replace("HTTP-POST", "HTTP-Artifact"));
        let problems = service_provider(input(&file, &[])).unwrap_err();
        assert!(
            matches!(&problems[..], [ServiceProviderConfigError::BadMetadata { message, .. }]
                if message.contains("no AssertionConsumerService")),
            "{problems:?}"
        );
        let file = MetadataFile::new("encrypt", METADATA);
        let mut i = input(&file, &["encrypt_assertions"]);
        i.encrypt_assertions = Some(true);
        assert!(service_provider(i).is_err(), "no encryption certificate");
    }

    #[test]
    fn sign_and_attribute_name_format_are_checked() {
        let file = MetadataFile::new("sign", METADATA);
        let mut i = input(&file, &["sign"]);
        i.sign = Some("all".into());
        let problems = service_provider(i).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "services.sign: \"all\" is not \"assertion\", \"response\" or \"both\""
        );
        assert_eq!(problems[0].key(), Some("sign"));
        let mut i = input(&file, &["attribute_name_format"]);
        i.attribute_name_format = Some("unspecified".into());
        let problems = service_provider(i).unwrap_err();
        assert_eq!(problems[0].key(), Some("attribute_name_format"));
    }

    #[test]
    fn an_entity_id_is_registered_once() {
        let file = MetadataFile::new("twice", METADATA);
        let mut sps = ServiceProviders::default();
        sps.add(input(&file, &[])).unwrap();
        let problems = sps.add(input(&file, &[])).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "services.metadata: entityID \"https://sp.example/shibboleth\" is registered twice"
        );
        assert_eq!(problems[0].key(), None);
    }

    #[test]
    fn the_idp_section_has_defaults_and_wants_both_halves_of_its_key() {
        let idp = identity_provider(IdentityProviderInput::default(), "https://sso.example/cas/")
            .unwrap();
        assert_eq!(idp.entity_id, "https://sso.example/cas/idp");
        assert_eq!(idp.signing_key, None);
        assert_eq!(idp.clock_skew, Duration::from_secs(60));
        assert_eq!(idp.assertion_ttl, Duration::from_secs(300));
        let half = IdentityProviderInput {
            entity_id: Some(String::new()),
            signing_certificate: Some("idp.crt".into()),
            ..Default::default()
        };
        let problems = identity_provider(half, "https://sso.example/cas").unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key()).collect();
        assert_eq!(keys, [Some("entity_id"), Some("signing_certificate")]);
        let both = IdentityProviderInput {
            signing_key: Some("idp.key".into()),
            signing_certificate: Some("idp.crt".into()),
            ..Default::default()
        };
        let idp = identity_provider(both, "https://sso.example/cas").unwrap();
        assert_eq!(
            idp.signing_key,
            Some((PathBuf::from("idp.key"), PathBuf::from("idp.crt")))
        );
    }
}
