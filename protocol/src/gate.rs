//! The gate: every change reaches a document only through here.
//!
//! A peer's sync message is decoded and bounded first ([`crate::syncmsg`]); then each change
//! it carries is taken on its own, in causal order, and must pass, before automerge sees it:
//!
//! 1. **authenticity** — signed by a trusted, unrevoked certificate naming the claimed author
//!    and the change's actor ([`Authenticator`]);
//! 2. **structure** — its dependencies are here, it continues its actor's own chain, its op
//!    counters and time follow its history ([`crate::history`]);
//! 3. **authority** — every op touches only what its author may write, as the author saw the
//!    document, with values the API would accept ([`crate::judge`]);
//! 4. **one change per (actor, seq)** — if the document already holds a different change with
//!    the same actor and seq (an equivocation), the one with the lower hash is kept on every
//!    node; a node holding the other rebuilds the document without it and what depends on it.
//!
//! Then the change is applied, contained ([`crate::contain`]): alone, or, if it saw
//! everything before it, together with the next such changes once their checks are done too
//! ([`crate::pending`], which the judge reads them from meanwhile). A refused change takes
//! only its dependants with it; the rest of the message applies. Changes whose
//! dependencies are missing, or dated in the future, wait for a later message. The node runs
//! its own writes through [`judge_local`]: the same checks, so an API 403 and a wire refusal
//! always agree.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, Change, ChangeHash};

use crate::attest::{Attestation, Authenticator};
use crate::contain::contain;
use crate::history::History;
use crate::ids::DocId;
use crate::judge::{ChangeOps, FactsAt, Judged, Stop};
use crate::org::OrgPath;
use crate::pending::{Pending, Writes};
use crate::refusal::Refusal;
use crate::stamp::{self, MAX_FUTURE_MS, Stamp};
use crate::syncmsg::{self, SyncMessage};
use crate::visibility::{may_hold, scope};
use crate::vouch::{Proof, Vouchers};

pub use crate::judge::{AUTHOR_PREFIX, author_of};

/// The commit message that names `org` as a change's author.
pub fn author_message(org: &OrgPath) -> String {
    format!("{AUTHOR_PREFIX}{org}")
}

/// A change the gate refused: kept in quarantine, never applied, never forwarded.
#[derive(Debug, Clone)]
pub struct RefusedChange {
    /// The change's hash (none when its bytes could not be read).
    pub hash: Option<ChangeHash>,
    /// The org the change claimed as author.
    pub author: Option<OrgPath>,
    /// Why.
    pub reason: Refusal,
    /// The change's bytes, kept as evidence.
    pub bytes: Option<Vec<u8>>,
    /// For an equivocation: the other change with the same (actor, seq), as evidence.
    pub other: Option<OtherChange>,
}

/// The other change of an equivocating pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherChange {
    /// Its hash.
    pub hash: ChangeHash,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl OtherChange {
    fn of(change: &Change) -> OtherChange {
        OtherChange {
            hash: change.hash(),
            bytes: change.raw_bytes().to_vec(),
        }
    }
}

impl RefusedChange {
    /// A refusal of bytes that could not be read as a change (or a message).
    pub fn unreadable(reason: Refusal) -> RefusedChange {
        RefusedChange {
            hash: None,
            author: None,
            reason,
            bytes: None,
            other: None,
        }
    }

    fn of(change: &Change, reason: Refusal) -> RefusedChange {
        RefusedChange {
            hash: Some(change.hash()),
            author: author_of(change),
            reason,
            bytes: Some(change.raw_bytes().to_vec()),
            other: None,
        }
    }
}

/// Why a change was not applied yet (it is not refused: a later message may bring it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// A dependency is not here yet.
    MissingDependency,
    /// Dated more than [`MAX_FUTURE_MS`] ahead of this node's clock.
    FromTheFuture,
    /// The message was abandoned (the CRDT engine failed on another change of it).
    Abandoned,
}

/// What receiving one sync message did.
#[derive(Debug, Default)]
pub struct Admission {
    /// Changes applied to the document, in causal order.
    pub applied: Vec<ChangeHash>,
    /// Changes refused (not applied).
    pub refused: Vec<RefusedChange>,
    /// Changes not applied yet, and why.
    pub deferred: Vec<(ChangeHash, Defer)>,
    /// Changes removed from the document because an equivocation was settled against them
    /// (with what depended on them); the document was rebuilt without them.
    pub dropped: Vec<RefusedChange>,
    /// Contained panics of the CRDT engine.
    pub faults: usize,
    /// The signatures of the applied changes (from this message or the one that brought a
    /// held-back change), to store beside them. A change taken on its voucher's word without
    /// a signature of its own has none ([`crate::vouch`]).
    pub signatures: Vec<Attestation>,
    /// What proves the applied changes that came without a signature and whose voucher is
    /// not applied, to store and send on with them ([`Proof`]).
    pub proofs: Vec<Proof>,
}

/// A change waiting for a later message (a dependency missing, or dated in the future), with
/// the signature it came with.
#[derive(Debug, Clone)]
pub struct HeldBack {
    /// The change.
    pub change: Change,
    /// Its signature, if the message that brought it had one.
    pub attestation: Option<Attestation>,
}

impl Admission {
    fn refused_whole(reason: Refusal) -> Admission {
        Admission {
            refused: vec![RefusedChange::unreadable(reason)],
            ..Admission::default()
        }
    }

    /// True when the document was rebuilt (it must be stored whole, not appended to).
    pub fn rebuilt(&self) -> bool {
        !self.dropped.is_empty()
    }
}

/// Who receives what, from whom, and when: everything the gate needs besides the document.
pub struct Inbound<'a> {
    /// The document.
    pub id: &'a DocId,
    /// The sending peer, verified from its certificate.
    pub peer: &'a OrgPath,
    /// This office.
    pub me: &'a OrgPath,
    /// This node's clock, unix milliseconds (only to hold back changes dated in the future).
    pub now_ms: i64,
    /// Authenticity of changes.
    pub auth: &'a dyn Authenticator,
    /// Signatures that came with the message.
    pub attestations: &'a [Attestation],
}

/// How the checks ended for a change that was not simply fine.
enum Hold {
    Refuse(Refusal),
    Defer(Defer),
}

/// Structure: dependencies here, the actor's chain continued, op counters and time
/// following history. Returns the change already holding this change's (actor, seq), if a
/// different one does (an equivocation, settled by the caller).
fn check_structure(
    history: &mut History,
    change: &Change,
    now_ms: i64,
) -> Result<Option<ChangeHash>, Hold> {
    let deps = change.deps();
    if deps.iter().any(|d| !history.contains(d)) {
        return Err(Hold::Defer(Defer::MissingDependency));
    }
    let time = change.timestamp();
    if !(stamp::MIN_TIME..=stamp::MAX_TIME).contains(&time) {
        return Err(Hold::Refuse(Refusal::Time(format!(
            "{time} is not a plausible change time"
        ))));
    }
    if time > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Hold::Defer(Defer::FromTheFuture));
    }
    if let Some(newest) = deps.iter().filter_map(|d| history.time(d)).max()
        && time < newest
    {
        return Err(Hold::Refuse(Refusal::Time(format!(
            "made at {} but depends on a change made at {}",
            stamp::rfc3339(time),
            stamp::rfc3339(newest)
        ))));
    }
    let (actor, seq) = (change.actor_id(), change.seq());
    if seq == 0 {
        return Err(Hold::Refuse(Refusal::BrokenChain("seq 0".into())));
    }
    if seq > 1 {
        match history.at_slot(actor, seq - 1) {
            Some(previous) if deps.contains(&previous) => {}
            _ => {
                return Err(Hold::Refuse(Refusal::BrokenChain(format!(
                    "seq {seq} does not depend on its actor's change {}",
                    seq - 1
                ))));
            }
        }
    }
    let view = history.view(deps);
    if view.seq_of(actor) != seq - 1 {
        return Err(Hold::Refuse(Refusal::BrokenChain(format!(
            "seq {seq} but its history already has seq {} of its actor",
            view.seq_of(actor)
        ))));
    }
    let expected = view.max_op() + 1;
    if change.start_op().get() != expected {
        return Err(Hold::Refuse(Refusal::BrokenChain(format!(
            "its first op counter is {} but its history ends at {}",
            change.start_op(),
            expected - 1
        ))));
    }
    Ok(history.at_slot(actor, seq).filter(|h| *h != change.hash()))
}

/// What passing the checks gives: the change holding the same (actor, seq), if any, the
/// case file's facts after the change, if it left them as they were, and what it wrote.
struct Passed {
    other: Option<ChangeHash>,
    facts: Option<FactsAt>,
    writes: Writes,
}

/// Authenticity, structure and authority of one change not yet in `doc`, given its ops if
/// they were decoded with it (else they are decoded here), the facts at its dependencies if
/// they are known and the changes judged before it and not yet applied
/// ([`crate::judge::judge_carrying`]; they are applied first if judging it needs more of the
/// document than they answer for, and `Err` says the engine failed on them).
#[allow(clippy::too_many_arguments)]
fn check(
    doc: &mut AutoCommit,
    pending: &mut Pending,
    history: &mut History,
    (change, ops): (&Change, Option<Vec<automerge::legacy::Op>>),
    attestation: Option<&Attestation>,
    vouchers: &mut Vouchers,
    cx: &Inbound<'_>,
    known: Option<FactsAt>,
) -> Result<Result<Passed, Hold>, Again> {
    let Some(author) = author_of(change) else {
        return Ok(Err(Hold::Refuse(Refusal::UnknownAuthor)));
    };
    if let Err(reason) = vouchers.authenticate(change, &author, attestation, cx.auth) {
        return Ok(Err(Hold::Refuse(reason)));
    }
    let other = match check_structure(history, change, cx.now_ms) {
        Ok(other) => other,
        Err(hold) => return Ok(Err(hold)),
    };
    let view = history.view(change.deps());
    let known_again = if pending.is_empty() {
        None
    } else {
        known.clone()
    };
    let ops = match ops {
        Some(ops) => ops,
        None => match crate::judge::decode_ops(change) {
            Ok(ops) => ops,
            Err(reason) => return Ok(Err(Hold::Refuse(reason))),
        },
    };
    let change_ops = ChangeOps { change, ops: &ops };
    let judge = |doc: &AutoCommit, pending: &Pending, known| {
        crate::judge::judge_carrying(doc, pending, cx.id, change_ops, &view, cx.auth, known)
    };
    let judged = match judge(doc, pending, known) {
        Err(Stop::ApplyPending) => {
            apply_pending(doc, pending)?;
            judge(doc, pending, known_again)
        }
        judged => judged,
    };
    Ok(match judged {
        Ok(Judged { facts, writes }) => Ok(Passed {
            other,
            facts,
            writes,
        }),
        Err(Stop::Refuse(reason)) => Err(Hold::Refuse(reason)),
        Err(Stop::ApplyPending) => unreachable!("nothing is pending once applied"),
    })
}

/// Applies the pending changes to `doc` in one call ([`crate::pending`]).
fn apply_pending(doc: &mut AutoCommit, pending: &mut Pending) -> Result<(), Again> {
    if pending.is_empty() {
        return Ok(());
    }
    let changes = pending.take();
    match contain("applying a message's changes", || {
        apply_changes(doc, changes)
    }) {
        Ok(Ok(())) => Ok(()),
        // The message is taken again one change at a time, where the engine's failure is
        // settled on the change it failed on.
        Ok(Err(_)) | Err(_) => Err(Again::OneAtATime),
    }
}

/// Applies changes the gate passed. automerge (0.12) records every op a batch applies in the
/// document's patch log even while the log is off, and only clears it for a diff this node
/// never asks for: a case file of 41 changes received so held 124,453 B against 32,752 B
/// loaded (`tests/applied_memory.rs`), and a document kept in memory grew with every message
/// it took. The log is emptied after each apply.
fn apply_changes(
    doc: &mut AutoCommit,
    changes: impl IntoIterator<Item = Change> + Clone,
) -> Result<(), automerge::AutomergeError> {
    let applied = doc.apply_changes(changes);
    doc.reset_diff_cursor();
    applied
}

/// Orders `changes` so that each comes after those of its dependencies that are in the
/// list (Kahn's algorithm; ties keep the order they came in).
fn causal_order(changes: Vec<Change>) -> Vec<Change> {
    let in_list: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    let mut waiting: HashMap<ChangeHash, usize> = HashMap::new();
    let mut dependants: HashMap<ChangeHash, Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        let inner: Vec<&ChangeHash> = c.deps().iter().filter(|d| in_list.contains(*d)).collect();
        waiting.insert(c.hash(), inner.len());
        for d in inner {
            dependants.entry(*d).or_default().push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..changes.len())
        .filter(|i| waiting[&changes[*i].hash()] == 0)
        .collect();
    let mut order = Vec::with_capacity(changes.len());
    let mut placed = vec![false; changes.len()];
    while let Some(i) = ready.pop_front() {
        placed[i] = true;
        order.push(i);
        for j in dependants.get(&changes[i].hash()).into_iter().flatten() {
            let n = waiting.get_mut(&changes[*j].hash()).expect("listed");
            *n -= 1;
            if *n == 0 {
                ready.push_back(*j);
            }
        }
    }
    // A cycle cannot hash-chain; anything left (duplicates) goes last and fails its checks.
    order.extend((0..changes.len()).filter(|i| !placed[*i]));
    let mut slots: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Rebuilds `doc` without the changes in `drop` (an equivocation settled against one of
/// them). Returns the dropped changes, in causal order.
fn rebuild_without(
    doc: &mut AutoCommit,
    drop: &HashSet<ChangeHash>,
) -> Result<Vec<Change>, crate::contain::EngineFault> {
    let all = doc.get_changes(&[]);
    let (gone, kept): (Vec<Change>, Vec<Change>) =
        all.into_iter().partition(|c| drop.contains(&c.hash()));
    let mut fresh = AutoCommit::new().with_actor(doc.get_actor().clone());
    contain(
        "rebuilding a document without an equivocating change",
        || apply_changes(&mut fresh, kept),
    )?
    .map_err(|e| crate::contain::EngineFault {
        what: "rebuilding a document",
        message: e.to_string(),
    })?;
    *doc = fresh;
    Ok(gone)
}

/// Most changes held back per document and peer (waiting for a dependency, or dated in the
/// future); beyond it the oldest are forgotten (the next session brings them again).
pub const MAX_HELD_BACK: usize = 4096;

/// Most decoded ops a message keeps from its canonical-encoding checks for judging (about
/// 8 MiB; a cold case file has some 200). Each change is bounded ([`crate::columns`]), but a
/// message may carry 65,536 of them.
const KEPT_OPS: usize = 65_536;

/// Receives a sync message (`bytes`) from a peer into `doc`, as described in the module
/// docs, and advances `state` as automerge's own receive would. `refused_before` are changes
/// already refused (never judged again). `held_back` are changes from earlier messages still
/// waiting (automerge's sender does not send a change twice, so waiting changes are kept and
/// tried again with every message); it is updated with what still waits. `reload` gives the
/// document as the store holds it: the document is replaced by it if the message has to be
/// abandoned (a contained engine failure) or must not be kept (outside this office's or the
/// sender's scope).
///
/// Changes that saw everything before them are applied together, after their checks
/// ([`crate::pending`]). The outcome is exactly [`Taking::OneAtATime`]'s: builds with
/// debug assertions (every test) take each message both ways and panic if the two differ
/// in anything, and the `sync_message` fuzz target compares them.
pub fn receive(
    doc: &mut AutoCommit,
    state: &mut sync::State,
    bytes: &[u8],
    cx: &Inbound<'_>,
    refused_before: &HashSet<ChangeHash>,
    held_back: &mut Vec<HeldBack>,
    reload: &mut dyn FnMut() -> AutoCommit,
) -> Admission {
    #[cfg(debug_assertions)]
    let reference = {
        let (mut doc, mut state, mut held_back) = (doc.clone(), state.clone(), held_back.clone());
        let admission = receive_taking(
            Taking::OneAtATime,
            &mut doc,
            &mut state,
            bytes,
            cx,
            refused_before,
            &mut held_back,
            reload,
        );
        Taken::of(&admission, &mut doc, &state, &held_back)
    };
    let admission = receive_taking(
        Taking::Together,
        doc,
        state,
        bytes,
        cx,
        refused_before,
        held_back,
        reload,
    );
    #[cfg(debug_assertions)]
    assert_eq!(
        Taken::of(&admission, doc, state, held_back),
        reference,
        "taking a message's changes together ended otherwise than one at a time"
    );
    admission
}

/// How [`receive_taking`] applies the changes that pass their checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// Changes that saw everything before them wait and are applied together
    /// ([`crate::pending`]), as [`receive`] takes them.
    Together,
    /// Each change is applied on its own as soon as it passed: the reference [`receive`] is
    /// held to (slower: automerge splices every change into the document's columns by
    /// itself).
    OneAtATime,
}

/// How many times [`receive`] takes each message: twice in builds with debug assertions
/// (one at a time first, as the reference), once otherwise. What an [`Authenticator`] is
/// asked is asked that many times.
pub const TAKES_PER_MESSAGE: usize = if cfg!(debug_assertions) { 2 } else { 1 };

/// Everything receiving a message did, to compare two ways of taking it.
#[cfg(debug_assertions)]
#[derive(Debug, PartialEq, Eq)]
struct Taken {
    admission: String,
    heads: Vec<ChangeHash>,
    state: String,
    held_back: String,
}

#[cfg(debug_assertions)]
impl Taken {
    fn of(a: &Admission, doc: &mut AutoCommit, state: &sync::State, held: &[HeldBack]) -> Taken {
        Taken {
            admission: format!("{a:?}"),
            heads: doc.get_heads(),
            state: format!("{state:?}"),
            held_back: format!("{held:?}"),
        }
    }
}

/// [`receive`] taking the changes as `taking` says, without comparing the two ways.
#[allow(clippy::too_many_arguments)]
pub fn receive_taking(
    taking: Taking,
    doc: &mut AutoCommit,
    state: &mut sync::State,
    bytes: &[u8],
    cx: &Inbound<'_>,
    refused_before: &HashSet<ChangeHash>,
    held_back: &mut Vec<HeldBack>,
    reload: &mut dyn FnMut() -> AutoCommit,
) -> Admission {
    let mut how = How {
        every_signature: false,
        taking,
    };
    let message = match SyncMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => return Admission::refused_whole(Refusal::Malformed(e.to_string())),
    };
    let bookkeeping = match message.bookkeeping() {
        Ok(m) => m,
        Err(e) => return Admission::refused_whole(Refusal::Malformed(e.to_string())),
    };
    let held_before = held_back.clone();
    let admission = loop {
        match admit(doc, &message, cx, refused_before, held_back, reload, how) {
            Ok(admission) => break admission,
            Err(Again::CheckEverySignature) if !how.every_signature => how.every_signature = true,
            Err(Again::OneAtATime) if how.taking == Taking::Together => {
                how.taking = Taking::OneAtATime;
            }
            Err(_) => unreachable!("taken one at a time with every signature, nothing is retried"),
        }
        // Taken again from the start: the document as stored, what waited as it waited.
        *doc = reload();
        *held_back = held_before.clone();
    };
    finish(doc, state, bookkeeping, &admission, held_back);
    admission
}

/// How a message is taken.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Every signature that came is checked on its own; only changes that came without one
    /// are taken on their voucher's word ([`crate::vouch`]).
    every_signature: bool,
    /// Whether changes that saw everything before them wait and are applied together.
    taking: Taking,
}

/// Why a message must be taken again, and how.
#[derive(Debug, Clone, Copy)]
enum Again {
    /// Vouching left a change whose own signature fails: check every signature that came.
    CheckEverySignature,
    /// The engine failed on changes applied together: apply them one at a time.
    OneAtATime,
}

/// The changes of `message` (and those held back) through the checks, in causal order,
/// as `how` says.
fn admit(
    doc: &mut AutoCommit,
    message: &SyncMessage,
    cx: &Inbound<'_>,
    refused_before: &HashSet<ChangeHash>,
    held_back: &mut Vec<HeldBack>,
    reload: &mut dyn FnMut() -> AutoCommit,
    how: How,
) -> Result<Admission, Again> {
    let mut admission = Admission::default();
    // A held-back change keeps the signature it came with: judged again with a later
    // message's signatures only, it was refused as unsigned for good, and one applied then
    // was stored and relayed without its signature (found by the county simulator).
    let mut signatures: HashMap<ChangeHash, Attestation> = HashMap::new();
    let mut changes = Vec::new();
    for held in std::mem::take(held_back) {
        if let Some(a) = held.attestation {
            signatures.insert(a.change, a);
        }
        changes.push(held.change);
    }
    for a in cx.attestations {
        signatures.entry(a.change).or_insert_with(|| a.clone());
    }
    let hold = |change: Change, signatures: &HashMap<ChangeHash, Attestation>| HeldBack {
        attestation: signatures.get(&change.hash()).cloned(),
        change,
    };
    let mut seen: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    // The ops each change's canonical-encoding check decoded, kept for its judging up to
    // KEPT_OPS in all; the rest are decoded again when judged.
    let mut ops: HashMap<ChangeHash, Vec<automerge::legacy::Op>> = HashMap::new();
    let mut kept = 0;
    for chunk in &message.changes {
        let decoded = match kept < KEPT_OPS {
            true => syncmsg::decode_change_with_ops(chunk).map(|d| (d.change, Some(d.ops))),
            false => syncmsg::decode_change(chunk).map(|change| (change, None)),
        };
        match decoded {
            Ok((change, decoded_ops)) if seen.insert(change.hash()) => {
                if let Some(decoded_ops) = decoded_ops {
                    kept += decoded_ops.len();
                    ops.insert(change.hash(), decoded_ops);
                }
                changes.push(change);
            }
            Ok(_) => {}
            Err(e) => admission
                .refused
                .push(RefusedChange::unreadable(Refusal::Malformed(e.to_string()))),
        }
    }
    if changes.is_empty() {
        // An acknowledgement: nothing to judge, and no history to read for it.
        return Ok(admission);
    }
    let mut history = History::of(doc);
    let was_empty = doc.get_heads().is_empty();
    changes.retain(|c| !history.contains(&c.hash()));
    // A change refused before is never judged again, but its signature may still vouch for
    // the changes below it (it is how a relay that refused it proves them: [`Proof`]).
    let mut vouchers = Vouchers::plan(&changes, &signatures, how.every_signature);
    changes.retain(|c| !refused_before.contains(&c.hash()));
    let mut refused: HashSet<ChangeHash> = refused_before.clone();
    let mut deferred: HashSet<ChangeHash> = HashSet::new();
    // The case file's facts as the last applied change left them, when it did not change
    // them: exactly the facts a change sees that depends on it and otherwise only on its
    // history.
    let mut carried: Option<(ChangeHash, FactsAt)> = None;
    let mut pending = Pending::over(doc);
    for change in causal_order(changes) {
        let hash = change.hash();
        if change.deps().iter().any(|d| refused.contains(d)) {
            refused.insert(hash);
            admission
                .refused
                .push(RefusedChange::of(&change, Refusal::DependsOnRefused));
            continue;
        }
        if change.deps().iter().any(|d| deferred.contains(d)) {
            deferred.insert(hash);
            admission.deferred.push((hash, Defer::MissingDependency));
            held_back.push(hold(change, &signatures));
            continue;
        }
        let known = carried
            .take()
            .filter(|(after, _)| history.sees_as_after(*after, change.deps()))
            .map(|(_, facts)| facts);
        // A change that saw everything before it may wait to be applied with the next ones;
        // any other is judged against the document, with what was pending applied first.
        let together = how.taking == Taking::Together && pending.seen_whole_by(change.deps());
        if !together {
            apply_pending(doc, &mut pending)?;
        }
        let checked = check(
            doc,
            &mut pending,
            &mut history,
            (&change, ops.remove(&hash)),
            signatures.get(&hash),
            &mut vouchers,
            cx,
            known,
        )?;
        let Passed {
            other,
            facts,
            writes,
        } = match checked {
            Ok(passed) => passed,
            Err(Hold::Defer(why)) => {
                deferred.insert(hash);
                admission.deferred.push((hash, why));
                held_back.push(hold(change, &signatures));
                continue;
            }
            Err(Hold::Refuse(reason)) => {
                refused.insert(hash);
                admission.refused.push(RefusedChange::of(&change, reason));
                continue;
            }
        };
        if other.is_some() {
            // An equivocation is settled on the document itself.
            apply_pending(doc, &mut pending)?;
        }
        if let Some(held) = other {
            // An equivocation: both changes are authentic and valid. The lower hash stays.
            if held < hash {
                refused.insert(hash);
                admission.refused.push(RefusedChange {
                    other: doc.get_change_by_hash(&held).map(|c| OtherChange::of(&c)),
                    ..RefusedChange::of(
                        &change,
                        Refusal::Equivocation {
                            other: held.to_string(),
                        },
                    )
                });
                continue;
            }
            let drop = history.with_descendants(held);
            match rebuild_without(doc, &drop) {
                Ok(gone) => {
                    for c in gone {
                        let reason = if c.hash() == held {
                            Refusal::Equivocation {
                                other: hash.to_string(),
                            }
                        } else {
                            Refusal::DependsOnRefused
                        };
                        refused.insert(c.hash());
                        admission.applied.retain(|h| *h != c.hash());
                        admission.dropped.push(RefusedChange {
                            other: (c.hash() == held).then(|| OtherChange::of(&change)),
                            ..RefusedChange::of(&c, reason)
                        });
                    }
                    history = History::of(doc);
                }
                Err(fault) => return Ok(abandon(doc, reload, &change, fault, admission)),
            }
        }
        if together && other.is_none() {
            history.add(&change);
            pending.add(change, writes);
        } else {
            match contain("applying a change", || apply_changes(doc, [change.clone()])) {
                Ok(Ok(())) => {
                    history.add(&change);
                    pending.restart(doc);
                }
                Ok(Err(e)) => {
                    let fault = crate::contain::EngineFault {
                        what: "applying a change",
                        message: e.to_string(),
                    };
                    return Ok(abandon(doc, reload, &change, fault, admission));
                }
                Err(fault) => {
                    admission.faults += 1;
                    return Ok(abandon(doc, reload, &change, fault, admission));
                }
            }
        }
        carried = facts.filter(|_| other.is_none()).map(|f| (hash, f));
        admission.applied.push(hash);
        admission.signatures.extend(signatures.get(&hash).cloned());
    }
    apply_pending(doc, &mut pending)?;
    admission.proofs = vouchers
        .settle(&admission.applied, cx.auth)
        .map_err(|_| Again::CheckEverySignature)?;
    if was_empty && !admission.applied.is_empty() {
        // A document new to this office: both ends must be in its scope, or nothing stays.
        let scope = scope(cx.id, doc);
        let reason = if !may_hold(cx.id, &scope, cx.peer) {
            Some(Refusal::OutsideSenderScope)
        } else if !may_hold(cx.id, &scope, cx.me) {
            Some(Refusal::OutsideReceiverScope)
        } else {
            None
        };
        if let Some(reason) = reason {
            let applied = std::mem::take(&mut admission.applied);
            admission.proofs.clear();
            let mut all = doc.get_changes(&[]);
            all.retain(|c| applied.contains(&c.hash()));
            admission
                .refused
                .extend(all.iter().map(|c| RefusedChange::of(c, reason.clone())));
            *doc = reload();
        }
    }
    Ok(admission)
}

/// Advances automerge's sync state for the message and bounds what is held back.
fn finish(
    doc: &mut AutoCommit,
    state: &mut sync::State,
    bookkeeping: sync::Message,
    admission: &Admission,
    held_back: &mut Vec<HeldBack>,
) {
    // automerge advances its state for a message that carried changes differently from one
    // that did not; the gate applied the changes itself and hands automerge none, so undo
    // the one step that differs: "no changes, and their heads equal ours" makes it treat our
    // heads as already announced, and it would not reply — leaving the sender forever
    // unsure that this side has its changes.
    let last_sent_before = state.last_sent_heads.clone();
    let _ = contain("updating sync state", || {
        doc.sync().receive_sync_message(state, bookkeeping)
    });
    if !admission.applied.is_empty() {
        state.last_sent_heads = last_sent_before;
    }
    if held_back.len() > MAX_HELD_BACK {
        let over = held_back.len() - MAX_HELD_BACK;
        held_back.drain(..over);
    }
}

/// What to ask the peer for: the first change on each path back from its heads that this
/// document neither holds nor has held back (walking through held-back changes' own
/// dependencies), as automerge asks with its own queue.
pub fn missing_from(
    doc: &mut AutoCommit,
    their_heads: &[ChangeHash],
    held_back: &[HeldBack],
) -> Vec<ChangeHash> {
    let held: HashMap<ChangeHash, &Change> = held_back
        .iter()
        .map(|h| (h.change.hash(), &h.change))
        .collect();
    let mut missing = std::collections::BTreeSet::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<ChangeHash> = their_heads.to_vec();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) || doc.get_change_meta_by_hash(&h).is_some() {
            continue;
        }
        match held.get(&h) {
            Some(c) => stack.extend(c.deps().iter().copied()),
            None => {
                missing.insert(h);
            }
        }
    }
    missing.into_iter().collect()
}

/// Gives up on a message after the engine failed on `change`: the document goes back to the
/// store's copy, `change` is refused, everything else waits for a later message.
fn abandon(
    doc: &mut AutoCommit,
    reload: &mut dyn FnMut() -> AutoCommit,
    change: &Change,
    fault: crate::contain::EngineFault,
    mut admission: Admission,
) -> Admission {
    *doc = reload();
    let undone = std::mem::take(&mut admission.applied);
    // (What the message carried is dropped; the peer offers it again in a later round.)
    admission
        .deferred
        .extend(undone.into_iter().map(|h| (h, Defer::Abandoned)));
    admission.dropped.clear();
    admission.refused.push(RefusedChange::of(
        change,
        Refusal::EngineFault(fault.to_string()),
    ));
    admission
}

/// Judges this node's own change `hash`, already committed to `doc`, exactly as a peer's
/// change is judged (structure and authority; authenticity is the node's own signature).
pub fn judge_local(
    doc: &mut AutoCommit,
    id: &DocId,
    hash: &ChangeHash,
    auth: &dyn Authenticator,
    now_ms: i64,
) -> Result<(), Refusal> {
    let change = doc
        .get_change_by_hash(hash)
        .ok_or_else(|| Refusal::Malformed("the change just made is missing".into()))?;
    let mut history = History::of(doc);
    match check_structure(&mut history, &change, now_ms) {
        Ok(_) => {}
        Err(Hold::Refuse(r)) => return Err(r),
        Err(Hold::Defer(why)) => return Err(Refusal::Time(format!("{why:?}"))),
    }
    let view = history.view(change.deps());
    crate::judge::judge(doc, id, &change, &view, auth)
}

/// Commits the pending operations of `doc` as a change authored by `org` at `stamp` (see
/// [`stamp::commit_time`]). Returns the change's hash, or `None` if nothing was pending.
pub fn commit_as(doc: &mut AutoCommit, org: &OrgPath, stamp: &Stamp) -> Option<ChangeHash> {
    doc.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(author_message(org))
            .with_time(stamp.ms),
    )
}
