//! Catching a peer up when a link comes back, before reconciling.
//!
//! The documents this office changed while the link was down are known without asking the
//! peer: their heads moved away from the shared heads persisted for the peer
//! ([`super::Office::changed_since_synced`]). They go first, each in one message that carries
//! its changes ([`crate::docsync`]), and reconciliation waits until they are settled: run
//! at once, it finds the same documents among thousands of unchanged ones at ~450 bytes
//! each (a range split down to a list), then each takes two more messages. Once they are
//! settled, reconciliation finds what is left — the peer's own changes, anything the
//! persisted states did not know — usually nothing, one fingerprint each way.
//!
//! While the link catches up, reconciliation waits on both sides: the dialer does not start
//! it, and the peer's reconciliation messages are swallowed. Once caught up, this office
//! starts a fresh one itself, whichever side it is on: the peer's messages were made before
//! the catch-up changed what it holds, and answering them would reconcile against that stale
//! view (the peer would find the documents just caught up "differing", ask about them again
//! and, its questions answered by silence since nothing is new, count them pending for good:
//! found by the 2,000-member bench). A fresh whole-range fingerprint makes the peer read its
//! inventory again.
//!
//! The wait is bounded: it ends when every document caught up is in sync with the peer, or
//! when none has settled for [`QUIET_MS`] (a slow or silent peer; the node looks again
//! within that time, [`CatchUp::owes_reconcile`]). Swallowing costs no memory: only that
//! the peer asked is kept.

use std::collections::BTreeSet;

use crate::DocId;
use crate::wire::Frame;

/// The wait for documents caught up ends when none has settled for this long (ms).
pub const QUIET_MS: i64 = super::requests::REQUEST_TIMEOUT_MS;

/// One link's catch-up.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Documents sent first and not yet in sync with the peer.
    docs: BTreeSet<DocId>,
    /// When the last of them settled (or the catch-up began), caller's clock.
    progress_ms: i64,
    /// This office reconciles once caught up: it dialed, or the peer asked meanwhile.
    owes_reconcile: bool,
}

impl CatchUp {
    /// Catching up on `docs` from `now_ms`; `dialed` when this office starts the link's
    /// reconciliation.
    pub fn new(docs: impl IntoIterator<Item = DocId>, now_ms: i64, dialed: bool) -> Self {
        let docs: BTreeSet<DocId> = docs.into_iter().collect();
        CatchUp {
            owes_reconcile: dialed && !docs.is_empty(),
            docs,
            progress_ms: now_ms,
        }
    }

    /// True while reconciliation waits for documents caught up.
    pub fn waiting(&self, now_ms: i64) -> bool {
        !self.docs.is_empty() && now_ms - self.progress_ms < QUIET_MS
    }

    /// `doc` is in sync with the peer, or gone from the link.
    pub fn settled(&mut self, doc: &DocId, now_ms: i64) {
        if self.docs.remove(doc) {
            self.progress_ms = self.progress_ms.max(now_ms);
        }
    }

    /// Swallows a reconciliation message from the peer while waiting (`None`), remembering
    /// to reconcile afresh once caught up; gives back every other frame, and every frame
    /// once the wait is over.
    pub fn swallow(&mut self, frame: Frame, now_ms: i64) -> Option<Frame> {
        if matches!(frame, Frame::Reconcile { .. }) && self.waiting(now_ms) {
            self.owes_reconcile = true;
            return None;
        }
        Some(frame)
    }

    /// True while this office owes the link a reconciliation: time alone may end the wait.
    pub fn owes_reconcile(&self) -> bool {
        self.owes_reconcile
    }

    /// True when the wait is over and a reconciliation is owed ([`CatchUp::release`]).
    pub fn due(&self, now_ms: i64) -> bool {
        self.owes_reconcile && !self.waiting(now_ms)
    }

    /// True once, when the wait is over and this office must start a reconciliation now.
    pub fn release(&mut self, now_ms: i64) -> bool {
        if !self.due(now_ms) {
            return false;
        }
        self.docs.clear();
        self.owes_reconcile = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u8) -> DocId {
        DocId::new_member([n; 8])
    }

    fn reconcile() -> Frame {
        Frame::Reconcile { ranges: vec![] }
    }

    #[test]
    fn reconciliation_waits_until_every_document_caught_up_is_in_sync() {
        let mut c = CatchUp::new([doc(1), doc(2)], 0, false);
        assert!(
            !c.owes_reconcile(),
            "the peer dialed: it starts reconciling"
        );
        assert!(c.swallow(reconcile(), 10).is_none(), "its message waits");
        assert!(
            c.swallow(Frame::Left { doc: doc(9) }, 10).is_some(),
            "other frames pass"
        );
        assert!(c.owes_reconcile() && !c.release(20));
        c.settled(&doc(1), 30);
        c.settled(&doc(7), 31);
        assert!(c.waiting(40) && !c.release(40));
        c.settled(&doc(2), 50);
        assert!(!c.waiting(50));
        assert!(c.release(50), "caught up: this office reconciles afresh");
        assert!(!c.owes_reconcile() && !c.release(60), "once");
        assert!(c.swallow(reconcile(), 60).is_some(), "no more waiting");
    }

    #[test]
    fn the_wait_ends_when_nothing_settles_for_a_while() {
        let mut c = CatchUp::new([doc(1), doc(2)], 1_000, true);
        assert!(
            c.owes_reconcile(),
            "the dialer owes the first reconciliation"
        );
        c.settled(&doc(1), 5_000);
        assert!(!c.due(5_000 + QUIET_MS - 1), "progress made 4 s in");
        assert!(c.due(5_000 + QUIET_MS));
        assert!(c.release(5_000 + QUIET_MS));
    }

    #[test]
    fn nothing_to_catch_up_holds_nothing() {
        let mut c = CatchUp::new([], 0, true);
        assert!(
            !c.waiting(0) && !c.owes_reconcile(),
            "the dialer reconciles at once"
        );
        assert!(c.swallow(reconcile(), 0).is_some());
        assert!(!c.release(0));
    }
}
