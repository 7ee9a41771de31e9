//! One sync session with one peer over a QUIC connection: the IO around
//! [`amphi_protocol::session::PeerSession`].
//!
//! A session runs three tasks: a reader that turns stream bytes into frames (bounded,
//! validated), a writer that drains a bounded queue of frames (backpressure), and the loop
//! here, which feeds frames and local change notifications to the session and the repo.

use std::sync::Arc;

use amphi_protocol::attest::CertId;
use amphi_protocol::session::{PeerSession, SessionError, Step};
use amphi_protocol::wire::{DecodeError, Frame};
use amphi_protocol::{DocId, OrgPath};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info};

use crate::repo::{Notice, Outbound, Repo};
use crate::status::{PeerState, Status, now_rfc3339};
use crate::store::StoreError;

/// Frames read ahead from the peer before the reader waits.
const SEND_QUEUE: usize = 256;
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
    frames: mpsc::Sender<Result<(Frame, usize), SessionEnd>>,
) {
    loop {
        let mut prefix = [0u8; 4];
        let result = async {
            if let Err(e) = recv.read_exact(&mut prefix).await {
                return Err(SessionEnd::Connection(e.to_string()));
            }
            let len = Frame::body_len(prefix)?;
            let mut body = vec![0u8; len];
            recv.read_exact(&mut body)
                .await
                .map_err(|e| SessionEnd::Connection(e.to_string()))?;
            Ok((Frame::decode_body(&body)?, len + 4))
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
    mut frames: mpsc::UnboundedReceiver<Frame>,
    status: Arc<Status>,
    link: PeerLink,
) {
    while let Some(frame) = frames.recv().await {
        let bytes = frame.encode();
        if send.write_all(&bytes).await.is_err() {
            return;
        }
        let is_sync = matches!(frame, Frame::Sync { .. });
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
    let (out, out_rx) = mpsc::unbounded_channel();
    let (in_tx, mut incoming) = mpsc::channel(SEND_QUEUE);
    let reader = tokio::spawn(read_frames(recv, in_tx));
    let writer = tokio::spawn(write_frames(send, out_rx, status.clone(), link.clone()));
    let _abort = AbortOnDrop(vec![reader, writer]);

    let peer = link.org.clone();
    let mut session = PeerSession::new(peer.clone());
    let mut changes = repo.subscribe();
    let sent = |f: Frame| {
        let out = out.clone();
        async move {
            out.send(f)
                .map_err(|_| SessionEnd::Connection("writer stopped".into()))
        }
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
                let (frame, size) = frame?;
                let is_sync = matches!(frame, Frame::Sync { .. });
                status.update(peer.as_str(), "", link.direction, |p| {
                    p.last_seen = Some(now_rfc3339());
                    p.bytes_in += size as u64;
                    if is_sync { p.messages_in += 1; }
                });
                let step = session.on_frame(frame, || repo.inventory_for(&peer).unwrap_or_default())?;
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
                        let ds = session.doc_sync(&doc, || repo.resume_sync(&doc, &peer));
                        let started = std::time::Instant::now();
                        let received = repo.receive(&doc, &peer, &message, &attestations, ds)?;
                        status.count_round(received.applied, started.elapsed().as_secs_f64());
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
        let pending = session.pending();
        let rtt = conn.rtt().as_secs_f64() * 1000.0;
        status.update(peer.as_str(), "", link.direction, |p| {
            p.docs_pending = pending;
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
    out: &mpsc::UnboundedSender<Frame>,
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
    out: &mpsc::UnboundedSender<Frame>,
    doc: DocId,
    outbound: Outbound,
) -> Result<(), SessionEnd> {
    let Outbound {
        message,
        attestations,
    } = outbound;
    let closed = |_| SessionEnd::Connection("writer stopped".into());
    for cert in session.certificates_to_send(&attestations) {
        if let Some(der) = repo.trust().certificate(&cert) {
            out.send(Frame::Certificate { der }).map_err(closed)?;
        }
    }
    out.send(Frame::Sync {
        doc,
        message,
        attestations,
    })
    .map_err(closed)
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
