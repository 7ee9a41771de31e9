//! Who sees what: a document's scope and the visibility rule (contract.md).
//!
//! A node whose certificate names org P holds and syncs a document exactly when some path
//! in the document's scope is P or below P. Siblings and cousins never receive it.

use automerge::AutoCommit;

use crate::casefile::MemberFacts;
use crate::ids::{DocId, DocKind};
use crate::org::OrgPath;
use crate::reader::Reader;

/// The scope of a document as it is now: the orgs whose offices (and ancestors) hold it.
/// (The revocation list has no scope: every office holds it; see [`may_hold`].)
pub fn scope(id: &DocId, doc: &AutoCommit) -> Vec<OrgPath> {
    match id.kind() {
        DocKind::Member => MemberFacts::read(&Reader::now(doc)).scope(),
        DocKind::OrgRoster => id.roster_org().into_iter().collect(),
        DocKind::Revocations => Vec::new(),
        DocKind::Status => id.status_of().map(|(org, _)| org).into_iter().collect(),
    }
}

/// The scope of a document as it was at `heads`.
pub fn scope_at(id: &DocId, doc: &AutoCommit, heads: &[automerge::ChangeHash]) -> Vec<OrgPath> {
    match id.kind() {
        DocKind::Member => MemberFacts::read(&Reader::at(doc, heads)).scope(),
        _ => scope(id, doc),
    }
}

/// True when office `org` may hold document `id` whose scope is `scope`.
pub fn may_hold(id: &DocId, scope: &[OrgPath], org: &OrgPath) -> bool {
    id.kind() == DocKind::Revocations || visible_to(scope, org)
}

/// True when the office `org` may hold a document with this scope.
pub fn visible_to(scope: &[OrgPath], org: &OrgPath) -> bool {
    scope.iter().any(|s| org.is_at_or_above(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    #[test]
    fn two_dwelling_file_is_seen_along_both_branches_only() {
        let scope = [
            org("hoboksar/chagantolgay/bayin"),
            org("hoboksar/hoboksar-town/xingfu"),
        ];
        for sees in [
            "hoboksar",
            "hoboksar/chagantolgay",
            "hoboksar/chagantolgay/bayin",
            "hoboksar/hoboksar-town",
            "hoboksar/hoboksar-town/xingfu",
        ] {
            assert!(visible_to(&scope, &org(sees)), "{sees} should see it");
        }
        for blind in [
            "hoboksar/chagantolgay/tebke",
            "hoboksar/hoboksar-town/other",
            "hoboksar/chagantolgay/bayin/team1",
            "other",
            "hoboksar/other-town",
        ] {
            assert!(!visible_to(&scope, &org(blind)), "{blind} must not see it");
        }
        assert!(!visible_to(&[], &org("hoboksar")));
    }
}
