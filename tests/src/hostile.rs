//! A hostile peer for tests: an attacker that holds one valid node certificate from the
//! county CA and writes any bytes it likes, over real QUIC, to a running office.
//!
//! The pieces, from the outside in:
//!
//! - **Who the attacker is.** [`issue_identity`] issues a fresh node certificate for any org
//!   from the county's test CA; [`crate::Office::identity`] hands over an existing office's
//!   certificate and key (a compromised office).
//! - **Talking to an office.** [`HostilePeer::connect`] dials an office's QUIC address with
//!   that identity exactly as `amphi_node::transport` does, opens the session's stream and
//!   says hello; then [`HostilePeer::send`] writes any [`Frame`],
//!   [`HostilePeer::send_raw`] any bytes (a lying length prefix, half a frame, garbage), and
//!   [`HostilePeer::recv`] reads what the office answers, with a timeout, telling apart an
//!   answer, silence, the end of the stream and the office closing the connection
//!   ([`Closure`], with its code and reason).
//! - **Sync messages, byte by byte.** [`RawSyncMessage`] writes automerge 0.12's sync
//!   message format directly, so a test can send what automerge itself would never
//!   produce: a [`RawBloom`] with `bits_per_entry = 0` or four billion probes, thousands of
//!   heads, a message with an unknown version byte or trailing bytes.
//! - **Changes, byte by byte.** [`ChangeBuilder`] makes an automerge change with any actor,
//!   seq, start op, dependencies, time, author claim and operations (objects, keys and
//!   predecessors that need not exist), through automerge's legacy `ExpandedChange`;
//!   [`rename`] is the honest change most tests start from (a home office renaming its member).
//!   [`Chunk`] writes storage chunks by hand: a change, a document, a compressed change, and
//!   a compressed change whose DEFLATE body inflates to gigabytes ([`Chunk::deflate_bomb`]).
//! - **Signatures.** [`sign`] makes the [`Attestation`] an office expects beside a change,
//!   with the identity's real key.
//!
//! A story: a compromised Bayin office fetches a case file, forges a change, and sends it.
//! ```no_run
//! # async fn story(county: &amphi_cluster_tests::County, id: &amphi_protocol::DocId) {
//! use amphi_cluster_tests::hostile::{self, ChangeBuilder, HostilePeer, RawSyncMessage};
//! use std::time::Duration;
//! let bayin = county.office("bayin").identity();
//! let mut peer = HostilePeer::connect(&bayin, county.office("chagantolgay")).await.unwrap();
//! let mut doc = peer.fetch(id, Duration::from_secs(10)).await.unwrap();
//! let change = ChangeBuilder::following(&mut doc, &bayin).build();
//! let message = RawSyncMessage::carrying(&doc.get_heads(), [&change]).encode();
//! peer.send_sync(id, message, vec![hostile::sign(&bayin, &change)]).await.unwrap();
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::Path;
use std::time::Duration;

use amphi_node::pki::{self, NodeIdentity};
use amphi_node::tls;
use amphi_node::trust::Signer;
use amphi_protocol::attest::Attestation;
use amphi_protocol::session::PeerSession;
use amphi_protocol::wire::{DecodeError, Frame, FrameDecoder};
use amphi_protocol::{DocId, OrgPath, casefile, gate};
use automerge::legacy::{self, ObjectId, OpId, OpType, SortedVec};
use automerge::sync::{self, SyncDoc};
use automerge::{
    ActorId, AutoCommit, Change, ChangeHash, ExpandedChange, ObjId, ReadDoc, ScalarValue,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{County, Office};

/// Why the hostile peer could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    /// The identity cannot be used as a TLS client.
    #[error("the identity cannot be used for TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The client endpoint could not be bound.
    #[error("cannot bind a UDP socket on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    /// quinn refused to start the connection (bad server name, endpoint stopping).
    #[error("cannot dial {addr}: {source}")]
    Dial {
        /// The office's QUIC address.
        addr: SocketAddr,
        /// Why.
        source: quinn::ConnectError,
    },
    /// The QUIC or TLS handshake failed, or the connection was lost.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to the stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The office did not answer as expected.
    #[error("receive: {0}")]
    Recv(#[from] RecvError),
    /// Nothing happened in time.
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, &'static str),
    /// The office sent a sync message automerge cannot read or apply.
    #[error("the office sent an unusable sync message: {0}")]
    Automerge(String),
    /// The office sent another frame than the one the protocol calls for.
    #[error("unexpected frame from the office: {0}")]
    Unexpected(String),
}

/// Why [`HostilePeer::recv`] returned no frame.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecvError {
    /// Nothing complete arrived before the timeout (the office may still be talking).
    #[error("no frame within the timeout")]
    Timeout,
    /// The connection is closed; how and why.
    #[error("the connection closed: {0}")]
    Closed(Closure),
    /// The office finished its side of the stream cleanly.
    #[error("the office finished the stream")]
    Finished,
    /// The office reset its side of the stream with this code.
    #[error("the office reset the stream with code {0}")]
    Reset(u64),
    /// The office sent bytes that are not a frame (the bytes are dropped).
    #[error("the office sent an invalid frame: {0}")]
    Invalid(DecodeError),
}

/// How a QUIC connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Who closed it and how: `application` (a `CONNECTION_CLOSE` from the office's
    /// application, e.g. the end of a session), `transport` (a QUIC protocol error), `reset`
    /// (stateless reset), `timed out` (idle timeout), `locally closed` (this peer closed it),
    /// or another quinn error's name.
    pub kind: &'static str,
    /// The error code of a `CONNECTION_CLOSE`.
    pub code: Option<u64>,
    /// The reason bytes of a `CONNECTION_CLOSE`, lossily as text.
    pub reason: String,
}

impl Closure {
    /// What a quinn connection error says about the close.
    pub fn from_error(error: &quinn::ConnectionError) -> Closure {
        use quinn::ConnectionError as E;
        let (kind, code, reason) = match error {
            E::ApplicationClosed(c) => (
                "application",
                Some(c.error_code.into_inner()),
                String::from_utf8_lossy(&c.reason).into_owned(),
            ),
            E::ConnectionClosed(c) => (
                "transport",
                Some(u64::from(c.error_code)),
                String::from_utf8_lossy(&c.reason).into_owned(),
            ),
            E::Reset => ("reset", None, String::new()),
            E::TimedOut => ("timed out", None, String::new()),
            E::LocallyClosed => ("locally closed", None, String::new()),
            E::VersionMismatch => ("version mismatch", None, String::new()),
            E::TransportError(e) => ("transport error", None, e.to_string()),
            E::CidsExhausted => ("connection ids exhausted", None, String::new()),
        };
        Closure { kind, code, reason }
    }

    /// True when the office closed the connection (rather than this peer, or a timeout).
    pub fn by_office(&self) -> bool {
        matches!(self.kind, "application" | "transport" | "reset")
    }
}

impl fmt::Display for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {:?}", self.reason)?;
        }
        Ok(())
    }
}

/// Issues a node certificate for `org` from the county's test CA (`ca_dir`, see
/// [`crate::County::ca`]) into `dir` and loads it: an attacker with a valid certificate, or a
/// brand-new office. Panics if the CA refuses (e.g. `org` outside the county).
pub fn issue_identity(ca_dir: &Path, dir: &Path, org: &str) -> NodeIdentity {
    let org = OrgPath::parse(org).expect("a valid org path");
    pki::ca_issue(ca_dir, &org, dir, 30).expect("the county CA issues the certificate");
    NodeIdentity::load(
        &dir.join(pki::NODE_CERT_FILE),
        &dir.join(pki::NODE_KEY_FILE),
        &dir.join(pki::CA_CERT_FILE),
    )
    .expect("the issued identity loads")
}

impl County {
    /// Issues a node certificate for `org` from this county's CA, in a folder of its own
    /// under the county's root, and loads it (see [`issue_identity`]). Each call makes a new
    /// key: a new certificate, a new automerge actor.
    pub fn issue_identity(&self, org: &str) -> NodeIdentity {
        let base = self.root.path().join("issued");
        let taken = std::fs::read_dir(&base).map_or(0, |d| d.count());
        let dir = base.join(format!("{}-{taken}", org.replace('/', "+")));
        issue_identity(self.ca(), &dir, org)
    }
}

/// The attestation an office expects beside `change`: its hash signed with `identity`'s
/// key, naming `identity`'s certificate.
pub fn sign(identity: &NodeIdentity, change: &Change) -> Attestation {
    Signer::new(identity)
        .expect("the identity's key signs")
        .sign(&change.hash())
}

/// The change `identity`'s node would make renaming the member of case file `doc`, honestly
/// ([`ChangeBuilder::following`]): one put of `name` in the identity map over every name
/// value `doc` shows. Two calls on the same `doc` make two changes with one (actor, seq).
pub fn rename(doc: &mut AutoCommit, identity: &NodeIdentity, name: &str) -> Change {
    let (_, map) = doc
        .get(automerge::ROOT, casefile::keys::IDENTITY)
        .expect("the document reads")
        .expect("a case file has an identity map");
    let seen = doc
        .get_all(&map, "name")
        .expect("the document reads")
        .into_iter()
        .map(|(_, op)| op_id(&op))
        .collect();
    ChangeBuilder::following(doc, identity)
        .op(put(object(&map), "name", ScalarValue::from(name), seen))
        .build()
}

/// The automerge actor of every change a node with `identity` makes.
pub fn actor_of(identity: &NodeIdentity) -> ActorId {
    ActorId::from(identity.actor_id())
}

/// One QUIC connection to an office, as a peer with some identity, with the session's
/// bidirectional stream open. Dropping it closes the connection.
pub struct HostilePeer {
    /// The org the identity's certificate names.
    pub org: OrgPath,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Bytes read from the stream that do not yet make a whole frame.
    inbox: Vec<u8>,
    /// The office's frames come through one deflate stream for the session (ALPN
    /// `amphi/3`): decoded in order, by one decoder.
    decoder: FrameDecoder,
}

impl fmt::Debug for HostilePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostilePeer")
            .field("org", &self.org)
            .field("office", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

/// How long a connection attempt may take before [`HostilePeer::connect`] gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl HostilePeer {
    /// Stops office `name` of `county` and speaks for it to office `to` with its certificate
    /// and key (a compromised office, or its link taken over): connected, both hellos said.
    /// Gives back the identity, to sign with.
    pub async fn stand_in_for(
        county: &mut crate::County,
        name: &str,
        to: &str,
    ) -> Result<(NodeIdentity, Self), HostileError> {
        county.stop(name).await;
        let identity = county.office(name).identity();
        let mut peer = Self::connect(&identity, county.office(to)).await?;
        peer.expect_hello(CONNECT_TIMEOUT).await?;
        Ok((identity, peer))
    }

    /// Dials `office` as `identity`, opens the session stream and sends `Frame::Hello` naming
    /// the identity's org (what an honest node says first). The office's own hello is left
    /// unread: read it with [`HostilePeer::recv`] or [`HostilePeer::expect_hello`].
    pub async fn connect(identity: &NodeIdentity, office: &Office) -> Result<Self, HostileError> {
        let mut peer = Self::connect_silently(identity, office).await?;
        let hello = PeerSession::hello(&identity.org);
        peer.send(&hello).await?;
        Ok(peer)
    }

    /// Dials `office` as `identity` and opens the session stream, but sends nothing: the
    /// office only sees the stream once the test writes to it (QUIC opens streams lazily), so
    /// the first bytes it reads are whatever the test sends.
    pub async fn connect_silently(
        identity: &NodeIdentity,
        office: &Office,
    ) -> Result<Self, HostileError> {
        Self::connect_to(identity, office.config.listen, &office.org).await
    }

    /// Dials `addr`, expecting the office `office_org` there (its certificate must name it,
    /// as `amphi_node::transport`'s dial requires), as `identity`; opens the stream, sends
    /// nothing.
    pub async fn connect_to(
        identity: &NodeIdentity,
        addr: SocketAddr,
        office_org: &OrgPath,
    ) -> Result<Self, HostileError> {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let endpoint = quinn::Endpoint::client(any).map_err(HostileError::Bind)?;
        let config = tls::client_config(identity)?;
        let connecting = endpoint
            .connect_with(config, addr, &office_org.dns_name())
            .map_err(|source| HostileError::Dial { addr, source })?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| HostileError::Timeout(CONNECT_TIMEOUT, "the QUIC handshake"))??;
        let (send, recv) = conn.open_bi().await?;
        Ok(HostilePeer {
            org: identity.org.clone(),
            endpoint,
            conn,
            send,
            recv,
            inbox: Vec::new(),
            decoder: FrameDecoder::new(),
        })
    }

    /// The underlying QUIC connection (to open more streams, read stats, close with a code).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Writes one frame, length prefix included.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), HostileError> {
        self.send_raw(&frame.encode()).await
    }

    /// Writes `bytes` as they are: a frame with a lying length prefix, half a frame,
    /// garbage.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HostileError> {
        self.send.write_all(bytes).await?;
        Ok(())
    }

    /// Writes a frame body behind a length prefix of the body's true length.
    pub async fn send_body(&mut self, body: &[u8]) -> Result<(), HostileError> {
        let len = u32::try_from(body.len()).expect("a body shorter than 4 GiB");
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await
    }

    /// Sends `Frame::Sync { doc, message, attestations }`.
    pub async fn send_sync(
        &mut self,
        doc: &DocId,
        message: Vec<u8>,
        attestations: Vec<Attestation>,
    ) -> Result<(), HostileError> {
        self.send(&Frame::Sync {
            doc: doc.clone(),
            message,
            attestations,
        })
        .await
    }

    /// Sends `change` to `doc` as an honest node would: one sync message carrying it, from
    /// heads `base`, with its signature by `identity`.
    pub async fn send_signed(
        &mut self,
        doc: &DocId,
        base: &[ChangeHash],
        change: &Change,
        identity: &NodeIdentity,
    ) -> Result<(), HostileError> {
        let message = RawSyncMessage::carrying(base, [change]).encode();
        self.send_sync(doc, message, vec![sign(identity, change)])
            .await
    }

    /// Finishes this side of the stream (a clean end of what the peer has to say).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Reads the next whole frame the office sends, waiting at most `timeout`.
    ///
    /// Bytes that arrived but do not yet make a whole frame are kept for the next call, so a
    /// [`RecvError::Timeout`] loses nothing. A frame the office sends that does not decode is
    /// [`RecvError::Invalid`] (and dropped).
    pub async fn recv(&mut self, timeout: Duration) -> Result<Frame, RecvError> {
        self.recv_before(Instant::now() + timeout).await
    }

    async fn recv_before(&mut self, deadline: Instant) -> Result<Frame, RecvError> {
        loop {
            if let Some(frame) = self.take_frame() {
                return frame;
            }
            let mut buf = [0u8; 64 * 1024];
            let read = tokio::time::timeout_at(deadline, self.recv.read(&mut buf))
                .await
                .map_err(|_| RecvError::Timeout)?;
            match read {
                Ok(Some(n)) => self.inbox.extend_from_slice(&buf[..n]),
                Ok(None) => return Err(RecvError::Finished),
                Err(quinn::ReadError::Reset(code)) => return Err(RecvError::Reset(code.into())),
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    return Err(RecvError::Closed(Closure::from_error(&e)));
                }
                Err(other) => {
                    let closure = match self.conn.close_reason() {
                        Some(e) => Closure::from_error(&e),
                        None => Closure {
                            kind: "stream error",
                            code: None,
                            reason: other.to_string(),
                        },
                    };
                    return Err(RecvError::Closed(closure));
                }
            }
        }
    }

    /// A whole frame from the inbox, if one is there.
    fn take_frame(&mut self) -> Option<Result<Frame, RecvError>> {
        let prefix: [u8; 4] = self.inbox.get(..4)?.try_into().ok()?;
        let len = match Frame::body_len(prefix) {
            Ok(len) => len,
            Err(e) => {
                self.inbox.clear();
                return Some(Err(RecvError::Invalid(e)));
            }
        };
        if self.inbox.len() < 4 + len {
            return None;
        }
        let body: Vec<u8> = self.inbox.drain(..4 + len).skip(4).collect();
        Some(
            self.decoder
                .decode_body_sized(&body)
                .map(|(frame, _)| frame)
                .map_err(RecvError::Invalid),
        )
    }

    /// Reads frames until one satisfies `wanted`, skipping others (the office's own offers,
    /// certificates, reconciliation), for at most `timeout`.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&Frame) -> bool,
    ) -> Result<Frame, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.recv_before(deadline).await?;
            if wanted(&frame) {
                return Ok(frame);
            }
        }
    }

    /// Reads the office's hello (skipping nothing else: it is the office's first frame) and
    /// returns the org it names.
    pub async fn expect_hello(&mut self, timeout: Duration) -> Result<OrgPath, HostileError> {
        match self.recv(timeout).await? {
            Frame::Hello { org, .. } => Ok(org),
            other => Err(HostileError::Unexpected(format!(
                "expected the office's hello first, got {other:?}"
            ))),
        }
    }

    /// Waits until the connection is closed, for at most `timeout`, reading and dropping
    /// whatever the office still sends; `None` if it is still open by then.
    pub async fn closed(&mut self, timeout: Duration) -> Option<Closure> {
        let deadline = Instant::now() + timeout;
        // Read until the stream ends, so flow control never holds the office up.
        loop {
            match self.recv_before(deadline).await {
                Ok(_) | Err(RecvError::Invalid(_)) => continue,
                Err(RecvError::Timeout) => return None,
                Err(RecvError::Closed(c)) => return Some(c),
                Err(RecvError::Finished | RecvError::Reset(_)) => break,
            }
        }
        tokio::time::timeout_at(deadline, self.conn.closed())
            .await
            .ok()
            .map(|e| Closure::from_error(&e))
    }

    /// How the connection closed, if it has.
    pub fn close_reason(&self) -> Option<Closure> {
        self.conn.close_reason().map(|e| Closure::from_error(&e))
    }

    /// Closes the connection with `code` and `reason`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.conn.close(code.into(), reason);
    }

    /// Gets a copy of document `doc` from the office with plain automerge sync (no gate, no
    /// signatures): sends automerge's own sync messages from an empty document and applies
    /// the office's answers until both sides have the same heads. Fails if the office does
    /// not hand the document over within `timeout` (it holds no such document, or refuses
    /// this peer).
    pub async fn fetch(
        &mut self,
        doc: &DocId,
        timeout: Duration,
    ) -> Result<AutoCommit, HostileError> {
        let deadline = Instant::now() + timeout;
        let mut copy = AutoCommit::new();
        let mut state = sync::State::new();
        loop {
            if let Some(message) = copy.sync().generate_sync_message(&mut state) {
                self.send_sync(doc, message.encode(), Vec::new()).await?;
            }
            let heads = copy.get_heads();
            if !heads.is_empty() && state.their_heads.as_deref() == Some(heads.as_slice()) {
                return Ok(copy);
            }
            let frame = self.recv_before(deadline).await.map_err(|e| match e {
                RecvError::Timeout => HostileError::Timeout(timeout, "the office's document"),
                other => HostileError::Recv(other),
            })?;
            if let Frame::Sync {
                doc: d, message, ..
            } = frame
                && &d == doc
            {
                let message = sync::Message::decode(&message)
                    .map_err(|e| HostileError::Automerge(e.to_string()))?;
                copy.sync()
                    .receive_sync_message(&mut state, message)
                    .map_err(|e| HostileError::Automerge(e.to_string()))?;
            }
        }
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"hostile peer dropped");
        self.endpoint.close(0u32.into(), b"hostile peer dropped");
    }
}

// ---- automerge's sync message, by hand ---------------------------------------------------

/// First byte of a version 1 sync message.
pub const SYNC_V1: u8 = 0x42;
/// First byte of a version 2 sync message (changes may be one whole document chunk).
pub const SYNC_V2: u8 = 0x43;

/// Appends `value` as unsigned LEB128.
pub fn write_uleb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An automerge 0.12 sync message, field by field, encoded exactly as written (no sorting,
/// no checks), so a test can say anything automerge's parser accepts, and more.
///
/// ```text
/// message = version:u8  heads  need  have  changes  [flags]  trailing
/// heads, need = n:uleb  n × hash(32)
/// have    = n:uleb  n × (last_sync: n:uleb n × hash(32),  bloom: len:uleb bytes)
/// changes = n:uleb  n × (len:uleb chunk bytes)
/// flags   = len:uleb bytes        (automerge: 0x02, 0x80 | bits)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSyncMessage {
    /// The first byte: [`SYNC_V1`], [`SYNC_V2`] or anything else.
    pub version: u8,
    /// The sender's heads.
    pub heads: Vec<ChangeHash>,
    /// Changes the sender asks for.
    pub need: Vec<ChangeHash>,
    /// What the sender has: each a set of heads and a Bloom filter of changes since.
    pub have: Vec<RawHave>,
    /// Change (or document) chunks, each sent as one length-prefixed byte string.
    pub changes: Vec<Vec<u8>>,
    /// The flags section's bytes, if any (written with their length prefix).
    pub flags: Option<Vec<u8>>,
    /// Bytes after everything, written as they are.
    pub trailing: Vec<u8>,
}

impl Default for RawSyncMessage {
    fn default() -> Self {
        RawSyncMessage {
            version: SYNC_V1,
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: Vec::new(),
            flags: None,
            trailing: Vec::new(),
        }
    }
}

impl RawSyncMessage {
    /// What an honest peer would send to deliver `changes` on top of `base` (the heads it
    /// knows the office has): heads = the changes' hashes, have = `base` with an empty
    /// Bloom filter, the changes' own bytes, automerge's current flags.
    pub fn carrying<'a>(
        base: &[ChangeHash],
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> RawSyncMessage {
        let changes: Vec<&Change> = changes.into_iter().collect();
        let mut heads: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
        heads.sort();
        RawSyncMessage {
            heads,
            have: vec![RawHave {
                last_sync: base.to_vec(),
                bloom: Vec::new(),
            }],
            changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
            flags: Some(RawSyncMessage::flags_byte(0)),
            ..RawSyncMessage::default()
        }
    }

    /// The flags section automerge 0.12 writes: the legacy "V2 supported" byte, then a
    /// bitfield byte (`0x80 | bits`; bit 0 sync reset, 1 read-only, 2 supports sync reset).
    pub fn flags_byte(bits: u8) -> Vec<u8> {
        vec![0x02, 0x80 | bits]
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let hashes = |out: &mut Vec<u8>, hashes: &[ChangeHash]| {
            write_uleb(out, hashes.len() as u64);
            for h in hashes {
                out.extend_from_slice(&h.0);
            }
        };
        let mut out = vec![self.version];
        hashes(&mut out, &self.heads);
        hashes(&mut out, &self.need);
        write_uleb(&mut out, self.have.len() as u64);
        for have in &self.have {
            hashes(&mut out, &have.last_sync);
            write_uleb(&mut out, have.bloom.len() as u64);
            out.extend_from_slice(&have.bloom);
        }
        write_uleb(&mut out, self.changes.len() as u64);
        for chunk in &self.changes {
            write_uleb(&mut out, chunk.len() as u64);
            out.extend_from_slice(chunk);
        }
        if let Some(flags) = &self.flags {
            write_uleb(&mut out, flags.len() as u64);
            out.extend_from_slice(flags);
        }
        out.extend_from_slice(&self.trailing);
        out
    }
}

/// One entry of a sync message's `have`: heads the sender last synced at, and a Bloom
/// filter (raw bytes, see [`RawBloom`]) of the changes it has since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHave {
    /// Heads at the last sync.
    pub last_sync: Vec<ChangeHash>,
    /// The Bloom filter's bytes; empty means "no entries".
    pub bloom: Vec<u8>,
}

/// A Bloom filter as automerge 0.12 writes it: `num_entries`, `bits_per_entry` and
/// `num_probes` as uLEB128, then the bit array (automerge expects exactly
/// `ceil(num_entries × bits_per_entry / 8)` bytes of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBloom {
    /// Number of hashes in the filter.
    pub num_entries: u64,
    /// Bits per hash (automerge uses 10).
    pub bits_per_entry: u64,
    /// Probes per hash (automerge uses 7).
    pub num_probes: u64,
    /// The bit array.
    pub bits: Vec<u8>,
}

impl RawBloom {
    /// A filter with these parameters and the bit array automerge expects for them, every
    /// bit set (so it claims to contain every hash: each hash is probed `num_probes` times).
    /// `RawBloom::with(1, 0, 7)` is a filter of zero bits that still claims an entry. The
    /// bit array is allocated here: for a filter that claims more bits than it carries, set
    /// [`RawBloom::bits`] yourself.
    pub fn with(num_entries: u64, bits_per_entry: u64, num_probes: u64) -> RawBloom {
        let len = ((num_entries as f64) * (bits_per_entry as f64) / 8.0).ceil() as usize;
        RawBloom {
            num_entries,
            bits_per_entry,
            num_probes,
            bits: vec![0xff; len],
        }
    }

    /// The filter's bytes, for [`RawHave::bloom`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bits.len() + 15);
        write_uleb(&mut out, self.num_entries);
        write_uleb(&mut out, self.bits_per_entry);
        write_uleb(&mut out, self.num_probes);
        out.extend_from_slice(&self.bits);
        out
    }
}

// ---- changes, by hand --------------------------------------------------------------------

/// An automerge change with every field chosen by the test, built through automerge's
/// legacy [`ExpandedChange`] (which writes whatever it is given: operations on objects that
/// do not exist, predecessors that were never made, a seq that skips ahead).
#[derive(Debug, Clone)]
pub struct ChangeBuilder {
    change: ExpandedChange,
}

impl ChangeBuilder {
    /// A change by `actor` with seq 1, start op 1, no dependencies, time 0, no message and
    /// no operations.
    pub fn new(actor: ActorId) -> ChangeBuilder {
        ChangeBuilder {
            change: ExpandedChange {
                operations: Vec::new(),
                actor_id: actor,
                hash: None,
                seq: 1,
                start_op: NonZeroU64::MIN,
                time: 0,
                message: None,
                deps: Vec::new(),
                extra_bytes: Vec::new(),
                author: None,
            },
        }
    }

    /// The next change `identity`'s node would make to `doc`, honestly: its actor, the next
    /// seq of that actor in `doc`, the next op counter, the document's heads as
    /// dependencies, the time now, and the commit message claiming `identity`'s org. Add
    /// operations with [`ChangeBuilder::op`].
    pub fn following(doc: &mut AutoCommit, identity: &NodeIdentity) -> ChangeBuilder {
        let actor = actor_of(identity);
        let changes = doc.get_changes(&[]);
        let seq = changes
            .iter()
            .filter(|c| c.actor_id() == &actor)
            .map(|c| c.seq())
            .max()
            .unwrap_or(0)
            + 1;
        let max_op = changes.iter().map(|c| c.max_op()).max().unwrap_or(0);
        let now = amphi_protocol::stamp::commit_time(doc, crate::now_ms());
        ChangeBuilder::new(actor)
            .seq(seq)
            .start_op(max_op + 1)
            .deps(doc.get_heads())
            .time(now)
            .author(&identity.org)
    }

    /// The actor.
    pub fn actor(mut self, actor: ActorId) -> Self {
        self.change.actor_id = actor;
        self
    }
    /// The seq (1 for an actor's first change).
    pub fn seq(mut self, seq: u64) -> Self {
        self.change.seq = seq;
        self
    }
    /// The counter of the first operation (0 is not representable: automerge's legacy
    /// change holds a `NonZeroU64`; it becomes 1).
    pub fn start_op(mut self, start_op: u64) -> Self {
        self.change.start_op = NonZeroU64::new(start_op).unwrap_or(NonZeroU64::MIN);
        self
    }
    /// The dependencies, written in the order given.
    pub fn deps(mut self, deps: Vec<ChangeHash>) -> Self {
        self.change.deps = deps;
        self
    }
    /// The time, in milliseconds since the Unix epoch (what Amphi nodes write).
    pub fn time(mut self, ms: i64) -> Self {
        self.change.time = ms;
        self
    }
    /// The commit message, as it is (`None`: no message).
    pub fn message(mut self, message: Option<&str>) -> Self {
        self.change.message = message.map(str::to_owned);
        self
    }
    /// Claims `org` as the author: the commit message `org:<path>`.
    pub fn author(self, org: &OrgPath) -> Self {
        let message = gate::author_message(org);
        self.message(Some(&message))
    }
    /// Bytes automerge carries after the change's columns.
    pub fn extra_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.change.extra_bytes = bytes;
        self
    }
    /// Appends an operation (see [`put`], [`make`], [`delete`], [`insert`], [`increment`]).
    pub fn op(mut self, op: legacy::Op) -> Self {
        self.change.operations.push(op);
        self
    }
    /// Appends operations.
    pub fn ops(mut self, ops: impl IntoIterator<Item = legacy::Op>) -> Self {
        self.change.operations.extend(ops);
        self
    }
    /// The expanded change as built so far (to adjust any field directly).
    pub fn expanded(&mut self) -> &mut ExpandedChange {
        &mut self.change
    }

    /// The change, encoded by automerge (its hash covers everything above).
    pub fn build(self) -> Change {
        Change::from(self.change)
    }
}

/// The legacy object id of an object in a document (`doc.get(..)` returns an [`ObjId`]).
pub fn object(id: &ObjId) -> ObjectId {
    id.to_string()
        .parse()
        .expect("an ObjId prints as `_root` or `counter@actor`")
}

/// The legacy op id of an operation in a document (the [`ObjId`] `doc.get_all(..)` returns
/// beside each value is the id of the op that wrote it).
pub fn op_id(id: &ObjId) -> OpId {
    id.to_string()
        .parse()
        .expect("an op ObjId prints as `counter@actor`")
}

/// An op id from its parts, existing or not.
pub fn op(counter: u64, actor: &ActorId) -> OpId {
    OpId::new(counter, actor)
}

/// Sets `key` of map `obj` to `value`, overwriting the ops in `pred`.
pub fn put(obj: ObjectId, key: &str, value: ScalarValue, pred: Vec<OpId>) -> legacy::Op {
    legacy::Op {
        action: OpType::Put(value),
        obj,
        key: legacy::Key::from(key),
        pred: SortedVec::from(pred),
        insert: false,
    }
}

/// Creates an object of type `kind` under `key` of map `obj`, overwriting `pred`.
pub fn make(obj: ObjectId, key: &str, kind: automerge::ObjType, pred: Vec<OpId>) -> legacy::Op {
    legacy::Op {
        action: OpType::Make(kind),
        obj,
        key: legacy::Key::from(key),
        pred: SortedVec::from(pred),
        insert: false,
    }
}

/// Deletes `key` of map `obj` (the ops in `pred`).
pub fn delete(obj: ObjectId, key: &str, pred: Vec<OpId>) -> legacy::Op {
    legacy::Op {
        action: OpType::Delete,
        obj,
        key: legacy::Key::from(key),
        pred: SortedVec::from(pred),
        insert: false,
    }
}

/// Inserts `value` into list or text `obj` after element `after` (`None`: at the head).
pub fn insert(obj: ObjectId, after: Option<OpId>, value: ScalarValue) -> legacy::Op {
    legacy::Op {
        action: OpType::Put(value),
        obj,
        key: match after {
            Some(id) => legacy::Key::from(id),
            None => legacy::Key::head(),
        },
        pred: SortedVec::new(),
        insert: true,
    }
}

/// Adds `by` to the counter under `key` of map `obj` (the ops in `pred`).
pub fn increment(obj: ObjectId, key: &str, by: i64, pred: Vec<OpId>) -> legacy::Op {
    legacy::Op {
        action: OpType::Increment(by),
        obj,
        key: legacy::Key::from(key),
        pred: SortedVec::from(pred),
        insert: false,
    }
}

// ---- storage chunks, by hand -------------------------------------------------------------

/// The magic bytes every automerge chunk starts with.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of a whole document (what `save()` writes).
pub const CHUNK_DOCUMENT: u8 = 0;
/// Chunk type of one change.
pub const CHUNK_CHANGE: u8 = 1;
/// Chunk type of one change whose body is raw DEFLATE.
pub const CHUNK_COMPRESSED: u8 = 2;
/// Chunk type of a bundle of changes.
pub const CHUNK_BUNDLE: u8 = 3;

/// An automerge storage chunk, field by field:
///
/// ```text
/// chunk = magic(85 6f 4a 83)  checksum(4)  type:u8  len:uleb  body(len)
/// ```
/// The checksum is the first 4 bytes of SHA-256 over `type, uleb(len), body`; for a
/// compressed change (type 2) it is that of the *inflated* change (type 1, the inflated
/// length and bytes), and automerge inflates the body before it looks at the checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The type byte ([`CHUNK_DOCUMENT`], [`CHUNK_CHANGE`], [`CHUNK_COMPRESSED`],
    /// [`CHUNK_BUNDLE`] or anything else).
    pub kind: u8,
    /// The checksum as written.
    pub checksum: [u8; 4],
    /// The length written in the header, if it should differ from the body's.
    pub declared_len: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl Chunk {
    /// A chunk of type `kind` around `body`, with the checksum automerge expects.
    pub fn new(kind: u8, body: Vec<u8>) -> Chunk {
        Chunk {
            kind,
            checksum: checksum(kind, &body),
            declared_len: None,
            body,
        }
    }

    /// A document chunk (type 0) around `body`.
    pub fn document(body: Vec<u8>) -> Chunk {
        Chunk::new(CHUNK_DOCUMENT, body)
    }

    /// A change chunk (type 1) around `body`.
    pub fn change(body: Vec<u8>) -> Chunk {
        Chunk::new(CHUNK_CHANGE, body)
    }

    /// Splits bytes automerge wrote (`change.raw_bytes()`, `doc.save()`) into their first
    /// chunk and the bytes after it; `None` if they do not start with a whole chunk header.
    pub fn parse(bytes: &[u8]) -> Option<(Chunk, &[u8])> {
        let rest = bytes.strip_prefix(&CHUNK_MAGIC)?;
        let checksum: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        let kind = *rest.get(4)?;
        let (len, used) = read_uleb(&rest[5..])?;
        let body_start = 5 + used;
        let len = usize::try_from(len).ok()?;
        let body = rest.get(body_start..body_start.checked_add(len)?)?;
        Some((
            Chunk {
                kind,
                checksum,
                declared_len: None,
                body: body.to_vec(),
            },
            &rest[body_start + len..],
        ))
    }

    /// `change` as a compressed change chunk (type 2): its body as stored (uncompressed)
    /// DEFLATE blocks, its checksum the change's own, as automerge would accept it.
    pub fn compressed_change(change: &Change) -> Chunk {
        let (plain, _) = Chunk::parse(change.raw_bytes()).expect("automerge writes a chunk");
        Chunk {
            kind: CHUNK_COMPRESSED,
            checksum: plain.checksum,
            declared_len: None,
            body: deflate_stored(&plain.body),
        }
    }

    /// A decompression bomb: a compressed change chunk (type 2) whose raw-DEFLATE body
    /// inflates to `inflated_len` zero bytes, about 1,000 times its own size (2 GiB from
    /// about 2 MiB, see [`deflate_zeros`]). Its checksum is zero: automerge inflates the
    /// whole body before it checks anything (give a real one with [`Chunk::with_checksum`]
    /// and [`checksum_of_zeros`] if a test needs it).
    pub fn deflate_bomb(inflated_len: u64) -> Chunk {
        Chunk {
            kind: CHUNK_COMPRESSED,
            checksum: [0; 4],
            declared_len: None,
            body: deflate_zeros(&[], inflated_len),
        }
    }

    /// The same chunk with another checksum.
    pub fn with_checksum(mut self, checksum: [u8; 4]) -> Chunk {
        self.checksum = checksum;
        self
    }

    /// The same chunk with a header that declares `len` body bytes (whatever the body is).
    pub fn with_declared_len(mut self, len: u64) -> Chunk {
        self.declared_len = Some(len);
        self
    }

    /// The chunk's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 19);
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&self.checksum);
        out.push(self.kind);
        write_uleb(
            &mut out,
            self.declared_len.unwrap_or(self.body.len() as u64),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

/// The checksum automerge expects of a chunk of type `kind` with `body`.
pub fn checksum(kind: u8, body: &[u8]) -> [u8; 4] {
    let mut header = vec![kind];
    write_uleb(&mut header, body.len() as u64);
    let hash = Sha256::new()
        .chain_update(&header)
        .chain_update(body)
        .finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// The checksum automerge expects of a chunk of type `kind` whose body is `len` zero bytes
/// (hashes them: about 2 s per GiB).
pub fn checksum_of_zeros(kind: u8, len: u64) -> [u8; 4] {
    let mut header = vec![kind];
    write_uleb(&mut header, len);
    let mut hasher = Sha256::new().chain_update(&header);
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        hasher.update(&zeros[..n]);
        left -= n as u64;
    }
    let hash = hasher.finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

fn read_uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Bits written least significant first, as DEFLATE packs them.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u64, n: u32) {
        self.acc |= value << self.len;
        self.len += n;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }
    /// A Huffman code, which DEFLATE writes most significant bit first.
    fn code(&mut self, code: u64, n: u32) {
        let reversed = code.reverse_bits() >> (64 - n);
        self.bits(reversed, n);
    }
    fn align(&mut self) {
        if self.len > 0 {
            self.bits(0, 8 - self.len);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        self.align();
        self.out
    }
}

/// `data` as raw DEFLATE in stored (uncompressed) blocks.
pub fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::default();
    stored_blocks(&mut w, data, true);
    w.finish()
}

fn stored_blocks(w: &mut BitWriter, data: &[u8], last: bool) {
    let mut blocks = data.chunks(u16::MAX as usize).peekable();
    if blocks.peek().is_none() {
        w.bits(u64::from(last), 1);
        w.bits(0, 2);
        w.align();
        w.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
        return;
    }
    while let Some(block) = blocks.next() {
        let final_block = last && blocks.peek().is_none();
        w.bits(u64::from(final_block), 1);
        w.bits(0, 2); // BTYPE 00: stored
        w.align();
        let len = block.len() as u16;
        w.out.extend_from_slice(&len.to_le_bytes());
        w.out.extend_from_slice(&(!len).to_le_bytes());
        w.out.extend_from_slice(block);
    }
}

/// Raw DEFLATE that inflates to `prefix` followed by `zeros` zero bytes, in about
/// `zeros / 1032` bytes: one dynamic-Huffman block whose only codes are the literal 0
/// (2 bits), end of block (2 bits), "repeat 258 bytes" (1 bit) and distance 1 (1 bit).
pub fn deflate_zeros(prefix: &[u8], zeros: u64) -> Vec<u8> {
    let mut w = BitWriter::default();
    if !prefix.is_empty() {
        stored_blocks(&mut w, prefix, zeros == 0);
    }
    if zeros == 0 {
        if prefix.is_empty() {
            stored_blocks(&mut w, &[], true);
        }
        return w.finish();
    }
    w.bits(1, 1); // BFINAL
    w.bits(2, 2); // BTYPE 10: dynamic Huffman
    w.bits(286 - 257, 5); // HLIT: literal/length codes 0..=285
    w.bits(2 - 1, 5); // HDIST: distance codes 0 and 1
    w.bits(18 - 4, 4); // HCLEN: 18 code-length code lengths
    // Code-length alphabet, in DEFLATE's permuted order: 18 → 1 bit, 2 → 2 bits, 1 → 2 bits.
    const ORDER: [usize; 18] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
    for symbol in ORDER {
        let len = match symbol {
            18 => 1,
            1 | 2 => 2,
            _ => 0,
        };
        w.bits(len, 3);
    }
    // Canonical codes: 18 → "0", 1 → "10", 2 → "11".
    let (len_1, len_2) = ((0b10, 2), (0b11, 2));
    let zero_run = |w: &mut BitWriter, n: u64| {
        w.code(0, 1); // symbol 18: a run of 11..=138 zero lengths
        w.bits(n - 11, 7);
    };
    // Literal/length code lengths: 0 → 2, 1..=255 → 0, 256 → 2, 257..=284 → 0, 285 → 1.
    w.code(len_2.0, len_2.1);
    zero_run(&mut w, 138);
    zero_run(&mut w, 117);
    w.code(len_2.0, len_2.1);
    zero_run(&mut w, 28);
    w.code(len_1.0, len_1.1);
    // Distance code lengths: 0 → 1, 1 → 1.
    w.code(len_1.0, len_1.1);
    w.code(len_1.0, len_1.1);
    // Canonical literal/length codes: 285 → "0", 0 → "10", 256 → "11"; distance 0 → "0".
    w.code(0b10, 2); // one literal zero
    let mut left = zeros - 1;
    while left >= 258 {
        w.code(0, 1); // length 258
        w.code(0, 1); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        w.code(0b10, 2);
    }
    w.code(0b11, 2); // end of block
    w.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    use super::*;

    fn inflate(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn an_honest_raw_message_is_what_automerge_writes() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "name", "Oyun").unwrap();
        let mut state = sync::State::new();
        let theirs = doc.sync().generate_sync_message(&mut state).unwrap();
        // Automerge's first message has a Bloom filter of the one change it holds.
        let bloom = theirs.have[0].bloom.to_bytes();
        let (entries, bits_per_entry, probes) = (1, 10, 7);
        assert_eq!(
            RawBloom {
                bits: bloom[3..].to_vec(),
                ..RawBloom::with(entries, bits_per_entry, probes)
            }
            .encode(),
            bloom
        );
        let mut ours = RawSyncMessage {
            heads: theirs.heads.clone(),
            need: theirs.need.clone(),
            have: vec![RawHave {
                last_sync: vec![],
                bloom,
            }],
            flags: Some(RawSyncMessage::flags_byte(0b100)),
            ..RawSyncMessage::default()
        };
        assert_eq!(ours.encode(), theirs.clone().encode());
        // And with a change in it, automerge reads back what we wrote.
        let change = doc.get_last_local_change().unwrap();
        ours.changes = vec![change.raw_bytes().to_vec()];
        let decoded = sync::Message::decode(&ours.encode()).unwrap();
        assert_eq!(decoded.changes.iter().next().unwrap(), change.raw_bytes());
        assert_eq!(decoded.heads, theirs.heads);
    }

    #[test]
    fn hostile_bloom_filters_parse() {
        for bloom in [
            RawBloom::with(1, 0, 7),
            RawBloom::with(3, 10, 4_000_000_000),
        ] {
            let message = RawSyncMessage {
                have: vec![RawHave {
                    last_sync: vec![],
                    bloom: bloom.encode(),
                }],
                ..RawSyncMessage::default()
            };
            sync::Message::decode(&message.encode()).expect("automerge parses it");
        }
        let heads: Vec<ChangeHash> = (0..5000u32)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..4].copy_from_slice(&i.to_be_bytes());
                ChangeHash(h)
            })
            .collect();
        let message = RawSyncMessage {
            version: SYNC_V2,
            heads: heads.clone(),
            ..RawSyncMessage::default()
        };
        assert_eq!(
            sync::Message::decode(&message.encode()).unwrap().heads,
            heads
        );
    }

    #[test]
    fn a_built_change_is_what_automerge_made() {
        let mut doc = AutoCommit::new();
        let actor = ActorId::from([7u8; 16]);
        doc.set_actor(actor.clone());
        doc.put(ROOT, "name", "Oyun").unwrap();
        let first = doc.get_last_local_change().unwrap();
        let (_, name_op) = doc.get(ROOT, "name").unwrap().unwrap();
        doc.put(ROOT, "name", "Saruul").unwrap();
        let theirs = doc.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_message("org:hoboksar".to_owned())
                .with_time(1_700_000_000),
        );
        let built = ChangeBuilder::new(actor)
            .seq(2)
            .start_op(2)
            .deps(vec![first.hash()])
            .time(1_700_000_000)
            .message(Some("org:hoboksar"))
            .op(put(
                ObjectId::Root,
                "name",
                ScalarValue::from("Saruul"),
                vec![op_id(&name_op)],
            ))
            .build();
        assert_eq!(Some(built.hash()), theirs);
    }

    #[test]
    fn changes_may_claim_anything() {
        let ghost = ActorId::from([9u8; 16]);
        let change = ChangeBuilder::new(ghost.clone())
            .seq(2)
            .start_op(1_000)
            .deps(vec![ChangeHash([1; 32])])
            .time(-5)
            .author(&OrgPath::parse("hoboksar").unwrap())
            .op(put(
                ObjectId::Id(op(77, &ghost)),
                "name",
                ScalarValue::from("x"),
                vec![op(76, &ghost)],
            ))
            .build();
        assert_eq!(change.seq(), 2);
        assert_eq!(change.message(), Some("org:hoboksar"));
        assert_eq!(gate::author_of(&change).unwrap().as_str(), "hoboksar");
        assert_eq!(
            Change::from_bytes(change.raw_bytes().to_vec()).unwrap(),
            change
        );
    }

    #[test]
    fn chunks_round_trip_and_automerge_accepts_a_compressed_change() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "name", "Oyun").unwrap();
        let change = doc.get_last_local_change().unwrap();
        let (chunk, rest) = Chunk::parse(change.raw_bytes()).unwrap();
        assert!(rest.is_empty());
        assert_eq!(chunk.kind, CHUNK_CHANGE);
        assert_eq!(Chunk::change(chunk.body.clone()), chunk);
        assert_eq!(chunk.encode(), change.raw_bytes());

        let compressed = Chunk::compressed_change(&change).encode();
        let mut other = AutoCommit::new();
        other.load_incremental(&compressed).unwrap();
        assert_eq!(other.get_heads(), vec![change.hash()]);

        let saved = doc.save();
        let (document, rest) = Chunk::parse(&saved).unwrap();
        assert!(rest.is_empty());
        assert_eq!(document.kind, CHUNK_DOCUMENT);
        assert_eq!(Chunk::document(document.body.clone()).encode(), saved);
    }

    #[test]
    fn a_deflate_bomb_inflates_a_thousandfold() {
        let bomb = Chunk::deflate_bomb(100 << 20);
        assert!(bomb.body.len() < 110 * 1024, "{}", bomb.body.len());
        let inflated = inflate(&bomb.body);
        assert_eq!(inflated.len(), 100 << 20);
        assert!(inflated.iter().all(|b| *b == 0));
        for (prefix, zeros) in [(&b"abc"[..], 0), (b"", 1), (b"", 258), (b"xyz", 1000)] {
            let out = inflate(&deflate_zeros(prefix, zeros));
            assert_eq!(&out[..prefix.len()], prefix);
            assert_eq!(out.len() as u64, prefix.len() as u64 + zeros);
            assert!(out[prefix.len()..].iter().all(|b| *b == 0));
        }
        assert_eq!(inflate(&deflate_stored(&[5; 70_000])), vec![5; 70_000]);
        assert_eq!(
            checksum_of_zeros(CHUNK_CHANGE, 3000),
            checksum(CHUNK_CHANGE, &[0; 3000])
        );
    }
}
