//! The run's results: targets with PASS/FAIL, the printed table, the JSON file.

use serde::Serialize;

use crate::engine::{CostModel, EngineSync};
use crate::phases::{Propagation, Reconnect, Replication};
use crate::whole::WholeCaseFile;

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// Memory, MiB.
    pub mem_total_mib: u64,
}

/// Generation of the synthetic county.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Member case files.
    pub members: usize,
    /// Roster documents (one per office).
    pub rosters: usize,
    /// Two-dwelling members.
    pub two_dwelling: usize,
    /// Signed changes.
    pub changes: usize,
    /// Issuing the offices' certificates, seconds.
    pub identities_seconds: f64,
    /// Building and storing the documents, seconds.
    pub seconds: f64,
    /// Of which the durable store writes (one per document, on the writer thread), seconds.
    pub store_seconds: f64,
    /// Member documents per second.
    pub docs_per_s: f64,
    /// Threads building documents.
    pub threads: usize,
}

/// B4: the county node's memory and store.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// How the county node ran.
    pub county_process: String,
    /// Its RSS after start, before anyone connected, MiB.
    pub rss_idle_mib: f64,
    /// Its peak RSS (VmHWM) after B1, MiB.
    pub hwm_after_b1_mib: f64,
    /// Its peak RSS (VmHWM) over its whole life (B1 and B3), MiB.
    pub hwm_mib: f64,
    /// Its store file, bytes (after B3).
    pub store_bytes: u64,
    /// Its store file's blocks on disk (redb files can be sparse), bytes.
    pub store_allocated_bytes: u64,
    /// Store bytes per document.
    pub store_bytes_per_doc: f64,
    /// Allocated store bytes per document.
    pub store_allocated_per_doc: f64,
    /// The mirror's store (written by replication), bytes per document.
    pub mirror_store_bytes_per_doc: f64,
    /// Peak RSS of this bench process (generator, mirror and chain nodes), MiB.
    pub bench_hwm_mib: f64,
}

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// B1…B4.
    pub id: &'static str,
    /// What is compared.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// `>=` or `<`.
    pub relation: &'static str,
    /// Met.
    pub pass: bool,
}

impl Target {
    /// `value` must be below `limit`.
    pub fn below(id: &'static str, what: String, value: f64, limit: f64) -> Target {
        Target {
            id,
            what,
            value,
            limit,
            relation: "<",
            pass: value < limit,
        }
    }

    /// `value` must be at least `limit`.
    pub fn at_least(id: &'static str, what: String, value: f64, limit: f64) -> Target {
        Target {
            id,
            what,
            value,
            limit,
            relation: ">=",
            pass: value >= limit,
        }
    }
}

/// Everything the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Latency of a 4 KiB write + fsync on the run's disk.
    pub disk_flush: Option<crate::phases::Percentiles>,
    /// Members asked for.
    pub members: usize,
    /// Seed of the synthetic county.
    pub seed: u64,
    /// Offices sent only the signature at the top of each run of an office's changes.
    pub chained_signatures: bool,
    /// The synthetic county.
    pub generation: Generation,
    /// B0.
    pub b0: EngineSync,
    /// B0 with the peers speaking version-1 messages only, as a node's do: every change sent
    /// and applied, none loaded whole.
    pub b0_changes: EngineSync,
    /// Where a receiving node's time goes, per document.
    pub cost_model: CostModel,
    /// What sending a cold case file whole would save (the reader built, the wire not).
    pub whole_case_file: WholeCaseFile,
    /// B1.
    pub b1: Replication,
    /// B1 docs/s over B0 docs/s.
    pub b1_over_b0: f64,
    /// B3, nothing changed.
    pub b3_unchanged: Reconnect,
    /// B3, 1 % changed.
    pub b3_changed: Reconnect,
    /// B2.
    pub b2: Propagation,
    /// B4.
    pub b4: Memory,
    /// Targets.
    pub targets: Vec<Target>,
    /// Whole run, seconds.
    pub total_seconds: f64,
}

fn n0(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn kib(bytes: f64) -> String {
    if bytes >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else if bytes >= 10.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{} B", n0(bytes))
    }
}

fn pct(p: &Option<crate::phases::Percentiles>) -> String {
    p.as_ref().map_or("n/a".into(), |p| {
        format!(
            "p50 {:.1} / p99 {:.1} / max {:.1} ms",
            p.p50_ms, p.p99_ms, p.max_ms
        )
    })
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |id: &str, what: &str, value: String, target: Option<&Target>| {
            let verdict = target.map_or(String::new(), |t| {
                format!(
                    "{} ({} {} {})",
                    if t.pass { "PASS" } else { "FAIL" },
                    short(t.value),
                    t.relation,
                    short(t.limit)
                )
            });
            rows.push([id.into(), what.into(), verdict, value]);
        };
        let target = |id: &str, nth: usize| self.targets.iter().filter(|t| t.id == id).nth(nth);
        row("disk", "4 KiB write + fsync", pct(&self.disk_flush), None);
        let signatures = match self.chained_signatures {
            true => "chained: only the top of each office's run",
            false => "every signature (--every-signature)",
        };
        row("sig", "signatures sent", signatures.into(), None);
        let g = &self.generation;
        row(
            "gen",
            "synthetic county",
            format!(
                "{} members ({} two-dwelling), {} rosters, {} signed changes",
                n0(g.members as f64),
                n0(g.two_dwelling as f64),
                g.rosters,
                n0(g.changes as f64)
            ),
            None,
        );
        row(
            "gen",
            "generation time",
            format!(
                "{:.1} s ({} docs/s, {} threads; store writes {:.1} s)",
                g.seconds,
                n0(g.docs_per_s),
                g.threads,
                g.store_seconds
            ),
            None,
        );
        let b0 = &self.b0;
        row(
            "B0",
            "engine full sync, 1 thread",
            format!(
                "{} docs/s ({} docs, {:.1} msgs/doc)",
                n0(b0.docs_per_s),
                n0(b0.docs as f64),
                b0.messages_per_doc
            ),
            None,
        );
        row("B0", "engine bytes per doc", kib(b0.bytes_per_doc), None);
        let b0c = &self.b0_changes;
        row(
            "B0",
            "engine sync as changes (version 1, as a node's peers)",
            format!(
                "{} docs/s ({:.1} msgs/doc, {} B/doc): what the engine costs when every change is applied",
                n0(b0c.docs_per_s),
                b0c.messages_per_doc,
                n0(b0c.bytes_per_doc)
            ),
            None,
        );
        let b1 = &self.b1;
        row(
            "B1",
            "cold replication over QUIC",
            if b1.completed {
                format!(
                    "{} docs/s ({} docs in {:.1} s)",
                    n0(b1.docs_per_s),
                    n0((b1.members + b1.orgs) as f64),
                    b1.seconds
                )
            } else {
                format!(
                    "STALLED: {}{}",
                    b1.stalled.as_deref().unwrap_or("?"),
                    b1.last_doc_seconds.map_or(String::new(), |s| format!(
                        "; {} members by {s:.1} s = {} docs/s until the last arrival",
                        n0(b1.members as f64),
                        n0(b1.members as f64 / s)
                    ))
                )
            },
            None,
        );
        for c in self
            .b2
            .chain
            .iter()
            .filter(|c| c.org.matches('/').count() == 1)
        {
            row(
                "B1",
                "cold sync of a township (B2 set-up)",
                format!(
                    "{} docs/s ({} members into {} in {:.1} s)",
                    n0(c.members as f64 / c.sync_seconds),
                    n0(c.members as f64),
                    c.org,
                    c.sync_seconds
                ),
                None,
            );
        }
        row(
            "B1",
            "B1 / B0",
            format!("{:.3}", self.b1_over_b0),
            target("B1", 0),
        );
        row(
            "B1",
            "B1 / B0 as changes",
            format!(
                "{:.3} (against automerge applying every change itself, as the gate must)",
                b1.docs_per_s / b0c.docs_per_s.max(1e-9)
            ),
            None,
        );
        row(
            "B1",
            "bytes on the wire per doc",
            if let Some(per_doc) = b1.bytes_per_doc {
                format!(
                    "{} ({} in all; {:.2}x B0)",
                    kib(per_doc),
                    kib(b1.receiver.bytes() as f64),
                    per_doc / b0.bytes_per_doc.max(1.0)
                )
            } else {
                format!(
                    "n/a; before the stall {} in, {} out, {} / {} sync messages",
                    kib(b1.receiver.bytes_in as f64),
                    kib(b1.receiver.bytes_out as f64),
                    n0(b1.receiver.messages_in as f64),
                    n0(b1.receiver.messages_out as f64)
                )
            },
            target("B1", 1),
        );
        row(
            "B1",
            "CPU during B1 (county / receiver)",
            format!(
                "{:.1} s / {:.1} s over {:.1} s wall",
                b1.county_cpu_s.unwrap_or(f64::NAN),
                b1.receiver_cpu_s.unwrap_or(f64::NAN),
                b1.seconds
            ),
            None,
        );
        let c = &self.cost_model;
        row(
            "B1",
            "receiver cost per doc (1 thread)",
            format!(
                "{:.2} ms: gate+sync {:.2} (signatures {:.2}, automerge alone {:.2}, authority checks and the rest {:.2}), store write {:.2}, summary {:.2}, load at sender {:.2} ({} docs/s ceiling)",
                1000.0 / c.ceiling_docs_per_s,
                c.gate_sync_ms,
                c.authenticate_ms,
                c.engine_ms,
                c.gate_sync_ms - c.authenticate_ms - c.engine_ms,
                c.store_save_ms,
                c.summarise_ms,
                c.load_ms + c.attestations_ms,
                n0(c.ceiling_docs_per_s)
            ),
            None,
        );
        let w = &c.store_writes;
        row(
            "B1",
            "store write per doc, alone / grouped",
            format!(
                "this disk {:.2} / {:.2} ms; a disk whose flush takes {} ms longer (emulated) {:.2} / {:.2} ms (groups of {})",
                w.alone_ms,
                w.grouped_ms,
                crate::engine::SLOW_FLUSH.as_millis(),
                w.slow_alone_ms,
                w.slow_grouped_ms,
                amphi_node::peer::GROUP_COMMIT
            ),
            None,
        );
        row(
            "B1",
            "wire bytes per doc explained",
            format!(
                "{:.1} changes/doc; {} B/doc of signatures if each went with its own{}",
                c.changes_per_doc,
                n0(c.attestation_bytes_per_doc),
                match self.chained_signatures {
                    true => " (chained: only the top of each office's run goes)",
                    false => "",
                }
            ),
            None,
        );
        let w = &self.whole_case_file;
        row(
            "B1",
            "cold case file: today vs sent whole (reader built, wire not)",
            format!(
                "today {:.2} ms (sender load+rebuild {:.2}, read+canonical {:.2}, apply {:.2}, save {:.2}); whole, changes applied {:.2} ms (sender read {:.2}, read_whole {:.2}, ops {:.2}, apply and save as today); whole, loaded kept (unsafe) {:.2} ms; {} B changes vs {} B stored",
                w.today_ms(),
                w.send_changes_ms,
                w.read_changes_ms,
                w.apply_ms,
                w.save_ms,
                w.whole_applied_ms(),
                w.send_whole_ms,
                w.read_whole_ms,
                w.ops_ms,
                w.whole_ms(),
                n0(w.change_bytes),
                n0(w.whole_bytes)
            ),
            None,
        );
        let b2 = &self.b2;
        row(
            "B2",
            "village -> county (2 hops)",
            pct(&b2.county),
            target("B2", 0),
        );
        row(
            "B2",
            "village -> community (4 hops)",
            pct(&b2.community),
            target("B2", 1),
        );
        row(
            "B2",
            "local write at the village",
            format!(
                "{} ({} edits, {}, missing {}/{})",
                pct(&b2.local_write),
                b2.edits,
                if b2.interval_ms == 0 {
                    "each after the last arrived".to_owned()
                } else {
                    format!("one every {} ms", b2.interval_ms)
                },
                b2.missing[0],
                b2.missing[1]
            ),
            None,
        );
        row(
            "B2",
            "chain load",
            format!(
                "{:.2} cores busy during edits; before them, idle: {:.2} cores, {} B/s on the links",
                b2.cpu_cores_busy.unwrap_or(f64::NAN),
                b2.idle_cores_busy.unwrap_or(f64::NAN),
                n0(b2.idle_bytes_per_s)
            ),
            None,
        );
        for l in b2.idle_links.iter().filter(|l| l.bytes_per_s > 10_000.0) {
            row(
                "B2",
                "busy link while idle",
                format!(
                    "{} <-> {}: {} B/s, {:.0} sync messages/s with no edits",
                    l.child,
                    l.parent,
                    n0(l.bytes_per_s),
                    l.messages_per_s
                ),
                None,
            );
        }
        let u = &self.b3_unchanged;
        row(
            "B3",
            "reconnect, nothing changed",
            format!(
                "{} in {:.2} s (node start {:.2} s; then {} B/s background)",
                kib(u.receiver.bytes() as f64),
                u.seconds,
                u.start_seconds,
                n0(u.background_bytes_per_s)
            ),
            target("B3", 0),
        );
        let ch = &self.b3_changed;
        row(
            "B3",
            "reconnect, 1% changed",
            format!(
                "{} in {:.2} s; {} docs, {} changes of {}",
                kib(ch.receiver.bytes() as f64),
                ch.seconds,
                ch.changed_docs,
                ch.changes,
                kib(ch.change_bytes as f64)
            ),
            target("B3", 1),
        );
        row(
            "B3",
            "1% changed: where the bytes went",
            format!(
                "syncing the changed docs {} (from the shared heads kept, with attestations, not deflated); reconciliation, certificates, status reports {}",
                kib(ch.changed_docs_sync_bytes as f64),
                kib(ch
                    .receiver
                    .bytes()
                    .saturating_sub(ch.changed_docs_sync_bytes) as f64)
            ),
            None,
        );
        let m = &self.b4;
        row(
            "B4",
            "county node peak RSS (own process)",
            format!(
                "{:.1} MiB (idle {:.1} MiB, after B1 {:.1} MiB)",
                m.hwm_mib, m.rss_idle_mib, m.hwm_after_b1_mib
            ),
            target("B4", 0),
        );
        row(
            "B4",
            "store bytes per doc (county / mirror)",
            format!(
                "{} / {} (county file {}, {} allocated: {} B/doc)",
                n0(m.store_bytes_per_doc),
                n0(m.mirror_store_bytes_per_doc),
                kib(m.store_bytes as f64),
                kib(m.store_allocated_bytes as f64),
                n0(m.store_allocated_per_doc)
            ),
            None,
        );
        row(
            "B4",
            "bench process peak RSS (not the county)",
            format!("{:.1} MiB", m.bench_hwm_mib),
            None,
        );
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let header = ["", "measure", "target", "value"];
        for r in std::iter::once(header.map(String::from)).chain(rows) {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let passed = self.targets.iter().filter(|t| t.pass).count();
        out.push_str(&format!(
            "\n{passed} of {} targets met; whole run {:.0} s on {} cores, {} MiB; one run on a shared machine\n",
            self.targets.len(),
            self.total_seconds,
            self.machine.cores,
            self.machine.mem_total_mib
        ));
        out
    }
}

fn short(x: f64) -> String {
    if x.abs() >= 1000.0 {
        n0(x)
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}
