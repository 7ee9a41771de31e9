//! Identifiers of documents and of entries inside them.
//!
//! Ids are newtypes with their own parse errors, validated where they enter (API path,
//! wire frame), so the rest of the code never sees a malformed id.

use std::fmt;
use std::str::FromStr;

use crate::org::OrgPath;

/// The id of the revocation list.
pub const REVOCATIONS_ID: &str = "r-ca";

/// Longest id accepted anywhere (an org roster id carries an org path).
pub const MAX_ID_LEN: usize = 300;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {why}")]
pub struct IdError {
    what: &'static str,
    value: String,
    why: &'static str,
}

/// What a document is: a member's case file or an org's roster. Written as `member`, `org`,
/// `revocations` or `status` (in stored summaries and the API).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// 党员档案: one member's case file.
    Member,
    /// 组织名册: one org's roster document (profile and history).
    #[serde(rename = "org")]
    OrgRoster,
    /// The county's revocation list, held by every office.
    Revocations,
    /// One office's own sync-status reports for one month (its ancestors see them).
    Status,
}

impl DocKind {
    /// The kind as written in summaries, counts and the API: `member`, `org`, `revocations`
    /// or `status`.
    pub fn label(self) -> &'static str {
        match self {
            DocKind::Member => "member",
            DocKind::OrgRoster => "org",
            DocKind::Revocations => "revocations",
            DocKind::Status => "status",
        }
    }
}

/// The id of a replicated document: `m-<16 hex>` for a case file, `o-<org path>` for a roster.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId(String);

impl DocId {
    /// The case file id for a member, from 8 random bytes chosen by the caller.
    pub fn new_member(random: [u8; 8]) -> DocId {
        DocId(format!("m-{}", hex::encode(random)))
    }

    /// The id of the case file created by the change `hash`: `m-` and the first 8 bytes of
    /// the hash in hex. A case file's creation change is its only root, so binding the id to
    /// it leaves no room for a rival creation under the same id.
    pub fn member_created_by(hash: &automerge::ChangeHash) -> DocId {
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.0[..8]);
        DocId::new_member(first)
    }

    /// The roster document of `org`.
    pub fn roster(org: &OrgPath) -> DocId {
        DocId(format!("o-{org}"))
    }

    /// The revocation list document (one per county, held by every office).
    pub fn revocations() -> DocId {
        DocId(REVOCATIONS_ID.to_owned())
    }

    /// The status document of `org` for `month` (`YYYYMM`).
    pub fn status(org: &OrgPath, month: &str) -> DocId {
        DocId(format!("s-{month}-{org}"))
    }

    /// For a status id, its org and month.
    pub fn status_of(&self) -> Option<(OrgPath, &str)> {
        let rest = self.0.strip_prefix("s-")?;
        let (month, org) = rest.split_once('-')?;
        Some((OrgPath::parse(org).ok()?, month))
    }

    /// Parses an id from the API or the wire.
    pub fn parse(s: &str) -> Result<DocId, IdError> {
        let err = |why| IdError {
            what: "document id",
            value: s.chars().take(80).collect(),
            why,
        };
        if s.len() > MAX_ID_LEN {
            return Err(err("too long"));
        }
        if let Some(hexpart) = s.strip_prefix("m-") {
            if hexpart.len() == 16
                && hexpart
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Ok(DocId(s.to_owned()));
            }
            return Err(err("a member id is m- followed by 16 lowercase hex digits"));
        }
        if let Some(rest) = s.strip_prefix("s-") {
            let ok = rest.split_once('-').is_some_and(|(month, org)| {
                month.len() == 6
                    && month.bytes().all(|b| b.is_ascii_digit())
                    && OrgPath::parse(org).is_ok()
            });
            return if ok {
                Ok(DocId(s.to_owned()))
            } else {
                Err(err("a status id is s-YYYYMM-<org path>"))
            };
        }
        if s == REVOCATIONS_ID {
            return Ok(DocId(s.to_owned()));
        }
        if let Some(org) = s.strip_prefix("o-") {
            return match OrgPath::parse(org) {
                Ok(_) => Ok(DocId(s.to_owned())),
                Err(_) => Err(err("a roster id is o- followed by an org path")),
            };
        }
        Err(err(
            "ids start with m- (member) or o- (org roster), or are r-ca (revocations)",
        ))
    }

    /// Which kind of document this id names.
    pub fn kind(&self) -> DocKind {
        if self.0.starts_with("m-") {
            DocKind::Member
        } else if self.0 == REVOCATIONS_ID {
            DocKind::Revocations
        } else if self.0.starts_with("s-") {
            DocKind::Status
        } else {
            DocKind::OrgRoster
        }
    }

    /// For a roster id, the org it belongs to.
    pub fn roster_org(&self) -> Option<OrgPath> {
        self.0
            .strip_prefix("o-")
            .and_then(|o| OrgPath::parse(o).ok())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Ids order as their text, so maps keyed by `DocId` can be queried by `&str` ranges.
impl std::borrow::Borrow<str> for DocId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for DocId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DocId::parse(s)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({})", self.0)
    }
}

impl serde::Serialize for DocId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An entry id inside a case file (activity `a-…`, transfer `t-…`): prefix plus 16 hex digits.
pub fn entry_id(prefix: char, random: [u8; 8]) -> String {
    format!("{prefix}-{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_and_roster_ids_round_trip() {
        let m = DocId::new_member([0xab; 8]);
        assert_eq!(m.as_str(), "m-abababababababab");
        assert_eq!(DocId::parse(m.as_str()).unwrap(), m);
        assert_eq!(m.kind(), DocKind::Member);
        let org = OrgPath::parse("hoboksar/t1").unwrap();
        let r = DocId::roster(&org);
        assert_eq!(
            DocId::parse(r.as_str()).unwrap().roster_org(),
            Some(org.clone())
        );
        assert_eq!(r.kind(), DocKind::OrgRoster);
        assert_eq!(DocId::parse("r-ca").unwrap().kind(), DocKind::Revocations);
        let s = DocId::status(&org, "202611");
        assert_eq!(s.as_str(), "s-202611-hoboksar/t1");
        let parsed = DocId::parse(s.as_str()).unwrap();
        assert_eq!(parsed.kind(), DocKind::Status);
        assert_eq!(parsed.status_of(), Some((org.clone(), "202611")));
        assert!(DocId::parse("s-2026-hoboksar").is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "m-",
            "m-ABABABABABABABAB",
            "m-abab",
            "x-1",
            "o-",
            "o-Bad/Org",
            "m-../../etc",
        ] {
            assert!(DocId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DocId::parse(&format!("o-{}", "a/".repeat(200))).is_err());
    }
}
