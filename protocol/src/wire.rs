//! The wire format between two nodes: length-prefixed frames on one QUIC stream.
//!
//! ```text
//! frame   = len:u32be  body            (len = body length, at most MAX_FRAME)
//! body    = tag:u8  fields…
//! string  = len:u16be  utf8 bytes
//! bytes   = len:u32be  raw bytes
//! ```
//! Decoding is pure and total: every malformed, truncated or oversized input is a
//! [`DecodeError`] value, never a panic.
//!
//! Bodies of [`DEFLATE_FROM`] bytes or more may travel compressed, in one of two ways the
//! node agrees on with a peer at the QUIC handshake:
//!
//! - ALPN `amphi/2`: each body deflated on its own when that makes it smaller,
//!   `body = TAG_DEFLATED deflate(inner body)` ([`Frame::encode_deflated`]);
//! - ALPN `amphi/3`: every body into one deflate stream that lasts the session, flushed at
//!   the end of each frame, `body = TAG_STREAMED next piece of the stream`
//!   ([`Deflater::streaming`]). A frame can then refer back to the frames before it: the
//!   certificate ids, actor ids, org paths and field names that every case file repeats cost
//!   their bytes once per session instead of once per frame (a cold case file's frame
//!   shrinks by a further ~14 %, measured on the synthetic county).
//!
//! Case files travel as one change chunk and one attestation per change, and the chunks'
//! dependency hashes repeat the hashes beside them, the certificate ids repeat, and org
//! paths repeat: deflated, a cold case file's frames shrink to less than half. Every frame
//! is decoded whichever way it came (a streamed one only by a [`FrameDecoder`], which keeps
//! the stream). The receiver inflates at most [`MAX_FRAME`] bytes per frame, and an inner
//! body is never compressed again, so a small frame cannot become a large one past the same
//! limit a plain frame has.

use crate::attest::Attestation;
use crate::ids::DocId;
use crate::inflate::{InflateError, StreamInflater, inflate_at_most};
use crate::org::OrgPath;
use crate::reconcile::{Fingerprint, MAX_LISTED, MAX_RANGES, Payload, Range};

/// Version spoken by this build; a peer with another version is refused at hello.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame body accepted (a whole large case file fits many times over).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Most attestations in one sync frame.
pub const MAX_ATTESTATIONS: usize = 65_536;
/// Largest certificate accepted on the wire.
pub const MAX_CERTIFICATE: usize = 16 * 1024;
/// Smallest body worth deflating.
pub const DEFLATE_FROM: usize = 128;
/// Length of a heads digest.
pub const DIGEST_LEN: usize = 16;

/// A digest of a document's heads: equal digests mean equal documents.
pub type Digest = [u8; DIGEST_LEN];

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame each way: who I am and what I speak.
    Hello {
        /// Protocol version.
        version: u16,
        /// The sender's org (must match its certificate).
        org: OrgPath,
    },
    /// A step of set reconciliation over the documents both sides may hold (see
    /// [`crate::reconcile`]).
    Reconcile {
        /// Ranges of document ids with a fingerprint or the sender's items.
        ranges: Vec<Range>,
    },
    /// An automerge sync message for one document, with the signatures of the changes it
    /// carries.
    Sync {
        /// The document.
        doc: DocId,
        /// Encoded `automerge::sync::Message`.
        message: Vec<u8>,
        /// One attestation per change carried.
        attestations: Vec<Attestation>,
    },
    /// A certificate (DER) that later attestations refer to, so the receiver can verify
    /// changes from authors it has never met.
    Certificate {
        /// The certificate.
        der: Vec<u8>,
    },
    /// The sender no longer holds `doc`: it left the sender's scope and was purged.
    Left {
        /// The document.
        doc: DocId,
    },
}

const TAG_HELLO: u8 = 1;
const TAG_RECONCILE: u8 = 2;
const TAG_SYNC: u8 = 4;
const TAG_CERTIFICATE: u8 = 5;
const TAG_LEFT: u8 = 6;
const TAG_DEFLATED: u8 = 7;
const TAG_STREAMED: u8 = 8;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("frame truncated")]
    Truncated,
    /// The declared length exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Unknown frame tag.
    #[error("unknown frame type {0}")]
    UnknownTag(u8),
    /// A field is invalid (bad UTF-8, bad org path, bad id, too many entries).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left over after the frame's fields.
    #[error("{0} trailing bytes after frame")]
    Trailing(usize),
}

impl Frame {
    /// Encodes the frame with its length prefix, its body plain.
    pub fn encode(&self) -> Vec<u8> {
        with_prefix(self.plain_body())
    }

    /// Encodes the frame with its length prefix, its body deflated when that is worth it and
    /// smaller: for a peer that takes deflated frames. (A session encodes with its own
    /// [`Deflater`].)
    pub fn encode_deflated(&self) -> Vec<u8> {
        Deflater::new().encode(self)
    }

    /// The plain body: the tag and the fields, never deflated (one frame has exactly one).
    pub fn plain_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Frame::Hello { version, org } => {
                body.push(TAG_HELLO);
                body.extend_from_slice(&version.to_be_bytes());
                put_str(&mut body, org.as_str());
            }
            Frame::Reconcile { ranges } => {
                body.push(TAG_RECONCILE);
                body.extend_from_slice(&(ranges.len() as u32).to_be_bytes());
                for r in ranges {
                    put_str(&mut body, &r.lower);
                    match &r.upper {
                        Some(u) => {
                            body.push(1);
                            put_str(&mut body, u);
                        }
                        None => body.push(0),
                    }
                    match &r.payload {
                        Payload::Fingerprint(f) => {
                            body.push(0);
                            body.extend_from_slice(&f.count.to_be_bytes());
                            body.extend_from_slice(&f.sum.to_be_bytes());
                        }
                        Payload::Items(items) => {
                            body.push(1);
                            body.extend_from_slice(&(items.len() as u32).to_be_bytes());
                            for (id, digest) in items {
                                put_str(&mut body, id.as_str());
                                body.extend_from_slice(digest);
                            }
                        }
                    }
                }
            }
            Frame::Sync {
                doc,
                message,
                attestations,
            } => {
                body.push(TAG_SYNC);
                put_str(&mut body, doc.as_str());
                put_bytes(&mut body, message);
                body.extend_from_slice(&(attestations.len() as u32).to_be_bytes());
                for a in attestations {
                    put_bytes(&mut body, &a.encode());
                }
            }
            Frame::Certificate { der } => {
                body.push(TAG_CERTIFICATE);
                put_bytes(&mut body, der);
            }
            Frame::Left { doc } => {
                body.push(TAG_LEFT);
                put_str(&mut body, doc.as_str());
            }
        }
        body
    }

    /// Reads the body length from a 4-byte prefix, refusing oversized frames before any
    /// body is read.
    pub fn body_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME {
            return Err(DecodeError::TooLarge(len));
        }
        if len == 0 {
            return Err(DecodeError::Truncated);
        }
        Ok(len)
    }

    /// Decodes a frame body (without its length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
        Frame::decode_body_sized(body).map(|(frame, _)| frame)
    }

    /// Decodes a frame body (without its length prefix), with the size of the plain body:
    /// for a deflated frame, what it takes in memory once inflated.
    pub fn decode_body_sized(body: &[u8]) -> Result<(Frame, usize), DecodeError> {
        if body.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge(body.len()));
        }
        if Frame::is_deflated(body) {
            let plain = inflate(&body[1..])?;
            return Frame::decode_inner(&plain);
        }
        Ok((Frame::decode_plain(body)?, body.len()))
    }

    /// Decodes what a compressed body inflated to: a plain body, never compressed again.
    fn decode_inner(plain: &[u8]) -> Result<(Frame, usize), DecodeError> {
        if Frame::is_deflated(plain) || Frame::is_streamed(plain) {
            return Err(DecodeError::Invalid(
                "compressed frame inside a compressed frame",
            ));
        }
        Ok((Frame::decode_plain(plain)?, plain.len()))
    }

    /// True when `body` is deflated on its own (see the module doc).
    pub fn is_deflated(body: &[u8]) -> bool {
        body.first() == Some(&TAG_DEFLATED)
    }

    /// True when `body` is the next piece of the session's deflate stream (see the module
    /// doc).
    pub fn is_streamed(body: &[u8]) -> bool {
        body.first() == Some(&TAG_STREAMED)
    }

    fn decode_plain(body: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Cursor { buf: body };
        let frame = match r.u8()? {
            TAG_HELLO => {
                let version = u16::from_be_bytes(r.array()?);
                let org = OrgPath::parse(r.str()?).map_err(|_| DecodeError::Invalid("org path"))?;
                Frame::Hello { version, org }
            }
            TAG_RECONCILE => {
                let n = u32::from_be_bytes(r.array()?) as usize;
                if n > MAX_RANGES {
                    return Err(DecodeError::Invalid("range count"));
                }
                let (mut ranges, mut listed) = (Vec::with_capacity(n.min(256)), 0usize);
                for _ in 0..n {
                    let lower = r.str()?.to_owned();
                    let upper = match r.u8()? {
                        0 => None,
                        1 => Some(r.str()?.to_owned()),
                        _ => return Err(DecodeError::Invalid("range bound")),
                    };
                    let payload = match r.u8()? {
                        0 => Payload::Fingerprint(Fingerprint {
                            count: u32::from_be_bytes(r.array()?),
                            sum: u128::from_be_bytes(r.array()?),
                        }),
                        1 => {
                            let k = u32::from_be_bytes(r.array()?) as usize;
                            listed += k;
                            if listed > MAX_LISTED {
                                return Err(DecodeError::Invalid("listed item count"));
                            }
                            let mut items = Vec::with_capacity(k.min(1024));
                            for _ in 0..k {
                                let id = DocId::parse(r.str()?)
                                    .map_err(|_| DecodeError::Invalid("document id"))?;
                                items.push((id, r.array()?));
                            }
                            Payload::Items(items)
                        }
                        _ => return Err(DecodeError::Invalid("range payload")),
                    };
                    ranges.push(Range {
                        lower,
                        upper,
                        payload,
                    });
                }
                Frame::Reconcile { ranges }
            }
            TAG_SYNC => {
                let doc =
                    DocId::parse(r.str()?).map_err(|_| DecodeError::Invalid("document id"))?;
                let message = r.bytes()?.to_vec();
                let n = u32::from_be_bytes(r.array()?) as usize;
                if n > MAX_ATTESTATIONS {
                    return Err(DecodeError::Invalid("attestation count"));
                }
                let mut attestations = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let a = Attestation::decode(r.bytes()?)
                        .ok_or(DecodeError::Invalid("attestation"))?;
                    attestations.push(a);
                }
                Frame::Sync {
                    doc,
                    message,
                    attestations,
                }
            }
            TAG_CERTIFICATE => {
                let der = r.bytes()?;
                if der.len() > MAX_CERTIFICATE {
                    return Err(DecodeError::Invalid("certificate size"));
                }
                Frame::Certificate { der: der.to_vec() }
            }
            TAG_LEFT => {
                let doc =
                    DocId::parse(r.str()?).map_err(|_| DecodeError::Invalid("document id"))?;
                Frame::Left { doc }
            }
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Trailing(r.buf.len()));
        }
        Ok(frame)
    }

    /// Decodes one whole frame (prefix and body) from `input`.
    pub fn decode(input: &[u8]) -> Result<Frame, DecodeError> {
        let prefix: [u8; 4] = input
            .get(..4)
            .ok_or(DecodeError::Truncated)?
            .try_into()
            .expect("4 bytes");
        let len = Frame::body_len(prefix)?;
        let body = input.get(4..4 + len).ok_or(DecodeError::Truncated)?;
        if input.len() > 4 + len {
            return Err(DecodeError::Trailing(input.len() - 4 - len));
        }
        Frame::decode_body(body)
    }
}

fn with_prefix(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Deflates frame bodies for one peer. It keeps one compressor: setting one up (its window
/// and tables, a few hundred KiB zeroed) costs more than deflating a small frame.
pub struct Deflater {
    compress: flate2::Compress,
    /// One stream for the whole session (`amphi/3`), not one per frame.
    streaming: bool,
    /// The stream failed: everything from now on goes plain (a receiver decodes plain
    /// frames whatever was agreed).
    broken: bool,
}

impl Default for Deflater {
    fn default() -> Deflater {
        Deflater::new()
    }
}

impl Deflater {
    /// A deflater at zlib's default level that deflates each frame on its own (`amphi/2`).
    pub fn new() -> Deflater {
        Deflater {
            compress: flate2::Compress::new(flate2::Compression::default(), false),
            streaming: false,
            broken: false,
        }
    }

    /// A deflater that deflates every frame into one stream for the session (`amphi/3`):
    /// its frames are decoded, in the order encoded, by one [`FrameDecoder`].
    pub fn streaming() -> Deflater {
        Deflater {
            streaming: true,
            ..Deflater::new()
        }
    }

    /// Encodes `frame` with its length prefix, its body compressed when that is worth it
    /// (deflated on its own only if that comes out smaller). Frames must be sent in the order
    /// they are encoded.
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let body = frame.plain_body();
        let compressed = if self.streaming {
            self.streamed(&body)
        } else {
            self.deflated(&body)
        };
        with_prefix(compressed.unwrap_or(body))
    }

    /// `body` as the stream's next piece behind [`TAG_STREAMED`], if it is worth it. Once
    /// a body went into the stream it must be sent, so this never declines on size.
    fn streamed(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() < DEFLATE_FROM || self.broken {
            return None;
        }
        let start = self.compress.total_in();
        let mut out = Vec::with_capacity(body.len() + body.len() / 8192 + 64);
        out.push(TAG_STREAMED);
        loop {
            if out.len() == out.capacity() {
                out.reserve(4096);
            }
            let read = (self.compress.total_in() - start) as usize;
            if self
                .compress
                .compress_vec(&body[read..], &mut out, flate2::FlushCompress::Sync)
                .is_err()
            {
                // Cannot happen with memory in and out; if it did, the stream is lost.
                self.broken = true;
                return None;
            }
            let read = (self.compress.total_in() - start) as usize;
            if read == body.len() && out.len() < out.capacity() {
                return Some(out);
            }
        }
    }

    /// `body` deflated behind [`TAG_DEFLATED`], if it is worth it and comes out smaller.
    fn deflated(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() < DEFLATE_FROM {
            return None;
        }
        self.compress.reset();
        // Room for the body stored uncompressed (5 bytes per block of 64 KiB): one call is
        // then always enough.
        let mut out = Vec::with_capacity(body.len() + body.len() / 8192 + 64);
        out.push(TAG_DEFLATED);
        let status = self
            .compress
            .compress_vec(body, &mut out, flate2::FlushCompress::Finish)
            .ok()?;
        (status == flate2::Status::StreamEnd && out.len() < body.len()).then_some(out)
    }
}

/// Decodes the frames one peer sends, in order, keeping the deflate stream that streamed
/// frames continue (`amphi/3`). Plain and per-frame deflated frames decode as
/// [`Frame::decode_body_sized`] does. After an error the stream is lost: the session ends.
#[derive(Default)]
pub struct FrameDecoder {
    stream: StreamInflater,
}

impl FrameDecoder {
    /// A decoder at the start of a session.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Decodes the next frame body (without its length prefix), with the size of the plain
    /// body (what it takes in memory once inflated).
    pub fn decode_body_sized(&mut self, body: &[u8]) -> Result<(Frame, usize), DecodeError> {
        if body.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge(body.len()));
        }
        if Frame::is_streamed(body) {
            let plain = self
                .stream
                .next(&body[1..], MAX_FRAME)
                .map_err(|e| match e {
                    InflateError::Invalid => DecodeError::Invalid("streamed body"),
                    InflateError::TooLarge(got) => DecodeError::TooLarge(got),
                })?;
            return Frame::decode_inner(&plain);
        }
        Frame::decode_body_sized(body)
    }
}

/// Inflates a deflated body, refusing one that would come out larger than [`MAX_FRAME`].
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, DecodeError> {
    inflate_at_most(deflated, MAX_FRAME).map_err(|e| match e {
        InflateError::Invalid => DecodeError::Invalid("deflated body"),
        InflateError::TooLarge(got) => DecodeError::TooLarge(got),
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = u16::from_be_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                org: OrgPath::parse("hoboksar/t1").unwrap(),
            },
            Frame::Reconcile {
                ranges: vec![
                    Range {
                        lower: String::new(),
                        upper: Some("m-8".into()),
                        payload: Payload::Fingerprint(Fingerprint {
                            count: 3,
                            sum: 7 << 100,
                        }),
                    },
                    Range {
                        lower: "m-8".into(),
                        upper: None,
                        payload: Payload::Items(vec![
                            (DocId::new_member([1; 8]), [9; DIGEST_LEN]),
                            (
                                DocId::roster(&OrgPath::parse("hoboksar").unwrap()),
                                [0; DIGEST_LEN],
                            ),
                        ]),
                    },
                ],
            },
            Frame::Reconcile { ranges: vec![] },
            Frame::Sync {
                doc: DocId::new_member([2; 8]),
                message: vec![0x42, 1, 2, 3],
                attestations: vec![],
            },
            Frame::Sync {
                doc: DocId::revocations(),
                message: vec![7],
                attestations: vec![Attestation {
                    change: automerge::ChangeHash([3; 32]),
                    cert: [4; 32],
                    signature: vec![5; 71],
                }],
            },
            Frame::Certificate {
                der: vec![0x30, 0x82, 1, 2],
            },
            Frame::Left {
                doc: DocId::new_member([8; 8]),
            },
            case_file_frame(),
        ]
    }

    /// A frame like a cold case file's: many changes, each with an attestation by the same
    /// certificate, whose hashes the next change's dependencies repeat.
    fn case_file_frame() -> Frame {
        let hash = |i: u8| automerge::ChangeHash([i.wrapping_mul(37); 32]);
        let mut message = vec![0x42];
        for i in 0..32u8 {
            message.extend_from_slice(&hash(i).0);
            message.extend_from_slice(b"hoboksar/bayin/community-7 member 2026-12-03");
        }
        Frame::Sync {
            doc: DocId::new_member([6; 8]),
            message,
            attestations: (1..=32u8)
                .map(|i| Attestation {
                    change: hash(i),
                    cert: [4; 32],
                    signature: (0..71).map(|j| (j as u8).wrapping_mul(i)).collect(),
                })
                .collect(),
        }
    }

    fn deflated_body(plain: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut out = vec![TAG_DEFLATED];
        let mut e = flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::best());
        e.write_all(plain).unwrap();
        e.finish().unwrap();
        out
    }

    #[test]
    fn a_large_frame_travels_deflated_and_a_small_one_plain() {
        let big = case_file_frame();
        assert_eq!(big.encode()[4..], big.plain_body()[..]);
        let wire = big.encode_deflated();
        assert_eq!(wire[4], TAG_DEFLATED);
        let plain = big.plain_body();
        assert!(
            wire.len() - 4 < plain.len() * 3 / 4,
            "{} deflated bytes for {} plain",
            wire.len() - 4,
            plain.len()
        );
        assert_eq!(
            Frame::decode_body_sized(&wire[4..]).unwrap(),
            (big, plain.len())
        );
        let hello = &frames()[0];
        assert_eq!(hello.encode_deflated()[4..], hello.plain_body()[..]);
    }

    #[test]
    fn one_deflater_encodes_frame_after_frame() {
        let mut deflater = Deflater::new();
        let big = Frame::Sync {
            doc: DocId::new_member([5; 8]),
            message: (0..3 * MAX_FRAME / 4)
                .map(|i| (i * 7919 % 251) as u8)
                .collect(),
            attestations: vec![],
        };
        for f in frames().iter().chain([&big]).chain(&frames()) {
            let bytes = deflater.encode(f);
            assert!(
                Frame::decode(&bytes).as_ref() == Ok(f),
                "a frame of {} bytes",
                bytes.len()
            );
            assert!(bytes == f.encode_deflated());
        }
    }

    #[test]
    fn a_deflated_frame_never_inflates_past_the_frame_limit() {
        // A deflate bomb: 9 MiB of zeros is a few KiB deflated.
        let mut bomb = vec![TAG_SYNC];
        bomb.resize(MAX_FRAME + (1 << 20), 0);
        let wire = deflated_body(&bomb);
        assert!(wire.len() < 64 * 1024);
        assert_eq!(
            Frame::decode_body(&wire),
            Err(DecodeError::TooLarge(MAX_FRAME + 1))
        );
        // Deflated once more, to hide the bomb a level down: refused without inflating it.
        let nested = deflated_body(&wire);
        assert_eq!(
            Frame::decode_body(&nested),
            Err(DecodeError::Invalid(
                "compressed frame inside a compressed frame"
            ))
        );
        assert_eq!(
            Frame::decode_body(&[TAG_DEFLATED, 0xff, 0xff, 0xff]),
            Err(DecodeError::Invalid("deflated body"))
        );
        // What inflates to garbage is refused as the garbage would be.
        assert_eq!(
            Frame::decode_body(&deflated_body(&[99])),
            Err(DecodeError::UnknownTag(99))
        );
    }

    /// What a streaming deflater sends for `frames`, body by body (no length prefixes).
    fn streamed_bodies(frames: &[Frame]) -> Vec<Vec<u8>> {
        let mut deflater = Deflater::streaming();
        frames
            .iter()
            .map(|f| deflater.encode(f)[4..].to_vec())
            .collect()
    }

    #[test]
    fn one_stream_carries_a_session_s_frames_and_later_ones_cost_less() {
        let once = frames();
        let frames: Vec<Frame> = once.iter().chain(&once).cloned().collect();
        let bodies = streamed_bodies(&frames);
        let mut decoder = FrameDecoder::new();
        for (f, body) in frames.iter().zip(&bodies) {
            let plain = f.plain_body();
            assert_eq!(Frame::is_streamed(body), plain.len() >= DEFLATE_FROM);
            assert_eq!(
                decoder.decode_body_sized(body),
                Ok((f.clone(), plain.len()))
            );
        }
        // The case file's frame again, the second time round, refers back to the first.
        let case_file = once.len() - 1;
        let (first, again) = (&bodies[case_file], &bodies[bodies.len() - 1]);
        assert!(
            again.len() * 4 < first.len(),
            "{} bytes the second time, {} the first",
            again.len(),
            first.len()
        );
        // Frames deflated on their own and plain ones decode in the same session.
        let hello = &frames[0];
        assert_eq!(
            decoder
                .decode_body_sized(&hello.encode_deflated()[4..])
                .unwrap()
                .0,
            *hello
        );
        let big = case_file_frame();
        assert_eq!(
            decoder
                .decode_body_sized(&big.encode_deflated()[4..])
                .unwrap()
                .0,
            big
        );
    }

    #[test]
    fn a_streamed_frame_needs_its_stream_and_never_inflates_past_the_frame_limit() {
        let bodies = streamed_bodies(&[case_file_frame(), case_file_frame()]);
        // Out of its session (or out of order) the second piece means nothing.
        assert!(FrameDecoder::new().decode_body_sized(&bodies[1]).is_err());
        assert_eq!(
            Frame::decode_body(&bodies[0]),
            Err(DecodeError::UnknownTag(TAG_STREAMED))
        );
        // A bomb in the stream: refused at the frame limit.
        let mut bomb = vec![TAG_SYNC];
        bomb.resize(MAX_FRAME + (1 << 20), 0);
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut piece = vec![TAG_STREAMED];
        piece.reserve(1 << 20);
        compress
            .compress_vec(&bomb, &mut piece, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(piece.len() < 64 * 1024);
        assert!(matches!(
            FrameDecoder::new().decode_body_sized(&piece),
            Err(DecodeError::TooLarge(n)) if n > MAX_FRAME
        ));
        // A streamed body inside a deflated one, or inside a streamed one: refused.
        let nested = deflated_body(&bodies[0]);
        assert_eq!(
            FrameDecoder::new().decode_body_sized(&nested),
            Err(DecodeError::Invalid(
                "compressed frame inside a compressed frame"
            ))
        );
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut wrapped = vec![TAG_STREAMED];
        wrapped.reserve(bodies[0].len() + 64);
        compress
            .compress_vec(&bodies[0], &mut wrapped, flate2::FlushCompress::Sync)
            .unwrap();
        assert_eq!(
            FrameDecoder::new().decode_body_sized(&wrapped),
            Err(DecodeError::Invalid(
                "compressed frame inside a compressed frame"
            ))
        );
        assert_eq!(
            FrameDecoder::new().decode_body_sized(&[TAG_STREAMED, 0xff, 0xff, 0xff]),
            Err(DecodeError::Invalid("streamed body"))
        );
    }

    #[test]
    fn every_frame_round_trips() {
        for f in frames() {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
            assert_eq!(Frame::decode(&f.encode_deflated()).unwrap(), f);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for bytes in frames()
            .iter()
            .flat_map(|f| [f.encode(), f.encode_deflated()])
        {
            for cut in 0..bytes.len() {
                assert!(
                    Frame::decode(&bytes[..cut]).is_err(),
                    "{bytes:?} cut at {cut}"
                );
            }
            // The body alone, cut short, is refused too (the length prefix cannot save it).
            for cut in 0..bytes.len() - 4 {
                assert!(Frame::decode_body(&bytes[4..4 + cut]).is_err());
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_prefix() {
        let prefix = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            Frame::body_len(prefix),
            Err(DecodeError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            Frame::body_len([0xff; 4]),
            Err(DecodeError::TooLarge(u32::MAX as usize))
        );
        let mut huge = vec![TAG_RECONCILE];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Frame::decode_body(&huge),
            Err(DecodeError::Invalid("range count"))
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(Frame::decode_body(&[99]), Err(DecodeError::UnknownTag(99)));
        let mut trailing = Frame::Reconcile { ranges: vec![] }.encode();
        trailing.push(0);
        assert!(Frame::decode(&trailing).is_err());
        let bad_org = [TAG_HELLO, 0, 1, 0, 3, b'B', b'A', b'D'];
        assert_eq!(
            Frame::decode_body(&bad_org),
            Err(DecodeError::Invalid("org path"))
        );
        let bad_utf8 = [TAG_HELLO, 0, 1, 0, 2, 0xff, 0xfe];
        assert_eq!(
            Frame::decode_body(&bad_utf8),
            Err(DecodeError::Invalid("utf-8"))
        );
        // A cheap deterministic fuzz: many pseudo-random bodies, none may panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let body: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8
                })
                .collect();
            let _ = Frame::decode_body(&body);
        }
    }
}
