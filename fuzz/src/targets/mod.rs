//! The fuzz targets' checks, one module per target. Each `run` takes one
//! input and panics when a check fails; `fuzz_targets/NAME.rs` hands it
//! libFuzzer's inputs and `tests/corpus.rs` the committed ones
//! (`seeds/NAME/`, `regressions/NAME/`).

pub mod dpop_proof;
pub mod client_assertion;
pub mod oidc_request;
pub mod response_xml;
pub mod saml_request;
pub mod saml_validate_body;
pub mod service_url;

/// A target's check: one input, a panic when a check fails.
pub type Check = fn(&[u8]);

/// Every target: its name (= the directory names under `seeds/` and
/// `regressions/`, and the `[[bin]]` name) and its check.
pub const ALL: &[(&str, Check)] = &[
    ("saml_validate_body", saml_validate_body::run),
    ("service_url", service_url::run),
    ("response_xml", response_xml::run),
    ("oidc_request", oidc_request::run),
    ("saml_request", saml_request::run),
    ("dpop_proof", dpop_proof::run),
    ("client_assertion", client_assertion::run),
];
