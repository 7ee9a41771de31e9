//! A peer with a valid certificate from the county CA, acting against an office: dialing
//! offices that are not its neighbours, opening connection after connection, faking a
//! sibling's fleet report, and reading files the office holds only as a relay.

use std::time::Duration;

use amphi_cluster_tests::{County, Office, eventually, parse_prometheus};
use amphi_node::config::PeerConfig;
use amphi_node::fleet::{self, Report};
use amphi_node::pki::{self, NodeIdentity};
use amphi_node::repo::summarise;
use amphi_node::tls;
use amphi_protocol::casefile::{self, NewMember};
use amphi_protocol::{DocId, OrgPath};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const TOWNSHIP: &str = "hoboksar/chagantolgay";
const BAYIN: &str = "hoboksar/chagantolgay/bayin";

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

fn new_member(home: &str) -> NewMember {
    serde_json::from_value(json!({
        "name": "Khulan", "gender": "female", "ethnicity": "Kazakh",
        "birth_date": "1980-05-01", "joined_at": "2001-07-01", "home_org": home,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_only_as_a_relay_or_outside_this_offices_scope_is_not_served() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let bayin = county.office("bayin");
    let kept = bayin.create_member("Oyun").await;
    let leaving = bayin.create_member("Altan").await;
    eventually(WAIT, "the township holds both", || async {
        let t = county.office("chagantolgay");
        t.case_file(&kept).await?;
        t.case_file(&leaving).await.map(|_| ())
    })
    .await;

    county.stop("bayin").await;
    let foreign;
    {
        let store = county.office("bayin").open_store();
        // One file is kept only until an office below learns it left.
        let id = DocId::parse(&leaving).unwrap();
        let mut summary = store.summary(&id).unwrap().unwrap();
        summary.leaving = true;
        store.set_summary(&id, &summary).unwrap();
        // Another, a sibling village's file, sits in the store outside Bayin's scope.
        let mut doc = AutoCommit::new();
        casefile::create(&mut doc, &new_member("hoboksar/chagantolgay/tebke")).unwrap();
        foreign = DocId::member_created_by(&doc.commit().unwrap());
        let summary = summarise(&foreign, &mut doc);
        store
            .save(&foreign, &mut doc, &[], &summary, &[], None)
            .unwrap();
    }
    county.start("bayin").await;
    let bayin = county.office("bayin");
    assert!(bayin.case_file(&kept).await.is_some());
    assert_eq!(
        bayin.get(&format!("/api/v1/members/{leaving}")).await.0,
        404
    );
    assert_eq!(
        bayin.get(&format!("/api/v1/members/{foreign}")).await.0,
        404
    );
    county.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_cannot_file_a_status_report_for_a_sibling() {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay"]).await;
    // Bayin writes no reports of its own, only the forged one below.
    county.status_interval_ms = 0;
    county.start("bayin").await;
    let bayin = county.office("bayin");
    let id = fleet::status_doc_id(&org(BAYIN));
    let forged = Report {
        at: "2099-01-01T00:00:00Z".into(),
        org: "hoboksar/chagantolgay/tebke".into(),
        node_id: "forged-by-bayin".into(),
        peers: vec![],
        pending: 0,
        members: 999,
        orgs: 0,
        quarantine: 0,
        conflicts: 0,
        digest: String::new(),
    };
    let json = serde_json::to_string(&forged).unwrap();
    bayin
        .node()
        .repo()
        .write(&id, true, |doc, _| {
            doc.put(ROOT, "kind", "status")?;
            doc.put(ROOT, "org", BAYIN)?;
            doc.put(ROOT, "summary", json.as_str())?;
            Ok(())
        })
        .expect("Bayin may write its own status document");
    let township = county.office("chagantolgay");
    eventually(
        WAIT,
        "the township holds Bayin's status document",
        || async {
            let held = township.node().repo().store().summary(&id).unwrap();
            held.map(|_| ())
        },
    )
    .await;
    let (_, fleet) = township.get("/api/v1/fleet").await;
    let offices = fleet["offices"].as_array().unwrap();
    for entry in offices {
        assert!(
            entry["report"].is_null() || entry["report"]["org"] == entry["org"],
            "a report is filed only under its own office: {entry}"
        );
        assert_ne!(entry["report"]["node_id"], "forged-by-bayin", "{entry}");
    }
    county.shutdown().await;
}

/// Sends bare QUIC Initial packets to `addr` from one UDP socket and never finishes a
/// handshake: each is a handshake the office has to start and cannot complete. The
/// connections are returned so they stay alive (and silent) for as long as the caller holds
/// them.
///
/// The Initials go one at a time: each waits for the office's answer to it (its first flight,
/// or its refusal) before the next is sent. A burst of them would overflow the office's
/// socket buffer on a loaded machine and the kernel would drop some before the office saw
/// them, so the test would count fewer than it sent; an Initial sent again would be a second
/// handshake to the office, counted twice. Blocking: run it off the runtime the office uses.
fn half_open_handshakes(
    addr: std::net::SocketAddr,
    config: quinn::ClientConfig,
    count: usize,
) -> (std::net::UdpSocket, Vec<quinn_proto::Connection>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut endpoint = quinn_proto::Endpoint::new(Default::default(), None, false, None);
    let mut held = Vec::new();
    for _ in 0..count {
        let now = std::time::Instant::now();
        let (handle, mut conn) = endpoint
            .connect(now, config.clone(), addr, &org("hoboksar").dns_name())
            .unwrap();
        let mut buf = Vec::new();
        while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            socket.send_to(&buf[..t.size], t.destination).unwrap();
            buf.clear();
        }
        assert!(
            answer_arrived(&socket, &mut endpoint, handle, &mut conn),
            "the office did not answer a handshake's Initial within {WAIT:?}"
        );
        held.push(conn);
    }
    (socket, held)
}

/// Reads the office's datagrams until one belongs to `handle`'s handshake, or [`WAIT`]
/// passes. Datagrams for earlier handshakes (the office resending its flight)
/// are dropped: those connections never answer anyway.
fn answer_arrived(
    socket: &std::net::UdpSocket,
    endpoint: &mut quinn_proto::Endpoint,
    handle: quinn_proto::ConnectionHandle,
    conn: &mut quinn_proto::Connection,
) -> bool {
    let mut datagram = [0u8; 65536];
    let mut response = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline
        && let Ok((n, from)) = socket.recv_from(&mut datagram)
    {
        let data = bytes::BytesMut::from(&datagram[..n]);
        let now = std::time::Instant::now();
        if let Some(quinn_proto::DatagramEvent::ConnectionEvent(h, event)) =
            endpoint.handle(now, from, None, None, data, &mut response)
            && h == handle
        {
            conn.handle_event(event);
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_handshakes_is_capped_and_passes() {
    use amphi_node::transport::{HANDSHAKE_TIMEOUT, MAX_CONNECTIONS};
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay"]).await;
    let township = county.office("chagantolgay");
    let excess = 40;
    let (listen, config) = (township.config.listen, client_config(&county, BAYIN));
    let flood = tokio::task::spawn_blocking(move || {
        half_open_handshakes(listen, config, MAX_CONNECTIONS + excess)
    })
    .await
    .expect("the flood ran");
    let refused = eventually(WAIT, "the handshakes over the cap are refused", || async {
        let status = township.status().await;
        let busy = status["refused_connections"]["busy"].as_u64().unwrap_or(0);
        (busy >= excess as u64).then_some(busy)
    })
    .await;
    assert_eq!(refused, excess as u64, "exactly those over the cap");
    // The held handshakes time out and free their places: the village then connects and
    // syncs as usual, while the flood's socket is still open and silent.
    let started = std::time::Instant::now();
    county.start("bayin").await;
    let id = county.office("bayin").create_member("Oyun").await;
    let township = county.office("chagantolgay");
    eventually(WAIT, "the village's file reaches its township", || async {
        township.case_file(&id).await.map(|_| ())
    })
    .await;
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT + WAIT,
        "within the handshake timeout and a margin"
    );
    // Every half-open handshake ends by timing out (the later ones after the village is in,
    // as the flood took a while to send). (The village's own dials while the cap held were
    // refused as busy too, so that count has grown.)
    let status = eventually(WAIT, "every half-open handshake times out", || async {
        let status = township.status().await;
        let timed_out = status["refused_connections"]["handshake"].as_u64();
        (timed_out >= Some(MAX_CONNECTIONS as u64)).then_some(status)
    })
    .await;
    assert_eq!(
        status["refused_connections"]["handshake"].as_u64(),
        Some(MAX_CONNECTIONS as u64),
        "{status}"
    );

    drop(flood);
    county.shutdown().await;
}
