//! Vouching: one signature per run of an office's changes, checked once and sent once.
//!
//! An automerge change's hash covers its dependencies' hashes, and the gate admits an
//! actor's change `n` only if it depends directly on that actor's change `n − 1`
//! ([`crate::gate`]'s structure check). A valid signature on an actor's latest change in a
//! message therefore vouches for the exact bytes of every earlier change of that actor it
//! reaches down that chain: its *run*. For those the gate checks everything about their
//! authorship — a known certificate, the voucher's, naming the change's author and actor,
//! valid and unrevoked at the change's own time — except a signature
//! ([`Authenticator::authenticate_vouched`]). Cold replication of a case file (about 31
//! changes by three or four offices) then checks three or four signatures, not 31.
//!
//! A change in a run may come with no signature at all (*chained signatures*: a sender
//! sends only the signature at the top of each run, [`crate::office::signatures`]). It is
//! then taken on its voucher's word or refused as unsigned; the store keeps no signature of
//! its own for it, and it is proved onward by the signature above it. One case needs care:
//! a change taken on its voucher's word while the voucher itself is not applied here
//! (refused, or held back for a missing dependency).
//! - If the change came with its own signature, that signature would be stored and relayed
//!   alone, unchecked. So after the message it is checked in full ([`Vouchers::settle`]);
//!   if one fails, the gate takes the whole message again with every signature that came
//!   checked on its own, and the outcome is exactly what checking them all gives.
//! - If it came without, nothing here would prove it to the next office. So the gate keeps
//!   a [`Proof`]: the changes from the one after it up to the voucher, and the voucher's
//!   signature. A node that sends the change on sends its proof with it, and the next
//!   office takes it exactly as this one did.

use std::collections::{HashMap, HashSet};

use automerge::{Change, ChangeHash};

use crate::attest::{Attestation, Authenticator};
use crate::org::OrgPath;
use crate::refusal::Refusal;
use crate::syncmsg;

/// A change that vouches for earlier ones, and the outcome of its own full check once made.
struct Voucher {
    change: Change,
    attestation: Attestation,
    holds: Option<bool>,
    /// The changes below it that the message carries, from the one just below down.
    run: Vec<Change>,
    /// Whether it vouches for any of them.
    vouches: bool,
}

/// Which changes of one message are vouched for by which, and what was taken on trust.
#[derive(Default)]
pub struct Vouchers {
    /// A vouched change → its voucher.
    by: HashMap<ChangeHash, ChangeHash>,
    vouchers: HashMap<ChangeHash, Voucher>,
    /// Changes authenticated on a voucher's word that came with a signature of their own,
    /// with that signature and their voucher.
    on_word: Vec<(Change, Attestation, ChangeHash)>,
    /// Changes authenticated on a voucher's word that came without a signature.
    unsigned: HashSet<ChangeHash>,
}

impl Vouchers {
    /// Plans the vouching for `changes` (those of a message not yet held, any order) with
    /// the `signatures` that came with them. For each actor, its change with the highest seq
    /// that carries a signature vouches for the earlier changes of that actor it reaches
    /// through `seq − 1` dependencies within `changes`: those with no signature, and those
    /// signed with the same certificate unless `every_signature`. A change signed with
    /// another certificate vouches for the run below it in turn. Linear in the changes and
    /// their dependencies.
    pub fn plan(
        changes: &[Change],
        signatures: &HashMap<ChangeHash, Attestation>,
        every_signature: bool,
    ) -> Vouchers {
        let by_hash: HashMap<ChangeHash, &Change> = changes.iter().map(|c| (c.hash(), c)).collect();
        // Signed changes, each actor's latest first: each not in a run above starts one.
        let mut tips: Vec<&Change> = changes
            .iter()
            .filter(|c| signatures.contains_key(&c.hash()))
            .collect();
        tips.sort_by_key(|c| std::cmp::Reverse(c.seq()));
        let mut walked: HashSet<ChangeHash> = HashSet::new();
        let mut plan = Vouchers::default();
        for tip in tips {
            if !walked.insert(tip.hash()) {
                continue;
            }
            let mut voucher = Voucher::of(tip, &signatures[&tip.hash()]);
            let mut current = tip;
            while let Some(previous) = current.deps().iter().find_map(|d| {
                by_hash.get(d).copied().filter(|p| {
                    p.actor_id() == tip.actor_id() && p.seq().checked_add(1) == Some(current.seq())
                })
            }) {
                let hash = previous.hash();
                if !walked.insert(hash) {
                    break;
                }
                match signatures.get(&hash) {
                    Some(own) if own.cert != voucher.attestation.cert => {
                        plan.add(voucher);
                        voucher = Voucher::of(previous, own);
                    }
                    Some(_) if every_signature => voucher.run.push(previous.clone()),
                    _ => {
                        plan.by.insert(hash, voucher.change.hash());
                        voucher.vouches = true;
                        voucher.run.push(previous.clone());
                    }
                }
                current = previous;
            }
            plan.add(voucher);
        }
        plan
    }

    fn add(&mut self, voucher: Voucher) {
        if voucher.vouches {
            self.vouchers.insert(voucher.change.hash(), voucher);
        }
    }

    /// How many changes the plan vouches for (each spares a signature check).
    pub fn vouched(&self) -> usize {
        self.by.len()
    }

    /// Authenticates `change` as made by `author`: on its voucher's word when it has a
    /// voucher whose own full check passes, in full otherwise. A voucher checked in full
    /// already (for an earlier change it vouched for) is not checked again. A change with
    /// no signature and no voucher that holds is refused as unsigned.
    pub fn authenticate(
        &mut self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
        auth: &dyn Authenticator,
    ) -> Result<(), Refusal> {
        let hash = change.hash();
        if let Some(Voucher {
            holds: Some(true), ..
        }) = self.vouchers.get(&hash)
        {
            return Ok(());
        }
        if let Some(voucher) = self.by.get(&hash).copied()
            && self.voucher_holds(&voucher, auth)
        {
            match attestation {
                Some(own) => {
                    auth.authenticate_vouched(change, author, Some(own))?;
                    self.on_word.push((change.clone(), own.clone(), voucher));
                }
                None => {
                    // Its authorship is checked against the voucher's certificate.
                    let borrowed = Attestation {
                        change: hash,
                        cert: self.vouchers[&voucher].attestation.cert,
                        signature: Vec::new(),
                    };
                    auth.authenticate_vouched(change, author, Some(&borrowed))?;
                    self.unsigned.insert(hash);
                }
            }
            return Ok(());
        }
        let outcome = auth.authenticate(change, author, attestation);
        if let Some(v) = self.vouchers.get_mut(&hash) {
            v.holds = Some(outcome.is_ok());
        }
        outcome
    }

    /// The voucher's own full check (made once).
    fn voucher_holds(&mut self, hash: &ChangeHash, auth: &dyn Authenticator) -> bool {
        let Some(v) = self.vouchers.get_mut(hash) else {
            return false;
        };
        if let Some(holds) = v.holds {
            return holds;
        }
        let holds = crate::judge::author_of(&v.change).is_some_and(|author| {
            auth.authenticate(&v.change, &author, Some(&v.attestation))
                .is_ok()
        });
        v.holds = Some(holds);
        holds
    }

    /// After the message, for the changes in `applied` taken on the word of a voucher not
    /// itself in `applied`: each that came with its own signature is checked in full (`Err`
    /// if one fails: the message must be taken again with every signature checked), and the
    /// highest of each run that came without one gets the [`Proof`] that carries it onward.
    pub fn settle(
        &self,
        applied: &[ChangeHash],
        auth: &dyn Authenticator,
    ) -> Result<Vec<Proof>, OwnSignatureFails> {
        let applied: HashSet<&ChangeHash> = applied.iter().collect();
        let own_signatures_hold = self
            .on_word
            .iter()
            .filter(|(c, _, voucher)| applied.contains(&c.hash()) && !applied.contains(voucher))
            .all(|(c, attestation, _)| {
                crate::judge::author_of(c)
                    .is_some_and(|author| auth.authenticate(c, &author, Some(attestation)).is_ok())
            });
        if !own_signatures_hold {
            return Err(OwnSignatureFails);
        }
        let mut proofs: Vec<Proof> = self
            .vouchers
            .iter()
            .filter(|(hash, _)| !applied.contains(hash))
            .filter_map(|(_, v)| {
                let highest = v.run.iter().position(|c| applied.contains(&c.hash()))?;
                let proves = v.run[highest].hash();
                self.unsigned.contains(&proves).then(|| Proof {
                    proves,
                    changes: v.run[..highest]
                        .iter()
                        .rev()
                        .chain([&v.change])
                        .cloned()
                        .collect(),
                    attestation: v.attestation.clone(),
                })
            })
            .collect();
        proofs.sort_by_key(|p| p.proves);
        Ok(proofs)
    }
}

/// A change taken on its voucher's word whose own signature then failed its full check
/// ([`Vouchers::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSignatureFails;

impl Voucher {
    fn of(change: &Change, attestation: &Attestation) -> Voucher {
        Voucher {
            change: change.clone(),
            attestation: attestation.clone(),
            holds: None,
            run: Vec::new(),
            vouches: false,
        }
    }
}

/// What proves a change that a node holds without a signature of its own, when the change
/// that vouched for it is not applied there: the changes from the one after it up to that
/// voucher, in causal order, and the voucher's signature. Sent beside the change, it lets
/// the next office take the change on the voucher's word as this one did.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// The change it proves.
    pub proves: ChangeHash,
    /// The changes above it, up to the signed one (last).
    pub changes: Vec<Change>,
    /// The signature of the last change.
    pub attestation: Attestation,
}

/// Longest run a stored proof may carry (a run is at most one message's changes).
pub const MAX_PROOF_CHANGES: usize = syncmsg::MAX_CHANGES;

impl Proof {
    /// Encodes as `attestation_len(u16be) attestation count(u32be) (len(u32be) change)*`.
    pub fn encode(&self) -> Vec<u8> {
        let attestation = self.attestation.encode();
        let mut out = Vec::with_capacity(
            6 + attestation.len()
                + self
                    .changes
                    .iter()
                    .map(|c| 4 + c.raw_bytes().len())
                    .sum::<usize>(),
        );
        out.extend_from_slice(&(attestation.len() as u16).to_be_bytes());
        out.extend_from_slice(&attestation);
        out.extend_from_slice(&(self.changes.len() as u32).to_be_bytes());
        for c in &self.changes {
            out.extend_from_slice(&(c.raw_bytes().len() as u32).to_be_bytes());
            out.extend_from_slice(c.raw_bytes());
        }
        out
    }

    /// Decodes [`Proof::encode`]'s output for the change `proves`; `None` if malformed, or if
    /// it does not chain: each change must continue the one before on its actor's chain
    /// (the first continuing `proves`), and the attestation must name the last.
    pub fn decode(proves: ChangeHash, b: &[u8]) -> Option<Proof> {
        fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = r.split_at_checked(n)?;
            *r = rest;
            Some(head)
        }
        fn number<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
            take(r, N)?.try_into().ok()
        }
        let mut r = b;
        let len = u16::from_be_bytes(number(&mut r)?) as usize;
        let attestation = Attestation::decode(take(&mut r, len)?)?;
        let count = u32::from_be_bytes(number(&mut r)?) as usize;
        if count == 0 || count > MAX_PROOF_CHANGES {
            return None;
        }
        let mut changes = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let len = u32::from_be_bytes(number(&mut r)?) as usize;
            changes.push(syncmsg::decode_change(take(&mut r, len)?).ok()?);
        }
        let proof = Proof {
            proves,
            changes,
            attestation,
        };
        (r.is_empty() && proof.chains()).then_some(proof)
    }

    /// True when each change depends on the one before (the first on `proves`) as the next
    /// change of the same actor, and the attestation is for the last.
    pub fn chains(&self) -> bool {
        let Some(last) = self.changes.last() else {
            return false;
        };
        let actor = last.actor_id();
        let mut below = self.proves;
        let mut seq = None;
        for c in &self.changes {
            if c.actor_id() != actor
                || !c.deps().contains(&below)
                || seq.is_some_and(|s: u64| s.checked_add(1) != Some(c.seq()))
            {
                return false;
            }
            seq = Some(c.seq());
            below = c.hash();
        }
        self.attestation.change == last.hash()
    }
}

/// Authenticates every change of a document as a store holds it (`changes`, with the
/// `signatures` it keeps and `proof_of` its proofs): each signature on its own, and each
/// change without one on the word of the signature above it in its actor's run, or of its
/// proof. Returns the changes that fail, with their claimed author and why.
pub fn check_held(
    changes: &[Change],
    signatures: &HashMap<ChangeHash, Attestation>,
    proof_of: &mut dyn FnMut(&ChangeHash) -> Option<Proof>,
    auth: &dyn Authenticator,
) -> Vec<(ChangeHash, Option<OrgPath>, Refusal)> {
    let mut latest: HashMap<&automerge::ActorId, &Change> = HashMap::new();
    for c in changes {
        let top = latest.entry(c.actor_id()).or_insert(c);
        if c.seq() > top.seq() {
            *top = c;
        }
    }
    let mut with_proofs = changes.to_vec();
    let mut signatures = signatures.clone();
    for top in latest.values() {
        if signatures.contains_key(&top.hash()) {
            continue;
        }
        if let Some(proof) = proof_of(&top.hash()) {
            with_proofs.extend(proof.changes);
            signatures.insert(proof.attestation.change, proof.attestation);
        }
    }
    let mut vouchers = Vouchers::plan(&with_proofs, &signatures, true);
    changes
        .iter()
        .filter_map(|c| {
            let hash = c.hash();
            let Some(author) = crate::judge::author_of(c) else {
                return Some((hash, None, Refusal::UnknownAuthor));
            };
            vouchers
                .authenticate(c, &author, signatures.get(&hash), auth)
                .err()
                .map(|reason| (hash, Some(author), reason))
        })
        .collect()
}
