//! `submit`: job files validated, then handed to the daemon through the
//! inbox or NATS; with `--wait`, followed to their end.

use anyhow::{Context, Result};
use ftpdrop::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How `submit` hands jobs over.
pub struct Handing {
    /// Publish to NATS instead of the inbox.
    pub nats: bool,
    /// Follow each job to its end.
    pub wait: bool,
    /// Leave jobs in the inbox even when no daemon watches it.
    pub queue: bool,
}

/// `ftpdrop submit`: validate, then the inbox (atomically) or NATS.
pub fn submit(config: Option<&Path>, how: Handing, files: &[PathBuf]) -> Result<ExitCode> {
    let config = Config::load(config)?;
    if !how.nats && !how.queue && !watched(&config) {
        anyhow::bail!(
            "no ftpdrop daemon runs on {} (none is advertised in {}), so nothing would pick \
             up a job left in {}; start one (`ftpdrop run --config ...`), check --config, or \
             pass --queue to leave the jobs for a daemon that starts later",
            config.checked.display(),
            ftpdrop::status::instances::folder(&config.checked).display(),
            config.inbox.display()
        );
    }
    if !how.nats {
        config.create_folders()?;
    }
    super::runtime()?.block_on(hand_over(&config, how.nats, how.wait, files))
}

/// Whether a daemon runs on the config's folders; one started a moment
/// ago (`ftpdrop run &` just before) gets a few seconds to say so.
fn watched(config: &Config) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        if !ftpdrop::status::instances::running(&config.checked).is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

async fn hand_over(config: &Config, nats: bool, wait: bool, files: &[PathBuf]) -> Result<ExitCode> {
    let mut jobs = Vec::new();
    let mut ok = true;
    for f in files {
        // Exactly as `validate` checks it, local files included.
        if let Err(problems) = super::check::validate_file(f, config) {
            ok = false;
            println!("{}: invalid", f.display());
            for p in problems {
                println!("  {p}");
            }
            continue;
        }
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into());
        jobs.push((stem, bytes));
    }
    if !ok {
        return Ok(ExitCode::from(1));
    }
    if nats {
        let Some(n) = &config.nats else {
            anyhow::bail!("--nats: the configuration has no `nats` section");
        };
        let client = ftpdrop::intake::nats::connect(n).await?;
        let js = async_nats::jetstream::new(client);
        for (stem, bytes) in jobs {
            use sha2::Digest;
            // The same file submitted twice is one job (JetStream de-duplicates by id).
            let id = format!(
                "{stem}-{}",
                &hex::encode(sha2::Sha256::digest(&bytes))[..12]
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            js.publish_with_headers(n.subject.clone(), headers, bytes.into())
                .await
                .context("cannot publish the job")?
                .await
                .context("JetStream did not store the job")?;
            println!("{id}");
        }
    } else {
        let mut names = Vec::new();
        for (stem, bytes) in jobs {
            let name =
                ftpdrop::intake::submit::into_inbox(&config.inbox, &config.checked, &stem, &bytes)?;
            println!("{name}");
            names.push(name);
        }
        if wait && !wait_for(config, &names).await {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for each job's receipt to be final, rendering progress from the
/// status API (or from the receipt when no daemon answers). True if all done.
async fn wait_for(config: &Config, names: &[String]) -> bool {
    use ftpdrop::status::client;
    use ftpdrop::status::progress::Renderer;
    let mut bars = Renderer::new();
    let mut pending: Vec<String> = names.to_vec();
    let mut all_done = true;
    while !pending.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for name in pending {
            let cfg = config.clone();
            let n = name.clone();
            let got = tokio::task::spawn_blocking(move || client::job(&cfg, &n))
                .await
                .ok()
                .flatten();
            let Some((v, _)) = got else {
                still.push(name);
                continue;
            };
            let updates = client::progress(&name, &v);
            bars.job(&name, updates.len());
            for u in &updates {
                bars.update(u);
            }
            let state = v["state"].as_str().unwrap_or("running").to_string();
            if state == "running" {
                still.push(name);
            } else {
                bars.job_done(&name, &state);
                println!("{}", client::summary_line(&v));
                all_done &= state == "done";
            }
        }
        pending = still;
    }
    all_done
}
