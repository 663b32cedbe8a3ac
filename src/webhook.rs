//! Webhooks: when a job becomes final, its receipt is POSTed to each URL of
//! the configuration's `notify.webhooks` that asks for that state; at least
//! once, signed, and never in the way of uploads.
//!
//! - URLs come only from the configuration, never from job files: a job
//!   cannot make the daemon call anywhere.
//! - Each delivery is a file in `checked/webhooks/` written when the job
//!   ends, so a restart still delivers it; it is removed once the receiver
//!   answers 2xx. Failures are retried with backoff for a day.
//! - With a `secret_file`: `X-Ftpdrop-Timestamp: <unix secs>` and
//!   `X-Ftpdrop-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
//!   `Idempotency-Key` carries the job's identity, the same on every retry.
//! - The body is the receipt, which never holds a secret.
//! - HTTPS goes through rustls (ring) with the system's roots, or the
//!   webhook's `ca_file`.

use crate::config::{Config, NotifyConfig, WebhookConfig};
use crate::events::{Event, Events, Sink};
use crate::report::JobState;
use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A delivery waiting to be made, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    job: String,
    /// Which webhook (its index) and its URL when queued: a reload that
    /// changes the list drops deliveries to URLs no longer configured.
    webhook: usize,
    url: String,
    state: String,
    /// The job's identity: name and claim time (the same on every retry).
    key: String,
    attempts: u32,
    /// Milliseconds since the epoch.
    queued_at: u64,
    next_at: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Deliveries are retried for a day (milliseconds).
const GIVE_UP_AFTER: u64 = 86_400_000;

/// Queues deliveries when jobs end (an event sink) and delivers them.
pub struct Webhooks {
    dir: PathBuf,
    checked: PathBuf,
    config: Mutex<NotifyConfig>,
    events: Events,
    wake: tokio::sync::Notify,
}

/// When the job was claimed, from its receipt: the delivery's idempotency
/// key. Only that field is kept; a 10,000-entry receipt is read past, not
/// held.
fn claimed_at(receipt: &std::path::Path) -> String {
    #[derive(serde::Deserialize)]
    struct Claimed {
        #[serde(default)]
        claimed_at: String,
    }
    std::fs::File::open(receipt)
        .ok()
        .and_then(|f| serde_json::from_reader::<_, Claimed>(std::io::BufReader::new(f)).ok())
        .map(|c| c.claimed_at)
        .unwrap_or_default()
}

impl Webhooks {
    pub fn new(config: &Config, events: Events) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            dir: config.checked.join("webhooks"),
            checked: config.checked.clone(),
            config: Mutex::new(config.notify.clone()),
            events,
            wake: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn set_config(&self, notify: NotifyConfig) {
        *self.config.lock().unwrap() = notify;
    }

    fn queue(&self, job: &str, state: &str) {
        let hooks = self.config.lock().unwrap().webhooks.clone();
        if !hooks.iter().any(|w| w.on.iter().any(|s| s == state)) {
            return;
        }
        let claimed_at = claimed_at(&self.checked.join(format!("{job}.report.json")));
        for (i, w) in hooks.iter().enumerate() {
            if !w.on.iter().any(|s| s == state) {
                continue;
            }
            let p = Pending {
                job: job.to_string(),
                webhook: i,
                url: w.url.clone(),
                state: state.to_string(),
                key: format!("{job}@{claimed_at}"),
                attempts: 0,
                queued_at: now_ms(),
                next_at: 0,
            };
            let path = self.dir.join(format!("{job}.{i}.json"));
            // The same run of the job ended twice (it cannot; if it ever
            // did): its delivery is queued once, its retry state kept.
            let same = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
                .is_some_and(|q| q.key == p.key);
            if same {
                continue;
            }
            let written = std::fs::create_dir_all(&self.dir).and_then(|_| {
                crate::store::write_atomic(&path, &serde_json::to_vec(&p).unwrap_or_default())
            });
            if let Err(e) = written {
                tracing::warn!(job = %job, error = %e, "cannot queue a webhook delivery");
            }
        }
        self.wake.notify_one();
    }

    fn queued(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    }

    /// Deliveries still queued (on disk).
    pub fn pending(&self) -> usize {
        self.queued().len()
    }

    /// One attempt at every delivery that is due.
    pub async fn pass(self: &Arc<Self>) {
        self.pass_until(&tokio_util::sync::CancellationToken::new())
            .await
    }

    /// As [`Self::pass`], stopping between deliveries once `stop` is
    /// cancelled; a delivery under way is finished, never cut off.
    async fn pass_until(self: &Arc<Self>, stop: &tokio_util::sync::CancellationToken) {
        for path in self.queued() {
            if stop.is_cancelled() {
                return;
            }
            let this = self.clone();
            // The whole attempt (claim, POST, the queue file's update) is one
            // blocking call: if this task is dropped, the thread still
            // finishes its bookkeeping, and its claim keeps every other pass
            // off the file until then.
            let _ = tokio::task::spawn_blocking(move || this.attempt(&path)).await;
        }
    }

    /// Delivers what is queued (now and from earlier runs) until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            self.pass_until(&stop).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One attempt at the delivery queued in `path`, if it is due and no
    /// other pass (of this process or another instance sharing `checked/`)
    /// has it.
    fn attempt(&self, path: &Path) {
        let Some(claim) = Claim::take(path) else {
            return;
        };
        let Ok(mut p) = serde_json::from_slice::<Pending>(&claim.bytes) else {
            let _ = std::fs::remove_file(path);
            return;
        };
        if p.next_at > now_ms() {
            return;
        }
        let hook = self.config.lock().unwrap().webhooks.get(p.webhook).cloned();
        let Some(hook) = hook.filter(|h| h.url == p.url) else {
            tracing::warn!(job = %p.job, url = %crate::secret::redact_url(&p.url), "webhook no longer configured; delivery dropped");
            let _ = std::fs::remove_file(path);
            return;
        };
        let receipt = self.checked.join(format!("{}.report.json", p.job));
        let body = match std::fs::read(&receipt) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(job = %p.job, error = %e, "webhook: the receipt is gone; delivery dropped");
                let _ = std::fs::remove_file(path);
                return;
            }
        };
        let result = match post(&hook, &p, &body) {
            Ok(status) if (200..300).contains(&status) => Ok(status),
            Ok(status) => Err(format!("the receiver answered {status}")),
            Err(e) => Err(format!("{e:#}").replace(&p.url, &crate::secret::redact_url(&p.url))),
        };
        p.attempts += 1;
        match result {
            Ok(status) => {
                // Removed while the claim is held: a pass waiting for the
                // claim finds the path gone.
                let _ = std::fs::remove_file(path);
                self.events.emit(Event::WebhookDelivered {
                    job: p.job,
                    url: crate::secret::redact_url(&p.url),
                    result: "ok",
                    attempt: p.attempts,
                    detail: format!("{status}"),
                });
            }
            Err(why) => {
                let gave_up = now_ms().saturating_sub(p.queued_at) > GIVE_UP_AFTER;
                // 0.5 s, 1 s, 2 s, ... at most 5 min.
                let backoff = (500u64 << (p.attempts - 1).min(10)).min(300_000);
                p.next_at = now_ms() + backoff;
                if gave_up {
                    let _ = std::fs::remove_file(path);
                } else {
                    // A new file under the same name: a pass holding the
                    // old one sees that it was replaced.
                    let _ = crate::store::write_atomic(
                        path,
                        &serde_json::to_vec(&p).unwrap_or_default(),
                    );
                }
                self.events.emit(Event::WebhookDelivered {
                    job: p.job,
                    url: crate::secret::redact_url(&p.url),
                    result: if gave_up { "gave_up" } else { "retry" },
                    attempt: p.attempts,
                    detail: why,
                });
            }
        }
        drop(claim);
    }
}

/// A queue file taken by one pass: locked (released when dropped, or when
/// the process dies), and still the file its path names.
struct Claim {
    _file: std::fs::File,
    bytes: Vec<u8>,
}

impl Claim {
    fn take(path: &Path) -> Option<Claim> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        file.try_lock().ok()?;
        // Between our open and our lock, the holder may have removed the
        // file (delivered) or replaced it (rescheduled): a lock on the old
        // file is a claim on nothing.
        let now = same_file::Handle::from_path(path).ok()?;
        if same_file::Handle::from_file(file.try_clone().ok()?).ok()? != now {
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        Some(Claim { _file: file, bytes })
    }
}

impl Sink for Webhooks {
    fn on_event(&self, event: &Event) {
        match event {
            Event::JobFinished { job, state, .. } => self.queue(job, state.name()),
            Event::JobInvalid { job, .. } => self.queue(job, JobState::Invalid.name()),
            _ => {}
        }
    }
}

/// `sha256=<hex>` of `"<timestamp>.<body>"` under `key`.
pub(crate) fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn agent(hook: &WebhookConfig) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let certs: Vec<Certificate<'static>> = match &hook.ca_file {
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("ca_file {}", p.display()))?;
            ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        }
        None => rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect(),
    };
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into())
}

fn post(hook: &WebhookConfig, p: &Pending, body: &[u8]) -> Result<u16> {
    let mut req = agent(hook)?
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("ftpdrop/", env!("CARGO_PKG_VERSION")))
        .header("X-Ftpdrop-Event", format!("job.{}", p.state))
        .header("Idempotency-Key", &p.key);
    for (k, v) in &hook.headers {
        req = req.header(k, v);
    }
    if let Some(f) = &hook.secret_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("secret_file {}", f.display()))?;
        let key = text.lines().next().unwrap_or("").trim();
        let ts = now_secs();
        req = req
            .header("X-Ftpdrop-Timestamp", ts.to_string())
            .header("X-Ftpdrop-Signature", signature(key.as_bytes(), ts, body));
    }
    let resp = req.send(body).context("POST")?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac, hashlib;
        // print(hmac.new(b'key', b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            super::signature(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
