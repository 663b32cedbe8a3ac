//! What a job may reach: local files under `local_roots`, servers in
//! `allowed_hosts`.
//!
//! The inbox is a trust boundary: whoever can write a job file can make the
//! daemon read files and send them somewhere. These two lists bound both.
//! Empty lists keep the seeds' behaviour (anything goes), which `run` and
//! `check-config` say out loud.
//!
//! A local path is checked on the file that is actually opened, not on the
//! name in the job: [`LocalRoots::open`] opens first and then asks the
//! kernel where the open file really is (`/proc/self/fd` on Linux), so a
//! symlink swapped in between validation and upload cannot lead outside.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Folders a job's `local_path` must resolve into; empty: anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LocalRoots {
    /// Canonical (symlink-free, absolute) folders.
    roots: Vec<PathBuf>,
}

/// Where `dir` is, after symlinks, as far as it exists; the parts that do
/// not exist yet go below the deepest one that does. `None` if a missing
/// part is `..`.
fn resolved(dir: &Path) -> Option<PathBuf> {
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    let real = loop {
        match std::fs::canonicalize(&existing) {
            Ok(r) => break r,
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break existing,
            },
        }
    };
    if rest.iter().any(|n| n == "..") {
        return None;
    }
    Some(rest.iter().rev().fold(real, |p, n| p.join(n)))
}

crate::localfile::payload!(
    /// A file a job may not name: outside the roots, or not an absolute path.
    OutsideRoots
);

impl LocalRoots {
    /// Canonicalizes the configured folders. A folder that does not exist
    /// yet is kept as written (nothing can be under it until it does; the
    /// config check warns about it), so that a config can name a mount
    /// point before it is mounted.
    pub(crate) fn new(roots: &[PathBuf]) -> Result<LocalRoots> {
        let mut out = Vec::new();
        for (i, r) in roots.iter().enumerate() {
            if r.as_os_str().is_empty() {
                bail!("local_roots[{i}]: is empty");
            }
            match std::fs::canonicalize(r) {
                Ok(real) if real.is_dir() => out.push(real),
                Ok(_) => bail!("local_roots[{i}]: {} is not a folder", r.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(r.clone()),
                Err(e) => {
                    return Err(e).with_context(|| format!("local_roots[{i}]: {}", r.display()))
                }
            }
        }
        Ok(LocalRoots { roots: out })
    }

    /// Does this confine anything?
    pub(crate) fn is_unrestricted(&self) -> bool {
        self.roots.is_empty()
    }

    /// The folder `dir` as a handle that cannot lead out: opened through the
    /// root it lies under (cap-std refuses a symlink or `..` that leaves the
    /// root, whenever it is met), or directly when nothing is confined.
    /// With `create`, the missing part below the root is made.
    pub(crate) fn open_dir(&self, dir: &Path, create: bool) -> std::io::Result<cap_std::fs::Dir> {
        let ambient = cap_std::ambient_authority();
        if self.is_unrestricted() {
            if create {
                std::fs::create_dir_all(dir)?;
            }
            return cap_std::fs::Dir::open_ambient_dir(dir, ambient);
        }
        // Where it is now, as far as it exists: that picks the root. What
        // is below the root is then walked through the root's handle, so a
        // swap after this look is caught there.
        let real = resolved(dir).ok_or_else(|| self.outside(dir, dir))?;
        let Some(root) = self.roots.iter().find(|r| real.starts_with(r)) else {
            return Err(self.outside(dir, &real));
        };
        let rel = real.strip_prefix(root).unwrap_or(Path::new(""));
        let root_dir = cap_std::fs::Dir::open_ambient_dir(root, ambient)?;
        if rel.as_os_str().is_empty() {
            return Ok(root_dir);
        }
        if create {
            root_dir.create_dir_all(rel)?;
        }
        root_dir.open_dir(rel)
    }

    fn contains(&self, real: &Path) -> bool {
        self.is_unrestricted() || self.roots.iter().any(|r| real.starts_with(r))
    }

    fn outside(&self, path: &Path, real: &Path) -> std::io::Error {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        let how = if real == path {
            String::new()
        } else {
            format!(" (resolves to {})", real.display())
        };
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            OutsideRoots(format!(
                "outside local_roots: {}{how} is not under {}",
                path.display(),
                roots.join(", ")
            )),
        )
    }

    /// A file a job names besides its `local_path` (a CA bundle): under a
    /// root after symlinks, or anywhere when nothing is confined.
    pub(crate) fn allows_file(&self, path: &Path) -> Result<(), String> {
        if self.is_unrestricted() {
            return Ok(());
        }
        // Where it would be, as far as it exists (it may not exist yet; it
        // is read, capped, only when a connection needs it).
        self.allows_dir(path)
    }

    /// A folder sources may be moved to: under a root (after symlinks, as
    /// far as it exists), or anywhere when nothing is confined.
    pub(crate) fn allows_dir(&self, dir: &Path) -> Result<(), String> {
        if self.is_unrestricted() {
            return Ok(());
        }
        let real = resolved(dir).ok_or_else(|| format!("{} contains ..", dir.display()))?;
        if self.contains(&real) {
            Ok(())
        } else {
            Err(self.outside(dir, &real).to_string())
        }
    }

    /// Opens `path` for reading, if it is a regular file and the file
    /// opened lies under a root.
    ///
    /// Nothing but a regular file is ever opened for a job: the name is
    /// looked at first (a FIFO, a device or a socket is refused without an
    /// open, which could block or have effects of its own), outside roots
    /// it is refused before the open too, and the open itself cannot block
    /// (`O_NONBLOCK`: a FIFO swapped in meanwhile opens at once and is then
    /// refused by what the open handle is).
    pub(crate) fn open(&self, path: &Path) -> std::io::Result<File> {
        if path.is_relative() {
            // Relative to whatever the daemon's working directory is (`/`
            // under systemd, the shell's for `validate`): not a place a job
            // can mean, with or without local_roots.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                OutsideRoots(format!(
                    "{} is not an absolute path; a job names its files by absolute path",
                    path.display()
                )),
            ));
        }
        crate::localfile::regular(&std::fs::metadata(path)?, path)?;
        if !self.is_unrestricted() {
            if let Ok(real) = std::fs::canonicalize(path) {
                if !self.contains(&real) {
                    return Err(self.outside(path, &real));
                }
            }
        }
        let file = crate::localfile::open_regular(path, true)?;
        if self.is_unrestricted() {
            return Ok(file);
        }
        let real = real_path(&file, path)?;
        if !self.contains(&real) {
            return Err(self.outside(path, &real));
        }
        Ok(file)
    }
}

/// Where an open file really is.
#[cfg(target_os = "linux")]
fn real_path(file: &File, _path: &Path) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    // A file deleted since it was opened reads as "<path> (deleted)".
    let text = link.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => link,
    })
}

/// Where an open file really is: the resolved name, if it still names the
/// very file that was opened (same device and inode).
#[cfg(all(unix, not(target_os = "linux")))]
fn real_path(file: &File, path: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path)?;
    let (a, b) = (file.metadata()?, std::fs::metadata(&real)?);
    if a.dev() != b.dev() || a.ino() != b.ino() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            OutsideRoots(format!(
                "outside local_roots: {} changed while it was opened",
                path.display()
            )),
        ));
    }
    Ok(real)
}

/// Where an open file really is. Windows has no cheap handle-to-path in std;
/// the name is resolved right after the open (creating symlinks there
/// needs a privilege a job writer rarely has).
#[cfg(windows)]
fn real_path(_file: &File, path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

/// Hosts a job may send files to; empty: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostRules {
    /// Exact names, lower case.
    names: Vec<String>,
    /// `*.example.com` as `.example.com`: any name ending so.
    suffixes: Vec<String>,
    /// Networks (a single address is a /32 or /128).
    nets: Vec<IpNet>,
}

/// What the rules say about a host as written in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostVerdict {
    Allowed,
    /// A name that only networks could allow: allowed if every address it
    /// resolves to at connect time is in one of them.
    IfResolvesInto(Vec<IpNet>),
    Refused(String),
}

impl HostRules {
    pub(crate) fn new(rules: &[String]) -> Result<HostRules> {
        let mut out = HostRules::default();
        for (i, r) in rules.iter().enumerate() {
            let r = r.trim();
            if r.is_empty() {
                bail!("allowed_hosts[{i}]: is empty");
            }
            if let Ok(net) = r.parse::<IpNet>() {
                out.nets.push(net.trunc());
            } else if let Ok(ip) = r.parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else if let Some(suffix) = r.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') || !valid_name(suffix) {
                    bail!("allowed_hosts[{i}]: {r:?} is not a host name pattern (*.example.com)");
                }
                out.suffixes
                    .push(format!(".{}", suffix.to_ascii_lowercase()));
            } else if r.contains('/') && !r.contains("://") {
                bail!("allowed_hosts[{i}]: {r:?} is not a network (CIDR, e.g. 10.0.0.0/8)");
            } else if valid_name(r) {
                out.names.push(r.to_ascii_lowercase());
            } else {
                bail!("allowed_hosts[{i}]: {r:?} is not a host name, an address, *.domain or a network");
            }
        }
        Ok(out)
    }

    pub(crate) fn is_unrestricted(&self) -> bool {
        self.names.is_empty() && self.suffixes.is_empty() && self.nets.is_empty()
    }

    /// Is an address in one of the networks?
    pub(crate) fn allows_ip(nets: &[IpNet], ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        nets.iter().any(|n| n.contains(&ip))
    }

    pub fn check(&self, host: &str) -> HostVerdict {
        if self.is_unrestricted() {
            return HostVerdict::Allowed;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if Self::allows_ip(&self.nets, ip) {
                HostVerdict::Allowed
            } else {
                HostVerdict::Refused(format!("{host} is not in allowed_hosts"))
            };
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if self.names.contains(&name) || self.suffixes.iter().any(|s| name.ends_with(s.as_str())) {
            return HostVerdict::Allowed;
        }
        if self.nets.is_empty() {
            HostVerdict::Refused(format!("{host} is not in allowed_hosts"))
        } else {
            HostVerdict::IfResolvesInto(self.nets.clone())
        }
    }
}

/// Letters, digits, `-`, `_` and dots: what DNS names and /etc/hosts names use.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> HostRules {
        HostRules::new(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_patterns_and_networks() {
        let r = rules(&[
            "ftp.example.com",
            "*.partner.net",
            "10.0.0.0/8",
            "192.168.1.7",
        ]);
        assert_eq!(r.check("FTP.example.com"), HostVerdict::Allowed);
        assert_eq!(r.check("a.b.partner.net"), HostVerdict::Allowed);
        assert!(matches!(
            r.check("partner.net"),
            HostVerdict::IfResolvesInto(_)
        ));
        assert_eq!(r.check("10.20.30.40"), HostVerdict::Allowed);
        assert_eq!(r.check("192.168.1.7"), HostVerdict::Allowed);
        assert!(matches!(r.check("192.168.1.8"), HostVerdict::Refused(_)));
        assert!(matches!(r.check("::1"), HostVerdict::Refused(_)));
        let names_only = rules(&["ftp.example.com"]);
        assert!(matches!(
            names_only.check("evil.com"),
            HostVerdict::Refused(_)
        ));
        assert!(matches!(
            names_only.check("127.0.0.1"),
            HostVerdict::Refused(_)
        ));
        assert!(HostRules::allows_ip(
            &["127.0.0.0/8".parse().unwrap()],
            "::ffff:127.0.0.1".parse().unwrap()
        ));
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in ["", "*.", "ftp://x", "10.0.0.0/33", "a b", "*.*.x"] {
            let e = HostRules::new(&[bad.to_string()]).unwrap_err();
            assert!(e.to_string().starts_with("allowed_hosts[0]"), "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_a_root_are_refused_on_open() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("in.txt"), "in").unwrap();
        std::fs::write(d.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret.txt"), root.join("link.txt")).unwrap();
        let roots = LocalRoots::new(std::slice::from_ref(&root)).unwrap();
        assert!(roots.open(&root.join("in.txt")).is_ok());
        let e = roots.open(&root.join("link.txt")).unwrap_err();
        assert!(e.to_string().contains("outside local_roots"), "{e}");
        let e = roots.open(&root.join("../secret.txt")).unwrap_err();
        assert!(e.to_string().contains("outside local_roots"), "{e}");
        assert!(roots.open(Path::new("in.txt")).is_err());
    }
}
