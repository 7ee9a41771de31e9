//! The node's embedded, crash-safe store (redb): documents with the attestations of their
//! changes, their index, sync states, the certificates learned from peers, and the
//! quarantine of refused changes.
//!
//! A document is stored as chunks: chunk 0 is a compact save (automerge's, deflated in one
//! stream by the store: [`read_chunk`]), later chunks are
//! incremental saves of the changes since. Loading concatenates them (automerge reads such
//! a concatenation directly). After [`COMPACT_AFTER`] chunks the document is rewritten as
//! one chunk, so the store does not grow without bound. Every document write commits with
//! `Durability::Immediate` (fsync) before it returns, but for a session's received case
//! files ([`Store::save_unflushed`]), which are made durable together by one
//! [`Store::flush`] before anything of them is acknowledged (group commit). Sync-state-only
//! writes (a peer's acknowledgement) wait in memory and go in with the next flush, or
//! [`SYNC_STATES_WAITING`] at once: losing them costs a peer a longer next sync, never a
//! wrong one.
//!
//! The quarantine is bounded: a refused change is kept once per (document, change hash), or
//! once per (document, peer, reason) when it has no hash; a repeat only bumps the record's
//! `count`. At most [`QUARANTINE_MAX`] records are kept (the oldest go first), while exact
//! per-reason totals live in a table of their own. Document counts by kind and the
//! quarantine totals are also kept in memory, so `/metrics` never scans the store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, PoisonError, RwLock};

use amphi_protocol::DocId;
use amphi_protocol::attest::Attestation;
pub use amphi_protocol::office::{
    DocSummary, DocWrite, Evidence, Exit, Placement, QuarantineRecord, TransferLine,
};
use amphi_protocol::office::{Storage, StorageError};
use amphi_protocol::vouch::Proof;

use crate::trust::INCARNATION_BYTES;
use automerge::{AutoCommit, ChangeHash};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

/// (document id, chunk number) → automerge bytes.
const DOC_CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("doc_chunks");
/// document id → JSON [`DocSummary`].
const DOC_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_index");
/// (document id, peer org) → encoded automerge sync state.
const SYNC_STATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sync_states");
/// (document id, change hash) → encoded attestation (signature beside the change).
const ATTESTATIONS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("attestations");
/// (document id, change hash) → encoded [`Proof`] of a change held without its own signature
/// whose voucher is not applied here (see `amphi_protocol::vouch`).
const PROOFS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("proofs");
/// certificate id → certificate DER, for every author whose changes this node holds.
const CERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("certs");
/// sequence number → JSON [`QuarantineRecord`].
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
/// (document id, change hash hex) → quarantine sequence number.
const QUARANTINE_INDEX: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("quarantine_index");
/// (document id, peer, reason) → quarantine sequence number, for refusals without a hash.
const QUARANTINE_KEYS: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("quarantine_keys");
/// reason code → refused changes ever quarantined for it (exact, though records are dropped).
const QUARANTINE_TOTALS: TableDefinition<&str, u64> = TableDefinition::new("quarantine_totals");
/// small settings: the org this store belongs to.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Key in [`META`] of the store's format: the layout of its tables, as this build writes it.
const FORMAT_KEY: &str = "format";
/// The store format this build reads and writes. A store without [`FORMAT_KEY`] is format 1
/// (written before the key existed); a store of a higher format was written by a newer
/// build and is refused whole, before anything in it is read or changed.
pub const STORE_FORMAT: u32 = 1;

/// Key in [`META`] of the store's incarnation (hex).
const INCARNATION_KEY: &str = "incarnation";

/// redb's page cache, at most.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Quarantine records kept at most; beyond, the oldest are dropped (totals stay exact).
pub const QUARANTINE_MAX: u64 = 10_000;

/// Chunks a document may have before it is compacted into one.
pub const COMPACT_AFTER: u64 = 32;

/// Errors of the store. The database errors are boxed: they say what failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (a disk error, a full disk, a database another process holds, …).
    #[error("store: {0}")]
    Db(#[source] Box<redb::Error>),
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
    /// The store was written by a newer build, in a format this one cannot read.
    #[error(
        "the store is format {found}, written by a newer Amphi; this build reads formats up to {STORE_FORMAT}: run the newer binary (or restore a backup made by this version)"
    )]
    NewerFormat {
        /// The store's format.
        found: String,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
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

/// Documents held, counted by the store as summaries are written and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocCounts {
    /// Documents held by kind (`member`, `org`, `status`, `revocations`), not counting
    /// those kept only until others learn they left.
    pub by_kind: BTreeMap<String, u64>,
    /// Documents kept only until others learn they left (hidden from the API).
    pub leaving: u64,
    /// Unacknowledged conflicts in documents held.
    pub conflicts: u64,
}

impl DocCounts {
    fn add(&mut self, s: &DocSummary) {
        if s.leaving {
            self.leaving += 1;
        } else {
            *self.by_kind.entry(s.kind.label().to_owned()).or_default() += 1;
            self.conflicts += s.conflicts.len() as u64;
        }
    }

    fn remove(&mut self, s: &DocSummary) {
        if s.leaving {
            self.leaving = self.leaving.saturating_sub(1);
        } else {
            if let Some(n) = self.by_kind.get_mut(s.kind.label()) {
                *n = n.saturating_sub(1);
            }
            self.conflicts = self.conflicts.saturating_sub(s.conflicts.len() as u64);
        }
    }
}

/// A change of one document's summary inside a transaction: applied to the in-memory counts
/// and placements once the transaction has committed.
#[derive(Default)]
struct SummaryChanges(Vec<(DocId, Option<DocSummary>, Option<DocSummary>)>);

/// Passes each of a document's chunks, as the read transaction `txn` sees them and as stored
/// (deflated where the store deflated them), in order, to `each`.
fn for_each_chunk(
    txn: &redb::ReadTransaction,
    id: &DocId,
    mut each: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let table = txn.open_table(DOC_CHUNKS)?;
    for entry in table.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
        each(entry?.1.value())?;
    }
    Ok(())
}

/// A document's body as the read transaction `txn` sees it.
fn load_in(txn: &redb::ReadTransaction, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
    let mut bytes = Vec::new();
    for_each_chunk(txn, id, |stored| {
        let chunk = read_chunk(stored).map_err(|why| StoreError::Corrupt(id.to_string(), why))?;
        bytes.extend_from_slice(&chunk);
        Ok(())
    })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    decode_document(&bytes)
        .map(Some)
        .map_err(|why| StoreError::Corrupt(id.to_string(), why))
}

/// A document's summary as `txn` sees it.
fn summary_in(txn: &redb::ReadTransaction, id: &DocId) -> Result<Option<DocSummary>, StoreError> {
    let table = txn.open_table(DOC_INDEX)?;
    Ok(table
        .get(id.as_str())?
        .and_then(|v| serde_json::from_slice(v.value()).ok()))
}

/// The attestations `txn` holds for `changes` of `id` (those it has).
fn attestations_in(
    txn: &redb::ReadTransaction,
    id: &DocId,
    changes: &[ChangeHash],
) -> Result<Vec<Attestation>, StoreError> {
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

/// Refuses a store written in a newer format, reading only (nothing is created or changed).
fn check_format(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(found) = meta.get(FORMAT_KEY)?.map(|v| v.value().to_owned()) else {
        return Ok(());
    };
    match found.parse::<u32>() {
        Ok(n) if n <= STORE_FORMAT => Ok(()),
        _ => Err(StoreError::NewerFormat { found }),
    }
}

/// The node's store.
pub struct Store {
    db: Database,
    incarnation: [u8; INCARNATION_BYTES],
    counts: Mutex<DocCounts>,
    placements: RwLock<BTreeMap<DocId, Placement>>,
    totals: Mutex<BTreeMap<String, u64>>,
    /// Group commit: how many unflushed writes were committed, and how many of them a durable
    /// commit since covers ([`Store::flush`]).
    unflushed: AtomicU64,
    flushed: Mutex<u64>,
    /// Sync-state-only writes not yet in a transaction, by (document, peer).
    waiting_sync_states: Mutex<BTreeMap<(DocId, String), Vec<u8>>>,
}

/// Sync-state-only writes that wait in memory at most; then they are written together.
/// Writing each in a transaction of its own was 8 % of a sending county's CPU during a cold
/// replication (one per acknowledged case file).
pub const SYNC_STATES_WAITING: usize = 256;

impl Store {
    /// Opens (or creates) the store at `path`, checking it belongs to `org`.
    pub fn open(path: &Path, org: &str) -> Result<Store, StoreError> {
        // A bounded page cache: memory must not grow with the number of documents held.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        Store::on(db, org)
    }

    /// Opens the store at `path`, creating it first if there is none: a new store is made
    /// under a temporary name, synced, and only then renamed into place (with its folder
    /// synced). A power cut during creation therefore leaves no half-made store that redb
    /// would refuse to open ever after (found by the power-cut test: the file's length
    /// reached the disk, its header did not).
    pub fn open_or_create(path: &Path, org: &str) -> Result<Store, StoreError> {
        if !path.exists() {
            let io = |e: std::io::Error| {
                StoreError::Corrupt(path.display().to_string(), format!("creating: {e}"))
            };
            let fresh = path.with_extension("redb.new");
            match std::fs::remove_file(&fresh) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            drop(Store::open(&fresh, org)?);
            std::fs::File::open(&fresh)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&fresh, path).map_err(io)?;
            if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::node::sync_folder(folder).map_err(io)?;
            }
        }
        Store::open(path, org)
    }

    /// Opens (or creates) a store on any redb storage backend (the power-cut tests use one
    /// that loses what was not synced), checking it belongs to `org`.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        org: &str,
    ) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)?;
        Store::on(db, org)
    }

    fn on(db: Database, org: &str) -> Result<Store, StoreError> {
        check_format(&db)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(DOC_CHUNKS)?;
            txn.open_table(DOC_INDEX)?;
            txn.open_table(SYNC_STATES)?;
            txn.open_table(ATTESTATIONS)?;
            txn.open_table(PROOFS)?;
            txn.open_table(CERTS)?;
            txn.open_table(QUARANTINE)?;
            txn.open_table(QUARANTINE_INDEX)?;
            txn.open_table(QUARANTINE_KEYS)?;
            let mut totals = txn.open_table(QUARANTINE_TOTALS)?;
            if totals.is_empty()? {
                // A store from before the totals table: count the records it kept.
                for entry in txn.open_table(QUARANTINE)?.iter()? {
                    let (_, v) = entry?;
                    if let Ok(r) = serde_json::from_slice::<QuarantineRecord>(v.value()) {
                        let n = totals.get(r.reason.as_str())?.map_or(0, |v| v.value());
                        totals.insert(r.reason.as_str(), n + 1)?;
                    }
                }
            }
            drop(totals);
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
            if meta.get(FORMAT_KEY)?.is_none() {
                meta.insert(FORMAT_KEY, STORE_FORMAT.to_string().as_str())?;
            }
            if meta.get(INCARNATION_KEY)?.is_none() {
                let fresh = hex::encode(rand::random::<[u8; INCARNATION_BYTES]>());
                meta.insert(INCARNATION_KEY, fresh.as_str())?;
            }
        }
        txn.commit()?;
        let incarnation = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let stored = meta.get(INCARNATION_KEY)?.map(|v| v.value().to_owned());
            stored
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; INCARNATION_BYTES]>::try_from(b).ok())
                .ok_or_else(|| {
                    StoreError::Corrupt("meta".into(), "unreadable store incarnation".into())
                })?
        };
        // One scan at open; from here on the counts follow every summary written or removed.
        let mut counts = DocCounts::default();
        let mut placements = BTreeMap::new();
        let mut totals = BTreeMap::new();
        {
            let txn = db.begin_read()?;
            for entry in txn.open_table(DOC_INDEX)?.iter()? {
                let (k, v) = entry?;
                if let (Ok(id), Ok(summary)) = (
                    DocId::parse(k.value()),
                    serde_json::from_slice::<DocSummary>(v.value()),
                ) {
                    counts.add(&summary);
                    placements.insert(id, Placement::of(&summary));
                }
            }
            for entry in txn.open_table(QUARANTINE_TOTALS)?.iter()? {
                let (k, v) = entry?;
                totals.insert(k.value().to_owned(), v.value());
            }
        }
        Ok(Store {
            db,
            incarnation,
            counts: Mutex::new(counts),
            placements: RwLock::new(placements),
            totals: Mutex::new(totals),
            unflushed: AtomicU64::new(0),
            flushed: Mutex::new(0),
            waiting_sync_states: Mutex::new(BTreeMap::new()),
        })
    }

    /// This store's incarnation: drawn when the store is created and again when it is
    /// restored from a backup; the node's automerge actor ends with it
    /// ([`crate::trust::store_actor`]).
    pub fn incarnation(&self) -> [u8; INCARNATION_BYTES] {
        self.incarnation
    }

    /// Makes a store copied from a backup this office's live store: a new incarnation (so
    /// the node writes with an actor it never used) and no peer sync states (every peer is
    /// synced from scratch, which fetches what the office wrote after the backup). Durable
    /// when it returns.
    pub fn restored(self) -> Result<(), StoreError> {
        self.waiting_sync_states().clear();
        let txn = self.db.begin_write()?;
        {
            let fresh = hex::encode(rand::random::<[u8; INCARNATION_BYTES]>());
            txn.open_table(META)?
                .insert(INCARNATION_KEY, fresh.as_str())?;
            txn.delete_table(SYNC_STATES)?;
            txn.open_table(SYNC_STATES)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes a consistent copy of the whole store to a new file `out` while the store
    /// stays in use: every table is read in one read transaction (a snapshot) and written
    /// into a new store, which is synced and then linked into place (with its folder
    /// synced), so `out` is either complete or absent; an existing `out` is an error, never
    /// overwritten. Returns the documents copied.
    pub fn back_up_to(&self, out: &Path) -> Result<u64, StoreError> {
        let partial = out.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let copied = {
            let from = self.db.begin_read()?;
            let to_db = Database::builder().create(&partial)?;
            let to = to_db.begin_write()?;
            let documents = copy_table(&from, &to, DOC_INDEX)?;
            copy_table(&from, &to, DOC_CHUNKS)?;
            copy_table(&from, &to, SYNC_STATES)?;
            copy_table(&from, &to, ATTESTATIONS)?;
            copy_table(&from, &to, CERTS)?;
            copy_table(&from, &to, QUARANTINE)?;
            copy_table(&from, &to, QUARANTINE_INDEX)?;
            copy_table(&from, &to, QUARANTINE_KEYS)?;
            copy_table(&from, &to, QUARANTINE_TOTALS)?;
            copy_table(&from, &to, META)?;
            to.commit()?;
            documents
        };
        let io = |e: std::io::Error| StoreError::Corrupt(out.display().to_string(), e.to_string());
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        // A hard link fails if `out` exists: a backup never replaces a file.
        std::fs::hard_link(&partial, out).map_err(io)?;
        std::fs::remove_file(&partial).map_err(io)?;
        if let Some(folder) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::node::sync_folder(folder).map_err(io)?;
        }
        Ok(copied)
    }

    /// Commits `txn`, then applies the summary changes it made to the in-memory counts.
    fn commit(&self, txn: WriteTransaction, changes: SummaryChanges) -> Result<(), StoreError> {
        txn.commit()?;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut placements = self
            .placements
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, old, new) in changes.0 {
            if let Some(old) = old {
                counts.remove(&old);
            }
            match new {
                Some(new) => {
                    counts.add(&new);
                    placements.insert(id, Placement::of(&new));
                }
                None => {
                    placements.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// A document's placement (from memory), or `None` if the store does not hold it.
    pub fn placement(&self, id: &DocId) -> Option<Placement> {
        self.placements
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Calls `f` with every document's placement, in id order (from memory).
    pub fn for_each_placement(&self, mut f: impl FnMut(&DocId, &Placement)) {
        let placements = self
            .placements
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, p) in placements.iter() {
            f(id, p);
        }
    }

    /// Documents held by kind, leaving, and conflicts: kept in memory, no store access.
    pub fn doc_counts(&self) -> DocCounts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads a document, or `None` if the store does not hold it.
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StoreError> {
        load_in(&self.db.begin_read()?, id)
    }

    /// A document's chunks as stored, without loading it: what a sender could pass on as
    /// they are (read each with [`read_chunk`]). Empty: not held.
    pub fn stored_chunks(&self, id: &DocId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut chunks = Vec::new();
        for_each_chunk(&self.db.begin_read()?, id, |stored| {
            chunks.push(stored.to_vec());
            Ok(())
        })?;
        Ok(chunks)
    }

    /// A document as one read snapshot holds it: its body, its summary, and the attestations
    /// and proofs of its changes, none of them newer than the others (`None`: not held). What
    /// `amphi verify` checks while the node keeps writing.
    pub fn load_whole(&self, id: &DocId) -> Result<Option<Whole>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(mut doc) = load_in(&txn, id)? else {
            return Ok(None);
        };
        let Some(summary) = summary_in(&txn, id)? else {
            return Err(StoreError::Corrupt(
                id.to_string(),
                "has content but no summary".into(),
            ));
        };
        let hashes: Vec<ChangeHash> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        let attestations = attestations_in(&txn, id, &hashes)?;
        let table = txn.open_table(PROOFS)?;
        let mut proofs = HashMap::new();
        for h in &hashes {
            if let Some(v) = table.get((id.as_str(), &h.0[..]))? {
                let proof = Proof::decode(*h, v.value()).ok_or_else(|| {
                    StoreError::Corrupt(
                        id.to_string(),
                        format!("the proof of change {h} does not read"),
                    )
                })?;
                proofs.insert(*h, proof);
            }
        }
        Ok(Some(Whole {
            doc,
            summary,
            attestations,
            proofs,
        }))
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
        let write = DocWrite {
            id,
            doc,
            heads_before,
            summary,
            attestations,
            proofs: &[],
        };
        self.save_write(write, sync_state)
    }

    /// [`Store::save`], with the proofs of changes that came without their own signature.
    pub fn save_write(
        &self,
        write: DocWrite<'_>,
        sync_state: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        self.save_with(Durability::Immediate, write, sync_state)
    }

    /// [`Store::save_write`], committed without waiting for the disk: readers see it at once,
    /// but a power cut before the next [`Store::flush`] (or any other durable commit) loses it.
    /// The caller flushes before it acknowledges the write to anyone.
    pub fn save_unflushed(
        &self,
        write: DocWrite<'_>,
        sync_state: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        self.save_with(Durability::None, write, sync_state)?;
        self.unflushed.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(())
    }

    /// Makes every write committed before this call durable: one durable commit for all the
    /// unflushed writes made so far by every thread (group commit). Returns at once when a
    /// durable commit since has covered them; several callers at once wait for one commit.
    /// The sync states waiting go in with it (without forcing the disk if nothing else waits).
    pub fn flush(&self) -> Result<(), StoreError> {
        let wanted = self.unflushed.load(AtomicOrdering::SeqCst);
        let mut flushed = self.flushed.lock().unwrap_or_else(PoisonError::into_inner);
        let durable = *flushed < wanted;
        if !durable && self.waiting_sync_states().is_empty() {
            return Ok(());
        }
        // Read before the commit begins: every write counted here committed before it, so
        // the durable commit covers them (later ones may ride along uncounted).
        let covers = self.unflushed.load(AtomicOrdering::SeqCst);
        self.commit_waiting_sync_states(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        if durable {
            *flushed = covers;
        }
        Ok(())
    }

    fn waiting_sync_states(&self) -> std::sync::MutexGuard<'_, BTreeMap<(DocId, String), Vec<u8>>> {
        self.waiting_sync_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves every waiting sync state into `txn`.
    fn write_waiting_sync_states(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let waiting = std::mem::take(&mut *self.waiting_sync_states());
        if waiting.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(SYNC_STATES)?;
        for ((id, peer), state) in &waiting {
            table.insert((id.as_str(), peer.as_str()), state.as_slice())?;
        }
        Ok(())
    }

    /// Writes every waiting sync state in a transaction of their own.
    fn commit_waiting_sync_states(&self, durability: Durability) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        self.write_waiting_sync_states(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets the waiting sync states of a document whose stored ones are being dropped.
    fn drop_waiting_sync_states(&self, id: &DocId) {
        self.waiting_sync_states().retain(|(doc, _), _| doc != id);
    }

    fn save_with(
        &self,
        durability: Durability,
        write: DocWrite<'_>,
        sync_state: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        let id = write.id;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        let mut changes = SummaryChanges::default();
        save_in(&txn, write, &mut changes)?;
        if let Some((peer, state)) = sync_state {
            // This one is newer than any waiting for the same peer.
            self.waiting_sync_states()
                .remove(&(id.clone(), peer.to_owned()));
            txn.open_table(SYNC_STATES)?
                .insert((id.as_str(), peer), state)?;
        }
        self.commit(txn, changes)
    }

    /// Durably replaces a document that was rebuilt without some of its changes (an
    /// equivocation settled against them): its chunks become one compact save, the
    /// attestations and proofs of `removed` go (their evidence is in quarantine), `added`
    /// ones come, and every peer's sync state for it is dropped (it may name removed
    /// changes).
    pub fn replace(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        summary: &DocSummary,
        (added, proofs): (&[Attestation], &[Proof]),
        removed: &[ChangeHash],
    ) -> Result<(), StoreError> {
        self.drop_waiting_sync_states(id);
        let txn = self.db.begin_write()?;
        let mut changes = SummaryChanges::default();
        {
            let key = id.as_str();
            let mut chunks = txn.open_table(DOC_CHUNKS)?;
            chunks.retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
            chunks.insert((key, 0), whole_chunk(doc).as_slice())?;
            let json = serde_json::to_vec(summary).expect("summary serialises");
            let old = txn
                .open_table(DOC_INDEX)?
                .insert(key, json.as_slice())?
                .and_then(|v| serde_json::from_slice(v.value()).ok());
            changes.0.push((id.clone(), old, Some(summary.clone())));
            txn.open_table(SYNC_STATES)?
                .retain_in((key, "")..=(key, "\u{10ffff}"), |_, _| false)?;
            let mut table = txn.open_table(ATTESTATIONS)?;
            for h in removed {
                table.remove((key, &h.0[..]))?;
            }
            for a in added {
                table.insert((key, &a.change.0[..]), a.encode().as_slice())?;
            }
            let mut table = txn.open_table(PROOFS)?;
            for h in removed {
                table.remove((key, &h.0[..]))?;
            }
            for p in proofs {
                table.insert((key, &p.proves.0[..]), p.encode().as_slice())?;
            }
        }
        self.commit(txn, changes)
    }

    /// The attestations of the given changes of a document (those the store has).
    pub fn attestations(
        &self,
        id: &DocId,
        changes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StoreError> {
        attestations_in(&self.db.begin_read()?, id, changes)
    }

    /// The proof held for a change of a document, if any ([`Proof`]).
    pub fn proof(&self, id: &DocId, change: &ChangeHash) -> Result<Option<Proof>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PROOFS)?;
        let Some(v) = table.get((id.as_str(), &change.0[..]))? else {
            return Ok(None);
        };
        Proof::decode(*change, v.value()).map(Some).ok_or_else(|| {
            StoreError::Corrupt(
                id.to_string(),
                format!("the proof of change {change} does not read"),
            )
        })
    }

    /// Deletes a document that left this office's scope: its body, summary, sync states,
    /// attestations and proofs. Its quarantine records stay (evidence).
    pub fn purge(&self, id: &DocId) -> Result<(), StoreError> {
        self.purge_with(id, None)
    }

    /// Purges `id` and makes `also` (e.g. the roster's history line about it) in one durable
    /// transaction: a crash cannot leave one without the other.
    pub fn purge_with(&self, id: &DocId, also: Option<DocWrite<'_>>) -> Result<(), StoreError> {
        self.drop_waiting_sync_states(id);
        let txn = self.db.begin_write()?;
        let mut changes = SummaryChanges::default();
        {
            let key = id.as_str();
            txn.open_table(DOC_CHUNKS)?
                .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
            let old = txn
                .open_table(DOC_INDEX)?
                .remove(key)?
                .and_then(|v| serde_json::from_slice(v.value()).ok());
            changes.0.push((id.clone(), old, None));
            txn.open_table(SYNC_STATES)?
                .retain_in((key, "")..=(key, "\u{10ffff}"), |_, _| false)?;
            let all: &[u8] = &[0xff; 33];
            txn.open_table(ATTESTATIONS)?
                .retain_in((key, &[][..])..=(key, all), |_, _| false)?;
            txn.open_table(PROOFS)?
                .retain_in((key, &[][..])..=(key, all), |_, _| false)?;
        }
        if let Some(write) = also {
            save_in(&txn, write, &mut changes)?;
        }
        self.commit(txn, changes)
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

    /// Keeps a peer's sync state for a document: it waits in memory and is written with the
    /// next [`Store::flush`], or with the others once [`SYNC_STATES_WAITING`] wait, and
    /// reaches the disk with the next durable commit (losing it costs only a longer sync).
    pub fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StoreError> {
        let full = {
            let mut waiting = self.waiting_sync_states();
            waiting.insert((id.clone(), peer.to_owned()), state.to_vec());
            waiting.len() >= SYNC_STATES_WAITING
        };
        if full {
            self.commit_waiting_sync_states(Durability::None)?;
        }
        Ok(())
    }

    /// A peer's persisted sync state for a document (a waiting one first).
    pub fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(state) = self
            .waiting_sync_states()
            .get(&(id.clone(), peer.to_owned()))
        {
            return Ok(Some(state.clone()));
        }
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
        let old = txn
            .open_table(DOC_INDEX)?
            .insert(id.as_str(), json.as_slice())?
            .and_then(|v| serde_json::from_slice(v.value()).ok());
        let changes = SummaryChanges(vec![(id.clone(), old, Some(summary.clone()))]);
        self.commit(txn, changes)
    }

    /// One document's summary.
    pub fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StoreError> {
        summary_in(&self.db.begin_read()?, id)
    }

    /// Puts refused changes in quarantine (durably: they are evidence). A change already in
    /// quarantine for the document (same hash; or, without a hash, same peer and reason) is
    /// not added twice: its record's `count` and `last_at` are bumped. Beyond
    /// [`QUARANTINE_MAX`] records the oldest are dropped. Returns how many were new.
    pub fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        let mut added = BTreeMap::<String, u64>::new();
        {
            let mut table = txn.open_table(QUARANTINE)?;
            let mut index = txn.open_table(QUARANTINE_INDEX)?;
            let mut keys = txn.open_table(QUARANTINE_KEYS)?;
            let mut totals = txn.open_table(QUARANTINE_TOTALS)?;
            let mut next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            for r in records {
                let known = match &r.change {
                    Some(change) => index
                        .get((r.doc.as_str(), change.as_str()))?
                        .map(|v| v.value()),
                    None => keys
                        .get((r.doc.as_str(), r.peer.as_str(), r.reason.as_str()))?
                        .map(|v| v.value()),
                };
                let existing = match known {
                    Some(seq) => table
                        .get(seq)?
                        .and_then(|v| serde_json::from_slice::<QuarantineRecord>(v.value()).ok())
                        .map(|old| (seq, old)),
                    None => None,
                };
                if let Some((seq, mut old)) = existing {
                    old.count = old.count.max(1) + 1;
                    old.last_at = Some(r.at.clone());
                    let json = serde_json::to_vec(&old).expect("record serialises");
                    table.insert(seq, json.as_slice())?;
                    continue;
                }
                match &r.change {
                    Some(change) => index.insert((r.doc.as_str(), change.as_str()), next)?,
                    None => {
                        keys.insert((r.doc.as_str(), r.peer.as_str(), r.reason.as_str()), next)?
                    }
                };
                let mut record = r.clone();
                record.count = record.count.max(1);
                let json = serde_json::to_vec(&record).expect("record serialises");
                table.insert(next, json.as_slice())?;
                next += 1;
                let n = totals.get(r.reason.as_str())?.map_or(0, |v| v.value());
                totals.insert(r.reason.as_str(), n + 1)?;
                *added.entry(r.reason.clone()).or_default() += 1;
            }
            // Bounded: the oldest records go (their keys with them), the totals stay.
            while table.len()? > QUARANTINE_MAX {
                let Some(old) = table
                    .pop_first()?
                    .map(|(k, v)| (k.value(), v.value().to_vec()))
                else {
                    break;
                };
                let (seq, json) = old;
                let Ok(r) = serde_json::from_slice::<QuarantineRecord>(&json) else {
                    continue;
                };
                match &r.change {
                    Some(change) => {
                        let key = (r.doc.as_str(), change.as_str());
                        if index.get(key)?.is_some_and(|v| v.value() == seq) {
                            index.remove(key)?;
                        }
                    }
                    None => {
                        let key = (r.doc.as_str(), r.peer.as_str(), r.reason.as_str());
                        if keys.get(key)?.is_some_and(|v| v.value() == seq) {
                            keys.remove(key)?;
                        }
                    }
                }
            }
        }
        txn.commit()?;
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        for (reason, n) in &added {
            *totals.entry(reason.clone()).or_default() += n;
        }
        Ok(added.values().sum::<u64>() as usize)
    }

    /// Refused changes ever quarantined, by reason (exact, though old records are dropped):
    /// kept in memory, no store access.
    pub fn quarantine_totals(&self) -> BTreeMap<String, u64> {
        self.totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The newest `limit` quarantine records, newest first.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev() {
            if out.len() >= limit {
                break;
            }
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

/// Copies every entry of table `def` from a read snapshot into a write transaction;
/// returns how many.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = match from.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut target = to.open_table(def)?;
    let mut n = 0;
    for entry in source.iter()? {
        let (k, v) = entry?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Reads a stored document (its chunks concatenated). automerge's loader panics on some
/// damaged bytes (found by fuzzing), so it runs contained: a damaged document is an error
/// naming what failed, never a crash.
pub fn decode_document(bytes: &[u8]) -> Result<AutoCommit, String> {
    amphi_protocol::syncmsg::check_saved_document(bytes).map_err(|e| e.to_string())?;
    amphi_protocol::contain::contain("loading a stored document", || AutoCommit::load(bytes))
        .map_err(|fault| fault.to_string())?
        .map_err(|e| e.to_string())
}

/// The first bytes of a document chunk the store deflated itself ([`whole_chunk`]).
pub use amphi_protocol::whole::DEFLATED_CHUNK;
/// Most bytes a deflated chunk may inflate to.
const MAX_CHUNK_BYTES: usize = 64 << 20;

/// A whole document as one chunk, as the store writes a body: the form a case file is sent
/// whole in too ([`amphi_protocol::whole::deflated_document`]).
pub fn whole_chunk(doc: &mut AutoCommit) -> Vec<u8> {
    amphi_protocol::whole::deflated_document(doc)
}

/// A stored chunk as automerge reads it: inflated (at most [`MAX_CHUNK_BYTES`]) if the store
/// deflated it ([`whole_chunk`]), else as stored.
pub fn read_chunk(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    amphi_protocol::whole::inflate_chunk(stored, MAX_CHUNK_BYTES)
        .map_err(|e| format!("a deflated chunk does not inflate: {e:?}"))
}

/// A document as one read snapshot holds it ([`Store::load_whole`]).
pub struct Whole {
    /// Its body.
    pub doc: AutoCommit,
    /// Its summary.
    pub summary: DocSummary,
    /// The attestations of its changes (those it has).
    pub attestations: Vec<Attestation>,
    /// The proofs held for its changes, by the change they prove.
    pub proofs: HashMap<ChangeHash, Proof>,
}

/// Writes a document's new changes, summary and attestations inside `txn`.
fn save_in(
    txn: &WriteTransaction,
    write: DocWrite<'_>,
    changes: &mut SummaryChanges,
) -> Result<(), StoreError> {
    let DocWrite {
        id,
        doc,
        heads_before,
        summary,
        attestations,
        proofs,
    } = write;
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
            chunks.insert((id.as_str(), 0), whole_chunk(doc).as_slice())?;
        }
        None => {
            chunks.insert((id.as_str(), 0), whole_chunk(doc).as_slice())?;
        }
    }
    let json = serde_json::to_vec(summary).expect("summary serialises");
    let old = txn
        .open_table(DOC_INDEX)?
        .insert(id.as_str(), json.as_slice())?
        .and_then(|v| serde_json::from_slice(v.value()).ok());
    changes.0.push((id.clone(), old, Some(summary.clone())));
    let mut table = txn.open_table(ATTESTATIONS)?;
    for a in attestations {
        table.insert((id.as_str(), &a.change.0[..]), a.encode().as_slice())?;
    }
    let mut table = txn.open_table(PROOFS)?;
    for p in proofs {
        table.insert((id.as_str(), &p.proves.0[..]), p.encode().as_slice())?;
    }
    Ok(())
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> StorageError {
        match e {
            StoreError::Corrupt(id, why) => StorageError::Corrupt(id, why),
            other => StorageError::Backend(Box::new(other)),
        }
    }
}

impl From<StoreError> for amphi_protocol::office::WriteError {
    fn from(e: StoreError) -> Self {
        amphi_protocol::office::WriteError::Store(e.into())
    }
}

/// The office core's storage: the redb store, method for method.
impl Storage for Store {
    fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        Ok(Store::load(self, id)?)
    }
    fn summary(&self, id: &DocId) -> Result<Option<DocSummary>, StorageError> {
        Ok(Store::summary(self, id)?)
    }
    fn placement(&self, id: &DocId) -> Option<Placement> {
        Store::placement(self, id)
    }
    fn for_each_placement(&self, f: &mut dyn FnMut(&DocId, &Placement)) {
        Store::for_each_placement(self, f)
    }
    fn save(&self, w: DocWrite<'_>, sync: Option<(&str, &[u8])>) -> Result<(), StorageError> {
        Ok(Store::save_write(self, w, sync)?)
    }
    fn save_unflushed(
        &self,
        w: DocWrite<'_>,
        sync: Option<(&str, &[u8])>,
    ) -> Result<(), StorageError> {
        Ok(Store::save_unflushed(self, w, sync)?)
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(Store::flush(self)?)
    }
    fn replace(&self, w: DocWrite<'_>, dropped: &[ChangeHash]) -> Result<(), StorageError> {
        Ok(Store::replace(
            self,
            w.id,
            w.doc,
            w.summary,
            (w.attestations, w.proofs),
            dropped,
        )?)
    }
    fn set_summary(&self, id: &DocId, summary: &DocSummary) -> Result<(), StorageError> {
        Ok(Store::set_summary(self, id, summary)?)
    }
    fn purge_with(&self, id: &DocId, also: Option<DocWrite<'_>>) -> Result<(), StorageError> {
        Ok(Store::purge_with(self, id, also)?)
    }
    fn attestations(
        &self,
        id: &DocId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<Attestation>, StorageError> {
        Ok(Store::attestations(self, id, hashes)?)
    }
    fn proof(&self, id: &DocId, change: &ChangeHash) -> Result<Option<Proof>, StorageError> {
        Ok(Store::proof(self, id, change)?)
    }
    fn save_sync_state(&self, id: &DocId, peer: &str, state: &[u8]) -> Result<(), StorageError> {
        Ok(Store::save_sync_state(self, id, peer, state)?)
    }
    fn sync_state(&self, id: &DocId, peer: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(Store::sync_state(self, id, peer)?)
    }
    fn quarantine(&self, records: &[QuarantineRecord]) -> Result<usize, StorageError> {
        Ok(Store::quarantine(self, records)?)
    }
    fn quarantined_changes(&self, id: &DocId) -> Result<Vec<ChangeHash>, StorageError> {
        Ok(Store::quarantined_changes(self, id)?)
    }
}

/// A node that stops keeps what its peers acknowledged: the sync states still waiting are
/// written, durably.
impl Drop for Store {
    fn drop(&mut self) {
        if self.waiting_sync_states().is_empty() {
            return;
        }
        if let Err(e) = self.commit_waiting_sync_states(Durability::Immediate) {
            tracing::warn!(error = %e, "the peers' latest sync states were not written; the next syncs check more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amphi_protocol::{DocKind, OrgPath};
    use automerge::transaction::Transactable;

    fn summary() -> DocSummary {
        DocSummary {
            kind: DocKind::Member,
            name: String::new(),
            home_org: None,
            residence_org: None,
            scope: vec![],
            digest: [0; 16],
            heads: vec![],
            exits: vec![],
            leaving: false,
            confirmed: vec![],
            awaiting_upstream: false,
            held_as: None,
            transfers: vec![],
            conflicts: vec![],
            last_seen: None,
        }
    }

    /// The sync state the store's table holds, not counting one waiting in memory.
    fn written_sync_state(store: &Store, id: &DocId, peer: &str) -> Option<Vec<u8>> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(SYNC_STATES).unwrap();
        table
            .get((id.as_str(), peer))
            .unwrap()
            .map(|v| v.value().to_vec())
    }

    const PEER: &str = "hoboksar/tw01";

    #[test]
    fn an_acknowledgement_s_sync_state_waits_for_the_next_flush_and_is_read_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([1; 8]);
        store.save_sync_state(&id, PEER, b"acknowledged").unwrap();
        assert_eq!(written_sync_state(&store, &id, PEER), None);
        assert_eq!(
            store.sync_state(&id, PEER).unwrap().as_deref(),
            Some(&b"acknowledged"[..])
        );
        store.flush().unwrap();
        assert_eq!(
            written_sync_state(&store, &id, PEER).as_deref(),
            Some(&b"acknowledged"[..])
        );
    }

    #[test]
    fn sync_states_are_written_together_once_enough_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let ids: Vec<DocId> = (0..SYNC_STATES_WAITING)
            .map(|n| DocId::new_member((n as u64).to_be_bytes()))
            .collect();
        for id in &ids[..SYNC_STATES_WAITING - 1] {
            store.save_sync_state(id, PEER, b"s").unwrap();
        }
        assert_eq!(written_sync_state(&store, &ids[0], PEER), None);
        store
            .save_sync_state(&ids[SYNC_STATES_WAITING - 1], PEER, b"s")
            .unwrap();
        for id in &ids {
            assert!(
                written_sync_state(&store, id, PEER).is_some(),
                "{id} not written"
            );
        }
    }

    #[test]
    fn a_purged_document_s_waiting_sync_state_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let id = DocId::new_member([2; 8]);
        {
            let store = Store::open(&path, "hoboksar").unwrap();
            let mut doc = AutoCommit::new();
            doc.put(automerge::ROOT, "n", 1).unwrap();
            doc.commit();
            store
                .save(&id, &mut doc, &[], &summary(), &[], None)
                .unwrap();
            store
                .save_sync_state(&id, PEER, b"before the purge")
                .unwrap();
            store.purge(&id).unwrap();
            assert_eq!(store.sync_state(&id, PEER).unwrap(), None);
            store.flush().unwrap();
        }
        let store = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(store.sync_state(&id, PEER).unwrap(), None);
    }

    #[test]
    fn a_store_closed_writes_its_waiting_sync_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let id = DocId::new_member([3; 8]);
        {
            let store = Store::open(&path, "hoboksar").unwrap();
            store.save_sync_state(&id, PEER, b"at shutdown").unwrap();
        }
        let store = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(
            written_sync_state(&store, &id, PEER).as_deref(),
            Some(&b"at shutdown"[..])
        );
    }

    #[test]
    fn a_sync_state_written_with_its_document_is_not_overwritten_by_an_older_waiting_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([4; 8]);
        store.save_sync_state(&id, PEER, b"older").unwrap();
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "n", 1).unwrap();
        doc.commit();
        store
            .save(
                &id,
                &mut doc,
                &[],
                &summary(),
                &[],
                Some((PEER, &b"newer"[..])),
            )
            .unwrap();
        store.flush().unwrap();
        assert_eq!(
            store.sync_state(&id, PEER).unwrap().as_deref(),
            Some(&b"newer"[..])
        );
        assert_eq!(
            written_sync_state(&store, &id, PEER).as_deref(),
            Some(&b"newer"[..])
        );
    }

    /// A document of `keys` keys, each put and stored on its own.
    fn saved_one_key_at_a_time(store: &Store, id: &DocId, keys: u64) -> AutoCommit {
        let mut doc = AutoCommit::new();
        for n in 0..keys {
            let before = doc.get_heads();
            doc.put(automerge::ROOT, format!("k{n}"), n as i64).unwrap();
            doc.commit();
            store
                .save(id, &mut doc, &before, &summary(), &[], None)
                .unwrap();
        }
        doc
    }

    #[test]
    fn many_small_writes_are_compacted_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([1; 8]);
        let mut doc = saved_one_key_at_a_time(&store, &id, COMPACT_AFTER * 2 + 5);
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

    /// What a sender could pass on without loading: the whole body and the increments after
    /// it, as stored, which read back as the document.
    #[test]
    fn stored_chunks_read_back_as_the_document_without_loading_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([2; 8]);
        assert!(store.stored_chunks(&id).unwrap().is_empty());
        let mut doc = saved_one_key_at_a_time(&store, &id, 3);
        let chunks = store.stored_chunks(&id).unwrap();
        assert_eq!(chunks.len(), 3, "a body and two increments");
        assert!(
            chunks[0].starts_with(DEFLATED_CHUNK),
            "the body as the store deflated it"
        );
        let mut plain = Vec::new();
        for chunk in &chunks {
            plain.extend_from_slice(&read_chunk(chunk).unwrap());
        }
        assert_eq!(
            decode_document(&plain).unwrap().get_heads(),
            doc.get_heads()
        );
    }

    /// Sessions receive several case files at once: their writes meet in the store.
    #[test]
    fn writes_from_many_threads_at_once_are_each_durable_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (threads, per_thread) = (4u8, 25u8);
        let mut written = Vec::new();
        {
            let store = Store::open(&path, "hoboksar").unwrap();
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let store = &store;
                        scope.spawn(move || {
                            let mut mine = Vec::new();
                            for n in 0..per_thread {
                                let id = DocId::new_member([t, n, 0, 0, 0, 0, 0, 1]);
                                let mut doc = AutoCommit::new();
                                doc.put(automerge::ROOT, "n", i64::from(n)).unwrap();
                                doc.commit();
                                store
                                    .save(&id, &mut doc, &[], &summary(), &[], None)
                                    .unwrap();
                                mine.push((id, doc.get_heads()));
                            }
                            mine
                        })
                    })
                    .collect();
                for w in workers {
                    written.extend(w.join().unwrap());
                }
            });
            assert_eq!(
                store.doc_counts().by_kind.get("member"),
                Some(&u64::from(threads * per_thread))
            );
        }
        let store = Store::open(&path, "hoboksar").unwrap();
        for (id, heads) in &written {
            let mut doc = store
                .load(id)
                .unwrap()
                .expect("every acknowledged write is stored");
            assert_eq!(&doc.get_heads(), heads);
        }
        assert_eq!(store.summaries().unwrap().len(), written.len());
    }

    fn refused(doc: &DocId, change: Option<u64>, peer: &str, reason: &str) -> QuarantineRecord {
        QuarantineRecord {
            at: "2026-11-02T10:00:00Z".into(),
            peer: peer.into(),
            doc: doc.to_string(),
            change: change.map(|n| format!("{n:064x}")),
            reason: reason.into(),
            message: "refused".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeated_refusal_bumps_one_record_instead_of_adding_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let doc = DocId::new_member([1; 8]);
        let peer = "hoboksar/t1";
        assert_eq!(
            store
                .quarantine(&[refused(&doc, Some(7), peer, "bad_signature")])
                .unwrap(),
            1
        );
        let mut again = refused(&doc, Some(7), peer, "bad_signature");
        again.at = "2026-11-03T10:00:00Z".into();
        assert_eq!(store.quarantine(&[again]).unwrap(), 0);
        // Without a hash: one record per (document, peer, reason).
        let unreadable = || refused(&doc, None, peer, "malformed");
        assert_eq!(
            store
                .quarantine(&[unreadable(), unreadable(), unreadable()])
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .quarantine(&[refused(&doc, None, "hoboksar/t2", "malformed")])
                .unwrap(),
            1,
            "another peer's refusal is its own record"
        );
        let records = store.quarantined(100).unwrap();
        assert_eq!(records.len(), 3);
        let signed = records.iter().find(|r| r.change.is_some()).unwrap();
        assert_eq!(signed.count, 2);
        assert_eq!(signed.last_at.as_deref(), Some("2026-11-03T10:00:00Z"));
        let malformed = records
            .iter()
            .find(|r| r.reason == "malformed" && r.peer == peer)
            .unwrap();
        assert_eq!(malformed.count, 3);
        assert_eq!(
            store.quarantine_totals(),
            BTreeMap::from([("bad_signature".into(), 1), ("malformed".into(), 2)])
        );
    }

    #[test]
    fn the_quarantine_keeps_the_newest_records_and_exact_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, "hoboksar").unwrap();
        let doc = DocId::new_member([2; 8]);
        let flood: Vec<QuarantineRecord> = (0..QUARANTINE_MAX + 5)
            .map(|n| refused(&doc, Some(n), "hoboksar/t1", "not_home_authority"))
            .collect();
        assert_eq!(store.quarantine(&flood).unwrap(), flood.len());
        store
            .quarantine(&[refused(&doc, Some(1_000_000), "hoboksar/t1", "unsigned")])
            .unwrap();
        let kept = store.quarantined(usize::MAX).unwrap();
        assert_eq!(kept.len() as u64, QUARANTINE_MAX);
        assert_eq!(kept[0].reason, "unsigned", "newest first");
        let oldest_kept = format!("{:064x}", 6);
        assert_eq!(kept.last().unwrap().change.as_deref(), Some(&*oldest_kept));
        let hashes = store.quarantined_changes(&doc).unwrap();
        assert_eq!(hashes.len() as u64, QUARANTINE_MAX, "keys go with records");
        let expected = BTreeMap::from([
            ("not_home_authority".into(), QUARANTINE_MAX + 5),
            ("unsigned".into(), 1),
        ]);
        assert_eq!(store.quarantine_totals(), expected);
        drop(store);
        let store = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(store.quarantine_totals(), expected, "totals are durable");
    }

    #[test]
    fn records_written_before_counts_existed_still_read() {
        let old = r#"{"at":"2026-01-01T00:00:00Z","peer":"hoboksar/t1","doc":"m-0101010101010101","change":null,"author":null,"reason":"malformed","message":"x"}"#;
        let r: QuarantineRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (r.count, r.last_at, r.cert, r.evidence),
            (1, None, None, None)
        );
    }

    #[test]
    fn document_counts_follow_saves_and_purges_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path, "hoboksar").unwrap();
        let save = |n: u8, kind: DocKind, leaving: bool, conflicts: usize| {
            let id = DocId::new_member([n; 8]);
            let mut doc = AutoCommit::new();
            doc.put(automerge::ROOT, "n", n as i64).unwrap();
            let s = DocSummary {
                kind,
                leaving,
                conflicts: vec!["c".into(); conflicts],
                ..summary()
            };
            store.save(&id, &mut doc, &[], &s, &[], None).unwrap();
            id
        };
        let a = save(1, DocKind::Member, false, 0);
        save(2, DocKind::Member, false, 2);
        save(3, DocKind::OrgRoster, false, 0);
        let d = save(4, DocKind::Member, true, 0);
        let counts = store.doc_counts();
        assert_eq!(counts.by_kind["member"], 2);
        assert_eq!(counts.by_kind["org"], 1);
        assert_eq!((counts.leaving, counts.conflicts), (1, 2));
        // A document that starts leaving moves from its kind to `leaving`; a purge removes it.
        let mut s = store.summary(&a).unwrap().unwrap();
        s.leaving = true;
        store.set_summary(&a, &s).unwrap();
        store.purge(&d).unwrap();
        let counts = store.doc_counts();
        assert_eq!((counts.by_kind["member"], counts.leaving), (1, 1));
        // Placements (what inventories are served from) follow the same writes.
        let mut moved = store.summary(&a).unwrap().unwrap();
        moved.scope = vec![OrgPath::parse("hoboksar/t1").unwrap()];
        moved.digest = [0x11; 16];
        store
            .replace(&a, &mut AutoCommit::new(), &moved, (&[], &[]), &[])
            .unwrap();
        assert_eq!(store.placement(&a), Some(Placement::of(&moved)));
        assert_eq!(store.placement(&d), None, "purged");
        let mut held = Vec::new();
        store.for_each_placement(|id, p| held.push((id.clone(), p.clone())));
        drop(store);
        let reopened = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(reopened.doc_counts(), counts, "one scan at open agrees");
        let mut again = Vec::new();
        reopened.for_each_placement(|id, p| again.push((id.clone(), p.clone())));
        assert_eq!(again, held, "placements rebuilt at open agree");
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn a_damaged_stored_document_is_an_error_not_a_crash() {
        // Found by the store_records fuzz target: bytes on which automerge's loader panics.
        let damaged =
            include_bytes!("../../fuzz/artifacts/store_records/contained-document-column-decoder");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let id = DocId::new_member([9; 8]);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(DOC_CHUNKS)
            .unwrap()
            .insert((id.as_str(), 0), &damaged[..])
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(store.load(&id), Err(StoreError::Corrupt(..))));
    }

    #[test]
    fn a_whole_document_is_stored_deflated_and_earlier_builds_chunks_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), "hoboksar").unwrap();
        let mut doc = AutoCommit::new();
        for n in 0..200 {
            doc.put(automerge::ROOT, format!("activity-{n:04}"), "village study")
                .unwrap();
        }
        doc.commit();
        let chunk0 = |store: &Store, id: &DocId| -> Vec<u8> {
            let txn = store.db.begin_read().unwrap();
            let table = txn.open_table(DOC_CHUNKS).unwrap();
            table
                .get((id.as_str(), 0))
                .unwrap()
                .unwrap()
                .value()
                .to_vec()
        };
        let written = DocId::new_member([1; 8]);
        store
            .save(&written, &mut doc, &[], &summary(), &[], None)
            .unwrap();
        let stored = chunk0(&store, &written);
        assert!(stored.starts_with(DEFLATED_CHUNK));
        assert!(stored.len() < doc.save_nocompress().len() / 2, "deflated");
        assert_eq!(
            store.load(&written).unwrap().unwrap().get_heads(),
            doc.get_heads()
        );
        // A chunk as builds before this one wrote it: automerge's own save, read as it is.
        let earlier = DocId::new_member([2; 8]);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(DOC_CHUNKS)
            .unwrap()
            .insert((earlier.as_str(), 0), doc.save().as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(
            store.load(&earlier).unwrap().unwrap().get_heads(),
            doc.get_heads()
        );
        // A deflated chunk that does not inflate, or inflates to damage, is the store's
        // damage, not a crash.
        let id = DocId::new_member([3; 8]);
        for bad in [
            &stored[..stored.len() - 8],
            &[DEFLATED_CHUNK as &[u8], &[1, 2, 3]].concat(),
        ] {
            let txn = store.db.begin_write().unwrap();
            txn.open_table(DOC_CHUNKS)
                .unwrap()
                .insert((id.as_str(), 0), bad)
                .unwrap();
            txn.commit().unwrap();
            assert!(matches!(store.load(&id), Err(StoreError::Corrupt(..))));
        }
    }

    #[test]
    fn a_store_says_its_format_and_a_newer_one_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let meta_format = |db: &Database| {
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            meta.get(FORMAT_KEY).unwrap().map(|v| v.value().to_owned())
        };
        let store = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(meta_format(&store.db), Some(STORE_FORMAT.to_string()));
        // A store from a newer build: refused with a message naming both formats.
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, "7")
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        let err = Store::open(&path, "hoboksar")
            .err()
            .expect("format 7 is refused");
        let said = err.to_string();
        assert!(matches!(err, StoreError::NewerFormat { .. }));
        assert!(
            said.contains("format 7") && said.contains("up to 1"),
            "{said}"
        );
        // ... and left exactly as it was.
        let db = Database::open(&path).unwrap();
        assert_eq!(meta_format(&db), Some("7".into()));
        drop(db);
        // A store from before the key existed is format 1 and gets the key.
        let txn = Database::open(&path).unwrap().begin_write().unwrap();
        txn.open_table(META).unwrap().remove(FORMAT_KEY).unwrap();
        txn.commit().unwrap();
        let store = Store::open(&path, "hoboksar").unwrap();
        assert_eq!(meta_format(&store.db), Some("1".into()));
    }

    #[test]
    fn a_store_appears_whole_or_not_at_all_and_a_half_made_one_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amphi.redb");
        // What a power cut during a first start can leave: a new file with no valid header.
        std::fs::write(path.with_extension("redb.new"), vec![0u8; 4096]).unwrap();
        let store = Store::open_or_create(&path, "hoboksar").unwrap();
        assert!(path.exists() && !path.with_extension("redb.new").exists());
        let incarnation = store.incarnation();
        drop(store);
        // An existing store is opened, never made again.
        let again = Store::open_or_create(&path, "hoboksar").unwrap();
        assert_eq!(again.incarnation(), incarnation);
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
