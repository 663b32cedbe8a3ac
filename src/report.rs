//! The receipt (`checked/<job>.report.json`) and the journal behind it.
//!
//! The receipt is what producers poll. It is rewritten atomically (temp
//! file, fsync, rename), but not after every event: for a job of 10,000
//! entries that would be quadratic. Writes are coalesced by a writer task,
//! and every event is first appended to `checked/<job>.journal`, one JSON
//! line per event. An append is one `write(2)`, which survives `kill -9`
//! (the page cache outlives the process), so at startup receipt + journal
//! give back the exact state of an interrupted job. The journal is removed
//! once the final receipt is on disk.

use crate::job::Entry;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
    Partial,
    Invalid,
}

impl JobState {
    pub fn is_final(self) -> bool {
        self != JobState::Running
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Pending,
    Done,
    Failed,
    Skipped,
}

/// Size and modification time of a local file, to notice that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Stamp {
            size: meta.len(),
            mtime_ns,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryReport {
    pub index: usize,
    pub state: EntryState,
    pub server: String,
    pub local_path: String,
    pub remote_path: String,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// Checks that passed before the entry was called done: `size`, `sha256`, `md5`, ...
    pub verification: Vec<String>,
    pub attempts: u32,
    pub elapsed_ms: u64,
    pub error: Option<String>,
    /// The local file as first seen; a retry that sees another stamp starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Stamp>,
    /// Set just before the rename that publishes; lets a restart settle by size.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publishing: bool,
    /// Set just before a segmented upload starts: its temp file has holes
    /// until every segment is in, so a restart deletes it instead of resuming at its SIZE.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub segmented: bool,
    /// Connections the upload used when it went in segments (absent for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
    /// While the entry waits to retry: when the next attempt starts (`error`
    /// is the last error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// What became of the local file after the verified publish (`after`);
    /// absent when the job keeps its sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposal: Option<Disposal>,
}

/// The local file's fate, journaled before and after it happens, so that a
/// crash in between is settled at the next start (see `upload::dispose`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposal {
    pub state: DisposalState,
    /// Where it was moved (`moving`: where it is being moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why it was kept after all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisposalState {
    /// Published and journaled; not disposed of yet.
    Pending,
    /// Being moved to `to`.
    Moving,
    Deleted,
    Moved,
    /// Not disposed of, for `reason` (changed since it was sent, ...).
    Kept,
}

impl EntryReport {
    pub fn pending(entry: &Entry) -> EntryReport {
        EntryReport {
            index: entry.index,
            state: EntryState::Pending,
            server: entry.server.to_string(),
            local_path: entry.local_path.display().to_string(),
            remote_path: entry.remote_path(),
            bytes: None,
            sha256: None,
            verification: Vec::new(),
            attempts: 0,
            elapsed_ms: 0,
            error: None,
            source: None,
            publishing: false,
            segmented: false,
            segments: None,
            next_attempt_at: None,
            disposal: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub job: String,
    pub job_file: String,
    pub state: JobState,
    pub claimed_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Why the job is invalid, one line per problem, naming the field.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Another worker may have published some entries already (a NATS job
    /// delivered again): each entry first checks the server for its file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settle_published: bool,
    #[serde(default)]
    pub entries: Vec<EntryReport>,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Receipt {
    pub fn new(job: &str, job_file: &Path) -> Receipt {
        let t = now();
        Receipt {
            job: job.to_string(),
            job_file: job_file.display().to_string(),
            state: JobState::Running,
            claimed_at: t.clone(),
            updated_at: t,
            finished_at: None,
            problems: Vec::new(),
            settle_published: false,
            entries: Vec::new(),
        }
    }

    /// The job's verdict once no entry is pending.
    pub fn settle(&mut self) {
        if self.state == JobState::Invalid {
            return;
        }
        let pending = self.entries.iter().any(|e| e.state == EntryState::Pending);
        if pending {
            self.state = JobState::Running;
            return;
        }
        let failed = self
            .entries
            .iter()
            .filter(|e| e.state == EntryState::Failed)
            .count();
        self.state = if failed == 0 {
            JobState::Done
        } else if failed == self.entries.len() {
            JobState::Failed
        } else {
            JobState::Partial
        };
        self.finished_at = Some(now());
    }

    pub fn load(path: &Path) -> Result<Receipt> {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a receipt", path.display()))
    }
}

/// The entry with this index. Entries are kept in index order, so this is a
/// direct lookup; the search is only a fallback. (A linear search per update
/// made a 10,000-entry job quadratic.)
fn slot_mut(entries: &mut [EntryReport], index: usize) -> Option<&mut EntryReport> {
    if entries.get(index).is_some_and(|e| e.index == index) {
        return entries.get_mut(index);
    }
    entries.iter_mut().find(|e| e.index == index)
}

/// Paths that belong to one claimed job.
#[derive(Debug, Clone)]
pub struct JobPaths {
    pub name: String,
    pub job_file: PathBuf,
    pub receipt: PathBuf,
    pub journal: PathBuf,
}

impl JobPaths {
    pub fn for_claimed(job_file: &Path) -> JobPaths {
        let dir = job_file.parent().unwrap_or(Path::new("."));
        let file = job_file
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = file.strip_suffix(".json").unwrap_or(&file).to_string();
        JobPaths {
            receipt: dir.join(format!("{name}.report.json")),
            journal: dir.join(format!("{name}.journal")),
            job_file: job_file.to_path_buf(),
            name,
        }
    }
}

/// Creates (truncating) or, with `append`, opens for appending a file that
/// only its owner can read: receipts and journals name local paths and
/// servers, which other users of the machine have no business reading.
fn owner_only_file(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix. The file is readable by its owner only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A temp name of this process's own: two instances writing one file at
    // once (the learned facts, a job's end beside another's sweep) each
    // rename a whole file instead of interleaving into a shared temp file.
    // Within a process each file has one writer at a time (a receipt under
    // its job's lock, the learned facts under their mutex, a claimed job's
    // redaction under its lock).
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id(),
    ));
    let written = (|| {
        let mut f = owner_only_file(&tmp, false)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `name` is a temp file of [`write_atomic`] (left by a crash if it
/// is old).
pub fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    entry: EntryReport,
}

/// The live receipt of one job: in memory, journaled, and written out by a coalescing task.
pub struct ReportHandle {
    paths: JobPaths,
    receipt: Mutex<Receipt>,
    journal: Mutex<Option<std::fs::File>>,
    dirty: Notify,
    /// One receipt write at a time: two writers would share the temp file.
    writing: tokio::sync::Mutex<()>,
    /// Tells the write loop to end after its current write.
    closed: std::sync::atomic::AtomicBool,
    /// Told about every receipt write, so that a write that hangs (a dead
    /// disk) stops the systemd watchdog.
    health: Option<Arc<crate::run::health::Health>>,
    /// Wakes the write loop from its pause between writes when the job ends:
    /// the job's task awaits the loop, so sitting out the pause would add the
    /// whole interval to every job (200 ms each, minutes for 2,000 jobs).
    closing: Notify,
}

impl ReportHandle {
    /// Opens the live receipt; `recovered` carries the state of an interrupted run.
    pub fn open(
        paths: JobPaths,
        receipt: Receipt,
        health: Option<Arc<crate::run::health::Health>>,
    ) -> Result<Arc<ReportHandle>> {
        let journal = owner_only_file(&paths.journal, true)
            .with_context(|| format!("cannot open journal {}", paths.journal.display()))?;
        Ok(Arc::new(ReportHandle {
            paths,
            receipt: Mutex::new(receipt),
            journal: Mutex::new(Some(journal)),
            dirty: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: Notify::new(),
            health,
        }))
    }

    /// Replays a journal over a receipt: the later line for an entry wins.
    pub fn replay(receipt: &mut Receipt, journal: &Path) {
        let Ok(text) = std::fs::read_to_string(journal) else {
            return;
        };
        for line in text.lines() {
            // A torn last line (crash mid-write) is simply not there.
            let Ok(l) = serde_json::from_str::<JournalLine>(line) else {
                continue;
            };
            if let Some(slot) = slot_mut(&mut receipt.entries, l.entry.index) {
                *slot = l.entry;
            }
        }
    }

    pub fn snapshot(&self) -> Receipt {
        self.receipt.lock().unwrap().clone()
    }

    pub fn entry(&self, index: usize) -> EntryReport {
        let mut r = self.receipt.lock().unwrap();
        slot_mut(&mut r.entries, index)
            .cloned()
            .expect("entry index")
    }

    /// Records a change to one entry: journal first, receipt rewrite soon after.
    pub fn update(&self, entry: EntryReport) {
        if let Some(f) = self.journal.lock().unwrap().as_mut() {
            let mut line = serde_json::to_vec(&JournalLine {
                entry: entry.clone(),
            })
            .unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::warn!(job = %self.paths.name, error = %e, "cannot append to the journal");
            }
        }
        {
            let mut r = self.receipt.lock().unwrap();
            if let Some(slot) = slot_mut(&mut r.entries, entry.index) {
                *slot = entry;
            }
            r.updated_at = now();
        }
        self.dirty.notify_one();
    }

    /// Writes the receipt now, retrying until it succeeds (disk full, permissions).
    pub async fn flush(&self) {
        let _one_at_a_time = self.writing.lock().await;
        let pending = self.health.as_ref().map(|h| h.receipt_writing());
        let mut delay = Duration::from_millis(200);
        loop {
            let bytes = {
                let r = self.receipt.lock().unwrap();
                serde_json::to_vec_pretty(&*r).expect("receipt serializes")
            };
            let path = self.paths.receipt.clone();
            let res = tokio::task::spawn_blocking(move || write_atomic(&path, &bytes)).await;
            match res {
                Ok(Ok(())) => {
                    if let Some(w) = pending {
                        w.written();
                    }
                    return;
                }
                Ok(Err(e)) => tracing::error!(
                    job = %self.paths.name,
                    error = %e,
                    "cannot write receipt {}; retrying in {:?}",
                    self.paths.receipt.display(),
                    delay
                ),
                Err(e) => {
                    tracing::error!(job = %self.paths.name, error = %e, "receipt writer task failed")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Rewrites the receipt whenever it changed, at most every `interval`.
    pub async fn write_loop(self: Arc<Self>, interval: Duration) {
        use std::sync::atomic::Ordering;
        while !self.closed.load(Ordering::SeqCst) {
            self.dirty.notified().await;
            if self.closed.load(Ordering::SeqCst) {
                break;
            }
            self.flush().await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                // `notify_one` keeps a permit, so a close during the flush is not missed.
                _ = self.closing.notified() => break,
            }
        }
    }

    /// Ends the write loop (the caller writes the last receipt itself).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.dirty.notify_one();
        self.closing.notify_one();
    }

    /// Settles the job state, writes the final receipt and drops the journal.
    pub async fn finish(&self) -> JobState {
        let state = {
            let mut r = self.receipt.lock().unwrap();
            r.settle();
            r.updated_at = now();
            r.state
        };
        self.flush().await;
        if state.is_final() {
            self.journal.lock().unwrap().take();
            let _ = std::fs::remove_file(&self.paths.journal);
        }
        state
    }

    pub fn paths(&self) -> &JobPaths {
        &self.paths
    }
}
