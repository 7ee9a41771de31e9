//! A village office killed with SIGKILL again and again under a steady write load loses
//! nothing it acknowledged, and resyncs with its township afterwards (issue 13, item 4).
//!
//! Two real `amphi` processes from one CA: the township `hoboksar/chagantolgay` stays up the
//! whole run on a fixed QUIC port; the village `hoboksar/chagantolgay/bayin` dials it (its
//! `[[peers]]`) and is the victim. Each cycle starts the village and runs two writers against
//! its admin API — new members, and activities recorded on existing members — while a writer
//! at the township keeps adding members homed in the village and activities on village case
//! files (the township is an ancestor, so both are within its authority, and the village holds
//! the documents). After a random 50–800 ms the village is killed with SIGKILL, writes in
//! flight, and started again. After every restart every write the village answered with a
//! 2xx, in any cycle so far, must be there: each member in the village's member list, the
//! members of the last cycle and a random sample of older ones read back in full, and each
//! case file that got activities read back with every acknowledged activity. After the last
//! cycle both offices must converge within 60 s: the village holds every member and activity
//! the township acknowledged, the township every member and activity the village acknowledged.
//! A missing write fails the test naming it, the cycle it was acknowledged in and the seed.
//!
//! ```text
//! cargo nextest run -p amphi-node --test crash_cycles --no-capture    # 50 cycles, as in CI
//! AMPHI_CRASH_CYCLES=1000 cargo nextest run -p amphi-node --test crash_cycles --no-capture
//! AMPHI_CRASH_SEED=42 cargo nextest run -p amphi-node --test crash_cycles --no-capture
//! ```
//!
//! `--no-capture` shows the seed at the start and one summary line at the end, e.g.
//! `crash cycles: 50 cycles, 1234 API writes acknowledged (0 lost), 567 peer writes (0 lost),
//! resync in 2.3 s, seed 42, 95 s`. The seed fixes the kill delays and the sample read back;
//! the processes' own timing is not deterministic, so a seed repeats the schedule, not the
//! exact interleaving of writes and kills.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{KillOnDrop, add_peer, fix_listen, office, run, token};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TOWNSHIP: &str = "hoboksar/chagantolgay";
const VILLAGE: &str = "hoboksar/chagantolgay/bayin";
/// How long after the village starts (and its writers with it) it is killed.
const KILL_AFTER_MS: RangeInclusive<u64> = 50..=800;
/// Members that receive the village's activities at a time.
const POOL: usize = 3;
/// A fresh pool every this many cycles, so no case file grows without bound in a long run.
const POOL_CYCLES: usize = 25;
/// Older members read back in full after each restart, besides the last cycle's.
const SAMPLE: usize = 20;
/// Pause between the township's writes: a steady load, not a flood.
const TOWNSHIP_PACE: Duration = Duration::from_millis(25);
/// Every HTTP request gives up after this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Listing every member grows with the store: tens of thousands of lines in a long run.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the offices may take to converge after the last cycle.
const RESYNC_WITHIN: Duration = Duration::from_secs(60);
/// How long the writers may take to notice their node died.
const WRITERS_STOP_WITHIN: Duration = Duration::from_secs(15);

/// One office's admin API.
#[derive(Clone)]
struct Office {
    name: &'static str,
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Office {
    /// A fresh client (no pooled connection to a killed process) for the node at `admin`.
    fn new(name: &'static str, admin: &str, config: &Path) -> Office {
        Office {
            name,
            http: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .unwrap(),
            base: format!("http://{admin}/api/v1"),
            auth: format!("Bearer {}", token(config.parent().unwrap())),
        }
    }

    /// Status and JSON body (`null` when the body did not arrive whole).
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// A read that must be answered within `timeout`: the node is up when the harness reads.
    async fn get_within(&self, path: &str, timeout: Duration) -> (u16, Value) {
        let fail = |what: &str, e: reqwest::Error| -> ! {
            // reqwest's own message hides the cause (e.g. a timeout while reading the body).
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                cause.push_str(&format!(": {s}"));
                source = s.source();
            }
            panic!("{}: GET {path}: {what}: {cause}", self.name)
        };
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .timeout(timeout)
            .send()
            .await
            .unwrap_or_else(|e| fail("request", e));
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap_or_else(|e| fail("body", e));
        let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{}: GET {path}: {status} with a body that is not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&body)
            )
        });
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_within(path, HTTP_TIMEOUT).await
    }

    /// The members homed in the village that this office lists, name → id.
    async fn village_members(&self) -> HashMap<String, String> {
        let (status, v) = self
            .get_within(&format!("/members?org={VILLAGE}"), LIST_TIMEOUT)
            .await;
        assert_eq!(status, 200, "{}: list members: {v}", self.name);
        v["members"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: list members without a list: {v}", self.name))
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_owned(),
                    m["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The member's case file, or `None` when this office does not have it.
    async fn case_file(&self, id: &str) -> Option<Value> {
        match self.get(&format!("/members/{id}")).await {
            (200, v) => Some(v),
            (404, _) => None,
            (status, v) => panic!("{}: GET member {id}: {status} {v}", self.name),
        }
    }

    /// The descriptions of the member's activities here, or `None` without the case file.
    async fn activities(&self, id: &str) -> Option<HashSet<String>> {
        let case = self.case_file(id).await?;
        Some(
            case["activities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["description"].as_str().map(str::to_owned))
                .collect(),
        )
    }
}

fn new_member(name: &str) -> Value {
    json!({"name": name, "gender": "female", "ethnicity": "Mongol", "birth_date": "1971-03-02",
           "joined_at": "1996-07-01", "home_org": VILLAGE})
}

fn new_activity(description: &str) -> Value {
    json!({"date": "2026-11-02", "kind": "study", "description": description, "points": 1})
}

/// A member an office acknowledged creating.
struct Member {
    /// `None` when the 201 arrived but its body did not (the kill cut it off); learnt from
    /// the member list at the next check.
    id: Option<String>,
    /// The cycle it was acknowledged in.
    cycle: usize,
}

/// The writes an office acknowledged with a 2xx, each with the cycle it was acknowledged in.
#[derive(Default)]
struct Ledger {
    /// Member name (unique in this test) → member.
    members: BTreeMap<String, Member>,
    /// Member id → descriptions (unique in this test) of the activities recorded on it.
    activities: BTreeMap<String, Vec<(String, usize)>>,
    /// Answers that were neither 2xx nor an expected refusal.
    refused: Vec<String>,
    /// Requests the kill cut off before they were answered (neither acknowledged nor lost).
    cut_off: usize,
}

impl Ledger {
    fn activity_count(&self) -> usize {
        self.activities.values().map(Vec::len).sum()
    }

    fn writes(&self) -> usize {
        self.members.len() + self.activity_count()
    }

    fn merge(&mut self, other: Ledger) {
        self.members.extend(other.members);
        for (id, mut acts) in other.activities {
            self.activities.entry(id).or_default().append(&mut acts);
        }
        self.refused.extend(other.refused);
        self.cut_off += other.cut_off;
    }

    fn add_member(&mut self, name: String, created: &Value, cycle: usize) -> Option<String> {
        let id = created["id"].as_str().map(str::to_owned);
        self.members.insert(
            name,
            Member {
                id: id.clone(),
                cycle,
            },
        );
        id
    }

    fn add_activity(&mut self, member: &str, description: String, cycle: usize) {
        self.activities
            .entry(member.to_owned())
            .or_default()
            .push((description, cycle));
    }
}

/// Starts `amphi run` off the async workers (it blocks until the node's banner).
async fn start(config: &Path) -> (Child, String) {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || run(&config))
        .await
        .unwrap()
}

/// Adds members homed in the village until `stop`, or until the village stops answering.
async fn add_members(village: Office, cycle: usize, stop: Arc<AtomicBool>) -> Ledger {
    let mut acked = Ledger::default();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("Bayin c{cycle} n{n}");
        match village.post("/members", &new_member(&name)).await {
            Ok((201, created)) => {
                acked.add_member(name, &created, cycle);
            }
            Ok((status, v)) => {
                acked
                    .refused
                    .push(format!("village: add member {name}: {status} {v}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                acked.cut_off += 1; // killed
                break;
            }
        }
    }
    acked
}

/// Records activities on the pool's members in turn until `stop`, or until the village stops
/// answering.
async fn record_activities(
    village: Office,
    pool: Vec<String>,
    cycle: usize,
    stop: Arc<AtomicBool>,
) -> Ledger {
    let mut acked = Ledger::default();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let member = &pool[n % pool.len()];
        let description = format!("bayin c{cycle} n{n}");
        let path = format!("/members/{member}/activities");
        match village.post(&path, &new_activity(&description)).await {
            // The status line is the acknowledgement; the body is not needed.
            Ok((201, _)) => acked.add_activity(member, description, cycle),
            Ok((status, v)) => {
                acked.refused.push(format!(
                    "village: activity {description} on {member}: {status} {v}"
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                acked.cut_off += 1; // killed
                break;
            }
        }
    }
    acked
}

/// What the township writer acknowledged, and how often it found a village pool member not
/// yet synced to it.
struct TownshipWrites {
    acked: Ledger,
    not_yet_synced: usize,
}

/// The township's steady load until `stop`: members homed in the village, and activities on
/// its own latest member and on the village's pool members (concurrent edits to the case
/// files the village is writing).
async fn township_writer(
    township: Office,
    village_pool: Arc<Mutex<Vec<String>>>,
    cycle: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> TownshipWrites {
    let mut acked = Ledger::default();
    let mut not_yet_synced = 0;
    let mut latest: Option<String> = None;
    for n in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let c = cycle.load(Ordering::Relaxed);
        if n % 2 == 0 {
            let name = format!("Chagantolgay n{n}");
            match township.post("/members", &new_member(&name)).await {
                Ok((201, created)) => {
                    latest = acked.add_member(name, &created, c).or(latest);
                }
                other => acked
                    .refused
                    .push(format!("township: add member {name}: {other:?}")),
            }
        } else {
            let from_pool = n % 4 == 1;
            let target = if from_pool {
                let pool = village_pool.lock().unwrap_or_else(PoisonError::into_inner);
                pool.get(n / 4 % pool.len().max(1)).cloned()
            } else {
                latest.clone()
            };
            if let Some(member) = target {
                let description = format!("chagantolgay n{n}");
                let path = format!("/members/{member}/activities");
                match township.post(&path, &new_activity(&description)).await {
                    Ok((201, _)) => acked.add_activity(&member, description, c),
                    Ok((404, _)) if from_pool => not_yet_synced += 1,
                    other => acked.refused.push(format!(
                        "township: activity {description} on {member}: {other:?}"
                    )),
                }
            }
        }
        tokio::time::sleep(TOWNSHIP_PACE).await;
    }
    TownshipWrites {
        acked,
        not_yet_synced,
    }
}

/// Lines naming lost writes, shortened to the first few.
fn listing(lost: &[String]) -> String {
    let mut s: String = lost.iter().take(25).map(|l| format!("\n  {l}")).collect();
    if lost.len() > 25 {
        s.push_str(&format!("\n  … and {} more", lost.len() - 25));
    }
    s
}

/// After the village's restart following kill `cycle`: everything it ever acknowledged is
/// there. Fills in member ids learnt from the list.
async fn check_village(
    village: &Office,
    acked: &mut Ledger,
    cycle: usize,
    seed: u64,
    rng: &mut StdRng,
) {
    let mut lost = Vec::new();
    let listed = village.village_members().await;
    for (name, m) in &mut acked.members {
        match (listed.get(name), &m.id) {
            (None, _) => lost.push(format!(
                "member {name} ({}), acknowledged in cycle {}: not in the member list",
                m.id.as_deref().unwrap_or("id unknown"),
                m.cycle
            )),
            (Some(id), Some(known)) if id != known => lost.push(format!(
                "member {name} ({known}), acknowledged in cycle {}: listed as {id}",
                m.cycle
            )),
            (Some(id), _) => m.id = Some(id.clone()),
        }
    }
    // Read back in full: the last cycle's members, which were written right up to the kill,
    // and a sample of older ones.
    let (recent, older): (Vec<_>, Vec<_>) = acked
        .members
        .iter()
        .filter_map(|(name, m)| Some((name, m.id.as_deref()?, m.cycle)))
        .partition(|(_, _, c)| *c == cycle);
    let sample = older.choose_multiple(rng, SAMPLE).copied();
    for (name, id, c) in recent.into_iter().chain(sample) {
        match village.case_file(id).await {
            Some(case) if case["name"] == name.as_str() && case["home_org"] == VILLAGE => {}
            Some(case) => lost.push(format!(
                "member {name} ({id}), acknowledged in cycle {c}: read back as {case}"
            )),
            None => lost.push(format!(
                "member {name} ({id}), acknowledged in cycle {c}: GET says 404"
            )),
        }
    }
    for (id, acts) in &acked.activities {
        let Some(have) = village.activities(id).await else {
            lost.push(format!(
                "case file {id} with {} acknowledged activities: GET says 404",
                acts.len()
            ));
            continue;
        };
        for (description, c) in acts {
            if !have.contains(description) {
                lost.push(format!(
                    "activity {description:?} on {id}, acknowledged in cycle {c}: not in the case file"
                ));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "seed {seed}: after kill -9 number {cycle}, the village lost {} acknowledged writes:{}",
        lost.len(),
        listing(&lost)
    );
}

/// What `office` still lacks of the members and activities in `acked`. `done` holds the
/// case files already seen complete there, so each poll reads only what is still missing.
async fn lacking(office: &Office, acked: &Ledger, done: &mut HashSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    let listed = office.village_members().await;
    for (name, m) in &acked.members {
        if !listed.contains_key(name) {
            missing.push(format!(
                "{} lacks member {name} ({}), acknowledged in cycle {}",
                office.name,
                m.id.as_deref().unwrap_or("id unknown"),
                m.cycle
            ));
        }
    }
    for (id, acts) in &acked.activities {
        if done.contains(id) {
            continue;
        }
        let have = office.activities(id).await.unwrap_or_default();
        let before = missing.len();
        for (description, c) in acts {
            if !have.contains(description) {
                missing.push(format!(
                    "{} lacks activity {description:?} on {id}, acknowledged in cycle {c}",
                    office.name
                ));
            }
        }
        if missing.len() == before {
            done.insert(id.clone());
        }
    }
    missing
}

/// Waits until the village holds everything the township acknowledged and the township
/// everything the village acknowledged; returns how long that took.
async fn await_resync(
    village: &Office,
    township: &Office,
    village_acked: &Ledger,
    township_acked: &Ledger,
    seed: u64,
) -> Duration {
    let began = Instant::now();
    let (mut at_village, mut at_township) = (HashSet::new(), HashSet::new());
    loop {
        let mut missing = lacking(village, township_acked, &mut at_village).await;
        missing.extend(lacking(township, village_acked, &mut at_township).await);
        if missing.is_empty() {
            return began.elapsed();
        }
        if began.elapsed() > RESYNC_WITHIN {
            let (_, status) = village.get("/status").await;
            panic!(
                "seed {seed}: no resync within {RESYNC_WITHIN:?} after the last restart; {} writes missing:{}\nvillage status: {status}",
                missing.len(),
                listing(&missing)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_killed_again_and_again_loses_nothing_and_resyncs() {
    let began = Instant::now();
    let cycles = env_number("AMPHI_CRASH_CYCLES").unwrap_or(50) as usize;
    let seed = env_number("AMPHI_CRASH_SEED").unwrap_or_else(rand::random);
    println!("crash cycles: {cycles} cycles, seed {seed} (AMPHI_CRASH_CYCLES, AMPHI_CRASH_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().unwrap();
    let township_config = office(tmp.path(), TOWNSHIP);
    let township_quic = fix_listen(&township_config);
    let village_config: PathBuf = office(tmp.path(), VILLAGE);
    add_peer(&village_config, township_quic, TOWNSHIP);

    let (child, admin) = start(&township_config).await;
    let mut township_node = KillOnDrop(child);
    let township = Office::new("township", &admin, &township_config);
    let (child, village_admin) = start(&village_config).await;
    let mut village_node = KillOnDrop(child);
    let mut village = Office::new("village", &village_admin, &village_config);

    let village_pool = Arc::new(Mutex::new(Vec::new()));
    let current_cycle = Arc::new(AtomicUsize::new(1));
    let township_stop = Arc::new(AtomicBool::new(false));
    let township_writes = tokio::spawn(township_writer(
        township.clone(),
        village_pool.clone(),
        current_cycle.clone(),
        township_stop.clone(),
    ));

    let mut acked = Ledger::default();
    let mut pool = Vec::new();
    let (mut restarting, mut checking) = (Duration::ZERO, Duration::ZERO);
    for cycle in 1..=cycles {
        current_cycle.store(cycle, Ordering::Relaxed);
        if cycle % POOL_CYCLES == 1 || pool.is_empty() {
            pool.clear();
            for k in 0..POOL {
                let name = format!("Bayin pool c{cycle} k{k}");
                let (status, created) = village
                    .post("/members", &new_member(&name))
                    .await
                    .unwrap_or_else(|e| panic!("village: add pool member {name}: {e}"));
                assert_eq!(status, 201, "village: add pool member {name}: {created}");
                pool.push(acked.add_member(name, &created, cycle).unwrap());
            }
            *village_pool.lock().unwrap_or_else(PoisonError::into_inner) = pool.clone();
        }

        let stop = Arc::new(AtomicBool::new(false));
        let writers = [
            tokio::spawn(add_members(village.clone(), cycle, stop.clone())),
            tokio::spawn(record_activities(
                village.clone(),
                pool.clone(),
                cycle,
                stop.clone(),
            )),
        ];
        tokio::time::sleep(Duration::from_millis(rng.random_range(KILL_AFTER_MS))).await;
        if let Some(exit) = village_node.0.try_wait().unwrap() {
            panic!("seed {seed}: the village exited by itself ({exit}) in cycle {cycle}");
        }
        village_node.0.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        village_node.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let done = tokio::time::timeout(WRITERS_STOP_WITHIN, w)
                .await
                .expect("the village's writers stop once it is killed")
                .unwrap();
            acked.merge(done);
        }

        let restarted = Instant::now();
        let (child, admin) = start(&village_config).await;
        village_node = KillOnDrop(child);
        assert_eq!(admin, village_admin, "the village's admin address is fixed");
        village = Office::new("village", &admin, &village_config);
        let checked = Instant::now();
        check_village(&village, &mut acked, cycle, seed, &mut rng).await;
        restarting += checked - restarted;
        checking += checked.elapsed();
        if cycle % 100 == 0 {
            eprintln!(
                "crash cycles: {cycle}/{cycles}, {} writes acknowledged, {:.0} s (restarts {:.0} s, checks {:.0} s)",
                acked.writes(),
                began.elapsed().as_secs_f64(),
                restarting.as_secs_f64(),
                checking.as_secs_f64()
            );
        }
    }

    township_stop.store(true, Ordering::Relaxed);
    let TownshipWrites {
        acked: township_acked,
        not_yet_synced,
    } = tokio::time::timeout(WRITERS_STOP_WITHIN, township_writes)
        .await
        .expect("the township's writer stops")
        .unwrap();
    assert!(
        township_node.0.try_wait().unwrap().is_none(),
        "the township exited during the run"
    );
    let refused: Vec<String> = acked
        .refused
        .iter()
        .chain(&township_acked.refused)
        .cloned()
        .collect();
    assert!(
        refused.is_empty(),
        "seed {seed}: {} writes were refused or failed while the node was up:{}",
        refused.len(),
        listing(&refused)
    );
    let resync = await_resync(&village, &township, &acked, &township_acked, seed).await;

    println!(
        "crash cycles: {cycles} cycles, {} API writes acknowledged (0 lost), {} peer writes (0 lost), resync in {:.1} s, seed {seed}, {:.0} s",
        acked.writes(),
        township_acked.writes(),
        resync.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    println!(
        "crash cycles: village {} members and {} activities ({} requests cut off by the kills), township {} members and {} activities ({} aimed at pool members not yet synced); {:.0} s in restarts, {:.0} s in checks",
        acked.members.len(),
        acked.activity_count(),
        acked.cut_off,
        township_acked.members.len(),
        township_acked.activity_count(),
        not_yet_synced,
        restarting.as_secs_f64(),
        checking.as_secs_f64()
    );
}
