//! A newcomer's first run: an embedded FTP server, the daemon, one job.
//!
//! `cargo run --release --example demo` starts an in-process libunftp server
//! on a temporary folder, runs the ftpdrop daemon on temporary `files/` and
//! `checked/`, drops a job in the seeds' format (a Cyrillic file name into a
//! nested directory), waits for the receipt, prints it, and shows where the
//! file landed. No FTP server to install. Everything lives in temporary
//! folders that are gone when it exits; with `-- --keep` the server, the
//! daemon and its dashboard stay up until Ctrl-C, to look around.

#[path = "../tests/support/ftpserver.rs"]
#[allow(dead_code)]
mod ftpserver;

use anyhow::{bail, Context, Result};
use ftpdrop::{Config, Receipt};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let _logs = ftpdrop::logging::init(ftpdrop::config::LogFormat::Text, "info", None)?;
    let server = ftpserver::FtpServer::start().await;
    println!(
        "FTP server:   ftp://{}@{} serving {}",
        server.user,
        server.addr,
        server.root.display()
    );

    let work = tempfile::tempdir()?;
    let mut cfg = Config {
        inbox: work.path().join("files"),
        checked: work.path().join("checked"),
        ..Config::default()
    };
    // The status API on a free port (9180 may be taken on this machine).
    cfg.status.listen = Some("127.0.0.1:0".into());
    std::fs::create_dir_all(&cfg.inbox)?;
    std::fs::create_dir_all(&cfg.checked)?;
    println!("inbox:        {}", cfg.inbox.display());
    println!("checked:      {}", cfg.checked.display());

    let local = work.path().join("out").join("План отчёт 2024.txt");
    std::fs::create_dir_all(local.parent().unwrap())?;
    std::fs::write(
        &local,
        "Квартальный отчёт: всё загружено и проверено.\n".repeat(1000),
    )?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let checked = cfg.checked.clone();
    let inbox = cfg.inbox.clone();
    let opts = ftpdrop::run::daemon::Options::default();
    let api = opts.status_addr.clone();
    let daemon = tokio::spawn(ftpdrop::run::daemon::run_with(
        cfg,
        async {
            let _ = stop_rx.await;
        },
        opts,
    ));

    // The seeds' job format: port as a string, server_path a remote directory.
    let job = serde_json::json!([{
        "server": {
            "host": "127.0.0.1",
            "port": server.addr.port().to_string(),
            "login": server.user,
            "password": server.password
        },
        "file": {
            "local_path": local.to_string_lossy(),
            "server_path": "Отчёты/2024/квартал-4"
        }
    }]);
    // Producers should write a temporary name and rename it in, as here.
    let tmp = inbox.join(".demo.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&job)?)?;
    std::fs::rename(&tmp, inbox.join("demo.json"))?;
    println!("\ndropped job:  {}\n", inbox.join("demo.json").display());

    let receipt_path = checked.join("demo.report.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = Receipt::load(&receipt_path) {
            if r.state.is_final() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("no final receipt after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keep = std::env::args().any(|a| a == "--keep");
    if let Some(a) = api.get() {
        let token_file = ftpdrop::status::auth::default_token_file(&checked);
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        if keep {
            println!("dashboard:    http://{a}/#token={}", token.trim());
            println!("status API:   http://{a}/api/jobs/demo, http://{a}/metrics (Authorization: Bearer <the token above>)");
            println!("\nthe FTP server, the daemon and the dashboard stay up until Ctrl-C");
            tokio::signal::ctrl_c().await?;
        } else {
            println!(
                "status API:   served at http://{a}/ while the demo ran; to look at the dashboard, \
                 run it with `-- --keep`"
            );
        }
    }
    let _ = stop_tx.send(());
    daemon.await.context("daemon task")??;

    println!("\nreceipt ({}):", receipt_path.display());
    println!("{}", std::fs::read_to_string(&receipt_path)?);
    let landed = server.path("Отчёты/2024/квартал-4/План отчёт 2024.txt");
    let same = std::fs::read(&landed).ok() == Some(std::fs::read(&local)?);
    println!(
        "the file landed at {} ({})",
        landed.display(),
        if same { "byte-identical" } else { "DIFFERENT" }
    );
    if !same {
        bail!("uploaded file differs from the local one");
    }
    if !keep {
        println!("(the folders above were temporary and are gone now)");
    }
    Ok(())
}
