//! Active-mode data connections (`data_mode: active`), for servers that
//! allow only those: a listener on the control connection's local address,
//! on a port of `active_ports` where a firewall opens only a range, is
//! announced with `EPRT` (or `PORT`), and the server connects to it.
//!
//! Only the server may connect: a connection from any other address is
//! turned away (someone racing the server to the port would otherwise
//! be handed the file).

use crate::ftp::fault::Fault;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A listener on `ip`, on a free port of `range` (any free port without one).
pub(crate) fn listen(
    ip: IpAddr,
    range: Option<(u16, u16)>,
) -> Result<(TcpListener, SocketAddr), Fault> {
    let bind = |port: u16| -> io::Result<TcpListener> {
        let std = std::net::TcpListener::bind(SocketAddr::new(ip, port))?;
        std.set_nonblocking(true)?;
        TcpListener::from_std(std)
    };
    let listener = match range {
        None => bind(0)
            .map_err(|e| Fault::transient(format!("active mode: cannot listen on {ip}: {e}")))?,
        Some((lo, hi)) => {
            // From a random place in the range: sessions side by side do
            // not all try the same ports first.
            let n = u32::from(hi - lo) + 1;
            let start = rand::random::<u32>() % n;
            (0..n)
                .find_map(|i| bind(lo + ((start + i) % n) as u16).ok())
                .ok_or_else(|| {
                    Fault::transient(format!(
                        "active mode: no free port in active_ports {lo}-{hi} on {ip}"
                    ))
                })?
        }
    };
    let local = listener
        .local_addr()
        .map_err(|e| Fault::transient(format!("active mode: {e}")))?;
    Ok((listener, local))
}

/// `EPRT |1|127.0.0.1|50000|` (RFC 2428).
pub(crate) fn eprt(local: SocketAddr) -> String {
    let family = if local.is_ipv4() { 1 } else { 2 };
    format!("EPRT |{family}|{}|{}|", local.ip(), local.port())
}

/// `PORT 127,0,0,1,195,80` (RFC 959), IPv4 only.
pub(crate) fn port(local: SocketAddr) -> Result<String, Fault> {
    let SocketAddr::V4(a) = local else {
        return Err(Fault::permanent(
            "active mode over IPv6 needs EPRT, which the server refused",
        ));
    };
    let [a1, a2, a3, a4] = a.ip().octets();
    let (p1, p2) = (a.port() >> 8, a.port() & 0xff);
    Ok(format!("PORT {a1},{a2},{a3},{a4},{p1},{p2}"))
}

/// The server's connection to `listener`, within `timeout`; connections
/// from other addresses than `server` are closed and not counted.
pub(crate) async fn accept(
    listener: TcpListener,
    server: IpAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (stream, from) = tokio::time::timeout(left, listener.accept())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "active mode: the server did not connect within {} s (is a firewall in the way of port {}?)",
                        timeout.as_secs(),
                        listener.local_addr().map(|a| a.port()).unwrap_or(0)
                    ),
                )
            })??;
        if same_host(from.ip(), server) {
            // Small files are dominated by round trips; Nagle only adds delay.
            let _ = stream.set_nodelay(true);
            return Ok(stream);
        }
        tracing::warn!(%from, %server, "active mode: a data connection from another address than the server's; closed");
    }
}

/// IPv4-mapped IPv6 addresses are the same host as their IPv4 form.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_ranges() {
        let a: SocketAddr = "10.1.2.3:50001".parse().unwrap();
        assert_eq!(eprt(a), "EPRT |1|10.1.2.3|50001|");
        assert_eq!(port(a).unwrap(), "PORT 10,1,2,3,195,81");
        let v6: SocketAddr = "[::1]:2000".parse().unwrap();
        assert_eq!(eprt(v6), "EPRT |2|::1|2000|");
        assert!(port(v6).is_err());
        assert!(same_host(
            "::ffff:127.0.0.1".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }

    #[tokio::test]
    async fn listens_in_the_range_and_turns_strangers_away() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = free.local_addr().unwrap().port();
        drop(free);
        let (l, local) = listen("127.0.0.1".parse().unwrap(), Some((p, p))).unwrap();
        assert_eq!(local.port(), p);
        // The range's one port is taken now.
        assert!(listen("127.0.0.1".parse().unwrap(), Some((p, p))).is_err());
        // A connection from 127.0.0.2 is not the server's (127.0.0.1).
        let stranger = tokio::net::TcpSocket::new_v4().unwrap();
        stranger.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let _s = stranger.connect(local).await.unwrap();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tokio::net::TcpStream::connect(local).await.unwrap()
        });
        let got = accept(l, "127.0.0.1".parse().unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.peer_addr().unwrap().ip().to_string(), "127.0.0.1");
        drop(server);
    }
}
