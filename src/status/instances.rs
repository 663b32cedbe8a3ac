//! Where each instance on this host serves its status API.
//!
//! Instances that share a configuration share its `status.listen`; the
//! first one takes that port, and the others listen on a free port of the
//! same address. Each instance advertises its address in a file of its own
//! under `ftpdrop-instances/` in the state folder (beside `checked/`),
//! removed when it stops; `ftpdrop status` asks every advertised instance.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One instance's advertisement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub(crate) pid: u32,
    pub addr: SocketAddr,
}

/// The folder of advertisements for the state folder of `checked`.
pub(crate) fn folder(checked: &Path) -> PathBuf {
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

/// Advertises that this process serves the API on `addr`; advertisements
/// of processes no longer running (a `kill -9`) are removed on the way.
pub(crate) fn advertise(checked: &Path, addr: SocketAddr) -> Result<Advertised> {
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
        let ad = advertise(&checked, addr).unwrap();
        let seen = list(&checked);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].addr, addr);
        drop(ad);
        assert!(list(&checked).is_empty());
    }
}
