//! Who may write what: the authority table of contract.md as pure functions.
//!
//! [`classify`] names the field a document path belongs to; [`authorise`] decides whether an
//! author org may write that field, given the facts of the document as the author saw them.
//! The gate applies these to every incoming change; the node applies the same gate to its
//! own writes, so the API's 403 and the wire's refusal can never disagree.

use automerge::Prop;

use crate::casefile::keys;
use crate::ids::DocKind;
use crate::org::OrgPath;
use crate::roster;
use crate::transfer;
use crate::visibility::visible_to;

/// The field of a document that a write touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Root keys written once when the case file is created (kind, id, home_org, containers).
    Creation,
    /// Identity fields: name, gender, ethnicity, birth date, ID number, joined date, phone, categories.
    Identity,
    /// Residence assignment: org, since, until.
    ResidenceAssignment,
    /// A report-in (報到) recorded for the named residence org.
    ReportIn {
        /// The org under which the report-in is recorded.
        org: String,
    },
    /// An activity entry (not its comments).
    Activity {
        /// Who recorded the entry: before the change if it existed, else as the change set it.
        recorder: Option<String>,
    },
    /// A comment on an activity entry.
    ActivityComment,
    /// A half-yearly review (發證黨組織審核).
    Review,
    /// Opening a transfer (home org and ancestors; from the current home).
    TransferOpen,
    /// Accepting, rejecting (target and ancestors) or cancelling (home and ancestors).
    TransferDecision {
        /// Which step.
        decision: transfer::Decision,
        /// The transfer before the change.
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
    /// A field that is written once and was written again.
    Immutable(String),
    /// A roster document's identity keys, profile, or history.
    Roster,
    /// A record of the revocation list (any office may relay a CA-signed record).
    Revocation,
    /// An office's own status report (only that office writes it).
    StatusReport,
    /// Anything else: refused.
    Unknown(String),
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

/// Why a write was refused. `code()` is stable (metrics labels, API error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only the home org and its ancestors may write this.
    #[error("{field} may be written only by the home org {home} and its ancestors")]
    NotHomeAuthority {
        /// The field.
        field: &'static str,
        /// The home org.
        home: String,
    },
    /// Only the residence org and its ancestors may write this.
    #[error("{field} may be written only by the residence org {residence} and its ancestors")]
    NotResidenceAuthority {
        /// The field.
        field: &'static str,
        /// The residence org, or "(none)".
        residence: String,
    },
    /// An activity entry may be changed only by the org that recorded it.
    #[error("activity entry recorded by {recorder} cannot be altered by another org")]
    NotRecorder {
        /// The recording org.
        recorder: String,
    },
    /// The author cannot see the document at all.
    #[error("{author} is outside this document's scope")]
    NotInScope {
        /// The author.
        author: String,
    },
    /// A stamp (recorded_by, reviewed_by, by) names another org than the author.
    #[error("stamp {key} = {value:?} does not name the author {author}")]
    StampMismatch {
        /// The stamp key.
        key: String,
        /// The value written.
        value: String,
        /// The author.
        author: String,
    },
    /// A transfer step by an office that is not the party for it.
    #[error("{step:?} may be done only by {what} {org} and its ancestors")]
    NotTransferParty {
        /// The step.
        step: transfer::Decision,
        /// The org whose step it is.
        org: String,
        /// "the target org" or "the home org".
        what: &'static str,
    },
    /// A field that is written once (at creation) was written again.
    #[error("{0} is set when the case file is created and cannot be changed")]
    Immutable(String),
    /// A path that the document layout does not have.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// The change does not say which org made it, or names an invalid one.
    #[error("change does not name a valid author org")]
    UnknownAuthor,
    /// The change depends on a change that was refused.
    #[error("depends on a refused change")]
    DependsOnRefused,
    /// The document would not be visible to the receiving office.
    #[error("document is outside the receiving office's scope")]
    OutsideReceiverScope,
    /// The sending peer may not hold this document.
    #[error("document is outside the sending peer's scope")]
    OutsideSenderScope,
    /// The change bytes could not be decoded or applied.
    #[error("malformed change: {0}")]
    Malformed(String),
    /// No signature came with the change.
    #[error("change is not signed")]
    Unsigned,
    /// The signing certificate is not known here (it did not travel with the change).
    #[error("signing certificate is unknown")]
    UnknownCertificate,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The certificate does not name the claimed author, or the change's actor is not the certificate's.
    #[error("change claims {claimed} but is signed by {signer}")]
    AuthorMismatch {
        /// The claimed author org.
        claimed: String,
        /// The org (and actor) the certificate names.
        signer: String,
    },
    /// The certificate was not valid when the change says it was made.
    #[error("signing certificate was not valid at the change's time")]
    CertificateExpired,
    /// The certificate was revoked before the change was made.
    #[error("signing certificate was revoked at {0}")]
    Revoked(String),
    /// A revocation record is not validly signed by the CA.
    #[error("invalid revocation record: {0}")]
    BadRevocation(String),
}

impl Refusal {
    /// True when the refusal is about the change itself (its author, signature, authority),
    /// so it holds whoever sends the change; false when it is about the sender (scope), so
    /// the same change may be accepted from another peer.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Refusal::OutsideSenderScope | Refusal::OutsideReceiverScope
        )
    }

    /// A stable machine code for the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotHomeAuthority { .. } => "not_home_authority",
            Refusal::NotResidenceAuthority { .. } => "not_residence_authority",
            Refusal::NotRecorder { .. } => "not_recorder",
            Refusal::NotInScope { .. } => "not_in_scope",
            Refusal::StampMismatch { .. } => "stamp_mismatch",
            Refusal::Immutable(_) => "immutable_field",
            Refusal::NotTransferParty { .. } => "not_transfer_party",
            Refusal::UnknownField(_) => "unknown_field",
            Refusal::UnknownAuthor => "unknown_author",
            Refusal::DependsOnRefused => "depends_on_refused",
            Refusal::OutsideReceiverScope => "outside_receiver_scope",
            Refusal::OutsideSenderScope => "outside_sender_scope",
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownCertificate => "unknown_certificate",
            Refusal::BadSignature => "bad_signature",
            Refusal::AuthorMismatch { .. } => "author_mismatch",
            Refusal::CertificateExpired => "certificate_expired",
            Refusal::Revoked(_) => "revoked",
            Refusal::BadRevocation(_) => "bad_revocation",
        }
    }
}

/// Keys whose value must be the author's own org.
pub const STAMP_KEYS: &[&str] = &[
    keys::RECORDED_BY,
    keys::REVIEWED_BY,
    keys::BY,
    "opened_by",
    "accepted_by",
    "rejected_by",
    "cancelled_by",
];

fn map_key(p: Option<&Prop>) -> Option<&str> {
    match p {
        Some(Prop::Map(k)) => Some(k.as_str()),
        _ => None,
    }
}

/// What classification needs to know of entries as the author saw them.
pub trait Lookup {
    /// Who recorded activity `id` (before the change if it existed, else as the change set it).
    fn recorder(&self, id: &str) -> Option<String>;
    /// Transfer `id` as it was before the change, if it existed.
    fn transfer(&self, id: &str) -> Option<TransferFacts>;
}

/// A transfer as it was before a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFacts {
    /// The home it was opened from.
    pub from_org: String,
    /// Its target.
    pub to_org: String,
    /// A decision was already recorded.
    pub decided: bool,
}

/// Names the field that a write at `path` (map keys and list indexes from the root) touches.
pub fn classify(kind: DocKind, path: &[Prop], lookup: &dyn Lookup) -> Field {
    let key = |i: usize| map_key(path.get(i));
    let shown = || {
        path.iter()
            .map(|p| match p {
                Prop::Map(k) => k.clone(),
                Prop::Seq(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    if kind == DocKind::Revocations {
        return match key(0) {
            Some(k) if path.len() == 1 && k.starts_with(crate::attest::REVOCATION_PREFIX) => {
                Field::Revocation
            }
            _ => Field::Unknown(shown()),
        };
    }
    if kind == DocKind::Status {
        return match key(0) {
            Some("kind" | "org" | "summary") if path.len() == 1 => Field::StatusReport,
            _ => Field::Unknown(shown()),
        };
    }
    if kind == DocKind::OrgRoster {
        return match key(0) {
            Some("kind" | "org") if path.len() == 1 => Field::Roster,
            Some(k)
                if path.len() == 1
                    && (k.starts_with(roster::HISTORY_PREFIX)
                        || k.starts_with(roster::GRID_PREFIX)
                        || k.strip_prefix(roster::PROFILE_PREFIX)
                            .is_some_and(|f| roster::PROFILE_FIELDS.contains(&f))) =>
            {
                Field::Roster
            }
            _ => Field::Unknown(shown()),
        };
    }
    match (key(0), path.len()) {
        (Some(keys::KIND | keys::ID | keys::HOME_ORG), 1) => Field::Creation,
        (
            Some(
                keys::IDENTITY
                | keys::RESIDENCE
                | keys::ACTIVITIES
                | keys::REVIEWS
                | keys::TRANSFERS
                | keys::CONTACTS
                | transfer::ACKS,
            ),
            1,
        ) => Field::Creation,
        (Some(keys::IDENTITY), _) => Field::Identity,
        (Some(keys::RESIDENCE), _) => match key(1) {
            Some("org" | "since" | "until") if path.len() == 2 => Field::ResidenceAssignment,
            Some(keys::REPORTS) if path.len() == 2 => Field::Creation,
            Some(keys::REPORTS) if path.len() == 3 => Field::ReportIn {
                org: key(2).unwrap_or_default().to_owned(),
            },
            _ => Field::Unknown(shown()),
        },
        (Some(keys::ACTIVITIES), _) => match key(1) {
            Some(id) if key(2) == Some(keys::COMMENTS) && path.len() >= 4 => {
                let _ = id;
                Field::ActivityComment
            }
            Some(id) => Field::Activity {
                recorder: lookup.recorder(id),
            },
            None => Field::Unknown(shown()),
        },
        (Some(keys::REVIEWS), _) => Field::Review,
        (Some(keys::TRANSFERS), _) => match (key(1), lookup.transfer(key(1).unwrap_or_default())) {
            (None, _) => Field::Unknown(shown()),
            (Some(_), None)
                if path.len() == 2 || key(2).is_some_and(|k| transfer::OPEN_KEYS.contains(&k)) =>
            {
                Field::TransferOpen
            }
            (Some(_), Some(t)) if path.len() == 3 => match key(2)
                .and_then(transfer::Decision::of_key)
            {
                Some(decision) => Field::TransferDecision {
                    decision,
                    transfer: t,
                },
                None => Field::Immutable(format!("{} (transfer fields are written once)", shown())),
            },
            _ => Field::Unknown(shown()),
        },
        (Some(transfer::ACKS), _) => Field::ConflictAck,
        (Some(keys::CONTACTS), 2) => match key(1) {
            Some(keys::CONTACT_PERSON) => Field::ContactPerson,
            Some(org) => Field::ContactRecord {
                org: org.to_owned(),
            },
            None => Field::Unknown(shown()),
        },
        _ => Field::Unknown(shown()),
    }
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
            if t.decided {
                return Err(Refusal::Immutable(
                    "the transfer was already settled".into(),
                ));
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
            residence_authority(author, facts, "a report-in")?;
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
    fn path(keys: &[&str]) -> Vec<Prop> {
        keys.iter().map(|k| Prop::Map((*k).to_owned())).collect()
    }
    const VILLAGE: &str = "hoboksar/chagantolgay/bayin";
    const COMMUNITY: &str = "hoboksar/hoboksar-town/xingfu";

    /// A lookup that knows one recorder for every activity and no transfers.
    struct Fixed(Option<String>);

    impl Lookup for Fixed {
        fn recorder(&self, _: &str) -> Option<String> {
            self.0.clone()
        }
        fn transfer(&self, _: &str) -> Option<TransferFacts> {
            None
        }
    }

    fn facts() -> Facts {
        Facts {
            home_org: Some(org(VILLAGE)),
            residence_org: Some(org(COMMUNITY)),
            scope: vec![org(VILLAGE), org(COMMUNITY)],
            roster_org: None,
        }
    }

    #[test]
    fn paths_are_classified_by_layout() {
        let none = &Fixed(None);
        let k = DocKind::Member;
        assert_eq!(
            classify(k, &path(&["identity", "name"]), none),
            Field::Identity
        );
        assert_eq!(
            classify(
                k,
                &[
                    Prop::Map("identity".into()),
                    Prop::Map("categories".into()),
                    Prop::Seq(0)
                ],
                none
            ),
            Field::Identity
        );
        assert_eq!(classify(k, &path(&["home_org"]), none), Field::Creation);
        assert_eq!(
            classify(k, &path(&["residence", "org"]), none),
            Field::ResidenceAssignment
        );
        assert_eq!(
            classify(k, &path(&["residence", "reports", COMMUNITY]), none),
            Field::ReportIn {
                org: COMMUNITY.into()
            }
        );
        assert_eq!(
            classify(
                k,
                &path(&["activities", "a-1", "date"]),
                &Fixed(Some(VILLAGE.into()))
            ),
            Field::Activity {
                recorder: Some(VILLAGE.into())
            }
        );
        assert_eq!(
            classify(
                k,
                &[
                    Prop::Map("activities".into()),
                    Prop::Map("a-1".into()),
                    Prop::Map("comments".into()),
                    Prop::Seq(0)
                ],
                none
            ),
            Field::ActivityComment
        );
        assert_eq!(
            classify(k, &path(&["reviews", "2026H1", "rating"]), none),
            Field::Review
        );
        assert!(matches!(
            classify(k, &path(&["secret"]), none),
            Field::Unknown(_)
        ));
        assert!(matches!(
            classify(k, &path(&["residence", "colour"]), none),
            Field::Unknown(_)
        ));
        let r = DocKind::OrgRoster;
        assert_eq!(classify(r, &path(&["profile:name"]), none), Field::Roster);
        assert_eq!(classify(r, &path(&["history:m-1:x"]), none), Field::Roster);
        assert!(matches!(
            classify(r, &path(&["profile:colour"]), none),
            Field::Unknown(_)
        ));
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
