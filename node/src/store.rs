//! The node's embedded, crash-safe store (redb): documents with the attestations of their
//! changes, their index, sync states, the certificates learned from peers, and the
//! quarantine of refused changes.
//!
//! A document is stored as chunks: chunk 0 is a compact `save()`, later chunks are
//! incremental saves of the changes since. Loading concatenates them (automerge reads such
//! a concatenation directly). After [`COMPACT_AFTER`] chunks the document is rewritten as
//! one chunk, so the store does not grow without bound. Every document write commits with
//! `Durability::Immediate` (fsync) before it returns; sync-state-only writes ride along with
//! the next durable commit.

use std::path::Path;

use amphi_protocol::DocId;
use amphi_protocol::attest::Attestation;
use automerge::{AutoCommit, ChangeHash};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// (document id, chunk number) → automerge bytes.
const DOC_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("doc_chunks");
/// document id → JSON [`DocSummary`].
const DOC_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_index");
/// (document id, peer org) → encoded automerge sync state.
const SYNC_STATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sync_states");
/// (document id, change hash) → encoded attestation (signature beside the change).
const ATTESTATIONS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("attestations");
/// certificate id → certificate DER, for every author whose changes this node holds.
const CERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("certs");
/// sequence number → JSON [`QuarantineRecord`].
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
/// (document id, change hash hex) → quarantine sequence number.
const QUARANTINE_INDEX: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("quarantine_index");
/// small settings: the org this store belongs to.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// redb's page cache, at most.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Orgs that left the document's scope, with the heads at which they left: their offices
    /// may still sync up to those heads, so they learn that they left (and purge).
    #[serde(default)]
    pub exits: Vec<Exit>,
    /// The document left this office's scope, but an office below may still hold it: it is
    /// kept (hidden from the API) until the child on the way there confirms it left too.
    #[serde(default)]
    pub leaving: bool,
    /// Children that confirmed they no longer hold the document.
    #[serde(default)]
    pub confirmed: Vec<String>,
    /// This office's own write took the document out of its scope: it is kept until a peer
    /// that still holds it has the write.
    #[serde(default)]
    pub awaiting_upstream: bool,
    /// Transfers of a case file: id, from, to, resolved state.
    #[serde(default)]
    pub transfers: Vec<TransferLine>,
    /// Ids of conflicts not yet acknowledged.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Latest date of any activity, contact or report-in (YYYY-MM-DD).
    #[serde(default)]
    pub last_seen: Option<String>,
}

/// One transfer, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLine {
    /// `t-…`.
    pub id: String,
    /// The home it left from.
    pub from_org: String,
    /// The target.
    pub to_org: String,
    /// Resolved state.
    pub state: String,
}

/// An org that left a document's scope, and the document's heads (hex) when it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The org.
    pub org: String,
    /// Heads at the exit.
    pub heads: Vec<String>,
}

/// One refused change, kept in quarantine: never applied, never forwarded.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The node's store.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store at `path`, checking it belongs to `org`.
    pub fn open(path: &Path, org: &str) -> Result<Store, StoreError> {
        // A bounded page cache: memory must not grow with the number of documents held.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(DOC_CHUNKS)?;
            txn.open_table(DOC_INDEX)?;
            txn.open_table(SYNC_STATES)?;
            txn.open_table(ATTESTATIONS)?;
            txn.open_table(CERTS)?;
            txn.open_table(QUARANTINE)?;
            txn.open_table(QUARANTINE_INDEX)?;
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
    /// their attestations, the document's new summary and, optionally, a peer's sync state.
    pub fn save(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        heads_before: &[ChangeHash],
        summary: &DocSummary,
        attestations: &[Attestation],
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
            let mut table = txn.open_table(ATTESTATIONS)?;
            for a in attestations {
                table.insert((id.as_str(), &a.change.0[..]), a.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Durably replaces a document that was rebuilt without some of its changes (an
    /// equivocation settled against them): its chunks become one compact save, the
    /// attestations of `removed` go (their evidence is in quarantine), `added` ones come,
    /// and every peer's sync state for it is dropped (it may name removed changes).
    pub fn replace(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        summary: &DocSummary,
        added: &[Attestation],
        removed: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let key = id.as_str();
            let mut chunks = txn.open_table(DOC_CHUNKS)?;
            chunks.retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
            chunks.insert((key, 0), doc.save().as_slice())?;
            let json = serde_json::to_vec(summary).expect("summary serialises");
            txn.open_table(DOC_INDEX)?.insert(key, json.as_slice())?;
            txn.open_table(SYNC_STATES)?
                .retain_in((key, "")..=(key, "\u{10ffff}"), |_, _| false)?;
            let mut table = txn.open_table(ATTESTATIONS)?;
            for h in removed {
                table.remove((key, &h.0[..]))?;
            }
            for a in added {
                table.insert((key, &a.change.0[..]), a.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The attestations of the given changes of a document (those the store has).
    pub fn attestations(
        &self,
        id: &DocId,
        changes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ATTESTATIONS)?;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            if let Some(v) = table.get((id.as_str(), &c.0[..]))?
                && let Some(a) = Attestation::decode(v.value())
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Deletes a document that left this office's scope: its body, summary, sync states and
    /// attestations. Its quarantine records stay (evidence).
    pub fn purge(&self, id: &DocId) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let key = id.as_str();
            txn.open_table(DOC_CHUNKS)?
                .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
            txn.open_table(DOC_INDEX)?.remove(key)?;
            txn.open_table(SYNC_STATES)?
                .retain_in((key, "")..=(key, "\u{10ffff}"), |_, _| false)?;
            let all: &[u8] = &[0xff; 33];
            txn.open_table(ATTESTATIONS)?
                .retain_in((key, &[][..])..=(key, all), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Remembers a certificate learned from a peer.
    pub fn save_certificate(&self, id: &[u8; 32], der: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(CERTS)?.insert(&id[..], der)?;
        txn.commit()?;
        Ok(())
    }

    /// Every certificate learned (DER).
    pub fn certificates(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CERTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(entry?.1.value().to_vec());
        }
        Ok(out)
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

    /// Replaces a document's summary (durably).
    pub fn set_summary(&self, id: &DocId, summary: &DocSummary) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let json = serde_json::to_vec(summary).expect("summary serialises");
        txn.open_table(DOC_INDEX)?
            .insert(id.as_str(), json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// One document's summary.
    pub fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_INDEX)?;
        Ok(table
            .get(id.as_str())?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Puts refused changes in quarantine (durably: they are evidence). A change already in
    /// quarantine for the document is not added twice. Returns how many were new.
    pub fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        let mut added = 0;
        {
            let mut table = txn.open_table(QUARANTINE)?;
            let mut index = txn.open_table(QUARANTINE_INDEX)?;
            let mut next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            for r in records {
                if let Some(change) = &r.change {
                    if index.get((r.doc.as_str(), change.as_str()))?.is_some() {
                        continue;
                    }
                    index.insert((r.doc.as_str(), change.as_str()), next)?;
                }
                let json = serde_json::to_vec(r).expect("record serialises");
                table.insert(next, json.as_slice())?;
                next += 1;
                added += 1;
            }
        }
        txn.commit()?;
        Ok(added)
    }

    /// The quarantine, oldest first.
    pub fn quarantined(&self) -> Result<Vec<QuarantineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Hashes of a document's quarantined changes (never to be asked for again).
    pub fn quarantined_changes(&self, id: &DocId) -> Result<Vec<ChangeHash>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(QUARANTINE_INDEX)?;
        let mut out = Vec::new();
        for entry in index.range((id.as_str(), "")..=(id.as_str(), "\u{10ffff}"))? {
            let (k, _) = entry?;
            if let Ok(h) = k.value().1.parse() {
                out.push(h);
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
            exits: vec![],
            ..Default::default()
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
                .save(&id, &mut doc, &before, &summary(), &[], None)
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
