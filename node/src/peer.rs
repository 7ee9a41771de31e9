//! One sync session with one peer over a QUIC connection: the IO around
//! [`amphi_protocol::session::PeerSession`].
//!
//! A session runs three tasks: a reader that turns stream bytes into frames (bounded,
//! validated), a writer that drains the queue of frames to send, and the loop here, which
//! feeds frames and local change notifications to the session and the repo.
//!
//! Memory per session is bounded: the reader reads ahead at most [`READ_AHEAD_BYTES`] of
//! frames not yet handled; the send queue never blocks the loop (two sessions both blocked
//! sending while not reading would deadlock), but a peer that stops reading while more than
//! [`SEND_QUEUE_BYTES`] wait for it ends the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use amphi_protocol::attest::CertId;
use amphi_protocol::session::{PeerSession, SessionError, Step};
use amphi_protocol::wire::{DecodeError, Frame};
use amphi_protocol::{DocId, OrgPath};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tracing::{debug, info};

use crate::repo::{Notice, Outbound, Repo};
use crate::status::{PeerState, Status, now_rfc3339};
use crate::store::StoreError;

/// Frames read ahead from the peer before the reader waits (see also [`READ_AHEAD_BYTES`]).
const READ_AHEAD_FRAMES: usize = 256;
/// Bytes of frames read from the peer and not yet handled, at most (a frame is at most
/// [`amphi_protocol::wire::MAX_FRAME`], so one always fits).
pub const READ_AHEAD_BYTES: usize = 16 * 1024 * 1024;
/// Bytes queued for a peer that is not reading them, at most: beyond, the session ends.
pub const SEND_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Documents offered per turn of the session loop, between reads, when many differ.
const OFFER_BATCH: usize = 32;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The connection or stream failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The peer sent an invalid frame.
    #[error("peer sent an invalid frame: {0}")]
    Decode(#[from] DecodeError),
    /// The peer broke the session protocol.
    #[error(transparent)]
    Protocol(#[from] SessionError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer's certificate was revoked.
    #[error("the peer's certificate was revoked")]
    Revoked,
    /// Too much waits to be sent to the peer: it stopped reading.
    #[error("peer is not reading: {0} MiB queued")]
    NotReading(usize),
}

/// One frame read from the peer: its size on the wire and its share of the read-ahead
/// budget, given back when the frame has been handled (dropped).
type Incoming = Result<(Frame, usize, OwnedSemaphorePermit), SessionEnd>;

/// An encoded frame to send, and whether it is a sync message (for the counters).
type Queued = (Vec<u8>, bool);

/// The queue of frames to send to the peer, encoded, with the bytes waiting in it.
#[derive(Clone)]
struct Outbox {
    frames: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl Outbox {
    fn new(cap: usize) -> (Outbox, mpsc::UnboundedReceiver<Queued>, Arc<AtomicUsize>) {
        let (frames, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            frames,
            queued: queued.clone(),
            cap,
        };
        (outbox, rx, queued)
    }

    /// Queues a frame; never waits. Fails when the writer stopped or when more than the cap
    /// waits for the peer.
    fn send(&self, frame: Frame) -> Result<(), SessionEnd> {
        let is_sync = matches!(frame, Frame::Sync { .. });
        let bytes = frame.encode();
        let queued = self.queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
        if queued > self.cap {
            return Err(SessionEnd::NotReading(queued / (1024 * 1024)));
        }
        self.frames
            .send((bytes, is_sync))
            .map_err(|_| SessionEnd::Connection("writer stopped".into()))
    }
}

/// Where a session's peer is and how it came to be connected.
#[derive(Clone)]
pub struct PeerLink {
    /// The peer's org, verified from its certificate.
    pub org: OrgPath,
    /// Its address.
    pub addr: String,
    /// `dialed` or `accepted`.
    pub direction: &'static str,
    /// The peer's certificate id.
    pub cert: CertId,
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    frames: mpsc::Sender<Incoming>,
    budget: Arc<Semaphore>,
) {
    loop {
        let mut prefix = [0u8; 4];
        let result = async {
            if let Err(e) = recv.read_exact(&mut prefix).await {
                return Err(SessionEnd::Connection(e.to_string()));
            }
            let len = Frame::body_len(prefix)?;
            // Wait until the frames read ahead leave room for this one before reading it.
            let permit = budget
                .clone()
                .acquire_many_owned((len + 4) as u32)
                .await
                .map_err(|_| SessionEnd::Connection("session closed".into()))?;
            let mut body = vec![0u8; len];
            recv.read_exact(&mut body)
                .await
                .map_err(|e| SessionEnd::Connection(e.to_string()))?;
            Ok((Frame::decode_body(&body)?, len + 4, permit))
        }
        .await;
        let failed = result.is_err();
        if frames.send(result).await.is_err() || failed {
            return;
        }
    }
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut frames: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
    status: Arc<Status>,
    link: PeerLink,
) {
    while let Some((bytes, is_sync)) = frames.recv().await {
        if send.write_all(&bytes).await.is_err() {
            return;
        }
        queued.fetch_sub(bytes.len(), Ordering::Relaxed);
        status.update(link.org.as_str(), "", link.direction, |p| {
            p.bytes_out += bytes.len() as u64;
            if is_sync {
                p.messages_out += 1;
            }
        });
    }
    let _ = send.finish();
}

/// Runs a session on an established, authenticated connection until it fails, the peer
/// leaves, or `shutdown` fires.
pub async fn run(
    conn: quinn::Connection,
    link: PeerLink,
    repo: Arc<Repo>,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SessionEnd> {
    let (send, recv) = if link.direction == "dialed" {
        conn.open_bi().await
    } else {
        conn.accept_bi().await
    }
    .map_err(|e| SessionEnd::Connection(e.to_string()))?;
    // Sending never blocks the loop: a session that stops reading while it waits to send,
    // facing a peer doing the same, would deadlock once both queues and QUIC windows fill.
    let (out, out_rx, queued) = Outbox::new(SEND_QUEUE_BYTES);
    let (in_tx, mut incoming) = mpsc::channel(READ_AHEAD_FRAMES);
    let budget = Arc::new(Semaphore::new(READ_AHEAD_BYTES));
    let reader = tokio::spawn(read_frames(recv, in_tx, budget));
    let writer = tokio::spawn(write_frames(
        send,
        out_rx,
        queued,
        status.clone(),
        link.clone(),
    ));
    let _abort = AbortOnDrop(vec![reader, writer]);

    let peer = link.org.clone();
    let mut session = PeerSession::new(peer.clone());
    let mut changes = repo.subscribe();
    let clock = std::time::Instant::now();
    let sent = |f: Frame| {
        let out = out.clone();
        async move { out.send(f) }
    };
    sent(PeerSession::hello(repo.me())).await?;
    if link.direction == "dialed" {
        // The dialer starts reconciliation; the other side answers.
        sent(session.reconcile(repo.inventory_for(&peer)?)).await?;
    }
    status.update(peer.as_str(), &link.addr, link.direction, |p| {
        p.state = PeerState::Connected;
        p.connected_since = Some(now_rfc3339());
        p.last_error = None;
    });
    info!("session started");
    // Documents found to differ, offered a batch at a time between reads.
    let mut to_offer: std::collections::VecDeque<DocId> = std::collections::VecDeque::new();

    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = std::future::ready(()), if !to_offer.is_empty() && incoming.is_empty() => {
                for doc in to_offer.drain(..OFFER_BATCH.min(to_offer.len())).collect::<Vec<_>>() {
                    offer(&repo, &mut session, &doc, &out).await?;
                }
            }
            frame = incoming.recv() => {
                let Some(frame) = frame else { break };
                // The permit gives the frame's bytes back to the reader once handled.
                let (frame, size, _permit) = frame?;
                let is_sync = matches!(frame, Frame::Sync { .. });
                status.update(peer.as_str(), "", link.direction, |p| {
                    p.last_seen = Some(now_rfc3339());
                    p.bytes_in += size as u64;
                    if is_sync { p.messages_in += 1; }
                });
                let now_ms = clock.elapsed().as_millis() as u64;
                let step = session.on_frame(frame, now_ms, || repo.inventory_for(&peer).unwrap_or_default())?;
                match step {
                    Step::Nothing => {}
                    Step::Start { reply, to_start, peer_lacks } => {
                        if let Some(reply) = reply {
                            sent(reply).await?;
                        }
                        debug!(count = to_start.len(), "starting sync of differing documents");
                        for doc in to_start {
                            // A document the peer left and no longer holds: nothing to tell it.
                            if peer_lacks.contains(&doc) && repo.exited_for(&doc, &peer)? {
                                repo.peer_left(&doc, &peer)?;
                                session.forget(&doc);
                                continue;
                            }
                            to_offer.push_back(doc);
                        }
                    }
                    Step::Left(doc) => repo.peer_left(&doc, &peer)?,
                    Step::Sync { doc, message, attestations } => {
                        let held = || repo.store().summary(&doc).ok().flatten().is_some();
                        let Some(ds) = session.peer_doc_sync(&doc, held, || repo.resume_sync(&doc, &peer)) else {
                            debug!(%doc, "ignored a sync message: too many unknown documents from this peer");
                            continue;
                        };
                        let started = std::time::Instant::now();
                        let received = repo.receive(&doc, &peer, &message, &attestations, ds)?;
                        status.count_round(received.applied, started.elapsed().as_secs_f64());
                        if received.applied > 0 {
                            session.now_held(&doc);
                        }
                        session.mark(&doc, received.in_sync);
                        if received.in_sync {
                            repo.peer_synced(&doc, &peer)?;
                        }
                        if let Some(reply) = received.reply {
                            send_sync(&repo, &mut session, &out, doc, reply).await?;
                        }
                    }
                    Step::Certificate(der) => {
                        if let Err(e) = repo.learn_certificate(&der) {
                            tracing::warn!("peer sent a certificate this node does not trust: {e}");
                        }
                    }
                }
            }
            changed = changes.recv() => match changed {
                Ok(Notice::Changed(doc)) => {
                    if doc == DocId::revocations() && repo.trust().revoked_at(&link.cert).is_some() {
                        return Err(SessionEnd::Revoked);
                    }
                    if repo.offers_to(&doc, &peer)? {
                        offer(&repo, &mut session, &doc, &out).await?;
                    }
                }
                Ok(Notice::Left(doc)) => {
                    session.forget(&doc);
                    sent(Frame::Left { doc }).await?;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "missed change notifications; reconciling again");
                    sent(session.reconcile(repo.inventory_for(&peer)?)).await?;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        if session.wants_reconcile() {
            debug!("unknown documents resolved; reconciling again for the ones ignored");
            sent(session.reconcile(repo.inventory_for(&peer)?)).await?;
        }
        let pending = session.pending();
        let ignored = session.unknown_ignored();
        let rtt = conn.rtt().as_secs_f64() * 1000.0;
        status.update(peer.as_str(), "", link.direction, |p| {
            p.docs_pending = pending;
            p.unknown_ids_ignored = ignored;
            p.rtt_ms = Some((rtt * 10.0).round() / 10.0);
            if pending == 0 {
                p.last_sync_at = Some(now_rfc3339());
            }
        });
    }
    Ok(())
}

/// Generates and sends the next sync message for `doc`, if any.
async fn offer(
    repo: &Repo,
    session: &mut PeerSession,
    doc: &DocId,
    out: &Outbox,
) -> Result<(), SessionEnd> {
    let peer = session.peer().clone();
    let ds = session.doc_sync(doc, || repo.resume_sync(doc, &peer));
    let (message, in_sync) = repo.generate(doc, &peer, ds)?;
    session.mark(doc, in_sync);
    if in_sync {
        repo.peer_synced(doc, &peer)?;
    }
    if let Some(message) = message {
        send_sync(repo, session, out, doc.clone(), message).await?;
    }
    Ok(())
}

/// Sends a sync message, preceded by any author certificate the peer has not been sent in
/// this session (so it can verify changes from offices it never met).
async fn send_sync(
    repo: &Repo,
    session: &mut PeerSession,
    out: &Outbox,
    doc: DocId,
    outbound: Outbound,
) -> Result<(), SessionEnd> {
    let Outbound {
        message,
        attestations,
    } = outbound;
    for cert in session.certificates_to_send(&attestations) {
        if let Some(der) = repo.trust().certificate(&cert) {
            out.send(Frame::Certificate { der })?;
        }
    }
    out.send(Frame::Sync {
        doc,
        message,
        attestations,
    })
}

/// Aborts the tasks when dropped, so a session never leaves orphans behind.
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{
        CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NodeIdentity, ca_init, ca_issue,
    };
    use crate::tls;
    use std::time::Duration;

    /// Two nodes' QUIC endpoints on loopback, connected with mutual TLS from a test CA.
    struct Pair {
        _dir: tempfile::TempDir,
        _endpoints: (quinn::Endpoint, quinn::Endpoint),
        client: quinn::Connection,
        server: quinn::Connection,
    }

    async fn connected() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        ca_init(&ca, &OrgPath::parse("hoboksar").unwrap()).unwrap();
        let identity = |org: &str| {
            let out = dir.path().join(org.replace('/', "_"));
            ca_issue(&ca, &OrgPath::parse(org).unwrap(), &out, 30).unwrap();
            NodeIdentity::load(
                &out.join(NODE_CERT_FILE),
                &out.join(NODE_KEY_FILE),
                &out.join(CA_CERT_FILE),
            )
            .unwrap()
        };
        let (town, village) = (
            identity("hoboksar/chagantolgay"),
            identity("hoboksar/chagantolgay/bayin"),
        );
        let server_ep = quinn::Endpoint::server(
            tls::server_config(&town).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connecting = client_ep
            .connect_with(
                tls::client_config(&village).unwrap(),
                server_ep.local_addr().unwrap(),
                &town.org.dns_name(),
            )
            .unwrap();
        let accepting = server_ep.clone();
        let server = tokio::spawn(async move { accepting.accept().await.unwrap().await });
        let client = connecting.await;
        let server = server.await.unwrap().unwrap();
        Pair {
            _dir: dir,
            _endpoints: (server_ep, client_ep),
            client: client.unwrap(),
            server,
        }
    }

    const BIG: usize = 4 * 1024 * 1024;

    fn big_frame() -> Frame {
        Frame::Sync {
            doc: DocId::new_member([1; 8]),
            message: vec![0; BIG],
            attestations: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_reads_ahead_no_more_than_its_byte_budget() {
        let pair = connected().await;
        let (mut send, _recv) = pair.client.open_bi().await.unwrap();
        let bytes = big_frame().encode();
        let frames = 10;
        let peer = tokio::spawn(async move {
            for _ in 0..frames {
                send.write_all(&bytes).await.unwrap();
            }
            send.finish().unwrap();
            send
        });
        let (_send, recv) = pair.server.accept_bi().await.unwrap();
        let (tx, mut rx) = mpsc::channel(READ_AHEAD_FRAMES);
        let budget = Arc::new(Semaphore::new(READ_AHEAD_BYTES));
        let reader = tokio::spawn(read_frames(recv, tx, budget));
        // Nothing handles the frames: the reader stops once they fill its budget.
        let fit = READ_AHEAD_BYTES / (BIG + 64);
        tokio::time::timeout(Duration::from_secs(20), async {
            while rx.len() < fit {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the reader reads ahead");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.len(), fit, "read ahead beyond {READ_AHEAD_BYTES} bytes");
        // Handled frames give their bytes back, and the reader goes on to the end.
        let mut handled = 0;
        while let Some(Ok((frame, size, permit))) = rx.recv().await {
            assert!(size > BIG && matches!(frame, Frame::Sync { .. }));
            drop(permit);
            handled += 1;
            if handled == frames {
                break;
            }
        }
        assert_eq!(handled, frames);
        let _keep_stream_open = peer.await.unwrap();
        reader.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_reading_ends_the_session_instead_of_filling_memory() {
        let pair = connected().await;
        // The server never reads this stream.
        let (send, _recv) = pair.client.open_bi().await.unwrap();
        let link = PeerLink {
            org: OrgPath::parse("hoboksar/chagantolgay").unwrap(),
            addr: String::new(),
            direction: "dialed",
            cert: [0; 32],
        };
        let (out, rx, queued) = Outbox::new(SEND_QUEUE_BYTES);
        let writer = tokio::spawn(write_frames(
            send,
            rx,
            queued.clone(),
            Arc::new(Status::default()),
            link,
        ));
        let mut sent = 0;
        let error = loop {
            match out.send(big_frame()) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                sent <= SEND_QUEUE_BYTES / BIG + 1,
                "the queue must be capped"
            );
        };
        assert!(
            matches!(error, SessionEnd::NotReading(mib) if mib >= 64),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("peer is not reading: "),
            "{error}"
        );
        assert!(queued.load(Ordering::Relaxed) > SEND_QUEUE_BYTES);
        writer.abort();
    }
}
