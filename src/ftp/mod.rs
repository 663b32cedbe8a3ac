//! Talking FTP: sessions, the pool that lends them, TLS, and what replies mean.
//!
//! Every reply code, command verb and suppaftp type lives in this folder;
//! the code above it sees only operations and [`fault::Fault`]s. From the
//! wire up:
//!
//! - [`control`]: the control connection: commands out, each reply matched
//!   to its command (a reply that does not fit is a desync), several per
//!   round trip where a probe says the server keeps order.
//! - [`data`]: an upload's data connection, plain or TLS.
//! - [`session`]: one logged-in session, in operations (make a directory,
//!   size of a file, open an upload, publish); its items are re-exported
//!   here (`ftp::Session`).
//! - [`active`]: active-mode data connections (EPRT/PORT, a port range, the server's address only).
//! - [`proxy`]: connections through a SOCKS5 or HTTP CONNECT proxy, control and data alike.
//! - [`codepage`]: file names in cp1251, koi8-r or cp866 for servers without UTF-8.
//! - [`keep`]: what of the local file is kept on the server: its time (MFMT) and mode (SITE CHMOD).
//! - [`digest`]: server-side digests (HASH, XSHA256, XMD5, XCRC): which, how to ask, the answer.
//! - [`pool`]: sessions reused per server and credentials; limits; what is
//!   learned about each server (one owner, memory and disk).
//! - [`seats`]: a server's session limit shared by instances.
//! - [`learned`]: per-server facts kept across restarts (`ftpdrop-learned.json`).
//! - [`tls`]: rustls client configs (system roots, `ca_file`, explicit opt-out).
//! - [`reply`]: the server replies ftpdrop parses itself (FEAT, SIZE), as pure functions.
//! - [`fault`]: the typed error: its kind (transient, back-pressure,
//!   permanent) and its cause (refused, TLS, broken, timeout, local).

pub(crate) mod active;
pub(crate) mod codepage;
pub(crate) mod control;
pub mod data;
pub mod digest;
pub mod fault;
pub(crate) mod keep;
pub(crate) mod learned;
pub(crate) mod pool;
pub(crate) mod proxy;
pub mod reply;
pub mod seats;
pub mod session;
pub mod tls;

pub use session::*;
