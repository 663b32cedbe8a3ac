//! The servers partners really run, beyond the modern Linux ones: legacy
//! code pages (and more, as they land). Each against a real server or a
//! variant of `scripts/interop/quirky_ftpd.py` that behaves as documented.

use super::*;

/// A named server for `t` with extra settings.
fn named(t: &Target, extra: Value) -> Result<ftpdrop::config::ServerDef, String> {
    let mut def = t.server_json();
    def["port"] = json!(t.port);
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        def[k] = v;
    }
    serde_json::from_value(def).map_err(|e| format!("server definition: {e}"))
}

/// A cp1251-only server (`q-cp1251`: no UTF8 in FEAT, `OPTS UTF8 ON`
/// refused): with `encoding: auto` and `legacy_encoding: cp1251`, Cyrillic
/// names and `я` (0xFF, the Telnet IAC byte) arrive as themselves; a name
/// cp1251 cannot write fails its entry, naming the character, and nothing
/// is sent under a lossy name.
pub(super) async fn cp1251_names(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("cp1251");
    let files: [(&str, &[u8]); 3] = [
        ("План отчёт 2024.txt", "отчёт\n".as_bytes()),
        ("я.txt", b"ya\n"),
        ("Łódź ő.txt", b"not in cp1251\n"),
    ];
    let entries: Vec<Value> = files
        .iter()
        .map(|(n, b)| {
            let local = w.local(n, b);
            json!({"server": "legacy", "file": {"local_path": local, "server_path": rel}})
        })
        .collect();
    let def = named(t, json!({"encoding": "auto"}))?;
    let r = w
        .run("cp1251", entries, |c| {
            c.legacy_encoding = ftpdrop::config::CodePage::Cp1251;
            c.servers.insert("legacy".into(), def);
        })
        .await;
    for (i, (n, b)) in files.iter().take(2).enumerate() {
        ensure(r.entries[i].state == EntryState::Done, || {
            format!("{n}: {:?} {:?}", r.entries[i].state, r.entries[i].error)
        })?;
        same_bytes(&disk.join(n), b)?;
    }
    let bad = &r.entries[2];
    let error = bad.error.clone().unwrap_or_default();
    ensure(
        bad.state == EntryState::Failed
            && error.contains("'Ł' (U+0141)")
            && error.contains("cp1251")
            && bad.attempts == 1,
        || {
            format!(
                "the name cp1251 cannot write: {:?} after {} attempts: {error}",
                bad.state, bad.attempts
            )
        },
    )?;
    let listed: Vec<String> = std::fs::read_dir(&disk)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(listed.len() == 2, || {
        format!("on the server's disk: {listed:?}")
    })?;
    ensure(r.state == JobState::Partial, || {
        format!("job {:?}", r.state)
    })?;
    // Remembered: the next job's sessions speak cp1251 from their first command.
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-cp1251/ftpdrop-learned.json"))
        .unwrap_or_default();
    ensure(learned.contains("\"utf8\": false"), || {
        format!("not learned: {learned}")
    })?;
    let body = "ещё\n".as_bytes();
    let local = w.local("again/Счёт №5.txt", body);
    let def = named(t, json!({"encoding": "auto"}))?;
    let r = w
        .run_in(
            "cp1251",
            "cp1251-again",
            vec![json!({"server": "legacy", "file": {"local_path": local, "server_path": rel}})],
            |c| {
                c.legacy_encoding = ftpdrop::config::CodePage::Cp1251;
                c.servers.insert("legacy".into(), def);
            },
        )
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("Счёт №5.txt"), body)?;
    Ok("Cyrillic and я arrived as cp1251; Ł refused by name, nothing lossy sent; learned, and the next job's sessions spoke cp1251 at once".into())
}

/// A drop box that takes STOR and nothing else (`q-dropbox`: no SIZE, no
/// rename, no listing, no hidden name). The defaults fail with an error
/// that names the settings; `publish: direct` with `verify: none` delivers,
/// and the receipt says "sent, not verified".
pub(super) async fn drop_box(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("dropbox");
    let body = support::random_bytes(300_000, 41);
    let local = w.local("payment.xml", &body);
    let entry =
        |server: &str| json!({"server": server, "file": {"local_path": local, "server_path": rel}});
    let (plain, direct, sized) = (
        named(t, json!({}))?,
        named(t, json!({"publish": "direct", "verify": "none"}))?,
        named(t, json!({"publish": "direct"}))?,
    );
    // The defaults: a temp name the box refuses, and a clear way out.
    let r = w
        .run("defaults", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), plain);
        })
        .await;
    let e = &r.entries[0];
    let error = e.error.clone().unwrap_or_default();
    ensure(
        e.state == EntryState::Failed && error.contains("\"publish\": \"direct\""),
        || format!("defaults against a drop box: {:?}: {error}", e.state),
    )?;
    ensure(!disk.join("payment.xml").exists(), || {
        "a file was published by the defaults".into()
    })?;
    // Direct, checked by size: the box has no SIZE, and the error says what to set.
    let r = w
        .run("sized", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), sized);
        })
        .await;
    let e = &r.entries[0];
    let error = e.error.clone().unwrap_or_default();
    ensure(
        e.state == EntryState::Failed && error.contains("\"verify\": \"none\""),
        || format!("direct with a size check: {:?}: {error}", e.state),
    )?;
    // Direct and unverified: delivered, and the receipt says so.
    let r = w
        .run("direct", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), direct);
        })
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("payment.xml"), &body)?;
    ensure(r.entries[0].verification == ["sent, not verified"], || {
        format!("verification {:?}", r.entries[0].verification)
    })?;
    let names: Vec<String> = std::fs::read_dir(&disk)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(names == ["payment.xml"], || {
        format!("in the box: {names:?}")
    })?;
    Ok("defaults fail naming publish: direct; direct + verify none delivered, \"sent, not verified\"".into())
}

/// The leaf certificate of a PEM file and its two SHA-256 fingerprints
/// (certificate, public key), as ftpdrop computes them.
fn pins_of(pem: &Path) -> (String, String) {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let cert = CertificateDer::pem_file_iter(pem)
        .expect("server certificate")
        .next()
        .expect("one certificate")
        .expect("PEM");
    let (whole, key) = ftpdrop::ftp::tls::fingerprints(&cert);
    (whole, key.expect("a public key"))
}

/// TLS that needs a nudge, against vsftpd with TLS 1.3 (`vsftpd-tls`,
/// `require_ssl_reuse`): `tls_max_version: "1.2"` holds every connection
/// to TLS 1.2 (its log says which); a self-signed-style server trusted by
/// `tls_pin_sha256` of its certificate or of its key, with no `ca_file`;
/// a wrong pin fails at once and names the server's fingerprints.
pub(super) async fn tls_nudges(t: &Target, log: &Path, cert: &Path) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("tls-nudges");
    let mut notes = Vec::new();
    async fn run(
        w: &Work,
        t: &Target,
        rel: &str,
        job: &str,
        extra: Value,
    ) -> Result<Receipt, String> {
        let def = named(t, extra)?;
        let local = w.local(&format!("{job}.bin"), job.as_bytes());
        let entry = json!({"server": "p", "file": {"local_path": local, "server_path": rel}});
        Ok(w.run(job, vec![entry], move |c| {
            c.servers.insert("p".into(), def);
        })
        .await)
    }
    // The cap: every handshake of the job in the server's log is TLS 1.2.
    let before = log_len(log);
    let r = run(
        &w,
        t,
        &rel,
        "capped",
        json!({"tls": "explicit", "tls_max_version": "1.2", "ca_file": cert.with_file_name("ca.pem")}),
    ).await?;
    all_done(&r)?;
    same_bytes(&disk.join("capped.bin"), b"capped")?;
    let versions: Vec<String> = log_since(log, before)
        .lines()
        .filter_map(|l| l.split("SSL version: ").nth(1))
        .map(|v| v.split([',', ' ']).next().unwrap_or("").to_string())
        .collect();
    ensure(
        !versions.is_empty() && versions.iter().all(|v| v == "TLSv1.2"),
        || format!("with tls_max_version 1.2 the server logged {versions:?}"),
    )?;
    notes.push(format!(
        "capped: {} handshakes, all TLSv1.2",
        versions.len()
    ));
    // Pins instead of a CA (the test CA is not in the system's roots).
    let (whole, key) = pins_of(cert);
    let colons: String = whole
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    for (job, pin) in [("pinned-cert", colons), ("pinned-key", key.clone())] {
        let r = run(
            &w,
            t,
            &rel,
            job,
            json!({"tls": "explicit", "tls_pin_sha256": [pin]}),
        )
        .await?;
        all_done(&r)?;
        same_bytes(&disk.join(format!("{job}.bin")), job.as_bytes())?;
    }
    notes.push("pinned by certificate and by key, no ca_file".into());
    let wrong = "00".repeat(32);
    let r = run(
        &w,
        t,
        &rel,
        "pinned-wrong",
        json!({"tls": "explicit", "tls_pin_sha256": [wrong]}),
    )
    .await?;
    let e = &r.entries[0];
    let error = e.error.clone().unwrap_or_default();
    ensure(
        e.state == EntryState::Failed
            && e.attempts == 1
            && error.contains(&whole)
            && error.contains(&key),
        || {
            format!(
                "a wrong pin: {:?} after {} attempts: {error}",
                e.state, e.attempts
            )
        },
    )?;
    ensure(!disk.join("pinned-wrong.bin").exists(), || {
        "a file went to a server whose pin did not match".into()
    })?;
    notes.push("a wrong pin failed at once, naming the server's fingerprints".into());
    Ok(notes.join("; "))
}

/// Mutual TLS against vsftpd with `require_cert` and `validate_cert`: with
/// `client_cert_file` and `client_key_file` the upload lands; without them
/// the server refuses the handshake and nothing is sent.
pub(super) async fn client_certificate(t: &Target, ca: &Path, cert: &Path, key: &Path) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("mtls");
    let mut notes = Vec::new();
    for (job, with_cert) in [("with-cert", true), ("without-cert", false)] {
        let mut extra = json!({"tls": "explicit", "ca_file": ca});
        if with_cert {
            extra["client_cert_file"] = json!(cert);
            extra["client_key_file"] = json!(key);
        }
        let def = named(t, extra)?;
        let local = w.local(&format!("{job}.bin"), job.as_bytes());
        let entry = json!({"server": "p", "file": {"local_path": local, "server_path": rel}});
        let r = w
            .run(job, vec![entry], move |c| {
                c.retry.max_attempts = 2;
                c.servers.insert("p".into(), def);
            })
            .await;
        let e = &r.entries[0];
        if with_cert {
            all_done(&r)?;
            same_bytes(&disk.join("with-cert.bin"), b"with-cert")?;
            notes.push("with the client certificate: uploaded".to_string());
        } else {
            ensure(e.state == EntryState::Failed, || {
                format!("without a client certificate: {:?}", e.state)
            })?;
            ensure(!disk.join("without-cert.bin").exists(), || {
                "a file arrived without the client certificate".into()
            })?;
            notes.push(format!(
                "without: refused ({})",
                e.error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(80)
                    .collect::<String>()
            ));
        }
    }
    Ok(notes.join("; "))
}

/// A proxy process the test starts and stops (killed on drop).
struct ProxyProcess {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `microsocks` (SOCKS5, user and password required) or `tinyproxy`
/// (HTTP CONNECT, Basic auth), each connecting out from its own address
/// (127.0.0.2, 127.0.0.3): the server's log then tells a connection that
/// came through it from one that went around it.
async fn start_proxy(kind: &str, user: &str, pass: &str) -> Result<ProxyProcess, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let mut cmd = match kind {
        "socks5" => {
            let mut c = std::process::Command::new("microsocks");
            c.args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-b",
                "127.0.0.2",
            ]);
            c.args(["-u", user, "-P", pass]);
            c
        }
        _ => {
            let conf = dir.path().join("tinyproxy.conf");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nBind 127.0.0.3\nTimeout 120\n\
                     MaxClients 200\nAllow 127.0.0.1\nBasicAuth {user} {pass}\nLogLevel Warning\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut c = std::process::Command::new("tinyproxy");
            c.arg("-d").arg("-c").arg(&conf);
            c
        }
    };
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start the {kind} proxy (servers.sh install puts it there): {e}")
        })?;
    let p = ProxyProcess {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("the {kind} proxy did not listen on {port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(p)
}

/// Uploads through a SOCKS5 proxy (microsocks) and an HTTP CONNECT proxy
/// (tinyproxy), both with a user and a password kept in a variable, to
/// vsftpd, which refuses a data connection from another address than its
/// control connection's: every upload of the job is logged as coming from
/// the proxy's address, so nothing went around it. A wrong proxy password
/// fails with the proxy named.
pub(super) async fn proxies(t: &Target, log: &Path) -> Outcome {
    let mut notes = Vec::new();
    for (kind, via) in [("socks5", "127.0.0.2"), ("http", "127.0.0.3")] {
        let w = Work::new();
        let (rel, disk) = t.dir(&format!("proxy-{kind}"));
        let proxy = start_proxy(kind, "fwuser", "fw-secret-1").await?;
        let var = format!("FTPDROP_TEST_PROXY_PASSWORD_{}", kind.to_uppercase());
        std::env::set_var(&var, "fw-secret-1");
        let url = format!("{kind}://fwuser@127.0.0.1:{}", proxy.port);
        let bodies: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| {
                (
                    format!("f{i}.bin"),
                    support::random_bytes(if i == 0 { 2 << 20 } else { 5000 + i }, 60 + i as u64),
                )
            })
            .collect();
        let entries: Vec<Value> = bodies
            .iter()
            .map(|(n, b)| {
                json!({"server": "p", "file": {"local_path": w.local(n, b), "server_path": rel}})
            })
            .collect();
        let def = named(t, json!({"proxy": url, "proxy_password_env": var}))?;
        let before = log_len(log);
        let r = w
            .run(&format!("via-{kind}"), entries, move |c| {
                c.servers.insert("p".into(), def);
            })
            .await;
        all_done(&r)?;
        for (n, b) in &bodies {
            same_bytes(&disk.join(n), b)?;
        }
        let uploads: Vec<String> = log_since(log, before)
            .lines()
            .filter(|l| l.contains("OK UPLOAD") && l.contains(&rel))
            .map(str::to_string)
            .collect();
        ensure(
            uploads.len() >= bodies.len()
                && uploads
                    .iter()
                    .all(|l| l.contains(&format!("Client \"{via}\""))),
            || format!("uploads the server logged for {kind}: {uploads:#?}"),
        )?;
        notes.push(format!("{kind}: {} uploads, all from {via}", uploads.len()));
        // A wrong password: refused by the proxy, which the error names.
        std::env::set_var(&var, "wrong");
        let local = w.local("denied.bin", b"denied");
        let def = named(t, json!({"proxy": url, "proxy_password_env": var}))?;
        let r = w
            .run(
                &format!("denied-{kind}"),
                vec![json!({"server": "p", "file": {"local_path": local, "server_path": rel}})],
                move |c| {
                    c.retry.max_attempts = 1;
                    c.servers.insert("p".into(), def);
                },
            )
            .await;
        let e = &r.entries[0];
        let error = e.error.clone().unwrap_or_default();
        ensure(
            e.state == EntryState::Failed && error.contains("proxy") && !error.contains("wrong"),
            || format!("a wrong proxy password: {:?}: {error}", e.state),
        )?;
        ensure(!disk.join("denied.bin").exists(), || {
            "a file arrived through a proxy that refused the password".into()
        })?;
    }
    notes.push("a wrong proxy password fails, naming the proxy".into());
    Ok(notes.join("; "))
}

/// Active mode against vsftpd with `pasv_enable=NO` (a server behind a
/// firewall that lets no passive port in): `data_mode: active` on a
/// one-port `active_ports` range delivers; `passive` fails saying so;
/// `auto` (the default) turns active by itself, and the next job starts
/// active (learned) without asking for passive mode again.
pub(super) async fn active_mode(t: &Target, log: &Path) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("active");
    let mut notes = Vec::new();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("a{i}.bin"),
                support::random_bytes(if i == 0 { 3 << 20 } else { 4000 }, 80 + i),
            )
        })
        .collect();
    let entries = |w: &Work, sub: &str| -> Vec<Value> {
        files
            .iter()
            .map(|(n, b)| {
                json!({"server": "p", "file": {"local_path": w.local(&format!("{sub}/{n}"), b), "server_path": format!("{rel}/{sub}")}})
            })
            .collect()
    };
    // Active, on one port: one session at a time.
    let port = free_port();
    let def = named(
        t,
        json!({"data_mode": "active", "active_ports": format!("{port}-{port}")}),
    )?;
    let r = w
        .run_in("a", "active", entries(&w, "active"), move |c| {
            c.max_connections_per_server = 1;
            c.servers.insert("p".into(), def);
        })
        .await;
    all_done(&r)?;
    for (n, b) in &files {
        same_bytes(&disk.join("active").join(n), b)?;
    }
    notes.push(format!("active on port {port}: 3 files"));
    // Passive only: refused, and said so.
    let def = named(t, json!({"data_mode": "passive"}))?;
    let r = w
        .run_in("p", "passive", entries(&w, "passive"), move |c| {
            c.retry.max_attempts = 1;
            c.servers.insert("p".into(), def);
        })
        .await;
    ensure(r.state == JobState::Failed, || {
        format!("passive against an active-only server: {:?}", r.state)
    })?;
    notes.push("passive refused".into());
    // Auto: falls back, learns, and the next job asks for no passive port.
    let def = named(t, json!({}))?;
    let def2 = def.clone();
    let r = w
        .run_in("auto", "auto1", entries(&w, "auto1"), move |c| {
            c.servers.insert("p".into(), def);
        })
        .await;
    all_done(&r)?;
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-auto/ftpdrop-learned.json"))
        .unwrap_or_default();
    ensure(learned.contains("\"active\": true"), || {
        format!("not learned: {learned}")
    })?;
    let before = log_len(log);
    let r = w
        .run_in("auto", "auto2", entries(&w, "auto2"), move |c| {
            c.servers.insert("p".into(), def2);
        })
        .await;
    all_done(&r)?;
    for (n, b) in &files {
        same_bytes(&disk.join("auto2").join(n), b)?;
    }
    let pasv = log_since(log, before)
        .lines()
        .filter(|l| l.contains("\"PASV\""))
        .count();
    ensure(pasv == 0, || {
        format!("the second job still asked for PASV {pasv} times")
    })?;
    notes.push("auto turned active, learned it, the next job went active at once".into());
    Ok(notes.join("; "))
}

/// A Windows server as IIS documents it (`q-iis-host`: 125 before a
/// transfer, 550 to a rename onto an existing name, a partial upload
/// deleted when its data connection breaks, and a virtual host that wants
/// `HOST` before USER). With `virtual_host` set everything lands: a
/// replaced file, and an upload cut half way that starts over (nothing to
/// resume) and still needs only its one retry. Without it, the login fails
/// and says why. Two names that differ only in case are flagged.
pub(super) async fn windows_server(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("iis");
    let mut notes: Vec<String> = Vec::new();
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let site = json!({"virtual_host": "files.example.com"});
    // No HOST: refused at login, and said so.
    let local = w.local("nohost.txt", b"x");
    let def = named(t, json!({}))?;
    let r = w
        .run(
            "nohost",
            vec![json!({"server": "p", "file": {"local_path": local, "server_path": rel}})],
            move |c| {
                c.retry.max_attempts = 1;
                c.servers.insert("p".into(), def);
            },
        )
        .await;
    let error = r.entries[0].error.clone().unwrap_or_default();
    ensure(r.state == JobState::Failed && error.contains("530"), || {
        format!("without virtual_host: {:?}: {error}", r.state)
    })?;
    notes.push("no HOST: 530 at login".into());
    // HOST first; two files, two names that differ only in case.
    let a = support::random_bytes(40_000, 91);
    let b = support::random_bytes(50_000, 92);
    let entries = vec![
        json!({"server": "p", "file": {"local_path": w.local("one/Report.TXT", &a), "server_path": rel}}),
        json!({"server": "p", "file": {"local_path": w.local("two/report.txt", &b), "server_path": rel}}),
    ];
    let def = named(t, site.clone())?;
    let r = w
        .run("iis1", entries, move |c| {
            c.servers.insert("p".into(), def);
        })
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("Report.TXT"), &a)?;
    same_bytes(&disk.join("report.txt"), &b)?;
    ensure(
        r.entries
            .iter()
            .all(|e| e.warnings.iter().any(|w| w.contains("differ only in case"))),
        || {
            format!(
                "no case warning: {:?}",
                r.entries.iter().map(|e| &e.warnings).collect::<Vec<_>>()
            )
        },
    )?;
    notes.push("HOST then USER; 125 taken; a case collision flagged in both entries".into());
    // Over an existing name: 550 to the rename, so the old one goes first.
    let a2 = support::random_bytes(30_000, 93);
    let def = named(t, site.clone())?;
    let r = w
        .run(
            "iis2",
            vec![json!({"server": "p", "file": {"local_path": w.local("three/Report.TXT", &a2), "server_path": rel}})],
            move |c| {
                c.servers.insert("p".into(), def);
            },
        )
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("Report.TXT"), &a2)?;
    notes.push("replaced an existing file despite 550 to RNTO".into());
    // Cut half way: the server deletes the partial file; one retry, from zero.
    let big = support::random_bytes(8 << 20, 94);
    proxy.cut_data_after(3 << 20, 1);
    let def = named(&via, site)?;
    let r = w
        .run(
            "iis3",
            vec![json!({"server": "p", "file": {"local_path": w.local("big.bin", &big), "server_path": rel}})],
            move |c| {
                c.retry.initial_backoff_ms = 500;
                c.servers.insert("p".into(), def);
            },
        )
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("big.bin"), &big)?;
    let e = &r.entries[0];
    ensure(proxy.data_faults_fired() == 1 && e.attempts == 2, || {
        format!(
            "{} cut(s), {} attempts",
            proxy.data_faults_fired(),
            e.attempts
        )
    })?;
    let resumed: Vec<String> = log_lines(&e.remote_path, "entry uploaded")
        .iter()
        .filter_map(|l| l.split("resumed_from=").nth(1))
        .filter_map(|v| v.split_whitespace().next().map(str::to_string))
        .collect();
    ensure(resumed.last().map(String::as_str) == Some("0"), || {
        format!("resumed_from {resumed:?}: the server kept the partial file")
    })?;
    no_temp_files(&disk)?;
    notes.push(
        "cut at 3 MiB, partial deleted by the server, sent again from zero in the one retry".into(),
    );
    Ok(notes.join("; "))
}

/// FileZilla Server 0.9's strictness (the TLS quirk instance ends the
/// session when anything follows AUTH TLS, PBSZ, PROT, USER or PASS before
/// its reply) and its `521 PROT P required` (`q-protp`): a raw client that
/// pipelines behind AUTH TLS is thrown out, ftpdrop's uploads land.
pub(super) async fn strict_tls_login(t: &Target) -> Outcome {
    use std::io::{Read, Write};
    // The variant really is strict: AUTH TLS and PBSZ in one write.
    let mut raw =
        std::net::TcpStream::connect((t.host.as_str(), t.port)).map_err(|e| e.to_string())?;
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 512];
    let _ = raw.read(&mut greeting).map_err(|e| e.to_string())?;
    raw.write_all(b"AUTH TLS\r\nPBSZ 0\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    ensure(answer.starts_with("421"), || {
        format!("the strict variant answered a pipelined AUTH TLS with {answer:?}")
    })?;
    // ftpdrop: TLS, PROT P, a few files, no retry.
    let w = Work::new();
    let (rel, disk) = t.dir("strict");
    let bodies: Vec<Vec<u8>> = (0..5)
        .map(|i| support::random_bytes(20_000 + i, 300 + i as u64))
        .collect();
    let entries: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| t.entry(&w.local(&format!("s{i}.bin"), b), &rel))
        .collect();
    let r = w.run("strict", entries, |_| {}).await;
    all_done(&r)?;
    for (i, b) in bodies.iter().enumerate() {
        same_bytes(&disk.join(format!("s{i}.bin")), b)?;
    }
    let retried = r.entries.iter().filter(|e| e.attempts > 1).count();
    ensure(retried == 0, || format!("{retried} entries needed a retry"))?;
    Ok(format!(
        "a pipelined AUTH TLS is thrown out ({}); ftpdrop: 5 files over TLS with PROT P, no retry",
        answer.trim()
    ))
}

/// Multi-line replies as Windows servers write them (`q-oddreplies`: 226,
/// 250 and 257 over several lines, indented differently, one empty, one
/// starting with the code after a space): twenty uploads, pipelined where
/// the probe allows, all in step (no desync, no retry).
pub(super) async fn odd_replies(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("odd");
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|i| support::random_bytes(3000 + i, 400 + i as u64))
        .collect();
    let entries: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| t.entry(&w.local(&format!("o{i}.bin"), b), &format!("{rel}/deep/er")))
        .collect();
    let r = w.run("odd", entries, |_| {}).await;
    all_done(&r)?;
    for (i, b) in bodies.iter().enumerate() {
        same_bytes(&disk.join("deep/er").join(format!("o{i}.bin")), b)?;
    }
    let retried = r.entries.iter().filter(|e| e.attempts > 1).count();
    ensure(retried == 0, || {
        format!("{retried} entries needed a retry: {}", brief(&r))
    })?;
    Ok("20 files through odd multi-line replies, no retry".into())
}

/// A server whose TLS breaks at a TLS 1.3 ClientHello (the proxy resets the
/// connection there, as old TLS stacks did; a TLS 1.2-only hello goes
/// through) in front of vsftpd with TLS: the first contact fails over to
/// TLS 1.2 by itself, learns the cap, and later sessions offer TLS 1.2 at
/// once (no more refused hellos).
pub(super) async fn tls13_breaks(t: &Target, ca: &Path) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("tls13-breaks");
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    proxy.refuse_tls13_hellos(true);
    let mut via = t.clone().tls("explicit", Some(&ca.to_string_lossy()));
    via.port = proxy.addr.port();
    let entries = |sub: &str| -> Vec<Value> {
        (0..4)
            .map(|i| {
                via.entry(
                    &w.local(&format!("{sub}/t{i}.bin"), format!("{sub} {i}").as_bytes()),
                    &format!("{rel}/{sub}"),
                )
            })
            .collect()
    };
    let r = w.run_in("capped", "first", entries("first"), |_| {}).await;
    all_done(&r)?;
    let refused_first = proxy.tls13_hellos_refused();
    ensure(refused_first >= 1, || {
        "no TLS 1.3 hello was refused: the test proves nothing".into()
    })?;
    let learned = std::fs::read_to_string(w.dir.path().join("daemon-capped/ftpdrop-learned.json"))
        .unwrap_or_default();
    ensure(learned.contains("\"tls12\": true"), || {
        format!("the cap was not learned: {learned}")
    })?;
    let r = w
        .run_in("capped", "second", entries("second"), |_| {})
        .await;
    all_done(&r)?;
    for i in 0..4 {
        same_bytes(
            &disk.join(format!("second/t{i}.bin")),
            format!("second {i}").as_bytes(),
        )?;
    }
    ensure(proxy.tls13_hellos_refused() == refused_first, || {
        format!(
            "{} more TLS 1.3 hellos after the cap was learned",
            proxy.tls13_hellos_refused() - refused_first
        )
    })?;
    Ok(format!("{refused_first} TLS 1.3 hello(s) refused on first contact, TLS 1.2 learned; the next job offered TLS 1.2 at once"))
}
