//! What a SAML Response costs: `cargo bench -p castellan-saml --bench response`.

use castellan_core::Attributes;
use castellan_saml::response::{success, ResponseContext, Subject};
use castellan_saml::sp::{AttributeNameFormat, Registration};
use castellan_saml::{nameid, IdpCredentials, ServiceProvider, SignMode};
use criterion::{criterion_group, criterion_main, Criterion};

const METADATA: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example.org/shibboleth">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/Shibboleth.sso/SAML2/POST" index="1"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("castellan-saml-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = IdpCredentials::load_or_generate(&dir, None, "idp").unwrap();
    let mut attributes = Attributes::new();
    attributes.insert("mail".into(), vec!["bench@example.org".into()]);
    attributes.insert("cn".into(), vec!["Bench User".into()]);
    attributes.insert("memberOf".into(), vec!["staff".into(), "faculty".into()]);
    // The library alone: one RSA-2048 SHA-256 signature of SignedInfo's size
    // with the loaded key, the floor of an XML signature.
    let signed_info = vec![b'a'; 900];
    c.bench_function("library signature RS256 (OpenSSL)", |b| {
        b.iter(|| creds.sign_query(&signed_info).unwrap())
    });
    // The difference between the two is the cost of one XML signature.
    for (label, sign) in [
        ("assertion signed", SignMode::Assertion),
        ("assertion and response signed", SignMode::Both),
    ] {
        let sp = ServiceProvider::from_metadata(
            METADATA,
            Registration {
                name: "sp".into(),
                release: vec![],
                name_id_format: None,
                sign,
                encrypt: false,
                attribute_format: AttributeNameFormat::Uri,
                require_signed_requests: false,
                mfa: None,
                consent: None,
            },
        )
        .unwrap();
        c.bench_function(&format!("SAML response, {label}"), |b| {
            b.iter(|| {
                let ctx = ResponseContext {
                    idp_entity_id: "https://idp.example.org/cas/idp",
                    sp: &sp,
                    acs_url: "https://sp.example.org/Shibboleth.sso/SAML2/POST",
                    in_response_to: Some("_req"),
                    now_ms: 1_764_084_646_000,
                    skew_ms: 60_000,
                    ttl_ms: 300_000,
                };
                let subject = Subject {
                    name_id: "bench",
                    name_id_format: nameid::UNSPECIFIED,
                    attributes: &attributes,
                    authn_instant: 1_764_084_600_000,
                    session_index: "S",
                    authn_context_class:
                        castellan_saml::authn_context::PASSWORD_PROTECTED_TRANSPORT,
                };
                success(&ctx, &subject, &creds).unwrap()
            })
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
