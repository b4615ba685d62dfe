//! The in-process client seam: how a protocol module (OIDC, SAML) is a
//! client of the core like an outside CAS client. It keeps a pending
//! request, sends the browser to `/login` with a callback service URL of
//! its own, and validates the ticket that comes back to that URL.
//!
//! The callback URL is `{prefix}{party}&req={request}`, where `prefix` is
//! the module's callback endpoint with its party parameter
//! (`https://idp.example.org/oidc/callback?client_id=`), `party` the
//! form-encoded client id or SP name, and `request` the pending request's
//! id. [`CallbackUrls`] builds, matches and parses it in one place.
//!
//! A request that asks for a second factor (OIDC `acr_values`, a SAML
//! `RequestedAuthnContext`) returns to `{prefix}{party}&mfa=required&req=…`
//! instead, registered apart with `mfa = "required"`: the core then
//! enforces the ask like a service's own policy, and the browser cannot
//! drop it (the ticket is bound to the URL the module validates with).

use crate::error::StoreError;
use crate::methods::MfaPolicy;
use crate::principal::Attributes;
use crate::service::{LogoutMode, RegisteredService};
use crate::store::TicketStore;
use async_trait::async_trait;
use std::time::Duration;

/// Builds, recognises and parses one module's callback service URLs.
#[derive(Debug, Clone)]
pub struct CallbackUrls {
    prefix: String,
}

/// The longest pending-request id a callback URL may carry.
pub const MAX_REQUEST_ID: usize = 64;

const ASKS_MFA: &str = "&mfa=required";

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl CallbackUrls {
    /// `prefix` ends with the party parameter's `=`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The service URL a login for `party`'s pending `request` returns to.
    pub fn build(&self, party: &str, request: &str) -> String {
        format!("{}{}&req={request}", self.prefix, form_encode(party))
    }

    /// As [`CallbackUrls::build`], for a request that asks for a second
    /// factor whatever the party's own policy.
    pub fn build_asking_mfa(&self, party: &str, request: &str) -> String {
        format!(
            "{}{}{ASKS_MFA}&req={request}",
            self.prefix,
            form_encode(party)
        )
    }

    /// Whether a service URL is one of this module's callbacks.
    pub fn owns(&self, service: &str) -> bool {
        service.starts_with(&self.prefix)
    }

    /// The party and request id of a callback service URL.
    pub fn parse<'a>(&self, service: &'a str) -> Option<(String, &'a str)> {
        let rest = service.strip_prefix(&self.prefix)?;
        let (party, request) = rest.split_once("&req=")?;
        let party = party.strip_suffix(ASKS_MFA).unwrap_or(party);
        let party = form_urlencoded::parse(format!("p={party}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        let well_formed = !request.is_empty()
            && request.len() <= MAX_REQUEST_ID
            && request
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        well_formed.then_some((party, request))
    }

    /// The implicit registration of `party`'s callbacks: internal (no
    /// outside CAS client may validate its tickets), releasing what the
    /// party's configuration releases.
    /// Two of them: the party's callbacks with its own `mfa` policy, and
    /// those of its requests that ask for a second factor (required).
    pub fn registration(
        &self,
        name: &str,
        party: &str,
        release: Vec<String>,
        logout: LogoutMode,
        mfa: Option<MfaPolicy>,
        consent: Option<Duration>,
    ) -> Result<[RegisteredService; 2], regex::Error> {
        let register = |infix: &str, mfa: Option<MfaPolicy>| {
            let pattern = format!(
                "{}[A-Za-z0-9-]+",
                regex::escape(&format!(
                    "{}{}{infix}&req=",
                    self.prefix,
                    form_encode(party)
                ))
            );
            RegisteredService::new(name.to_owned(), &pattern, release.clone(), None, logout)
                .map(|s| s.internal().with_mfa(mfa).with_consent(consent))
        };
        Ok([
            register("", mfa)?,
            register(ASKS_MFA, Some(MfaPolicy::Required))?,
        ])
    }
}

/// Why a login came back to a callback without a ticket, when consent
/// is the reason: the URL carries `&consent=declined` (the user said no)
/// or `&consent=required` (a passive login could not ask). Anyone can
/// add the marker by hand; it can only make that request fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentRefusal {
    Declined,
    Required,
}

impl ConsentRefusal {
    pub const PARAMETER: &'static str = "consent";

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "declined" => Some(Self::Declined),
            "required" => Some(Self::Required),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::Required => "required",
        }
    }

    /// The callback URL `service` with the marker.
    pub fn on(self, service: &str) -> String {
        format!("{service}&{}={}", Self::PARAMETER, self.as_str())
    }
}

/// What a login for one of a module's callbacks releases to its party,
/// as the consent page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Names and values as the party will receive them.
    pub attributes: Attributes,
    /// The request asks the user's consent again, whatever was decided
    /// before (OIDC `prompt=consent`).
    pub ask_again: bool,
}

/// A protocol module that signs users in through the core.
#[async_trait]
pub trait InProcessClient: Send + Sync + 'static {
    fn callbacks(&self) -> &CallbackUrls;

    /// The protocol it speaks (`oidc`, `saml`), for the audit log.
    fn protocol(&self) -> &'static str;

    /// How the login page names the party of one of its callback URLs.
    fn display_name(&self, party: &str) -> Option<String>;

    /// What the pending `request` of `party` will release of `allowed`
    /// (the attributes its registration releases) for user `principal_id`:
    /// by default all of them. A module that narrows them further (OIDC
    /// scopes) says so here, so that the user consents to what is sent.
    async fn release(
        &self,
        _store: &dyn TicketStore,
        _party: &str,
        _request: &str,
        _principal_id: &str,
        allowed: Attributes,
    ) -> Result<Release, StoreError> {
        Ok(Release {
            attributes: allowed,
            ask_again: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "https://idp.example.org/oidc/callback?client_id=";

    #[test]
    fn a_callback_url_parses_back_into_its_party_and_request() {
        let urls = CallbackUrls::new(PREFIX);
        let url = urls.build("my app&co", "REQ-123");
        assert_eq!(
            url,
            format!("{PREFIX}my+app%26co&req=REQ-123"),
            "the party is form-encoded"
        );
        assert!(urls.owns(&url));
        assert_eq!(urls.parse(&url), Some(("my app&co".to_owned(), "REQ-123")));
        assert_eq!(urls.parse("https://elsewhere/?client_id=x&req=1"), None);
        assert_eq!(urls.parse(&format!("{PREFIX}x&req=a/b")), None);
        assert_eq!(urls.parse(&format!("{PREFIX}x&req=")), None);
    }

    #[test]
    fn the_registration_matches_only_that_party_s_callbacks() {
        let urls = CallbackUrls::new(PREFIX);
        let [reg, asking] = urls
            .registration("App", "app.1", vec![], LogoutMode::None, None, None)
            .unwrap();
        assert_eq!(reg.mfa, None);
        assert_eq!(asking.mfa, Some(MfaPolicy::Required));
        let asked = urls.build_asking_mfa("app.1", "R-1");
        assert!(asking.pattern.is_match(&asked) && !reg.pattern.is_match(&asked));
        assert!(!asking.pattern.is_match(&urls.build("app.1", "R-1")));
        assert_eq!(urls.parse(&asked), Some(("app.1".to_owned(), "R-1")));
        assert!(reg.internal);
        assert!(reg.pattern.is_match(&urls.build("app.1", "R-1")));
        assert!(
            !reg.pattern.is_match(&urls.build("app21", "R-1")),
            "the dot is literal"
        );
        assert!(!reg.pattern.is_match(&urls.build("app.1x", "R-1")));
        assert!(!reg
            .pattern
            .is_match(&format!("{}&x=1", urls.build("app.1", "R-1"))));
    }
}
