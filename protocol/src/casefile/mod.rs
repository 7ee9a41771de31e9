//! The member case file (党员档案) as an automerge document.
//!
//! Layout (root map):
//! ```text
//! kind = "member", home_org = "<org>"                        written once, by the creation change
//! identity   { name, gender, ethnicity, birth_date, joined_at, id_number, phone,
//!              education, categories: [..] }                  home org and ancestors
//! residence  { assignments { <r-id>: { org | null, since, until, by, at } }
//!                                                             home org and ancestors (两栖党员活动证)
//!              reports { <residence org>: date } }            residence org and ancestors (报到)
//! activities { <a-id>: { id, date, kind, description, points, recorded_by,
//!                        comments: [{ by, at, text }] } }     recorder / residence org (comments)
//! reviews    { <period>: { period, rating, comment, reviewed_by } }   home org and ancestors
//! transfers  { <t-id>: { id, from_org, to_org, reason, opened_by, opened_at, … } }
//! contacts   { person, <org>: date }, acks { <conflict id>: { by, at } }
//! ```
//! The creation change is the document's only root (it has no dependencies) and the case
//! file's id is derived from its hash ([`crate::ids::DocId::member_created_by`]), so no
//! office can create a rival case file under an existing id. Every container exists from
//! that first change, so two offices never race to create the same map, and each office
//! writes only under keys no other office writes: entries merge without loss. Stamps
//! (`recorded_by`, `reviewed_by`, `by`) must equal the author's org. Residence assignments
//! are events (one entry each, never edited): the assignment in force is derived with the
//! transfers by [`crate::affiliation::derive`].
//!
//! The module is split by what a caller does with a case file: `inputs` checks what an
//! edit needs, `edit` writes it, `view` reads the case file as the API shows it, and
//! `facts` reads what the gate and the judge decide by.

mod edit;
mod facts;
mod inputs;
mod view;

pub use edit::{
    add_activity, add_review, assign_residence, assignment_id, comment_activity, create,
    record_contact, report_in, set_contact_person, update_identity,
};
pub use facts::{MemberFacts, activity_recorder};
pub use inputs::{
    ActivityInput, IdentityPatch, NewMember, ResidenceInput, ReviewInput, check_activity_field,
    check_entry_id, check_identity_field,
};
pub use view::{
    Activity, CaseFile, Comment, Contact, Residence, Review, Step, Transfer, assignments,
};

/// Root keys of a case file (see [`crate::layout`]).
pub use crate::layout as keys;

/// The value of the `kind` key of a case file.
pub const KIND_MEMBER: &str = "member";
