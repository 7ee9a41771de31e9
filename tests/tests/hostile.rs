//! A peer holding a valid certificate from the county CA, over a real QUIC session, sends
//! what automerge would panic on, two changes with one (actor, seq), probes for documents
//! it may not see, and floods the office with made-up documents. After each, the office
//! still serves, counts the refusal under a clear reason, keeps nothing it must not hold,
//! and keeps syncing its honest peers. (The same attacks through the gate alone, and the
//! authority forgeries: protocol/tests/hostile.rs.)

use std::time::Duration;

use amphi_cluster_tests::hostile::{
    self, ChangeBuilder, Chunk, HostilePeer, RawBloom, RawHave, RawSyncMessage,
};
use amphi_cluster_tests::{
    County, Office, eventually, parse_prometheus, township_holding_a_member,
};
use amphi_protocol::wire::Frame;
use amphi_protocol::{DocId, OrgPath};
use automerge::{ObjType, ROOT, ReadDoc, ScalarValue};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A county with a village whose member the township holds; the village then stops, and
/// someone holding a certificate speaks to the township instead.
async fn metrics(office: &Office) -> std::collections::BTreeMap<String, f64> {
    let (_, body) = office.get("/metrics").await;
    parse_prometheus(body.as_str().expect("metrics text")).expect("valid metrics")
}

async fn quarantine(office: &Office) -> Vec<Value> {
    let (_, q) = office.get("/api/v1/quarantine").await;
    q["quarantine"].as_array().cloned().unwrap_or_default()
}

/// The office answers, and Bayin's fresh work still reaches the county through it.
async fn still_serving_and_syncing(county: &mut County) {
    let (code, _) = county.office("chagantolgay").get("/healthz").await;
    assert_eq!(code, 200);
    county.start("bayin").await;
    let fresh = county.office("bayin").create_member("Saruul").await;
    let top = county.office("county");
    eventually(WAIT, "honest work still reaches the county", || async {
        top.case_file(&fresh).await.map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_automerge_would_panic_on_is_refused_and_nothing_panics() {
    let (mut county, id) = township_holding_a_member().await;
    let doc_id = DocId::parse(&id).unwrap();
    county.stop("bayin").await;
    // A second certificate for the county (issued by its CA, on a laptop gone astray): the
    // file is in its scope, and its actor is new to the file.
    let rogue = county.issue_identity("hoboksar");
    let township = county.office("chagantolgay");
    let mut peer = HostilePeer::connect(&rogue, township).await.unwrap();
    peer.expect_hello(WAIT).await.unwrap();
    let mut doc = peer.fetch(&doc_id, WAIT).await.unwrap();
    let base = doc.get_heads();
    let (_, activities) = doc.get(ROOT, "activities").unwrap().unwrap();
    let signed = |c: &automerge::Change| vec![hostile::sign(&rogue, c)];

    // seq 2 from an actor the document has never seen (automerge: lookup_actor().unwrap()).
    let unseen = ChangeBuilder::following(&mut doc, &rogue)
        .seq(2)
        .op(hostile::make(
            hostile::object(&activities),
            "a-00000000000000aa",
            ObjType::Map,
            vec![],
        ))
        .build();
    // An op into an object that does not exist ("Missing from Index").
    let rogue_actor = hostile::actor_of(&rogue);
    let missing = ChangeBuilder::following(&mut doc, &rogue)
        .op(hostile::put(
            automerge::legacy::ObjectId::Id(hostile::op(9_999, &rogue_actor)),
            "name",
            ScalarValue::from("x"),
            vec![],
        ))
        .build();
    for change in [&unseen, &missing] {
        let message = RawSyncMessage::carrying(&base, [change]).encode();
        peer.send_sync(&doc_id, message, signed(change))
            .await
            .unwrap();
    }
    // A Bloom filter with zero bits per entry (the reply path divides by zero), one with
    // four billion probes (a 16 GiB allocation), a 1 GiB decompression bomb, a whole
    // document where changes belong.
    let have = |bloom: RawBloom| RawSyncMessage {
        heads: base.clone(),
        have: vec![RawHave {
            last_sync: vec![],
            bloom: bloom.encode(),
        }],
        ..RawSyncMessage::default()
    };
    let chunks = |chunk: Chunk| RawSyncMessage {
        heads: base.clone(),
        changes: vec![chunk.encode()],
        ..RawSyncMessage::default()
    };
    for message in [
        have(RawBloom::with(1, 0, 7)),
        have(RawBloom::with(1, 10, 4_000_000_000)),
        chunks(Chunk::deflate_bomb(1 << 30)),
        chunks(Chunk::document(doc.save()[9..].to_vec())),
    ] {
        peer.send_sync(&doc_id, message.encode(), vec![])
            .await
            .unwrap();
    }
    // Four unreadable messages from one peer about one file are one record, counted four
    // times: a flood of them cannot fill the disk.
    let by_reason = eventually(WAIT, "the township quarantines them all", || async {
        let (_, q) = township.get("/api/v1/quarantine").await;
        let malformed = q["quarantine"]
            .as_array()?
            .iter()
            .find(|r| r["reason"] == "malformed")?
            .clone();
        (malformed["count"] == 4).then(|| q["by_reason"].clone())
    })
    .await;
    assert_eq!(
        by_reason,
        serde_json::json!({"broken_chain": 1, "malformed": 1, "outside_history": 1})
    );
    assert!(peer.close_reason().is_none(), "the session goes on");
    let m = metrics(township).await;
    assert_eq!(
        m["amphi_panics_total"], 0.0,
        "nothing panicked, not even contained"
    );
    assert_eq!(m["amphi_changes_refused_total{reason=\"malformed\"}"], 4.0);
    assert!(township.case_file(&id).await.is_some());
    drop(peer);
    still_serving_and_syncing(&mut county).await;
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocation_keeps_the_lower_hash_with_evidence_and_names_the_certificate() {
    let (mut county, id) = township_holding_a_member().await;
    let doc_id = DocId::parse(&id).unwrap();
    // Bayin's node is compromised: its key signs two different renames with one seq.
    let (bayin, mut peer) = HostilePeer::stand_in_for(&mut county, "bayin", "chagantolgay")
        .await
        .unwrap();
    let township = county.office("chagantolgay");
    let mut doc = peer.fetch(&doc_id, WAIT).await.unwrap();
    let base = doc.get_heads();
    let (x, y) = (
        hostile::rename(&mut doc, &bayin, "Oyun A"),
        hostile::rename(&mut doc, &bayin, "Oyun B"),
    );
    assert_eq!((x.seq(), x.deps()), (y.seq(), y.deps()));
    for change in [&x, &y] {
        peer.send_signed(&doc_id, &base, change, &bayin)
            .await
            .unwrap();
    }
    let (kept, lost) = if x.hash() < y.hash() {
        (&x, &y)
    } else {
        (&y, &x)
    };
    let kept_name = if kept.hash() == x.hash() {
        "Oyun A"
    } else {
        "Oyun B"
    };
    let record = eventually(WAIT, "the township reports the equivocation", || async {
        quarantine(township)
            .await
            .into_iter()
            .find(|r| r["reason"] == "equivocation")
    })
    .await;
    // Whichever arrived first, the lower hash stays; the record holds the other change of
    // the pair with its signature, and names Bayin's certificate.
    assert_eq!(record["change"], lost.hash().to_string());
    assert_eq!(record["evidence"]["change"], kept.hash().to_string());
    let cert = hex::encode(amphi_node::trust::cert_id(&bayin.cert_der));
    assert_eq!(record["cert"], cert.as_str());
    // Counted per refusal (a relay may offer the losing change again before it learns of
    // the other); kept once in the quarantine.
    assert!(
        township.status().await["refused"]["equivocation"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let equivocations = quarantine(township)
        .await
        .into_iter()
        .filter(|r| r["reason"] == "equivocation")
        .count();
    assert_eq!(equivocations, 1);
    for office in ["chagantolgay", "county"] {
        let o = county.office(office);
        eventually(WAIT, "every office keeps the same change", || async {
            let case = o.case_file(&id).await?;
            (case["name"] == kept_name).then_some(())
        })
        .await;
    }
    let m = metrics(township).await;
    assert!(m["amphi_changes_refused_total{reason=\"equivocation\"}"] >= 1.0);
    drop(peer);
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whether_an_office_holds_a_file_cannot_be_probed() {
    let (mut county, id) = township_holding_a_member().await;
    // A village under the township that may not see Bayin's member asks about it, and about
    // a file nobody holds: the answers are the same.
    let rogue = county.issue_identity("hoboksar/chagantolgay/rogue");
    let township = county.office("chagantolgay");
    let mut peer = HostilePeer::connect(&rogue, township).await.unwrap();
    peer.expect_hello(WAIT).await.unwrap();
    let held = DocId::parse(&id).unwrap();
    let unknown = DocId::new_member([0x42; 8]);
    let mut answers = Vec::new();
    for doc in [&held, &unknown] {
        let question = RawSyncMessage::default().encode();
        peer.send_sync(doc, question, vec![]).await.unwrap();
        let answer = peer
            .recv_matching(
                WAIT,
                |f| matches!(f, Frame::Sync { doc: d, .. } if d == doc),
            )
            .await
            .expect("an answer");
        let Frame::Sync {
            message,
            attestations,
            ..
        } = answer
        else {
            unreachable!()
        };
        assert!(attestations.is_empty());
        answers.push(message);
    }
    assert_eq!(
        answers[0], answers[1],
        "held-but-not-yours answers as unknown"
    );
    assert!(
        quarantine(township).await.is_empty(),
        "a probe leaves nothing on disk"
    );
    let _ = county.stop("bayin").await;
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_documents_stays_bounded_and_honest_sync_goes_on() {
    let (mut county, _) = township_holding_a_member().await;
    county.stop("bayin").await;
    let rogue = county.issue_identity("hoboksar/chagantolgay/rogue");
    let township = county.office("chagantolgay");
    let store_before = township.status().await["store_bytes"].as_u64().unwrap();
    let mut peer = HostilePeer::connect(&rogue, township).await.unwrap();
    peer.expect_hello(WAIT).await.unwrap();
    // Reconciliations listing 65,536 made-up documents each, three times.
    for round in 0..3u8 {
        let items = (0..65_536u32)
            .map(|n| {
                let mut b = [round; 8];
                b[4..].copy_from_slice(&n.to_be_bytes());
                (DocId::new_member(b), [7u8; 16])
            })
            .collect();
        let frame = Frame::Reconcile {
            ranges: vec![amphi_protocol::reconcile::Range {
                lower: String::new(),
                upper: None,
                payload: amphi_protocol::reconcile::Payload::Items(items),
            }],
        };
        peer.send(&frame).await.unwrap();
    }
    // And 500 sync messages for made-up documents, each carrying a change of a document
    // this office may not hold.
    let mut doc = automerge::AutoCommit::new();
    for n in 0..500u32 {
        let change = ChangeBuilder::following(&mut doc, &rogue)
            .op(hostile::put(
                automerge::legacy::ObjectId::Root,
                "kind",
                ScalarValue::from("member"),
                vec![],
            ))
            .build();
        let mut b = [0xee; 8];
        b[4..].copy_from_slice(&n.to_be_bytes());
        let message = RawSyncMessage::carrying(&[], [&change]).encode();
        peer.send_sync(
            &DocId::new_member(b),
            message,
            vec![hostile::sign(&rogue, &change)],
        )
        .await
        .unwrap();
    }
    let status = eventually(
        WAIT,
        "the township counts the made-up ids it ignored",
        || async {
            let s = township.status().await;
            let p = s["peers"]
                .as_array()?
                .iter()
                .find(|p| p["org"] == "hoboksar/chagantolgay/rogue")?
                .clone();
            (p["unknown_ids_ignored"].as_u64()? > 0).then_some(s)
        },
    )
    .await;
    let store_after = status["store_bytes"].as_u64().unwrap();
    assert!(
        store_after < store_before + (16 << 20),
        "the store grew from {store_before} to {store_after} bytes"
    );
    let peer_status = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["org"] == "hoboksar/chagantolgay/rogue")
        .unwrap();
    assert!(
        peer_status["docs_pending"].as_u64().unwrap() <= 65_536,
        "{peer_status}"
    );
    assert!(quarantine(township).await.len() <= 10_000);
    drop(peer);
    still_serving_and_syncing(&mut county).await;
    let org = OrgPath::parse("hoboksar/chagantolgay/rogue").unwrap();
    assert!(org.parent().is_some());
    county.shutdown().await;
}
