//! The message frame: how Shoal cuts its messages out of a byte stream and checks them.
//! Peer connections between nodes and the shard mesh inside a node carry the same frames.
//!
//! Layout (format version 1; integers little-endian):
//!
//! | offset | field       | type | meaning                                                  |
//! |--------|-------------|------|----------------------------------------------------------|
//! | 0      | len_version | u32  | bits 0..28: payload length; bits 28..32: `FRAME_VERSION` |
//! | 4      | crc         | u32  | crc32c of `request_id ‖ payload`                         |
//! | 8      | request_id  | u64  | matches a reply to its request                           |
//! | 16     | payload     | len  | an rkyv archive, starting 16-byte aligned                |
//!
//! The header is 16 bytes, so a payload written into a 16-aligned buffer right after it is
//! aligned for `rkyv::access` without copying. A reader checks the version, the length and
//! the checksum before it lets rkyv look at the payload: rkyv validates structure, the crc
//! catches bytes that changed on the way.
//!
//! On a byte stream (the peer transport's TCP connections) frames follow each other with
//! nothing in between; [`Decoder`] cuts them out of whatever chunks the socket returns.

use rkyv::util::AlignedVec;

/// Frame format version, in the top bits of the first header word. Never reuse a value.
pub const FRAME_VERSION: u32 = 1;
/// Header bytes before the payload: `len_version u32 + crc u32 + request_id u64`.
pub const HEADER_LEN: usize = 4 + 4 + 8;
/// Alignment of the payload (rkyv archives are read in place).
pub const PAYLOAD_ALIGN: usize = 16;
const LEN_BITS: u32 = 28;
const LEN_MASK: u32 = (1 << LEN_BITS) - 1;
/// Largest payload: 256 MiB - 1, the most the length field holds; a node checks that its
/// largest value and its metadata fit.
pub const PAYLOAD_LEN_MAX: usize = LEN_MASK as usize;

const _: () = assert!(HEADER_LEN % PAYLOAD_ALIGN == 0);
const _: () = assert!(FRAME_VERSION < (1 << (32 - LEN_BITS)));

/// Payload bytes [`encode`] reserves up front: most messages (a key, a small value, versions)
/// fit without the buffer growing.
const ENCODE_CAPACITY: usize = 64;

/// A frame being built or received: header and payload in one aligned buffer.
pub type FrameBuf = AlignedVec<PAYLOAD_ALIGN>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("frame version {0}, this build reads version {FRAME_VERSION}")]
    Version(u32),
    #[error("frame says {declared} payload bytes but carries {actual}")]
    Length { declared: usize, actual: usize },
    #[error("frame checksum mismatch: header {expected:#010x}, computed {actual:#010x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("payload of {0} bytes is over the frame limit")]
    TooLong(usize),
    #[error("payload is not aligned to {PAYLOAD_ALIGN} bytes")]
    Misaligned,
    #[error("payload cannot be archived: {0}")]
    Encoding(String),
}

/// A new buffer with room for the header; the payload is appended after it.
pub fn start(capacity: usize) -> FrameBuf {
    let mut buf = FrameBuf::with_capacity(HEADER_LEN + capacity);
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf
}

/// Fills in the header of a buffer made by [`start`] whose payload has been appended.
pub fn seal(buf: &mut FrameBuf, request_id: u64) -> Result<(), FrameError> {
    debug_assert!(buf.len() >= HEADER_LEN);
    let len = buf.len() - HEADER_LEN;
    if len > PAYLOAD_LEN_MAX {
        return Err(FrameError::TooLong(len));
    }
    let id = request_id.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&id), &buf[HEADER_LEN..]);
    let header = buf.as_mut_slice();
    header[0..4].copy_from_slice(&((FRAME_VERSION << LEN_BITS) | len as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..16].copy_from_slice(&id);
    Ok(())
}

/// Archives `value` into a sealed frame with request id `id`.
pub fn encode<T>(id: u64, value: &T) -> Result<FrameBuf, FrameError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                FrameBuf,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    let buf = start(ENCODE_CAPACITY);
    let mut buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, buf)
        .map_err(|e| FrameError::Encoding(e.to_string()))?;
    seal(&mut buf, id)?;
    Ok(buf)
}

/// Checks a whole frame and returns its request id and payload.
pub fn open(frame: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    let (header, payload) = frame
        .split_at_checked(HEADER_LEN)
        .ok_or(FrameError::Short(frame.len()))?;
    let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let version = word >> LEN_BITS;
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let declared = (word & LEN_MASK) as usize;
    if declared != payload.len() {
        return Err(FrameError::Length {
            declared,
            actual: payload.len(),
        });
    }
    let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let id: [u8; 8] = [
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&id), payload);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    if (payload.as_ptr() as usize) % PAYLOAD_ALIGN != 0 {
        return Err(FrameError::Misaligned);
    }
    Ok((u64::from_le_bytes(id), payload))
}

/// Payload length declared by a frame header, for a stream reader deciding how much to read.
pub fn declared_len(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let version = word >> LEN_BITS;
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    Ok((word & LEN_MASK) as usize)
}

/// A sans-IO stream reader: bytes in, in any chunking, whole verified frames out.
///
/// Memory is bounded by one frame: the header is collected in a fixed array, and the frame's
/// buffer is allocated only once its header is known to carry a supported version and a
/// length within the caller's limit. An error leaves the stream out of step (nothing marks
/// where the next frame starts), so it is sticky: every later call returns it again.
#[derive(Debug)]
pub struct Decoder {
    payload_max: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The frame being filled and the length it will have when complete.
    frame: Option<(FrameBuf, usize)>,
    failed: Option<FrameError>,
}

impl Decoder {
    /// A reader refusing payloads over `payload_max` bytes (at most [`PAYLOAD_LEN_MAX`]).
    pub fn new(payload_max: usize) -> Self {
        Decoder {
            payload_max: payload_max.min(PAYLOAD_LEN_MAX),
            header: [0; HEADER_LEN],
            header_len: 0,
            frame: None,
            failed: None,
        }
    }

    /// Consumes a prefix of `input` and returns how many bytes it took and, when they
    /// completed one, the frame (already checked by [`open`]). It never consumes past the end
    /// of the frame it returns: call again with the rest of `input`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<FrameBuf>), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut used = 0;
        let (mut buf, want) = match self.frame.take() {
            Some(partial) => partial,
            None => {
                let take = (HEADER_LEN - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[..take]);
                self.header_len += take;
                used = take;
                if self.header_len < HEADER_LEN {
                    return Ok((used, None));
                }
                self.header_len = 0;
                let declared = declared_len(&self.header).map_err(|e| self.fail(e))?;
                if declared > self.payload_max {
                    return Err(self.fail(FrameError::TooLong(declared)));
                }
                let mut buf = FrameBuf::with_capacity(HEADER_LEN + declared);
                buf.extend_from_slice(&self.header);
                (buf, HEADER_LEN + declared)
            }
        };
        let take = (want - buf.len()).min(input.len() - used);
        buf.extend_from_slice(&input[used..used + take]);
        used += take;
        if buf.len() < want {
            self.frame = Some((buf, want));
            return Ok((used, None));
        }
        match open(&buf) {
            Ok(_) => Ok((used, Some(buf))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes allocated for the frame in progress (0 between frames).
    pub fn allocated(&self) -> usize {
        self.frame.as_ref().map_or(0, |(buf, _)| buf.capacity())
    }

    /// Whether the stream ended cleanly here: no partial frame and no error.
    pub fn at_boundary(&self) -> bool {
        self.failed.is_none() && self.frame.is_none() && self.header_len == 0
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.frame = None;
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(id: u64, payload: &[u8]) -> FrameBuf {
        let mut buf = start(payload.len());
        buf.extend_from_slice(payload);
        seal(&mut buf, id).unwrap();
        buf
    }

    #[test]
    fn round_trip() {
        let buf = frame(42, b"hello");
        let (id, payload) = open(&buf).unwrap();
        assert_eq!(id, 42);
        assert_eq!(payload, b"hello");
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        assert_eq!(declared_len(&header).unwrap(), 5);
    }

    #[test]
    fn rejects_damage() {
        let buf = frame(7, b"payload bytes");
        assert_eq!(open(&buf[..10]), Err(FrameError::Short(10)));
        let mut bad = buf.clone();
        bad.as_mut_slice()[HEADER_LEN + 3] ^= 1;
        assert!(matches!(open(&bad), Err(FrameError::Checksum { .. })));
        let mut bad = buf.clone();
        bad.as_mut_slice()[8] ^= 1; // request id is covered too
        assert!(matches!(open(&bad), Err(FrameError::Checksum { .. })));
        let mut bad = buf.clone();
        bad.as_mut_slice()[3] = 0x20; // version 2
        assert_eq!(open(&bad), Err(FrameError::Version(2)));
        let mut short = frame(7, b"payload bytes");
        short.as_mut_slice()[0] = 3;
        assert!(matches!(open(&short), Err(FrameError::Length { .. })));
    }

    /// Feeds `chunks` in order; returns the frames and the error that stopped the stream.
    fn feed<'a>(
        dec: &mut Decoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<FrameBuf>, Option<FrameError>) {
        let mut frames = Vec::new();
        for mut chunk in chunks {
            while !chunk.is_empty() {
                match dec.decode(chunk) {
                    Ok((used, frame)) => {
                        assert!(used > 0 || frame.is_some(), "no progress");
                        chunk = &chunk[used..];
                        frames.extend(frame);
                    }
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    fn stream(frames: &[FrameBuf]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    #[test]
    fn decoder_reads_frames_byte_by_byte() {
        let sent = [frame(1, b"one"), frame(2, b""), frame(3, &[7u8; 100])];
        let bytes = stream(&sent);
        let mut dec = Decoder::new(1024);
        let (got, err) = feed(&mut dec, bytes.chunks(1));
        assert_eq!(err, None);
        assert!(dec.at_boundary());
        assert_eq!(got.len(), 3);
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(g.as_slice(), s.as_slice());
            assert_eq!((g.as_ptr() as usize + HEADER_LEN) % PAYLOAD_ALIGN, 0);
        }
        assert_eq!(open(&got[2]).unwrap(), (3, &[7u8; 100][..]));
    }

    #[test]
    fn decoder_stops_at_frame_end() {
        let bytes = stream(&[frame(1, b"ab"), frame(2, b"cd")]);
        let mut dec = Decoder::new(16);
        let (used, first) = dec.decode(&bytes).unwrap();
        assert_eq!(used, HEADER_LEN + 2);
        assert_eq!(open(&first.unwrap()).unwrap(), (1, &b"ab"[..]));
        let (used, second) = dec.decode(&bytes[used..]).unwrap();
        assert_eq!(used, HEADER_LEN + 2);
        assert_eq!(open(&second.unwrap()).unwrap(), (2, &b"cd"[..]));
    }

    #[test]
    fn decoder_refuses_long_frames_before_allocating() {
        let big = frame(1, &[0u8; 101]);
        let mut dec = Decoder::new(100);
        assert_eq!(
            dec.decode(&big[..HEADER_LEN]).err(),
            Some(FrameError::TooLong(101))
        );
        assert_eq!(dec.allocated(), 0);
        // Sticky: the stream is out of step, even for a good frame.
        let good = frame(2, b"x");
        assert_eq!(dec.decode(&good).err(), Some(FrameError::TooLong(101)));
        assert!(!dec.at_boundary());
    }

    #[test]
    fn decoder_reports_version_and_checksum() {
        let mut bad = frame(1, b"abc");
        bad.as_mut_slice()[3] = 0x20;
        assert_eq!(
            Decoder::new(16).decode(&bad).err(),
            Some(FrameError::Version(2))
        );
        let mut bad = frame(1, b"abc");
        bad.as_mut_slice()[HEADER_LEN] ^= 1;
        let mut dec = Decoder::new(16);
        let (_, err) = feed(&mut dec, bad.chunks(2));
        assert!(matches!(err, Some(FrameError::Checksum { .. })));
        assert_eq!(dec.allocated(), 0);
    }

    #[test]
    fn decoder_holds_a_partial_frame() {
        let f = frame(9, &[1u8; 40]);
        let mut dec = Decoder::new(64);
        let (used, got) = dec.decode(&f[..HEADER_LEN + 10]).unwrap();
        assert_eq!(used, HEADER_LEN + 10);
        assert!(got.is_none());
        assert!(!dec.at_boundary());
        assert!(dec.allocated() >= HEADER_LEN + 40);
        let (used, got) = dec.decode(&f[HEADER_LEN + 10..]).unwrap();
        assert_eq!(used, 30);
        assert_eq!(got.unwrap().as_slice(), f.as_slice());
        assert_eq!(dec.allocated(), 0);
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(id in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let buf = frame(id, &payload);
            let (got_id, got) = open(&buf).unwrap();
            prop_assert_eq!(got_id, id);
            prop_assert_eq!(got, &payload[..]);
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = FrameBuf::new();
            buf.extend_from_slice(&bytes);
            let _ = open(&buf);
        }

        #[test]
        fn decoder_is_blind_to_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let sent: Vec<FrameBuf> =
                payloads.iter().enumerate().map(|(i, p)| frame(i as u64, p)).collect();
            let bytes = stream(&sent);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            let chunks = at.windows(2).map(|w| &bytes[w[0]..w[1]]);
            let mut dec = Decoder::new(300);
            let (got, err) = feed(&mut dec, chunks);
            prop_assert_eq!(err, None);
            prop_assert!(dec.at_boundary());
            prop_assert_eq!(got.len(), sent.len());
            for (g, s) in got.iter().zip(&sent) {
                prop_assert_eq!(g.as_slice(), s.as_slice());
            }
        }

        #[test]
        fn decoder_survives_random_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..64,
            limit in 0usize..4096,
        ) {
            let mut dec = Decoder::new(limit);
            for mut part in bytes.chunks(chunk) {
                while !part.is_empty() {
                    let Ok((used, _)) = dec.decode(part) else { break };
                    prop_assert!(dec.allocated() <= HEADER_LEN + limit + PAYLOAD_ALIGN);
                    part = &part[used..];
                }
            }
        }
    }
}
