//! `status` and `dashboard`: what a daemon (or, without one, the receipts)
//! says about the jobs, and where its dashboard is.

use anyhow::{Context, Result};
use ftpdrop::Config;
use std::path::Path;
use std::process::ExitCode;

/// `ftpdrop status [JOB]`.
pub fn status(config: Option<&Path>, job: Option<&str>, limit: usize) -> Result<ExitCode> {
    let config = &Config::load(config)?;
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

/// `ftpdrop dashboard`.
pub fn dashboard(config: Option<&Path>) -> Result<ExitCode> {
    let config = Config::load(config)?;
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
