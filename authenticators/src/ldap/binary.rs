//! Binary attributes in a stable text form: Active Directory's
//! `objectGUID` and `objectSid`.

/// `objectGUID` (16 octets) as the dashed string Windows shows: the first
/// three groups are little-endian, the last two in octet order.
pub fn guid(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// `objectSid` as `S-1-5-21-…`: revision, the 48-bit big-endian
/// authority, then each 32-bit little-endian sub-authority.
pub fn sid(b: &[u8]) -> Option<String> {
    let (&revision, rest) = b.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count);
    if rest.len() != 6 + 4 * count {
        return None;
    }
    let authority = rest[..6]
        .iter()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let mut out = format!("S-{revision}-{authority}");
    for chunk in rest[6..].chunks_exact(4) {
        let sub = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        out.push_str(&format!("-{sub}"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_in_windows_order() {
        // {f9168c5e-ceb2-4faa-b6bf-329bf39fa1e4} as stored by AD.
        let stored = [
            0x5e, 0x8c, 0x16, 0xf9, 0xb2, 0xce, 0xaa, 0x4f, 0xb6, 0xbf, 0x32, 0x9b, 0xf3, 0x9f,
            0xa1, 0xe4,
        ];
        assert_eq!(
            guid(&stored).unwrap(),
            "f9168c5e-ceb2-4faa-b6bf-329bf39fa1e4"
        );
        assert_eq!(guid(&stored[..15]), None);
        assert_eq!(guid(&[0; 17]), None);
    }

    #[test]
    fn sid_as_text() {
        // S-1-5-21-3623811015-3361044348-30300820-1013
        let stored = [
            0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x15, 0x00, 0x00, 0x00, 0xc7, 0xf7,
            0xfe, 0xd7, 0x7c, 0x77, 0x55, 0xc8, 0x94, 0x5a, 0xce, 0x01, 0xf5, 0x03, 0x00, 0x00,
        ];
        assert_eq!(
            sid(&stored).unwrap(),
            "S-1-5-21-3623811015-3361044348-30300820-1013"
        );
        // Well-known: S-1-5-32-544 (Administrators).
        assert_eq!(
            sid(&[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 0x02, 0, 0]).unwrap(),
            "S-1-5-32-544"
        );
        assert_eq!(sid(&[1, 5, 0, 0, 0, 0, 0, 5]), None);
        assert_eq!(sid(&[]), None);
    }
}
