//! The signatures that go beside an outgoing message's changes.
//!
//! Every change a message carries must reach the next office provable
//! ([`crate::vouch`]): with its own signature, or below a signed change of the same actor
//! that the message carries too, in an unbroken run. So for each run of an actor's changes
//! in the message, the top one needs a signature:
//! - its own, if this office holds one;
//! - else the run is continued upward with the changes this office holds above it, up to
//!   one it holds a signature for (a peer that asked for one change only gets the ones
//!   above it too);
//! - else, where the top is the latest of its actor here, the [`Proof`] kept when it came:
//!   the changes above it, up to the signed one, that are not applied here.
//!
//! With *chained signatures* on, that is all that goes: a signature below the top of a run
//! is left out when the one above it is by the same certificate, which halves a cold case
//! file's bytes. Off (the default), every signature held goes, as offices of earlier
//! releases need: a county turns it on once every office runs a release that reads it.

use std::collections::{BTreeMap, HashMap};

use automerge::{ActorId, AutoCommit, Change, ChangeHash};

use super::{Office, Storage, StorageError, View};
use crate::DocId;
use crate::attest::{Attestation, CertId};
use crate::vouch::Proof;

/// Whether a message may carry the changes of a proof held here: not to a peer that may only
/// see a document as it was when it left, since they are not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proofs {
    /// The proofs held here may go.
    Held,
    /// None may.
    None,
}

impl Proofs {
    /// What a peer with `view` of a document may be sent.
    pub fn for_view(view: &View) -> Proofs {
        match view {
            View::Exited(_) => Proofs::None,
            _ => Proofs::Held,
        }
    }
}

/// What goes beside a message's changes.
#[derive(Debug, Default)]
pub struct Beside {
    /// Signatures.
    pub attestations: Vec<Attestation>,
    /// Changes to add to the message so that its runs end in a signature (from the runs'
    /// continuations and from proofs).
    pub extra: Vec<Change>,
}

/// Where a change sits in its actor's chain.
#[derive(Clone)]
struct Link {
    hash: ChangeHash,
    actor: ActorId,
    seq: u64,
    deps: Vec<ChangeHash>,
}

impl Link {
    fn of(doc: &mut AutoCommit, hash: &ChangeHash) -> Option<Link> {
        doc.get_change_meta_by_hash(hash).map(Link::from)
    }

    /// True when `self` is the next change of `below`'s actor and depends on it.
    fn continues(&self, below: &Link) -> bool {
        self.actor == below.actor
            && below.seq.checked_add(1) == Some(self.seq)
            && self.deps.contains(&below.hash)
    }
}

impl From<automerge::ChangeMetadata<'_>> for Link {
    fn from(m: automerge::ChangeMetadata<'_>) -> Link {
        Link {
            hash: m.hash,
            actor: m.actor.into_owned(),
            seq: m.seq,
            deps: m.deps,
        }
    }
}

/// Every actor's chain in a document, by seq: read once per message, when a run's top
/// first needs the changes above it (a peer asking for many single changes costs one read
/// of the document, not one per change).
#[derive(Default)]
struct Chains(Option<HashMap<ActorId, BTreeMap<u64, Link>>>);

impl Chains {
    /// The changes of `top`'s actor after it, in order.
    fn after(&mut self, doc: &mut AutoCommit, top: &Link) -> Vec<Link> {
        let chains = self.0.get_or_insert_with(|| {
            let mut chains: HashMap<ActorId, BTreeMap<u64, Link>> = HashMap::new();
            for link in doc.get_changes_meta(&[]).into_iter().map(Link::from) {
                chains
                    .entry(link.actor.clone())
                    .or_default()
                    .insert(link.seq, link);
            }
            chains
        });
        chains.get(&top.actor).map_or_else(Vec::new, |chain| {
            chain
                .range(top.seq.saturating_add(1)..)
                .map(|(_, l)| l.clone())
                .collect()
        })
    }
}

impl<S: Storage> Office<S> {
    /// The signatures (and added changes) for a message carrying `sent` of `id`, taken
    /// from `doc`; `proofs` says whether a proof may add changes that are not in `doc`.
    pub(super) fn beside(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        sent: &[ChangeHash],
        proofs: Proofs,
    ) -> Result<Beside, StorageError> {
        let mut held: HashMap<ChangeHash, Attestation> = self
            .store
            .attestations(id, sent)?
            .into_iter()
            .map(|a| (a.change, a))
            .collect();
        if held.len() == sent.len() && !self.chained_signatures {
            return Ok(Beside {
                attestations: sent.iter().filter_map(|h| held.remove(h)).collect(),
                extra: Vec::new(),
            });
        }
        let mut actors: HashMap<ActorId, Vec<Link>> = HashMap::new();
        for hash in sent {
            if let Some(link) = Link::of(doc, hash) {
                actors.entry(link.actor.clone()).or_default().push(link);
            }
        }
        let mut beside = Beside::default();
        let mut chains = Chains::default();
        for (_, mut chain) in actors {
            chain.sort_by_key(|l| std::cmp::Reverse(l.seq));
            let mut cert: Option<CertId> = None;
            let mut above: Option<&Link> = None;
            for link in &chain {
                if !above.is_some_and(|a| a.continues(link)) {
                    // The top of a run.
                    cert = match held.contains_key(&link.hash) {
                        true => None,
                        false => {
                            let above = chains.after(doc, link);
                            self.signed_above(id, doc, link, &above, proofs, &mut beside)?
                        }
                    };
                }
                if let Some(own) = held.remove(&link.hash)
                    && !(self.chained_signatures && cert == Some(own.cert))
                {
                    cert = Some(own.cert);
                    beside.attestations.push(own);
                }
                above = Some(link);
            }
        }
        Ok(beside)
    }

    /// For `top`, the top of a run that this office holds no signature for, and `later`, the
    /// changes of its actor after it here: adds those up to a signed one (or its proof's) to
    /// `beside`, and returns the certificate of that signature (`None` if there is none: the
    /// peer will refuse the run as unsigned, and the store is not sound).
    fn signed_above(
        &self,
        id: &DocId,
        doc: &mut AutoCommit,
        top: &Link,
        later: &[Link],
        proofs: Proofs,
        beside: &mut Beside,
    ) -> Result<Option<CertId>, StorageError> {
        let mut below = top.hash;
        let mut last = top;
        for link in later {
            if !link.continues(last) {
                break;
            }
            let Some(change) = doc.get_change_by_hash(&link.hash) else {
                break;
            };
            beside.extra.push(change);
            let signed = self.store.attestations(id, &[link.hash])?.pop();
            if let Some(own) = signed {
                let cert = own.cert;
                beside.attestations.push(own);
                return Ok(Some(cert));
            }
            below = link.hash;
            last = link;
        }
        let proof = match proofs {
            Proofs::Held => self.store.proof(id, &below)?,
            Proofs::None => None,
        };
        let Some(Proof {
            changes,
            attestation,
            ..
        }) = proof
        else {
            tracing::warn!(doc = %id, change = %below, "a change held without its signature and with nothing to prove it");
            return Ok(None);
        };
        let cert = attestation.cert;
        beside.extra.extend(changes);
        beside.attestations.push(attestation);
        Ok(Some(cert))
    }
}

/// `message` (an encoded sync message) with `extra` changes added.
pub(super) fn with_changes(message: Vec<u8>, extra: &[Change]) -> Vec<u8> {
    if extra.is_empty() {
        return message;
    }
    let Ok(mut decoded) = automerge::sync::Message::decode(&message) else {
        return message;
    };
    let mut chunks: Vec<Vec<u8>> = decoded.changes.iter().map(<[u8]>::to_vec).collect();
    chunks.extend(extra.iter().map(|c| c.raw_bytes().to_vec()));
    decoded.changes = automerge::sync::ChunkList::from(chunks);
    decoded.encode()
}
