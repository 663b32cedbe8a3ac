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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One instance's advertisement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    /// Where its status API listens; none when the API is off.
    #[serde(default)]
    pub addr: Option<SocketAddr>,
}

/// The folder of advertisements for the state folder of `checked`.
pub fn folder(checked: &Path) -> PathBuf {
    checked
        .parent()
        .unwrap_or(checked)
        .join("ftpdrop-instances")
}

/// Removes this instance's advertisement when dropped.
pub(crate) struct Advertised(PathBuf);

impl Drop for Advertised {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Advertises that this process runs on `checked` (serving the API on
/// `addr`, if it does); advertisements of processes no longer running (a
/// `kill -9`) are removed on the way.
pub(crate) fn advertise(checked: &Path, addr: Option<SocketAddr>) -> Result<Advertised> {
    let dir = folder(checked);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for i in list(checked) {
        if !alive(i.pid) {
            let _ = std::fs::remove_file(dir.join(format!("{}.json", i.pid)));
        }
    }
    let me = Instance {
        pid: std::process::id(),
        addr,
    };
    let path = dir.join(format!("{}.json", me.pid));
    let text = serde_json::to_vec(&me).expect("an instance serializes");
    crate::store::write_atomic(&path, &text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Advertised(path))
}

/// Every advertised instance, in no particular order.
pub fn list(checked: &Path) -> Vec<Instance> {
    std::fs::read_dir(folder(checked))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The instances running on `checked` now (advertisements of processes
/// that are gone are left out).
pub fn running(checked: &Path) -> Vec<Instance> {
    list(checked).into_iter().filter(|i| alive(i.pid)).collect()
}

/// Whether process `pid` still runs; where that cannot be told, it does.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
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
}
