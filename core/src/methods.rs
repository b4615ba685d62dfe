//! How a user proved who they are, as the SSO session remembers it, and
//! what a service asks for.

use serde::{Deserialize, Serialize};

/// The set of methods a session's logins used (a bit set: one byte in a
/// stored session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuthnMethods(u8);

/// One way of proving who one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthnMethod {
    Password,
    /// A time-based one-time password (RFC 6238).
    Totp,
    /// One of the user's single-use recovery codes.
    RecoveryCode,
    /// A WebAuthn credential held in a roaming (hardware) authenticator.
    HardwareKey,
    /// A WebAuthn credential of a platform authenticator (or of unknown kind).
    SoftwareKey,
    /// An upstream identity provider (delegated authentication).
    Delegated,
    /// The upstream said it used more than one factor, and is trusted to.
    UpstreamMfa,
}

impl AuthnMethod {
    const ALL: [AuthnMethod; 7] = [
        Self::Password,
        Self::Totp,
        Self::RecoveryCode,
        Self::HardwareKey,
        Self::SoftwareKey,
        Self::Delegated,
        Self::UpstreamMfa,
    ];

    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// A second factor on top of the first (password or upstream).
    pub const fn is_second_factor(self) -> bool {
        matches!(
            self,
            Self::Totp
                | Self::RecoveryCode
                | Self::HardwareKey
                | Self::SoftwareKey
                | Self::UpstreamMfa
        )
    }

    /// The CAS 3 `authenticationMethod` value.
    pub const fn cas_name(self) -> &'static str {
        match self {
            Self::Password => "Password",
            Self::Totp => "TOTP",
            Self::RecoveryCode => "RecoveryCode",
            Self::HardwareKey | Self::SoftwareKey => "WebAuthn",
            Self::Delegated => "Delegated",
            Self::UpstreamMfa => "UpstreamMFA",
        }
    }

    /// The name an audit line gives it.
    pub const fn audit_name(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Totp => "totp",
            Self::RecoveryCode => "recovery_code",
            Self::HardwareKey => "hardware_key",
            Self::SoftwareKey => "software_key",
            Self::Delegated => "delegated",
            Self::UpstreamMfa => "upstream_mfa",
        }
    }

    /// The RFC 8176 `amr` value.
    pub const fn amr(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::Totp | Self::RecoveryCode => "otp",
            Self::HardwareKey => "hwk",
            Self::SoftwareKey => "swk",
            Self::Delegated => "fed",
            Self::UpstreamMfa => "mfa",
        }
    }
}

impl AuthnMethods {
    pub const NONE: AuthnMethods = AuthnMethods(0);

    pub const fn of(method: AuthnMethod) -> Self {
        Self(method.bit())
    }

    #[must_use]
    pub const fn with(self, method: AuthnMethod) -> Self {
        Self(self.0 | method.bit())
    }

    #[must_use]
    pub const fn union(self, other: AuthnMethods) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn contains(self, method: AuthnMethod) -> bool {
        self.0 & method.bit() != 0
    }

    /// Whether a second factor was used: what `mfa = "required"` asks.
    pub fn has_second_factor(self) -> bool {
        self.iter().any(AuthnMethod::is_second_factor)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = AuthnMethod> {
        AuthnMethod::ALL
            .into_iter()
            .filter(move |m| self.contains(*m))
    }

    /// The CAS 3 `authenticationMethod` values, without repeats.
    pub fn cas_names(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.iter().map(AuthnMethod::cas_name).collect();
        names.dedup();
        names
    }

    /// The OIDC `amr` values (RFC 8176), with `mfa` when two factors were used.
    pub fn amr(self) -> Vec<&'static str> {
        let mut amr: Vec<&'static str> = Vec::new();
        for m in self.iter() {
            if !amr.contains(&m.amr()) {
                amr.push(m.amr());
            }
        }
        if self.has_second_factor() && !amr.contains(&"mfa") {
            amr.push("mfa");
        }
        amr
    }
}

/// What a registered service asks of the login beyond the first factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MfaPolicy {
    /// A ticket only after a second factor in the same SSO session.
    Required,
    /// A second factor when the user has one enrolled.
    Optional,
}

impl MfaPolicy {
    /// The configuration's word for it (`mfa = "required"`).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "required" => Some(Self::Required),
            "optional" => Some(Self::Optional),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_alone_is_one_factor() {
        let m = AuthnMethods::of(AuthnMethod::Password);
        assert!(!m.has_second_factor());
        assert_eq!(m.amr(), ["pwd"]);
        assert_eq!(m.cas_names(), ["Password"]);
    }

    #[test]
    fn password_and_code_are_two() {
        let m = AuthnMethods::of(AuthnMethod::Password).with(AuthnMethod::Totp);
        assert!(m.has_second_factor());
        assert_eq!(m.amr(), ["pwd", "otp", "mfa"]);
        assert_eq!(m.cas_names(), ["Password", "TOTP"]);
        let k = AuthnMethods::of(AuthnMethod::Password).with(AuthnMethod::HardwareKey);
        assert_eq!(k.amr(), ["pwd", "hwk", "mfa"]);
    }

    #[test]
    fn an_upstream_counts_only_when_it_said_mfa() {
        let fed = AuthnMethods::of(AuthnMethod::Delegated);
        assert!(!fed.has_second_factor());
        assert!(fed.with(AuthnMethod::UpstreamMfa).has_second_factor());
        assert_eq!(fed.with(AuthnMethod::UpstreamMfa).amr(), ["fed", "mfa"]);
    }

    #[test]
    fn union_keeps_both() {
        let a = AuthnMethods::of(AuthnMethod::Password);
        let b = AuthnMethods::of(AuthnMethod::RecoveryCode);
        let u = a.union(b);
        assert!(u.contains(AuthnMethod::Password) && u.contains(AuthnMethod::RecoveryCode));
        assert_eq!(u.amr(), ["pwd", "otp", "mfa"]);
    }
}
