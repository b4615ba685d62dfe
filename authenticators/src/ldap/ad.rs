//! Active Directory's reasons for a refused bind: the sub-code in the
//! diagnostic message of an invalidCredentials (49) result, as in
//! `80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563`.

use castellan_core::AccountProblem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    /// 525 (no such user) and 52e (bad password): a wrong password to the
    /// outside.
    BadCredentials,
    Account(AccountProblem),
}

/// The sub-code after `data ` in `message`, in hexadecimal.
pub fn sub_code(message: &str) -> Option<u32> {
    let at = message.find("data ")? + "data ".len();
    let hex: String = message[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    if hex.is_empty() || hex.len() > 8 {
        return None;
    }
    u32::from_str_radix(&hex, 16).ok()
}

/// What a sub-code means for the login; `None` for codes that are not
/// about the account.
pub fn refusal(message: &str) -> Option<BindRefusal> {
    Some(match sub_code(message)? {
        0x525 | 0x52e => BindRefusal::BadCredentials,
        0x530 => BindRefusal::Account(AccountProblem::NotAllowedNow),
        0x531 => BindRefusal::Account(AccountProblem::NotAllowedFromHere),
        0x532 => BindRefusal::Account(AccountProblem::PasswordExpired),
        0x533 => BindRefusal::Account(AccountProblem::Disabled),
        0x701 => BindRefusal::Account(AccountProblem::AccountExpired),
        0x773 => BindRefusal::Account(AccountProblem::MustChangePassword),
        0x775 => BindRefusal::Account(AccountProblem::Locked),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(code: &str) -> String {
        format!("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563\0")
    }

    #[test]
    fn reads_the_sub_codes() {
        assert_eq!(refusal(&ad("52e")), Some(BindRefusal::BadCredentials));
        assert_eq!(refusal(&ad("525")), Some(BindRefusal::BadCredentials));
        for (code, problem) in [
            ("530", AccountProblem::NotAllowedNow),
            ("531", AccountProblem::NotAllowedFromHere),
            ("532", AccountProblem::PasswordExpired),
            ("533", AccountProblem::Disabled),
            ("701", AccountProblem::AccountExpired),
            ("773", AccountProblem::MustChangePassword),
            ("775", AccountProblem::Locked),
        ] {
            assert_eq!(
                refusal(&ad(code)),
                Some(BindRefusal::Account(problem)),
                "{code}"
            );
        }
        // Samba writes the same text; upper case hex is read too.
        assert_eq!(
            refusal("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52E, v1db1"),
            Some(BindRefusal::BadCredentials)
        );
    }

    #[test]
    fn other_messages_say_nothing() {
        assert_eq!(refusal(""), None);
        assert_eq!(refusal("Invalid credentials"), None);
        assert_eq!(refusal(&ad("56e")), None);
        assert_eq!(refusal("data "), None);
        assert_eq!(refusal("data zz"), None);
        assert_eq!(refusal("data 123456789"), None);
        assert_eq!(sub_code(&ad("775")), Some(0x775));
    }
}
