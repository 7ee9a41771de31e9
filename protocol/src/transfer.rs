//! Transfers of affiliation (組織關係轉接), and the rule that keeps one home per member.
//!
//! A transfer is a set of events in the case file, each written once under its own keys:
//! ```text
//! transfers { <t-id>: { id, from_org, to_org, reason, opened_by, opened_at,
//!                       accepted_by, accepted_at | rejected_by, rejected_at |
//!                       cancelled_by, cancelled_at } }
//! ```
//! Nothing is ever overwritten, so concurrent steps at different offices all survive a merge.
//! The member's home and every transfer's state are then *derived* by [`resolve`], a pure
//! function of those events, which every node applies to the same document and so reaches
//! the same answer:
//!
//! 1. Transfers are taken in order of (`opened_at`, id), starting from the home the case
//!    file was created with.
//! 2. A transfer opened from an org that is no longer the home at its turn is `superseded`
//!    (unless it was cancelled or rejected anyway).
//! 3. Otherwise, an accept wins: the transfer is `accepted` and the home becomes its target,
//!    even if a reject or cancel was made concurrently ("accept beats a concurrent cancel").
//!    Failing that, a reject, then a cancel, settles it.
//! 4. Of transfers still open from the same home, the earliest stays `open`; later ones are
//!    `superseded`.
//!
//! Every superseded transfer, and every accept that beat a cancel or reject, is a
//! [`Conflict`], listed with the rule that settled it until an office acknowledges it.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjType, ROOT};
use serde::Serialize;

use crate::casefile::keys;
use crate::org::OrgPath;
use crate::reader::Reader;

/// Keys written when a transfer is opened (and never again).
pub const OPEN_KEYS: &[&str] = &[
    "id",
    "from_org",
    "to_org",
    "reason",
    "opened_by",
    "opened_at",
];
/// Root key of conflict acknowledgements in a case file.
pub const ACKS: &str = "acks";

/// A step that settles an open transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The target takes the member (target org and its ancestors).
    Accept,
    /// The target declines (target org and its ancestors).
    Reject,
    /// The opener withdraws (home org and its ancestors).
    Cancel,
}

impl Decision {
    /// The (by, at) keys this decision writes.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            Decision::Accept => ("accepted_by", "accepted_at"),
            Decision::Reject => ("rejected_by", "rejected_at"),
            Decision::Cancel => ("cancelled_by", "cancelled_at"),
        }
    }

    /// The decision that writes `key`, if any.
    pub fn of_key(key: &str) -> Option<Decision> {
        [Decision::Accept, Decision::Reject, Decision::Cancel]
            .into_iter()
            .find(|d| d.keys().0 == key || d.keys().1 == key)
    }
}

/// A transfer's state as resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for the target.
    Open,
    /// Done: the target is the home.
    Accepted,
    /// Declined by the target.
    Rejected,
    /// Withdrawn by the opener.
    Cancelled,
    /// Lost to a concurrent transfer.
    Superseded,
}

/// One transfer's events, as read from a case file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `t-…`.
    pub id: String,
    /// The home when it was opened.
    pub from_org: String,
    /// The target.
    pub to_org: String,
    /// Why.
    pub reason: String,
    /// Who opened it.
    pub opened_by: String,
    /// When (RFC 3339 with milliseconds, so text order is time order).
    pub opened_at: String,
    /// Decisions made: (decision, by, at).
    pub decisions: Vec<(Decision, String, String)>,
}

impl Entry {
    fn decided(&self, d: Decision) -> bool {
        self.decisions.iter().any(|(x, ..)| *x == d)
    }
}

/// Something merging could not settle by itself, and how the rule settled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Stable id: `<transfer id>:<kind>`.
    pub id: String,
    /// The transfer concerned.
    pub transfer_id: String,
    /// `superseded` or `accept-beat-cancel` / `accept-beat-reject`.
    pub kind: String,
    /// The rule that settled it, in words.
    pub rule: String,
    /// The transfer that won, if another one did.
    pub winner: Option<String>,
}

/// The member's home and every transfer's state, derived from the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The one home.
    pub home: Option<String>,
    /// Each transfer's state.
    pub states: BTreeMap<String, State>,
    /// Conflicts, in transfer order.
    pub conflicts: Vec<Conflict>,
}

impl Resolution {
    /// Target orgs of open transfers.
    pub fn open_targets<'a>(&'a self, entries: &'a [Entry]) -> impl Iterator<Item = &'a str> + 'a {
        entries
            .iter()
            .filter(|e| self.states.get(&e.id) == Some(&State::Open))
            .map(|e| e.to_org.as_str())
    }

    /// The open transfer, if any.
    pub fn open_transfer<'a>(&self, entries: &'a [Entry]) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|e| self.states.get(&e.id) == Some(&State::Open))
    }
}

/// Derives home, states and conflicts (see the module docs for the rule).
pub fn resolve(created_home: Option<&str>, entries: &[Entry]) -> Resolution {
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by(|a, b| (&a.opened_at, &a.id).cmp(&(&b.opened_at, &b.id)));
    let mut home = created_home.map(str::to_owned);
    let mut states = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut last_accepted: Option<String> = None;
    let mut open_from: BTreeMap<String, String> = BTreeMap::new(); // home → open transfer
    for e in order {
        let stale = home.as_deref() != Some(e.from_org.as_str());
        let state = if e.decided(Decision::Accept) && !stale {
            for (lost, kind) in [
                (Decision::Cancel, "accept-beat-cancel"),
                (Decision::Reject, "accept-beat-reject"),
            ] {
                if e.decided(lost) {
                    conflicts.push(Conflict {
                        id: format!("{}:{kind}", e.id),
                        transfer_id: e.id.clone(),
                        kind: kind.into(),
                        rule: "an accept beats a concurrent cancel or reject".into(),
                        winner: Some(e.id.clone()),
                    });
                }
            }
            home = Some(e.to_org.clone());
            last_accepted = Some(e.id.clone());
            State::Accepted
        } else if e.decided(Decision::Reject) {
            State::Rejected
        } else if e.decided(Decision::Cancel) {
            State::Cancelled
        } else if stale {
            conflicts.push(Conflict {
                id: format!("{}:superseded", e.id),
                transfer_id: e.id.clone(),
                kind: "superseded".into(),
                rule: "a transfer opened from an org that is no longer the home is superseded by the earlier accepted transfer".into(),
                winner: last_accepted.clone(),
            });
            State::Superseded
        } else if let Some(first) = open_from.get(&e.from_org) {
            conflicts.push(Conflict {
                id: format!("{}:superseded", e.id),
                transfer_id: e.id.clone(),
                kind: "superseded".into(),
                rule: "of transfers open at the same time, the earliest opened wins".into(),
                winner: Some(first.clone()),
            });
            State::Superseded
        } else {
            open_from.insert(e.from_org.clone(), e.id.clone());
            State::Open
        };
        states.insert(e.id.clone(), state);
    }
    // An earlier transfer still open from a home the member has since left is superseded.
    for (from, id) in open_from {
        if home.as_deref() != Some(from.as_str()) {
            states.insert(id.clone(), State::Superseded);
            conflicts.push(Conflict {
                id: format!("{id}:superseded"),
                transfer_id: id,
                kind: "superseded".into(),
                rule: "a transfer opened from an org that is no longer the home is superseded by the later accepted transfer".into(),
                winner: last_accepted.clone(),
            });
        }
    }
    Resolution {
        home,
        states,
        conflicts,
    }
}

/// Reads every transfer entry.
pub fn entries(reader: &Reader<'_>) -> Vec<Entry> {
    let Some(map) = reader.obj(&ROOT, keys::TRANSFERS) else {
        return Vec::new();
    };
    reader
        .keys(&map)
        .iter()
        .filter_map(|k| reader.obj(&map, k))
        .filter_map(|e| {
            let text = |k: &str| reader.str(&e, k);
            let decisions = [Decision::Accept, Decision::Reject, Decision::Cancel]
                .into_iter()
                .filter_map(|d| Some((d, text(d.keys().0)?, text(d.keys().1).unwrap_or_default())))
                .collect();
            Some(Entry {
                id: text("id")?,
                from_org: text("from_org")?,
                to_org: text("to_org")?,
                reason: text("reason").unwrap_or_default(),
                opened_by: text("opened_by").unwrap_or_default(),
                opened_at: text("opened_at").unwrap_or_default(),
                decisions,
            })
        })
        .collect()
}

/// Reads and resolves a case file's transfers (as `reader` sees the document).
pub fn resolve_doc(reader: &Reader<'_>) -> (Vec<Entry>, Resolution) {
    let entries = entries(reader);
    let resolution = resolve(reader.str(&ROOT, keys::HOME_ORG).as_deref(), &entries);
    (entries, resolution)
}

/// Opens a transfer of the member from `from` to `to`.
#[allow(clippy::too_many_arguments)]
pub fn open(
    doc: &mut AutoCommit,
    id: &str,
    from: &OrgPath,
    to: &OrgPath,
    reason: &str,
    by: &OrgPath,
    at: &str,
) -> Result<(), AutomergeError> {
    let transfers = Reader::now(doc)
        .obj(&ROOT, keys::TRANSFERS)
        .ok_or_else(|| AutomergeError::InvalidObjId("case file has no transfers".into()))?;
    let entry = doc.put_object(&transfers, id, ObjType::Map)?;
    for (k, v) in [
        ("id", id),
        ("from_org", from.as_str()),
        ("to_org", to.as_str()),
        ("reason", reason),
        ("opened_by", by.as_str()),
        ("opened_at", at),
    ] {
        doc.put(&entry, k, v)?;
    }
    Ok(())
}

/// Records a decision on transfer `id`; `None` if there is no such transfer.
pub fn decide(
    doc: &mut AutoCommit,
    id: &str,
    decision: Decision,
    by: &OrgPath,
    at: &str,
) -> Result<Option<()>, AutomergeError> {
    let reader = Reader::now(doc);
    let Some(entry) = reader
        .obj(&ROOT, keys::TRANSFERS)
        .and_then(|t| reader.obj(&t, id))
    else {
        return Ok(None);
    };
    let (by_key, at_key) = decision.keys();
    doc.put(&entry, by_key, by.as_str())?;
    doc.put(&entry, at_key, at)?;
    Ok(Some(()))
}

/// Records that office `by` acknowledged conflict `conflict_id`.
pub fn acknowledge(
    doc: &mut AutoCommit,
    conflict_id: &str,
    by: &OrgPath,
    at: &str,
) -> Result<(), AutomergeError> {
    let acks = Reader::now(doc)
        .obj(&ROOT, ACKS)
        .ok_or_else(|| AutomergeError::InvalidObjId("case file has no acks".into()))?;
    let ack = doc.put_object(&acks, conflict_id, ObjType::Map)?;
    doc.put(&ack, "by", by.as_str())?;
    doc.put(&ack, "at", at)?;
    Ok(())
}

/// Conflict ids acknowledged in the case file.
pub fn acknowledged(reader: &Reader<'_>) -> Vec<String> {
    reader
        .obj(&ROOT, ACKS)
        .map(|a| reader.keys(&a))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, from: &str, to: &str, at: &str, decisions: &[Decision]) -> Entry {
        Entry {
            id: id.into(),
            from_org: from.into(),
            to_org: to.into(),
            reason: String::new(),
            opened_by: from.into(),
            opened_at: at.into(),
            decisions: decisions
                .iter()
                .map(|d| (*d, "x".into(), at.into()))
                .collect(),
        }
    }

    #[test]
    fn an_accepted_transfer_moves_the_home() {
        let r = resolve(
            Some("v1"),
            &[entry("t1", "v1", "k1", "1", &[Decision::Accept])],
        );
        assert_eq!(r.home.as_deref(), Some("k1"));
        assert_eq!(r.states["t1"], State::Accepted);
        assert!(r.conflicts.is_empty());
    }

    #[test]
    fn two_concurrent_opens_keep_the_earliest() {
        let r = resolve(
            Some("v1"),
            &[
                entry("t2", "v1", "k2", "2", &[]),
                entry("t1", "v1", "k1", "1", &[]),
            ],
        );
        assert_eq!(r.states["t1"], State::Open);
        assert_eq!(r.states["t2"], State::Superseded);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].winner.as_deref(), Some("t1"));
    }

    #[test]
    fn accept_beats_a_concurrent_cancel() {
        let r = resolve(
            Some("v1"),
            &[entry(
                "t1",
                "v1",
                "k1",
                "1",
                &[Decision::Cancel, Decision::Accept],
            )],
        );
        assert_eq!(
            (r.home.as_deref(), r.states["t1"]),
            (Some("k1"), State::Accepted)
        );
        assert_eq!(r.conflicts[0].kind, "accept-beat-cancel");
    }

    #[test]
    fn accepts_at_two_targets_leave_one_home() {
        let r = resolve(
            Some("v1"),
            &[
                entry("t1", "v1", "k1", "1", &[Decision::Accept]),
                entry("t2", "v1", "k2", "2", &[Decision::Accept]),
            ],
        );
        assert_eq!(r.home.as_deref(), Some("k1"));
        assert_eq!(r.states["t2"], State::Superseded);
        assert_eq!(r.conflicts[0].winner.as_deref(), Some("t1"));
    }

    #[test]
    fn a_later_accept_supersedes_an_earlier_open_one() {
        let r = resolve(
            Some("v1"),
            &[
                entry("t1", "v1", "k1", "1", &[]),
                entry("t2", "v1", "k2", "2", &[Decision::Accept]),
            ],
        );
        // t2, opened concurrently with t1, was accepted: the member moved, so the earlier
        // transfer, still open from the old home, is superseded.
        assert_eq!(r.home.as_deref(), Some("k2"));
        assert_eq!(r.states["t1"], State::Superseded);
        assert_eq!(r.states["t2"], State::Accepted);
    }

    #[test]
    fn chains_of_transfers_follow_the_home() {
        let r = resolve(
            Some("v1"),
            &[
                entry("t1", "v1", "k1", "1", &[Decision::Accept]),
                entry("t2", "k1", "v2", "2", &[Decision::Accept]),
                entry("t3", "v1", "v3", "3", &[]),
            ],
        );
        assert_eq!(r.home.as_deref(), Some("v2"));
        assert_eq!(r.states["t3"], State::Superseded);
    }
}
