//! The inputs of an edit: what each edit of a case file needs, with its field checks.
//!
//! The HTTP API deserialises its request bodies into these types (unknown fields are
//! refused) and checks them with their `validate`; the judge checks a peer's ops with the
//! same field checks ([`check_identity_field`], [`check_activity_field`],
//! [`check_entry_id`]), so a value the API would refuse is refused on the wire too.

use serde::Deserialize;

use crate::org::OrgPath;
use crate::validate::{self, FieldError};

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
        self.identity().validate()
    }

    /// The new member's identity as a patch that sets every field given: what creating the
    /// case file writes, and what [`NewMember::validate`] checks.
    pub(super) fn identity(&self) -> IdentityPatch {
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
