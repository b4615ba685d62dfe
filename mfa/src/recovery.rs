//! Recovery codes: ten one-time codes shown once, kept only as keyed hashes.

use crate::key::Keys;
use crate::MfaError;
use serde::{Deserialize, Serialize};

pub const COUNT: usize = 10;
/// Crockford's base32: no I, L, O or U; typed I/L read as 1 and O as 0.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Two groups of five characters: 50 bits.
const GROUP: usize = 5;

/// Fresh codes: `codes` to show once, `hashes` to keep (in a pending
/// record until the user confirms, then `save_recovery_codes`).
#[derive(Clone, Serialize, Deserialize)]
pub struct RecoveryCodes {
    pub codes: Vec<String>,
    pub hashes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodes")
            .field("codes", &self.codes.len())
            .finish_non_exhaustive()
    }
}

fn one_code() -> String {
    let bytes: [u8; 2 * GROUP] =
        crate::key::random().expect("the operating system's random source");
    // Each byte gives 5 uniform bits (32 divides 256).
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect();
    let (a, b) = chars.split_at(GROUP);
    format!(
        "{}-{}",
        a.iter().collect::<String>(),
        b.iter().collect::<String>()
    )
}

pub(crate) fn generate(keys: &Keys, user: &str) -> RecoveryCodes {
    let codes: Vec<String> = (0..COUNT).map(|_| one_code()).collect();
    let hashes = codes
        .iter()
        .map(|c| keys.recovery_hash(user, &canonical(c).unwrap_or_default()))
        .collect();
    RecoveryCodes { codes, hashes }
}

/// A typed recovery code in the form it is hashed: the ten characters,
/// lower case, separators and spaces dropped, look-alikes mapped.
pub(crate) fn canonical(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(2 * GROUP);
    for c in typed.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' | '\t' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == 2 * GROUP).then_some(out)
}

/// Hashes handed back from a pending record: exactly what `generate` makes.
pub(crate) fn check_hashes(hashes: &[String]) -> Result<(), MfaError> {
    let well_formed = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if hashes.len() > 2 * COUNT || !hashes.iter().all(well_formed) {
        return Err(MfaError::InvalidInput("not recovery code hashes".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_codes_of_fifty_bits_hashed_per_user() {
        let keys = Keys::new(&[1; 32]);
        let rc = generate(&keys, "alice");
        assert_eq!(rc.codes.len(), COUNT);
        assert_eq!(rc.hashes.len(), COUNT);
        let mut unique = rc.codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
        for (code, hash) in rc.codes.iter().zip(&rc.hashes) {
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            assert!(!hash.contains(code.as_str()));
            let c = canonical(code).unwrap();
            assert_eq!(&keys.recovery_hash("alice", &c), hash);
            assert_ne!(&keys.recovery_hash("bob", &c), hash);
        }
        check_hashes(&rc.hashes).unwrap();
        // log2(32) * 10 characters.
        assert_eq!(ALPHABET.len(), 32);
    }

    #[test]
    fn typed_variants_are_the_same_code() {
        assert_eq!(canonical("abcde-fgh01").as_deref(), Some("abcdefgh01"));
        assert_eq!(canonical(" ABCDE FGHOI ").as_deref(), Some("abcdefgh01"));
        assert_eq!(canonical("abcdefgh0l").as_deref(), Some("abcdefgh01"));
        assert_eq!(canonical("abcde-fgh0"), None);
        assert_eq!(canonical("abcde-fghu1"), None);
        assert_eq!(canonical("123456"), None);
        assert_eq!(canonical("äbcde-fgh01"), None);
    }

    #[test]
    fn foreign_hashes_are_refused() {
        assert!(check_hashes(&["zz".into()]).is_err());
        assert!(check_hashes(&vec!["a".repeat(64); 21]).is_err());
        check_hashes(&[]).unwrap();
    }
}
