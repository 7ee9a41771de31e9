//! The workload: the seeds' workflows, from several offices at once, for as long as the
//! faults run. New case files at villages and communities, two-dwelling certificates at
//! bayin, report-ins at xingfu, activities wherever the member is in scope, half-year
//! reviews at home, and transfers from tebke to bulgan (opened at tebke, accepted at bulgan
//! once the file has reached it). Every write that got a 2xx goes into the [`Ledger`]; the
//! checks then hold every office that may hold the member to it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::county::{Client, OFFICES};

/// One acknowledged write.
#[derive(Clone, Debug)]
pub enum Write {
    /// The case file was created.
    Created,
    /// An activity with this description was recorded.
    Activity(String),
    /// A half-year review with this comment was recorded.
    Review(String),
    /// The two-dwelling certificate names this residence org.
    Residence(String),
    /// The member reported in at the residence.
    ReportIn,
    /// A transfer with this id was opened.
    TransferOpened(String),
    /// The transfer with this id was accepted; the member's home is now this org.
    Transferred(String, String),
}

impl Write {
    /// Whether the case file `file` (as the API answers it) shows this write.
    pub fn shown_in(&self, file: &Value) -> bool {
        let has = |list: &str, field: &str, want: &str| {
            file[list]
                .as_array()
                .is_some_and(|l| l.iter().any(|e| e[field] == want))
        };
        match self {
            Write::Created => file["id"].is_string(),
            Write::Activity(d) => has("activities", "description", d),
            Write::Review(c) => has("reviews", "comment", c),
            Write::Residence(org) => file["residence"]["org"] == org.as_str(),
            Write::ReportIn => file["residence"]["reported_in_at"].is_string(),
            Write::TransferOpened(t) => has("transfers", "id", t),
            Write::Transferred(t, org) => {
                file["home_org"] == org.as_str()
                    && file["transfers"].as_array().is_some_and(|l| {
                        l.iter()
                            .any(|e| e["id"] == t.as_str() && e["state"] == "accepted")
                    })
            }
        }
    }
}

/// A write acknowledged by an office.
#[derive(Clone, Debug)]
pub struct Acked {
    /// The office that answered 2xx.
    pub office: &'static str,
    /// The member's case file.
    pub member: String,
    /// What was written.
    pub write: Write,
}

/// What the workload did.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Every acknowledged write, in order.
    pub acked: Vec<Acked>,
    /// Requests answered with a 4xx or 5xx (refused: not in scope yet, office restarting…).
    pub refused: BTreeMap<u16, u64>,
    /// Requests nobody answered (office down, killed mid-request).
    pub unanswered: u64,
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} refused ({:?}), {} unanswered",
            self.acked.len(),
            self.refused.values().sum::<u64>(),
            self.refused,
            self.unanswered
        )
    }
}

/// One member as the workload tracks it.
struct Member {
    id: String,
    home: &'static str,
    residence: bool,
    reported: bool,
    reviewed: bool,
    transfer: Option<String>,
    transferred: bool,
}

/// The workload's state between steps.
pub struct Workload {
    client: Client,
    rng: StdRng,
    members: Vec<Member>,
    ledger: Ledger,
    serial: u64,
}

/// Offices where new members are registered.
const HOMES: &[&str] = &["bayin", "tebke", "heping", "bulgan", "xingfu"];

fn org(name: &str) -> &'static str {
    OFFICES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, org, _)| *org)
        .unwrap_or_else(|| panic!("no lab office {name}"))
}

fn parent(name: &str) -> Option<&'static str> {
    OFFICES
        .iter()
        .find(|(n, _, _)| *n == name)
        .and_then(|o| o.2)
}

impl Workload {
    /// A workload drawing its choices from `seed`.
    pub fn new(client: Client, seed: u64) -> Workload {
        Workload {
            client,
            rng: StdRng::seed_from_u64(seed),
            members: Vec::new(),
            ledger: Ledger::default(),
            serial: 0,
        }
    }

    /// Runs steps `every` apart until `stop` says so; returns the ledger.
    pub async fn run(
        mut self,
        every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Ledger {
        let mut next = Instant::now();
        while !*stop.borrow() {
            self.step().await;
            next += every;
            tokio::time::sleep_until(next.into()).await;
        }
        self.ledger
    }

    /// One write, chosen at random among what the county does.
    async fn step(&mut self) {
        self.serial += 1;
        let n = self.serial;
        let roll = self.rng.random_range(0..100);
        match roll {
            _ if self.members.len() < 6 || roll < 20 => self.register(n).await,
            20..=29 => self.issue_certificate().await,
            30..=39 => self.report_in().await,
            40..=74 => self.record_activity(n).await,
            75..=84 => self.review(n).await,
            _ => self.transfer().await,
        }
    }

    async fn register(&mut self, n: u64) {
        let home = HOMES[self.rng.random_range(0..HOMES.len())];
        let body = json!({
            "name": format!("实验党员{n}"), "gender": "female", "ethnicity": "Mongol",
            "birth_date": "1980-05-01", "joined_at": "2005-07-01", "home_org": org(home),
        });
        if let Some(reply) = self.send(home, "/api/v1/members", &body).await
            && let Some(id) = reply["id"].as_str()
        {
            self.acked(home, id, Write::Created);
            self.members.push(Member {
                id: id.to_owned(),
                home,
                residence: false,
                reported: false,
                reviewed: false,
                transfer: None,
                transferred: false,
            });
        }
    }

    /// bayin issues a two-dwelling certificate for xingfu.
    async fn issue_certificate(&mut self) {
        let Some(i) = self.pick(|m| m.home == "bayin" && !m.residence) else {
            return;
        };
        let id = self.members[i].id.clone();
        let body = json!({"org": org("xingfu"), "since": "2026-11-01"});
        let path = format!("/api/v1/members/{id}/residence");
        if self.put("bayin", &path, &body).await.is_some() {
            self.members[i].residence = true;
            self.acked("bayin", &id, Write::Residence(org("xingfu").to_owned()));
        }
    }

    /// xingfu records the report-in once the file has reached it.
    async fn report_in(&mut self) {
        let Some(i) = self.pick(|m| m.residence && !m.reported) else {
            return;
        };
        let id = self.members[i].id.clone();
        let path = format!("/api/v1/members/{id}/report-in");
        if self.send("xingfu", &path, &json!({})).await.is_some() {
            self.members[i].reported = true;
            self.acked("xingfu", &id, Write::ReportIn);
        }
    }

    /// An activity, recorded by the home office, its township or the residence office.
    async fn record_activity(&mut self, n: u64) {
        let Some(i) = self.pick(|_| true) else {
            return;
        };
        let m = &self.members[i];
        let mut writers = vec![m.home];
        writers.extend(parent(m.home));
        if m.residence {
            writers.push("xingfu");
        }
        let office = writers[self.rng.random_range(0..writers.len())];
        let id = m.id.clone();
        let description = format!("组织生活 lab-{n}");
        let body = json!({"date": "2026-11-20", "kind": "study",
                          "description": description, "points": 1});
        let path = format!("/api/v1/members/{id}/activities");
        if self.send(office, &path, &body).await.is_some() {
            self.acked(office, &id, Write::Activity(description));
        }
    }

    /// The home office's half-year review, once per member.
    async fn review(&mut self, n: u64) {
        let Some(i) = self.pick(|m| !m.reviewed) else {
            return;
        };
        let (id, home) = (self.members[i].id.clone(), self.members[i].home);
        let comment = format!("表现良好 lab-{n}");
        let body = json!({"period": "2026H2", "rating": "good", "comment": comment});
        let path = format!("/api/v1/members/{id}/reviews");
        if self.send(home, &path, &body).await.is_some() {
            self.members[i].reviewed = true;
            self.acked(home, &id, Write::Review(comment));
        }
    }

    /// tebke opens a transfer to bulgan; bulgan accepts it once the file is there.
    async fn transfer(&mut self) {
        if let Some(i) = self.pick(|m| m.transfer.is_some() && !m.transferred) {
            let (id, t) = (
                self.members[i].id.clone(),
                self.members[i].transfer.clone().unwrap_or_default(),
            );
            let path = format!("/api/v1/transfers/{t}/accept");
            if self.send("bulgan", &path, &json!({})).await.is_some() {
                let m = &mut self.members[i];
                m.transferred = true;
                m.home = "bulgan";
                self.acked("bulgan", &id, Write::Transferred(t, org("bulgan").into()));
            }
            return;
        }
        let Some(i) = self.pick(|m| m.home == "tebke" && m.transfer.is_none()) else {
            return;
        };
        let id = self.members[i].id.clone();
        let body = json!({"member_id": id, "to_org": org("bulgan"), "reason": "迁居"});
        if let Some(reply) = self.send("tebke", "/api/v1/transfers", &body).await
            && let Some(t) = reply["id"].as_str()
        {
            self.members[i].transfer = Some(t.to_owned());
            self.acked("tebke", &id, Write::TransferOpened(t.to_owned()));
        }
    }

    /// A member matching `want`, at random.
    fn pick(&mut self, want: impl Fn(&Member) -> bool) -> Option<usize> {
        let fits: Vec<usize> = (0..self.members.len())
            .filter(|&i| want(&self.members[i]))
            .collect();
        (!fits.is_empty()).then(|| fits[self.rng.random_range(0..fits.len())])
    }

    fn acked(&mut self, office: &'static str, member: &str, write: Write) {
        self.ledger.acked.push(Acked {
            office,
            member: member.to_owned(),
            write,
        });
    }

    async fn send(&mut self, office: &str, path: &str, body: &Value) -> Option<Value> {
        let reply = self.client.post(office, path, body).await;
        self.answered(reply)
    }

    async fn put(&mut self, office: &str, path: &str, body: &Value) -> Option<Value> {
        let reply = self
            .client
            .call(office, reqwest::Method::PUT, path, Some(body))
            .await;
        self.answered(reply)
    }

    /// The body of a 2xx; counts anything else.
    fn answered(&mut self, reply: anyhow::Result<(u16, Value)>) -> Option<Value> {
        match reply {
            Ok((status, body)) if (200..300).contains(&status) => Some(body),
            Ok((status, _)) => {
                *self.ledger.refused.entry(status).or_default() += 1;
                None
            }
            Err(_) => {
                self.ledger.unanswered += 1;
                None
            }
        }
    }
}
