//! The `ftpdrop` command: parses the CLI, sets up logging, calls the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ftpdrop::logging::{self, LogFormat};
use ftpdrop::{Config, JobState};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ftpdrop",
    version,
    about = "Upload files named by JSON job files to FTP/FTPS servers, verified and crash-safe"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Configuration file (JSON). Without it, every setting has its default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log output format [default: the config's `log.format`, else text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level or filter, e.g. `info` or `ftpdrop=debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log to this file, rotated as the config's `log` section says (daily
    /// by default, the date appended to the name), instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Run under the Windows service manager (set by `service install`).
    #[cfg(windows)]
    #[arg(long, hide = true)]
    service: bool,
}

impl Common {
    /// Installs logging as the flags and the config's `log` section say;
    /// `default_dir` is where logs go when neither names a place (a Windows
    /// service has no stderr anyone reads).
    fn init_logging(
        &self,
        config: &Config,
        default_dir: Option<PathBuf>,
    ) -> Result<logging::Guard> {
        let format = self
            .log_format
            .or(config.log.format)
            .unwrap_or(LogFormat::Text);
        let (dir, name) = match &self.log_file {
            Some(f) => (
                Some(
                    f.parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), PathBuf::from),
                ),
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| config.log.file_name.clone()),
            ),
            None => (
                config.log.dir.clone().or(default_dir),
                config.log.file_name.clone(),
            ),
        };
        let files = dir.as_deref().map(|dir| logging::Files {
            dir,
            file_name: &name,
            rotation: config.log.rotation,
            keep: config.log.keep,
        });
        logging::init(format, &self.log_level, files)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: watch the inbox until SIGTERM or SIGINT.
    Run(Common),
    /// Process every job now in the inbox, wait for them, exit 0 only if all are done.
    Once(Common),
    /// Check job files without uploading anything; non-zero exit if any is invalid.
    Validate {
        /// Configuration (for named servers).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate job files and hand them to the daemon: written atomically into
    /// the inbox, or with --nats published to the configured JetStream
    /// subject (with a Nats-Msg-Id, so a resend is not a second job).
    /// Prints each job's name.
    Submit {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Publish to NATS (the config's `nats` section) instead of the inbox.
        #[arg(long)]
        nats: bool,
        /// Wait for each job's receipt to be final, showing progress; exit 0
        /// only if every job is done.
        #[arg(long)]
        wait: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Jobs (running, then recent), or one job's entries with their progress:
    /// from the daemon's status API when it runs, else from the receipts.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One job's name.
        job: Option<String>,
        /// How many jobs to list.
        #[arg(long, default_value_t = 30)]
        limit: usize,
    },
    /// Print the dashboard's address with the API token in its fragment (the
    /// part a browser never sends); open it in a browser on this machine.
    Dashboard {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Rebuild the history index (`checked/ftpdrop-history.sqlite`) from the
    /// receipts. The daemon also brings it level at every start; this starts
    /// it from nothing (a copied or damaged index).
    Reindex {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Manpage,
    /// Check a configuration file and print the effective settings as JSON (secrets redacted).
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage the Windows service: install, uninstall, start, stop, status.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print the JSON Schema of job files or of the configuration.
    Schema {
        #[arg(value_enum)]
        what: SchemaKind,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Register `ftpdrop run --service --config FILE`, started at boot.
    Install {
        /// The service's configuration file, e.g. C:\ProgramData\ftpdrop\config.json.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stop (if running) and remove the service.
    Uninstall,
    Start,
    Stop,
    /// Print the service's state.
    Status,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaKind {
    Job,
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ftpdrop: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(c) => {
            logging::check_level(&c.log_level)?;
            let config = Config::load(c.config.as_deref())?;
            #[cfg(windows)]
            if c.service {
                let logs = ftpdrop::service::windows::default_log_dir();
                let _guard = c.init_logging(&config, Some(logs))?;
                ftpdrop::service::windows::run_as_service(config, c.config.clone())?;
                return Ok(ExitCode::SUCCESS);
            }
            let _guard = c.init_logging(&config, None)?;
            runtime()?.block_on(run_daemon(config, c.config.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once(c) => {
            logging::check_level(&c.log_level)?;
            let config = Config::load(c.config.as_deref())?;
            let _guard = c.init_logging(&config, None)?;
            let results = runtime()?.block_on(async {
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
        Command::Validate { config, files } => {
            let config = match &config {
                Some(p) => Config::load(Some(p))?,
                None => Config::default(),
            };
            let mut ok = true;
            for f in files {
                match validate_file(&f, &config) {
                    Ok(n) => println!("{}: valid ({n} entries)", f.display()),
                    Err(problems) => {
                        ok = false;
                        println!("{}: invalid", f.display());
                        for p in problems {
                            println!("  {p}");
                        }
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(config.as_deref())?;
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            // Secrets serialize as "***".
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            eprintln!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Service { action } => service(action),
        Command::Reindex { config } => {
            let config = Config::load(config.as_deref())?;
            let began = std::time::Instant::now();
            let rows = ftpdrop::report::rebuild_index(&config.checked)?;
            eprintln!(
                "history index rebuilt: {rows} jobs from {} in {:.1} s",
                config.checked.display(),
                began.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            config,
            nats,
            wait,
            files,
        } => {
            let config = Config::load(config.as_deref())?;
            runtime()?.block_on(submit(&config, nats, wait, &files))
        }
        Command::Status { config, job, limit } => {
            let config = Config::load(config.as_deref())?;
            status(&config, job.as_deref(), limit)
        }
        Command::Dashboard { config } => {
            let config = Config::load(config.as_deref())?;
            let Some(addr) = config.status.listen_addr()? else {
                anyhow::bail!("status.listen is null: the status API (and its dashboard) is off");
            };
            let path = config
                .status
                .token_file
                .clone()
                .unwrap_or_else(|| ftpdrop::status::auth::default_token_file(&config.checked));
            let token = ftpdrop::status::auth::load_or_create(&path, false).context(
                "the daemon makes the token at its first start; run this as its user once it has",
            )?;
            let host = if addr.ip().is_unspecified() {
                format!("127.0.0.1:{}", addr.port())
            } else {
                addr.to_string()
            };
            println!("http://{host}/#token={token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Rendered first: clap_complete panics if its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ftpdrop", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("cannot write the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { what } => {
            let schema = match what {
                SchemaKind::Job => ftpdrop::job::schema::job(),
                SchemaKind::Config => ftpdrop::job::schema::config(),
            };
            print!("{}", ftpdrop::job::schema::render(&schema));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The checks the daemon would make before uploading, plus the local files' existence.
fn validate_file(path: &std::path::Path, config: &Config) -> Result<usize, Vec<String>> {
    let meta = std::fs::metadata(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    if meta.len() > config.max_job_bytes {
        return Err(vec![format!(
            "the job file is {} bytes, over the limit of {} bytes (max_job_bytes)",
            meta.len(),
            config.max_job_bytes
        )]);
    }
    let bytes = std::fs::read(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let job = ftpdrop::job::parse(&bytes, config)?;
    let mut problems = Vec::new();
    for e in &job.entries {
        // Opened as the upload would open it, so `local_roots` is applied.
        match e.open_local() {
            Ok(_) => {}
            Err(err) => problems
                .push(ftpdrop::upload::source::read_error(e.index, &e.local_path, err).message),
        }
    }
    if problems.is_empty() {
        Ok(job.entries.len())
    } else {
        Err(problems)
    }
}

/// `ftpdrop submit`: validate, then the inbox (atomically) or NATS.
/// `ftpdrop status [JOB]`.
fn status(config: &Config, job: Option<&str>, limit: usize) -> Result<ExitCode> {
    use ftpdrop::status::client;
    match job {
        None => {
            let (jobs, source) = client::jobs(config, limit);
            if source == client::Source::Receipts {
                eprintln!(
                    "(no daemon answers on the status API; from the receipts in {})",
                    config.checked.display()
                );
            }
            print!("{}", client::jobs_table(&jobs));
        }
        Some(name) => {
            let Some((v, _)) = client::job(config, name) else {
                eprintln!(
                    "no job {name:?} (no receipt in {})",
                    config.checked.display()
                );
                return Ok(ExitCode::from(1));
            };
            println!("{}", client::summary_line(&v));
            print!("{}", client::job_table(&v));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for each job's receipt to be final, rendering progress from the
/// status API (or from the receipt when no daemon answers). True if all done.
async fn wait_for(config: &Config, names: &[String]) -> bool {
    use ftpdrop::events::Stage;
    use ftpdrop::status::client;
    use ftpdrop::status::progress::{Renderer, Update};
    let mut bars = Renderer::new();
    let mut pending: Vec<String> = names.to_vec();
    let mut all_done = true;
    while !pending.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for name in pending {
            let cfg = config.clone();
            let n = name.clone();
            let got = tokio::task::spawn_blocking(move || client::job(&cfg, &n))
                .await
                .ok()
                .flatten();
            let Some((v, _)) = got else {
                still.push(name);
                continue;
            };
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            bars.job(&name, entries.len());
            for (i, e) in entries.iter().enumerate() {
                let live = &v["progress"][i];
                let stage: Stage = serde_json::from_value(live["stage"].clone()).unwrap_or(match e
                    ["state"]
                    .as_str()
                {
                    Some("done") => Stage::Done,
                    Some("failed") => Stage::Failed,
                    Some("skipped") => Stage::Skipped,
                    _ => Stage::Queued,
                });
                let size = e["source"]["size"]
                    .as_u64()
                    .or(e["bytes"].as_u64())
                    .unwrap_or(0);
                let done_bytes = if stage == Stage::Done { size } else { 0 };
                bars.update(&Update {
                    job: name.clone(),
                    entry: i,
                    remote_path: e["remote_path"].as_str().unwrap_or("").to_string(),
                    stage,
                    sent: live["bytes_sent"].as_u64().unwrap_or(done_bytes),
                    total: live["bytes_total"].as_u64().unwrap_or(size),
                    rate_bps: live["rate_bps"].as_u64().unwrap_or(0),
                    error: e["error"].as_str().map(str::to_string),
                });
            }
            let state = v["state"].as_str().unwrap_or("running").to_string();
            if state == "running" {
                still.push(name);
            } else {
                bars.job_done(&name, &state);
                println!("{}", client::summary_line(&v));
                all_done &= state == "done";
            }
        }
        pending = still;
    }
    all_done
}

async fn submit(config: &Config, nats: bool, wait: bool, files: &[PathBuf]) -> Result<ExitCode> {
    let mut jobs = Vec::new();
    let mut ok = true;
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        if let Err(problems) = ftpdrop::job::parse(&bytes, config) {
            ok = false;
            println!("{}: invalid", f.display());
            for p in problems {
                println!("  {p}");
            }
            continue;
        }
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into());
        jobs.push((stem, bytes));
    }
    if !ok {
        return Ok(ExitCode::from(1));
    }
    if nats {
        let Some(n) = &config.nats else {
            anyhow::bail!("--nats: the configuration has no `nats` section");
        };
        let client = ftpdrop::intake::nats::connect(n).await?;
        let js = async_nats::jetstream::new(client);
        for (stem, bytes) in jobs {
            use sha2::Digest;
            // The same file submitted twice is one job (JetStream de-duplicates by id).
            let id = format!(
                "{stem}-{}",
                &hex::encode(sha2::Sha256::digest(&bytes))[..12]
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            js.publish_with_headers(n.subject.clone(), headers, bytes.into())
                .await
                .context("cannot publish the job")?
                .await
                .context("JetStream did not store the job")?;
            println!("{id}");
        }
    } else {
        let mut names = Vec::new();
        for (stem, bytes) in jobs {
            let name =
                ftpdrop::intake::submit::into_inbox(&config.inbox, &config.checked, &stem, &bytes)?;
            println!("{name}");
            names.push(name);
        }
        if wait && !wait_for(config, &names).await {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(windows)]
fn service(action: ServiceAction) -> Result<ExitCode> {
    use ftpdrop::service::windows as svc;
    match action {
        ServiceAction::Install { config } => {
            svc::install(&config)?;
            println!("service {} installed", svc::SERVICE_NAME);
        }
        ServiceAction::Uninstall => {
            svc::uninstall()?;
            println!("service {} removed", svc::SERVICE_NAME);
        }
        ServiceAction::Start => svc::start()?,
        ServiceAction::Stop => svc::stop()?,
        ServiceAction::Status => println!("{}", svc::status()?),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(windows))]
fn service(_: ServiceAction) -> Result<ExitCode> {
    anyhow::bail!(
        "`ftpdrop service` manages the Windows service; on Linux install the systemd unit \
         (packaging/systemd/ftpdrop.service, see the README's \"Install on Linux\")"
    )
}

/// `run` in a terminal or under systemd: SIGTERM/SIGINT stop it, SIGHUP
/// reloads the config file, and with `NOTIFY_SOCKET` set systemd hears
/// about readiness, reloads, stopping, status and the watchdog.
async fn run_daemon(config: Config, path: Option<PathBuf>) -> Result<()> {
    use ftpdrop::run::daemon::Options;
    use ftpdrop::run::health::Health;
    use ftpdrop::service::{Supervisor, Unsupervised};
    use std::sync::Arc;
    let health = Arc::new(Health::default());
    #[cfg(unix)]
    let supervisor: Arc<dyn Supervisor> = match ftpdrop::service::systemd::Systemd::from_env() {
        Some(sd) => {
            sd.spawn_watchdog(health.clone());
            sd
        }
        None => Arc::new(Unsupervised),
    };
    #[cfg(not(unix))]
    let supervisor: Arc<dyn Supervisor> = Arc::new(Unsupervised);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    spawn_reload_on_hup(path, supervisor.clone(), reload_tx)?;
    #[cfg(not(unix))]
    let _ = (path, reload_tx);
    let opts = Options {
        supervisor,
        reload: Some(reload_rx),
        health,
        ..Options::default()
    };
    ftpdrop::run::daemon::run_with(config, shutdown_signal(), opts).await
}

/// On SIGHUP, reads the config file again: a good one goes to the daemon,
/// a bad one is logged with its reason and the old one stays in force.
#[cfg(unix)]
fn spawn_reload_on_hup(
    path: Option<PathBuf>,
    supervisor: std::sync::Arc<dyn ftpdrop::service::Supervisor>,
    tx: tokio::sync::mpsc::UnboundedSender<Config>,
) -> Result<()> {
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

/// Completes on SIGTERM or SIGINT (Ctrl-C on Windows).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
