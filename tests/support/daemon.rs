//! A daemon running in-process, on temporary `files/` and `checked/`, and
//! job entries for the in-process FTP server.

use super::ftpserver::FtpServer;
use ftpdrop::report::Receipt;
use ftpdrop::Config;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// A daemon running in-process on temporary `files/` and `checked/`.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    pub checked: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Where the status API listens, once it does.
    status: std::sync::Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// The API's token file.
    pub token_file: PathBuf,
}

impl Daemon {
    pub fn prepare() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::daemon_config(dir.path());
        (dir, cfg)
    }

    pub fn start(dir: tempfile::TempDir, cfg: Config) -> Daemon {
        let (tx, rx) = oneshot::channel::<()>();
        let inbox = cfg.inbox.clone();
        let checked = cfg.checked.clone();
        let token_file = cfg
            .status
            .token_file
            .clone()
            .unwrap_or_else(|| ftpdrop::status::auth::default_token_file(&cfg.checked));
        let opts = ftpdrop::run::daemon::Options::default();
        let status = opts.status_addr.clone();
        let task = tokio::spawn(ftpdrop::run::daemon::run_with(
            cfg,
            async {
                let _ = rx.await;
            },
            opts,
        ));
        Daemon {
            dir,
            inbox,
            checked,
            stop: Some(tx),
            task: Some(task),
            status,
            token_file,
        }
    }

    /// The status API's address (waits for it to listen).
    pub async fn api(&self) -> std::net::SocketAddr {
        for _ in 0..500 {
            if let Some(a) = self.status.get() {
                super::http::register(*a, self.token_file.clone());
                return *a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the status API did not start listening");
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("daemon stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }

    /// Drops a job the way a careful producer does: write a hidden temp, rename in.
    pub fn drop_job(&self, name: &str, job: &Value) {
        let tmp = self.inbox.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(job).unwrap()).unwrap();
        std::fs::rename(&tmp, self.inbox.join(format!("{name}.json"))).unwrap();
    }

    pub fn local(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("local").join(rel);
        super::write_file(&p, bytes);
        p
    }

    pub async fn receipt(&self, job: &str) -> Receipt {
        super::wait_receipt(&self.checked, job, Duration::from_secs(60)).await
    }
}

pub fn server_json(srv: &FtpServer) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": srv.addr.port().to_string(),
        "login": srv.user,
        "password": srv.password,
    })
}

pub fn entry(srv: &FtpServer, local: &Path, server_path: &str) -> Value {
    json!({
        "server": server_json(srv),
        "file": {"local_path": local.to_string_lossy(), "server_path": server_path}
    })
}
