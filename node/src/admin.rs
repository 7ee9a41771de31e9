//! The operator CLI's side of the admin API: finding a node's address and token from its
//! config, and calling it with clear messages when the node is down.

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

/// POSTs `body` to `path` on the node of `config`, with its token.
pub async fn post(config: &Config, path: &str, body: &Value) -> Result<Value, AdminError> {
    let token_path = config.data_dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path).map_err(|source| AdminError::Token {
        path: token_path,
        source,
    })?;
    let addr = base(config);
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token.trim())
        .json(body)
        .send()
        .await
        .map_err(|source| AdminError::Down {
            addr: addr.clone(),
            source,
        })?;
    let ok = resp.status().is_success();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if ok {
        Ok(value)
    } else {
        Err(AdminError::Refused(
            value["error"]["message"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
        ))
    }
}
