//! Signed authorship across the county: forged claims refused at every hop, certificates
//! that travel with relayed changes, revocation, and purge when a file leaves an office.

use std::time::Duration;

use amphi_cluster_tests::{County, Office, eventually, now_ms};
use amphi_node::pki;
use amphi_node::repo::summarise;
use amphi_node::trust::Signer;
use amphi_protocol::attest::Attestation;
use amphi_protocol::casefile::{self, ActivityInput, IdentityPatch};
use amphi_protocol::stamp::{self, Stamp};
use amphi_protocol::{DocId, OrgPath, gate};
use automerge::{ActorId, AutoCommit, Change};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn org(s: &str) -> OrgPath {
    OrgPath::parse(s).unwrap()
}

/// In a stopped office's store, makes a change to `id` claiming `author`, signed with the
/// office's own key (or with a corrupted signature). Returns the change and its attestation.
fn forge(
    office: &Office,
    id: &str,
    author: &str,
    corrupt: bool,
    edit: impl FnOnce(&mut AutoCommit),
) -> (Change, Attestation) {
    let identity = office.identity();
    let store = office.open_store();
    let doc_id = DocId::parse(id).unwrap();
    let mut doc = store
        .load(&doc_id)
        .unwrap()
        .expect("the office holds the document");
    doc.set_actor(ActorId::from(identity.actor_id()));
    let before = doc.get_heads();
    let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms()));
    edit(&mut doc);
    let hash = gate::commit_as(&mut doc, &org(author), &stamp).unwrap();
    let mut attestation = Signer::new(&identity).unwrap().sign(&hash);
    if corrupt {
        let last = attestation.signature.len() - 1;
        attestation.signature[last] ^= 0x55;
    }
    let summary = summarise(&doc_id, &mut doc);
    store
        .save(
            &doc_id,
            &mut doc,
            &before,
            &summary,
            std::slice::from_ref(&attestation),
            None,
        )
        .unwrap();
    (doc.get_change_by_hash(&hash).unwrap(), attestation)
}

/// Puts a change (with its attestation) straight into a stopped relay's store, as a relay
/// that skips the checks would.
fn inject(relay: &Office, id: &str, change: &Change, attestation: &Attestation) {
    let store = relay.open_store();
    let doc_id = DocId::parse(id).unwrap();
    let mut doc = store
        .load(&doc_id)
        .unwrap()
        .expect("the relay holds the document");
    let before = doc.get_heads();
    doc.apply_changes([change.clone()]).unwrap();
    let summary = summarise(&doc_id, &mut doc);
    store
        .save(
            &doc_id,
            &mut doc,
            &before,
            &summary,
            std::slice::from_ref(attestation),
            None,
        )
        .unwrap();
}

fn rename(name: &str) -> impl FnOnce(&mut AutoCommit) + '_ {
    move |d| {
        casefile::update_identity(
            d,
            &IdentityPatch {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .unwrap()
    }
}

async fn reached(office: &Office, id: &str) {
    eventually(WAIT, &format!("{} holds {id}", office.org), || async {
        office.case_file(id).await.map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_authorship_is_refused_at_the_first_hop_and_again_behind_a_lax_relay() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let bayin = county.office("bayin");
    let (claimed, garbled) = (
        bayin.create_member("Bayar").await,
        bayin.create_member("Altan").await,
    );
    for id in [&claimed, &garbled] {
        reached(county.office("county"), id).await;
    }

    // Bayin's node, tampered: one change claims the township wrote it (signed with Bayin's
    // own, valid key); another claims Bayin but carries a broken signature.
    county.stop("bayin").await;
    let (forged, forged_attestation) = forge(
        county.office("bayin"),
        &claimed,
        "hoboksar/chagantolgay",
        false,
        rename("Claimed by the township"),
    );
    forge(
        county.office("bayin"),
        &garbled,
        "hoboksar/chagantolgay/bayin",
        true,
        rename("Garbled"),
    );
    county.start("bayin").await;

    let township = county.office("chagantolgay");
    let mut reasons = eventually(WAIT, "the township quarantines both", || async {
        let r = township.quarantine_reasons().await;
        (r.len() >= 2).then_some(r)
    })
    .await;
    reasons.sort();
    assert_eq!(reasons, ["author_mismatch", "bad_signature"]);
    let status = township.status().await;
    assert_eq!(status["refused"]["author_mismatch"], 1, "{status}");
    assert_eq!(status["quarantine"], 2);
    // Everything else keeps syncing.
    let fresh = county.office("bayin").create_member("Saruul").await;
    reached(county.office("county"), &fresh).await;

    // A relay that skips the check passes the forgery on: the county refuses it too.
    county.stop("chagantolgay").await;
    inject(
        county.office("chagantolgay"),
        &claimed,
        &forged,
        &forged_attestation,
    );
    county.start("chagantolgay").await;
    let county_office = county.office("county");
    let reasons = eventually(
        WAIT,
        "the county quarantines the relayed forgery",
        || async {
            let r = county_office.quarantine_reasons().await;
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(reasons, ["author_mismatch"]);
    let (_, q) = county_office.get("/api/v1/quarantine").await;
    assert_eq!(
        q["quarantine"][0]["peer"], "hoboksar/chagantolgay",
        "refused from the relay"
    );
    assert_eq!(q["quarantine"][0]["author"], "hoboksar/chagantolgay");
    assert_eq!(
        county_office.case_file(&claimed).await.unwrap()["name"],
        "Bayar"
    );
    assert_eq!(
        county_office.case_file(&garbled).await.unwrap()["name"],
        "Altan"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_change_is_verified_at_every_hop_with_a_certificate_the_county_never_met() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let id = county.two_dwelling_member("Tsetseg").await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    assert_eq!(xingfu.record_activity(&id, "study at Xingfu").await, 201);
    // community → township → county → township → village
    eventually(
        WAIT,
        "the community's activity reaches the village",
        || async {
            (bayin.activities(&id).await
                == vec![(
                    "study at Xingfu".to_owned(),
                    "hoboksar/hoboksar-town/xingfu".to_owned(),
                )])
            .then_some(())
        },
    )
    .await;
    for office in ["hoboksar-town", "county", "chagantolgay", "bayin"] {
        let o = county.office(office);
        assert!(
            o.quarantine_reasons().await.is_empty(),
            "{office} refused nothing"
        );
        let (_, certs) = o.get("/api/v1/certificates").await;
        let orgs: Vec<&str> = certs["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["org"].as_str())
            .collect();
        assert!(
            orgs.contains(&"hoboksar/hoboksar-town/xingfu"),
            "{office} verified with Xingfu's certificate: {orgs:?}"
        );
    }
    let county_status = county.office("county").status().await;
    assert!(
        county_status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["org"] != "hoboksar/hoboksar-town/xingfu"),
        "the county never met Xingfu directly"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_village_is_cut_off_and_its_later_changes_are_refused_while_earlier_ones_stay() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let bayin = county.office("bayin");
    let id = bayin.create_member("Oyun").await;
    assert_eq!(
        bayin.record_activity(&id, "before the revocation").await,
        201
    );
    let county_office = county.office("county");
    eventually(WAIT, "the county has Bayin's earlier work", || async {
        (county_office.activities(&id).await.len() == 1).then_some(())
    })
    .await;

    // The county's CA revokes Bayin's certificate; the record is imported at the county.
    let record = pki::ca_revoke(
        county.ca(),
        &county.office("bayin").dir.join("node.crt"),
        "laptop stolen",
    )
    .unwrap();
    let (code, body) = county_office
        .post(
            "/api/v1/revocations",
            serde_json::to_value(&record).unwrap(),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut bad = serde_json::to_value(&record).unwrap();
    bad["reason"] = json!("edited after signing");
    assert_eq!(
        county_office.post("/api/v1/revocations", bad).await.0,
        400,
        "a tampered record is refused"
    );

    // The township learns it, drops Bayin and refuses it from then on.
    let township = county.office("chagantolgay");
    eventually(WAIT, "the township drops Bayin", || async {
        let p = township.peer_status("hoboksar/chagantolgay/bayin").await?;
        (p["state"] != "connected").then_some(())
    })
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = township
            .peer_status("hoboksar/chagantolgay/bayin")
            .await
            .unwrap();
        assert_ne!(p["state"], "connected", "Bayin must not reconnect");
    }
    let bayin_view = county
        .office("bayin")
        .peer_status("hoboksar/chagantolgay")
        .await
        .unwrap();
    assert_ne!(bayin_view["state"], "connected");

    // Bayin keeps working offline; a relay that skips the checks passes its change on.
    tokio::time::sleep(Duration::from_millis(1100)).await; // change times are whole seconds
    assert_eq!(
        county
            .office("bayin")
            .record_activity(&id, "after the revocation")
            .await,
        201
    );
    county.stop("bayin").await;
    let (change, attestation) = {
        let store = county.office("bayin").open_store();
        let doc_id = DocId::parse(&id).unwrap();
        let mut doc = store.load(&doc_id).unwrap().unwrap();
        let change = doc.get_changes(&[]).into_iter().last().unwrap();
        let attestation = store
            .attestations(&doc_id, &[change.hash()])
            .unwrap()
            .pop()
            .unwrap();
        (change, attestation)
    };
    county.stop("chagantolgay").await;
    inject(county.office("chagantolgay"), &id, &change, &attestation);
    county.start("chagantolgay").await;
    let county_office = county.office("county");
    let reasons = eventually(
        WAIT,
        "the county refuses the revoked node's new change",
        || async {
            let r = county_office.quarantine_reasons().await;
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(reasons, ["revoked"]);
    let kept = county_office.activities(&id).await;
    assert_eq!(
        kept,
        vec![(
            "before the revocation".to_owned(),
            "hoboksar/chagantolgay/bayin".to_owned()
        )],
        "earlier changes stay valid"
    );
    assert_eq!(county_office.case_file(&id).await.unwrap()["name"], "Oyun");
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_residence_purges_the_file_from_the_community_and_leaves_a_history_line() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let id = county.two_dwelling_member("Ganbaatar").await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    assert_eq!(xingfu.record_activity(&id, "winter study").await, 201);
    eventually(WAIT, "the village has the community's activity", || async {
        (bayin.activities(&id).await.len() == 1).then_some(())
    })
    .await;

    assert_eq!(
        bayin
            .delete(&format!("/api/v1/members/{id}/residence"))
            .await
            .0,
        200
    );
    eventually(WAIT, "the community no longer holds the file", || async {
        xingfu.case_file(&id).await.is_none().then_some(())
    })
    .await;
    let town = county.office("hoboksar-town");
    eventually(WAIT, "nor does its township", || async {
        town.case_file(&id).await.is_none().then_some(())
    })
    .await;
    // The purge (and its history line) waits until the township holds everything Xingfu
    // has of the file.
    let roster = eventually(WAIT, "Xingfu's roster has a history line", || async {
        let (_, roster) = xingfu
            .get("/api/v1/orgs/hoboksar/hoboksar-town/xingfu/roster")
            .await;
        roster["history"].get(0).is_some().then_some(roster)
    })
    .await;
    let line = &roster["history"][0];
    assert_eq!(
        (
            line["id"].as_str(),
            line["name"].as_str(),
            line["event"].as_str()
        ),
        (
            Some(id.as_str()),
            Some("Ganbaatar"),
            Some("residence-ended")
        ),
        "{roster}"
    );
    // The history line travels up like any roster change.
    eventually(WAIT, "the county sees Xingfu's history line", || async {
        let (_, r) = county
            .office("county")
            .get("/api/v1/orgs/hoboksar/hoboksar-town/xingfu/roster")
            .await;
        (r["history"][0]["id"] == id.as_str()).then_some(())
    })
    .await;
    // The village and the county keep the whole file, the community's activity included.
    assert_eq!(county.office("county").activities(&id).await.len(), 1);
    assert!(bayin.case_file(&id).await.unwrap()["residence"].is_null());

    // Reopening the community's store: the body is gone.
    county.stop("xingfu").await;
    let store = county.office("xingfu").open_store();
    let doc_id = DocId::parse(&id).unwrap();
    assert!(store.load(&doc_id).unwrap().is_none(), "body purged");
    assert!(store.summary(&doc_id).unwrap().is_none(), "index purged");
    assert!(
        store
            .sync_state(&doc_id, "hoboksar/hoboksar-town")
            .unwrap()
            .is_none(),
        "sync state purged"
    );
    drop(store);
    // The township relayed the exit to Xingfu, then purged on Xingfu's confirmation.
    county.stop("hoboksar-town").await;
    let store = county.office("hoboksar-town").open_store();
    assert!(
        store.load(&doc_id).unwrap().is_none(),
        "the relay purged too"
    );
    drop(store);
    county.shutdown().await;
}

/// Keeps `ActivityInput` in use for readers looking for the activity shape.
#[allow(dead_code)]
fn activity_shape() -> ActivityInput {
    ActivityInput {
        date: "2026-11-02".into(),
        kind: "study".into(),
        description: String::new(),
        points: None,
    }
}
