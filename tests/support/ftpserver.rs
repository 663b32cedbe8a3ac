//! In-process FTP server for integration tests: libunftp 0.24 + unftp-sbe-fs 0.4 on 127.0.0.1.
//!
//! What libunftp 0.24 (with the `unftp_sbe_fs::Filesystem` back-end) does with the commands an
//! uploader cares about, one line per command. Each is checked by `tests/support_selftest.rs`.
//!
//! - REST + STOR: supported. `REST n` -> `350` (FEAT lists `REST STREAM`), then STOR opens the file without truncating, does `set_len(n)` and writes from `n`: old bytes past `n` are dropped, a file shorter than `n` is zero-padded (no error). The offset is only reset by a *successful* transfer: after a failed `REST n`+STOR, a plain STOR on the same session still writes at `n` (send `REST 0` to clear it).
//! - APPE: supported (`150`, then `226`); appends at the current size, creates a missing file.
//! - RNFR/RNTO over an existing file: supported, the target is replaced (`350`, then `250`); RNFR of a missing file -> `550`.
//! - SIZE: supported, `213 <bytes>`, also in ASCII mode; missing file -> `550`.
//! - MKD of an existing directory: `550` (text "File not found"); a new directory -> `257`.
//! - DELE: supported (`250`); missing file -> `550`.
//! - Also: `SITE MD5 <path>` -> `213 <md5hex>    /<path>` for logged-in users; wrong password or unknown user -> `530 Authentication failed`; a data connection reset mid-STOR -> `426 Connection closed`, and the partial file stays on disk, usually shorter than what reached the server's socket (the RST discards unread socket buffers and unftp-sbe-fs drops up to 4 KiB buffered in its BufWriter), so resume offsets must come from SIZE.

use async_trait::async_trait;
use libunftp::options::Binder;
use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal, UserDetail};
use unftp_core::storage::{Error as StorageError, ErrorKind, Fileinfo, Metadata, StorageBackend};
use unftp_sbe_fs::{Filesystem, Meta};

pub const DEFAULT_USER: &str = "alice";
pub const DEFAULT_PASSWORD: &str = "s3cret-Pa55";

/// An FTP server running inside the test's tokio runtime. Stops on drop.
pub struct FtpServer {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub user: String,
    pub password: String,
    counters: Arc<Counters>,
    running: Mutex<Option<Running>>,
    // Declared last so it is removed after everything else stopped.
    _tempdir: Option<tempfile::TempDir>,
}

#[derive(Debug, Default)]
struct Counters {
    logins: AtomicUsize,
    connections: AtomicUsize,
    /// Control connections open now, and the most open at once since the last reset.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    /// What a password check costs, in ms (pure-ftpd's argon2 takes ~3 s).
    login_cost_ms: AtomicUsize,
    /// Password checks under way now, and the most at once.
    checking: AtomicUsize,
    peak_checking: AtomicUsize,
    /// Control connections open as the first password check ended (+1, 0: none yet).
    open_after_first_check: AtomicUsize,
}

struct Running {
    accept_task: JoinHandle<()>,
    kill: watch::Sender<bool>,
}

impl Running {
    fn stop(self) {
        // Aborting the accept task drops the listener and the JoinSet of sessions, which aborts
        // every `Server::service` future; that drops libunftp's shutdown notifier so the control
        // loops exit. Data transfers run in tasks libunftp spawns itself, so they are stopped
        // through the kill switch in `KillableFs`.
        self.accept_task.abort();
        self.kill.send_replace(true);
    }
}

impl FtpServer {
    /// Start on `127.0.0.1:<ephemeral>` with user `alice` / `s3cret-Pa55` and a fresh temporary root.
    pub async fn start() -> FtpServer {
        let tempdir = tempfile::tempdir().expect("create temp dir for FTP root");
        let root = tempdir.path().to_path_buf();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Self::launch(addr, root, Some(tempdir)).await
    }

    /// Start on a given address (e.g. from `support::free_local_addr()`), serving `root`, which
    /// the caller owns. Retries for a few seconds while the address is still in use (e.g. right
    /// after stopping a previous server on it).
    pub async fn start_on(addr: SocketAddr, root: PathBuf) -> FtpServer {
        std::fs::create_dir_all(&root).expect("create FTP root");
        Self::launch(addr, root, None).await
    }

    async fn launch(
        addr: SocketAddr,
        root: PathBuf,
        tempdir: Option<tempfile::TempDir>,
    ) -> FtpServer {
        let mut server = FtpServer {
            addr,
            root,
            user: DEFAULT_USER.to_string(),
            password: DEFAULT_PASSWORD.to_string(),
            counters: Arc::new(Counters::default()),
            running: Mutex::new(None),
            _tempdir: tempdir,
        };
        server.run().await;
        server
    }

    async fn run(&mut self) {
        let listener = bind_with_retry(self.addr).await;
        self.addr = listener.local_addr().expect("listener local addr");
        let (kill, kill_rx) = watch::channel(false);
        let cfg = SessionConfig {
            root: self.root.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            counters: self.counters.clone(),
            kill: kill_rx,
        };
        let accept_task = tokio::spawn(accept_loop(listener, cfg));
        *self.running.lock().unwrap() = Some(Running { accept_task, kill });
    }

    /// Stop (if running) and start again on the same address and root; counters are kept.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// `root.join(rel)`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Stop accepting connections and drop every live session: control connections are closed and
    /// running data transfers fail. Idempotent. The listening socket is closed asynchronously,
    /// shortly after this returns (`start_on`/`restart` retry the bind).
    pub fn stop(&self) {
        if let Some(running) = self.running.lock().unwrap().take() {
            running.stop();
        }
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// Number of successful authentications (one per logged-in session) since start.
    /// Each password check takes `ms` from now on, as a costly hash would.
    pub fn set_login_cost(&self, ms: usize) {
        self.counters.login_cost_ms.store(ms, Ordering::SeqCst);
    }

    /// The most password checks under way at once.
    pub fn peak_password_checks(&self) -> usize {
        self.counters.peak_checking.load(Ordering::SeqCst)
    }

    /// Control connections that were open as the first password check
    /// ended (the others' logins under way beside it).
    pub fn open_after_first_check(&self) -> usize {
        self.counters
            .open_after_first_check
            .load(Ordering::SeqCst)
            .saturating_sub(1)
    }

    pub fn count_logins(&self) -> usize {
        self.counters.logins.load(Ordering::SeqCst)
    }

    /// Control connections open now.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// The most control connections open at once since [`FtpServer::reset_peak`].
    pub fn peak_connections(&self) -> usize {
        self.counters.peak_open.load(Ordering::SeqCst)
    }

    pub fn reset_peak(&self) {
        self.counters
            .peak_open
            .store(self.open_connections(), Ordering::SeqCst);
    }

    /// Number of control connections accepted since start.
    pub fn count_connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Panics if an ftpdrop temp or probe file (`.ftpdrop-*`) is left anywhere below `root`.
    pub fn assert_no_temp_files(&self) {
        let left: Vec<String> = self
            .files()
            .into_iter()
            .filter(|f| f.contains(".ftpdrop-"))
            .collect();
        assert!(left.is_empty(), "temp files left on the server: {left:?}");
    }

    /// Sorted relative paths (with `/`) of all regular files below `root`.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_files(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            collect_files(root, &path, out);
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
}

async fn bind_with_retry(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("FtpServer: cannot bind {addr}: {e}"),
        }
    }
}

#[derive(Clone)]
struct SessionConfig {
    root: PathBuf,
    user: String,
    password: String,
    counters: Arc<Counters>,
    kill: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, cfg: SessionConfig) {
    // Dropping this JoinSet (when the task is aborted) aborts all sessions.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    cfg.counters.connections.fetch_add(1, Ordering::SeqCst);
                    let now = cfg.counters.open.fetch_add(1, Ordering::SeqCst) + 1;
                    cfg.counters.peak_open.fetch_max(now, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    let server = build_server(&cfg);
                    let counters = cfg.counters.clone();
                    sessions.spawn(async move {
                        let _ = server.service(stream).await;
                        counters.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

fn build_server(
    cfg: &SessionConfig,
) -> libunftp::Server<KillableFs, unftp_core::auth::DefaultUser> {
    let root = cfg.root.clone();
    let kill = cfg.kill.clone();
    let auth = Arc::new(TestAuthenticator {
        user: cfg.user.clone(),
        password: cfg.password.clone(),
        counters: cfg.counters.clone(),
    });
    libunftp::ServerBuilder::with_authenticator(
        Box::new(move || KillableFs {
            inner: Filesystem::new(root.clone()).expect("open FTP root"),
            kill: kill.clone(),
        }),
        auth,
    )
    .logger(slog::Logger::root(slog::Discard, slog::o!()))
    .binder(EphemeralBinder)
    .build()
    .expect("build libunftp server")
}

/// Accepts exactly one user/password pair and counts successful logins.
#[derive(Debug)]
struct TestAuthenticator {
    user: String,
    password: String,
    counters: Arc<Counters>,
}

#[async_trait]
impl Authenticator for TestAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let c = &self.counters;
        let now = c.checking.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_checking.fetch_max(now, Ordering::SeqCst);
        let cost = c.login_cost_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(cost)).await;
        let open = c.open.load(Ordering::SeqCst) + 1;
        let _ =
            c.open_after_first_check
                .compare_exchange(0, open, Ordering::SeqCst, Ordering::SeqCst);
        c.checking.fetch_sub(1, Ordering::SeqCst);
        if username != self.user {
            return Err(AuthenticationError::BadUser);
        }
        if creds.password.as_deref() != Some(self.password.as_str()) {
            return Err(AuthenticationError::BadPassword);
        }
        self.counters.logins.fetch_add(1, Ordering::SeqCst);
        Ok(Principal {
            username: username.to_string(),
        })
    }
}

/// Binds passive data listeners to an OS-chosen port instead of libunftp's random pick in
/// 49152..=65535, so parallel tests never collide.
#[derive(Debug)]
struct EphemeralBinder;

#[async_trait]
impl Binder for EphemeralBinder {
    async fn bind(
        &mut self,
        local_addr: IpAddr,
        _passive_ports: RangeInclusive<u16>,
    ) -> io::Result<TcpSocket> {
        let socket = match local_addr {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local_addr, 0))?;
        Ok(socket)
    }
}

/// `unftp_sbe_fs::Filesystem` plus a kill switch: once the server stops, uploads in progress fail
/// (dropping their data socket) and downloads return an error on their next read.
#[derive(Debug)]
struct KillableFs {
    inner: Filesystem,
    kill: watch::Receiver<bool>,
}

fn stopped_error() -> StorageError {
    StorageError::new(ErrorKind::ConnectionClosed, "FTP test server stopped")
}

#[async_trait]
impl<User: UserDetail> StorageBackend<User> for KillableFs {
    type Metadata = Meta;

    fn enter(&mut self, user_detail: &User) -> io::Result<()> {
        StorageBackend::<User>::enter(&mut self.inner, user_detail)
    }

    fn supported_features(&self) -> u32 {
        StorageBackend::<User>::supported_features(&self.inner)
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<Self::Metadata> {
        self.inner.metadata(user, path).await
    }

    async fn list<P>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<Vec<Fileinfo<PathBuf, Self::Metadata>>>
    where
        P: AsRef<Path> + Send + Debug,
        <Self as StorageBackend<User>>::Metadata: Metadata,
    {
        self.inner.list(user, path).await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        let reader = self.inner.get(user, path, start_pos).await?;
        Ok(Box::new(KillableReader {
            inner: reader,
            kill: self.kill.clone(),
        }))
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &User,
        input: R,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<u64> {
        let mut kill = self.kill.clone();
        tokio::select! {
            result = self.inner.put(user, input, path, start_pos) => result,
            // Also fires when the sender is gone (server dropped).
            _ = kill.wait_for(|k| *k) => Err(stopped_error()),
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        self.inner.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        self.inner.mkd(user, path).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        from: P,
        to: P,
    ) -> unftp_core::storage::Result<()> {
        self.inner.rename(user, from, to).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        self.inner.rmd(user, path).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        self.inner.cwd(user, path).await
    }
}

struct KillableReader {
    inner: Box<dyn AsyncRead + Send + Sync + Unpin>,
    kill: watch::Receiver<bool>,
}

impl AsyncRead for KillableReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // `has_changed` errs once the sender is gone (server dropped).
        if *self.kill.borrow() || self.kill.has_changed().is_err() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "FTP test server stopped",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
