//! Fault-injecting TCP proxy for plain (non-TLS) FTP.
//!
//! The control connection is forwarded line by line. `227` (PASV) and `229` (EPSV) replies are
//! rewritten to point at a fresh proxy listener on `127.0.0.1:<ephemeral>` which forwards to the
//! server's real data port, so data connections pass through the proxy too (also for clients that
//! use the control connection's IP with the PASV port). Client->server data bytes go through the
//! fault logic; server->client data (LIST, RETR) is passed through untouched.
//!
//! Faults are set at runtime through [`Faults`] (reachable from a [`FaultProxy`] by deref, or
//! shared with other tasks via [`FaultProxy::faults`]). "Abruptly closed" means TCP RST
//! (`SO_LINGER` 0), which the peers see as `ECONNRESET`, never as a clean EOF.
//!
//! Data faults apply to *upload* data connections only: a data connection claims a fault when the
//! first client->server byte arrives, so LIST/RETR connections never consume one. An upload that
//! ends before reaching the byte limit still consumes its fault.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a rewritten PASV/EPSV listener waits for the client's data connection.
const DATA_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stalled data connection is held before it is reset.
const STALL_HOLD: Duration = Duration::from_secs(300);

/// A running proxy. Dropping it stops accepting and resets every connection it carries.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    faults: Arc<Faults>,
    accept_task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFault {
    /// Forward `n` bytes, then reset both sides.
    Cut(u64),
    /// Forward `n` bytes, then close the server side cleanly (FIN) and swallow the rest of the
    /// client's data, so the client sees a normal end of transfer.
    Truncate(u64),
    /// Forward `n` bytes, then stop reading (client writes block); reset after a long hold.
    Stall(u64),
    /// Forward `n` bytes, then close the server side cleanly (FIN) and reset the client's.
    Severed(u64),
    /// Forward `n` bytes, then stop reading for the hold; then reset both sides.
    Silence(u64, Duration),
}

impl DataFault {
    fn limit(self) -> u64 {
        match self {
            DataFault::Cut(n)
            | DataFault::Truncate(n)
            | DataFault::Stall(n)
            | DataFault::Severed(n)
            | DataFault::Silence(n, _) => n,
        }
    }
}

/// Shared, runtime-mutable fault settings and counters of a [`FaultProxy`].
#[derive(Debug)]
pub struct Faults {
    /// Pending data faults, consumed in order by upload data connections: (fault, remaining times).
    data_faults: Mutex<Vec<(DataFault, u32)>>,
    ctrl_cut_after: AtomicU32,
    ctrl_cut_times: AtomicU32,
    /// (uppercase verb, remaining times)
    ctrl_cut_verbs: Mutex<Vec<(String, u32)>>,
    refuse: AtomicBool,
    data_bytes: AtomicU64,
    control_conns: AtomicUsize,
    data_conns: AtomicUsize,
    data_faults_fired: AtomicUsize,
    control_cuts_fired: AtomicUsize,
    commands: Mutex<Vec<String>>,
    /// Upload bytes per second per data connection; 0: unlimited.
    rate: AtomicU64,
    /// Bumped by `kill_all`; every connection resets when it changes (or the sender is dropped).
    kill: watch::Sender<u64>,
    /// A link that breaks at random (see [`Faults::flaky`]).
    flaky: Mutex<Option<Flaky>>,
    /// Connections the flaky link reset, and silenced.
    flaky_resets: AtomicUsize,
    flaky_silences: AtomicUsize,
    /// Control connections open to the server now, and the most at once:
    /// the sessions the server holds for clients of this proxy (a silenced
    /// one included, as the server still holds it).
    ctrl_live: AtomicUsize,
    /// A server that breaks on a TLS 1.3 ClientHello (one that offers
    /// `supported_versions`) as old TLS stacks did: the control connection
    /// is reset at it. Counted as they happen.
    refuse_tls13: AtomicBool,
    tls13_refused: AtomicUsize,
    ctrl_live_max: AtomicUsize,
}

/// A broken link's odds, per connection (control and data alike).
#[derive(Debug)]
struct Flaky {
    reset_pct: u32,
    silence_pct: u32,
    /// How long a silenced connection stays open, forwarding nothing, before it is reset.
    hold: Duration,
    rng: u64,
}

/// A session's link went silent (a silenced upload): its control
/// connection stops too, as all of a client's connections do when its cable
/// is pulled. Without this a server saw the control connection close, and
/// ended the session stuck on the silent upload at once.
type LinkDown = Arc<watch::Sender<Option<Duration>>>;

/// Waits until the session's link goes silent; how long it stays so
/// (`None`: nothing can silence it any more).
async fn silenced(link: &mut watch::Receiver<Option<Duration>>) -> Option<Duration> {
    link.wait_for(Option::is_some)
        .await
        .ok()
        .map(|d| d.unwrap_or_default())
}

/// What the flaky link does to one connection, and where: a control
/// connection after `at % 12` commands, an upload after `at % 64 KiB` bytes.
#[derive(Debug, Clone, Copy)]
enum Doom {
    /// Both sides reset (RST).
    Reset { at: u64 },
    /// From then on nothing more reaches the server and nothing closes, as
    /// on a pulled cable or an expired NAT entry (reset after `hold`).
    Silence { at: u64, hold: Duration },
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            data_faults: Mutex::new(Vec::new()),
            ctrl_cut_after: AtomicU32::new(0),
            ctrl_cut_times: AtomicU32::new(0),
            ctrl_cut_verbs: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            data_bytes: AtomicU64::new(0),
            control_conns: AtomicUsize::new(0),
            data_conns: AtomicUsize::new(0),
            data_faults_fired: AtomicUsize::new(0),
            control_cuts_fired: AtomicUsize::new(0),
            commands: Mutex::new(Vec::new()),
            rate: AtomicU64::new(0),
            kill: watch::channel(0).0,
            flaky: Mutex::new(None),
            flaky_resets: AtomicUsize::new(0),
            flaky_silences: AtomicUsize::new(0),
            ctrl_live: AtomicUsize::new(0),
            ctrl_live_max: AtomicUsize::new(0),
            refuse_tls13: AtomicBool::new(false),
            tls13_refused: AtomicUsize::new(0),
        }
    }
}

impl Faults {
    /// Makes the link break at random from now on: each new connection,
    /// control or data, is reset with `reset_pct` percent odds and silenced
    /// with `silence_pct`, somewhere in its first commands or bytes. A
    /// silenced connection forwards nothing to the server and stays open
    /// for `hold`. `seed` makes a run repeatable.
    pub fn flaky(&self, reset_pct: u32, silence_pct: u32, hold: Duration, seed: u64) {
        *self.flaky.lock().unwrap() = Some(Flaky {
            reset_pct,
            silence_pct,
            hold,
            rng: seed | 1,
        });
    }

    /// The most control connections open to the server at once so far.
    pub fn control_live_max(&self) -> usize {
        self.ctrl_live_max.load(Ordering::SeqCst)
    }

    /// Control connections open to the server now.
    pub fn control_live(&self) -> usize {
        self.ctrl_live.load(Ordering::SeqCst)
    }

    /// Connections the flaky link has reset and silenced so far.
    pub fn flaky_fired(&self) -> (usize, usize) {
        (
            self.flaky_resets.load(Ordering::SeqCst),
            self.flaky_silences.load(Ordering::SeqCst),
        )
    }

    fn roll(&self) -> Option<Doom> {
        let mut guard = self.flaky.lock().unwrap();
        let f = guard.as_mut()?;
        let mut next = || {
            // xorshift64*
            f.rng ^= f.rng >> 12;
            f.rng ^= f.rng << 25;
            f.rng ^= f.rng >> 27;
            f.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let dice = (next() % 100) as u32;
        let at = next();
        if dice < f.reset_pct {
            self.flaky_resets.fetch_add(1, Ordering::SeqCst);
            Some(Doom::Reset { at })
        } else if dice < f.reset_pct + f.silence_pct {
            self.flaky_silences.fetch_add(1, Ordering::SeqCst);
            Some(Doom::Silence { at, hold: f.hold })
        } else {
            None
        }
    }

    fn set_data_fault(&self, fault: DataFault, times: u32) {
        let mut faults = self.data_faults.lock().unwrap();
        faults.retain(|(f, _)| std::mem::discriminant(f) != std::mem::discriminant(&fault));
        if times > 0 {
            faults.push((fault, times));
        }
    }

    /// The next `times` upload data connections are reset (both sides, RST) after `bytes`
    /// client->server bytes were forwarded (`bytes` = 0: reset on the first byte). The server sees
    /// at most `bytes` bytes and answers the STOR with `426`. Replaces an earlier setting.
    pub fn cut_data_after(&self, bytes: u64, times: u32) {
        self.set_data_fault(DataFault::Cut(bytes), times);
    }

    /// The next `times` upload data connections are cut after `bytes` bytes as a link that
    /// dies is cut, once the server has every byte that crossed it: the server side gets a
    /// clean EOF, the client's a reset. A reset towards the server (`cut_data_after`) can
    /// lose what still sits unread in the server's socket, so the server may keep anything
    /// from 0 to `bytes` bytes; here it keeps exactly `bytes`.
    pub fn sever_data_after(&self, bytes: u64, times: u32) {
        self.set_data_fault(DataFault::Severed(bytes), times);
    }

    /// The next `times` upload data connections are silently truncated: after `bytes` bytes the
    /// server side gets a clean EOF (so the server stores a short file and answers `226`), and the
    /// rest of the client's data is read and discarded, so the client believes the upload worked.
    pub fn truncate_data_after(&self, bytes: u64, times: u32) {
        self.set_data_fault(DataFault::Truncate(bytes), times);
    }

    /// The next `times` upload data connections stop moving after `bytes` bytes: the proxy stops
    /// reading, so the client's writes block. The connection is reset after 5 minutes, on
    /// [`Faults::kill_all`], or when the proxy is dropped. For client timeout tests.
    pub fn stall_data_after(&self, bytes: u64, times: u32) {
        self.set_data_fault(DataFault::Stall(bytes), times);
    }

    /// Clear all pending data faults.
    pub fn clear_data_faults(&self) {
        self.data_faults.lock().unwrap().clear();
    }

    /// For the next `times` control connections: forward `n` client commands normally (their
    /// replies arrive), then reset both sides when the client sends command `n + 1` (which is
    /// recorded in `commands_seen` but not forwarded).
    pub fn cut_control_after_commands(&self, n: u32, times: u32) {
        self.ctrl_cut_after.store(n, Ordering::SeqCst);
        self.ctrl_cut_times.store(times, Ordering::SeqCst);
    }

    /// The next `times` client commands with this verb (e.g. `"STOR"`, `"RNTO"`, `"SIZE"`; case
    /// insensitive), on any control connection, are not forwarded: both sides are reset instead.
    pub fn cut_control_on_command(&self, verb: &str, times: u32) {
        let verb = verb.to_ascii_uppercase();
        let mut verbs = self.ctrl_cut_verbs.lock().unwrap();
        verbs.retain(|(v, _)| *v != verb);
        if times > 0 {
            verbs.push((verb, times));
        }
    }

    /// When on, every accepted control connection is reset immediately (server down/reset).
    /// Connections already established are not affected (see [`Faults::kill_all`]).
    /// Resets the control connection at a ClientHello (after AUTH TLS) that
    /// offers TLS 1.3; one offering TLS 1.2 only goes through.
    pub fn refuse_tls13_hellos(&self, on: bool) {
        self.refuse_tls13.store(on, Ordering::SeqCst);
    }

    /// ClientHellos refused by [`Faults::refuse_tls13_hellos`] so far.
    pub fn tls13_hellos_refused(&self) -> usize {
        self.tls13_refused.load(Ordering::SeqCst)
    }

    pub fn refuse_connections(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Reset every connection (control and data) the proxy currently carries.
    pub fn kill_all(&self) {
        self.kill.send_modify(|g| *g += 1);
    }

    /// Total client->server data bytes forwarded to the server, over all data connections.
    /// Caps each upload data connection at `bytes_per_sec` (0: no cap), like a slow link.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    pub fn data_bytes_forwarded(&self) -> u64 {
        self.data_bytes.load(Ordering::SeqCst)
    }

    /// Control connections accepted, including ones reset because of `refuse_connections`.
    pub fn control_connections(&self) -> usize {
        self.control_conns.load(Ordering::SeqCst)
    }

    /// Data connections accepted on rewritten PASV/EPSV ports.
    pub fn data_connections(&self) -> usize {
        self.data_conns.load(Ordering::SeqCst)
    }

    /// How many data faults (cut/truncate/stall) actually triggered.
    pub fn data_faults_fired(&self) -> usize {
        self.data_faults_fired.load(Ordering::SeqCst)
    }

    /// How many control connections were cut by `cut_control_after_commands`/`cut_control_on_command`.
    pub fn control_cuts_fired(&self) -> usize {
        self.control_cuts_fired.load(Ordering::SeqCst)
    }

    /// Client control commands seen on all connections, in order, without CRLF, with the PASS
    /// argument replaced by `****`. Includes a command that triggered a control cut.
    pub fn commands_seen(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    /// Commands seen whose verb is `verb` (case insensitive), e.g. `commands_with_verb("STOR")`.
    pub fn commands_with_verb(&self, verb: &str) -> Vec<String> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| command_verb(c).eq_ignore_ascii_case(verb))
            .cloned()
            .collect()
    }

    /// How many times each name was renamed into (RNTO), the pipelining
    /// probes' directories aside: a publish count per final name.
    pub fn publishes(&self) -> std::collections::HashMap<String, usize> {
        let mut renames = std::collections::HashMap::new();
        for c in self.commands_with_verb("RNTO") {
            if !c.contains(".ftpdrop-probe-") {
                *renames.entry(c["RNTO ".len()..].to_string()).or_default() += 1;
            }
        }
        renames
    }

    fn next_data_limit(&self) -> Option<u64> {
        self.data_faults
            .lock()
            .unwrap()
            .first()
            .map(|(f, _)| f.limit())
    }

    fn claim_data_fault(&self) -> Option<DataFault> {
        let mut faults = self.data_faults.lock().unwrap();
        let (fault, times) = faults.first_mut()?;
        let fault = *fault;
        *times -= 1;
        if *times == 0 {
            faults.remove(0);
        }
        Some(fault)
    }

    fn claim_ctrl_cut(&self) -> Option<u32> {
        self.ctrl_cut_times
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
            .ok()
            .map(|_| self.ctrl_cut_after.load(Ordering::SeqCst))
    }

    fn claim_verb_cut(&self, verb: &str) -> bool {
        let mut verbs = self.ctrl_cut_verbs.lock().unwrap();
        let Some(pos) = verbs.iter().position(|(v, _)| v.eq_ignore_ascii_case(verb)) else {
            return false;
        };
        verbs[pos].1 -= 1;
        if verbs[pos].1 == 0 {
            verbs.remove(pos);
        }
        true
    }

    fn record_command(&self, line: &str) {
        let masked = if command_verb(line).eq_ignore_ascii_case("PASS") {
            format!("{} ****", &line[..4])
        } else {
            line.to_string()
        };
        self.commands.lock().unwrap().push(masked);
    }
}

fn command_verb(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

impl FaultProxy {
    /// Start a proxy on `127.0.0.1:<ephemeral>` forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy local addr");
        let faults = Arc::new(Faults::default());
        let accept_task = tokio::spawn(accept_loop(listener, upstream, faults.clone()));
        FaultProxy {
            addr,
            upstream,
            faults,
            accept_task,
        }
    }

    /// The shared fault settings/counters, e.g. to flip faults from another task.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }
}

impl Deref for FaultProxy {
    type Target = Faults;

    fn deref(&self) -> &Faults {
        &self.faults
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.faults.kill_all();
    }
}

/// Reset (RST) the sockets when they are closed.
#[allow(deprecated)] // `set_linger` is deprecated because a non-zero linger blocks on drop; zero does not.
fn set_reset_on_close(sockets: &[&TcpStream]) {
    for s in sockets {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, faults: Arc<Faults>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                faults.control_conns.fetch_add(1, Ordering::SeqCst);
                if faults.refuse.load(Ordering::SeqCst) {
                    set_reset_on_close(&[&client]);
                    drop(client);
                    continue;
                }
                let kill = faults.kill.subscribe();
                tokio::spawn(handle_control(client, upstream, faults.clone(), kill));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Peer closed cleanly: EOF was passed on, let the other direction finish.
    Done,
    /// Fault, kill or I/O error (e.g. a peer reset): `drive` closes both sockets with RST.
    Reset,
    /// The server side was closed cleanly; `drive` resets the client's.
    ResetClient,
}

async fn handle_control(
    client: TcpStream,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    kill: watch::Receiver<u64>,
) {
    let server =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            _ => {
                set_reset_on_close(&[&client]);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut_after = faults.claim_ctrl_cut();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let upstream_ip = upstream.ip();
    let doom = faults.roll();
    let link: LinkDown = Arc::new(watch::channel(None).0);
    let (link_up, link_down) = (link.subscribe(), link.clone());
    let live = faults.ctrl_live.fetch_add(1, Ordering::SeqCst) + 1;
    faults.ctrl_live_max.fetch_max(live, Ordering::SeqCst);
    let counter = faults.clone();
    let (f1, f2, k1) = (faults.clone(), faults, kill.clone());
    drive(
        cr,
        cw,
        sr,
        sw,
        move |r, w| Box::pin(control_up(r, w, f1, k1, cut_after, doom, link_up)),
        move |r, w| Box::pin(control_down(r, w, f2, kill, upstream_ip, link_down)),
    )
    .await;
    counter.ctrl_live.fetch_sub(1, Ordering::SeqCst);
}

/// Run both directions until each has finished cleanly, or until either reports `Reset`; then, for
/// a reset, close both sockets with RST. The halves are owned here (the pumps only borrow them) so
/// that no write half sends a FIN on drop before the reset.
async fn drive(
    mut cr: OwnedReadHalf,
    mut cw: OwnedWriteHalf,
    mut sr: OwnedReadHalf,
    mut sw: OwnedWriteHalf,
    up: impl for<'a> FnOnce(&'a mut OwnedReadHalf, &'a mut OwnedWriteHalf) -> BoxFut<'a>,
    down: impl for<'a> FnOnce(&'a mut OwnedReadHalf, &'a mut OwnedWriteHalf) -> BoxFut<'a>,
) {
    let reset = {
        let up = up(&mut cr, &mut sw);
        let down = down(&mut sr, &mut cw);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            if up_done && down_done {
                break None;
            }
            tokio::select! {

                end = &mut up, if !up_done => {
                    match end {
                        End::Done => {}
                        reset => break Some(reset),
                    }
                    up_done = true;
                }
                end = &mut down, if !down_done => {
                    match end {
                        End::Done => {}
                        reset => break Some(reset),
                    }
                    down_done = true;
                }
            }
        }
    };
    if let Some(end) = reset {
        if end == End::ResetClient {
            set_reset_on_close(&[cr.as_ref()]);
        } else {
            set_reset_on_close(&[cr.as_ref(), sr.as_ref()]);
        }
        cw.forget();
        sw.forget();
    }
}

type BoxFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = End> + Send + 'a>>;

/// Client -> server control direction.
async fn control_up(
    cr: &mut OwnedReadHalf,
    sw: &mut OwnedWriteHalf,
    faults: Arc<Faults>,
    mut kill: watch::Receiver<u64>,
    cut_after: Option<u32>,
    doom: Option<Doom>,
    mut link: watch::Receiver<Option<Duration>>,
) -> End {
    let mut reader = BufReader::new(cr);
    let mut buf = Vec::with_capacity(256);
    let mut count: u32 = 0;
    let mut link_gone = false;
    loop {
        buf.clear();
        let n = tokio::select! {
            r = reader.read_until(b'\n', &mut buf) => r,
            _ = kill.changed() => break End::Reset,
            down = silenced(&mut link), if !link_gone => {
                let Some(hold) = down else {
                    link_gone = true;
                    continue;
                };
                tokio::select! {
                    _ = tokio::time::sleep(hold) => {}
                    _ = kill.changed() => {}
                }
                break End::Reset;
            }
        };
        let n = match n {
            Ok(0) => {
                let _ = sw.shutdown().await;
                break End::Done;
            }
            Err(_) => break End::Reset,
            Ok(n) => n,
        };
        let line = String::from_utf8_lossy(&buf[..n]);
        let line = line.trim_end_matches(['\r', '\n']);
        faults.record_command(line);
        match doom {
            Some(Doom::Reset { at }) if u64::from(count) == at % 12 => break End::Reset,
            Some(Doom::Silence { at, hold }) if u64::from(count) == at % 12 => {
                tokio::select! {
                    _ = tokio::time::sleep(hold) => {}
                    _ = kill.changed() => {}
                }
                break End::Reset;
            }
            _ => {}
        }
        let verb_cut = faults.claim_verb_cut(command_verb(line));
        let count_cut = cut_after.is_some_and(|limit| count >= limit);
        if verb_cut || count_cut {
            faults.control_cuts_fired.fetch_add(1, Ordering::SeqCst);
            break End::Reset;
        }
        count += 1;
        if sw.write_all(&buf[..n]).await.is_err() {
            break End::Reset;
        }
        if command_verb(line).eq_ignore_ascii_case("AUTH")
            && faults.refuse_tls13.load(Ordering::SeqCst)
        {
            // The next record is the ClientHello (the reply, 234, is the server's).
            let mut head = [0u8; 5];
            if reader.read_exact(&mut head).await.is_err() {
                break End::Reset;
            }
            let mut body = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
            if reader.read_exact(&mut body).await.is_err() {
                break End::Reset;
            }
            if offers_tls13(&body) {
                faults.tls13_refused.fetch_add(1, Ordering::SeqCst);
                break End::Reset;
            }
            if sw.write_all(&head).await.is_err() || sw.write_all(&body).await.is_err() {
                break End::Reset;
            }
            // TLS from here on: bytes, not lines.
            return pipe_raw(&mut reader, sw, &mut kill).await;
        }
    }
}

/// Copies bytes from `from` to `to` until either ends (a TLS control
/// connection: no lines to read any more).
async fn pipe_raw<R: tokio::io::AsyncRead + Unpin>(
    from: &mut R,
    to: &mut OwnedWriteHalf,
    kill: &mut watch::Receiver<u64>,
) -> End {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut chunk) => r,
            _ = kill.changed() => return End::Reset,
        };
        match n {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Done;
            }
            Ok(n) => {
                if to.write_all(&chunk[..n]).await.is_err() {
                    return End::Reset;
                }
            }
            Err(_) => return End::Reset,
        }
    }
}

/// Does a ClientHello (the handshake message, in one record) offer TLS 1.3
/// (0x0304 in its `supported_versions` extension)?
fn offers_tls13(hello: &[u8]) -> bool {
    let rest = |at: usize| hello.get(at..).unwrap_or(&[]);
    // type(1) len(3) version(2) random(32)
    let mut at = 4 + 2 + 32;
    let Some(&sid) = hello.get(at) else {
        return false;
    };
    at += 1 + sid as usize;
    let Some(c) = rest(at).get(..2) else {
        return false;
    };
    at += 2 + u16::from_be_bytes([c[0], c[1]]) as usize;
    let Some(&comp) = hello.get(at) else {
        return false;
    };
    at += 1 + comp as usize + 2;
    while let Some(e) = rest(at).get(..4) {
        let len = u16::from_be_bytes([e[2], e[3]]) as usize;
        if u16::from_be_bytes([e[0], e[1]]) == 43 {
            // A list of versions (a length byte, then 2 bytes each).
            let list = rest(at + 5).get(..len.saturating_sub(1)).unwrap_or(&[]);
            return list.chunks(2).any(|v| v == [3, 4]);
        }
        at += 4 + len;
    }
    false
}

/// Server -> client control direction; rewrites PASV/EPSV replies.
async fn control_down(
    sr: &mut OwnedReadHalf,
    cw: &mut OwnedWriteHalf,
    faults: Arc<Faults>,
    mut kill: watch::Receiver<u64>,
    upstream_ip: IpAddr,
    link_down: LinkDown,
) -> End {
    let mut reader = BufReader::new(sr);
    let mut buf = Vec::with_capacity(256);
    // Code of the multi-line reply we are inside, if any.
    let mut multi: Option<[u8; 3]> = None;
    let mut link = link_down.subscribe();
    loop {
        buf.clear();
        let n = tokio::select! {
            r = reader.read_until(b'\n', &mut buf) => r,
            _ = kill.changed() => break End::Reset,
            down = silenced(&mut link) => {
                let hold = down.unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(hold) => {}
                    _ = kill.changed() => {}
                }
                break End::Reset;
            }
        };
        let n = match n {
            Ok(0) => {
                let _ = cw.shutdown().await;
                break End::Done;
            }
            Err(_) => break End::Reset,
            Ok(n) => n,
        };
        let line = &buf[..n];
        let mut out: Option<Vec<u8>> = None;
        match multi {
            Some(code) => {
                if line.len() >= 4 && line[..3] == code && line[3] == b' ' {
                    multi = None;
                }
            }
            None => {
                let is_code = line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit);
                if is_code && line[3] == b'-' {
                    multi = Some([line[0], line[1], line[2]]);
                } else if is_code && line[3] == b' ' {
                    let text = String::from_utf8_lossy(line).into_owned();
                    if text.starts_with("227 ") {
                        out = rewrite_pasv(&text, upstream_ip, &faults, &link_down).await;
                    } else if text.starts_with("229 ") {
                        out = rewrite_epsv(&text, upstream_ip, &faults, &link_down).await;
                    }
                }
            }
        }
        let bytes = out.as_deref().unwrap_or(line);
        if cw.write_all(bytes).await.is_err() {
            break End::Reset;
        }
        if line.starts_with(b"234 ") {
            // TLS from here on: bytes, not lines (a line reader would hold
            // a record back until a 0x0a byte came by).
            return pipe_raw(&mut reader, cw, &mut kill).await;
        }
    }
}

/// Find `h1,h2,h3,h4,p1,p2` in a 227 reply.
fn parse_pasv(text: &str) -> Option<(std::ops::Range<usize>, SocketAddr)> {
    let bytes = text.as_bytes();
    let mut i = 4;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b',') {
                i += 1;
            }
            let nums: Vec<&str> = text[start..i].split(',').collect();
            if nums.len() == 6 {
                let n: Option<Vec<u8>> = nums.iter().map(|s| s.parse::<u8>().ok()).collect();
                let n = n?;
                let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
                let port = u16::from(n[4]) * 256 + u16::from(n[5]);
                return Some((start..i, SocketAddr::new(IpAddr::V4(ip), port)));
            }
        } else {
            i += 1;
        }
    }
    None
}

async fn rewrite_pasv(
    text: &str,
    upstream_ip: IpAddr,
    faults: &Arc<Faults>,
    link: &LinkDown,
) -> Option<Vec<u8>> {
    let (range, mut target) = parse_pasv(text)?;
    if target.ip().is_unspecified() {
        target.set_ip(upstream_ip);
    }
    let port = open_data_relay(target, faults.clone(), link.clone()).await?;
    let replacement = format!("127,0,0,1,{},{}", port >> 8, port & 0xff);
    Some(
        format!(
            "{}{}{}",
            &text[..range.start],
            replacement,
            &text[range.end..]
        )
        .into_bytes(),
    )
}

/// Find the port in `(|||port|)` (any delimiter) of a 229 reply.
fn parse_epsv(text: &str) -> Option<(std::ops::Range<usize>, u16)> {
    let open = text.find('(')?;
    let rest = &text[open + 1..];
    let d = rest.chars().next()?;
    let prefix: String = [d, d, d].iter().collect();
    if !rest.starts_with(&prefix) {
        return None;
    }
    let start = open + 1 + prefix.len();
    let len = text[start..].find(d)?;
    let port = text[start..start + len].parse().ok()?;
    Some((start..start + len, port))
}

async fn rewrite_epsv(
    text: &str,
    upstream_ip: IpAddr,
    faults: &Arc<Faults>,
    link: &LinkDown,
) -> Option<Vec<u8>> {
    let (range, port) = parse_epsv(text)?;
    let local = open_data_relay(
        SocketAddr::new(upstream_ip, port),
        faults.clone(),
        link.clone(),
    )
    .await?;
    Some(format!("{}{}{}", &text[..range.start], local, &text[range.end..]).into_bytes())
}

/// Listen on 127.0.0.1:<ephemeral> for one data connection and relay it to `target`.
async fn open_data_relay(target: SocketAddr, faults: Arc<Faults>, link: LinkDown) -> Option<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await.ok()?;
    let port = listener.local_addr().ok()?.port();
    let mut kill = faults.kill.subscribe();
    tokio::spawn(async move {
        let accepted = tokio::select! {
            r = tokio::time::timeout(DATA_ACCEPT_TIMEOUT, listener.accept()) => r,
            _ = kill.changed() => return,
        };
        let Ok(Ok((client, _))) = accepted else {
            return;
        };
        drop(listener);
        faults.data_conns.fetch_add(1, Ordering::SeqCst);
        let server =
            match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                _ => {
                    set_reset_on_close(&[&client]);
                    return;
                }
            };
        relay_data(client, server, faults, kill, link).await;
    });
    Some(port)
}

async fn relay_data(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Faults>,
    kill: watch::Receiver<u64>,
    link: LinkDown,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let k1 = kill.clone();
    let doom = faults.roll();
    drive(
        cr,
        cw,
        sr,
        sw,
        move |r, w| Box::pin(data_up(r, w, faults, k1, doom, link)),
        move |r, w| Box::pin(data_down(r, w, kill)),
    )
    .await;
}

/// Client -> server data direction, with the fault logic.
async fn data_up(
    cr: &mut OwnedReadHalf,
    sw: &mut OwnedWriteHalf,
    faults: Arc<Faults>,
    mut kill: watch::Receiver<u64>,
    doom: Option<Doom>,
    link: LinkDown,
) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    const SPAN: u64 = 64 << 10;
    let mut fault: Option<DataFault> = match doom {
        Some(Doom::Reset { at }) => Some(DataFault::Cut(at % SPAN)),
        Some(Doom::Silence { at, hold }) => Some(DataFault::Silence(at % SPAN, hold)),
        None => None,
    };
    let mut claimed = fault.is_some();
    let mut sent: u64 = 0;
    let started = tokio::time::Instant::now();
    'outer: loop {
        let rate = faults.rate.load(Ordering::SeqCst);
        if rate > 0 {
            // Hold the bytes back until the link would have carried them.
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let limit = if rate > 0 {
            buf.len().min((rate / 20).max(1024) as usize)
        } else {
            buf.len()
        };
        let n = tokio::select! {
            r = cr.read(&mut buf[..limit]) => r,
            _ = kill.changed() => break End::Reset,
        };
        let n = match n {
            Ok(0) => {
                let _ = sw.shutdown().await;
                break End::Done;
            }
            Err(_) => break End::Reset,
            Ok(n) => n,
        };
        // A fault goes to the first data connection that reaches its
        // limit: a small upload before it (a probe's few bytes) leaves it
        // for the transfer it is meant for.
        if !claimed
            && faults
                .next_data_limit()
                .is_some_and(|l| sent + n as u64 >= l)
        {
            claimed = true;
            fault = faults.claim_data_fault();
        }
        let mut to_send = n;
        let mut fire = false;
        if let Some(f) = fault {
            let remaining = f.limit().saturating_sub(sent);
            if n as u64 >= remaining {
                to_send = remaining as usize;
                fire = true;
            }
        }
        if to_send > 0 {
            if sw.write_all(&buf[..to_send]).await.is_err() {
                break End::Reset;
            }
            sent += to_send as u64;
            faults
                .data_bytes
                .fetch_add(to_send as u64, Ordering::SeqCst);
        }
        if !fire {
            continue;
        }
        faults.data_faults_fired.fetch_add(1, Ordering::SeqCst);
        match fault {
            Some(DataFault::Truncate(_)) => {
                // Clean EOF towards the server, then swallow whatever the client still sends.
                let _ = sw.shutdown().await;
                loop {
                    let r = tokio::select! {
                        r = cr.read(&mut buf) => r,
                        _ = kill.changed() => break 'outer End::Reset,
                    };
                    if !matches!(r, Ok(n) if n > 0) {
                        break 'outer End::Done;
                    }
                }
            }
            Some(DataFault::Stall(_)) => {
                tokio::select! {
                    _ = tokio::time::sleep(STALL_HOLD) => {}
                    _ = kill.changed() => {}
                }
                break End::Reset;
            }
            Some(DataFault::Silence(_, hold)) => {
                link.send_replace(Some(hold));
                tokio::select! {
                    _ = tokio::time::sleep(hold) => {}
                    _ = kill.changed() => {}
                }
                break End::Reset;
            }
            Some(DataFault::Severed(_)) => {
                let _ = sw.shutdown().await;
                break End::ResetClient;
            }
            _ => break End::Reset,
        }
    }
}

/// Server -> client data direction (LIST/RETR), passed through.
async fn data_down(
    sr: &mut OwnedReadHalf,
    cw: &mut OwnedWriteHalf,
    mut kill: watch::Receiver<u64>,
) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = sr.read(&mut buf) => r,
            _ = kill.changed() => break End::Reset,
        };
        match n {
            Ok(0) => {
                let _ = cw.shutdown().await;
                break End::Done;
            }
            Err(_) => break End::Reset,
            Ok(n) => {
                if cw.write_all(&buf[..n]).await.is_err() {
                    break End::Reset;
                }
            }
        }
    }
}
