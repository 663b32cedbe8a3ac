//! Reaching a server through a proxy: SOCKS5 (RFC 1928, with a user and
//! password per RFC 1929) or an HTTP proxy's CONNECT tunnel. The control
//! connection and every data connection go through it alike: a data
//! connection that went around the proxy was a real bug elsewhere (rclone
//! #8892), and a firewall that allows only the proxy drops it.
//!
//! Names are resolved here, as for a direct connection (`allowed_hosts`
//! checks the addresses), and the proxy is asked for the address.

use crate::config::{ProxyKind, ProxySpec};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TCP connection to `addr`: directly, or tunnelled through `proxy`.
/// The whole of it (the proxy's handshake included) within `timeout`.
pub(crate) async fn dial(
    proxy: Option<&ProxySpec>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let connect = async {
        let Some(p) = proxy else {
            return TcpStream::connect(addr).await;
        };
        let mut s = TcpStream::connect((p.host.as_str(), p.port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("proxy {p}: {e}")))?;
        let _ = s.set_nodelay(true);
        match p.kind {
            ProxyKind::Socks5 => socks5(&mut s, p, addr).await?,
            ProxyKind::HttpConnect => http_connect(&mut s, p, addr).await?,
        }
        Ok(s)
    };
    let s = tokio::time::timeout(timeout, connect).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            match proxy {
                Some(p) => format!("{addr} through proxy {p}: timed out"),
                None => format!("{addr}: timed out"),
            },
        )
    })??;
    // Small files are dominated by round trips; Nagle only adds delay.
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn refused(p: &ProxySpec, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("proxy {p}: {why}"),
    )
}

async fn socks5(s: &mut TcpStream, p: &ProxySpec, addr: SocketAddr) -> io::Result<()> {
    // Methods offered: none, and user/password when there is a user.
    let methods: &[u8] = if p.user.is_some() { &[0, 2] } else { &[0] };
    let mut hello = vec![5, methods.len() as u8];
    hello.extend_from_slice(methods);
    s.write_all(&hello).await?;
    let mut chosen = [0u8; 2];
    s.read_exact(&mut chosen).await?;
    match chosen {
        [5, 0] => {}
        [5, 2] => {
            let user = p.user.as_deref().unwrap_or("").as_bytes();
            let pass = p.password.expose().as_bytes();
            if user.len() > 255 || pass.len() > 255 {
                return Err(refused(p, "user or password longer than 255 bytes"));
            }
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(user);
            auth.push(pass.len() as u8);
            auth.extend_from_slice(pass);
            s.write_all(&auth).await?;
            let mut ok = [0u8; 2];
            s.read_exact(&mut ok).await?;
            if ok[1] != 0 {
                return Err(refused(p, "the user and password were refused"));
            }
        }
        [5, 0xff] => {
            return Err(refused(
                p,
                "no acceptable authentication (does it need a user?)",
            ))
        }
        other => {
            return Err(refused(
                p,
                format!("not a SOCKS5 proxy (answered {other:?})"),
            ))
        }
    }
    let mut req = vec![5, 1, 0];
    match addr {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&addr.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[1] != 0 {
        let why = match head[1] {
            2 => "the connection is not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused by the destination",
            6 => "TTL expired",
            _ => "general failure",
        };
        return Err(refused(p, format!("cannot reach {addr}: {why}")));
    }
    // The address the proxy bound, which nothing here needs.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n).await?;
            n[0] as usize + 2
        }
        _ => return Err(refused(p, "a malformed reply")),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(())
}

async fn http_connect(s: &mut TcpStream, p: &ProxySpec, addr: SocketAddr) -> io::Result<()> {
    let mut req = format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(user) = &p.user {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", p.password.expose()));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // The reply's head, read a byte at a time: what follows it is the
    // server's, and must stay in the socket.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(refused(p, "a reply head over 16 KiB"));
        }
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(refused(p, "closed the connection before answering CONNECT"));
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if !code.starts_with('2') {
        return Err(refused(p, format!("CONNECT {addr} answered {status:?}")));
    }
    Ok(())
}
