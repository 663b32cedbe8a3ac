//! Log output: human-readable or JSON lines, to stderr or to rotating files,
//! and the filter that keeps protocol traces (which contain
//! `PASS <password>`) out of every log.

use crate::config::{LogFormat, Rotation};
use anyhow::{anyhow, Context, Result};
use std::path::Path;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

const LEVELS: &str = "off, error, warn, info, debug, trace";

/// Checks a `--log-level`: a level, or comma-separated `target=level`
/// directives. `EnvFilter` reads a bare unknown word as a target name, so
/// `--log-level verbose` would silently log nothing at all.
pub fn check_level(level: &str) -> Result<()> {
    if level.trim().is_empty() {
        return Err(anyhow!(
            "--log-level is empty (one of {LEVELS}, or target=level)"
        ));
    }
    for part in level.split(',') {
        let part = part.trim();
        // Span filters (`target[span{field}]=level`) are EnvFilter's to judge.
        if part.contains('[') {
            continue;
        }
        let lvl = part.rsplit_once('=').map_or(part, |(_, l)| l);
        if lvl
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_err()
        {
            return Err(anyhow!(
                "--log-level {level:?}: {lvl:?} is not a level (one of {LEVELS}, or target=level)"
            ));
        }
    }
    Ok(())
}

/// Rotating files to log to, instead of stderr.
pub struct Files<'a> {
    pub dir: &'a Path,
    pub file_name: &'a str,
    pub rotation: Rotation,
    pub keep: usize,
}

/// Keeps the log file writer's thread alive; dropping it flushes the last lines.
pub type Guard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Installs the global subscriber. `level` is a level (`info`) or a filter
/// (`ftpdrop=debug`). With `files`, logs go to rotating files there.
pub fn init(format: LogFormat, level: &str, files: Option<Files>) -> Result<Guard> {
    check_level(level)?;
    // suppaftp traces every command it sends, PASS included, and logs parse
    // trouble we already handle (an odd FEAT) as errors: our own logs say what matters.
    let filter = EnvFilter::try_new(format!("{level},suppaftp=off"))
        .map_err(|e| anyhow!("--log-level {level:?}: {e}"))?;
    let (writer, guard, ansi) = match files {
        None => {
            // Colour codes only on a terminal: `once 2>file` must give a clean file.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            (BoxMakeWriter::new(std::io::stderr), None, ansi)
        }
        Some(f) => {
            std::fs::create_dir_all(f.dir)
                .with_context(|| format!("log.dir: cannot create {}", f.dir.display()))?;
            let rotation = match f.rotation {
                Rotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
                Rotation::Daily => tracing_appender::rolling::Rotation::DAILY,
                Rotation::Never => tracing_appender::rolling::Rotation::NEVER,
            };
            let mut b = tracing_appender::rolling::Builder::new()
                .rotation(rotation)
                .filename_prefix(f.file_name);
            if f.keep > 0 {
                b = b.max_log_files(f.keep);
            }
            let appender = b
                .build(f.dir)
                .with_context(|| format!("log.dir: cannot log to {}", f.dir.display()))?;
            let (nb, guard) = tracing_appender::non_blocking(appender);
            (BoxMakeWriter::new(nb), Some(guard), false)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    res.map_err(|e| anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters() {
        for ok in [
            "info",
            "DEBUG",
            "ftpdrop=debug",
            "warn,ftpdrop=trace",
            "off",
        ] {
            check_level(ok).unwrap();
        }
        for bad in ["verbose", "", "ftpdrop=loud", "info,chatty"] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }
}
