//! What sending a cold case file *whole* would save: issue 11's remaining lever, measured
//! with the receiving end's reader built and the wire not.
//!
//! Today a sender answers a peer that holds nothing of a case file with its changes, one
//! chunk each: it loads the document and has automerge rebuild every change's bytes; the
//! receiver reads each change, re-encodes it to check that it is canonical, applies them all
//! to an empty document and saves that. automerge's own sync (B0) instead sends such a peer
//! the saved document, which it loads in one pass. A node could do the same: send the chunks
//! its store holds as they are, and have the receiver read them with
//! [`amphi_protocol::whole::read_whole`] (bounded, contained) to take the changes the loaded
//! document rebuilds (canonical by construction) to judge.
//!
//! The receiver cannot keep the document it loaded, though: automerge 0.12 does not check the
//! order of a document chunk's ops, so a peer's chunk can load into a state its own changes do
//! not make (`amphi_protocol::whole`). So the whole path is timed twice: as first measured,
//! keeping the loaded document (what automerge's own sync does, and what a node must not), and
//! as a node must take it, applying and saving the changes as today.
//!
//! This module times both paths' pieces on the same documents, one thread, with the node's
//! own functions. What it leaves out is the same on both paths (the judge, the summary) or
//! a cost the whole path's sender would add: the signatures to send beside the case file,
//! which it finds today from the document it loads.

use std::time::{Duration, Instant};

use amphi_node::store::{self, Store};
use amphi_protocol::DocId;
use amphi_protocol::syncmsg::decode_change_with_ops;
use amphi_protocol::whole::read_whole;
use anyhow::Context;
use automerge::AutoCommit;
use serde::Serialize;

/// Both paths' pieces, ms per case file.
#[derive(Debug, Clone, Serialize)]
pub struct WholeCaseFile {
    /// Case files measured.
    pub sample: usize,
    /// Today's sender: load the document from the store and rebuild its changes.
    pub send_changes_ms: f64,
    /// Today's receiver: read each change and check its encoding is canonical.
    pub read_changes_ms: f64,
    /// Today's receiver: apply them all to an empty document, in one call.
    pub apply_ms: f64,
    /// Today's receiver: the document's body as the store writes it.
    pub save_ms: f64,
    /// The whole path's sender: the stored chunks, as stored.
    pub send_whole_ms: f64,
    /// The whole path's receiver: read them whole ([`read_whole`]: inflate and check them,
    /// load them and rebuild their changes, contained).
    pub read_whole_ms: f64,
    /// Both receivers: decoding each change's ops for the judge (today's path gets them from
    /// its canonical check, so they are part of `read_changes_ms`).
    pub ops_ms: f64,
    /// Change bytes per case file (uncompressed), today's payload.
    pub change_bytes: f64,
    /// Stored bytes per case file, the whole path's payload.
    pub whole_bytes: f64,
}

impl WholeCaseFile {
    /// Today's two ends, ms per case file.
    pub fn today_ms(&self) -> f64 {
        self.send_changes_ms + self.read_changes_ms + self.apply_ms + self.save_ms
    }

    /// The whole path's two ends, keeping the loaded document (unsafe), ms per case file.
    pub fn whole_ms(&self) -> f64 {
        self.send_whole_ms + self.read_whole_ms + self.ops_ms
    }

    /// The whole path's two ends as a node must take it: the changes it read applied and
    /// saved as today's are, ms per case file.
    pub fn whole_applied_ms(&self) -> f64 {
        self.whole_ms() + self.apply_ms + self.save_ms
    }
}

/// Times both paths on `ids`, checking that they end with the same changes.
pub fn measure(store: &Store, ids: &[DocId]) -> anyhow::Result<WholeCaseFile> {
    let mut t = [Duration::ZERO; 7];
    let (mut change_bytes, mut whole_bytes) = (0usize, 0usize);
    let mut timed = |slot: usize, started: Instant| t[slot] += started.elapsed();
    for id in ids {
        // Today: the sender loads and rebuilds; the receiver reads, applies and saves.
        let started = Instant::now();
        let mut doc = store
            .load(id)?
            .with_context(|| format!("{id} not stored"))?;
        let sent = doc.get_changes(&[]);
        timed(0, started);
        let started = Instant::now();
        let mut read = Vec::with_capacity(sent.len());
        for change in &sent {
            let decoded = decode_change_with_ops(change.raw_bytes())
                .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
            read.push(decoded.change);
        }
        timed(1, started);
        let started = Instant::now();
        let mut received = AutoCommit::new();
        received.apply_changes(read)?;
        received.reset_diff_cursor();
        timed(2, started);
        let started = Instant::now();
        let body = store::whole_chunk(&mut received);
        timed(3, started);
        std::hint::black_box(body);
        change_bytes += sent.iter().map(|c| c.raw_bytes().len()).sum::<usize>();

        // Whole: the sender passes its chunks on; the receiver loads them and takes the
        // changes the loaded document rebuilds.
        let started = Instant::now();
        let chunks = store.stored_chunks(id)?;
        timed(4, started);
        whole_bytes += chunks.iter().map(Vec::len).sum::<usize>();
        let started = Instant::now();
        let whole = read_whole(&chunks).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        timed(5, started);
        let rebuilt = whole.changes;
        let started = Instant::now();
        let ops: usize = rebuilt.iter().map(|c| c.decode().operations.len()).sum();
        timed(6, started);
        std::hint::black_box(ops);
        anyhow::ensure!(
            rebuilt
                .iter()
                .map(|c| c.hash())
                .eq(sent.iter().map(|c| c.hash())),
            "{id}: the loaded document rebuilt other changes than the sender sent"
        );
        anyhow::ensure!(received.get_heads() == whole.heads, "{id}: heads differ");
    }
    let n = ids.len().max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n;
    Ok(WholeCaseFile {
        sample: ids.len(),
        send_changes_ms: ms(t[0]),
        read_changes_ms: ms(t[1]),
        apply_ms: ms(t[2]),
        save_ms: ms(t[3]),
        send_whole_ms: ms(t[4]),
        read_whole_ms: ms(t[5]),
        ops_ms: ms(t[6]),
        change_bytes: change_bytes as f64 / n,
        whole_bytes: whole_bytes as f64 / n,
    })
}
