//! Server-side digests of an uploaded file: which hash commands a server
//! offers (FEAT), how to ask (`OPTS HASH` and `HASH`, or the older
//! `XSHA256` / `XSHA1` / `XMD5` / `XCRC`), and how to read the answer.
//! What a digest proves, and what is done with a mismatch, is
//! `upload::verify`'s.

use crate::ftp::fault::Fault;
use crate::ftp::{Features, Session};

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
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha1 => "sha1",
            Algo::Md5 => "md5",
            Algo::Crc32 => "crc32",
        }
    }

    /// The name on the `HASH` feature line and in `OPTS HASH`.
    pub(crate) fn hash_name(self) -> &'static str {
        match self {
            Algo::Sha256 => "SHA-256",
            Algo::Sha1 => "SHA-1",
            Algo::Md5 => "MD5",
            Algo::Crc32 => "CRC32",
        }
    }

    /// The pre-standard command for it.
    pub(crate) fn x_command(self) -> &'static str {
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
    pub(crate) fn algo(self) -> Algo {
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

impl Session {
    /// Asks the server for a digest. `None` when it cannot give one after all
    /// (refused, not understood); an error only when the connection failed.
    pub async fn digest(&mut self, method: Method, path: &str) -> Result<Option<String>, Fault> {
        let algo = method.algo();
        let reply = match method {
            Method::Hash(_) => match self.select_hash(algo.hash_name()).await {
                Ok(()) => self.hash_command("HASH", path).await,
                Err(e) => Err(e),
            },
            Method::X(_) => self.hash_command(algo.x_command(), path).await,
        };
        match reply {
            Ok(line) => {
                let digest = parse_digest(&line, algo);
                if digest.is_none() {
                    tracing::debug!(reply = %line, ?method, "hash reply not understood");
                }
                Ok(digest)
            }
            Err(f) if f.is_refusal() && !self.is_broken() => {
                tracing::debug!(error = %f, ?method, "server did not compute the hash");
                Ok(None)
            }
            Err(f) => Err(f),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::Features;

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
