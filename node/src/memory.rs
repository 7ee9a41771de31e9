//! Freed memory goes back to the system.
//!
//! With glibc's default malloc, a county node replicating 20,000 case files to a new mirror
//! reached 600 MiB resident for about 116 MiB of live heap (heaptrack's peak). glibc raises
//! its mmap threshold each time a large block is freed, so later large blocks (loaded
//! documents, store pages, reconciliation sets) are carved from the heap instead, and what
//! is freed there is rarely trimmed back. Fixing the thresholds keeps large blocks in their
//! own mappings (unmapped when freed) and trims the heap's free top; a cap on arenas keeps the
//! blocking pool's threads from each holding an arena of free memory of its own. The same run
//! then peaked at 215 MiB (`docs/benchmarks.md`).
//!
//! The thresholds were first fixed at 128 KiB. That cost more than it saved: every block
//! between 128 KiB and 1 MiB (automerge's columns, store pages) was then mapped, faulted in
//! and unmapped again, and `perf` found malloc at 28 % of a mirror's CPU at 20,000 members.
//! At 1 MiB a 20,000-member cold replication runs 284–303 case files a second instead of 210
//! with the county's peak RSS unchanged (134–139 MiB), and automerge alone (B0) runs three
//! times faster in the same process.
//!
//! The cap was two arenas until the threads receiving case files were left waiting on each
//! other's arena lock: `perf` found futex waits and wakes under malloc at ~10 % of a mirror's
//! CPU in a 20,000-member cold replication. It is now one arena per case file a session
//! receives at once: the mirror received 16 % more case files a second (448 → 518, medians of
//! three) with 11 % less CPU, for 3 MiB more at the county's peak (152 → 155 MiB) and 63 MiB
//! more at the mirror's (214 → 277 MiB). Eight arenas were no faster and held more. At
//! 250,000 members (one run each): 357 → 382 case files a second, the county's peak 721 →
//! 733 MiB.
//!
//! Other C libraries (musl) and other systems keep their defaults.

/// Where blocks of this size and larger get their own mapping, and how much free memory at
/// the heap's top is trimmed back.
pub const THRESHOLD_BYTES: i32 = 1024 * 1024;

/// Malloc arenas at most (glibc's default is eight per core): one for each case file a
/// session receives at once.
pub const ARENAS: i32 = crate::peer::RECEIVING_AT_ONCE as i32;

/// Applies the settings above (each one, even if another is refused). Call once, at the
/// start of `main`. Returns false if the C library refused one of them (the node runs on
/// regardless, with more memory held).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_freed_memory() -> bool {
    let settings = [
        (libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES),
        (libc::M_TRIM_THRESHOLD, THRESHOLD_BYTES),
        (libc::M_ARENA_MAX, ARENAS),
    ];
    // SAFETY: mallopt only sets malloc's tuning parameters, under malloc's own lock (it is
    // thread-safe in glibc), and these are valid values for them.
    let taken = settings.map(|(param, value)| unsafe { libc::mallopt(param, value) } == 1);
    taken.iter().all(|t| *t)
}

/// Applies nothing: this C library keeps its defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed_memory() -> bool {
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_c_library_takes_the_settings() {
        assert!(super::return_freed_memory());
    }
}
