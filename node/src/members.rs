//! What an office does with case files: the operations behind the admin API and the demo.
//!
//! Each operation validates its input (naming the bad field), checks the document exists
//! on this node, and makes its write through [`Repo::write`], where the gate enforces the
//! authority table and the store makes it durable before anything is acknowledged.

use std::collections::BTreeMap;

use amphi_protocol::casefile::{
    self, ActivityInput, CaseFile, IdentityPatch, NewMember, ResidenceInput, ReviewInput,
};
use amphi_protocol::ids::entry_id;
use amphi_protocol::validate::{self, FieldError};
use amphi_protocol::{DocId, DocKind, OrgPath, roster};
use serde::Serialize;

use crate::repo::{Repo, WriteError};
use crate::store::StoreError;

/// Why an office operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A field of the input is invalid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The write was refused or failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Write(WriteError::Store(e))
    }
}

/// Today's date, YYYY-MM-DD (UTC).
pub fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn member_id(s: &str) -> Result<DocId, OpError> {
    match DocId::parse(s) {
        Ok(id) if id.kind() == DocKind::Member => Ok(id),
        _ => Err(FieldError::new(
            "id",
            "a member id is m- followed by 16 lowercase hex digits",
        )
        .into()),
    }
}

/// Reads a case file held by this node.
pub fn get(repo: &Repo, id: &str) -> Result<CaseFile, OpError> {
    let id = member_id(id)?;
    let doc = repo
        .load(&id)?
        .ok_or_else(|| WriteError::NotFound(id.clone()))?;
    CaseFile::read(&doc).ok_or(OpError::Write(WriteError::NotFound(id)))
}

fn update(
    repo: &Repo,
    id: &str,
    edit: impl FnOnce(&mut automerge::AutoCommit) -> Result<(), WriteError>,
) -> Result<CaseFile, OpError> {
    let doc_id = member_id(id)?;
    repo.write(&doc_id, false, edit)?;
    get(repo, id)
}

/// Creates a member's case file at this office (`POST /api/v1/members`).
pub fn create(repo: &Repo, member: &NewMember) -> Result<CaseFile, OpError> {
    member.validate()?;
    let id = DocId::new_member(rand::random());
    repo.write(&id, true, |doc| Ok(casefile::create(doc, &id, member)?))?;
    get(repo, id.as_str())
}

/// Changes identity fields (`PATCH /api/v1/members/{id}`).
pub fn patch(repo: &Repo, id: &str, patch: &IdentityPatch) -> Result<CaseFile, OpError> {
    patch.validate()?;
    if patch.is_empty() {
        return Err(FieldError::new("body", "no field to change").into());
    }
    update(repo, id, |doc| Ok(casefile::update_identity(doc, patch)?))
}

/// Issues or changes the two-dwelling assignment (`PUT …/residence`).
pub fn set_residence(
    repo: &Repo,
    id: &str,
    residence: &ResidenceInput,
) -> Result<CaseFile, OpError> {
    residence.validate()?;
    let current = get(repo, id)?;
    if current.home_org == residence.org.as_str() {
        return Err(
            FieldError::new("org", "the residence org must differ from the home org").into(),
        );
    }
    update(repo, id, |doc| Ok(casefile::set_residence(doc, residence)?))
}

/// Ends the two-dwelling assignment (`DELETE …/residence`).
pub fn end_residence(repo: &Repo, id: &str) -> Result<CaseFile, OpError> {
    if get(repo, id)?.residence.is_none() {
        return Err(WriteError::Conflict("the member has no residence assignment".into()).into());
    }
    update(repo, id, |doc| Ok(casefile::end_residence(doc)?))
}

/// Records the member's report-in (報到) at the residence org (`POST …/report-in`).
pub fn report_in(repo: &Repo, id: &str, date: Option<&str>) -> Result<CaseFile, OpError> {
    let date = date.map_or_else(today, str::to_owned);
    validate::date("date", &date)?;
    let residence = get(repo, id)?.residence.ok_or_else(|| {
        WriteError::Conflict("the member has no residence assignment to report in at".into())
    })?;
    let org = OrgPath::parse(&residence.org)
        .map_err(|e| FieldError::new("residence.org", e.to_string()))?;
    update(repo, id, |doc| Ok(casefile::report_in(doc, &org, &date)?))
}

/// Records an activity, stamped with this office (`POST …/activities`).
pub fn add_activity(repo: &Repo, id: &str, activity: &ActivityInput) -> Result<CaseFile, OpError> {
    activity.validate()?;
    let me = repo.me().clone();
    update(repo, id, |doc| {
        Ok(casefile::add_activity(
            doc,
            &entry_id('a', rand::random()),
            activity,
            &me,
        )?)
    })
}

/// Comments on an activity as the residence org (`POST …/activities/{aid}/comments`).
pub fn comment(repo: &Repo, id: &str, activity_id: &str, text: &str) -> Result<CaseFile, OpError> {
    validate::text("text", text, 2000, false)?;
    let me = repo.me().clone();
    let at = today();
    update(repo, id, |doc| {
        casefile::comment_activity(doc, activity_id, &me, &at, text)?.ok_or_else(|| {
            WriteError::Conflict(format!("no activity {activity_id:?} in this case file"))
        })
    })
}

/// Writes the half-year review (`POST …/reviews`).
pub fn add_review(repo: &Repo, id: &str, review: &ReviewInput) -> Result<CaseFile, OpError> {
    review.validate()?;
    let me = repo.me().clone();
    update(repo, id, |doc| Ok(casefile::add_review(doc, review, &me)?))
}

/// One line of a member list.
#[derive(Debug, Clone, Serialize)]
pub struct MemberLine {
    /// Case file id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Home org.
    pub home_org: String,
    /// Residence org if two-dwelling.
    pub residence_org: Option<String>,
}

/// Members whose home or residence is `org` or below (all held, without `org`).
pub fn list(
    repo: &Repo,
    org: Option<&OrgPath>,
    two_dwelling_only: bool,
) -> Result<Vec<MemberLine>, OpError> {
    let under = |o: &Option<String>| match (org, o) {
        (None, _) => true,
        (Some(org), Some(o)) => OrgPath::parse(o).is_ok_and(|o| org.is_at_or_above(&o)),
        (Some(_), None) => false,
    };
    Ok(repo
        .store()
        .summaries()?
        .into_iter()
        .filter(|(_, s)| s.kind == "member" && !s.leaving)
        .filter(|(_, s)| !two_dwelling_only || s.residence_org.is_some())
        .filter(|(_, s)| under(&s.home_org) || under(&s.residence_org))
        .map(|(id, s)| MemberLine {
            id: id.to_string(),
            name: s.name,
            home_org: s.home_org.unwrap_or_default(),
            residence_org: s.residence_org,
        })
        .collect())
}

/// A roster line: a member whose home or residence is the org.
#[derive(Debug, Clone, Serialize)]
pub struct RosterLine {
    /// Case file id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `home` or `resident`.
    pub relation: &'static str,
}

/// `GET /api/v1/orgs/{org}/roster`.
#[derive(Debug, Clone, Serialize)]
pub struct RosterView {
    /// The org.
    pub org: String,
    /// Its profile fields.
    pub profile: BTreeMap<String, String>,
    /// Members at home or resident here.
    pub members: Vec<RosterLine>,
    /// Members who left.
    pub history: Vec<roster::HistoryLine>,
}

/// The roster of `org` as this node sees it.
pub fn roster_of(repo: &Repo, org: &OrgPath) -> Result<RosterView, OpError> {
    let mut members = Vec::new();
    for (id, s) in repo.store().summaries()? {
        if s.kind != "member" || s.leaving {
            continue;
        }
        if s.home_org.as_deref() == Some(org.as_str()) {
            members.push(RosterLine {
                id: id.to_string(),
                name: s.name,
                relation: "home",
            });
        } else if s.residence_org.as_deref() == Some(org.as_str()) {
            members.push(RosterLine {
                id: id.to_string(),
                name: s.name,
                relation: "resident",
            });
        }
    }
    let doc = repo.load(&DocId::roster(org))?;
    let roster = doc.as_ref().map(roster::read).unwrap_or_default();
    Ok(RosterView {
        org: org.to_string(),
        profile: roster.profile,
        members,
        history: roster.history,
    })
}
