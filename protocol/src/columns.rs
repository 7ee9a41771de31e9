//! Counting a change's or a document's ops before automerge reads them.
//!
//! automerge stores ops in run-length-encoded columns, so a change of a hundred bytes can
//! declare a billion ops, or one op with a billion predecessors. automerge's parser walks
//! every op it is told of, and decoding them asks for memory in proportion: far more than the
//! machine has, which aborts the node (an allocation failure is not a panic, so
//! [`crate::contain`] cannot catch it). So before automerge sees a change, [`check_counts`]
//! reads its header and column layout (automerge 0.12's format: `storage/change.rs`,
//! `storage/columns`, `columnar/encoding/rle.rs`) and adds up the runs of the two columns
//! that decide how much automerge makes of it:
//!
//! - the action column: one entry per op, at most [`MAX_OPS`];
//! - the predecessors' group column: one count per op, at most [`MAX_PREDS`] in all.
//!
//! A whole document chunk (a case file sent whole, [`crate::whole`]) is held the same way by
//! [`check_document`], with the columns of its change graph too (`change_graph.rs`,
//! `op_set2/columns.rs`): how many changes, how many dependencies, and how high a change's
//! last op counter and its sequence number go.
//!
//! Both refuse what automerge itself never writes — a compressed column, the same column
//! twice — so the columns counted here are the ones automerge reads. Everything else is
//! left to automerge's parser and to the canonical-encoding check after it.

use std::collections::HashSet;

use crate::syncmsg::{Cursor, SyncMessageError};

/// Most ops one change may carry (a new case file has about thirty).
pub const MAX_OPS: usize = 4096;
/// Most predecessors over all the ops of one change (an op names one per concurrent value it
/// overwrites).
pub const MAX_PREDS: usize = 65_536;

/// Most ops a document sent whole may hold (a case file holds about a thousand after
/// years of use).
pub const MAX_DOC_OPS: u64 = 1 << 18;
/// Most changes a document sent whole may hold (as many as one sync message may carry).
pub const MAX_DOC_CHANGES: u64 = crate::syncmsg::MAX_CHANGES as u64;
/// Most dependencies over all the changes of a document sent whole (a change names one per
/// concurrent head it saw).
pub const MAX_DOC_DEPS: u64 = 4 * MAX_DOC_CHANGES;
/// Most actors a document sent whole may name.
pub const MAX_DOC_ACTORS: u64 = 4096;
/// Longest actor id in a document sent whole (a node's is 24 bytes).
pub const MAX_ACTOR_BYTES: u64 = 128;

/// Highest op counter automerge 0.12 holds: `OpId` keeps a counter in 32 bits, and its
/// change decoder panics on one past it (`types.rs`, `OpId::new`).
const MAX_COUNTER: i128 = u32::MAX as i128;

/// Column id and type of the ops' actions, in a change (`storage/change/change_op_columns.rs`)
/// and in a document (`op_set2/columns.rs`).
const ACTION: (u32, u8) = (4, TYPE_INTEGER);
/// Column id of a change's predecessors' counts.
const PRED_GROUP: (u32, u8) = (7, TYPE_GROUP);
/// Columns of a change's op counters: each op's object, the list element it names, and its
/// predecessors (`storage/change/change_op_columns.rs`).
const OBJ_COUNTER: (u32, u8) = (0, TYPE_INTEGER);
const KEY_COUNTER: (u32, u8) = (1, TYPE_DELTA);
const PRED_COUNTER: (u32, u8) = (7, TYPE_DELTA);
/// Column id of a document's successors' counts (the predecessors, seen from the other end).
const SUCC_GROUP: (u32, u8) = (8, TYPE_GROUP);
/// Columns of a document's change graph (`change_graph.rs`): the author of each change (one
/// entry per change), its sequence number, its last op counter, its dependencies' counts.
const CHANGE_ACTOR: (u32, u8) = (0, TYPE_ACTOR);
const CHANGE_SEQ: (u32, u8) = (0, TYPE_DELTA);
const CHANGE_MAX_OP: (u32, u8) = (1, TYPE_DELTA);
const CHANGE_DEPS_GROUP: (u32, u8) = (4, TYPE_GROUP);
const TYPE_GROUP: u8 = 0;
const TYPE_ACTOR: u8 = 1;
const TYPE_INTEGER: u8 = 2;
const TYPE_DELTA: u8 = 3;
/// The bit of a column spec that says its data is deflated.
const DEFLATE: u32 = 0b1000;

/// Reads the body of an (uncompressed) change chunk — what follows its magic bytes,
/// checksum, type and length — and refuses it if it declares more than [`MAX_OPS`] ops or
/// [`MAX_PREDS`] predecessors, or a layout automerge would not write.
pub fn check_counts(body: &[u8]) -> Result<(), SyncMessageError> {
    let (header, columns) = op_columns(body)?;
    for (spec, data) in &columns {
        if (spec & 0b111) as u8 == TYPE_ACTOR {
            check_actors(data, header.actors)?;
        }
    }
    let ops = column(&columns, ACTION).map_or(Ok(0), |data| runs(data, MAX_OPS as u64, |_| 1))?;
    let preds = column(&columns, PRED_GROUP)
        .map_or(Ok(0), |data| runs(data, MAX_PREDS as u64, |count| count))?;
    if ops > MAX_OPS as u64 {
        return Err(bad(&format!("more than {MAX_OPS} ops in one change")));
    }
    if preds > MAX_PREDS as u64 {
        return Err(bad(&format!(
            "more than {MAX_PREDS} predecessors in one change"
        )));
    }
    check_counters(header.start_op, ops, &columns)
}

/// Refuses a change whose own ops, or the objects, elements or predecessors they name, have
/// an op counter past [`MAX_COUNTER`] (found by the `change_chunk` fuzz target).
fn check_counters(
    start_op: u64,
    ops: u64,
    columns: &[(u32, &[u8])],
) -> Result<(), SyncMessageError> {
    let past = |what: &str, counter: i128| {
        bad(&format!(
            "{what} with op counter {counter}, past automerge's {MAX_COUNTER}"
        ))
    };
    let last_own = i128::from(start_op) + i128::from(ops) - 1;
    if last_own > MAX_COUNTER {
        return Err(past("an op", last_own));
    }
    if let Some(data) = column(columns, OBJ_COUNTER) {
        let mut highest = 0;
        each_value(data, |counter| {
            highest = highest.max(counter);
            Ok(())
        })?;
        if i128::from(highest) > MAX_COUNTER {
            return Err(past("an op's object", highest.into()));
        }
    }
    for (id, entries, what) in [
        (KEY_COUNTER, MAX_OPS, "an op's list element"),
        (PRED_COUNTER, MAX_PREDS, "an op's predecessor"),
    ] {
        let highest =
            column(columns, id).map_or(Ok(0), |data| highest_delta(data, entries as u64))?;
        if highest > MAX_COUNTER {
            return Err(past(what, highest));
        }
    }
    Ok(())
}

/// What a change chunk's header says that its op columns are checked against.
struct ChangeHeader {
    /// The actors it lists: its author and the others its ops name.
    actors: u64,
    /// The op counter of its first op.
    start_op: u64,
}

/// A change chunk's header and its op columns, each as its spec and its data, past the
/// header (dependencies, actor, seq, start op, time, message, other actors).
fn op_columns(body: &[u8]) -> Result<(ChangeHeader, Columns<'_>), SyncMessageError> {
    let mut r = Cursor { buf: body };
    let deps = r.uleb()?;
    r.take_len(deps.saturating_mul(32))?;
    let actor = r.uleb()?;
    r.take_len(actor)?;
    r.uleb()?; // seq
    let start_op = r.uleb()?;
    r.sleb()?; // timestamp
    let message = r.uleb()?;
    r.take_len(message)?;
    let others = r.uleb()?;
    for _ in 0..others {
        let other_actor = r.uleb()?;
        r.take_len(other_actor)?;
    }
    let layout = layout(&mut r, "a change")?;
    let header = ChangeHeader {
        actors: others.saturating_add(1),
        start_op,
    };
    Ok((header, columns(&mut r, layout)?))
}

/// Refuses an actor column (a run-length-encoded column of indices into the change's
/// actors) that names an actor past the `actors` the change lists: automerge 0.12's change
/// decoder panics on one (`Change::decode`, found by the `sync_message` fuzz target).
fn check_actors(data: &[u8], actors: u64) -> Result<(), SyncMessageError> {
    each_value(data, |index| {
        if index >= actors {
            return Err(bad(&format!(
                "an op names actor {index} of a change that lists {actors}"
            )));
        }
        Ok(())
    })
}

/// Calls `f` on each distinct value of a run-length-encoded column of unsigned integers
/// (once per run, once per literal; nulls skipped).
fn each_value(
    data: &[u8],
    mut f: impl FnMut(u64) -> Result<(), SyncMessageError>,
) -> Result<(), SyncMessageError> {
    let mut r = Cursor { buf: data };
    while !r.buf.is_empty() {
        let count = r.sleb()?;
        if count > 0 {
            f(r.uleb()?)?;
        } else if count < 0 {
            // Each value is in the data: the loop ends with the data at the latest.
            for _ in 0..count.unsigned_abs() {
                f(r.uleb()?)?;
            }
        } else {
            r.uleb()?; // a run of nulls
        }
    }
    Ok(())
}

/// A column layout — a count, then each column's spec and length — as automerge writes it:
/// no compressed column, no column twice. `of` names what it lays out, for the error.
fn layout(r: &mut Cursor<'_>, of: &str) -> Result<Vec<(u32, u64)>, SyncMessageError> {
    let columns = r.uleb()?;
    let (mut layout, mut specs) = (Vec::new(), HashSet::new());
    for _ in 0..columns {
        let spec = u32::try_from(r.uleb()?).map_err(|_| bad("a column spec past 32 bits"))?;
        let len = r.uleb()?;
        if spec & DEFLATE != 0 {
            return Err(bad(&format!("a compressed column in {of}")));
        }
        if !specs.insert(spec) {
            return Err(bad(&format!("the same column twice in {of}")));
        }
        layout.push((spec, len));
    }
    Ok(layout)
}

/// Columns as read: each one's spec and its data.
type Columns<'a> = Vec<(u32, &'a [u8])>;

/// The data of each column of `layout`, read from `r` in order.
fn columns<'a>(
    r: &mut Cursor<'a>,
    layout: Vec<(u32, u64)>,
) -> Result<Columns<'a>, SyncMessageError> {
    layout
        .into_iter()
        .map(|(spec, len)| Ok((spec, r.take_len(len)?)))
        .collect()
}

/// The column `(id, type)` of `columns`, if it is there.
fn column<'a>(columns: &[(u32, &'a [u8])], (id, kind): (u32, u8)) -> Option<&'a [u8]> {
    columns
        .iter()
        .find(|(spec, _)| (spec >> 4, (spec & 0b111) as u8) == (id, kind))
        .map(|(_, data)| *data)
}

/// What a document chunk declares ([`check_document`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentCounts {
    /// Its changes.
    pub changes: u64,
    /// Its ops.
    pub ops: u64,
}

/// Reads the body of an (uncompressed) document chunk — what follows its magic bytes,
/// checksum, type and length — and refuses it if it declares more than [`MAX_DOC_ACTORS`]
/// actors (or one longer than [`MAX_ACTOR_BYTES`]), more heads than a sync message may name,
/// more than [`MAX_DOC_OPS`] ops or successors, more than [`MAX_DOC_CHANGES`] changes or
/// [`MAX_DOC_DEPS`] dependencies, a change whose last op counter is past the ops the
/// document holds or whose sequence number is past its changes (automerge sizes a change's
/// ops from its counters), or a layout automerge would not write.
pub fn check_document(body: &[u8]) -> Result<DocumentCounts, SyncMessageError> {
    let mut r = Cursor { buf: body };
    let actors = r.uleb()?;
    if actors > MAX_DOC_ACTORS {
        return Err(too_many("actors in a document", actors, MAX_DOC_ACTORS));
    }
    for _ in 0..actors {
        let len = r.uleb()?;
        if len > MAX_ACTOR_BYTES {
            return Err(too_many("bytes of an actor id", len, MAX_ACTOR_BYTES));
        }
        r.take_len(len)?;
    }
    let heads = r.uleb()?;
    let most_heads = crate::syncmsg::MAX_HEADS as u64;
    if heads > most_heads {
        return Err(too_many("heads of a document", heads, most_heads));
    }
    r.take_len(heads * 32)?;
    let change_layout = layout(&mut r, "a document's changes")?;
    let op_layout = layout(&mut r, "a document's ops")?;
    let change_columns = columns(&mut r, change_layout)?;
    let op_columns = columns(&mut r, op_layout)?;
    let count = |columns: &[(u32, &[u8])], id, limit, weight: fn(u64) -> u64, what| {
        let sum = column(columns, id).map_or(Ok(0), |data| runs(data, limit, weight))?;
        if sum > limit {
            return Err(too_many(what, sum, limit));
        }
        Ok(sum)
    };
    let one = |_| 1;
    let each = |n| n;
    let ops = count(&op_columns, ACTION, MAX_DOC_OPS, one, "ops in a document")?;
    count(
        &op_columns,
        SUCC_GROUP,
        MAX_DOC_OPS,
        each,
        "successors in a document",
    )?;
    let changes = count(
        &change_columns,
        CHANGE_ACTOR,
        MAX_DOC_CHANGES,
        one,
        "changes in a document",
    )?;
    count(
        &change_columns,
        CHANGE_DEPS_GROUP,
        MAX_DOC_DEPS,
        each,
        "dependencies in a document",
    )?;
    let highest = |id, limit: u64, what| -> Result<(), SyncMessageError> {
        let top = column(&change_columns, id).map_or(Ok(0), |data| highest_delta(data, changes))?;
        if top > i128::from(limit) {
            return Err(bad(&format!(
                "a change's {what} of {top} in a document of {ops} ops and {changes} changes"
            )));
        }
        Ok(())
    };
    highest(CHANGE_MAX_OP, ops, "last op counter")?;
    highest(CHANGE_SEQ, changes, "sequence number")?;
    Ok(DocumentCounts { changes, ops })
}

/// The highest value of a delta-encoded column (a run-length-encoded column of signed steps,
/// each value the one before plus its step), reading at most `entries` entries: past them,
/// the column is longer than the document or change it belongs to.
fn highest_delta(data: &[u8], entries: u64) -> Result<i128, SyncMessageError> {
    let mut r = Cursor { buf: data };
    let (mut value, mut top, mut read) = (0i128, 0i128, 0u64);
    while !r.buf.is_empty() {
        let count = r.sleb()?;
        let n = if count > 0 {
            let step = i128::from(r.sleb()?);
            let n = count as u64;
            // The run's values go one way: its highest is its first or its last.
            let run = step.saturating_mul(i128::from(n));
            top = top
                .max(value.saturating_add(step))
                .max(value.saturating_add(run));
            value = value.saturating_add(run);
            n
        } else if count < 0 {
            let n = count.unsigned_abs();
            for _ in 0..n.min(entries.saturating_add(1)) {
                value = value.saturating_add(i128::from(r.sleb()?));
                top = top.max(value);
            }
            n
        } else {
            r.uleb()? // a run of nulls
        };
        read = read.saturating_add(n);
        if read > entries {
            return Err(bad(&format!(
                "a delta column longer than its {entries} entries"
            )));
        }
    }
    Ok(top)
}

fn too_many(what: &'static str, got: u64, limit: u64) -> SyncMessageError {
    SyncMessageError::TooMany { what, got, limit }
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

    use crate::syncmsg::write_uleb;

    /// The column of the objects' actors, in a change.
    const OBJ_ACTOR: (u32, u8) = (0, TYPE_ACTOR);

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
        let (_, columns) = op_columns(&body).unwrap();
        let group = columns
            .iter()
            .find(|(spec, _)| (spec >> 4, (spec & 0b111) as u8) == PRED_GROUP);
        let preds = group.map(|(_, data)| runs(data, MAX_PREDS as u64, |c| c).unwrap());
        assert_eq!(preds, Some(10), "ten overwrites, one predecessor each");
        assert!(check_counts(&body).is_ok());
    }

    #[test]
    fn an_op_may_name_every_actor_its_change_lists_and_no_other() {
        // An insert into a list another actor made: its object is actor 1 of two listed.
        let mut a = AutoCommit::new();
        let list = a.put_object(ROOT, "l", ObjType::List).unwrap();
        a.commit();
        let mut b = a.fork();
        b.insert(&list, 0, ScalarValue::Null).unwrap();
        b.commit();
        let honest = body(&b.get_last_local_change().unwrap());
        let (header, columns) = op_columns(&honest).unwrap();
        assert_eq!(header.actors, 2);
        // A literal run (count -1) of one value: actor 1.
        assert_eq!(column(&columns, OBJ_ACTOR), Some(&[0x7f, 1][..]));
        assert!(check_counts(&honest).is_ok());

        // The same op's object made to name actor 2, which the change does not list.
        let mut forged = honest.clone();
        let data = column(&columns, OBJ_ACTOR).unwrap();
        let at = data.as_ptr() as usize - honest.as_ptr() as usize;
        forged[at + 1] = 2;
        let refused = check_counts(&forged).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("names actor 2 of a change that lists 2"),
            "{refused}"
        );
    }

    /// `body` with the data of its op column `id` replaced by `data` (its layout rewritten).
    fn with_column(body: &[u8], id: (u32, u8), data: &[u8]) -> Vec<u8> {
        let (_, columns) = op_columns(body).unwrap();
        let offset = |d: &[u8]| d.as_ptr() as usize - body.as_ptr() as usize;
        let mut layout = Vec::new();
        write_uleb(&mut layout, columns.len() as u64);
        for (spec, d) in &columns {
            write_uleb(&mut layout, u64::from(*spec));
            write_uleb(&mut layout, d.len() as u64);
        }
        let start = offset(columns[0].1) - layout.len();
        let (_, last) = columns.last().unwrap();
        let end = offset(last) + last.len();
        let replaced: Vec<(u32, &[u8])> = columns
            .iter()
            .map(|&(spec, d)| {
                let hit = (spec >> 4, (spec & 0b111) as u8) == id;
                (spec, if hit { data } else { d })
            })
            .collect();
        let mut out = body[..start].to_vec();
        write_uleb(&mut out, replaced.len() as u64);
        for (spec, d) in &replaced {
            write_uleb(&mut out, u64::from(*spec));
            write_uleb(&mut out, d.len() as u64);
        }
        for (_, d) in &replaced {
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&body[end..]);
        out
    }

    /// A literal run of one value, as automerge writes a column of one op: unsigned in an
    /// integer column, a signed step in a delta column.
    fn one_value((_, kind): (u32, u8), value: u64) -> Vec<u8> {
        let mut out = vec![0x7f];
        if kind == TYPE_DELTA {
            crate::syncmsg::write_sleb(&mut out, value as i64);
        } else {
            write_uleb(&mut out, value);
        }
        out
    }

    #[test]
    fn counters_past_what_automerge_holds_are_refused() {
        // One op overwriting a key another op of the same actor wrote: its predecessor.
        let mut doc = AutoCommit::new();
        let list = doc.put_object(ROOT, "l", ObjType::List).unwrap();
        doc.insert(&list, 0, 1).unwrap();
        doc.commit();
        doc.put(&list, 0, 2).unwrap();
        doc.commit();
        let honest = body(&doc.get_last_local_change().unwrap());
        assert!(check_counts(&honest).is_ok());
        let (_, columns) = op_columns(&honest).unwrap();
        for id in [OBJ_COUNTER, KEY_COUNTER, PRED_COUNTER] {
            assert!(column(&columns, id).is_some(), "{id:?} is written");
        }
        // The same change rewritten to be read by the fuzz target's finding: a value past
        // 32 bits, in each counter column (a delta column's first value is its first step).
        let past = u64::from(u32::MAX) + 1;
        for (id, what) in [
            (OBJ_COUNTER, "an op's object"),
            (KEY_COUNTER, "an op's list element"),
            (PRED_COUNTER, "an op's predecessor"),
        ] {
            let forged = with_column(&honest, id, &one_value(id, past));
            let refused = check_counts(&forged).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("{what} with op counter {past}")),
                "{refused}"
            );
            // One below the limit is not refused for its counter.
            let at_limit = with_column(&honest, id, &one_value(id, past - 1));
            assert!(check_counts(&at_limit).is_ok(), "{id:?}");
        }
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
            let mut out = Vec::new();
            crate::syncmsg::write_sleb(&mut out, v);
            assert_eq!(Cursor { buf: &out }.sleb().unwrap(), v, "{v}");
        }
    }
}
