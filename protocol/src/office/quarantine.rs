//! Refused changes go to quarantine: the bytes, the signature and why, never applied or
//! forwarded. An equivocation also keeps the other change of the pair with its signature
//! and names the certificate that signed both, which is the evidence for revoking it.

use automerge::ChangeHash;

use super::{Evidence, Office, QuarantineRecord, Storage, StorageError};
use crate::DocId;
use crate::attest::Attestation;
use crate::gate::RefusedChange;

impl<S: Storage> Office<S> {
    /// Quarantines `refused` (from `peer`, at `at`) and returns their reason codes.
    pub(super) fn quarantine(
        &self,
        id: &DocId,
        peer: &str,
        refused: &[RefusedChange],
        attestations: &[Attestation],
        at: &str,
    ) -> Result<Vec<&'static str>, StorageError> {
        // A change this node held (dropped by an equivocation) has its signature in the store.
        let stored: Vec<Attestation> = {
            let hashes: Vec<ChangeHash> = refused
                .iter()
                .flat_map(|r| r.hash.into_iter().chain(r.other.as_ref().map(|o| o.hash)))
                .collect();
            self.store.attestations(id, &hashes)?
        };
        let records: Vec<QuarantineRecord> = refused
            .iter()
            .map(|r| {
                tracing::warn!(peer, doc = %id, author = ?r.author.as_ref().map(ToString::to_string), reason = r.reason.code(), "refused change: {}", r.reason);
                let attestation = r.hash.and_then(|h| {
                    attestations
                        .iter()
                        .chain(&stored)
                        .find(|a| a.change == h)
                });
                // An equivocation names the signing certificate to revoke and keeps the
                // other change of the pair, with its signature, beside this one.
                let evidence = r.other.as_ref().map(|o| Evidence {
                    change: o.hash.to_string(),
                    change_bytes: Some(hex::encode(&o.bytes)),
                    attestation: attestations
                        .iter()
                        .chain(&stored)
                        .find(|a| a.change == o.hash)
                        .map(|a| hex::encode(a.encode())),
                });
                QuarantineRecord {
                    at: at.to_owned(),
                    peer: peer.to_owned(),
                    doc: id.to_string(),
                    change: r.hash.map(|h| h.to_string()),
                    author: r.author.as_ref().map(ToString::to_string),
                    reason: r.reason.code().to_owned(),
                    message: r.reason.to_string(),
                    change_bytes: r.bytes.as_ref().map(hex::encode),
                    attestation: attestation.map(|a| hex::encode(a.encode())),
                    count: 1,
                    cert: evidence
                        .as_ref()
                        .and(attestation)
                        .map(|a| hex::encode(a.cert)),
                    evidence,
                    ..QuarantineRecord::default()
                }
            })
            .collect();
        self.store.quarantine(&records)?;
        Ok(refused.iter().map(|r| r.reason.code()).collect())
    }
}
