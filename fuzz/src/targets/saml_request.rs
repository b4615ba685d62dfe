//! What an SP sends the SAML IdP: AuthnRequests and LogoutRequests over
//! both bindings.

use castellan_saml::binding::{decode_post, decode_redirect, QuerySignature};
use castellan_saml::request::{
    check_authn_request, check_logout_request, error_target, Binding, Limits,
};
use castellan_saml::sp::{AttributeNameFormat, Registration};
use castellan_saml::{ServiceProvider, SignMode};
use std::sync::OnceLock;

const METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example/sp">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example/slo"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example/acs" index="1"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

fn sps() -> &'static [ServiceProvider] {
    static S: OnceLock<Vec<ServiceProvider>> = OnceLock::new();
    S.get_or_init(|| {
        vec![ServiceProvider::from_metadata(
            METADATA,
            Registration {
                name: "sp".into(),
                release: vec![],
                name_id_format: None,
                sign: SignMode::Assertion,
                encrypt: false,
                attribute_format: AttributeNameFormat::Uri,
                require_signed_requests: false,
                mfa: None,
                consent: None,
            },
        )
        .unwrap()]
    })
}

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let limits = Limits {
        now_ms: 1_764_084_646_000,
        skew_ms: 60_000,
        max_age_ms: 300_000,
        destinations: vec!["https://idp.example/idp/profile/SAML2/POST/SSO".into()],
    };
    let text = String::from_utf8_lossy(data);
    let _ = decode_redirect(&text);
    let _ = decode_post(&text);
    for binding in [Binding::Post, Binding::Redirect(QuerySignature::Absent)] {
        if let Ok(c) = check_authn_request(&text, binding, sps(), &limits) {
            // Only an ACS of the metadata, never one the request made up.
            assert_eq!(c.acs_url, "https://sp.example/acs");
            assert!(!text.contains("<!DOCTYPE"));
        }
    }
    if let Some((_, acs, _)) = error_target(&text, sps()) {
        assert_eq!(acs, "https://sp.example/acs");
    }
    let _ = check_logout_request(&text, Binding::Post, sps(), &limits);
}
