//! Progress on a terminal for `ftpdrop once` and `ftpdrop submit --wait`:
//! one bar per running entry and one per job (indicatif); when stderr is
//! not a terminal, plain progress lines instead (one per entry every few
//! seconds, and one when it ends).
//!
//! [`Renderer`] takes updates; [`follow`] feeds it from the event stream
//! (`once`), and the `submit --wait` loop from the status API or receipts.

use crate::events::{Event, Events};
use crate::job::progress::Stage;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is written per entry.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What one update says about an entry.
#[derive(Debug, Clone)]
pub struct Update {
    pub(crate) job: String,
    pub(crate) entry: usize,
    pub(crate) remote_path: String,
    pub(crate) stage: Stage,
    pub(crate) sent: u64,
    pub(crate) total: u64,
    pub(crate) rate_bps: u64,
    pub(crate) error: Option<String>,
}

struct Bar {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    ended: bool,
}

pub struct Renderer {
    multi: Option<MultiProgress>,
    jobs: HashMap<String, (ProgressBar, usize, usize)>,
    bars: HashMap<(String, usize), Bar>,
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

impl Renderer {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Renderer {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)));
        Renderer {
            multi,
            jobs: HashMap::new(),
            bars: HashMap::new(),
        }
    }

    /// Tells the renderer a job has `entries` entries (for its overall bar).
    pub fn job(&mut self, job: &str, entries: usize) {
        let Some(multi) = &self.multi else {
            return;
        };
        if self.jobs.contains_key(job) {
            return;
        }
        let bar = multi.add(ProgressBar::new(entries as u64));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} entries {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(job.to_string());
        self.jobs.insert(job.to_string(), (bar, entries, 0));
    }

    pub fn update(&mut self, u: &Update) {
        let key = (u.job.clone(), u.entry);
        let multi = self.multi.clone();
        let b = self.bars.entry(key).or_insert_with(|| Bar {
            bar: multi.map(|m| {
                let bar = m.add(ProgressBar::new(u.total.max(1)));
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(u.remote_path.clone());
                bar
            }),
            last_line: None,
            ended: false,
        });
        if b.ended {
            return;
        }
        let end = u.stage.is_final();
        match &b.bar {
            Some(bar) => {
                bar.set_length(u.total.max(1));
                bar.set_position(u.sent.min(u.total.max(1)));
                if end {
                    let msg = match (&u.error, u.stage) {
                        (Some(e), Stage::Failed) => format!("failed: {e}"),
                        (_, s) => s.name().to_string(),
                    };
                    bar.finish_with_message(msg);
                } else if u.stage != Stage::Uploading {
                    bar.set_message(u.stage.name());
                } else {
                    bar.set_message("");
                }
            }
            None => {
                let due = b.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if end || (u.stage == Stage::Uploading && due) {
                    b.last_line = Some(Instant::now());
                    let pct = if u.total > 0 {
                        100.0 * u.sent as f64 / u.total as f64
                    } else {
                        100.0
                    };
                    let mut line = format!(
                        "{} [{}] {}: {} {:.0}% ({} of {})",
                        u.job,
                        u.entry,
                        u.remote_path,
                        u.stage.name(),
                        pct,
                        human(u.sent),
                        human(u.total)
                    );
                    if u.rate_bps > 0 && !end {
                        let eta = u.total.saturating_sub(u.sent) / u.rate_bps.max(1);
                        line.push_str(&format!(", {}/s, ETA {eta} s", human(u.rate_bps)));
                    }
                    if let Some(e) = u.error.as_ref().filter(|_| u.stage == Stage::Failed) {
                        line.push_str(&format!(": {e}"));
                    }
                    eprintln!("{line}");
                }
            }
        }
        if end {
            b.ended = true;
            if let Some((bar, _, done)) = self.jobs.get_mut(&u.job) {
                *done += 1;
                bar.set_position(*done as u64);
            }
            if self.multi.is_none() {
                // Plain lines keep nothing of an ended entry: a job of
                // 100,000 entries would keep 100,000 of them.
                self.bars.remove(&(u.job.clone(), u.entry));
            }
        }
    }

    /// The job ended: its bar shows the final state.
    pub fn job_done(&mut self, job: &str, state: &str) {
        if let Some((bar, _, _)) = self.jobs.get(job) {
            bar.finish_with_message(state.to_string());
        }
    }
}

/// Renders the event stream until it closes.
pub fn follow(events: &Events) -> tokio::task::JoinHandle<()> {
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        let mut r = Renderer::new();
        let mut paths: HashMap<(String, usize), String> = HashMap::new();
        let mut totals: HashMap<(String, usize), u64> = HashMap::new();
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            match &*ev {
                Event::JobStarted { job, entries, .. } => r.job(job, *entries),
                Event::EntryStage {
                    job,
                    entry,
                    remote_path,
                    stage,
                    ..
                } => {
                    paths.insert((job.clone(), *entry), remote_path.clone());
                    if *stage == Stage::Uploading || *stage == Stage::Verifying {
                        let total = totals.get(&(job.clone(), *entry)).copied().unwrap_or(0);
                        r.update(&Update {
                            job: job.clone(),
                            entry: *entry,
                            remote_path: remote_path.clone(),
                            stage: *stage,
                            sent: if *stage == Stage::Verifying { total } else { 0 },
                            total,
                            rate_bps: 0,
                            error: None,
                        });
                    }
                }
                Event::Progress {
                    job,
                    entry,
                    bytes_sent,
                    bytes_total,
                    rate_bps,
                    ..
                } => {
                    totals.insert((job.clone(), *entry), *bytes_total);
                    r.update(&Update {
                        job: job.clone(),
                        entry: *entry,
                        remote_path: paths
                            .get(&(job.clone(), *entry))
                            .cloned()
                            .unwrap_or_default(),
                        stage: Stage::Uploading,
                        sent: *bytes_sent,
                        total: *bytes_total,
                        rate_bps: *rate_bps,
                        error: None,
                    });
                }
                Event::EntryDone {
                    job,
                    entry,
                    remote_path,
                    bytes,
                    skipped,
                    ..
                } => r.update(&Update {
                    job: job.clone(),
                    entry: *entry,
                    remote_path: remote_path.clone(),
                    stage: if *skipped {
                        Stage::Skipped
                    } else {
                        Stage::Done
                    },
                    sent: *bytes,
                    total: *bytes,
                    rate_bps: 0,
                    error: None,
                }),
                Event::EntryFailed {
                    job,
                    entry,
                    remote_path,
                    bytes_total,
                    error,
                    ..
                } => r.update(&Update {
                    job: job.clone(),
                    entry: *entry,
                    remote_path: remote_path.clone(),
                    stage: Stage::Failed,
                    sent: 0,
                    total: *bytes_total,
                    rate_bps: 0,
                    error: Some(error.clone()),
                }),
                Event::JobFinished { job, state, .. } => r.job_done(job, state.name()),
                _ => {}
            }
        }
    })
}
