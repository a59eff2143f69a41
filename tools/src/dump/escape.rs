//! Byte strings as printable text (`\xNN` for anything that is not printable ASCII), and
//! back, so keys printed by a dump can be pasted into `--key`.

use std::fmt::Write;

/// `bytes` quoted and escaped, cut after `max` bytes with the full length noted.
pub fn quoted(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut out = format!("\"{}\"", shown.escape_ascii());
    if shown.len() < bytes.len() {
        let _ = write!(out, "... ({} bytes)", bytes.len());
    }
    out
}

/// Reverses `escape_ascii`: `\\`, `\"`, `\'`, `\n`, `\r`, `\t`, `\0` and `\xNN`.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let escaped = match bytes.next() {
            Some(b'\\') => b'\\',
            Some(b'"') => b'"',
            Some(b'\'') => b'\'',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'0') => 0,
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape in {text:?}"))?
            }
            other => return Err(format!("bad escape {other:?} in {text:?}")),
        };
        out.push(escaped);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = all.escape_ascii().to_string();
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(unescape(&text).unwrap(), all);
    }

    #[test]
    fn quoting_cuts_long_values() {
        assert_eq!(quoted(b"a\"b\x01", 10), r#""a\"b\x01""#);
        assert_eq!(quoted(b"abcdef", 3), "\"abc\"... (6 bytes)");
        assert!(unescape(r"\x4").is_err());
        assert!(unescape(r"\q").is_err());
    }
}
