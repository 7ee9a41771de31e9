//! Trust at the edges: certificates from another CA, peers that are not who the config
//! expects, and a peer that sends changes outside its authority over the wire.

use std::time::Duration;

use amphi_cluster_tests::{County, eventually};
use amphi_node::config::PeerConfig;
use amphi_node::demo;
use amphi_node::node::STORE_FILE;
use amphi_node::pki::NodeIdentity;
use amphi_node::repo::summarise;
use amphi_node::store::Store;
use amphi_node::trust::Signer;
use amphi_protocol::casefile::{self, IdentityPatch};
use amphi_protocol::stamp::{self, Stamp};
use amphi_protocol::{DocId, OrgPath, gate};
use automerge::ActorId;

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()) as i64
}

fn dial(office: &amphi_cluster_tests::Office, expect_org: &str) -> Vec<PeerConfig> {
    vec![PeerConfig {
        addr: office.config.listen.to_string(),
        org: OrgPath::parse(expect_org).unwrap(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_is_refused_and_receives_nothing() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let member = county.office("bayin").create_member("Saruul").await;
    eventually(WAIT, "the township holds Bayin's member", || async {
        county
            .office("chagantolgay")
            .case_file(&member)
            .await
            .map(|_| ())
    })
    .await;

    // An impostor "Bayin" with its own CA dials the real township.
    let rogue_ca = demo::create_ca(
        &county.root.path().join("rogue"),
        &OrgPath::parse("hoboksar").unwrap(),
    )
    .unwrap();
    let peers = dial(county.office("chagantolgay"), "hoboksar/chagantolgay");
    county
        .start_office("impostor", "hoboksar/chagantolgay/bayin", &peers, &rogue_ca)
        .await;
    let impostor = county.office("impostor");
    let error = eventually(WAIT, "the impostor's dial fails", || async {
        let p = impostor.peer_status("hoboksar/chagantolgay").await?;
        p["last_error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("handshake"), "{error}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peer = impostor.peer_status("hoboksar/chagantolgay").await.unwrap();
    assert_ne!(peer["state"], "connected");
    assert!(
        impostor.case_file(&member).await.is_none(),
        "the impostor received nothing"
    );
    let (_, list) = impostor.get("/api/v1/members").await;
    assert!(list["members"].as_array().unwrap().is_empty());
    // The township never had a session with it.
    let township = county.office("chagantolgay").status().await;
    let bayins: Vec<_> = township["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["org"] == "hoboksar/chagantolgay/bayin")
        .collect();
    assert_eq!(bayins.len(), 1, "only the real Bayin is known: {township}");
    assert_eq!(
        bayins[0]["state"], "connected",
        "the real Bayin stays connected"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_the_expected_org_is_refused_and_receives_nothing() {
    let mut county = County::new();
    county
        .start_all(&["county", "hoboksar-town", "xingfu"])
        .await;
    let member = county.office("xingfu").create_member("Aigerim").await;
    eventually(WAIT, "Hoboksar town holds Xingfu's member", || async {
        county
            .office("hoboksar-town")
            .case_file(&member)
            .await
            .map(|_| ())
    })
    .await;
    // Bayin's config says its parent Chagantolgay is at this address, but Hoboksar town answers.
    let peers = dial(county.office("hoboksar-town"), "hoboksar/chagantolgay");
    let ca = county.ca().to_owned();
    county
        .start_office("bayin", "hoboksar/chagantolgay/bayin", &peers, &ca)
        .await;
    let bayin = county.office("bayin");
    let error = eventually(WAIT, "Bayin's dial fails", || async {
        bayin.peer_status("hoboksar/chagantolgay").await?["last_error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(
        error.contains("not valid for name") || error.contains("expects"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(
        bayin.peer_status("hoboksar/chagantolgay").await.unwrap()["state"],
        "connected"
    );
    let town = county.office("hoboksar-town").status().await;
    assert!(
        town["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["org"] != "hoboksar/chagantolgay/bayin"),
        "no session with Bayin: {town}"
    );
    let (_, list) = bayin.get("/api/v1/members").await;
    assert!(
        list["members"].as_array().unwrap().is_empty(),
        "Bayin received nothing"
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_crafted_change_outside_authority_is_refused_counted_and_does_not_stop_sync() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let id = county.two_dwelling_member("Oyun").await;

    // A tampered Xingfu node: its operator edits the store directly, writing identity with
    // the node's own key and org, bypassing the API's check.
    county.stop("xingfu").await;
    let dir = county.office("xingfu").dir.clone();
    let identity = NodeIdentity::load(
        &dir.join("node.crt"),
        &dir.join("node.key"),
        &dir.join("ca.crt"),
    )
    .unwrap();
    {
        let store = Store::open(&dir.join("data").join(STORE_FILE), identity.org.as_str()).unwrap();
        let doc_id = DocId::parse(&id).unwrap();
        let mut doc = store.load(&doc_id).unwrap().unwrap();
        doc.set_actor(ActorId::from(identity.actor_id()));
        let before = doc.get_heads();
        let stamp = Stamp::at(stamp::commit_time(&mut doc, now_ms()));
        casefile::update_identity(
            &mut doc,
            &IdentityPatch {
                name: Some("Forged by Xingfu".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let hash = gate::commit_as(&mut doc, &identity.org, &stamp).unwrap();
        // Signed with Xingfu's own key: authentic, but outside Xingfu's authority.
        let attestation = Signer::new(&identity).unwrap().sign(&hash);
        let summary = summarise(&doc_id, &mut doc);
        store
            .save(&doc_id, &mut doc, &before, &summary, &[attestation], None)
            .unwrap();
    }
    county.start("xingfu").await;

    let town = county.office("hoboksar-town");
    let refused = eventually(
        WAIT,
        "the township refuses and counts the change",
        || async {
            let p = town.peer_status("hoboksar/hoboksar-town/xingfu").await?;
            p["refused"]["not_home_authority"]
                .as_u64()
                .filter(|n| *n >= 1)
        },
    )
    .await;
    assert!(refused >= 1);
    let status = town.status().await;
    assert!(
        status["refused"]["not_home_authority"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let (_, log) = town.get("/api/v1/quarantine").await;
    let entry = &log["quarantine"][0];
    assert_eq!(entry["peer"], "hoboksar/hoboksar-town/xingfu");
    assert_eq!(entry["author"], "hoboksar/hoboksar-town/xingfu");
    assert_eq!(entry["doc"], id.as_str());
    assert_eq!(entry["reason"], "not_home_authority");

    // Sync of everything else goes on: Xingfu's new member reaches the county, and the
    // village's new activity reaches Xingfu; the forgery reached nobody.
    let own = county.office("xingfu").create_member("Khulan").await;
    let county_office = county.office("county");
    eventually(WAIT, "Xingfu's new member reaches the county", || async {
        county_office.case_file(&own).await.map(|_| ())
    })
    .await;
    assert_eq!(
        county
            .office("bayin")
            .record_activity(&id, "village study after the forgery")
            .await,
        201
    );
    let xingfu = county.office("xingfu");
    eventually(WAIT, "the village's activity reaches Xingfu", || async {
        (xingfu.activities(&id).await.len() == 1).then_some(())
    })
    .await;
    for office in ["hoboksar-town", "county", "chagantolgay", "bayin"] {
        let case = county.office(office).case_file(&id).await.unwrap();
        assert_eq!(case["name"], "Oyun", "{office} holds the untampered name");
    }
    county.shutdown().await;
}
