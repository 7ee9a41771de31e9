//! The edits of a case file: each writes one part of the layout (see [`super`]) into an
//! automerge document, from an input of [`super::inputs`] the caller has checked; the caller
//! then commits the change with the author's org.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjId, ObjType, ROOT};

use super::KIND_MEMBER;
use super::inputs::{ActivityInput, IdentityPatch, NewMember, ResidenceInput, ReviewInput};
use super::keys::*;
use crate::ids::DocId;
use crate::org::OrgPath;
use crate::reader::Reader;
use crate::stamp::Stamp;

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
    update_identity(doc, &member.identity())
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
