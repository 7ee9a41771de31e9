//! A document leaving this office's scope: when it may be purged, and the roster history
//! line that records it.
//!
//! A relay (a township, the county) keeps a document that left its scope until every child
//! office on the way to an org that left has confirmed it no longer holds it (a `Left`
//! frame), so the office below learns it left. An office whose own write took a document out
//! of its scope (the target rejecting a transfer) keeps it until a peer that still holds it
//! has that write. Only then is it purged; if it left this office's own roster (a member
//! transferred out, a residence ended), the history line is written in the purge's
//! transaction, so a crash cannot purge the file and lose the line.

use automerge::AutoCommit;

use super::summary::{self, DocSummary, HeldAs};
use super::{DocWrite, Notice, NoticeKind, Office, Storage, StorageError, WriteError};
use crate::casefile::MemberFacts;
use crate::gate;
use crate::reader::Reader;
use crate::roster::{self, HistoryLine};
use crate::stamp::{self, Stamp};
use crate::{DocId, OrgPath};

/// A signed, judged write of this office's roster, not yet stored.
struct PreparedWrite {
    doc: AutoCommit,
    heads_before: Vec<automerge::ChangeHash>,
    summary: DocSummary,
    attestation: crate::attest::Attestation,
}

impl<S: Storage> Office<S> {
    /// Purges a document that left this office's scope, with its roster history line (if it
    /// left this office's own roster) in the same store transaction, signed and judged like
    /// any write. Returns the line (recording it again with [`Office::add_history`] is a
    /// no-op) and the notices. Called with the document's lock held.
    pub(super) fn leave_scope(
        &self,
        id: &DocId,
        doc: &AutoCommit,
        before: Option<&DocSummary>,
        now_ms: i64,
    ) -> Result<(Option<HistoryLine>, Vec<Notice>), StorageError> {
        let line = before.and_then(|before| self.history_line(id, doc, before, now_ms));
        let roster = DocId::roster(&self.me);
        // The roster's lock too, unless it is the same shard (held already). Only ever this
        // one second lock is taken while a document's is held, so no two can wait in a cycle.
        let _roster_guard =
            (line.is_some() && self.shard(&roster) != self.shard(id)).then(|| self.lock(&roster));
        let history = match &line {
            Some(line) => self
                .history_change(&roster, line, now_ms)
                .unwrap_or_else(|e| {
                    tracing::error!("cannot prepare roster history for {id}: {e}");
                    None
                }),
            None => None,
        };
        let also = history.as_ref().map(|_| ());
        match history {
            Some(mut h) => self.store.purge_with(
                id,
                Some(DocWrite {
                    id: &roster,
                    doc: &mut h.doc,
                    heads_before: &h.heads_before,
                    summary: &h.summary,
                    attestations: std::slice::from_ref(&h.attestation),
                    proofs: &[],
                }),
            )?,
            None => self.store.purge_with(id, None)?,
        }
        tracing::info!(doc = %id, "document left this office's scope; purged");
        let mut notices = vec![Notice {
            doc: id.clone(),
            kind: NoticeKind::Left,
            cause: None,
        }];
        if also.is_some() {
            notices.push(Notice {
                doc: roster,
                kind: NoticeKind::Changed,
                cause: None,
            });
        }
        Ok((line, notices))
    }

    /// Purges `id` now as a document that left this office's scope, exactly as a change
    /// taking it out would (the node's store test uses it to cut power right after).
    pub fn purge_as_left(
        &self,
        id: &DocId,
        now_ms: i64,
    ) -> Result<(Option<HistoryLine>, Vec<Notice>), StorageError> {
        let _guard = self.lock(id);
        let before = self.store.summary(id)?;
        let Some(doc) = self.load(id)? else {
            return Ok((None, Vec::new()));
        };
        self.leave_scope(id, &doc, before.as_ref(), now_ms)
    }

    /// The roster history line for a document leaving this office, if it left this office's
    /// own roster.
    fn history_line(
        &self,
        id: &DocId,
        doc: &AutoCommit,
        before: &DocSummary,
        now_ms: i64,
    ) -> Option<HistoryLine> {
        let facts = MemberFacts::read(&Reader::now(doc));
        let event = match self.held_as(before)? {
            HeldAs::Residence => "residence-ended",
            HeldAs::Home => "transferred-out",
        };
        let to_org = if event == "transferred-out" {
            facts.home_org.map(|o| o.to_string())
        } else {
            None
        };
        Some(HistoryLine {
            id: id.to_string(),
            name: before.name.clone(),
            event: event.into(),
            at: stamp::rfc3339(now_ms),
            to_org,
        })
    }

    /// This office's roster with `line` added, signed and judged by the gate as every write
    /// is, ready to be stored in the purge's transaction. `None` when there is no roster or
    /// nothing changed. Called with the roster's lock held.
    fn history_change(
        &self,
        roster: &DocId,
        line: &HistoryLine,
        now_ms: i64,
    ) -> Result<Option<PreparedWrite>, WriteError> {
        let Some(mut doc) = self.load(roster)? else {
            return Ok(None);
        };
        let heads_before = doc.get_heads();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms));
        roster::add_history(&mut doc, line)?;
        let Some(hash) = gate::commit_as(&mut doc, &self.me, &stamp) else {
            return Ok(None);
        };
        gate::judge_local(&mut doc, roster, &hash, &*self.auth, now_ms)
            .map_err(WriteError::Forbidden)?;
        let attestation = self.signer.sign(&hash);
        let before = self.store.summary(roster)?;
        let summary = summary::summarise_after(roster, &mut doc, before.as_ref());
        Ok(Some(PreparedWrite {
            doc,
            heads_before,
            summary,
            attestation,
        }))
    }

    /// Records a roster history line, unless it is there already (normally the purge that
    /// produced it wrote it in the same transaction). Returns the notices.
    pub fn add_history(&self, line: HistoryLine, now_ms: i64) -> Vec<Notice> {
        let roster = DocId::roster(&self.me);
        let recorded = self
            .load(&roster)
            .ok()
            .flatten()
            .is_some_and(|doc| roster::read(&doc).history.contains(&line));
        if recorded {
            return Vec::new();
        }
        match self.write(&roster, false, now_ms, |doc, _| {
            Ok(roster::add_history(doc, &line)?)
        }) {
            Ok(((), notices)) => notices,
            Err(e) => {
                tracing::error!("cannot record roster history for {}: {e}", line.id);
                Vec::new()
            }
        }
    }

    /// The child offices that must learn a document left before this relay may purge it:
    /// for each org that left the scope strictly below this office, the child on the way.
    pub(super) fn children_to_tell(&self, summary: &DocSummary) -> Vec<OrgPath> {
        let depth = self.me.depth();
        let mut children: Vec<OrgPath> = summary
            .exits
            .iter()
            .map(|e| &e.org)
            .filter(|e| self.me.is_ancestor_of(e))
            .filter_map(|e| {
                OrgPath::parse(&e.segments().take(depth + 1).collect::<Vec<_>>().join("/")).ok()
            })
            .filter(|c| !summary.confirmed.contains(c))
            .collect();
        children.sort();
        children.dedup();
        children
    }

    /// `peer` no longer holds `id`. If this office is keeping `id` only to tell that peer,
    /// the document is purged now.
    pub fn peer_left(
        &self,
        id: &DocId,
        peer: &OrgPath,
        now_ms: i64,
    ) -> Result<Vec<Notice>, StorageError> {
        self.settle_leaving(id, now_ms, |summary| {
            if !summary.leaving || !self.children_to_tell(summary).contains(peer) {
                return false;
            }
            summary.confirmed.push(peer.clone());
            true
        })
    }

    /// Marks a document as leaving this office: hidden from the API, kept until the parent
    /// holds everything this office has of it (so no write made or relayed here is lost
    /// with the purge) and the children on the way to offices that held it confirm they
    /// left too.
    /// `before` is the summary before the change: how this office held the document
    /// (home, residence) is kept for the roster history line written at the purge.
    pub(super) fn mark_leaving(&self, summary: &mut DocSummary, before: Option<&DocSummary>) {
        summary.leaving = true;
        summary.awaiting_upstream = self.me.parent().is_some();
        summary.held_as = before.and_then(|b| self.held_as(b));
    }

    /// How this office held a document, by its summary: as recorded when it started leaving,
    /// else as its home or residence office.
    fn held_as(&self, summary: &DocSummary) -> Option<HeldAs> {
        let me = Some(&self.me);
        summary.held_as.or(if summary.residence_org.as_ref() == me {
            Some(HeldAs::Residence)
        } else if summary.home_org.as_ref() == me {
            Some(HeldAs::Home)
        } else {
            None
        })
    }

    /// `peer` is known to hold exactly this office's heads of `id`. If `id` is leaving this
    /// office and `peer` is its parent, nothing is lost by purging it: the document can go
    /// (once the offices below know, if any held it). (Waiting for "any peer that still
    /// holds it" instead left a community that rejected a transfer keeping the file forever
    /// when its township had left the scope too, and purging as soon as a change took the
    /// file out lost what the office had written and not yet sent: both found by the county
    /// simulator.)
    pub fn peer_synced(
        &self,
        id: &DocId,
        peer: &OrgPath,
        now_ms: i64,
    ) -> Result<Vec<Notice>, StorageError> {
        self.settle_leaving(id, now_ms, |summary| {
            if !summary.awaiting_upstream || self.me.parent().as_ref() != Some(peer) {
                return false;
            }
            summary.awaiting_upstream = false;
            true
        })
    }

    /// For a document kept only until others learn it left: applies `confirm` to its
    /// summary (false: nothing to record), then purges it if nobody is left to tell, or
    /// stores the updated summary.
    fn settle_leaving(
        &self,
        id: &DocId,
        now_ms: i64,
        confirm: impl FnOnce(&mut DocSummary) -> bool,
    ) -> Result<Vec<Notice>, StorageError> {
        let (left, mut notices) = {
            let _guard = self.lock(id);
            let Some(mut summary) = self.store.summary(id)? else {
                return Ok(Vec::new());
            };
            if !confirm(&mut summary) {
                return Ok(Vec::new());
            }
            if !self.children_to_tell(&summary).is_empty() || summary.awaiting_upstream {
                self.store.set_summary(id, &summary)?;
                return Ok(Vec::new());
            }
            let Some(doc) = self.load(id)? else {
                return Ok(Vec::new());
            };
            self.leave_scope(id, &doc, Some(&summary), now_ms)?
        };
        if let Some(line) = left {
            notices.extend(self.add_history(line, now_ms));
        }
        Ok(notices)
    }
}
