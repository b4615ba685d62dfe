//! Upstream identity providers as the configuration file declares them
//! (`[[upstreams]]`), checked into [`UpstreamSettings`]: one
//! [`UpstreamKind`] per protocol, and the mapping of its identities.
//!
//! The web crate parses the file, resolves its relative paths and knows
//! where each key was written; this module gets the plain values and names
//! the key of every problem ([`UpstreamConfigError::key`]), so that the
//! file's line can be told.

use crate::mapping::{Collision, Mapping};
use castellan_saml::sp_side::UpstreamIdp;
use std::collections::BTreeMap;
use std::path::PathBuf;
use url::Url;

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInput {
    pub name: String,
    pub protocol: String,
    pub display_name: Option<String>,
    /// CAS: the server's base URL.
    pub url: Option<String>,
    /// OIDC: the issuer, whose discovery document is read.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    /// OAuth2: the three endpoints, and the profile's id attribute.
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub profile_url: Option<String>,
    pub id_attribute: Option<String>,
    /// SAML: the IdP's metadata file, its path resolved.
    pub metadata: Option<PathBuf>,
    /// The only way in: `/login` goes straight to it.
    pub auto_redirect: Option<bool>,
    /// Upstream attribute name → local name.
    pub rename: BTreeMap<String, String>,
    /// Keep only these (local) attribute names.
    pub keep: Option<Vec<String>>,
    /// The principal id: `{upstream}:{id}` (default), or e.g.
    /// `"campus:{id}"`, `"{mail}"`.
    pub principal: Option<String>,
    /// CAS: where tickets are validated, below `url` (default
    /// `/p3/serviceValidate`; `/serviceValidate` for a CAS 2.0 server).
    pub validate_path: Option<String>,
    /// OIDC: also fetch userinfo and merge its claims.
    pub userinfo: Option<bool>,
    /// Count the upstream's own second factor (it is trusted to say so).
    pub trust_mfa: bool,
    /// An `[[authenticators]]` entry where the mapped principal is looked
    /// up for more attributes (the groups live at home).
    pub attributes_from: Option<String>,
}

/// A configured upstream identity provider.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub display_name: String,
    pub kind: UpstreamKind,
    pub mapping: Mapping,
    pub auto_redirect: bool,
    /// CAS upstreams: where tickets are validated, below the URL (`None`:
    /// `/p3/serviceValidate`).
    pub validate_path: Option<String>,
    /// Count the upstream's own second factor when it says it used one.
    pub trust_mfa: bool,
    /// The authenticator that adds the directory's attributes.
    pub attributes_from: Option<String>,
}

#[derive(Debug, Clone)]
pub enum UpstreamKind {
    Cas {
        url: String,
    },
    Oidc {
        issuer: String,
        client_id: String,
        client_secret: Option<String>,
        scopes: Vec<String>,
        userinfo: bool,
    },
    Saml {
        idp: UpstreamIdp,
    },
    OAuth2 {
        authorize_url: String,
        token_url: String,
        profile_url: String,
        client_id: String,
        client_secret: Option<String>,
        scopes: Vec<String>,
        id_attribute: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("upstreams.name: 1 to 64 letters, digits, '-' or '_' (it is part of URLs)")]
    BadName,
    #[error("upstreams.name: {0:?} is defined twice")]
    DuplicateName(String),
    #[error("upstreams.protocol: {0:?} is not \"cas\", \"oidc\", \"oauth2\" or \"saml\"")]
    UnknownProtocol(String),
    #[error("upstream {name:?}: url (the CAS server's base URL, http(s)) is required")]
    MissingCasUrl { name: String },
    #[error("upstream {name:?}: {key} (an http(s) URL) is required")]
    MissingUrl { name: String, key: &'static str },
    #[error("upstream {name:?}: client_id is required")]
    MissingClientId { name: String },
    #[error("upstream {name:?}: metadata (the IdP's metadata file) is required")]
    MissingMetadata { name: String },
    #[error("upstream {name:?}: {path}: {message}")]
    BadMetadata {
        name: String,
        path: String,
        message: String,
    },
    #[error(
        "upstream {name:?}: principal {template:?} must name {{id}} or an attribute in braces"
    )]
    BadPrincipal { name: String, template: String },
    #[error("upstream {name:?}: validate_path {path:?} must be a path below url, starting with '/' (e.g. \"/serviceValidate\")")]
    BadValidatePath { name: String, path: String },
    #[error("upstream {name:?}: validate_path is for CAS upstreams only")]
    ValidatePathNotCas { name: String },
    #[error("upstreams: auto_redirect is for the one way in; more than one upstream has it")]
    SeveralAutoRedirects,
}

impl UpstreamConfigError {
    /// The key whose value is wrong; `None`: the upstream as a whole (or,
    /// for [`UpstreamConfigError::SeveralAutoRedirects`], all of them).
    pub fn key(&self) -> Option<&str> {
        match self {
            UpstreamConfigError::BadName | UpstreamConfigError::DuplicateName(_) => Some("name"),
            UpstreamConfigError::UnknownProtocol(_) => Some("protocol"),
            _ => None,
        }
    }
}

/// The declared upstreams, checked one by one and against each other.
#[derive(Debug, Default)]
pub struct Upstreams {
    upstreams: Vec<UpstreamSettings>,
}

fn http_url(value: &Option<String>) -> Option<Url> {
    value
        .as_deref()
        .and_then(|v| Url::parse(v).ok())
        .filter(|u| matches!(u.scheme(), "https" | "http"))
}

impl Upstreams {
    /// Checks one upstream and adds it; what is wrong with it is returned
    /// (the first problem, or every missing OAuth2 setting).
    pub fn add(&mut self, input: UpstreamInput) -> Result<(), Vec<UpstreamConfigError>> {
        use UpstreamConfigError::*;
        let name = input.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(vec![BadName]);
        }
        if self.upstreams.iter().any(|u| u.name == name) {
            return Err(vec![DuplicateName(name)]);
        }
        let kind = match input.protocol.as_str() {
            "cas" => match http_url(&input.url) {
                Some(u) => UpstreamKind::Cas {
                    url: u.as_str().trim_end_matches('/').to_owned(),
                },
                None => return Err(vec![MissingCasUrl { name }]),
            },
            "oidc" => {
                let (Some(issuer), Some(_)) = (input.issuer.clone(), http_url(&input.issuer))
                else {
                    return Err(vec![MissingUrl {
                        name,
                        key: "issuer",
                    }]);
                };
                let Some(client_id) = input.client_id else {
                    return Err(vec![MissingClientId { name }]);
                };
                let mut scopes = input.scopes;
                if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
                UpstreamKind::Oidc {
                    issuer,
                    client_id,
                    client_secret: input.client_secret,
                    scopes,
                    userinfo: input.userinfo.unwrap_or(false),
                }
            }
            "oauth2" => {
                let mut problems = Vec::new();
                for (key, value) in [
                    ("authorize_url", &input.authorize_url),
                    ("token_url", &input.token_url),
                    ("profile_url", &input.profile_url),
                ] {
                    if http_url(value).is_none() {
                        problems.push(MissingUrl {
                            name: name.clone(),
                            key,
                        });
                    }
                }
                let Some(client_id) = input.client_id else {
                    problems.push(MissingClientId { name });
                    return Err(problems);
                };
                let (Some(authorize_url), Some(token_url), Some(profile_url), true) = (
                    input.authorize_url,
                    input.token_url,
                    input.profile_url,
                    problems.is_empty(),
                ) else {
                    return Err(problems);
                };
                UpstreamKind::OAuth2 {
                    authorize_url,
                    token_url,
                    profile_url,
                    client_id,
                    client_secret: input.client_secret,
                    scopes: input.scopes,
                    id_attribute: input.id_attribute.unwrap_or_else(|| "id".into()),
                }
            }
            "saml" => {
                let Some(path) = input.metadata else {
                    return Err(vec![MissingMetadata { name }]);
                };
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|x| UpstreamIdp::from_metadata(&x).map_err(|e| e.to_string()));
                match parsed {
                    Ok(idp) => UpstreamKind::Saml { idp },
                    Err(message) => {
                        return Err(vec![BadMetadata {
                            name,
                            path: path.display().to_string(),
                            message,
                        }])
                    }
                }
            }
            other => return Err(vec![UnknownProtocol(other.to_owned())]),
        };
        if let Some(t) = &input.principal {
            if t.matches('{').count() != t.matches('}').count() || !t.contains('{') {
                return Err(vec![BadPrincipal {
                    name,
                    template: t.clone(),
                }]);
            }
        }
        let validate_path = match (&kind, input.validate_path) {
            (_, None) => None,
            (UpstreamKind::Cas { .. }, Some(p))
                if p.starts_with('/') && p.len() <= 256 && !p.contains(['?', '#', ' ', '\\']) =>
            {
                Some(p.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty())
            }
            (UpstreamKind::Cas { .. }, Some(path)) => {
                return Err(vec![BadValidatePath { name, path }]);
            }
            (_, Some(_)) => return Err(vec![ValidatePathNotCas { name }]),
        };
        self.upstreams.push(UpstreamSettings {
            display_name: input.display_name.unwrap_or_else(|| name.clone()),
            mapping: Mapping {
                rename: input.rename,
                keep: input.keep,
                principal: input.principal,
                upstream: name.clone(),
            },
            name,
            kind,
            auto_redirect: input.auto_redirect.unwrap_or(false),
            validate_path,
            attributes_from: input.attributes_from,
            trust_mfa: input.trust_mfa,
        });
        Ok(())
    }

    /// Checks the upstreams against each other and against the local
    /// users. Warnings (principal templates that can collide) go to
    /// `warnings`.
    pub fn finish(
        self,
        local_users: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Vec<UpstreamSettings>, UpstreamConfigError> {
        principal_collisions(&self.upstreams, local_users, warnings);
        if self.upstreams.iter().filter(|u| u.auto_redirect).count() > 1 {
            return Err(UpstreamConfigError::SeveralAutoRedirects);
        }
        Ok(self.upstreams)
    }
}

/// Principal templates that could make an upstream's user into a local
/// account, or into another upstream's user.
fn principal_collisions(
    upstreams: &[UpstreamSettings],
    local_users: &[&str],
    warnings: &mut Vec<String>,
) {
    for (i, u) in upstreams.iter().enumerate() {
        let template = u.mapping.template();
        for c in u.mapping.collisions(local_users.iter().copied()) {
            warnings.push(match c {
                Collision::NoNamespace => format!(
                    "upstream {:?}: principal {template:?} has no literal prefix: the upstream \
                     chooses the whole user name, and can become a local user or another \
                     upstream's; use e.g. \"{}:{{id}}\" (the default is \"{{upstream}}:{{id}}\")",
                    u.name, u.name
                ),
                Collision::LocalUser(local) => format!(
                    "upstream {:?}: principal {template:?} can produce the local user {local:?}",
                    u.name
                ),
            });
        }
        let namespace = u.mapping.namespace();
        for other in &upstreams[i + 1..] {
            let theirs = other.mapping.namespace();
            if !namespace.is_empty()
                && !theirs.is_empty()
                && (namespace.starts_with(&theirs) || theirs.starts_with(&namespace))
            {
                warnings.push(format!(
                    "upstreams {:?} and {:?}: their principal templates share the prefix \
                     {:?}: the two can produce the same user",
                    u.name,
                    other.name,
                    if namespace.len() < theirs.len() {
                        &namespace
                    } else {
                        &theirs
                    }
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(name: &str) -> UpstreamInput {
        UpstreamInput {
            name: name.into(),
            protocol: "cas".into(),
            url: Some("https://cas.example/cas/".into()),
            ..Default::default()
        }
    }

    fn one(input: UpstreamInput) -> Result<UpstreamSettings, Vec<UpstreamConfigError>> {
        let mut u = Upstreams::default();
        u.add(input)?;
        Ok(u.finish(&[], &mut Vec::new()).unwrap().remove(0))
    }

    #[test]
    fn a_cas_upstream_gets_the_defaults() {
        let u = one(cas("campus")).unwrap();
        assert!(matches!(&u.kind, UpstreamKind::Cas { url } if url == "https://cas.example/cas"));
        assert_eq!(u.display_name, "campus");
        assert_eq!(u.mapping.template(), "{upstream}:{id}");
        assert_eq!(u.mapping.namespace(), "campus:");
        assert_eq!(u.validate_path, None);
        assert!(!u.auto_redirect);
    }

    #[test]
    fn names_are_url_safe_and_unique() {
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            let e = one(cas(bad)).unwrap_err();
            assert_eq!(e, [UpstreamConfigError::BadName], "{bad:?}");
            assert_eq!(e[0].key(), Some("name"));
        }
        let mut u = Upstreams::default();
        u.add(cas("campus")).unwrap();
        assert_eq!(
            u.add(cas("campus")).unwrap_err(),
            [UpstreamConfigError::DuplicateName("campus".into())]
        );
    }

    #[test]
    fn each_protocol_names_what_it_lacks() {
        let mut no_url = cas("campus");
        no_url.url = Some("ftp://cas.example".into());
        assert_eq!(
            one(no_url).unwrap_err()[0].to_string(),
            "upstream \"campus\": url (the CAS server's base URL, http(s)) is required"
        );
        let oidc = UpstreamInput {
            name: "partner".into(),
            protocol: "oidc".into(),
            issuer: Some("https://op.example".into()),
            ..Default::default()
        };
        assert_eq!(
            one(oidc.clone()).unwrap_err(),
            [UpstreamConfigError::MissingClientId {
                name: "partner".into()
            }]
        );
        let u = one(UpstreamInput {
            client_id: Some("c".into()),
            scopes: vec!["email".into()],
            ..oidc
        })
        .unwrap();
        assert!(
            matches!(&u.kind, UpstreamKind::Oidc { scopes, .. } if scopes == &["openid", "email"])
        );
        let oauth2 = UpstreamInput {
            name: "forge".into(),
            protocol: "oauth2".into(),
            token_url: Some("https://forge.example/token".into()),
            ..Default::default()
        };
        let all: Vec<_> = one(oauth2)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            all,
            [
                "upstream \"forge\": authorize_url (an http(s) URL) is required",
                "upstream \"forge\": profile_url (an http(s) URL) is required",
                "upstream \"forge\": client_id is required",
            ]
        );
        let saml = UpstreamInput {
            name: "fed".into(),
            protocol: "saml".into(),
            metadata: Some("/nonexistent/castellan/idp.xml".into()),
            ..Default::default()
        };
        let e = one(saml).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("upstream \"fed\": /nonexistent/castellan/idp.xml: "),
            "{}",
            e[0]
        );
        let e = one(UpstreamInput {
            protocol: "ldap".into(),
            ..cas("campus")
        })
        .unwrap_err();
        assert_eq!(e[0].key(), Some("protocol"));
    }

    #[test]
    fn an_oauth2_upstream_keeps_its_urls_as_written() {
        let u = one(UpstreamInput {
            name: "forge".into(),
            protocol: "oauth2".into(),
            authorize_url: Some("https://forge.example/oauth/authorize".into()),
            token_url: Some("https://forge.example/oauth/token".into()),
            profile_url: Some("https://forge.example/api/user".into()),
            client_id: Some("castellan".into()),
            ..Default::default()
        })
        .unwrap();
        let UpstreamKind::OAuth2 {
            authorize_url,
            id_attribute,
            ..
        } = u.kind
        else {
            panic!("an OAuth2 upstream");
        };
        assert_eq!(authorize_url, "https://forge.example/oauth/authorize");
        assert_eq!(id_attribute, "id");
    }

    #[test]
    fn validate_path_is_a_path_for_cas_upstreams_only() {
        let ok = one(UpstreamInput {
            validate_path: Some("/serviceValidate/".into()),
            ..cas("campus")
        })
        .unwrap();
        assert_eq!(ok.validate_path.as_deref(), Some("/serviceValidate"));
        for bad in [
            "serviceValidate",
            "/x?format=JSON",
            "https://other/serviceValidate",
        ] {
            let e = one(UpstreamInput {
                validate_path: Some(bad.into()),
                ..cas("campus")
            })
            .unwrap_err();
            assert!(e[0].to_string().contains("validate_path"), "{bad}");
        }
        let e = one(UpstreamInput {
            name: "p".into(),
            protocol: "oidc".into(),
            issuer: Some("https://op.example".into()),
            client_id: Some("c".into()),
            validate_path: Some("/x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            [UpstreamConfigError::ValidatePathNotCas { name: "p".into() }]
        );
    }

    #[test]
    fn principal_templates_are_checked_and_collisions_warned_about() {
        let e = one(UpstreamInput {
            principal: Some("campus:id".into()),
            ..cas("campus")
        })
        .unwrap_err();
        assert!(e[0].to_string().contains("must name {id}"), "{}", e[0]);
        let mut u = Upstreams::default();
        for (name, principal) in [
            ("a", "{id}"),
            ("b", "{mail}@b"),
            ("c", "cas{id}"),
            ("d", "ca{id}"),
        ] {
            u.add(UpstreamInput {
                principal: Some(principal.into()),
                ..cas(name)
            })
            .unwrap();
        }
        let mut warnings = Vec::new();
        let all = u.finish(&["casuser"], &mut warnings).unwrap();
        let warnings = warnings.join("\n");
        assert!(warnings.contains("upstream \"a\": principal \"{id}\" has no literal prefix"));
        assert!(warnings.contains("upstream \"b\": principal \"{mail}@b\" has no literal prefix"));
        assert!(warnings.contains(
            "upstream \"c\": principal \"cas{id}\" can produce the local user \"casuser\""
        ));
        assert!(warnings.contains("upstreams \"c\" and \"d\""));
        assert_eq!(all[3].mapping.template(), "ca{id}");
    }

    #[test]
    fn one_upstream_at_most_is_the_way_in() {
        let mut u = Upstreams::default();
        for name in ["a", "b"] {
            u.add(UpstreamInput {
                auto_redirect: Some(true),
                principal: Some(format!("{name}:{{id}}")),
                ..cas(name)
            })
            .unwrap();
        }
        let e = u.finish(&[], &mut Vec::new()).unwrap_err();
        assert_eq!(e, UpstreamConfigError::SeveralAutoRedirects);
        assert_eq!(e.key(), None);
    }
}
