//! Nodes for the bench: the county as its own process, nodes in this process, their admin
//! API, `/proc` readings, and notices of documents arriving.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amphi_node::config::Config;
use amphi_node::repo::{Notice, NoticeKind};
use amphi_protocol::{DocId, DocKind};
use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// A node's admin API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// The API at `admin` with `token`.
    pub fn new(admin: SocketAddr, token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{admin}"),
            token: token.to_owned(),
        }
    }

    /// `GET /healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(format!("{}/healthz", self.base)).send().await,
                 Ok(r) if r.status().is_success())
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/status", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "status: HTTP {}", r.status());
        Ok(r.json().await?)
    }

    /// POSTs JSON; fails unless 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let code = r.status();
        let text = r.text().await.unwrap_or_default();
        anyhow::ensure!(code.is_success(), "POST {path}: HTTP {code}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// One peer's counters from a status answer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PeerCounters {
    /// A session is up.
    pub connected: bool,
    /// Documents not known to be in sync.
    pub docs_pending: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Sync messages received.
    pub messages_in: u64,
    /// Sync messages sent.
    pub messages_out: u64,
}

impl PeerCounters {
    /// The counters of peer `org` in `status` (zero if absent).
    pub fn of(status: &Value, org: &str) -> PeerCounters {
        let Some(p) = status["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["org"] == org))
        else {
            return PeerCounters::default();
        };
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        PeerCounters {
            connected: p["state"] == "connected",
            docs_pending: n("docs_pending"),
            bytes_in: n("bytes_in"),
            bytes_out: n("bytes_out"),
            messages_in: n("messages_in"),
            messages_out: n("messages_out"),
        }
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_in + self.bytes_out
    }

    /// The counters since `before` (for a peer entry that outlives sessions).
    pub fn since(&self, before: &PeerCounters) -> PeerCounters {
        PeerCounters {
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
            messages_in: self.messages_in.saturating_sub(before.messages_in),
            messages_out: self.messages_out.saturating_sub(before.messages_out),
            ..*self
        }
    }
}

/// (members, orgs) documents in a status answer.
pub fn doc_counts(status: &Value) -> (u64, u64) {
    (
        status["docs"]["members"].as_u64().unwrap_or(0),
        status["docs"]["orgs"].as_u64().unwrap_or(0),
    )
}

/// Refused changes in a status answer.
pub fn refused_total(status: &Value) -> u64 {
    status["refused_total"].as_u64().unwrap_or(0)
}

/// A line of `/proc/PID/status` in kB (`VmHWM`, `VmRSS`).
pub fn proc_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn clock_ticks() -> f64 {
    static TICKS: AtomicU64 = AtomicU64::new(0);
    let cached = TICKS.load(Ordering::Relaxed);
    if cached != 0 {
        return cached as f64;
    }
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    TICKS.store(ticks, Ordering::Relaxed);
    ticks as f64
}

/// CPU time (user + system) of a process so far, seconds.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A free port on 127.0.0.1 for UDP (QUIC) or TCP (admin); the socket is closed again.
pub fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

/// The county node running as its own process (so its memory is its own).
pub struct CountyProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its process id.
    pub pid: u32,
    /// Its admin API.
    pub api: Api,
    /// Its QUIC address.
    pub quic: SocketAddr,
    /// What runs it (for the report).
    pub command: String,
}

impl CountyProcess {
    /// Starts `program args…` for `config` (already written), with stderr to `log`, and
    /// waits until its admin API answers.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        config: &Config,
        log: &Path,
    ) -> anyhow::Result<CountyProcess> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            // Drain stdout so the child never blocks on it.
            std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        }
        let pid = child.id();
        let started = Instant::now();
        let token_path = config.data_dir.join(amphi_node::node::TOKEN_FILE);
        let api = loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the county process exited ({status}) during start; see {}",
                    log.display()
                );
            }
            if let Ok(token) = std::fs::read_to_string(&token_path) {
                let api = Api::new(config.admin, token.trim());
                if api.healthy().await {
                    break api;
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "the county process did not answer within 120 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(CountyProcess {
            child,
            stdin,
            pid,
            api,
            quic: config.listen,
            command: format!("{} {}", program.display(), args.join(" ")),
        })
    }

    /// Stops the process (SIGTERM, then SIGKILL after 15 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for CountyProcess {
    /// A run that fails midway does not leave the county process behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Distinct documents seen changing at a node (from its repo's notices), with the time of
/// the last new one.
pub struct Arrivals {
    count: Arc<AtomicUsize>,
    lagged: Arc<AtomicU64>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Arrivals {
    /// Counts member documents (or only those in `only`) arriving through `rx`. The
    /// counting thread ends when the node's repo is dropped.
    pub fn watch(mut rx: broadcast::Receiver<Notice>, only: Option<HashSet<DocId>>) -> Arrivals {
        let count = Arc::new(AtomicUsize::new(0));
        let lagged = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let (c, l, t) = (count.clone(), lagged.clone(), last.clone());
        std::thread::spawn(move || {
            let mut seen = HashSet::new();
            loop {
                match rx.blocking_recv() {
                    Ok(Notice {
                        doc: id,
                        kind: NoticeKind::Changed,
                        ..
                    }) => {
                        let wanted = match &only {
                            Some(set) => set.contains(&id),
                            None => id.kind() == DocKind::Member,
                        };
                        if wanted && seen.insert(id) {
                            c.store(seen.len(), Ordering::Relaxed);
                            *t.lock().expect("arrivals lock") = Some(Instant::now());
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        l.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Arrivals {
            count,
            lagged,
            last,
        }
    }

    /// Distinct documents seen so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Notices missed (the count may then be short).
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// When the last new document was seen.
    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().expect("arrivals lock")
    }
}
