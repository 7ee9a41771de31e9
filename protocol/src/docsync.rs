//! Syncing one document with one peer: automerge's sync protocol behind the gate.
//!
//! [`DocSync`] wraps automerge's per-peer [`sync::State`] with two things the plain
//! protocol lacks once changes can be refused: it never asks the peer again for a change
//! it refused (it drops those hashes from `need`), and it does not repeat a message that
//! says exactly what its previous one said (with heads that differ forever because of a
//! refused change, plain automerge would ping-pong without end).

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use sha2::{Digest as _, Sha256};

use crate::attest::{Attestation, Authenticator};
use crate::authority::Refusal;
use crate::gate::{self, Admission, RefusedChange};
use crate::ids::DocId;
use crate::org::OrgPath;

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
}

impl DocSync {
    /// Starts from a persisted state (see [`DocSync::persisted`]), or fresh when `None` or
    /// unreadable.
    pub fn resume(persisted: Option<&[u8]>) -> DocSync {
        let state = persisted
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        DocSync {
            state,
            ..DocSync::default()
        }
    }

    /// The part of the state worth keeping across connections (the shared heads, ~34 bytes).
    pub fn persisted(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// Tells this sync about changes refused earlier (e.g. kept in quarantine), so they are
    /// never asked for again.
    pub fn remember_refused(&mut self, hashes: impl IntoIterator<Item = ChangeHash>) {
        self.refused.extend(hashes);
    }

    /// The next message to send for this document, or `None` if there is nothing new to
    /// say.
    pub fn generate(&mut self, doc: &mut AutoCommit) -> Option<Outgoing> {
        let sent_before: BTreeSet<ChangeHash> = self.state.sent_hashes.clone();
        let mut message = doc.sync().generate_sync_message(&mut self.state)?;
        message.need.retain(|h| !self.refused.contains(h));
        let encoded = message.encode();
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

    /// Receives an encoded message from `peer` through the gate, as office `me`, with the
    /// attestations that came with it.
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        &mut self,
        doc: &mut AutoCommit,
        id: &DocId,
        bytes: &[u8],
        attestations: &[Attestation],
        peer: &OrgPath,
        me: &OrgPath,
        auth: &dyn Authenticator,
    ) -> Admission {
        let message = match sync::Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                return Admission {
                    applied: Vec::new(),
                    refused: vec![RefusedChange::unreadable(Refusal::Malformed(e.to_string()))],
                };
            }
        };
        let by_change: HashMap<ChangeHash, Attestation> =
            attestations.iter().map(|a| (a.change, a.clone())).collect();
        let admission = gate::receive(
            doc,
            &mut self.state,
            id,
            message,
            peer,
            me,
            auth,
            &by_change,
        );
        let final_refusals = admission.refused.iter().filter(|r| r.reason.is_final());
        self.refused.extend(final_refusals.filter_map(|r| r.hash));
        admission
    }

    /// True when, as far as we know, the peer has exactly our heads.
    pub fn in_sync(&self, our_heads: &[ChangeHash]) -> bool {
        self.state.their_heads.as_deref() == Some(our_heads)
    }
}
