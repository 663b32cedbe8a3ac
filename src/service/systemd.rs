//! systemd's notify protocol (`Type=notify`), through the sd-notify crate.
//!
//! `NOTIFY_SOCKET` set means systemd listens. `WATCHDOG_USEC` is read here
//! rather than through `sd_notify::watchdog_enabled`, which insists on
//! `WATCHDOG_PID` although systemd sets it only in some setups. The
//! watchdog is pinged every `WATCHDOG_USEC`/2, and only while
//! [`Health::check`] says the daemon's loops make progress.

use super::Supervisor;
use crate::health::Health;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

/// How long systemd is asked to wait beyond the grace period for the last
/// receipts to be written and sessions to close.
const STOP_MARGIN: Duration = Duration::from_secs(15);

pub struct Systemd {
    /// `WATCHDOG_USEC`, when systemd asked for pings from this process.
    watchdog: Option<Duration>,
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process.
fn watchdog_from_env() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

impl Systemd {
    /// The supervisor for a process started by systemd (`NOTIFY_SOCKET` set).
    pub fn from_env() -> Option<Arc<Systemd>> {
        std::env::var_os("NOTIFY_SOCKET")?;
        Some(Arc::new(Systemd {
            watchdog: watchdog_from_env(),
        }))
    }

    /// Pings the watchdog every half interval while the loops make progress.
    pub fn spawn_watchdog(&self, health: Arc<Health>) {
        let Some(every) = self.watchdog else {
            return;
        };
        health.watchdog_interval(every);
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            let mut wedged = false;
            loop {
                tick.tick().await;
                match health.check(every) {
                    Ok(()) => {
                        if wedged {
                            tracing::info!("the daemon's loops make progress again");
                            wedged = false;
                        }
                        send(&[NotifyState::Watchdog]);
                    }
                    Err(why) if !wedged => {
                        tracing::error!(error = %why, "not pinging the systemd watchdog");
                        wedged = true;
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

impl Supervisor for Systemd {
    fn ready(&self) {
        send(&[NotifyState::Ready]);
    }

    fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    fn stopping(&self, grace: Duration) {
        let extend = (grace + STOP_MARGIN).as_micros().min(u32::MAX as u128) as u32;
        send(&[
            NotifyState::Stopping,
            NotifyState::ExtendTimeoutUsec(extend),
        ]);
    }

    fn status(&self, line: &str) {
        send(&[NotifyState::Status(line)]);
    }
}
