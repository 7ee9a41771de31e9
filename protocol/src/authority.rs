//! Who may write what: the authority table of contract.md as pure functions.
//!
//! [`crate::judge`] names the [`Field`] each operation of a change touches; [`authorise`]
//! decides whether the change's author may write that field, given the document's facts as
//! the author saw them (at the change's dependencies). The node runs its own writes through
//! the same judge as a peer's changes, so the API's 403 and the wire's refusal never
//! disagree.

use crate::org::OrgPath;
use crate::refusal::Refusal;
use crate::transfer;
use crate::visibility::visible_to;

/// The field of a document that a write touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Root keys written once, by the change that creates the case file.
    Creation,
    /// Identity fields: name, gender, ethnicity, birth date, ID number, joined date, phone, categories.
    Identity,
    /// A residence assignment event (two-dwelling certificate issued, changed or ended).
    ResidenceAssignment,
    /// A report-in (报到) recorded for the named residence org.
    ReportIn {
        /// The org under which the report-in is recorded.
        org: String,
    },
    /// An activity entry (not its comments).
    Activity {
        /// Who recorded the entry: as the author saw it, or the author for a new entry.
        recorder: Option<String>,
    },
    /// A comment on an activity entry.
    ActivityComment,
    /// A half-yearly review (发证党组织审核).
    Review,
    /// Opening a transfer (home org and ancestors; from the current home).
    TransferOpen,
    /// Accepting, rejecting (target and ancestors) or cancelling (home and ancestors).
    TransferDecision {
        /// Which step.
        decision: transfer::Decision,
        /// The transfer as the author saw it.
        transfer: TransferFacts,
    },
    /// Acknowledging a conflict (any office in scope).
    ConflictAck,
    /// Naming the contact person (home org and ancestors).
    ContactPerson,
    /// An office's own last-contact date.
    ContactRecord {
        /// The org the date is recorded for.
        org: String,
    },
    /// Something written once that a later change touched.
    Immutable(String),
    /// A roster document's identity keys, profile, grids or history.
    Roster,
    /// A record of the revocation list (any office may relay a CA-signed record).
    Revocation,
    /// An office's own status report (only that office writes it).
    StatusReport,
    /// Anything else: refused.
    Unknown(String),
}

/// A transfer as the author of a decision saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFacts {
    /// The home it was opened from.
    pub from_org: String,
    /// Its target.
    pub to_org: String,
    /// Its derived state.
    pub state: transfer::State,
}

/// What the gate knows of a case file when judging a write.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Home org (for a creation, the home org the change sets).
    pub home_org: Option<OrgPath>,
    /// Residence org, if two-dwelling.
    pub residence_org: Option<OrgPath>,
    /// The document's scope.
    pub scope: Vec<OrgPath>,
    /// For a roster document, its org.
    pub roster_org: Option<OrgPath>,
}

fn home_authority(author: &OrgPath, facts: &Facts, field: &'static str) -> Result<(), Refusal> {
    match &facts.home_org {
        Some(home) if author.is_at_or_above(home) => Ok(()),
        home => Err(Refusal::NotHomeAuthority {
            field,
            home: home.as_ref().map_or("(none)".into(), ToString::to_string),
        }),
    }
}

fn residence_authority(
    author: &OrgPath,
    facts: &Facts,
    field: &'static str,
) -> Result<(), Refusal> {
    match &facts.residence_org {
        Some(res) if author.is_at_or_above(res) => Ok(()),
        res => Err(Refusal::NotResidenceAuthority {
            field,
            residence: res.as_ref().map_or("(none)".into(), ToString::to_string),
        }),
    }
}

/// Decides whether `author` may write `field` of a document with these facts.
pub fn authorise(author: &OrgPath, field: &Field, facts: &Facts) -> Result<(), Refusal> {
    match field {
        Field::Creation => home_authority(author, facts, "the case file"),
        Field::Identity => home_authority(author, facts, "identity"),
        Field::ResidenceAssignment => home_authority(author, facts, "the residence assignment"),
        Field::Review => home_authority(author, facts, "the half-year review"),
        Field::TransferOpen => home_authority(author, facts, "opening a transfer"),
        Field::TransferDecision {
            decision,
            transfer: t,
        } => {
            if t.state != transfer::State::Open {
                return Err(Refusal::TransferNotOpen(format!(
                    "(it is {})",
                    t.state.name()
                )));
            }
            let (org, what) = match decision {
                transfer::Decision::Cancel => (&t.from_org, "the home org"),
                _ => (&t.to_org, "the target org"),
            };
            if OrgPath::parse(org).is_ok_and(|o| author.is_at_or_above(&o)) {
                Ok(())
            } else {
                Err(Refusal::NotTransferParty {
                    step: *decision,
                    org: org.clone(),
                    what,
                })
            }
        }
        Field::ConflictAck | Field::ContactRecord { .. } if !visible_to(&facts.scope, author) => {
            Err(Refusal::NotInScope {
                author: author.to_string(),
            })
        }
        Field::ConflictAck => Ok(()),
        Field::ContactRecord { org } if org == author.as_str() => Ok(()),
        Field::ContactRecord { org } => Err(Refusal::StampMismatch {
            key: "contacts".into(),
            value: org.clone(),
            author: author.to_string(),
        }),
        Field::ContactPerson => home_authority(author, facts, "the contact person"),
        Field::Immutable(what) => Err(Refusal::Immutable(what.clone())),
        Field::ReportIn { org } => {
            residence_authority(author, facts, "a report-in (报到)")?;
            if facts.residence_org.as_ref().map(OrgPath::as_str) == Some(org.as_str()) {
                Ok(())
            } else {
                Err(Refusal::NotResidenceAuthority {
                    field: "a report-in",
                    residence: org.clone(),
                })
            }
        }
        Field::ActivityComment => residence_authority(author, facts, "an activity comment"),
        Field::Activity { recorder } => {
            if !visible_to(&facts.scope, author) {
                return Err(Refusal::NotInScope {
                    author: author.to_string(),
                });
            }
            match recorder {
                Some(r) if r == author.as_str() => Ok(()),
                Some(r) => Err(Refusal::NotRecorder {
                    recorder: r.clone(),
                }),
                None => Err(Refusal::NotRecorder {
                    recorder: "(unstamped)".into(),
                }),
            }
        }
        Field::Roster => match &facts.roster_org {
            Some(org) if author.is_at_or_above(org) => Ok(()),
            org => Err(Refusal::NotHomeAuthority {
                field: "the org roster",
                home: org.as_ref().map_or("(none)".into(), ToString::to_string),
            }),
        },
        // The record itself is checked against the CA by the gate.
        Field::Revocation => Ok(()),
        Field::StatusReport => match &facts.roster_org {
            Some(org) if org == author => Ok(()),
            org => Err(Refusal::NotHomeAuthority {
                field: "a status report (only the office itself)",
                home: org.as_ref().map_or("(none)".into(), ToString::to_string),
            }),
        },
        Field::Unknown(path) => Err(Refusal::UnknownField(path.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgPath {
        OrgPath::parse(s).unwrap()
    }
    const VILLAGE: &str = "hoboksar/chagantolgay/bayin";
    const COMMUNITY: &str = "hoboksar/hoboksar-town/xingfu";

    fn facts() -> Facts {
        Facts {
            home_org: Some(org(VILLAGE)),
            residence_org: Some(org(COMMUNITY)),
            scope: vec![org(VILLAGE), org(COMMUNITY)],
            roster_org: None,
        }
    }

    #[test]
    fn identity_review_and_residence_belong_to_home_and_ancestors() {
        for field in [
            Field::Identity,
            Field::Review,
            Field::ResidenceAssignment,
            Field::Creation,
        ] {
            assert!(authorise(&org(VILLAGE), &field, &facts()).is_ok());
            assert!(authorise(&org("hoboksar/chagantolgay"), &field, &facts()).is_ok());
            assert!(authorise(&org("hoboksar"), &field, &facts()).is_ok());
            let refused = authorise(&org(COMMUNITY), &field, &facts()).unwrap_err();
            assert_eq!(refused.code(), "not_home_authority");
            assert!(authorise(&org("hoboksar/hoboksar-town"), &field, &facts()).is_err());
            assert!(authorise(&org("hoboksar/chagantolgay/tebke"), &field, &facts()).is_err());
        }
    }

    #[test]
    fn report_in_and_comments_belong_to_residence_and_ancestors() {
        let report = Field::ReportIn {
            org: COMMUNITY.into(),
        };
        assert!(authorise(&org(COMMUNITY), &report, &facts()).is_ok());
        assert!(authorise(&org("hoboksar/hoboksar-town"), &report, &facts()).is_ok());
        assert_eq!(
            authorise(&org(VILLAGE), &report, &facts())
                .unwrap_err()
                .code(),
            "not_residence_authority"
        );
        let elsewhere = Field::ReportIn {
            org: "hoboksar/hoboksar-town/other".into(),
        };
        assert!(authorise(&org(COMMUNITY), &elsewhere, &facts()).is_err());
        assert!(authorise(&org(COMMUNITY), &Field::ActivityComment, &facts()).is_ok());
        assert!(authorise(&org(VILLAGE), &Field::ActivityComment, &facts()).is_err());
        let mut no_residence = facts();
        no_residence.residence_org = None;
        assert!(authorise(&org(COMMUNITY), &Field::ActivityComment, &no_residence).is_err());
    }

    #[test]
    fn activities_are_written_by_their_recorder_within_scope() {
        let by = |o: &str| Field::Activity {
            recorder: Some(o.into()),
        };
        assert!(authorise(&org(COMMUNITY), &by(COMMUNITY), &facts()).is_ok());
        assert!(authorise(&org(VILLAGE), &by(VILLAGE), &facts()).is_ok());
        assert!(authorise(&org("hoboksar"), &by("hoboksar"), &facts()).is_ok());
        assert_eq!(
            authorise(&org(VILLAGE), &by(COMMUNITY), &facts())
                .unwrap_err()
                .code(),
            "not_recorder"
        );
        assert_eq!(
            authorise(&org("hoboksar"), &by(COMMUNITY), &facts())
                .unwrap_err()
                .code(),
            "not_recorder"
        );
        let sibling = "hoboksar/chagantolgay/tebke";
        assert_eq!(
            authorise(&org(sibling), &by(sibling), &facts())
                .unwrap_err()
                .code(),
            "not_in_scope"
        );
        let unstamped = Field::Activity { recorder: None };
        assert!(authorise(&org(VILLAGE), &unstamped, &facts()).is_err());
    }

    #[test]
    fn unknown_fields_are_refused_and_rosters_belong_to_the_org_and_ancestors() {
        assert_eq!(
            authorise(&org("hoboksar"), &Field::Unknown("x".into()), &facts())
                .unwrap_err()
                .code(),
            "unknown_field"
        );
        let roster = Facts {
            roster_org: Some(org("hoboksar/t1")),
            ..Facts::default()
        };
        assert!(authorise(&org("hoboksar/t1"), &Field::Roster, &roster).is_ok());
        assert!(authorise(&org("hoboksar"), &Field::Roster, &roster).is_ok());
        assert!(authorise(&org("hoboksar/t1/v1"), &Field::Roster, &roster).is_err());
        assert!(authorise(&org("hoboksar/t2"), &Field::Roster, &roster).is_err());
    }
}
