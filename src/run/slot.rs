//! A job's slot among `max_concurrent_jobs`, given back while every one of
//! its unfinished entries only waits to retry.
//!
//! Transient faults are retried for up to a day, so jobs pointed at a
//! partner server that is down would otherwise hold every job slot and keep
//! jobs for live servers waiting in the inbox. An entry that starts to wait
//! leaves the job's active count; when none is left active, the permit goes
//! back and intake may claim another job. An entry that wakes to retry
//! takes a permit again (waiting for one, like a new job) before it
//! connects.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct JobSlot {
    /// The daemon's job permits.
    permits: Arc<Semaphore>,
    /// Held while any entry is active; `None` while all of them wait.
    state: Mutex<State>,
}

struct State {
    permit: Option<OwnedSemaphorePermit>,
    /// Entries running or about to run (not waiting, not finished).
    active: usize,
    /// Entries waiting to retry.
    waiting: usize,
}

/// One entry's part in its job's slot: active until it waits or ends.
pub(crate) struct Presence {
    slot: Option<Arc<JobSlot>>,
    active: bool,
}

impl Presence {
    pub(crate) fn new(slot: Option<Arc<JobSlot>>) -> Presence {
        Presence { slot, active: true }
    }

    /// The entry waits to retry.
    pub(crate) fn wait(&mut self) {
        if self.active {
            self.active = false;
            if let Some(s) = &self.slot {
                s.leave(true);
            }
        }
    }

    /// The entry is about to try again.
    pub(crate) async fn rejoin(&mut self) {
        if !self.active {
            if let Some(s) = &self.slot {
                s.rejoin().await;
            }
            self.active = true;
        }
    }
}

impl Drop for Presence {
    /// The entry is finished (or stopped by a shutdown).
    fn drop(&mut self) {
        if self.active {
            if let Some(s) = &self.slot {
                s.leave(false);
            }
        }
    }
}

impl JobSlot {
    /// A slot holding `permit`, for a job about to run `entries` entries.
    pub(crate) fn new(
        permits: Arc<Semaphore>,
        permit: OwnedSemaphorePermit,
        entries: usize,
    ) -> Arc<JobSlot> {
        Arc::new(JobSlot {
            permits,
            state: Mutex::new(State {
                permit: Some(permit),
                active: entries,
                waiting: 0,
            }),
        })
    }

    /// Sets how many entries are about to run (the pending ones).
    pub(crate) fn set_active(&self, entries: usize) {
        self.state.lock().unwrap().active = entries;
    }

    /// An entry stops being active: it waits to retry (`waiting`), or it is
    /// finished. The slot goes back once no entry is active and some wait:
    /// a job whose entries are all finished keeps it while it writes its
    /// final receipt.
    fn leave(&self, waiting: bool) {
        let mut st = self.state.lock().unwrap();
        st.active = st.active.saturating_sub(1);
        if waiting {
            st.waiting += 1;
        }
        if st.active == 0 && st.waiting > 0 && st.permit.take().is_some() {
            tracing::debug!(
                "every unfinished entry of the job waits: its job slot is free for other jobs"
            );
        }
    }

    /// An entry becomes active again (it wakes to retry): waits for a job
    /// permit if the job gave its own back.
    pub(crate) async fn rejoin(&self) {
        {
            let mut st = self.state.lock().unwrap();
            st.waiting = st.waiting.saturating_sub(1);
            if st.permit.is_some() {
                st.active += 1;
                return;
            }
        }
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let mut st = self.state.lock().unwrap();
        st.active += 1;
        if st.permit.is_none() {
            st.permit = Some(p);
        }
        // Another entry took one meanwhile: ours goes back (dropped here).
    }
}
