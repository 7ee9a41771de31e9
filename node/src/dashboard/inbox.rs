//! The transfer inbox (组织关系转接): what waits for this office (transfers into it or below
//! that it may accept or reject) and what it sent (out of it or below, which it may
//! cancel while open), each with its reason and steps; closed ones stay listed as history.
//! A transfer between two offices below this one is in both lists.
//!
//! | route | what |
//! |---|---|
//! | `GET /dashboard/transfers` | the inbox |
//! | `POST /dashboard/transfers/{id}/{accept,reject,cancel}` | moves a transfer (the same gate as the API) |
//! | `POST /dashboard/conflicts/{id}/ack` | acknowledges what the one-home rule settled (two transfers accepted at once) |

use amphi_protocol::OrgPath;
use amphi_protocol::transfer::Decision;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::forms::token_field;
use super::labels::*;
use super::pages::{done_banner, esc, member_link, transfer_html};
use super::{Done, Visit, visit_and_form, visit_or_sign_in};
use crate::members::{self, OpError, TransferView};
use crate::state::ApiState;

/// Most closed transfers shown per list (the rest are in each member's case file).
const CLOSED_SHOWN: usize = 50;

/// `GET /dashboard/transfers`.
pub(super) async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    visit.respond(&s, || {
        let main = format!(
            r#"<main class="grid">{}{}</main>"#,
            done_banner(done.done.as_deref()),
            render_inbox(&s, &visit)?
        );
        Ok((format!("Amphi · {}", TRANSFER_INBOX.short()), main))
    })
}

fn render_inbox(s: &ApiState, visit: &Visit) -> Result<String, OpError> {
    let me = s.repo.me();
    let under_me = |org: &str| OrgPath::parse(org).is_ok_and(|o| me.is_at_or_above(&o));
    let mut all = members::list_transfers(&s.repo, Some(me))?;
    all.sort_by(|a, b| {
        (a.state != "open")
            .cmp(&(b.state != "open"))
            .then(a.id.cmp(&b.id))
    });
    // A transfer between two offices below this one is in both lists. Every open one is
    // shown, and at most CLOSED_SHOWN closed ones as history (each item reads its case file).
    let shown = |side: &dyn Fn(&TransferView) -> bool| -> Vec<&TransferView> {
        let (open, closed): (Vec<_>, Vec<_>) = all
            .iter()
            .filter(|t| side(t))
            .partition(|t| t.state == "open");
        open.into_iter()
            .chain(closed.into_iter().take(CLOSED_SHOWN))
            .collect()
    };
    let incoming = shown(&|t| under_me(&t.to_org));
    let sent = shown(&|t| under_me(&t.from_org));
    let section = |id: &str, heading: Label, list: &[&TransferView], steps: &[Decision]| {
        let items: String = if list.is_empty() {
            format!(r#"<p class="muted">{NOTHING_WAITING}</p>"#)
        } else {
            list.iter()
                .map(|t| transfer_item(s, visit, t, steps))
                .collect()
        };
        format!(
            r#"<section id="{id}" class="card"><h2>{} <span class="count">{}</span></h2>{items}</section>"#,
            heading.heading(),
            list.iter().filter(|t| t.state == "open").count(),
        )
    };
    Ok(format!(
        "{}{}",
        section(
            "incoming",
            WAITING_FOR_ME,
            &incoming,
            &[Decision::Accept, Decision::Reject]
        ),
        section("sent", SENT_BY_ME, &sent, &[Decision::Cancel]),
    ))
}

/// One transfer: the member, the transfer with its steps (from the case file), and the
/// buttons this side may press while it is open.
fn transfer_item(s: &ApiState, visit: &Visit, t: &TransferView, steps: &[Decision]) -> String {
    let detail = members::get(&s.repo, &t.member_id)
        .ok()
        .and_then(|case| case.transfers.into_iter().find(|x| x.id == t.id))
        .map(|x| transfer_html(s, &x))
        .unwrap_or_default();
    let buttons: String = if t.state == "open" {
        steps
            .iter()
            .map(|d| {
                let label = match d {
                    Decision::Accept => ACCEPT,
                    Decision::Reject => REJECT,
                    Decision::Cancel => CANCEL,
                };
                format!(
                    r#"<form method="post" action="/dashboard/transfers/{id}/{step}" class="decide {step}">{token}<button type="submit">{label}</button></form>"#,
                    id = esc(&t.id),
                    step = d.name(),
                    token = token_field(visit),
                )
            })
            .collect()
    } else {
        String::new()
    };
    format!(
        r#"<div class="inbox-item" data-transfer="{id}"><h3>{member}</h3>{detail}<div class="actions">{buttons}</div></div>"#,
        id = esc(&t.id),
        member = member_link(&t.member_id, &t.name),
    )
}

/// `POST /dashboard/transfers/{id}/{step}`: back to the inbox saying what was done.
pub(super) async fn decide(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (visit, _) = visit_and_form!(s, headers, body);
    let Some(decision) = Decision::ALL.into_iter().find(|d| d.name() == step) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match members::decide_transfer(&s.repo, &id, decision) {
        Ok(_) => {
            Redirect::to(&format!("/dashboard/transfers?done={}", decision.name())).into_response()
        }
        Err(e) => visit.respond(&s, || Err(e)),
    }
}

/// `POST /dashboard/conflicts/{id}/ack`: back to the overview saying it was done.
pub(super) async fn acknowledge(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (visit, _) = visit_and_form!(s, headers, body);
    match members::acknowledge(&s.repo, &id) {
        Ok(()) => Redirect::to("/?done=acknowledged").into_response(),
        Err(e) => visit.respond(&s, || Err(e)),
    }
}
