//! Organisation paths: the name of one office in the county's administrative tree.
//!
//! `hoboksar/chagantolgay/bayin` names the Bayin village under the Chagantolgay township of
//! Hoboksar county. An [`OrgPath`] is validated once, where it enters the system (config,
//! certificate, API, wire), and is trusted everywhere after that.

use std::fmt;
use std::str::FromStr;

/// Most segments an org path may have (county → … → branch).
pub const MAX_SEGMENTS: usize = 8;
/// Longest segment, in ASCII characters.
pub const MAX_SEGMENT_LEN: usize = 32;

/// A validated org path: 1 to 8 `/`-separated segments, each `[a-z0-9][a-z0-9-]{0,31}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgPath(String);

/// Why a string is not an org path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgPathError {
    /// The string was empty.
    #[error("org path is empty")]
    Empty,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("org path has {0} segments; at most {MAX_SEGMENTS} are allowed")]
    TooDeep(usize),
    /// A segment broke the `[a-z0-9][a-z0-9-]{{0,31}}` rule.
    #[error(
        "org path segment {segment:?} is invalid: use 1 to 32 characters of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadSegment {
        /// The offending segment.
        segment: String,
    },
}

impl OrgPath {
    /// Parses and validates an org path.
    pub fn parse(s: &str) -> Result<Self, OrgPathError> {
        if s.is_empty() {
            return Err(OrgPathError::Empty);
        }
        let count = s.split('/').count();
        if count > MAX_SEGMENTS {
            return Err(OrgPathError::TooDeep(count));
        }
        for segment in s.split('/') {
            if !valid_segment(segment) {
                return Err(OrgPathError::BadSegment {
                    segment: segment.to_owned(),
                });
            }
        }
        Ok(OrgPath(s.to_owned()))
    }

    /// The path as written, e.g. `hoboksar/chagantolgay/bayin`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments from the county down.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// How many segments (1 for a county).
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The office directly above, or `None` for a root (county).
    pub fn parent(&self) -> Option<OrgPath> {
        self.0.rsplit_once('/').map(|(p, _)| OrgPath(p.to_owned()))
    }

    /// The office `name` directly below this one.
    pub fn child(&self, name: &str) -> Result<OrgPath, OrgPathError> {
        OrgPath::parse(&format!("{}/{}", self.0, name))
    }

    /// True when `self` is a strict ancestor of `other` (its segments are a strict prefix).
    pub fn is_ancestor_of(&self, other: &OrgPath) -> bool {
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// True when `self` is `other` or one of its ancestors: the offices with authority
    /// "of `other` and its ancestors".
    pub fn is_at_or_above(&self, other: &OrgPath) -> bool {
        self == other || self.is_ancestor_of(other)
    }

    /// A DNS name for this office, used as the TLS server name and DNS SAN:
    /// `hoboksar/chagantolgay/bayin` → `bayin.chagantolgay.hoboksar.amphi`.
    pub fn dns_name(&self) -> String {
        let mut labels: Vec<&str> = self.segments().collect();
        labels.reverse();
        format!("{}.amphi", labels.join("."))
    }
}

fn valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SEGMENT_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl FromStr for OrgPath {
    type Err = OrgPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgPath::parse(s)
    }
}

impl fmt::Display for OrgPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OrgPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgPath({})", self.0)
    }
}

impl serde::Serialize for OrgPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for OrgPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OrgPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }

    #[test]
    fn accepts_real_paths() {
        for s in [
            "hoboksar",
            "hoboksar/hoboksar-town/xingfu",
            "a/b/c/d/e/f/g/h",
            "0",
            &"x".repeat(32),
        ] {
            assert_eq!(OrgPath::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn refuses_bad_paths_with_the_reason() {
        assert_eq!(OrgPath::parse(""), Err(OrgPathError::Empty));
        assert_eq!(
            OrgPath::parse("a/b/c/d/e/f/g/h/i"),
            Err(OrgPathError::TooDeep(9))
        );
        for bad in [
            "Hoboksar",
            "hoboksar/",
            "/hoboksar",
            "a//b",
            "-a",
            "a b",
            "a/../b",
            "中文",
            &"x".repeat(33),
        ] {
            assert!(
                matches!(OrgPath::parse(bad), Err(OrgPathError::BadSegment { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn ancestry_is_by_whole_segments() {
        let county = org("hoboksar");
        let town = org("hoboksar/hoboksar-town");
        let xingfu = org("hoboksar/hoboksar-town/xingfu");
        let lookalike = org("hoboksar2");
        assert!(county.is_ancestor_of(&town));
        assert!(county.is_ancestor_of(&xingfu));
        assert!(!town.is_ancestor_of(&town));
        assert!(town.is_at_or_above(&town));
        assert!(!county.is_ancestor_of(&lookalike));
        assert!(!org("hoboksar/hoboksar").is_ancestor_of(&org("hoboksar/hoboksar-town")));
        assert!(!xingfu.is_at_or_above(&town));
    }

    #[test]
    fn parent_child_and_dns() {
        let bayin = org("hoboksar/chagantolgay/bayin");
        assert_eq!(bayin.parent(), Some(org("hoboksar/chagantolgay")));
        assert_eq!(org("hoboksar").parent(), None);
        assert_eq!(org("hoboksar").child("t1").unwrap(), org("hoboksar/t1"));
        assert!(org("hoboksar").child("T1").is_err());
        assert_eq!(bayin.dns_name(), "bayin.chagantolgay.hoboksar.amphi");
        assert_eq!(bayin.depth(), 3);
    }
}
