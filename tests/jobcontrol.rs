//! An operator's control over submitted jobs (issue 25): `ftpdrop cancel`
//! and `ftpdrop retry` (the real binary, a process of its own beside the
//! daemon), `DELETE /api/jobs/{job}` and `POST /api/jobs/{job}/retry`, and a
//! claimed file removed by hand. Uploads go to a real FTP server (libunftp)
//! whose disk is checked afterwards.

mod support;

use ftpdrop::report::EntryState;
use ftpdrop::JobState;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::daemon::{entry, Daemon};
use support::ftpserver::FtpServer;

/// A config file naming the daemon's folders, for the CLI.
fn config_file(d: &Daemon) -> std::path::PathBuf {
    let path = d.dir.path().join("cli-config.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"inbox": d.inbox, "checked": d.checked})).unwrap(),
    )
    .unwrap();
    path
}

/// Runs `ftpdrop ARGS` to its end: exit code and stdout.
async fn cli(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "ftpdrop {args:?}: {:?}\n{stdout}{stderr}",
        out.status.code()
    );
    (out.status.code().unwrap_or(-1), stdout + &stderr)
}

/// An entry for a port nothing listens on: it retries for as long as the
/// daemon lets it.
fn dead_entry(local: &Path) -> serde_json::Value {
    let addr = support::free_local_addr();
    json!({
        "server": {"host": "127.0.0.1", "port": addr.port(), "login": "u", "password": "p"},
        "file": {"local_path": local, "server_path": "in"}
    })
}

/// Retries that never give up on their own within a test.
fn patient(cfg: &mut ftpdrop::Config) {
    cfg.retry.max_attempts = 10_000;
    cfg.retry.initial_backoff_ms = 100;
    cfg.retry.max_backoff_ms = 300;
}

/// Waits until the job's first entry has tried at least `n` times.
async fn attempts_at_least(d: &Daemon, job: &str, n: u32) {
    let ok = support::wait_until(Duration::from_secs(30), || {
        support::receipt_now(&d.checked, job)
            .is_some_and(|r| r.entries.first().is_some_and(|e| e.attempts >= n))
    })
    .await;
    assert!(ok, "{job}: fewer than {n} attempts within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_job_that_retries_against_a_dead_host() {
    let (dir, mut cfg) = Daemon::prepare();
    patient(&mut cfg);
    // Long waits between attempts: `status` below finds it waiting.
    cfg.retry.initial_backoff_ms = 1500;
    cfg.retry.max_backoff_ms = 1500;
    let d = Daemon::start(dir, cfg);
    let local = d.local("a.txt", b"never sent");
    d.drop_job("dead", &json!([dead_entry(&local)]));
    attempts_at_least(&d, "dead", 2).await;
    let config = config_file(&d);
    // While it waits: `status JOB` shows when it tries next, and why.
    let waiting = support::wait_until(Duration::from_secs(10), || {
        support::receipt_now(&d.checked, "dead")
            .is_some_and(|r| r.entries[0].next_attempt_at.is_some())
    })
    .await;
    assert!(waiting);
    let (code, out) = cli(&["status", "--config", config.to_str().unwrap(), "dead"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("next attempt 20") && out.contains("last error:"),
        "{out}"
    );
    let (code, out) = cli(&["cancel", "--config", config.to_str().unwrap(), "dead"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("job dead: cancelled (0 of 1 entries were done)"),
        "{out}"
    );
    let r = d.receipt("dead").await;
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(r.entries[0].state, EntryState::Cancelled);
    let error = r.entries[0].error.clone().unwrap_or_default();
    assert!(error.contains("cancelled by an operator"), "{error}");
    assert!(r.entries[0].next_attempt_at.is_none());
    assert!(
        !d.checked.join("dead.cancel").exists(),
        "the request stays after it was acted on"
    );
    assert!(local.exists());
    // An ended job takes no more requests, and says why.
    let (code, out) = cli(&["cancel", "--config", config.to_str().unwrap(), "dead"]).await;
    assert_eq!(code, 2);
    assert!(
        out.contains("job dead has already ended (cancelled)"),
        "{out}"
    );
    let (code, out) = cli(&["retry", "--config", config.to_str().unwrap(), "nosuch"]).await;
    assert_eq!(code, 2);
    assert!(out.contains("no job named nosuch"), "{out}");
    d.stop().await;
}

/// Cancelled mid-upload: the temp file is removed from the server, the
/// final name never appears, and `after: delete` does not touch the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_upload_leaves_nothing_on_the_server_and_disposes_nothing() {
    let srv = FtpServer::start().await;
    let (dir, mut cfg) = Daemon::prepare();
    cfg.max_rate = Some(ftpdrop::rate::RateSetting::Text("512k".into()));
    let d = Daemon::start(dir, cfg);
    let local = d.dir.path().join("local/big.bin");
    support::write_random_file(&local, 16 * 1024 * 1024, 25);
    let mut e = entry(&srv, &local, "in");
    e["after"] = json!("delete");
    d.drop_job("big", &json!([e]));
    // Under way: a temp file on the server's disk.
    let started = support::wait_until(Duration::from_secs(30), || !srv.files().is_empty()).await;
    assert!(started, "the upload never began");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = config_file(&d);
    let (code, out) = cli(&["cancel", "--config", config.to_str().unwrap(), "big.json"]).await;
    assert_eq!(code, 0, "{out}");
    let r = d.receipt("big").await;
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(r.entries[0].state, EntryState::Cancelled);
    assert!(local.exists(), "a cancelled entry's source was disposed");
    assert!(
        !srv.path("in/big.bin").exists(),
        "the cancelled file was published"
    );
    srv.assert_no_temp_files();
    d.stop().await;
}

/// A claimed job file deleted by hand ends the job (`cancelled`, with the
/// reason) instead of leaving it `running` forever on the board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_file_removed_by_hand_ends_the_job() {
    let (dir, mut cfg) = Daemon::prepare();
    patient(&mut cfg);
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    let local = d.local("a.txt", b"never sent");
    d.drop_job("ghost", &json!([dead_entry(&local)]));
    attempts_at_least(&d, "ghost", 1).await;
    std::fs::remove_file(d.checked.join("ghost.json")).unwrap();
    let r = d.receipt("ghost").await;
    assert_eq!(r.state, JobState::Cancelled);
    let error = r.entries[0].error.clone().unwrap_or_default();
    assert!(error.contains("was removed"), "{error}");
    let ok = support::wait_until(Duration::from_secs(5), || {
        let list = support::http::get(api, "/api/jobs?state=running").json();
        list.as_array().is_some_and(|j| j.is_empty())
    })
    .await;
    assert!(
        ok,
        "the job still shows as running: {}",
        support::http::get(api, "/api/jobs").body
    );
    d.stop().await;
}

/// `retry` skips the backoff: an entry that would wait a minute for its
/// next attempt is uploaded at once once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_tries_a_waiting_entry_now() {
    let mut srv = FtpServer::start().await;
    srv.stop();
    let (dir, mut cfg) = Daemon::prepare();
    cfg.retry.max_attempts = 100;
    cfg.retry.initial_backoff_ms = 60_000;
    cfg.retry.max_backoff_ms = 60_000;
    let d = Daemon::start(dir, cfg);
    let body = support::random_bytes(100_000, 7);
    let local = d.local("r.bin", &body);
    d.drop_job("later", &json!([entry(&srv, &local, "in")]));
    let waiting = support::wait_until(Duration::from_secs(30), || {
        support::receipt_now(&d.checked, "later")
            .is_some_and(|r| r.entries[0].next_attempt_at.is_some())
    })
    .await;
    assert!(waiting, "the entry never waited for a retry");
    srv.restart().await;
    let config = config_file(&d);
    let (code, out) = cli(&["retry", "--config", config.to_str().unwrap(), "later"]).await;
    assert_eq!(code, 0, "{out}");
    let r = support::wait_receipt(&d.checked, "later", Duration::from_secs(15)).await;
    assert_eq!(r.state, JobState::Done);
    assert_eq!(std::fs::read(srv.path("in/r.bin")).unwrap(), body);
    d.stop().await;
}

/// The same through the API: 202 for a request left, 404 for no such job,
/// 409 for a job that ended, and a request without JSON refused (a form
/// on another site cannot cancel jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_through_the_api() {
    use support::http::request;
    let (dir, mut cfg) = Daemon::prepare();
    patient(&mut cfg);
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    let local = d.local("a.txt", b"never sent");
    d.drop_job("viaapi", &json!([dead_entry(&local)]));
    attempts_at_least(&d, "viaapi", 1).await;
    let json_type = [("Content-Type", "application/json")];
    let plain = request(api, "DELETE", "/api/jobs/viaapi", &[], b"");
    assert_eq!(plain.status, 415, "{}", plain.body);
    let retry = request(api, "POST", "/api/jobs/viaapi/retry", &json_type, b"");
    assert_eq!(retry.status, 202, "{}", retry.body);
    let cancel = request(api, "DELETE", "/api/jobs/viaapi", &json_type, b"");
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert_eq!(cancel.json()["job_is"], "claimed");
    let r = d.receipt("viaapi").await;
    assert_eq!(r.state, JobState::Cancelled);
    let again = request(api, "DELETE", "/api/jobs/viaapi", &json_type, b"");
    assert_eq!(again.status, 409, "{}", again.body);
    let none = request(api, "DELETE", "/api/jobs/nosuch", &json_type, b"");
    assert_eq!(none.status, 404, "{}", none.body);
    let listed = support::http::get(api, "/api/jobs?state=cancelled").json();
    assert!(
        listed
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["job"] == "viaapi")),
        "{listed}"
    );
    d.stop().await;
}

/// Cancelled before any daemon ran it: the request waits beside the job,
/// and the daemon that claims it ends it without a single login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_the_daemon_starts_never_logs_in() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let (inbox, checked) = (cfg.inbox.clone(), cfg.checked.clone());
    let local = dir.path().join("local/q.txt");
    support::write_file(&local, b"queued");
    std::fs::write(
        inbox.join("queued.json"),
        serde_json::to_vec(&json!([entry(&srv, &local, "in")])).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("cli-config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({"inbox": inbox, "checked": checked})).unwrap(),
    )
    .unwrap();
    let (code, out) = cli(&[
        "cancel",
        "--config",
        config.to_str().unwrap(),
        "--wait",
        "1",
        "queued",
    ])
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("waits in the inbox"), "{out}");
    let d = Daemon::start(dir, cfg);
    let r = d.receipt("queued").await;
    assert_eq!(r.state, JobState::Cancelled);
    assert_eq!(srv.count_logins(), 0);
    assert!(!srv.path("in/q.txt").exists());
    d.stop().await;
}

/// Two instances on one inbox: the job runs in one of them, and the other
/// one's API cancels it (the request reaches whoever holds the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_instance_cancels_a_job_it_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (inbox, checked) = (base.join("files"), base.join("checked"));
    let port = support::free_local_addr().port();
    let cfg = base.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "inbox": inbox, "checked": checked, "settle_ms": 100,
            "status": {"listen": format!("127.0.0.1:{port}")},
            "retry": {"initial_backoff_ms": 100, "max_backoff_ms": 300},
        }))
        .unwrap(),
    )
    .unwrap();
    let logs: Vec<_> = (0..2)
        .map(|i| base.join(format!("instance{i}.log")))
        .collect();
    let mut children: Vec<_> = logs
        .iter()
        .map(|log| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
                .args(["run", "--config", cfg.to_str().unwrap()])
                .stderr(std::fs::File::create(log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let both = support::wait_until(Duration::from_secs(30), || {
        ftpdrop::status::instances::running(&checked)
            .iter()
            .filter(|i| i.addr.is_some())
            .count()
            == 2
    })
    .await;
    assert!(both, "two instances did not start");
    let local = base.join("a.txt");
    support::write_file(&local, b"never sent");
    let tmp = inbox.join(".far.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&json!([dead_entry(&local)])).unwrap(),
    )
    .unwrap();
    std::fs::rename(&tmp, inbox.join("far.json")).unwrap();
    let log_text = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let claimed = support::wait_until(Duration::from_secs(30), || {
        (0..2).any(|i| log_text(i).contains("job claimed job=far"))
    })
    .await;
    assert!(claimed, "nobody claimed the job");
    let runner = (0..2)
        .find(|i| log_text(*i).contains("job claimed job=far"))
        .unwrap();
    let runner_pid = children[runner].id().unwrap();
    let other = ftpdrop::status::instances::running(&checked)
        .into_iter()
        .find(|i| i.addr.is_some() && i.pid != runner_pid)
        .and_then(|i| i.addr)
        .unwrap();
    support::http::register(other, ftpdrop::status::auth::default_token_file(&checked));
    let r = support::http::request(
        other,
        "DELETE",
        "/api/jobs/far",
        &[("Content-Type", "application/json")],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let receipt = support::wait_receipt(&checked, "far", Duration::from_secs(15)).await;
    assert_eq!(receipt.state, JobState::Cancelled);
    assert!(
        log_text(runner).contains("job cancelled job=far"),
        "the instance running it did not cancel it:\n{}",
        log_text(runner)
    );
    for c in &mut children {
        let _ = c.start_kill();
    }
}
