//! `run` and `once`: the daemon in a terminal, under systemd or as a
//! Windows service, with the signals and the reload around it.

use super::args::Common;
use anyhow::Result;
use ftpdrop::logging;
use ftpdrop::{Config, JobState};
use std::path::PathBuf;
use std::process::ExitCode;

/// `ftpdrop run`.
pub fn run(c: Common) -> Result<ExitCode> {
    logging::check_level(&c.log_level)?;
    let config = Config::load(c.config.as_deref())?;
    #[cfg(windows)]
    if c.service {
        let logs = ftpdrop::service::windows::default_log_dir();
        let _guard = c.init_logging(&config, Some(logs))?;
        let path = c.config.clone();
        ftpdrop::service::windows::run_as_service(Box::new(move |scm, stop| {
            serve(config, path, Some((scm, stop)))
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let _guard = c.init_logging(&config, None)?;
    serve(config, c.config.clone(), None)?;
    Ok(ExitCode::SUCCESS)
}

/// `ftpdrop once`.
pub fn once(c: Common) -> Result<ExitCode> {
    logging::check_level(&c.log_level)?;
    let config = Config::load(c.config.as_deref())?;
    let _guard = c.init_logging(&config, None)?;
    let results = super::runtime()?.block_on(async {
        let mut bars = None;
        let r = ftpdrop::run::daemon::once_with(config, |events| {
            bars = Some(ftpdrop::status::progress::follow(events));
        })
        .await;
        if let Some(b) = bars {
            // The stream ends with the daemon's last event; let it draw that.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            b.abort();
        }
        r
    })?;
    let mut ok = true;
    for (job, state) in &results {
        println!(
            "{job}: {}",
            serde_json::to_value(state)?.as_str().unwrap_or("?")
        );
        ok &= *state == JobState::Done;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The daemon under whatever started it: the one wiring for a terminal,
/// systemd and the Windows service manager. `scm` is the Windows service
/// manager when it started us, with the token its Stop cancels; otherwise,
/// with `NOTIFY_SOCKET` set, systemd hears about readiness, reloads,
/// stopping, status and the watchdog, and SIGTERM/SIGINT stop the daemon (a
/// second one at once). On Unix, SIGHUP reloads the config file.
fn serve(
    config: Config,
    path: Option<PathBuf>,
    scm: Option<(
        std::sync::Arc<dyn ftpdrop::service::Supervisor>,
        tokio_util::sync::CancellationToken,
    )>,
) -> Result<()> {
    use ftpdrop::health::Health;
    use ftpdrop::run::daemon::Options;
    use ftpdrop::service::{Supervisor, Unsupervised};
    use std::sync::Arc;
    super::runtime()?.block_on(async move {
        let health = Arc::new(Health::default());
        let (stop, hurry): (BoxFuture, Option<BoxFuture>) = match &scm {
            Some((_, stop)) => (Box::pin(stop.clone().cancelled_owned()), None),
            None => {
                let (stop, hurry) = signals()?;
                (stop, Some(hurry))
            }
        };
        let supervisor: Arc<dyn Supervisor> = match scm {
            Some((scm, _)) => scm,
            #[cfg(unix)]
            None => match ftpdrop::service::systemd::Systemd::from_env() {
                Some(sd) => {
                    sd.spawn_watchdog(health.clone());
                    sd
                }
                None => Arc::new(Unsupervised),
            },
            #[cfg(not(unix))]
            None => Arc::new(Unsupervised),
        };
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        #[cfg(unix)]
        spawn_reload_on_hup(path, supervisor.clone(), reload_tx)?;
        #[cfg(not(unix))]
        let _ = (path, reload_tx);
        let opts = Options {
            supervisor,
            reload: Some(reload_rx),
            health,
            hurry,
            ..Options::default()
        };
        ftpdrop::run::daemon::run_with(config, stop, opts).await
    })
}

/// On SIGHUP, reads the config file again: a good one goes to the daemon,
/// a bad one is logged with its reason and the old one stays in force.
#[cfg(unix)]
fn spawn_reload_on_hup(
    path: Option<PathBuf>,
    supervisor: std::sync::Arc<dyn ftpdrop::service::Supervisor>,
    tx: tokio::sync::mpsc::UnboundedSender<Config>,
) -> Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            supervisor.reloading();
            match Config::load(path.as_deref()) {
                Ok(cfg) => {
                    if tx.send(cfg).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    tracing::error!(error = %why, "the new configuration is invalid; the old one stays in force");
                    supervisor.status(&format!("reload refused: {why}"));
                    supervisor.ready();
                }
            }
        }
    });
    Ok(())
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Two futures: the first completes on SIGTERM or SIGINT (Ctrl-C on
/// Windows), the second on the next one, which stops the daemon at once
/// instead of waiting for the grace period.
fn signals() -> Result<(BoxFuture, BoxFuture)> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
    #[cfg(unix)]
    let mut term = {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?
    };
    tokio::spawn(async move {
        let mut first = Some(first_tx);
        loop {
            #[cfg(unix)]
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            match first.take() {
                Some(tx) => {
                    tracing::info!("shutdown signal received");
                    let _ = tx.send(());
                }
                None => {
                    tracing::warn!("second shutdown signal: stopping at once");
                    let _ = second_tx.send(());
                    return;
                }
            }
        }
    });
    Ok((
        Box::pin(async {
            let _ = first_rx.await;
        }),
        Box::pin(async {
            let _ = second_rx.await;
        }),
    ))
}
