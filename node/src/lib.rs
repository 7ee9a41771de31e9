//! The Amphi node: one per office.
//!
//! - [`config`]: the TOML config of `amphi run`.
//! - [`pki`], [`tls`]: the county CA, node certificates, mutual TLS for QUIC.
//! - [`trust`]: signing this node's changes, verifying everyone's, revocations.
//! - [`store`]: the embedded crash-safe store.
//! - [`repo`]: documents on top of the store, every write through the gate.
//! - [`peer`], [`transport`]: QUIC connections to parent and children, one sync session each.
//! - [`status`]: what admins see of sync.
//! - [`api`]: the admin HTTP API.
//! - [`state`]: what the admin API and the dashboard share.
//! - [`dashboard`]: the admin dashboard at `GET /`.
//! - [`node`]: starting and stopping a whole node.
//! - [`panics`]: panics counted, tasks restarted, nothing poisoned.
//! - [`demo`]: a complete local county for trying Amphi.
//! - [`memory`]: freed memory goes back to the system.

pub mod admin;
pub mod api;
pub mod backup;
pub mod bundle;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod fleet;
pub mod members;
pub mod memory;
pub mod node;
pub mod panics;
pub mod peer;
pub mod pki;
pub mod repo;
pub mod state;
pub mod status;
pub mod store;
pub mod tls;
pub mod transport;
pub mod trust;
