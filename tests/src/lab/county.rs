//! The lab county: nine offices, each a container on a private network of its own, every
//! link between a child and its parent running through the fault relay on the host.
//!
//! ```text
//! hoboksar (county)
//! ├── chagantolgay (township) ── bayin (village), tebke (village)
//! ├── hoboksar-town (township) ─ xingfu (community), heping (community)
//! └── motege (township) ──────── bulgan (village)
//! ```
//! bayin (home) and xingfu (residence) are the two-dwelling pair under different townships.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use amphi_node::config::{Config, PeerConfig};
use amphi_node::pki;
use amphi_protocol::OrgPath;
use anyhow::Context;
use serde_json::Value;

use super::docker::{self, Network, Spec};
use crate::Reply;
use crate::relay::{LinkHandle, Relay};

/// Short name, org path, parent's short name.
pub const OFFICES: &[(&str, &str, Option<&str>)] = &[
    ("hoboksar", "hoboksar", None),
    ("chagantolgay", "hoboksar/chagantolgay", Some("hoboksar")),
    ("hoboksar-town", "hoboksar/hoboksar-town", Some("hoboksar")),
    ("motege", "hoboksar/motege", Some("hoboksar")),
    ("bayin", "hoboksar/chagantolgay/bayin", Some("chagantolgay")),
    ("tebke", "hoboksar/chagantolgay/tebke", Some("chagantolgay")),
    (
        "xingfu",
        "hoboksar/hoboksar-town/xingfu",
        Some("hoboksar-town"),
    ),
    (
        "heping",
        "hoboksar/hoboksar-town/heping",
        Some("hoboksar-town"),
    ),
    ("bulgan", "hoboksar/motege/bulgan", Some("motege")),
];

/// The QUIC port inside every container.
const QUIC_PORT: u16 = 7400;
/// The admin port inside every container.
const ADMIN_PORT: u16 = 8400;

/// What the lab offices' configs set beyond the defaults, so that a CI run sees offline
/// offices go stale and come back within minutes (a real office keeps the defaults).
const LAB_TIMINGS: &str =
    "reconnect_max_ms = 10000\nstatus_interval_ms = 15000\nfleet_stale_after_ms = 60000\n";

/// One office of the lab.
pub struct LabOffice {
    /// Short name: container, network and folder name.
    pub name: &'static str,
    /// Its org.
    pub org: OrgPath,
    /// Its parent's short name.
    pub parent: Option<&'static str>,
    /// Its private network.
    pub network: Network,
    /// Its address there (changes when its container is made again).
    pub ip: IpAddr,
    /// The image it runs now.
    pub image: String,
    /// Host folder with its config and certificate (`/etc/amphi`).
    pub etc: PathBuf,
    /// Host folder that is its data volume (`/var/lib/amphi`).
    pub data: PathBuf,
}

impl LabOffice {
    /// The container's name.
    pub fn container(&self) -> String {
        format!("amphi-lab-{}", self.name)
    }
}

/// Where an office's admin API answers, and its token.
struct Endpoint {
    ip: IpAddr,
    data: PathBuf,
    token: Option<String>,
}

/// Calls the offices' admin APIs; cheap to clone, follows offices that move (a container
/// made again may get another address).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    offices: Arc<RwLock<BTreeMap<&'static str, Endpoint>>>,
}

impl Client {
    fn new() -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            offices: Arc::default(),
        })
    }

    fn place(&self, name: &'static str, ip: IpAddr, data: &Path) {
        let mut offices = self.offices.write().unwrap_or_else(|e| e.into_inner());
        let token = offices.remove(name).and_then(|e| e.token);
        offices.insert(
            name,
            Endpoint {
                ip,
                data: data.to_owned(),
                token,
            },
        );
    }

    /// The office's admin URL for `path`, and its token (read from its data volume, where
    /// the node writes it at first start).
    fn target(&self, name: &str, path: &str) -> anyhow::Result<(String, String)> {
        let mut offices = self.offices.write().unwrap_or_else(|e| e.into_inner());
        let office = offices
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no lab office {name}"))?;
        if office.token.is_none() {
            let file = office.data.join("admin.token");
            let t = std::fs::read_to_string(&file)
                .with_context(|| format!("{} (has the node started?)", file.display()))?;
            office.token = Some(t.trim().to_owned());
        }
        let url = format!("http://{}:{ADMIN_PORT}{path}", office.ip);
        Ok((url, office.token.clone().unwrap_or_default()))
    }

    /// Calls an office's admin API; `Err` when it does not answer (stopped, killed).
    pub async fn call(
        &self,
        name: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let (url, token) = self.target(name, path)?;
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// GET, as [`Client::call`].
    pub async fn get(&self, name: &str, path: &str) -> anyhow::Result<Reply> {
        self.call(name, reqwest::Method::GET, path, None).await
    }

    /// POST JSON, as [`Client::call`].
    pub async fn post(&self, name: &str, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.call(name, reqwest::Method::POST, path, Some(body))
            .await
    }

    /// Whether the office answers `/healthz` and its token is readable.
    async fn ready(&self, name: &str) -> bool {
        let Ok((url, _)) = self.target(name, "/healthz") else {
            return false;
        };
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// The running lab: offices, their links and the relay between them.
pub struct Lab {
    /// The offices, parents before children.
    pub offices: Vec<LabOffice>,
    /// Each child's link to its parent, by the child's short name.
    pub links: Vec<(&'static str, LinkHandle)>,
    /// The relay all links run through (kept alive with the lab).
    relay: Relay,
    /// The offices' admin APIs.
    pub client: Client,
}

impl Lab {
    /// Makes the county CA, each office's certificate, network and config, and starts every
    /// office from `image`, parents first.
    pub async fn start(dir: &Path, image: &str, seed: u64) -> anyhow::Result<Lab> {
        let county = OrgPath::parse(OFFICES[0].1)?;
        let ca = dir.join("ca");
        pki::ca_init(&ca, &county).context("creating the lab's county CA")?;
        let relay = Relay::new(seed);
        let mut lab = Lab {
            offices: Vec::new(),
            links: Vec::new(),
            relay,
            client: Client::new()?,
        };
        for &(name, org, parent) in OFFICES {
            let org = OrgPath::parse(org)?;
            let etc = dir.join(name).join("etc");
            let data = dir.join(name).join("data");
            std::fs::create_dir_all(&etc)?;
            std::fs::create_dir_all(&data)?;
            pki::ca_issue(&ca, &org, &etc, 825)
                .with_context(|| format!("issuing {name}'s certificate"))?;
            let network = Network::create(&format!("amphi-lab-{name}"))?;
            let mut peers = Vec::new();
            if let Some(parent) = parent {
                let up = lab.office(parent);
                let target = SocketAddr::new(up.ip, QUIC_PORT);
                let link = lab
                    .relay
                    .link(name, "0.0.0.0:0".parse()?, target)
                    .await
                    .with_context(|| format!("opening the relay link {name} → {parent}"))?;
                peers.push(PeerConfig {
                    addr: format!("{}:{}", network.gateway, link.local_addr().port()),
                    org: up.org.clone(),
                });
                lab.links.push((name, link));
            }
            write_config(&etc, &peers)?;
            let ip = docker::run(&Spec {
                name: &format!("amphi-lab-{name}"),
                image,
                network: &network.name,
                config_dir: &etc,
                data_dir: &data,
            })?;
            lab.client.place(name, ip, &data);
            lab.offices.push(LabOffice {
                name,
                org,
                parent,
                network,
                ip,
                image: image.to_owned(),
                etc,
                data,
            });
            lab.wait_ready(name, Duration::from_secs(60)).await?;
        }
        Ok(lab)
    }

    /// The office named `name`.
    pub fn office(&self, name: &str) -> &LabOffice {
        self.offices
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no lab office {name}"))
    }

    fn office_mut(&mut self, name: &str) -> &mut LabOffice {
        self.offices
            .iter_mut()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no lab office {name}"))
    }

    /// The link from `child` to its parent.
    pub fn link(&self, child: &str) -> &LinkHandle {
        &self
            .links
            .iter()
            .find(|(c, _)| *c == child)
            .unwrap_or_else(|| panic!("no link from {child}"))
            .1
    }

    /// Waits until the office answers `/healthz` and has written its admin token.
    pub async fn wait_ready(&mut self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            if self.client.ready(name).await {
                return Ok(());
            }
            if started.elapsed() > limit {
                anyhow::bail!(
                    "{name} did not come up within {limit:?}; its log:\n{}",
                    docker::log_tail(&self.office(name).container(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `docker kill`: the office dies mid-write.
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        docker::kill(&self.office(name).container())
    }

    /// `docker stop`: the office shuts down cleanly.
    pub fn stop(&self, name: &str) -> anyhow::Result<()> {
        docker::stop(&self.office(name).container())
    }

    /// Starts a stopped or killed office again (same container, same data) and waits for it.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let ip = docker::start(&self.office(name).container())?;
        self.moved(name, ip);
        self.wait_ready(name, Duration::from_secs(60)).await
    }

    /// Replaces the office's container by one of `image` on the same data volume (an
    /// upgrade): stops it cleanly, starts the new one, waits for it.
    pub async fn upgrade(&mut self, name: &str, image: &str) -> anyhow::Result<()> {
        let office = self.office(name);
        let container = office.container();
        docker::stop(&container)?;
        let ip = docker::run(&Spec {
            name: &container,
            image,
            network: &office.network.name,
            config_dir: &office.etc,
            data_dir: &office.data,
        })?;
        self.office_mut(name).image = image.to_owned();
        self.moved(name, ip);
        self.wait_ready(name, Duration::from_secs(60)).await
    }

    /// Points the links of `name`'s children at its address after a restart.
    fn moved(&mut self, name: &str, ip: IpAddr) {
        let office = self.office_mut(name);
        office.ip = ip;
        let (name, data) = (office.name, office.data.clone());
        self.client.place(name, ip, &data);
        let children: Vec<&str> = self
            .offices
            .iter()
            .filter(|o| o.parent == Some(name))
            .map(|o| o.name)
            .collect();
        for child in children {
            self.link(child).set_target(SocketAddr::new(ip, QUIC_PORT));
        }
    }

    /// Runs `amphi ARGS` in a new container of `image` on the office's folders, with the
    /// node stopped (reads the store file itself, not the API); returns its output.
    pub fn offline(&self, name: &str, image: &str, args: &[&str]) -> anyhow::Result<String> {
        let office = self.office(name);
        let config = format!("{}:/etc/amphi:ro", office.etc.display());
        let data = format!("{}:/var/lib/amphi", office.data.display());
        let user = docker::owner_of(&office.data)?;
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            &user,
            "-v",
            &config,
            "-v",
            &data,
            image,
        ];
        all.extend_from_slice(args);
        docker::docker_within(&all, docker::COMMAND_LIMIT)
    }

    /// Stops and removes every container and network of the lab.
    pub fn tear_down(&self) {
        for office in &self.offices {
            docker::remove(&office.container());
        }
        for office in &self.offices {
            office.network.remove();
        }
    }
}

/// Writes the office's `amphi.toml`: QUIC and admin on all of the container's addresses,
/// data on the volume, the parent reached through its relay link.
fn write_config(etc: &Path, peers: &[PeerConfig]) -> anyhow::Result<()> {
    let rendered = Config::render(
        SocketAddr::from(([0, 0, 0, 0], QUIC_PORT)),
        SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)),
        peers,
        None,
    );
    let text = rendered.replacen(
        "data_dir = \"data\"\n",
        &format!("data_dir = \"/var/lib/amphi\"\n{LAB_TIMINGS}"),
        1,
    );
    anyhow::ensure!(
        text != rendered,
        "the rendered config no longer starts with data_dir"
    );
    let path = etc.join("amphi.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Config::parse(&std::fs::read_to_string(&path)?, Path::new("/etc/amphi"))
        .with_context(|| format!("{} does not parse", path.display()))?;
    Ok(())
}
