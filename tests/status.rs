//! Issue 13: what operators see. The real daemon with its status API on
//! port 0, uploading to a real FTP server (libunftp, behind a proxy that
//! caps the rate like a slow link); every assertion reads the real HTTP
//! API, its Server-Sent Events, its WebSocket, or `/metrics`.

mod support;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::daemon::{entry, Daemon};
use support::ftpserver::FtpServer;
use support::http;
use support::proxy::FaultProxy;

const MIB: u64 = 1024 * 1024;

fn via(proxy: &FaultProxy, srv: &FtpServer, local: &std::path::Path, dir: &str) -> Value {
    let mut e = entry(srv, local, dir);
    e["server"]["port"] = json!(proxy.addr.port().to_string());
    e
}

/// During an upload capped at 20 MB/s, `bytes_sent` of `/api/jobs/{job}`
/// advances at least once a second and ends equal to the file size; the
/// live feeds (SSE and WebSocket) carry the same progress and the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_progress_through_the_api_sse_and_websocket() {
    const SIZE: u64 = 80 * MIB;
    let srv = FtpServer::start().await;
    let proxy = FaultProxy::start(srv.addr).await;
    proxy.throttle(20_000_000);
    let (dir, cfg) = Daemon::prepare();
    let local = dir.path().join("local/big.bin");
    support::write_random_file(&local, SIZE, 13);
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    let sse = http::sse(api, &[]);
    let ws_request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{api}/api/ws").into_client_request().unwrap();
        let bearer = format!("Bearer {}", http::token(api).expect("the API token"));
        r.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        r
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request)
        .await
        .expect("WebSocket connects");
    d.drop_job("big", &json!([via(&proxy, &srv, &local, "live")]));

    // Poll the job as an operator's script would, four times a second.
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    let final_receipt = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no end in 60 s"
        );
        let r = tokio::task::spawn_blocking(move || http::get(api, "/api/jobs/big"))
            .await
            .unwrap();
        if r.status == 200 {
            let v = r.json();
            if let Some(p) = v["progress"][0]["bytes_sent"].as_u64() {
                if v["progress"][0]["stage"] == "uploading" {
                    samples.push((Instant::now(), p));
                }
            }
            if v["state"] == "done" {
                break v;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // While uploading, the count never stood still for a second.
    let mut advances = 0;
    let mut last = (samples[0].0, samples[0].1);
    for &(t, b) in &samples[1..] {
        assert!(b >= last.1, "bytes_sent went back: {} -> {b}", last.1);
        if b > last.1 {
            advances += 1;
            last = (t, b);
        } else {
            assert!(
                t - last.0 < Duration::from_millis(1500),
                "bytes_sent stood at {b} for {:?}",
                t - last.0
            );
        }
    }
    assert!(
        advances >= 3,
        "{advances} advances in {} samples",
        samples.len()
    );
    let e = &final_receipt["entries"][0];
    assert_eq!(e["bytes"].as_u64(), Some(SIZE));
    assert_eq!(
        final_receipt["progress"][0]["bytes_sent"]
            .as_u64()
            .unwrap_or(SIZE),
        SIZE
    );
    assert_eq!(
        e["url"].as_str(),
        Some(format!("ftp://127.0.0.1:{}/live/big.bin", proxy.addr.port()).as_str()),
        "the link of a done entry, without credentials"
    );
    support::assert_same_file(&local, srv.path("live/big.bin"));

    // The list: the job, done, with its byte counts.
    let list = http::get(api, "/api/jobs?limit=5").json();
    assert_eq!(list[0]["job"], "big");
    assert_eq!(list[0]["state"], "done");
    assert_eq!(list[0]["bytes_sent"].as_u64(), Some(SIZE));
    assert_eq!(http::get(api, "/api/jobs?state=failed").json(), json!([]));

    // SSE: progress messages that rise to the size, then the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = sse.lock().unwrap().clone();
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress" && e["job"] == "big")
        .map(|e| e["bytes_sent"].as_u64().unwrap())
        .collect();
    assert!(
        progress.len() >= 3,
        "SSE progress messages: {}",
        progress.len()
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert!(progress.iter().any(|&b| b > 0 && b < SIZE), "{progress:?}");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in ["job_started", "entry_stage", "entry_done", "job_finished"] {
        assert!(types.contains(&t), "SSE has no {t}: {types:?}");
    }
    // The WebSocket carries the same messages.
    let mut ws_types = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        if let Ok(text) = m.into_text() {
            let v: Value = serde_json::from_str(&text).unwrap();
            ws_types.push(v["type"].as_str().unwrap_or("").to_string());
            if v["type"] == "job_finished" {
                break;
            }
        }
    }
    assert!(ws_types.iter().any(|t| t == "progress"), "{ws_types:?}");
    assert_eq!(ws_types.last().map(String::as_str), Some("job_finished"));
    d.stop().await;
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// After a mixed run (done, failed, invalid), `/metrics` agrees with the
/// receipts; no label or value carries a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_receipts_after_a_mixed_run() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let mut files = Vec::new();
    for i in 0..3u64 {
        let p = dir.path().join(format!("local/m{i}.bin"));
        support::write_random_file(&p, 100_000 + i * 1000, i);
        files.push(p);
    }
    let mut wrong = entry(&srv, &files[2], "m");
    wrong["server"]["password"] = json!("not-the-password-zz9");
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    d.drop_job("good1", &json!([entry(&srv, &files[0], "m")]));
    d.drop_job(
        "good2",
        &json!([entry(&srv, &files[1], "m"), entry(&srv, &files[2], "m2")]),
    );
    d.drop_job("badpass", &json!([wrong]));
    std::fs::write(d.inbox.join("broken.json"), b"[{\"server\": ").unwrap();
    let mut receipts = Vec::new();
    for job in ["good1", "good2", "badpass", "broken"] {
        receipts.push(support::wait_receipt(&d.checked, job, Duration::from_secs(60)).await);
    }
    let m = http::get(api, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap_or("")
        .contains("openmetrics"));
    let text = m.body;
    let server = format!("127.0.0.1:{}", srv.addr.port());
    let count =
        |state: ftpdrop::JobState| receipts.iter().filter(|r| r.state == state).count() as f64;
    assert_eq!(
        metric(&text, "ftpdrop_jobs_total", &[("state", "done")]),
        count(ftpdrop::JobState::Done)
    );
    assert_eq!(
        metric(&text, "ftpdrop_jobs_total", &[("state", "failed")]),
        count(ftpdrop::JobState::Failed)
    );
    assert_eq!(
        metric(&text, "ftpdrop_jobs_total", &[("state", "invalid")]),
        count(ftpdrop::JobState::Invalid)
    );
    let entries = |s: ftpdrop::report::EntryState| {
        receipts
            .iter()
            .flat_map(|r| &r.entries)
            .filter(|e| e.state == s)
            .count() as f64
    };
    assert_eq!(
        metric(
            &text,
            "ftpdrop_entries_total",
            &[("state", "done"), ("server", &server)]
        ),
        entries(ftpdrop::report::EntryState::Done)
    );
    assert_eq!(
        metric(
            &text,
            "ftpdrop_entries_total",
            &[("state", "failed"), ("server", &server)]
        ),
        entries(ftpdrop::report::EntryState::Failed)
    );
    let bytes: u64 = receipts
        .iter()
        .flat_map(|r| &r.entries)
        .filter(|e| e.state == ftpdrop::report::EntryState::Done)
        .filter_map(|e| e.bytes)
        .sum();
    assert_eq!(
        metric(&text, "ftpdrop_bytes_sent_total", &[("server", &server)]),
        bytes as f64
    );
    assert!(
        metric(&text, "ftpdrop_logins_total", &[("result", "refused")]) >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "ftpdrop_logins_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(
        metric(
            &text,
            "ftpdrop_upload_duration_seconds_count",
            &[("server", &server)]
        ),
        entries(ftpdrop::report::EntryState::Done)
    );
    assert!(
        text.contains("ftpdrop_upload_duration_seconds_bucket{le=\"0.25\",server="),
        "explicit buckets"
    );
    assert!(
        metric(
            &text,
            "ftpdrop_server_connection_limit",
            &[("server", &server)]
        ) >= 1.0
    );
    assert!(text.contains("ftpdrop_sessions{"));
    assert_eq!(metric(&text, "ftpdrop_jobs_running", &[]), 0.0);
    assert_eq!(metric(&text, "ftpdrop_inbox_waiting", &[]), 0.0);
    assert!(text.contains("ftpdrop_build_info{version=\""));
    // Credentials appear nowhere an operator looks.
    let jobs = http::get(api, "/api/jobs").body;
    let detail = http::get(api, "/api/jobs/badpass").body;
    for (what, body) in [("metrics", &text), ("jobs", &jobs), ("badpass", &detail)] {
        assert!(!body.contains(&srv.password), "{what} shows the password");
        assert!(
            !body.contains("not-the-password-zz9"),
            "{what} shows the wrong password"
        );
    }
    assert!(
        detail.contains("530"),
        "the failed entry says why: {detail}"
    );
    d.stop().await;
}

/// A token guards every endpoint; `POST /api/jobs` validates like
/// `ftpdrop validate` and writes the job into the inbox; `/health` and
/// `/ready` answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_submit_health_and_ready() {
    let srv = FtpServer::start().await;
    let (dir, mut cfg) = Daemon::prepare();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    cfg.status.token_file = Some(token_file);
    let local = dir.path().join("local/posted.txt");
    support::write_file(&local, b"posted through the API");
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    let auth = [
        ("Authorization", "Bearer s3cret-token"),
        ("Content-Type", "application/json"),
    ];
    for path in [
        "/metrics",
        "/api/jobs",
        "/api/servers",
        "/api/events",
        "/api/ws",
    ] {
        let none = http::request(api, "GET", path, &[http::NO_AUTH], b"");
        assert_eq!(none.status, 401, "{path} without a token");
        let wrong = http::request(api, "GET", path, &[("Authorization", "Bearer nope")], b"");
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    // Probes and the page (which holds no data, and asks for the token) are open.
    for path in ["/health", "/ready", "/"] {
        let none = http::request(api, "GET", path, &[http::NO_AUTH], b"");
        assert_ne!(none.status, 401, "{path} without a token");
    }
    assert_eq!(http::request(api, "GET", "/health", &auth, b"").status, 200);
    let started = Instant::now();
    while http::request(api, "GET", "/ready", &auth, b"").status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = http::request(api, "GET", "/", &auth, b"");
    assert!(page.body.contains("<title>ftpdrop</title>") && !page.body.contains("https://"));

    let bad = json!([{"server": {"host": "127.0.0.1", "port": "99999", "login": "u", "password": "p"},
                      "file": {"local_path": "/tmp/x.txt", "server_path": "x"}}]);
    let r = http::request(
        api,
        "POST",
        "/api/jobs",
        &auth,
        &serde_json::to_vec(&bad).unwrap(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let problems = r.json()["problems"].to_string();
    assert!(problems.contains("entries[0].server.port"), "{problems}");
    assert_eq!(
        std::fs::read_dir(&d.inbox).unwrap().count(),
        0,
        "nothing written for a bad job"
    );

    let good = json!([entry(&srv, &local, "posted")]);
    let r = http::request(
        api,
        "POST",
        "/api/jobs",
        &auth,
        &serde_json::to_vec(&good).unwrap(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let job = v["job"].as_str().unwrap().to_string();
    assert_eq!(v["status_url"], format!("/api/jobs/{job}"));
    let receipt = support::wait_receipt(&d.checked, &job, Duration::from_secs(30)).await;
    assert_eq!(receipt.state, ftpdrop::JobState::Done);
    assert_eq!(
        std::fs::read(srv.path("posted/posted.txt")).unwrap(),
        b"posted through the API"
    );
    let detail = http::request(api, "GET", &format!("/api/jobs/{job}"), &auth, b"").json();
    assert_eq!(detail["state"], "done");
    assert_eq!(
        http::request(api, "GET", "/api/jobs/..%2Fconfig", &auth, b"").status,
        404
    );
    assert_eq!(
        http::request(api, "GET", "/api/jobs/nosuchjob", &auth, b"").status,
        404
    );
    d.stop().await;
}

/// Listening beyond loopback without a token is refused at start.
#[test]
fn a_public_listen_address_needs_a_token() {
    let mut cfg = ftpdrop::Config::default();
    cfg.status.listen = Some("0.0.0.0:9180".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("token_file"), "{e}");
    cfg.status.token_file = Some("/etc/ftpdrop/token".into());
    cfg.validate().unwrap();
    cfg.status.listen = Some("not an address".into());
    assert!(cfg.validate().is_err());
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(args)
        .output()
        .unwrap()
}

/// `submit --wait` exits 0 only for a done job; `status` reads the API (or
/// the receipts when no daemon answers); completions and the man page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_status_completions_manpage() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let base = dir.path().to_path_buf();
    let good = base.join("local/cli.txt");
    support::write_file(&good, b"from the command line");
    let mut bad = entry(&srv, &good, "cli");
    bad["server"]["password"] = json!("wrong-password-for-cli");
    let (good_job, bad_job) = (base.join("cli-good.json"), base.join("cli-bad.json"));
    std::fs::write(
        &good_job,
        serde_json::to_vec(&json!([entry(&srv, &good, "cli")])).unwrap(),
    )
    .unwrap();
    std::fs::write(&bad_job, serde_json::to_vec(&json!([bad])).unwrap()).unwrap();
    let d = Daemon::start(dir, cfg.clone());
    let api = d.api().await;
    let cfg_file = base.join("cli-config.json");
    std::fs::write(
        &cfg_file,
        serde_json::to_vec(&json!({
            "inbox": cfg.inbox, "checked": cfg.checked, "status": {"listen": api.to_string()},
        }))
        .unwrap(),
    )
    .unwrap();
    let c = cfg_file.to_str().unwrap().to_string();
    let (c2, g) = (c.clone(), good_job.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || cli(&["submit", "--config", &c2, "--wait", &g]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cli-good\n") && stdout.contains("cli-good: done"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(srv.path("cli/cli.txt")).unwrap(),
        b"from the command line"
    );
    let (c2, b) = (c.clone(), bad_job.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || cli(&["submit", "--config", &c2, "--wait", &b]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed job: exit 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-bad: failed"));

    let (c2, c3) = (c.clone(), c.clone());
    let list = tokio::task::spawn_blocking(move || cli(&["status", "--config", &c2]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(text.starts_with("JOB"), "{text}");
    assert!(
        text.contains("cli-good") && text.contains("cli-bad") && text.contains("failed"),
        "{text}"
    );
    assert!(
        list.stderr.is_empty(),
        "the API answered: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let one = tokio::task::spawn_blocking(move || cli(&["status", "--config", &c3, "cli-good"]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&one.stdout).to_string();
    assert!(
        text.contains("cli/cli.txt") && text.contains("100%"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ftp://127.0.0.1:{}/cli/cli.txt", srv.addr.port())),
        "{text}"
    );
    // No daemon where the config says, nor advertised in its state folder
    // (a copy of the receipts; the running daemon advertises itself in
    // the first one): the receipts answer.
    let offline_checked = base.join("offline").join("checked");
    std::fs::create_dir_all(&offline_checked).unwrap();
    for e in std::fs::read_dir(&cfg.checked).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".report.json") {
            std::fs::copy(e.path(), offline_checked.join(e.file_name())).unwrap();
        }
    }
    let offline_cfg = base.join("cli-offline.json");
    std::fs::write(
        &offline_cfg,
        serde_json::to_vec(&json!({
            "inbox": cfg.inbox, "checked": offline_checked, "status": {"listen": "127.0.0.1:1"},
        }))
        .unwrap(),
    )
    .unwrap();
    let offline = cli(&["status", "--config", offline_cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&offline.stdout).contains("cli-good"));
    assert!(String::from_utf8_lossy(&offline.stderr).contains("from the receipts"));

    let bash = cli(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("submit"));
    let man = cli(&["manpage"]);
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH ftpdrop 1"));
    d.stop().await;
}

/// One job naming 100 hosts (issue 19: 1,500 made 1,500 series and pool
/// slots, never pruned): the metrics keep at most `MAX_SERVERS` server
/// labels plus `other`, and `/api/servers` forgets the hosts once nothing
/// holds a session to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hosts_leave_bounded_metrics_and_no_slots() {
    let (dir, mut cfg) = Daemon::prepare();
    cfg.retry.max_attempts = 1;
    let local = dir.path().join("local/x.txt");
    support::write_file(&local, b"x");
    let entries: Vec<Value> = (0..100)
        .map(|_| {
            let port = support::free_local_addr().port();
            json!({"server": {"host": "127.0.0.1", "port": port.to_string(), "login": "u", "password": "p"},
                   "file": {"local_path": local, "server_path": "x"}})
        })
        .collect();
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    d.drop_job("many", &Value::Array(entries));
    let r = tokio::time::timeout(Duration::from_secs(60), d.receipt("many"))
        .await
        .expect("the job ends");
    assert_eq!(r.state, ftpdrop::JobState::Failed);
    let m = tokio::task::spawn_blocking(move || http::get(api, "/metrics").body)
        .await
        .unwrap();
    let servers: std::collections::HashSet<&str> = m
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("server=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(
        servers.len() <= ftpdrop::status::metrics::MAX_SERVERS + 1,
        "{} server labels",
        servers.len()
    );
    assert!(servers.contains("other"), "{servers:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = tokio::task::spawn_blocking(move || http::get(api, "/api/servers").json())
            .await
            .unwrap();
        if s.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "slots never forgotten: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    d.stop().await;
}

/// A job of thousands of entries is served a page at a time (the whole
/// receipt per request cost the daemon hundreds of megabytes), and the job
/// list counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_job_is_served_a_page_at_a_time() {
    let (dir, mut cfg) = Daemon::prepare();
    cfg.retry.max_attempts = 1;
    let local = dir.path().join("local/x.txt");
    support::write_file(&local, b"x");
    let port = support::free_local_addr().port();
    let entries: Vec<Value> = (0..2_500)
        .map(|i| {
            json!({"server": {"host": "127.0.0.1", "port": port, "login": "u", "password": "p"},
                   "file": {"local_path": local, "server_path": format!("d{i}")}})
        })
        .collect();
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    d.drop_job("paged", &Value::Array(entries));
    let r = tokio::time::timeout(Duration::from_secs(120), d.receipt("paged"))
        .await
        .expect("the job ends");
    assert_eq!(r.entries.len(), 2_500);
    let (first, last, list) = tokio::task::spawn_blocking(move || {
        (
            http::get(api, "/api/jobs/paged").json(),
            http::get(api, "/api/jobs/paged?offset=2400&limit=1000").json(),
            http::get(api, "/api/jobs").json(),
        )
    })
    .await
    .unwrap();
    assert_eq!(first["entries_total"], 2_500);
    assert_eq!(first["entries"].as_array().unwrap().len(), 1_000);
    assert_eq!(first["entries"][999]["index"], 999);
    let indexes: Vec<u64> = last["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (2_400..2_500).collect::<Vec<_>>());
    assert_eq!(last["entries"][0]["remote_path"], "d2400/x.txt");
    let job = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "paged")
        .expect("listed");
    assert_eq!(job["entries_total"], 2_500);
    assert_eq!(job["entries_failed"], 2_500);
    d.stop().await;
}

/// A receipt of a job that ended `mins_ago` minutes ago, as an earlier run
/// (or another version) left it: the history index has no row for it yet.
fn planted_receipt(checked: &std::path::Path, i: usize, mins_ago: u64) {
    let at = |m: u64| {
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(m * 60))
            .to_string()
    };
    let failed = i.is_multiple_of(3);
    let receipt = json!({
        "job": format!("old{i:02}"), "job_file": format!("/x/old{i:02}.json"),
        "state": if failed { "failed" } else { "done" },
        "claimed_at": at(mins_ago + 1), "updated_at": at(mins_ago), "finished_at": at(mins_ago),
        "entries": [{
            "index": 0, "state": if failed { "failed" } else { "done" },
            "server": "old.example:21", "local_path": "/x/a", "remote_path": "/in/a",
            "bytes": 10, "sha256": null, "verification": [], "attempts": 1, "elapsed_ms": 1,
            "error": if failed { Some(format!("550 planted refusal {i}")) } else { None },
        }],
    });
    std::fs::write(
        checked.join(format!("old{i:02}.report.json")),
        serde_json::to_vec(&receipt).unwrap(),
    )
    .unwrap();
}

fn job_names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_string())
        .collect()
}

/// `GET /api/jobs` answers from the history index: receipts left by an
/// earlier run are indexed at start, jobs ending now are indexed as they
/// end; filters by state, server, error text and time, and pages that
/// walk the whole history once. `ftpdrop reindex` rebuilds the same list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_listed_filtered_and_paged_from_the_index() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let base = dir.path().to_path_buf();
    for i in 0..40 {
        planted_receipt(&cfg.checked, i, 10 + i as u64);
    }
    let good = base.join("local/h.txt");
    support::write_file(&good, b"history");
    let mut wrong = entry(&srv, &good, "h2");
    wrong["server"]["password"] = json!("not-the-password-h");
    let d = Daemon::start(dir, cfg.clone());
    let api = d.api().await;
    d.drop_job("now-good", &json!([entry(&srv, &good, "h")]));
    d.drop_job("now-bad", &json!([wrong]));
    std::fs::write(d.inbox.join("now-broken.json"), b"[{\"server\": ").unwrap();
    for job in ["now-good", "now-bad", "now-broken"] {
        support::wait_receipt(&d.checked, job, Duration::from_secs(60)).await;
    }
    assert!(
        d.checked.join("ftpdrop-history.sqlite").exists(),
        "the index lives in checked/"
    );
    let get = |q: &str| http::get(api, &format!("/api/jobs?{q}")).json();
    // The index catches up beside the intake; the list is whole either way.
    let all = job_names(&get("limit=1000"));
    assert_eq!(all.len(), 43, "{all:?}");
    let mut first = all[..3].to_vec();
    first.sort();
    assert_eq!(first, ["now-bad", "now-broken", "now-good"]);
    assert_eq!(all[3], "old00", "newest end first");
    let failed = job_names(&get("state=failed&limit=1000"));
    assert_eq!(failed.len(), 1 + 14, "{failed:?}");
    assert!(failed.contains(&"now-bad".to_string()));
    assert_eq!(job_names(&get("state=invalid")), ["now-broken"]);
    let here = format!("127.0.0.1:{}", srv.addr.port());
    let mut mine = job_names(&get(&format!("server={here}")));
    mine.sort();
    assert_eq!(mine, ["now-bad", "now-good"]);
    assert_eq!(job_names(&get("q=planted%20refusal%2021")), ["old21"]);
    let bad = get("q=530");
    assert_eq!(job_names(&bad), ["now-bad"]);
    assert!(bad[0]["error"].as_str().unwrap().contains("530"), "{bad}");
    assert_eq!(bad[0]["servers"], json!([here]));
    let broken = get("state=invalid");
    assert!(
        !broken[0]["error"].as_str().unwrap_or("").is_empty(),
        "an invalid job says why in the list: {broken}"
    );
    // Old jobs between 20 and 25 minutes ago: old10..=old14 ended then.
    let t = |m: u64| {
        humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(m * 60))
            .to_string()
    };
    let window = job_names(&get(&format!("since={}&until={}", t(25), t(20))));
    assert_eq!(window.len(), 5, "{window:?}");
    // Pages of 7, each after the last of the one before, cover the list once.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = job_names(&get(&format!("limit=7&after={after}")));
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().clone();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let offset = job_names(&get("limit=5&offset=40"));
    assert_eq!(offset, all[40..].to_vec());
    // A bad parameter is refused, named.
    let r = http::get(api, "/api/jobs?state=lost");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("state"), "{}", r.body);
    let r = http::get(api, "/api/jobs?since=yesterday");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("since"), "{}", r.body);
    // Rebuilt from nothing, from the receipts.
    let cfg_file = base.join("reindex-config.json");
    std::fs::write(
        &cfg_file,
        serde_json::to_vec(&json!({"inbox": cfg.inbox, "checked": cfg.checked})).unwrap(),
    )
    .unwrap();
    let c = cfg_file.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || cli(&["reindex", "--config", &c]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("43 jobs"), "{stderr}");
    assert_eq!(job_names(&get("limit=1000")), all);
    d.stop().await;
}
