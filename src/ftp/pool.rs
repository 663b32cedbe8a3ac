//! Logged-in sessions, reused, and the connection limits.
//!
//! Logging in once per file was the seeds' main performance bug (and costs
//! ~2.8 s of server CPU per login on pure-ftpd with `pure-pw` accounts), so a
//! session goes back to its server's idle list after each entry and the next
//! entry for the same (host, port, login, TLS) takes it, but only if that
//! entry presents the same credentials the session logged in with: a session
//! is one job's authority, and lending it to a job with a wrong password
//! once published that job's files (issue 9). Credentials are compared as a
//! keyed digest, never as the password itself.
//!
//! Two limits apply. `max_connections_per_server` is a semaphore per server,
//! held while a session is *in use*. `max_connections` is a global semaphore
//! whose permit travels *with the session*, idle or busy, because an idle
//! session is still an open connection. When the global limit is reached and
//! another server needs a connection, an idle session is closed to make room.

use crate::ftp::fault::{Fault, FaultKind};
use crate::ftp::learned::{Facts, Learned};
use crate::ftp::tls::TlsConfigs;
use crate::ftp::{DirCache, Session, Timeouts};
use crate::job::{ServerKey, ServerSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle sessions older than this get a NOOP before reuse: servers close idle control connections.
const PROBE_AFTER: Duration = Duration::from_secs(15);
/// A server's lowered limit is raised by one again after this long without a
/// "too many connections": the refusal may have come from other clients' load.
const RAISE_LIMIT_AFTER: Duration = Duration::from_secs(60);

struct Idle {
    session: Session,
    /// The credentials the session logged in with (see [`Creds`]).
    creds: Creds,
    global: OwnedSemaphorePermit,
    since: Instant,
}

/// Everything the pool knows about one server.
struct Slot {
    /// Which server, for what is learned about it (see [`Learned`]).
    key: ServerKey,
    /// Limits sessions in use for this server.
    in_use: Arc<Semaphore>,
    /// The server's current limit; lowered when it says "too many connections".
    limit: AtomicUsize,
    /// When the limit was last lowered or raised again.
    limit_changed: Mutex<Instant>,
    idle: Mutex<Vec<Idle>>,
    dirs: DirCache,
    /// Logins refused with 530, each remembered with the digest of the
    /// credentials it was refused for: the other entries of a job with a
    /// wrong password fail at once instead of each costing the server a
    /// failed login (3-4 s on vsftpd and pure-ftpd). Keyed by credentials so
    /// that one job's wrong password never fails another job's right one.
    refused_logins: Mutex<Vec<(Instant, Creds, Fault)>>,
    /// Entries of this server waiting for a global permit (see `global_waiters`).
    global_waiting: AtomicUsize,
    /// What the server's control connections share of TLS (see `tls`).
    control_tls: Arc<crate::ftp::tls::ControlShare>,
    /// A session is running the pipelining probes for this server: the
    /// others go on without pipelining meanwhile, rather than each probe.
    probing: AtomicBool,
    /// A session probed pipelining at its login (see `Contact`), or tried.
    probed_at_login: AtomicBool,
    /// Whether the server takes segmented uploads (see `segment`): one of
    /// the `SEGMENTS_*` values, learnt once per server by a probe.
    segments: AtomicU8,
    /// One login at a time per server, unless logins are known to be cheap
    /// for the server. A login can cost seconds of server CPU (pure-ftpd's
    /// default password hash), and a session returned while an entry waits
    /// serves it sooner than a login of its own would.
    login_gate: Arc<Semaphore>,
    /// Logins holding `login_gate` that are on the wire (seat and permits
    /// held). Logins wait at PASS beside one only while it is: one that
    /// went as far as USER while the measuring login still waited for a
    /// seat held that seat against it, and three instances sharing two
    /// seats wedged for good.
    measuring: AtomicUsize,
    /// Signalled when a session goes back to `idle`.
    returned: tokio::sync::Notify,
    /// One permit per open session (busy or idle), held by the session.
    open: Arc<Semaphore>,
    /// How long the last connect + login took, in microseconds.
    login_micros: AtomicU64,
    /// The server's own work in the last login (its time less the round
    /// trips it took, see [`Session::login_work`]), in microseconds;
    /// `u64::MAX` until a login was seen.
    login_work_micros: AtomicU64,
    /// How long an entry holds a session, on average (EWMA), in microseconds.
    use_micros: AtomicU64,
    /// Entries waiting for a session of this server.
    waiting: AtomicUsize,
    /// What sessions learned about the server's protocol (APPE, REST, TLS
    /// 1.3 tickets), handed to new sessions and kept in [`Learned`].
    facts: Mutex<Facts>,
    /// Sessions given up (broken) that the server may still hold: each
    /// keeps its place under the limit until the server closes it or
    /// `abandon_hold` passes (see [`Pool::abandon`]).
    abandoned: AtomicUsize,
    /// Files that abandoned sessions were writing, with how many hold each:
    /// the server may keep them locked (vsftpd's `lock_upload_files`) until
    /// it lets go of the session, and an upload to one would queue behind it.
    held: Mutex<HashMap<String, usize>>,
    /// The server said it is full (421 at login): no session of it logs in
    /// before `until`, whichever entry asks; `wait` doubles with each 421 in
    /// a row and starts again after a login goes through.
    full: Mutex<Full>,
}

/// A server's sessions and limit at scrape time.
pub(crate) struct ServerLoad {
    pub(crate) server: String,
    pub(crate) busy: usize,
    pub(crate) idle: usize,
    /// Sessions given up that the server may still hold (counted in the limit).
    pub(crate) abandoned: usize,
    pub(crate) limit: usize,
    /// The server said it is full (421): no login before this many ms from now.
    pub(crate) full_for_ms: u64,
}

/// A server's "too many connections" backoff (see [`Slot::full`]).
#[derive(Default)]
struct Full {
    until: Option<Instant>,
    wait: Duration,
}

/// The first wait after a 421 at login, doubled for each one in a row.
const FULL_FIRST_WAIT: Duration = Duration::from_secs(2);
/// The longest wait after a 421 at login.
const FULL_MAX_WAIT: Duration = Duration::from_secs(120);
/// How often an entry looks for a free seat while other instances hold
/// every one of the server's (see [`crate::ftp::seats`]).
const SEAT_POLL: Duration = Duration::from_millis(200);

impl Slot {
    /// How long until the server's 421 backoff is over (zero: none).
    fn full_for(&self) -> Duration {
        let full = self.full.lock().unwrap();
        full.until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        })
    }

    /// The server refused a login as full: the next wait begins now,
    /// unless one is under way (`None`): 421s to logins that were on their
    /// way when it began are the same refusal.
    fn note_full(&self) -> Option<Duration> {
        let mut full = self.full.lock().unwrap();
        let now = Instant::now();
        if full.until.is_some_and(|u| u > now) {
            return None;
        }
        full.wait = (full.wait * 2).clamp(FULL_FIRST_WAIT, FULL_MAX_WAIT);
        full.until = Some(now + full.wait);
        Some(full.wait)
    }

    fn open_sessions(&self) -> usize {
        Semaphore::MAX_PERMITS - self.open.available_permits()
    }

    fn login_cost(&self) -> Duration {
        Duration::from_micros(self.login_micros.load(Ordering::Relaxed))
    }

    /// Do logins cost the server little? Then they are paid in parallel,
    /// up to the limits, however long they take: a login across a 40 ms
    /// link takes ~7 round trips (280 ms) of waiting, not of server work.
    fn logins_cheap(&self) -> bool {
        let work = self.login_work_micros.load(Ordering::Relaxed);
        work != u64::MAX && Duration::from_micros(work) < CHEAP_LOGIN
    }

    /// Has no login to this server shown yet what a login costs it (and
    /// no earlier run either)? Then logins other than the one measuring
    /// go as far as USER alongside it, and wait for its verdict before PASS:
    /// on a first contact across a 40 ms link that saves three round trips
    /// per session, and a server whose logins are costly is never sent more
    /// than one password at a time.
    fn login_cost_unknown(&self) -> bool {
        self.login_work_micros.load(Ordering::Relaxed) == u64::MAX
            && self.facts.lock().unwrap().cheap_logins.is_none()
    }

    /// Waits, between USER and PASS, for the login that measures what a
    /// login costs the server: `true` to go on (logins are cheap, or that
    /// login failed and this one holds the gate in its place, in `held`),
    /// `false` to give up (costly logins, or credentials just refused).
    async fn wait_to_pass(&self, creds: Creds, held: &Mutex<Option<OwnedSemaphorePermit>>) -> bool {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if refused_before(self, creds).is_err() {
                return false;
            }
            if self.login_work_micros.load(Ordering::Relaxed) != u64::MAX {
                return self.logins_cheap();
            }
            if let Ok(g) = self.login_gate.clone().try_acquire_owned() {
                *held.lock().unwrap() = Some(g);
                return true;
            }
            // A failed login wakes nobody: look again now and then.
            tokio::select! {
                _ = returned => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Is another login worth its cost? Only when the work queued for the
    /// open sessions would keep them busy for longer than a login takes.
    /// On pure-ftpd a login costs ~3 s of server CPU while an entry holds a
    /// session for milliseconds: logging in early only to find the work done
    /// made a 1,000-file job 70% slower than lftp -P1. A cheap login is
    /// always worth it: on vsftpd, holding back cost a 1,000-file job 80%,
    /// and across a WAN link it left half the allowed connections unused.
    fn worth_logging_in(&self) -> bool {
        let open = self.open_sessions() as u64;
        if open == 0 || self.logins_cheap() {
            return true;
        }
        let backlog = self.waiting.load(Ordering::Relaxed) as u64
            * self.use_micros.load(Ordering::Relaxed)
            / open;
        backlog >= self.login_micros.load(Ordering::Relaxed)
    }
}

const SEGMENTS_UNKNOWN: u8 = 0;
const SEGMENTS_YES: u8 = 1;
const SEGMENTS_NO: u8 = 2;

/// Logins whose server work is under this are taken freely, in parallel:
/// parallel sessions win more than the login costs. vsftpd's PAM check of a
/// yescrypt hash costs ~0.25 s of server work here, and at 40 ms RTT its
/// seven round trips add 0.28 s of waiting; both are paid once per session
/// and bought 3 times the throughput of one session. pure-ftpd's argon2
/// hash (~3 s of server CPU per login) is made one login at a time, and
/// must be earned by queued work.
const CHEAP_LOGIN: Duration = Duration::from_millis(1000);

/// Makes `sem`, which stood for `from` permits, stand for `to`: more are
/// added at once; fewer are taken out as they come free (a task waits for
/// them and forgets them).
pub(crate) fn resize(sem: &Arc<Semaphore>, from: usize, to: usize) {
    if to > from {
        sem.add_permits(to - from);
    } else if from > to {
        let sem = sem.clone();
        let n = (from - to) as u32;
        tokio::spawn(async move {
            if let Ok(p) = sem.acquire_many_owned(n).await {
                p.forget();
            }
        });
    }
}

/// How long a refused login is remembered.
const REMEMBER_REFUSED_LOGIN: Duration = Duration::from_secs(60);

/// Most refused logins remembered per server (the oldest goes first).
const MAX_REFUSED_REMEMBERED: usize = 16;

/// A keyed digest of the credentials a session logs in with. The key is
/// random per process, so the digest kept in memory says nothing about the
/// password to anyone who reads it (a core dump, a debugger).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Creds([u8; 32]);

impl Creds {
    pub(crate) fn of(spec: &ServerSpec) -> Creds {
        use sha2::{Digest, Sha256};
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let mut h = Sha256::new();
        h.update(key);
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        for part in [spec.login.as_bytes(), spec.password.expose().as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Creds(h.finalize().into())
    }
}

pub(crate) struct Pool {
    global: Arc<Semaphore>,
    /// The global limit `global` stands for now (changed by a reload).
    max_connections: AtomicUsize,
    /// Tasks waiting for a global permit; while any wait, released sessions are closed, not kept.
    global_waiters: AtomicUsize,
    slots: Mutex<HashMap<ServerKey, Arc<Slot>>>,
    /// `max_connections_per_server`, changed by a reload.
    per_server: AtomicUsize,
    /// Facts about servers kept across restarts.
    learned: Arc<Learned>,
    tls: TlsConfigs,
    timeouts: Timeouts,
    idle_timeout: Duration,
    /// Sessions opened, logins refused, limits lowered (see [`crate::events`]).
    events: crate::events::Events,
    /// Bandwidth limits (`max_rate`): what data connections pay into.
    pub(crate) limits: Arc<crate::rate::Limits>,
    /// The `pipelining` setting: false keeps every session one command at a time.
    pipelining: AtomicBool,
    /// How long a server may go on holding a session that was given up,
    /// in seconds (see [`Pool::abandon`]).
    abandon_hold_secs: AtomicU64,
    /// The per-server budget shared with other instances (see [`Pool::share_seats`]).
    seats: Mutex<Arc<crate::ftp::seats::Seats>>,
}

/// A session lent to one entry. Dropping it returns the session to the pool
/// unless it was marked broken.
pub(crate) struct Lease {
    session: Option<Session>,
    /// What the session logged in with; it goes back to the idle list under these.
    creds: Creds,
    global: Option<OwnedSemaphorePermit>,
    in_use: Option<OwnedSemaphorePermit>,
    slot: Arc<Slot>,
    pool: Arc<Pool>,
    /// When the session was lent, to learn how long entries hold one.
    since: Instant,
}

impl Lease {
    pub(crate) fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("lease holds a session")
    }

    pub(crate) fn dirs(&self) -> &DirCache {
        &self.slot.dirs
    }

    /// What the probe found about segmented uploads to this server; `None`: not probed yet.
    /// Whether the server keeps pipelined commands in order, as far as
    /// any session found out; also given to this lease's session.
    pub(crate) fn pipelining(&mut self) -> Option<bool> {
        if !self.pool.pipelining.load(Ordering::Relaxed) {
            self.session().set_pipelining(Some(false));
            return Some(false);
        }
        let (known, queues) = {
            let f = self.slot.facts.lock().unwrap();
            (f.pipelining, f.queues_in_transfer)
        };
        let session = self.session();
        if session.pipelining().is_none() {
            session.set_pipelining(known);
        }
        if session.queues_in_transfer.is_none() {
            session.queues_in_transfer = queues;
        }
        session.pipelining()
    }

    /// Closes this lease's session (broken by a probe) and lends a fresh
    /// one in its place; the old one's permits go first, so that a limit
    /// of one session is no deadlock.
    pub(crate) async fn renew(&mut self, spec: &ServerSpec) -> Result<(), Fault> {
        drop(self.global.take());
        match self.session.take() {
            Some(s) if s.is_broken() => self.pool.abandon(&self.slot, s, self.in_use.take()),
            other => drop(other),
        }
        drop(self.in_use.take());
        *self = self.pool.acquire(spec).await?;
        Ok(())
    }

    /// Is `path` a file that a session given up was writing, which the
    /// server may still hold (locked until it lets go of that session)?
    pub(crate) fn is_held(&self, path: &str) -> bool {
        Pool::is_held(&self.slot, path)
    }

    /// Do other entries wait for a session of this server?
    pub(crate) fn others_waiting(&self) -> bool {
        self.slot.waiting.load(Ordering::Relaxed) > 0
    }

    /// May this lease's session run the pipelining probes? True for one
    /// session per server at a time; [`Lease::learned`] ends its turn.
    pub(crate) fn may_probe(&self) -> bool {
        self.slot
            .probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Shares what this session found out with the server's other sessions now.
    pub(crate) fn learned(&mut self) {
        if let Some(session) = &self.session {
            self.pool.learn_from(&self.slot, session);
        }
        self.slot.probing.store(false, Ordering::SeqCst);
    }

    pub(crate) fn segments_ok(&self) -> Option<bool> {
        match self.slot.segments.load(Ordering::SeqCst) {
            SEGMENTS_YES => Some(true),
            SEGMENTS_NO => Some(false),
            _ => None,
        }
    }

    /// Remembers the probe's verdict; true if this call was the first to
    /// record one (so that it is logged once per server).
    pub(crate) fn set_segments_ok(&self, ok: bool) -> bool {
        let v = if ok { SEGMENTS_YES } else { SEGMENTS_NO };
        let first = self
            .slot
            .segments
            .compare_exchange(SEGMENTS_UNKNOWN, v, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            self.pool.learn(&self.slot, |f| f.segments = Some(ok));
        }
        first
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let used = self.since.elapsed().as_micros() as u64;
        let avg = self.slot.use_micros.load(Ordering::Relaxed);
        let avg = if avg == 0 { used } else { (avg * 7 + used) / 8 };
        self.slot.use_micros.store(avg, Ordering::Relaxed);
        let (Some(mut session), Some(global)) = (self.session.take(), self.global.take()) else {
            return;
        };
        self.pool.learn_from(&self.slot, &session);
        if session.owes()
            && !session.is_broken()
            && (self.slot.waiting.load(Ordering::Relaxed) == 0
                || self.pool.others_wait_globally(&self.slot))
        {
            // Replies are owed to an entry that waits for them, and no
            // entry is about to use the session (and read them on its
            // way): read them now, then put the session back.
            // The permit to use a session of the server goes with it: an
            // entry that got it now would find no idle session and log in
            // (and, at the global limit, make a session close for it).
            let (pool, slot, creds) = (self.pool.clone(), self.slot.clone(), self.creds);
            let in_use = self.in_use.take();
            tokio::spawn(async move {
                let _ = session.settle().await;
                pool.learn_from(&slot, &session);
                Pool::put_back(&pool, &slot, session, creds, global, in_use);
            });
            return;
        }
        let in_use = self.in_use.take();
        Pool::put_back(&self.pool, &self.slot, session, self.creds, global, in_use);
    }
}

/// Counts an entry as waiting for a session while it lives.
struct Waiting(Arc<Slot>);

/// A login measuring what logins cost, on the wire (see [`Slot::measuring`]).
struct Measuring(Arc<Slot>);

impl Measuring {
    fn start(slot: &Arc<Slot>) -> Measuring {
        slot.measuring.fetch_add(1, Ordering::SeqCst);
        // Logins queued at the gate may go as far as USER beside it now.
        slot.returned.notify_waiters();
        Measuring(slot.clone())
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        self.0.measuring.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The remembered refusal of these very credentials, if it is recent.
fn refused_before(slot: &Slot, creds: Creds) -> Result<(), Fault> {
    let mut refused = slot.refused_logins.lock().unwrap();
    refused.retain(|(when, _, _)| when.elapsed() < REMEMBER_REFUSED_LOGIN);
    match refused.iter().find(|(_, c, _)| *c == creds) {
        Some((_, _, fault)) => Err(fault
            .clone()
            .context("not tried again: this login was refused moments ago")),
        None => Ok(()),
    }
}

fn remember_refusal(slot: &Slot, creds: Creds, fault: &Fault) {
    let mut refused = slot.refused_logins.lock().unwrap();
    refused.retain(|(when, c, _)| when.elapsed() < REMEMBER_REFUSED_LOGIN && *c != creds);
    if refused.len() >= MAX_REFUSED_REMEMBERED {
        refused.remove(0);
    }
    refused.push((Instant::now(), creds, fault.clone()));
}

impl Pool {
    pub(crate) fn new(
        max_connections: usize,
        per_server: usize,
        timeouts: Timeouts,
        idle_timeout: Duration,
        learned: Arc<Learned>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            global: Arc::new(Semaphore::new(max_connections)),
            max_connections: AtomicUsize::new(max_connections),
            global_waiters: AtomicUsize::new(0),
            slots: Mutex::new(HashMap::new()),
            per_server: AtomicUsize::new(per_server),
            learned,
            tls: TlsConfigs::default(),
            timeouts,
            idle_timeout,
            events: crate::events::Events::default(),
            limits: Arc::default(),
            pipelining: AtomicBool::new(true),
            abandon_hold_secs: AtomicU64::new(300),
            seats: Mutex::new(Arc::new(crate::ftp::seats::Seats::new(None))),
        })
    }

    /// How long a server may hold a session ftpdrop gave up (see
    /// [`crate::config::Config::abandoned_session_secs`]).
    pub(crate) fn set_abandon_hold(&self, hold: Duration) {
        self.abandon_hold_secs
            .store(hold.as_secs(), Ordering::Relaxed);
    }

    /// How long a server may hold a session ftpdrop gave up.
    pub(crate) fn abandon_hold(&self) -> Duration {
        Duration::from_secs(self.abandon_hold_secs.load(Ordering::Relaxed))
    }

    /// Keeps a session that was given up (broken) in the count of the
    /// server's sessions until the server lets go of it. A session given up
    /// for a timeout may still be busy at the server: in a transfer whose
    /// data connection went silent, or queued behind the upload lock of an
    /// earlier one. Counted as free at once, retries piled up sessions at
    /// the server (vsftpd: 2 to 601 in six minutes) until it refused every
    /// client with 421. The session sends QUIT and waits for the server's
    /// close (at once on a healthy connection), at most `abandon_hold`.
    fn abandon(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        mut session: Session,
        in_use: Option<OwnedSemaphorePermit>,
    ) {
        // An idle session found dead takes a place only if one is free.
        let in_use = in_use.or_else(|| slot.in_use.clone().try_acquire_owned().ok());
        if session.counted.is_none() {
            // A login that timed out: an open session to the server all the same.
            session.counted = slot.open.clone().try_acquire_owned().ok();
        }
        let writing = session.writing.take();
        if let Some(path) = &writing {
            *slot.held.lock().unwrap().entry(path.clone()).or_default() += 1;
        }
        slot.abandoned.fetch_add(1, Ordering::SeqCst);
        let hold = Duration::from_secs(self.abandon_hold_secs.load(Ordering::Relaxed));
        let (slot, pool) = (slot.clone(), self.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let closed = session.linger(hold).await;
            if let Some(path) = writing {
                let mut held = slot.held.lock().unwrap();
                if let Some(n) = held.get_mut(&path) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&path);
                    }
                }
            }
            slot.abandoned.fetch_sub(1, Ordering::SeqCst);
            drop(in_use);
            pool.events.emit(crate::events::Event::SessionReleased {
                server: slot.key.host_port(),
                held_ms: started.elapsed().as_millis() as u64,
                closed_by_server: closed,
            });
        });
    }

    /// Is `path` a file that a session given up was writing, which the
    /// server may still hold (locked)?
    fn is_held(slot: &Slot, path: &str) -> bool {
        slot.held.lock().unwrap().contains_key(path)
    }

    /// Waits until no session given up holds `path` on `spec`'s server any
    /// more, at most `within`.
    pub(crate) async fn wait_released(&self, spec: &ServerSpec, path: &str, within: Duration) {
        let slot = self.slot(&spec.key());
        let deadline = Instant::now() + within;
        while Pool::is_held(&slot, path) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `pipelining` setting (see [`crate::config::Config::pipelining`]).
    pub(crate) fn allow_pipelining(&self, on: bool) {
        self.pipelining.store(on, Ordering::Relaxed);
    }

    fn slot(&self, key: &ServerKey) -> Arc<Slot> {
        let per_server = self.per_server.load(Ordering::SeqCst);
        self.slots
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert_with(|| {
                // What an earlier run learned: no probe, no refused login to relearn it.
                let facts = self.learned.get(key).unwrap_or_default();
                let per_server = facts.limit.map_or(per_server, |l| l.clamp(1, per_server));
                let segments = match facts.segments {
                    Some(true) => SEGMENTS_YES,
                    Some(false) => SEGMENTS_NO,
                    None => SEGMENTS_UNKNOWN,
                };
                Arc::new(Slot {
                    key: key.clone(),
                    in_use: Arc::new(Semaphore::new(per_server)),
                    limit: AtomicUsize::new(per_server),
                    limit_changed: Mutex::new(Instant::now()),
                    idle: Mutex::new(Vec::new()),
                    dirs: DirCache::default(),
                    refused_logins: Mutex::new(Vec::new()),
                    login_gate: Arc::new(Semaphore::new(1)),
                    open: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                    login_micros: AtomicU64::new(0),
                    // A server whose logins were cheap before starts with
                    // them cheap; the first login here measures again.
                    login_work_micros: AtomicU64::new(match facts.cheap_logins {
                        Some(true) => 0,
                        _ => u64::MAX,
                    }),
                    use_micros: AtomicU64::new(0),
                    waiting: AtomicUsize::new(0),
                    returned: tokio::sync::Notify::new(),
                    segments: AtomicU8::new(segments),
                    probing: AtomicBool::new(false),
                    measuring: AtomicUsize::new(0),
                    probed_at_login: AtomicBool::new(false),
                    global_waiting: AtomicUsize::new(0),
                    control_tls: Arc::new(crate::ftp::tls::ControlShare::with_group(
                        facts.tls_group,
                    )),
                    facts: Mutex::new(facts),
                    abandoned: AtomicUsize::new(0),
                    held: Mutex::new(HashMap::new()),
                    full: Mutex::new(Full::default()),
                })
            })
            .clone()
    }

    /// Does an entry of another server wait for a global permit (that
    /// closing one of `slot`'s sessions would give it)?
    fn others_wait_globally(&self, slot: &Slot) -> bool {
        self.global_waiters.load(Ordering::SeqCst) > slot.global_waiting.load(Ordering::SeqCst)
    }

    /// Makes a session that is done with idle for the next entry, or closes
    /// it if it cannot serve one.
    fn put_back(
        pool: &Arc<Pool>,
        slot: &Arc<Slot>,
        mut session: Session,
        creds: Creds,
        global: OwnedSemaphorePermit,
        in_use: Option<OwnedSemaphorePermit>,
    ) {
        if session.is_broken() || session.mid_transfer() {
            drop(global);
            pool.abandon(slot, session, in_use);
            return;
        }
        if session.tls_spent() || pool.others_wait_globally(slot) || pool.wanted_elsewhere(slot) {
            // Closing frees the global permit (or the shared seat) for
            // whoever waits for it.
            drop(global);
            return;
        }
        session.last_used = Instant::now();
        slot.idle.lock().unwrap().push(Idle {
            session,
            creds,
            global,
            since: Instant::now(),
        });
        // Every waiter looks, because the one `notify_one` would pick may
        // hold other credentials; `notify_one` also keeps a permit for a
        // waiter that is between its look at the idle list and its wait.
        slot.returned.notify_waiters();
        slot.returned.notify_one();
        drop(in_use);
    }

    /// Reads the replies that idle sessions of `spec`'s server owe (see
    /// `Session::send_owed`): for an entry whose session was put back for
    /// a next entry that then took another one.
    pub(crate) async fn settle_idle(self: &Arc<Self>, spec: &ServerSpec) {
        let slot = self.slot(&spec.key());
        let owing: Vec<Idle> = {
            let mut idle = slot.idle.lock().unwrap();
            let (owing, rest): (Vec<Idle>, Vec<Idle>) =
                idle.drain(..).partition(|i| i.session.owes());
            *idle = rest;
            owing
        };
        for mut i in owing {
            let _ = i.session.settle().await;
            // Reading them may have shown the server out of order.
            self.learn_from(&slot, &i.session);
            Pool::put_back(self, &slot, i.session, i.creds, i.global, None);
        }
    }

    /// Closes one idle session of a server other than `except`; true if there was one.
    fn evict_one(&self, except: &ServerKey) -> bool {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != except)
            .map(|(_, s)| s.clone())
            .collect();
        for slot in slots {
            if let Some(idle) = slot.idle.lock().unwrap().pop() {
                drop(idle);
                return true;
            }
        }
        false
    }

    /// The pool with events going to `events` instead of nowhere.
    pub(crate) fn with_events(self: Arc<Self>, events: crate::events::Events) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut pool) => {
                pool.events = events;
                Arc::new(pool)
            }
            Err(shared) => shared,
        }
    }

    /// Each server's sessions (busy, idle) and current limit, for the metrics.
    pub(crate) fn load(&self) -> Vec<ServerLoad> {
        let slots: Vec<Arc<Slot>> = self.slots.lock().unwrap().values().cloned().collect();
        let mut out: Vec<ServerLoad> = Vec::new();
        for slot in slots {
            let server = slot.key.host_port();
            let idle = slot.idle.lock().unwrap().len();
            let abandoned = slot.abandoned.load(Ordering::SeqCst);
            let busy = slot.open_sessions().saturating_sub(idle + abandoned);
            let limit = slot.limit.load(Ordering::SeqCst);
            let full_for_ms = slot.full_for().as_millis() as u64;
            // Several logins to one host:port are one server to an operator.
            match out.iter_mut().find(|l| l.server == server) {
                Some(l) => {
                    l.busy += busy;
                    l.idle += idle;
                    l.abandoned += abandoned;
                    l.limit = l.limit.max(limit);
                    l.full_for_ms = l.full_for_ms.max(full_for_ms);
                }
                None => out.push(ServerLoad {
                    server,
                    busy,
                    idle,
                    abandoned,
                    limit,
                    full_for_ms,
                }),
            }
        }
        out
    }

    /// Closes sessions idle for longer than the idle timeout.
    pub(crate) fn reap_idle(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().unwrap().values().cloned().collect();
        for slot in slots {
            // Another instance waits for a seat that our idle session holds.
            let yield_seats = self.wanted_elsewhere(&slot);
            slot.idle
                .lock()
                .unwrap()
                .retain(|i| !yield_seats && i.since.elapsed() < self.idle_timeout);
        }
        // A server nothing holds any more (no session, no lease, no waiter:
        // only the map has its slot) is forgotten; what was learned about it
        // is kept in the learned facts. A job naming 1,500 hosts left 1,500
        // slots, in /api/servers and the metrics, for good.
        self.slots.lock().unwrap().retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.open_sessions() > 0
                || !slot.idle.lock().unwrap().is_empty()
        });
    }

    /// Closes every idle session politely (used at shutdown), all at once:
    /// one after another, eight QUITs across a 40 ms link added a third of
    /// a second to every `ftpdrop once`.
    pub(crate) async fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().unwrap().values().cloned().collect();
        let idle: Vec<Idle> = slots
            .iter()
            .flat_map(|slot| std::mem::take(&mut *slot.idle.lock().unwrap()))
            .collect();
        futures_util::future::join_all(idle.into_iter().map(|i| i.session.quit())).await;
    }

    /// Puts new limits in force (a reload). Sessions in use keep going; a
    /// lower limit is reached as they end, and idle sessions are closed at
    /// once so that new work waits for the new limit.
    pub(crate) fn set_limits(&self, max_connections: usize, per_server: usize) {
        let old = self.max_connections.swap(max_connections, Ordering::SeqCst);
        resize(&self.global, old, max_connections);
        let old_per = self.per_server.swap(per_server, Ordering::SeqCst);
        let slots: Vec<Arc<Slot>> = self.slots.lock().unwrap().values().cloned().collect();
        for slot in &slots {
            let cur = slot.limit.load(Ordering::SeqCst);
            // A limit the server taught us (421) stays, unless the new one is lower.
            let new = if cur == old_per {
                per_server
            } else {
                cur.min(per_server)
            };
            slot.limit.store(new, Ordering::SeqCst);
            resize(&slot.in_use, cur, new);
        }
        if max_connections < old || per_server < old_per {
            for slot in &slots {
                slot.idle.lock().unwrap().clear();
            }
        }
        if (max_connections, per_server) != (old, old_per) {
            tracing::info!(
                max_connections,
                max_connections_per_server = per_server,
                "connection limits changed"
            );
        }
    }

    /// Gives a server whose limit was lowered one more connection, if it has
    /// not refused one for a while; if it still cannot take it, it says so
    /// and the limit goes down again.
    fn maybe_raise_limit(&self, slot: &Slot) {
        let mut changed = slot.limit_changed.lock().unwrap();
        let cur = slot.limit.load(Ordering::SeqCst);
        if cur >= self.per_server.load(Ordering::SeqCst) || changed.elapsed() < RAISE_LIMIT_AFTER {
            return;
        }
        *changed = Instant::now();
        slot.limit.store(cur + 1, Ordering::SeqCst);
        slot.in_use.add_permits(1);
        // Told as learned: no refusals for a while.
        self.learn(slot, |f| f.limit = Some(cur + 1));
    }

    /// Shares each server's session limit with the other instances that
    /// use the same seats (see [`crate::ftp::seats`]). Sessions opened
    /// before keep the seats they have (or none).
    pub(crate) fn share_seats(&self, seats: crate::ftp::seats::Seats) {
        *self.seats.lock().unwrap() = Arc::new(seats);
    }

    fn seats(&self) -> Arc<crate::ftp::seats::Seats> {
        self.seats.lock().unwrap().clone()
    }

    /// Does another instance wait for a seat of `slot`'s server while no
    /// entry of ours does? Then an idle session of ours is closed, not kept.
    fn wanted_elsewhere(&self, slot: &Slot) -> bool {
        slot.waiting.load(Ordering::Relaxed) == 0
            && self.seats().wanted(&slot.key.host_port(), &slot.key.login)
    }

    /// A seat for one more session of `slot`'s server, if one is free.
    async fn take_seat(&self, slot: &Slot) -> Option<crate::ftp::seats::Seat> {
        let limit = slot.limit.load(Ordering::SeqCst);
        self.seats()
            .take(&slot.key.host_port(), &slot.key.login, limit)
            .await
    }

    /// Lends a logged-in session for `spec`, connecting if none is idle.
    pub(crate) async fn acquire(self: &Arc<Self>, spec: &ServerSpec) -> Result<Lease, Fault> {
        let key = spec.key();
        let creds = Creds::of(spec);
        let slot = self.slot(&key);
        refused_before(&slot, creds)?;
        self.maybe_raise_limit(&slot);
        // Counted from here: a session put back finds this entry waiting
        // even before the permit it frees reaches it.
        slot.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(slot.clone());
        loop {
            if let Some(lease) = self.acquire_once(spec, &key, creds, &slot).await? {
                return Ok(lease);
            }
            refused_before(&slot, creds)?;
        }
    }

    /// One try of [`Pool::acquire`]; `None`: a login held back before its
    /// password gave up (logins turned out costly), and the entry queues again.
    async fn acquire_once(
        self: &Arc<Self>,
        spec: &ServerSpec,
        key: &ServerKey,
        creds: Creds,
        slot: &Arc<Slot>,
    ) -> Result<Option<Lease>, Fault> {
        let (key, slot) = (key.clone(), slot.clone());
        let in_use = slot
            .in_use
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        // `at_pass`: this login goes as far as USER beside the one that
        // measures what a login costs, and waits for its verdict before PASS.
        let (gate, at_pass) = loop {
            if let Some(idle) = Self::take_idle(&slot, creds).await {
                return Ok(Some(self.lend(idle, creds, in_use, slot)));
            }
            if slot.logins_cheap() {
                break (None, false);
            }
            match slot.login_gate.clone().try_acquire_owned() {
                Ok(g) => break (Some(g), false),
                Err(_)
                    if slot.login_cost_unknown() && slot.measuring.load(Ordering::SeqCst) > 0 =>
                {
                    break (None, true)
                }
                Err(_) => {}
            }
            // `returned` also wakes us when a login showed logins to be cheap.
            tokio::select! {
                g = slot.login_gate.clone().acquire_owned() => break (Some(g.expect("semaphore never closed")), false),
                _ = slot.returned.notified() => {}
            }
        };
        // Our turn to log in: do it if the queued work warrants it, else take
        // a returned session; after one login's time, log in regardless (the
        // open sessions may be busy with long uploads).
        let deadline = Instant::now() + slot.login_cost();
        loop {
            if let Some(idle) = Self::take_idle(&slot, creds).await {
                return Ok(Some(self.lend(idle, creds, in_use, slot)));
            }
            if slot.worth_logging_in() || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = slot.returned.notified() => {}
            }
        }
        // The login before ours may have been refused while we waited.
        refused_before(&slot, creds)?;
        // The server said it is full: no login before its wait is over;
        // a session put back meanwhile serves.
        loop {
            let wait = slot.full_for();
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = slot.returned.notified() => {}
            }
            if let Some(idle) = Self::take_idle(&slot, creds).await {
                drop(gate);
                return Ok(Some(self.lend(idle, creds, in_use, slot)));
            }
        }
        // Every seat held: other instances' sessions fill the server's
        // limit. Theirs end, or one of ours comes back.
        let seat = loop {
            if let Some(seat) = self.take_seat(&slot).await {
                break seat;
            }
            // An idle session of ours (logged in as someone else) holds one.
            let idle = slot.idle.lock().unwrap().pop();
            if idle.is_some() {
                continue;
            }
            self.seats()
                .want(&slot.key.host_port(), &slot.key.login)
                .await;
            tokio::select! {
                _ = tokio::time::sleep(SEAT_POLL) => {}
                _ = slot.returned.notified() => {}
            }
            if let Some(idle) = Self::take_idle(&slot, creds).await {
                drop(gate);
                return Ok(Some(self.lend(idle, creds, in_use, slot)));
            }
        };

        let global = loop {
            // A session of this server put back meanwhile serves at once:
            // logging in for it would close that one for the permit.
            if let Some(idle) = Self::take_idle(&slot, creds).await {
                drop(gate);
                return Ok(Some(self.lend(idle, creds, in_use, slot)));
            }
            if let Ok(p) = self.global.clone().try_acquire_owned() {
                break p;
            }
            if self.evict_one(&key) {
                continue;
            }
            self.global_waiters.fetch_add(1, Ordering::SeqCst);
            slot.global_waiting.fetch_add(1, Ordering::SeqCst);
            let p = tokio::select! {
                p = self.global.clone().acquire_owned() => Some(p.expect("semaphore never closed")),
                _ = slot.returned.notified() => None,
            };
            slot.global_waiting.fetch_sub(1, Ordering::SeqCst);
            self.global_waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(p) = p {
                break p;
            }
        };

        let measuring = gate.as_ref().map(|_| Measuring::start(&slot));
        let lease = self
            .connect(spec, creds, slot, in_use, global, seat, at_pass)
            .await;
        drop(measuring);
        drop(gate);
        lease
    }

    /// Lends one more session for `spec` only if that needs no waiting: a
    /// free per-server and global permit (closing another server's idle
    /// session if that makes room), and no other login to this server under
    /// way. It may still connect and log in.
    /// `None` when the limits are reached or the connection failed; the
    /// caller then does with what it has.
    pub(crate) async fn try_acquire(self: &Arc<Self>, spec: &ServerSpec) -> Option<Lease> {
        let key = spec.key();
        let creds = Creds::of(spec);
        let slot = self.slot(&key);
        let in_use = slot.in_use.clone().try_acquire_owned().ok()?;
        if let Some(idle) = Self::take_idle(&slot, creds).await {
            return Some(self.lease(idle.session, creds, idle.global, in_use, slot));
        }
        if !slot.full_for().is_zero() {
            return None;
        }
        let seat = self.take_seat(&slot).await?;
        let gate = match slot.logins_cheap() {
            true => None,
            false => Some(slot.login_gate.clone().try_acquire_owned().ok()?),
        };
        let global = match self.global.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if self.evict_one(&key) => self.global.clone().try_acquire_owned().ok()?,
            Err(_) => return None,
        };
        let lease = self
            .connect(spec, creds, slot, in_use, global, seat, false)
            .await;
        drop(gate);
        match lease {
            Ok(lease) => lease,
            Err(f) => {
                tracing::debug!(server = %key, error = %f, "no extra session");
                None
            }
        }
    }

    /// An idle session of this server, logged in with `creds`, that still answers, if any.
    async fn take_idle(slot: &Slot, creds: Creds) -> Option<Idle> {
        loop {
            let mut idle = {
                let mut list = slot.idle.lock().unwrap();
                let i = list.iter().rposition(|i| i.creds == creds)?;
                list.remove(i)
            };
            if idle.since.elapsed() < PROBE_AFTER || idle.session.noop().await {
                return Some(idle);
            }
        }
    }

    /// Lends an idle session.
    fn lend(
        self: &Arc<Self>,
        idle: Idle,
        creds: Creds,
        in_use: OwnedSemaphorePermit,
        slot: Arc<Slot>,
    ) -> Lease {
        self.lease(idle.session, creds, idle.global, in_use, slot)
    }

    fn lease(
        self: &Arc<Self>,
        session: Session,
        creds: Creds,
        global: OwnedSemaphorePermit,
        in_use: OwnedSemaphorePermit,
        slot: Arc<Slot>,
    ) -> Lease {
        let mut session = session;
        // Another session found the server out of order since this one was idle.
        if slot.facts.lock().unwrap().pipelining == Some(false) {
            session.set_pipelining(Some(false));
        }
        session.litter = Some((self.learned.clone(), slot.key.clone()));
        Lease {
            session: Some(session),
            creds,
            global: Some(global),
            in_use: Some(in_use),
            slot,
            pool: self.clone(),
            since: Instant::now(),
        }
    }

    /// Removes what an earlier run's probes left on the server (a crash
    /// between a probe's making and removing it), on the first session of
    /// this run that logs in there: partners' systems pick up whatever
    /// appears in their folders.
    async fn sweep_litter(&self, session: &mut Session, key: &ServerKey) {
        let litter = self.learned.litter(key);
        if !litter.is_empty() {
            let gone = remove_litter(session, key, &litter).await;
            self.learned.clear_litter(key, &gone);
        }
    }

    /// Removes what a probe on a session that broke left behind, on a
    /// fresh session of the same server (`lease`'s, renewed; it stays
    /// broken if no fresh one could be had).
    pub(crate) async fn clean_after_probe(&self, lease: &mut Lease, spec: &ServerSpec) {
        let made = std::mem::take(&mut lease.session().made);
        if made.is_empty() {
            return;
        }
        if lease.renew(spec).await.is_ok() {
            let key = spec.key();
            let gone = remove_litter(lease.session(), &key, &made).await;
            self.learned.clear_litter(&key, &gone);
        }
    }

    /// Keeps what `session` found out about its server's protocol, for the
    /// next sessions and across restarts.
    fn learn_from(&self, slot: &Slot, session: &Session) {
        let known = slot.facts.lock().unwrap().clone();
        if let Some((command, reply)) = session.desync() {
            // Told once per server, by the first session that saw it.
            if known.pipelining != Some(false) {
                self.events.emit(crate::events::Event::PipeliningOff {
                    server: slot.key.host_port(),
                    command: command.clone(),
                    reply: reply.clone(),
                });
            }
        }
        let control_only = session.tls13_tickets_on_control_only() && known.tls12.is_none();
        if control_only {
            tracing::info!(
                server = %slot.key,
                "the server gives TLS 1.3 tickets on the control connection only; \
                 its data connections could not all resume TLS 1.3 sessions, so new \
                 sessions use TLS 1.2"
            );
        }
        self.learn(slot, |f| {
            if !session.create_with_appe {
                f.appe = Some(false);
            }
            if session.pipelining().is_some() {
                f.pipelining = session.pipelining();
            }
            if session.queues_in_transfer.is_some() {
                f.queues_in_transfer = session.queues_in_transfer;
            }
            if !session.rest_works {
                f.rest = Some(false);
            }
            if session.went_active {
                f.active = Some(true);
            }
            if session.feat_seen {
                f.utf8 = Some(session.features.utf8);
            }
            if f.tls12.is_none() && session.tls13_tickets_on_data() {
                // TLS 1.3 serves this server's sessions for good.
                f.tls12 = Some(false);
            } else if f.tls12.is_none() && control_only {
                f.tls12 = Some(true);
            }
        });
    }

    /// Learns about `slot`'s server: `change` is made to what its sessions
    /// are handed and to what is kept across restarts, together, and what
    /// changed is told ([`crate::events::Event::ServerLearned`]). Nothing
    /// else writes either.
    fn learn(&self, slot: &Slot, change: impl Fn(&mut Facts)) {
        let changed = {
            let mut facts = slot.facts.lock().unwrap();
            let before = facts.clone();
            change(&mut facts);
            if *facts == before {
                return;
            }
            let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
                (serde_json::to_value(&before), serde_json::to_value(&*facts))
            else {
                return;
            };
            new.into_iter()
                .filter(|(k, v)| k != "learned_at" && old.get(k) != Some(v))
                .collect()
        };
        self.learned.update(&slot.key, &change);
        self.events.emit(crate::events::Event::ServerLearned {
            server: slot.key.host_port(),
            facts: changed,
        });
    }

    /// Connects a new session under permits already held.
    #[allow(clippy::too_many_arguments)]
    async fn connect(
        self: &Arc<Self>,
        spec: &ServerSpec,
        creds: Creds,
        slot: Arc<Slot>,
        in_use: OwnedSemaphorePermit,
        global: OwnedSemaphorePermit,
        seat: crate::ftp::seats::Seat,
        at_pass: bool,
    ) -> Result<Option<Lease>, Fault> {
        let key = &slot.key.clone();
        let contact = Contact {
            pool: self.clone(),
            slot: slot.clone(),
            creds,
            at_pass,
            held: Mutex::new(None),
            gave_up: AtomicBool::new(false),
            again: AtomicBool::new(false),
        };
        let mut facts = slot.facts.lock().unwrap().clone();
        if !self.pipelining.load(Ordering::Relaxed) {
            facts.pipelining = Some(false);
        }
        // On a first contact the measuring login offers TLS 1.3 and finds out
        // where the server hands out tickets; those alongside it offer TLS
        // 1.2, which resumes any number of times: where TLS 1.3 tickets come
        // on the control connection only (vsftpd, proftpd), each TLS 1.3
        // session serves two uploads and logs in again, and a 30-file job
        // took 11 logins with a limit of 4.
        let tls12 = facts.tls12 == Some(true) || (at_pass && facts.tls12.is_none());
        let tls_config = |tls12: bool| match spec.tls {
            crate::config::TlsMode::None => Ok(None),
            _ => self
                .tls
                .get(
                    spec.ca_file.as_deref(),
                    spec.insecure_skip_verify,
                    tls12 || spec.tls_options.tls12_only,
                    &spec.tls_options,
                )
                .map(Some)
                .map_err(|e| Fault::permanent(format!("TLS setup for {key}: {e:#}"))),
        };
        if spec.tls != crate::config::TlsMode::None && spec.insecure_skip_verify {
            tracing::warn!(
                server = %key,
                "TLS certificate verification is OFF for this server (insecure_skip_verify)"
            );
        }
        let started = Instant::now();
        // `tls12`: TLS 1.2 only; `sessions`: the control handshake may
        // resume the TLS 1.2 session another control connection left.
        // A login that timed out leaves a session the server may hold.
        let kept: Mutex<Option<Session>> = Mutex::new(None);
        let connect = |tls12: bool, sessions: bool| {
            let tls = tls_config(tls12)?;
            let share = crate::ftp::tls::Sharing {
                share: slot.control_tls.clone(),
                sessions,
            };
            let (facts, kept, contact) = (&facts, &kept, &contact);
            Ok::<_, Fault>(async move {
                let mut half = None;
                let r = Session::connect_keeping(
                    spec,
                    tls,
                    self.timeouts,
                    facts,
                    Some(share),
                    &mut half,
                    Some(contact as &dyn crate::ftp::session::LoginHooks),
                )
                .await;
                if half.is_some() {
                    *kept.lock().unwrap() = half;
                }
                r
            })
        };
        // Not where TLS 1.2 is ours, not the server's, choice: such servers
        // (vsftpd, proftpd with TLS 1.3) are strict about reuse, and proftpd
        // refuses the data connections of a control connection that resumed
        // another's session; finding that out costs a login, and a full
        // handshake costs one round trip more.
        let resume = facts.control_tls_resume != Some(false) && !tls12;
        let mut connected = connect(tls12, resume)?.await;
        if !tls12 && facts.tls12.is_none() && spec.tls != crate::config::TlsMode::None {
            if let Err(f) = &connected {
                if f.tls_handshake_broke() {
                    // A server whose TLS breaks at a TLS 1.3 ClientHello (old
                    // stacks; pure-ftpd #99, proftpd #1931): once it takes a
                    // TLS 1.2 one, it is capped there for good.
                    let again = connect(true, false)?.await;
                    if again.is_ok() {
                        tracing::warn!(server = %key, error = %f, "the TLS 1.3 handshake failed and TLS 1.2 works; this server is capped at TLS 1.2");
                        self.learn(&slot, |f| f.tls12 = Some(true));
                    }
                    connected = again;
                }
            }
        }
        if tls12 {
            if let Err(f) = &connected {
                if f.is_tls() {
                    // Learned TLS 1.2, but the server speaks TLS 1.3 only:
                    // stay with 1.3 and let sessions end as their tickets do.
                    let again = connect(false, resume)?.await;
                    if again.is_ok() {
                        tracing::info!(server = %key, error = %f, "the server refused TLS 1.2; staying with TLS 1.3");
                        self.learn(&slot, |f| f.tls12 = Some(false));
                    }
                    connected = again;
                }
            }
        }
        if let Ok(session) = &mut connected {
            if session.control_tls_resumed() && facts.control_tls_resume.is_none() {
                if let Some(works) = session.probe_control_resume().await {
                    tracing::info!(
                        server = %key,
                        works,
                        "whether new control connections may resume another one's TLS session"
                    );
                    self.learn(&slot, |f| f.control_tls_resume = Some(works));
                }
                if session.is_broken() {
                    // Its data connections would be refused too: log in
                    // again with a handshake of its own.
                    let tls12 = slot.facts.lock().unwrap().tls12 == Some(true);
                    connected = connect(tls12, false)?.await;
                }
            }
        }
        if let Some(group) = slot.control_tls.group() {
            self.learn(&slot, |f| f.tls_group = Some(group));
        }
        match connected {
            Ok(mut session) => {
                slot.login_micros
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                let cheap_before = slot.logins_cheap();
                slot.login_work_micros
                    .store(session.login_work.as_micros() as u64, Ordering::Relaxed);
                let cheap = slot.logins_cheap();
                if cheap && !cheap_before {
                    // Entries queued at the gate may log in alongside now.
                    slot.returned.notify_waiters();
                }
                self.learn(&slot, |f| f.cheap_logins = Some(cheap));
                session.counted = slot.open.clone().try_acquire_owned().ok();
                session.seat = Some(seat);
                slot.full.lock().unwrap().wait = Duration::ZERO;
                self.sweep_litter(&mut session, key).await;
                self.events.emit(crate::events::Event::SessionOpened {
                    server: key.host_port(),
                });
                drop(contact.held.lock().unwrap().take());
                Ok(Some(self.lease(session, creds, global, in_use, slot)))
            }
            // Never a failure: the entry queues again, as any waiting one.
            // The session says QUIT and keeps its seat until the server has
            // let go: dropped at once, its seat went to another instance's
            // login while the server still held it (3 sessions at a server
            // that 3 instances share with a limit of 2).
            Err(_) if contact.gave_up.load(Ordering::SeqCst) => {
                if let Some(mut session) = kept.lock().unwrap().take() {
                    session.seat = Some(seat);
                    self.abandon(&slot, session, Some(in_use));
                }
                Ok(None)
            }
            Err(_) if contact.again.load(Ordering::SeqCst) => {
                // The probe at login cost the session; what it made is
                // noted, and the next login removes it.
                if let Some(mut session) = kept.lock().unwrap().take() {
                    session.seat = Some(seat);
                    self.abandon(&slot, session, Some(in_use));
                }
                Ok(None)
            }
            Err(mut f) => {
                if f.kind == FaultKind::Permanent && f.code == Some(530) {
                    remember_refusal(&slot, creds, &f);
                }
                self.events.emit(crate::events::Event::LoginFailed {
                    server: key.host_port(),
                    result: match (f.kind, f.code) {
                        (FaultKind::Permanent, Some(530)) => "refused",
                        (FaultKind::TooManyConnections, _) => "too_many",
                        _ => "error",
                    },
                });
                let half = kept.lock().unwrap().take();
                if let Some(mut session) = half.filter(|_| f.kind == FaultKind::Transient) {
                    // Counted until the server lets it go, as any session given up.
                    session.seat = Some(seat);
                    self.abandon(&slot, session, Some(in_use));
                    return Err(f);
                }
                if f.kind == FaultKind::TooManyConnections {
                    if let Some(wait) = slot.note_full() {
                        self.events.emit(crate::events::Event::ServerFull {
                            server: key.host_port(),
                            wait_ms: wait.as_millis() as u64,
                            reply: f.message.clone(),
                        });
                    }
                    // The receipt says why the entry waits, and for how long.
                    f.message = format!(
                        "{}; the server is full: no entry logs in there for {:.1} s",
                        f.message,
                        slot.full_for().as_secs_f64()
                    );
                    // Remember the server's real limit: one fewer than we had in use.
                    // The permit this attempt holds is the one that goes.
                    let lowered =
                        slot.limit
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                (c > 1).then(|| c - 1)
                            });
                    if let Ok(prev) = lowered {
                        *slot.limit_changed.lock().unwrap() = Instant::now();
                        in_use.forget();
                        self.events.emit(crate::events::Event::LimitLowered {
                            server: key.host_port(),
                            limit: prev - 1,
                        });
                        self.learn(&slot, |f| f.limit = Some(prev - 1));
                    }
                }
                Err(f)
            }
        }
    }
}

/// One login's part in its server's first contact (see
/// [`crate::ftp::session::LoginHooks`]).
struct Contact {
    pool: Arc<Pool>,
    slot: Arc<Slot>,
    creds: Creds,
    /// Went as far as USER beside the login that measures the cost.
    at_pass: bool,
    /// The login gate, taken over from a measuring login that failed.
    held: Mutex<Option<OwnedSemaphorePermit>>,
    /// Gave up before PASS: logins are costly, or were refused.
    gave_up: AtomicBool,
    /// The probe at login cost the session: log in again.
    again: AtomicBool,
}

impl crate::ftp::session::LoginHooks for Contact {
    fn before_pass(&self) -> futures_util::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            if !self.at_pass {
                return true;
            }
            let go = self.slot.wait_to_pass(self.creds, &self.held).await;
            self.gave_up.store(!go, Ordering::SeqCst);
            go
        })
    }

    fn passed(&self, work: Duration) {
        let slot = &self.slot;
        if slot.login_work_micros.load(Ordering::Relaxed) != u64::MAX {
            return;
        }
        slot.login_work_micros
            .store(work.as_micros() as u64, Ordering::Relaxed);
        if slot.logins_cheap() {
            // Logins held back before their password go on now.
            slot.returned.notify_waiters();
        }
    }

    fn pipelining(&self) -> Option<bool> {
        if !self.pool.pipelining.load(Ordering::Relaxed) {
            return Some(false);
        }
        self.slot.facts.lock().unwrap().pipelining
    }

    fn probe_turn(&self) -> Option<crate::ftp::session::Litter> {
        let slot = &self.slot;
        // Only with work queued behind this login's entry: a one-file job
        // would wait a round trip for a verdict it never uses.
        if slot.waiting.load(Ordering::Relaxed) < 2
            || slot.probed_at_login.swap(true, Ordering::SeqCst)
        {
            return None;
        }
        if slot
            .probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return None;
        }
        Some((self.pool.learned.clone(), slot.key.clone()))
    }

    fn probed(&self, verdict: Option<bool>, broke: bool) {
        let slot = &self.slot;
        if let Some(v) = verdict {
            self.pool.learn(slot, |f| f.pipelining = Some(v));
        }
        self.again.store(broke, Ordering::SeqCst);
        slot.probing.store(false, Ordering::SeqCst);
    }
}

/// Removes `paths` (directories end in `/`) from the server; returns those
/// now gone. A 550 says "not there" or "not allowed": the folder's listing tells.
async fn remove_litter(session: &mut Session, key: &ServerKey, paths: &[String]) -> Vec<String> {
    let mut gone = Vec::new();
    for p in paths {
        let removed = match p.strip_suffix('/') {
            Some(dir) => session
                .custom(
                    format!("RMD {dir}"),
                    &[suppaftp::Status::RequestedFileActionOk],
                )
                .await
                .map(drop),
            None => session.delete(p).await,
        };
        match removed {
            Ok(()) => {
                tracing::info!(server = %key, remote_path = %p, "removed what an interrupted probe left");
                gone.push(p.clone());
            }
            Err(f) if matches!(f.code, Some(550 | 450)) => {
                let path = p.trim_end_matches('/');
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
                match session.names(dir).await {
                    Ok(names) if !names.iter().any(|n| n.rsplit('/').next() == Some(name)) => {
                        gone.push(p.clone())
                    }
                    _ => tracing::warn!(
                        server = %key, remote_path = %p, error = %f,
                        "cannot remove what an interrupted probe left; trying again next time"
                    ),
                }
            }
            Err(f) => {
                tracing::debug!(server = %key, remote_path = %p, error = %f, "cannot remove a probe's leftover yet");
                if session.is_broken() {
                    break;
                }
            }
        }
    }
    gone
}
