//! Talking FTP: sessions, the pool that lends them, TLS, and what replies mean.
//!
//! Every reply code lives in this folder; the scheduler above it sees only
//! operations and [`fault::Fault`]s.
//!
//! - [`session`]: one FTP/FTPS session; every protocol detail lives here
//!   (its items are re-exported here: `ftp::Session`).
//! - [`pool`]: logged-in sessions reused per server and credentials; global and per-server limits.
//! - [`control`]: the control connection: commands out, replies matched to them, several per round trip where a probe says the server keeps order.
//! - [`learned`]: per-server facts (probe verdict, connection limit) kept across restarts.
//! - [`tls`]: rustls client configs (system roots, `ca_file`, explicit opt-out).
//! - [`reply`]: the server replies ftpdrop parses itself (FEAT, SIZE), as pure functions.
//! - [`digest`]: server-side digests (HASH, XSHA256, XMD5, XCRC): which, how to ask, the answer.
//! - [`fault`]: the typed error that says transient, back-pressure or permanent.

pub(crate) mod control;
pub mod data;
pub mod digest;
pub mod fault;
pub(crate) mod learned;
pub(crate) mod pool;
pub mod reply;
pub mod seats;
pub mod session;
pub mod tls;

pub use session::*;
