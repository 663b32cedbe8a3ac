//! Segmented upload of a big file: once one stream proves slow, the rest of
//! the file goes over several sessions of the same server at once, each
//! writing one byte range of the same temp file (`REST offset` + `STOR`).
//!
//! One connection is often capped well below the link (a server's per
//! session rate limit, TCP window over a long path); N connections carry up
//! to N times as much. Where one connection already runs at disk or CPU
//! speed (a server next door), more connections only compete for the same
//! CPU: on the 2-core benchmark machine, four segments made a 1 GiB upload
//! to vsftpd on loopback 25 % slower than one stream. So a big file starts
//! as a single stream, like any other, and is split only when, after
//! `segment_after_ms`, the rest would still take more than [`WORTH_SPLITTING`]
//! at the rate so far.
//!
//! It is only safe on a server that keeps every byte each connection wrote,
//! which FTP does not promise: pure-ftpd truncates the file where a REST+STOR
//! write ends, libunftp truncates it at the REST offset, proftpd refuses REST
//! beyond the end of the file, and vsftpd by default (`lock_upload_files=YES`)
//! locks the file for a whole upload, so a second connection waits for the
//! first. So each server is probed once ([`probe`]) with a tiny file, the
//! first time a split is worth it; anything unexpected means "single stream"
//! for that server.
//!
//! The split: the stream stops at a boundary (it takes its ranges from a
//! [`Cut`], so it ends exactly there), its upload is closed, and the temp
//! file's SIZE must then be exactly that boundary: the file was created by
//! this upload and holds nothing else. The rest is cut into ranges, one per
//! session (the first session's included), each written with `REST` at its
//! offset, beyond the end of the file but for the first; the probe checked
//! that a server keeps such writes, and that a write ending inside the file
//! does not truncate the rest.
//!
//! SHA-256 cannot be combined from slices, so a separate reader hashes the
//! whole file while the bytes go out. Any segment failing fails the attempt;
//! the temp file may then have holes, so the next attempt deletes it
//! (`Memory::segmented`, journaled before the first segment writes) instead
//! of resuming at its SIZE.

use crate::config::Config;
use crate::ftp::fault::Fault;
use crate::ftp::pool::{Lease, Pool};
use crate::ftp::{Session, Upload};
use crate::job::{join_remote, Entry, ServerSpec};
use crate::upload::source::{self, Cut, Local, CHUNK};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// No segment is smaller than this: below it a connection's setup costs
/// more than the parallelism gains.
pub(crate) const MIN_SEGMENT: u64 = 8 * 1024 * 1024;

/// How long the probe's second upload may wait for its `150`: a server that
/// locks files during uploads answers only when the first upload closes.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// When a file goes in segments, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Files at least this big are segmented; 0: never.
    pub(crate) threshold: u64,
    pub(crate) max_segments: usize,
    /// How long a big file goes in one stream before a split is considered.
    pub(crate) after: Duration,
}

/// A stream is split only if, at its rate so far, the rest of the file
/// would take longer than this: a split costs a close, a SIZE and new data
/// connections, and more connections help only a slow stream.
pub(crate) const WORTH_SPLITTING: Duration = Duration::from_secs(2);

impl Policy {
    pub(crate) fn from_config(cfg: &Config) -> Policy {
        Policy {
            threshold: cfg.segment_threshold_bytes,
            max_segments: cfg.max_segments,
            after: Duration::from_millis(cfg.segment_after_ms),
        }
    }

    /// How many segments a file of `size` bytes should go in, at most.
    pub(crate) fn segments_for(&self, size: u64) -> usize {
        if self.threshold == 0 || size < self.threshold || self.max_segments < 2 {
            return 1;
        }
        (size / MIN_SEGMENT).clamp(1, self.max_segments as u64) as usize
    }
}

/// `[start, end)` of each of up to `n` segments of the bytes from `from` to
/// `size`; inner boundaries fall on read-chunk multiples, no range is empty.
pub(crate) fn ranges(from: u64, size: u64, n: usize) -> Vec<(u64, u64)> {
    let chunk = CHUNK as u64;
    let per = (size - from)
        .div_ceil(n.max(1) as u64)
        .div_ceil(chunk)
        .max(1)
        * chunk;
    (0..n as u64)
        .map(|i| {
            let b = |k: u64| {
                if k == 0 {
                    from
                } else {
                    (from + k * per).next_multiple_of(chunk).min(size)
                }
            };
            (b(i), b(i + 1))
        })
        .filter(|(a, b)| b > a)
        .collect()
}

/// Is `size` big enough, and the server not known to refuse, for this
/// upload to be split if it proves slow?
pub(crate) fn may_split(lease: &mut Lease, spec: &ServerSpec, policy: &Policy, size: u64) -> bool {
    if policy.segments_for(size) < 2 || lease.segments_ok() == Some(false) {
        return false;
    }
    if !lease.session().features.rest_stream {
        if lease.set_segments_ok(false) {
            tracing::info!(server = %spec, "FEAT lists no REST STREAM: big files go in a single stream");
        }
        return false;
    }
    true
}

/// Waits until the stream behind `cut` proves slow, then borrows up to
/// `wanted - 1` free sessions (probing the server the first time) and
/// returns them; empty: do not split. Runs as a task of its own, so that a
/// probe under way always completes (and deletes its file) even when the
/// stream finishes first and nobody waits for the answer any more.
fn spawn_splitter(
    pool: Arc<Pool>,
    spec: Arc<ServerSpec>,
    policy: Policy,
    dir: String,
    size: u64,
    cut: Arc<Cut>,
) -> tokio::task::JoinHandle<Vec<Lease>> {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            if policy.after.is_zero() {
                break;
            }
            tokio::time::sleep(policy.after).await;
            let done = cut.taken();
            if done >= size {
                return Vec::new();
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(1e-3);
            let left = (size - done) as f64 / rate.max(1.0);
            if left > WORTH_SPLITTING.as_secs_f64() {
                tracing::debug!(server = %spec, rate_mib_s = rate / 1048576.0, left_s = left, "slow stream: splitting the rest");
                break;
            }
        }
        let remaining = size - cut.taken();
        let wanted = policy
            .segments_for(size)
            .min((remaining / MIN_SEGMENT).max(1) as usize);
        if wanted < 2 {
            return Vec::new();
        }
        borrow_probed(&pool, &spec, &dir, wanted).await
    })
}

/// Up to `wanted - 1` free sessions of a server whose probe says yes;
/// probes it (with two of them) the first time.
async fn borrow_probed(
    pool: &Arc<Pool>,
    spec: &ServerSpec,
    dir: &str,
    wanted: usize,
) -> Vec<Lease> {
    let mut extra = Vec::new();
    borrow(pool, spec, &mut extra, 2).await;
    let Some(first) = extra.first() else {
        return extra;
    };
    match first.segments_ok() {
        Some(true) => {
            borrow(pool, spec, &mut extra, wanted).await;
            return extra;
        }
        Some(false) => return Vec::new(),
        None => {}
    }
    // Two sessions besides the stream's own: a probe writes with two.
    borrow(pool, spec, &mut extra, 3).await;
    if extra.len() < 2 {
        return Vec::new();
    }
    let (a, b) = extra.split_at_mut(1);
    match probe(a[0].session(), b[0].session(), dir).await {
        Ok(Probe::Segments) => {
            if extra[0].set_segments_ok(true) {
                tracing::info!(
                    server = %spec,
                    "the server keeps parallel REST+STOR writes: big files go in segments"
                );
            }
            borrow(pool, spec, &mut extra, wanted).await;
            extra
        }
        Ok(Probe::SingleStream(why)) => {
            if extra[0].set_segments_ok(false) {
                tracing::info!(server = %spec, reason = %why, "big files go in a single stream");
            }
            Vec::new()
        }
        Err(f) => {
            // Inconclusive (a session broke): ask again next time.
            tracing::debug!(server = %spec, error = %f, "segment probe inconclusive");
            Vec::new()
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
pub(crate) enum Probe {
    Segments,
    SingleStream(String),
}

/// Writes a 12-byte probe file in `dir` the way a segmented upload would
/// (see the module docs) and checks that every byte stayed where it was
/// written; deletes it again. `Err` only when a connection failed.
pub(crate) async fn probe(a: &mut Session, b: &mut Session, dir: &str) -> Result<Probe, Fault> {
    // A probe cut off by a crash (kill -9 between its writes and its DELE)
    // left its file behind: the next probe in the same place removes it.
    match a.names(dir).await {
        Ok(names) => {
            for name in names.iter().filter(|n| n.starts_with(".ftpdrop-probe-")) {
                let stale = join_remote(dir, name);
                match a.delete(&stale).await {
                    Ok(()) => {
                        tracing::info!(remote_path = %stale, "deleted a probe file an earlier run left behind")
                    }
                    Err(e) => {
                        tracing::debug!(remote_path = %stale, error = %e, "cannot delete a stale probe file")
                    }
                }
            }
        }
        Err(e) => {
            tracing::debug!(dir, error = %e, "cannot list the directory for stale probe files")
        }
    }
    let path = join_remote(
        dir,
        &format!(".ftpdrop-probe-{:016x}", rand::random::<u64>()),
    );
    let made = [path.clone()];
    a.note_litter(&made);
    let verdict = probe_steps(a, b, &path).await;
    // Whatever happened, the probe file must not stay behind.
    for s in [a, b] {
        if !s.is_broken() {
            match s.delete(&path).await {
                Ok(()) => s.cleared_litter(&made),
                // Never made (the first STOR was refused): nothing to remove.
                Err(e) if e.file_unavailable() => s.cleared_litter(&made),
                Err(e) => {
                    tracing::warn!(remote_path = %path, error = %e, "could not delete the probe file")
                }
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
                    b.give_up();
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
    if f.is_refusal() && !s.is_broken() {
        Ok(Probe::SingleStream(f.message))
    } else {
        Err(f)
    }
}

/// Writes `bytes` to an open upload and reads the server's verdict.
async fn put(s: &mut Session, mut up: Upload, path: &str, bytes: &[u8]) -> Result<(), Fault> {
    if let Err(e) = up.write_all(bytes).await {
        s.give_up();
        return Err(Fault::transient(format!("sending {path}: {e}")));
    }
    s.finish(up, path).await
}

/// What a big file's upload did.
pub(crate) struct Sent {
    pub(crate) sha256: String,
    /// Bytes in the local file, as the hasher read them.
    pub(crate) total: u64,
    /// Connections the bytes went over.
    pub(crate) segments: usize,
}

/// Uploads a file of `size` bytes to the new temp file `temp`: one stream,
/// split into segments if it proves slow (see the module docs).
/// `on_split` is called before the first segment writes beyond the end of
/// the file: from then on the temp file may have holes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    policy: &Policy,
    entry: &Entry,
    dir: &str,
    temp: &str,
    size: u64,
    on_split: impl FnOnce(),
) -> Result<Sent, Fault> {
    let local = Local::of(entry, temp);
    let sent = stream_then_split(lease, pool, policy, entry, dir, temp, size, on_split);
    let (sha256, total, segments) = source::hashed_while(local, sent).await?;
    Ok(Sent {
        sha256,
        total,
        segments,
    })
}

#[allow(clippy::too_many_arguments)]
async fn stream_then_split(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    policy: &Policy,
    entry: &Entry,
    dir: &str,
    temp: &str,
    size: u64,
    on_split: impl FnOnce(),
) -> Result<usize, Fault> {
    let timeout = lease.session().data_timeout();
    let local = Local::of(entry, temp);
    let cut = Arc::new(Cut::new(0, size));
    let mut splitter = spawn_splitter(
        pool.clone(),
        entry.server.clone(),
        *policy,
        dir.to_string(),
        size,
        cut.clone(),
    );
    // With `segment_after_ms` 0 the split is decided before the first
    // byte, and the segments cover the whole file.
    if policy.after.is_zero() {
        let extra = (&mut splitter).await.unwrap_or_default();
        if !extra.is_empty() {
            on_split();
            return segments(lease, extra, entry, temp, 0, size).await;
        }
    }
    let mut upload = lease.session().store_at(temp, 0).await?;
    let (sent, extra) = {
        let sending = source::send_range(&mut upload, 0, &cut, timeout, local);
        tokio::pin!(sending);
        tokio::select! {
            r = &mut sending => (r, Vec::new()),
            extra = &mut splitter, if !policy.after.is_zero() => {
                let extra = extra.unwrap_or_default();
                if !extra.is_empty() {
                    cut.stop();
                }
                (sending.await, extra)
            }
        }
    };
    // A probe under way finishes on its own; its sessions go back to the pool.
    drop(splitter);
    let sent = match sent {
        Ok(n) => n,
        Err(f) => {
            // The data connection died before its verdict was read.
            lease.session().give_up();
            return Err(f);
        }
    };
    lease.session().finish(upload, temp).await?;
    if extra.is_empty() || sent >= size || sent < cut.stop() {
        // No split (or the file ended early: the caller sees the size).
        return Ok(1);
    }

    on_split();
    match lease.session().size(temp).await? {
        Some(n) if n == sent => {}
        other => {
            return Err(Fault::transient(format!(
                "{temp} has {} bytes after the first {sent} were sent: something else wrote to it; will start over",
                other.map_or("no".to_string(), |n| n.to_string())
            )))
        }
    }
    segments(lease, extra, entry, temp, sent, size).await
}

/// Sends `[from, size)` in segments over the lease's session and `extra`;
/// returns how many segments. From 0, the first segment is a plain STOR,
/// which truncates the file when it opens (vsftpd truncates then, and REST 0
/// is no different), so it is opened before any other segment, and the
/// others only once the server has confirmed it with its `150`. From
/// further on, every segment is a `REST` + `STOR`, which truncates nothing.
async fn segments(
    lease: &mut Lease,
    mut extra: Vec<Lease>,
    entry: &Entry,
    temp: &str,
    from: u64,
    size: u64,
) -> Result<usize, Fault> {
    let ranges = ranges(from, size, 1 + extra.len());
    extra.truncate(ranges.len() - 1);
    tracing::debug!(remote_path = %temp, from, segments = ranges.len(), "segmented upload");
    entry.progress.start(from, size, ranges.len());
    let written = async {
        let primary = lease.session();
        let opened = if from == 0 {
            Some(primary.store_exact(temp, 0).await?)
        } else {
            None
        };
        let first = segment(primary, opened, entry, temp, ranges[0]);
        let rest = extra
            .iter_mut()
            .zip(&ranges[1..])
            .map(|(l, &r)| segment(l.session(), None, entry, temp, r));
        futures_util::future::try_join_all(std::iter::once(first).chain(rest)).await
    }
    .await;
    if let Err(f) = written {
        // The others' transfers were cut off mid-way.
        lease.session().give_up();
        for l in extra.iter_mut() {
            l.session().give_up();
        }
        return Err(f);
    }
    Ok(ranges.len())
}

/// One segment: `range` of the local file to the same offset of `temp`.
/// `opened`: its upload, if the caller opened it already.
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
    let local = Local::of(entry, temp);
    let n = source::send_range(
        &mut up,
        start,
        &Arc::new(Cut::new(start, end)),
        s.data_timeout(),
        local,
    )
    .await?;
    if n != end - start {
        s.finish(up, temp).await?;
        return Err(Fault::transient(format!(
            "entries[{}].file.local_path changed during upload: bytes {start}..{end} are not there; will start over",
            entry.index
        )));
    }
    s.finish(up, temp).await
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
            after: Duration::ZERO,
        };
        assert_eq!(p.segments_for(63 * MIB), 1);
        assert_eq!(p.segments_for(64 * MIB), 4);
        assert_eq!(p.segments_for(10 * 1024 * MIB), 4);
        let small = Policy {
            threshold: MIB,
            max_segments: 8,
            after: Duration::ZERO,
        };
        assert_eq!(small.segments_for(MIB), 1, "segments of at least 8 MiB");
        assert_eq!(small.segments_for(20 * MIB), 2);
        let off = Policy {
            threshold: 0,
            max_segments: 4,
            after: Duration::ZERO,
        };
        assert_eq!(off.segments_for(100 * MIB), 1);
        let one = Policy {
            threshold: MIB,
            max_segments: 1,
            after: Duration::ZERO,
        };
        assert_eq!(one.segments_for(100 * MIB), 1);
    }

    #[test]
    fn ranges_cover_the_file_once_on_chunk_boundaries() {
        for (from, size, n) in [
            (0, 100 * MIB, 4),
            (0, 100 * MIB + 17, 4),
            (0, 64 * MIB, 3),
            (0, 5, 4),
            (0, CHUNK as u64 * 3, 4),
            (20 * MIB, 400 * MIB, 4),
            (20 * MIB + 4096, 400 * MIB + 17, 4),
            (MIB + 1, MIB + 2, 4),
        ] {
            let r = ranges(from, size, n);
            assert!(!r.is_empty() && r.len() <= n, "{from} {size} {n}: {r:?}");
            assert_eq!(r[0].0, from);
            assert_eq!(r.last().unwrap().1, size);
            for w in r.windows(2) {
                assert_eq!(w[0].1, w[1].0, "{r:?}");
            }
            for &(a, b) in &r[..r.len() - 1] {
                assert!(b > a && b % CHUNK as u64 == 0, "{r:?}");
            }
        }
        // The rest of a 400 MiB file split four ways after 20 MiB: even shares.
        let r = ranges(20 * MIB, 400 * MIB, 4);
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|(a, b)| b - a == 95 * MIB), "{r:?}");
    }
}
