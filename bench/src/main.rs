//! `amphi-bench`: Amphi's benchmark harness.
//!
//! Generates a synthetic county (16 townships, 300 villages and communities, N members,
//! ~30 % two-dwelling, 20–40 activities each, every change signed by its office) and
//! measures in one run:
//!
//! - **B0** automerge's own sync of the same documents, in process (the engine's limit);
//! - **B1** cold replication of the county into an empty node over QUIC;
//! - **B2** propagation of edits from a village to the county and the residence community;
//! - **B3** reconnects after a partition, with nothing and with 1 % of documents changed;
//! - **B4** the county node's peak RSS (its own process) and store bytes per document.
//!
//! `cargo run --release -p amphi-bench -- --members 20000 --json target/bench.json`;
//! `docs/benchmarks.md` explains every number.

mod county;
mod engine;
mod net;
mod phases;
mod progress;
mod report;
mod whole;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amphi_node::config::{Config, PeerConfig};
use amphi_node::demo;
use amphi_node::node::{Node, STORE_FILE};
use amphi_node::pki::NodeIdentity;
use amphi_node::store::Store;
use amphi_node::trust::Trust;
use amphi_protocol::DocId;
use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::county::{B2_MEMBERS, Tree, office_dir};
use crate::net::{CountyProcess, doc_counts, free_port, proc_kb};
use crate::phases::{Chain, any_port, office_config, start};
use crate::report::{Generation, Machine, Memory, Report, Target};

/// Amphi's benchmark harness: a synthetic county; B0 engine sync, B1 cold replication,
/// B2 propagation, B3 reconnects, B4 memory and store; targets with PASS/FAIL.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Member case files in the county.
    #[arg(long, default_value_t = 20_000)]
    members: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep every file (CA, certificates, configs, stores, county log) in this empty folder
    /// (default: a temporary folder, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// B2: edits made at the village (default 1,000, or half the members if that is fewer,
    /// so that a smoke run stays short).
    #[arg(long)]
    edits: Option<usize>,
    /// B2: make an edit every N milliseconds (an open loop, to load the chain); 0 (the
    /// default): each edit once the previous one arrived at the county and the community (a
    /// closed loop, latency without queueing).
    #[arg(long, default_value_t = 0)]
    edit_interval_ms: u64,
    /// B3: share of member documents changed during the partition, percent.
    #[arg(long, default_value_t = 1.0)]
    changed_percent: f64,
    /// B0: documents synced (spread over the county).
    #[arg(long, default_value_t = 20_000)]
    b0_sample: usize,
    /// Threads building documents (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the synthetic county.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the county node with this `amphi` binary (`amphi run --config …`) instead of this
    /// executable's built-in copy of the same node (`amphi-bench serve`).
    #[arg(long)]
    amphi: Option<PathBuf>,
    /// Offices send every signature they hold, as before chained signatures (the county node
    /// must then be this build or one that knows `chained_signatures`).
    #[arg(long)]
    every_signature: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one node from its config until stdin closes or SIGTERM (the county process).
    #[command(hide = true)]
    Serve {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // As `amphi` does: this process runs the county (`serve`, whose RSS B4 measures) or the
    // mirror and the chain's nodes.
    amphi_node::memory::return_freed_memory();
    let cli = Cli::parse();
    phases::EVERY_SIGNATURE.store(cli.every_signature, std::sync::atomic::Ordering::Relaxed);
    if let Some(Cmd::Serve { config }) = &cli.command {
        return serve(config);
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&cli))?;
    println!("\n{}", report.table());
    if let Some(path) = &cli.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The county process: the same node as `amphi run`, from this executable.
fn serve(config: &Path) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(&config).await.context("node did not start")?;
        eprintln!(
            "amphi-bench serve: {} on {}, admin {}",
            node.org, node.quic_addr, node.admin_addr
        );
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = closed.send(());
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = stdin_closed => {},
            _ = term.recv() => {},
        }
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Latency of a 4 KiB write + fsync on the disk under `dir` (every durable store write
/// pays at least one).
fn flush_probe(dir: &Path) -> anyhow::Result<Option<phases::Percentiles>> {
    use std::io::Write;
    let path = dir.join("flush-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(phases::percentiles(&times))
}

/// Free space of the filesystem holding `path`, KiB (from `df`).
fn free_kib(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn mib(kb: Option<u64>) -> f64 {
    kb.map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

fn section(name: &str) {
    eprintln!("\n== {name}");
}

/// The B4 RSS limit: 300 MiB up to 20,000 documents, 1 GiB at 250,000, linear between.
fn rss_limit_mib(members: usize) -> f64 {
    let (small, large) = (20_000.0, 250_000.0);
    let n = members as f64;
    if n <= small {
        300.0
    } else if n >= large {
        1024.0
    } else {
        300.0 + (n - small) / (large - small) * (1024.0 - 300.0)
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let started = Instant::now();
    let temp;
    let root: PathBuf = match &cli.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            anyhow::ensure!(
                std::fs::read_dir(d)?.next().is_none(),
                "--dir {} must be empty",
                d.display()
            );
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(cores).max(1);
    let machine = Machine {
        cores,
        mem_total_mib: mem_total_mib(),
    };
    let n = cli.members.max(1);
    let disk_flush = flush_probe(&root)?;
    eprintln!(
        "amphi-bench: {n} members, seed {}, {cores} cores, {} MiB, files in {}",
        cli.seed,
        machine.mem_total_mib,
        root.display()
    );

    section("generate the county");
    let tree = Tree::new()?;
    let ca = demo::create_ca(&root, &tree.county)?;
    let t = Instant::now();
    let offices = county::issue_identities(&ca, &root, &tree, threads)?;
    let identities_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "  {} office certificates in {identities_seconds:.1} s",
        offices.len()
    );
    let plans = county::plan_members(n, &tree, cli.seed);
    let county_dir = office_dir(&root, &tree.county);
    let data_dir = county_dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let store_path = data_dir.join(STORE_FILE);
    // The generator writes the county's store on tmpfs when it has room (a durable write
    // per document costs a disk flush, 0.1–3 ms here, and is no part of any measurement), then
    // the file is copied into the county's data dir on disk, where every node runs.
    let shm = Path::new("/dev/shm");
    let room = free_kib(shm).is_some_and(|kib| kib > 64 * n as u64 + 65_536);
    let gen_dir = if room {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir_in(&root)?
    };
    let gen_store_path = gen_dir.path().join(STORE_FILE);
    let store = Store::open(&gen_store_path, tree.county.as_str())?;
    let generated = county::generate(&store, &tree, &offices, &plans, threads, cli.seed)?;
    eprintln!(
        "  {} members + {} rosters, {} changes in {:.1} s (store writes {:.1} s)",
        generated.members,
        generated.rosters,
        generated.changes,
        generated.seconds,
        generated.store_seconds
    );
    let ids: Vec<DocId> = generated.ids.clone();

    section("B0: engine sync (automerge alone, one thread)");
    let b0_sample = engine::sample(&ids, cli.b0_sample);
    let [b0, b0_changes] = engine::engine_sync(&store, &b0_sample)?;
    eprintln!(
        "  {:.0} docs/s, {:.0} B/doc",
        b0.docs_per_s, b0.bytes_per_doc
    );
    eprintln!(
        "  as changes (version 1, as a node's peers speak): {:.0} docs/s, {:.0} B/doc",
        b0_changes.docs_per_s, b0_changes.bytes_per_doc
    );

    section("B1 cost model: a receiving node's work per document, one thread");
    let county_identity = NodeIdentity::load(
        &county_dir.join("node.crt"),
        &county_dir.join("node.key"),
        &county_dir.join("ca.crt"),
    )?;
    let trust = Trust::new(&county_identity.ca_der)?;
    for o in &offices {
        trust.admit(&o.cert_der)?;
    }
    let cost = engine::cost_model(
        &store,
        &engine::sample(&ids, 200),
        &trust,
        &tree.county,
        &root,
    )?;
    eprintln!(
        "  gate+sync {:.2} ms, store write {:.2} ms per doc: ceiling {:.0} docs/s",
        cost.gate_sync_ms, cost.store_save_ms, cost.ceiling_docs_per_s
    );
    section("a cold case file sent whole (reader built, wire not), one thread");
    let whole = whole::measure(&store, &engine::sample(&ids, 200))?;
    eprintln!(
        "  today {:.2} ms, whole {:.2} ms per case file at both ends",
        whole.today_ms(),
        whole.whole_ms()
    );
    drop(store);
    std::fs::copy(&gen_store_path, &store_path)?;
    std::fs::File::open(&store_path)?.sync_all()?;

    section("start the county node as its own process");
    let listen = ([127, 0, 0, 1], free_port(true)?).into();
    let admin = ([127, 0, 0, 1], free_port(false)?).into();
    let county_config = office_config(&ca, &county_dir, &tree.county, listen, admin, &[])?;
    let config_path = county_dir.join("amphi.toml").display().to_string();
    let (program, args) = match &cli.amphi {
        Some(p) => (
            p.clone(),
            vec!["run".into(), "--config".into(), config_path],
        ),
        None => (
            std::env::current_exe()?,
            vec!["serve".into(), "--config".into(), config_path],
        ),
    };
    let county =
        CountyProcess::spawn(&program, &args, &county_config, &root.join("county.log")).await?;
    let rss_idle_mib = mib(proc_kb(county.pid, "VmRSS"));
    eprintln!(
        "  pid {}, RSS {rss_idle_mib:.1} MiB: {}",
        county.pid, county.command
    );

    section("B1: cold replication into an empty node over QUIC");
    let scale = Duration::from_millis(50) * n as u32;
    let timeout = Duration::from_secs(120) + scale;
    let mirror_dir = root.join("mirror");
    let upstream = [PeerConfig {
        addr: county.quic.to_string(),
        org: tree.county.clone(),
    }];
    let mirror_config = office_config(
        &ca,
        &mirror_dir,
        &tree.county,
        any_port(),
        any_port(),
        &upstream,
    )?;
    let (mirror, b1) = phases::replicate(&county, &mirror_config, timeout).await?;
    let (have_members, _) = doc_counts(&mirror.api.status().await?);
    let mirror = if b1.completed || have_members as usize == n {
        mirror
    } else {
        // B1 stalled: give the mirror a copy of the county's generated store, so that B3 and
        // B2 still run on a node that holds the whole county.
        eprintln!("  the mirror gets a copy of the county's generated store instead");
        mirror.node.shutdown().await;
        let path = mirror_config.data_dir.join(STORE_FILE);
        std::fs::copy(&gen_store_path, &path)?;
        std::fs::File::open(&path)?.sync_all()?;
        let mirror = start(&mirror_config).await?;
        phases::settle(&mirror, tree.county.as_str(), timeout).await?;
        mirror
    };
    drop(gen_dir);
    let hwm_after_b1_mib = mib(proc_kb(county.pid, "VmHWM"));
    let b1_over_b0 = b1.docs_per_s / b0.docs_per_s;
    if b1.completed {
        eprintln!(
            "  {:.0} docs/s ({:.3} of B0), {:.0} B/doc on the wire",
            b1.docs_per_s,
            b1_over_b0,
            b1.bytes_per_doc.unwrap_or(f64::NAN)
        );
    }

    section("B3: reconnect after a partition, nothing changed");
    let quiet = Duration::from_secs(1);
    let (mirror, b3_unchanged) =
        phases::reconnect(mirror, &mirror_config, &county, &[], quiet, timeout).await?;
    eprintln!(
        "  {} bytes in {:.2} s",
        b3_unchanged.receiver.bytes(),
        b3_unchanged.seconds
    );
    section("B3: reconnect after a partition, 1% of documents changed at the county");
    let k = ((n as f64 * cli.changed_percent / 100.0).ceil() as usize).clamp(1, n);
    let changed = engine::sample(&ids, k);
    let (mirror, b3_changed) =
        phases::reconnect(mirror, &mirror_config, &county, &changed, quiet, timeout).await?;
    eprintln!(
        "  {} bytes in {:.2} s for {} changes of {} bytes",
        b3_changed.receiver.bytes(),
        b3_changed.seconds,
        b3_changed.changes,
        b3_changed.change_bytes
    );

    section("B4: the county node's memory and store");
    let hwm_mib = mib(proc_kb(county.pid, "VmHWM"));
    let (county_members, county_orgs) = doc_counts(&county.api.status().await?);
    let county_docs = (county_members + county_orgs).max(1) as f64;
    let county_command = county.command.clone();
    county.stop().await?;
    let store_meta = std::fs::metadata(&store_path)?;
    let store_bytes = store_meta.len();
    let store_allocated = std::os::unix::fs::MetadataExt::blocks(&store_meta) * 512;
    let mirror_store = mirror_config.data_dir.join(STORE_FILE);
    eprintln!("  peak RSS {hwm_mib:.1} MiB, store {store_bytes} bytes");

    section("B2: propagation village -> township -> county -> township -> community");
    mirror.node.shutdown().await;
    let mirror_store_bytes = std::fs::metadata(&mirror_store)?.len();
    let standalone = office_config(&ca, &mirror_dir, &tree.county, any_port(), any_port(), &[])?;
    let county_node = start(&standalone).await?;
    let village = &tree.units[tree.b2_village];
    let community = &tree.units[tree.b2_community];
    let chain_orgs = [
        tree.townships[village.township].clone(),
        tree.townships[community.township].clone(),
        village.org.clone(),
        community.org.clone(),
    ];
    let offices4 = chain_orgs.map(|org| {
        let want = county::expected_members(&plans, &tree, &org) as u64;
        (org.clone(), office_dir(&root, &org), want)
    });
    let chain = Chain {
        county: &county_node,
        offices: offices4,
        members: ids[..B2_MEMBERS.min(n)].to_vec(),
    };
    let b2_timeout = Duration::from_secs(120) + Duration::from_millis(10) * n as u32;
    let (nodes, b2) = phases::propagate(
        &ca,
        chain,
        cli.edits.unwrap_or((n / 2).clamp(1, 1000)).max(1),
        Duration::from_millis(cli.edit_interval_ms),
        b2_timeout,
    )
    .await?;
    for r in nodes.into_iter().rev() {
        r.node.shutdown().await;
    }
    county_node.node.shutdown().await;
    let bench_hwm_mib = mib(proc_kb(std::process::id(), "VmHWM"));

    let b4 = Memory {
        county_process: county_command,
        rss_idle_mib,
        hwm_after_b1_mib,
        hwm_mib,
        store_bytes,
        store_allocated_bytes: store_allocated,
        store_bytes_per_doc: store_bytes as f64 / county_docs,
        store_allocated_per_doc: store_allocated as f64 / county_docs,
        mirror_store_bytes_per_doc: mirror_store_bytes as f64 / county_docs,
        bench_hwm_mib,
    };
    let p99 = |p: &Option<phases::Percentiles>, missing: usize| {
        if missing > 0 {
            f64::INFINITY
        } else {
            p.as_ref().map_or(f64::INFINITY, |p| p.p99_ms)
        }
    };
    let slack = 16.0 * 1024.0;
    let targets = vec![
        Target::at_least("B1", "B1 docs/s over B0 docs/s".into(), b1_over_b0, 0.5),
        Target::below(
            "B1",
            "B1 bytes per doc over B0's".into(),
            b1.bytes_per_doc
                .map_or(f64::INFINITY, |b| b / b0.bytes_per_doc.max(1.0)),
            1.5,
        ),
        Target::below(
            "B2",
            "p99 village -> county, ms".into(),
            p99(&b2.county, b2.missing[0]),
            100.0,
        ),
        Target::below(
            "B2",
            "p99 village -> community, ms".into(),
            p99(&b2.community, b2.missing[1]),
            200.0,
        ),
        Target::below(
            "B3",
            "nothing-changed reconnect, bytes".into(),
            b3_unchanged.receiver.bytes() as f64,
            slack,
        ),
        Target::below(
            "B3",
            "1%-changed reconnect, bytes (limit 2 x change bytes + 16 KiB)".into(),
            b3_changed.receiver.bytes() as f64,
            2.0 * b3_changed.change_bytes as f64 + slack,
        ),
        Target::below(
            "B4",
            format!("county node peak RSS, MiB (limit for {n} members)"),
            hwm_mib,
            rss_limit_mib(n),
        ),
    ];
    let generation = Generation {
        members: generated.members,
        rosters: generated.rosters,
        two_dwelling: generated.two_dwelling,
        changes: generated.changes,
        identities_seconds,
        seconds: generated.seconds,
        store_seconds: generated.store_seconds,
        docs_per_s: generated.members as f64 / generated.seconds,
        threads,
    };
    Ok(Report {
        machine,
        disk_flush,
        members: n,
        seed: cli.seed,
        chained_signatures: !cli.every_signature,
        generation,
        b0,
        b0_changes,
        cost_model: cost,
        whole_case_file: whole,
        b1,
        b1_over_b0,
        b3_unchanged,
        b3_changed,
        b2,
        b4,
        targets,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}
