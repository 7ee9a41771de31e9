//! A case file sent whole: the chunks a store holds, read and loaded before anything in it
//! is judged.
//!
//! Today a sender answers a peer that holds nothing of a case file with its changes, one
//! chunk each, and the receiver reads, checks and applies every one. automerge's own sync
//! sends such a peer the saved document instead, which loads in one pass; measured on this
//! project's case files, that costs both ends 0.4 × as much (issue 11, `docs/benchmarks.md`,
//! twenty-first step). This module is the receiving end's first step on that path:
//! [`read_whole`] takes the chunks as a sender's store holds them — the document chunk, which
//! the store deflates itself ([`deflated_document`]), then the increments written since, each
//! one or more change chunks — and returns the changes the loaded document rebuilds, for the
//! gate to judge one by one as it judges a peer's changes, and to apply.
//!
//! Only the changes leave, never the loaded document. automerge 0.12 does not check the order
//! of a document chunk's ops when it loads one (`Document::reconstruct` marks the check as
//! to do; only a debug assertion elsewhere looks): a chunk with its ops out of order loads, its
//! heads match the changes it rebuilds, and yet it reads otherwise than those changes applied
//! (a key it holds is not found; see the tests). Keeping a peer's loaded document instead of
//! applying its changes — the larger half of the saving measured for the receiver — would
//! keep such a state. The changes themselves are sound: automerge checked that they hash to
//! the chunk's heads, and the gate applies them to a document of its own.
//!
//! automerge 0.12 loads a document chunk with little checking: it inflates compressed columns
//! without a limit, and its run-length-encoded columns can declare billions of ops or
//! changes in a few bytes, which it then allocates for (an allocation failure aborts the
//! node; [`crate::contain`] cannot catch it). So before automerge sees anything:
//! - at most [`MAX_WHOLE_BYTES`] as sent and [`MAX_WHOLE_BYTES`] once inflated;
//! - exactly one document chunk, first ([`crate::columns::check_document`]: no compressed
//!   column, counts of actors, heads, ops, changes and dependencies bounded, every change's
//!   counters within the document);
//! - after it only change chunks, each read as a peer's change is
//!   ([`crate::syncmsg::decode_change`]: bounded, canonical), with at most
//!   [`crate::columns::MAX_DOC_OPS`] ops in all;
//!
//! and the load and the rebuild run contained. What comes back has been read, not judged:
//! nothing here says who may have written it.

use std::borrow::Cow;

use automerge::{AutoCommit, Change, ChangeHash};

use crate::columns::{MAX_DOC_OPS, check_document};
use crate::contain::contain;
use crate::inflate::{InflateError, inflate_at_most};
use crate::syncmsg::{Cursor, SyncMessageError, decode_change};

/// The first bytes of a document chunk a store deflated itself ([`deflated_document`]); an
/// automerge chunk starts with automerge's magic bytes instead.
pub const DEFLATED_CHUNK: &[u8; 4] = b"amZ1";
/// Most bytes of a case file sent whole, as sent and once inflated (a frame's limit).
pub const MAX_WHOLE_BYTES: usize = crate::wire::MAX_FRAME;

const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// A whole document as one chunk: automerge's save without its own compression, deflated in
/// one fast stream. automerge's `save` deflates each large column on its own, starting a new
/// deflate stream for each: most of a received case file's store write (benchmarks.md,
/// sixteenth step). It also leaves no compressed column for a reader to bound.
pub fn deflated_document(doc: &mut AutoCommit) -> Vec<u8> {
    use std::io::Write as _;
    let plain = doc.save_nocompress();
    let mut out = DEFLATED_CHUNK.to_vec();
    let mut deflate = flate2::write::DeflateEncoder::new(&mut out, flate2::Compression::fast());
    deflate.write_all(&plain).expect("deflating into memory");
    deflate.finish().expect("deflating into memory");
    out
}

/// A stored chunk as automerge reads it: inflated (to at most `limit` bytes) if it was
/// deflated by [`deflated_document`], else as it is.
pub fn inflate_chunk(stored: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, InflateError> {
    match stored.strip_prefix(DEFLATED_CHUNK) {
        None => Ok(Cow::Borrowed(stored)),
        Some(deflated) => inflate_at_most(deflated, limit).map(Cow::Owned),
    }
}

/// A case file read whole: its changes, rebuilt, not judged.
pub struct WholeCaseFile {
    /// The heads the chunks declare (automerge checked the changes hash to them).
    pub heads: Vec<ChangeHash>,
    /// Every change it holds, in an order that has each after its dependencies.
    pub changes: Vec<Change>,
}

/// Reads a case file sent whole (see the module docs): `chunks` as the sender's store holds
/// them. Bounded before automerge sees a byte; automerge's load runs contained.
pub fn read_whole<C: AsRef<[u8]>>(chunks: &[C]) -> Result<WholeCaseFile, SyncMessageError> {
    let sent: usize = chunks.iter().map(|c| c.as_ref().len()).sum();
    if sent > MAX_WHOLE_BYTES {
        return Err(too_many("bytes of a case file sent whole", sent));
    }
    let mut plain = Vec::with_capacity(sent);
    let mut ops = 0u64;
    for stored in chunks {
        let room = MAX_WHOLE_BYTES - plain.len();
        let chunk = inflate_chunk(stored.as_ref(), room).map_err(|e| match e {
            InflateError::TooLarge(n) => too_many("inflated bytes of a case file", n),
            InflateError::Invalid => chunk_error("a deflated document chunk that does not inflate"),
        })?;
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let (kind, body, whole) = next_chunk(&mut rest)?;
            let first = plain.is_empty();
            ops += match (first, kind) {
                (true, CHUNK_DOCUMENT) => check_document(body)?.ops,
                (true, _) => {
                    return Err(chunk_error(
                        "a case file sent whole starts with its document chunk",
                    ));
                }
                (false, CHUNK_CHANGE | CHUNK_COMPRESSED) => decode_change(whole)?.len() as u64,
                (false, _) => {
                    return Err(chunk_error(
                        "after its document chunk, a case file sent whole holds only changes",
                    ));
                }
            };
            if ops > MAX_DOC_OPS {
                return Err(SyncMessageError::TooMany {
                    what: "ops in a case file sent whole",
                    got: ops,
                    limit: MAX_DOC_OPS,
                });
            }
            plain.extend_from_slice(whole);
        }
    }
    if plain.is_empty() {
        return Err(chunk_error("a case file sent whole with no chunk"));
    }
    let engine = |f: crate::contain::EngineFault| chunk_error(&f.to_string());
    let mut doc = contain("loading a case file sent whole", || {
        AutoCommit::load(&plain)
    })
    .map_err(engine)?
    .map_err(|e| chunk_error(&format!("the case file does not load: {e}")))?;
    let (heads, changes) = contain("rebuilding the changes of a case file sent whole", || {
        (doc.get_heads(), doc.get_changes(&[]))
    })
    .map_err(engine)?;
    Ok(WholeCaseFile { heads, changes })
}

/// Takes the next automerge chunk off the front of `rest`: its type, its body (past magic,
/// checksum, type and length) and the whole chunk.
fn next_chunk<'a>(rest: &mut &'a [u8]) -> Result<(u8, &'a [u8], &'a [u8]), SyncMessageError> {
    let all = *rest;
    let mut r = Cursor { buf: all };
    if r.take(4)? != CHUNK_MAGIC {
        return Err(chunk_error("not an automerge chunk (bad magic bytes)"));
    }
    r.take(4)?; // checksum: automerge checks it when it loads
    let kind = r.take(1)?[0];
    let len = r.uleb()?;
    let body = r.take_len(len)?;
    *rest = r.buf;
    Ok((kind, body, &all[..all.len() - rest.len()]))
}

fn chunk_error(why: &str) -> SyncMessageError {
    SyncMessageError::Chunk(why.to_owned())
}

fn too_many(what: &'static str, got: usize) -> SyncMessageError {
    SyncMessageError::TooMany {
        what,
        got: got as u64,
        limit: MAX_WHOLE_BYTES as u64,
    }
}

#[cfg(test)]
mod tests;
