//! `RequestedAuthnContext` (SAML Core §3.3.2.2.1) and the
//! `AuthnContextClassRef` a Response states.
//!
//! The IdP knows two strengths: one factor (a password over TLS, an
//! upstream) and more than one. Classes are ranked by the strength they
//! need; a request is met with the class it names (exact, minimum,
//! maximum) or a stronger one (better), and asks for the second factor
//! when that class needs it. A class the IdP cannot rank cannot be met:
//! the SP gets `NoAuthnContext`.

use crate::status;
use crate::SamlError;
use castellan_core::AuthnMethods;
use samael::schema::{AuthnContextComparison, RequestedAuthnContext};

pub const PASSWORD_PROTECTED_TRANSPORT: &str =
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
pub const REFEDS_MFA: &str = "https://refeds.org/profile/mfa";

/// Classes the IdP can meet, with the strength each needs (0 anything, 1
/// one factor, 2 more than one). Only classes that any second factor
/// meets: one naming a kind of token (TimeSyncToken, MobileTwoFactor…)
/// would be stated for a passkey or a recovery code too.
const CLASSES: [(&str, u8); 6] = [
    ("urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified", 0),
    ("urn:oasis:names:tc:SAML:2.0:ac:classes:Password", 1),
    (PASSWORD_PROTECTED_TRANSPORT, 1),
    ("https://refeds.org/profile/sfa", 1),
    (REFEDS_MFA, 2),
    ("http://schemas.microsoft.com/claims/multipleauthn", 2),
];

/// Classes an upstream IdP states for a second factor it used.
const UPSTREAM_MFA: [&str; 5] = [
    REFEDS_MFA,
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
];

fn strength(class: &str) -> Option<u8> {
    CLASSES.iter().find(|(c, _)| *c == class).map(|(_, s)| *s)
}

/// Whether an upstream IdP's class says it used a second factor.
pub fn says_mfa(class: &str) -> bool {
    UPSTREAM_MFA.contains(&class)
}

/// Whether the class needs a second factor.
pub fn needs_mfa(class: &str) -> bool {
    strength(class) == Some(2)
}

/// The class the Response will state for a request's
/// `RequestedAuthnContext`: `Ok(None)` when none was asked (or only
/// declarations, which the IdP does not use), `NoAuthnContext` when it
/// cannot be met.
pub fn requested(request: Option<&RequestedAuthnContext>) -> Result<Option<String>, SamlError> {
    let Some(request) = request else {
        return Ok(None);
    };
    let classes: Vec<&str> = request
        .authn_context_class_refs
        .iter()
        .flatten()
        .filter_map(|c| c.value.as_deref())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if classes.is_empty() {
        return Ok(None);
    }
    let unmet = || SamlError::Status {
        status: status::NO_AUTHN_CONTEXT,
        message: format!(
            "the requested authentication context cannot be met: {}",
            classes.join(" ")
        ),
    };
    let known = || classes.iter().copied().find(|c| strength(c).is_some());
    let chosen = match request
        .comparison
        .as_ref()
        .unwrap_or(&AuthnContextComparison::Exact)
    {
        // The first the IdP can do (the SP lists its preference first).
        AuthnContextComparison::Exact => known(),
        // At least as strong as one of them: the weakest listed suffices.
        AuthnContextComparison::Minimum => classes
            .iter()
            .copied()
            .filter(|c| strength(c).is_some())
            .min_by_key(|c| strength(c)),
        // As strong as possible without exceeding one of them.
        AuthnContextComparison::Maximum => classes
            .iter()
            .copied()
            .filter(|c| strength(c).is_some())
            .max_by_key(|c| strength(c)),
        // Stronger than every one listed: each must be known to compare.
        AuthnContextComparison::Better => {
            let mut strongest = 0;
            for c in &classes {
                strongest = strongest.max(strength(c).ok_or_else(unmet)?);
            }
            (strongest < 2).then_some(REFEDS_MFA)
        }
    };
    chosen.map(|c| Some(c.to_owned())).ok_or_else(unmet)
}

/// The class a Response states: the requested one (the login met it: the
/// core enforced its second factor), else what the session did.
pub fn stated(requested: Option<&str>, methods: AuthnMethods) -> String {
    match requested {
        Some(class) => class.to_owned(),
        None if methods.has_second_factor() => REFEDS_MFA.to_owned(),
        None => PASSWORD_PROTECTED_TRANSPORT.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use samael::schema::AuthnContextClassRef;

    fn request(
        classes: &[&str],
        comparison: Option<AuthnContextComparison>,
    ) -> RequestedAuthnContext {
        RequestedAuthnContext {
            authn_context_class_refs: Some(
                classes
                    .iter()
                    .map(|c| AuthnContextClassRef {
                        value: Some((*c).to_owned()),
                    })
                    .collect(),
            ),
            authn_context_decl_refs: None,
            comparison,
        }
    }

    fn chosen(
        classes: &[&str],
        comparison: Option<AuthnContextComparison>,
    ) -> Result<Option<String>, SamlError> {
        requested(Some(&request(classes, comparison)))
    }

    #[test]
    fn exact_takes_the_first_class_the_idp_can_meet() {
        let c = chosen(&["urn:x:unknown", REFEDS_MFA], None).unwrap();
        assert_eq!(c.as_deref(), Some(REFEDS_MFA));
        assert!(needs_mfa(REFEDS_MFA));
        let c = chosen(
            &[PASSWORD_PROTECTED_TRANSPORT],
            Some(AuthnContextComparison::Exact),
        )
        .unwrap();
        assert_eq!(c.as_deref(), Some(PASSWORD_PROTECTED_TRANSPORT));
        assert!(!needs_mfa(PASSWORD_PROTECTED_TRANSPORT));
    }

    #[test]
    fn what_cannot_be_met_is_no_authn_context() {
        for (classes, comparison) in [
            (
                vec!["urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos"],
                None,
            ),
            (vec![REFEDS_MFA], Some(AuthnContextComparison::Better)),
            (
                vec!["urn:x:unknown", PASSWORD_PROTECTED_TRANSPORT],
                Some(AuthnContextComparison::Better),
            ),
        ] {
            match chosen(&classes, comparison) {
                Err(SamlError::Status { status, .. }) => {
                    assert_eq!(status, status::NO_AUTHN_CONTEXT)
                }
                other => panic!("{classes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn minimum_is_met_by_the_weakest_listed() {
        let c = chosen(
            &[REFEDS_MFA, PASSWORD_PROTECTED_TRANSPORT],
            Some(AuthnContextComparison::Minimum),
        )
        .unwrap();
        assert_eq!(c.as_deref(), Some(PASSWORD_PROTECTED_TRANSPORT));
        assert!(says_mfa(
            "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken"
        ));
        assert!(!says_mfa(PASSWORD_PROTECTED_TRANSPORT));
    }

    #[test]
    fn better_than_one_factor_is_two() {
        let c = chosen(
            &[PASSWORD_PROTECTED_TRANSPORT],
            Some(AuthnContextComparison::Better),
        )
        .unwrap();
        assert_eq!(c.as_deref(), Some(REFEDS_MFA));
    }

    #[test]
    fn maximum_takes_the_strongest_listed() {
        let c = chosen(
            &[PASSWORD_PROTECTED_TRANSPORT, REFEDS_MFA],
            Some(AuthnContextComparison::Maximum),
        )
        .unwrap();
        assert_eq!(c.as_deref(), Some(REFEDS_MFA));
    }

    #[test]
    fn nothing_asked_states_what_happened() {
        assert_eq!(requested(None).unwrap(), None);
        let pwd = AuthnMethods::of(castellan_core::AuthnMethod::Password);
        assert_eq!(stated(None, pwd), PASSWORD_PROTECTED_TRANSPORT);
        assert_eq!(
            stated(None, pwd.with(castellan_core::AuthnMethod::Totp)),
            REFEDS_MFA
        );
        assert_eq!(
            stated(Some(PASSWORD_PROTECTED_TRANSPORT), pwd),
            PASSWORD_PROTECTED_TRANSPORT
        );
    }
}
