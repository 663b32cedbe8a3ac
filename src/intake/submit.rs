//! Putting a job into the inbox from inside (the `submit` command, `POST
//! /api/jobs`): under a unique name, atomically, so that the folder stays
//! the one intake and never shows half a job.

use anyhow::{Context, Result};
use std::path::Path;

/// A name `stem`, `stem-1`, ... that no job file in the inbox and no job in
/// `checked/` has.
fn free(inbox: &Path, checked: &Path, name: &str) -> bool {
    !inbox.join(format!("{name}.json")).exists()
        && !checked.join(format!("{name}.json")).exists()
        && !checked.join(format!("{name}.report.json")).exists()
}

/// The longest job name it gives (bytes), before any `-<n>`.
const MAX_STEM: usize = 150;

/// Writes `bytes` into `inbox` as a new job named after `stem`; returns the
/// job's name. A hidden temp file is linked into place, which fails rather
/// than overwrite a job that took the name meanwhile.
pub fn into_inbox(inbox: &Path, checked: &Path, stem: &str, bytes: &[u8]) -> Result<String> {
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = if stem.is_empty() || stem.starts_with('.') {
        format!("job{stem}")
    } else {
        stem
    };
    // Room for `-<n>`, `.report.json` and the journal's suffix within the
    // 255 bytes a file name may have.
    let stem: String = stem
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= MAX_STEM)
        .map(|(_, c)| c)
        .collect();
    // A temp file of this call's own (two requests in one millisecond used
    // to share one, and swap bodies), owner-only: a job may hold a password.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = inbox.join(format!(
        ".{stem}.{}-{}.json.tmp",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(bytes)?;
            f.sync_all()
        })
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    let mut name = stem.clone();
    let mut n = 0u32;
    let result = loop {
        if free(inbox, checked, &name) {
            match std::fs::hard_link(&tmp, inbox.join(format!("{name}.json"))) {
                Ok(()) => break Ok(name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    break Err(anyhow::Error::new(e).context("cannot move the job into the inbox"))
                }
            }
        }
        n += 1;
        name = format!("{stem}-{n}");
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_safe() {
        let d = tempfile::tempdir().unwrap();
        let (inbox, checked) = (d.path().join("in"), d.path().join("checked"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&checked).unwrap();
        std::fs::write(checked.join("a.report.json"), b"{}").unwrap();
        let a = super::into_inbox(&inbox, &checked, "a", b"[]").unwrap();
        let b = super::into_inbox(&inbox, &checked, "a", b"[1]").unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("a-1", "a-2"));
        assert_eq!(std::fs::read(inbox.join("a-2.json")).unwrap(), b"[1]");
        let odd = super::into_inbox(&inbox, &checked, "../x y", b"[]").unwrap();
        assert_eq!(odd, ".._x_y".replace("..", "job.."));
        assert_eq!(
            std::fs::read_dir(&inbox).unwrap().count(),
            3,
            "no temp file left"
        );
        let long = super::into_inbox(&inbox, &checked, &"я".repeat(200), b"[]").unwrap();
        assert!(long.len() <= super::MAX_STEM, "{}", long.len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(inbox.join(format!("{long}.json")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "a job may hold a password");
        }
    }

    /// Two submissions at once never swap bodies (they shared a temp file).
    #[test]
    fn concurrent_submissions_keep_their_bodies() {
        let d = tempfile::tempdir().unwrap();
        let (inbox, checked) = (d.path().join("in"), d.path().join("checked"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&checked).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (inbox, checked) = (inbox.clone(), checked.clone());
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| {
                            let body = format!("[{t}, {i}, \"{}\"]", "x".repeat(i * 97));
                            let name =
                                super::into_inbox(&inbox, &checked, "api-same-ms", body.as_bytes())
                                    .unwrap();
                            (name, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut names = std::collections::HashSet::new();
        for t in threads {
            for (name, body) in t.join().unwrap() {
                let on_disk = std::fs::read_to_string(inbox.join(format!("{name}.json"))).unwrap();
                assert_eq!(on_disk, body, "{name}");
                assert!(names.insert(name));
            }
        }
    }
}
