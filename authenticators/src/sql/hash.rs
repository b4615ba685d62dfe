//! The stored password hashes an application's table may hold: argon2
//! (PHC), bcrypt, Django's `pbkdf2_sha256` and SHA-512/SHA-256 crypt.
//! Anything else never matches, and is named (by its prefix, never the
//! hash) in the log.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `$argon2id$…`, `$argon2i$…`, `$argon2d$…` (PHC string).
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// Django's `pbkdf2_sha256$iterations$salt$hash`.
    DjangoPbkdf2Sha256,
    /// `$6$[rounds=N$]salt$hash`.
    Sha512Crypt,
    /// `$5$[rounds=N$]salt$hash`.
    Sha256Crypt,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Argon2 => "argon2",
            Self::Bcrypt => "bcrypt",
            Self::DjangoPbkdf2Sha256 => "pbkdf2_sha256 (Django)",
            Self::Sha512Crypt => "SHA-512 crypt",
            Self::Sha256Crypt => "SHA-256 crypt",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a format Castellan verifies; `format` names it by its prefix.
    #[error("the stored password hash is in a format Castellan does not verify ({format})")]
    Unknown { format: String },
    #[error("the stored {format} hash is malformed: {reason}")]
    Malformed { format: Format, reason: String },
}

/// Costs above these are not password hashes but a way to stall the
/// server (a verification would take minutes or gigabytes): refused as
/// malformed.
const PBKDF2_MAX_ITERATIONS: u32 = 20_000_000;
const SHA_CRYPT_MAX_ROUNDS: usize = 10_000_000;
const BCRYPT_MAX_COST: u32 = 18;
const ARGON2_MAX_MEMORY_KIB: u32 = 1 << 20;
const ARGON2_MAX_TIME: u32 = 100;

/// The format of a stored hash, by its prefix.
pub fn format(stored: &str) -> Option<Format> {
    let prefixes: [(&str, Format); 9] = [
        ("$argon2id$", Format::Argon2),
        ("$argon2i$", Format::Argon2),
        ("$argon2d$", Format::Argon2),
        ("$2a$", Format::Bcrypt),
        ("$2b$", Format::Bcrypt),
        ("$2y$", Format::Bcrypt),
        ("pbkdf2_sha256$", Format::DjangoPbkdf2Sha256),
        ("$6$", Format::Sha512Crypt),
        ("$5$", Format::Sha256Crypt),
    ];
    prefixes
        .into_iter()
        .find(|(p, _)| stored.starts_with(p))
        .map(|(_, f)| f)
}

/// What a stored value looks like, for a log line: its scheme prefix
/// (`$1$`, `{SSHA}`, `pbkdf2_sha1$`) or its shape, never the hash itself.
pub fn describe(stored: &str) -> String {
    if let Some(f) = format(stored) {
        return f.to_string();
    }
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 24
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(rest) = stored.strip_prefix('$') {
        if let Some(id) = rest.split('$').next().filter(|id| ident(id)) {
            return format!("${id}$");
        }
    }
    if let Some(rest) = stored.strip_prefix('{') {
        if let Some(id) = rest.split('}').next().filter(|id| ident(id)) {
            if rest.len() > id.len() {
                return format!("{{{id}}}");
            }
        }
    }
    if let Some(id) = stored.split('$').next().filter(|id| ident(id)) {
        if stored.len() > id.len() {
            return format!("{id}$");
        }
    }
    if stored.is_empty() {
        return "empty".into();
    }
    let hex = stored.chars().all(|c| c.is_ascii_hexdigit());
    format!(
        "no known prefix, {} {}characters",
        stored.chars().count(),
        if hex { "hexadecimal " } else { "" }
    )
}

/// Whether `password` matches the `stored` hash. Comparisons are constant
/// time; an unknown or malformed hash is an error, never a match.
pub fn verify(stored: &str, password: &str) -> Result<bool, HashError> {
    let format = format(stored).ok_or_else(|| HashError::Unknown {
        format: describe(stored),
    })?;
    let malformed = |reason: String| HashError::Malformed { format, reason };
    match format {
        Format::Argon2 => {
            let parsed = PasswordHash::new(stored).map_err(|e| malformed(e.to_string()))?;
            let params = argon2::Params::try_from(&parsed).map_err(|e| malformed(e.to_string()))?;
            if params.m_cost() > ARGON2_MAX_MEMORY_KIB || params.t_cost() > ARGON2_MAX_TIME {
                return Err(malformed(format!(
                    "m={} t={} (at most m={ARGON2_MAX_MEMORY_KIB} t={ARGON2_MAX_TIME})",
                    params.m_cost(),
                    params.t_cost()
                )));
            }
            match argon2::Argon2::default().verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(malformed(e.to_string())),
            }
        }
        Format::Bcrypt => {
            match stored.get(4..6).and_then(|c| c.parse::<u32>().ok()) {
                Some(cost) if cost <= BCRYPT_MAX_COST => {}
                _ => return Err(malformed(format!("cost above {BCRYPT_MAX_COST}"))),
            }
            bcrypt::verify(password, stored).map_err(|e| malformed(e.to_string()))
        }
        Format::DjangoPbkdf2Sha256 => django_pbkdf2_sha256(stored, password).map_err(malformed),
        Format::Sha512Crypt | Format::Sha256Crypt => {
            sha_crypt(stored, password, format).map_err(malformed)
        }
    }
}

/// `$6$[rounds=N$]salt$hash` (or `$5$`), as glibc writes it: the salt is
/// cut at 16 characters, rounds default to 5000.
fn sha_crypt(stored: &str, password: &str, format: Format) -> Result<bool, String> {
    let mut parts = stored.split('$').skip(2);
    let mut next = parts.next().ok_or("no salt")?;
    let rounds = match next.strip_prefix("rounds=") {
        Some(r) => {
            next = parts.next().ok_or("no salt")?;
            r.parse::<usize>()
                .map_err(|_| "rounds= is not a number".to_owned())?
        }
        None => sha_crypt::ROUNDS_DEFAULT,
    };
    let salt = next;
    let (Some(expected), None) = (parts.next(), parts.next()) else {
        return Err("expected $id$[rounds=N$]salt$hash".into());
    };
    if !(sha_crypt::ROUNDS_MIN..=SHA_CRYPT_MAX_ROUNDS).contains(&rounds) {
        return Err(format!(
            "rounds={rounds} (from {} to {SHA_CRYPT_MAX_ROUNDS})",
            sha_crypt::ROUNDS_MIN
        ));
    }
    let computed = if format == Format::Sha512Crypt {
        let params = sha_crypt::Sha512Params::new(rounds).map_err(|e| format!("{e:?}"))?;
        sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
    } else {
        let params = sha_crypt::Sha256Params::new(rounds).map_err(|e| format!("{e:?}"))?;
        sha_crypt::sha256_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
    }
    .map_err(|e| format!("{e:?}"))?;
    if computed.len() != expected.len() {
        return Err("the hash has a wrong length".into());
    }
    Ok(bool::from(computed.as_bytes().ct_eq(expected.as_bytes())))
}

/// `pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte key>`.
fn django_pbkdf2_sha256(stored: &str, password: &str) -> Result<bool, String> {
    let mut parts = stored.split('$');
    let (Some(_), Some(iterations), Some(salt), Some(key), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("expected pbkdf2_sha256$iterations$salt$hash".into());
    };
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| "the iteration count is not a number".to_owned())?;
    if iterations == 0 || iterations > PBKDF2_MAX_ITERATIONS {
        return Err(format!(
            "{iterations} iterations (1 to {PBKDF2_MAX_ITERATIONS})"
        ));
    }
    let expected = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "the hash is not base64".to_owned())?;
    if expected.is_empty() || expected.len() > 64 {
        return Err("the hash has a wrong length".into());
    }
    let mut derived = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    Ok(bool::from(derived.ct_eq(&expected)))
}

/// A hash of a throwaway password in the same format and with the same
/// cost as `like`: verifying against it when the user is unknown costs
/// what verifying a known user's password costs.
pub fn decoy_like(like: &str) -> Option<String> {
    const DECOY: &str = "castellan-decoy-password";
    match format(like)? {
        Format::Argon2 => {
            let parsed = PasswordHash::new(like).ok()?;
            let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
            let version = parsed
                .version
                .and_then(|v| argon2::Version::try_from(v).ok())
                .unwrap_or_default();
            let params = argon2::Params::try_from(&parsed).ok()?;
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2::Argon2::new(algorithm, version, params)
                .hash_password(DECOY.as_bytes(), &salt)
                .ok()
                .map(|h| h.to_string())
        }
        Format::Bcrypt => {
            let cost: u32 = like.get(4..6)?.parse().ok()?;
            bcrypt::hash(DECOY, cost).ok()
        }
        Format::DjangoPbkdf2Sha256 => {
            let iterations: u32 = like.split('$').nth(1)?.parse().ok()?;
            if iterations == 0 || iterations > PBKDF2_MAX_ITERATIONS {
                return None;
            }
            let mut key = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                DECOY.as_bytes(),
                b"castellan",
                iterations,
                &mut key,
            );
            Some(format!(
                "pbkdf2_sha256${iterations}$castellan${}",
                base64::engine::general_purpose::STANDARD.encode(key)
            ))
        }
        f @ (Format::Sha512Crypt | Format::Sha256Crypt) => {
            let rounds = like
                .split('$')
                .nth(2)
                .and_then(|r| r.strip_prefix("rounds="))
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(sha_crypt::ROUNDS_DEFAULT);
            if f == Format::Sha512Crypt {
                let params = sha_crypt::Sha512Params::new(rounds).ok()?;
                sha_crypt::sha512_simple(DECOY, &params).ok()
            } else {
                let params = sha_crypt::Sha256Params::new(rounds).ok()?;
                sha_crypt::sha256_simple(DECOY, &params).ok()
            }
        }
    }
}

/// The decoy before any hash has been seen: bcrypt at cost 10, the most
/// common format in application tables.
pub fn default_decoy() -> String {
    bcrypt::hash("castellan-decoy-password", 10).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by Python's bcrypt, crypt (glibc/libxcrypt), hashlib, argon2-cffi
    // and Django's own PBKDF2PasswordHasher, for the password
    // "correct horse" (and "lètmein" for Django).
    const VECTORS: &[(&str, Format)] = &[
        (
            "$2b$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW",
            Format::Bcrypt,
        ),
        (
            "$2a$04$RFYoQLOs0OIhW8c6IbgwIeq/qBiFVNisVec/./U2XdSKFOBvWBTq6",
            Format::Bcrypt,
        ),
        (
            "$2y$05$ab1b1kZwRavEEY4Q2ag7deqmgyaRy1FoO5RnaMLx0PEqkXkLTvaLy",
            Format::Bcrypt,
        ),
        (
            "$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0",
            Format::Sha512Crypt,
        ),
        (
            "$6$rounds=1234$abcdefgh$fnpIuhaCV2VDdBD8TdaAnkiKvTftprgrPrajgofRE8UidZvrM0dFMpFTXKrhbsgA1Klo2.FFmcL48y9L5aiAP0",
            Format::Sha512Crypt,
        ),
        (
            "$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/",
            Format::Sha256Crypt,
        ),
        (
            "$5$rounds=2000$xyz$jybNny/HO/6zcwKAOpxQ3TMBs6ChgQXYqa54xa4MiR.",
            Format::Sha256Crypt,
        ),
        (
            "pbkdf2_sha256$10000$seasalt$yUSQkCSBBGjOglsg2f0YsigZVwZC6oXxFCoUK6nZWMQ=",
            Format::DjangoPbkdf2Sha256,
        ),
        (
            "$argon2id$v=19$m=8192,t=1,p=1$8F9oIgjzScoXYX9rp06cQQ$7bwmDbOBRLgnq62h4XBmCUeMh1HZQA2NxVoQvCOe1Xg",
            Format::Argon2,
        ),
        (
            "$argon2i$v=19$m=4096,t=2,p=1$sEJy2f2QPMFBhY7Fa2AX3Q$yPraxoTk9AnpDMTmzP4XFWygYtD+0xF0BUMMoqTyoxc",
            Format::Argon2,
        ),
    ];

    #[test]
    fn every_format_verifies_its_vectors() {
        for (stored, f) in VECTORS {
            assert_eq!(format(stored), Some(*f), "{stored}");
            assert_eq!(verify(stored, "correct horse"), Ok(true), "{stored}");
            assert_eq!(verify(stored, "correct horsE"), Ok(false), "{stored}");
            assert_eq!(verify(stored, ""), Ok(false), "{stored}");
        }
        // Django's hasher, a non-ASCII password (UTF-8 bytes).
        let django = "pbkdf2_sha256$20000$seasalt$oBSd886ysm3AqYun62DOdin8YcfbU1z9cksZSuLP9r0=";
        assert_eq!(verify(django, "lètmein"), Ok(true));
        assert_eq!(verify(django, "letmein"), Ok(false));
        // SHA-crypt's published vector (Drepper, SHA-crypt.txt).
        assert_eq!(
            verify(
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
                "Hello world!"
            ),
            Ok(true)
        );
    }

    #[test]
    fn unknown_formats_never_match_and_are_named_by_prefix() {
        for (stored, named) in [
            ("$1$abc$mEYYKBYwc4Odg5SoPgnFr/", "$1$"),
            ("{SSHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "{SSHA}"),
            ("pbkdf2_sha1$10000$salt$abc", "pbkdf2_sha1$"),
            (
                "$2x$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW",
                "$2x$",
            ),
            (
                "5f4dcc3b5aa765d61d8327deb882cf99",
                "no known prefix, 32 hexadecimal characters",
            ),
            ("correct horse", "no known prefix, 13 characters"),
            ("", "empty"),
        ] {
            let err = verify(stored, "correct horse").unwrap_err();
            assert_eq!(
                err,
                HashError::Unknown {
                    format: named.into()
                }
            );
            // The message names the format, never the hash.
            let message = err.to_string();
            assert!(message.contains(named), "{message}");
            if stored.len() > 8 {
                assert!(!message.contains(stored), "{message}");
            }
        }
    }

    #[test]
    fn malformed_hashes_are_errors_not_matches() {
        for stored in [
            "$2b$04$short",
            "$6$rounds=10$xyz$abc",
            "$6$",
            "pbkdf2_sha256$0$salt$yUSQkCSBBGjOglsg2f0YsigZVwZC6oXxFCoUK6nZWMQ=",
            "pbkdf2_sha256$99999999999$salt$yUSQ",
            "pbkdf2_sha256$10000$salt$not base64!",
            "pbkdf2_sha256$10000$seasalt",
            "$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHQ$abc",
            // Costs that would stall the server.
            "$2b$31$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW",
            "$6$rounds=999999999$abcdefgh$fnpIuhaCV2VDdBD8TdaAnkiKvTftprgrPrajgofRE8UidZvrM0dFMpFTXKrhbsgA1Klo2.FFmcL48y9L5aiAP0",
            "$argon2id$v=19$m=4194304,t=1,p=1$8F9oIgjzScoXYX9rp06cQQ$7bwmDbOBRLgnq62h4XBmCUeMh1HZQA2NxVoQvCOe1Xg",
            "pbkdf2_sha256$900000000$seasalt$yUSQkCSBBGjOglsg2f0YsigZVwZC6oXxFCoUK6nZWMQ=",
        ] {
            assert!(
                matches!(
                    verify(stored, "correct horse"),
                    Err(HashError::Malformed { .. })
                ),
                "{stored}"
            );
        }
    }

    #[test]
    fn decoys_have_the_format_and_cost_of_their_model() {
        for (stored, f) in VECTORS {
            let decoy = decoy_like(stored).expect("a decoy");
            assert_eq!(format(&decoy), Some(*f));
            assert_ne!(&decoy, stored);
            assert_eq!(verify(&decoy, "correct horse"), Ok(false));
        }
        let d = decoy_like("$2y$05$ab1b1kZwRavEEY4Q2ag7deqmgyaRy1FoO5RnaMLx0PEqkXkLTvaLy").unwrap();
        assert!(d.starts_with("$2b$05$"), "{d}");
        let d = decoy_like("$6$rounds=1234$abcdefgh$x").unwrap();
        assert!(d.starts_with("$6$rounds=1234$"), "{d}");
        let d = decoy_like("pbkdf2_sha256$10000$seasalt$x").unwrap();
        assert!(d.starts_with("pbkdf2_sha256$10000$"), "{d}");
        let d = decoy_like(VECTORS[9].0).unwrap();
        assert!(d.starts_with("$argon2i$v=19$m=4096,t=2,p=1$"), "{d}");
        assert_eq!(decoy_like("$1$abc$x"), None);
        assert!(default_decoy().starts_with("$2b$10$"));
    }
}
