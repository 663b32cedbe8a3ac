//! Proof, beyond the size, that the server holds the local file's bytes.
//!
//! Runs on the temporary file, before the rename that publishes it, so a
//! damaged upload never appears under the final name. Two checks:
//!
//! - **Server digest** (`verify: auto`, the default): when the server offers
//!   a hash command, it hashes the file and the digest is compared with the
//!   local one. The strongest algorithm on offer wins (SHA-256, SHA-1, MD5,
//!   CRC32; how to ask is [`crate::ftp::digest`]'s). SHA-256 of the local
//!   file comes free from the upload's reader; the others are computed here,
//!   from the local file, only when the server offers nothing better.
//! - **Read-back** (`verify: download`, opt-in): the file is downloaded
//!   again and its SHA-256 compared. Costs a second transfer; catches what a
//!   lying or absent hash command cannot.
//!
//! A mismatch deletes the temporary file and is a transient fault, so the
//! next attempt uploads from scratch. A server that advertises a hash command
//! and then fails to run it is not a mismatch: the size check stands alone.
//! Each check that passed is named in the receipt's `verification` list:
//! `sha256`, `sha1`, `md5`, `crc32` (server digests), `download` (read-back).

use crate::ftp::digest::{methods, Algo};
use crate::ftp::fault::Fault;
use crate::ftp::{Features, Session};
use crate::job::{Entry, Verify};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Does [`temp_file`] ask the server anything for this entry (a digest
/// command, a read-back)? If not, the size is the only check.
pub(crate) fn asks_server(entry: &Entry, features: &Features) -> bool {
    match entry.verify {
        Verify::Size | Verify::None => false,
        Verify::Download => true,
        _ => !methods(features).is_empty(),
    }
}

/// Checks the uploaded temporary file as `entry.verify` asks. Returns the
/// names of the checks that passed; a mismatch deletes `temp_path` and is a
/// transient fault.
pub(crate) async fn temp_file(
    session: &mut Session,
    entry: &Entry,
    temp_path: &str,
    size: u64,
    sha256: &str,
) -> Result<Vec<String>, Fault> {
    let mut passed = Vec::new();
    if matches!(entry.verify, Verify::Size | Verify::None) {
        return Ok(passed);
    }
    if let Some(d) = server_digest(session, entry, temp_path, sha256).await? {
        if !d.remote.eq_ignore_ascii_case(&d.local) {
            return Err(mismatch(session, temp_path, d.algo.name(), &d.local, &d.remote).await);
        }
        passed.push(d.algo.name().to_string());
    }
    if entry.verify == Verify::Download {
        let (remote, n) = session.download_sha256(temp_path).await?;
        if n != size || remote != sha256 {
            let what = format!("read-back sha256 ({n} bytes)");
            return Err(mismatch(session, temp_path, &what, sha256, &remote).await);
        }
        passed.push("download".to_string());
    }
    Ok(passed)
}

/// Does the server's `path` already hold the local file (`if_exists:
/// skip_if_identical`)? Its size is `size`; where the server hashes, the
/// digest must match too. `Some(checks)` names what matched.
pub(crate) async fn same_on_server(
    session: &mut Session,
    entry: &Entry,
    path: &str,
    sha256: &str,
) -> Result<Option<Vec<String>>, Fault> {
    let mut passed = vec!["size".to_string()];
    if let Some(d) = server_digest(session, entry, path, sha256).await? {
        if !d.remote.eq_ignore_ascii_case(&d.local) {
            return Ok(None);
        }
        passed.push(d.algo.name().to_string());
    }
    Ok(Some(passed))
}

/// A digest of `path` by the server, with the local file's by the same
/// algorithm.
struct Digests {
    algo: Algo,
    remote: String,
    local: String,
}

/// The server's digest of `path` by the strongest method it answers, and
/// the local file's by the same algorithm (SHA-256 is `sha256`, already
/// known); `None` where the server answers none.
async fn server_digest(
    session: &mut Session,
    entry: &Entry,
    path: &str,
    sha256: &str,
) -> Result<Option<Digests>, Fault> {
    for method in methods(&session.features) {
        let Some(remote) = session.digest(method, path).await? else {
            continue;
        };
        let algo = method.algo();
        let local = match algo {
            Algo::Sha256 => sha256.to_string(),
            _ => local_digest(entry, algo).await?,
        };
        return Ok(Some(Digests {
            algo,
            remote,
            local,
        }));
    }
    Ok(None)
}

async fn mismatch(
    session: &mut Session,
    temp_path: &str,
    what: &str,
    local: &str,
    remote: &str,
) -> Fault {
    // The next attempt must not resume (APPE) onto damaged bytes.
    if let Err(e) = session.delete(temp_path).await {
        tracing::warn!(remote_path = %temp_path, error = %e, "could not delete a damaged upload");
    }
    Fault::transient(format!(
        "{what} of {temp_path} on the server is {remote}, the local file's is {local}: \
         the upload was damaged; sending it again from the start"
    ))
}

/// The digest of the local file, read again (only for algorithms the upload
/// did not compute while streaming).
async fn local_digest(entry: &Entry, algo: Algo) -> Result<String, Fault> {
    let file = crate::upload::source::Opener::of(entry);
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut f = file.open()?;
        let mut buf = vec![0u8; 512 * 1024];
        let mut sha1 = sha1::Sha1::new();
        let mut md5 = md5::Md5::new();
        let mut crc = crc32fast::Hasher::new();
        let mut sha256 = Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let b = &buf[..n];
            match algo {
                Algo::Sha256 => sha256.update(b),
                Algo::Sha1 => sha1.update(b),
                Algo::Md5 => md5.update(b),
                Algo::Crc32 => crc.update(b),
            }
        }
        Ok(match algo {
            Algo::Sha256 => hex::encode(sha256.finalize()),
            Algo::Sha1 => hex::encode(sha1.finalize()),
            Algo::Md5 => hex::encode(md5.finalize()),
            Algo::Crc32 => format!("{:08x}", crc.finalize()),
        })
    })
    .await
    .map_err(|e| Fault::transient(format!("hash task: {e}")))?
    .map_err(|e| crate::upload::source::read_error(entry.index, &entry.local_path, e))
}
