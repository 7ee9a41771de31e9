//! The org roster document (组织名册): an org's profile and its roster history.
//!
//! Layout: flat root keys with scalar values, so that the org and any ancestor may create
//! or edit the document concurrently without two competing maps (one would lose):
//! ```text
//! kind = "org", org = "<path>"
//! profile:<field> = "<text>"           name, kind, secretary, liaison
//! history:<member id>:<event> = JSON   one roster-history line
//! ```
//! The members whose home or residence is the org are not stored here: they are derived
//! from the case files the office holds.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ROOT};
use serde::{Deserialize, Serialize};

use crate::org::OrgPath;
use crate::reader::Reader;

/// The value of the `kind` key of a roster document.
pub const KIND_ORG: &str = "org";
/// Prefix of profile keys.
pub const PROFILE_PREFIX: &str = "profile:";
/// Prefix of history keys.
pub const HISTORY_PREFIX: &str = "history:";
/// Prefix of grid keys: `grid:<name>` = responsible person.
pub const GRID_PREFIX: &str = "grid:";
/// Profile fields an org may set.
pub const PROFILE_FIELDS: &[&str] = &["name", "kind", "secretary", "liaison"];

/// One line of roster history: a member who left this org's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// The member's case file id.
    pub id: String,
    /// The member's name when they left.
    pub name: String,
    /// `transferred-out` or `residence-ended`.
    pub event: String,
    /// When (RFC 3339).
    pub at: String,
    /// Where the member went, if anywhere.
    pub to_org: Option<String>,
}

/// The roster document as read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Roster {
    /// Profile fields present.
    pub profile: std::collections::BTreeMap<String, String>,
    /// History, oldest first.
    pub history: Vec<HistoryLine>,
    /// Grids (网格) and their responsible person (第一责任人).
    pub grids: std::collections::BTreeMap<String, String>,
}

/// Sets a grid's responsible person; an empty person removes the grid.
pub fn set_grid(doc: &mut AutoCommit, grid: &str, person: &str) -> Result<(), AutomergeError> {
    let key = format!("{GRID_PREFIX}{grid}");
    if person.is_empty() {
        doc.delete(ROOT, key)?;
    } else {
        doc.put(ROOT, key, person)?;
    }
    Ok(())
}

/// Marks the document as `org`'s roster (idempotent).
pub fn ensure(doc: &mut AutoCommit, org: &OrgPath) -> Result<(), AutomergeError> {
    let (has_kind, has_org) = {
        let reader = Reader::now(doc);
        (
            reader.str(&ROOT, "kind").is_some(),
            reader.str(&ROOT, "org").is_some(),
        )
    };
    if !has_kind {
        doc.put(ROOT, "kind", KIND_ORG)?;
    }
    if !has_org {
        doc.put(ROOT, "org", org.as_str())?;
    }
    Ok(())
}

/// Sets one profile field.
pub fn set_profile(doc: &mut AutoCommit, field: &str, value: &str) -> Result<(), AutomergeError> {
    doc.put(ROOT, format!("{PROFILE_PREFIX}{field}"), value)?;
    Ok(())
}

/// Appends a history line (keyed by member and event, so replays do not duplicate it).
pub fn add_history(doc: &mut AutoCommit, line: &HistoryLine) -> Result<(), AutomergeError> {
    let json = serde_json::to_string(line).expect("history line serialises");
    doc.put(
        ROOT,
        format!("{HISTORY_PREFIX}{}:{}:{}", line.id, line.event, line.at),
        json,
    )?;
    Ok(())
}

/// Reads profile and history.
pub fn read(doc: &AutoCommit) -> Roster {
    let reader = Reader::now(doc);
    let mut roster = Roster::default();
    for (key, v) in reader.str_fields(&ROOT) {
        if let Some(field) = key.strip_prefix(PROFILE_PREFIX) {
            roster.profile.insert(field.to_owned(), v);
        } else if let Some(grid) = key.strip_prefix(GRID_PREFIX) {
            roster.grids.insert(grid.to_owned(), v);
        } else if key.starts_with(HISTORY_PREFIX)
            && let Ok(line) = serde_json::from_str(&v)
        {
            roster.history.push(line);
        }
    }
    roster.history.sort_by(|a: &HistoryLine, b| a.at.cmp(&b.at));
    roster
}
