//! Running claimed jobs: the daemon's lifecycle, one job with its retries,
//! and what happens to jobs after they end.
//!
//! - [`daemon`]: resume unfinished jobs, run intake, shut down gracefully.
//! - [`entry`]: one entry's state change as one call: journal, live stage, event.
//! - [`control`]: operators' requests about a running job (cancel, retry now).
//! - [`extras`]: the files made for a job (sidecars, done markers), and when they may go.
//! - [`runner`]: one claimed job: entries run concurrently, retries with backoff.
//! - [`housekeeping`]: ended jobs: inline secrets redacted, old ones removed.
//! - [`slot`]: a job's slot among `max_concurrent_jobs`, given back while all its entries wait.

pub(crate) mod control;
pub mod daemon;
pub mod entry;
pub(crate) mod extras;
pub mod housekeeping;
pub(crate) mod runner;
pub(crate) mod slot;
