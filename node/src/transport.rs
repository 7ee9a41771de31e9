//! QUIC between offices: one endpoint per node, accepting children and dialing parents.
//!
//! Child offices dial their parent (so a village behind NAT works) and redial forever with
//! capped, jittered backoff: offices go offline for days. Every connection is mutual TLS
//! against the county CA; the peer's org comes from its verified certificate, and a dialed
//! peer must be the org the config expects.
//!
//! Each session runs in its own task: a session that panics ends only itself (logged and
//! counted), and a dialer goes on redialing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amphi_protocol::OrgPath;
use amphi_protocol::attest::CertId;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::config::PeerConfig;
use crate::panics;
use crate::peer::{self, PeerLink};
use crate::pki::NodeIdentity;
use crate::repo::Repo;
use crate::status::{PeerState, Status};
use crate::tls;
use crate::trust::cert_id;

/// First wait before redialing.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a session needs from the node.
#[derive(Clone)]
pub struct Shared {
    /// The documents.
    pub repo: Arc<Repo>,
    /// Sync status.
    pub status: Arc<Status>,
    /// Fires on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// Binds the node's QUIC endpoint (server and client in one).
pub fn endpoint(
    identity: &NodeIdentity,
    listen: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let mut endpoint =
        quinn::Endpoint::server(tls::server_config(identity)?, listen).map_err(|source| {
            TransportError::Bind {
                addr: listen,
                source,
            }
        })?;
    endpoint.set_default_client_config(tls::client_config(identity)?);
    Ok(endpoint)
}

/// Accepts connections from other offices until shutdown.
pub async fn accept_loop(endpoint: quinn::Endpoint, shared: Shared) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.changed() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    warn!(%remote, "refused connection: {e}");
                    return;
                }
            };
            let (org, cert) = match admit_peer(&conn, &shared) {
                Ok(peer) => peer,
                Err(e) => {
                    warn!(%remote, "refused connection: {e}");
                    conn.close(1u32.into(), b"refused");
                    return;
                }
            };
            let link = PeerLink {
                org: org.clone(),
                addr: remote.to_string(),
                direction: "accepted",
                cert,
            };
            let span = tracing::error_span!("conn", peer = %org);
            serve_session(conn, link, shared).instrument(span).await;
        });
    }
}

/// Runs `session` in a task of its own and waits for it: a panic inside ends only that
/// task and comes back as an error, logged with the peer (the panic hook counted it).
/// If the caller is aborted (the node stops), the session goes with it.
async fn contained<F>(peer: &str, session: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), peer::SessionEnd>> + Send + 'static,
{
    let task = tokio::spawn(session.in_current_span());
    let _abort = panics::AbortGuard(task.abort_handle());
    match task.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) if e.is_panic() => {
            let why = panics::message(&*e.into_panic());
            tracing::error!(peer, "session panicked: {why}");
            Err(format!("session panicked: {why}"))
        }
        Err(e) => Err(format!("session stopped: {e}")),
    }
}

/// Runs a session in its own task until it ends, then closes the connection and shows the
/// peer as no longer connected. A session that panics is logged with its peer (and counted
/// by the panic hook) like any other failed session.
async fn serve_session(conn: quinn::Connection, link: PeerLink, shared: Shared) {
    let org = link.org.to_string();
    let direction = link.direction;
    let session = peer::run(
        conn.clone(),
        link,
        shared.repo.clone(),
        shared.status.clone(),
        shared.shutdown.clone(),
    );
    let error = contained(&org, session).await.err().map(|e| {
        // Say why, when the peer closed the connection (say, it refused this office).
        match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close)) => format!(
                "{e}: the peer closed the connection: {}",
                String::from_utf8_lossy(&close.reason)
            ),
            _ => e,
        }
    });
    match &error {
        Some(e) => warn!("session ended: {e}"),
        None => info!("session ended"),
    }
    conn.close(0u32.into(), b"bye");
    shared.status.update(&org, "", direction, |p| {
        p.state = if direction == "dialed" {
            PeerState::Connecting
        } else {
            PeerState::Disconnected
        };
        p.connected_since = None;
        if error.is_some() {
            p.last_error = error;
        }
    });
}

/// Dials `peer` and keeps a session with it until shutdown, redialing after any failure
/// with backoff from 250 ms up to `max_backoff`.
pub async fn dial_loop(
    endpoint: quinn::Endpoint,
    peer: PeerConfig,
    max_backoff: Duration,
    shared: Shared,
) {
    let span = tracing::error_span!("conn", peer = %peer.org);
    async move {
        let mut shutdown = shared.shutdown.clone();
        let mut backoff = BACKOFF_MIN;
        shared
            .status
            .update(peer.org.as_str(), &peer.addr, "dialed", |p| {
                p.state = PeerState::Connecting
            });
        loop {
            let started = Instant::now();
            let dialed = tokio::select! {
                _ = shutdown.changed() => return,
                dialed = dial(&endpoint, &peer, &shared) => dialed,
            };
            match dialed {
                Ok((conn, cert)) => {
                    let link = PeerLink {
                        org: peer.org.clone(),
                        addr: peer.addr.clone(),
                        direction: "dialed",
                        cert,
                    };
                    serve_session(conn, link, shared.clone()).await;
                }
                Err(e) => {
                    shared
                        .status
                        .update(peer.org.as_str(), &peer.addr, "dialed", |p| {
                            p.state = PeerState::Connecting;
                            p.last_error = Some(e.clone());
                        });
                    tracing::debug!("dial failed: {e}");
                }
            }
            if started.elapsed() > STABLE_SESSION {
                backoff = BACKOFF_MIN;
            }
            let jitter = rand::random_range(0.8..1.2);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }
    .instrument(span)
    .await
}

/// After a handshake: the peer's org and certificate id, or why it is refused (no valid
/// certificate, or a revoked one). Its certificate is remembered for verifying its changes.
fn admit_peer(conn: &quinn::Connection, shared: &Shared) -> Result<(OrgPath, CertId), String> {
    let org = tls::peer_org(conn).map_err(|e| e.to_string())?;
    let der = tls::peer_cert(conn).map_err(|e| e.to_string())?;
    let cert = cert_id(&der);
    if let Some(at) = shared.repo.trust().revoked_at(&cert) {
        return Err(format!(
            "the certificate of {org} was revoked (at unix time {at})"
        ));
    }
    shared.repo.learn_certificate(&der)?;
    Ok((org, cert))
}

async fn dial(
    endpoint: &quinn::Endpoint,
    peer: &PeerConfig,
    shared: &Shared,
) -> Result<(quinn::Connection, CertId), String> {
    let addr = tokio::net::lookup_host(&peer.addr)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", peer.addr))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", peer.addr))?;
    let connecting = endpoint
        .connect(addr, &peer.org.dns_name())
        .map_err(|e| format!("cannot dial {addr}: {e}"))?;
    let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| format!("{addr} did not answer within 10 s"))?
        .map_err(|e| format!("handshake with {addr} failed: {e}"))?;
    let (org, cert) = match admit_peer(&conn, shared) {
        Ok(peer) => peer,
        Err(e) => {
            conn.close(1u32.into(), b"refused");
            return Err(e);
        }
    };
    if org != peer.org {
        conn.close(1u32.into(), b"unexpected org");
        return Err(format!(
            "{addr} is {org}, but the config expects {}",
            peer.org
        ));
    }
    Ok((conn, cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_session_ends_only_itself_and_is_counted() {
        panics::install();
        let before = panics::count();
        let error = contained("hoboksar/t1", async { panic!("hostile input") })
            .await
            .unwrap_err();
        assert_eq!(error, "session panicked: hostile input");
        assert!(panics::count() > before, "the panic is counted");
        let fine = contained("hoboksar/t1", async { Ok(()) }).await;
        assert_eq!(fine, Ok(()), "and the caller goes on");
    }
}
