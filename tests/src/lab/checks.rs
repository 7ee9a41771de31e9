//! What must hold once the faults have cleared: every office holds exactly the documents in
//! its scope, at the same heads as every other office holding them; every acknowledged write
//! is present wherever its case file may be; the county's fleet view shows every office fresh.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::county::{Client, OFFICES};
use super::workload::Acked;

/// One document an office holds, as `amphi verify --inventory` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Held {
    /// Document id.
    pub doc: String,
    /// `member`, `org`, `revocations` or `status`.
    pub kind: String,
    /// Its scope.
    pub scope: Vec<String>,
    /// Its heads.
    pub heads: Vec<String>,
}

/// Every office's inventory, by short name.
pub type Inventories = BTreeMap<&'static str, Vec<Held>>;

/// Parses the JSON report of `amphi verify --inventory --json` (or `GET /api/v1/verify?inventory=true`),
/// insisting it found no problem.
pub fn inventory_of(report: &serde_json::Value) -> anyhow::Result<Vec<Held>> {
    let problems = report["problems"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        problems == 0,
        "verify found problems: {}",
        report["problems"]
    );
    Ok(serde_json::from_value(report["inventory"].clone())?)
}

/// Reads every office's inventory through its running node.
pub async fn inventories(client: &Client) -> anyhow::Result<Inventories> {
    let mut all = Inventories::new();
    for &(name, _, _) in OFFICES {
        let (status, report) = client.get(name, "/api/v1/verify?inventory=true").await?;
        anyhow::ensure!(status == 200, "{name}: verify answered {status}: {report}");
        all.insert(name, inventory_of(&report)?);
    }
    Ok(all)
}

/// Whether an office of org `office` may hold a document with scope `scope` (of `kind`).
fn may_hold(office: &str, kind: &str, scope: &[String]) -> bool {
    kind == "revocations"
        || scope
            .iter()
            .any(|s| s == office || s.starts_with(&format!("{office}/")))
}

fn org_of(name: &str) -> &'static str {
    OFFICES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, org, _)| *org)
}

/// What differs from a converged county (empty: converged).
#[derive(Debug, Default)]
pub struct Divergence {
    /// An office holds a document outside its scope: a security failure, never allowed.
    pub out_of_scope: Vec<String>,
    /// An office that may hold a document does not (yet).
    pub missing: Vec<String>,
    /// Offices hold a document at different heads or with different scopes (not yet synced).
    pub differing: Vec<String>,
    /// Documents compared.
    pub documents: usize,
}

impl Divergence {
    /// Nothing differs, and nobody holds what it may not.
    pub fn converged(&self) -> bool {
        self.out_of_scope.is_empty() && self.missing.is_empty() && self.differing.is_empty()
    }
}

/// Compares the offices' inventories. Status reports (rewritten every few seconds by their
/// office) are checked for scope only.
pub fn compare(all: &Inventories) -> Divergence {
    let mut by_doc: BTreeMap<&str, Vec<(&'static str, &Held)>> = BTreeMap::new();
    for (&office, held) in all {
        for h in held {
            by_doc.entry(&h.doc).or_default().push((office, h));
        }
    }
    let mut found = Divergence {
        documents: by_doc.len(),
        ..Divergence::default()
    };
    for (doc, holders) in by_doc {
        let first = holders[0].1;
        for (office, h) in &holders {
            if !may_hold(org_of(office), &h.kind, &h.scope) {
                found
                    .out_of_scope
                    .push(format!("{office} holds {doc} (scope {:?})", h.scope));
            }
            if h.kind != "status" && (h.heads != first.heads || h.scope != first.scope) {
                found.differing.push(format!(
                    "{doc}: {office} has heads {:?} scope {:?}, {} has {:?} {:?}",
                    h.heads, h.scope, holders[0].0, first.heads, first.scope
                ));
            }
        }
        let holding: BTreeSet<&str> = holders.iter().map(|(o, _)| *o).collect();
        for &(office, org, _) in OFFICES {
            if may_hold(org, &first.kind, &first.scope) && !holding.contains(office) {
                found.missing.push(format!("{office} lacks {doc}"));
            }
        }
    }
    found
}

/// Every acknowledged write that some office which may hold its member does not show.
pub async fn lost_writes(
    client: &Client,
    acked: &[Acked],
    all: &Inventories,
) -> anyhow::Result<Vec<String>> {
    let mut scope_of: BTreeMap<&str, &Held> = BTreeMap::new();
    for held in all.values().flatten() {
        scope_of.insert(&held.doc, held);
    }
    let mut by_member: BTreeMap<&str, Vec<&Acked>> = BTreeMap::new();
    for a in acked {
        by_member.entry(&a.member).or_default().push(a);
    }
    let mut lost = Vec::new();
    for (member, writes) in by_member {
        let Some(held) = scope_of.get(member) else {
            lost.push(format!(
                "{member}: no office holds it ({} writes)",
                writes.len()
            ));
            continue;
        };
        for &(office, org, _) in OFFICES {
            if !may_hold(org, &held.kind, &held.scope) {
                continue;
            }
            let (status, file) = client
                .get(office, &format!("/api/v1/members/{member}"))
                .await?;
            for w in &writes {
                if status != 200 || !w.write.shown_in(&file) {
                    lost.push(format!(
                        "{member}: {:?} acknowledged by {} is missing at {office}",
                        w.write, w.office
                    ));
                }
            }
        }
    }
    Ok(lost)
}

/// Offices the county's fleet view does not show fresh.
pub async fn not_fresh(client: &Client) -> anyhow::Result<Vec<String>> {
    let (status, fleet) = client.get("hoboksar", "/api/v1/fleet").await?;
    anyhow::ensure!(status == 200, "fleet answered {status}: {fleet}");
    let mut stale = Vec::new();
    for &(name, org, _) in OFFICES {
        let entry = fleet["offices"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["org"] == org));
        match entry {
            None => stale.push(format!("{name}: not in the fleet view")),
            Some(e) if e["stale"] != false || e["report"].is_null() => stale.push(format!(
                "{name}: stale (last report {} s ago)",
                e["age_seconds"]
            )),
            Some(_) => {}
        }
    }
    Ok(stale)
}
