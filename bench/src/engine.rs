//! B0, the engine's own limit (automerge's sync protocol in one process, no gate, no store,
//! no network), and a per-document cost model of what a node adds on top of it.
//!
//! B0 is measured twice. As automerge speaks by default, a peer that holds nothing of a
//! document is sent the whole saved document, which it loads: the baseline. A node
//! cannot take a peer's document so: automerge 0.12 inflates its compressed columns without a
//! limit and does not check the order of its ops (`amphi_protocol::whole`), so the gate takes
//! every change on its own and applies it. *B0 as changes* is automerge's sync speaking only
//! version-1 messages, as a node's peers do: every change sent, decoded and applied by
//! automerge itself. It is what the engine costs on the path a node must take.

use std::path::Path;
use std::time::{Duration, Instant};

use amphi_node::peer::GROUP_COMMIT;
use amphi_node::repo::summarise;
use amphi_node::store::{DocSummary, DocWrite, Store};
use amphi_node::trust::Trust;
use amphi_protocol::attest::Attestation;
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::Inbound;
use amphi_protocol::{DocId, OrgPath, gate};
use anyhow::Context;
use automerge::AutoCommit;
use automerge::sync::{Message, State, SyncDoc};
use serde::Serialize;

use crate::progress::Progress;

/// B0: a full sync of each document to an empty peer.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSync {
    /// Documents synced.
    pub docs: usize,
    /// Time in sync (generate, encode, decode, receive on both sides), seconds.
    pub seconds: f64,
    /// Documents per second, one thread.
    pub docs_per_s: f64,
    /// Encoded sync messages, both directions, bytes.
    pub bytes: u64,
    /// Bytes per document.
    pub bytes_per_doc: f64,
    /// Messages per document, both directions.
    pub messages_per_doc: f64,
    /// Time to load the documents from the store first (not counted above), seconds, both
    /// ways together.
    pub load_seconds: f64,
}

/// How B0's two peers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaking {
    /// As automerge does by default: a peer that holds nothing is sent the whole document
    /// (version-2 messages), which it loads.
    Automerge,
    /// Version-1 messages only, as a node's peers speak: every change is sent and applied.
    Changes,
}

/// Syncs `doc` into an empty document with automerge's protocol, its peers speaking as
/// `speaking` says; returns (bytes, messages).
fn full_sync(doc: &mut AutoCommit, speaking: Speaking) -> anyhow::Result<(u64, u64)> {
    sync_as(
        speaking,
        doc,
        &mut AutoCommit::new(),
        State::new(),
        State::new(),
    )
}

/// Syncs two documents with automerge's protocol from the given sync states of `a` and of
/// `b`, `a` speaking first; returns (bytes of encoded messages both ways, messages).
pub fn sync_pair_from(
    a: &mut AutoCommit,
    b: &mut AutoCommit,
    ours: State,
    theirs: State,
) -> anyhow::Result<(u64, u64)> {
    sync_as(Speaking::Automerge, a, b, ours, theirs)
}

/// [`sync_pair_from`], the peers speaking as `speaking` says.
fn sync_as(
    speaking: Speaking,
    a: &mut AutoCommit,
    b: &mut AutoCommit,
    mut ours: State,
    mut theirs: State,
) -> anyhow::Result<(u64, u64)> {
    let spoken = |m: Message| match speaking {
        Speaking::Automerge => m,
        // Without its capability flags, a peer is never sent a whole document.
        Speaking::Changes => amphi_protocol::syncmsg::as_changes(m),
    };
    let (mut bytes, mut messages) = (0u64, 0u64);
    loop {
        let mut progressed = false;
        if let Some(m) = a.sync().generate_sync_message(&mut ours).map(spoken) {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            messages += 1;
            b.sync()
                .receive_sync_message(&mut theirs, Message::decode(&encoded)?)?;
            progressed = true;
        }
        if let Some(m) = b.sync().generate_sync_message(&mut theirs).map(spoken) {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            messages += 1;
            a.sync()
                .receive_sync_message(&mut ours, Message::decode(&encoded)?)?;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    anyhow::ensure!(
        a.get_heads() == b.get_heads(),
        "engine sync ended with different heads"
    );
    Ok((bytes, messages))
}

/// Every `step`-th id, so that a sample spreads over the whole county.
pub fn sample(ids: &[DocId], n: usize) -> Vec<DocId> {
    let step = (ids.len() / n.max(1)).max(1);
    ids.iter().step_by(step).take(n).cloned().collect()
}

/// B0 over `ids`, one thread, both ways: as automerge speaks and as changes. Each way syncs
/// a document loaded for it alone. A clone of one loaded document would load it once, but
/// it is not what a node holds: at 2,000 members B0 as automerge speaks ran at 1,382–1,564
/// docs/s from clones against 2,154–2,297 from loads (three runs and two), which would
/// flatter every ratio to B0.
pub fn engine_sync(store: &Store, ids: &[DocId]) -> anyhow::Result<[EngineSync; 2]> {
    let ways = [Speaking::Automerge, Speaking::Changes];
    let mut progress = Progress::new("B0 engine sync, both ways", ids.len());
    let mut load_time = Duration::ZERO;
    let mut sync_time = [Duration::ZERO; 2];
    let (mut bytes, mut messages) = ([0u64; 2], [0u64; 2]);
    for (n, id) in ids.iter().enumerate() {
        for (way, speaking) in ways.into_iter().enumerate() {
            let t = Instant::now();
            let mut copy = store
                .load(id)?
                .with_context(|| format!("{id} not stored"))?;
            load_time += t.elapsed();
            let t = Instant::now();
            let (b, m) = full_sync(&mut copy, speaking)?;
            sync_time[way] += t.elapsed();
            bytes[way] += b;
            messages[way] += m;
        }
        progress.set(n + 1);
    }
    progress.finish();
    let docs = ids.len();
    Ok([0, 1].map(|way| {
        let seconds = sync_time[way].as_secs_f64();
        EngineSync {
            docs,
            seconds,
            docs_per_s: docs as f64 / seconds.max(1e-9),
            bytes: bytes[way],
            bytes_per_doc: bytes[way] as f64 / docs.max(1) as f64,
            messages_per_doc: messages[way] as f64 / docs.max(1) as f64,
            load_seconds: load_time.as_secs_f64(),
        }
    }))
}

/// Where a receiving node's time goes per document, measured piece by piece on one thread
/// (what B1 does, without the network and without the two sessions' scheduling).
#[derive(Debug, Clone, Serialize)]
pub struct CostModel {
    /// Documents measured.
    pub sample: usize,
    /// Changes per document (each signed).
    pub changes_per_doc: f64,
    /// Loading the document from the sender's store, ms per doc.
    pub load_ms: f64,
    /// automerge's sync alone, as in B0 as changes (every change applied, as the gate must),
    /// ms per doc.
    pub engine_ms: f64,
    /// The sync through [`DocSync`] and the gate on the receiving side (signature checks,
    /// diff-based authority checks, automerge), ms per doc.
    pub gate_sync_ms: f64,
    /// Of that, the signature and certificate checks alone, ms per doc.
    pub authenticate_ms: f64,
    /// Looking up the attestations of the changes sent in the sender's store, ms per doc.
    pub attestations_ms: f64,
    /// Summarising the received document (scope, names, digest), ms per doc.
    pub summarise_ms: f64,
    /// Storing the received document with its attestations as a session does (group
    /// commit), ms per doc.
    pub store_save_ms: f64,
    /// The store's writes, alone and grouped, on this disk and on a slower one.
    pub store_writes: StoreWrites,
    /// The sum: a single-threaded ceiling for cold replication, docs/s.
    pub ceiling_docs_per_s: f64,
    /// Encoded attestations (signature beside each change) per doc, bytes.
    pub attestation_bytes_per_doc: f64,
}

/// A message to `me` from another node of the same office (nothing is "from the future" in
/// a benchmark).
fn inbound<'a>(
    id: &'a DocId,
    me: &'a OrgPath,
    trust: &'a Trust,
    attestations: &'a [amphi_protocol::attest::Attestation],
) -> Inbound<'a> {
    Inbound {
        id,
        peer: me,
        me,
        now_ms: i64::MAX / 2,
        auth: trust,
        attestations,
    }
}

/// Measures the cost model on `ids`, as office `me` receiving from a peer of the same org.
pub fn cost_model(
    store: &Store,
    ids: &[DocId],
    trust: &Trust,
    me: &OrgPath,
    scratch: &Path,
) -> anyhow::Result<CostModel> {
    let mut received_docs = Vec::new();
    let mut t_load = Duration::ZERO;
    let mut t_engine = Duration::ZERO;
    let mut t_gate = Duration::ZERO;
    let mut t_auth = Duration::ZERO;
    let mut t_atts = Duration::ZERO;
    let mut t_summary = Duration::ZERO;
    let mut changes = 0usize;
    let mut attestation_bytes = 0usize;
    for id in ids {
        let t = Instant::now();
        let mut src = store
            .load(id)?
            .with_context(|| format!("{id} not stored"))?;
        t_load += t.elapsed();

        let mut copy = src.clone();
        let t = Instant::now();
        full_sync(&mut copy, Speaking::Changes)?;
        t_engine += t.elapsed();

        let (mut sender, mut receiver) = (DocSync::default(), DocSync::default());
        let mut received = AutoCommit::new();
        let mut all_attestations = Vec::new();
        let t_exchange = Instant::now();
        let mut lookups = Duration::ZERO;
        loop {
            let mut progressed = false;
            if let Some(out) = sender.generate(&mut src) {
                let t = Instant::now();
                let attestations = store.attestations(id, &out.changes)?;
                lookups += t.elapsed();
                let admission = receiver.receive(
                    &mut received,
                    &out.message,
                    &inbound(id, me, trust, &attestations),
                    &mut AutoCommit::new,
                );
                anyhow::ensure!(
                    admission.refused.is_empty(),
                    "the gate refused a generated change of {id}: {}",
                    admission.refused[0].reason
                );
                all_attestations.extend(attestations);
                progressed = true;
            }
            if let Some(out) = receiver.generate(&mut received) {
                sender.receive(
                    &mut src,
                    &out.message,
                    &inbound(id, me, trust, &[]),
                    &mut AutoCommit::new,
                );
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        t_gate += t_exchange.elapsed() - lookups;
        t_atts += lookups;
        anyhow::ensure!(received.get_heads() == src.get_heads(), "{id} not in sync");

        let all = src.get_changes(&[]);
        changes += all.len();
        attestation_bytes += all_attestations
            .iter()
            .map(|a| a.encode().len())
            .sum::<usize>();
        // Signature checks as the gate makes them: one per actor, vouching for the rest.
        let signatures: std::collections::HashMap<_, _> = all_attestations
            .iter()
            .map(|a| (a.change, a.clone()))
            .collect();
        let t = Instant::now();
        let mut vouchers = amphi_protocol::vouch::Vouchers::plan(&all, &signatures, false);
        for c in &all {
            let author = gate::author_of(c).context("a change without author")?;
            vouchers
                .authenticate(c, &author, signatures.get(&c.hash()), trust)
                .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        }
        t_auth += t.elapsed();

        let t = Instant::now();
        let summary = summarise(id, &mut received);
        t_summary += t.elapsed();
        received_docs.push((id.clone(), received, summary, all_attestations));
    }
    let store_writes = store_writes(me, scratch, &mut received_docs)?;
    let n = ids.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n;
    let per_doc = ms(t_load) + ms(t_gate) + ms(t_atts) + ms(t_summary) + store_writes.grouped_ms;
    Ok(CostModel {
        sample: ids.len(),
        changes_per_doc: changes as f64 / n,
        load_ms: ms(t_load),
        engine_ms: ms(t_engine),
        gate_sync_ms: ms(t_gate),
        authenticate_ms: ms(t_auth),
        attestations_ms: ms(t_atts),
        summarise_ms: ms(t_summary),
        store_save_ms: store_writes.grouped_ms,
        store_writes,
        ceiling_docs_per_s: 1000.0 / per_doc.max(1e-9),
        attestation_bytes_per_doc: attestation_bytes as f64 / n,
    })
}

/// How much longer each flush takes on the emulated slower disk: a consumer hard disk's or
/// SD card's fsync, where this machine's takes a fraction of a millisecond.
pub const SLOW_FLUSH: Duration = Duration::from_millis(4);

/// What storing a received document costs, ms per doc.
#[derive(Debug, Clone, Serialize)]
pub struct StoreWrites {
    /// One durable commit per document (as a roster or the API's write is stored).
    pub alone_ms: f64,
    /// As a session stores case files: written unflushed, one durable commit per
    /// [`GROUP_COMMIT`] documents (group commit).
    pub grouped_ms: f64,
    /// The two on a disk whose every flush takes [`SLOW_FLUSH`] longer (emulated).
    pub slow_alone_ms: f64,
    /// See [`StoreWrites::slow_alone_ms`].
    pub slow_grouped_ms: f64,
}

/// A disk whose every flush takes [`SLOW_FLUSH`] longer than this machine's.
#[derive(Debug)]
struct SlowFlush(redb::backends::FileBackend);

impl redb::StorageBackend for SlowFlush {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        std::thread::sleep(SLOW_FLUSH);
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

/// Stores `docs` into fresh stores under `dir`, alone and grouped, on this disk and on the
/// emulated slower one.
fn store_writes(
    me: &OrgPath,
    dir: &Path,
    docs: &mut [(DocId, AutoCommit, DocSummary, Vec<Attestation>)],
) -> anyhow::Result<StoreWrites> {
    let n = docs.len().max(1) as f64;
    let mut timed = |name: &str, slow: bool, grouped: bool| -> anyhow::Result<f64> {
        let path = dir.join(format!("scratch-{name}.redb"));
        let store = if slow {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            Store::open_with_backend(
                SlowFlush(redb::backends::FileBackend::new(file)?),
                me.as_str(),
            )?
        } else {
            Store::open(&path, me.as_str())?
        };
        let t = Instant::now();
        for (i, (id, doc, summary, attestations)) in docs.iter_mut().enumerate() {
            let write = DocWrite {
                id,
                doc,
                heads_before: &[],
                summary,
                attestations,
                proofs: &[],
            };
            if !grouped {
                store.save_write(write, None)?;
                continue;
            }
            store.save_unflushed(write, None)?;
            if (i + 1) % GROUP_COMMIT == 0 {
                store.flush()?;
            }
        }
        store.flush()?;
        Ok(t.elapsed().as_secs_f64() * 1000.0 / n)
    };
    Ok(StoreWrites {
        alone_ms: timed("alone", false, false)?,
        grouped_ms: timed("grouped", false, true)?,
        slow_alone_ms: timed("slow-alone", true, false)?,
        slow_grouped_ms: timed("slow-grouped", true, true)?,
    })
}
