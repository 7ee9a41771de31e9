//! The dashboard at `GET /`: one office's workbench, rendered on the server.
//!
//! Without a session it shows only a sign-in form (the admin token from
//! `DATA_DIR/admin.token`); no member or status data is ever rendered or served before that.
//! Signed in, the overview shows sync status (refreshed every 5 s by a few lines of plain
//! JS), conflicts, quarantine, open transfers, USB bundles and the member search (by name or
//! a certificate's short code); the bar leads to the office's other pages. Every action goes
//! through the same `members` operations, and so the same gate, as the HTTP API.
//!
//! The session cookie `amphi_session_<tag of the node id>` (HttpOnly, SameSite=Strict, 12 h)
//! holds an HMAC of the admin token under a key drawn at process start, never the token
//! itself, so a restart ends every session; every form carries a token bound to the session
//! (`Visit::form`). The reader's language is the `amphi_lang` cookie. Every piece of user
//! data is escaped with [`escape_html`]. Routes, merged into [`crate::api::router`]:
//!
//! | route | what | module |
//! |---|---|---|
//! | `GET /` | sign-in form, or the overview (`?q=` searches) | `pages` |
//! | `POST /login`, `POST /logout` | sets or clears the session, then back to `/` | here |
//! | `GET /dashboard/language?to=CODE&back=PATH` | the language choice | here |
//! | `GET /dashboard/sync` | the sync-status section alone (what the script refreshes) | `pages` |
//! | `GET /dashboard/members/{id}` | a case file with the casework forms of this office's side | `pages`, `casework` |
//! | `GET`/`POST /dashboard/members/new`, `POST /dashboard/members/{id}/{action}`, `GET …/certificate` | casework | `casework` |
//! | `GET /dashboard/transfers`, `POST …/{id}/{step}`, `POST /dashboard/conflicts/{id}/ack` | the transfer inbox | `inbox` |
//! | `GET`/`POST /dashboard/org`, `GET /dashboard/contacts` | the roster and profile; the not-contacted list | `org` |
//! | `GET /dashboard/fleet` | the subtree: fleet tree, activity, conflicts and quarantine | `subtree` |
//! | `GET /dashboard/ledgers`, `GET /dashboard/ledgers/{file}` | ledgers as XLSX and CSV | `ledgers` |
//! | `GET /dashboard/bundle?for=ORG`, `POST /dashboard/bundle` | download a bundle for a neighbour; upload one | here |
//! | `GET /dashboard/assets/{dashboard.css,dashboard.js}` | the stylesheet and the script | here |
//!
//! The other parts: `session` (the cookie and the form token), `forms` (reading a posted
//! form, the markup forms share) and `labels` (every text, from the files in `lang/`).

mod casework;
mod forms;
mod inbox;
mod labels;
mod ledgers;
mod org;
mod pages;
mod session;
mod subtree;

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
use forms::Form;
use labels::{CASE_FILE, Language, WRONG_TOKEN, in_language};
use pages::{login_page, page, render_case_file, render_overview, render_sync};
use session::{form_token, session, session_value, set_cookie, signed_in, token_matches, unix_now};

pub use labels::load_translations;

/// The dashboard's readers of untrusted bytes, for the fuzz target `dashboard_input`: a
/// posted form, a translation file, a session cookie and a form token.
#[doc(hidden)]
pub mod untrusted {
    /// A posted form's fields, as the handlers read them.
    pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
        super::Form::parse(body).fields()
    }

    /// A translation file: how many texts it names, or why it is refused.
    pub fn translation(file: &str) -> Result<usize, String> {
        super::labels::Table::parse("fuzz", file).map(|t| t.len())
    }

    /// Whether `value` is a session cookie for `token` now, and `given` its form token.
    pub fn session(token: &str, value: &str, given: &str) -> (bool, bool) {
        let now = super::unix_now();
        (
            super::session::session_valid(token, value, now),
            super::session::form_token_valid(value, given),
        )
    }
}
pub use pages::escape_html;
pub use session::{SESSION_COOKIE, SESSION_SECS, session_cookie};

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
        .route("/dashboard/language", get(choose_language))
        .route(
            "/dashboard/members/new",
            get(casework::new_member_page).post(casework::create_member),
        )
        .route("/dashboard/fleet", get(subtree::page))
        .route("/dashboard/ledgers", get(ledgers::page))
        .route("/dashboard/ledgers/{file}", get(ledgers::download))
        .route("/dashboard/org", get(org::page).post(org::save))
        .route("/dashboard/contacts", get(org::contacts))
        .route("/dashboard/transfers", get(inbox::page))
        .route("/dashboard/transfers/{id}/{step}", post(inbox::decide))
        .route("/dashboard/conflicts/{id}/ack", post(inbox::acknowledge))
        .route("/dashboard/members/{id}", get(case_file_page))
        .route(
            "/dashboard/members/{id}/certificate",
            get(casework::certificate_page),
        )
        .route("/dashboard/members/{id}/{action}", post(casework::act))
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

// ---- handlers -----------------------------------------------------------------------------

/// A signed-in request: its session, the reader's language and the token its forms carry.
struct Visit {
    session: String,
    language: Language,
    form_token: String,
}

impl Visit {
    /// The visit `headers` make, if they carry this node's session.
    fn of(s: &ApiState, headers: &HeaderMap) -> Option<Visit> {
        let session = session(s, headers)?;
        Some(Visit {
            form_token: form_token(&session),
            language: language_of(headers),
            session,
        })
    }

    /// The page `render` makes (its title and `<main>`), in the reader's language and in the
    /// page frame; the error page if it fails.
    fn respond(
        &self,
        s: &ApiState,
        render: impl FnOnce() -> Result<(String, String), OpError>,
    ) -> Response {
        in_language(self.language, || match render() {
            Ok((title, main)) => html(StatusCode::OK, page(&title, Some((s, self)), &main)),
            Err(e) => {
                let (status, body) = pages::error_page(s, self, &e);
                html(status, body)
            }
        })
    }

    /// A posted form, if its token is this session's; otherwise the 403 to answer.
    fn form(&self, s: &ApiState, body: &[u8]) -> Result<Form, Box<Response>> {
        let form = Form::parse(body);
        if session::form_token_valid(&self.session, form.get("form_token")) {
            Ok(form)
        } else {
            Err(Box::new(in_language(self.language, || {
                html(StatusCode::FORBIDDEN, pages::stale_form_page(s, self))
            })))
        }
    }
}

/// The language the reader chose (cookie), or Chinese with English beside it.
fn language_of(headers: &HeaderMap) -> Language {
    session::language_choice(headers)
        .and_then(Language::from_code)
        .unwrap_or(Language::DEFAULT)
}

/// A signed-in page handler's preamble: the visit, or a redirect to sign in.
macro_rules! visit_or_sign_in {
    ($s:expr, $headers:expr) => {
        match $crate::dashboard::Visit::of(&$s, &$headers) {
            Some(v) => v,
            None => {
                return axum::response::IntoResponse::into_response(axum::response::Redirect::to(
                    "/",
                ));
            }
        }
    };
}
pub(super) use visit_or_sign_in;

/// A posted form's preamble: the visit and its form, or the redirect to sign in, or the 403
/// for a form without this session's token.
macro_rules! visit_and_form {
    ($s:expr, $headers:expr, $body:expr) => {{
        let visit = $crate::dashboard::visit_or_sign_in!($s, $headers);
        match visit.form(&$s, &$body) {
            Ok(form) => (visit, form),
            Err(refused) => return *refused,
        }
    }};
}
pub(super) use visit_and_form;

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    done: Option<String>,
}

async fn overview(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(search): Query<SearchQuery>,
) -> Response {
    let Some(visit) = Visit::of(&s, &headers) else {
        return in_language(language_of(&headers), || {
            html(StatusCode::OK, login_page(None))
        });
    };
    let query: String = search
        .q
        .unwrap_or_default()
        .trim()
        .chars()
        .take(100)
        .collect();
    visit.respond(&s, || {
        Ok((
            format!("Amphi · {}", s.repo.me()),
            format!(
                "{}{}",
                pages::done_banner(search.done.as_deref()),
                render_overview(&s, &visit, &query)?
            ),
        ))
    })
}

async fn login(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let given = Form::parse(&body).get("token").to_owned();
    if given.is_empty() || !token_matches(given.trim(), &s.token) {
        return in_language(language_of(&headers), || {
            html(
                StatusCode::UNAUTHORIZED,
                login_page(Some(&WRONG_TOKEN.to_string())),
            )
        });
    }
    let cookie = set_cookie(
        &s.node_id,
        &session_value(&s.token, unix_now()),
        SESSION_SECS,
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = visit_and_form!(s, headers, body);
    (
        [(header::SET_COOKIE, set_cookie(&s.node_id, "", 0))],
        Redirect::to("/"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LanguageChoice {
    to: String,
    back: Option<String>,
}

/// `GET /dashboard/language?to=CODE&back=PATH`: remembers the reader's language (a cookie
/// for a year) and goes back to the page it came from (a path on this node only).
async fn choose_language(Query(choice): Query<LanguageChoice>) -> Response {
    let Some(language) = Language::from_code(&choice.to) else {
        return (StatusCode::BAD_REQUEST, "unknown language").into_response();
    };
    let back = choice
        .back
        .filter(|b| is_local_path(b))
        .unwrap_or_else(|| "/".to_owned());
    let cookie = format!(
        "{}={}; Path=/; SameSite=Strict; Max-Age=31536000",
        session::LANGUAGE_COOKIE,
        language.code()
    );
    let cookie = axum::http::HeaderValue::from_str(&cookie).expect("codes are ASCII");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

/// Whether `path` is a path on this node that is safe to redirect to: starts with one `/`,
/// printable ASCII only (no header injection, no `\\`), at most 512 characters.
fn is_local_path(path: &str) -> bool {
    path.len() <= 512
        && path.starts_with('/')
        && !path.starts_with("//")
        && path
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
}

async fn sync_fragment(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match in_language(language_of(&headers), || render_sync(&s)) {
        Ok(fragment) => html(StatusCode::OK, fragment),
        Err(e) => {
            tracing::error!("dashboard: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// What a form's redirect says it did: `?done=KEY`.
#[derive(Deserialize)]
pub(super) struct Done {
    done: Option<String>,
}

async fn case_file_page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    visit.respond(&s, || {
        let case = load_case_file(&s, &id)?;
        Ok((
            format!("{} · {CASE_FILE}", case.name),
            format!(
                "{}{}",
                pages::done_banner(done.done.as_deref()),
                render_case_file(&s, &visit, &case)
            ),
        ))
    })
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
/// another site cannot send without the browser asking first, and the page's form token in
/// `X-Form-Token`): the API's bundle import, for a signed-in admin; answers the API's JSON
/// report.
async fn bundle_upload(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(visit) = Visit::of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let token = headers
        .get("x-form-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !session::form_token_valid(&visit.session, token) {
        return StatusCode::FORBIDDEN.into_response();
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
    fn the_language_switch_goes_back_only_to_a_path_on_this_node() {
        assert!(is_local_path(
            "/dashboard/members/m-0101010101010101?done=review"
        ));
        assert!(is_local_path("/"));
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "/a\nSet-Cookie: x=1",
            "/中文",
            "",
            &format!("/{}", "a".repeat(600)),
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }
}
