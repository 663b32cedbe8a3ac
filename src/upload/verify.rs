//! Proof, beyond the size, that the server holds the local file's bytes.
//!
//! Runs on the temporary file, before the rename that publishes it, so a
//! damaged upload never appears under the final name. Two checks:
//!
//! - **Server digest** (`verify: auto`, the default): when FEAT advertises a
//!   hash command, the server hashes the file and the digest is compared with
//!   the local one. The strongest algorithm on offer wins (SHA-256, SHA-1,
//!   MD5, CRC32), and for each the IETF draft's `HASH` (with `OPTS HASH`) is
//!   preferred to the older `XSHA256` / `XSHA1` / `XMD5` / `XCRC`. SHA-256 of
//!   the local file comes free from the upload's reader; the others are
//!   computed here, from the local file, only when the server offers nothing
//!   better.
//! - **Read-back** (`verify: download`, opt-in): the file is downloaded
//!   again and its SHA-256 compared. Costs a second transfer; catches what a
//!   lying or absent hash command cannot.
//!
//! A mismatch deletes the temporary file and is a transient fault, so the
//! next attempt uploads from scratch. A server that advertises a hash command
//! and then fails to run it is not a mismatch: the size check stands alone.
//! Each check that passed is named in the receipt's `verification` list:
//! `sha256`, `sha1`, `md5`, `crc32` (server digests), `download` (read-back).

use crate::ftp::fault::Fault;
use crate::ftp::{Features, Session};
use crate::job::{Entry, Verify};
use sha2::{Digest, Sha256};
use std::io::Read;

/// A digest algorithm both sides can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha1,
    Md5,
    Crc32,
}

impl Algo {
    /// Strongest first.
    const ALL: [Algo; 4] = [Algo::Sha256, Algo::Sha1, Algo::Md5, Algo::Crc32];

    /// The name in the receipt.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha1 => "sha1",
            Algo::Md5 => "md5",
            Algo::Crc32 => "crc32",
        }
    }

    /// The name on the `HASH` feature line and in `OPTS HASH`.
    fn hash_name(self) -> &'static str {
        match self {
            Algo::Sha256 => "SHA-256",
            Algo::Sha1 => "SHA-1",
            Algo::Md5 => "MD5",
            Algo::Crc32 => "CRC32",
        }
    }

    /// The pre-standard command for it.
    fn x_command(self) -> &'static str {
        match self {
            Algo::Sha256 => "XSHA256",
            Algo::Sha1 => "XSHA1",
            Algo::Md5 => "XMD5",
            Algo::Crc32 => "XCRC",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha1 => 40,
            Algo::Md5 => 32,
            Algo::Crc32 => 8,
        }
    }
}

/// One way to ask the server for a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `OPTS HASH <algo>`, then `HASH <path>` (draft-bryan-ftpext-hash).
    Hash(Algo),
    /// `XSHA256 <path>` and friends.
    X(Algo),
}

impl Method {
    pub fn algo(self) -> Algo {
        match self {
            Method::Hash(a) | Method::X(a) => a,
        }
    }
}

/// What the server offers, best first.
pub fn methods(features: &Features) -> Vec<Method> {
    let mut out = Vec::new();
    for algo in Algo::ALL {
        if features.hash_commands.iter().any(|c| c == "HASH")
            && features.hash_algos.iter().any(|a| a == algo.hash_name())
        {
            out.push(Method::Hash(algo));
        }
        if features.hash_commands.iter().any(|c| c == algo.x_command()) {
            out.push(Method::X(algo));
        }
    }
    out
}

/// Does [`temp_file`] ask the server anything for this entry (a digest
/// command, a read-back)? If not, the size is the only check.
pub fn asks_server(entry: &Entry, features: &Features) -> bool {
    match entry.verify {
        Verify::Size => false,
        Verify::Download => true,
        _ => !methods(features).is_empty(),
    }
}

/// Checks the uploaded temporary file as `entry.verify` asks. Returns the
/// names of the checks that passed; a mismatch deletes `temp_path` and is a
/// transient fault.
pub async fn temp_file(
    session: &mut Session,
    entry: &Entry,
    temp_path: &str,
    size: u64,
    sha256: &str,
) -> Result<Vec<String>, Fault> {
    let mut passed = Vec::new();
    if entry.verify == Verify::Size {
        return Ok(passed);
    }
    for method in methods(&session.features) {
        let Some(remote) = remote_digest(session, method, temp_path).await? else {
            continue;
        };
        let algo = method.algo();
        let local = match algo {
            Algo::Sha256 => sha256.to_string(),
            _ => local_digest(entry, algo).await?,
        };
        if !remote.eq_ignore_ascii_case(&local) {
            return Err(mismatch(session, temp_path, algo.name(), &local, &remote).await);
        }
        passed.push(algo.name().to_string());
        break;
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

/// Asks the server for a digest. `None` when it cannot give one after all
/// (refused, not understood); an error only when the connection failed.
async fn remote_digest(
    session: &mut Session,
    method: Method,
    path: &str,
) -> Result<Option<String>, Fault> {
    let algo = method.algo();
    let reply = match method {
        Method::Hash(_) => match session.select_hash(algo.hash_name()).await {
            Ok(()) => session.hash_command("HASH", path).await,
            Err(e) => Err(e),
        },
        Method::X(_) => session.hash_command(algo.x_command(), path).await,
    };
    match reply {
        Ok(line) => {
            let digest = parse_digest(&line, algo);
            if digest.is_none() {
                tracing::debug!(reply = %line, ?method, "hash reply not understood");
            }
            Ok(digest)
        }
        Err(f) if f.code.is_some() && !session.broken => {
            tracing::debug!(error = %f, ?method, "server did not compute the hash");
            Ok(None)
        }
        Err(f) => Err(f),
    }
}

/// Finds the digest in the last line of a hash reply. `HASH` answers
/// `213 SHA-256 0-5 <hex> <path>` (proftpd); the X commands `250 <HEX>`.
pub fn parse_digest(line: &str, algo: Algo) -> Option<String> {
    let mut words = line.split_whitespace();
    let code = words.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let is_hex = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_hexdigit());
    for w in words {
        if algo == Algo::Crc32 && is_hex(w) && w.len() <= 8 {
            // Some servers drop the leading zeros of a CRC.
            return Some(format!("{:0>8}", w.to_ascii_lowercase()));
        }
        if w.len() == algo.hex_len() && is_hex(w) {
            return Some(w.to_ascii_lowercase());
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proftpd_and_x_replies() {
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(
            parse_digest(
                &format!("213 SHA-256 0-5 {sha} dir/.ftpdrop-abc.part"),
                Algo::Sha256
            ),
            Some(sha.to_string())
        );
        assert_eq!(
            parse_digest(&format!("250 {}", sha.to_uppercase()), Algo::Sha256),
            Some(sha.to_string())
        );
        assert_eq!(
            parse_digest("250 3610A686", Algo::Crc32),
            Some("3610a686".into())
        );
        assert_eq!(
            parse_digest("250 10A686", Algo::Crc32),
            Some("0010a686".into())
        );
        assert_eq!(
            parse_digest("250 5D41402ABC4B2A76B9719D911017C592", Algo::Md5),
            Some("5d41402abc4b2a76b9719d911017c592".into())
        );
        assert_eq!(parse_digest("550 No such file.", Algo::Md5), None);
        assert_eq!(parse_digest("garbage", Algo::Md5), None);
    }

    #[test]
    fn strongest_method_first_and_hash_before_x() {
        let f = Features {
            hash_commands: vec![
                "HASH".into(),
                "XMD5".into(),
                "XSHA256".into(),
                "XCRC".into(),
            ],
            hash_algos: vec![
                "CRC32".into(),
                "MD5".into(),
                "SHA-1".into(),
                "SHA-256".into(),
            ],
            ..Features::default()
        };
        assert_eq!(
            methods(&f),
            vec![
                Method::Hash(Algo::Sha256),
                Method::X(Algo::Sha256),
                Method::Hash(Algo::Sha1),
                Method::Hash(Algo::Md5),
                Method::X(Algo::Md5),
                Method::Hash(Algo::Crc32),
                Method::X(Algo::Crc32),
            ]
        );
        assert!(methods(&Features::default()).is_empty());
    }
}
