//! The gate against real automerge changes: two offices' copies of a case file, synced
//! through `gate::receive`, with authorised and unauthorised writes on either side.

use amphi_protocol::attest::{Attestation, Authenticator};
use amphi_protocol::authority::Refusal;
use amphi_protocol::casefile::{
    self, ActivityInput, CaseFile, IdentityPatch, NewMember, ResidenceInput, ReviewInput,
};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::{self, Admission};
use amphi_protocol::{DocId, OrgPath};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ROOT, ReadDoc};

const VILLAGE: &str = "hoboksar/chagantolgay/bayin";
const SIBLING: &str = "hoboksar/chagantolgay/tebke";
const COMMUNITY: &str = "hoboksar/hoboksar-town/xingfu";

/// Takes every author claim at its word: signatures are the node's to check (node/src/trust.rs);
/// these tests are about the authority table.
struct ClaimsOnly;

impl Authenticator for ClaimsOnly {
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

fn org(s: &str) -> OrgPath {
    OrgPath::parse(s).unwrap()
}

/// One office's copy of a document and its sync state with the other office.
struct Office {
    org: OrgPath,
    doc: AutoCommit,
    sync: DocSync,
    refused: Vec<String>,
}

impl Office {
    fn new(name: &str) -> Office {
        let mut doc = AutoCommit::new();
        doc.set_actor(ActorId::from(name.as_bytes()));
        Office {
            org: org(name),
            doc,
            sync: DocSync::default(),
            refused: vec![],
        }
    }

    fn write(&mut self, f: impl FnOnce(&mut AutoCommit)) {
        f(&mut self.doc);
        gate::commit_as(&mut self.doc, &self.org, 0).expect("a change");
    }

    /// Writes as `as_org` claims, from this office's copy (a forged or misbehaving writer).
    fn write_claiming(&mut self, as_org: &str, f: impl FnOnce(&mut AutoCommit)) {
        f(&mut self.doc);
        gate::commit_as(&mut self.doc, &org(as_org), 0).expect("a change");
    }

    fn case(&self) -> CaseFile {
        CaseFile::read(&self.doc).expect("a case file")
    }
}

fn member() -> NewMember {
    serde_json::from_value(serde_json::json!({
        "name": "Bayar", "gender": "male", "ethnicity": "Mongol",
        "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": VILLAGE,
        "categories": ["two-dwelling", "farmer-herder"]
    }))
    .unwrap()
}

fn id() -> DocId {
    DocId::new_member([7; 8])
}

/// Runs the sync protocol between two offices until neither has anything to say,
/// returning what each side's gate did.
fn sync_pair(a: &mut Office, b: &mut Office) -> (Vec<Admission>, Vec<Admission>) {
    let (mut into_a, mut into_b) = (vec![], vec![]);
    for _ in 0..20 {
        let mut quiet = true;
        if let Some(m) = a.sync.generate(&mut a.doc) {
            quiet = false;
            let adm = b.sync.receive(
                &mut b.doc,
                &id(),
                &m.message,
                &[],
                &a.org,
                &b.org,
                &ClaimsOnly,
            );
            b.refused
                .extend(adm.refused.iter().map(|r| r.reason.code().to_owned()));
            into_b.push(adm);
        }
        if let Some(m) = b.sync.generate(&mut b.doc) {
            quiet = false;
            let adm = a.sync.receive(
                &mut a.doc,
                &id(),
                &m.message,
                &[],
                &b.org,
                &a.org,
                &ClaimsOnly,
            );
            a.refused
                .extend(adm.refused.iter().map(|r| r.reason.code().to_owned()));
            into_a.push(adm);
        }
        if quiet {
            return (into_a, into_b);
        }
    }
    panic!("sync did not quiesce");
}

/// A village creates a two-dwelling member with residence at the community; both synced.
fn two_dwelling_pair() -> (Office, Office) {
    let mut village = Office::new(VILLAGE);
    let mut community = Office::new(COMMUNITY);
    village.write(|d| {
        casefile::create(d, &id(), &member()).unwrap();
        casefile::set_residence(
            d,
            &ResidenceInput {
                org: org(COMMUNITY),
                since: "2026-10-15".into(),
                until: None,
            },
        )
        .unwrap();
    });
    sync_pair(&mut village, &mut community);
    assert!(community.refused.is_empty(), "{:?}", community.refused);
    assert_eq!(community.case().home_org, VILLAGE);
    (village, community)
}

fn activity(desc: &str) -> ActivityInput {
    ActivityInput {
        date: "2026-11-02".into(),
        kind: "study".into(),
        description: desc.into(),
        points: Some(2),
    }
}

#[test]
fn both_offices_record_activities_and_both_see_both_stamped() {
    let (mut village, mut community) = two_dwelling_pair();
    village.write(|d| {
        casefile::add_activity(d, "a-v", &activity("village study"), &org(VILLAGE)).unwrap()
    });
    community.write(|d| {
        casefile::add_activity(d, "a-c", &activity("community study"), &org(COMMUNITY)).unwrap()
    });
    community.write(|d| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    community.write(|d| {
        casefile::comment_activity(d, "a-c", &org(COMMUNITY), "2026-11-03", "attended")
            .unwrap()
            .unwrap();
    });
    sync_pair(&mut village, &mut community);
    assert!(
        village.refused.is_empty() && community.refused.is_empty(),
        "{:?} {:?}",
        village.refused,
        community.refused
    );
    assert_eq!(village.case(), community.case());
    let stamps: Vec<(String, String)> = village
        .case()
        .activities
        .iter()
        .map(|a| (a.id.clone(), a.recorded_by.clone()))
        .collect();
    assert_eq!(
        stamps,
        vec![
            ("a-c".into(), COMMUNITY.into()),
            ("a-v".into(), VILLAGE.into())
        ]
    );
    assert_eq!(village.case().activities[0].comments[0].by, COMMUNITY);
    assert_eq!(
        village.case().residence.unwrap().reported_in_at.as_deref(),
        Some("2026-10-20")
    );
}

/// Makes one write at the community (or village) of a fresh two-dwelling pair, syncs, and
/// returns the reasons the other side refused with, plus both copies.
fn refused_after(
    at_community: bool,
    claim: Option<&str>,
    f: impl FnOnce(&mut AutoCommit),
) -> (Vec<String>, Office, Office) {
    let (mut village, mut community) = two_dwelling_pair();
    let writer = if at_community {
        &mut community
    } else {
        &mut village
    };
    match claim {
        Some(c) => writer.write_claiming(c, f),
        None => writer.write(f),
    }
    sync_pair(&mut village, &mut community);
    let reasons = if at_community {
        village.refused.clone()
    } else {
        community.refused.clone()
    };
    (reasons, village, community)
}

#[test]
fn community_cannot_change_identity_or_write_the_review() {
    let (reasons, village, _) = refused_after(true, None, |d| {
        casefile::update_identity(
            d,
            &IdentityPatch {
                name: Some("Forged".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    assert_eq!(reasons, ["not_home_authority"]);
    assert_eq!(
        village.case().name,
        "Bayar",
        "the village's copy is untouched"
    );
    let (reasons, village, _) = refused_after(true, None, |d| {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: "poor".into(),
            comment: String::new(),
        };
        casefile::add_review(d, &review, &org(COMMUNITY)).unwrap()
    });
    assert_eq!(reasons, ["not_home_authority"]);
    assert!(village.case().reviews.is_empty());
}

#[test]
fn a_refused_change_takes_its_dependants_but_not_independent_work() {
    let (mut village, mut community) = two_dwelling_pair();
    // A forged identity edit, then an activity built on top of it, then (concurrently with
    // nothing refused) a report-in: only the first two are refused.
    community.write(|d| {
        casefile::update_identity(
            d,
            &IdentityPatch {
                phone: Some("110".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    community.write(|d| {
        casefile::add_activity(d, "a-c", &activity("after forgery"), &org(COMMUNITY)).unwrap()
    });
    let mut honest = Office::new(COMMUNITY);
    honest.doc = village.doc.fork();
    honest.doc.set_actor(ActorId::from(b"honest".as_slice()));
    honest.write(|d| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    community.doc.merge(&mut honest.doc).unwrap();
    sync_pair(&mut village, &mut community);
    let mut codes = village.refused.clone();
    codes.sort();
    assert_eq!(codes, ["depends_on_refused", "not_home_authority"]);
    let case = village.case();
    assert_eq!(case.phone, None);
    assert!(case.activities.is_empty());
    assert_eq!(
        case.residence.unwrap().reported_in_at.as_deref(),
        Some("2026-10-20")
    );
}

#[test]
fn stamps_must_name_the_author_and_entries_belong_to_their_recorder() {
    // The village records an entry pretending the community recorded it.
    let (reasons, _, community) = refused_after(false, None, |d| {
        casefile::add_activity(d, "a-v", &activity("forged stamp"), &org(COMMUNITY)).unwrap()
    });
    assert_eq!(reasons, ["not_recorder"]);
    assert!(community.case().activities.is_empty());
    // The village (which may review) signs its review as the county.
    let (reasons, _, community) = refused_after(false, None, |d| {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: "good".into(),
            comment: String::new(),
        };
        casefile::add_review(d, &review, &org("hoboksar")).unwrap()
    });
    assert_eq!(reasons, ["stamp_mismatch"]);
    assert!(community.case().reviews.is_empty());
    // The village edits an entry the community recorded.
    let (mut village, mut community) = two_dwelling_pair();
    community.write(|d| {
        casefile::add_activity(d, "a-c", &activity("community study"), &org(COMMUNITY)).unwrap()
    });
    sync_pair(&mut village, &mut community);
    village.write(|d| {
        let acts = d.get(ROOT, "activities").unwrap().unwrap().1;
        let entry = d.get(&acts, "a-c").unwrap().unwrap().1;
        d.put(&entry, "points", 0).unwrap();
    });
    sync_pair(&mut village, &mut community);
    assert_eq!(community.refused, ["not_recorder"]);
    assert_eq!(community.case().activities[0].points, Some(2));
}

#[test]
fn a_forged_author_claim_is_judged_as_the_claimed_org() {
    // Without signatures (a later issue) the claim is what is judged: a claim naming an org
    // that has no authority over the field is refused all the same.
    let (reasons, ..) = refused_after(true, Some(SIBLING), |d| {
        casefile::add_activity(d, "a-s", &activity("sibling"), &org(SIBLING)).unwrap()
    });
    assert_eq!(reasons, ["not_in_scope"]);
    let (reasons, ..) = refused_after(true, Some("hoboksar/hoboksar-town"), |d| {
        d.put(ROOT, "secret", "x").unwrap();
    });
    assert_eq!(reasons, ["unknown_field"]);
}

#[test]
fn creation_keys_cannot_be_rewritten_and_unsigned_changes_are_refused() {
    let (mut village, mut community) = two_dwelling_pair();
    village.write(|d| {
        d.put(ROOT, "home_org", "hoboksar/chagantolgay/tebke")
            .unwrap();
    });
    community.doc.put(ROOT, "id", "m-0000000000000000").unwrap();
    community.doc.commit();
    sync_pair(&mut village, &mut community);
    assert_eq!(community.refused, ["immutable_field"]);
    assert_eq!(village.refused, ["unknown_author"]);
    assert_eq!(community.case().home_org, VILLAGE);
}

#[test]
fn documents_outside_either_side_s_scope_are_refused_whole() {
    let mut village = Office::new(VILLAGE);
    village.write(|d| casefile::create(d, &id(), &member()).unwrap());
    let mut sibling = Office::new(SIBLING);
    sync_pair(&mut village, &mut sibling);
    assert!(
        sibling
            .refused
            .iter()
            .all(|c| c == "outside_receiver_scope")
            && !sibling.refused.is_empty()
    );
    assert!(
        CaseFile::read(&sibling.doc).is_none(),
        "the sibling holds nothing"
    );

    let mut community = Office::new(COMMUNITY);
    let mut township = Office::new("hoboksar/chagantolgay");
    // The community (not in scope: no residence yet) offers the village's file to the township.
    community.doc = village.doc.fork();
    sync_pair(&mut community, &mut township);
    assert!(!township.refused.is_empty());
    assert!(township.refused.iter().all(|c| c == "outside_sender_scope"));
}

#[test]
fn garbage_change_bytes_are_refused_without_panic() {
    let (mut village, _) = two_dwelling_pair();
    let mut state = sync::State::new();
    let mut message = village
        .doc
        .sync()
        .generate_sync_message(&mut state)
        .unwrap();
    message.changes = vec![vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]].into();
    let mut fresh = AutoCommit::new();
    let adm = gate::receive(
        &mut fresh,
        &mut sync::State::new(),
        &id(),
        message,
        &org(VILLAGE),
        &org(VILLAGE),
        &ClaimsOnly,
        &Default::default(),
    );
    assert!(adm.applied.is_empty());
    assert_eq!(adm.refused[0].reason.code(), "malformed");
}
