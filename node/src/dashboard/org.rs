//! This office's own records: its roster (组织名册: profile, grids with their responsible
//! person, the members at home or resident here, and the history of those who left) and
//! the members nobody has contacted for a while (流动党员 "the organisation can't find the
//! member").
//!
//! | route | what |
//! |---|---|
//! | `GET /dashboard/org`, `POST` | the roster and its profile form |
//! | `GET /dashboard/contacts?days=N` | members with no contact recorded for `N` days (30 by default) |

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::forms::{field, input, select, token_field};
use super::labels::*;
use super::pages::{done_banner, esc, member_link, or_dash, org_plain};
use super::{Done, visit_and_form, visit_or_sign_in};
use crate::members::{self, ORG_KINDS, OpError, ProfileInput};
use crate::state::ApiState;
use amphi_protocol::validate::FieldError;

/// Most grids the form takes, as the operation does.
const MAX_GRIDS: usize = 500;

/// `GET /dashboard/org`.
pub(super) async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    visit.respond(&s, || {
        let me = s.repo.me();
        let roster = members::roster_of(&s.repo, me)?;
        let grids = members::profile(&s.repo, me).map(|p| p.grids).unwrap_or_default();
        let profile = &roster.profile;
        let value = |k: &str| profile.get(k).map_or("", String::as_str);
        let kind = value("kind");
        let grid_lines: String = grids.iter().map(|(g, p)| format!("{g} = {p}\n")).collect();
        let form = format!(
            r#"<form method="post" action="/dashboard/org" class="profile">{token}{name}{kind}{secretary}{liaison}{grids}<button type="submit">{SAVE}</button></form>"#,
            token = token_field(&visit),
            name = field(ORG_NAME, "name", &input("name", value("name"), r#"maxlength="100""#), None),
            kind = field(ORG_KIND, "kind", &select("kind", ORG_KINDS, if kind.is_empty() { "village" } else { kind }, esc), None),
            secretary = field(SECRETARY, "secretary", &input("secretary", value("secretary"), r#"maxlength="100""#), None),
            liaison = field(LIAISON, "liaison", &input("liaison", value("liaison"), r#"maxlength="100""#), None),
            grids = field(GRIDS, "grids", &format!(r#"<textarea id="grids" name="grids" rows="4" placeholder="{}">{}</textarea>"#, GRIDS_HINT.short(), esc(&grid_lines)), None),
        );
        let members_rows: String = roster
            .members
            .iter()
            .map(|m| format!("<tr><td>{}</td><td>{}</td></tr>", member_link(&m.id, &m.name), relation(m.relation)))
            .collect();
        let history: String = roster
            .history
            .iter()
            .map(|h| {
                format!(
                    r#"<li class="history-line">{} · {} · {} {}</li>"#,
                    esc(&h.name),
                    esc(&h.event),
                    esc(&h.at),
                    h.to_org.as_deref().map(|o| format!("→ {}", org_plain(o))).unwrap_or_default()
                )
            })
            .collect();
        let main = format!(
            r#"<main class="grid">{done}<section id="profile" class="card"><h2>{heading}</h2><p>{org}</p>{form}</section>
<section id="roster" class="card"><h2>{members_heading} <span class="count">{n}</span></h2><table><tbody>{members_rows}</tbody></table>
<h3>{HISTORY}</h3><ul class="history">{history}</ul></section></main>"#,
            done = done_banner(done.done.as_deref()),
            heading = ORG_PROFILE.heading(),
            org = org_plain(me.as_str()),
            members_heading = ROSTER_MEMBERS.heading(),
            n = roster.members.len(),
        );
        Ok((format!("Amphi · {}", ORG_PROFILE.short()), main))
    })
}

fn relation(relation: &str) -> String {
    match relation {
        "home" => HOME_HERE.to_string(),
        "resident" => RESIDENT_HERE.to_string(),
        other => esc(other),
    }
}

/// `POST /dashboard/org`: saves the profile; grids are `name = person` lines.
pub(super) async fn save(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let (visit, form) = visit_and_form!(s, headers, body);
    let saved = grids(form.get("grids"))
        .map_err(OpError::from)
        .and_then(|grids| {
            let input = ProfileInput {
                name: form.optional("name"),
                kind: form.optional("kind"),
                secretary: form.optional("secretary"),
                liaison: form.optional("liaison"),
                grids: Some(grids).filter(|g| !g.is_empty()),
            };
            members::patch_profile(&s.repo, s.repo.me(), &input)
        });
    match saved {
        Ok(_) => Redirect::to("/dashboard/org?done=profile").into_response(),
        Err(e) => visit.respond(&s, || Err(e)),
    }
}

/// `grid = person` lines (blank lines skipped) into grids.
fn grids(text: &str) -> Result<BTreeMap<String, String>, FieldError> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((grid, person)) = line.split_once('=') else {
            return Err(FieldError::new(
                "grids",
                format!("{line:?}: write `grid = person`"),
            ));
        };
        out.insert(grid.trim().to_owned(), person.trim().to_owned());
        if out.len() > MAX_GRIDS {
            return Err(FieldError::new(
                "grids",
                format!("at most {MAX_GRIDS} grids"),
            ));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
pub(super) struct Quiet {
    days: Option<u32>,
}

/// `GET /dashboard/contacts?days=N`.
pub(super) async fn contacts(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(quiet): Query<Quiet>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    let days = quiet.days.unwrap_or(30).min(3650);
    visit.respond(&s, || {
        let list = members::without_contact(&s.repo, Some(s.repo.me()), days)?;
        let rows: String = list
            .iter()
            .take(500)
            .map(|m| {
                let case = members::get(&s.repo, &m.id).ok();
                let contact = case.as_ref().and_then(|c| c.contact.as_ref());
                format!(
                    r#"<tr class="quiet"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    member_link(&m.id, &m.name),
                    org_plain(&m.home_org),
                    or_dash(contact.and_then(|c| c.person.as_deref())),
                    or_dash(contact.and_then(|c| c.last_contact_at.as_deref())),
                )
            })
            .collect();
        let main = format!(
            r#"<main class="grid"><section id="contacts" class="card wide"><h2>{heading}</h2>
<form method="get" action="/dashboard/contacts" class="inline">{days_field}<button type="submit">{SEARCH}</button></form>
<p class="muted">{count}</p>
<table><thead><tr><th>{NAME}</th><th>{HOME_ORG}</th><th>{CONTACT_PERSON}</th><th>{LAST_CONTACT}</th></tr></thead><tbody>{rows}</tbody></table></section></main>"#,
            heading = NOT_CONTACTED.heading(),
            days_field = field(DAYS_WITHOUT_CONTACT, "days", &input("days", &days.to_string(), r#"type="number" min="1" max="3650""#), None),
            count = NOT_CONTACTED_COUNT.fill(&[("n", &list.len().to_string()), ("days", &days.to_string())]),
        );
        Ok((format!("Amphi · {}", CONTACTS.short()), main))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_lines_are_read_and_bad_ones_named() {
        let g = grids("一组 = 王芳\n\n 二组=李强 ").unwrap();
        assert_eq!(g.get("一组").map(String::as_str), Some("王芳"));
        assert_eq!(g.get("二组").map(String::as_str), Some("李强"));
        let e = grids("一组 王芳").unwrap_err();
        assert_eq!(e.field, "grids");
        let many: String = (0..=MAX_GRIDS).map(|i| format!("g{i} = p\n")).collect();
        assert!(grids(&many).is_err());
    }
}
