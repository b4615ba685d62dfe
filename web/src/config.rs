//! The configuration file (TOML), parsed once into typed structs, then
//! validated into the runtime [`Settings`]. `check-config` runs exactly this.

use castellan_core::{
    authn::{hash_password, is_password_hash},
    Attributes, LogoutMode, RegisteredService, StaticUser, ThrottlePolicy, TicketPolicy,
    UserSecret,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use url::Url;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub tickets: TicketsSection,
    #[serde(default)]
    pub throttle: ThrottleSection,
    #[serde(default)]
    pub users: Vec<UserEntry>,
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamEntry>,
    #[serde(default)]
    pub oidc: OidcSection,
    #[serde(default)]
    pub saml: SamlSection,
    /// Directories and databases, after `[[users]]` (castellan-authenticators).
    #[serde(default)]
    pub authenticators: Vec<Spanned<castellan_authenticators::AuthenticatorEntry>>,
}

/// Not in the contract's example: the SAML IdP's own settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SamlSection {
    pub entity_id: Option<Spanned<String>>,
    pub signing_key: Option<Spanned<String>>,
    pub signing_certificate: Option<Spanned<String>>,
    pub sign_metadata: Option<bool>,
    pub clock_skew: Option<Spanned<String>>,
    pub request_max_age: Option<Spanned<String>>,
    pub assertion_ttl: Option<Spanned<String>>,
    pub persistent_id_secret: Option<Spanned<String>>,
}

/// The SAML IdP's settings.
#[derive(Debug, Clone)]
pub struct SamlSettings {
    pub sps: Vec<castellan_saml::ServiceProvider>,
    /// Default `{public_url}/idp`.
    pub entity_id: String,
    pub signing_key: Option<(PathBuf, PathBuf)>,
    pub sign_metadata: bool,
    pub clock_skew: Duration,
    pub request_max_age: Duration,
    pub assertion_ttl: Duration,
    pub persistent_id_secret: Option<String>,
}

/// Not in the contract's example: lifetimes of what the OIDC provider issues.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    pub code_ttl: Option<Spanned<String>>,
    pub access_token_ttl: Option<Spanned<String>>,
    pub id_token_ttl: Option<Spanned<String>>,
    pub refresh_token_ttl: Option<Spanned<String>>,
    pub offline_token_ttl: Option<Spanned<String>>,
    /// Secret mixed into pairwise subjects; required when a client uses them.
    pub pairwise_salt: Option<Spanned<String>>,
}

/// The OIDC provider's settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub clients: Vec<castellan_oidc::OidcClient>,
    pub code_ttl: Duration,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub offline_token_ttl: Duration,
    pub pairwise_salt: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses
    /// or CIDR ranges); the client address is what throttling counts.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Time a client has to send a whole request head: from connecting, and
    /// from the first byte of each later request on a kept-alive connection.
    pub header_read_timeout: Option<Spanned<String>>,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Option<Spanned<String>>,
    /// Open client connections at most; more wait to be accepted.
    pub max_connections: Option<Spanned<u32>>,
    /// "text" (the default) or "json"; `RUST_LOG_FORMAT` overrides it.
    pub log_format: Option<Spanned<String>>,
}

/// How client connections are held (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            // Longer than the 60 s nginx keeps idle upstream connections: the
            // proxy closes first, so it never reuses one Castellan is closing.
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
        }
    }
}

/// How log records are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TicketsSection {
    pub store: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    pub service_ticket_ttl: Option<Spanned<String>>,
    pub proxy_ticket_ttl: Option<Spanned<String>>,
    pub sso_session_ttl: Option<Spanned<String>>,
    pub sso_idle_ttl: Option<Spanned<String>>,
    pub login_form_ttl: Option<Spanned<String>>,
    /// Pending sign-in requests (OIDC, SAML, delegation) one node keeps at
    /// most before answering 503.
    pub max_pending_flows: Option<u64>,
}

/// Not in the contract's example: limits on failed logins (defaults 5 per
/// user and 20 per client address in 5 minutes).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSection {
    pub failures_per_user: Option<Spanned<u32>>,
    pub failures_per_ip: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub username: Spanned<String>,
    pub password_hash: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// The SAML fields are parsed (so the contract's file is accepted) but only
// read once that protocol module exists.
#[allow(dead_code)]
pub struct ServiceEntry {
    pub name: Spanned<String>,
    pub protocol: Spanned<String>,
    pub service: Option<Spanned<String>>,
    #[serde(default)]
    pub release: Vec<String>,
    pub proxy_callback: Option<Spanned<String>>,
    pub logout: Option<Spanned<String>>,
    // OAuth2 / OIDC clients
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Not in the contract's example: OIDC Back-Channel Logout 1.0.
    pub backchannel_logout_uri: Option<Spanned<String>>,
    /// Default: authorization_code and refresh_token, plus
    /// client_credentials for a confidential client.
    pub grant_types: Option<Spanned<Vec<String>>>,
    /// "public" (default) or "pairwise".
    pub subject: Option<Spanned<String>>,
    /// RS256 (default) or ES256.
    pub id_token_signing_alg: Option<Spanned<String>>,
    /// ES256 (default) or RS256.
    pub access_token_signing_alg: Option<Spanned<String>>,
    /// client_ids of the resource servers that may introspect this
    /// client's tokens (RFC 7662); by default only the client itself.
    #[serde(default)]
    pub resource_servers: Vec<String>,
    // SAML: "assertion" (default), "response" or "both".
    pub sign: Option<Spanned<String>>,
    pub encrypt_assertions: Option<bool>,
    /// "uri" (default) or "basic".
    pub attribute_name_format: Option<Spanned<String>>,
    pub require_signed_requests: Option<bool>,
    // SAML2 service providers
    pub metadata: Option<Spanned<String>>,
    pub name_id_format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the OIDC, OAuth2 and SAML fields: read once those connectors exist
pub struct UpstreamEntry {
    pub name: Spanned<String>,
    pub protocol: Spanned<String>,
    pub display_name: Option<String>,
    pub url: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub profile_url: Option<String>,
    pub id_attribute: Option<String>,
    pub metadata: Option<String>,
    // Not in the contract's example:
    /// The only way in: `/login` goes straight to it.
    pub auto_redirect: Option<bool>,
    /// Upstream attribute name → local name.
    #[serde(default)]
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
    /// An [[authenticators]] entry where the principal is looked up for
    /// more attributes (issue 12).
    pub attributes_from: Option<String>,
}

/// A configured upstream identity provider.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub display_name: String,
    pub kind: UpstreamKind,
    pub mapping: castellan_delegation::mapping::Mapping,
    pub auto_redirect: bool,
    /// CAS upstreams: where tickets are validated, below the URL (`None`:
    /// `/p3/serviceValidate`).
    pub validate_path: Option<String>,
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
        idp: castellan_saml::sp_side::UpstreamIdp,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis { url: String },
}

/// The validated runtime configuration.
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// The path of `public_url` without a trailing slash ("/cas", or "").
    pub prefix: String,
    pub data_dir: PathBuf,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub connections: ConnectionLimits,
    pub log_format: LogFormat,
    pub store: StoreKind,
    pub tickets: TicketPolicy,
    pub throttle: ThrottlePolicy,
    pub users: Vec<StaticUser>,
    pub services: Vec<RegisteredService>,
    pub oidc: OidcSettings,
    pub saml: SamlSettings,
    pub upstreams: Vec<UpstreamSettings>,
    /// `[[authenticators]]`, validated, in order.
    pub authenticators: Vec<castellan_authenticators::SourceSettings>,
    /// Whether the demo defaults are in use (no configuration file).
    #[allow(dead_code)]
    pub demo: bool,
    /// Things to tell the operator at start.
    pub warnings: Vec<String>,
}

impl Settings {
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// One problem found in the file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.file, .problems))]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("{file}:{line}: {}", p.message),
            None => format!("{file}: {}", p.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            line: None,
            message: format!("cannot read the configuration file: {e}"),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base, false).map_err(|problems| ConfigError { file, problems })
}

/// The embedded defaults: a working demo with no file at all.
pub fn embedded_defaults() -> Result<Settings, ConfigError> {
    let demo = r#"
[[users]]
username = "casuser"
password = "Mellon"
attributes = { mail = "casuser@example.org", cn = "CAS User", givenName = "CAS", sn = "User", memberOf = ["staff", "faculty"] }
"#;
    parse(demo, Path::new("."), true).map_err(|problems| ConfigError {
        file: "(embedded defaults)".into(),
        problems,
    })
}

/// Parses configuration text; relative paths are resolved against `base`.
pub fn parse(text: &str, base: &Path, demo: bool) -> Result<Settings, Vec<Problem>> {
    let raw: ConfigFile = toml::from_str(text).map_err(|e| {
        vec![Problem {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().to_owned(),
        }]
    })?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let settings = v.settings(raw, base, demo);
    if v.problems.is_empty() {
        let mut settings = settings;
        settings.warnings = v.warnings;
        Ok(settings)
    } else {
        Err(v.problems)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses "10s", "5m", "8h", "1d", "250ms", or a sum like "1h30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("bad duration {s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(format!("bad duration {s:?}: unit must be ms, s, m, h or d")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Validator<'_> {
    fn problem<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: Some(line_of(self.text, at.span().start)),
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.problem(v, format!("{key}: must be longer than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(v, format!("{key}: {e}"));
                default
            }
        }
    }

    fn regex(&mut self, key: &str, value: &Spanned<String>) -> bool {
        match regex::Regex::new(value.get_ref()) {
            Ok(_) => true,
            Err(e) => {
                self.problem(value, format!("{key}: bad regular expression: {e}"));
                false
            }
        }
    }

    fn settings(&mut self, raw: ConfigFile, base: &Path, demo: bool) -> Settings {
        let listen = match &raw.server.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.get_ref().parse().unwrap_or_else(|_| {
                self.problem(
                    v,
                    "server.listen: expected an address like \"127.0.0.1:8080\"",
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };
        let default_url = Url::parse("http://localhost:8080/cas").expect("static URL");
        let public_url = match &raw.server.public_url {
            None => default_url,
            Some(v) => match Url::parse(v.get_ref()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => u,
                Ok(_) => {
                    self.problem(
                        v,
                        "server.public_url: must be an http(s) URL without a query",
                    );
                    default_url
                }
                Err(e) => {
                    self.problem(v, format!("server.public_url: {e}"));
                    default_url
                }
            },
        };
        let prefix = public_url.path().trim_end_matches('/').to_owned();
        let data_dir = raw
            .server
            .data_dir
            .as_ref()
            .map(|d| base.join(d.get_ref()))
            .unwrap_or_else(|| base.join("data"));

        let mut trusted_proxies = Vec::new();
        for entry in &raw.server.trusted_proxies {
            let text = entry.get_ref();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.problem(
                    entry,
                    format!("server.trusted_proxies: {text:?} is not an address or CIDR range"),
                ),
            }
        }
        let connections = self.connection_limits(&raw.server);
        let log_format = match &raw.server.log_format {
            None => LogFormat::default(),
            Some(v) => LogFormat::parse(v.get_ref()).unwrap_or_else(|| {
                self.problem(v, "server.log_format: expected \"text\" or \"json\"");
                LogFormat::default()
            }),
        };
        let store = match raw
            .tickets
            .store
            .as_ref()
            .map(|s| (s, s.get_ref().as_str()))
        {
            None | Some((_, "memory")) => StoreKind::Memory,
            Some((s, "redis")) => match &raw.tickets.redis_url {
                Some(u) => StoreKind::Redis {
                    url: u.get_ref().clone(),
                },
                None => {
                    self.problem(s, "tickets.store = \"redis\" needs tickets.redis_url");
                    StoreKind::Memory
                }
            },
            Some((s, other)) => {
                self.problem(
                    s,
                    format!("tickets.store: {other:?} is not \"memory\" or \"redis\""),
                );
                StoreKind::Memory
            }
        };
        if let (StoreKind::Redis { url }, Some(u)) = (&store, &raw.tickets.redis_url) {
            let multi_host = ["redis+sentinel://", "redis+cluster://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            match Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {}
                _ if multi_host => {}
                _ => self.problem(
                    u,
                    "tickets.redis_url: expected redis://host:port/db, rediss://…, \
                     redis+sentinel://s1:26379,s2:26379/SERVICE/db or redis+cluster://n1:6379,n2:6379",
                ),
            }
        }
        let defaults = TicketPolicy::default();
        let service_ticket_ttl = self.duration(
            "tickets.service_ticket_ttl",
            &raw.tickets.service_ticket_ttl,
            defaults.service_ticket_ttl,
        );
        let tickets = TicketPolicy {
            service_ticket_ttl,
            proxy_ticket_ttl: self.duration(
                "tickets.proxy_ticket_ttl",
                &raw.tickets.proxy_ticket_ttl,
                service_ticket_ttl,
            ),
            session_ttl: self.duration(
                "tickets.sso_session_ttl",
                &raw.tickets.sso_session_ttl,
                defaults.session_ttl,
            ),
            session_idle_ttl: self.duration(
                "tickets.sso_idle_ttl",
                &raw.tickets.sso_idle_ttl,
                defaults.session_idle_ttl,
            ),
            login_flow_ttl: self.duration(
                "tickets.login_form_ttl",
                &raw.tickets.login_form_ttl,
                defaults.login_flow_ttl,
            ),
            max_pending_flows: raw
                .tickets
                .max_pending_flows
                .unwrap_or(defaults.max_pending_flows),
        };

        let tdefault = ThrottlePolicy::default();
        let throttle = ThrottlePolicy {
            failures_per_user: raw
                .throttle
                .failures_per_user
                .map(Spanned::into_inner)
                .unwrap_or(tdefault.failures_per_user),
            failures_per_ip: raw
                .throttle
                .failures_per_ip
                .map(Spanned::into_inner)
                .unwrap_or(tdefault.failures_per_ip),
            window: self.duration("throttle.window", &raw.throttle.window, tdefault.window),
        };

        let users = self.users(raw.users, demo);
        let (services, clients, sps) = self.services(raw.services, base);
        let oidc = self.oidc(raw.oidc, clients);
        let saml = self.saml(raw.saml, sps, &public_url, base);
        let mut upstreams: Vec<UpstreamSettings> = Vec::new();
        for upstream in raw.upstreams {
            let name = upstream.name.get_ref().clone();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                self.problem(
                    &upstream.name,
                    "upstreams.name: 1 to 64 letters, digits, '-' or '_' (it is part of URLs)",
                );
                continue;
            }
            if upstreams.iter().any(|u| u.name == name) {
                self.problem(
                    &upstream.name,
                    format!("upstreams.name: {name:?} is defined twice"),
                );
                continue;
            }
            let kind = match upstream.protocol.get_ref().as_str() {
                "cas" => match upstream.url.as_deref().map(Url::parse) {
                    Some(Ok(u)) if matches!(u.scheme(), "https" | "http") => UpstreamKind::Cas {
                        url: u.as_str().trim_end_matches('/').to_owned(),
                    },
                    _ => {
                        self.problem(&upstream.name, format!("upstream {name:?}: url (the CAS server's base URL, http(s)) is required"));
                        continue;
                    }
                },
                "oidc" => {
                    let issuer = match upstream.issuer.as_deref().map(Url::parse) {
                        Some(Ok(u)) if matches!(u.scheme(), "https" | "http") => {
                            upstream.issuer.clone().unwrap_or_default()
                        }
                        _ => {
                            self.problem(
                                &upstream.name,
                                format!("upstream {name:?}: issuer (an http(s) URL) is required"),
                            );
                            continue;
                        }
                    };
                    let Some(client_id) = upstream.client_id.clone() else {
                        self.problem(
                            &upstream.name,
                            format!("upstream {name:?}: client_id is required"),
                        );
                        continue;
                    };
                    let mut scopes = upstream.scopes.clone();
                    if !scopes.iter().any(|s| s == "openid") {
                        scopes.insert(0, "openid".into());
                    }
                    UpstreamKind::Oidc {
                        issuer,
                        client_id,
                        client_secret: upstream.client_secret.clone(),
                        scopes,
                        userinfo: upstream.userinfo.unwrap_or(false),
                    }
                }
                "oauth2" => {
                    let mut urls = Vec::new();
                    for (key, value) in [
                        ("authorize_url", &upstream.authorize_url),
                        ("token_url", &upstream.token_url),
                        ("profile_url", &upstream.profile_url),
                    ] {
                        match value.as_deref().map(Url::parse) {
                            Some(Ok(u)) if matches!(u.scheme(), "https" | "http") => {
                                urls.push(value.clone().unwrap_or_default())
                            }
                            _ => self.problem(
                                &upstream.name,
                                format!("upstream {name:?}: {key} (an http(s) URL) is required"),
                            ),
                        }
                    }
                    let Some(client_id) = upstream.client_id.clone() else {
                        self.problem(
                            &upstream.name,
                            format!("upstream {name:?}: client_id is required"),
                        );
                        continue;
                    };
                    if urls.len() != 3 {
                        continue;
                    }
                    UpstreamKind::OAuth2 {
                        authorize_url: urls[0].clone(),
                        token_url: urls[1].clone(),
                        profile_url: urls[2].clone(),
                        client_id,
                        client_secret: upstream.client_secret.clone(),
                        scopes: upstream.scopes.clone(),
                        id_attribute: upstream.id_attribute.clone().unwrap_or_else(|| "id".into()),
                    }
                }
                "saml" => {
                    let Some(file) = upstream.metadata.as_deref() else {
                        self.problem(
                            &upstream.name,
                            format!(
                                "upstream {name:?}: metadata (the IdP's metadata file) is required"
                            ),
                        );
                        continue;
                    };
                    let path = base.join(file);
                    let parsed = std::fs::read_to_string(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|x| {
                            castellan_saml::sp_side::UpstreamIdp::from_metadata(&x)
                                .map_err(|e| e.to_string())
                        });
                    match parsed {
                        Ok(idp) => UpstreamKind::Saml { idp },
                        Err(e) => {
                            self.problem(
                                &upstream.name,
                                format!("upstream {name:?}: {}: {e}", path.display()),
                            );
                            continue;
                        }
                    }
                }
                other => {
                    self.problem(
                        &upstream.protocol,
                        format!("upstreams.protocol: {other:?} is not \"cas\", \"oidc\", \"oauth2\" or \"saml\""),
                    );
                    continue;
                }
            };
            if let Some(t) = &upstream.principal {
                if t.matches('{').count() != t.matches('}').count() || !t.contains('{') {
                    self.problem(&upstream.name, format!("upstream {name:?}: principal {t:?} must name {{id}} or an attribute in braces"));
                    continue;
                }
            }
            let validate_path = match (&kind, upstream.validate_path.clone()) {
                (_, None) => None,
                (UpstreamKind::Cas { .. }, Some(p))
                    if p.starts_with('/')
                        && p.len() <= 256
                        && !p.contains(['?', '#', ' ', '\\']) =>
                {
                    Some(p.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty())
                }
                (UpstreamKind::Cas { .. }, Some(p)) => {
                    self.problem(&upstream.name, format!("upstream {name:?}: validate_path {p:?} must be a path below url, starting with '/' (e.g. \"/serviceValidate\")"));
                    continue;
                }
                (_, Some(_)) => {
                    self.problem(
                        &upstream.name,
                        format!("upstream {name:?}: validate_path is for CAS upstreams only"),
                    );
                    continue;
                }
            };
            upstreams.push(UpstreamSettings {
                display_name: upstream
                    .display_name
                    .clone()
                    .unwrap_or_else(|| name.clone()),
                mapping: castellan_delegation::mapping::Mapping {
                    rename: upstream.rename,
                    keep: upstream.keep,
                    principal: upstream.principal,
                    upstream: name.clone(),
                },
                name,
                kind,
                auto_redirect: upstream.auto_redirect.unwrap_or(false),
                validate_path,
                attributes_from: upstream.attributes_from.clone(),
            });
        }
        self.principal_collisions(&upstreams, &users);
        let authenticators = self.authenticators(&raw.authenticators, base);
        for u in &upstreams {
            if let Some(from) = &u.attributes_from {
                if !authenticators.iter().any(|a| a.name() == from) {
                    self.problems.push(Problem {
                        line: None,
                        message: format!(
                            "upstream {:?}: attributes_from = {from:?} names no [[authenticators]] entry",
                            u.name
                        ),
                    });
                }
            }
        }
        if upstreams.iter().filter(|u| u.auto_redirect).count() > 1 {
            self.problems.push(Problem {
                line: None,
                message:
                    "upstreams: auto_redirect is for the one way in; more than one upstream has it"
                        .into(),
            });
        }
        if demo {
            self.warnings.push(
                "no configuration file: running the demo defaults with user casuser/Mellon; \
                 no service is registered, so every service is refused"
                    .into(),
            );
        }
        Settings {
            listen,
            public_url,
            prefix,
            data_dir,
            trusted_proxies,
            connections,
            log_format,
            store,
            tickets,
            throttle,
            users,
            services,
            oidc,
            saml,
            upstreams,
            authenticators,
            demo,
            warnings: Vec::new(),
        }
    }

    /// `[[authenticators]]`: each kind validates its own entries.
    fn authenticators(
        &mut self,
        entries: &[Spanned<castellan_authenticators::AuthenticatorEntry>],
        base: &Path,
    ) -> Vec<castellan_authenticators::SourceSettings> {
        let mut out = Vec::new();
        for e in entries {
            match e.get_ref().validate(base) {
                Ok(s) => out.push(s),
                Err(problems) => {
                    for m in problems {
                        self.problem(e, m);
                    }
                }
            }
        }
        let names =
            castellan_authenticators::check_names(entries.iter().map(|e| e.get_ref().name()));
        if let Some(first) = entries.first() {
            for m in names {
                self.problem(first, m);
            }
        }
        out
    }

    fn connection_limits(&mut self, server: &ServerSection) -> ConnectionLimits {
        let default = ConnectionLimits::default();
        let max_connections = match &server.max_connections {
            None => default.max_connections,
            Some(v) if *v.get_ref() == 0 => {
                self.problem(v, "server.max_connections: must be at least 1");
                default.max_connections
            }
            Some(v) => *v.get_ref() as usize,
        };
        ConnectionLimits {
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                &server.header_read_timeout,
                default.header_read_timeout,
            ),
            idle_timeout: self.duration(
                "server.idle_timeout",
                &server.idle_timeout,
                default.idle_timeout,
            ),
            max_connections,
        }
    }

    /// Principal templates that could make an upstream's user into a local
    /// account, or into another upstream's user.
    fn principal_collisions(&mut self, upstreams: &[UpstreamSettings], users: &[StaticUser]) {
        use castellan_delegation::mapping::Collision;
        for (i, u) in upstreams.iter().enumerate() {
            let template = u.mapping.template();
            for c in u
                .mapping
                .collisions(users.iter().map(|l| l.username.as_str()))
            {
                self.warnings.push(match c {
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
                    self.warnings.push(format!(
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

    fn saml(
        &mut self,
        raw: SamlSection,
        sps: Vec<castellan_saml::ServiceProvider>,
        public_url: &Url,
        base: &Path,
    ) -> SamlSettings {
        let entity_id = match &raw.entity_id {
            Some(e) if !e.get_ref().is_empty() => e.get_ref().clone(),
            Some(e) => {
                self.problem(e, "saml.entity_id: empty");
                String::new()
            }
            None => format!("{}/idp", public_url.as_str().trim_end_matches('/')),
        };
        let signing_key = match (&raw.signing_key, &raw.signing_certificate) {
            (Some(k), Some(c)) => Some((base.join(k.get_ref()), base.join(c.get_ref()))),
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                self.problem(
                    s,
                    "saml: give both signing_key and signing_certificate, or neither",
                );
                None
            }
        };
        SamlSettings {
            sps,
            entity_id,
            signing_key,
            sign_metadata: raw.sign_metadata.unwrap_or(false),
            clock_skew: self.duration("saml.clock_skew", &raw.clock_skew, Duration::from_secs(60)),
            request_max_age: self.duration(
                "saml.request_max_age",
                &raw.request_max_age,
                Duration::from_secs(300),
            ),
            assertion_ttl: self.duration(
                "saml.assertion_ttl",
                &raw.assertion_ttl,
                Duration::from_secs(300),
            ),
            persistent_id_secret: raw.persistent_id_secret.map(Spanned::into_inner),
        }
    }

    fn saml_sp(
        &mut self,
        entry: ServiceEntry,
        base: &Path,
    ) -> Option<castellan_saml::ServiceProvider> {
        use castellan_saml::sp::{AttributeNameFormat, Registration};
        use castellan_saml::SignMode;
        let name = entry.name.get_ref().clone();
        let Some(metadata) = &entry.metadata else {
            self.problem(&entry.name, format!("service {name:?}: metadata (the SP's metadata file) is required for protocol \"saml\""));
            return None;
        };
        let path = base.join(metadata.get_ref());
        let xml = match std::fs::read_to_string(&path) {
            Ok(x) => x,
            Err(e) => {
                self.problem(
                    metadata,
                    format!("services.metadata: {}: {e}", path.display()),
                );
                return None;
            }
        };
        let sign = match entry.sign.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "assertion")) => SignMode::Assertion,
            Some((_, "response")) => SignMode::Response,
            Some((_, "both")) => SignMode::Both,
            Some((s, other)) => {
                self.problem(
                    s,
                    format!(
                        "services.sign: {other:?} is not \"assertion\", \"response\" or \"both\""
                    ),
                );
                return None;
            }
        };
        let attribute_format = match entry
            .attribute_name_format
            .as_ref()
            .map(|s| (s, s.get_ref().as_str()))
        {
            None | Some((_, "uri")) => AttributeNameFormat::Uri,
            Some((_, "basic")) => AttributeNameFormat::Basic,
            Some((s, other)) => {
                self.problem(
                    s,
                    format!(
                        "services.attribute_name_format: {other:?} is not \"uri\" or \"basic\""
                    ),
                );
                return None;
            }
        };
        let registration = Registration {
            name: name.clone(),
            release: entry.release,
            name_id_format: entry.name_id_format.map(Spanned::into_inner),
            sign,
            encrypt: entry.encrypt_assertions.unwrap_or(false),
            attribute_format,
            require_signed_requests: entry.require_signed_requests.unwrap_or(false),
        };
        match castellan_saml::ServiceProvider::from_metadata(&xml, registration) {
            Ok(sp) => Some(sp),
            Err(e) => {
                self.problem(
                    metadata,
                    format!("service {name:?}: {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn oidc(&mut self, raw: OidcSection, clients: Vec<castellan_oidc::OidcClient>) -> OidcSettings {
        let code_ttl = self.duration("oidc.code_ttl", &raw.code_ttl, Duration::from_secs(60));
        if let Some(v) = &raw.code_ttl {
            if code_ttl > Duration::from_secs(60) {
                self.problem(v, "oidc.code_ttl: at most 60s (codes are short-lived)");
            }
        }
        for c in &clients {
            for rs in &c.resource_servers {
                if !clients.iter().any(|o| &o.client_id == rs) {
                    self.warnings.push(format!(
                        "services: client {:?} names {rs:?} in resource_servers, and no client has that client_id",
                        c.client_id
                    ));
                }
            }
        }
        let pairwise = clients
            .iter()
            .any(|c| matches!(c.subject, castellan_oidc::Subject::Pairwise { .. }));
        let pairwise_salt = match &raw.pairwise_salt {
            Some(s) if s.get_ref().len() >= 16 => s.get_ref().clone(),
            Some(s) => {
                self.problem(s, "oidc.pairwise_salt: use at least 16 random characters");
                String::new()
            }
            None => {
                if pairwise {
                    self.problems.push(Problem {
                        line: None,
                        message: "a client uses subject = \"pairwise\": set oidc.pairwise_salt \
                                  (a secret shared by every node)"
                            .into(),
                    });
                }
                String::new()
            }
        };
        OidcSettings {
            clients,
            code_ttl,
            access_token_ttl: self.duration(
                "oidc.access_token_ttl",
                &raw.access_token_ttl,
                Duration::from_secs(300),
            ),
            id_token_ttl: self.duration(
                "oidc.id_token_ttl",
                &raw.id_token_ttl,
                Duration::from_secs(300),
            ),
            refresh_token_ttl: self.duration(
                "oidc.refresh_token_ttl",
                &raw.refresh_token_ttl,
                Duration::from_secs(8 * 3600),
            ),
            offline_token_ttl: self.duration(
                "oidc.offline_token_ttl",
                &raw.offline_token_ttl,
                Duration::from_secs(30 * 86_400),
            ),
            pairwise_salt,
        }
    }

    fn oidc_client(&mut self, entry: ServiceEntry) -> Option<castellan_oidc::OidcClient> {
        use castellan_oidc::{Algorithm, GrantTypes, Subject};
        let name = entry.name.get_ref().clone();
        let Some(client_id) = entry.client_id.as_ref().map(|c| c.get_ref().clone()) else {
            self.problem(
                &entry.name,
                format!("service {name:?}: client_id is required for protocol \"oidc\""),
            );
            return None;
        };
        let mut ok = true;
        if client_id.is_empty() || client_id.len() > 255 || client_id.contains(':') {
            self.problem(
                &entry.name,
                format!("service {name:?}: client_id must be 1 to 255 characters without ':'"),
            );
            ok = false;
        }
        if entry.service.is_some() || entry.proxy_callback.is_some() {
            self.problem(
                &entry.name,
                format!("service {name:?}: `service` and `proxy_callback` are for CAS services; an OIDC client has redirect_uris"),
            );
            ok = false;
        }
        if entry.redirect_uris.is_empty() {
            self.problem(
                &entry.name,
                format!("service {name:?}: redirect_uris needs at least one URI"),
            );
            ok = false;
        }
        for uri in entry
            .redirect_uris
            .iter()
            .chain(&entry.post_logout_redirect_uris)
            .chain(entry.backchannel_logout_uri.as_ref().map(|u| u.get_ref()))
        {
            match Url::parse(uri) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.fragment().is_none() => {
                    if u.scheme() == "http"
                        && !matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
                    {
                        self.warnings.push(format!(
                            "service {name:?}: {uri} is plain http: codes and tokens travel unprotected"
                        ));
                    }
                }
                _ => {
                    self.problem(
                        &entry.name,
                        format!("service {name:?}: {uri:?} is not an absolute http(s) URI without a fragment"),
                    );
                    ok = false;
                }
            }
        }
        let secret = entry.client_secret.as_ref().map(|s| s.get_ref().clone());
        let confidential = secret.is_some();
        let grant_types = match &entry.grant_types {
            None => GrantTypes {
                authorization_code: true,
                refresh_token: true,
                client_credentials: confidential,
            },
            Some(list) => {
                let mut g = GrantTypes {
                    authorization_code: false,
                    refresh_token: false,
                    client_credentials: false,
                };
                for t in list.get_ref() {
                    match t.as_str() {
                        "authorization_code" => g.authorization_code = true,
                        "refresh_token" => g.refresh_token = true,
                        "client_credentials" if confidential => g.client_credentials = true,
                        "client_credentials" => {
                            self.problem(
                                list,
                                "services.grant_types: client_credentials needs a client_secret",
                            );
                            ok = false;
                        }
                        other => {
                            self.problem(list, format!("services.grant_types: {other:?} is not authorization_code, refresh_token or client_credentials"));
                            ok = false;
                        }
                    }
                }
                g
            }
        };
        let subject = match entry.subject.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "public")) => Subject::Public,
            Some((_, "pairwise")) => Subject::Pairwise {
                sector: entry
                    .redirect_uris
                    .first()
                    .and_then(|u| Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default(),
            },
            Some((s, other)) => {
                self.problem(
                    s,
                    format!("services.subject: {other:?} is not \"public\" or \"pairwise\""),
                );
                ok = false;
                Subject::Public
            }
        };
        let mut alg = |v: &Option<Spanned<String>>, key: &str, default| match v {
            None => default,
            Some(s) => Algorithm::parse(s.get_ref()).unwrap_or_else(|| {
                self.problem(
                    s,
                    format!("services.{key}: {:?} is not RS256 or ES256", s.get_ref()),
                );
                ok = false;
                default
            }),
        };
        let id_token_alg = alg(
            &entry.id_token_signing_alg,
            "id_token_signing_alg",
            Algorithm::RS256,
        );
        let access_token_alg = alg(
            &entry.access_token_signing_alg,
            "access_token_signing_alg",
            Algorithm::ES256,
        );
        let scopes = if entry.scopes.is_empty() {
            vec!["openid".into(), "profile".into(), "email".into()]
        } else {
            entry.scopes
        };
        ok.then(|| castellan_oidc::OidcClient {
            name,
            client_id,
            secret,
            redirect_uris: entry.redirect_uris,
            post_logout_redirect_uris: entry.post_logout_redirect_uris,
            scopes,
            release: entry.release,
            backchannel_logout_uri: entry.backchannel_logout_uri.map(Spanned::into_inner),
            grant_types,
            subject,
            id_token_alg,
            access_token_alg,
            resource_servers: entry.resource_servers,
        })
    }

    fn users(&mut self, entries: Vec<UserEntry>, demo: bool) -> Vec<StaticUser> {
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for entry in entries {
            let name = entry.username.get_ref().clone();
            if name.is_empty() {
                self.problem(&entry.username, "users.username: must not be empty");
            }
            if !seen.insert(name.clone()) {
                self.problem(
                    &entry.username,
                    format!("users.username: {name:?} is defined twice"),
                );
            }
            let secret = match (&entry.password_hash, &entry.password) {
                (Some(h), None) => {
                    if !is_password_hash(h.get_ref()) {
                        self.problem(
                            h,
                            "users.password_hash: not a PHC string (use `castellan hash-password`)",
                        );
                    }
                    UserSecret::Hash(h.get_ref().clone())
                }
                (None, Some(p)) => {
                    if !demo {
                        self.warnings.push(format!(
                            "user {name:?} has a plain-text password; store an argon2id hash \
                             (castellan hash-password) in password_hash instead"
                        ));
                    }
                    UserSecret::Plain(p.get_ref().clone())
                }
                (Some(h), Some(_)) => {
                    self.problem(h, "users: give either password_hash or password, not both");
                    continue;
                }
                (None, None) => {
                    self.problem(
                        &entry.username,
                        "users: password_hash (or password) is required",
                    );
                    continue;
                }
            };
            let attributes: Attributes = entry
                .attributes
                .into_iter()
                .map(|(k, v)| {
                    let values = match v {
                        AttributeValue::One(s) => vec![s],
                        AttributeValue::Many(list) => list,
                    };
                    (k, values)
                })
                .collect();
            users.push(StaticUser {
                username: name,
                secret,
                attributes,
            });
        }
        users
    }

    fn services(
        &mut self,
        entries: Vec<ServiceEntry>,
        base: &Path,
    ) -> (
        Vec<RegisteredService>,
        Vec<castellan_oidc::OidcClient>,
        Vec<castellan_saml::ServiceProvider>,
    ) {
        let mut names = HashSet::new();
        let mut client_ids = HashSet::new();
        let mut entity_ids = HashSet::new();
        let mut services = Vec::new();
        let mut clients = Vec::new();
        let mut sps = Vec::new();
        for entry in entries {
            let name = entry.name.get_ref().clone();
            if !names.insert(name.clone()) {
                self.problem(
                    &entry.name,
                    format!("services.name: {name:?} is defined twice"),
                );
            }
            match entry.protocol.get_ref().as_str() {
                "cas" => {}
                "oidc" => {
                    let at = entry.name.clone();
                    if let Some(client) = self.oidc_client(entry) {
                        if !client_ids.insert(client.client_id.clone()) {
                            self.problem(
                                &at,
                                format!("services.client_id: {:?} is used twice", client.client_id),
                            );
                        }
                        clients.push(client);
                    }
                    continue;
                }
                "saml" => {
                    let at = entry.name.clone();
                    if let Some(sp) = self.saml_sp(entry, base) {
                        if !entity_ids.insert(sp.entity_id.clone()) {
                            self.problem(
                                &at,
                                format!(
                                    "services.metadata: entityID {:?} is registered twice",
                                    sp.entity_id
                                ),
                            );
                        }
                        sps.push(sp);
                    }
                    continue;
                }
                other => {
                    self.problem(
                        &entry.protocol,
                        format!(
                            "services.protocol: {other:?} is not \"cas\", \"oidc\" or \"saml\""
                        ),
                    );
                    continue;
                }
            }
            let Some(pattern) = &entry.service else {
                self.problem(
                    &entry.name,
                    format!("service {name:?}: `service` (a regex) is required"),
                );
                continue;
            };
            let mut ok = self.regex("services.service", pattern);
            if let Some(cb) = &entry.proxy_callback {
                ok &= self.regex("services.proxy_callback", cb);
            }
            let logout = match entry.logout.as_ref().map(|l| (l, l.get_ref().as_str())) {
                None | Some((_, "none")) => LogoutMode::None,
                Some((_, "back-channel")) => LogoutMode::BackChannel,
                Some((l, other)) => {
                    self.problem(
                        l,
                        format!("services.logout: {other:?} is not \"back-channel\" or \"none\""),
                    );
                    LogoutMode::None
                }
            };
            if !ok {
                continue;
            }
            match RegisteredService::new(
                name,
                pattern.get_ref(),
                entry.release,
                entry.proxy_callback.as_ref().map(|c| c.get_ref().as_str()),
                logout,
            ) {
                Ok(s) => services.push(s),
                Err(e) => self.problem(pattern, format!("services.service: {e}")),
            }
        }
        (services, clients, sps)
    }
}

/// For `castellan hash-password`.
pub fn hash(password: &str) -> Result<String, String> {
    hash_password(password).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_a_demo() {
        let s = embedded_defaults().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.prefix, "/cas");
        assert!(s.services.is_empty());
        assert_eq!(s.users[0].username, "casuser");
        assert!(s.demo);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "s", "10x", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
            Path::new("."),
            false,
        )
        .err()
        .unwrap();
        assert_eq!(err[0].line, Some(3));
        assert!(err[0].message.contains("listen_port"), "{}", err[0].message);
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_line() {
        let text = r#"
[tickets]
service_ticket_ttl = "ten seconds"

[[services]]
name = "a"
protocol = "cas"
service = '^https://(unclosed$'

[[services]]
name = "b"
protocol = "cas"
service = '^https://b/.*$'
logout = "front-channel"

[[users]]
username = "x"
password_hash = "plain"
"#;
        let problems = parse(text, Path::new("."), false).err().unwrap();
        let lines: Vec<_> = problems.iter().map(|p| p.line.unwrap()).collect();
        assert_eq!(lines, vec![3, 18, 8, 14], "{problems:?}");
    }

    #[test]
    fn a_full_cas_configuration() {
        let text = r#"
[server]
listen = "127.0.0.1:9000"
public_url = "https://sso.example.org/cas"
data_dir = "state"

[tickets]
service_ticket_ttl = "5s"
sso_session_ttl = "8h"
sso_idle_ttl = "2h"

[throttle]
failures_per_user = 3

[[users]]
username = "casuser"
password = "Mellon"
attributes = { mail = "casuser@example.org", memberOf = ["staff", "faculty"] }

[[services]]
name = "portal"
protocol = "cas"
service = '^https://portal\.example\.org(/.*)?$'
release = ["mail"]
proxy_callback = '^https://portal\.example\.org/pgt$'
logout = "back-channel"

[[services]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
redirect_uris = ["https://wiki.example.org/callback"]
"#;
        let s = parse(text, Path::new("/etc/castellan"), false).unwrap();
        assert!(s.secure_cookies());
        assert_eq!(s.data_dir, PathBuf::from("/etc/castellan/state"));
        assert_eq!(s.tickets.service_ticket_ttl, Duration::from_secs(5));
        assert_eq!(s.tickets.proxy_ticket_ttl, Duration::from_secs(5));
        assert_eq!(s.throttle.failures_per_user, 3);
        assert_eq!(s.services.len(), 1);
        assert_eq!(s.services[0].logout, LogoutMode::BackChannel);
        assert_eq!(s.users[0].attributes["memberOf"], vec!["staff", "faculty"]);
        assert!(s.warnings.iter().any(|w| w.contains("plain-text")));
        assert_eq!(s.oidc.clients.len(), 1);
        let wiki = &s.oidc.clients[0];
        assert!(wiki.is_public());
        assert!(!wiki.grant_types.client_credentials);
        assert_eq!(wiki.scopes, vec!["openid", "profile", "email"]);
    }

    #[test]
    fn resource_servers_must_be_clients() {
        let text = r#"
[[services]]
name = "a"
protocol = "oidc"
client_id = "a"
client_secret = "a-secret-0123456789"
redirect_uris = ["https://a.example/cb"]
resource_servers = ["api", "b"]

[[services]]
name = "b"
protocol = "oidc"
client_id = "b"
client_secret = "b-secret-0123456789"
redirect_uris = ["https://b.example/cb"]
"#;
        let settings = parse(text, Path::new("."), false).unwrap();
        let named: Vec<_> = settings
            .warnings
            .iter()
            .filter(|w| w.contains("resource_servers"))
            .collect();
        assert_eq!(named.len(), 1, "{:?}", settings.warnings);
        assert!(named[0].contains("\"api\""), "{}", named[0]);
        let a = settings.oidc.clients.iter().find(|c| c.client_id == "a");
        assert_eq!(a.unwrap().resource_servers, ["api", "b"]);
    }

    #[test]
    fn oidc_clients_are_checked() {
        let text = r#"
[[services]]
name = "a"
protocol = "oidc"
client_id = "a"
redirect_uris = ["https://a.example/cb"]

[[services]]
name = "b"
protocol = "oidc"
client_id = "a"
redirect_uris = ["https://b.example/cb"]
subject = "pairwise"

[[services]]
name = "d"
protocol = "oidc"
client_id = "d"
redirect_uris = ["/relative"]
grant_types = ["client_credentials"]

[[services]]
name = "c"
protocol = "oidc"
redirect_uris = ["https://c.example/cb"]

[oidc]
code_ttl = "5m"
"#;
        let problems = parse(text, Path::new("."), false).err().unwrap();
        let all = problems
            .iter()
            .map(|p| format!("{:?}: {}", p.line, p.message))
            .collect::<Vec<_>>()
            .join("\n");
        for expected in [
            "\"/relative\" is not an absolute",
            "client_credentials needs a client_secret",
            "\"a\" is used twice",
            "client_id is required",
            "at most 60s",
            "oidc.pairwise_salt",
        ] {
            assert!(all.contains(expected), "{expected} missing from:\n{all}");
        }
    }

    #[test]
    fn the_example_configuration_in_deploy_is_valid() {
        let text = include_str!("../../deploy/castellan.toml");
        let s = parse(text, Path::new("/etc/castellan"), false).unwrap();
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.oidc.clients.len(), 1);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let ok = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1\"]\n",
            Path::new("."),
            false,
        )
        .unwrap();
        assert_eq!(ok.trusted_proxies.len(), 3);
        assert!(ok.trusted_proxies[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
        let bad = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\",\n  \"proxy.example\"]\n",
            Path::new("."),
            false,
        )
        .err()
        .unwrap();
        assert_eq!(bad[0].line, Some(3));
    }

    #[test]
    fn connection_limits_and_log_format_have_defaults_and_are_checked() {
        let d = parse("", Path::new("."), false).unwrap();
        assert_eq!(d.connections, ConnectionLimits::default());
        assert_eq!(d.connections.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.log_format, LogFormat::Text);
        let ok = parse(
            "[server]\nheader_read_timeout = \"2s\"\nidle_timeout = \"1m\"\n\
             max_connections = 100\nlog_format = \"json\"\n",
            Path::new("."),
            false,
        )
        .unwrap();
        assert_eq!(ok.connections.header_read_timeout, Duration::from_secs(2));
        assert_eq!(ok.connections.idle_timeout, Duration::from_secs(60));
        assert_eq!(ok.connections.max_connections, 100);
        assert_eq!(ok.log_format, LogFormat::Json);
        let bad = parse(
            "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = \"soon\"\n\
             max_connections = 0\nlog_format = \"xml\"\n",
            Path::new("."),
            false,
        )
        .err()
        .unwrap();
        let lines: Vec<_> = bad.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(4), Some(2), Some(3), Some(5)], "{bad:?}");
    }
}

#[cfg(test)]
mod upstream_tests {
    use super::*;

    const LOCAL: &str = r#"
[[users]]
username = "casuser"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
"#;

    fn upstream(name: &str, extra: &str) -> String {
        format!("[[upstreams]]\nname = \"{name}\"\nprotocol = \"cas\"\nurl = \"https://cas.example/cas\"\n{extra}\n")
    }

    #[test]
    fn the_default_principal_is_namespaced_and_warns_of_nothing() {
        let text = format!("{LOCAL}{}", upstream("campus", ""));
        let s = parse(&text, Path::new("."), false).unwrap();
        assert_eq!(s.upstreams[0].mapping.template(), "{upstream}:{id}");
        assert_eq!(s.upstreams[0].mapping.namespace(), "campus:");
        assert_eq!(s.upstreams[0].validate_path, None);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn templates_that_can_collide_are_warned_about() {
        let text = format!(
            "{LOCAL}{}{}{}{}",
            upstream("a", "principal = \"{id}\""),
            upstream("b", "principal = \"{mail}@b\""),
            upstream("c", "principal = \"cas{id}\""),
            upstream("d", "principal = \"ca{id}\""),
        );
        let s = parse(&text, Path::new("."), false).unwrap();
        let all = s.warnings.join("\n");
        assert!(
            all.contains("upstream \"a\": principal \"{id}\" has no literal prefix"),
            "{all}"
        );
        assert!(
            all.contains("upstream \"b\": principal \"{mail}@b\" has no literal prefix"),
            "{all}"
        );
        assert!(
            all.contains(
                "upstream \"c\": principal \"cas{id}\" can produce the local user \"casuser\""
            ),
            "{all}"
        );
        assert!(all.contains("upstreams \"c\" and \"d\""), "{all}");
        // Explicit templates keep working.
        assert_eq!(s.upstreams[3].mapping.template(), "ca{id}");
    }

    #[test]
    fn validate_path_is_a_path_for_cas_upstreams() {
        let ok = upstream("campus", "validate_path = \"/serviceValidate\"");
        let s = parse(&ok, Path::new("."), false).unwrap();
        assert_eq!(
            s.upstreams[0].validate_path.as_deref(),
            Some("/serviceValidate")
        );
        for bad in [
            "serviceValidate",
            "/x?format=JSON",
            "https://other/serviceValidate",
        ] {
            let text = upstream("campus", &format!("validate_path = \"{bad}\""));
            let problems = parse(&text, Path::new("."), false).err().unwrap();
            assert!(problems[0].message.contains("validate_path"), "{bad}");
        }
        let oidc =
            "[[upstreams]]\nname = \"p\"\nprotocol = \"oidc\"\nissuer = \"https://op.example\"\n\
                    client_id = \"c\"\nvalidate_path = \"/x\"\n";
        let problems = parse(oidc, Path::new("."), false).err().unwrap();
        assert!(problems[0].message.contains("CAS upstreams only"));
    }
}
