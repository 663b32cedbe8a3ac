//! Which instances run on this state folder, and where each serves its
//! status API.
//!
//! Instances that share a configuration share its `status.listen`; the
//! first one takes that port, and the others listen on a free port of the
//! same address. Each running instance advertises itself (and its API's
//! address, when the API is on) in a file of its own under
//! `ftpdrop-instances/` in the state folder (beside `checked/`), removed
//! when it stops: `ftpdrop status` asks every advertised API, and `ftpdrop
//! submit` refuses to leave a job where no instance watches.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, TryLockError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One instance's advertisement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    /// Where its status API listens; none when the API is off.
    #[serde(default)]
    pub addr: Option<SocketAddr>,
    /// The advertisement's file, without its extension: `STEM.json` holds
    /// this, `STEM.lock` is locked by the instance while it runs.
    #[serde(skip)]
    stem: PathBuf,
}

/// The folder of advertisements for the state folder of `checked`.
pub fn folder(checked: &Path) -> PathBuf {
    checked
        .parent()
        .unwrap_or(checked)
        .join("ftpdrop-instances")
}

/// Removes this instance's advertisement when dropped; its lock goes with
/// the process however the process ends.
pub(crate) struct Advertised {
    stem: PathBuf,
    _lock: Option<File>,
}

impl Drop for Advertised {
    fn drop(&mut self) {
        withdraw(&self.stem);
    }
}

/// Removes the advertisement `stem` and its lock file: the advertisement
/// first, as one without its lock file is never taken for a running
/// instance on Windows.
fn withdraw(stem: &Path) {
    let _ = std::fs::remove_file(stem.with_extension("json"));
    let _ = std::fs::remove_file(stem.with_extension("lock"));
}

/// Advertises that this process runs on `checked` (serving the API on
/// `addr`, if it does); advertisements of processes no longer running (a
/// `kill -9`) are removed on the way.
///
/// The lock is taken before the advertisement is written, so an
/// advertisement whose lock is free is one whose process has ended: the
/// operating system releases a dead process's locks, on Windows as on
/// Unix, where a process id alone can be reused or cannot be looked up.
pub(crate) fn advertise(checked: &Path, addr: Option<SocketAddr>) -> Result<Advertised> {
    let dir = folder(checked);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for i in list(checked) {
        if !alive(&i) {
            withdraw(&i.stem);
        }
    }
    let pid = std::process::id();
    // Unique beyond the process id, which the system reuses: a stale
    // advertisement of an earlier process with this id is never ours.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let stem = dir.join(format!("{pid}-{nonce}"));
    let lock_path = stem.with_extension("lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    // A file system without locks: advertised without one, told by the
    // process id where that can be (see `alive`).
    let lock = match lock.try_lock() {
        Ok(()) => Some(lock),
        Err(_) => {
            let _ = std::fs::remove_file(&lock_path);
            None
        }
    };
    let me = Instance {
        pid,
        addr,
        stem: stem.clone(),
    };
    let path = stem.with_extension("json");
    let text = serde_json::to_vec(&me).expect("an instance serializes");
    if let Err(e) = crate::store::write_atomic(&path, &text) {
        let _ = std::fs::remove_file(&lock_path);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(Advertised { stem, _lock: lock })
}

/// Every advertisement, of running instances and of ended ones (see
/// [`running`]), in no particular order.
pub fn list(checked: &Path) -> Vec<Instance> {
    std::fs::read_dir(folder(checked))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            // Never an open that waits: a FIFO named like an advertisement
            // would wedge the daemon's start.
            let bytes = crate::localfile::read_small(&p, 64 * 1024).ok()?;
            let mut i: Instance = serde_json::from_slice(&bytes).ok()?;
            i.stem = p.with_extension("");
            Some(i)
        })
        .collect()
}

/// The instances running on `checked` now (advertisements of processes
/// that are gone are left out).
pub fn running(checked: &Path) -> Vec<Instance> {
    list(checked).into_iter().filter(alive).collect()
}

/// Whether the instance that wrote `i` still runs: its lock is held.
///
/// Without a lock file (an instance stopping, or an advertisement written
/// by a version that had none), by its process id on Linux; elsewhere it
/// has ended. A lock this user cannot open or try is taken for a running
/// instance: one that cannot be told ended is not presumed so.
fn alive(i: &Instance) -> bool {
    let by_pid = || cfg!(target_os = "linux") && Path::new(&format!("/proc/{}", i.pid)).exists();
    match crate::localfile::open_regular(&i.stem.with_extension("lock"), false) {
        Ok(f) => match f.try_lock() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock | TryLockError::Error(_)) => true,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => by_pid(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_advertised_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let checked = dir.path().join("checked");
        let addr: SocketAddr = "127.0.0.1:45678".parse().unwrap();
        let ad = advertise(&checked, Some(addr)).unwrap();
        let seen = running(&checked);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].addr, Some(addr));
        drop(ad);
        assert!(list(&checked).is_empty());
        // Without the API: still seen running.
        let ad = advertise(&checked, None).unwrap();
        assert_eq!(running(&checked).len(), 1);
        drop(ad);
        assert!(running(&checked).is_empty());
    }

    /// What a `kill -9` leaves: the advertisement and a lock file nobody
    /// holds. Its process id is this test's own, which runs: only the lock
    /// tells that the instance ended.
    #[test]
    fn an_advertisement_whose_lock_is_free_has_ended_and_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let checked = dir.path().join("checked");
        let ads = folder(&checked);
        std::fs::create_dir_all(&ads).unwrap();
        let stale = ads.join(format!("{}-1", std::process::id()));
        let text = format!(r#"{{"pid":{},"addr":"127.0.0.1:1"}}"#, std::process::id());
        std::fs::write(stale.with_extension("json"), text).unwrap();
        std::fs::write(stale.with_extension("lock"), b"").unwrap();
        assert_eq!(list(&checked).len(), 1);
        assert!(running(&checked).is_empty(), "{:?}", running(&checked));
        // Held by another handle (another process, in effect): running.
        let holder = File::open(stale.with_extension("lock")).unwrap();
        holder.try_lock().unwrap();
        assert_eq!(running(&checked).len(), 1);
        drop(holder);
        let ad = advertise(&checked, None).unwrap();
        assert!(!stale.with_extension("json").exists(), "not swept");
        assert!(!stale.with_extension("lock").exists(), "not swept");
        assert_eq!(running(&checked).len(), 1);
        assert_eq!(running(&checked)[0].addr, None);
        drop(ad);
        let left: Vec<_> = std::fs::read_dir(&ads).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// FIFOs named like an advertisement and like a lock are passed over,
    /// never opened to wait for a writer.
    #[cfg(unix)]
    #[test]
    fn fifos_in_the_folder_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let checked = dir.path().join("checked");
        let ads = folder(&checked);
        std::fs::create_dir_all(&ads).unwrap();
        let fifo = |p: &Path| {
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: a valid, NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        fifo(&ads.join("1-1.json"));
        std::fs::write(ads.join("2-2.json"), br#"{"pid":2}"#).unwrap();
        fifo(&ads.join("2-2.lock"));
        assert_eq!(list(&checked).len(), 1);
        // A lock that is no regular file cannot be told free: running.
        assert_eq!(running(&checked).len(), 1);
        let ad = advertise(&checked, None).unwrap();
        assert_eq!(running(&checked).len(), 2);
        drop(ad);
    }
}
