//! When the disk dies: backup, verify and restore of an office's store (`amphi backup`,
//! `amphi verify`, `amphi restore`).
//!
//! - A **backup** is a consistent copy of the store taken while the node runs
//!   ([`Store::back_up_to`]: one read snapshot, written to a new file that appears whole or
//!   not at all). It is itself a store: it can be verified and restored as it is.
//! - **Verify** reads everything and changes nothing: every document loads, every change in
//!   it has its attestation, or is proved by the signature above it in its office's run or
//!   by its proof (`amphi_protocol::vouch`), and every signature verifies against the county
//!   CA (the same check as for a change from a peer), and every stored summary names the
//!   document's heads.
//! - **Restore** puts a verified backup in place of the store (the old file is kept aside)
//!   and gives it a new incarnation: the node writes with an automerge actor it never used,
//!   so it never re-issues an (actor, seq) its peers already hold from before the backup
//!   (they would refuse the second change). Sync states are dropped, so the node syncs every
//!   document with its peers afresh and fetches what it wrote after the backup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amphi_protocol::inventory::heads_digest;
use amphi_protocol::vouch::check_held;
use automerge::ChangeHash;
use serde::Serialize;

use crate::config::Config;
use crate::node::{STORE_FILE, StartError, open_repo, sync_folder};
use crate::pki::NodeIdentity;
use crate::repo::Repo;
use crate::store::{Store, StoreError, Whole};

/// What [`verify`] found.
#[derive(Debug, Default, Serialize)]
pub struct Verified {
    /// Documents read.
    pub documents: u64,
    /// Changes whose attestation was checked.
    pub changes: u64,
    /// Everything wrong, one line each (empty: the store is sound).
    pub problems: Vec<Problem>,
    /// Every document held, with its scope and heads, when asked for
    /// (`amphi verify --inventory`): what a cluster test compares across offices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Vec<Held>>,
}

/// One document in the store, as [`verify`] read it.
#[derive(Debug, Serialize)]
pub struct Held {
    /// The document.
    pub doc: String,
    /// Its kind (`member`, `org`, …).
    pub kind: amphi_protocol::DocKind,
    /// The orgs whose offices (and their ancestors') may hold it.
    pub scope: Vec<String>,
    /// Its heads, sorted, hex.
    pub heads: Vec<String>,
}

/// One thing [`verify`] found wrong.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// The document.
    pub doc: String,
    /// What is wrong with it.
    pub what: String,
}

/// Problems listed at most (the count of documents and changes stays exact).
pub const MAX_PROBLEMS: usize = 1000;

impl Verified {
    fn problem(&mut self, doc: &str, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                doc: doc.to_owned(),
                what,
            });
        }
    }
}

/// Whether [`verify`] also lists what the store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inventory {
    /// Only the checks.
    Skip,
    /// The checks and [`Verified::inventory`].
    List,
}

impl Inventory {
    /// [`Inventory::List`] when `wanted` (a command-line flag, a query parameter).
    pub fn listed(wanted: bool) -> Inventory {
        if wanted {
            Inventory::List
        } else {
            Inventory::Skip
        }
    }
}

/// Checks every document of `repo`'s store; changes nothing.
pub fn verify(repo: &Repo, inventory: Inventory) -> Result<Verified, StoreError> {
    let mut found = Verified {
        inventory: (inventory == Inventory::List).then(Vec::new),
        ..Verified::default()
    };
    for (id, _) in repo.store().summaries()? {
        let name = id.as_str();
        // Body, summary, attestations and proofs from one snapshot: a running node may write the
        // document (or purge it) between the list and the read.
        let Whole {
            mut doc,
            summary,
            attestations,
            proofs,
        } = match repo.store().load_whole(&id) {
            Ok(Some(whole)) => whole,
            Ok(None) if repo.store().summary(&id)?.is_none() => continue, // purged meanwhile
            Ok(None) => {
                found.documents += 1;
                found.problem(name, "listed in the index but has no content".into());
                continue;
            }
            Err(e) => {
                found.documents += 1;
                found.problem(name, e.to_string());
                continue;
            }
        };
        found.documents += 1;
        let heads = doc.get_heads();
        // A summary written by this build also names the heads themselves (offers are made
        // from them without loading the document).
        let named = summary.heads.is_empty() || summary.heads == heads;
        if heads_digest(&heads) != summary.digest || !named {
            found.problem(name, "the stored summary names other heads".into());
        }
        if let Some(list) = found.inventory.as_mut() {
            let mut heads: Vec<String> = heads.iter().map(ToString::to_string).collect();
            heads.sort();
            list.push(Held {
                doc: name.to_owned(),
                kind: summary.kind,
                scope: summary.scope.iter().map(ToString::to_string).collect(),
                heads,
            });
        }
        let changes = doc.get_changes(&[]);
        found.changes += changes.len() as u64;
        let signed: HashMap<_, _> = attestations.into_iter().map(|a| (a.change, a)).collect();
        // A change may be held without its own signature, proved by the one above it in its
        // office's run or by a proof (`amphi_protocol::vouch`).
        let mut proof_of = |h: &ChangeHash| proofs.get(h).cloned();
        let failed = check_held(&changes, &signed, &mut proof_of, &**repo.trust());
        for (hash, author, refusal) in failed {
            match author {
                None => found.problem(name, format!("change {hash} names no author")),
                Some(author) => found.problem(
                    name,
                    format!("change {hash} by {author}: {refusal} ({})", refusal.code()),
                ),
            }
        }
    }
    Ok(found)
}

/// Why the store could not be opened by a command while the node is stopped.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A running node holds the store.
    #[error("the node is running and holds its store")]
    NodeRunning,
    /// Anything else.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Opens the office's store directly (the node must not be running) as [`open_repo`] does.
pub fn open_offline(config: &Config, store: &Path) -> Result<Repo, OfflineError> {
    let identity = NodeIdentity::load(&config.cert, &config.key, &config.ca)
        .map_err(|e| OfflineError::Start(e.into()))?;
    let store = match Store::open(store, identity.org.as_str()) {
        Ok(s) => s,
        Err(StoreError::Db(e)) if is_already_open(&e) => return Err(OfflineError::NodeRunning),
        Err(e) => return Err(OfflineError::Start(e.into())),
    };
    Ok(open_repo(&identity, store)?)
}

fn is_already_open(e: &redb::Error) -> bool {
    matches!(e, redb::Error::DatabaseAlreadyOpen)
}

/// What [`restore`] did.
#[derive(Debug, Serialize)]
pub struct Restored {
    /// Documents in the restored store.
    pub documents: u64,
    /// Where the store it replaced was kept, if there was one.
    pub previous: Option<PathBuf>,
}

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file cannot be read.
    #[error("cannot read the backup {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The data dir cannot be written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    /// The node is running.
    #[error("the node is running: stop it (systemctl stop amphi) before restoring its store")]
    NodeRunning,
    /// The backup does not open as this office's store.
    #[error("the backup is not a store of this office: {0}")]
    NotThisOffice(OfflineError),
    /// The backup failed verification (restore with `--force` to take it anyway).
    #[error("the backup has {} problem(s), first: {}: {} (restore with --force to take it anyway)", .0.problems.len(), .0.problems[0].doc, .0.problems[0].what)]
    Unsound(Verified),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Puts the backup `from` in place of the office's store (the node must be stopped). The
/// backup is copied into the data dir, opened as this office's store and verified (unless
/// `force`), given a new incarnation and no sync states, and only then renamed over the
/// store; the store it replaces is kept beside it as `amphi.redb.before-restore-SECONDS`.
pub fn restore(config: &Config, from: &Path, force: bool) -> Result<Restored, RestoreError> {
    let live = config.data_dir.join(STORE_FILE);
    // Holding the live store also proves the node is stopped, for the whole restore.
    let held = match live.exists().then(|| open_offline(config, &live)) {
        Some(Err(OfflineError::NodeRunning)) => return Err(RestoreError::NodeRunning),
        Some(Ok(repo)) => Some(repo),
        // No store (a new machine), or an unreadable one (the reason to restore).
        _ => None,
    };
    let incoming = config.data_dir.join(format!("{STORE_FILE}.restoring"));
    let write_err = |e| RestoreError::Write(incoming.clone(), e);
    std::fs::create_dir_all(&config.data_dir).map_err(write_err)?;
    std::fs::copy(from, &incoming).map_err(|e| RestoreError::Read(from.to_owned(), e))?;
    let documents = {
        let repo = open_offline(config, &incoming).map_err(RestoreError::NotThisOffice)?;
        let found = verify(&repo, Inventory::Skip)?;
        if !found.problems.is_empty() && !force {
            drop(repo);
            let _ = std::fs::remove_file(&incoming);
            return Err(RestoreError::Unsound(found));
        }
        let documents = found.documents;
        drop(repo);
        documents
    };
    let identity = NodeIdentity::load(&config.cert, &config.key, &config.ca)
        .map_err(|e| RestoreError::NotThisOffice(OfflineError::Start(e.into())))?;
    Store::open(&incoming, identity.org.as_str())?.restored()?;
    std::fs::File::open(&incoming)
        .and_then(|f| f.sync_all())
        .map_err(write_err)?;
    drop(held);
    let previous = if live.exists() {
        let secs = crate::repo::now_ms() / 1000;
        let aside = config
            .data_dir
            .join(format!("{STORE_FILE}.before-restore-{secs}"));
        std::fs::rename(&live, &aside).map_err(|e| RestoreError::Write(aside.clone(), e))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&incoming, &live).map_err(|e| RestoreError::Write(live.clone(), e))?;
    sync_folder(&config.data_dir).map_err(|e| RestoreError::Write(config.data_dir.clone(), e))?;
    Ok(Restored {
        documents,
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amphi_protocol::casefile::NewMember;
    use amphi_protocol::gate::commit_as;
    use amphi_protocol::stamp::Stamp;
    use automerge::ROOT;
    use automerge::transaction::Transactable;

    use crate::repo::tests::open_repo;

    fn member(repo: &Repo, name: &str) -> amphi_protocol::DocId {
        let m: NewMember = serde_json::from_value(serde_json::json!({
            "name": name, "gender": "female", "ethnicity": "Mongol",
            "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": repo.me().as_str(),
        }))
        .unwrap();
        repo.create_member(&m).unwrap()
    }

    #[test]
    fn verify_finds_an_unsigned_change_and_a_summary_that_names_other_heads() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_repo(dir.path());
        let (signed, unsigned, stale, misnamed) = (
            member(&repo, "Saruul"),
            member(&repo, "Bold"),
            member(&repo, "Tuya"),
            member(&repo, "Oyun"),
        );
        let sound = verify(&repo, Inventory::List).unwrap();
        assert!(sound.problems.is_empty(), "{:?}", sound.problems);
        assert!(sound.documents >= 4 && sound.changes >= 4, "{sound:?}");
        let listed = sound.inventory.as_ref().expect("inventory asked for");
        assert_eq!(listed.len() as u64, sound.documents);
        let saruul = listed.iter().find(|h| h.doc == signed.as_str()).unwrap();
        let heads = repo.load(&signed).unwrap().unwrap().get_heads();
        assert_eq!(saruul.heads, vec![heads[0].to_string()]);
        assert_eq!(saruul.kind, amphi_protocol::DocKind::Member);
        assert!(!saruul.scope.is_empty(), "{saruul:?}");

        // A change stored without its attestation (as a store damaged by hand would be).
        let mut doc = repo.load(&unsigned).unwrap().unwrap();
        let before = doc.get_heads();
        doc.put(ROOT, "note", "written around the gate").unwrap();
        commit_as(&mut doc, repo.me(), &Stamp::at(crate::repo::now_ms())).unwrap();
        let summary = repo.store().summary(&unsigned).unwrap().unwrap();
        let summary = amphi_protocol::office::DocSummary {
            digest: heads_digest(&doc.get_heads()),
            heads: doc.get_heads(),
            ..summary
        };
        repo.store()
            .save(&unsigned, &mut doc, &before, &summary, &[], None)
            .unwrap();
        // A summary that names heads the document does not have.
        let mut wrong = repo.store().summary(&stale).unwrap().unwrap();
        wrong.digest = [9; 16];
        repo.store().set_summary(&stale, &wrong).unwrap();
        // One whose digest is right but whose heads are not the document's.
        let mut wrong = repo.store().summary(&misnamed).unwrap().unwrap();
        assert!(
            !wrong.heads.is_empty(),
            "this build's summaries name the heads"
        );
        wrong.heads = vec![automerge::ChangeHash([7; 32])];
        repo.store().set_summary(&misnamed, &wrong).unwrap();

        let found = verify(&repo, Inventory::Skip).unwrap();
        let docs: Vec<&str> = found.problems.iter().map(|p| p.doc.as_str()).collect();
        assert_eq!(docs.len(), 3, "{:?}", found.problems);
        assert!(docs.contains(&unsigned.as_str()) && docs.contains(&stale.as_str()));
        assert!(docs.contains(&misnamed.as_str()));
        assert!(!docs.contains(&signed.as_str()));
        let unsigned_problem = found.problems.iter().find(|p| p.doc == unsigned.as_str());
        assert!(
            unsigned_problem.unwrap().what.contains("unsigned"),
            "{found:?}"
        );
    }

    #[test]
    fn a_backup_is_a_whole_store_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_repo(dir.path());
        let id = member(&repo, "Saruul");
        let out = dir.path().join("backup.redb");
        let documents = repo.store().back_up_to(&out).unwrap();
        assert_eq!(documents, repo.store().summaries().unwrap().len() as u64);
        let copy = Store::open(&out, repo.me().as_str()).unwrap();
        let mut original = repo.load(&id).unwrap().unwrap();
        assert_eq!(
            copy.load(&id).unwrap().unwrap().get_heads(),
            original.get_heads()
        );
        assert_eq!(copy.incarnation(), repo.store().incarnation());
        drop(copy);
        assert!(!out.with_extension("partial").exists());
        let before = std::fs::read(&out).unwrap();
        member(&repo, "Bold");
        assert!(repo.store().back_up_to(&out).is_err());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            before,
            "the first backup is untouched"
        );

        // Restored, the same data gets a new incarnation and no sync states.
        let copy = Store::open(&out, repo.me().as_str()).unwrap();
        copy.save_sync_state(&id, "hoboksar/chagantolgay", b"x")
            .unwrap();
        copy.restored().unwrap();
        let copy = Store::open(&out, repo.me().as_str()).unwrap();
        assert_ne!(copy.incarnation(), repo.store().incarnation());
        assert_eq!(copy.sync_state(&id, "hoboksar/chagantolgay").unwrap(), None);
        assert!(copy.load(&id).unwrap().is_some());
    }
}
