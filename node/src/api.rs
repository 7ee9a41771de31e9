//! The admin HTTP API (contract.md): JSON under `/api/v1`, bearer-token auth, bounded and
//! validated bodies, and one error shape: `{"error": {"code", "message", "field"?}}`.

use amphi_protocol::OrgPath;
use amphi_protocol::attest::Revocation;
use amphi_protocol::casefile::{
    ActivityInput, IdentityPatch, NewMember, ResidenceInput, ReviewInput,
};
use amphi_protocol::transfer::Decision;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::members::{self, OpError};
use crate::repo::WriteError;
use crate::state::ApiState;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// An API error: HTTP status, stable code, message, and the field when one is to blame.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    fn bad_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            error["field"] = Value::String(f);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Invalid(f) => ApiError::bad_field(f.field.clone(), f.to_string()),
            OpError::Write(w) => w.into(),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let message = e.to_string();
        match e {
            WriteError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            WriteError::Exists(_) | WriteError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            WriteError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            WriteError::Store(_) | WriteError::Doc(_) => {
                tracing::error!("internal error: {message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

/// A JSON body, bounded by [`MAX_BODY`] (413) and validated into `T` (400 naming the field).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body exceeds {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_field("body", e.body_text())
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.inner().to_string();
                let field = if path != "." {
                    path
                } else {
                    // "missing field `x`", "unknown field `x`": name x.
                    inner.split('`').nth(1).unwrap_or("body").to_owned()
                };
                ApiError::bad_field(field, format!("invalid request body: {inner}"))
            })
    }
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), state.token.as_bytes()));
    if !ok {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token: send Authorization: Bearer <DATA_DIR/admin.token>",
        )
        .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router: `/healthz` and `/metrics` open, `/api/v1/*` behind the token.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/status", get(status))
        .route("/members", post(create_member).get(list_members))
        .route("/members/{id}", get(get_member).patch(patch_member))
        .route(
            "/members/{id}/residence",
            axum::routing::put(put_residence).delete(delete_residence),
        )
        .route("/members/{id}/report-in", post(report_in))
        .route("/members/{id}/activities", post(add_activity))
        .route("/members/{id}/activities/{aid}/comments", post(add_comment))
        .route("/members/{id}/reviews", post(add_review))
        .route("/members/{id}/contact", axum::routing::put(put_contact))
        .route("/orgs/{*org}", get(org_get).patch(org_patch))
        .route("/transfers", post(open_transfer).get(list_transfers))
        .route("/transfers/{id}/{step}", post(decide_transfer))
        .route("/conflicts/{id}/ack", post(ack_conflict))
        .route("/fleet", get(fleet))
        .route("/quarantine", get(quarantine))
        .route("/certificates", get(certificates))
        .route(
            "/revocations",
            get(list_revocations).post(import_revocation),
        )
        .route("/conflicts", get(conflicts))
        .route("/verify", get(verify_store))
        .route("/backup", post(back_up))
        .route(
            "/bundle",
            get(export_bundle)
                .post(import_bundle)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_UPLOAD)),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API path")
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .merge(crate::dashboard::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Node-wide numbers shared by `status` and `/metrics`, all from in-memory counters (the
/// store keeps document counts and quarantine totals as it writes): `/metrics` needs no
/// token, so a scrape must not cost a scan of the store.
struct Snapshot {
    docs: std::collections::BTreeMap<String, u64>,
    leaving: u64,
    conflicts: u64,
    quarantine: std::collections::BTreeMap<String, u64>,
    store_bytes: u64,
}

fn snapshot(s: &ApiState) -> Snapshot {
    let counts = s.repo.store().doc_counts();
    let mut docs = std::collections::BTreeMap::new();
    for kind in ["member", "org", "status", "revocations"] {
        docs.insert(kind.to_owned(), 0);
    }
    docs.extend(counts.by_kind);
    Snapshot {
        docs,
        leaving: counts.leaving,
        conflicts: counts.conflicts,
        quarantine: s.repo.store().quarantine_totals(),
        store_bytes: std::fs::metadata(&*s.store_path)
            .map(|m| m.len())
            .unwrap_or(0),
    }
}

async fn status(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let snap = snapshot(&s);
    let refused = s.status.refused();
    Ok(Json(json!({
        "org": s.repo.me(),
        "node_id": &*s.node_id,
        "peers": s.status.peers(),
        "docs": {
            "members": snap.docs["member"],
            "orgs": snap.docs["org"],
            "status_reports": snap.docs["status"],
            "revocation_lists": snap.docs["revocations"],
            "leaving": snap.leaving,
        },
        "store_bytes": snap.store_bytes,
        "conflicts": snap.conflicts,
        "refused": refused,
        "refused_total": refused.values().sum::<u64>(),
        "quarantine": snap.quarantine.values().sum::<u64>(),
        "quarantine_by_reason": snap.quarantine,
        "refused_connections": s.status.refused_connections(),
        "last_refused": s.status.last_refused(),
        "panics": crate::panics::count(),
        "revoked_certificates": s.repo.trust().revocations().len(),
        "cert_expires": &*s.cert_expires,
    })))
}

async fn create_member(
    State(s): State<ApiState>,
    JsonBody(m): JsonBody<NewMember>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(members::create(&s.repo, &m)?)))
}

#[derive(Deserialize)]
struct ListQuery {
    org: Option<String>,
    two_dwelling: Option<bool>,
    no_contact_days: Option<u32>,
}

async fn list_members(
    State(s): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let org = q
        .org
        .as_deref()
        .map(|o| OrgPath::parse(o).map_err(|e| ApiError::bad_field("org", e.to_string())))
        .transpose()?;
    let list = match q.no_contact_days {
        Some(days) => members::without_contact(&s.repo, org.as_ref(), days)?,
        None => members::list(&s.repo, org.as_ref(), q.two_dwelling.unwrap_or(false))?,
    };
    Ok(Json(json!({ "members": list })))
}

async fn get_member(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::get(&s.repo, &id)?))
}

async fn patch_member(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(p): JsonBody<IdentityPatch>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::patch(&s.repo, &id, &p)?))
}

async fn put_residence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(r): JsonBody<ResidenceInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::set_residence(&s.repo, &id, &r)?))
}

async fn delete_residence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::end_residence(&s.repo, &id)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReportIn {
    date: Option<String>,
}

async fn report_in(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // The body is optional: `{}` or nothing records today.
    let r: ReportIn = if body.iter().all(u8::is_ascii_whitespace) {
        ReportIn::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_field("date", e.to_string()))?
    };
    Ok((
        StatusCode::CREATED,
        Json(members::report_in(&s.repo, &id, r.date.as_deref())?),
    ))
}

async fn add_activity(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(a): JsonBody<ActivityInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(members::add_activity(&s.repo, &id, &a)?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentInput {
    text: String,
}

async fn add_comment(
    State(s): State<ApiState>,
    Path((id, aid)): Path<(String, String)>,
    JsonBody(c): JsonBody<CommentInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(members::comment(&s.repo, &id, &aid, &c.text)?),
    ))
}

async fn add_review(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(r): JsonBody<ReviewInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(members::add_review(&s.repo, &id, &r)?),
    ))
}

async fn org_get(
    State(s): State<ApiState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    match rest.strip_suffix("/roster") {
        Some(org) => Ok(Json(members::roster_of(&s.repo, &parse_org(org)?)?).into_response()),
        None => Ok(Json(members::profile(&s.repo, &parse_org(&rest)?)?).into_response()),
    }
}

async fn org_patch(
    State(s): State<ApiState>,
    Path(org): Path<String>,
    JsonBody(p): JsonBody<members::ProfileInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::patch_profile(
        &s.repo,
        &parse_org(&org)?,
        &p,
    )?))
}

fn parse_org(s: &str) -> Result<OrgPath, ApiError> {
    OrgPath::parse(s).map_err(|e| ApiError::bad_field("org", e.to_string()))
}

async fn put_contact(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(c): JsonBody<members::ContactInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(members::contact(&s.repo, &id, &c)?))
}

async fn open_transfer(
    State(s): State<ApiState>,
    JsonBody(t): JsonBody<members::TransferInput>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(members::open_transfer(&s.repo, &t)?),
    ))
}

#[derive(Deserialize)]
struct OrgQuery {
    org: Option<String>,
}

async fn list_transfers(
    State(s): State<ApiState>,
    Query(q): Query<OrgQuery>,
) -> Result<Json<Value>, ApiError> {
    let org = q.org.as_deref().map(parse_org).transpose()?;
    Ok(Json(
        json!({ "transfers": members::list_transfers(&s.repo, org.as_ref())? }),
    ))
}

async fn decide_transfer(
    State(s): State<ApiState>,
    Path((id, step)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let decision = match step.as_str() {
        "accept" => Decision::Accept,
        "reject" => Decision::Reject,
        "cancel" => Decision::Cancel,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "use …/accept, …/reject or …/cancel",
            ));
        }
    };
    Ok(Json(members::decide_transfer(&s.repo, &id, decision)?))
}

async fn ack_conflict(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    members::acknowledge(&s.repo, &id)?;
    Ok(Json(json!({ "acknowledged": id })))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

/// Records listed by `GET /api/v1/quarantine` unless `?limit=` says otherwise.
const QUARANTINE_LIST: usize = 1000;

async fn quarantine(
    State(s): State<ApiState>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(QUARANTINE_LIST);
    let mut records = s
        .repo
        .store()
        .quarantined(limit)
        .map_err(WriteError::from)?;
    for r in &mut records {
        r.change_bytes = None; // evidence stays in the store; the list stays readable
        r.attestation = None;
        if let Some(e) = &mut r.evidence {
            e.change_bytes = None;
            e.attestation = None;
        }
    }
    let by_reason = s.repo.store().quarantine_totals();
    Ok(Json(json!({
        "total": by_reason.values().sum::<u64>(),
        "by_reason": by_reason,
        "quarantine": records,
    })))
}

async fn certificates(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let trust = s.repo.trust();
    let mut known = Vec::new();
    for der in s.repo.store().certificates().map_err(WriteError::from)? {
        let id = crate::trust::cert_id(&der);
        known.push(json!({
            "cert": hex::encode(id),
            "org": trust.org_of(&id),
            "revoked": trust.revoked_at(&id).is_some(),
        }));
    }
    Ok(Json(json!({ "certificates": known })))
}

/// The query of `GET /api/v1/verify`.
#[derive(serde::Deserialize)]
struct VerifyQuery {
    /// `true`: also list every document held, with its scope and heads.
    #[serde(default)]
    inventory: bool,
}

/// `GET /api/v1/verify[?inventory=true]`: [`crate::backup::verify`] of the running node's
/// store (a full read, on a blocking thread; changes nothing).
async fn verify_store(
    State(s): State<ApiState>,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.repo.clone();
    let inventory = crate::backup::Inventory::listed(q.inventory);
    let found = tokio::task::spawn_blocking(move || crate::backup::verify(&repo, inventory))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(WriteError::from)?;
    Ok(Json(json!(found)))
}

/// Where `POST /api/v1/backup` writes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupTo {
    /// An absolute path on the node's machine that does not exist yet.
    path: String,
}

/// `POST /api/v1/backup`: a consistent copy of the running node's store written to a new
/// file on the node's machine (what `amphi backup` asks for while the node runs).
async fn back_up(
    State(s): State<ApiState>,
    JsonBody(to): JsonBody<BackupTo>,
) -> Result<Json<Value>, ApiError> {
    let out = std::path::PathBuf::from(&to.path);
    if !out.is_absolute() {
        return Err(ApiError::bad_field("path", "must be an absolute path"));
    }
    if out.exists() {
        return Err(ApiError::bad_field(
            "path",
            "already exists: a backup never overwrites a file",
        ));
    }
    let repo = s.repo.clone();
    let target = out.clone();
    let documents = tokio::task::spawn_blocking(move || repo.store().back_up_to(&target))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::bad_field("path", e.to_string()))?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok(Json(
        json!({"path": to.path, "documents": documents, "bytes": bytes}),
    ))
}

/// Largest bundle `POST /api/v1/bundle` takes.
pub const MAX_BUNDLE_UPLOAD: usize = 256 * 1024 * 1024;

/// Which bundle `GET /api/v1/bundle` makes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BundleFor {
    /// The office it is for.
    #[serde(rename = "for")]
    to: String,
    /// Everything it may hold, not only what it lacks by the last sync.
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/bundle?for=ORG[&all=true]`: a signed bundle for a neighbour office, as a
/// file download.
pub(crate) async fn export_bundle(
    State(s): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<BundleFor>,
) -> Result<Response, ApiError> {
    let to = amphi_protocol::OrgPath::parse(&q.to)
        .map_err(|e| ApiError::bad_field("for", e.to_string()))?;
    let (repo, peers, target) = (s.repo.clone(), s.peers.clone(), to.clone());
    let made =
        tokio::task::spawn_blocking(move || crate::bundle::export(&repo, &target, &peers, q.all))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| match e {
                crate::bundle::ExportError::NotNeighbour { .. } => {
                    ApiError::bad_field("for", e.to_string())
                }
                crate::bundle::ExportError::Store(w) => WriteError::from(w).into(),
            })?;
    let name = format!(
        "amphi-{}-for-{}-{}.bundle",
        s.repo.me().as_str().replace('/', "_"),
        to.as_str().replace('/', "_"),
        amphi_protocol::stamp::rfc3339(crate::repo::now_ms())
            .get(..10)
            .unwrap_or("today")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                header::HeaderName::from_static("x-amphi-documents"),
                made.documents.to_string(),
            ),
            (
                header::HeaderName::from_static("x-amphi-changes"),
                made.changes.to_string(),
            ),
        ],
        made.bytes,
    )
        .into_response())
}

/// `POST /api/v1/bundle` with a bundle file as the body: checked whole, then every change
/// through the gate; answers what was applied and refused (400 if refused whole).
pub(crate) async fn import_bundle(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (repo, peers) = (s.repo.clone(), s.peers.clone());
    let done = tokio::task::spawn_blocking(move || crate::bundle::import(&repo, &peers, &body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| match e {
            crate::bundle::ImportError::Store(w) => WriteError::from(w).into(),
            refused => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bundle_refused",
                refused.to_string(),
            ),
        })?;
    Ok(Json(json!(done)))
}

async fn list_revocations(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "revocations": s.repo.revocations().map_err(WriteError::from)? }),
    ))
}

async fn import_revocation(
    State(s): State<ApiState>,
    JsonBody(r): JsonBody<Revocation>,
) -> Result<impl IntoResponse, ApiError> {
    s.repo.import_revocation(&r).map_err(|e| match e {
        WriteError::Forbidden(refusal) => ApiError::bad_field("signature", refusal.to_string()),
        other => other.into(),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "revoked": r.org, "cert": r.cert, "revoked_at": r.revoked_at })),
    ))
}

async fn fleet(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let offices = crate::fleet::fleet(&s.repo, s.fleet_stale_after)?;
    Ok(Json(
        json!({ "org": s.repo.me(), "stale_after_seconds": s.fleet_stale_after.as_secs(), "offices": offices }),
    ))
}

async fn conflicts(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "conflicts": members::conflicts(&s.repo)? })))
}

/// Appends one metric family in Prometheus text format.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        out.push_str(&format!("{name}{labels} {value}\n"));
    }
}

fn one(value: impl ToString) -> Vec<(String, String)> {
    vec![(String::new(), value.to_string())]
}

fn labelled(label: &str, values: std::collections::BTreeMap<String, u64>) -> Vec<(String, String)> {
    values
        .into_iter()
        .map(|(k, n)| (format!("{{{label}=\"{k}\"}}"), n.to_string()))
        .collect()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let peers = s.status.peers();
    let counters = s.status.counters();
    let snap = snapshot(&s);
    let connected = peers
        .iter()
        .filter(|p| p.state == crate::status::PeerState::Connected)
        .count();
    let sum = |f: fn(&crate::status::PeerStatus) -> u64| peers.iter().map(f).sum::<u64>();
    let mut out = String::new();
    family(
        &mut out,
        "amphi_peers_connected",
        "gauge",
        "Peers with a live sync session.",
        &one(connected),
    );
    family(
        &mut out,
        "amphi_peers_configured",
        "gauge",
        "Peers known (dialed or accepted).",
        &one(peers.len()),
    );
    let by_kind: Vec<(String, String)> = snap
        .docs
        .iter()
        .map(|(k, n)| (format!("{{kind=\"{k}\"}}"), n.to_string()))
        .collect();
    family(
        &mut out,
        "amphi_documents",
        "gauge",
        "Documents held, by kind.",
        &by_kind,
    );
    let dirs = |a: u64, b: u64| {
        vec![
            ("{direction=\"in\"}".to_owned(), a.to_string()),
            ("{direction=\"out\"}".to_owned(), b.to_string()),
        ]
    };
    family(
        &mut out,
        "amphi_sync_messages_total",
        "counter",
        "Sync messages exchanged with peers.",
        &dirs(sum(|p| p.messages_in), sum(|p| p.messages_out)),
    );
    family(
        &mut out,
        "amphi_sync_bytes_total",
        "counter",
        "Bytes exchanged with peers.",
        &dirs(sum(|p| p.bytes_in), sum(|p| p.bytes_out)),
    );
    family(
        &mut out,
        "amphi_changes_applied_total",
        "counter",
        "Changes from peers applied to the store.",
        &one(counters.changes_applied),
    );
    let refused: Vec<(String, String)> = s
        .status
        .refused()
        .into_iter()
        .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string()))
        .collect();
    family(
        &mut out,
        "amphi_changes_refused_total",
        "counter",
        "Incoming changes refused, by reason.",
        &refused,
    );
    let mut buckets: Vec<(String, String)> = crate::status::ROUND_BUCKETS
        .iter()
        .zip(counters.round_buckets)
        .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
        .collect();
    buckets.push(("_bucket{le=\"+Inf\"}".into(), counters.rounds.to_string()));
    buckets.push(("_sum".into(), counters.round_seconds.to_string()));
    buckets.push(("_count".into(), counters.rounds.to_string()));
    family(
        &mut out,
        "amphi_sync_round_seconds",
        "histogram",
        "Time to judge, store and answer one incoming sync message.",
        &buckets,
    );
    family(
        &mut out,
        "amphi_store_bytes",
        "gauge",
        "Size of the store file.",
        &one(snap.store_bytes),
    );
    family(
        &mut out,
        "amphi_quarantine_changes",
        "gauge",
        "Refused changes quarantined (distinct changes; repeats bump a record's count).",
        &one(snap.quarantine.values().sum::<u64>()),
    );
    family(
        &mut out,
        "amphi_connections_refused_total",
        "counter",
        "Connections refused, by reason (not_neighbour, busy, revoked, bad_certificate, handshake).",
        &labelled("reason", s.status.refused_connections()),
    );
    family(
        &mut out,
        "amphi_panics_total",
        "counter",
        "Panics caught in this process (the task that panicked ended or was restarted).",
        &one(crate::panics::count()),
    );
    family(
        &mut out,
        "amphi_conflicts",
        "gauge",
        "Conflicts not yet acknowledged.",
        &one(snap.conflicts),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
