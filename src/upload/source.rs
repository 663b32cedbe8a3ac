//! The local side of an upload: getting a file's bytes onto a data
//! connection, and its SHA-256 for the receipt and the server-side check.
//!
//! A file of a chunk or less is read and hashed in one go on a blocking
//! thread, already while the STOR is negotiated. A bigger file is hashed by
//! a thread of its own that reads the file independently, so hashing (about
//! 2 GB/s with SHA-NI, half the CPU of a loopback upload) runs beside the
//! sending instead of in front of it; the bytes go out with `sendfile(2)` on
//! a plain connection on Linux (no copy through user space), and through a
//! reader thread a few chunks ahead of the network otherwise (FTPS, other
//! systems). The two reads see the same file: a file that changes during the
//! upload changes its size or mtime, and the caller then starts over.

use crate::ftp::fault::Fault;
use crate::ftp::Upload;
use crate::job::confine::{LocalRoots, OutsideRoots};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Bytes per local read; large reads keep syscalls and channel hops few.
pub(crate) const CHUNK: usize = 512 * 1024;
/// Chunks read ahead of the network: bounds memory at about 2.5 MiB per upload.
pub(crate) const READ_AHEAD: usize = 4;

/// A local file and the roots it must lie in. Every reader opens the file
/// itself, through [`Opener::open`], so every open is checked.
#[derive(Clone)]
pub(crate) struct Opener {
    pub(crate) path: PathBuf,
    pub(crate) roots: Arc<LocalRoots>,
}

impl Opener {
    pub(crate) fn of(entry: &crate::job::Entry) -> Opener {
        Opener {
            path: entry.local_path.clone(),
            roots: entry.local_roots.clone(),
        }
    }

    pub(crate) fn open(&self) -> std::io::Result<std::fs::File> {
        self.roots.open(&self.path)
    }
}

/// What the caller needs to name a failure: the entry and its local file.
#[derive(Clone, Copy)]
pub(crate) struct Local<'a> {
    pub(crate) index: usize,
    pub(crate) path: &'a Path,
    pub(crate) roots: &'a Arc<LocalRoots>,
    /// The remote (temp) path being written, for network errors.
    pub(crate) remote: &'a str,
    /// Bumped with every chunk that goes out (the status API's live bytes).
    pub(crate) progress: &'a crate::job::progress::Progress,
    /// Bandwidth limits every chunk sent pays into.
    pub(crate) rates: &'a crate::rate::RateSet,
}

impl<'a> Local<'a> {
    /// `entry`'s local file, going to `remote`.
    pub(crate) fn of(entry: &'a crate::job::Entry, remote: &'a str) -> Local<'a> {
        Local {
            index: entry.index,
            path: &entry.local_path,
            roots: &entry.local_roots,
            remote,
            progress: &entry.progress,
            rates: &entry.rates,
        }
    }

    pub(crate) fn opener(&self) -> Opener {
        Opener {
            path: self.path.to_path_buf(),
            roots: self.roots.clone(),
        }
    }

    fn read_error(&self, e: std::io::Error) -> Fault {
        read_error(self.index, self.path, e)
    }
}

/// The permanent fault for a local file that cannot be read, naming the field.
pub fn read_error(index: usize, path: &Path, e: std::io::Error) -> Fault {
    let field = format!("entries[{index}].file.local_path");
    if let Some(outside) = e.get_ref().and_then(|r| r.downcast_ref::<OutsideRoots>()) {
        return Fault::permanent(format!("{field}: {outside}"));
    }
    if let Some(odd) = e
        .get_ref()
        .and_then(|r| r.downcast_ref::<crate::localfile::NotAFile>())
    {
        return Fault::permanent(format!("{field}: {odd}"));
    }
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => format!("read error: {e}"),
    };
    Fault::permanent(format!("{field}: {why}: {}", path.display()))
}

impl<'a> Local<'a> {
    fn send_error(&self, e: std::io::Error) -> Fault {
        Fault::transient(format!("sending {}: {e}", self.remote))
    }

    fn read_stalled(&self, timeout: Duration) -> Fault {
        Fault::transient(format!(
            "entries[{}].file.local_path: reading {}: no progress for {} s",
            self.index,
            self.path.display(),
            timeout.as_secs()
        ))
    }

    fn stalled(&self, timeout: Duration) -> Fault {
        Fault::transient(format!(
            "sending {}: no progress for {} s",
            self.remote,
            timeout.as_secs()
        ))
    }
}

/// How far one stream sends: up to a limit that a splitter may lower while
/// it runs (see [`crate::upload::segment`]). The sender takes its next range under
/// the lock, so a new limit never cuts a range already on its way: the
/// stream ends exactly at [`Cut::stop`]'s answer.
#[derive(Debug)]
pub(crate) struct Cut(Mutex<CutState>);

#[derive(Debug)]
struct CutState {
    /// Everything before this has been handed to the sender.
    taken: u64,
    limit: u64,
}

impl Cut {
    pub(crate) fn new(start: u64, limit: u64) -> Cut {
        Cut(Mutex::new(CutState {
            taken: start,
            limit,
        }))
    }

    /// The sender at `pos` may send this many bytes now (at most `max`).
    fn take(&self, pos: u64, max: usize) -> usize {
        let mut c = self.0.lock().unwrap();
        let n = c.limit.saturating_sub(pos).min(max as u64);
        c.taken = c.taken.max(pos + n);
        n as usize
    }

    /// Bytes handed to the sender so far (its progress, give or take a call).
    pub(crate) fn taken(&self) -> u64 {
        self.0.lock().unwrap().taken
    }

    /// Ends the stream after what it has taken; returns where it ends.
    pub fn stop(&self) -> u64 {
        let mut c = self.0.lock().unwrap();
        c.limit = c.taken;
        c.limit
    }
}

/// A small file, read and hashed while the upload is being opened.
pub(crate) struct Prefetch {
    rx: mpsc::Receiver<Vec<u8>>,
    task: tokio::task::JoinHandle<std::io::Result<(String, u64)>>,
}

/// Does a file of `expected` bytes, sent from `offset`, go as one prefetched chunk?
pub(crate) fn is_small(offset: u64, expected: u64) -> bool {
    offset == 0 && expected <= (CHUNK as u64 - 1)
}

/// Starts reading and hashing a small file (see [`is_small`]).
///
/// One byte more than `expected` is asked for, so that a file that grew is
/// noticed; chunks are sized to what is left, without zero-filling them
/// first: for thousands of small files, zeroing and faulting in full-size
/// buffers was a tenth of the CPU.
pub(crate) fn prefetch(file: Opener, expected: u64) -> Prefetch {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let task = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
        let mut f = file.open()?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            let want = (expected.saturating_sub(total) + 1).clamp(8 * 1024, CHUNK as u64);
            let mut chunk = Vec::with_capacity(want as usize);
            let filled = (&mut f).take(want).read_to_end(&mut chunk)?;
            if filled == 0 {
                break;
            }
            hasher.update(&chunk);
            total += filled as u64;
            // A file that grew past its stamped size is noticed by the
            // caller from one byte more; no more than that is read.
            if tx.blocking_send(chunk).is_err() || (filled as u64) < want || total > expected {
                // Either the uploader gave up (its error is the one to
                // report), or this was the end of the file.
                break;
            }
        }
        Ok((hex::encode(hasher.finalize()), total))
    });
    Prefetch { rx, task }
}

impl Prefetch {
    /// Sends the prefetched bytes; resolves to (SHA-256, bytes in the file).
    pub(crate) async fn send(
        mut self,
        upload: &mut Upload,
        timeout: Duration,
        local: Local<'_>,
    ) -> Result<(String, u64), Fault> {
        let written = pump(upload, &mut self.rx, timeout, local).await;
        drop(self.rx);
        // A failed send never waits for the reader: it may hang on a dead mount.
        written?;
        let read = self
            .task
            .await
            .map_err(|e| Fault::transient(format!("reader task: {e}")))?;
        read.map_err(|e| local.read_error(e))
    }
}

/// Sends `[offset, expected)` of a file while another thread hashes all of
/// it; resolves to (SHA-256, bytes in the file). A file that turns out
/// shorter than `expected` sends what it has: the caller compares sizes.
pub(crate) async fn send_hashed(
    upload: &mut Upload,
    offset: u64,
    expected: u64,
    timeout: Duration,
    local: Local<'_>,
) -> Result<(String, u64), Fault> {
    let cut = Arc::new(Cut::new(offset, expected));
    let (sha, total, _) =
        hashed_while(local, send_range(upload, offset, &cut, timeout, local)).await?;
    Ok((sha, total))
}

/// Runs `send` while another thread hashes the whole local file; resolves
/// to (SHA-256, bytes in the file, what `send` returned). If `send` fails,
/// the hasher is stopped and `send`'s error is the one returned.
pub(crate) async fn hashed_while<T>(
    local: Local<'_>,
    send: impl std::future::Future<Output = Result<T, Fault>>,
) -> Result<(String, u64, T), Fault> {
    let stop = Arc::new(AtomicBool::new(false));
    let hasher = spawn_hasher(local.opener(), stop.clone());
    let sent = match send.await {
        Ok(v) => v,
        Err(f) => {
            stop.store(true, Ordering::SeqCst);
            return Err(f);
        }
    };
    let (sha, total) = hasher
        .await
        .map_err(|e| Fault::transient(format!("hash task: {e}")))?
        .map_err(|e| local.read_error(e))?;
    Ok((sha, total, sent))
}

/// Sends the local file from `start` over `upload`, as far as `cut` lets
/// it; resolves to the bytes sent, fewer if the file ended early.
pub(crate) async fn send_range(
    upload: &mut Upload,
    start: u64,
    cut: &Arc<Cut>,
    timeout: Duration,
    local: Local<'_>,
) -> Result<u64, Fault> {
    #[cfg(target_os = "linux")]
    if let Some(tcp) = upload.plain_tcp() {
        let opener = local.opener();
        let file = tokio::task::spawn_blocking(move || opener.open())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| local.read_error(e))?;
        match zero_copy::send(tcp, &file, start, cut, timeout, local).await {
            Ok(n) => return Ok(n),
            // Not every file can be sent this way (some FUSE and special
            // files); nothing went out yet, so the plain way can take over.
            Err(zero_copy::Error::Unsupported) => {}
            Err(zero_copy::Error::Fault(f)) => return Err(f),
        }
    }
    let (mut rx, reader) = spawn_range_reader(local.opener(), start, cut.clone());
    let written = pump(upload, &mut rx, timeout, local).await;
    drop(rx);
    // A failed send never waits for the reader: it may hang on a dead mount.
    written?;
    let read = reader
        .await
        .map_err(|e| Fault::transient(format!("reader task: {e}")))?;
    read.map_err(|e| local.read_error(e))
}

/// Writes every chunk from `rx` to `upload`; an error if the data connection
/// fails or makes no progress for `timeout`.
async fn pump(
    upload: &mut Upload,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
    local: Local<'_>,
) -> Result<(), Fault> {
    loop {
        // A local file that stops giving bytes (a hung network mount) is a
        // stall as much as a silent data connection.
        let chunk = match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(local.read_stalled(timeout)),
        };
        match tokio::time::timeout(timeout, upload.write_all(&chunk)).await {
            Ok(Ok(())) => {
                local.progress.add(chunk.len() as u64);
                crate::rate::pay_set(local.rates, chunk.len() as u64).await;
            }
            Ok(Err(e)) => return Err(local.send_error(e)),
            Err(_) => return Err(local.stalled(timeout)),
        }
    }
    Ok(())
}

/// Reads the file from `start` as far as `cut` lets it, on a blocking
/// thread, chunk by chunk, a few chunks ahead of the network. Resolves to
/// the bytes read.
fn spawn_range_reader(
    file: Opener,
    start: u64,
    cut: Arc<Cut>,
) -> (
    mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<std::io::Result<u64>>,
) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let handle = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut f = file.open()?;
        f.seek(SeekFrom::Start(start))?;
        let mut pos = start;
        loop {
            let want = cut.take(pos, CHUNK);
            if want == 0 {
                break;
            }
            let mut chunk = Vec::with_capacity(want);
            let filled = (&mut f).take(want as u64).read_to_end(&mut chunk)?;
            if filled == 0 {
                break;
            }
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
    file: Opener,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<std::io::Result<(String, u64)>> {
    tokio::task::spawn_blocking(move || {
        let mut f = file.open()?;
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

/// SHA-256 of an entry's whole local file, off the async threads.
pub(crate) async fn hash_file(entry: &crate::job::Entry) -> Result<String, Fault> {
    let file = Opener::of(entry);
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut f = file.open()?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| Fault::transient(format!("hash task: {e}")))?
    .map_err(|e| read_error(entry.index, &entry.local_path, e))
}

/// `sendfile(2)` from the local file straight into the data socket.
#[cfg(target_os = "linux")]
mod zero_copy {
    use super::{Cut, Local};
    use crate::ftp::fault::Fault;
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Bytes per call: bounds how long one call can hold a worker thread
    /// when the file is not in the page cache.
    const PER_CALL: usize = 1 << 20;

    pub(crate) enum Error {
        /// The kernel cannot sendfile from this file; nothing was sent.
        Unsupported,
        Fault(Fault),
    }

    pub(crate) async fn send(
        tcp: &TcpStream,
        file: &std::fs::File,
        start: u64,
        cut: &Cut,
        timeout: Duration,
        local: Local<'_>,
    ) -> Result<u64, Error> {
        let (sock, fd) = (tcp.as_raw_fd(), file.as_raw_fd());
        let mut off = start as libc::off_t;
        loop {
            let want = cut.take(off as u64, PER_CALL);
            if want == 0 {
                break;
            }
            let call = async {
                loop {
                    tcp.writable().await?;
                    let r = tcp.try_io(Interest::WRITABLE, || {
                        // SAFETY: both descriptors are open for the whole call
                        // (borrowed above), and `off` is a valid off_t.
                        let n = unsafe { libc::sendfile(sock, fd, &mut off, want) };
                        if n < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(n as usize)
                        }
                    });
                    match r {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(0)) => break, // the file ended early
                Ok(Ok(n)) => {
                    local.progress.add(n as u64);
                    crate::rate::pay_set(local.rates, n as u64).await;
                }
                Ok(Err(e))
                    if off as u64 == start
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                        ) =>
                {
                    return Err(Error::Unsupported)
                }
                Ok(Err(e)) => return Err(Error::Fault(local.send_error(e))),
                Err(_) => return Err(Error::Fault(local.stalled(timeout))),
            }
        }
        Ok(off as u64 - start)
    }
}
