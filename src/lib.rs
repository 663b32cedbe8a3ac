//! ftpdrop: a daemon that watches a folder for JSON job files and uploads
//! the files they name to FTP/FTPS servers, verified and crash-safe.
//!
//! Data flows one way, and the folders follow it:
//! intake → job → run → upload → ftp → report.
//!
//! - [`intake`]: watch the inbox, wait for files to settle, claim them into
//!   `checked/`; operators' requests about a job ([`intake::request`]).
//! - [`job`]: the job file format and its validation, naming every bad field;
//!   [`job::confine`] (`local_roots`, `allowed_hosts`), [`job::schema`] and
//!   [`job::progress`] (an entry's live stage and counters).
//! - [`run`]: [`run::daemon`] (lifecycle: resume, intake, graceful shutdown),
//!   [`run::runner`] (one job: entries concurrently, retries with backoff),
//!   [`run::housekeeping`] (ended jobs: secrets redacted, old ones removed),
//!   [`run::control`] (acting on cancel and retry requests).
//! - [`upload`]: [`upload::transfer`] (one attempt: temp name, resume, verify,
//!   rename), [`upload::source`] (the local file's bytes and SHA-256),
//!   [`upload::segment`] (a big file over several connections),
//!   [`upload::verify`] (server-side digests, read-back).
//! - [`rate`]: bandwidth limits (global, per server, on a timetable).
//! - [`health`]: are the loops making progress? (the watchdog, `/health`).
//! - [`ftp`]: [`ftp::session`] (one FTP/FTPS session; every protocol detail),
//!   [`ftp::pool`] (sessions reused per server and credentials; limits),
//!   [`ftp::tls`], [`ftp::reply`] (replies parsed as pure functions),
//!   [`ftp::fault`] (transient, back-pressure or permanent).
//! - [`report`]: the receipt and its journal, written atomically, owner-only.
//! - [`history`]: the index of jobs (SQLite in `checked/`) that lists query.
//! - [`events`]: the typed events; each one is a log line, a metric update,
//!   a status update and a live message.
//! - [`status`]: what operators see: the board of running jobs, Prometheus
//!   metrics, the HTTP API (SSE, WebSocket) and the embedded dashboard.
//! - [`webhook`]: final receipts POSTed to configured URLs, signed, at least once.
//! - [`service`]: what systemd or the Windows service manager is told.
//! - [`config`]: the configuration file, its defaults and validation.
//! - [`secret`]: passwords that never print.
//! - [`store`]: the daemon's own files, written atomically and owner-only.
//! - [`host`]: hosts as written: `host:port` names, what cannot be a host.
//! - [`localfile`]: opening files others name: regular files only, never blocking.
//! - [`logging`]: text or JSON logs, with protocol traces kept out.
//! - [`suggest`]: "did you mean" for misspelled field names.
//!
//! Modules are named by their folder (`ftpdrop::ftp::pool`,
//! `ftpdrop::upload::transfer`): the crate root re-exports only
//! [`Config`], [`once`], [`run()`], [`JobState`] and [`Receipt`].

pub mod config;
pub mod events;
pub mod ftp;
pub mod health;
pub mod history;
pub mod host;
pub mod intake;
pub mod job;
pub mod localfile;
pub mod logging;
pub mod rate;
pub mod report;
pub mod run;
pub mod secret;
pub mod service;
pub mod status;
pub mod store;
pub mod suggest;
pub mod upload;
pub mod webhook;

pub use config::Config;
pub use report::{JobState, Receipt};
pub use run::daemon::{once, run};
