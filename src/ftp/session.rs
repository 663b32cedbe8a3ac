//! One logged-in FTP or FTPS session, in operations: make this directory,
//! size of that file, open an upload, publish. Its callers get a [`Fault`]
//! that says whether to retry, and never see a reply code.
//!
//! The session holds its control connection ([`Control`], which reads every
//! reply) and a [`Phase`]: ready (with what came ahead for the next upload)
//! or in a transfer whose verdict is owed. Every command runs under a
//! timeout; a session whose command timed out or whose connection broke is
//! broken, and the pool never lends it again.

pub use super::control::Timeouts;
use super::control::{Control, Ftp, Link};
use crate::config::{CodePage, Names, TlsMode};
use crate::ftp::fault::{Cause, Fault, FaultKind, TlsProblem};
use crate::ftp::tls::FtpsConnector;
use crate::ftp::tls::SessionCache;
use crate::job::{normalize_dir, ServerSpec};
use crate::secret::{scrub, Secret};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpResult, Mode, Status};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub(crate) use super::data::Upload;

/// How long the queueing probe holds its transfer open after sending SIZE,
/// at most: long enough for a server that polls its control connection to
/// answer. Two round trips and 20 ms, where that is less.
const QUEUEING_PROBE_WAIT: Duration = Duration::from_millis(100);

/// How long a passive port asked for ahead (see [`Ahead::passive`]) is
/// used: servers may give up on a listener nobody connects to.
const PASSIVE_AHEAD_FRESH: Duration = Duration::from_secs(5);

/// How long, after the transfer's reply, to keep reading what the server
/// still sends on a TLS data connection (see [`Upload::drain`]).
const DRAIN_AFTER_REPLY: Duration = Duration::from_millis(200);

pub use crate::ftp::reply::Features;

/// Directories known to exist on one server, shared by all its sessions so
/// that `mkdir -p` costs round trips only the first time.
pub type DirCache = Arc<Mutex<HashSet<String>>>;

/// How long a failed data connection waits for the command's refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(5);

pub struct Session {
    /// The control connection, and what is in flight on it.
    pub(crate) control: Control,
    /// How the server's names are encoded (resolved once FEAT is known).
    names: crate::config::Names,
    /// The proxy its connections go through, data connections included.
    proxy: Option<Arc<crate::config::ProxySpec>>,
    /// Passive or active data connections, and active mode's ports.
    data: crate::config::DataSpec,
    /// Data connections are active (the server connects to us): asked
    /// for, or taken where the server refused EPSV and PASV.
    pub(crate) active: bool,
    /// `data_mode: auto` turned active on this session (the pool learns it).
    pub(crate) went_active: bool,
    /// FEAT was answered: `features.utf8` says whether the server has UTF-8
    /// names (the pool learns it).
    pub(crate) feat_seen: bool,
    /// Cleared the first time the server refuses EPRT: PORT from then on.
    eprt: bool,
    pub features: Features,
    /// Cleared the first time the server refuses EPSV; PASV is used from then on.
    epsv: bool,
    /// New temp files are created with APPE until the server refuses it (see [`Session::store_at`]).
    pub(crate) create_with_appe: bool,
    /// Cleared when the server says it does not implement REST: resumes use APPE.
    pub(crate) rest_works: bool,
    pub(crate) last_used: Instant,
    /// The reply of the last MKD the server refused, to explain a later STOR failure.
    last_mkd_refusal: Option<String>,
    /// The pool's count of this server's open sessions; released with the session.
    pub(crate) counted: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The seat this session holds in the budget shared with other
    /// instances ([`super::seats`]); freed with the session.
    pub(crate) seat: Option<super::seats::Seat>,
    /// Where the session stands between operations: ready (with what came
    /// ahead for the next upload), or in a transfer whose verdict is owed.
    phase: Phase,
    /// This control connection's TLS session, resumed by its data connections.
    tls_cache: Option<Arc<SessionCache>>,
    /// Starts TLS on data connections (with `tls_cache`'s sessions); `None` for plain FTP.
    data_tls: Option<(suppaftp::tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The control connection's peer: passive data connections go to this
    /// address (the port from EPSV or PASV), as curl does behind NAT.
    peer: SocketAddr,
    /// Cleared when a TLS 1.3 data connection brought no fresh ticket:
    /// this server hands them out on the control connection only.
    tickets_on_data: bool,
    /// A TLS 1.3 ticket came on one of this session's data connections.
    tickets_seen_on_data: bool,
    /// The algorithm last chosen with `OPTS HASH`, so it is sent once per session.
    hash_algo: Option<String>,
    /// The server's own work in the login: USER + PASS took this much more
    /// than the two round trips they cost (a round trip measured by
    /// `TYPE I`, which costs the server nothing). Tells a login that is slow
    /// because the server is far (cheap: open sessions in parallel) from one
    /// that is slow because it hashes the password (pure-ftpd's argon2).
    pub(crate) login_work: Duration,
    /// Where probes record what they make before they make it (see
    /// [`super::learned::Learned::add_litter`]); set by the pool.
    pub(crate) litter: Option<(
        std::sync::Arc<super::learned::Learned>,
        crate::job::ServerKey,
    )>,
    /// What this session's probes made and have not removed (see [`Self::note_litter`]).
    pub(crate) made: Vec<String>,
    /// Does the server leave commands that arrive during a transfer unread
    /// until the transfer's reply (see [`Session::probe_queueing`])? Then
    /// an upload's SIZE goes out as soon as its data connection closes.
    pub(crate) queues_in_transfer: Option<bool>,
    /// The file an upload on this session writes, from its STOR or APPE
    /// until the server's verdict on it is read. Still set on a session
    /// given up mid-transfer: the server may go on holding that file (its
    /// upload lock) until it notices, and the pool keeps the name meanwhile.
    pub(crate) writing: Option<String>,
}

/// Where a session stands between the operations its callers ask for (what
/// is owed on the control connection itself is [`Control`]'s). Each phase
/// holds only what is valid in it, and a transition takes the old phase
/// whole: nothing of one upload is left over for the next by accident.
enum Phase {
    /// No data connection open; `Ahead` holds what the last upload's close
    /// (or a SIZE) sent ahead for the next operation.
    Ready(Ahead),
    /// A data connection is open and the server's verdict on its transfer
    /// is owed; a session left here (its task was cancelled mid-transfer)
    /// is never lent again. `size_after`: the file whose SIZE, and the next
    /// EPSV, go out as soon as the data connection closes.
    Transfer { size_after: Option<String> },
}

/// Answers that came ahead of the operation that needs them.
#[derive(Default)]
struct Ahead {
    /// `SIZE` of a file, sent behind the last upload's transfer, and its answer.
    size: Option<(String, Result<Option<u64>, Fault>)>,
    /// The port of an EPSV sent ahead, and when: the server listens there
    /// for the next data connection (for [`PASSIVE_AHEAD_FRESH`]).
    passive: Option<(SocketAddr, Instant)>,
}

/// How a data connection is made (see [`Session::data_way`]).
enum DataWay {
    Passive(SocketAddr),
    Active(tokio::net::TcpListener),
}

/// Why a data connection could not be set up on this side: its TCP
/// connect, or its TLS handshake.
enum DataFailure {
    Connect(std::io::Error),
    Tls(std::io::Error),
}

/// Why a data connection was not opened: its `REST` was refused (the
/// caller may resume another way), or anything else.
enum Refused {
    Rest(Fault),
    Other(Fault),
}

impl Refused {
    fn into_fault(self) -> Fault {
        match self {
            Refused::Rest(f) | Refused::Other(f) => f,
        }
    }
}

/// `f` with the password scrubbed from its message (servers echo commands).
fn scrubbed(mut f: Fault, password: &Secret) -> Fault {
    f.message = scrub(&f.message, &[password]);
    f
}

/// Runs one FTP operation under a timeout and turns its error into a [`Fault`].
/// What the pool asks of a login, so that a first contact with a server
/// costs what the tenth does (see `Pool::connect`).
pub(crate) trait LoginHooks: Send + Sync {
    /// Between USER and PASS: `false` gives up without sending the password.
    fn before_pass(&self) -> futures_util::future::BoxFuture<'_, bool>;
    /// The server took the password after `work` of its own time.
    fn passed(&self, work: Duration);
    /// Whether the server keeps pipelined commands in order, as far as
    /// its sessions found out by now.
    fn pipelining(&self) -> Option<bool>;
    /// May this session probe pipelining now, in its login folder? `Some`
    /// takes the server's probing turn and says where to note what the
    /// probe makes; [`LoginHooks::probed`] ends the turn.
    fn probe_turn(&self) -> Option<Litter>;
    /// The probe's verdict (`None`: it could not tell); `broke`: it cost
    /// the session (lost replies), and the login is made again.
    fn probed(&self, verdict: Option<bool>, broke: bool);
}

/// Where a session notes what its probes make before making it.
pub(crate) type Litter = (Arc<crate::ftp::learned::Learned>, crate::job::ServerKey);

/// A refused login says what to check.
fn login_refused(mut f: Fault) -> Fault {
    if f.cause == Cause::Refused && f.kind == FaultKind::Permanent && f.code == Some(530) {
        f.message.push_str(" (check login and password)");
    }
    f
}

async fn timed<T>(
    link: &mut Link,
    password: &Secret,
    limit: Duration,
    what: impl Display,
    fut: impl Future<Output = FtpResult<T>>,
) -> Result<T, Fault> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let mut fault = Fault::from_ftp(&what, &e);
            fault.message = scrub(&fault.message, &[password]);
            // A reply leaves the control connection in step; anything else may not.
            // After 421, and after vsftpd's "522 SSL connection failed", the server hangs up.
            let code = Fault::reply_code(&e);
            if !matches!(e, FtpError::UnexpectedResponse(_))
                || code == Some(421)
                // vsftpd's "522 SSL connection failed" (classified transient, as
                // a fresh session may well succeed), not any 522.
                || (code == Some(522) && fault.kind == FaultKind::Transient)
            {
                link.fail();
            }
            Err(fault)
        }
        Err(_) => {
            link.fail();
            Err(Fault::timeout(format!(
                "{what}: no reply within {} s",
                limit.as_secs()
            )))
        }
    }
}

fn passive_builder(
    connect_timeout: Duration,
    proxy: Option<Arc<crate::config::ProxySpec>>,
) -> impl Fn(SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = FtpResult<TcpStream>> + Send + Sync>>
       + Send
       + Sync
       + 'static {
    move |addr| {
        let proxy = proxy.clone();
        Box::pin(async move {
            crate::ftp::proxy::dial(proxy.as_deref(), addr, connect_timeout)
                .await
                .map_err(|e| {
                    FtpError::ConnectionError(std::io::Error::new(
                        e.kind(),
                        format!("data connection to {addr}: {e}"),
                    ))
                })
        })
    }
}

impl Session {
    /// Connects, secures (if asked), logs in and learns the server's features.
    /// `known`: what earlier sessions learned about the server (APPE, REST).
    pub async fn connect(
        spec: &ServerSpec,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeouts: Timeouts,
        known: &crate::ftp::learned::Facts,
        share: Option<crate::ftp::tls::Sharing>,
    ) -> Result<Session, Fault> {
        Session::connect_keeping(spec, tls, timeouts, known, share, &mut None, None).await
    }

    /// [`Session::connect`]; a session whose login timed out or broke is
    /// left in `kept`: the server may hold it a while yet (see
    /// `Pool::abandon`).
    pub(crate) async fn connect_keeping(
        spec: &ServerSpec,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeouts: Timeouts,
        known: &crate::ftp::learned::Facts,
        share: Option<crate::ftp::tls::Sharing>,
        kept: &mut Option<Session>,
        hooks: Option<&dyn LoginHooks>,
    ) -> Result<Session, Fault> {
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            timeouts.connect,
            tokio::net::lookup_host((spec.host.as_str(), spec.port)),
        )
        .await
        .map_err(|_| Fault::timeout(format!("resolve {}: timed out", spec.host)))?
        .map_err(|e| Fault::transient(format!("resolve {}: {e}", spec.host)))?
        .collect();
        if addrs.is_empty() {
            return Err(Fault::transient(format!(
                "resolve {}: no address",
                spec.host
            )));
        }
        // A name that `allowed_hosts` admits only through its networks must
        // resolve into them now, at the moment of connecting (a DNS answer
        // that changed since validation does not get around it).
        let addrs = match &spec.resolve_into {
            None => addrs,
            Some(nets) => {
                let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                    .into_iter()
                    .partition(|a| crate::job::confine::HostRules::allows_ip(nets, a.ip()));
                if ok.is_empty() {
                    let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                    return Err(Fault::permanent(format!(
                        "server.host: {} resolves to {}, not in allowed_hosts",
                        spec.host,
                        refused.join(", ")
                    )));
                }
                ok
            }
        };
        // A name can resolve to several addresses (`localhost` to ::1 and
        // 127.0.0.1); a server often listens on only one of them.
        // A server known to have no UTF8 in its FEAT gets its code page from
        // the first command (the at-once login then sends no OPTS UTF8).
        let learned;
        let spec = match (spec.names, known.utf8) {
            (Names::Auto { fallback }, Some(false)) => {
                learned = ServerSpec {
                    names: Names::Fixed(fallback),
                    ..spec.clone()
                };
                &learned
            }
            _ => spec,
        };
        let mut last = None;
        for addr in addrs {
            match Session::connect_to(
                spec,
                addr,
                tls.clone(),
                timeouts,
                known.pipelining,
                share.clone(),
                kept,
                hooks,
            )
            .await
            {
                Ok(mut s) => {
                    s.create_with_appe = known.appe != Some(false);
                    s.rest_works = known.rest != Some(false);
                    s.control.pipelining = known.pipelining;
                    s.queues_in_transfer = known.queues_in_transfer;
                    if s.data.mode == crate::config::DataMode::Auto && known.active == Some(true) {
                        s.active = true;
                    }
                    return Ok(s);
                }
                Err(mut f) if spec.tls == TlsMode::None && f.cause == Cause::TlsRequired => {
                    f.message
                        .push_str(" (the server requires TLS: set \"tls\": \"explicit\")");
                    return Err(f);
                }
                // Only a failure to reach this address is worth trying the next one.
                Err(f)
                    if f.kind == FaultKind::Transient
                        && matches!(f.cause, Cause::Broken | Cause::Timeout) =>
                {
                    last = Some(f)
                }
                Err(f) => return Err(f),
            }
        }
        Err(last.expect("at least one address was tried"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn connect_to(
        spec: &ServerSpec,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeouts: Timeouts,
        pipelining: Option<bool>,
        share: Option<crate::ftp::tls::Sharing>,
        kept: &mut Option<Session>,
        hooks: Option<&dyn LoginHooks>,
    ) -> Result<Session, Fault> {
        let server = &spec.to_string();
        let mut link = Link::Sound;
        // Each control connection gets its own TLS session cache: its data
        // connections must resume its session, not another connection's.
        let (tls, tls_cache) = match (&tls, spec.tls) {
            (Some(base), TlsMode::Explicit | TlsMode::Implicit) => {
                let (cfg, cache) = crate::ftp::tls::for_session(base, share);
                (Some(cfg), Some(cache))
            }
            _ => (None, None),
        };
        let outbox = crate::ftp::tls::Outbox::default();
        let connector = || {
            let cache = tls_cache.clone()?;
            tls.clone()
                .map(|c| FtpsConnector::new(c, outbox.clone(), cache))
        };
        let data_tls = match &tls {
            Some(cfg) => Some((
                suppaftp::tokio_rustls::TlsConnector::from(cfg.clone()),
                ServerName::try_from(spec.host.clone()).map_err(|e| {
                    Fault::permanent(format!("server.host {}: not a TLS name: {e}", spec.host))
                })?,
            )),
            None => None,
        };
        let mut ftp: Ftp = match spec.tls {
            TlsMode::Implicit => {
                let Some(conn) = connector() else {
                    return Err(Fault::permanent("implicit TLS without a TLS configuration"));
                };
                let mut ftp = timed(
                    &mut link,
                    &spec.password,
                    timeouts.connect,
                    format!("connect {server} (implicit TLS)"),
                    Ftp::connect_secure_implicit(addr, conn, &spec.host),
                )
                .await
                .map_err(|f| tls_hint(f, spec))?;
                // suppaftp leaves data connections unprotected in implicit
                // mode; servers that force TLS on data refuse them, and
                // suppaftp would start TLS on them anyway. Ask for PROT P.
                for cmd in ["PBSZ 0", "PROT P"] {
                    let r = timed(
                        &mut link,
                        &spec.password,
                        timeouts.command,
                        cmd,
                        ftp.custom_command(cmd, &[Status::CommandOk]),
                    )
                    .await;
                    match r {
                        Ok(_) => {}
                        // Some implicit servers protect data by default and do not know PROT.
                        Err(f) if !link.is_broken() => {
                            tracing::debug!(server, error = %f, "refused")
                        }
                        Err(f) => return Err(f),
                    }
                }
                ftp
            }
            _ => {
                let stream = crate::ftp::proxy::dial(spec.proxy.as_deref(), addr, timeouts.connect)
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::TimedOut => {
                            Fault::timeout(format!("connect {server}: {e}"))
                        }
                        _ => Fault::transient(format!("connect {server} ({addr}): {e}")),
                    })?;
                let ftp = timed(
                    &mut link,
                    &spec.password,
                    timeouts.connect,
                    format!("connect {server}"),
                    Ftp::connect_with_stream(stream),
                )
                .await?;
                if spec.tls == TlsMode::Explicit {
                    let Some(conn) = connector() else {
                        return Err(Fault::permanent("explicit TLS without a TLS configuration"));
                    };
                    timed(
                        &mut link,
                        &spec.password,
                        timeouts.connect,
                        format!("AUTH TLS with {server}"),
                        ftp.into_secure(conn, &spec.host),
                    )
                    .await
                    .map_err(|f| tls_hint(f, spec))?
                } else {
                    ftp
                }
            }
        };
        if spec.tls == TlsMode::Implicit {
            let _ = ftp.get_ref().await.set_nodelay(true);
        }
        if let Some(cache) = &tls_cache {
            tracing::debug!(
                server,
                resumed = cache.control_resumed(),
                "control connection secured"
            );
        }
        // Servers behind NAT advertise private addresses in PASV; the control
        // connection's address is the one known to work (curl does the same).
        ftp.set_passive_nat_workaround(true);
        ftp.set_mode(Mode::ExtendedPassive);
        let ftp = ftp.passive_stream_builder(passive_builder(timeouts.connect, spec.proxy.clone()));

        let mut session = Session {
            control: Control {
                ftp,
                timeouts,
                password: spec.password.clone(),
                link: Link::Sound,
                rtt: Duration::ZERO,
                // Known from an earlier session: the login's last commands go out at once.
                pipelining,
                tls: spec.tls != TlsMode::None,
                outbox,
                owed: Default::default(),
                page: crate::config::CodePage::Utf8,
            },
            names: spec.names,
            proxy: spec.proxy.clone(),
            data: spec.data,
            active: spec.data.mode == crate::config::DataMode::Active,
            went_active: false,
            feat_seen: false,
            eprt: true,
            features: Features::default(),
            epsv: true,
            create_with_appe: true,
            rest_works: true,
            last_used: Instant::now(),
            last_mkd_refusal: None,
            counted: None,
            seat: None,
            phase: Phase::Ready(Ahead::default()),
            tls_cache,
            data_tls,
            peer: addr,
            tickets_on_data: true,
            tickets_seen_on_data: false,
            hash_algo: None,
            login_work: Duration::ZERO,
            litter: None,
            made: Vec::new(),
            queues_in_transfer: None,
            writing: None,
        };
        if let Err(f) = session.login(spec, server, hooks).await {
            // A login held back before its password is closed politely by
            // the pool, as one that broke is.
            if session.control.link.is_broken() {
                *kept = Some(session);
            }
            return Err(f);
        }
        Ok(session)
    }

    async fn login(
        &mut self,
        spec: &ServerSpec,
        server: &str,
        hooks: Option<&dyn LoginHooks>,
    ) -> Result<(), Fault> {
        let t = self.control.timeouts.command;
        let what = || format!("login to {server} as {}", spec.login);
        if let Some(site) = &spec.virtual_host {
            // IIS virtual hosts: the site is chosen before the user.
            self.command(format!("HOST {site}"), &[Status::Ready, Status::CommandOk])
                .await
                .map_err(|f| f.context(format!("virtual_host {site:?}")))?;
        }
        let started = Instant::now();
        let user = timed(
            &mut self.control.link,
            &self.control.password,
            t,
            what(),
            self.control.ftp.custom_command(
                format!("USER {}", spec.login),
                &[Status::LoggedIn, Status::NeedPassword],
            ),
        )
        .await
        .map_err(login_refused)?;
        let user_time = started.elapsed();
        let mut login_time = user_time;
        if user.status == Status::NeedPassword {
            if let Some(h) = hooks {
                if !h.before_pass().await {
                    self.control.link.give_up_alive();
                    return Err(Fault::transient(format!(
                        "{}: held back before the password (logins cost the server dearly)",
                        what()
                    )));
                }
            }
            let started = Instant::now();
            // Written here, not by suppaftp, whose debug log would show it.
            let pass = format!("PASS {}", self.control.password.expose());
            self.control
                .write_commands(&[pass])
                .await
                .map_err(|mut f| {
                    f.message = scrub(&f.message, &[&self.control.password]);
                    f
                })?;
            timed(
                &mut self.control.link,
                &self.control.password,
                t,
                what(),
                self.control.ftp.read_response_in(&[Status::LoggedIn]),
            )
            .await
            .map_err(login_refused)?;
            let pass_time = started.elapsed();
            login_time += pass_time;
            // USER costs a server nothing: its reply took one round trip.
            if let Some(h) = hooks {
                h.passed(pass_time.saturating_sub(user_time));
            }
        }
        if let Some(h) = hooks {
            self.probe_at_login(h).await?;
        }
        if self.control.pipelines() {
            return self.after_login_at_once(server, login_time).await;
        }
        // An odd or failing FEAT means "features unknown", never a failed login.
        // suppaftp reads the whole FEAT reply before parsing it, so a reply it
        // cannot parse (feature lines not indented, say) leaves the connection in step.
        match tokio::time::timeout(t, self.control.ftp.feat()).await {
            Ok(Ok(feat)) => {
                self.features =
                    Features::parse(feat.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
                self.feat_seen = true;
            }
            Ok(Err(FtpError::UnexpectedResponse(r))) => {
                tracing::debug!(server, reply = %String::from_utf8_lossy(&r.body).trim(), "FEAT refused; features unknown");
            }
            Ok(Err(FtpError::BadResponse)) => {
                tracing::debug!(server, "FEAT reply not understood; features unknown");
            }
            Ok(Err(e)) => {
                self.control.link.fail();
                return Err(Fault::from_ftp(format!("FEAT on {server}"), &e));
            }
            Err(_) => {
                self.control.link.fail();
                return Err(Fault::timeout(format!(
                    "FEAT on {server}: no reply within {} s",
                    t.as_secs()
                )));
            }
        }
        let page = self.names.resolve(self.features.utf8);
        self.control.set_page(page).await;
        if self.features.utf8 && page == crate::config::CodePage::Utf8 {
            let _ = timed(
                &mut self.control.link,
                &self.control.password,
                t,
                "OPTS UTF8 ON",
                self.control.ftp.opts("UTF8", Some("ON")),
            )
            .await;
        }
        let started = Instant::now();
        timed(
            &mut self.control.link,
            &self.control.password,
            t,
            "TYPE I",
            self.control.ftp.transfer_type(FileType::Binary),
        )
        .await?;
        self.control.rtt = started.elapsed();
        self.logged_in(server, login_time, "one command at a time");
        Ok(())
    }

    /// On a first contact, one session probes pipelining in its login
    /// folder before FEAT (one round trip), and the others, still logging
    /// in, take the verdict and pipeline the rest of their login and their
    /// first upload: a first contact then costs about what the tenth does.
    /// A folder where the probe may not make a directory gives no verdict;
    /// the first entry with work queued behind it probes in its own folder.
    async fn probe_at_login(&mut self, h: &dyn LoginHooks) -> Result<(), Fault> {
        if self.control.pipelining.is_none() {
            self.control.pipelining = h.pipelining();
        }
        if self.control.pipelining.is_some() {
            return Ok(());
        }
        let Some(litter) = h.probe_turn() else {
            return Ok(());
        };
        self.litter = Some(litter);
        let verdict = self.probe_pipelining("").await;
        let broke = self.control.link.is_broken();
        h.probed(verdict.as_ref().ok().copied().flatten(), broke);
        let verdict = verdict?;
        if broke {
            return Err(Fault::transient(
                "the pipelining probe lost replies: logging in again without it",
            ));
        }
        self.control.pipelining = verdict;
        Ok(())
    }

    /// The server's own work in the login just made: its time less the two
    /// round trips of USER and PASS, one round trip being what TYPE I took.
    fn logged_in(&mut self, server: &str, login_time: Duration, how: &str) {
        self.login_work = login_time.saturating_sub(2 * self.control.rtt);
        tracing::debug!(
            server,
            login_ms = login_time.as_millis() as u64,
            work_ms = self.login_work.as_millis() as u64,
            how,
            "logged in"
        );
    }

    /// The server refused EPSV: PASV from now on, for suppaftp's own
    /// transfers (none left on the upload path) too.
    fn epsv_refused(&mut self, reply: &str) {
        tracing::debug!(reply, "EPSV refused, using PASV from now on");
        self.epsv = false;
        self.control.ftp.set_mode(Mode::Passive);
    }

    /// The rest of a login where the server is known to keep pipelined
    /// commands in order: FEAT, OPTS UTF8, TYPE I and the first upload's
    /// EPSV in one round trip instead of four. OPTS UTF8 goes out before
    /// FEAT has said UTF8 is there; a server without it refuses it, and a
    /// refusal changes nothing (it is ignored where FEAT is read first too).
    async fn after_login_at_once(
        &mut self,
        server: &str,
        login_time: Duration,
    ) -> Result<(), Fault> {
        // A server set to a code page is never asked for UTF-8.
        let utf8 = !matches!(self.names, Names::Fixed(p) if p != CodePage::Utf8);
        let commands: Vec<String> = ["FEAT", "OPTS UTF8 ON", "TYPE I", "EPSV"]
            .into_iter()
            .filter(|c| utf8 || !c.starts_with("OPTS"))
            .map(String::from)
            .collect();
        let started = Instant::now();
        self.control.write_commands(&commands).await?;
        let feat = self.control.reply("FEAT").await?;
        if feat.code == 211 {
            self.features = Features::parse(crate::ftp::reply::feat_pairs(&feat.text()));
            self.feat_seen = true;
        } else {
            tracing::debug!(server, reply = %feat.text(), "FEAT refused; features unknown");
        }
        if utf8 {
            self.control.reply("OPTS UTF8 ON").await?;
        }
        let page = self.names.resolve(self.features.utf8);
        self.control.set_page(page).await;
        let binary = self.control.reply("TYPE I").await?;
        self.control.rtt = started.elapsed();
        if !binary.ok() {
            return Err(binary.fault("TYPE I"));
        }
        let epsv = self.control.reply("EPSV").await?;
        if matches!(epsv.code, 500 | 501 | 502 | 522) {
            self.epsv_refused(&epsv.text());
        }
        self.phase = Phase::Ready(Ahead {
            size: None,
            passive: self.passive_of(&epsv),
        });
        self.logged_in(server, login_time, "FEAT, OPTS, TYPE and EPSV pipelined");
        Ok(())
    }

    /// Can the server's code page write `path`? A name it cannot is a
    /// permanent fault that names the character (never a lossy upload).
    pub(crate) fn check_name(&self, path: &str) -> Result<(), Fault> {
        crate::ftp::codepage::representable(self.control.page, path).map_err(Fault::permanent)
    }

    /// Is an idle session still alive? Servers drop idle control connections.
    pub(crate) async fn noop(&mut self) -> bool {
        if self.control.settle().await.is_err() {
            return false;
        }
        timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.command,
            "NOOP",
            self.control.ftp.noop(),
        )
        .await
        .is_ok()
    }

    /// Size of a remote file, or `None` when the server says it does not exist.
    pub async fn size(&mut self, path: &str) -> Result<Option<u64>, Fault> {
        self.control.settle().await?;
        let t = self.control.timeouts.command;
        let what = format!("SIZE {path}");
        match timed(
            &mut self.control.link,
            &self.control.password,
            t,
            &what,
            self.control.ftp.custom_command(&what, &[Status::File]),
        )
        .await
        {
            Ok(resp) => crate::ftp::reply::size(&String::from_utf8_lossy(&resp.body))
                .map(Some)
                .ok_or_else(|| {
                    Fault::transient(format!(
                        "{what}: reply not understood: {}",
                        scrub(
                            String::from_utf8_lossy(&resp.body).trim(),
                            &[&self.control.password]
                        )
                    ))
                }),
            Err(f) if matches!(f.code, Some(550 | 450 | 553)) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// `mkdir -p`: creates `dir` and its parents, remembering what exists.
    pub async fn mkdir_p(&mut self, dir: &str, known: &DirCache) -> Result<(), Fault> {
        let dir = normalize_dir(dir);
        if dir.is_empty() || dir == "/" || known.lock().unwrap().contains(&dir) {
            return Ok(());
        }
        self.control.settle().await?;
        let prefixes = dir_prefixes(&dir);
        if self.control.pipelines() {
            // Every missing level at once, parents first: one round trip.
            let missing: Vec<String> = {
                let known = known.lock().unwrap();
                prefixes
                    .iter()
                    .filter(|p| !known.contains(*p))
                    .cloned()
                    .collect()
            };
            let commands: Vec<String> = missing.iter().map(|p| format!("MKD {p}")).collect();
            let replies = self.control.batch(&commands).await?;
            for (p, r) in missing.into_iter().zip(replies) {
                match r.code {
                    200..=299 => {}
                    // 550/521 mostly mean "exists"; if it was a refusal, STOR will say so.
                    500..=599 => {
                        self.last_mkd_refusal = Some(
                            scrubbed(r.fault(format!("MKD {p}")), &self.control.password).message,
                        )
                    }
                    _ => {
                        return Err(scrubbed(
                            r.fault(format!("MKD {p}")),
                            &self.control.password,
                        ))
                    }
                }
                known.lock().unwrap().insert(p);
            }
            return Ok(());
        }
        // Try the whole path first: when only the leaf is missing that is one round trip.
        let t = self.control.timeouts.command;
        if timed(
            &mut self.control.link,
            &self.control.password,
            t,
            format!("MKD {dir}"),
            self.control.ftp.mkdir(&dir),
        )
        .await
        .is_ok()
        {
            known.lock().unwrap().extend(prefixes);
            return Ok(());
        }
        if self.control.link.is_broken() {
            return Err(Fault::transient(format!("MKD {dir}: connection lost")));
        }
        for p in prefixes {
            if known.lock().unwrap().contains(&p) {
                continue;
            }
            match timed(
                &mut self.control.link,
                &self.control.password,
                t,
                format!("MKD {p}"),
                self.control.ftp.mkdir(&p),
            )
            .await
            {
                Ok(()) => {}
                // 550/521 mostly mean "exists"; if it was a refusal, STOR will say so.
                Err(f) if f.kind == FaultKind::Permanent => self.last_mkd_refusal = Some(f.message),
                Err(f) => return Err(f),
            }
            known.lock().unwrap().insert(p);
        }
        Ok(())
    }

    /// Sends one command and waits (`timeouts.command`) for one of the `ok` replies; its text.
    async fn command(&mut self, command: String, ok: &[Status]) -> Result<String, Fault> {
        let resp = timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.command,
            &command,
            self.control.ftp.custom_command(command.clone(), ok),
        )
        .await?;
        Ok(String::from_utf8_lossy(&resp.body).trim().to_string())
    }

    /// How the next data connection is made: to the server's passive port,
    /// or from the server to our listener (active mode). `data_mode: auto`
    /// turns active where the server refuses both EPSV and PASV.
    async fn data_way(&mut self) -> Result<DataWay, Fault> {
        if !self.active {
            match self.passive().await {
                Ok(addr) => return Ok(DataWay::Passive(addr)),
                Err(f)
                    if self.data.mode == crate::config::DataMode::Auto
                        && self.proxy.is_none()
                        && !self.control.link.is_broken()
                        && f.verb.as_deref() == Some("PASV")
                        && matches!(f.code, Some(500 | 501 | 502 | 504 | 425 | 550)) =>
                {
                    tracing::info!(reply = %f.message, "the server refuses passive mode; using active mode");
                    self.active = true;
                    self.went_active = true;
                }
                Err(f) => return Err(f),
            }
        }
        // Replies owed to an earlier entry's rename come first.
        self.control.settle().await?;
        let (listener, local) = crate::ftp::active::listen(
            self.control
                .ftp
                .get_ref()
                .await
                .local_addr()
                .map_err(|e| Fault::transient(format!("active mode: the local address: {e}")))?
                .ip(),
            self.data.ports,
        )?;
        if self.eprt {
            let cmd = crate::ftp::active::eprt(local);
            match self.command(cmd, &[Status::CommandOk]).await {
                Ok(_) => return Ok(DataWay::Active(listener)),
                Err(f)
                    if local.is_ipv4()
                        && !self.control.link.is_broken()
                        && matches!(f.code, Some(500 | 501 | 502 | 522)) =>
                {
                    self.eprt = false;
                }
                Err(f) => return Err(f),
            }
        }
        self.command(crate::ftp::active::port(local)?, &[Status::CommandOk])
            .await?;
        Ok(DataWay::Active(listener))
    }

    /// Where the next passive data connection goes: EPSV, or PASV once the
    /// server has refused EPSV. The host is always the control connection's
    /// peer and only the port is taken from the reply: servers behind NAT
    /// advertise private addresses in PASV (curl does the same).
    async fn passive(&mut self) -> Result<SocketAddr, Fault> {
        let ahead = match &mut self.phase {
            Phase::Ready(ahead) => ahead.passive.take(),
            Phase::Transfer { .. } => None,
        };
        if let Some((addr, when)) = ahead {
            if when.elapsed() < PASSIVE_AHEAD_FRESH {
                return Ok(addr);
            }
        }
        self.control.settle().await?;
        if self.epsv {
            match self
                .command("EPSV".into(), &[Status::ExtendedPassiveMode])
                .await
            {
                Ok(reply) => {
                    let port = crate::ftp::reply::epsv_port(&reply).ok_or_else(|| {
                        Fault::transient(format!("EPSV: no port in the reply {reply:?}"))
                    })?;
                    return Ok(SocketAddr::new(self.peer.ip(), port));
                }
                // 550: vsftpd with pasv_enable=NO ("Permission denied").
                Err(f)
                    if !self.control.link.is_broken()
                        && matches!(f.code, Some(500 | 501 | 502 | 522 | 550)) =>
                {
                    self.epsv_refused(&f.message);
                }
                Err(f) => return Err(f),
            }
        }
        let reply = self.command("PASV".into(), &[Status::PassiveMode]).await?;
        let addr = crate::ftp::reply::pasv_addr(&reply)
            .ok_or_else(|| Fault::transient(format!("PASV: no address in the reply {reply:?}")))?;
        Ok(SocketAddr::new(self.peer.ip(), addr.port()))
    }

    /// Opens a data connection for `command` (STOR, APPE, RETR, NLST):
    /// passive address, TCP connect, then `REST rest` (if any) and the
    /// command back to back, while the TLS handshake, started as soon as the
    /// connection is up, runs alongside them (see [`super::data`]).
    async fn open_data(&mut self, command: String, rest: Option<u64>) -> Result<Upload, Refused> {
        let way = self.data_way().await.map_err(Refused::Other)?;
        let tls = self.data_tls.clone();
        let proxy = self.proxy.clone();
        let connect_timeout = self.control.timeouts.connect;
        let accept_timeout = self.control.timeouts.command;
        let server_ip = self.peer.ip();
        // The TCP connect, and the TLS handshake after it, run alongside
        // REST and the command: over a WAN link the connect's round trip and
        // the command's overlap (the server accepts once it has the command).
        // In active mode the server connects once it has the command.
        let handshake = async move {
            let tcp = match way {
                DataWay::Passive(addr) => {
                    crate::ftp::proxy::dial(proxy.as_deref(), addr, connect_timeout)
                        .await
                        .map_err(|e| {
                            DataFailure::Connect(std::io::Error::new(
                                e.kind(),
                                format!("data connection to {addr}: {e}"),
                            ))
                        })?
                }
                DataWay::Active(listener) => {
                    crate::ftp::active::accept(listener, server_ip, accept_timeout)
                        .await
                        .map_err(DataFailure::Connect)?
                }
            };
            match tls {
                Some((connector, name)) => connector
                    .connect(name, tcp)
                    .await
                    .map(|s| Upload::Tls(Box::new(s)))
                    .map_err(DataFailure::Tls),
                None => Ok(Upload::Plain(tcp)),
            }
        };
        tokio::pin!(handshake);
        let mut shaken = None;
        let refusal_grace = self.control.timeouts.command.min(REFUSAL_GRACE);
        let reply = {
            let commands = async {
                if rest.is_none() && !self.control.owed.is_empty() {
                    return self
                        .control
                        .behind_owed(&command)
                        .await
                        .map_err(Refused::Other);
                }
                self.control.settle().await.map_err(Refused::Other)?;
                if let Some(offset) = rest {
                    self.command(format!("REST {offset}"), &[Status::RequestFilePending])
                        .await
                        .map_err(Refused::Rest)?;
                }
                self.command(command.clone(), &[Status::AboutToSend, Status::AlreadyOpen])
                    .await
                    .map_err(Refused::Other)
            };
            tokio::pin!(commands);
            loop {
                tokio::select! {
                    r = &mut commands => break Ok(r),
                    r = &mut handshake, if shaken.is_none() => match r {
                        Err(DataFailure::Connect(e)) => {
                            // A server that refuses the command closes its
                            // passive port, and a connect slower than its
                            // refusal (a loaded machine) fails: the refusal,
                            // if it comes, is the answer, and the session
                            // stays in step (proftpd refuses REST beyond the
                            // end at STOR, the segment probe's verdict).
                            match tokio::time::timeout(refusal_grace, &mut commands).await {
                                Ok(Err(refused)) => break Ok(Err(refused)),
                                _ => break Err(e),
                            }
                        }
                        r => shaken = Some(r),
                    }
                }
            }
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // No data connection: the command's reply (a refusal, once
                // the server's accept times out) is owed to a session that
                // is dropped for it.
                self.control.link.fail();
                return Err(Refused::Other(Fault::transient(e.to_string())));
            }
        };
        // A refused command drops the connection, handshake and all.
        reply?;
        let shaken = match shaken {
            Some(r) => r,
            None => tokio::time::timeout(self.control.timeouts.command, &mut handshake)
                .await
                .unwrap_or_else(|_| {
                    Err(DataFailure::Tls(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake on the data connection timed out",
                    )))
                }),
        };
        match shaken {
            Ok(conn) => {
                self.phase = Phase::Transfer { size_after: None };
                Ok(conn)
            }
            Err(DataFailure::Connect(e)) => {
                self.control.link.fail();
                Err(Refused::Other(Fault::transient(e.to_string())))
            }
            Err(DataFailure::Tls(e)) => {
                // The server waits on a transfer that will not happen; its reply is owed.
                self.control.link.fail();
                Err(Refused::Other(Fault::from_ftp(
                    &command,
                    &FtpError::SecureError(e.to_string()),
                )))
            }
        }
    }

    /// Opens an upload to `path`; with `append`, adds to what the server
    /// already has; with `rest`, writes from that offset.
    async fn store(
        &mut self,
        path: &str,
        append: bool,
        rest: Option<u64>,
    ) -> Result<Upload, Refused> {
        let verb = if append { "APPE" } else { "STOR" };
        match self.open_data(format!("{verb} {path}"), rest).await {
            Ok(up) => {
                self.writing = Some(path.to_string());
                Ok(up)
            }
            Err(Refused::Other(mut f)) => {
                if append && !self.control.link.is_broken() && f.code.is_some_and(|c| c >= 400) {
                    // A server that refuses APPE once (proftpd without
                    // AllowStoreRestart) refuses it every time.
                    self.create_with_appe = false;
                }
                if f.is_permanent() {
                    if let Some(mkd) = self.last_mkd_refusal.take() {
                        f.message = format!("{} (earlier, {mkd})", f.message);
                    }
                }
                Err(Refused::Other(f))
            }
            Err(rest) => Err(rest),
        }
    }

    /// Opens an upload that continues `path` at byte `offset` (a resume):
    /// `REST offset` then `STOR` where FEAT lists `REST STREAM`, else `APPE`.
    ///
    /// REST names the offset, where APPE means "wherever the file ends now",
    /// which is wrong while the server still writes a dead connection's last
    /// bytes. pure-ftpd truncates the file where a REST+STOR write ends, which
    /// does no harm here: a resumed write runs to the end of the file.
    ///
    /// At offset 0 (a new temp file) the file is created with APPE, not STOR.
    /// A STOR truncates the file it opens, and on ext4 truncating a file to
    /// zero makes its close start writeback of everything written to it
    /// (`auto_da_alloc`): vsftpd on ext4 spends a tenth of its CPU on that
    /// for small files, and holds the `226` of a 1 GiB upload until the
    /// writeback is under way. APPE creates the file without truncating it.
    /// If a stale temp file was there after all, the appended bytes make it
    /// too big, the size check after the upload says so, and the next
    /// attempt deletes it. A server that refuses APPE gets STOR from then on.
    pub async fn store_at(&mut self, path: &str, offset: u64) -> Result<Upload, Fault> {
        if offset == 0 {
            if self.create_with_appe {
                match self.store(path, true, None).await {
                    Err(Refused::Other(f)) if !self.create_with_appe => {
                        tracing::debug!(error = %f, "APPE refused; creating files with STOR");
                    }
                    other => return other.map_err(Refused::into_fault),
                }
            }
            return self
                .store(path, false, None)
                .await
                .map_err(Refused::into_fault);
        }
        if self.features.rest_stream && self.rest_works {
            match self.store(path, false, Some(offset)).await {
                Err(Refused::Rest(f)) if !self.control.link.is_broken() => {
                    tracing::debug!(error = %f, "REST refused; resuming with APPE");
                    if f.not_implemented() {
                        self.rest_works = false;
                    }
                }
                other => return other.map_err(Refused::into_fault),
            }
        }
        self.store(path, true, None)
            .await
            .map_err(Refused::into_fault)
    }

    /// Opens an upload that writes `path` from byte `offset` on, exactly
    /// there: `REST offset` + `STOR`, and an error if REST is refused. Never
    /// APPE, which writes wherever the file ends now: right for a resume,
    /// wrong for one segment among several. Offset 0 is a plain STOR.
    pub(crate) async fn store_exact(&mut self, path: &str, offset: u64) -> Result<Upload, Fault> {
        self.store(path, false, (offset > 0).then_some(offset))
            .await
            .map_err(Refused::into_fault)
    }

    /// Closes an upload's data connection and reads the server's verdict on
    /// the transfer. On TLS, what the server sends until it closes its side
    /// is read meanwhile: TLS 1.3 tickets for the next data connections.
    pub async fn finish(&mut self, mut upload: Upload, path: &str) -> Result<(), Fault> {
        let received = self.tls_cache.as_ref().map(|c| c.received());
        let closed = tokio::time::timeout(self.control.timeouts.data, upload.close_write()).await;
        let asked = match &mut self.phase {
            Phase::Transfer { size_after } => size_after.take(),
            Phase::Ready(_) => None,
        };
        let size_after = asked.filter(|_| {
            self.control.pipelines()
                && self.queues_in_transfer == Some(true)
                && self.epsv
                && matches!(upload, Upload::Plain(_))
                && matches!(closed, Ok(Ok(())))
        });
        if let Some(file) = size_after {
            return self.finish_then_size(upload, path, file).await;
        }
        let verdict = {
            let reply = timed(
                &mut self.control.link,
                &self.control.password,
                self.control.timeouts.data,
                format!("finishing upload of {path}"),
                self.control.ftp.read_response_in(&[
                    Status::ClosingDataConnection,
                    Status::RequestedFileActionOk,
                ]),
            );
            let drain = upload.drain(self.control.timeouts.data);
            tokio::pin!(reply, drain);
            let mut drained = false;
            let verdict = loop {
                tokio::select! {
                    r = &mut reply => break r,
                    _ = &mut drain, if !drained => drained = true,
                }
            };
            if !drained {
                let _ = tokio::time::timeout(DRAIN_AFTER_REPLY, drain).await;
            }
            verdict
        };
        // Read, or the session is marked broken: either way nothing is owed.
        self.phase = Phase::Ready(Ahead::default());
        if let (Some(cache), Some(before), Upload::Tls(_)) = (&self.tls_cache, received, &upload) {
            if cache.is_tls13() && cache.received() > before {
                self.tickets_seen_on_data = true;
            }
            if self.tickets_on_data && cache.is_tls13() && cache.received() == before {
                tracing::debug!("no TLS 1.3 ticket on a data connection: this server gives them on the control connection only");
                self.tickets_on_data = false;
            }
        }
        drop(upload);
        verdict?;
        self.writing = None;
        match closed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fault::transient(format!(
                "closing the data connection of {path}: {e}"
            ))),
            Err(_) => {
                self.control.link.fail();
                Err(Fault::transient(format!(
                    "closing the data connection of {path}: no progress for {} s",
                    self.control.timeouts.data.as_secs()
                )))
            }
        }
    }

    /// [`Session::finish`] with `SIZE file` and the next upload's `EPSV`
    /// sent as soon as the data connection is closed, behind the transfer
    /// (a server that queues commands during a transfer answers them after
    /// its 226). The size is kept for [`Session::size_then_passive`].
    async fn finish_then_size(
        &mut self,
        upload: Upload,
        path: &str,
        file: String,
    ) -> Result<(), Fault> {
        let size_cmd = format!("SIZE {file}");
        let sent = self
            .control
            .write_commands(&[size_cmd.clone(), "EPSV".to_string()])
            .await;
        // The transfer's verdict and the two replies behind it are read
        // next, or the session breaks: nothing is owed past this either way.
        self.phase = Phase::Ready(Ahead::default());
        drop(upload);
        sent?;
        let verdict = timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.data,
            format!("finishing upload of {path}"),
            self.control
                .ftp
                .read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]),
        )
        .await;
        // The two replies behind it are owed either way.
        let size = self.control.reply(&size_cmd).await?;
        let epsv = self.control.reply("EPSV").await?;
        verdict?;
        self.writing = None;
        let size = self.size_reply(&size, &file);
        self.phase = Phase::Ready(Ahead {
            size: Some((file, size)),
            passive: self.passive_of(&epsv),
        });
        Ok(())
    }

    /// Asks for `SIZE file` (and the next EPSV) to go out as soon as the
    /// open upload's data connection closes, where the server allows it
    /// (see [`Session::finish`]). Nothing without an open upload.
    pub(crate) fn size_at_close(&mut self, file: &str) {
        if let Phase::Transfer { size_after } = &mut self.phase {
            *size_after = Some(file.to_string());
        }
    }

    /// Does the server queue commands sent during a transfer until the
    /// transfer's reply? Uploads a probe file in `dir` and, before closing
    /// its data connection, sends `SIZE` for it and waits: a server that
    /// reads its control connection during transfers (and answers, or
    /// refuses "transfer in progress", or aborts) shows it now, with the
    /// transfer held open, not by the luck of a race. `None`: no verdict
    /// (the probe could not upload here).
    pub(crate) async fn probe_queueing(&mut self, dir: &str) -> Result<Option<bool>, Fault> {
        // On TLS the SIZE would leave only with the next read, after the
        // transfer: the probe could not tell.
        if !self.control.pipelines() || self.control.tls {
            return Ok(None);
        }
        self.control.settle().await?;
        let tag = hex::encode(rand::random::<[u8; 6]>());
        let probe = crate::job::join_remote(dir, &format!(".ftpdrop-probe-{tag}"));
        let made = [probe.clone()];
        self.note_litter(&made);
        let mut up = match self.store_exact(&probe, 0).await {
            Ok(up) => up,
            Err(f) if !self.control.link.is_broken() => {
                tracing::debug!(error = %f, "queueing probe: cannot upload here; no verdict");
                self.cleared_litter(&made);
                return Ok(None);
            }
            Err(f) => return Err(f),
        };
        use tokio::io::AsyncWriteExt;
        let wrote = up.write_all(b"probe").await.and(up.flush().await);
        let size_cmd = format!("SIZE {probe}");
        let sent = self
            .control
            .write_commands(std::slice::from_ref(&size_cmd))
            .await;
        let hold = (self.control.rtt * 2 + Duration::from_millis(20)).min(QUEUEING_PROBE_WAIT);
        tokio::time::sleep(hold).await;
        let closed = up.close_write().await;
        self.phase = Phase::Ready(Ahead::default());
        drop(up);
        sent?;
        let wait = self.control.probe_wait() + hold;
        let replies = async {
            let first = self.control.probe_reply("the probe upload", wait).await?;
            let second = self.control.probe_reply(&size_cmd, wait).await?;
            Ok::<_, Fault>((first, second))
        }
        .await;
        let (first, second) = match replies {
            Ok(r) => r,
            Err(f) if self.control.link.is_broken() => {
                tracing::info!(error = %f, "a command sent during a transfer lost its reply: SIZE waits for the transfer's reply");
                return Ok(Some(false));
            }
            Err(f) => return Err(f),
        };
        self.writing = None;
        let in_order = wrote.is_ok()
            && closed.is_ok()
            && matches!(first.code, 226 | 250)
            && second.code == 213
            && crate::ftp::reply::size(&second.text()) == Some(5);
        if !in_order {
            tracing::info!(
                first = %first.text(), second = %second.text(),
                "the server answers commands during a transfer: SIZE waits for the transfer's reply"
            );
        }
        if self.delete(&probe).await.is_ok() {
            self.cleared_litter(&made);
        }
        Ok(Some(in_order))
    }

    /// A probe is about to make `paths` (directories end in `/`): recorded
    /// first, so that a crash leaves a note for the next run to clean up.
    pub(crate) fn note_litter(&mut self, paths: &[String]) {
        self.made.extend(paths.iter().cloned());
        if let Some((learned, key)) = &self.litter {
            learned.add_litter(key, paths);
        }
    }

    /// What a probe made is gone again.
    pub(crate) fn cleared_litter(&mut self, paths: &[String]) {
        self.made.retain(|p| !paths.contains(p));
        if let Some((learned, key)) = &self.litter {
            learned.clear_litter(key, paths);
        }
    }

    /// Can an upload continue a partial file here? Not on a server known to
    /// implement neither REST (with STOR) nor APPE: there it starts over.
    pub(crate) fn can_resume(&self) -> bool {
        (self.features.rest_stream && self.rest_works) || self.create_with_appe
    }

    /// How the control connection's TLS handshake went (`None` without TLS).
    pub fn control_tls_handshake(&self) -> Option<rustls::HandshakeKind> {
        self.tls_cache.as_ref()?.control_handshake()
    }

    /// Did the control connection's TLS handshake resume an earlier control
    /// connection's session?
    pub fn control_tls_resumed(&self) -> bool {
        self.tls_cache.as_ref().is_some_and(|c| c.control_resumed())
    }

    /// Is a data connection of this session still open (its task was cancelled)?
    pub(crate) fn mid_transfer(&self) -> bool {
        matches!(self.phase, Phase::Transfer { .. })
    }

    /// This server hands out TLS 1.3 tickets on the control connection only:
    /// each data connection here uses up one of the few it gave at login.
    /// The server hands out TLS 1.3 tickets on data connections too: a
    /// TLS 1.3 session never runs out of them.
    pub(crate) fn tls13_tickets_on_data(&self) -> bool {
        self.tickets_on_data && self.tickets_seen_on_data
    }

    pub(crate) fn tls13_tickets_on_control_only(&self) -> bool {
        !self.tickets_on_data
    }

    /// No TLS session left for a data connection to resume: a server that
    /// requires resumption (proftpd's mod_tls, vsftpd's `require_ssl_reuse`)
    /// would refuse the next one, so the session must not be reused.
    pub(crate) fn tls_spent(&self) -> bool {
        !self.tickets_on_data
            && self
                .tls_cache
                .as_ref()
                .is_some_and(|c| c.is_tls13() && c.tickets() == 0)
    }

    /// `SIZE from` and `RNFR from` in one batch (one round trip where the
    /// server pipelines): the size of the file about to be renamed, and
    /// whether the server took the RNFR. Safe to send together: an RNFR
    /// without its RNTO changes nothing, and the caller sends RNTO only once
    /// the size is right.
    pub(crate) async fn size_then_rnfr(
        &mut self,
        from: &str,
    ) -> Result<(Option<u64>, Result<(), Fault>), Fault> {
        let r = self
            .control
            .batch(&[format!("SIZE {from}"), format!("RNFR {from}")])
            .await?;
        let size = self.size_reply(&r[0], from)?;
        let rnfr = match r[1].code {
            350 => Ok(()),
            _ => Err(scrubbed(
                r[1].fault(format!("RNFR {from}")),
                &self.control.password,
            )),
        };
        Ok((size, rnfr))
    }

    /// `RNTO to` after an accepted `RNFR`, then `SIZE to`, in one batch.
    /// The rename's outcome, and the size of the file now under `to`.
    pub(crate) async fn rnto_then_size(
        &mut self,
        to: &str,
    ) -> Result<(Result<(), Fault>, Option<u64>), Fault> {
        let r = self
            .control
            .batch(&[format!("RNTO {to}"), format!("SIZE {to}")])
            .await?;
        let renamed = match r[0].code {
            200..=299 => Ok(()),
            _ => Err(scrubbed(
                r[0].fault(format!("RNTO {to}")),
                &self.control.password,
            )),
        };
        let size = self.size_reply(&r[1], to)?;
        Ok((renamed, size))
    }

    /// Where an EPSV sent ahead says the next data connection goes (see
    /// [`Ahead::passive`]). A refusal gives nothing: the next `passive()`
    /// asks again, and finds out as EPSV alone would have.
    fn passive_of(&self, r: &super::control::Reply) -> Option<(SocketAddr, Instant)> {
        match (r.code, crate::ftp::reply::epsv_port(&r.text())) {
            (229, Some(port)) => Some((SocketAddr::new(self.peer.ip(), port), Instant::now())),
            _ => None,
        }
    }

    /// A SIZE reply: the size, `None` for "no such file", else a fault.
    fn size_reply(&self, r: &super::control::Reply, path: &str) -> Result<Option<u64>, Fault> {
        super::control::size_of(r, path).map_err(|f| scrubbed(f, &self.control.password))
    }

    /// `SIZE path`, with an `EPSV` for the next upload in the same batch
    /// (where the server pipelines; see [`Ahead`]).
    pub(crate) async fn size_then_passive(&mut self, path: &str) -> Result<Option<u64>, Fault> {
        let ahead = match &mut self.phase {
            Phase::Ready(ahead) => ahead.size.take(),
            Phase::Transfer { .. } => None,
        };
        if let Some((file, size)) = ahead {
            if file == path {
                return size;
            }
        }
        if !(self.control.pipelines() && self.epsv) {
            return self.size(path).await;
        }
        let r = self
            .control
            .batch(&[format!("SIZE {path}"), "EPSV".to_string()])
            .await?;
        let passive = self.passive_of(&r[1]);
        if let Phase::Ready(ahead) = &mut self.phase {
            ahead.passive = passive;
        }
        self.size_reply(&r[0], path)
    }

    pub(crate) async fn rename(&mut self, from: &str, to: &str) -> Result<(), Fault> {
        self.control.settle().await?;
        timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.command,
            format!("RNFR {from} / RNTO {to}"),
            self.control.ftp.rename(from, to),
        )
        .await
    }

    /// The names in `dir`, hidden ones included (entries the server gives
    /// as paths are cut to their last component). vsftpd and proftpd list
    /// dot files only for `NLST -a`, which pure-ftpd and pyftpdlib take for
    /// a path (550); they list dot files without it. An empty directory
    /// may answer 450/550.
    pub(crate) async fn names(&mut self, dir: &str) -> Result<Vec<String>, Fault> {
        self.control.settle().await?;
        let target = if dir.is_empty() { "." } else { dir };
        let mut last = Ok(Vec::new());
        for arg in [format!("-a {target}"), target.to_string()] {
            match self.read_data(format!("NLST {arg}"), |_| {}).await {
                Ok(listing) => {
                    return Ok(String::from_utf8_lossy(&listing)
                        .lines()
                        .filter_map(|l| l.trim_end().rsplit('/').next())
                        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                        .map(str::to_string)
                        .collect())
                }
                Err(f) if matches!(f.code, Some(450 | 550)) && !self.control.link.is_broken() => {
                    last = Ok(Vec::new())
                }
                Err(f) => return Err(f),
            }
        }
        last
    }

    /// Does the server let this session's data connections through, now that
    /// its control connection resumed another one's TLS session? One
    /// directory listing tells: proftpd's mod_tls refuses its data connection
    /// (425), as it ties data connections to their own control connection's
    /// tickets. `None`: no data connection was opened (a server that answers
    /// an empty directory's LIST with 450), nothing learned. A session that
    /// failed is broken: its data connections would fail too.
    pub(crate) async fn probe_control_resume(&mut self) -> Option<bool> {
        match self.read_data("LIST".into(), |_| {}).await {
            Ok(_) => Some(true),
            Err(f) if matches!(f.code, Some(450 | 550)) && !self.control.link.is_broken() => None,
            Err(f) => {
                tracing::debug!(error = %f, "a data connection after a resumed control handshake failed");
                self.control.link.fail();
                Some(false)
            }
        }
    }

    /// Runs a command whose answer comes over a data connection (NLST,
    /// RETR): each chunk goes to `sink`; what is kept (a listing, at most
    /// 16 MiB) is returned.
    async fn read_data(
        &mut self,
        command: String,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>, Fault> {
        const KEEP: usize = 16 << 20;
        let keep = command.starts_with("NLST");
        let mut conn = self
            .open_data(command.clone(), None)
            .await
            .map_err(Refused::into_fault)?;
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match tokio::time::timeout(self.control.timeouts.data, conn.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    sink(&buf[..n]);
                    if keep && kept.len() < KEEP {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
                // A TLS peer that closes without close_notify has still sent everything.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Ok(Err(e)) => {
                    self.control.link.fail();
                    return Err(Fault::transient(format!("{command}: reading data: {e}")));
                }
                Err(_) => {
                    self.control.link.fail();
                    return Err(Fault::transient(format!(
                        "{command}: no data for {} s",
                        self.control.timeouts.data.as_secs()
                    )));
                }
            }
        }
        drop(conn);
        timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.data,
            format!("finishing {command}"),
            self.control
                .ftp
                .read_response_in(&[Status::ClosingDataConnection, Status::RequestedFileActionOk]),
        )
        .await?;
        self.phase = Phase::Ready(Ahead::default());
        Ok(kept)
    }

    pub(crate) async fn delete(&mut self, path: &str) -> Result<(), Fault> {
        self.control.settle().await?;
        let r = timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.command,
            format!("DELE {path}"),
            self.control.ftp.rm(path),
        )
        .await;
        match r {
            Err(f) if f.code == Some(550) => Ok(()),
            other => other,
        }
    }

    /// Waits, for a session given up (broken), until the server lets go
    /// of it: QUIT is sent, and the connection is read until the server
    /// closes it, for at most `hold`. True if the server closed it, or if
    /// it was given up alive (then our close reaches it). A
    /// server whose session waits on a dead data connection or on a file
    /// lock holds it until its own timeout: its close is the first sign.
    pub(crate) async fn linger(mut self, hold: Duration) -> bool {
        // A live link carries our close at once: a QUIT's answer (or the
        // close) is awaited briefly, then the connection is dropped. A
        // server wedged on an earlier command (libunftp after a lost reply)
        // would otherwise hold the server's whole limit for `hold`.
        let hold = if self.control.link.is_alive() {
            hold.min(Duration::from_secs(2))
        } else {
            hold
        };
        let alive = self.control.link.is_alive();
        let deadline = tokio::time::Instant::now() + hold;
        let quit = ["QUIT".to_string()];
        if tokio::time::timeout_at(deadline, self.control.write_commands(&quit))
            .await
            .is_err()
        {
            return false;
        }
        loop {
            match tokio::time::timeout_at(deadline, self.control.ftp.read_response_in(&[])).await {
                Err(_) => return alive,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return true,
            }
        }
    }

    /// A polite goodbye; errors do not matter, the connection is going anyway.
    pub async fn quit(mut self) {
        let _ = self.control.settle().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.control.ftp.quit()).await;
    }

    pub(crate) fn data_timeout(&self) -> Duration {
        self.control.timeouts.data
    }

    /// Raw access for the hash commands (see `verify`).
    pub async fn custom(&mut self, command: String, ok: &[Status]) -> Result<String, Fault> {
        self.control.settle().await?;
        let resp = timed(
            &mut self.control.link,
            &self.control.password,
            self.control.timeouts.data,
            &command,
            self.control.ftp.custom_command(command.clone(), ok),
        )
        .await?;
        Ok(String::from_utf8_lossy(&resp.body).trim().to_string())
    }

    /// Chooses the algorithm of later `HASH` commands (`OPTS HASH SHA-256`).
    pub(crate) async fn select_hash(&mut self, algo: &str) -> Result<(), Fault> {
        self.control.settle().await?;
        if self.hash_algo.as_deref() == Some(algo) {
            return Ok(());
        }
        self.custom(format!("OPTS HASH {algo}"), &[Status::CommandOk])
            .await?;
        self.hash_algo = Some(algo.to_string());
        Ok(())
    }

    /// Sends a hash command (`HASH`, `XSHA256`, `XMD5`, ...) for `path` and
    /// returns the last line of the reply, which carries the digest.
    pub(crate) async fn hash_command(
        &mut self,
        command: &str,
        path: &str,
    ) -> Result<String, Fault> {
        self.control.settle().await?;
        let reply = self
            .custom(
                format!("{command} {path}"),
                &[
                    Status::File,
                    Status::RequestedFileActionOk,
                    Status::CommandOk,
                ],
            )
            .await?;
        Ok(reply.lines().last().unwrap_or("").trim().to_string())
    }

    /// Reads `path` back over a data connection; returns its SHA-256 and size.
    pub(crate) async fn download_sha256(&mut self, path: &str) -> Result<(String, u64), Fault> {
        self.control.settle().await?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        self.read_data(format!("RETR {path}"), |chunk| {
            hasher.update(chunk);
            total += chunk.len() as u64;
        })
        .await?;
        Ok((hex::encode(hasher.finalize()), total))
    }
}

/// Adds what to do about a TLS setup that failed: a server without TLS, or
/// a certificate the client refused.
fn tls_hint(mut f: Fault, spec: &ServerSpec) -> Fault {
    let hint = match f.cause {
        Cause::Refused
            if spec.tls == TlsMode::Explicit
                && f.verb.as_deref() == Some("AUTH")
                && matches!(f.code, Some(500 | 502 | 504 | 530 | 431 | 534)) =>
        {
            f.kind = FaultKind::Permanent;
            " (the server does not offer TLS: set \"tls\": \"none\" to send in clear text, or enable TLS on the server)".to_string()
        }
        Cause::Tls(TlsProblem::UnknownIssuer) => match spec.ca_file {
            Some(_) => " (the server's certificate is not signed by a CA in ca_file)".to_string(),
            None => " (the server's certificate is not signed by a CA this system trusts: set \"ca_file\" to the CA's PEM file, or for a self-signed certificate pin it with the named server's \"tls_pin_sha256\")".to_string(),
        },
        Cause::Tls(TlsProblem::WrongName) => format!(
            " (the server's certificate does not name {:?}: connect with a host name it lists)",
            spec.host
        ),
        Cause::Tls(TlsProblem::Expired) => " (the server's certificate has expired)".to_string(),
        _ => return f,
    };
    f.message.push_str(&hint);
    f
}

/// `a/b/c` → `a`, `a/b`, `a/b/c`.
fn dir_prefixes(dir: &str) -> Vec<String> {
    let abs = dir.starts_with('/');
    let mut out = Vec::new();
    let mut cur = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if !cur.is_empty() || abs {
            cur.push('/');
        }
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}

impl Session {
    /// Can the session no longer be trusted to be in step with the
    /// server? The pool then never lends it again.
    pub(crate) fn is_broken(&self) -> bool {
        self.control.link.is_broken()
    }

    /// Gives the session up (an upload that stopped half-way, a fault its
    /// caller cannot place): the pool closes it instead of lending it again.
    pub(crate) fn give_up(&mut self) {
        self.control.link.fail();
    }

    /// May commands be pipelined here: the server keeps order (probed).
    pub(crate) fn pipelines(&self) -> bool {
        self.control.pipelines()
    }

    /// Whether the server keeps pipelined commands in order, as far as
    /// this session knows (`None`: not probed).
    pub(crate) fn pipelining(&self) -> Option<bool> {
        self.control.pipelining
    }

    pub(crate) fn set_pipelining(&mut self, verdict: Option<bool>) {
        self.control.pipelining = verdict;
    }

    /// The command and the reply that showed the server out of order.
    pub(crate) fn desync(&self) -> Option<&(String, String)> {
        self.control.link.desync()
    }

    /// Is the control connection TLS?
    pub(crate) fn is_tls(&self) -> bool {
        self.control.tls
    }

    /// Does the session owe replies to commands sent earlier?
    pub(crate) fn owes(&self) -> bool {
        self.control.owes()
    }

    /// Reads the replies owed (see [`Control::settle`]).
    pub(crate) async fn settle(&mut self) -> Result<(), Fault> {
        self.control.settle().await
    }

    /// Publishes `from` as `to` without waiting for the answer (see
    /// [`Control::rename_owed`]).
    pub(crate) async fn rename_owed(
        &mut self,
        from: &str,
        to: &str,
    ) -> Result<super::control::OwedRename, Fault> {
        self.control.rename_owed(from, to).await
    }

    /// Does the server process pipelined commands strictly in order? Renames
    /// a probe directory back and forth in `dir`, every command sent at
    /// once: each RNTO depends on the RNFR just before it, so a server that
    /// runs commands concurrently (libunftp) fails some of them. `None` when
    /// the probe says nothing (no right to make a directory here, or a TLS
    /// control connection, where nothing is pipelined anyway).
    pub(crate) async fn probe_pipelining(&mut self, dir: &str) -> Result<Option<bool>, Fault> {
        let tag = &hex::encode(rand::random::<[u8; 6]>());
        let a = crate::job::join_remote(dir, &format!(".ftpdrop-probe-{tag}-a"));
        let b = crate::job::join_remote(dir, &format!(".ftpdrop-probe-{tag}-b"));
        let commands = vec![
            format!("MKD {a}"),
            format!("RNFR {a}"),
            format!("RNTO {b}"),
            format!("RNFR {b}"),
            format!("RNTO {a}"),
            format!("RNFR {a}"),
            format!("RNTO {b}"),
            format!("RMD {b}"),
        ];
        let expected = [257, 350, 250, 350, 250, 350, 250, 250];
        self.control.settle().await?;
        let made = [format!("{a}/"), format!("{b}/")];
        self.note_litter(&made);
        let wait = self.control.probe_wait();
        let replies = self.control.probe_batch(&commands, wait).await;
        let replies = match replies {
            Ok(r) => r,
            Err(f) if self.control.link.is_broken() => {
                tracing::info!(error = %f, "the server lost pipelined commands' replies: no pipelining");
                // Out of step: this session ends here. QUIT, and the
                // server's close awaited, so that the fresh session the
                // entry gets next is never one connection over a limit.
                if self
                    .control
                    .write_commands(&["QUIT".to_string()])
                    .await
                    .is_ok()
                {
                    while self.control.probe_reply("QUIT", wait).await.is_ok() {}
                }
                // It answered the commands before the lost one.
                self.control.link.give_up_alive();
                return Ok(Some(false));
            }
            Err(f) => return Err(f),
        };
        let codes: Vec<u32> = replies.iter().map(|r| r.code).collect();
        let in_order = codes.iter().zip(expected).all(|(c, e)| *c == e);
        // The directory was made (its 257 came, in whatever place), or an
        // RNTO found no RNFR before it: the server reordered commands.
        let reordered =
            !in_order && (codes.contains(&257) || codes.iter().any(|c| matches!(c, 450 | 503)));
        if !in_order && !reordered {
            tracing::debug!(dir, reply = %replies[0].text(), "pipelining probe: no directory made here; no verdict");
            self.cleared_litter(&made);
            return Ok(None);
        }
        if in_order {
            // Its last command removed the directory.
            self.cleared_litter(&made);
        }
        if reordered {
            tracing::info!(
                ?codes,
                "the server does not keep pipelined commands in order: no pipelining"
            );
            // Whatever is left of the probe goes (one at a time).
            self.control.pipelining = Some(false);
            for p in [&a, &b] {
                let _ = self.control.exchange(&format!("RMD {p}")).await?;
            }
            self.cleared_litter(&made);
        }
        Ok(Some(in_order))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(dir_prefixes("a/b/c"), vec!["a", "a/b", "a/b/c"]);
        assert_eq!(dir_prefixes("/a/b"), vec!["/a", "/a/b"]);
        assert_eq!(normalize_dir("a//b/./"), "a/b");
        assert_eq!(normalize_dir("/x/"), "/x");
    }
}
