//! `amphi`: the Amphi node and its operator commands.

use std::path::PathBuf;

use amphi_node::config::Config;
use amphi_node::node::Node;
use amphi_node::{admin, demo, pki};
use amphi_protocol::OrgPath;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Amphi: offline-first sync of party members' case files between county, township,
/// village and community offices.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The county certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Runs one office's node.
    Run {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Revocation records: load one into a running node, from where it reaches every office.
    #[command(subcommand)]
    Revocations(RevocationsCommand),
    /// Starts a complete local county (6 offices) with demo data and prints where to look.
    Demo {
        /// Where to put certificates, configs and data (default: a new temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// First port: QUIC ports are BASE.., admin ports BASE+1000..
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
    },
}

#[derive(Subcommand)]
enum RevocationsCommand {
    /// Imports a CA-signed revocation (from `amphi ca revoke`) into the node of CONFIG,
    /// which must be running; it then replicates to every office.
    Import {
        /// The node's TOML config (for its admin address and token).
        #[arg(long)]
        config: PathBuf,
        /// The revocation file.
        revocation: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Creates a CA that may issue only for ORG and below.
    Init {
        /// Folder for ca.crt and ca.key (must not hold a CA yet).
        #[arg(long)]
        dir: PathBuf,
        /// The org the CA serves, e.g. `hoboksar`.
        #[arg(long)]
        org: OrgPath,
    },
    /// Issues a node certificate: writes NODEDIR/node.crt, node.key (0600) and ca.crt.
    Issue {
        /// The CA folder.
        #[arg(long)]
        ca: PathBuf,
        /// The office, e.g. `hoboksar/chagantolgay/bayin`.
        #[arg(long)]
        org: OrgPath,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Revokes a node certificate: writes a CA-signed revocation record.
    Revoke {
        /// The CA folder.
        #[arg(long)]
        ca: PathBuf,
        /// The certificate to revoke (PEM, e.g. the office's node.crt).
        #[arg(long)]
        cert: PathBuf,
        /// Why (kept in the record, shown to every office).
        #[arg(long)]
        reason: String,
        /// Where to write the record (default: revocation-<org>.json here).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Ca(CaCommand::Init { dir, org }) => {
            let info = pki::ca_init(&dir, &org)?;
            println!(
                "CA for {} created in {} (valid until {})",
                info.org,
                dir.display(),
                info.not_after.date()
            );
        }
        Command::Ca(CaCommand::Issue { ca, org, out, days }) => {
            let issued = pki::ca_issue(&ca, &org, &out, days)?;
            println!(
                "issued {} → {} (valid until {}); also wrote node.key and ca.crt",
                issued.org,
                issued.cert_path.display(),
                issued.not_after.date()
            );
        }
        Command::Ca(CaCommand::Revoke {
            ca,
            cert,
            reason,
            out,
        }) => {
            let record = pki::ca_revoke(&ca, &cert, &reason)?;
            let out = out.unwrap_or_else(|| {
                PathBuf::from(format!("revocation-{}.json", record.org.replace('/', "_")))
            });
            std::fs::write(&out, serde_json::to_string_pretty(&record)? + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "revoked {} (certificate {}…) at {}; record written to {}\nimport it at any office: amphi revocations import --config CONFIG {}",
                record.org,
                &record.cert[..16],
                record.revoked_at,
                out.display(),
                out.display()
            );
        }
        Command::Revocations(RevocationsCommand::Import { config, revocation }) => {
            let config = Config::load(&config)?;
            let text = std::fs::read_to_string(&revocation)
                .with_context(|| format!("reading {}", revocation.display()))?;
            let record: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a revocation record", revocation.display()))?;
            let reply =
                runtime()?.block_on(admin::post(&config, "/api/v1/revocations", &record))?;
            println!("imported: {reply}");
        }
        Command::Run { config } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(async {
                let node = Node::start(&config).await.context("node did not start")?;
                eprintln!(
                    "amphi: {} serving QUIC on {}, admin on http://{}",
                    node.org, node.quic_addr, node.admin_addr
                );
                shutdown_signal().await;
                node.shutdown().await;
                anyhow::Ok(())
            })?;
        }
        Command::Demo { dir, base_port } => {
            runtime()?.block_on(async {
                let county = demo::start(dir, base_port).await?;
                println!("{}", county.describe());
                shutdown_signal().await;
                county.shutdown().await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    eprintln!("amphi: shutting down");
}
