//! `validate` and `check-config`: what a job file or a configuration would
//! do, said without doing it; `init`, a configuration to start from.

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
    let mut job = ftpdrop::job::parse(&bytes, config)?;
    let mut problems = Vec::new();
    // Names as a claim now would expand them (a marker that would take a
    // file's name, a name the job's own name makes invalid).
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(p) = ftpdrop::job::plan::plan(
        &mut job,
        chrono::Local::now(),
        &name,
        Path::new("/nonexistent"),
        None,
    ) {
        problems.extend(p);
    }
    for e in job.entries.iter().filter(|e| e.is_data()) {
        // Opened as the upload would open it, so `local_roots` is applied.
        match e.open_local() {
            Ok(_) => {}
            Err(err) => problems
                .push(ftpdrop::upload::source::read_error(e.index, &e.local_path, err).message),
        }
    }
    if problems.is_empty() {
        Ok(job.entries.iter().filter(|e| e.is_data()).count())
    } else {
        Err(problems)
    }
}

/// `ftpdrop init DIR`: a configuration that works as written (absolute
/// folders beside it, the dashboard on loopback) and a job to edit.
pub fn init(dir: &Path) -> Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let config = dir.join("config.json");
    let job = dir.join("example-job.json");
    for f in [&config, &job] {
        if f.exists() {
            anyhow::bail!("{} exists already; init never overwrites", f.display());
        }
    }
    let settings = serde_json::json!({
        "inbox": dir.join("files"),
        "checked": dir.join("checked"),
        "status": {"listen": "127.0.0.1:9180"},
        "// next": "every setting, with its default: ftpdrop schema config, or config.example.json in the sources",
    });
    let example = serde_json::json!({
        "server": {"host": "ftp.example.com", "port": 21, "login": "me", "password": "secret"},
        "file": {"local_path": dir.join("hello.txt"), "server_path": "incoming"}
    });
    let write = |path: &Path, v: &serde_json::Value| -> Result<()> {
        let mut text = serde_json::to_string_pretty(v)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(&config, &settings)?;
    write(&job, &example)?;
    // Checked as the daemon will read it.
    Config::load(Some(&config))?;
    let c = config.display();
    println!("wrote {c}");
    println!("wrote {} (edit the server and the file)", job.display());
    println!();
    println!("  ftpdrop run --config {c} &");
    println!("  ftpdrop submit --config {c} --wait {}", job.display());
    println!("  ftpdrop dashboard --config {c}");
    Ok(ExitCode::SUCCESS)
}
