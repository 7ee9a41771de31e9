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
use amphi_protocol::reader::Reader;
use amphi_protocol::stamp::Stamp;
use amphi_protocol::transfer::{self, Decision};
use amphi_protocol::validate::{self, FieldError};
use amphi_protocol::visibility::{may_hold, scope};
use amphi_protocol::{DocId, DocKind, OrgPath, roster};
use serde::Serialize;

use crate::repo::{Repo, WriteError};
use crate::store::StoreError;
use amphi_protocol::office::StorageError;

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
        OpError::Write(e.into())
    }
}

impl From<StorageError> for OpError {
    fn from(e: StorageError) -> Self {
        OpError::Write(e.into())
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

/// Reads a case file held by this node for its own use: not one kept only until an office
/// below learns it left, nor one outside this office's scope (404, as the lists hide them).
pub fn get(repo: &Repo, id: &str) -> Result<CaseFile, OpError> {
    let id = member_id(id)?;
    let not_found = || OpError::Write(WriteError::NotFound(id.clone()));
    let doc = repo.load_held(&id)?.ok_or_else(not_found)?;
    if !may_hold(&id, &scope(&id, &doc), repo.me()) {
        return Err(not_found());
    }
    CaseFile::read(&id, &doc).ok_or_else(not_found)
}

fn update(
    repo: &Repo,
    id: &str,
    edit: impl FnOnce(&mut automerge::AutoCommit, &Stamp) -> Result<(), WriteError>,
) -> Result<CaseFile, OpError> {
    let doc_id = member_id(id)?;
    repo.write(&doc_id, false, edit)?;
    get(repo, id)
}

/// Creates a member's case file at this office (`POST /api/v1/members`).
pub fn create(repo: &Repo, member: &NewMember) -> Result<CaseFile, OpError> {
    member.validate()?;
    let id = repo.create_member(member)?;
    get(repo, id.as_str())
}

/// Changes identity fields (`PATCH /api/v1/members/{id}`).
pub fn patch(repo: &Repo, id: &str, patch: &IdentityPatch) -> Result<CaseFile, OpError> {
    patch.validate()?;
    if patch.is_empty() {
        return Err(FieldError::new("body", "no field to change").into());
    }
    update(repo, id, |doc, _| {
        Ok(casefile::update_identity(doc, patch)?)
    })
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
    assign_residence(repo, id, Some(residence))
}

/// Ends the two-dwelling assignment (`DELETE …/residence`).
pub fn end_residence(repo: &Repo, id: &str) -> Result<CaseFile, OpError> {
    if get(repo, id)?.residence.is_none() {
        return Err(WriteError::Conflict("the member has no residence assignment".into()).into());
    }
    assign_residence(repo, id, None)
}

/// Writes a residence assignment event (issued or changed with `Some`, ended with `None`),
/// stamped with this office.
fn assign_residence(
    repo: &Repo,
    id: &str,
    residence: Option<&ResidenceInput>,
) -> Result<CaseFile, OpError> {
    let assignment = casefile::assignment_id(&member_id(id)?, rand::random());
    let me = repo.me().clone();
    update(repo, id, |doc, stamp| {
        Ok(casefile::assign_residence(
            doc,
            &assignment,
            residence,
            &me,
            stamp,
        )?)
    })
}

/// Records the member's report-in (报到) at the residence org (`POST …/report-in`).
pub fn report_in(repo: &Repo, id: &str, date: Option<&str>) -> Result<CaseFile, OpError> {
    let date = date.map_or_else(today, str::to_owned);
    validate::date("date", &date)?;
    let residence = get(repo, id)?.residence.ok_or_else(|| {
        WriteError::Conflict("the member has no residence assignment to report in at".into())
    })?;
    let org = OrgPath::parse(&residence.org)
        .map_err(|e| FieldError::new("residence.org", e.to_string()))?;
    update(repo, id, |doc, _| {
        Ok(casefile::report_in(doc, &org, &date)?)
    })
}

/// Records an activity, stamped with this office (`POST …/activities`).
pub fn add_activity(repo: &Repo, id: &str, activity: &ActivityInput) -> Result<CaseFile, OpError> {
    activity.validate()?;
    let me = repo.me().clone();
    update(repo, id, |doc, _| {
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
    update(repo, id, |doc, _| {
        casefile::comment_activity(doc, activity_id, &me, &at, text)?.ok_or_else(|| {
            WriteError::Conflict(format!("no activity {activity_id:?} in this case file"))
        })
    })
}

/// Writes the half-year review (`POST …/reviews`).
pub fn add_review(repo: &Repo, id: &str, review: &ReviewInput) -> Result<CaseFile, OpError> {
    review.validate()?;
    let me = repo.me().clone();
    update(repo, id, |doc, _| {
        Ok(casefile::add_review(doc, review, &me)?)
    })
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
    let under = |o: &Option<OrgPath>| match (org, o) {
        (None, _) => true,
        (Some(org), Some(o)) => org.is_at_or_above(o),
        (Some(_), None) => false,
    };
    Ok(repo
        .store()
        .summaries()?
        .into_iter()
        .filter(|(_, s)| s.kind == DocKind::Member && !s.leaving)
        .filter(|(_, s)| !two_dwelling_only || s.residence_org.is_some())
        .filter(|(_, s)| under(&s.home_org) || under(&s.residence_org))
        .map(|(id, s)| MemberLine {
            id: id.to_string(),
            name: s.name,
            home_org: s.home_org.map(|o| o.to_string()).unwrap_or_default(),
            residence_org: s.residence_org.map(|o| o.to_string()),
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
        if s.kind != DocKind::Member || s.leaving {
            continue;
        }
        if s.home_org.as_ref() == Some(org) {
            members.push(RosterLine {
                id: id.to_string(),
                name: s.name,
                relation: "home",
            });
        } else if s.residence_org.as_ref() == Some(org) {
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

/// Body of `POST /api/v1/transfers`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferInput {
    /// The member's case file id.
    pub member_id: String,
    /// The receiving org.
    pub to_org: OrgPath,
    /// Why (e.g. moved to the town for good).
    pub reason: String,
}

/// A transfer as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    /// `t-…`.
    pub id: String,
    /// The member.
    pub member_id: String,
    /// The member's name.
    pub name: String,
    /// From.
    pub from_org: String,
    /// To.
    pub to_org: String,
    /// Resolved state.
    pub state: String,
}

/// The member a transfer or residence assignment id belongs to: `t-<member hex>-<random>`
/// or `r-<member hex>-<random>`.
fn member_of_transfer(transfer_id: &str) -> Result<DocId, OpError> {
    transfer_id
        .strip_prefix("t-")
        .or_else(|| transfer_id.strip_prefix("r-"))
        .and_then(|rest| rest.split('-').next())
        .and_then(|hex| DocId::parse(&format!("m-{hex}")).ok())
        .ok_or_else(|| FieldError::new("id", "a transfer id is t-<member>-<suffix>").into())
}

fn transfer_view(case: &CaseFile, transfer_id: &str) -> Option<TransferView> {
    case.transfers
        .iter()
        .find(|t| t.id == transfer_id)
        .map(|t| TransferView {
            id: t.id.clone(),
            member_id: case.id.clone(),
            name: case.name.clone(),
            from_org: t.from_org.clone(),
            to_org: t.to_org.clone(),
            state: t.state.clone(),
        })
}

/// Opens a transfer of a member to `to_org` (`POST /api/v1/transfers`): 409 while another
/// is open; 403 unless this office is the home org or an ancestor.
pub fn open_transfer(repo: &Repo, input: &TransferInput) -> Result<TransferView, OpError> {
    validate::text("reason", &input.reason, 500, false)?;
    let case = get(repo, &input.member_id)?;
    if case.home_org == input.to_org.as_str() {
        return Err(FieldError::new("to_org", "the member's home is already this org").into());
    }
    if let Some(open) = case.transfers.iter().find(|t| t.state == "open") {
        return Err(WriteError::Conflict(format!(
            "transfer {} to {} is already open; settle it first",
            open.id, open.to_org
        ))
        .into());
    }
    let member = member_id(&input.member_id)?;
    let transfer_id = format!(
        "t-{}-{}",
        &member.as_str()[2..],
        hex::encode(rand::random::<[u8; 4]>())
    );
    let home =
        OrgPath::parse(&case.home_org).map_err(|e| FieldError::new("home_org", e.to_string()))?;
    let me = repo.me().clone();
    repo.write(&member, false, |doc, stamp| {
        Ok(transfer::open(
            doc,
            &transfer_id,
            (&home, &input.to_org),
            &input.reason,
            &me,
            stamp,
        )?)
    })?;
    let case = get(repo, &input.member_id)?;
    Ok(transfer_view(&case, &transfer_id).expect("the transfer just opened"))
}

/// Accepts, rejects or cancels a transfer: 409 unless it is open; 403 unless this office is
/// the party for that step (target or home, or an ancestor).
pub fn decide_transfer(
    repo: &Repo,
    transfer_id: &str,
    decision: Decision,
) -> Result<TransferView, OpError> {
    let member = member_of_transfer(transfer_id)?;
    let case = get(repo, member.as_str())?;
    let current =
        transfer_view(&case, transfer_id).ok_or_else(|| WriteError::NotFound(member.clone()))?;
    if current.state != "open" {
        return Err(WriteError::Conflict(format!(
            "transfer {transfer_id} is {}, not open",
            current.state
        ))
        .into());
    }
    let me = repo.me().clone();
    repo.write(&member, false, |doc, stamp| {
        transfer::decide(doc, transfer_id, decision, &me, stamp)?
            .ok_or_else(|| WriteError::NotFound(member.clone()))
    })?;
    // After an accept at the target, or a reject, this office may no longer hold the file.
    let after = repo
        .load(&member)?
        .and_then(|d| CaseFile::read(&member, &d))
        .unwrap_or(case);
    Ok(transfer_view(&after, transfer_id).unwrap_or(current))
}

/// Transfers whose from or to org is `org` or below (all, without `org`).
pub fn list_transfers(repo: &Repo, org: Option<&OrgPath>) -> Result<Vec<TransferView>, OpError> {
    let under = |o: &OrgPath| org.is_none_or(|org| org.is_at_or_above(o));
    let mut out = Vec::new();
    for (id, s) in repo.store().summaries()? {
        if s.leaving {
            continue;
        }
        for t in s
            .transfers
            .iter()
            .filter(|t| under(&t.from_org) || under(&t.to_org))
        {
            out.push(TransferView {
                id: t.id.clone(),
                member_id: id.to_string(),
                name: s.name.clone(),
                from_org: t.from_org.to_string(),
                to_org: t.to_org.to_string(),
                state: t.state.clone(),
            });
        }
    }
    Ok(out)
}

/// A conflict as listed: what merging could not settle by itself, and the rule that did.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictView {
    /// The member.
    pub member_id: String,
    /// The member's name.
    pub name: String,
    /// The conflict.
    #[serde(flatten)]
    pub conflict: amphi_protocol::affiliation::Conflict,
}

/// Unacknowledged conflicts in the case files this office holds.
pub fn conflicts(repo: &Repo) -> Result<Vec<ConflictView>, OpError> {
    let mut out = Vec::new();
    for (id, s) in repo.store().summaries()? {
        if s.conflicts.is_empty() || s.leaving {
            continue;
        }
        let Some(doc) = repo.load(&id)? else { continue };
        let (_, resolution) = transfer::resolve_doc(&Reader::now(&doc));
        for c in resolution
            .conflicts
            .into_iter()
            .filter(|c| s.conflicts.contains(&c.id))
        {
            out.push(ConflictView {
                member_id: id.to_string(),
                name: s.name.clone(),
                conflict: c,
            });
        }
    }
    Ok(out)
}

/// Acknowledges a conflict (`POST /api/v1/conflicts/{id}/ack`); it then leaves every
/// office's list as the acknowledgement replicates.
pub fn acknowledge(repo: &Repo, conflict_id: &str) -> Result<(), OpError> {
    let transfer_id = conflict_id.split(':').next().unwrap_or_default();
    let member = member_of_transfer(transfer_id)?;
    let known = repo
        .store()
        .summary(&member)?
        .is_some_and(|s| s.conflicts.iter().any(|c| c == conflict_id));
    if !known {
        return Err(WriteError::NotFound(member).into());
    }
    let me = repo.me().clone();
    repo.write(&member, false, |doc, stamp| {
        Ok(transfer::acknowledge(doc, conflict_id, &me, stamp)?)
    })?;
    Ok(())
}

/// Body of `PUT /api/v1/members/{id}/contact`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Names the contact person (联系责任人); home org and ancestors.
    pub person: Option<String>,
    /// Records this office's contact with the member on this date (default today).
    pub last_contact_at: Option<String>,
}

/// Names the contact person and/or records this office's latest contact.
pub fn contact(repo: &Repo, id: &str, input: &ContactInput) -> Result<CaseFile, OpError> {
    if let Some(p) = &input.person {
        validate::text("person", p, NAME_MAX_PROFILE, false)?;
    }
    let date = input.last_contact_at.clone().unwrap_or_else(today);
    validate::date("last_contact_at", &date)?;
    let me = repo.me().clone();
    update(repo, id, |doc, _| {
        if let Some(p) = &input.person {
            casefile::set_contact_person(doc, p)?;
        }
        if input.last_contact_at.is_some() || input.person.is_none() {
            casefile::record_contact(doc, &me, &date)?;
        }
        Ok(())
    })
}

/// Members (home or resident at `org` or below) nobody has recorded an activity, report-in
/// or contact for in `days` days: the "organisation can't find the member" list.
pub fn without_contact(
    repo: &Repo,
    org: Option<&OrgPath>,
    days: u32,
) -> Result<Vec<MemberLine>, OpError> {
    let cutoff = (time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days))).date();
    let cutoff = format!(
        "{:04}-{:02}-{:02}",
        cutoff.year(),
        u8::from(cutoff.month()),
        cutoff.day()
    );
    let quiet: std::collections::BTreeSet<String> = repo
        .store()
        .summaries()?
        .into_iter()
        .filter(|(_, s)| {
            s.kind == DocKind::Member && s.last_seen.as_ref().is_none_or(|d| *d < cutoff)
        })
        .map(|(id, _)| id.to_string())
        .collect();
    Ok(list(repo, org, false)?
        .into_iter()
        .filter(|m| quiet.contains(&m.id))
        .collect())
}

const NAME_MAX_PROFILE: usize = 100;

/// Body of `PATCH /api/v1/orgs/{org}`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// Name.
    pub name: Option<String>,
    /// county, township, village, pastoral-team, community, joint, organ-branch.
    pub kind: Option<String>,
    /// Party secretary (书记).
    pub secretary: Option<String>,
    /// Liaison (联络员).
    pub liaison: Option<String>,
    /// Grids (网格) and their responsible person (第一责任人); an empty person removes a grid.
    pub grids: Option<BTreeMap<String, String>>,
}

/// Org kinds.
pub const ORG_KINDS: &[&str] = &[
    "county",
    "township",
    "village",
    "pastoral-team",
    "community",
    "joint",
    "organ-branch",
];

/// The org profile as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    /// The org.
    pub org: String,
    /// Profile fields.
    pub profile: BTreeMap<String, String>,
    /// Grids and their responsible person.
    pub grids: BTreeMap<String, String>,
}

/// `GET /api/v1/orgs/{org}`: the org's profile, if this office holds its roster document.
pub fn profile(repo: &Repo, org: &OrgPath) -> Result<ProfileView, OpError> {
    let id = DocId::roster(org);
    let doc = repo.load(&id)?.ok_or(WriteError::NotFound(id))?;
    let r = roster::read(&doc);
    Ok(ProfileView {
        org: org.to_string(),
        profile: r.profile,
        grids: r.grids,
    })
}

/// `PATCH /api/v1/orgs/{org}`: the org itself or an ancestor edits its profile.
pub fn patch_profile(
    repo: &Repo,
    org: &OrgPath,
    input: &ProfileInput,
) -> Result<ProfileView, OpError> {
    for (field, value) in [
        ("name", &input.name),
        ("secretary", &input.secretary),
        ("liaison", &input.liaison),
    ] {
        if let Some(v) = value {
            validate::text(field, v, NAME_MAX_PROFILE, true)?;
        }
    }
    if let Some(k) = &input.kind {
        validate::one_of("kind", k, ORG_KINDS)?;
    }
    if let Some(grids) = &input.grids {
        if grids.len() > 500 {
            return Err(FieldError::new("grids", "at most 500 grids").into());
        }
        for (name, person) in grids {
            validate::text("grids", name, 60, false)?;
            validate::text("grids", person, NAME_MAX_PROFILE, true)?;
        }
    }
    let edit = |doc: &mut automerge::AutoCommit, _: &Stamp| -> Result<(), WriteError> {
        roster::ensure(doc, org)?;
        for (field, value) in [
            ("name", &input.name),
            ("kind", &input.kind),
            ("secretary", &input.secretary),
            ("liaison", &input.liaison),
        ] {
            if let Some(v) = value {
                roster::set_profile(doc, field, v)?;
            }
        }
        for (grid, person) in input.grids.iter().flatten() {
            roster::set_grid(doc, grid, person)?;
        }
        Ok(())
    };
    let id = DocId::roster(org);
    let exists = repo.store().summary(&id)?.is_some();
    match repo.write(&id, !exists, edit) {
        // The org's roster arrived from a peer between the look and the write: edit it.
        Err(WriteError::Exists(_)) => repo.write(&id, false, edit)?,
        done => done?,
    }
    profile(repo, org)
}
