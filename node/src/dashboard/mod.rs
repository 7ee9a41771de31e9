//! The admin dashboard at `GET /`: one office's view of its node, rendered on the server.
//!
//! Without a session it shows only a sign-in form (the admin token from
//! `DATA_DIR/admin.token`); no member or status data is ever rendered or served before that.
//! Signed in, the overview shows:
//!
//! - this office (org, node id, certificate expiry) and its peers, each coloured by state
//!   (connected green, connecting amber, disconnected red), with last sync, documents
//!   pending, refusals and the last error — refreshed every 5 s by a few lines of plain JS;
//! - conflicts the one-home rule settled, the quarantine (count by reason, latest entries)
//!   and open transfers (组织关系转接);
//! - member search by name within the members whose home or residence is this office or
//!   below, leading to a member's case file (党员档案): identity, home org, residence,
//!   contact, the activities from every office each stamped with its recording office,
//!   half-year reviews and transfers with their steps.
//!
//! The session cookie `amphi_session` (HttpOnly, SameSite=Strict, 12 h) holds an HMAC of
//! the admin token under a key drawn at process start, never the token itself, so a restart
//! ends every session. The page never sees the token: its one script fetches an HTML
//! fragment from a cookie-checked route. Every piece of user data is escaped with
//! [`escape_html`]. Routes, merged into [`crate::api::router`]:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | sign-in form, or the overview (`?q=` searches members by name) |
//! | `POST /login`, `POST /logout` | form field `token`; sets or clears the session, then back to `/` |
//! | `GET /dashboard/members/{id}` | a case file |
//! | `GET /dashboard/sync` | the sync-status section alone (what the script refreshes) |
//! | `GET /dashboard/bundle?for=ORG`, `POST /dashboard/bundle` | download a bundle for a neighbour office; upload one (the API's, behind the session) |
//! | `GET /dashboard/assets/{dashboard.css,dashboard.js}` | the stylesheet and the script |
//!
//! The parts: `session` (the signed-in cookie), `pages` (HTML rendering) and `labels` (every
//! text the dashboard shows, in Simplified Chinese and English).

mod labels;
mod pages;
mod session;

use amphi_protocol::DocId;
use amphi_protocol::casefile::CaseFile;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::members::{self, OpError};
use crate::repo::WriteError;
use crate::state::ApiState;
use labels::{CASE_FILE, OVERVIEW, WRONG_TOKEN};
use pages::{login_page, page, render_case_file, render_overview, render_sync};
use session::{session_value, set_cookie, signed_in, token_matches, unix_now};

pub use pages::escape_html;
pub use session::{SESSION_COOKIE, SESSION_SECS};

const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes; `api::router` merges them beside `/api/v1`.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(overview))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/dashboard/sync", get(sync_fragment))
        .route("/dashboard/members/{id}", get(case_file_page))
        .route(
            "/dashboard/bundle",
            get(bundle_download)
                .post(bundle_upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::api::MAX_BUNDLE_UPLOAD,
                )),
        )
        .route(
            "/dashboard/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/dashboard/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

// ---- small parsers ----------------------------------------------------------------------

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = url_decode(kv.next()?)?;
        (key == name).then(|| url_decode(kv.next().unwrap_or_default()))?
    })
}

/// Decodes `+` and `%XX`; `None` if the result is not UTF-8 or an escape is malformed.
fn url_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

// ---- responses ----------------------------------------------------------------------------

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(body),
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The error page for `e`, as a response.
fn error_response(s: &ApiState, e: &OpError) -> Response {
    let (status, body) = pages::error_page(s, e);
    html(status, body)
}

// ---- handlers -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn overview(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(search): Query<SearchQuery>,
) -> Response {
    if !signed_in(&s, &headers) {
        return html(StatusCode::OK, login_page(None));
    }
    let query: String = search
        .q
        .unwrap_or_default()
        .trim()
        .chars()
        .take(100)
        .collect();
    match render_overview(&s, &query) {
        Ok(main) => html(
            StatusCode::OK,
            page(&format!("Amphi · {}", s.repo.me()), Some((&s, "")), &main),
        ),
        Err(e) => error_response(&s, &e),
    }
}

async fn login(State(s): State<ApiState>, body: Bytes) -> Response {
    let given = form_field(&body, "token").unwrap_or_default();
    if given.is_empty() || !token_matches(given.trim(), &s.token) {
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(Some(&WRONG_TOKEN.to_string())),
        );
    }
    let cookie = set_cookie(&session_value(&s.token, unix_now()), SESSION_SECS);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout() -> Response {
    ([(header::SET_COOKIE, set_cookie("", 0))], Redirect::to("/")).into_response()
}

async fn sync_fragment(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match render_sync(&s) {
        Ok(fragment) => html(StatusCode::OK, fragment),
        Err(e) => {
            tracing::error!("dashboard: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn case_file_page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !signed_in(&s, &headers) {
        return Redirect::to("/").into_response();
    }
    match load_case_file(&s, &id) {
        Ok(case) => html(
            StatusCode::OK,
            page(
                &format!("{} · {CASE_FILE}", case.name),
                Some((
                    &s,
                    format!(r#"<a class="back" href="/">← {OVERVIEW}</a>"#).as_str(),
                )),
                &render_case_file(&s, &case),
            ),
        ),
        Err(e) => error_response(&s, &e),
    }
}

/// `GET /dashboard/bundle?for=ORG`: the API's bundle download, for a signed-in admin.
async fn bundle_download(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Query<crate::api::BundleFor>,
) -> Response {
    if !signed_in(&s, &headers) {
        return Redirect::to("/").into_response();
    }
    crate::api::export_bundle(State(s), query)
        .await
        .into_response()
}

/// `POST /dashboard/bundle` (the file as an `application/octet-stream` body, which a form on
/// another site cannot send without the browser asking first): the API's bundle import,
/// for a signed-in admin; answers the API's JSON report.
async fn bundle_upload(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if !signed_in(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let octets = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    if !octets {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    crate::api::import_bundle(State(s), body)
        .await
        .into_response()
}

/// A case file this office shows: held, and not on its way out of this office's scope.
fn load_case_file(s: &ApiState, id: &str) -> Result<CaseFile, OpError> {
    let case = members::get(&s.repo, id)?;
    let doc = DocId::parse(id).map_err(|_| WriteError::Conflict("bad id".into()))?;
    match s.repo.store().summary(&doc)? {
        Some(summary) if !summary.leaving => Ok(case),
        _ => Err(WriteError::NotFound(doc).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_url_decoded() {
        let body = b"other=1&token=ab%2Bc+d%3D&x";
        assert_eq!(form_field(body, "token").as_deref(), Some("ab+c d="));
        assert_eq!(form_field(body, "other").as_deref(), Some("1"));
        assert_eq!(form_field(body, "x").as_deref(), Some(""));
        assert_eq!(form_field(body, "missing"), None);
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
    }
}
