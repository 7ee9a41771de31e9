//! Reading what a certificate says: the office it names ([`org_of_cert`],
//! [`org_of_node_cert`]) and the hash of its public key ([`spki_sha256`]).
//!
//! Everything here works on DER bytes and verifies nothing: whether a certificate chains to
//! the county CA is [`super::NodeIdentity::load`]'s and [`crate::trust`]'s business. These
//! functions see bytes from peers, so they are fuzzed (`fuzz/`).

use amphi_protocol::{OrgPath, OrgPathError};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::ORG_URI_PREFIX;

/// What is wrong with one certificate's bytes or the office it names.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A certificate could not be parsed as X.509.
    #[error("certificate is not valid X.509 DER: {reason}")]
    BadCert {
        /// What the parser said.
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
}

/// Parses `der` as exactly one X.509 certificate (no trailing bytes).
pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::BadCert {
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(CertError::BadCert {
            reason: e.to_string(),
        }),
    }
}

/// The org named in a certificate's URI SAN: exactly one `urn:amphi:org:` URI is required
/// ([`CertError::NoOrg`] / [`CertError::MultipleOrgs`] otherwise). Works for CA and node
/// certificates alike; does not verify the certificate.
pub fn org_of_cert(der: &[u8]) -> Result<OrgPath, CertError> {
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
        [] => Err(CertError::NoOrg),
        [uri] => OrgPath::parse(&uri[ORG_URI_PREFIX.len()..]).map_err(|source| CertError::BadOrg {
            uri: uri.clone(),
            source,
        }),
        _ => Err(CertError::MultipleOrgs { found: uris }),
    }
}

/// The org of a node certificate: [`org_of_cert`], plus the check that the certificate's DNS
/// SANs include `org.dns_name()` ([`CertError::DnsMismatch`] otherwise). Because webpki
/// enforces the CA's DNS name constraint on the DNS SAN, this ties the URI-named office to the
/// CA's subtree. Does not verify the certificate's chain.
pub fn org_of_node_cert(der: &[u8]) -> Result<OrgPath, CertError> {
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
    Err(CertError::DnsMismatch { org, dns_names })
}

/// The certificate's subject alternative names (none when it has no SAN extension).
fn general_names<'a>(x509: &'a X509Certificate<'_>) -> Result<&'a [GeneralName<'a>], CertError> {
    match x509.subject_alternative_name() {
        Ok(Some(san)) => Ok(&san.value.general_names),
        Ok(None) => Ok(&[]),
        Err(e) => Err(CertError::BadCert {
            reason: format!("bad subject alternative names: {e}"),
        }),
    }
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo DER (the hash behind
/// [`super::NodeIdentity::actor_id`] and [`super::NodeIdentity::node_id`]).
pub fn spki_sha256(der: &[u8]) -> Result<[u8; 32], CertError> {
    let x509 = parse_x509(der)?;
    Ok(Sha256::digest(x509.public_key().raw).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
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
        assert!(matches!(org_of_cert(&make(&[])), Err(CertError::NoOrg)));
        assert!(matches!(
            org_of_cert(&make(&["https://example.org/"])),
            Err(CertError::NoOrg)
        ));
        assert_eq!(
            org_of_cert(&make(&["https://x/", "urn:amphi:org:hoboksar/a"])).unwrap(),
            org("hoboksar/a")
        );
        assert!(matches!(
            org_of_cert(&make(&["urn:amphi:org:a", "urn:amphi:org:b"])),
            Err(CertError::MultipleOrgs { found }) if found.len() == 2
        ));
        assert!(matches!(
            org_of_cert(&make(&["urn:amphi:org:Bad/Path"])),
            Err(CertError::BadOrg { .. })
        ));
        // No DNS SAN matching the org: not a node certificate.
        assert!(matches!(
            org_of_node_cert(&make(&["urn:amphi:org:hoboksar/a"])),
            Err(CertError::DnsMismatch { .. })
        ));
        assert!(matches!(
            org_of_cert(b"not a certificate"),
            Err(CertError::BadCert { .. })
        ));
    }
}
