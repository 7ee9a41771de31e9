//! The county's small PKI: a certificate authority per county, node certificates per office,
//! and loading a node's own identity at start-up.
//!
//! Every Amphi node (one per government office) holds a certificate issued by the county CA.
//! The certificate names the office it belongs to in two ways:
//!
//! - a URI SAN `urn:amphi:org:<org path>` ([`ORG_URI_PREFIX`]), the authoritative name that
//!   [`org_of_cert`] reads, and
//! - a DNS SAN [`OrgPath::dns_name`] (`bayin.chagantolgay.hoboksar.amphi`), which peers dial
//!   as the TLS server name, so the ordinary webpki name check ties a connection to the office
//!   the dialer expected.
//!
//! The CA certificate carries a DNS name constraint for its own org's DNS name, so even a
//! certificate signed by the CA key outside `amphi ca issue` is refused by webpki when it names
//! an office outside the CA's subtree.
//!
//! Files are PEM. Private keys are created with mode 0600 from the first byte and all files are
//! written atomically (temporary file, fsync, rename), so a crash never leaves half a key.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amphi_protocol::attest::Revocation;
use amphi_protocol::{OrgPath, OrgPathError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

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

/// Validity of a CA certificate: 20 years (7305 days, leap days included).
const CA_VALIDITY: Duration = Duration::days(7305);
/// How far back `not_before` is set, so offices whose clocks run a little behind still
/// accept a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// What went wrong creating a CA, issuing a certificate or loading a node identity.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading, writing or creating a file or directory failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", ...
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `ca init` found an existing CA and will not overwrite it.
    #[error(
        "{} already exists: refusing to overwrite an existing CA. Choose another --dir; replace \
         the CA only if you mean to, by deleting it first (every certificate it issued will stop \
         being trusted)",
        path.display()
    )]
    CaExists {
        /// The existing file.
        path: PathBuf,
    },
    /// `ca issue` was asked for an office outside the CA's subtree.
    #[error(
        "the CA at this directory is for {ca} and may only issue certificates for {ca} and the \
         offices below it, not for {requested}; use the CA of {requested}'s county"
    )]
    OutsideCa {
        /// The CA's org.
        ca: OrgPath,
        /// The org that was asked for.
        requested: OrgPath,
    },
    /// A certificate validity of zero days was asked for.
    #[error("a certificate must be valid for at least 1 day; pass --days 1 or more")]
    ZeroValidity,
    /// The requested validity ends after the CA certificate expires.
    #[error(
        "the certificate would be valid until {}, but the CA certificate expires on {}; \
         ask for fewer days or renew the CA first",
        fmt_time(*.not_after),
        fmt_time(*.ca_not_after)
    )]
    OutlivesCa {
        /// Requested end of validity.
        not_after: OffsetDateTime,
        /// End of the CA certificate's validity.
        ca_not_after: OffsetDateTime,
    },
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
    /// A certificate could not be parsed as X.509.
    #[error("certificate is not valid X.509 DER: {reason}")]
    BadCert {
        /// What the parser said.
        reason: String,
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
    /// A certificate has no `urn:amphi:org:` URI SAN.
    #[error(
        "the certificate names no office: it has no {ORG_URI_PREFIX}<org> URI SAN; use a \
         certificate issued by `amphi ca issue`"
    )]
    NoOrg,
    /// A certificate has more than one `urn:amphi:org:` URI SAN.
    #[error(
        "the certificate names {} offices ({}); a node certificate must name exactly one",
        found.len(),
        found.join(", ")
    )]
    MultipleOrgs {
        /// The org URIs found.
        found: Vec<String>,
    },
    /// The `urn:amphi:org:` URI SAN does not hold a valid org path.
    #[error("the certificate's org URI {uri:?} is not a valid org path: {source}")]
    BadOrg {
        /// The URI as found.
        uri: String,
        /// Why the path is invalid.
        source: OrgPathError,
    },
    /// The certificate's DNS SAN does not match the office its URI SAN names.
    #[error(
        "the certificate names office {org} but its DNS names are [{}], not {}; it was not \
         issued by `amphi ca issue`",
        dns_names.join(", "),
        org.dns_name()
    )]
    DnsMismatch {
        /// The org from the URI SAN.
        org: OrgPath,
        /// The DNS SANs found.
        dns_names: Vec<String>,
    },
    /// An error about a certificate, with the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The certificate file.
        path: PathBuf,
        /// What was wrong with it.
        error: Box<PkiError>,
    },
    /// Generating a key or signing a certificate failed.
    #[error("could not {action}: {source}")]
    Generate {
        /// What was being generated.
        action: &'static str,
        /// The underlying rcgen error.
        source: rcgen::Error,
    },
    /// Setting up certificate verification failed (should not happen with a valid CA file).
    #[error("could not set up certificate verification with {}: {reason}", ca.display())]
    Verifier {
        /// The CA certificate file.
        ca: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A revocation reason was empty, too long or not a single line of text ([`ca_revoke`]).
    #[error("the revocation reason {problem}; give a short single-line --reason")]
    BadReason {
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl PkiError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PkiError {
        let path = path.to_owned();
        move |source| PkiError::Io {
            action,
            path,
            source,
        }
    }

    fn in_file(path: &Path) -> impl FnOnce(PkiError) -> PkiError {
        let path = path.to_owned();
        move |error| PkiError::InFile {
            path,
            error: Box::new(error),
        }
    }

    fn generate(action: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
        move |source| PkiError::Generate { action, source }
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

/// What [`ca_init`] created.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// The org the CA issues for (it and the offices below it).
    pub org: OrgPath,
    /// When the CA certificate expires.
    pub not_after: OffsetDateTime,
}

/// What [`ca_issue`] created.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The office the certificate names.
    pub org: OrgPath,
    /// When the certificate expires.
    pub not_after: OffsetDateTime,
    /// Where the certificate was written (`NODEDIR/node.crt`).
    pub cert_path: PathBuf,
}

/// `amphi ca init --dir DIR --org ORG`: creates a county (or sub-tree) CA.
///
/// Writes `DIR/ca.crt` (PEM) and `DIR/ca.key` (PEM, mode 0600), creating `DIR` (mode 0700)
/// if needed. Refuses when `DIR/ca.key` or `DIR/ca.crt` already exists: a CA is never
/// overwritten. The CA certificate is self-signed, ECDSA P-256, `CA:true` without path length
/// limit, key usages keyCertSign and cRLSign, subject CN `Amphi CA <org>`, URI SAN
/// `urn:amphi:org:<org>`, a DNS name constraint permitting only `org.dns_name()` and below,
/// and is valid for 20 years from now.
pub fn ca_init(dir: &Path, org: &OrgPath) -> Result<CaInfo, PkiError> {
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    for path in [&key_path, &cert_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(PkiError::CaExists { path: path.clone() });
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(PkiError::io("create directory", dir))?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate("generate the CA key"))?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params.distinguished_name = common_name(&format!("Amphi CA {org}"));
    params.subject_alt_names = vec![org_uri_san(org)?];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(org.dns_name())],
        excluded_subtrees: Vec::new(),
    });
    let cert = params
        .self_signed(&key)
        .map_err(PkiError::generate("sign the CA certificate"))?;
    let not_after = parse_x509(cert.der())?.validity().not_after.to_datetime();

    // The key first, without clobbering: it is what makes a directory a CA.
    write_file(
        &key_path,
        key.serialize_pem().as_bytes(),
        0o600,
        Replace::Never,
    )?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, Replace::Never)?;
    Ok(CaInfo {
        org: org.clone(),
        not_after,
    })
}

/// `amphi ca issue --ca DIR --org ORG --out NODEDIR`: issues a node certificate.
///
/// Loads the CA from `ca_dir` (its org comes from the CA certificate's URI SAN) and refuses
/// an `org` that is neither the CA's org nor below it ([`PkiError::OutsideCa`]). Creates `out`
/// if needed and writes `out/node.crt` (PEM leaf), `out/node.key` (PEM, mode 0600) and
/// `out/ca.crt` (a copy of the CA certificate), replacing earlier files there (renewal).
/// The leaf has a fresh ECDSA P-256 key, CN = the org path, SANs `urn:amphi:org:<org>` and
/// DNS `org.dns_name()`, extended key usages serverAuth and clientAuth, a random serial, and
/// is valid for `days` days from now (the CLI's default is 825).
pub fn ca_issue(
    ca_dir: &Path,
    org: &OrgPath,
    out: &Path,
    days: u32,
) -> Result<IssuedCert, PkiError> {
    if days == 0 {
        return Err(PkiError::ZeroValidity);
    }
    let now = OffsetDateTime::now_utc();
    issue_with_validity(
        ca_dir,
        org,
        out,
        now - CLOCK_SKEW,
        now + Duration::days(i64::from(days)),
    )
}

/// A CA loaded from its directory.
struct LoadedCa {
    org: OrgPath,
    pem: Vec<u8>,
    der: CertificateDer<'static>,
    key: KeyPair,
    not_after: OffsetDateTime,
}

fn load_ca(ca_dir: &Path) -> Result<LoadedCa, PkiError> {
    let cert_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    let pem = fs::read(&cert_path).map_err(PkiError::io("read", &cert_path))?;
    let der = single_cert_from_pem(&pem, &cert_path)?;
    let x509 = parse_x509(&der).map_err(PkiError::in_file(&cert_path))?;
    if !x509.is_ca() {
        return Err(PkiError::NotCa { path: cert_path });
    }
    let org = org_of_cert(&der).map_err(PkiError::in_file(&cert_path))?;
    let not_after = x509.validity().not_after.to_datetime();
    if not_after < OffsetDateTime::now_utc() {
        return Err(PkiError::Expired {
            path: cert_path,
            not_after,
        });
    }
    let key_pem = fs::read_to_string(&key_path).map_err(PkiError::io("read", &key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
        return Err(PkiError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    Ok(LoadedCa {
        org,
        pem,
        der,
        key,
        not_after,
    })
}

/// [`ca_issue`] with an explicit validity window (tests use it to make expired certificates).
pub(crate) fn issue_with_validity(
    ca_dir: &Path,
    org: &OrgPath,
    out: &Path,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<IssuedCert, PkiError> {
    let ca = load_ca(ca_dir)?;
    if !ca.org.is_at_or_above(org) {
        return Err(PkiError::OutsideCa {
            ca: ca.org,
            requested: org.clone(),
        });
    }
    if not_after > ca.not_after {
        return Err(PkiError::OutlivesCa {
            not_after,
            ca_not_after: ca.not_after,
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca.der, &ca.key)
        .map_err(PkiError::generate("read the CA certificate"))?;
    let leaf = sign_leaf(&issuer, org, not_before, not_after)?;

    fs::create_dir_all(out).map_err(PkiError::io("create directory", out))?;
    let cert_path = out.join(NODE_CERT_FILE);
    write_file(
        &out.join(NODE_KEY_FILE),
        leaf.key_pem.as_bytes(),
        0o600,
        Replace::Allow,
    )?;
    write_file(&cert_path, leaf.cert_pem.as_bytes(), 0o644, Replace::Allow)?;
    write_file(&out.join(CA_CERT_FILE), &ca.pem, 0o644, Replace::Allow)?;
    Ok(IssuedCert {
        org: org.clone(),
        not_after: leaf.not_after,
        cert_path,
    })
}

/// A freshly signed leaf certificate and its key.
struct SignedLeaf {
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
}

/// Signs a node certificate for `org` with `issuer`. Does no policy check: callers check that
/// the CA may issue for `org`.
fn sign_leaf(
    issuer: &Issuer<'_, &KeyPair>,
    org: &OrgPath,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<SignedLeaf, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate("generate the node key"))?;
    let dns = rcgen::string::Ia5String::try_from(org.dns_name())
        .map_err(PkiError::generate("encode the DNS name"))?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.distinguished_name = common_name(org.as_str());
    params.subject_alt_names = vec![org_uri_san(org)?, SanType::DnsName(dns)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(PkiError::generate("sign the node certificate"))?;
    let not_after = parse_x509(cert.der())?.validity().not_after.to_datetime();
    Ok(SignedLeaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn org_uri_san(org: &OrgPath) -> Result<SanType, PkiError> {
    let uri = rcgen::string::Ia5String::try_from(format!("{ORG_URI_PREFIX}{org}"))
        .map_err(PkiError::generate("encode the org URI"))?;
    Ok(SanType::URI(uri))
}

/// A positive, non-zero 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Whether [`write_file`] may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Allow,
    Never,
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created
/// with `mode` (so a key is never readable by others, even briefly), fsynced, then renamed
/// over `path` (or hard-linked to it when `replace` is `Never`, which fails if `path` exists).
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: Replace) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(PkiError::Io {
            action: "write",
            path: tmp,
            source: e,
        });
    }
    let placed = match replace {
        Replace::Allow => fs::rename(&tmp, path),
        Replace::Never => {
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            linked
        }
    };
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(PkiError::CaExists {
                path: path.to_owned(),
            });
        }
        return Err(PkiError::Io {
            action: "write",
            path: path.to_owned(),
            source: e,
        });
    }
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PkiError::io("sync directory", dir))
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
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, PkiError> {
        let now = OffsetDateTime::now_utc();

        let ca_pem = fs::read(ca).map_err(PkiError::io("read", ca))?;
        let ca_der = single_cert_from_pem(&ca_pem, ca)?;
        let ca_x509 = parse_x509(&ca_der).map_err(PkiError::in_file(ca))?;
        if !ca_x509.is_ca() {
            return Err(PkiError::NotCa {
                path: ca.to_owned(),
            });
        }
        let ca_not_after = ca_x509.validity().not_after.to_datetime();
        if ca_not_after < now {
            return Err(PkiError::Expired {
                path: ca.to_owned(),
                not_after: ca_not_after,
            });
        }

        let cert_pem = fs::read(cert).map_err(PkiError::io("read", cert))?;
        let cert_der = first_cert_from_pem(&cert_pem, cert)?;
        let x509 = parse_x509(&cert_der).map_err(PkiError::in_file(cert))?;
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        if not_after < now {
            return Err(PkiError::Expired {
                path: cert.to_owned(),
                not_after,
            });
        }
        if not_before > now {
            return Err(PkiError::NotYetValid {
                path: cert.to_owned(),
                not_before,
            });
        }
        let org = org_of_node_cert(&cert_der).map_err(PkiError::in_file(cert))?;
        verify_against_ca(&cert_der, &org, &ca_der, cert, ca)?;

        let key_pem = fs::read(key).map_err(PkiError::io("read", key))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => PkiError::NoPem {
                path: key.to_owned(),
                what: "private key",
            },
            other => PkiError::BadKey {
                path: key.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let signing_key = crypto_provider()
            .key_provider
            .load_private_key(key_der.clone_key())
            .map_err(|e| PkiError::BadKey {
                path: key.to_owned(),
                reason: e.to_string(),
            })?;
        let key_spki = signing_key.public_key().ok_or_else(|| PkiError::BadKey {
            path: key.to_owned(),
            reason: "its public key can not be derived".to_owned(),
        })?;
        if key_spki.as_ref() != x509.public_key().raw {
            return Err(PkiError::KeyMismatch {
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

/// Checks with webpki (ring) that `cert_der` chains to `ca_der` and is valid both as a server
/// certificate for `org.dns_name()` and as a client certificate.
fn verify_against_ca(
    cert_der: &CertificateDer<'static>,
    org: &OrgPath,
    ca_der: &CertificateDer<'static>,
    cert_path: &Path,
    ca_path: &Path,
) -> Result<(), PkiError> {
    let provider = crypto_provider();
    let verifier_err = |reason: String| PkiError::Verifier {
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
    let refused = |e: rustls::Error| match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            PkiError::NotFromCa {
                cert: cert_path.to_owned(),
                ca: ca_path.to_owned(),
                reason: "its signature does not verify with this CA's key".to_owned(),
            }
        }
        // webpki reports name constraint violations as an opaque "other" error.
        other if format!("{other:?}").contains("NameConstraintViolation") => PkiError::NotFromCa {
            cert: cert_path.to_owned(),
            ca: ca_path.to_owned(),
            reason: "it names an office outside the CA's subtree (name constraint)".to_owned(),
        },
        other => PkiError::NotFromCa {
            cert: cert_path.to_owned(),
            ca: ca_path.to_owned(),
            reason: other.to_string(),
        },
    };
    server
        .verify_server_cert(cert_der, &[], &name, &[], now)
        .map_err(refused)?;
    client
        .verify_client_cert(cert_der, &[], now)
        .map_err(refused)?;
    Ok(())
}

pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::BadCert {
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(PkiError::BadCert {
            reason: e.to_string(),
        }),
    }
}

fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PkiError::in_file(path)(PkiError::BadCert {
                reason: format!("bad PEM: {e}"),
            })
        })?;
    if certs.is_empty() {
        return Err(PkiError::NoPem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn first_cert_from_pem(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let mut certs = certs_from_pem(pem, path)?;
    Ok(certs.swap_remove(0))
}

fn single_cert_from_pem(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let mut certs = certs_from_pem(pem, path)?;
    if certs.len() > 1 {
        return Err(PkiError::SeveralCaCerts {
            path: path.to_owned(),
            count: certs.len(),
        });
    }
    Ok(certs.swap_remove(0))
}

/// The org named in a certificate's URI SAN: exactly one `urn:amphi:org:` URI is required
/// ([`PkiError::NoOrg`] / [`PkiError::MultipleOrgs`] otherwise). Works for CA and node
/// certificates alike; does not verify the certificate.
pub fn org_of_cert(der: &[u8]) -> Result<OrgPath, PkiError> {
    let x509 = parse_x509(der)?;
    let mut uris = Vec::new();
    for name in general_names(&x509)? {
        if let GeneralName::URI(uri) = name
            && uri.starts_with(ORG_URI_PREFIX)
        {
            uris.push(uri.to_string());
        }
    }
    match uris.as_slice() {
        [] => Err(PkiError::NoOrg),
        [uri] => OrgPath::parse(&uri[ORG_URI_PREFIX.len()..]).map_err(|source| PkiError::BadOrg {
            uri: uri.clone(),
            source,
        }),
        _ => Err(PkiError::MultipleOrgs { found: uris }),
    }
}

/// The org of a node certificate: [`org_of_cert`], plus the check that the certificate's DNS
/// SANs include `org.dns_name()` ([`PkiError::DnsMismatch`] otherwise). Because webpki
/// enforces the CA's DNS name constraint on the DNS SAN, this ties the URI-named office to the
/// CA's subtree. Does not verify the certificate's chain.
pub fn org_of_node_cert(der: &[u8]) -> Result<OrgPath, PkiError> {
    let org = org_of_cert(der)?;
    let x509 = parse_x509(der)?;
    let expected = org.dns_name();
    let mut dns_names = Vec::new();
    for name in general_names(&x509)? {
        if let GeneralName::DNSName(dns) = name {
            if dns.eq_ignore_ascii_case(&expected) {
                return Ok(org);
            }
            dns_names.push(dns.to_string());
        }
    }
    Err(PkiError::DnsMismatch { org, dns_names })
}

fn general_names<'a>(x509: &'a X509Certificate<'_>) -> Result<&'a [GeneralName<'a>], PkiError> {
    match x509.subject_alternative_name() {
        Ok(Some(san)) => Ok(&san.value.general_names),
        Ok(None) => Ok(&[]),
        Err(e) => Err(PkiError::BadCert {
            reason: format!("bad subject alternative names: {e}"),
        }),
    }
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo DER (the hash behind
/// [`NodeIdentity::actor_id`] and [`NodeIdentity::node_id`]).
pub fn spki_sha256(der: &[u8]) -> Result<[u8; 32], PkiError> {
    let x509 = parse_x509(der)?;
    Ok(Sha256::digest(x509.public_key().raw).into())
}

/// Longest revocation reason accepted by [`ca_revoke`], in characters.
pub const MAX_REVOCATION_REASON: usize = 500;

/// `amphi ca revoke --ca DIR --cert FILE --reason TEXT`: a CA-signed revocation of the node
/// certificate in `cert_pem_path` (PEM).
///
/// Refuses a certificate that does not chain to this CA (checked as
/// [`crate::trust::Trust::admit`] does, so an expired certificate can be revoked too) and a
/// reason that is empty, longer than [`MAX_REVOCATION_REASON`] characters or holds control
/// characters. `revoked_at` is now (RFC 3339, UTC, whole seconds); the signature is ECDSA
/// P-256 SHA-256 (ASN.1 DER) by the CA key over [`Revocation::signing_bytes`], hex-encoded.
/// Nothing is written: the caller publishes the record in the revocation document.
pub fn ca_revoke(
    ca_dir: &Path,
    cert_pem_path: &Path,
    reason: &str,
) -> Result<Revocation, PkiError> {
    use crate::trust::{Trust, TrustError};
    use rcgen::SigningKey as _;

    if reason.trim().is_empty() {
        return Err(PkiError::BadReason {
            problem: "is empty",
        });
    }
    if reason.chars().count() > MAX_REVOCATION_REASON {
        return Err(PkiError::BadReason {
            problem: "is longer than 500 characters",
        });
    }
    if reason.chars().any(char::is_control) {
        return Err(PkiError::BadReason {
            problem: "contains control characters (line breaks, tabs, ...)",
        });
    }
    let ca = load_ca(ca_dir)?;
    let ca_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    if ca.key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::BadKey {
            path: key_path,
            reason: "the CA key is not an ECDSA P-256 key".to_owned(),
        });
    }
    let pem = fs::read(cert_pem_path).map_err(PkiError::io("read", cert_pem_path))?;
    let der = first_cert_from_pem(&pem, cert_pem_path)?;
    let org = org_of_node_cert(&der).map_err(PkiError::in_file(cert_pem_path))?;
    let trust = Trust::new(&ca.der).map_err(|e| PkiError::Verifier {
        ca: ca_path.clone(),
        reason: e.to_string(),
    })?;
    let id = trust.admit(&der).map_err(|e| PkiError::NotFromCa {
        cert: cert_pem_path.to_owned(),
        ca: ca_path.clone(),
        reason: match e {
            TrustError::NotFromCa(reason) => reason,
            other => other.to_string(),
        },
    })?;
    let now = OffsetDateTime::now_utc();
    let now = now - Duration::nanoseconds(i64::from(now.nanosecond()));
    let mut revocation = Revocation {
        cert: hex::encode(id),
        org: org.to_string(),
        revoked_at: fmt_time(now),
        reason: reason.to_owned(),
        signature: String::new(),
    };
    let signature = ca
        .key
        .sign(&revocation.signing_bytes())
        .map_err(PkiError::generate("sign the revocation"))?;
    revocation.signature = hex::encode(signature);
    Ok(revocation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    fn identity(dir: &Path) -> Result<NodeIdentity, PkiError> {
        NodeIdentity::load(
            &dir.join(NODE_CERT_FILE),
            &dir.join(NODE_KEY_FILE),
            &dir.join(CA_CERT_FILE),
        )
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_issue_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        let node_dir = tmp.path().join("nodes/bayin");
        let county = org("hoboksar");
        let bayin = org("hoboksar/chagantolgay/bayin");

        let ca = ca_init(&ca_dir, &county).unwrap();
        assert_eq!(ca.org, county);
        let years = (ca.not_after - OffsetDateTime::now_utc()).whole_days() / 365;
        assert_eq!(years, 20);
        assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
        let ca_der = first_cert_from_pem(
            &fs::read(ca_dir.join(CA_CERT_FILE)).unwrap(),
            &ca_dir.join(CA_CERT_FILE),
        )
        .unwrap();
        assert_eq!(org_of_cert(&ca_der).unwrap(), county);
        assert!(parse_x509(&ca_der).unwrap().is_ca());

        let issued = ca_issue(&ca_dir, &bayin, &node_dir, 825).unwrap();
        assert_eq!(issued.org, bayin);
        assert_eq!(issued.cert_path, node_dir.join(NODE_CERT_FILE));
        let days = (issued.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((824..=825).contains(&days), "{days}");
        for f in [NODE_CERT_FILE, NODE_KEY_FILE, CA_CERT_FILE] {
            assert!(node_dir.join(f).is_file(), "{f} missing");
        }
        assert_eq!(mode(&node_dir.join(NODE_KEY_FILE)), 0o600);
        assert_eq!(
            fs::read(node_dir.join(CA_CERT_FILE)).unwrap(),
            fs::read(ca_dir.join(CA_CERT_FILE)).unwrap()
        );
        // No temporary files left behind.
        for entry in fs::read_dir(&node_dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(!name.to_string_lossy().starts_with('.'), "{name:?}");
        }

        let id = identity(&node_dir).unwrap();
        assert_eq!(id.org, bayin);
        assert_eq!(id.ca_der, ca_der);
        assert_eq!(org_of_cert(&id.cert_der).unwrap(), bayin);
        assert_eq!(org_of_node_cert(&id.cert_der).unwrap(), bayin);
        let x509 = parse_x509(&id.cert_der).unwrap();
        assert_eq!(
            x509.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            bayin.as_str()
        );
        let again = identity(&node_dir).unwrap();
        assert_eq!(id.actor_id(), again.actor_id());
        assert_eq!(id.node_id(), again.node_id());
        assert_eq!(id.node_id().len(), 16);
        let hash = spki_sha256(&id.cert_der).unwrap();
        assert_eq!(id.actor_id(), hash[..16]);
        assert_eq!(id.node_id(), hex::encode(&hash[..8]));
        assert!(!format!("{id:?}").contains("PrivateKey"));

        // The CA may issue for its own org; a re-issue gets a new key, hence a new actor id.
        ca_issue(&ca_dir, &county, &tmp.path().join("county"), 30).unwrap();
        ca_issue(&ca_dir, &bayin, &node_dir, 825).unwrap();
        assert_ne!(identity(&node_dir).unwrap().actor_id(), id.actor_id());
    }

    #[test]
    fn issue_refuses_orgs_outside_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        ca_init(&ca_dir, &org("hoboksar")).unwrap();
        for outside in ["other", "hoboksar2", "other/hoboksar"] {
            let out = tmp.path().join(outside.replace('/', "-"));
            let err = ca_issue(&ca_dir, &org(outside), &out, 825).unwrap_err();
            assert!(
                matches!(&err, PkiError::OutsideCa { ca, requested }
                    if ca.as_str() == "hoboksar" && requested.as_str() == outside),
                "{err}"
            );
            assert!(!out.exists(), "nothing is written for a refused org");
        }

        // A township CA may not issue for its county or a sibling township.
        let town_ca = tmp.path().join("town-ca");
        ca_init(&town_ca, &org("hoboksar/chagantolgay")).unwrap();
        for outside in ["hoboksar", "hoboksar/other", "hoboksar/chagantolgay2"] {
            let err = ca_issue(&town_ca, &org(outside), &tmp.path().join("x"), 825).unwrap_err();
            assert!(matches!(err, PkiError::OutsideCa { .. }), "{err}");
        }
        ca_issue(
            &town_ca,
            &org("hoboksar/chagantolgay/bayin"),
            &tmp.path().join("bayin"),
            825,
        )
        .unwrap();
    }

    #[test]
    fn issue_refuses_zero_days_and_outliving_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        ca_init(&ca_dir, &org("hoboksar")).unwrap();
        let err = ca_issue(&ca_dir, &org("hoboksar/a"), &tmp.path().join("a"), 0).unwrap_err();
        assert!(matches!(err, PkiError::ZeroValidity), "{err}");
        let err =
            ca_issue(&ca_dir, &org("hoboksar/a"), &tmp.path().join("a"), 30 * 365).unwrap_err();
        assert!(matches!(err, PkiError::OutlivesCa { .. }), "{err}");
    }

    #[test]
    fn init_refuses_an_existing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca_init(&dir, &org("hoboksar")).unwrap();
        let key_before = fs::read(dir.join(CA_KEY_FILE)).unwrap();
        let cert_before = fs::read(dir.join(CA_CERT_FILE)).unwrap();
        let err = ca_init(&dir, &org("hoboksar")).unwrap_err();
        assert!(matches!(&err, PkiError::CaExists { path } if path.ends_with(CA_KEY_FILE)));
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(dir.join(CA_KEY_FILE)).unwrap(), key_before);
        assert_eq!(fs::read(dir.join(CA_CERT_FILE)).unwrap(), cert_before);

        // A node directory (which holds a ca.crt) is not turned into a CA either.
        let node = tmp.path().join("node");
        ca_issue(&dir, &org("hoboksar/a"), &node, 10).unwrap();
        let err = ca_init(&node, &org("hoboksar")).unwrap_err();
        assert!(matches!(&err, PkiError::CaExists { path } if path.ends_with(CA_CERT_FILE)));
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
        assert!(matches!(err, PkiError::NotFromCa { .. }), "{err}");

        // Cert of a with the key of b.
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &b.join(NODE_KEY_FILE),
            &a.join(CA_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

        // Swapped arguments: a node certificate is not a CA.
        let err = NodeIdentity::load(
            &a.join(NODE_CERT_FILE),
            &a.join(NODE_KEY_FILE),
            &a.join(NODE_CERT_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::NotCa { .. }), "{err}");

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
        assert!(matches!(err, PkiError::NoPem { .. }), "{err}");
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
        let err = identity(&old).unwrap_err();
        assert!(matches!(err, PkiError::Expired { .. }), "{err}");
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
        let err = identity(&future).unwrap_err();
        assert!(matches!(err, PkiError::NotYetValid { .. }), "{err}");
    }

    /// A certificate signed with the CA key for an office outside the CA's subtree, bypassing
    /// `ca_issue`'s check, is still refused thanks to the CA's DNS name constraint.
    #[test]
    fn name_constraint_bounds_what_the_ca_key_can_sign() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        ca_init(&ca_dir, &org("hoboksar")).unwrap();
        let ca = load_ca(&ca_dir).unwrap();
        let issuer = Issuer::from_ca_cert_der(&ca.der, &ca.key).unwrap();
        let now = OffsetDateTime::now_utc();
        let rogue = tmp.path().join("rogue");
        fs::create_dir_all(&rogue).unwrap();
        let leaf = sign_leaf(
            &issuer,
            &org("other"),
            now - CLOCK_SKEW,
            now + Duration::days(9),
        )
        .unwrap();
        fs::write(rogue.join(NODE_CERT_FILE), &leaf.cert_pem).unwrap();
        fs::write(rogue.join(NODE_KEY_FILE), &leaf.key_pem).unwrap();
        fs::write(rogue.join(CA_CERT_FILE), &ca.pem).unwrap();
        let err = identity(&rogue).unwrap_err();
        assert!(
            matches!(&err, PkiError::NotFromCa { reason, .. } if reason.contains("outside")),
            "{err}"
        );

        // Same issuer, an office inside the subtree: accepted.
        let leaf = sign_leaf(
            &issuer,
            &org("hoboksar/x"),
            now - CLOCK_SKEW,
            now + Duration::days(9),
        )
        .unwrap();
        fs::write(rogue.join(NODE_CERT_FILE), &leaf.cert_pem).unwrap();
        fs::write(rogue.join(NODE_KEY_FILE), &leaf.key_pem).unwrap();
        assert_eq!(identity(&rogue).unwrap().org, org("hoboksar/x"));
    }

    #[test]
    fn org_of_cert_needs_exactly_one_org_uri() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let make = |uris: &[&str]| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = uris
                .iter()
                .map(|u| SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap()))
                .collect();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        assert!(matches!(org_of_cert(&make(&[])), Err(PkiError::NoOrg)));
        assert!(matches!(
            org_of_cert(&make(&["https://example.org/"])),
            Err(PkiError::NoOrg)
        ));
        assert_eq!(
            org_of_cert(&make(&["https://x/", "urn:amphi:org:hoboksar/a"])).unwrap(),
            org("hoboksar/a")
        );
        assert!(matches!(
            org_of_cert(&make(&["urn:amphi:org:a", "urn:amphi:org:b"])),
            Err(PkiError::MultipleOrgs { found }) if found.len() == 2
        ));
        assert!(matches!(
            org_of_cert(&make(&["urn:amphi:org:Bad/Path"])),
            Err(PkiError::BadOrg { .. })
        ));
        // No DNS SAN matching the org: not a node certificate.
        assert!(matches!(
            org_of_node_cert(&make(&["urn:amphi:org:hoboksar/a"])),
            Err(PkiError::DnsMismatch { .. })
        ));
        assert!(matches!(
            org_of_cert(b"not a certificate"),
            Err(PkiError::BadCert { .. })
        ));
    }
}
