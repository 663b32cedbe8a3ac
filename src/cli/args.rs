//! The command line as clap reads it, and how logging is set up from it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ftpdrop::config::LogFormat;
use ftpdrop::logging;
use ftpdrop::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ftpdrop",
    version,
    about = "Upload files named by JSON job files to FTP/FTPS servers, verified and crash-safe"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args)]
pub struct Common {
    /// Configuration file (JSON). Without it, every setting has its default.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Log output format [default: the config's `log.format`, else text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter, e.g. `info` or `ftpdrop=debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log to this file, rotated as the config's `log` section says (daily
    /// by default, the date appended to the name), instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Run under the Windows service manager (set by `service install`).
    #[cfg(windows)]
    #[arg(long, hide = true)]
    pub service: bool,
}

impl Common {
    /// Installs logging as the flags and the config's `log` section say;
    /// `default_dir` is where logs go when neither names a place (a Windows
    /// service has no stderr anyone reads).
    pub fn init_logging(
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
pub enum Command {
    /// Write a working configuration into a folder (default: this one):
    /// config.json with absolute inbox and checked folders beside it, and an
    /// example job to edit. Never overwrites.
    Init {
        /// The folder to set up.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the daemon: watch the inbox until SIGTERM or SIGINT.
    Run(Common),
    /// Process every job now in the inbox, wait for them, exit 0 only if all are done.
    Once(Common),
    /// Check job files without uploading anything; non-zero exit if any is invalid.
    Validate {
        /// Configuration (for named servers).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Job files (JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate job files and hand them to the daemon: written atomically into
    /// the inbox, or with --nats published to the configured JetStream
    /// subject (with a Nats-Msg-Id, so a resend is not a second job).
    /// Prints each job's name.
    Submit {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Publish to NATS (the config's `nats` section) instead of the inbox.
        #[arg(long)]
        nats: bool,
        /// Wait for each job's receipt to be final, showing progress; exit 0
        /// only if every job is done.
        #[arg(long)]
        wait: bool,
        /// Leave the jobs in the inbox even when no daemon runs on it (they
        /// wait for one to start); without it, that is an error.
        #[arg(long)]
        queue: bool,
        /// Job files (JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Jobs (running, then recent), or one job's entries with their progress:
    /// from the daemon's status API when it runs, else from the receipts.
    Status {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One job's name.
        job: Option<String>,
        /// How many jobs to list.
        #[arg(long, default_value_t = 30)]
        limit: usize,
    },
    /// Cancel a submitted job: entries not done end `cancelled`, their temp
    /// files are removed, nothing more is uploaded or disposed. Works
    /// whichever instance runs the job; waits for it to end (exit 3 if no
    /// daemon ended it in time: the next one to run it will).
    Cancel {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to wait for the job to end, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// The job's name (its file name, with or without .json).
        job: String,
    },
    /// Try a running job's waiting entries now, skipping the rest of their
    /// backoff (exit 3 if no daemon took the request within 5 s).
    Retry {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The job's name (its file name, with or without .json).
        job: String,
    },
    /// Print the dashboard's address with the API token in its fragment (the
    /// part a browser never sends); open it in a browser on this machine.
    Dashboard {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Rebuild the history index (`checked/ftpdrop-history.sqlite`) from the
    /// receipts. The daemon also brings it level at every start; this starts
    /// it from nothing (a copied or damaged index).
    Reindex {
        /// Configuration file (JSON); without it, the defaults (./files, ./checked).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Manpage,
    /// Check a configuration file and print the effective settings as JSON
    /// (secrets redacted); warnings (a CA file or password source that is
    /// not there, no confinement) go to stderr.
    CheckConfig {
        /// Configuration file (JSON).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Exit 1 when there is any warning, for deployment checks.
        #[arg(long)]
        strict: bool,
    },
    /// Manage the Windows service: install, uninstall, start, stop, status.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print the JSON Schema of job files or of the configuration.
    Schema {
        /// Which schema: job files or the configuration.
        #[arg(value_enum)]
        what: SchemaKind,
    },
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// Register `ftpdrop run --service --config FILE`, started at boot.
    Install {
        /// The service's configuration file, e.g. C:\ProgramData\ftpdrop\config.json.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stop (if running) and remove the service.
    Uninstall,
    /// Start the installed service.
    Start,
    /// Stop the service (uploads get the grace period).
    Stop,
    /// Print the service's state.
    Status,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SchemaKind {
    /// A job file.
    Job,
    /// The configuration file.
    Config,
}
