//! What of the local file is kept on the server besides its bytes: the
//! modification time (`MFMT`, or `MDTM` with a time, which vsftpd takes,
//! where the operator asks for it and the server lists no MFMT) and the
//! permissions (`SITE CHMOD`, for web hosting).
//!
//! Both are set on the temp file, before the publish: a rename keeps them,
//! so the final name never shows the upload's own time or the server's
//! default mode. What a server refuses is a warning for the receipt, never
//! a failed upload.

use crate::ftp::fault::Fault;
use crate::ftp::Session;
use std::time::SystemTime;

/// What to set on an uploaded file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keep {
    /// The local file's modification time, to set where the server can.
    pub(crate) mtime: Option<SystemTime>,
    /// The operator asked for the time (`preserve_mtime: true`): where the
    /// server lists no MFMT, try `MDTM <time> <path>`, and warn if refused.
    pub(crate) mtime_asked: bool,
    /// Octal permissions, e.g. `644`.
    pub(crate) chmod: Option<String>,
}

/// The commands that set `keep` on `path` on a server with `features`,
/// each with what it keeps (for the warning), and warnings for what the
/// server cannot be asked.
fn commands(
    features: &crate::ftp::Features,
    path: &str,
    keep: &Keep,
) -> (Vec<(String, &'static str)>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    if let Some(t) = keep.mtime {
        let stamp = chrono::DateTime::<chrono::Utc>::from(t).format("%Y%m%d%H%M%S");
        if features.mfmt {
            out.push((format!("MFMT {stamp} {path}"), "modification time"));
        } else if keep.mtime_asked {
            out.push((format!("MDTM {stamp} {path}"), "modification time"));
        }
    }
    if let Some(mode) = &keep.chmod {
        out.push((format!("SITE CHMOD {mode} {path}"), "permissions"));
    }
    if keep.mtime.is_none() && keep.mtime_asked {
        warnings.push("modification time not kept: the local file has none".into());
    }
    (out, warnings)
}

impl Session {
    /// Sets what `keep` asks on `path`; returns a warning per thing the
    /// server refused. Only a broken connection is an error.
    pub(crate) async fn keep(&mut self, path: &str, keep: &Keep) -> Result<Vec<String>, Fault> {
        let (commands, mut warnings) = commands(&self.features, path, keep);
        if commands.is_empty() {
            return Ok(warnings);
        }
        let lines: Vec<String> = commands.iter().map(|(c, _)| c.clone()).collect();
        let replies = self.control.batch(&lines).await?;
        for ((command, what), reply) in commands.iter().zip(&replies) {
            if !(200..300).contains(&reply.code) {
                let verb: String = command
                    .split(' ')
                    .take(if command.starts_with("SITE") { 2 } else { 1 })
                    .collect::<Vec<_>>()
                    .join(" ");
                warnings.push(format!(
                    "{what} not kept: the server answered {verb} with {}",
                    crate::secret::scrub(&reply.text(), &[&self.control.password])
                ));
            }
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::Features;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn mfmt_where_listed_mdtm_only_when_asked() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let keep = Keep {
            mtime: Some(t),
            mtime_asked: false,
            chmod: Some("644".into()),
        };
        let mfmt = Features {
            mfmt: true,
            ..Features::default()
        };
        let (c, w) = commands(&mfmt, "d/.t.part", &keep);
        assert_eq!(c[0].0, "MFMT 20231114221320 d/.t.part");
        assert_eq!(c[1].0, "SITE CHMOD 644 d/.t.part");
        assert!(w.is_empty());
        // No MFMT: nothing by default, MDTM with a time when asked.
        let (c, _) = commands(&Features::default(), "f", &keep);
        assert_eq!(c.len(), 1);
        let asked = Keep {
            mtime_asked: true,
            ..keep
        };
        let (c, _) = commands(&Features::default(), "f", &asked);
        assert_eq!(c[0].0, "MDTM 20231114221320 f");
    }
}
