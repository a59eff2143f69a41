//! The message frame shared by the shard mesh and (later) the peer transport between nodes.
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

use rkyv::util::AlignedVec;

/// Frame format version, in the top bits of the first header word. Never reuse a value.
pub const FRAME_VERSION: u32 = 1;
/// Header bytes before the payload: `len_version u32 + crc u32 + request_id u64`.
pub const HEADER_LEN: usize = 4 + 4 + 8;
/// Alignment of the payload (rkyv archives are read in place).
pub const PAYLOAD_ALIGN: usize = 16;
const LEN_BITS: u32 = 28;
const LEN_MASK: u32 = (1 << LEN_BITS) - 1;
/// Largest payload: 256 MiB - 1, room for a 64 MiB engine value and its metadata.
pub const PAYLOAD_LEN_MAX: usize = LEN_MASK as usize;

const _: () = assert!(HEADER_LEN % PAYLOAD_ALIGN == 0);
const _: () = assert!(FRAME_VERSION < (1 << (32 - LEN_BITS)));
const _: () = assert!(PAYLOAD_LEN_MAX >= shoal_engine::types::VALUE_LEN_MAX * 2);

/// A frame being built or received: header and payload in one aligned buffer.
pub type FrameBuf = AlignedVec<PAYLOAD_ALIGN>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
    }
}
