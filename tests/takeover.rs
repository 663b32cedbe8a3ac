//! Several instances on one inbox (issue 12): when one dies, the survivors
//! take its jobs over and finish them from its journal, without it ever
//! coming back. Three real processes, a few hundred jobs, `kill -9` of one
//! of them mid-run; the FTP traffic goes through a proxy that records every
//! command, the "transfer log" that shows no file renamed into its final
//! name twice.
#![cfg(unix)]

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::ftpserver::FtpServer;
use support::proxy::FaultProxy;

const JOBS: usize = 240;
const SIZE: u64 = 768 * 1024;

fn start_instance(cfg: &Path, log: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn done_count(checked: &Path) -> usize {
    (0..JOBS)
        .filter(|i| {
            support::receipt_now(checked, &format!("job{i:03}"))
                .is_some_and(|r| r.state == ftpdrop::JobState::Done)
        })
        .count()
}

/// Jobs the instance logging to `log` started and had not finished, whose
/// receipt is not final either: the jobs it would orphan if killed now.
fn unfinished(log: &Path, checked: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let job_of = |l: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("job="))
            .map(str::to_string)
    };
    let started: Vec<String> = text
        .lines()
        .filter(|l| l.contains("job started"))
        .filter_map(job_of)
        .collect();
    let finished: std::collections::HashSet<String> = text
        .lines()
        .filter(|l| l.contains("job finished"))
        .filter_map(job_of)
        .collect();
    started
        .into_iter()
        .filter(|j| !finished.contains(j))
        .filter(|j| !receipt_now_is_final(checked, j))
        .collect()
}

fn receipt_now_is_final(checked: &Path, job: &str) -> bool {
    support::receipt_now(checked, job).is_some_and(|r| r.state.is_final())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_take_over_a_killed_instances_jobs() {
    let srv = FtpServer::start().await;
    let proxy = FaultProxy::start(srv.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (inbox, checked) = (base.join("files"), base.join("checked"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&checked).unwrap();
    let cfg = base.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "inbox": inbox, "checked": checked, "settle_ms": 50, "sweep_interval_ms": 300,
            "status": {"listen": "127.0.0.1:0"},
            "max_concurrent_jobs": 4, "max_connections": 4, "takeover_interval_secs": 1,
            "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        }))
        .unwrap(),
    )
    .unwrap();
    for i in 0..JOBS {
        let local = base.join("data").join(format!("f{i:03}.bin"));
        support::write_random_file(&local, SIZE, i as u64);
        let job = json!([{
            "server": {"host": "127.0.0.1", "port": proxy.addr.port(), "login": srv.user, "password": srv.password},
            "file": {"local_path": local, "server_path": format!("d{}", i % 8)}
        }]);
        let tmp = inbox.join(format!(".job{i:03}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&job).unwrap()).unwrap();
        std::fs::rename(&tmp, inbox.join(format!("job{i:03}.json"))).unwrap();
    }

    let mut instances: Vec<_> = (0..3)
        .map(|n| start_instance(&cfg, &base.join(format!("instance{n}.log"))))
        .collect();
    // Kill one while every instance is busy: a third of the jobs done.
    assert!(
        support::wait_until(Duration::from_secs(120), || done_count(&checked)
            >= JOBS / 3)
        .await,
        "a third of the jobs not done within 120 s"
    );
    // Kill the victim while it holds a job that is not final yet: the
    // wait for a third done only makes every instance busy; this makes the
    // kill land mid-job instead of between two jobs (uploads here last
    // ~150 ms; the window between the check and the kill is a few ms).
    let victim_log_path = base.join("instance0.log");
    assert!(
        support::wait_until(Duration::from_secs(60), || !unfinished(
            &victim_log_path,
            &checked
        )
        .is_empty())
        .await,
        "the victim never held an unfinished job"
    );
    let victim = instances.remove(0);
    let pid = victim.id().unwrap() as libc::pid_t;
    // SAFETY: killing our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let orphans = unfinished(&victim_log_path, &checked);
    let in_flight = std::fs::read_dir(&checked)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".journal")
        })
        .count();

    let all_done =
        support::wait_until(Duration::from_secs(180), || done_count(&checked) == JOBS).await;
    let survivors_log: String = (1..3)
        .map(|n| std::fs::read_to_string(base.join(format!("instance{n}.log"))).unwrap_or_default())
        .collect();
    assert!(
        all_done,
        "{} of {JOBS} jobs done after the kill; survivors' logs:\n{}",
        done_count(&checked),
        survivors_log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let taken_over = survivors_log
        .matches("taking over a job whose instance is gone")
        .count();
    // Every job the victim held unfinished was finished by a survivor
    // taking it over, not by anything else.
    assert!(
        !orphans.is_empty(),
        "the victim finished its jobs in the instant before the kill; rerun"
    );
    let victim_log = std::fs::read_to_string(&victim_log_path).unwrap_or_default();
    for job in &orphans {
        assert!(
            survivors_log.lines().any(|l| l
                .contains("taking over a job whose instance is gone")
                && l.split_whitespace().any(|w| w == format!("job={job}"))),
            "{job} (unfinished at the kill) was not taken over ({in_flight} journals at the kill); victim's log tail:\n{}",
            victim_log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // The transfer log: each final name is renamed into exactly once (the
    // pipelining probes' directories, renamed back and forth, aside).
    let renames = proxy.publishes();
    let twice: Vec<_> = renames.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "renamed into twice: {twice:?}");
    assert_eq!(renames.len(), JOBS, "one rename per file");
    srv.assert_no_temp_files();
    for i in 0..JOBS {
        support::assert_same_file(
            base.join("data").join(format!("f{i:03}.bin")),
            srv.path(&format!("d{}/f{i:03}.bin", i % 8)),
        );
    }
    for r in (0..JOBS).map(|i| support::receipt_now(&checked, &format!("job{i:03}")).unwrap()) {
        let v: Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "done");
    }
    eprintln!(
        "{taken_over} jobs taken over ({} held by the victim); {in_flight} journals open at the kill",
        orphans.len()
    );
    for mut i in instances {
        let _ = i.kill().await;
    }
}

/// Instances started with one configuration all run (issue 24): the first
/// takes `status.listen`, the others listen on a free port of the same
/// address and say so; each is advertised in `ftpdrop-instances/`, answers
/// there, and `ftpdrop status` lists every job. Before, instances 2 and 3
/// exited at start with "address already in use".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_one_config_all_start_and_are_all_seen() {
    let srv = FtpServer::start().await;
    let proxy = FaultProxy::start(srv.addr).await;
    // Slow enough that jobs are running while the instances are asked.
    proxy.throttle(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (inbox, checked) = (base.join("files"), base.join("checked"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&checked).unwrap();
    // One fixed port for all three, as the default 127.0.0.1:9180 would be.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = base.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "inbox": inbox, "checked": checked, "settle_ms": 50, "sweep_interval_ms": 300,
            "status": {"listen": format!("127.0.0.1:{port}")},
            "max_concurrent_jobs": 2,
            // 3 instances x 2 jobs would open 6 sessions; the seats in
            // checked/ keep all three to the server's 2.
            "max_connections_per_server": 2,
        }))
        .unwrap(),
    )
    .unwrap();
    let jobs = 12;
    for i in 0..jobs {
        let local = base.join("data").join(format!("f{i:02}.bin"));
        support::write_random_file(&local, 1 << 20, i as u64);
        let job = json!([{
            "server": {"host": "127.0.0.1", "port": proxy.addr.port(), "login": srv.user, "password": srv.password},
            "file": {"local_path": local, "server_path": "many"}
        }]);
        let tmp = inbox.join(format!(".job{i:02}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&job).unwrap()).unwrap();
        std::fs::rename(&tmp, inbox.join(format!("job{i:02}.json"))).unwrap();
    }
    let mut instances: Vec<_> = (0..3)
        .map(|n| start_instance(&cfg, &base.join(format!("instance{n}.log"))))
        .collect();
    let logs = || {
        (0..3)
            .map(|n| {
                std::fs::read_to_string(base.join(format!("instance{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let folder = base.join("ftpdrop-instances");
    let advertised = || ftpdrop::status::instances::list(&checked);
    assert!(
        support::wait_until(Duration::from_secs(30), || advertised().len() == 3).await,
        "not 3 instances advertised: {:?}\n{}",
        advertised(),
        logs()
    );
    for (n, child) in instances.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "instance {n} exited at start:\n{}",
            logs()
        );
    }
    let mut addrs: Vec<std::net::SocketAddr> = advertised().iter().filter_map(|i| i.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert!(addrs.iter().any(|a| a.port() == port), "{addrs:?}");
    for a in &addrs {
        let r = support::http::get(*a, "/health");
        assert_eq!(r.status, 200, "{a}: {}", r.body);
    }
    assert!(logs().contains("status.listen is taken"), "{}", logs());
    let status = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
            .args(["status", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(
        support::wait_until(Duration::from_secs(120), || {
            (0..jobs).all(|i| {
                support::receipt_now(&checked, &format!("job{i:02}"))
                    .is_some_and(|r| r.state == ftpdrop::JobState::Done)
            })
        })
        .await,
        "not every job done within 120 s:\n{}",
        logs()
    );
    // libunftp answers the pipelining probe by losing replies and never
    // lets go of that session, even once the client has closed it (the
    // proxy still sees the server's side open): each such session is
    // the server's, on top of the limit the instances keep to.
    let wedged = logs()
        .matches("the server lost pipelined commands' replies")
        .count();
    assert!(
        proxy.control_live_max() <= 2 + wedged,
        "{} sessions at once at a server that 3 instances share with a limit of 2 \
         ({wedged} wedged by the server)",
        proxy.control_live_max(),
    );
    assert!(proxy.control_live_max() >= 1);
    let out = status();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for i in 0..jobs {
        assert!(
            text.contains(&format!("job{i:02}")),
            "job{i:02} missing:\n{text}"
        );
    }
    for mut child in instances {
        let pid = child.id().unwrap() as libc::pid_t;
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let left: Vec<_> = std::fs::read_dir(&folder)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "advertisements left after a clean stop: {left:?}"
    );
}
