//! Is the daemon making progress? Heartbeats of its loops, and the one-line
//! status a service manager shows.
//!
//! The systemd watchdog is pinged only while every loop beats: intake (its
//! loop wakes at least once per sweep, and beats while it waits for a job
//! permit), the scheduler (the daemon's own loop, on a one-second tick) and
//! the receipt writer (stale only while a write is pending and none has
//! succeeded lately, e.g. a disk that hangs). A wedged loop stops the pings
//! and systemd restarts the daemon; a timer that pinged regardless would
//! defeat the point. The same check answers the status API's `/health`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A loop that must keep beating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loop {
    Intake,
    Scheduler,
}

#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds since `started` of each loop's last beat.
    intake: AtomicU64,
    scheduler: AtomicU64,
    /// Receipt writes under way, and when one last succeeded.
    receipts_pending: AtomicUsize,
    receipts_ok: AtomicU64,
    /// The startup resume is done and intake is watching.
    ready: AtomicBool,
    /// Jobs being worked on, and job files seen in the inbox but not claimed.
    pub(crate) jobs_running: AtomicUsize,
    pub(crate) inbox_waiting: AtomicUsize,
    /// The last error an entry met, for the status line.
    last_error: Mutex<Option<String>>,
    /// How often the loops beat when idle, in milliseconds: a second, or a
    /// quarter of a shorter watchdog interval.
    beat_every_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            intake: AtomicU64::new(0),
            scheduler: AtomicU64::new(0),
            receipts_pending: AtomicUsize::new(0),
            receipts_ok: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            jobs_running: AtomicUsize::new(0),
            inbox_waiting: AtomicUsize::new(0),
            last_error: Mutex::new(None),
            beat_every_ms: AtomicU64::new(1000),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Makes the loops beat often enough for a watchdog of `interval`.
    #[cfg(unix)]
    pub(crate) fn watchdog_interval(&self, interval: Duration) {
        let ms = (interval.as_millis() as u64 / 4).clamp(10, 1000);
        self.beat_every_ms.store(ms, Ordering::Relaxed);
    }

    /// How often an idle loop must still beat.
    pub(crate) fn beat_every(&self) -> Duration {
        Duration::from_millis(self.beat_every_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn beat(&self, l: Loop) {
        let now = self.now_ms();
        match l {
            Loop::Intake => self.intake.store(now, Ordering::Relaxed),
            Loop::Scheduler => self.scheduler.store(now, Ordering::Relaxed),
        }
    }

    /// A receipt write begins; it counts as pending until the guard is
    /// dropped (also when the writing task is cancelled).
    pub(crate) fn receipt_writing(&self) -> ReceiptWrite<'_> {
        self.receipts_pending.fetch_add(1, Ordering::Relaxed);
        ReceiptWrite(self)
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub(crate) fn record_error(&self, what: String) {
        *self.last_error.lock().unwrap() = Some(what);
    }

    /// `Ok` while every loop beat within `max_age`; else which one did not.
    pub fn check(&self, max_age: Duration) -> Result<(), String> {
        let now = self.now_ms();
        let max = max_age.as_millis() as u64;
        for (name, at) in [
            ("intake", self.intake.load(Ordering::Relaxed)),
            ("scheduler", self.scheduler.load(Ordering::Relaxed)),
        ] {
            if now.saturating_sub(at) > max {
                return Err(format!(
                    "the {name} loop has not made progress for {} ms",
                    now - at
                ));
            }
        }
        let ok = self.receipts_ok.load(Ordering::Relaxed);
        if self.receipts_pending.load(Ordering::Relaxed) > 0 && now.saturating_sub(ok) > max {
            return Err(format!(
                "a receipt write has been pending for over {} ms",
                max
            ));
        }
        Ok(())
    }

    /// One line for `STATUS=` (systemd) and the service's description.
    pub(crate) fn status_line(&self) -> String {
        let mut s = format!(
            "{} job(s) running, {} waiting in the inbox",
            self.jobs_running.load(Ordering::Relaxed),
            self.inbox_waiting.load(Ordering::Relaxed)
        );
        if let Some(e) = self.last_error.lock().unwrap().as_deref() {
            // One line, and short: systemctl status shows it whole.
            let e: String = e.chars().filter(|c| *c != '\n').take(200).collect();
            s.push_str("; last error: ");
            s.push_str(&e);
        }
        s
    }
}

/// A receipt write under way (see [`Health::receipt_writing`]).
pub(crate) struct ReceiptWrite<'a>(&'a Health);

impl ReceiptWrite<'_> {
    /// The write succeeded.
    pub(crate) fn written(self) {
        self.0.receipts_ok.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for ReceiptWrite<'_> {
    fn drop(&mut self) {
        self.0.receipts_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_fails_the_check() {
        let h = Health::default();
        h.beat(Loop::Intake);
        h.beat(Loop::Scheduler);
        assert!(h.check(Duration::from_millis(200)).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        h.beat(Loop::Scheduler);
        let e = h.check(Duration::from_millis(30)).unwrap_err();
        assert!(e.contains("intake"), "{e}");
        h.beat(Loop::Intake);
        let w = h.receipt_writing();
        std::thread::sleep(Duration::from_millis(40));
        h.beat(Loop::Intake);
        h.beat(Loop::Scheduler);
        assert!(h
            .check(Duration::from_millis(30))
            .unwrap_err()
            .contains("receipt"));
        w.written();
        assert!(h.check(Duration::from_millis(30)).is_ok());
        drop(h.receipt_writing());
        assert!(
            h.check(Duration::from_millis(30)).is_ok(),
            "a cancelled write is not pending"
        );
    }
}
