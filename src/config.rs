//! The daemon's configuration file: every field, its default, and validation.
//!
//! Every field is optional, so `ftpdrop run` works with no file at all.
//! Unknown keys are rejected by name, because a misspelt key that is silently
//! ignored is a setting the operator believes in but does not have.

use crate::job::confine::{HostRules, HostVerdict, LocalRoots};
use crate::secret::Secret;
use anyhow::{anyhow, bail, Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS mode of an FTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain FTP.
    #[default]
    None,
    /// `AUTH TLS` on the normal port, then TLS on control and data.
    Explicit,
    /// TLS from the first byte (usually port 990).
    Implicit,
}

/// How much proof of arrival an entry asks for, beyond the size check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Size always; a server-side hash when the server offers one.
    Auto,
    /// Size only.
    Size,
    /// Read the file back over FTP and compare SHA-256.
    Download,
    /// Nothing: a drop box that allows no SIZE. The receipt says the file
    /// was sent, not verified. Never chosen by ftpdrop itself.
    None,
}

/// How a file becomes visible under its final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// Uploaded to a temp name, checked, renamed: no reader sees a partial file.
    #[default]
    Rename,
    /// Uploaded under the final name: for drop boxes that allow no rename
    /// (or no temp name). A reader may see a partial file.
    Direct,
}

/// A proxy every connection to a server goes through (control and data).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxySpec {
    pub kind: ProxyKind,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// SOCKS5 (RFC 1928), with a user and password (RFC 1929) if given.
    Socks5,
    /// An HTTP proxy's CONNECT tunnel, with Basic authentication if given.
    HttpConnect,
}

impl ProxySpec {
    /// `socks5://[user@]host:port` or `http://[user@]host:port`; a
    /// password in the URL is refused (it goes by reference, like a
    /// server's).
    pub fn parse(url: &str) -> std::result::Result<ProxySpec, String> {
        let (kind, rest) = if let Some(r) = url.strip_prefix("socks5://") {
            (ProxyKind::Socks5, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (ProxyKind::HttpConnect, r)
        } else {
            return Err(format!(
                "{:?} is not socks5://host:port or http://host:port",
                crate::host::without_password(url)
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                return Err("a password in the proxy URL is refused: give proxy_password_env or proxy_password_file".into())
            }
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)),
            None => (hostport, None),
        };
        let Some(port) = port else {
            return Err(format!("{hostport:?}: the proxy needs a port (host:port)"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the proxy URL has no host".into());
        }
        Ok(ProxySpec {
            kind,
            host: host.to_string(),
            port,
            user,
            password: Secret::default(),
        })
    }
}

impl std::fmt::Display for ProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::HttpConnect => "http",
        };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        write!(
            f,
            "{scheme}://{user}{}",
            crate::host::host_port(&self.host, self.port)
        )
    }
}

/// How data connections are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Passive (EPSV, then PASV); active where the server refuses both,
    /// which is then remembered.
    #[default]
    Auto,
    Passive,
    /// The server connects to us (EPRT, or PORT): for servers that allow
    /// only that.
    Active,
}

/// A server's data connections: the mode, and the local ports active mode
/// listens on (`None`: any free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataSpec {
    pub mode: DataMode,
    pub ports: Option<(u16, u16)>,
}

/// `"50000-50100"` as (50000, 50100).
pub fn port_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-')?;
    let (lo, hi) = (
        lo.trim().parse::<u16>().ok()?,
        hi.trim().parse::<u16>().ok()?,
    );
    (lo > 0 && lo <= hi).then_some((lo, hi))
}

/// The highest TLS version offered to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// A named server's TLS settings beyond trust in a CA: a version cap,
/// pinned fingerprints, a client certificate. Part of the pool's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Offer TLS 1.2 alone (`tls_max_version: "1.2"`).
    pub tls12_only: bool,
    /// SHA-256 fingerprints (lowercase hex) of the certificate or of its
    /// public key (SPKI) that are trusted instead of a CA.
    pub pins: Vec<String>,
    /// PEM certificate (chain) and key presented to the server.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A fingerprint as operators paste it (`AB:CD:...` or hex), as 64
/// lowercase hex digits; `None` if it is not a SHA-256 fingerprint.
pub fn pin_of(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The code page a server's file names travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
pub enum CodePage {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows Cyrillic, as Russian hosting and Windows servers without UTF-8 store names.
    #[serde(rename = "cp1251")]
    Cp1251,
    #[serde(rename = "koi8-r")]
    Koi8R,
    /// DOS Cyrillic.
    #[serde(rename = "cp866")]
    Cp866,
}

/// A named server's `encoding`: `auto`, or a code page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
pub enum NameEncoding {
    /// UTF-8 where the server's FEAT lists it, else `legacy_encoding`.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "cp1251")]
    Cp1251,
    #[serde(rename = "koi8-r")]
    Koi8R,
    #[serde(rename = "cp866")]
    Cp866,
}

/// How a server's names are encoded, resolved from the configuration: a
/// code page, or UTF-8 where FEAT lists it and `fallback` where not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Names {
    Auto { fallback: CodePage },
    Fixed(CodePage),
}

impl Default for Names {
    fn default() -> Self {
        Names::Auto {
            fallback: CodePage::Utf8,
        }
    }
}

impl Names {
    /// `encoding` as a server sets it, with the daemon's `legacy_encoding`.
    pub fn of(encoding: NameEncoding, legacy: CodePage) -> Names {
        match encoding {
            NameEncoding::Auto => Names::Auto { fallback: legacy },
            NameEncoding::Utf8 => Names::Fixed(CodePage::Utf8),
            NameEncoding::Cp1251 => Names::Fixed(CodePage::Cp1251),
            NameEncoding::Koi8R => Names::Fixed(CodePage::Koi8R),
            NameEncoding::Cp866 => Names::Fixed(CodePage::Cp866),
        }
    }

    /// The code page for a server whose FEAT does (`utf8`) or does not list UTF8.
    pub fn resolve(self, utf8: bool) -> CodePage {
        match self {
            Names::Fixed(page) => page,
            Names::Auto { .. } if utf8 => CodePage::Utf8,
            Names::Auto { fallback } => fallback,
        }
    }
}

/// The daemon's configuration. Every field is optional.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Watched folder for `*.json` job files.
    pub inbox: PathBuf,
    /// Claimed jobs and their receipts.
    pub checked: PathBuf,
    /// Global cap on simultaneous FTP control connections.
    pub max_connections: usize,
    /// Cap on simultaneous connections to one server (host, port, login, TLS mode).
    pub max_connections_per_server: usize,
    /// Jobs worked on at once; further job files wait in the inbox (back-pressure).
    pub max_concurrent_jobs: usize,
    /// TCP connect plus greeting, seconds.
    pub connect_timeout_secs: u64,
    /// One FTP command and its reply, seconds.
    pub command_timeout_secs: u64,
    /// A data connection that moves no byte for this long is a fault, seconds.
    pub data_timeout_secs: u64,
    /// A job file is read only after its size and mtime stayed unchanged this long.
    pub settle_ms: u64,
    /// Full scan of the inbox as a safety net for missed events (and NFS), milliseconds.
    pub sweep_interval_ms: u64,
    /// Job files larger than this are rejected as invalid.
    pub max_job_bytes: u64,
    /// A job file whose JSON stops mid-way (a producer writing it in pieces)
    /// is left alone until it has stayed unchanged this long, in
    /// milliseconds; then it is claimed and, if still cut short, invalid.
    pub incomplete_grace_ms: u64,
    /// Retry policy for transient faults.
    pub retry: RetryConfig,
    /// On SIGTERM/SIGINT, how long in-flight uploads may run before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Idle logged-in sessions are closed after this long.
    pub idle_session_secs: u64,
    /// How long a server may go on holding a session ftpdrop gave up (a
    /// timeout, a dropped link), in seconds: until the server closes it, or
    /// for this long, it still counts against `max_connections_per_server`.
    /// A server's session stuck on a silent data connection waits for the
    /// server's own timeout (vsftpd, proftpd: 300 s).
    pub abandoned_session_secs: u64,
    /// Files at least this big go over several connections at once, one
    /// segment each, where the server allows it (see `segment`); 0 turns
    /// segmented uploads off.
    pub segment_threshold_bytes: u64,
    /// Most connections one segmented upload uses, the first included; 0 or 1 turns them off.
    pub max_segments: usize,
    /// How long a big file goes in one stream before it may be split; it is
    /// split only if the rest would then take over 2 s at the rate so far.
    /// 0: split at once, without measuring.
    pub segment_after_ms: u64,
    /// Send several FTP commands per round trip where a probe finds that the
    /// server keeps them in order (and stops where one does not); false: one at a
    /// time, everywhere (for a middlebox that mangles pipelined commands).
    pub pipelining: bool,
    /// Servers that job files may name instead of carrying credentials.
    pub servers: BTreeMap<String, ServerDef>,
    /// Folders that jobs may read local files from. A `local_path` must
    /// resolve, after symlinks and `..`, inside one of them; checked on the
    /// file actually opened. Empty: any file the daemon can read.
    pub local_roots: Vec<PathBuf>,
    /// Hosts that jobs may send files to: exact names, `*.example.com`
    /// (any name below example.com), addresses and networks (`10.0.0.0/8`).
    /// A name matched only by a network must resolve into it when
    /// connecting. Empty: any host.
    pub allowed_hosts: Vec<String>,
    /// Jobs may only name servers from `servers`; inline hosts and
    /// credentials are refused.
    pub require_named_servers: bool,
    /// Final jobs, their receipts and journals older than this many days
    /// are deleted (default 90: a quarter's audit trail, and a folder that
    /// stops growing). 0: keep forever. Running jobs are never touched.
    pub retention_days: u64,
    /// Where logs go besides (instead of) stderr.
    pub log: LogConfig,
    /// How often, in seconds, `checked/` is scanned for jobs whose instance
    /// died (their lock is free, their receipt not final); such a job is
    /// taken over and finished from its journal. 0: only at startup.
    pub takeover_interval_secs: u64,
    /// Jobs from NATS JetStream as well as from the inbox; null: inbox only.
    pub nats: Option<NatsConfig>,
    /// What ftpdrop learns about servers (segment probe verdicts, connection
    /// limits) is kept in `ftpdrop-learned.json` beside `checked/` for this
    /// many seconds, across restarts. 0: not kept.
    pub learned_ttl_secs: u64,
    /// The HTTP status API, metrics and dashboard of `ftpdrop run`.
    pub status: StatusConfig,
    /// Upload bandwidth of the whole daemon, shared fairly by every
    /// connection: bytes/s, `"512k"`, `"10M"`, `"off"`, or a timetable in
    /// local time (`"08:00,512k 19:00,10M 23:00,off"`). Null: no limit.
    pub max_rate: Option<crate::rate::RateSetting>,
    /// The code page of file names on servers whose `encoding` is `auto`
    /// and whose FEAT does not list UTF8: `utf-8` (default), `cp1251`,
    /// `koi8-r` or `cp866`.
    pub legacy_encoding: CodePage,
    /// Who is told when a job ends: `{"webhooks": [{"url", "on", "secret_file", "headers", "ca_file"}]}`.
    pub notify: NotifyConfig,
}

/// Where the status API listens, and who may use it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// `address:port`; null turns the API off. Default `127.0.0.1:9180`.
    /// Anything but a loopback address needs `token_file`.
    pub listen: Option<String>,
    /// A file whose first line is the token every request must carry
    /// (`Authorization: Bearer <token>`). Default: `ftpdrop-api-token`
    /// beside `checked/`, generated at first start, owner-only.
    pub token_file: Option<PathBuf>,
    /// Host names the API answers to besides IP addresses and `localhost`
    /// (a reverse proxy's name). Any other `Host` is refused, so that a web
    /// page cannot reach the API through a name of its own (DNS rebinding).
    pub(crate) allowed_hosts: Vec<String>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: Some("127.0.0.1:9180".into()),
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

impl StatusConfig {
    /// The address to listen on, checked: a non-loopback address without a
    /// token is refused (the API can submit jobs).
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = listen.parse().with_context(|| {
            format!("status.listen {listen:?}: expected address:port, e.g. 127.0.0.1:9180")
        })?;
        if !addr.ip().is_loopback() && self.token_file.is_none() {
            bail!(
                "status.listen {listen}: a non-loopback address needs status.token_file \
                 (the API takes jobs); set one, or listen on 127.0.0.1"
            );
        }
        Ok(Some(addr))
    }
}

/// A NATS JetStream work queue as a second intake: a durable pull consumer
/// whose messages are jobs (the same JSON as a job file).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated, e.g. `nats://nats1:4222,nats://nats2:4222`.
    #[serde(serialize_with = "crate::secret::serialize_url")]
    pub(crate) url: String,
    /// The stream holding the jobs; created (work-queue retention) if missing.
    #[serde(default = "default_nats_stream")]
    pub(crate) stream: String,
    /// The subject jobs are published to.
    #[serde(default = "default_nats_subject")]
    pub subject: String,
    /// The durable consumer every instance shares.
    #[serde(default = "default_nats_durable")]
    pub(crate) durable: String,
    /// Receipts are published to `<receipts_subject>.<job>`.
    #[serde(default = "default_nats_receipts")]
    pub(crate) receipts_subject: String,
    /// A `.creds` file (JWT and NKey) to authenticate with.
    #[serde(default)]
    pub(crate) creds_file: Option<PathBuf>,
    /// A file whose first line is the token to authenticate with.
    #[serde(default)]
    pub(crate) token_file: Option<PathBuf>,
    /// Seconds before an unacknowledged job is redelivered; a running job
    /// sends in-progress acks every third of it.
    #[serde(default = "default_nats_ack_wait")]
    pub(crate) ack_wait_secs: u64,
}

fn default_nats_stream() -> String {
    "FTPDROP_JOBS".into()
}
fn default_nats_subject() -> String {
    "ftpdrop.jobs".into()
}
fn default_nats_durable() -> String {
    "ftpdrop".into()
}
fn default_nats_receipts() -> String {
    "ftpdrop.receipts".into()
}
fn default_nats_ack_wait() -> u64 {
    60
}

/// Rotating log files (tracing-appender).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Folder for rotating log files; null: logs go to stderr (the journal
    /// under systemd). A Windows service logs to
    /// `%ProgramData%\ftpdrop\logs` unless this is set.
    pub dir: Option<PathBuf>,
    /// Name of the log files; each period's file gets its date appended
    /// (`ftpdrop.log.2026-11-30`).
    pub file_name: String,
    /// How often a new file is started.
    pub rotation: Rotation,
    /// How many files are kept; older ones are deleted. 0: all.
    pub keep: usize,
    /// `text` or `json`; `--log-format` overrides it.
    pub format: Option<LogFormat>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: None,
            file_name: "ftpdrop.log".into(),
            rotation: Rotation::Daily,
            keep: 14,
            format: None,
        }
    }
}

/// How often a log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Hourly,
    Daily,
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per entry, the first included; 0: no count, only
    /// `give_up_after_secs` ends the retries.
    pub max_attempts: u32,
    /// Backoff before the second attempt, milliseconds; doubles each time.
    pub initial_backoff_ms: u64,
    /// Upper bound of one backoff, milliseconds.
    pub max_backoff_ms: u64,
    /// Transient faults are retried for this long (seconds, from the
    /// entry's first attempt in this run) before the entry fails: a partner
    /// server down for an hour still gets its files.
    pub give_up_after_secs: u64,
}

/// `"done_marker": {"name": "{job}.ok", "content": "empty" | "manifest"}`.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct MarkerSpec {
    /// The marker's file name, a template: `{job}.ok`, `READY`, or
    /// `{name}.done` for one marker per file (see the job format's placeholders).
    pub(crate) name: String,
    /// `empty` (the default) or `manifest`: the job's files in that folder,
    /// with their sizes and SHA-256, as JSON.
    #[serde(default)]
    pub(crate) content: MarkerContent,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MarkerContent {
    #[default]
    Empty,
    Manifest,
}

/// A server defined once in the config and named by jobs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerDef {
    /// Host name or address (not a URL).
    pub(crate) host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub(crate) login: String,
    /// Inline password (prefer `password_env` or `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password_env: Option<String>,
    /// A file whose first line is the password (with systemd:
    /// `LoadCredential=` and a path under `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password_file: Option<PathBuf>,
    /// `none`, `explicit` (AUTH TLS) or `implicit`.
    #[serde(default)]
    pub(crate) tls: TlsMode,
    /// PEM bundle of CAs trusted for this server, instead of the system roots.
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Accept any certificate. Logged loudly at every connect.
    #[serde(default)]
    pub(crate) insecure_skip_verify: bool,
    /// Upload bandwidth to this server, shared by all its connections:
    /// bytes/s, `"512k"`, `"10M"`, `"off"`, or a timetable in local time
    /// (`"08:00,512k 19:00,10M 23:00,off"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_rate: Option<crate::rate::RateSetting>,
    /// Keep the local file's modification time on the server (`MFMT`).
    /// Unset: on where the server lists MFMT. A failure is a warning in
    /// the receipt, never a failed upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) preserve_mtime: Option<bool>,
    /// Permissions every file gets before it is published (`SITE CHMOD`),
    /// as octal digits: `"644"`. A failure is a warning in the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chmod: Option<String>,
    /// How file names are encoded on this server: `auto` (default: UTF-8
    /// where FEAT lists it, else `legacy_encoding`), `utf-8`, `cp1251`,
    /// `koi8-r` or `cp866`. A name the code page cannot write fails its
    /// entry, naming the character; nothing is sent under a lossy name.
    #[serde(default)]
    pub(crate) encoding: NameEncoding,
    /// The highest TLS version offered: `"1.2"` for servers whose TLS 1.3
    /// breaks uploads. Unset: 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_max_version: Option<TlsVersion>,
    /// Trust the server's certificate by its SHA-256 fingerprint, of the
    /// certificate or of its public key (hex, colons allowed), instead of
    /// a CA: for self-signed certificates. Any listed one will do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tls_pin_sha256: Vec<String>,
    /// A client certificate (PEM, with its chain) for servers that require
    /// one (mutual TLS); with `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_key_file: Option<PathBuf>,
    /// The site's name, sent as `HOST name` before the login, for servers
    /// that host several sites on one address (IIS virtual hosts). Some
    /// also take `"login": "name|user"` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) virtual_host: Option<String>,
    /// Data connections: `auto` (default: passive, and active where the
    /// server refuses EPSV and PASV, remembered), `passive` or `active`.
    #[serde(default)]
    pub(crate) data_mode: DataMode,
    /// The local ports active mode listens on, for a firewall that opens
    /// only those: `"50000-50100"`. Unset: any free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) active_ports: Option<String>,
    /// A proxy for the control connection and every data connection:
    /// `socks5://[user@]host:port` or `http://[user@]host:port` (CONNECT).
    /// Not with implicit TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy: Option<String>,
    /// The environment variable holding the proxy user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy_password_env: Option<String>,
    /// A file whose first line is the proxy user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy_password_file: Option<PathBuf>,
    /// `rename` (default: temp name, check, rename) or `direct` (straight to
    /// the final name, for drop boxes that allow no rename or temp name).
    #[serde(default)]
    pub(crate) publish: Publish,
    /// The default `verify` of entries naming this server: `auto`, `size`,
    /// `download`, or `none` (a drop box without SIZE: "sent, not verified").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) verify: Option<Verify>,
    /// The done marker of jobs that name this server and set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) done_marker: Option<MarkerSpec>,
}

fn default_port() -> u16 {
    21
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbox: PathBuf::from("files"),
            checked: PathBuf::from("checked"),
            max_connections: 8,
            max_connections_per_server: 4,
            max_concurrent_jobs: 4,
            connect_timeout_secs: 15,
            command_timeout_secs: 30,
            data_timeout_secs: 60,
            settle_ms: 300,
            sweep_interval_ms: 3000,
            max_job_bytes: 16 * 1024 * 1024,
            incomplete_grace_ms: 10_000,
            retry: RetryConfig::default(),
            shutdown_grace_secs: 30,
            idle_session_secs: 60,
            abandoned_session_secs: 300,
            segment_threshold_bytes: 64 * 1024 * 1024,
            max_segments: 4,
            segment_after_ms: 1000,
            pipelining: true,
            servers: BTreeMap::new(),
            local_roots: Vec::new(),
            allowed_hosts: Vec::new(),
            require_named_servers: false,
            retention_days: 90,
            log: LogConfig::default(),
            takeover_interval_secs: 5,
            nats: None,
            learned_ttl_secs: 7 * 86_400,
            status: StatusConfig::default(),
            max_rate: None,
            legacy_encoding: CodePage::Utf8,
            notify: Default::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 0,
            initial_backoff_ms: 500,
            max_backoff_ms: 300_000,
            give_up_after_secs: 86_400,
        }
    }
}

impl ServerDef {
    /// Its TLS settings beyond the CA (see [`TlsOptions`]).
    pub(crate) fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            tls12_only: self.tls_max_version == Some(TlsVersion::Tls12),
            pins: self
                .tls_pin_sha256
                .iter()
                .filter_map(|p| pin_of(p))
                .collect(),
            client_cert: self
                .client_cert_file
                .clone()
                .zip(self.client_key_file.clone()),
        }
    }

    /// A definition that names more than one password source is a mistake.
    fn check_password_sources(&self, name: &str) -> Result<()> {
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("servers.{name}: give only one of password, password_env, password_file");
        }
        Ok(())
    }

    /// The password from wherever the definition says it lives.
    /// Its proxy, with the password read from where it is kept.
    pub(crate) fn resolve_proxy(&self, name: &str) -> Result<Option<ProxySpec>> {
        let Some(url) = &self.proxy else {
            return Ok(None);
        };
        let mut spec = ProxySpec::parse(url).map_err(|e| anyhow!("servers.{name}.proxy: {e}"))?;
        let field = format!("servers.{name}.proxy_password");
        if let Some(p) = secret_from(&field, &self.proxy_password_env, &self.proxy_password_file)? {
            spec.password = p;
        }
        Ok(Some(spec))
    }

    pub(crate) fn resolve_password(&self, name: &str) -> Result<Secret> {
        self.check_password_sources(name)?;
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        let field = format!("servers.{name}.password");
        Ok(secret_from(&field, &self.password_env, &self.password_file)?.unwrap_or_default())
    }
}

/// A secret kept by reference: in the environment variable `env`, or on the
/// first line of `file` (`field` names them in errors, `_env` or `_file`
/// appended); `None` where neither is given.
fn secret_from(
    field: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .with_context(|| format!("{field}_env: variable {var} is not set"));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{field}_file: cannot read {}", file.display()))?;
        return Ok(Some(Secret::new(
            text.lines().next().unwrap_or("").to_string(),
        )));
    }
    Ok(None)
}

/// JSON has no comments; keys starting with `//` serve as comments and are dropped.
fn strip_comments(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.starts_with("//"));
            map.values_mut().for_each(strip_comments);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_comments),
        _ => {}
    }
}

/// serde names Rust types ("expected u32"); an operator reads JSON.
fn plain_types(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, json) in [
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected usize", "expected an integer"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, json);
    }
    out
}

/// Why the file at `path` cannot be read, if it cannot.
fn unreadable(path: &Path) -> Option<String> {
    match std::fs::File::open(path) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`", with the
/// likeliest of them named.
fn with_suggestion(msg: String) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg;
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return msg;
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match crate::suggest::closest(word, &known) {
        Some(m) => format!("{msg} (did you mean `{m}`?)"),
        None => msg,
    }
}

/// Deserializes a config from JSON text; errors name the field's path
/// (`retry.max_attempts: invalid type: ...`).
pub fn parse(text: &str) -> Result<Config> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("not valid JSON: {e}"))?;
    strip_comments(&mut value);
    let job_like = match &value {
        serde_json::Value::Array(_) => true,
        serde_json::Value::Object(m) => {
            m.contains_key("entries") || (m.contains_key("file") && m.contains_key("server"))
        }
        _ => false,
    };
    if job_like {
        bail!(
            "this is a job file, not a configuration: hand it to the daemon with \
             `ftpdrop submit FILE` (or `ftpdrop validate FILE` to check it)"
        );
    }
    if let serde_json::Value::Object(map) = &mut value {
        // Editors find the schema through it; it is not a setting.
        map.remove("$schema");
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let msg = with_suggestion(plain_types(&e.inner().to_string()));
        if path == "." || path.is_empty() {
            anyhow!("{msg}")
        } else {
            anyhow!("{path}: {msg}")
        }
    })
}

impl Config {
    /// Reads a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                parse(&text).with_context(|| format!("config file {} is invalid", p.display()))?
            }
        };
        cfg.resolve_paths()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settings that work but that an operator should hear about: an inbox
    /// that lets a job writer reach any file or host, a password source that
    /// is not there (yet), certificate checks turned off.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut open = Vec::new();
        if self.local_roots.is_empty() {
            open.push("local_roots is empty, so a job may name any file the daemon can read");
        }
        if self.allowed_hosts.is_empty() && !self.require_named_servers {
            open.push("allowed_hosts is empty, so a job may send files to any host");
        }
        if !open.is_empty() {
            out.push(format!(
                "whoever can write to the inbox is not confined: {} (see the README's \"Security model\")",
                open.join("; ")
            ));
        }
        for (i, r) in self.local_roots.iter().enumerate() {
            if !r.is_dir() {
                out.push(format!(
                    "local_roots[{i}]: {} does not exist (yet); nothing under it can be sent",
                    r.display()
                ));
            }
        }
        for (name, def) in &self.servers {
            if let Err(e) = def.resolve_password(name) {
                out.push(format!(
                    "{e:#}: jobs naming server {name:?} fail until it is available"
                ));
            }
            if def.insecure_skip_verify {
                out.push(format!(
                    "servers.{name}.insecure_skip_verify: TLS certificates are not checked"
                ));
            }
            if let Some(why) = def.ca_file.as_deref().and_then(unreadable) {
                out.push(format!(
                    "servers.{name}.ca_file: {why}: TLS to server {name:?} fails until it can be read"
                ));
            }
        }
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            if let Some(why) = hook.ca_file.as_deref().and_then(unreadable) {
                out.push(format!(
                    "notify.webhooks[{i}].ca_file: {why}: deliveries to {} fail until it can be read",
                    hook.url
                ));
            }
        }
        out
    }

    /// The local-file confinement this configuration asks for.
    pub(crate) fn local_roots(&self) -> Result<LocalRoots> {
        LocalRoots::new(&self.local_roots)
    }

    /// The host allowlist this configuration asks for.
    pub(crate) fn host_rules(&self) -> Result<HostRules> {
        HostRules::new(&self.allowed_hosts)
    }

    pub fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.max_connections_per_server == 0 {
            bail!("max_connections_per_server must be at least 1");
        }
        if self.max_concurrent_jobs == 0 {
            bail!("max_concurrent_jobs must be at least 1");
        }
        if self.retry.give_up_after_secs == 0 {
            bail!("retry.give_up_after_secs must be at least 1");
        }
        if self.connect_timeout_secs == 0
            || self.command_timeout_secs == 0
            || self.data_timeout_secs == 0
        {
            bail!("timeouts must be at least 1 second");
        }
        self.local_roots()?;
        self.status.listen_addr()?;
        self.rate_limits()?;
        self.notify.validate()?;
        if let Some(n) = &self.nats {
            if n.url.trim().is_empty() {
                bail!("nats.url is empty");
            }
            if n.creds_file.is_some() && n.token_file.is_some() {
                bail!("nats: give only one of creds_file, token_file");
            }
            if n.ack_wait_secs < 3 {
                bail!("nats.ack_wait_secs must be at least 3");
            }
        }
        let hosts = self.host_rules()?;
        for (name, def) in &self.servers {
            if def.host.is_empty() {
                bail!("servers.{name}.host is empty");
            }
            for (field, value) in [("host", &def.host), ("login", &def.login)] {
                if value.contains(['\r', '\n', '\0']) {
                    bail!("servers.{name}.{field}: contains a line break or NUL");
                }
            }
            if let Some(hint) = crate::host::bad_host(&def.host) {
                bail!("servers.{name}.host: {hint}");
            }
            if let HostVerdict::Refused(why) = hosts.check(&def.host) {
                bail!("servers.{name}.host: {why}");
            }
            def.check_password_sources(name)?;
            if let Some(mode) = &def.chmod {
                let digits = (3..=4).contains(&mode.len())
                    && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !digits {
                    bail!("servers.{name}.chmod: {mode:?} is not an octal mode such as \"644\"");
                }
            }
            for pin in &def.tls_pin_sha256 {
                if pin_of(pin).is_none() {
                    bail!("servers.{name}.tls_pin_sha256: {pin:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
                }
            }
            if def
                .virtual_host
                .as_deref()
                .is_some_and(|h| h.is_empty() || h.contains(['\r', '\n', '\0', ' ']))
            {
                bail!("servers.{name}.virtual_host: not a host name");
            }
            if let Some(r) = &def.active_ports {
                if port_range(r).is_none() {
                    bail!("servers.{name}.active_ports: {r:?} is not a port range such as \"50000-50100\"");
                }
            }
            if let Some(url) = &def.proxy {
                ProxySpec::parse(url).map_err(|e| anyhow!("servers.{name}.proxy: {e}"))?;
                if def.data_mode == DataMode::Active {
                    bail!("servers.{name}.proxy: not with data_mode active (the server cannot connect back through a proxy)");
                }
                if def.tls == TlsMode::Implicit {
                    bail!("servers.{name}.proxy: not with implicit TLS (use explicit TLS through a proxy)");
                }
            }
            if def.client_cert_file.is_some() != def.client_key_file.is_some() {
                bail!("servers.{name}: give client_cert_file and client_key_file together");
            }
            if let Some(m) = &def.done_marker {
                if let Err(e) = crate::job::template::check_name(&m.name) {
                    bail!("servers.{name}.done_marker.name: {e}");
                }
            }
        }
        Ok(())
    }

    /// Creates the inbox and `checked/`: the daemon does at its start, and
    /// `submit --queue`; reading commands (`validate`, `check-config`,
    /// `status`) leave the disk as they found it.
    pub fn create_folders(&self) -> Result<()> {
        for (what, dir) in [("inbox", &self.inbox), ("checked", &self.checked)] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{what}: cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    /// Makes the folders absolute against the working directory.
    fn resolve_paths(&mut self) -> Result<()> {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        for root in &mut self.local_roots {
            if root.is_relative() {
                *root = cwd.join(&*root);
            }
        }
        for dir in [&mut self.inbox, &mut self.checked] {
            if dir.is_relative() {
                *dir = cwd.join(&*dir);
            }
        }
        Ok(())
    }

    /// The bandwidth limits, parsed: global, and per server by `host:port`.
    pub(crate) fn rate_limits(
        &self,
    ) -> Result<(
        Option<crate::rate::Schedule>,
        BTreeMap<String, crate::rate::Schedule>,
    )> {
        use crate::rate::Schedule;
        let global = match &self.max_rate {
            Some(r) => Some(Schedule::parse(r).map_err(|e| anyhow::anyhow!("max_rate: {e}"))?),
            None => None,
        };
        let mut servers = BTreeMap::new();
        for (name, def) in &self.servers {
            if let Some(r) = &def.max_rate {
                let s = Schedule::parse(r)
                    .map_err(|e| anyhow::anyhow!("servers.{name}.max_rate: {e}"))?;
                servers.insert(crate::host::host_port(&def.host, def.port), s);
            }
        }
        Ok((global, servers))
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
    pub(crate) fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }
    pub(crate) fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// How log lines are written (`logging.format`, `--log-format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One receiver of final receipts (`notify.webhooks[]`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the receipt is POSTed to.
    #[serde(serialize_with = "crate::secret::serialize_url")]
    pub(crate) url: String,
    /// Final states that trigger it; default all: done, failed, partial, invalid.
    #[serde(default = "all_states")]
    pub on: Vec<String>,
    /// A file whose first line is the HMAC key of the signature headers.
    #[serde(default)]
    pub(crate) secret_file: Option<PathBuf>,
    /// Extra request headers (e.g. an API key of the receiver's).
    #[serde(default, serialize_with = "crate::secret::serialize_header_values")]
    pub(crate) headers: BTreeMap<String, String>,
    /// PEM CAs trusted for this receiver instead of the system roots.
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
}

fn all_states() -> Vec<String> {
    ["done", "failed", "partial", "invalid", "cancelled"]
        .map(String::from)
        .to_vec()
}

/// `notify` in the configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub webhooks: Vec<WebhookConfig>,
}

impl NotifyConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                anyhow::bail!(
                    "notify.webhooks[{i}].url: {:?} is not an http(s) URL",
                    w.url
                );
            }
            for s in &w.on {
                if !all_states().contains(s) {
                    anyhow::bail!("notify.webhooks[{i}].on: {s:?} is not one of done, failed, partial, invalid");
                }
            }
            for (k, v) in &w.headers {
                if k.contains([':', '\r', '\n']) || v.contains(['\r', '\n']) {
                    anyhow::bail!("notify.webhooks[{i}].headers.{k}: not a valid header");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.max_connections, 8);
        assert_eq!(cfg.max_connections_per_server, 4);
        assert_eq!(cfg.inbox, PathBuf::from("files"));
        assert_eq!(cfg.segment_threshold_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.max_segments, 4);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = serde_json::from_str::<Config>(r#"{"max_conections": 3}"#).unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json");
        let text = std::fs::read_to_string(path).unwrap();
        let cfg = parse(&text).unwrap();
        assert!(cfg.servers.contains_key("backup"));
        cfg.validate().unwrap();
        assert!(!cfg.local_roots.is_empty() && !cfg.allowed_hosts.is_empty());
    }

    #[test]
    fn type_errors_name_the_path_in_json_terms() {
        let e = parse(r#"{"retry": {"max_attempts": "8"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"retry.max_attempts: invalid type: string "8", expected an integer"#
        );
        let e =
            parse(r#"{"servers": {"b": {"host": "h", "login": "u", "port": 70000}}}"#).unwrap_err();
        assert!(e.to_string().starts_with("servers.b.port: "), "{e}");
        let e = parse("{\"settle_ms\": 1,}").unwrap_err();
        assert!(e.to_string().starts_with("not valid JSON"), "{e}");
    }

    #[test]
    fn named_servers_must_be_hosts_and_allowed() {
        let mut cfg: Config = parse(
            r#"{"allowed_hosts": ["*.example.net"],
                "servers": {"b": {"host": "ftp://10.0.0.5:2121", "login": "u"}}}"#,
        )
        .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("servers.b.host: ") && e.contains("\"port\": 2121"),
            "{e}"
        );
        cfg.servers.get_mut("b").unwrap().host = "ftp.other.org".into();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("not in allowed_hosts"), "{e}");
        cfg.servers.get_mut("b").unwrap().host = "ftp.example.net".into();
        cfg.validate().unwrap();
    }

    #[test]
    fn server_password_from_env() {
        std::env::set_var("FTPDROP_TEST_PW", "pw-from-env");
        let def: ServerDef =
            serde_json::from_str(r#"{"host":"h","login":"u","password_env":"FTPDROP_TEST_PW"}"#)
                .unwrap();
        assert_eq!(def.resolve_password("x").unwrap().expose(), "pw-from-env");
        assert_eq!(def.port, 21);
    }
}
