//! Just enough RESP for a load generator: SET/GET requests encoded into a buffer, and an
//! incremental reply parser that reports each reply's kind (the bench counts, it does not
//! look at values).
//!
//! Requests are RESP2 arrays of bulk strings: `*3\r\n$3\r\nSET\r\n$<n>\r\n<key>\r\n...`.
//! Replies understood: RESP2 (`+ - : $ *`) and the RESP3 scalars a server may send without
//! HELLO 3 (`_` null, `,` double, `#` boolean, `(` big number, `!` blob error, `%`/`~`/`>`
//! aggregates).

use std::io::Write;

/// Largest bulk reply accepted (Redis's own proto-max-bulk-len default is 512 MiB).
pub const BULK_LEN_MAX: usize = 512 << 20;
/// Elements of one aggregate reply.
pub const ARRAY_LEN_MAX: usize = 1 << 20;
/// Nesting of aggregates; a SET/GET reply is never nested, deeper means a broken stream.
pub const DEPTH_MAX: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Simple,
    Error,
    Integer,
    Bulk,
    Nil,
    Aggregate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown reply type byte {0:#04x}")]
    UnknownType(u8),
    #[error("malformed length {0:?}")]
    BadLength(String),
    #[error("length {0} exceeds the limit")]
    TooLong(usize),
    #[error("aggregate nested deeper than {DEPTH_MAX}")]
    TooDeep,
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
}

fn bulk(buf: &mut Vec<u8>, s: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "${}\r\n", s.len());
    buf.extend_from_slice(s);
    buf.extend_from_slice(b"\r\n");
}

pub fn encode_set(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    bulk(buf, key);
    bulk(buf, value);
}

pub fn encode_get(buf: &mut Vec<u8>, key: &[u8]) {
    buf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    bulk(buf, key);
}

/// The line starting at `pos` (without CRLF) and the position after its CRLF.
fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], pos + end + 2))
}

fn length(text: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let s = std::str::from_utf8(text)
        .map_err(|_| ProtocolError::BadLength(String::from_utf8_lossy(text).into()))?;
    let n: i64 = s
        .parse()
        .map_err(|_| ProtocolError::BadLength(s.to_owned()))?;
    if n == -1 {
        return Ok(None);
    }
    usize::try_from(n)
        .map(Some)
        .map_err(|_| ProtocolError::BadLength(s.to_owned()))
}

/// Parses one reply at the start of `buf`: `Ok(None)` if more bytes are needed, else its kind
/// and length in bytes.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(ReplyKind, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(ReplyKind, usize)>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, after)) = line(buf, pos + 1) else {
        return Ok(None);
    };
    let kind = match tag {
        b'+' => ReplyKind::Simple,
        b'-' => ReplyKind::Error,
        b':' | b',' | b'#' | b'(' => ReplyKind::Integer,
        b'_' => ReplyKind::Nil,
        b'$' | b'!' | b'=' => {
            let Some(len) = length(text)? else {
                return Ok(Some((ReplyKind::Nil, after)));
            };
            if len > BULK_LEN_MAX {
                return Err(ProtocolError::TooLong(len));
            }
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            let kind = if tag == b'!' {
                ReplyKind::Error
            } else {
                ReplyKind::Bulk
            };
            return Ok(Some((kind, end + 2)));
        }
        b'*' | b'%' | b'~' | b'>' => {
            let Some(len) = length(text)? else {
                return Ok(Some((ReplyKind::Nil, after)));
            };
            if len > ARRAY_LEN_MAX {
                return Err(ProtocolError::TooLong(len));
            }
            if depth >= DEPTH_MAX {
                return Err(ProtocolError::TooDeep);
            }
            let elements = if tag == b'%' { 2 * len } else { len };
            let mut at = after;
            for _ in 0..elements {
                match parse_at(buf, at, depth + 1)? {
                    Some((_, next)) => at = next,
                    None => return Ok(None),
                }
            }
            return Ok(Some((ReplyKind::Aggregate, at)));
        }
        other => return Err(ProtocolError::UnknownType(other)),
    };
    Ok(Some((kind, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_set_and_get() {
        let mut buf = Vec::new();
        encode_set(&mut buf, b"k1", b"hello");
        encode_get(&mut buf, b"k1");
        assert_eq!(
            buf,
            b"*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n"
        );
        buf.clear();
        encode_set(&mut buf, b"", b"");
        assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_each_kind() {
        let cases: &[(&[u8], ReplyKind)] = &[
            (b"+OK\r\n", ReplyKind::Simple),
            (b"-ERR no\r\n", ReplyKind::Error),
            (b":42\r\n", ReplyKind::Integer),
            (b"$5\r\nhello\r\n", ReplyKind::Bulk),
            (b"$0\r\n\r\n", ReplyKind::Bulk),
            (b"$-1\r\n", ReplyKind::Nil),
            (b"_\r\n", ReplyKind::Nil),
            (b"*-1\r\n", ReplyKind::Nil),
            (b"*2\r\n$1\r\na\r\n:1\r\n", ReplyKind::Aggregate),
            (b"%1\r\n+k\r\n*1\r\n$1\r\nv\r\n", ReplyKind::Aggregate),
            (b"!3\r\nbad\r\n", ReplyKind::Error),
        ];
        for (bytes, kind) in cases {
            assert_eq!(
                parse_reply(bytes),
                Ok(Some((*kind, bytes.len()))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        let stream: &[u8] = b"*3\r\n$3\r\nabc\r\n*1\r\n:7\r\n$-1\r\n";
        for cut in 0..stream.len() {
            assert_eq!(parse_reply(&stream[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_reply(stream),
            Ok(Some((ReplyKind::Aggregate, stream.len())))
        );
    }

    #[test]
    fn pipelined_replies_parse_one_by_one() {
        let stream = b"+OK\r\n$3\r\nabc\r\n-ERR x\r\n$-1\r\n";
        let mut pos = 0;
        let mut kinds = Vec::new();
        while let Some((kind, n)) = parse_reply(&stream[pos..]).unwrap() {
            kinds.push(kind);
            pos += n;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(
            kinds,
            [
                ReplyKind::Simple,
                ReplyKind::Bulk,
                ReplyKind::Error,
                ReplyKind::Nil
            ]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            parse_reply(b"?x\r\n"),
            Err(ProtocolError::UnknownType(b'?'))
        );
        assert!(matches!(
            parse_reply(b"$abc\r\n"),
            Err(ProtocolError::BadLength(_))
        ));
        assert!(matches!(
            parse_reply(b"$-5\r\n"),
            Err(ProtocolError::BadLength(_))
        ));
        assert_eq!(parse_reply(b"$2\r\nabXY"), Err(ProtocolError::MissingCrlf));
        assert_eq!(
            parse_reply(b"$999999999999\r\n"),
            Err(ProtocolError::TooLong(999_999_999_999))
        );
        let deep = "*1\r\n".repeat(DEPTH_MAX + 1) + ":1\r\n";
        assert_eq!(parse_reply(deep.as_bytes()), Err(ProtocolError::TooDeep));
    }
}
