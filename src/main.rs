//! The `ftpdrop` command: parses the arguments and hands each command to
//! its module in [`cli`].

mod cli;

use clap::Parser;
use cli::args::{Cli, Command};
use ftpdrop::intake::request::Request;
use std::process::ExitCode;

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ftpdrop: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(args: Cli) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init { dir } => cli::check::init(&dir),
        Command::Run(c) => cli::daemon::run(c),
        Command::Once(c) => cli::daemon::once(c),
        Command::Validate { config, files } => cli::check::validate(config.as_deref(), &files),
        Command::CheckConfig { config, strict } => cli::check::config(config.as_deref(), strict),
        Command::Submit {
            config,
            nats,
            wait,
            queue,
            files,
        } => cli::submit::submit(
            config.as_deref(),
            cli::submit::Handing { nats, wait, queue },
            &files,
        ),
        Command::Status { config, job, limit } => {
            cli::status::status(config.as_deref(), job.as_deref(), limit)
        }
        Command::Cancel { config, job, wait } => cli::control::run(
            config.as_deref(),
            &job,
            Request::Cancel,
            std::time::Duration::from_secs(wait),
        ),
        Command::Retry { config, job } => cli::control::run(
            config.as_deref(),
            &job,
            Request::Retry,
            cli::control::RETRY_WAIT,
        ),
        Command::Dashboard { config } => cli::status::dashboard(config.as_deref()),
        Command::Reindex { config } => cli::tools::reindex(config.as_deref()),
        Command::Completions { shell } => cli::tools::completions(shell),
        Command::Manpage => cli::tools::manpage(),
        Command::Schema { what } => cli::tools::schema(what),
        Command::Service { action } => cli::service::service(action),
    }
}
