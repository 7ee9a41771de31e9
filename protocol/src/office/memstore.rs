//! An in-memory [`Storage`]: the county simulator's store, and a model of what a durable
//! store must do.
//!
//! Documents are kept as saved bytes and loaded from them, as from disk. Everything but
//! sync states and unflushed writes is durable when written; sync states, like the redb
//! store's, ride along with the next durable write, and unflushed writes
//! ([`Storage::save_unflushed`]) become durable with the next flush or durable write, so
//! [`MemStore::crash`] loses those written since.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use automerge::{AutoCommit, ChangeHash};

use super::summary::{DocSummary, Placement};
use super::{DocWrite, QuarantineRecord, Storage, StorageError};
use crate::DocId;
use crate::attest::Attestation;
use crate::vouch::Proof;

#[derive(Default, Clone)]
struct Inner {
    docs: BTreeMap<DocId, Vec<u8>>,
    summaries: BTreeMap<DocId, DocSummary>,
    placements: BTreeMap<DocId, Placement>,
    attestations: BTreeMap<(DocId, ChangeHash), Attestation>,
    /// Kept encoded, as on disk.
    proofs: BTreeMap<(DocId, ChangeHash), Vec<u8>>,
    sync_states: BTreeMap<(DocId, String), Vec<u8>>,
    quarantine: BTreeMap<(String, String, String), QuarantineRecord>,
}

/// A store in memory (see the module docs).
#[derive(Default)]
pub struct MemStore {
    /// What survives a crash.
    durable: Mutex<Inner>,
    /// Sync states written since the last durable write.
    unsynced: Mutex<BTreeMap<(DocId, String), Vec<u8>>>,
    /// While unflushed writes wait: what was durable before the first of them (a crash
    /// brings it back).
    before_unflushed: Mutex<Option<Inner>>,
    /// How many times each document was loaded from its saved bytes.
    loads: Mutex<BTreeMap<DocId, usize>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// How many times `id` was loaded from its saved bytes (what a load costs is most of
    /// what an office spends sending a document).
    pub fn loads(&self, id: &DocId) -> usize {
        guard(&self.loads).get(id).copied().unwrap_or(0)
    }

    /// Power cut: what was not durable is gone.
    pub fn crash(&self) {
        let mut inner = guard(&self.durable);
        if let Some(before) = guard(&self.before_unflushed).take() {
            *inner = before;
        }
        guard(&self.unsynced).clear();
    }

    /// Every document held, in id order.
    pub fn ids(&self) -> Vec<DocId> {
        guard(&self.durable).docs.keys().cloned().collect()
    }

    /// Every change hash of a document with an attestation stored.
    pub fn attested(&self, id: &DocId) -> Vec<ChangeHash> {
        guard(&self.durable)
            .attestations
            .keys()
            .filter(|(d, _)| d == id)
            .map(|(_, h)| *h)
            .collect()
    }

    /// How many proofs are held, over all documents.
    pub fn proofs_held(&self) -> usize {
        guard(&self.durable).proofs.len()
    }

    /// Quarantine records, in key order.
    pub fn quarantined(&self) -> Vec<QuarantineRecord> {
        guard(&self.durable).quarantine.values().cloned().collect()
    }

    /// Makes the pending sync states and unflushed writes durable (a durable write commits
    /// them with it).
    fn settle(&self, inner: &mut Inner) {
        inner.sync_states.append(&mut guard(&self.unsynced));
        guard(&self.before_unflushed).take();
    }

    fn write_doc(inner: &mut Inner, write: DocWrite<'_>) {
        let id = write.id.clone();
        inner.docs.insert(id.clone(), write.doc.save());
        inner
            .placements
            .insert(id.clone(), Placement::of(write.summary));
        inner.summaries.insert(id.clone(), write.summary.clone());
        for a in write.attestations {
            inner.attestations.insert((id.clone(), a.change), a.clone());
        }
        for p in write.proofs {
            inner.proofs.insert((id.clone(), p.proves), p.encode());
        }
    }

    fn remove_doc(&self, inner: &mut Inner, id: &DocId) {
        inner.docs.remove(id);
        inner.summaries.remove(id);
        inner.placements.remove(id);
        inner.attestations.retain(|(d, _), _| d != id);
        inner.proofs.retain(|(d, _), _| d != id);
        inner.sync_states.retain(|(d, _), _| d != id);
        guard(&self.unsynced).retain(|(d, _), _| d != id);
    }
}

impl Storage for MemStore {
    fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        let bytes = guard(&self.durable).docs.get(id).cloned();
        bytes
            .map(|b| {
                *guard(&self.loads).entry(id.clone()).or_default() += 1;
                AutoCommit::load(&b)
                    .map_err(|e| StorageError::Corrupt(id.to_string(), e.to_string()))
            })
            .transpose()
    }

    fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StorageError> {
        Ok(guard(&self.durable).summaries.get(id).cloned())
    }

    fn placement(&self, id: &DocId) -> Option<Placement> {
        guard(&self.durable).placements.get(id).cloned()
    }

    fn for_each_placement(&self, f: &mut dyn FnMut(&DocId, &Placement)) {
        let placements = guard(&self.durable).placements.clone();
        for (id, p) in &placements {
            f(id, p);
        }
    }

    fn save(&self, write: DocWrite<'_>, sync: Option<(&str, &[u8])>) -> Result<(), StorageError> {
        let mut inner = guard(&self.durable);
        self.settle(&mut inner);
        if let Some((peer, state)) = sync {
            inner
                .sync_states
                .insert((write.id.clone(), peer.to_owned()), state.to_vec());
        }
        MemStore::write_doc(&mut inner, write);
        Ok(())
    }

    fn save_unflushed(
        &self,
        write: DocWrite<'_>,
        sync: Option<(&str, &[u8])>,
    ) -> Result<(), StorageError> {
        let mut inner = guard(&self.durable);
        guard(&self.before_unflushed).get_or_insert_with(|| inner.clone());
        if let Some((peer, state)) = sync {
            guard(&self.unsynced).insert((write.id.clone(), peer.to_owned()), state.to_vec());
        }
        MemStore::write_doc(&mut inner, write);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.settle(&mut guard(&self.durable));
        Ok(())
    }

    fn replace(&self, write: DocWrite<'_>, dropped: &[ChangeHash]) -> Result<(), StorageError> {
        let mut inner = guard(&self.durable);
        self.settle(&mut inner);
        let id = write.id.clone();
        for h in dropped {
            inner.attestations.remove(&(id.clone(), *h));
            inner.proofs.remove(&(id.clone(), *h));
        }
        inner.sync_states.retain(|(d, _), _| *d != id);
        MemStore::write_doc(&mut inner, write);
        Ok(())
    }

    fn set_summary(&self, id: &DocId, summary: &DocSummary) -> Result<(), StorageError> {
        let mut inner = guard(&self.durable);
        self.settle(&mut inner);
        inner.placements.insert(id.clone(), Placement::of(summary));
        inner.summaries.insert(id.clone(), summary.clone());
        Ok(())
    }

    fn purge_with(&self, id: &DocId, also: Option<DocWrite<'_>>) -> Result<(), StorageError> {
        let mut inner = guard(&self.durable);
        self.settle(&mut inner);
        self.remove_doc(&mut inner, id);
        if let Some(write) = also {
            MemStore::write_doc(&mut inner, write);
        }
        Ok(())
    }

    fn attestations(
        &self,
        id: &DocId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StorageError> {
        let inner = guard(&self.durable);
        Ok(hashes
            .iter()
            .filter_map(|h| inner.attestations.get(&(id.clone(), *h)).cloned())
            .collect())
    }

    fn proof(&self, id: &DocId, change: &ChangeHash) -> Result<Option<Proof>, StorageError> {
        let inner = guard(&self.durable);
        let Some(bytes) = inner.proofs.get(&(id.clone(), *change)) else {
            return Ok(None);
        };
        Proof::decode(*change, bytes).map(Some).ok_or_else(|| {
            StorageError::Corrupt(
                id.to_string(),
                format!("the proof of change {change} does not read"),
            )
        })
    }

    fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StorageError> {
        guard(&self.unsynced).insert((id.clone(), peer.to_owned()), state.to_vec());
        Ok(())
    }

    fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let key = (id.clone(), peer.to_owned());
        if let Some(s) = guard(&self.unsynced).get(&key) {
            return Ok(Some(s.clone()));
        }
        Ok(guard(&self.durable).sync_states.get(&key).cloned())
    }

    fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StorageError> {
        let mut inner = guard(&self.durable);
        self.settle(&mut inner);
        let mut added = 0;
        for r in records {
            let key = match &r.change {
                Some(h) => (r.doc.clone(), h.clone(), String::new()),
                None => (r.doc.clone(), r.peer.clone(), r.reason.clone()),
            };
            match inner.quarantine.get_mut(&key) {
                Some(old) => old.count += 1,
                None => {
                    inner.quarantine.insert(key, r.clone());
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    fn quarantined_changes(&self, id: &DocId) -> Result<Vec<ChangeHash>, StorageError> {
        let inner = guard(&self.durable);
        Ok(inner
            .quarantine
            .values()
            .filter(|r| r.doc == id.as_str())
            .filter_map(|r| r.change.as_ref()?.parse().ok())
            .collect())
    }
}
