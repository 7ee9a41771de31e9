//! What a document received through the gate holds in memory: about what the same
//! document loaded. automerge (0.12) records a batch's ops in the document's patch log even
//! while the log is off; a node keeps received documents in memory (the office's kept
//! documents), so what the log held stayed there and grew with every message.
//!
//! A test binary of its own: it counts the heap with a global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use amphi_protocol::casefile::{self, ActivityInput};
use amphi_protocol::ids::entry_id;
use automerge::AutoCommit;
use common::*;

/// The system allocator, counting the bytes it holds out.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes `make` leaves held by what it returns.
fn held_by<T>(make: impl FnOnce() -> T) -> (T, isize) {
    let before = LIVE.load(Ordering::SeqCst);
    let made = make();
    (made, LIVE.load(Ordering::SeqCst) - before)
}

#[test]
fn a_case_file_received_through_the_gate_holds_about_what_it_holds_loaded() {
    let mut village = Office::new(VILLAGE);
    let id = create_member(&mut village);
    for n in 0..40u8 {
        village.write(|d, _| {
            let activity = ActivityInput {
                date: format!("2026-{:02}-{:02}", 1 + n % 12, 1 + n % 28),
                kind: "study".into(),
                description: format!("study session {n} at the village office"),
                points: Some(2),
            };
            casefile::add_activity(d, &entry_id('a', [n; 8]), &activity, &org(VILLAGE)).unwrap()
        });
    }
    let saved = village.doc.save();
    // One message with every change, as a cold replication sends it.
    let message = message_with(&village.changes_since(&[]));
    let mut township = Office::new(TOWNSHIP);
    let before = LIVE.load(Ordering::SeqCst);
    let admission = township.receive(&id, &org(VILLAGE), &message);
    assert_eq!(admission.applied.len(), 41, "{:?}", admission.refused);
    drop(admission);
    // What stays: the document, and the small sync state kept for the village.
    let received = LIVE.load(Ordering::SeqCst) - before;
    let (loaded, loaded_bytes) = held_by(|| AutoCommit::load(&saved).unwrap());
    assert!(
        received < loaded_bytes * 3 / 2,
        "received through the gate the case file holds {received} B, loaded {loaded_bytes} B"
    );
    drop(loaded);
}
