//! `amphi`: the Amphi node and its operator commands.

use std::path::PathBuf;

use amphi_node::config::Config;
use amphi_node::node::Node;
use amphi_node::{admin, backup, demo, pki};
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
    /// This node's sync status: peers, pending documents, refusals (a table, or --json).
    Status {
        /// The node's TOML config (for its admin address and token).
        #[arg(long)]
        config: PathBuf,
        /// Print the JSON the API returns.
        #[arg(long)]
        json: bool,
    },
    /// Every office below this one with the age of its last status report.
    Fleet {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Print the JSON the API returns.
        #[arg(long)]
        json: bool,
    },
    /// Members' case files at this office.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Activities in a case file.
    #[command(subcommand)]
    Activity(ActivityCommand),
    /// Transfers of affiliation (组织关系转接).
    #[command(subcommand)]
    Transfer(TransferCommand),
    /// Writes a consistent copy of the office's store to a new file (the node may be
    /// running: then it writes the copy itself, on its own machine).
    Backup {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks the office's store (or a backup) without changing it: every document loads,
    /// every change is signed by a trusted author, every summary matches. Exits 1 on problems.
    Verify {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Check this backup file instead of the live store.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also list every document held, with its scope and heads (in the JSON report).
        #[arg(long)]
        inventory: bool,
    },
    /// Brings the office back from a backup (the node must be stopped); on its next start
    /// the node fetches from its peers what it wrote after the backup.
    Restore {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The backup file (from `amphi backup`).
        backup: PathBuf,
        /// Restore even if the backup fails verification.
        #[arg(long)]
        force: bool,
    },
    /// Store-and-forward bundles (U盘): carry changes to an office whose link is down.
    #[command(subcommand)]
    Bundle(BundleCommand),
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
enum BundleCommand {
    /// Writes a signed bundle of what office ORG may hold and lacks (by the last sync with
    /// it, or everything with --all).
    Export {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The office the bundle is for (a neighbour: parent, child or configured peer).
        #[arg(long = "for")]
        to: String,
        /// The bundle file to create.
        #[arg(long)]
        out: PathBuf,
        /// Everything the office may hold, not only what it lacks by the last sync.
        #[arg(long)]
        all: bool,
    },
    /// Checks a bundle whole, then takes in every change through the same gate as a link;
    /// prints what was applied and refused.
    Import {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Registers a member whose home is ORG (default: this office).
    Add {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Full name.
        #[arg(long)]
        name: String,
        /// female or male.
        #[arg(long)]
        gender: String,
        /// 民族.
        #[arg(long)]
        ethnicity: String,
        /// YYYY-MM-DD.
        #[arg(long)]
        birth_date: String,
        /// 入党日期, YYYY-MM-DD.
        #[arg(long)]
        joined_at: String,
        /// Home org (default: this office).
        #[arg(long)]
        home_org: Option<String>,
    },
    /// Shows a case file.
    Show {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The member id (m-…).
        id: String,
    },
    /// Lists members whose home or residence is ORG or below.
    List {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Only under this org.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
enum ActivityCommand {
    /// Records an activity, stamped with this office.
    Add {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The member id.
        #[arg(long)]
        member: String,
        /// YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// organisation-life, study, volunteer-service, party-day, dues, other.
        #[arg(long)]
        kind: String,
        /// What was done.
        #[arg(long)]
        description: String,
        /// 积分.
        #[arg(long)]
        points: Option<i64>,
    },
}

#[derive(Subcommand)]
enum TransferCommand {
    /// Opens a transfer of a member to another org.
    Open {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The member id.
        #[arg(long)]
        member: String,
        /// The receiving org.
        #[arg(long)]
        to: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Accepts a transfer (at the target).
    Accept {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The transfer id (t-…).
        id: String,
    },
    /// Rejects a transfer (at the target).
    Reject {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The transfer id.
        id: String,
    },
    /// Cancels a transfer (at the home).
    Cancel {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// The transfer id.
        id: String,
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
    let returns_memory = amphi_node::memory::return_freed_memory();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if !returns_memory {
        tracing::warn!("the C library refused the malloc settings: freed memory may stay held");
    }
    amphi_node::panics::install();
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
        Command::Status { config, json } => {
            let value = api_get(&config, "/api/v1/status")?;
            print_json_or(json, &value, amphi_node::admin::status_table);
        }
        Command::Fleet { config, json } => {
            let value = api_get(&config, "/api/v1/fleet")?;
            print_json_or(json, &value, amphi_node::admin::fleet_table);
        }
        Command::Member(MemberCommand::Add {
            config,
            name,
            gender,
            ethnicity,
            birth_date,
            joined_at,
            home_org,
        }) => {
            let loaded = Config::load(&config)?;
            let home_org = match home_org {
                Some(h) => h,
                None => amphi_node::pki::org_of_cert(
                    &std::fs::read(&loaded.cert)
                        .ok()
                        .and_then(|pem| pem_der(&pem))
                        .unwrap_or_default(),
                )?
                .to_string(),
            };
            let body = serde_json::json!({"name": name, "gender": gender, "ethnicity": ethnicity,
                "birth_date": birth_date, "joined_at": joined_at, "home_org": home_org});
            let created = api_post(&config, "/api/v1/members", &body)?;
            println!("{}", created["id"].as_str().unwrap_or("?"));
        }
        Command::Member(MemberCommand::Show { config, id }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&api_get(&config, &format!("/api/v1/members/{id}"))?)?
            );
        }
        Command::Member(MemberCommand::List { config, org }) => {
            let path = org.map_or("/api/v1/members".to_owned(), |o| {
                format!("/api/v1/members?org={o}")
            });
            for m in api_get(&config, &path)?["members"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "{}  {:<20} home {}{}",
                    m["id"].as_str().unwrap_or("?"),
                    m["name"].as_str().unwrap_or("?"),
                    m["home_org"].as_str().unwrap_or("?"),
                    m["residence_org"]
                        .as_str()
                        .map(|r| format!(", resident at {r}"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Activity(ActivityCommand::Add {
            config,
            member,
            date,
            kind,
            description,
            points,
        }) => {
            let body = serde_json::json!({"date": date, "kind": kind, "description": description, "points": points});
            api_post(
                &config,
                &format!("/api/v1/members/{member}/activities"),
                &body,
            )?;
            println!("recorded");
        }
        Command::Transfer(TransferCommand::Open {
            config,
            member,
            to,
            reason,
        }) => {
            let body = serde_json::json!({"member_id": member, "to_org": to, "reason": reason});
            let t = api_post(&config, "/api/v1/transfers", &body)?;
            println!(
                "{} {}",
                t["id"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?")
            );
        }
        Command::Transfer(TransferCommand::Accept { config, id }) => {
            transfer_step(&config, &id, "accept")?
        }
        Command::Transfer(TransferCommand::Reject { config, id }) => {
            transfer_step(&config, &id, "reject")?
        }
        Command::Transfer(TransferCommand::Cancel { config, id }) => {
            transfer_step(&config, &id, "cancel")?
        }
        Command::Backup { config, out } => back_up(&config, &out)?,
        Command::Bundle(BundleCommand::Export {
            config,
            to,
            out,
            all,
        }) => export_bundle(&config, &to, &out, all)?,
        Command::Bundle(BundleCommand::Import { config, bundle }) => {
            import_bundle(&config, &bundle)?
        }
        Command::Verify {
            config,
            store,
            json,
            inventory,
        } => {
            let inventory = backup::Inventory::listed(inventory);
            let problems = verify(&config, store.as_deref(), json, inventory)?;
            if problems > 0 {
                std::process::exit(1);
            }
        }
        Command::Restore {
            config,
            backup,
            force,
        } => {
            let config = Config::load(&config)?;
            let done = amphi_node::backup::restore(&config, &backup, force)?;
            println!(
                "restored {} documents from {}{}; start the node: it fetches from its peers what was written after the backup, and writes as a new actor",
                done.documents,
                backup.display(),
                done.previous
                    .map(|p| format!(" (the store it replaced is kept as {})", p.display()))
                    .unwrap_or_default()
            );
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

/// The live store of `config`, which must exist (a backup or a check of a store that was
/// never created is a mistake, not an empty store).
fn live_store(config: &Config) -> anyhow::Result<PathBuf> {
    let path = config.data_dir.join(amphi_node::node::STORE_FILE);
    anyhow::ensure!(
        path.exists(),
        "no store at {} (has the node been started once?)",
        path.display()
    );
    Ok(path)
}

/// `amphi backup`: copies the store directly, or asks the running node to.
fn back_up(config: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: a backup never overwrites a file",
        out.display()
    );
    let out = std::path::absolute(out)?;
    let live = live_store(&config)?;
    let documents = match backup::open_offline(&config, &live) {
        Ok(repo) => repo.store().back_up_to(&out)?,
        Err(backup::OfflineError::NodeRunning) => {
            let reply = runtime()?.block_on(admin::post(
                &config,
                "/api/v1/backup",
                &serde_json::json!({ "path": out }),
            ))?;
            reply["documents"].as_u64().unwrap_or(0)
        }
        Err(e) => return Err(e.into()),
    };
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {documents} documents written to {} ({} KiB)",
        out.display(),
        bytes / 1024
    );
    Ok(())
}

/// `amphi bundle export`: made by the running node, or from the store directly.
fn export_bundle(
    config: &std::path::Path,
    to: &str,
    out: &std::path::Path,
    all: bool,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let to = OrgPath::parse(to)?;
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: choose a new file name",
        out.display()
    );
    let live = live_store(&config)?;
    let bytes = match backup::open_offline(&config, &live) {
        Ok(repo) => {
            let peers: Vec<OrgPath> = config.peers.iter().map(|p| p.org.clone()).collect();
            amphi_node::bundle::export(&repo, &to, &peers, all)?.bytes
        }
        Err(backup::OfflineError::NodeRunning) => {
            let path = format!("/api/v1/bundle?for={}&all={all}", to.as_str());
            runtime()?.block_on(admin::download(&config, &path))?
        }
        Err(e) => return Err(e.into()),
    };
    write_new(out, &bytes)?;
    println!(
        "bundle for {to} written to {} ({} KiB); carry it there and run `amphi bundle import`",
        out.display(),
        bytes.len().div_ceil(1024)
    );
    Ok(())
}

/// Writes `bytes` to a new file durably (synced, then its folder).
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        amphi_node::node::sync_folder(folder)?;
    }
    Ok(())
}

/// `amphi bundle import`: through the running node, or into the store directly.
fn import_bundle(config: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(
        meta.len() <= amphi_protocol::bundle::MAX_BUNDLE as u64,
        "{} is {} MiB, over the bundle limit",
        file.display(),
        meta.len() >> 20
    );
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let live = live_store(&config)?;
    let report = match backup::open_offline(&config, &live) {
        Ok(repo) => {
            let peers: Vec<OrgPath> = config.peers.iter().map(|p| p.org.clone()).collect();
            serde_json::to_value(amphi_node::bundle::import(&repo, &peers, &bytes)?)?
        }
        Err(backup::OfflineError::NodeRunning) => {
            runtime()?.block_on(admin::upload(&config, "/api/v1/bundle", bytes))?
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", report["summary"].as_str().unwrap_or("imported"));
    if let Some(refused) = report["refused"].as_object().filter(|r| !r.is_empty()) {
        for (reason, n) in refused {
            println!("  refused {n}: {reason} (kept in quarantine, see `amphi status`)");
        }
    }
    for c in report["certificates_refused"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  certificate refused: {}", c.as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `amphi verify`: checks the store directly, or through the running node; returns the
/// number of problems found (after printing them).
fn verify(
    config: &std::path::Path,
    store: Option<&std::path::Path>,
    json: bool,
    inventory: backup::Inventory,
) -> anyhow::Result<usize> {
    let config = Config::load(config)?;
    let path = match store {
        Some(p) => {
            anyhow::ensure!(p.exists(), "no backup at {}", p.display());
            p.to_owned()
        }
        None => live_store(&config)?,
    };
    let report = match backup::open_offline(&config, &path) {
        Ok(repo) => serde_json::to_value(backup::verify(&repo, inventory)?)?,
        Err(backup::OfflineError::NodeRunning) if store.is_none() => {
            let path = match inventory {
                backup::Inventory::List => "/api/v1/verify?inventory=true",
                backup::Inventory::Skip => "/api/v1/verify",
            };
            runtime()?.block_on(admin::get(&config, path))?
        }
        Err(e) => return Err(e.into()),
    };
    let problems = report["problems"].as_array().map_or(0, Vec::len);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in report["problems"].as_array().into_iter().flatten() {
            println!(
                "{}: {}",
                p["doc"].as_str().unwrap_or("?"),
                p["what"].as_str().unwrap_or("?")
            );
        }
        println!(
            "{}: {} documents, {} changes checked, {}",
            path.display(),
            report["documents"],
            report["changes"],
            if problems == 0 {
                "no problems".to_owned()
            } else {
                format!("{problems} problem(s)")
            }
        );
    }
    Ok(problems)
}

fn api_get(config: &std::path::Path, path: &str) -> anyhow::Result<serde_json::Value> {
    let config = Config::load(config)?;
    Ok(runtime()?.block_on(admin::get(&config, path))?)
}

fn api_post(
    config: &std::path::Path,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::load(config)?;
    Ok(runtime()?.block_on(admin::post(&config, path, body))?)
}

fn transfer_step(config: &std::path::Path, id: &str, step: &str) -> anyhow::Result<()> {
    let t = api_post(
        config,
        &format!("/api/v1/transfers/{id}/{step}"),
        &serde_json::json!({}),
    )?;
    println!(
        "{} {}",
        t["id"].as_str().unwrap_or("?"),
        t["state"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn print_json_or(json: bool, value: &serde_json::Value, table: fn(&serde_json::Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", table(value));
    }
}

/// The DER of the first certificate in a PEM file.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
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
