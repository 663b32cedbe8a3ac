//! The command line never leaves an operator guessing (issue 25): `submit`
//! fails fast where no daemon watches, validates as `validate` does and
//! prints each failed entry's error; `status JOB` shows why a job is
//! invalid; reading commands create nothing; a second Ctrl-C stops at once.
//! All through the real binary; uploads go to a real FTP server (libunftp).
#![cfg(unix)]

mod support;

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::daemon::{entry, Daemon};
use support::ftpserver::FtpServer;

/// Runs `ftpdrop ARGS` in `cwd` to its end: exit code, stdout + stderr.
fn cli_in(cwd: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ftpdrop {args:?}: {:?}\n{text}", out.status.code());
    (out.status.code().unwrap_or(-1), text)
}

fn write_json(path: &Path, v: &serde_json::Value) -> String {
    std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// No daemon: `submit` says so at once and leaves nothing behind (not even
/// folders); `--queue` leaves the job for a daemon that starts later, and
/// even then a job `validate` refuses is refused.
#[test]
fn submit_without_a_daemon_fails_fast_and_queue_still_validates() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let local = base.join("here.txt");
    std::fs::write(&local, b"x").unwrap();
    let job = |file: &Path| {
        json!([{"server": {"host": "127.0.0.1", "port": 2121, "login": "u", "password": "p"},
                "file": {"local_path": file, "server_path": "in"}}])
    };
    let good = write_json(&base.join("good.json"), &job(&local));
    let missing = write_json(&base.join("missing.json"), &job(&base.join("nope.txt")));
    let state = base.join("state");
    let config = write_json(
        &base.join("config.json"),
        &json!({"inbox": state.join("files"), "checked": state.join("checked")}),
    );
    let started = Instant::now();
    let (code, out) = cli_in(base, &["submit", "--config", &config, &good]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no ftpdrop daemon runs on"), "{out}");
    assert!(out.contains("--queue"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!state.exists(), "a failed submit created folders");
    // Without --config: the same, about ./checked, and nothing created here.
    let (code, _) = cli_in(base, &["submit", &good]);
    assert_eq!(code, 2);
    assert!(!base.join("files").exists() && !base.join("checked").exists());

    // `validate` and `submit --queue` agree about a missing local file.
    let (code, out) = cli_in(base, &["validate", "--config", &config, &missing]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nope.txt"), "{out}");
    let (code, out2) = cli_in(base, &["submit", "--queue", "--config", &config, &missing]);
    assert_eq!(code, 1, "{out2}");
    assert!(
        out2.contains("missing.json: invalid") && out2.contains("nope.txt"),
        "{out2}"
    );
    let (code, out) = cli_in(base, &["submit", "--queue", "--config", &config, &good]);
    assert_eq!(code, 0, "{out}");
    assert!(state.join("files/good.json").exists());
}

/// `validate`, `check-config` and `status` read; they create no folder.
#[test]
fn reading_commands_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let state = base.join("state");
    let config = write_json(
        &base.join("config.json"),
        &json!({"inbox": state.join("files"), "checked": state.join("checked")}),
    );
    let job = write_json(&base.join("j.json"), &json!([]));
    let _ = cli_in(base, &["validate", "--config", &config, &job]);
    let (code, out) = cli_in(base, &["check-config", "--config", &config]);
    assert_eq!(code, 0, "{out}");
    let _ = cli_in(base, &["status", "--config", &config]);
    let _ = cli_in(base, &["status", "--config", &config, "j"]);
    let _ = cli_in(base, &["validate", &job]);
    let _ = cli_in(base, &["check-config"]);
    assert!(
        !state.exists(),
        "a reading command created {}",
        state.display()
    );
    assert!(!base.join("files").exists() && !base.join("checked").exists());
}

/// `submit --wait` prints each failed entry's error, and `status JOB` an
/// invalid job's problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_entries_and_invalid_jobs_say_why() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    let base = d.dir.path().to_path_buf();
    let good = d.local("ok.txt", b"fine");
    let mut bad = entry(&srv, &good, "in");
    bad["server"]["password"] = json!("not-the-password");
    let mixed = write_json(
        &base.join("mixed.json"),
        &json!([entry(&srv, &good, "in"), bad]),
    );
    let config = write_json(
        &base.join("cli-config.json"),
        &json!({"inbox": d.inbox, "checked": d.checked, "status": {"listen": api.to_string()}}),
    );
    let (b, c) = (base.clone(), config.clone());
    let (code, out) = tokio::task::spawn_blocking(move || {
        cli_in(&b, &["submit", "--config", &c, "--wait", &mixed])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mixed: partial (1/2 entries done, 1 failed"),
        "{out}"
    );
    assert!(out.contains("entry 1 (in/ok.txt): failed: "), "{out}");
    assert!(
        out.to_lowercase().contains("login"),
        "the error is not shown: {out}"
    );

    d.drop_job("trunc", &json!([{"server": {"host": "127.0.0.1"}}]));
    let r = d.receipt("trunc").await;
    assert_eq!(r.state, ftpdrop::JobState::Invalid);
    let (b, c) = (base.clone(), config.clone());
    let (code, out) =
        tokio::task::spawn_blocking(move || cli_in(&b, &["status", "--config", &c, "trunc"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("trunc: invalid"), "{out}");
    assert!(out.contains("problem: entries[0].file: missing"), "{out}");
    d.stop().await;
}

/// The first SIGINT gives uploads the grace period and says how to cut it
/// short; the second stops at once, and the log says the rest resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_at_once() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let local = base.join("slow.bin");
    support::write_random_file(&local, 8 * 1024 * 1024, 3);
    let (inbox, checked) = (base.join("files"), base.join("checked"));
    let config = write_json(
        &base.join("config.json"),
        &json!({"inbox": inbox, "checked": checked, "settle_ms": 100,
                "max_rate": "256k", "shutdown_grace_secs": 60, "status": {"listen": null}}),
    );
    let log = base.join("daemon.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["run", "--config", &config])
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let ready = support::wait_until(Duration::from_secs(20), || inbox.exists()).await;
    assert!(ready, "the daemon did not start");
    write_json(
        &inbox.join("slow.json"),
        &json!([entry(&srv, &local, "in")]),
    );
    let uploading = support::wait_until(Duration::from_secs(30), || !srv.files().is_empty()).await;
    assert!(uploading, "the upload never began");
    let sigint = || {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
    };
    sigint();
    let told = support::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("press Ctrl-C again"))
    })
    .await;
    assert!(told, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), child.wait())
            .await
            .is_err(),
        "the first SIGINT did not give the upload its grace period"
    );
    let second = Instant::now();
    sigint();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the second SIGINT did not stop the daemon")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(12),
        "took {:?}",
        second.elapsed()
    );
    assert!(
        log_text.contains("they resume at the next start"),
        "{log_text}"
    );
    let receipt = support::receipt_now(&checked, "slow").unwrap();
    assert_eq!(receipt.state, ftpdrop::JobState::Running);
}

/// A relative `local_path` is refused for what it is, with or without
/// `local_roots`, instead of being read from the working directory.
#[test]
fn a_relative_local_path_is_refused_for_being_relative() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(base.join("rel.txt"), b"here, in the working directory").unwrap();
    let job = write_json(
        &base.join("j.json"),
        &json!([{"server": {"host": "127.0.0.1", "login": "u", "password": "p"},
                 "file": {"local_path": "rel.txt", "server_path": "in"}}]),
    );
    let roots = write_json(
        &base.join("roots.json"),
        &json!({"local_roots": [base], "inbox": base.join("files"), "checked": base.join("checked")}),
    );
    for args in [
        vec!["validate", &job[..]],
        vec!["validate", "--config", &roots, &job],
    ] {
        let (code, out) = cli_in(base, &args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("entries[0].file.local_path: rel.txt is not an absolute path"),
            "{out}"
        );
        assert!(!out.contains("outside local_roots"), "{out}");
    }
}

/// `validate` checks the delivery fields as a claim would use them: an
/// unknown placeholder, a name that a format turns into a path, a done
/// marker that would take a file's name; a good job counts its own files.
#[test]
fn validate_names_every_bad_template_and_marker() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let local = base.join("orders.csv");
    std::fs::write(&local, b"1;2\n").unwrap();
    let server = json!({"host": "127.0.0.1", "login": "u", "password": "p"});
    let bad = write_json(
        &base.join("bad.json"),
        &json!({"done_marker": {"name": "orders.csv"}, "entries": [
            {"server": server, "file": {"local_path": local, "server_path": "in/{day}"}},
            {"server": server, "file": {"local_path": local, "server_path": "in", "remote_name": "{date:%Y/%m}.csv"}},
            {"server": server, "sidecar": "sha512", "file": {"local_path": local, "server_path": "in"}},
        ]}),
    );
    let (code, out) = cli_in(base, &["validate", &bad]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "entries[0].file.server_path: unknown placeholder {day}; known: {date:<strftime>}",
        "entries[1].file.remote_name: must expand to a plain file name",
        "entries[2].sidecar: \"sha512\" is not one of none, sha256",
    ] {
        assert!(out.contains(want), "no {want:?} in {out}");
    }
    let good = write_json(
        &base.join("good.json"),
        &json!({"done_marker": {"name": "orders.csv"}, "entries": [
            {"server": server, "sidecar": "sha256", "if_exists": "skip_if_identical",
             "file": {"local_path": local, "server_path": "in/{date:%Y-%m-%d}"}}]}),
    );
    let (code, out) = cli_in(base, &["validate", &good]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("done_marker.name: \"orders.csv\" is also the name of a file of the job"),
        "{out}"
    );
    let good = write_json(
        &base.join("good.json"),
        &json!({"done_marker": {"name": "{job}.ok", "content": "manifest"}, "entries": [
            {"server": server, "sidecar": "sha256", "if_exists": "skip_if_identical",
             "file": {"local_path": local, "server_path": "in/{date:%Y-%m-%d}", "remote_name": "{stem}_{job}{ext}"}}]}),
    );
    let (code, out) = cli_in(base, &["validate", &good]);
    assert_eq!(code, 0, "{out}");
}

/// Misspelled fields get a "did you mean", in jobs and in the
/// configuration; a job file given as `--config` is called what it is.
#[test]
fn typos_get_a_did_you_mean_and_a_job_is_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let job = write_json(
        &base.join("typo.json"),
        &json!([{"server": {"host": "127.0.0.1", "user": "u", "pasword": "p"},
                 "file": {"local_path": "/tmp/x", "remote_path": "in"}}]),
    );
    let (code, out) = cli_in(base, &["validate", &job]);
    assert_eq!(code, 1, "{out}");
    for hint in [
        r#"entries[0].server.user: unknown field (did you mean "login"?"#,
        r#"entries[0].server.pasword: unknown field (did you mean "password"?"#,
        r#"entries[0].file.remote_path: unknown field (did you mean "server_path"?"#,
    ] {
        assert!(out.contains(hint), "no {hint:?} in {out}");
    }
    let config = write_json(&base.join("c.json"), &json!({"max_conections": 4}));
    let (code, out) = cli_in(base, &["check-config", "--config", &config]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did you mean `max_connections`?"), "{out}");
    let (code, out) = cli_in(base, &["check-config", "--config", &job]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("this is a job file, not a configuration"),
        "{out}"
    );
}

/// `tls: explicit` against a server without TLS fails at once and says
/// what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tls_against_a_plain_server_says_what_to_change() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let d = Daemon::start(dir, cfg);
    let local = d.local("t.txt", b"tls?");
    let mut e = entry(&srv, &local, "in");
    e["tls"] = json!("explicit");
    d.drop_job("plain", &json!([e]));
    let r = d.receipt("plain").await;
    assert_eq!(r.state, ftpdrop::JobState::Failed);
    let error = r.entries[0].error.clone().unwrap_or_default();
    assert!(error.contains(r#"set "tls": "none""#), "{error}");
    assert_eq!(r.entries[0].attempts, 1, "retried a setting: {error}");
    d.stop().await;
}

/// One complete man page (every command, the job format, the files, the
/// exit codes; no pointers to pages that do not exist), and help text on
/// every option of every command.
#[test]
fn the_man_page_is_whole_and_every_option_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, man) = cli_in(dir.path(), &["manpage"]);
    assert_eq!(code, 0);
    let commands = [
        "run",
        "once",
        "validate",
        "submit",
        "status",
        "cancel",
        "retry",
        "dashboard",
        "reindex",
        "completions",
        "manpage",
        "check-config",
        "service",
        "schema",
    ];
    for c in commands {
        assert!(
            man.contains(&format!(".SS \"ftpdrop {c}\"")),
            "no section for {c}"
        );
    }
    for section in [
        "JOB FORMAT",
        "RECEIPTS",
        "CONFIGURATION",
        "FILES",
        "SIGNALS",
        "EXIT STATUS",
    ] {
        assert!(
            man.contains(&format!(".SH {section}")),
            "no {section} section"
        );
    }
    assert!(
        !man.contains("ftpdrop-run(1)"),
        "points to pages never generated"
    );
    assert!(man.lines().count() > 300, "{} lines", man.lines().count());
    for c in commands.iter().filter(|c| **c != "service") {
        let (_, help) = cli_in(dir.path(), &[c, "-h"]);
        let mut section = false;
        for line in help.lines() {
            if line.starts_with("Options:") || line.starts_with("Arguments:") {
                section = true;
                continue;
            }
            if section && (line.starts_with("  -") || line.starts_with("  <")) {
                // `  -c, --config <CONFIG>  Configuration file ...`
                let rest = line
                    .trim_start()
                    .split_once("  ")
                    .map_or("", |(_, help)| help.trim());
                assert!(!rest.is_empty(), "`ftpdrop {c}`: no help for {line:?}");
            }
        }
    }
}

/// A CA file that is not there is named by `check-config`; `--strict`
/// makes any warning a failure, for deployment checks.
#[test]
fn check_config_names_a_missing_ca_file_and_strict_fails_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let config = write_json(
        &base.join("c.json"),
        &json!({"inbox": base.join("files"), "checked": base.join("checked"),
                "local_roots": [base], "allowed_hosts": ["ftp.example.net"],
                "servers": {"partner": {"host": "ftp.example.net", "login": "u", "password": "p",
                                        "tls": "explicit", "ca_file": base.join("missing-ca.pem")}}}),
    );
    let (code, out) = cli_in(base, &["check-config", "--config", &config]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: servers.partner.ca_file: cannot read"),
        "{out}"
    );
    let (code, out) = cli_in(base, &["check-config", "--strict", "--config", &config]);
    assert_eq!(code, 1, "{out}");
}

/// `ftpdrop init` writes a configuration that works as written, from any
/// working directory, and never overwrites one.
#[test]
fn init_writes_a_working_configuration_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (code, out) = cli_in(base, &["init", "site"]);
    assert_eq!(code, 0, "{out}");
    let config = base.join("site/config.json");
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out) = cli_in(
        elsewhere.path(),
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value =
        serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(shown["inbox"], json!(base.join("site/files")));
    // The example job is valid but for the file it names, which is the
    // operator's to make.
    let (code, out) = cli_in(
        base,
        &[
            "validate",
            "--config",
            config.to_str().unwrap(),
            "site/example-job.json",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hello.txt") && out.contains("no such file"),
        "{out}"
    );
    let before = std::fs::read(&config).unwrap();
    let (code, out) = cli_in(base, &["init", "site"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("exists already"), "{out}");
    assert_eq!(std::fs::read(&config).unwrap(), before);
}
