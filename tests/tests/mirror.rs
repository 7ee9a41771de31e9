//! A second node of an office (a mirror, or a replacement being brought up) dials the
//! office, takes in its documents, and both end knowing they are in sync.

use std::time::Duration;

use amphi_cluster_tests::{County, eventually};
use amphi_node::config::PeerConfig;
use amphi_protocol::DocId;

const WAIT: Duration = Duration::from_secs(30);

/// Starts a second node of the county office, `mirror`, dialing the county.
async fn start_mirror(county: &mut County) {
    let top = county.office("county");
    let peers = vec![PeerConfig {
        addr: top.config.listen.to_string(),
        org: top.org.clone(),
    }];
    let ca = county.ca().to_path_buf();
    county.start_office("mirror", "hoboksar", &peers, &ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_of_the_county_takes_in_its_documents_and_nothing_stays_pending() {
    let mut county = County::new();
    county.status_interval_ms = 0;
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let id = county.office("bayin").create_member("Oyun").await;
    let top = county.office("county");
    eventually(WAIT, "the county holds the file", || async {
        top.case_file(&id).await.map(|_| ())
    })
    .await;
    start_mirror(&mut county).await;
    let mirror = county.office("mirror");
    eventually(WAIT, "the mirror holds the file", || async {
        mirror.case_file(&id).await.map(|_| ())
    })
    .await;
    for office in ["mirror", "county"] {
        let o = county.office(office);
        eventually(WAIT, "nothing stays pending on the link", || async {
            let s = o.status().await;
            let link = s["peers"]
                .as_array()?
                .iter()
                .find(|p| p["org"] == "hoboksar")?
                .clone();
            (link["state"] == "connected" && link["docs_pending"] == 0).then_some(())
        })
        .await;
    }
    county.shutdown().await;
}

/// With chained signatures, a run of an office's changes made while its link was down goes
/// up in one message signed only at its top; every relay and a mirror take it in, keep
/// fewer signatures than changes, and can still prove every change they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_chained_signatures_a_run_travels_signed_at_its_top_and_every_store_proves_it() {
    let mut county = County::new();
    county.status_interval_ms = 0;
    county.chained_signatures = true;
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let id = county.office("bayin").create_member("Oyun").await;
    eventually(WAIT, "the county holds the file", || async {
        county.office("county").case_file(&id).await.map(|_| ())
    })
    .await;
    county.stop("chagantolgay").await;
    let bayin = county.office("bayin");
    for i in 0..5 {
        let what = format!("学习 {i}");
        assert_eq!(bayin.record_activity(&id, &what).await, 201);
    }
    county.start("chagantolgay").await;
    let top = county.office("county");
    eventually(WAIT, "the county holds every activity", || async {
        (top.activities(&id).await.len() == 5).then_some(())
    })
    .await;
    start_mirror(&mut county).await;
    let mirror = county.office("mirror");
    eventually(WAIT, "the mirror holds every activity", || async {
        (mirror.activities(&id).await.len() == 5).then_some(())
    })
    .await;
    for name in ["bayin", "chagantolgay", "county", "mirror"] {
        let office = county.office(name);
        let (_, found) = office.get("/api/v1/verify").await;
        assert_eq!(found["problems"], serde_json::json!([]), "{name}: {found}");
        let status = office.status().await;
        assert_eq!(status["refused_total"], 0, "{name}: {status}");
    }
    let doc: DocId = id.parse().unwrap();
    for name in ["chagantolgay", "mirror"] {
        county.stop(name).await;
        let store = county.office(name).open_store();
        let mut held = store.load(&doc).unwrap().expect("the file is held");
        let hashes: Vec<_> = held.get_changes(&[]).iter().map(|c| c.hash()).collect();
        let signed = store.attestations(&doc, &hashes).unwrap();
        assert!(
            signed.len() + 4 <= hashes.len(),
            "{name} holds {} signatures for {} changes: the run came signed at its top only",
            signed.len(),
            hashes.len()
        );
    }
    county.shutdown().await;
}
