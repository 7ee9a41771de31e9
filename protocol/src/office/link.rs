//! An office's link with one peer: the session state machine ([`PeerSession`]) driven by the
//! office core, turning what happens into [`Effects`] for the node (or the simulator) to
//! carry out.
//!
//! Inputs: the link came up ([`Link::start`]), a frame from the peer ([`Link::on_frame`]), a
//! [`Notice`] about a document ([`Link::on_notice`]), notices were missed
//! ([`Link::on_missed_notices`]), and time to offer the next batch of differing documents
//! ([`Link::offer_batch`], when [`Link::has_offers`] and nothing else waits). Nothing here
//! reads a socket or a clock: `now_ms` (unix milliseconds) comes with every input.
//!
//! A frame can also be taken in two halves, so that a node receives several documents at
//! once on several cores: [`Link::take_frame`] hands a sync message out as a [`Delivery`]
//! (the message with the document's sync progress), which runs the gate and the store on
//! any thread, and [`Link::delivered`] takes its outcome back. [`Link::on_frame`] is the two
//! halves in a row, on one thread.
//!
//! Requests — messages about documents the peer holds and this office does not, each
//! answered with a whole document — are flow-controlled ([`super::requests`]): at most a
//! window of them is outstanding, the rest wait and go out as answers come in.

use std::collections::VecDeque;

use super::catchup::CatchUp;
use super::requests::{REQUEST_WINDOW, Requests};
use super::{Commit, Notice, NoticeKind, Office, Outbound, Received, Storage, StorageError};
use crate::attest::Attestation;
use crate::docsync::DocSync;
use crate::session::{PeerSession, SessionError, Step};
use crate::syncmsg::SyncMessage;
use crate::wire::Frame;
use crate::{DocId, DocKind, OrgPath};

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

/// What taking a frame left to do ([`Link::take_frame`]).
#[derive(Debug)]
pub enum Handled {
    /// All done: carry these out.
    Done(Effects),
    /// A sync message to receive, then hand back to [`Link::delivered`].
    Deliver(Box<Delivery>),
}

/// A peer's sync message for one document, with the link's sync progress for it, taken out
/// of the link so that the slow part — the gate, automerge, the durable write — can run on
/// another thread, beside other documents' deliveries.
#[derive(Debug)]
pub struct Delivery {
    doc: DocId,
    peer: OrgPath,
    message: Vec<u8>,
    attestations: Vec<Attestation>,
    sync: DocSync,
    now_ms: i64,
}

impl Delivery {
    /// The document it is about.
    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    /// Receives the message through the office's gate and stores what it admitted
    /// ([`Office::receive`]). Safe on any thread; one document's deliveries must not run
    /// at the same time (the link hands out one at a time per document).
    pub fn receive<S: Storage>(&mut self, office: &Office<S>) -> Result<Received, StorageError> {
        self.receive_as(office, Commit::Durable)
    }

    /// [`Delivery::receive`], leaving what it admitted for the caller to make durable with
    /// [`Storage::flush`] ([`Storage::save_unflushed`]) before it hands the outcome to
    /// [`Link::delivered`]: several deliveries' writes then share one durable commit.
    pub fn receive_unflushed<S: Storage>(
        &mut self,
        office: &Office<S>,
    ) -> Result<Received, StorageError> {
        self.receive_as(office, Commit::Unflushed)
    }

    fn receive_as<S: Storage>(
        &mut self,
        office: &Office<S>,
        commit: Commit,
    ) -> Result<Received, StorageError> {
        let message = (
            &self.doc,
            &self.peer,
            &self.message[..],
            &self.attestations[..],
        );
        office.receive_as(commit, message, &mut self.sync, self.now_ms)
    }
}

/// One peer's link.
#[derive(Debug)]
pub struct Link {
    session: PeerSession,
    dialed: bool,
    /// Documents to offer, each with whether the peer holds nothing of it
    /// ([`Office::offer_to_empty`]).
    to_offer: VecDeque<(DocId, bool)>,
    requests: Requests,
    /// Requests that went unanswered in this session.
    unanswered: u64,
    /// Documents changed while the link was down, sent before reconciling.
    catch_up: CatchUp,
}

impl Link {
    /// A link with `peer` (its org verified from its certificate); `dialed` when this office
    /// dialed it (the dialer starts reconciliation).
    pub fn new(peer: OrgPath, dialed: bool) -> Link {
        Link {
            session: PeerSession::new(peer),
            dialed,
            to_offer: VecDeque::new(),
            requests: Requests::new(REQUEST_WINDOW),
            unanswered: 0,
            catch_up: CatchUp::default(),
        }
    }

    /// The same link keeping at most `window` requests outstanding (default
    /// [`REQUEST_WINDOW`]).
    pub fn with_request_window(mut self, window: usize) -> Link {
        self.requests = Requests::new(window);
        self
    }

    /// The same link tracking at most `cap` documents the peer holds and this office lacks
    /// (default [`crate::session::MAX_UNKNOWN`]).
    pub fn with_unknown_cap(mut self, cap: usize) -> Link {
        self.session = self.session.with_unknown_cap(cap);
        self
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

    /// True when documents wait to be offered, or held requests can go at `now_ms`, or a
    /// request has gone unanswered, or reconciliation waited long enough for the catch-up
    /// ([`Link::offer_batch`] sees to all four).
    pub fn has_offers(&self, now_ms: i64) -> bool {
        !self.to_offer.is_empty() || self.requests.can_release(now_ms) || self.catch_up.due(now_ms)
    }

    /// Requests that went unanswered in this session (each held a slot of the window for
    /// [`super::requests::REQUEST_TIMEOUT_MS`]).
    pub fn unanswered_requests(&self) -> u64 {
        self.unanswered
    }

    /// Requests held until the window has room.
    pub fn held_requests(&self) -> usize {
        self.requests.held()
    }

    /// True while requests are held or unanswered, or reconciliation waits for the
    /// catch-up: time alone may move them on (ask [`Link::has_offers`] again within
    /// [`super::requests::REQUEST_TIMEOUT_MS`]).
    pub fn awaits_answers(&self) -> bool {
        self.requests.waiting() || self.catch_up.owes_reconcile()
    }

    /// The link is up at `now_ms`: hello; the documents changed since they were last in sync
    /// with the peer go first ([`super::catchup`]), and (the dialer) the first reconciliation
    /// message once they are settled, or at once when there are none.
    pub fn start<S: Storage>(&mut self, office: &Office<S>, now_ms: i64) -> Effects {
        let mut fx = Effects::default();
        fx.frames.push(PeerSession::hello(office.me()));
        if office.me().parent().as_ref() == Some(self.peer()) {
            // Documents leaving this office wait for the parent to hold them: a sync round
            // settles that even when reconciliation finds nothing different.
            self.to_offer
                .extend(office.awaiting_upstream().into_iter().map(|d| (d, false)));
        }
        let inventory = office.inventory_for(self.peer());
        let changed = office.changed_since_synced(self.peer(), &inventory);
        let queued: std::collections::HashSet<DocId> =
            self.to_offer.iter().map(|(d, _)| d.clone()).collect();
        let fresh: Vec<(DocId, bool)> = changed
            .iter()
            .filter(|d| !queued.contains(*d))
            .map(|d| (d.clone(), false))
            .collect();
        self.to_offer.extend(fresh);
        if !changed.is_empty() {
            tracing::info!(peer = %self.peer(), docs = changed.len(), "catching up on documents changed since the last sync, before reconciling");
        }
        self.catch_up = CatchUp::new(changed, now_ms, self.dialed);
        if self.dialed && !self.catch_up.owes_reconcile() {
            fx.frames.push(self.session.reconcile(inventory));
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

    /// Handles one frame from the peer, all of it on this thread.
    pub fn on_frame<S: Storage>(
        &mut self,
        office: &Office<S>,
        frame: Frame,
        now_ms: i64,
    ) -> Result<Effects, LinkError> {
        match self.take_frame(office, frame, now_ms)? {
            Handled::Done(fx) => Ok(fx),
            Handled::Deliver(mut delivery) => {
                let received = delivery.receive(office);
                self.delivered(office, delivery, received)
            }
        }
    }

    /// Handles one frame from the peer up to the slow part: a sync message comes back as a
    /// [`Delivery`] to run (on any thread) and hand back to [`Link::delivered`]; everything
    /// else is done here.
    ///
    /// While a delivery is out, its document has no sync progress in the link: the caller
    /// gives the link nothing but other documents' sync messages that
    /// [`Link::runs_beside_others`] allows, notices about other documents
    /// ([`Link::on_notice`]), and their deliveries, until it is back.
    pub fn take_frame<S: Storage>(
        &mut self,
        office: &Office<S>,
        frame: Frame,
        now_ms: i64,
    ) -> Result<Handled, LinkError> {
        let mut fx = Effects::default();
        let peer = self.peer().clone();
        let Some(frame) = self.catch_up.swallow(frame, now_ms) else {
            return Ok(Handled::Done(fx));
        };
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
                        self.requests.forget(&doc);
                        continue;
                    }
                    let lacks = peer_lacks.contains(&doc);
                    self.to_offer.push_back((doc, lacks));
                }
            }
            Step::Left(doc) => {
                self.requests.forget(&doc);
                self.catch_up.settled(&doc, now_ms);
                fx.notices.extend(office.peer_left(&doc, &peer, now_ms)?);
            }
            Step::Sync {
                doc,
                message,
                attestations,
            } => {
                if office.exited_for(&doc, &peer) && holds_nothing(&message) {
                    // The peer's org left this document's scope and the peer holds nothing
                    // of it (it purged it, or never had it): it has left, as if it said so.
                    // Answering would send it what it may no longer receive; saying it is
                    // gone from here too ends its request at once. (Unanswered, the request
                    // held a slot of the peer's window for 10 s, and an office asks again
                    // for every file it ever left at each reconnect: exits stay in this
                    // office's inventory.)
                    fx.frames.push(Frame::Left { doc: doc.clone() });
                    fx.notices.extend(office.peer_left(&doc, &peer, now_ms)?);
                    self.session.forget(&doc);
                    self.requests.forget(&doc);
                    self.release_requests(office, now_ms, &mut fx);
                    return Ok(Handled::Done(fx));
                }
                let held = || office.store().summary(&doc).ok().flatten().is_some();
                let Some(sync) = self
                    .session
                    .take_peer_doc_sync(&doc, held, || office.resume_sync(&doc, &peer))
                else {
                    // Over the cap of unknown documents from this peer: ignored (counted).
                    self.release_requests(office, now_ms, &mut fx);
                    return Ok(Handled::Done(fx));
                };
                return Ok(Handled::Deliver(Box::new(Delivery {
                    doc,
                    peer,
                    message,
                    attestations,
                    sync,
                    now_ms,
                })));
            }
            Step::Certificate(der) => fx.certificates.push(der),
        }
        self.release_requests(office, now_ms, &mut fx);
        Ok(Handled::Done(fx))
    }

    /// Once the catch-up is over ([`super::catchup`]): the reconciliation this office owes,
    /// started afresh from what it holds now.
    fn end_catch_up<S: Storage>(&mut self, office: &Office<S>, now_ms: i64, fx: &mut Effects) {
        if self.catch_up.release(now_ms) {
            fx.frames
                .push(self.session.reconcile(office.inventory_for(self.peer())));
        }
    }

    /// True when `frame` may be taken while other documents' deliveries are out, and run
    /// beside them: a sync message for a member's case file. (Rosters and the revocation
    /// list change how other documents are judged; certificates must be learnt before the
    /// changes they sign; every other frame touches the session as a whole.) Its document
    /// must not itself be out.
    pub fn runs_beside_others(frame: &Frame) -> Option<&DocId> {
        match frame {
            Frame::Sync { doc, .. } if doc.kind() == DocKind::Member => Some(doc),
            _ => None,
        }
    }

    /// Takes back a delivery with what receiving it did: the document's sync progress
    /// returns to the link, the reply is queued.
    pub fn delivered<S: Storage>(
        &mut self,
        office: &Office<S>,
        delivery: Box<Delivery>,
        received: Result<Received, StorageError>,
    ) -> Result<Effects, LinkError> {
        let Delivery {
            doc, sync, now_ms, ..
        } = *delivery;
        self.session.restore_doc_sync(doc.clone(), sync);
        let received = received?;
        let mut fx = Effects {
            applied: Some(received.applied),
            refused: received.refused,
            notices: received.notices,
            ..Effects::default()
        };
        if received.applied > 0 || received.in_sync {
            // Held here now, or nothing more is coming: the request (if any) is answered,
            // and the document no longer counts as unknown.
            self.session.settle_unknown(&doc);
            self.requests.forget(&doc);
        }
        self.session.mark(&doc, received.in_sync);
        if received.in_sync {
            self.catch_up.settled(&doc, now_ms);
            fx.notices
                .extend(office.peer_synced(&doc, self.peer(), now_ms)?);
        }
        if let Some(reply) = received.reply {
            self.send_sync(office, doc, reply, now_ms, &mut fx);
        }
        self.release_requests(office, now_ms, &mut fx);
        self.end_catch_up(office, now_ms, &mut fx);
        Ok(fx)
    }

    /// Sends the held requests the window has room for. A request that went unanswered
    /// frees its document's slot among the unknown; once every unknown document is settled
    /// after some were ignored, reconciles again for those.
    fn release_requests<S: Storage>(&mut self, office: &Office<S>, now_ms: i64, fx: &mut Effects) {
        self.requests.release(now_ms, &mut fx.frames);
        for doc in self.requests.take_unanswered() {
            self.unanswered += 1;
            self.session.settle_unknown(&doc);
        }
        if self.session.wants_reconcile() {
            fx.frames
                .push(self.session.reconcile(office.inventory_for(self.peer())));
        }
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
                    self.offer(office, &notice.doc, false, now_ms, &mut fx)?;
                }
            }
            NoticeKind::Left => {
                self.session.forget(&notice.doc);
                self.requests.forget(&notice.doc);
                self.catch_up.settled(&notice.doc, now_ms);
                self.to_offer.retain(|(d, _)| *d != notice.doc);
                fx.frames.push(Frame::Left {
                    doc: notice.doc.clone(),
                });
            }
        }
        Ok(fx)
    }

    /// Sends the held requests the window has room for, ends the catch-up if it is over,
    /// then offers the next [`OFFER_BATCH`] documents found to differ.
    pub fn offer_batch<S: Storage>(
        &mut self,
        office: &Office<S>,
        now_ms: i64,
    ) -> Result<Effects, LinkError> {
        let mut fx = Effects::default();
        self.release_requests(office, now_ms, &mut fx);
        self.end_catch_up(office, now_ms, &mut fx);
        let n = OFFER_BATCH.min(self.to_offer.len());
        for (doc, peer_lacks) in self.to_offer.drain(..n).collect::<Vec<_>>() {
            self.offer(office, &doc, peer_lacks, now_ms, &mut fx)?;
        }
        Ok(fx)
    }

    /// Generates and queues the next sync message for `doc`, if any: to a peer that holds
    /// nothing of it (`peer_lacks`), without loading it where it can
    /// ([`Office::offer_to_empty`]).
    fn offer<S: Storage>(
        &mut self,
        office: &Office<S>,
        doc: &DocId,
        peer_lacks: bool,
        now_ms: i64,
        fx: &mut Effects,
    ) -> Result<(), LinkError> {
        let peer = self.peer().clone();
        let ds = self
            .session
            .doc_sync(doc, || office.resume_sync(doc, &peer));
        let offer = peer_lacks
            .then(|| office.offer_to_empty(doc, &peer, ds))
            .flatten();
        let (message, in_sync) = match offer {
            Some(offer) => (Some(offer), false),
            None => office.generate(doc, &peer, ds)?,
        };
        self.session.mark(doc, in_sync);
        if in_sync {
            self.catch_up.settled(doc, now_ms);
            fx.notices.extend(office.peer_synced(doc, &peer, now_ms)?);
        }
        if let Some(message) = message {
            self.send_sync(office, doc.clone(), message, now_ms, fx);
        }
        Ok(())
    }

    /// Queues a sync message, preceded by any author certificate the peer has not been sent
    /// in this session (so it can verify changes from offices it never met). A request (a
    /// message about a document the peer holds and this office does not) goes through the
    /// window of [`super::requests`].
    fn send_sync<S: Storage>(
        &mut self,
        office: &Office<S>,
        doc: DocId,
        outbound: Outbound,
        now_ms: i64,
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
        let request = attestations.is_empty() && self.session.is_unknown(&doc);
        let frame = Frame::Sync {
            doc: doc.clone(),
            message,
            attestations,
        };
        if request {
            self.requests
                .send_or_hold(doc, frame, now_ms, &mut fx.frames);
        } else {
            self.requests.superseded(&doc);
            fx.frames.push(frame);
        }
    }
}
