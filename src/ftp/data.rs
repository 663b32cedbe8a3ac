//! An upload's data connection, opened by ftpdrop itself rather than by
//! suppaftp, because two servers' rules need an order suppaftp cannot give:
//!
//! - RFC 959 (4.1.3) wants `REST` *immediately* before `STOR`/`APPE`; a
//!   BSD-derived ftpd forgets the restart point when `EPSV` comes between,
//!   and its `STOR` then truncates the file. So the passive connection is
//!   opened first, and `REST` + `STOR` follow it back to back.
//! - Some servers send `150` only once the data connection's TLS handshake
//!   is done, while suppaftp starts the handshake only after the `150`: each
//!   side then waits for the other. Here the handshake starts as soon as the
//!   TCP connection is up and runs alongside the commands (see
//!   `Session::open_upload`).
//!
//! [`Upload`] is the open connection; `Session::finish` closes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

type TlsData = suppaftp::tokio_rustls::client::TlsStream<TcpStream>;

/// An open upload: write the bytes to it, then hand it to `Session::finish`.
#[derive(Debug)]
pub enum Upload {
    Plain(TcpStream),
    Tls(Box<TlsData>),
}

impl Upload {
    /// The socket, for zero-copy sends; `None` under TLS, where bytes must be encrypted first.
    #[cfg(target_os = "linux")]
    pub(crate) fn plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            Upload::Plain(tcp) => Some(tcp),
            Upload::Tls(_) => None,
        }
    }

    /// Ends the upload from our side: TLS `close_notify`, then FIN.
    pub(crate) async fn close_write(&mut self) -> io::Result<()> {
        self.shutdown().await
    }

    /// Reads what the server still sends before it closes the connection,
    /// for at most `limit`. On TLS 1.3 that is where session tickets for
    /// the next data connections arrive, and rustls only takes them in
    /// while reading; an upload otherwise never reads. The server closes
    /// the connection once it has our FIN, so this normally ends at once.
    pub(crate) async fn drain(&mut self, limit: Duration) {
        let Upload::Tls(tls) = self else {
            return;
        };
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

impl AsyncWrite for Upload {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upload::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Upload::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upload::Plain(s) => Pin::new(s).poll_flush(cx),
            Upload::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upload::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Upload::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Upload {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upload::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Upload::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}
