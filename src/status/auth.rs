//! Who may use the status API: the token, and the two ways of showing it.
//!
//! Every endpoint but `/`, `/health` and `/ready` needs the token. Unless
//! `status.token_file` names one, it is generated at first start into the
//! state folder (beside `checked/`, `ftpdrop-api-token`), readable by the
//! daemon's user only: whoever can read it may use the API, nobody else.
//!
//! - `Authorization: Bearer <token>`: scripts, curl, the dashboard.
//! - `Authorization: Ftpdrop-HMAC nonce=<hex>,mac=<hex>`: `ftpdrop status`
//!   and `submit --wait`. The client first takes a nonce from
//!   `GET /api/auth/nonce` (open), then sends HMAC-SHA256 under the token of
//!   `"<METHOD>\n<path and query>\n<nonce>"`. The token never leaves the
//!   process, and a nonce is good once, for a minute, and only at the daemon
//!   that issued it: a process that took the API's port while the daemon
//!   was down gets a MAC over a nonce of its own, which no daemon accepts.
//!   Only for requests without a body (GET).

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// How long an issued nonce stays good.
const NONCE_LIFE: std::time::Duration = std::time::Duration::from_secs(60);

/// Nonces outstanding at most; the oldest goes first (the endpoint is open,
/// so its memory must be bounded).
const NONCES: usize = 10_000;

/// The token file's default place: the state folder beside `checked/`.
pub fn default_token_file(checked: &Path) -> PathBuf {
    checked
        .parent()
        .unwrap_or(checked)
        .join("ftpdrop-api-token")
}

/// Reads the token file's first line, trimmed; creates the file (owner-only,
/// 32 random bytes as hex) if `generate` and it does not exist.
pub fn load_or_create(path: &Path, generate: bool) -> Result<String> {
    if generate && !path.exists() {
        let token = hex::encode(rand::random::<[u8; 32]>());
        // Written whole under a name of this process, then linked into
        // place (which never replaces a file): instances starting together
        // each see no file or a whole one, never one still empty (a second
        // instance read the first one's empty file and exited).
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let tmp = dir.join(format!(
            ".{}.{}-{:08x}.tmp",
            name.unwrap_or_default(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let written = o.open(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(file = %path.display(), "generated the status API token");
            }
            // Another instance made it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("status token: cannot create {}", path.display()))
            }
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("status token: cannot read {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        anyhow::bail!("status token file {} is empty", path.display());
    }
    Ok(token)
}

/// What a request must show.
pub struct Verifier {
    token: Vec<u8>,
    digest: [u8; 32],
    issued: Mutex<Issued>,
}

#[derive(Default)]
struct Issued {
    live: HashMap<String, Instant>,
    order: VecDeque<String>,
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mac(token: &[u8], method: &str, path: &str, nonce: &str) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes any key length");
    m.update(format!("{method}\n{path}\n{nonce}").as_bytes());
    m.finalize().into_bytes().into()
}

/// The `Authorization` value of a signed request (see the module doc).
pub fn sign(token: &str, nonce: &str, method: &str, path: &str) -> String {
    let mac = mac(token.as_bytes(), method, path, nonce);
    format!("Ftpdrop-HMAC nonce={nonce},mac={}", hex::encode(mac))
}

impl Verifier {
    pub fn new(token: &str) -> Verifier {
        Verifier {
            token: token.as_bytes().to_vec(),
            digest: Sha256::digest(token.as_bytes()).into(),
            issued: Mutex::default(),
        }
    }

    /// A new nonce for one signed request.
    pub fn issue(&self) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut i = self.issued.lock().unwrap();
        while i.order.len() >= NONCES {
            if let Some(old) = i.order.pop_front() {
                i.live.remove(&old);
            }
        }
        i.live.insert(nonce.clone(), Instant::now());
        i.order.push_back(nonce.clone());
        nonce
    }

    /// Whether `authorization` (the header's value) admits `method path`.
    pub fn admits(&self, authorization: Option<&str>, method: &str, path: &str) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        if let Some(t) = value.strip_prefix("Bearer ") {
            // Digests of equal length, compared without an early exit.
            return eq_ct(&Sha256::digest(t.trim().as_bytes()), &self.digest);
        }
        let Some(params) = value.strip_prefix("Ftpdrop-HMAC ") else {
            return false;
        };
        if method != "GET" {
            return false;
        }
        let (mut nonce, mut given) = (None, None);
        for kv in params.split(',') {
            match kv.trim().split_once('=') {
                Some(("nonce", v)) => nonce = Some(v),
                Some(("mac", v)) => given = hex::decode(v).ok(),
                _ => return false,
            }
        }
        let (Some(nonce), Some(given)) = (nonce, given) else {
            return false;
        };
        if !eq_ct(&mac(&self.token, method, path, nonce), &given) {
            return false;
        }
        // Used up whether or not it is still fresh.
        let issued = self.issued.lock().unwrap().live.remove(nonce);
        issued.is_some_and(|at| at.elapsed() <= NONCE_LIFE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_signed_requests_are_admitted_once() {
        let v = Verifier::new("t0ken");
        assert!(v.admits(Some("Bearer t0ken"), "POST", "/api/jobs"));
        assert!(!v.admits(Some("Bearer t0ke"), "GET", "/"));
        assert!(!v.admits(None, "GET", "/api/jobs"));
        let signed = sign("t0ken", &v.issue(), "GET", "/api/jobs?limit=5");
        assert!(v.admits(Some(&signed), "GET", "/api/jobs?limit=5"));
        assert!(
            !v.admits(Some(&signed), "GET", "/api/jobs?limit=5"),
            "a replay is refused"
        );
        let other = sign("t0ken", &v.issue(), "GET", "/api/jobs");
        assert!(
            !v.admits(Some(&other), "GET", "/api/jobs/x"),
            "bound to its path"
        );
        let post = sign("t0ken", &v.issue(), "POST", "/api/jobs");
        assert!(!v.admits(Some(&post), "POST", "/api/jobs"), "GET only");
        let wrong = sign("other", &v.issue(), "GET", "/api/jobs");
        assert!(!v.admits(Some(&wrong), "GET", "/api/jobs"));
        let own = sign(
            "t0ken",
            "00112233445566778899aabbccddeeff",
            "GET",
            "/api/jobs",
        );
        assert!(
            !v.admits(Some(&own), "GET", "/api/jobs"),
            "a nonce this daemon never issued"
        );
    }

    #[test]
    fn outstanding_nonces_are_bounded() {
        let v = Verifier::new("k");
        let first = v.issue();
        for _ in 0..NONCES {
            v.issue();
        }
        assert!(v.issued.lock().unwrap().live.len() <= NONCES);
        assert!(!v.admits(Some(&sign("k", &first, "GET", "/x")), "GET", "/x"));
    }

    #[test]
    fn the_generated_token_is_owner_only_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tok");
        let a = load_or_create(&p, true).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create(&p, true).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(load_or_create(&d.path().join("none"), false).is_err());
    }

    /// Instances starting together: each gets the one token, none finds
    /// the file still empty (one did, and exited).
    #[test]
    fn instances_starting_together_share_one_whole_token() {
        for _ in 0..20 {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("tok");
            let tokens: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| load_or_create(&p, true)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().unwrap())
                    .collect()
            });
            assert!(tokens.iter().all(|t| t.len() == 64 && *t == tokens[0]));
            let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
            assert_eq!(names.len(), 1, "temp files left: {names:?}");
        }
    }
}
