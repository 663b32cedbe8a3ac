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

/// `ftpdrop manpage`: one page with every command and its options, the job
/// format, the configuration, the files and the exit codes.
pub fn manpage() -> Result<ExitCode> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ftpdrop {}", sub.get_name());
        // clap names commands with static strings: a few bytes per command,
        // once, in a process that prints and exits.
        let static_name: &'static str = name.clone().leak();
        let sub_man = clap_mangen::Man::new(sub.clone().name(static_name));
        let mut part = Vec::new();
        sub_man.render_synopsis_section(&mut part)?;
        sub_man.render_description_section(&mut part)?;
        sub_man.render_options_section(&mut part)?;
        // Subsections of COMMANDS here, not pages of their own.
        let part = String::from_utf8_lossy(&part)
            .lines()
            .filter_map(|l| match l {
                ".SH DESCRIPTION" => Some(".PP"),
                l if l.starts_with(".SH ") => None,
                l => Some(l),
            })
            .collect::<Vec<_>>()
            .join("\n");
        page.extend_from_slice(format!(".SS \"{name}\"\n{part}\n").as_bytes());
    }
    page.extend_from_slice(MANUAL.as_bytes());
    std::io::Write::write_all(&mut std::io::stdout(), &page)
        .context("cannot write the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// The sections of the man page that are not about the command line.
const MANUAL: &str = r#".SH JOB FORMAT
A job file is JSON: one entry, an array of entries, or an object with
.B entries
and defaults for them. An entry names a server and a file:
.PP
.nf
{"server": {"host": "ftp.example.com", "port": 21, "login": "me", "password": "secret"},
 "file": {"local_path": "/srv/out/report.txt", "server_path": "incoming"}}
.fi
.PP
.B server
is an object as above (with
.B tls
"none", "explicit" or "implicit", and
.BR ca_file ),
or the name of a server from the configuration.
.B local_path
must be absolute;
.B server_path
is the remote folder, created as needed;
.B remote_name
renames the file. Per entry:
.B if_exists
("overwrite", "skip", "fail"),
.B verify
("auto", "size", "digest") and
.B after
("keep", "delete", {"move_to": DIR}). A job with a bad field is
.I invalid
and its receipt names every problem. The full schema:
.BR "ftpdrop schema job" .
.SH RECEIPTS
Each job gets
.I checked/JOB.report.json
beside its claimed file: the job's
.B state
(running, done, failed, partial, invalid, cancelled) and each entry's state
(pending, done, failed, skipped, cancelled), bytes, SHA-256, the checks that
passed and the last error. No receipt ever holds a password.
.SH CONFIGURATION
A JSON file given with
.BR --config ;
every field is optional. The main ones:
.B inbox
and
.B checked
(folders),
.BR max_connections ,
.BR max_connections_per_server ,
.BR max_concurrent_jobs ,
.B retry
(attempts, backoff,
.BR give_up_after_secs ),
.B shutdown_grace_secs
(30),
.B local_roots
and
.B allowed_hosts
(what jobs may read and where they may send),
.B servers
(named servers, with
.B password_env
or
.BR password_file ),
.B status
(the HTTP API and dashboard,
.B listen
127.0.0.1:9180),
.B notify
(webhooks),
.BR max_rate ,
.B log
and
.BR nats .
Misspelled fields are errors that suggest the right name. The full schema:
.BR "ftpdrop schema config" ;
every setting with its default: config.example.json in the sources.
.SH FILES
.TP
.I files/
the inbox: job files dropped here (write a temp name, then rename) are claimed.
.TP
.I checked/
claimed jobs, their receipts and journals;
.I JOB.cancel
and
.I JOB.retry
are requests left by
.B ftpdrop cancel
and
.BR "ftpdrop retry" .
.TP
.I checked/ftpdrop-history.sqlite
the index of ended jobs.
.TP
.I ftpdrop-api-token
beside checked/: the status API's token.
.TP
.I ftpdrop-learned.json
beside checked/: what was learned about each server.
.TP
.I ftpdrop-instances/
beside checked/: the instances running on these folders.
.SH SIGNALS
SIGTERM or SIGINT stop intake and give uploads
.B shutdown_grace_secs
to finish; a second one stops at once. What is left resumes at the next
start. SIGHUP reloads the configuration (a bad one is refused and logged).
.SH EXIT STATUS
.TP
.B 0
success: every job done (once, submit --wait), valid (validate), acted on (cancel, retry).
.TP
.B 1
a job not done or not valid; check-config --strict with warnings.
.TP
.B 2
a configuration, usage or I/O error, with its reason on stderr.
.TP
.B 3
cancel or retry: no daemon acted on the request in time; it stays for the next one.
.SH SEE ALSO
README.md in the sources: the quick start, the security model, the status
API and its events, and how each upload is made and verified.
"#;

/// `ftpdrop schema`.
pub fn schema(what: SchemaKind) -> Result<ExitCode> {
    let schema = match what {
        SchemaKind::Job => ftpdrop::job::schema::job(),
        SchemaKind::Config => ftpdrop::job::schema::config(),
    };
    print!("{}", ftpdrop::job::schema::render(&schema));
    Ok(ExitCode::SUCCESS)
}
