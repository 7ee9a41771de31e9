//! What the office knows of a document without loading it: its summary (kind, names,
//! scope, digest, who left it) and, from that, what each peer may be sent of it.
//!
//! The summary is computed from the document once per change ([`summarise_after`]) and
//! stored beside it; every later decision about peers (offer it? answer for it? only up to
//! where the peer left?) reads the summary's [`Placement`], never the document.

use automerge::{AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::casefile::{CaseFile, MemberFacts};
use crate::inventory::heads_digest;
use crate::reader::Reader;
use crate::visibility::{may_hold, scope};
use crate::{DocId, DocKind, OrgPath, roster, transfer};

/// What the node knows of a document without loading it: kind, scope, names for lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSummary {
    /// `member` or `org`.
    pub kind: String,
    /// Member name (or org name).
    pub name: String,
    /// Home org of a member; the org of a roster.
    pub home_org: Option<String>,
    /// Residence org of a two-dwelling member.
    pub residence_org: Option<String>,
    /// The document's scope.
    pub scope: Vec<String>,
    /// Hex digest of the heads.
    pub digest: String,
    /// Orgs that left the document's scope, with the heads at which they left: their offices
    /// may still sync up to those heads, so they learn that they left (and purge).
    #[serde(default)]
    pub exits: Vec<Exit>,
    /// The document left this office's scope, but an office below may still hold it: it is
    /// kept (hidden from the API) until the child on the way there confirms it left too.
    #[serde(default)]
    pub leaving: bool,
    /// Children that confirmed they no longer hold the document.
    #[serde(default)]
    pub confirmed: Vec<String>,
    /// This office's own write took the document out of its scope: it is kept until a peer
    /// that still holds it has the write.
    #[serde(default)]
    pub awaiting_upstream: bool,
    /// How this office held a document that is leaving it (for its roster history line,
    /// written when the document is purged, after the change that took it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_as: Option<HeldAs>,
    /// Transfers of a case file: id, from, to, resolved state.
    #[serde(default)]
    pub transfers: Vec<TransferLine>,
    /// Ids of conflicts not yet acknowledged.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Latest date of any activity, contact or report-in (YYYY-MM-DD).
    #[serde(default)]
    pub last_seen: Option<String>,
}

/// How an office held a member's case file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldAs {
    /// The member's home office.
    Home,
    /// The two-dwelling member's residence office.
    Residence,
}

/// One transfer, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLine {
    /// `t-…`.
    pub id: String,
    /// The home it left from.
    pub from_org: String,
    /// The target.
    pub to_org: String,
    /// Resolved state.
    pub state: String,
}

/// An org that left a document's scope, and the document's heads (hex) when it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The org.
    pub org: String,
    /// Heads at the exit.
    pub heads: Vec<String>,
}

/// Where a document stands for syncing — its heads digest, its scope and who left it — kept
/// in memory for every document, so deciding what a peer may receive (and reconciling with
/// it) never reads or parses the store's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Digest of the document's heads.
    pub digest: [u8; 16],
    /// The document's scope.
    pub scope: Vec<OrgPath>,
    /// Orgs that left the scope, with the heads when they left.
    pub exits: Vec<(OrgPath, Vec<ChangeHash>)>,
    /// Leaving this office, kept until the parent holds it (see [`DocSummary::awaiting_upstream`]).
    pub awaiting_upstream: bool,
}

impl Placement {
    /// The placement a summary describes.
    pub fn of(s: &DocSummary) -> Placement {
        let mut digest = [0u8; 16];
        let _ = hex::decode_to_slice(&s.digest, &mut digest);
        Placement {
            digest,
            scope: s
                .scope
                .iter()
                .filter_map(|o| OrgPath::parse(o).ok())
                .collect(),
            exits: s
                .exits
                .iter()
                .filter_map(|e| {
                    let org = OrgPath::parse(&e.org).ok()?;
                    Some((org, e.heads.iter().filter_map(|h| h.parse().ok()).collect()))
                })
                .collect(),
            awaiting_upstream: s.awaiting_upstream,
        }
    }
}

/// The summary the store keeps of a document (kind, names, scope, digest).
pub fn summarise(id: &DocId, doc: &mut AutoCommit) -> DocSummary {
    let digest = hex::encode(heads_digest(&doc.get_heads()));
    let scope: Vec<String> = scope(id, doc).iter().map(ToString::to_string).collect();
    let mut summary = DocSummary {
        scope,
        digest,
        ..DocSummary::default()
    };
    match id.kind() {
        DocKind::Member => {
            let reader = Reader::now(doc);
            let (entries, affiliation) = transfer::resolve_doc(&reader);
            let facts = MemberFacts::from_affiliation(&entries, &affiliation);
            summary.kind = "member".into();
            summary.home_org = facts.home_org.map(|o| o.to_string());
            summary.residence_org = facts.residence_org.map(|o| o.to_string());
            if let Some(case) = CaseFile::read(id, doc) {
                summary.transfers = case
                    .transfers
                    .iter()
                    .map(|t| TransferLine {
                        id: t.id.clone(),
                        from_org: t.from_org.clone(),
                        to_org: t.to_org.clone(),
                        state: t.state.clone(),
                    })
                    .collect();
                let activity = case.activities.iter().map(|a| a.date.clone());
                let contact = case
                    .contact
                    .as_ref()
                    .and_then(|c| c.last_contact_at.clone());
                let report = case
                    .residence
                    .as_ref()
                    .and_then(|r| r.reported_in_at.clone());
                summary.last_seen = activity.chain(contact).chain(report).max();
                summary.name = case.name;
            }
            let acked = transfer::acknowledged(&reader);
            summary.conflicts = affiliation
                .conflicts
                .into_iter()
                .map(|c| c.id)
                .filter(|c| !acked.contains(c))
                .collect();
        }
        DocKind::OrgRoster => {
            summary.kind = "org".into();
            summary.name = roster::read(doc)
                .profile
                .get("name")
                .cloned()
                .unwrap_or_default();
            summary.home_org = id.roster_org().map(|o| o.to_string());
        }
        DocKind::Revocations => summary.kind = "revocations".into(),
        DocKind::Status => {
            summary.kind = "status".into();
            summary.home_org = id.status_of().map(|(o, _)| o.to_string());
        }
    }
    summary
}

/// The summary after a change, carrying forward who left the scope (and where) from the
/// summary before it.
pub fn summarise_after(
    id: &DocId,
    doc: &mut AutoCommit,
    before: Option<&DocSummary>,
) -> DocSummary {
    let mut after = summarise(id, doc);
    let Some(before) = before else { return after };
    let heads: Vec<String> = doc.get_heads().iter().map(ToString::to_string).collect();
    let mut exits: Vec<Exit> = before
        .exits
        .iter()
        .filter(|e| !after.scope.contains(&e.org))
        .cloned()
        .collect();
    for org in before.scope.iter().filter(|o| !after.scope.contains(o)) {
        exits.retain(|e| &e.org != org);
        exits.push(Exit {
            org: org.clone(),
            heads: heads.clone(),
        });
    }
    after.exits = exits;
    // Children that confirmed they purged it still do not hold it (forgetting them left a
    // relay waiting for offices that had gone: found by the county simulator).
    after.confirmed = before.confirmed.clone();
    after
}

/// What a peer may receive of a document.
#[derive(Debug, PartialEq, Eq)]
pub enum View {
    /// The document as it is.
    Holds,
    /// The document up to these heads, where the peer's org left its scope.
    Exited(Vec<ChangeHash>),
    /// Nothing.
    Nothing,
    /// This node does not hold the document.
    Unknown,
}

/// What `peer` may receive of document `id`, placed as `placement` says (`None`: not held).
pub fn view_of(id: &DocId, placement: Option<&Placement>, peer: &OrgPath) -> View {
    let Some(p) = placement else {
        return View::Unknown;
    };
    if may_hold(id, &p.scope, peer) {
        return View::Holds;
    }
    // Exits are recorded in order at this office's heads of the time, which only grow: the
    // latest exit of an org at or below the peer is everything the peer was ever entitled
    // to. (The first one found would hold a township at the point where one of its villages
    // left, never telling it that the member later left another of its villages: found by
    // the county simulator.)
    p.exits
        .iter()
        .rev()
        .find(|(org, _)| peer.is_at_or_above(org))
        .map_or(View::Nothing, |(_, heads)| View::Exited(heads.clone()))
}
