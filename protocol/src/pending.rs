//! A message's changes judged but not yet applied, as the judge reads them.
//!
//! automerge applies a change by splicing its ops into the document's columns, so applying
//! a cold case file's ~32 changes one at a time costs ~32 splices of every column: `perf`
//! put `apply_changes` at over a quarter of a receiving node's CPU during cold replication.
//! Yet every change must be judged before automerge sees it, against what its author saw,
//! which includes the changes before it in the same message. This is where those are read
//! from until automerge applies them all in one call: the objects they made, the list
//! elements they inserted, the values their map writes left, and the heads of the document
//! and of them together.
//!
//! It answers only for a change that sees all of them — its dependencies are exactly those
//! heads — and only when each pending change saw everything before it too. Then the
//! document as it is, with these writes over it, is exactly what the author saw: each map
//! write the judge admits names as predecessors every value visible at its key, so after
//! it the key holds that one value. For any other change, and for any read the judge does
//! not answer from here (a case file's facts resolved afresh, an activity's recorder, a
//! transfer's state), the gate first applies the pending changes ([`Pending::take`]) and
//! judges against the document as before.

use std::collections::HashMap;

use automerge::{AutoCommit, Change, ChangeHash};

use crate::judge::{Obj, OpKey};

/// A map key of an object: (object, key).
pub(crate) type Slot = (OpKey, String);

/// What one admitted change wrote, as the judge read its ops.
#[derive(Debug, Default)]
pub struct Writes {
    /// Objects it made.
    pub(crate) made: HashMap<OpKey, Obj>,
    /// List elements it inserted → their list.
    pub(crate) inserted: HashMap<OpKey, OpKey>,
    /// Map keys it wrote → the values visible there after it.
    pub(crate) slots: HashMap<Slot, Vec<OpKey>>,
}

/// Changes judged, in the order judged, and not yet applied to the document.
#[derive(Debug, Default)]
pub struct Pending {
    written: Writes,
    changes: Vec<Change>,
    /// Heads of the document and the pending changes together, sorted.
    heads: Vec<ChangeHash>,
    /// Heads of the document itself, sorted.
    base: Vec<ChangeHash>,
}

impl Pending {
    /// Nothing pending over `doc`.
    pub fn over(doc: &mut AutoCommit) -> Pending {
        let mut heads = doc.get_heads();
        heads.sort();
        Pending {
            base: heads.clone(),
            heads,
            ..Pending::default()
        }
    }

    /// True when no change is pending.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// True when `deps` are exactly the heads of the document and the pending changes: a
    /// change with them saw everything, and may itself wait to be applied.
    pub fn seen_whole_by(&self, deps: &[ChangeHash]) -> bool {
        deps.len() == self.heads.len() && deps.iter().all(|d| self.heads.binary_search(d).is_ok())
    }

    /// The document's own heads: where the judge reads the document while changes are
    /// pending (its current state).
    pub(crate) fn base(&self) -> &[ChangeHash] {
        &self.base
    }

    /// An object a pending change made (as one made before this change).
    pub(crate) fn object(&self, key: &OpKey) -> Option<&Obj> {
        self.written.made.get(key)
    }

    /// The list a pending change inserted `element` into.
    pub(crate) fn list_of(&self, element: &OpKey) -> Option<&OpKey> {
        self.written.inserted.get(element)
    }

    /// The values visible at `slot` after the pending changes, if any of them wrote it.
    pub(crate) fn slot(&self, slot: &Slot) -> Option<&Vec<OpKey>> {
        self.written.slots.get(slot)
    }

    /// Adds `change`, admitted with `writes`, which saw everything ([`Pending::seen_whole_by`]
    /// held for its dependencies): it becomes the only head.
    pub fn add(&mut self, change: Change, writes: Writes) {
        debug_assert!(self.seen_whole_by(change.deps()));
        let Writes {
            made,
            inserted,
            slots,
        } = writes;
        self.written
            .made
            .extend(made.into_iter().map(|(k, o)| (k, o.made_before())));
        self.written.inserted.extend(inserted);
        self.written.slots.extend(slots);
        self.heads = vec![change.hash()];
        self.changes.push(change);
    }

    /// The pending changes, in the order judged, for automerge to apply in one call; once
    /// applied, the document's heads are the heads this held.
    pub fn take(&mut self) -> Vec<Change> {
        self.written = Writes::default();
        self.base = self.heads.clone();
        std::mem::take(&mut self.changes)
    }

    /// Starts again over `doc` (after the gate applied a change itself, or rebuilt the
    /// document). Nothing may be pending.
    pub fn restart(&mut self, doc: &mut AutoCommit) {
        debug_assert!(self.is_empty());
        *self = Pending::over(doc);
    }
}
