//! A causal context as clients see it: VGET returns one, VSET and VDEL take it back with
//! `CONTEXT c`. The text is the lowercase hex of the version vector's own encoding (magic,
//! format version, entries, crc32c; see `shoal_cluster::vv`), so it survives copy and paste
//! through redis-cli and a mistyped context is refused by its checksum, not misread.

use shoal_cluster::vv::VersionVector;

/// The context text of `vv`.
pub fn to_text(vv: &VersionVector) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = vv.encode();
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

/// Parses a context a client passed back.
pub fn parse(text: &[u8]) -> Result<VersionVector, String> {
    if text.len() % 2 != 0 {
        return Err("odd number of hex digits".to_owned());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", c as char)),
    };
    let bytes = text
        .chunks_exact(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Result<Vec<u8>, String>>()?;
    VersionVector::decode(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_cluster::vv::Dot;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut vv = VersionVector::new();
        vv.add(Dot {
            actor: 7,
            counter: 3,
        });
        vv.add(Dot {
            actor: 0xdead_beef,
            counter: 1,
        });
        let text = to_text(&vv);
        assert!(text.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(parse(text.as_bytes()).unwrap(), vv);
        assert_eq!(parse(text.to_uppercase().as_bytes()).unwrap(), vv);
        assert_eq!(
            parse(to_text(&VersionVector::new()).as_bytes()).unwrap(),
            VersionVector::new()
        );
        let mut typo = text.into_bytes();
        typo[10] = if typo[10] == b'0' { b'1' } else { b'0' };
        assert!(parse(&typo).is_err());
        assert!(parse(b"abc").is_err());
        assert!(parse(b"zz").is_err());
        assert!(parse(b"").is_err());
    }
}
