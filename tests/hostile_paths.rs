//! Issue 19, part 2: paths a hostile job file (or inbox writer) names never
//! block the daemon, never stream without bound, and are never followed.
//! The in-process daemon with its defaults (no `local_roots`), a real FTP
//! server; each case hung or leaked before.

#![cfg(unix)]

mod support;

use ftpdrop::report::{EntryState, JobState};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::daemon::{entry, Daemon};
use support::ftpserver::FtpServer;

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// FIFOs (one per runtime worker and more) and `/dev/zero` as `local_path`:
/// each entry fails at once, naming the field and what the path is; a good
/// job beside them is done, and the API still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_as_local_path_fail_without_blocking() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let fifos: Vec<_> = (0..4)
        .map(|i| {
            let p = dir.path().join(format!("fifo{i}"));
            mkfifo(&p);
            p
        })
        .collect();
    let good = dir.path().join("good.txt");
    support::write_file(&good, b"still uploading");
    let d = Daemon::start(dir, cfg);
    let api = d.api().await;
    for (i, f) in fifos.iter().enumerate() {
        d.drop_job(&format!("fifo{i}"), &json!([entry(&srv, f, "x")]));
    }
    d.drop_job("zero", &json!([entry(&srv, Path::new("/dev/zero"), "x")]));
    d.drop_job("good", &json!([entry(&srv, &good, "ok")]));
    let limit = Duration::from_secs(30);
    let r = tokio::time::timeout(limit, d.receipt("good"))
        .await
        .expect("a good job beside FIFOs ends");
    assert_eq!(r.state, JobState::Done);
    assert_eq!(
        std::fs::read(srv.path("ok/good.txt")).unwrap(),
        b"still uploading"
    );
    for (job, what) in [
        ("fifo0", "FIFO"),
        ("fifo3", "FIFO"),
        ("zero", "character device"),
    ] {
        let r = tokio::time::timeout(limit, d.receipt(job))
            .await
            .expect("ends");
        assert_eq!(r.state, JobState::Failed, "{job}");
        let e = &r.entries[0];
        assert_eq!(e.state, EntryState::Failed);
        let err = e.error.clone().unwrap_or_default();
        assert!(
            err.contains("entries[0].file.local_path") && err.contains(what),
            "{job}: {err}"
        );
        assert_eq!(e.attempts, 1, "permanent: {job}");
    }
    let h = tokio::task::spawn_blocking(move || support::http::get(api, "/health"))
        .await
        .unwrap();
    assert_eq!(h.status, 200);
    assert!(
        srv.files().iter().all(|f| !f.starts_with("x")),
        "{:?}",
        srv.files()
    );
    d.stop().await;
}

/// A job's `ca_file` is read only if it is a small regular file: `/dev/zero`
/// took the daemon to 1.6 GiB. And with `local_roots`, it must lie under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_ca_file_is_confined_and_capped() {
    let srv = FtpServer::start().await;
    let (dir, mut cfg) = Daemon::prepare();
    let local = dir.path().join("data/f.txt");
    support::write_file(&local, b"x");
    let mut e = entry(&srv, &local, "ca");
    e["server"]["tls"] = json!("explicit");
    e["server"]["ca_file"] = json!("/dev/zero");
    let roots = vec![dir.path().join("data")];
    let d = Daemon::start(dir, cfg.clone());
    d.drop_job("zero", &json!([e.clone()]));
    let r = tokio::time::timeout(Duration::from_secs(30), d.receipt("zero"))
        .await
        .expect("ends");
    assert_ne!(r.state, JobState::Done);
    let err = r.entries[0].error.clone().unwrap_or_default();
    assert!(
        err.contains("ca_file") && err.contains("character device"),
        "{err}"
    );
    d.stop().await;

    cfg.local_roots = roots;
    e["server"]["ca_file"] = json!("/etc/ssl/certs/ca-certificates.crt");
    let problems = ftpdrop::job::parse(&serde_json::to_vec(&json!([e])).unwrap(), &cfg)
        .expect_err("a CA file outside local_roots");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("ca_file") && p.contains("local_roots")),
        "{problems:?}"
    );
}

/// A symlink and a FIFO named like jobs in the inbox are set aside as
/// invalid, unopened: the symlink's target keeps its mode and content, and
/// intake goes on to the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_inbox_entries_are_set_aside_unfollowed() {
    use std::os::unix::fs::PermissionsExt;
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let target = dir.path().join("precious.json");
    std::fs::write(&target, b"[]").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&target, cfg.inbox.join("link.json")).unwrap();
    mkfifo(&cfg.inbox.join("pipe.json"));
    let local = dir.path().join("after.txt");
    support::write_file(&local, b"after the odd ones");
    let d = Daemon::start(dir, cfg.clone());
    for job in ["link", "pipe"] {
        let r = tokio::time::timeout(Duration::from_secs(20), d.receipt(job))
            .await
            .expect("set aside");
        assert_eq!(r.state, JobState::Invalid, "{job}");
        assert!(
            r.problems.iter().any(|p| p.contains("not a regular file")),
            "{job}: {:?}",
            r.problems
        );
        assert!(cfg.checked.join(format!("{job}.rejected")).exists());
    }
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "the target was not chmodded"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"[]");
    assert!(std::fs::symlink_metadata(cfg.checked.join("link.rejected"))
        .unwrap()
        .file_type()
        .is_symlink());
    d.drop_job("after", &json!([entry(&srv, &local, "after")]));
    let r = tokio::time::timeout(Duration::from_secs(30), d.receipt("after"))
        .await
        .expect("intake goes on");
    assert_eq!(r.state, JobState::Done);
    d.stop().await;
}
