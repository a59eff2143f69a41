//! Writing RESP2/RESP3 replies straight into a connection's output buffer.
//!
//! Replies are encoded by hand rather than built as frames: one buffer per read batch, no
//! allocation per reply. Requests are decoded with the `redis-protocol` crate (see
//! [`crate::front::conn`]).

/// The protocol a connection speaks; `HELLO 3` switches to RESP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// A connection's reply buffer.
#[derive(Debug)]
pub struct Reply {
    pub buf: Vec<u8>,
    pub proto: Proto,
}

impl Reply {
    pub fn new(capacity: usize) -> Reply {
        Reply {
            buf: Vec::with_capacity(capacity),
            proto: Proto::Resp2,
        }
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply; `msg` starts with its code (`ERR ...`). Newlines become spaces, as in
    /// Redis, so the reply stays one line.
    pub fn error(&mut self, msg: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.buf.push(b':');
        push_int(&mut self.buf, n);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk(&mut self, bytes: &[u8]) {
        self.buf.push(b'$');
        push_int(&mut self.buf, bytes.len() as i64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk_or_null(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Proto::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.buf.push(b'*');
        push_int(&mut self.buf, len as i64);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A set of `len` items: a RESP3 set, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.array(len),
            Proto::Resp3 => {
                self.buf.push(b'~');
                push_int(&mut self.buf, len as i64);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A map of `len` pairs: a RESP3 map, or a flat array of 2 × len items in RESP2.
    pub fn map(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.array(len * 2),
            Proto::Resp3 => {
                self.buf.push(b'%');
                push_int(&mut self.buf, len as i64);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Long text (INFO): a RESP3 verbatim string, a bulk string in RESP2.
    pub fn text(&mut self, text: &str) {
        match self.proto {
            Proto::Resp2 => self.bulk(text.as_bytes()),
            Proto::Resp3 => {
                self.buf.push(b'=');
                push_int(&mut self.buf, text.len() as i64 + 4);
                self.buf.extend_from_slice(b"\r\ntxt:");
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Appends the decimal form of `n` without going through `fmt`.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut r = Reply::new(64);
        r.ok();
        r.int(-42);
        r.bulk(b"hi");
        r.null();
        r.array(2);
        r.error("ERR bad\r\nthing");
        assert_eq!(
            r.buf,
            b"+OK\r\n:-42\r\n$2\r\nhi\r\n$-1\r\n*2\r\n-ERR bad  thing\r\n"
        );
        r.buf.clear();
        r.proto = Proto::Resp3;
        r.null();
        r.map(1);
        r.set(2);
        r.text("a");
        assert_eq!(r.buf, b"_\r\n%1\r\n~2\r\n=5\r\ntxt:a\r\n");
        r.buf.clear();
        r.proto = Proto::Resp2;
        r.set(2);
        assert_eq!(r.buf, b"*2\r\n");
    }

    #[test]
    fn integers() {
        for n in [0, 1, 9, 10, 12345, -1, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_int(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
