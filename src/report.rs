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
use crate::store::{owner_only_file, write_atomic, write_atomic_with};
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
    /// Stopped by an operator (`ftpdrop cancel`, `DELETE /api/jobs/{job}`),
    /// or its claimed file was removed: what was not done stays undone.
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        self != JobState::Running
    }

    /// As receipts, the API and logs spell it: `done`, `partial`, ...
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::Invalid => "invalid",
            JobState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Pending,
    Done,
    Failed,
    Skipped,
    /// The job was cancelled before this entry was done.
    Cancelled,
}

/// Size and modification time of a local file, to notice that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
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
    pub(crate) server: String,
    pub(crate) local_path: String,
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
    pub(crate) segmented: bool,
    /// Which temp name the entry writes now: raised when the last one may
    /// still be held (locked) by a session given up mid-transfer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) temp_generation: u32,
    /// Temp files of earlier names still to be removed from the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) abandoned_temps: Vec<String>,
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
    /// A file ftpdrop made for the job: `sidecar` (`name.sha256`) or
    /// `done_marker`; absent for the job's own files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<String>,
    /// Why a `skipped` entry was not sent: `exists` (`if_exists: skip`) or
    /// `identical` (`if_exists: skip_if_identical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What was asked for beyond the bytes and did not happen (the
    /// modification time, the permissions). Never a failed upload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

fn is_zero(n: &u32) -> bool {
    *n == 0
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
            temp_generation: 0,
            abandoned_temps: Vec::new(),
            segments: None,
            next_attempt_at: None,
            disposal: None,
            made: match entry.kind {
                crate::job::Kind::Data => None,
                crate::job::Kind::Sidecar { .. } => Some("sidecar".into()),
                crate::job::Kind::Marker { .. } => Some("done_marker".into()),
            },
            skipped: None,
            warnings: entry.notes.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub job: String,
    pub(crate) job_file: String,
    pub state: JobState,
    pub claimed_at: String,
    pub(crate) updated_at: String,
    #[serde(default)]
    pub(crate) finished_at: Option<String>,
    /// Why the job is invalid, one line per problem, naming the field.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Another worker may have published some entries already (a NATS job
    /// delivered again): each entry first checks the server for its file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) settle_published: bool,
    #[serde(default)]
    pub entries: Vec<EntryReport>,
}

pub(crate) fn now() -> String {
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
    pub(crate) fn settle(&mut self) {
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
        let cancelled = self
            .entries
            .iter()
            .any(|e| e.state == EntryState::Cancelled);
        self.state = if cancelled {
            JobState::Cancelled
        } else if failed == 0 {
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

/// A receipt's top and a tally of its entries, read without holding the
/// entries: the daemon looks at every receipt in `checked/` (which jobs are
/// unfinished, the API's job list, the retention sweep), and a whole
/// receipt of a 100,000-entry job costs hundreds of megabytes to parse.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ReceiptHead {
    pub(crate) job: String,
    pub(crate) state: JobState,
    pub(crate) claimed_at: String,
    #[serde(default)]
    pub(crate) finished_at: Option<String>,
    /// Why the job is invalid (empty otherwise).
    #[serde(default)]
    pub(crate) problems: Vec<String>,
    #[serde(default)]
    pub(crate) entries: Tally,
}

impl ReceiptHead {
    /// The head of a receipt already in memory.
    pub(crate) fn of(r: &Receipt) -> ReceiptHead {
        ReceiptHead {
            job: r.job.clone(),
            state: r.state,
            claimed_at: r.claimed_at.clone(),
            finished_at: r.finished_at.clone(),
            problems: r.problems.clone(),
            entries: Tally::of(&r.entries),
        }
    }

    /// Why the job did not end well, in one line: its first problem, else
    /// the first failed entry's error.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.problems
            .first()
            .or(self.entries.error.as_ref())
            .map(String::as_str)
    }
}

/// The history index's row for a receipt whose head is `head`, read when
/// the receipt was last modified at `receipt_ms`.
pub(crate) fn index_row(head: &ReceiptHead, receipt_ms: i64) -> crate::history::Row {
    let at = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .map(crate::history::millis)
    };
    let t = &head.entries;
    crate::history::Row {
        job: head.job.clone(),
        state: serde_json::to_value(head.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        claimed_at: head.claimed_at.clone(),
        finished_at: head.finished_at.clone(),
        ended_ms: at(&head.finished_at)
            .or_else(|| at(&Some(head.claimed_at.clone())))
            .unwrap_or(receipt_ms),
        entries_total: t.total as u64,
        entries_done: t.done as u64,
        entries_failed: t.failed as u64,
        bytes_total: t.bytes_total,
        bytes_sent: t.bytes_sent,
        servers: t.servers.clone(),
        error: head.first_error().map(str::to_string),
        receipt_ms,
    }
}

/// Records a receipt just written at `path` in the history index of its
/// folder. A failure is only logged: the next start's catch-up repairs it.
pub(crate) fn index_receipt(path: &Path, head: &ReceiptHead) {
    let Some(history) = path.parent().and_then(crate::history::History::shared) else {
        return;
    };
    let row = index_row(head, crate::history::mtime_ms(path));
    if let Err(e) = history.record(&row) {
        tracing::warn!(job = %head.job, error = %format!("{e:#}"), "cannot record the job in the history index");
    }
}

/// Brings the history index of `checked/` level with its receipts.
pub(crate) fn catch_up_index(checked: &Path) -> Result<usize> {
    catch_up_index_until(checked, &|| false)
}

/// [`catch_up_index`], given up as soon as `stop` says so (a shutdown).
pub(crate) fn catch_up_index_until(checked: &Path, stop: &dyn Fn() -> bool) -> Result<usize> {
    let history =
        crate::history::History::shared(checked).context("the history index cannot be opened")?;
    history.catch_up(
        checked,
        |path, mtime| ReceiptHead::load(path).ok().map(|h| index_row(&h, mtime)),
        stop,
    )
}

/// Empties the history index of `checked/` and fills it from the receipts.
/// Returns how many jobs it holds.
pub fn rebuild_index(checked: &Path) -> Result<u64> {
    let history =
        crate::history::History::shared(checked).context("the history index cannot be opened")?;
    history.clear()?;
    catch_up_index(checked)?;
    history.count()
}

/// Writes a receipt that no live handle owns (a job set aside, a job
/// claimed from NATS) and records it in the history index.
pub(crate) fn write_receipt(path: &Path, receipt: &Receipt) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(receipt).map_err(std::io::Error::from)?;
    write_atomic(path, &bytes)?;
    index_receipt(path, &ReceiptHead::of(receipt));
    Ok(())
}

/// `host:port` of an entry's server as receipts name it
/// (`ftp://login@host:port`), as the API and the metrics name servers.
fn host_port(server: &str) -> &str {
    let s = server.split_once("://").map_or(server, |(_, rest)| rest);
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    s.split('/').next().unwrap_or(s)
}

/// At most this many distinct servers are named in a tally.
const TALLY_SERVERS: usize = 32;

/// Counts over a receipt's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) total: usize,
    /// Done or skipped.
    pub(crate) done: usize,
    pub(crate) failed: usize,
    /// The local files' sizes (as first seen, else as sent).
    pub(crate) bytes_total: u64,
    /// Bytes of the entries done or skipped.
    pub(crate) bytes_sent: u64,
    /// The servers the entries go to, distinct, in order of first mention
    /// (at most [`TALLY_SERVERS`]).
    pub(crate) servers: Vec<String>,
    /// The first error of an entry that failed.
    pub(crate) error: Option<String>,
}

impl Tally {
    fn add(
        &mut self,
        state: EntryState,
        bytes: Option<u64>,
        source: Option<Stamp>,
        server: &str,
        error: Option<&str>,
    ) {
        self.total += 1;
        let server = host_port(server);
        if self.servers.len() < TALLY_SERVERS && !self.servers.iter().any(|s| s == server) {
            self.servers.push(server.to_string());
        }
        if state == EntryState::Failed && self.error.is_none() {
            self.error = error.map(str::to_string);
        }
        let finished = matches!(state, EntryState::Done | EntryState::Skipped);
        self.done += finished as usize;
        self.failed += (state == EntryState::Failed) as usize;
        self.bytes_total += source.map(|s| s.size).or(bytes).unwrap_or(0);
        if finished {
            self.bytes_sent += bytes.unwrap_or(0);
        }
    }

    pub(crate) fn of(entries: &[EntryReport]) -> Tally {
        let mut t = Tally::default();
        for e in entries {
            t.add(e.state, e.bytes, e.source, &e.server, e.error.as_deref());
        }
        t
    }
}

impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The fields of an entry the tally reads; the rest is skipped unread.
        #[derive(Deserialize)]
        struct Brief {
            state: EntryState,
            #[serde(default)]
            bytes: Option<u64>,
            #[serde(default)]
            source: Option<Stamp>,
            #[serde(default)]
            server: String,
            #[serde(default)]
            error: Option<String>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tally;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of entries")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Tally, A::Error> {
                let mut t = Tally::default();
                while let Some(b) = seq.next_element::<Brief>()? {
                    t.add(b.state, b.bytes, b.source, &b.server, b.error.as_deref());
                }
                Ok(t)
            }
        }
        d.deserialize_seq(V)
    }
}

impl ReceiptHead {
    /// Reads the receipt at `path` through a buffer, keeping only its top and tally.
    pub(crate) fn load(path: &Path) -> Result<ReceiptHead> {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_reader(std::io::BufReader::with_capacity(64 * 1024, f))
            .with_context(|| format!("{} is not a receipt", path.display()))
    }
}

/// One page of a receipt: its top-level fields as written, the entries
/// `offset..offset + limit`, and how many entries it has in all.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) top: serde_json::Map<String, serde_json::Value>,
    pub(crate) entries: Vec<EntryReport>,
    pub(crate) total: usize,
}

impl Page {
    /// Reads a page of the receipt at `path` through a buffer; the entries
    /// outside the page are skipped unread (the API must not hold a whole
    /// 100,000-entry receipt per request).
    pub(crate) fn load(path: &Path, offset: usize, limit: usize) -> Result<Page> {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut de =
            serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, f));
        let page = serde::de::DeserializeSeed::deserialize(PageSeed { offset, limit }, &mut de)
            .and_then(|p| de.end().map(|()| p))
            .with_context(|| format!("{} is not a receipt", path.display()))?;
        Ok(page)
    }
}

struct PageSeed {
    offset: usize,
    limit: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for PageSeed {
    type Value = Page;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Page, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PageSeed {
    type Value = Page;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a receipt")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Page, A::Error> {
        let mut page = Page {
            top: serde_json::Map::new(),
            entries: Vec::new(),
            total: 0,
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == "entries" {
                (page.entries, page.total) = map.next_value_seed(EntriesSeed {
                    offset: self.offset,
                    limit: self.limit,
                })?;
            } else {
                page.top.insert(key, map.next_value()?);
            }
        }
        Ok(page)
    }
}

struct EntriesSeed {
    offset: usize,
    limit: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed {
    type Value = (Vec<EntryReport>, usize);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed {
    type Value = (Vec<EntryReport>, usize);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut n = 0;
        loop {
            let wanted = n >= self.offset && n - self.offset < self.limit;
            let more = if wanted {
                seq.next_element::<EntryReport>()?.map(|e| kept.push(e))
            } else {
                seq.next_element::<serde::de::IgnoredAny>()?.map(drop)
            };
            if more.is_none() {
                return Ok((kept, n));
            }
            n += 1;
        }
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
pub(crate) struct JobPaths {
    pub(crate) name: String,
    pub(crate) job_file: PathBuf,
    pub(crate) receipt: PathBuf,
    pub(crate) journal: PathBuf,
}

impl JobPaths {
    /// An operator's request to cancel the job (see `intake::request`).
    pub(crate) fn cancel_request(&self) -> PathBuf {
        self.beside("cancel")
    }

    /// An operator's request to try the job's waiting entries now.
    pub(crate) fn retry_request(&self) -> PathBuf {
        self.beside("retry")
    }

    /// The bytes of the files ftpdrop makes for the job (sidecars, done
    /// markers), absolute: entries read them as local files. Removed
    /// when the job ends.
    pub(crate) fn generated(&self) -> PathBuf {
        let p = self.beside("generated");
        std::path::absolute(&p).unwrap_or(p)
    }

    fn beside(&self, suffix: &str) -> PathBuf {
        self.job_file
            .with_file_name(format!("{}.{suffix}", self.name))
    }

    pub(crate) fn for_claimed(job_file: &Path) -> JobPaths {
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

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    entry: EntryReport,
}

/// The live receipt of one job: in memory, journaled, and written out by a coalescing task.
pub(crate) struct ReportHandle {
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
    health: Option<Arc<crate::health::Health>>,
    /// The job state last recorded in the history index.
    indexed: Mutex<Option<JobState>>,
    /// Wakes the write loop from its pause between writes when the job ends:
    /// the job's task awaits the loop, so sitting out the pause would add the
    /// whole interval to every job (200 ms each, minutes for 2,000 jobs).
    closing: Notify,
}

impl ReportHandle {
    /// Opens the live receipt; `recovered` carries the state of an interrupted run.
    pub(crate) fn open(
        paths: JobPaths,
        receipt: Receipt,
        health: Option<Arc<crate::health::Health>>,
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
            indexed: Mutex::new(None),
            health,
        }))
    }

    /// Replays a journal over a receipt: the later line for an entry wins.
    pub(crate) fn replay(receipt: &mut Receipt, journal: &Path) {
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

    /// Reads the live receipt without copying it (a copy of a large job's
    /// receipt costs several times the job file).
    pub(crate) fn with<T>(&self, read: impl FnOnce(&Receipt) -> T) -> T {
        read(&self.receipt.lock().unwrap())
    }

    pub(crate) fn entry(&self, index: usize) -> EntryReport {
        let mut r = self.receipt.lock().unwrap();
        slot_mut(&mut r.entries, index)
            .cloned()
            .expect("entry index")
    }

    /// Records a change to one entry: journal first, receipt rewrite soon after.
    pub(crate) fn update(&self, entry: EntryReport) {
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
    ///
    /// The receipt is serialized straight into the temp file while its lock
    /// is held: a copy or a byte buffer of a 100,000-entry receipt would cost
    /// several times the job's size. Updates wait for the serialization
    /// (tens of milliseconds for such a job); [`Self::write_loop`] spaces the
    /// writes so that this stays a small share of the time.
    pub(crate) async fn flush(self: &Arc<Self>) {
        let _one_at_a_time = self.writing.lock().await;
        let pending = self.health.as_ref().map(|h| h.receipt_writing());
        let mut delay = Duration::from_millis(200);
        loop {
            let me = self.clone();
            let res = tokio::task::spawn_blocking(move || {
                write_atomic_with(&me.paths.receipt, |w| {
                    let r = me.receipt.lock().unwrap();
                    serde_json::to_writer_pretty(w, &*r).map_err(std::io::Error::from)
                })?;
                // On this thread: the index may wait for another instance's write.
                me.index_if_changed();
                Ok::<_, std::io::Error>(())
            })
            .await;
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

    /// Records the job in the history index when its state changed since
    /// the last record (claimed, then ended): the index lists jobs, it does
    /// not follow their progress.
    fn index_if_changed(&self) {
        let head = {
            let r = self.receipt.lock().unwrap();
            let mut indexed = self.indexed.lock().unwrap();
            if *indexed == Some(r.state) {
                return;
            }
            *indexed = Some(r.state);
            ReceiptHead::of(&r)
        };
        index_receipt(&self.paths.receipt, &head);
    }

    /// Rewrites the receipt whenever it changed, at most every `interval`,
    /// and never more than a fifth of the time: a write of a large receipt
    /// holds up updates while it serializes.
    pub(crate) async fn write_loop(self: Arc<Self>, interval: Duration) {
        use std::sync::atomic::Ordering;
        while !self.closed.load(Ordering::SeqCst) {
            self.dirty.notified().await;
            if self.closed.load(Ordering::SeqCst) {
                break;
            }
            let began = std::time::Instant::now();
            self.flush().await;
            let pause = interval.max(began.elapsed() * 4);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // `notify_one` keeps a permit, so a close during the flush is not missed.
                _ = self.closing.notified() => break,
            }
        }
    }

    /// Ends the write loop (the caller writes the last receipt itself).
    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.dirty.notify_one();
        self.closing.notify_one();
    }

    /// Settles the job state, writes the final receipt and drops the journal.
    pub(crate) async fn finish(self: &Arc<Self>) -> JobState {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt_of(n: usize) -> Receipt {
        let mut r = Receipt::new("big", Path::new("/x/big.json"));
        r.entries = (0..n)
            .map(|i| EntryReport {
                index: i,
                state: [EntryState::Done, EntryState::Failed, EntryState::Skipped][i % 3],
                server: "u@h:21".into(),
                local_path: format!("/l/{i}"),
                remote_path: format!("r/{i}"),
                bytes: Some(i as u64),
                sha256: None,
                verification: vec!["size".into()],
                attempts: 1,
                elapsed_ms: 1,
                error: (i % 3 == 1).then(|| "refused".into()),
                source: Some(Stamp {
                    size: 10,
                    mtime_ns: 1,
                }),
                publishing: false,
                segmented: false,
                temp_generation: 0,
                abandoned_temps: Vec::new(),
                segments: None,
                next_attempt_at: None,
                disposal: None,
                made: None,
                skipped: None,
                warnings: Vec::new(),
            })
            .collect();
        r
    }

    #[test]
    fn a_page_holds_only_its_window_and_counts_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.report.json");
        let r = receipt_of(2_500);
        write_atomic(&path, &serde_json::to_vec_pretty(&r).unwrap()).unwrap();

        let p = Page::load(&path, 2_400, 1_000).unwrap();
        assert_eq!(p.total, 2_500);
        let got: Vec<usize> = p.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, (2_400..2_500).collect::<Vec<_>>());
        assert_eq!(p.entries[1].error.as_deref(), Some("refused"));
        assert_eq!(p.top["job"], "big");
        assert!(!p.top.contains_key("entries"));

        let p = Page::load(&path, 10_000, 5).unwrap();
        assert_eq!((p.entries.len(), p.total), (0, 2_500));
    }

    #[test]
    fn a_head_tallies_the_entries_as_the_whole_receipt_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.report.json");
        let r = receipt_of(1_000);
        write_atomic(&path, &serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        let h = ReceiptHead::load(&path).unwrap();
        assert_eq!(h.entries, Tally::of(&r.entries));
        assert_eq!(
            (h.entries.total, h.entries.done, h.entries.failed),
            (1_000, 667, 333)
        );
        assert_eq!(h.entries.bytes_total, 10_000);
        assert_eq!(h.state, JobState::Running);
        // Not a receipt: an error, not a guess.
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert!(ReceiptHead::load(&path).is_err());
    }
}
