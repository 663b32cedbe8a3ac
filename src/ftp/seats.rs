//! A per-server budget of sessions shared by instances, so that N of them
//! together keep to the `max_connections_per_server` one keeps alone, and
//! spend no refused login learning it.
//!
//! An open session holds one seat of its server for as long as it lives
//! (idle, busy, or given up and waiting for the server to let go); a
//! session to open needs a free one. Seats are named by a digest of host,
//! port and login (no credentials). Where they live:
//!
//! - **Files** in `checked/ftpdrop-seats/` (`<key>.<n>`), for instances that
//!   share `checked/` (one host, or hosts that mount it). A seat is an
//!   exclusive lock on one file, which the kernel drops when the file is
//!   closed or the process dies however it dies. The locks are `flock(2)`
//!   on Unix (on NFS, the server's byte-range locks) and `LockFileEx` on
//!   Windows, as for job files ([`crate::intake::lock`]).
//! - **NATS KV** (bucket `ftpdrop_seats`), for instances that pull jobs
//!   from NATS on hosts with folders of their own. A seat is a key made
//!   with `create` (which fails if the key exists), renewed every few
//!   seconds and deleted when the session ends; the bucket's `max_age`
//!   lets a dead instance's seats expire by themselves.
//!
//! A waiting instance says so ([`Seats::want`]); the others then close
//! their idle sessions of that server instead of keeping them. Where seats
//! cannot be used (a read-only folder, NATS down) the budget is per
//! instance again, with one warning, and uploads go on.

use async_nats::jetstream::kv;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The seat folder's name inside `checked/` (not a job name: no `.json`).
pub(crate) const DIR: &str = "ftpdrop-seats";

/// The NATS KV bucket of seats.
pub(crate) const BUCKET: &str = "ftpdrop_seats";

/// How long a NATS seat outlives its last renewal: a dead instance's
/// seats come back after at most this long.
pub(crate) const KV_TTL: Duration = Duration::from_secs(15);

/// How often held NATS seats are renewed.
const KV_RENEW: Duration = Duration::from_secs(4);

/// How long a wish for a seat stands ([`Seats::want`]); waiters renew it
/// several times a second.
const WANTED_FOR: Duration = Duration::from_secs(1);

/// A server's name among the seats: no credentials, no path characters,
/// nothing a NATS key refuses.
fn key(server: &str, login: &str) -> String {
    hex::encode(&Sha256::digest(format!("{server}\n{login}").as_bytes())[..8])
}

/// The seats of a group of instances.
pub(crate) struct Seats {
    store: Store,
    warned: AtomicBool,
}

enum Store {
    /// Nothing shared: every seat is free.
    None,
    Files(PathBuf),
    Kv(Arc<KvSeats>),
}

struct KvSeats {
    kv: kv::Store,
    /// This instance's name in the values it writes (for operators who look).
    owner: String,
    /// Seats held here, with the revision of their last write.
    held: Mutex<HashMap<String, u64>>,
    /// When each server was last wanted by a waiter anywhere.
    wanted: Mutex<HashMap<String, Instant>>,
    /// When this instance last said it wants a seat of each server (a
    /// write per poll would be a write every 200 ms per waiting entry).
    told: Mutex<HashMap<String, Instant>>,
}

/// One held seat; dropping it frees it.
pub(crate) struct Seat {
    _held: Held,
}

enum Held {
    Free,
    File(#[allow(dead_code)] File),
    Kv(Arc<KvSeats>, String),
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seat")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Held::Kv(seats, key) = self else { return };
        // A seat whose renewal failed is no longer ours to delete.
        let Some(revision) = seats.held.lock().unwrap().remove(key.as_str()) else {
            return;
        };
        let (seats, key) = (seats.clone(), std::mem::take(key));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Ours only if nobody took it after it expired.
                let _ = seats.kv.delete_expect_revision(&key, Some(revision)).await;
            });
        }
    }
}

impl Seats {
    /// Seats in `dir`; `None` for an instance that shares nothing.
    pub(crate) fn new(dir: Option<PathBuf>) -> Seats {
        Seats {
            store: dir.map_or(Store::None, Store::Files),
            warned: AtomicBool::new(false),
        }
    }

    /// Seats in the NATS KV bucket [`BUCKET`] (created if missing), renewed
    /// while the returned task runs.
    pub(crate) async fn nats(client: async_nats::Client, owner: &str) -> anyhow::Result<Seats> {
        let js = async_nats::jetstream::new(client);
        if js.get_key_value(BUCKET).await.is_err() {
            // The bucket's stream, made as `create_key_value` makes it:
            // that call first asks for the account's info, which
            // async-nats 0.51 cannot read from nats-server 2.9.
            use async_nats::jetstream::stream;
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{BUCKET}"),
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                max_age: KV_TTL,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the NATS KV bucket {BUCKET}: {e}"))?;
        }
        let store = js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the NATS KV bucket {BUCKET}: {e}"))?;
        let seats = Arc::new(KvSeats {
            kv: store,
            owner: owner.to_string(),
            held: Mutex::default(),
            wanted: Mutex::default(),
            told: Mutex::default(),
        });
        tokio::spawn(renew(Arc::downgrade(&seats)));
        tokio::spawn(watch_wants(Arc::downgrade(&seats)));
        Ok(Seats {
            store: Store::Kv(seats),
            warned: AtomicBool::new(false),
        })
    }

    /// A free seat among the first `limit` of `server` (`host:port` and
    /// login), or `None` when every one is held by a session somewhere.
    pub(crate) async fn take(&self, server: &str, login: &str, limit: usize) -> Option<Seat> {
        let limit = limit.max(1);
        // Seats are tried from a different place by each caller, so that
        // instances starting together do not all contend for seat 0.
        let start = rand::random::<u32>() as usize % limit;
        let order = (0..limit).map(|i| (start + i) % limit);
        let free = Some(Seat { _held: Held::Free });
        let key = key(server, login);
        match &self.store {
            Store::None => free,
            Store::Files(dir) => {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    self.unshared(&e);
                    return free;
                }
                for i in order {
                    let file = OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(dir.join(format!("{key}.{i}")));
                    match file {
                        Ok(f) if f.try_lock().is_ok() => {
                            return Some(Seat {
                                _held: Held::File(f),
                            })
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.unshared(&e);
                            return free;
                        }
                    }
                }
                None
            }
            Store::Kv(seats) => {
                for i in order {
                    let name = format!("seat.{key}.{i}");
                    match seats.kv.create(&name, seats.owner.clone().into()).await {
                        Ok(revision) => {
                            seats.held.lock().unwrap().insert(name.clone(), revision);
                            return Some(Seat {
                                _held: Held::Kv(seats.clone(), name),
                            });
                        }
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                        Err(e) => {
                            self.unshared(&e);
                            return free;
                        }
                    }
                }
                None
            }
        }
    }

    /// Says that a session of `server` waits for a seat: instances with an
    /// idle session of it close that session instead of keeping it
    /// ([`Seats::wanted`]), so that idle sessions of one instance never
    /// starve another's work.
    pub(crate) async fn want(&self, server: &str, login: &str) {
        let key = key(server, login);
        match &self.store {
            Store::None => {}
            Store::Files(dir) => {
                let touched = File::create(dir.join(format!("{key}.want")))
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if let Err(e) = touched {
                    self.unshared(&e);
                }
            }
            Store::Kv(seats) => {
                {
                    let mut told = seats.told.lock().unwrap();
                    let last = told.get(&key).copied();
                    if last.is_some_and(|t| t.elapsed() < WANTED_FOR / 2) {
                        return;
                    }
                    told.insert(key.clone(), Instant::now());
                }
                if let Err(e) = seats
                    .kv
                    .put(format!("want.{key}"), seats.owner.clone().into())
                    .await
                {
                    self.unshared(&e);
                }
            }
        }
    }

    /// Did a session of `server` wait for a seat just now, here or
    /// elsewhere (see [`Seats::want`])?
    pub(crate) fn wanted(&self, server: &str, login: &str) -> bool {
        let key = key(server, login);
        match &self.store {
            Store::None => false,
            Store::Files(dir) => std::fs::metadata(dir.join(format!("{key}.want")))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < WANTED_FOR),
            Store::Kv(seats) => seats
                .wanted
                .lock()
                .unwrap()
                .get(&key)
                .is_some_and(|t| t.elapsed() < WANTED_FOR),
        }
    }

    fn unshared(&self, e: &dyn std::fmt::Display) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "cannot use the shared session seats: each instance keeps its own per-server limit"
            );
        }
    }
}

/// Renews the seats held here until the seats are dropped: a renewal that
/// fails (the key expired while NATS was away, and another took it) gives
/// the seat up; the session keeps going, one over the shared limit at
/// worst, and the server's 421 handling stays the ground truth.
async fn renew(seats: std::sync::Weak<KvSeats>) {
    loop {
        tokio::time::sleep(KV_RENEW).await;
        let Some(seats) = seats.upgrade() else { return };
        let held: Vec<(String, u64)> = seats
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(k, r)| (k.clone(), *r))
            .collect();
        for (key, revision) in held {
            let renewed = seats
                .kv
                .update(&key, seats.owner.clone().into(), revision)
                .await;
            let mut map = seats.held.lock().unwrap();
            match renewed {
                // Still held (not dropped meanwhile): keep the new revision.
                Ok(r) => {
                    if let Some(slot) = map.get_mut(&key) {
                        *slot = r;
                    }
                }
                Err(e) => {
                    map.remove(&key);
                    tracing::warn!(seat = %key, error = %e, "a shared session seat could not be renewed; given up");
                }
            }
        }
    }
}

/// Follows the wishes for seats (`want.<server>`) written anywhere.
async fn watch_wants(seats: std::sync::Weak<KvSeats>) {
    loop {
        let watch = match seats.upgrade() {
            Some(s) => s.kv.watch("want.>").await,
            None => return,
        };
        let Ok(mut watch) = watch else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        use futures_util::StreamExt;
        while let Some(entry) = watch.next().await {
            let Some(seats) = seats.upgrade() else { return };
            if let Ok(e) = entry {
                if e.operation == kv::Operation::Put {
                    if let Some(server) = e.key.strip_prefix("want.") {
                        seats
                            .wanted
                            .lock()
                            .unwrap()
                            .insert(server.to_string(), Instant::now());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seats_are_shared_and_come_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // Two instances: two `Seats` over one folder (each lock its own open file).
        let a = Seats::new(Some(dir.path().join(DIR)));
        let b = Seats::new(Some(dir.path().join(DIR)));
        let one = a.take("h:21", "u", 2).await.expect("a first seat");
        let two = b.take("h:21", "u", 2).await.expect("a second seat");
        assert!(
            a.take("h:21", "u", 2).await.is_none(),
            "the limit holds across instances"
        );
        assert!(
            b.take("h:21", "other", 2).await.is_some(),
            "another login has seats of its own"
        );
        drop(one);
        assert!(
            b.take("h:21", "u", 2).await.is_some(),
            "a freed seat serves another instance"
        );
        drop(two);
        assert!(Seats::new(None).take("h:21", "u", 1).await.is_some());
        assert!(!a.wanted("h:21", "u"));
        b.want("h:21", "u").await;
        assert!(
            a.wanted("h:21", "u"),
            "a wish is seen by the other instance"
        );
        assert!(!a.wanted("h:21", "other"));
    }
}
