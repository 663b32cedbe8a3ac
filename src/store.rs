//! Files the daemon writes for itself (receipts, journals, learned facts,
//! webhook deliveries, instance adverts): written atomically, readable by
//! their owner only. Receipts name local paths and servers, which other
//! users of the machine have no business reading.

use std::io::Write;
use std::path::Path;

/// Makes a file readable by its owner only (the daemon's user).
pub(crate) fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        // Windows: files inherit the ACL of the service's state folder.
        let _ = path;
        Ok(())
    }
}

/// Creates (truncating) or, with `append`, opens for appending a file that
/// only its owner can read: receipts and journals name local paths and
/// servers, which other users of the machine have no business reading.
pub(crate) fn owner_only_file(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix. The file is readable by its owner only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] with the content produced by `fill` straight into the
/// temp file (through a buffer), so that a large receipt is never held whole
/// in memory as bytes.
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A temp name of this process's own: two instances writing one file at
    // once (the learned facts, a job's end beside another's sweep) each
    // rename a whole file instead of interleaving into a shared temp file.
    // Within a process each file has one writer at a time (a receipt under
    // its job's lock, the learned facts under their mutex, a claimed job's
    // redaction under its lock).
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id(),
    ));
    let written = (|| {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, owner_only_file(&tmp, false)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `name` is a temp file of [`write_atomic`] (left by a crash if it
/// is old).
pub(crate) fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}
