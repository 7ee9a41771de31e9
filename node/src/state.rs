//! What the admin HTTP API and the dashboard share: the node's documents, its sync status,
//! the admin token and the few facts about this node they show. [`crate::node`] builds one
//! [`ApiState`] when the node starts; axum hands a clone to every handler.

use std::sync::Arc;

use crate::repo::Repo;
use crate::status::Status;

/// What the API's and the dashboard's handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The documents.
    pub repo: Arc<Repo>,
    /// Sync status.
    pub status: Arc<Status>,
    /// The admin token.
    pub token: Arc<str>,
    /// This node's short id.
    pub node_id: Arc<str>,
    /// When this node's certificate expires (RFC 3339).
    pub cert_expires: Arc<str>,
    /// The store file (for its size).
    pub store_path: Arc<std::path::Path>,
    /// The orgs the config names as peers (neighbours for bundles, as for sessions).
    pub peers: Arc<[amphi_protocol::OrgPath]>,
    /// Fleet reports older than this are stale.
    pub fleet_stale_after: std::time::Duration,
}
