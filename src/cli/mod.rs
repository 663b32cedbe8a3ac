//! The `ftpdrop` commands. `main.rs` parses the arguments ([`args`]) and
//! hands each command to its module here; the work itself is the library's.
//!
//! - [`args`]: the command line, and how logging is set up from it.
//! - [`daemon`]: `run` and `once`, with the signals, systemd and the reload.
//! - [`check`]: `validate` and `check-config`.
//! - [`control`]: `cancel` and `retry`, for a submitted job.
//! - [`submit`]: `submit`, into the inbox or to NATS, and `--wait`.
//! - [`status`]: `status` and `dashboard`.
//! - [`service`]: `service`, for the Windows service manager.
//! - [`tools`]: `reindex`, `schema`, `completions` and `manpage`.

pub mod args;
pub mod check;
pub mod control;
pub mod daemon;
pub mod service;
pub mod status;
pub mod submit;
pub mod tools;

use anyhow::{Context, Result};

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
