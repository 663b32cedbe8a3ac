//! TLS client configuration for FTPS: trust roots, per-server CA files and
//! the explicit opt-out of verification.
//!
//! One `ClientConfig` is built per (CA file, verification) pair. Each FTP
//! session then gets its own copy of it with its own [`SessionCache`]:
//! servers such as vsftpd with `require_ssl_reuse=YES` (and proftpd's
//! mod_tls by default) accept a data connection only if it resumes the TLS
//! session of *its own* control connection, so tickets must not leak from one
//! control connection to another's data connections.
//!
//! TLS 1.3 makes this harder than 1.2. A TLS 1.2 session can be resumed any
//! number of times, but a TLS 1.3 ticket is single-use, and OpenSSL-based
//! servers hand out only two on the control connection. Each data connection
//! gets fresh tickets from the server, but a client only sees them if it reads
//! from the connection, which an upload never does; [`SessionCache`] counts
//! the tickets so that `ftp` can read them off the data connection before
//! closing it (see `Session::finish`).
//!
//! A server's control connections share [`ControlShare`]:
//! - the key exchange group the server took. Without it every new control
//!   connection to a server that does not take rustls's first choice
//!   (vsftpd 3.0.3 takes P-256 only) pays a HelloRetryRequest: one more
//!   round trip per login.
//! - where the server allows it, a TLS 1.2 session: the next control
//!   connection's handshake resumes it, one round trip shorter than a full
//!   TLS 1.2 handshake, and without the key exchange and certificate check.
//!   Only the control handshake looks there; data connections keep to their
//!   own control connection's cache. Whether the server allows it is learned
//!   (`Facts::control_tls_resume`): proftpd's mod_tls ties data connections
//!   to tickets issued on their own control connection, and refuses (425)
//!   those of a control connection that resumed another one's session.
//!
//! TLS 1.3 tickets are not shared: a resumed TLS 1.3 handshake is no
//! shorter than a full one, and where tickets come on the control
//! connection only, each one lent away is one data connection fewer for the
//! session that got it.

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The operating system's trust store, loaded once: reading it takes tens of milliseconds.
fn system_roots() -> &'static Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            Err(format!(
                "no trusted root certificates found on this system ({} errors); set ca_file",
                found.errors.len()
            ))
        } else {
            Ok(store)
        }
    })
}

/// The biggest `ca_file` read (the system bundles are about 200 KiB).
const CA_FILE_MAX: u64 = 4 << 20;

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    // A job may name it: a regular file only, never an open that blocks,
    // and no bigger than any real CA bundle.
    let pem = crate::localfile::read_small(path, CA_FILE_MAX)
        .with_context(|| format!("cannot read ca_file {}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("ca_file {} is not a PEM certificate bundle", path.display()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(anyhow!(
            "ca_file {} holds no usable certificate",
            path.display()
        ));
    }
    Ok(store)
}

/// Builds (once) and hands out TLS client configs.
/// (CA file, skip verification, TLS 1.2 only, pins and client certificate) → config.
type ConfigCache =
    HashMap<(Option<PathBuf>, bool, bool, crate::config::TlsOptions), Arc<ClientConfig>>;

#[derive(Default)]
pub struct TlsConfigs {
    cache: Mutex<ConfigCache>,
}

impl TlsConfigs {
    /// The config for these trust settings; with `tls12_only`, one that
    /// offers TLS 1.2 alone (for servers whose TLS 1.3 sessions cannot be
    /// resumed on every data connection, see `ftp::learned`).
    pub fn get(
        &self,
        ca_file: Option<&Path>,
        insecure: bool,
        tls12_only: bool,
        options: &crate::config::TlsOptions,
    ) -> Result<Arc<ClientConfig>> {
        let key = (
            ca_file.map(Path::to_path_buf),
            insecure,
            tls12_only,
            options.clone(),
        );
        if let Some(cfg) = self.cache.lock().unwrap().get(&key) {
            return Ok(cfg.clone());
        }
        let builder = ClientConfig::builder_with_provider(provider());
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .context("TLS provider setup")?;
        let builder = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else if !options.pins.is_empty() {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pins: options.pins.clone(),
                    signatures: NoVerification(provider()),
                }))
        } else {
            let roots = match ca_file {
                Some(p) => roots_from_file(p)?,
                None => system_roots().clone().map_err(|e| anyhow!(e))?,
            };
            builder.with_root_certificates(roots)
        };
        let cfg = match &options.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (chain, key) = client_identity(cert, key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("client_cert_file and client_key_file do not make a usable identity")?
            }
        };
        let cfg = Arc::new(cfg);
        self.cache.lock().unwrap().insert(key, cfg.clone());
        Ok(cfg)
    }
}

/// Gives one control connection its own copy of `base` with its own
/// session cache, which shares what `share` allows with the server's other
/// control connections.
pub(crate) fn for_session(
    base: &Arc<ClientConfig>,
    share: Option<Sharing>,
) -> (Arc<ClientConfig>, Arc<SessionCache>) {
    let cache = Arc::new(SessionCache {
        share,
        ..SessionCache::default()
    });
    let mut cfg = (**base).clone();
    cfg.resumption = Resumption::store(cache.clone());
    (Arc::new(cfg), cache)
}

/// TLS 1.3 tickets kept at most; servers usually send one or two at a time.
const MAX_TICKETS: usize = 8;

/// The TLS session state of one control connection and its data connections.
/// It serves one server name, so names are not looked at.
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    state: Mutex<CacheState>,
    /// What is shared with the server's other control connections.
    share: Option<Sharing>,
    /// How the control connection's handshake went, once it is over: from
    /// then on only data connections look here, and they must not resume
    /// another control connection's session.
    control: OnceLock<rustls::HandshakeKind>,
}

/// What one server's control connections share (see the module doc).
#[derive(Debug, Default)]
pub struct ControlShare {
    kx_hint: Mutex<Option<NamedGroup>>,
    tls12: Mutex<Option<Tls12ClientSessionValue>>,
}

impl ControlShare {
    /// Starts with the group learned earlier, if any.
    pub(crate) fn with_group(group: Option<u16>) -> ControlShare {
        ControlShare {
            kx_hint: Mutex::new(group.map(NamedGroup::from)),
            ..ControlShare::default()
        }
    }

    /// The key exchange group the server took, as its IANA number.
    pub(crate) fn group(&self) -> Option<u16> {
        self.kx_hint.lock().unwrap().map(u16::from)
    }
}

/// A control connection's part in its server's [`ControlShare`].
#[derive(Debug, Clone)]
pub struct Sharing {
    pub share: Arc<ControlShare>,
    /// The control handshake may resume the shared TLS 1.2 session.
    pub sessions: bool,
}

#[derive(Debug, Default)]
struct CacheState {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
    /// TLS 1.3 tickets received so far, ever.
    tls13_received: u64,
}

impl SessionCache {
    /// Whether the server speaks TLS 1.3 with tickets to this session.
    pub(crate) fn is_tls13(&self) -> bool {
        self.state.lock().unwrap().tls13_received > 0
    }

    /// TLS 1.3 tickets ready for the next data connections.
    pub(crate) fn tickets(&self) -> usize {
        self.state.lock().unwrap().tls13.len()
    }

    /// The control connection's handshake is over, and went as `kind`.
    fn control_done(&self, kind: Option<rustls::HandshakeKind>) {
        let _ = self
            .control
            .set(kind.unwrap_or(rustls::HandshakeKind::Full));
    }

    /// How the control handshake went, once it is over.
    pub(crate) fn control_handshake(&self) -> Option<rustls::HandshakeKind> {
        self.control.get().copied()
    }

    /// Did the control handshake resume a session (from an earlier control
    /// connection to the server)?
    pub(crate) fn control_resumed(&self) -> bool {
        self.control_handshake() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The shared TLS 1.2 session, while the control handshake runs and
    /// where it may resume one.
    fn shared_tls12(&self) -> Option<Tls12ClientSessionValue> {
        match &self.share {
            Some(s) if s.sessions && self.control.get().is_none() => {
                s.share.tls12.lock().unwrap().clone()
            }
            _ => None,
        }
    }

    /// A counter that moves each time a TLS 1.3 ticket arrives.
    pub(crate) fn received(&self) -> u64 {
        self.state.lock().unwrap().tls13_received
    }
}

impl ClientSessionStore for SessionCache {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        if let Some(s) = &self.share {
            *s.share.kx_hint.lock().unwrap() = Some(group);
        }
        self.state.lock().unwrap().kx_hint = Some(group);
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        let own = self.state.lock().unwrap().kx_hint;
        own.or_else(|| {
            let s = self.share.as_ref()?;
            *s.share.kx_hint.lock().unwrap()
        })
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(s) = &self.share {
            // A TLS 1.2 session resumes any number of times. Only control
            // handshakes look at it, and only where the server allows.
            *s.share.tls12.lock().unwrap() = Some(value.clone());
        }
        self.state.lock().unwrap().tls12 = Some(value);
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let mut st = self.state.lock().unwrap();
        if st.tls12.is_none() {
            // Kept here too: if the handshake resumes it, this control
            // connection's data connections resume the same session.
            st.tls12 = self.shared_tls12();
        }
        st.tls12.clone()
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.state.lock().unwrap().tls12 = None;
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut st = self.state.lock().unwrap();
        if st.tls13.len() == MAX_TICKETS {
            st.tls13.pop_front();
        }
        st.tls13.push_back(value);
        st.tls13_received += 1;
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest ticket is the least likely to have expired.
        self.state.lock().unwrap().tls13.pop_back()
    }
}

/// A client certificate chain and its key, from PEM files.
fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    use rustls::pki_types::pem::PemObject;
    let pem = crate::localfile::read_small(cert, CA_FILE_MAX)
        .with_context(|| format!("cannot read client_cert_file {}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("client_cert_file {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "client_cert_file {} holds no certificate",
            cert.display()
        ));
    }
    let pem = crate::localfile::read_small(key, CA_FILE_MAX)
        .with_context(|| format!("cannot read client_key_file {}", key.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("client_key_file {} holds no PEM private key", key.display()))?;
    Ok((chain, key))
}

/// The SHA-256 fingerprints of a certificate: of the whole certificate,
/// and of its public key (SPKI), as lowercase hex.
pub fn fingerprints(cert: &CertificateDer<'_>) -> (String, Option<String>) {
    use sha2::{Digest, Sha256};
    let whole = hex::encode(Sha256::digest(cert.as_ref()));
    let key = webpki::EndEntityCert::try_from(cert)
        .ok()
        .map(|c| hex::encode(Sha256::digest(c.subject_public_key_info().as_ref())));
    (whole, key)
}

/// Trusts a server by the fingerprint of its certificate or of its key
/// (`tls_pin_sha256`) instead of a CA: what a self-signed certificate
/// needs, with the handshake's signatures still checked.
#[derive(Debug)]
struct Pinned {
    pins: Vec<String>,
    /// The handshake's signatures are checked as always.
    signatures: NoVerification,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (whole, key) = fingerprints(end_entity);
        if self.pins.contains(&whole) || key.as_ref().is_some_and(|k| self.pins.contains(k)) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "the server's certificate matches no tls_pin_sha256 (its certificate's SHA-256 is {whole}{})",
            key.map(|k| format!(", its public key's {k}")).unwrap_or_default()
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Accepts any certificate (its handshake signatures still checked); only
/// reachable through `insecure_skip_verify`, and inside [`Pinned`].
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS stream under every FTPS control and data connection.
///
/// tokio-rustls accepts a write into rustls' buffer and reports it written
/// even when the socket could not take the TLS record yet (a full socket, or
/// tokio's cooperative budget running out); the record goes out on the next
/// write or flush. suppaftp never flushes after a command, so a command could
/// sit in that buffer while we wait for its reply: an FTPS session that hung
/// until the command timeout now and then (seen on vsftpd, `STOR` never
/// arriving). This wrapper flushes after every write and, above all, before
/// every read, so whoever waits for a reply also pushes the request out.
#[derive(Debug)]
pub(crate) struct FtpsStream {
    inner: suppaftp::tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    /// Command lines the session wrote itself (see [`Outbox`]).
    outbox: Outbox,
}

/// Command lines for a TLS control connection that the session writes
/// itself, to pipeline them: suppaftp owns the stream, so they are queued
/// here and the stream writes them before anything suppaftp writes and
/// before it reads, which keeps them in order with suppaftp's own commands
/// and sends them no later than the wait for their replies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox(Arc<std::sync::Mutex<Vec<u8>>>);

impl Outbox {
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

impl FtpsStream {
    /// Writes what is queued in the outbox into the TLS stream.
    fn poll_outbox(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let FtpsStream { inner, outbox } = self;
        let mut queued = outbox.0.lock().unwrap();
        while !queued.is_empty() {
            match tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut *inner), cx, &queued) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    queued.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl FtpsStream {}

impl tokio::io::AsyncRead for FtpsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_outbox(cx))?;
        let inner = std::pin::Pin::new(&mut self.inner);
        if let std::task::Poll::Ready(Err(e)) = tokio::io::AsyncWrite::poll_flush(inner, cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for FtpsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_outbox(cx))?;
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            // Best effort; what stays buffered goes out at the next read.
            let _ = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl suppaftp::tokio::TokioTlsStream for FtpsStream {
    type InnerStream = suppaftp::tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    fn tcp_stream(self) -> suppaftp::FtpResult<tokio::net::TcpStream> {
        Ok(self.inner.into_inner().0)
    }

    fn get_ref(&self) -> &tokio::net::TcpStream {
        self.inner.get_ref().0
    }

    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        &mut self.inner
    }
}

/// Starts TLS on FTPS control connections, as [`FtpsStream`]s.
#[derive(Clone)]
pub(crate) struct FtpsConnector {
    tls: suppaftp::tokio_rustls::TlsConnector,
    /// The control connection's outbox and session cache, for the first
    /// stream made (the control connection); any later one (suppaftp's own
    /// data connections, which ftpdrop does not use) gets an outbox of its
    /// own and tells the cache nothing.
    control: Arc<std::sync::Mutex<Option<ControlParts>>>,
}

/// What only the control connection's stream gets: its outbox, and the
/// session cache to tell how its handshake went.
type ControlParts = (Outbox, Arc<SessionCache>);

impl FtpsConnector {
    /// `config` must be the one [`for_session`] gave with `cache`.
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        outbox: Outbox,
        cache: Arc<SessionCache>,
    ) -> FtpsConnector {
        FtpsConnector {
            tls: suppaftp::tokio_rustls::TlsConnector::from(config),
            control: Arc::new(std::sync::Mutex::new(Some((outbox, cache)))),
        }
    }
}

impl std::fmt::Debug for FtpsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FtpsConnector")
    }
}

type ConnectFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = suppaftp::FtpResult<FtpsStream>> + Send + 'a>,
>;

// The trait is declared with `#[async_trait]`; this is the signature it expands to.
impl suppaftp::tokio::AsyncTlsConnector for FtpsConnector {
    type Stream = FtpsStream;

    fn connect<'a, 'b, 'c>(
        &'a self,
        domain: &'b str,
        stream: tokio::net::TcpStream,
    ) -> ConnectFuture<'c>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let name = ServerName::try_from(domain.to_string())
                .map_err(|e| suppaftp::FtpError::SecureError(e.to_string()))?;
            let control = self.control.lock().unwrap().take();
            let inner = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| suppaftp::FtpError::SecureError(e.to_string()))?;
            let outbox = match control {
                Some((outbox, cache)) => {
                    cache.control_done(inner.get_ref().1.handshake_kind());
                    outbox
                }
                None => Outbox::default(),
            };
            Ok(FtpsStream { inner, outbox })
        })
    }
}
