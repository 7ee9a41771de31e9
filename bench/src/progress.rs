//! Periodic progress lines on stderr (no terminal needed: CI logs read them too).

use std::time::{Duration, Instant};

/// How often a progress line is printed.
const EVERY: Duration = Duration::from_secs(3);

/// Progress of one phase towards `total` items.
pub struct Progress {
    phase: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Starts a phase.
    pub fn new(phase: &'static str, total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            phase,
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// Records `done` items so far; prints a line now and then.
    pub fn set(&mut self, done: usize) {
        self.done = done;
        if self.last.elapsed() >= EVERY {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let left = if self.done == 0 {
            "?".to_owned()
        } else {
            format!("{:.0}", self.total.saturating_sub(self.done) as f64 / rate)
        };
        eprintln!(
            "  [{}] {}/{} ({:.0}%), {:.0}/s, {:.0} s elapsed, ~{left} s left",
            self.phase,
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total.max(1) as f64,
            rate,
            secs,
        );
    }

    /// Prints the final line.
    pub fn finish(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "  [{}] {}/{} in {:.1} s ({:.0}/s)",
            self.phase,
            self.done,
            self.total,
            secs,
            self.done as f64 / secs.max(1e-9)
        );
    }
}
