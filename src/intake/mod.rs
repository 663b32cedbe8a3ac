//! Intake: where jobs come from. Everything after intake is the same.
//!
//! - [`folder`]: the inbox folder: watch, settle, claim into `checked/`
//!   (its items are re-exported here: `intake::claim`, `intake::Intake`).
//!
//! An intake hands the scheduler [`Work`]: a claimed job file in
//! `checked/`, locked, with a job permit.

pub mod folder;

pub use folder::*;
