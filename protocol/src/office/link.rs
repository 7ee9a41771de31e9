//! An office's link with one peer: the session state machine ([`PeerSession`]) driven by the
//! office core, turning what happens into [`Effects`] for the node (or the simulator) to
//! carry out.
//!
//! Inputs: the link came up ([`Link::start`]), a frame from the peer ([`Link::on_frame`]), a
//! [`Notice`] about a document ([`Link::on_notice`]), notices were missed
//! ([`Link::on_missed_notices`]), and time to offer the next batch of differing documents
//! ([`Link::offer_batch`], when [`Link::has_offers`] and nothing else waits). Nothing here
//! reads a socket or a clock: `now_ms` (unix milliseconds) comes with every input.

use std::collections::VecDeque;

use super::{Notice, NoticeKind, Office, Outbound, Storage, StorageError};
use crate::session::{PeerSession, SessionError, Step};
use crate::syncmsg::SyncMessage;
use crate::wire::Frame;
use crate::{DocId, OrgPath};

/// Documents offered per batch, between reads, when many differ.
pub const OFFER_BATCH: usize = 32;

/// Why a link must end.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer broke the session protocol.
    #[error(transparent)]
    Protocol(#[from] SessionError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// What the node must do after an input, in order.
#[derive(Debug, Default)]
pub struct Effects {
    /// Frames to send to this peer, in order.
    pub frames: Vec<Frame>,
    /// What the other links must hear of.
    pub notices: Vec<Notice>,
    /// Certificates the peer sent: check each against the CA and remember it before the
    /// next input (the changes that follow are signed with it).
    pub certificates: Vec<Vec<u8>>,
    /// A sync message was received: how many changes it applied.
    pub applied: Option<usize>,
    /// Reason codes of changes refused.
    pub refused: Vec<&'static str>,
}

/// True when a sync message says its sender holds nothing of the document: no heads, no
/// changes, and the one `have` automerge always sends from an empty document (a sync reset,
/// [`crate::docsync::DocSync::generate`]'s "forget" message, has none: its sender may hold
/// the document; taking it for "holds nothing" stalled a leaving office for good, found by
/// the county simulator).
fn holds_nothing(message: &[u8]) -> bool {
    SyncMessage::decode(message)
        .is_ok_and(|m| m.heads.is_empty() && m.changes.is_empty() && m.have.len() == 1)
}

/// One peer's link.
#[derive(Debug)]
pub struct Link {
    session: PeerSession,
    dialed: bool,
    to_offer: VecDeque<DocId>,
}

impl Link {
    /// A link with `peer` (its org verified from its certificate); `dialed` when this office
    /// dialed it (the dialer starts reconciliation).
    pub fn new(peer: OrgPath, dialed: bool) -> Link {
        Link {
            session: PeerSession::new(peer),
            dialed,
            to_offer: VecDeque::new(),
        }
    }

    /// The peer's org.
    pub fn peer(&self) -> &OrgPath {
        self.session.peer()
    }

    /// Documents not yet known to be in sync with the peer.
    pub fn pending(&self) -> usize {
        self.session.pending()
    }

    /// Unknown document ids the peer named that were ignored (over the cap).
    pub fn unknown_ignored(&self) -> u64 {
        self.session.unknown_ignored()
    }

    /// True when documents wait to be offered.
    pub fn has_offers(&self) -> bool {
        !self.to_offer.is_empty()
    }

    /// The link is up: hello, and (the dialer) the first reconciliation message.
    pub fn start<S: Storage>(&mut self, office: &Office<S>) -> Effects {
        let mut fx = Effects::default();
        fx.frames.push(PeerSession::hello(office.me()));
        if office.me().parent().as_ref() == Some(self.peer()) {
            // Documents leaving this office wait for the parent to hold them: a sync round
            // settles that even when reconciliation finds nothing different.
            self.to_offer.extend(office.awaiting_upstream());
        }
        if self.dialed {
            fx.frames
                .push(self.session.reconcile(office.inventory_for(self.peer())));
        }
        fx
    }

    /// Notices were missed: reconcile again to find what differs.
    pub fn on_missed_notices<S: Storage>(&mut self, office: &Office<S>) -> Effects {
        Effects {
            frames: vec![self.session.reconcile(office.inventory_for(self.peer()))],
            ..Effects::default()
        }
    }

    /// Handles one frame from the peer.
    pub fn on_frame<S: Storage>(
        &mut self,
        office: &Office<S>,
        frame: Frame,
        now_ms: i64,
    ) -> Result<Effects, LinkError> {
        let mut fx = Effects::default();
        let peer = self.peer().clone();
        let step = self
            .session
            .on_frame(frame, now_ms.max(0) as u64, || office.inventory_for(&peer))?;
        match step {
            Step::Nothing => {}
            Step::Start {
                reply,
                to_start,
                peer_lacks,
            } => {
                fx.frames.extend(reply);
                for doc in to_start {
                    // A document the peer left and no longer holds: nothing to tell it.
                    if peer_lacks.contains(&doc) && office.exited_for(&doc, &peer) {
                        fx.notices.extend(office.peer_left(&doc, &peer, now_ms)?);
                        self.session.forget(&doc);
                        continue;
                    }
                    self.to_offer.push_back(doc);
                }
            }
            Step::Left(doc) => fx.notices.extend(office.peer_left(&doc, &peer, now_ms)?),
            Step::Sync {
                doc,
                message,
                attestations,
            } => {
                if office.exited_for(&doc, &peer) && holds_nothing(&message) {
                    // The peer's org left this document's scope and the peer holds nothing
                    // of it (it purged it, or never had it): it has left, as if it said so.
                    // Answering would send it what it may no longer receive.
                    fx.notices.extend(office.peer_left(&doc, &peer, now_ms)?);
                    self.session.forget(&doc);
                    return Ok(fx);
                }
                let held = || office.store().summary(&doc).ok().flatten().is_some();
                let Some(ds) = self
                    .session
                    .peer_doc_sync(&doc, held, || office.resume_sync(&doc, &peer))
                else {
                    // Over the cap of unknown documents from this peer: ignored (counted).
                    return Ok(fx);
                };
                let received = office.receive(&doc, &peer, &message, &attestations, ds, now_ms)?;
                fx.applied = Some(received.applied);
                fx.refused = received.refused;
                fx.notices.extend(received.notices);
                if received.applied > 0 {
                    self.session.now_held(&doc);
                }
                self.session.mark(&doc, received.in_sync);
                if received.in_sync {
                    fx.notices.extend(office.peer_synced(&doc, &peer, now_ms)?);
                }
                if let Some(reply) = received.reply {
                    self.send_sync(office, doc, reply, &mut fx);
                }
            }
            Step::Certificate(der) => fx.certificates.push(der),
        }
        if self.session.wants_reconcile() {
            // Unknown documents resolved: reconcile again for the ones ignored.
            fx.frames
                .push(self.session.reconcile(office.inventory_for(&peer)));
        }
        Ok(fx)
    }

    /// Handles a notice about a document. A change this peer's own message caused is not
    /// offered back: the reply to that message said everything.
    pub fn on_notice<S: Storage>(
        &mut self,
        office: &Office<S>,
        notice: &Notice,
        now_ms: i64,
    ) -> Result<Effects, LinkError> {
        let mut fx = Effects::default();
        match notice.kind {
            NoticeKind::Changed => {
                if notice.cause.as_ref() != Some(self.peer())
                    && office.offers_to(&notice.doc, self.peer())
                {
                    self.offer(office, &notice.doc, now_ms, &mut fx)?;
                }
            }
            NoticeKind::Left => {
                self.session.forget(&notice.doc);
                self.to_offer.retain(|d| *d != notice.doc);
                fx.frames.push(Frame::Left {
                    doc: notice.doc.clone(),
                });
            }
        }
        Ok(fx)
    }

    /// Offers the next [`OFFER_BATCH`] documents found to differ.
    pub fn offer_batch<S: Storage>(
        &mut self,
        office: &Office<S>,
        now_ms: i64,
    ) -> Result<Effects, LinkError> {
        let mut fx = Effects::default();
        let n = OFFER_BATCH.min(self.to_offer.len());
        for doc in self.to_offer.drain(..n).collect::<Vec<_>>() {
            self.offer(office, &doc, now_ms, &mut fx)?;
        }
        Ok(fx)
    }

    /// Generates and queues the next sync message for `doc`, if any.
    fn offer<S: Storage>(
        &mut self,
        office: &Office<S>,
        doc: &DocId,
        now_ms: i64,
        fx: &mut Effects,
    ) -> Result<(), LinkError> {
        let peer = self.peer().clone();
        let ds = self
            .session
            .doc_sync(doc, || office.resume_sync(doc, &peer));
        let (message, in_sync) = office.generate(doc, &peer, ds)?;
        self.session.mark(doc, in_sync);
        if in_sync {
            fx.notices.extend(office.peer_synced(doc, &peer, now_ms)?);
        }
        if let Some(message) = message {
            self.send_sync(office, doc.clone(), message, fx);
        }
        Ok(())
    }

    /// Queues a sync message, preceded by any author certificate the peer has not been sent
    /// in this session (so it can verify changes from offices it never met).
    fn send_sync<S: Storage>(
        &mut self,
        office: &Office<S>,
        doc: DocId,
        outbound: Outbound,
        fx: &mut Effects,
    ) {
        let Outbound {
            message,
            attestations,
        } = outbound;
        for cert in self.session.certificates_to_send(&attestations) {
            if let Some(der) = office.auth.certificate(&cert) {
                fx.frames.push(Frame::Certificate { der });
            }
        }
        fx.frames.push(Frame::Sync {
            doc,
            message,
            attestations,
        });
    }
}
