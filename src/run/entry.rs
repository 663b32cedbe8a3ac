//! One entry's state changes, each one call: the journal line first, then
//! the live stage, then the event (its log line, metrics, the status board
//! and the live feed). What operators hear of is never ahead of what a
//! restart would find in the journal.

use crate::events::{Event, Events};
use crate::job::progress::Stage;
use crate::job::Entry;
use crate::report::{Disposal, EntryReport, ReportHandle};
use std::time::Duration;

/// Where one entry's changes go.
pub(crate) struct Transitions<'a> {
    report: &'a ReportHandle,
    events: &'a Events,
    job: &'a str,
    entry: &'a Entry,
    /// `host:port`, as events name the server.
    server: String,
    remote_path: String,
}

/// Why an entry waits to try again (the event's `reason`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RetryReason {
    TooManyConnections,
    Desync,
    Inherited,
    Transient,
}

impl RetryReason {
    fn name(self) -> &'static str {
        match self {
            RetryReason::TooManyConnections => "too_many_connections",
            RetryReason::Desync => "desync",
            RetryReason::Inherited => "inherited",
            RetryReason::Transient => "transient",
        }
    }
}

impl<'a> Transitions<'a> {
    pub(crate) fn new(
        report: &'a ReportHandle,
        events: &'a Events,
        job: &'a str,
        entry: &'a Entry,
    ) -> Transitions<'a> {
        Transitions {
            report,
            events,
            job,
            entry,
            server: entry.server.key().host_port(),
            remote_path: entry.remote_path(),
        }
    }

    /// Published and verified, or skipped (`rep` says which, and carries
    /// the outcome). `resumed_from`: the offset the last attempt resumed at.
    pub(crate) fn done(&self, rep: &EntryReport, attempt: u32, resumed_from: u64, segments: usize) {
        self.report.update(rep.clone());
        let bytes = rep.bytes.unwrap_or(0);
        let skipped = rep.state == crate::report::EntryState::Skipped;
        let progress = &self.entry.progress;
        progress.start(bytes, bytes, segments);
        progress.set_stage(if skipped { Stage::Skipped } else { Stage::Done });
        self.events.emit(Event::EntryDone {
            job: self.job.to_string(),
            entry: self.entry.index,
            server: self.server.clone(),
            remote_path: self.remote_path.clone(),
            bytes,
            elapsed_ms: rep.elapsed_ms,
            attempt,
            resumed_from,
            skipped,
            segments,
        });
    }

    /// Failed for good; `rep.error` says why.
    pub(crate) fn failed(&self, rep: &EntryReport, attempt: u32) {
        self.report.update(rep.clone());
        let progress = &self.entry.progress;
        progress.set_stage(Stage::Failed);
        self.events.emit(Event::EntryFailed {
            job: self.job.to_string(),
            entry: self.entry.index,
            server: self.server.clone(),
            remote_path: self.remote_path.clone(),
            bytes_total: progress.total(),
            attempt,
            elapsed_ms: rep.elapsed_ms,
            error: rep.error.clone().unwrap_or_default(),
        });
    }

    /// Not done when its job was cancelled; `rep.error` says why.
    pub(crate) fn cancelled(&self, rep: &EntryReport) {
        self.report.update(rep.clone());
        self.entry.progress.set_stage(Stage::Cancelled);
        self.events.emit(Event::EntryCancelled {
            job: self.job.to_string(),
            entry: self.entry.index,
            server: self.server.clone(),
            remote_path: self.remote_path.clone(),
        });
    }

    /// Waits `wait` before its next attempt (`rep.next_attempt_at`), after
    /// `error`.
    pub(crate) fn retrying(
        &self,
        rep: &EntryReport,
        attempt: u32,
        reason: RetryReason,
        error: &str,
        wait: Duration,
    ) {
        self.report.update(rep.clone());
        self.entry.progress.set_stage(Stage::WaitingRetry);
        self.events.emit(Event::RetryScheduled {
            job: self.job.to_string(),
            entry: self.entry.index,
            server: self.server.clone(),
            remote_path: self.remote_path.clone(),
            attempt,
            reason: reason.name(),
            error: error.to_string(),
            retry_in_ms: wait.as_millis() as u64,
            next_attempt_at: rep.next_attempt_at.clone().unwrap_or_default(),
        });
    }

    /// The local file was dealt with after the publish (`rep.disposal`).
    pub(crate) fn disposed(&self, rep: &EntryReport, disposal: &Disposal) {
        self.report.update(rep.clone());
        self.events.emit(Event::SourceDisposed {
            job: self.job.to_string(),
            entry: self.entry.index,
            local_path: self.entry.local_path.display().to_string(),
            disposal: disposal.clone(),
        });
    }
}
