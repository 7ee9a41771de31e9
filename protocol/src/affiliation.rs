//! Where a member belongs: the one home, the residence, the open transfer — derived.
//!
//! Everything that moves authority over a case file is an *event* written once under its own
//! keys: opening a transfer, accepting, rejecting or cancelling it, assigning or ending a
//! two-dwelling residence. Concurrent events at different offices all survive a merge, and
//! every node derives the member's affiliation from them with [`derive`], a pure function of
//! the events — so nodes that hold the same changes agree, whatever order they came in.
//!
//! **The order.** Events are replayed in [`Order`]: the event's time (its change's signed
//! time, which the gate checks; times never run backwards along history), then its op
//! counter (a Lamport clock: larger than every counter the author had seen), then its actor.
//! This order never puts an event before one its author had seen, and a forger cannot move
//! an event earlier than its own office's previous change (an office's changes form a chain).
//!
//! **The rules**, applied in that order from the home the case file was created with:
//! 1. A transfer opened from an org that is not the home at its turn, or by an office without
//!    authority over that home, is `superseded`.
//! 2. A transfer opened while another is open (concurrently: the gate refuses opening one
//!    while the author can see another open) is `superseded`: the earliest stays open.
//! 3. The first decision on an open transfer settles it: an accept makes its target the home,
//!    a reject or cancel closes it. A later concurrent decision on a settled transfer is
//!    void (e.g. an accept made concurrently with an earlier cancel).
//! 4. An accepted transfer ends the residence assignment: the two-dwelling certificate was
//!    issued by the old home, and the new home issues its own.
//! 5. A residence assignment takes effect only if its author has authority over the home at
//!    its turn; otherwise it is void (e.g. set by the old home concurrently with the accept
//!    that moved the member away).
//!
//! Every superseded transfer and void event is a [`Conflict`], listed with the rule that
//! settled it until an office acknowledges it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::org::OrgPath;
use crate::transfer::{Decision, Entry, State};

/// An event's place in the replay order (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Order {
    /// The event's time, RFC 3339 as [`crate::stamp::rfc3339`] writes it.
    pub at: String,
    /// The op counter of the op that wrote the event.
    pub counter: u64,
    /// The actor of that op.
    #[serde(skip)]
    pub actor: Vec<u8>,
}

impl Order {
    /// The order of an event written at `at` by the op `id` (an object's id is the op that
    /// made it; a value's id is the op that wrote it).
    pub fn of(at: &str, id: &automerge::ObjId) -> Order {
        let (counter, actor) = match id {
            automerge::ObjId::Id(counter, actor, _) => (*counter, actor.to_bytes().to_vec()),
            automerge::ObjId::Root => (0, Vec::new()),
        };
        Order {
            at: at.to_owned(),
            counter,
            actor,
        }
    }
}

/// One residence assignment event: a two-dwelling certificate issued, changed or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// `r-<member>-<suffix>`.
    pub id: String,
    /// The residence org; `None` ends the assignment.
    pub org: Option<String>,
    /// Start date.
    pub since: Option<String>,
    /// Planned end.
    pub until: Option<String>,
    /// The office that wrote it.
    pub by: String,
    /// Its place in the replay order.
    #[serde(skip)]
    pub order: Order,
}

/// Something merging could not settle by itself, and how the rule settled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Stable id: `<transfer or assignment id>:<kind>`.
    pub id: String,
    /// The transfer concerned (or the residence assignment).
    pub transfer_id: String,
    /// `superseded`, `accept-void`, `reject-void`, `cancel-void` or `residence-void`.
    pub kind: String,
    /// The rule that settled it, in words.
    pub rule: String,
    /// The transfer that won, if another one did.
    pub winner: Option<String>,
}

/// The member's affiliation, derived from the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affiliation {
    /// The one home.
    pub home: Option<String>,
    /// The residence assignment in force, if any.
    pub residence: Option<Assignment>,
    /// Each transfer's state.
    pub states: BTreeMap<String, State>,
    /// Conflicts, in replay order.
    pub conflicts: Vec<Conflict>,
}

impl Affiliation {
    /// Target orgs of open transfers.
    pub fn open_targets<'a>(&'a self, entries: &'a [Entry]) -> impl Iterator<Item = &'a str> + 'a {
        entries
            .iter()
            .filter(|e| self.states.get(&e.id) == Some(&State::Open))
            .map(|e| e.to_org.as_str())
    }

    /// The open transfer, if any.
    pub fn open_transfer<'a>(&self, entries: &'a [Entry]) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|e| self.states.get(&e.id) == Some(&State::Open))
    }

    /// The residence org in force.
    pub fn residence_org(&self) -> Option<&str> {
        self.residence.as_ref().and_then(|r| r.org.as_deref())
    }
}

enum Event {
    Open(usize),
    Decide(usize, usize),
    Assign(usize),
}

/// True when `by` is the org `of` or one of its ancestors (both valid org paths).
fn has_authority(by: &str, of: Option<&str>) -> bool {
    match (OrgPath::parse(by), of.map(OrgPath::parse)) {
        (Ok(by), Some(Ok(of))) => by.is_at_or_above(&of),
        _ => false,
    }
}

/// Replays the events (see the module docs for the order and the rules).
pub fn derive(
    created_home: Option<&str>,
    transfers: &[Entry],
    assignments: &[Assignment],
) -> Affiliation {
    let mut events: Vec<(&Order, Event)> = Vec::new();
    for (i, t) in transfers.iter().enumerate() {
        events.push((&t.order, Event::Open(i)));
        for (j, d) in t.decisions.iter().enumerate() {
            events.push((&d.order, Event::Decide(i, j)));
        }
    }
    for (i, a) in assignments.iter().enumerate() {
        events.push((&a.order, Event::Assign(i)));
    }
    events.sort_by(|a, b| a.0.cmp(b.0));

    let mut home = created_home.map(str::to_owned);
    let mut residence: Option<&Assignment> = None;
    let mut open: Option<usize> = None;
    let mut last_accepted: Option<String> = None;
    let mut states = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (_, event) in events {
        match event {
            Event::Open(i) => {
                let t = &transfers[i];
                let from_home = home.as_deref() == Some(t.from_org.as_str());
                let state = if !from_home || !has_authority(&t.opened_by, home.as_deref()) {
                    conflicts.push(Conflict {
                        id: format!("{}:superseded", t.id),
                        transfer_id: t.id.clone(),
                        kind: "superseded".into(),
                        rule: "a transfer opened from an org that is no longer the home is superseded by the transfer that moved the member".into(),
                        winner: last_accepted.clone(),
                    });
                    State::Superseded
                } else if let Some(first) = open {
                    conflicts.push(Conflict {
                        id: format!("{}:superseded", t.id),
                        transfer_id: t.id.clone(),
                        kind: "superseded".into(),
                        rule: "of transfers opened concurrently, the earliest stays open".into(),
                        winner: Some(transfers[first].id.clone()),
                    });
                    State::Superseded
                } else {
                    open = Some(i);
                    State::Open
                };
                states.insert(t.id.clone(), state);
            }
            Event::Decide(i, j) => {
                let t = &transfers[i];
                let d = &t.decisions[j];
                let party = match d.decision {
                    Decision::Cancel => t.from_org.as_str(),
                    Decision::Accept | Decision::Reject => t.to_org.as_str(),
                };
                let state = states.get(&t.id).copied().unwrap_or(State::Superseded);
                if state != State::Open || !has_authority(&d.by, Some(party)) {
                    let kind = format!("{}-void", d.decision.name());
                    conflicts.push(Conflict {
                        id: format!("{}:{kind}", t.id),
                        transfer_id: t.id.clone(),
                        kind,
                        rule: format!(
                            "the first decision settles a transfer; this {} came after it was {} and is void",
                            d.decision.name(),
                            state.name()
                        ),
                        winner: None,
                    });
                    continue;
                }
                let settled = match d.decision {
                    Decision::Accept => {
                        home = Some(t.to_org.clone());
                        last_accepted = Some(t.id.clone());
                        residence = None;
                        State::Accepted
                    }
                    Decision::Reject => State::Rejected,
                    Decision::Cancel => State::Cancelled,
                };
                states.insert(t.id.clone(), settled);
                open = None;
            }
            Event::Assign(i) => {
                let a = &assignments[i];
                if !has_authority(&a.by, home.as_deref()) {
                    conflicts.push(Conflict {
                        id: format!("{}:residence-void", a.id),
                        transfer_id: a.id.clone(),
                        kind: "residence-void".into(),
                        rule: "a residence assignment by an office that is no longer the home (or its ancestor) is void".into(),
                        winner: last_accepted.clone(),
                    });
                    continue;
                }
                residence = match a.org.as_deref() {
                    Some(org) if Some(org) != home.as_deref() => Some(a),
                    _ => None,
                };
            }
        }
    }
    Affiliation {
        home,
        residence: residence.cloned(),
        states,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::Step;

    fn order(at: u32, counter: u64) -> Order {
        Order {
            at: format!("2026-11-23T00:00:{at:02}Z"),
            counter,
            actor: vec![1],
        }
    }

    fn transfer(id: &str, from: &str, to: &str, at: u32, steps: &[(Decision, &str, u32)]) -> Entry {
        Entry {
            id: id.into(),
            from_org: from.into(),
            to_org: to.into(),
            reason: String::new(),
            opened_by: from.into(),
            opened_at: order(at, u64::from(at) * 10).at,
            order: order(at, u64::from(at) * 10),
            decisions: steps
                .iter()
                .map(|(d, by, t)| Step {
                    decision: *d,
                    by: (*by).into(),
                    at: order(*t, u64::from(*t) * 10 + 1).at,
                    order: order(*t, u64::from(*t) * 10 + 1),
                })
                .collect(),
        }
    }

    fn assign(id: &str, org: Option<&str>, by: &str, at: u32) -> Assignment {
        Assignment {
            id: id.into(),
            org: org.map(str::to_owned),
            since: None,
            until: None,
            by: by.into(),
            order: order(at, u64::from(at) * 10 + 2),
        }
    }

    const V1: &str = "c/t1/v1";
    const K1: &str = "c/t2/k1";
    const K2: &str = "c/t2/k2";

    #[test]
    fn an_accept_moves_the_home_and_ends_the_residence() {
        let a = derive(
            Some(V1),
            &[transfer("t1", V1, K1, 2, &[(Decision::Accept, K1, 3)])],
            &[assign("r1", Some(K2), V1, 1)],
        );
        assert_eq!(a.home.as_deref(), Some(K1));
        assert_eq!(a.states["t1"], State::Accepted);
        assert_eq!(a.residence, None);
        assert!(a.conflicts.is_empty());
    }

    #[test]
    fn the_first_decision_settles_and_a_later_concurrent_one_is_void() {
        let a = derive(
            Some(V1),
            &[transfer(
                "t1",
                V1,
                K1,
                1,
                &[(Decision::Cancel, V1, 2), (Decision::Accept, K1, 3)],
            )],
            &[],
        );
        assert_eq!(
            (a.home.as_deref(), a.states["t1"]),
            (Some(V1), State::Cancelled)
        );
        assert_eq!(a.conflicts[0].id, "t1:accept-void");
        let a = derive(
            Some(V1),
            &[transfer(
                "t1",
                V1,
                K1,
                1,
                &[(Decision::Cancel, V1, 4), (Decision::Accept, K1, 3)],
            )],
            &[],
        );
        assert_eq!(
            (a.home.as_deref(), a.states["t1"]),
            (Some(K1), State::Accepted)
        );
        assert_eq!(a.conflicts[0].id, "t1:cancel-void");
    }

    #[test]
    fn concurrent_opens_keep_the_earliest_and_a_stale_open_is_superseded() {
        let a = derive(
            Some(V1),
            &[
                transfer("t2", V1, K2, 2, &[(Decision::Accept, K2, 4)]),
                transfer("t1", V1, K1, 1, &[]),
            ],
            &[],
        );
        assert_eq!(a.states["t1"], State::Open);
        assert_eq!(a.states["t2"], State::Superseded);
        assert_eq!(a.home.as_deref(), Some(V1));
        let kinds: Vec<&str> = a.conflicts.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["superseded", "accept-void"]);
        // After t1 is accepted, a transfer opened from the old home is superseded.
        let a = derive(
            Some(V1),
            &[
                transfer("t1", V1, K1, 1, &[(Decision::Accept, K1, 2)]),
                transfer("t3", V1, K2, 5, &[]),
            ],
            &[],
        );
        assert_eq!(
            (a.home.as_deref(), a.states["t3"]),
            (Some(K1), State::Superseded)
        );
        assert_eq!(a.conflicts[0].winner.as_deref(), Some("t1"));
    }

    #[test]
    fn the_old_home_cannot_assign_a_residence_after_the_member_moved() {
        let a = derive(
            Some(V1),
            &[transfer("t1", V1, K1, 1, &[(Decision::Accept, K1, 2)])],
            &[
                assign("r-old", Some("c/t1/v1/x"), V1, 3),
                assign("r-new", Some(K2), K1, 4),
            ],
        );
        assert_eq!(a.residence_org(), Some(K2));
        assert_eq!(a.conflicts[0].id, "r-old:residence-void");
        let ended = derive(
            Some(V1),
            &[],
            &[assign("r1", Some(K2), V1, 1), assign("r2", None, V1, 2)],
        );
        assert_eq!(ended.residence, None);
    }

    #[test]
    fn the_replay_does_not_depend_on_the_order_events_are_listed_in() {
        let mut ts = vec![
            transfer("t1", V1, K1, 1, &[(Decision::Accept, K1, 3)]),
            transfer("t2", V1, K2, 2, &[(Decision::Accept, K2, 4)]),
            transfer("t3", K1, V1, 5, &[(Decision::Reject, V1, 6)]),
        ];
        let mut rs = vec![assign("r1", Some(K2), V1, 1), assign("r2", Some(V1), K1, 7)];
        let first = derive(Some(V1), &ts, &rs);
        ts.reverse();
        rs.reverse();
        assert_eq!(derive(Some(V1), &ts, &rs), first);
        assert_eq!(first.home.as_deref(), Some(K1));
        assert_eq!(first.residence_org(), Some(V1));
    }
}
