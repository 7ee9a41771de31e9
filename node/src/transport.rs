//! QUIC between offices: one endpoint per node, accepting children and dialing parents.
//!
//! Child offices dial their parent (so a village behind NAT works) and redial forever with
//! capped, jittered backoff: offices go offline for days. Every connection is mutual TLS
//! against the county CA; the peer's org comes from its verified certificate, and a dialed
//! peer must be the org the config expects.
//!
//! A certificate from the county CA is not enough to connect: an office accepts only its
//! neighbours (its parent, its direct children, the orgs named in its `[[peers]]`, and other
//! nodes of the same office, such as a mirror), at
//! most [`MAX_SESSIONS`] at a time. Others are refused right after the handshake, counted
//! by reason in status. At most [`MAX_CONNECTIONS`] accepted connections (handshaking or in
//! a session) exist at a time; more are refused before the handshake. Each accepted
//! connection runs in a task of the accept loop's `JoinSet`, which the loop drains when the
//! node stops: nothing outlives it. A session that panics ends only itself (logged and
//! counted), and a dialer goes on redialing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amphi_protocol::OrgPath;
use amphi_protocol::attest::CertId;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info, warn};

use crate::config::PeerConfig;
use crate::panics;
use crate::peer::{self, PeerLink};
use crate::pki::NodeIdentity;
use crate::repo::Repo;
use crate::status::{Direction, PeerState, Status};
use crate::tls;
use crate::trust::cert_id;

/// First wait before redialing.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Most sessions with offices that dialed this one, at a time; more are refused as `busy`.
pub const MAX_SESSIONS: usize = 64;
/// Most accepted connections at a time, handshakes included: a flood of handshakes cannot
/// grow the node's tasks without bound.
pub const MAX_CONNECTIONS: usize = MAX_SESSIONS + 32;
/// How long an accepted connection may take to finish its handshake: a half-open handshake
/// holds one of the [`MAX_CONNECTIONS`] for at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sessions get to end by themselves when the node stops, before they are aborted.
const DRAIN: Duration = Duration::from_secs(3);
/// QUIC application error code closing a refused connection (the reason says why).
pub const REFUSED: u32 = 1;

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
    /// Orgs named in the config's `[[peers]]`: they may connect, besides this office's
    /// parent and direct children.
    pub configured: Arc<Vec<OrgPath>>,
    /// Permits for sessions with offices that dialed this one ([`MAX_SESSIONS`]).
    pub sessions: Arc<Semaphore>,
    /// The live accepted connection of each office: one per office, the newest wins.
    /// Each office's accepted connection, with the order it arrived in.
    accepted: Arc<Mutex<HashMap<OrgPath, (u64, quinn::Connection)>>>,
}

impl Shared {
    /// What sessions share, for a node with these configured peers.
    pub fn new(
        repo: Arc<Repo>,
        status: Arc<Status>,
        shutdown: watch::Receiver<bool>,
        peers: &[PeerConfig],
    ) -> Shared {
        Shared {
            repo,
            status,
            shutdown,
            configured: Arc::new(peers.iter().map(|p| p.org.clone()).collect()),
            sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
            accepted: Arc::default(),
        }
    }

    /// Records `conn`, the `arrival`-th connection accepted, as `org`'s; returns the one to
    /// close: the older of the two, whichever finished its handshake first.
    fn replace_accepted(
        &self,
        org: &OrgPath,
        arrival: u64,
        conn: &quinn::Connection,
    ) -> Option<quinn::Connection> {
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        match accepted.get(org) {
            Some((newer, _)) if *newer > arrival => Some(conn.clone()),
            _ => accepted
                .insert(org.clone(), (arrival, conn.clone()))
                .map(|(_, old)| old),
        }
    }

    /// Forgets `conn` as `org`'s accepted connection; false if a newer one replaced it.
    fn forget_accepted(&self, org: &OrgPath, conn: &quinn::Connection) -> bool {
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        let current = accepted
            .get(org)
            .is_some_and(|(_, c)| c.stable_id() == conn.stable_id());
        if current {
            accepted.remove(org);
        }
        current
    }
}

/// Why a connection was refused.
#[derive(Debug)]
enum Refused {
    /// Its certificate is valid but names neither this office's parent, nor a direct child,
    /// nor an org in `[[peers]]`.
    NotNeighbour,
    /// [`MAX_SESSIONS`] sessions are running.
    Busy,
    /// Its certificate was revoked.
    Revoked(String),
    /// Its certificate could not be read or admitted.
    BadCertificate(String),
}

impl Refused {
    /// Reason code, as counted in status and `/metrics`.
    fn code(&self) -> &'static str {
        match self {
            Refused::NotNeighbour => "not_neighbour",
            Refused::Busy => "busy",
            Refused::Revoked(_) => "revoked",
            Refused::BadCertificate(_) => "bad_certificate",
        }
    }

    /// What the peer is told when its connection is closed.
    fn reason(&self) -> &'static [u8] {
        match self {
            Refused::NotNeighbour => b"not a neighbour of this office",
            Refused::Busy => b"busy: too many sessions, try later",
            Refused::Revoked(_) => b"certificate revoked",
            Refused::BadCertificate(_) => b"certificate not admitted",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Revoked(why) | Refused::BadCertificate(why) => f.write_str(why),
            other => f.write_str(&String::from_utf8_lossy(other.reason())),
        }
    }
}

/// True when `peer` may connect to office `me`: its parent, a direct child, or an org the
/// config names.
pub fn is_neighbour(me: &OrgPath, peer: &OrgPath, configured: &[OrgPath]) -> bool {
    // Another node of this same office (a mirror, or a replacement being brought up) has no
    // authority the office lacks, and is how a new mirror takes in the office's documents.
    peer == me
        || me.parent().as_ref() == Some(peer)
        || peer.parent().as_ref() == Some(me)
        || configured.contains(peer)
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

/// Accepts connections from other offices until shutdown, then lets their sessions end
/// (aborting those that do not within [`DRAIN`]) before it returns.
pub async fn accept_loop(endpoint: quinn::Endpoint, shared: Shared) {
    let mut shutdown = shared.shutdown.clone();
    let mut arrivals: u64 = 0;
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        if connections.len() >= MAX_CONNECTIONS {
            let remote = incoming.remote_address();
            warn!(%remote, "refused connection: {MAX_CONNECTIONS} connections already");
            shared
                .status
                .count_refused_connection(None, &remote.to_string(), "busy");
            incoming.refuse();
            continue;
        }
        arrivals += 1;
        connections.spawn(accept_one(incoming, arrivals, shared.clone()));
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.shutdown().await;
    }
}

/// One accepted connection: handshake, admission as a neighbour, then its session.
async fn accept_one(incoming: quinn::Incoming, arrival: u64, shared: Shared) {
    let remote = incoming.remote_address();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
    let conn = match handshake.unwrap_or(Err(quinn::ConnectionError::TimedOut)) {
        Ok(c) => c,
        Err(e) => {
            warn!(%remote, "refused connection: {e}");
            shared
                .status
                .count_refused_connection(None, &remote.to_string(), "handshake");
            return;
        }
    };
    let refuse = |org: Option<&OrgPath>, refused: Refused| {
        let org = org.map(ToString::to_string);
        warn!(%remote, org = ?org, reason = refused.code(), "refused connection: {refused}");
        conn.close(REFUSED.into(), refused.reason());
        shared
            .status
            .count_refused_connection(org.as_deref(), &remote.to_string(), refused.code());
    };
    let (org, cert, der) = match identify(&conn, &shared) {
        Ok(peer) => peer,
        Err(refused) => return refuse(None, refused),
    };
    if !is_neighbour(shared.repo.me(), &org, &shared.configured) {
        return refuse(Some(&org), Refused::NotNeighbour);
    }
    let Ok(_permit) = shared.sessions.clone().try_acquire_owned() else {
        return refuse(Some(&org), Refused::Busy);
    };
    if let Err(e) = shared.repo.learn_certificate(&der) {
        return refuse(Some(&org), Refused::BadCertificate(e.to_string()));
    }
    // A newer connection from an office replaces its older one (say, after the
    // office restarted), so one office holds at most one session here.
    if let Some(old) = shared.replace_accepted(&org, arrival, &conn) {
        old.close(
            REFUSED.into(),
            b"replaced by a newer connection from this office",
        );
    }
    let link = PeerLink {
        org: org.clone(),
        addr: remote.to_string(),
        direction: Direction::Accepted,
        cert,
    };
    let span = tracing::error_span!("conn", peer = %org);
    serve_session(conn, link, shared).instrument(span).await;
}

/// Runs `session` to its end in the caller's task: a panic inside ends only the session
/// and comes back as an error, logged with the peer (the panic hook counted it).
async fn contained<F>(peer: &str, session: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), peer::SessionEnd>>,
{
    match panics::caught(session).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(why) => {
            tracing::error!(peer, "session panicked: {why}");
            Err(format!("session panicked: {why}"))
        }
    }
}

/// Runs a session until it ends, then closes the connection and shows the
/// peer as no longer connected. A session that panics is logged with its peer (and counted
/// by the panic hook) like any other failed session.
async fn serve_session(conn: quinn::Connection, link: PeerLink, shared: Shared) {
    let peer_org = link.org.clone();
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
            // Otherwise say what QUIC saw (timed out, reset, …): a bare "connection lost"
            // left a lost session at 20,000 members unexplained.
            Some(other) if !e.contains(&other.to_string()) => format!("{e}: {other}"),
            _ => e,
        }
    });
    match &error {
        Some(e) => warn!("session ended: {e}"),
        None => info!("session ended"),
    }
    conn.close(0u32.into(), b"bye");
    // A connection replaced by a newer one from the same office leaves the status to it.
    if direction == Direction::Accepted && !shared.forget_accepted(&peer_org, &conn) {
        return;
    }
    shared.status.update(&org, "", direction, |p| {
        p.state = if direction == Direction::Dialed {
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
            .update(peer.org.as_str(), &peer.addr, Direction::Dialed, |p| {
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
                        direction: Direction::Dialed,
                        cert,
                    };
                    serve_session(conn, link, shared.clone()).await;
                }
                Err(e) => {
                    shared
                        .status
                        .update(peer.org.as_str(), &peer.addr, Direction::Dialed, |p| {
                            p.state = PeerState::Connecting;
                            p.last_error = Some(e.to_string());
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

/// After a handshake: the peer's org, certificate id and certificate, or why it is refused
/// (no valid certificate, or a revoked one).
fn identify(
    conn: &quinn::Connection,
    shared: &Shared,
) -> Result<(OrgPath, CertId, Vec<u8>), Refused> {
    let bad = |e: tls::TlsError| Refused::BadCertificate(e.to_string());
    let org = tls::peer_org(conn).map_err(bad)?;
    let der = tls::peer_cert(conn).map_err(bad)?;
    let cert = cert_id(&der);
    if let Some(at) = shared.repo.trust().revoked_at(&cert) {
        return Err(Refused::Revoked(format!(
            "the certificate of {org} was revoked (at unix time {at})"
        )));
    }
    Ok((org, cert, der.to_vec()))
}

/// Why dialing a configured peer failed (shown in status as the link's last error).
#[derive(Debug, thiserror::Error)]
enum DialError {
    /// The peer's host name does not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as configured.
        addr: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The peer's host name resolves to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// QUIC could not start a connection (a bad address or name).
    #[error("cannot dial {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// What quinn said.
        source: quinn::ConnectError,
    },
    /// No handshake within [`DIAL_TIMEOUT`].
    #[error("{0} did not answer within 10 s")]
    Timeout(SocketAddr),
    /// The handshake failed (TLS refused either way, or the link broke).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The address dialed.
        addr: SocketAddr,
        /// What quinn said.
        source: quinn::ConnectionError,
    },
    /// The peer's certificate is unreadable or revoked.
    #[error("{0}")]
    Refused(Refused),
    /// The certificate names another office than the config says.
    #[error("{addr} is {found}, but the config expects {expected}")]
    WrongOrg {
        /// The address dialed.
        addr: SocketAddr,
        /// The office its certificate names.
        found: OrgPath,
        /// The office the config names.
        expected: OrgPath,
    },
    /// Its certificate could not be admitted or recorded.
    #[error("certificate not admitted: {0}")]
    Certificate(#[source] crate::repo::LearnError),
}

/// How long a dial waits for the handshake.
const DIAL_TIMEOUT: Duration = HANDSHAKE_TIMEOUT;

async fn dial(
    endpoint: &quinn::Endpoint,
    peer: &PeerConfig,
    shared: &Shared,
) -> Result<(quinn::Connection, CertId), DialError> {
    let addr = tokio::net::lookup_host(&peer.addr)
        .await
        .map_err(|source| DialError::Resolve {
            addr: peer.addr.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| DialError::NoAddress(peer.addr.clone()))?;
    let connecting = endpoint
        .connect(addr, &peer.org.dns_name())
        .map_err(|source| DialError::Connect { addr, source })?;
    let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| DialError::Timeout(addr))?
        .map_err(|source| DialError::Handshake { addr, source })?;
    let (org, cert, der) = match identify(&conn, shared) {
        Ok(peer) => peer,
        Err(refused) => {
            conn.close(REFUSED.into(), refused.reason());
            return Err(DialError::Refused(refused));
        }
    };
    if org != peer.org {
        conn.close(REFUSED.into(), b"unexpected org");
        return Err(DialError::WrongOrg {
            addr,
            found: org,
            expected: peer.org.clone(),
        });
    }
    if let Err(e) = shared.repo.learn_certificate(&der) {
        conn.close(
            REFUSED.into(),
            Refused::BadCertificate(String::new()).reason(),
        );
        return Err(DialError::Certificate(e));
    }
    Ok((conn, cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

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

    #[test]
    fn neighbours_are_the_parent_the_children_and_configured_peers() {
        let town = org("hoboksar/chagantolgay");
        let none: &[OrgPath] = &[];
        assert!(is_neighbour(&town, &org("hoboksar"), none));
        assert!(is_neighbour(
            &town,
            &org("hoboksar/chagantolgay/bayin"),
            none
        ));
        for stranger in [
            "hoboksar/hoboksar-town",
            "hoboksar/hoboksar-town/xingfu",
            "hoboksar/chagantolgay/bayin/team-1",
        ] {
            assert!(!is_neighbour(&town, &org(stranger), none), "{stranger}");
        }
        assert!(is_neighbour(&town, &town, none), "a mirror of this office");
        let configured = [org("hoboksar/hoboksar-town")];
        assert!(is_neighbour(
            &town,
            &org("hoboksar/hoboksar-town"),
            &configured
        ));
    }
}
