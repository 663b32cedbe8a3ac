//! Jobs from NATS JetStream (issue 12) against a real `nats-server -js`:
//! workers are real `ftpdrop run` processes sharing one durable consumer,
//! each with its own `checked/` (as on separate hosts). The FTP traffic goes
//! through a proxy that records every command, the transfer log that shows
//! no file renamed into its final name twice.
//!
//! Without `nats-server` on the PATH (Debian's `nats-server` package) the
//! tests are reported as ignored, after one line that says so, unless `CI`
//! or `FTPDROP_INTEROP_REQUIRED=1`: then they fail.
#![cfg(unix)]

use crate::support;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::ftpserver::FtpServer;
use support::proxy::FaultProxy;

/// Where `nats-server` is, if it is installed.
fn find_nats() -> Option<PathBuf> {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(PathBuf::from)
}

/// The `nats-server` a test runs; the harness runs none without it unless
/// it is required (see [`main`]), and then this says what is missing.
fn nats_binary() -> PathBuf {
    find_nats().expect("nats-server not found: apt-get install nats-server")
}

/// Runs the tests, or reports them as ignored where `nats-server` is
/// missing, unless `CI` or `FTPDROP_INTEROP_REQUIRED=1` requires it: then
/// they run, and fail for its absence.
pub(crate) fn main() {
    use libtest_mimic::{Arguments, Trial};
    use std::io::Write;
    let args = Arguments::from_args();
    let required = std::env::var_os("CI").is_some()
        || std::env::var("FTPDROP_INTEROP_REQUIRED").as_deref() == Ok("1");
    let skip = find_nats().is_none() && !required;
    fn on(test: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(test)
    }
    macro_rules! trial {
        ($name:ident) => {
            Trial::test(stringify!($name), || {
                on($name());
                Ok(())
            })
            .with_ignored_flag(skip)
        };
    }
    let trials = vec![
        trial!(three_workers_one_killed_every_job_done_once),
        trial!(nats_restart_mid_run_workers_reconnect_and_finish),
        trial!(invalid_jobs_are_terminated_and_a_stopping_worker_hands_its_job_back),
        trial!(workers_on_separate_hosts_share_a_servers_limit_through_nats),
    ];
    if skip {
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED (shown as ignored): {} NATS tests, as nats-server was not found \
             (apt-get install nats-server)",
            trials.len()
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

/// A JetStream server on a free loopback port, its store in a temp folder.
struct Nats {
    bin: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Nats {
    fn start(bin: PathBuf) -> Nats {
        let port = support::free_local_addr().port();
        let mut n = Nats {
            bin,
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        };
        n.up();
        n
    }

    fn up(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as a service manager does (SIGTERM), and it exits
    /// in order. After a SIGKILL a job acked just before came again as if
    /// never delivered (3 of 8 runs), and was uploaded a second time.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.down();
    }
}

struct Worker {
    child: tokio::process::Child,
    log: PathBuf,
}

fn start_worker(base: &Path, n: usize, url: &str, extra: Value) -> Worker {
    let dir = base.join(format!("worker{n}"));
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let mut cfg = json!({
        "inbox": dir.join("files"), "checked": dir.join("checked"), "status": {"listen": "127.0.0.1:0"},
        "settle_ms": 50, "sweep_interval_ms": 500, "max_concurrent_jobs": 4,
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        "nats": {"url": url, "ack_wait_secs": 6},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let log = dir.join("log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Worker { child, log }
}

/// Every receipt published to `ftpdrop.receipts.>`: job name -> states seen.
type Receipts = Arc<Mutex<HashMap<String, Vec<String>>>>;

async fn watch_receipts(url: &str) -> (async_nats::Client, Receipts) {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client.subscribe("ftpdrop.receipts.>").await.unwrap();
    let seen: Receipts = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let v: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            let job = m.subject.as_str()["ftpdrop.receipts.".len()..].to_string();
            let state = v["state"].as_str().unwrap_or("?").to_string();
            s.lock().unwrap().entry(job).or_default().push(state);
        }
    });
    client.flush().await.unwrap();
    (client, seen)
}

fn done_jobs(seen: &Receipts) -> usize {
    seen.lock()
        .unwrap()
        .values()
        .filter(|v| v.iter().any(|s| s == "done"))
        .count()
}

async fn publish(client: &async_nats::Client, id: &str, job: &Value) {
    let js = async_nats::jetstream::new(client.clone());
    // The workers create the stream; the first publishes wait for it.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    for _ in 0..100 {
        if let Ok(ack) = js
            .publish_with_headers(
                "ftpdrop.jobs",
                headers.clone(),
                serde_json::to_vec(job).unwrap().into(),
            )
            .await
        {
            if ack.await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot publish {id}");
}

/// What every test here starts with: a NATS server, an FTP server behind
/// a command-recording proxy, and a temp folder for the workers.
struct Setup {
    nats: Nats,
    srv: FtpServer,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let nats = Nats::start(nats_binary());
        let srv = FtpServer::start().await;
        let proxy = FaultProxy::start(srv.addr).await;
        Setup {
            nats,
            srv,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

fn job_for(srv: &FtpServer, proxy: &FaultProxy, local: &Path, dir: &str) -> Value {
    json!([{
        "server": {"host": "127.0.0.1", "port": proxy.addr.port(), "login": srv.user, "password": srv.password},
        "file": {"local_path": local, "server_path": dir}
    }])
}

fn assert_renamed_once(proxy: &FaultProxy, expect: usize) {
    let renames = proxy.publishes();
    let twice: Vec<_> = renames.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "renamed into twice: {twice:?}");
    assert_eq!(renames.len(), expect, "one rename per file");
}

fn tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    t.lines().rev().take(25).collect::<Vec<_>>().join("\n")
}

async fn three_workers_one_killed_every_job_done_once() {
    let Setup {
        nats,
        srv,
        proxy,
        dir,
    } = Setup::start().await;
    let base = dir.path();
    let (client, seen) = watch_receipts(&nats.url()).await;
    let mut workers: Vec<Worker> = (0..3)
        .map(|n| start_worker(base, n, &nats.url(), json!({})))
        .collect();
    const JOBS: usize = 300;
    for i in 0..JOBS {
        let local = base.join("data").join(format!("f{i:03}.bin"));
        support::write_random_file(&local, 512 * 1024, i as u64);
        publish(
            &client,
            &format!("job{i:03}"),
            &job_for(&srv, &proxy, &local, &format!("d{}", i % 6)),
        )
        .await;
    }
    assert!(
        support::wait_until(Duration::from_secs(120), || done_jobs(&seen) >= JOBS / 3).await,
        "a third of the jobs not done in 120 s: {}\n{}",
        done_jobs(&seen),
        tail(&workers[0].log)
    );
    let victim = workers.remove(0);
    let pid = victim.child.id().unwrap() as libc::pid_t;
    // SAFETY: killing our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let finished = support::wait_until(Duration::from_secs(180), || done_jobs(&seen) == JOBS).await;
    assert!(
        finished,
        "{} of {JOBS} done after the kill\n{}",
        done_jobs(&seen),
        tail(&workers[0].log)
    );
    // The victim's unacked jobs came to the survivors again.
    let redelivered: usize = workers
        .iter()
        .map(|w| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("claimed job from NATS") && !l.contains("delivered=1"))
                .count()
        })
        .sum();
    assert!(redelivered > 0, "no job was delivered again after the kill");
    eprintln!("{redelivered} jobs delivered again after the kill");
    assert_renamed_once(&proxy, JOBS);
    srv.assert_no_temp_files();
    for i in 0..JOBS {
        support::assert_same_file(
            base.join("data").join(format!("f{i:03}.bin")),
            srv.path(&format!("d{}/f{i:03}.bin", i % 6)),
        );
    }
    let failed: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.iter().any(|s| s != "done"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(failed.is_empty(), "receipts other than done: {failed:?}");
}

async fn nats_restart_mid_run_workers_reconnect_and_finish() {
    let Setup {
        mut nats,
        srv,
        proxy,
        dir,
    } = Setup::start().await;
    let base = dir.path();
    let workers: Vec<Worker> = (0..2)
        .map(|n| start_worker(base, n, &nats.url(), json!({})))
        .collect();
    const JOBS: usize = 60;
    {
        let client = async_nats::connect(nats.url()).await.unwrap();
        for i in 0..JOBS {
            let local = base.join("data").join(format!("r{i:02}.bin"));
            support::write_random_file(&local, 2 * 1024 * 1024, 1000 + i as u64);
            publish(
                &client,
                &format!("r{i:02}"),
                &job_for(&srv, &proxy, &local, "restart"),
            )
            .await;
        }
        client.flush().await.unwrap();
    }
    let done_on_disk = |base: &Path| {
        (0..JOBS)
            .filter(|i| {
                (0..2).any(|w| {
                    support::receipt_now(
                        &base.join(format!("worker{w}/checked")),
                        &format!("r{i:02}"),
                    )
                    .is_some_and(|r| r.state == ftpdrop::JobState::Done)
                })
            })
            .count()
    };
    assert!(support::wait_until(Duration::from_secs(60), || done_on_disk(base) >= 5).await);
    nats.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.up();
    let all = support::wait_until(Duration::from_secs(180), || done_on_disk(base) == JOBS).await;
    assert!(
        all,
        "{} of {JOBS} done after the restart\n{}\n{}",
        done_on_disk(base),
        tail(&workers[0].log),
        tail(&workers[1].log)
    );
    assert_renamed_once(&proxy, JOBS);
    srv.assert_no_temp_files();
}

async fn invalid_jobs_are_terminated_and_a_stopping_worker_hands_its_job_back() {
    let Setup {
        nats,
        srv,
        proxy,
        dir,
    } = Setup::start().await;
    let base = dir.path();
    let (client, seen) = watch_receipts(&nats.url()).await;
    // Grace 0: a stop cuts the upload off at once.
    let mut a = start_worker(base, 0, &nats.url(), json!({"shutdown_grace_secs": 0}));

    let js = async_nats::jetstream::new(client.clone());
    publish(&client, "bad-json", &json!("placeholder")).await;
    // Not JSON at all, published raw.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "not-json");
    js.publish_with_headers("ftpdrop.jobs", h, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        support::wait_until(Duration::from_secs(30), || {
            let s = seen.lock().unwrap();
            ["bad-json", "not-json"].iter().all(|j| {
                s.get(*j)
                    .is_some_and(|v| v.contains(&"invalid".to_string()))
            })
        })
        .await,
        "no invalid receipts: {:?}\n{}",
        seen.lock().unwrap(),
        tail(&a.log)
    );

    // A big job; SIGTERM while it uploads: the job goes back to the queue.
    let big = base.join("data/big.bin");
    support::write_random_file(&big, 300 * 1024 * 1024, 7);
    publish(&client, "big", &job_for(&srv, &proxy, &big, "big")).await;
    assert!(
        support::wait_until(Duration::from_secs(60), || proxy.data_bytes_forwarded()
            > 20 * 1024 * 1024)
        .await,
        "the big upload did not start\n{}",
        tail(&a.log)
    );
    let pid = a.child.id().unwrap() as libc::pid_t;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), a.child.wait())
        .await
        .expect("the worker stops")
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("handed back to the queue"),
        "{}",
        tail(&a.log)
    );
    let b = start_worker(base, 1, &nats.url(), json!({}));
    assert!(
        support::wait_until(Duration::from_secs(120), || {
            seen.lock()
                .unwrap()
                .get("big")
                .is_some_and(|v| v.contains(&"done".to_string()))
        })
        .await,
        "worker b did not finish the big job\n{}",
        tail(&b.log)
    );
    support::assert_same_file(&big, srv.path("big/big.bin"));
    assert_renamed_once(&proxy, 1);
    srv.assert_no_temp_files();
    // The invalid ones were terminated: never delivered again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let s = seen.lock().unwrap();
    for j in ["bad-json", "not-json"] {
        assert_eq!(s[j].len(), 1, "{j} delivered again: {:?}", s[j]);
    }
    let jobs: HashSet<&String> = s.keys().collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
}

/// Workers on separate hosts (each its own `checked/`) share each server's
/// session limit through NATS KV (issue 24): three workers with
/// `max_connections_per_server: 2` never hold more than 2 sessions at the
/// server between them, and when one is killed its seats expire and the
/// survivors finish every job. Without the shared seats, three workers of
/// 4 jobs each opened up to 6.
async fn workers_on_separate_hosts_share_a_servers_limit_through_nats() {
    let Setup {
        nats,
        srv,
        proxy,
        dir,
    } = Setup::start().await;
    // Slow enough that every worker has jobs running at once.
    proxy.throttle(4_000_000);
    let base = dir.path();
    let (client, seen) = watch_receipts(&nats.url()).await;
    let limit = json!({"max_connections_per_server": 2});
    let mut workers: Vec<Worker> = (0..3)
        .map(|n| start_worker(base, n, &nats.url(), limit.clone()))
        .collect();
    const JOBS: usize = 36;
    for i in 0..JOBS {
        let local = base.join("data").join(format!("s{i:02}.bin"));
        support::write_random_file(&local, 512 * 1024, 1000 + i as u64);
        publish(
            &client,
            &format!("seat{i:02}"),
            &job_for(&srv, &proxy, &local, "seats"),
        )
        .await;
    }
    let logs = |workers: &[Worker]| {
        workers
            .iter()
            .map(|w| tail(&w.log))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        support::wait_until(Duration::from_secs(120), || done_jobs(&seen) >= JOBS / 3).await,
        "a third of the jobs not done in 120 s: {}\n{}",
        done_jobs(&seen),
        logs(&workers)
    );
    let shared = workers.iter().all(|w| {
        std::fs::read_to_string(&w.log)
            .unwrap_or_default()
            .contains("session limits shared through NATS KV")
    });
    let nats_lines = workers
        .iter()
        .flat_map(|w| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("NATS") && !l.contains("claimed job"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(shared, "not every worker shares its limits:\n{nats_lines}");
    let victim = workers.remove(0);
    let pid = victim.child.id().unwrap() as libc::pid_t;
    // SAFETY: killing our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(
        support::wait_until(Duration::from_secs(180), || done_jobs(&seen) == JOBS).await,
        "{} of {JOBS} done after the kill\n{}",
        done_jobs(&seen),
        logs(&workers)
    );
    // libunftp loses replies to the pipelining probe and never lets go of
    // that session (see tests/takeover.rs): those are the server's own.
    let wedged: usize = workers
        .iter()
        .chain(std::iter::once(&victim))
        .map(|w| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .matches("the server lost pipelined commands' replies")
                .count()
        })
        .sum();
    assert!(
        proxy.control_live_max() <= 2 + wedged,
        "{} sessions at once at a server that three workers share with a limit of 2 \
         ({wedged} wedged by the server)",
        proxy.control_live_max()
    );
    assert_renamed_once(&proxy, JOBS);
    for i in 0..JOBS {
        support::assert_same_file(
            base.join("data").join(format!("s{i:02}.bin")),
            srv.path(&format!("seats/s{i:02}.bin")),
        );
    }
}
