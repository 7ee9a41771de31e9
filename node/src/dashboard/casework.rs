//! Casework in the page: the forms under a case file and what they post, the new-member
//! form and the printable two-dwelling certificate. Every action goes through the same
//! `members` operations, and so the same gate, as the HTTP API; a refusal is shown as the
//! office's words and the gate's reason, never a blank.
//!
//! | route | what |
//! |---|---|
//! | `GET /dashboard/members/new`, `POST` | the new-member form; messages beside the fields |
//! | `POST /dashboard/members/{id}/{action}` | `identity`, `residence`, `end-residence`, `report-in`, `comment`, `activity`, `review`, `contact`, `transfer` |
//! | `GET /dashboard/members/{id}/certificate` | the certificate as an A6 card to print |
//!
//! A case file shows the forms of the side this office is on: the home side (home org and
//! above) edits the identity, issues the certificate, reviews, keeps contact and opens transfers; the residence
//! side records the report-in and comments; anyone in scope records activities.

use amphi_protocol::casefile::{
    ActivityInput, CaseFile, IdentityPatch, NewMember, ResidenceInput, ReviewInput,
};
use amphi_protocol::validate::{self, FieldError};
use amphi_protocol::{DocId, OrgPath};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::forms::{Form, field, input, select, token_field};
use super::labels::*;
use super::pages::{esc, org_html, org_plain};
use super::{Visit, html, visit_and_form, visit_or_sign_in};
use crate::members::{self, ContactInput, OpError, TransferInput};
use crate::state::ApiState;

// ---- the forms under a case file --------------------------------------------------------------

/// Which sides of a case file this office stands on.
struct Sides {
    home: bool,
    residence: bool,
}

fn sides(s: &ApiState, case: &CaseFile) -> Sides {
    let me = s.repo.me();
    let at_or_above = |org: &str| OrgPath::parse(org).is_ok_and(|o| me.is_at_or_above(&o));
    Sides {
        home: at_or_above(&case.home_org),
        residence: case.residence.as_ref().is_some_and(|r| at_or_above(&r.org)),
    }
}

/// The casework section of a case file: the forms of this office's sides.
pub(super) fn forms(s: &ApiState, visit: &Visit, case: &CaseFile) -> String {
    let sides = sides(s, case);
    let post = |action: &str, class: &str, body: String, button: Label| {
        format!(
            r#"<form method="post" action="/dashboard/members/{id}/{action}" class="work {class}">{token}{body}<button type="submit">{button}</button></form>"#,
            id = esc(&case.id),
            token = token_field(visit),
        )
    };
    let today = members::today();
    let mut out = Vec::new();
    if sides.home {
        out.push(post(
            "identity",
            "identity",
            format!(
                "<h3>{EDIT_IDENTITY}</h3>{}",
                identity_fields(&identity_values(case), None, false)
            ),
            SAVE,
        ));
        let r = case.residence.as_ref();
        out.push(post(
            "residence",
            "residence",
            format!(
                "<h3>{ISSUE_CERTIFICATE}</h3>{}{}{}",
                field(
                    RESIDENCE_ORG,
                    "org",
                    &input(
                        "org",
                        r.map_or("", |r| &r.org),
                        r#"required maxlength="200" placeholder="hoboksar/hoboksar-town/xingfu""#
                    ),
                    None
                ),
                field(
                    SINCE,
                    "since",
                    &input(
                        "since",
                        r.and_then(|r| r.since.as_deref()).unwrap_or(&today),
                        r#"type="date" required"#
                    ),
                    None
                ),
                field(
                    UNTIL,
                    "until",
                    &input(
                        "until",
                        r.and_then(|r| r.until.as_deref()).unwrap_or(""),
                        r#"type="date""#
                    ),
                    None
                ),
            ),
            SAVE,
        ));
        if r.is_some() {
            out.push(post(
                "end-residence",
                "end-residence",
                String::new(),
                END_RESIDENCE,
            ));
        }
    }
    if sides.residence {
        out.push(post(
            "report-in",
            "report-in",
            format!(
                r#"<h3>{REPORT_IN}</h3><p class="muted small">{REPORT_IN_HINT}</p>{}"#,
                field(
                    DATE,
                    "report_date",
                    &input("report_date", &today, r#"type="date" required"#),
                    None
                )
            ),
            RECORD_REPORT_IN,
        ));
        if !case.activities.is_empty() {
            let activities: Vec<(String, String)> = case
                .activities
                .iter()
                .map(|a| (a.id.clone(), format!("{} · {}", a.date, a.description)))
                .collect();
            let ids: Vec<&str> = activities.iter().map(|(id, _)| id.as_str()).collect();
            let show = |id: &str| {
                activities
                    .iter()
                    .find(|(a, _)| a == id)
                    .map_or_else(String::new, |(_, text)| esc(text))
            };
            out.push(post(
                "comment",
                "comment",
                format!(
                    "<h3>{ADD_COMMENT}</h3>{}{}",
                    field(
                        ON_ACTIVITY,
                        "activity_id",
                        &select("activity_id", &ids, "", show),
                        None
                    ),
                    field(COMMENT, "text", &textarea("text", 2000), None),
                ),
                ADD_COMMENT,
            ));
        }
    }
    out.push(post(
        "activity",
        "activity",
        format!(
            "<h3>{RECORD_ACTIVITY}</h3>{}{}{}{}",
            field(
                DATE,
                "date",
                &input("date", &today, r#"type="date" required"#),
                None
            ),
            field(
                KIND,
                "kind",
                &select(
                    "kind",
                    validate::ACTIVITY_KINDS,
                    "organisation-life",
                    kind_label
                ),
                None
            ),
            field(
                DESCRIPTION,
                "description",
                &textarea("description", 2000),
                None
            ),
            field(
                POINTS,
                "points",
                &input(
                    "points",
                    "",
                    r#"type="number" min="-100" max="100" step="1""#
                ),
                None
            ),
        ),
        RECORD_ACTIVITY,
    ));
    if sides.home {
        out.push(post(
            "review",
            "review",
            format!(
                "<h3>{HALF_YEAR_REVIEW}</h3>{}{}{}",
                field(
                    PERIOD,
                    "period",
                    &input(
                        "period",
                        &current_half_year(&today),
                        r#"required pattern="[0-9]{4}H[12]" maxlength="6""#
                    ),
                    None
                ),
                field(
                    RATING,
                    "rating",
                    &select("rating", validate::RATINGS, "good", rating_label),
                    None
                ),
                field(
                    REVIEW_COMMENT,
                    "review_comment",
                    &textarea("review_comment", 2000),
                    None
                ),
            ),
            SAVE_REVIEW,
        ));
        let contact = case.contact.as_ref();
        out.push(post(
            "contact",
            "contact",
            format!(
                "<h3>{CONTACT}</h3>{}{}",
                field(
                    CONTACT_PERSON,
                    "person",
                    &input(
                        "person",
                        contact.and_then(|c| c.person.as_deref()).unwrap_or(""),
                        r#"maxlength="100""#
                    ),
                    None
                ),
                field(
                    LAST_CONTACT,
                    "last_contact_at",
                    &input("last_contact_at", &today, r#"type="date""#),
                    None
                ),
            ),
            SAVE_CONTACT,
        ));
        out.push(post(
            "transfer",
            "transfer",
            format!(
                "<h3>{OPEN_TRANSFER}</h3>{}{}",
                field(
                    TARGET_ORG,
                    "to_org",
                    &input("to_org", "", r#"required maxlength="200""#),
                    None
                ),
                field(REASON, "reason", &textarea("reason", 500), None),
            ),
            OPEN_TRANSFER,
        ));
    }
    format!(
        r#"<section id="casework" class="card wide"><h2>{}</h2><div class="work-forms">{}</div></section>"#,
        CASEWORK.heading(),
        out.concat()
    )
}

fn textarea(name: &str, max: usize) -> String {
    format!(r#"<textarea id="{name}" name="{name}" rows="2" maxlength="{max}"></textarea>"#)
}

/// `2026-11-23` → `2026H2`.
fn current_half_year(today: &str) -> String {
    let year = today.get(..4).unwrap_or("2026");
    let half = if today.get(5..7).is_some_and(|m| m > "06") {
        2
    } else {
        1
    };
    format!("{year}H{half}")
}

// ---- what the forms post ----------------------------------------------------------------------

/// `POST /dashboard/members/{id}/{action}`: does the action, then back to the case file
/// with a note of what was done; a refusal or a bad field shows the error page.
pub(super) async fn act(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (visit, form) = visit_and_form!(s, headers, body);
    match apply(&s, &id, &action, &form) {
        Ok(Some(done)) => {
            let id = DocId::parse(&id).map(|d| d.to_string()).unwrap_or_default();
            let to = match done {
                // After a transfer opens, the office follows it in the inbox.
                "transfer" => "/dashboard/transfers?done=transfer".to_owned(),
                done => format!("/dashboard/members/{id}?done={done}#casework"),
            };
            Redirect::to(&to).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => visit.respond(&s, || Err(e)),
    }
}

/// Runs `action` on case file `id` with `form`'s fields: the `done` key on success, `None`
/// for an action that does not exist.
fn apply(
    s: &ApiState,
    id: &str,
    action: &str,
    form: &Form,
) -> Result<Option<&'static str>, OpError> {
    let repo = &s.repo;
    let done = match action {
        "residence" => {
            let residence = ResidenceInput {
                org: org_field(form, "org")?,
                since: form.get("since").to_owned(),
                until: form.optional("until"),
            };
            members::set_residence(repo, id, &residence)?;
            "residence"
        }
        "identity" => {
            let patch = identity_changes(&members::get(repo, id)?, form);
            if !patch.is_empty() {
                members::patch(repo, id, &patch)?;
            }
            "identity"
        }
        "end-residence" => {
            members::end_residence(repo, id)?;
            "residence_ended"
        }
        "report-in" => {
            members::report_in(repo, id, form.optional("report_date").as_deref())?;
            "report_in"
        }
        "comment" => {
            members::comment(repo, id, form.get("activity_id"), form.get("text"))?;
            "comment"
        }
        "activity" => {
            let points = match form.optional("points") {
                None => None,
                Some(p) => Some(
                    p.parse()
                        .map_err(|_| FieldError::new("points", "a whole number"))?,
                ),
            };
            let activity = ActivityInput {
                date: form.get("date").to_owned(),
                kind: form.get("kind").to_owned(),
                description: form.get("description").to_owned(),
                points,
            };
            members::add_activity(repo, id, &activity)?;
            "activity"
        }
        "review" => {
            let review = ReviewInput {
                period: form.get("period").to_owned(),
                rating: form.get("rating").to_owned(),
                comment: form.get("review_comment").to_owned(),
            };
            members::add_review(repo, id, &review)?;
            "review"
        }
        "contact" => {
            let contact = ContactInput {
                person: form.optional("person"),
                last_contact_at: form.optional("last_contact_at"),
            };
            members::contact(repo, id, &contact)?;
            "contact"
        }
        "transfer" => {
            let transfer = TransferInput {
                member_id: id.to_owned(),
                to_org: org_field(form, "to_org")?,
                reason: form.get("reason").to_owned(),
            };
            members::open_transfer(repo, &transfer)?;
            "transfer"
        }
        _ => return Ok(None),
    };
    Ok(Some(done))
}

fn org_field(form: &Form, name: &str) -> Result<OrgPath, FieldError> {
    OrgPath::parse(form.get(name)).map_err(|e| FieldError::new(name, e.to_string()))
}

// ---- a new member ------------------------------------------------------------------------------

/// `GET /dashboard/members/new`: the empty form, the home org preset to this office.
pub(super) async fn new_member_page(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    let preset = Form::parse(format!("home_org={}", s.repo.me()).as_bytes());
    visit.respond(&s, || Ok(new_member_form(&visit, &preset, None)))
}

/// `POST /dashboard/members/new`: creates the case file and opens it; a field the
/// operation refuses is shown again with its message beside it.
pub(super) async fn create_member(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (visit, form) = visit_and_form!(s, headers, body);
    let created = org_field(&form, "home_org")
        .map_err(OpError::from)
        .and_then(|home_org| {
            let member = NewMember {
                name: form.get("name").to_owned(),
                gender: form.get("gender").to_owned(),
                ethnicity: form.get("ethnicity").to_owned(),
                birth_date: form.get("birth_date").to_owned(),
                joined_at: form.get("joined_at").to_owned(),
                home_org,
                id_number: form.optional("id_number"),
                phone: form.optional("phone"),
                education: form.optional("education"),
                categories: form.all("categories"),
            };
            members::create(&s.repo, &member)
        });
    match created {
        Ok(case) => {
            Redirect::to(&format!("/dashboard/members/{}?done=created", case.id)).into_response()
        }
        Err(OpError::Invalid(e)) => {
            let mut page = visit.respond(&s, || Ok(new_member_form(&visit, &form, Some(&e))));
            *page.status_mut() = StatusCode::BAD_REQUEST;
            page
        }
        Err(e) => visit.respond(&s, || Err(e)),
    }
}

fn new_member_form(visit: &Visit, form: &Form, error: Option<&FieldError>) -> (String, String) {
    let banner = error
        .map(|_| format!(r#"<p class="error" role="alert">{FIX_FIELDS}</p>"#))
        .unwrap_or_default();
    let home = field(
        HOME_ORG,
        "home_org",
        &input(
            "home_org",
            form.get("home_org"),
            r#"required maxlength="200""#,
        ),
        message(error, "home_org"),
    );
    let main = format!(
        r#"<main class="grid"><section class="card wide"><h2>{heading}</h2>{banner}
<form method="post" action="/dashboard/members/new" class="new-member">{token}
{home}{identity}
<button type="submit">{CREATE_MEMBER}</button></form></section></main>"#,
        heading = NEW_MEMBER.heading(),
        token = token_field(visit),
        identity = identity_fields(form, error, true),
    );
    (format!("Amphi · {}", NEW_MEMBER.short()), main)
}

/// `error`'s message when it is about field `name` (or one of its items, `categories[2]`).
fn message<'a>(error: Option<&'a FieldError>, name: &str) -> Option<&'a str> {
    error
        .filter(|e| e.field == name || e.field.starts_with(&format!("{name}[")))
        .map(|e| e.message.as_str())
}

/// The identity fields of a case file, holding `form`'s values, each with `error`'s message
/// when it is about that field. `required` marks what a new file must have; an edit may
/// leave the ID number blank (unchanged: it is never shown in full).
fn identity_fields(form: &Form, error: Option<&FieldError>, required: bool) -> String {
    let needed = if required { " required" } else { "" };
    let text = |label: Label, name: &str, extra: &str| {
        field(
            label,
            name,
            &input(name, form.get(name), extra),
            message(error, name),
        )
    };
    let chosen = form.all("categories");
    let categories: String = validate::CATEGORIES
        .iter()
        .map(|c| {
            format!(
                r#"<label class="check"><input type="checkbox" name="categories" value="{c}"{}> {}</label>"#,
                if chosen.iter().any(|x| x == c) { " checked" } else { "" },
                category_label(c),
            )
        })
        .collect();
    let gender = form.get("gender");
    let categories_message = message(error, "categories");
    format!(
        r#"{name}{gender}{ethnicity}{born}{joined}{id_number}{phone}{education}
<fieldset class="field{cat_class}"><legend>{CATEGORIES} <span class="muted small">{CATEGORIES_HINT}</span></legend>{categories}{cat_message}</fieldset>"#,
        name = text(NAME, "name", &format!(r#"maxlength="100"{needed}"#)),
        gender = field(
            GENDER,
            "gender",
            &select(
                "gender",
                validate::GENDERS,
                if gender.is_empty() { "male" } else { gender },
                gender_label
            ),
            message(error, "gender")
        ),
        ethnicity = text(
            ETHNICITY,
            "ethnicity",
            &format!(r#"maxlength="40"{needed}"#)
        ),
        born = text(BORN, "birth_date", &format!(r#"type="date"{needed}"#)),
        joined = text(JOINED, "joined_at", &format!(r#"type="date"{needed}"#)),
        id_number = text(
            ID_NUMBER,
            "id_number",
            r#"maxlength="18" autocomplete="off""#
        ),
        phone = text(PHONE, "phone", r#"type="tel" maxlength="40""#),
        education = text(EDUCATION, "education", r#"maxlength="40""#),
        cat_class = if categories_message.is_some() {
            " invalid"
        } else {
            ""
        },
        cat_message = categories_message
            .map(|m| format!(
                r#"<span class="field-error" role="alert">{}</span>"#,
                esc(m)
            ))
            .unwrap_or_default(),
    )
}

/// A case file's identity as form values, to fill the edit form (the ID number left out).
fn identity_values(case: &CaseFile) -> Form {
    let mut fields: Vec<(String, String)> = [
        ("name", case.name.as_str()),
        ("gender", &case.gender),
        ("ethnicity", &case.ethnicity),
        ("birth_date", &case.birth_date),
        ("joined_at", &case.joined_at),
        ("phone", case.phone.as_deref().unwrap_or("")),
        ("education", case.education.as_deref().unwrap_or("")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    fields.extend(
        case.categories
            .iter()
            .map(|c| ("categories".to_owned(), c.clone())),
    );
    Form::from_fields(fields)
}

/// The fields of `form` that differ from `case`: a blank ID number, phone or education
/// leaves it as it is.
fn identity_changes(case: &CaseFile, form: &Form) -> IdentityPatch {
    let changed = |name: &str, now: &str| {
        Some(form.get(name))
            .filter(|v| !v.is_empty() && *v != now)
            .map(str::to_owned)
    };
    let categories = form.all("categories");
    IdentityPatch {
        name: changed("name", &case.name),
        gender: changed("gender", &case.gender),
        ethnicity: changed("ethnicity", &case.ethnicity),
        birth_date: changed("birth_date", &case.birth_date),
        joined_at: changed("joined_at", &case.joined_at),
        id_number: changed("id_number", case.id_number.as_deref().unwrap_or("")),
        phone: changed("phone", case.phone.as_deref().unwrap_or("")),
        education: changed("education", case.education.as_deref().unwrap_or("")),
        categories: (categories != case.categories).then_some(categories),
    }
}

// ---- the certificate ---------------------------------------------------------------------------

/// The short code printed on a certificate: the first eight hex digits of the file id,
/// `3F2A-9C1B`. The residence office types it into the member search to find the file.
pub(super) fn short_code(id: &str) -> String {
    let hex: String = id
        .trim_start_matches("m-")
        .chars()
        .take(8)
        .collect::<String>()
        .to_uppercase();
    match hex.split_at_checked(4) {
        Some((a, b)) => format!("{a}-{b}"),
        None => hex,
    }
}

/// Whether a search `query` is a certificate's short code for file `id` (case, spaces and
/// the dash do not matter).
pub(super) fn matches_short_code(query: &str, id: &str) -> bool {
    let code: String = query
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let only_code = query
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == '-' || c == ' ');
    only_code && code.len() == 8 && id.trim_start_matches("m-").starts_with(&code)
}

/// `GET /dashboard/members/{id}/certificate`: the two-dwelling activity certificate as an
/// A6 card, for the home office to print and hand to the member.
pub(super) async fn certificate_page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    let case = match super::load_case_file(&s, &id) {
        Ok(case) => case,
        Err(e) => return visit.respond(&s, || Err(e)),
    };
    let Some(residence) = &case.residence else {
        return super::labels::in_language(visit.language, || {
            html(
                StatusCode::NOT_FOUND,
                super::pages::page(
                    "Amphi",
                    Some((&s, &visit)),
                    &format!(
                        r#"<main class="grid"><section class="card refused" role="alert"><h2>{NOT_TWO_DWELLING}</h2><p><a href="/dashboard/members/{}">← {CASE_FILE}</a></p></section></main>"#,
                        esc(&case.id)
                    ),
                ),
            )
        });
    };
    visit.respond(&s, || {
        let row = |label: Label, value: String| format!("<dt>{label}</dt><dd>{value}</dd>");
        let period = format!(
            "{} — {}",
            esc(residence.since.as_deref().unwrap_or("")),
            esc(residence.until.as_deref().unwrap_or("")),
        );
        let main = format!(
            r#"<main class="print"><article class="certificate" id="certificate">
<h1>{title}</h1>
<dl>{name}{gender}{joined}{home}{residence}{period}{issued}</dl>
<div class="short-code"><span class="muted small">{SHORT_CODE_HINT}</span><b id="short-code">{code}</b></div>
</article>
<p class="no-print"><button type="button" id="print">{PRINT}</button> <a href="/dashboard/members/{id}">← {CASE_FILE}</a></p></main>"#,
            title = CERTIFICATE.heading(),
            name = row(NAME, esc(&case.name)),
            gender = row(GENDER, gender_label(&case.gender)),
            joined = row(JOINED, esc(&case.joined_at)),
            home = row(HOME_ORG, org_plain(&case.home_org)),
            residence = row(RESIDENCE_ORG, org_html(&s, &residence.org)),
            period = row(PERIOD, period),
            issued = row(ISSUED_BY, org_plain(&case.home_org)),
            code = esc(&short_code(&case.id)),
            id = esc(&case.id),
        );
        Ok((format!("{} · {}", case.name, CERTIFICATE.short()), main))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_code_finds_its_file_and_nothing_else() {
        let id = "m-3f2a9c1b00aa11bb";
        assert_eq!(short_code(id), "3F2A-9C1B");
        assert!(matches_short_code("3F2A-9C1B", id));
        assert!(matches_short_code("3f2a 9c1b", id));
        assert!(!matches_short_code("3F2A-9C1C", id));
        assert!(!matches_short_code("3F2A", id), "a code is eight digits");
        assert!(
            !matches_short_code("Bayin 3F2A9C1B", id),
            "a name is not a code"
        );
    }

    #[test]
    fn the_review_period_defaults_to_the_current_half_year() {
        assert_eq!(current_half_year("2026-06-30"), "2026H1");
        assert_eq!(current_half_year("2026-07-01"), "2026H2");
        assert_eq!(current_half_year("2027-12-31"), "2027H2");
    }
}
