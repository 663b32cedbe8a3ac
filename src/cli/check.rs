//! `validate` and `check-config`: what a job file or a configuration would
//! do, said without doing it.

use anyhow::Result;
use ftpdrop::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `ftpdrop validate`.
pub fn validate(config: Option<&Path>, files: &[PathBuf]) -> Result<ExitCode> {
    let config = match config {
        Some(p) => Config::load(Some(p))?,
        None => Config::default(),
    };
    let mut ok = true;
    for f in files {
        match validate_file(f, &config) {
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

/// `ftpdrop check-config`: with `strict`, a warning fails it too (exit 1).
pub fn config(config: Option<&Path>, strict: bool) -> Result<ExitCode> {
    let cfg = Config::load(config)?;
    let warnings = cfg.warnings();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    // Secrets serialize as "***".
    println!("{}", serde_json::to_string_pretty(&cfg)?);
    if strict && !warnings.is_empty() {
        eprintln!(
            "configuration valid, with {} warning(s) (--strict)",
            warnings.len()
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!("configuration OK");
    Ok(ExitCode::SUCCESS)
}

/// The checks the daemon would make before uploading, plus the local files'
/// existence (`validate`, and `submit` before it hands a job over).
pub(super) fn validate_file(path: &Path, config: &Config) -> Result<usize, Vec<String>> {
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
