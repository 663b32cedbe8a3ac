//! What a partner's process expects of a delivery, on real servers: names
//! from templates, checksum sidecars, done markers (once, after every file,
//! across `kill -9`), kept modification times and permissions, and
//! `if_exists: skip_if_identical`. Every check reads the server's disk.

use super::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The claim day the job's `{date:%Y-%m-%d}` became.
fn claim_day(r: &Receipt) -> String {
    chrono::DateTime::parse_from_rfc3339(&r.claimed_at)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

pub(super) async fn conventions(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("delivery");
    let a = b"id;sum\n1;10\n2;20\n".to_vec();
    let b = support::random_bytes(70_000, 23);
    let c = "Отчёт за квартал\n".as_bytes().to_vec();
    let (la, lb, lc) = (
        w.local("a.csv", &a),
        w.local("b.bin", &b),
        w.local("План отчёт 2024.txt", &c),
    );
    let server = t.server_json();
    let folder = format!("{rel}/{{date:%Y-%m-%d}}");
    let doc = json!({
        "done_marker": {"name": "{job}.ok", "content": "manifest"},
        "entries": [
            {"server": server, "sidecar": "sha256",
             "file": {"local_path": la, "server_path": folder, "remote_name": "{stem}_{job}{ext}"}},
            {"server": server, "file": {"local_path": lb, "server_path": folder}},
            {"server": server, "file": {"local_path": lc, "server_path": folder}},
        ]
    });
    let r = w.run_doc("deliv", "deliv", doc, |_| {}).await;
    all_done(&r)?;
    let day = claim_day(&r);
    let dir = disk.join(&day);
    same_bytes(&dir.join("a_deliv.csv"), &a)?;
    same_bytes(&dir.join("b.bin"), &b)?;
    same_bytes(&dir.join("План отчёт 2024.txt"), &c)?;
    same_bytes(
        &dir.join("a_deliv.csv.sha256"),
        format!("{}  a_deliv.csv\n", sha256_hex(&a)).as_bytes(),
    )?;
    let manifest: Value = serde_json::from_slice(&read(&dir.join("deliv.ok"))?)
        .map_err(|e| format!("deliv.ok is not JSON: {e}"))?;
    let files = manifest["files"].as_array().cloned().unwrap_or_default();
    let want = [
        ("a_deliv.csv", &a),
        ("b.bin", &b),
        ("План отчёт 2024.txt", &c),
    ];
    ensure(files.len() == want.len(), || {
        format!("the manifest lists {} files: {manifest}", files.len())
    })?;
    for (f, (name, bytes)) in files.iter().zip(want) {
        ensure(
            f["name"] == name
                && f["bytes"] == bytes.len() as u64
                && f["sha256"] == sha256_hex(bytes).as_str(),
            || format!("manifest entry {f} does not describe {name}"),
        )?;
    }
    let made: Vec<Option<&str>> = r.entries.iter().map(|e| e.made.as_deref()).collect();
    ensure(
        made == [None, None, None, Some("sidecar"), Some("done_marker")],
        || format!("receipt entries: {made:?}"),
    )?;
    // The marker went last: its time on the server is no earlier than any file's.
    let mtime = |n: &str| {
        std::fs::metadata(dir.join(n))
            .and_then(|m| m.modified())
            .ok()
    };
    let marker_at = mtime("deliv.ok");
    for n in [
        "a_deliv.csv",
        "b.bin",
        "План отчёт 2024.txt",
        "a_deliv.csv.sha256",
    ] {
        ensure(mtime(n) <= marker_at, || {
            format!("{n} is newer than the marker")
        })?;
    }
    no_temp_files(&disk)?;
    let generated = w.dir.path().join("daemon-deliv/checked/deliv.generated");
    ensure(!generated.exists(), || {
        format!("{} was left behind", generated.display())
    })?;
    Ok(format!(
        "in {rel}/{day}: 3 files, their sidecar and deliv.ok (manifest)"
    ))
}

/// Sets a file's modification time (seconds since the epoch).
fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn mtime_secs(p: &Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// 2021-02-03 04:05:06 UTC.
const OLD: u64 = 1_612_325_106;

pub(super) async fn keep_and_skip(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("keep");
    let mut notes = Vec::new();

    // A named server that asks for the time and a mode.
    let body = support::random_bytes(5000, 31);
    let local = w.local("kept.bin", &body);
    set_mtime(&local, OLD);
    let mut def = t.server_json();
    def["port"] = json!(t.port);
    def["preserve_mtime"] = json!(true);
    def["chmod"] = json!("640");
    let named: ftpdrop::config::ServerDef =
        serde_json::from_value(def).map_err(|e| format!("server definition: {e}"))?;
    let entry = json!({"server": "partner", "file": {"local_path": local, "server_path": rel}});
    let r = w
        .run("keep", vec![entry], |c| {
            c.servers.insert("partner".into(), named);
        })
        .await;
    all_done(&r)?;
    let on_disk = disk.join("kept.bin");
    same_bytes(&on_disk, &body)?;
    let warnings = r.entries[0].warnings.join("; ");
    let mode = std::fs::metadata(&on_disk)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    match (mode == 0o640, warnings.contains("permissions")) {
        (true, false) => notes.push("chmod 640 set".to_string()),
        (false, true) => notes.push("chmod refused (warned)".to_string()),
        _ => return Err(format!("mode {mode:o} on disk, warnings: {warnings:?}")),
    }
    match (
        mtime_secs(&on_disk) == Some(OLD),
        warnings.contains("modification time"),
    ) {
        (true, false) => notes.push("mtime kept".to_string()),
        (false, true) => notes.push("mtime refused (warned)".to_string()),
        _ => {
            return Err(format!(
                "mtime {:?} on disk (want {OLD}), warnings: {warnings:?}",
                mtime_secs(&on_disk)
            ))
        }
    }

    // The default (an inline server): the time where the server lists MFMT,
    // and no warning where it does not.
    let plain = w.local("plain.txt", b"plain\n");
    set_mtime(&plain, OLD);
    let r = w.run("default", vec![t.entry(&plain, &rel)], |_| {}).await;
    all_done(&r)?;
    ensure(r.entries[0].warnings.is_empty(), || {
        format!("warnings by default: {:?}", r.entries[0].warnings)
    })?;
    notes.push(match mtime_secs(&disk.join("plain.txt")) == Some(OLD) {
        true => "default: mtime kept (MFMT)".into(),
        false => "default: mtime not kept (no MFMT)".into(),
    });

    // Nothing sent twice: the same file again is skipped as identical.
    let again = |job: &str, bytes: &[u8]| {
        let local = w.local(&format!("{job}/kept.bin"), bytes);
        let mut e = t.entry(&local, &rel);
        e["if_exists"] = json!("skip_if_identical");
        (job.to_string(), e)
    };
    let (job, e) = again("same", &body);
    let r = w.run(&job, vec![e], |_| {}).await;
    let e0 = &r.entries[0];
    ensure(
        e0.state == EntryState::Skipped && e0.skipped.as_deref() == Some("identical"),
        || {
            format!(
                "the same file again: {:?} {:?} {:?}",
                e0.state, e0.skipped, e0.error
            )
        },
    )?;
    ensure(
        !t.hashes || e0.verification.iter().any(|v| v != "size"),
        || {
            format!(
                "identical by {:?} only, where the server hashes",
                e0.verification
            )
        },
    )?;
    // Other bytes of the same size: replaced where the server can hash.
    let mut changed = body.clone();
    changed[100] ^= 0xff;
    let (job, e) = again("changed", &changed);
    let r = w.run(&job, vec![e], |_| {}).await;
    let e0 = &r.entries[0];
    if t.hashes {
        ensure(e0.state == EntryState::Done, || {
            format!(
                "same size, other bytes, on a hashing server: {:?}",
                e0.state
            )
        })?;
        same_bytes(&on_disk, &changed)?;
    } else {
        ensure(e0.state == EntryState::Skipped, || {
            format!("same size without a hash: {:?}", e0.state)
        })?;
    }
    // Another size: replaced.
    let longer = support::random_bytes(6000, 32);
    let (job, e) = again("longer", &longer);
    let r = w.run(&job, vec![e], |_| {}).await;
    all_done(&r)?;
    same_bytes(&on_disk, &longer)?;
    notes.push(format!(
        "skip_if_identical by {}",
        if t.hashes { "size and digest" } else { "size" }
    ));
    no_temp_files(&disk)?;
    Ok(notes.join(", "))
}

/// A job of three files and a manifest marker, killed (`kill -9`) once its
/// files are all published and while the marker is on its way (the proxy
/// slows uploads to 200 B/s, and the manifest is ~600 bytes). After the
/// restart the marker is on the server once, whole, and the commands the
/// proxy saw put its rename after every file's.
pub(super) async fn marker_kill9(t: &Target) -> Outcome {
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (rel, disk) = t.dir("marker-kill9");
    let upstream = format!("{}:{}", t.host, t.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let mut via = t.clone();
    via.port = proxy.addr.port();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("part{i}.txt"), format!("part {i}\n").into_bytes()))
        .collect();
    let entries: Vec<Value> = files
        .iter()
        .map(|(n, b)| {
            let p = base.path().join("local").join(n);
            support::write_file(&p, b);
            via.entry(&p, &rel)
        })
        .collect();
    let (cfg, inbox, checked) = (
        base.path().join("cfg.json"),
        base.path().join("files"),
        base.path().join("checked"),
    );
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "inbox": inbox, "checked": checked, "settle_ms": 0,
            "retry": {"initial_backoff_ms": 100, "max_backoff_ms": 1000},
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        inbox.join("m9.json"),
        serde_json::to_vec(&json!({
            "done_marker": {"name": "{job}.ok", "content": "manifest"},
            "entries": entries,
        }))
        .unwrap(),
    )
    .unwrap();
    proxy.throttle(200);
    let spawn = |name: &str| spawn_daemon(&cfg, &base.path().join(format!("{name}.log")));
    let journal = checked.join("m9.journal");
    let files_done = || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        (0..3).all(|i| {
            text.lines()
                .any(|l| l.contains(&format!("\"index\":{i},")) && l.contains("\"state\":\"done\""))
        })
    };
    let mut run1 = spawn("run1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_done() {
        if Instant::now() > deadline || run1.try_wait().ok().flatten().is_some() {
            let _ = run1.kill();
            let _ = run1.wait();
            return Err("the files were not all done within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The marker's upload is under way: an upload command after the
    // files' three renames.
    let marker_upload = || {
        let seen = proxy.commands_seen();
        let third = seen
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with("RNTO"))
            .nth(2)
            .map(|(i, _)| i);
        third.is_some_and(|i| {
            seen[i..]
                .iter()
                .any(|c| c.starts_with("STOR") || c.starts_with("APPE"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker_upload() {
        if Instant::now() > deadline {
            let _ = run1.kill();
            let _ = run1.wait();
            return Err(format!(
                "no upload of the marker seen: {:?}",
                proxy.commands_seen()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = run1.kill();
    let _ = run1.wait();
    let marker = disk.join("m9.ok");
    let before = marker.exists();
    ensure(!before, || {
        "the marker was published before the kill; the kill came too late to test anything".into()
    })?;
    for (n, b) in &files {
        same_bytes(&disk.join(n), b)?;
    }
    let run2 = spawn("run2");
    let r = final_receipt(
        run2,
        &checked.join("m9.report.json"),
        Duration::from_secs(90),
    )
    .await?;
    all_done(&r)?;
    let manifest: Value =
        serde_json::from_slice(&read(&marker)?).map_err(|e| format!("m9.ok is not JSON: {e}"))?;
    ensure(
        manifest["files"].as_array().map(Vec::len) == Some(3),
        || format!("manifest: {manifest}"),
    )?;
    // Exactly once: one rename onto the marker's name in both runs, and
    // after every file's.
    let seen = proxy.commands_seen();
    let renames: Vec<(usize, &String)> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("RNTO"))
        .collect();
    let onto_marker: Vec<usize> = renames
        .iter()
        .filter(|(_, c)| c.ends_with("/m9.ok"))
        .map(|(i, _)| *i)
        .collect();
    ensure(onto_marker.len() == 1, || {
        format!("{} renames onto the marker: {renames:?}", onto_marker.len())
    })?;
    for (n, _) in &files {
        let at = renames.iter().find(|(_, c)| c.ends_with(&format!("/{n}")));
        ensure(at.is_some_and(|(i, _)| *i < onto_marker[0]), || {
            format!("{n} was not renamed before the marker: {renames:?}")
        })?;
    }
    no_temp_files(&disk)?;
    ensure(!checked.join("m9.generated").exists(), || {
        "the made files were left in checked/".into()
    })?;
    Ok(format!(
        "killed {} ms into the marker's upload, the files in; after the restart one rename onto it, after the 3 files'",
        300
    ))
}

/// A publish whose rename's reply never came, or whose run died before it
/// recorded it: the job's state says "publishing", the temp file is gone and
/// the final name holds a file of the right size. Ours, it is settled
/// without a byte sent or a second rename (the file untouched); another of
/// the same size (there before, or put there since) is told apart where the
/// server hashes, and replaced. The state is what a `kill -9` leaves, built
/// in the job's journal as `tests/faults.rs` builds it.
pub(super) async fn interrupted_publish(t: &Target) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    let w = Work::new();
    let (rel, disk) = t.dir("publish-cut");
    t.make_dir_on_disk(&disk);
    let owner = std::fs::metadata(&t.root).map_err(|e| e.to_string())?;
    let body = support::random_bytes(5000, 41);
    let mut other = body.clone();
    other[2500] ^= 0xff;
    let cases: &[(&str, &[u8])] = if t.hashes {
        &[("ours", &body), ("other", &other)]
    } else {
        // Without a hash, a file of the same size is taken for ours: the
        // settling by size is all there is to check.
        &[("ours", &body)]
    };
    let mut notes = Vec::new();
    for (job, on_server) in cases {
        let local = w.local(&format!("{job}/pub.bin"), &body);
        let cfg = w.config(job, |_| {});
        let job_file = cfg.checked.join(format!("{job}.json"));
        let bytes = serde_json::to_vec(&json!([t.entry(&local, &rel)])).unwrap();
        std::fs::write(&job_file, &bytes).unwrap();
        let parsed = ftpdrop::job::parse(&bytes, &cfg).map_err(|e| format!("{e:?}"))?;
        let mut entry = EntryReport::pending(&parsed.entries[0]);
        entry.attempts = 1;
        entry.source = Some(ftpdrop::report::Stamp::of(
            &std::fs::metadata(&local).unwrap(),
        ));
        entry.publishing = true;
        let mut receipt = Receipt::new(job, &job_file);
        receipt.entries = vec![entry];
        ftpdrop::store::write_atomic(
            &cfg.checked.join(format!("{job}.report.json")),
            &serde_json::to_vec_pretty(&receipt).unwrap(),
        )
        .unwrap();
        let fin = disk.join("pub.bin");
        std::fs::write(&fin, on_server).unwrap();
        let _ = std::os::unix::fs::chown(&fin, Some(owner.uid()), Some(owner.gid()));
        let meta = std::fs::metadata(&fin).unwrap();
        let before = (meta.ino(), meta.mtime(), meta.mtime_nsec());

        let r = Work::once(cfg, job).await;
        all_done(&r)?;
        same_bytes(&fin, &body)?;
        let e = &r.entries[0];
        ensure(e.attempts == 2, || {
            format!("{job}: {} attempts", e.attempts)
        })?;
        ensure(
            !t.hashes || e.verification.iter().any(|v| v != "size"),
            || {
                format!(
                    "{job}: checked by {:?} only on a hashing server",
                    e.verification
                )
            },
        )?;
        let meta = std::fs::metadata(&fin).unwrap();
        let after = (meta.ino(), meta.mtime(), meta.mtime_nsec());
        if *job == "ours" {
            ensure(after == before, || {
                "ours: the final file was written again".into()
            })?;
            notes.push(format!("ours settled by {:?}", e.verification));
        } else {
            ensure(after != before, || "other: left in place".into())?;
            notes.push(format!(
                "another file of the same size told apart by {:?} and replaced",
                e.verification
            ));
        }
    }
    no_temp_files(&disk)?;
    Ok(notes.join("; "))
}
