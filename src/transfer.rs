//! One attempt at one entry over one session: the publish protocol.
//!
//! The bytes go to a temporary name in the target directory, are checked,
//! and only then renamed to the final name, so no reader ever sees a partial
//! file under the final name. The temporary name is derived from (job,
//! entry, final path): unique per entry and the same after a restart, so a
//! retry or a restarted daemon finds its own partial upload and continues it
//! at the server's SIZE instead of starting from zero. A big file may go in
//! segments over several sessions at once (see [`crate::segment`]); the
//! checks and the rename after it are the same.

use crate::fault::Fault;
use crate::ftp::{normalize_dir, Session, Upload};
use crate::job::{join_remote, Entry, IfExists};
use crate::pool::{Lease, Pool};
use crate::report::Stamp;
use crate::segment;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Bytes per local read; large reads keep syscalls and channel hops few.
pub(crate) const CHUNK: usize = 512 * 1024;
/// Chunks read ahead of the network: bounds memory at about 2.5 MiB per upload.
pub(crate) const READ_AHEAD: usize = 4;

/// What a finished attempt achieved.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub bytes: u64,
    pub sha256: Option<String>,
    pub verification: Vec<String>,
    pub skipped: bool,
    /// Bytes the server already had and that were not sent again.
    pub resumed_from: u64,
    /// Connections the bytes went over (1 unless the upload was segmented).
    pub segments: usize,
}

/// What the scheduler remembers about an entry between attempts (and restarts).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// The local file when the first attempt started.
    pub source: Option<Stamp>,
    /// A temp file may exist on the server (an earlier attempt got that far).
    pub may_have_temp: bool,
    /// An earlier attempt was about to rename; the final file may be ours.
    pub publishing: bool,
    /// The server refused to resume (proftpd without `AllowStoreRestart`
    /// answers 451 to both REST+STOR and APPE): upload from zero instead.
    pub no_resume: bool,
    /// The temp file was (being) written in segments: it may have holes, so
    /// its SIZE says nothing about what is there; it is deleted, not resumed.
    pub segmented: bool,
}

/// The deterministic temp name of an entry.
pub fn temp_name(job: &str, entry: &Entry) -> String {
    let mut h = Sha256::new();
    h.update(job.as_bytes());
    h.update([0]);
    h.update(entry.index.to_le_bytes());
    h.update([0]);
    h.update(entry.remote_path().as_bytes());
    format!(".ftpdrop-{}.part", &hex::encode(h.finalize())[..16])
}

fn local_stamp(entry: &Entry) -> Result<Stamp, Fault> {
    let field = format!("entries[{}].file.local_path", entry.index);
    let meta = std::fs::metadata(&entry.local_path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        Fault::permanent(format!("{field}: {why}: {}", entry.local_path.display()))
    })?;
    if meta.is_dir() {
        return Err(Fault::permanent(format!(
            "{field}: is a directory, not a file: {}",
            entry.local_path.display()
        )));
    }
    Ok(Stamp::of(&meta))
}

/// Resolves to the file's SHA-256 and the number of bytes read.
type ReaderTask = tokio::task::JoinHandle<std::io::Result<(String, u64)>>;

/// Reads the local file on a blocking thread, hashing all of it and sending
/// the part from `offset` on. Returns the SHA-256 and the bytes read.
///
/// Chunks are sized to what is left of the `expected` size (plus one byte, so
/// that a file that grew is noticed), between 8 KiB and [`CHUNK`], and read
/// into fresh capacity without zero-filling it first: for thousands of small
/// files, zeroing and faulting in 512 KiB buffers was a tenth of the CPU.
fn spawn_reader(
    path: PathBuf,
    offset: u64,
    expected: u64,
) -> (mpsc::Receiver<Vec<u8>>, ReaderTask) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let handle = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
        let mut f = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        if offset > 0 {
            // The server already has [0, offset): hash it without sending it.
            let mut head = (&mut f).take(offset);
            total = std::io::copy(&mut head, &mut hasher)?;
            f.seek(SeekFrom::Start(total))?;
        }
        loop {
            let want = (expected.saturating_sub(total) + 1).clamp(8 * 1024, CHUNK as u64);
            let mut chunk = Vec::with_capacity(want as usize);
            let filled = (&mut f).take(want).read_to_end(&mut chunk)?;
            if filled == 0 {
                break;
            }
            hasher.update(&chunk);
            total += filled as u64;
            if tx.blocking_send(chunk).is_err() {
                // The uploader gave up; its error is the one to report.
                break;
            }
            if (filled as u64) < want {
                break;
            }
        }
        Ok((hex::encode(hasher.finalize()), total))
    });
    (rx, handle)
}

/// Runs one attempt; `memory` is updated for the next attempt.
///
/// `journal` is called before each step that changes the server: just
/// before the first byte goes to the temp file and just before the rename.
/// The caller must make `memory` durable there, because a `kill -9` right
/// after that step leaves the server in a state only `memory` explains: a
/// temp file to resume (not restart), or a final file that is already ours.
///
/// `lease` carries the session; `pool` and `policy` let a big file borrow
/// more sessions of the same server for a segmented upload.
pub async fn attempt(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    policy: &segment::Policy,
    job: &str,
    entry: &Entry,
    memory: &mut Memory,
    mut journal: impl FnMut(&Memory),
) -> Result<Outcome, Fault> {
    let dirs = lease.dirs().clone();
    let stamp = local_stamp(entry)?;
    let dir = normalize_dir(&entry.server_path);
    let final_path = join_remote(&dir, &entry.remote_name);
    let temp_path = join_remote(&dir, &temp_name(job, entry));

    // The local file changed since the first attempt: what the server has is stale.
    let source_changed = memory.source.is_some_and(|s| s != stamp);
    memory.source = Some(stamp);

    // An earlier run may have renamed the temp file and died before recording it.
    if memory.publishing && !source_changed {
        if lease.session().size(&temp_path).await?.is_none()
            && lease.session().size(&final_path).await? == Some(stamp.size)
        {
            let sha = hash_local(&entry.local_path).await?;
            return Ok(Outcome {
                bytes: stamp.size,
                sha256: Some(sha),
                verification: vec!["size".into()],
                skipped: false,
                resumed_from: stamp.size,
                segments: 1,
            });
        }
        memory.publishing = false;
    }

    lease.session().mkdir_p(&dir, &dirs).await?;

    if entry.if_exists != IfExists::Overwrite {
        if let Some(existing) = lease.session().size(&final_path).await? {
            if entry.if_exists == IfExists::Skip {
                return Ok(Outcome {
                    bytes: existing,
                    sha256: None,
                    verification: Vec::new(),
                    skipped: true,
                    resumed_from: 0,
                    segments: 1,
                });
            }
            return Err(Fault::permanent(format!(
                "{final_path} already exists on the server ({existing} bytes) and if_exists is \"fail\""
            )));
        }
    }

    let mut offset = 0;
    if memory.may_have_temp {
        match lease.session().size(&temp_path).await? {
            Some(have)
                if !source_changed
                    && !memory.no_resume
                    && !memory.segmented
                    && have <= stamp.size =>
            {
                offset = have
            }
            // Deleted rather than truncated by the next STOR: a dead
            // connection's last bytes may still be on their way to it, and
            // then they go to the deleted file, not to the new one.
            Some(_) => lease.session().delete(&temp_path).await?,
            None => {}
        }
    }
    let mut extra = if offset == 0 {
        segment::prepare(lease, pool, &entry.server, policy, &dir, stamp.size).await?
    } else {
        Vec::new()
    };
    memory.may_have_temp = true;
    memory.segmented = !extra.is_empty();
    // Recorded before the temp file exists: a restarted daemon then knows to
    // look for it (and resume, or delete it if it was segmented), and knows
    // which version of the local file it holds (so that a file changed while
    // we were down is sent afresh).
    journal(memory);

    let segments = 1 + extra.len();
    let sent = if extra.is_empty() {
        send(lease.session(), entry, &temp_path, offset, stamp.size).await
    } else {
        segment::send(lease.session(), &mut extra, entry, &temp_path, stamp.size).await
    };
    // The extra sessions go back to the pool (or are closed if broken) now.
    drop(extra);
    let session = lease.session();
    let (sha, sent_total) = match sent {
        Err(f) if offset > 0 && refused_resume(&f) => {
            memory.no_resume = true;
            return Err(f.context("the server refused to resume; the next attempt starts over"));
        }
        other => other?,
    };

    let after = local_stamp(entry)?;
    if after != stamp || sent_total != stamp.size {
        // Never publish a mix of two versions; the next attempt starts over.
        // `memory.source` stays the stamp the temp file was started from, so
        // the next attempt (or a restarted daemon) sees `source_changed` and
        // deletes the temp file instead of resuming from its mixed bytes.
        return Err(Fault::transient(format!(
            "entries[{}].file.local_path changed during upload ({} -> {} bytes); will start over",
            entry.index, stamp.size, after.size
        )));
    }

    let have = session.size(&temp_path).await?;
    if have != Some(stamp.size) {
        return Err(Fault::transient(format!(
            "size check of {temp_path}: server has {}, expected {} bytes",
            have.map_or("nothing".to_string(), |n| n.to_string()),
            stamp.size
        )));
    }
    let mut verification = vec!["size".to_string()];
    verification
        .extend(crate::verify::temp_file(session, entry, &temp_path, stamp.size, &sha).await?);

    memory.publishing = true;
    journal(memory);
    publish(session, &temp_path, &final_path, entry.if_exists).await?;

    let have = session.size(&final_path).await?;
    if have != Some(stamp.size) {
        return Err(Fault::transient(format!(
            "size check of {final_path} after rename: server has {}, expected {} bytes",
            have.map_or("nothing".to_string(), |n| n.to_string()),
            stamp.size
        )));
    }
    verification.dedup();
    Ok(Outcome {
        bytes: stamp.size,
        sha256: Some(sha),
        verification,
        skipped: false,
        resumed_from: offset,
        segments,
    })
}

/// Streams the file from `offset` to `temp_path`; returns (sha256, bytes read).
async fn send(
    session: &mut Session,
    entry: &Entry,
    temp_path: &str,
    offset: u64,
    expected: u64,
) -> Result<(String, u64), Fault> {
    let data_timeout = session.data_timeout();
    let (mut rx, reader) = spawn_reader(entry.local_path.clone(), offset, expected);
    // The data connection is open and the server's verdict on it not yet read.
    let mut verdict_pending = false;
    let result = async {
        let mut upload = session.store_at(temp_path, offset).await?;
        verdict_pending = true;
        let write_err = pump(&mut upload, &mut rx, data_timeout, temp_path)
            .await
            .err();
        drop(rx);
        let read = reader
            .await
            .map_err(|e| Fault::transient(format!("reader task: {e}")))?;
        if let Some(f) = write_err {
            return Err(f);
        }
        let (sha, total) = read.map_err(|e| {
            Fault::permanent(format!(
                "entries[{}].file.local_path: read error: {e}: {}",
                entry.index,
                entry.local_path.display()
            ))
        })?;
        // `finish` reads the verdict, or marks the session broken if it cannot.
        verdict_pending = false;
        session.finish(upload, temp_path).await?;
        Ok((sha, total))
    }
    .await;
    if result.is_err() && (verdict_pending || offset > 0) {
        // Do not reuse the session: a data connection dropped before its
        // verdict leaves that reply unread on the control connection, and a
        // server may keep a REST offset until a transfer succeeds (libunftp
        // does), which would misplace the next upload on this session.
        session.broken = true;
    }
    result
}

/// Writes every chunk from `rx` to `upload`; an error if the data connection
/// fails or makes no progress for `data_timeout`.
pub(crate) async fn pump(
    upload: &mut Upload,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    data_timeout: Duration,
    temp_path: &str,
) -> Result<(), Fault> {
    while let Some(chunk) = rx.recv().await {
        match tokio::time::timeout(data_timeout, upload.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Fault::transient(format!("sending {temp_path}: {e}"))),
            Err(_) => {
                return Err(Fault::transient(format!(
                    "sending {temp_path}: no progress for {} s",
                    data_timeout.as_secs()
                )))
            }
        }
    }
    Ok(())
}

/// A reply refusing REST, or STOR/APPE after it, as opposed to a broken connection.
fn refused_resume(f: &Fault) -> bool {
    f.code.is_some_and(|c| c >= 400)
        && ["REST ", "STOR ", "APPE "]
            .iter()
            .any(|v| f.message.starts_with(v))
}

/// Renames the temp file over the final name. Some servers refuse to rename
/// onto an existing file; with `overwrite` the old file is deleted first.
async fn publish(
    session: &mut Session,
    temp: &str,
    fin: &str,
    policy: IfExists,
) -> Result<(), Fault> {
    match session.rename(temp, fin).await {
        Ok(()) => Ok(()),
        Err(f) if f.is_permanent() && policy == IfExists::Overwrite && !session.broken => {
            if session.size(fin).await?.is_none() {
                return Err(f);
            }
            session.delete(fin).await?;
            session.rename(temp, fin).await
        }
        Err(f) => Err(f),
    }
}

async fn hash_local(path: &Path) -> Result<String, Fault> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| Fault::transient(format!("hash task: {e}")))?
    .map_err(|e| Fault::permanent(format!("reading {}: {e}", path.display())))
}
