//! The servers partners really run, beyond the modern Linux ones: legacy
//! code pages (and more, as they land). Each against a real server or a
//! variant of `scripts/interop/quirky_ftpd.py` that behaves as documented.

use super::*;

/// A named server for `t` with extra settings.
fn named(t: &Target, extra: Value) -> Result<ftpdrop::config::ServerDef, String> {
    let mut def = t.server_json();
    def["port"] = json!(t.port);
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        def[k] = v;
    }
    serde_json::from_value(def).map_err(|e| format!("server definition: {e}"))
}

/// A cp1251-only server (`q-cp1251`: no UTF8 in FEAT, `OPTS UTF8 ON`
/// refused): with `encoding: auto` and `legacy_encoding: cp1251`, Cyrillic
/// names and `я` (0xFF, the Telnet IAC byte) arrive as themselves; a name
/// cp1251 cannot write fails its entry, naming the character, and nothing
/// is sent under a lossy name.
pub(super) async fn cp1251_names(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("cp1251");
    let files: [(&str, &[u8]); 3] = [
        ("План отчёт 2024.txt", "отчёт\n".as_bytes()),
        ("я.txt", b"ya\n"),
        ("Łódź ő.txt", b"not in cp1251\n"),
    ];
    let entries: Vec<Value> = files
        .iter()
        .map(|(n, b)| {
            let local = w.local(n, b);
            json!({"server": "legacy", "file": {"local_path": local, "server_path": rel}})
        })
        .collect();
    let def = named(t, json!({"encoding": "auto"}))?;
    let r = w
        .run("cp1251", entries, |c| {
            c.legacy_encoding = ftpdrop::config::CodePage::Cp1251;
            c.servers.insert("legacy".into(), def);
        })
        .await;
    for (i, (n, b)) in files.iter().take(2).enumerate() {
        ensure(r.entries[i].state == EntryState::Done, || {
            format!("{n}: {:?} {:?}", r.entries[i].state, r.entries[i].error)
        })?;
        same_bytes(&disk.join(n), b)?;
    }
    let bad = &r.entries[2];
    let error = bad.error.clone().unwrap_or_default();
    ensure(
        bad.state == EntryState::Failed
            && error.contains("'Ł' (U+0141)")
            && error.contains("cp1251")
            && bad.attempts == 1,
        || {
            format!(
                "the name cp1251 cannot write: {:?} after {} attempts: {error}",
                bad.state, bad.attempts
            )
        },
    )?;
    let listed: Vec<String> = std::fs::read_dir(&disk)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(listed.len() == 2, || {
        format!("on the server's disk: {listed:?}")
    })?;
    ensure(r.state == JobState::Partial, || {
        format!("job {:?}", r.state)
    })?;
    Ok("Cyrillic and я arrived as cp1251; Ł refused by name, nothing lossy sent".into())
}

/// A drop box that takes STOR and nothing else (`q-dropbox`: no SIZE, no
/// rename, no listing, no hidden name). The defaults fail with an error
/// that names the settings; `publish: direct` with `verify: none` delivers,
/// and the receipt says "sent, not verified".
pub(super) async fn drop_box(t: &Target) -> Outcome {
    let w = Work::new();
    let (rel, disk) = t.dir("dropbox");
    let body = support::random_bytes(300_000, 41);
    let local = w.local("payment.xml", &body);
    let entry =
        |server: &str| json!({"server": server, "file": {"local_path": local, "server_path": rel}});
    let (plain, direct, sized) = (
        named(t, json!({}))?,
        named(t, json!({"publish": "direct", "verify": "none"}))?,
        named(t, json!({"publish": "direct"}))?,
    );
    // The defaults: a temp name the box refuses, and a clear way out.
    let r = w
        .run("defaults", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), plain);
        })
        .await;
    let e = &r.entries[0];
    let error = e.error.clone().unwrap_or_default();
    ensure(
        e.state == EntryState::Failed && error.contains("\"publish\": \"direct\""),
        || format!("defaults against a drop box: {:?}: {error}", e.state),
    )?;
    ensure(!disk.join("payment.xml").exists(), || {
        "a file was published by the defaults".into()
    })?;
    // Direct, checked by size: the box has no SIZE, and the error says what to set.
    let r = w
        .run("sized", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), sized);
        })
        .await;
    let e = &r.entries[0];
    let error = e.error.clone().unwrap_or_default();
    ensure(
        e.state == EntryState::Failed && error.contains("\"verify\": \"none\""),
        || format!("direct with a size check: {:?}: {error}", e.state),
    )?;
    // Direct and unverified: delivered, and the receipt says so.
    let r = w
        .run("direct", vec![entry("bank")], |c| {
            c.servers.insert("bank".into(), direct);
        })
        .await;
    all_done(&r)?;
    same_bytes(&disk.join("payment.xml"), &body)?;
    ensure(r.entries[0].verification == ["sent, not verified"], || {
        format!("verification {:?}", r.entries[0].verification)
    })?;
    let names: Vec<String> = std::fs::read_dir(&disk)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure(names == ["payment.xml"], || {
        format!("in the box: {names:?}")
    })?;
    Ok("defaults fail naming publish: direct; direct + verify none delivered, \"sent, not verified\"".into())
}
