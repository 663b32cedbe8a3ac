//! Intake: where jobs come from. Everything after intake is the same.
//!
//! - [`folder`]: the inbox folder: watch, settle, claim into `checked/`
//!   (its items are re-exported here: `intake::claim`, `intake::Intake`).
//! - [`nats`]: a NATS JetStream work queue (a durable pull consumer).
//! - [`submit`]: writing a job into the inbox (`submit`, `POST /api/jobs`).
//! - [`request`]: an operator's request about a submitted job (cancel it,
//!   retry its waiting entries now), left beside it in `checked/`.
//!
//! An intake hands the scheduler [`Work`]: a claimed job file in
//! `checked/`, locked, with a job permit.

pub(crate) mod folder;
pub mod nats;
pub mod request;
pub mod submit;

pub(crate) use folder::*;
