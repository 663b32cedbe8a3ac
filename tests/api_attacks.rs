//! Issue 19, part 1: what a web page in the operator's browser, a local
//! user or a slow client can make the status API do. The release binary's
//! defaults (`ftpdrop run` with a config naming only its folders and a free
//! port), attacked over real sockets. Each attack succeeded before.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::http;

/// `ftpdrop run` on a config with its folders and a port, nothing else.
struct Bin {
    child: Child,
    addr: SocketAddr,
    base: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bin {
    fn config(dir: &Path) -> (PathBuf, SocketAddr) {
        let addr = support::free_local_addr();
        let config = dir.join("config.json");
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::create_dir_all(dir.join("checked")).unwrap();
        std::fs::write(
            &config,
            serde_json::to_vec(&json!({
                "inbox": dir.join("files"), "checked": dir.join("checked"),
                "settle_ms": 50, "status": {"listen": addr.to_string()},
            }))
            .unwrap(),
        )
        .unwrap();
        (config, addr)
    }

    fn start_with(nofile: Option<u64>) -> Bin {
        let dir = tempfile::tempdir().unwrap();
        let (config, addr) = Bin::config(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpdrop"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        #[cfg(not(unix))]
        let _ = nofile;
        let child = cmd.spawn().unwrap();
        let base = dir.path().to_path_buf();
        http::register(
            addr,
            ftpdrop::status::auth::default_token_file(&base.join("checked")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() || http::get(addr, "/ready").status != 200 {
            assert!(Instant::now() < deadline, "the daemon never got ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Bin {
            child,
            addr,
            base,
            _dir: dir,
        }
    }

    fn start() -> Bin {
        Bin::start_with(None)
    }

    fn token(&self) -> String {
        http::token(self.addr).expect("the token the daemon made")
    }

    /// Every job file in the inbox and in `checked/`.
    fn jobs(&self) -> Vec<String> {
        ["files", "checked"]
            .iter()
            .flat_map(|d| std::fs::read_dir(self.base.join(d)).unwrap().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect()
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The job a hostile page would post: the daemon's own environment (its
/// servers' `password_env` secrets) to the page's server.
fn leak_job() -> Vec<u8> {
    serde_json::to_vec(&json!([{
        "server": {"host": "127.0.0.1", "port": "2121", "login": "u", "password": "p"},
        "file": {"local_path": "/proc/self/environ", "server_path": "loot"},
    }]))
    .unwrap()
}

#[test]
fn a_page_on_another_origin_can_neither_change_nor_read_anything() {
    let d = Bin::start();
    let api = d.addr;
    let host = api.to_string();
    let bearer = format!("Bearer {}", d.token());
    let body = leak_job();

    // The "simple" cross-site POSTs a page can make without a preflight:
    // text/plain and form bodies, with the browser's Origin and
    // Sec-Fetch-Site. No token (a page has none), and then even with one.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for auth in [None, Some(bearer.as_str())] {
            let mut h = vec![
                ("Content-Type", ct),
                ("Origin", "http://evil.example"),
                ("Sec-Fetch-Site", "cross-site"),
                http::NO_AUTH,
            ];
            if let Some(a) = auth {
                h.push(("Authorization", a));
            }
            let r = http::request(api, "POST", "/api/jobs", &h, &body);
            assert!(
                [401, 403, 415].contains(&r.status),
                "{ct} {auth:?}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // JSON with the token, but from another origin or site.
    for h in [
        [
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        [("Origin", "null"), ("X-Nothing", "")],
        [("Sec-Fetch-Site", "same-site"), ("X-Nothing", "")],
    ] {
        let mut all = vec![
            ("Content-Type", "application/json"),
            ("Authorization", bearer.as_str()),
        ];
        all.extend(h);
        let r = http::request(api, "POST", "/api/jobs", &all, &body);
        assert_eq!(r.status, 403, "{h:?}: {}", r.body);
    }
    // Without the token, same origin and JSON: a local process that cannot read the token.
    let r = http::request(
        api,
        "POST",
        "/api/jobs",
        &[("Content-Type", "application/json"), http::NO_AUTH],
        &body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(d.jobs(), Vec::<String>::new(), "no job was taken");

    // DNS rebinding: the page's own name, pointing at 127.0.0.1.
    for path in ["/api/jobs", "/api/jobs/x", "/metrics", "/api/events", "/"] {
        let r = http::request(api, "GET", path, &[("Host", "evil.example:9180")], b"");
        assert_eq!(r.status, 421, "{path} through a rebound name: {}", r.body);
    }
    let r = http::request(
        api,
        "POST",
        "/api/jobs",
        &[
            ("Host", "evil.example"),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(r.status, 421);
    assert_eq!(d.jobs(), Vec::<String>::new(), "no job was taken");

    // The live feeds, from a foreign page (a WebSocket needs no preflight).
    let upgrade = [
        ("Origin", "http://evil.example"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let r = http::request(api, "GET", "/api/ws", &upgrade, b"");
    assert_eq!(r.status, 403, "a WebSocket from another origin");
    let r = http::request(
        api,
        "GET",
        "/api/events",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 403, "SSE from another origin");
    // The same requests from the API's own origin pass.
    let r = http::request(
        api,
        "GET",
        "/api/jobs",
        &[("Origin", &format!("http://{host}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// `ftpdrop status` while the daemon is down, and another local process
/// listens on the API's port: it is sent nothing it can use. What it got
/// does not work at the real daemon either.
#[test]
fn the_cli_sends_no_secret_to_whoever_took_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = Bin::config(dir.path());
    let token = "0123456789abcdef0123456789abcdef-the-token";
    std::fs::write(
        ftpdrop::status::auth::default_token_file(&dir.path().join("checked")),
        format!("{token}\n"),
    )
    .unwrap();
    let squatter = std::net::TcpListener::bind(addr).unwrap();
    let got = std::thread::spawn(move || {
        let mut seen = String::new();
        squatter.set_nonblocking(false).unwrap();
        for _ in 0..2 {
            let Ok((mut s, _)) = squatter.accept() else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&req);
            // Answer as a daemon would: a nonce of its own, then an empty list.
            let body = if req.contains("/api/auth/nonce") {
                r#"{"nonce":"00112233445566778899aabbccddeeff"}"#
            } else {
                "[]"
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        seen
    });
    let out = Command::new(env!("CARGO_BIN_EXE_ftpdrop"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let seen = got.join().unwrap();
    assert!(seen.contains("GET /api/jobs"), "{seen}");
    assert!(
        !seen.contains(token),
        "the token went to the squatter: {seen}"
    );
    assert!(!seen.contains("Bearer"), "{seen}");
}

/// 1,100 half-sent requests used to take every descriptor of a daemon with
/// 1,024, after which it could not claim jobs. Here the limit is 256 and
/// 400 clients dribble: the daemon still claims and finishes a job, and
/// the slow clients are cut off within the head timeout.
#[cfg(unix)]
#[test]
fn slow_clients_cannot_starve_the_daemon_of_descriptors() {
    let d = Bin::start_with(Some(256));
    let mut slow = Vec::new();
    for _ in 0..400 {
        if let Ok(mut s) = TcpStream::connect(d.addr) {
            let _ = s.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            slow.push(s);
        }
    }
    // A job (invalid on purpose: it needs no server) is claimed and ends.
    std::fs::write(d.base.join("files/after.json"), b"[{\"nope\": 1}]").unwrap();
    let receipt = d.base.join("checked/after.report.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !receipt.exists() {
        assert!(
            Instant::now() < deadline,
            "the job was never claimed while slow clients held the API"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The head timeout closes them; then the API answers again.
    let deadline = Instant::now() + ftpdrop::status::http::HEAD_TIMEOUT * 3;
    let mut closed = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    while closed < slow.len() / 2 && Instant::now() < deadline {
        closed = slow
            .iter_mut()
            .filter(|s| {
                let mut b = [0u8; 512];
                (&**s).read(&mut b).is_ok()
            })
            .count();
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(slow);
    assert_eq!(http::get(d.addr, "/health").status, 200);
}

/// A WebSocket client may not push big messages (8 clients used to pin
/// 490 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_cannot_push_big_messages() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let d = tokio::task::spawn_blocking(Bin::start).await.unwrap();
    let mut req = format!("ws://{}/api/ws", d.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", d.token()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let _ = ws.send(Message::Binary(vec![7u8; 1 << 20].into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the connection is closed");
    drop(d);
}
