//! The last hour at a glance: bytes delivered and jobs ended, per minute
//! (`GET /api/throughput`, the dashboard's chart). Kept in memory, from the
//! events; a restart starts a new hour.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes kept.
const MINUTES: u64 = 60;

/// One minute's totals.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Minute {
    /// Its start, in seconds since 1970.
    pub(crate) at: u64,
    /// Bytes of entries verified and published in it (a file counts in
    /// the minute it was done).
    pub(crate) bytes: u64,
    /// Jobs that ended in it.
    pub(crate) jobs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Throughput {
    minutes: Mutex<VecDeque<Minute>>,
}

fn this_minute() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs - secs % 60
}

impl Throughput {
    pub(crate) fn delivered(&self, bytes: u64) {
        self.add(|m| m.bytes += bytes);
    }

    pub(crate) fn job_ended(&self) {
        self.add(|m| m.jobs += 1);
    }

    fn add(&self, f: impl FnOnce(&mut Minute)) {
        let now = this_minute();
        let mut minutes = self.minutes.lock().unwrap();
        if minutes.back().is_none_or(|m| m.at != now) {
            minutes.push_back(Minute {
                at: now,
                ..Minute::default()
            });
        }
        while minutes.front().is_some_and(|m| m.at + MINUTES * 60 <= now) {
            minutes.pop_front();
        }
        if let Some(m) = minutes.back_mut() {
            f(m);
        }
    }

    /// The last hour, oldest minute first, one per minute (quiet ones zero).
    pub(crate) fn last_hour(&self) -> Vec<Minute> {
        let now = this_minute();
        let kept = self.minutes.lock().unwrap();
        (0..MINUTES)
            .rev()
            .map(|ago| {
                let at = now - ago * 60;
                kept.iter().find(|m| m.at == at).copied().unwrap_or(Minute {
                    at,
                    ..Minute::default()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minutes_with_this_one_last() {
        let t = Throughput::default();
        t.delivered(1000);
        t.delivered(24);
        t.job_ended();
        let hour = t.last_hour();
        assert_eq!(hour.len(), 60);
        let last = hour.last().unwrap();
        assert_eq!((last.bytes, last.jobs), (1024, 1));
        assert!(hour[..59].iter().all(|m| m.bytes == 0 && m.jobs == 0));
        assert!(hour.windows(2).all(|w| w[1].at == w[0].at + 60));
    }
}
