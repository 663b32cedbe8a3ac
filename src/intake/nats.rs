//! Jobs from a NATS JetStream work queue: a durable pull consumer that every
//! instance shares, so each message (one job, the same JSON as a job file)
//! goes to one worker at a time.
//!
//! A message becomes a claimed job in `checked/` like a file from the inbox
//! (named by its `Nats-Msg-Id`, else `nats-<stream sequence>`) and runs the
//! same way. It is acked only once the job's receipt is final; while it
//! runs, in-progress acks every third of `ack_wait_secs` keep the server
//! from handing it to another worker. An invalid job is terminated (not
//! redelivered) with an `invalid` receipt; a job cut off by shutdown is
//! nak'ed with a delay so that another worker takes it. Receipts are also
//! published to `<receipts_subject>.<job>`.
//!
//! A job delivered again (its worker died) resumes from its journal where
//! this instance has one. Otherwise its receipt starts with
//! `settle_published`: every entry first looks for its file on the server,
//! and its temp name is the dead worker's (the run's identity is the
//! message's publish time), so nothing published is sent again and a
//! partial temp file is resumed, not left behind.
//!
//! Pull consumers can stall silently after a reconnect (nats.rs #860,
//! #1285): the message stream asks for idle heartbeats, and when they stop
//! the consumer is fetched again.

use super::Work;
use crate::config::NatsConfig;
use crate::health::{Health, Loop};
use crate::report::{JobPaths, JobState, Receipt};
use crate::store::write_atomic;
use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Idle heartbeats asked of the server; two missed ones mean a stalled consumer.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Before a job cut off by shutdown is offered to another worker.
const NAK_DELAY: Duration = Duration::from_secs(2);

pub(crate) struct NatsIntake {
    pub(crate) config: NatsConfig,
    pub(crate) checked: PathBuf,
    pub(crate) health: Arc<Health>,
    /// Given the client once connected (the shared session seats use it),
    /// with a sender to say when they are ready: no job is pulled before,
    /// so that no session opens outside the shared budget.
    pub(crate) connected: Option<
        tokio::sync::oneshot::Sender<(async_nats::Client, tokio::sync::oneshot::Sender<()>)>,
    >,
}

/// Connects with the configured credentials, retrying until it succeeds.
pub async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("ftpdrop")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(10));
    if let Some(creds) = &cfg.creds_file {
        opts = opts
            .credentials_file(creds)
            .await
            .with_context(|| format!("nats.creds_file: {}", creds.display()))?;
    }
    if let Some(file) = &cfg.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("nats.token_file: cannot read {}", file.display()))?;
        opts = opts.token(token.lines().next().unwrap_or("").to_string());
    }
    opts.connect(cfg.url.as_str()).await.with_context(|| {
        format!(
            "cannot connect to NATS at {}",
            crate::secret::redact_url(&cfg.url)
        )
    })
}

/// A job name from a message id: what a file name can hold.
fn job_name(id: &str) -> String {
    let mut s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert_str(0, "nats-");
    }
    if s.ends_with(".report") {
        s.push_str("-job");
    }
    s
}

impl NatsIntake {
    /// Pulls jobs until `stop`, then waits for the jobs it handed out to
    /// end and answers each message (ack, term or nak).
    pub(crate) async fn run(
        mut self,
        out: mpsc::Sender<Work>,
        permits: Arc<Semaphore>,
        stop: CancellationToken,
    ) {
        let connected = self.connected.take();
        let me = Arc::new(self);
        let mut answering = JoinSet::new();
        let client = tokio::select! {
            c = connect(&me.config) => c,
            _ = stop.cancelled() => return,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "NATS intake not started");
                return;
            }
        };
        if let Some(tx) = connected {
            let (ready, seated) = tokio::sync::oneshot::channel();
            if tx.send((client.clone(), ready)).is_ok() {
                let _ = seated.await;
            }
        }
        let js = jetstream::new(client.clone());
        while !stop.is_cancelled() {
            match me
                .pull(&js, &client, &out, &permits, &stop, &mut answering)
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "NATS consumer lost; fetching it again")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
        }
        // Every job handed out answers its message before we go.
        while answering.join_next().await.is_some() {}
        let _ = client.flush().await;
        info!("NATS intake stopped");
    }

    async fn consumer(&self, js: &jetstream::Context) -> Result<jetstream::consumer::PullConsumer> {
        let c = &self.config;
        let stream = js
            .get_or_create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![c.subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .with_context(|| format!("nats.stream {:?}", c.stream))?;
        stream
            .get_or_create_consumer(
                &c.durable,
                pull::Config {
                    durable_name: Some(c.durable.clone()),
                    filter_subject: c.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(c.ack_wait_secs),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("nats.durable {:?}", c.durable))
    }

    /// One consumer's life: fetch a message whenever a job permit is free.
    async fn pull(
        self: &Arc<Self>,
        js: &jetstream::Context,
        client: &async_nats::Client,
        out: &mpsc::Sender<Work>,
        permits: &Arc<Semaphore>,
        stop: &CancellationToken,
        answering: &mut JoinSet<()>,
    ) -> Result<()> {
        let consumer = self.consumer(js).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1)
            .heartbeat(HEARTBEAT)
            .expires(HEARTBEAT * 6)
            .messages()
            .await
            .context("cannot pull from the consumer")?;
        info!(stream = %self.config.stream, durable = %self.config.durable, "pulling jobs from NATS");
        loop {
            self.health.beat(Loop::Intake);
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.cancelled() => return Ok(()),
            };
            let next = tokio::select! {
                m = messages.next() => m,
                _ = stop.cancelled() => return Ok(()),
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // A missed heartbeat (a stalled consumer) or a lost
                    // connection: start over with a fresh consumer.
                    return Err(anyhow::anyhow!(e)).context("the NATS message stream failed");
                }
                None => return Ok(()),
            };
            while answering.try_join_next().is_some() {}
            if let Some((work, answer)) = self.claim(msg, client.clone(), permit).await {
                if out.send(work).await.is_err() {
                    return Ok(());
                }
                answering.spawn(answer);
            }
        }
    }

    /// Turns a message into a claimed job, and the task that answers the
    /// message once the job ends. `None` when the message was answered here.
    async fn claim(
        self: &Arc<Self>,
        msg: jetstream::Message,
        client: async_nats::Client,
        permit: OwnedSemaphorePermit,
    ) -> Option<(Work, impl std::future::Future<Output = ()> + Send + 'static)> {
        let (seq, delivered, published) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                i.delivered,
                i.published.unix_timestamp_nanos(),
            ),
            Err(e) => {
                warn!(error = %e, "a NATS message without JetStream metadata; ignored");
                return None;
            }
        };
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| format!("nats-{seq}"));
        let name = job_name(&id);
        let path = self.checked.join(format!("{name}.json"));
        let paths = JobPaths::for_claimed(&path);

        // Done here before (the ack was lost): answer again, run nothing.
        if let Ok(r) = crate::report::ReceiptHead::load(&paths.receipt) {
            if r.state.is_final() {
                debug!(job = %name, "NATS job delivered again after it ended; acking");
                publish_receipt(&client, &self.config, &name, &paths.receipt).await;
                let _ = msg.ack_with(final_ack(r.state)).await;
                return None;
            }
        }
        let claimed = {
            let me = self.clone();
            let payload = msg.payload.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                me.write_claimed(&path, &payload, published, delivered > 1)
            })
            .await
        };
        let lock = match claimed {
            Ok(Ok(Some(lock))) => lock,
            Ok(Ok(None)) => {
                // Another process on this `checked/` runs it.
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                return None;
            }
            Ok(Err(e)) => {
                warn!(job = %name, error = %format!("{e:#}"), "cannot claim a NATS job; it will be delivered again");
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                return None;
            }
            Err(e) => {
                warn!(job = %name, error = %e, "cannot claim a NATS job");
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                return None;
            }
        };
        info!(job = %name, delivered, "claimed job from NATS");
        let (tx, rx) = oneshot::channel();
        let work = Work {
            path,
            lock: Some(lock),
            permit,
            done: Some(tx),
        };
        let cfg = self.config.clone();
        let answer = async move {
            let every = Duration::from_secs(cfg.ack_wait_secs.max(3)) / 3;
            let mut rx = rx;
            let state = loop {
                tokio::select! {
                    s = &mut rx => break s.unwrap_or(JobState::Running),
                    _ = tokio::time::sleep(every) => {
                        if let Err(e) = msg.ack_with(AckKind::Progress).await {
                            debug!(job = %name, error = %e, "in-progress ack failed");
                        }
                    }
                }
            };
            if state.is_final() {
                publish_receipt(&client, &cfg, &name, &paths.receipt).await;
                // Acked for sure before the receipt counts as delivered.
                let acked = if state == JobState::Invalid {
                    msg.ack_with(AckKind::Term).await
                } else {
                    msg.double_ack().await
                };
                if let Err(e) = acked {
                    warn!(job = %name, error = %e, "cannot ack a finished NATS job; it may be delivered again (and settled without uploading)");
                }
            } else {
                let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                info!(job = %name, "NATS job interrupted; handed back to the queue");
            }
        };
        Some((work, answer))
    }

    /// Writes the message as a claimed job (owner-only) with a receipt that
    /// carries the run's identity, and locks it. An existing claimed file
    /// (an earlier delivery to this instance) is kept: its journal resumes.
    fn write_claimed(
        &self,
        path: &Path,
        payload: &[u8],
        published_nanos: i128,
        redelivered: bool,
    ) -> Result<Option<std::fs::File>> {
        let paths = JobPaths::for_claimed(path);
        if !path.exists() {
            write_atomic(path, payload)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let Some(lock) = crate::intake::lock(path)? else {
            return Ok(None);
        };
        if !paths.receipt.exists() {
            let mut r = Receipt::new(&paths.name, path);
            // Every worker derives the same temp names from the same message.
            r.claimed_at = rfc3339(published_nanos);
            r.settle_published = redelivered;
            crate::report::write_receipt(&paths.receipt, &r)
                .with_context(|| format!("cannot write {}", paths.receipt.display()))?;
        }
        Ok(Some(lock))
    }
}

/// The ack for a job that ended: invalid jobs are terminated, never redelivered.
fn final_ack(state: JobState) -> AckKind {
    if state == JobState::Invalid {
        AckKind::Term
    } else {
        AckKind::Ack
    }
}

async fn publish_receipt(client: &async_nats::Client, cfg: &NatsConfig, job: &str, receipt: &Path) {
    let Ok(bytes) = std::fs::read(receipt) else {
        return;
    };
    let subject = format!("{}.{job}", cfg.receipts_subject);
    if let Err(e) = client.publish(subject, bytes.into()).await {
        warn!(job, error = %e, "cannot publish the receipt to NATS");
    }
}

/// The message's publish time (nanoseconds since the epoch), as the receipt's `claimed_at`.
fn rfc3339(nanos: i128) -> String {
    let nanos = u64::try_from(nanos).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(nanos);
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_from_message_ids() {
        assert_eq!(job_name("order-17"), "order-17");
        assert_eq!(job_name("a/b c"), "a_b_c");
        assert_eq!(job_name(".hidden"), "nats-.hidden");
        assert_eq!(job_name("x.report"), "x.report-job");
        assert_eq!(job_name(""), "nats-");
    }
}
