//! What admins see of sync: per-peer state, pending documents, refusals.
//!
//! Peer sessions and the repo report here; the API and `/metrics` read from here.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Connection state of a peer, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// A session is up.
    Connected,
    /// Dialing (or waiting to redial).
    Connecting,
    /// Not connected and not dialing (an inbound peer that went away).
    Disconnected,
}

/// Which end opened a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node dialed it (a configured peer or the parent).
    Dialed,
    /// It dialed this node.
    Accepted,
}

/// One peer as shown in `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The peer's org.
    pub org: String,
    /// Its address.
    pub addr: String,
    /// `connected`, `connecting`, `disconnected`.
    pub state: PeerState,
    /// `dialed` (configured) or `accepted` (it dialed us).
    pub direction: Direction,
    /// When the current session started.
    pub connected_since: Option<String>,
    /// When anything was last heard from the peer.
    pub last_seen: Option<String>,
    /// When the peer was last known to be fully in sync.
    pub last_sync_at: Option<String>,
    /// Documents not yet known to be in sync with the peer.
    pub docs_pending: usize,
    /// Sync messages received.
    pub messages_in: u64,
    /// Sync messages sent.
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Changes from this peer refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Document ids the peer claimed that this node lacks, ignored in the current session
    /// because too many were pending (see `amphi_protocol::session::MAX_UNKNOWN`).
    pub unknown_ids_ignored: u64,
    /// Change notices the sessions with this peer missed since the node started (each miss
    /// makes the two offices reconcile their whole inventories again).
    pub notices_missed: u64,
    /// Last connection error, if any.
    pub last_error: Option<String>,
    /// Round-trip time of the connection, milliseconds.
    pub rtt_ms: Option<f64>,
}

impl PeerStatus {
    fn new(org: &str, addr: &str, direction: Direction) -> PeerStatus {
        PeerStatus {
            org: org.to_owned(),
            addr: addr.to_owned(),
            state: PeerState::Disconnected,
            direction,
            connected_since: None,
            last_seen: None,
            last_sync_at: None,
            docs_pending: 0,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            refused: BTreeMap::new(),
            unknown_ids_ignored: 0,
            notices_missed: 0,
            last_error: None,
            rtt_ms: None,
        }
    }
}

/// The node's live sync status.
#[derive(Debug, Default)]
pub struct Status {
    peers: Mutex<BTreeMap<String, PeerStatus>>,
    refused: Mutex<BTreeMap<String, u64>>,
    counters: Mutex<Counters>,
    refused_connections: Mutex<BTreeMap<String, u64>>,
    last_refused: Mutex<VecDeque<RefusedConnection>>,
    /// Signalled when a peer's state or pending count changes (the fleet reporter listens).
    pub changed: tokio::sync::Notify,
}

/// How many refused connections [`Status::last_refused`] keeps.
pub const LAST_REFUSED: usize = 16;

/// A connection refused after (or during) the TLS handshake, as shown in status.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedConnection {
    /// The org its certificate named, if it got that far.
    pub org: Option<String>,
    /// Its address.
    pub addr: String,
    /// Reason code (`not_neighbour`, `busy`, `revoked`, `bad_certificate`, `handshake`).
    pub reason: &'static str,
    /// When (RFC 3339).
    pub at: String,
}

/// Node-wide counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Changes applied from peers.
    pub changes_applied: u64,
    /// Sync rounds (one incoming message handled and answered), by latency bucket.
    pub round_buckets: [u64; ROUND_BUCKETS.len()],
    /// Sync rounds in all.
    pub rounds: u64,
    /// Sum of sync round latencies, seconds.
    pub round_seconds: f64,
}

/// Upper bounds (seconds) of the sync round latency histogram.
pub const ROUND_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// The current time, RFC 3339, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time formats")
}

impl Status {
    /// Runs `f` on the entry for `org`, creating it if needed.
    pub fn update(
        &self,
        org: &str,
        addr: &str,
        direction: Direction,
        f: impl FnOnce(&mut PeerStatus),
    ) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = peers
            .entry(org.to_owned())
            .or_insert_with(|| PeerStatus::new(org, addr, direction));
        if !addr.is_empty() {
            entry.addr = addr.to_owned();
        }
        // Only a change of connection state prompts an early fleet report. (Pending counts
        // go up and down with every sync round; reporting on those made two nodes of one
        // office, which write one status document, prompt each other once a second.)
        let before = entry.state;
        f(entry);
        if before != entry.state {
            self.changed.notify_one();
        }
    }

    /// Records one sync round: `applied` changes, taking `seconds`.
    pub fn count_round(&self, applied: usize, seconds: f64) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.changes_applied += applied as u64;
        c.rounds += 1;
        c.round_seconds += seconds;
        for (i, bound) in ROUND_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                c.round_buckets[i] += 1;
            }
        }
    }

    /// A snapshot of the node-wide counters.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records refusals by reason code (node-wide and for `peer`).
    pub fn count_refused(&self, peer: Option<&str>, codes: &[&str]) {
        if codes.is_empty() {
            return;
        }
        let mut all = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        for c in codes {
            *all.entry((*c).to_owned()).or_default() += 1;
        }
        drop(all);
        if let Some(peer) = peer {
            self.update(peer, "", Direction::Accepted, |p| {
                for c in codes {
                    *p.refused.entry((*c).to_owned()).or_default() += 1;
                }
            });
        }
    }

    /// A snapshot of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Records a refused connection: counted by reason, and kept among the last
    /// [`LAST_REFUSED`].
    pub fn count_refused_connection(&self, org: Option<&str>, addr: &str, reason: &'static str) {
        *self
            .refused_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason.to_owned())
            .or_default() += 1;
        let mut last = self
            .last_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.len() == LAST_REFUSED {
            last.pop_front();
        }
        last.push_back(RefusedConnection {
            org: org.map(str::to_owned),
            addr: addr.to_owned(),
            reason,
            at: now_rfc3339(),
        });
    }

    /// Refused connections since start, by reason.
    pub fn refused_connections(&self) -> BTreeMap<String, u64> {
        self.refused_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last [`LAST_REFUSED`] refused connections, oldest first.
    pub fn last_refused(&self) -> Vec<RefusedConnection> {
        self.last_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Refused changes since start, by reason.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
