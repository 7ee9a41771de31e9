//! Every input the fuzzers keep, replayed on stable: the seed corpus, what the fuzzers
//! found interesting (`fuzz/corpus/<target>/`) and every crash turned regression
//! (`fuzz/artifacts/<target>/`) goes through the same target function cargo-fuzz runs
//! (`fuzz/src/lib.rs`, compiled here as a module). See fuzz/README.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files directly in `dir`, in name order (none if it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_artifact_input_passes_its_target() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for (name, target) in targets::TARGETS {
        let mut seen = 0;
        for kind in ["corpus", "artifacts"] {
            for file in inputs(&fuzz_dir().join(kind).join(name)) {
                let data = std::fs::read(&file).expect("a readable input");
                if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                    failures.push(file.display().to_string());
                }
                seen += 1;
            }
        }
        assert!(
            seen > 0,
            "target {name} has no corpus: seed it (fuzz/README.md)"
        );
        replayed += seen;
    }
    eprintln!("replayed {replayed} fuzz inputs");
    assert!(
        failures.is_empty(),
        "{} of {replayed} fuzz inputs fail (replay one with `cargo +nightly fuzz run TARGET FILE` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Writes the seed corpus: real frames, a real certificate, real stored records. Run it
/// after changing a format, then commit what changed:
/// `cargo test -p amphi-cluster-tests --test fuzz_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run by hand"]
fn write_seed_corpus() {
    for (target, name, bytes) in seeds::all() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// The seeds: each a valid input of the kind its target decodes.
mod seeds {
    use amphi_node::repo::summarise;
    use amphi_node::store::QuarantineRecord;
    use amphi_node::trust::Signer;
    use amphi_protocol::casefile::{self, ActivityInput, NewMember};
    use amphi_protocol::reconcile::{Fingerprint, Payload, Range};
    use amphi_protocol::session::PeerSession;
    use amphi_protocol::stamp::Stamp;
    use amphi_protocol::wire::Frame;
    use amphi_protocol::{DocId, OrgPath, gate};
    use automerge::sync::{self, SyncDoc};
    use automerge::{ActorId, AutoCommit};

    use super::targets::test_ca;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    /// A real case file made by Bayin's office, with its id.
    fn case_file() -> (DocId, AutoCommit) {
        let ca = test_ca();
        let mut doc = AutoCommit::new().with_actor(ActorId::from(ca.node.actor_id()));
        let member = NewMember {
            name: "Oyun".into(),
            gender: "female".into(),
            ethnicity: "Mongol".into(),
            birth_date: "1971-03-02".into(),
            joined_at: "1996-07-01".into(),
            home_org: ca.node.org.clone(),
            id_number: None,
            phone: None,
            education: None,
            categories: vec!["farmer-herder".into()],
        };
        casefile::create(&mut doc, &member).unwrap();
        let hash = gate::commit_as(&mut doc, &ca.node.org, &Stamp::at(1_780_000_000_000)).unwrap();
        (DocId::member_created_by(&hash), doc)
    }

    pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
        let ca = test_ca();
        let signer = Signer::new(&ca.node).unwrap();
        let (id, mut doc) = case_file();
        let first = doc.get_heads();
        let attestation = signer.sign(&first[0]);
        // A second change, saved incrementally: the store keeps a document as chunks.
        let activity = ActivityInput {
            date: "2026-11-02".into(),
            kind: "study".into(),
            description: "Village study".into(),
            points: Some(2),
        };
        let snapshot = doc.save();
        casefile::add_activity(&mut doc, "a-0000000000000001", &activity, &ca.node.org).unwrap();
        gate::commit_as(&mut doc, &ca.node.org, &Stamp::at(1_780_000_100_000)).unwrap();
        let mut chunks = snapshot.clone();
        chunks.extend(doc.save_incremental());

        // A sync exchange with an empty peer: its messages, and the states it leaves.
        let mut peer = AutoCommit::new();
        let (mut ours, mut theirs) = (sync::State::new(), sync::State::new());
        let mut messages = Vec::new();
        for _ in 0..6 {
            if let Some(m) = doc.sync().generate_sync_message(&mut ours) {
                messages.push(m.clone().encode());
                peer.sync().receive_sync_message(&mut theirs, m).unwrap();
            }
            if let Some(m) = peer.sync().generate_sync_message(&mut theirs) {
                messages.push(m.clone().encode());
                doc.sync().receive_sync_message(&mut ours, m).unwrap();
            }
        }

        let carrying_changes = messages.iter().max_by_key(|m| m.len()).unwrap().clone();
        let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
        let frames = [
            PeerSession::hello(&org("hoboksar/chagantolgay")),
            Frame::Reconcile {
                ranges: vec![
                    Range {
                        lower: String::new(),
                        upper: Some("m-8".into()),
                        payload: Payload::Fingerprint(Fingerprint {
                            count: 3,
                            sum: 7 << 100,
                        }),
                    },
                    Range {
                        lower: "m-8".into(),
                        upper: None,
                        payload: Payload::Items(vec![
                            (id.clone(), [9; 16]),
                            (DocId::roster(&org("hoboksar")), [0; 16]),
                        ]),
                    },
                ],
            },
            Frame::Sync {
                doc: id.clone(),
                message: carrying_changes.clone(),
                attestations: vec![attestation.clone()],
            },
            Frame::Sync {
                doc: DocId::revocations(),
                message: messages[0].clone(),
                attestations: vec![],
            },
            Frame::Certificate {
                der: ca.node.cert_der.to_vec(),
            },
            Frame::Left { doc: id.clone() },
        ];
        let names = [
            "hello",
            "reconcile",
            "sync",
            "sync-no-changes",
            "certificate",
            "left",
        ];
        for (name, f) in names.iter().zip(&frames) {
            out.push(("frame", name.to_string(), f.encode()));
        }
        out.push((
            "frame",
            "sync-deflated".to_string(),
            frames[2].encode_deflated(),
        ));
        let bundle = amphi_protocol::bundle::Bundle {
            from: ca.node.org.clone(),
            to: org("hoboksar/chagantolgay"),
            created_ms: 1_780_000_200_000,
            exporter: ca.node.cert_der.to_vec(),
            frames: vec![frames[4].clone(), frames[2].clone(), frames[3].clone()],
        };
        out.push((
            "bundle",
            "village-to-township".into(),
            bundle.seal(|msg| signer.sign_bytes(msg)),
        ));

        out.push(("certificate", "node".into(), ca.node.cert_der.to_vec()));
        out.push(("certificate", "ca".into(), ca.ca_der.clone()));

        let record = QuarantineRecord {
            at: "2026-11-02T10:00:00Z".into(),
            peer: "hoboksar/hoboksar-town/xingfu".into(),
            doc: id.to_string(),
            change: Some(first[0].to_string()),
            author: Some("hoboksar/hoboksar-town/xingfu".into()),
            reason: "not_home_authority".into(),
            message: "only the home org and its ancestors may change identity".into(),
            change_bytes: Some("856f4a83".into()),
            attestation: Some(hex(&attestation.encode())),
            ..QuarantineRecord::default()
        };
        let records = [
            ("attestation", attestation.encode()),
            ("quarantine", serde_json::to_vec(&record).unwrap()),
            (
                "summary",
                serde_json::to_vec(&summarise(&id, &mut doc)).unwrap(),
            ),
            ("sync-state-ours", ours.encode()),
            ("sync-state-theirs", theirs.encode()),
            ("document", snapshot),
            ("document-chunks", chunks),
            ("doc-id", id.to_string().into_bytes()),
            ("change-hash", first[0].to_string().into_bytes()),
        ];
        for (name, bytes) in records {
            out.push(("store_records", name.into(), bytes));
        }
        for (n, mut change) in doc.get_changes(&[]).into_iter().enumerate() {
            let raw = change.raw_bytes().to_vec();
            out.push(("change_chunk", format!("change-{n}"), raw));
            let stored = change.bytes().to_vec();
            out.push(("change_chunk", format!("change-{n}-as-stored"), stored));
        }
        for (n, m) in super::targets::gate_fixture().messages.iter().enumerate() {
            out.push(("sync_message", format!("honest-{n}"), m.clone()));
        }
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
