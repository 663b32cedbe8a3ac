//! Shared integration-test support. Include from a test file with `mod support;`.
//!
//! - [`ftpserver::FtpServer`]: in-process libunftp server on 127.0.0.1 (user `alice`).
//! - [`proxy::FaultProxy`]: FTP-aware TCP proxy that cuts/truncates/stalls connections on demand.
//! - [`replies::ReplyProxy`]: control-connection proxy that answers chosen commands with canned replies.
//! - File helpers below: deterministic pseudo-random content, streamed to disk, and digests.
#![allow(dead_code)]

pub mod daemon;
pub mod ftpserver;
pub mod http;
pub mod proxy;
pub mod replies;

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const CHUNK: usize = 1 << 20; // multiple of 8: keeps the byte stream independent of chunking

/// Write `bytes` to `path`, creating parent directories.
pub fn write_file(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dirs");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Deterministic pseudo-random bytes (xorshift64*), fast, no extra crate.
/// `random_bytes(n, seed)` is a prefix of `random_bytes(m, seed)` for `n <= m`, and equals the
/// content written by `write_random_file(_, n, seed)`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    XorShift::new(seed).fill(&mut out);
    out
}

/// Write `len` pseudo-random bytes (same stream as [`random_bytes`]) to `path` in 1 MiB chunks,
/// creating parent directories. Suitable for files of tens of MiB.
pub fn write_random_file(path: impl AsRef<Path>, len: u64, seed: u64) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dirs");
    }
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = std::io::BufWriter::with_capacity(CHUNK, file);
    let mut rng = XorShift::new(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).expect("write random file");
        left -= n as u64;
    }
    w.flush().expect("flush random file");
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes.as_ref()))
}

/// Panic unless both files exist with identical content; reports the first differing offset.
/// Streams 1 MiB chunks with plain comparisons (much faster than hashing in debug builds).
pub fn assert_same_file(a: impl AsRef<Path>, b: impl AsRef<Path>) {
    let (a, b) = (a.as_ref(), b.as_ref());
    let open =
        |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (fa, fb) = (open(a), open(b));
    let la = fa.metadata().expect("stat").len();
    let lb = fb.metadata().expect("stat").len();
    assert_eq!(la, lb, "size differs: {} vs {}", a.display(), b.display());
    let mut ra = std::io::BufReader::with_capacity(CHUNK, fa);
    let mut rb = std::io::BufReader::with_capacity(CHUNK, fb);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut offset = 0u64;
    while offset < la {
        let n = (la - offset).min(CHUNK as u64) as usize;
        ra.read_exact(&mut ba[..n]).expect("read");
        rb.read_exact(&mut bb[..n]).expect("read");
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "content differs at byte {}: {} vs {}",
                offset + i as u64,
                a.display(),
                b.display()
            );
        }
        offset += n as u64;
    }
}

/// An address on 127.0.0.1 that was free a moment ago (bound to port 0, then released). For
/// "server down at first, up later" tests: connect to it before `FtpServer::start_on(addr, ..)`.
pub fn free_local_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// Poll `cond` every 20 ms until it is true or `timeout` passes; returns the last result.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` from the stream. Only the last call for a stream may use a length that is not
    /// a multiple of 8 (the rest of that word is discarded).
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let w = self.next().to_le_bytes();
            rem.copy_from_slice(&w[..rem.len()]);
        }
    }
}

/// Daemon settings for tests: folders under `base` (created), fast settle
/// and retries, so that tests spend their time on what they test.
pub fn daemon_config(base: &Path) -> ftpdrop::Config {
    log_if_asked();
    let mut cfg = ftpdrop::Config {
        inbox: base.join("files"),
        checked: base.join("checked"),
        settle_ms: 100,
        sweep_interval_ms: 500,
        ..ftpdrop::Config::default()
    };
    // A small count, so that tests of failures end quickly; the daemon's
    // default retries until `give_up_after_secs`.
    cfg.retry.max_attempts = 5;
    cfg.retry.initial_backoff_ms = 50;
    cfg.retry.max_backoff_ms = 200;
    // Every test daemon serves the status API, on a port of its own.
    cfg.status.listen = Some("127.0.0.1:0".into());
    std::fs::create_dir_all(&cfg.inbox).unwrap();
    std::fs::create_dir_all(&cfg.checked).unwrap();
    cfg
}

/// The job's receipt as it is on disk now, if there is one.
pub fn receipt_now(checked: &Path, job: &str) -> Option<ftpdrop::Receipt> {
    ftpdrop::Receipt::load(&checked.join(format!("{job}.report.json"))).ok()
}

/// Waits for the job's receipt to reach a final state; panics after `limit`.
pub async fn wait_receipt(checked: &Path, job: &str, limit: Duration) -> ftpdrop::Receipt {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(r) = receipt_now(checked, job) {
            if r.state.is_final() {
                return r;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no final receipt for {job} within {limit:?}: {:#?}",
            receipt_now(checked, job)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `FTPDROP_TEST_LOG` set (an env-filter, such as `ftpdrop=debug`),
/// the daemons in this test binary log to the test's captured output: a
/// failure then shows what the daemon did.
pub fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("FTPDROP_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
