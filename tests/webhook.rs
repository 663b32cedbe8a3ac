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
