//! One entry's bytes onto a server: the publish protocol and what feeds it.
//!
//! - [`transfer`]: one attempt at one entry: temp name, resume, verify, rename.
//! - [`source`]: the local file: its bytes onto a data connection (sendfile where it can), its SHA-256 beside.
//! - [`segment`]: a big file over several connections at once, on servers a probe found able.
//! - [`verify`]: proof beyond the size: a server digest of the temp file, or its read-back.
//! - [`dispose`]: the local file after the verified publish: kept, deleted or moved.

pub mod dispose;
pub(crate) mod segment;
pub mod source;
pub mod transfer;
pub(crate) mod verify;
