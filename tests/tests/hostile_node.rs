//! A peer with a valid certificate from the county CA, acting against an office: dialing
//! offices that are not its neighbours, and opening connection after connection.

use std::time::Duration;

use amphi_cluster_tests::{County, Office, eventually, parse_prometheus};
use amphi_node::config::PeerConfig;
use amphi_node::pki::{self, NodeIdentity};
use amphi_node::tls;
use amphi_protocol::OrgPath;

const WAIT: Duration = Duration::from_secs(30);
const TOWNSHIP: &str = "hoboksar/chagantolgay";

fn org(s: &str) -> OrgPath {
    OrgPath::parse(s).unwrap()
}

async fn metrics(office: &Office) -> std::collections::BTreeMap<String, f64> {
    let url = format!("http://{}/metrics", office.node().admin_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_refuses_offices_that_are_not_its_neighbours_and_keeps_syncing() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let township = county.office("chagantolgay");
    let dial_township = vec![PeerConfig {
        addr: township.config.listen.to_string(),
        org: org(TOWNSHIP),
    }];
    // A cousin (a community under another township) and a sibling township, each with a
    // valid certificate from the county CA, dial Chagantolgay.
    let ca = county.ca().to_owned();
    for (name, stranger) in [
        ("cousin", "hoboksar/hoboksar-town/xingfu"),
        ("sibling", "hoboksar/hoboksar-town"),
    ] {
        county
            .start_office(name, stranger, &dial_township, &ca)
            .await;
    }
    let township = county.office("chagantolgay");
    let status = eventually(WAIT, "the township refuses both", || async {
        let s = township.status().await;
        (s["refused_connections"]["not_neighbour"].as_u64()? >= 2).then_some(s)
    })
    .await;
    let last = status["last_refused"].as_array().unwrap();
    for stranger in ["hoboksar/hoboksar-town/xingfu", "hoboksar/hoboksar-town"] {
        assert!(
            last.iter()
                .any(|r| r["org"] == stranger && r["reason"] == "not_neighbour"),
            "{stranger} is listed: {status}"
        );
        assert!(
            status["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["org"] != stranger),
            "no session with {stranger}: {status}"
        );
    }
    assert!(last.len() <= 16);
    assert!(status["panics"].is_u64(), "{status}");
    let m = metrics(township).await;
    assert!(m["amphi_connections_refused_total{reason=\"not_neighbour\"}"] >= 2.0);
    assert!(m.contains_key("amphi_panics_total"), "{m:?}");

    // The stranger learns why, and receives nothing.
    let cousin = county.office("cousin");
    let error = eventually(WAIT, "the cousin's session is refused", || async {
        cousin.peer_status(TOWNSHIP).await?["last_error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(error.contains("not a neighbour"), "{error}");

    // The real child keeps syncing.
    let member = county.office("bayin").create_member("Saruul").await;
    let township = county.office("chagantolgay");
    eventually(WAIT, "Bayin's new member reaches the township", || async {
        township.case_file(&member).await.map(|_| ())
    })
    .await;
    let (_, list) = county.office("cousin").get("/api/v1/members").await;
    assert!(list["members"].as_array().unwrap().is_empty(), "{list}");
    county.shutdown().await;
}

/// A raw QUIC client holding `org`'s node certificate from the test CA.
fn client_config(county: &County, org: &str) -> quinn::ClientConfig {
    let dir = county.root.path().join("raw").join(org.replace('/', "_"));
    if !dir.join(pki::NODE_CERT_FILE).exists() {
        pki::ca_issue(county.ca(), &self::org(org), &dir, 30).unwrap();
    }
    let identity = NodeIdentity::load(
        &dir.join(pki::NODE_CERT_FILE),
        &dir.join(pki::NODE_KEY_FILE),
        &dir.join(pki::CA_CERT_FILE),
    )
    .unwrap();
    tls::client_config(&identity).unwrap()
}

fn closed_because(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close) => {
            Some(String::from_utf8_lossy(&close.reason).into_owned())
        }
        other => Some(other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_office_and_a_cap_on_sessions() {
    let mut county = County::new();
    county.start("county").await;
    let hq = county.office("county");
    let addr = hq.config.listen;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connect = |org: &str| {
        let config = client_config(&county, org);
        let connecting = endpoint
            .connect_with(config, addr, &self::org("hoboksar").dns_name())
            .unwrap();
        async move { connecting.await.unwrap() }
    };

    // A second connection from the same township replaces its first.
    let first = connect("hoboksar/t00").await;
    let second = connect("hoboksar/t00").await;
    let why = eventually(WAIT, "the first connection is closed", || async {
        closed_because(&first)
    })
    .await;
    assert!(why.contains("replaced"), "{why}");

    // 64 townships more: one too many (64 sessions at most).
    let mut conns = vec![second];
    for n in 1..=amphi_node::transport::MAX_SESSIONS {
        conns.push(connect(&format!("hoboksar/t{n:02}")).await);
    }
    let busy = eventually(WAIT, "one connection is refused as busy", || async {
        let closed: Vec<String> = conns.iter().filter_map(closed_because).collect();
        (!closed.is_empty()).then_some(closed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed: Vec<String> = conns.iter().filter_map(closed_because).collect();
    assert_eq!(closed, busy, "only one is refused");
    assert_eq!(busy.len(), 1);
    assert!(busy[0].contains("busy"), "{busy:?}");
    let status = county.office("county").status().await;
    assert_eq!(status["refused_connections"]["busy"], 1, "{status}");
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    endpoint.wait_idle().await;
    county.shutdown().await;
}
