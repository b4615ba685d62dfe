//! Authentication context: what `acr_values` may ask and what the ID token
//! says happened (`acr`, and `amr` per RFC 8176).
//!
//! The REFEDS profiles name one factor and more than one; research and
//! education federations (and many enterprise clients) ask for them. The
//! older OpenID PAPE name and a plain "mfa" ask for the same. "0" and "1"
//! (what the provider said before any second factor existed) are still
//! accepted as asking for one factor.

use castellan_core::AuthnMethods;

pub const REFEDS_MFA: &str = "https://refeds.org/profile/mfa";
pub const REFEDS_SFA: &str = "https://refeds.org/profile/sfa";
const PAPE_MFA: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";

/// Values meaning "more than one factor".
const MFA: [&str; 3] = [REFEDS_MFA, PAPE_MFA, "mfa"];
/// Values meaning "at least one factor".
const SFA: [&str; 3] = [REFEDS_SFA, "0", "1"];

/// What discovery publishes as `acr_values_supported`.
pub fn supported() -> Vec<&'static str> {
    vec!["0", "1", REFEDS_SFA, REFEDS_MFA, PAPE_MFA, "mfa"]
}

/// Whether `acr_values` (space-separated, most preferred first) asks for a
/// second factor: its first value this provider knows is an MFA one.
/// Unknown values are passed over (they are voluntary claims).
pub fn asks_mfa(acr_values: &str) -> bool {
    acr_values
        .split(' ')
        .find(|v| MFA.contains(v) || SFA.contains(v))
        .is_some_and(|v| MFA.contains(&v))
}

/// The `acr` of a login: the first requested value it satisfies, else the
/// REFEDS profile of what happened (one factor or more).
pub fn of_login(requested: Option<&str>, methods: AuthnMethods, fresh_login: bool) -> String {
    let mfa = methods.has_second_factor();
    let satisfied = requested.and_then(|values| {
        values.split(' ').find(|v| match *v {
            "0" => true,
            "1" => fresh_login,
            v if SFA.contains(&v) => true,
            v if MFA.contains(&v) => mfa,
            _ => false,
        })
    });
    match satisfied {
        Some(v) => v.to_owned(),
        None if mfa => REFEDS_MFA.to_owned(),
        None => REFEDS_SFA.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_core::AuthnMethod;

    fn pwd() -> AuthnMethods {
        AuthnMethods::of(AuthnMethod::Password)
    }

    #[test]
    fn the_first_known_value_decides_the_ask() {
        assert!(asks_mfa(REFEDS_MFA));
        assert!(asks_mfa("urn:unknown mfa"));
        assert!(asks_mfa(PAPE_MFA));
        assert!(!asks_mfa(&format!("{REFEDS_SFA} {REFEDS_MFA}")));
        assert!(!asks_mfa("urn:unknown"));
        assert!(!asks_mfa(""));
    }

    #[test]
    fn acr_names_what_happened() {
        let two = pwd().with(AuthnMethod::Totp);
        assert_eq!(of_login(Some("mfa"), two, true), "mfa");
        assert_eq!(of_login(Some(REFEDS_MFA), two, false), REFEDS_MFA);
        assert_eq!(of_login(None, two, true), REFEDS_MFA);
        // One factor does not satisfy an MFA request: the truth is told.
        assert_eq!(of_login(Some(REFEDS_MFA), pwd(), true), REFEDS_SFA);
        assert_eq!(
            of_login(Some(&format!("{REFEDS_MFA} 1")), pwd(), true),
            "1",
            "the older values still answer when asked"
        );
        assert_eq!(
            of_login(Some("1"), pwd(), false),
            REFEDS_SFA,
            "1 needs credentials"
        );
        assert_eq!(
            of_login(Some(&format!("{REFEDS_MFA} {REFEDS_SFA}")), pwd(), true),
            REFEDS_SFA
        );
        assert_eq!(of_login(None, pwd(), false), REFEDS_SFA);
    }
}
