//! One client connection: read what the client sent, decode every complete request in it,
//! run them in order, and write all their replies with one write.
//!
//! Requests are RESP arrays of bulk strings, decoded with the `redis-protocol` crate's
//! zero-copy range decoders (its RESP2 decoder, or RESP3 after `HELLO 3`), or inline
//! commands (a line of words) as telnet users type them. Memory per connection is bounded:
//! the read buffer never grows past [`query_buf_max`], and a request that declares more
//! (too many arguments, an argument too long) is refused as soon as its header arrives.
//! Broken framing gets a `-ERR Protocol error: ...` reply and the connection is closed;
//! nothing else is affected.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use redis_protocol::resp2::decode::decode_range as decode_resp2;
use redis_protocol::resp2::types::RangeFrame as Frame2;
use redis_protocol::resp3::decode::complete::decode_range as decode_resp3;
use redis_protocol::resp3::types::RangeFrame as Frame3;

use crate::front::ctx::{Ctx, Session};
use crate::front::resp::{Proto, Reply};
use crate::shard::Counters;
use crate::shard::shutdown::Shutdown;

/// First size of a connection's read buffer; it grows (up to [`query_buf_max`]) only for
/// requests larger than this.
const READ_BUF_BYTES: usize = 16 << 10;
/// Reply bytes after which replies are written out mid-batch, bounding the reply buffer.
const REPLY_FLUSH_BYTES: usize = 256 << 10;
/// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`).
const INLINE_LEN_MAX: usize = 64 << 10;
/// Most arguments in one request: bounds the per-request argument table.
const ARGS_MAX: i64 = 1 << 20;
/// Room for the header lines of a request beside its largest argument.
const QUERY_SLACK_BYTES: usize = 1 << 20;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Largest single argument accepted by the framing: a value at the configured limit plus a
/// little (larger values get an error reply from the command; absurd ones close the connection).
pub fn bulk_len_max(max_value_bytes: usize) -> usize {
    max_value_bytes + QUERY_SLACK_BYTES
}

/// Most bytes buffered for one connection's unprocessed requests.
pub fn query_buf_max(max_value_bytes: usize) -> usize {
    2 * max_value_bytes + 2 * QUERY_SLACK_BYTES
}

/// Why a connection's framing is broken; the text follows `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// One decoded request: argument ranges into the read buffer, and how many bytes it took.
enum Decoded {
    Request(usize),
    /// Empty or null array: Redis ignores it.
    Nothing(usize),
    Incomplete,
}

/// Decodes the request at the start of `buf`, pushing its arguments' absolute ranges
/// (offset by `base`) onto `args`.
fn decode(
    buf: &[u8],
    base: usize,
    proto: Proto,
    bulk_max: usize,
    args: &mut Vec<(usize, usize)>,
) -> Result<Decoded, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    if first != b'*' {
        return decode_inline(buf, base, args);
    }
    let before = args.len();
    let decoded = match proto {
        Proto::Resp2 => decode_resp2(buf).map(|f| {
            f.map(|(frame, used)| {
                let ok = match frame {
                    Frame2::Array(items) => items.iter().all(|item| match item {
                        Frame2::BulkString((a, b)) => {
                            args.push((base + a, base + b));
                            true
                        }
                        _ => false,
                    }),
                    Frame2::Null => true,
                    _ => false,
                };
                (ok, used)
            })
        }),
        Proto::Resp3 => decode_resp3(buf).map(|f| {
            f.map(|(frame, used)| {
                let ok = match frame {
                    Frame3::Array { data, .. } => data.iter().all(|item| match item {
                        Frame3::BlobString { data: (a, b), .. } => {
                            args.push((base + a, base + b));
                            true
                        }
                        _ => false,
                    }),
                    Frame3::Null => true,
                    _ => false,
                };
                (ok, used)
            })
        }),
    };
    match decoded {
        Ok(Some((true, used))) if args.len() == before => Ok(Decoded::Nothing(used)),
        Ok(Some((true, used))) => Ok(Decoded::Request(used)),
        Ok(Some((false, _))) | Err(_) => {
            args.truncate(before);
            // Name the problem as Redis does; the header scan finds it.
            check_header(buf, bulk_max)?;
            Err(ProtocolError(match decoded {
                Err(e) => e.details().to_owned(),
                _ => "expected '$', got something else".to_owned(),
            }))
        }
        Ok(None) => {
            check_header(buf, bulk_max)?;
            Ok(Decoded::Incomplete)
        }
    }
}

/// Checks the headers of a request whose body may not have arrived yet: the argument count
/// and each argument's declared length, as far as they are in `buf`.
fn check_header(buf: &[u8], bulk_max: usize) -> Result<(), ProtocolError> {
    let line = |from: usize| -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let number = |from: usize, to: usize| -> Option<i64> {
        std::str::from_utf8(&buf[from..to])
            .ok()?
            .parse::<i64>()
            .ok()
    };
    let invalid_multibulk = || ProtocolError("invalid multibulk length".to_owned());
    let invalid_bulk = || ProtocolError("invalid bulk length".to_owned());
    let Some(end) = line(1) else {
        return if buf.len() > INLINE_LEN_MAX {
            Err(invalid_multibulk())
        } else {
            Ok(())
        };
    };
    let n = number(1, end).ok_or_else(invalid_multibulk)?;
    if n > ARGS_MAX {
        return Err(invalid_multibulk());
    }
    let mut pos = end + 2;
    for _ in 0..n.max(0) {
        let Some(&kind) = buf.get(pos) else {
            return Ok(());
        };
        if kind != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(kind).escape_default()
            )));
        }
        let Some(end) = line(pos + 1) else {
            return if buf.len() - pos > 32 {
                Err(invalid_bulk())
            } else {
                Ok(())
            };
        };
        let len = number(pos + 1, end).ok_or_else(invalid_bulk)?;
        if len < 0 || len as u64 > bulk_max as u64 {
            return Err(invalid_bulk());
        }
        pos = end + 2 + len as usize + 2;
    }
    Ok(())
}

/// An inline command: one line of space-separated words.
fn decode_inline(
    buf: &[u8],
    base: usize,
    args: &mut Vec<(usize, usize)>,
) -> Result<Decoded, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_LEN_MAX {
            Err(ProtocolError("too big inline request".to_owned()))
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let before = args.len();
    let mut i = 0;
    while i < line_end {
        while i < line_end && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < line_end && !buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if start < i {
            args.push((base + start, base + i));
        }
    }
    Ok(if args.len() == before {
        Decoded::Nothing(nl + 1)
    } else {
        Decoded::Request(nl + 1)
    })
}

/// Serves one client until it closes, sends QUIT, breaks the protocol, or the server stops.
pub async fn serve(mut stream: TcpStream, ctx: Rc<Ctx>, shutdown: Rc<Shutdown>) {
    let counters = &ctx.shard.counters;
    Counters::add(&counters.connections, 1);
    Counters::add(&counters.connections_total, 1);
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let mut session = Session {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        quit: false,
        levels: None,
    };
    let result = run(&mut stream, &ctx, &shutdown, &mut session).await;
    if let Err(e) = result {
        tracing::debug!(client = session.id, error = %e, "connection closed");
    }
    counters.connections.set(counters.connections.get() - 1);
    if let Err(e) = stream.close().await {
        tracing::debug!(error = %e, "close failed");
    }
}

async fn run(
    stream: &mut TcpStream,
    ctx: &Ctx,
    shutdown: &Shutdown,
    session: &mut Session,
) -> std::io::Result<()> {
    let bulk_max = bulk_len_max(ctx.config.max_value_bytes);
    let buf_max = query_buf_max(ctx.config.max_value_bytes);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let (mut start, mut end) = (0usize, 0usize);
    let mut reply = Reply::new(READ_BUF_BYTES);
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut bounds: Vec<(usize, usize)> = Vec::new();
    loop {
        if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            } else if buf.len() < buf_max {
                buf.resize((buf.len() * 2).min(buf_max), 0);
            } else {
                reply.error("ERR Protocol error: request exceeds the query buffer limit");
                stream.write_all(&reply.buf).await?;
                return Ok(());
            }
        }
        let read =
            futures_lite::future::or(async { Some(stream.read(&mut buf[end..]).await) }, async {
                shutdown.wait().await;
                None
            })
            .await;
        let n = match read {
            Some(r) => r?,
            None => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        end += n;

        ranges.clear();
        bounds.clear();
        let mut broken = None;
        while start < end {
            let before = ranges.len();
            match decode(&buf[start..end], start, reply.proto, bulk_max, &mut ranges) {
                Ok(Decoded::Request(used)) => {
                    bounds.push((before, ranges.len()));
                    start += used;
                }
                Ok(Decoded::Nothing(used)) => start += used,
                Ok(Decoded::Incomplete) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if !bounds.is_empty() {
            let args: Vec<&[u8]> = ranges.iter().map(|&(a, b)| &buf[a..b]).collect();
            let requests: Vec<&[&[u8]]> = bounds.iter().map(|&(a, b)| &args[a..b]).collect();
            for chunk in requests.chunks(batch_len(&requests)) {
                ctx.run_batch(chunk, &mut reply, session).await;
                if reply.buf.len() >= REPLY_FLUSH_BYTES {
                    stream.write_all(&reply.buf).await?;
                    reply.buf.clear();
                }
                if session.quit {
                    break;
                }
            }
        }
        if let Some(e) = &broken {
            reply.error(&format!("ERR Protocol error: {}", e.0));
            Counters::add(&ctx.shard.counters.errors, 1);
        }
        if !reply.buf.is_empty() {
            stream.write_all(&reply.buf).await?;
            reply.buf.clear();
        }
        if broken.is_some() || session.quit {
            return Ok(());
        }
        if start == end {
            start = 0;
            end = 0;
            if buf.len() > READ_BUF_BYTES {
                // Give back the memory of a large request once it is served.
                buf.truncate(READ_BUF_BYTES);
                buf.shrink_to_fit();
            }
        }
    }
}

/// Requests per `run_batch` call: all of them, unless replies could pile up (MGET of many
/// keys), in which case they run in slices so replies are flushed in between.
fn batch_len(requests: &[&[&[u8]]]) -> usize {
    /// Arguments per slice before replies are flushed.
    const ARGS_PER_SLICE: usize = 4096;
    let args: usize = requests.iter().map(|r| r.len()).sum();
    if args <= ARGS_PER_SLICE {
        requests.len().max(1)
    } else {
        (requests.len() * ARGS_PER_SLICE / args).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], proto: Proto) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let mut args = Vec::new();
            match decode(&input[pos..], pos, proto, 100, &mut args)? {
                Decoded::Request(used) => {
                    out.push(args.iter().map(|&(a, b)| input[a..b].to_vec()).collect());
                    pos += used;
                }
                Decoded::Nothing(used) => pos += used,
                Decoded::Incomplete => return Ok(out),
            }
        }
    }

    #[test]
    fn pipelined_requests_both_protocols() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\n*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET";
        for proto in [Proto::Resp2, Proto::Resp3] {
            let reqs = decode_all(input, proto).unwrap();
            assert_eq!(
                reqs,
                vec![vec![b"GET".to_vec(), b"k".to_vec()], vec![b"PING".to_vec()]]
            );
        }
    }

    #[test]
    fn inline_commands() {
        let reqs = decode_all(b"PING\r\nset  a   b\n\r\n", Proto::Resp2).unwrap();
        assert_eq!(
            reqs,
            vec![
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"a".to_vec(), b"b".to_vec()]
            ]
        );
        let long = vec![b'a'; INLINE_LEN_MAX + 1];
        assert!(decode_all(&long, Proto::Resp2).is_err());
    }

    #[test]
    fn broken_framing_is_named_like_redis() {
        let err = |input: &[u8]| decode_all(input, Proto::Resp2).unwrap_err().0;
        assert_eq!(err(b"*1\r\n$999999999\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$-5\r\nab\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$abc\r\n"), "invalid bulk length");
        assert_eq!(err(b"*99999999999\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*1\r\n:5\r\n"), "expected '$', got ':'");
        // A partial request within limits waits for more.
        assert_eq!(
            decode_all(b"*2\r\n$50\r\nabc", Proto::Resp2).unwrap().len(),
            0
        );
    }

    #[test]
    fn decoder_never_panics_on_junk() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..200))| {
            let _ = decode_all(&bytes, Proto::Resp2);
            let _ = decode_all(&bytes, Proto::Resp3);
        });
    }

    #[test]
    fn batch_slices() {
        let one: &[&[u8]] = &[b"GET", b"k"];
        let reqs = vec![one; 10];
        assert_eq!(batch_len(&reqs), 10);
        let big: Vec<&[u8]> = vec![b"k"; 10_000];
        let reqs = vec![&big[..]; 4];
        assert_eq!(batch_len(&reqs), 1);
    }
}
