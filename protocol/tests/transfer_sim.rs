//! A seeded, deterministic simulation of transfers and residences across a county,
//! in-process and without sockets (the protocol crate's sans-IO core: documents, the gate,
//! DocSync).
//!
//! Eight offices each hold a copy of one member's case file (or nothing) and sync along the
//! tree. Random offices open, accept, reject and cancel transfers and assign or end the
//! residence as their own (possibly stale) view allows, while random links go down and up.
//! One office is hostile: at random it signs authority-changing steps from the stalest view
//! its own history allows (only its own last change as dependency, dated as early as the
//! gate lets it): transfers to its own sub-org accepted by itself, residences at its own
//! sub-org, decisions on transfers it can no longer see open. After every link heals and
//! sync goes quiet, every honest office that holds the file must hold the same document and
//! derive the same home, residence, transfer states and conflicts; the member must have
//! exactly one home; and no honest step may have been refused.
//!
//! `AMPHI_SIM_SEEDS=N` runs N seeds (default 300); `AMPHI_SIM_SEED=S` replays one seed.

mod common;

use amphi_protocol::affiliation::Affiliation;
use amphi_protocol::casefile::{self, NewMember, ResidenceInput};
use amphi_protocol::reader::Reader;
use amphi_protocol::transfer::{self, Decision, Entry, State};
use amphi_protocol::visibility::{may_hold, scope};
use amphi_protocol::{DocId, OrgPath};
use automerge::AutoCommit;
use common::{Office, Rng, T0, org};

const OFFICES: &[&str] = &[
    "c",
    "c/t1",
    "c/t2",
    "c/t1/v1",
    "c/t1/v2",
    "c/t2/k1",
    "c/t2/v3",
    "c/t2/k1/g",
];
const TARGETS: &[&str] = &["c/t1/v1", "c/t1/v2", "c/t2/k1", "c/t2/v3"];
const RESIDENCES: &[&str] = &["c/t2/k1", "c/t1/v2", "c/t2/v3"];
/// The hostile office (the member's first home) and the sub-org it forges towards.
const HOSTILE: usize = 3;
const HOSTILE_SUB: &str = "c/t1/v1/x";
const STEPS: usize = 60;

struct County {
    offices: Vec<Office>,
    edges: Vec<(usize, usize, bool)>,
    /// Refusals of honest offices' changes (must stay empty).
    honest_refusals: Vec<String>,
    routing_refusals: usize,
    forgeries: usize,
    id: DocId,
}

fn empty(doc: &AutoCommit) -> bool {
    automerge::ReadDoc::keys(doc, automerge::ROOT)
        .next()
        .is_none()
}

impl County {
    fn new() -> County {
        let member: NewMember = serde_json::from_value(serde_json::json!({
            "name": "Bayar", "gender": "male", "ethnicity": "Mongol", "birth_date": "1971-03-02",
            "joined_at": "1996-07-01", "home_org": "c/t1/v1"}))
        .unwrap();
        let mut offices: Vec<Office> = OFFICES.iter().map(|o| Office::new(o)).collect();
        let hash = offices[HOSTILE].write(|d, _| casefile::create(d, &member).unwrap());
        let id = DocId::member_created_by(&hash);
        // Only the offices in scope (the home village and its ancestors) hold the file.
        for i in 0..offices.len() {
            if i != HOSTILE && offices[i].org.is_at_or_above(&org("c/t1/v1")) {
                let copy = offices[HOSTILE].doc.fork();
                offices[i].doc.merge(&mut copy.clone()).unwrap();
            }
        }
        let index = |o: &str| OFFICES.iter().position(|x| *x == o).unwrap();
        let edges = OFFICES
            .iter()
            .skip(1)
            .map(|o| (index(&org(o).parent().unwrap().to_string()), index(o), true))
            .collect();
        County {
            offices,
            edges,
            honest_refusals: Vec::new(),
            routing_refusals: 0,
            forgeries: 0,
            id,
        }
    }

    /// True when office `i` holds the file and, in its own view, may.
    fn holds(&self, i: usize) -> bool {
        let o = &self.offices[i];
        !empty(&o.doc) && may_hold(&self.id, &scope(&self.id, &o.doc), &o.org)
    }

    fn view(&self, i: usize) -> (Vec<Entry>, Affiliation) {
        transfer::resolve_doc(&Reader::now(&self.offices[i].doc))
    }

    /// One message each way on link (a, b), if either side has something to say.
    fn exchange(&mut self, a: usize, b: usize) -> bool {
        let mut said = false;
        for (from, to) in [(a, b), (b, a)] {
            // Like a node: send what you hold to a peer that may hold it or held it before,
            // and answer a peer that wrote to you (even with nothing yet).
            let to_org = self.offices[to].org.to_string();
            let replying = self.offices[from].syncs.contains_key(&to_org);
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
                o.syncs.entry(to_org).or_default().generate(&mut o.doc)
            };
            let Some(out) = out else { continue };
            said = true;
            let from_org = self.offices[from].org.clone();
            let id = self.id.clone();
            let adm = self.offices[to].receive(&id, &from_org, &out.message);
            for r in adm.refused.iter().chain(&adm.dropped) {
                let code = r.reason.code();
                if matches!(code, "outside_sender_scope" | "outside_receiver_scope") {
                    // Routing: a relay that left the scope offers what it should not; a node's
                    // exit bookkeeping prevents this, the simulation does not.
                    self.routing_refusals += 1;
                } else if r.author.as_ref() != Some(&self.offices[HOSTILE].org)
                    && code != "depends_on_refused"
                {
                    self.honest_refusals
                        .push(format!("{code} at {}: {}", self.offices[to].org, r.reason));
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

    /// A random honest office takes a step its own view allows.
    fn act(&mut self, rng: &mut Rng, step: usize) {
        let i = rng.below(self.offices.len());
        if i == HOSTILE || !self.holds(i) {
            return;
        }
        let (entries, aff) = self.view(i);
        let me = self.offices[i].org.clone();
        let Some(home) = aff.home.clone() else { return };
        let open = aff.open_transfer(&entries).cloned();
        let id = self.id.clone();
        let office = &mut self.offices[i];
        office.clock = office.clock.max(T0 + step as i64 * 10_000 + i as i64);
        let home_org = org(&home);
        if me.is_at_or_above(&home_org) && rng.chance(25) {
            let target = RESIDENCES[rng.below(RESIDENCES.len())];
            if target == home {
                return;
            }
            let rid = casefile::assignment_id(&id, (step as u32).to_be_bytes());
            let residence = ResidenceInput {
                org: org(target),
                since: "2026-11-01".into(),
                until: None,
            };
            let end = rng.chance(30);
            office.write(|d, s| {
                casefile::assign_residence(d, &rid, (!end).then_some(&residence), &me, s).unwrap()
            });
            return;
        }
        match open {
            None if me.is_at_or_above(&home_org) => {
                let target = TARGETS[rng.below(TARGETS.len())];
                if target == home {
                    return;
                }
                let tid = format!("t-{}-{:08x}", &id.as_str()[2..], step * 16 + i);
                office.write(|d, s| {
                    transfer::open(d, &tid, (&home_org, &org(target)), "moves", &me, s).unwrap()
                });
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
                office.write(|d, s| {
                    transfer::decide(d, &t.id, decision, &me, s)
                        .unwrap()
                        .unwrap();
                });
            }
            None => {}
        }
    }

    /// The hostile office signs an authority-changing step from the stalest view its own
    /// chain allows (its own last change only), dated as early as the gate lets it.
    fn forge(&mut self, rng: &mut Rng, step: usize) {
        let h = &mut self.offices[HOSTILE];
        let own_last = h
            .doc
            .get_changes(&[])
            .into_iter()
            .rev()
            .find(|c| c.actor_id() == h.doc.get_actor())
            .map(|c| (c.hash(), c.timestamp()));
        let Some((last, time)) = own_last else { return };
        let mut stale = match h.doc.fork_at(&[last]) {
            Ok(d) => d.with_actor(h.doc.get_actor().clone()),
            Err(_) => return,
        };
        let (entries, aff) = transfer::resolve_doc(&Reader::now(&stale));
        let me = h.org.clone();
        let Some(home) = aff.home.clone() else { return };
        let mut forger = Office::new(me.as_str());
        forger.doc = stale.fork().with_actor(h.doc.get_actor().clone());
        forger.clock = time;
        let id = self.id.clone();
        let wrote = match (rng.below(3), aff.open_transfer(&entries).cloned()) {
            (0, None) if me.is_at_or_above(&org(&home)) && home != HOSTILE_SUB => {
                let tid = format!("t-{}-{:08x}", &id.as_str()[2..], 0xf000_0000 | step);
                forger.write(|d, s| {
                    transfer::open(d, &tid, (&org(&home), &org(HOSTILE_SUB)), "forged", &me, s)
                        .unwrap()
                });
                forger.write(|d, s| {
                    transfer::decide(d, &tid, Decision::Accept, &me, s)
                        .unwrap()
                        .unwrap();
                });
                true
            }
            (1, _) if me.is_at_or_above(&org(&home)) => {
                let rid =
                    casefile::assignment_id(&id, (0xf000_0000u32 | step as u32).to_be_bytes());
                let sub = ResidenceInput {
                    org: org(HOSTILE_SUB),
                    since: "2026-11-01".into(),
                    until: None,
                };
                forger
                    .write(|d, s| casefile::assign_residence(d, &rid, Some(&sub), &me, s).unwrap());
                true
            }
            (_, Some(t))
                if me.is_at_or_above(&org(&t.to_org)) || me.is_at_or_above(&org(&t.from_org)) =>
            {
                let d = if me.is_at_or_above(&org(&t.to_org)) {
                    Decision::Accept
                } else {
                    Decision::Cancel
                };
                forger.write(|doc, s| {
                    transfer::decide(doc, &t.id, d, &me, s).unwrap().unwrap();
                });
                true
            }
            _ => false,
        };
        if wrote {
            // The hostile node keeps its forgeries in its own chain, so it never equivocates.
            let new = forger.doc.get_changes(&stale.get_heads());
            h.doc.apply_changes(new).unwrap();
            h.clock = h.clock.max(forger.clock);
            self.forgeries += 1;
        }
    }
}

struct Stats {
    opened: usize,
    accepted: usize,
    conflicts: usize,
    routing_refusals: usize,
    forgeries: usize,
}

fn run(seed: u64) -> Result<Stats, String> {
    let mut rng = Rng(seed);
    let mut county = County::new();
    for step in 0..STEPS {
        if rng.chance(35) {
            county.act(&mut rng, step);
        }
        if rng.chance(10) {
            county.forge(&mut rng, step);
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
    if !county.honest_refusals.is_empty() {
        return Err(format!(
            "honest steps were refused: {:?}",
            county.honest_refusals
        ));
    }
    // Every honest office that holds the file at the end (the others would have purged it).
    let holders: Vec<usize> = (0..county.offices.len())
        .filter(|i| *i != HOSTILE && county.holds(*i))
        .collect();
    let heads: Vec<_> = holders
        .iter()
        .map(|i| county.offices[*i].doc.get_heads())
        .collect();
    if heads.iter().any(|h| *h != heads[0]) {
        let detail: Vec<String> = holders
            .iter()
            .map(|i| {
                let (e, a) = county.view(*i);
                format!(
                    "{} ({} changes): home {:?}, {} transfers",
                    OFFICES[*i],
                    county.offices[*i].doc.get_changes(&[]).len(),
                    a.home,
                    e.len()
                )
            })
            .collect();
        return Err(format!(
            "holders hold different documents after healing: {detail:?}; routing refusals {}",
            county.routing_refusals
        ));
    }
    let views: Vec<Affiliation> = holders.iter().map(|i| county.view(*i).1).collect();
    if let Some(i) = views.iter().position(|v| *v != views[0]) {
        return Err(format!(
            "{} derives differently: {:?} vs {:?}",
            OFFICES[holders[i]], views[i], views[0]
        ));
    }
    let home = views[0].home.clone().ok_or("no home")?;
    let open = views[0]
        .states
        .values()
        .filter(|s| **s == State::Open)
        .count();
    if open > 1 {
        return Err(format!("{open} transfers are open at once"));
    }
    let case = casefile::CaseFile::read(&county.id, &county.offices[holders[0]].doc)
        .ok_or("unreadable case file")?;
    if case.home_org != home {
        return Err(format!(
            "case file says home {} but the derivation says {home}",
            case.home_org
        ));
    }
    // No honest office outside the final scope still shows the file as held.
    let final_scope: Vec<OrgPath> = scope(&county.id, &county.offices[holders[0]].doc);
    for (i, o) in county.offices.iter().enumerate() {
        if i != HOSTILE && county.holds(i) && !final_scope.iter().any(|s| o.org.is_at_or_above(s)) {
            return Err(format!("{} holds the file outside its scope", o.org));
        }
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
        forgeries: county.forgeries,
    })
}

#[test]
fn every_office_agrees_on_one_home_after_random_transfers_forgeries_and_partitions() {
    let seeds: Vec<u64> = match std::env::var("AMPHI_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("AMPHI_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("AMPHI_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300);
            (0..n).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut total = Stats {
        opened: 0,
        accepted: 0,
        conflicts: 0,
        routing_refusals: 0,
        forgeries: 0,
    };
    for &seed in &seeds {
        match run(seed) {
            Ok(s) => {
                total.opened += s.opened;
                total.accepted += s.accepted;
                total.conflicts += s.conflicts;
                total.routing_refusals += s.routing_refusals;
                total.forgeries += s.forgeries;
            }
            Err(e) => panic!(
                "seed {seed} failed: {e}\nreplay: AMPHI_SIM_SEED={seed} cargo test -p amphi-protocol --test transfer_sim -- --nocapture"
            ),
        }
    }
    println!(
        "{} seeds passed in {:?}: {} transfers opened, {} accepted, {} conflicts settled by the rules, {} forgeries tried, {} routing refusals",
        seeds.len(),
        started.elapsed(),
        total.opened,
        total.accepted,
        total.conflicts,
        total.forgeries,
        total.routing_refusals
    );
    assert!(
        total.conflicts > 0,
        "the seeds must exercise concurrent transfers"
    );
    assert!(total.forgeries > 0, "the seeds must exercise forgeries");
}
