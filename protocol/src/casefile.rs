//! The member case file (党员档案) as an automerge document.
//!
//! Layout (root map):
//! ```text
//! kind = "member", home_org = "<org>"                        written once, by the creation change
//! identity   { name, gender, ethnicity, birth_date, joined_at, id_number, phone,
//!              education, categories: [..] }                  home org and ancestors
//! residence  { assignments { <r-id>: { org | null, since, until, by, at } }
//!                                                             home org and ancestors (两栖党员活动证)
//!              reports { <residence org>: date } }            residence org and ancestors (报到)
//! activities { <a-id>: { id, date, kind, description, points, recorded_by,
//!                        comments: [{ by, at, text }] } }     recorder / residence org (comments)
//! reviews    { <period>: { period, rating, comment, reviewed_by } }   home org and ancestors
//! transfers  { <t-id>: { id, from_org, to_org, reason, opened_by, opened_at, … } }
//! contacts   { person, <org>: date }, acks { <conflict id>: { by, at } }
//! ```
//! The creation change is the document's only root (it has no dependencies) and the case
//! file's id is derived from its hash ([`crate::ids::DocId::member_created_by`]), so no
//! office can create a rival case file under an existing id. Every container exists from
//! that first change, so two offices never race to create the same map, and each office
//! writes only under keys no other office writes: entries merge without loss. Stamps
//! (`recorded_by`, `reviewed_by`, `by`) must equal the author's org. Residence assignments
//! are events (one entry each, never edited): the assignment in force is derived with the
//! transfers by [`crate::affiliation::derive`].

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjId, ObjType, ROOT};
use serde::{Deserialize, Serialize};

use crate::affiliation::{Affiliation, Assignment, Order};
use crate::ids::DocId;
use crate::org::OrgPath;
use crate::reader::Reader;
use crate::stamp::Stamp;
use crate::validate::{self, FieldError};

/// Root keys of a case file.
pub mod keys {
    /// Document kind marker.
    pub const KIND: &str = "kind";
    /// 组织关系所在党组织: the one org the member belongs to.
    pub const HOME_ORG: &str = "home_org";
    /// Identity fields.
    pub const IDENTITY: &str = "identity";
    /// Two-dwelling residence assignment.
    pub const RESIDENCE: &str = "residence";
    /// Report-ins by residence org, under residence.
    pub const REPORTS: &str = "reports";
    /// Residence assignment events, under residence.
    pub const ASSIGNMENTS: &str = "assignments";
    /// Activity entries by id.
    pub const ACTIVITIES: &str = "activities";
    /// Half-yearly reviews by period.
    pub const REVIEWS: &str = "reviews";
    /// Transfers of affiliation by id.
    pub const TRANSFERS: &str = "transfers";
    /// Stamp on an activity.
    pub const RECORDED_BY: &str = "recorded_by";
    /// Stamp on a review.
    pub const REVIEWED_BY: &str = "reviewed_by";
    /// Stamp on a comment.
    pub const BY: &str = "by";
    /// Comments on an activity.
    pub const COMMENTS: &str = "comments";
    /// Last contact dates by recording org (联系), and the contact person.
    pub const CONTACTS: &str = "contacts";
    /// Key of the contact person (联系责任人) in the contacts map.
    pub const CONTACT_PERSON: &str = "person";
}
use keys::*;

/// The value of the `kind` key of a case file.
pub const KIND_MEMBER: &str = "member";

/// Body of `POST /api/v1/members`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Full name.
    pub name: String,
    /// `female` or `male`.
    pub gender: String,
    /// 民族, e.g. `Mongol`.
    pub ethnicity: String,
    /// YYYY-MM-DD.
    pub birth_date: String,
    /// 入党日期, YYYY-MM-DD.
    pub joined_at: String,
    /// 组织关系所在党组织.
    pub home_org: OrgPath,
    /// 身份证号 (sensitive).
    #[serde(default)]
    pub id_number: Option<String>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Education level, free text.
    #[serde(default)]
    pub education: Option<String>,
    /// Categories, from [`validate::CATEGORIES`].
    #[serde(default)]
    pub categories: Vec<String>,
}

/// Body of `PATCH /api/v1/members/{id}`: only the fields present are changed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPatch {
    /// Full name.
    pub name: Option<String>,
    /// `female` or `male`.
    pub gender: Option<String>,
    /// 民族.
    pub ethnicity: Option<String>,
    /// YYYY-MM-DD.
    pub birth_date: Option<String>,
    /// YYYY-MM-DD.
    pub joined_at: Option<String>,
    /// 身份证号.
    pub id_number: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Education.
    pub education: Option<String>,
    /// Replaces the categories.
    pub categories: Option<Vec<String>>,
}

/// Body of `PUT /api/v1/members/{id}/residence`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidenceInput {
    /// The residence community's org.
    pub org: OrgPath,
    /// Start of the assignment, YYYY-MM-DD.
    pub since: String,
    /// Planned end, YYYY-MM-DD.
    #[serde(default)]
    pub until: Option<String>,
}

/// Body of `POST /api/v1/members/{id}/activities`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityInput {
    /// YYYY-MM-DD.
    pub date: String,
    /// One of [`validate::ACTIVITY_KINDS`].
    pub kind: String,
    /// What was done.
    pub description: String,
    /// 积分, 0 to 100.
    #[serde(default)]
    pub points: Option<i64>,
}

/// Body of `POST /api/v1/members/{id}/reviews`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// Half-year, e.g. `2026H1`.
    pub period: String,
    /// One of [`validate::RATINGS`].
    pub rating: String,
    /// The reviewer's comment.
    #[serde(default)]
    pub comment: String,
}

const NAME_MAX: usize = 100;
const SHORT_MAX: usize = 40;
const DESCRIPTION_MAX: usize = 2000;

fn check_categories(field: &str, categories: &[String]) -> Result<(), FieldError> {
    if categories.len() > validate::CATEGORIES.len() {
        return Err(FieldError::new(field, "too many categories"));
    }
    categories
        .iter()
        .try_for_each(|c| validate::one_of(field, c, validate::CATEGORIES))
}

/// Checks one identity field as the API does (`field` is one of the identity keys).
pub fn check_identity_field(field: &str, value: &str) -> Result<(), FieldError> {
    let mut patch = IdentityPatch::default();
    let slot = match field {
        "name" => &mut patch.name,
        "gender" => &mut patch.gender,
        "ethnicity" => &mut patch.ethnicity,
        "birth_date" => &mut patch.birth_date,
        "joined_at" => &mut patch.joined_at,
        "id_number" => &mut patch.id_number,
        "phone" => &mut patch.phone,
        "education" => &mut patch.education,
        other => return Err(FieldError::new(other, "not an identity field")),
    };
    *slot = Some(value.to_owned());
    patch.validate()
}

/// Checks one field of an activity entry as the API does: `date`, `kind`, `description`
/// or `points`.
pub fn check_activity_field(field: &str, value: &automerge::ScalarValue) -> Result<(), FieldError> {
    use automerge::ScalarValue as V;
    let text = || match value {
        V::Str(s) => Ok(s.as_str()),
        _ => Err(FieldError::new(field, "must be text")),
    };
    match field {
        "date" => validate::date(field, text()?),
        "kind" => validate::one_of(field, text()?, validate::ACTIVITY_KINDS),
        "description" => validate::text(field, text()?, DESCRIPTION_MAX, false),
        "points" => match value {
            V::Int(p) if (0..=100).contains(p) => Ok(()),
            V::Uint(p) if *p <= 100 => Ok(()),
            _ => Err(FieldError::new(
                field,
                "must be a whole number between 0 and 100",
            )),
        },
        other => Err(FieldError::new(other, "not an activity field")),
    }
}

/// Checks an entry id: `prefix`, `-`, then 16 lowercase hex digits (as [`crate::ids::entry_id`]
/// makes them).
pub fn check_entry_id(prefix: char, id: &str) -> Result<(), FieldError> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "id",
            format!("{id:?} is not an entry id ({prefix}- and 16 hex digits)"),
        ))
    }
}

impl NewMember {
    /// Checks every field; the first bad one is named.
    pub fn validate(&self) -> Result<(), FieldError> {
        IdentityPatch {
            name: Some(self.name.clone()),
            gender: Some(self.gender.clone()),
            ethnicity: Some(self.ethnicity.clone()),
            birth_date: Some(self.birth_date.clone()),
            joined_at: Some(self.joined_at.clone()),
            id_number: self.id_number.clone(),
            phone: self.phone.clone(),
            education: self.education.clone(),
            categories: Some(self.categories.clone()),
        }
        .validate()
    }
}

impl IdentityPatch {
    /// Checks the fields present.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(v) = &self.name {
            validate::text("name", v, NAME_MAX, false)?;
        }
        if let Some(v) = &self.gender {
            validate::one_of("gender", v, validate::GENDERS)?;
        }
        if let Some(v) = &self.ethnicity {
            validate::text("ethnicity", v, SHORT_MAX, false)?;
        }
        if let Some(v) = &self.birth_date {
            validate::date("birth_date", v)?;
        }
        if let Some(v) = &self.joined_at {
            validate::date("joined_at", v)?;
        }
        if let Some(v) = &self.id_number {
            validate::id_number("id_number", v)?;
        }
        if let Some(v) = &self.phone {
            validate::phone("phone", v)?;
        }
        if let Some(v) = &self.education {
            validate::text("education", v, SHORT_MAX, true)?;
        }
        if let Some(v) = &self.categories {
            check_categories("categories", v)?;
        }
        Ok(())
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.gender.is_none()
            && self.ethnicity.is_none()
            && self.birth_date.is_none()
            && self.joined_at.is_none()
            && self.id_number.is_none()
            && self.phone.is_none()
            && self.education.is_none()
            && self.categories.is_none()
    }
}

impl ResidenceInput {
    /// Checks the dates and their order.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::date("since", &self.since)?;
        if let Some(until) = &self.until {
            validate::date("until", until)?;
            if until < &self.since {
                return Err(FieldError::new("until", "must not be before since"));
            }
        }
        Ok(())
    }
}

impl ActivityInput {
    /// Checks date, kind, description and points.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::date("date", &self.date)?;
        validate::one_of("kind", &self.kind, validate::ACTIVITY_KINDS)?;
        validate::text("description", &self.description, DESCRIPTION_MAX, false)?;
        if let Some(p) = self.points
            && !(0..=100).contains(&p)
        {
            return Err(FieldError::new("points", "must be between 0 and 100"));
        }
        Ok(())
    }
}

impl ReviewInput {
    /// Checks period, rating and comment.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::period("period", &self.period)?;
        validate::one_of("rating", &self.rating, validate::RATINGS)?;
        validate::text("comment", &self.comment, DESCRIPTION_MAX, true)
    }
}

/// Writes a new case file into an empty document. The caller commits with the author's org;
/// the case file's id is then [`DocId::member_created_by`] that change.
pub fn create(doc: &mut AutoCommit, member: &NewMember) -> Result<(), AutomergeError> {
    doc.put(ROOT, KIND, KIND_MEMBER)?;
    doc.put(ROOT, HOME_ORG, member.home_org.as_str())?;
    doc.put_object(ROOT, IDENTITY, ObjType::Map)?;
    let residence = doc.put_object(ROOT, RESIDENCE, ObjType::Map)?;
    doc.put_object(&residence, ASSIGNMENTS, ObjType::Map)?;
    doc.put_object(&residence, REPORTS, ObjType::Map)?;
    doc.put_object(ROOT, ACTIVITIES, ObjType::Map)?;
    doc.put_object(ROOT, REVIEWS, ObjType::Map)?;
    doc.put_object(ROOT, TRANSFERS, ObjType::Map)?;
    doc.put_object(ROOT, crate::transfer::ACKS, ObjType::Map)?;
    doc.put_object(ROOT, CONTACTS, ObjType::Map)?;
    update_identity(
        doc,
        &IdentityPatch {
            name: Some(member.name.clone()),
            gender: Some(member.gender.clone()),
            ethnicity: Some(member.ethnicity.clone()),
            birth_date: Some(member.birth_date.clone()),
            joined_at: Some(member.joined_at.clone()),
            id_number: member.id_number.clone(),
            phone: member.phone.clone(),
            education: member.education.clone(),
            categories: Some(member.categories.clone()),
        },
    )
}

fn container(doc: &AutoCommit, key: &str) -> Result<ObjId, AutomergeError> {
    Reader::now(doc)
        .obj(&ROOT, key)
        .ok_or_else(|| AutomergeError::InvalidObjId(format!("case file has no {key}")))
}

/// Applies the fields present in `patch` to the identity map.
pub fn update_identity(doc: &mut AutoCommit, patch: &IdentityPatch) -> Result<(), AutomergeError> {
    let identity = container(doc, IDENTITY)?;
    let scalars = [
        ("name", &patch.name),
        ("gender", &patch.gender),
        ("ethnicity", &patch.ethnicity),
        ("birth_date", &patch.birth_date),
        ("joined_at", &patch.joined_at),
        ("id_number", &patch.id_number),
        ("phone", &patch.phone),
        ("education", &patch.education),
    ];
    for (key, value) in scalars {
        if let Some(v) = value {
            doc.put(&identity, key, v.as_str())?;
        }
    }
    if let Some(categories) = &patch.categories {
        let list = doc.put_object(&identity, "categories", ObjType::List)?;
        for (i, c) in categories.iter().enumerate() {
            doc.insert(&list, i, c.as_str())?;
        }
    }
    Ok(())
}

/// The id of a new residence assignment of member `member`: `r-<member hex>-<suffix>`, so
/// an assignment (and a conflict about it) names its case file.
pub fn assignment_id(member: &DocId, random: [u8; 4]) -> String {
    format!(
        "r-{}-{}",
        member.as_str().trim_start_matches("m-"),
        hex::encode(random)
    )
}

/// Issues, changes (`Some`) or ends (`None`) the two-dwelling assignment (两栖党员活动证):
/// a new assignment event `id`, stamped with the author and the change's time.
pub fn assign_residence(
    doc: &mut AutoCommit,
    id: &str,
    residence: Option<&ResidenceInput>,
    by: &OrgPath,
    stamp: &Stamp,
) -> Result<(), AutomergeError> {
    let holder = container(doc, RESIDENCE)?;
    let assignments = Reader::now(doc)
        .obj(&holder, ASSIGNMENTS)
        .ok_or_else(|| AutomergeError::InvalidObjId("case file has no assignments".into()))?;
    let entry = doc.put_object(&assignments, id, ObjType::Map)?;
    let null = automerge::ScalarValue::Null;
    match residence {
        Some(r) => {
            doc.put(&entry, "org", r.org.as_str())?;
            doc.put(&entry, "since", r.since.as_str())?;
            match &r.until {
                Some(u) => doc.put(&entry, "until", u.as_str())?,
                None => doc.put(&entry, "until", null)?,
            }
        }
        None => {
            for key in ["org", "since", "until"] {
                doc.put(&entry, key, null.clone())?;
            }
        }
    }
    doc.put(&entry, BY, by.as_str())?;
    doc.put(&entry, "at", stamp.text.as_str())?;
    Ok(())
}

/// Every residence assignment event (incomplete ones are skipped: the gate never admits them).
pub fn assignments(reader: &Reader<'_>) -> Vec<Assignment> {
    let Some(map) = reader
        .obj(&ROOT, RESIDENCE)
        .and_then(|r| reader.obj(&r, ASSIGNMENTS))
    else {
        return Vec::new();
    };
    reader
        .keys(&map)
        .iter()
        .filter_map(|k| Some((k, reader.obj(&map, k)?)))
        .filter_map(|(k, e)| {
            let at = reader.str(&e, "at")?;
            Some(Assignment {
                id: k.clone(),
                org: reader.str(&e, "org"),
                since: reader.str(&e, "since"),
                until: reader.str(&e, "until"),
                by: reader.str(&e, BY)?,
                order: Order::of(&at, &e),
            })
        })
        .collect()
}

/// Records the member's report-in (报到) at `org`, the current residence org.
pub fn report_in(doc: &mut AutoCommit, org: &OrgPath, date: &str) -> Result<(), AutomergeError> {
    let residence = container(doc, RESIDENCE)?;
    let reports = Reader::now(doc)
        .obj(&residence, REPORTS)
        .ok_or_else(|| AutomergeError::InvalidObjId("case file has no residence reports".into()))?;
    doc.put(&reports, org.as_str(), date)?;
    Ok(())
}

/// Adds an activity entry stamped with the recording org.
pub fn add_activity(
    doc: &mut AutoCommit,
    activity_id: &str,
    activity: &ActivityInput,
    recorded_by: &OrgPath,
) -> Result<(), AutomergeError> {
    let activities = container(doc, ACTIVITIES)?;
    let entry = doc.put_object(&activities, activity_id, ObjType::Map)?;
    doc.put(&entry, "id", activity_id)?;
    doc.put(&entry, "date", activity.date.as_str())?;
    doc.put(&entry, "kind", activity.kind.as_str())?;
    doc.put(&entry, "description", activity.description.as_str())?;
    if let Some(p) = activity.points {
        doc.put(&entry, "points", p)?;
    }
    doc.put(&entry, RECORDED_BY, recorded_by.as_str())?;
    doc.put_object(&entry, COMMENTS, ObjType::List)?;
    Ok(())
}

/// Adds a comment (所在地党组织加注意见) to an activity; `None` if there is no such activity.
pub fn comment_activity(
    doc: &mut AutoCommit,
    activity_id: &str,
    by: &OrgPath,
    at: &str,
    text: &str,
) -> Result<Option<()>, AutomergeError> {
    let activities = container(doc, ACTIVITIES)?;
    let reader = Reader::now(doc);
    let Some(entry) = reader.obj(&activities, activity_id) else {
        return Ok(None);
    };
    let Some(comments) = reader.obj(&entry, COMMENTS) else {
        return Ok(None);
    };
    let len = reader.list(&comments).len();
    let comment = doc.insert_object(&comments, len, ObjType::Map)?;
    doc.put(&comment, BY, by.as_str())?;
    doc.put(&comment, "at", at)?;
    doc.put(&comment, "text", text)?;
    Ok(Some(()))
}

/// Names the member's contact person (联系责任人).
pub fn set_contact_person(doc: &mut AutoCommit, person: &str) -> Result<(), AutomergeError> {
    let contacts = container(doc, CONTACTS)?;
    doc.put(&contacts, CONTACT_PERSON, person)?;
    Ok(())
}

/// Records that office `by` was last in contact with the member on `date`.
pub fn record_contact(
    doc: &mut AutoCommit,
    by: &OrgPath,
    date: &str,
) -> Result<(), AutomergeError> {
    let contacts = container(doc, CONTACTS)?;
    doc.put(&contacts, by.as_str(), date)?;
    Ok(())
}

/// Writes the half-yearly review (发证党组织审核) for a period.
pub fn add_review(
    doc: &mut AutoCommit,
    review: &ReviewInput,
    reviewed_by: &OrgPath,
) -> Result<(), AutomergeError> {
    let reviews = container(doc, REVIEWS)?;
    let entry = doc.put_object(&reviews, review.period.as_str(), ObjType::Map)?;
    doc.put(&entry, "period", review.period.as_str())?;
    doc.put(&entry, "rating", review.rating.as_str())?;
    doc.put(&entry, "comment", review.comment.as_str())?;
    doc.put(&entry, REVIEWED_BY, reviewed_by.as_str())?;
    Ok(())
}

/// A member's case file as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseFile {
    /// `m-…`.
    pub id: String,
    /// Full name.
    pub name: String,
    /// `female` / `male`.
    pub gender: String,
    /// 民族.
    pub ethnicity: String,
    /// YYYY-MM-DD.
    pub birth_date: String,
    /// 入党日期.
    pub joined_at: String,
    /// 身份证号.
    pub id_number: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Education.
    pub education: Option<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// The one home org.
    pub home_org: String,
    /// The two-dwelling assignment, if any.
    pub residence: Option<Residence>,
    /// Activity entries, oldest first.
    pub activities: Vec<Activity>,
    /// Reviews, by period.
    pub reviews: Vec<Review>,
    /// Transfers of affiliation.
    pub transfers: Vec<Transfer>,
    /// Contact person and last contact (联系责任人).
    pub contact: Option<Contact>,
}

/// Who keeps in touch with the member, and when someone last did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    /// The named contact person.
    pub person: Option<String>,
    /// The latest contact date recorded by any office.
    pub last_contact_at: Option<String>,
}

/// One step of a transfer, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// accept, reject or cancel.
    pub step: crate::transfer::Decision,
    /// The office that took it.
    pub by: String,
    /// When.
    pub at: String,
}

/// The two-dwelling residence assignment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Residence {
    /// The residence org.
    pub org: String,
    /// Start date.
    pub since: Option<String>,
    /// Planned end.
    pub until: Option<String>,
    /// When the member reported in (报到) at this org.
    pub reported_in_at: Option<String>,
}

/// One activity entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// `a-…`.
    pub id: String,
    /// Date.
    pub date: String,
    /// Kind.
    pub kind: String,
    /// What was done.
    pub description: String,
    /// 积分.
    pub points: Option<i64>,
    /// The org that recorded it.
    pub recorded_by: String,
    /// Comments from the residence org.
    pub comments: Vec<Comment>,
}

/// A comment on an activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// The commenting org.
    pub by: String,
    /// When.
    pub at: String,
    /// Text.
    pub text: String,
}

/// One half-yearly review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// `2026H1`.
    pub period: String,
    /// Rating.
    pub rating: String,
    /// Comment.
    pub comment: String,
    /// The reviewing org.
    pub reviewed_by: String,
}

/// One transfer of affiliation (组织关系转接).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transfer {
    /// `t-…`.
    pub id: String,
    /// The home org when opened.
    pub from_org: String,
    /// The target org.
    pub to_org: String,
    /// `open`, `accepted`, `rejected`, `cancelled`, `superseded`.
    pub state: String,
    /// Why.
    pub reason: String,
    /// The office that opened it.
    pub opened_by: String,
    /// When it was opened.
    pub opened_at: String,
    /// Accept, reject, cancel: who and when.
    pub steps: Vec<Step>,
}

/// The essentials of a case file that decide scope and authority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberFacts {
    /// Home org, once created.
    pub home_org: Option<OrgPath>,
    /// Current residence org, if two-dwelling.
    pub residence_org: Option<OrgPath>,
    /// Target orgs of open transfers.
    pub open_transfer_targets: Vec<OrgPath>,
}

impl MemberFacts {
    /// Reads the facts through `reader` (derived from the events it sees).
    pub fn read(reader: &Reader<'_>) -> MemberFacts {
        let (entries, affiliation) = crate::transfer::resolve_doc(reader);
        MemberFacts::from_affiliation(&entries, &affiliation)
    }

    /// The facts of an affiliation already derived.
    pub fn from_affiliation(entries: &[crate::transfer::Entry], a: &Affiliation) -> MemberFacts {
        let org = |s: Option<&str>| s.and_then(|s| OrgPath::parse(s).ok());
        MemberFacts {
            home_org: org(a.home.as_deref()),
            residence_org: org(a.residence_org()),
            open_transfer_targets: a
                .open_targets(entries)
                .filter_map(|o| OrgPath::parse(o).ok())
                .collect(),
        }
    }

    /// The document's scope: home, residence, open transfer targets.
    pub fn scope(&self) -> Vec<OrgPath> {
        self.home_org
            .iter()
            .chain(self.residence_org.iter())
            .chain(self.open_transfer_targets.iter())
            .cloned()
            .collect()
    }
}

/// Who recorded activity `activity_id`, as seen by `reader`.
pub fn activity_recorder(reader: &Reader<'_>, activity_id: &str) -> Option<String> {
    let activities = reader.obj(&ROOT, ACTIVITIES)?;
    let entry = reader.obj(&activities, activity_id)?;
    reader.str(&entry, RECORDED_BY)
}

impl CaseFile {
    /// Reads case file `id`; `None` if the document is not (yet) a case file.
    pub fn read(id: &DocId, doc: &AutoCommit) -> Option<CaseFile> {
        let r = Reader::now(doc);
        if r.str(&ROOT, KIND).as_deref() != Some(KIND_MEMBER) {
            return None;
        }
        let identity = r.obj(&ROOT, IDENTITY)?;
        let text = |key: &str| r.str(&identity, key).unwrap_or_default();
        let (transfer_entries, affiliation) = crate::transfer::resolve_doc(&r);
        let residence = affiliation.residence.as_ref().and_then(|a| {
            let org = a.org.clone()?;
            let reported_in_at = r
                .obj(&ROOT, RESIDENCE)
                .and_then(|res| r.obj(&res, REPORTS))
                .and_then(|rep| r.str(&rep, &org));
            Some(Residence {
                since: a.since.clone(),
                until: a.until.clone(),
                reported_in_at,
                org,
            })
        });
        let entries = |key: &str| -> Vec<ObjId> {
            r.obj(&ROOT, key)
                .map(|m| r.keys(&m).iter().filter_map(|k| r.obj(&m, k)).collect())
                .unwrap_or_default()
        };
        let mut activities: Vec<Activity> = entries(ACTIVITIES)
            .iter()
            .map(|e| Activity {
                id: r.str(e, "id").unwrap_or_default(),
                date: r.str(e, "date").unwrap_or_default(),
                kind: r.str(e, "kind").unwrap_or_default(),
                description: r.str(e, "description").unwrap_or_default(),
                points: r.int(e, "points"),
                recorded_by: r.str(e, RECORDED_BY).unwrap_or_default(),
                comments: r
                    .obj(e, COMMENTS)
                    .map(|c| {
                        r.list(&c)
                            .into_iter()
                            .map(|(_, c)| Comment {
                                by: r.str(&c, BY).unwrap_or_default(),
                                at: r.str(&c, "at").unwrap_or_default(),
                                text: r.str(&c, "text").unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        activities.sort_by(|a, b| (&a.date, &a.id).cmp(&(&b.date, &b.id)));
        let reviews = entries(REVIEWS)
            .iter()
            .map(|e| Review {
                period: r.str(e, "period").unwrap_or_default(),
                rating: r.str(e, "rating").unwrap_or_default(),
                comment: r.str(e, "comment").unwrap_or_default(),
                reviewed_by: r.str(e, REVIEWED_BY).unwrap_or_default(),
            })
            .collect();
        let mut transfers: Vec<Transfer> = transfer_entries
            .iter()
            .map(|e| Transfer {
                id: e.id.clone(),
                from_org: e.from_org.clone(),
                to_org: e.to_org.clone(),
                state: affiliation
                    .states
                    .get(&e.id)
                    .map_or("open", |s| s.name())
                    .to_owned(),
                reason: e.reason.clone(),
                opened_by: e.opened_by.clone(),
                opened_at: e.opened_at.clone(),
                steps: e
                    .decisions
                    .iter()
                    .map(|d| Step {
                        step: d.decision,
                        by: d.by.clone(),
                        at: d.at.clone(),
                    })
                    .collect(),
            })
            .collect();
        transfers.sort_by(|a, b| (&a.opened_at, &a.id).cmp(&(&b.opened_at, &b.id)));
        let contact = r.obj(&ROOT, CONTACTS).map(|c| {
            let person = r.str(&c, CONTACT_PERSON);
            let last = r
                .keys(&c)
                .iter()
                .filter(|k| k.as_str() != CONTACT_PERSON)
                .filter_map(|k| r.str(&c, k))
                .max();
            Contact {
                person,
                last_contact_at: last,
            }
        });
        Some(CaseFile {
            id: id.to_string(),
            name: text("name"),
            gender: text("gender"),
            ethnicity: text("ethnicity"),
            birth_date: text("birth_date"),
            joined_at: text("joined_at"),
            id_number: r.str(&identity, "id_number"),
            phone: r.str(&identity, "phone"),
            education: r.str(&identity, "education"),
            categories: r
                .obj(&identity, "categories")
                .map(|c| r.strings(&c))
                .unwrap_or_default(),
            home_org: affiliation.home.clone()?,
            residence,
            activities,
            reviews,
            transfers,
            contact,
        })
    }
}
