//! Documents kept loaded from one message of a sync round to the next.
//!
//! Loading a case file from the store is most of what an office spends to send it: automerge
//! rebuilds every change of the document to check its hashes (`perf` on a county sending
//! 20,000 case files to a new mirror: half its CPU in automerge's `Document::reconstruct`).
//! A cold sync of one document passes through the sending office three times — its offer,
//! its answer to the peer's request, the peer's acknowledgement — and each time loaded the
//! document again.
//!
//! The office now keeps the documents it last worked on, at most [`KEPT_DOCUMENTS`], each
//! with the digest of its heads. A kept copy is handed out only while that digest is the one
//! the store holds for the document (kept in memory with its placement, so checking costs no
//! read): a write by any path, a purge or a rebuild leaves the copy stale, and a stale copy is
//! dropped, never used. A copy is taken out while in use, so two threads never share one;
//! the second loads its own, as before.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use automerge::AutoCommit;

use crate::DocId;
use crate::wire::Digest;

/// Documents kept loaded at most (~75 KiB each for a case file): a cold sync keeps up to
/// [`super::requests::REQUEST_WINDOW`] answers in flight per link, and an offer waits for its
/// answer behind as many others.
pub const KEPT_DOCUMENTS: usize = 256;

/// Loaded documents, the most recently kept last.
#[derive(Default)]
pub struct Loaded {
    kept: Mutex<VecDeque<Kept>>,
}

struct Kept {
    id: DocId,
    digest: Digest,
    doc: AutoCommit,
}

impl Loaded {
    /// The kept copy of `id`, taken out, if its heads are the store's `current` ones. A copy
    /// whose heads are not is dropped.
    pub fn take(&self, id: &DocId, current: &Digest) -> Option<AutoCommit> {
        let found = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let at = kept.iter().position(|k| &k.id == id)?;
            kept.remove(at)?
        };
        (found.digest == *current).then_some(found.doc)
    }

    /// Keeps `doc` as `id` at heads `digest`, in place of an earlier copy; the copy kept
    /// longest ago goes when more than [`KEPT_DOCUMENTS`] are kept.
    pub fn keep(&self, id: &DocId, digest: Digest, doc: AutoCommit) {
        let dropped = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let earlier = kept
                .iter()
                .position(|k| &k.id == id)
                .and_then(|at| kept.remove(at));
            kept.push_back(Kept {
                id: id.clone(),
                digest,
                doc,
            });
            let oldest = (kept.len() > KEPT_DOCUMENTS)
                .then(|| kept.pop_front())
                .flatten();
            (earlier, oldest)
        };
        // Documents are dropped outside the lock: freeing one takes a while.
        drop(dropped);
    }

    /// Documents kept now.
    pub fn len(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc as _;
    use automerge::transaction::Transactable as _;

    fn doc_with(value: &str) -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "name", value).unwrap();
        doc
    }

    fn id(n: usize) -> DocId {
        DocId::new_member((n as u64).to_be_bytes())
    }

    #[test]
    fn a_copy_is_handed_out_once_and_only_at_the_heads_it_was_kept_at() {
        let loaded = Loaded::default();
        loaded.keep(&id(1), [1; 16], doc_with("a"));
        assert!(loaded.take(&id(2), &[1; 16]).is_none(), "another document");
        assert!(
            loaded.take(&id(1), &[2; 16]).is_none(),
            "the store moved on"
        );
        assert!(loaded.is_empty(), "a stale copy is dropped");
        loaded.keep(&id(1), [1; 16], doc_with("a"));
        let doc = loaded.take(&id(1), &[1; 16]).expect("kept at these heads");
        assert_eq!(
            doc.get(automerge::ROOT, "name")
                .unwrap()
                .unwrap()
                .0
                .as_str(),
            Some("a")
        );
        assert!(
            loaded.take(&id(1), &[1; 16]).is_none(),
            "taken out while in use"
        );
    }

    #[test]
    fn a_later_copy_replaces_the_earlier_and_the_oldest_goes_past_the_limit() {
        let loaded = Loaded::default();
        loaded.keep(&id(0), [0; 16], doc_with("old"));
        loaded.keep(&id(0), [9; 16], doc_with("new"));
        assert_eq!(loaded.len(), 1);
        assert!(loaded.take(&id(0), &[0; 16]).is_none());
        loaded.keep(&id(0), [9; 16], doc_with("new"));
        for n in 1..=KEPT_DOCUMENTS {
            loaded.keep(&id(n), [0; 16], doc_with("x"));
        }
        assert_eq!(loaded.len(), KEPT_DOCUMENTS);
        assert!(loaded.take(&id(0), &[9; 16]).is_none(), "kept longest ago");
        assert!(loaded.take(&id(1), &[0; 16]).is_some());
        assert!(loaded.take(&id(KEPT_DOCUMENTS), &[0; 16]).is_some());
    }
}
