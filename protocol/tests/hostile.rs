//! A peer with a valid certificate writes any bytes it likes: changes automerge would panic
//! on, forged authority from a stale view, ops reaching outside their history, two changes
//! with one (actor, seq). Each is sent through the gate the way a node's session does
//! (`DocSync::receive`); the receiving office refuses it, keeps its document intact, and
//! keeps syncing honest work. (Over real QUIC sessions: tests/tests/hostile.rs.)

mod common;

use amphi_protocol::casefile::{self, ResidenceInput};
use amphi_protocol::transfer::{self, Decision};
use amphi_protocol::{DocId, stamp};
use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::transaction::Transactable;
use automerge::{ActorId, Change, ChangeHash, ExpandedChange, ROOT, ReadDoc as _, ScalarValue};
use common::*;

/// Panics on this thread so far, contained or not. A contained panic leaves no trace in a
/// refusal's outcome beyond its reason, so the tests that claim automerge never saw a forged
/// change count panics with a hook (installed once, before the previous hook).
fn panics_on_this_thread() -> usize {
    use std::cell::Cell;
    thread_local! {
        static PANICS: Cell<usize> = const { Cell::new(0) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    PANICS.with(Cell::get)
}

#[test]
fn the_panic_count_sees_a_contained_panic() {
    let before = panics_on_this_thread();
    let caught = amphi_protocol::contain::contain("a test panic", || panic!("on purpose"));
    assert!(caught.is_err());
    assert_eq!(panics_on_this_thread(), before + 1);
}

fn tid(id: &DocId, n: u8) -> String {
    format!("t-{}-{}", &id.as_str()[2..], hex::encode([n; 4]))
}

fn rid(id: &DocId, n: u8) -> String {
    casefile::assignment_id(id, [n; 4])
}

/// A new case file at the village, synced to the community and the county.
fn county() -> (DocId, Office, Office, Office) {
    let mut village = Office::new(VILLAGE);
    let community = Office::new(COMMUNITY);
    let mut county = Office::new(COUNTY);
    let id = create_member(&mut village);
    sync_pair(&id, &mut village, &mut county);
    (id, village, community, county)
}

/// The village makes the member two-dwelling, resident at the community.
fn resident_at_community(village: &mut Office, id: &DocId) {
    village.write(|d, s| {
        let r = ResidenceInput {
            org: org(COMMUNITY),
            since: "2026-10-15".into(),
            until: None,
        };
        casefile::assign_residence(d, &rid(id, 1), Some(&r), &org(VILLAGE), s).unwrap();
    });
}

fn open(office: &mut Office, t: &str, from: &str, to: &str) -> ChangeHash {
    let me = office.org.clone();
    office.write(|d, s| transfer::open(d, t, (&org(from), &org(to)), "moves", &me, s).unwrap())
}

fn decide(office: &mut Office, t: &str, d: Decision) -> ChangeHash {
    let me = office.org.clone();
    office.write(|doc, s| {
        transfer::decide(doc, t, d, &me, s).unwrap().unwrap();
    })
}

fn change(office: &mut Office, hash: ChangeHash) -> Change {
    office.doc.get_change_by_hash(&hash).unwrap()
}

/// The village's real change to `id`, rewritten field by field (and so re-hashed).
fn forged(
    office: &mut Office,
    hash: ChangeHash,
    edit: impl FnOnce(&mut ExpandedChange),
) -> Vec<u8> {
    let mut expanded = change(office, hash).decode();
    edit(&mut expanded);
    Change::from(expanded).raw_bytes().to_vec()
}

#[test]
fn changes_automerge_would_panic_on_are_refused_and_honest_work_goes_on() {
    let (id, mut village, mut community, mut county) = county();
    let phone = village.write(|d, _| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "phone", "0990-1234567").unwrap();
    });
    // seq 2 from an actor this document has never seen (automerge: `lookup_actor().unwrap()`).
    let unseen = forged(&mut village, phone, |c| {
        c.actor_id = ActorId::from(&[9u8; 16][..])
    });
    // An op whose object does not exist ("Missing from Index").
    let missing = forged(&mut village, phone, |c| {
        c.operations[0].obj = ObjectId::Id(OpId(9_999, c.actor_id.clone()));
    });
    // An op whose action automerge does not know how to expand.
    let counter = forged(&mut village, phone, |c| {
        c.operations[0].action = OpType::Increment(1);
    });
    let before = county.doc.get_heads();
    let panics = panics_on_this_thread();
    let adm = county.receive(
        &id,
        &org(VILLAGE),
        &message_with(&[unseen, missing, counter]),
    );
    let mut codes: Vec<&str> = adm.refused.iter().map(|r| r.reason.code()).collect();
    codes.sort();
    assert_eq!(codes, ["broken_chain", "outside_history", "unknown_field"]);
    assert_eq!(
        panics_on_this_thread(),
        panics,
        "the gate refused them before automerge saw them (no panic, even contained)"
    );
    assert_eq!(
        county.doc.get_heads(),
        before,
        "nothing reached the document"
    );
    // The honest change still syncs, and so does the community's new work.
    sync_pair(&id, &mut village, &mut county);
    assert_eq!(county.case(&id).phone.as_deref(), Some("0990-1234567"));
    let _ = &mut community;
}

#[test]
fn sync_messages_automerge_would_panic_on_are_refused_and_the_state_stays_usable() {
    let (id, mut village, _, mut county) = county();
    // A `have` Bloom filter with num_entries = 1, bits_per_entry = 0 (the reply path divides
    // by zero), then one with four billion probes (a 16 GiB allocation).
    let zero_bits = [0x42, 0, 0, 1, 0, 3, 1, 0, 7, 0];
    let mut many_probes = vec![0x42, 0, 0, 1, 0];
    let mut bloom = vec![1, 10];
    leb(&mut bloom, 4_000_000_000);
    bloom.extend_from_slice(&[0, 0]);
    leb(&mut many_probes, bloom.len() as u64);
    many_probes.extend_from_slice(&bloom);
    many_probes.push(0);
    let panics = panics_on_this_thread();
    for bytes in [&zero_bits[..], &many_probes] {
        let adm = county.receive(&id, &org(VILLAGE), bytes);
        assert_eq!(adm.refused[0].reason.code(), "malformed");
        assert!(adm.applied.is_empty());
    }
    assert_eq!(panics_on_this_thread(), panics, "refused before automerge");
    // Generating the next message from the same sync state works, and sync completes.
    village.write(|d, _| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "education", "high school").unwrap();
    });
    sync_pair(&id, &mut village, &mut county);
    assert_eq!(county.case(&id).education.as_deref(), Some("high school"));
}

#[test]
fn a_former_home_cannot_reopen_a_transfer_from_the_view_before_it_moved() {
    // bayin → xingfu is accepted. Bayin then signs "open t-evil to bayin/x" and "accept
    // t-evil" from the heads before the accept.
    let (id, mut village, mut community, mut county) = county();
    open(&mut village, &tid(&id, 1), VILLAGE, COMMUNITY);
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut county, &mut community);
    let before_accept = village.doc.get_heads();
    decide(&mut community, &tid(&id, 1), Decision::Accept);
    sync_pair(&id, &mut community, &mut county);
    assert_eq!(county.case(&id).home_org, COMMUNITY);

    let mut forger = Office::copy_of(VILLAGE, &mut village);
    forger.doc = village
        .doc
        .fork_at(&before_accept)
        .unwrap()
        .with_actor(actor_of(VILLAGE));
    let evil = tid(&id, 66);
    open(&mut forger, &evil, VILLAGE, "hoboksar/chagantolgay/bayin/x");
    decide(&mut forger, &evil, Decision::Accept);
    sync_pair(&id, &mut forger, &mut county);
    assert_eq!(
        county.refused,
        ["transfer_already_open", "depends_on_refused"]
    );
    assert_eq!(county.case(&id).home_org, COMMUNITY);
    sync_pair(&id, &mut county, &mut community);
    assert_eq!(
        community.case(&id).home_org,
        COMMUNITY,
        "xingfu keeps the file"
    );
}

#[test]
fn a_target_that_saw_the_cancel_cannot_accept_from_before_it() {
    let (id, mut village, mut community, mut county) = county();
    // Xingfu is also the member's residence, so it stays in scope after the cancel.
    resident_at_community(&mut village, &id);
    let t = tid(&id, 2);
    let opened = open(&mut village, &t, VILLAGE, COMMUNITY);
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut county, &mut community);
    decide(&mut village, &t, Decision::Cancel);
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut county, &mut community);
    // Xingfu records an activity after it saw the cancel: its history is a chain, so any
    // change it signs from now on follows the cancel.
    community.write(|d, _| {
        let a = casefile::ActivityInput {
            date: "2026-11-20".into(),
            kind: "study".into(),
            description: "after the cancel".into(),
            points: None,
        };
        casefile::add_activity(
            d,
            &amphi_protocol::ids::entry_id('a', [4; 8]),
            &a,
            &org(COMMUNITY),
        )
        .unwrap();
    });
    // It signs an accept with deps = the open (plus its own previous change, as it must).
    let own_last = community.doc.get_heads();
    let mut forger = Office::copy_of(COMMUNITY, &mut community);
    forger.doc = community
        .doc
        .fork_at(&[opened])
        .unwrap()
        .with_actor(actor_of(COMMUNITY));
    forger
        .doc
        .merge(&mut community.doc.fork_at(&own_last).unwrap())
        .unwrap();
    decide(&mut forger, &t, Decision::Accept);
    sync_pair(&id, &mut forger, &mut county);
    assert_eq!(county.refused, ["transfer_not_open"]);
    assert_eq!(county.case(&id).home_org, VILLAGE);
    assert_eq!(county.case(&id).transfers[0].state, "cancelled");
}

#[test]
fn a_concurrent_accept_and_cancel_settle_the_same_way_everywhere() {
    // The honest, offline case: the target accepts without having seen the cancel. The
    // earlier step wins on every node, and the other is listed as void.
    let (id, mut village, mut community, mut county) = county();
    let t = tid(&id, 3);
    open(&mut village, &t, VILLAGE, COMMUNITY);
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut county, &mut community);
    community.clock = village.clock + 100_000;
    decide(&mut village, &t, Decision::Cancel);
    decide(&mut community, &t, Decision::Accept);
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut community, &mut county);
    sync_pair(&id, &mut county, &mut village);
    assert!(county.refused.is_empty() && village.refused.is_empty());
    for office in [&village, &county] {
        let case = office.case(&id);
        assert_eq!(case.home_org, VILLAGE);
        assert_eq!(case.transfers[0].state, "cancelled");
    }
    let (_, affiliation) = transfer::resolve_doc(&amphi_protocol::reader::Reader::now(&county.doc));
    assert_eq!(affiliation.conflicts[0].id, format!("{t}:accept-void"));
}

#[test]
fn a_former_home_cannot_regain_the_file_through_a_residence() {
    // After bayin → xingfu, bayin sets the residence to one of its own sub-orgs from before
    // the accept, dated either before or after it: the file never comes back in its scope.
    for backdate in [true, false] {
        let (id, mut village, mut community, mut county) = county();
        let t = tid(&id, 4);
        open(&mut village, &t, VILLAGE, COMMUNITY);
        let before_accept = village.doc.get_heads();
        sync_pair(&id, &mut village, &mut county);
        sync_pair(&id, &mut county, &mut community);
        community.clock = village.clock + 50_000;
        decide(&mut community, &t, Decision::Accept);
        sync_pair(&id, &mut community, &mut county);

        let mut forger = Office::copy_of(VILLAGE, &mut village);
        forger.doc = village
            .doc
            .fork_at(&before_accept)
            .unwrap()
            .with_actor(actor_of(VILLAGE));
        forger.clock = if backdate {
            village.clock
        } else {
            community.clock + 10_000
        };
        let sub = ResidenceInput {
            org: org("hoboksar/chagantolgay/bayin/x"),
            since: "2026-11-01".into(),
            until: None,
        };
        forger.write(|d, s| {
            casefile::assign_residence(d, &rid(&id, 9), Some(&sub), &org(VILLAGE), s).unwrap()
        });
        sync_pair(&id, &mut forger, &mut county);
        let case = county.case(&id);
        assert_eq!(case.home_org, COMMUNITY);
        assert_eq!(case.residence, None, "backdated: {backdate}");
        let facts = casefile::MemberFacts::read(&amphi_protocol::reader::Reader::now(&county.doc));
        assert!(!amphi_protocol::visibility::visible_to(
            &facts.scope(),
            &org(VILLAGE)
        ));
    }
}

#[test]
fn opened_at_must_be_the_change_s_own_time() {
    let (id, mut village, _, mut county) = county();
    let me = org(VILLAGE);
    village.write(|d, s| {
        let early = stamp::Stamp::at(s.ms - 86_400_000 * 365);
        transfer::open(
            d,
            &tid(&id, 5),
            (&me, &org(COMMUNITY)),
            "moves",
            &me,
            &early,
        )
        .unwrap();
    });
    sync_pair(&id, &mut village, &mut county);
    assert_eq!(county.refused, ["time"]);
    assert!(county.case(&id).transfers.is_empty());
}

#[test]
fn an_op_cannot_reach_outside_its_change_s_history() {
    // Xingfu (the residence) signs a change whose deps are the creation only, holding a
    // write whose predecessor is the village's later identity.phone op.
    let (id, mut village, mut community, mut county) = county();
    resident_at_community(&mut village, &id);
    let phone = village.write(|d, _| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "phone", "0990-1234567").unwrap();
    });
    sync_pair(&id, &mut village, &mut county);
    sync_pair(&id, &mut county, &mut community);
    let phone_op = change(&mut village, phone).decode().operations[0].clone();
    let phone_id = OpId(
        change(&mut village, phone).start_op().get(),
        actor_of(VILLAGE),
    );
    let report =
        community.write(|d, _| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    let mut expanded = change(&mut community, report).decode();
    let mut sneaky = phone_op.clone();
    sneaky.action = OpType::Put(ScalarValue::Str("110".into()));
    sneaky.pred = vec![phone_id].into();
    expanded.operations.push(sneaky);
    expanded.deps = vec![change(&mut village, phone).deps()[0]];
    let bytes = Change::from(expanded).raw_bytes().to_vec();
    let adm = county.receive(&id, &org(COMMUNITY), &message_with(&[bytes]));
    assert_eq!(adm.refused.len(), 1, "{:?}", adm.refused);
    assert!(
        matches!(
            adm.refused[0].reason.code(),
            "outside_history" | "broken_chain"
        ),
        "{:?}",
        adm.refused[0].reason
    );
    assert_eq!(county.case(&id).phone.as_deref(), Some("0990-1234567"));
    let _ = Key::Map("x".into());
}

#[test]
fn an_equivocation_keeps_the_lower_hash_everywhere_and_independent_work_flows() {
    // The village signs two different changes with the same (actor, seq): one reaches the
    // township, the other the county. Both end up with the same one; the township's change
    // made on top of the dropped one is dropped with it; the county's independent change
    // reaches everyone.
    let (id, mut village, _, mut county) = county();
    let mut township = Office::new(TOWNSHIP);
    sync_pair(&id, &mut village, &mut township);
    let fork_point = village.doc.get_heads();
    let mut twin = Office::copy_of(VILLAGE, &mut village);
    twin.doc = village
        .doc
        .fork_at(&fork_point)
        .unwrap()
        .with_actor(actor_of(VILLAGE));
    let x = village.write(|d, _| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "phone", "111").unwrap();
    });
    let y = twin.write(|d, _| {
        let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
        d.put(&identity, "phone", "222").unwrap();
    });
    assert_eq!(change(&mut village, x).seq(), change(&mut twin, y).seq());
    sync_pair(&id, &mut village, &mut township);
    sync_pair(&id, &mut twin, &mut county);
    // Work on top of each side's copy.
    let on_top = township.write(|d, _| {
        let contacts = d.get(ROOT, "contacts").unwrap().unwrap().1;
        d.put(&contacts, TOWNSHIP, "2026-11-21").unwrap();
    });
    county.write(|d, _| {
        let contacts = d.get(ROOT, "contacts").unwrap().unwrap().1;
        d.put(&contacts, COUNTY, "2026-11-22").unwrap();
    });
    sync_pair(&id, &mut township, &mut county);
    sync_pair(&id, &mut township, &mut county);
    assert_eq!(
        township.doc.get_heads(),
        county.doc.get_heads(),
        "one document again"
    );
    let kept = x.min(y);
    let phone = if kept == x { "111" } else { "222" };
    for office in [&township, &county] {
        let case = office.case(&id);
        assert_eq!(case.phone.as_deref(), Some(phone));
        assert!(office.doc.get_change_by_hash(&kept).is_some());
        assert!(office.doc.get_change_by_hash(&x.max(y)).is_none());
    }
    assert!(
        township.refused.contains(&"equivocation".to_owned())
            || county.refused.contains(&"equivocation".to_owned())
    );
    // What the township built on the village's dropped change went with it; the county's
    // independent work is everywhere.
    assert_eq!(county.doc.get_change_by_hash(&on_top).is_some(), kept == x);
    let contacts = county.doc.get(ROOT, "contacts").unwrap().unwrap().1;
    assert!(county.doc.get(&contacts, COUNTY).unwrap().is_some());
    assert_eq!(
        county.doc.get(&contacts, TOWNSHIP).unwrap().is_some(),
        kept == x
    );
}

/// Why each change of the sync message `bytes` is refused, in order, as the gate's decoder
/// reads them (changes it would take are left out).
fn refusals_of(bytes: &[u8]) -> Vec<String> {
    let message = amphi_protocol::syncmsg::SyncMessage::decode(bytes).unwrap();
    message
        .changes
        .iter()
        .filter_map(|c| amphi_protocol::syncmsg::decode_change(c).err())
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_change_in_a_non_canonical_encoding_is_refused() {
    // Found by the sync_message fuzz target: a message whose first change parses but is not
    // encoded as automerge encodes it. Applied, it was stored under one hash and rebuilt
    // under another, and the document could no longer produce its own history.
    let bytes = include_bytes!("../../fuzz/artifacts/sync_message/non-canonical-change-encoding");
    let refusals = refusals_of(bytes);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals.iter().all(|r| r.contains("canonical")),
        "{refusals:?}"
    );
}

#[test]
fn an_op_naming_an_actor_its_change_does_not_list_is_refused_before_automerge_reads_it() {
    // Found by the sync_message fuzz target: an op whose actor index is past the actors its
    // change lists. automerge 0.12 parses the change, then panics decoding its ops
    // (`Change::decode`, an `unwrap` on the actor lookup); the panic was contained and the
    // change refused. Now the op columns are read for their actor indices first.
    let bytes = include_bytes!("../../fuzz/artifacts/sync_message/contained-decode-actor-index");
    let panics = panics_on_this_thread();
    let refusals = refusals_of(bytes);
    assert_eq!(
        panics_on_this_thread(),
        panics,
        "refused before automerge decoded its ops (no panic, even contained)"
    );
    // Its other change is cut short, and refused as such.
    assert_eq!(
        refusals,
        [
            "an op names actor 8 of a change that lists 1",
            "sync message truncated"
        ]
    );
}

#[test]
fn a_relay_that_switched_to_the_other_change_of_an_equivocation_brings_its_peers_along() {
    // The township relays the village's change X to the county; then the other change Y
    // (same actor and seq, lower hash) reaches the township, which drops X. The county, which
    // believes it shares X with the township, must still end with Y.
    let (id, mut village, _, mut county) = county();
    let mut township = Office::new(TOWNSHIP);
    sync_pair(&id, &mut village, &mut township);
    sync_pair(&id, &mut township, &mut county);
    let fork_point = village.doc.get_heads();
    let rename = |office: &mut Office, to: &str| {
        office.write(|d, _| {
            let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
            d.put(&identity, "phone", to).unwrap();
        })
    };
    // Two changes with one (actor, seq), the second with the lower hash.
    let (mut x, mut twin, mut y);
    let mut n = 0;
    loop {
        twin = Office::copy_of(VILLAGE, &mut village);
        twin.doc = village
            .doc
            .fork_at(&fork_point)
            .unwrap()
            .with_actor(actor_of(VILLAGE));
        let mut first = Office::copy_of(VILLAGE, &mut village);
        first.doc = village
            .doc
            .fork_at(&fork_point)
            .unwrap()
            .with_actor(actor_of(VILLAGE));
        x = rename(&mut first, &format!("1{n:03}"));
        y = rename(&mut twin, &format!("2{n:03}"));
        if y < x {
            village = first;
            break;
        }
        n += 1;
    }
    sync_pair(&id, &mut village, &mut township);
    sync_pair(&id, &mut township, &mut county);
    assert!(
        county.doc.get_change_by_hash(&x).is_some(),
        "the county has X"
    );
    sync_pair(&id, &mut twin, &mut township);
    assert!(
        township.doc.get_change_by_hash(&y).is_some(),
        "the township switched to Y"
    );
    sync_pair(&id, &mut township, &mut county);
    assert!(
        county.doc.get_change_by_hash(&y).is_some(),
        "the county ends with Y"
    );
    assert!(county.doc.get_change_by_hash(&x).is_none());
    assert_eq!(county.doc.get_heads(), township.doc.get_heads());
}

#[test]
fn a_change_automerge_would_panic_on_after_an_honest_one_is_refused_and_the_honest_one_kept() {
    let (id, mut village, _, mut county) = county();
    let before = county.doc.get_heads();
    let write_phone = |village: &mut Office, phone: &'static str| {
        village.write(move |d, _| {
            let identity = d.get(ROOT, "identity").unwrap().unwrap().1;
            d.put(&identity, "phone", phone).unwrap();
        })
    };
    let first = write_phone(&mut village, "0990-1234567");
    let second = write_phone(&mut village, "0990-7654321");
    // The second change, its op aimed at an object that does not exist, in one message
    // after the honest first: the first is applied before the second is judged, and the
    // second never reaches automerge ("Missing from Index" is a panic there).
    let missing = forged(&mut village, second, |c| {
        c.operations[0].obj = ObjectId::Id(OpId(9_999, c.actor_id.clone()));
    });
    let honest = change(&mut village, first).raw_bytes().to_vec();
    let panics = panics_on_this_thread();
    let adm = county.receive(&id, &org(VILLAGE), &message_with(&[honest, missing]));
    assert_eq!(adm.applied, [first]);
    let codes: Vec<&str> = adm.refused.iter().map(|r| r.reason.code()).collect();
    assert_eq!(codes, ["outside_history"]);
    assert_eq!(adm.faults, 0);
    assert_eq!(
        panics_on_this_thread(),
        panics,
        "automerge never saw the forged change (no panic, even contained)"
    );
    assert_ne!(county.doc.get_heads(), before);
    assert_eq!(county.doc.get_heads(), [first]);
    assert_eq!(county.case(&id).phone.as_deref(), Some("0990-1234567"));
}

#[test]
fn a_change_on_top_of_an_ended_residence_is_judged_with_it_ended_in_the_same_message() {
    let (id, mut village, mut community, mut county) = county();
    resident_at_community(&mut village, &id);
    sync_pair(&id, &mut village, &mut community);
    sync_pair(&id, &mut village, &mut county);
    let before = county.doc.get_heads();
    // The community reports in (facts unchanged), then the village ends the residence.
    community.write(|d, _| casefile::report_in(d, &org(COMMUNITY), "2026-10-20").unwrap());
    sync_pair(&id, &mut village, &mut community);
    let ended = village.write(|d, s| {
        casefile::assign_residence(d, &rid(&id, 2), None, &org(VILLAGE), s).unwrap();
    });
    sync_pair(&id, &mut village, &mut community);
    // The community, having seen the end, still records an activity on top of it; all
    // three changes reach the county in one message, each depending on the one before.
    let late = community.write(|d, _| {
        let a = casefile::ActivityInput {
            date: "2026-11-02".into(),
            kind: "study".into(),
            description: "after the residence ended".into(),
            points: None,
        };
        casefile::add_activity(
            d,
            &amphi_protocol::ids::entry_id('a', [7; 8]),
            &a,
            &org(COMMUNITY),
        )
        .unwrap()
    });
    let bytes = community.changes_since(&before);
    assert_eq!(bytes.len(), 3);
    let adm = county.receive(&id, &org(COMMUNITY), &message_with(&bytes));
    assert_eq!(adm.applied.len(), 2, "{:?}", adm.refused);
    assert!(adm.applied.contains(&ended));
    assert_eq!(adm.refused.len(), 1);
    assert_eq!(
        adm.refused[0].hash,
        Some(late),
        "{:?}",
        adm.refused[0].reason
    );
    assert!(county.case(&id).activities.is_empty());
}

/// Bytes of a change chunk, read and written the way automerge lays them out: LEB128 numbers
/// and length-prefixed runs (for [`stretched`]).
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn uleb(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.take(1)[0];
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    }
    fn sleb(&mut self) -> i64 {
        let (mut v, mut shift) = (0i64, 0);
        loop {
            let b = self.take(1)[0];
            v |= i64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1 << shift;
                }
                return v;
            }
        }
    }
}

fn sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0) {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// What [`stretched`] makes longer.
#[derive(Clone, Copy, PartialEq)]
enum Stretch {
    /// Every op column's longest run: `extra` more ops, each as the run's others.
    Ops,
    /// The predecessors of the ops in the predecessor-count column's longest run, `extra`
    /// more each (the predecessor columns' longest runs made longer to match).
    Predecessors,
}

/// `change` in the same few bytes, declaring `extra` more ops or predecessors: a
/// well-formed chunk (checksum included) that automerge's parser would walk entry by entry.
fn stretched(change: &Change, stretch: Stretch, extra: u64) -> Vec<u8> {
    let raw = change.raw_bytes();
    let mut r = Bytes(&raw[9..]);
    let len = r.uleb() as usize;
    let body = r.take(len);
    let mut r = Bytes(body);
    // The header, up to the column layout, stays as it is.
    let deps = r.uleb() as usize;
    r.take(32 * deps);
    let actor = r.uleb() as usize;
    r.take(actor);
    r.uleb();
    r.uleb();
    r.sleb();
    let message = r.uleb() as usize;
    r.take(message);
    let others = r.uleb();
    for _ in 0..others {
        let n = r.uleb() as usize;
        r.take(n);
    }
    let header = &body[..body.len() - r.0.len()];
    let layout: Vec<(u64, usize)> = (0..r.uleb())
        .map(|_| (r.uleb(), r.uleb() as usize))
        .collect();
    let mut columns = Vec::new();
    let mut more_preds = 0; // Stretch::Predecessors: entries the predecessor columns gain
    for (spec, len) in &layout {
        let data = r.take(*len);
        let mut c = Bytes(data);
        let at = |c: &Bytes| data.len() - c.0.len();
        // Each run's length (where it is written, how long it is, whether it is signed) and,
        // for a run of one value, where the value is written.
        type Run = (std::ops::Range<usize>, u64, bool, std::ops::Range<usize>);
        let mut runs: Vec<Run> = Vec::new();
        match spec & 0b111 {
            7 => {} // raw values: a null takes no bytes
            4 => {
                // booleans: alternating run lengths
                while !c.0.is_empty() {
                    let start = at(&c);
                    let n = c.uleb();
                    runs.push((start..at(&c), n, false, 0..0));
                }
            }
            kind => {
                // run-length encoded: a count, then one value, a literal list, or a null count
                let value = |c: &mut Bytes| match kind {
                    3 => drop(c.sleb()),
                    5 => {
                        let n = c.uleb() as usize;
                        c.take(n);
                    }
                    _ => drop(c.uleb()),
                };
                while !c.0.is_empty() {
                    let start = at(&c);
                    let n = c.sleb();
                    if n > 0 {
                        let count = start..at(&c);
                        value(&mut c);
                        runs.push((count.clone(), n as u64, true, count.end..at(&c)));
                    } else if n < 0 {
                        (0..-n).for_each(|_| value(&mut c));
                    } else {
                        let start = at(&c);
                        let nulls = c.uleb();
                        runs.push((start..at(&c), nulls, false, 0..0));
                    }
                }
            }
        }
        let pred_column = spec >> 4 == 7;
        let longest = runs.into_iter().max_by_key(|(_, n, _, _)| *n);
        columns.push(match (stretch, longest) {
            (_, None) | (Stretch::Predecessors, _) if !pred_column => data.to_vec(),
            (_, None) => data.to_vec(),
            (Stretch::Predecessors, Some((_, ops, _, value))) if spec & 0b111 == 0 => {
                let n = Bytes(&data[value.clone()]).uleb();
                more_preds = ops * extra;
                let mut out = data[..value.start].to_vec();
                leb(&mut out, n + extra);
                out.extend_from_slice(&data[value.end..]);
                out
            }
            (_, Some((at, n, signed, _))) => {
                let longer = match stretch {
                    Stretch::Ops => n + extra,
                    Stretch::Predecessors => n + more_preds,
                };
                let mut out = data[..at.start].to_vec();
                match signed {
                    true => sleb(&mut out, longer as i64),
                    false => leb(&mut out, longer),
                }
                out.extend_from_slice(&data[at.end..]);
                out
            }
        });
    }
    let mut body = header.to_vec();
    leb(&mut body, layout.len() as u64);
    for ((spec, _), data) in layout.iter().zip(&columns) {
        leb(&mut body, *spec);
        leb(&mut body, data.len() as u64);
    }
    for data in &columns {
        body.extend_from_slice(data);
    }
    body.extend_from_slice(r.0); // extra bytes
    let mut summed = vec![1u8];
    leb(&mut summed, body.len() as u64);
    summed.extend_from_slice(&body);
    let checksum = &<sha2::Sha256 as sha2::Digest>::digest(&summed)[..4];
    [&raw[..4], checksum, &summed].concat()
}

/// A change of `n` list insertions, or `n` overwrites of a value each (one predecessor each).
fn change_of(n: usize, overwrites: bool) -> Change {
    let mut doc = automerge::AutoCommit::new();
    let list = doc.put_object(ROOT, "l", automerge::ObjType::List).unwrap();
    for i in 0..n {
        doc.put(ROOT, format!("k{i}"), 1).unwrap();
    }
    doc.commit();
    for i in 0..n {
        match overwrites {
            true => doc.put(ROOT, format!("k{i}"), 2).unwrap(),
            false => doc.insert(&list, i, ScalarValue::Null).unwrap(),
        }
    }
    doc.commit();
    doc.get_last_local_change().unwrap().clone()
}

#[test]
fn stretched_changes_are_what_automerge_would_read() {
    // The helper below builds real bombs: at a small stretch, automerge parses the chunk and
    // finds that many more ops, or predecessors.
    let ops = Change::from_bytes(stretched(&change_of(10, false), Stretch::Ops, 5)).unwrap();
    assert_eq!(ops.len(), 15);
    let preds = Change::from_bytes(stretched(&change_of(10, true), Stretch::Predecessors, 5));
    let preds = preds.unwrap().decode();
    assert_eq!(preds.operations.len(), 10);
    assert!(preds.operations.iter().all(|op| op.pred.len() == 6));
}

#[test]
fn a_change_declaring_billions_of_ops_or_predecessors_in_a_few_bytes_is_refused_unread() {
    // automerge's columns are run-length encoded: a change of about a hundred bytes can
    // declare a trillion ops, or one op a trillion predecessors. automerge would walk every
    // one, then ask for terabytes to decode them: an abort, which no containment catches.
    let (id, _village, _, mut county) = county();
    let trillion = 1u64 << 40;
    let ops = stretched(&change_of(10, false), Stretch::Ops, trillion);
    let preds = stretched(&change_of(10, true), Stretch::Predecessors, trillion);
    assert!(ops.len() < 200 && preds.len() < 200, "a few bytes each");
    let before = county.doc.get_heads();
    let panics = panics_on_this_thread();
    let adm = county.receive(&id, &org(VILLAGE), &message_with(&[ops, preds]));
    let reasons: Vec<String> = adm.refused.iter().map(|r| r.reason.to_string()).collect();
    assert_eq!(adm.refused.len(), 2, "{reasons:?}");
    assert!(
        adm.refused.iter().all(|r| r.reason.code() == "malformed"),
        "{reasons:?}"
    );
    assert!(reasons[0].contains("more than 4096 ops"), "{reasons:?}");
    assert!(
        reasons[1].contains("more than 65536 predecessors"),
        "{reasons:?}"
    );
    assert_eq!(
        panics_on_this_thread(),
        panics,
        "refused before automerge read them"
    );
    assert_eq!(county.doc.get_heads(), before);
}
