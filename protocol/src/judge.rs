//! Judging one change by its operations, before automerge applies it.
//!
//! Each op of a change is read for what it touches — the path of its object (made earlier in
//! history, or earlier in the same change), its key, its value — and for whether an honest
//! automerge could have produced it from what the author saw (the document at the change's
//! dependencies):
//!
//! - its object, list element and predecessors were made inside the change's own history
//!   ([`crate::history::View`]) or earlier in the change;
//! - a map write names as predecessors exactly the values the author could see at that key;
//!   a list op only inserts (no layout ever edits or deletes a list item) after an element
//!   the author could see;
//! - no op deletes anything from a case file, increments or marks text.
//!
//! Then every touched path is classified ([`Field`]) against the document layouts
//! ([`crate::casefile`], [`crate::roster`], the status and revocation documents), authorised
//! against the authority table with the facts as the author saw them ([`authorise`]), and its
//! value checked as the API checks it. Times that order events must be the change's own
//! time. A change is admitted only if every op passes: judging happens before the change is
//! applied, so a refused change never reaches the document, and the node's own writes go
//! through the same function as a peer's.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use automerge::legacy::{ElementId, Key, ObjectId, OpType};
use automerge::{ActorId, AutoCommit, Change, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::attest::Authenticator;
use crate::authority::{Facts, Field, TransferFacts, authorise};
use crate::casefile::{self, MemberFacts, keys};
use crate::contain::contain;
use crate::history::View;
use crate::ids::{DocId, DocKind};
use crate::org::OrgPath;
use crate::pending::{Pending, Writes};
use crate::reader::Reader;
use crate::refusal::Refusal;
use crate::roster;
use crate::stamp::rfc3339;
use crate::transfer::{self, Decision, Entry, State};
use crate::validate::{self, FieldError};

/// Commit-message prefix naming the author org of a change.
pub const AUTHOR_PREFIX: &str = "org:";

/// The author org a change claims, if it claims a valid one.
pub fn author_of(change: &Change) -> Option<OrgPath> {
    change
        .message()?
        .strip_prefix(AUTHOR_PREFIX)
        .and_then(|s| OrgPath::parse(s).ok())
}

pub use crate::columns::MAX_OPS;
/// Longest map key accepted in any document.
pub const MAX_KEY: usize = 320;

/// Root containers every case file is created with.
const CONTAINERS: &[&str] = &[
    keys::IDENTITY,
    keys::RESIDENCE,
    keys::ACTIVITIES,
    keys::REVIEWS,
    keys::TRANSFERS,
    keys::CONTACTS,
    transfer::ACKS,
];
/// Identity fields holding text, with how each is checked.
const IDENTITY_TEXT: &[&str] = &[
    "name",
    "gender",
    "ethnicity",
    "birth_date",
    "joined_at",
    "id_number",
    "phone",
    "education",
];
/// Activity fields its recorder may change after creating the entry.
const ACTIVITY_EDITABLE: &[&str] = &["date", "kind", "description", "points"];

/// One path segment: a map key, or an item of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Item,
}

/// An op id as (counter, actor). (A node's actor is 24 bytes, past the 16 automerge keeps
/// inline, so a key still allocates; the judge avoids cloning keys and paths it only reads.)
pub(crate) type OpKey = (u64, ActorId);

fn op_key(id: &automerge::legacy::OpId) -> OpKey {
    (id.counter(), id.actor().clone())
}

/// An object an op writes into.
#[derive(Debug, Clone)]
pub(crate) struct Obj {
    path: Vec<Seg>,
    kind: ObjType,
    /// Made by this change.
    new: bool,
    /// Its id in the document (None for objects made by this change or a pending one).
    exid: Option<automerge::ObjId>,
}

impl Obj {
    /// The object as a later change sees it: made before that change.
    pub(crate) fn made_before(self) -> Obj {
        Obj { new: false, ..self }
    }
}

/// Why the judge stopped short of admitting a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The change may not be applied.
    Refuse(Refusal),
    /// Judging it reads more of the document than the pending changes answer for: apply them,
    /// then judge it again.
    ApplyPending,
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refuse(r)
    }
}

/// An admitted change: the facts it carries to a next change, and what it wrote.
#[derive(Debug)]
pub struct Judged {
    /// The case file's facts after the change, when it left them as they were.
    pub facts: Option<FactsAt>,
    /// What it wrote, for [`Pending::add`].
    pub writes: Writes,
}

/// What the kind of entry a new object of this change is, for the completeness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Assignment,
    Activity,
    Comment,
    Review,
    Transfer,
    Ack,
}

impl EntryKind {
    fn required(self) -> &'static [&'static str] {
        match self {
            EntryKind::Assignment => &["org", "since", "until", "by", "at"],
            EntryKind::Activity => &[
                "id",
                "date",
                "kind",
                "description",
                "recorded_by",
                "comments",
            ],
            EntryKind::Comment => &["by", "at", "text"],
            EntryKind::Review => &["period", "rating", "comment", "reviewed_by"],
            EntryKind::Transfer => transfer::OPEN_KEYS,
            EntryKind::Ack => &["by", "at"],
        }
    }
}

/// What the judge knows of the document as the change's author saw it.
struct Seen<'a> {
    doc: &'a AutoCommit,
    id: &'a DocId,
    deps: Vec<automerge::ChangeHash>,
    author: OrgPath,
    /// The change's own time, as written in documents.
    at: String,
    creating: bool,
    facts: Facts,
    transfers: Vec<Entry>,
    open: Option<String>,
    auth: &'a dyn Authenticator,
    /// Changes are pending: the document does not yet show what the author saw.
    pending: bool,
    /// A read the pending changes could not answer was asked for.
    needs_document: Cell<bool>,
}

/// A case file's facts as some heads show them: what [`transfer::resolve_doc`] derives from
/// its home org, transfers and residence assignments. Resolving them is the judge's largest
/// cost; a change that writes none of what they are read from leaves them as they were, so
/// the gate carries them to a next change that sees exactly that change and its history
/// ([`judge_carrying`], [`crate::history::History::sees_as_after`]).
#[derive(Debug, Clone)]
pub struct FactsAt {
    facts: Facts,
    transfers: Vec<Entry>,
    open: Option<String>,
}

/// True when an op at `path` writes something a case file's facts are read from (see
/// [`transfer::resolve_doc`]): the home org, anything under transfers, the residence map
/// itself, or anything under its assignments.
fn shapes_facts(path: &[Seg]) -> bool {
    let key = |seg: Option<&Seg>, name: &str| matches!(seg, Some(Seg::Key(k)) if k == name);
    let (first, second) = (path.first(), path.get(1));
    key(first, keys::HOME_ORG)
        || key(first, keys::TRANSFERS)
        || (key(first, keys::RESIDENCE) && (second.is_none() || key(second, keys::ASSIGNMENTS)))
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::Malformed(message.into())
}

fn invalid(e: FieldError) -> Refusal {
    Refusal::InvalidValue {
        field: e.field,
        message: e.message,
    }
}

fn text_of(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Str(s) => Some(s.as_str()),
        _ => None,
    }
}

fn describe(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => k.as_str(),
            Seg::Item => "[]",
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A text value, checked with `check`.
fn text(
    field: &str,
    v: &ScalarValue,
    check: impl FnOnce(&str) -> Result<(), FieldError>,
) -> Result<(), Refusal> {
    let s = text_of(v).ok_or_else(|| Refusal::InvalidValue {
        field: field.to_owned(),
        message: "must be text".into(),
    })?;
    check(s).map_err(invalid)
}

fn nullable_date(field: &str, v: &ScalarValue) -> Result<(), Refusal> {
    match v {
        ScalarValue::Null => Ok(()),
        v => text(field, v, |s| validate::date(field, s)),
    }
}

impl Seen<'_> {
    fn stamp(&self, key: &str, v: &ScalarValue) -> Result<(), Refusal> {
        match text_of(v) {
            Some(s) if s == self.author.as_str() => Ok(()),
            other => Err(Refusal::StampMismatch {
                key: key.to_owned(),
                value: other.unwrap_or("(not text)").to_owned(),
                author: self.author.to_string(),
            }),
        }
    }

    /// A time that orders events: it must be the change's own.
    fn own_time(&self, key: &str, v: &ScalarValue) -> Result<(), Refusal> {
        match text_of(v) {
            Some(s) if s == self.at => Ok(()),
            other => Err(Refusal::Time(format!(
                "{key} = {:?} but the change was made at {}",
                other.unwrap_or("(not text)"),
                self.at
            ))),
        }
    }

    /// The document as the author saw it, if the pending changes do not stand in the way.
    fn reader(&self) -> Option<Reader<'_>> {
        if self.pending {
            self.needs_document.set(true);
            return None;
        }
        Some(Reader::at(self.doc, &self.deps))
    }

    fn recorder(&self, activity: &str) -> Option<String> {
        casefile::activity_recorder(&self.reader()?, activity)
    }

    fn transfer(&self, id: &str) -> Option<TransferFacts> {
        let (_, affiliation) = transfer::resolve_doc(&self.reader()?);
        self.transfers
            .iter()
            .find(|e| e.id == id)
            .map(|e| TransferFacts {
                from_org: e.from_org.clone(),
                to_org: e.to_org.clone(),
                state: affiliation
                    .states
                    .get(id)
                    .copied()
                    .unwrap_or(State::Superseded),
            })
    }

    fn home(&self) -> Option<&str> {
        self.facts.home_org.as_ref().map(OrgPath::as_str)
    }

    /// An entry id of the form `<prefix>-<this member's hex>-<8 hex>`.
    fn member_entry_id(&self, prefix: char, key: &str) -> Result<(), Refusal> {
        let member = self.id.as_str().trim_start_matches("m-");
        let ok = key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_prefix(member))
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|r| r.len() == 8 && r.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(())
        } else {
            Err(bad(format!("{key:?} is not an id of this case file")))
        }
    }
}

/// What an op does.
#[derive(Debug, Clone, Copy)]
enum Act<'a> {
    Make(ObjType),
    Put(&'a ScalarValue),
    Delete,
}

/// Classifies and checks one op of a case file. `new` says the op's object was made by
/// this change; `overwrites` says the op replaces a value the author could see.
fn member_field(
    seen: &Seen<'_>,
    path: &[Seg],
    act: Act<'_>,
    new: bool,
    overwrites: bool,
) -> Result<(Field, Option<EntryKind>), Refusal> {
    let p: Vec<Option<&str>> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Item => None,
        })
        .collect();
    let once = |what: &str| Refusal::Immutable(format!("{what} (entries are written once)"));
    use Act::{Delete, Make, Put};
    if matches!(act, Delete) {
        return Err(Refusal::Immutable(format!(
            "{} (nothing is ever deleted from a case file)",
            describe(path)
        )));
    }
    let field = match (p.as_slice(), act) {
        // The creation change writes the root, once.
        ([Some(k)], _) if !seen.creating => return Err(Refusal::Immutable((*k).to_owned())),
        ([Some(keys::KIND)], Put(v)) if text_of(v) == Some(casefile::KIND_MEMBER) => {
            Field::Creation
        }
        ([Some(keys::HOME_ORG)], Put(v)) => {
            text(keys::HOME_ORG, v, |s| {
                OrgPath::parse(s)
                    .map(|_| ())
                    .map_err(|e| FieldError::new(keys::HOME_ORG, e.to_string()))
            })?;
            Field::Creation
        }
        ([Some(k)], Make(ObjType::Map)) if CONTAINERS.contains(k) => Field::Creation,
        (
            [
                Some(keys::RESIDENCE),
                Some(keys::ASSIGNMENTS | keys::REPORTS),
            ],
            Make(ObjType::Map),
        ) if seen.creating && new => Field::Creation,
        // Identity.
        ([Some(keys::IDENTITY), Some(f)], Put(v)) if IDENTITY_TEXT.contains(f) => {
            text(f, v, |s| casefile::check_identity_field(f, s))?;
            Field::Identity
        }
        ([Some(keys::IDENTITY), Some("categories")], Make(ObjType::List)) => Field::Identity,
        ([Some(keys::IDENTITY), Some("categories"), None], Put(v)) if new => {
            text("categories", v, |s| {
                validate::one_of("categories", s, validate::CATEGORIES)
            })?;
            Field::Identity
        }
        // Residence: assignment events and report-ins.
        ([Some(keys::RESIDENCE), Some(keys::ASSIGNMENTS), Some(rid)], Make(ObjType::Map)) => {
            if overwrites {
                return Err(once(rid));
            }
            seen.member_entry_id('r', rid)?;
            return Ok((Field::ResidenceAssignment, Some(EntryKind::Assignment)));
        }
        (
            [
                Some(keys::RESIDENCE),
                Some(keys::ASSIGNMENTS),
                Some(_),
                Some(f),
            ],
            Put(v),
        ) if new => {
            match *f {
                "org" => match v {
                    ScalarValue::Null => {}
                    v => text("org", v, |s| match OrgPath::parse(s) {
                        Ok(_) if Some(s) == seen.home() => Err(FieldError::new(
                            "org",
                            "the residence org must differ from the home org",
                        )),
                        Ok(_) => Ok(()),
                        Err(e) => Err(FieldError::new("org", e.to_string())),
                    })?,
                },
                "since" | "until" => nullable_date(f, v)?,
                keys::BY => seen.stamp(f, v)?,
                "at" => seen.own_time("at", v)?,
                other => {
                    return Err(Refusal::UnknownField(format!(
                        "residence assignment {other}"
                    )));
                }
            }
            Field::ResidenceAssignment
        }
        ([Some(keys::RESIDENCE), Some(keys::REPORTS), Some(org)], Put(v)) => {
            text("date", v, |s| validate::date("date", s))?;
            Field::ReportIn {
                org: (*org).to_owned(),
            }
        }
        // Activities: new entries, their comments, edits by the recorder.
        ([Some(keys::ACTIVITIES), Some(aid)], Make(ObjType::Map)) => {
            if overwrites {
                return Err(once(aid));
            }
            casefile::check_entry_id('a', aid).map_err(invalid)?;
            return Ok((
                Field::Activity {
                    recorder: Some(seen.author.to_string()),
                },
                Some(EntryKind::Activity),
            ));
        }
        ([Some(keys::ACTIVITIES), Some(aid), Some(f)], _) if new => {
            match (*f, act) {
                ("id", Put(v)) if text_of(v) == Some(*aid) => {}
                (keys::RECORDED_BY, Put(v)) => seen.stamp(f, v)?,
                (keys::COMMENTS, Make(ObjType::List)) => {}
                (f, Put(v)) if ACTIVITY_EDITABLE.contains(&f) => {
                    casefile::check_activity_field(f, v).map_err(invalid)?
                }
                (f, _) => return Err(Refusal::UnknownField(format!("activity {f}"))),
            }
            Field::Activity {
                recorder: Some(seen.author.to_string()),
            }
        }
        ([Some(keys::ACTIVITIES), Some(aid), Some(f)], Put(v)) if ACTIVITY_EDITABLE.contains(f) => {
            casefile::check_activity_field(f, v).map_err(invalid)?;
            Field::Activity {
                recorder: seen.recorder(aid),
            }
        }
        ([Some(keys::ACTIVITIES), Some(_), Some(keys::COMMENTS), None], Make(ObjType::Map)) => {
            return Ok((Field::ActivityComment, Some(EntryKind::Comment)));
        }
        (
            [
                Some(keys::ACTIVITIES),
                Some(_),
                Some(keys::COMMENTS),
                None,
                Some(f),
            ],
            Put(v),
        ) if new => {
            match *f {
                keys::BY => seen.stamp(f, v)?,
                "at" => text("at", v, |s| validate::text("at", s, 40, false))?,
                "text" => text("text", v, |s| validate::text("text", s, 2000, false))?,
                other => return Err(Refusal::UnknownField(format!("comment {other}"))),
            }
            Field::ActivityComment
        }
        // Reviews: a review of a period is written whole (a new review replaces it).
        ([Some(keys::REVIEWS), Some(period)], Make(ObjType::Map)) => {
            validate::period("period", period).map_err(invalid)?;
            return Ok((Field::Review, Some(EntryKind::Review)));
        }
        ([Some(keys::REVIEWS), Some(period), Some(f)], Put(v)) if new => {
            match *f {
                "period" if text_of(v) == Some(*period) => {}
                "rating" => text(f, v, |s| validate::one_of(f, s, validate::RATINGS))?,
                "comment" => text(f, v, |s| validate::text(f, s, 2000, true))?,
                keys::REVIEWED_BY => seen.stamp(f, v)?,
                other => return Err(Refusal::UnknownField(format!("review {other}"))),
            }
            Field::Review
        }
        // Transfers: opened whole, then decided once.
        ([Some(keys::TRANSFERS), Some(tid)], Make(ObjType::Map)) => {
            if overwrites {
                return Err(once(tid));
            }
            seen.member_entry_id('t', tid)?;
            if let Some(open) = &seen.open {
                return Err(Refusal::TransferAlreadyOpen(open.clone()));
            }
            return Ok((Field::TransferOpen, Some(EntryKind::Transfer)));
        }
        ([Some(keys::TRANSFERS), Some(tid), Some(f)], Put(v)) if new => {
            match *f {
                "id" if text_of(v) == Some(*tid) => {}
                "from_org" if text_of(v).is_some() && text_of(v) == seen.home() => {}
                "from_org" => {
                    return Err(Refusal::Immutable(format!(
                        "a transfer must be opened from the current home {}",
                        seen.home().unwrap_or("(none)")
                    )));
                }
                "to_org" => text(f, v, |s| match OrgPath::parse(s) {
                    Ok(_) if Some(s) == seen.home() => Err(FieldError::new(
                        *f,
                        "a transfer's target must be another org",
                    )),
                    Ok(_) => Ok(()),
                    Err(e) => Err(FieldError::new(*f, e.to_string())),
                })?,
                "reason" => text(f, v, |s| validate::text(f, s, 500, false))?,
                "opened_by" => seen.stamp(f, v)?,
                "opened_at" => seen.own_time(f, v)?,
                other => return Err(Refusal::UnknownField(format!("transfer {other}"))),
            }
            Field::TransferOpen
        }
        ([Some(keys::TRANSFERS), Some(tid), Some(f)], Put(v)) => {
            let Some(decision) = Decision::of_key(f) else {
                return Err(Refusal::Immutable(format!(
                    "transfers/{tid}/{f} (transfer fields are written once)"
                )));
            };
            if overwrites {
                return Err(Refusal::TransferNotOpen(format!("{tid} (already decided)")));
            }
            if *f == decision.keys().0 {
                seen.stamp(f, v)?;
            } else {
                seen.own_time(f, v)?;
            }
            let transfer = seen
                .transfer(tid)
                .ok_or_else(|| Refusal::TransferNotOpen(format!("{tid} (no such transfer)")))?;
            Field::TransferDecision { decision, transfer }
        }
        // Conflict acknowledgements, contacts.
        ([Some(transfer::ACKS), Some(cid)], Make(ObjType::Map)) => {
            validate::text("conflict", cid, 120, false).map_err(invalid)?;
            return Ok((Field::ConflictAck, Some(EntryKind::Ack)));
        }
        ([Some(transfer::ACKS), Some(_), Some(f)], Put(v)) if new => {
            match *f {
                keys::BY => seen.stamp(f, v)?,
                "at" => text("at", v, |s| validate::text("at", s, 40, false))?,
                other => return Err(Refusal::UnknownField(format!("acknowledgement {other}"))),
            }
            Field::ConflictAck
        }
        ([Some(keys::CONTACTS), Some(keys::CONTACT_PERSON)], Put(v)) => {
            text("person", v, |s| validate::text("person", s, 100, false))?;
            Field::ContactPerson
        }
        ([Some(keys::CONTACTS), Some(org)], Put(v)) => {
            text("last_contact_at", v, |s| {
                validate::date("last_contact_at", s)
            })?;
            Field::ContactRecord {
                org: (*org).to_owned(),
            }
        }
        _ if !new && path.len() > 2 => {
            return Err(Refusal::Immutable(format!(
                "{} (entries are written once)",
                describe(path)
            )));
        }
        _ => return Err(Refusal::UnknownField(describe(path))),
    };
    Ok((field, None))
}

/// Classifies and checks one op of an org roster, status report or the revocation list
/// (flat documents: scalar values under root keys).
fn flat_field(
    seen: &Seen<'_>,
    path: &[Seg],
    act: Act<'_>,
    overwrites: bool,
) -> Result<Field, Refusal> {
    let key = match path {
        [Seg::Key(k)] => k.as_str(),
        _ => return Err(Refusal::UnknownField(describe(path))),
    };
    let kind = seen.id.kind();
    let value = match act {
        Act::Put(v) => Some(v),
        Act::Delete if kind == DocKind::OrgRoster && key.starts_with(roster::GRID_PREFIX) => None,
        Act::Delete => return Err(Refusal::Immutable(format!("{key} cannot be deleted"))),
        Act::Make(_) => return Err(Refusal::UnknownField(format!("{key} (an object)"))),
    };
    let expect = |want: Option<String>, v: Option<&ScalarValue>| match (want, v.and_then(text_of)) {
        (Some(w), Some(got)) if w == got => Ok(()),
        (w, _) => Err(Refusal::Immutable(format!(
            "{key} must be {:?}",
            w.unwrap_or_default()
        ))),
    };
    let bounded = |max: usize| {
        let s = value
            .and_then(text_of)
            .ok_or_else(|| Refusal::InvalidValue {
                field: key.to_owned(),
                message: "must be text".into(),
            })?;
        validate::text(key, s, max, true).map_err(invalid)
    };
    match kind {
        DocKind::OrgRoster => {
            match key {
                "kind" => expect(Some(roster::KIND_ORG.into()), value)?,
                "org" => expect(seen.id.roster_org().map(|o| o.to_string()), value)?,
                k if k
                    .strip_prefix(roster::PROFILE_PREFIX)
                    .is_some_and(|f| roster::PROFILE_FIELDS.contains(&f)) =>
                {
                    bounded(200)?
                }
                k if k.starts_with(roster::GRID_PREFIX) && value.is_none() => {}
                k if k.starts_with(roster::GRID_PREFIX) => bounded(100)?,
                k if k.starts_with(roster::HISTORY_PREFIX) => {
                    let line = value.and_then(text_of).unwrap_or_default();
                    if line.len() > 4096
                        || serde_json::from_str::<roster::HistoryLine>(line).is_err()
                    {
                        return Err(Refusal::InvalidValue {
                            field: key.to_owned(),
                            message: "not a roster history line".into(),
                        });
                    }
                }
                other => return Err(Refusal::UnknownField(other.to_owned())),
            }
            Ok(Field::Roster)
        }
        DocKind::Status => {
            match key {
                "kind" => expect(Some("status".into()), value)?,
                "org" => expect(seen.id.status_of().map(|(o, _)| o.to_string()), value)?,
                "summary" => bounded(256 * 1024)?,
                other => return Err(Refusal::UnknownField(other.to_owned())),
            }
            Ok(Field::StatusReport)
        }
        DocKind::Revocations => {
            if !key.starts_with(crate::attest::REVOCATION_PREFIX) {
                return Err(Refusal::UnknownField(key.to_owned()));
            }
            if overwrites {
                return Err(Refusal::Immutable(
                    "a revocation cannot be withdrawn or altered".into(),
                ));
            }
            let record = value.and_then(text_of).unwrap_or_default();
            seen.auth.check_revocation(key, record)?;
            Ok(Field::Revocation)
        }
        DocKind::Member => Err(Refusal::UnknownField(describe(path))),
    }
}

/// The facts a change is judged against: as its author saw the document (at its
/// dependencies), or, for the change that creates a case file, as it creates it.
fn seen<'a>(
    doc: &'a AutoCommit,
    pending: &Pending,
    id: &'a DocId,
    change: &Change,
    ops: &[automerge::legacy::Op],
    auth: &'a dyn Authenticator,
    known: Option<FactsAt>,
) -> Result<Seen<'a>, Stop> {
    let author = author_of(change).ok_or(Refusal::UnknownAuthor)?;
    let deps = change.deps().to_vec();
    let creating = id.kind() == DocKind::Member && deps.is_empty();
    let mut seen = Seen {
        doc,
        id,
        deps,
        author,
        at: rfc3339(change.timestamp()),
        creating,
        facts: Facts::default(),
        transfers: Vec::new(),
        open: None,
        auth,
        pending: !pending.is_empty(),
        needs_document: Cell::new(false),
    };
    match id.kind() {
        DocKind::Member if creating => {
            if DocId::member_created_by(&change.hash()) != *id {
                return Err(Stop::Refuse(bad(
                    "this change did not create this case file (its hash is not the case file's id)",
                )));
            }
            let home = ops
                .iter()
                .find(|op| op.obj == ObjectId::Root && op.key == Key::Map(keys::HOME_ORG.into()))
                .and_then(|op| match &op.action {
                    OpType::Put(v) => text_of(v).and_then(|s| OrgPath::parse(s).ok()),
                    _ => None,
                })
                .ok_or_else(|| Stop::Refuse(bad("a new case file must name its home org")))?;
            seen.facts = Facts {
                scope: vec![home.clone()],
                home_org: Some(home),
                ..Facts::default()
            };
        }
        DocKind::Member if let Some(known) = known => {
            seen.facts = known.facts;
            seen.transfers = known.transfers;
            seen.open = known.open;
        }
        DocKind::Member => {
            let reader = seen.reader().ok_or(Stop::ApplyPending)?;
            let (entries, affiliation) = transfer::resolve_doc(&reader);
            let facts = MemberFacts::from_affiliation(&entries, &affiliation);
            if facts.home_org.is_none() {
                return Err(Stop::Refuse(bad(
                    "the case file does not exist at the change's dependencies",
                )));
            }
            seen.open = affiliation.open_transfer(&entries).map(|e| e.id.clone());
            seen.facts = Facts {
                scope: facts.scope(),
                home_org: facts.home_org,
                residence_org: facts.residence_org,
                roster_org: None,
            };
            seen.transfers = entries;
        }
        DocKind::OrgRoster => seen.facts.roster_org = id.roster_org(),
        DocKind::Status => seen.facts.roster_org = id.status_of().map(|(o, _)| o),
        DocKind::Revocations => {}
    }
    Ok(seen)
}

/// The object an op writes into (borrowed when this change made it).
fn object<'a>(
    doc: &AutoCommit,
    obj: &ObjectId,
    made: &'a HashMap<OpKey, Obj>,
    pending: &'a Pending,
    view: &View<'_>,
) -> Result<Cow<'a, Obj>, Refusal> {
    let id = match obj {
        ObjectId::Root => {
            return Ok(Cow::Owned(Obj {
                path: Vec::new(),
                kind: ObjType::Map,
                new: false,
                exid: Some(ROOT),
            }));
        }
        ObjectId::Id(id) => id,
    };
    if let Some(o) = made.get(&op_key(id)) {
        return Ok(Cow::Borrowed(o));
    }
    if !view.covers(id.counter(), id.actor()) {
        return Err(Refusal::OutsideHistory(format!(
            "object {}@{} was not made in the change's history",
            id.counter(),
            id.actor()
        )));
    }
    if let Some(o) = pending.object(&op_key(id)) {
        return Ok(Cow::Borrowed(o));
    }
    let exid = automerge::ObjId::Id(id.counter(), id.actor().clone(), usize::MAX);
    let kind = doc
        .object_type(&exid)
        .map_err(|_| bad("an op writes into something that is not an object"))?;
    let parents = doc
        .parents(&exid)
        .map_err(|e| bad(format!("an op's object has no place in the document: {e}")))?;
    let path = parents
        .path()
        .into_iter()
        .map(|(_, prop)| match prop {
            automerge::Prop::Map(k) => Seg::Key(k),
            automerge::Prop::Seq(_) => Seg::Item,
        })
        .collect();
    Ok(Cow::Owned(Obj {
        path,
        kind,
        new: false,
        exid: Some(exid),
    }))
}

/// Judges one change (authenticated, structurally checked, not yet applied) against `doc`;
/// `view` is what its dependencies could see. `Ok` means every op may be applied.
pub fn judge(
    doc: &AutoCommit,
    id: &DocId,
    change: &Change,
    view: &View<'_>,
    auth: &dyn Authenticator,
) -> Result<(), Refusal> {
    let ops = decode_ops(change)?;
    let change = ChangeOps { change, ops: &ops };
    match judge_carrying(doc, &Pending::default(), id, change, view, auth, None) {
        Ok(_) => Ok(()),
        Err(Stop::Refuse(r)) => Err(r),
        Err(Stop::ApplyPending) => unreachable!("nothing is pending"),
    }
}

/// A change and its ops as [`Change::decode`] gives them: what the judge reads.
#[derive(Clone, Copy)]
pub struct ChangeOps<'a> {
    /// The change.
    pub change: &'a Change,
    /// Its ops ([`decode_ops`], or kept by [`crate::syncmsg::decode_change_with_ops`]).
    pub ops: &'a [automerge::legacy::Op],
}

/// The ops of `change`, decoded (contained: a failure is the engine's), for
/// [`judge_carrying`] when the caller does not hold them from
/// [`crate::syncmsg::decode_change_with_ops`].
pub fn decode_ops(change: &Change) -> Result<Vec<automerge::legacy::Op>, Refusal> {
    contain("decoding a change's ops", || change.decode().operations)
        .map_err(|f| Refusal::EngineFault(f.to_string()))
}

/// [`judge`], given the change's ops decoded, and the case file's facts at the change's
/// dependencies if they are known (`known`: the caller's duty that they are exactly those),
/// and the changes judged before
/// it and not yet applied to `doc` (`pending`: the caller's duty that, if any, the change
/// saw exactly them and the document, [`Pending::seen_whole_by`]). `Ok` carries the facts
/// after the change when it left them as they were, for a next change that sees exactly it
/// and its history, and what the change wrote.
pub fn judge_carrying(
    doc: &AutoCommit,
    pending: &Pending,
    id: &DocId,
    ChangeOps { change, ops }: ChangeOps<'_>,
    view: &View<'_>,
    auth: &dyn Authenticator,
    known: Option<FactsAt>,
) -> Result<Judged, Stop> {
    if change.len() > MAX_OPS {
        return Err(Stop::Refuse(bad(format!(
            "{} ops in one change (at most {MAX_OPS})",
            change.len()
        ))));
    }
    if change.is_empty() {
        return Err(Stop::Refuse(bad("a change with no ops")));
    }
    let seen = seen(doc, pending, id, change, ops, auth, known)?;
    let judged = judge_ops(&seen, pending, change, ops, view);
    if seen.needs_document.get() {
        // What it was judged on without the document does not count.
        return Err(Stop::ApplyPending);
    }
    let (carried, writes) = judged?;
    Ok(Judged {
        facts: carried.then_some(FactsAt {
            facts: seen.facts,
            transfers: seen.transfers,
            open: seen.open,
        }),
        writes,
    })
}

/// Judges every op of `change` as [`seen`] by its author: the body of [`judge_carrying`].
/// `Ok` says whether the change left the case file's facts as they were, and what it wrote.
fn judge_ops(
    seen: &Seen<'_>,
    pending: &Pending,
    change: &Change,
    ops: &[automerge::legacy::Op],
    view: &View<'_>,
) -> Result<(bool, Writes), Refusal> {
    let (doc, id) = (seen.doc, seen.id);
    // Where the document is read: at the change's dependencies, or, with changes pending
    // (which the change saw, and the document does not hold), as it is.
    let read_at: &[automerge::ChangeHash] = if seen.pending {
        pending.base()
    } else {
        &seen.deps
    };
    let mut keeps_facts = true;
    let actor: &ActorId = change.actor_id();
    let start = change.start_op().get();
    let mut made: HashMap<OpKey, Obj> = HashMap::new();
    let mut inserted: HashMap<OpKey, OpKey> = HashMap::new(); // element → its list
    let mut visible: HashMap<(OpKey, String), Vec<OpKey>> = HashMap::new();
    let mut entries: HashMap<OpKey, (EntryKind, HashSet<String>)> = HashMap::new();
    let mut decisions: HashMap<OpKey, (Decision, HashSet<String>)> = HashMap::new();
    let mut fields = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let own: OpKey = (start + i as u64, actor.clone());
        let obj_key: OpKey = match &op.obj {
            ObjectId::Root => (0, ActorId::from(&[][..])),
            ObjectId::Id(o) => op_key(o),
        };
        let obj = object(doc, &op.obj, &made, pending, view)?;
        for p in op.pred.iter() {
            let in_change = p.actor() == actor && p.counter() >= start && p.counter() < own.0;
            if !in_change && !view.covers(p.counter(), p.actor()) {
                return Err(Refusal::OutsideHistory(format!(
                    "predecessor {}@{} was not made in the change's history",
                    p.counter(),
                    p.actor()
                )));
            }
        }
        let mut preds: Vec<OpKey> = op.pred.iter().map(op_key).collect();
        let (seg, overwrites) = match &op.key {
            Key::Map(k) => {
                if obj.kind != ObjType::Map || op.insert {
                    return Err(bad("a map key on something that is not a map"));
                }
                if k.len() > MAX_KEY {
                    return Err(bad(format!("a key of {} bytes", k.len())));
                }
                let slot = (obj_key.clone(), k.to_string());
                let written = visible.get(&slot).or_else(|| pending.slot(&slot));
                let mut expected: Vec<OpKey> = match (written, &obj.exid) {
                    (Some(v), _) => v.clone(),
                    (None, Some(exid)) => doc
                        .get_all_at(exid, k.as_str(), read_at)
                        .map_err(|e| bad(format!("cannot read {k}: {e}")))?
                        .into_iter()
                        .filter_map(|(_, id)| match id {
                            automerge::ObjId::Id(c, a, _) => Some((c, a)),
                            automerge::ObjId::Root => None,
                        })
                        .collect(),
                    (None, None) => Vec::new(),
                };
                expected.sort();
                preds.sort();
                if expected != preds {
                    return Err(bad(format!(
                        "the op on {k:?} overwrites other values than its author could see"
                    )));
                }
                let after = match op.action {
                    OpType::Delete => Vec::new(),
                    _ => vec![own.clone()],
                };
                visible.insert(slot, after);
                (Seg::Key(k.to_string()), !expected.is_empty())
            }
            Key::Seq(elem) => {
                if obj.kind != ObjType::List {
                    return Err(bad("a list position on something that is not a list"));
                }
                if !op.insert || !preds.is_empty() {
                    return Err(Refusal::Immutable(format!(
                        "{} (list items are never changed or removed)",
                        describe(&obj.path)
                    )));
                }
                if let ElementId::Id(e) = elem {
                    let ek = op_key(e);
                    let known = match inserted.get(&ek).or_else(|| pending.list_of(&ek)) {
                        Some(list) => *list == obj_key,
                        // A list a pending change made holds only what pending changes
                        // inserted.
                        None if !obj.new && obj.exid.is_none() => false,
                        None => {
                            let exid = obj
                                .exid
                                .as_ref()
                                .ok_or_else(|| bad("an insert after an unknown element"))?;
                            view.covers(e.counter(), e.actor())
                                && doc.list_range_at(exid, .., read_at).any(|item| {
                                    matches!(item.id(), automerge::ObjId::Id(c, a, _) if c == e.counter() && &a == e.actor())
                                })
                        }
                    };
                    if !known {
                        return Err(Refusal::OutsideHistory(
                            "an insert after an element its author could not see".into(),
                        ));
                    }
                }
                inserted.insert(own.clone(), obj_key.clone());
                (Seg::Item, false)
            }
        };
        let act = match &op.action {
            OpType::Make(t) => Act::Make(*t),
            OpType::Put(v) => Act::Put(v),
            OpType::Delete => Act::Delete,
            OpType::Increment(_) | OpType::MarkBegin(_) | OpType::MarkEnd(_) => {
                return Err(Refusal::UnknownField(format!(
                    "{} (counters and marks are not used)",
                    describe(&obj.path)
                )));
            }
        };
        let made_here = obj.new;
        let mut path = obj.into_owned().path;
        path.push(seg.clone());
        keeps_facts &= !shapes_facts(&path);
        let (field, entry) = match id.kind() {
            DocKind::Member => member_field(seen, &path, act, made_here, overwrites)?,
            _ => (flat_field(seen, &path, act, overwrites)?, None),
        };
        if let Act::Make(kind) = act {
            if !matches!(kind, ObjType::Map | ObjType::List) {
                return Err(bad("text and table objects are not used"));
            }
            made.insert(
                own.clone(),
                Obj {
                    path,
                    kind,
                    new: true,
                    exid: None,
                },
            );
            if let Some(kind) = entry {
                entries.insert(own.clone(), (kind, HashSet::new()));
            }
        }
        if let Seg::Key(k) = &seg {
            if let Some((_, written)) = entries.get_mut(&obj_key) {
                written.insert(k.clone());
            } else if let Field::TransferDecision { decision, .. } = &field {
                decisions
                    .entry(obj_key.clone())
                    .or_insert_with(|| (*decision, HashSet::new()))
                    .1
                    .insert(k.clone());
            }
        }
        fields.push(field);
    }
    // Entries are written whole, and a decision with both its stamps.
    for (kind, written) in entries.values() {
        if let Some(missing) = kind.required().iter().find(|k| !written.contains(**k)) {
            return Err(bad(format!("a new entry without {missing}")));
        }
    }
    for (decision, written) in decisions.values() {
        let (by, at) = decision.keys();
        if written.len() != 2 || !written.contains(by) || !written.contains(at) {
            return Err(bad(format!(
                "a transfer {} needs both {by} and {at}, and nothing else",
                decision.name()
            )));
        }
    }
    if seen.creating {
        let root: HashSet<&str> = ops
            .iter()
            .filter(|op| op.obj == ObjectId::Root)
            .filter_map(|op| match &op.key {
                Key::Map(k) => Some(k.as_str()),
                Key::Seq(_) => None,
            })
            .collect();
        let mut required = vec![keys::KIND, keys::HOME_ORG];
        required.extend_from_slice(CONTAINERS);
        if let Some(missing) = required.iter().find(|k| !root.contains(**k)) {
            return Err(bad(format!("a new case file without {missing}")));
        }
    }
    for field in &fields {
        authorise(&seen.author, field, &seen.facts)?;
    }
    let carried = keeps_facts && id.kind() == DocKind::Member && !seen.creating;
    let writes = Writes {
        made,
        inserted,
        slots: visible,
    };
    Ok((carried, writes))
}
