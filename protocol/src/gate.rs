//! The gate: every change reaches a document only through here.
//!
//! Each change names its author org in its commit message (`org:<path>`). For every change
//! a peer sends, the gate computes exactly what that change touched (the diff from the
//! change's own dependencies to the change) and judges each touched path against the
//! authority table, with the document's facts as the author saw them. Refused changes, and
//! changes that depend on them, never reach the document; the rest of the batch applies.
//! The node runs its own writes through [`judge_change`] too, so an API 403 and a wire
//! refusal always agree.

use std::collections::{HashMap, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, Change, ChangeHash, PatchAction, Prop, ROOT, ReadDoc};

use crate::attest::{Attestation, Authenticator};
use crate::authority::{self, Facts, Field, Refusal, STAMP_KEYS};
use crate::casefile::{self, MemberFacts};
use crate::ids::{DocId, DocKind};
use crate::org::OrgPath;
use crate::reader::Reader;
use crate::transfer;
use crate::visibility::{may_hold, scope};

/// Commit-message prefix naming the author org of a change.
pub const AUTHOR_PREFIX: &str = "org:";

/// The commit message that names `org` as a change's author.
pub fn author_message(org: &OrgPath) -> String {
    format!("{AUTHOR_PREFIX}{org}")
}

/// The author org a change claims, if it claims a valid one.
pub fn author_of(change: &Change) -> Option<OrgPath> {
    change
        .message()?
        .strip_prefix(AUTHOR_PREFIX)
        .and_then(|s| OrgPath::parse(s).ok())
}

/// A change the gate refused: kept in quarantine, never applied, never forwarded.
#[derive(Debug, Clone)]
pub struct RefusedChange {
    /// The change's hash (none when the whole message was unreadable).
    pub hash: Option<ChangeHash>,
    /// The org the change claimed as author.
    pub author: Option<OrgPath>,
    /// Why.
    pub reason: Refusal,
    /// The change's bytes, kept as evidence.
    pub bytes: Option<Vec<u8>>,
}

impl RefusedChange {
    /// A refusal of a whole message that could not be read.
    pub fn unreadable(reason: Refusal) -> RefusedChange {
        RefusedChange {
            hash: None,
            author: None,
            reason,
            bytes: None,
        }
    }
}

/// What receiving one sync message did.
#[derive(Debug, Default)]
pub struct Admission {
    /// Changes applied to the document, in causal order.
    pub applied: Vec<ChangeHash>,
    /// Changes refused (not applied).
    pub refused: Vec<RefusedChange>,
}

fn full_path(patch: &automerge::Patch) -> Vec<Prop> {
    let mut path: Vec<Prop> = patch.path.iter().map(|(_, p)| p.clone()).collect();
    match &patch.action {
        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
            path.push(Prop::Map(key.clone()))
        }
        PatchAction::PutSeq { index, .. }
        | PatchAction::Insert { index, .. }
        | PatchAction::SpliceText { index, .. }
        | PatchAction::DeleteSeq { index, .. } => path.push(Prop::Seq(*index)),
        PatchAction::Increment { prop, .. } | PatchAction::Conflict { prop } => {
            path.push(prop.clone())
        }
        PatchAction::Mark { .. } => {}
    }
    path
}

/// The string a patch puts, if it puts a string under a map key.
fn put_string(patch: &automerge::Patch) -> Option<(&str, Option<String>)> {
    match &patch.action {
        PatchAction::PutMap { key, value, .. } => {
            let text = match &value.0 {
                automerge::Value::Scalar(s) => s.as_str().map(str::to_owned),
                _ => None,
            };
            Some((key.as_str(), text))
        }
        _ => None,
    }
}

/// Judges one change that is already applied to `doc` (with its dependencies).
///
/// `already_created`: the receiving copy already had a case file before this change, so
/// creation keys may not be written again.
pub fn judge_change(
    doc: &mut AutoCommit,
    id: &DocId,
    change: &Change,
    already_created: bool,
    auth: &dyn Authenticator,
) -> Result<(), Refusal> {
    let author = author_of(change).ok_or(Refusal::UnknownAuthor)?;
    let deps = change.deps().to_vec();
    let after = vec![change.hash()];
    let patches = doc.diff(&deps, &after);
    let before_r = Reader::at(doc, &deps);
    let after_r = Reader::at(doc, &after);
    let kind = id.kind();
    let facts = match kind {
        DocKind::Member => {
            let before = MemberFacts::read(&before_r);
            let creating = before.home_org.is_none();
            let seen = if creating {
                MemberFacts::read(&after_r)
            } else {
                before
            };
            Facts {
                home_org: seen.home_org.clone(),
                residence_org: seen.residence_org.clone(),
                scope: seen.scope(),
                roster_org: None,
            }
        }
        DocKind::OrgRoster => Facts {
            roster_org: id.roster_org(),
            ..Facts::default()
        },
        DocKind::Revocations => Facts::default(),
        DocKind::Status => Facts {
            roster_org: id.status_of().map(|(org, _)| org),
            ..Facts::default()
        },
    };
    let created_before = already_created || MemberFacts::read(&before_r).home_org.is_some();
    let lookup = Entries {
        before: &before_r,
        after: &after_r,
    };
    for patch in &patches {
        let path = full_path(patch);
        let field = authority::classify(kind, &path, &lookup);
        if field == Field::Creation && created_before {
            return Err(Refusal::Immutable(describe(&path)));
        }
        authority::authorise(&author, &field, &facts)?;
        check_values(id, &author, patch)?;
        if field == Field::TransferOpen {
            check_transfer_open(patch, &facts)?;
        }
        if field == Field::Revocation {
            match put_string(patch) {
                Some((key, Some(value))) => auth.check_revocation(key, &value)?,
                _ => {
                    return Err(Refusal::Immutable(
                        "a revocation cannot be withdrawn or altered".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The entries of a case file as the author saw them (before) and as the change left them.
struct Entries<'a> {
    before: &'a Reader<'a>,
    after: &'a Reader<'a>,
}

impl authority::Lookup for Entries<'_> {
    fn recorder(&self, id: &str) -> Option<String> {
        casefile::activity_recorder(self.before, id)
            .or_else(|| casefile::activity_recorder(self.after, id))
    }

    fn transfer(&self, id: &str) -> Option<authority::TransferFacts> {
        transfer::entries(self.before)
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| authority::TransferFacts {
                decided: !e.decisions.is_empty(),
                from_org: e.from_org,
                to_org: e.to_org,
            })
    }
}

/// A transfer is opened from the member's current home, to another valid org.
fn check_transfer_open(patch: &automerge::Patch, facts: &Facts) -> Result<(), Refusal> {
    let Some((key, value)) = put_string(patch) else {
        return Ok(());
    };
    let home = facts.home_org.as_ref().map(OrgPath::as_str);
    match key {
        "from_org" if value.as_deref() != home => Err(Refusal::Immutable(format!(
            "a transfer must be opened from the current home {}",
            home.unwrap_or("(none)")
        ))),
        "to_org"
            if value
                .as_deref()
                .and_then(|v| OrgPath::parse(v).ok())
                .is_none()
                || value.as_deref() == home =>
        {
            Err(Refusal::Malformed(
                "a transfer's target must be another org".into(),
            ))
        }
        _ => Ok(()),
    }
}

fn describe(path: &[Prop]) -> String {
    path.iter()
        .map(|p| match p {
            Prop::Map(k) => k.clone(),
            Prop::Seq(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Stamps must name the author; identity keys of the document must match its id.
fn check_values(id: &DocId, author: &OrgPath, patch: &automerge::Patch) -> Result<(), Refusal> {
    let Some((key, value)) = put_string(patch) else {
        return Ok(());
    };
    if STAMP_KEYS.contains(&key) && value.as_deref() != Some(author.as_str()) {
        return Err(Refusal::StampMismatch {
            key: key.to_owned(),
            value: value.unwrap_or_default(),
            author: author.to_string(),
        });
    }
    if patch.path.is_empty() {
        let expected = match (id.kind(), key) {
            (DocKind::Member, "id") => Some(id.as_str().to_owned()),
            (DocKind::Member, "kind") => Some(casefile::KIND_MEMBER.to_owned()),
            (DocKind::OrgRoster, "org") => id.roster_org().map(|o| o.to_string()),
            (DocKind::OrgRoster, "kind") => Some(crate::roster::KIND_ORG.to_owned()),
            _ => None,
        };
        if let Some(expected) = expected
            && value.as_deref() != Some(expected.as_str())
        {
            return Err(Refusal::Immutable(format!("{key} must be {expected:?}")));
        }
        if key == casefile::keys::HOME_ORG
            && value
                .as_deref()
                .and_then(|v| OrgPath::parse(v).ok())
                .is_none()
        {
            return Err(Refusal::Malformed("home_org is not an org path".into()));
        }
    }
    Ok(())
}

fn refused(change: &Change, reason: Refusal) -> RefusedChange {
    RefusedChange {
        hash: Some(change.hash()),
        author: author_of(change),
        reason,
        bytes: Some(change.raw_bytes().to_vec()),
    }
}

fn refuse_all(changes: &[Change], reason: Refusal) -> Admission {
    Admission {
        applied: Vec::new(),
        refused: changes.iter().map(|c| refused(c, reason.clone())).collect(),
    }
}

/// Authenticates and judges one incoming change (already applied to `trial`).
fn admit_change(
    trial: &mut AutoCommit,
    id: &DocId,
    change: &Change,
    created: bool,
    auth: &dyn Authenticator,
    attestations: &HashMap<ChangeHash, Attestation>,
) -> Result<(), Refusal> {
    let author = author_of(change).ok_or(Refusal::UnknownAuthor)?;
    auth.authenticate(change, &author, attestations.get(&change.hash()))?;
    judge_change(trial, id, change, created, auth)
}

/// Receives a sync message from `peer` into `doc` as office `me`, applying only the changes
/// that are authentic (`auth`, with the `attestations` that came with the message) and
/// within their author's authority. Sync bookkeeping in `state` advances as automerge's
/// own would.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    doc: &mut AutoCommit,
    state: &mut sync::State,
    id: &DocId,
    mut message: sync::Message,
    peer: &OrgPath,
    me: &OrgPath,
    auth: &dyn Authenticator,
    attestations: &HashMap<ChangeHash, Attestation>,
) -> Admission {
    if message.changes.is_empty() {
        // Heads, have and need only: nothing to judge.
        if let Err(e) = doc.sync().receive_sync_message(state, message) {
            return Admission {
                applied: Vec::new(),
                refused: vec![RefusedChange::unreadable(Refusal::Malformed(e.to_string()))],
            };
        }
        return Admission::default();
    }
    let before_heads = doc.get_heads();
    let existed = !before_heads.is_empty();
    let mut trial = doc.clone();
    let bytes: Vec<u8> = message.changes.iter().flatten().copied().collect();
    if let Err(e) = trial.load_incremental(&bytes) {
        return Admission {
            applied: Vec::new(),
            refused: vec![RefusedChange::unreadable(Refusal::Malformed(e.to_string()))],
        };
    }
    let incoming = trial.get_changes(&before_heads);
    // A document new to this office must be one the sender may hold, and this office too.
    // For a document already held there is no sender check: every change is authenticated
    // and judged on its own, and leaks are stopped on the sending side (a node never sends a
    // document to a peer outside its scope); a check here would only stall sync when two
    // offices' views of the scope differ for a moment (e.g. a transfer in flight).
    if !existed && !may_hold(id, &scope(id, &trial), peer) {
        return refuse_all(&incoming, Refusal::OutsideSenderScope);
    }
    if !existed && !may_hold(id, &scope(id, &trial), me) {
        return refuse_all(&incoming, Refusal::OutsideReceiverScope);
    }
    let mut created = MemberFacts::read(&Reader::now(doc)).home_org.is_some();
    let mut refused_hashes: HashSet<ChangeHash> = HashSet::new();
    let mut admission = Admission::default();
    for change in &incoming {
        let verdict = if change.deps().iter().any(|d| refused_hashes.contains(d)) {
            Err(Refusal::DependsOnRefused)
        } else {
            admit_change(&mut trial, id, change, created, auth, attestations)
        };
        match verdict {
            Ok(()) => {
                admission.applied.push(change.hash());
                if id.kind() == DocKind::Member {
                    created = created
                        || trial
                            .get_at(ROOT, casefile::keys::HOME_ORG, &[change.hash()])
                            .ok()
                            .flatten()
                            .is_some();
                }
            }
            Err(reason) => {
                refused_hashes.insert(change.hash());
                admission.refused.push(refused(change, reason));
            }
        }
    }
    if !admission.refused.is_empty() {
        let admitted: Vec<Vec<u8>> = incoming
            .iter()
            .filter(|c| !refused_hashes.contains(&c.hash()))
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        message.changes = admitted.into();
    }
    if let Err(e) = doc.sync().receive_sync_message(state, message) {
        // Cannot happen for changes that already applied to the trial copy; refuse loudly.
        admission.applied.clear();
        admission
            .refused
            .push(RefusedChange::unreadable(Refusal::Malformed(e.to_string())));
    }
    admission
}

/// Commits the pending operations of `doc` as a change authored by `org` at `now_ms`
/// (milliseconds since the Unix epoch). Returns the change's hash, or `None` if nothing was
/// pending.
pub fn commit_as(doc: &mut AutoCommit, org: &OrgPath, now_ms: i64) -> Option<ChangeHash> {
    doc.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(author_message(org))
            .with_time(now_ms / 1000),
    )
}
