//! `amphi-relay`: the seeded fault relay of the cluster tests, for manual use.
//!
//! ```text
//! amphi-relay --seed 7 --link bayin=0.0.0.0:7101,10.0.0.3:7000 \
//!     --delay-ms 300 --jitter-ms 100 --loss 0.05 --duplicate 0.01 --reorder 0.02
//! ```
//! Every link gets the same faults in both directions. Stats are printed every 10 s and
//! once more on Ctrl-C, which stops the relay.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use amphi_cluster_tests::relay::{Faults, LinkHandle, Relay};
use anyhow::Context;
use clap::Parser;

/// How often stats are printed.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// A seeded UDP relay that injects link faults between Amphi offices: point a child
/// office's parent address at a link's listening address.
#[derive(Parser)]
#[command(name = "amphi-relay")]
struct Cli {
    /// Seed of every random decision: the same seed and traffic give the same faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A link as NAME=LISTEN_ADDR,TARGET_ADDR, e.g. bayin=0.0.0.0:7101,10.0.0.3:7000.
    /// Repeat for more links.
    #[arg(long = "link", value_name = "NAME=LISTEN_ADDR,TARGET_ADDR", required = true, value_parser = parse_link)]
    links: Vec<LinkSpec>,
    /// Delay of every datagram, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Each delay varies by up to this many milliseconds either way.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability (0 to 1) a datagram is lost.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    loss: f64,
    /// Probability (0 to 1) a datagram is sent twice.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    duplicate: f64,
    /// Probability (0 to 1) a datagram is held back so later ones overtake it.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    reorder: f64,
}

impl Cli {
    fn faults(&self) -> Faults {
        Faults {
            down: false,
            delay: Duration::from_millis(self.delay_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss: self.loss,
            duplicate: self.duplicate,
            reorder: self.reorder,
        }
    }
}

/// One `--link` argument.
#[derive(Clone)]
struct LinkSpec {
    name: String,
    listen: SocketAddr,
    target: SocketAddr,
}

fn parse_link(arg: &str) -> Result<LinkSpec, String> {
    let shape = "write a link as NAME=LISTEN_ADDR,TARGET_ADDR";
    let (name, addrs) = arg.split_once('=').ok_or(shape)?;
    let (listen, target) = addrs.split_once(',').ok_or(shape)?;
    if name.is_empty() {
        return Err(format!("the link has no name; {shape}"));
    }
    Ok(LinkSpec {
        name: name.to_owned(),
        listen: resolve(listen)?,
        target: resolve(target)?,
    })
}

/// An address as `ip:port` or `host:port`.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not an address (host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

fn parse_probability(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{arg:?} is not a probability between 0 and 1")),
    }
}

fn print_stats(links: &[LinkHandle]) {
    for link in links {
        println!("{}: {}", link.name(), link.stats());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let faults = cli.faults();
    let relay = Relay::new(cli.seed);
    let mut links = Vec::new();
    for spec in &cli.links {
        let link = relay
            .link(&spec.name, spec.listen, spec.target)
            .await
            .with_context(|| format!("opening link {} on {}", spec.name, spec.listen))?;
        link.set_both(faults.clone());
        println!(
            "{}: {} -> {} with {faults:?}",
            link.name(),
            link.local_addr(),
            spec.target
        );
        links.push(link);
    }
    let mut every = tokio::time::interval(STATS_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => print_stats(&links),
            stop = tokio::signal::ctrl_c() => {
                stop.context("waiting for Ctrl-C")?;
                print_stats(&links);
                return Ok(());
            }
        }
    }
}
