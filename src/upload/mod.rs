//! One entry's bytes onto a server: the publish protocol and what feeds it.
//!
//! - [`transfer`]: one attempt at one entry: temp name, resume, verify, rename.
//! - [`source`]: the local file: its bytes onto a data connection (sendfile where it can), its SHA-256 beside.
//! - [`segment`]: a big file over several connections at once, on servers a probe found able.
//! - [`verify`]: server-side digests (HASH, XSHA256, XMD5, ...) and read-back of the temp file.
//! - [`dispose`]: the local file after the verified publish: kept, deleted or moved.
//! - [`rate`]: bandwidth limits (global, per server, on a timetable).

pub mod dispose;
pub mod rate;
pub mod segment;
pub mod source;
pub mod transfer;
pub mod verify;
