//! Counting a change's ops before automerge reads them.
//!
//! automerge stores a change's ops in run-length-encoded columns, so a change of a hundred
//! bytes can declare a billion ops, or one op with a billion predecessors. automerge's parser
//! walks every op it is told of, and decoding them asks for memory in proportion: far more
//! than the machine has, which aborts the node (an allocation failure is not a panic, so
//! [`crate::contain`] cannot catch it). So before automerge sees a change, [`check_counts`]
//! reads its header and column layout (automerge 0.12's format: `storage/change.rs`,
//! `storage/columns`, `columnar/encoding/rle.rs`) and adds up the runs of the two columns
//! that decide how much automerge makes of it:
//!
//! - the action column: one entry per op, at most [`MAX_OPS`];
//! - the predecessors' group column: one count per op, at most [`MAX_PREDS`] in all.
//!
//! It refuses what automerge itself never writes — a compressed column, the same column
//! twice — so the columns counted here are the ones automerge reads. Everything else is
//! left to automerge's parser and to the canonical-encoding check after it.

use std::collections::HashSet;

use crate::syncmsg::{Cursor, SyncMessageError};

/// Most ops one change may carry (a new case file has about thirty).
pub const MAX_OPS: usize = 4096;
/// Most predecessors over all the ops of one change (an op names one per concurrent value it
/// overwrites).
pub const MAX_PREDS: usize = 65_536;

/// Column id of the ops' actions (`storage/change/change_op_columns.rs`).
const ACTION: (u32, u8) = (4, TYPE_INTEGER);
/// Column id of the predecessors' counts.
const PRED_GROUP: (u32, u8) = (7, TYPE_GROUP);
const TYPE_GROUP: u8 = 0;
const TYPE_INTEGER: u8 = 2;
/// The bit of a column spec that says its data is deflated.
const DEFLATE: u32 = 0b1000;

/// Reads the body of an (uncompressed) change chunk — what follows its magic bytes,
/// checksum, type and length — and refuses it if it declares more than [`MAX_OPS`] ops or
/// [`MAX_PREDS`] predecessors, or a layout automerge would not write.
pub fn check_counts(body: &[u8]) -> Result<(), SyncMessageError> {
    let (mut ops, mut preds) = (0u64, 0u64);
    for (spec, data) in op_columns(body)? {
        let column = (spec >> 4, (spec & 0b111) as u8);
        if column == ACTION {
            ops = runs(data, MAX_OPS as u64, |_| 1)?;
        } else if column == PRED_GROUP {
            preds = runs(data, MAX_PREDS as u64, |count| count)?;
        }
    }
    if ops > MAX_OPS as u64 {
        return Err(bad(&format!("more than {MAX_OPS} ops in one change")));
    }
    if preds > MAX_PREDS as u64 {
        return Err(bad(&format!(
            "more than {MAX_PREDS} predecessors in one change"
        )));
    }
    Ok(())
}

/// The op columns of a change chunk's body, each as its spec and its data, past the header
/// (dependencies, actor, seq, start op, time, message, other actors).
fn op_columns(body: &[u8]) -> Result<Vec<(u32, &[u8])>, SyncMessageError> {
    let mut r = Cursor { buf: body };
    let deps = r.uleb()?;
    r.take_len(deps.saturating_mul(32))?;
    let actor = r.uleb()?;
    r.take_len(actor)?;
    r.uleb()?; // seq
    r.uleb()?; // start op
    r.sleb()?; // timestamp
    let message = r.uleb()?;
    r.take_len(message)?;
    for _ in 0..r.uleb()? {
        let other_actor = r.uleb()?;
        r.take_len(other_actor)?;
    }
    let columns = r.uleb()?;
    let (mut layout, mut specs) = (Vec::new(), HashSet::new());
    for _ in 0..columns {
        let spec = u32::try_from(r.uleb()?).map_err(|_| bad("a column spec past 32 bits"))?;
        let len = r.uleb()?;
        if spec & DEFLATE != 0 {
            return Err(bad("a compressed column in a change"));
        }
        if !specs.insert(spec) {
            return Err(bad("the same column twice in a change"));
        }
        layout.push((spec, len));
    }
    layout
        .into_iter()
        .map(|(spec, len)| Ok((spec, r.take_len(len)?)))
        .collect()
}

/// Adds up a run-length-encoded column of unsigned integers, each entry weighted by
/// `weight(value)` (a null weighs 1), stopping as soon as the sum passes `limit`.
fn runs(data: &[u8], limit: u64, weight: impl Fn(u64) -> u64) -> Result<u64, SyncMessageError> {
    let mut r = Cursor { buf: data };
    let mut sum = 0u64;
    while !r.buf.is_empty() && sum <= limit {
        let count = r.sleb()?;
        let added = if count > 0 {
            (count as u64).saturating_mul(weight(r.uleb()?))
        } else if count < 0 {
            // Each value is in the data: the loop ends with the data at the latest.
            let mut literal = 0u64;
            for _ in 0..count.unsigned_abs() {
                literal = literal.saturating_add(weight(r.uleb()?));
                if sum.saturating_add(literal) > limit {
                    break;
                }
            }
            literal
        } else {
            r.uleb()? // a run of nulls
        };
        sum = sum.saturating_add(added);
    }
    Ok(sum)
}

fn bad(why: &str) -> SyncMessageError {
    SyncMessageError::Chunk(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjType, ROOT, ScalarValue};

    /// The body of `change`'s chunk: past magic (4), checksum (4), type (1) and length.
    fn body(change: &automerge::Change) -> Vec<u8> {
        let raw = change.raw_bytes();
        let mut r = Cursor { buf: &raw[9..] };
        let len = r.uleb().unwrap();
        r.take_len(len).unwrap().to_vec()
    }

    fn inserts(n: usize) -> automerge::Change {
        let mut doc = AutoCommit::new();
        let list = doc.put_object(ROOT, "l", ObjType::List).unwrap();
        doc.commit();
        for i in 0..n {
            doc.insert(&list, i, ScalarValue::Null).unwrap();
        }
        doc.commit();
        doc.get_last_local_change().unwrap().clone()
    }

    #[test]
    fn real_changes_pass_up_to_the_limit_and_not_past_it() {
        assert!(check_counts(&body(&inserts(1))).is_ok());
        assert!(check_counts(&body(&inserts(MAX_OPS))).is_ok());
        let past = check_counts(&body(&inserts(MAX_OPS + 1))).unwrap_err();
        assert!(past.to_string().contains("more than 4096 ops"), "{past}");
    }

    #[test]
    fn overwrites_count_their_predecessors() {
        let mut doc = AutoCommit::new();
        for i in 0..10 {
            doc.put(ROOT, format!("k{i}"), 1).unwrap();
        }
        doc.commit();
        for i in 0..10 {
            doc.put(ROOT, format!("k{i}"), 2).unwrap();
        }
        doc.commit();
        let change = doc.get_last_local_change().unwrap().clone();
        let body = body(&change);
        let columns = op_columns(&body).unwrap();
        let group = columns
            .iter()
            .find(|(spec, _)| (spec >> 4, (spec & 0b111) as u8) == PRED_GROUP);
        let preds = group.map(|(_, data)| runs(data, MAX_PREDS as u64, |c| c).unwrap());
        assert_eq!(preds, Some(10), "ten overwrites, one predecessor each");
        assert!(check_counts(&body).is_ok());
    }

    #[test]
    fn signed_leb_reads_as_automerge_writes_it() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            4096,
            -4097,
            i64::MAX,
            i64::MIN,
        ] {
            let (mut out, mut rest) = (Vec::new(), v);
            loop {
                let byte = (rest & 0x7f) as u8;
                rest >>= 7;
                let done = (rest == 0 && byte & 0x40 == 0) || (rest == -1 && byte & 0x40 != 0);
                out.push(if done { byte } else { byte | 0x80 });
                if done {
                    break;
                }
            }
            assert_eq!(Cursor { buf: &out }.sleb().unwrap(), v, "{v}");
        }
    }
}
