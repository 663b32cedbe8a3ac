//! Opening a file that someone else named (a job, an inbox writer) without
//! being led into blocking or into what is not a file.
//!
//! Only regular files are ever opened: a FIFO would wait for a writer
//! forever, a device could stream without end or have effects of its own.
//! Every open is `O_NONBLOCK` (a FIFO swapped in after a look at the name
//! opens at once) and the open handle is checked again. This module sits
//! below the job, intake and FTP layers, which all use it.

use std::fs::File;
use std::path::Path;

/// A message that travels as an `io::Error` payload, so that callers can
/// tell its kind from an ordinary read error.
macro_rules! payload {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name(pub String);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}
pub(crate) use payload;

payload!(
    /// A path that is not a regular file (a FIFO, a device, a socket, a
    /// directory, a symlink not to be followed): permanent, whatever the
    /// kind says.
    NotAFile
);

/// Whether `e` says the path was not a regular file.
pub(crate) fn is_not_a_file(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<NotAFile>())
}

fn not_a_file(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        NotAFile(format!("is {what}, not a regular file: {}", path.display())),
    )
}

/// `Ok` if `meta` (of `path`) is a regular file; else an error naming what it is.
pub(crate) fn regular(meta: &std::fs::Metadata, path: &Path) -> std::io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(not_a_file(path, kind_of(meta)))
}

#[cfg(unix)]
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Opens `path` for reading if it is a regular file, without waiting for a
/// writer (a FIFO) or a carrier (a terminal); with `follow` false, never
/// through a symlink at its last component.
pub(crate) fn open_regular(path: &Path, follow: bool) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut o,
            libc::O_NONBLOCK | libc::O_NOCTTY | nofollow,
        );
    }
    let _ = follow;
    let file = match o.open(path) {
        #[cfg(unix)]
        Err(e) if !follow && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_a_file(path, "a symbolic link"))
        }
        r => r?,
    };
    regular(&file.metadata()?, path)?;
    Ok(file)
}

/// Reads a small regular file (a CA bundle): looked at before it is opened,
/// never an open that blocks, at most `cap` bytes.
pub(crate) fn read_small(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    regular(&std::fs::metadata(path)?, path)?;
    let file = open_regular(path, true)?;
    let len = file.metadata()?.len();
    if len > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is {len} bytes, over the limit of {cap}", path.display()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} grew over the limit of {cap} bytes", path.display()),
        ));
    }
    Ok(bytes)
}
