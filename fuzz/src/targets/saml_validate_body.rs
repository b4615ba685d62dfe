//! `/samlValidate`'s request body: arbitrary bytes into
//! `saml11::parse_request`, and the SOAP response rendered from whatever came
//! out of it (failure or request id) must be well-formed XML.

use crate::{assert_well_formed, expected_text, normalize_eol};
use castellan_cas::saml11::{parse_request, render, MAX_REQUEST_BYTES};
use castellan_cas::{CasError, CasErrorCode};

const NOW: u64 = 1_764_084_646_123;

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let parsed = parse_request(data);
    let (request_id, description) = match &parsed {
        Ok(req) => {
            assert!(
                !req.artifact.is_empty(),
                "Ok with an empty artifact for {data:?}"
            );
            assert_eq!(
                req.artifact.trim(),
                req.artifact,
                "artifact keeps surrounding whitespace"
            );
            if let Some(id) = &req.request_id {
                assert!(id.chars().count() <= 128, "RequestID longer than 128 chars");
            }
            assert!(data.len() <= MAX_REQUEST_BYTES);
            (
                req.request_id.clone(),
                format!("Ticket '{}' not recognized", req.artifact),
            )
        }
        // What `saml_validate` renders for a bad request: the error's text,
        // which for Malformed carries quick-xml's message (and input bytes).
        Err(e) => (None, e.to_string()),
    };

    // As `saml_validate` renders it: TARGET is the raw query parameter.
    let text = String::from_utf8_lossy(data);
    let outcome = Err(CasError::new(
        CasErrorCode::InvalidRequest,
        description.clone(),
    ));
    let doc = render(
        &outcome,
        request_id.as_deref(),
        &text,
        "https://cas.example.org/cas",
        NOW,
    );
    let els = assert_well_formed(&doc, "SAML failure response");
    let response = els
        .iter()
        .find(|e| e.name == "saml1p:Response")
        .expect("a saml1p:Response element");
    let attr = |k: &str| {
        response
            .attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    // Attribute values: a conforming parser also normalizes \t \n to spaces;
    // quick-xml does not, so compare modulo end-of-line only.
    assert_eq!(
        attr("Recipient").map(|v| normalize_eol(&v)),
        Some(expected_text(&text)),
        "Recipient did not round-trip"
    );
    assert_eq!(
        attr("InResponseTo").map(|v| normalize_eol(&v)),
        request_id.as_deref().map(expected_text),
        "InResponseTo did not round-trip"
    );
    let message = els
        .iter()
        .find(|e| e.name == "saml1p:StatusMessage")
        .expect("a StatusMessage");
    assert_eq!(
        normalize_eol(&message.text),
        expected_text(&format!("INVALID_REQUEST: {description}")),
        "StatusMessage did not round-trip"
    );
    assert!(
        !els.iter().any(|e| e.name.ends_with("Assertion")),
        "a failure response carries an assertion"
    );

    // The same arbitrary text as the description (any engine message).
    let outcome = Err(CasError::new(
        CasErrorCode::InvalidTicket,
        text.clone().into_owned(),
    ));
    let doc = render(&outcome, Some(&text), &text, &text, NOW);
    assert_well_formed(&doc, "SAML failure response (arbitrary text everywhere)");
}
