//! Containing the CRDT engine: the one place where a panic inside automerge is caught.
//!
//! Every byte a peer sends is checked before automerge sees it (see [`crate::syncmsg`] and
//! [`crate::history`]), but automerge 0.12 has panicked on well-formed-looking input before,
//! so the calls that feed it peer data run through [`contain`]. A caught panic becomes an
//! [`EngineFault`]: the change is refused, the document the call was working on must be
//! treated as tainted (reloaded from the store by the caller), and the node goes on. The
//! node's panic hook still sees the panic, so it is counted in `/metrics`: a contained panic
//! is a bug to fix, never a dead office.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// True while this thread runs inside [`contain`]: a panic now will be caught. (A panic
/// hook can use it to tell contained panics from ones that would end a task; the
/// `sync_message` fuzz target does.)
pub fn inside() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// automerge panicked while doing `what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CRDT engine failed while {what}: {message}")]
pub struct EngineFault {
    /// What was being done.
    pub what: &'static str,
    /// The panic message.
    pub message: String,
}

/// Runs `f`, turning a panic into an [`EngineFault`].
///
/// Use it only around calls into automerge with data that came from a peer; anything `f`
/// mutated must be discarded when it fails.
pub fn contain<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, EngineFault> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        EngineFault { what, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_fault_and_a_value_passes_through() {
        assert_eq!(contain("adding", || 2 + 2), Ok(4));
        assert!(!inside());
        assert_eq!(contain("looking", inside), Ok(true));
        let fault = contain("dividing", || {
            let zero = std::hint::black_box(0u32);
            7 / zero
        })
        .unwrap_err();
        assert_eq!(fault.what, "dividing");
        assert!(fault.message.contains("divide by zero"), "{fault}");
        let fault = contain("formatting", || panic!("owned {}", 7)).unwrap_err();
        assert_eq!(fault.message, "owned 7");
    }
}
