//! When the link is down: store-and-forward bundles (`amphi bundle export|import`, and the
//! dashboard's download and upload).
//!
//! Export packs what the other office may hold and lacks ([`Office::pack_for`]) into a
//! [`Bundle`] signed with this node's key. Import opens a bundle whole before using any of
//! it: the format ([`Bundle::open`]), the exporter's certificate (this county's CA, not
//! revoked, naming the org the bundle claims), the signature, that the bundle is for this
//! office and comes from a neighbour (as a session would require). Then every certificate it
//! carries is checked and learned, and every sync message is received through the gate as
//! from a peer ([`Office::unpack`]); the report says what was applied, what was refused and
//! why.
//!
//! [`Office::pack_for`]: amphi_protocol::office::Office::pack_for
//! [`Office::unpack`]: amphi_protocol::office::Office::unpack

use std::collections::BTreeMap;

use amphi_protocol::OrgPath;
use amphi_protocol::bundle::{Bundle, BundleError};
use amphi_protocol::wire::Frame;
use serde::Serialize;

use crate::repo::{Repo, now_ms};
use crate::store::StoreError;
use crate::transport::is_neighbour;

/// A bundle made by [`export`].
#[derive(Debug)]
pub struct Exported {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Documents with something in it.
    pub documents: usize,
    /// Changes in it.
    pub changes: usize,
}

/// Why a bundle was not made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The office it is for is not one this office syncs with.
    #[error(
        "{to} is not a neighbour of {me} (bundles go to the parent, a child, a configured peer or another node of this office)"
    )]
    NotNeighbour {
        /// The office asked for.
        to: OrgPath,
        /// This office.
        me: OrgPath,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] amphi_protocol::office::StorageError),
}

/// Packs a bundle for office `to`: what it may hold and lacks by the heads this office last
/// shared with it over a link (or everything).
pub fn export(
    repo: &Repo,
    to: &OrgPath,
    configured: &[OrgPath],
    everything: bool,
) -> Result<Exported, ExportError> {
    if !is_neighbour(repo.me(), to, configured) {
        return Err(ExportError::NotNeighbour {
            to: to.clone(),
            me: repo.me().clone(),
        });
    }
    let packed = repo.office().pack_for(to, everything)?;
    let exporter = repo
        .trust()
        .certificate(&repo.signer().cert_id())
        .expect("the node's own certificate is admitted at start");
    let bundle = Bundle {
        from: repo.me().clone(),
        to: to.clone(),
        created_ms: now_ms(),
        exporter,
        frames: packed.frames,
    };
    Ok(Exported {
        bytes: bundle.seal(|msg| repo.signer().sign_bytes(msg)),
        documents: packed.documents,
        changes: packed.changes,
    })
}

/// What [`import`] did.
#[derive(Debug, Default, Serialize)]
pub struct Imported {
    /// The exporting office.
    pub from: String,
    /// When the bundle was made (RFC 3339).
    pub created: String,
    /// Documents the bundle carried.
    pub documents: usize,
    /// Changes applied (new here).
    pub applied: usize,
    /// Changes refused, by reason (each is in quarantine with its evidence).
    pub refused: BTreeMap<String, usize>,
    /// Changes that wait for changes the bundle does not carry (an older bundle is missing,
    /// or this office lost them): they are asked for on the next link or bundle.
    pub waiting: usize,
    /// Certificates in the bundle that this county's CA did not vouch for.
    pub certificates_refused: Vec<String>,
    /// One line for a person.
    pub summary: String,
}

/// Why a bundle was refused whole (nothing of it was used).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a readable bundle (truncated, not a bundle, damaged framing).
    #[error("refused whole: {0}")]
    Format(#[from] BundleError),
    /// The exporter's certificate is not one of this county's, or is revoked.
    #[error("refused whole: the exporter's certificate is not trusted: {0}")]
    Exporter(String),
    /// The signature does not verify: the file was changed after it was made.
    #[error(
        "refused whole: the signature does not match its content (the file was changed or damaged after it was made)"
    )]
    Tampered,
    /// The certificate names another org than the bundle claims.
    #[error("refused whole: the bundle claims to be from {claimed} but is signed by {signer}")]
    WrongExporter {
        /// The org in the header.
        claimed: String,
        /// The org of the certificate.
        signer: String,
    },
    /// Made for another office.
    #[error("refused whole: the bundle is for {to}, not for this office ({me})")]
    NotForUs {
        /// Whom it is for.
        to: String,
        /// This office.
        me: String,
    },
    /// From an office this one does not sync with.
    #[error("refused whole: {0} is not a neighbour of this office")]
    NotNeighbour(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] amphi_protocol::office::StorageError),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> Self {
        ImportError::Store(e.into())
    }
}

/// Opens and checks a bundle, then receives everything in it through the gate. Notices of
/// changed documents are announced, so live sessions pass the changes on.
pub fn import(repo: &Repo, configured: &[OrgPath], bytes: &[u8]) -> Result<Imported, ImportError> {
    let opened = Bundle::open(bytes)?;
    let bundle = &opened.bundle;
    let exporter = repo
        .trust()
        .admit(&bundle.exporter)
        .map_err(|e| ImportError::Exporter(e.to_string()))?;
    if repo.trust().revoked_at(&exporter).is_some() {
        return Err(ImportError::Exporter("it is revoked".into()));
    }
    let signer = repo
        .trust()
        .verify_signed(&exporter, &opened.signed, &opened.signature)
        .ok_or(ImportError::Tampered)?;
    if signer != bundle.from {
        return Err(ImportError::WrongExporter {
            claimed: bundle.from.to_string(),
            signer: signer.to_string(),
        });
    }
    if &bundle.to != repo.me() {
        return Err(ImportError::NotForUs {
            to: bundle.to.to_string(),
            me: repo.me().to_string(),
        });
    }
    if !is_neighbour(repo.me(), &bundle.from, configured) {
        return Err(ImportError::NotNeighbour(bundle.from.to_string()));
    }
    repo.learn_certificate(&bundle.exporter)
        .map_err(|e| ImportError::Exporter(e.to_string()))?;

    let mut done = Imported {
        from: bundle.from.to_string(),
        created: amphi_protocol::stamp::rfc3339(bundle.created_ms),
        ..Imported::default()
    };
    let mut documents = std::collections::BTreeSet::new();
    let now = now_ms();
    for frame in &bundle.frames {
        match frame {
            Frame::Certificate { der } => {
                if let Err(e) = repo.learn_certificate(der) {
                    done.certificates_refused.push(e.to_string());
                }
            }
            Frame::Sync {
                doc,
                message,
                attestations,
            } => {
                documents.insert(doc.clone());
                let unpacked =
                    repo.office()
                        .unpack(&bundle.from, doc, message, attestations, now)?;
                done.applied += unpacked.received.applied;
                done.waiting += unpacked.waiting;
                for reason in unpacked.received.refused {
                    *done.refused.entry(reason.to_owned()).or_default() += 1;
                }
                repo.announce(unpacked.received.notices);
            }
            // Bundle::open lets no other frame through.
            _ => {}
        }
    }
    done.documents = documents.len();
    let refused: usize = done.refused.values().sum();
    done.summary = if done.applied == 0 && refused == 0 && done.waiting == 0 {
        format!(
            "nothing new: every change in this bundle from {} ({}) is here already",
            done.from, done.created
        )
    } else {
        format!(
            "from {} ({}): {} documents, {} changes applied, {} refused, {} waiting for changes not in this bundle",
            done.from, done.created, done.documents, done.applied, refused, done.waiting
        )
    };
    Ok(done)
}
