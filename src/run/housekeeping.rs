//! Claimed jobs after they end: inline secrets redacted, old jobs removed.
//!
//! A claimed job file keeps its inline password while the job runs, because
//! a restart must be able to log in again. Once the job is final nothing
//! needs it, so the file is rewritten with every password replaced by
//! [`REDACTED`]. `retention_days` removes final jobs (job file, receipt,
//! journal) once they are that old. A job that is running, or locked by
//! another instance, is never touched.

use crate::job::REDACTED;
use crate::report::{write_atomic, JobPaths, Receipt};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Makes a file readable by its owner only (the daemon's user).
pub fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        // Windows: files inherit the ACL of the service's state folder.
        let _ = path;
        Ok(())
    }
}

/// Replaces every non-empty `password` string in a job's JSON; true if any was.
fn redact_value(v: &mut Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut changed = false;
            for (k, val) in map.iter_mut() {
                if k == "password" {
                    if let Value::String(s) = val {
                        if !s.is_empty() && s != REDACTED {
                            *s = REDACTED.to_string();
                            changed = true;
                        }
                        continue;
                    }
                }
                changed |= redact_value(val);
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |acc, item| redact_value(item) | acc),
        _ => false,
    }
}

/// A job file's bytes with every inline password replaced by [`REDACTED`];
/// `None` if there was nothing to redact, or the bytes are not JSON.
pub fn redacted(bytes: &[u8]) -> Option<Vec<u8>> {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut v = serde_json::from_slice::<Value>(body).ok()?;
    if !redact_value(&mut v) {
        return None;
    }
    let mut out = serde_json::to_vec_pretty(&v).expect("JSON serializes");
    out.push(b'\n');
    Some(out)
}

/// Rewrites a final job's claimed file without its inline secrets; true if it had any.
///
/// A file that is not JSON at all (an invalid job) cannot be taken apart;
/// it stays as it is, readable by the owner only.
pub fn redact_claimed(job_file: &Path) -> Result<bool> {
    let bytes =
        std::fs::read(job_file).with_context(|| format!("cannot read {}", job_file.display()))?;
    let Some(out) = redacted(&bytes) else {
        owner_only(job_file).ok();
        return Ok(false);
    };
    write_atomic(job_file, &out)
        .with_context(|| format!("cannot rewrite {}", job_file.display()))?;
    Ok(true)
}

/// When a final job ended: its receipt's `finished_at`, else the receipt's mtime.
fn ended_at(receipt: &Receipt, receipt_path: &Path) -> Option<SystemTime> {
    receipt
        .finished_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .or_else(|| std::fs::metadata(receipt_path).ok()?.modified().ok())
}

/// Goes over `checked/`: redacts final jobs that still carry secrets (the
/// daemon died between the final receipt and the redaction) and removes
/// final jobs older than `retention_days` (0: never). Returns how many
/// jobs were removed.
pub fn sweep(checked: &Path, retention_days: u64) -> usize {
    let keep_for = Duration::from_secs(retention_days.saturating_mul(86_400));
    let mut removed = 0;
    for job_file in crate::intake::scan(checked)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".report.json"))
    {
        let paths = JobPaths::for_claimed(&job_file);
        let Ok(receipt) = Receipt::load(&paths.receipt) else {
            continue;
        };
        if !receipt.state.is_final() {
            continue;
        }
        let old = retention_days > 0
            && ended_at(&receipt, &paths.receipt)
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= keep_for);
        if old {
            // Another instance may be settling it right now; its lock says so.
            let Ok(f) = std::fs::File::open(&job_file) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue;
            }
            for p in [&paths.receipt, &paths.journal, &paths.job_file] {
                let _ = std::fs::remove_file(p);
            }
            drop(f);
            tracing::info!(job = %paths.name, retention_days, "removed an ended job (retention_days)");
            removed += 1;
            continue;
        }
        if let Err(e) = redact_claimed(&job_file) {
            tracing::warn!(job = %paths.name, error = %format!("{e:#}"), "cannot redact the ended job's secrets");
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_anywhere_are_redacted_once() {
        let mut v = serde_json::json!([
            {"server": {"host": "h", "login": "u", "password": "s3cret"}, "file": {}},
            {"server": "named", "file": {}},
            {"server": {"host": "h", "login": "u", "password": ""}}
        ]);
        assert!(redact_value(&mut v));
        assert_eq!(v[0]["server"]["password"], REDACTED);
        assert_eq!(v[2]["server"]["password"], "");
        assert!(!redact_value(&mut v));
        assert!(!v.to_string().contains("s3cret"));
    }
}
