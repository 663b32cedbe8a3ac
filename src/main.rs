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
    /// Log output format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter, e.g. `info` or `ftpdrop=debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
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
    /// Check a configuration file and print the effective settings as JSON (secrets redacted).
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of job files or of the configuration.
    Schema {
        #[arg(value_enum)]
        what: SchemaKind,
    },
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
            logging::init(c.log_format, &c.log_level)?;
            let config = Config::load(c.config.as_deref())?;
            runtime()?.block_on(ftpdrop::run(config, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once(c) => {
            logging::init(c.log_format, &c.log_level)?;
            let config = Config::load(c.config.as_deref())?;
            let results = runtime()?.block_on(ftpdrop::once(config))?;
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
        Command::Schema { what } => {
            let schema = match what {
                SchemaKind::Job => ftpdrop::schema::job(),
                SchemaKind::Config => ftpdrop::schema::config(),
            };
            print!("{}", ftpdrop::schema::render(&schema));
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
        match e.open_local().and_then(|f| f.metadata()) {
            Ok(m) if m.is_dir() => problems.push(format!(
                "entries[{}].file.local_path: is a directory, not a file: {}",
                e.index,
                e.local_path.display()
            )),
            Ok(_) => {}
            Err(err) => {
                problems.push(ftpdrop::source::read_error(e.index, &e.local_path, err).message)
            }
        }
    }
    if problems.is_empty() {
        Ok(job.entries.len())
    } else {
        Err(problems)
    }
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
