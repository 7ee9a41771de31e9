//! The node's documents: the office core ([`amphi_protocol::office::Office`]) over the redb
//! store, with the node's key and trust, and the broadcast that tells every session what
//! changed.
//!
//! Every change to a document passes the gate inside the office core: the node's own writes
//! are signed and judged exactly like a peer's (so a 403 at the API and a refusal on the
//! wire agree), and nothing is acknowledged before it is durable. This module only supplies
//! the clock, fans the core's notices out to the sessions, and keeps what is the node's own:
//! learned certificates and the revocation list in [`Trust`].

use std::sync::Arc;

use amphi_protocol::attest::{Authenticator, CertId, Revocation};
use amphi_protocol::casefile::NewMember;
use amphi_protocol::office::{Office, Sign, StorageError, Trusted};
use amphi_protocol::reader::Reader;
use amphi_protocol::stamp::Stamp;
use amphi_protocol::{DocId, OrgPath};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ChangeHash, ROOT};
use tokio::sync::broadcast;

use crate::store::{Store, StoreError};
use crate::trust::{Signer, Trust};

pub use amphi_protocol::office::{Notice, NoticeKind, WriteError, summarise, summarise_after};

/// The node's documents.
pub struct Repo {
    office: Office<Store>,
    trust: Arc<Trust>,
    signer: Arc<Signer>,
    changed: broadcast::Sender<Notice>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Sign for Signer {
    fn sign(&self, change: &ChangeHash) -> amphi_protocol::attest::Attestation {
        Signer::sign(self, change)
    }
}

impl Trusted for Trust {
    fn certificate(&self, id: &CertId) -> Option<Vec<u8>> {
        Trust::certificate(self, id)
    }
}

impl Repo {
    /// A repo over `store` for the office `me`: its changes carry `actor` and are signed by
    /// `signer`; incoming changes are checked against `trust`.
    pub fn new(
        store: Store,
        me: OrgPath,
        actor: ActorId,
        signer: Signer,
        trust: Arc<Trust>,
    ) -> Repo {
        let (changed, _) = broadcast::channel(4096);
        let signer = Arc::new(signer);
        let office = Office::new(me, actor, store, trust.clone(), signer.clone());
        Repo {
            office,
            trust,
            signer,
            changed,
        }
    }

    /// Sends only the signature at the top of each run of an office's changes when `on`
    /// (the config's `chained_signatures`).
    pub fn with_chained_signatures(self, on: bool) -> Repo {
        Repo {
            office: self.office.with_chained_signatures(on),
            ..self
        }
    }

    /// The office core.
    pub fn office(&self) -> &Office<Store> {
        &self.office
    }

    /// This office.
    pub fn me(&self) -> &OrgPath {
        self.office.me()
    }

    /// The store (read access for lists and logs).
    pub fn store(&self) -> &Store {
        self.office.store()
    }

    /// What this node trusts.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// This node's key (for what it signs besides changes, e.g. bundles).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Subscribes to notices of documents that changed or left here.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.changed.subscribe()
    }

    /// Tells every session (a session that is gone, or none at all, is fine).
    pub fn announce(&self, notices: impl IntoIterator<Item = Notice>) {
        for n in notices {
            let _ = self.changed.send(n);
        }
    }

    /// Loads a document (with this node's actor, ready to write).
    pub fn load(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        self.office.load(id)
    }

    /// Loads a document this office holds for its own use (not one it is only keeping
    /// until an office below learns it left).
    pub fn load_held(&self, id: &DocId) -> Result<Option<AutoCommit>, StorageError> {
        self.office.load_held(id)
    }

    /// Makes a write to a document as this office (see [`Office::write`]); it is durable
    /// and announced when this returns.
    pub fn write<T>(
        &self,
        id: &DocId,
        create: bool,
        edit: impl FnOnce(&mut AutoCommit, &Stamp) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let (out, notices) = self.office.write(id, create, now_ms(), edit)?;
        self.announce(notices);
        Ok(out)
    }

    /// Creates a member's case file at this office (see [`Office::create_member`]).
    pub fn create_member(&self, member: &NewMember) -> Result<DocId, WriteError> {
        let (id, notices) = self.office.create_member(member, now_ms())?;
        self.announce(notices);
        Ok(id)
    }

    /// Makes sure this office's own roster document exists.
    pub fn ensure_own_roster(&self) -> Result<(), WriteError> {
        let notices = self.office.ensure_own_roster(now_ms())?;
        self.announce(notices);
        Ok(())
    }

    /// Teaches `trust` what the store holds: learned certificates and the revocation list.
    pub fn load_trust(&self) -> Result<(), StoreError> {
        for der in self.store().certificates()? {
            if let Err(e) = self.trust.admit(&der) {
                tracing::warn!("stored certificate no longer admitted: {e}");
            }
        }
        for r in self.revocations()? {
            if let Err(e) = self.trust.add_revocation(&r) {
                tracing::warn!("stored revocation not admitted: {e}");
            }
        }
        Ok(())
    }

    /// The revocation records this node holds.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let Some(doc) = self.store().load(&DocId::revocations())? else {
            return Ok(Vec::new());
        };
        let reader = Reader::now(&doc);
        Ok(reader
            .keys(&ROOT)
            .iter()
            .filter_map(|k| reader.str(&ROOT, k))
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }

    /// Adds a CA-signed revocation to the revocation list, from where it replicates to every
    /// office. The record is checked against the CA first.
    pub fn import_revocation(&self, revocation: &Revocation) -> Result<(), WriteError> {
        let json = serde_json::to_string(revocation).expect("revocation serialises");
        self.trust
            .check_revocation(&revocation.key(), &json)
            .map_err(WriteError::Forbidden)?;
        let id = DocId::revocations();
        let exists = self.store().summary(&id)?.is_some();
        self.write(&id, !exists, |doc, _| {
            Ok(doc.put(ROOT, revocation.key(), json.as_str())?)
        })
    }

    /// Records a certificate learned from a peer (checked against the CA first).
    pub fn learn_certificate(&self, der: &[u8]) -> Result<(), LearnError> {
        let id = self.trust.admit(der)?;
        Ok(self.store().save_certificate(&id, der)?)
    }
}

/// Why a certificate a peer sent (or this node's own) was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Not a certificate of this county's CA for one office, or not usable.
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    /// The store could not keep it.
    #[error("cannot record the certificate: {0}")]
    Store(#[from] StoreError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::{
        CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NodeIdentity, ca_init, ca_issue,
    };
    use amphi_protocol::inventory::heads_digest;
    use amphi_protocol::roster;

    const BAYIN: &str = "hoboksar/chagantolgay/bayin";

    pub(crate) fn open_repo(dir: &std::path::Path) -> Repo {
        let org = OrgPath::parse(BAYIN).unwrap();
        let node = dir.join("node");
        if !node.exists() {
            ca_init(&dir.join("ca"), &OrgPath::parse("hoboksar").unwrap()).unwrap();
            ca_issue(&dir.join("ca"), &org, &node, 30).unwrap();
        }
        let identity = NodeIdentity::load(
            &node.join(NODE_CERT_FILE),
            &node.join(NODE_KEY_FILE),
            &node.join(CA_CERT_FILE),
        )
        .unwrap();
        let trust = Arc::new(Trust::new(&identity.ca_der).unwrap());
        trust.admit(&identity.cert_der).unwrap();
        let store = Store::open(&dir.join("store.redb"), BAYIN).unwrap();
        let repo = Repo::new(
            store,
            org,
            ActorId::from(identity.actor_id()),
            Signer::new(&identity).unwrap(),
            trust,
        );
        repo.learn_certificate(&identity.cert_der).unwrap();
        repo.ensure_own_roster().unwrap();
        repo
    }

    #[test]
    fn a_purge_and_its_roster_history_line_are_stored_together() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_repo(dir.path());
        let member: amphi_protocol::casefile::NewMember =
            serde_json::from_value(serde_json::json!({
                "name": "Saruul", "gender": "female", "ethnicity": "Mongol",
                "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": BAYIN,
            }))
            .unwrap();
        let id = repo.create_member(&member).unwrap();

        // The file leaves; the node "crashes" right after, before anything else runs.
        let (line, _) = repo.office().purge_as_left(&id, now_ms()).unwrap();
        let line = line.unwrap();
        assert_eq!(line.event, "transferred-out");
        drop(repo);
        let repo = open_repo(dir.path());
        assert!(repo.load(&id).unwrap().is_none(), "the file is purged");
        let roster_id = DocId::roster(repo.me());
        let mut roster_doc = repo.load(&roster_id).unwrap().unwrap();
        assert_eq!(roster::read(&roster_doc).history, vec![line.clone()]);
        let heads = roster_doc.get_heads();
        assert_eq!(
            repo.store().attestations(&roster_id, &heads).unwrap().len(),
            1,
            "the roster change is signed like any write"
        );
        let summary = repo.store().summary(&roster_id).unwrap().unwrap();
        assert_eq!(summary.digest, heads_digest(&heads));
        assert_eq!(summarise(&roster_id, &mut roster_doc), summary);

        // Recording the line again (as callers do after a purge) adds nothing.
        repo.office().add_history(line, now_ms());
        assert_eq!(repo.load(&roster_id).unwrap().unwrap().get_heads(), heads);
    }
}
