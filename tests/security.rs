//! Trust boundaries (issue 9), end to end against an in-process libunftp
//! server: a job never borrows another job's login, local files are
//! confined to `local_roots`, hosts to `allowed_hosts`, and claimed jobs,
//! receipts and journals are readable by the daemon's user only.
//! Assertions are about what is on the server's disk and on the local one.

mod support;

use ftpdrop::report::{EntryState, JobState, Receipt};
use ftpdrop::Config;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::daemon::{entry, server_json, Daemon};
use support::ftpserver::FtpServer;

#[cfg(unix)]
fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs one job through `ftpdrop::once` with `cfg`; returns its receipt.
async fn once_with(cfg: Config, name: &str, job: &Value) -> Receipt {
    std::fs::write(
        cfg.inbox.join(format!("{name}.json")),
        serde_json::to_vec(job).unwrap(),
    )
    .unwrap();
    // Old enough to need no settle wait.
    std::thread::sleep(Duration::from_millis(150));
    let checked = cfg.checked.clone();
    let states = ftpdrop::once(cfg).await.unwrap();
    assert!(states.iter().any(|(n, _)| n == name), "{states:?}");
    Receipt::load(&checked.join(format!("{name}.report.json"))).unwrap()
}

fn config_in(base: &Path) -> Config {
    let mut cfg = support::daemon_config(base);
    cfg.settle_ms = 0;
    cfg
}

/// A job of `n` entries under `dir/`, each its own local file.
fn job_of(d: &Daemon, srv: &FtpServer, dir: &str, n: usize, password: &str) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            let local = d.local(&format!("{dir}/{dir}-{i}.txt"), dir.as_bytes());
            let mut e = entry(srv, &local, dir);
            e["server"]["password"] = json!(password);
            e
        })
        .collect();
    Value::Array(entries)
}

fn assert_nothing_of(srv: &FtpServer, dir: &str) {
    let leaked: Vec<String> = srv
        .files()
        .into_iter()
        .filter(|f| f.starts_with(dir))
        .collect();
    assert!(
        leaked.is_empty() && !srv.path(dir).exists(),
        "the wrong-password job reached the server's disk: {leaked:?}"
    );
}

/// Issue 9, case 1: a wrong-password job arrived while a session that a
/// good job had logged in sat idle in the pool, and that session published
/// its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_never_borrows_an_idle_session() {
    let srv = FtpServer::start().await;
    let (dir, mut cfg) = Daemon::prepare();
    // Room for the refused login beside the good job's idle sessions: at
    // the limit, a login closes an idle session of other credentials so
    // that the server never sees more than the limit (the shared seats),
    // and the count below would then measure that, not the refusal.
    cfg.max_connections_per_server = 8;
    let d = Daemon::start(dir, cfg);
    let good = job_of(&d, &srv, "good", 3, &srv.password);
    d.drop_job("good", &good);
    assert_eq!(d.receipt("good").await.state, JobState::Done);

    // The good session is idle in the pool now (idle_session_secs is 60).
    let bad = job_of(&d, &srv, "bad", 3, "Wr0ng-Passw0rd");
    d.drop_job("bad", &bad);
    let r = d.receipt("bad").await;
    assert_eq!(r.state, JobState::Failed, "{r:#?}");
    for e in &r.entries {
        assert_eq!(e.state, EntryState::Failed);
        assert!(e.error.as_deref().unwrap_or("").contains("530"), "{e:#?}");
    }
    assert_nothing_of(&srv, "bad");

    // The refusal touched neither the good session nor the good credentials.
    // One entry: two could rightly log in a second session beside the idle
    // one (cheap logins go in parallel), which made the count a matter of
    // timing on a loaded machine.
    let logins = srv.count_logins();
    let again = job_of(&d, &srv, "again", 1, &srv.password);
    d.drop_job("again", &again);
    assert_eq!(d.receipt("again").await.state, JobState::Done);
    assert_eq!(
        srv.count_logins(),
        logins,
        "the good job reuses its idle session"
    );
    srv.assert_no_temp_files();
    d.stop().await;
}

/// Issue 9, case 2: a good job and a wrong-password job for the same login,
/// dropped together, so that sessions come and go while both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_dropped_together_with_a_good_job() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let d = Daemon::start(dir, cfg);
    for round in 0..4 {
        let (good, bad) = (format!("good{round}"), format!("bad{round}"));
        let g = job_of(&d, &srv, &good, 6, &srv.password);
        let b = job_of(&d, &srv, &bad, 6, "Wr0ng-Passw0rd");
        // Interleaved: each job's entries ask for sessions while the other's are out.
        if round % 2 == 0 {
            d.drop_job(&good, &g);
            d.drop_job(&bad, &b);
        } else {
            d.drop_job(&bad, &b);
            d.drop_job(&good, &g);
        }
        let rg = d.receipt(&good).await;
        let rb = d.receipt(&bad).await;
        assert_eq!(rg.state, JobState::Done, "{rg:#?}");
        assert_eq!(rb.state, JobState::Failed, "{rb:#?}");
        assert_nothing_of(&srv, &bad);
        for i in 0..6 {
            assert_eq!(
                std::fs::read(srv.path(&format!("{good}/{good}-{i}.txt"))).unwrap(),
                good.as_bytes()
            );
        }
    }
    srv.assert_no_temp_files();
    d.stop().await;
}

/// `local_roots`: only files that resolve, after symlinks and `..`, inside
/// a root are read; the others fail permanently, naming the field, and
/// nothing of theirs reaches the server.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_roots_confine_what_a_job_can_read() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("outgoing");
    support::write_file(root.join("ok.txt"), b"inside");
    support::write_file(dir.path().join("secret.txt"), b"outside");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    let mut cfg = config_in(&dir.path().join("d"));
    cfg.local_roots = vec![root.clone()];
    let paths: Vec<std::path::PathBuf> = vec![
        root.join("ok.txt"),
        dir.path().join("secret.txt"),
        root.join("link.txt"),
        root.join("../secret.txt"),
        root.join("up/secret.txt"),
        std::path::PathBuf::from("/etc/passwd"),
    ];
    let job: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| entry(&srv, p, &format!("r{i}")))
        .collect();
    let r = once_with(cfg, "roots", &Value::Array(job)).await;
    assert_eq!(r.state, JobState::Partial, "{r:#?}");
    assert_eq!(r.entries[0].state, EntryState::Done);
    for e in &r.entries[1..] {
        assert_eq!(e.state, EntryState::Failed, "{e:#?}");
        assert_eq!(e.attempts, 1, "a permanent fault: {e:#?}");
        let err = e.error.as_deref().unwrap();
        assert!(
            err.starts_with(&format!(
                "entries[{}].file.local_path: outside local_roots: ",
                e.index
            )),
            "{err}"
        );
    }
    assert_eq!(srv.files(), vec!["r0/ok.txt".to_string()]);
    assert_eq!(std::fs::read(srv.path("r0/ok.txt")).unwrap(), b"inside");
}

/// `allowed_hosts` refuses a job naming another host before anything is
/// sent; a name admitted only by a network must resolve into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_confine_where_files_go() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f.txt");
    support::write_file(&local, b"payload");
    let with = |host: &str, path: &str| {
        let mut e = entry(&srv, &local, path);
        e["server"]["host"] = json!(host);
        json!([e])
    };

    let mut cfg = config_in(&dir.path().join("a"));
    cfg.allowed_hosts = vec!["10.0.0.0/8".into(), "*.example.net".into()];
    let r = once_with(cfg.clone(), "ip", &with("127.0.0.1", "ip")).await;
    assert_eq!(r.state, JobState::Invalid);
    assert_eq!(
        r.problems,
        vec!["entries[0].server.host: 127.0.0.1 is not in allowed_hosts"]
    );
    let r = once_with(cfg.clone(), "name", &with("localhost", "name")).await;
    assert_eq!(r.state, JobState::Failed, "{r:#?}");
    let err = r.entries[0].error.clone().unwrap();
    assert!(
        err.contains("localhost resolves to") && err.contains("not in allowed_hosts"),
        "{err}"
    );
    assert_eq!(r.entries[0].attempts, 1);
    assert!(srv.files().is_empty(), "{:?}", srv.files());
    assert_eq!(
        srv.count_connections(),
        0,
        "nothing connected to a refused host"
    );

    cfg.allowed_hosts = vec!["127.0.0.0/8".into()];
    let r = once_with(cfg.clone(), "lo", &with("localhost", "lo")).await;
    assert_eq!(r.state, JobState::Done, "{r:#?}");
    cfg.allowed_hosts = vec!["127.0.0.1".into()];
    let r = once_with(cfg, "exact", &with("127.0.0.1", "exact")).await;
    assert_eq!(r.state, JobState::Done, "{r:#?}");
    assert_eq!(std::fs::read(srv.path("exact/f.txt")).unwrap(), b"payload");
    assert_eq!(std::fs::read(srv.path("lo/f.txt")).unwrap(), b"payload");
}

/// `require_named_servers`: inline hosts and credentials are refused; a
/// configured server works, with its password from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_named_servers_refuses_inline_credentials() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f.txt");
    support::write_file(&local, b"named");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", srv.password)).unwrap();
    let mut cfg = config_in(&dir.path().join("d"));
    cfg.require_named_servers = true;
    cfg.servers.insert(
        "partner".into(),
        serde_json::from_value(json!({
            "host": "127.0.0.1", "port": srv.addr.port(), "login": srv.user, "password_file": pw
        }))
        .unwrap(),
    );
    let r = once_with(
        cfg.clone(),
        "inline",
        &json!([entry(&srv, &local, "inline")]),
    )
    .await;
    assert_eq!(r.state, JobState::Invalid);
    assert!(
        r.problems[0].starts_with("entries[0].server: inline servers"),
        "{:?}",
        r.problems
    );
    let job = json!([{"server": "partner", "file": {"local_path": local, "server_path": "named"}}]);
    let r = once_with(cfg, "named", &job).await;
    assert_eq!(r.state, JobState::Done, "{r:#?}");
    assert_eq!(srv.files(), vec!["named/f.txt".to_string()]);
}

/// Claimed jobs, receipts and journals are owner-only from the start; the
/// claimed job keeps its password while it runs (a restart needs it) and
/// loses it once the job is final.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_owner_only_and_leave_ended_jobs() {
    let srv = FtpServer::start().await;
    let (dir, mut cfg) = Daemon::prepare();
    // A server that is down: the job stays running, retrying.
    cfg.retry.initial_backoff_ms = 60_000;
    cfg.retry.max_backoff_ms = 60_000;
    let d = Daemon::start(dir, cfg);
    let local = d.local("f.txt", b"secret payload");
    let mut down = entry(&srv, &local, "down");
    down["server"]["port"] = json!(support::free_local_addr().port().to_string());
    down["server"]["password"] = json!("Down-Passw0rd");
    d.drop_job("waiting", &json!([down]));
    d.drop_job("good", &json!([entry(&srv, &local, "good")]));
    let r = d.receipt("good").await;
    assert_eq!(r.state, JobState::Done);

    let claimed = d.checked.join("good.json");
    // Redacted right after the final receipt is on disk (in that order: a
    // crash between the two must still find the password to finish the job).
    assert!(
        support::wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&claimed).is_ok_and(|t| t.contains(ftpdrop::job::REDACTED))
        })
        .await
    );
    let text = std::fs::read_to_string(&claimed).unwrap();
    assert!(!text.contains(&srv.password), "{text}");
    assert!(text.contains(ftpdrop::job::REDACTED), "{text}");
    assert_eq!(mode_of(&claimed), 0o600);
    assert_eq!(mode_of(&d.checked.join("good.report.json")), 0o600);

    let waiting = d.checked.join("waiting.json");
    assert!(
        support::wait_until(Duration::from_secs(20), || d
            .checked
            .join("waiting.journal")
            .exists())
        .await
    );
    assert_eq!(mode_of(&waiting), 0o600);
    assert_eq!(mode_of(&d.checked.join("waiting.journal")), 0o600);
    assert_eq!(mode_of(&d.checked.join("waiting.report.json")), 0o600);
    assert!(
        std::fs::read_to_string(&waiting)
            .unwrap()
            .contains("Down-Passw0rd"),
        "a running job keeps its password for crash recovery"
    );
    for f in ["waiting.report.json", "waiting.journal", "good.report.json"] {
        let t = std::fs::read_to_string(d.checked.join(f)).unwrap();
        assert!(
            !t.contains("Down-Passw0rd") && !t.contains(&srv.password),
            "{f}: {t}"
        );
    }
    d.stop().await;
}

/// `retention_days` removes ended jobs that old, and nothing else.
#[test]
fn retention_removes_only_old_ended_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path();
    let days_ago = |d: u64| {
        humantime::format_rfc3339_millis(
            std::time::SystemTime::now() - Duration::from_secs(d * 86_400),
        )
        .to_string()
    };
    let job = |name: &str, state: &str, finished: Option<String>| {
        std::fs::write(checked.join(format!("{name}.json")), "[]").unwrap();
        let r = json!({"job": name, "job_file": name, "state": state, "claimed_at": days_ago(30),
                       "updated_at": days_ago(30), "finished_at": finished, "entries": []});
        std::fs::write(checked.join(format!("{name}.report.json")), r.to_string()).unwrap();
    };
    job("old-done", "done", Some(days_ago(10)));
    job("old-failed", "failed", Some(days_ago(8)));
    job("new-done", "done", Some(days_ago(1)));
    job("old-running", "running", None);
    std::fs::write(checked.join("old-done.journal"), "").unwrap();

    assert_eq!(
        ftpdrop::run::housekeeping::sweep(checked, 0),
        0,
        "0 keeps forever"
    );
    assert_eq!(ftpdrop::run::housekeeping::sweep(checked, 7), 2);
    let mut left: Vec<String> = std::fs::read_dir(checked)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "new-done.json",
            "new-done.report.json",
            "old-running.json",
            "old-running.report.json"
        ]
    );
}

/// `"tls": "explicit"` against a server without AUTH TLS says what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tls_without_auth_tls_says_what_to_change() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f.txt");
    support::write_file(&local, b"x");
    let mut e = entry(&srv, &local, "tls");
    e["server"]["tls"] = json!("explicit");
    let r = once_with(config_in(&dir.path().join("d")), "tls", &json!([e])).await;
    assert_eq!(r.state, JobState::Failed, "{r:#?}");
    let err = r.entries[0].error.clone().unwrap();
    assert!(err.contains(r#""tls": "none""#), "{err}");
    assert!(srv.files().is_empty());
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ftpdrop")
}

fn run_bin(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// The command line: a bad `--log-level` is an error, logs to a file carry
/// no colour codes, `check-config` prints JSON without secrets and accepts
/// the shipped example, config errors name the path, `validate` explains
/// URL hosts and applies `local_roots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_errors_are_clear() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();

    let out = run_bin(&["once", "--log-level", "verbose"], base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"verbose\" is not a level"), "{stderr}");

    let local = base.join("data/ok.txt");
    support::write_file(&local, b"ok");
    support::write_file(
        base.join("files/j.json"),
        serde_json::to_vec(&json!([entry(&srv, &local, "cli")])).unwrap(),
    );
    std::thread::sleep(Duration::from_millis(400));
    let out = run_bin(&["once"], base);
    assert!(out.status.success());
    assert!(
        !out.stderr.contains(&0x1b),
        "ANSI escapes in a log file: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("job started"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json");
    let out = run_bin(&["check-config", "--config", example], base);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["servers"]["backup"]["login"], "uploader");

    let cfg = base.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"servers": {"b": {"host": "h", "login": "u", "password": "Inl1ne-Secret"}}}"#,
    )
    .unwrap();
    let out = run_bin(&["check-config", "--config", cfg.to_str().unwrap()], base);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Inl1ne-Secret"), "{stdout}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["servers"]["b"]["password"], "***");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local_roots is empty"), "{stderr}");

    std::fs::write(&cfg, r#"{"retry": {"max_attempts": "8"}}"#).unwrap();
    let out = run_bin(&["check-config", "--config", cfg.to_str().unwrap()], base);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"retry.max_attempts: invalid type: string "8", expected an integer"#),
        "{stderr}"
    );

    let job = base.join("url.json");
    std::fs::write(
        &job,
        serde_json::to_vec(
            &json!([{"server": {"host": "ftp://10.0.0.5:2121", "login": "u"},
        "file": {"local_path": local, "server_path": "x"}}]),
        )
        .unwrap(),
    )
    .unwrap();
    let out = run_bin(&["validate", job.to_str().unwrap()], base);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"entries[0].server.host: "ftp://10.0.0.5:2121" is a URL"#),
        "{stdout}"
    );

    let roots = base.join("roots.json");
    std::fs::write(
        &roots,
        serde_json::to_vec(&json!({"local_roots": [base.join("elsewhere")]})).unwrap(),
    )
    .unwrap();
    let job = base.join("outside.json");
    std::fs::write(
        &job,
        serde_json::to_vec(&json!([{"server": server_json(&srv),
        "file": {"local_path": local, "server_path": "x"}}]))
        .unwrap(),
    )
    .unwrap();
    let out = run_bin(
        &[
            "validate",
            "--config",
            roots.to_str().unwrap(),
            job.to_str().unwrap(),
        ],
        base,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("entries[0].file.local_path: outside local_roots"),
        "{stdout}"
    );
}
