//! Self-tests for the integration-test harness in `tests/support/` (libunftp server + fault proxy),
//! driven directly with suppaftp. Also pins down the libunftp behaviours listed at the top of
//! `tests/support/ftpserver.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use support::ftpserver::FtpServer;
use support::proxy::FaultProxy;
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn connect(addr: SocketAddr) -> Result<AsyncFtpStream, FtpError> {
    tokio::time::timeout(TIMEOUT, AsyncFtpStream::connect(addr))
        .await
        .expect("connect timed out")
}

async fn login(addr: SocketAddr, server: &FtpServer) -> Result<AsyncFtpStream, FtpError> {
    let mut ftp = connect(addr).await?;
    ftp.login(server.user.as_str(), server.password.as_str())
        .await?;
    ftp.transfer_type(FileType::Binary).await?;
    Ok(ftp)
}

/// STOR `data` as `name`; always calls `finish` so the control connection stays in sync.
async fn upload(ftp: &mut AsyncFtpStream, name: &str, data: &[u8]) -> Result<(), FtpError> {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = ftp.put_with_stream(name).await?;
        let written = s.write_all(data).await;
        let finished = s.finish().await;
        written.map_err(FtpError::ConnectionError)?;
        finished
    })
    .await
    .expect("upload timed out")
}

async fn append(ftp: &mut AsyncFtpStream, name: &str, data: &[u8]) -> Result<(), FtpError> {
    let mut s = ftp.append_with_stream(name).await?;
    let written = s.write_all(data).await;
    let finished = s.finish().await;
    written.map_err(FtpError::ConnectionError)?;
    finished
}

/// Reply code carried by an error, if it is a server reply.
fn code(err: &FtpError) -> Option<u32> {
    match err {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

/// Send a raw command and return the reply code (whatever it is).
async fn raw(ftp: &mut AsyncFtpStream, cmd: &str) -> u32 {
    match ftp.custom_command(cmd, &[]).await {
        Ok(r) => r.status.code(),
        Err(e) => code(&e).unwrap_or_else(|| panic!("{cmd}: no reply: {e}")),
    }
}

#[tokio::test]
async fn login_and_upload_lands_on_disk() {
    let server = FtpServer::start().await;
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    let mut ftp = login(server.addr, &server).await.unwrap();
    let data = support::random_bytes(300_000, 1);
    upload(&mut ftp, "hello.bin", &data).await.unwrap();
    assert_eq!(std::fs::read(server.path("hello.bin")).unwrap(), data);
    assert_eq!(ftp.size("hello.bin").await.unwrap(), data.len());
    assert_eq!(server.count_logins(), 1);
    assert_eq!(server.count_connections(), 1);
    assert_eq!(server.files(), vec!["hello.bin".to_string()]);

    // Session reuse: a second upload on the same session does not log in again.
    upload(&mut ftp, "second.bin", b"two").await.unwrap();
    assert_eq!(server.count_logins(), 1);
    ftp.quit().await.unwrap();
}

#[tokio::test]
async fn wrong_password_gets_530() {
    let server = FtpServer::start().await;
    let mut ftp = connect(server.addr).await.unwrap();
    let err = ftp.login(server.user.as_str(), "wrong").await.unwrap_err();
    assert_eq!(code(&err), Some(530), "{err}");
    let mut ftp = connect(server.addr).await.unwrap();
    let err = ftp
        .login("mallory", server.password.as_str())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(530), "{err}");
    assert_eq!(server.count_logins(), 0);
}

#[tokio::test]
async fn libunftp_command_support() {
    let server = FtpServer::start().await;
    let mut ftp = login(server.addr, &server).await.unwrap();
    let a = support::random_bytes(1000, 2);
    upload(&mut ftp, "a.bin", &a).await.unwrap();

    // REST + STOR: keeps the first 400 bytes, truncates the rest, writes at 400.
    ftp.resume_transfer(400).await.unwrap();
    upload(&mut ftp, "a.bin", b"0123456789").await.unwrap();
    let got = std::fs::read(server.path("a.bin")).unwrap();
    assert_eq!(got.len(), 410);
    assert_eq!(&got[..400], &a[..400]);
    assert_eq!(&got[400..], b"0123456789");
    // The offset was reset by the successful transfer: a plain STOR overwrites from 0.
    upload(&mut ftp, "c.bin", b"plain").await.unwrap();
    assert_eq!(std::fs::read(server.path("c.bin")).unwrap(), b"plain");

    // REST past the end pads with zeros.
    upload(&mut ftp, "short.bin", b"abc").await.unwrap();
    ftp.resume_transfer(8).await.unwrap();
    upload(&mut ftp, "short.bin", b"Z").await.unwrap();
    assert_eq!(
        std::fs::read(server.path("short.bin")).unwrap(),
        b"abc\0\0\0\0\0Z"
    );

    // APPE appends, and creates a missing file.
    append(&mut ftp, "a.bin", b"+tail").await.unwrap();
    assert_eq!(std::fs::read(server.path("a.bin")).unwrap().len(), 415);
    append(&mut ftp, "new.bin", b"fresh").await.unwrap();
    assert_eq!(std::fs::read(server.path("new.bin")).unwrap(), b"fresh");

    // RNFR/RNTO over an existing file replaces it.
    upload(&mut ftp, "b.bin", b"old").await.unwrap();
    assert_eq!(raw(&mut ftp, "RNFR a.bin").await, 350);
    assert_eq!(raw(&mut ftp, "RNTO b.bin").await, 250);
    assert!(!server.path("a.bin").exists());
    assert_eq!(std::fs::read(server.path("b.bin")).unwrap().len(), 415);
    assert_eq!(raw(&mut ftp, "RNFR missing.bin").await, 550);

    // SIZE, also in ASCII mode; missing file is 550.
    assert_eq!(raw(&mut ftp, "SIZE b.bin").await, 213);
    assert_eq!(ftp.size("b.bin").await.unwrap(), 415);
    ftp.transfer_type(FileType::Ascii(suppaftp::types::FormatControl::Default))
        .await
        .unwrap();
    assert_eq!(ftp.size("b.bin").await.unwrap(), 415);
    ftp.transfer_type(FileType::Binary).await.unwrap();
    assert_eq!(raw(&mut ftp, "SIZE missing.bin").await, 550);

    // MKD: 257, then 550 when it exists.
    assert_eq!(raw(&mut ftp, "MKD d").await, 257);
    assert!(server.path("d").is_dir());
    assert_eq!(raw(&mut ftp, "MKD d").await, 550);
    upload(&mut ftp, "d/in-dir.bin", b"x").await.unwrap();
    assert_eq!(std::fs::read(server.path("d/in-dir.bin")).unwrap(), b"x");

    // DELE: 250, missing is 550.
    assert_eq!(raw(&mut ftp, "DELE b.bin").await, 250);
    assert!(!server.path("b.bin").exists());
    assert_eq!(raw(&mut ftp, "DELE b.bin").await, 550);

    // SITE MD5 is available to logged-in users.
    let feat = ftp.feat().await.unwrap();
    assert!(feat.contains_key("REST"), "{feat:?}");
    assert!(feat.contains_key("SITE"), "{feat:?}");
    let reply = ftp
        .custom_command("SITE MD5 new.bin", &[Status::File])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply.body).to_string();
    let digest = text.split_whitespace().nth(1).unwrap_or_default();
    assert!(
        digest.len() == 32 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
}

#[tokio::test]
async fn rest_offset_survives_a_failed_transfer() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    upload(&mut ftp, "f.bin", &support::random_bytes(1000, 3))
        .await
        .unwrap();
    proxy.cut_data_after(10, 1);
    ftp.resume_transfer(500).await.unwrap();
    assert!(
        upload(&mut ftp, "f.bin", &support::random_bytes(100_000, 4))
            .await
            .is_err()
    );
    // No REST this time, but libunftp still uses offset 500.
    upload(&mut ftp, "g.bin", b"0123456789").await.unwrap();
    assert_eq!(std::fs::metadata(server.path("g.bin")).unwrap().len(), 510);
    // REST 0 clears it.
    ftp.resume_transfer(0).await.unwrap();
    upload(&mut ftp, "h.bin", b"0123456789").await.unwrap();
    assert_eq!(std::fs::read(server.path("h.bin")).unwrap(), b"0123456789");
}

#[tokio::test]
async fn upload_through_proxy_pasv_epsv_and_nat_workaround() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let data = support::random_bytes(2 * 1024 * 1024 + 3, 5);

    let mut ftp = login(proxy.addr, &server).await.unwrap();
    upload(&mut ftp, "pasv.bin", &data).await.unwrap();
    ftp.set_mode(Mode::ExtendedPassive);
    upload(&mut ftp, "epsv.bin", &data).await.unwrap();
    ftp.set_mode(Mode::Passive);
    ftp.set_passive_nat_workaround(true);
    upload(&mut ftp, "nat.bin", &data).await.unwrap();

    // Multi-line FEAT and a download-direction data connection (LIST) pass through too.
    let feat = ftp.feat().await.unwrap();
    assert!(
        feat.contains_key("EPSV") && feat.contains_key("SIZE"),
        "{feat:?}"
    );
    let list = ftp.list(None).await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    ftp.quit().await.unwrap();

    for name in ["pasv.bin", "epsv.bin", "nat.bin"] {
        assert_eq!(std::fs::read(server.path(name)).unwrap(), data, "{name}");
    }
    assert_eq!(proxy.data_bytes_forwarded(), 3 * data.len() as u64);
    assert_eq!(proxy.control_connections(), 1);
    assert_eq!(proxy.data_connections(), 4);
    assert_eq!(proxy.data_faults_fired(), 0);
    let cmds = proxy.commands_seen();
    assert!(cmds.contains(&"USER alice".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"PASS ****".to_string()), "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| c.contains(&server.password)),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&"PASV".to_string()) && cmds.contains(&"EPSV".to_string()),
        "{cmds:?}"
    );
    assert_eq!(proxy.commands_with_verb("stor").len(), 3);
}

#[tokio::test]
async fn cut_data_fails_first_upload_then_succeeds() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let data = support::random_bytes(256 * 1024, 6);
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    ftp.set_mode(Mode::ExtendedPassive);

    proxy.cut_data_after(1000, 1);
    let err = upload(&mut ftp, "cut.bin", &data).await.unwrap_err();
    assert!(matches!(code(&err), None | Some(426)), "{err}");
    assert_eq!(proxy.data_faults_fired(), 1);
    assert_eq!(proxy.data_bytes_forwarded(), 1000);
    let partial = std::fs::metadata(server.path("cut.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(partial <= 1000, "{partial}");

    // Same session: the second attempt goes through.
    upload(&mut ftp, "cut.bin", &data).await.unwrap();
    assert_eq!(std::fs::read(server.path("cut.bin")).unwrap(), data);
    assert_eq!(proxy.data_faults_fired(), 1);
    assert_eq!(server.count_logins(), 1);
}

#[tokio::test]
async fn truncate_data_is_silent_for_the_client() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let data = support::random_bytes(100_000, 7);
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    proxy.truncate_data_after(1000, 1);
    upload(&mut ftp, "t.bin", &data).await.unwrap();
    assert_eq!(ftp.size("t.bin").await.unwrap(), 1000);
    assert_eq!(std::fs::read(server.path("t.bin")).unwrap(), &data[..1000]);
    assert_eq!(proxy.data_faults_fired(), 1);
}

#[tokio::test]
async fn refused_connections_fail_then_recover() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.refuse_connections(true);
    assert!(login(proxy.addr, &server).await.is_err());
    assert!(login(proxy.addr, &server).await.is_err());
    assert_eq!(server.count_logins(), 0);
    proxy.refuse_connections(false);
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    upload(&mut ftp, "ok.bin", b"ok").await.unwrap();
    assert_eq!(proxy.control_connections(), 3);
    assert_eq!(server.count_logins(), 1);
}

#[tokio::test]
async fn control_cuts() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;

    // USER + PASS pass, the third command (TYPE) kills the connection.
    proxy.cut_control_after_commands(2, 1);
    let mut ftp = connect(proxy.addr).await.unwrap();
    ftp.login(server.user.as_str(), server.password.as_str())
        .await
        .unwrap();
    assert!(ftp.transfer_type(FileType::Binary).await.is_err());
    assert_eq!(proxy.control_cuts_fired(), 1);

    // Next connection is fine; STOR is cut once.
    proxy.cut_control_on_command("stor", 1);
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    assert!(upload(&mut ftp, "x.bin", b"data").await.is_err());
    assert_eq!(proxy.control_cuts_fired(), 2);
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    upload(&mut ftp, "x.bin", b"data").await.unwrap();
    assert_eq!(std::fs::read(server.path("x.bin")).unwrap(), b"data");
    assert_eq!(proxy.commands_with_verb("STOR").len(), 2);
    assert_eq!(server.count_logins(), 3);

    // kill_all resets live sessions.
    proxy.kill_all();
    assert!(ftp.noop().await.is_err());
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    ftp.noop().await.unwrap();
}

#[tokio::test]
async fn stop_drops_sessions_and_restart_serves_again() {
    let mut server = FtpServer::start().await;
    let addr = server.addr;
    let mut idle = login(addr, &server).await.unwrap();
    let mut busy = login(addr, &server).await.unwrap();
    let mut transfer = busy.put_with_stream("big.bin").await.unwrap();
    transfer
        .write_all(&support::random_bytes(1 << 20, 8))
        .await
        .unwrap();

    server.stop();
    assert!(!server.is_running());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(idle.noop().await.is_err());
    let chunk = support::random_bytes(1 << 20, 9);
    let mut failed = false;
    for _ in 0..16 {
        if transfer.write_all(&chunk).await.is_err() {
            failed = true;
            break;
        }
    }
    let finished = transfer.finish().await;
    assert!(failed || finished.is_err());
    assert!(connect(addr).await.is_err(), "still accepting after stop");

    server.restart().await;
    assert_eq!(server.addr, addr);
    let mut ftp = login(addr, &server).await.unwrap();
    upload(&mut ftp, "after.bin", b"after").await.unwrap();
    assert_eq!(std::fs::read(server.path("after.bin")).unwrap(), b"after");
    assert_eq!(server.count_logins(), 3);
}

#[tokio::test]
async fn start_on_a_port_that_was_down() {
    let addr = support::free_local_addr();
    let root = tempfile::tempdir().unwrap();
    assert!(connect(addr).await.is_err());
    let server = FtpServer::start_on(addr, root.path().to_path_buf()).await;
    assert_eq!(server.addr, addr);
    let mut ftp = login(addr, &server).await.unwrap();
    upload(&mut ftp, "late.bin", b"late").await.unwrap();
    assert_eq!(
        std::fs::read(root.path().join("late.bin")).unwrap(),
        b"late"
    );
    drop(ftp);
    drop(server);
    assert!(
        root.path().join("late.bin").exists(),
        "caller-owned root must survive the server"
    );
}

#[test]
fn random_data_helpers_are_deterministic_and_streamed() {
    let a = support::random_bytes(5000, 42);
    assert_eq!(&support::random_bytes(1003, 42)[..], &a[..1003]);
    assert_ne!(support::random_bytes(64, 43), a[..64]);
    let dir = tempfile::tempdir().unwrap();
    let len = 3 * 1024 * 1024 + 5;
    let p = dir.path().join("sub/r.bin");
    support::write_random_file(&p, len as u64, 42);
    assert_eq!(std::fs::read(&p).unwrap(), support::random_bytes(len, 42));
    support::write_file(dir.path().join("w/x.bin"), support::random_bytes(len, 42));
    support::assert_same_file(&p, dir.path().join("w/x.bin"));
    assert_eq!(
        support::sha256_file(&p),
        support::sha256_bytes(support::random_bytes(len, 42))
    );
}

#[tokio::test]
async fn stalled_upload_blocks_until_killed() {
    let server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    proxy.stall_data_after(1000, 1);
    let data = support::random_bytes(16 << 20, 10);
    let mut s = ftp.put_with_stream("stall.bin").await.unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(500), s.write_all(&data)).await;
    assert!(
        blocked.is_err(),
        "write should block on a stalled connection"
    );
    assert_eq!(proxy.data_faults_fired(), 1);
    assert_eq!(proxy.data_bytes_forwarded(), 1000);
    proxy.kill_all();
    let finished = tokio::time::timeout(TIMEOUT, s.finish())
        .await
        .expect("finish hung");
    assert!(finished.is_err());
}

#[tokio::test]
async fn proxy_to_a_stopped_server_resets_clients() {
    let mut server = FtpServer::start().await;
    let proxy = FaultProxy::start(server.addr).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(login(proxy.addr, &server).await.is_err());
    server.restart().await;
    let mut ftp = login(proxy.addr, &server).await.unwrap();
    upload(&mut ftp, "back.bin", b"back").await.unwrap();
    assert_eq!(proxy.control_connections(), 2);
}
