//! A second node of an office (a mirror, or a replacement being brought up) dials the
//! office, takes in its documents, and both end knowing they are in sync.

use std::time::Duration;

use amphi_cluster_tests::{County, eventually};
use amphi_node::config::PeerConfig;

const WAIT: Duration = Duration::from_secs(30);

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
    let peers = vec![PeerConfig {
        addr: top.config.listen.to_string(),
        org: top.org.clone(),
    }];
    let ca = county.ca().to_path_buf();
    county.start_office("mirror", "hoboksar", &peers, &ca).await;
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
