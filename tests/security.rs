//! Trust boundaries (issue 9), end to end against an in-process libunftp
//! server: a job never borrows another job's login, local files are
//! confined to `local_roots`, hosts to `allowed_hosts`, and claimed jobs,
//! receipts and journals are readable by the daemon's user only.
//! Assertions are about what is on the server's disk and on the local one.

mod support;

use ftpdrop::report::{EntryState, JobState};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::daemon::{entry, Daemon};
use support::ftpserver::FtpServer;

/// A job of `n` entries under `dir/`, each its own local file.
fn job_of(d: &Daemon, srv: &FtpServer, dir: &str, n: usize, password: &str) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            let local = d.local(&format!("{dir}/{dir}-{i}.txt"), dir.as_bytes());
            let mut e = entry(srv, &local, dir);
            e["server"]["password"] = json!(password);
            e
        })
        .collect();
    Value::Array(entries)
}

fn assert_nothing_of(srv: &FtpServer, dir: &str) {
    let leaked: Vec<String> = srv
        .files()
        .into_iter()
        .filter(|f| f.starts_with(dir))
        .collect();
    assert!(
        leaked.is_empty() && !srv.path(dir).exists(),
        "the wrong-password job reached the server's disk: {leaked:?}"
    );
}

/// Issue 9, case 1: a wrong-password job arrived while a session that a
/// good job had logged in sat idle in the pool, and that session published
/// its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_never_borrows_an_idle_session() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let d = Daemon::start(dir, cfg);
    let good = job_of(&d, &srv, "good", 3, &srv.password);
    d.drop_job("good", &good);
    assert_eq!(d.receipt("good").await.state, JobState::Done);

    // The good session is idle in the pool now (idle_session_secs is 60).
    let bad = job_of(&d, &srv, "bad", 3, "Wr0ng-Passw0rd");
    d.drop_job("bad", &bad);
    let r = d.receipt("bad").await;
    assert_eq!(r.state, JobState::Failed, "{r:#?}");
    for e in &r.entries {
        assert_eq!(e.state, EntryState::Failed);
        assert!(e.error.as_deref().unwrap_or("").contains("530"), "{e:#?}");
    }
    assert_nothing_of(&srv, "bad");

    // The refusal touched neither the good session nor the good credentials.
    let logins = srv.count_logins();
    let again = job_of(&d, &srv, "again", 2, &srv.password);
    d.drop_job("again", &again);
    assert_eq!(d.receipt("again").await.state, JobState::Done);
    assert_eq!(
        srv.count_logins(),
        logins,
        "the good job reuses its idle session"
    );
    srv.assert_no_temp_files();
    d.stop().await;
}

/// Issue 9, case 2: a good job and a wrong-password job for the same login,
/// dropped together, so that sessions come and go while both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_dropped_together_with_a_good_job() {
    let srv = FtpServer::start().await;
    let (dir, cfg) = Daemon::prepare();
    let d = Daemon::start(dir, cfg);
    for round in 0..4 {
        let (good, bad) = (format!("good{round}"), format!("bad{round}"));
        let g = job_of(&d, &srv, &good, 6, &srv.password);
        let b = job_of(&d, &srv, &bad, 6, "Wr0ng-Passw0rd");
        // Interleaved: each job's entries ask for sessions while the other's are out.
        if round % 2 == 0 {
            d.drop_job(&good, &g);
            d.drop_job(&bad, &b);
        } else {
            d.drop_job(&bad, &b);
            d.drop_job(&good, &g);
        }
        let rg = d.receipt(&good).await;
        let rb = d.receipt(&bad).await;
        assert_eq!(rg.state, JobState::Done, "{rg:#?}");
        assert_eq!(rb.state, JobState::Failed, "{rb:#?}");
        assert_nothing_of(&srv, &bad);
        for i in 0..6 {
            assert_eq!(
                std::fs::read(srv.path(&format!("{good}/{good}-{i}.txt"))).unwrap(),
                good.as_bytes()
            );
        }
    }
    srv.assert_no_temp_files();
    d.stop().await;
}

#[cfg(unix)]
fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
