//! Entry point for fuzzing the frame stream reader and the messages frames carry (the `node/fuzz` crate, run with
//! `cargo +nightly fuzz run frame_stream`), and for replaying inputs that once broke it as
//! unit tests in stable `cargo test`. It takes arbitrary bytes and must not panic, hang or
//! allocate more than one frame; what it asserts is below.
//!
//! Input: byte 0 picks the mode (bit 0) and seeds the chunk sizes (bits 1..8); the rest is
//! - mode 0: the raw byte stream, as a peer would send it (damage, bad lengths, garbage);
//! - mode 1: payloads `[len u16 le][bytes]...`, sealed into valid frames here, so that the
//!   checksum lets arbitrary bytes through to `rkyv::access` of the mesh's and the
//!   cluster's messages.

use rkyv::rancor;

use shoal_cluster::frame::{
    Decoder, FrameBuf, FrameError, HEADER_LEN, PAYLOAD_ALIGN, open, seal, start,
};
use shoal_cluster::message::{ArchivedEnvelope, Envelope};

use crate::mesh::message::{ArchivedShardOp, ArchivedShardReply, ShardOp, ShardReply};

/// Payload limit of the fuzzed decoder: above any mode-1 payload (`u16::MAX`), small enough
/// that a header declaring a large frame does not slow the fuzzer down.
const PAYLOAD_MAX: usize = 64 << 10;
/// Largest chunk handed to the decoder at once is `1 << CHUNK_SCALE_MAX`.
const CHUNK_SCALE_MAX: u64 = 13;

/// Feeds the stream to a [`Decoder`] in chunks and checks every frame it yields.
pub fn frame_stream(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let sealed = control & 1 == 1;
    let (stream, payloads) = if sealed {
        seal_payloads(rest)
    } else {
        (rest.to_vec(), Vec::new())
    };

    let (whole, whole_err) = decode(&stream, &mut |_| stream.len().max(1));
    let mut rng = u64::from(control >> 1) ^ ((data.len() as u64) << 8);
    let (chunked, chunked_err) = decode(&stream, &mut |left| {
        rng = splitmix(rng);
        let scale = (rng >> 58) % (CHUNK_SCALE_MAX + 1);
        (1 + (rng as usize) % (1 << scale)).min(left)
    });
    assert_eq!(whole_err, chunked_err, "chunking changed the error");
    assert_eq!(whole.len(), chunked.len(), "chunking changed the frames");
    for (a, b) in whole.iter().zip(&chunked) {
        assert_eq!(a.as_slice(), b.as_slice(), "chunking changed a frame");
    }
    if sealed {
        assert_eq!(whole_err, None, "frames sealed here must decode");
        assert_eq!(whole.len(), payloads.len());
    }

    for (i, frame) in whole.iter().enumerate() {
        let (_, payload) = open(frame).expect("the decoder returns verified frames");
        assert_eq!(payload.as_ptr() as usize % PAYLOAD_ALIGN, 0);
        if sealed {
            assert_eq!(payload, &payloads[i][..]);
        }
        if let Ok(op) = rkyv::access::<ArchivedShardOp, rancor::Error>(payload) {
            let op = rkyv::deserialize::<ShardOp, rancor::Error>(op);
            assert!(op.is_ok(), "a validated ShardOp archive must deserialize");
        }
        if let Ok(message) = rkyv::access::<ArchivedEnvelope, rancor::Error>(payload) {
            let message = rkyv::deserialize::<Envelope, rancor::Error>(message);
            assert!(
                message.is_ok(),
                "a validated cluster Envelope archive must deserialize"
            );
        }
        if let Ok(reply) = rkyv::access::<ArchivedShardReply, rancor::Error>(payload) {
            let reply = rkyv::deserialize::<ShardReply, rancor::Error>(reply);
            assert!(
                reply.is_ok(),
                "a validated ShardReply archive must deserialize"
            );
        }
    }
}

/// Decodes `stream` handing the decoder `chunk(bytes left)` bytes at a time.
fn decode(
    stream: &[u8],
    chunk: &mut dyn FnMut(usize) -> usize,
) -> (Vec<FrameBuf>, Option<FrameError>) {
    let mut decoder = Decoder::new(PAYLOAD_MAX);
    let mut frames = Vec::new();
    let mut input = stream;
    while !input.is_empty() {
        let mut part = &input[..chunk(input.len())];
        input = &input[part.len()..];
        while !part.is_empty() {
            match decoder.decode(part) {
                Ok((used, frame)) => {
                    assert!(used > 0 || frame.is_some(), "the decoder made no progress");
                    assert!(decoder.allocated() <= HEADER_LEN + PAYLOAD_MAX + PAYLOAD_ALIGN);
                    part = &part[used..];
                    frames.extend(frame);
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Mode 1: the payloads in `data` and the stream of frames sealing them (ids 0, 1, ...).
fn seal_payloads(mut data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut stream = Vec::new();
    let mut payloads = Vec::new();
    while let [lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        let mut frame = start(len);
        frame.extend_from_slice(payload);
        if seal(&mut frame, payloads.len() as u64).is_err() {
            break;
        }
        stream.extend_from_slice(&frame);
        payloads.push(payload.to_vec());
        data = tail;
    }
    (stream, payloads)
}

fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::message::PutEntry;
    use proptest::prelude::*;
    use shoal_cluster::message::{Body, Reply, Request};
    use shoal_cluster::vv::Dot;

    /// Mode-1 inputs carrying real archived messages: the fuzzer's seeds.
    fn seeds() -> Vec<Vec<u8>> {
        let ops = [
            ShardOp::Get {
                keys: vec![b"k1".to_vec(), b"key-two".to_vec()],
            },
            ShardOp::Put {
                entries: vec![PutEntry {
                    key: b"k".to_vec(),
                    value: vec![7; 40],
                    expires_at_ms: 12,
                }],
            },
            ShardOp::Del { keys: vec![] },
            ShardOp::Scan {
                from_hash: 99,
                count: 10,
            },
            ShardOp::Count,
        ];
        let replies = [
            ShardReply::Values(vec![None, Some(b"v".to_vec())]),
            ShardReply::Error("boom".into()),
        ];
        let messages = [
            Envelope {
                from: 7,
                from_shard: 1,
                view: 5,
                body: Body::Request(Request::Update {
                    key: b"k".to_vec(),
                    context: Some(vec![1, 2, 3]),
                    value: Some(b"v".to_vec()),
                }),
            },
            Envelope {
                from: 9,
                from_shard: 0,
                view: 5,
                body: Body::Reply(Reply::Updated {
                    key: b"k".to_vec(),
                    dot: Dot {
                        actor: 9,
                        counter: 3,
                    },
                    versions: vec![4, 5],
                }),
            },
        ];
        let mut archives: Vec<Vec<u8>> = ops
            .iter()
            .map(|op| rkyv::to_bytes::<rancor::Error>(op).unwrap().to_vec())
            .collect();
        archives.extend(
            replies
                .iter()
                .map(|r| rkyv::to_bytes::<rancor::Error>(r).unwrap().to_vec()),
        );
        archives.extend(
            messages
                .iter()
                .map(|m| rkyv::to_bytes::<rancor::Error>(m).unwrap().to_vec()),
        );
        let mut inputs: Vec<Vec<u8>> = archives
            .iter()
            .map(|a| {
                let mut input = vec![1];
                input.extend_from_slice(&(a.len() as u16).to_le_bytes());
                input.extend_from_slice(a);
                input
            })
            .collect();
        // All of them in one stream, and the same stream raw (mode 0).
        let mut all = vec![0x1f];
        for input in &inputs {
            all.extend_from_slice(&input[1..]);
        }
        let mut raw = vec![0x1e];
        raw.extend_from_slice(&seal_payloads(&all[1..]).0);
        inputs.push(all);
        inputs.push(raw);
        inputs
    }

    #[test]
    fn seeds_decode_to_messages() {
        for input in seeds() {
            frame_stream(&input);
        }
        let (stream, payloads) = seal_payloads(&seeds()[0][1..]);
        assert_eq!(payloads.len(), 1);
        let (frames, err) = decode(&stream, &mut |left| left);
        assert_eq!(err, None);
        let (_, payload) = open(&frames[0]).unwrap();
        assert!(rkyv::access::<ArchivedShardOp, rancor::Error>(payload).is_ok());
        let (stream, _) = seal_payloads(&seeds()[7][1..]);
        let (frames, _) = decode(&stream, &mut |left| left);
        let (_, payload) = open(&frames[0]).unwrap();
        assert!(rkyv::access::<ArchivedEnvelope, rancor::Error>(payload).is_ok());
    }

    #[test]
    fn empty_and_tiny_inputs() {
        frame_stream(&[]);
        frame_stream(&[0]);
        frame_stream(&[1]);
        frame_stream(&[1, 0, 0]);
        frame_stream(&[0, 0x10]);
    }

    /// Writes the seeds to `node/fuzz/seeds/frame_stream` (run by hand after a format change).
    #[test]
    #[ignore = "writes files into the source tree"]
    fn write_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frame_stream");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }

    proptest! {
        #[test]
        fn random_inputs_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            frame_stream(&data);
        }

        #[test]
        fn damaged_seeds_never_panic(
            seed in 0usize..11,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut input = seeds()[seed].clone();
            for (at, bits) in flips {
                let at = at % input.len();
                input[at] ^= bits;
            }
            frame_stream(&input);
        }
    }
}
