//! Log output: human-readable or JSON lines, and the filter that keeps
//! protocol traces (which contain `PASS <password>`) out of every log.

use anyhow::{anyhow, Result};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is a level (`info`) or a filter (`ftpdrop=debug`).
pub fn init(format: LogFormat, level: &str) -> Result<()> {
    // suppaftp traces every command it sends, PASS included, and logs parse
    // trouble we already handle (an odd FEAT) as errors: our own logs say what matters.
    let filter = EnvFilter::try_new(format!("{level},suppaftp=off"))
        .map_err(|e| anyhow!("--log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    res.map_err(|e| anyhow!("cannot install the logger: {e}"))
}
