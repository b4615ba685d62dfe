//! Validation responses rendered from attacker-influenced values (user ids and
//! attribute values come from LDAP/JSON user stores, proxies and descriptions
//! from requests): CAS 2/3 XML, SAML 1.1, JSON and CAS 1 text.
//!
//! Input (lossy UTF-8) split on NUL: user, pgtIou (empty = none), proxies
//! (split on \x01), then one attribute per field as `name\x01value\x01value…`.
//! The whole text is also the failure description.

use crate::{assert_well_formed, children, expected_text, normalize_eol, position, Element};
use castellan_cas::response::{cas1, json, xml};
use castellan_cas::saml11::render;
use castellan_cas::xml::is_element_name;
use castellan_cas::{CasError, CasErrorCode};
use castellan_core::{Assertion, Attributes, Principal};
use std::sync::Arc;

const NOW: u64 = 1_764_084_646_123;

/// Every `<` in the document opens a tag: none comes from a value.
fn assert_no_stray_lt(doc: &str, els: &[Element]) {
    let tags = els.len() * 2 - count_empty(doc);
    assert_eq!(
        doc.matches('<').count(),
        tags,
        "a '<' that is not a tag in:\n{doc}"
    );
}

fn count_empty(doc: &str) -> usize {
    doc.matches("/>").count()
}

/// Every element so named, wherever it is.
fn texts<'a>(els: &'a [Element], name: &str) -> Vec<&'a str> {
    els.iter()
        .filter(|e| e.name == name)
        .map(|e| e.text.as_str())
        .collect()
}

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let user = fields.next().unwrap_or("").to_owned();
    let pgt_iou = fields.next().filter(|s| !s.is_empty()).map(str::to_owned);
    let proxies: Vec<String> = fields
        .next()
        .filter(|s| !s.is_empty())
        .map(|s| s.split('\u{1}').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut attributes = Attributes::new();
    for f in fields {
        let mut parts = f.split('\u{1}');
        let name = parts.next().unwrap_or("").to_owned();
        attributes.insert(name, parts.map(str::to_owned).collect());
    }
    let principal = Principal {
        id: user.clone(),
        attributes: attributes.clone(),
    };
    let a = Assertion {
        principal: Arc::new(principal),
        attributes: attributes.clone(),
        service: user.clone(),
        service_name: "app".into(),
        authenticated_at: NOW - 5_000,
        from_new_login: true,
        long_term: false,
        proxies: proxies.clone(),
        pgt_iou: pgt_iou.clone(),
        methods: castellan_core::AuthnMethods::of(castellan_core::AuthnMethod::Password)
            .with(castellan_core::AuthnMethod::Totp),
        session_id: "TGT-1-fuzz".into(),
    };
    let ok = Ok(a);

    // CAS 2.0 / 3.0 XML.
    for with_attributes in [false, true] {
        let doc = xml(&ok, with_attributes).body;
        let els = assert_well_formed(&doc, "CAS XML success");
        assert_no_stray_lt(&doc, &els);
        assert_eq!(els[0].name, "cas:serviceResponse");
        let success = position(&els, "cas:authenticationSuccess").expect("authenticationSuccess");
        assert_eq!(els[success].parent, Some(0));
        let child_texts = |parent: Option<usize>, name: &str| -> Vec<String> {
            parent
                .map(|p| {
                    children(&els, p, Some(name))
                        .map(|e| normalize_eol(&e.text))
                        .collect()
                })
                .unwrap_or_default()
        };
        // Protocol elements are direct children of authenticationSuccess. (An
        // attribute may have the same local name, e.g. `user`, one level down.)
        assert_eq!(
            child_texts(Some(success), "cas:user"),
            vec![expected_text(&user)],
            "cas:user in:\n{doc}"
        );
        assert_eq!(
            child_texts(Some(success), "cas:proxyGrantingTicket"),
            pgt_iou.iter().map(|s| expected_text(s)).collect::<Vec<_>>()
        );
        let proxies_idx = els
            .iter()
            .position(|e| e.name == "cas:proxies" && e.parent == Some(success));
        assert_eq!(proxies_idx.is_some(), !proxies.is_empty());
        assert_eq!(
            child_texts(proxies_idx, "cas:proxy"),
            proxies.iter().map(|s| expected_text(s)).collect::<Vec<_>>()
        );
        assert!(children(&els, success, Some("cas:attributes")).count() <= 1);
        let attributes_idx = els
            .iter()
            .position(|e| e.name == "cas:attributes" && e.parent == Some(success));
        let released: Vec<(String, String)> = attributes_idx
            .map(|p| {
                children(&els, p, None)
                    .map(|e| (e.name.clone(), normalize_eol(&e.text)))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            els.iter().all(|e| e.depth <= 3),
            "values only ever become text, never elements:\n{doc}"
        );
        if with_attributes {
            let expected: Vec<(String, String)> = attributes
                .iter()
                .filter(|(n, _)| {
                    is_element_name(n) && !castellan_cas::response::RESERVED.contains(&n.as_str())
                })
                .flat_map(|(n, vs)| {
                    vs.iter()
                        .map(move |v| (format!("cas:{n}"), expected_text(v)))
                })
                .collect();
            // The protocol's own first: three, then how the user signed in.
            let methods: Vec<(String, String)> =
                ["authenticationMethod", "successfulAuthenticationHandlers"]
                    .iter()
                    .flat_map(|n| ["Password", "TOTP"].map(|m| (format!("cas:{n}"), m.to_owned())))
                    .collect();
            assert_eq!(&released[3..3 + methods.len()], &methods[..], "in:\n{doc}");
            assert_eq!(
                &released[3 + methods.len()..],
                &expected[..],
                "attributes did not round-trip in:\n{doc}"
            );
        } else {
            assert!(released.is_empty() && attributes_idx.is_none());
        }
    }

    // Failure with the whole text as its description.
    let err = Err(CasError::new(
        CasErrorCode::InvalidTicket,
        text.clone().into_owned(),
    ));
    let doc = xml(&err, true).body;
    let els = assert_well_formed(&doc, "CAS XML failure");
    assert_no_stray_lt(&doc, &els);
    assert_eq!(
        normalize_eol(texts(&els, "cas:authenticationFailure")[0]),
        expected_text(&text)
    );

    // SAML 1.1 success: attribute names go into an XML attribute value.
    let doc = render(&ok, Some(&user), &user, &user, NOW);
    let els = assert_well_formed(&doc, "SAML success");
    assert_no_stray_lt(&doc, &els);
    for t in texts(&els, "saml1:NameIdentifier") {
        assert_eq!(normalize_eol(t), expected_text(&user));
    }
    let names: Vec<String> = els
        .iter()
        .filter(|e| e.name == "saml1:Attribute")
        .map(|e| normalize_eol(&e.attributes[0].1))
        .collect();
    assert_eq!(
        names,
        attributes
            .keys()
            .map(|k| expected_text(k))
            .collect::<Vec<_>>()
    );
    let values: Vec<String> = texts(&els, "saml1:AttributeValue")
        .into_iter()
        .map(normalize_eol)
        .collect();
    assert_eq!(
        values,
        attributes
            .values()
            .flatten()
            .map(|v| expected_text(v))
            .collect::<Vec<_>>()
    );

    // JSON keeps values exactly.
    let body = json(&ok, true).body;
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON response parses");
    let s = &v["serviceResponse"]["authenticationSuccess"];
    assert_eq!(s["user"].as_str(), Some(user.as_str()));

    // CAS 1.0: exactly two lines whatever the user id holds.
    let body = cas1(&ok).body;
    assert!(body.starts_with("yes\n") && body.ends_with('\n'));
    assert_eq!(
        body.matches('\n').count(),
        2,
        "CAS 1 response forged a line: {body:?}"
    );
}
