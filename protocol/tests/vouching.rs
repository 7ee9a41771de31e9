//! One signature check per actor per message ([`amphi_protocol::vouch`]): a valid signature
//! on an actor's latest change vouches for its earlier ones, and nothing is admitted that
//! checking every signature would refuse unless its voucher is admitted with it. With
//! chained signatures, the earlier ones come with no signature at all: they are taken on
//! the voucher's word or refused, and a voucher that is not applied becomes their proof.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use amphi_protocol::attest::{self, Attestation, Authenticator};
use amphi_protocol::casefile::{self, ActivityInput, IdentityPatch};
use amphi_protocol::gate::{self, Admission, Inbound};
use amphi_protocol::ids::entry_id;
use amphi_protocol::refusal::Refusal;
use amphi_protocol::vouch::Proof;
use amphi_protocol::{DocId, OrgPath};
use automerge::sync;
use automerge::{Change, ChangeHash};
use common::*;

/// Signatures are the bytes `good`; counts the checks made in full and on a voucher's word.
#[derive(Default)]
struct Counting {
    full: AtomicUsize,
    vouched: AtomicUsize,
}

const CERT: [u8; 32] = [1; 32];

impl Authenticator for Counting {
    fn authenticate(
        &self,
        change: &Change,
        _: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        self.full.fetch_add(1, Ordering::Relaxed);
        let att = attest::offered_for(change, attestation)?;
        if att.signature != b"good" {
            return Err(Refusal::BadSignature);
        }
        Ok(())
    }

    fn authenticate_vouched(
        &self,
        change: &Change,
        _: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        self.vouched.fetch_add(1, Ordering::Relaxed);
        attest::offered_for(change, attestation)?;
        Ok(())
    }

    fn check_revocation(&self, _: &str, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

fn signed(change: ChangeHash, signature: &[u8], cert: [u8; 32]) -> Attestation {
    Attestation {
        change,
        cert,
        signature: signature.to_vec(),
    }
}

fn activity(community: &mut Office, n: u8) -> ChangeHash {
    community.write(|d, _| {
        let a = ActivityInput {
            date: "2026-11-02".into(),
            kind: "study".into(),
            description: format!("activity {n}"),
            points: Some(1),
        };
        casefile::add_activity(d, &entry_id('a', [n; 8]), &a, &org(COMMUNITY)).unwrap()
    })
}

/// The village receives `changes` of the community's copy in one message, with
/// `attestations`, through the gate.
fn village_receives(
    village: &mut Office,
    community: &mut Office,
    id: &DocId,
    changes: &[ChangeHash],
    attestations: &[Attestation],
    auth: &Counting,
) -> Admission {
    let bytes: Vec<Vec<u8>> = changes
        .iter()
        .map(|h| {
            let c = community.doc.get_change_by_hash(h).unwrap();
            c.raw_bytes().to_vec()
        })
        .collect();
    receives_bytes(village, id, &bytes, attestations, auth)
}

/// `office` receives the change `bytes` in one message from the community, with
/// `attestations`, through the gate.
fn receives_bytes(
    office: &mut Office,
    id: &DocId,
    bytes: &[Vec<u8>],
    attestations: &[Attestation],
    auth: &Counting,
) -> Admission {
    let cx = Inbound {
        id,
        peer: &org(COMMUNITY),
        me: &office.org.clone(),
        now_ms: NOW,
        auth,
        attestations,
    };
    let mut stored = office.doc.fork();
    gate::receive(
        &mut office.doc,
        &mut sync::State::new(),
        &message_with(bytes),
        &cx,
        &Default::default(),
        &mut Vec::new(),
        &mut || stored.fork(),
    )
}

/// `n` activities at the community, each with a good signature.
fn run_of(community: &mut Office, n: u8) -> (Vec<ChangeHash>, Vec<Attestation>) {
    let changes: Vec<ChangeHash> = (1..=n).map(|i| activity(community, i)).collect();
    let attestations = changes.iter().map(|h| signed(*h, b"good", CERT)).collect();
    (changes, attestations)
}

fn codes(admission: &Admission) -> Vec<&'static str> {
    admission.refused.iter().map(|r| r.reason.code()).collect()
}

#[test]
fn one_signature_check_per_actor_admits_a_whole_run_of_its_changes() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, attestations) = run_of(&mut community, 6);
    let auth = Counting::default();
    let admission = village_receives(
        &mut village,
        &mut community,
        &id,
        &changes,
        &attestations,
        &auth,
    );
    assert_eq!(admission.applied, changes);
    assert_eq!(
        auth.full.load(Ordering::Relaxed),
        gate::TAKES_PER_MESSAGE,
        "only the latest change"
    );
    assert_eq!(
        auth.vouched.load(Ordering::Relaxed),
        5 * gate::TAKES_PER_MESSAGE
    );
    assert_eq!(admission.signatures, attestations, "each keeps its own");
}

#[test]
fn a_voucher_with_a_bad_signature_vouches_for_nothing() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, mut attestations) = run_of(&mut community, 3);
    attestations[2].signature = b"forged".to_vec();
    let auth = Counting::default();
    let admission = village_receives(
        &mut village,
        &mut community,
        &id,
        &changes,
        &attestations,
        &auth,
    );
    assert_eq!(admission.applied, changes[..2]);
    assert_eq!(codes(&admission), ["bad_signature"]);
    assert_eq!(auth.vouched.load(Ordering::Relaxed), 0);
}

#[test]
fn an_earlier_change_signed_with_another_certificate_is_checked_itself() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, mut attestations) = run_of(&mut community, 3);
    attestations[0] = signed(changes[0], b"forged", [2; 32]);
    let auth = Counting::default();
    let admission = village_receives(
        &mut village,
        &mut community,
        &id,
        &changes,
        &attestations,
        &auth,
    );
    assert_eq!(
        codes(&admission),
        ["bad_signature", "depends_on_refused", "depends_on_refused"]
    );
    assert!(admission.applied.is_empty());
}

#[test]
fn a_change_vouched_for_by_a_refused_change_needs_its_own_signature() {
    // The community records an activity (it may), then edits the identity (it may not).
    // The identity edit's signature is good, the activity's is not: the activity's bytes are
    // authentic (the edit's signature covers them), but the edit is refused, so nothing
    // would carry the activity onward but its own, bad, signature: it is refused (and the
    // edit with it) exactly as when every signature is checked.
    let (id, mut village, mut community) = two_dwelling_pair();
    let good_activity = activity(&mut community, 1);
    let edit = community.write(|d, _| {
        let patch = IdentityPatch {
            phone: Some("110".into()),
            ..Default::default()
        };
        casefile::update_identity(d, &patch).unwrap()
    });
    let changes = [good_activity, edit];
    let forged_activity = [
        signed(good_activity, b"forged", CERT),
        signed(edit, b"good", CERT),
    ];
    let auth = Counting::default();
    let admission = village_receives(
        &mut village,
        &mut community,
        &id,
        &changes,
        &forged_activity,
        &auth,
    );
    assert!(admission.applied.is_empty(), "{:?}", admission.applied);
    let mut refused = codes(&admission);
    refused.sort();
    assert_eq!(refused, ["bad_signature", "depends_on_refused"]);
    assert!(
        casefile::CaseFile::read(&id, &village.doc)
            .unwrap()
            .activities
            .is_empty()
    );

    // Sent without a signature of its own (chained signatures), the activity is taken on
    // the edit's word, and the edit is kept as its proof, so that the village can prove the
    // activity to the next office though it refused the edit.
    let mut county = Office::copy_of(COUNTY, &mut village);
    let mut relay = Office::copy_of(VILLAGE, &mut village);
    let chained = [signed(edit, b"good", CERT)];
    let admission = village_receives(&mut relay, &mut community, &id, &changes, &chained, &auth);
    assert_eq!(admission.applied, [good_activity]);
    assert_eq!(codes(&admission), ["not_home_authority"]);
    assert!(
        admission.signatures.is_empty(),
        "the activity has none of its own"
    );
    let edit_change = community.doc.get_change_by_hash(&edit).unwrap();
    assert_eq!(
        admission.proofs,
        [Proof {
            proves: good_activity,
            changes: vec![edit_change.clone()],
            attestation: chained[0].clone(),
        }]
    );
    // The next office, sent the activity with its proof, takes it the same way.
    let proof = &admission.proofs[0];
    let relayed = [
        community
            .doc
            .get_change_by_hash(&good_activity)
            .unwrap()
            .raw_bytes()
            .to_vec(),
        proof.changes[0].raw_bytes().to_vec(),
    ];
    let admission = receives_bytes(&mut county, &id, &relayed, &chained, &auth);
    assert_eq!(admission.applied, [good_activity]);
    assert_eq!(codes(&admission), ["not_home_authority"]);
    assert_eq!(admission.proofs, std::slice::from_ref(proof));
    // A proof that does not decode back to the same chain is not one.
    let encoded = proof.encode();
    assert_eq!(Proof::decode(good_activity, &encoded), Some(proof.clone()));
    assert_eq!(
        Proof::decode(edit, &encoded),
        None,
        "it proves the activity only"
    );
    for cut in 0..encoded.len() {
        assert_eq!(Proof::decode(good_activity, &encoded[..cut]), None);
    }

    // With its own signature good, the activity is admitted and the edit alone refused.
    let honest = [
        signed(good_activity, b"good", CERT),
        signed(edit, b"good", CERT),
    ];
    let admission = village_receives(&mut village, &mut community, &id, &changes, &honest, &auth);
    assert_eq!(admission.applied, [good_activity]);
    assert_eq!(codes(&admission), ["not_home_authority"]);
}

#[test]
fn a_run_sent_with_only_its_latest_signature_is_admitted_whole() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, attestations) = run_of(&mut community, 6);
    let auth = Counting::default();
    let latest = &attestations[5..];
    let admission = village_receives(&mut village, &mut community, &id, &changes, latest, &auth);
    assert_eq!(admission.applied, changes);
    assert_eq!(admission.signatures, latest, "the others came without");
    assert!(
        admission.proofs.is_empty(),
        "the voucher is applied: no proof"
    );
    assert_eq!(auth.full.load(Ordering::Relaxed), gate::TAKES_PER_MESSAGE);
    assert_eq!(
        auth.vouched.load(Ordering::Relaxed),
        5 * gate::TAKES_PER_MESSAGE
    );
}

#[test]
fn a_change_with_no_signature_and_no_signed_change_above_it_is_refused_as_unsigned() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, attestations) = run_of(&mut community, 3);
    let auth = Counting::default();
    let first_only = &attestations[..1];
    let admission = village_receives(
        &mut village,
        &mut community,
        &id,
        &changes,
        first_only,
        &auth,
    );
    assert_eq!(admission.applied, changes[..1]);
    assert_eq!(codes(&admission), ["unsigned", "depends_on_refused"]);
}

#[test]
fn a_forged_signature_at_the_top_of_a_run_vouches_for_nothing_below_it() {
    let (id, mut village, mut community) = two_dwelling_pair();
    let (changes, mut attestations) = run_of(&mut community, 3);
    attestations[2].signature = b"forged".to_vec();
    let auth = Counting::default();
    let top_only = &attestations[2..];
    let admission = village_receives(&mut village, &mut community, &id, &changes, top_only, &auth);
    assert!(admission.applied.is_empty());
    assert_eq!(
        codes(&admission),
        ["unsigned", "depends_on_refused", "depends_on_refused"]
    );
    assert_eq!(auth.vouched.load(Ordering::Relaxed), 0);
}
