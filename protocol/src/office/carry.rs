//! Bundles in the office core: what goes into a bundle for another office
//! ([`Office::pack_for`]), and taking in what a bundle carries ([`Office::unpack`]).
//!
//! A bundle is a peer that cannot answer. Packing generates, for every document the other
//! office may hold, the changes it lacks as far as this office knows (the heads the two last
//! shared over a link, or everything) as plain sync messages with their attestations, and
//! the certificates that sign them. Unpacking receives each message exactly as from a
//! peer, through the same gate, so a bundle can do nothing a session with the exporting
//! office could not.

use std::collections::BTreeSet;

use automerge::sync;

use super::{Office, Received, Storage, StorageError, View, summary};
use crate::attest::Attestation;
use crate::wire::Frame;
use crate::{DocId, OrgPath};

/// Change bytes per sync frame of a bundle, at most (a frame stays well under
/// [`crate::wire::MAX_FRAME`]); a document with more is carried in several frames, in
/// causal order.
pub const PACK_FRAME_BYTES: usize = 4 << 20;

/// What [`Office::pack_for`] gathered.
#[derive(Debug, Default)]
pub struct Packed {
    /// Certificate frames, then sync frames.
    pub frames: Vec<Frame>,
    /// Documents with something to carry.
    pub documents: usize,
    /// Changes carried.
    pub changes: usize,
}

/// What [`Office::unpack`] did with one sync frame of a bundle.
#[derive(Debug)]
pub struct Unpacked {
    /// As for a message from a peer (its reply is not sent: nobody can hear it).
    pub received: Received,
    /// Changes that wait for changes the bundle does not carry.
    pub waiting: usize,
}

impl<S: Storage> Office<S> {
    /// The frames of a bundle for `peer`: every document it may hold, with the changes it
    /// lacks by the heads this office last shared with it (all of them if `everything`, or
    /// if the two never synced), and the certificates of their authors.
    pub fn pack_for(&self, peer: &OrgPath, everything: bool) -> Result<Packed, StorageError> {
        let mut packed = Packed::default();
        let mut syncs = Vec::new();
        let mut certs = BTreeSet::new();
        for id in self.inventory_for(peer).into_keys() {
            let view = summary::view_of(&id, self.store.placement(&id).as_ref(), peer);
            let proofs = super::signatures::Proofs::for_view(&view);
            let mut doc = match view {
                View::Holds => match self.load(&id)? {
                    Some(doc) => doc,
                    None => continue,
                },
                View::Exited(heads) => match self.load(&id)?.map(|mut d| d.fork_at(&heads)) {
                    Some(Ok(fork)) => fork,
                    _ => continue,
                },
                View::Nothing | View::Unknown => continue,
            };
            let since: Vec<_> = if everything {
                Vec::new()
            } else {
                let sync = self.resume_sync(&id, peer);
                sync.shared_heads()
                    .iter()
                    .filter(|h| doc.get_change_meta_by_hash(h).is_some())
                    .copied()
                    .collect()
            };
            let changes = doc.get_changes(&since);
            if changes.is_empty() {
                continue;
            }
            packed.documents += 1;
            packed.changes += changes.len();
            let heads = doc.get_heads();
            // Each frame is received as a message on its own, so each carries what proves
            // its changes ([`super::signatures`]).
            let mut frame = |group: Vec<Vec<u8>>, hashes: &[automerge::ChangeHash]| {
                let beside = self.beside(&id, &mut doc, hashes, proofs)?;
                certs.extend(beside.attestations.iter().map(|a| a.cert));
                let mut group = group;
                group.extend(beside.extra.iter().map(|c| c.raw_bytes().to_vec()));
                syncs.push(sync_frame(&id, &heads, group, beside.attestations));
                Ok::<_, StorageError>(())
            };
            let mut group: Vec<Vec<u8>> = Vec::new();
            let mut group_hashes = Vec::new();
            let mut bytes = 0;
            for change in changes {
                let raw = change.raw_bytes().to_vec();
                if !group.is_empty() && bytes + raw.len() > PACK_FRAME_BYTES {
                    frame(std::mem::take(&mut group), &group_hashes)?;
                    group_hashes.clear();
                    bytes = 0;
                }
                bytes += raw.len();
                group_hashes.push(change.hash());
                group.push(raw);
            }
            frame(group, &group_hashes)?;
        }
        packed.frames = certs
            .iter()
            .filter_map(|c| self.auth.certificate(c))
            .map(|der| Frame::Certificate { der })
            .collect();
        packed.frames.extend(syncs);
        Ok(packed)
    }

    /// Receives one sync frame of a bundle from `from` at `now_ms`, through the gate, as
    /// from a peer: admitted changes are stored durably with their attestations, refused
    /// ones are quarantined. The caller announces the notices.
    pub fn unpack(
        &self,
        from: &OrgPath,
        doc: &DocId,
        message: &[u8],
        attestations: &[Attestation],
        now_ms: i64,
    ) -> Result<Unpacked, StorageError> {
        let mut sync = self.resume_sync(doc, from);
        let received = self.receive(doc, from, message, attestations, &mut sync, now_ms)?;
        Ok(Unpacked {
            received,
            waiting: sync.held_back(),
        })
    }
}

/// A sync frame carrying `changes` of `doc` (whose heads are `heads`) with `attestations`.
fn sync_frame(
    doc: &DocId,
    heads: &[automerge::ChangeHash],
    changes: Vec<Vec<u8>>,
    attestations: Vec<Attestation>,
) -> Frame {
    let message = sync::Message {
        heads: heads.to_vec(),
        need: Vec::new(),
        have: Vec::new(),
        changes: sync::ChunkList::from(changes),
        flags: None,
        version: sync::MessageVersion::V1,
    };
    Frame::Sync {
        doc: doc.clone(),
        message: message.encode(),
        attestations,
    }
}
