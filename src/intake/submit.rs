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
    let tmp = inbox.join(format!(".{stem}.{}.json.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
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
    }
}
