//! Why a change was refused: one reason for every check a change passes on its way into a
//! document — its signature and certificate ([`crate::attest`]), its place in history
//! ([`crate::history`]), the authority table ([`crate::authority`]), scope and values.
//!
//! It stands apart from the authority table so that the gate, the judge, attestation and
//! the office core can name a refusal without depending on the authority rules. Its
//! [`Refusal::code`] is stable: metrics labels, the quarantine and API error codes use it.

use crate::transfer;

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
    /// The author signed two different changes with the same (actor, seq); the other one is
    /// kept (see `docs/design.md`), and the author's certificate should be revoked.
    #[error("equivocation: another change {other} has the same actor and seq")]
    Equivocation {
        /// The other change of the pair.
        other: String,
    },
    /// The change does not continue its actor's own history (seq and dependencies).
    #[error("broken chain: {0}")]
    BrokenChain(String),
    /// An op names an object, element or predecessor outside the change's own history.
    #[error("outside the change's history: {0}")]
    OutsideHistory(String),
    /// The change's time runs backwards along its history, or a time written in the
    /// document is not the change's own.
    #[error("time: {0}")]
    Time(String),
    /// A decision on a transfer its author could not see open.
    #[error("transfer {0} is not open")]
    TransferNotOpen(String),
    /// A transfer opened while its author could see another open.
    #[error("transfer {0} is already open; settle it first")]
    TransferAlreadyOpen(String),
    /// A value the API would refuse (a bad date, an unknown category, points out of range).
    #[error("invalid {field}: {message}")]
    InvalidValue {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The CRDT engine failed on the change (a contained panic).
    #[error("{0}")]
    EngineFault(String),
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
            Refusal::Equivocation { .. } => "equivocation",
            Refusal::BrokenChain(_) => "broken_chain",
            Refusal::OutsideHistory(_) => "outside_history",
            Refusal::Time(_) => "time",
            Refusal::TransferNotOpen(_) => "transfer_not_open",
            Refusal::TransferAlreadyOpen(_) => "transfer_already_open",
            Refusal::InvalidValue { .. } => "invalid_value",
            Refusal::EngineFault(_) => "engine_fault",
        }
    }
}
