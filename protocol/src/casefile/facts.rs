//! The facts of a case file that decide its scope and who may write it, as the gate, the
//! judge and visibility read them: who holds it (home, residence, open transfer targets)
//! and who recorded an activity, as seen through a [`Reader`] (now, or at a change's
//! dependencies).

use automerge::ROOT;

use super::keys::{ACTIVITIES, RECORDED_BY};
use crate::affiliation::Affiliation;
use crate::org::OrgPath;
use crate::reader::Reader;

/// The essentials of a case file that decide scope and authority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberFacts {
    /// Home org, once created.
    pub home_org: Option<OrgPath>,
    /// Current residence org, if two-dwelling.
    pub residence_org: Option<OrgPath>,
    /// Target orgs of open transfers.
    pub open_transfer_targets: Vec<OrgPath>,
}

impl MemberFacts {
    /// Reads the facts through `reader` (derived from the events it sees).
    pub fn read(reader: &Reader<'_>) -> MemberFacts {
        let (entries, affiliation) = crate::transfer::resolve_doc(reader);
        MemberFacts::from_affiliation(&entries, &affiliation)
    }

    /// The facts of an affiliation already derived.
    pub fn from_affiliation(entries: &[crate::transfer::Entry], a: &Affiliation) -> MemberFacts {
        let org = |s: Option<&str>| s.and_then(|s| OrgPath::parse(s).ok());
        MemberFacts {
            home_org: org(a.home.as_deref()),
            residence_org: org(a.residence_org()),
            open_transfer_targets: a
                .open_targets(entries)
                .filter_map(|o| OrgPath::parse(o).ok())
                .collect(),
        }
    }

    /// The document's scope: home, residence, open transfer targets.
    pub fn scope(&self) -> Vec<OrgPath> {
        self.home_org
            .iter()
            .chain(self.residence_org.iter())
            .chain(self.open_transfer_targets.iter())
            .cloned()
            .collect()
    }
}

/// Who recorded activity `activity_id`, as seen by `reader`.
pub fn activity_recorder(reader: &Reader<'_>, activity_id: &str) -> Option<String> {
    let activities = reader.obj(&ROOT, ACTIVITIES)?;
    let entry = reader.obj(&activities, activity_id)?;
    reader.str(&entry, RECORDED_BY)
}
