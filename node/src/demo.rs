//! `amphi demo`: a complete local county on loopback, with demo members, for trying Amphi.
//!
//! County `hoboksar`; townships `chagantolgay` and `hoboksar-town`; villages `bayin` and
//! `tebke` under Chagantolgay; the residence community `xingfu` under Hoboksar town. Each
//! office gets a certificate from a fresh county CA, its own config and data dir, and a node
//! in this process. The [`Office`] helpers are shared with the cluster tests.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amphi_protocol::OrgPath;
use amphi_protocol::casefile::{ActivityInput, NewMember, ResidenceInput, ReviewInput};
use anyhow::Context;

use crate::config::{Config, PeerConfig};
use crate::members;
use crate::node::Node;
use crate::pki;

/// The demo county's offices: (short name, org path, index of the parent office).
pub const OFFICES: &[(&str, &str, Option<usize>)] = &[
    ("county", "hoboksar", None),
    ("chagantolgay", "hoboksar/chagantolgay", Some(0)),
    ("hoboksar-town", "hoboksar/hoboksar-town", Some(0)),
    ("bayin", "hoboksar/chagantolgay/bayin", Some(1)),
    ("tebke", "hoboksar/chagantolgay/tebke", Some(1)),
    ("xingfu", "hoboksar/hoboksar-town/xingfu", Some(2)),
];

/// Creates a county CA in `dir/ca` for `org`.
pub fn create_ca(dir: &Path, org: &OrgPath) -> anyhow::Result<PathBuf> {
    let ca = dir.join("ca");
    pki::ca_init(&ca, org).with_context(|| format!("creating the CA in {}", ca.display()))?;
    Ok(ca)
}

/// Prepares one office's folder: certificate from the CA, config file, and returns the
/// config. `peers` are the offices it dials.
pub fn prepare_office(
    ca: &Path,
    office_dir: &Path,
    org: &OrgPath,
    listen: SocketAddr,
    admin: SocketAddr,
    peers: &[PeerConfig],
    reconnect_max_ms: u64,
) -> anyhow::Result<Config> {
    if !office_dir.join("node.crt").exists() {
        pki::ca_issue(ca, org, office_dir, 825)
            .with_context(|| format!("issuing a certificate for {org}"))?;
    }
    let text = Config::render(listen, admin, peers, Some(reconnect_max_ms));
    let path = office_dir.join("amphi.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(Config::load(&path)?)
}

/// A running demo county.
pub struct DemoCounty {
    /// Where its files are.
    pub dir: PathBuf,
    /// The offices' nodes, in [`OFFICES`] order.
    pub nodes: Vec<Node>,
}

/// Creates (or reuses) the demo county in `dir` and starts it; seeds demo data on first
/// start.
pub async fn start(dir: Option<PathBuf>, base_port: u16) -> anyhow::Result<DemoCounty> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("amphi-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let county_org = OrgPath::parse(OFFICES[0].1)?;
    let ca = if dir.join("ca/ca.key").exists() {
        dir.join("ca")
    } else {
        create_ca(&dir, &county_org)?
    };
    let first_start = !dir.join("county/data").exists();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, (name, org, parent)) in OFFICES.iter().enumerate() {
        let org = OrgPath::parse(org)?;
        let listen: SocketAddr = ([127, 0, 0, 1], base_port + i as u16).into();
        let admin: SocketAddr = ([127, 0, 0, 1], base_port + 1000 + i as u16).into();
        let peers: Vec<PeerConfig> = parent
            .iter()
            .map(|p| PeerConfig {
                addr: nodes[*p].quic_addr.to_string(),
                org: nodes[*p].org.clone(),
            })
            .collect();
        let config = prepare_office(&ca, &dir.join(name), &org, listen, admin, &peers, 5_000)?;
        let node = Node::start(&config).await.with_context(|| {
            format!(
                "starting {org} (is port {} or {} in use? try --base-port)",
                listen.port(),
                admin.port()
            )
        })?;
        nodes.push(node);
    }
    let county = DemoCounty { dir, nodes };
    if first_start {
        county.seed().await?;
    }
    Ok(county)
}

const NAMES: &[(&str, &str, &str)] = &[
    ("Bayar", "male", "Mongol"),
    ("Tsetseg", "female", "Mongol"),
    ("Altan", "male", "Mongol"),
    ("Saruul", "female", "Mongol"),
    ("Nurlan", "male", "Kazakh"),
    ("Gulnar", "female", "Kazakh"),
    ("Wang Fang", "female", "Han"),
    ("Li Wei", "male", "Han"),
    ("Ma Jun", "male", "Hui"),
    ("Oyun", "female", "Mongol"),
    ("Ganbaatar", "male", "Mongol"),
    ("Aigerim", "female", "Kazakh"),
    ("Zhang Min", "female", "Han"),
];

fn demo_member(n: usize, home: &str, two_dwelling: bool) -> NewMember {
    let (name, gender, ethnicity) = NAMES[n % NAMES.len()];
    let mut categories = vec!["farmer-herder".to_owned()];
    if two_dwelling {
        categories.push("two-dwelling".into());
    }
    if n.is_multiple_of(5) {
        categories.push("elderly".into());
    }
    NewMember {
        name: if n < NAMES.len() {
            name.to_owned()
        } else {
            format!("{name} {}", n / NAMES.len() + 1)
        },
        gender: gender.into(),
        ethnicity: ethnicity.into(),
        birth_date: format!(
            "{}-{:02}-{:02}",
            1950 + (n * 7) % 50,
            1 + n % 12,
            1 + n % 28
        ),
        joined_at: format!("{}-07-01", 1980 + (n * 3) % 40),
        home_org: OrgPath::parse(home).expect("demo org"),
        id_number: None,
        phone: Some(format!("138{:08}", 10_000_000 + n * 7919)),
        education: None,
        categories,
    }
}

impl DemoCounty {
    fn node(&self, name: &str) -> &Node {
        let i = OFFICES
            .iter()
            .position(|(n, ..)| *n == name)
            .expect("demo office");
        &self.nodes[i]
    }

    /// Seeds members: 12 at Bayin (5 two-dwelling, resident at Xingfu), 8 at Tebke, 6 at
    /// Xingfu; activities from both offices; report-ins and reviews.
    async fn seed(&self) -> anyhow::Result<()> {
        let bayin = self.node("bayin").repo();
        let tebke = self.node("tebke").repo();
        let xingfu = self.node("xingfu").repo();
        let study = |desc: &str, date: &str| ActivityInput {
            date: date.into(),
            kind: "study".into(),
            description: desc.into(),
            points: Some(2),
        };
        let mut residents = Vec::new();
        for n in 0..12 {
            let m = members::create(bayin, &demo_member(n, OFFICES[3].1, n < 5))?;
            members::add_activity(
                bayin,
                &m.id,
                &study("Monthly party day at the village (主题党日)", "2026-09-05"),
            )?;
            if n < 5 {
                let residence = ResidenceInput {
                    org: OrgPath::parse(OFFICES[5].1)?,
                    since: "2026-10-15".into(),
                    until: Some("2027-04-15".into()),
                };
                members::set_residence(bayin, &m.id, &residence)?;
                residents.push(m.id.clone());
            }
            if n % 3 == 0 {
                let review = ReviewInput {
                    period: "2026H1".into(),
                    rating: "good".into(),
                    comment: "Active in the busy season".into(),
                };
                members::add_review(bayin, &m.id, &review)?;
            }
        }
        for n in 0..8 {
            let m = members::create(tebke, &demo_member(20 + n, OFFICES[4].1, false))?;
            members::add_activity(tebke, &m.id, &study("Branch study session", "2026-10-12"))?;
        }
        for n in 0..6 {
            let m = members::create(xingfu, &demo_member(40 + n, OFFICES[5].1, false))?;
            members::add_activity(
                xingfu,
                &m.id,
                &study("Community volunteer day", "2026-11-01"),
            )?;
        }
        // The residents' case files travel Bayin → Chagantolgay → county → Hoboksar town → Xingfu.
        for id in &residents {
            let mut waited = Duration::ZERO;
            while members::get(xingfu, id).is_err() {
                anyhow::ensure!(
                    waited < Duration::from_secs(30),
                    "case file {id} did not reach Xingfu within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += Duration::from_millis(100);
            }
            members::report_in(xingfu, id, Some("2026-10-20"))?;
            members::add_activity(
                xingfu,
                id,
                &study(
                    "Organisation life at Xingfu community (组织生活)",
                    "2026-11-02",
                ),
            )?;
        }
        Ok(())
    }

    /// Where to look: each office's admin URL and token, and a first request to try.
    pub fn describe(&self) -> String {
        let mut s = format!("Amphi demo county in {}\n\n", self.dir.display());
        let _ = writeln!(s, "{:<32} {:<24} token", "office", "admin API");
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "{:<32} {:<24} {}",
                n.org.as_str(),
                format!("http://{}", n.admin_addr),
                n.token
            );
        }
        let (x, township) = (self.node("xingfu"), self.node("chagantolgay"));
        let _ = writeln!(
            s,
            "\nDashboard (工作台): open an office's admin URL above in a browser and paste its token.\n\
             A transfer from the page alone: at {} (http://{}) search a member of bayin, open the\n\
             case file, fill 发起组织关系转接 with the target org (e.g. {}); the target then\n\
             accepts it under 转接待办 at its own URL.",
            township.org, township.admin_addr, x.org
        );
        let _ = write!(
            s,
            "Try: curl -s -H 'Authorization: Bearer {}' 'http://{}/api/v1/members?org={}&two_dwelling=true'\n     curl -s -H 'Authorization: Bearer {}' http://{}/api/v1/status\nCtrl-C stops the county; `amphi demo --dir {}` starts it again with its data.",
            x.token,
            x.admin_addr,
            x.org,
            x.token,
            x.admin_addr,
            self.dir.display()
        );
        s
    }

    /// Stops every office.
    pub async fn shutdown(self) {
        for n in self.nodes.into_iter().rev() {
            n.shutdown().await;
        }
    }
}
