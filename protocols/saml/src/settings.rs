//! The SAML IdP's settings, as the configuration parser builds them.

use crate::ServiceProvider;
use std::path::PathBuf;
use std::time::Duration;

/// The SAML IdP's settings.
#[derive(Debug, Clone)]
pub struct SamlSettings {
    pub sps: Vec<ServiceProvider>,
    /// Default `{public_url}/idp`.
    pub entity_id: String,
    pub signing_key: Option<(PathBuf, PathBuf)>,
    pub sign_metadata: bool,
    pub clock_skew: Duration,
    pub request_max_age: Duration,
    pub assertion_ttl: Duration,
    pub persistent_id_secret: Option<String>,
}
