//! Panics are counted and contained: a bug (or hostile input reaching one, such as the
//! automerge panics in FIELD-NOTES.md) ends one task, never the office.
//!
//! - [`install`] chains a panic hook that counts every panic in the process
//!   ([`count`], shown as `panics` in status and `amphi_panics_total` at `/metrics`).
//! - [`supervise`] restarts a long-lived task (accept loop, dial loop, fleet reporter) if it
//!   panics, with a short backoff, until shutdown.
//! - [`caught`] runs a session (see `transport`) so that a panic ends only that session;
//!   locks that might be held across a panic are taken poison-tolerantly.
//!
//! Both run the work inside the caller's task rather than in a task of its own, so the
//! task tree is the call tree: stopping the node aborts and awaits its top-level tasks,
//! and everything they ran (sessions, and the store handle they hold) is gone with them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;

static PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// First wait before a panicked task is restarted.
pub const RESTART_MIN: Duration = Duration::from_millis(100);
/// Longest wait between restarts of a task that keeps panicking.
pub const RESTART_MAX: Duration = Duration::from_secs(10);

/// Installs the counting panic hook (once per process; later calls do nothing). The hook
/// then calls the hook that was installed before it, so panics are still printed.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            previous(info);
        }));
    });
}

/// Panics in this process since [`install`].
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The message of a panic caught from a task.
pub fn message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Runs `future` to its end in the caller's task, catching a panic inside it as an `Err`
/// with the panic's message (the hook has counted it). A future that panicked is not
/// polled again.
pub async fn caught<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(message(&*panic))),
        }
    })
    .await
}

/// Runs the task `make_task` makes, and makes and runs it again whenever it panics (after a
/// backoff from [`RESTART_MIN`] doubling to [`RESTART_MAX`]), until it returns normally or
/// `shutdown` fires. Spawn the future it returns; the task runs inside it, so aborting that
/// drops the task.
pub async fn supervise<F, Fut>(
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut make_task: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = RESTART_MIN;
    loop {
        match caught(make_task()).await {
            Ok(()) => return,
            Err(why) => tracing::error!(task = name, "task panicked (restarting): {why}"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_task_that_panics_is_counted_and_restarted() {
        install();
        install(); // idempotent
        let before = count();
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, shutdown) = watch::channel(false);
        let (second_run, mut ran_twice) = tokio::sync::mpsc::unbounded_channel();
        let seen = runs.clone();
        let handle = tokio::spawn(supervise("test", shutdown, move || {
            let seen = seen.clone();
            let second_run = second_run.clone();
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
                let _ = second_run.send(());
                // A healthy task runs until shutdown.
                std::future::pending::<()>().await;
            }
        }));
        tokio::time::timeout(Duration::from_secs(5), ran_twice.recv())
            .await
            .expect("the task is restarted after its panic")
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(count() > before, "the panic is counted");
        let _ = stop.send(true);
        handle.abort();
    }

    #[tokio::test]
    async fn a_task_that_returns_is_not_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (_stop, shutdown) = watch::channel(false);
        let seen = runs.clone();
        let handle = tokio::spawn(supervise("test", shutdown, move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
