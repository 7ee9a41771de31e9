//! Documents on top of the store: loading, writing through the gate, receiving from peers.
//!
//! Every change to a document passes [`amphi_protocol::gate`]: the node's own writes are
//! signed and judged exactly like a peer's (so a 403 at the API and a refusal on the wire
//! agree), incoming changes are authenticated against the county CA first, and nothing is
//! acknowledged before it is durable. Writers to one document are serialised by a sharded
//! lock; documents are loaded from the store on demand and not kept in memory. A document
//! that leaves this office's scope is purged, leaving a line in the office's roster history.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use amphi_protocol::attest::{Attestation, Authenticator, Revocation};
use amphi_protocol::authority::Refusal;
use amphi_protocol::casefile::{CaseFile, MemberFacts, NewMember};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::{self, Inbound, RefusedChange};
use amphi_protocol::inventory::heads_digest;
use amphi_protocol::reader::Reader;
use amphi_protocol::roster::{self, HistoryLine};
use amphi_protocol::stamp::{self, Stamp};
use amphi_protocol::transfer;
use amphi_protocol::visibility::{may_hold, scope};
use amphi_protocol::wire::Digest;
use amphi_protocol::{DocId, DocKind, OrgPath};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ChangeHash, ROOT};
use tokio::sync::broadcast;

use crate::status::{Status, now_rfc3339};
use crate::store::{
    DocSummary, DocWrite, Evidence, Exit, Placement, QuarantineRecord, Store, StoreError,
    TransferLine,
};
use crate::trust::{Signer, Trust};

const LOCK_SHARDS: usize = 64;

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such document here.
    #[error("no document {0} on this node")]
    NotFound(DocId),
    /// The document already exists.
    #[error("document {0} already exists")]
    Exists(DocId),
    /// The authority table forbids this office's write.
    #[error("forbidden: {0}")]
    Forbidden(Refusal),
    /// The write is not valid in the document's current state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// automerge refused an operation.
    #[error("document operation failed: {0}")]
    Doc(#[from] automerge::AutomergeError),
}

/// What sessions are told about documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The document changed here (a local write or from a peer): offer it.
    Changed(DocId),
    /// The document left this office's scope and was purged: tell peers.
    Left(DocId),
}

/// A sync message to send, with the attestations of the changes it carries.
#[derive(Debug)]
pub struct Outbound {
    /// Encoded automerge sync message.
    pub message: Vec<u8>,
    /// Signatures of the changes in it.
    pub attestations: Vec<Attestation>,
}

/// What receiving one sync message from a peer did.
#[derive(Debug)]
pub struct Received {
    /// The reply to send, if any, with the attestations of the changes it carries.
    pub reply: Option<Outbound>,
    /// Changes applied.
    pub applied: usize,
    /// Reason codes of refused changes.
    pub refused: Vec<&'static str>,
    /// The peer is now known to have exactly our heads.
    pub in_sync: bool,
}

/// A signed, judged write of one of this office's documents, not yet stored.
struct PreparedWrite {
    doc: AutoCommit,
    heads_before: Vec<ChangeHash>,
    summary: DocSummary,
    attestation: Attestation,
}

/// The node's documents.
pub struct Repo {
    store: Store,
    me: OrgPath,
    actor: ActorId,
    signer: Signer,
    trust: Arc<Trust>,
    locks: Vec<Mutex<()>>,
    changed: broadcast::Sender<Notice>,
    status: Arc<Status>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The summary the store keeps of a document (kind, names, scope, digest).
pub fn summarise(id: &DocId, doc: &mut AutoCommit) -> DocSummary {
    let digest = hex::encode(heads_digest(&doc.get_heads()));
    let scope: Vec<String> = scope(id, doc).iter().map(ToString::to_string).collect();
    let mut summary = DocSummary {
        scope,
        digest,
        ..DocSummary::default()
    };
    match id.kind() {
        DocKind::Member => {
            let reader = Reader::now(doc);
            let (entries, affiliation) = transfer::resolve_doc(&reader);
            let facts = MemberFacts::from_affiliation(&entries, &affiliation);
            summary.kind = "member".into();
            summary.home_org = facts.home_org.map(|o| o.to_string());
            summary.residence_org = facts.residence_org.map(|o| o.to_string());
            if let Some(case) = CaseFile::read(id, doc) {
                summary.transfers = case
                    .transfers
                    .iter()
                    .map(|t| TransferLine {
                        id: t.id.clone(),
                        from_org: t.from_org.clone(),
                        to_org: t.to_org.clone(),
                        state: t.state.clone(),
                    })
                    .collect();
                let activity = case.activities.iter().map(|a| a.date.clone());
                let contact = case
                    .contact
                    .as_ref()
                    .and_then(|c| c.last_contact_at.clone());
                let report = case
                    .residence
                    .as_ref()
                    .and_then(|r| r.reported_in_at.clone());
                summary.last_seen = activity.chain(contact).chain(report).max();
                summary.name = case.name;
            }
            let acked = transfer::acknowledged(&reader);
            summary.conflicts = affiliation
                .conflicts
                .into_iter()
                .map(|c| c.id)
                .filter(|c| !acked.contains(c))
                .collect();
        }
        DocKind::OrgRoster => {
            summary.kind = "org".into();
            summary.name = roster::read(doc)
                .profile
                .get("name")
                .cloned()
                .unwrap_or_default();
            summary.home_org = id.roster_org().map(|o| o.to_string());
        }
        DocKind::Revocations => summary.kind = "revocations".into(),
        DocKind::Status => {
            summary.kind = "status".into();
            summary.home_org = id.status_of().map(|(o, _)| o.to_string());
        }
    }
    summary
}

/// The summary after a change, carrying forward who left the scope (and where) from the
/// summary before it.
pub fn summarise_after(
    id: &DocId,
    doc: &mut AutoCommit,
    before: Option<&DocSummary>,
) -> DocSummary {
    let mut after = summarise(id, doc);
    let Some(before) = before else { return after };
    let heads: Vec<String> = doc.get_heads().iter().map(ToString::to_string).collect();
    let mut exits: Vec<Exit> = before
        .exits
        .iter()
        .filter(|e| !after.scope.contains(&e.org))
        .cloned()
        .collect();
    for org in before.scope.iter().filter(|o| !after.scope.contains(o)) {
        exits.retain(|e| &e.org != org);
        exits.push(Exit {
            org: org.clone(),
            heads: heads.clone(),
        });
    }
    after.exits = exits;
    after
}

/// What a peer may receive of a document.
#[derive(Debug, PartialEq, Eq)]
enum View {
    /// The document as it is.
    Holds,
    /// The document up to these heads, where the peer's org left its scope.
    Exited(Vec<ChangeHash>),
    /// Nothing.
    Nothing,
    /// This node does not hold the document.
    Unknown,
}

fn view_of(id: &DocId, placement: Option<&Placement>, peer: &OrgPath) -> View {
    let Some(p) = placement else {
        return View::Unknown;
    };
    if may_hold(id, &p.scope, peer) {
        return View::Holds;
    }
    p.exits
        .iter()
        .find(|(org, _)| peer.is_at_or_above(org))
        .map_or(View::Nothing, |(_, heads)| View::Exited(heads.clone()))
}

impl Repo {
    /// A repo over `store` for the office `me`: its changes carry `actor` and are signed by
    /// `signer`; incoming changes are checked against `trust`.
    pub fn new(
        store: Store,
        me: OrgPath,
        actor: ActorId,
        signer: Signer,
        trust: Arc<Trust>,
        status: Arc<Status>,
    ) -> Repo {
        let (changed, _) = broadcast::channel(4096);
        Repo {
            store,
            me,
            actor,
            signer,
            trust,
            locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            changed,
            status,
        }
    }

    /// This office.
    pub fn me(&self) -> &OrgPath {
        &self.me
    }

    /// The store (read access for lists and logs).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What this node trusts.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Subscribes to notices of documents that changed or left here.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.changed.subscribe()
    }

    fn shard(&self, id: &DocId) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        (h.finish() as usize) % LOCK_SHARDS
    }

    fn lock(&self, id: &DocId) -> std::sync::MutexGuard<'_, ()> {
        // A writer that panicked left nothing half-written in memory (documents are loaded
        // from the store per operation), so a poisoned lock is as good as a clean one.
        self.locks[self.shard(id)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads a document (with this node's actor, ready to write).
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        Ok(self.store.load(id)?.map(|mut d| {
            d.set_actor(self.actor.clone());
            d
        }))
    }

    /// Makes a write to a document as this office: `edit` makes the operations (stamped with
    /// the change's time), the change is judged exactly as a peer's would be, signed, and
    /// only then stored durably and announced. With `create`, the document must not exist
    /// yet; otherwise it must.
    pub fn write<T>(
        &self,
        id: &DocId,
        create: bool,
        edit: impl FnOnce(&mut AutoCommit, &Stamp) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let _guard = self.lock(id);
        let doc = match (self.load(id)?, create) {
            (Some(_), true) => return Err(WriteError::Exists(id.clone())),
            (None, false) => return Err(WriteError::NotFound(id.clone())),
            (Some(doc), false) => doc,
            (None, true) => AutoCommit::new().with_actor(self.actor.clone()),
        };
        self.commit_and_store(id, doc, edit)
    }

    /// Creates a member's case file at this office: the creation change names the file
    /// (its id is derived from the change's hash, see [`DocId::member_created_by`]).
    pub fn create_member(&self, member: &NewMember) -> Result<DocId, WriteError> {
        let mut doc = AutoCommit::new().with_actor(self.actor.clone());
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms()));
        amphi_protocol::casefile::create(&mut doc, member)?;
        let hash = gate::commit_as(&mut doc, &self.me, &stamp)
            .ok_or_else(|| WriteError::Conflict("a new case file with nothing in it".into()))?;
        let id = DocId::member_created_by(&hash);
        let _guard = self.lock(&id);
        if self.store.summary(&id)?.is_some() {
            return Err(WriteError::Exists(id));
        }
        self.judge_sign_store(&id, doc, &[], hash)?;
        Ok(id)
    }

    fn commit_and_store<T>(
        &self,
        id: &DocId,
        mut doc: AutoCommit,
        edit: impl FnOnce(&mut AutoCommit, &Stamp) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let heads_before = doc.get_heads();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms()));
        let out = edit(&mut doc, &stamp)?;
        let Some(hash) = gate::commit_as(&mut doc, &self.me, &stamp) else {
            return Ok(out); // nothing changed
        };
        self.judge_sign_store(id, doc, &heads_before, hash)?;
        Ok(out)
    }

    /// Judges this office's own change `hash` (already committed to `doc`), signs it, and
    /// stores it durably before announcing it.
    fn judge_sign_store(
        &self,
        id: &DocId,
        mut doc: AutoCommit,
        heads_before: &[ChangeHash],
        hash: ChangeHash,
    ) -> Result<(), WriteError> {
        gate::judge_local(&mut doc, id, &hash, &*self.trust, now_ms())
            .map_err(WriteError::Forbidden)?;
        let attestation = self.signer.sign(&hash);
        let before = self.store.summary(id)?;
        let mut summary = summarise_after(id, &mut doc, before.as_ref());
        if !may_hold(id, &scope(id, &doc), &self.me) {
            // This write takes the document out of this office's scope (e.g. the target
            // rejects a transfer): keep it until a peer that still holds it has the write.
            summary.leaving = true;
            summary.awaiting_upstream = true;
        }
        self.store
            .save(id, &mut doc, heads_before, &summary, &[attestation], None)?;
        let _ = self.changed.send(Notice::Changed(id.clone()));
        Ok(())
    }

    /// Generates the next sync message for `id` to `peer`, with the attestations of the
    /// changes it carries. Returns (message, peer known to be in sync). Nothing is ever
    /// generated for a document the peer may not hold.
    pub fn generate(
        &self,
        id: &DocId,
        peer: &OrgPath,
        sync: &mut DocSync,
    ) -> Result<(Option<Outbound>, bool), StoreError> {
        let mut doc = match view_of(id, self.store.placement(id).as_ref(), peer) {
            View::Holds => self.load(id)?.unwrap_or_default(),
            View::Exited(heads) => match self.load(id)?.map(|mut d| d.fork_at(&heads)) {
                Some(Ok(fork)) => fork,
                _ => return Ok((None, true)),
            },
            // A document the peer may not see is answered for exactly as one this node does
            // not hold: whether it is held here cannot be probed.
            View::Nothing | View::Unknown => AutoCommit::new(),
        };
        let message = self.outgoing(id, &mut doc, sync)?;
        Ok((message, sync.in_sync(&doc.get_heads())))
    }

    fn outgoing(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        sync: &mut DocSync,
    ) -> Result<Option<Outbound>, StoreError> {
        let Some(out) = sync.generate(doc) else {
            return Ok(None);
        };
        let attestations = self.store.attestations(id, &out.changes)?;
        Ok(Some(Outbound {
            message: out.message,
            attestations,
        }))
    }

    /// A fresh sync for `id` with `peer`: its persisted state, and the changes already in
    /// quarantine (never asked for again).
    pub fn resume_sync(&self, id: &DocId, peer: &OrgPath) -> DocSync {
        let mut sync = DocSync::resume(
            self.store
                .sync_state(id, peer.as_str())
                .ok()
                .flatten()
                .as_deref(),
        );
        sync.remember_refused(self.store.quarantined_changes(id).unwrap_or_default());
        sync
    }

    /// Receives a sync message from `peer` for `id` through the gate; stores what was
    /// admitted (durably, with its attestations), quarantines what was refused, purges the
    /// document if it left this office's scope, and returns the reply.
    pub fn receive(
        &self,
        id: &DocId,
        peer: &OrgPath,
        bytes: &[u8],
        attestations: &[Attestation],
        sync: &mut DocSync,
    ) -> Result<Received, StoreError> {
        let (received, left) = {
            let _guard = self.lock(id);
            self.receive_locked(id, peer, bytes, attestations, sync)?
        };
        if let Some(line) = left {
            self.add_history(line);
        }
        Ok(received)
    }

    fn receive_locked(
        &self,
        id: &DocId,
        peer: &OrgPath,
        bytes: &[u8],
        attestations: &[Attestation],
        sync: &mut DocSync,
    ) -> Result<(Received, Option<HistoryLine>), StoreError> {
        let before = self.store.summary(id)?;
        let view = view_of(id, before.as_ref().map(Placement::of).as_ref(), peer);
        let cx = Inbound {
            id,
            peer,
            me: &self.me,
            now_ms: now_ms(),
            auth: &*self.trust,
            attestations,
        };
        let fresh = || AutoCommit::new().with_actor(self.actor.clone());
        if view == View::Nothing {
            // The peer may not see this document: it is answered as one this node does not
            // hold (from an empty copy that is never stored), so that cannot be probed.
            let mut sandbox = fresh();
            let admission = sync.receive(&mut sandbox, bytes, &cx, &mut || fresh());
            let codes = vec![Refusal::OutsideSenderScope.code(); admission.applied.len()];
            self.status.count_refused(Some(peer.as_str()), &codes);
            let reply = self.outgoing(id, &mut sandbox, sync)?;
            let in_sync = sync.in_sync(&sandbox.get_heads());
            return Ok((
                Received {
                    reply,
                    applied: 0,
                    refused: codes,
                    in_sync,
                },
                None,
            ));
        }
        let mut doc = self.load(id)?.unwrap_or_else(fresh);
        let heads_before = doc.get_heads();
        let mut reload = || match self.load(id) {
            Ok(Some(d)) => d,
            _ => fresh(),
        };
        let admission = sync.receive(&mut doc, bytes, &cx, &mut reload);
        let mut refused = self.quarantine(id, peer.as_str(), &admission.refused, attestations)?;
        if admission.rebuilt() {
            refused.extend(self.quarantine(id, peer.as_str(), &admission.dropped, attestations)?);
        }
        let changed = admission.rebuilt() || doc.get_heads() != heads_before;
        let mut left = None;
        if changed {
            let applied: Vec<Attestation> = attestations
                .iter()
                .filter(|a| admission.applied.contains(&a.change))
                .cloned()
                .collect();
            let mut summary = summarise_after(id, &mut doc, before.as_ref());
            let leaves = !may_hold(id, &scope(id, &doc), &self.me);
            if leaves && self.children_to_tell(&summary).is_empty() {
                left = self.leave_scope(id, &doc, before.as_ref())?;
            } else {
                summary.leaving = leaves;
                if admission.rebuilt() {
                    let dropped: Vec<ChangeHash> =
                        admission.dropped.iter().filter_map(|r| r.hash).collect();
                    tracing::warn!(peer = %peer, doc = %id, dropped = dropped.len(), "an equivocation was settled: document rebuilt without the losing change");
                    self.store
                        .replace(id, &mut doc, &summary, &applied, &dropped)?;
                } else {
                    self.store.save(
                        id,
                        &mut doc,
                        &heads_before,
                        &summary,
                        &applied,
                        Some((peer.as_str(), &sync.persisted())),
                    )?;
                }
            }
            let _ = self.changed.send(Notice::Changed(id.clone()));
        } else if !heads_before.is_empty() {
            self.store
                .save_sync_state(id, peer.as_str(), &sync.persisted())?;
        }
        let (reply, in_sync) = match (&left, view) {
            (Some(_), _) => (None, true),
            // An office that left gets at most the document as it was when it left.
            (None, View::Exited(heads)) => match doc.fork_at(&heads) {
                Ok(mut fork) => (
                    self.outgoing(id, &mut fork, sync)?,
                    sync.in_sync(&fork.get_heads()),
                ),
                Err(_) => (None, true),
            },
            (None, _) => (
                self.outgoing(id, &mut doc, sync)?,
                sync.in_sync(&doc.get_heads()),
            ),
        };
        Ok((
            Received {
                reply,
                applied: admission.applied.len(),
                refused,
                in_sync,
            },
            left,
        ))
    }

    /// Purges a document that left this office's scope. If it left this very office's
    /// roster (the member's residence here ended, or the member moved away), the roster's
    /// history line is written in the same store transaction as the purge (signed and judged
    /// like any write), so a crash cannot purge the file and lose the line; the line is
    /// returned (recording it again with [`Repo::add_history`] is a no-op). Called with the
    /// document's lock held.
    fn leave_scope(
        &self,
        id: &DocId,
        doc: &AutoCommit,
        before: Option<&DocSummary>,
    ) -> Result<Option<HistoryLine>, StoreError> {
        let line = before.and_then(|before| self.history_line(id, doc, before));
        let roster = DocId::roster(&self.me);
        // The roster's lock too, unless it is the same shard (held already). Only ever this
        // one second lock is taken while a document's is held, so no two can wait in a cycle.
        let _roster_guard =
            (line.is_some() && self.shard(&roster) != self.shard(id)).then(|| self.lock(&roster));
        let history = match &line {
            Some(line) => self.history_change(&roster, line).unwrap_or_else(|e| {
                tracing::error!("cannot prepare roster history for {id}: {e}");
                None
            }),
            None => None,
        };
        match history {
            Some(mut h) => self.store.purge_with(
                id,
                Some(DocWrite {
                    id: &roster,
                    doc: &mut h.doc,
                    heads_before: &h.heads_before,
                    summary: &h.summary,
                    attestations: std::slice::from_ref(&h.attestation),
                }),
            )?,
            None => self.store.purge(id)?,
        }
        tracing::info!(doc = %id, "document left this office's scope; purged");
        let _ = self.changed.send(Notice::Left(id.clone()));
        if line.is_some() {
            let _ = self.changed.send(Notice::Changed(roster));
        }
        Ok(line)
    }

    /// The roster history line for a document leaving this office, if it left this office's
    /// own roster.
    fn history_line(
        &self,
        id: &DocId,
        doc: &AutoCommit,
        before: &DocSummary,
    ) -> Option<HistoryLine> {
        let me = self.me.as_str();
        let facts = MemberFacts::read(&Reader::now(doc));
        let event = if before.residence_org.as_deref() == Some(me) {
            "residence-ended"
        } else if before.home_org.as_deref() == Some(me) {
            "transferred-out"
        } else {
            return None;
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
            at: now_rfc3339(),
            to_org,
        })
    }

    /// This office's roster with `line` added, signed and judged by the gate as
    /// [`Repo::write`] judges every write, ready to be stored in the purge's transaction.
    /// `None` when there is no roster or nothing changed. Called with the roster's lock held.
    fn history_change(
        &self,
        roster: &DocId,
        line: &HistoryLine,
    ) -> Result<Option<PreparedWrite>, WriteError> {
        let Some(mut doc) = self.load(roster)? else {
            return Ok(None);
        };
        let heads_before = doc.get_heads();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms()));
        roster::add_history(&mut doc, line)?;
        let Some(hash) = gate::commit_as(&mut doc, &self.me, &stamp) else {
            return Ok(None);
        };
        gate::judge_local(&mut doc, roster, &hash, &*self.trust, now_ms())
            .map_err(WriteError::Forbidden)?;
        let attestation = self.signer.sign(&hash);
        let before = self.store.summary(roster)?;
        let summary = summarise_after(roster, &mut doc, before.as_ref());
        Ok(Some(PreparedWrite {
            doc,
            heads_before,
            summary,
            attestation,
        }))
    }

    /// The child offices that must learn a document left before this relay may purge it:
    /// for each org that left the scope strictly below this office, the child on the way.
    fn children_to_tell(&self, summary: &DocSummary) -> Vec<OrgPath> {
        let depth = self.me.depth();
        let mut children: Vec<OrgPath> = summary
            .exits
            .iter()
            .filter_map(|e| OrgPath::parse(&e.org).ok())
            .filter(|e| self.me.is_ancestor_of(e))
            .filter_map(|e| {
                OrgPath::parse(&e.segments().take(depth + 1).collect::<Vec<_>>().join("/")).ok()
            })
            .filter(|c| !summary.confirmed.iter().any(|done| done == c.as_str()))
            .collect();
        children.sort();
        children.dedup();
        children
    }

    /// `peer` no longer holds `id`. If this office is keeping `id` only to tell that peer,
    /// the document is purged now.
    pub fn peer_left(&self, id: &DocId, peer: &OrgPath) -> Result<(), StoreError> {
        self.settle_leaving(id, |summary| {
            if !summary.leaving || !self.children_to_tell(summary).contains(peer) {
                return false;
            }
            summary.confirmed.push(peer.to_string());
            true
        })
    }

    /// `peer` is known to hold exactly this office's heads of `id`. If this office's own
    /// write took `id` out of its scope and `peer` still holds it, the write is safe there:
    /// the document can go (once the offices below know, if any held it).
    pub fn peer_synced(&self, id: &DocId, peer: &OrgPath) -> Result<(), StoreError> {
        self.settle_leaving(id, |summary| {
            if !summary.awaiting_upstream
                || view_of(id, Some(&Placement::of(summary)), peer) != View::Holds
            {
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
        confirm: impl FnOnce(&mut DocSummary) -> bool,
    ) -> Result<(), StoreError> {
        let left = {
            let _guard = self.lock(id);
            let Some(mut summary) = self.store.summary(id)? else {
                return Ok(());
            };
            if !confirm(&mut summary) {
                return Ok(());
            }
            if !self.children_to_tell(&summary).is_empty() || summary.awaiting_upstream {
                return self.store.set_summary(id, &summary);
            }
            let Some(doc) = self.load(id)? else {
                return Ok(());
            };
            self.leave_scope(id, &doc, Some(&summary))?
        };
        if let Some(line) = left {
            self.add_history(line);
        }
        Ok(())
    }

    /// True when `peer` may hold `id` only up to where it left the scope.
    pub fn exited_for(&self, id: &DocId, peer: &OrgPath) -> Result<bool, StoreError> {
        Ok(matches!(
            view_of(id, self.store.placement(id).as_ref(), peer),
            View::Exited(_)
        ))
    }

    /// Loads a document this office holds for its own use (not one it is only keeping
    /// until an office below learns it left).
    pub fn load_held(&self, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        match self.store.summary(id)? {
            Some(s) if !s.leaving => self.load(id),
            _ => Ok(None),
        }
    }

    /// Records a roster history line, unless it is there already (normally the purge that
    /// produced it wrote it in the same transaction).
    fn add_history(&self, line: HistoryLine) {
        let roster = DocId::roster(&self.me);
        let recorded = self
            .load(&roster)
            .ok()
            .flatten()
            .is_some_and(|doc| roster::read(&doc).history.contains(&line));
        if recorded {
            return;
        }
        if let Err(e) = self.write(&roster, false, |doc, _| {
            Ok(roster::add_history(doc, &line)?)
        }) {
            tracing::error!("cannot record roster history for {}: {e}", line.id);
        }
    }

    fn quarantine(
        &self,
        id: &DocId,
        peer: &str,
        refused: &[RefusedChange],
        attestations: &[Attestation],
    ) -> Result<Vec<&'static str>, StoreError> {
        let at = now_rfc3339();
        // A change this node held (dropped by an equivocation) has its signature in the store.
        let stored: Vec<Attestation> = {
            let hashes: Vec<ChangeHash> = refused
                .iter()
                .flat_map(|r| r.hash.into_iter().chain(r.other.as_ref().map(|o| o.hash)))
                .collect();
            self.store.attestations(id, &hashes)?
        };
        let records: Vec<QuarantineRecord> = refused
            .iter()
            .map(|r| {
                tracing::warn!(peer, doc = %id, author = ?r.author.as_ref().map(ToString::to_string), reason = r.reason.code(), "refused change: {}", r.reason);
                let attestation = r.hash.and_then(|h| {
                    attestations
                        .iter()
                        .chain(&stored)
                        .find(|a| a.change == h)
                });
                // An equivocation names the signing certificate to revoke and keeps the
                // other change of the pair, with its signature, beside this one.
                let evidence = r.other.as_ref().map(|o| Evidence {
                    change: o.hash.to_string(),
                    change_bytes: Some(hex::encode(&o.bytes)),
                    attestation: attestations
                        .iter()
                        .chain(&stored)
                        .find(|a| a.change == o.hash)
                        .map(|a| hex::encode(a.encode())),
                });
                QuarantineRecord {
                    at: at.clone(),
                    peer: peer.to_owned(),
                    doc: id.to_string(),
                    change: r.hash.map(|h| h.to_string()),
                    author: r.author.as_ref().map(ToString::to_string),
                    reason: r.reason.code().to_owned(),
                    message: r.reason.to_string(),
                    change_bytes: r.bytes.as_ref().map(hex::encode),
                    attestation: attestation.map(|a| hex::encode(a.encode())),
                    count: 1,
                    cert: evidence
                        .as_ref()
                        .and(attestation)
                        .map(|a| hex::encode(a.cert)),
                    evidence,
                    ..QuarantineRecord::default()
                }
            })
            .collect();
        self.store.quarantine(&records)?;
        let codes: Vec<&'static str> = refused.iter().map(|r| r.reason.code()).collect();
        self.status.count_refused(Some(peer), &codes);
        Ok(codes)
    }

    /// The (id, digest) of every document `peer` may hold, or held until it left the
    /// document's scope: what this node offers it.
    pub fn inventory_for(&self, peer: &OrgPath) -> Result<BTreeMap<DocId, Digest>, StoreError> {
        let mut out = BTreeMap::new();
        self.store.for_each_placement(|id, p| {
            let digest = match view_of(id, Some(p), peer) {
                View::Holds => p.digest,
                View::Exited(heads) => heads_digest(&heads),
                View::Nothing | View::Unknown => return,
            };
            out.insert(id.clone(), digest);
        });
        Ok(out)
    }

    /// True when this node would send `peer` anything of document `id`.
    pub fn offers_to(&self, id: &DocId, peer: &OrgPath) -> Result<bool, StoreError> {
        Ok(matches!(
            view_of(id, self.store.placement(id).as_ref(), peer),
            View::Holds | View::Exited(_)
        ))
    }

    /// Makes sure this office's own roster document exists.
    pub fn ensure_own_roster(&self) -> Result<(), WriteError> {
        let id = DocId::roster(&self.me);
        let exists = self.store.summary(&id)?.is_some();
        let me = self.me.clone();
        self.write(&id, !exists, |doc, _| Ok(roster::ensure(doc, &me)?))
    }

    /// Teaches `trust` what the store holds: learned certificates and the revocation list.
    pub fn load_trust(&self) -> Result<(), StoreError> {
        for der in self.store.certificates()? {
            if let Err(e) = self.trust.admit(&der) {
                tracing::warn!("stored certificate no longer admitted: {e}");
            }
        }
        for r in self.revocations()? {
            if let Err(e) = self.trust.add_revocation(&r) {
                tracing::warn!("stored revocation not admitted: {e}");
            }
        }
        Ok(())
    }

    /// The revocation records this node holds.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let Some(doc) = self.load(&DocId::revocations())? else {
            return Ok(Vec::new());
        };
        let reader = Reader::now(&doc);
        Ok(reader
            .keys(&ROOT)
            .iter()
            .filter_map(|k| reader.str(&ROOT, k))
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }

    /// Adds a CA-signed revocation to the revocation list, from where it replicates to every
    /// office. The record is checked against the CA first.
    pub fn import_revocation(&self, revocation: &Revocation) -> Result<(), WriteError> {
        let json = serde_json::to_string(revocation).expect("revocation serialises");
        self.trust
            .check_revocation(&revocation.key(), &json)
            .map_err(WriteError::Forbidden)?;
        let id = DocId::revocations();
        let exists = self.store.summary(&id)?.is_some();
        self.write(&id, !exists, |doc, _| {
            Ok(doc.put(ROOT, revocation.key(), json.as_str())?)
        })
    }

    /// Records a certificate learned from a peer (checked against the CA first).
    pub fn learn_certificate(&self, der: &[u8]) -> Result<(), String> {
        let id = self.trust.admit(der).map_err(|e| e.to_string())?;
        self.store
            .save_certificate(&id, der)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{
        CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NodeIdentity, ca_init, ca_issue,
    };

    const BAYIN: &str = "hoboksar/chagantolgay/bayin";

    fn open_repo(dir: &std::path::Path) -> Repo {
        let org = OrgPath::parse(BAYIN).unwrap();
        let node = dir.join("node");
        if !node.exists() {
            ca_init(&dir.join("ca"), &OrgPath::parse("hoboksar").unwrap()).unwrap();
            ca_issue(&dir.join("ca"), &org, &node, 30).unwrap();
        }
        let identity = NodeIdentity::load(
            &node.join(NODE_CERT_FILE),
            &node.join(NODE_KEY_FILE),
            &node.join(CA_CERT_FILE),
        )
        .unwrap();
        let trust = Arc::new(Trust::new(&identity.ca_der).unwrap());
        trust.admit(&identity.cert_der).unwrap();
        let store = Store::open(&dir.join("store.redb"), BAYIN).unwrap();
        let repo = Repo::new(
            store,
            org,
            ActorId::from(identity.actor_id()),
            Signer::new(&identity).unwrap(),
            trust,
            Arc::new(Status::default()),
        );
        repo.learn_certificate(&identity.cert_der).unwrap();
        repo.ensure_own_roster().unwrap();
        repo
    }

    #[test]
    fn a_purge_and_its_roster_history_line_are_stored_together() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_repo(dir.path());
        let member: amphi_protocol::casefile::NewMember =
            serde_json::from_value(serde_json::json!({
                "name": "Saruul", "gender": "female", "ethnicity": "Mongol",
                "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": BAYIN,
            }))
            .unwrap();
        let id = repo.create_member(&member).unwrap();
        let before = repo.store().summary(&id).unwrap().unwrap();
        let doc = repo.load(&id).unwrap().unwrap();

        // The file leaves; the node "crashes" right after, before anything else runs.
        let line = repo.leave_scope(&id, &doc, Some(&before)).unwrap().unwrap();
        assert_eq!(line.event, "transferred-out");
        drop(repo);
        let repo = open_repo(dir.path());
        assert!(repo.load(&id).unwrap().is_none(), "the file is purged");
        let roster_id = DocId::roster(repo.me());
        let mut roster_doc = repo.load(&roster_id).unwrap().unwrap();
        assert_eq!(roster::read(&roster_doc).history, vec![line.clone()]);
        let heads = roster_doc.get_heads();
        assert_eq!(
            repo.store().attestations(&roster_id, &heads).unwrap().len(),
            1,
            "the roster change is signed like any write"
        );
        let summary = repo.store().summary(&roster_id).unwrap().unwrap();
        assert_eq!(summary.digest, hex::encode(heads_digest(&heads)));
        assert_eq!(summarise(&roster_id, &mut roster_doc), summary);

        // Recording the line again (as callers do after a purge) adds nothing.
        repo.add_history(line);
        assert_eq!(repo.load(&roster_id).unwrap().unwrap().get_heads(), heads);
    }
}
