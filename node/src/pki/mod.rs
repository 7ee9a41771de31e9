//! The county's small PKI: a certificate authority per county, node certificates per office,
//! and loading a node's own identity at start-up.
//!
//! Every Amphi node (one per government office) holds a certificate issued by the county CA.
//! The certificate names the office it belongs to in two ways:
//!
//! - a URI SAN `urn:amphi:org:<org path>` ([`ORG_URI_PREFIX`]), the authoritative name that
//!   [`org_of_cert`] reads, and
//! - a DNS SAN [`OrgPath::dns_name`](amphi_protocol::OrgPath::dns_name) (`bayin.chagantolgay.hoboksar.amphi`), which peers dial
//!   as the TLS server name, so the ordinary webpki name check ties a connection to the office
//!   the dialer expected.
//!
//! The CA certificate carries a DNS name constraint for its own org's DNS name, so even a
//! certificate signed by the CA key outside `amphi ca issue` is refused by webpki when it names
//! an office outside the CA's subtree.
//!
//! Files are PEM. Private keys are created with mode 0600 from the first byte and all files are
//! written atomically (temporary file, fsync, rename), so a crash never leaves half a key.
//!
//! - [`ca_init`], [`ca_issue`], [`ca_revoke`]: the CA's operations ([`CaError`]);
//! - [`NodeIdentity`]: loading a node's certificate and key and checking them against the CA
//!   ([`IdentityError`]);
//! - [`org_of_cert`], [`org_of_node_cert`], [`spki_sha256`]: what a certificate says
//!   ([`CertError`]).

mod ca;
mod identity;
mod x509;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;

#[cfg(test)]
pub(crate) use ca::issue_with_validity;
pub use ca::{CaError, CaInfo, IssuedCert, MAX_REVOCATION_REASON, ca_init, ca_issue, ca_revoke};
pub use identity::{IdentityError, NodeIdentity};
pub(crate) use x509::parse_x509;
pub use x509::{CertError, org_of_cert, org_of_node_cert, spki_sha256};

/// The error of [`NodeIdentity::load`] under its name from before the PKI was split by
/// operation; [`crate::node`] still uses it. New code names [`IdentityError`].
pub type PkiError = IdentityError;

/// Prefix of the URI SAN that names a certificate's office: `urn:amphi:org:<org path>`.
pub const ORG_URI_PREFIX: &str = "urn:amphi:org:";

/// File name of the CA certificate, in a CA directory and in a node directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate written by [`ca_issue`].
pub const NODE_CERT_FILE: &str = "node.crt";
/// File name of a node private key written by [`ca_issue`].
pub const NODE_KEY_FILE: &str = "node.key";

/// Reading, writing or creating a file or directory of the PKI failed.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done: "read", "write", "create directory", ...
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

impl FileError {
    /// For `map_err`: the `io::Error` of doing `action` on `path`.
    fn on(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_owned();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}

/// A date for messages: RFC 3339, e.g. `2028-03-01T10:00:00Z`.
fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The crypto provider used everywhere in Amphi: ring, passed explicitly (never the process
/// default, so a second provider in the dependency graph can not change behaviour).
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
