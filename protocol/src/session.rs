//! One sync session with one peer, as a state machine with no IO.
//!
//! The node feeds it frames from the peer and asks it what to do; it keeps the per-document
//! [`DocSync`]s, the set reconciliation in progress, and the documents not yet known to be
//! in sync (`docs_pending`).
//!
//! ```text
//! both sides:  Hello ─▶
//! dialer:      Reconcile{whole range} ─▶ ◀─ Reconcile{sub-ranges} ─▶ … (until settled)
//! both sides:  Sync{doc}… ◀─▶ Sync{doc}…   for every document found to differ, and
//!                                           for every later change either side makes
//! ```
//! Either side may start a fresh reconciliation at any time (e.g. after missing change
//! notifications).
//!
//! What a peer can make a session hold is bounded: documents the peer claims to hold that
//! this node does not (listed in a reconciliation, or sent a sync message for) count
//! against [`MAX_UNKNOWN`], beyond which further unknown ids are ignored and counted. A
//! tracked one is settled when its changes are stored, the two sides agree, or its request
//! goes unanswered; once all are, the session reconciles again for the ones ignored, and
//! every document that reconciliation finds differing starts its exchange afresh (the peer
//! may still wait for an answer to a message this side ignored). And a whole-range restart
//! from the peer re-reads this node's inventory at most once per [`RESTART_INTERVAL_MS`]
//! (`now` is the caller's: this crate never reads the clock).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::attest::{Attestation, CertId};
use crate::docsync::DocSync;
use crate::ids::DocId;
use crate::org::OrgPath;
use crate::reconcile::Reconciler;
use crate::wire::{Digest, Frame, PROTOCOL_VERSION};

/// Documents the peer claims to hold that this node does not hold, tracked at most per
/// session; further unknown ids are ignored (and counted) until these are settled, then
/// found by reconciling again.
pub const MAX_UNKNOWN: usize = 65_536;

/// A whole-range reconciliation restart from the peer re-reads this node's inventory at
/// most once per this many milliseconds; a restart sooner is answered from the inventory
/// read last time.
pub const RESTART_INTERVAL_MS: u64 = 1000;

/// Why a session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer spoke before saying hello.
    #[error("peer sent {0} before hello")]
    NoHello(&'static str),
    /// The peer's hello names another org than its certificate.
    #[error("peer says it is {claimed} but its certificate names {certified}")]
    WrongOrg {
        /// Org in the hello.
        claimed: String,
        /// Org in the certificate.
        certified: String,
    },
    /// The peer speaks another protocol version.
    #[error(
        "peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}: the two offices run releases too far apart; upgrade the older one"
    )]
    Version(u16),
}

/// What the node should do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Send `reply` (if any), then a first sync message for each document in `to_start`;
    /// `peer_lacks` are those the peer does not hold at all.
    Start {
        /// The reconciliation's next message, if it is not settled.
        reply: Option<Frame>,
        /// Documents found to differ.
        to_start: Vec<DocId>,
        /// The subset the peer does not hold.
        peer_lacks: BTreeSet<DocId>,
    },
    /// Receive this sync message for `doc` (through the gate) and send the reply.
    Sync {
        /// The document.
        doc: DocId,
        /// Encoded automerge sync message.
        message: Vec<u8>,
        /// Signatures of the changes it carries.
        attestations: Vec<Attestation>,
    },
    /// Check this certificate against the CA and remember it for verifying changes.
    Certificate(Vec<u8>),
    /// The peer no longer holds this document (it left the peer's scope).
    Left(DocId),
}

/// A session with one peer.
#[derive(Debug)]
pub struct PeerSession {
    peer: OrgPath,
    greeted: bool,
    reconciler: Option<Reconciler>,
    syncs: HashMap<DocId, DocSync>,
    pending: BTreeSet<DocId>,
    certificates_sent: BTreeSet<CertId>,
    /// Documents the peer claims to hold that this node did not hold when it learned of them.
    unknown: BTreeSet<DocId>,
    /// Unknown ids ignored because [`MAX_UNKNOWN`] were tracked.
    unknown_ignored: u64,
    /// Documents this node lacks that the peer said it has left (it keeps listing them in
    /// reconciliations: its inventory keeps an office's exits), not asked for again in this
    /// session unless the peer offers them; at most the cap of unknown documents.
    declined: BTreeSet<DocId>,
    /// Most unknown documents tracked at once ([`MAX_UNKNOWN`] unless set).
    unknown_cap: usize,
    /// Ids were ignored since the last reconciliation this side started.
    overflowed: bool,
    /// When the peer's last whole-range restart re-read the inventory (caller's clock, ms).
    last_restart_ms: Option<u64>,
}

impl PeerSession {
    /// A session with `peer`, whose org was verified from its certificate.
    pub fn new(peer: OrgPath) -> PeerSession {
        PeerSession {
            peer,
            greeted: false,
            reconciler: None,
            syncs: HashMap::new(),
            pending: BTreeSet::new(),
            certificates_sent: BTreeSet::new(),
            unknown: BTreeSet::new(),
            unknown_ignored: 0,
            declined: BTreeSet::new(),
            unknown_cap: MAX_UNKNOWN,
            overflowed: false,
            last_restart_ms: None,
        }
    }

    /// The same session tracking at most `cap` unknown documents at once (a small cap lets
    /// a simulation exercise the overflow path).
    pub fn with_unknown_cap(mut self, cap: usize) -> PeerSession {
        self.unknown_cap = cap;
        self
    }

    /// The peer's org.
    pub fn peer(&self) -> &OrgPath {
        &self.peer
    }

    /// Our hello, as office `me`.
    pub fn hello(me: &OrgPath) -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            org: me.clone(),
        }
    }

    /// Starts (or restarts) reconciliation over `ours`, the documents the peer may hold with
    /// their digests; returns the first message to send.
    pub fn reconcile(&mut self, ours: BTreeMap<DocId, Digest>) -> Frame {
        self.overflowed = false;
        let reconciler = Reconciler::new(ours);
        let frame = Frame::Reconcile {
            ranges: reconciler.initiate(),
        };
        self.reconciler = Some(reconciler);
        frame
    }

    /// Certificates the peer needs before these attestations can be verified: those not yet
    /// sent in this session (each is then counted as sent).
    pub fn certificates_to_send(&mut self, attestations: &[Attestation]) -> Vec<CertId> {
        attestations
            .iter()
            .map(|a| a.cert)
            .filter(|c| self.certificates_sent.insert(*c))
            .collect()
    }

    /// Handles one frame from the peer, received at `now_ms` (milliseconds on any monotonic
    /// clock of the caller's). `ours` gives our documents the peer may hold (asked only when
    /// the peer starts a reconciliation, at most once per [`RESTART_INTERVAL_MS`]).
    pub fn on_frame(
        &mut self,
        frame: Frame,
        now_ms: u64,
        ours: impl FnOnce() -> BTreeMap<DocId, Digest>,
    ) -> Result<Step, SessionError> {
        match frame {
            Frame::Hello { version, org } => {
                if version != PROTOCOL_VERSION {
                    return Err(SessionError::Version(version));
                }
                if org != self.peer {
                    return Err(SessionError::WrongOrg {
                        claimed: org.to_string(),
                        certified: self.peer.to_string(),
                    });
                }
                self.greeted = true;
                Ok(Step::Nothing)
            }
            _ if !self.greeted => Err(SessionError::NoHello("a frame")),
            Frame::Reconcile { ranges } => {
                // A whole-range fingerprint starts a (new) reconciliation on the peer's side.
                let restart = ranges.len() == 1
                    && ranges[0].lower.is_empty()
                    && ranges[0].upper.is_none()
                    && matches!(ranges[0].payload, crate::reconcile::Payload::Fingerprint(_));
                // Re-reading the inventory costs a scan of the store: a peer restarting in a
                // loop is answered from the inventory read last time.
                let too_soon = self
                    .last_restart_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) < RESTART_INTERVAL_MS);
                if self.reconciler.is_none() || (restart && !too_soon) {
                    self.reconciler = Some(Reconciler::new(ours()));
                    if restart {
                        self.last_restart_ms = Some(now_ms);
                    }
                }
                let reconciler = self.reconciler.as_mut().expect("just set");
                let answer = reconciler.respond(ranges);
                let (differing, peer_lacks) = reconciler.take_differences();
                let differing: Vec<(DocId, bool)> = differing
                    .into_iter()
                    .map(|doc| {
                        let ours = reconciler.contains(&doc);
                        (doc, ours)
                    })
                    .collect();
                let mut to_start = Vec::with_capacity(differing.len());
                for (doc, ours) in differing {
                    if let Some(sync) = self.syncs.get_mut(&doc) {
                        // What was said about it before may have gone unanswered for good.
                        sync.restart();
                    } else if !ours && (self.declined.contains(&doc) || !self.track_unknown(&doc)) {
                        continue;
                    }
                    to_start.push(doc);
                }
                self.pending.extend(to_start.iter().cloned());
                Ok(Step::Start {
                    reply: (!answer.is_empty()).then_some(Frame::Reconcile { ranges: answer }),
                    to_start,
                    peer_lacks,
                })
            }
            Frame::Left { doc } => {
                if self.unknown.contains(&doc) && self.declined.len() < self.unknown_cap {
                    // Asked for, and gone from the peer: re-finding it in every later
                    // reconciliation would spend the unknown slots on it again each time.
                    self.declined.insert(doc.clone());
                }
                self.forget(&doc);
                Ok(Step::Left(doc))
            }
            Frame::Sync {
                doc,
                message,
                attestations,
            } => Ok(Step::Sync {
                doc,
                message,
                attestations,
            }),
            Frame::Certificate { der } => Ok(Step::Certificate(der)),
        }
    }

    /// The sync progress of `doc` with this peer, made by `resume` on first use (from the
    /// persisted state and the changes already refused).
    pub fn doc_sync(&mut self, doc: &DocId, resume: impl FnOnce() -> DocSync) -> &mut DocSync {
        self.syncs.entry(doc.clone()).or_insert_with(resume)
    }

    /// Counts `doc`, which the peer claims and this node does not hold, against
    /// [`MAX_UNKNOWN`]: false (and counted as ignored) when the cap is reached.
    fn track_unknown(&mut self, doc: &DocId) -> bool {
        if self.unknown.contains(doc) {
            return true;
        }
        if self.unknown.len() >= self.unknown_cap {
            self.unknown_ignored += 1;
            self.overflowed = true;
            return false;
        }
        self.unknown.insert(doc.clone());
        true
    }

    /// Takes out the sync progress of `doc`, for a sync message the peer sent about it (give
    /// it back with [`PeerSession::restore_doc_sync`]). `held` says whether this node holds
    /// `doc` (asked only the first time the session meets it); one it does not hold counts
    /// against [`MAX_UNKNOWN`], and beyond that cap this returns `None`: ignore the message.
    pub fn take_peer_doc_sync(
        &mut self,
        doc: &DocId,
        held: impl FnOnce() -> bool,
        resume: impl FnOnce() -> DocSync,
    ) -> Option<DocSync> {
        self.declined.remove(doc);
        let new_here = !self.syncs.contains_key(doc) && !self.unknown.contains(doc);
        if new_here && !held() && !self.track_unknown(doc) {
            return None;
        }
        Some(self.syncs.remove(doc).unwrap_or_else(resume))
    }

    /// Gives back the sync progress of `doc` taken with [`PeerSession::take_peer_doc_sync`].
    pub fn restore_doc_sync(&mut self, doc: DocId, sync: DocSync) {
        self.syncs.insert(doc, sync);
    }

    /// `doc` no longer counts as unknown: changes the peer sent were stored here, the two
    /// sides agree, or the request for it went unanswered. (The peer need not send what it
    /// claims: a document an office left stays in its parent's inventory. Kept, such a slot
    /// would be lost for the session, and enough of them stopped this side from learning
    /// anything more: found by the county simulator with a cap of 3.)
    pub fn settle_unknown(&mut self, doc: &DocId) {
        self.unknown.remove(doc);
    }

    /// True while `doc` is one the peer claims to hold and this node did not hold when it
    /// learned of it (until changes for it are stored here, or it is forgotten).
    pub fn is_unknown(&self, doc: &DocId) -> bool {
        self.unknown.contains(doc)
    }

    /// Unknown document ids ignored in this session because [`MAX_UNKNOWN`] were tracked.
    pub fn unknown_ignored(&self) -> u64 {
        self.unknown_ignored
    }

    /// True (once) when ids were ignored and every unknown document tracked since has been
    /// resolved: start a reconciliation again to find the rest. (A peer that never sends the
    /// documents it claims keeps its slots, and gets nothing more.)
    pub fn wants_reconcile(&mut self) -> bool {
        if self.overflowed && self.unknown.is_empty() {
            self.overflowed = false;
            return true;
        }
        false
    }

    /// Forgets `doc` (this side purged it): no longer pending, no sync state.
    pub fn forget(&mut self, doc: &DocId) {
        self.pending.remove(doc);
        self.syncs.remove(doc);
        self.unknown.remove(doc);
    }

    /// Records whether `doc` is now known to be in sync with the peer. (Sync progress stays
    /// for the whole session: dropping it for documents in sync made both sides answer every
    /// later message with a fresh state.)
    pub fn mark(&mut self, doc: &DocId, in_sync: bool) {
        if in_sync {
            self.pending.remove(doc);
        } else {
            self.pending.insert(doc.clone());
        }
    }

    /// Documents not yet known to be in sync with the peer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    fn greeted(peer: &str) -> PeerSession {
        let mut s = PeerSession::new(org(peer));
        s.on_frame(PeerSession::hello(&org(peer)), 0, BTreeMap::new)
            .unwrap();
        s
    }

    #[test]
    fn hello_must_come_first_and_match_the_certificate() {
        let mut s = PeerSession::new(org("hoboksar/t1"));
        let early = Frame::Reconcile { ranges: vec![] };
        assert_eq!(
            s.on_frame(early, 0, BTreeMap::new),
            Err(SessionError::NoHello("a frame"))
        );
        let liar = Frame::Hello {
            version: PROTOCOL_VERSION,
            org: org("hoboksar"),
        };
        assert!(matches!(
            s.on_frame(liar, 0, BTreeMap::new),
            Err(SessionError::WrongOrg { .. })
        ));
        let old = Frame::Hello {
            version: 0,
            org: org("hoboksar/t1"),
        };
        let refused = s.on_frame(old, 0, BTreeMap::new);
        assert_eq!(refused, Err(SessionError::Version(0)));
        let said = refused.unwrap_err().to_string();
        assert!(
            said.contains("version 0") && said.contains("upgrade"),
            "{said}"
        );
        let newer = Frame::Hello {
            version: PROTOCOL_VERSION + 1,
            org: org("hoboksar/t1"),
        };
        assert_eq!(
            s.on_frame(newer, 0, BTreeMap::new),
            Err(SessionError::Version(PROTOCOL_VERSION + 1))
        );
        assert_eq!(
            s.on_frame(PeerSession::hello(&org("hoboksar/t1")), 0, BTreeMap::new),
            Ok(Step::Nothing)
        );
    }

    #[test]
    fn two_sessions_reconcile_to_the_documents_that_differ() {
        let id = |n| DocId::new_member([n; 8]);
        let ours = BTreeMap::from([(id(1), [1; 16]), (id(2), [2; 16]), (id(3), [3; 16])]);
        let theirs = BTreeMap::from([(id(1), [1; 16]), (id(2), [9; 16]), (id(4), [4; 16])]);
        let (mut a, mut b) = (greeted("hoboksar/t2"), greeted("hoboksar/t1"));
        let mut frame = Some(a.reconcile(ours.clone()));
        let mut found = BTreeSet::new();
        let mut lacks = BTreeSet::new();
        let mut at_b = true;
        while let Some(f) = frame.take() {
            let (side, mine) = if at_b {
                (&mut b, theirs.clone())
            } else {
                (&mut a, ours.clone())
            };
            match side.on_frame(f, 0, || mine).unwrap() {
                Step::Start {
                    reply,
                    to_start,
                    peer_lacks,
                } => {
                    found.extend(to_start);
                    lacks.extend(peer_lacks);
                    frame = reply;
                }
                other => panic!("{other:?}"),
            }
            at_b = !at_b;
        }
        assert_eq!(found, BTreeSet::from([id(2), id(3), id(4)]));
        assert_eq!(a.pending() + b.pending(), 3);
        assert!(!lacks.is_empty());
    }

    fn listing(ids: impl Iterator<Item = u64>) -> Frame {
        use crate::reconcile::{Payload, Range};
        Frame::Reconcile {
            ranges: vec![Range {
                lower: String::new(),
                upper: None,
                payload: Payload::Items(
                    ids.map(|n| (DocId::new_member(n.to_be_bytes()), [7; 16]))
                        .collect(),
                ),
            }],
        }
    }

    fn started(step: Step) -> Vec<DocId> {
        match step {
            Step::Start { to_start, .. } => to_start,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn documents_a_peer_claims_and_this_node_lacks_are_capped_per_session() {
        let mut s = greeted("hoboksar/t1");
        let held = DocId::new_member([0xee; 8]);
        let ours = || BTreeMap::from([(held.clone(), [1; 16])]);
        let half = MAX_UNKNOWN as u64 / 2 + 10_000;
        let first = started(s.on_frame(listing(0..half), 0, ours).unwrap());
        assert_eq!(first.len() as u64, half + 1, "all new ids, and ours");
        let second = started(s.on_frame(listing(half..2 * half), 1, ours).unwrap());
        let tracked = MAX_UNKNOWN as u64 - half;
        assert_eq!(
            second.len() as u64,
            tracked + 1,
            "capped; ours still offered"
        );
        assert!(second.contains(&held));
        assert_eq!(s.unknown_ignored(), half - tracked);
        assert!(s.pending() <= MAX_UNKNOWN + 1);
        // Ids already tracked are still honoured; a new one is ignored; one this node holds
        // is not unknown.
        let known_unknown = DocId::new_member(5u64.to_be_bytes());
        let resume = || DocSync::resume(None);
        let taken = s.take_peer_doc_sync(&known_unknown, || false, resume);
        s.restore_doc_sync(known_unknown.clone(), taken.expect("tracked already"));
        let fresh = DocId::new_member((10 * half).to_be_bytes());
        assert!(s.take_peer_doc_sync(&fresh, || false, resume).is_none());
        assert_eq!(s.unknown_ignored(), half - tracked + 1);
        let new_here = DocId::new_member([0xdd; 8]);
        assert!(s.take_peer_doc_sync(&new_here, || true, resume).is_some());
        // Once every tracked id has resolved, the session asks to reconcile again (once).
        assert!(!s.wants_reconcile());
        for n in 0..2 * half {
            s.settle_unknown(&DocId::new_member(n.to_be_bytes()));
        }
        assert!(s.wants_reconcile());
        assert!(!s.wants_reconcile());
    }

    #[test]
    fn a_document_the_peer_left_is_not_asked_for_again_until_it_offers_it() {
        let mut s = greeted("hoboksar/t1");
        let ours = BTreeMap::new;
        let gone = DocId::new_member(1u64.to_be_bytes());
        let other = DocId::new_member(2u64.to_be_bytes());
        assert_eq!(
            started(s.on_frame(listing(1..3), 0, ours).unwrap()),
            [gone.clone(), other.clone()]
        );
        assert!(s.is_unknown(&gone));
        let left = Frame::Left { doc: gone.clone() };
        assert_eq!(s.on_frame(left, 1, ours).unwrap(), Step::Left(gone.clone()));
        assert!(!s.is_unknown(&gone), "its slot is free");
        // The peer keeps listing it (its inventory keeps exits): not asked for again.
        s.settle_unknown(&other);
        s.forget(&other);
        assert_eq!(
            started(s.on_frame(listing(1..3), 2, ours).unwrap()),
            [other]
        );
        assert!(!s.is_unknown(&gone));
        // Offered after all (it came back into scope): taken.
        let resume = || DocSync::resume(None);
        assert!(s.take_peer_doc_sync(&gone, || false, resume).is_some());
        assert!(s.is_unknown(&gone));
    }

    #[test]
    fn a_restart_from_the_peer_rereads_the_inventory_at_most_once_a_second() {
        use crate::reconcile::{Fingerprint, Payload, Range};
        let restart = || Frame::Reconcile {
            ranges: vec![Range {
                lower: String::new(),
                upper: None,
                payload: Payload::Fingerprint(Fingerprint { count: 1, sum: 42 }),
            }],
        };
        let mut s = greeted("hoboksar/t1");
        let reads = std::cell::Cell::new(0);
        let ours = || {
            reads.set(reads.get() + 1);
            BTreeMap::from([(DocId::new_member([1; 8]), [1; 16])])
        };
        for (now, expected_reads) in [(10_000, 1), (10_300, 1), (10_999, 1), (11_000, 2)] {
            let step = s.on_frame(restart(), now, ours).unwrap();
            assert!(
                matches!(step, Step::Start { reply: Some(_), .. }),
                "every restart is answered"
            );
            assert_eq!(reads.get(), expected_reads, "at {now} ms");
        }
    }
}
