//! The Docker engine, through its command-line client: private networks, office
//! containers, kills and restarts. Every call is bounded in time and says what failed.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// Longest a `docker` call that manages containers may take (a `docker stop` waits up to
/// 10 s for the node).
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// Longest a one-off `amphi` command in a container may take: `amphi verify` checks every
/// signature in the store, minutes for a county's store after an hour's soak.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Runs `docker ARGS` and returns its standard output, trimmed.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    docker_within(args, CALL_LIMIT)
}

/// [`docker`], allowed `limit`. Its output is read as it comes (a large report must not
/// fill the pipe and stall the command until the limit).
pub fn docker_within(args: &[&str], limit: Duration) -> anyhow::Result<String> {
    let mut child = Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting `docker` (is Docker installed?)")?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`docker {}` took over {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`docker {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&stderr).trim(),
            String::from_utf8_lossy(&stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
}

/// A private bridge network of its own for one office (its "LAN"); the host is its gateway.
pub struct Network {
    /// Its name.
    pub name: String,
    /// The host's address on it: where the office reaches the links to other offices.
    pub gateway: IpAddr,
}

impl Network {
    /// Creates the network (removing a leftover of the same name first).
    pub fn create(name: &str) -> anyhow::Result<Network> {
        let _ = docker(&["network", "rm", name]);
        docker(&["network", "create", "--driver", "bridge", name])?;
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            name,
        ])?;
        let gateway = gateway
            .parse()
            .with_context(|| format!("network {name} has no usable gateway: {gateway:?}"))?;
        Ok(Network {
            name: name.to_owned(),
            gateway,
        })
    }

    /// Removes the network (its containers must be gone).
    pub fn remove(&self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// How to run one office's container.
pub struct Spec<'a> {
    /// Container name.
    pub name: &'a str,
    /// Image, e.g. `amphi:lab`.
    pub image: &'a str,
    /// Network it joins.
    pub network: &'a str,
    /// Host folder mounted read-only at `/etc/amphi` (config and certificate).
    pub config_dir: &'a Path,
    /// Host folder mounted at `/var/lib/amphi` (the office's data volume).
    pub data_dir: &'a Path,
}

/// Starts a container for `spec` (detached; a leftover of the same name is removed first)
/// and returns its address on its network.
pub fn run(spec: &Spec) -> anyhow::Result<IpAddr> {
    let _ = docker(&["rm", "-f", spec.name]);
    let config = format!("{}:/etc/amphi:ro", spec.config_dir.display());
    let data = format!("{}:/var/lib/amphi", spec.data_dir.display());
    let user = owner_of(spec.data_dir)?;
    docker(&[
        "run",
        "-d",
        "--name",
        spec.name,
        "--hostname",
        spec.name,
        "--network",
        spec.network,
        "--user",
        &user,
        "-e",
        "RUST_LOG=info",
        "-v",
        &config,
        "-v",
        &data,
        spec.image,
    ])?;
    address(spec.name)
}

/// The container's address on its (one) network.
pub fn address(name: &str) -> anyhow::Result<IpAddr> {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])?;
    ip.parse()
        .with_context(|| format!("container {name} has no address: {ip:?}"))
}

/// `docker kill` (SIGKILL: a power cut, as far as the node can tell).
pub fn kill(name: &str) -> anyhow::Result<()> {
    docker(&["kill", name]).map(drop)
}

/// `docker stop` (SIGTERM, then SIGKILL after 10 s).
pub fn stop(name: &str) -> anyhow::Result<()> {
    docker(&["stop", name]).map(drop)
}

/// `docker start` of a stopped container; returns its (possibly new) address.
pub fn start(name: &str) -> anyhow::Result<IpAddr> {
    docker(&["start", name])?;
    address(name)
}

/// Removes a container, running or not.
pub fn remove(name: &str) {
    let _ = docker(&["rm", "-f", name]);
}

/// The last lines of a container's log (for a failure report).
pub fn log_tail(name: &str, lines: usize) -> String {
    // The node logs to stderr, which `docker logs` gives back on its own stderr.
    match Command::new("docker")
        .args(["logs", "--tail", &lines.to_string(), name])
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(no log: {e})"),
    }
}

/// Whether the container is running.
pub fn running(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", name]).is_ok_and(|s| s == "true")
}

/// `uid:gid` owning `folder`: the container writes the bind-mounted data folder as the
/// user who made it.
pub fn owner_of(folder: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(folder).with_context(|| format!("{}", folder.display()))?;
    Ok(format!("{}:{}", meta.uid(), meta.gid()))
}
