//! What a claimed job delivers: its names expanded, and the files ftpdrop
//! makes for it (checksum sidecars, done markers) added as entries.
//!
//! Runs once per run of a job, after it is parsed. Templates are expanded
//! against the claim time; a resumed job passes the remote paths its
//! journal kept instead, so a retry after midnight or a restart uses the
//! names the first run chose. Made files come after the job's own entries,
//! in an order that depends only on the job: a sidecar per entry that asks
//! for one, then a done marker per remote folder (per file, where the
//! marker's name uses `{name}`, `{stem}` or `{ext}`). Their bytes are
//! written when the files they describe are in (see `run::extras`).

use crate::job::template::{self, Vars};
use crate::job::{basename, join_remote, normalize_dir, Attrs, Entry, IfExists, Job, Kind};
use crate::job::{confine::LocalRoots, After, MarkerSpec};
use chrono::{DateTime, Local};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Expands `job`'s templates and adds its made files. `generated` is the
/// folder their bytes go to; `journaled` the remote paths an earlier run of
/// this job recorded, by entry. On failure, every problem, naming its field.
pub fn plan(
    job: &mut Job,
    claimed: DateTime<Local>,
    job_name: &str,
    generated: &Path,
    journaled: Option<&[String]>,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for e in &mut job.entries {
        let local = e.local_path.to_string_lossy().into_owned();
        let vars = Vars {
            claimed,
            job: job_name,
            name: basename(&local),
        };
        let field = |f: &str| format!("entries[{}].file.{f}", e.index);
        match template::expand(&e.server_path, &vars) {
            Ok(d) if d.contains(['\r', '\n', '\0']) => problems.push(format!(
                "{}: expands to {d:?}, which has a line break or NUL",
                field("server_path")
            )),
            Ok(d) => e.server_path = d,
            Err(why) => problems.push(format!("{}: {why}", field("server_path"))),
        }
        match template::expand(&e.remote_name, &vars) {
            Ok(n) if n.is_empty() || n.contains(['/', '\\', '\r', '\n', '\0']) => {
                problems.push(format!(
                    "{}: expands to {n:?}, which is not a plain file name",
                    field("remote_name")
                ))
            }
            Ok(n) => e.remote_name = n,
            Err(why) => problems.push(format!("{}: {why}", field("remote_name"))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    note_case_collisions(job);
    add_sidecars(job, generated);
    add_markers(job, claimed, job_name, generated, &mut problems);
    // Only a journal of this very plan (as many entries) names them; a
    // different count is a job whose receipt is started afresh.
    if let Some(paths) = journaled.filter(|p| p.len() == job.entries.len()) {
        for (e, path) in job.entries.iter_mut().zip(paths) {
            (e.server_path, e.remote_name) = split_remote(path);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Names in one folder that differ only in case (`A.txt`, `a.TXT`) are
/// one file on a server whose names ignore case (Windows: IIS, FileZilla
/// Server): the later upload replaces the earlier. Each such entry's
/// receipt says so, rather than one file silently standing for two.
fn note_case_collisions(job: &mut Job) {
    let key = |e: &Entry| {
        (
            e.server.key(),
            normalize_dir(&e.server_path).to_lowercase(),
            e.remote_name.to_lowercase(),
        )
    };
    // By key, in a map: a job may hold 100,000 entries.
    let mut seen: HashMap<_, Vec<usize>> = HashMap::new();
    for e in &job.entries {
        seen.entry(key(e)).or_default().push(e.index);
    }
    let mut groups: Vec<Vec<usize>> = seen.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for group in groups {
        let names: Vec<String> = group
            .iter()
            .map(|i| format!("entries[{i}] {:?}", job.entries[*i].remote_name))
            .collect();
        let distinct = group
            .iter()
            .map(|i| &job.entries[*i].remote_name)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < 2 {
            continue;
        }
        let note = format!(
            "{} differ only in case: on a server whose names ignore case (Windows, IIS, FileZilla Server) they are one file, and the last one uploaded replaces the others",
            names.join(", ")
        );
        for i in group {
            job.entries[i].notes.push(note.clone());
        }
    }
}

/// The inverse of [`join_remote`] for a path it made (a name holds no `/`).
fn split_remote(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".to_string(), name.to_string()),
        Some((dir, name)) => (dir.to_string(), name.to_string()),
        None => (String::new(), path.to_string()),
    }
}

/// An entry ftpdrop makes, sent to `of`'s server and folder.
fn made(of: &Entry, index: usize, name: String, local: &Path, kind: Kind) -> Entry {
    Entry {
        index,
        server: of.server.clone(),
        local_path: local.to_path_buf(),
        server_path: of.server_path.clone(),
        remote_name: name,
        if_exists: IfExists::Overwrite,
        verify: of.verify,
        after: After::Keep,
        // Its bytes are ftpdrop's own, in `checked/`, outside any local_roots.
        local_roots: Arc::new(LocalRoots::default()),
        progress: Default::default(),
        rates: of.rates.clone(),
        kind,
        sidecar: false,
        marker: None,
        notes: Vec::new(),
        attrs: Arc::new(Attrs {
            // Its own time is the right one.
            preserve_mtime: Some(false),
            chmod: of.attrs.chmod.clone(),
            direct: of.attrs.direct,
        }),
    }
}

fn add_sidecars(job: &mut Job, generated: &Path) {
    let first = job.entries.len();
    let mut sidecars = Vec::new();
    for (next, e) in (first..).zip(job.entries.iter().filter(|e| e.sidecar)) {
        let local = generated.join(format!("{next}.sha256"));
        let name = format!("{}.sha256", e.remote_name);
        sidecars.push(made(e, next, name, &local, Kind::Sidecar { of: e.index }));
    }
    job.entries.extend(sidecars);
}

/// One marker per (server, folder, marker) of the data entries, or per
/// entry where the marker names the file; two that come to the same remote
/// path are one.
fn add_markers(
    job: &mut Job,
    claimed: DateTime<Local>,
    job_name: &str,
    generated: &Path,
    problems: &mut Vec<String>,
) {
    struct Group<'a> {
        first: &'a Entry,
        spec: &'a MarkerSpec,
        name: String,
        of: Vec<usize>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(crate::job::ServerKey, String, String), usize> = HashMap::new();
    for e in job.entries.iter().filter(|e| e.kind == Kind::Data) {
        let Some(spec) = e.marker.as_deref() else {
            continue;
        };
        let local = e.local_path.to_string_lossy();
        let vars = Vars {
            claimed,
            job: job_name,
            name: template::names_file(&spec.name)
                .then(|| basename(&local))
                .flatten(),
        };
        let name = match template::expand(&spec.name, &vars) {
            Ok(n) if !n.is_empty() && !n.contains(['/', '\\', '\r', '\n', '\0']) => n,
            Ok(n) => {
                problems.push(format!(
                    "done_marker.name: expands to {n:?}, which is not a plain file name"
                ));
                continue;
            }
            Err(why) => {
                problems.push(format!("done_marker.name: {why}"));
                continue;
            }
        };
        // Found through a map: per-file markers make a group per entry.
        let key = (e.server.key(), normalize_dir(&e.server_path), name.clone());
        match index.get(&key) {
            Some(&g) => groups[g].of.push(e.index),
            None => {
                index.insert(key, groups.len());
                groups.push(Group {
                    first: e,
                    spec,
                    name,
                    of: vec![e.index],
                });
            }
        }
    }
    let mut next = job.entries.len();
    let mut markers = Vec::new();
    for g in groups {
        if g.of.iter().any(|i| {
            join_remote(&job.entries[*i].server_path, &job.entries[*i].remote_name)
                == join_remote(&g.first.server_path, &g.name)
        }) {
            problems.push(format!(
                "done_marker.name: {:?} is also the name of a file of the job in that folder",
                g.name
            ));
            continue;
        }
        let local = generated.join(format!("{next}.marker"));
        let kind = Kind::Marker {
            of: g.of,
            content: g.spec.content,
        };
        markers.push(made(g.first, next, g.name, &local, kind));
        next += 1;
    }
    job.entries.extend(markers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use chrono::TimeZone;

    fn planned(job: &str, journaled: Option<&[String]>) -> Result<Job, Vec<String>> {
        let mut j = crate::job::parse(job.as_bytes(), &Config::default())?;
        let at = Local.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        plan(
            &mut j,
            at,
            "orders",
            Path::new("/state/orders.generated"),
            journaled,
        )?;
        Ok(j)
    }

    const SERVER: &str = r#"{"host":"h","login":"u"}"#;

    #[test]
    fn templates_sidecars_and_one_marker_per_folder() {
        let job = format!(
            r#"{{"done_marker": {{"name": "{{job}}.ok", "content": "manifest"}}, "entries": [
                {{"server": {SERVER}, "sidecar": "sha256",
                  "file": {{"local_path": "/d/a.csv", "server_path": "in/{{date:%Y-%m-%d}}", "remote_name": "{{stem}}_{{job}}{{ext}}"}}}},
                {{"server": {SERVER}, "file": {{"local_path": "/d/b.csv", "server_path": "in/{{date:%Y-%m-%d}}/"}}}},
                {{"server": {SERVER}, "file": {{"local_path": "/d/c{{1}}.csv", "server_path": "other"}}}}]}}"#
        );
        let j = planned(&job, None).unwrap();
        let paths: Vec<String> = j.entries.iter().map(|e| e.remote_path()).collect();
        assert_eq!(
            paths,
            [
                "in/2026-12-31/a_orders.csv",
                "in/2026-12-31/b.csv",
                "other/c{1}.csv",
                "in/2026-12-31/a_orders.csv.sha256",
                "in/2026-12-31/orders.ok",
                "other/orders.ok",
            ]
        );
        assert_eq!(j.entries[3].kind, Kind::Sidecar { of: 0 });
        assert!(matches!(&j.entries[4].kind, Kind::Marker { of, .. } if of == &[0, 1]));
        assert_eq!(
            j.entries[4].local_path,
            Path::new("/state/orders.generated/4.marker")
        );
        // A resumed run keeps the names its journal recorded.
        let kept: Vec<String> = paths
            .iter()
            .map(|p| p.replace("2026-12-31", "2026-12-30"))
            .collect();
        let j = planned(&job, Some(&kept)).unwrap();
        assert_eq!(j.entries[4].remote_path(), "in/2026-12-30/orders.ok");
        assert_eq!(j.entries[4].server_path, "in/2026-12-30");
        // A journal of another plan (another count) names nothing.
        let j = planned(&job, Some(&kept[..3])).unwrap();
        assert_eq!(j.entries[4].remote_path(), "in/2026-12-31/orders.ok");
        assert_eq!(split_remote("/a"), ("/".into(), "a".into()));
        assert_eq!(split_remote("a"), ("".into(), "a".into()));
    }

    #[test]
    fn a_named_servers_marker_is_the_default_and_a_job_may_turn_it_off() {
        let mut cfg = Config::default();
        cfg.servers.insert(
            "edi".into(),
            serde_json::from_value(serde_json::json!({
                "host": "h", "login": "u", "password": "p",
                "done_marker": {"name": "READY"}, "chmod": "644"
            }))
            .unwrap(),
        );
        let at = Local.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let entry = r#"{"server": "edi", "file": {"local_path": "/d/a", "server_path": "x"}}"#;
        let run = |text: &str| {
            let mut j = crate::job::parse(text.as_bytes(), &cfg).unwrap();
            plan(&mut j, at, "j", Path::new("/g"), None).unwrap();
            j
        };
        let j = run(&format!("[{entry}]"));
        assert_eq!(j.entries.len(), 2);
        assert_eq!(j.entries[1].remote_path(), "x/READY");
        assert_eq!(j.entries[1].attrs.chmod.as_deref(), Some("644"));
        assert_eq!(j.entries[0].attrs.chmod.as_deref(), Some("644"));
        let j = run(&format!(r#"{{"done_marker": null, "entries": [{entry}]}}"#));
        assert_eq!(j.entries.len(), 1);
        let j = run(&format!(
            r#"{{"done_marker": {{"name": "{{job}}.ok"}}, "entries": [{entry}]}}"#
        ));
        assert_eq!(j.entries[1].remote_path(), "x/j.ok");
        // A bad default is the configuration's error.
        let mut bad = cfg.clone();
        bad.servers.get_mut("edi").unwrap().done_marker =
            serde_json::from_value(serde_json::json!({"name": "{dat}.ok"})).unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("servers.edi.done_marker.name: unknown placeholder"),
            "{e}"
        );
        bad.servers.get_mut("edi").unwrap().done_marker = None;
        bad.servers.get_mut("edi").unwrap().chmod = Some("rw-r--r--".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("servers.edi.chmod"), "{e}");
    }

    #[test]
    fn a_marker_per_file_when_its_name_names_the_file() {
        let job = format!(
            r#"{{"done_marker": {{"name": "{{name}}.done"}}, "entries": [
                {{"server": {SERVER}, "file": {{"local_path": "/d/a.csv", "server_path": "x"}}}},
                {{"server": {SERVER}, "file": {{"local_path": "/d/b.csv", "server_path": "x"}}}}]}}"#
        );
        let j = planned(&job, None).unwrap();
        let names: Vec<&str> = j.entries.iter().map(|e| e.remote_name.as_str()).collect();
        assert_eq!(names, ["a.csv", "b.csv", "a.csv.done", "b.csv.done"]);
    }

    #[test]
    fn bad_templates_are_invalid_jobs_naming_the_field() {
        let job = format!(
            r#"[{{"server": {SERVER}, "file": {{"local_path": "/d/a", "server_path": "in/{{day}}"}}}},
                {{"server": {SERVER}, "file": {{"local_path": "/d/a", "server_path": "x", "remote_name": "{{date:%Y/%m}}"}}}}]"#
        );
        let errs = planned(&job, None).unwrap_err();
        assert!(
            errs[0].starts_with("entries[0].file.server_path: unknown placeholder {day}"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("entries[1].file.remote_name: must expand to a plain file name"),
            "{errs:?}"
        );
        let errs = planned(
            &format!(r#"{{"done_marker": {{"name": "a.ok", "contnet": "empty"}}, "entries": [{{"server": {SERVER}, "file": {{"local_path": "/d/a", "server_path": "x"}}}}]}}"#),
            None,
        )
        .unwrap_err();
        assert!(
            errs[0].starts_with("done_marker: unknown field `contnet`"),
            "{errs:?}"
        );
        assert!(errs[0].contains("did you mean \"content\""), "{errs:?}");
    }
}
