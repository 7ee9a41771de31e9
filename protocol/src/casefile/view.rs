//! The read-only view of a case file: what the API, the dashboard and an office's summary
//! show of a member, derived from the document as it is now, and the residence assignment
//! events that a member's affiliation is derived from.

use automerge::{AutoCommit, ObjId, ROOT};
use serde::Serialize;

use super::KIND_MEMBER;
use super::keys::*;
use crate::affiliation::{Affiliation, Assignment, Order};
use crate::ids::DocId;
use crate::reader::Reader;

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

impl CaseFile {
    /// Reads case file `id`; `None` if the document is not (yet) a case file.
    pub fn read(id: &DocId, doc: &AutoCommit) -> Option<CaseFile> {
        let r = Reader::now(doc);
        let resolved = crate::transfer::resolve_doc(&r);
        CaseFile::read_resolved(id, &r, resolved)
    }

    /// Reads case file `id` through `r`, with its transfers and affiliation already derived
    /// (by [`crate::transfer::resolve_doc`] on the same reader): for a caller that needs
    /// them too, such as the summary, so the derivation runs once.
    pub fn read_resolved(
        id: &DocId,
        r: &Reader<'_>,
        (transfer_entries, affiliation): (Vec<crate::transfer::Entry>, Affiliation),
    ) -> Option<CaseFile> {
        if r.str(&ROOT, KIND).as_deref() != Some(KIND_MEMBER) {
            return None;
        }
        let identity = r.obj(&ROOT, IDENTITY)?;
        let text = |key: &str| r.str(&identity, key).unwrap_or_default();
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
                .map(|m| r.objects(&m).into_iter().map(|(_, e)| e).collect())
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
                .str_fields(&c)
                .into_iter()
                .filter(|(k, _)| k != CONTACT_PERSON)
                .map(|(_, at)| at)
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

/// Every residence assignment event (incomplete ones are skipped: the gate never admits them).
pub fn assignments(reader: &Reader<'_>) -> Vec<Assignment> {
    let Some(map) = reader
        .obj(&ROOT, RESIDENCE)
        .and_then(|r| reader.obj(&r, ASSIGNMENTS))
    else {
        return Vec::new();
    };
    reader
        .objects(&map)
        .into_iter()
        .filter_map(|(k, e)| {
            let at = reader.str(&e, "at")?;
            Some(Assignment {
                id: k,
                org: reader.str(&e, "org"),
                since: reader.str(&e, "since"),
                until: reader.str(&e, "until"),
                by: reader.str(&e, BY)?,
                order: Order::of(&at, &e),
            })
        })
        .collect()
}
