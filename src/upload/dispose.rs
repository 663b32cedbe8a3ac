//! What becomes of a local file after its upload (`"after": "delete"` or
//! `{"move_to": dir}`), strictly after the verified publish is journaled.
//!
//! The order, with a journal line before and after each step that touches
//! the source: publish, verify, journal `pending`, (journal `moving` with
//! the chosen name), dispose, journal the result. A crash anywhere is
//! settled at the next start by running [`dispose`] again on what the
//! journal says: a `pending` entry is disposed of (never uploaded again); a
//! `moving` one finishes its move to the name already chosen, so that a
//! crash between the link and the unlink does not make a second copy.
//!
//! A file that changed since it was sent (size or mtime) is kept, and the
//! receipt says why. A move never overwrites: on a clash it takes a unique
//! name. Across filesystems it copies, fsyncs, then unlinks.
//!
//! Every step acts through directory handles ([`LocalRoots::open_dir`]):
//! the source's folder and the destination opened through the root they
//! lie under, each file named by one component, never followed. A folder
//! swapped for a symlink during the upload leads nowhere outside the roots
//! (it used to delete, or create, a file wherever the symlink pointed).

use crate::job::confine::LocalRoots;
use crate::job::{After, Entry};
use crate::report::{Disposal, DisposalState, Stamp};
use cap_std::fs::Dir;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

fn kept(reason: String) -> Disposal {
    Disposal {
        state: DisposalState::Kept,
        to: None,
        reason: Some(reason),
    }
}

/// The first disposal step for `entry`, to journal right after its
/// publish: `None` if the job keeps its sources.
pub(crate) fn pending(entry: &Entry) -> Option<Disposal> {
    (entry.after != After::Keep).then_some(Disposal {
        state: DisposalState::Pending,
        to: None,
        reason: None,
    })
}

/// Is `d` unfinished (a crash came before its result was journaled)?
pub(crate) fn unfinished(d: &Option<Disposal>) -> bool {
    matches!(
        d.as_ref().map(|d| d.state),
        Some(DisposalState::Pending | DisposalState::Moving)
    )
}

/// A file named by one component in a folder opened as a handle.
struct Place {
    dir: Dir,
    name: OsString,
}

impl Place {
    /// `path`'s folder, through `roots`; `create` makes missing folders.
    fn of(roots: &LocalRoots, path: &Path, create: bool) -> std::io::Result<Place> {
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok(Place {
            dir: roots.open_dir(parent, create)?,
            name: name.to_os_string(),
        })
    }

    /// Is there anything (a symlink included, not followed) under the name?
    fn exists(&self) -> bool {
        self.dir.symlink_metadata(&self.name).is_ok()
    }

    /// The regular file under the name, opened (never through a symlink).
    fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        if !self.dir.symlink_metadata(&self.name)?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        self.dir.open(&self.name)?.into_std().metadata()
    }

    fn remove(&self) -> std::io::Result<()> {
        self.dir.remove_file(&self.name)
    }
}

/// Carries out (or finishes) the disposal journaled as `now`; `journal` is
/// called with the `moving` step before a move touches anything. `sent` is
/// the file as it was uploaded. Blocking: run it off the async threads.
pub fn dispose(
    entry: &Entry,
    sent: Option<Stamp>,
    now: &Disposal,
    journal: impl FnOnce(&Disposal),
) -> Disposal {
    let path = &entry.local_path;
    let roots = &entry.local_roots;
    let src = match Place::of(roots, path, false) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Its folder is gone too: as for a file that is gone.
            return gone(entry);
        }
        Err(e) => return kept(format!("cannot reach the local file's folder: {e}")),
    };
    let exists = src.exists();
    // A moving step that got as far as its link: finish it.
    if now.state == DisposalState::Moving {
        if let Some(to) = &now.to {
            let to = PathBuf::from(to);
            if let Ok(dst) = Place::of(roots, &to, false) {
                if dst.exists() && (!exists || same_file(&src, &dst)) {
                    if exists {
                        if let Err(e) = src.remove() {
                            return kept(format!(
                                "moved to {} but cannot remove the source: {e}",
                                to.display()
                            ));
                        }
                    }
                    return Disposal {
                        state: DisposalState::Moved,
                        to: Some(to.display().to_string()),
                        reason: None,
                    };
                }
            }
        }
    }
    if !exists {
        // Deleted by the crashed run after its publish, or by someone else.
        return gone(entry);
    }
    let meta = match src.metadata() {
        Ok(m) => m,
        Err(e) => return kept(format!("cannot read the local file: {e}")),
    };
    let stamp = Stamp::of(&meta);
    match sent {
        Some(s) if s != stamp => {
            return kept(format!(
                "the local file changed after it was sent ({} bytes, then {})",
                s.size, stamp.size
            ))
        }
        None => return kept("what was sent is not known".into()),
        _ => {}
    }
    match &entry.after {
        After::Keep => kept("after is keep".into()),
        After::Delete => match src.remove() {
            Ok(()) => Disposal {
                state: DisposalState::Deleted,
                to: None,
                reason: None,
            },
            Err(e) => kept(format!("cannot delete: {e}")),
        },
        After::MoveTo(dir) => {
            let dst_dir = match roots.open_dir(dir, true) {
                Ok(d) => d,
                Err(e) => return kept(format!("cannot create {}: {e}", dir.display())),
            };
            let name = match free_name(&dst_dir, Path::new(&src.name)) {
                Some(t) => t,
                None => return kept(format!("no free name in {}", dir.display())),
            };
            let to = dir.join(&name);
            journal(&Disposal {
                state: DisposalState::Moving,
                to: Some(to.display().to_string()),
                reason: None,
            });
            match move_file(&src, &dst_dir, &name) {
                Ok(()) => Disposal {
                    state: DisposalState::Moved,
                    to: Some(to.display().to_string()),
                    reason: None,
                },
                Err(e) => kept(format!("cannot move to {}: {e}", to.display())),
            }
        }
    }
}

fn gone(entry: &Entry) -> Disposal {
    match &entry.after {
        After::Delete => Disposal {
            state: DisposalState::Deleted,
            to: None,
            reason: None,
        },
        _ => kept("the local file was gone when it was to be moved".into()),
    }
}

/// `name`, or `stem-1.ext`, `stem-2.ext`, ... whichever is free in `dir`.
fn free_name(dir: &Dir, name: &Path) -> Option<PathBuf> {
    let free = |n: &Path| dir.symlink_metadata(n).is_err();
    if free(name) {
        return Some(name.to_path_buf());
    }
    let stem = name.file_stem()?.to_string_lossy().into_owned();
    let ext = name
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..100_000)
        .map(|n| PathBuf::from(format!("{stem}-{n}{ext}")))
        .find(|p| free(p))
}

fn same_file(a: &Place, b: &Place) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                if x.dev() == y.dev() && x.ino() == y.ino() {
                    return true;
                }
            }
            // A copy across filesystems: the same size is what was checked before it.
            x.len() == y.len()
        }
        _ => false,
    }
}

/// Moves the source to `to` in `dir` without ever replacing a file there:
/// a hard link (which fails if `to` exists), then the unlink; across
/// filesystems a copy under a temp name, fsync, link into place, unlink.
fn move_file(from: &Place, dir: &Dir, to: &Path) -> std::io::Result<()> {
    match from.dir.hard_link(&from.name, dir, to) {
        Ok(()) => return from.remove(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let tmp = PathBuf::from(format!(
        ".{}.ftpdrop-move",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    let copied = (|| {
        from.dir.copy(&from.name, dir, &tmp)?;
        dir.open(&tmp)?.into_std().sync_all()?;
        match dir.hard_link(&tmp, dir, to) {
            Ok(()) => dir.remove_file(&tmp),
            // No hard links here (some network filesystems): a rename, after
            // checking the name is still free.
            Err(e)
                if e.kind() != std::io::ErrorKind::AlreadyExists
                    && dir.symlink_metadata(to).is_err() =>
            {
                dir.rename(&tmp, dir, to)
            }
            Err(e) => Err(e),
        }
    })();
    if let Err(e) = copied {
        let _ = dir.remove_file(&tmp);
        return Err(e);
    }
    #[cfg(unix)]
    if let Ok(d) = dir.try_clone() {
        let _ = d.into_std_file().sync_all();
    }
    from.remove()
}
