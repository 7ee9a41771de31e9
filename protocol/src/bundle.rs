//! Store-and-forward bundles: what one office would send another over a link, written to a
//! file instead (carried on a USB stick, U盘) for an office whose link is down for days.
//!
//! A bundle is the frames a live session would send — [`Frame::Certificate`] for every
//! author whose changes it carries, then [`Frame::Sync`] messages carrying changes and their
//! attestations — behind a header naming the exporting office, the office it is for and the
//! exporter's certificate, and signed as a whole with the exporter's key. The importing
//! office checks the signature first and then treats the bundle as a peer that cannot
//! answer: every change passes the same gate as on a link.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! "AMPHIBD1"                        magic and version
//! from: u16 len, UTF-8              the exporting office
//! to: u16 len, UTF-8                the office it is for
//! created_ms: i64                   when it was made
//! exporter: u32 len, DER            the exporter's certificate
//! frames: u32 count, then each frame as on the wire (u32 length prefix and body)
//! signature: u16 len, bytes         over BUNDLE_SIGNING_TAG ‖ SHA-256(everything above)
//! ```
//!
//! [`Bundle::open`] is a pure, bounded decoder: a truncated, padded or oversized file, an
//! unknown version or a frame a bundle never carries is refused whole, before any of it is
//! used.

use sha2::{Digest as _, Sha256};

use crate::attest::MAX_SIGNATURE;
use crate::org::OrgPath;
use crate::wire::{DecodeError, Frame, MAX_CERTIFICATE};

/// First bytes of every bundle (format version 1).
pub const MAGIC: &[u8; 8] = b"AMPHIBD1";
/// Domain-separation prefix of what the exporter signs.
pub const BUNDLE_SIGNING_TAG: &[u8] = b"amphi-bundle-v1\0";
/// Largest bundle accepted.
pub const MAX_BUNDLE: usize = 1 << 30;
/// Most frames in one bundle.
pub const MAX_BUNDLE_FRAMES: usize = 4_000_000;

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not an Amphi bundle, or a version this node cannot read.
    #[error("not an Amphi bundle of a version this node reads (it starts with {0:?})")]
    NotABundle(String),
    /// The file ended early (cut off while copying?).
    #[error("the bundle is truncated")]
    Truncated,
    /// Over a limit.
    #[error("the bundle's {0} is over its limit")]
    TooLarge(&'static str),
    /// A field is malformed.
    #[error("the bundle's {0} is invalid")]
    Invalid(&'static str),
    /// A frame inside is malformed or of a kind bundles never carry.
    #[error("frame {index} of the bundle: {why}")]
    Frame {
        /// Which frame (from 0).
        index: usize,
        /// Why.
        why: String,
    },
    /// Bytes after the signature.
    #[error("{0} bytes after the end of the bundle")]
    Trailing(usize),
}

/// A bundle's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The exporting office.
    pub from: OrgPath,
    /// The office it is for.
    pub to: OrgPath,
    /// When it was made (Unix ms).
    pub created_ms: i64,
    /// The exporter's certificate (DER).
    pub exporter: Vec<u8>,
    /// Certificate and sync frames, in the order a session would send them.
    pub frames: Vec<Frame>,
}

/// A decoded bundle with what its signature covers.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The content.
    pub bundle: Bundle,
    /// What the exporter signed ([`signing_bytes`] of the bundle's body).
    pub signed: Vec<u8>,
    /// The exporter's signature.
    pub signature: Vec<u8>,
}

/// What the exporter signs for a bundle body.
pub fn signing_bytes(body: &[u8]) -> Vec<u8> {
    let mut b = BUNDLE_SIGNING_TAG.to_vec();
    b.extend_from_slice(&Sha256::digest(body));
    b
}

impl Bundle {
    /// The body: everything but the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for org in [&self.from, &self.to] {
            out.extend_from_slice(&(org.as_str().len() as u16).to_be_bytes());
            out.extend_from_slice(org.as_str().as_bytes());
        }
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&(self.exporter.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.exporter);
        out.extend_from_slice(&(self.frames.len() as u32).to_be_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.encode());
        }
        out
    }

    /// The whole file: the body and `sign`'s signature over [`signing_bytes`] of it.
    pub fn seal(&self, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut out = self.body();
        let signature = sign(&signing_bytes(&out));
        out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&signature);
        out
    }

    /// Decodes a whole bundle file; the caller still checks the signature against the
    /// exporter's certificate.
    pub fn open(input: &[u8]) -> Result<Opened, BundleError> {
        if input.len() > MAX_BUNDLE {
            return Err(BundleError::TooLarge("size"));
        }
        if input.len() < MAGIC.len() || &input[..MAGIC.len()] != MAGIC {
            let start = &input[..input.len().min(MAGIC.len())];
            return Err(BundleError::NotABundle(
                String::from_utf8_lossy(start).into_owned(),
            ));
        }
        let mut r = Reader {
            buf: &input[MAGIC.len()..],
        };
        let from = r.org()?;
        let to = r.org()?;
        let created_ms = i64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let cert_len = r.u32()? as usize;
        if cert_len > MAX_CERTIFICATE {
            return Err(BundleError::TooLarge("exporter certificate"));
        }
        let exporter = r.take(cert_len)?.to_vec();
        let count = r.u32()? as usize;
        if count > MAX_BUNDLE_FRAMES {
            return Err(BundleError::TooLarge("frame count"));
        }
        let mut frames = Vec::with_capacity(count.min(1024));
        for index in 0..count {
            let frame_err = |e: DecodeError| BundleError::Frame {
                index,
                why: e.to_string(),
            };
            let prefix: [u8; 4] = r.take(4)?.try_into().expect("4 bytes");
            let len = Frame::body_len(prefix).map_err(frame_err)?;
            let frame = Frame::decode_body(r.take(len)?).map_err(frame_err)?;
            match frame {
                Frame::Certificate { .. } | Frame::Sync { .. } => frames.push(frame),
                _ => {
                    return Err(BundleError::Frame {
                        index,
                        why: "a kind of frame bundles never carry".into(),
                    });
                }
            }
        }
        let body_len = input.len() - r.buf.len();
        let sig_len = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        if sig_len == 0 || sig_len > MAX_SIGNATURE {
            return Err(BundleError::Invalid("signature"));
        }
        let signature = r.take(sig_len)?.to_vec();
        if !r.buf.is_empty() {
            return Err(BundleError::Trailing(r.buf.len()));
        }
        Ok(Opened {
            bundle: Bundle {
                from,
                to,
                created_ms,
                exporter,
                frames,
            },
            signed: signing_bytes(&input[..body_len]),
            signature,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BundleError> {
        if self.buf.len() < n {
            return Err(BundleError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, BundleError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn org(&mut self) -> Result<OrgPath, BundleError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let text = std::str::from_utf8(self.take(len)?).map_err(|_| BundleError::Invalid("org"))?;
        OrgPath::parse(text).map_err(|_| BundleError::Invalid("org"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DocId;
    use crate::attest::Attestation;
    use automerge::ChangeHash;

    fn sample() -> Bundle {
        Bundle {
            from: OrgPath::parse("hoboksar/chagantolgay/bayin").unwrap(),
            to: OrgPath::parse("hoboksar/chagantolgay").unwrap(),
            created_ms: 1_790_000_000_000,
            exporter: vec![0x30, 1, 2, 3],
            frames: vec![
                Frame::Certificate {
                    der: vec![0x30, 9, 9],
                },
                Frame::Sync {
                    doc: DocId::parse("m-3a4b000000000000").unwrap(),
                    message: vec![0x42, 0, 0, 0, 0],
                    attestations: vec![Attestation {
                        change: ChangeHash([5; 32]),
                        cert: [6; 32],
                        signature: vec![7; 70],
                    }],
                },
            ],
        }
    }

    #[test]
    fn a_sealed_bundle_opens_to_what_was_sealed_and_its_signature_covers_the_body() {
        let b = sample();
        let mut signed_over = Vec::new();
        let file = b.seal(|msg| {
            signed_over = msg.to_vec();
            vec![1; 64]
        });
        let opened = Bundle::open(&file).unwrap();
        assert_eq!(opened.bundle, b);
        assert_eq!(opened.signature, vec![1; 64]);
        assert_eq!(opened.signed, signed_over);
        assert!(opened.signed.starts_with(BUNDLE_SIGNING_TAG));

        // A changed byte in the body changes what the signature must cover.
        let mut tampered = file.clone();
        let at = MAGIC.len() + 3;
        tampered[at] ^= 1;
        if let Ok(t) = Bundle::open(&tampered) {
            assert_ne!(t.signed, opened.signed);
        }
    }

    #[test]
    fn every_cut_and_any_padding_is_refused() {
        let file = sample().seal(|_| vec![1; 64]);
        for cut in 0..file.len() {
            assert!(Bundle::open(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = file.clone();
        padded.push(0);
        assert_eq!(Bundle::open(&padded).unwrap_err(), BundleError::Trailing(1));
        assert!(matches!(
            Bundle::open(b"PK\x03\x04 a zip file").unwrap_err(),
            BundleError::NotABundle(_)
        ));
    }

    #[test]
    fn a_frame_that_bundles_never_carry_is_refused() {
        let mut b = sample();
        b.frames.push(Frame::Left {
            doc: DocId::parse("m-3a4b000000000000").unwrap(),
        });
        let err = Bundle::open(&b.seal(|_| vec![1; 64])).unwrap_err();
        assert!(matches!(err, BundleError::Frame { index: 2, .. }), "{err}");
    }
}
