//! How many incoming changes a node verifies per second: the signature and certificate
//! checks alone, and the whole gate (signature, certificate, structure, authority by ops).
//!
//! `cargo bench -p amphi-node --bench verify` prints medians of 5 runs.

use std::time::Instant;

use amphi_node::pki::{self, NodeIdentity};
use amphi_node::trust::{Signer, Trust};
use amphi_protocol::attest::{Attestation, Authenticator};
use amphi_protocol::casefile::{self, ActivityInput, NewMember};
use amphi_protocol::docsync::DocSync;
use amphi_protocol::gate::Inbound;
use amphi_protocol::stamp::Stamp;
use amphi_protocol::{DocId, OrgPath, gate};
use automerge::{ActorId, AutoCommit, Change};

/// Syncs `doc` from the village into an empty copy at the township, through the gate (the
/// township's first message asks for everything; the village's answer carries it all).
/// Returns (changes applied, the first refusal if any).
fn into_township(
    doc: &mut AutoCommit,
    id: &DocId,
    attestations: &[Attestation],
    trust: &Trust,
    (village, township): (&OrgPath, &OrgPath),
) -> (usize, Option<String>) {
    let now = i64::MAX / 2; // no change is "from the future" in this benchmark
    let cx = |peer, me, atts| Inbound {
        id,
        peer,
        me,
        now_ms: now,
        auth: trust,
        attestations: atts,
    };
    let mut sender = DocSync::default();
    let mut receiver = AutoCommit::new();
    let mut sync = DocSync::default();
    let first = sender.generate(doc).unwrap().message;
    let _ = sync.receive(
        &mut receiver,
        &first,
        &cx(village, township, &[]),
        &mut AutoCommit::new,
    );
    let ask = sync.generate(&mut receiver).unwrap().message;
    let _ = sender.receive(doc, &ask, &cx(township, village, &[]), &mut AutoCommit::new);
    let batch = sender.generate(doc).unwrap();
    let admission = sync.receive(
        &mut receiver,
        &batch.message,
        &cx(village, township, attestations),
        &mut AutoCommit::new,
    );
    (
        admission.applied.len(),
        admission.refused.first().map(|r| r.reason.to_string()),
    )
}

const CHANGES: usize = 2_000;
const RUNS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let village = OrgPath::parse("hoboksar/chagantolgay/bayin").unwrap();
    pki::ca_init(&tmp.path().join("ca"), &OrgPath::parse("hoboksar").unwrap()).unwrap();
    pki::ca_issue(&tmp.path().join("ca"), &village, &tmp.path().join("v"), 825).unwrap();
    let d = tmp.path().join("v");
    let identity =
        NodeIdentity::load(&d.join("node.crt"), &d.join("node.key"), &d.join("ca.crt")).unwrap();
    let signer = Signer::new(&identity).unwrap();
    let trust = Trust::new(&identity.ca_der).unwrap();
    trust.admit(&identity.cert_der).unwrap();

    // One case file with CHANGES activity entries, each its own signed change.
    let mut doc = AutoCommit::new().with_actor(ActorId::from(identity.actor_id()));
    let member: NewMember = serde_json::from_value(serde_json::json!({
        "name": "Bayar", "gender": "male", "ethnicity": "Mongol", "birth_date": "1971-03-02",
        "joined_at": "1996-07-01", "home_org": village.as_str()}))
    .unwrap();
    casefile::create(&mut doc, &member).unwrap();
    let now = Stamp::at(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let id = DocId::member_created_by(&gate::commit_as(&mut doc, &village, &now).unwrap());
    for n in 0..CHANGES {
        let a = ActivityInput {
            date: "2026-11-02".into(),
            kind: "study".into(),
            description: format!("entry {n}"),
            points: Some(1),
        };
        casefile::add_activity(&mut doc, &format!("a-{n:016x}"), &a, &village).unwrap();
        gate::commit_as(&mut doc, &village, &now).unwrap();
    }
    let changes: Vec<Change> = doc.get_changes(&[]);
    let attestations: Vec<Attestation> = changes.iter().map(|c| signer.sign(&c.hash())).collect();

    let mut sig_rates = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        for (c, a) in changes.iter().zip(&attestations) {
            trust.authenticate(c, &village, Some(a)).unwrap();
        }
        sig_rates.push(changes.len() as f64 / t.elapsed().as_secs_f64());
    }

    let mut gate_rates = Vec::new();
    let township = OrgPath::parse("hoboksar/chagantolgay").unwrap();
    for _ in 0..RUNS {
        let mut copy = doc.clone();
        let t = Instant::now();
        let (applied, refused) =
            into_township(&mut copy, &id, &attestations, &trust, (&village, &township));
        let elapsed = t.elapsed().as_secs_f64();
        assert_eq!(applied, changes.len(), "refused: {refused:?}");
        gate_rates.push(changes.len() as f64 / elapsed);
    }
    // The county's shape: many case files of one creation and 20 activity changes each.
    let files: Vec<(DocId, AutoCommit, Vec<Attestation>)> = (0..100u8)
        .map(|n| {
            let mut d = AutoCommit::new().with_actor(ActorId::from(identity.actor_id()));
            let mut m = member.clone();
            m.name = format!("Bayar {n}");
            casefile::create(&mut d, &m).unwrap();
            let id = DocId::member_created_by(&gate::commit_as(&mut d, &village, &now).unwrap());
            for k in 0..20 {
                let a = ActivityInput {
                    date: "2026-11-02".into(),
                    kind: "study".into(),
                    description: format!("entry {k}"),
                    points: Some(1),
                };
                casefile::add_activity(&mut d, &format!("a-{k:016x}"), &a, &village).unwrap();
                gate::commit_as(&mut d, &village, &now).unwrap();
            }
            let atts = d
                .get_changes(&[])
                .iter()
                .map(|c| signer.sign(&c.hash()))
                .collect();
            (id, d, atts)
        })
        .collect();
    let mut file_rates = Vec::new();
    for _ in 0..RUNS {
        let mut total = 0;
        let t = Instant::now();
        for (id, d, atts) in &files {
            let mut d = d.clone();
            total += into_township(&mut d, id, atts, &trust, (&village, &township)).0;
        }
        file_rates.push(total as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "per-change verification, {} changes, median of {RUNS} runs:",
        changes.len()
    );
    println!(
        "  signature + certificate + revocation check: {:>9.0} changes/s",
        median(sig_rates)
    );
    println!(
        "  whole gate, one case file of {} changes in one batch: {:>9.0} changes/s",
        changes.len(),
        median(gate_rates)
    );
    println!(
        "  whole gate, 100 case files of 21 changes (county shape): {:>9.0} changes/s",
        median(file_rates)
    );
}
