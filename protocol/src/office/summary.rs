//! What the office knows of a document without loading it: its summary (kind, names,
//! scope, digest, who left it) and, from that, what each peer may be sent of it.
//!
//! The summary is computed from the document once per change ([`summarise_after`]) and
//! stored beside it; every later decision about peers (offer it? answer for it? only up to
//! where the peer left?) reads the summary's [`Placement`], never the document.

use automerge::{AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};

use automerge::ROOT;

use crate::affiliation::Affiliation;
use crate::casefile::{KIND_MEMBER, MemberFacts};
use crate::inventory::heads_digest;
use crate::layout::{ACTIVITIES, CONTACT_PERSON, CONTACTS, IDENTITY, KIND, REPORTS, RESIDENCE};
use crate::reader::Reader;
use crate::visibility::{may_hold, scope};
use crate::{DocId, DocKind, OrgPath, roster, transfer};

/// What the node knows of a document without loading it: kind, scope, names for lists.
/// Stored as JSON beside the document (orgs and hashes as strings); every org and hash in it
/// is parsed when it is read, so a stored summary cannot carry an invalid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSummary {
    /// Case file, roster, revocations or status.
    pub kind: DocKind,
    /// Member name (or org name).
    pub name: String,
    /// Home org of a member; the org of a roster or of a status report.
    pub home_org: Option<OrgPath>,
    /// Residence org of a two-dwelling member.
    pub residence_org: Option<OrgPath>,
    /// The document's scope.
    pub scope: Vec<OrgPath>,
    /// Digest of the heads ([`heads_digest`]), hex.
    #[serde(with = "hex_digest")]
    pub digest: [u8; 16],
    /// The heads themselves, so that an offer to a peer that holds nothing of the document
    /// is made without loading it ([`super::Office::offer_to_empty`]). Empty in summaries
    /// written by earlier builds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<ChangeHash>,
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
    pub confirmed: Vec<OrgPath>,
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
    pub from_org: OrgPath,
    /// The target.
    pub to_org: OrgPath,
    /// Resolved state.
    pub state: String,
}

/// An org that left a document's scope, and the document's heads when it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The org.
    pub org: OrgPath,
    /// Heads at the exit.
    pub heads: Vec<ChangeHash>,
}

/// The heads digest as 32 hex digits in the stored JSON.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(digest: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        let mut digest = [0u8; 16];
        hex::decode_to_slice(&text, &mut digest).map_err(D::Error::custom)?;
        Ok(digest)
    }
}

/// Where a document stands for syncing — its heads digest, its scope and who left it — kept
/// in memory for every document, so deciding what a peer may receive (and reconciling with
/// it) never reads or parses the store's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Digest of the document's heads.
    pub digest: [u8; 16],
    /// The heads, when the summary names them and they match the digest; else empty.
    pub heads: Vec<ChangeHash>,
    /// The document's scope.
    pub scope: Vec<OrgPath>,
    /// Orgs that left the scope, with the heads when they left.
    pub exits: Vec<(OrgPath, Vec<ChangeHash>)>,
    /// Leaving this office, kept until the parent holds it (see [`DocSummary::awaiting_upstream`]).
    pub awaiting_upstream: bool,
    /// Kept only until others learn it left (see [`DocSummary::leaving`]).
    pub leaving: bool,
}

impl Placement {
    /// The placement a summary describes.
    pub fn of(s: &DocSummary) -> Placement {
        Placement {
            digest: s.digest,
            heads: if heads_digest(&s.heads) == s.digest {
                s.heads.clone()
            } else {
                Vec::new()
            },
            scope: s.scope.clone(),
            exits: s
                .exits
                .iter()
                .map(|e| (e.org.clone(), e.heads.clone()))
                .collect(),
            awaiting_upstream: s.awaiting_upstream,
            leaving: s.leaving,
        }
    }
}

/// The summary the store keeps of a document (kind, names, scope, digest).
pub fn summarise(id: &DocId, doc: &mut AutoCommit) -> DocSummary {
    let heads = doc.get_heads();
    let mut summary = DocSummary {
        kind: id.kind(),
        name: String::new(),
        home_org: None,
        residence_org: None,
        scope: Vec::new(),
        digest: heads_digest(&heads),
        heads,
        exits: Vec::new(),
        leaving: false,
        confirmed: Vec::new(),
        awaiting_upstream: false,
        held_as: None,
        transfers: Vec::new(),
        conflicts: Vec::new(),
        last_seen: None,
    };
    match id.kind() {
        DocKind::Member => {
            // Transfers and residences are replayed once, for the scope, the names and the
            // conflicts alike.
            let reader = Reader::now(doc);
            let (entries, affiliation) = transfer::resolve_doc(&reader);
            let facts = MemberFacts::from_affiliation(&entries, &affiliation);
            summary.scope = facts.scope();
            summary.home_org = facts.home_org;
            summary.residence_org = facts.residence_org;
            let acked = transfer::acknowledged(&reader);
            summary.conflicts = affiliation
                .conflicts
                .iter()
                .map(|c| c.id.clone())
                .filter(|c| !acked.contains(c))
                .collect();
            if let Some(listing) = listing(&reader, &entries, &affiliation) {
                summary.name = listing.name;
                summary.transfers = listing.transfers;
                summary.last_seen = listing.last_seen;
            }
        }
        DocKind::OrgRoster => {
            summary.scope = scope(id, doc);
            summary.name = roster::read(doc)
                .profile
                .get("name")
                .cloned()
                .unwrap_or_default();
            summary.home_org = id.roster_org();
        }
        DocKind::Revocations => {}
        DocKind::Status => {
            summary.scope = scope(id, doc);
            summary.home_org = id.status_of().map(|(o, _)| o);
        }
    }
    summary
}

/// What lists show of a case file: name, transfers, last sign of life.
struct Listing {
    name: String,
    transfers: Vec<TransferLine>,
    last_seen: Option<String>,
}

/// The listing of a case file (`None` if it is not one yet), read with as few reads as it
/// needs: it runs for every message that changes a document, and reading the whole case
/// file view (every activity's every field and comment) for three values was a tenth of a
/// received document's cost. It must agree with [`crate::casefile::CaseFile::read`]; the
/// county simulator checks that it does for every document of every run.
fn listing(
    r: &Reader<'_>,
    entries: &[transfer::Entry],
    affiliation: &Affiliation,
) -> Option<Listing> {
    if r.str(&ROOT, KIND).as_deref() != Some(KIND_MEMBER) || affiliation.home.is_none() {
        return None;
    }
    let identity = r.obj(&ROOT, IDENTITY)?;
    let mut lines: Vec<(&str, TransferLine)> = entries
        .iter()
        .filter_map(|e| {
            // The gate admits only transfers between valid orgs: one that does not parse
            // cannot be in a stored document, and is left out.
            let line = TransferLine {
                id: e.id.clone(),
                from_org: OrgPath::parse(&e.from_org).ok()?,
                to_org: OrgPath::parse(&e.to_org).ok()?,
                state: affiliation
                    .states
                    .get(&e.id)
                    .map_or("open", |s| s.name())
                    .to_owned(),
            };
            Some((e.opened_at.as_str(), line))
        })
        .collect();
    lines.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    let activity_dates = r.obj(&ROOT, ACTIVITIES).map(|m| {
        r.objects(&m)
            .iter()
            .map(|(_, e)| r.str(e, "date").unwrap_or_default())
            .max()
    });
    let last_contact = r.obj(&ROOT, CONTACTS).and_then(|c| {
        r.str_fields(&c)
            .into_iter()
            .filter(|(k, _)| k != CONTACT_PERSON)
            .map(|(_, at)| at)
            .max()
    });
    let reported_in = affiliation
        .residence
        .as_ref()
        .and_then(|a| a.org.as_deref())
        .and_then(|org| {
            let reports = r
                .obj(&ROOT, RESIDENCE)
                .and_then(|res| r.obj(&res, REPORTS))?;
            r.str(&reports, org)
        });
    Some(Listing {
        name: r.str(&identity, "name").unwrap_or_default(),
        transfers: lines.into_iter().map(|(_, line)| line).collect(),
        last_seen: [activity_dates.flatten(), last_contact, reported_in]
            .into_iter()
            .flatten()
            .max(),
    })
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
    let heads = doc.get_heads();
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
