//! One sync session with one peer, as a state machine with no IO.
//!
//! The node feeds it frames from the peer and asks it what to do; it keeps the per-document
//! [`DocSync`]s and the set of documents not yet known to be in sync (`docs_pending`).
//!
//! ```text
//! both sides:  Hello ─▶  Inventory… InventoryDone ─▶  Sync{doc}… ◀─▶ Sync{doc}…
//! ```
//! After a peer's `InventoryDone`, each side starts syncing the documents it holds whose
//! digest differs from the peer's; the peer starts the ones only it holds. A side may send
//! a fresh inventory at any time (e.g. after missing change notifications).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::attest::{Attestation, CertId};
use crate::docsync::DocSync;
use crate::ids::DocId;
use crate::inventory::differing;
use crate::org::OrgPath;
use crate::wire::{Digest, Frame, MAX_INVENTORY_CHUNK, PROTOCOL_VERSION};

/// Most inventory entries a peer may send in one round (a city hub holds ~250,000).
pub const MAX_INVENTORY: usize = 2_000_000;

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
    /// The peer's inventory exceeded [`MAX_INVENTORY`].
    #[error("peer inventory exceeds {MAX_INVENTORY} documents")]
    InventoryTooLarge,
}

/// What the node should do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Generate and send a first sync message for each document in `to_start`; `peer_lacks`
    /// are those the peer does not hold at all.
    Start {
        /// Documents to start syncing.
        to_start: Vec<DocId>,
        /// The subset the peer does not hold.
        peer_lacks: BTreeSet<DocId>,
    },
    /// The peer no longer holds this document (it left the peer's scope).
    Left(DocId),
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
}

/// A session with one peer.
#[derive(Debug)]
pub struct PeerSession {
    peer: OrgPath,
    greeted: bool,
    their_inventory: BTreeMap<DocId, Digest>,
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
            their_inventory: BTreeMap::new(),
            syncs: HashMap::new(),
            pending: BTreeSet::new(),
            certificates_sent: BTreeSet::new(),
        }
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

    /// Our inventory for the peer, in bounded frames, ending with `InventoryDone`.
    pub fn inventory(ours: &BTreeMap<DocId, Digest>) -> Vec<Frame> {
        let entries: Vec<(DocId, Digest)> = ours.iter().map(|(id, d)| (id.clone(), *d)).collect();
        entries
            .chunks(MAX_INVENTORY_CHUNK)
            .map(|c| Frame::Inventory {
                entries: c.to_vec(),
            })
            .chain(std::iter::once(Frame::InventoryDone))
            .collect()
    }

    /// Handles one frame from the peer. `ours` gives our current inventory for the peer
    /// (called only when the peer's inventory is complete).
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
            Frame::Inventory { entries } => {
                if self.their_inventory.len() + entries.len() > MAX_INVENTORY {
                    return Err(SessionError::InventoryTooLarge);
                }
                self.their_inventory.extend(entries);
                Ok(Step::Nothing)
            }
            Frame::InventoryDone => {
                let theirs = std::mem::take(&mut self.their_inventory);
                let ours = ours();
                let to_start = differing(&ours, &theirs);
                let peer_lacks = to_start
                    .iter()
                    .filter(|id| !theirs.contains_key(*id))
                    .cloned()
                    .collect();
                self.pending.extend(to_start.iter().cloned());
                self.pending.extend(differing(&theirs, &ours));
                Ok(Step::Start {
                    to_start,
                    peer_lacks,
                })
            }
            Frame::Left { doc } => {
                self.pending.remove(&doc);
                self.syncs.remove(&doc);
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

    /// Records whether `doc` is now known to be in sync with the peer.
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

    #[test]
    fn hello_must_come_first_and_match_the_certificate() {
        let mut s = PeerSession::new(org("hoboksar/t1"));
        assert_eq!(
            s.on_frame(Frame::InventoryDone, BTreeMap::new),
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
    fn inventory_decides_what_to_start_and_what_is_pending() {
        let id = |n| DocId::new_member([n; 8]);
        let mut s = PeerSession::new(org("hoboksar/t1"));
        s.on_frame(PeerSession::hello(&org("hoboksar/t1")), BTreeMap::new)
            .unwrap();
        let theirs = BTreeMap::from([(id(1), [1; 16]), (id(2), [2; 16]), (id(4), [4; 16])]);
        let ours = BTreeMap::from([(id(1), [1; 16]), (id(2), [9; 16]), (id(3), [3; 16])]);
        let mut step = Step::Nothing;
        for f in PeerSession::inventory(&theirs) {
            step = s.on_frame(f, || ours.clone()).unwrap();
        }
        assert_eq!(
            step,
            Step::Start {
                to_start: vec![id(2), id(3)],
                peer_lacks: BTreeSet::from([id(3)])
            }
        );
        assert_eq!(s.pending(), 3, "2 differs, 3 only ours, 4 only theirs");
        s.mark(&id(2), true);
        s.mark(&id(4), true);
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn large_inventories_travel_in_bounded_frames() {
        let ours: BTreeMap<DocId, Digest> = (0..10_000u32)
            .map(|n| {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&n.to_be_bytes());
                (DocId::new_member(b), [0; 16])
            })
            .collect();
        let frames = PeerSession::inventory(&ours);
        assert_eq!(frames.len(), 10_000usize.div_ceil(MAX_INVENTORY_CHUNK) + 1);
        assert!(
            frames
                .iter()
                .all(|f| f.encode().len() < crate::wire::MAX_FRAME)
        );
    }
}
