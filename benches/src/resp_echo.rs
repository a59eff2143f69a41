//! The storage-less RESP responder behind `resp-echo`: the physical limit of a server on this
//! runtime and machine. It splits the byte stream into commands and answers each by name:
//! `GET` → `$-1` (nil), `PING` → `+PONG`, `CONFIG` → `*0` (redis-benchmark asks for settings),
//! anything else → `+OK`. Commands are RESP arrays of bulk strings, or inline lines (as
//! `redis-cli` and redis-benchmark's `PING_INLINE` send).

/// Longest inline command or bulk argument accepted; past it the connection is closed.
pub const ARG_LEN_MAX: usize = 16 << 20;
/// Arguments of one command.
pub const ARGS_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request")]
    Malformed,
    #[error("request over the size limit")]
    TooLarge,
}

/// The reply to a command named `name` (any case).
pub fn reply(name: &[u8]) -> &'static [u8] {
    if name.eq_ignore_ascii_case(b"GET") {
        b"$-1\r\n"
    } else if name.eq_ignore_ascii_case(b"PING") {
        b"+PONG\r\n"
    } else if name.eq_ignore_ascii_case(b"CONFIG") {
        b"*0\r\n"
    } else {
        b"+OK\r\n"
    }
}

fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let text = &rest[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), pos + end + 1))
}

fn number(text: &[u8]) -> Result<usize, RequestError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RequestError::Malformed)
}

/// Parses the command at the start of `buf`: `Ok(None)` if incomplete, else its name (empty
/// for a blank line or empty array) and its length in bytes.
pub fn parse_command(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RequestError> {
    if buf.first() != Some(&b'*') {
        return match line(buf, 0) {
            Some((text, next)) => {
                let name = text
                    .split(|b| b.is_ascii_whitespace())
                    .find(|w| !w.is_empty())
                    .unwrap_or(&[]);
                Ok(Some((name, next)))
            }
            None if buf.len() > ARG_LEN_MAX => Err(RequestError::TooLarge),
            None => Ok(None),
        };
    }
    let Some((count, mut pos)) = line(buf, 1) else {
        return Ok(None);
    };
    let count = number(count)?;
    if count > ARGS_MAX {
        return Err(RequestError::TooLarge);
    }
    let mut name: &[u8] = &[];
    for i in 0..count {
        let Some((header, start)) = line(buf, pos) else {
            return Ok(None);
        };
        let len = number(header.strip_prefix(b"$").ok_or(RequestError::Malformed)?)?;
        if len > ARG_LEN_MAX {
            return Err(RequestError::TooLarge);
        }
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(RequestError::Malformed);
        }
        if i == 0 {
            name = &buf[start..end];
        }
        pos = end + 2;
    }
    Ok(Some((name, pos)))
}

/// Answers every complete command in `input` into `out`; returns the bytes consumed.
pub fn answer_all(input: &[u8], out: &mut Vec<u8>) -> Result<usize, RequestError> {
    let mut pos = 0;
    while let Some((name, n)) = parse_command(&input[pos..])? {
        if !name.is_empty() {
            out.extend_from_slice(reply(name));
        }
        pos += n;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_command_name() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nINCR\r\n*3";
        let mut out = Vec::new();
        let used = answer_all(input, &mut out).unwrap();
        assert_eq!(out, b"+OK\r\n$-1\r\n+PONG\r\n+OK\r\n");
        assert_eq!(
            &input[used..],
            b"*3",
            "the incomplete command waits for more bytes"
        );
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let cmd = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..cmd.len() {
            assert_eq!(parse_command(&cmd[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_command(cmd), Ok(Some((&b"GET"[..], cmd.len()))));
    }

    #[test]
    fn rejects_malformed_and_oversized() {
        assert_eq!(parse_command(b"*x\r\n"), Err(RequestError::Malformed));
        assert_eq!(parse_command(b"*1\r\n:3\r\n"), Err(RequestError::Malformed));
        assert_eq!(
            parse_command(b"*1\r\n$1\r\nab\r\n"),
            Err(RequestError::Malformed)
        );
        assert_eq!(
            parse_command(b"*1\r\n$999999999\r\n"),
            Err(RequestError::TooLarge)
        );
        assert_eq!(parse_command(b"*99999999\r\n"), Err(RequestError::TooLarge));
    }
}
