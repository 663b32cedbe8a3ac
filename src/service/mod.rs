//! Service managers: what the daemon tells systemd or the Windows service
//! control manager, through one small interface.
//!
//! - [`Supervisor`]: ready, reloading, stopping, a status line; the daemon
//!   calls it, and does not know which manager (if any) listens.
//! - [`systemd`]: `sd_notify` (READY, STATUS, WATCHDOG while the loops make
//!   progress, RELOADING, STOPPING with EXTEND_TIMEOUT_USEC).
//! - [`windows`]: the same binary as a Windows service (install, start,
//!   stop; Stop takes the SIGTERM path).

#[cfg(unix)]
pub mod systemd;
#[cfg(windows)]
pub mod windows;

use std::time::Duration;

/// What the daemon tells its service manager. Every method has a no-op
/// default: in a terminal nobody listens.
pub trait Supervisor: Send + Sync {
    /// The startup resume has queued unfinished jobs and intake is watching
    /// (also sent after a reload took effect).
    fn ready(&self) {}
    /// A reload has begun.
    fn reloading(&self) {}
    /// Shutdown has begun; in-flight uploads get `grace` to finish.
    fn stopping(&self, _grace: Duration) {}
    /// A one-line summary of what the daemon is doing.
    fn status(&self, _line: &str) {}
}

/// Nobody listening: a daemon run from a terminal, or a test.
pub struct Unsupervised;

impl Supervisor for Unsupervised {}
