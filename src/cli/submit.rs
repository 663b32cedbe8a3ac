//! `submit`: job files validated, then handed to the daemon through the
//! inbox or NATS; with `--wait`, followed to their end.

use anyhow::{Context, Result};
use ftpdrop::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `ftpdrop submit`: validate, then the inbox (atomically) or NATS.
pub fn submit(
    config: Option<&Path>,
    nats: bool,
    wait: bool,
    files: &[PathBuf],
) -> Result<ExitCode> {
    let config = Config::load(config)?;
    super::runtime()?.block_on(hand_over(&config, nats, wait, files))
}

async fn hand_over(config: &Config, nats: bool, wait: bool, files: &[PathBuf]) -> Result<ExitCode> {
    let mut jobs = Vec::new();
    let mut ok = true;
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        if let Err(problems) = ftpdrop::job::parse(&bytes, config) {
            ok = false;
            println!("{}: invalid", f.display());
            for p in problems {
                println!("  {p}");
            }
            continue;
        }
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
