//! Issue 15, part 1: the source is deleted or moved only after its verified
//! publish is journaled; a crash in between is settled at the next start
//! without uploading again; failed entries and changed files keep their
//! source. Real uploads to a real FTP server (libunftp), checked on its disk.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::daemon::entry;
use support::ftpserver::FtpServer;

fn config(base: &Path, srv: &FtpServer) -> ftpdrop::Config {
    let mut cfg = support::daemon_config(base);
    cfg.settle_ms = 0;
    // A named server: its password is in the config, so claimed jobs keep
    // nothing to redact and can be edited into a crash state below.
    cfg.servers = serde_json::from_value(json!({"srv": {
        "host": "127.0.0.1", "port": srv.addr.port(), "login": srv.user, "password": srv.password,
    }}))
    .unwrap();
    cfg
}

fn named(local: &Path, dir: &str) -> Value {
    json!({"server": "srv", "file": {"local_path": local, "server_path": dir}})
}

fn drop_job(cfg: &ftpdrop::Config, name: &str, job: &Value) {
    std::fs::write(
        cfg.inbox.join(format!("{name}.json")),
        serde_json::to_vec(job).unwrap(),
    )
    .unwrap();
}

fn receipt(cfg: &ftpdrop::Config, job: &str) -> Value {
    serde_json::from_slice(&std::fs::read(cfg.checked.join(format!("{job}.report.json"))).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_move_only_after_the_verified_publish() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv);
    let (a, b, c) = (
        dir.path().join("out/a.bin"),
        dir.path().join("out/b.bin"),
        dir.path().join("out/c.bin"),
    );
    for (i, p) in [&a, &b, &c].iter().enumerate() {
        support::write_random_file(p, 50_000 + i as u64, i as u64);
    }
    let archive = dir.path().join("archive");
    // A file of that name is already archived: never overwritten.
    support::write_file(archive.join("b.bin"), b"an older b.bin");
    let want_b = std::fs::read(&b).unwrap();
    let job = json!({"after": "delete", "entries": [
        named(&a, "d"),
        {"server": "srv", "file": {"local_path": b, "server_path": "d"}, "after": {"move_to": archive}},
        {"server": "srv", "file": {"local_path": c, "server_path": "d"}, "after": "keep"},
    ]});
    drop_job(&cfg, "disp", &job);
    let states = ftpdrop::once(cfg.clone()).await.unwrap();
    assert_eq!(states, vec![("disp".to_string(), ftpdrop::JobState::Done)]);
    for name in ["a.bin", "b.bin", "c.bin"] {
        assert!(
            srv.path(&format!("d/{name}")).exists(),
            "{name} on the server"
        );
    }
    support::assert_same_file(archive.join("b-1.bin"), srv.path("d/b.bin"));
    assert_eq!(std::fs::read(archive.join("b-1.bin")).unwrap(), want_b);
    assert_eq!(
        std::fs::read(archive.join("b.bin")).unwrap(),
        b"an older b.bin"
    );
    assert!(!a.exists() && !b.exists(), "deleted and moved");
    assert!(c.exists(), "kept");
    let r = receipt(&cfg, "disp");
    assert_eq!(r["entries"][0]["disposal"]["state"], "deleted");
    assert_eq!(r["entries"][1]["disposal"]["state"], "moved");
    assert_eq!(
        r["entries"][1]["disposal"]["to"].as_str(),
        Some(archive.join("b-1.bin").to_str().unwrap())
    );
    assert!(
        r["entries"][2].get("disposal").is_none(),
        "kept: nothing to say"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_entry_keeps_its_source() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &srv);
    let local = dir.path().join("out/f.bin");
    support::write_random_file(&local, 10_000, 9);
    let mut e = entry(&srv, &local, "f");
    e["server"]["password"] = json!("wrong");
    e["after"] = json!("delete");
    drop_job(&cfg, "fail", &json!([e]));
    let states = ftpdrop::once(cfg.clone()).await.unwrap();
    assert_eq!(states[0].1, ftpdrop::JobState::Failed);
    assert!(local.exists(), "a failed entry keeps its source");
    assert!(receipt(&cfg, "fail")["entries"][0]
        .get("disposal")
        .is_none());
}

/// Runs a job with `after: keep`, then puts `checked/` back into the state a
/// crash leaves: the receipt `running` and its journal, the entry published
/// with its disposal `step` recorded and not finished, the job asking for
/// `after`.
async fn crashed_after_publish(
    srv: &FtpServer,
    base: &Path,
    after: Value,
    step: Value,
) -> (ftpdrop::Config, std::path::PathBuf) {
    let cfg = config(base, srv);
    let local = base.join("out/x.bin");
    support::write_random_file(&local, 30_000, 5);
    drop_job(&cfg, "crash", &json!([named(&local, "x")]));
    assert_eq!(
        ftpdrop::once(cfg.clone()).await.unwrap()[0].1,
        ftpdrop::JobState::Done
    );
    let job_file = cfg.checked.join("crash.json");
    let mut job: Value = serde_json::from_slice(&std::fs::read(&job_file).unwrap()).unwrap();
    job[0]["after"] = after;
    std::fs::write(&job_file, serde_json::to_vec(&job).unwrap()).unwrap();
    let mut r = receipt(&cfg, "crash");
    r["state"] = json!("running");
    r["finished_at"] = Value::Null;
    r["entries"][0]["disposal"] = step;
    std::fs::write(
        cfg.checked.join("crash.report.json"),
        serde_json::to_vec(&r).unwrap(),
    )
    .unwrap();
    // A job cut off keeps its journal (removed only after the final receipt).
    std::fs::write(cfg.checked.join("crash.journal"), "").unwrap();
    (cfg, local)
}

/// A crash (kill -9) between the journaled publish and the disposal: the
/// next start disposes of the source and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_publish_and_disposal_is_settled_without_uploading() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, local) = crashed_after_publish(
        &srv,
        dir.path(),
        json!("delete"),
        json!({"state": "pending"}),
    )
    .await;
    // The restart goes through a proxy that counts connections: none may come.
    let proxy = support::proxy::FaultProxy::start(srv.addr).await;
    cfg.servers.get_mut("srv").unwrap().port = proxy.addr.port();
    assert_eq!(
        ftpdrop::once(cfg.clone()).await.unwrap()[0].1,
        ftpdrop::JobState::Done
    );
    assert!(!local.exists(), "deleted at the restart");
    assert_eq!(proxy.control_connections(), 0, "nothing uploaded again");
    assert_eq!(
        receipt(&cfg, "crash")["entries"][0]["disposal"]["state"],
        "deleted"
    );
}

/// A crash between the move's link and its unlink: the restart finishes the
/// move to the name it chose, and makes no second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_move_is_finished_not_repeated() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let to = archive.join("x.bin");
    let (cfg, local) = crashed_after_publish(
        &srv,
        dir.path(),
        json!({"move_to": archive}),
        json!({"state": "moving", "to": to}),
    )
    .await;
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::hard_link(&local, &to).unwrap();
    assert_eq!(
        ftpdrop::once(cfg.clone()).await.unwrap()[0].1,
        ftpdrop::JobState::Done
    );
    assert!(!local.exists());
    assert_eq!(
        std::fs::read_dir(&archive).unwrap().count(),
        1,
        "one copy, no x-1.bin"
    );
    support::assert_same_file(&to, srv.path("x/x.bin"));
    let r = receipt(&cfg, "crash");
    assert_eq!(r["entries"][0]["disposal"]["state"], "moved");
}

/// A source that changed after it was sent is not disposed of; the receipt says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_after_sending_is_kept() {
    let srv = FtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, local) = crashed_after_publish(
        &srv,
        dir.path(),
        json!("delete"),
        json!({"state": "pending"}),
    )
    .await;
    support::write_random_file(&local, 31_000, 6);
    assert_eq!(
        ftpdrop::once(cfg.clone()).await.unwrap()[0].1,
        ftpdrop::JobState::Done
    );
    assert!(local.exists(), "changed: kept");
    let d = &receipt(&cfg, "crash")["entries"][0]["disposal"];
    assert_eq!(d["state"], "kept");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("changed after it was sent"),
        "{d}"
    );
}

#[test]
fn bad_after_values_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ftpdrop::Config::default();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(&roots).unwrap();
    cfg.local_roots = vec![roots.clone()];
    let e = |after: Value| {
        json!([{"server": {"host": "h", "login": "u", "password": "p"},
                "file": {"local_path": roots.join("f"), "server_path": "x"}, "after": after}])
    };
    let problems = |job: Value| {
        ftpdrop::job::parse(&serde_json::to_vec(&job).unwrap(), &cfg)
            .unwrap_err()
            .join("\n")
    };
    assert!(problems(e(json!("shred")))
        .contains("entries[0].after: \"shred\" is not one of keep, delete"));
    assert!(problems(e(json!({"move_to": "rel/dir"})))
        .contains("entries[0].after: move_to rel/dir: must be an absolute path"));
    let p = problems(e(json!({"move_to": "/etc/archive"})));
    assert!(
        p.contains("entries[0].after: move_to: outside local_roots"),
        "{p}"
    );
    assert!(problems(json!({"after": 3, "entries": e(json!("keep"))})).contains("after: must be"));
    let ok = ftpdrop::job::parse(
        &serde_json::to_vec(&e(json!({"move_to": roots.join("archive")}))).unwrap(),
        &cfg,
    );
    assert!(ok.is_ok(), "{ok:?}");
}

/// `move_to` on another filesystem (tmpfs /dev/shm, where it is one): a
/// copy, fsync, link into place, unlink.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_to_another_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let dir = tempfile::tempdir().unwrap();
    let other = match tempfile::tempdir_in(shm) {
        Ok(d)
            if std::fs::metadata(d.path()).unwrap().dev()
                != std::fs::metadata(dir.path()).unwrap().dev() =>
        {
            d
        }
        _ => {
            eprintln!(
                "/dev/shm is on the same filesystem as the temp folder here; nothing to check"
            );
            return;
        }
    };
    let srv = FtpServer::start().await;
    let cfg = config(dir.path(), &srv);
    let local = dir.path().join("out/m.bin");
    support::write_random_file(&local, 70_000, 3);
    let want = std::fs::read(&local).unwrap();
    let mut e = named(&local, "m");
    e["after"] = json!({"move_to": other.path().join("arch")});
    drop_job(&cfg, "xfs", &json!([e]));
    assert_eq!(
        ftpdrop::once(cfg.clone()).await.unwrap()[0].1,
        ftpdrop::JobState::Done
    );
    assert!(!local.exists());
    assert_eq!(
        std::fs::read(other.path().join("arch/m.bin")).unwrap(),
        want
    );
    assert_eq!(
        std::fs::read_dir(other.path().join("arch"))
            .unwrap()
            .count(),
        1,
        "no temp file left"
    );
}

/// Issue 19: a folder swapped for a symlink after its file was sent. The
/// attacker copies the file's size and mtime to a file outside
/// `local_roots`, then swaps the source's folder (and the `move_to` folder)
/// for symlinks to outside. Deleting, or moving into, the swapped folder
/// used to touch the outside files; disposal now keeps the source, and the
/// outside stays as it was. (A swap during the upload fails the entry at
/// its second look at the file, before any disposal.)
#[cfg(unix)]
#[test]
fn a_folder_swapped_for_a_symlink_leads_disposal_nowhere() {
    use ftpdrop::report::{Disposal, DisposalState, Stamp};
    const SIZE: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    let mut cfg = ftpdrop::Config {
        local_roots: vec![root.clone()],
        ..Default::default()
    };
    cfg.servers = serde_json::from_value(json!({"srv": {
        "host": "127.0.0.1", "port": 21, "login": "u", "password": "p",
    }}))
    .unwrap();
    let mut sent = Vec::new();
    for job in ["del", "mv"] {
        let src = root.join(job).join("f.bin");
        support::write_random_file(&src, SIZE, 7);
        // The outside twin: same name, size and mtime.
        let twin = outside.join(job).join("f.bin");
        support::write_random_file(&twin, SIZE, 8);
        let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&twin)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        sent.push(Stamp::of(&std::fs::metadata(&src).unwrap()));
    }
    std::fs::create_dir_all(root.join("archive")).unwrap();
    std::fs::create_dir_all(outside.join("archive")).unwrap();
    let jobs = [
        json!({"after": "delete", "entries": [named(&root.join("del/f.bin"), "d")]}),
        json!({"after": {"move_to": root.join("archive")},
               "entries": [named(&root.join("mv/f.bin"), "m")]}),
    ];
    let entries: Vec<_> = jobs
        .iter()
        .map(|j| {
            ftpdrop::job::parse(&serde_json::to_vec(j).unwrap(), &cfg)
                .unwrap()
                .entries
                .remove(0)
        })
        .collect();
    // The upload is over; the swap comes before the disposal.
    for d in ["del", "mv", "archive"] {
        std::fs::rename(root.join(d), root.join(format!("{d}-real"))).unwrap();
        std::os::unix::fs::symlink(outside.join(d), root.join(d)).unwrap();
    }
    let pending = Disposal {
        state: DisposalState::Pending,
        to: None,
        reason: None,
    };
    for (job, (entry, stamp)) in ["del", "mv"].iter().zip(entries.iter().zip(sent)) {
        let d = ftpdrop::upload::dispose::dispose(entry, Some(stamp), &pending, |_| {});
        assert_eq!(d.state, DisposalState::Kept, "{job}: {d:?}");
        assert!(
            d.reason
                .as_deref()
                .unwrap_or("")
                .contains("outside local_roots"),
            "{job}: {d:?}"
        );
        assert!(
            outside.join(job).join("f.bin").exists(),
            "{job}: the outside twin is untouched"
        );
    }
    assert_eq!(
        std::fs::read_dir(outside.join("archive")).unwrap().count(),
        0,
        "nothing was moved outside"
    );
    assert!(root.join("del-real/f.bin").exists() && root.join("mv-real/f.bin").exists());
}
