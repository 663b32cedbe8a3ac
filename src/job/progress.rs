//! An entry's live progress: where it is in its life ([`Stage`]) and its
//! counters ([`Progress`]), bumped by the senders and read by the status
//! board, the terminal bars and the API.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    Connecting,
    Uploading,
    Verifying,
    Publishing,
    WaitingRetry,
    Done,
    Failed,
    Skipped,
    Cancelled,
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Queued,
        Stage::Connecting,
        Stage::Uploading,
        Stage::Verifying,
        Stage::Publishing,
        Stage::WaitingRetry,
        Stage::Done,
        Stage::Failed,
        Stage::Skipped,
        Stage::Cancelled,
    ];

    fn from_u8(v: u8) -> Stage {
        Stage::ALL.get(v as usize).copied().unwrap_or(Stage::Queued)
    }

    /// As the API spells it: `waiting_retry`, `done`, ...
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Connecting => "connecting",
            Stage::Uploading => "uploading",
            Stage::Verifying => "verifying",
            Stage::Publishing => "publishing",
            Stage::WaitingRetry => "waiting_retry",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Skipped => "skipped",
            Stage::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            Stage::Done | Stage::Failed | Stage::Skipped | Stage::Cancelled
        )
    }
}

/// One entry's live counters, shared by the senders (which bump them) and
/// the status board (which reads them). Atomics: a chunk sent costs one
/// relaxed add, nothing more.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes the temp file holds so far (a resume starts at its offset).
    sent: AtomicU64,
    total: AtomicU64,
    segments: AtomicUsize,
    stage: AtomicU8,
    attempt: AtomicU64,
}

impl Progress {
    pub(crate) fn add(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// A new upload of `total` bytes starting at byte `from`, in `segments` streams.
    pub fn start(&self, from: u64, total: u64, segments: usize) {
        self.total.store(total, Ordering::Relaxed);
        self.sent.store(from, Ordering::Relaxed);
        self.segments.store(segments.max(1), Ordering::Relaxed);
    }

    pub(crate) fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_attempt(&self, attempt: u32) {
        self.attempt.store(attempt as u64, Ordering::Relaxed);
    }

    pub(crate) fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Relaxed))
    }

    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn segments(&self) -> usize {
        self.segments.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.attempt.load(Ordering::Relaxed) as u32
    }
}
