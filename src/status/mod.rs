//! What the daemon is doing, for operators: the in-memory [`Board`] of
//! running jobs (fed by events), the progress ticker, the Prometheus
//! metrics ([`metrics`]), the HTTP API with its dashboard ([`http`]), the
//! CLI's view of it ([`client`]: `status`, `submit --wait`) and terminal
//! progress bars ([`progress`]). Around the API: who may use it ([`auth`]:
//! the token and signed requests; [`guard`]: what a browser may not make
//! it do), where each instance serves it ([`instances`]), and the last
//! hour's totals for the dashboard's chart ([`throughput`]).
//!
//! Finished jobs are not kept in memory: `GET /api/jobs` reads them from
//! the history index ([`crate::history`]), or from the receipts in
//! `checked/` until the index has caught up, so history survives restarts
//! and job names never reset.

pub mod auth;
pub mod client;
pub mod guard;
pub mod http;
pub mod instances;
pub mod metrics;
pub mod progress;
pub(crate) mod throughput;

use crate::events::{Event, Events, Sink};
use crate::history::Query;
use crate::job::progress::{Progress, Stage};
use crate::job::Entry;
use crate::report::{JobState, Receipt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the ticker turns byte counters into `progress` events.
const TICK: Duration = Duration::from_millis(500);
/// How often a long upload writes a progress line to the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One entry of a running job, as the board tracks it.
struct Tracked {
    /// Shared by the job's entries to one server.
    server: Arc<str>,
    remote_path: String,
    progress: Arc<Progress>,
    /// Bytes per second, smoothed over the last few ticks.
    rate: f64,
    last_sent: u64,
    last_stage: Stage,
    last_logged: Instant,
    error: Option<String>,
    next_attempt_at: Option<String>,
    /// `ftp://host:port/path` once done (never with credentials).
    url: Option<String>,
}

struct LiveJob {
    claimed_at: String,
    entries: Vec<Tracked>,
}

/// The running jobs, their entries and their live progress.
pub(crate) struct Board {
    checked: PathBuf,
    jobs: Mutex<BTreeMap<String, LiveJob>>,
    /// Bytes delivered and jobs ended per minute, the last hour.
    pub(crate) throughput: throughput::Throughput,
}

/// One line of `GET /api/jobs`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct JobSummary {
    pub(crate) job: String,
    pub(crate) state: JobState,
    pub(crate) claimed_at: String,
    pub(crate) finished_at: Option<String>,
    pub(crate) entries_total: usize,
    pub(crate) entries_done: usize,
    pub(crate) entries_failed: usize,
    pub(crate) bytes_total: u64,
    pub(crate) bytes_sent: u64,
    /// The servers its entries go to.
    #[serde(default)]
    pub(crate) servers: Vec<String>,
    /// Why it is invalid, or its first entry's error.
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// One entry's live state in `GET /api/jobs/{job}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntryProgress {
    pub(crate) entry: usize,
    pub(crate) server: String,
    pub(crate) remote_path: String,
    pub(crate) stage: Stage,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_total: u64,
    pub(crate) rate_bps: u64,
    pub(crate) eta_secs: Option<u64>,
    pub(crate) segments: usize,
    pub(crate) attempt: u32,
    pub(crate) next_attempt_at: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) url: Option<String>,
}

impl Board {
    pub(crate) fn new(checked: PathBuf) -> Board {
        Board {
            checked,
            jobs: Mutex::default(),
            throughput: throughput::Throughput::default(),
        }
    }

    /// Starts tracking a job's entries (their `progress` counters are the
    /// ones the senders bump).
    pub(crate) fn track(&self, job: &str, claimed_at: &str, entries: &[Entry]) {
        let mut last: Option<(&Arc<crate::job::ServerSpec>, Arc<str>)> = None;
        let entries = entries
            .iter()
            .map(|e| Tracked {
                server: match &last {
                    Some((spec, name)) if Arc::ptr_eq(spec, &e.server) => name.clone(),
                    _ => {
                        let name: Arc<str> = e.server.key().host_port().into();
                        last = Some((&e.server, name.clone()));
                        name
                    }
                },
                remote_path: e.remote_path(),
                progress: e.progress.clone(),
                rate: 0.0,
                last_sent: 0,
                last_stage: Stage::Queued,
                last_logged: Instant::now(),
                error: None,
                next_attempt_at: None,
                url: None,
            })
            .collect();
        self.jobs.lock().unwrap().insert(
            job.to_string(),
            LiveJob {
                claimed_at: claimed_at.to_string(),
                entries,
            },
        );
    }

    /// Stops tracking a job that did not finish here (shutdown).
    pub(crate) fn forget(&self, job: &str) {
        self.jobs.lock().unwrap().remove(job);
    }

    pub(crate) fn running(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    fn live_entries(job: &LiveJob, offset: usize, limit: usize) -> Vec<EntryProgress> {
        job.entries
            .iter()
            .enumerate()
            .skip(offset)
            .take(limit)
            .map(|(i, t)| {
                let (sent, total) = (t.progress.sent(), t.progress.total());
                let stage = t.progress.stage();
                let rate = t.rate.round() as u64;
                EntryProgress {
                    entry: i,
                    server: t.server.to_string(),
                    remote_path: t.remote_path.clone(),
                    stage,
                    bytes_sent: sent,
                    bytes_total: total,
                    rate_bps: if stage == Stage::Uploading { rate } else { 0 },
                    eta_secs: (stage == Stage::Uploading && rate > 0)
                        .then(|| total.saturating_sub(sent) / rate.max(1)),
                    segments: t.progress.segments(),
                    attempt: t.progress.attempt(),
                    next_attempt_at: t.next_attempt_at.clone(),
                    error: t.error.clone(),
                    url: t.url.clone(),
                }
            })
            .collect()
    }

    /// Live progress of a running job's entries `offset..offset + limit`;
    /// `None` if it is not running here.
    pub(crate) fn progress(
        &self,
        job: &str,
        offset: usize,
        limit: usize,
    ) -> Option<Vec<EntryProgress>> {
        let jobs = self.jobs.lock().unwrap();
        jobs.get(job).map(|j| Board::live_entries(j, offset, limit))
    }

    /// Whether `job` is running here.
    pub(crate) fn is_running(&self, job: &str) -> bool {
        self.jobs.lock().unwrap().contains_key(job)
    }

    fn live_summaries(&self) -> Vec<JobSummary> {
        let jobs = self.jobs.lock().unwrap();
        jobs.iter()
            .map(|(name, j)| {
                let mut s = JobSummary {
                    job: name.clone(),
                    state: JobState::Running,
                    claimed_at: j.claimed_at.clone(),
                    finished_at: None,
                    entries_total: j.entries.len(),
                    entries_done: 0,
                    entries_failed: 0,
                    bytes_total: 0,
                    bytes_sent: 0,
                    servers: Vec::new(),
                    error: None,
                };
                for t in &j.entries {
                    let stage = t.progress.stage();
                    s.entries_done += matches!(stage, Stage::Done | Stage::Skipped) as usize;
                    s.entries_failed += (stage == Stage::Failed) as usize;
                    s.bytes_total += t.progress.total();
                    s.bytes_sent += t.progress.sent();
                    if !s.servers.iter().any(|n| **n == *t.server) {
                        s.servers.push(t.server.to_string());
                    }
                    if s.error.is_none() {
                        s.error.clone_from(&t.error);
                    }
                }
                s
            })
            .collect()
    }

    /// Running jobs first, then the ended ones, newest end first: from the
    /// history index once it has caught up, else from the receipts in
    /// `checked/`. The running ones are this instance's (live) and those
    /// the index holds as running for other instances.
    pub fn list(&self, q: &Query) -> Vec<JobSummary> {
        let in_time = q.since_ms.is_none() && q.until_ms.is_none();
        let mut head: Vec<JobSummary> = self.live_summaries();
        let live: std::collections::HashSet<String> = head.iter().map(|s| s.job.clone()).collect();
        head.retain(|s| in_time && matches(s, q));
        let history = crate::history::History::shared(&self.checked).filter(|h| h.ready());
        let later_page = q.after.is_some() || q.offset > 0;
        let Some(h) = history else {
            if later_page {
                head.clear();
            }
            head.truncate(q.limit);
            return self.list_receipts(q, &live, head);
        };
        let listed = (|| {
            let running_too = q.state.as_deref().is_none_or(|s| s == "running");
            if in_time && running_too {
                let elsewhere = h.query(&Query {
                    state: Some("running".into()),
                    after: None,
                    offset: 0,
                    limit: 10_000,
                    ended_only: false,
                    ..q.clone()
                })?;
                let elsewhere = elsewhere.iter().filter(|r| !live.contains(&r.job));
                head.extend(elsewhere.map(summary_of_row));
            }
            // Where the page starts: in the running jobs, or among the ended.
            let (skip, after) = match &q.after {
                Some(a) => match head.iter().position(|s| &s.job == a) {
                    Some(i) => (i + 1, None),
                    None => (head.len(), Some(a.clone())),
                },
                None => (q.offset.min(head.len()), None),
            };
            let mut out: Vec<JobSummary> = head.drain(skip..).take(q.limit).collect();
            let want = q.limit - out.len();
            if want > 0 && q.state.as_deref() != Some("running") {
                let ended = h.query(&Query {
                    after: after.clone(),
                    offset: if q.after.is_some() {
                        0
                    } else {
                        q.offset.saturating_sub(skip)
                    },
                    limit: want,
                    ended_only: true,
                    ..q.clone()
                })?;
                out.extend(ended.iter().map(summary_of_row));
            }
            anyhow::Ok(out)
        })();
        match listed {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the history index cannot answer; reading the receipts");
                let mut head = self.live_summaries();
                head.retain(|s| in_time && !later_page && matches(s, q));
                head.truncate(q.limit);
                self.list_receipts(q, &live, head)
            }
        }
    }

    /// The list from the receipts themselves (newest first by file time).
    fn list_receipts(
        &self,
        q: &Query,
        running: &std::collections::HashSet<String>,
        mut out: Vec<JobSummary>,
    ) -> Vec<JobSummary> {
        let mut recent: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.checked)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".report.json"))
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (t, e.path())
            })
            .collect();
        recent.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut skip = q.offset;
        let mut after = q.after.is_some();
        for (_, path) in recent {
            if out.len() >= q.limit {
                break;
            }
            let Ok(r) = crate::report::ReceiptHead::load(&path) else {
                continue;
            };
            if running.contains(&r.job) {
                continue;
            }
            if after {
                after = q.after.as_deref() != Some(r.job.as_str());
                continue;
            }
            let row = crate::report::index_row(&r, 0);
            let in_time = q.since_ms.is_none_or(|t| row.ended_ms >= t)
                && q.until_ms.is_none_or(|t| row.ended_ms < t);
            let s = summary_of_head(&r);
            if !in_time || !matches(&s, q) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(s);
        }
        out
    }

    /// Applies one event to the board.
    fn apply(&self, event: &Event) {
        let mut jobs = self.jobs.lock().unwrap();
        match event {
            Event::RetryScheduled {
                job,
                entry,
                error,
                next_attempt_at,
                ..
            } => {
                if let Some(t) = jobs.get_mut(job).and_then(|j| j.entries.get_mut(*entry)) {
                    t.error = Some(error.clone());
                    t.next_attempt_at = Some(next_attempt_at.clone());
                }
            }
            Event::EntryDone {
                job,
                entry,
                server,
                remote_path,
                ..
            } => {
                if let Some(t) = jobs.get_mut(job).and_then(|j| j.entries.get_mut(*entry)) {
                    t.error = None;
                    t.next_attempt_at = None;
                    t.url = Some(ftp_url(server, remote_path));
                }
            }
            Event::EntryFailed {
                job, entry, error, ..
            } => {
                if let Some(t) = jobs.get_mut(job).and_then(|j| j.entries.get_mut(*entry)) {
                    t.error = Some(error.clone());
                    t.next_attempt_at = None;
                }
            }
            Event::EntryCancelled { job, entry, .. } => {
                if let Some(t) = jobs.get_mut(job).and_then(|j| j.entries.get_mut(*entry)) {
                    t.next_attempt_at = None;
                }
            }
            Event::JobFinished { job, .. } => {
                jobs.remove(job);
            }
            _ => {}
        }
    }

    /// One tick: rates, `progress` events for entries whose bytes moved,
    /// stage events, and a log line every [`LOG_EVERY`] per long upload.
    fn tick(&self, events: &Events, dt: f64) {
        let mut out = Vec::new();
        {
            let mut jobs = self.jobs.lock().unwrap();
            for (name, job) in jobs.iter_mut() {
                for (i, t) in job.entries.iter_mut().enumerate() {
                    let stage = t.progress.stage();
                    if stage != t.last_stage {
                        t.last_stage = stage;
                        if stage == Stage::Uploading {
                            t.last_sent = t.progress.sent();
                            t.rate = 0.0;
                        }
                        out.push(Event::EntryStage {
                            job: name.clone(),
                            entry: i,
                            server: t.server.to_string(),
                            remote_path: t.remote_path.clone(),
                            stage,
                            attempt: t.progress.attempt(),
                        });
                    }
                    if stage != Stage::Uploading {
                        continue;
                    }
                    let sent = t.progress.sent();
                    let delta = sent.saturating_sub(t.last_sent) as f64 / dt;
                    t.rate = if t.rate == 0.0 {
                        delta
                    } else {
                        0.6 * delta + 0.4 * t.rate
                    };
                    if sent == t.last_sent {
                        continue;
                    }
                    t.last_sent = sent;
                    let total = t.progress.total();
                    let rate = t.rate.round() as u64;
                    let eta = (rate > 0).then(|| total.saturating_sub(sent) / rate);
                    if t.last_logged.elapsed() >= LOG_EVERY {
                        t.last_logged = Instant::now();
                        tracing::info!(
                            job = %name, entry = i, server = %t.server, remote_path = %t.remote_path,
                            bytes = sent, bytes_total = total, rate_bps = rate, eta_secs = eta,
                            "upload progress"
                        );
                    }
                    out.push(Event::Progress {
                        job: name.clone(),
                        entry: i,
                        bytes_sent: sent,
                        bytes_total: total,
                        rate_bps: rate,
                        eta_secs: eta,
                        segments: t.progress.segments(),
                    });
                }
            }
        }
        for e in out {
            events.emit(e);
        }
    }

    /// Runs the ticker until `stop` is cancelled.
    pub(crate) async fn run_ticker(
        self: Arc<Self>,
        events: Events,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            let dt = last.elapsed().as_secs_f64().max(0.001);
            last = Instant::now();
            self.tick(&events, dt);
        }
    }
}

impl Sink for Board {
    fn on_event(&self, event: &Event) {
        match event {
            Event::EntryDone {
                bytes,
                skipped: false,
                ..
            } => self.throughput.delivered(*bytes),
            Event::JobFinished { .. } | Event::JobInvalid { .. } => self.throughput.job_ended(),
            _ => {}
        }
        self.apply(event);
    }
}

/// `ftp://host:port/path`: the seed's "link when done", with no credentials.
pub(crate) fn ftp_url(server: &str, remote_path: &str) -> String {
    let path: String = remote_path
        .trim_start_matches('/')
        .split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    format!("ftp://{server}/{path}")
}

pub(crate) fn summary_of(r: &Receipt) -> JobSummary {
    summary_of_head(&crate::report::ReceiptHead::of(r))
}

/// Whether a summary passes a query's state, server and text filters.
fn matches(s: &JobSummary, q: &Query) -> bool {
    q.state.as_deref().is_none_or(|st| s.state.name() == st)
        && q.server
            .as_deref()
            .is_none_or(|sv| s.servers.iter().any(|n| n == sv))
        && q.text.as_deref().is_none_or(|t| {
            let t = t.to_lowercase();
            s.job.to_lowercase().contains(&t)
                || s.error
                    .as_deref()
                    .is_some_and(|e| e.to_lowercase().contains(&t))
        })
}

pub(crate) fn summary_of_row(r: &crate::history::Row) -> JobSummary {
    JobSummary {
        job: r.job.clone(),
        state: serde_json::from_value(serde_json::Value::String(r.state.clone()))
            .unwrap_or(JobState::Failed),
        claimed_at: r.claimed_at.clone(),
        finished_at: r.finished_at.clone(),
        entries_total: r.entries_total as usize,
        entries_done: r.entries_done as usize,
        entries_failed: r.entries_failed as usize,
        bytes_total: r.bytes_total,
        bytes_sent: r.bytes_sent,
        servers: r.servers.clone(),
        error: r.error.clone(),
    }
}

pub(crate) fn summary_of_head(h: &crate::report::ReceiptHead) -> JobSummary {
    JobSummary {
        servers: h.entries.servers.clone(),
        error: h.first_error().map(str::to_string),
        job: h.job.clone(),
        state: h.state,
        claimed_at: h.claimed_at.clone(),
        finished_at: h.finished_at.clone(),
        entries_total: h.entries.total,
        entries_done: h.entries.done,
        entries_failed: h.entries.failed,
        bytes_total: h.entries.bytes_total,
        bytes_sent: h.entries.bytes_sent,
    }
}
