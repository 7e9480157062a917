//! The once-a-second progress line: how many nodes are in each phase, done
//! and failed. Counters are atomics shared by every node task.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::report::Phase;

#[derive(Default)]
pub struct Progress {
    started: AtomicUsize,
    in_phase: [AtomicUsize; Phase::ALL.len()],
    done: AtomicUsize,
    failed: AtomicUsize,
}

/// A node inside a phase; leaving it (drop) takes it out of the count.
pub struct InPhase<'a> {
    progress: &'a Progress,
    phase: Phase,
}

impl Drop for InPhase<'_> {
    fn drop(&mut self) {
        self.progress.in_phase[self.phase.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress {
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn enter(&self, phase: Phase) -> InPhase<'_> {
        self.in_phase[phase.index()].fetch_add(1, Ordering::Relaxed);
        InPhase {
            progress: self,
            phase,
        }
    }

    pub fn finished(&self, ok: bool) {
        let c = if ok { &self.done } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn line(&self, elapsed: Duration, total: usize, phases: &[Phase]) -> String {
        let mut s = format!(
            "storm {:>5.1}s: started {}/{total} |",
            elapsed.as_secs_f64(),
            self.started.load(Ordering::Relaxed)
        );
        for p in phases {
            s.push_str(&format!(
                " {} {}",
                p.name(),
                self.in_phase[p.index()].load(Ordering::Relaxed)
            ));
        }
        s.push_str(&format!(
            " | done {} failed {}",
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        ));
        s
    }

    /// Prints the line on stderr every second until `stop` fires: over
    /// itself at a terminal, one line per second in a log.
    pub async fn show(
        &self,
        started: Instant,
        total: usize,
        phases: &[Phase],
        stop: tokio_util::sync::CancellationToken,
    ) {
        let tty = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let line = self.line(started.elapsed(), total, phases);
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
        let line = self.line(started.elapsed(), total, phases);
        eprintln!("{}{line}", if tty { "\r\x1b[K" } else { "" });
    }
}
