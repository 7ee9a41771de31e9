//! A seeded, deterministic simulation of transfers across a county, in-process and without
//! sockets (the protocol crate's sans-IO core: documents, the gate, DocSync).
//!
//! Seven offices each hold a copy of one member's case file and sync along the tree. Random
//! offices open, accept, reject and cancel transfers as their own (possibly stale) view
//! allows, while random links go down and up. After every link heals and sync goes quiet,
//! every office must hold the same document and resolve the same home, the same transfer
//! states and the same conflicts; the member must have exactly one home; and no honest step
//! may have been refused.
//!
//! `AMPHI_SIM_SEEDS=N` runs N seeds (default 500); `AMPHI_SIM_SEED=S` replays one seed.

use std::collections::BTreeMap;

use amphi_protocol::attest::{Attestation, Authenticator};
use amphi_protocol::authority::Refusal;
use amphi_protocol::casefile::{self, NewMember};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::reader::Reader;
use amphi_protocol::transfer::{self, Decision, Resolution, State};
use amphi_protocol::visibility::{may_hold, scope};
use amphi_protocol::{DocId, OrgPath, gate};
use automerge::{ActorId, AutoCommit};

const OFFICES: &[&str] = &[
    "c", "c/t1", "c/t2", "c/t1/v1", "c/t1/v2", "c/t2/k1", "c/t2/v3",
];
const TARGETS: &[&str] = &["c/t1/v1", "c/t1/v2", "c/t2/k1", "c/t2/v3"];
const STEPS: usize = 60;

/// Signatures are the node's business (node/src/trust.rs); here every claim is honest.
struct Honest;

impl Authenticator for Honest {
    fn authenticate(
        &self,
        _: &automerge::Change,
        _: &OrgPath,
        _: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_revocation(&self, _: &str, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

/// splitmix64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Office {
    org: OrgPath,
    doc: AutoCommit,
    syncs: BTreeMap<usize, DocSync>,
}

struct County {
    offices: Vec<Office>,
    edges: Vec<(usize, usize, bool)>,
    refused: Vec<String>,
    routing_refusals: usize,
    id: DocId,
}

/// True for a document with nothing in it (an office that never held the file).
fn empty(doc: &AutoCommit) -> bool {
    automerge::ReadDoc::keys(doc, automerge::ROOT)
        .next()
        .is_none()
}

fn org(s: &str) -> OrgPath {
    OrgPath::parse(s).unwrap()
}

impl County {
    fn new() -> County {
        let id = DocId::new_member([1; 8]);
        let member: NewMember = serde_json::from_value(serde_json::json!({
            "name": "Bayar", "gender": "male", "ethnicity": "Mongol", "birth_date": "1971-03-02",
            "joined_at": "1996-07-01", "home_org": "c/t1/v1"}))
        .unwrap();
        let mut first = AutoCommit::new().with_actor(ActorId::from(b"c/t1/v1".as_slice()));
        casefile::create(&mut first, &id, &member).unwrap();
        gate::commit_as(&mut first, &org("c/t1/v1"), 0);
        // Only the offices in scope (the home village and its ancestors) hold the file.
        let offices = OFFICES
            .iter()
            .map(|o| {
                let mut doc = if org(o).is_at_or_above(&org("c/t1/v1")) {
                    first.fork()
                } else {
                    AutoCommit::new()
                };
                doc.set_actor(ActorId::from(o.as_bytes()));
                Office {
                    org: org(o),
                    doc,
                    syncs: BTreeMap::new(),
                }
            })
            .collect();
        let index = |o: &str| OFFICES.iter().position(|x| *x == o).unwrap();
        let edges = OFFICES
            .iter()
            .skip(1)
            .map(|o| (index(&org(o).parent().unwrap().to_string()), index(o), true))
            .collect();
        County {
            offices,
            edges,
            refused: Vec::new(),
            routing_refusals: 0,
            id,
        }
    }

    /// True when office `i` holds the file and, in its own view, may.
    fn holds(&self, i: usize) -> bool {
        let o = &self.offices[i];
        may_hold(&self.id, &scope(&self.id, &o.doc), &o.org)
    }

    fn view(&self, i: usize) -> (Vec<transfer::Entry>, Resolution) {
        transfer::resolve_doc(&Reader::now(&self.offices[i].doc))
    }

    /// One message each way on link (a, b), if either side has something to say.
    fn exchange(&mut self, a: usize, b: usize) -> bool {
        let mut said = false;
        for (from, to) in [(a, b), (b, a)] {
            // Like a node: send what you hold to a peer that may hold it or held it before,
            // and answer a peer that wrote to you (even with nothing yet).
            let replying = self.offices[from].syncs.contains_key(&to);
            let peer_held = !empty(&self.offices[to].doc);
            let sender = &self.offices[from];
            let offers = !empty(&sender.doc)
                && (may_hold(
                    &self.id,
                    &scope(&self.id, &sender.doc),
                    &self.offices[to].org,
                ) || peer_held);
            if !offers && !replying {
                continue;
            }
            let out = {
                let o = &mut self.offices[from];
                o.syncs.entry(to).or_default().generate(&mut o.doc)
            };
            if let Some(out) = out {
                said = true;
                let from_org = self.offices[from].org.clone();
                let o = &mut self.offices[to];
                let me = o.org.clone();
                let sync = o.syncs.entry(from).or_default();
                let adm = sync.receive(
                    &mut o.doc,
                    &self.id,
                    &out.message,
                    &[],
                    &from_org,
                    &me,
                    &Honest,
                );
                for r in adm.refused {
                    match r.reason {
                        // Routing: a relay that left the scope offers what it should not; a
                        // node's exit bookkeeping prevents this, the simulation does not.
                        Refusal::OutsideSenderScope | Refusal::OutsideReceiverScope => {
                            self.routing_refusals += 1
                        }
                        reason => self
                            .refused
                            .push(format!("{} at {me}: {reason}", reason.code())),
                    }
                }
            }
        }
        said
    }

    fn sync_round(&mut self) -> bool {
        let up: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter(|e| e.2)
            .map(|e| (e.0, e.1))
            .collect();
        let mut said = false;
        for (a, b) in up {
            said |= self.exchange(a, b);
        }
        said
    }

    /// A random office takes a step its own view allows.
    fn act(&mut self, rng: &mut Rng, step: usize) {
        let i = rng.below(self.offices.len());
        if !self.holds(i) {
            return;
        }
        let (entries, res) = self.view(i);
        let me = self.offices[i].org.clone();
        let at = format!("2026-11-23T00:{:02}:{:02}.{:03}Z", step / 60, step % 60, i);
        let Some(home) = res.home.clone() else { return };
        let open = res.open_transfer(&entries).cloned();
        let doc = &mut self.offices[i].doc;
        match open {
            None if me.is_at_or_above(&org(&home)) => {
                let target = TARGETS[rng.below(TARGETS.len())];
                if target == home {
                    return;
                }
                let tid = format!("t-{step:04}-{i}");
                transfer::open(doc, &tid, &org(&home), &org(target), "moves", &me, &at).unwrap();
            }
            Some(t) => {
                let decision = if me.is_at_or_above(&org(&t.to_org)) {
                    if rng.chance(70) {
                        Decision::Accept
                    } else {
                        Decision::Reject
                    }
                } else if me.is_at_or_above(&org(&t.from_org)) && rng.chance(40) {
                    Decision::Cancel
                } else {
                    return;
                };
                transfer::decide(doc, &t.id, decision, &me, &at)
                    .unwrap()
                    .unwrap();
            }
            None => return,
        }
        gate::commit_as(doc, &me, step as i64 * 1000).unwrap();
    }
}

fn run(seed: u64) -> Result<Stats, String> {
    let mut rng = Rng(seed);
    let mut county = County::new();
    for step in 0..STEPS {
        if rng.chance(35) {
            county.act(&mut rng, step);
        }
        if rng.chance(20) {
            let e = rng.below(county.edges.len());
            county.edges[e].2 = !county.edges[e].2;
        }
        county.sync_round();
    }
    for e in &mut county.edges {
        e.2 = true;
    }
    let mut rounds = 0;
    while county.sync_round() {
        rounds += 1;
        if rounds > 500 {
            return Err("sync did not go quiet after healing".into());
        }
    }
    if !county.refused.is_empty() {
        return Err(format!("honest steps were refused: {:?}", county.refused));
    }
    // Every office that holds the file at the end (the others would have purged it).
    let holders: Vec<usize> = (0..county.offices.len())
        .filter(|i| county.holds(*i))
        .collect();
    let heads: Vec<_> = holders
        .iter()
        .map(|i| county.offices[*i].doc.get_heads())
        .collect();
    if heads.iter().any(|h| *h != heads[0]) {
        let detail: Vec<String> = holders
            .iter()
            .map(|i| {
                let (e, r) = county.view(*i);
                format!(
                    "{} ({} changes): home {:?}, {} transfers",
                    OFFICES[*i],
                    county.offices[*i].doc.get_changes(&[]).len(),
                    r.home,
                    e.len()
                )
            })
            .collect();
        return Err(format!(
            "holders hold different documents after healing: {detail:?}; routing refusals {}",
            county.routing_refusals
        ));
    }
    let views: Vec<Resolution> = holders.iter().map(|i| county.view(*i).1).collect();
    if let Some(i) = views.iter().position(|v| *v != views[0]) {
        return Err(format!(
            "{} resolves differently: {:?} vs {:?}",
            OFFICES[holders[i]], views[i], views[0]
        ));
    }
    let home = views[0].home.clone().ok_or("no home")?;
    let homes = OFFICES.iter().filter(|o| **o == home).count();
    if homes != 1 {
        return Err(format!("{homes} offices are the home {home}"));
    }
    // The union of rosters: each holder's roster lists the member as home iff it is the home.
    let listing: Vec<&str> = holders
        .iter()
        .map(|i| OFFICES[*i])
        .filter(|o| *o == home)
        .collect();
    if listing.len() != 1 {
        let held: Vec<String> = county
            .offices
            .iter()
            .map(|o| format!("{}:{}", o.org, if empty(&o.doc) { "-" } else { "doc" }))
            .collect();
        return Err(format!(
            "the member appears as home on {} rosters: {listing:?} (home {home}, holders {:?}, copies {held:?}, routing refusals {})",
            listing.len(),
            holders.iter().map(|i| OFFICES[*i]).collect::<Vec<_>>(),
            county.routing_refusals
        ));
    }
    let open = views[0]
        .states
        .values()
        .filter(|s| **s == State::Open)
        .count();
    if open > 1 {
        return Err(format!("{open} transfers are open at once"));
    }
    // The case file's own view agrees: its home is the resolved home.
    let case =
        casefile::CaseFile::read(&county.offices[holders[0]].doc).ok_or("unreadable case file")?;
    if case.home_org != home {
        return Err(format!(
            "case file says home {} but resolution says {home}",
            case.home_org
        ));
    }
    Ok(Stats {
        opened: views[0].states.len(),
        accepted: views[0]
            .states
            .values()
            .filter(|s| **s == State::Accepted)
            .count(),
        conflicts: views[0].conflicts.len(),
        routing_refusals: county.routing_refusals,
    })
}

#[test]
fn every_office_agrees_on_one_home_after_random_transfers_and_partitions() {
    let seeds: Vec<u64> = match std::env::var("AMPHI_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("AMPHI_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("AMPHI_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            (0..n).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut stats = Stats::default();
    for &seed in &seeds {
        match run(seed) {
            Ok(s) => stats.add(s),
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreplay: AMPHI_SIM_SEED={seed} cargo test -p amphi-protocol --test transfer_sim -- --nocapture"
            ),
        }
    }
    println!(
        "{} seeds passed in {:?}: {} transfers opened, {} accepted, {} conflicts settled by the rule, {} routing refusals",
        seeds.len(),
        started.elapsed(),
        stats.opened,
        stats.accepted,
        stats.conflicts,
        stats.routing_refusals
    );
    assert!(
        stats.conflicts > 0,
        "the seeds must exercise concurrent transfers"
    );
}

#[derive(Default)]
struct Stats {
    opened: usize,
    accepted: usize,
    conflicts: usize,
    routing_refusals: usize,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.opened += other.opened;
        self.accepted += other.accepted;
        self.conflicts += other.conflicts;
        self.routing_refusals += other.routing_refusals;
    }
}
