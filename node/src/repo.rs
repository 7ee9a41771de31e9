//! Documents on top of the store: loading, writing through the gate, receiving from peers.
//!
//! Every change to a document passes [`amphi_protocol::gate`]: the node's own writes are
//! judged exactly like a peer's (so a 403 at the API and a refusal on the wire agree), and
//! nothing is acknowledged before it is durable. Writers to one document are serialised by
//! a sharded lock; documents are loaded from the store on demand and not kept in memory.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use amphi_protocol::authority::Refusal;
use amphi_protocol::casefile::{CaseFile, MemberFacts};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::{self, RefusedChange};
use amphi_protocol::inventory::heads_digest;
use amphi_protocol::reader::Reader;
use amphi_protocol::visibility::{scope, visible_to};
use amphi_protocol::wire::Digest;
use amphi_protocol::{DocId, DocKind, OrgPath, roster};
use automerge::{ActorId, AutoCommit};
use tokio::sync::broadcast;

use crate::status::{Status, now_rfc3339};
use crate::store::{DocSummary, RefusedRecord, Store, StoreError};

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
    /// The write made a document this office could no longer see (e.g. moved a member
    /// elsewhere without a transfer).
    #[error("the write would move the document outside this office's scope")]
    LeavesScope,
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

/// What receiving one sync message from a peer did.
#[derive(Debug)]
pub struct Received {
    /// The reply to send, if any.
    pub reply: Option<Vec<u8>>,
    /// Changes applied.
    pub applied: usize,
    /// Reason codes of refused changes.
    pub refused: Vec<&'static str>,
    /// The peer is now known to have exactly our heads.
    pub in_sync: bool,
}

/// The node's documents.
pub struct Repo {
    store: Store,
    me: OrgPath,
    actor: ActorId,
    locks: Vec<Mutex<()>>,
    changed: broadcast::Sender<DocId>,
    status: Arc<Status>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The summary the store keeps of a document (kind, names, scope, digest).
pub fn summarise(id: &DocId, doc: &mut AutoCommit) -> DocSummary {
    let digest = hex::encode(heads_digest(&doc.get_heads()));
    let scope: Vec<String> = scope(id, doc).iter().map(ToString::to_string).collect();
    match id.kind() {
        DocKind::Member => {
            let facts = MemberFacts::read(&Reader::now(doc));
            let name = CaseFile::read(doc).map(|c| c.name).unwrap_or_default();
            DocSummary {
                kind: "member".into(),
                name,
                home_org: facts.home_org.map(|o| o.to_string()),
                residence_org: facts.residence_org.map(|o| o.to_string()),
                scope,
                digest,
            }
        }
        DocKind::OrgRoster => DocSummary {
            kind: "org".into(),
            name: roster::read(doc)
                .profile
                .get("name")
                .cloned()
                .unwrap_or_default(),
            home_org: id.roster_org().map(|o| o.to_string()),
            residence_org: None,
            scope,
            digest,
        },
    }
}

impl Repo {
    /// A repo over `store` for the office `me`, whose changes carry `actor`.
    pub fn new(store: Store, me: OrgPath, actor: ActorId, status: Arc<Status>) -> Repo {
        let (changed, _) = broadcast::channel(4096);
        Repo {
            store,
            me,
            actor,
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

    /// Subscribes to ids of documents that changed here (by a local write or from a peer).
    pub fn subscribe(&self) -> broadcast::Receiver<DocId> {
        self.changed.subscribe()
    }

    fn lock(&self, id: &DocId) -> std::sync::MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        self.locks[(h.finish() as usize) % LOCK_SHARDS]
            .lock()
            .expect("doc lock")
    }

    /// Loads a document (with this node's actor, ready to write).
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        Ok(self.store.load(id)?.map(|mut d| {
            d.set_actor(self.actor.clone());
            d
        }))
    }

    /// Makes a write to a document as this office: `edit` makes the operations, the gate
    /// judges the resulting change, and only then is it stored durably and announced.
    /// With `create`, the document must not exist yet; otherwise it must.
    pub fn write<T>(
        &self,
        id: &DocId,
        create: bool,
        edit: impl FnOnce(&mut AutoCommit) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let _guard = self.lock(id);
        let mut doc = match (self.load(id)?, create) {
            (Some(_), true) => return Err(WriteError::Exists(id.clone())),
            (None, false) => return Err(WriteError::NotFound(id.clone())),
            (Some(doc), false) => doc,
            (None, true) => AutoCommit::new().with_actor(self.actor.clone()),
        };
        let heads_before = doc.get_heads();
        let created_before = !heads_before.is_empty();
        let out = edit(&mut doc)?;
        let Some(hash) = gate::commit_as(&mut doc, &self.me, now_ms()) else {
            return Ok(out); // nothing changed
        };
        let change = doc.get_change_by_hash(&hash).expect("the change just made");
        if let Err(refusal) = gate::judge_change(
            &mut doc,
            id,
            &change,
            created_before && id.kind() == DocKind::Member,
        ) {
            return Err(WriteError::Forbidden(refusal));
        }
        if !visible_to(&scope(id, &doc), &self.me) {
            return Err(WriteError::LeavesScope);
        }
        let summary = summarise(id, &mut doc);
        self.store
            .save(id, &mut doc, &heads_before, &summary, None)?;
        let _ = self.changed.send(id.clone());
        Ok(out)
    }

    /// Generates the next sync message for `id` to a peer, if there is something to say.
    /// Returns (message, peer known to be in sync).
    /// Nothing is ever generated for a document the peer may not hold.
    pub fn generate(
        &self,
        id: &DocId,
        peer: &OrgPath,
        sync: &mut DocSync,
    ) -> Result<(Option<Vec<u8>>, bool), StoreError> {
        let mut doc = match self.load(id)? {
            Some(doc) if visible_to(&scope(id, &doc), peer) => doc,
            Some(_) => return Ok((None, true)),
            None => AutoCommit::new(),
        };
        let message = sync.generate(&mut doc);
        Ok((message, sync.in_sync(&doc.get_heads())))
    }

    /// Receives a sync message from `peer` for `id` through the gate; stores what was
    /// admitted (durably), logs refusals, and returns the reply.
    pub fn receive(
        &self,
        id: &DocId,
        peer: &OrgPath,
        bytes: &[u8],
        sync: &mut DocSync,
    ) -> Result<Received, StoreError> {
        let _guard = self.lock(id);
        let mut doc = self
            .load(id)?
            .unwrap_or_else(|| AutoCommit::new().with_actor(self.actor.clone()));
        let heads_before = doc.get_heads();
        if !heads_before.is_empty() && !visible_to(&scope(id, &doc), peer) {
            // A peer asking about a document it may not hold gets nothing, not even heads.
            let refused = vec![RefusedChange {
                hash: None,
                author: None,
                reason: Refusal::OutsideSenderScope,
            }];
            let codes = self.log_refused(id, peer.as_str(), &refused)?;
            return Ok(Received {
                reply: None,
                applied: 0,
                refused: codes,
                in_sync: true,
            });
        }
        let admission = sync.receive(&mut doc, id, bytes, peer, &self.me);
        let changed = doc.get_heads() != heads_before;
        if changed {
            let summary = summarise(id, &mut doc);
            self.store.save(
                id,
                &mut doc,
                &heads_before,
                &summary,
                Some((peer.as_str(), &sync.persisted())),
            )?;
        } else if !heads_before.is_empty() {
            self.store
                .save_sync_state(id, peer.as_str(), &sync.persisted())?;
        }
        let refused = self.log_refused(id, peer.as_str(), &admission.refused)?;
        if changed {
            let _ = self.changed.send(id.clone());
        }
        let reply = sync.generate(&mut doc);
        Ok(Received {
            reply,
            applied: admission.applied,
            refused,
            in_sync: sync.in_sync(&doc.get_heads()),
        })
    }

    fn log_refused(
        &self,
        id: &DocId,
        peer: &str,
        refused: &[RefusedChange],
    ) -> Result<Vec<&'static str>, StoreError> {
        let at = now_rfc3339();
        let records: Vec<RefusedRecord> = refused
            .iter()
            .map(|r| {
                tracing::warn!(peer, doc = %id, author = ?r.author.as_ref().map(ToString::to_string), reason = r.reason.code(), "refused change: {}", r.reason);
                RefusedRecord {
                    at: at.clone(),
                    peer: peer.to_owned(),
                    doc: id.to_string(),
                    change: r.hash.map(|h| h.to_string()),
                    author: r.author.as_ref().map(ToString::to_string),
                    reason: r.reason.code().to_owned(),
                    message: r.reason.to_string(),
                }
            })
            .collect();
        self.store.log_refused(&records)?;
        let codes: Vec<&'static str> = refused.iter().map(|r| r.reason.code()).collect();
        self.status.count_refused(Some(peer), &codes);
        Ok(codes)
    }

    /// The (id, digest) of every document `peer` may hold: what this node offers it.
    pub fn inventory_for(&self, peer: &OrgPath) -> Result<BTreeMap<DocId, Digest>, StoreError> {
        Ok(self
            .store
            .summaries()?
            .into_iter()
            .filter(|(_, s)| {
                let scope: Vec<OrgPath> = s
                    .scope
                    .iter()
                    .filter_map(|o| OrgPath::parse(o).ok())
                    .collect();
                visible_to(&scope, peer)
            })
            .filter_map(|(id, s)| {
                let mut digest = [0u8; 16];
                hex::decode_to_slice(&s.digest, &mut digest).ok()?;
                Some((id, digest))
            })
            .collect())
    }

    /// True when `peer` may hold document `id` as this node currently sees it.
    pub fn visible_to_peer(&self, id: &DocId, peer: &OrgPath) -> Result<bool, StoreError> {
        Ok(self.store.summary(id)?.is_some_and(|s| {
            let scope: Vec<OrgPath> = s
                .scope
                .iter()
                .filter_map(|o| OrgPath::parse(o).ok())
                .collect();
            visible_to(&scope, peer)
        }))
    }

    /// Makes sure this office's own roster document exists.
    pub fn ensure_own_roster(&self) -> Result<(), WriteError> {
        let id = DocId::roster(&self.me);
        let exists = self.store.summary(&id)?.is_some();
        let me = self.me.clone();
        self.write(&id, !exists, |doc| Ok(roster::ensure(doc, &me)?))
    }
}
