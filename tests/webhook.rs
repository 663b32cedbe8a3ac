//! Issue 15, part 2: webhooks against a real HTTP receiver started by the
//! test (axum): signed, retried until the receiver recovers, exactly one
//! successful delivery per job, and delivered after a restart.

mod support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::daemon::entry;
use support::ftpserver::FtpServer;

#[derive(Default)]
struct Received {
    /// Requests answered 2xx: (headers, body).
    ok: Vec<(HeaderMap, Vec<u8>)>,
    /// Every request's Idempotency-Key, failed ones included.
    keys: Vec<String>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let mut r = r.lock().unwrap();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.keys.push(key);
    if r.fail_first > 0 {
        r.fail_first -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.ok.push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

async fn receiver(listener: tokio::net::TcpListener, fail_first: usize) -> Shared {
    let shared: Shared = Arc::new(Mutex::new(Received {
        fail_first,
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    shared
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let ts = headers["x-ftpdrop-timestamp"].to_str().unwrap();
    let sig = headers["x-ftpdrop-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let fresh = ts.parse::<u64>().unwrap().abs_diff(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    ) < 60;
    sig == want && fresh
}

fn config_with_hook(base: &std::path::Path, url: &str) -> ftpdrop::Config {
    let mut cfg = support::daemon_config(base);
    std::fs::write(base.join("hook-secret"), "w3bh00k-s3cret\n").unwrap();
    cfg.notify = serde_json::from_value(json!({"webhooks": [{
        "url": url, "on": ["done", "failed"], "secret_file": base.join("hook-secret"),
        "headers": {"X-Receiver-Key": "abc"},
    }]}))
    .unwrap();
    cfg
}

async fn run_daemon(
    cfg: ftpdrop::Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let t = tokio::spawn(ftpdrop::run(cfg, async {
        let _ = rx.await;
    }));
    (tx, t)
}

/// Two jobs (one done, one failed); the receiver answers 500 three times,
/// then recovers: each job gets exactly one successful delivery, signed,
/// with the same idempotency key on every try, and no password in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_and_made_once_per_job() {
    let srv = FtpServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = receiver(listener, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_hook(dir.path(), &url);
    let local = dir.path().join("local/w.txt");
    support::write_file(&local, b"webhook me");
    let mut bad = entry(&srv, &local, "w");
    bad["server"]["password"] = json!("wrong-pw-for-hook");
    let (stop, daemon) = run_daemon(cfg.clone()).await;
    for (name, job) in [
        ("good", json!([entry(&srv, &local, "w")])),
        ("bad", json!([bad])),
    ] {
        std::fs::write(
            cfg.inbox.join(format!("{name}.json")),
            serde_json::to_vec(&job).unwrap(),
        )
        .unwrap();
    }
    let ok = support::wait_until(Duration::from_secs(30), || {
        got.lock().unwrap().ok.len() >= 2
    })
    .await;
    assert!(ok, "deliveries: {}", got.lock().unwrap().ok.len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = std::mem::take(&mut *got.lock().unwrap());
    assert_eq!(r.ok.len(), 2, "exactly one successful delivery per job");
    assert!(
        r.keys.len() >= 5,
        "3 refusals and 2 deliveries: {:?}",
        r.keys
    );
    let mut jobs = Vec::new();
    for (headers, body) in &r.ok {
        assert!(
            verify("w3bh00k-s3cret", headers, body),
            "the signature verifies"
        );
        assert_eq!(headers["x-receiver-key"], "abc");
        let v: Value = serde_json::from_slice(body).unwrap();
        let job = v["job"].as_str().unwrap().to_string();
        let key = headers["idempotency-key"].to_str().unwrap();
        assert!(key.starts_with(&format!("{job}@")), "{key}");
        let tries = r.keys.iter().filter(|k| *k == key).count();
        assert!(tries >= 1);
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(&srv.password) && !text.contains("wrong-pw-for-hook"),
            "no password in {text}"
        );
        assert_eq!(
            headers["x-ftpdrop-event"],
            format!("job.{}", v["state"].as_str().unwrap())
        );
        jobs.push((job, v["state"].as_str().unwrap().to_string()));
    }
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            ("bad".into(), "failed".into()),
            ("good".into(), "done".into())
        ]
    );
    drop(r);
    assert_eq!(
        std::fs::read_dir(cfg.checked.join("webhooks"))
            .unwrap()
            .count(),
        0,
        "nothing left queued"
    );
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}

/// The receiver is down when the job ends; the daemon is stopped with the
/// delivery queued; once the receiver is up, a restarted daemon delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_deliveries_pending_still_delivers_them() {
    let srv = FtpServer::start().await;
    // A port with nobody on it yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_hook(dir.path(), &url);
    let local = dir.path().join("local/p.txt");
    support::write_file(&local, b"pending");
    let (stop, daemon) = run_daemon(cfg.clone()).await;
    std::fs::write(
        cfg.inbox.join("later.json"),
        serde_json::to_vec(&json!([entry(&srv, &local, "p")])).unwrap(),
    )
    .unwrap();
    let r = support::wait_receipt(&cfg.checked, "later", Duration::from_secs(30)).await;
    assert_eq!(r.state, ftpdrop::JobState::Done);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    let queued = std::fs::read_dir(cfg.checked.join("webhooks"))
        .unwrap()
        .count();
    assert_eq!(queued, 1, "the delivery is queued on disk");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let got = receiver(listener, 0).await;
    let (stop, daemon) = run_daemon(cfg.clone()).await;
    let ok = support::wait_until(Duration::from_secs(20), || {
        !got.lock().unwrap().ok.is_empty()
    })
    .await;
    assert!(ok, "delivered after the restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(got.lock().unwrap().ok.len(), 1, "once");
    let body: Value = serde_json::from_slice(&got.lock().unwrap().ok[0].1).unwrap();
    assert_eq!(body["job"], "later");
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}

#[test]
fn webhook_urls_come_only_from_the_config_and_are_checked() {
    let mut cfg = ftpdrop::Config {
        notify: serde_json::from_value(json!({"webhooks": [{"url": "ftp://x/hook"}]})).unwrap(),
        ..Default::default()
    };
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("notify.webhooks[0].url"));
    cfg.notify = serde_json::from_value(
        json!({"webhooks": [{"url": "https://x/hook", "on": ["sometimes"]}]}),
    )
    .unwrap();
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("notify.webhooks[0].on"));
    // A job cannot name a webhook: unknown field.
    let job = json!([{"server": {"host": "h", "login": "u", "password": "p"},
                      "file": {"local_path": "/tmp/x", "server_path": "x"}, "webhook": "http://evil/"}]);
    let p = ftpdrop::job::parse(
        &serde_json::to_vec(&job).unwrap(),
        &ftpdrop::Config::default(),
    )
    .unwrap_err();
    assert!(p.join(" ").contains("entries[0].webhook"), "{p:?}");
}

/// A receiver that holds each request for `delay` before answering 204,
/// counting requests as they arrive and as they are answered.
async fn slow_receiver(delay: Duration) -> (String, Arc<Mutex<(usize, usize)>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Arc<Mutex<(usize, usize)>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                move |State(s): State<Arc<Mutex<(usize, usize)>>>| async move {
                    s.lock().unwrap().0 += 1;
                    tokio::time::sleep(delay).await;
                    s.lock().unwrap().1 += 1;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// One queued delivery of job `j`, with its receipt in `checked/`.
fn queue_one(cfg: &ftpdrop::Config) -> Arc<ftpdrop::webhook::Webhooks> {
    use ftpdrop::events::Sink;
    std::fs::write(
        cfg.checked.join("j.report.json"),
        br#"{"job":"j","state":"done","claimed_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let hooks = ftpdrop::webhook::Webhooks::new(cfg, ftpdrop::events::Events::new());
    hooks.on_event(&ftpdrop::events::Event::JobFinished {
        job: "j".into(),
        state: ftpdrop::JobState::Done,
        done: 1,
        failed: 0,
    });
    assert_eq!(hooks.pending(), 1);
    hooks
}

/// The mechanism behind issue 27: a pass stopped while its POST was on the
/// wire (a shutdown) left that POST running, and the queue file behind it;
/// the next pass (the restarted daemon) sent it again. And two passes at
/// once (two instances sharing `checked/`) each sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_taken_by_exactly_one_pass() {
    let (url, seen) = slow_receiver(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_hook(dir.path(), &url);

    // A pass dropped mid-POST, then a new pass while the first POST is on the wire.
    let first = queue_one(&cfg);
    let pass = tokio::spawn({
        let first = first.clone();
        async move { first.pass().await }
    });
    assert!(
        support::wait_until(Duration::from_secs(10), || seen.lock().unwrap().0 == 1).await,
        "the first POST arrives"
    );
    pass.abort();
    let restarted = ftpdrop::webhook::Webhooks::new(&cfg, ftpdrop::events::Events::new());
    restarted.pass().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    restarted.pass().await;
    assert_eq!(*seen.lock().unwrap(), (1, 1), "one POST, answered");
    assert_eq!(
        restarted.pending(),
        0,
        "the delivered one is no longer queued"
    );

    // Two instances' passes at once.
    let a = queue_one(&cfg);
    let b = ftpdrop::webhook::Webhooks::new(&cfg, ftpdrop::events::Events::new());
    tokio::join!(a.pass(), b.pass());
    a.pass().await;
    b.pass().await;
    assert_eq!(*seen.lock().unwrap(), (2, 2), "one more POST, not two");
    assert_eq!(a.pending(), 0);
}

/// An invalid job's receipt is delivered too (issue 19): the event used to
/// fire before the receipt existed, and the delivery was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_jobs_receipt_is_delivered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = receiver(listener, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_with_hook(dir.path(), &url);
    cfg.notify.webhooks[0].on = vec!["invalid".into()];
    let (stop, daemon) = run_daemon(cfg.clone()).await;
    std::fs::write(cfg.inbox.join("broken.json"), b"[{\"nope\": 1}]").unwrap();
    let ok = support::wait_until(Duration::from_secs(20), || {
        !got.lock().unwrap().ok.is_empty()
    })
    .await;
    assert!(ok, "the invalid job's receipt is delivered");
    let (body, key) = {
        let r = got.lock().unwrap();
        (r.ok[0].1.clone(), r.keys[0].clone())
    };
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["job"], "broken");
    assert_eq!(body["state"], "invalid");
    assert!(!key.ends_with('@'), "the key names the run: {key}");
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}

/// Webhook URLs and header values, and NATS URLs, carry credentials:
/// `check-config` shows them redacted (issue 19), and so do the events.
#[test]
fn check_config_redacts_webhook_and_nats_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({
            "inbox": dir.path().join("files"), "checked": dir.path().join("checked"),
            "status": {"listen": null},
            "notify": {"webhooks": [{"url": "https://hook:pa55word@example.net/in?token=t0k3n",
                                      "headers": {"X-Api-Key": "k3y-value"}}]},
            "nats": {"url": "nats://natsuser:natspw@127.0.0.1:4222"},
        }))
        .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for secret in ["pa55word", "t0k3n", "k3y-value", "natspw"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("X-Api-Key") && text.contains("https://hook:***@example.net/in"));
}

/// A cancelled job's receipt is final and delivered (issue 25), to a
/// webhook with the default `on` (every ending state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_jobs_receipt_is_delivered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = receiver(listener, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_with_hook(dir.path(), &url);
    cfg.notify = serde_json::from_value(json!({"webhooks": [{"url": url}]})).unwrap();
    cfg.retry.max_attempts = 10_000;
    let (stop, daemon) = run_daemon(cfg.clone()).await;
    let local = dir.path().join("c.txt");
    support::write_file(&local, b"never sent");
    let dead = support::free_local_addr();
    let job = json!([{"server": {"host": "127.0.0.1", "port": dead.port(), "login": "u", "password": "p"},
                      "file": {"local_path": local, "server_path": "in"}}]);
    std::fs::write(
        cfg.inbox.join("stop.json"),
        serde_json::to_vec(&job).unwrap(),
    )
    .unwrap();
    let claimed = support::wait_until(Duration::from_secs(20), || {
        cfg.checked.join("stop.json").exists()
    })
    .await;
    assert!(claimed);
    let left = ftpdrop::intake::request::request(
        &cfg.inbox,
        &cfg.checked,
        "stop",
        ftpdrop::intake::request::Request::Cancel,
    )
    .unwrap();
    assert_eq!(left, ftpdrop::intake::request::Requested::Claimed);
    let ok = support::wait_until(Duration::from_secs(20), || {
        !got.lock().unwrap().ok.is_empty()
    })
    .await;
    assert!(ok, "the cancelled job's receipt was not delivered");
    let body: Value = serde_json::from_slice(&got.lock().unwrap().ok[0].1).unwrap();
    assert_eq!(body["job"], "stop");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["entries"][0]["state"], "cancelled");
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}
