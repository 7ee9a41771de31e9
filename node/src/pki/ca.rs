//! The county CA: creating it (`amphi ca init`), issuing node certificates (`amphi ca issue`)
//! and signing revocations (`amphi ca revoke`).
//!
//! Private keys are created with mode 0600 from the first byte and every file is written
//! atomically (temporary file, fsync, rename), so a crash never leaves half a key.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use amphi_protocol::OrgPath;
use amphi_protocol::attest::Revocation;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::identity::{IdentityError, read_ca_cert, read_first_cert};
use super::x509::{CertError, org_of_cert, org_of_node_cert, parse_x509};
use super::{
    CA_CERT_FILE, CA_KEY_FILE, FileError, NODE_CERT_FILE, NODE_KEY_FILE, ORG_URI_PREFIX, fmt_time,
};

/// Validity of a CA certificate: 20 years (7305 days, leap days included).
const CA_VALIDITY: Duration = Duration::days(7305);
/// How far back `not_before` is set, so offices whose clocks run a little behind still
/// accept a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Longest revocation reason accepted by [`ca_revoke`], in characters.
pub const MAX_REVOCATION_REASON: usize = 500;

/// What went wrong creating a CA, issuing a certificate or signing a revocation.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Writing a file or creating a directory failed.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A file of the CA directory, or the certificate to revoke, was refused.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A certificate just made could not be read back.
    #[error(transparent)]
    Cert(#[from] CertError),
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
    /// Generating a key or signing a certificate failed.
    #[error("could not {action}: {source}")]
    Generate {
        /// What was being generated.
        action: &'static str,
        /// The underlying rcgen error.
        source: rcgen::Error,
    },
    /// A revocation reason was empty, too long or not a single line of text ([`ca_revoke`]).
    #[error("the revocation reason {problem}; give a short single-line --reason")]
    BadReason {
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl CaError {
    fn generate(action: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
        move |source| CaError::Generate { action, source }
    }
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
pub fn ca_init(dir: &Path, org: &OrgPath) -> Result<CaInfo, CaError> {
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    for path in [&key_path, &cert_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(CaError::CaExists { path: path.clone() });
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(FileError::on("create directory", dir))?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(CaError::generate("generate the CA key"))?;
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
        .map_err(CaError::generate("sign the CA certificate"))?;
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
/// an `org` that is neither the CA's org nor below it ([`CaError::OutsideCa`]). Creates `out`
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
) -> Result<IssuedCert, CaError> {
    if days == 0 {
        return Err(CaError::ZeroValidity);
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

/// Reads `ca_dir/ca.crt` and `ca_dir/ca.key` and checks that they belong together.
fn load_ca(ca_dir: &Path) -> Result<LoadedCa, CaError> {
    let cert_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    let ca = read_ca_cert(&cert_path, OffsetDateTime::now_utc())?;
    let x509 = parse_x509(&ca.der).map_err(IdentityError::in_file(&cert_path))?;
    let org = org_of_cert(&ca.der).map_err(IdentityError::in_file(&cert_path))?;
    let key_pem = fs::read_to_string(&key_path).map_err(FileError::on("read", &key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::BadKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
        return Err(IdentityError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        }
        .into());
    }
    Ok(LoadedCa {
        org,
        pem: ca.pem,
        der: ca.der,
        key,
        not_after: ca.not_after,
    })
}

/// [`ca_issue`] with an explicit validity window (tests use it to make expired certificates).
pub(crate) fn issue_with_validity(
    ca_dir: &Path,
    org: &OrgPath,
    out: &Path,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<IssuedCert, CaError> {
    let ca = load_ca(ca_dir)?;
    if !ca.org.is_at_or_above(org) {
        return Err(CaError::OutsideCa {
            ca: ca.org,
            requested: org.clone(),
        });
    }
    if not_after > ca.not_after {
        return Err(CaError::OutlivesCa {
            not_after,
            ca_not_after: ca.not_after,
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca.der, &ca.key)
        .map_err(CaError::generate("read the CA certificate"))?;
    let leaf = sign_leaf(&issuer, org, not_before, not_after)?;

    fs::create_dir_all(out).map_err(FileError::on("create directory", out))?;
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
) -> Result<SignedLeaf, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(CaError::generate("generate the node key"))?;
    let dns = rcgen::string::Ia5String::try_from(org.dns_name())
        .map_err(CaError::generate("encode the DNS name"))?;
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
        .map_err(CaError::generate("sign the node certificate"))?;
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

fn org_uri_san(org: &OrgPath) -> Result<SanType, CaError> {
    let uri = rcgen::string::Ia5String::try_from(format!("{ORG_URI_PREFIX}{org}"))
        .map_err(CaError::generate("encode the org URI"))?;
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
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: Replace) -> Result<(), CaError> {
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
        return Err(FileError::on("write", &tmp)(e).into());
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
            return Err(CaError::CaExists {
                path: path.to_owned(),
            });
        }
        return Err(FileError::on("write", path)(e).into());
    }
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::on("sync directory", dir))?;
    Ok(())
}

/// `amphi ca revoke --ca DIR --cert FILE --reason TEXT`: a CA-signed revocation of the node
/// certificate in `cert_pem_path` (PEM).
///
/// Refuses a certificate that does not chain to this CA (checked as
/// [`crate::trust::Trust::admit`] does, so an expired certificate can be revoked too) and a
/// reason that is empty, longer than [`MAX_REVOCATION_REASON`] characters or holds control
/// characters. `revoked_at` is now (RFC 3339, UTC, whole seconds); the signature is ECDSA
/// P-256 SHA-256 (ASN.1 DER) by the CA key over [`Revocation::signing_bytes`], hex-encoded.
/// Nothing is written: the caller publishes the record in the revocation document.
pub fn ca_revoke(ca_dir: &Path, cert_pem_path: &Path, reason: &str) -> Result<Revocation, CaError> {
    use crate::trust::{Trust, TrustError};
    use rcgen::SigningKey as _;

    if reason.trim().is_empty() {
        return Err(CaError::BadReason {
            problem: "is empty",
        });
    }
    if reason.chars().count() > MAX_REVOCATION_REASON {
        return Err(CaError::BadReason {
            problem: "is longer than 500 characters",
        });
    }
    if reason.chars().any(char::is_control) {
        return Err(CaError::BadReason {
            problem: "contains control characters (line breaks, tabs, ...)",
        });
    }
    let ca = load_ca(ca_dir)?;
    let ca_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    if ca.key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(IdentityError::BadKey {
            path: key_path,
            reason: "the CA key is not an ECDSA P-256 key".to_owned(),
        }
        .into());
    }
    let der = read_first_cert(cert_pem_path)?;
    let org = org_of_node_cert(&der).map_err(IdentityError::in_file(cert_pem_path))?;
    let trust = Trust::new(&ca.der).map_err(|e| IdentityError::Verifier {
        ca: ca_path.clone(),
        reason: e.to_string(),
    })?;
    let id = trust.admit(&der).map_err(|e| IdentityError::NotFromCa {
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
        .map_err(CaError::generate("sign the revocation"))?;
    revocation.signature = hex::encode(signature);
    Ok(revocation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::identity::load_node_dir;
    use crate::pki::spki_sha256;
    use std::os::unix::fs::PermissionsExt;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
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
        let ca_der = read_first_cert(&ca_dir.join(CA_CERT_FILE)).unwrap();
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

        let id = load_node_dir(&node_dir).unwrap();
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
        let again = load_node_dir(&node_dir).unwrap();
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
        assert_ne!(load_node_dir(&node_dir).unwrap().actor_id(), id.actor_id());
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
                matches!(&err, CaError::OutsideCa { ca, requested }
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
            assert!(matches!(err, CaError::OutsideCa { .. }), "{err}");
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
        assert!(matches!(err, CaError::ZeroValidity), "{err}");
        let err =
            ca_issue(&ca_dir, &org("hoboksar/a"), &tmp.path().join("a"), 30 * 365).unwrap_err();
        assert!(matches!(err, CaError::OutlivesCa { .. }), "{err}");
    }

    #[test]
    fn init_refuses_an_existing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca_init(&dir, &org("hoboksar")).unwrap();
        let key_before = fs::read(dir.join(CA_KEY_FILE)).unwrap();
        let cert_before = fs::read(dir.join(CA_CERT_FILE)).unwrap();
        let err = ca_init(&dir, &org("hoboksar")).unwrap_err();
        assert!(matches!(&err, CaError::CaExists { path } if path.ends_with(CA_KEY_FILE)));
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(dir.join(CA_KEY_FILE)).unwrap(), key_before);
        assert_eq!(fs::read(dir.join(CA_CERT_FILE)).unwrap(), cert_before);

        // A node directory (which holds a ca.crt) is not turned into a CA either.
        let node = tmp.path().join("node");
        ca_issue(&dir, &org("hoboksar/a"), &node, 10).unwrap();
        let err = ca_init(&node, &org("hoboksar")).unwrap_err();
        assert!(matches!(&err, CaError::CaExists { path } if path.ends_with(CA_CERT_FILE)));
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
        let err = load_node_dir(&rogue).unwrap_err();
        assert!(
            matches!(&err, IdentityError::NotFromCa { reason, .. } if reason.contains("outside")),
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
        assert_eq!(load_node_dir(&rogue).unwrap().org, org("hoboksar/x"));
    }
}
