//! Reconnecting costs what changed, not what is held: with set reconciliation, a reconnect
//! that finds nothing changed exchanges no per-document sync messages at all. And a link that
//! drops loses nothing already sent on it: a change taken just as it went down still travels
//! on to the office's other links.

use std::time::Duration;

use amphi_cluster_tests::hostile::{self, HostilePeer};
use amphi_cluster_tests::{County, eventually, township_holding_a_member};
use amphi_protocol::DocId;

const WAIT: Duration = Duration::from_secs(30);
const BAYIN: &str = "hoboksar/chagantolgay/bayin";

async fn counters(office: &amphi_cluster_tests::Office, peer: &str) -> (u64, u64, u64, u64) {
    let p = office.peer_status(peer).await.expect("peer known");
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    (
        n("messages_in"),
        n("messages_out"),
        n("bytes_in"),
        n("bytes_out"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_nothing_changed_sends_no_document_messages() {
    let mut county = County::new();
    county.status_interval_ms = 0; // no fleet reports: they would be changes of their own
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let bayin = county.office("bayin");
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(bayin.create_member(&format!("Member {n}")).await);
    }
    let township = county.office("chagantolgay");
    eventually(WAIT, "the township holds all 40 and is in sync", || async {
        let p = township.peer_status(BAYIN).await?;
        let listed = township.get("/api/v1/members").await.1["members"]
            .as_array()?
            .len();
        (listed == 40 && p["docs_pending"] == 0 && p["state"] == "connected").then_some(())
    })
    .await;

    county.stop("bayin").await;
    let township = county.office("chagantolgay");
    eventually(WAIT, "the township sees Bayin gone", || async {
        (township.peer_status(BAYIN).await?["state"] == "disconnected").then_some(())
    })
    .await;
    let before = counters(township, BAYIN).await;
    county.start("bayin").await;
    let township = county.office("chagantolgay");
    eventually(WAIT, "Bayin reconnects and is in sync", || async {
        let p = township.peer_status(BAYIN).await?;
        (p["state"] == "connected" && p["docs_pending"] == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = counters(township, BAYIN).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 0),
        "no sync message either way"
    );
    let bytes = (after.2 - before.2) + (after.3 - before.3);
    println!("reconnect with 40 unchanged documents: {bytes} bytes of frames in all");
    assert!(
        bytes < 400,
        "only hello and one fingerprint each way: {bytes} bytes"
    );

    // And a change made while apart is found and synced on the next reconnect.
    county.stop("bayin").await;
    let township = county.office("chagantolgay");
    assert_eq!(
        township
            .record_activity(&ids[7], "recorded while Bayin was away")
            .await,
        201
    );
    county.start("bayin").await;
    let bayin = county.office("bayin");
    eventually(
        WAIT,
        "Bayin gets the change made while it was away",
        || async { (bayin.activities(&ids[7]).await.len() == 1).then_some(()) },
    )
    .await;
    // After syncing that change, the link falls quiet again.
    let township = county.office("chagantolgay");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let settled = counters(township, BAYIN).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        counters(township, BAYIN).await,
        settled,
        "quiet after syncing a change"
    );
    county.shutdown().await;
}

/// The node's side of what the county simulator found (seed 367): a delivery still being
/// received when its session ends is made durable, and the office's other sessions hear of
/// the change, though no reply goes back on the link that dropped. Before, its notices were
/// dropped with it, and the county lacked the change until the township and the county next
/// reconnected (there is no other reconciliation while a link stays up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_taken_as_its_link_goes_down_still_travels_on() {
    let (mut county, id) = township_holding_a_member().await;
    let doc_id = DocId::parse(&id).unwrap();

    // Bayin's link is now a peer speaking with Bayin's certificate: it sends one honest,
    // signed rename and at once ends the stream, so the township's session ends while the
    // rename is still being received.
    let (bayin, mut peer) = HostilePeer::stand_in_for(&mut county, "bayin", "chagantolgay")
        .await
        .unwrap();
    let mut doc = peer.fetch(&doc_id, WAIT).await.unwrap();
    let base = doc.get_heads();
    let change = hostile::rename(&mut doc, &bayin, "Oyunchimeg");
    peer.send_signed(&doc_id, &base, &change, &bayin)
        .await
        .unwrap();
    peer.finish();

    let township = county.office("chagantolgay");
    eventually(WAIT, "the township kept the rename", || async {
        (township.case_file(&id).await?["name"] == "Oyunchimeg").then_some(())
    })
    .await;
    // The township's link to the county stayed up the whole time: only the notice can bring
    // the rename there.
    let county_office = county.office("county");
    eventually(WAIT, "the county gets the rename", || async {
        (county_office.case_file(&id).await?["name"] == "Oyunchimeg").then_some(())
    })
    .await;
    drop(peer);
    county.shutdown().await;
}
