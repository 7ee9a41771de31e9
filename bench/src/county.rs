//! The synthetic county: org tree, office identities, members and their case files.
//!
//! The shapes follow the test sizes of `../shared/DOMAIN.md`: one county, 16 townships, 300
//! villages and communities (3 communities per township), N members of which about 30 % are
//! two-dwelling (home village, residence community), each with 20–40 activity entries.
//!
//! Every case file is built the way offices build it through the API, one change per
//! operation: the home village creates it (and issues the residence), records its activities
//! and half-year review; the residence community records the report-in and its own
//! activities. Each change is committed as its author office (`org:<path>`), with the actor
//! of that office's certificate, and signed with that office's key, so the documents are
//! exactly what the gate accepts from real offices. The generator writes them straight into
//! the county's store (a store write per document), skipping the county's own gate; B1 then
//! replicates every one of them through a receiving node's gate, which must accept all.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use amphi_node::pki::{self, NodeIdentity};
use amphi_node::repo::summarise;
use amphi_node::store::{DocSummary, Store};
use amphi_node::trust::{Signer, cert_id};
use amphi_protocol::attest::Attestation;
use amphi_protocol::casefile::{self, ActivityInput, NewMember, ResidenceInput, ReviewInput};
use amphi_protocol::ids::entry_id;
use amphi_protocol::stamp::Stamp;
use amphi_protocol::{DocId, OrgPath, gate, roster};
use anyhow::Context;
use automerge::{ActorId, AutoCommit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::progress::Progress;

/// Townships under the county.
pub const TOWNSHIPS: usize = 16;
/// Villages and communities under the townships.
pub const UNITS: usize = 300;
/// Communities per township (the rest of the units are villages).
pub const COMMUNITIES_PER_TOWNSHIP: usize = 3;
/// Members whose home is the B2 village and residence the B2 community (at most).
pub const B2_MEMBERS: usize = 20;

/// A village or community.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its org path.
    pub org: OrgPath,
    /// Index of its township.
    pub township: usize,
    /// An urban community (a residence for two-dwelling members), not a village.
    pub community: bool,
}

/// The county's org tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The county.
    pub county: OrgPath,
    /// Its townships.
    pub townships: Vec<OrgPath>,
    /// Villages and communities.
    pub units: Vec<Unit>,
    /// The village whose edits B2 times (unit index).
    pub b2_village: usize,
    /// The residence community of B2's members, under another township (unit index).
    pub b2_community: usize,
}

impl Tree {
    /// The tree: `hoboksar`, `hoboksar/tw01`…`tw16`, and under them `c000`… communities and
    /// `v016`… villages, dealt round-robin to the townships.
    pub fn new() -> anyhow::Result<Tree> {
        let county = OrgPath::parse("hoboksar")?;
        let townships = (1..=TOWNSHIPS)
            .map(|t| county.child(&format!("tw{t:02}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut units = Vec::with_capacity(UNITS);
        for u in 0..UNITS {
            let township = u % TOWNSHIPS;
            let community = u / TOWNSHIPS < COMMUNITIES_PER_TOWNSHIP;
            let name = format!("{}{u:03}", if community { 'c' } else { 'v' });
            units.push(Unit {
                org: townships[township].child(&name)?,
                township,
                community,
            });
        }
        let b2_village = (0..UNITS)
            .find(|&u| !units[u].community && units[u].township == 2)
            .context("a village under tw03")?;
        let b2_community = (0..UNITS)
            .find(|&u| units[u].community && units[u].township == 0)
            .context("a community under tw01")?;
        Ok(Tree {
            county,
            townships,
            units,
            b2_village,
            b2_community,
        })
    }

    /// Every office: the county, the townships, then the units (see [`Tree::office_of_unit`]).
    pub fn offices(&self) -> Vec<OrgPath> {
        std::iter::once(self.county.clone())
            .chain(self.townships.iter().cloned())
            .chain(self.units.iter().map(|u| u.org.clone()))
            .collect()
    }

    /// Index in [`Tree::offices`] of unit `u`.
    pub fn office_of_unit(u: usize) -> usize {
        1 + TOWNSHIPS + u
    }
}

/// One office's identity: certificate, key, actor.
pub struct Office {
    /// The office.
    pub org: OrgPath,
    /// Signs its changes.
    pub signer: Signer,
    /// Its automerge actor (from its certificate's key).
    pub actor: ActorId,
    /// Its certificate (DER).
    pub cert_der: Vec<u8>,
}

/// The folder of an office under `root`.
pub fn office_dir(root: &Path, org: &OrgPath) -> PathBuf {
    root.join("offices").join(org.as_str().replace('/', "."))
}

/// Issues a certificate for every office of `tree` from the CA in `ca` (in parallel).
pub fn issue_identities(
    ca: &Path,
    root: &Path,
    tree: &Tree,
    threads: usize,
) -> anyhow::Result<Vec<Office>> {
    let orgs = tree.offices();
    let chunk = orgs.len().div_ceil(threads.max(1));
    let results: Vec<anyhow::Result<Vec<Office>>> = std::thread::scope(|s| {
        let handles: Vec<_> = orgs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|org| {
                            let dir = office_dir(root, org);
                            pki::ca_issue(ca, org, &dir, 825)
                                .with_context(|| format!("issuing a certificate for {org}"))?;
                            let identity = NodeIdentity::load(
                                &dir.join("node.crt"),
                                &dir.join("node.key"),
                                &dir.join("ca.crt"),
                            )?;
                            Ok(Office {
                                org: org.clone(),
                                signer: Signer::new(&identity)?,
                                actor: ActorId::from(identity.actor_id()),
                                cert_der: identity.cert_der.to_vec(),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("issuing thread"))
            .collect()
    });
    let mut offices = Vec::with_capacity(orgs.len());
    for r in results {
        offices.extend(r?);
    }
    Ok(offices)
}

/// What one member's case file will hold.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    /// Home unit.
    pub home: usize,
    /// Residence community, if two-dwelling.
    pub residence: Option<usize>,
    /// Activities recorded by the home office.
    pub home_activities: usize,
    /// Activities recorded by the residence office.
    pub residence_activities: usize,
    /// A half-year review was written.
    pub review: bool,
}

/// Plans `n` members: the first [`B2_MEMBERS`] are two-dwelling between the B2 village and
/// the B2 community; the others have a random home unit and, when it is a village, are
/// two-dwelling with probability 0.357 (about 30 % of all members), resident in a random
/// community.
pub fn plan_members(n: usize, tree: &Tree, seed: u64) -> Vec<MemberPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let communities: Vec<usize> = (0..UNITS).filter(|&u| tree.units[u].community).collect();
    (0..n)
        .map(|i| {
            let (home, residence) = if i < B2_MEMBERS.min(n) {
                (tree.b2_village, Some(tree.b2_community))
            } else {
                let home = rng.random_range(0..UNITS);
                let two = !tree.units[home].community && rng.random_bool(0.357);
                let residence = two.then(|| communities[rng.random_range(0..communities.len())]);
                (home, residence)
            };
            let total = rng.random_range(20..=40);
            let residence_activities = if residence.is_some() { total / 3 } else { 0 };
            MemberPlan {
                home,
                residence,
                home_activities: total - residence_activities,
                residence_activities,
                review: rng.random_bool(0.5),
            }
        })
        .collect()
}

const NAMES: &[(&str, &str, &str)] = &[
    ("Bayar", "male", "Mongol"),
    ("Tsetseg", "female", "Mongol"),
    ("Altan", "male", "Mongol"),
    ("Saruul", "female", "Mongol"),
    ("Nurlan", "male", "Kazakh"),
    ("Gulnar", "female", "Kazakh"),
    ("Wang Fang", "female", "Han"),
    ("Li Wei", "male", "Han"),
    ("Ma Jun", "male", "Hui"),
    ("Oyun", "female", "Mongol"),
    ("Ganbaatar", "male", "Mongol"),
    ("Aigerim", "female", "Kazakh"),
    ("Zhang Min", "female", "Han"),
];

const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "party-day",
        "Monthly party day (主题党日): flag raising and oath review",
    ),
    (
        "study",
        "Study session (学习教育) on the county's grassland policy",
    ),
    (
        "organisation-life",
        "Branch organisation life meeting (组织生活会)",
    ),
    (
        "volunteer-service",
        "Volunteer service (志愿服务): helped elderly herders move to winter pasture",
    ),
    ("dues", "Party dues paid (党费) for the quarter"),
    (
        "study",
        "Read and discussed the township's notice on flood prevention",
    ),
    (
        "volunteer-service",
        "Cleaned the community square with the grid team",
    ),
    ("other", "Visited the two-dwelling service station (服务站)"),
];

fn date(rng: &mut StdRng) -> String {
    format!(
        "{}-{:02}-{:02}",
        rng.random_range(2025..=2026),
        rng.random_range(1..=12),
        rng.random_range(1..=28)
    )
}

fn activity(rng: &mut StdRng, n: usize) -> ActivityInput {
    let (kind, text) = DESCRIPTIONS[rng.random_range(0..DESCRIPTIONS.len())];
    ActivityInput {
        date: date(rng),
        kind: kind.into(),
        description: format!("{text} (#{n})"),
        points: Some(rng.random_range(1..=10)),
    }
}

/// A built document, ready for the store.
pub struct Built {
    /// Its id.
    pub id: DocId,
    /// The document.
    pub doc: AutoCommit,
    /// Its summary for the store's index.
    pub summary: DocSummary,
    /// One attestation per change.
    pub attestations: Vec<Attestation>,
}

fn commit(
    doc: &mut AutoCommit,
    office: &Office,
    now_ms: i64,
    attestations: &mut Vec<Attestation>,
) -> anyhow::Result<()> {
    let stamp = Stamp::at(now_ms);
    let hash = gate::commit_as(doc, &office.org, &stamp).context("an empty change")?;
    attestations.push(office.signer.sign(&hash));
    Ok(())
}

/// Builds member `i`'s case file as its offices would, one signed change per operation.
pub fn build_member(
    plan: &MemberPlan,
    i: usize,
    tree: &Tree,
    offices: &[Office],
    now_ms: i64,
    seed: u64,
) -> anyhow::Result<Built> {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let home = &offices[Tree::office_of_unit(plan.home)];
    let (name, gender, ethnicity) = NAMES[i % NAMES.len()];
    let mut categories = vec!["farmer-herder".to_owned()];
    if plan.residence.is_some() {
        categories.push("two-dwelling".into());
    }
    if rng.random_bool(0.2) {
        categories.push("elderly".into());
    }
    let member = NewMember {
        name: format!("{name} {}", i / NAMES.len() + 1),
        gender: gender.into(),
        ethnicity: ethnicity.into(),
        birth_date: format!(
            "{}-{:02}-{:02}",
            rng.random_range(1945..=2000),
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        ),
        joined_at: format!("{}-07-01", rng.random_range(1970..=2024)),
        home_org: tree.units[plan.home].org.clone(),
        id_number: None,
        phone: Some(format!("138{:08}", rng.random_range(0..100_000_000u32))),
        education: Some("senior secondary".into()),
        categories,
    };
    let mut attestations = Vec::new();
    let mut doc = AutoCommit::new().with_actor(home.actor.clone());
    casefile::create(&mut doc, &member)?;
    commit(&mut doc, home, now_ms, &mut attestations)?;
    let id = DocId::member_created_by(&attestations[0].change);
    if let Some(r) = plan.residence {
        let residence = ResidenceInput {
            org: tree.units[r].org.clone(),
            since: "2025-10-15".into(),
            until: Some("2026-04-15".into()),
        };
        let assignment = casefile::assignment_id(&id, rng.random());
        let stamp = Stamp::at(now_ms);
        casefile::assign_residence(&mut doc, &assignment, Some(&residence), &home.org, &stamp)?;
        commit(&mut doc, home, now_ms, &mut attestations)?;
    }
    for n in 0..plan.home_activities {
        let a = activity(&mut rng, n);
        casefile::add_activity(&mut doc, &entry_id('a', rng.random()), &a, &home.org)?;
        commit(&mut doc, home, now_ms, &mut attestations)?;
    }
    if plan.review {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: ["excellent", "good", "fair"][rng.random_range(0..3)].into(),
            comment: "Took part in the busy-season work; keep up the study record".into(),
        };
        casefile::add_review(&mut doc, &review, &home.org)?;
        commit(&mut doc, home, now_ms, &mut attestations)?;
    }
    if let Some(r) = plan.residence {
        let office = &offices[Tree::office_of_unit(r)];
        doc.set_actor(office.actor.clone());
        casefile::report_in(&mut doc, &office.org, "2025-10-20")?;
        commit(&mut doc, office, now_ms, &mut attestations)?;
        for n in 0..plan.residence_activities {
            let a = activity(&mut rng, 100 + n);
            casefile::add_activity(&mut doc, &entry_id('a', rng.random()), &a, &office.org)?;
            commit(&mut doc, office, now_ms, &mut attestations)?;
        }
    }
    let summary = summarise(&id, &mut doc);
    Ok(Built {
        id,
        doc,
        summary,
        attestations,
    })
}

/// Builds the roster document of `org` (profile: name and kind), written by the county
/// office `author` as it sets up the org tree. (Not by the office itself: a fresh node of
/// that office creates its own roster change with the same actor and sequence number, and
/// automerge refuses two different changes with one (actor, seq) as malformed.)
pub fn build_roster(
    author: &Office,
    org: &OrgPath,
    kind: &str,
    now_ms: i64,
) -> anyhow::Result<Built> {
    let id = DocId::roster(org);
    let mut doc = AutoCommit::new().with_actor(author.actor.clone());
    roster::ensure(&mut doc, org)?;
    let name = org.segments().last().unwrap_or_default().to_owned();
    roster::set_profile(&mut doc, "name", &name)?;
    roster::set_profile(&mut doc, "kind", kind)?;
    let mut attestations = Vec::new();
    commit(&mut doc, author, now_ms, &mut attestations)?;
    let summary = summarise(&id, &mut doc);
    Ok(Built {
        id,
        doc,
        summary,
        attestations,
    })
}

/// What generation made and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Member case files.
    pub members: usize,
    /// Roster documents.
    pub rosters: usize,
    /// Two-dwelling members.
    pub two_dwelling: usize,
    /// Signed changes in all.
    pub changes: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Time the writer spent in `Store::save` (one durable transaction per document).
    pub store_seconds: f64,
    /// The member case files' ids (derived from their creation changes), in plan order.
    pub ids: Vec<DocId>,
}

/// Builds every document on `threads` threads and writes them into `store` (one writer:
/// the store takes one write transaction at a time), with the certificates of every office.
pub fn generate(
    store: &Store,
    tree: &Tree,
    offices: &[Office],
    plans: &[MemberPlan],
    threads: usize,
    seed: u64,
) -> anyhow::Result<Generated> {
    let started = Instant::now();
    let now_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()) as i64;
    for o in offices {
        store.save_certificate(&cert_id(&o.cert_der), &o.cert_der)?;
    }
    let mut out = Generated::default();
    let mut store_seconds = 0.0;
    let mut save = |b: Built, out: &mut Generated| -> anyhow::Result<()> {
        let Built {
            id,
            mut doc,
            summary,
            attestations,
        } = b;
        out.changes += attestations.len();
        let t = Instant::now();
        store.save(&id, &mut doc, &[], &summary, &attestations, None)?;
        store_seconds += t.elapsed().as_secs_f64();
        Ok(())
    };
    let mut progress = Progress::new("generate", plans.len());
    let threads = threads.max(1);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::sync_channel::<anyhow::Result<(usize, Built)>>(64);
        for t in 0..threads {
            let tx = tx.clone();
            s.spawn(move || {
                for i in (t..plans.len()).step_by(threads) {
                    let built =
                        build_member(&plans[i], i, tree, offices, now_ms, seed).map(|b| (i, b));
                    let failed = built.is_err();
                    if tx.send(built).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut ids = vec![None; plans.len()];
        for built in rx {
            let (i, built) = built?;
            ids[i] = Some(built.id.clone());
            save(built, &mut out)?;
            out.members += 1;
            progress.set(out.members);
        }
        out.ids = ids.into_iter().flatten().collect();
        Ok(())
    })?;
    progress.finish();
    anyhow::ensure!(
        out.members == plans.len(),
        "generated {} of {} members",
        out.members,
        plans.len()
    );
    for (n, office) in offices.iter().enumerate() {
        let kind = if n == 0 {
            "county"
        } else if n <= TOWNSHIPS {
            "township"
        } else if tree.units[n - 1 - TOWNSHIPS].community {
            "community"
        } else {
            "village"
        };
        save(
            build_roster(&offices[0], &office.org, kind, now_ms)?,
            &mut out,
        )?;
        out.rosters += 1;
    }
    out.two_dwelling = plans.iter().filter(|p| p.residence.is_some()).count();
    out.store_seconds = store_seconds;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// How many members office `org` holds: those with home or residence at or below it.
pub fn expected_members(plans: &[MemberPlan], tree: &Tree, org: &OrgPath) -> usize {
    plans
        .iter()
        .filter(|p| {
            std::iter::once(p.home)
                .chain(p.residence)
                .any(|u| org.is_at_or_above(&tree.units[u].org))
        })
        .count()
}
