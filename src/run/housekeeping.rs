//! Claimed jobs after they end: inline secrets redacted, old jobs removed.
//!
//! A claimed job file keeps its inline password while the job runs, because
//! a restart must be able to log in again. Once the job is final nothing
//! needs it, so the file is rewritten with every password replaced by
//! [`REDACTED`]. `retention_days` removes final jobs (job file, receipt,
//! journal) once they are that old. A job that is running, or locked by
//! another instance, is never touched.

use crate::job::{Members, REDACTED};
use crate::report::{JobPaths, ReceiptHead};
use crate::store::{owner_only, write_atomic};
use anyhow::{Context, Result};
use serde_json::value::RawValue;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Job files nest a few levels (`entries[i].server.password`); deeper
/// values are not looked into.
const REDACT_DEPTH: usize = 32;

/// Where, in `doc`, the non-empty `password` strings inside `value` are.
/// Only one level is parsed at a time, into slices of `doc`: a 10,000-entry
/// job is never held as a tree (that tree cost 40 MB at the end of a job).
fn password_spans(
    doc: &str,
    value: &RawValue,
    depth: usize,
    spans: &mut Vec<Range<usize>>,
) -> serde_json::Result<()> {
    let text = value.get();
    if depth > REDACT_DEPTH {
        return Ok(());
    }
    let children: Vec<(Option<String>, &RawValue)> = match text.as_bytes().first() {
        Some(b'{') => serde_json::from_str::<Members>(text)?
            .0
            .into_iter()
            .map(|(k, v)| (Some(k), v))
            .collect(),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)?
            .into_iter()
            .map(|v| (None, v))
            .collect(),
        _ => return Ok(()),
    };
    for (key, child) in children {
        let inner = child.get();
        if key.as_deref() == Some("password") && inner.starts_with('"') {
            let secret: String = serde_json::from_str(inner)?;
            if !secret.is_empty() && secret != REDACTED {
                let at = inner.as_ptr() as usize - doc.as_ptr() as usize;
                spans.push(at..at + inner.len());
            }
            continue;
        }
        password_spans(doc, child, depth + 1, spans)?;
    }
    Ok(())
}

/// A job file's bytes with every inline password replaced by [`REDACTED`],
/// everything else byte for byte as it was; `None` if there was nothing to
/// redact, or the bytes are not JSON.
pub fn redacted(bytes: &[u8]) -> Option<Vec<u8>> {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let doc = std::str::from_utf8(body).ok()?;
    let top: &RawValue = serde_json::from_str(doc).ok()?;
    let mut spans = Vec::new();
    password_spans(doc, top, 0, &mut spans).ok()?;
    if spans.is_empty() {
        return None;
    }
    let with = serde_json::to_string(REDACTED).expect("a string serializes");
    let mut out = Vec::with_capacity(doc.len());
    let mut from = 0;
    for span in spans {
        out.extend_from_slice(&body[from..span.start]);
        out.extend_from_slice(with.as_bytes());
        from = span.end;
    }
    out.extend_from_slice(&body[from..]);
    Some(out)
}

/// Rewrites a final job's claimed file without its inline secrets; true if it had any.
///
/// A file that is not JSON at all (an invalid job) cannot be taken apart;
/// it stays as it is, readable by the owner only.
pub(crate) fn redact_claimed(job_file: &Path) -> Result<bool> {
    // One rewrite at a time in this process (a job's end beside a sweep):
    // their atomic writes share this process's temp name.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
fn ended_at(receipt: &ReceiptHead, receipt_path: &Path) -> Option<SystemTime> {
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
    sweep_until(checked, retention_days, &|| false)
}

/// [`sweep`], given up as soon as `stop` says so: a sweep of a million
/// ended jobs must not hold a shutdown (the runtime waits for it).
pub(crate) fn sweep_until(checked: &Path, retention_days: u64, stop: &dyn Fn() -> bool) -> usize {
    // A sweep slower than the interval is not joined by the next one.
    static SWEEPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEEPING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return 0;
    }
    let removed = sweep_once(checked, retention_days, stop);
    remove_stale_temps(checked);
    remove_stale_temps(&checked.join("webhooks"));
    SWEEPING.store(false, std::sync::atomic::Ordering::Release);
    removed
}

/// Temp files of atomic writes that a crash left behind: an hour old, no
/// writer still holds them.
fn remove_stale_temps(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if crate::store::is_atomic_temp(&name) && stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The sweep through the history index: old jobs found by their end time,
/// and only the jobs that ended since the last sweep looked at for secrets
/// (a million ended jobs are not read every hour). `None` when the index
/// has not caught up with the receipts (the sweep reads them all then).
fn sweep_indexed(checked: &Path, retention_days: u64, stop: &dyn Fn() -> bool) -> Option<usize> {
    const MARK: &str = "redacted_through_ms";
    let history = crate::history::History::existing(checked).filter(|h| h.ready())?;
    let now = crate::history::millis(SystemTime::now());
    let mut removed = 0;
    if retention_days > 0 {
        let cutoff = now - (retention_days.saturating_mul(86_400_000)).min(i64::MAX as u64) as i64;
        loop {
            let old = history.ended_before(cutoff, 1_000).ok()?;
            let mut progress = false;
            for job in &old {
                if stop() {
                    return Some(removed);
                }
                let paths = JobPaths::for_claimed(&checked.join(format!("{job}.json")));
                if remove_ended(&paths) {
                    removed += 1;
                    progress = true;
                }
            }
            if old.len() < 1_000 || !progress {
                break;
            }
        }
    }
    // Jobs recorded a little before the last sweep began may have ended after it looked.
    let since = history.mark(MARK).ok()?.map_or(i64::MIN, |m| m - 3_600_000);
    for job in history.ended_since(since).ok()? {
        if stop() {
            // Not marked: the next sweep looks at these again.
            return Some(removed);
        }
        let job_file = checked.join(format!("{job}.json"));
        if job_file.exists() {
            if let Err(e) = redact_claimed(&job_file) {
                tracing::warn!(job = %job, error = %format!("{e:#}"), "cannot redact the ended job's secrets");
            }
        }
    }
    let _ = history.set_mark(MARK, now);
    Some(removed)
}

/// Removes an ended job's files, unless another instance holds its lock
/// (it may be settling it right now); drops its history row.
fn remove_ended(paths: &JobPaths) -> bool {
    let lock = match std::fs::File::open(&paths.job_file) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return false,
    };
    if lock.as_ref().is_some_and(|f| f.try_lock().is_err()) {
        return false;
    }
    for p in [
        &paths.receipt,
        &paths.journal,
        &paths.job_file,
        &paths.cancel_request(),
        &paths.retry_request(),
    ] {
        let _ = std::fs::remove_file(p);
    }
    drop(lock);
    if let Some(h) = paths
        .receipt
        .parent()
        .and_then(crate::history::History::existing)
    {
        let _ = h.forget(&paths.name);
    }
    tracing::info!(job = %paths.name, "removed an ended job (retention_days)");
    true
}

fn sweep_once(checked: &Path, retention_days: u64, stop: &dyn Fn() -> bool) -> usize {
    if let Some(removed) = sweep_indexed(checked, retention_days, stop) {
        return removed;
    }
    let keep_for = Duration::from_secs(retention_days.saturating_mul(86_400));
    let mut removed = 0;
    for job_file in crate::intake::scan(checked)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".report.json"))
    {
        if stop() {
            break;
        }
        let paths = JobPaths::for_claimed(&job_file);
        let Ok(receipt) = ReceiptHead::load(&paths.receipt) else {
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
            removed += remove_ended(&paths) as usize;
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
    fn a_number_beyond_f64_is_kept_and_the_password_still_goes() {
        // Found by the job fuzz target: serde_json's `Value` refuses the
        // number ("number out of range"), the level-by-level redaction does not.
        let doc =
            br#"[{"server": {"host": "remoH2HHJHHHHHrrv", "password": "p"}, "t": 211E34943719}]"#;
        let out = redacted(doc).unwrap();
        let want = String::from_utf8_lossy(doc).replace(
            r#""password": "p""#,
            &format!(
                r#""password": {}"#,
                serde_json::to_string(REDACTED).unwrap()
            ),
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn passwords_anywhere_are_redacted_once_and_nothing_else_changes() {
        let doc = r#"[
  {"server": {"host": "h", "login": "u", "password": "s3cr\u0065t", "password": "again"}, "file": {}},
  {"server": "named", "file": {"local_path": "/a/password", "password": 7}},
  {"server": {"host": "h", "login": "u", "password": ""}},
  {"servers": [{"deep": {"password": "x\"y"}}]}
]
"#;
        let out = String::from_utf8(redacted(doc.as_bytes()).unwrap()).unwrap();
        let want = doc
            .replace(
                r#""s3cr\u0065t""#,
                &serde_json::to_string(REDACTED).unwrap(),
            )
            .replace(r#""again""#, &serde_json::to_string(REDACTED).unwrap())
            .replace(r#""x\"y""#, &serde_json::to_string(REDACTED).unwrap());
        assert_eq!(out, want);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["server"]["password"], REDACTED);
        assert_eq!(v[2]["server"]["password"], "");
        assert_eq!(v[3]["servers"][0]["deep"]["password"], REDACTED);
        assert!(redacted(out.as_bytes()).is_none(), "redacted twice");
        let bom = [b"\xef\xbb\xbf".as_slice(), doc.as_bytes()].concat();
        assert_eq!(redacted(&bom).unwrap(), out.as_bytes());
        assert!(
            redacted(b"[{\"password\": \"s\"").is_none(),
            "not JSON: left alone"
        );
        assert!(redacted(br#"{"server": "named"}"#).is_none());
    }
}
