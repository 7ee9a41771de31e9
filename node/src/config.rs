//! The TOML config of `amphi run` (contract.md, "Running a node").
//!
//! ```toml
//! data_dir = "data"            # relative to the config file
//! listen   = "127.0.0.1:7401"  # QUIC (UDP)
//! admin    = "127.0.0.1:8401"  # HTTP: admin API, dashboard, /metrics
//! cert = "node.crt"
//! key  = "node.key"
//! ca   = "ca.crt"
//! [[peers]]
//! addr = "127.0.0.1:7400"          # host:port; a DNS name is resolved at each dial
//! org  = "hoboksar/hoboksar-town"  # expected; checked against the peer's certificate
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use amphi_protocol::OrgPath;
use serde::Deserialize;

/// A node's configuration, with paths already resolved against the config file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the store and the admin token live.
    pub data_dir: PathBuf,
    /// QUIC listen address (UDP).
    pub listen: SocketAddr,
    /// Admin HTTP listen address.
    pub admin: SocketAddr,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The county CA certificate (PEM).
    pub ca: PathBuf,
    /// Offices this node dials (normally its parent).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Longest wait between redials of a peer, in milliseconds (default 30 000).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How often this node writes its status report for the fleet view, in milliseconds
    /// (default 300 000; a report is also written soon after a peer's state changes; 0 turns
    /// reports off).
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// A report older than this marks an office stale in the fleet view, in milliseconds
    /// (default 900 000).
    #[serde(default = "default_fleet_stale_after_ms")]
    pub fleet_stale_after_ms: u64,
    /// Send only the signature at the top of each run of an office's changes (default
    /// false). Halves a cold case file's bytes. Turn it on at every office once every office
    /// runs a build that reads such runs (this one or later: earlier builds refuse their
    /// unsigned changes), and do not roll an office back to an earlier build afterwards.
    #[serde(default)]
    pub chained_signatures: bool,
}

fn default_status_interval_ms() -> u64 {
    300_000
}

fn default_fleet_stale_after_ms() -> u64 {
    900_000
}

fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// One office this node dials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// `host:port` of the peer's QUIC listener.
    pub addr: String,
    /// The org the peer's certificate must name.
    pub org: OrgPath,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or a field is wrong.
    #[error("config {path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ParseError,
    },
}

/// Why config text is not a valid config.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not TOML, an unknown or missing field, or a value of the wrong form (toml names the
    /// line and the field).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A peer's address has no port.
    #[error("peer address {addr:?} needs a port, e.g. \"10.0.0.1:7400\"")]
    PeerWithoutPort {
        /// The address as written.
        addr: String,
    },
}

impl Config {
    /// Reads and validates a config file; relative paths are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses config text, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ParseError> {
        let mut config: Config = toml::from_str(text)?;
        for p in [
            &mut config.data_dir,
            &mut config.cert,
            &mut config.key,
            &mut config.ca,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for peer in &config.peers {
            if !peer.addr.contains(':') {
                return Err(ParseError::PeerWithoutPort {
                    addr: peer.addr.clone(),
                });
            }
        }
        Ok(config)
    }

    /// The config text for the given values (used by `amphi demo` and the tests).
    pub fn render(
        listen: SocketAddr,
        admin: SocketAddr,
        peers: &[PeerConfig],
        reconnect_max_ms: Option<u64>,
    ) -> String {
        let mut s = format!(
            "data_dir = \"data\"\nlisten = \"{listen}\"\nadmin = \"{admin}\"\ncert = \"node.crt\"\nkey = \"node.key\"\nca = \"ca.crt\"\n"
        );
        if let Some(ms) = reconnect_max_ms {
            s.push_str(&format!("reconnect_max_ms = {ms}\n"));
        }
        for p in peers {
            s.push_str(&format!(
                "\n[[peers]]\naddr = \"{}\"\norg = \"{}\"\n",
                p.addr, p.org
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_examples_parse_also_with_chained_signatures_turned_on() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        for name in ["county.toml", "township.toml", "village.toml"] {
            let text = std::fs::read_to_string(examples.join(name)).unwrap();
            let base = Path::new("/etc/amphi");
            let as_is = Config::parse(&text, base).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!as_is.chained_signatures, "{name}: off unless set");
            let on = text.replace("# chained_signatures = false", "chained_signatures = true");
            assert_ne!(on, text, "{name} shows the setting");
            let on = Config::parse(&on, base).unwrap_or_else(|e| panic!("{name} with it on: {e}"));
            assert!(on.chained_signatures, "{name}");
            assert_eq!(
                on.peers.len(),
                as_is.peers.len(),
                "{name}: still a top-level key"
            );
        }
    }

    #[test]
    fn paths_resolve_against_the_config_folder() {
        let text = Config::render(
            "127.0.0.1:7401".parse().unwrap(),
            "127.0.0.1:8401".parse().unwrap(),
            &[PeerConfig {
                addr: "127.0.0.1:7400".into(),
                org: OrgPath::parse("hoboksar").unwrap(),
            }],
            Some(1000),
        );
        let c = Config::parse(&text, Path::new("/etc/amphi")).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/amphi/data"));
        assert_eq!(c.cert, Path::new("/etc/amphi/node.crt"));
        assert_eq!(c.peers[0].org.as_str(), "hoboksar");
        assert_eq!(c.reconnect_max_ms, 1000);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let base = Path::new(".");
        let bad_org = "data_dir='d'\nlisten='127.0.0.1:1'\nadmin='127.0.0.1:2'\ncert='c'\nkey='k'\nca='a'\n[[peers]]\naddr='x:1'\norg='Bad Org'\n";
        let message = |text: &str| Config::parse(text, base).unwrap_err().to_string();
        assert!(message(bad_org).contains("segment"));
        let no_port = bad_org.replace("Bad Org", "hoboksar").replace("x:1", "x");
        assert!(matches!(
            Config::parse(&no_port, base),
            Err(ParseError::PeerWithoutPort { addr }) if addr == "x"
        ));
        assert!(message(&no_port).contains("port"));
        assert!(message("colour='red'\n").contains("colour"));
    }
}
