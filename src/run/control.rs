//! Acting on operators' requests about a job this instance runs (left by
//! `intake::request`): a cancel request, or the claimed file removed by
//! hand, cancels the job; a retry request wakes its waiting entries.
//!
//! Requests are files, so that they reach whichever instance holds the job:
//! each running job looks for them every [`POLL`], a few `stat`s.

use crate::events::{Event, Events};
use crate::report::JobPaths;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often a running job looks for requests.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// What a running job's entries are told by its operator.
#[derive(Default)]
pub(crate) struct JobControl {
    cancel: CancellationToken,
    reason: OnceLock<String>,
    retry: Notify,
}

impl JobControl {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes once the job is cancelled.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Why the job was cancelled.
    pub(crate) fn reason(&self) -> &str {
        self.reason.get().map_or("cancelled", String::as_str)
    }

    /// Completes when an operator asks for waiting entries to try now.
    pub(crate) async fn retried(&self) {
        self.retry.notified().await
    }

    fn cancel(&self, reason: String) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        self.cancel.cancel();
        true
    }
}

/// Looks for requests about the job at `paths` until `done` is cancelled.
/// `waiting` counts the entries waiting for their next attempt.
pub(crate) async fn watch(
    paths: JobPaths,
    control: Arc<JobControl>,
    done: CancellationToken,
    events: Events,
    waiting: impl Fn() -> usize,
) {
    loop {
        check(&paths, &control, &events, &waiting);
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = done.cancelled() => return,
        }
    }
}

/// One look at the request files (also made before the job's first entry
/// starts, so that a job cancelled before it was claimed never begins).
pub(crate) fn check(
    paths: &JobPaths,
    control: &JobControl,
    events: &Events,
    waiting: &dyn Fn() -> usize,
) {
    if !control.is_cancelled() {
        let reason = if paths.cancel_request().exists() {
            Some("cancelled by an operator".to_string())
        } else if !paths.job_file.exists() {
            Some(format!(
                "its claimed file {} was removed",
                paths.job_file.display()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            if control.cancel(reason.clone()) {
                events.emit(Event::JobCancelled {
                    job: paths.name.clone(),
                    reason,
                });
            }
        }
    }
    let retry = paths.retry_request();
    if retry.exists() && std::fs::remove_file(&retry).is_ok() {
        events.emit(Event::RetryRequested {
            job: paths.name.clone(),
            waiting: waiting(),
        });
        control.retry.notify_waiters();
    }
}

/// Removes the job's requests once it has ended: they were acted on.
pub(crate) fn clear(paths: &JobPaths) {
    let _ = std::fs::remove_file(paths.cancel_request());
    let _ = std::fs::remove_file(paths.retry_request());
}
