//! Starting and stopping a whole node: identity, store, QUIC endpoint, dialers, admin API.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amphi_protocol::OrgPath;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api;
use crate::config::Config;
use crate::panics::supervise;
use crate::pki::{NodeIdentity, PkiError};
use crate::repo::{Repo, WriteError};
use crate::state::ApiState;
use crate::status::Status;
use crate::store::{Store, StoreError};
use crate::transport::{self, Shared, TransportError};
use crate::trust::{Signer, Trust, TrustError, store_actor};

/// The admin token's file name inside the data dir.
pub const TOKEN_FILE: &str = "admin.token";
/// The store's file name inside the data dir.
pub const STORE_FILE: &str = "amphi.redb";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificate, key or CA could not be loaded or do not fit together.
    #[error(transparent)]
    Identity(#[from] PkiError),
    /// The data dir or token could not be prepared.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA or this node's key could not be used for signing and verifying.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// This node's certificate could not be recorded.
    #[error("cannot record this node's certificate: {0}")]
    RecordCertificate(#[source] crate::repo::LearnError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The first write (this office's roster) failed.
    #[error("cannot initialise the store: {0}")]
    Init(#[from] WriteError),
    /// QUIC could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The admin port could not be bound.
    #[error("cannot listen on {addr} (admin HTTP): {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    /// This office.
    pub org: OrgPath,
    /// The bound QUIC address.
    pub quic_addr: SocketAddr,
    /// The bound admin HTTP address.
    pub admin_addr: SocketAddr,
    /// The admin token.
    pub token: String,
    /// The node's short id.
    pub node_id: String,
    shutdown: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
    tasks: JoinSet<()>,
    repo: Arc<Repo>,
}

/// Reads the admin token, creating it (mode 0600) on first start.
pub fn admin_token(data_dir: &Path) -> Result<String, std::io::Error> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Makes the entries of folder `dir` (files created or renamed in it) durable.
pub fn sync_folder(dir: &Path) -> Result<(), std::io::Error> {
    std::fs::File::open(dir)?.sync_all()
}

/// The office's documents over `store`, with the node's key and everything it trusts (the
/// CA, its own certificate, the certificates and revocations the store holds). Writes
/// nothing but the node's own certificate.
pub fn open_repo(identity: &NodeIdentity, store: Store) -> Result<Repo, StartError> {
    let trust = Arc::new(Trust::new(&identity.ca_der)?);
    let signer = Signer::new(identity)?;
    let actor = store_actor(identity.actor_id(), &store.incarnation());
    trust.admit(&identity.cert_der)?;
    let repo = Repo::new(store, identity.org.clone(), actor, signer, trust);
    repo.load_trust()?;
    repo.learn_certificate(&identity.cert_der)
        .map_err(StartError::RecordCertificate)?;
    Ok(repo)
}

impl Node {
    /// Starts a node from its config.
    pub async fn start(config: &Config) -> Result<Node, StartError> {
        crate::panics::install();
        let identity = NodeIdentity::load(&config.cert, &config.key, &config.ca)?;
        let org = identity.org.clone();
        let data_err = |source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(data_err)?;
        let token = admin_token(&config.data_dir).map_err(data_err)?;
        let store = Store::open_or_create(&config.data_dir.join(STORE_FILE), org.as_str())?;
        // The token and the store may have just been created: their names live in the data
        // dir, and the data dir's in its parent. Without this a power cut right after the
        // first start could lose them though their contents were synced.
        sync_folder(&config.data_dir).map_err(data_err)?;
        if let Some(parent) = config
            .data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            sync_folder(parent).map_err(data_err)?;
        }
        let status = Arc::new(Status::default());
        let repo = Arc::new(
            open_repo(&identity, store)?.with_chained_signatures(config.chained_signatures),
        );
        repo.ensure_own_roster()?;

        let endpoint = transport::endpoint(&identity, config.listen)?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Shared::new(
            repo.clone(),
            status.clone(),
            shutdown_rx.clone(),
            &config.peers,
        );
        // Long-lived tasks are restarted if they panic; sessions run inside them.
        let mut tasks = JoinSet::new();
        {
            let (endpoint, shared) = (endpoint.clone(), shared.clone());
            tasks.spawn(supervise("accept", shutdown_rx.clone(), move || {
                transport::accept_loop(endpoint.clone(), shared.clone())
            }));
        }
        let max_backoff = Duration::from_millis(config.reconnect_max_ms.max(250));
        for peer in &config.peers {
            let (endpoint, peer, shared) = (endpoint.clone(), peer.clone(), shared.clone());
            tasks.spawn(supervise("dial", shutdown_rx.clone(), move || {
                transport::dial_loop(endpoint.clone(), peer.clone(), max_backoff, shared.clone())
            }));
        }

        if config.status_interval_ms > 0 {
            let (repo, status, node_id) = (repo.clone(), status.clone(), identity.node_id());
            let interval = Duration::from_millis(config.status_interval_ms.max(100));
            let stop = shutdown_rx.clone();
            tasks.spawn(supervise(
                "fleet reporter",
                shutdown_rx.clone(),
                move || {
                    crate::fleet::reporter(
                        repo.clone(),
                        status.clone(),
                        node_id.clone(),
                        interval,
                        stop.clone(),
                    )
                },
            ));
        }

        let listener = tokio::net::TcpListener::bind(config.admin)
            .await
            .map_err(|source| StartError::Admin {
                addr: config.admin,
                source,
            })?;
        let admin_addr = listener.local_addr().map_err(|source| StartError::Admin {
            addr: config.admin,
            source,
        })?;
        let cert_expires = identity
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Translations of the dashboard's labels the office added (DATA_DIR/lang/*.txt); the
        // first node started in a process decides (one per process outside tests).
        crate::dashboard::load_translations(&config.data_dir.join("lang"));
        let state = ApiState {
            repo: repo.clone(),
            status,
            token: token.clone().into(),
            node_id: identity.node_id().into(),
            cert_expires: cert_expires.into(),
            store_path: config.data_dir.join(STORE_FILE).into(),
            peers: config.peers.iter().map(|p| p.org.clone()).collect(),
            fleet_stale_after: Duration::from_millis(config.fleet_stale_after_ms),
        };
        let mut stop = shutdown_rx;
        tasks.spawn(async move {
            let serve =
                axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                });
            if let Err(e) = serve.await {
                tracing::error!("admin API stopped: {e}");
            }
        });
        tracing::info!(%org, %quic_addr, %admin_addr, "node started");
        Ok(Node {
            org,
            quic_addr,
            admin_addr,
            token,
            node_id: identity.node_id(),
            shutdown,
            endpoint,
            tasks,
            repo,
        })
    }

    /// The node's documents (for in-process callers such as the demo).
    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Stops the node: sessions end, the endpoint closes, and the store is released (so the
    /// same data dir can be opened again in this process). Every task the node started runs
    /// inside one of its top-level tasks, so once those are joined (or aborted after 5 s and
    /// joined) nothing else holds the store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(0u32.into(), b"shutting down");
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        });
        if ended.await.is_err() {
            self.tasks.shutdown().await;
        }
        // Closing connections drain for a few round trips; the UDP port is free after that.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        // An admin API connection or a delivery on the blocking pool may drop its handle on
        // the store a moment after it ended: wait (bounded) for them, so that a stopped
        // node's store can be opened at once (`amphi verify`, a restart). Without the wait a
        // cluster test's `open_store` right after a stop failed with "database already open".
        let released = tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&self.repo) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        if released.await.is_err() {
            let holders = Arc::strong_count(&self.repo) - 1;
            tracing::warn!(holders, "the store is still held after shutdown");
        }
    }
}
