//! One sync session with one peer over a QUIC connection: the IO around
//! [`amphi_protocol::session::PeerSession`].
//!
//! A session runs three tasks: a reader that turns stream bytes into frames (bounded,
//! validated), a writer that drains the queue of frames to send, and the loop here, which
//! feeds frames and local change notifications to the office core's [`Link`].
//!
//! Sync messages for different case files are received on the blocking pool, up to
//! [`RECEIVING_AT_ONCE`] at a time (the gate, automerge and the write are most of a
//! session's work, and one session can then use every core). Order is kept where it
//! matters: a document's next message waits for its last; every other input (a certificate,
//! a roster or the revocation list, reconciliation, a notice) waits until nothing is out.
//!
//! Their writes are committed without waiting for the disk, and made durable together
//! (group commit: up to [`GROUP_COMMIT`] case files share one durable commit, on the
//! blocking pool while the next ones are received). Nothing of a message — its reply, its
//! notices to the other sessions — goes out before the flush that made it durable: a peer
//! is never told this node holds what a power cut could take from it.
//!
//! Memory per session is bounded: the reader reads ahead at most [`READ_AHEAD_BYTES`] of
//! frames not yet handled (a deflated frame counts at its inflated size); the send queue
//! never blocks the loop (two sessions both blocked sending while not reading would
//! deadlock), but a peer that stops reading while more than [`SEND_QUEUE_BYTES`] wait for
//! it ends the session.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amphi_protocol::attest::CertId;
use amphi_protocol::office::link::{Delivery, Effects, Handled, Link, LinkError};
use amphi_protocol::office::{Notice, Office, Received, StorageError};
use amphi_protocol::session::SessionError;
use amphi_protocol::wire::{DecodeError, Deflater, Frame, FrameDecoder};
use amphi_protocol::{DocId, OrgPath};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::repo::{Repo, now_ms};
use crate::status::{Direction, PeerState, Status, now_rfc3339};
use crate::store::Store;

/// Frames read ahead from the peer before the reader waits (see also [`READ_AHEAD_BYTES`]).
const READ_AHEAD_FRAMES: usize = 256;
/// Bytes of frames read from the peer and not yet handled, at most (a frame is at most
/// [`amphi_protocol::wire::MAX_FRAME`], so one always fits).
pub const READ_AHEAD_BYTES: usize = 16 * 1024 * 1024;
/// Sync messages of different case files received at once in one session, at most: enough
/// to keep every core busy. Malloc has as many arenas ([`crate::memory::ARENAS`]).
pub(crate) const RECEIVING_AT_ONCE: usize = 4;
/// Received case files whose writes wait for one durable commit together, at most: a flush
/// starts when this many wait, or when nothing else is being received.
pub const GROUP_COMMIT: usize = 16;
/// Bytes queued for a peer that is not reading them, at most: beyond, the session ends.
pub const SEND_QUEUE_BYTES: usize = 64 * 1024 * 1024;

impl From<LinkError> for SessionEnd {
    fn from(e: LinkError) -> SessionEnd {
        match e {
            LinkError::Protocol(e) => SessionEnd::Protocol(e),
            LinkError::Store(e) => SessionEnd::Store(e),
        }
    }
}

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
    Store(#[from] StorageError),
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
struct Outbox {
    frames: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
    cap: usize,
    /// The session's deflater, when the peer takes deflated frames
    /// ([`crate::tls::frame_compression`]). Its lock is held until the frame is queued:
    /// with one deflate stream for the session, frames must be sent in the order deflated.
    deflater: Option<std::sync::Mutex<Deflater>>,
}

impl Outbox {
    fn new(
        cap: usize,
        deflater: Option<Deflater>,
    ) -> (Outbox, mpsc::UnboundedReceiver<Queued>, Arc<AtomicUsize>) {
        let (frames, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            frames,
            queued: queued.clone(),
            cap,
            deflater: deflater.map(std::sync::Mutex::new),
        };
        (outbox, rx, queued)
    }

    /// Queues a frame; never waits. Fails when the writer stopped or when more than the cap
    /// waits for the peer.
    fn send(&self, frame: Frame) -> Result<(), SessionEnd> {
        let is_sync = matches!(frame, Frame::Sync { .. });
        let mut deflater = self
            .deflater
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let bytes = match deflater.as_mut() {
            Some(d) => d.encode(&frame),
            None => frame.encode(),
        };
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
    pub direction: Direction,
    /// The peer's certificate id.
    pub cert: CertId,
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    frames: mpsc::Sender<Incoming>,
    budget: Arc<Semaphore>,
) {
    let mut decoder = FrameDecoder::new();
    loop {
        let mut prefix = [0u8; 4];
        let result = async {
            if let Err(e) = recv.read_exact(&mut prefix).await {
                return Err(SessionEnd::Connection(e.to_string()));
            }
            let len = Frame::body_len(prefix)?;
            // Wait until the frames read ahead leave room for this one before reading it.
            let mut permit = budget
                .clone()
                .acquire_many_owned((len + 4) as u32)
                .await
                .map_err(|_| SessionEnd::Connection("session closed".into()))?;
            let mut body = vec![0u8; len];
            recv.read_exact(&mut body)
                .await
                .map_err(|e| SessionEnd::Connection(e.to_string()))?;
            let (frame, plain) = decoder.decode_body_sized(&body)?;
            drop(body);
            // A deflated frame takes its inflated size in memory: the budget counts that.
            if plain > len {
                let more = budget
                    .clone()
                    .acquire_many_owned((plain - len) as u32)
                    .await
                    .map_err(|_| SessionEnd::Connection("session closed".into()))?;
                permit.merge(more);
            }
            Ok((frame, len + 4, permit))
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
/// leaves, or `shutdown` fires. Every decision is the office core's ([`Link`]); this loop
/// only carries its effects out: frames to the writer, notices to the other sessions,
/// counts to the status page.
pub async fn run(
    conn: quinn::Connection,
    link: PeerLink,
    repo: Arc<Repo>,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SessionEnd> {
    let dialed = link.direction == Direction::Dialed;
    let (send, recv) = if dialed {
        conn.open_bi().await
    } else {
        conn.accept_bi().await
    }
    .map_err(|e| SessionEnd::Connection(e.to_string()))?;
    // Sending never blocks the loop: a session that stops reading while it waits to send,
    // facing a peer doing the same, would deadlock once both queues and QUIC windows fill.
    let compression = crate::tls::frame_compression(&conn);
    let (out, out_rx, queued) = Outbox::new(SEND_QUEUE_BYTES, compression.deflater());
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
    let office = repo.office();
    let mut session = Link::new(peer.clone(), dialed);
    let mut changes = repo.subscribe();
    let carry = |fx: Effects| -> Result<(), SessionEnd> {
        for frame in fx.frames {
            out.send(frame)?;
        }
        for der in &fx.certificates {
            if let Err(e) = repo.learn_certificate(der) {
                tracing::warn!("peer sent a certificate this node does not trust: {e}");
            }
        }
        if !fx.refused.is_empty() {
            status.count_refused(Some(peer.as_str()), &fx.refused);
        }
        repo.announce(fx.notices);
        Ok(())
    };
    carry(session.start(office, now_ms()))?;
    status.update(peer.as_str(), &link.addr, link.direction, |p| {
        p.state = PeerState::Connected;
        p.connected_since = Some(now_rfc3339());
        p.last_error = None;
    });
    // How frames travel tells an operator, during an upgrade, which peers still run an older
    // release (`EachFrame`: the release before; `Plain`: older).
    info!(frames = ?compression, "session started");

    let finish = |session: &mut Link, (delivery, received, took): Receipt| {
        let fx = session.delivered(office, delivery, received)?;
        if let Some(applied) = fx.applied {
            status.count_round(applied, took.as_secs_f64());
        }
        carry(fx)
    };
    // Sync messages for different case files are received on the blocking pool, several at
    // once (the gate, automerge and the store's write are the slow part of a session); a
    // notice waits only for a delivery of its own document, every other input until those
    // out have come back (see `Link::take_frame`).
    let mut receiving: JoinSet<Receipt> = JoinSet::new();
    // Received, written, not yet durable; and the flush under way (at most one).
    let mut unflushed: Vec<Receipt> = Vec::new();
    let mut flushing: JoinSet<(Result<(), StorageError>, Vec<Receipt>)> = JoinSet::new();
    let mut out_docs: HashSet<DocId> = HashSet::new();
    // An input read but not yet handled: it waits for deliveries to come back.
    let mut waiting: Option<Input> = None;
    let result = async {
        loop {
            if flushing.is_empty()
                && !unflushed.is_empty()
                && (receiving.is_empty() || unflushed.len() >= GROUP_COMMIT)
            {
                let batch = std::mem::take(&mut unflushed);
                let repo = repo.clone();
                flushing.spawn_blocking(move || (repo.store().flush().map_err(Into::into), batch));
            }
            let nothing_out = out_docs.is_empty();
            let ready = match &waiting {
                None => false,
                Some(Input::Frame(frame, _)) => match Link::runs_beside_others(frame) {
                    Some(doc) => {
                        !out_docs.contains(doc)
                            && receiving.len() < RECEIVING_AT_ONCE
                            && unflushed.len() < GROUP_COMMIT
                    }
                    None => nothing_out,
                },
                // A notice about a document not out is handled beside the deliveries (most
                // are the deliveries' own, a no-op here): waiting for every delivery to come
                // back for each one made the receive serial and let notices overflow, and
                // each overflow costs a whole reconciliation.
                Some(Input::Notice(Ok(notice))) => !out_docs.contains(&notice.doc),
                Some(Input::Notice(Err(_))) => nothing_out,
            };
            if ready {
                match waiting.take().expect("checked") {
                    Input::Frame(frame, permit) => {
                        let beside_others = Link::runs_beside_others(&frame).is_some();
                        match session.take_frame(office, frame, now_ms())? {
                            Handled::Done(fx) => carry(fx)?,
                            Handled::Deliver(delivery) if beside_others => {
                                out_docs.insert(delivery.doc().clone());
                                let repo = repo.clone();
                                receiving.spawn_blocking(move || {
                                    let receipt = receive(delivery, repo.office(), Commit::Later);
                                    drop(permit);
                                    receipt
                                });
                            }
                            // Rosters and the revocation list: received alone, here.
                            Handled::Deliver(delivery) => {
                                finish(&mut session, receive(delivery, office, Commit::Now))?
                            }
                        }
                    }
                    Input::Notice(Ok(notice)) => {
                        if notice.doc == DocId::revocations()
                            && repo.trust().revoked_at(&link.cert).is_some()
                        {
                            return Err(SessionEnd::Revoked);
                        }
                        carry(session.on_notice(office, &notice, now_ms())?)?;
                    }
                    Input::Notice(Err(missed)) => {
                        debug!(missed, "missed change notifications; reconciling again");
                        status.update(peer.as_str(), "", link.direction, |p| {
                            p.notices_missed += missed;
                        });
                        carry(session.on_missed_notices(office))?;
                    }
                }
            } else {
                let idle = waiting.is_none() && nothing_out;
                // In this order: deliveries back, notices, frames, then offers (which wait
                // until no frame is unread) and the wake-up. Notices come before frames so
                // that the loop reads them as fast as deliveries make them (one each): picked
                // at random, they fell behind during a cold replication and overflowed
                // hundreds of times, each overflow costing both offices a reconciliation.
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    Some(done) = receiving.join_next(), if !receiving.is_empty() => {
                        let receipt = done.unwrap_or_else(|e| match e.try_into_panic() {
                            Ok(panic) => std::panic::resume_unwind(panic),
                            Err(e) => panic!("a delivery was cancelled: {e}"),
                        });
                        unflushed.push(receipt);
                    }
                    Some(done) = flushing.join_next(), if !flushing.is_empty() => {
                        let (flushed, batch) = done.unwrap_or_else(|e| match e.try_into_panic() {
                            Ok(panic) => std::panic::resume_unwind(panic),
                            Err(e) => panic!("a flush was cancelled: {e}"),
                        });
                        flushed?;
                        for receipt in batch {
                            out_docs.remove(receipt.0.doc());
                            finish(&mut session, receipt)?;
                        }
                    }
                    changed = changes.recv(), if waiting.is_none() => match changed {
                        Ok(notice) => waiting = Some(Input::Notice(Ok(notice))),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            waiting = Some(Input::Notice(Err(missed)));
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    frame = incoming.recv(), if waiting.is_none() => {
                        let Some(frame) = frame else { break };
                        // The permit gives the frame's bytes back to the reader once handled.
                        let (frame, size, permit) = frame?;
                        let is_sync = matches!(frame, Frame::Sync { .. });
                        status.update(peer.as_str(), "", link.direction, |p| {
                            p.last_seen = Some(now_rfc3339());
                            p.bytes_in += size as u64;
                            if is_sync { p.messages_in += 1; }
                        });
                        waiting = Some(Input::Frame(frame, permit));
                        continue;
                    }
                    _ = std::future::ready(()), if idle && session.has_offers(now_ms()) && incoming.is_empty() => {
                        carry(session.offer_batch(office, now_ms())?)?;
                    }
                    // Requests move on by time alone too (an unanswered one times out).
                    _ = tokio::time::sleep(Duration::from_millis(500)), if session.awaits_answers() => {}
                }
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
    .await;
    // Deliveries still out finish their work and are made durable before the session lets go
    // of the store. Their replies are not sent, but the other sessions hear what they
    // changed: dropped, those notices left a change taken just as its link went down
    // waiting at this office for the next reconciliation (found by the county simulator).
    let mut taken = unflushed;
    while let Some(done) = receiving.join_next().await {
        taken.extend(done.ok());
    }
    while let Some(done) = flushing.join_next().await {
        taken.extend(done.into_iter().flat_map(|(_, batch)| batch));
    }
    let store = repo.clone();
    match tokio::task::spawn_blocking(move || store.store().flush()).await {
        Ok(Ok(())) => {
            for (_, received, _) in taken {
                repo.announce(received.map(|r| r.notices).unwrap_or_default());
            }
        }
        Ok(Err(e)) => {
            tracing::error!("the last received case files could not be made durable: {e}")
        }
        Err(e) => tracing::error!("the last flush did not run: {e}"),
    }
    result
}

/// An input to the session loop that may have to wait for deliveries to come back: a frame
/// from the peer (with its share of the read-ahead budget), or a notice from the other
/// sessions (`Err`: this many were missed).
enum Input {
    Frame(Frame, OwnedSemaphorePermit),
    Notice(Result<Notice, u64>),
}

/// A delivery back from receiving: what it did, and how long that took.
type Receipt = (Box<Delivery>, Result<Received, StorageError>, Duration);

/// When a delivery's write becomes durable.
#[derive(Clone, Copy)]
enum Commit {
    /// Before [`receive`] returns.
    Now,
    /// At the session's next flush ([`Store::flush`]), before anything of it goes out.
    Later,
}

fn receive(mut delivery: Box<Delivery>, office: &Office<Store>, commit: Commit) -> Receipt {
    let started = Instant::now();
    let received = match commit {
        Commit::Now => delivery.receive(office),
        Commit::Later => delivery.receive_unflushed(office),
    };
    (delivery, received, started.elapsed())
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

    /// A frame of `BIG` bytes that deflate cannot shrink.
    fn big_frame() -> Frame {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise = (0..BIG)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Frame::Sync {
            doc: DocId::new_member([1; 8]),
            message: noise,
            attestations: vec![],
        }
    }

    /// A frame of `BIG` zeros: a few KiB on the wire.
    fn zeros_frame() -> Frame {
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
        let frames = 10;
        // One deflate stream for the session: after the first, each frame is a few bytes.
        let mut deflater = Deflater::streaming();
        let wire: Vec<Vec<u8>> = (0..frames)
            .map(|_| deflater.encode(&zeros_frame()))
            .collect();
        let peer = tokio::spawn(async move {
            for bytes in wire {
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
            // Zeros travel deflated, yet each frame holds its inflated bytes of the budget.
            assert!(size < BIG / 100, "{size} bytes on the wire");
            assert!(matches!(frame, Frame::Sync { ref message, .. } if message.len() == BIG));
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

    /// An outbox deflating into one stream, and its writer on `send`.
    fn streaming_outbox(
        send: quinn::SendStream,
    ) -> (Outbox, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
        let link = PeerLink {
            org: OrgPath::parse("hoboksar/chagantolgay").unwrap(),
            addr: String::new(),
            direction: Direction::Dialed,
            cert: [0; 32],
        };
        let (out, rx, queued) = Outbox::new(SEND_QUEUE_BYTES, Some(Deflater::streaming()));
        let status = Arc::new(Status::default());
        let writer = tokio::spawn(write_frames(send, rx, queued.clone(), status, link));
        (out, writer, queued)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_queued_from_several_threads_reach_the_peer_in_the_order_deflated() {
        let pair = connected().await;
        let (send, _recv) = pair.client.open_bi().await.unwrap();
        let (out, writer, _) = streaming_outbox(send);
        let out = Arc::new(out);
        let (per_thread, threads) = (200u8, 4u8);
        let senders: Vec<_> = (0..threads)
            .map(|t| {
                let out = out.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let frame = Frame::Sync {
                            doc: DocId::new_member([t, i, 0, 0, 0, 0, 0, 0]),
                            message: format!("case file {t}/{i} of hoboksar/bayin")
                                .repeat(8)
                                .into_bytes(),
                            attestations: vec![],
                        };
                        out.send(frame).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        drop(out);
        let (_send, recv) = pair.server.accept_bi().await.unwrap();
        let (tx, mut rx) = mpsc::channel(READ_AHEAD_FRAMES);
        let reader = tokio::spawn(read_frames(
            recv,
            tx,
            Arc::new(Semaphore::new(READ_AHEAD_BYTES)),
        ));
        let mut next = vec![0u8; threads as usize];
        for _ in 0..u32::from(per_thread) * u32::from(threads) {
            let (frame, _, _) = rx.recv().await.unwrap().expect("every frame decodes");
            let Frame::Sync { doc, .. } = frame else {
                panic!("{frame:?}")
            };
            // Each thread's frames arrive in the order it queued them.
            let t = (0..threads)
                .find(|t| doc == DocId::new_member([*t, next[*t as usize], 0, 0, 0, 0, 0, 0]))
                .unwrap_or_else(|| panic!("{doc} out of order"));
            next[t as usize] += 1;
        }
        assert!(next.iter().all(|n| *n == per_thread));
        writer.abort();
        reader.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_stops_reading_ends_the_session_instead_of_filling_memory() {
        let pair = connected().await;
        // The server never reads this stream.
        let (send, _recv) = pair.client.open_bi().await.unwrap();
        let (out, writer, queued) = streaming_outbox(send);
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
