//! `ftpdrop status` and `submit --wait` asking a running daemon through its
//! status API, with the receipts in `checked/` as the answer when no daemon
//! listens; and the tables they print.

use crate::config::Config;
use crate::status::{summary_of, Board, JobSummary};
use serde_json::Value;
use std::time::Duration;

/// A running daemon's API, as the configuration names it.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Receipts,
}

impl Client {
    /// Every instance's API: the configured address first, then those the
    /// instances running on this host advertise (see
    /// [`crate::status::instances`]); none when the configuration turns the
    /// API off. An ended instance's port may since belong to another
    /// program, which is never sent the token.
    pub(crate) fn all(config: &Config) -> Vec<Client> {
        let Some(configured) = config.status.listen_addr().ok().flatten() else {
            return Vec::new();
        };
        let mut addrs = vec![configured];
        for addr in crate::status::instances::running(&config.checked)
            .into_iter()
            .filter_map(|i| i.addr)
        {
            // Instances listen on loopback only when they move: an
            // advertisement naming another host was not written by one.
            if addr.ip().is_loopback() && !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs.into_iter().map(|a| Client::at(config, a)).collect()
    }

    fn at(config: &Config, addr: std::net::SocketAddr) -> Client {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        // Never generated here: only the daemon makes the token.
        let path = config
            .status
            .token_file
            .clone()
            .unwrap_or_else(|| crate::status::auth::default_token_file(&config.checked));
        let token = crate::status::auth::load_or_create(&path, false).ok();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: format!("http://{host}"),
            token,
            agent,
        }
    }

    /// GET `path`: the JSON and the HTTP status; `None` if no daemon answers.
    pub(crate) fn get(&self, path: &str) -> Option<(u16, Value)> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        // Signed over the daemon's nonce, never the token itself: a process
        // that took the port while the daemon was down learns nothing it
        // can use.
        if let Some(t) = &self.token {
            let mut r = self
                .agent
                .get(format!("{}/api/auth/nonce", self.base))
                .call()
                .ok()?;
            let nonce = r.body_mut().read_json::<Value>().ok()?["nonce"]
                .as_str()?
                .to_string();
            let signed = crate::status::auth::sign(t, &nonce, "GET", path);
            req = req.header("Authorization", signed);
        }
        let mut resp = req.call().ok()?;
        let status = resp.status().as_u16();
        let v = resp.body_mut().read_json::<Value>().ok()?;
        Some((status, v))
    }
}

/// Jobs, running first then recent, newest first, from every instance:
/// each sees the others' jobs in their receipts, and its own live.
pub fn jobs(config: &Config, limit: usize) -> (Vec<JobSummary>, Source) {
    let mut merged: Vec<JobSummary> = Vec::new();
    let mut answered = 0;
    for c in Client::all(config) {
        let Some((200, v)) = c.get(&format!("/api/jobs?limit={limit}")) else {
            continue;
        };
        let Ok(jobs) = serde_json::from_value::<Vec<JobSummary>>(v) else {
            continue;
        };
        answered += 1;
        for j in jobs {
            match merged.iter_mut().find(|m| m.job == j.job) {
                // The owner's view is the freshest: it is ahead.
                Some(m) if further(&j) > further(m) => *m = j,
                Some(_) => {}
                None => merged.push(j),
            }
        }
    }
    if answered == 1 {
        return (merged, Source::Api);
    }
    if answered > 1 {
        // Running first, then by claim time, newest first.
        merged.sort_by(|a, b| {
            (b.state == crate::report::JobState::Running)
                .cmp(&(a.state == crate::report::JobState::Running))
                .then_with(|| b.claimed_at.cmp(&a.claimed_at))
        });
        merged.truncate(limit);
        return (merged, Source::Api);
    }
    // No daemon answers: the index is brought level here (seconds at a
    // million receipts, where reading them all would take minutes).
    let _ = crate::report::catch_up_index(&config.checked);
    (
        Board::new(config.checked.clone()).list(&crate::history::Query {
            limit,
            ..Default::default()
        }),
        Source::Receipts,
    )
}

/// How far a job's summary has come: a live view is never behind its receipt.
fn further(j: &JobSummary) -> (bool, usize, u64) {
    (
        j.state != crate::report::JobState::Running,
        j.entries_done + j.entries_failed,
        j.bytes_sent,
    )
}

/// One job: the API's view (receipt plus live `progress`, from the instance
/// that runs it), else its receipt.
pub fn job(config: &Config, job: &str) -> Option<(Value, Source)> {
    let mut seen: Option<Value> = None;
    for c in Client::all(config) {
        // Encoded as the server will see it: the signature covers the path.
        let segment: String = job
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        match c.get(&format!("/api/jobs/{segment}")) {
            Some((200, v)) if v.get("progress").is_some_and(|p| !p.is_null()) => {
                return Some((v, Source::Api))
            }
            Some((200, v)) => seen = seen.or(Some(v)),
            _ => {}
        }
    }
    if let Some(v) = seen {
        return Some((v, Source::Api));
    }
    let path = config.checked.join(format!("{job}.report.json"));
    let r = crate::report::Receipt::load(&path).ok()?;
    Some((serde_json::to_value(r).ok()?, Source::Receipts))
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// The jobs as a table.
pub fn jobs_table(jobs: &[JobSummary]) -> String {
    let mut rows = vec![[
        "JOB".to_string(),
        "STATE".into(),
        "ENTRIES".into(),
        "BYTES".into(),
        "FINISHED (or CLAIMED)".into(),
    ]];
    for j in jobs {
        let entries = if j.entries_failed > 0 {
            format!(
                "{}/{} ({} failed)",
                j.entries_done, j.entries_total, j.entries_failed
            )
        } else {
            format!("{}/{}", j.entries_done, j.entries_total)
        };
        rows.push([
            j.job.clone(),
            j.state.name().into(),
            entries,
            format!("{} / {}", human(j.bytes_sent), human(j.bytes_total)),
            j.finished_at
                .clone()
                .unwrap_or_else(|| j.claimed_at.clone()),
        ]);
    }
    table(&rows)
}

/// One job's entries as a table, with live progress where there is some.
pub fn job_table(v: &Value) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "STATE".into(),
        "PROGRESS".into(),
        "REMOTE PATH".into(),
        "DETAIL".into(),
    ]];
    let progress = v["progress"].as_array();
    for (i, e) in v["entries"].as_array().into_iter().flatten().enumerate() {
        let live = progress.and_then(|p| p.get(i));
        let state = live
            .and_then(|p| p["stage"].as_str())
            .or(e["state"].as_str())
            .unwrap_or("?")
            .to_string();
        let size = e["source"]["size"]
            .as_u64()
            .or(e["bytes"].as_u64())
            .unwrap_or(0);
        let (sent, total) = match live {
            Some(p) => (
                p["bytes_sent"].as_u64().unwrap_or(0),
                p["bytes_total"].as_u64().unwrap_or(size),
            ),
            None if e["state"] == "done" => (size, size),
            None => (0, size),
        };
        let pct = (100 * sent).checked_div(total).unwrap_or(0);
        let mut prog = format!("{pct:>3}% {} / {}", human(sent), human(total));
        if let Some(rate) = live.and_then(|p| p["rate_bps"].as_u64()).filter(|r| *r > 0) {
            prog.push_str(&format!(" {}/s", human(rate)));
        }
        let next = live
            .and_then(|p| p["next_attempt_at"].as_str())
            .or(e["next_attempt_at"].as_str())
            .map(|t| format!("next attempt {t}"));
        let detail = match (e["error"].as_str(), next) {
            (Some(err), Some(next)) => format!("{next}; last error: {err}"),
            (Some(err), None) => err.to_string(),
            (None, Some(next)) => next,
            (None, None) => e["url"].as_str().unwrap_or("").to_string(),
        };
        rows.push([
            i.to_string(),
            state,
            prog,
            e["remote_path"].as_str().unwrap_or("").to_string(),
            detail,
        ]);
    }
    let mut out = table(&rows);
    let shown = v["entries"].as_array().map_or(0, Vec::len);
    if let Some(total) = v["entries_total"].as_u64().filter(|t| *t as usize > shown) {
        out.push_str(&format!(
            "(the first {shown} of {total} entries; the receipt has them all)\n"
        ));
    }
    out
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A receipt as a one-line summary, for `submit --wait`.
/// Each entry's progress in a job's status (as [`job`] gives it), for the
/// bars of `submit --wait`: the live figures where the daemon has them,
/// else what the receipt says.
pub fn progress(job: &str, v: &Value) -> Vec<crate::status::progress::Update> {
    use crate::job::progress::Stage;
    let entries = v["entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let live = &v["progress"][i];
            let stage: Stage = serde_json::from_value(live["stage"].clone()).unwrap_or(
                match e["state"].as_str() {
                    Some("done") => Stage::Done,
                    Some("failed") => Stage::Failed,
                    Some("skipped") => Stage::Skipped,
                    _ => Stage::Queued,
                },
            );
            let size = e["source"]["size"]
                .as_u64()
                .or(e["bytes"].as_u64())
                .unwrap_or(0);
            let done_bytes = if stage == Stage::Done { size } else { 0 };
            crate::status::progress::Update {
                job: job.to_string(),
                entry: i,
                remote_path: e["remote_path"].as_str().unwrap_or("").to_string(),
                stage,
                sent: live["bytes_sent"].as_u64().unwrap_or(done_bytes),
                total: live["bytes_total"].as_u64().unwrap_or(size),
                rate_bps: live["rate_bps"].as_u64().unwrap_or(0),
                error: e["error"].as_str().map(str::to_string),
            }
        })
        .collect()
}

/// One line for the job, then what went wrong: an invalid job's problems,
/// each failed or cancelled entry's error.
pub fn summary_line(v: &Value) -> String {
    match serde_json::from_value::<crate::report::Receipt>(v.clone()) {
        Ok(r) => {
            let s = summary_of(&r);
            let mut why = String::new();
            for p in &r.problems {
                why.push_str(&format!("\n  problem: {p}"));
            }
            use crate::report::EntryState;
            let wrong: Vec<_> = r
                .entries
                .iter()
                .filter(|e| matches!(e.state, EntryState::Failed | EntryState::Cancelled))
                .collect();
            // A big job's receipt has them all; a terminal needs the first few.
            const SHOWN: usize = 20;
            for e in wrong.iter().take(SHOWN) {
                let state = if e.state == EntryState::Failed {
                    "failed"
                } else {
                    "cancelled"
                };
                why.push_str(&format!(
                    "\n  entry {} ({}): {state}: {}",
                    e.index,
                    e.remote_path,
                    e.error.as_deref().unwrap_or("no error recorded")
                ));
            }
            if wrong.len() > SHOWN {
                why.push_str(&format!(
                    "\n  ... and {} more (the receipt has them all)",
                    wrong.len() - SHOWN
                ));
            }
            format!(
                "{}: {} ({}/{} entries done{}, {}){why}",
                s.job,
                s.state.name(),
                s.entries_done,
                s.entries_total,
                if s.entries_failed > 0 {
                    format!(", {} failed", s.entries_failed)
                } else {
                    String::new()
                },
                human(s.bytes_sent)
            )
        }
        Err(_) => v.to_string(),
    }
}
