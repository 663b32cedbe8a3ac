//! Prometheus metrics (`GET /metrics`), updated by events, plus gauges
//! read at scrape time (sessions, limits, running jobs, the inbox).
//!
//! Histograms have explicit buckets. Labels never carry credentials: a
//! server is `host:port`. At most [`MAX_SERVERS`] servers get series of
//! their own, the rest count as `other`: a job may name any host, and one
//! naming 1,500 of them made 1,500 series that never went away. The
//! scrape-time gauges show the servers of now only.

use crate::events::{Event, Sink};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateL {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateServerL {
    state: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerL {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerReasonL {
    server: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerResultL {
    server: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionL {
    version: String,
}

type Hist = Family<ServerL, Histogram, fn() -> Histogram>;

fn upload_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

/// Every metric, in one registry per daemon (tests run several in one process).
pub(crate) struct Metrics {
    registry: Registry,
    jobs: Family<StateL, Counter>,
    entries: Family<StateServerL, Counter>,
    bytes: Family<ServerL, Counter>,
    duration: Hist,
    retries: Family<ServerReasonL, Counter>,
    logins: Family<ServerResultL, Counter>,
    sessions: Family<StateServerL, Gauge>,
    limit: Family<ServerL, Gauge>,
    jobs_running: Gauge,
    inbox_waiting: Gauge,
    max_rate: Family<ScopeL, Gauge>,
    webhooks: Family<ResultL, Counter>,
    /// The servers that have series of their own.
    named: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Servers with series of their own.
pub const MAX_SERVERS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultL {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeL {
    scope: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The `server` label for `server`: itself while there is room.
    fn label(&self, server: &str) -> String {
        let mut named = self.named.lock().unwrap();
        if named.contains(server) || named.len() < MAX_SERVERS && named.insert(server.to_string()) {
            server.to_string()
        } else {
            "other".to_string()
        }
    }

    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ftpdrop");
        let m = Metrics {
            jobs: Family::default(),
            entries: Family::default(),
            bytes: Family::default(),
            duration: Family::new_with_constructor(upload_buckets),
            retries: Family::default(),
            logins: Family::default(),
            sessions: Family::default(),
            limit: Family::default(),
            jobs_running: Gauge::default(),
            inbox_waiting: Gauge::default(),
            max_rate: Family::default(),
            webhooks: Family::default(),
            registry: Registry::default(),
            named: Default::default(),
        };
        registry.register("jobs", "Jobs that ended, by state", m.jobs.clone());
        registry.register(
            "entries",
            "Entries that ended, by state and server",
            m.entries.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes of files uploaded and published",
            m.bytes.clone(),
        );
        registry.register(
            "upload_duration_seconds",
            "Time from an entry's first attempt to its verified publish",
            m.duration.clone(),
        );
        registry.register(
            "retries",
            "Attempts that failed and will be retried",
            m.retries.clone(),
        );
        registry.register("logins", "Logins, by result", m.logins.clone());
        registry.register(
            "sessions",
            "Open FTP sessions, busy or idle",
            m.sessions.clone(),
        );
        registry.register(
            "server_connection_limit",
            "Connections allowed to the server now (lowered when it says too many)",
            m.limit.clone(),
        );
        registry.register(
            "jobs_running",
            "Jobs being run by this instance",
            m.jobs_running.clone(),
        );
        registry.register(
            "inbox_waiting",
            "Job files waiting in the inbox",
            m.inbox_waiting.clone(),
        );
        registry.register(
            "max_rate_bytes_per_second",
            "Bandwidth limit in force (scope: global or host:port); 0: none",
            m.max_rate.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by result (ok, retry, gave_up)",
            m.webhooks.clone(),
        );
        let info: Family<VersionL, Gauge> = Family::default();
        info.get_or_create(&VersionL {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
        registry.register("build_info", "The running version", info);
        Metrics { registry, ..m }
    }

    /// Sets the gauges read at scrape time, then encodes everything.
    pub(crate) fn render(
        &self,
        servers: &[crate::ftp::pool::ServerLoad],
        rates: &(u64, std::collections::BTreeMap<String, u64>),
        jobs_running: usize,
        inbox_waiting: usize,
    ) -> String {
        self.max_rate
            .get_or_create(&ScopeL {
                scope: "global".into(),
            })
            .set(rates.0 as i64);
        for (server, r) in &rates.1 {
            self.max_rate
                .get_or_create(&ScopeL {
                    scope: server.clone(),
                })
                .set(*r as i64);
        }
        // The servers of now: one gone since the last scrape has no series.
        self.sessions.clear();
        self.limit.clear();
        for s in servers {
            let server = self.label(&s.server);
            for (state, n) in [
                ("busy", s.busy),
                ("idle", s.idle),
                ("abandoned", s.abandoned),
            ] {
                self.sessions
                    .get_or_create(&StateServerL {
                        state: state.into(),
                        server: server.clone(),
                    })
                    .inc_by(n as i64);
            }
            self.limit
                .get_or_create(&ServerL { server })
                .inc_by(s.limit as i64);
        }
        self.jobs_running.set(jobs_running as i64);
        self.inbox_waiting.set(inbox_waiting as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Sink for Metrics {
    fn on_event(&self, event: &Event) {
        match event {
            Event::JobFinished { state, .. } => {
                self.jobs
                    .get_or_create(&StateL {
                        state: state.name().into(),
                    })
                    .inc();
            }
            Event::JobInvalid { .. } => {
                self.jobs
                    .get_or_create(&StateL {
                        state: "invalid".into(),
                    })
                    .inc();
            }
            Event::EntryDone {
                server,
                bytes,
                elapsed_ms,
                skipped,
                ..
            } => {
                let server = &self.label(server);
                let state = if *skipped { "skipped" } else { "done" };
                self.entries
                    .get_or_create(&StateServerL {
                        state: state.into(),
                        server: server.clone(),
                    })
                    .inc();
                if !skipped {
                    self.bytes
                        .get_or_create(&ServerL {
                            server: server.clone(),
                        })
                        .inc_by(*bytes);
                    self.duration
                        .get_or_create(&ServerL {
                            server: server.clone(),
                        })
                        .observe(*elapsed_ms as f64 / 1000.0);
                }
            }
            Event::EntryFailed { server, .. } | Event::EntryCancelled { server, .. } => {
                let state = match event {
                    Event::EntryFailed { .. } => "failed",
                    _ => "cancelled",
                };
                let server = &self.label(server);
                self.entries
                    .get_or_create(&StateServerL {
                        state: state.into(),
                        server: server.clone(),
                    })
                    .inc();
            }
            Event::RetryScheduled { server, reason, .. } => {
                let server = &self.label(server);
                self.retries
                    .get_or_create(&ServerReasonL {
                        server: server.clone(),
                        reason: (*reason).into(),
                    })
                    .inc();
            }
            Event::WebhookDelivered { result, .. } => {
                self.webhooks
                    .get_or_create(&ResultL {
                        result: (*result).into(),
                    })
                    .inc();
            }
            Event::SessionOpened { server } => {
                let server = &self.label(server);
                self.logins
                    .get_or_create(&ServerResultL {
                        server: server.clone(),
                        result: "ok".into(),
                    })
                    .inc();
            }
            Event::LoginFailed { server, result } => {
                let server = &self.label(server);
                self.logins
                    .get_or_create(&ServerResultL {
                        server: server.clone(),
                        result: (*result).into(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}
