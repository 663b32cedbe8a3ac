//! A few lines of HTTP/1.1 for the status API tests: one request per
//! connection (`Connection: close`), the body read to its end, and a
//! Server-Sent Events reader on a thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A response: status code, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// API tokens of the daemons the tests started, by address: every request
/// carries its daemon's token unless it names `Authorization` itself (or
/// [`NO_AUTH`]), as `ftpdrop status` and the dashboard do.
static TOKENS: Mutex<Vec<(SocketAddr, std::path::PathBuf)>> = Mutex::new(Vec::new());

/// A header that makes [`request`] send no token.
pub const NO_AUTH: (&str, &str) = ("X-Test-No-Auth", "1");

/// The token file of the daemon at `addr` (the default one is beside `checked/`).
pub fn register(addr: SocketAddr, token_file: std::path::PathBuf) {
    TOKENS.lock().unwrap().push((addr, token_file));
}

/// The token of the daemon at `addr`, if one was registered.
pub fn token(addr: SocketAddr) -> Option<String> {
    let file = TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, f)| f.clone())?;
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.lines().next()?.trim().to_string())
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let anonymous = headers.contains(&NO_AUTH)
        || headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let bearer = (!anonymous)
        .then(|| token(addr))
        .flatten()
        .map(|t| format!("Bearer {t}"));
    let mut s = TcpStream::connect(addr).expect("connect to the status API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers.iter().filter(|h| **h != NO_AUTH) {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = bearer {
        req.push_str(&format!("Authorization: {b}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

fn head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// One request; the body de-chunked if the server chunked it.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let s = send(addr, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = head(&mut r);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        raw = &raw[end + 2..];
        out.extend_from_slice(&raw[..size.min(raw.len())]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

/// The `data:` lines of `/api/events`, as they arrive, collected by a thread.
pub fn sse(addr: SocketAddr, headers: &[(&str, &str)]) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let s = send(addr, "GET", "/api/events", headers, b"");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let (status, _) = head(&mut r);
        assert_eq!(status, 200, "GET /api/events");
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            // Chunk-size lines and blank lines are skipped; events are one `data:` line each.
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str(data.trim()) {
                    out.lock().unwrap().push(v);
                }
            }
            line.clear();
        }
    });
    seen
}
