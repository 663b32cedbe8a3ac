//! Bandwidth limits (`max_rate`, global and per named server): a bucket per
//! scope that every data connection going through it pays into, segments
//! included, and the timetable that sets each bucket's rate.
//!
//! A bucket keeps the time at which the bytes sent so far will have been
//! "paid for" at its rate; a sender that is ahead waits. Reservations are
//! taken in turn under one lock, so connections share a limit fairly. With
//! no limit, nothing is locked or awaited: an empty list of buckets, or a
//! bucket at rate 0 ("off"), returns at once.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One limit: bytes per second, 0 for none.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    rate: AtomicU64,
    /// When everything reserved so far is paid for at `rate`.
    paid_until: Mutex<Option<Instant>>,
}

impl Bucket {
    pub(crate) fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// A new rate, in force for the next bytes (a reload, the timetable).
    pub(crate) fn set_rate(&self, rate: u64) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            // What was reserved at the old rate is not owed at the new one.
            *self.paid_until.lock().unwrap() = None;
        }
    }

    /// Reserves `n` bytes; how long the sender must wait for them.
    fn reserve(&self, n: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut paid = self.paid_until.lock().unwrap();
        let start = paid.filter(|p| *p > now).unwrap_or(now);
        let until = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *paid = Some(until);
        until.saturating_duration_since(now)
    }
}

/// The buckets one entry pays into, swapped when a reload changes them.
pub(crate) type RateSet = std::sync::RwLock<Arc<[Arc<Bucket>]>>;

/// [`pay`] into the buckets `set` holds now.
pub(crate) async fn pay_set(set: &RateSet, n: u64) {
    let buckets = set.read().unwrap().clone();
    pay(&buckets, n).await
}

/// Waits until `n` bytes just sent are paid for in every bucket.
pub(crate) async fn pay(buckets: &[Arc<Bucket>], n: u64) {
    if buckets.is_empty() {
        return;
    }
    let wait = buckets
        .iter()
        .map(|b| b.reserve(n))
        .max()
        .unwrap_or_default();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// `max_rate` as written: bytes per second, `"512k"`, `"10M"`, `"off"`, or a
/// timetable in local time, `"08:00,512k 19:00,10M 23:00,off"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RateSetting {
    BytesPerSecond(u64),
    Text(String),
}

/// A parsed setting: (minute of the day it starts, rate; 0 is off), sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schedule(Vec<(u32, u64)>);

/// `512k`, `10M`, `1.5M`, `4096`, `off`: k and M are 1024 and 1024².
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(0);
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1024.0),
        Some((i, 'm' | 'M')) => (&t[..i], 1024.0 * 1024.0),
        Some((i, 'g' | 'G')) => (&t[..i], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (e.g. 4096, 512k, 10M, off)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} is not a positive rate"));
    }
    Ok((v * mult).round().max(1.0) as u64)
}

impl Schedule {
    pub fn parse(setting: &RateSetting) -> Result<Schedule, String> {
        let text = match setting {
            RateSetting::BytesPerSecond(n) => return Ok(Schedule(vec![(0, *n)])),
            RateSetting::Text(t) => t,
        };
        if !text.contains(',') {
            return Ok(Schedule(vec![(0, parse_rate(text)?)]));
        }
        let mut out = Vec::new();
        for part in text.split_whitespace() {
            let (time, rate) = part
                .split_once(',')
                .ok_or_else(|| format!("{part:?}: expected HH:MM,RATE"))?;
            let (h, m) = time
                .split_once(':')
                .ok_or_else(|| format!("{time:?}: expected HH:MM"))?;
            let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
                _ => return Err(format!("{time:?}: not a time of day")),
            };
            out.push((h * 60 + m, parse_rate(rate)?));
        }
        out.sort_by_key(|(t, _)| *t);
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("the timetable names one time twice".into());
        }
        Ok(Schedule(out))
    }

    /// The rate at `minute` of the day: the last change at or before it,
    /// else the day's last one (it carries over midnight).
    pub(crate) fn at(&self, minute: u32) -> u64 {
        self.0
            .iter()
            .rev()
            .find(|(t, _)| *t <= minute)
            .or(self.0.last())
            .map_or(0, |(_, r)| *r)
    }
}

/// The minute of the day now, in local time.
pub(crate) fn local_minute() -> u32 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    now.hour() * 60 + now.minute()
}

/// Every bucket: the global one and one per server (`host:port`) that has a limit.
#[derive(Default)]
pub(crate) struct Limits {
    global: Arc<Bucket>,
    servers: Mutex<BTreeMap<String, Arc<Bucket>>>,
    schedules: Mutex<(Option<Schedule>, BTreeMap<String, Schedule>)>,
}

impl Limits {
    /// Puts new settings in force (start, reload); `servers` by `host:port`.
    pub(crate) fn configure(&self, global: Option<Schedule>, servers: BTreeMap<String, Schedule>) {
        {
            let mut buckets = self.servers.lock().unwrap();
            for name in servers.keys() {
                buckets.entry(name.clone()).or_default();
            }
        }
        *self.schedules.lock().unwrap() = (global, servers);
        self.tick(local_minute());
    }

    /// Sets every bucket's rate for `minute` (the timetable turning).
    pub(crate) fn tick(&self, minute: u32) {
        let (global, servers) = self.schedules.lock().unwrap().clone();
        self.global.set_rate(global.map_or(0, |s| s.at(minute)));
        for (name, b) in self.servers.lock().unwrap().iter() {
            b.set_rate(servers.get(name).map_or(0, |s| s.at(minute)));
        }
    }

    /// The buckets a data connection to `server` (`host:port`) pays into.
    pub(crate) fn for_server(&self, server: &str) -> Arc<[Arc<Bucket>]> {
        let mut out = Vec::new();
        if self.global.rate() > 0 || self.schedules.lock().unwrap().0.is_some() {
            out.push(self.global.clone());
        }
        if let Some(b) = self.servers.lock().unwrap().get(server) {
            out.push(b.clone());
        }
        out.into()
    }

    /// The rates in force now: global, and per server.
    pub(crate) fn current(&self) -> (u64, BTreeMap<String, u64>) {
        let servers = self
            .servers
            .lock()
            .unwrap()
            .iter()
            .map(|(k, b)| (k.clone(), b.rate()))
            .collect();
        (self.global.rate(), servers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_timetables() {
        assert_eq!(parse_rate("512k"), Ok(512 * 1024));
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("1.5M"), Ok(1_572_864));
        assert_eq!(parse_rate("off"), Ok(0));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert!(parse_rate("fast").is_err() && parse_rate("-1M").is_err());
        let s =
            Schedule::parse(&RateSetting::Text("08:00,512k 19:00,10M 23:00,off".into())).unwrap();
        assert_eq!(
            s.at(7 * 60),
            0,
            "before 08:00: the day's last setting (off)"
        );
        assert_eq!(s.at(8 * 60), 512 * 1024);
        assert_eq!(s.at(18 * 60 + 59), 512 * 1024);
        assert_eq!(s.at(19 * 60), 10 << 20);
        assert_eq!(s.at(23 * 60 + 30), 0);
        assert!(Schedule::parse(&RateSetting::Text("25:00,1M 01:00,2M".into())).is_err());
        assert!(Schedule::parse(&RateSetting::Text("08:00 1M".into())).is_err());
        assert_eq!(
            Schedule::parse(&RateSetting::BytesPerSecond(100))
                .unwrap()
                .at(0),
            100
        );
    }
}
