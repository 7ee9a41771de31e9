//! Vouching: one signature check per actor per message instead of one per change.
//!
//! An automerge change's hash covers its dependencies' hashes, and the gate admits an
//! actor's change `n` only if it depends directly on that actor's change `n − 1`
//! ([`crate::gate`]'s structure check). A valid signature on an actor's latest change in a
//! message therefore vouches for the exact bytes of every earlier change of that actor it
//! reaches down that chain. For those the gate checks everything about their own attestation
//! — a known certificate, the same one the voucher was signed with, naming the change's
//! author and actor, valid and unrevoked at the change's time — except the ECDSA signature
//! itself ([`Authenticator::authenticate_vouched`]). Cold replication of a case file (about 31
//! changes by three or four offices) then checks three or four signatures, not 31.
//!
//! Every change still carries and keeps its own attestation, so what a node stores and relays
//! is what it stored and relayed before. One case needs care: a change taken on its voucher's
//! word while the voucher itself is then not applied here (refused, or held back for a
//! missing dependency). Its own signature, unchecked, would be stored and relayed alone. So
//! after the message such changes are checked in full ([`Vouchers::settle`]); if any fails,
//! the gate takes the whole message again with every signature checked, and the outcome is
//! exactly what checking every signature gives.

use std::collections::HashMap;

use automerge::{Change, ChangeHash};

use crate::attest::{Attestation, Authenticator};
use crate::org::OrgPath;
use crate::refusal::Refusal;

/// A change that vouches for earlier ones, and the outcome of its own full check once made.
struct Voucher {
    change: Change,
    attestation: Attestation,
    holds: Option<bool>,
}

/// Which changes of one message are vouched for by which, and what was taken on trust.
#[derive(Default)]
pub struct Vouchers {
    /// A vouched change → its voucher.
    by: HashMap<ChangeHash, ChangeHash>,
    vouchers: HashMap<ChangeHash, Voucher>,
    /// Changes authenticated on a voucher's word, with their own attestation and voucher.
    on_word: Vec<(Change, Option<Attestation>, ChangeHash)>,
}

impl Vouchers {
    /// No vouching: every signature is checked.
    pub fn off() -> Vouchers {
        Vouchers::default()
    }

    /// Plans the vouching for `changes` (those of a message not yet held, any order) with
    /// the `signatures` that came with them: for each actor, its change with the highest seq
    /// that carries an attestation vouches for the earlier changes of that actor it reaches
    /// through `seq − 1` dependencies within `changes`, each of which must carry its own
    /// attestation naming the same certificate. Linear in the changes and their dependencies.
    pub fn plan(changes: &[Change], signatures: &HashMap<ChangeHash, Attestation>) -> Vouchers {
        let by_hash: HashMap<ChangeHash, &Change> = changes.iter().map(|c| (c.hash(), c)).collect();
        let mut tips: HashMap<&automerge::ActorId, &Change> = HashMap::new();
        for c in changes {
            if !signatures.contains_key(&c.hash()) {
                continue;
            }
            let tip = tips.entry(c.actor_id()).or_insert(c);
            if c.seq() > tip.seq() {
                *tip = c;
            }
        }
        let mut plan = Vouchers::default();
        for tip in tips.into_values() {
            let attestation = &signatures[&tip.hash()];
            let mut current = tip;
            let mut vouched = 0;
            while let Some(previous) = current.deps().iter().find_map(|d| {
                by_hash.get(d).copied().filter(|p| {
                    p.actor_id() == tip.actor_id() && p.seq().checked_add(1) == Some(current.seq())
                })
            }) {
                let same_cert = signatures
                    .get(&previous.hash())
                    .is_some_and(|a| a.cert == attestation.cert);
                if !same_cert || plan.by.contains_key(&previous.hash()) {
                    break;
                }
                plan.by.insert(previous.hash(), tip.hash());
                vouched += 1;
                current = previous;
            }
            if vouched > 0 {
                plan.vouchers.insert(
                    tip.hash(),
                    Voucher {
                        change: tip.clone(),
                        attestation: attestation.clone(),
                        holds: None,
                    },
                );
            }
        }
        plan
    }

    /// How many changes the plan vouches for (each spares a signature check).
    pub fn vouched(&self) -> usize {
        self.by.len()
    }

    /// Authenticates `change` as made by `author`: on its voucher's word when it has a
    /// voucher whose own full check passes, in full otherwise. A voucher checked in full
    /// already (for an earlier change it vouched for) is not checked again.
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
            auth.authenticate_vouched(change, author, attestation)?;
            self.on_word
                .push((change.clone(), attestation.cloned(), voucher));
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

    /// After the message: every change in `applied` that was taken on the word of a voucher
    /// not itself in `applied` is checked in full. False if one fails: the message must be
    /// taken again with every signature checked ([`Vouchers::off`]).
    pub fn settle(&self, applied: &[ChangeHash], auth: &dyn Authenticator) -> bool {
        let applied: std::collections::HashSet<&ChangeHash> = applied.iter().collect();
        self.on_word
            .iter()
            .filter(|(c, _, voucher)| applied.contains(&c.hash()) && !applied.contains(voucher))
            .all(|(c, attestation, _)| {
                crate::judge::author_of(c).is_some_and(|author| {
                    auth.authenticate(c, &author, attestation.as_ref()).is_ok()
                })
            })
    }
}
