//! Signed authorship: who made a change, provably.
//!
//! Every change a node makes is signed with the key of its certificate. The signature and
//! the certificate's id travel beside the change (an [`Attestation`]) through every relay,
//! and every node checks them through an [`Authenticator`] before the change reaches its
//! store. Revocations are CA-signed records kept in one document every office holds.

use automerge::{Change, ChangeHash};

use crate::org::OrgPath;
use crate::refusal::Refusal;

/// SHA-256 of a certificate's DER: how attestations name the author's certificate.
pub type CertId = [u8; 32];

/// Domain-separation prefix of what a node signs for a change.
pub const CHANGE_SIGNING_TAG: &[u8] = b"amphi-change-v1\0";
/// Domain-separation prefix of what the CA signs for a revocation.
pub const REVOCATION_SIGNING_TAG: &[u8] = b"amphi-revocation-v1\0";
/// Longest signature accepted (an ASN.1 ECDSA P-256 signature is at most 72 bytes).
pub const MAX_SIGNATURE: usize = 512;

/// The signature of one change by its author's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The change signed.
    pub change: ChangeHash,
    /// The author's certificate.
    pub cert: CertId,
    /// Signature over [`change_signing_bytes`].
    pub signature: Vec<u8>,
}

/// The attestation offered for `change`, or why there is none: missing (`Unsigned`) or made
/// for another change (`BadSignature`). Every [`Authenticator`] starts here,
/// before it checks the signature itself.
pub fn offered_for<'a>(
    change: &Change,
    attestation: Option<&'a Attestation>,
) -> Result<&'a Attestation, Refusal> {
    let att = attestation.ok_or(Refusal::Unsigned)?;
    if att.change != change.hash() {
        return Err(Refusal::BadSignature);
    }
    Ok(att)
}

/// The bytes a node signs for a change: a tag and the change hash (which covers the whole
/// change: actor, author org, dependencies, time and operations).
pub fn change_signing_bytes(change: &ChangeHash) -> Vec<u8> {
    let mut b = CHANGE_SIGNING_TAG.to_vec();
    b.extend_from_slice(&change.0);
    b
}

impl Attestation {
    /// Encodes as `change(32) cert(32) sig_len(u16be) sig`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(66 + self.signature.len());
        out.extend_from_slice(&self.change.0);
        out.extend_from_slice(&self.cert);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes [`Attestation::encode`]'s output; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<Attestation> {
        if b.len() < 66 {
            return None;
        }
        let len = u16::from_be_bytes([b[64], b[65]]) as usize;
        if len > MAX_SIGNATURE || b.len() != 66 + len {
            return None;
        }
        Some(Attestation {
            change: ChangeHash(b[..32].try_into().ok()?),
            cert: b[32..64].try_into().ok()?,
            signature: b[66..].to_vec(),
        })
    }
}

/// A CA-signed revocation of one node certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Hex [`CertId`] of the revoked certificate.
    pub cert: String,
    /// The org the certificate names.
    pub org: String,
    /// When the CA revoked it (RFC 3339, UTC). Changes made after this are refused.
    pub revoked_at: String,
    /// Why, in words.
    pub reason: String,
    /// Hex signature by the CA key over [`Revocation::signing_bytes`].
    pub signature: String,
}

/// Prefix of revocation keys in the revocation document.
pub const REVOCATION_PREFIX: &str = "rev:";

impl Revocation {
    /// What the CA signs: tag, then the fields, newline-separated.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = REVOCATION_SIGNING_TAG.to_vec();
        for field in [&self.cert, &self.org, &self.revoked_at, &self.reason] {
            b.extend_from_slice(field.as_bytes());
            b.push(b'\n');
        }
        b
    }

    /// The key this record is stored under in the revocation document.
    pub fn key(&self) -> String {
        format!("{REVOCATION_PREFIX}{}", self.cert)
    }
}

/// Checks authorship and trust. The node implements it with the county CA, the certificates
/// it has learned, and the revocations it holds.
pub trait Authenticator {
    /// Accepts `change` as made by `author` only if `attestation` is a valid signature by a
    /// trusted, unrevoked certificate that names `author` and was valid when the change was
    /// made, and the change's actor is that certificate's.
    fn authenticate(
        &self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal>;

    /// As [`Authenticator::authenticate`], but without checking `attestation`'s signature:
    /// a valid signature on a later change of the same actor and certificate vouches for
    /// this change's bytes ([`crate::vouch`]). Everything else is checked. The default
    /// checks the signature too.
    fn authenticate_vouched(
        &self,
        change: &Change,
        author: &OrgPath,
        attestation: Option<&Attestation>,
    ) -> Result<(), Refusal> {
        self.authenticate(change, author, attestation)
    }

    /// Accepts `value`, written under `key` in the revocation document, only if it is a
    /// revocation record validly signed by the CA and stored under its own key.
    fn check_revocation(&self, key: &str, value: &str) -> Result<(), Refusal>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_round_trip_and_reject_garbage() {
        let a = Attestation {
            change: ChangeHash([7; 32]),
            cert: [9; 32],
            signature: vec![1, 2, 3],
        };
        assert_eq!(Attestation::decode(&a.encode()), Some(a.clone()));
        let bytes = a.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Attestation::decode(&bytes[..cut]), None);
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Attestation::decode(&long), None);
        let mut huge = bytes[..64].to_vec();
        huge.extend_from_slice(&u16::MAX.to_be_bytes());
        huge.extend(std::iter::repeat_n(0, u16::MAX as usize));
        assert_eq!(Attestation::decode(&huge), None);
    }

    #[test]
    fn signing_bytes_separate_domains_and_fields() {
        let h = ChangeHash([1; 32]);
        assert!(change_signing_bytes(&h).starts_with(CHANGE_SIGNING_TAG));
        let r = Revocation {
            cert: "ab".into(),
            org: "o".into(),
            revoked_at: "t".into(),
            reason: "r".into(),
            signature: String::new(),
        };
        let mut shifted = r.clone();
        shifted.org = "o\nt".into();
        shifted.revoked_at = String::new();
        assert_ne!(
            r.signing_bytes(),
            shifted.signing_bytes(),
            "fields cannot slide into each other"
        );
        assert_eq!(r.key(), "rev:ab");
    }
}
