//! The configuration file (TOML), parsed once into typed structs, then
//! validated into the runtime [`Settings`]. `check-config` runs exactly this.

use castellan_core::{
    authn::{hash_password, is_password_hash},
    Attributes, RegisteredService, StaticUser, ThrottlePolicy, TicketPolicy, UserSecret,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
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
    #[serde(default)]
    pub mfa: MfaSection,
    #[serde(default)]
    pub audit: AuditSection,
    /// `[themes.NAME]`: looks that services name with `theme = "NAME"`.
    #[serde(default)]
    pub themes: BTreeMap<String, ThemeEntry>,
}

/// `[audit]`: where the audit log goes (none when absent).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A file (relative to the configuration file), or "-" for stderr.
    pub path: Option<Spanned<String>>,
}

/// A `[themes.NAME]` table, or the same keys on a `[[services]]` entry.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThemeEntry {
    pub display_name: Option<Spanned<String>>,
    pub logo: Option<Spanned<String>>,
    pub accent_color: Option<Spanned<String>>,
}

impl ThemeEntry {
    fn span(&self, key: &str) -> Option<Range<usize>> {
        match key {
            "display_name" => self.display_name.as_ref().map(Spanned::span),
            "logo" => self.logo.as_ref().map(Spanned::span),
            _ => self.accent_color.as_ref().map(Spanned::span),
        }
    }

    fn input(&self, base: &Path) -> castellan_i18n::theme::ThemeInput {
        castellan_i18n::theme::ThemeInput {
            display_name: self.display_name.as_ref().map(|v| v.get_ref().clone()),
            logo: self.logo.as_ref().map(|v| base.join(v.get_ref())),
            accent_color: self.accent_color.as_ref().map(|v| v.get_ref().clone()),
        }
    }
}

/// `[mfa]`: where second factors are kept.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MfaSection {
    pub store: Option<Spanned<String>>,
    pub postgres_url: Option<Spanned<String>>,
    pub issuer: Option<Spanned<String>>,
    /// Not in the contract's example: the key that encrypts TOTP secrets
    /// (32 bytes, base64); by default generated in data_dir.
    pub encryption_key: Option<Spanned<String>>,
}

/// Where second factors are kept, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaStoreKind {
    /// A file in data_dir: one node.
    Sqlite,
    Postgres {
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaConfig {
    pub store: MfaStoreKind,
    pub issuer: String,
    pub key: Option<[u8; 32]>,
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

pub use castellan_saml::SamlSettings;

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
    /// DPoP server nonces (RFC 9449 §8) are required, derived from it.
    pub dpop_nonce_secret: Option<Spanned<String>>,
    /// RFC 8628: how long a device code waits for its user ("10m").
    pub device_code_ttl: Option<Spanned<String>>,
}

/// The OIDC provider's settings.
pub use castellan_oidc::OidcSettings;

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
pub use castellan_logging::LogFormat;

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

/// A `[[services]]` entry: the keys of every protocol, each with its place
/// in the file. Which keys a protocol takes, and what their values may be,
/// is its own crate's to say (`castellan_cas::config`,
/// `castellan_oidc::config`, `castellan_saml::config`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub name: Spanned<String>,
    pub protocol: Spanned<String>,
    // CAS services
    pub service: Option<Spanned<String>>,
    pub release: Option<Spanned<Vec<String>>>,
    pub proxy_callback: Option<Spanned<String>>,
    pub logout: Option<Spanned<String>>,
    /// Any protocol: "required" or "optional" (a second factor).
    pub mfa: Option<Spanned<String>>,
    /// Any protocol: ask the user's consent before releasing attributes.
    pub consent: Option<Spanned<bool>>,
    /// Any protocol: how long a consent decision lives ("90d").
    pub consent_ttl: Option<Spanned<String>>,
    // OAuth2 / OIDC clients
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    pub redirect_uris: Option<Spanned<Vec<String>>>,
    pub post_logout_redirect_uris: Option<Spanned<Vec<String>>>,
    pub scopes: Option<Spanned<Vec<String>>>,
    pub backchannel_logout_uri: Option<Spanned<String>>,
    pub grant_types: Option<Spanned<Vec<String>>>,
    pub subject: Option<Spanned<String>>,
    pub id_token_signing_alg: Option<Spanned<String>>,
    pub access_token_signing_alg: Option<Spanned<String>>,
    pub resource_servers: Option<Spanned<Vec<String>>>,
    pub dpop_bound_access_tokens: Option<Spanned<bool>>,
    pub token_exchange_from: Option<Spanned<Vec<String>>>,
    pub token_endpoint_auth_method: Option<Spanned<String>>,
    /// An inline JWK Set (JSON text).
    pub jwks: Option<Spanned<String>>,
    pub jwks_uri: Option<Spanned<String>>,
    pub require_pushed_authorization_requests: Option<Spanned<bool>>,
    pub allowed_origins: Option<Spanned<Vec<String>>>,
    pub id_token_on_refresh: Option<Spanned<bool>>,
    // Any protocol: the login page's name and look for the service.
    pub theme: Option<Spanned<String>>,
    pub display_name: Option<Spanned<String>>,
    pub logo: Option<Spanned<String>>,
    pub accent_color: Option<Spanned<String>>,
    // SAML2 service providers
    pub sign: Option<Spanned<String>>,
    pub encrypt_assertions: Option<Spanned<bool>>,
    pub attribute_name_format: Option<Spanned<String>>,
    pub require_signed_requests: Option<Spanned<bool>>,
    pub metadata: Option<Spanned<String>>,
    pub name_id_format: Option<Spanned<String>>,
}

/// The value of an optional key, without its place.
fn value<T>(v: Option<Spanned<T>>) -> Option<T> {
    v.map(Spanned::into_inner)
}

/// The value of an optional list, empty when absent.
fn list(v: Option<Spanned<Vec<String>>>) -> Vec<String> {
    value(v).unwrap_or_default()
}

/// Where each key written in a table is.
struct Written(Vec<(&'static str, Range<usize>)>);

impl Written {
    fn span(&self, key: &str) -> Option<Range<usize>> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, span)| span.clone())
    }

    fn keys(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| (*k).to_owned()).collect()
    }
}

/// Lists the keys of `$table` that are written, with their places.
macro_rules! written {
    ($table:expr; $($key:ident),* $(,)?) => {{
        let mut keys = Vec::new();
        $(
            if let Some(v) = &$table.$key {
                keys.push((stringify!($key), v.span()));
            }
        )*
        Written(keys)
    }};
}

impl ServiceEntry {
    fn written(&self) -> Written {
        let mut w = written!(self;
            service, release, proxy_callback, logout, client_id, client_secret,
            redirect_uris, post_logout_redirect_uris, scopes, backchannel_logout_uri,
            grant_types, subject, id_token_signing_alg, access_token_signing_alg,
            resource_servers, sign, encrypt_assertions, attribute_name_format,
            require_signed_requests, metadata, name_id_format, mfa,
            dpop_bound_access_tokens, token_exchange_from,
            token_endpoint_auth_method, jwks, jwks_uri, require_pushed_authorization_requests,
            allowed_origins, id_token_on_refresh,
        );
        w.0.insert(0, ("protocol", self.protocol.span()));
        w.0.insert(0, ("name", self.name.span()));
        w
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Count the upstream's second factor (OIDC amr/acr, SAML
    /// AuthnContextClassRef) as this login's.
    #[serde(default)]
    pub trust_mfa: bool,
}

pub use castellan_delegation::config::UpstreamSettings;

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
    pub mfa: MfaConfig,
    /// `[audit] path`: where the audit log goes, if anywhere.
    pub audit: Option<castellan_audit::Target>,
    /// By service name: its display name, logo and accent colour (a
    /// `[themes]` table under the service's own keys); services without
    /// any are absent.
    pub themes: std::collections::HashMap<String, castellan_i18n::theme::Theme>,
    /// Whether the demo defaults are in use (no configuration file).
    #[allow(dead_code)]
    pub demo: bool,
    /// Things to tell the operator at start.
    pub warnings: Vec<String>,
}

impl Settings {
    /// The user's own page of second factors (`/mfa`), the service its
    /// logins return to.
    pub fn mfa_page_url(&self) -> String {
        format!("{}/mfa", self.public_url.as_str().trim_end_matches('/'))
    }

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

/// Where a running server of this file keeps its data and listens, read
/// leniently: `castellan reload` must reach the server even when the file
/// it just edited no longer validates (the server says why).
pub fn locate(path: &Path) -> Result<(PathBuf, SocketAddr), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read the configuration file: {e}",
            path.display()
        )
    })?;
    let server = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("server").and_then(|s| s.as_table()).cloned())
        .unwrap_or_default();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text_of = |key: &str| server.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let data_dir = base.join(text_of("data_dir").unwrap_or_else(|| "data".into()));
    let listen = match text_of("listen") {
        Some(l) => l
            .parse()
            .map_err(|_| format!("{}: server.listen {l:?} is not an address", path.display()))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    Ok((data_dir, listen))
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

/// How long a consent decision lives unless `consent_ttl` says.
pub const DEFAULT_CONSENT_TTL: Duration = Duration::from_secs(90 * 86_400);

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

    /// A problem at `span`, or of the whole file.
    fn problem_in(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: span.map(|s| line_of(self.text, s.start)),
            message: message.into(),
        });
    }

    /// A protocol crate's problems with a table: each at the key it names
    /// when written, else at `fallback`.
    fn report<E: KeyedError>(
        &mut self,
        errors: &[E],
        written: &Written,
        fallback: Option<Range<usize>>,
    ) {
        for e in errors {
            let span = e
                .key()
                .and_then(|k| written.span(k))
                .or_else(|| fallback.clone());
            self.problem_in(span, e.to_string());
        }
    }

    fn duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        self.optional_duration(key, value).unwrap_or(default)
    }

    /// `None` when absent, or wrong (a problem then).
    fn optional_duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
    ) -> Option<Duration> {
        let v = value.as_ref()?;
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.problem(v, format!("{key}: must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v, format!("{key}: {e}"));
                None
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
        let themes = self.themes(&raw.themes, &raw.services, base);
        let (services, clients, sps) = self.services(raw.services, base);
        let oidc = self.oidc(raw.oidc, clients);
        let saml = self.saml(raw.saml, sps, &public_url, base);
        let local_users: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
        let upstreams = self.upstreams(raw.upstreams, base, &local_users);
        let authenticators = self.authenticators(&raw.authenticators, base);
        let mfa = self.mfa(&raw.mfa);
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
        if demo {
            self.warnings.push(
                "no configuration file: running the demo defaults with user casuser/Mellon; \
                 no service is registered, so every service is refused"
                    .into(),
            );
        }
        let audit = raw.audit.path.as_ref().and_then(|p| {
            if p.get_ref().trim().is_empty() {
                self.problem(p, "audit.path: expected a file name, or \"-\" for stderr");
                return None;
            }
            Some(castellan_audit::Target::from_config(p.get_ref(), base))
        });
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
            mfa,
            audit,
            themes,
            demo,
            warnings: Vec::new(),
        }
    }

    /// `[themes.NAME]` and each service's `theme` and own keys: the look
    /// of every service that has one, each problem at its key's line.
    fn themes(
        &mut self,
        tables: &BTreeMap<String, ThemeEntry>,
        services: &[ServiceEntry],
        base: &Path,
    ) -> std::collections::HashMap<String, castellan_i18n::theme::Theme> {
        use castellan_i18n::theme::Theme;
        let mut named = std::collections::HashMap::new();
        for (name, table) in tables {
            match Theme::load(&table.input(base)) {
                Ok(theme) => {
                    named.insert(name.clone(), theme);
                }
                Err(errors) => {
                    for e in errors {
                        self.problem_in(table.span(e.key()), format!("themes.{name}.{e}"));
                    }
                }
            }
        }
        let mut looks = std::collections::HashMap::new();
        for entry in services {
            let service = entry.name.get_ref();
            let base_theme = match &entry.theme {
                None => Theme::default(),
                Some(t) => match named.get(t.get_ref()) {
                    Some(theme) => theme.clone(),
                    None => {
                        let known = tables.contains_key(t.get_ref());
                        if !known {
                            self.problem(
                                t,
                                format!(
                                    "service {service:?}: theme = {:?} names no [themes] table",
                                    t.get_ref()
                                ),
                            );
                        }
                        continue;
                    }
                },
            };
            let own = ThemeEntry {
                display_name: entry.display_name.clone(),
                logo: entry.logo.clone(),
                accent_color: entry.accent_color.clone(),
            };
            match Theme::load(&own.input(base)) {
                Ok(theme) => {
                    let theme = theme.over(&base_theme);
                    if !theme.is_empty() {
                        looks.insert(service.clone(), theme);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        self.problem_in(own.span(e.key()), format!("service {service:?}: {e}"));
                    }
                }
            }
        }
        looks
    }

    /// `[mfa]`.
    fn mfa(&mut self, section: &MfaSection) -> MfaConfig {
        let store = match section.store.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "sqlite")) => MfaStoreKind::Sqlite,
            Some((s, "postgres")) => match &section.postgres_url {
                Some(u) => MfaStoreKind::Postgres {
                    url: u.get_ref().clone(),
                },
                None => {
                    self.problem(s, "mfa.store = \"postgres\" needs mfa.postgres_url");
                    MfaStoreKind::Sqlite
                }
            },
            Some((s, other)) => {
                self.problem(
                    s,
                    format!("mfa.store: {other:?} is not \"sqlite\" or \"postgres\""),
                );
                MfaStoreKind::Sqlite
            }
        };
        let key = section.encryption_key.as_ref().and_then(|k| {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(k.get_ref().trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
            if decoded.is_none() {
                self.problem(k, "mfa.encryption_key: expected 32 bytes in base64");
            }
            decoded
        });
        let issuer = match &section.issuer {
            Some(i) if i.get_ref().is_empty() || i.get_ref().contains(':') => {
                self.problem(i, "mfa.issuer: must be non-empty, without ':'");
                "Castellan".to_owned()
            }
            Some(i) => i.get_ref().clone(),
            None => "Castellan".to_owned(),
        };
        MfaConfig { store, issuer, key }
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

    fn upstreams(
        &mut self,
        entries: Vec<UpstreamEntry>,
        base: &Path,
        local_users: &[&str],
    ) -> Vec<UpstreamSettings> {
        let mut upstreams = castellan_delegation::config::Upstreams::default();
        for entry in entries {
            let written = Written(vec![
                ("name", entry.name.span()),
                ("protocol", entry.protocol.span()),
            ]);
            let input = castellan_delegation::config::UpstreamInput {
                name: entry.name.into_inner(),
                protocol: entry.protocol.into_inner(),
                display_name: entry.display_name,
                url: entry.url,
                issuer: entry.issuer,
                client_id: entry.client_id,
                client_secret: entry.client_secret,
                scopes: entry.scopes,
                authorize_url: entry.authorize_url,
                token_url: entry.token_url,
                profile_url: entry.profile_url,
                id_attribute: entry.id_attribute,
                metadata: entry.metadata.map(|m| base.join(m)),
                auto_redirect: entry.auto_redirect,
                rename: entry.rename,
                keep: entry.keep,
                principal: entry.principal,
                validate_path: entry.validate_path,
                userinfo: entry.userinfo,
                attributes_from: entry.attributes_from,
                trust_mfa: entry.trust_mfa,
            };
            if let Err(errors) = upstreams.add(input) {
                let at_name = written.span("name");
                self.report(&errors, &written, at_name);
            }
        }
        match upstreams.finish(local_users, &mut self.warnings) {
            Ok(upstreams) => upstreams,
            Err(e) => {
                self.problem_in(None, e.to_string());
                Vec::new()
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
        let written = written!(raw;
            entity_id, signing_key, signing_certificate, clock_skew, request_max_age,
            assertion_ttl, persistent_id_secret,
        );
        // The durations' problems come after the section's own, as they did.
        let before = self.problems.len();
        let durations = [
            self.optional_duration("saml.clock_skew", &raw.clock_skew),
            self.optional_duration("saml.request_max_age", &raw.request_max_age),
            self.optional_duration("saml.assertion_ttl", &raw.assertion_ttl),
        ];
        let duration_problems: Vec<Problem> = self.problems.drain(before..).collect();
        let input = castellan_saml::config::IdentityProviderInput {
            entity_id: value(raw.entity_id),
            signing_key: raw.signing_key.map(|k| base.join(k.get_ref())),
            signing_certificate: raw.signing_certificate.map(|c| base.join(c.get_ref())),
            sign_metadata: raw.sign_metadata,
            clock_skew: durations[0],
            request_max_age: durations[1],
            assertion_ttl: durations[2],
            persistent_id_secret: value(raw.persistent_id_secret),
        };
        let idp = castellan_saml::config::identity_provider(input, public_url.as_str())
            .unwrap_or_else(|errors| {
                self.report(&errors, &written, None);
                castellan_saml::config::IdentityProviderConfig::defaults(public_url.as_str())
            });
        self.problems.extend(duration_problems);
        SamlSettings {
            sps,
            entity_id: idp.entity_id,
            signing_key: idp.signing_key,
            sign_metadata: idp.sign_metadata,
            clock_skew: idp.clock_skew,
            request_max_age: idp.request_max_age,
            assertion_ttl: idp.assertion_ttl,
            persistent_id_secret: idp.persistent_id_secret,
        }
    }

    fn oidc(&mut self, raw: OidcSection, clients: castellan_oidc::config::Clients) -> OidcSettings {
        let written = written!(raw;
            code_ttl, access_token_ttl, id_token_ttl, refresh_token_ttl, offline_token_ttl,
            pairwise_salt, dpop_nonce_secret, device_code_ttl,
        );
        let code_ttl = self.optional_duration("oidc.code_ttl", &raw.code_ttl);
        // The other durations' problems come after the section's own, as
        // they did.
        let before = self.problems.len();
        let durations = [
            self.optional_duration("oidc.access_token_ttl", &raw.access_token_ttl),
            self.optional_duration("oidc.id_token_ttl", &raw.id_token_ttl),
            self.optional_duration("oidc.refresh_token_ttl", &raw.refresh_token_ttl),
            self.optional_duration("oidc.offline_token_ttl", &raw.offline_token_ttl),
        ];
        let device_code_ttl = self.optional_duration("oidc.device_code_ttl", &raw.device_code_ttl);
        let duration_problems: Vec<Problem> = self.problems.drain(before..).collect();
        let input = castellan_oidc::config::ProviderInput {
            code_ttl,
            access_token_ttl: durations[0],
            id_token_ttl: durations[1],
            refresh_token_ttl: durations[2],
            offline_token_ttl: durations[3],
            pairwise_salt: value(raw.pairwise_salt),
            dpop_nonce_secret: value(raw.dpop_nonce_secret),
            device_code_ttl,
        };
        let provider =
            castellan_oidc::config::provider(input, clients.as_slice(), &mut self.warnings);
        let provider = provider.unwrap_or_else(|errors| {
            self.report(&errors, &written, None);
            castellan_oidc::config::ProviderConfig::default()
        });
        self.problems.extend(duration_problems);
        OidcSettings {
            clients: clients.into_vec(),
            code_ttl: provider.code_ttl,
            access_token_ttl: provider.access_token_ttl,
            id_token_ttl: provider.id_token_ttl,
            refresh_token_ttl: provider.refresh_token_ttl,
            offline_token_ttl: provider.offline_token_ttl,
            pairwise_salt: provider.pairwise_salt,
            dpop_nonce_secret: provider.dpop_nonce_secret,
            device_code_ttl: provider.device_code_ttl,
        }
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

    /// `consent` and `consent_ttl`, the same for every protocol: how long
    /// a decision lives, when consent is asked.
    fn consent(&mut self, entry: &ServiceEntry) -> Option<Duration> {
        let asked = entry.consent.as_ref().is_some_and(|c| *c.get_ref());
        let ttl = match &entry.consent_ttl {
            None => DEFAULT_CONSENT_TTL,
            Some(_) if !asked => {
                let at = entry.consent_ttl.as_ref()?;
                self.problem(at, "services.consent_ttl: only with consent = true");
                return None;
            }
            Some(text) => match parse_duration(text.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.problem(text, "services.consent_ttl: must be longer than zero");
                    return None;
                }
                Err(e) => {
                    self.problem(text, format!("services.consent_ttl: {e}"));
                    return None;
                }
            },
        };
        asked.then_some(ttl)
    }

    fn services(
        &mut self,
        entries: Vec<ServiceEntry>,
        base: &Path,
    ) -> (
        Vec<RegisteredService>,
        castellan_oidc::config::Clients,
        Vec<castellan_saml::ServiceProvider>,
    ) {
        let mut names = HashSet::new();
        let mut services = Vec::new();
        let mut clients = castellan_oidc::config::Clients::default();
        let mut sps = castellan_saml::config::ServiceProviders::default();
        for entry in entries {
            let name = entry.name.get_ref().clone();
            if !names.insert(name.clone()) {
                self.problem(
                    &entry.name,
                    format!("services.name: {name:?} is defined twice"),
                );
            }
            let written = entry.written();
            let at_name = Some(entry.name.span());
            let consent = self.consent(&entry);
            match entry.protocol.get_ref().as_str() {
                "cas" => {
                    let input = castellan_cas::config::ServiceInput {
                        name,
                        service: value(entry.service),
                        release: list(entry.release),
                        proxy_callback: value(entry.proxy_callback),
                        logout: value(entry.logout),
                        mfa: value(entry.mfa.clone()),
                        keys: written.keys(),
                    };
                    match castellan_cas::config::service(input) {
                        Ok(service) => services.push(service.with_consent(consent)),
                        Err(errors) => self.report(&errors, &written, at_name),
                    }
                }
                "oidc" => {
                    let input = castellan_oidc::config::ClientInput {
                        name,
                        client_id: value(entry.client_id),
                        client_secret: value(entry.client_secret),
                        redirect_uris: list(entry.redirect_uris),
                        post_logout_redirect_uris: list(entry.post_logout_redirect_uris),
                        scopes: list(entry.scopes),
                        release: list(entry.release),
                        backchannel_logout_uri: value(entry.backchannel_logout_uri),
                        grant_types: value(entry.grant_types),
                        subject: value(entry.subject),
                        id_token_signing_alg: value(entry.id_token_signing_alg),
                        access_token_signing_alg: value(entry.access_token_signing_alg),
                        resource_servers: list(entry.resource_servers),
                        mfa: value(entry.mfa.clone()),
                        consent,
                        dpop_bound_access_tokens: value(entry.dpop_bound_access_tokens)
                            .unwrap_or(false),
                        token_exchange_from: list(entry.token_exchange_from),
                        token_endpoint_auth_method: value(entry.token_endpoint_auth_method),
                        jwks: value(entry.jwks),
                        jwks_uri: value(entry.jwks_uri),
                        require_pushed_authorization_requests: value(
                            entry.require_pushed_authorization_requests,
                        ),
                        allowed_origins: list(entry.allowed_origins),
                        id_token_on_refresh: value(entry.id_token_on_refresh),
                        keys: written.keys(),
                    };
                    if let Err(errors) = clients.add(input, &mut self.warnings) {
                        self.report(&errors, &written, at_name);
                    }
                }
                "saml" => {
                    let input = castellan_saml::config::ServiceProviderInput {
                        name,
                        metadata: entry.metadata.map(|m| base.join(m.get_ref())),
                        release: list(entry.release),
                        name_id_format: value(entry.name_id_format),
                        sign: value(entry.sign),
                        encrypt_assertions: value(entry.encrypt_assertions),
                        attribute_name_format: value(entry.attribute_name_format),
                        require_signed_requests: value(entry.require_signed_requests),
                        mfa: value(entry.mfa.clone()),
                        consent,
                        keys: written.keys(),
                    };
                    if let Err(errors) = sps.add(input) {
                        self.report(&errors, &written, at_name);
                    }
                }
                other => {
                    self.problem(
                        &entry.protocol,
                        format!(
                            "services.protocol: {other:?} is not \"cas\", \"oidc\" or \"saml\""
                        ),
                    );
                }
            }
        }
        (services, clients, sps.into_vec())
    }
}

/// A protocol crate's configuration error: its message, and the key it is
/// about (`None`: the table as a whole).
trait KeyedError: std::fmt::Display {
    fn key(&self) -> Option<&str>;
}

macro_rules! keyed_errors {
    ($($error:ty),* $(,)?) => {
        $(
            impl KeyedError for $error {
                fn key(&self) -> Option<&str> {
                    <$error>::key(self)
                }
            }
        )*
    };
}

keyed_errors!(
    castellan_cas::config::ServiceConfigError,
    castellan_oidc::config::ClientConfigError,
    castellan_oidc::config::ProviderConfigError,
    castellan_saml::config::ServiceProviderConfigError,
    castellan_saml::config::IdentityProviderConfigError,
    castellan_delegation::config::UpstreamConfigError,
);

/// For `castellan hash-password`.
pub fn hash(password: &str) -> Result<String, String> {
    hash_password(password).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_core::LogoutMode;

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
    fn keys_of_another_protocol_are_errors_at_their_line() {
        let text = r#"
[[services]]
name = "portal"
protocol = "cas"
service = '^https://portal\.example/.*$'
client_secret = "s3cret"
redirect_uris = ["https://portal.example/cb"]

[[services]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
redirect_uris = ["https://wiki.example/cb"]
logout = "back-channel"
name_id_format = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"

[[services]]
name = "hr"
protocol = "saml"
proxy_callback = '^https://hr\.example/pgt$'
metadata = "hr.xml"
"#;
        let problems = parse(text, Path::new("/nonexistent"), false).err().unwrap();
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.line.unwrap(), p.message.as_str()))
            .collect();
        assert_eq!(
            found[..5],
            [
                (
                    6,
                    "service \"portal\": client_secret is not a key of a CAS service"
                ),
                (
                    7,
                    "service \"portal\": redirect_uris is not a key of a CAS service"
                ),
                (
                    14,
                    "service \"wiki\": logout is not a key of an OIDC client"
                ),
                (
                    15,
                    "service \"wiki\": name_id_format is not a key of an OIDC client"
                ),
                (
                    20,
                    "service \"hr\": proxy_callback is not a key of a SAML service provider"
                ),
            ],
            "{problems:?}"
        );
        // The SP's metadata is still read, and its absence told.
        assert_eq!(found.len(), 6, "{problems:?}");
        assert!(found[5]
            .1
            .starts_with("services.metadata: /nonexistent/hr.xml"));
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
    fn consent_is_read_on_every_protocol_with_its_ttl() {
        let text = r#"
[[services]]
name = "a"
protocol = "cas"
service = "^https://a/.*$"
consent = true

[[services]]
name = "b"
protocol = "oidc"
client_id = "b"
redirect_uris = ["https://b.example/cb"]
consent = true
consent_ttl = "2d"

[[services]]
name = "c"
protocol = "cas"
service = "^https://c/.*$"
"#;
        let ok = parse(text, Path::new("."), false).unwrap();
        assert_eq!(ok.services[0].consent, Some(DEFAULT_CONSENT_TTL));
        assert_eq!(ok.services[1].consent, None);
        let b = ok.oidc.clients.iter().find(|c| c.client_id == "b").unwrap();
        assert_eq!(b.consent, Some(Duration::from_secs(2 * 86_400)));

        let bad = r#"
[[services]]
name = "a"
protocol = "cas"
service = "^https://a/.*$"
consent = true
consent_ttl = "soon"

[[services]]
name = "b"
protocol = "cas"
service = "^https://b/.*$"
consent_ttl = "1d"
"#;
        let problems = parse(bad, Path::new("."), false).err().unwrap();
        let at = |needle: &str| {
            problems
                .iter()
                .find(|p| p.message.contains(needle))
                .and_then(|p| p.line)
        };
        assert_eq!(at("consent_ttl: bad duration"), Some(7));
        assert_eq!(at("only with consent = true"), Some(13));
    }

    #[test]
    fn mfa_is_checked_on_every_protocol_and_in_its_section() {
        let text = r#"
[mfa]
store = "postgres"
encryption_key = "c2hvcnQ="

[[services]]
name = "a"
protocol = "cas"
service = "^https://a/.*$"
mfa = "always"

[[services]]
name = "b"
protocol = "oidc"
client_id = "b"
redirect_uris = ["https://b.example/cb"]
mfa = "sometimes"
"#;
        let problems = parse(text, Path::new("."), false).err().unwrap();
        let at = |needle: &str| {
            problems
                .iter()
                .find(|p| p.message.contains(needle))
                .and_then(|p| p.line)
        };
        assert_eq!(at("needs mfa.postgres_url"), Some(3));
        assert_eq!(at("mfa.encryption_key"), Some(4));
        assert_eq!(
            at("\"always\" is not \"required\" or \"optional\""),
            Some(10)
        );
        assert_eq!(at("\"sometimes\" is not"), Some(17));

        let ok = parse(
            "[mfa]\nissuer = \"Campus\"\nencryption_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\n[[services]]\nname = \"a\"\nprotocol = \"cas\"\nservice = \"^https://a/.*$\"\nmfa = \"optional\"\n",
            Path::new("."),
            false,
        )
        .unwrap();
        assert_eq!(ok.mfa.issuer, "Campus");
        assert_eq!(ok.mfa.store, MfaStoreKind::Sqlite);
        assert_eq!(ok.mfa.key, Some([0; 32]));
        assert_eq!(
            ok.services[0].mfa,
            Some(castellan_core::MfaPolicy::Optional)
        );
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
    fn upstream_problems_are_at_the_name_or_the_protocol() {
        let text = "[[upstreams]]\nname = \"campus\"\nprotocol = \"cas\"\n\n\
                    [[upstreams]]\nname = \"x\"\nprotocol = \"ldap\"\n\n\
                    [[upstreams]]\nname = \"a\"\nprotocol = \"cas\"\nurl = \"https://a\"\nauto_redirect = true\n\n\
                    [[upstreams]]\nname = \"b\"\nprotocol = \"cas\"\nurl = \"https://b\"\nauto_redirect = true\n";
        let problems = parse(text, Path::new("."), false).err().unwrap();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(7), None], "{problems:?}");
        assert!(problems[0]
            .message
            .contains("url (the CAS server's base URL"));
    }

    #[test]
    fn audit_path_is_relative_to_the_file_and_checked() {
        use castellan_audit::Target;
        assert_eq!(parse("", Path::new("/etc/c"), false).unwrap().audit, None);
        let file = parse(
            "[audit]\npath = \"audit.jsonl\"\n",
            Path::new("/etc/c"),
            false,
        )
        .unwrap();
        assert_eq!(file.audit, Some(Target::File("/etc/c/audit.jsonl".into())));
        let stderr = parse("[audit]\npath = \"-\"\n", Path::new("/etc/c"), false).unwrap();
        assert_eq!(stderr.audit, Some(Target::Stderr));
        let unknown = parse("\n[audit]\nfile = \"a\"\n", Path::new("."), false)
            .err()
            .unwrap();
        assert_eq!(unknown[0].line, Some(3), "{unknown:?}");
        let empty = parse("[audit]\npath = \" \"\n", Path::new("."), false)
            .err()
            .unwrap();
        assert_eq!(empty[0].line, Some(2), "{empty:?}");
    }
}
