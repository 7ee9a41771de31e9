//! The node's embedded, crash-safe store (redb): documents, their index, sync states and
//! the log of refused changes.
//!
//! A document is stored as chunks: chunk 0 is a compact `save()`, later chunks are
//! incremental saves of the changes since. Loading concatenates them (automerge reads such
//! a concatenation directly). After [`COMPACT_AFTER`] chunks the document is rewritten as
//! one chunk, so the store does not grow without bound. Every document write commits with
//! `Durability::Immediate` (fsync) before it returns; sync-state-only writes ride along with
//! the next durable commit.

use std::path::Path;

use amphi_protocol::DocId;
use automerge::{AutoCommit, ChangeHash};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// (document id, chunk number) → automerge bytes.
const DOC_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("doc_chunks");
/// document id → JSON [`DocSummary`].
const DOC_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_index");
/// (document id, peer org) → encoded automerge sync state.
const SYNC_STATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sync_states");
/// sequence number → JSON [`RefusedRecord`].
const REFUSED: TableDefinition<u64, &[u8]> = TableDefinition::new("refused");
/// small settings: the org this store belongs to.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Chunks a document may have before it is compacted into one.
pub const COMPACT_AFTER: u64 = 32;

/// Errors of the store. The database errors are boxed: they say what failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("store: {0}")]
    Db(String),
    /// A stored document could not be read back.
    #[error("stored document {0} is unreadable: {1}")]
    Corrupt(String, String),
    /// The data dir belongs to another org's node.
    #[error(
        "data dir belongs to {stored}, but this node's certificate names {configured}; use a separate data_dir per office"
    )]
    WrongOrg {
        /// Org recorded in the store.
        stored: String,
        /// Org of the certificate.
        configured: String,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What the node knows of a document without loading it: kind, scope, names for lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSummary {
    /// `member` or `org`.
    pub kind: String,
    /// Member name (or org name).
    pub name: String,
    /// Home org of a member; the org of a roster.
    pub home_org: Option<String>,
    /// Residence org of a two-dwelling member.
    pub residence_org: Option<String>,
    /// The document's scope.
    pub scope: Vec<String>,
    /// Hex digest of the heads.
    pub digest: String,
}

/// One refused change, as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedRecord {
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
}

/// The node's store.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store at `path`, checking it belongs to `org`.
    pub fn open(path: &Path, org: &str) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(DOC_CHUNKS)?;
            txn.open_table(DOC_INDEX)?;
            txn.open_table(SYNC_STATES)?;
            txn.open_table(REFUSED)?;
            let mut meta = txn.open_table(META)?;
            let stored = meta.get("org")?.map(|v| v.value().to_owned());
            match stored {
                Some(stored) if stored != org => {
                    return Err(StoreError::WrongOrg {
                        stored,
                        configured: org.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("org", org)?;
                }
            }
        }
        txn.commit()?;
        Ok(Store { db })
    }

    /// Loads a document, or `None` if the store does not hold it.
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_CHUNKS)?;
        let mut bytes = Vec::new();
        for entry in table.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
            let (_, v) = entry?;
            bytes.extend_from_slice(v.value());
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        AutoCommit::load(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(id.to_string(), e.to_string()))
    }

    /// Durably stores the changes `doc` has beyond `heads_before` (what the store held), with
    /// the document's new summary and, optionally, a peer's sync state.
    pub fn save(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        heads_before: &[ChangeHash],
        summary: &DocSummary,
        sync_state: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut chunks = txn.open_table(DOC_CHUNKS)?;
            let last = chunks
                .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            match last {
                Some(n) if n + 1 < COMPACT_AFTER => {
                    let incremental = doc.save_after(heads_before);
                    chunks.insert((id.as_str(), n + 1), incremental.as_slice())?;
                }
                Some(n) => {
                    for i in 0..=n {
                        chunks.remove((id.as_str(), i))?;
                    }
                    chunks.insert((id.as_str(), 0), doc.save().as_slice())?;
                }
                None => {
                    chunks.insert((id.as_str(), 0), doc.save().as_slice())?;
                }
            }
            let json = serde_json::to_vec(summary).expect("summary serialises");
            txn.open_table(DOC_INDEX)?
                .insert(id.as_str(), json.as_slice())?;
            if let Some((peer, state)) = sync_state {
                txn.open_table(SYNC_STATES)?
                    .insert((id.as_str(), peer), state)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores a peer's sync state for a document, without forcing it to disk (it is
    /// flushed with the next durable commit; losing it costs only a re-check).
    pub fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        txn.open_table(SYNC_STATES)?
            .insert((id.as_str(), peer), state)?;
        txn.commit()?;
        Ok(())
    }

    /// A peer's persisted sync state for a document.
    pub fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SYNC_STATES)?;
        Ok(table.get((id.as_str(), peer))?.map(|v| v.value().to_vec()))
    }

    /// Every document's summary, in id order.
    pub fn summaries(&self) -> Result<Vec<(DocId, DocSummary)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_INDEX)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let (Ok(id), Ok(summary)) =
                (DocId::parse(k.value()), serde_json::from_slice(v.value()))
            else {
                continue;
            };
            out.push((id, summary));
        }
        Ok(out)
    }

    /// One document's summary.
    pub fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_INDEX)?;
        Ok(table
            .get(id.as_str())?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Appends refusals to the log (durably: they are evidence).
    pub fn log_refused(&self, records: &[RefusedRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(REFUSED)?;
            let first = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (seq, r) in (first..).zip(records) {
                let json = serde_json::to_vec(r).expect("record serialises");
                table.insert(seq, json.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The refusal log, oldest first.
    pub fn refused(&self) -> Result<Vec<RefusedRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REFUSED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn summary() -> DocSummary {
        DocSummary {
            kind: "member".into(),
            name: String::new(),
            home_org: None,
            residence_org: None,
            scope: vec![],
            digest: String::new(),
        }
    }

    #[test]
    fn many_small_writes_are_compacted_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([1; 8]);
        let mut doc = AutoCommit::new();
        for n in 0..(COMPACT_AFTER * 2 + 5) {
            let before = doc.get_heads();
            doc.put(automerge::ROOT, format!("k{n}"), n as i64).unwrap();
            doc.commit();
            store
                .save(&id, &mut doc, &before, &summary(), None)
                .unwrap();
        }
        let txn = store.db.begin_read().unwrap();
        let chunks = txn
            .open_table(DOC_CHUNKS)
            .unwrap()
            .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))
            .unwrap()
            .count() as u64;
        assert!(
            chunks < COMPACT_AFTER,
            "{chunks} chunks: compaction did not run"
        );
        let mut loaded = store.load(&id).unwrap().unwrap();
        assert_eq!(loaded.get_heads(), doc.get_heads());
        assert_eq!(
            automerge::ReadDoc::keys(&loaded, automerge::ROOT).count(),
            (COMPACT_AFTER * 2 + 5) as usize
        );
    }

    #[test]
    fn a_data_dir_belongs_to_one_office() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&dir.path().join("s.redb"), "hoboksar/t1").unwrap());
        let err = Store::open(&dir.path().join("s.redb"), "hoboksar/t2")
            .err()
            .unwrap();
        assert!(err.to_string().contains("separate data_dir"), "{err}");
    }
}
