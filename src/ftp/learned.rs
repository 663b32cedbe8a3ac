//! What ftpdrop learns about each server, kept across restarts in a small
//! state file beside `checked/` (`ftpdrop-learned.json`), each fact with the
//! time it was learned and forgotten after `learned_ttl_secs`.
//!
//! Without it every `ftpdrop once` and every restart learned again: the
//! segment probe (5 s against a server that locks uploaded files), the
//! connection limit (a refused login per instance), whether APPE and REST
//! work (a wasted attempt on a resume), and how the server treats TLS 1.3
//! sessions on data connections. Servers change, so
//! facts expire. The file names servers by `ftp://login@host:port`, never
//! with a password, and is written atomically, owner-only.

use crate::job::ServerKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is known about one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The segment probe's verdict: parallel REST+STOR writes are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) segments: Option<bool>,
    /// The connection limit learned from "too many connections".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<usize>,
    /// APPE works; `Some(false)`: refused, new files are made with STOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) appe: Option<bool>,
    /// REST works; `Some(false)`: "not implemented", resumes use APPE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rest: Option<bool>,
    /// Data connections use TLS 1.2: `Some(true)` once the server was seen
    /// to hand out TLS 1.3 tickets on the control connection only (proftpd's
    /// mod_tls), where a TLS 1.2 session resumes any number of times;
    /// `Some(false)` once such a server refused TLS 1.2 (TLS 1.3 only), or
    /// handed out TLS 1.3 tickets on data connections too. Unknown, the
    /// first login offers TLS 1.3 and those alongside it TLS 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls12: Option<bool>,
    /// The server keeps pipelined commands in order (see `pipeline`):
    /// `Some(false)` for one that runs them concurrently (libunftp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pipelining: Option<bool>,
    /// The server leaves commands sent during a transfer for after its
    /// reply (see `Session::probe_queueing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) queues_in_transfer: Option<bool>,
    /// A login costs the server little work (see `Session::login_work`):
    /// new sessions log in in parallel from the first, rather than one
    /// login measuring it while the others wait a login's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cheap_logins: Option<bool>,
    /// A new control connection may resume another one's TLS 1.2 session:
    /// its data connections were let through after it did (see
    /// `Session::probe_control_resume`). `Some(false)` for a server that ties
    /// data connections to the control connection's own session (proftpd's
    /// mod_tls), where each control connection does a full handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_tls_resume: Option<bool>,
    /// The server refused EPSV and PASV, and took active mode (`data_mode:
    /// auto`): its sessions start in active mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) active: Option<bool>,
    /// FEAT lists UTF8: with `encoding: auto`, `Some(false)` makes the
    /// server's sessions use `legacy_encoding` from their first command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) utf8: Option<bool>,
    /// The TLS key exchange group the server took (its IANA number; 23 is
    /// P-256): a restarted daemon's first logins offer it at once, rather
    /// than each paying a HelloRetryRequest round trip to learn it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_group: Option<u16>,
    /// When these facts were learned, in seconds since the epoch.
    pub(crate) learned_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    servers: BTreeMap<String, Facts>,
    /// What probes made on each server and have not removed yet: written
    /// before a probe makes it, so that a crash (kill -9) in the middle
    /// leaves a record, and the next session that logs in to the server
    /// removes it. Paths of directories end in `/`. Never expires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    litter: BTreeMap<String, BTreeSet<String>>,
}

pub(crate) struct Learned {
    /// `None`: nothing is kept (tests, `Pool` without a state folder).
    path: Option<PathBuf>,
    ttl: Duration,
    state: Mutex<State>,
}

struct State {
    servers: BTreeMap<String, Facts>,
    litter: BTreeMap<String, BTreeSet<String>>,
    /// The litter found in the file at start: an earlier run's, which no
    /// probe of this process is using (this process's own is removed by
    /// the probe that made it, never from under it).
    inherited: BTreeMap<String, BTreeSet<String>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Learned {
    /// Nothing kept, nothing known.
    pub(crate) fn none() -> Learned {
        Learned {
            path: None,
            ttl: Duration::ZERO,
            state: Mutex::new(State {
                servers: BTreeMap::new(),
                litter: BTreeMap::new(),
                inherited: BTreeMap::new(),
            }),
        }
    }

    /// Reads the state file, dropping facts older than `ttl`. A missing or
    /// unreadable file is an empty one (it is a cache, not a record).
    pub(crate) fn load(path: PathBuf, ttl: Duration) -> Learned {
        let file = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable learned-facts file");
                    StateFile::default()
                }
            },
            Err(_) => StateFile::default(),
        };
        let (mut servers, litter) = (file.servers, file.litter);
        let now = now_secs();
        servers.retain(|_, f| now.saturating_sub(f.learned_at) < ttl.as_secs());
        Learned {
            path: Some(path),
            ttl,
            state: Mutex::new(State {
                servers,
                inherited: litter.clone(),
                litter,
            }),
        }
    }

    /// What is known about `key`, if it has not expired.
    pub(crate) fn get(&self, key: &ServerKey) -> Option<Facts> {
        let state = self.state.lock().unwrap();
        let f = state.servers.get(&key.to_string())?;
        (now_secs().saturating_sub(f.learned_at) < self.ttl.as_secs()).then(|| f.clone())
    }

    /// Records that a probe is about to make `paths` on `key`'s server
    /// (directories end in `/`); on disk before the probe makes them.
    pub(crate) fn add_litter(&self, key: &ServerKey, paths: &[String]) {
        let mut state = self.state.lock().unwrap();
        let set = state.litter.entry(key.to_string()).or_default();
        let before = set.len();
        set.extend(paths.iter().cloned());
        if set.len() != before {
            self.save(&state);
        }
    }

    /// `paths` are gone from `key`'s server.
    pub(crate) fn clear_litter(&self, key: &ServerKey, paths: &[String]) {
        let mut state = self.state.lock().unwrap();
        let k = key.to_string();
        let Some(set) = state.litter.get_mut(&k) else {
            return;
        };
        let before = set.len();
        set.retain(|p| !paths.contains(p));
        if set.len() == before {
            return;
        }
        if set.is_empty() {
            state.litter.remove(&k);
        }
        if let Some(old) = state.inherited.get_mut(&k) {
            old.retain(|p| !paths.contains(p));
        }
        self.save(&state);
    }

    /// What an earlier run's probes left on `key`'s server (recorded by
    /// [`Self::add_litter`], not cleared since): for the first session that
    /// logs in there to remove.
    pub(crate) fn litter(&self, key: &ServerKey) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .inherited
            .get(&key.to_string())
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes what is kept about `key`'s server. The pool's `learn` is
    /// the one caller: it changes its sessions' copy and this together.
    pub(crate) fn update(&self, key: &ServerKey, change: impl FnOnce(&mut Facts)) {
        if self.path.is_none() {
            return;
        }
        let mut state = self.state.lock().unwrap();
        let f = state.servers.entry(key.to_string()).or_default();
        let before = f.clone();
        change(f);
        if *f == before {
            return;
        }
        f.learned_at = now_secs();
        self.save(&state);
    }

    /// Writes the state file. Under the state's lock: one writer at a
    /// time, and the newest facts last.
    fn save(&self, state: &State) {
        let Some(path) = &self.path else {
            return;
        };
        let file = StateFile {
            servers: state.servers.clone(),
            litter: state.litter.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("state serializes");
        if let Err(e) = crate::store::write_atomic(path, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save what was learned about servers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsMode;

    fn key() -> ServerKey {
        ServerKey {
            host: "h".into(),
            port: 21,
            login: "u".into(),
            tls: TlsMode::None,
            ca_file: None,
            insecure: false,
            names: Default::default(),
            tls_options: Default::default(),
            proxy: None,
            data: Default::default(),
            virtual_host: None,
        }
    }

    #[test]
    fn facts_survive_a_reload_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("learned.json");
        let l = Learned::load(path.clone(), Duration::from_secs(3600));
        l.update(&key(), |f| {
            f.segments = Some(false);
            f.limit = Some(2);
            f.appe = Some(false);
            f.rest = Some(false);
            f.tls12 = Some(true);
            f.cheap_logins = Some(true);
        });
        let again = Learned::load(path.clone(), Duration::from_secs(3600));
        let f = again.get(&key()).unwrap();
        assert_eq!((f.segments, f.limit), (Some(false), Some(2)));
        assert_eq!(
            (f.appe, f.rest, f.tls12),
            (Some(false), Some(false), Some(true))
        );
        assert_eq!(f.cheap_logins, Some(true));
        assert!(!std::fs::read_to_string(&path).unwrap().contains("password"));
        let expired = Learned::load(path, Duration::ZERO);
        assert!(expired.get(&key()).is_none());
    }

    #[test]
    fn litter_is_on_disk_until_cleared_and_never_expires() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("learned.json");
        let l = Learned::load(path.clone(), Duration::from_secs(3600));
        l.add_litter(
            &key(),
            &["d/.ftpdrop-probe-1-a/".into(), "d/.ftpdrop-probe-2".into()],
        );
        // A crash now: the next run reads it back, whatever the TTL.
        let again = Learned::load(path.clone(), Duration::ZERO);
        assert_eq!(again.litter(&key()).len(), 2);
        again.clear_litter(&key(), &["d/.ftpdrop-probe-2".into()]);
        let again = Learned::load(path.clone(), Duration::ZERO);
        assert_eq!(
            again.litter(&key()),
            vec!["d/.ftpdrop-probe-1-a/".to_string()]
        );
        again.clear_litter(&key(), &["d/.ftpdrop-probe-1-a/".into()]);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("litter"));
    }
}
