//! Interop: ftpdrop against real FTP servers, with every assertion made on the
//! bytes in the server's root directory.
//!
//! The servers (vsftpd, pure-ftpd, proftpd, pyftpdlib, and variants: vsftpd
//! with TLS 1.3 / TLS 1.2 / implicit TLS / a per-IP limit, pyftpdlib with
//! quirks) are started by `scripts/interop/servers.sh start`, which writes
//! `target/interop/servers.env` (another path: `FTPDROP_INTEROP_ENV`). The
//! in-process libunftp server of `tests/support` runs the same matrix always.
//!
//! Without servers.env the real-server tests are reported as ignored, after
//! one line that says how to start the servers, unless `CI` is set or
//! `FTPDROP_INTEROP_REQUIRED=1`: then they fail. Every test adds its results to `target/interop/compat.md`, a
//! server × feature table written from what actually happened.
//!
//! Each run works under a fresh directory (`it-<time>-<pid>/`) on every server,
//! because the servers outlive the test process, and removes it afterwards.

use crate::support;

use ftpdrop::config::TlsMode;
use ftpdrop::ftp::{Session, Timeouts};
use ftpdrop::job::ServerSpec;
use ftpdrop::report::{EntryReport, EntryState, JobState, Receipt};
use ftpdrop::secret::Secret;
use ftpdrop::Config;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::ftpserver::FtpServer;
use support::proxy::FaultProxy;

#[path = "delivery.rs"]
mod delivery;
#[path = "partners.rs"]
mod partners;

const MIB: u64 = 1024 * 1024;
const BIG: u64 = 100 * MIB;
const BIG_SEED: u64 = 0xB16;

// ---------------------------------------------------------------- setup ---

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_path() -> PathBuf {
    std::env::var_os("FTPDROP_INTEROP_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target/interop/servers.env"))
}

/// servers.env, parsed; `None` when there is none.
fn servers_env() -> Option<&'static HashMap<String, String>> {
    static ENV: OnceLock<Option<HashMap<String, String>>> = OnceLock::new();
    ENV.get_or_init(|| {
        let text = std::fs::read_to_string(env_path()).ok()?;
        Some(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    })
    .as_ref()
}

/// The servers of a test, or `None` (after saying so) when they are not there.
fn require_servers(test: &str, servers: &[&str]) -> Option<&'static HashMap<String, String>> {
    if let Some(env) = servers_env() {
        return Some(env);
    }
    let required = std::env::var_os("CI").is_some()
        || std::env::var("FTPDROP_INTEROP_REQUIRED").as_deref() == Ok("1");
    let msg = format!(
        "{} not found: interop test `{test}` cannot run against {}. Start the servers with \
         `sudo bash scripts/interop/servers.sh install && sudo FTPDROP_PUREFTPD_CHEAP_HASH=1 bash \
         scripts/interop/servers.sh start`",
        env_path().display(),
        servers.join(", ")
    );
    if required {
        panic!("{msg} (CI or FTPDROP_INTEROP_REQUIRED=1: interop servers are required)");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "\nSKIPPED: {msg}");
    for s in servers {
        record("Skipped", "not run (no servers.env)", s, None, "");
    }
    write_compat();
    None
}

/// This run's directory name on every server.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        format!("it-{}-{}", t.as_secs(), std::process::id())
    })
}

/// Everything ftpdrop logs, for the tests that look for a warning.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // FTPDROP_INTEROP_LOG=ftpdrop=debug,suppaftp=trace for protocol traces.
        let filter =
            std::env::var("FTPDROP_INTEROP_LOG").unwrap_or_else(|_| "ftpdrop=info".to_string());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
    });
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// The 100 MiB file, made once and kept under target/ across runs.
fn big_file() -> PathBuf {
    static BIG_PATH: OnceLock<PathBuf> = OnceLock::new();
    BIG_PATH
        .get_or_init(|| {
            let p = manifest_dir().join("target/interop-work/big-100MiB.bin");
            let ok = std::fs::metadata(&p).is_ok_and(|m| m.len() == BIG);
            if !ok {
                support::write_random_file(&p, BIG, BIG_SEED);
            }
            p
        })
        .clone()
}

// -------------------------------------------------------------- servers ---

/// One server as a job names it, and where its files land on disk.
#[derive(Clone, Debug)]
struct Target {
    /// Column name in the compatibility table.
    name: String,
    host: String,
    port: u16,
    user: String,
    pass: String,
    root: PathBuf,
    tls: &'static str,
    ca: Option<PathBuf>,
    insecure: bool,
    /// The server offers a hash command: every upload must be checked by it.
    hashes: bool,
    /// This target's folder on the server, under the run's: tests run at
    /// once in one process, and each removes only its own folder at its
    /// end (one shared folder was removed under tests still running).
    base: String,
}

/// A folder name no other `Target` of this run uses.
fn fresh_base() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}/t{n}", run_id())
}

impl Target {
    fn from_env(env: &HashMap<String, String>, prefix: &str, name: &str) -> Target {
        let get = |k: &str| {
            env.get(&format!("FTPDROP_{prefix}_{k}"))
                .unwrap_or_else(|| panic!("servers.env has no FTPDROP_{prefix}_{k}"))
                .clone()
        };
        Target {
            name: name.to_string(),
            host: get("HOST"),
            port: get("PORT").parse().unwrap(),
            user: get("USER"),
            pass: get("PASS"),
            root: PathBuf::from(get("ROOT")),
            tls: "none",
            ca: None,
            insecure: false,
            hashes: prefix == "PROFTPD",
            base: fresh_base(),
        }
    }

    fn libunftp(srv: &FtpServer) -> Target {
        Target {
            name: "libunftp".into(),
            host: "127.0.0.1".into(),
            port: srv.addr.port(),
            user: srv.user.clone(),
            pass: srv.password.clone(),
            root: srv.root.clone(),
            tls: "none",
            ca: None,
            insecure: false,
            hashes: false,
            base: fresh_base(),
        }
    }

    fn tls(mut self, mode: &'static str, ca: Option<&str>) -> Target {
        self.tls = mode;
        self.ca = ca.map(PathBuf::from);
        self
    }

    fn server_json(&self) -> Value {
        let mut v = json!({
            "host": self.host,
            "port": self.port.to_string(),
            "login": self.user,
            "password": self.pass,
        });
        if self.tls != "none" {
            v["tls"] = json!(self.tls);
        }
        if let Some(ca) = &self.ca {
            v["ca_file"] = json!(ca);
        }
        if self.insecure {
            v["insecure_skip_verify"] = json!(true);
        }
        v
    }

    fn entry(&self, local: &Path, server_path: &str) -> Value {
        json!({
            "server": self.server_json(),
            "file": {"local_path": local.to_string_lossy(), "server_path": server_path}
        })
    }

    /// This run's directory for `scenario`, as a job names it and on disk.
    fn dir(&self, scenario: &str) -> (String, PathBuf) {
        let rel = format!("{}/{scenario}", self.base);
        let disk = self.root.join(&rel);
        (rel, disk)
    }

    fn spec(&self) -> ServerSpec {
        ServerSpec {
            host: self.host.clone(),
            port: self.port,
            login: self.user.clone(),
            password: Secret::new(self.pass.clone()),
            tls: match self.tls {
                "explicit" => TlsMode::Explicit,
                "implicit" => TlsMode::Implicit,
                _ => TlsMode::None,
            },
            ca_file: self.ca.clone(),
            insecure_skip_verify: self.insecure,
            resolve_into: None,
            names: Default::default(),
            tls_options: Default::default(),
            proxy: None,
            data: Default::default(),
            virtual_host: None,
        }
    }

    /// Makes a directory on the server's disk as if the FTP user had.
    fn make_dir_on_disk(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let meta = std::fs::metadata(&self.root).unwrap();
        use std::os::unix::fs::MetadataExt;
        let mut p = dir.to_path_buf();
        while p.starts_with(&self.root) && p != self.root {
            let _ = std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid()));
            if !p.pop() {
                break;
            }
        }
    }

    fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(self.root.join(&self.base));
    }

    /// Like [`Target::dir`], under a directory of the segmented-upload test's
    /// own: the matrix tests remove theirs while it still runs.
    fn seg_dir(&self, scenario: &str) -> (String, PathBuf) {
        let rel = format!("{}-seg/{scenario}", self.base);
        let disk = self.root.join(&rel);
        (rel, disk)
    }

    fn seg_cleanup(&self) {
        let _ = std::fs::remove_dir_all(self.root.join(format!("{}-seg", self.base)));
    }
}

fn real_targets(env: &HashMap<String, String>) -> Vec<Target> {
    vec![
        Target::from_env(env, "VSFTPD", "vsftpd"),
        Target::from_env(env, "PUREFTPD", "pure-ftpd"),
        Target::from_env(env, "PROFTPD", "proftpd"),
        Target::from_env(env, "PYFTPDLIB", "pyftpdlib"),
    ]
}

// ----------------------------------------------------------------- jobs ---

/// Local files and a config whose inbox/checked live in one temp dir.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn local(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("local").join(rel);
        support::write_file(&p, bytes);
        p
    }

    /// Runs one job through `ftpdrop::once` and returns its receipt.
    async fn run(
        &self,
        job: &str,
        entries: Vec<Value>,
        tweak: impl FnOnce(&mut Config),
    ) -> Receipt {
        self.run_in(job, job, entries, tweak).await
    }

    /// Runs one job with the state folder of `daemon`: a second job there
    /// starts with what the first learned (`ftpdrop-learned.json`).
    async fn run_in(
        &self,
        daemon: &str,
        job: &str,
        entries: Vec<Value>,
        tweak: impl FnOnce(&mut Config),
    ) -> Receipt {
        self.run_doc(daemon, job, Value::Array(entries), tweak)
            .await
    }

    /// Runs a job file of any shape (`{"done_marker": ..., "entries": [...]}`).
    async fn run_doc(
        &self,
        daemon: &str,
        job: &str,
        doc: Value,
        tweak: impl FnOnce(&mut Config),
    ) -> Receipt {
        let cfg = self.config(daemon, tweak);
        std::fs::write(
            cfg.inbox.join(format!("{job}.json")),
            serde_json::to_vec_pretty(&doc).unwrap(),
        )
        .unwrap();
        Work::once(cfg, job).await
    }

    /// The configuration of the state folder of `daemon`, its folders made.
    fn config(&self, daemon: &str, tweak: impl FnOnce(&mut Config)) -> Config {
        let base = self.dir.path().join(format!("daemon-{daemon}"));
        let mut cfg = Config {
            inbox: base.join("files"),
            checked: base.join("checked"),
            settle_ms: 0,
            connect_timeout_secs: 10,
            command_timeout_secs: 30,
            data_timeout_secs: 60,
            ..Config::default()
        };
        cfg.retry.max_attempts = 5;
        cfg.retry.initial_backoff_ms = 100;
        cfg.retry.max_backoff_ms = 1000;
        tweak(&mut cfg);
        std::fs::create_dir_all(&cfg.inbox).unwrap();
        std::fs::create_dir_all(&cfg.checked).unwrap();
        cfg
    }

    /// `ftpdrop::once` on `cfg`, which ends `job` (waiting in the inbox, or
    /// claimed and unfinished); its receipt.
    async fn once(cfg: Config, job: &str) -> Receipt {
        let checked = cfg.checked.clone();
        let states = tokio::time::timeout(Duration::from_secs(240), ftpdrop::once(cfg))
            .await
            .unwrap_or_else(|_| panic!("job {job} did not finish within 240 s"))
            .unwrap();
        assert_eq!(states.len(), 1, "{states:?}");
        Receipt::load(&checked.join(format!("{job}.report.json"))).unwrap()
    }
}

type Outcome = Result<String, String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn brief(r: &Receipt) -> String {
    r.entries
        .iter()
        .filter(|e| e.state != EntryState::Done)
        .take(3)
        .map(|e| {
            format!(
                "{} {:?} after {} attempts: {:?}",
                e.remote_path, e.state, e.attempts, e.error
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn all_done(r: &Receipt) -> Result<(), String> {
    ensure(r.state == JobState::Done, || {
        format!("job {:?}, expected done: {}", r.state, brief(r))
    })
}

/// Done, and where the server can hash, checked by its hash too.
fn all_done_on(t: &Target, r: &Receipt) -> Result<(), String> {
    all_done(r)?;
    if t.hashes {
        let unhashed: Vec<&str> = r
            .entries
            .iter()
            .filter(|e| !e.verification.iter().any(|v| v != "size"))
            .map(|e| e.remote_path.as_str())
            .collect();
        ensure(unhashed.is_empty(), || {
            format!("not checked by the server's hash: {unhashed:?}")
        })?;
    }
    Ok(())
}

/// ftpdrop's log lines about `remote_path` that contain `what`.
fn log_lines(remote_path: &str, what: &str) -> Vec<String> {
    log_text()
        .lines()
        .filter(|l| l.contains(&format!("remote_path={remote_path} ")) && l.contains(what))
        .map(str::to_string)
        .collect()
}

fn same_bytes(path: &Path, want: &[u8]) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!(
            "{}: {} bytes on the server, expected {} (content differs)",
            path.display(),
            got.len(),
            want.len()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn no_temp_files(dir: &Path) -> Result<(), String> {
    let mut left = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".ftpdrop-") {
                left.push(p.display().to_string());
            }
        }
    }
    ensure(left.is_empty(), || format!("temp files left: {left:?}"))
}

/// What the receipt says was verified, e.g. "size+sha256".
fn verified(e: &EntryReport) -> String {
    e.verification.join("+")
}

// ---------------------------------------------------------- the results ---

#[derive(Clone, Debug)]
struct Row {
    section: String,
    feature: String,
    server: String,
    /// `None`: not run.
    ok: Option<bool>,
    note: String,
}

fn results() -> &'static Mutex<Vec<Row>> {
    static R: OnceLock<Mutex<Vec<Row>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

fn record(section: &str, feature: &str, server: &str, ok: Option<bool>, note: &str) {
    results().lock().unwrap().push(Row {
        section: section.into(),
        feature: feature.into(),
        server: server.into(),
        ok,
        note: note.replace('|', "\\|").replace('\n', " "),
    });
}

fn quirks() -> &'static Mutex<BTreeMap<String, Vec<String>>> {
    static Q: OnceLock<Mutex<BTreeMap<String, Vec<String>>>> = OnceLock::new();
    Q.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn note_quirk(server: &str, quirk: impl Into<String>) {
    quirks()
        .lock()
        .unwrap()
        .entry(server.to_string())
        .or_default()
        .push(quirk.into());
}

/// Runs a scenario, records it, and returns its failure, if any.
async fn scenario(
    section: &str,
    feature: &str,
    server: &str,
    fut: impl std::future::Future<Output = Outcome>,
) -> Option<String> {
    let t = Instant::now();
    let out = fut.await;
    let secs = t.elapsed().as_secs_f64();
    match out {
        Ok(note) => {
            eprintln!("ok   [{section}] {feature} @ {server} ({secs:.1} s) {note}");
            record(section, feature, server, Some(true), &note);
            None
        }
        Err(why) => {
            eprintln!("FAIL [{section}] {feature} @ {server} ({secs:.1} s): {why}");
            record(section, feature, server, Some(false), &why);
            Some(format!("{feature} @ {server}: {why}"))
        }
    }
}

const MATRIX_SERVERS: [&str; 5] = ["vsftpd", "pure-ftpd", "proftpd", "pyftpdlib", "libunftp"];

/// Rewrites target/interop/compat.md from every result recorded so far.
fn write_compat() {
    let rows = results().lock().unwrap().clone();
    let quirks = quirks().lock().unwrap().clone();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "<!-- written by `cargo test --test interop`; run {} -->\n",
        run_id()
    );
    let cell = |r: &Row| match r.ok {
        Some(true) if r.note.is_empty() => "pass".to_string(),
        Some(true) => format!("pass: {}", r.note),
        Some(false) => format!("**FAIL**: {}", r.note),
        None => "not run".to_string(),
    };

    // The matrix: feature × server.
    let matrix: Vec<&Row> = rows.iter().filter(|r| r.section == "Matrix").collect();
    if !matrix.is_empty() {
        let _ = writeln!(md, "### Uploads (server × scenario)\n");
        let _ = writeln!(md, "| scenario | {} |", MATRIX_SERVERS.join(" | "));
        let _ = writeln!(md, "| --- |{}", " --- |".repeat(MATRIX_SERVERS.len()));
        let mut features: Vec<&str> = Vec::new();
        for r in &matrix {
            if !features.contains(&r.feature.as_str()) {
                features.push(&r.feature);
            }
        }
        for f in features {
            let cells: Vec<String> = MATRIX_SERVERS
                .iter()
                .map(|s| {
                    matrix
                        .iter()
                        .find(|r| r.feature == f && r.server == *s)
                        .map(|r| cell(r))
                        .unwrap_or_else(|| "not run".into())
                })
                .collect();
            let _ = writeln!(md, "| {f} | {} |", cells.join(" | "));
        }
        md.push('\n');
    }
    for section in [
        "TLS",
        "Connection limits",
        "Segmented uploads",
        "Quirks",
        "Partner servers",
        "Delivery",
        "Skipped",
    ] {
        let list: Vec<&Row> = rows.iter().filter(|r| r.section == section).collect();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "### {section}\n\n| check | server | result |\n| --- | --- | --- |"
        );
        for r in list {
            let _ = writeln!(md, "| {} | {} | {} |", r.feature, r.server, cell(r));
        }
        md.push('\n');
    }
    if !quirks.is_empty() {
        let _ = writeln!(md, "### Detected quirks\n");
        for (server, list) in &quirks {
            let _ = writeln!(md, "- **{server}**: {}", list.join("; "));
        }
    }
    let path = manifest_dir().join("target/interop/compat.md");
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    let tmp = path.with_extension("md.tmp");
    if let Ok(mut f) = std::fs::File::create(&tmp) {
        let _ = f.write_all(md.as_bytes());
        let _ = std::fs::rename(&tmp, &path);
    }
}

fn finish(failures: Vec<Option<String>>) {
    write_compat();
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    if !failures.is_empty() {
        // ftpdrop's log of the whole process, for the post-mortem.
        let path = manifest_dir().join("target/interop/interop-log.txt");
        let _ = std::fs::write(&path, log_text());
        let _ = writeln!(std::io::stderr(), "ftpdrop's log: {}", path.display());
    }
    assert!(failures.is_empty(), "failed:\n{}", failures.join("\n"));
}

// ------------------------------------------------------- the scenarios ---

async fn nested_mkdir(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("nested");
    let body = b"nested payload\n".to_vec();
    let local = w.local("n.txt", &body);
    let r = w
        .run(
            "nested",
            vec![t.entry(&local, &format!("{rel}/a/b/c/d"))],
            |_| {},
        )
        .await;
    all_done_on(t, &r)?;
    same_bytes(&disk.join("a/b/c/d/n.txt"), &body)?;
    no_temp_files(&disk)?;
    Ok(String::new())
}

async fn existing_dir(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("existing");
    t.make_dir_on_disk(&disk.join("already/there"));
    let one = w.local("one.txt", b"into an existing dir");
    let two = w.local("two.txt", b"below an existing dir");
    let r = w
        .run(
            "existing",
            vec![
                t.entry(&one, &format!("{rel}/already/there")),
                t.entry(&two, &format!("{rel}/already/there/new")),
            ],
            |_| {},
        )
        .await;
    all_done_on(t, &r)?;
    same_bytes(&disk.join("already/there/one.txt"), b"into an existing dir")?;
    same_bytes(
        &disk.join("already/there/new/two.txt"),
        b"below an existing dir",
    )?;
    Ok(String::new())
}

async fn overwrite(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("overwrite");
    let versions: [&[u8]; 3] = [
        b"version one\n",
        b"version two, which is longer than the first\n",
        b"v3\n",
    ];
    for (i, body) in versions.iter().enumerate() {
        let local = w.local(&format!("v{i}/same.txt"), body);
        let r = w
            .run(
                &format!("overwrite{i}"),
                vec![t.entry(&local, &rel)],
                |_| {},
            )
            .await;
        all_done_on(t, &r)?;
        same_bytes(&disk.join("same.txt"), body)
            .map_err(|e| format!("after upload {}: {e}", i + 1))?;
    }
    no_temp_files(&disk)?;
    Ok(String::new())
}

const ODD_NAMES: [&str; 4] = [
    "План отчёт 2024.txt",
    "📦 emoji ✓.bin",
    "we#ird %name [1].txt",
    "100% [draft] #2 ü.txt",
];

async fn unicode_names(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("names");
    let sub = "Отчёты/2024 год/#%[x] 📁";
    let mut entries = Vec::new();
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let local = w.local(
            &format!("{i}/{name}"),
            format!("content of {name}").as_bytes(),
        );
        entries.push(t.entry(&local, &format!("{rel}/{sub}")));
    }
    let r = w.run("names", entries, |_| {}).await;
    all_done_on(t, &r)?;
    for name in ODD_NAMES {
        same_bytes(
            &disk.join(sub).join(name),
            format!("content of {name}").as_bytes(),
        )?;
    }
    Ok(String::new())
}

async fn big_upload(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("big");
    let local = big_file();
    let started = Instant::now();
    let r = w.run("big", vec![t.entry(&local, &rel)], |_| {}).await;
    let secs = started.elapsed().as_secs_f64();
    all_done_on(t, &r)?;
    let remote = disk.join("big-100MiB.bin");
    let got = std::fs::metadata(&remote).map(|m| m.len()).unwrap_or(0);
    ensure(got == BIG, || format!("{} bytes on the server", got))?;
    support::assert_same_file(&local, &remote);
    let e = &r.entries[0];
    let note = format!(
        "{:.0} MiB/s, verified {}",
        BIG as f64 / MIB as f64 / secs,
        verified(e)
    );
    let _ = std::fs::remove_file(&remote);
    Ok(note)
}

async fn many_small(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("many");
    let mut entries = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..200u64 {
        let body = support::random_bytes(200 + (i as usize * 37) % 3000, 1000 + i);
        let local = w.local(&format!("many/f{i:03}.bin"), &body);
        entries.push(t.entry(&local, &format!("{rel}/d{}", i % 4)));
        bodies.push(body);
    }
    let started = Instant::now();
    let r = w
        .run("many", entries, |c| {
            c.max_connections = 8;
            c.max_connections_per_server = 8;
        })
        .await;
    let secs = started.elapsed().as_secs_f64();
    all_done_on(t, &r)?;
    for (i, body) in bodies.iter().enumerate() {
        same_bytes(&disk.join(format!("d{}/f{i:03}.bin", i % 4)), body)?;
    }
    no_temp_files(&disk)?;
    let retried = r.entries.iter().filter(|e| e.attempts > 1).count();
    // A second job starts from what the first learned: where the server
    // keeps pipelined commands in order, its logins pipeline FEAT, OPTS,
    // TYPE and the first EPSV, and its uploads pipeline from the first.
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-many/ftpdrop-learned.json"))
        .map_err(|e| format!("no learned facts after the first job: {e}"))?;
    let mut again = Vec::new();
    let mut again_bodies = Vec::new();
    for i in 0..40u64 {
        let body = support::random_bytes(100 + (i as usize * 53) % 2000, 5000 + i);
        let local = w.local(&format!("again/g{i:03}.bin"), &body);
        again.push(t.entry(&local, &format!("{rel}/again")));
        again_bodies.push(body);
    }
    let r = w
        .run_in("many", "again", again, |c| {
            c.max_connections = 8;
            c.max_connections_per_server = 8;
        })
        .await;
    all_done_on(t, &r)?;
    for (i, body) in again_bodies.iter().enumerate() {
        same_bytes(&disk.join(format!("again/g{i:03}.bin")), body)?;
    }
    no_temp_files(&disk)?;
    let pipelined = learned.contains("\"pipelining\": true");
    // Every server of the suite keeps order but libunftp, over TLS too
    // (pipelined commands go through the TLS stream's outbox).
    ensure(pipelined == (t.name != "libunftp"), || {
        format!("{}: unexpected pipelining verdict: {learned}", t.name)
    })?;
    Ok(format!(
        "{secs:.1} s, {retried} retried; second job {} pipelined logins",
        if pipelined { "with" } else { "without" }
    ))
}

async fn resume_after_cut(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("resume");
    // The cut comes late enough that, whatever the socket buffers held and
    // the reset threw away (up to ~10 MiB on loopback), the server has
    // written a good part of the file: there is something to resume.
    let size = 24 * MIB as usize;
    let body = support::random_bytes(size, 77);
    let local = w.local("resume.bin", &body);
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    proxy.cut_data_after(16 * MIB, 1);
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let r = w
        .run("resume", vec![via.entry(&local, &rel)], |c| {
            // The server gets time to let go of the cut session and its
            // partial file: a temp file still held by a session the server
            // has not closed is never resumed, it gets a fresh name (the
            // safe choice, which a loaded CI machine took once when 500 ms
            // were not enough for the in-process server to close it).
            c.retry.initial_backoff_ms = 2000;
        })
        .await;
    all_done_on(t, &r)?;
    same_bytes(&disk.join("resume.bin"), &body)?;
    let e = &r.entries[0];
    ensure(proxy.data_faults_fired() == 1, || {
        "the cut did not happen".into()
    })?;
    ensure(e.attempts >= 2, || {
        format!("{} attempt(s) for a cut upload", e.attempts)
    })?;
    let resumed: Vec<u64> = log_lines(&e.remote_path, "entry uploaded")
        .iter()
        .filter_map(|l| l.split("resumed_from=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    let from = resumed.last().copied().unwrap_or(0);
    // Either way of continuing counts: `REST n` + STOR, or APPE.
    let rest = proxy
        .commands_with_verb("REST")
        .into_iter()
        .any(|c| c.trim() != "REST 0");
    let appe = !proxy.commands_with_verb("APPE").is_empty();
    ensure(from > 0 && (rest || appe), || {
        format!(
            "restarted from zero instead of resuming (resumed_from {from}; commands: {:?})",
            proxy.commands_seen()
        )
    })?;
    Ok(format!(
        "resumed at byte {from} of {size} with {}, {} attempts",
        if rest { "REST+STOR" } else { "APPE" },
        e.attempts
    ))
}

async fn download_verify(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("readback");
    let body = support::random_bytes(MIB as usize + 17, 5);
    let local = w.local("readback.bin", &body);
    let mut entry = t.entry(&local, &rel);
    entry["verify"] = json!("download");
    let r = w.run("readback", vec![entry], |_| {}).await;
    all_done_on(t, &r)?;
    same_bytes(&disk.join("readback.bin"), &body)?;
    let e = &r.entries[0];
    ensure(e.verification.iter().any(|v| v == "download"), || {
        format!("verification {:?} lacks download", e.verification)
    })?;
    Ok(verified(e))
}

async fn server_hash(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("hash");
    let body = support::random_bytes(300_000, 9);
    let local = w.local("hashed.bin", &body);
    let r = w.run("hash", vec![t.entry(&local, &rel)], |_| {}).await;
    all_done_on(t, &r)?;
    same_bytes(&disk.join("hashed.bin"), &body)?;
    let e = &r.entries[0];
    let hashes: Vec<&String> = e.verification.iter().filter(|v| *v != "size").collect();
    Ok(if hashes.is_empty() {
        "none offered: size only".into()
    } else {
        format!("{} checked", verified(e))
    })
}

/// Logs in with ftpdrop's own Session and writes down what it finds.
async fn probe_quirks(t: &Target) {
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        command: Duration::from_secs(20),
        data: Duration::from_secs(20),
    };
    let tls = if t.tls == "none" {
        None
    } else {
        ftpdrop::ftp::tls::TlsConfigs::default()
            .get(t.ca.as_deref(), t.insecure, false, &Default::default())
            .ok()
    };
    let mut s = match Session::connect(&t.spec(), tls, timeouts, &Default::default(), None).await {
        Ok(s) => s,
        Err(e) => {
            note_quirk(&t.name, format!("probe login failed: {e}"));
            return;
        }
    };
    let f = s.features.clone();
    let mut feat = Vec::new();
    for (on, name) in [
        (f.utf8, "UTF8"),
        (f.size, "SIZE"),
        (f.rest_stream, "REST STREAM"),
        (f.mlst, "MLST"),
        (f.epsv, "EPSV"),
    ] {
        if on {
            feat.push(name.to_string());
        }
    }
    if !f.hash_commands.is_empty() {
        feat.push(format!(
            "hash: {}{}",
            f.hash_commands.join(","),
            if f.hash_algos.is_empty() {
                String::new()
            } else {
                format!(" (HASH {})", f.hash_algos.join(";"))
            }
        ));
    }
    note_quirk(&t.name, format!("FEAT: {}", feat.join(", ")));
    let reply = |r: Result<String, ftpdrop::ftp::fault::Fault>| match r {
        Ok(text) => text,
        Err(e) => e
            .message
            .split_once("server replied ")
            .map(|(_, r)| r.to_string())
            .unwrap_or(e.message),
    };
    let opts = reply(
        s.custom("OPTS UTF8 ON".into(), &[suppaftp::Status::CommandOk])
            .await,
    );
    if !opts.starts_with("200") {
        note_quirk(&t.name, format!("`OPTS UTF8 ON` → `{opts}` (ignored)"));
    }
    let (rel, _) = t.dir("probe");
    let dirs = ftpdrop::ftp::DirCache::default();
    if s.mkdir_p(&rel, &dirs).await.is_ok() {
        let again = reply(
            s.custom(format!("MKD {rel}"), &[suppaftp::Status::PathCreated])
                .await,
        );
        note_quirk(&t.name, format!("MKD of an existing dir → `{again}`"));
    }
    let mlsd = reply(
        s.custom("MLST /".into(), &[suppaftp::Status::RequestedFileActionOk])
            .await,
    );
    if !mlsd.starts_with("250") {
        note_quirk(
            &t.name,
            format!("`MLST /` → `{}`", mlsd.lines().next().unwrap_or("")),
        );
    }
    s.quit().await;
}

/// Every upload scenario against one server.
/// Issue 9: a job with a wrong password, for the login a good job's session
/// is logged in with, must never be served by that session: neither while
/// the good session sits idle in the pool, nor when both jobs come together.
async fn wrong_password_isolated(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("wrongpw");
    let base = w.dir.path().join("daemon-wrongpw");
    let mut cfg = support::daemon_config(&base);
    cfg.connect_timeout_secs = 10;
    let checked = cfg.checked.clone();
    let inbox = cfg.inbox.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(ftpdrop::run(cfg, async {
        let _ = stopped.await;
    }));
    let drop_job = |name: &str, dir: &str, n: usize, pass: &str| {
        let mut bad = t.clone();
        bad.pass = pass.to_string();
        let entries: Vec<Value> = (0..n)
            .map(|i| {
                let local = w.local(&format!("{name}/{name}-{i}.txt"), name.as_bytes());
                bad.entry(&local, &format!("{rel}/{dir}"))
            })
            .collect();
        let tmp = inbox.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&entries).unwrap()).unwrap();
        std::fs::rename(&tmp, inbox.join(format!("{name}.json"))).unwrap();
    };
    let wait = |name: &'static str| {
        let checked = checked.clone();
        async move { support::wait_receipt(&checked, name, Duration::from_secs(120)).await }
    };
    let wrong = "Wr0ng-Passw0rd-9";
    let result = async {
        // Case 1: the good session is idle in the pool when the bad job comes.
        drop_job("good1", "good1", 2, &t.pass);
        all_done(&wait("good1").await)?;
        drop_job("bad1", "bad1", 2, wrong);
        let r = wait("bad1").await;
        ensure(r.state == JobState::Failed, || {
            format!("bad1 ended {:?}: {}", r.state, brief(&r))
        })?;
        // Case 2: both at once, twice, in either order.
        drop_job("good2", "good2", 4, &t.pass);
        drop_job("bad2", "bad2", 4, wrong);
        drop_job("bad3", "bad3", 4, wrong);
        drop_job("good3", "good3", 4, &t.pass);
        for (good, bad) in [("good2", "bad2"), ("good3", "bad3")] {
            all_done(&wait(good).await)?;
            let r = wait(bad).await;
            ensure(r.state == JobState::Failed, || {
                format!("{bad} ended {:?}: {}", r.state, brief(&r))
            })?;
        }
        for bad in ["bad1", "bad2", "bad3"] {
            ensure(!disk.join(bad).exists(), || {
                format!(
                    "the wrong-password job {bad} reached the server's disk: {}",
                    disk.join(bad).display()
                )
            })?;
        }
        for (good, n) in [("good1", 2), ("good2", 4), ("good3", 4)] {
            for i in 0..n {
                same_bytes(
                    &disk.join(good).join(format!("{good}-{i}.txt")),
                    good.as_bytes(),
                )?;
            }
        }
        no_temp_files(&disk)?;
        Ok(String::new())
    }
    .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon).await;
    result
}

async fn matrix(t: &Target, with_proxy: bool) -> Vec<Option<String>> {
    let _ = logs();
    let mut failures = vec![
        scenario(
            "Matrix",
            "wrong password never served by a good session",
            &t.name,
            wrong_password_isolated(t),
        )
        .await,
        scenario("Matrix", "nested mkdir (a/b/c/d)", &t.name, nested_mkdir(t)).await,
        scenario(
            "Matrix",
            "directory already exists (550 on MKD)",
            &t.name,
            existing_dir(t),
        )
        .await,
        scenario(
            "Matrix",
            "overwrite existing file (longer, then shorter)",
            &t.name,
            overwrite(t),
        )
        .await,
        scenario(
            "Matrix",
            "Cyrillic, emoji, space, # % [ in names",
            &t.name,
            unicode_names(t),
        )
        .await,
        scenario("Matrix", "100 MiB file", &t.name, big_upload(t)).await,
        scenario(
            "Matrix",
            "200 small files, max_connections 8",
            &t.name,
            many_small(t),
        )
        .await,
        scenario(
            "Matrix",
            "server-side hash of the temp file",
            &t.name,
            server_hash(t),
        )
        .await,
        scenario(
            "Matrix",
            "verify: download (read back)",
            &t.name,
            download_verify(t),
        )
        .await,
        scenario(
            "Matrix",
            "delivery: templates, sidecar, done marker (manifest)",
            &t.name,
            delivery::conventions(t),
        )
        .await,
        scenario(
            "Matrix",
            "delivery: mtime, chmod, skip_if_identical",
            &t.name,
            delivery::keep_and_skip(t),
        )
        .await,
        scenario(
            "Matrix",
            "delivery: a publish cut before its reply: settled, or replaced where another file",
            &t.name,
            delivery::interrupted_publish(t),
        )
        .await,
    ];
    if with_proxy {
        failures.push(
            scenario(
                "Matrix",
                "resume after a cut data connection",
                &t.name,
                resume_after_cut(t),
            )
            .await,
        );
    }
    probe_quirks(t).await;
    if failures.iter().all(Option::is_none) {
        t.cleanup();
    }
    failures
}

// ------------------------------------------------------------ the tests ---

fn real(name: &str, prefix: &str) -> Option<Target> {
    let env = require_servers(&format!("matrix_{name}"), &[name])?;
    Some(Target::from_env(env, prefix, name))
}

async fn matrix_vsftpd() {
    let Some(t) = real("vsftpd", "VSFTPD") else {
        return;
    };
    finish(matrix(&t, true).await);
}

async fn matrix_pureftpd() {
    let Some(t) = real("pure-ftpd", "PUREFTPD") else {
        return;
    };
    if servers_env()
        .and_then(|e| e.get("FTPDROP_PUREFTPD_CHEAP_HASH"))
        .map(String::as_str)
        != Some("1")
    {
        eprintln!(
            "note: pure-ftpd runs with its default argon2 password hash (~3 s per login); \
             start the servers with FTPDROP_PUREFTPD_CHEAP_HASH=1 for a faster suite"
        );
    }
    finish(matrix(&t, true).await);
}

async fn matrix_proftpd() {
    let Some(t) = real("proftpd", "PROFTPD") else {
        return;
    };
    finish(matrix(&t, true).await);
}

async fn matrix_pyftpdlib() {
    let Some(t) = real("pyftpdlib", "PYFTPDLIB") else {
        return;
    };
    finish(matrix(&t, true).await);
}

async fn matrix_libunftp() {
    let srv = FtpServer::start().await;
    let t = Target::libunftp(&srv);
    finish(matrix(&t, true).await);
}

/// Lines a vsftpd log gained since `from` bytes.
fn log_since(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned()
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Many uploads over few TLS sessions: each session's data connections must
/// resume its TLS session (require_ssl_reuse=YES) time after time.
async fn tls_reuse(t: &Target, log: &Path, version: &str) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir(&format!("tls-{}", t.name));
    let mut entries = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..24u64 {
        let body = support::random_bytes(1000 + i as usize * 501, 300 + i);
        entries.push(t.entry(&w.local(&format!("t/f{i}.bin"), &body), &rel));
        bodies.push(body);
    }
    let big = support::random_bytes(5 * MIB as usize, 301);
    entries.push(t.entry(&w.local("t/big.bin", &big), &rel));
    let before = log_len(log);
    let r = w
        .run("tls", entries, |c| c.max_connections_per_server = 2)
        .await;
    all_done(&r)?;
    for (i, body) in bodies.iter().enumerate() {
        same_bytes(&disk.join(format!("f{i}.bin")), body)?;
    }
    same_bytes(&disk.join("big.bin"), &big)?;
    no_retries(&r)?;
    let new = log_since(log, before);
    // On a first contact the first session offers TLS 1.3 and the one
    // beside it TLS 1.2: the versions mix, every data connection resumes.
    let reused = new
        .lines()
        .filter(|l| l.contains("SSL version: TLSv1.") && l.contains(", reused,"))
        .count();
    ensure(!new.contains("session reuse required"), || {
        "the server refused a data connection: session reuse required".into()
    })?;
    ensure(reused >= 25, || {
        format!("the server log shows {reused} resumed data connections, expected 25")
    })?;
    ensure(new.contains(&format!("SSL version: {version}")), || {
        format!("the server log shows no {version} connection")
    })?;
    let logins = vsftpd_logins(&new, &rel);
    ensure(logins <= 3, || {
        format!("{logins} logins for 25 files with a limit of 2 (at most 3 expected)")
    })?;
    // The uploads after the probe were pipelined through the TLS stream.
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-tls/ftpdrop-learned.json"))
        .unwrap_or_default();
    ensure(learned.contains("\"pipelining\": true"), || {
        format!("no pipelining verdict over TLS: {learned}")
    })?;
    // The key exchange group the server took is kept for the next run's
    // first logins (rustls reports it for TLS 1.3).
    let group = learned
        .split("\"tls_group\": ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u16>().ok());
    ensure(version != "TLSv1.3" || group.is_some(), || {
        format!("no key exchange group learned: {learned}")
    })?;
    // (Control connections resuming one another's TLS 1.2 session: the
    // two sessions here log in together, before there is one to resume;
    // see `tls_control_resume`.)
    Ok(format!(
        "{reused} data connections resumed their session, {logins} logins, pipelined{}",
        group
            .map(|g| format!(", key exchange group {g} kept"))
            .unwrap_or_default()
    ))
}

/// The logins of the sessions that worked in `rel`, from a vsftpd log with
/// `log_ftp_protocol`: other tests' sessions on the same server are told
/// apart by their process, which never names `rel`.
fn vsftpd_logins(log: &str, rel: &str) -> usize {
    let pid = |l: &str| {
        l.split("[pid ")
            .nth(1)?
            .split(']')
            .next()
            .map(str::to_string)
    };
    let ours: std::collections::HashSet<String> = log
        .lines()
        .filter(|l| l.contains(rel))
        .filter_map(pid)
        .collect();
    // The process that answers 230 serves the session from then on.
    log.lines()
        .filter(|l| l.contains("FTP response: ") && l.contains("\"230 "))
        .filter_map(pid)
        .filter(|p| ours.contains(p))
        .count()
}

/// A second control connection resumes the first one's TLS 1.2 session
/// (from the server's `ControlShare`), and its own data connections still
/// resume *its* session: an upload over it lands whole, where the server
/// requires session reuse on data connections.
async fn tls_control_resume(t: &Target, tls12: bool) -> Outcome {
    let (rel, disk) = t.dir(&format!("tls-resume-{}", t.name));
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        command: Duration::from_secs(20),
        data: Duration::from_secs(20),
    };
    let tls = ftpdrop::ftp::tls::TlsConfigs::default()
        .get(t.ca.as_deref(), t.insecure, false, &Default::default())
        .map_err(|e| format!("{e:#}"))?;
    let share = ftpdrop::ftp::tls::Sharing {
        share: Default::default(),
        sessions: true,
    };
    let mut resumed = Vec::new();
    let mut kinds = Vec::new();
    for i in 0..3 {
        let mut s = Session::connect(
            &t.spec(),
            Some(tls.clone()),
            timeouts,
            &Default::default(),
            Some(share.clone()),
        )
        .await
        .map_err(|f| format!("login {i}: {f}"))?;
        resumed.push(s.control_tls_resumed());
        kinds.push(s.control_tls_handshake());
        s.mkdir_p(&rel, &Default::default())
            .await
            .map_err(|f| f.to_string())?;
        let body = support::random_bytes(100_000, 500 + i);
        let path = format!("{rel}/r{i}.bin");
        let mut up = s.store_at(&path, 0).await.map_err(|f| f.to_string())?;
        use tokio::io::AsyncWriteExt;
        up.write_all(&body).await.map_err(|e| e.to_string())?;
        s.finish(up, &path).await.map_err(|f| f.to_string())?;
        same_bytes(&disk.join(format!("r{i}.bin")), &body)?;
        s.quit().await;
    }
    // TLS 1.2 sessions are shared between control connections; TLS 1.3
    // tickets are not (see `ftpdrop::ftp::tls`).
    let expected = [false, tls12, tls12];
    ensure(resumed == expected, || {
        format!("control handshakes that resumed: {resumed:?}, expected {expected:?}")
    })?;
    // The key exchange group the first login settled on is shared: a
    // server that does not take rustls's first choice (vsftpd takes P-256
    // only) asks the first login to retry, and no later one.
    ensure(
        kinds[1..]
            .iter()
            .all(|k| *k != Some(rustls::HandshakeKind::FullWithHelloRetryRequest)),
        || format!("control handshakes: {kinds:?}"),
    )?;
    Ok(if tls12 {
        format!("logins 2 and 3 resumed TLS 1.2; their uploads landed; handshakes {kinds:?}")
    } else {
        format!("TLS 1.3: no control resumption (by design); uploads landed; handshakes {kinds:?}")
    })
}

/// No entry needed a second attempt; else each retried one with its failures from the log.
fn no_retries(r: &ftpdrop::Receipt) -> Result<(), String> {
    let retried: Vec<String> = r
        .entries
        .iter()
        .filter(|e| e.attempts > 1)
        .map(|e| {
            format!(
                "{}: {:?}",
                e.remote_path,
                log_lines(&e.remote_path, "attempt failed")
            )
        })
        .collect();
    ensure(retried.is_empty(), || format!("retries: {retried:?}"))
}

/// The probe's verdict on `t` as ftpdrop logged it: `Some(true)` segments,
/// `Some(false)` single stream (with the reason), `None` not logged.
fn probe_verdict(t: &Target) -> Option<(bool, String)> {
    let server = format!("server={}", t.spec());
    log_text()
        .lines()
        .filter(|l| l.contains(&server) && l.contains("ftpdrop::upload::segment"))
        .find_map(|l| {
            if l.contains("go in segments") {
                Some((true, String::new()))
            } else if l.contains("single stream") {
                let why = l.split("reason=").nth(1).unwrap_or(l);
                Some((false, why.trim().to_string()))
            } else {
                None
            }
        })
}

/// Uploads in the vsftpd log (`OK UPLOAD` lines) to a temp file in `rel`.
fn temp_uploads_logged(log: &str, rel: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("OK UPLOAD") && l.contains(&format!("{rel}/.ftpdrop-")))
        .filter(|l| l.contains(".part"))
        .count()
}

/// The 100 MiB file to a server: in segments if `segments`, else in one
/// stream; byte-identical either way. `log`: the vsftpd log, which must show
/// one upload per segment (and before them the stream's, when it was split
/// only once it proved slow).
/// `after_ms`: `segment_after_ms` (None: the default, a split only once the
/// stream proves slow).
async fn segmented_big(
    t: &Target,
    segments: bool,
    log: Option<PathBuf>,
    after_ms: Option<u64>,
) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.seg_dir("segmented");
    let local = big_file();
    // A probe file left by a run killed mid-probe: this run's probe deletes
    // it, so `no_temp_files` below holds (issue 10).
    let stale = disk.join(".ftpdrop-probe-00000000deadbeef");
    t.make_dir_on_disk(&disk);
    std::fs::write(&stale, b"0123").unwrap();
    let meta = std::fs::metadata(&t.root).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&stale, Some(meta.uid()), Some(meta.gid()));
    }
    let before = log.as_deref().map_or(0, log_len);
    let started = Instant::now();
    let r = w
        .run("segmented", vec![t.entry(&local, &rel)], |c| {
            if let Some(ms) = after_ms {
                c.segment_after_ms = ms;
            }
        })
        .await;
    let secs = started.elapsed().as_secs_f64();
    all_done_on(t, &r)?;
    let remote = disk.join("big-100MiB.bin");
    support::assert_same_file(&local, &remote);
    no_temp_files(&disk)?;
    let e = &r.entries[0];
    let verdict = probe_verdict(t);
    let used = e.segments.unwrap_or(1);
    let note = if segments {
        ensure(used > 1, || {
            format!("one stream; the probe said {verdict:?}")
        })?;
        ensure(verdict == Some((true, String::new())), || {
            format!("probe verdict {verdict:?}")
        })?;
        if let Some(log) = &log {
            // Split from the start: one upload per segment. Split once
            // slow: the stream's own upload, then one per segment.
            let first = usize::from(after_ms != Some(0));
            let n = temp_uploads_logged(&log_since(log, before), &rel);
            ensure(n == first + used, || {
                format!(
                    "the server logged {n} uploads to the temp file for {first} first stream(s) and {used} segments"
                )
            })?;
        }
        format!("{used} segments, {secs:.1} s")
    } else {
        ensure(e.segments.is_none(), || format!("{used} segments"))?;
        let Some((false, why)) = verdict else {
            return Err(format!("probe verdict {verdict:?}, expected single stream"));
        };
        format!("single stream ({why}), {secs:.1} s")
    };
    let _ = std::fs::remove_file(&remote);
    Ok(note)
}

/// Two segments' data connections are reset after 10 MiB (in one attempt
/// or in two, as the segments' first bytes race): each such attempt fails,
/// the next one deletes the temp file with its holes (never resumes it) and
/// sends the file again in segments.
async fn segmented_cut(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.seg_dir("segmented-cut");
    let local = big_file();
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    // A fault goes to the first data connections that reach 10 MiB (the
    // probes' few bytes never do): two of the segments are cut.
    proxy.cut_data_after(10 * MIB, 2);
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let r = w
        .run("segcut", vec![via.entry(&local, &rel)], |c| {
            c.retry.initial_backoff_ms = 500;
            c.segment_after_ms = 0;
        })
        .await;
    all_done(&r)?;
    support::assert_same_file(&local, disk.join("big-100MiB.bin"));
    no_temp_files(&disk)?;
    let e = &r.entries[0];
    // Once one segment is cut the attempt stops the others, so the second
    // claimed fault may never reach its 10 MiB: one or two cuts.
    let cuts = proxy.data_faults_fired();
    ensure((1..=2).contains(&cuts), || {
        format!("{cuts} cuts happened, expected 1 or 2")
    })?;
    ensure(e.attempts >= 2, || format!("{} attempt(s)", e.attempts))?;
    ensure(e.segments.unwrap_or(1) > 1, || {
        "the retry was not segmented".into()
    })?;
    let dele = proxy
        .commands_with_verb("DELE")
        .into_iter()
        .filter(|c| c.ends_with(".part"))
        .count();
    ensure(dele >= 1, || {
        format!(
            "the cut temp file was not deleted before the retry: {:?}",
            proxy.commands_seen()
        )
    })?;
    let _ = std::fs::remove_file(disk.join("big-100MiB.bin"));
    Ok(format!(
        "2 segments cut, {} attempts, {} segments at the end",
        e.attempts,
        e.segments.unwrap_or(1)
    ))
}

/// `kill -9` of the real binary while a big file goes in segments (split
/// once the stream proved slow), then a restart: the journal says the temp
/// file may have holes, so the restart deletes it instead of resuming at
/// its SIZE, and the file is published whole.
async fn segmented_kill9(t: &Target) -> Outcome {
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (rel, disk) = t.seg_dir("segmented-kill9");
    let local = big_file();
    let cfg = base.path().join("cfg.json");
    let inbox = base.path().join("files");
    let checked = base.path().join("checked");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&checked).unwrap();
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "inbox": inbox, "checked": checked, "settle_ms": 0, "status": {"listen": "127.0.0.1:0"},
            "retry": {"initial_backoff_ms": 100, "max_backoff_ms": 1000},
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        inbox.join("k9.json"),
        serde_json::to_vec(&json!([t.entry(&local, &rel)])).unwrap(),
    )
    .unwrap();
    let spawn = |name: &str| spawn_daemon(&cfg, &base.path().join(format!("{name}.log")));
    let journal = checked.join("k9.journal");
    let temp_bytes = || -> u64 {
        std::fs::read_dir(&disk)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let mut run1 = spawn("run1");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Segmented (journaled), and the segments well under way.
    let mut marked = None;
    let killed_at = loop {
        let seg = std::fs::read_to_string(&journal).is_ok_and(|j| j.contains("\"segmented\":true"));
        if seg && marked.is_none() {
            marked = Some(Instant::now());
        }
        if marked.is_some_and(|m| m.elapsed() > Duration::from_millis(700)) {
            let _ = run1.kill();
            let _ = run1.wait();
            break temp_bytes();
        }
        if Instant::now() > deadline || run1.try_wait().ok().flatten().is_some() {
            let _ = run1.kill();
            let _ = run1.wait();
            return Err("the upload never went in segments within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ensure(!disk.join("big-100MiB.bin").exists(), || {
        "the kill came after the publish".into()
    })?;
    let run2 = spawn("run2");
    let r = final_receipt(
        run2,
        &checked.join("k9.report.json"),
        Duration::from_secs(120),
    )
    .await?;
    all_done(&r)?;
    support::assert_same_file(&local, disk.join("big-100MiB.bin"));
    no_temp_files(&disk)?;
    let log2 = std::fs::read_to_string(base.path().join("run2.log")).unwrap_or_default();
    ensure(log2.contains("resuming interrupted job"), || {
        "the restart did not resume the job".into()
    })?;
    let _ = std::fs::remove_file(disk.join("big-100MiB.bin"));
    Ok(format!(
        "killed with {} MiB in the temp file; restarted, {} segments, published whole",
        killed_at >> 20,
        r.entries[0].segments.unwrap_or(1)
    ))
}

/// Starts the real daemon (`ftpdrop run --config cfg`), its log to `log`.
fn spawn_daemon(cfg: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ftpdrop")
}

/// Waits for `receipt` to be final, then stops `daemon` (SIGTERM).
async fn final_receipt(
    mut daemon: std::process::Child,
    receipt: &Path,
    within: Duration,
) -> Result<Receipt, String> {
    let deadline = Instant::now() + within;
    let r = loop {
        if let Ok(r) = Receipt::load(receipt) {
            if r.state != JobState::Running {
                break r;
            }
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(format!(
                "no final receipt within {} s of the restart",
                within.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    Ok(r)
}

/// Segmented uploads where the server keeps parallel REST+STOR writes, a
/// single stream where the probe finds it does not.
async fn segmented_upload_where_the_probe_allows() {
    let servers = [
        "vsftpd",
        "vsftpd-throttled",
        "pure-ftpd",
        "proftpd",
        "pyftpdlib",
        "vsftpd-tls",
    ];
    let Some(env) = require_servers("segmented_upload_where_the_probe_allows", &servers) else {
        return;
    };
    let _ = logs();
    let ca = env.get("FTPDROP_TLS_CA").cloned();
    let vs = Target::from_env(env, "VSFTPD", "vsftpd");
    let pure = Target::from_env(env, "PUREFTPD", "pure-ftpd");
    let pro = Target::from_env(env, "PROFTPD", "proftpd");
    let py = Target::from_env(env, "PYFTPDLIB", "pyftpdlib");
    let locked = Target::from_env(env, "VSFTPDTLS", "vsftpd-tls").tls("explicit", ca.as_deref());
    let vs_log = PathBuf::from(&env["FTPDROP_VSFTPD_LOG"]).join("vsftpd.log");
    let slow = Target::from_env(env, "VSFTPDTHROTTLED", "vsftpd-throttled");
    let slow_log = PathBuf::from(&env["FTPDROP_VSFTPDTHROTTLED_LOG"]).join("vsftpd.log");
    let failures = vec![
        scenario(
            "Segmented uploads",
            "100 MiB in segments (lock_upload_files=NO), split from the start",
            "vsftpd",
            segmented_big(&vs, true, Some(vs_log), Some(0)),
        )
        .await,
        scenario(
            "Segmented uploads",
            "100 MiB, 20 MB/s per connection: one stream, split once it proves slow",
            "vsftpd-throttled",
            segmented_big(&slow, true, Some(slow_log), None),
        )
        .await,
        scenario(
            "Segmented uploads",
            "kill -9 while segments write, restart: temp deleted, published whole",
            "vsftpd-throttled",
            segmented_kill9(&slow),
        )
        .await,
        scenario(
            "Segmented uploads",
            "two segments' data connections cut: retried in segments",
            "vsftpd",
            segmented_cut(&vs),
        )
        .await,
        scenario(
            "Segmented uploads",
            "100 MiB: probe says single stream",
            "pure-ftpd",
            segmented_big(&pure, false, None, Some(0)),
        )
        .await,
        scenario(
            "Segmented uploads",
            "100 MiB: probe says single stream",
            "proftpd",
            segmented_big(&pro, false, None, Some(0)),
        )
        .await,
        scenario(
            "Segmented uploads",
            "100 MiB: probe says single stream",
            "pyftpdlib",
            segmented_big(&py, false, None, Some(0)),
        )
        .await,
        scenario(
            "Segmented uploads",
            "100 MiB, TLS, default lock_upload_files: probe says single stream",
            "vsftpd-tls",
            segmented_big(&locked, false, None, Some(0)),
        )
        .await,
    ];
    for t in [&vs, &slow, &pure, &pro, &py, &locked] {
        if failures.iter().all(Option::is_none) {
            t.seg_cleanup();
        }
    }
    finish(failures);
}

async fn expect_failure(
    t: &Target,
    job: &str,
    must_contain: &[&str],
    tweak: impl FnOnce(&mut Value),
) -> Outcome {
    let w = Work::new();
    let (rel, _) = t.dir(job);
    let local = w.local("x.txt", b"never arrives");
    let mut entry = t.entry(&local, &rel);
    tweak(&mut entry);
    let started = Instant::now();
    let r = w.run(job, vec![entry], |_| {}).await;
    let e = &r.entries[0];
    ensure(e.state == EntryState::Failed, || {
        format!("entry {:?}, expected failed", e.state)
    })?;
    ensure(e.attempts == 1, || {
        format!(
            "{} attempts: a permanent fault must not be retried ({:?})",
            e.attempts, e.error
        )
    })?;
    let err = e.error.clone().unwrap_or_default();
    for want in must_contain {
        ensure(err.contains(want), || {
            format!("error lacks {want:?}: {err}")
        })?;
    }
    ensure(!err.contains(&t.pass), || {
        "the error shows the password".into()
    })?;
    Ok(format!(
        "failed at once ({:.1} s): `{err}`",
        started.elapsed().as_secs_f64()
    ))
}

async fn tls() {
    let servers = [
        "vsftpd-tls",
        "vsftpd-tls12",
        "vsftpd-implicit",
        "pure-ftpd (TLS)",
    ];
    let Some(env) = require_servers("tls", &servers) else {
        return;
    };
    let _ = logs();
    let ca = env.get("FTPDROP_TLS_CA").cloned();
    let ca = ca.as_deref();
    let v13 = Target::from_env(env, "VSFTPDTLS", "vsftpd-tls").tls("explicit", ca);
    let v12 = Target::from_env(env, "VSFTPDTLS12", "vsftpd-tls12").tls("explicit", ca);
    let imp = Target::from_env(env, "VSFTPDIMPLICIT", "vsftpd-implicit").tls("implicit", ca);
    let mut pure = Target::from_env(env, "PUREFTPD", "pure-ftpd").tls("explicit", ca);
    pure.host = "localhost".into();
    let log =
        |prefix: &str| PathBuf::from(&env[&format!("FTPDROP_{prefix}_LOG")]).join("vsftpd.log");
    let mut failures = vec![
        scenario(
            "TLS",
            "explicit TLS 1.3, require_ssl_reuse, 25 uploads over 2 sessions",
            "vsftpd-tls",
            tls_reuse(&v13, &log("VSFTPDTLS"), "TLSv1.3"),
        )
        .await,
        scenario(
            "TLS",
            "explicit TLS 1.2, require_ssl_reuse, 25 uploads over 2 sessions",
            "vsftpd-tls12",
            tls_reuse(&v12, &log("VSFTPDTLS12"), "TLSv1.2"),
        )
        .await,
        scenario(
            "TLS",
            "implicit TLS, require_ssl_reuse, 25 uploads over 2 sessions",
            "vsftpd-implicit",
            tls_reuse(&imp, &log("VSFTPDIMPLICIT"), "TLSv1.3"),
        )
        .await,
    ];
    for (t, name, tls12) in [
        (&v13, "vsftpd-tls", false),
        (&v12, "vsftpd-tls12", true),
        (&imp, "vsftpd-implicit", false),
    ] {
        failures.push(
            scenario(
                "TLS",
                "new control connections resume the TLS 1.2 session",
                name,
                tls_control_resume(t, tls12),
            )
            .await,
        );
    }
    failures.push(
        scenario(
            "TLS",
            "explicit TLS, cert for `localhost`, ca_file",
            "pure-ftpd",
            async {
                let w = Work::new();
                let (rel, disk) = pure.dir("tls-pure");
                let body = support::random_bytes(2 * MIB as usize, 41);
                let local = w.local("p.bin", &body);
                let r = w
                    .run("tlspure", vec![pure.entry(&local, &rel)], |_| {})
                    .await;
                all_done(&r)?;
                same_bytes(&disk.join("p.bin"), &body)?;
                Ok("host `localhost`".into())
            },
        )
        .await,
    );
    let mut untrusted = v13.clone();
    untrusted.ca = None;
    failures.push(
        scenario(
            "TLS",
            "untrusted certificate (no ca_file: system roots)",
            "vsftpd-tls",
            expect_failure(
                &untrusted,
                "untrusted",
                &["UnknownIssuer", "ca_file"],
                |_| {},
            ),
        )
        .await,
    );
    let mut wrong_name = pure.clone();
    wrong_name.host = "127.0.0.1".into();
    failures.push(
        scenario(
            "TLS",
            "wrong host name (127.0.0.1, cert only for localhost)",
            "pure-ftpd",
            expect_failure(
                &wrong_name,
                "wrongname",
                &["not valid for name", "127.0.0.1"],
                |_| {},
            ),
        )
        .await,
    );
    let mut plain = v13.clone();
    plain.tls = "none";
    plain.ca = None;
    failures.push(
        scenario(
            "TLS",
            "plain FTP to a TLS-only server",
            "vsftpd-tls",
            expect_failure(&plain, "plain", &["requires TLS"], |_| {}),
        )
        .await,
    );
    let mut insecure = v13.clone();
    insecure.ca = None;
    insecure.insecure = true;
    failures.push(
        scenario(
            "TLS",
            "insecure_skip_verify (untrusted cert accepted, warned)",
            "vsftpd-tls",
            async {
                let w = Work::new();
                let (rel, disk) = insecure.dir("insecure");
                let local = w.local("i.txt", b"no verification");
                let r = w
                    .run("insecure", vec![insecure.entry(&local, &rel)], |_| {})
                    .await;
                all_done(&r)?;
                same_bytes(&disk.join("i.txt"), b"no verification")?;
                let warned = log_text().lines().any(|l| {
                    l.contains("WARN")
                        && l.contains("verification is OFF")
                        && l.contains(&format!(":{}", insecure.port))
                });
                ensure(warned, || "no warning logged".into())?;
                Ok("warning logged at connect".into())
            },
        )
        .await,
    );
    for t in [&v13, &v12, &imp, &pure] {
        if failures.iter().all(Option::is_none) {
            t.cleanup();
        }
    }
    finish(failures);
}

/// proftpd's mod_tls with TLS required and session reuse required on data
/// connections (its default). Over TLS 1.3 it hands out two tickets on the
/// control connection and none on data connections: 30 files over one or
/// two sessions need more resumptions than that. Every data connection
/// must resume (the TLS log never says "did not reuse"), none may wait for
/// tickets that never come, and nothing may be retried.
async fn proftpd_tls_reuse(t: &Target, tls_log: &Path, expect: &str, max_logins: usize) -> Outcome {
    let w = Work::new();
    let commands_log = tls_log.with_file_name("commands.log");
    let commands_before = log_len(&commands_log);
    let (rel, disk) = t.dir(&format!("tls-{}", t.name));
    let mut entries = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..30u64 {
        let body = support::random_bytes(2000 + i as usize * 777, 500 + i);
        entries.push(t.entry(&w.local(&format!("t/f{i}.bin"), &body), &rel));
        bodies.push(body);
    }
    let before = log_len(tls_log);
    let started = Instant::now();
    let r = w
        .run("protls", entries, |c| c.max_connections_per_server = 2)
        .await;
    let took = started.elapsed();
    all_done(&r)?;
    for (i, body) in bodies.iter().enumerate() {
        same_bytes(&disk.join(format!("f{i}.bin")), body)?;
    }
    no_retries(&r)?;
    let new = log_since(tls_log, before);
    // mod_tls refuses the data connection of a control connection that
    // resumed another one's TLS 1.2 session: the probe's, once per session
    // that probed, and never an upload's.
    let refused = new.lines().filter(|l| l.contains("did not reuse")).count();
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-protls/ftpdrop-learned.json"))
        .unwrap_or_default();
    let probes = log_text()
        .lines()
        .filter(|l| {
            l.contains(&format!(":{} ", t.port))
                && l.contains("may resume another one's TLS session")
                && l.contains("works=false")
        })
        .count();
    ensure(
        refused <= probes && (refused == 0 || learned.contains("\"control_tls_resume\": false")),
        || {
            format!(
                "the server refused {refused} data connection(s) that did not reuse the TLS \
                 session, after {probes} probe(s): {:?}; learned: {learned}",
                new.lines()
                    .filter(|l| l.contains("did not reuse"))
                    .take(3)
                    .collect::<Vec<_>>()
            )
        },
    )?;
    let versions: Vec<&str> = ["TLSv1.2", "TLSv1.3"]
        .into_iter()
        .filter(|v| {
            new.contains(&format!("{v} connection accepted"))
                || new.contains(&format!("protocol {v}"))
        })
        .collect();
    ensure(new.contains(expect), || {
        format!("the TLS log never mentions {expect:?}; it shows {versions:?}")
    })?;
    // 30 small files: waiting 2 s for tickets per data connection would take a minute.
    ensure(took < Duration::from_secs(20), || {
        format!("30 small files took {:.1} s", took.as_secs_f64())
    })?;
    // Only this scenario talks to this server meanwhile: its logins are ours.
    let logins = log_since(&commands_log, commands_before)
        .lines()
        .filter(|l| l.contains("\"PASS "))
        .count();
    ensure(logins <= max_logins, || {
        format!("{logins} logins for 30 files with a limit of 2 (at most {max_logins} expected)")
    })?;
    Ok(format!(
        "30 files, no retry, {:.1} s, {logins} logins; TLS log: {versions:?}; {refused} probe \
         data connection(s) refused after a resumed control handshake",
        took.as_secs_f64()
    ))
}

async fn proftpd_mod_tls() {
    let servers = ["proftpd-tls", "proftpd-tls12", "proftpd-implicit"];
    let Some(env) = require_servers("proftpd_mod_tls", &servers) else {
        return;
    };
    let _ = logs();
    let ca = env.get("FTPDROP_TLS_CA").cloned();
    let ca = ca.as_deref();
    let both = Target::from_env(env, "PROFTPDTLS", "proftpd-tls").tls("explicit", ca);
    let v12 = Target::from_env(env, "PROFTPDTLS12", "proftpd-tls12").tls("explicit", ca);
    let imp = Target::from_env(env, "PROFTPDIMPLICIT", "proftpd-implicit").tls("implicit", ca);
    let log = |prefix: &str| PathBuf::from(&env[&format!("FTPDROP_{prefix}_LOG")]).join("tls.log");
    let failures = vec![
        scenario(
            "TLS",
            "proftpd mod_tls, TLS 1.2+1.3, reuse required, 30 uploads",
            "proftpd-tls",
            proftpd_tls_reuse(&both, &log("PROFTPDTLS"), "TLS", 3),
        )
        .await,
        scenario(
            "TLS",
            "proftpd mod_tls, TLS 1.2 only, reuse required, 30 uploads",
            "proftpd-tls12",
            proftpd_tls_reuse(&v12, &log("PROFTPDTLS12"), "TLS", 3),
        )
        .await,
        scenario(
            "TLS",
            "proftpd mod_tls, implicit, TLS 1.3 only, reuse required, 30 uploads",
            "proftpd-implicit",
            proftpd_tls_reuse(&imp, &log("PROFTPDIMPLICIT"), "TLS", 16),
        )
        .await,
    ];
    for t in [&both, &v12, &imp] {
        if failures.iter().all(Option::is_none) {
            t.cleanup();
        }
    }
    finish(failures);
}

async fn connection_limit_is_back_pressure() {
    let Some(env) = require_servers("connection_limit_is_back_pressure", &["vsftpd-limited"])
    else {
        return;
    };
    let _ = logs();
    let t = Target::from_env(env, "VSFTPDLIMITED", "vsftpd-limited");
    let failure = scenario(
        "Connection limits",
        "max_per_ip=2 while ftpdrop allows 8: 421 is back-pressure",
        "vsftpd-limited",
        async {
            let w = Work::new();
            let (rel, disk) = t.dir("limited");
            let mut entries = Vec::new();
            let mut bodies = Vec::new();
            // Slow enough that a session is still busy when the next entry
            // wants one: the pool opens a session only when waiting for a
            // busy one would take longer than a login, and on loopback an
            // 8 MiB file took 40 ms (CI once met no 421 at all). Each data
            // connection is capped at 16 MB/s, as on a real link.
            let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
            let proxy = FaultProxy::start(upstream).await;
            proxy.throttle(16_000_000);
            let mut via = t.clone();
            via.port = proxy.addr.port();
            for i in 0..40u64 {
                let body = support::random_bytes((8 << 20) + i as usize * 97, 500 + i);
                entries.push(via.entry(&w.local(&format!("l/f{i}.bin"), &body), &rel));
                bodies.push(body);
            }
            let r = w
                .run("limited", entries, |c| {
                    c.max_connections = 8;
                    c.max_connections_per_server = 8;
                    c.retry.max_attempts = 2;
                })
                .await;
            all_done(&r)?;
            for (i, body) in bodies.iter().enumerate() {
                same_bytes(&disk.join(format!("f{i}.bin")), body)?;
            }
            let port = format!(":{}", via.port);
            let lowered = log_text()
                .lines()
                .filter(|l| l.contains("lowering its limit") && l.contains(&port))
                .count();
            ensure(lowered > 0, || {
                "the server never refused a connection".into()
            })?;
            // A 421 is the server's signal, for every entry: a wait for the
            // whole server begins, said once per wait.
            let full = log_text()
                .lines()
                .filter(|l| l.contains("the server is full") && l.contains(&port))
                .count();
            ensure(full > 0, || "no server-wide wait after a 421".into())?;
            let failed = r
                .entries
                .iter()
                .filter(|e| e.state == EntryState::Failed)
                .count();
            Ok(format!(
                "40 × 8 MiB done, {failed} failed; limit lowered {lowered} times (8 → {}); {full} server-wide waits",
                8usize.saturating_sub(lowered).max(1)
            ))
        },
    )
    .await;
    if failure.is_none() {
        t.cleanup();
    }
    finish(vec![failure]);
}

/// Issue 12: two instances, each allowed 4 connections, against vsftpd with
/// `max_per_ip=2`: the server sees the sum, and the adaptive handling of 421
/// keeps both instances working until every file is done.
async fn two_instances_share_a_server_that_allows_two() {
    let Some(env) = require_servers(
        "two_instances_share_a_server_that_allows_two",
        &["vsftpd-limited"],
    ) else {
        return;
    };
    let t = Target::from_env(env, "VSFTPDLIMITED", "vsftpd-limited");
    let failure = scenario(
        "Connection limits",
        "two instances × 4 connections, max_per_ip=2",
        "vsftpd-limited",
        async {
            let w = Work::new();
            let (rel, disk) = t.dir("two-instances");
            let mut runs = Vec::new();
            let mut bodies = Vec::new();
            for n in 0..2 {
                let base = w.dir.path().join(format!("instance{n}"));
                std::fs::create_dir_all(base.join("files")).unwrap();
                let entries: Vec<Value> = (0..16u64)
                    .map(|i| {
                        let body =
                            support::random_bytes((4 << 20) + i as usize * 31, 900 + n * 100 + i);
                        let e = t.entry(&w.local(&format!("two/{n}-{i}.bin"), &body), &rel);
                        bodies.push((format!("{n}-{i}.bin"), body));
                        e
                    })
                    .collect();
                std::fs::write(
                    base.join("files/job.json"),
                    serde_json::to_vec(&entries).unwrap(),
                )
                .unwrap();
                let cfg = json!({
                    "inbox": base.join("files"), "checked": base.join("checked"), "settle_ms": 0,
                    "status": {"listen": "127.0.0.1:0"},
                    "max_connections": 4, "max_connections_per_server": 4,
                    "retry": {"initial_backoff_ms": 100, "max_backoff_ms": 1000},
                });
                std::fs::write(base.join("config.json"), cfg.to_string()).unwrap();
                runs.push(
                    tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
                        .args([
                            "once",
                            "--config",
                            base.join("config.json").to_str().unwrap(),
                        ])
                        .output(),
                );
            }
            let (a, b) = tokio::join!(runs.remove(0), runs.remove(0));
            let mut lowered = 0;
            for (n, out) in [a, b].into_iter().enumerate() {
                let out = out.map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                lowered += stderr.matches("lowering its limit").count();
                ensure(out.status.success(), || {
                    format!(
                        "instance {n} did not finish every job: {}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                })?;
            }
            for (name, body) in &bodies {
                same_bytes(&disk.join(name), body)?;
            }
            no_temp_files(&disk)?;
            Ok(format!(
                "2 × 16 × 4 MiB done; limits lowered {lowered} times"
            ))
        },
    )
    .await;
    if failure.is_none() {
        t.cleanup();
    }
    finish(vec![failure]);
}

/// pyftpdlib with one quirk (or a few) per login: see scripts/interop/quirky_ftpd.py.
async fn quirks_are_detected_not_configured() {
    let Some(env) = require_servers("quirks_are_detected_not_configured", &["pyftpdlib-quirks"])
    else {
        return;
    };
    let _ = logs();
    let base = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    let as_user = |quirks: &str| {
        let mut t = base.clone();
        t.user = format!("q-{quirks}");
        t.name = format!("pyftpdlib `{}`", t.user);
        t
    };
    // One upload per quirk; `check` looks at the receipt entry.
    async fn one(
        t: &Target,
        job: &str,
        verify: Option<&str>,
        check: impl FnOnce(&EntryReport) -> Result<String, String>,
    ) -> Outcome {
        let w = Work::new();
        let (rel, disk) = t.dir(job);
        let body = support::random_bytes(256 * 1024 + 3, job.len() as u64);
        let local = w.local("q.bin", &body);
        let mut entry = t.entry(&local, &rel);
        if let Some(v) = verify {
            entry["verify"] = json!(v);
        }
        let r = w.run(job, vec![entry], |_| {}).await;
        all_done(&r)?;
        same_bytes(&disk.join("q.bin"), &body)?;
        check(&r.entries[0])
    }
    let has = |e: &EntryReport, v: &str| e.verification.iter().any(|x| x == v);
    let mut failures = Vec::new();

    let t = as_user("noepsv");
    failures.push(
        scenario(
            "Quirks",
            "EPSV refused (502) → PASV",
            &t.name,
            one(&t, "noepsv", None, |_| Ok(String::new())),
        )
        .await,
    );
    let t = as_user("noepsv-pasvnat");
    failures.push(
        scenario(
            "Quirks",
            "PASV advertises an unroutable 10.255.255.1 → control address used",
            &t.name,
            one(&t, "pasvnat", None, |_| Ok(String::new())),
        )
        .await,
    );
    for (quirk, what) in [
        ("nofeat", "FEAT refused (502)"),
        ("badfeat", "FEAT lines not indented"),
    ] {
        let t = as_user(quirk);
        failures.push(
            scenario(
                "Quirks",
                &format!("{what} → features unknown"),
                &t.name,
                one(&t, quirk, None, |e| {
                    ensure(e.verification == ["size"], || {
                        format!("verification {:?}", e.verification)
                    })?;
                    Ok("size check only".into())
                }),
            )
            .await,
        );
    }
    let t = as_user("nornto");
    failures.push(
        scenario(
            "Quirks",
            "RNTO onto an existing file refused (550) → DELE, RNTO",
            &t.name,
            async {
                let w = Work::new();
                let (rel, disk) = t.dir("nornto");
                for (i, body) in [&b"first version"[..], &b"second version, replacing it"[..]]
                    .iter()
                    .enumerate()
                {
                    let local = w.local(&format!("{i}/r.txt"), body);
                    let r = w
                        .run(&format!("nornto{i}"), vec![t.entry(&local, &rel)], |_| {})
                        .await;
                    all_done(&r)?;
                    same_bytes(&disk.join("r.txt"), body)?;
                }
                no_temp_files(&disk)?;
                Ok(String::new())
            },
        )
        .await,
    );
    for (quirk, algo) in [
        ("xsha256", "sha256"),
        ("xsha1", "sha1"),
        ("xmd5", "md5"),
        ("xcrc", "crc32"),
        ("hash", "sha1"),
    ] {
        let t = as_user(quirk);
        let what = if quirk == "hash" {
            "only `HASH SHA-1*;MD5;CRC32` offered → HASH with SHA-1".to_string()
        } else {
            format!("only {} offered → {algo} checked", quirk.to_uppercase())
        };
        failures.push(
            scenario(
                "Quirks",
                &what,
                &t.name,
                one(&t, quirk, None, |e| {
                    ensure(has(e, algo), || {
                        format!("verification {:?} lacks {algo}", e.verification)
                    })?;
                    Ok(verified(e))
                }),
            )
            .await,
        );
    }
    let t = as_user("xsha256-corrupt");
    failures.push(
        scenario(
            "Quirks",
            "server damages the stored file → hash mismatch → sent again from scratch",
            &t.name,
            one(&t, "corrupt-hash", None, |e| {
                ensure(e.attempts == 2, || {
                    format!("{} attempts, expected 2", e.attempts)
                })?;
                ensure(has(e, "sha256"), || {
                    format!("verification {:?}", e.verification)
                })?;
                Ok(format!("{} attempts", e.attempts))
            }),
        )
        .await,
    );
    let t = as_user("corrupt");
    failures.push(
        scenario(
            "Quirks",
            "no hash command, file damaged, verify: download → read-back catches it",
            &t.name,
            one(&t, "corrupt-download", Some("download"), |e| {
                ensure(e.attempts == 2, || {
                    format!("{} attempts, expected 2", e.attempts)
                })?;
                ensure(has(e, "download"), || {
                    format!("verification {:?}", e.verification)
                })?;
                Ok(format!("{} attempts", e.attempts))
            }),
        )
        .await,
    );
    // Resumes on servers with protocol quirks: the first data connection
    // is cut at 3 MiB of 8 by a proxy that also records the commands.
    for (quirk, what, resumes) in [
        (
            "bsdrest",
            "REST forgotten unless right before STOR (BSD ftpd) → REST, STOR back to back",
            true,
        ),
        (
            "norest",
            "REST not implemented (502) → resume with APPE",
            true,
        ),
        (
            "noappe",
            "APPE not implemented (502) → temp files made with STOR, resume with REST",
            true,
        ),
        (
            "noappe-norest",
            "neither APPE nor REST (502) → upload again from zero",
            false,
        ),
    ] {
        let t = as_user(quirk);
        failures.push(
            scenario(
                "Quirks",
                &format!("{what}, after a cut"),
                &t.name,
                resume_quirk(&t, quirk, resumes),
            )
            .await,
        );
    }
    if failures.iter().all(Option::is_none) {
        base.cleanup();
    }
    let tls_env = require_servers(
        "quirks_are_detected_not_configured",
        &["pyftpdlib-quirks (TLS)"],
    );
    if let Some(env) = tls_env {
        let ca = env.get("FTPDROP_TLS_CA").cloned();
        let mut t = Target::from_env(env, "PYQUIRKSTLS", "pyftpdlib-quirks (TLS)")
            .tls("explicit", ca.as_deref());
        t.user = "q-tlsfirst".into();
        t.name = "pyftpdlib `q-tlsfirst` (TLS)".into();
        failures.push(
            scenario(
                "Quirks",
                "150 sent only after the data connection's TLS handshake → handshake starts at connect",
                &t.name,
                async {
                    let w = Work::new();
                    let (rel, disk) = t.dir("tlsfirst");
                    let mut entries = Vec::new();
                    let mut bodies = Vec::new();
                    for i in 0..3u64 {
                        let body = support::random_bytes(100_000 + i as usize, 900 + i);
                        let mut e = t.entry(&w.local(&format!("f{i}.bin"), &body), &rel);
                        // Read back: RETR's data connection has the same rule.
                        e["verify"] = json!("download");
                        entries.push(e);
                        bodies.push(body);
                    }
                    let started = Instant::now();
                    let r = w.run("tlsfirst", entries, |_| {}).await;
                    all_done(&r)?;
                    for (i, body) in bodies.iter().enumerate() {
                        same_bytes(&disk.join(format!("f{i}.bin")), body)?;
                    }
                    ensure(r.entries.iter().all(|e| e.attempts == 1), || {
                        "an upload was retried".into()
                    })?;
                    Ok(format!(
                        "3 uploads read back, {:.1} s",
                        started.elapsed().as_secs_f64()
                    ))
                },
            )
            .await,
        );
        if failures.iter().all(Option::is_none) {
            t.cleanup();
        }
    }
    finish(failures);
}

/// One 8 MiB upload to `t` through a proxy that cuts the first data
/// connection at 3 MiB. It must end done and whole, with `REST` only ever
/// right before `STOR` or `APPE` on the wire; `resumes`: the retry continues
/// the temp file (fewer than two file sizes sent), else it starts over.
async fn resume_quirk(t: &Target, job: &str, resumes: bool) -> Outcome {
    const SIZE: u64 = 8 * MIB;
    let w = Work::new();
    let (rel, disk) = t.dir(job);
    let body = support::random_bytes(SIZE as usize, 77);
    let local = w.local("r.bin", &body);
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    proxy.cut_data_after(3 * MIB, 1);
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let r = w
        .run(job, vec![via.entry(&local, &rel)], |c| {
            c.retry.initial_backoff_ms = 200;
            c.segment_after_ms = 60_000;
        })
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("r.bin"), &body)?;
    no_temp_files(&disk)?;
    let commands = proxy.commands_seen();
    for (i, c) in commands.iter().enumerate() {
        if c.to_ascii_uppercase().starts_with("REST ") {
            let next = commands.get(i + 1).map(|n| n.to_ascii_uppercase());
            ensure(
                next.as_deref()
                    .is_some_and(|n| n.starts_with("STOR ") || n.starts_with("APPE ")),
                || format!("`{c}` followed by {next:?}, not by STOR or APPE"),
            )?;
        }
    }
    let e = &r.entries[0];
    let sent = proxy.data_bytes_forwarded();
    ensure(e.attempts == 2, || {
        format!("{} attempts, expected 2", e.attempts)
    })?;
    if resumes {
        ensure(sent < 2 * SIZE, || {
            format!("{sent} bytes sent: the retry did not resume")
        })?;
    } else {
        ensure(sent >= SIZE + 3 * MIB / 2, || {
            format!("{sent} bytes sent: expected a fresh upload")
        })?;
    }
    let rest = commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("REST "))
        .count();
    Ok(format!(
        "2 attempts, {:.1} MiB sent for 8, {rest} REST on the wire",
        sent as f64 / MIB as f64
    ))
}

/// The real-server table rows exist even where a server is not installed.
fn env_file_is_parsed_or_skipped_loudly() {
    if let Some(env) = servers_env() {
        for t in real_targets(env) {
            assert!(t.port > 0 && t.root.is_absolute(), "{t:?}");
        }
    } else {
        let _ = require_servers(
            "env_file_is_parsed_or_skipped_loudly",
            &["vsftpd", "pure-ftpd", "proftpd", "pyftpdlib"],
        );
    }
}

/// A server that answers a quiet pipelining probe in order but reorders
/// replies under load (`q-reorder`: SIZE answers late, behind the replies
/// to the commands sent after it). The probe says "in order"; the first
/// reply matched to the wrong command is caught as a desync, pipelining
/// turns off for the server by itself, and every file arrives whole.
async fn a_server_that_reorders_under_load_is_caught() {
    let Some(env) = require_servers(
        "a_server_that_reorders_under_load_is_caught",
        &["pyftpdlib-quirks"],
    ) else {
        return;
    };
    let _ = logs();
    let mut t = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    t.user = "q-reorder".into();
    t.name = "pyftpdlib `q-reorder`".into();
    async fn job(t: &Target, name: &str, files: u64, equal: bool) -> Outcome {
        let w = Work::new();
        let (rel, disk) = t.dir(name);
        let mut entries = Vec::new();
        let mut bodies = Vec::new();
        for i in 0..files {
            // Equal sizes: one file's SIZE reply would pass for another's.
            let len = if equal {
                5121
            } else {
                300 + (i as usize * 97) % 9000
            };
            let body = support::random_bytes(len, 7000 + i);
            entries.push(t.entry(&w.local(&format!("{name}/f{i:03}.bin"), &body), &rel));
            bodies.push(body);
        }
        let started = Instant::now();
        let r = w.run(name, entries, |_| {}).await;
        all_done(&r)?;
        for (i, body) in bodies.iter().enumerate() {
            same_bytes(&disk.join(format!("f{i:03}.bin")), body)?;
        }
        no_temp_files(&disk)?;
        let learned = std::fs::read_to_string(
            w.dir
                .path()
                .join(format!("daemon-{name}/ftpdrop-learned.json")),
        )
        .map_err(|e| format!("no learned facts: {e}"))?;
        ensure(learned.contains("\"pipelining\": false"), || {
            format!("pipelining still on: {learned}")
        })?;
        let desyncs: Vec<String> = log_text()
            .lines()
            .filter(|l| l.contains(&format!("job={name} ")) && l.contains("out of order"))
            .map(str::to_string)
            .collect();
        ensure(!desyncs.is_empty(), || {
            "no desync was seen: the probe or the pipelining never ran".into()
        })?;
        let retried = r.entries.iter().filter(|e| e.attempts > 1).count();
        Ok(format!(
            "{files} files in {:.1} s, desync caught ({} log lines), {retried} entries retried",
            started.elapsed().as_secs_f64(),
            desyncs.len()
        ))
    }
    let mut failures = Vec::new();
    for (name, files, equal) in [("reorder30", 30, true), ("reorder300", 300, false)] {
        failures.push(
            scenario(
                "Pipelining",
                &format!("replies reordered under load, {files} files → desync caught, pipelining off, all arrive"),
                &t.name,
                job(&t, name, files, equal),
            )
            .await,
        );
    }
    finish(failures);
}

/// Probes leave nothing behind: a `kill -9` at any moment of a first
/// contact (probes included) leaves no `.ftpdrop-*` name in the folder once
/// the next run has talked to the server. What a probe makes is recorded in
/// `ftpdrop-learned.json` before it is made, and the next run's first
/// session removes it.
async fn probes_leave_nothing_behind_after_kill_9() {
    let Some(env) = require_servers("probes_leave_nothing_behind_after_kill_9", &["vsftpd"]) else {
        return;
    };
    let t = Target::from_env(env, "VSFTPD", "vsftpd");
    // `entries`: a job to drop in the inbox; `None` runs what is there (a
    // job the killed run claimed resumes from checked/).
    let run = |state: &Path, entries: Option<&[Value]>| {
        let cfg = json!({
            "inbox": state.join("files"),
            "checked": state.join("checked"),
            "settle_ms": 0,
            "status": {"listen": "127.0.0.1:0"},
        });
        std::fs::create_dir_all(state.join("files")).unwrap();
        std::fs::create_dir_all(state.join("checked")).unwrap();
        std::fs::write(state.join("cfg.json"), cfg.to_string()).unwrap();
        if let Some(entries) = entries {
            std::fs::write(
                state.join("files/job.json"),
                Value::Array(entries.to_vec()).to_string(),
            )
            .unwrap();
        }
        std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
            .args(["once", "--config"])
            .arg(state.join("cfg.json"))
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(state.join("run.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap()
    };
    let log_tail = |state: &Path| {
        let text = std::fs::read_to_string(state.join("run.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    };
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".ftpdrop-probe"))
            .collect()
    };
    let outcome = async {
        let w = Work::new();
        let mut hits = 0;
        for (i, delay_ms) in [5u64, 15, 25, 35, 45, 60, 80, 100, 130, 170]
            .iter()
            .enumerate()
        {
            let (rel, disk) = t.dir(&format!("litter{i}"));
            let state = w.dir.path().join(format!("state{i}"));
            let entries: Vec<Value> = (0..6)
                .map(|k| {
                    let body = support::random_bytes(2000 + k, 40 + k as u64);
                    t.entry(&w.local(&format!("l{i}/f{k}.bin"), &body), &rel)
                })
                .collect();
            let mut child = run(&state, Some(&entries));
            std::thread::sleep(Duration::from_millis(*delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            // What the killed run noted before making it: the pipelining
            // probe at login makes its directories in the login folder,
            // where other tests' probes come and go meanwhile.
            let noted = noted_litter(&state);
            let made = |p: &String| t.root.join(p.trim_end_matches('/')).exists();
            if !leftovers(&disk).is_empty() || noted.iter().any(made) {
                hits += 1;
            }
            // The next run talks to the server, and cleans up.
            let mut again = run(&state, None);
            let status = tokio::task::spawn_blocking(move || again.wait())
                .await
                .unwrap()
                .unwrap();
            ensure(status.success(), || {
                format!("the second run ended {status}:\n{}", log_tail(&state))
            })?;
            let left = leftovers(&disk);
            ensure(left.is_empty(), || {
                format!("killed after {delay_ms} ms, then run again: {left:?} stayed in {rel}")
            })?;
            let stayed: Vec<&String> = noted.iter().filter(|p| made(p)).collect();
            ensure(stayed.is_empty(), || {
                format!("killed after {delay_ms} ms, then run again: {stayed:?} stayed")
            })?;
        }
        // A crash right after a probe made its directory, for certain: the
        // record is there and so is the directory.
        let (rel, disk) = t.dir("litter-seeded");
        let probe_dir = disk.join(".ftpdrop-probe-0123456789ab-a");
        std::fs::create_dir_all(&probe_dir).unwrap();
        // Owned as the server's user would have made them.
        {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(&t.root).unwrap();
            for d in [&disk, &probe_dir] {
                std::os::unix::fs::chown(d, Some(owner.uid()), Some(owner.gid())).unwrap();
            }
        }
        let state = w.dir.path().join("seeded");
        std::fs::create_dir_all(&state).unwrap();
        let key = format!("ftp://{}@{}:{}", t.user, t.host, t.port);
        std::fs::write(
            state.join("ftpdrop-learned.json"),
            json!({"servers": {}, "litter": {key: [
                format!("{rel}/.ftpdrop-probe-0123456789ab-a/"),
                format!("{rel}/.ftpdrop-probe-0123456789ab-b/"),
            ]}})
            .to_string(),
        )
        .unwrap();
        let body = b"one file".to_vec();
        let entry = t.entry(&w.local("seeded/one.bin", &body), &rel);
        let mut child = run(&state, Some(&[entry]));
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        ensure(status.success(), || {
            format!("the run ended {status}:\n{}", log_tail(&state))
        })?;
        let receipt = std::fs::read_to_string(state.join("checked/job.report.json"))
            .unwrap_or_else(|e| format!("no receipt: {e}"));
        same_bytes(&disk.join("one.bin"), &body).map_err(|e| {
            format!(
                "{e}\nreceipt: {receipt}\nlog:\n{}\nfolder: {:?}",
                log_tail(&state),
                std::fs::read_dir(&disk)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            )
        })?;
        let left = leftovers(&disk);
        ensure(left.is_empty(), || format!("{left:?} stayed"))?;
        let learned = std::fs::read_to_string(state.join("ftpdrop-learned.json")).unwrap();
        ensure(!learned.contains("litter"), || {
            format!("the record stayed: {learned}")
        })?;
        Ok(format!(
            "10 kills at 5-170 ms ({hits} left probe names, all removed by the next run); a seeded leftover removed"
        ))
    };
    let failure = scenario(
        "Probes",
        "kill -9 during a first contact → no .ftpdrop-probe name left once the next run talked to the server",
        &t.name,
        outcome,
    )
    .await;
    finish(vec![failure]);
}

/// The paths a run noted in its learned facts before a probe made them.
fn noted_litter(state: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(state.join("ftpdrop-learned.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["litter"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

/// A fault in replies an entry was owed (its rename, sent as the session
/// went back to the pool) is that entry's: the next entry, which only read
/// them on its way to its own upload, is told so and starts again on a
/// clean session. Before, the next entry reported the other file's RNFR as
/// its own failure.
async fn a_fault_in_owed_replies_belongs_to_their_entry() {
    let Some(env) = require_servers(
        "a_fault_in_owed_replies_belongs_to_their_entry",
        &["vsftpd"],
    ) else {
        return;
    };
    let _ = logs();
    let t = Target::from_env(env, "VSFTPD", "vsftpd");
    let outcome = async {
        let w = Work::new();
        let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
        let proxy = FaultProxy::start(upstream).await;
        let mut via = t.clone();
        via.port = proxy.addr.port();
        let one_session = |c: &mut Config| {
            c.max_connections = 1;
            c.max_connections_per_server = 1;
            c.retry.initial_backoff_ms = 100;
        };
        let job = |name: &str, n: u64| {
            let (rel, disk) = t.dir(name);
            let mut entries = Vec::new();
            let mut bodies = Vec::new();
            for i in 0..n {
                let body = support::random_bytes(1000 + i as usize, 300 + i);
                entries.push(via.entry(&w.local(&format!("{name}/f{i}.bin"), &body), &rel));
                bodies.push(body);
            }
            (entries, bodies, disk)
        };
        // A first job learns that the server keeps pipelined commands in order.
        let (entries, _, _) = job("owed-warm", 6);
        let r = w.run_in("owed", "warm", entries, one_session).await;
        all_done(&r)?;
        proxy.cut_control_on_command("RNTO", 2);
        let (entries, bodies, disk) = job("owed-cut", 10);
        let r = w.run_in("owed", "owedcut", entries, one_session).await;
        all_done(&r)?;
        for (i, body) in bodies.iter().enumerate() {
            same_bytes(&disk.join(format!("f{i}.bin")), body)?;
        }
        no_temp_files(&disk)?;
        let cuts = proxy.control_cuts_fired();
        let retries: Vec<String> = log_text()
            .lines()
            .filter(|l| l.contains("job=owedcut ") && l.contains("will retry"))
            .map(str::to_string)
            .collect();
        let error_of = |l: &str| l.split(" error=").nth(1).unwrap_or("").to_string();
        let inherited = retries
            .iter()
            .filter(|l| error_of(l).starts_with("the session broke on an earlier entry's replies"))
            .count();
        let owners = retries
            .iter()
            .filter(|l| {
                ["RNFR ", "RNTO ", "SIZE "]
                    .iter()
                    .any(|v| error_of(l).starts_with(v))
            })
            .count();
        ensure(cuts >= 1, || "no RNTO was cut".into())?;
        ensure(inherited >= 1, || {
            format!("no entry was told the fault was another's: {retries:#?}")
        })?;
        ensure(owners <= cuts, || {
            format!("{owners} entries blamed for {cuts} cut renames: {retries:#?}")
        })?;
        Ok(format!(
            "{cuts} renames cut: {owners} owners retried, {inherited} readers started again clean"
        ))
    };
    let failure = scenario(
        "Faults",
        "a fault in owed replies is reported against the entry that sent the commands",
        &t.name,
        outcome,
    )
    .await;
    finish(vec![failure]);
}

/// A broken link never piles sessions up on the partner's server. vsftpd
/// (its upload lock on, as Debian ships it) behind a link that resets 10 %
/// of connections and silences 5 %, control and data alike, somewhere in
/// their first commands or bytes; ftpdrop with its defaults but for short
/// timeouts and backoff. Every job ends done, byte for byte, with no temp
/// file left; the server never holds more than twice the per-server limit
/// of this client's sessions (given up ones included), and never says it
/// is full. Before, each attempt after a silenced upload queued behind the
/// dead one's lock, timed out, and left one more session at the server.
async fn a_broken_link_never_piles_sessions_on_the_server() {
    let Some(env) = require_servers(
        "a_broken_link_never_piles_sessions_on_the_server",
        &["vsftpd"],
    ) else {
        return;
    };
    let t = Target::from_env(env, "VSFTPD", "vsftpd");
    let failure = scenario(
        "Faults",
        "a link that resets and goes silent: every job done, sessions at the server never piled up",
        &t.name,
        broken_link(&t, 40, 10, Duration::from_secs(15), None),
    )
    .await;
    finish(vec![failure]);
}

/// The broken-link soak of the benchmark (`bench/soak.sh`): `SOAK_JOBS`
/// jobs (200) of 1-3 files of 4 KiB to 16 MiB; the curve of the sessions
/// the server holds and of the daemon's open files goes to `SOAK_CURVE`.
// Ignored unless asked for (`--ignored`): a benchmark: bench/soak.sh.
async fn soak_broken_link() {
    let Some(env) = require_servers("soak_broken_link", &["vsftpd"]) else {
        return;
    };
    let t = Target::from_env(env, "VSFTPD", "vsftpd");
    let jobs = std::env::var("SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let curve = std::env::var_os("SOAK_CURVE").map(PathBuf::from);
    let outcome = broken_link(&t, jobs, 13, Duration::from_secs(30), curve).await;
    t.cleanup();
    match outcome {
        Ok(summary) => println!("soak: {summary}"),
        Err(e) => panic!("soak failed: {e}"),
    }
}

/// Sends `jobs` jobs through a link that resets and silences connections
/// (see [`a_broken_link_never_piles_sessions_on_the_server`]); file sizes
/// are 4 KiB shifted by up to `shifts - 1`; a silenced session stays open
/// at the server for `silence`. `curve`: a CSV of the time, the sessions
/// the server holds and the open files, every 100 ms.
async fn broken_link(
    t: &Target,
    jobs: usize,
    shifts: usize,
    silence: Duration,
    curve: Option<PathBuf>,
) -> Outcome {
    let _ = logs();
    let w = Work::new();
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    proxy.flaky(10, 5, silence, 0x5eed_1234);
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let base = w.dir.path().join("daemon-flaky");
    let mut cfg = Config {
        inbox: base.join("files"),
        checked: base.join("checked"),
        settle_ms: 0,
        connect_timeout_secs: 3,
        command_timeout_secs: 3,
        data_timeout_secs: 3,
        ..Config::default()
    };
    cfg.retry.initial_backoff_ms = 200;
    cfg.retry.max_backoff_ms = 2000;
    let per_server = cfg.max_connections_per_server;
    std::fs::create_dir_all(&cfg.inbox).unwrap();
    std::fs::create_dir_all(&cfg.checked).unwrap();
    let mut files = Vec::new();
    for j in 0..jobs {
        let (rel, disk) = t.dir(&format!("flaky/j{j:03}"));
        let n = 1 + j % 3;
        let mut entries = Vec::new();
        for k in 0..n {
            let size = 4096usize << ((j * 3 + k) % shifts);
            let body = support::random_bytes(size, (j * 10 + k) as u64);
            entries.push(via.entry(&w.local(&format!("flaky/j{j}/f{k}.bin"), &body), &rel));
            files.push((disk.join(format!("f{k}.bin")), body));
        }
        std::fs::write(
            cfg.inbox.join(format!("j{j:03}.json")),
            Value::Array(entries).to_string(),
        )
        .unwrap();
    }
    let open_files = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let sampler = curve.map(|path| {
        let faults = proxy.faults();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut csv = String::from("seconds,server_sessions,open_files\n");
            loop {
                let _ = writeln!(
                    csv,
                    "{:.1},{},{}",
                    started.elapsed().as_secs_f64(),
                    faults.control_live(),
                    open_files()
                );
                let _ = std::fs::write(&path, &csv);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    // Every 50 ms, every final name that exists must hold the whole file.
    let short = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let want: Vec<(PathBuf, u64)> = files
            .iter()
            .map(|(p, b)| (p.clone(), b.len() as u64))
            .collect();
        let short = short.clone();
        tokio::spawn(async move {
            loop {
                for (p, len) in &want {
                    if let Ok(m) = std::fs::metadata(p) {
                        if m.len() != *len {
                            short.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let files_before = open_files();
    let started = Instant::now();
    let checked = cfg.checked.clone();
    let ran = tokio::time::timeout(Duration::from_secs(3600), ftpdrop::once(cfg)).await;
    if let Some(s) = sampler {
        s.abort();
    }
    watcher.abort();
    let short = short.load(std::sync::atomic::Ordering::SeqCst);
    ensure(short == 0, || {
        format!("a final name was seen short {short} times")
    })?;
    let states = ran
        .map_err(|_| "the jobs did not finish within an hour".to_string())?
        .map_err(|e| format!("{e:#}"))?;
    let took = started.elapsed();
    let files_after = open_files();
    ensure(states.len() == jobs, || {
        format!("{} jobs ended: {states:?}", states.len())
    })?;
    for j in 0..jobs {
        let r = Receipt::load(&checked.join(format!("j{j:03}.report.json")))
            .map_err(|e| format!("j{j:03}: {e:#}"))?;
        all_done(&r)?;
    }
    for (path, body) in &files {
        same_bytes(path, body)?;
    }
    no_temp_files(&t.root.join(&t.base).join("flaky"))?;
    let (resets, silences) = proxy.flaky_fired();
    let data_struck = proxy.data_faults_fired();
    let most = proxy.control_live_max();
    ensure(resets + silences >= 5, || {
        format!("the link broke only {resets} + {silences} times")
    })?;
    ensure(most <= 2 * per_server, || {
        format!("the server held {most} of this client's sessions at once (limit {per_server})")
    })?;
    let port = format!(":{}", via.port);
    let full: Vec<String> = log_text()
        .lines()
        .filter(|l| l.contains(&port) && (l.contains("server is full") || l.contains(" 421 ")))
        .map(str::to_string)
        .collect();
    ensure(full.is_empty(), || {
        format!("the server said it was full: {full:#?}")
    })?;
    Ok(format!(
        "{jobs} jobs, {} files done in {:.1} s through {resets} resets and {silences} silences \
         ({data_struck} of them mid-upload); \
         at most {most} sessions at the server (limit {per_server}); open files {files_before} -> {files_after}; \
         no final name seen short (polled every 50 ms)",
        files.len(),
        took.as_secs_f64()
    ))
}

/// The servers partners run (issue 22): see `partners.rs`.
async fn partner_servers() {
    let Some(env) = require_servers("partner_servers", &["pyftpdlib-quirks"]) else {
        return;
    };
    let _ = logs();
    let mut t = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    t.user = "q-cp1251".into();
    t.name = "pyftpdlib `q-cp1251`".into();
    let failures = vec![
        scenario(
            "Partner servers",
            "cp1251 only: Cyrillic names and я (0xFF) intact, unwritable name refused",
            &t.name,
            partners::cp1251_names(&t),
        )
        .await,
    ];
    let mut failures = failures;
    let mut iis = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    iis.user = "q-iis-host".into();
    iis.name = "pyftpdlib `q-iis-host`".into();
    failures.push(
        scenario(
            "Partner servers",
            "Windows server (IIS): HOST, 125, 550 on rename, partial deleted, case collisions",
            &iis.name,
            partners::windows_server(&iis),
        )
        .await,
    );
    if let Some(env) = require_servers("partner_servers", &["pyquirks-tls"]) {
        let ca = env.get("FTPDROP_TLS_CA").cloned();
        let mut s = Target::from_env(env, "PYQUIRKSTLS", "pyftpdlib-quirks-tls")
            .tls("explicit", ca.as_deref());
        s.user = "q-protp".into();
        s.name = "pyftpdlib `q-protp` (TLS, strict)".into();
        failures.push(
            scenario(
                "Partner servers",
                "FileZilla-strict TLS login (nothing behind AUTH TLS, PBSZ, PROT, USER, PASS); PROT P required",
                &s.name,
                partners::strict_tls_login(&s),
            )
            .await,
        );
    }
    let mut o = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    o.user = "q-oddreplies".into();
    o.name = "pyftpdlib `q-oddreplies`".into();
    failures.push(
        scenario(
            "Partner servers",
            "multi-line replies indented oddly, with an empty line",
            &o.name,
            partners::odd_replies(&o),
        )
        .await,
    );
    let mut d = Target::from_env(env, "PYQUIRKS", "pyftpdlib-quirks");
    d.user = "q-dropbox".into();
    d.name = "pyftpdlib `q-dropbox`".into();
    if let Some(env) = require_servers("partner_servers", &["vsftpd-tls"]) {
        let v = Target::from_env(env, "VSFTPDTLS", "vsftpd-tls");
        let log = PathBuf::from(&env["FTPDROP_VSFTPDTLS_LOG"]).join("vsftpd.log");
        let cert = PathBuf::from(&env["FTPDROP_TLS_CA"]).with_file_name("server.pem");
        let ca = PathBuf::from(&env["FTPDROP_TLS_CA"]);
        failures.push(
            scenario(
                "Partner servers",
                "TLS 1.3 hello breaks the server → TLS 1.2 learned",
                &v.name,
                partners::tls13_breaks(&v, &ca),
            )
            .await,
        );
        failures.push(
            scenario(
                "Partner servers",
                "TLS: version cap 1.2, certificate and key pins, a wrong pin",
                &v.name,
                partners::tls_nudges(&v, &log, &cert),
            )
            .await,
        );
        if failures.iter().all(Option::is_none) {
            v.cleanup();
        }
    }
    if let Some(env) = require_servers("partner_servers", &["vsftpd"]) {
        let v = Target::from_env(env, "VSFTPD", "vsftpd");
        let log = PathBuf::from(&env["FTPDROP_VSFTPD_LOG"]).join("vsftpd.log");
        failures.push(
            scenario(
                "Partner servers",
                "SOCKS5 (microsocks) and HTTP CONNECT (tinyproxy) proxies, control and data",
                &v.name,
                partners::proxies(&v, &log),
            )
            .await,
        );
        if failures.iter().all(Option::is_none) {
            v.cleanup();
        }
    }
    if let Some(env) = require_servers("partner_servers", &["vsftpd-active"]) {
        let a = Target::from_env(env, "VSFTPDACTIVE", "vsftpd-active");
        let log = PathBuf::from(&env["FTPDROP_VSFTPDACTIVE_LOG"]).join("vsftpd.log");
        failures.push(
            scenario(
                "Partner servers",
                "active mode (vsftpd pasv_enable=NO): a port range, auto fallback learned",
                &a.name,
                partners::active_mode(&a, &log),
            )
            .await,
        );
        if failures.iter().all(Option::is_none) {
            a.cleanup();
        }
    }
    if let Some(env) = require_servers("partner_servers", &["vsftpd-mtls"]) {
        let m = Target::from_env(env, "VSFTPDMTLS", "vsftpd-mtls");
        let path = |k: &str| PathBuf::from(&env[k]);
        failures.push(
            scenario(
                "Partner servers",
                "TLS: client certificate (mutual TLS)",
                &m.name,
                partners::client_certificate(
                    &m,
                    &path("FTPDROP_TLS_CA"),
                    &path("FTPDROP_TLS_CLIENT_CERT"),
                    &path("FTPDROP_TLS_CLIENT_KEY"),
                ),
            )
            .await,
        );
        if failures.iter().all(Option::is_none) {
            m.cleanup();
        }
    }
    failures.push(
        scenario(
            "Partner servers",
            "drop box (STOR only): publish direct, verify none",
            &d.name,
            partners::drop_box(&d),
        )
        .await,
    );
    if failures.iter().all(Option::is_none) {
        t.cleanup();
    }
    finish(failures);
}

async fn a_done_marker_is_sent_once_after_kill_9() {
    let Some(t) = real("vsftpd", "VSFTPD") else {
        return;
    };
    let out = scenario(
        "Delivery",
        "done marker exactly once, after every file, across kill -9",
        &t.name,
        delivery::marker_kill9(&t),
    )
    .await;
    finish(vec![out]);
}

// ------------------------------------------------------------- harness ---

/// The tests, run by libtest-mimic rather than libtest: without the servers
/// (and without `CI` or `FTPDROP_INTEROP_REQUIRED=1`), the tests that need
/// them are reported as ignored, with one line that says how to run them,
/// instead of passing without having run.
pub(crate) fn main() {
    use libtest_mimic::{Arguments, Trial};
    let args = Arguments::from_args();
    let required = std::env::var_os("CI").is_some()
        || std::env::var("FTPDROP_INTEROP_REQUIRED").as_deref() == Ok("1");
    let skip = servers_env().is_none() && !required;
    fn on(threads: usize, test: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(test)
    }
    macro_rules! trial {
        ($name:ident, $threads:expr) => {
            Trial::test(stringify!($name), || {
                on($threads, $name());
                Ok(())
            })
        };
    }
    let trials = vec![
        trial!(matrix_vsftpd, 2).with_ignored_flag(skip),
        trial!(matrix_pureftpd, 2).with_ignored_flag(skip),
        trial!(matrix_proftpd, 2).with_ignored_flag(skip),
        trial!(matrix_pyftpdlib, 2).with_ignored_flag(skip),
        trial!(matrix_libunftp, 2),
        trial!(segmented_upload_where_the_probe_allows, 4).with_ignored_flag(skip),
        trial!(tls, 2).with_ignored_flag(skip),
        trial!(proftpd_mod_tls, 2).with_ignored_flag(skip),
        trial!(connection_limit_is_back_pressure, 2).with_ignored_flag(skip),
        trial!(two_instances_share_a_server_that_allows_two, 2).with_ignored_flag(skip),
        trial!(quirks_are_detected_not_configured, 2).with_ignored_flag(skip),
        Trial::test("env_file_is_parsed_or_skipped_loudly", || {
            env_file_is_parsed_or_skipped_loudly();
            Ok(())
        })
        .with_ignored_flag(skip),
        trial!(a_server_that_reorders_under_load_is_caught, 2).with_ignored_flag(skip),
        trial!(probes_leave_nothing_behind_after_kill_9, 2).with_ignored_flag(skip),
        trial!(a_fault_in_owed_replies_belongs_to_their_entry, 2).with_ignored_flag(skip),
        trial!(a_broken_link_never_piles_sessions_on_the_server, 2).with_ignored_flag(skip),
        trial!(a_done_marker_is_sent_once_after_kill_9, 2).with_ignored_flag(skip),
        trial!(partner_servers, 2).with_ignored_flag(skip),
        trial!(soak_broken_link, 2).with_ignored_flag(true),
    ];
    if skip {
        // Less the soak benchmark, ignored unless asked for.
        let ignored = trials.iter().filter(|t| t.has_ignored_flag()).count() - 1;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED (shown as ignored): {} interop tests, as {} was not found. \
             Start the servers with `sudo bash scripts/interop/servers.sh install && sudo \
             FTPDROP_PUREFTPD_CHEAP_HASH=1 bash scripts/interop/servers.sh start`",
            ignored,
            env_path().display()
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
