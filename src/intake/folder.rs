//! Intake: watch the inbox, wait for job files to settle, claim them.
//!
//! Three sources feed one pending set: notify events, a full scan at start
//! (notify reports nothing for files that were already there) and a periodic
//! sweep (notify misses events on NFS and can overflow, which arrives as a
//! Rescan flag). A file is claimed once its size and mtime have stayed the
//! same for the settle interval, so a slow producer is never read half
//! written; a file that arrived by rename is complete by construction and is
//! claimed at once. Claiming is a rename into `checked/`: atomic, so when
//! several instances share an inbox each job goes to exactly one of them.
//!
//! A claim needs a job permit first. While all permits are taken, nothing is
//! claimed and job files wait in the inbox: that is the back-pressure that
//! keeps 2,000 dropped files from becoming 2,000 open jobs.

use crate::health::{Health, Loop};
use crate::report::Stamp;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Is this a job file name, not a hidden, temporary or editor file?
pub(crate) fn eligible(name: &str) -> bool {
    !name.starts_with('.')
        && !name.starts_with('~')
        && json_stem(name).is_some_and(|s| !s.is_empty())
}

/// The name without its `.json`, in any case (`REPORT.JSON` from Windows).
pub(crate) fn json_stem(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(".json".len())?;
    let (stem, ext) = (name.get(..cut)?, name.get(cut..)?);
    ext.eq_ignore_ascii_case(".json").then_some(stem)
}

/// Job file names in `dir` (not recursive), oldest first.
pub(crate) fn scan(dir: &Path) -> Vec<PathBuf> {
    scan_split(dir).0
}

/// One pass over `dir`: the job files, oldest first, and the names of the
/// other regular files (for [`Intake::note_ignored`]).
fn scan_split(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    let mut others = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (Vec::new(), others);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            // A job-named symlink, FIFO or device: claimed only to be set
            // aside (directories are left alone).
            if eligible(&name) && !meta.is_dir() && odd_kind(&meta).is_some() {
                found.push((std::time::UNIX_EPOCH, e.path()));
            }
            continue;
        }
        if eligible(&name) {
            found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), e.path()));
        } else {
            others.push(name);
        }
    }
    found.sort();
    (found.into_iter().map(|(_, p)| p).collect(), others)
}

/// An exclusive lock on a job file, or `None` if another process holds it.
///
/// The instance running a job holds this lock on its claimed file for as
/// long as it runs; the kernel releases it when the process dies, however
/// it dies, and that is how survivors know a job is orphaned. It is
/// `flock(2)` on Unix (on Linux NFS clients, and on NFSv4, mapped to the
/// server's byte-range locks; on SMB/CIFS to the server's share locks) and
/// `LockFileEx` on Windows.
///
/// Only a regular file is opened, never through a symlink, and the open
/// cannot block (a FIFO swapped in would wait for a writer forever): the
/// error for anything else carries [`crate::localfile::NotAFile`].
pub(crate) fn lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let f = crate::localfile::open_regular(path, false)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The longest job name a claim gives (bytes): its receipt
/// (`.report.json`), journal and their temp files (`.<name>.<pid>.tmp`)
/// must fit the 255 bytes of a file name.
const MAX_JOB_NAME: usize = 200;

/// The job's name from its inbox file's stem: control characters (a newline
/// or an ESC would forge log lines) become `_`, and a name too long for its
/// receipt is cut, with a digest of the whole to keep it unique.
fn claimed_stem(stem: &str) -> String {
    let clean: String = stem
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if clean.len() <= MAX_JOB_NAME {
        return clean;
    }
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(stem.as_bytes())[..4]);
    let keep: String = clean
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= MAX_JOB_NAME - 9)
        .map(|(_, c)| c)
        .collect();
    format!("{keep}-{digest}")
}

/// What an inbox entry is, if it is not a regular file.
fn odd_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_dir() {
        Some("a directory")
    } else {
        Some("a special file (a FIFO, a socket or a device)")
    }
}

/// Moves an inbox entry that is not a regular file into `checked/` as
/// `<name>.rejected`, without following or opening it, beside an invalid
/// receipt that says why.
fn set_aside(src: &Path, checked: &Path, stem: &str, what: &str) -> std::io::Result<()> {
    let (dst, name) = (0u32..)
        .map(|n| {
            let c = if n == 0 {
                stem.to_string()
            } else {
                format!("{stem}-{n}")
            };
            (checked.join(format!("{c}.rejected")), c)
        })
        .find(|(d, c)| {
            std::fs::symlink_metadata(d).is_err()
                && !checked.join(format!("{c}.json")).exists()
                && !checked.join(format!("{c}.report.json")).exists()
        })
        .expect("a free name");
    std::fs::rename(src, &dst)?;
    let mut receipt = crate::report::Receipt::new(&name, &dst);
    receipt.state = crate::report::JobState::Invalid;
    receipt.finished_at = Some(crate::report::now());
    receipt.problems = vec![format!(
        "the inbox entry is {what}, not a regular file; it was set aside as {} without being followed or opened",
        dst.display()
    )];
    crate::report::write_receipt(&checked.join(format!("{name}.report.json")), &receipt)?;
    warn!(job = %name, what, "inbox entry is not a regular file; set aside as invalid");
    Ok(())
}

/// A job for the scheduler.
pub(crate) struct Work {
    /// The claimed job file in `checked/`.
    pub(crate) path: PathBuf,
    /// Its lock, when the intake holds it already.
    pub(crate) lock: Option<std::fs::File>,
    /// The job permit it runs under.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Told the job's state when it ends (or is interrupted: `running`), for
    /// an intake that must answer its source (the NATS ack).
    pub(crate) done: Option<tokio::sync::oneshot::Sender<crate::report::JobState>>,
}

/// A claimed job: its file in `checked/`, and the lock on it.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) path: PathBuf,
    pub(crate) lock: std::fs::File,
}

/// Moves `src` into `checked` under a name no other job (or receipt) uses,
/// locked before it moves: from the moment it is in `checked/` no other
/// instance can mistake it for an orphan. `Ok(None)` means the file is gone
/// or locked: another instance is claiming it.
pub(crate) fn claim(src: &Path, checked: &Path) -> std::io::Result<Option<Claimed>> {
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut stem = claimed_stem(json_stem(&name).unwrap_or(&name));
    // `x.report.json` would be mistaken for a receipt in checked/.
    if stem.ends_with(".report") {
        stem.push_str("-job");
    }
    match std::fs::symlink_metadata(src) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) => {
            if let Some(what) = odd_kind(&meta) {
                set_aside(src, checked, &stem, what)?;
                return Ok(None);
            }
        }
    }
    let lock = match lock(src) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Swapped for something else since the look above.
        Err(e) if crate::localfile::is_not_a_file(&e) => {
            let meta = std::fs::symlink_metadata(src)?;
            set_aside(
                src,
                checked,
                &stem,
                odd_kind(&meta).unwrap_or("not a regular file"),
            )?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    for n in 0u32.. {
        let candidate = if n == 0 {
            stem.clone()
        } else {
            format!("{stem}-{n}")
        };
        let dst = checked.join(format!("{candidate}.json"));
        let receipt = checked.join(format!("{candidate}.report.json"));
        if dst.exists() || receipt.exists() {
            continue;
        }
        return match std::fs::rename(src, &dst) {
            Ok(()) => {
                // The job may carry a password: from here on, owner only.
                if let Err(e) = crate::store::owner_only(&dst) {
                    warn!(job_file = %dst.display(), error = %e, "cannot make the claimed job owner-only");
                }
                Ok(Some(Claimed { path: dst, lock }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
    }
    unreachable!()
}

#[derive(Debug)]
struct Pending {
    stamp: Stamp,
    /// When the stamp was last seen to change (or, for an old file, as if it had settled).
    since: Instant,
    /// Arrived by rename, or its writer closed it: no need to wait.
    immediate: bool,
    /// Its JSON ends before it is complete: a producer still writing in
    /// pieces. It waits for the rest, up to the incomplete grace.
    truncated: bool,
}

/// Does `path` hold JSON that stops in the middle (its writer is not done)?
/// Malformed JSON is not truncated: that job is claimed and found invalid.
fn truncated_json(path: &Path) -> bool {
    use std::io::Read;
    let mut bytes = Vec::new();
    // Never opened if it is not a regular file (a FIFO would block); the
    // claim sets such entries aside.
    let read = crate::localfile::open_regular(path, false)
        .and_then(|f| f.take(64 << 20).read_to_end(&mut bytes));
    if read.is_err() {
        return false;
    }
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => e.is_eof(),
        Ok(_) => false,
    }
}

pub(crate) struct Intake {
    pub(crate) inbox: PathBuf,
    pub(crate) checked: PathBuf,
    pub(crate) settle: Duration,
    pub(crate) sweep: Duration,
    /// Beaten every pass, and while waiting for a job permit (which is
    /// back-pressure, not a wedge); also counts the files waiting.
    pub(crate) health: Arc<Health>,
    /// Fired after the first pass: what was waiting at startup is claimed,
    /// or waits for a job permit. The daemon is ready then.
    pub(crate) watching: Option<tokio::sync::oneshot::Sender<()>>,
    /// How long a job file whose JSON stops mid-way may stay unchanged
    /// before it is claimed anyway (and found invalid).
    pub(crate) incomplete_grace: Duration,
    /// Names already logged as ignored (see [`Intake::note_ignored`]).
    pub(crate) ignored: std::sync::Mutex<std::collections::HashSet<String>>,
}

enum Signal {
    Paths(Vec<PathBuf>, bool),
    Rescan,
}

impl Intake {
    fn observe(&self, pending: &mut HashMap<PathBuf, Pending>, path: &Path, immediate: bool) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
            return;
        };
        if path.parent() != Some(self.inbox.as_path()) {
            return;
        }
        if !eligible(&name) {
            self.note_ignored(&name);
            return;
        }
        let meta = match std::fs::symlink_metadata(path) {
            // Odd entries (symlinks, FIFOs) go on to be set aside at the claim.
            Ok(m) if !m.is_dir() => m,
            Ok(_) => return,
            Err(_) => {
                pending.remove(path);
                return;
            }
        };
        let stamp = Stamp::of(&meta);
        match pending.get_mut(path) {
            Some(p) if p.stamp == stamp => p.immediate |= immediate,
            Some(p) => {
                p.stamp = stamp;
                p.since = Instant::now();
                p.immediate |= immediate;
                p.truncated = false;
            }
            None => {
                // A file untouched for longer than the settle interval is already settled.
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .unwrap_or_default();
                let now = Instant::now();
                let since = now.checked_sub(age.min(self.settle)).unwrap_or(now);
                pending.insert(
                    path.to_path_buf(),
                    Pending {
                        stamp,
                        since,
                        immediate,
                        truncated: false,
                    },
                );
            }
        }
    }

    /// Says once, at info, that a file that looks meant as a job is ignored
    /// for its name (`job.json.txt`, `job.jsn`); producers' hidden and
    /// temporary files are ignored silently, as they should be.
    fn note_ignored(&self, name: &str) {
        let quiet = name.starts_with('.')
            || name.starts_with('~')
            || [".tmp", ".part", ".swp"]
                .iter()
                .any(|s| name.to_ascii_lowercase().ends_with(s));
        if quiet {
            return;
        }
        let mut logged = self.ignored.lock().unwrap();
        if logged.len() < 10_000 && logged.insert(name.to_string()) {
            info!(file = ?name, "ignoring a file in the inbox: job files must end in .json");
        }
    }

    /// Files whose settle time is over and whose stamp is still the same.
    fn ready(&self, pending: &mut HashMap<PathBuf, Pending>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (path, p) in pending.iter_mut() {
            if !p.immediate && p.since.elapsed() < self.settle {
                continue;
            }
            if p.truncated && p.since.elapsed() < self.incomplete_grace {
                continue;
            }
            match std::fs::symlink_metadata(path) {
                Ok(m) if Stamp::of(&m) == p.stamp => {
                    if !p.truncated && truncated_json(path) {
                        // Claimed now it would be invalid: wait for the rest.
                        debug!(path = ?path, "job file ends mid-JSON; waiting for its writer");
                        p.truncated = true;
                        p.immediate = false;
                        continue;
                    }
                    out.push((p.stamp.mtime_ns, path.clone()))
                }
                Ok(m) => {
                    p.stamp = Stamp::of(&m);
                    p.since = Instant::now();
                    p.immediate = false;
                    p.truncated = false;
                }
                Err(_) => gone.push(path.clone()),
            }
        }
        for g in gone {
            debug!(path = ?g, "job file vanished before it was claimed");
            pending.remove(&g);
        }
        out.sort();
        out.into_iter().map(|(_, p)| p).collect()
    }

    fn next_due(&self, pending: &HashMap<PathBuf, Pending>) -> Option<Instant> {
        pending
            .values()
            .map(|p| {
                if p.truncated {
                    p.since + self.incomplete_grace
                } else if p.immediate {
                    Instant::now()
                } else {
                    p.since + self.settle
                }
            })
            .min()
    }

    /// Watches and claims until `stop`; each claimed job goes out with its permit.
    pub(crate) async fn run(
        mut self,
        out: mpsc::Sender<Work>,
        permits: Arc<Semaphore>,
        stop: CancellationToken,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
        let watcher = {
            let tx = tx.clone();
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let signal = match res {
                    Ok(ev) if ev.need_rescan() => Signal::Rescan,
                    Ok(ev) => {
                        // Complete: renamed in, or closed by its writer
                        // (inotify's close-write; a writer in pieces is
                        // caught by the truncated-JSON check).
                        let renamed_in = matches!(
                            ev.kind,
                            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                                | EventKind::Access(AccessKind::Close(AccessMode::Write))
                        );
                        let paths = if matches!(
                            ev.kind,
                            EventKind::Modify(ModifyKind::Name(RenameMode::Both))
                        ) {
                            ev.paths.into_iter().skip(1).collect()
                        } else {
                            ev.paths
                        };
                        Signal::Paths(paths, renamed_in)
                    }
                    Err(_) => Signal::Rescan,
                };
                let _ = tx.send(signal);
            })
            .and_then(|mut w| w.watch(&self.inbox, RecursiveMode::NonRecursive).map(|_| w))
        };
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, inbox = %self.inbox.display(), "cannot watch the inbox; relying on the periodic sweep");
                None
            }
        };
        info!(inbox = %self.inbox.display(), "watching for job files");

        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        let mut next_sweep = Instant::now();
        let mut beat = tokio::time::interval(self.health.beat_every());
        loop {
            self.health.beat(Loop::Intake);
            if Instant::now() >= next_sweep {
                let (jobs, others) = scan_split(&self.inbox);
                for p in jobs {
                    self.observe(&mut pending, &p, false);
                }
                for name in others {
                    self.note_ignored(&name);
                }
                next_sweep = Instant::now() + self.sweep;
            }
            for path in self.ready(&mut pending) {
                pending.remove(&path);
                self.health
                    .inbox_waiting
                    .store(pending.len() + 1, Ordering::Relaxed);
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Every job slot is taken: the startup pass is over.
                        if let Some(w) = self.watching.take() {
                            let _ = w.send(());
                        }
                        loop {
                            tokio::select! {
                                p = permits.clone().acquire_owned() => break p.expect("semaphore never closed"),
                                _ = beat.tick() => self.health.beat(Loop::Intake),
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                };
                match claim(&path, &self.checked) {
                    Ok(Some(claimed)) => {
                        // The daemon emits `job_claimed` (one log line) when it takes the work.
                        tracing::debug!(job_file = %claimed.path.display(), "claimed job");
                        let work = Work {
                            path: claimed.path,
                            lock: Some(claimed.lock),
                            permit,
                            done: None,
                        };
                        if out.send(work).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => debug!(path = ?path, "job file gone (claimed elsewhere)"),
                    Err(e) => {
                        warn!(path = ?path, error = %e, "cannot claim job file; will retry at the next sweep")
                    }
                }
                // Keep up with events while draining a large batch.
                while let Ok(sig) = rx.try_recv() {
                    self.handle(&mut pending, sig);
                }
            }
            self.health
                .inbox_waiting
                .store(pending.len(), Ordering::Relaxed);
            if let Some(w) = self.watching.take() {
                let _ = w.send(());
            }
            let wake = self
                .next_due(&pending)
                .map_or(next_sweep, |d| d.min(next_sweep))
                // Beat often enough, however long the sweep interval.
                .min(Instant::now() + self.health.beat_every());
            tokio::select! {
                _ = stop.cancelled() => return,
                sig = rx.recv() => {
                    if let Some(sig) = sig {
                        self.handle(&mut pending, sig);
                        while let Ok(sig) = rx.try_recv() {
                            self.handle(&mut pending, sig);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn handle(&self, pending: &mut HashMap<PathBuf, Pending>, sig: Signal) {
        match sig {
            Signal::Paths(paths, renamed_in) => {
                for p in paths {
                    self.observe(pending, &p, renamed_in);
                }
            }
            Signal::Rescan => {
                info!("watcher asked for a rescan (event overflow or error)");
                for p in scan(&self.inbox) {
                    self.observe(pending, &p, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(eligible("job.json"));
        assert!(eligible("UPPER.JSON"));
        assert!(eligible("Mixed.Json"));
        assert!(!eligible(".JSON"));
        assert!(!eligible("job.jsonx"));
        assert!(eligible("План.json"));
        assert!(!eligible(".job.json"));
        assert!(!eligible("~job.json"));
        assert!(!eligible("job.json.tmp"));
        assert!(!eligible("job.json.part"));
        assert!(!eligible("job.json.swp"));
        assert!(!eligible(".json"));
    }

    #[test]
    fn claim_picks_unique_names_and_tolerates_vanished_files() {
        let d = tempfile::tempdir().unwrap();
        let inbox = d.path().join("files");
        let checked = d.path().join("checked");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&checked).unwrap();
        std::fs::write(checked.join("a.report.json"), "{}").unwrap();
        std::fs::write(inbox.join("a.json"), "[]").unwrap();
        let got = claim(&inbox.join("a.json"), &checked).unwrap().unwrap();
        assert_eq!(got.path, checked.join("a-1.json"));
        // Locked from the moment it is in checked/.
        assert!(lock(&got.path).unwrap().is_none());
        assert!(claim(&inbox.join("a.json"), &checked).unwrap().is_none());
        drop(got);
        // A job file another instance has locked (is claiming) is left alone.
        std::fs::write(inbox.join("b.json"), "[]").unwrap();
        let other = lock(&inbox.join("b.json")).unwrap().unwrap();
        assert!(claim(&inbox.join("b.json"), &checked).unwrap().is_none());
        drop(other);
        assert!(claim(&inbox.join("b.json"), &checked).unwrap().is_some());
    }

    /// An intake on `dir` with no settle time.
    fn test_intake(dir: &Path) -> Intake {
        Intake {
            inbox: dir.to_path_buf(),
            checked: dir.join("checked"),
            settle: Duration::ZERO,
            sweep: Duration::from_secs(1),
            health: Arc::new(Health::default()),
            watching: None,
            incomplete_grace: Duration::from_secs(10),
            ignored: Default::default(),
        }
    }

    /// Files ignored for their name are noted once; producers' hidden and
    /// temporary files are not noted at all.
    #[test]
    fn ignored_names_are_noted_once() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "report.json.txt",
            "job.jsn",
            ".job.tmp",
            "job.json.part",
            "ok.json",
        ] {
            std::fs::write(d.path().join(n), "[]").unwrap();
        }
        let (jobs, others) = scan_split(d.path());
        assert_eq!(jobs, vec![d.path().join("ok.json")]);
        let intake = test_intake(d.path());
        for _ in 0..2 {
            for n in &others {
                intake.note_ignored(n);
            }
        }
        let mut noted: Vec<String> = intake.ignored.lock().unwrap().iter().cloned().collect();
        noted.sort();
        assert_eq!(noted, vec!["job.jsn", "report.json.txt"]);
    }

    /// A job file seen by the watcher or a sweep that is gone when its settle
    /// time is over (taken back, or claimed by another instance) is dropped
    /// from the pending set, not claimed and not retried.
    #[test]
    fn ready_forgets_files_that_vanished_while_settling() {
        let d = tempfile::tempdir().unwrap();
        let intake = test_intake(d.path());
        let mut pending = HashMap::new();
        let (gone, stays) = (d.path().join("gone.json"), d.path().join("stays.json"));
        std::fs::write(&gone, "[]").unwrap();
        std::fs::write(&stays, "[]").unwrap();
        intake.observe(&mut pending, &gone, false);
        intake.observe(&mut pending, &stays, false);
        std::fs::remove_file(&gone).unwrap();
        assert_eq!(intake.ready(&mut pending), vec![stays.clone()]);
        assert!(!pending.contains_key(&gone));
    }

    #[test]
    fn claimed_names_fit_their_receipts_and_hold_no_control_characters() {
        let d = tempfile::tempdir().unwrap();
        let (inbox, checked) = (d.path().join("in"), d.path().join("checked"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&checked).unwrap();
        let long = format!("{}.json", "ж".repeat(125));
        assert_eq!(long.len(), 255);
        std::fs::write(inbox.join(&long), b"[]").unwrap();
        let got = super::claim(&inbox.join(&long), &checked).unwrap().unwrap();
        let name = got.path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".json").unwrap();
        assert!(stem.len() <= super::MAX_JOB_NAME, "{}", stem.len());
        let receipt = checked.join(format!(".{stem}.report.json.4294967295.tmp"));
        std::fs::write(&receipt, b"{}").expect("the receipt's temp name fits");
        let odd = "a\nINFO forged\u{1b}[31m.json";
        std::fs::write(inbox.join(odd), b"[]").unwrap();
        let got = super::claim(&inbox.join(odd), &checked).unwrap().unwrap();
        let name = got.path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, "a_INFO forged_[31m.json");
    }
}
