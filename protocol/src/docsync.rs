//! Syncing one document with one peer: automerge's sync protocol behind the gate.
//!
//! [`DocSync`] wraps automerge's per-peer [`sync::State`] with what the plain protocol lacks
//! once changes can be refused and peers can lie:
//!
//! - incoming messages go through [`gate::receive`], never straight into automerge;
//! - it never asks the peer again for a change it refused (it drops those hashes from
//!   `need`), and does not repeat a message identical to its last one (with heads that differ
//!   forever because of a refused change, plain automerge would ping-pong without end);
//! - it holds back, bounded, the changes that wait for a dependency (automerge keeps them
//!   in its own queue, which the gate never fills) and asks for what they miss;
//! - outgoing messages carry no capability flags, so a peer never sends this node a
//!   whole-document message (the gate accepts individual changes only);
//! - generating a message runs contained: if automerge fails on a state a peer shaped, the
//!   state is reset and the message generated afresh;
//! - when the state names changes this document does not hold — it dropped them when an
//!   equivocation was settled the other way, or the peer shares them with another branch of
//!   an equivocating office — it sends an empty-heads message once ("I hold nothing"), the
//!   one message that makes an automerge peer forget what it believed the two shared.
//!   (automerge's own answer, a reset message, leaves the peer's belief in place, and the two
//!   sides would loop without ever exchanging the change that matters.)

use std::collections::{BTreeSet, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use sha2::{Digest as _, Sha256};

use crate::contain::contain;
use crate::gate::{self, Admission, Inbound};
use crate::syncmsg;

/// `state` (as decoded from its persisted form) believing the peer holds exactly the shared
/// heads, as if it had said so: its first message carries the changes made since them.
///
/// automerge's own first message from persisted state carries only heads and a Bloom filter,
/// and the changes follow once the peer has answered with its own: four messages for a case
/// file changed while a link was down, ~800 bytes where the change is ~300. Believing the
/// shared heads makes it two (the changes, the peer's acknowledgement). A wrong belief costs
/// bytes, never correctness: a peer that holds more ignores what it has; one that holds less
/// (it lost its disk) holds the changes back and asks for what they miss; and nothing counts
/// as in sync before the peer has named its heads (`their_heads` stays unknown).
pub fn expecting_shared(mut state: sync::State) -> sync::State {
    if !state.shared_heads.is_empty() {
        state.their_have = Some(vec![sync::Have {
            last_sync: state.shared_heads.clone(),
            bloom: sync::BloomFilter::default(),
        }]);
        state.their_need = Some(Vec::new());
    }
    state
}

/// A sync message to send, with the changes it carries (whose attestations go with it).
#[derive(Debug)]
pub struct Outgoing {
    /// Encoded automerge sync message.
    pub message: Vec<u8>,
    /// Hashes of the changes included.
    pub changes: Vec<ChangeHash>,
}

/// Sync progress of one document with one peer.
#[derive(Debug, Default)]
pub struct DocSync {
    state: sync::State,
    /// SHA-256 of the last message sent (not the message: memory follows documents synced).
    last_sent: Option<[u8; 32]>,
    refused: HashSet<ChangeHash>,
    /// Changes from the peer waiting for a dependency (see [`gate::receive`]).
    held_back: Vec<gate::HeldBack>,
}

impl DocSync {
    /// Starts from a persisted state (see [`DocSync::persisted`]), or fresh when `None` or
    /// unreadable. From persisted shared heads, the first message already carries the changes
    /// made since them (see [`expecting_shared`]).
    pub fn resume(persisted: Option<&[u8]>) -> DocSync {
        let state = persisted
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        DocSync {
            state: expecting_shared(state),
            ..DocSync::default()
        }
    }

    /// The part of the state worth keeping across connections (the shared heads, ~34 bytes).
    pub fn persisted(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// Tells this sync about changes refused earlier (e.g. kept in quarantine), so they are
    /// never asked for or judged again.
    pub fn remember_refused(&mut self, hashes: impl IntoIterator<Item = ChangeHash>) {
        self.refused.extend(hashes);
    }

    /// True while nothing has passed with the peer about this document: no message sent or
    /// received, and nothing persisted says what the peer holds.
    pub fn is_fresh(&self) -> bool {
        let s = &self.state;
        !s.have_responded
            && s.their_heads.is_none()
            && s.their_have.is_none()
            && s.shared_heads.is_empty()
            && self.held_back.is_empty()
    }

    /// The first message to a peer that holds nothing of the document (reconciliation said
    /// so): the document's `heads` and an empty Bloom filter, made without the document.
    /// `None` unless this sync [`is_fresh`](DocSync::is_fresh) and `heads` is not empty.
    ///
    /// automerge's own first message carries a Bloom filter of every change the document
    /// holds, and building it means loading the document: for a county offering thousands of
    /// case files to a new mirror, a load per offer, before the mirror has asked for one. The
    /// filter only lets the peer leave out what this office has of the peer's changes, and a
    /// peer that holds nothing has none. If it came to hold some meanwhile, it sends them,
    /// and they are taken as already held: bytes, never a wrong outcome. The state then
    /// stands as automerge's own first message leaves it: heads sent, a message in flight.
    pub fn offer_to_empty(&mut self, heads: &[ChangeHash]) -> Option<Outgoing> {
        if !self.is_fresh() || heads.is_empty() {
            return None;
        }
        let offer = sync::Message {
            heads: heads.to_vec(),
            need: Vec::new(),
            have: vec![sync::Have {
                last_sync: Vec::new(),
                bloom: sync::BloomFilter::default(),
            }],
            changes: sync::ChunkList::empty(),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        let encoded = offer.encode();
        self.state.have_responded = true;
        self.state.in_flight = true;
        self.state.last_sent_heads = heads.to_vec();
        self.last_sent = Some(Sha256::digest(&encoded).into());
        Some(Outgoing {
            message: encoded,
            changes: Vec::new(),
        })
    }

    /// The next message to send for this document, or `None` if there is nothing new to
    /// say.
    pub fn generate(&mut self, doc: &mut AutoCommit) -> Option<Outgoing> {
        if self.names_changes_not_held(doc) {
            self.state = sync::State::new();
            self.last_sent = None;
            let forget = sync::Message {
                heads: Vec::new(),
                need: Vec::new(),
                have: Vec::new(),
                changes: sync::ChunkList::empty(),
                flags: None,
                version: sync::MessageVersion::V1,
            };
            return Some(Outgoing {
                message: forget.encode(),
                changes: Vec::new(),
            });
        }
        let sent_before: BTreeSet<ChangeHash> = self.state.sent_hashes.clone();
        let generated = match contain("generating a sync message", || {
            doc.sync().generate_sync_message(&mut self.state)
        }) {
            Ok(m) => m,
            Err(_) => {
                // A state automerge cannot work with: start this document's sync afresh.
                self.state = sync::State::new();
                contain("generating a sync message", || {
                    doc.sync().generate_sync_message(&mut self.state)
                })
                .ok()
                .flatten()
            }
        };
        let mut message = generated?;
        if !self.held_back.is_empty() {
            let their_heads = self.state.their_heads.clone().unwrap_or_default();
            message.need = gate::missing_from(doc, &their_heads, &self.held_back);
        }
        message.need.retain(|h| !self.refused.contains(h));
        let encoded = syncmsg::as_changes(message).encode();
        let digest: [u8; 32] = Sha256::digest(&encoded).into();
        if self.last_sent == Some(digest) {
            return None;
        }
        self.last_sent = Some(digest);
        let changes = self
            .state
            .sent_hashes
            .difference(&sent_before)
            .copied()
            .collect();
        Some(Outgoing {
            message: encoded,
            changes,
        })
    }

    /// Receives an encoded message through the gate. `reload` gives the document as the
    /// store holds it (see [`gate::receive`]).
    pub fn receive(
        &mut self,
        doc: &mut AutoCommit,
        bytes: &[u8],
        cx: &Inbound<'_>,
        reload: &mut dyn FnMut() -> AutoCommit,
    ) -> Admission {
        let admission = gate::receive(
            doc,
            &mut self.state,
            bytes,
            cx,
            &self.refused,
            &mut self.held_back,
            reload,
        );
        let final_refusals = admission.refused.iter().filter(|r| r.reason.is_final());
        self.refused.extend(final_refusals.filter_map(|r| r.hash));
        self.refused
            .extend(admission.dropped.iter().filter_map(|r| r.hash));
        if admission.rebuilt() {
            // The shared heads may name changes that are gone.
            self.state = sync::State::new();
        }
        admission
    }

    /// True when what this sync believes is shared with the peer names a change `doc` does
    /// not hold.
    fn names_changes_not_held(&self, doc: &mut AutoCommit) -> bool {
        let mut unknown = |hashes: &[ChangeHash]| {
            hashes
                .iter()
                .any(|h| doc.get_change_meta_by_hash(h).is_none())
        };
        unknown(&self.state.shared_heads)
            || self
                .state
                .their_have
                .as_ref()
                .is_some_and(|haves| haves.iter().any(|h| unknown(&h.last_sync)))
    }

    /// Lets the next message out even if it repeats the last one: the answer of an office
    /// that holds nothing is always the same, and a peer that asks again (e.g. a relay that
    /// now waits for its children to say they left) must hear it again.
    pub fn repeat_next(&mut self) {
        self.last_sent = None;
    }

    /// Starts this document's exchange again from the shared heads, as a new session would:
    /// the next message goes even if one is still unanswered or would repeat the last. For a
    /// document a reconciliation found to differ: the peer may have ignored what was sent
    /// before (over its cap of unknown documents), and waiting for its answer would wait for
    /// good. Refused and held-back changes are kept.
    pub fn restart(&mut self) {
        self.state =
            expecting_shared(sync::State::decode(&self.state.encode()).unwrap_or_default());
        self.last_sent = None;
    }

    /// The heads both sides were last known to share (from the persisted state).
    pub fn shared_heads(&self) -> &[ChangeHash] {
        &self.state.shared_heads
    }

    /// Changes from the peer held back until their dependencies arrive.
    pub fn held_back(&self) -> usize {
        self.held_back.len()
    }

    /// The peer's heads, as it last told them.
    pub fn their_heads(&self) -> &[ChangeHash] {
        self.state.their_heads.as_deref().unwrap_or_default()
    }

    /// True when, as far as we know, the peer has exactly our heads.
    pub fn in_sync(&self, our_heads: &[ChangeHash]) -> bool {
        self.state.their_heads.as_deref() == Some(our_heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable as _;

    #[test]
    fn an_offer_to_an_empty_peer_is_automerge_s_first_message_without_the_filter() {
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "name", "张三").unwrap();
        doc.commit();
        let heads = doc.get_heads();
        let (mut light, mut usual) = (DocSync::default(), DocSync::default());
        let offer = light.offer_to_empty(&heads).expect("a fresh sync offers");
        let first = usual.generate(&mut doc).expect("automerge's first message");
        let offer = sync::Message::decode(&offer.message).unwrap();
        let first = sync::Message::decode(&first.message).unwrap();
        assert_eq!(offer.heads, first.heads);
        assert_eq!(offer.need, first.need);
        assert!(offer.changes.is_empty() && first.changes.is_empty());
        assert_eq!(offer.have.len(), 1);
        assert_eq!(offer.have[0].last_sync, first.have[0].last_sync);
        assert_ne!(first.have[0].bloom, sync::BloomFilter::default());
        assert_eq!(offer.have[0].bloom, sync::BloomFilter::default());
        // Both leave the state alike: heads sent, a message in flight, nothing more to say
        // until the peer answers.
        assert_eq!(light.state.last_sent_heads, usual.state.last_sent_heads);
        assert_eq!(light.state.in_flight, usual.state.in_flight);
        assert_eq!(light.state.have_responded, usual.state.have_responded);
        assert!(light.generate(&mut doc).is_none() && usual.generate(&mut doc).is_none());
        assert!(
            light.offer_to_empty(&heads).is_none(),
            "only a fresh sync offers so"
        );
        assert!(DocSync::default().offer_to_empty(&[]).is_none());
    }
}
