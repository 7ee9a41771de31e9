//! Trust: who may be believed to have made a change.
//!
//! Amphi's authority rules ([`amphi_protocol::authority`]) decide what an office may write;
//! this module makes sure the office a change names is the office that made it.
//!
//! - **Who signs.** Every node signs each change it makes with the private key of its node
//!   certificate ([`Signer`]): ECDSA P-256 with SHA-256 over
//!   [`attest::change_signing_bytes`] (a tag and the change hash, which covers the actor, the
//!   author org in the commit message, the dependencies, the time and the operations). The
//!   signature travels beside the change as an [`Attestation`] naming the certificate by its
//!   [`CertId`] (SHA-256 of the certificate DER), and the certificate itself travels too, so
//!   a county can check a change from a community it never met.
//! - **Who verifies.** Every node, for every change it receives or relays ([`Trust`], the
//!   node's [`Authenticator`]). A certificate is admitted only if it chains to the county CA
//!   (webpki with the ring provider, the same checks as TLS: CA signature, the CA's DNS name
//!   constraint, serverAuth and clientAuth usages) and names exactly one office. The chain
//!   is checked at a moment inside the certificate's own validity, so an expired certificate
//!   is still admitted: changes made while it was valid stay verifiable forever. A change is
//!   accepted only if its signature verifies with an admitted certificate, that certificate
//!   names the author org the change claims and its key is the change's automerge actor
//!   (actor id = first 16 bytes of SHA-256 of the certificate's SubjectPublicKeyInfo,
//!   optionally followed by the store's 8-byte incarnation, see [`store_actor`]), and the
//!   change's time lies within the certificate's validity (with [`CLOCK_SKEW_SECS`] of grace
//!   before `not_before`).
//! - **Revocation.** The CA signs [`Revocation`] records (`amphi ca revoke`,
//!   [`crate::pki::ca_revoke`]) that every office holds in one replicated document. A revoked
//!   certificate's changes timestamped at or after `revoked_at` are refused; earlier ones stay
//!   valid, so revoking a lost laptop's certificate does not erase the office's past work.
//!   Change times are chosen by the signer: a thief holding the key can backdate changes to
//!   before `revoked_at`. Revocation stops honest-clock forgeries and later use of the
//!   certificate; it cannot undo a key's past.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use amphi_protocol::OrgPath;
use amphi_protocol::attest::{self, Attestation, Authenticator, CertId, Revocation};
use amphi_protocol::refusal::Refusal;
use automerge::{ActorId, Change, ChangeHash};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

use crate::pki::{self, CertError, NodeIdentity};

/// How long before a certificate's `not_before` a change may be timestamped and still be
/// accepted (offices' clocks drift), in seconds.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Why a certificate, key or revocation could not be trusted or used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA certificate given to [`Trust::new`] cannot serve as the trust anchor.
    #[error("the CA certificate cannot be used as the trust anchor: {0}")]
    BadCa(String),
    /// Bytes offered as a certificate are not an X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// The certificate does not chain to this node's CA.
    #[error("the certificate was not issued by this county's CA: {0}")]
    NotFromCa(String),
    /// The certificate does not name exactly one office (with the matching DNS name).
    #[error("the certificate does not name one office: {0}")]
    Org(#[source] CertError),
    /// The certificate's key is not an ECDSA P-256 key.
    #[error("the certificate's key is not an ECDSA P-256 key; Amphi node certificates use P-256")]
    UnsupportedKey,
    /// The node's private key cannot be used for signing.
    #[error("the node's private key cannot be used for signing: {0}")]
    BadKey(String),
    /// The node's private key does not belong to its certificate.
    #[error(
        "the node's private key does not belong to its certificate; use the key written \
         together with that certificate"
    )]
    KeyMismatch,
    /// A revocation record is malformed or not signed by the CA.
    #[error("invalid revocation record: {0}")]
    BadRevocation(String),
}

/// Bytes of a store's incarnation, appended to the certificate's 16-byte actor prefix.
pub const INCARNATION_BYTES: usize = 8;

/// The automerge actor a node writes with: the certificate's 16-byte actor prefix and the
/// store's incarnation. A store that is created afresh or restored from a backup gets a new
/// incarnation, so a node never issues an (actor, seq) it used before it lost its store:
/// peers would refuse the second change as an equivocation.
pub fn store_actor(cert_actor: [u8; 16], incarnation: &[u8; INCARNATION_BYTES]) -> ActorId {
    let mut bytes = cert_actor.to_vec();
    bytes.extend_from_slice(incarnation);
    ActorId::from(bytes)
}

/// Whether `actor` is one the certificate with actor prefix `cert_actor` may write with: the
/// prefix alone (nodes before store incarnations) or the prefix and an incarnation.
fn actor_of_certificate(actor: &[u8], cert_actor: &[u8; 16]) -> bool {
    (actor.len() == 16 || actor.len() == 16 + INCARNATION_BYTES) && actor[..16] == cert_actor[..]
}

/// The [`CertId`] of a certificate: SHA-256 of its DER.
pub fn cert_id(der: &[u8]) -> CertId {
    Sha256::digest(der).into()
}

/// Signs this node's changes with the key of its certificate.
pub struct Signer {
    key: EcdsaKeyPair,
    cert: CertId,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("cert", &hex::encode(self.cert))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `identity`'s certificate, from its private key (PKCS#8 as `amphi ca
    /// issue` writes it; a SEC1 `EC PRIVATE KEY` is converted). Refuses a key that is not
    /// ECDSA P-256 or does not belong to the certificate.
    pub fn new(identity: &NodeIdentity) -> Result<Signer, TrustError> {
        Signer::from_parts(&identity.key_der, &identity.cert_der)
    }

    /// [`Signer::new`] from a key and a certificate (DER).
    pub(crate) fn from_parts(
        key: &PrivateKeyDer<'_>,
        cert_der: &[u8],
    ) -> Result<Signer, TrustError> {
        let rng = SystemRandom::new();
        let key = match key {
            PrivateKeyDer::Pkcs8(k) => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                k.secret_pkcs8_der(),
                &rng,
            )
            .map_err(|e| TrustError::BadKey(format!("not an ECDSA P-256 PKCS#8 key ({e})")))?,
            PrivateKeyDer::Sec1(k) => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &sec1_to_pkcs8(k.secret_sec1_der()),
                &rng,
            )
            .map_err(|e| {
                TrustError::BadKey(format!(
                    "the SEC1 key is not a P-256 key with its public key included ({e}); convert \
                     it with `openssl pkcs8 -topk8 -nocrypt` or issue a new certificate with \
                     `amphi ca issue`"
                ))
            })?,
            PrivateKeyDer::Pkcs1(_) => {
                return Err(TrustError::BadKey(
                    "it is an RSA key; Amphi node keys are ECDSA P-256".to_owned(),
                ));
            }
            _ => {
                return Err(TrustError::BadKey(
                    "unsupported key format; Amphi node keys are ECDSA P-256 PKCS#8".to_owned(),
                ));
            }
        };
        let x509 =
            pki::parse_x509(cert_der).map_err(|e| TrustError::BadCertificate(e.to_string()))?;
        if key.public_key().as_ref() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(TrustError::KeyMismatch);
        }
        Ok(Signer {
            key,
            cert: cert_id(cert_der),
            rng,
        })
    }

    /// The id of the certificate this signer's signatures name.
    pub fn cert_id(&self) -> CertId {
        self.cert
    }

    /// Signs `change` (ECDSA P-256 SHA-256, ASN.1 DER signature over
    /// [`attest::change_signing_bytes`]).
    pub fn sign(&self, change: &ChangeHash) -> Attestation {
        let signature = self
            .key
            .sign(&self.rng, &attest::change_signing_bytes(change))
            // ring fails here only if the operating system's random number generator does.
            .expect("the system random number generator failed while signing a change");
        Attestation {
            change: *change,
            cert: self.cert,
            signature: signature.as_ref().to_vec(),
        }
    }
}

impl Signer {
    /// Signs `message` (already domain-separated by the caller, e.g. a bundle's
    /// [`amphi_protocol::bundle::signing_bytes`]).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key
            .sign(&self.rng, message)
            .expect("the system random number generator failed while signing")
            .as_ref()
            .to_vec()
    }
}

/// Wraps a SEC1 `ECPrivateKey` (RFC 5915) for P-256 in a PKCS#8 `PrivateKeyInfo` (RFC 5208).
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend_from_slice(ALG);
    der_tlv(&mut body, 0x04, sec1);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_tlv(&mut out, 0x30, &body);
    out
}

/// Appends a DER tag-length-value.
fn der_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        out.push(0x82);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// What [`Trust::admit`] learned of a certificate, parsed once.
struct Admitted {
    der: Vec<u8>,
    org: OrgPath,
    actor: [u8; 16],
    /// The uncompressed P-256 point.
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// A verified revocation.
struct Revoked {
    at: i64,
    record: Revocation,
}

/// What a node trusts: the county CA, the certificates it has admitted, the revocations it
/// holds. Shared between threads (`Send + Sync`); lookups take a read lock.
pub struct Trust {
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// The CA's public key (uncompressed P-256 point), for revocation signatures.
    ca_public_key: Vec<u8>,
    certs: RwLock<HashMap<CertId, Arc<Admitted>>>,
    revoked: RwLock<HashMap<CertId, Revoked>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field(
                "certificates",
                &self
                    .certs
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .field(
                "revocations",
                &self
                    .revoked
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

/// The uncompressed point of an ECDSA P-256 key, or `None` for any other key.
fn p256_public_key(x509: &X509Certificate<'_>) -> Option<Vec<u8>> {
    let spki = x509.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if curve != OID_EC_P256 {
        return None;
    }
    let point = spki.subject_public_key.data.as_ref();
    (point.len() == 65 && point[0] == 0x04).then(|| point.to_vec())
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} (unix seconds)"))
}

impl Trust {
    /// Trust anchored at the CA certificate `ca_der` (DER), which must be an ECDSA P-256 CA.
    pub fn new(ca_der: &[u8]) -> Result<Trust, TrustError> {
        let x509 = pki::parse_x509(ca_der).map_err(|e| TrustError::BadCa(e.to_string()))?;
        if !x509.is_ca() {
            return Err(TrustError::BadCa("it is not a CA certificate".to_owned()));
        }
        let ca_public_key = p256_public_key(&x509)
            .ok_or_else(|| TrustError::BadCa("its key is not an ECDSA P-256 key".to_owned()))?;
        let provider = pki::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| TrustError::BadCa(e.to_string()))?;
        let roots = Arc::new(roots);
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TrustError::BadCa(e.to_string()))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TrustError::BadCa(e.to_string()))?;
        Ok(Trust {
            server_verifier,
            client_verifier,
            ca_public_key,
            certs: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashMap::new()),
        })
    }

    /// Admits a node certificate (DER) for verifying changes, and returns its [`CertId`].
    ///
    /// The certificate must chain to the CA (webpki with ring: CA signature, the CA's name
    /// constraint, serverAuth for its office's DNS name and clientAuth), evaluated one second
    /// after its `not_before`, so an expired certificate is admitted (its changes carry
    /// their own time, checked by [`Authenticator::authenticate`]). It must name exactly one
    /// office with the matching DNS name, and have an ECDSA P-256 key. Admitting the same
    /// certificate again is cheap and returns the same id.
    pub fn admit(&self, der: &[u8]) -> Result<CertId, TrustError> {
        let id = cert_id(der);
        if self.read_certs().contains_key(&id) {
            return Ok(id);
        }
        let x509 = pki::parse_x509(der).map_err(|e| TrustError::BadCertificate(e.to_string()))?;
        let org = pki::org_of_node_cert(der).map_err(TrustError::Org)?;
        let not_before = x509.validity().not_before.timestamp();
        let not_after = x509.validity().not_after.timestamp();
        let at = not_before
            .checked_add(1)
            .and_then(|t| u64::try_from(t).ok())
            .ok_or_else(|| {
                TrustError::BadCertificate(format!("not_before {not_before} is before 1970"))
            })?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
        let name = ServerName::try_from(org.dns_name())
            .map_err(|e| TrustError::BadCertificate(format!("its DNS name is invalid: {e}")))?;
        let cert = CertificateDer::from(der);
        let refused = |e: rustls::Error| match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            | rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                TrustError::NotFromCa("its signature does not verify with this CA's key".to_owned())
            }
            // webpki reports name constraint violations as an opaque "other" error.
            other if format!("{other:?}").contains("NameConstraintViolation") => {
                TrustError::NotFromCa(
                    "it names an office outside the CA's subtree (name constraint)".to_owned(),
                )
            }
            other => TrustError::NotFromCa(other.to_string()),
        };
        self.server_verifier
            .verify_server_cert(&cert, &[], &name, &[], at)
            .map_err(refused)?;
        self.client_verifier
            .verify_client_cert(&cert, &[], at)
            .map_err(refused)?;
        let public_key = p256_public_key(&x509).ok_or(TrustError::UnsupportedKey)?;
        let spki_hash: [u8; 32] = Sha256::digest(x509.public_key().raw).into();
        let mut actor = [0u8; 16];
        actor.copy_from_slice(&spki_hash[..16]);
        let admitted = Arc::new(Admitted {
            der: der.to_vec(),
            org,
            actor,
            public_key,
            not_before,
            not_after,
        });
        self.certs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert(admitted);
        Ok(id)
    }

    fn read_certs(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CertId, Arc<Admitted>>> {
        self.certs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn admitted(&self, id: &CertId) -> Option<Arc<Admitted>> {
        self.read_certs().get(id).cloned()
    }

    /// Checks `signature` over `message` by the admitted certificate `id`, and returns the
    /// org it names; `None` if the certificate is not admitted, is revoked, or the signature
    /// does not verify.
    pub fn verify_signed(&self, id: &CertId, message: &[u8], signature: &[u8]) -> Option<OrgPath> {
        let cert = self.admitted(id)?;
        if self.revoked_at(id).is_some() {
            return None;
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &cert.public_key)
            .verify(message, signature)
            .ok()?;
        Some(cert.org.clone())
    }

    /// The DER of an admitted certificate.
    pub fn certificate(&self, id: &CertId) -> Option<Vec<u8>> {
        self.admitted(id).map(|c| c.der.clone())
    }

    /// The office an admitted certificate names.
    pub fn org_of(&self, id: &CertId) -> Option<OrgPath> {
        self.admitted(id).map(|c| c.org.clone())
    }

    /// Checks a revocation record: its cert id is 64 hex digits, its signature is the CA's
    /// over [`Revocation::signing_bytes`], its `revoked_at` is RFC 3339. Returns the revoked
    /// certificate and the revocation time (unix seconds).
    fn verify_revocation(&self, r: &Revocation) -> Result<(CertId, i64), String> {
        let cert: CertId = hex::decode(&r.cert)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("cert {:?} is not a certificate id (64 hex digits)", r.cert))?;
        let signature =
            hex::decode(&r.signature).map_err(|_| "the signature is not hex".to_owned())?;
        if signature.len() > attest::MAX_SIGNATURE {
            return Err("the signature is too long".to_owned());
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.ca_public_key)
            .verify(&r.signing_bytes(), &signature)
            .map_err(|_| "the signature is not the county CA's".to_owned())?;
        let at = OffsetDateTime::parse(&r.revoked_at, &Rfc3339)
            .map_err(|e| format!("revoked_at {:?} is not an RFC 3339 time: {e}", r.revoked_at))?
            .unix_timestamp();
        Ok((cert, at))
    }

    /// Verifies the CA's signature on `r` and holds the revocation. Adding the same record
    /// again changes nothing; of two records for one certificate, the earlier `revoked_at`
    /// wins.
    pub fn add_revocation(&self, r: &Revocation) -> Result<(), TrustError> {
        let (cert, at) = self
            .verify_revocation(r)
            .map_err(TrustError::BadRevocation)?;
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        match revoked.get(&cert) {
            Some(existing) if existing.at <= at => {}
            _ => {
                revoked.insert(
                    cert,
                    Revoked {
                        at,
                        record: r.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    /// When the certificate was revoked (unix seconds), if it was.
    pub fn revoked_at(&self, id: &CertId) -> Option<i64> {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map(|r| r.at)
    }

    /// Every revocation held, ordered by certificate id.
    pub fn revocations(&self) -> Vec<Revocation> {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(&CertId, &Revoked)> = revoked.iter().collect();
        out.sort_by_key(|(id, _)| **id);
        out.into_iter().map(|(_, r)| r.record.clone()).collect()
    }
}

impl Trust {
    /// [`Authenticator::authenticate`], checking the ECDSA signature only when `signature`
    /// says so (a vouched change's bytes are covered by a checked signature: see
    /// [`amphi_protocol::vouch`]).
    fn check_attestation(
        &self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
        signature: bool,
    ) -> Result<(), Refusal> {
        let att = attest::offered_for(change, attestation)?;
        let cert = self
            .admitted(&att.cert)
            .ok_or(Refusal::UnknownCertificate)?;
        if signature {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &cert.public_key)
                .verify(&attest::change_signing_bytes(&att.change), &att.signature)
                .map_err(|_| Refusal::BadSignature)?;
        }
        if cert.org != *author {
            return Err(Refusal::AuthorMismatch {
                claimed: author.to_string(),
                signer: cert.org.to_string(),
            });
        }
        let actor = change.actor_id().to_bytes();
        if !actor_of_certificate(actor, &cert.actor) {
            return Err(Refusal::AuthorMismatch {
                claimed: author.to_string(),
                signer: format!(
                    "{} with actor {} (the change's actor is {}: actor mismatch)",
                    cert.org,
                    hex::encode(cert.actor),
                    hex::encode(actor)
                ),
            });
        }
        let t = change.timestamp().div_euclid(1000);
        if t < cert.not_before.saturating_sub(CLOCK_SKEW_SECS) || t > cert.not_after {
            return Err(Refusal::CertificateExpired);
        }
        if let Some(at) = self.revoked_at(&att.cert)
            && at <= t
        {
            return Err(Refusal::Revoked(rfc3339(at)));
        }
        Ok(())
    }
}

impl Authenticator for Trust {
    fn authenticate(
        &self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        self.check_attestation(change, author, attestation, true)
    }

    fn authenticate_vouched(
        &self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        self.check_attestation(change, author, attestation, false)
    }

    fn check_revocation(&self, key: &str, value: &str) -> Result<(), Refusal> {
        let r: Revocation = serde_json::from_str(value)
            .map_err(|e| Refusal::BadRevocation(format!("not a revocation record: {e}")))?;
        if key != r.key() {
            return Err(Refusal::BadRevocation(format!(
                "stored under {key:?} but its key is {:?}",
                r.key()
            )));
        }
        self.add_revocation(&r).map_err(|e| match e {
            TrustError::BadRevocation(reason) => Refusal::BadRevocation(reason),
            other => Refusal::BadRevocation(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use amphi_protocol::gate::commit_as;
    use automerge::transaction::Transactable as _;
    use automerge::{ActorId, AutoCommit, ROOT};
    use rustls::pki_types::pem::PemObject;

    use crate::pki::{
        CA_CERT_FILE, CaError, IdentityError, NODE_CERT_FILE, NODE_KEY_FILE, ca_init, ca_issue,
        ca_revoke, issue_with_validity,
    };

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    fn now_ms() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp() * 1000
    }

    fn der_of(pem_file: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
    }

    fn identity(dir: &Path) -> NodeIdentity {
        NodeIdentity::load(
            &dir.join(NODE_CERT_FILE),
            &dir.join(NODE_KEY_FILE),
            &dir.join(CA_CERT_FILE),
        )
        .unwrap()
    }

    /// A signer from a node directory's files, without NodeIdentity's "valid now" check.
    fn signer_of(dir: &Path) -> Signer {
        let key = PrivateKeyDer::from_pem_file(dir.join(NODE_KEY_FILE)).unwrap();
        Signer::from_parts(&key, &der_of(&dir.join(NODE_CERT_FILE))).unwrap()
    }

    fn actor_of(dir: &Path) -> [u8; 16] {
        let hash = pki::spki_sha256(&der_of(&dir.join(NODE_CERT_FILE))).unwrap();
        hash[..16].try_into().unwrap()
    }

    /// A real change by `actor`, claiming `author`, timestamped `at_ms`.
    fn change(actor: &[u8], author: &OrgPath, at_ms: i64) -> Change {
        let mut d = AutoCommit::new().with_actor(ActorId::from(actor));
        d.put(ROOT, "k", "v").unwrap();
        let hash = commit_as(&mut d, author, &amphi_protocol::stamp::Stamp::at(at_ms)).unwrap();
        d.get_change_by_hash(&hash).unwrap().clone()
    }

    struct County {
        _tmp: tempfile::TempDir,
        ca: std::path::PathBuf,
        trust: Trust,
    }

    fn county() -> County {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        ca_init(&ca, &org("hoboksar")).unwrap();
        let trust = Trust::new(&der_of(&ca.join(CA_CERT_FILE))).unwrap();
        County {
            _tmp: tmp,
            ca,
            trust,
        }
    }

    impl County {
        fn node(&self, name: &str, o: &str) -> std::path::PathBuf {
            let dir = self.ca.parent().unwrap().join(name);
            ca_issue(&self.ca, &org(o), &dir, 825).unwrap();
            dir
        }
    }

    /// A run of two changes by `actor`, the first claiming `first_author`, the second
    /// `bayin`: (first, second).
    fn run_of_two(actor: &[u8], first_author: &OrgPath, bayin: &OrgPath) -> (Change, Change) {
        let mut d = AutoCommit::new().with_actor(ActorId::from(actor));
        let stamp = |ms| amphi_protocol::stamp::Stamp::at(ms);
        d.put(ROOT, "a", "1").unwrap();
        let first = commit_as(&mut d, first_author, &stamp(now_ms() - 2000)).unwrap();
        d.put(ROOT, "b", "2").unwrap();
        let second = commit_as(&mut d, bayin, &stamp(now_ms() - 1000)).unwrap();
        let mut change = |h| d.get_change_by_hash(&h).unwrap().clone();
        (change(first), change(second))
    }

    #[test]
    fn a_change_sent_without_a_signature_is_taken_only_on_its_own_office_signature_above_it() {
        use amphi_protocol::vouch::Vouchers;
        let c = county();
        let (bayin_id, other_id) = (
            identity(&c.node("bayin", "hoboksar/bayin")),
            identity(&c.node("other", "hoboksar/other")),
        );
        c.trust.admit(&bayin_id.cert_der).unwrap();
        c.trust.admit(&other_id.cert_der).unwrap();
        let bayin = org("hoboksar/bayin");
        let first_unsigned = |first: &Change, top: &Change, signer: &Signer| {
            let signatures = [(top.hash(), signer.sign(&top.hash()))]
                .into_iter()
                .collect();
            let run = [first.clone(), top.clone()];
            let mut vouchers = Vouchers::plan(&run, &signatures, false);
            let claimed = amphi_protocol::gate::author_of(first).unwrap();
            vouchers.authenticate(first, &claimed, None, &c.trust)
        };
        let (first, top) = run_of_two(&bayin_id.actor_id(), &bayin, &bayin);
        let bayin_signer = Signer::new(&bayin_id).unwrap();
        assert_eq!(first_unsigned(&first, &top, &bayin_signer), Ok(()));
        // The top signed with another office's valid certificate vouches for nothing: the
        // run's actor is not that certificate's.
        let other_signer = Signer::new(&other_id).unwrap();
        assert_eq!(
            first_unsigned(&first, &top, &other_signer),
            Err(Refusal::Unsigned)
        );
        // A change of Bayin's run that claims another office as its author is refused,
        // though Bayin's signature above it is good.
        let (forged, top) = run_of_two(&bayin_id.actor_id(), &org("hoboksar/other"), &bayin);
        assert!(matches!(
            first_unsigned(&forged, &top, &bayin_signer),
            Err(Refusal::AuthorMismatch { .. })
        ));
    }

    #[test]
    fn signed_changes_authenticate_for_their_org_and_actor_only() {
        let c = county();
        let bayin_dir = c.node("bayin", "hoboksar/bayin");
        let id = identity(&bayin_dir);
        let signer = Signer::new(&id).unwrap();
        let bayin = org("hoboksar/bayin");
        let cert = c.trust.admit(&id.cert_der).unwrap();
        assert_eq!(cert, signer.cert_id());
        assert_eq!(cert, cert_id(&id.cert_der));
        assert_eq!(
            c.trust.admit(&id.cert_der).unwrap(),
            cert,
            "admit is idempotent"
        );
        assert_eq!(c.trust.org_of(&cert), Some(bayin.clone()));
        assert_eq!(
            c.trust.certificate(&cert).as_deref(),
            Some(id.cert_der.as_ref())
        );

        let ch = change(&id.actor_id(), &bayin, now_ms());
        let att = signer.sign(&ch.hash());
        assert_eq!(Attestation::decode(&att.encode()), Some(att.clone()));
        c.trust.authenticate(&ch, &bayin, Some(&att)).unwrap();

        // The same change claimed by another org.
        let err = c
            .trust
            .authenticate(&ch, &org("hoboksar/other"), Some(&att))
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::AuthorMismatch {
                claimed: "hoboksar/other".into(),
                signer: "hoboksar/bayin".into()
            }
        );

        // A store incarnation after the certificate's actor prefix is the same author.
        let incarnated = store_actor(id.actor_id(), &[3; INCARNATION_BYTES]);
        let ch = change(incarnated.to_bytes(), &bayin, now_ms());
        c.trust
            .authenticate(&ch, &bayin, Some(&signer.sign(&ch.hash())))
            .unwrap();
        // ... but not another length, nor another prefix with bayin's incarnation.
        for actor in [
            [id.actor_id().as_slice(), &[3; 4]].concat(),
            [id.actor_id().as_slice(), &[3; 17]].concat(),
            [[7; 16].as_slice(), &[3; INCARNATION_BYTES]].concat(),
        ] {
            let ch = change(&actor, &bayin, now_ms());
            let err = c
                .trust
                .authenticate(&ch, &bayin, Some(&signer.sign(&ch.hash())))
                .unwrap_err();
            assert!(
                matches!(&err, Refusal::AuthorMismatch { .. }),
                "{}: {err}",
                hex::encode(&actor)
            );
        }

        // A change by another actor, signed with bayin's key.
        let ch = change(&[7; 16], &bayin, now_ms());
        let err = c
            .trust
            .authenticate(&ch, &bayin, Some(&signer.sign(&ch.hash())))
            .unwrap_err();
        assert!(
            matches!(&err, Refusal::AuthorMismatch { claimed, signer }
                if claimed == "hoboksar/bayin" && signer.contains("actor mismatch")),
            "{err}"
        );

        // Another node's certificate signing a change by bayin's actor.
        let other_dir = c.node("other", "hoboksar/other");
        let other = identity(&other_dir);
        c.trust.admit(&other.cert_der).unwrap();
        let ch = change(&id.actor_id(), &bayin, now_ms());
        let err = c
            .trust
            .authenticate(
                &ch,
                &bayin,
                Some(&Signer::new(&other).unwrap().sign(&ch.hash())),
            )
            .unwrap_err();
        assert!(matches!(err, Refusal::AuthorMismatch { .. }), "{err}");
    }

    #[test]
    fn bad_missing_and_unknown_signatures_are_refused() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let id = identity(&dir);
        let signer = Signer::new(&id).unwrap();
        let bayin = org("hoboksar/bayin");
        let ch = change(&id.actor_id(), &bayin, now_ms());
        let att = signer.sign(&ch.hash());

        // Not admitted yet.
        assert_eq!(
            c.trust.authenticate(&ch, &bayin, Some(&att)),
            Err(Refusal::UnknownCertificate)
        );
        c.trust.admit(&id.cert_der).unwrap();
        c.trust.authenticate(&ch, &bayin, Some(&att)).unwrap();

        assert_eq!(
            c.trust.authenticate(&ch, &bayin, None),
            Err(Refusal::Unsigned)
        );

        for i in [0, 10, att.signature.len() - 1] {
            let mut bad = att.clone();
            bad.signature[i] ^= 0x01;
            assert_eq!(
                c.trust.authenticate(&ch, &bayin, Some(&bad)),
                Err(Refusal::BadSignature),
                "byte {i}"
            );
        }

        // A valid attestation of another change.
        let other = change(&id.actor_id(), &bayin, now_ms() + 1000);
        let other_att = signer.sign(&other.hash());
        assert_eq!(
            c.trust.authenticate(&ch, &bayin, Some(&other_att)),
            Err(Refusal::BadSignature)
        );
        // Naming this change but carrying the other change's signature.
        let swapped = Attestation {
            change: ch.hash(),
            ..other_att
        };
        assert_eq!(
            c.trust.authenticate(&ch, &bayin, Some(&swapped)),
            Err(Refusal::BadSignature)
        );
        // An unknown certificate id.
        let unknown = Attestation {
            cert: [3; 32],
            ..att
        };
        assert_eq!(
            c.trust.authenticate(&ch, &bayin, Some(&unknown)),
            Err(Refusal::UnknownCertificate)
        );
    }

    #[test]
    fn admit_refuses_other_cas_garbage_and_the_ca_itself() {
        let c = county();
        let tmp = tempfile::tempdir().unwrap();
        let other_ca = tmp.path().join("ca");
        ca_init(&other_ca, &org("hoboksar")).unwrap();
        let foreign = tmp.path().join("foreign");
        ca_issue(&other_ca, &org("hoboksar/bayin"), &foreign, 825).unwrap();
        let err = c
            .trust
            .admit(&der_of(&foreign.join(NODE_CERT_FILE)))
            .unwrap_err();
        assert!(matches!(err, TrustError::NotFromCa(_)), "{err}");
        assert!(err.to_string().contains("CA"), "{err}");

        let err = c.trust.admit(b"not a certificate").unwrap_err();
        assert!(matches!(err, TrustError::BadCertificate(_)), "{err}");

        let err = c
            .trust
            .admit(&der_of(&c.ca.join(CA_CERT_FILE)))
            .unwrap_err();
        assert!(matches!(err, TrustError::Org(_)), "{err}");

        // Nothing refused was cached.
        let id = cert_id(&der_of(&foreign.join(NODE_CERT_FILE)));
        assert!(c.trust.certificate(&id).is_none());

        // A node certificate is not a CA.
        assert!(matches!(
            Trust::new(&der_of(&foreign.join(NODE_CERT_FILE))),
            Err(TrustError::BadCa(_))
        ));
        assert!(matches!(Trust::new(b"junk"), Err(TrustError::BadCa(_))));
    }

    #[test]
    fn expired_certificates_verify_changes_made_while_valid() {
        let c = county();
        let dir = c.ca.parent().unwrap().join("old");
        let now = OffsetDateTime::now_utc();
        let bayin = org("hoboksar/bayin");
        issue_with_validity(
            &c.ca,
            &bayin,
            &dir,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
        let cert = c.trust.admit(&der_of(&dir.join(NODE_CERT_FILE))).unwrap();
        let signer = signer_of(&dir);
        assert_eq!(signer.cert_id(), cert);
        let actor = actor_of(&dir);

        let during = change(&actor, &bayin, now_ms() - 10 * 86_400_000);
        c.trust
            .authenticate(&during, &bayin, Some(&signer.sign(&during.hash())))
            .unwrap();
        let after = change(&actor, &bayin, now_ms());
        assert_eq!(
            c.trust
                .authenticate(&after, &bayin, Some(&signer.sign(&after.hash()))),
            Err(Refusal::CertificateExpired)
        );
        // Before not_before, beyond the clock skew allowance.
        let before = change(&actor, &bayin, now_ms() - 31 * 86_400_000);
        assert_eq!(
            c.trust
                .authenticate(&before, &bayin, Some(&signer.sign(&before.hash()))),
            Err(Refusal::CertificateExpired)
        );
    }

    #[test]
    fn a_vouched_change_is_checked_in_everything_but_its_signature() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let id = identity(&dir);
        let signer = Signer::new(&id).unwrap();
        let bayin = org("hoboksar/bayin");
        let cert = c.trust.admit(&id.cert_der).unwrap();
        let ch = change(&id.actor_id(), &bayin, now_ms());
        let mut unchecked = signer.sign(&ch.hash());
        unchecked.signature = vec![0; 8];
        assert_eq!(
            c.trust.authenticate(&ch, &bayin, Some(&unchecked)),
            Err(Refusal::BadSignature)
        );
        c.trust
            .authenticate_vouched(&ch, &bayin, Some(&unchecked))
            .unwrap();
        // Everything else still counts: the attestation names this change and a known
        // certificate, for this org and actor, and the certificate is not revoked.
        assert_eq!(
            c.trust.authenticate_vouched(&ch, &bayin, None),
            Err(Refusal::Unsigned)
        );
        let other = change(&id.actor_id(), &bayin, now_ms() + 1000);
        let for_other = signer.sign(&other.hash());
        assert_eq!(
            c.trust.authenticate_vouched(&ch, &bayin, Some(&for_other)),
            Err(Refusal::BadSignature)
        );
        let unknown = Attestation {
            cert: [3; 32],
            ..unchecked.clone()
        };
        assert_eq!(
            c.trust.authenticate_vouched(&ch, &bayin, Some(&unknown)),
            Err(Refusal::UnknownCertificate)
        );
        assert!(matches!(
            c.trust
                .authenticate_vouched(&ch, &org("hoboksar/tebke"), Some(&unchecked)),
            Err(Refusal::AuthorMismatch { .. })
        ));
        let stranger = change(&[7; 16], &bayin, now_ms());
        let stranger_att = Attestation {
            change: stranger.hash(),
            ..unchecked.clone()
        };
        assert!(matches!(
            c.trust
                .authenticate_vouched(&stranger, &bayin, Some(&stranger_att)),
            Err(Refusal::AuthorMismatch { .. })
        ));
        let r = ca_revoke(&c.ca, &dir.join(NODE_CERT_FILE), "laptop stolen").unwrap();
        c.trust
            .check_revocation(&r.key(), &serde_json::to_string(&r).unwrap())
            .unwrap();
        let at = c.trust.revoked_at(&cert).unwrap();
        let late = change(&id.actor_id(), &bayin, (at + 5) * 1000);
        let late_att = Attestation {
            change: late.hash(),
            ..unchecked
        };
        assert_eq!(
            c.trust.authenticate_vouched(&late, &bayin, Some(&late_att)),
            Err(Refusal::Revoked(r.revoked_at.clone()))
        );
    }

    #[test]
    fn revocations_refuse_later_changes_only() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let id = identity(&dir);
        let signer = Signer::new(&id).unwrap();
        let bayin = org("hoboksar/bayin");
        let cert = c.trust.admit(&id.cert_der).unwrap();

        let r = ca_revoke(&c.ca, &dir.join(NODE_CERT_FILE), "laptop stolen").unwrap();
        assert_eq!(r.cert, hex::encode(cert));
        assert_eq!(r.org, "hoboksar/bayin");
        assert!(
            r.revoked_at.ends_with('Z') && !r.revoked_at.contains('.'),
            "{}",
            r.revoked_at
        );
        let json = serde_json::to_string(&r).unwrap();

        assert_eq!(c.trust.revoked_at(&cert), None);
        c.trust.check_revocation(&r.key(), &json).unwrap();
        c.trust.check_revocation(&r.key(), &json).unwrap();
        let at = c.trust.revoked_at(&cert).unwrap();
        assert_eq!(c.trust.revocations(), vec![r.clone()]);

        let before = change(&id.actor_id(), &bayin, (at - 100) * 1000);
        c.trust
            .authenticate(&before, &bayin, Some(&signer.sign(&before.hash())))
            .unwrap();
        for t in [at, at + 5] {
            let after = change(&id.actor_id(), &bayin, t * 1000);
            let err = c
                .trust
                .authenticate(&after, &bayin, Some(&signer.sign(&after.hash())))
                .unwrap_err();
            assert_eq!(err, Refusal::Revoked(r.revoked_at.clone()));
        }

        // Tampered records.
        let fresh = Trust::new(&der_of(&c.ca.join(CA_CERT_FILE))).unwrap();
        let mut tampered = r.clone();
        tampered.reason = "routine".into();
        let err = fresh
            .check_revocation(&tampered.key(), &serde_json::to_string(&tampered).unwrap())
            .unwrap_err();
        assert!(matches!(err, Refusal::BadRevocation(_)), "{err}");
        let mut later = r.clone();
        later.revoked_at = "2099-01-01T00:00:00Z".into();
        let err = fresh
            .check_revocation(&later.key(), &serde_json::to_string(&later).unwrap())
            .unwrap_err();
        assert!(matches!(err, Refusal::BadRevocation(_)), "{err}");

        // Stored under another key.
        let err = fresh.check_revocation("rev:00", &json).unwrap_err();
        assert!(
            matches!(&err, Refusal::BadRevocation(m) if m.contains("key")),
            "{err}"
        );
        // Not JSON, unknown fields.
        assert!(matches!(
            fresh.check_revocation(&r.key(), "{"),
            Err(Refusal::BadRevocation(_))
        ));
        let extra = json.replacen('{', "{\"x\":1,", 1);
        assert!(matches!(
            fresh.check_revocation(&r.key(), &extra),
            Err(Refusal::BadRevocation(_))
        ));
        assert!(fresh.revocations().is_empty());

        // Signed by another CA (for a certificate of that CA).
        let tmp = tempfile::tempdir().unwrap();
        let other_ca = tmp.path().join("ca");
        ca_init(&other_ca, &org("hoboksar")).unwrap();
        let foreign = tmp.path().join("foreign");
        ca_issue(&other_ca, &bayin, &foreign, 825).unwrap();
        let foreign_r = ca_revoke(&other_ca, &foreign.join(NODE_CERT_FILE), "test").unwrap();
        let err = fresh
            .check_revocation(
                &foreign_r.key(),
                &serde_json::to_string(&foreign_r).unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Refusal::BadRevocation(m) if m.contains("CA")),
            "{err}"
        );
        // The other CA's signature on our certificate's id.
        let forged = Revocation {
            signature: foreign_r.signature.clone(),
            ..r.clone()
        };
        assert!(matches!(
            fresh.add_revocation(&forged),
            Err(TrustError::BadRevocation(_))
        ));
    }

    #[test]
    fn ca_revoke_refuses_foreign_certificates_and_bad_reasons() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let cert = dir.join(NODE_CERT_FILE);
        for bad in ["", "line\nbreak", "tab\there", &"x".repeat(501)] {
            let err = ca_revoke(&c.ca, &cert, bad).unwrap_err();
            assert!(err.to_string().contains("reason"), "{err}");
        }
        ca_revoke(&c.ca, &cert, &"é".repeat(500)).unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let other_ca = tmp.path().join("ca");
        ca_init(&other_ca, &org("hoboksar")).unwrap();
        let err = ca_revoke(&other_ca, &cert, "test").unwrap_err();
        assert!(
            matches!(err, CaError::Identity(IdentityError::NotFromCa { .. })),
            "{err}"
        );

        // An expired certificate of this CA can still be revoked.
        let old = tmp.path().join("old");
        let now = OffsetDateTime::now_utc();
        issue_with_validity(
            &c.ca,
            &org("hoboksar/a"),
            &old,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
        let r = ca_revoke(&c.ca, &old.join(NODE_CERT_FILE), "retired").unwrap();
        c.trust.add_revocation(&r).unwrap();
    }

    #[test]
    fn earlier_revocation_wins() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let r = ca_revoke(&c.ca, &dir.join(NODE_CERT_FILE), "first").unwrap();
        let cert = cert_id(&der_of(&dir.join(NODE_CERT_FILE)));
        c.trust.add_revocation(&r).unwrap();
        let at = c.trust.revoked_at(&cert).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let later = ca_revoke(&c.ca, &dir.join(NODE_CERT_FILE), "second").unwrap();
        c.trust.add_revocation(&later).unwrap();
        assert_eq!(c.trust.revoked_at(&cert), Some(at));
        assert_eq!(c.trust.revocations(), vec![r]);
    }

    #[test]
    fn signer_accepts_sec1_and_refuses_foreign_keys() {
        let c = county();
        let dir = c.node("bayin", "hoboksar/bayin");
        let cert = der_of(&dir.join(NODE_CERT_FILE));
        let pkcs8 = PrivateKeyDer::from_pem_file(dir.join(NODE_KEY_FILE)).unwrap();
        let PrivateKeyDer::Pkcs8(p) = &pkcs8 else {
            panic!("rcgen writes PKCS#8")
        };
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, OCTET STRING ECPrivateKey }
        let sec1 = der_children(der_children(p.secret_pkcs8_der())[0].1)[2]
            .1
            .to_vec();
        let sec1 = PrivateKeyDer::Sec1(sec1.into());
        let from_sec1 = Signer::from_parts(&sec1, &cert).unwrap();
        let from_pkcs8 = Signer::from_parts(&pkcs8, &cert).unwrap();
        assert_eq!(
            from_sec1.key.public_key().as_ref(),
            from_pkcs8.key.public_key().as_ref()
        );

        let other = c.node("other", "hoboksar/other");
        let other_key = PrivateKeyDer::from_pem_file(other.join(NODE_KEY_FILE)).unwrap();
        assert!(matches!(
            Signer::from_parts(&other_key, &cert),
            Err(TrustError::KeyMismatch)
        ));
        let garbage = PrivateKeyDer::Pkcs8(vec![0x30, 0x00].into());
        assert!(matches!(
            Signer::from_parts(&garbage, &cert),
            Err(TrustError::BadKey(_))
        ));
    }

    /// The (tag, value) children of a DER value (short and 1–2 byte long lengths only).
    fn der_children(mut b: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let tag = b[0];
            let (len, hdr) = match b[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (b[2] as usize, 3),
                0x82 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                _ => panic!("unsupported length"),
            };
            out.push((tag, &b[hdr..hdr + len]));
            b = &b[hdr + len..];
        }
        out
    }

    #[test]
    fn trust_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Trust>();
        assert_send_sync::<Signer>();
    }
}
