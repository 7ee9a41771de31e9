//! B1 (cold replication), B3 (reconnects) and B2 (propagation) over real QUIC.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use amphi_node::config::{Config, PeerConfig};
use amphi_node::demo::prepare_office;
use amphi_node::node::Node;
use amphi_node::repo::{Notice, NoticeKind, Repo};
use amphi_protocol::casefile::{self, ActivityInput};
use amphi_protocol::ids::entry_id;
use amphi_protocol::reader::Reader;
use amphi_protocol::{DocId, OrgPath};
use anyhow::Context;
use automerge::{ChangeHash, ROOT};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::net::{
    Api, Arrivals, CountyProcess, PeerCounters, doc_counts, proc_cpu_seconds, refused_total,
};
use crate::progress::Progress;

/// Any free port on loopback (the node binds it).
pub fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// Whether the offices send every signature (`--every-signature`) instead of only the one
/// at the top of each run of an office's changes (`chained_signatures`, the bench's
/// default: every office here runs this build).
pub static EVERY_SIGNATURE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Writes an office's config (its certificate is already in `dir`) and loads it.
pub fn office_config(
    ca: &Path,
    dir: &Path,
    org: &OrgPath,
    listen: SocketAddr,
    admin: SocketAddr,
    peers: &[PeerConfig],
) -> anyhow::Result<Config> {
    let config = prepare_office(ca, dir, org, listen, admin, peers, 500)?;
    if EVERY_SIGNATURE.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(config);
    }
    // A top-level key goes before the `[[peers]]` tables.
    let path = dir.join("amphi.toml");
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("chained_signatures = true\n{text}"))?;
    Ok(Config::load(&path)?)
}

/// A node started in this process, with its API.
pub struct Running {
    /// The node.
    pub node: Node,
    /// Its admin API.
    pub api: Api,
}

/// Starts a node in this process.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let node = Node::start(config).await?;
    let api = Api::new(node.admin_addr, &node.token);
    Ok(Running { node, api })
}

/// No document and no byte for this long: B1's sessions are stuck.
const STALL: Duration = Duration::from_secs(30);

/// Waits until `running`'s session with `peer` is connected with nothing pending (three
/// polls in a row).
pub async fn settle(running: &Running, peer: &str, timeout: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = PeerCounters::of(&running.api.status().await?, peer);
        in_a_row = if p.connected && p.docs_pending == 0 {
            in_a_row + 1
        } else {
            0
        };
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "{} did not settle with {peer}",
            running.node.org
        );
    }
    Ok(())
}

/// B1: cold replication of the whole county into an empty node.
#[derive(Debug, Clone, Serialize)]
pub struct Replication {
    /// Everything arrived and nothing is pending (false: the sessions stalled; the counts
    /// are what arrived).
    pub completed: bool,
    /// How it stalled, if it did.
    pub stalled: Option<String>,
    /// Member documents replicated.
    pub members: u64,
    /// Roster documents replicated.
    pub orgs: u64,
    /// Seconds from starting the empty node until it holds every document and both sides'
    /// status show nothing pending (if it stalled: until it was found stalled).
    pub seconds: f64,
    /// Documents (members + rosters) per second over `seconds` (0 if it stalled).
    pub docs_per_s: f64,
    /// Seconds until the last member document arrived (from the node's notices).
    pub last_doc_seconds: Option<f64>,
    /// The receiving node's counters for its session with the county.
    pub receiver: PeerCounters,
    /// The county's counters for that session.
    pub sender: PeerCounters,
    /// Frame bytes both ways per document (receiver's counters), if every document arrived.
    pub bytes_per_doc: Option<f64>,
    /// CPU seconds the county process used meanwhile.
    pub county_cpu_s: Option<f64>,
    /// CPU seconds this process (the receiving node) used meanwhile.
    pub receiver_cpu_s: Option<f64>,
    /// Notices the progress counter missed (it then relies on the status alone).
    pub notices_lagged: u64,
    /// Median time of one `GET /api/v1/status` at the receiver afterwards, ms.
    pub status_call_ms: f64,
}

/// Runs B1: starts the empty mirror node (config `mirror`, dialing the county) and waits
/// until it holds everything.
pub async fn replicate(
    county: &CountyProcess,
    mirror: &Config,
    timeout: Duration,
) -> anyhow::Result<(Running, Replication)> {
    let org = "hoboksar";
    let before = county.api.status().await?;
    let (want_members, want_orgs) = doc_counts(&before);
    let sender_before = PeerCounters::of(&before, org);
    let me = std::process::id();
    let (cpu_county, cpu_me) = (proc_cpu_seconds(county.pid), proc_cpu_seconds(me));
    let t0 = Instant::now();
    let running = start(mirror).await?;
    let arrivals = Arrivals::watch(running.node.repo().subscribe(), None);
    let mut progress = Progress::new("B1 cold replication", want_members as usize);
    let mut last_poll = Instant::now();
    // Progress: documents arriving or bytes moving. None for STALL means the sessions are
    // stuck (the run goes on without B1's mirror; see main).
    let mut progress_mark = (0usize, u64::MAX, Instant::now());
    let (status, seconds, stuck) = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        progress.set(arrivals.count());
        let caught_up = arrivals.count() as u64 >= want_members;
        if !(caught_up || last_poll.elapsed() > Duration::from_secs(2)) {
            continue;
        }
        last_poll = Instant::now();
        let status = running.api.status().await?;
        let peer = PeerCounters::of(&status, org);
        anyhow::ensure!(
            refused_total(&status) == 0,
            "the receiving node refused generated changes: {}",
            status["refused"]
        );
        if doc_counts(&status) == (want_members, want_orgs)
            && peer.connected
            && peer.docs_pending == 0
        {
            let at = t0.elapsed().as_secs_f64();
            let county_side = PeerCounters::of(&county.api.status().await?, org);
            if county_side.docs_pending == 0 {
                break (status, at, None);
            }
        }
        // Progress is documents arriving or pending ones settling (bytes alone are not: the
        // nodes' status reports trickle on whatever happens).
        let mark = (arrivals.count(), peer.docs_pending);
        let at = t0.elapsed().as_secs_f64();
        if mark != (progress_mark.0, progress_mark.1) {
            progress_mark = (mark.0, mark.1, Instant::now());
        }
        if progress_mark.2.elapsed() > STALL || t0.elapsed() > timeout {
            let why = if arrivals.count() as u64 >= want_members {
                format!(
                    "all {want_members} members arrived (the last at {:.1} s) but {} documents \
                     stay pending",
                    arrivals.last().map_or(f64::NAN, |t| (t - t0).as_secs_f64()),
                    peer.docs_pending
                )
            } else {
                format!(
                    "stopped with {} of {want_members} members arrived and {} documents pending",
                    arrivals.count(),
                    peer.docs_pending
                )
            };
            eprintln!(
                "  B1 STALLED: nothing moved for {} s: {why}; receiver status {status}",
                STALL.as_secs().min(timeout.as_secs()),
            );
            break (status, at, Some(why));
        }
    };
    progress.finish();
    let receiver = PeerCounters::of(&status, org);
    let sender = PeerCounters::of(&county.api.status().await?, org).since(&sender_before);
    // What one status request costs at this size (the bench polls it).
    let mut calls = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        running.api.status().await?;
        calls.push(t.elapsed());
    }
    let status_call_ms = percentiles(&calls).map_or(f64::NAN, |p| p.p50_ms);
    let (members, orgs) = doc_counts(&status);
    let docs = members + orgs;
    let completed = stuck.is_none();
    let result = Replication {
        completed,
        stalled: stuck,
        members,
        orgs,
        seconds,
        docs_per_s: if completed {
            docs as f64 / seconds
        } else {
            0.0
        },
        last_doc_seconds: arrivals.last().map(|t| (t - t0).as_secs_f64()),
        receiver,
        sender,
        bytes_per_doc: (members == want_members).then(|| receiver.bytes() as f64 / docs as f64),
        county_cpu_s: proc_cpu_seconds(county.pid)
            .zip(cpu_county)
            .map(|(a, b)| a - b),
        receiver_cpu_s: proc_cpu_seconds(me).zip(cpu_me).map(|(a, b)| a - b),
        notices_lagged: arrivals.lagged(),
        status_call_ms,
    };
    Ok((running, result))
}

/// B3: one reconnect of the mirror after a partition.
#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    /// Documents changed at the county during the partition.
    pub changed_docs: usize,
    /// Changes made during the partition.
    pub changes: usize,
    /// Raw bytes of those changes (what had to travel, at least).
    pub change_bytes: u64,
    /// Seconds from restarting the mirror until the last byte was exchanged (and, with
    /// changes, the last changed document arrived).
    pub seconds: f64,
    /// Seconds the node took to start (store open, certificates) before dialing.
    pub start_seconds: f64,
    /// The mirror's counters for the session (bytes both ways) when it settled.
    pub receiver: PeerCounters,
    /// Of those, what syncing the changed documents alone takes (automerge's messages from
    /// fresh sync states, plus attestations), measured again in process.
    pub changed_docs_sync_bytes: u64,
    /// Traffic that went on after the reconnect settled (the nodes' status reports), bytes
    /// per second.
    pub background_bytes_per_s: f64,
}

/// In B2's closed loop, the longest wait for an edit before making the next one.
const CLOSED_LOOP_WAIT: Duration = Duration::from_secs(5);
/// How often B3 reads the receiver's status.
const POLL: Duration = Duration::from_millis(50);
/// No new byte for this long ends a reconnect's burst.
const SILENCE: Duration = Duration::from_millis(300);

/// Stops the mirror, makes `changed` edits at the county (one activity each, through its
/// API), restarts the mirror and waits until it is in sync and the session is quiet; then
/// watches the session for `background` longer.
pub async fn reconnect(
    mirror: Running,
    config: &Config,
    county: &CountyProcess,
    changed: &[DocId],
    background: Duration,
    timeout: Duration,
) -> anyhow::Result<(Running, Reconnect)> {
    let org = "hoboksar";
    let mut heads_before: HashMap<DocId, Vec<ChangeHash>> = HashMap::new();
    for id in changed {
        let mut doc = mirror
            .node
            .repo()
            .load(id)?
            .context("changed doc at mirror")?;
        heads_before.insert(id.clone(), doc.get_heads());
    }
    mirror.node.shutdown().await;
    for (n, id) in changed.iter().enumerate() {
        county
            .api
            .post(
                &format!("/api/v1/members/{id}/activities"),
                &json!({"date": "2026-11-03", "kind": "study",
                        "description": format!("County inspection visit, partition edit {n}"), "points": 3}),
            )
            .await?;
    }
    let t0 = Instant::now();
    let running = start(config).await?;
    let start_seconds = t0.elapsed().as_secs_f64();
    let arrivals = Arrivals::watch(
        running.node.repo().subscribe(),
        Some(changed.iter().cloned().collect()),
    );
    // Settled: connected, nothing pending, every changed document arrived, and no new byte
    // for SILENCE (the fleet reporter writes at most once a second, after a 1 s debounce, so
    // the reconnect's own burst ends in a silence). The time is that of the last byte before
    // the silence (or of the last changed document); the bytes are counted up to there.
    // Then the session is watched for `background` more to report the traffic that goes on.
    let mut last = (Instant::now(), 0u64);
    let mut first_connected: Option<Instant> = None;
    let receiver = loop {
        tokio::time::sleep(POLL).await;
        let status = running.api.status().await?;
        let peer = PeerCounters::of(&status, org);
        let now = Instant::now();
        if peer.bytes() != last.1 {
            last = (now, peer.bytes());
        }
        if peer.connected && first_connected.is_none() {
            first_connected = Some(now);
        }
        let arrived = arrivals.count() == changed.len();
        let silent = now.duration_since(last.0) >= SILENCE && last.1 > 0;
        if peer.connected && peer.docs_pending == 0 && arrived && silent {
            break peer;
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "B3 reconnect did not settle within {timeout:?} ({} of {} changed docs arrived; status {status})",
            arrivals.count(),
            changed.len()
        );
    };
    let end = [Some(last.0), arrivals.last(), first_connected]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(t0);
    let seconds = (end - t0).as_secs_f64();
    tokio::time::sleep(background).await;
    let after = PeerCounters::of(&running.api.status().await?, org);
    let background_bps =
        after.bytes().saturating_sub(receiver.bytes()) as f64 / background.as_secs_f64();
    let (mut changes, mut change_bytes) = (0, 0u64);
    // What the changed documents' own sync costs, done again in process: automerge's
    // messages between the old and the new document from the shared heads both sides kept
    // (the county's first message carries the change, as the nodes' do), and one
    // attestation per change, not deflated. The rest of the bytes is reconciliation,
    // certificates and other documents (status reports).
    let mut sync_bytes = 0u64;
    for (id, heads) in &heads_before {
        let repo = running.node.repo();
        let mut doc = repo.load(id)?.context("changed doc at mirror")?;
        let new: Vec<ChangeHash> = doc.get_changes(heads).iter().map(|c| c.hash()).collect();
        for c in doc.get_changes(heads) {
            changes += 1;
            change_bytes += c.raw_bytes().len() as u64;
        }
        let mut old = doc.fork_at(heads)?;
        let kept = || {
            let mut state = automerge::sync::State::new();
            state.shared_heads = heads.clone();
            amphi_protocol::docsync::expecting_shared(state)
        };
        sync_bytes += crate::engine::sync_pair_from(&mut doc, &mut old, kept(), kept())?.0;
        sync_bytes += repo
            .store()
            .attestations(id, &new)?
            .iter()
            .map(|a| a.encode().len() as u64)
            .sum::<u64>();
    }
    Ok((
        running,
        Reconnect {
            changed_docs: changed.len(),
            changes,
            change_bytes,
            seconds,
            start_seconds,
            receiver,
            changed_docs_sync_bytes: sync_bytes,
            background_bytes_per_s: background_bps,
        },
    ))
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Percentiles of `xs` (nearest rank); `None` when empty.
pub fn percentiles(xs: &[Duration]) -> Option<Percentiles> {
    if xs.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p / 100.0 * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Percentiles {
        n: ms.len(),
        p50_ms: rank(50.0),
        p99_ms: rank(99.0),
        max_ms: ms[ms.len() - 1],
    })
}

/// One node of the B2 chain after its first sync.
#[derive(Debug, Clone, Serialize)]
pub struct ChainNode {
    /// The office.
    pub org: String,
    /// Members it holds.
    pub members: u64,
    /// Seconds from its start until it held them all with nothing pending.
    pub sync_seconds: f64,
}

/// Traffic on one link of the B2 chain while nobody writes.
#[derive(Debug, Clone, Serialize)]
pub struct IdleLink {
    /// The office that dials.
    pub child: String,
    /// Its parent.
    pub parent: String,
    /// Frame bytes both ways per second.
    pub bytes_per_s: f64,
    /// Sync messages both ways per second.
    pub messages_per_s: f64,
}

/// B2: edits at a village, timed until visible at the county and at the residence
/// community.
#[derive(Debug, Clone, Serialize)]
pub struct Propagation {
    /// Edits made.
    pub edits: usize,
    /// One edit every this many ms (open loop), or 0: each edit once the previous one
    /// reached the county and the community (closed loop, no queueing).
    pub interval_ms: u64,
    /// Members edited (round robin).
    pub members: usize,
    /// The chain and its first sync.
    pub chain: Vec<ChainNode>,
    /// Village → county (2 hops).
    pub county: Option<Percentiles>,
    /// Village → community (4 hops).
    pub community: Option<Percentiles>,
    /// The write at the village itself (sign, gate, durable store write).
    pub local_write: Option<Percentiles>,
    /// Edits that never arrived at the county / community within the wait.
    pub missing: [usize; 2],
    /// Traffic on the chain's four links before the edits, while nobody wrote, bytes/s.
    pub idle_bytes_per_s: f64,
    /// The same per link.
    pub idle_links: Vec<IdleLink>,
    /// CPU this process (all five nodes) used before the edits, while nobody wrote, in cores.
    pub idle_cores_busy: Option<f64>,
    /// CPU this process (all five nodes) used during the edits, in cores (CPU s / wall s).
    pub cpu_cores_busy: Option<f64>,
}

struct Tracker {
    by_member: HashMap<DocId, Vec<usize>>,
    activity: Vec<String>,
    started: Vec<Instant>,
    arrived: [Vec<Option<Duration>>; 2],
}

/// Watches destination `dest` (0 county, 1 community) for the tracked edits.
fn watch_edits(
    mut rx: broadcast::Receiver<Notice>,
    repo: Weak<Repo>,
    tracker: Arc<Mutex<Tracker>>,
    arrivals: Arc<tokio::sync::Notify>,
    dest: usize,
) {
    std::thread::spawn(move || {
        loop {
            let id = match rx.blocking_recv() {
                Ok(Notice {
                    doc: id,
                    kind: NoticeKind::Changed,
                    ..
                }) => id,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let seen = Instant::now();
            let waiting: Vec<(usize, String)> = {
                let t = tracker.lock().expect("tracker");
                let Some(edits) = t.by_member.get(&id) else {
                    continue;
                };
                edits
                    .iter()
                    .filter(|&&e| t.arrived[dest][e].is_none())
                    .map(|&e| (e, t.activity[e].clone()))
                    .collect()
            };
            if waiting.is_empty() {
                continue;
            }
            let Some(repo) = repo.upgrade() else { return };
            let doc = repo.load(&id).ok().flatten();
            drop(repo);
            let Some(doc) = doc else { continue };
            let reader = Reader::now(&doc);
            let Some(acts) = reader.obj(&ROOT, casefile::keys::ACTIVITIES) else {
                continue;
            };
            let mut t = tracker.lock().expect("tracker");
            for (e, aid) in waiting {
                if reader.obj(&acts, &aid).is_some() {
                    let started = t.started[e];
                    t.arrived[dest][e] = Some(seen - started);
                }
            }
            drop(t);
            arrivals.notify_waiters();
        }
    });
}

/// The offices of the B2 chain.
pub struct Chain<'a> {
    /// The county node (the mirror, holding every document).
    pub county: &'a Running,
    /// (org, config folder, expected members) of the village's township, the community's
    /// township, the village, the community.
    pub offices: [(OrgPath, std::path::PathBuf, u64); 4],
    /// The members edited (home: the village; residence: the community).
    pub members: Vec<DocId>,
}

async fn wait_synced(
    running: &Running,
    parent: &OrgPath,
    want: u64,
    t0: Instant,
    timeout: Duration,
) -> anyhow::Result<f64> {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = running.api.status().await?;
        let peer = PeerCounters::of(&status, parent.as_str());
        if doc_counts(&status).0 == want && peer.connected && peer.docs_pending == 0 {
            return Ok(t0.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            refused_total(&status) == 0,
            "{} refused changes: {}",
            running.node.org,
            status["refused"]
        );
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "{} did not sync its {want} members within {timeout:?}: {status}",
            running.node.org
        );
    }
}

/// Runs B2 on a chain: starts the townships, then the village and community, waits for
/// their first sync, then makes `edits` activity edits at the village — one every
/// `interval`, or with a zero interval each once the previous one arrived everywhere — and
/// times their arrival at the county and the community.
pub async fn propagate(
    ca: &Path,
    chain: Chain<'_>,
    edits: usize,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<(Vec<Running>, Propagation)> {
    let county_org = chain.county.node.org.clone();
    let mut nodes: Vec<Running> = Vec::new();
    let mut setup = Vec::new();
    // Townships dial the county, the village and community dial their townships.
    for step in [[0usize, 1], [2, 3]] {
        let mut started = Vec::new();
        for i in step {
            let (org, dir, want) = &chain.offices[i];
            let (parent_org, parent_addr) = match i {
                0 | 1 => (county_org.clone(), chain.county.node.quic_addr),
                _ => (chain.offices[i - 2].0.clone(), nodes[i - 2].node.quic_addr),
            };
            let peers = [PeerConfig {
                addr: parent_addr.to_string(),
                org: parent_org.clone(),
            }];
            let config = office_config(ca, dir, org, any_port(), any_port(), &peers)?;
            let t0 = Instant::now();
            nodes.push(start(&config).await?);
            started.push((i, parent_org, *want, t0));
        }
        for (i, parent, want, t0) in started {
            let seconds = wait_synced(&nodes[i], &parent, want, t0, timeout).await?;
            setup.push(ChainNode {
                org: chain.offices[i].0.to_string(),
                members: want,
                sync_seconds: seconds,
            });
        }
    }
    // Traffic on the four links while nobody edits (each link counted once, at the child).
    let parents: Vec<OrgPath> = (0..4)
        .map(|i| {
            if i < 2 {
                county_org.clone()
            } else {
                chain.offices[i - 2].0.clone()
            }
        })
        .collect();
    let link_bytes = async |nodes: &[Running]| -> anyhow::Result<Vec<(u64, u64)>> {
        let mut links = Vec::new();
        for (node, parent) in nodes.iter().zip(&parents) {
            let p = PeerCounters::of(&node.api.status().await?, parent.as_str());
            links.push((p.bytes(), p.messages_in + p.messages_out));
        }
        Ok(links)
    };
    let idle = Duration::from_secs(2);
    let before = link_bytes(&nodes).await?;
    let idle_cpu_before = proc_cpu_seconds(std::process::id());
    tokio::time::sleep(idle).await;
    let after = link_bytes(&nodes).await?;
    let idle_cores_busy = proc_cpu_seconds(std::process::id())
        .zip(idle_cpu_before)
        .map(|(a, b)| (a - b) / idle.as_secs_f64());
    let idle_links: Vec<IdleLink> = (0..4)
        .map(|i| IdleLink {
            child: chain.offices[i].0.to_string(),
            parent: parents[i].to_string(),
            bytes_per_s: after[i].0.saturating_sub(before[i].0) as f64 / idle.as_secs_f64(),
            messages_per_s: after[i].1.saturating_sub(before[i].1) as f64 / idle.as_secs_f64(),
        })
        .collect();
    let idle_bytes_per_s = idle_links.iter().map(|l| l.bytes_per_s).sum();
    let village = &nodes[2];
    let community = &nodes[3];
    let arrivals = Arc::new(tokio::sync::Notify::new());
    let tracker = Arc::new(Mutex::new(Tracker {
        by_member: HashMap::new(),
        activity: Vec::with_capacity(edits),
        started: Vec::with_capacity(edits),
        arrived: [vec![None; edits], vec![None; edits]],
    }));
    for (dest, node) in [(0, &chain.county.node), (1, &community.node)] {
        watch_edits(
            node.repo().subscribe(),
            Arc::downgrade(node.repo()),
            tracker.clone(),
            arrivals.clone(),
            dest,
        );
    }
    let repo = village.node.repo();
    let me = repo.me().clone();
    let mut local = Vec::with_capacity(edits);
    let mut progress = Progress::new("B2 edits", edits);
    let cpu_before = proc_cpu_seconds(std::process::id());
    let wall = Instant::now();
    let start_at = tokio::time::Instant::now();
    let mut timed_out = 0;
    for e in 0..edits {
        if !interval.is_zero() {
            tokio::time::sleep_until(start_at + interval * e as u32).await;
        } else if e > 0 {
            // Closed loop: the next edit once the last one reached both destinations.
            let waited = Instant::now();
            loop {
                let notified = arrivals.notified();
                let done = {
                    let t = tracker.lock().expect("tracker");
                    t.arrived[0][e - 1].is_some() && t.arrived[1][e - 1].is_some()
                };
                if done {
                    timed_out = 0;
                    break;
                }
                if waited.elapsed() > CLOSED_LOOP_WAIT {
                    timed_out += 1;
                    anyhow::ensure!(
                        timed_out < 3,
                        "B2: three edits in a row did not arrive within {CLOSED_LOOP_WAIT:?}"
                    );
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
        }
        let id = &chain.members[e % chain.members.len()];
        let aid = entry_id('a', rand::random());
        let activity = ActivityInput {
            date: "2026-11-04".into(),
            kind: "organisation-life".into(),
            description: format!("Busy-season branch meeting, edit {e}"),
            points: Some(2),
        };
        let t = Instant::now();
        {
            let mut tr = tracker.lock().expect("tracker");
            tr.by_member.entry(id.clone()).or_default().push(e);
            tr.activity.push(aid.clone());
            tr.started.push(t);
        }
        repo.write(id, false, |doc, _| {
            Ok(casefile::add_activity(doc, &aid, &activity, &me)?)
        })?;
        local.push(t.elapsed());
        progress.set(e + 1);
    }
    progress.finish();
    let settle = Instant::now();
    loop {
        let done = {
            let t = tracker.lock().expect("tracker");
            t.arrived.iter().all(|a| a.iter().all(Option::is_some))
        };
        if done || settle.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_busy = proc_cpu_seconds(std::process::id())
        .zip(cpu_before)
        .map(|(a, b)| (a - b) / wall.elapsed().as_secs_f64());
    let t = tracker.lock().expect("tracker");
    let arrived = |d: usize| -> Vec<Duration> { t.arrived[d].iter().flatten().copied().collect() };
    let result = Propagation {
        edits,
        interval_ms: interval.as_millis() as u64,
        members: chain.members.len(),
        chain: setup,
        county: percentiles(&arrived(0)),
        community: percentiles(&arrived(1)),
        local_write: percentiles(&local),
        idle_bytes_per_s,
        idle_links,
        idle_cores_busy,
        cpu_cores_busy: cpu_busy,
        missing: [
            t.arrived[0].iter().filter(|a| a.is_none()).count(),
            t.arrived[1].iter().filter(|a| a.is_none()).count(),
        ],
    };
    drop(t);
    Ok((nodes, result))
}
