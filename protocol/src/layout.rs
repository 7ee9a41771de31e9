//! The keys of a member case file: its root map and the containers under it. Shared by the
//! case file (which writes and reads them), the transfer rules and the judge, so none of
//! them imports the others for a string.

/// Document kind marker.
pub const KIND: &str = "kind";
/// 组织关系所在党组织: the one org the member belongs to.
pub const HOME_ORG: &str = "home_org";
/// Identity fields.
pub const IDENTITY: &str = "identity";
/// Two-dwelling residence assignment.
pub const RESIDENCE: &str = "residence";
/// Report-ins by residence org, under residence.
pub const REPORTS: &str = "reports";
/// Residence assignment events, under residence.
pub const ASSIGNMENTS: &str = "assignments";
/// Activity entries by id.
pub const ACTIVITIES: &str = "activities";
/// Half-yearly reviews by period.
pub const REVIEWS: &str = "reviews";
/// Transfers of affiliation by id.
pub const TRANSFERS: &str = "transfers";
/// Stamp on an activity.
pub const RECORDED_BY: &str = "recorded_by";
/// Stamp on a review.
pub const REVIEWED_BY: &str = "reviewed_by";
/// Stamp on a comment.
pub const BY: &str = "by";
/// Comments on an activity.
pub const COMMENTS: &str = "comments";
/// Last contact dates by recording org (联系), and the contact person.
pub const CONTACTS: &str = "contacts";
/// Key of the contact person (联系责任人) in the contacts map.
pub const CONTACT_PERSON: &str = "person";
/// Acknowledged conflicts by id (who acknowledged, when).
pub const ACKS: &str = "acks";
