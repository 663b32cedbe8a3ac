//! The files ftpdrop makes for a job, and when they may go: a checksum
//! sidecar once its file is in, a done marker once every file it announces
//! is. A job runs in phases: its own files, then sidecars, then markers, so
//! a marker never exists on the server before the files it announces.
//!
//! Their bytes are written to the job's `generated` folder right before
//! they are sent, and never rewritten once there: a restart then finds the
//! same local file (same stamp), and a marker whose rename a crash
//! interrupted is settled by its size instead of being sent again.

use crate::job::{Entry, Kind, MarkerContent};
use crate::report::{EntryReport, EntryState, ReportHandle};
use std::path::Path;

/// Which phase of its job an entry goes in.
pub(crate) fn phase(e: &Entry) -> usize {
    match e.kind {
        Kind::Data => 0,
        Kind::Sidecar { .. } => 1,
        Kind::Marker { .. } => 2,
    }
}

/// The number of phases.
pub(crate) const PHASES: usize = 3;

/// The bytes of made entries, written off the async runtime (a job may
/// make a sidecar for each of 100,000 files): each entry's index with why
/// its bytes could not be written.
pub(crate) async fn write_all(
    files: Vec<(usize, std::path::PathBuf, Vec<u8>)>,
) -> Vec<(usize, String)> {
    if files.is_empty() {
        return Vec::new();
    }
    let indices: Vec<usize> = files.iter().map(|(i, _, _)| *i).collect();
    let written = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .filter_map(|(i, path, bytes)| {
                write_once(&path, &bytes)
                    .err()
                    .map(|e| (i, format!("cannot write {}: {e}", path.display())))
            })
            .collect()
    })
    .await;
    written.unwrap_or_else(|e| {
        let why = format!("cannot write the made files: {e}");
        indices.into_iter().map(|i| (i, why.clone())).collect()
    })
}

fn arrived(r: &EntryReport) -> bool {
    matches!(r.state, EntryState::Done | EntryState::Skipped)
}

/// A made entry's bytes, if the files it describes are in; else why it is
/// not sent.
pub(crate) fn content(
    entries: &[Entry],
    entry: &Entry,
    report: &ReportHandle,
    job: &str,
) -> Result<Vec<u8>, String> {
    match &entry.kind {
        Kind::Data => Err("a file of the job is not made".into()),
        Kind::Sidecar { of } => {
            let r = report.entry(*of);
            if !arrived(&r) {
                return Err(format!(
                    "not sent: entries[{of}] ({}) did not arrive",
                    r.remote_path
                ));
            }
            let Some(sha) = r.sha256 else {
                return Err(format!(
                    "not sent: entries[{of}] ({}) was skipped and its digest is not known",
                    r.remote_path
                ));
            };
            // The `sha256sum` format: digest, two spaces, name.
            Ok(format!("{sha}  {}\n", entries[*of].remote_name).into_bytes())
        }
        Kind::Marker { of, content } => {
            let reports: Vec<EntryReport> = of.iter().map(|i| report.entry(*i)).collect();
            if let Some(r) = reports.iter().find(|r| !arrived(r)) {
                let more = reports.iter().filter(|r| !arrived(r)).count() - 1;
                return Err(format!(
                    "not sent: entries[{}] ({}) did not arrive{}",
                    r.index,
                    r.remote_path,
                    match more {
                        0 => String::new(),
                        n => format!(", nor {n} more"),
                    }
                ));
            }
            match content {
                MarkerContent::Empty => Ok(Vec::new()),
                MarkerContent::Manifest => {
                    let files: Vec<serde_json::Value> = reports
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "name": entries[r.index].remote_name,
                                "bytes": r.bytes,
                                "sha256": r.sha256,
                            })
                        })
                        .collect();
                    let manifest = serde_json::json!({
                        "job": job,
                        "folder": entry.server_path,
                        "files": files,
                    });
                    let mut out =
                        serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
                    out.push(b'\n');
                    Ok(out)
                }
            }
        }
    }
}

/// Writes `bytes` unless the file holds them already (its stamp then stays
/// the one a restart compares with).
fn write_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|have| have == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::store::write_atomic(path, bytes)
}
