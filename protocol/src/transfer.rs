//! Transfers of affiliation (组织关系转接) as events in the case file.
//!
//! A transfer is a set of events, each written once under its own keys:
//! ```text
//! transfers { <t-id>: { id, from_org, to_org, reason, opened_by, opened_at,
//!                       accepted_by, accepted_at | rejected_by, rejected_at |
//!                       cancelled_by, cancelled_at } }
//! ```
//! Nothing is ever overwritten, so concurrent steps at different offices all survive a
//! merge; every `*_at` is its change's signed time (the gate checks it). The member's home
//! and each transfer's state are derived from these events together with the residence
//! assignments by [`crate::affiliation::derive`]; [`resolve_doc`] reads and derives in one go.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjType, ROOT};
use serde::Serialize;

use crate::affiliation::{self, Affiliation, Order};
use crate::layout as keys;
use crate::org::OrgPath;
use crate::reader::Reader;
use crate::stamp::Stamp;

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
pub use crate::layout::ACKS;

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
    /// Every decision.
    pub const ALL: [Decision; 3] = [Decision::Accept, Decision::Reject, Decision::Cancel];

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
        Decision::ALL
            .into_iter()
            .find(|d| d.keys().0 == key || d.keys().1 == key)
    }

    /// `accept`, `reject` or `cancel`.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
            Decision::Cancel => "cancel",
        }
    }
}

/// A transfer's state as derived.
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

impl State {
    /// The state's name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Accepted => "accepted",
            State::Rejected => "rejected",
            State::Cancelled => "cancelled",
            State::Superseded => "superseded",
        }
    }
}

/// One decision on a transfer, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which decision.
    pub decision: Decision,
    /// The office that took it.
    pub by: String,
    /// When (its change's time).
    pub at: String,
    /// Its place in the replay order.
    #[serde(skip)]
    pub order: Order,
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
    /// When (its change's time).
    pub opened_at: String,
    /// Its place in the replay order.
    #[serde(skip)]
    pub order: Order,
    /// Decisions made.
    pub decisions: Vec<Step>,
}

/// Reads every transfer entry (incomplete ones are skipped: the gate never admits them).
pub fn entries(reader: &Reader<'_>) -> Vec<Entry> {
    let Some(map) = reader.obj(&ROOT, keys::TRANSFERS) else {
        return Vec::new();
    };
    reader
        .objects(&map)
        .into_iter()
        .filter_map(|(_, e)| {
            let text = |k: &str| reader.str(&e, k);
            let decisions = Decision::ALL
                .into_iter()
                .filter_map(|d| {
                    let (by, by_id) = reader.str_with_id(&e, d.keys().0)?;
                    let at = text(d.keys().1)?;
                    Some(Step {
                        decision: d,
                        by,
                        order: Order::of(&at, &by_id),
                        at,
                    })
                })
                .collect();
            let opened_at = text("opened_at")?;
            Some(Entry {
                id: text("id")?,
                from_org: text("from_org")?,
                to_org: text("to_org")?,
                reason: text("reason").unwrap_or_default(),
                opened_by: text("opened_by")?,
                order: Order::of(&opened_at, &e),
                opened_at,
                decisions,
            })
        })
        .collect()
}

/// Reads a case file's transfers and residence assignments (as `reader` sees the document)
/// and derives the affiliation.
pub fn resolve_doc(reader: &Reader<'_>) -> (Vec<Entry>, Affiliation) {
    let entries = entries(reader);
    let assignments = crate::casefile::assignments(reader);
    let affiliation = affiliation::derive(
        reader.str(&ROOT, keys::HOME_ORG).as_deref(),
        &entries,
        &assignments,
    );
    (entries, affiliation)
}

/// Opens a transfer of the member from `from` to `to`, stamped with the change's time.
pub fn open(
    doc: &mut AutoCommit,
    id: &str,
    (from, to): (&OrgPath, &OrgPath),
    reason: &str,
    by: &OrgPath,
    stamp: &Stamp,
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
        ("opened_at", stamp.text.as_str()),
    ] {
        doc.put(&entry, k, v)?;
    }
    Ok(())
}

/// Records a decision on transfer `id`, stamped with the change's time; `None` if there is
/// no such transfer.
pub fn decide(
    doc: &mut AutoCommit,
    id: &str,
    decision: Decision,
    by: &OrgPath,
    stamp: &Stamp,
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
    doc.put(&entry, at_key, stamp.text.as_str())?;
    Ok(Some(()))
}

/// Records that office `by` acknowledged conflict `conflict_id`.
pub fn acknowledge(
    doc: &mut AutoCommit,
    conflict_id: &str,
    by: &OrgPath,
    stamp: &Stamp,
) -> Result<(), AutomergeError> {
    let acks = Reader::now(doc)
        .obj(&ROOT, ACKS)
        .ok_or_else(|| AutomergeError::InvalidObjId("case file has no acks".into()))?;
    let ack = doc.put_object(&acks, conflict_id, ObjType::Map)?;
    doc.put(&ack, "by", by.as_str())?;
    doc.put(&ack, "at", stamp.text.as_str())?;
    Ok(())
}

/// Conflict ids acknowledged in the case file.
pub fn acknowledged(reader: &Reader<'_>) -> Vec<String> {
    reader
        .obj(&ROOT, ACKS)
        .map(|a| reader.keys(&a))
        .unwrap_or_default()
}
