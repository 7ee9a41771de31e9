//! The fleet view: every office's last-known sync status, including offices offline now.
//!
//! Each node writes a small report of its own status — time, peers with their states and
//! last sync, pending counts, document counts, a digest of its documents — into a status
//! document of its own (`s-<YYYYMM>-<org>`). Its scope is the office itself, so ancestors
//! receive it through ordinary sync and keep the last one when the office goes offline. The
//! id rotates monthly and status documents older than last month are dropped, so history
//! does not pile up. A township or county lists every office it knows of in its subtree
//! (from roster and status documents) with the report's age, marking stale ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use amphi_protocol::{DocId, DocKind, OrgPath};
use automerge::ROOT;
use automerge::transaction::Transactable;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::repo::{Repo, WriteError};
use crate::status::{PeerState, Status, now_rfc3339};

/// One office's report, as written into its status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it was written (RFC 3339).
    pub at: String,
    /// The office.
    pub org: String,
    /// Its node id.
    pub node_id: String,
    /// Its peers.
    pub peers: Vec<PeerLine>,
    /// Documents not yet in sync, summed over peers.
    pub pending: usize,
    /// Case files held.
    pub members: usize,
    /// Org rosters held.
    pub orgs: usize,
    /// Quarantined changes.
    pub quarantine: usize,
    /// Unacknowledged conflicts.
    pub conflicts: usize,
    /// Digest over every held document's heads: equal digests, equal data.
    pub digest: String,
}

/// A peer as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLine {
    /// Its org.
    pub org: String,
    /// connected / connecting / disconnected.
    pub state: PeerState,
    /// Last time in sync.
    pub last_sync_at: Option<String>,
    /// Documents pending with it.
    pub docs_pending: usize,
}

/// One office in the fleet view.
#[derive(Debug, Clone, Serialize)]
pub struct FleetEntry {
    /// The office.
    pub org: String,
    /// Its last report, if any reached this node.
    pub report: Option<Report>,
    /// Seconds since that report was written.
    pub age_seconds: Option<i64>,
    /// The report is older than the staleness threshold, or there is none.
    pub stale: bool,
}

fn month_of(t: time::OffsetDateTime) -> String {
    format!("{:04}{:02}", t.year(), u8::from(t.month()))
}

fn previous_month(t: time::OffsetDateTime) -> String {
    let (y, m) = (t.year(), u8::from(t.month()));
    if m == 1 {
        format!("{:04}12", y - 1)
    } else {
        format!("{y:04}{:02}", m - 1)
    }
}

/// This node's report, now.
///
/// Made from what the store keeps in memory (counts and placements): it is written every
/// time a peer's state changes, and reading every summary from disk for it took a core of
/// a 200,000-member mirror during a cold replication (found with `perf`).
pub fn report(repo: &Repo, status: &Status, node_id: &str) -> Result<Report, WriteError> {
    let counts = repo.store().doc_counts();
    let count = |kind: DocKind| counts.by_kind.get(kind.label()).copied().unwrap_or(0) as usize;
    let mut digest = Sha256::new();
    repo.store().for_each_placement(|id, p| {
        if !p.leaving && id.kind() != DocKind::Status {
            digest.update(id.as_str().as_bytes());
            digest.update(hex::encode(p.digest).as_bytes());
        }
    });
    let peers: Vec<PeerLine> = status
        .peers()
        .into_iter()
        .map(|p| PeerLine {
            org: p.org,
            state: p.state,
            last_sync_at: p.last_sync_at,
            docs_pending: p.docs_pending,
        })
        .collect();
    Ok(Report {
        at: now_rfc3339(),
        org: repo.me().to_string(),
        node_id: node_id.to_owned(),
        pending: peers.iter().map(|p| p.docs_pending).sum(),
        peers,
        members: count(DocKind::Member),
        orgs: count(DocKind::OrgRoster),
        quarantine: repo.store().quarantine_totals().values().sum::<u64>() as usize,
        conflicts: counts.conflicts as usize,
        digest: hex::encode(&digest.finalize()[..16]),
    })
}

/// The status document of `org` for this month.
pub fn status_doc_id(org: &OrgPath) -> DocId {
    DocId::status(org, &month_of(time::OffsetDateTime::now_utc()))
}

/// Writes this node's report into its status document for this month.
pub fn write_report(repo: &Repo, status: &Status, node_id: &str) -> Result<(), WriteError> {
    let now = time::OffsetDateTime::now_utc();
    let id = DocId::status(repo.me(), &month_of(now));
    let json = serde_json::to_string(&report(repo, status, node_id)?).expect("report serialises");
    let exists = repo.store().summary(&id)?.is_some();
    let me = repo.me().to_string();
    repo.write(&id, !exists, |doc, _| {
        if !exists {
            doc.put(ROOT, "kind", "status")?;
            doc.put(ROOT, "org", me.as_str())?;
        }
        doc.put(ROOT, "summary", json.as_str())?;
        Ok(())
    })?;
    // Status documents of months before last are dropped: only the latest report matters.
    let keep = [month_of(now), previous_month(now)];
    let mut old = Vec::new();
    repo.store().for_each_placement(|id, _| {
        if let Some((_, month)) = id.status_of()
            && !keep.iter().any(|k| k == month)
        {
            old.push(id.clone());
        }
    });
    for id in old {
        repo.store().purge(&id)?;
    }
    Ok(())
}

/// Writes reports until shutdown: every `interval`, and soon after a peer's state changes
/// (at most once a second).
pub async fn reporter(
    repo: Arc<Repo>,
    status: Arc<Status>,
    node_id: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = write_report(&repo, &status, &node_id) {
            tracing::warn!("cannot write the status report: {e}");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = status.changed.notified() => {
                // Let a burst of changes settle into one report.
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Every office this node knows of in its subtree, with its latest report and staleness.
pub fn fleet(repo: &Repo, stale_after: Duration) -> Result<Vec<FleetEntry>, WriteError> {
    let now = time::OffsetDateTime::now_utc();
    let mut offices: BTreeMap<String, Option<Report>> = BTreeMap::new();
    for (id, s) in repo.store().summaries()? {
        match id.kind() {
            DocKind::OrgRoster => {
                if let Some(org) = id.roster_org() {
                    offices.entry(org.to_string()).or_default();
                }
            }
            DocKind::Status if !s.leaving => {
                // Filed under the org the document's id names (only that org may write it),
                // never under the org the report claims: an office cannot fake a sibling's.
                let Some((org, _)) = id.status_of() else {
                    continue;
                };
                let Some(doc) = repo.load(&id)? else { continue };
                let reader = amphi_protocol::reader::Reader::now(&doc);
                let Some(report) = reader
                    .str(&ROOT, "summary")
                    .and_then(|j| serde_json::from_str::<Report>(&j).ok())
                else {
                    continue;
                };
                if report.org != org.as_str() {
                    tracing::warn!(doc = %id, claimed = %report.org, "ignored a status report that names another office");
                    continue;
                }
                let slot = offices.entry(org.to_string()).or_default();
                if slot.as_ref().is_none_or(|r| r.at < report.at) {
                    *slot = Some(report);
                }
            }
            _ => {}
        }
    }
    let me = repo.me();
    Ok(offices
        .into_iter()
        .filter(|(org, _)| OrgPath::parse(org).is_ok_and(|o| me.is_at_or_above(&o)))
        .map(|(org, report)| {
            let age = report.as_ref().and_then(|r| {
                time::OffsetDateTime::parse(&r.at, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|t| (now - t).whole_seconds())
            });
            let stale = age.is_none_or(|a| a > stale_after.as_secs() as i64);
            FleetEntry {
                org,
                report,
                age_seconds: age,
                stale,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::open_repo;

    /// The report made from memory says what reading every summary says.
    #[test]
    fn the_report_agrees_with_every_summary() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_repo(dir.path());
        let me = repo.me().to_string();
        let mut ids = Vec::new();
        for name in ["Saruul", "Bayar", "Tuya"] {
            let member = serde_json::from_value(serde_json::json!({
                "name": name, "gender": "female", "ethnicity": "Mongol",
                "birth_date": "1971-03-02", "joined_at": "1996-07-01", "home_org": me,
            }))
            .unwrap();
            ids.push(repo.create_member(&member).unwrap());
        }
        // One file is purged: no longer counted or digested.
        repo.office()
            .purge_as_left(&ids[0], crate::repo::now_ms())
            .unwrap();
        let status = Status::default();
        write_report(&repo, &status, "n1").unwrap();
        let report = report(&repo, &status, "n1").unwrap();

        let summaries = repo.store().summaries().unwrap();
        let held: Vec<_> = summaries.iter().filter(|(_, s)| !s.leaving).collect();
        let mut digest = Sha256::new();
        for (id, s) in &held {
            if id.kind() != DocKind::Status {
                digest.update(id.as_str().as_bytes());
                digest.update(hex::encode(s.digest).as_bytes());
            }
        }
        let of = |kind| held.iter().filter(|(id, _)| id.kind() == kind).count();
        assert_eq!(report.members, of(DocKind::Member));
        assert_eq!(report.members, 2);
        assert_eq!(report.orgs, of(DocKind::OrgRoster));
        assert_eq!(
            report.conflicts,
            held.iter().map(|(_, s)| s.conflicts.len()).sum::<usize>()
        );
        assert_eq!(report.digest, hex::encode(&digest.finalize()[..16]));
    }
}
