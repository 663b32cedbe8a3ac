//! `reindex`, `schema`, `completions` and `manpage`: the commands that
//! rebuild or print something beside the daemon.

use super::args::{Cli, SchemaKind};
use anyhow::{Context, Result};
use ftpdrop::Config;
use std::path::Path;
use std::process::ExitCode;

/// `ftpdrop reindex`.
pub fn reindex(config: Option<&Path>) -> Result<ExitCode> {
    let config = Config::load(config)?;
    let began = std::time::Instant::now();
    let rows = ftpdrop::report::rebuild_index(&config.checked)?;
    eprintln!(
        "history index rebuilt: {rows} jobs from {} in {:.1} s",
        config.checked.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ftpdrop completions`.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    use clap::CommandFactory;
    // Rendered first: clap_complete panics if its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ftpdrop", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Ok(ExitCode::SUCCESS)
}

/// `ftpdrop manpage`.
pub fn manpage() -> Result<ExitCode> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .context("cannot write the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// `ftpdrop schema`.
pub fn schema(what: SchemaKind) -> Result<ExitCode> {
    let schema = match what {
        SchemaKind::Job => ftpdrop::job::schema::job(),
        SchemaKind::Config => ftpdrop::job::schema::config(),
    };
    print!("{}", ftpdrop::job::schema::render(&schema));
    Ok(ExitCode::SUCCESS)
}
