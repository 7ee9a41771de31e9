//! Offices for sans-IO tests: each holds its copy of one document and syncs with others
//! through the same entry point a node's session uses (`DocSync::receive`, i.e. the gate).
//!
//! Signatures are the node's business (node/src/trust.rs); here every author claim is taken
//! at its word ([`ClaimsOnly`]), so these tests are about structure and authority.

#![allow(dead_code)]

use std::collections::BTreeMap;

use amphi_protocol::attest::{Attestation, Authenticator};
use amphi_protocol::casefile::{self, CaseFile, NewMember};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::{self, Admission, Inbound};
use amphi_protocol::refusal::Refusal;
use amphi_protocol::stamp::{self, Stamp};
use amphi_protocol::{DocId, OrgPath};
use automerge::{ActorId, AutoCommit, Change, ChangeHash};

/// A time in November 2026 (unix milliseconds): the tests' clocks start here.
pub const T0: i64 = 1_795_000_000_000;
/// The receivers' clock: far enough ahead that no test change is "from the future".
pub const NOW: i64 = T0 + 10_000_000_000;

pub const COUNTY: &str = "hoboksar";
pub const TOWNSHIP: &str = "hoboksar/chagantolgay";
pub const VILLAGE: &str = "hoboksar/chagantolgay/bayin";
pub const SIBLING: &str = "hoboksar/chagantolgay/tebke";
pub const TOWN: &str = "hoboksar/hoboksar-town";
pub const COMMUNITY: &str = "hoboksar/hoboksar-town/xingfu";

/// Takes every author claim at its word.
pub struct ClaimsOnly;

impl Authenticator for ClaimsOnly {
    fn authenticate(
        &self,
        _: &Change,
        _: &OrgPath,
        _: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        Ok(())
    }
    fn check_revocation(&self, _: &str, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

pub fn org(s: &str) -> OrgPath {
    OrgPath::parse(s).unwrap()
}

/// A 16-byte actor id per office (as a node derives one from its certificate).
pub fn actor_of(name: &str) -> ActorId {
    let mut a = [0u8; 16];
    for (i, b) in name.bytes().enumerate() {
        a[i % 16] ^= b.rotate_left(i as u32 % 7);
    }
    ActorId::from(&a[..])
}

/// One office's copy of a document and its sync states with other offices.
pub struct Office {
    pub org: OrgPath,
    pub doc: AutoCommit,
    pub syncs: BTreeMap<String, DocSync>,
    /// Reason codes of every change this office refused.
    pub refused: Vec<String>,
    /// This office's clock.
    pub clock: i64,
}

impl Office {
    pub fn new(name: &str) -> Office {
        Office {
            org: org(name),
            doc: AutoCommit::new().with_actor(actor_of(name)),
            syncs: BTreeMap::new(),
            refused: Vec::new(),
            clock: T0,
        }
    }

    /// A copy of `other`'s document, as this office.
    pub fn copy_of(name: &str, other: &mut Office) -> Office {
        let mut o = Office::new(name);
        o.doc = other.doc.fork().with_actor(actor_of(name));
        o
    }

    /// Writes as this office: `f` makes the ops, stamped with the change's time. Nothing is
    /// judged here (a misbehaving office writes what it likes); receivers judge.
    pub fn write(&mut self, f: impl FnOnce(&mut AutoCommit, &Stamp)) -> ChangeHash {
        let name = self.org.clone();
        self.write_claiming(name.as_str(), f)
    }

    /// Writes claiming `as_org` as the author.
    pub fn write_claiming(
        &mut self,
        as_org: &str,
        f: impl FnOnce(&mut AutoCommit, &Stamp),
    ) -> ChangeHash {
        self.clock += 1000;
        let stamp = Stamp::at(stamp::commit_time(&mut self.doc, self.clock));
        f(&mut self.doc, &stamp);
        gate::commit_as(&mut self.doc, &org(as_org), &stamp).expect("a change")
    }

    /// Judges this office's last own write as its node would before acknowledging it.
    pub fn judge_own(&mut self, id: &DocId, hash: ChangeHash) -> Result<(), Refusal> {
        gate::judge_local(&mut self.doc, id, &hash, &ClaimsOnly, NOW)
    }

    /// The raw bytes of the changes this office holds beyond `heads`, in causal order (to
    /// send them in one hand-made message).
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Vec<u8>> {
        self.doc
            .get_changes(heads)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    pub fn case(&self, id: &DocId) -> CaseFile {
        CaseFile::read(id, &self.doc).expect("a case file")
    }

    /// Receives raw sync message bytes from `peer` for `id`.
    pub fn receive(&mut self, id: &DocId, from: &OrgPath, bytes: &[u8]) -> Admission {
        let me = self.org.clone();
        let sync = self.syncs.entry(from.to_string()).or_default();
        let cx = Inbound {
            id,
            peer: from,
            me: &me,
            now_ms: NOW,
            auth: &ClaimsOnly,
            attestations: &[],
        };
        let mut before = self.doc.fork();
        let adm = sync.receive(&mut self.doc, bytes, &cx, &mut || before.fork());
        self.refused.extend(
            adm.refused
                .iter()
                .chain(&adm.dropped)
                .map(|r| r.reason.code().to_owned()),
        );
        adm
    }
}

/// Runs the sync protocol between two offices until neither has anything to say; returns
/// what each side's gate did.
pub fn sync_pair(id: &DocId, a: &mut Office, b: &mut Office) -> (Vec<Admission>, Vec<Admission>) {
    let (mut into_a, mut into_b) = (vec![], vec![]);
    for _ in 0..40 {
        let mut quiet = true;
        let b_org = b.org.to_string();
        let a_org = a.org.to_string();
        if let Some(m) = a.syncs.entry(b_org).or_default().generate(&mut a.doc) {
            quiet = false;
            let from = a.org.clone();
            into_b.push(b.receive(id, &from, &m.message));
        }
        if let Some(m) = b.syncs.entry(a_org).or_default().generate(&mut b.doc) {
            quiet = false;
            let from = b.org.clone();
            into_a.push(a.receive(id, &from, &m.message));
        }
        if quiet {
            return (into_a, into_b);
        }
    }
    panic!("sync did not quiesce");
}

pub fn member() -> NewMember {
    serde_json::from_value(serde_json::json!({
        "name": "Bayar", "gender": "male", "ethnicity": "Mongol",
        "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": VILLAGE,
        "categories": ["two-dwelling", "farmer-herder"]
    }))
    .unwrap()
}

/// The village creates a case file; returns its id (derived from the creation change).
pub fn create_member(village: &mut Office) -> DocId {
    let hash = village.write(|d, _| casefile::create(d, &member()).unwrap());
    DocId::member_created_by(&hash)
}

/// An automerge sync message (version 1, no flags) carrying `changes` and nothing else.
pub fn message_with(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![0x42, 0, 0, 0];
    leb(&mut m, changes.len() as u64);
    for c in changes {
        leb(&mut m, c.len() as u64);
        m.extend_from_slice(c);
    }
    m
}

pub fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// splitmix64: small, seeded, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A village creates a two-dwelling member with residence at the community; both synced.
pub fn two_dwelling_pair() -> (DocId, Office, Office) {
    let mut village = Office::new(VILLAGE);
    let mut community = Office::new(COMMUNITY);
    let id = create_member(&mut village);
    village.write(|d, stamp| {
        let residence = casefile::ResidenceInput {
            org: org(COMMUNITY),
            since: "2026-10-15".into(),
            until: None,
        };
        let rid = casefile::assignment_id(&id, [1; 4]);
        casefile::assign_residence(d, &rid, Some(&residence), &org(VILLAGE), stamp).unwrap();
    });
    sync_pair(&id, &mut village, &mut community);
    assert!(community.refused.is_empty(), "{:?}", community.refused);
    assert_eq!(community.case(&id).home_org, VILLAGE);
    // Each side ends knowing the other has exactly its heads (else `docs_pending` never
    // clears: the gate applies changes itself, and automerge must still be made to reply).
    let heads = village.doc.get_heads();
    assert!(village.syncs[COMMUNITY].in_sync(&heads));
    assert!(community.syncs[VILLAGE].in_sync(&heads));
    (id, village, community)
}
