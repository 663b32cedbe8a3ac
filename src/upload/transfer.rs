//! One attempt at one entry over one session: the publish protocol.
//!
//! The bytes go to a temporary name in the target directory, are checked,
//! and only then renamed to the final name, so no reader ever sees a partial
//! file under the final name. The temporary name is derived from (run,
//! entry, final path), where the run is the job and the time it was claimed
//! (kept in the receipt): unique per entry and the same after a restart, so
//! a retry or a restarted daemon finds its own partial upload and continues
//! it at the server's SIZE instead of starting from zero, and a temp file is
//! never one this run did not create. A big file may go in segments over
//! several sessions at once (see [`crate::upload::segment`]); the checks and the
//! rename after it are the same.

use crate::ftp::fault::Fault;
use crate::ftp::pool::{Lease, Pool};
use crate::ftp::Session;
use crate::job::progress::Stage;
use crate::job::{join_remote, normalize_dir, Entry, IfExists, Verify};
use crate::report::Stamp;
use crate::upload::segment;
use crate::upload::source;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// What a finished attempt achieved.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) verification: Vec<String>,
    /// Not sent, and why: `exists` or `identical`.
    pub(crate) skipped: Option<&'static str>,
    /// What was asked beyond the bytes and did not happen (see [`crate::ftp::keep`]).
    pub(crate) warnings: Vec<String>,
    /// Bytes the server already had and that were not sent again.
    pub(crate) resumed_from: u64,
    /// Connections the bytes went over (1 unless the upload was segmented).
    pub(crate) segments: usize,
    /// The rename, sent and not yet answered: the caller puts the session
    /// back (the next entry's upload goes out behind it) and then awaits
    /// it with [`Renaming::outcome`]. The entry is done only then.
    pub(crate) renaming: Option<Renaming>,
}

impl Outcome {
    /// The local file's bytes, published and checked by `verification`.
    fn sent(
        bytes: u64,
        sha: String,
        verification: Vec<String>,
        warnings: Vec<String>,
        resumed_from: u64,
        segments: usize,
    ) -> Outcome {
        Outcome {
            bytes,
            sha256: Some(sha),
            verification,
            skipped: None,
            warnings,
            resumed_from,
            segments,
            renaming: None,
        }
    }
}

/// What the scheduler remembers about an entry between attempts (and restarts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    /// The local file when the first attempt started.
    pub(crate) source: Option<Stamp>,
    /// A temp file may exist on the server (an earlier attempt got that far).
    pub(crate) may_have_temp: bool,
    /// An earlier attempt was about to rename; the final file may be ours.
    pub(crate) publishing: bool,
    /// The server refused to resume (proftpd without `AllowStoreRestart`
    /// answers 451 to both REST+STOR and APPE): upload from zero instead.
    pub(crate) no_resume: bool,
    /// The temp file was (being) written in segments: it may have holes, so
    /// its SIZE says nothing about what is there; it is deleted, not resumed.
    pub(crate) segmented: bool,
    /// Which temp name the entry writes (see [`temp_name_at`]): raised when
    /// the server may still hold the last one for a session given up
    /// mid-transfer (vsftpd's upload lock), where an upload to it would
    /// queue behind that session and time out in turn.
    pub(crate) generation: u32,
    /// Temp files of earlier names, still to be removed from the server.
    pub(crate) abandoned_temps: Vec<String>,
}

/// The deterministic temp name of an entry in a run (`job@claimed_at`).
pub fn temp_name(run: &str, entry: &Entry) -> String {
    temp_name_at(run, entry, 0)
}

/// The entry's temp name of `generation` (see [`Memory::generation`]).
pub(crate) fn temp_name_at(run: &str, entry: &Entry, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(run.as_bytes());
    h.update([0]);
    h.update(entry.index.to_le_bytes());
    h.update([0]);
    h.update(entry.remote_path().as_bytes());
    if generation > 0 {
        h.update([0]);
        h.update(generation.to_le_bytes());
    }
    format!(".ftpdrop-{}.part", &hex::encode(h.finalize())[..16])
}

/// Removes the temp files of earlier names (see [`Memory::abandoned_temps`]).
/// One that a session given up may still hold is deleted too, and dropped
/// from the list only if the folder's listing no longer shows it: a Unix
/// server lets the name go at once, while a Windows server refuses to
/// delete an open file with the same 550 as "not there".
async fn remove_abandoned(lease: &mut Lease, memory: &mut Memory) -> Result<(), Fault> {
    let mut left = std::mem::take(&mut memory.abandoned_temps).into_iter();
    while let Some(p) = left.next() {
        let held = lease.is_held(&p);
        let gone = match lease.session().delete(&p).await {
            Ok(()) if held => still_listed(lease, &p).await.map(|listed| !listed),
            Ok(()) => Ok(true),
            Err(f) => Err(f),
        };
        match gone {
            Ok(true) => {}
            Ok(false) => memory.abandoned_temps.push(p),
            Err(f) => {
                memory.abandoned_temps.push(p);
                memory.abandoned_temps.extend(left);
                return Err(f);
            }
        }
    }
    Ok(())
}

/// Does the listing of `path`'s folder show it?
async fn still_listed(lease: &mut Lease, path: &str) -> Result<bool, Fault> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let names = lease.session().names(dir).await?;
    Ok(names.iter().any(|n| n.rsplit('/').next() == Some(name)))
}

/// After the entry's upload: removes its earlier temp files; those the
/// server still shows (held by a session given up) once that session is
/// released, at most the pool's `abandon_hold` later. No session is held
/// while it waits.
pub(crate) async fn discard_abandoned(
    pool: &Arc<Pool>,
    entry: &Entry,
    memory: &mut Memory,
) -> Result<(), Fault> {
    if memory.abandoned_temps.is_empty() {
        return Ok(());
    }
    let mut lease = pool.acquire(&entry.server).await?;
    remove_abandoned(&mut lease, memory).await?;
    drop(lease);
    if memory.abandoned_temps.is_empty() {
        return Ok(());
    }
    let within = pool.abandon_hold() + Duration::from_secs(5);
    for p in memory.abandoned_temps.clone() {
        pool.wait_released(&entry.server, &p, within).await;
    }
    let mut lease = pool.acquire(&entry.server).await?;
    let held: Vec<String> = memory
        .abandoned_temps
        .iter()
        .filter(|p| lease.is_held(p))
        .cloned()
        .collect();
    remove_abandoned(&mut lease, memory).await?;
    // Still held past the hold: no longer ours to wait for.
    memory.abandoned_temps.retain(|p| !held.contains(p));
    Ok(())
}

/// The local file's size and mtime, read from the file `local_roots` allows
/// opening; on a blocking thread (a job's path may be on a slow mount).
async fn local_stamp(entry: &Entry) -> Result<Stamp, Fault> {
    let (index, path, roots) = (
        entry.index,
        entry.local_path.clone(),
        entry.local_roots.clone(),
    );
    let meta = tokio::task::spawn_blocking(move || roots.open(&path).and_then(|f| f.metadata()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| source::read_error(index, &entry.local_path, e))?;
    Ok(Stamp::of(&meta))
}

/// Runs one attempt; `memory` is updated for the next attempt.
///
/// `journal` is called before each step that changes the server: just
/// before the first byte goes to the temp file, before a big file's
/// segments write beyond the end of it, and just before the rename.
/// The caller must make `memory` durable there, because a `kill -9` right
/// after that step leaves the server in a state only `memory` explains: a
/// temp file to resume (not restart), or a final file that is already ours.
///
/// `lease` carries the session; `pool` and `policy` let a big file borrow
/// more sessions of the same server for a segmented upload.
pub(crate) async fn attempt(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    policy: &segment::Policy,
    run: &str,
    entry: &Entry,
    memory: &mut Memory,
    mut journal: impl FnMut(&Memory),
) -> Result<Outcome, Fault> {
    let dirs = lease.dirs().clone();
    let stamp = local_stamp(entry).await?;
    let dir = normalize_dir(&entry.server_path);
    let final_path = join_remote(&dir, &entry.remote_name);
    let mut temp_path = join_remote(&dir, &temp_name_at(run, entry, memory.generation));

    lease.session().check_name(&final_path)?;
    // The local file changed since the first attempt: what the server has is stale.
    let source_changed = memory.source.is_some_and(|s| s != stamp);
    memory.source = Some(stamp);
    if entry.attrs.direct {
        return attempt_direct(lease, entry, memory, &mut journal, stamp, &dir, &final_path).await;
    }

    // An earlier run may have renamed the temp file and died before recording it
    // (or lost the rename's reply). Where the server hashes, its digest tells
    // that file from another of the same size that was there or came since:
    // then the file is sent again.
    if memory.publishing && !source_changed {
        if lease.session().size(&temp_path).await?.is_none()
            && lease.session().size(&final_path).await? == Some(stamp.size)
        {
            let sha = crate::upload::source::hash_file(entry).await?;
            let same =
                crate::upload::verify::same_on_server(lease.session(), entry, &final_path, &sha)
                    .await?;
            if let Some(checks) = same {
                return Ok(Outcome::sent(
                    stamp.size,
                    sha,
                    checks,
                    Vec::new(),
                    stamp.size,
                    1,
                ));
            }
        }
        memory.publishing = false;
    }

    lease.session().mkdir_p(&dir, &dirs).await?;
    remove_abandoned(lease, memory).await?;
    // The temp file of a transfer given up may still be held by the
    // server's session (locked, on vsftpd): an upload to it would queue
    // behind that session. A fresh name instead, and the old one goes later.
    let mut fresh = false;
    if lease.is_held(&temp_path) {
        memory.abandoned_temps.push(temp_path.clone());
        memory.generation += 1;
        temp_path = join_remote(&dir, &temp_name_at(run, entry, memory.generation));
        fresh = true;
    }
    if entry.verify != Verify::None {
        probe_if_worth_it(lease, pool, entry, &dir).await?;
    }

    if let Some(skipped) = existing_final(lease, entry, &final_path, stamp).await? {
        return Ok(skipped);
    }

    let offset = match memory.may_have_temp && !fresh {
        true => resume_offset(lease.session(), memory, &temp_path, source_changed, stamp).await?,
        false => 0,
    };
    memory.may_have_temp = true;
    // A temp file that may have had holes was deleted above.
    memory.segmented = false;
    // Recorded before the temp file exists: a restarted daemon then knows to
    // look for it (and resume, or delete it if it was segmented), and knows
    // which version of the local file it holds (so that a file changed while
    // we were down is sent afresh).
    journal(memory);

    entry.progress.start(offset, stamp.size, 1);
    entry.progress.set_stage(Stage::Uploading);

    let (sent, segments) = if offset == 0
        && entry.verify != Verify::None
        && segment::may_split(lease, &entry.server, policy, stamp.size)
    {
        let mut split = |m: &mut Memory| {
            m.segmented = true;
            journal(m);
        };
        let r = segment::send(
            lease,
            pool,
            policy,
            entry,
            &dir,
            &temp_path,
            stamp.size,
            || split(memory),
        )
        .await;
        match r {
            Ok(s) => (Ok((s.sha256, s.total)), s.segments),
            Err(f) => (Err(f), 1),
        }
    } else {
        (
            send(lease.session(), entry, &temp_path, offset, stamp.size).await,
            1,
        )
    };
    let session = lease.session();
    let (sha, sent_total) = match sent {
        Err(f) if offset > 0 && f.refused_resume() => {
            memory.no_resume = true;
            let mut f = f.context("the server refused to resume; the next attempt starts over");
            // "Not implemented" (500, 502, 504) to REST or APPE is a server
            // without resume, not a refusal of the file: upload it again.
            if f.not_implemented() {
                f.kind = crate::ftp::fault::FaultKind::Transient;
            }
            return Err(f);
        }
        other => other?,
    };

    // Never publish a mix of two versions; the next attempt starts over.
    // `memory.source` stays the stamp the temp file was started from, so
    // the next attempt (or a restarted daemon) sees `source_changed` and
    // deletes the temp file instead of resuming from its mixed bytes.
    unchanged(entry, stamp, sent_total).await?;

    entry.progress.set_stage(Stage::Verifying);
    let warnings = session.keep(&temp_path, &keep_of(entry, stamp)).await?;
    if entry.verify == Verify::None {
        // Asked for by name (a server without SIZE): renamed unchecked.
        memory.publishing = true;
        journal(memory);
        entry.progress.set_stage(Stage::Publishing);
        publish(session, &temp_path, &final_path, entry.if_exists).await?;
        return Ok(unverified(stamp.size, sha, offset, warnings));
    }
    if !crate::upload::verify::asks_server(entry, &session.features) {
        // The size is the only check.
        let mut renaming = None;
        if session.pipelines() {
            // SIZE with the next upload's EPSV; the rename goes out
            // unanswered, and the next entry's upload right behind it.
            let have = session.size_then_passive(&temp_path).await?;
            check_size(&temp_path, have, stamp.size, "")?;
            memory.publishing = true;
            journal(memory);
            entry.progress.set_stage(Stage::Publishing);
            renaming =
                Some(Renaming::send(session, entry, &temp_path, &final_path, stamp.size).await?);
        } else {
            // SIZE and RNFR together, then RNTO and the final SIZE.
            publish_fast(
                session,
                entry,
                memory,
                &mut journal,
                &temp_path,
                &final_path,
                stamp.size,
            )
            .await?;
        }
        return Ok(Outcome {
            renaming,
            ..Outcome::sent(
                stamp.size,
                sha,
                vec!["size".into()],
                warnings,
                offset,
                segments,
            )
        });
    }
    let have = session.size(&temp_path).await?;
    check_size(&temp_path, have, stamp.size, "")?;
    let mut verification = vec!["size".to_string()];
    verification.extend(
        crate::upload::verify::temp_file(session, entry, &temp_path, stamp.size, &sha).await?,
    );

    memory.publishing = true;
    journal(memory);
    entry.progress.set_stage(Stage::Publishing);
    publish(session, &temp_path, &final_path, entry.if_exists).await?;

    let have = session.size(&final_path).await?;
    check_size(&final_path, have, stamp.size, " after rename")?;
    verification.dedup();
    Ok(Outcome::sent(
        stamp.size,
        sha,
        verification,
        warnings,
        offset,
        segments,
    ))
}

/// The local file is still the one the upload started from (`stamp`), and
/// all of it went: else a transient fault, and the next attempt starts over.
async fn unchanged(entry: &Entry, stamp: Stamp, sent: u64) -> Result<(), Fault> {
    let after = local_stamp(entry).await?;
    if after == stamp && sent == stamp.size {
        return Ok(());
    }
    Err(Fault::transient(format!(
        "entries[{}].file.local_path changed during upload ({} -> {} bytes); will start over",
        entry.index, stamp.size, after.size
    )))
}

/// The outcome of an upload `verify: none` sent without a check.
fn unverified(bytes: u64, sha: String, resumed_from: u64, warnings: Vec<String>) -> Outcome {
    Outcome::sent(
        bytes,
        sha,
        vec![NOT_VERIFIED.to_string()],
        warnings,
        resumed_from,
        1,
    )
}

/// What the receipt's `verification` says of a file `verify: none` sent.
const NOT_VERIFIED: &str = "sent, not verified";

/// A drop box's upload (`publish: direct`): straight to the final name and
/// from the start every time (no temp name to resume, no rename), then
/// checked by its size unless `verify: none`. A file the check finds
/// damaged is deleted where the server allows it, and sent again.
#[allow(clippy::too_many_arguments)]
async fn attempt_direct(
    lease: &mut Lease,
    entry: &Entry,
    memory: &mut Memory,
    journal: &mut impl FnMut(&Memory),
    stamp: Stamp,
    dir: &str,
    final_path: &str,
) -> Result<Outcome, Fault> {
    let dirs = lease.dirs().clone();
    lease.session().mkdir_p(dir, &dirs).await?;
    if let Some(skipped) = existing_final(lease, entry, final_path, stamp).await? {
        return Ok(skipped);
    }
    memory.may_have_temp = false;
    journal(memory);
    entry.progress.start(0, stamp.size, 1);
    entry.progress.set_stage(Stage::Uploading);
    let session = lease.session();
    let (sha, sent) = send(session, entry, final_path, 0, stamp.size).await?;
    unchanged(entry, stamp, sent).await?;
    entry.progress.set_stage(Stage::Verifying);
    let warnings = session.keep(final_path, &keep_of(entry, stamp)).await?;
    if entry.verify == Verify::None {
        return Ok(unverified(stamp.size, sha, 0, warnings));
    }
    let have = session.size(final_path).await?;
    check_size(final_path, have, stamp.size, "")?;
    let mut verification = vec!["size".to_string()];
    verification.extend(
        crate::upload::verify::temp_file(session, entry, final_path, stamp.size, &sha).await?,
    );
    Ok(Outcome::sent(stamp.size, sha, verification, warnings, 0, 1))
}

/// What `if_exists` makes of a final name the server already has: the
/// attempt's outcome when it is skipped, a fault for `fail`, or `None` to
/// go on and replace it.
async fn existing_final(
    lease: &mut Lease,
    entry: &Entry,
    final_path: &str,
    stamp: Stamp,
) -> Result<Option<Outcome>, Fault> {
    if entry.if_exists == IfExists::Overwrite {
        return Ok(None);
    }
    if let Some(existing) = lease.session().size(final_path).await? {
        let skipped = |why, sha256, verification| Outcome {
            bytes: existing,
            sha256,
            verification,
            skipped: Some(why),
            warnings: Vec::new(),
            resumed_from: 0,
            segments: 1,
            renaming: None,
        };
        match entry.if_exists {
            IfExists::Skip => return Ok(Some(skipped("exists", None, Vec::new()))),
            IfExists::SkipIfIdentical if existing == stamp.size => {
                let sha = crate::upload::source::hash_file(entry).await?;
                let same = crate::upload::verify::same_on_server(
                    lease.session(),
                    entry,
                    final_path,
                    &sha,
                )
                .await?;
                if let Some(checks) = same {
                    return Ok(Some(skipped("identical", Some(sha), checks)));
                }
            }
            // Another file under that name: replaced, as with overwrite.
            IfExists::SkipIfIdentical | IfExists::Overwrite => {}
            IfExists::Fail => {
                return Err(Fault::permanent(format!(
                    "{final_path} already exists on the server ({existing} bytes) and if_exists is \"fail\""
                )))
            }
        }
    }
    Ok(None)
}

/// What of the local file to keep on the server: its time where the
/// server lists MFMT (or wherever `preserve_mtime` is on), the mode its
/// server names.
fn keep_of(entry: &Entry, stamp: Stamp) -> crate::ftp::keep::Keep {
    let wanted = entry.attrs.preserve_mtime != Some(false);
    let mtime = (stamp.mtime_ns > 0).then(|| {
        std::time::UNIX_EPOCH + Duration::from_nanos(stamp.mtime_ns.min(u64::MAX as i128) as u64)
    });
    crate::ftp::keep::Keep {
        mtime: mtime.filter(|_| wanted),
        mtime_asked: entry.attrs.preserve_mtime == Some(true),
        chmod: entry.attrs.chmod.clone(),
    }
}

/// Probes the server's pipelining and queueing, where unknown, but only for
/// work that will use the verdict: with nothing queued behind this entry (a
/// one-file job), the probes' round trips would only delay it.
async fn probe_if_worth_it(
    lease: &mut Lease,
    pool: &Arc<Pool>,
    entry: &Entry,
    dir: &str,
) -> Result<(), Fault> {
    let probe = lease.pipelining().is_none() || queueing_unknown(lease.session());
    if !(probe && lease.others_waiting() && lease.may_probe()) {
        return Ok(());
    }
    let session = lease.session();
    let probed = async {
        if session.pipelining().is_none() {
            let verdict = session.probe_pipelining(dir).await?;
            session.set_pipelining(verdict);
        }
        if queueing_unknown(session) {
            session.queues_in_transfer = session.probe_queueing(dir).await?;
        }
        Ok::<_, Fault>(())
    }
    .await;
    lease.learned();
    probed?;
    if lease.session().is_broken() {
        // The probe cost this session (a server that lost replies to
        // pipelined commands), and could not remove what it made: a
        // fresh one does, and the entry goes on with it.
        pool.clean_after_probe(lease, &entry.server).await;
        if lease.session().is_broken() {
            lease.renew(&entry.server).await?;
        }
    }
    Ok(())
}

/// Where an upload to a temp file an earlier attempt may have left goes on
/// from: its size, if it may be resumed; else 0, and a temp file that may
/// not be resumed is deleted rather than truncated by the next STOR (a dead
/// connection's last bytes may still be on their way to it, and then they
/// go to the deleted file, not to the new one).
async fn resume_offset(
    session: &mut Session,
    memory: &Memory,
    temp_path: &str,
    source_changed: bool,
    stamp: Stamp,
) -> Result<u64, Fault> {
    match session.size(temp_path).await? {
        Some(have)
            if !source_changed
                && !memory.no_resume
                && !memory.segmented
                && session.can_resume()
                && have <= stamp.size =>
        {
            Ok(have)
        }
        Some(_) => {
            session.delete(temp_path).await?;
            Ok(0)
        }
        None => Ok(0),
    }
}

/// The size check, done and then published in two round trips (one each,
/// where the server pipelines): `SIZE temp` + `RNFR temp`; then, only if
/// the size is right, `RNTO final` + `SIZE final` (+ the next upload's
/// `EPSV`). The order that makes the publish safe is the one of
/// [`publish`]: nothing is renamed before its size was seen to be right.
///
/// The final SIZE is kept, at no round trip of its own: a server may
/// answer 250 to an RNTO that did not put those bytes under the final name
/// (a rename hook that moves or converts the file, a server that copies
/// across volumes and loses the copy, another writer replacing the name in
/// the same moment), and the receipt says "done" only for bytes seen there.
#[allow(clippy::too_many_arguments)]
async fn publish_fast(
    session: &mut Session,
    entry: &Entry,
    memory: &mut Memory,
    journal: &mut impl FnMut(&Memory),
    temp_path: &str,
    final_path: &str,
    size: u64,
) -> Result<(), Fault> {
    let (have, rnfr) = session.size_then_rnfr(temp_path).await?;
    check_size(temp_path, have, size, "")?;
    memory.publishing = true;
    journal(memory);
    entry.progress.set_stage(Stage::Publishing);
    let renamed = match rnfr {
        Ok(()) => {
            let (renamed, have) = session.rnto_then_size(final_path).await?;
            if renamed.is_ok() {
                return check_size(final_path, have, size, " after rename");
            }
            renamed
        }
        Err(f) => Err(f),
    };
    match renamed {
        Err(f)
            if f.is_permanent()
                && entry.if_exists == IfExists::Overwrite
                && !session.is_broken() =>
        {
            // Perhaps a server that will not rename onto an existing file.
            publish(session, temp_path, final_path, entry.if_exists).await?;
            let have = session.size(final_path).await?;
            check_size(final_path, have, size, " after rename")
        }
        other => other,
    }
}

/// Does `s` still have to find out whether its server answers commands sent
/// during a transfer after the transfer's reply?
fn queueing_unknown(s: &crate::ftp::Session) -> bool {
    s.pipelines() && !s.is_tls() && s.queues_in_transfer.is_none()
}

/// The publish of an entry whose rename went out unanswered (see
/// [`crate::ftp::control::OwedRename`]): checked when its replies come,
/// by the entry, after its session went on to the next one.
#[derive(Debug)]
pub(crate) struct Renaming {
    owed: crate::ftp::control::OwedRename,
    temp: String,
    fin: String,
    size: u64,
    if_exists: IfExists,
}

impl Renaming {
    async fn send(
        session: &mut Session,
        entry: &Entry,
        temp: &str,
        fin: &str,
        size: u64,
    ) -> Result<Renaming, Fault> {
        Ok(Renaming {
            owed: session.rename_owed(temp, fin).await?,
            temp: temp.to_string(),
            fin: fin.to_string(),
            size,
            if_exists: entry.if_exists,
        })
    }

    /// Waits for the rename's replies and checks them: the final name
    /// holds a file of the right size.
    pub(crate) async fn outcome(
        self,
        pool: &Arc<Pool>,
        spec: &crate::job::ServerSpec,
    ) -> Result<(), Fault> {
        let done = self.owed.replies(|| pool.settle_idle(spec)).await?;
        match done.renamed {
            Ok(()) => check_size(&self.fin, done.size?, self.size, " after rename"),
            Err(f) if f.is_permanent() && self.if_exists == IfExists::Overwrite => {
                // Perhaps a server that will not rename onto an existing file.
                let mut lease = pool.acquire(spec).await?;
                let session = lease.session();
                publish(session, &self.temp, &self.fin, self.if_exists).await?;
                let have = session.size(&self.fin).await?;
                check_size(&self.fin, have, self.size, " after rename")
            }
            Err(f) => Err(f),
        }
    }
}

/// The server's size of `path` is `want`, or a transient fault naming both.
fn check_size(path: &str, have: Option<u64>, want: u64, when: &str) -> Result<(), Fault> {
    if have == Some(want) {
        return Ok(());
    }
    Err(Fault::transient(format!(
        "size check of {path}{when}: server has {}, expected {want} bytes",
        have.map_or("nothing".to_string(), |n| n.to_string()),
    )))
}

/// Streams the file from `offset` to `temp_path`; returns (sha256, bytes in the file).
async fn send(
    session: &mut Session,
    entry: &Entry,
    temp_path: &str,
    offset: u64,
    expected: u64,
) -> Result<(String, u64), Fault> {
    let timeout = session.data_timeout();
    let local = source::Local::of(entry, temp_path);
    // The size check goes out as the data connection closes, where the
    // server allows it (see `Session::finish`).
    let size_at_close = entry.verify != Verify::None
        && !crate::upload::verify::asks_server(entry, &session.features);
    // A small file is read while the STOR is negotiated.
    let prefetch = source::is_small(offset, expected)
        .then(|| source::prefetch(source::Opener::of(entry), expected));
    // The data connection is open and the server's verdict on it not yet read.
    let mut verdict_pending = false;
    let result = async {
        let mut upload = session.store_at(temp_path, offset).await?;
        verdict_pending = true;
        if size_at_close {
            session.size_at_close(temp_path);
        }
        let sent = match prefetch {
            Some(p) => p.send(&mut upload, timeout, local).await?,
            None => source::send_hashed(&mut upload, offset, expected, timeout, local).await?,
        };
        // `finish` reads the verdict, or marks the session broken if it cannot.
        verdict_pending = false;
        session.finish(upload, temp_path).await?;
        Ok(sent)
    }
    .await;
    if result.is_err() && (verdict_pending || offset > 0) {
        // Do not reuse the session: a data connection dropped before its
        // verdict leaves that reply unread on the control connection, and a
        // server may keep a REST offset until a transfer succeeds (libunftp
        // does), which would misplace the next upload on this session.
        session.give_up();
    }
    result
}

/// Deletes an entry's temp file (an entry that ends failed leaves nothing
/// behind); a file that is not there is no error.
pub(crate) async fn discard_temp(
    pool: &Arc<Pool>,
    run: &str,
    entry: &Entry,
    memory: &mut Memory,
) -> Result<(), Fault> {
    let dir = normalize_dir(&entry.server_path);
    let temp = join_remote(&dir, &temp_name_at(run, entry, memory.generation));
    let mut lease = pool.acquire(&entry.server).await?;
    lease.session().delete(&temp).await?;
    remove_abandoned(&mut lease, memory).await
}

/// Renames the temp file over the final name. Some servers refuse to rename
/// onto an existing file; with `overwrite` the old file is deleted first.
async fn publish(
    session: &mut Session,
    temp: &str,
    fin: &str,
    policy: IfExists,
) -> Result<(), Fault> {
    match session.rename(temp, fin).await {
        Ok(()) => Ok(()),
        Err(f) if f.is_permanent() && policy == IfExists::Overwrite && !session.is_broken() => {
            if session.size(fin).await?.is_none() {
                return Err(f);
            }
            session.delete(fin).await?;
            session.rename(temp, fin).await
        }
        Err(f) => Err(f),
    }
}
