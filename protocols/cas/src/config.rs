//! A CAS service as the configuration file registers it (`[[services]]` with
//! `protocol = "cas"`), checked and turned into the core's
//! [`RegisteredService`].
//!
//! The web crate parses the file and knows where each key was written; this
//! module gets the plain values and names the key of every problem
//! ([`ServiceConfigError::key`]), so that the file's line can be told.

use castellan_core::{LogoutMode, MfaPolicy, RegisteredService};

/// The keys a CAS service may have; any other key written for it (an OIDC
/// client's `client_secret`, a SAML SP's `metadata`) is an error.
pub const KEYS: &[&str] = &[
    "name",
    "protocol",
    "service",
    "release",
    "proxy_callback",
    "logout",
    "mfa",
];

/// One `[[services]]` entry with `protocol = "cas"`.
#[derive(Debug, Clone, Default)]
pub struct ServiceInput {
    pub name: String,
    /// The regex matched against the whole service URL.
    pub service: Option<String>,
    pub release: Vec<String>,
    pub proxy_callback: Option<String>,
    pub logout: Option<String>,
    /// "required" or "optional" (a second factor).
    pub mfa: Option<String>,
    /// Every key written in the entry, for the check that each belongs to a
    /// CAS service.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceConfigError {
    #[error("service {name:?}: {key} is not a key of a CAS service")]
    ForeignKey { name: String, key: String },
    #[error("service {name:?}: `service` (a regex) is required")]
    MissingPattern { name: String },
    #[error("services.{key}: bad regular expression: {message}")]
    BadRegex { key: &'static str, message: String },
    #[error("services.logout: {0:?} is not \"back-channel\" or \"none\"")]
    BadLogout(String),
    #[error("services.mfa: {0:?} is not \"required\" or \"optional\"")]
    BadMfa(String),
    /// The pattern compiles alone, not once anchored.
    #[error("services.service: {0}")]
    Pattern(String),
}

impl ServiceConfigError {
    /// The key whose value is wrong; `None`: the service as a whole (a
    /// missing key).
    pub fn key(&self) -> Option<&str> {
        match self {
            ServiceConfigError::ForeignKey { key, .. } => Some(key),
            ServiceConfigError::MissingPattern { .. } => None,
            ServiceConfigError::BadRegex { key, .. } => Some(key),
            ServiceConfigError::BadLogout(_) => Some("logout"),
            ServiceConfigError::BadMfa(_) => Some("mfa"),
            ServiceConfigError::Pattern(_) => Some("service"),
        }
    }
}

/// Checks a CAS service; every problem found is returned.
pub fn service(input: ServiceInput) -> Result<RegisteredService, Vec<ServiceConfigError>> {
    let mut problems: Vec<ServiceConfigError> = input
        .keys
        .iter()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| ServiceConfigError::ForeignKey {
            name: input.name.clone(),
            key: k.clone(),
        })
        .collect();
    let Some(pattern) = &input.service else {
        problems.push(ServiceConfigError::MissingPattern {
            name: input.name.clone(),
        });
        return Err(problems);
    };
    let mut ok = true;
    for (key, value) in [
        ("service", Some(pattern)),
        ("proxy_callback", input.proxy_callback.as_ref()),
    ] {
        if let Some(Err(e)) = value.map(|v| regex::Regex::new(v)) {
            problems.push(ServiceConfigError::BadRegex {
                key,
                message: e.to_string(),
            });
            ok = false;
        }
    }
    let logout = match input.logout.as_deref() {
        None | Some("none") => LogoutMode::None,
        Some("back-channel") => LogoutMode::BackChannel,
        Some(other) => {
            problems.push(ServiceConfigError::BadLogout(other.to_owned()));
            LogoutMode::None
        }
    };
    let mfa = input.mfa.as_deref().and_then(|word| {
        let policy = MfaPolicy::parse(word);
        if policy.is_none() {
            problems.push(ServiceConfigError::BadMfa(word.to_owned()));
        }
        policy
    });
    if !ok {
        return Err(problems);
    }
    match RegisteredService::new(
        input.name,
        pattern,
        input.release,
        input.proxy_callback.as_deref(),
        logout,
    ) {
        Ok(s) if problems.is_empty() => Ok(s.with_mfa(mfa)),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(ServiceConfigError::Pattern(e.to_string()));
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(keys: &[&str]) -> ServiceInput {
        ServiceInput {
            name: "portal".into(),
            service: Some(r"^https://portal\.example\.org(/.*)?$".into()),
            release: vec!["mail".into()],
            keys: ["name", "protocol", "service", "release"]
                .iter()
                .chain(keys)
                .map(|k| k.to_string())
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_service_is_registered() {
        let mut i = input(&["proxy_callback", "logout"]);
        i.proxy_callback = Some(r"^https://portal\.example\.org/pgt$".into());
        i.logout = Some("back-channel".into());
        let s = service(i).unwrap();
        assert_eq!(s.name, "portal");
        assert_eq!(s.logout, LogoutMode::BackChannel);
        assert!(s.pattern.is_match("https://portal.example.org/x"));
        assert!(s.allows_proxy_callback("https://portal.example.org/pgt"));
        assert_eq!(s.release, ["mail"]);
    }

    #[test]
    fn keys_of_another_protocol_are_errors() {
        for key in [
            "client_secret",
            "redirect_uris",
            "metadata",
            "name_id_format",
        ] {
            let problems = service(input(&[key])).unwrap_err();
            assert_eq!(
                problems,
                [ServiceConfigError::ForeignKey {
                    name: "portal".into(),
                    key: key.into()
                }]
            );
            assert_eq!(problems[0].key(), Some(key));
            assert_eq!(
                problems[0].to_string(),
                format!("service \"portal\": {key} is not a key of a CAS service")
            );
        }
    }

    #[test]
    fn the_pattern_is_required_and_checked() {
        let mut i = input(&[]);
        i.service = None;
        let problems = service(i).unwrap_err();
        assert_eq!(problems[0].key(), None);
        assert_eq!(
            problems[0].to_string(),
            "service \"portal\": `service` (a regex) is required"
        );

        let mut i = input(&["proxy_callback"]);
        i.service = Some("^https://(unclosed".into());
        i.proxy_callback = Some("(".into());
        let problems = service(i).unwrap_err();
        let keys: Vec<_> = problems.iter().map(ServiceConfigError::key).collect();
        assert_eq!(keys, [Some("service"), Some("proxy_callback")]);
        assert!(problems[0]
            .to_string()
            .starts_with("services.service: bad regular expression:"));
    }

    #[test]
    fn a_pattern_too_large_once_compiled_is_refused() {
        // Compiles within the regex crate's default limit, not within the
        // registry's.
        let mut i = input(&[]);
        i.service = Some("[a-z]{100000}".into());
        let problems = service(i).unwrap_err();
        assert!(
            matches!(problems[..], [ServiceConfigError::Pattern(_)]),
            "{problems:?}"
        );
        assert_eq!(problems[0].key(), Some("service"));
    }

    #[test]
    fn logout_is_back_channel_or_none() {
        let mut i = input(&["logout"]);
        i.logout = Some("none".into());
        assert_eq!(service(i).unwrap().logout, LogoutMode::None);
        let mut i = input(&["logout"]);
        i.logout = Some("front-channel".into());
        let problems = service(i).unwrap_err();
        assert_eq!(
            problems,
            [ServiceConfigError::BadLogout("front-channel".into())]
        );
        assert_eq!(
            problems[0].to_string(),
            "services.logout: \"front-channel\" is not \"back-channel\" or \"none\""
        );
    }
}
