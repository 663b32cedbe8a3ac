//! Segmented upload of a big file: several sessions of one server each write
//! one byte range of the same temp file (`REST offset` + `STOR`), at once.
//!
//! One connection is often capped well below the link (a server's per
//! session rate limit, TCP window over a long path); N connections carry up
//! to N times as much. It is only safe on a server that keeps every byte
//! each connection wrote, which FTP does not promise: pure-ftpd truncates
//! the file where a REST+STOR write ends, libunftp truncates it at the REST
//! offset, proftpd refuses REST beyond the end of the file, and vsftpd by
//! default (`lock_upload_files=YES`) locks the file for a whole upload, so a
//! second connection waits for the first. So each server is probed once
//! ([`probe`]) with a tiny file, in the order the real upload uses; anything
//! unexpected means "single stream" for that server.
//!
//! The order that makes it correct: a STOR at offset 0 truncates the file
//! when it opens (vsftpd truncates only then: `REST 0` is no different), so
//! segment 0 is opened first, and the others only once the server has
//! confirmed it with its `150`, which comes after the truncation. They then
//! write at their offsets, beyond the file's end, while segment 0 writes
//! from the start. The probe checks each of those steps: a write beyond the
//! end is kept, the offset-0 STOR opened before it does not cut it off when
//! it writes and closes later, and a REST write that ends inside the file
//! does not truncate the rest.
//!
//! SHA-256 cannot be combined from slices, so a separate reader hashes the
//! whole file while the segments go out. Any segment failing fails the
//! attempt; the temp file may then have holes, so the next attempt deletes
//! it (`Memory::segmented`) instead of resuming at its SIZE.

use crate::config::Config;
use crate::fault::Fault;
use crate::ftp::{Session, Upload};
use crate::job::{join_remote, Entry, ServerSpec};
use crate::pool::{Lease, Pool};
use crate::transfer::{pump, CHUNK, READ_AHEAD};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// No segment is smaller than this: below it a connection's setup costs
/// more than the parallelism gains.
pub const MIN_SEGMENT: u64 = 8 * 1024 * 1024;

/// How long the probe's second upload may wait for its `150`: a server that
/// locks files during uploads answers only when the first upload closes.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// When a file goes in segments, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Files at least this big are segmented; 0: never.
    pub threshold: u64,
    pub max_segments: usize,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        Policy {
            threshold: cfg.segment_threshold_bytes,
            max_segments: cfg.max_segments,
        }
    }

    /// How many segments a file of `size` bytes should go in, at most.
    pub fn segments_for(&self, size: u64) -> usize {
        if self.threshold == 0 || size < self.threshold || self.max_segments < 2 {
            return 1;
        }
        (size / MIN_SEGMENT).clamp(1, self.max_segments as u64) as usize
    }
}

/// `[start, end)` of each of up to `n` segments of a `size`-byte file; the
/// boundaries fall on read-chunk multiples and no range is empty.
pub fn ranges(size: u64, n: usize) -> Vec<(u64, u64)> {
    let chunk = CHUNK as u64;
    let per = size.div_ceil(n.max(1) as u64).div_ceil(chunk).max(1) * chunk;
    (0..n as u64)
        .map(|i| ((i * per).min(size), ((i + 1) * per).min(size)))
        .filter(|(a, b)| b > a)
        .collect()
}

/// Decides whether this upload goes in segments and returns the extra
/// sessions for segments 1.. (empty: a single stream). Takes only sessions
/// that are free now, and probes the server the first time. An error only
/// when the lease's own session broke.
pub async fn prepare(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    spec: &ServerSpec,
    policy: &Policy,
    dir: &str,
    size: u64,
) -> Result<Vec<Lease>, Fault> {
    let wanted = policy.segments_for(size);
    if wanted < 2 || lease.segments_ok() == Some(false) {
        return Ok(Vec::new());
    }
    if !lease.session().features.rest_stream {
        if lease.set_segments_ok(false) {
            tracing::info!(server = %spec, "FEAT lists no REST STREAM: big files go in a single stream");
        }
        return Ok(Vec::new());
    }
    // Before the probe, one extra session is enough: a login can cost
    // seconds of server CPU (pure-ftpd), not worth it for a "no".
    let mut extra = Vec::new();
    let probed = lease.segments_ok() == Some(true);
    borrow(pool, spec, &mut extra, if probed { wanted } else { 2 }).await;
    if extra.is_empty() || probed {
        return Ok(extra);
    }
    match probe(lease.session(), extra[0].session(), dir).await {
        Ok(Probe::Segments) => {
            if lease.set_segments_ok(true) {
                tracing::info!(
                    server = %spec,
                    "the server keeps parallel REST+STOR writes: big files go in segments"
                );
            }
            borrow(pool, spec, &mut extra, wanted).await;
            Ok(extra)
        }
        Ok(Probe::SingleStream(why)) => {
            if lease.set_segments_ok(false) {
                tracing::info!(server = %spec, reason = %why, "big files go in a single stream");
            }
            Ok(Vec::new())
        }
        Err(f) if lease.session().broken => Err(f),
        Err(f) => {
            // Inconclusive (the extra session broke): ask again next time.
            tracing::debug!(server = %spec, error = %f, "segment probe inconclusive");
            Ok(Vec::new())
        }
    }
}

/// Adds free sessions to `extra` until there are `total` with the lease's own.
async fn borrow(pool: &Arc<Pool>, spec: &ServerSpec, extra: &mut Vec<Lease>, total: usize) {
    while extra.len() + 1 < total {
        match pool.try_acquire(spec).await {
            Some(l) => extra.push(l),
            None => break,
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Segments,
    SingleStream(String),
}

/// Writes a 12-byte probe file in `dir` the way a segmented upload would
/// (see the module docs) and checks that every byte stayed where it was
/// written; deletes it again. `Err` only when a connection failed.
pub async fn probe(a: &mut Session, b: &mut Session, dir: &str) -> Result<Probe, Fault> {
    let path = join_remote(
        dir,
        &format!(".ftpdrop-probe-{:016x}", rand::random::<u64>()),
    );
    let verdict = probe_steps(a, b, &path).await;
    // Whatever happened, the probe file must not stay behind.
    for s in [a, b] {
        if !s.broken {
            if let Err(e) = s.delete(&path).await {
                tracing::warn!(remote_path = %path, error = %e, "could not delete the probe file");
            }
            break;
        }
    }
    verdict
}

async fn probe_steps(a: &mut Session, b: &mut Session, path: &str) -> Result<Probe, Fault> {
    // Segment 0: a plain STOR, opened first.
    let up_a = match a.store_exact(path, 0).await {
        Ok(u) => u,
        Err(f) => return refused(f, a),
    };
    // Segment 1: beyond the end of the (empty) file, while segment 0 is open.
    let opened = tokio::time::timeout(PROBE_WAIT, b.store_exact(path, 8)).await;
    let up_b = match opened {
        Ok(Ok(u)) => u,
        early => {
            let verdict = match early {
                Ok(Err(f)) => refused(f, b),
                _ => {
                    // The STOR is still pending on `b`: it cannot be reused.
                    b.broken = true;
                    Ok(Probe::SingleStream(format!(
                        "a second upload to the same file waited more than {} s for the first \
                         (the server locks files during uploads; vsftpd: lock_upload_files=NO)",
                        PROBE_WAIT.as_secs()
                    )))
                }
            };
            // Close segment 0 properly so that `a` stays in step.
            put(a, up_a, path, b"AAAA").await?;
            return verdict;
        }
    };
    // Segment 0 writes and closes only after segment 1 is done: neither its
    // writing nor its closing may cut segment 1 off.
    let wrote_b = put(b, up_b, path, b"CCCC").await;
    let wrote_a = put(a, up_a, path, b"AAAA").await;
    if let Err(f) = wrote_b {
        return refused(f, b);
    }
    if let Err(f) = wrote_a {
        return refused(f, a);
    }
    // A segment that ends inside the file (pure-ftpd truncates there).
    let up = match b.store_exact(path, 4).await {
        Ok(u) => u,
        Err(f) => return refused(f, b),
    };
    if let Err(f) = put(b, up, path, b"BBBB").await {
        return refused(f, b);
    }
    let want = b"AAAABBBBCCCC";
    match a.size(path).await {
        Ok(Some(n)) if n == want.len() as u64 => {}
        Ok(n) => {
            return Ok(Probe::SingleStream(format!(
                "after writes at offsets 0, 8 and 4 the probe file has {} bytes instead of 12",
                n.map_or("no".to_string(), |n| n.to_string())
            )))
        }
        Err(f) => return refused(f, a),
    }
    match a.download_sha256(path).await {
        Ok((sha, _)) if sha == hex::encode(Sha256::digest(want)) => Ok(Probe::Segments),
        Ok(_) => Ok(Probe::SingleStream(
            "the probe file's bytes are not where the writes put them".into(),
        )),
        Err(f) => refused(f, a),
    }
}

/// A refusal (an error reply on a session still in step) is a verdict; a
/// broken connection is not.
fn refused(f: Fault, s: &Session) -> Result<Probe, Fault> {
    if f.code.is_some() && !s.broken {
        Ok(Probe::SingleStream(f.message))
    } else {
        Err(f)
    }
}

/// Writes `bytes` to an open upload and reads the server's verdict.
async fn put(s: &mut Session, mut up: Upload, path: &str, bytes: &[u8]) -> Result<(), Fault> {
    if let Err(e) = up.write_all(bytes).await {
        s.broken = true;
        return Err(Fault::transient(format!("sending {path}: {e}")));
    }
    s.finish(up, path).await
}

/// Uploads the local file to `temp` in segments: segment 0 over `primary`,
/// the others over `extra`, all at once. Returns the SHA-256 of the whole
/// file and the bytes read, like `transfer::send`. On failure every session
/// involved is marked broken: their transfers were cut off mid-way.
pub async fn send(
    primary: &mut Session,
    extra: &mut [Lease],
    entry: &Entry,
    temp: &str,
    size: u64,
) -> Result<(String, u64), Fault> {
    let ranges = ranges(size, 1 + extra.len());
    tracing::debug!(remote_path = %temp, segments = ranges.len(), "segmented upload");
    let stop = Arc::new(AtomicBool::new(false));
    let hasher = spawn_hasher(entry.local_path.clone(), stop.clone());
    let sent = async {
        // Opened before any other segment: this STOR truncates the file.
        let first = primary.store_exact(temp, 0).await?;
        let zero = segment(primary, Some(first), entry, temp, ranges[0]);
        let rest = extra
            .iter_mut()
            .zip(&ranges[1..])
            .map(|(l, &r)| segment(l.session(), None, entry, temp, r));
        futures_util::future::try_join_all(std::iter::once(zero).chain(rest)).await
    }
    .await;
    if let Err(f) = sent {
        stop.store(true, Ordering::SeqCst);
        primary.broken = true;
        for l in extra.iter_mut() {
            l.session().broken = true;
        }
        return Err(f);
    }
    hasher
        .await
        .map_err(|e| Fault::transient(format!("hash task: {e}")))?
        .map_err(|e| read_error(entry, e))
}

/// One segment: `range` of the local file to the same offset of `temp`.
/// `opened` is segment 0's upload, opened by the caller.
async fn segment(
    s: &mut Session,
    opened: Option<Upload>,
    entry: &Entry,
    temp: &str,
    (start, end): (u64, u64),
) -> Result<(), Fault> {
    let mut up = match opened {
        Some(u) => u,
        None => s.store_exact(temp, start).await?,
    };
    let (mut rx, reader) = spawn_range_reader(entry.local_path.clone(), start, end);
    let written = pump(&mut up, &mut rx, s.data_timeout(), temp).await;
    drop(rx);
    let read = reader
        .await
        .map_err(|e| Fault::transient(format!("reader task: {e}")))?;
    written?;
    let n = read.map_err(|e| read_error(entry, e))?;
    if n != end - start {
        return Err(Fault::transient(format!(
            "entries[{}].file.local_path changed during upload: bytes {start}..{end} are not there; will start over",
            entry.index
        )));
    }
    s.finish(up, temp).await
}

fn read_error(entry: &Entry, e: std::io::Error) -> Fault {
    Fault::permanent(format!(
        "entries[{}].file.local_path: read error: {e}: {}",
        entry.index,
        entry.local_path.display()
    ))
}

/// Reads `[start, end)` of the file on a blocking thread, chunk by chunk,
/// a few chunks ahead of the network. Resolves to the bytes read.
fn spawn_range_reader(
    path: PathBuf,
    start: u64,
    end: u64,
) -> (
    mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<std::io::Result<u64>>,
) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let handle = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(start))?;
        let mut pos = start;
        while pos < end {
            let want = ((end - pos) as usize).min(CHUNK);
            let mut chunk = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = f.read(&mut chunk[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            pos += filled as u64;
            if tx.blocking_send(chunk).is_err() || filled < want {
                break;
            }
        }
        Ok(pos - start)
    });
    (rx, handle)
}

/// Hashes the whole file on a blocking thread; resolves to its SHA-256 and
/// size. Stops early (with a meaningless result) once `stop` is set.
fn spawn_hasher(
    path: PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<std::io::Result<(String, u64)>> {
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        Ok((hex::encode(h.finalize()), total))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn how_many_segments() {
        let p = Policy {
            threshold: 64 * MIB,
            max_segments: 4,
        };
        assert_eq!(p.segments_for(63 * MIB), 1);
        assert_eq!(p.segments_for(64 * MIB), 4);
        assert_eq!(p.segments_for(10 * 1024 * MIB), 4);
        let small = Policy {
            threshold: MIB,
            max_segments: 8,
        };
        assert_eq!(small.segments_for(MIB), 1, "segments of at least 8 MiB");
        assert_eq!(small.segments_for(20 * MIB), 2);
        let off = Policy {
            threshold: 0,
            max_segments: 4,
        };
        assert_eq!(off.segments_for(100 * MIB), 1);
        let one = Policy {
            threshold: MIB,
            max_segments: 1,
        };
        assert_eq!(one.segments_for(100 * MIB), 1);
    }

    #[test]
    fn ranges_cover_the_file_once_on_chunk_boundaries() {
        for (size, n) in [
            (100 * MIB, 4),
            (100 * MIB + 17, 4),
            (64 * MIB, 3),
            (5, 4),
            (CHUNK as u64 * 3, 4),
        ] {
            let r = ranges(size, n);
            assert!(!r.is_empty() && r.len() <= n, "{size} {n}: {r:?}");
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, size);
            for w in r.windows(2) {
                assert_eq!(w[0].1, w[1].0, "{r:?}");
            }
            for &(a, b) in &r[..r.len() - 1] {
                assert!(b > a && b % CHUNK as u64 == 0, "{r:?}");
            }
        }
    }
}
