//! The daemon's lifecycle: resume interrupted jobs, run intake, and shut down
//! gracefully.
//!
//! The caller passes in the shutdown future (mini-redis style): production
//! passes SIGTERM/SIGINT or the Windows service's Stop, tests pass a oneshot,
//! and the same code runs in both. On shutdown intake stops first, in-flight
//! jobs get the grace period, then they are cancelled where they stand; their
//! receipts stay `running` and the next start resumes them.

use crate::config::Config;
use crate::ftp::pool::Pool;
use crate::ftp::Timeouts;
use crate::health::{Health, Loop};
use crate::intake::{self, Intake};
use crate::report::{JobPaths, JobState, ReceiptHead};
use crate::run::runner::{run_job, Ctx};
use crate::run::slot::JobSlot;
use crate::service::{Supervisor, Unsupervised};
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often ended jobs are looked over (see [`crate::run::housekeeping`]).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// Every how many takeover scans one reads the whole of `checked/` (see [`orphans`]).
const FULL_ORPHAN_SCAN_EVERY: u64 = 12;

/// Listens for the status API on `addr`. A loopback address that another
/// process holds (a second instance with the same configuration, the
/// README's way to run several) falls back to a free port of the same
/// address, said in the log and advertised for `ftpdrop status`: before,
/// instances 2 and 3 exited at start, and under systemd restarted in a loop.
async fn bind_status(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.ip().is_loopback() => {
            let l = tokio::net::TcpListener::bind(std::net::SocketAddr::new(addr.ip(), 0))
                .await
                .with_context(|| {
                    format!("status.listen {addr}: taken, and no free port instead")
                })?;
            warn!(
                configured = %addr,
                addr = %l.local_addr()?,
                "status.listen is taken (another instance on this host?); this instance's API \
                 listens on a free port instead, advertised in ftpdrop-instances/ for `ftpdrop status`"
            );
            Ok(l)
        }
        Err(e) => Err(e).with_context(|| format!("status.listen {addr}: cannot listen")),
    }
}

fn make_ctx(config: Config, health: Arc<Health>) -> Arc<Ctx> {
    let timeouts = Timeouts {
        connect: config.connect_timeout(),
        command: config.command_timeout(),
        data: config.data_timeout(),
    };
    let events = crate::events::Events::new();
    let pool = Pool::new(
        config.max_connections,
        config.max_connections_per_server,
        timeouts,
        Duration::from_secs(config.idle_session_secs),
        Arc::new(learned_facts(&config)),
    )
    .with_events(events.clone());
    pool.allow_pipelining(config.pipelining);
    pool.set_abandon_hold(Duration::from_secs(config.abandoned_session_secs));
    // Instances sharing checked/ share each server's limit (with NATS,
    // through its KV store instead, once connected: see `run_with`).
    pool.share_seats(crate::ftp::seats::Seats::new(Some(
        config.checked.join(crate::ftp::seats::DIR),
    )));
    if let Ok((global, servers)) = config.rate_limits() {
        pool.limits.configure(global, servers);
    }
    // The timetables turn on the minute; checked every few seconds while the
    // pool lives.
    let limits = Arc::downgrade(&pool.limits);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Some(l) = limits.upgrade() else { return };
            l.tick(crate::rate::local_minute());
        }
    });
    Arc::new(Ctx::new(config, pool, health, events))
}

/// The learned-facts file beside `checked/` (see [`crate::ftp::learned`]).
fn learned_facts(config: &Config) -> crate::ftp::learned::Learned {
    use crate::ftp::learned::Learned;
    if config.learned_ttl_secs == 0 {
        return Learned::none();
    }
    let dir = config.checked.parent().unwrap_or(&config.checked);
    Learned::load(
        dir.join("ftpdrop-learned.json"),
        Duration::from_secs(config.learned_ttl_secs),
    )
}

/// What a service manager gives the daemon beyond its config and shutdown.
pub struct Options {
    /// Told when the daemon is ready, reloads, stops, and what it is doing.
    pub supervisor: Arc<dyn Supervisor>,
    /// New configurations to put in force (SIGHUP), already loaded and
    /// validated by the caller.
    pub reload: Option<mpsc::UnboundedReceiver<Config>>,
    /// Heartbeats of the loops; the caller's watchdog reads them.
    pub health: Arc<Health>,
    /// Set to the status API's address once it listens (tests listen on port 0).
    pub status_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// Completes when the operator asks to stop at once (a second Ctrl-C):
    /// uploads still in the grace period are cut off and resume at the
    /// next start.
    pub hurry: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            supervisor: Arc::new(Unsupervised),
            reload: None,
            health: Arc::new(Health::default()),
            status_addr: Arc::default(),
            hurry: None,
        }
    }
}

fn spawn_job(
    jobs: &mut JoinSet<PathBuf>,
    ctx: &Arc<Ctx>,
    permits: &Arc<Semaphore>,
    work: intake::Work,
) {
    let ctx = ctx.clone();
    ctx.events.emit(crate::events::Event::JobClaimed {
        job: JobPaths::for_claimed(&work.path).name,
    });
    // The permit is the job's slot; it goes back while all its entries wait.
    let slot = JobSlot::new(permits.clone(), work.permit, 1);
    jobs.spawn(async move {
        let state = run_job(&ctx, &work.path, work.lock, Some(slot)).await;
        if let Some(done) = work.done {
            let _ = done.send(state);
        }
        work.path
    });
}

/// Unfinished jobs in `checked/` that no instance runs (their lock is free)
/// and that this instance does not run either, each locked and with a job
/// permit, as many as there are permits free now; the rest wait for the
/// next scan.
///
/// Between full scans of the folder (`full`), the candidates are the jobs
/// the history index holds as running: every job is recorded there when
/// its first receipt is written. A scan of a million names every few
/// seconds would cost a core; the full scan finds the rest (a job whose
/// instance died between its claim and its first receipt).
fn orphans(
    checked: &Path,
    running: &HashSet<PathBuf>,
    permits: &Arc<Semaphore>,
    full: bool,
) -> Vec<(PathBuf, std::fs::File, tokio::sync::OwnedSemaphorePermit)> {
    let started = || {
        let h = crate::history::History::existing(checked).filter(|h| h.ready())?;
        let jobs = h.jobs_in(&["running"]).ok()?;
        Some(
            jobs.into_keys()
                .map(|job| checked.join(format!("{job}.json")))
                .filter(|p| p.exists())
                .collect::<Vec<_>>(),
        )
    };
    let candidates = match full {
        true => unfinished_jobs(checked),
        false => started().unwrap_or_else(|| unfinished_jobs(checked)),
    };
    let mut out = Vec::new();
    for path in candidates {
        if running.contains(&path) {
            continue;
        }
        let Ok(Some(lock)) = intake::lock(&path) else {
            continue;
        };
        // Settled while we looked (its instance finished it just now)?
        let settled = ReceiptHead::load(&JobPaths::for_claimed(&path).receipt)
            .is_ok_and(|r| r.state.is_final());
        if settled {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            break;
        };
        out.push((path, lock, permit));
    }
    out
}

/// Claimed jobs whose receipt is missing or not final: interrupted by a crash or a shutdown.
///
/// Read from the folder's names, not from every receipt: with a million
/// ended jobs in `checked/`, reading each receipt's head held the start
/// for minutes. A job runs with its journal beside it (opened before its
/// first receipt, removed after its final one), so a job with a receipt
/// and no journal has ended, unless the history index holds it as
/// running (a receipt written by a NATS claim that died before its job
/// started). The few others have their receipt read to make sure.
pub(crate) fn unfinished_jobs(checked: &Path) -> Vec<PathBuf> {
    let mut jobs = Vec::new();
    let (mut receipts, mut journals) = (HashSet::new(), HashSet::new());
    for e in std::fs::read_dir(checked).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".report.json") {
            receipts.insert(stem.to_string());
        } else if let Some(stem) = name.strip_suffix(".journal") {
            journals.insert(stem.to_string());
        } else if intake::eligible(name) {
            jobs.push(e.path());
        }
    }
    let running = crate::history::History::existing(checked)
        .and_then(|h| h.jobs_in(&["running"]).ok())
        .unwrap_or_default();
    let mut out: Vec<(std::time::SystemTime, PathBuf)> = jobs
        .into_iter()
        .filter_map(|p| {
            let paths = JobPaths::for_claimed(&p);
            let ended = receipts.contains(&paths.name)
                && !journals.contains(&paths.name)
                && !running.contains_key(&paths.name);
            if ended {
                return None;
            }
            let unfinished = match ReceiptHead::load(&paths.receipt) {
                Ok(r) => !r.state.is_final(),
                Err(_) => true,
            };
            let at = std::fs::metadata(&p).and_then(|m| m.modified());
            unfinished.then(|| (at.unwrap_or(std::time::UNIX_EPOCH), p))
        })
        .collect();
    // Oldest first, as the intake takes them.
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_with(config, shutdown, Options::default()).await
}

/// Serves the status API on `listener` until `stop`; the address it got
/// goes to `status_addr` (tests and `ftpdrop status` read it).
fn spawn_api(
    ctx: &Arc<Ctx>,
    health: &Arc<Health>,
    listener: tokio::net::TcpListener,
    auth: Option<crate::status::auth::Verifier>,
    status_addr: &std::sync::OnceLock<std::net::SocketAddr>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    if let Ok(a) = listener.local_addr() {
        let _ = status_addr.set(a);
        info!(addr = %a, "status API listening");
    }
    let api = Arc::new(crate::status::http::Api {
        board: ctx.board.clone(),
        metrics: ctx.metrics.clone(),
        events: ctx.events.clone(),
        health: health.clone(),
        pool: ctx.pool.clone(),
        config: {
            let ctx = ctx.clone();
            Arc::new(move || ctx.config())
        },
        auth,
    });
    tokio::spawn(crate::status::http::serve(listener, api, stop))
}

/// Brings the history index level with the receipts beside the intake
/// (lists read the receipts until it is), then runs the first housekeeping
/// through it. Stops when `stopping` is cancelled: the runtime waits for
/// this thread at shutdown.
fn spawn_indexing(cfg: &Config, stopping: CancellationToken) -> tokio::task::JoinHandle<()> {
    let (checked, days) = (cfg.checked.clone(), cfg.retention_days);
    tokio::task::spawn_blocking(move || {
        let began = std::time::Instant::now();
        let stop = || stopping.is_cancelled();
        match crate::report::catch_up_index_until(&checked, &stop) {
            Ok(n) => info!(
                changed = n,
                secs = began.elapsed().as_secs_f64(),
                "history index level with the receipts"
            ),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "the history index cannot catch up; lists read the receipts")
            }
        }
        crate::run::housekeeping::sweep_until(&checked, days, &stop);
    })
}

/// Hands the jobs an earlier run left unfinished to the scheduler, each
/// under a job permit like a new one, until `stop`.
fn spawn_recovered(
    recovered: Vec<PathBuf>,
    tx: mpsc::Sender<intake::Work>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for job in recovered {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.cancelled() => return,
            };
            let work = intake::Work {
                path: job,
                lock: None,
                permit,
                done: None,
            };
            if tx.send(work).await.is_err() {
                return;
            }
        }
    })
}

/// Pulls jobs from NATS beside the folder's intake. NATS workers on other
/// hosts share no folder: once connected, each server's session limit is
/// shared through NATS KV instead.
fn spawn_nats(
    ctx: &Arc<Ctx>,
    cfg: &Config,
    health: &Arc<Health>,
    n: crate::config::NatsConfig,
    tx: mpsc::Sender<intake::Work>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (connected, client) =
        tokio::sync::oneshot::channel::<(async_nats::Client, tokio::sync::oneshot::Sender<()>)>();
    let pool = ctx.pool.clone();
    tokio::spawn(async move {
        let Ok((client, ready)) = client.await else {
            return;
        };
        // Who holds a seat, for an operator looking into the bucket.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_default();
        let owner = format!("{} pid {}", host.trim(), std::process::id());
        match crate::ftp::seats::Seats::nats(client, &owner).await {
            Ok(seats) => {
                pool.share_seats(seats);
                info!(
                    bucket = crate::ftp::seats::BUCKET,
                    "session limits shared through NATS KV"
                );
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "session limits not shared through NATS: each instance keeps its own")
            }
        }
        let _ = ready.send(());
    });
    let nats = intake::nats::NatsIntake {
        config: n,
        checked: cfg.checked.clone(),
        health: health.clone(),
        connected: Some(connected),
    };
    tokio::spawn(nats.run(tx, permits, stop))
}

/// Runs the daemon until `shutdown` completes, telling `opts.supervisor`
/// what it does and taking new configurations from `opts.reload`.
pub async fn run_with(
    config: Config,
    shutdown: impl Future<Output = ()>,
    opts: Options,
) -> Result<()> {
    let Options {
        supervisor,
        reload,
        health,
        status_addr,
        hurry,
    } = opts;
    config.create_folders()?;
    for w in config.warnings() {
        warn!("{w}");
    }
    // The API's port is taken before anything else happens: a port in use
    // is a clear error at start, not a daemon without its API.
    let listener = match config.status.listen_addr()? {
        Some(addr) => Some(bind_status(addr).await?),
        None => None,
    };
    // Where `ftpdrop status` finds this instance (beside the others), and
    // how `ftpdrop submit` knows that an instance watches.
    let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let _advertised = match crate::status::instances::advertise(&config.checked, addr) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot advertise this instance");
            None
        }
    };
    let auth = match &listener {
        Some(_) => Some(crate::status::http::load_token(&config)?),
        None => None,
    };
    let ctx = make_ctx(config, health.clone());
    let cfg = ctx.config();
    let stop_status = CancellationToken::new();
    let ticker = tokio::spawn(
        ctx.board
            .clone()
            .run_ticker(ctx.events.clone(), stop_status.clone()),
    );
    // Deliveries queued by this run and by earlier ones.
    let webhooks = tokio::spawn(ctx.webhooks.clone().run(stop_status.clone()));
    let api_task = listener.map(|listener| {
        spawn_api(
            &ctx,
            &health,
            listener,
            auth,
            &status_addr,
            stop_status.clone(),
        )
    });
    let mut job_limit = cfg.max_concurrent_jobs;
    let permits = Arc::new(Semaphore::new(job_limit));
    let (tx, mut rx) = mpsc::channel(1);
    let stop_intake = CancellationToken::new();

    // The history index catches up with the receipts beside the intake:
    // lists read the receipts until it has.
    let indexing = spawn_indexing(&cfg, ctx.stopping.clone());
    // Interrupted jobs first, through the same permits as new ones.
    let recovered = unfinished_jobs(&cfg.checked);
    if !recovered.is_empty() {
        info!(jobs = recovered.len(), "resuming unfinished jobs");
    }
    let feeder = spawn_recovered(recovered, tx.clone(), permits.clone(), stop_intake.clone());
    let (watching_tx, watching) = tokio::sync::oneshot::channel();
    let intake = Intake {
        inbox: cfg.inbox.clone(),
        checked: cfg.checked.clone(),
        settle: cfg.settle(),
        sweep: Duration::from_millis(cfg.sweep_interval_ms.max(50)),
        health: health.clone(),
        watching: Some(watching_tx),
        incomplete_grace: Duration::from_millis(cfg.incomplete_grace_ms),
        ignored: Default::default(),
    };
    let nats_task = cfg.nats.clone().map(|n| {
        spawn_nats(
            &ctx,
            &cfg,
            &health,
            n,
            tx.clone(),
            permits.clone(),
            stop_intake.clone(),
        )
    });
    let intake_task = tokio::spawn(intake.run(tx, permits.clone(), stop_intake.clone()));

    health.beat(Loop::Scheduler);
    tokio::pin!(shutdown);
    let mut watching = watching;
    let mut ready = false;
    let mut status = String::new();
    let mut reload = reload;

    let mut jobs = JoinSet::new();
    // Claimed files of the jobs this instance runs, so that the takeover
    // scan does not mistake them for orphans.
    let mut running: HashSet<PathBuf> = HashSet::new();
    // Jobs other instances left running when they died are looked for
    // periodically, not only at startup.
    let takeover_every =
        (cfg.takeover_interval_secs > 0).then(|| Duration::from_secs(cfg.takeover_interval_secs));
    let mut takeover = tokio::time::interval(takeover_every.unwrap_or(Duration::from_secs(3600)));
    let mut takeovers: u64 = 0;
    takeover.tick().await;
    let mut tick = tokio::time::interval(health.beat_every());
    let mut reaper = tokio::time::interval(Duration::from_secs(5));
    // Ended jobs: secrets redacted (if a crash came between the final
    // receipt and the redaction) and, with retention_days, old ones removed.
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
    // The first one runs once the history index has caught up (above).
    housekeeping.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // Ready once unfinished jobs are queued and intake has made its
            // first pass (claimed what was waiting, or waits for a job permit).
            _ = &mut watching, if !ready => {
                ready = true;
                health.set_ready();
                info!("ready");
                supervisor.ready();
            }
            claimed = rx.recv() => {
                let Some(work) = claimed else { break };
                if running.insert(work.path.clone()) {
                    spawn_job(&mut jobs, &ctx, &permits, work);
                } else if let Some(done) = work.done {
                    let _ = done.send(JobState::Running);
                }
            }
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                if let Ok(path) = done {
                    running.remove(&path);
                }
            }
            _ = takeover.tick(), if takeover_every.is_some() => {
                takeovers += 1;
                let full = takeovers.is_multiple_of(FULL_ORPHAN_SCAN_EVERY);
                for (path, lock, permit) in orphans(&cfg.checked, &running, &permits, full) {
                    ctx.events.emit(crate::events::Event::JobTakenOver {
                        job: crate::report::JobPaths::for_claimed(&path).name,
                    });
                    running.insert(path.clone());
                    let work = intake::Work { path, lock: Some(lock), permit, done: None };
                    spawn_job(&mut jobs, &ctx, &permits, work);
                }
            }
            _ = tick.tick() => {
                health.beat(Loop::Scheduler);
                health.jobs_running.store(jobs.len(), Ordering::Relaxed);
                let line = health.status_line();
                if line != status {
                    supervisor.status(&line);
                    status = line;
                }
            }
            Some(new) = async { reload.as_mut()?.recv().await }, if reload.is_some() => {
                apply_reload(&ctx, &permits, &mut job_limit, new);
                supervisor.ready();
            }
            _ = reaper.tick() => ctx.pool.reap_idle(),
            _ = housekeeping.tick() => {
                let (checked, days) = (cfg.checked.clone(), cfg.retention_days);
                let stopping = ctx.stopping.clone();
                tokio::task::spawn_blocking(move || {
                    crate::run::housekeeping::sweep_until(&checked, days, &|| stopping.is_cancelled())
                });
            }
        }
    }

    // The grace period in force now (a reload may have changed it).
    let grace = Duration::from_secs(ctx.config().shutdown_grace_secs);
    announce_shutdown(&*supervisor, jobs.len(), grace, hurry.is_some());
    stop_intake.cancel();
    ctx.stopping.cancel();
    feeder.abort();
    let _ = intake_task.await;
    indexing.abort();
    drop(rx);
    let_jobs_finish(&ctx, &mut jobs, grace, hurry).await;
    if let Some(t) = nats_task {
        // It answers every message whose job ended (or was cut off) above.
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    ctx.pool.close_all().await;
    stop_status.cancel();
    let _ = ticker.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), webhooks).await;
    if let Some(t) = api_task {
        // Live subscribers (SSE, WebSocket) hold connections open: not waited for long.
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    info!("stopped");
    Ok(())
}

/// Says that the daemon is stopping: in the log, and to the supervisor.
fn announce_shutdown(supervisor: &dyn Supervisor, in_flight: usize, grace: Duration, hurry: bool) {
    if hurry && in_flight > 0 {
        info!(
            in_flight,
            grace_secs = grace.as_secs(),
            "shutting down: intake stopped; uploads under way get the grace period to \
             finish (press Ctrl-C again to stop at once: they resume at the next start)"
        );
    } else {
        info!(
            in_flight,
            grace_secs = grace.as_secs(),
            "shutting down: intake stopped"
        );
    }
    supervisor.stopping(grace);
    supervisor.status(&format!(
        "stopping: {in_flight} job(s) get {} s to finish",
        grace.as_secs()
    ));
}

/// Gives the jobs under way `grace` to end (or until `hurry` completes),
/// then cancels what is left: it resumes at the next start.
async fn let_jobs_finish(
    ctx: &Ctx,
    jobs: &mut JoinSet<PathBuf>,
    grace: Duration,
    hurry: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
) {
    let drain = tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} });
    let drained = match hurry {
        Some(hurry) => tokio::select! {
            d = drain => d.is_ok(),
            _ = hurry => false,
        },
        None => drain.await.is_ok(),
    };
    if !drained {
        info!(
            in_flight = jobs.len(),
            "cancelling in-flight uploads (grace period over, or asked to stop at once); \
             they resume at the next start"
        );
        ctx.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        jobs.abort_all();
    }
}

/// Processes every job now in the inbox (and every unfinished one in
/// `checked/`), waits for them, and returns each job's name and state.
pub async fn once(config: Config) -> Result<Vec<(String, JobState)>> {
    once_with(config, |_| {}).await
}

/// [`once`], with `observe` given the event stream before any job starts
/// (the CLI's progress bars subscribe there).
pub async fn once_with(
    config: Config,
    observe: impl FnOnce(&crate::events::Events),
) -> Result<Vec<(String, JobState)>> {
    config.create_folders()?;
    let ctx = make_ctx(config, Arc::new(Health::default()));
    observe(&ctx.events);
    let cfg = ctx.config();
    // Progress lines for long uploads, as under `run`.
    let stop_ticker = CancellationToken::new();
    let ticker = tokio::spawn(
        ctx.board
            .clone()
            .run_ticker(ctx.events.clone(), stop_ticker.clone()),
    );
    // Housekeeping goes through the history index, brought level first
    // (seconds at a million receipts; reading them all would take minutes).
    if let Err(e) = crate::report::catch_up_index(&cfg.checked) {
        warn!(error = %format!("{e:#}"), "the history index cannot catch up");
    }
    crate::run::housekeeping::sweep(&cfg.checked, cfg.retention_days);
    let mut todo: Vec<(PathBuf, Option<std::fs::File>)> = unfinished_jobs(&cfg.checked)
        .into_iter()
        .map(|p| (p, None))
        .collect();
    let mut candidates = intake::scan(&cfg.inbox);
    let mut rounds = 0;
    while !candidates.is_empty() && rounds < 100 {
        let mut unsettled = Vec::new();
        for path in candidates {
            let fresh = std::fs::metadata(&path)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < cfg.settle());
            if fresh {
                unsettled.push(path);
            } else if let Some(claimed) = intake::claim(&path, &cfg.checked)? {
                todo.push((claimed.path, Some(claimed.lock)));
            }
        }
        if unsettled.is_empty() {
            break;
        }
        tokio::time::sleep(cfg.settle() / 2).await;
        candidates = unsettled;
        rounds += 1;
    }
    let permits = Arc::new(Semaphore::new(cfg.max_concurrent_jobs));
    let mut set = JoinSet::new();
    for (path, lock) in todo {
        let ctx = ctx.clone();
        let permit = permits.clone().acquire_owned().await?;
        set.spawn(async move {
            let _permit = permit;
            let name = JobPaths::for_claimed(&path).name;
            (name, run_job(&ctx, &path, lock, None).await)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r?);
    }
    ctx.pool.close_all().await;
    // Webhooks of the jobs just ended get a chance before the process exits;
    // what is still undelivered stays queued for the next run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ctx.webhooks.pending() > 0 && tokio::time::Instant::now() < deadline {
        ctx.webhooks.pass().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_ticker.cancel();
    let _ = ticker.await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(results)
}

/// Puts a reloaded configuration in force: new jobs parse with it (named
/// servers, credentials, allowlists, retries), and the limits change for
/// new work. Running uploads are not touched. The folders stay: moving the
/// inbox or `checked/` needs a restart.
fn apply_reload(ctx: &Ctx, permits: &Arc<Semaphore>, job_limit: &mut usize, new: Config) {
    let old = ctx.config();
    if new.inbox != old.inbox || new.checked != old.checked {
        warn!("inbox and checked folders change only at a restart; keeping the current ones");
    }
    let mut new = new;
    new.inbox = old.inbox.clone();
    new.checked = old.checked.clone();
    for w in new.warnings() {
        warn!("{w}");
    }
    ctx.pool
        .set_limits(new.max_connections, new.max_connections_per_server);
    ctx.pool
        .set_abandon_hold(Duration::from_secs(new.abandoned_session_secs));
    // Validated by the caller; in force for the next bytes of every upload.
    if let Ok((global, servers)) = new.rate_limits() {
        ctx.pool.limits.configure(global, servers);
    }
    ctx.webhooks.set_config(new.notify.clone());
    crate::ftp::pool::resize(permits, *job_limit, new.max_concurrent_jobs);
    *job_limit = new.max_concurrent_jobs;
    ctx.set_config(new);
    ctx.events.emit(crate::events::Event::ConfigReloaded);
}
