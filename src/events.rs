//! The typed events of a running daemon, and the one place they fan out.
//!
//! Every state change an operator may care about is one [`Event`]. Emitting
//! it (see [`Events::emit`]) writes its one log line, updates the metrics
//! ([`crate::status::metrics`]), updates the in-memory status behind the
//! HTTP API ([`crate::status::Board`]) and sends it to live subscribers (SSE,
//! WebSocket). A job's or an entry's state change is never logged, counted
//! or reported on its own: it is emitted. (The pattern is vector's
//! `internal_events`.) The protocol layers (`ftp/`, `upload/segment.rs`)
//! still log how they found out what they learned about a server (a
//! probe's replies, its reason), beside the [`Event::ServerLearned`] that
//! reports the fact.
//!
//! Byte counts are the exception: counting every chunk through a channel
//! would cost the upload path, so each entry has a [`Progress`](crate::job::progress::Progress) of atomics
//! that the senders bump and a ticker (see [`crate::status`]) turns into
//! throttled `progress` events, rates and ETAs.

use crate::job::progress::Stage;
use crate::report::JobState;
use serde::Serialize;
use std::sync::Arc;
use tracing::{info, warn};

/// Everything that happens, one variant per kind. Serialized as the
/// messages of `/api/events` and `/api/ws`: `{"type": "...", ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    JobClaimed {
        job: String,
    },
    /// A job another instance held is run here: that instance is gone (its
    /// lock went with it).
    JobTakenOver {
        job: String,
    },
    /// A job stopped by a shutdown before it ended; the next start (of any
    /// instance) resumes it from its journal.
    JobInterrupted {
        job: String,
    },
    /// An operator asked to cancel the job, or its claimed file was
    /// removed (`reason` says which): entries not done end `cancelled`.
    JobCancelled {
        job: String,
        reason: String,
    },
    /// An operator asked for the job's waiting entries to be tried now.
    RetryRequested {
        job: String,
        waiting: usize,
    },
    /// A new configuration is in force (SIGHUP).
    ConfigReloaded,
    JobStarted {
        job: String,
        entries: usize,
        resumed: bool,
    },
    JobInvalid {
        job: String,
        problems: Vec<String>,
    },
    EntryStage {
        job: String,
        entry: usize,
        server: String,
        remote_path: String,
        stage: Stage,
        attempt: u32,
    },
    Progress {
        job: String,
        entry: usize,
        bytes_sent: u64,
        bytes_total: u64,
        rate_bps: u64,
        eta_secs: Option<u64>,
        segments: usize,
    },
    RetryScheduled {
        job: String,
        entry: usize,
        server: String,
        remote_path: String,
        attempt: u32,
        reason: &'static str,
        error: String,
        retry_in_ms: u64,
        next_attempt_at: String,
    },
    EntryDone {
        job: String,
        entry: usize,
        server: String,
        remote_path: String,
        bytes: u64,
        elapsed_ms: u64,
        attempt: u32,
        resumed_from: u64,
        skipped: bool,
        segments: usize,
    },
    EntryFailed {
        job: String,
        entry: usize,
        server: String,
        remote_path: String,
        bytes_total: u64,
        attempt: u32,
        elapsed_ms: u64,
        error: String,
    },
    /// Not done when its job was cancelled; its temp file is removed.
    EntryCancelled {
        job: String,
        entry: usize,
        server: String,
        remote_path: String,
    },
    /// What became of a published entry's local file (`after`).
    SourceDisposed {
        job: String,
        entry: usize,
        local_path: String,
        disposal: crate::report::Disposal,
    },
    /// One webhook delivery attempt: `ok`, `retry` or `gave_up`.
    WebhookDelivered {
        job: String,
        url: String,
        result: &'static str,
        attempt: u32,
        detail: String,
    },
    SessionOpened {
        server: String,
    },
    LoginFailed {
        server: String,
        result: &'static str,
    },
    LimitLowered {
        server: String,
        limit: usize,
    },
    /// A session ftpdrop gave up (a timeout, a broken connection) is no
    /// longer counted as held by the server: the server closed it, or
    /// `abandoned_session_secs` passed.
    SessionReleased {
        server: String,
        held_ms: u64,
        closed_by_server: bool,
    },
    /// The server refused a login as full (421): no session of it logs in
    /// before `wait_ms` has passed, for every entry.
    ServerFull {
        server: String,
        wait_ms: u64,
        reply: String,
    },
    /// The server answered pipelined commands out of order: its replies were
    /// matched to the wrong commands. Pipelining is off for it from now on
    /// (also after a restart).
    PipeliningOff {
        server: String,
        command: String,
        reply: String,
    },
    /// Something was learned about a server, kept for its next sessions
    /// and across restarts (`ftpdrop-learned.json`): the facts that changed,
    /// by name (`pipelining`, `limit`, `tls12`, ...), with their new values.
    ServerLearned {
        server: String,
        facts: serde_json::Map<String, serde_json::Value>,
    },
    JobFinished {
        job: String,
        state: JobState,
        done: usize,
        failed: usize,
    },
    /// The last message a subscriber too slow to keep up gets.
    Lagged {
        missed: u64,
    },
}

/// Listeners besides the log: the metrics and the status board. Both are
/// plain in-memory updates, so `emit` never waits.
pub trait Sink: Send + Sync {
    fn on_event(&self, event: &Event);
}

/// The fan-out point. Cheap to clone (an `Arc` inside each field).
#[derive(Clone)]
pub struct Events {
    sinks: Arc<std::sync::RwLock<Vec<Arc<dyn Sink>>>>,
    live: tokio::sync::broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

/// Messages a live subscriber may fall behind by before it is dropped.
const LIVE_BACKLOG: usize = 4096;

impl Events {
    pub fn new() -> Events {
        Events {
            sinks: Arc::default(),
            live: tokio::sync::broadcast::channel(LIVE_BACKLOG).0,
        }
    }

    pub(crate) fn add_sink(&self, sink: Arc<dyn Sink>) {
        self.sinks.write().unwrap().push(sink);
    }

    /// A live feed of every event from now on. A subscriber that falls more
    /// than [`LIVE_BACKLOG`] messages behind gets `Lagged` and is dropped by
    /// its server (see `status::http`); it never slows the sender.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        log(&event);
        for s in self.sinks.read().unwrap().iter() {
            s.on_event(&event);
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(event));
        }
    }
}

/// The event's one log line. Field names are the stable ones operators
/// filter on (`job`, `entry`, `server`, `remote_path`, `bytes`, `attempt`, `error`).
fn log(event: &Event) {
    match event {
        Event::JobClaimed { job } => info!(job = %job, "job claimed"),
        Event::JobTakenOver { job } => {
            info!(job = %job, "taking over a job whose instance is gone")
        }
        Event::JobInterrupted { job } => info!(
            job = %job,
            "job interrupted by shutdown; it resumes at the next start"
        ),
        Event::JobCancelled { job, reason } => warn!(job = %job, reason = %reason, "job cancelled"),
        Event::RetryRequested { job, waiting } => {
            info!(job = %job, waiting, "retry requested: waiting entries try now")
        }
        Event::EntryCancelled {
            job,
            entry,
            server,
            remote_path,
        } => {
            info!(job = %job, entry, server = %server, remote_path = %remote_path, "entry cancelled")
        }
        Event::ConfigReloaded => info!("configuration reloaded"),
        Event::JobStarted {
            job,
            entries,
            resumed,
        } => {
            if *resumed {
                info!(job = %job, "resuming interrupted job");
            }
            info!(job = %job, entries, "job started")
        }
        Event::JobInvalid { job, problems } => {
            for p in problems {
                warn!(job = %job, error = %p, "invalid job");
            }
        }
        Event::EntryStage {
            job,
            entry,
            server,
            remote_path,
            stage,
            attempt,
        } => {
            tracing::debug!(job = %job, entry, server = %server, remote_path = %remote_path, stage = ?stage, attempt, "entry stage")
        }
        Event::Progress {
            job,
            entry,
            bytes_sent,
            bytes_total,
            rate_bps,
            eta_secs,
            segments,
        } => {
            tracing::debug!(job = %job, entry, bytes = bytes_sent, bytes_total, rate_bps, eta_secs, segments, "progress")
        }
        Event::RetryScheduled {
            job,
            entry,
            server,
            remote_path,
            attempt,
            error,
            retry_in_ms,
            ..
        } => warn!(
            job = %job, entry, server = %server, remote_path = %remote_path,
            attempt, error = %error, retry_in_ms, "attempt failed; will retry"
        ),
        Event::EntryDone {
            job,
            entry,
            server,
            remote_path,
            bytes,
            elapsed_ms,
            attempt,
            resumed_from,
            skipped,
            segments,
        } => info!(
            job = %job, entry, server = %server, remote_path = %remote_path,
            bytes, elapsed_ms, attempt, resumed_from, skipped, segments,
            "entry uploaded"
        ),
        Event::EntryFailed {
            job,
            entry,
            server,
            remote_path,
            attempt,
            elapsed_ms,
            error,
            ..
        } => warn!(
            job = %job, entry, server = %server, remote_path = %remote_path,
            attempt, elapsed_ms, error = %error, "entry failed"
        ),
        Event::SourceDisposed {
            job,
            entry,
            local_path,
            disposal,
        } => match disposal.state {
            crate::report::DisposalState::Kept => warn!(
                job = %job, entry, local_path = %local_path,
                reason = disposal.reason.as_deref().unwrap_or(""),
                "source kept, not disposed of"
            ),
            state => info!(
                job = %job, entry, local_path = %local_path, state = ?state,
                to = disposal.to.as_deref().unwrap_or(""), "source disposed of"
            ),
        },
        Event::WebhookDelivered {
            job,
            url,
            result,
            attempt,
            detail,
        } => {
            if *result == "ok" {
                info!(job = %job, url = %url, attempt, status = %detail, "webhook delivered")
            } else {
                warn!(job = %job, url = %url, attempt, result, error = %detail, "webhook delivery failed")
            }
        }
        Event::SessionOpened { server } => tracing::debug!(server = %server, "session opened"),
        Event::LoginFailed { server, result } => {
            tracing::debug!(server = %server, result, "login failed")
        }
        Event::SessionReleased {
            server,
            held_ms,
            closed_by_server,
        } => tracing::debug!(
            server = %server, held_ms, closed_by_server,
            "a session given up is no longer held by the server"
        ),
        Event::ServerFull {
            server,
            wait_ms,
            reply,
        } => warn!(
            server = %server, wait_ms, reply = %reply,
            "the server is full; no new session of it before the wait is over"
        ),
        Event::LimitLowered { server, limit } => warn!(
            server = %server, limit,
            "server refused a connection as too many; lowering its limit"
        ),
        Event::PipeliningOff {
            server,
            command,
            reply,
        } => warn!(
            server = %server, command = %command, reply = %reply,
            "the server answered pipelined commands out of order; pipelining is off for it now"
        ),
        Event::ServerLearned { server, facts } => info!(
            server = %server, facts = %serde_json::Value::Object(facts.clone()),
            "learned about the server"
        ),
        Event::JobFinished {
            job,
            state,
            done,
            failed,
        } => info!(job = %job, state = %state.name(), done, failed, "job finished"),
        Event::Lagged { missed } => tracing::debug!(missed, "a live subscriber fell behind"),
    }
}

/// The last error for the status line (systemd `STATUS=`, the Windows
/// service), from the events that carry one.
impl Sink for crate::health::Health {
    fn on_event(&self, event: &Event) {
        match event {
            Event::RetryScheduled {
                job, entry, error, ..
            }
            | Event::EntryFailed {
                job, entry, error, ..
            } => self.record_error(format!("{job} entry {entry}: {error}")),
            _ => {}
        }
    }
}
