//! Operators' requests about a job already submitted: cancel it, or try its
//! waiting entries now (`ftpdrop cancel`/`retry`, `DELETE /api/jobs/{job}`,
//! `POST /api/jobs/{job}/retry`).
//!
//! A request is a file beside the claimed job, `checked/<job>.cancel` or
//! `checked/<job>.retry`: whichever instance runs the job sees it within a
//! moment (instances share `checked/`), one that starts later sees it
//! before the job's first attempt, and no daemon needs to be running to
//! accept it. The instance that acts on a request removes it.

use crate::report::{JobPaths, JobState, ReceiptHead};
use std::path::Path;

/// What an operator asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop it: entries not done end `cancelled`, their temp files are
    /// removed, and nothing more is uploaded or disposed.
    Cancel,
    /// Try the entries waiting for their next attempt now, skipping the
    /// rest of their backoff.
    Retry,
}

impl Request {
    pub fn word(self) -> &'static str {
        match self {
            Request::Cancel => "cancel",
            Request::Retry => "retry",
        }
    }
}

/// Where a request was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The job is claimed: the instance running it acts within a moment.
    Claimed,
    /// The job waits in the inbox: it is acted on when it is claimed.
    Queued,
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refused {
    /// Not a job's name (a path, a hidden or receipt name).
    BadName(String),
    /// No such job in `checked/` or the inbox.
    NoJob { job: String, looked: Vec<String> },
    /// The job has ended: nothing would act on the request.
    Ended { job: String, state: JobState },
    /// The request file could not be written.
    Io(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BadName(job) => write!(
                f,
                "{job:?} is not a job name (the job file's name without .json)"
            ),
            Refused::NoJob { job, looked } => {
                write!(
                    f,
                    "no job named {job}: neither {} exists",
                    looked.join(" nor ")
                )
            }
            Refused::Ended { job, state } => write!(
                f,
                "job {job} has already ended ({}); its receipt is final",
                state.name()
            ),
            Refused::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refused {}

/// Leaves `what` for the job named `job` (its file name, with or without
/// `.json`).
pub fn request(
    inbox: &Path,
    checked: &Path,
    job: &str,
    what: Request,
) -> Result<Requested, Refused> {
    let job = job.strip_suffix(".json").unwrap_or(job);
    if job.is_empty()
        || job.starts_with('.')
        || job.contains(['/', '\\', '\0'])
        || job.ends_with(".report")
    {
        return Err(Refused::BadName(job.to_string()));
    }
    let paths = JobPaths::for_claimed(&checked.join(format!("{job}.json")));
    if let Ok(head) = ReceiptHead::load(&paths.receipt) {
        if head.state.is_final() {
            return Err(Refused::Ended {
                job: job.to_string(),
                state: head.state,
            });
        }
    }
    let queued_file = inbox.join(format!("{job}.json"));
    let claimed = paths.job_file.exists();
    if !claimed && !queued_file.exists() {
        return Err(Refused::NoJob {
            job: job.to_string(),
            looked: vec![
                paths.job_file.display().to_string(),
                queued_file.display().to_string(),
            ],
        });
    }
    let file = match what {
        Request::Cancel => paths.cancel_request(),
        Request::Retry => paths.retry_request(),
    };
    crate::store::write_atomic(&file, crate::report::now().as_bytes()).map_err(|e| {
        Refused::Io(format!(
            "cannot leave the {} request for job {job} at {}: {e}",
            what.word(),
            file.display()
        ))
    })?;
    Ok(if claimed {
        Requested::Claimed
    } else {
        Requested::Queued
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_are_not_jobs_and_jobs_that_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, checked) = (dir.path().join("files"), dir.path().join("checked"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&checked).unwrap();
        for bad in ["", "../x", ".hidden", "a/b", "x.report"] {
            assert!(matches!(
                request(&inbox, &checked, bad, Request::Cancel),
                Err(Refused::BadName(_))
            ));
        }
        assert!(matches!(
            request(&inbox, &checked, "nope", Request::Cancel),
            Err(Refused::NoJob { .. })
        ));
        std::fs::write(inbox.join("q.json"), "[]").unwrap();
        assert_eq!(
            request(&inbox, &checked, "q.json", Request::Cancel).unwrap(),
            Requested::Queued
        );
        assert!(checked.join("q.cancel").exists());
        std::fs::write(checked.join("r.json"), "[]").unwrap();
        assert_eq!(
            request(&inbox, &checked, "r", Request::Retry).unwrap(),
            Requested::Claimed
        );
        assert!(checked.join("r.retry").exists());
        let mut receipt = crate::report::Receipt::new("r", &checked.join("r.json"));
        receipt.state = JobState::Done;
        crate::report::write_receipt(&checked.join("r.report.json"), &receipt).unwrap();
        assert!(matches!(
            request(&inbox, &checked, "r", Request::Cancel),
            Err(Refused::Ended {
                state: JobState::Done,
                ..
            })
        ));
    }
}
