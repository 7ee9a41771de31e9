//! What the office core needs of a store, as a trait: the redb store in `node/` is its one
//! durable implementation; [`MemStore`](super::memstore::MemStore) keeps everything in
//! memory for the county simulator.
//!
//! Every method that writes is durable when it returns `Ok` (the office acknowledges
//! nothing before), but for [`Storage::save_unflushed`], whose caller flushes before it
//! acknowledges; a store that fails returns [`StorageError`] and the office stops what it
//! was doing, leaving the document as it was.

use automerge::{AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};

use super::summary::{DocSummary, Placement};
use crate::DocId;
use crate::attest::Attestation;
use crate::vouch::Proof;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A stored document does not load.
    #[error("stored document {0} is damaged: {1}")]
    Corrupt(String, String),
    /// The store's backend failed (disk, database).
    #[error("store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The office's documents, summaries, signatures, sync states and quarantine.
pub trait Storage: Send + Sync {
    /// Loads a document, or `None` if the store does not hold it.
    fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError>;
    /// A document's summary, or `None` if the store does not hold it.
    fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StorageError>;
    /// A document's placement (kept in memory: no store access), or `None`.
    fn placement(&self, id: &DocId) -> Option<Placement>;
    /// Calls `f` with every document's placement, in id order.
    fn for_each_placement(&self, f: &mut dyn FnMut(&DocId, &Placement));
    /// Durably stores the changes `write.doc` has beyond `write.heads_before`, with their
    /// attestations and the new summary, and optionally a peer's sync state (peer, state).
    fn save(&self, write: DocWrite<'_>, sync: Option<(&str, &[u8])>) -> Result<(), StorageError>;
    /// Stores what a peer's message admitted, as [`Storage::save`] does, but need not make it
    /// durable before it returns: the caller calls [`Storage::flush`] before it acknowledges
    /// the message (its reply, its notices), so that the writes of several messages share one
    /// durable commit (group commit). By default, [`Storage::save`].
    fn save_unflushed(
        &self,
        write: DocWrite<'_>,
        sync: Option<(&str, &[u8])>,
    ) -> Result<(), StorageError> {
        self.save(write, sync)
    }
    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Durably replaces a document whole (after an equivocation rebuilt it), dropping the
    /// attestations of `dropped` and every sync state of the document.
    fn replace(&self, write: DocWrite<'_>, dropped: &[ChangeHash]) -> Result<(), StorageError>;
    /// Durably replaces a document's summary.
    fn set_summary(&self, id: &DocId, summary: &DocSummary) -> Result<(), StorageError>;
    /// Durably removes a document (chunks, summary, signatures, sync states), writing `also`
    /// in the same transaction.
    fn purge_with(&self, id: &DocId, also: Option<DocWrite<'_>>) -> Result<(), StorageError>;
    /// The attestations held for these changes of a document (those it has).
    fn attestations(
        &self,
        id: &DocId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StorageError>;
    /// The proof held for a change of a document that this store holds without a signature
    /// of its own ([`crate::vouch::Proof`]), if any.
    fn proof(&self, id: &DocId, change: &ChangeHash) -> Result<Option<Proof>, StorageError>;
    /// Stores a peer's sync state for a document (need not be durable at once).
    fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StorageError>;
    /// A peer's stored sync state for a document.
    fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Records refused changes; returns how many records are new.
    fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StorageError>;
    /// Hashes of a document's quarantined changes.
    fn quarantined_changes(&self, id: &DocId) -> Result<Vec<ChangeHash>, StorageError>;
}

/// One refused change, kept in quarantine: never applied, never forwarded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// RFC 3339 time of refusal.
    pub at: String,
    /// The peer that sent it (or `local` for the node's own API).
    pub peer: String,
    /// The document.
    pub doc: String,
    /// The change hash, hex.
    pub change: Option<String>,
    /// The org the change claimed as author.
    pub author: Option<String>,
    /// Reason code.
    pub reason: String,
    /// Reason, in words.
    pub message: String,
    /// The change's bytes, hex (evidence; not shown by the API list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_bytes: Option<String>,
    /// Its attestation, hex, if one came with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// How many times it was refused (repeats bump this instead of adding records).
    #[serde(default = "one")]
    pub count: u64,
    /// When it was last refused, if more than once (RFC 3339).
    #[serde(default)]
    pub last_at: Option<String>,
    /// Hex id of the signing certificate, for reasons that name a certificate to revoke.
    #[serde(default)]
    pub cert: Option<String>,
    /// Evidence beside the change, e.g. the other change of an equivocating pair.
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

fn one() -> u64 {
    1
}

/// Evidence kept with a quarantine record: another change that shows the misbehaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Its change hash, hex.
    pub change: String,
    /// Its bytes, hex.
    #[serde(default)]
    pub change_bytes: Option<String>,
    /// Its attestation, hex.
    #[serde(default)]
    pub attestation: Option<String>,
}

/// One document write, to be made in the same transaction as another store operation (see
/// [`Store::purge_with`]).
pub struct DocWrite<'a> {
    /// The document.
    pub id: &'a DocId,
    /// Its new state.
    pub doc: &'a mut AutoCommit,
    /// The heads the store holds.
    pub heads_before: &'a [ChangeHash],
    /// Its new summary.
    pub summary: &'a DocSummary,
    /// The attestations of the new changes.
    pub attestations: &'a [Attestation],
    /// The proofs of new changes that came without a signature of their own.
    pub proofs: &'a [Proof],
}

/// A shared store is a store (the simulator keeps an office's store across its restarts).
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        (**self).load(id)
    }
    fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StorageError> {
        (**self).summary(id)
    }
    fn placement(&self, id: &DocId) -> Option<Placement> {
        (**self).placement(id)
    }
    fn for_each_placement(&self, f: &mut dyn FnMut(&DocId, &Placement)) {
        (**self).for_each_placement(f)
    }
    fn save(&self, write: DocWrite<'_>, sync: Option<(&str, &[u8])>) -> Result<(), StorageError> {
        (**self).save(write, sync)
    }
    fn save_unflushed(
        &self,
        write: DocWrite<'_>,
        sync: Option<(&str, &[u8])>,
    ) -> Result<(), StorageError> {
        (**self).save_unflushed(write, sync)
    }
    fn flush(&self) -> Result<(), StorageError> {
        (**self).flush()
    }
    fn replace(&self, write: DocWrite<'_>, dropped: &[ChangeHash]) -> Result<(), StorageError> {
        (**self).replace(write, dropped)
    }
    fn set_summary(&self, id: &DocId, summary: &DocSummary) -> Result<(), StorageError> {
        (**self).set_summary(id, summary)
    }
    fn purge_with(&self, id: &DocId, also: Option<DocWrite<'_>>) -> Result<(), StorageError> {
        (**self).purge_with(id, also)
    }
    fn attestations(
        &self,
        id: &DocId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StorageError> {
        (**self).attestations(id, hashes)
    }
    fn proof(&self, id: &DocId, change: &ChangeHash) -> Result<Option<Proof>, StorageError> {
        (**self).proof(id, change)
    }
    fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StorageError> {
        (**self).save_sync_state(id, peer, state)
    }
    fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).sync_state(id, peer)
    }
    fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StorageError> {
        (**self).quarantine(records)
    }
    fn quarantined_changes(&self, id: &DocId) -> Result<Vec<ChangeHash>, StorageError> {
        (**self).quarantined_changes(id)
    }
}
