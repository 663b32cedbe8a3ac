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

use crate::job::{After, Entry};
use crate::report::{Disposal, DisposalState, Stamp};
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
pub fn pending(entry: &Entry) -> Option<Disposal> {
    (entry.after != After::Keep).then_some(Disposal {
        state: DisposalState::Pending,
        to: None,
        reason: None,
    })
}

/// Is `d` unfinished (a crash came before its result was journaled)?
pub fn unfinished(d: &Option<Disposal>) -> bool {
    matches!(
        d.as_ref().map(|d| d.state),
        Some(DisposalState::Pending | DisposalState::Moving)
    )
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
    let exists = path.exists();
    // A moving step that got as far as its link: finish it.
    if now.state == DisposalState::Moving {
        if let Some(to) = &now.to {
            let to = PathBuf::from(to);
            if to.exists() && (!exists || same_file(path, &to)) {
                if exists {
                    if let Err(e) = std::fs::remove_file(path) {
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
    if !exists {
        // Deleted by the crashed run after its publish, or by someone else.
        return match &entry.after {
            After::Delete => Disposal {
                state: DisposalState::Deleted,
                to: None,
                reason: None,
            },
            _ => kept("the local file was gone when it was to be moved".into()),
        };
    }
    let meta = match std::fs::metadata(path) {
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
        After::Delete => match std::fs::remove_file(path) {
            Ok(()) => Disposal {
                state: DisposalState::Deleted,
                to: None,
                reason: None,
            },
            Err(e) => kept(format!("cannot delete: {e}")),
        },
        After::MoveTo(dir) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return kept(format!("cannot create {}: {e}", dir.display()));
            }
            let Some(name) = path.file_name() else {
                return kept("the local path has no file name".into());
            };
            let to = match free_name(dir, Path::new(name)) {
                Some(t) => t,
                None => return kept(format!("no free name in {}", dir.display())),
            };
            journal(&Disposal {
                state: DisposalState::Moving,
                to: Some(to.display().to_string()),
                reason: None,
            });
            match move_file(path, &to) {
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

/// `dir/name`, or `dir/stem-1.ext`, `dir/stem-2.ext`, ... whichever is free.
fn free_name(dir: &Path, name: &Path) -> Option<PathBuf> {
    let first = dir.join(name);
    if !first.exists() {
        return Some(first);
    }
    let stem = name.file_stem()?.to_string_lossy().into_owned();
    let ext = name
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..100_000)
        .map(|n| dir.join(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
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

/// Moves `from` to `to` without ever replacing a file at `to`: a hard link
/// (which fails if `to` exists), then the unlink; across filesystems a copy
/// under a temp name, fsync, link into place, unlink.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => return std::fs::remove_file(from),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let dir = to.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.ftpdrop-move",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    let copied = (|| {
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        match std::fs::hard_link(&tmp, to) {
            Ok(()) => std::fs::remove_file(&tmp),
            // No hard links here (some network filesystems): a rename, after
            // checking the name is still free.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists && !to.exists() => {
                std::fs::rename(&tmp, to)
            }
            Err(e) => Err(e),
        }
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    std::fs::remove_file(from)
}
