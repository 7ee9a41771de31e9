//! A document's causal history as the gate needs it: which changes exist, who made them in
//! what order, and what each change could have seen.
//!
//! automerge assumes things about incoming changes that it never checks, and panics or
//! misbehaves when they are false. The gate checks them here, before automerge sees the
//! change:
//!
//! - **deps exist**: every dependency is already in the document;
//! - **an actor's history is a chain**: a change with `seq = n > 1` lists its actor's change
//!   `n − 1` among its dependencies (automerge always does), and nothing in its history
//!   already has `seq ≥ n` for that actor; `seq = 1` only for an actor new to its history.
//!   An office therefore cannot fork its own history without equivocating (two changes with
//!   one (actor, seq)), which the gate detects;
//! - **op counters are Lamport clocks**: a change's first op counter is one more than the
//!   largest op counter in its history (automerge always does this), so ordering ops by
//!   counter never puts a change before anything it saw;
//! - **time does not run backwards**: a change is not older than its dependencies;
//! - **no op reaches outside its history**: every object, list element and predecessor an
//!   op names was made by a change in the op's own history (or earlier in the same change).
//!
//! The last check needs each change's *clock*: per actor, the highest seq and op counter in
//! its history. Clocks are computed once per change, on demand, and kept for the message.

use std::collections::{HashMap, HashSet};

use automerge::{ActorId, AutoCommit, Change, ChangeHash};

/// One change's place in history.
#[derive(Debug, Clone)]
struct Meta {
    actor: u32,
    seq: u64,
    max_op: u64,
    time: i64,
    deps: Vec<ChangeHash>,
}

/// Per actor (by index): the highest seq and op counter in some history, sorted by actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock(Vec<(u32, u64, u64)>);

impl Clock {
    fn merge(&mut self, other: &Clock) {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1.max(y.1), x.2.max(y.2)));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => out.push(*a.next().expect("peeked")),
                (Some(_), Some(_)) => out.push(*b.next().expect("peeked")),
                (Some(_), None) => out.push(*a.next().expect("peeked")),
                (None, Some(_)) => out.push(*b.next().expect("peeked")),
                (None, None) => break,
            }
        }
        self.0 = out;
    }

    fn raise(&mut self, actor: u32, seq: u64, max_op: u64) {
        self.merge(&Clock(vec![(actor, seq, max_op)]));
    }

    fn get(&self, actor: u32) -> Option<(u64, u64)> {
        self.0
            .binary_search_by_key(&actor, |e| e.0)
            .ok()
            .map(|i| (self.0[i].1, self.0[i].2))
    }
}

/// What a change may see: the clock of its dependencies, with the actor ids to read it by.
#[derive(Debug, Clone)]
pub struct View<'a> {
    clock: Clock,
    history: &'a History,
}

impl View<'_> {
    /// The highest seq of `actor` in this history (0: none).
    pub fn seq_of(&self, actor: &ActorId) -> u64 {
        self.entry(actor).map_or(0, |(seq, _)| seq)
    }

    /// The largest op counter anywhere in this history (0 for an empty history).
    pub fn max_op(&self) -> u64 {
        self.clock.0.iter().map(|e| e.2).max().unwrap_or(0)
    }

    /// True when the op `counter@actor` was made by a change in this history.
    pub fn covers(&self, counter: u64, actor: &ActorId) -> bool {
        self.entry(actor)
            .is_some_and(|(_, max_op)| counter <= max_op)
    }

    fn entry(&self, actor: &ActorId) -> Option<(u64, u64)> {
        let idx = *self.history.actor_index.get(actor)?;
        self.clock.get(idx)
    }
}

/// The causal history of one document.
#[derive(Debug, Default)]
pub struct History {
    actors: Vec<ActorId>,
    actor_index: HashMap<ActorId, u32>,
    metas: HashMap<ChangeHash, Meta>,
    slots: HashMap<(u32, u64), ChangeHash>,
    clocks: HashMap<ChangeHash, Clock>,
}

impl History {
    /// The history of `doc` as it is now.
    pub fn of(doc: &mut AutoCommit) -> History {
        let mut h = History::default();
        let metas: Vec<_> = doc
            .get_changes_meta(&[])
            .into_iter()
            .map(|m| {
                (
                    m.hash,
                    m.actor.into_owned(),
                    m.seq,
                    m.max_op,
                    m.timestamp,
                    m.deps,
                )
            })
            .collect();
        for (hash, actor, seq, max_op, time, deps) in metas {
            h.insert(hash, actor, seq, max_op, time, deps);
        }
        h
    }

    fn intern(&mut self, actor: ActorId) -> u32 {
        if let Some(i) = self.actor_index.get(&actor) {
            return *i;
        }
        let i = self.actors.len() as u32;
        self.actors.push(actor.clone());
        self.actor_index.insert(actor, i);
        i
    }

    fn insert(
        &mut self,
        hash: ChangeHash,
        actor: ActorId,
        seq: u64,
        max_op: u64,
        time: i64,
        deps: Vec<ChangeHash>,
    ) {
        let actor = self.intern(actor);
        self.slots.insert((actor, seq), hash);
        self.metas.insert(
            hash,
            Meta {
                actor,
                seq,
                max_op,
                time,
                deps,
            },
        );
    }

    /// Records a change that was just applied to the document.
    pub fn add(&mut self, change: &Change) {
        self.insert(
            change.hash(),
            change.actor_id().clone(),
            change.seq(),
            change.max_op(),
            change.timestamp(),
            change.deps().to_vec(),
        );
    }

    /// True when the document holds `hash`.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.metas.contains_key(hash)
    }

    /// The change `actor` made with `seq`, if the document holds one.
    pub fn at_slot(&self, actor: &ActorId, seq: u64) -> Option<ChangeHash> {
        let idx = self.actor_index.get(actor)?;
        self.slots.get(&(*idx, seq)).copied()
    }

    /// A held change's time.
    pub fn time(&self, hash: &ChangeHash) -> Option<i64> {
        self.metas.get(hash).map(|m| m.time)
    }

    /// A held change's actor and seq.
    pub fn slot_of(&self, hash: &ChangeHash) -> Option<(ActorId, u64)> {
        let m = self.metas.get(hash)?;
        Some((self.actors[m.actor as usize].clone(), m.seq))
    }

    fn clock_of(&mut self, hash: ChangeHash) -> Clock {
        // Iterative post-order walk: histories are long chains, recursion could overflow.
        let mut stack = vec![(hash, false)];
        while let Some((h, expanded)) = stack.pop() {
            if self.clocks.contains_key(&h) {
                continue;
            }
            let Some(meta) = self.metas.get(&h) else {
                continue;
            };
            if !expanded {
                stack.push((h, true));
                for d in &meta.deps {
                    if !self.clocks.contains_key(d) {
                        stack.push((*d, false));
                    }
                }
                continue;
            }
            let mut clock = Clock::default();
            for d in &meta.deps {
                if let Some(c) = self.clocks.get(d) {
                    clock.merge(c);
                }
            }
            clock.raise(meta.actor, meta.seq, meta.max_op);
            self.clocks.insert(h, clock);
        }
        self.clocks.get(&hash).cloned().unwrap_or_default()
    }

    /// True when a change with dependencies `deps` sees exactly what `head` sees with it:
    /// `head` is among them and every other is in its history. (By its (actor, seq), which
    /// names one change: the gate never holds two changes in one slot.)
    pub fn sees_as_after(&mut self, head: ChangeHash, deps: &[ChangeHash]) -> bool {
        if !deps.contains(&head) || !self.contains(&head) {
            return false;
        }
        let clock = self.clock_of(head);
        deps.iter().all(|d| {
            *d == head
                || self
                    .metas
                    .get(d)
                    .is_some_and(|m| clock.get(m.actor).is_some_and(|(seq, _)| m.seq <= seq))
        })
    }

    /// What a change with these dependencies could see (all of them must be held).
    pub fn view(&mut self, deps: &[ChangeHash]) -> View<'_> {
        let mut clock = Clock::default();
        for d in deps {
            let c = self.clock_of(*d);
            clock.merge(&c);
        }
        View {
            clock,
            history: self,
        }
    }

    /// `hash` and every held change that has it in its history.
    pub fn with_descendants(&self, hash: ChangeHash) -> HashSet<ChangeHash> {
        let mut children: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        for (h, m) in &self.metas {
            for d in &m.deps {
                children.entry(*d).or_default().push(*h);
            }
        }
        let mut out = HashSet::from([hash]);
        let mut stack = vec![hash];
        while let Some(h) = stack.pop() {
            for c in children.get(&h).into_iter().flatten() {
                if out.insert(*c) {
                    stack.push(*c);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    #[test]
    fn views_know_what_each_change_could_see() {
        let mut a = AutoCommit::new().with_actor(ActorId::from(&[1u8; 16][..]));
        a.put(automerge::ROOT, "x", 1).unwrap();
        let first = a.commit().unwrap();
        let mut b = a.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        a.put(automerge::ROOT, "x", 2).unwrap();
        let second = a.commit().unwrap();
        b.put(automerge::ROOT, "y", 1).unwrap();
        let theirs = b.commit().unwrap();
        a.merge(&mut b).unwrap();
        let mut h = History::of(&mut a);
        let (one, two) = (ActorId::from(&[1u8; 16][..]), ActorId::from(&[2u8; 16][..]));
        assert_eq!(h.at_slot(&one, 2), Some(second));
        assert_eq!(h.slot_of(&theirs), Some((two.clone(), 1)));
        let v = h.view(&[first]);
        assert_eq!((v.seq_of(&one), v.seq_of(&two)), (1, 0));
        assert!(v.covers(1, &one) && !v.covers(2, &one) && !v.covers(1, &two));
        let v = h.view(&[second, theirs]);
        assert_eq!((v.seq_of(&one), v.seq_of(&two)), (2, 1));
        assert_eq!(v.max_op(), 2);
        assert_eq!(
            h.with_descendants(first),
            HashSet::from([first, second, theirs])
        );
        assert_eq!(h.with_descendants(theirs), HashSet::from([theirs]));
        // `second` sees what `first` holds and itself; `theirs` is concurrent with it.
        assert!(h.sees_as_after(second, &[second]));
        assert!(h.sees_as_after(second, &[second, first]));
        assert!(!h.sees_as_after(second, &[second, theirs]));
        assert!(!h.sees_as_after(first, &[second]));
        assert!(!h.sees_as_after(first, &[]));
    }
}
