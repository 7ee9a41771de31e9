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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::attest::{Attestation, CertId};
use crate::docsync::DocSync;
use crate::ids::DocId;
use crate::org::OrgPath;
use crate::reconcile::Reconciler;
use crate::wire::{Digest, Frame, PROTOCOL_VERSION};

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
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
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
        }
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

    /// Handles one frame from the peer. `ours` gives our documents the peer may hold (asked
    /// only when the peer starts a reconciliation).
    pub fn on_frame(
        &mut self,
        frame: Frame,
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
                if restart || self.reconciler.is_none() {
                    self.reconciler = Some(Reconciler::new(ours()));
                }
                let reconciler = self.reconciler.as_mut().expect("just set");
                let answer = reconciler.respond(ranges);
                let (differing, peer_lacks) = reconciler.take_differences();
                self.pending.extend(differing.iter().cloned());
                Ok(Step::Start {
                    reply: (!answer.is_empty()).then_some(Frame::Reconcile { ranges: answer }),
                    to_start: differing.into_iter().collect(),
                    peer_lacks,
                })
            }
            Frame::Left { doc } => {
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

    /// Forgets `doc` (this side purged it): no longer pending, no sync state.
    pub fn forget(&mut self, doc: &DocId) {
        self.pending.remove(doc);
        self.syncs.remove(doc);
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
        s.on_frame(PeerSession::hello(&org(peer)), BTreeMap::new)
            .unwrap();
        s
    }

    #[test]
    fn hello_must_come_first_and_match_the_certificate() {
        let mut s = PeerSession::new(org("hoboksar/t1"));
        let early = Frame::Reconcile { ranges: vec![] };
        assert_eq!(
            s.on_frame(early, BTreeMap::new),
            Err(SessionError::NoHello("a frame"))
        );
        let liar = Frame::Hello {
            version: PROTOCOL_VERSION,
            org: org("hoboksar"),
        };
        assert!(matches!(
            s.on_frame(liar, BTreeMap::new),
            Err(SessionError::WrongOrg { .. })
        ));
        let old = Frame::Hello {
            version: 0,
            org: org("hoboksar/t1"),
        };
        assert_eq!(
            s.on_frame(old, BTreeMap::new),
            Err(SessionError::Version(0))
        );
        assert_eq!(
            s.on_frame(PeerSession::hello(&org("hoboksar/t1")), BTreeMap::new),
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
            match side.on_frame(f, || mine).unwrap() {
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
}
