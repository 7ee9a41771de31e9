//! The operator CLI's side of the admin API: finding a node's address and token from its
//! config, calling it with clear messages when the node is down, and printing tables.

use serde_json::Value;

use crate::config::Config;
use crate::node::TOKEN_FILE;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The token file could not be read.
    #[error("cannot read the admin token {path}: {source} (has the node been started once?)")]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node did not answer.
    #[error(
        "the node at http://{addr} is not answering ({source}); start it with `amphi run --config …` and try again"
    )]
    Down {
        /// Its admin address.
        addr: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The node answered with an error.
    #[error("the node refused: {0}")]
    Refused(String),
}

fn base(config: &Config) -> String {
    let mut addr = config.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    addr.to_string()
}

/// GETs `path` on the node of `config`, with its token.
pub async fn get(config: &Config, path: &str) -> Result<Value, AdminError> {
    call(config, reqwest::Method::GET, path, None).await
}

/// POSTs `body` to `path` on the node of `config`, with its token.
pub async fn post(config: &Config, path: &str, body: &Value) -> Result<Value, AdminError> {
    call(config, reqwest::Method::POST, path, Some(body)).await
}

async fn call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, AdminError> {
    let resp = send(config, method, path, |req| match body {
        Some(b) => req.json(b),
        None => req,
    })
    .await?;
    Ok(resp.json().await.unwrap_or(Value::Null))
}

/// GETs `path` and returns the body's bytes (a file the node made, e.g. a bundle).
pub async fn download(config: &Config, path: &str) -> Result<Vec<u8>, AdminError> {
    let resp = send(config, reqwest::Method::GET, path, |req| req).await?;
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| AdminError::Refused(format!("the download broke off: {e}")))
}

/// POSTs `bytes` (a file, e.g. a bundle) to `path`; returns the JSON answer.
pub async fn upload(config: &Config, path: &str, bytes: Vec<u8>) -> Result<Value, AdminError> {
    let resp = send(config, reqwest::Method::POST, path, |req| {
        req.header("content-type", "application/octet-stream")
            .body(bytes)
    })
    .await?;
    Ok(resp.json().await.unwrap_or(Value::Null))
}

/// Sends a request with the node's token; a non-2xx answer becomes [`AdminError::Refused`]
/// with the API's message.
async fn send(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, AdminError> {
    let token_path = config.data_dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path).map_err(|source| AdminError::Token {
        path: token_path,
        source,
    })?;
    let addr = base(config);
    let req = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token.trim());
    let resp = body(req).send().await.map_err(|source| AdminError::Down {
        addr: addr.clone(),
        source,
    })?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    Err(AdminError::Refused(
        value["error"]["message"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned(),
    ))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// `amphi status`: the node and its peers as a readable table.
pub fn status_table(s: &Value) -> String {
    let mut out = format!(
        "{}  node {}  members {}  orgs {}  conflicts {}  quarantine {}  store {} KiB  certificate until {}\n\n",
        text(&s["org"]),
        text(&s["node_id"]),
        s["docs"]["members"],
        s["docs"]["orgs"],
        s["conflicts"],
        s["quarantine"],
        s["store_bytes"].as_u64().unwrap_or(0) / 1024,
        text(&s["cert_expires"]),
    );
    out.push_str(&format!(
        "{:<36} {:<12} {:>8} {:>8}  {:<20} {}\n",
        "peer", "state", "pending", "rtt ms", "last sync", "refused / last error"
    ));
    for p in s["peers"].as_array().into_iter().flatten() {
        let refused: Vec<String> = p["refused"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let note = if refused.is_empty() {
            p["last_error"].as_str().unwrap_or("").to_owned()
        } else {
            refused.join(" ")
        };
        let last = p["last_sync_at"]
            .as_str()
            .map_or("never", |t| t.get(..19).unwrap_or(t));
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".into(), |r| format!("{r:.1}"));
        out.push_str(&format!(
            "{:<36} {:<12} {:>8} {:>8}  {:<20} {}\n",
            text(&p["org"]),
            text(&p["state"]),
            p["docs_pending"],
            rtt,
            last,
            note
        ));
    }
    out
}

/// `amphi fleet`: every office below this one, with its last report's age.
pub fn fleet_table(f: &Value) -> String {
    let mut out = format!(
        "{:<36} {:>8} {:<6} {:>8} {:>8}  {}\n",
        "office", "age s", "stale", "members", "pending", "peers"
    );
    for o in f["offices"].as_array().into_iter().flatten() {
        let r = &o["report"];
        let peers: Vec<String> = r["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}:{}",
                    text(&p["org"]).rsplit('/').next().unwrap_or("?"),
                    text(&p["state"])
                )
            })
            .collect();
        let number = |v: &Value| v.as_u64().map_or("-".into(), |n| n.to_string());
        out.push_str(&format!(
            "{:<36} {:>8} {:<6} {:>8} {:>8}  {}\n",
            text(&o["org"]),
            o["age_seconds"]
                .as_i64()
                .map_or("never".into(), |a| a.to_string()),
            if o["stale"] == true { "STALE" } else { "ok" },
            number(&r["members"]),
            number(&r["pending"]),
            peers.join(" ")
        ));
    }
    out
}
