//! What admins see: per-peer status, the county's fleet view of offices that are offline
//! now, and Prometheus metrics that move when sync happens.

use std::time::Duration;

use amphi_cluster_tests::{County, eventually, parse_prometheus};

const WAIT: Duration = Duration::from_secs(30);
const BAYIN: &str = "hoboksar/chagantolgay/bayin";

async fn fleet_entry(office: &amphi_cluster_tests::Office, org: &str) -> Option<serde_json::Value> {
    let (_, f) = office.get("/api/v1/fleet").await;
    f["offices"]
        .as_array()?
        .iter()
        .find(|o| o["org"] == org)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_county_sees_an_offline_village_in_its_fleet_view_until_it_returns() {
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "bayin", "tebke"])
        .await;
    let hq = county.office("county");
    // The village's report reaches the county through its township.
    eventually(
        WAIT,
        "the county has a fresh report from Bayin, connected to its township",
        || async {
            let e = fleet_entry(hq, BAYIN).await?;
            let connected = e["report"]["peers"]
                .as_array()?
                .iter()
                .any(|p| p["org"] == "hoboksar/chagantolgay" && p["state"] == "connected");
            (connected && e["stale"] == false).then_some(())
        },
    )
    .await;

    county.stop("bayin").await;
    let (hq, township) = (county.office("county"), county.office("chagantolgay"));
    eventually(WAIT, "the township shows Bayin disconnected", || async {
        let p = township.peer_status(BAYIN).await?;
        (p["state"] == "disconnected").then_some(())
    })
    .await;
    let first = fleet_entry(hq, BAYIN).await.unwrap();
    let stale = eventually(WAIT, "the county marks Bayin stale", || async {
        let e = fleet_entry(hq, BAYIN).await?;
        (e["stale"] == true).then_some(e)
    })
    .await;
    assert!(
        stale["report"].is_object(),
        "the last report is kept: {stale}"
    );
    assert!(
        stale["age_seconds"].as_i64() > first["age_seconds"].as_i64(),
        "staleness grows"
    );

    county.start("bayin").await;
    let township = county.office("chagantolgay");
    eventually(WAIT, "Bayin is back in sync with its township", || async {
        let p = township.peer_status(BAYIN).await?;
        (p["state"] == "connected" && p["docs_pending"] == 0).then_some(())
    })
    .await;
    let hq = county.office("county");
    eventually(WAIT, "the county sees Bayin fresh again", || async {
        (fleet_entry(hq, BAYIN).await?["stale"] == false).then_some(())
    })
    .await;
    let status = township.status().await;
    let peer = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["org"] == BAYIN)
        .unwrap()
        .clone();
    for field in ["connected_since", "last_seen", "last_sync_at", "rtt_ms"] {
        assert!(!peer[field].is_null(), "status shows {field}: {peer}");
    }
    assert!(status["store_bytes"].as_u64().unwrap() > 0);
    assert!(status["cert_expires"].is_string());
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_when_sync_happens() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let hq = county.office("county");
    let base = format!("http://{}/metrics", hq.node().admin_addr);
    let scrape = || async {
        let text = reqwest::get(&base).await.unwrap().text().await.unwrap();
        parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let before = scrape().await;
    for name in [
        "amphi_peers_connected",
        "amphi_store_bytes",
        "amphi_quarantine_changes",
        "amphi_conflicts",
        "amphi_changes_applied_total",
        "amphi_sync_round_seconds_count",
    ] {
        assert!(before.contains_key(name), "{name} is exported: {before:?}");
    }
    let id = county.office("bayin").create_member("Altan").await;
    eventually(WAIT, "the county holds the new member", || async {
        hq.case_file(&id).await.map(|_| ())
    })
    .await;
    let after = eventually(WAIT, "counters move", || async {
        let m = scrape().await;
        let moved = m["amphi_changes_applied_total"] > before["amphi_changes_applied_total"]
            && m["amphi_sync_messages_total{direction=\"in\"}"]
                > before["amphi_sync_messages_total{direction=\"in\"}"]
            && m["amphi_sync_round_seconds_count"] > before["amphi_sync_round_seconds_count"];
        moved.then_some(m)
    })
    .await;
    assert_eq!(after["amphi_documents{kind=\"member\"}"], 1.0);
    assert!(
        parse_prometheus("amphi_x 1\n").is_err(),
        "the parser rejects samples without TYPE"
    );
    assert!(
        parse_prometheus("# TYPE amphi_x gauge\namphi_x one\n").is_err(),
        "and non-numbers"
    );
    county.shutdown().await;
}
