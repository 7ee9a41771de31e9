//! The gate against real automerge changes: two offices' copies of a case file, synced
//! through the gate (`DocSync::receive`, as a node's session does), with authorised and
//! unauthorised writes on either side.

mod common;

use amphi_protocol::DocId;
use amphi_protocol::casefile::{self, ActivityInput, IdentityPatch, ReviewInput};
use amphi_protocol::ids::entry_id;
use automerge::ReadDoc as _;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use common::*;

fn activity(desc: &str) -> ActivityInput {
    ActivityInput {
        date: "2026-11-02".into(),
        kind: "study".into(),
        description: desc.into(),
        points: Some(2),
    }
}

fn aid(n: u8) -> String {
    entry_id('a', [n; 8])
}

#[test]
fn both_offices_record_activities_and_both_see_both_stamped() {
    let (id, mut village, mut community) = two_dwelling_pair();
    village.write(|d, _| {
        casefile::add_activity(d, &aid(1), &activity("village study"), &org(VILLAGE)).unwrap()
    });
    community.write(|d, _| {
        casefile::add_activity(d, &aid(2), &activity("community study"), &org(COMMUNITY)).unwrap()
    });
    community.write(|d, _| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    community.write(|d, _| {
        casefile::comment_activity(d, &aid(2), &org(COMMUNITY), "2026-11-03", "attended")
            .unwrap()
            .unwrap();
    });
    sync_pair(&id, &mut village, &mut community);
    assert!(
        village.refused.is_empty() && community.refused.is_empty(),
        "{:?} {:?}",
        village.refused,
        community.refused
    );
    assert_eq!(village.case(&id), community.case(&id));
    let mut stamps: Vec<(String, String)> = village
        .case(&id)
        .activities
        .iter()
        .map(|a| (a.id.clone(), a.recorded_by.clone()))
        .collect();
    stamps.sort();
    assert_eq!(
        stamps,
        vec![(aid(1), VILLAGE.into()), (aid(2), COMMUNITY.into())]
    );
    let case = village.case(&id);
    let commented = case.activities.iter().find(|a| a.id == aid(2)).unwrap();
    assert_eq!(commented.comments[0].by, COMMUNITY);
    assert_eq!(
        case.residence.unwrap().reported_in_at.as_deref(),
        Some("2026-10-20")
    );
}

/// Makes one write at the community (or village) of a fresh two-dwelling pair, syncs, and
/// returns the reasons the other side refused with, plus both copies.
fn refused_after(
    at_community: bool,
    claim: Option<&str>,
    f: impl FnOnce(&mut AutoCommit),
) -> (Vec<String>, DocId, Office, Office) {
    let (id, mut village, mut community) = two_dwelling_pair();
    let writer = if at_community {
        &mut community
    } else {
        &mut village
    };
    match claim {
        Some(c) => writer.write_claiming(c, |d, _| f(d)),
        None => writer.write(|d, _| f(d)),
    };
    sync_pair(&id, &mut village, &mut community);
    let reasons = if at_community {
        village.refused.clone()
    } else {
        community.refused.clone()
    };
    (reasons, id, village, community)
}

#[test]
fn community_cannot_change_identity_or_write_the_review() {
    let (reasons, id, village, _) = refused_after(true, None, |d| {
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
        village.case(&id).name,
        "Bayar",
        "the village's copy is untouched"
    );
    let (reasons, id, village, _) = refused_after(true, None, |d| {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: "poor".into(),
            comment: String::new(),
        };
        casefile::add_review(d, &review, &org(COMMUNITY)).unwrap()
    });
    assert_eq!(reasons, ["not_home_authority"]);
    assert!(village.case(&id).reviews.is_empty());
}

#[test]
fn a_refused_change_takes_its_dependants_but_not_independent_work() {
    let (id, mut village, mut community) = two_dwelling_pair();
    // A forged identity edit, then an activity built on top of it; and, from another
    // community node that never saw either, a report-in: only the first two are refused.
    let mut honest = Office::copy_of(COMMUNITY, &mut community);
    honest.doc.set_actor(actor_of("another community node"));
    community.write(|d, _| {
        casefile::update_identity(
            d,
            &IdentityPatch {
                phone: Some("110".into()),
                ..Default::default()
            },
        )
        .unwrap()
    });
    community.write(|d, _| {
        casefile::add_activity(d, &aid(3), &activity("after forgery"), &org(COMMUNITY)).unwrap()
    });
    honest.write(|d, _| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    community.doc.merge(&mut honest.doc).unwrap();
    sync_pair(&id, &mut village, &mut community);
    let mut codes = village.refused.clone();
    codes.sort();
    assert_eq!(codes, ["depends_on_refused", "not_home_authority"]);
    let case = village.case(&id);
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
    let (reasons, id, _, community) = refused_after(false, None, |d| {
        casefile::add_activity(d, &aid(4), &activity("forged stamp"), &org(COMMUNITY)).unwrap()
    });
    assert_eq!(reasons, ["stamp_mismatch"]);
    assert!(community.case(&id).activities.is_empty());
    // The village (which may review) signs its review as the county.
    let (reasons, id, _, community) = refused_after(false, None, |d| {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: "good".into(),
            comment: String::new(),
        };
        casefile::add_review(d, &review, &org(COUNTY)).unwrap()
    });
    assert_eq!(reasons, ["stamp_mismatch"]);
    assert!(community.case(&id).reviews.is_empty());
    // The village edits an entry the community recorded.
    let (id, mut village, mut community) = two_dwelling_pair();
    community.write(|d, _| {
        casefile::add_activity(d, &aid(5), &activity("community study"), &org(COMMUNITY)).unwrap()
    });
    sync_pair(&id, &mut village, &mut community);
    village.write(|d, _| {
        let acts = d.get(ROOT, "activities").unwrap().unwrap().1;
        let entry = d.get(&acts, aid(5).as_str()).unwrap().unwrap().1;
        d.put(&entry, "points", 0).unwrap();
    });
    sync_pair(&id, &mut village, &mut community);
    assert_eq!(community.refused, ["not_recorder"]);
    assert_eq!(community.case(&id).activities[0].points, Some(2));
}

#[test]
fn a_forged_author_claim_is_judged_as_the_claimed_org() {
    // Signatures are checked by the node; here the claim is what is judged: a claim naming
    // an org that has no authority over the field is refused all the same.
    let (reasons, ..) = refused_after(true, Some(SIBLING), |d| {
        casefile::add_activity(d, &aid(6), &activity("sibling"), &org(SIBLING)).unwrap()
    });
    assert_eq!(reasons, ["not_in_scope"]);
    let (reasons, ..) = refused_after(true, Some(TOWN), |d| {
        let acts = d.get(ROOT, "activities").unwrap().unwrap().1;
        d.put(&acts, "secret", "x").unwrap();
    });
    assert_eq!(reasons, ["unknown_field"]);
}

#[test]
fn creation_keys_cannot_be_rewritten_and_changes_without_an_author_are_refused() {
    let (id, mut village, mut community) = two_dwelling_pair();
    village.write(|d, _| {
        d.put(ROOT, "home_org", SIBLING).unwrap();
    });
    let acts = community.doc.get(ROOT, "activities").unwrap().unwrap().1;
    community.doc.put(&acts, "x", 1).unwrap();
    community.doc.commit().expect("a change with no author");
    sync_pair(&id, &mut village, &mut community);
    assert_eq!(community.refused, ["immutable_field"]);
    assert_eq!(village.refused, ["unknown_author"]);
    assert_eq!(community.case(&id).home_org, VILLAGE);
}

#[test]
fn a_rival_creation_under_an_existing_id_is_refused() {
    let (id, mut village, mut community) = two_dwelling_pair();
    // The community makes a whole new case file naming itself the home, and offers it as
    // the same document.
    let mut rival = Office::new(COMMUNITY);
    let mut forged = member();
    forged.home_org = org(COMMUNITY);
    rival.write(|d, _| casefile::create(d, &forged).unwrap());
    community.doc.merge(&mut rival.doc).unwrap();
    sync_pair(&id, &mut village, &mut community);
    assert_eq!(village.refused, ["malformed"]);
    assert_eq!(village.case(&id).home_org, VILLAGE);
}

#[test]
fn nothing_is_deleted_from_a_case_file_and_values_are_checked_as_the_api_does() {
    let (reasons, ..) = refused_after(false, None, |d| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.delete(&identity, "name").unwrap();
    });
    assert_eq!(reasons, ["immutable_field"]);
    let (reasons, ..) = refused_after(false, None, |d| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "birth_date", "1971-02-30").unwrap();
    });
    assert_eq!(reasons, ["invalid_value"]);
    let (reasons, ..) = refused_after(true, None, |d| {
        let a = ActivityInput {
            points: Some(1_000_000),
            ..activity("points overflow")
        };
        casefile::add_activity(d, &aid(7), &a, &org(COMMUNITY)).unwrap()
    });
    assert_eq!(reasons, ["invalid_value"]);
}

#[test]
fn documents_outside_either_side_s_scope_are_refused_whole() {
    let mut village = Office::new(VILLAGE);
    let id = create_member(&mut village);
    let mut sibling = Office::new(SIBLING);
    sync_pair(&id, &mut village, &mut sibling);
    assert!(
        sibling
            .refused
            .iter()
            .all(|c| c == "outside_receiver_scope")
            && !sibling.refused.is_empty(),
        "{:?}",
        sibling.refused
    );
    assert!(
        sibling.doc.get_heads().is_empty(),
        "the sibling holds nothing"
    );

    let mut township = Office::new(TOWNSHIP);
    // The community (not in scope: no residence yet) offers the village's file to the township.
    let mut community = Office::copy_of(COMMUNITY, &mut village);
    sync_pair(&id, &mut community, &mut township);
    assert!(!township.refused.is_empty());
    assert!(township.refused.iter().all(|c| c == "outside_sender_scope"));
    assert!(township.doc.get_heads().is_empty());
}

#[test]
fn garbage_change_bytes_are_refused_without_panic() {
    let (id, _, mut community) = two_dwelling_pair();
    let before = community.doc.get_heads();
    let adm = community.receive(
        &id,
        &org(VILLAGE),
        &message_with(&[vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]]),
    );
    assert!(adm.applied.is_empty());
    assert_eq!(adm.refused[0].reason.code(), "malformed");
    let adm = community.receive(&id, &org(VILLAGE), &[0x42, 0xff]);
    assert_eq!(adm.refused[0].reason.code(), "malformed");
    assert_eq!(community.doc.get_heads(), before);
}

#[test]
fn many_changes_in_one_message_end_as_the_same_changes_each_in_its_own() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let before = community.doc.get_heads();
    // Two copies of the file as both offices last synced it, receiving as the village.
    let mut together = Office::copy_of(VILLAGE, &mut community);
    let mut one_by_one = Office::copy_of(VILLAGE, &mut community);
    for n in 10..16 {
        village.write(|d, _| {
            casefile::add_activity(d, &aid(n), &activity("study"), &org(VILLAGE)).unwrap()
        });
    }
    community.write(|d, _| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    // One message with all seven changes (the village's six and the community's one).
    community.doc.merge(&mut village.doc).unwrap();
    let bytes = community.changes_since(&before);
    assert_eq!(bytes.len(), 7);
    let admission = together.receive(&id, &org(COMMUNITY), &message_with(&bytes));
    assert_eq!(admission.applied.len(), 7);
    // The same changes, each in a message of its own.
    for b in &bytes {
        let admission =
            one_by_one.receive(&id, &org(COMMUNITY), &message_with(std::slice::from_ref(b)));
        assert_eq!(admission.applied.len(), 1);
    }
    assert!(together.refused.is_empty() && one_by_one.refused.is_empty());
    assert_eq!(together.doc.get_heads(), one_by_one.doc.get_heads());
    assert_eq!(together.case(&id), one_by_one.case(&id));
    assert_eq!(together.case(&id).activities.len(), 6);
}

/// Changes that each build on the one before, sent in one message: the gate judges each
/// against what the earlier ones wrote before automerge applies any of them together (and,
/// in this test build, also one at a time, and compares).
#[test]
fn changes_building_on_each_other_in_one_message_are_judged_on_what_the_earlier_wrote() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let before = village.doc.get_heads();
    let a = aid(30);
    community
        .write(|d, _| casefile::add_activity(d, &a, &activity("first"), &org(COMMUNITY)).unwrap());
    // Into the list the first change made, then after the element the second inserted.
    for text in ["one", "two"] {
        community.write(|d, _| {
            casefile::comment_activity(d, &a, &org(COMMUNITY), "2026-11-03", text)
                .unwrap()
                .unwrap()
        });
    }
    // A key written twice: the second write overwrites what the first left.
    for date in ["2026-11-03", "2026-11-04"] {
        community.write(|d, _| casefile::record_contact(d, &org(COMMUNITY), date).unwrap());
    }
    // An edit its recorder may make: judging it reads the document itself.
    community.write(|d, _| {
        let activities = d.get(automerge::ROOT, casefile::keys::ACTIVITIES).unwrap();
        let activities = activities.unwrap().1;
        let entry = d.get(&activities, a.as_str()).unwrap().unwrap().1;
        d.put(&entry, "description", "first, corrected").unwrap();
    });
    let bytes = community.changes_since(&before);
    assert_eq!(bytes.len(), 6);
    let admission = village.receive(&id, &org(COMMUNITY), &message_with(&bytes));
    assert!(admission.refused.is_empty(), "{:?}", admission.refused);
    assert_eq!(admission.applied.len(), 6);
    assert_eq!(village.doc.get_heads(), community.doc.get_heads());
    let case = village.case(&id);
    let activity = case.activities.iter().find(|x| x.id == a).unwrap();
    assert_eq!(activity.description, "first, corrected");
    assert_eq!(activity.comments.len(), 2);
    assert_eq!(case, community.case(&id));
}

#[test]
fn a_refused_change_after_an_applied_one_in_the_same_message_leaves_it_applied() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let before = village.doc.get_heads();
    community.write(|d, _| {
        casefile::add_activity(d, &aid(20), &activity("first"), &org(COMMUNITY)).unwrap()
    });
    // Then the community writes the village's review: outside its authority.
    let forged = community.write(|d, _| {
        let review = ReviewInput {
            period: "2026H1".into(),
            rating: "poor".into(),
            comment: String::new(),
        };
        casefile::add_review(d, &review, &org(COMMUNITY)).unwrap()
    });
    let bytes = community.changes_since(&before);
    assert_eq!(bytes.len(), 2);
    let admission = village.receive(&id, &org(COMMUNITY), &message_with(&bytes));
    assert_eq!(admission.applied.len(), 1);
    assert_eq!(admission.refused.len(), 1);
    assert_eq!(admission.refused[0].hash, Some(forged));
    assert_eq!(village.refused, ["not_home_authority"]);
    let case = village.case(&id);
    assert!(case.reviews.is_empty());
    assert_eq!(case.activities.len(), 1);
    assert!(village.doc.get_change_by_hash(&forged).is_none());
}
