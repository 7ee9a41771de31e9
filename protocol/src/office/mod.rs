//! The office core: every decision an office makes about its documents and its peers, with
//! no sockets, no clock and no particular database.
//!
//! An [`Office`] owns a [`Storage`] (the redb store in `node/`, [`MemStore`] in the county
//! simulator), a way to check signatures ([`Authenticator`]) and to make them ([`Sign`]).
//! The node hands it what happened — a local write, a frame from a peer, a peer up or
//! down — with the time, and carries out what comes back: frames to send
//! ([`link::Effects`]), [`Notice`]s for the other sessions, counts for the status page.
//!
//! ```text
//!   transport ──frame──▶ link::Link ──▶ Office::receive ──▶ gate ──▶ Storage::save
//!        ▲                    │                  │
//!        └──── frames ◀───────┘◀── reply ────────┘──▶ Notice (cause = that peer)
//! ```
//!
//! What it decides:
//! - every write, local or a peer's, passes the gate and is durable before it is announced;
//! - what a peer may be offered of a document ([`summary::view_of`]): all of it, only up to
//!   where the peer's org left its scope, or nothing (answered exactly as for a document
//!   this office does not hold, so holding cannot be probed);
//! - a document that leaves this office's scope is purged, after the offices below that
//!   held it confirm they left too ([`leaving`]), with a line in the office's roster history
//!   written in the same store transaction;
//! - refused changes go to quarantine with their evidence ([`quarantine`]).
//!
//! Writers to one document are serialised by a sharded lock held only inside a call, so
//! calls on different documents can run on different threads.

pub mod carry;
pub mod catchup;
pub mod link;
pub mod loaded;
pub mod memstore;
pub mod requests;
pub mod signatures;
pub mod storage;
pub mod summary;

use signatures::Proofs;

mod leaving;
mod quarantine;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{ActorId, AutoCommit, ChangeHash};

use crate::attest::{Attestation, Authenticator, CertId};
use crate::casefile::NewMember;
use crate::docsync::DocSync;
use crate::gate::{self, Inbound};
use crate::inventory::heads_digest;
use crate::refusal::Refusal;
use crate::roster;
use crate::stamp::{self, Stamp};
use crate::visibility::{may_hold, scope};
use crate::wire::Digest;
use crate::{DocId, OrgPath};

pub use memstore::MemStore;
pub use storage::{DocWrite, Evidence, QuarantineRecord, Storage, StorageError};
pub use summary::{DocSummary, Exit, Placement, TransferLine, View, summarise, summarise_after};

const LOCK_SHARDS: usize = 64;

/// Signs this office's own changes.
pub trait Sign: Send + Sync {
    /// The attestation of change `change` by this office's key.
    fn sign(&self, change: &ChangeHash) -> Attestation;
}

/// What this office trusts: checks peers' signatures, and hands out the certificates it
/// admitted (a peer that never met an author is sent the author's certificate first).
pub trait Trusted: Authenticator + Send + Sync {
    /// The DER of an admitted certificate.
    fn certificate(&self, id: &CertId) -> Option<Vec<u8>>;
}

/// What this office trusts, shareable across threads.
pub type Auth = Arc<dyn Trusted>;

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
    Store(#[from] StorageError),
    /// automerge refused an operation.
    #[error("document operation failed: {0}")]
    Doc(#[from] automerge::AutomergeError),
}

/// What happened to a document, for the sessions with other peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The document.
    pub doc: DocId,
    /// Changed, or left this office.
    pub kind: NoticeKind,
    /// The peer whose message caused it (its session has answered already), or `None` for
    /// this office's own writes.
    pub cause: Option<OrgPath>,
}

/// What a [`Notice`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The document changed here: offer it.
    Changed,
    /// The document left this office's scope and was purged: tell peers.
    Left,
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
#[derive(Debug, Default)]
pub struct Received {
    /// The reply to send, if any, with the attestations of the changes it carries.
    pub reply: Option<Outbound>,
    /// Changes applied.
    pub applied: usize,
    /// Reason codes of refused changes.
    pub refused: Vec<&'static str>,
    /// The peer is now known to have exactly our heads.
    pub in_sync: bool,
    /// What the other sessions must hear of.
    pub notices: Vec<Notice>,
}

/// How a received message's admitted changes are stored.
#[derive(Debug, Clone, Copy)]
enum Commit {
    /// Durable before it returns ([`Storage::save`]).
    Durable,
    /// Durable once the caller flushes ([`Storage::save_unflushed`]).
    Unflushed,
}

/// One office: its documents, its rules, and how it treats each peer.
pub struct Office<S> {
    me: OrgPath,
    actor: ActorId,
    store: S,
    auth: Auth,
    signer: Arc<dyn Sign>,
    locks: Vec<Mutex<()>>,
    /// Documents kept loaded from one message to the next ([`loaded`]).
    loaded: loaded::Loaded,
    /// Send only the signature at the top of each run of an office's changes
    /// ([`signatures`]).
    chained_signatures: bool,
}

impl<S: Storage> Office<S> {
    /// The office `me` over `store`: its changes carry `actor` and are signed by `signer`;
    /// peers' changes are checked by `auth`.
    pub fn new(me: OrgPath, actor: ActorId, store: S, auth: Auth, signer: Arc<dyn Sign>) -> Self {
        Office {
            me,
            actor,
            store,
            auth,
            signer,
            locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            loaded: loaded::Loaded::default(),
            chained_signatures: false,
        }
    }

    /// Sends only the signature at the top of each run of an office's changes when `on`
    /// (every office of the county must read them: [`signatures`]).
    pub fn with_chained_signatures(mut self, on: bool) -> Self {
        self.chained_signatures = on;
        self
    }

    /// This office.
    pub fn me(&self) -> &OrgPath {
        &self.me
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn shard(&self, id: &DocId) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        (h.finish() as usize) % LOCK_SHARDS
    }

    fn lock(&self, id: &DocId) -> MutexGuard<'_, ()> {
        // A writer that panicked left nothing half-written in memory (documents are loaded
        // from the store per operation), so a poisoned lock is as good as a clean one.
        self.locks[self.shard(id)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads a document (with this office's actor, ready to write).
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        Ok(self.store.load(id)?.map(|mut d| {
            d.set_actor(self.actor.clone());
            d
        }))
    }

    /// `id` as the store holds it: the copy kept after the last message about it if the
    /// store has not moved since ([`loaded`]), or loaded.
    fn checkout(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        if let Some(placement) = self.store.placement(id)
            && let Some(doc) = self.loaded.take(id, &placement.digest)
        {
            return Ok(Some(doc));
        }
        self.load(id)
    }

    /// Keeps `doc` for the next message about `id`, if it is what the store holds now.
    fn keep(&self, id: &DocId, mut doc: AutoCommit) {
        if let Some(placement) = self.store.placement(id)
            && heads_digest(&doc.get_heads()) == placement.digest
        {
            self.loaded.keep(id, placement.digest, doc);
        }
    }

    fn fresh(&self) -> AutoCommit {
        AutoCommit::new().with_actor(self.actor.clone())
    }

    /// Makes a write to a document as this office at `now_ms`: `edit` makes the operations
    /// (stamped with the change's time), the change is judged exactly as a peer's would be,
    /// signed, and only then stored durably. With `create`, the document must not exist yet;
    /// otherwise it must. Returns `edit`'s result and the notices to pass on.
    pub fn write<T>(
        &self,
        id: &DocId,
        create: bool,
        now_ms: i64,
        edit: impl FnOnce(&mut AutoCommit, &Stamp) -> Result<T, WriteError>,
    ) -> Result<(T, Vec<Notice>), WriteError> {
        let _guard = self.lock(id);
        let mut doc = match (self.load(id)?, create) {
            (Some(_), true) => return Err(WriteError::Exists(id.clone())),
            (None, false) => return Err(WriteError::NotFound(id.clone())),
            (Some(doc), false) => doc,
            (None, true) => self.fresh(),
        };
        let heads_before = doc.get_heads();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms));
        let out = edit(&mut doc, &stamp)?;
        let Some(hash) = gate::commit_as(&mut doc, &self.me, &stamp) else {
            return Ok((out, Vec::new())); // nothing changed
        };
        let notices = self.judge_sign_store(id, doc, &heads_before, hash, now_ms)?;
        Ok((out, notices))
    }

    /// Creates a member's case file at this office: the creation change names the file
    /// (its id is derived from the change's hash, see [`DocId::member_created_by`]).
    pub fn create_member(
        &self,
        member: &NewMember,
        now_ms: i64,
    ) -> Result<(DocId, Vec<Notice>), WriteError> {
        let mut doc = self.fresh();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms));
        crate::casefile::create(&mut doc, member)?;
        let hash = gate::commit_as(&mut doc, &self.me, &stamp)
            .ok_or_else(|| WriteError::Conflict("a new case file with nothing in it".into()))?;
        let id = DocId::member_created_by(&hash);
        let _guard = self.lock(&id);
        if self.store.summary(&id)?.is_some() {
            return Err(WriteError::Exists(id));
        }
        let notices = self.judge_sign_store(&id, doc, &[], hash, now_ms)?;
        Ok((id, notices))
    }

    /// Judges this office's own change `hash` (already committed to `doc`), signs it, and
    /// stores it durably before announcing it.
    fn judge_sign_store(
        &self,
        id: &DocId,
        mut doc: AutoCommit,
        heads_before: &[ChangeHash],
        hash: ChangeHash,
        now_ms: i64,
    ) -> Result<Vec<Notice>, WriteError> {
        gate::judge_local(&mut doc, id, &hash, &*self.auth, now_ms)
            .map_err(WriteError::Forbidden)?;
        let attestation = self.signer.sign(&hash);
        let before = self.store.summary(id)?;
        let mut summary = summarise_after(id, &mut doc, before.as_ref());
        if !may_hold(id, &scope(id, &doc), &self.me) {
            // This write takes the document out of this office's scope (e.g. the target
            // rejects a transfer): kept until the parent has it.
            self.mark_leaving(&mut summary, before.as_ref());
        }
        self.store.save(
            DocWrite {
                id,
                doc: &mut doc,
                heads_before,
                summary: &summary,
                attestations: &[attestation],
                proofs: &[],
            },
            None,
        )?;
        Ok(vec![Notice {
            doc: id.clone(),
            kind: NoticeKind::Changed,
            cause: None,
        }])
    }

    /// Generates the next sync message for `id` to `peer`, with the attestations of the
    /// changes it carries. Returns (message, peer known to be in sync). Nothing is ever
    /// generated for a document the peer may not hold.
    pub fn generate(
        &self,
        id: &DocId,
        peer: &OrgPath,
        sync: &mut DocSync,
    ) -> Result<(Option<Outbound>, bool), StorageError> {
        let view = summary::view_of(id, self.store.placement(id).as_ref(), peer);
        let view = self.widened(id, view, sync.their_heads())?;
        let proofs = Proofs::for_view(&view);
        let holds = view == View::Holds;
        let mut doc = match view {
            View::Holds => self.checkout(id)?.unwrap_or_default(),
            View::Exited(heads) => match self.load(id)?.map(|mut d| d.fork_at(&heads)) {
                Some(Ok(fork)) => fork,
                _ => return Ok((None, true)),
            },
            // A document the peer may not see is answered for exactly as one this node does
            // not hold: whether it is held here cannot be probed.
            View::Nothing | View::Unknown => AutoCommit::new(),
        };
        let message = self.outgoing(id, &mut doc, sync, proofs)?;
        let in_sync = sync.in_sync(&doc.get_heads());
        if holds {
            self.keep(id, doc);
        }
        Ok((message, in_sync))
    }

    /// The first message of `id` to `peer`, which holds nothing of it (reconciliation said
    /// so), made without loading the document ([`DocSync::offer_to_empty`], from the heads
    /// its placement keeps). `None` when that does not apply: the peer may not hold all of
    /// the document, the sync is not fresh, or the summary predates stored heads; the caller
    /// then generates as usual.
    pub fn offer_to_empty(
        &self,
        id: &DocId,
        peer: &OrgPath,
        sync: &mut DocSync,
    ) -> Option<Outbound> {
        let placement = self.store.placement(id)?;
        if summary::view_of(id, Some(&placement), peer) != View::Holds {
            return None;
        }
        let offer = sync.offer_to_empty(&placement.heads)?;
        Some(Outbound {
            message: offer.message,
            attestations: Vec::new(),
        })
    }

    /// The next message of `sync` from `doc` (the document, or the part of it the peer may
    /// be sent), with what goes beside its changes ([`signatures`]).
    fn outgoing(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        sync: &mut DocSync,
        proofs: Proofs,
    ) -> Result<Option<Outbound>, StorageError> {
        let Some(out) = sync.generate(doc) else {
            return Ok(None);
        };
        let beside = self.beside(id, doc, &out.changes, proofs)?;
        Ok(Some(Outbound {
            message: signatures::with_changes(out.message, &beside.extra),
            attestations: beside.attestations,
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

    /// Receives a sync message from `peer` for `id` at `now_ms` through the gate; stores
    /// what was admitted (durably, with its attestations), quarantines what was refused,
    /// purges the document if it left this office's scope, and returns the reply.
    pub fn receive(
        &self,
        id: &DocId,
        peer: &OrgPath,
        bytes: &[u8],
        attestations: &[Attestation],
        sync: &mut DocSync,
        now_ms: i64,
    ) -> Result<Received, StorageError> {
        let message = (id, peer, bytes, attestations);
        self.receive_as(Commit::Durable, message, sync, now_ms)
    }

    /// [`Office::receive`], storing what the message admitted as `commit` says (see
    /// [`link::Delivery::receive_unflushed`]).
    fn receive_as(
        &self,
        commit: Commit,
        (id, peer, bytes, attestations): (&DocId, &OrgPath, &[u8], &[Attestation]),
        sync: &mut DocSync,
        now_ms: i64,
    ) -> Result<Received, StorageError> {
        let _guard = self.lock(id);
        let before = self.store.summary(id)?;
        let view = summary::view_of(id, before.as_ref().map(Placement::of).as_ref(), peer);
        let view = match view {
            // The common case, on the hot path: nothing to widen, no second decode.
            View::Holds | View::Unknown => view,
            narrow => {
                let theirs = crate::syncmsg::SyncMessage::decode(bytes)
                    .map(|m| m.heads)
                    .unwrap_or_default();
                self.widened(id, narrow, &theirs)?
            }
        };
        let cx = Inbound {
            id,
            peer,
            me: &self.me,
            now_ms,
            auth: &*self.auth,
            attestations,
        };
        if view == View::Nothing {
            // The peer may not see this document: it is answered as one this node does not
            // hold (from an empty copy that is never stored), so that cannot be probed.
            let mut sandbox = self.fresh();
            let admission = sync.receive(&mut sandbox, bytes, &cx, &mut || self.fresh());
            let refused = vec![Refusal::OutsideSenderScope.code(); admission.applied.len()];
            let reply = self.outgoing(id, &mut sandbox, sync, Proofs::Held)?;
            let in_sync = sync.in_sync(&sandbox.get_heads());
            let received = Received {
                reply,
                refused,
                in_sync,
                ..Received::default()
            };
            return Ok(received);
        }
        let mut doc = self.checkout(id)?.unwrap_or_else(|| self.fresh());
        let heads_before = doc.get_heads();
        let mut reload = || match self.load(id) {
            Ok(Some(d)) => d,
            _ => self.fresh(),
        };
        let admission = sync.receive(&mut doc, bytes, &cx, &mut reload);
        let at = stamp::rfc3339(now_ms);
        let mut refused =
            self.quarantine(id, peer.as_str(), &admission.refused, attestations, &at)?;
        if admission.rebuilt() {
            refused.extend(self.quarantine(
                id,
                peer.as_str(),
                &admission.dropped,
                attestations,
                &at,
            )?);
        }
        let changed = admission.rebuilt() || doc.get_heads() != heads_before;
        // The document's facts (scope, names, transfers) are read once, after the message.
        let mut after = changed.then(|| summarise_after(id, &mut doc, before.as_ref()));
        let held_here = match &after {
            Some(summary) => may_hold(id, &summary.scope, &self.me),
            None if heads_before.is_empty() => may_hold(id, &scope(id, &doc), &self.me),
            None => true,
        };
        if heads_before.is_empty() && !held_here {
            // A document this office never held, already out of its scope: nobody here or
            // below holds it, so there is nobody to tell. It is not kept, and the peer is
            // answered as by an office that holds nothing (a relay that had purged it was
            // sent it again by a parent that did not know, and kept it: found by the county
            // simulator).
            let mut empty = self.fresh();
            sync.repeat_next();
            let reply = self.outgoing(id, &mut empty, sync, Proofs::Held)?;
            let received = Received {
                reply,
                in_sync: sync.in_sync(&[]),
                ..Received::default()
            };
            return Ok(received);
        }
        let mut notices = Vec::new();
        if let Some(summary) = after.as_mut() {
            let applied: Vec<Attestation> = admission
                .signatures
                .iter()
                .filter(|a| admission.applied.contains(&a.change))
                .cloned()
                .collect();
            if !held_here {
                self.mark_leaving(summary, before.as_ref());
            }
            {
                let write = DocWrite {
                    id,
                    doc: &mut doc,
                    heads_before: &heads_before,
                    summary,
                    attestations: &applied,
                    proofs: &admission.proofs,
                };
                if admission.rebuilt() {
                    let dropped: Vec<ChangeHash> =
                        admission.dropped.iter().filter_map(|r| r.hash).collect();
                    tracing::warn!(peer = %peer, doc = %id, dropped = dropped.len(), "an equivocation was settled: document rebuilt without the losing change");
                    self.store.replace(write, &dropped)?;
                } else {
                    let state = sync.persisted();
                    let sync_state = Some((peer.as_str(), state.as_slice()));
                    match commit {
                        Commit::Durable => self.store.save(write, sync_state)?,
                        Commit::Unflushed => self.store.save_unflushed(write, sync_state)?,
                    }
                }
            }
            notices.push(Notice {
                doc: id.clone(),
                kind: NoticeKind::Changed,
                cause: Some(peer.clone()),
            });
        } else if !heads_before.is_empty() {
            self.store
                .save_sync_state(id, peer.as_str(), &sync.persisted())?;
        }
        let (reply, in_sync) = match view {
            // An office that left gets at most the document as it was when it left.
            View::Exited(heads) => match doc.fork_at(&heads) {
                Ok(mut fork) => (
                    self.outgoing(id, &mut fork, sync, Proofs::None)?,
                    sync.in_sync(&fork.get_heads()),
                ),
                Err(_) => (None, true),
            },
            _ => (
                self.outgoing(id, &mut doc, sync, Proofs::Held)?,
                sync.in_sync(&doc.get_heads()),
            ),
        };
        self.keep(id, doc);
        let received = Received {
            reply,
            applied: admission.applied.len(),
            refused,
            in_sync,
            notices,
        };
        Ok(received)
    }

    /// A view of a peer that may not have all of `id`, widened by what the peer holds
    /// already: the peer's own heads, where this office holds all of them, are added to the
    /// heads it may be sent (which tells it nothing it does not have). Without this, an
    /// office that left (or that this office never saw in the scope) and had written
    /// concurrently with its leaving was answered from a copy lacking its own changes,
    /// never learnt that its parent held them, and kept the file forever (found by the
    /// county simulator).
    fn widened(&self, id: &DocId, view: View, theirs: &[ChangeHash]) -> Result<View, StorageError> {
        let mut heads = match view {
            View::Exited(heads) => heads,
            View::Nothing => Vec::new(),
            other => return Ok(other),
        };
        if theirs.is_empty() || theirs.iter().all(|h| heads.contains(h)) {
            return Ok(if heads.is_empty() {
                View::Nothing
            } else {
                View::Exited(heads)
            });
        }
        let Some(mut doc) = self.store.load(id)? else {
            return Ok(View::Nothing);
        };
        if theirs
            .iter()
            .all(|h| doc.get_change_meta_by_hash(h).is_some())
        {
            heads.extend(
                theirs
                    .iter()
                    .filter(|h| !heads.contains(h))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        Ok(if heads.is_empty() {
            View::Nothing
        } else {
            View::Exited(heads)
        })
    }

    /// The (id, digest) of every document `peer` may hold, or held until it left the
    /// document's scope: what this office offers it.
    pub fn inventory_for(&self, peer: &OrgPath) -> BTreeMap<DocId, Digest> {
        let mut out = BTreeMap::new();
        self.store.for_each_placement(&mut |id, p| {
            let digest = match summary::view_of(id, Some(p), peer) {
                View::Holds => p.digest,
                View::Exited(heads) => heads_digest(&heads),
                View::Nothing | View::Unknown => return,
            };
            out.insert(id.clone(), digest);
        });
        out
    }

    /// The documents of `inventory` (this office's for `peer`, [`Office::inventory_for`])
    /// that moved since they were last in sync with `peer`: those whose persisted sync state
    /// names shared heads other than the ones offered now. A document never synced with
    /// `peer` is not among them (reconciliation finds out whether the peer holds it).
    pub fn changed_since_synced(
        &self,
        peer: &OrgPath,
        inventory: &BTreeMap<DocId, Digest>,
    ) -> Vec<DocId> {
        inventory
            .iter()
            .filter(|(id, digest)| {
                let state = self.store.sync_state(id, peer.as_str()).ok().flatten();
                let shared = state
                    .and_then(|s| automerge::sync::State::decode(&s).ok())
                    .map(|s| s.shared_heads)
                    .unwrap_or_default();
                !shared.is_empty() && heads_digest(&shared) != **digest
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Documents leaving this office that wait for the parent to hold them.
    pub fn awaiting_upstream(&self) -> Vec<DocId> {
        let mut out = Vec::new();
        self.store.for_each_placement(&mut |id, p| {
            if p.awaiting_upstream {
                out.push(id.clone());
            }
        });
        out
    }

    /// True when this office would send `peer` anything of document `id`.
    pub fn offers_to(&self, id: &DocId, peer: &OrgPath) -> bool {
        matches!(
            summary::view_of(id, self.store.placement(id).as_ref(), peer),
            View::Holds | View::Exited(_)
        )
    }

    /// True when `peer` may hold `id` only up to where it left the scope.
    pub fn exited_for(&self, id: &DocId, peer: &OrgPath) -> bool {
        matches!(
            summary::view_of(id, self.store.placement(id).as_ref(), peer),
            View::Exited(_)
        )
    }

    /// Loads a document this office holds for its own use (not one it is only keeping
    /// until an office below learns it left).
    pub fn load_held(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        match self.store.summary(id)? {
            Some(s) if !s.leaving => self.load(id),
            _ => Ok(None),
        }
    }

    /// Makes sure this office's own roster document exists.
    pub fn ensure_own_roster(&self, now_ms: i64) -> Result<Vec<Notice>, WriteError> {
        let id = DocId::roster(&self.me);
        let exists = self.store.summary(&id)?.is_some();
        let me = self.me.clone();
        let ((), notices) =
            self.write(&id, !exists, now_ms, |doc, _| Ok(roster::ensure(doc, &me)?))?;
        Ok(notices)
    }
}
