//! Running the real `amphi` binary in tests: CA and certificates through the CLI, a node
//! process, its admin address and token.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AMPHI: &str = env!("CARGO_BIN_EXE_amphi");

pub fn amphi(args: &[&str]) {
    let out = Command::new(AMPHI).args(args).output().expect("amphi runs");
    assert!(
        out.status.success(),
        "amphi {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[expect(
    clippy::zombie_processes,
    reason = "the caller kills and waits for the child"
)]
/// Starts `amphi run` and returns the process and its admin address (read from its banner).
pub fn run(config: &Path) -> (Child, String) {
    let mut child = Command::new(AMPHI)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("amphi run starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no banner from amphi run");
        let line = lines.next().expect("banner line").expect("utf-8");
        if let Some(addr) = line.split("admin on http://").nth(1) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr.trim().to_owned());
        }
    }
}

pub fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A CA for `hoboksar` and a node folder for `org` with a config on loopback ports chosen by
/// the OS; returns the config path.
pub fn office(root: &Path, org: &str) -> PathBuf {
    let (ca, dir) = (root.join("ca"), root.join(org.replace('/', "_")));
    if !ca.join("ca.key").exists() {
        amphi(&[
            "ca",
            "init",
            "--dir",
            ca.to_str().unwrap(),
            "--org",
            "hoboksar",
        ]);
    }
    amphi(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--org",
        org,
        "--out",
        dir.to_str().unwrap(),
    ]);
    // A fixed admin port (as operators configure), reserved from the OS.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("amphi.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\nadmin = \"{admin}\"\ncert = \"node.crt\"\nkey = \"node.key\"\nca = \"ca.crt\"\n"),
    )
    .unwrap();
    config
}

/// Gives the office configured in `config` a fixed QUIC listen port reserved from the OS, as
/// operators configure a parent that children dial across restarts; returns the address.
pub fn fix_listen(config: &Path) -> std::net::SocketAddr {
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    assert!(
        text.contains("listen = \"127.0.0.1:0\""),
        "{config:?} has a listen address already"
    );
    let text = text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
        1,
    );
    std::fs::write(config, text).unwrap();
    listen
}

/// Adds a `[[peers]]` section to `config`: the office dials `org` at `addr`.
pub fn add_peer(config: &Path, addr: std::net::SocketAddr, org: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "\n[[peers]]\naddr = \"{addr}\"\norg = \"{org}\"\n"
    ));
    std::fs::write(config, text).unwrap();
}

/// Kills the node process when dropped (also when a test panics).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
