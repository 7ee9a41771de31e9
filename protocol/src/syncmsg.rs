//! Reading a peer's automerge sync message before automerge does.
//!
//! automerge 0.12 trusts the sync messages it is given: a Bloom filter with zero bits per
//! entry makes the reply path divide by zero, a huge probe count asks for gigabytes, a
//! compressed change is inflated without limit, and a whole-document chunk is loaded with no
//! check at all. So every message is decoded here first, by a pure and bounded decoder, into
//! a [`SyncMessage`]; only its validated parts reach automerge:
//!
//! - heads, need and `have` become a fresh automerge message with no changes and no flags
//!   ([`SyncMessage::bookkeeping`]), used only to advance the sync state;
//! - each change chunk is decoded on its own by [`decode_change`] (size and inflated size
//!   bounded, automerge's parser contained), so one bad chunk refuses one change.
//!
//! Only version-1 messages carrying individual changes are accepted. A node never sends
//! anything else: it strips the flags that would advertise version 2 (whole-document
//! messages), so its peers never use them.

use automerge::sync;
use automerge::{Change, ChangeHash};

use crate::columns::check_counts;
use crate::contain::contain;
use crate::inflate::{InflateError, inflate_at_most};

/// First byte of a version-1 sync message.
pub const MESSAGE_V1: u8 = 0x42;
/// Most heads a message may list (a document has one head per concurrent writer).
pub const MAX_HEADS: usize = 256;
/// Most hashes a message may ask for.
pub const MAX_NEED: usize = 4096;
/// Most `have` entries (automerge sends at most one).
pub const MAX_HAVES: usize = 1;
/// Most entries a `have` Bloom filter may summarise.
pub const MAX_BLOOM_ENTRIES: u32 = 1_000_000;
/// Bits per entry of every Bloom filter automerge makes.
pub const BLOOM_BITS_PER_ENTRY: u32 = 10;
/// Probes of every Bloom filter automerge makes.
pub const BLOOM_PROBES: u32 = 7;
/// Most changes in one message.
pub const MAX_CHANGES: usize = 65_536;
/// Largest change, as sent and once inflated.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
/// Longest flags section accepted (and then ignored).
pub const MAX_FLAGS: usize = 64;

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// `message` as a node speaks it: version 1, with no capability flags, so the peer never
/// learns that this side could take a whole document and never sends one.
pub fn as_changes(mut message: sync::Message) -> sync::Message {
    message.flags = None;
    message.version = sync::MessageVersion::V1;
    message
}

/// Why a sync message or a change chunk is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncMessageError {
    /// The input ended in the middle of a field.
    #[error("sync message truncated")]
    Truncated,
    /// Not a version-1 sync message.
    #[error("not a version-1 sync message (first byte {0:#04x})")]
    Version(u8),
    /// A count or size is over its limit.
    #[error("{what}: {got} is over the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many were declared.
        got: u64,
        /// The limit.
        limit: u64,
    },
    /// A Bloom filter with parameters automerge never makes.
    #[error("Bloom filter with {entries} entries, {bits} bits per entry and {probes} probes")]
    Bloom {
        /// Entries declared.
        entries: u32,
        /// Bits per entry declared.
        bits: u32,
        /// Probes declared.
        probes: u32,
    },
    /// A number is not valid LEB128 or overflows.
    #[error("bad number encoding")]
    Leb,
    /// Bytes after the last field.
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    /// A chunk that is not a single change.
    #[error("{0}")]
    Chunk(String),
}

/// What a `have` entry says: the last heads both sides shared, and a Bloom filter of the
/// changes the sender has since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    /// Heads at the last sync.
    pub last_sync: Vec<ChangeHash>,
    /// The filter, exactly as sent (validated).
    pub bloom: Vec<u8>,
}

/// A decoded, validated sync message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMessage {
    /// The sender's heads.
    pub heads: Vec<ChangeHash>,
    /// Changes the sender asks for.
    pub need: Vec<ChangeHash>,
    /// What the sender has.
    pub have: Vec<Have>,
    /// Change chunks, as sent (decode each with [`decode_change`]).
    pub changes: Vec<Vec<u8>>,
}

/// Reads automerge's encodings (LEB128 numbers, byte runs) from the front of `buf`, never
/// past its end.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], SyncMessageError> {
        if self.buf.len() < n {
            return Err(SyncMessageError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// [`Cursor::take`] of a length read from the bytes.
    pub(crate) fn take_len(&mut self, n: u64) -> Result<&'a [u8], SyncMessageError> {
        self.take(usize::try_from(n).map_err(|_| SyncMessageError::Truncated)?)
    }

    pub(crate) fn sleb(&mut self) -> Result<i64, SyncMessageError> {
        let mut value = 0i64;
        for i in 0..10 {
            let byte = *self.take(1)?.first().ok_or(SyncMessageError::Truncated)?;
            value |= i64::from(byte & 0x7f).wrapping_shl(7 * i);
            if byte & 0x80 == 0 {
                let shift = 7 * (i + 1);
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift; // sign-extend
                }
                return Ok(value);
            }
        }
        Err(SyncMessageError::Leb)
    }

    pub(crate) fn uleb(&mut self) -> Result<u64, SyncMessageError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.take(1)?.first().ok_or(SyncMessageError::Truncated)?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err(SyncMessageError::Leb);
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SyncMessageError::Leb)
    }

    fn count(&mut self, what: &'static str, limit: usize) -> Result<usize, SyncMessageError> {
        let n = self.uleb()?;
        if n > limit as u64 {
            return Err(SyncMessageError::TooMany {
                what,
                got: n,
                limit: limit as u64,
            });
        }
        Ok(n as usize)
    }

    fn hashes(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<Vec<ChangeHash>, SyncMessageError> {
        let n = self.count(what, limit)?;
        (0..n)
            .map(|_| {
                let b: [u8; 32] = self.take(32)?.try_into().expect("32 bytes");
                Ok(ChangeHash(b))
            })
            .collect()
    }
}

/// Appends `v` as automerge writes an unsigned number (LEB128).
pub(crate) fn write_uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends `v` as automerge writes a signed number (LEB128), for tests that write
/// automerge's columns by hand.
#[cfg(test)]
pub(crate) fn write_sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
    }
}

/// Checks a Bloom filter's bytes: empty, or automerge's own parameters with exactly the bits
/// they need.
fn check_bloom(bytes: &[u8]) -> Result<(), SyncMessageError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut r = Cursor { buf: bytes };
    let small = |v: u64| u32::try_from(v).map_err(|_| SyncMessageError::Leb);
    let entries = small(r.uleb()?)?;
    let bits = small(r.uleb()?)?;
    let probes = small(r.uleb()?)?;
    if entries == 0
        || entries > MAX_BLOOM_ENTRIES
        || bits != BLOOM_BITS_PER_ENTRY
        || probes != BLOOM_PROBES
    {
        return Err(SyncMessageError::Bloom {
            entries,
            bits,
            probes,
        });
    }
    let needed = (u64::from(entries) * u64::from(bits)).div_ceil(8) as usize;
    if r.buf.len() != needed {
        return Err(SyncMessageError::Bloom {
            entries,
            bits,
            probes,
        });
    }
    Ok(())
}

impl SyncMessage {
    /// Decodes and validates a sync message. Pure and bounded: the largest allocation is
    /// the size of `input`.
    pub fn decode(input: &[u8]) -> Result<SyncMessage, SyncMessageError> {
        let mut r = Cursor { buf: input };
        let version = *r.take(1)?.first().ok_or(SyncMessageError::Truncated)?;
        if version != MESSAGE_V1 {
            return Err(SyncMessageError::Version(version));
        }
        let heads = r.hashes("heads", MAX_HEADS)?;
        let need = r.hashes("need", MAX_NEED)?;
        let n = r.count("have entries", MAX_HAVES)?;
        let mut have = Vec::with_capacity(n);
        for _ in 0..n {
            let last_sync = r.hashes("last sync heads", MAX_HEADS)?;
            let len = r.count("Bloom filter bytes", input.len())?;
            let bloom = r.take(len)?.to_vec();
            check_bloom(&bloom)?;
            have.push(Have { last_sync, bloom });
        }
        let n = r.count("changes", MAX_CHANGES)?;
        let mut changes = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let len = r.count("change bytes", MAX_CHANGE_BYTES)?;
            changes.push(r.take(len)?.to_vec());
        }
        if !r.buf.is_empty() {
            // The flags section: capabilities this node ignores (see the module docs).
            let len = r.count("flags bytes", MAX_FLAGS)?;
            r.take(len)?;
        }
        if !r.buf.is_empty() {
            return Err(SyncMessageError::Trailing(r.buf.len()));
        }
        Ok(SyncMessage {
            heads,
            need,
            have,
            changes,
        })
    }

    /// The message as automerge should see it to keep its sync state: heads, need and have,
    /// no changes (the gate applies those itself) and no flags. Only validated parts go in,
    /// and automerge's own parser runs contained all the same.
    pub fn bookkeeping(&self) -> Result<sync::Message, SyncMessageError> {
        let mut out = vec![MESSAGE_V1];
        let hashes = |out: &mut Vec<u8>, hs: &[ChangeHash]| {
            write_uleb(out, hs.len() as u64);
            for h in hs {
                out.extend_from_slice(&h.0);
            }
        };
        hashes(&mut out, &self.heads);
        hashes(&mut out, &self.need);
        write_uleb(&mut out, self.have.len() as u64);
        for h in &self.have {
            hashes(&mut out, &h.last_sync);
            write_uleb(&mut out, h.bloom.len() as u64);
            out.extend_from_slice(&h.bloom);
        }
        write_uleb(&mut out, 0);
        contain("reading a sync message", || sync::Message::decode(&out))
            .map_err(|f| SyncMessageError::Chunk(f.to_string()))?
            .map_err(|e| SyncMessageError::Chunk(e.to_string()))
    }
}

/// Decodes one change chunk from a peer: a single change, plain or compressed, at most
/// [`MAX_CHANGE_BYTES`] whether compressed or not, in automerge's canonical encoding.
/// Whole-document and bundle chunks are refused. automerge's change parser runs contained.
///
/// Canonical matters: automerge keeps ops, not bytes, and rebuilds a change's bytes when it
/// saves or sends it. A change that parses but is not encoded as automerge would encode it
/// would be stored under one hash and rebuilt under another, leaving a document whose later
/// changes depend on a change it can no longer produce (found by the `sync_message` fuzz
/// target). So a change must re-encode to its own hash.
pub fn decode_change(chunk: &[u8]) -> Result<Change, SyncMessageError> {
    decode(chunk, Ops::Drop).map(|(change, _)| change)
}

/// A change as [`decode_change`] read it, with the ops its canonical-encoding check
/// decoded, for the judge to read instead of decoding them a second time.
pub struct DecodedChange {
    /// The change.
    pub change: Change,
    /// Its ops, as [`Change::decode`] gives them.
    pub ops: Vec<automerge::legacy::Op>,
}

/// [`decode_change`], keeping the ops it decoded.
pub fn decode_change_with_ops(chunk: &[u8]) -> Result<DecodedChange, SyncMessageError> {
    let (change, ops) = decode(chunk, Ops::Keep)?;
    Ok(DecodedChange {
        change,
        ops: ops.unwrap_or_default(),
    })
}

/// Whether [`decode`] keeps the ops it decoded (a copy, made before re-encoding them).
#[derive(Clone, Copy, PartialEq)]
enum Ops {
    Keep,
    Drop,
}

fn decode(
    chunk: &[u8],
    keep: Ops,
) -> Result<(Change, Option<Vec<automerge::legacy::Op>>), SyncMessageError> {
    let bad = |why: &str| SyncMessageError::Chunk(why.to_owned());
    let mut r = Cursor { buf: chunk };
    if r.take(4)? != CHUNK_MAGIC {
        return Err(bad("not an automerge chunk (bad magic bytes)"));
    }
    r.take(4)?; // checksum: automerge recomputes the hash from the contents
    let kind = *r.take(1)?.first().ok_or(SyncMessageError::Truncated)?;
    let len = r.count("chunk bytes", MAX_CHANGE_BYTES)?;
    let body = r.take(len)?;
    if !r.buf.is_empty() {
        return Err(bad("one chunk per change"));
    }
    match kind {
        CHUNK_CHANGE => check_counts(body)?,
        CHUNK_COMPRESSED => match inflate_at_most(body, MAX_CHANGE_BYTES) {
            Ok(inflated) => check_counts(&inflated)?,
            Err(InflateError::Invalid) => return Err(bad("compressed change does not inflate")),
            Err(InflateError::TooLarge(got)) => {
                return Err(SyncMessageError::TooMany {
                    what: "inflated change bytes",
                    got: got as u64,
                    limit: MAX_CHANGE_BYTES as u64,
                });
            }
        },
        CHUNK_DOCUMENT => {
            return Err(bad(
                "whole-document chunks are not accepted; send individual changes",
            ));
        }
        other => return Err(bad(&format!("unexpected chunk type {other}"))),
    }
    let change = contain("reading a change", || Change::from_bytes(chunk.to_vec()))
        .map_err(|f| SyncMessageError::Chunk(f.to_string()))?
        .map_err(|e| SyncMessageError::Chunk(format!("unreadable change: {e}")))?;
    let (canonical, ops) = contain("re-encoding a change", || {
        let expanded = change.decode();
        let ops = (keep == Ops::Keep).then(|| expanded.operations.clone());
        (Change::from(expanded).hash(), ops)
    })
    .map_err(|f| SyncMessageError::Chunk(f.to_string()))?;
    if canonical != change.hash() {
        return Err(bad(&format!(
            "change {} is not in automerge's canonical encoding (it re-encodes as {canonical})",
            change.hash()
        )));
    }
    Ok((change, ops))
}

/// Checks the framing of a document as the store saved it — a whole-document chunk followed
/// by change chunks, plain or compressed — before automerge loads it. automerge's loader
/// accepts bundle chunks too, and a bundle header can ask for gigabytes before anything is
/// checked (found by the `store_records` fuzz target, 31 bytes); the node never writes one,
/// so any other chunk type means a damaged store. Compressed change chunks are held to the
/// same inflated limit as a peer's. Column compression inside a document chunk is not
/// inspected here: the store is the node's own, so this is a guard against damage, not a
/// second gate.
pub fn check_saved_document(bytes: &[u8]) -> Result<(), SyncMessageError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut r = Cursor { buf: rest };
        if r.take(4)? != CHUNK_MAGIC {
            return Err(SyncMessageError::Chunk(
                "not an automerge chunk (bad magic bytes)".into(),
            ));
        }
        r.take(4)?; // checksum
        let kind = *r.take(1)?.first().ok_or(SyncMessageError::Truncated)?;
        let len = r.count("chunk bytes", rest.len())?;
        r.take(len)?;
        let chunk = &rest[..rest.len() - r.buf.len()];
        match kind {
            CHUNK_DOCUMENT | CHUNK_CHANGE => {}
            CHUNK_COMPRESSED => {
                decode_change(chunk)?;
            }
            other => {
                return Err(SyncMessageError::Chunk(format!(
                    "unexpected chunk type {other} in a saved document"
                )));
            }
        }
        rest = r.buf;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;

    fn doc_with(n: usize) -> AutoCommit {
        let mut d = AutoCommit::new();
        for i in 0..n {
            d.put(automerge::ROOT, format!("k{i}"), "x".repeat(400))
                .unwrap();
            d.commit();
        }
        d
    }

    #[test]
    fn automerge_s_own_messages_decode_and_round_trip_their_bookkeeping() {
        let mut a = doc_with(5);
        let mut b = AutoCommit::new();
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let mut saw_changes = false;
        // Spoken as DocSync speaks, automerge never switches to version 2.
        let strip = as_changes;
        for _ in 0..10 {
            if let Some(m) = a.sync().generate_sync_message(&mut sa).map(strip) {
                let bytes = m.clone().encode();
                let decoded = SyncMessage::decode(&bytes).unwrap();
                assert_eq!(decoded.heads, m.heads);
                assert_eq!(decoded.need, m.need);
                assert_eq!(decoded.changes.len(), m.changes.len());
                for c in &decoded.changes {
                    decode_change(c).unwrap();
                    saw_changes = true;
                }
                let kept = decoded.bookkeeping().unwrap();
                assert_eq!((kept.heads, kept.need), (m.heads.clone(), m.need.clone()));
                b.sync().receive_sync_message(&mut sb, m).unwrap();
            }
            if let Some(m) = b.sync().generate_sync_message(&mut sb).map(strip) {
                SyncMessage::decode(&m.clone().encode()).unwrap();
                a.sync().receive_sync_message(&mut sa, m).unwrap();
            }
        }
        assert!(saw_changes);
        assert_eq!(a.get_heads(), b.get_heads());
    }

    fn message(have: &[u8]) -> Vec<u8> {
        let mut m = vec![MESSAGE_V1, 0, 0, 1, 0];
        write_uleb(&mut m, have.len() as u64);
        m.extend_from_slice(have);
        m.push(0);
        m
    }

    #[test]
    fn bloom_filters_automerge_never_makes_are_refused() {
        // num_entries 1, bits_per_entry 0: automerge's reply path would divide by zero.
        assert!(matches!(
            SyncMessage::decode(&message(&[1, 0, 7])),
            Err(SyncMessageError::Bloom { bits: 0, .. })
        ));
        // A probe count of ~4 billion: automerge would allocate ~16 GiB.
        let mut huge = vec![1, 10];
        write_uleb(&mut huge, 4_000_000_000);
        huge.extend_from_slice(&[0, 0]);
        assert!(matches!(
            SyncMessage::decode(&message(&huge)),
            Err(SyncMessageError::Bloom {
                probes: 4_000_000_000,
                ..
            })
        ));
        // Right parameters, wrong number of bits.
        assert!(SyncMessage::decode(&message(&[1, 10, 7, 0])).is_err());
        assert!(SyncMessage::decode(&message(&[1, 10, 7, 0, 0])).is_ok());
        assert!(SyncMessage::decode(&message(&[])).is_ok());
    }

    #[test]
    fn counts_over_the_limits_and_garbage_are_errors() {
        let mut many_heads = vec![MESSAGE_V1];
        write_uleb(&mut many_heads, MAX_HEADS as u64 + 1);
        assert!(matches!(
            SyncMessage::decode(&many_heads),
            Err(SyncMessageError::TooMany { what: "heads", .. })
        ));
        assert_eq!(
            SyncMessage::decode(&[0x43, 0, 0, 0, 0]),
            Err(SyncMessageError::Version(0x43))
        );
        let mut overflow = vec![MESSAGE_V1];
        overflow.extend_from_slice(&[0xff; 11]);
        assert_eq!(SyncMessage::decode(&overflow), Err(SyncMessageError::Leb));
        let mut trailing = message(&[]);
        trailing.extend_from_slice(&[1, 0, 9]);
        assert_eq!(
            SyncMessage::decode(&trailing),
            Err(SyncMessageError::Trailing(1))
        );
        for cut in 0..message(&[1, 10, 7, 0, 0]).len() {
            assert!(SyncMessage::decode(&message(&[1, 10, 7, 0, 0])[..cut]).is_err());
        }
    }

    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut c = CHUNK_MAGIC.to_vec();
        c.extend_from_slice(&[0; 4]);
        c.push(kind);
        write_uleb(&mut c, body.len() as u64);
        c.extend_from_slice(body);
        c
    }

    #[test]
    fn a_saved_document_with_a_bundle_chunk_is_refused_before_automerge() {
        let mut doc = doc_with(3);
        let saved = doc.save();
        assert_eq!(check_saved_document(&saved), Ok(()));
        let heads = doc.get_heads();
        doc.put(automerge::ROOT, "more", 1).unwrap();
        let mut grown = saved.clone();
        grown.extend(doc.save_after(&heads));
        assert_eq!(check_saved_document(&grown), Ok(()));
        // The store_records fuzz target's 31-byte input: a bundle header that made
        // automerge's loader allocate without bound.
        let bundle = chunk(
            3,
            &[
                0, 0, 0, 2, 0, 0, 0x23, 6, 0xfe, 0xff, 0xff, 0xff, 2, 0, 4, 0,
            ],
        );
        assert!(matches!(
            check_saved_document(&bundle),
            Err(SyncMessageError::Chunk(why)) if why.contains("chunk type 3")
        ));
        let mut tail = saved.clone();
        tail.extend_from_slice(&saved[..10]);
        assert!(
            check_saved_document(&tail).is_err(),
            "a truncated trailing chunk"
        );
    }

    #[test]
    fn a_decompression_bomb_and_a_whole_document_are_refused() {
        use std::io::Write as _;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 256 << 10, "{} compressed bytes", bomb.len());
        assert!(matches!(
            decode_change(&chunk(CHUNK_COMPRESSED, &bomb)),
            Err(SyncMessageError::TooMany {
                what: "inflated change bytes",
                ..
            })
        ));
        let whole = doc_with(2).save();
        assert!(
            decode_change(&whole)
                .unwrap_err()
                .to_string()
                .contains("whole-document")
        );
        assert!(decode_change(&chunk(CHUNK_CHANGE, &[1, 2, 3])).is_err());
        assert!(decode_change(&chunk(9, &[])).is_err());
        assert!(decode_change(&[0x85, 0x6f]).is_err());
    }

    #[test]
    fn real_changes_plain_and_compressed_decode() {
        let mut d = doc_with(3);
        for mut c in d.get_changes(&[]) {
            let plain = decode_change(c.raw_bytes()).unwrap();
            assert_eq!(plain.hash(), c.hash());
            let compressed = c.bytes().into_owned();
            assert_eq!(decode_change(&compressed).unwrap().hash(), c.hash());
        }
    }
}
