//! Amphi's sans-IO core.
//!
//! Everything here is pure: no tokio, no sockets, no disk, no clock. Time and randomness
//! come in as arguments; the node crate owns IO and drives these types.
//!
//! - [`org`]: org paths, the names of offices.
//! - [`ids`]: document and entry ids.
//! - [`casefile`] (its keys in [`layout`]), [`roster`]: the two document layouts;
//!   [`transfer`] and [`affiliation`]: transfers and residence as events, and the member's
//!   home derived from them.
//! - [`visibility`], [`authority`]: who sees what, who may write what (contract.md);
//!   [`refusal`]: why a change was refused, whichever check refused it.
//! - [`attest`]: signed authorship and revocation records; [`stamp`]: change times.
//! - [`gate`]: every change reaches a document only through here — [`syncmsg`] reads a
//!   peer's message, [`history`] checks a change's place in history, [`judge`] checks its
//!   ops against the authority table, [`contain`] catches the CRDT engine's panics.
//! - [`wire`]: the framed wire format between nodes.
//! - [`docsync`]: syncing one document with one peer behind the gate.
//! - [`inventory`]: which shared documents differ (the reconciliation seam).
//! - [`session`]: one sync session with one peer, as a state machine.

pub mod affiliation;
pub mod attest;
pub mod authority;
pub mod bundle;
pub mod casefile;
pub mod columns;
pub mod contain;
pub mod docsync;
pub mod gate;
pub mod history;
pub mod ids;
pub mod inflate;
pub mod inventory;
pub mod judge;
pub mod layout;
pub mod office;
pub mod org;
pub mod pending;
pub mod reader;
pub mod reconcile;
pub mod refusal;
pub mod roster;
pub mod session;
pub mod stamp;
pub mod syncmsg;
pub mod transfer;
pub mod validate;
pub mod visibility;
pub mod vouch;
pub mod whole;
pub mod wire;

pub use ids::{DocId, DocKind};
pub use org::{OrgPath, OrgPathError};
