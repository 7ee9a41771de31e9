//! A node's identity: its certificate, its private key and the county CA certificate, loaded
//! from the config's `cert`, `key` and `ca` paths at start-up and checked against each other
//! ([`NodeIdentity::load`]).
//!
//! The checks on certificate and key files live here too, because loading a CA directory
//! (`amphi ca issue`, `amphi ca revoke`) reads the same kind of files and refuses them for the
//! same reasons, with the same messages.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amphi_protocol::OrgPath;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::x509::{CertError, org_of_node_cert, parse_x509};
use super::{FileError, crypto_provider, fmt_time};

/// What is wrong with a certificate or key file: a node's identity, or the CA directory it
/// was issued from. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading a file failed.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A file has no PEM block of the expected kind.
    #[error("{} contains no PEM {what}; expected a file written by `amphi ca`", path.display())]
    NoPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// The CA certificate file holds more than one certificate.
    #[error(
        "{} contains {count} certificates; expected exactly one CA certificate",
        path.display()
    )]
    SeveralCaCerts {
        /// The file.
        path: PathBuf,
        /// How many certificates it holds.
        count: usize,
    },
    /// What is wrong with a certificate, with the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The certificate file.
        path: PathBuf,
        /// What was wrong with it.
        error: CertError,
    },
    /// A private key could not be parsed or used.
    #[error("{} is not a usable private key: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A private key does not belong to the certificate it is used with.
    #[error(
        "the private key {} does not belong to the certificate {}; use the key file that was \
         written together with that certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The file given as the CA certificate is not a CA certificate.
    #[error(
        "{} is not a CA certificate; check that the `ca` path points at ca.crt, not at a node \
         certificate",
        path.display()
    )]
    NotCa {
        /// The file.
        path: PathBuf,
    },
    /// A certificate has expired.
    #[error(
        "{} expired on {}; issue a new certificate with `amphi ca issue`",
        path.display(),
        fmt_time(*.not_after)
    )]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// A certificate is not valid yet.
    #[error(
        "{} is not valid before {}; check this computer's clock",
        path.display(),
        fmt_time(*.not_before)
    )]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// A certificate was not issued by the CA it is checked against.
    #[error(
        "{} is not a valid certificate of the CA in {}: {reason}; use the ca.crt of the county \
         CA that issued this certificate, or issue a new one from this CA",
        cert.display(),
        ca.display()
    )]
    NotFromCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// What verification said.
        reason: String,
    },
    /// Setting up certificate verification failed (should not happen with a valid CA file).
    #[error("could not set up certificate verification with {}: {reason}", ca.display())]
    Verifier {
        /// The CA certificate file.
        ca: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

impl IdentityError {
    /// Names the file a [`CertError`] was found in.
    pub(super) fn in_file(path: &Path) -> impl FnOnce(CertError) -> IdentityError {
        let path = path.to_owned();
        move |error| IdentityError::InFile { path, error }
    }
}

/// A node's own identity, loaded at start-up from the config's `cert`, `key` and `ca` paths.
///
/// Cloning is cheap-ish: the certificates are copied, the private key is shared through an
/// [`Arc`] (rustls takes keys by value, so callers use `key_der.clone_key()`).
#[derive(Clone)]
pub struct NodeIdentity {
    /// The office this node is, from its certificate's URI SAN.
    pub org: OrgPath,
    /// The node's certificate (DER).
    pub cert_der: CertificateDer<'static>,
    /// The node's private key (DER, shared; `clone_key()` it to hand it to rustls).
    pub key_der: Arc<PrivateKeyDer<'static>>,
    /// The county CA certificate (DER): the only trust anchor for peers.
    pub ca_der: CertificateDer<'static>,
    /// When the node certificate expires.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, computed at load.
    spki_hash: [u8; 32],
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("org", &self.org)
            .field("node_id", &self.node_id())
            .field("not_after", &self.not_after)
            .field("key_der", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads and checks a node's identity: the CA file holds exactly one CA certificate that has
    /// not expired; the node certificate is currently valid, names exactly one office (URI SAN)
    /// with the matching DNS SAN, and chains to the CA (signature, name constraints and both
    /// serverAuth and clientAuth usages checked by webpki with the ring provider); the private
    /// key parses and matches the certificate's public key.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let ca_der = read_ca_cert(ca, now)?.der;

        let cert_der = read_first_cert(cert)?;
        let x509 = parse_x509(&cert_der).map_err(IdentityError::in_file(cert))?;
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        if not_after < now {
            return Err(IdentityError::Expired {
                path: cert.to_owned(),
                not_after,
            });
        }
        if not_before > now {
            return Err(IdentityError::NotYetValid {
                path: cert.to_owned(),
                not_before,
            });
        }
        let org = org_of_node_cert(&cert_der).map_err(IdentityError::in_file(cert))?;
        verify_against_ca(&cert_der, &org, &ca_der, cert, ca)?;

        let key_pem = fs::read(key).map_err(FileError::on("read", key))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => IdentityError::NoPem {
                path: key.to_owned(),
                what: "private key",
            },
            other => IdentityError::BadKey {
                path: key.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let signing_key = crypto_provider()
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(|e| IdentityError::BadKey {
                path: key.to_owned(),
                reason: e.to_string(),
            })?;
        let key_spki = signing_key
            .public_key()
            .ok_or_else(|| IdentityError::BadKey {
                path: key.to_owned(),
                reason: "its public key can not be derived".to_owned(),
            })?;
        if key_spki.as_ref() != x509.public_key().raw {
            return Err(IdentityError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        let spki_hash = Sha256::digest(x509.public_key().raw).into();

        Ok(NodeIdentity {
            org,
            cert_der,
            key_der: Arc::new(key_der),
            ca_der,
            not_after,
            spki_hash,
        })
    }

    /// This node's automerge actor id: the first 16 bytes of SHA-256 over the certificate's
    /// SubjectPublicKeyInfo DER (stable across certificate renewals only if the key is kept;
    /// `amphi ca issue` makes a new key, hence a new actor).
    pub fn actor_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.spki_hash[..16]);
        id
    }

    /// A short id of this node for humans and logs: hex of the first 8 bytes of the same
    /// SHA-256 (16 hex digits).
    pub fn node_id(&self) -> String {
        hex::encode(&self.spki_hash[..8])
    }
}

/// [`NodeIdentity::load`] of a node directory as `amphi ca issue` writes it, for tests.
#[cfg(test)]
pub(super) fn load_node_dir(dir: &Path) -> Result<NodeIdentity, IdentityError> {
    use super::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
    NodeIdentity::load(
        &dir.join(NODE_CERT_FILE),
        &dir.join(NODE_KEY_FILE),
        &dir.join(CA_CERT_FILE),
    )
}

/// A CA certificate file that was read and checked: one CA certificate, not expired.
pub(super) struct CaCertFile {
    /// The file as read (PEM).
    pub pem: Vec<u8>,
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// When the CA certificate expires.
    pub not_after: OffsetDateTime,
}

/// Reads the CA certificate at `path`: exactly one certificate, a CA certificate, not expired
/// at `now`. Used for a node's `ca` file and for a CA directory's `ca.crt` alike.
pub(super) fn read_ca_cert(path: &Path, now: OffsetDateTime) -> Result<CaCertFile, IdentityError> {
    let pem = fs::read(path).map_err(FileError::on("read", path))?;
    let mut certs = certs_from_pem(&pem, path)?;
    if certs.len() > 1 {
        return Err(IdentityError::SeveralCaCerts {
            path: path.to_owned(),
            count: certs.len(),
        });
    }
    let der = certs.swap_remove(0);
    let x509 = parse_x509(&der).map_err(IdentityError::in_file(path))?;
    if !x509.is_ca() {
        return Err(IdentityError::NotCa {
            path: path.to_owned(),
        });
    }
    let not_after = x509.validity().not_after.to_datetime();
    if not_after < now {
        return Err(IdentityError::Expired {
            path: path.to_owned(),
            not_after,
        });
    }
    Ok(CaCertFile {
        pem,
        der,
        not_after,
    })
}

/// Reads the first certificate of the PEM file at `path` (a node certificate; a chain may
/// follow it).
pub(super) fn read_first_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    let pem = fs::read(path).map_err(FileError::on("read", path))?;
    let mut certs = certs_from_pem(&pem, path)?;
    Ok(certs.swap_remove(0))
}

/// Every certificate in `pem` (at least one), read from the file at `path`.
fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            IdentityError::in_file(path)(CertError::BadCert {
                reason: format!("bad PEM: {e}"),
            })
        })?;
    if certs.is_empty() {
        return Err(IdentityError::NoPem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Checks with webpki (ring) that `cert_der` chains to `ca_der` and is valid both as a server
/// certificate for `org.dns_name()` and as a client certificate.
fn verify_against_ca(
    cert_der: &CertificateDer<'static>,
    org: &OrgPath,
    ca_der: &CertificateDer<'static>,
    cert_path: &Path,
    ca_path: &Path,
) -> Result<(), IdentityError> {
    let provider = crypto_provider();
    let verifier_err = |reason: String| IdentityError::Verifier {
        ca: ca_path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| verifier_err(e.to_string()))?;
    let roots = Arc::new(roots);
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| verifier_err(e.to_string()))?;
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| verifier_err(e.to_string()))?;
    let name = ServerName::try_from(org.dns_name()).map_err(|e| verifier_err(e.to_string()))?;
    let now = UnixTime::now();
    let not_from_ca = |reason: String| IdentityError::NotFromCa {
        cert: cert_path.to_owned(),
        ca: ca_path.to_owned(),
        reason,
    };
    let refused = |e: rustls::Error| match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            not_from_ca("its signature does not verify with this CA's key".to_owned())
        }
        // webpki reports name constraint violations as an opaque "other" error.
        other if format!("{other:?}").contains("NameConstraintViolation") => {
            not_from_ca("it names an office outside the CA's subtree (name constraint)".to_owned())
        }
        other => not_from_ca(other.to_string()),
    };
    server
        .verify_server_cert(cert_der, &[], &name, &[], now)
        .map_err(refused)?;
    client
        .verify_client_cert(cert_der, &[], now)
        .map_err(refused)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue_with_validity;
    use crate::pki::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, ca_init, ca_issue};
    use time::Duration;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    #[test]
    fn load_refuses_another_ca_and_a_foreign_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (ca1, ca2) = (tmp.path().join("ca1"), tmp.path().join("ca2"));
        ca_init(&ca1, &org("hoboksar")).unwrap();
        ca_init(&ca2, &org("hoboksar")).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        ca_issue(&ca1, &org("hoboksar/a"), &a, 825).unwrap();
        ca_issue(&ca2, &org("hoboksar/b"), &b, 825).unwrap();

        // Cert from CA 1, trust anchor from CA 2 (same org name, different key).
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &a.join(NODE_KEY_FILE),
            &b.join(CA_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::NotFromCa { .. }), "{err}");

        // Cert of a with the key of b.
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &b.join(NODE_KEY_FILE),
            &a.join(CA_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");

        // Swapped arguments: a node certificate is not a CA.
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &a.join(NODE_KEY_FILE),
            &a.join(NODE_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::NotCa { .. }), "{err}");

        // A missing file is named in the error.
        let missing = a.join("nope.crt");
        let err = NodeIdentity::load(&missing, &a.join(NODE_KEY_FILE), &a.join(CA_CERT_FILE))
            .unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");

        // A key file that is not PEM.
        fs::write(a.join("junk.key"), "not a key").unwrap();
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &a.join("junk.key"),
            &a.join(CA_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::NoPem { .. }), "{err}");
    }

    #[test]
    fn expired_and_future_certs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        ca_init(&ca, &org("hoboksar")).unwrap();
        let now = OffsetDateTime::now_utc();
        let old = tmp.path().join("old");
        issue_with_validity(
            &ca,
            &org("hoboksar/a"),
            &old,
            now - Duration::days(30),
            now - Duration::days(1),
        )
        .unwrap();
        let err = load_node_dir(&old).unwrap_err();
        assert!(matches!(err, IdentityError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("amphi ca issue"), "{err}");

        let future = tmp.path().join("future");
        issue_with_validity(
            &ca,
            &org("hoboksar/a"),
            &future,
            now + Duration::days(1),
            now + Duration::days(30),
        )
        .unwrap();
        let err = load_node_dir(&future).unwrap_err();
        assert!(matches!(err, IdentityError::NotYetValid { .. }), "{err}");
    }
}
