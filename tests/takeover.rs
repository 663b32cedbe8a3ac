//! Several instances on one inbox (issue 12): when one dies, the survivors
//! take its jobs over and finish them from its journal, without it ever
//! coming back. Three real processes, a few hundred jobs, `kill -9` of one
//! of them mid-run; the FTP traffic goes through a proxy that records every
//! command, the "transfer log" that shows no file renamed into its final
//! name twice.
#![cfg(unix)]

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
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
    let victim = instances.remove(0);
    let pid = victim.id().unwrap() as libc::pid_t;
    // SAFETY: killing our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
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
    let victim_log = std::fs::read_to_string(base.join("instance0.log")).unwrap_or_default();
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
    assert!(
        taken_over > 0,
        "no job was taken over ({in_flight} journals at the kill); victim's log tail:\n{}",
        victim_log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The transfer log: each final name is renamed into exactly once.
    let mut renames: HashMap<String, usize> = HashMap::new();
    for c in proxy.commands_with_verb("RNTO") {
        *renames.entry(c["RNTO ".len()..].to_string()).or_default() += 1;
    }
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
    eprintln!("{taken_over} jobs taken over; {in_flight} journals open at the kill");
    for mut i in instances {
        let _ = i.kill().await;
    }
}
