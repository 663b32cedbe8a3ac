//! `cancel` and `retry`: an operator's request about a submitted job, left
//! for whichever instance runs it (see `ftpdrop::intake::request`), and
//! what came of it.

use anyhow::Result;
use ftpdrop::intake::request::{request, Request, Requested};
use ftpdrop::Config;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `retry` waits for a daemon to take the request.
pub const RETRY_WAIT: Duration = Duration::from_secs(5);

/// `ftpdrop cancel JOB` and `ftpdrop retry JOB`: the request, then up to
/// `wait` for a daemon to act on it.
pub fn run(config: Option<&Path>, job: &str, what: Request, wait: Duration) -> Result<ExitCode> {
    let config = Config::load(config)?;
    let job = job.strip_suffix(".json").unwrap_or(job);
    let left = request(&config.inbox, &config.checked, job, what)?;
    let receipt = config.checked.join(format!("{job}.report.json"));
    let request_file = config.checked.join(format!("{job}.{}", what.word()));
    let started = Instant::now();
    match what {
        Request::Cancel => {
            if left == Requested::Queued {
                println!("job {job} waits in the inbox: it is cancelled when it is claimed");
            }
            while started.elapsed() < wait {
                if let Ok(r) = ftpdrop::Receipt::load(&receipt) {
                    if r.state.is_final() {
                        let done = r
                            .entries
                            .iter()
                            .filter(|e| {
                                matches!(
                                    e.state,
                                    ftpdrop::report::EntryState::Done
                                        | ftpdrop::report::EntryState::Skipped
                                )
                            })
                            .count();
                        println!(
                            "job {job}: {} ({done} of {} entries were done)",
                            r.state.name(),
                            r.entries.len()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            println!(
                "job {job}: cancel requested, but no daemon ended it within {} s; \
                 the daemon that next runs it cancels it ({} stays until then)",
                wait.as_secs(),
                request_file.display()
            );
            Ok(ExitCode::from(3))
        }
        Request::Retry => {
            while started.elapsed() < wait {
                if !request_file.exists() {
                    println!("job {job}: its waiting entries are trying again now");
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(
                "job {job}: retry requested, but no daemon took it within {} s; \
                 the daemon that runs the job takes it",
                wait.as_secs()
            );
            Ok(ExitCode::from(3))
        }
    }
}
