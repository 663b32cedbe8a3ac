//! ftpdrop: a daemon that watches a folder for JSON job files and uploads
//! the files they name to FTP/FTPS servers, verified and crash-safe.
//!
//! Data flows one way: intake → job → pool → transfer → report.
//!
//! - [`config`]: the configuration file, its defaults and validation.
//! - [`confine`]: what a job may reach: `local_roots`, `allowed_hosts`.
//! - [`schema`]: JSON Schemas of the job file and the config, from the types.
//! - [`intake`]: watch the inbox, wait for files to settle, claim them into `checked/`.
//! - [`job`]: the job file format and its validation, naming every bad field.
//! - [`runner`]: one claimed job: entries run concurrently, retries with backoff.
//! - [`pool`]: logged-in sessions reused per server; global and per-server limits.
//! - [`transfer`]: one attempt at one entry: temp name, resume, verify, rename.
//! - [`source`]: the local file: its bytes onto a data connection (sendfile where it can), its SHA-256 beside.
//! - [`segment`]: a big file over several connections at once, on servers a probe found able.
//! - [`verify`]: server-side digests (HASH, XSHA256, XMD5, ...) and read-back of the temp file.
//! - [`ftp`]: one FTP/FTPS session; every protocol detail lives here.
//! - [`reply`]: the server replies ftpdrop parses itself (FEAT, SIZE), as pure functions.
//! - [`fault`]: the typed error that says transient, back-pressure or permanent.
//! - [`tls`]: rustls client configs (system roots, `ca_file`, explicit opt-out).
//! - [`report`]: the receipt and its journal, written atomically, owner-only.
//! - [`housekeeping`]: ended jobs: inline secrets redacted, old ones removed (`retention_days`).
//! - [`daemon`]: lifecycle: resume unfinished jobs, intake, graceful shutdown.
//! - [`secret`]: passwords that never print.
//! - [`logging`]: text or JSON logs, with protocol traces kept out.

pub mod config;
pub mod confine;
pub mod daemon;
pub mod fault;
pub mod ftp;
pub mod housekeeping;
pub mod intake;
pub mod job;
pub mod logging;
pub mod pool;
pub mod reply;
pub mod report;
pub mod runner;
pub mod schema;
pub mod secret;
pub mod segment;
pub mod source;
pub mod tls;
pub mod transfer;
pub mod verify;

pub use config::Config;
pub use daemon::{once, run};
pub use report::{JobState, Receipt};
