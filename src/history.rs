//! The history index: one row per job that has a receipt (its state,
//! times, servers, bytes and first error), in an SQLite file inside
//! `checked/` (`ftpdrop-history.sqlite`), so that the API, `ftpdrop status`
//! and the dashboard answer from an index instead of reading receipts.
//!
//! Receipts stay the source of truth. A row is written in the same step as
//! its receipt (right after the receipt's rename), and [`History::catch_up`]
//! brings the index level with the folder at start (a missing index, a
//! crash between the two writes, receipts written by hand or by an older
//! version) by re-reading only the receipts newer than their row. Until it
//! has caught up once, [`History::ready`] is false and callers read the
//! receipts as before. `ftpdrop reindex` rebuilds it from nothing.
//!
//! Several instances sharing `checked/` share the file: SQLite's own locks
//! (WAL mode, a busy timeout) order their writes. The module knows nothing
//! of receipts: [`Row`] is what callers give it.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The index's file name inside `checked/` (not a job name: no `.json`).
pub(crate) const FILE: &str = "ftpdrop-history.sqlite";

/// Bumped when the table changes shape: an older file is rebuilt.
const SCHEMA: i64 = 2;

/// Rows written per transaction while catching up.
const BATCH: usize = 2_000;

/// One job as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) job: String,
    /// `running`, `done`, `partial`, `failed` or `invalid`.
    pub(crate) state: String,
    pub(crate) claimed_at: String,
    pub(crate) finished_at: Option<String>,
    /// What the list is ordered by: the end (else the claim) in ms since 1970.
    pub(crate) ended_ms: i64,
    pub(crate) entries_total: u64,
    pub(crate) entries_done: u64,
    pub(crate) entries_failed: u64,
    pub(crate) bytes_total: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) servers: Vec<String>,
    pub(crate) error: Option<String>,
    /// The receipt's modification time when this row was read from it.
    pub(crate) receipt_ms: i64,
}

/// What a list asks for; every field narrows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub(crate) state: Option<String>,
    pub(crate) server: Option<String>,
    /// Jobs that ended at or after this time (ms since 1970).
    pub(crate) since_ms: Option<i64>,
    /// Jobs that ended before this time.
    pub(crate) until_ms: Option<i64>,
    /// Text the job's name or error contains (case-insensitive for ASCII).
    pub(crate) text: Option<String>,
    /// The page after this job (the last of the previous page).
    pub(crate) after: Option<String>,
    /// Only jobs that ended (no `running` row).
    pub(crate) ended_only: bool,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
}

/// The open index of one `checked/` folder.
pub(crate) struct History {
    db: Mutex<Connection>,
    ready: AtomicBool,
}

/// Milliseconds since 1970 of a time.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The modification time of a file, in ms since 1970 (0 if unknown).
pub(crate) fn mtime_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(millis)
        .unwrap_or(0)
}

impl History {
    /// Opens (creating if needed) the index of `checked/`.
    pub(crate) fn open(checked: &Path) -> Result<History> {
        let path = checked.join(FILE);
        let db = Connection::open(&path)
            .with_context(|| format!("cannot open the history index {}", path.display()))?;
        db.busy_timeout(Duration::from_secs(10))?;
        // WAL: readers (the API) never wait for a writer (a job ending).
        db.pragma_update(None, "journal_mode", "WAL")?;
        // A crash may lose the last rows; catch_up puts them back from the receipts.
        db.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA {
            db.execute_batch(
                "DROP TABLE IF EXISTS jobs; DROP TABLE IF EXISTS job_servers;
                 DROP TABLE IF EXISTS meta;",
            )?;
        }
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs(
                job TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                claimed_at TEXT NOT NULL,
                finished_at TEXT,
                ended_ms INTEGER NOT NULL,
                entries_total INTEGER NOT NULL,
                entries_done INTEGER NOT NULL,
                entries_failed INTEGER NOT NULL,
                bytes_total INTEGER NOT NULL,
                bytes_sent INTEGER NOT NULL,
                servers TEXT NOT NULL,
                error TEXT,
                receipt_ms INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs(ended_ms, job);
             CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, ended_ms, job);
             CREATE TABLE IF NOT EXISTS job_servers(
                server TEXT NOT NULL,
                ended_ms INTEGER NOT NULL,
                job TEXT NOT NULL,
                PRIMARY KEY(server, ended_ms, job)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS job_servers_by_job ON job_servers(job);
             CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        db.pragma_update(None, "user_version", SCHEMA)?;
        // Like the receipts it is read from: the owner's only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(History {
            db: Mutex::new(db),
            ready: AtomicBool::new(false),
        })
    }

    /// The index of `checked/`, opened once per process and shared by its
    /// writers and readers; `None` (and one warning) if it cannot be opened,
    /// and then callers read the receipts.
    pub(crate) fn shared(checked: &Path) -> Option<Arc<History>> {
        type Opened = Mutex<HashMap<PathBuf, Option<Arc<History>>>>;
        static OPEN: OnceLock<Opened> = OnceLock::new();
        let mut open = OPEN.get_or_init(Default::default).lock().unwrap();
        open.entry(checked.to_path_buf())
            .or_insert_with(|| match History::open(checked) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no history index: lists read the receipts");
                    None
                }
            })
            .clone()
    }

    /// The index of `checked/` if it exists (never created here: for
    /// callers that only keep an existing index in step).
    pub(crate) fn existing(checked: &Path) -> Option<Arc<History>> {
        if !checked.join(FILE).exists() {
            return None;
        }
        History::shared(checked)
    }

    /// Whether the index has caught up with the receipts since it was opened.
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Writes one row (replacing the job's earlier one).
    pub(crate) fn record(&self, row: &Row) -> Result<()> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction()?;
        put(&tx, row)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops a job's row (its receipt is gone).
    pub(crate) fn forget(&self, job: &str) -> Result<()> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction()?;
        drop_row(&tx, job)?;
        tx.commit()?;
        Ok(())
    }

    /// How many rows the index holds.
    pub(crate) fn count(&self) -> Result<u64> {
        let db = self.db.lock().unwrap();
        let n: i64 = db.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The jobs in `states`, each with the time of the receipt its row was
    /// read from (final states: which jobs need no second look, unless
    /// their receipt changed since).
    pub(crate) fn jobs_in(&self, states: &[&str]) -> Result<HashMap<String, i64>> {
        let db = self.db.lock().unwrap();
        let mut out = HashMap::new();
        let mut q = db.prepare("SELECT job, receipt_ms FROM jobs WHERE state = ?1")?;
        for s in states {
            for row in q.query_map([s], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
                let (job, at) = row?;
                out.insert(job, at);
            }
        }
        Ok(out)
    }

    /// Final jobs that ended before `cutoff_ms`, oldest first, at most `limit`.
    pub(crate) fn ended_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<String>> {
        let db = self.db.lock().unwrap();
        let mut q = db.prepare(
            "SELECT job FROM jobs WHERE ended_ms < ?1 AND state != 'running'
             ORDER BY ended_ms, job LIMIT ?2",
        )?;
        let rows = q.query_map(params![cutoff_ms, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Final jobs that ended at or after `since_ms`.
    pub(crate) fn ended_since(&self, since_ms: i64) -> Result<Vec<String>> {
        let db = self.db.lock().unwrap();
        let mut q = db.prepare(
            "SELECT job FROM jobs WHERE ended_ms >= ?1 AND state != 'running' ORDER BY ended_ms",
        )?;
        let rows = q.query_map([since_ms], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A value the index keeps for its users (the housekeeping's marks).
    pub(crate) fn mark(&self, key: &str) -> Result<Option<i64>> {
        let db = self.db.lock().unwrap();
        let v: Option<String> = db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    pub(crate) fn set_mark(&self, key: &str, value: i64) -> Result<()> {
        let db = self.db.lock().unwrap();
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            params![key, value.to_string()],
        )?;
        Ok(())
    }

    /// One page of jobs, newest end first.
    pub(crate) fn query(&self, q: &Query) -> Result<Vec<Row>> {
        let db = self.db.lock().unwrap();
        let mut sql = String::from(
            "SELECT j.job, j.state, j.claimed_at, j.finished_at, j.ended_ms, j.entries_total,
                    j.entries_done, j.entries_failed, j.bytes_total, j.bytes_sent, j.servers,
                    j.error, j.receipt_ms FROM jobs j",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |v: rusqlite::types::Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        let mut filters = Vec::new();
        if let Some(server) = &q.server {
            // Through the per-server table: a rare server is found without a scan.
            sql.push_str(" JOIN job_servers s ON s.job = j.job AND s.ended_ms = j.ended_ms");
            filters.push(format!("s.server = {}", arg(server.clone().into())));
        }
        if let Some(state) = &q.state {
            filters.push(format!("j.state = {}", arg(state.clone().into())));
        }
        if let Some(t) = q.since_ms {
            filters.push(format!("j.ended_ms >= {}", arg(t.into())));
        }
        if let Some(t) = q.until_ms {
            filters.push(format!("j.ended_ms < {}", arg(t.into())));
        }
        if let Some(text) = &q.text {
            let pattern = format!(
                "%{}%",
                text.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            let p = arg(pattern.into());
            filters.push(format!(
                "(j.job LIKE {p} ESCAPE '\\' OR j.error LIKE {p} ESCAPE '\\')"
            ));
        }
        if let Some(after) = &q.after {
            let at: Option<i64> = db
                .query_row("SELECT ended_ms FROM jobs WHERE job = ?1", [after], |r| {
                    r.get(0)
                })
                .optional()?;
            // A job no longer in the index: nothing is known to come after it.
            let Some(at) = at else { return Ok(Vec::new()) };
            let (a, b) = (arg(at.into()), arg(after.clone().into()));
            filters.push(format!("(j.ended_ms, j.job) < ({a}, {b})"));
        }
        if q.ended_only {
            filters.push("j.state != 'running'".into());
        }
        if !filters.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&filters.join(" AND "));
        }
        let (limit, offset) = (arg((q.limit as i64).into()), arg((q.offset as i64).into()));
        sql.push_str(&format!(
            " ORDER BY j.ended_ms DESC, j.job DESC LIMIT {limit} OFFSET {offset}"
        ));
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let servers: String = r.get(10)?;
            Ok(Row {
                job: r.get(0)?,
                state: r.get(1)?,
                claimed_at: r.get(2)?,
                finished_at: r.get(3)?,
                ended_ms: r.get(4)?,
                entries_total: r.get::<_, i64>(5)? as u64,
                entries_done: r.get::<_, i64>(6)? as u64,
                entries_failed: r.get::<_, i64>(7)? as u64,
                bytes_total: r.get::<_, i64>(8)? as u64,
                bytes_sent: r.get::<_, i64>(9)? as u64,
                servers: servers
                    .split('\n')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                error: r.get(11)?,
                receipt_ms: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Brings the index level with the receipts in `checked/`: a receipt
    /// with no row, or newer than its row, is read again with `read`; a row
    /// whose receipt is gone is dropped. Returns how many rows changed.
    /// Jobs that end meanwhile are recorded by their writers as usual.
    pub(crate) fn catch_up(
        &self,
        checked: &Path,
        read: impl Fn(&Path, i64) -> Option<Row>,
        stop: &dyn Fn() -> bool,
    ) -> Result<usize> {
        let known: HashMap<String, i64> = {
            let db = self.db.lock().unwrap();
            let mut q = db.prepare("SELECT job, receipt_ms FROM jobs")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut seen = std::collections::HashSet::with_capacity(known.len());
        let mut changed = 0;
        let mut batch = Vec::with_capacity(BATCH);
        let rd = std::fs::read_dir(checked)
            .with_context(|| format!("cannot read {}", checked.display()))?;
        for e in rd.flatten() {
            if stop() {
                // Not ready: the next start goes on from here.
                self.put_all(&batch)?;
                anyhow::bail!("stopped before the index was level");
            }
            let name = e.file_name();
            let Some(job) = name.to_str().and_then(|n| n.strip_suffix(".report.json")) else {
                continue;
            };
            if job.starts_with('.') {
                continue;
            }
            let mtime = e
                .metadata()
                .and_then(|m| m.modified())
                .map(millis)
                .unwrap_or(0);
            seen.insert(job.to_string());
            if known.get(job).is_some_and(|&at| at >= mtime) {
                continue;
            }
            if let Some(row) = read(&e.path(), mtime) {
                batch.push(row);
            }
            if batch.len() >= BATCH {
                changed += self.put_all(&batch)?;
                batch.clear();
            }
        }
        changed += self.put_all(&batch)?;
        let gone: Vec<&String> = known.keys().filter(|j| !seen.contains(*j)).collect();
        {
            let mut db = self.db.lock().unwrap();
            for chunk in gone.chunks(BATCH) {
                let tx = db.transaction()?;
                for job in chunk {
                    // Written just now by a job that ended after the folder was read?
                    let still = checked.join(format!("{job}.report.json")).exists();
                    if !still {
                        drop_row(&tx, job)?;
                        changed += 1;
                    }
                }
                tx.commit()?;
            }
        }
        self.ready.store(true, Ordering::Release);
        Ok(changed)
    }

    /// Empties the index (`ftpdrop reindex` then catches up from nothing).
    pub(crate) fn clear(&self) -> Result<()> {
        let db = self.db.lock().unwrap();
        db.execute_batch("DELETE FROM jobs; DELETE FROM job_servers;")?;
        self.ready.store(false, Ordering::Release);
        Ok(())
    }

    fn put_all(&self, rows: &[Row]) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction()?;
        for row in rows {
            // A writer recorded a newer state while this one was read.
            let newer: Option<i64> = tx
                .query_row(
                    "SELECT receipt_ms FROM jobs WHERE job = ?1",
                    [&row.job],
                    |r| r.get(0),
                )
                .optional()?;
            if newer.is_some_and(|at| at > row.receipt_ms) {
                continue;
            }
            put(&tx, row)?;
        }
        tx.commit()?;
        Ok(rows.len())
    }
}

fn drop_row(tx: &rusqlite::Transaction, job: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM job_servers WHERE job = ?1", [job])?;
    tx.execute("DELETE FROM jobs WHERE job = ?1", [job])?;
    Ok(())
}

fn put(tx: &rusqlite::Transaction, row: &Row) -> rusqlite::Result<()> {
    drop_row(tx, &row.job)?;
    tx.execute(
        "INSERT INTO jobs(job, state, claimed_at, finished_at, ended_ms, entries_total,
            entries_done, entries_failed, bytes_total, bytes_sent, servers, error, receipt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            row.job,
            row.state,
            row.claimed_at,
            row.finished_at,
            row.ended_ms,
            row.entries_total as i64,
            row.entries_done as i64,
            row.entries_failed as i64,
            row.bytes_total as i64,
            row.bytes_sent as i64,
            row.servers.join("\n"),
            row.error,
            row.receipt_ms,
        ],
    )?;
    for server in &row.servers {
        tx.execute(
            "INSERT OR IGNORE INTO job_servers(server, ended_ms, job) VALUES (?1, ?2, ?3)",
            params![server, row.ended_ms, row.job],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(job: &str, state: &str, ended_ms: i64, server: &str, error: Option<&str>) -> Row {
        Row {
            job: job.into(),
            state: state.into(),
            claimed_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: None,
            ended_ms,
            entries_total: 1,
            entries_done: (state == "done") as u64,
            entries_failed: (state == "failed") as u64,
            bytes_total: 10,
            bytes_sent: 10,
            servers: vec![server.into()],
            error: error.map(str::to_string),
            receipt_ms: ended_ms,
        }
    }

    fn names(rows: Vec<Row>) -> Vec<String> {
        rows.into_iter().map(|r| r.job).collect()
    }

    #[test]
    fn lists_filter_and_page_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        for i in 0..10 {
            let state = if i % 3 == 0 { "failed" } else { "done" };
            let server = if i % 2 == 0 { "a" } else { "b" };
            let error = (state == "failed").then(|| format!("550 no 50%_{i}"));
            h.record(&row(
                &format!("j{i}"),
                state,
                1000 + i,
                server,
                error.as_deref(),
            ))
            .unwrap();
        }
        // A job recorded again (running, then ended) keeps one row.
        h.record(&row("j9", "done", 1009, "b", None)).unwrap();
        let all = |q: Query| names(h.query(&Query { limit: 100, ..q }).unwrap());
        assert_eq!(all(Query::default()).len(), 10);
        assert_eq!(
            all(Query {
                state: Some("failed".into()),
                ..Default::default()
            }),
            ["j6", "j3", "j0"]
        );
        assert_eq!(
            all(Query {
                server: Some("a".into()),
                ..Default::default()
            }),
            ["j8", "j6", "j4", "j2", "j0"]
        );
        assert_eq!(
            all(Query {
                text: Some("50%_3".into()),
                ..Default::default()
            }),
            ["j3"]
        );
        assert_eq!(
            all(Query {
                since_ms: Some(1007),
                until_ms: Some(1009),
                ..Default::default()
            }),
            ["j8", "j7"]
        );
        let page = |after: Option<&str>| {
            names(
                h.query(&Query {
                    limit: 4,
                    after: after.map(Into::into),
                    ..Default::default()
                })
                .unwrap(),
            )
        };
        assert_eq!(page(None), ["j9", "j8", "j7", "j6"]);
        assert_eq!(page(Some("j6")), ["j5", "j4", "j3", "j2"]);
        assert_eq!(page(Some("j2")), ["j1", "j0"]);
        assert!(page(Some("gone")).is_empty());
        h.forget("j0").unwrap();
        assert_eq!(h.count().unwrap(), 9);
        assert_eq!(h.ended_before(1003, 10).unwrap(), ["j1", "j2"]);
    }

    #[test]
    fn catching_up_reads_only_new_receipts_and_drops_the_gone() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        h.record(&row("gone", "done", 1, "a", None)).unwrap();
        for j in ["x", "y"] {
            std::fs::write(dir.path().join(format!("{j}.report.json")), "{}").unwrap();
        }
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = |p: &Path, mtime: i64| {
            reads.fetch_add(1, Ordering::SeqCst);
            let job = p.file_name()?.to_str()?.strip_suffix(".report.json")?;
            Some(Row {
                receipt_ms: mtime,
                ..row(job, "done", 5, "a", None)
            })
        };
        assert!(!h.ready());
        assert_eq!(h.catch_up(dir.path(), read, &|| false).unwrap(), 3);
        assert!(h.ready());
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Level now: nothing is read again.
        assert_eq!(h.catch_up(dir.path(), read, &|| false).unwrap(), 0);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(
            names(
                h.query(&Query {
                    limit: 9,
                    ..Default::default()
                })
                .unwrap()
            ),
            ["y", "x"]
        );
    }
}
