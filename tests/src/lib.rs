//! A county of real Amphi nodes for tests: each office a real node (store on disk, QUIC on
//! loopback with certificates from a real CA, admin API over HTTP), started in this process.
//!
//! Tests read as stories: `county.start("bayin")`, `bayin.create_member(..)`,
//! `eventually(|| xingfu.has(id))`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amphi_node::config::{Config, PeerConfig};
use amphi_node::demo;
use amphi_node::node::{Node, STORE_FILE};
use amphi_node::pki::NodeIdentity;
use amphi_node::store::Store;
use amphi_protocol::OrgPath;
use serde_json::{Value, json};

pub use amphi_node::demo::OFFICES;

pub mod browser;
pub mod hostile;
pub mod lab;
pub mod relay;

/// The demo county's tree: short name → (org, parent short name).
pub fn tree() -> BTreeMap<&'static str, (&'static str, Option<&'static str>)> {
    OFFICES
        .iter()
        .map(|(name, org, parent)| (*name, (*org, parent.map(|p| OFFICES[p].0))))
        .collect()
}

/// One office in a test county.
pub struct Office {
    /// Its org.
    pub org: OrgPath,
    /// Its folder (certificate, config, data).
    pub dir: PathBuf,
    /// Its config (with the ports it bound on first start).
    pub config: Config,
    node: Option<Node>,
    admin: SocketAddr,
    token: String,
    http: reqwest::Client,
}

/// A response: status code and JSON body.
pub type Reply = (u16, Value);

impl Office {
    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("office is running")
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET an API path.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }
    /// POST JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    /// PATCH JSON.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    /// PUT JSON.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a member whose home is this office; returns the id.
    pub async fn create_member(&self, name: &str) -> String {
        let (code, body) = self
            .post(
                "/api/v1/members",
                json!({"name": name, "gender": "female", "ethnicity": "Mongol", "birth_date": "1971-03-02",
                       "joined_at": "1996-07-01", "home_org": self.org.as_str(), "categories": ["farmer-herder"]}),
            )
            .await;
        assert_eq!(code, 201, "create member: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Records an activity for a member; returns the HTTP status.
    pub async fn record_activity(&self, id: &str, description: &str) -> u16 {
        let (code, body) = self
            .post(&format!("/api/v1/members/{id}/activities"), json!({"date": "2026-11-02", "kind": "study", "description": description, "points": 2}))
            .await;
        assert!(code == 201 || code >= 400, "{body}");
        code
    }

    /// The member's case file, if this office holds it.
    pub async fn case_file(&self, id: &str) -> Option<Value> {
        match self.get(&format!("/api/v1/members/{id}")).await {
            (200, v) => Some(v),
            (404, _) => None,
            (code, v) => panic!("unexpected {code}: {v}"),
        }
    }

    /// Descriptions of the member's activities with their recording org, as this office sees them.
    pub async fn activities(&self, id: &str) -> Vec<(String, String)> {
        let Some(case) = self.case_file(id).await else {
            return vec![];
        };
        let mut out: Vec<(String, String)> = case["activities"]
            .as_array()
            .expect("activities")
            .iter()
            .map(|a| {
                (
                    a["description"].as_str().unwrap_or_default().to_owned(),
                    a["recorded_by"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Opens this (stopped) office's store directly, as an operator with disk access could.
    pub fn open_store(&self) -> Store {
        assert!(
            self.node.is_none(),
            "stop the office before opening its store"
        );
        Store::open(&self.dir.join("data").join(STORE_FILE), self.org.as_str())
            .expect("store opens")
    }

    /// This office's identity (certificate and key).
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity::load(
            &self.dir.join("node.crt"),
            &self.dir.join("node.key"),
            &self.dir.join("ca.crt"),
        )
        .expect("identity")
    }

    /// Quarantine reasons of this office, in order.
    pub async fn quarantine_reasons(&self) -> Vec<String> {
        let (_, q) = self.get("/api/v1/quarantine").await;
        q["quarantine"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Value {
        self.get("/api/v1/status").await.1
    }

    /// The status entry of peer `org`, if any.
    pub async fn peer_status(&self, org: &str) -> Option<Value> {
        self.status().await["peers"]
            .as_array()?
            .iter()
            .find(|p| p["org"] == org)
            .cloned()
    }
}

/// A county of offices under one test CA.
pub struct County {
    /// Temporary folder holding everything.
    pub root: tempfile::TempDir,
    /// Fleet report interval given to offices started from now on (0: no reports).
    pub status_interval_ms: u64,
    /// `chained_signatures` of offices started from now on.
    pub chained_signatures: bool,
    ca: PathBuf,
    offices: BTreeMap<String, Office>,
}

impl Default for County {
    fn default() -> Self {
        County::new()
    }
}

impl County {
    /// A new county with a CA for `hoboksar`.
    pub fn new() -> County {
        let root = tempfile::tempdir().expect("temp dir");
        let ca = demo::create_ca(root.path(), &OrgPath::parse("hoboksar").unwrap()).expect("CA");
        County {
            root,
            ca,
            offices: BTreeMap::new(),
            status_interval_ms: 300,
            chained_signatures: false,
        }
    }

    /// The CA folder.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Starts office `name` of the demo tree; its parent must be running (first start) and
    /// is dialed. Restarts reuse the office's ports and data.
    pub async fn start(&mut self, name: &str) -> &Office {
        let (org, parent) = tree()[name];
        let peers: Vec<PeerConfig> = parent
            .map(|p| {
                let parent = &self.offices[p];
                vec![PeerConfig {
                    addr: parent.config.listen.to_string(),
                    org: parent.org.clone(),
                }]
            })
            .unwrap_or_default();
        let ca = self.ca.clone();
        self.start_office(name, org, &peers, &ca).await
    }

    /// Starts an office with any org, peers and CA (for tests of misconfigured or hostile
    /// nodes). Restarts reuse the office's config, ports and data.
    pub async fn start_office(
        &mut self,
        name: &str,
        org: &str,
        peers: &[PeerConfig],
        ca: &Path,
    ) -> &Office {
        let org = OrgPath::parse(org).unwrap();
        let config = match self.offices.get(name) {
            Some(o) => o.config.clone(),
            None => {
                let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
                let mut config = demo::prepare_office(
                    ca,
                    &self.root.path().join(name),
                    &org,
                    any,
                    any,
                    peers,
                    500,
                )
                .expect("office prepared");
                // Fleet reports every 300 ms, stale after 2 s: fast enough for tests.
                config.status_interval_ms = self.status_interval_ms;
                config.fleet_stale_after_ms = 2_000;
                config.chained_signatures = self.chained_signatures;
                config
            }
        };
        let node = Node::start(&config).await.expect("node starts");
        let mut config = config;
        config.listen = node.quic_addr;
        config.admin = node.admin_addr;
        let office = Office {
            org,
            dir: self.root.path().join(name),
            admin: node.admin_addr,
            token: node.token.clone(),
            config,
            node: Some(node),
            http: reqwest::Client::new(),
        };
        self.offices.insert(name.to_owned(), office);
        &self.offices[name]
    }

    /// Starts several offices in order.
    pub async fn start_all(&mut self, names: &[&str]) {
        for n in names {
            self.start(n).await;
        }
    }

    /// Stops office `name` (its data stays).
    pub async fn stop(&mut self, name: &str) {
        let office = self.offices.get_mut(name).expect("office");
        if let Some(node) = office.node.take() {
            node.shutdown().await;
        }
    }

    /// Office `name`, mutably.
    pub fn office_mut(&mut self, name: &str) -> &mut Office {
        self.offices.get_mut(name).expect("office")
    }

    /// Office `name`.
    pub fn office(&self, name: &str) -> &Office {
        &self.offices[name]
    }

    /// Bayin (home village `hoboksar/chagantolgay/bayin`) registers `name` as a two-dwelling
    /// member resident at Xingfu (`hoboksar/hoboksar-town/xingfu`, a community under another
    /// township) since 2026-10-15; returns the member's id once Xingfu holds the case file
    /// with that residence. Bayin, Xingfu and the offices between them must be running.
    pub async fn two_dwelling_member(&self, name: &str) -> String {
        let (bayin, xingfu) = (self.office("bayin"), self.office("xingfu"));
        let id = bayin.create_member(name).await;
        let (code, body) = bayin
            .put(
                &format!("/api/v1/members/{id}/residence"),
                json!({"org": xingfu.org.as_str(), "since": "2026-10-15"}),
            )
            .await;
        assert_eq!(code, 200, "set the residence: {body}");
        eventually(
            TWO_DWELLING_WAIT,
            "the case file reaches the residence community",
            || async {
                xingfu
                    .case_file(&id)
                    .await
                    .filter(|c| c["residence"]["org"] == xingfu.org.as_str())
                    .map(|_| ())
            },
        )
        .await;
        id
    }

    /// Stops every office.
    pub async fn shutdown(mut self) {
        let names: Vec<String> = self.offices.keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
    }
}

/// A county of three offices (county, Chagantolgay township, its village Bayin) where Bayin
/// has registered one member, Oyun, and the case file has reached the township and the
/// county. Gives the county and the case file's id.
pub async fn township_holding_a_member() -> (County, String) {
    let mut county = County::new();
    county.start_all(&["county", "chagantolgay", "bayin"]).await;
    let id = county.office("bayin").create_member("Oyun").await;
    for office in ["chagantolgay", "county"] {
        let o = county.office(office);
        eventually(TWO_DWELLING_WAIT, "the file reaches the county", || async {
            o.case_file(&id).await.map(|_| ())
        })
        .await;
    }
    (county, id)
}

/// How long [`County::two_dwelling_member`] (and [`township_holding_a_member`]) waits for
/// the file to reach an office.
const TWO_DWELLING_WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Parses Prometheus text exposition format strictly: every sample belongs to a family with
/// `# TYPE`, names and labels are well formed, values are numbers. Returns
/// `name{labels}` → value.
pub fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_name(name) {
                return Err(at("bad HELP name"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if !valid_name(name)
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
            {
                return Err(at("bad TYPE"));
            }
            families.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| at("value is not a number"))?,
            };
            let name = series.split('{').next().unwrap_or_default();
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .ok_or_else(|| at("bad label braces"))?;
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').ok_or_else(|| at("bad label"))?;
                    if !(valid_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')) {
                        return Err(at("bad label"));
                    }
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            if !families.contains_key(family) {
                return Err(at("sample without a TYPE"));
            }
            samples.insert(series.to_owned(), value);
        }
    }
    Ok(samples)
}
