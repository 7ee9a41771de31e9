//! Panics are counted and contained: a bug (or hostile input reaching one, such as the
//! automerge panics in FIELD-NOTES.md) ends one task, never the office.
//!
//! - [`install`] chains a panic hook that counts every panic in the process
//!   ([`count`], shown as `panics` in status and `amphi_panics_total` at `/metrics`).
//! - [`supervise`] restarts a long-lived task (accept loop, dial loop, fleet reporter) if it
//!   panics, with a short backoff, until shutdown.
//! - Sessions run in their own tasks (see `transport`), so a panicking session ends only
//!   itself; locks that might be held across a panic are taken poison-tolerantly.

use std::future::Future;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// Aborts a task when dropped, so a task's children do not outlive it.
pub struct AbortGuard(pub tokio::task::AbortHandle);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `make_task` makes, and makes and runs it again whenever it panics (after a
/// backoff from [`RESTART_MIN`] doubling to [`RESTART_MAX`]), until it returns normally or
/// `shutdown` fires. Aborting the returned handle aborts the running task too.
pub fn supervise<F, Fut>(
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut make_task: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = RESTART_MIN;
        loop {
            let task = tokio::spawn(make_task());
            let _abort = AbortGuard(task.abort_handle());
            match task.await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let why = message(&*e.into_panic());
                    tracing::error!(task = name, "task panicked (restarting): {why}");
                }
                Err(_) => return, // aborted: the node is stopping
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
    })
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
        let handle = supervise("test", shutdown, move || {
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
        });
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
        let handle = supervise("test", shutdown, move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
