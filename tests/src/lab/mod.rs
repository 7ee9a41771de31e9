//! A county in containers: nine offices, each its own container on its own private
//! network, every link through a seeded fault relay; the seeds' workflows running
//! throughout while links fail, offices die and the county upgrades one office at a time.
//! Afterwards every office must hold exactly what its scope allows, at the same heads as
//! every other holder, with every acknowledged write present.
//!
//! Run by `.ci/run` through `tests/county-in-containers.sh` (which builds the images);
//! `--soak-minutes N` repeats the faults for a long run.

pub mod checks;
pub mod county;
pub mod docker;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::relay::{Direction, Faults, LinkStats};
use county::{Lab, OFFICES};
use workload::{Ledger, Workload};

/// How to run the lab.
pub struct Options {
    /// The image under test.
    pub image: String,
    /// An older image to start from and upgrade away from, office by office.
    pub previous: Option<String>,
    /// Seeds the relay's faults and the workload's choices.
    pub seed: u64,
    /// Keep repeating the faults for this long (a soak); `None`: one round (CI).
    pub soak: Option<Duration>,
    /// The lab's folder (CA, certificates, configs, data volumes).
    pub dir: PathBuf,
    /// How long the county may take to converge after the last fault clears.
    pub converge_within: Duration,
}

/// What happened, for the report.
#[derive(Default)]
pub struct Report {
    /// Each fault, with when it started (seconds since the workload began).
    pub faults: Vec<(f64, String)>,
    /// The workload's writes.
    pub ledger: Ledger,
    /// Seconds from the last fault clearing to a converged county.
    pub converged_after: Option<f64>,
    /// Documents compared at the end.
    pub documents: usize,
    /// Acknowledged writes missing somewhere they belong.
    pub lost: Vec<String>,
    /// Per link: what the relay did to its packets.
    pub links: Vec<(String, LinkStats)>,
    /// Whole run, seconds.
    pub took: f64,
}

/// The links' "weather" while the lab runs: 300 ms ± 100 ms each way, 5 % loss, some
/// duplication and reordering.
fn weather() -> Faults {
    Faults {
        delay: Duration::from_millis(300),
        jitter: Duration::from_millis(100),
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.02,
        ..Faults::default()
    }
}

/// Runs the whole lab; `Err` names the first thing that did not hold.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let first_image = opts.previous.as_deref().unwrap_or(&opts.image);
    println!("==> starting {} offices from {first_image}", OFFICES.len());
    let mut lab = Lab::start(&opts.dir, first_image, opts.seed).await?;
    let outcome = exercise(&mut lab, opts, started).await;
    if outcome.is_err() {
        for office in &lab.offices {
            println!(
                "--- {} (last log lines)\n{}",
                office.name,
                docker::log_tail(&office.container(), 15)
            );
        }
    }
    lab.tear_down();
    outcome
}

async fn exercise(lab: &mut Lab, opts: &Options, started: Instant) -> anyhow::Result<Report> {
    wait_connected(lab, Duration::from_secs(120)).await?;
    println!(
        "==> all offices connected after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut report = Report::default();
    for (_, link) in &lab.links {
        link.set_both(weather());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(
        Workload::new(lab.client.clone(), opts.seed).run(Duration::from_millis(250), stopped),
    );
    let mut timeline = Timeline {
        clock: Instant::now(),
        faults: Vec::new(),
    };
    timeline
        .log("weather on every link: 300 ± 100 ms, 5 % loss, 2 % duplicated, 2 % reordered".into());
    let long = opts.soak.is_some();
    let mut round = 0;
    loop {
        round += 1;
        fault_round(lab, opts, long, &mut timeline).await?;
        if opts
            .soak
            .is_none_or(|soak| timeline.clock.elapsed() >= soak)
        {
            break;
        }
        timeline.log(format!("soak: round {round} done"));
    }
    for (_, link) in &lab.links {
        link.set_both(Faults::default());
    }
    let _ = stop.send(true);
    report.ledger = writer.await.context("the workload panicked")?;
    timeline.log("every fault cleared; workload stopped".into());
    println!("    writes: {}", report.ledger);
    report.faults = timeline.faults;
    let healed = Instant::now();

    let (mut last, mut remaining) = (None, None);
    while healed.elapsed() < opts.converge_within {
        let all = checks::inventories(&lab.client).await?;
        let found = checks::compare(&all);
        report.documents = found.documents;
        if found.converged() {
            report.converged_after = Some(healed.elapsed().as_secs_f64());
            last = Some(all);
            break;
        }
        // A township keeps a file that left its scope until the office below confirms it
        // let go too (so that office learns it left): out of scope for a while, not for ever.
        println!(
            "    not converged yet: {} missing, {} differing, {} still held out of scope (e.g. {:?})",
            found.missing.len(),
            found.differing.len(),
            found.out_of_scope.len(),
            found
                .missing
                .iter()
                .chain(&found.differing)
                .chain(&found.out_of_scope)
                .next()
        );
        remaining = Some(found);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let Some(all) = last else {
        anyhow::bail!(
            "the county did not converge within {:?} of the last fault clearing: {remaining:#?}",
            opts.converge_within
        );
    };
    println!(
        "==> converged {:.1} s after the last fault cleared ({} documents)",
        report.converged_after.unwrap_or_default(),
        report.documents
    );
    report.lost = checks::lost_writes(&lab.client, &report.ledger.acked, &all).await?;
    anyhow::ensure!(
        report.lost.is_empty(),
        "acknowledged writes lost: {:#?}",
        report.lost
    );

    let fresh_by = Instant::now() + Duration::from_secs(120);
    loop {
        let stale = checks::not_fresh(&lab.client).await?;
        if stale.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < fresh_by,
            "the county's fleet view still shows offices not fresh: {stale:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("==> the county's fleet view shows every office fresh");

    read_stores_offline(lab, &opts.image)?;
    report.links = lab
        .links
        .iter()
        .map(|(name, link)| (name.to_string(), link.stats()))
        .collect();
    report.took = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One round of faults: a link down, an asymmetric partition, a township down while its
/// villages write, an office killed mid-write, and every office restarted (upgraded, when
/// there is a previous image) one by one. `long` (a soak) holds each fault longer.
async fn fault_round(
    lab: &mut Lab,
    opts: &Options,
    long: bool,
    timeline: &mut Timeline,
) -> anyhow::Result<()> {
    let mut log = |what: String| timeline.log(what);
    let scale = |ci: u64, soak: u64| Duration::from_secs(if long { soak } else { ci });
    let cut = Faults {
        down: true,
        ..weather()
    };
    log("link bayin ↔ chagantolgay down (both ways)".into());
    lab.link("bayin").set_both(cut.clone());
    tokio::time::sleep(scale(15, 60)).await;
    log("asymmetric: hoboksar-town no longer hears xingfu (xingfu still hears it)".into());
    lab.link("xingfu").set(Direction::Up, cut);
    tokio::time::sleep(scale(45, 180)).await;
    log("asymmetric partition healed".into());
    lab.link("xingfu").set_both(weather());
    tokio::time::sleep(scale(5, 30)).await;
    log("link bayin ↔ chagantolgay back".into());
    lab.link("bayin").set_both(weather());

    log("township chagantolgay stopped; bayin and tebke keep writing".into());
    lab.stop("chagantolgay")?;
    tokio::time::sleep(scale(40, 180)).await;
    lab.restart("chagantolgay").await?;
    log("township chagantolgay back".into());

    tokio::time::sleep(Duration::from_millis(1_700)).await;
    log("docker kill bayin (mid-write: the workload writes there all the time)".into());
    lab.kill("bayin")?;
    tokio::time::sleep(scale(5, 20)).await;
    lab.restart("bayin").await?;
    log("bayin restarted".into());

    let verb = if opts.previous.is_some() {
        "upgrade"
    } else {
        "restart"
    };
    let image = opts.image.as_str();
    for &(name, _, _) in OFFICES.iter().rev() {
        let from = lab.office(name).image.clone();
        lab.upgrade(name, image).await?;
        log(format!("rolling {verb}: {name} ({from} → {image})"));
        tokio::time::sleep(scale(3, 10)).await;
    }
    Ok(())
}

/// When each fault began, counted from the workload's start.
struct Timeline {
    clock: Instant,
    faults: Vec<(f64, String)>,
}

impl Timeline {
    fn log(&mut self, what: String) {
        let t = self.clock.elapsed().as_secs_f64();
        println!("[{t:7.1} s] {what}");
        self.faults.push((t, what));
    }
}

/// Waits until every office's link to its parent is up.
async fn wait_connected(lab: &Lab, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for office in &lab.offices {
            let Some(parent) = office.parent else {
                continue;
            };
            let parent_org = lab.office(parent).org.to_string();
            let (_, status) = lab.client.get(office.name, "/api/v1/status").await?;
            let up = status["peers"].as_array().is_some_and(|peers| {
                peers
                    .iter()
                    .any(|p| p["org"] == parent_org.as_str() && p["state"] == "connected")
            });
            if !up {
                waiting.push(office.name);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "not connected to their parents within {limit:?}: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops every office and reads each store file with `amphi verify --inventory` (not
/// through the API): no problems, nothing outside scope, the same inventory as before.
fn read_stores_offline(lab: &Lab, image: &str) -> anyhow::Result<()> {
    for office in &lab.offices {
        lab.stop(office.name)?;
    }
    let mut all = checks::Inventories::new();
    for office in &lab.offices {
        let out = lab
            .offline(
                office.name,
                image,
                &[
                    "verify",
                    "--config",
                    "/etc/amphi/amphi.toml",
                    "--inventory",
                    "--json",
                ],
            )
            .with_context(|| format!("amphi verify of {}'s store", office.name))?;
        let report: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("{}: amphi verify printed {out:?}", office.name))?;
        all.insert(office.name, checks::inventory_of(&report)?);
    }
    let found = checks::compare(&all);
    anyhow::ensure!(
        found.converged(),
        "the stores read offline differ: {found:?}"
    );
    println!(
        "==> every store read offline with `amphi verify`: sound, {} documents, none out of scope",
        found.documents
    );
    Ok(())
}

impl Report {
    /// The short report printed at the end.
    pub fn print(&self) {
        println!("\n==== county in containers: report");
        println!("faults injected:");
        for (t, what) in &self.faults {
            println!("  {t:7.1} s  {what}");
        }
        println!("writes: {}", self.ledger);
        if let Some(s) = self.converged_after {
            println!(
                "converged: {s:.1} s after the last fault cleared ({} documents)",
                self.documents
            );
        }
        println!("lost acknowledged writes: {}", self.lost.len());
        println!("links (relay):");
        for (name, s) in &self.links {
            println!("  {name:>14} → parent  {s}");
        }
        println!("took {:.0} s", self.took);
    }
}
