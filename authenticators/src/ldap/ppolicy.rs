//! The password policy response control of OpenLDAP's ppolicy overlay
//! (draft-behera-ldap-password-policy §6.2), read from its BER value.
//!
//! ```text
//! PasswordPolicyResponseValue ::= SEQUENCE {
//!    warning [0] CHOICE {
//!       timeBeforeExpiration [0] INTEGER (0 .. maxInt),
//!       graceAuthNsRemaining [1] INTEGER (0 .. maxInt) } OPTIONAL,
//!    error   [1] ENUMERATED { passwordExpired (0), accountLocked (1),
//!       changeAfterReset (2), ... } OPTIONAL }
//! ```
//! (the module has IMPLICIT TAGS; the CHOICE's tag is explicit).

pub const OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// Seconds until the password expires.
    TimeBeforeExpiration(u64),
    /// Logins left with the expired password.
    GraceLoginsLeft(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    PasswordExpired,
    AccountLocked,
    ChangeAfterReset,
    /// Errors of password changes (3 to 8), not of a bind.
    Other(u8),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Response {
    pub warning: Option<Warning>,
    pub error: Option<PolicyError>,
}

/// One BER element: (tag, content, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn unsigned(content: &[u8]) -> Option<u64> {
    if content.is_empty() || content.len() > 9 || content[0] & 0x80 != 0 {
        return None;
    }
    let content = if content.len() == 9 {
        // A leading zero octet keeps a large value positive.
        if content[0] != 0 {
            return None;
        }
        &content[1..]
    } else {
        content
    };
    Some(
        content
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
    )
}

/// Reads the control's value; `None` when it is not well formed.
pub fn parse(value: &[u8]) -> Option<Response> {
    let (tag, mut body, rest) = element(value)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let mut response = Response::default();
    while !body.is_empty() {
        let (tag, content, rest) = element(body)?;
        body = rest;
        match tag {
            // warning [0], constructed: the CHOICE inside.
            0xa0 => {
                let (inner, value, extra) = element(content)?;
                if !extra.is_empty() {
                    return None;
                }
                let n = unsigned(value)?;
                response.warning = Some(match inner {
                    0x80 => Warning::TimeBeforeExpiration(n),
                    0x81 => Warning::GraceLoginsLeft(n),
                    _ => return None,
                });
            }
            // error [1], primitive ENUMERATED.
            0x81 => {
                let n = unsigned(content)?;
                response.error = Some(match n {
                    0 => PolicyError::PasswordExpired,
                    1 => PolicyError::AccountLocked,
                    2 => PolicyError::ChangeAfterReset,
                    n => PolicyError::Other(u8::try_from(n).ok()?),
                });
            }
            _ => return None,
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_values_slapd_sends() {
        // Encodings of the draft's ASN.1 (as OpenLDAP's ppolicy.c builds them).
        assert_eq!(parse(&[0x30, 0x00]), Some(Response::default()));
        assert_eq!(
            parse(&[0x30, 0x08, 0xa0, 0x06, 0x80, 0x04, 0x00, 0x01, 0x51, 0x80]),
            Some(Response {
                warning: Some(Warning::TimeBeforeExpiration(86_400)),
                error: None
            })
        );
        assert_eq!(
            parse(&[0x30, 0x05, 0xa0, 0x03, 0x81, 0x01, 0x02]),
            Some(Response {
                warning: Some(Warning::GraceLoginsLeft(2)),
                error: None
            })
        );
        for (byte, error) in [
            (0, PolicyError::PasswordExpired),
            (1, PolicyError::AccountLocked),
            (2, PolicyError::ChangeAfterReset),
            (5, PolicyError::Other(5)),
        ] {
            assert_eq!(
                parse(&[0x30, 0x03, 0x81, 0x01, byte]),
                Some(Response {
                    warning: None,
                    error: Some(error)
                })
            );
        }
        // Both: a grace login used, and the password expired.
        assert_eq!(
            parse(&[0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x00, 0x81, 0x01, 0x00]),
            Some(Response {
                warning: Some(Warning::GraceLoginsLeft(0)),
                error: Some(PolicyError::PasswordExpired)
            })
        );
        // Long-form length.
        assert_eq!(
            parse(&[0x30, 0x81, 0x03, 0x81, 0x01, 0x01]),
            Some(Response {
                warning: None,
                error: Some(PolicyError::AccountLocked)
            })
        );
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x81, 0x01],
            &[0x31, 0x00],
            &[0x30, 0x00, 0x00],
            &[0x30, 0x03, 0x82, 0x01, 0x00],
            &[0x30, 0x04, 0xa0, 0x02, 0x82, 0x00],
            &[0x30, 0x03, 0x81, 0x01, 0xff],
            &[0x30, 0x02, 0x81, 0x00],
            &[0x30, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(parse(bad), None, "{bad:02x?}");
        }
    }
}
