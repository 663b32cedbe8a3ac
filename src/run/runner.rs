//! Runs one claimed job: validation, the receipt, and every entry with its retries.
//!
//! Entries of a job run concurrently; the pool's semaphores decide how many
//! really talk to a server at once. A failed entry is recorded and never
//! stops the others. Transient faults are retried with exponential backoff
//! and jitter; permanent ones fail the entry at once. "Too many connections"
//! is back-pressure: it lowers the server's limit and is retried without
//! using up the entry's attempts.

use crate::config::Config;
use crate::events::{Event, Events};
use crate::ftp::fault::FaultKind;
use crate::ftp::pool::Pool;
use crate::job::progress::Stage;
use crate::job::{self, Entry};
use crate::report::{EntryReport, EntryState, JobPaths, JobState, Receipt, ReportHandle};
use crate::run::control::JobControl;
use crate::run::entry::{RetryReason, Transitions};
use crate::run::extras;
use crate::run::slot::{JobSlot, Presence};
use crate::status::Board;
use crate::upload::transfer::{self, Memory};
use futures_util::StreamExt;
use rand::Rng;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What every job task shares.
pub(crate) struct Ctx {
    /// The configuration in force. A reload (SIGHUP) swaps it; a job takes
    /// the one in force when it starts and keeps it.
    config: std::sync::RwLock<Arc<Config>>,
    /// Heartbeats and the status line (see [`crate::health`]).
    pub(crate) health: Arc<crate::health::Health>,
    pub(crate) pool: Arc<Pool>,
    /// Cancelled when the shutdown grace period is over: in-flight work stops
    /// where it is and is resumed at the next start.
    pub(crate) cancel: CancellationToken,
    /// Cancelled when shutdown begins: no new attempt starts, and entries
    /// waiting to retry stop waiting (they hold nothing that needs a grace
    /// period); uploads under way get the grace period.
    pub(crate) stopping: CancellationToken,
    /// Where every state change goes: log, metrics, status, live feed.
    pub(crate) events: Events,
    /// Running jobs and their live progress (the status API reads it).
    pub(crate) board: Arc<Board>,
    /// Counters and histograms for `/metrics`, fed by `events`.
    pub(crate) metrics: Arc<crate::status::metrics::Metrics>,
    /// Deliveries of final receipts to the configured webhooks.
    pub(crate) webhooks: Arc<crate::webhook::Webhooks>,
}

/// How long a failed entry may spend deleting its temp file.
const DISCARD_WITHIN: Duration = Duration::from_secs(20);

/// The longest the next backoff can be (before jitter).
fn backoff_ceiling(cfg: &Config, attempt: u32) -> Duration {
    let base = cfg.retry.initial_backoff_ms.max(1) as f64;
    let exp = base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    Duration::from_millis(exp.min(cfg.retry.max_backoff_ms.max(1) as f64) as u64)
}

/// "Too many connections" retries are not counted, but not endless either.
const MAX_BACKPRESSURE_RETRIES: u32 = 200;

/// Desyncs are not counted either, up to this many: the first turns
/// pipelining off for the server, so another is a server out of step
/// without pipelining, which these few retries do not hide. Nor are faults
/// inherited from an earlier entry's owed replies (they are that entry's).
/// Past the bound they count as transient faults.
const MAX_DESYNC_RETRIES: u32 = 3;

impl Ctx {
    pub(crate) fn new(
        config: Config,
        pool: Arc<Pool>,
        health: Arc<crate::health::Health>,
        events: Events,
    ) -> Ctx {
        let board = Arc::new(Board::new(config.checked.clone()));
        events.add_sink(board.clone());
        let metrics = Arc::new(crate::status::metrics::Metrics::new());
        events.add_sink(metrics.clone());
        // The status line's "last error" comes from the same events.
        events.add_sink(health.clone());
        let webhooks = crate::webhook::Webhooks::new(&config, events.clone());
        events.add_sink(webhooks.clone());
        Ctx {
            config: std::sync::RwLock::new(Arc::new(config)),
            health,
            pool,
            cancel: CancellationToken::new(),
            stopping: CancellationToken::new(),
            events,
            board,
            metrics,
            webhooks,
        }
    }

    /// The configuration in force now.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Puts a new configuration in force for work that starts from now on.
    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write().unwrap() = Arc::new(config);
    }
}

fn backoff(cfg: &Config, attempt: u32) -> Duration {
    let base = cfg.retry.initial_backoff_ms.max(1) as f64;
    let exp = base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(cfg.retry.max_backoff_ms.max(1) as f64);
    // Jitter keeps many entries that failed together from retrying together.
    let jittered = capped * rand::rng().random_range(0.5..=1.0);
    Duration::from_millis(jittered as u64)
}

/// Reads the job through the handle that holds its lock: on Windows a lock
/// keeps every other handle, ours included, from reading the file.
fn read_job(mut file: &std::fs::File, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek};
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the job file: {e}"))?;
    if meta.len() > cap {
        return Err(format!(
            "the job file is {} bytes, over the limit of {cap} bytes (max_job_bytes)",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.take(cap + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the job file: {e}"))?;
    Ok(bytes)
}

/// Runs the job whose file is already in `checked/`. Returns its state;
/// `Running` means interrupted. `lock` is the job's lock when the caller
/// holds it already (intake takes it before the claim); else it is taken
/// here, and a job locked by another instance is left alone. A job that
/// ends has its inline secrets redacted from the claimed file.
pub(crate) async fn run_job(
    ctx: &Ctx,
    job_file: &Path,
    lock: Option<std::fs::File>,
    slot: Option<Arc<JobSlot>>,
) -> JobState {
    let state = run_claimed(ctx, job_file, lock, slot).await;
    // A job cancelled because its file was removed has nothing to redact.
    if state.is_final() && job_file.exists() {
        let file = job_file.to_path_buf();
        let redacted =
            tokio::task::spawn_blocking(move || crate::run::housekeeping::redact_claimed(&file))
                .await;
        if let Ok(Err(e)) = redacted {
            let job = JobPaths::for_claimed(job_file).name;
            warn!(job = %job, error = %format!("{e:#}"), "cannot redact the ended job's secrets");
        }
    }
    state
}

async fn run_claimed(
    ctx: &Ctx,
    job_file: &Path,
    lock: Option<std::fs::File>,
    slot: Option<Arc<JobSlot>>,
) -> JobState {
    let paths = JobPaths::for_claimed(job_file);
    let job_name = paths.name.clone();

    // Instances sharing `checked/` all see an interrupted job; the lock
    // lets exactly one of them run it. Held until this returns.
    let locked = match lock {
        Some(l) => Ok(Some(l)),
        None => crate::intake::lock(job_file),
    };
    let lock = match locked {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            info!(job = %job_name, "job is being run by another instance; leaving it");
            return JobState::Running;
        }
        Err(e) => {
            warn!(job = %job_name, error = %e, "cannot open the claimed job file");
            return JobState::Running;
        }
    };

    // A receipt left by an earlier run tells what is already done.
    let mut recovered = None;
    if paths.receipt.exists() {
        match Receipt::load(&paths.receipt) {
            Ok(r) if r.state.is_final() => return r.state,
            Ok(mut r) => {
                ReportHandle::replay(&mut r, &paths.journal);
                recovered = Some(r);
            }
            Err(e) => {
                warn!(job = %job_name, error = %format!("{e:#}"), "unreadable receipt; starting the job afresh")
            }
        }
    }

    let config = ctx.config();
    let parsed = read_job(&lock, config.max_job_bytes)
        .map_err(|e| vec![e])
        .and_then(|bytes| job::parse(&bytes, &config));
    let mut job = match parsed {
        Ok(job) => job,
        Err(problems) => return record_invalid(ctx, paths, job_file, problems).await,
    };
    // Names are expanded against the claim time, once: a resumed run
    // takes the names its journal kept.
    let claimed_at = recovered
        .as_ref()
        .map(|r| r.claimed_at.clone())
        .unwrap_or_else(crate::report::now);
    let journaled: Option<Vec<String>> = recovered
        .as_ref()
        .filter(|r| !r.entries.is_empty())
        .map(|r| r.entries.iter().map(|e| e.remote_path.clone()).collect());
    let claimed = chrono::DateTime::parse_from_rfc3339(&claimed_at)
        .map(|t| t.with_timezone(&chrono::Local))
        .unwrap_or_else(|_| chrono::Local::now());
    let planned = job::plan::plan(
        &mut job,
        claimed,
        &job_name,
        &paths.generated(),
        journaled.as_deref(),
    );
    if let Err(problems) = planned {
        return record_invalid(ctx, paths, job_file, problems).await;
    }

    let (mut receipt, resumed) = receipt_for(&job, job_file, &job_name, recovered);
    receipt.claimed_at = claimed_at;
    // The run's identity, kept across restarts by the receipt: temp file
    // names derive from it, so a job dropped again under the same name (its
    // old receipt deleted) never meets the old run's temp files.
    let run = format!("{job_name}@{}", receipt.claimed_at);
    let report = match ReportHandle::open(paths.clone(), receipt, Some(ctx.health.clone())) {
        Ok(r) => r,
        Err(e) => {
            warn!(job = %job_name, error = %format!("{e:#}"), "cannot open the job's journal");
            return JobState::Running;
        }
    };
    report.flush().await;
    let writer = tokio::spawn(report.clone().write_loop(Duration::from_millis(200)));
    // Entries an earlier run finished show as such on the board.
    for e in &job.entries {
        let r = report.entry(e.index);
        let stage = match r.state {
            EntryState::Done => Stage::Done,
            EntryState::Skipped => Stage::Skipped,
            EntryState::Failed => Stage::Failed,
            EntryState::Pending => Stage::Queued,
            EntryState::Cancelled => Stage::Cancelled,
        };
        if let Some(bytes) = r.bytes {
            e.progress.start(bytes, bytes, 1);
        }
        e.progress.set_stage(stage);
    }
    ctx.board.track(
        &job_name,
        &report.with(|r| r.claimed_at.clone()),
        &job.entries,
    );
    ctx.events.emit(Event::JobStarted {
        job: job_name.clone(),
        entries: job.entries.len(),
        resumed,
    });

    // Sources whose disposal a crash interrupted: settled before anything
    // else, and never uploaded again.
    for e in &job.entries {
        let r = report.entry(e.index);
        if r.state == EntryState::Done && crate::upload::dispose::unfinished(&r.disposal) {
            settle_disposal(ctx, &report, &job_name, e, r).await;
        }
    }
    // Operators' requests (cancel, retry now), looked at once before any
    // entry starts and then while the job runs.
    let control = Arc::new(JobControl::default());
    let waiting = || {
        job.entries
            .iter()
            .filter(|e| e.progress.stage() == Stage::WaitingRetry)
            .count()
    };
    crate::run::control::check(&paths, &control, &ctx.events, &waiting);
    let watching = CancellationToken::new();
    let watcher = crate::run::control::watch(
        paths.clone(),
        control.clone(),
        watching.clone(),
        ctx.events.clone(),
        waiting,
    );
    let job_run = JobRun {
        name: &job_name,
        run: &run,
        report: &report,
        control: &control,
    };
    let entries = async {
        // The job's files, then their sidecars, then the done markers.
        for phase in 0..extras::PHASES {
            if ctx.stopping.is_cancelled() {
                break;
            }
            let pending = phase_entries(ctx, &job, &job_run, phase).await;
            run_phase(ctx, &config, &job_run, &slot, pending).await;
        }
        watching.cancel();
    };
    tokio::join!(entries, watcher);
    report.close();
    let _ = writer.await;

    // Entries still pending here were stopped by a shutdown.
    let interrupted = ctx.cancel.is_cancelled()
        || report.with(|r| r.entries.iter().any(|e| e.state == EntryState::Pending));
    if interrupted {
        report.flush().await;
        ctx.events.emit(Event::JobInterrupted {
            job: job_name.clone(),
        });
        ctx.board.forget(&job_name);
        return JobState::Running;
    }
    let state = report.finish().await;
    crate::run::control::clear(&paths);
    if let Err(e) = std::fs::remove_dir_all(paths.generated()) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(job = %job_name, error = %e, "cannot remove the job's made files");
        }
    }
    let (done, failed) = report.with(|r| {
        let failed = r
            .entries
            .iter()
            .filter(|e| e.state == EntryState::Failed)
            .count();
        (r.entries.len() - failed, failed)
    });
    ctx.events.emit(Event::JobFinished {
        job: job_name.clone(),
        state,
        done,
        failed,
    });
    state
}

/// The entries of `phase` still to send. Made ones (sidecars, markers)
/// get their bytes now; one whose files did not all arrive fails, saying
/// which. A cancelled job's are left to `run_entry`, which cancels them.
async fn phase_entries<'j>(
    ctx: &Ctx,
    job: &'j job::Job,
    run: &JobRun<'_>,
    phase: usize,
) -> Vec<&'j Entry> {
    let fail = |e: &Entry, why: String| {
        let mut rep = run.report.entry(e.index);
        rep.state = EntryState::Failed;
        rep.error = Some(why);
        Transitions::new(run.report, &ctx.events, run.name, e).failed(&rep, 0);
    };
    let mut pending = Vec::new();
    let mut files = Vec::new();
    for e in job.entries.iter().filter(|e| extras::phase(e) == phase) {
        if run.report.entry(e.index).state != EntryState::Pending {
            continue;
        }
        if phase > 0 && !run.control.is_cancelled() {
            match extras::content(&job.entries, e, run.report, run.name) {
                Ok(bytes) => files.push((e.index, e.local_path.clone(), bytes)),
                Err(why) => {
                    fail(e, why);
                    continue;
                }
            }
        }
        pending.push(e);
    }
    let unwritten = extras::write_all(files).await;
    if unwritten.is_empty() {
        return pending;
    }
    pending.retain(|e| {
        match unwritten
            .iter()
            .find(|(i, _)| *i == e.index || *i == usize::MAX)
        {
            Some((_, why)) => {
                fail(e, why.clone());
                false
            }
            None => true,
        }
    });
    pending
}

/// Runs entries concurrently until each is done, failed or cancelled (or
/// the daemon stops).
async fn run_phase(
    ctx: &Ctx,
    config: &Arc<Config>,
    job: &JobRun<'_>,
    slot: &Option<Arc<JobSlot>>,
    pending: Vec<&Entry>,
) {
    if pending.is_empty() {
        return;
    }
    if let Some(s) = slot {
        s.set_active(pending.len());
    }
    // Three times as many entries as connections: besides an entry per
    // session, an entry whose rename is on its way has put its session back
    // and waits for the replies, and the next entry should already wait
    // for that session (its upload then goes out behind the rename).
    let width = config.max_connections.max(1) * 3;
    futures_util::stream::iter(pending)
        .for_each_concurrent(width, |entry| {
            let presence = Presence::new(slot.clone());
            run_entry(ctx, config, job, entry, presence)
        })
        .await;
}

/// Ends a job whose file is not a valid job: its receipt says why, then
/// the event (a webhook delivers the receipt).
async fn record_invalid(
    ctx: &Ctx,
    paths: JobPaths,
    job_file: &Path,
    problems: Vec<String>,
) -> JobState {
    let job_name = paths.name.clone();
    let mut receipt = Receipt::new(&job_name, job_file);
    receipt.state = JobState::Invalid;
    receipt.finished_at = Some(crate::report::now());
    receipt.problems = problems.clone();
    let report = match ReportHandle::open(paths, receipt, Some(ctx.health.clone())) {
        Ok(r) => r,
        Err(e) => {
            warn!(job = %job_name, error = %format!("{e:#}"), "cannot record invalid job");
            return JobState::Invalid;
        }
    };
    let state = report.finish().await;
    ctx.events.emit(Event::JobInvalid {
        job: job_name,
        problems,
    });
    state
}

/// The job's receipt: a fresh one, or what an earlier run left (`recovered`,
/// with its journal replayed); `true` if it resumes that run's entries.
fn receipt_for(
    job: &job::Job,
    job_file: &Path,
    job_name: &str,
    recovered: Option<Receipt>,
) -> (Receipt, bool) {
    let mut receipt = Receipt::new(job_name, job_file);
    receipt.entries = job.entries.iter().map(EntryReport::pending).collect();
    let Some(old) = recovered else {
        return (receipt, false);
    };
    if old.entries.len() == receipt.entries.len() {
        receipt.claimed_at = old.claimed_at;
        receipt.settle_published = old.settle_published;
        receipt.entries = old.entries;
        return (receipt, true);
    }
    if old.entries.is_empty() {
        // Written by an intake before the job ran (NATS): its identity
        // and whether another worker may have published entries already.
        receipt.claimed_at = old.claimed_at;
        receipt.settle_published = old.settle_published;
        if receipt.settle_published {
            // Each entry first looks for its file on the server (by
            // size), as after a crash between rename and receipt.
            for e in &mut receipt.entries {
                e.publishing = true;
            }
        }
    }
    (receipt, false)
}

/// Disposes of a published entry's source (or finishes a disposal a crash
/// interrupted), journaling each step; see [`crate::upload::dispose`].
async fn settle_disposal(
    ctx: &Ctx,
    report: &Arc<ReportHandle>,
    job_name: &str,
    entry: &Entry,
    mut rep: EntryReport,
) {
    let Some(now) = rep.disposal.clone() else {
        return;
    };
    let (entry_c, report_c, rep_c) = (entry.clone(), report.clone(), rep.clone());
    let done = tokio::task::spawn_blocking(move || {
        crate::upload::dispose::dispose(&entry_c, rep_c.source, &now, |step| {
            let mut r = rep_c.clone();
            r.disposal = Some(step.clone());
            report_c.update(r);
        })
    })
    .await;
    let Ok(result) = done else {
        return;
    };
    rep.disposal = Some(result.clone());
    Transitions::new(report, &ctx.events, job_name, entry).disposed(&rep, &result);
}

/// An entry's faults so far, and what the next one means: another attempt
/// after a wait, or giving up.
#[derive(Debug, Default)]
struct Tries {
    /// Faults that use up attempts (transient ones).
    counted: u32,
    /// "Too many connections": back-pressure, bounded on its own.
    backpressure: u32,
    /// Desyncs and inherited faults, retried at once up to their bound.
    uncounted: u32,
}

impl Tries {
    /// After a fault of `kind`, `elapsed` into the entry: `Some(wait)`
    /// before the next attempt, or `None` to give up.
    fn after(&mut self, kind: FaultKind, config: &Config, elapsed: Duration) -> Option<Duration> {
        // Past its bound, a desync or an inherited fault counts as any
        // transient fault does (never an entry failed at once for faults
        // that were not its own).
        let uncounted = matches!(kind, FaultKind::Desync | FaultKind::Inherited) && {
            self.uncounted += 1;
            self.uncounted <= MAX_DESYNC_RETRIES
        };
        let give_up = match kind {
            FaultKind::Permanent => true,
            FaultKind::TooManyConnections => {
                self.backpressure += 1;
                self.backpressure > MAX_BACKPRESSURE_RETRIES
            }
            FaultKind::Desync | FaultKind::Inherited if uncounted => false,
            FaultKind::Transient | FaultKind::Desync | FaultKind::Inherited => {
                self.counted += 1;
                let max = config.retry.max_attempts;
                (max > 0 && self.counted >= max)
                    || elapsed + backoff_ceiling(config, self.counted)
                        > Duration::from_secs(config.retry.give_up_after_secs)
            }
        };
        if give_up {
            return None;
        }
        // A desync is retried at once: a clean session, no pipelining.
        Some(match uncounted {
            true => Duration::ZERO,
            false => backoff(config, self.counted.max(self.backpressure.min(6))),
        })
    }
}

/// What an entry knows of its job.
#[derive(Clone, Copy)]
struct JobRun<'a> {
    name: &'a str,
    /// The run's identity, which temp file names derive from.
    run: &'a str,
    report: &'a Arc<ReportHandle>,
    control: &'a JobControl,
}

async fn run_entry(
    ctx: &Ctx,
    config: &Config,
    job: &JobRun<'_>,
    entry: &Entry,
    mut presence: Presence,
) {
    let JobRun {
        name: job_name,
        run,
        report,
        control,
    } = *job;
    let mut rep = report.entry(entry.index);
    let mut memory = Memory {
        source: rep.source,
        // A job another worker began (NATS redelivery) may have its temp file.
        may_have_temp: rep.attempts > 0 || rep.publishing,
        publishing: rep.publishing,
        no_resume: false,
        segmented: rep.segmented,
        generation: rep.temp_generation,
        abandoned_temps: rep.abandoned_temps.clone(),
    };
    let policy = crate::upload::segment::Policy::from_config(config);
    let started = Instant::now();
    let mut tries = Tries::default();
    let server = entry.server.key().host_port();
    let progress = entry.progress.clone();
    let transitions = Transitions::new(report, &ctx.events, job_name, entry);
    loop {
        if ctx.stopping.is_cancelled() {
            return;
        }
        if control.is_cancelled() {
            cancel_entry(ctx, job, entry, rep, &mut memory, &transitions).await;
            return;
        }
        rep.attempts += 1;
        rep.next_attempt_at = None;
        let attempt = rep.attempts;
        progress.set_attempt(attempt);
        progress.set_stage(Stage::Connecting);
        *entry.rates.write().unwrap() = ctx.pool.limits.for_server(&server);
        let work = async {
            let mut lease = ctx.pool.acquire(&entry.server).await?;
            let rep_for_journal = rep.clone();
            let mut out = transfer::attempt(
                &mut lease,
                &ctx.pool,
                &policy,
                run,
                entry,
                &mut memory,
                |m| {
                    // Also records this attempt: a restart resumes only if attempts > 0.
                    let mut r = rep_for_journal.clone();
                    r.source = m.source;
                    r.publishing = m.publishing;
                    r.segmented = m.segmented;
                    r.temp_generation = m.generation;
                    r.abandoned_temps = m.abandoned_temps.clone();
                    report.update(r);
                },
            )
            .await?;
            // The next entry's upload goes out behind this one's rename.
            drop(lease);
            if let Some(renaming) = out.renaming.take() {
                renaming.outcome(&ctx.pool, &entry.server).await?;
            }
            Ok::<_, crate::ftp::fault::Fault>(out)
        };
        let result = tokio::select! {
            r = work => r,
            _ = ctx.cancel.cancelled() => {
                rep.source = memory.source;
                // Cancelled between "about to rename" and its reply, the final
                // file may already be ours: keep the flag, or the next start
                // would upload and publish the file a second time.
                rep.publishing = memory.publishing;
                rep.segmented = memory.segmented;
                rep.temp_generation = memory.generation;
                rep.abandoned_temps = memory.abandoned_temps.clone();
                report.update(rep);
                return;
            }
            _ = control.cancelled() => {
                rep.source = memory.source;
                rep.segmented = memory.segmented;
                rep.temp_generation = memory.generation;
                cancel_entry(ctx, job, entry, rep, &mut memory, &transitions).await;
                return;
            }
        };
        rep.source = memory.source;
        rep.publishing = memory.publishing;
        rep.segmented = memory.segmented;
        rep.temp_generation = memory.generation;
        rep.abandoned_temps = memory.abandoned_temps.clone();
        rep.elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(out) => {
                rep.state = match out.skipped {
                    Some(_) => EntryState::Skipped,
                    None => EntryState::Done,
                };
                rep.skipped = out.skipped.map(str::to_string);
                rep.warnings = entry.notes.iter().cloned().chain(out.warnings).collect();
                rep.bytes = Some(out.bytes);
                rep.sha256 = out.sha256;
                rep.verification = out.verification;
                rep.error = None;
                rep.publishing = false;
                rep.segmented = false;
                rep.segments = (out.segments > 1).then_some(out.segments);
                // Published and verified: journaled before the source is touched.
                if out.skipped.is_none() {
                    rep.disposal = crate::upload::dispose::pending(entry);
                }
                transitions.done(&rep, attempt, out.resumed_from, out.segments);
                if !memory.abandoned_temps.is_empty() {
                    // Journaled until they are gone; the entry is done meanwhile.
                    let discard = transfer::discard_abandoned(&ctx.pool, entry, &mut memory);
                    let within = ctx.pool.abandon_hold() + DISCARD_WITHIN * 2;
                    let gone = tokio::select! {
                        r = tokio::time::timeout(within, discard) => r.is_ok_and(|r| r.is_ok()),
                        _ = ctx.cancel.cancelled() => false,
                    };
                    if gone {
                        rep.abandoned_temps = memory.abandoned_temps.clone();
                        report.update(rep.clone());
                    }
                }
                if crate::upload::dispose::unfinished(&rep.disposal) {
                    settle_disposal(ctx, report, job_name, entry, rep).await;
                }
                return;
            }
            Err(fault) => {
                let next = tries.after(fault.kind, config, started.elapsed());
                rep.error = Some(fault.message.clone());
                let Some(wait) = next else {
                    rep.state = EntryState::Failed;
                    if fault.kind != FaultKind::Permanent {
                        rep.error = Some(format!(
                            "gave up after {attempt} attempts in {}: {}",
                            humantime::format_duration(Duration::from_secs(
                                started.elapsed().as_secs()
                            )),
                            fault.message
                        ));
                    }
                    if memory.may_have_temp {
                        // An entry that ends failed leaves no temp file behind.
                        discard_temp(ctx, job, entry, &mut memory).await;
                        rep.abandoned_temps = memory.abandoned_temps.clone();
                    }
                    transitions.failed(&rep, attempt);
                    return;
                };
                rep.next_attempt_at = Some(
                    humantime::format_rfc3339_millis(std::time::SystemTime::now() + wait)
                        .to_string(),
                );
                let reason = match fault.kind {
                    FaultKind::TooManyConnections => RetryReason::TooManyConnections,
                    FaultKind::Desync => RetryReason::Desync,
                    FaultKind::Inherited => RetryReason::Inherited,
                    _ => RetryReason::Transient,
                };
                transitions.retrying(&rep, attempt, reason, &fault.message, wait);
                // Waiting holds no connection, and no job slot if no other
                // entry of the job is active.
                presence.wait();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Now, at an operator's request (`ftpdrop retry`).
                    _ = control.retried() => {}
                    // Ended at the top of the loop.
                    _ = control.cancelled() => {}
                    _ = ctx.stopping.cancelled() => return,
                }
                tokio::select! {
                    _ = presence.rejoin() => {}
                    _ = ctx.stopping.cancelled() => return,
                }
            }
        }
    }
}

/// Deletes the entry's temp file, within [`DISCARD_WITHIN`]; what is left
/// stays in `memory.abandoned_temps` for the journal.
async fn discard_temp(ctx: &Ctx, job: &JobRun<'_>, entry: &Entry, memory: &mut Memory) {
    let discard = transfer::discard_temp(&ctx.pool, job.run, entry, memory);
    match tokio::time::timeout(DISCARD_WITHIN, discard).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(job = %job.name, entry = entry.index, error = %e, "cannot delete the temp file")
        }
        Err(_) => {
            debug!(job = %job.name, entry = entry.index, "no session to delete the temp file")
        }
    }
}

/// Ends an entry that its job's cancel caught before it was done: its temp
/// file is removed, nothing is disposed, and it is `cancelled`.
async fn cancel_entry(
    ctx: &Ctx,
    job: &JobRun<'_>,
    entry: &Entry,
    mut rep: EntryReport,
    memory: &mut Memory,
    transitions: &Transitions<'_>,
) {
    rep.state = EntryState::Cancelled;
    rep.next_attempt_at = None;
    rep.error = Some(if memory.publishing {
        format!(
            "{}, while its rename was on its way: the file may be on the server",
            job.control.reason()
        )
    } else {
        job.control.reason().to_string()
    });
    if memory.may_have_temp {
        discard_temp(ctx, job, entry, memory).await;
    }
    rep.abandoned_temps = memory.abandoned_temps.clone();
    rep.publishing = false;
    transitions.cancelled(&rep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_attempts: u32) -> Config {
        let mut c = Config::default();
        c.retry.max_attempts = max_attempts;
        c.retry.initial_backoff_ms = 10;
        c.retry.max_backoff_ms = 100;
        c.retry.give_up_after_secs = 3600;
        c
    }

    #[test]
    fn faults_use_up_attempts_by_kind() {
        let c = config(3);
        let mut t = Tries::default();
        let second = Duration::from_secs(1);
        // A permanent fault ends the entry at once.
        assert_eq!(
            Tries::default().after(FaultKind::Permanent, &c, second),
            None
        );
        // Transient ones wait, and the third ends it (3 attempts).
        assert!(t
            .after(FaultKind::Transient, &c, second)
            .is_some_and(|w| !w.is_zero()));
        assert!(t.after(FaultKind::Transient, &c, second).is_some());
        assert_eq!(t.after(FaultKind::Transient, &c, second), None);
        // A desync is retried at once, and uses no attempt up to its bound.
        let mut t = Tries::default();
        for _ in 0..MAX_DESYNC_RETRIES {
            assert_eq!(t.after(FaultKind::Desync, &c, second), Some(Duration::ZERO));
        }
        assert_eq!(t.counted, 0);
        // Past it, it counts as a transient fault.
        assert!(t
            .after(FaultKind::Desync, &c, second)
            .is_some_and(|w| !w.is_zero()));
        assert_eq!(t.counted, 1);
        // Back-pressure uses no attempt.
        let mut t = Tries::default();
        for _ in 0..10 {
            assert!(t.after(FaultKind::TooManyConnections, &c, second).is_some());
        }
        assert_eq!(t.counted, 0);
        // Past give_up_after_secs, a transient fault ends the entry.
        let mut t = Tries::default();
        assert_eq!(
            t.after(FaultKind::Transient, &config(0), Duration::from_secs(3600)),
            None
        );
    }
}
