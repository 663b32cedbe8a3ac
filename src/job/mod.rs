//! The job file format and its validation.
//!
//! A job is the seeds' format: a JSON array of
//! `{"server": {...}, "file": {"local_path", "server_path"}}` entries, or one
//! such object. Validation walks the raw JSON rather than relying on serde's
//! first-error-wins, so that an invalid job's receipt names *every* problem
//! with its field, e.g. `entries[2].file.server_path: contains a line break`.
//!
//! Validation also applies the configuration's confinement (see
//! [`crate::job::confine`]): inline servers when `require_named_servers` is on,
//! hosts outside `allowed_hosts`. Local files are checked against
//! `local_roots` when they are opened, not here.
//!
//! - [`confine`]: what a job may reach: `local_roots`, `allowed_hosts`.
//! - [`schema`]: JSON Schemas of the job file and the config, from the types.
//! - [`progress`]: an entry's live stage and counters.
//! - [`template`]: placeholders in remote names and folders.
//! - [`plan`]: what a claimed job delivers: names expanded, sidecars and
//!   done markers added.

pub mod confine;
pub mod plan;
pub mod progress;
pub mod schema;
pub(crate) mod template;

pub(crate) use crate::config::MarkerContent;
pub(crate) use crate::config::Verify;
use crate::config::{Config, MarkerSpec, TlsMode};
use crate::job::confine::{HostRules, HostVerdict, LocalRoots};
use crate::secret::Secret;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What replaces an inline password in a claimed job file once the job is
/// final (see [`crate::run::housekeeping`]).
pub const REDACTED: &str = "(redacted by ftpdrop after the job ended)";

/// What to do when the final remote file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IfExists {
    Overwrite,
    Skip,
    Fail,
    /// Skip when the server already has this file: the same size and, where
    /// the server can hash, the same digest; otherwise overwrite.
    SkipIfIdentical,
}

/// Where and as whom to connect. Two specs with the same [`ServerKey`] share sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
    pub login: String,
    pub password: Secret,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Set when `allowed_hosts` admits the host only through networks: the
    /// addresses it resolves to when connecting must lie in one of these.
    pub resolve_into: Option<Arc<Vec<IpNet>>>,
    /// The code page of its file names.
    pub names: crate::config::Names,
    /// A version cap, pins, a client certificate (named servers only).
    pub tls_options: crate::config::TlsOptions,
    /// The proxy every connection goes through (named servers only).
    pub proxy: Option<Arc<crate::config::ProxySpec>>,
    /// Passive or active data connections (named servers only).
    pub data: crate::config::DataSpec,
    /// `HOST name` before the login (named servers only).
    pub virtual_host: Option<String>,
}

/// Identity of a pool of interchangeable sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServerKey {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) login: String,
    pub(crate) tls: TlsMode,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) insecure: bool,
    pub(crate) names: crate::config::Names,
    pub(crate) tls_options: crate::config::TlsOptions,
    pub(crate) proxy: Option<Arc<crate::config::ProxySpec>>,
    pub(crate) data: crate::config::DataSpec,
    pub(crate) virtual_host: Option<String>,
}

impl ServerSpec {
    pub(crate) fn key(&self) -> ServerKey {
        ServerKey {
            host: self.host.clone(),
            port: self.port,
            login: self.login.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure_skip_verify,
            names: self.names,
            tls_options: self.tls_options.clone(),
            proxy: self.proxy.clone(),
            data: self.data,
            virtual_host: self.virtual_host.clone(),
        }
    }
}

impl ServerKey {
    pub(crate) fn host_port(&self) -> String {
        crate::host::host_port(&self.host, self.port)
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.tls {
            TlsMode::None => "ftp",
            TlsMode::Explicit => "ftpes",
            TlsMode::Implicit => "ftps",
        };
        write!(f, "{scheme}://{}@{}:{}", self.login, self.host, self.port)
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

impl fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSpec")
            .field("server", &self.to_string())
            .field("password", &self.password)
            .finish()
    }
}

/// What happens to an entry's local file once its upload is verified and
/// recorded: kept, deleted, or moved to a folder. Failed, skipped and
/// cancelled entries keep it.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum After {
    Keep,
    Delete,
    /// Moved into this folder (absolute), under its own name, never over another file.
    MoveTo(PathBuf),
}

/// One file to upload to one place.
#[derive(Debug, Clone)]
pub struct Entry {
    pub index: usize,
    /// Shared by the entries of a job that name the same server alike.
    pub server: Arc<ServerSpec>,
    pub local_path: PathBuf,
    /// Remote directory as written in the job (relative to the login directory unless it starts with `/`).
    pub(crate) server_path: String,
    /// File name on the server.
    pub(crate) remote_name: String,
    pub(crate) if_exists: IfExists,
    pub(crate) verify: Verify,
    /// What happens to the local file once its upload is verified and published.
    pub(crate) after: After,
    /// Where local files may be read from (`local_roots`), checked on every open.
    pub(crate) local_roots: Arc<LocalRoots>,
    /// Live counters of this entry's upload, read by the status API.
    pub(crate) progress: Arc<progress::Progress>,
    /// The bandwidth limits its data connections pay into (global, its
    /// server's); set by the runner before each attempt (a reload may change
    /// them). Shared by the job's entries to the same server.
    pub(crate) rates: Arc<crate::rate::RateSet>,
    /// A file of the job, or one ftpdrop makes for it (see [`plan`]).
    pub(crate) kind: Kind,
    /// Publish `name.sha256` after the file (`"sidecar": "sha256"`).
    pub(crate) sidecar: bool,
    /// The done marker this entry's folder gets: the job's, else its
    /// named server's default.
    pub(crate) marker: Option<Arc<MarkerSpec>>,
    /// What to keep of the local file on the server (its named server's).
    pub(crate) attrs: Arc<Attrs>,
    /// Warnings known before the upload (see [`plan`]), kept in its receipt.
    pub(crate) notes: Vec<String>,
}

/// A file of the job, or one ftpdrop makes once the files it describes are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A file the job names.
    Data,
    /// `name.sha256` of entry `of`, sent after it.
    Sidecar { of: usize },
    /// A done marker, sent after every entry in `of`.
    Marker {
        of: Vec<usize>,
        content: MarkerContent,
    },
}

/// What of the local file is kept on the server, after the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// Set the modification time (`MFMT`): `None` is the default, on where
    /// the server lists MFMT.
    pub(crate) preserve_mtime: Option<bool>,
    /// Permissions to set before the publish (`SITE CHMOD`), e.g. `644`.
    pub(crate) chmod: Option<String>,
    /// Upload straight to the final name (`publish: direct`): a drop box
    /// that allows no rename or no temp name.
    pub(crate) direct: bool,
}

impl Entry {
    /// Opens the local file for reading, if `local_roots` allows the file opened.
    pub fn open_local(&self) -> std::io::Result<std::fs::File> {
        self.local_roots.open(&self.local_path)
    }

    /// A file the job names (not one ftpdrop makes for it).
    pub fn is_data(&self) -> bool {
        self.kind == Kind::Data
    }

    /// `server_path/remote_name`, as the job names it (before the login directory is known).
    pub(crate) fn remote_path(&self) -> String {
        join_remote(&self.server_path, &self.remote_name)
    }
}

/// `a//b/` → `a/b`; keeps a leading `/`.
pub(crate) fn normalize_dir(dir: &str) -> String {
    let abs = dir.starts_with('/');
    let parts: Vec<&str> = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if abs {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Joins a remote directory and a name with exactly one `/`.
pub(crate) fn join_remote(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_string();
    }
    format!("{}/{name}", dir.trim_end_matches('/'))
}

#[derive(Debug, Clone)]
pub struct Job {
    pub entries: Vec<Entry>,
}

/// The last component of a local path, split on both `/` and `\` so that a
/// Windows path in a job read on Linux (and the reverse) still names a file.
pub(crate) fn basename(path: &str) -> Option<&str> {
    path.rsplit(['/', '\\']).next().filter(|s| !s.is_empty())
}

/// The configuration's confinement, as one job's validation needs it.
struct Limits<'c> {
    config: &'c Config,
    hosts: HostRules,
    roots: Arc<LocalRoots>,
}

/// Parses and validates a job file's bytes. On failure, returns every problem found.
pub fn parse(bytes: &[u8], config: &Config) -> Result<Job, Vec<String>> {
    // Windows editors write a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let limits = match (config.host_rules(), config.local_roots()) {
        (Ok(hosts), Ok(roots)) => Limits {
            config,
            hosts,
            roots: Arc::new(roots),
        },
        (Err(e), _) | (_, Err(e)) => return Err(vec![format!("configuration: {e:#}")]),
    };
    // Entries are kept as slices of the document and parsed one at a time:
    // a tree of the whole job cost twenty times its size (16 MiB of job
    // peaked at 560 MiB).
    let not_json = |e: serde_json::Error| vec![format!("not valid JSON: {e}")];
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let mut job_after = None;
    // `Some(None)`: the job says `"done_marker": null`, no marker even
    // where its server has a default.
    let mut job_marker: Option<Option<Arc<MarkerSpec>>> = None;
    let mut problems = Vec::new();
    let items: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(bytes).map_err(not_json)?,
        Some(b'{') => {
            let o: Vec<(String, &RawValue)> = serde_json::from_slice::<Members>(bytes)
                .map_err(not_json)?
                .0;
            let has = |k: &str| o.iter().any(|(n, _)| n == k);
            if has("entries") {
                // `{"after": ..., "entries": [...]}`: entries with job-wide defaults.
                let known = ["entries", "after", "done_marker", "$schema"];
                for (k, _) in &o {
                    if !known.contains(&k.as_str()) {
                        let hint = match crate::suggest::closest(k, &known) {
                            Some(m) => format!("did you mean {m:?}? "),
                            None => String::new(),
                        };
                        problems.push(format!(
                            "{k}: unknown field ({hint}a job object takes entries, after, done_marker)"
                        ));
                    }
                }
                // The last of duplicate keys counts, as in a JSON object.
                let last = |k: &str| o.iter().rev().find(|(n, _)| n == k).map(|(_, v)| *v);
                if let Some(m) = last("done_marker") {
                    let m: Value = serde_json::from_str(m.get()).map_err(not_json)?;
                    match parse_marker(&m) {
                        Ok(m) => job_marker = Some(m.map(Arc::new)),
                        Err(e) => problems.push(format!("done_marker{e}")),
                    }
                }
                if let Some(a) = last("after") {
                    let a: Value = serde_json::from_str(a.get()).map_err(not_json)?;
                    match parse_after(&a, &limits) {
                        Ok(a) => job_after = Some(a),
                        Err(e) => problems.push(format!("after: {e}")),
                    }
                }
                let entries = last("entries").map_or("null", |v| v.get());
                match serde_json::from_str::<Vec<&RawValue>>(entries) {
                    Ok(list) => list,
                    // One entry object under "entries", without job-wide defaults.
                    Err(_) if job_after.is_none() && entries.trim_start().starts_with('{') => {
                        vec![serde_json::from_str::<&RawValue>(entries).map_err(not_json)?]
                    }
                    Err(_) => {
                        let v: Value = serde_json::from_str(entries).map_err(not_json)?;
                        return Err(vec![format!(
                            "a job must be an array of entries or one entry object, found {}",
                            kind(&v)
                        )]);
                    }
                }
            } else {
                vec![serde_json::from_slice::<&RawValue>(bytes).map_err(not_json)?]
            }
        }
        _ => {
            let v: Value = serde_json::from_slice(bytes).map_err(not_json)?;
            return Err(vec![format!(
                "a job must be an array of entries or one entry object, found {}",
                kind(&v)
            )]);
        }
    };
    if items.is_empty() {
        return Err(vec!["the job has no entries".into()]);
    }
    let mut entries = Vec::with_capacity(items.len());
    // A configured server's password is resolved (its variable or file read)
    // once per job, not once per entry.
    let mut passwords = HashMap::new();
    // Entries naming the same server share one spec: a job of 100,000
    // entries to one inline server would otherwise hold 100,000 copies.
    let mut servers: Vec<(Arc<ServerSpec>, Arc<crate::rate::RateSet>)> = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let mut p = Problems {
            prefix: format!("entries[{i}]"),
            list: &mut problems,
        };
        let item: Value = match serde_json::from_str(raw.get()) {
            Ok(v) => v,
            Err(e) => return Err(vec![format!("not valid JSON: {e}")]),
        };
        let item = &item;
        if let Some(mut e) = parse_entry(i, item, &limits, &mut passwords, &mut p) {
            if item.get("after").is_none() {
                if let Some(a) = &job_after {
                    e.after = a.clone();
                }
            }
            if let Some(m) = &job_marker {
                e.marker = m.clone();
            }
            match servers.iter().find(|(s, _)| *s == e.server) {
                Some((same, rates)) => (e.server, e.rates) = (same.clone(), rates.clone()),
                None if servers.len() < 64 => servers.push((e.server.clone(), e.rates.clone())),
                None => {}
            }
            entries.push(e);
        }
    }
    if problems.is_empty() {
        Ok(Job { entries })
    } else {
        Err(problems)
    }
}

/// A JSON object's members in file order, duplicates kept, each value a
/// slice of the document it was read from (never a tree of the whole).
pub(crate) struct Members<'a>(pub(crate) Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(m) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(m);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

struct Problems<'a> {
    prefix: String,
    list: &'a mut Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, field: &str, msg: impl fmt::Display) {
        if field.is_empty() {
            self.list.push(format!("{}: {msg}", self.prefix));
        } else {
            self.list.push(format!("{}.{field}: {msg}", self.prefix));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rejects characters that would end an FTP command line early and start another.
fn check_line_safe(p: &mut Problems, field: &str, s: &str) -> bool {
    if s.contains(['\r', '\n']) {
        p.add(field, "contains a line break");
        false
    } else if s.contains('\0') {
        p.add(field, "contains a NUL byte");
        false
    } else {
        true
    }
}

fn check_keys(p: &mut Problems, field: &str, obj: &Map<String, Value>, allowed: &[&str]) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let name = if field.is_empty() {
                k.clone()
            } else {
                format!("{field}.{k}")
            };
            let hint = match crate::suggest::closest(k, allowed) {
                Some(m) => format!("did you mean {m:?}? "),
                None => String::new(),
            };
            p.add(
                &name,
                format!(
                    "unknown field ({hint}expected one of: {})",
                    allowed.join(", ")
                ),
            );
        }
    }
}

fn get_str<'v>(
    p: &mut Problems,
    obj: &'v Map<String, Value>,
    parent: &str,
    key: &str,
    required: bool,
) -> Option<&'v str> {
    let field = format!("{parent}.{key}");
    match obj.get(key) {
        None | Some(Value::Null) => {
            if required {
                p.add(&field, "missing");
            }
            None
        }
        Some(Value::String(s)) => check_line_safe(p, &field, s).then_some(s.as_str()),
        Some(other) => {
            p.add(&field, format!("must be a string, found {}", kind(other)));
            None
        }
    }
}

/// Resolved passwords (the server's, and its proxy with its password) of
/// configured servers, by name (an error as its message).
type Passwords = HashMap<String, Result<(Secret, Option<Arc<crate::config::ProxySpec>>), String>>;

fn parse_entry(
    index: usize,
    item: &Value,
    limits: &Limits,
    passwords: &mut Passwords,
    p: &mut Problems,
) -> Option<Entry> {
    let Value::Object(obj) = item else {
        p.add("", format!("must be an object, found {}", kind(item)));
        return None;
    };
    check_keys(
        p,
        "",
        obj,
        &[
            "$schema",
            "server",
            "file",
            "tls",
            "ca_file",
            "if_exists",
            "verify",
            "after",
            "sidecar",
        ],
    );
    let before = p.list.len();
    let named = matches!(obj.get("server"), Some(Value::String(_)));

    let server = entry_server(obj, named, limits, passwords, p);
    let if_exists = choice(
        p,
        obj,
        "if_exists",
        &[
            ("overwrite", IfExists::Overwrite),
            ("skip", IfExists::Skip),
            ("fail", IfExists::Fail),
            ("skip_if_identical", IfExists::SkipIfIdentical),
        ],
    );
    let sidecar = choice(p, obj, "sidecar", &[("none", false), ("sha256", true)]);
    // A configured server's defaults: the done marker, what to keep.
    let def = obj
        .get("server")
        .and_then(Value::as_str)
        .and_then(|n| limits.config.servers.get(n));
    let attrs = Arc::new(Attrs {
        preserve_mtime: def.and_then(|d| d.preserve_mtime),
        chmod: def.and_then(|d| d.chmod.clone()),
        direct: def.is_some_and(|d| d.publish == crate::config::Publish::Direct),
    });
    let marker = def.and_then(|d| d.done_marker.clone()).map(Arc::new);
    let verify = choice(
        p,
        obj,
        "verify",
        &[
            ("auto", Verify::Auto),
            ("size", Verify::Size),
            ("download", Verify::Download),
            ("none", Verify::None),
        ],
    );
    // An entry that says nothing gets its named server's.
    let verify = match (obj.get("verify"), def.and_then(|d| d.verify)) {
        (None | Some(Value::Null), Some(v)) => v,
        _ => verify,
    };

    let after = match obj.get("after") {
        None | Some(Value::Null) => After::Keep,
        Some(v) => match parse_after(v, limits) {
            Ok(a) => a,
            Err(e) => {
                p.add("after", e);
                After::Keep
            }
        },
    };

    let (local_path, server_path, remote_name) = entry_file(obj, p);

    if p.list.len() != before {
        return None;
    }
    Some(Entry {
        index,
        server: Arc::new(server?),
        local_path: PathBuf::from(local_path?),
        server_path: server_path?.to_string(),
        remote_name: remote_name?,
        if_exists,
        verify,
        after,
        local_roots: limits.roots.clone(),
        progress: Default::default(),
        rates: Arc::new(std::sync::RwLock::new(Arc::from(Vec::new()))),
        kind: Kind::Data,
        sidecar,
        marker,
        attrs,
        notes: Vec::new(),
    })
}

/// `{"name": "<template>", "content": "empty" | "manifest"}`, or `null` for
/// none (a job may turn its server's default off). The error starts with
/// the field below `done_marker` it is about (`.name: ...`).
pub(crate) fn parse_marker(v: &Value) -> Result<Option<MarkerSpec>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let m: MarkerSpec = serde_json::from_value(v.clone()).map_err(|e| {
        let e = e.to_string();
        match crate::suggest::closest(e.split('`').nth(1).unwrap_or(""), &["name", "content"]) {
            Some(k) if e.starts_with("unknown field") => format!(": {e} (did you mean {k:?}?)"),
            _ => format!(": {e}"),
        }
    })?;
    template::check_name(&m.name).map_err(|e| format!(".name: {e}"))?;
    Ok(Some(m))
}

/// An entry's server: a configured one by name (its password resolved once
/// per job), or an inline one, with the entry's TLS settings, confined to
/// `allowed_hosts`. `None` with the problems added to `p`.
fn entry_server(
    obj: &serde_json::Map<String, Value>,
    named: bool,
    limits: &Limits,
    passwords: &mut Passwords,
    p: &mut Problems,
) -> Option<ServerSpec> {
    let config = limits.config;
    let mut server = match obj.get("server") {
        None => {
            p.add("server", "missing");
            None
        }
        Some(Value::String(name)) => match config.servers.get(name) {
            Some(def) => match passwords
                .entry(name.clone())
                .or_insert_with(|| {
                    let password = def.resolve_password(name).map_err(|e| format!("{e:#}"))?;
                    let proxy = def.resolve_proxy(name).map_err(|e| format!("{e:#}"))?;
                    Ok((password, proxy.map(Arc::new)))
                })
                .clone()
            {
                Ok((password, proxy)) => Some(ServerSpec {
                    host: def.host.clone(),
                    port: def.port,
                    login: def.login.clone(),
                    password,
                    tls: def.tls,
                    ca_file: def.ca_file.clone(),
                    insecure_skip_verify: def.insecure_skip_verify,
                    resolve_into: None,
                    names: crate::config::Names::of(def.encoding, config.legacy_encoding),
                    tls_options: def.tls_options(),
                    proxy,
                    data: crate::config::DataSpec {
                        mode: def.data_mode,
                        ports: def
                            .active_ports
                            .as_deref()
                            .and_then(crate::config::port_range),
                    },
                    virtual_host: def.virtual_host.clone(),
                }),
                Err(e) => {
                    p.add("server", e);
                    None
                }
            },
            None => {
                let known: Vec<&str> = config.servers.keys().map(|k| k.as_str()).collect();
                p.add(
                    "server",
                    format!(
                        "no server named {name:?} in the configuration (configured: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        },
        Some(Value::Object(_)) if config.require_named_servers => {
            p.add(
                "server",
                "inline servers and credentials are refused (require_named_servers is on); \
                 name a server from the configuration instead, e.g. \"server\": \"backup\"",
            );
            None
        }
        Some(Value::Object(s)) => parse_server(s, p).and_then(|spec| {
            // A job names no file beyond its local_path but a CA bundle,
            // and that one is confined like local_path.
            match spec.ca_file.as_deref().map(|c| limits.roots.allows_file(c)) {
                Some(Err(why)) => {
                    p.add(
                        "server.ca_file",
                        format!("must lie under local_roots: {why}"),
                    );
                    None
                }
                _ => Some(spec),
            }
        }),
        Some(other) => {
            p.add(
                "server",
                format!(
                    "must be an object or a configured server's name, found {}",
                    kind(other)
                ),
            );
            None
        }
    };

    // Entry-level TLS settings override an inline server's. A configured
    // server's come from the configuration only: a job that could turn its
    // TLS off would send the operator's password in clear text.
    if let Some(v) = obj.get("tls") {
        match parse_tls(v) {
            Ok(mode) if named && server.as_ref().is_some_and(|s| s.tls != mode) => p.add(
                "tls",
                "a configured server's TLS mode is set in the configuration, not by a job",
            ),
            Ok(mode) => {
                if let Some(s) = server.as_mut() {
                    s.tls = mode;
                }
            }
            Err(e) => p.add("tls", e),
        }
    }
    if let Some(ca) = get_str(p, obj, "", "ca_file", false) {
        if named {
            p.add(
                "ca_file",
                "a configured server's CA file is set in the configuration, not by a job",
            );
        } else if let Err(why) = limits.roots.allows_file(std::path::Path::new(&ca)) {
            p.add("ca_file", format!("must lie under local_roots: {why}"));
        } else if let Some(s) = server.as_mut() {
            s.ca_file = Some(PathBuf::from(ca));
        }
    }
    if let Some(s) = server.as_mut() {
        if !named {
            s.names = crate::config::Names::of(Default::default(), config.legacy_encoding);
        }
        match limits.hosts.check(&s.host) {
            HostVerdict::Allowed => {}
            HostVerdict::IfResolvesInto(nets) => s.resolve_into = Some(Arc::new(nets)),
            HostVerdict::Refused(why) => {
                let field = if named { "server" } else { "server.host" };
                p.add(field, why);
            }
        }
        if s.password.expose() == REDACTED {
            p.add(
                "server.password",
                "was redacted when this job ended; a finished job cannot run again",
            );
        }
    }
    server
}

/// A field that names one of `options` (the first is the default, also for
/// `null` or a missing field); anything else is a problem that lists them.
fn choice<T: Copy>(
    p: &mut Problems,
    obj: &serde_json::Map<String, Value>,
    field: &str,
    options: &[(&str, T)],
) -> T {
    let default = options[0].1;
    match obj.get(field) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => match options.iter().find(|(name, _)| name == s) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                p.add(field, format!("{s:?} is not one of {}", names.join(", ")));
                default
            }
        },
        Some(other) => {
            p.add(field, format!("must be a string, found {}", kind(other)));
            default
        }
    }
}

/// An entry's `file`: its local path, its remote folder and the name it gets
/// there (`remote_name`, or the local file's name).
fn entry_file<'a>(
    obj: &'a serde_json::Map<String, Value>,
    p: &mut Problems,
) -> (Option<&'a str>, Option<&'a str>, Option<String>) {
    match obj.get("file") {
        None => {
            p.add("file", "missing");
            (None, None, None)
        }
        Some(Value::Object(f)) => {
            check_keys(p, "file", f, &["local_path", "server_path", "remote_name"]);
            let local = get_str(p, f, "file", "local_path", true);
            if local == Some("") {
                p.add("file.local_path", "is empty");
            }
            let remote_dir = get_str(p, f, "file", "server_path", true);
            let remote_dir = match remote_dir.map(|d| template::check(d, true)) {
                Some(Err(e)) => {
                    p.add("file.server_path", e);
                    None
                }
                _ => remote_dir,
            };
            let name = match get_str(p, f, "file", "remote_name", false) {
                Some(n) if template::is_template(n) => match template::check_name(n) {
                    Ok(()) => Some(n.to_string()),
                    Err(e) => {
                        p.add("file.remote_name", e);
                        None
                    }
                },
                Some(n) if n.is_empty() || n.contains(['/', '\\']) || n == "." || n == ".." => {
                    p.add(
                        "file.remote_name",
                        "must be a plain file name without / or \\",
                    );
                    None
                }
                Some(n) => Some(n.to_string()),
                None => match local.filter(|l| !l.is_empty()) {
                    Some(l) => match basename(l) {
                        // The local name is a name, not a template.
                        Some(b) => Some(b.replace('{', "{{").replace('}', "}}")),
                        None => {
                            p.add("file.local_path", "does not end in a file name");
                            None
                        }
                    },
                    None => None,
                },
            };
            (local, remote_dir, name)
        }
        Some(other) => {
            p.add("file", format!("must be an object, found {}", kind(other)));
            (None, None, None)
        }
    }
}

/// `"keep"`, `"delete"` or `{"move_to": "/absolute/dir"}` (inside
/// `local_roots` when that is set).
fn parse_after(v: &Value, limits: &Limits) -> Result<After, String> {
    match v {
        Value::String(s) => match s.as_str() {
            "keep" => Ok(After::Keep),
            "delete" => Ok(After::Delete),
            _ => Err(format!(
                "{s:?} is not one of keep, delete, {{\"move_to\": \"/dir\"}}"
            )),
        },
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "move_to") {
                return Err(format!("{k}: unknown field (expected move_to)"));
            }
            let dir = match o.get("move_to") {
                Some(Value::String(d)) if !d.trim().is_empty() => PathBuf::from(d),
                Some(Value::String(_)) => return Err("move_to is empty".into()),
                Some(other) => {
                    return Err(format!("move_to must be a string, found {}", kind(other)))
                }
                None => return Err("move_to: missing".into()),
            };
            if dir.is_relative() {
                return Err(format!(
                    "move_to {}: must be an absolute path",
                    dir.display()
                ));
            }
            limits
                .roots
                .allows_dir(&dir)
                .map_err(|e| format!("move_to: {e}"))?;
            Ok(After::MoveTo(dir))
        }
        other => Err(format!(
            "must be \"keep\", \"delete\" or {{\"move_to\": \"/dir\"}}, found {}",
            kind(other)
        )),
    }
}

fn parse_tls(v: &Value) -> Result<TlsMode, String> {
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(TlsMode::None),
            "explicit" => Ok(TlsMode::Explicit),
            "implicit" => Ok(TlsMode::Implicit),
            _ => Err(format!("{s:?} is not one of none, explicit, implicit")),
        },
        other => Err(format!("must be a string, found {}", kind(other))),
    }
}

fn parse_server(s: &Map<String, Value>, p: &mut Problems) -> Option<ServerSpec> {
    check_keys(
        p,
        "server",
        s,
        &[
            "host",
            "port",
            "login",
            "password",
            "tls",
            "ca_file",
            "insecure_skip_verify",
        ],
    );
    let host = get_str(p, s, "server", "host", true);
    let host = match host.map(str::trim) {
        Some("") => {
            p.add("server.host", "is empty");
            None
        }
        Some(h) => match crate::host::bad_host(h) {
            Some(why) => {
                p.add("server.host", why);
                None
            }
            None => Some(h),
        },
        None => None,
    };
    let login = get_str(p, s, "server", "login", true);
    let password = get_str(p, s, "server", "password", false).unwrap_or("");
    let port = match s.get("port") {
        None | Some(Value::Null) => Some(21),
        Some(Value::Number(n)) => match n.as_u64().filter(|n| (1..=65535).contains(n)) {
            Some(n) => Some(n as u16),
            None => {
                p.add("server.port", format!("{n} is not a port number (1-65535)"));
                None
            }
        },
        Some(Value::String(t)) => match t.trim().parse::<u16>().ok().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                p.add(
                    "server.port",
                    format!("{t:?} is not a port number (1-65535)"),
                );
                None
            }
        },
        Some(other) => {
            p.add(
                "server.port",
                format!("must be a number or a string, found {}", kind(other)),
            );
            None
        }
    };
    let tls = match s.get("tls") {
        None | Some(Value::Null) => TlsMode::None,
        Some(v) => parse_tls(v).unwrap_or_else(|e| {
            p.add("server.tls", e);
            TlsMode::None
        }),
    };
    let ca_file = get_str(p, s, "server", "ca_file", false).map(PathBuf::from);
    let insecure = match s.get("insecure_skip_verify") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            p.add(
                "server.insecure_skip_verify",
                format!("must be a boolean, found {}", kind(other)),
            );
            false
        }
    };
    Some(ServerSpec {
        host: host?.to_string(),
        port: port?,
        login: login?.to_string(),
        password: Secret::new(password),
        tls,
        ca_file,
        insecure_skip_verify: insecure,
        resolve_into: None,
        names: Default::default(),
        tls_options: Default::default(),
        proxy: None,
        data: Default::default(),
        virtual_host: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_a_password_as_host_is_refused_without_echoing_it() {
        let job = r#"[{"server": {"host": "ftp://bob:hunter2@ftp.example.net:2121", "port": 21,
                      "login": "u", "password": "p"},
                      "file": {"local_path": "/tmp/x", "server_path": "d"}}]"#;
        let problems = parse_str(job).unwrap_err();
        let text = problems.join("\n");
        assert!(
            text.contains("is a URL") && text.contains("bob:***@"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(crate::host::without_password("user@host"), "user@host");
        assert_eq!(crate::host::without_password("a:b@c@host"), "a:***@host");
    }

    fn parse_str(s: &str) -> Result<Job, Vec<String>> {
        parse(s.as_bytes(), &Config::default())
    }

    #[test]
    fn seed_format_with_string_port() {
        let job = parse_str(
            r#"[{"server":{"host":"192.168.0.104","port":"2121","login":"admin","password":"1234"},
                 "file":{"local_path":"D:/Exemple/of/path/file.dwg","server_path":"LocalPath/subfolder1"}}]"#,
        )
        .unwrap();
        let e = &job.entries[0];
        assert_eq!(e.server.port, 2121);
        assert_eq!(e.remote_name, "file.dwg");
        assert_eq!(e.remote_path(), "LocalPath/subfolder1/file.dwg");
        assert_eq!(e.if_exists, IfExists::Overwrite);
    }

    #[test]
    fn single_object_and_default_port_and_backslashes() {
        let job = parse_str(
            r#"{"server":{"host":"h","login":"u","password":"p"},
                "file":{"local_path":"C:\\data\\План отчёт 2024.txt","server_path":"/abs"}}"#,
        )
        .unwrap();
        assert_eq!(job.entries[0].server.port, 21);
        assert_eq!(job.entries[0].remote_path(), "/abs/План отчёт 2024.txt");
    }

    #[test]
    fn every_problem_is_named() {
        let errs = parse_str(
            r#"[{"server":{"host":"h","login":"u","password":"p"},"file":{"local_path":"/a","server_path":"x"}},
                {"server":{"host":5,"port":"abc","login":"u"},"file":{"local_path":"/a","server_path":"x"},"extra":1},
                {"server":{"host":"h","login":"u"},"file":{"local_path":"/a\r\nDELE x","server_path":"a\nb"}}]"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(
            all.contains("entries[1].server.host: must be a string"),
            "{all}"
        );
        assert!(
            all.contains("entries[1].server.port: \"abc\" is not a port"),
            "{all}"
        );
        assert!(all.contains("entries[1].extra: unknown field"), "{all}");
        assert!(
            all.contains("entries[2].file.local_path: contains a line break"),
            "{all}"
        );
        assert!(
            all.contains("entries[2].file.server_path: contains a line break"),
            "{all}"
        );
        assert!(!all.contains("entries[0]"), "{all}");
    }

    #[test]
    fn malformed_and_empty() {
        assert!(parse_str("[{").unwrap_err()[0].starts_with("not valid JSON"));
        assert_eq!(parse_str("[]").unwrap_err(), vec!["the job has no entries"]);
        assert!(parse_str("42").unwrap_err()[0].contains("found a number"));
    }

    #[test]
    fn debug_hides_password() {
        let job = parse_str(
            r#"{"server":{"host":"h","login":"u","password":"TopSecret1"},"file":{"local_path":"/a","server_path":""}}"#,
        )
        .unwrap();
        assert!(!format!("{job:?}").contains("TopSecret1"));
    }

    #[test]
    fn named_server_password_resolved_for_every_entry_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let mut cfg = Config::default();
        let def = |extra: serde_json::Value| -> crate::config::ServerDef {
            let mut v = serde_json::json!({"host": "h", "login": "u"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(v).unwrap()
        };
        cfg.servers
            .insert("good".into(), def(serde_json::json!({"password_file": pw})));
        cfg.servers.insert(
            "bad".into(),
            def(serde_json::json!({"password_env": "FTPDROP_TEST_UNSET_VAR"})),
        );
        let entry = |s: &str| {
            format!(r#"{{"server":"{s}","file":{{"local_path":"/a","server_path":"x"}}}}"#)
        };
        let job = parse(
            format!("[{},{}]", entry("good"), entry("good")).as_bytes(),
            &cfg,
        )
        .unwrap();
        for e in &job.entries {
            assert_eq!(e.server.password.expose(), "from-file");
        }
        let errs = parse(
            format!("[{},{},{}]", entry("bad"), entry("good"), entry("bad")).as_bytes(),
            &cfg,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("entries[0].server: "), "{errs:?}");
        assert!(errs[1].starts_with("entries[2].server: "), "{errs:?}");
        assert!(errs[1].contains("FTPDROP_TEST_UNSET_VAR"), "{errs:?}");
    }

    fn one(server: &str) -> String {
        format!(r#"[{{"server":{server},"file":{{"local_path":"/a/f.txt","server_path":"x"}}}}]"#)
    }

    #[test]
    fn url_hosts_get_a_hint() {
        let errs = parse_str(&one(r#"{"host":"ftp://10.0.0.5:2121","login":"u"}"#)).unwrap_err();
        assert_eq!(
            errs,
            vec![
                r#"entries[0].server.host: "ftp://10.0.0.5:2121" is a URL, not a host name; write "host": "10.0.0.5", "port": 2121"#
            ]
        );
        let errs =
            parse_str(&one(r#"{"host":"ftps://files.example.com","login":"u"}"#)).unwrap_err();
        assert!(errs[0].contains(r#""tls": "implicit""#), "{errs:?}");
        let errs = parse_str(&one(r#"{"host":"files.example.com:21","login":"u"}"#)).unwrap_err();
        assert!(errs[0].contains("includes a port"), "{errs:?}");
        parse_str(&one(r#"{"host":"::1","login":"u"}"#)).unwrap();
        parse_str(&one(r#"{"host":"[::1]","login":"u"}"#)).unwrap();
    }

    #[test]
    fn bom_and_schema_key_are_accepted() {
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend_from_slice(
            br#"{"$schema":"schema/job.schema.json","server":{"host":"h","login":"u"},"file":{"local_path":"/a","server_path":""}}"#,
        );
        parse(&bytes, &Config::default()).unwrap();
    }

    #[test]
    fn confinement_of_servers_and_hosts() {
        let mut cfg = Config {
            allowed_hosts: vec!["*.example.net".into(), "10.0.0.0/8".into()],
            ..Config::default()
        };
        cfg.servers.insert(
            "b".into(),
            serde_json::from_value(serde_json::json!({"host": "ftp.example.net", "login": "u", "password": "p", "tls": "explicit"})).unwrap(),
        );
        let p = |s: &str| parse(s.as_bytes(), &cfg);
        p(&one(r#"{"host":"a.example.net","login":"u"}"#)).unwrap();
        p(&one(r#"{"host":"10.1.2.3","login":"u"}"#)).unwrap();
        let errs = p(&one(r#"{"host":"192.168.0.104","login":"u"}"#)).unwrap_err();
        assert_eq!(
            errs,
            vec!["entries[0].server.host: 192.168.0.104 is not in allowed_hosts"]
        );
        // A name only networks admit must resolve into them when connecting.
        let job = p(&one(r#"{"host":"evil.org","login":"u"}"#)).unwrap();
        assert!(job.entries[0].server.resolve_into.is_some());
        p(&one(r#""b""#)).unwrap();
        // A job cannot turn a configured server's TLS off.
        let errs =
            p(r#"[{"server":"b","tls":"none","file":{"local_path":"/a","server_path":""}}]"#)
                .unwrap_err();
        assert!(errs[0].starts_with("entries[0].tls: "), "{errs:?}");

        cfg.require_named_servers = true;
        let p = |s: &str| parse(s.as_bytes(), &cfg);
        let errs = p(&one(
            r#"{"host":"a.example.net","login":"u","password":"pw1"}"#,
        ))
        .unwrap_err();
        assert!(
            errs[0].starts_with("entries[0].server: inline servers"),
            "{errs:?}"
        );
        assert!(!errs[0].contains("pw1"));
        p(&one(r#""b""#)).unwrap();
        let errs = p(&one(r#""nope""#)).unwrap_err();
        assert!(errs[0].contains("configured: b"), "{errs:?}");
    }

    #[test]
    fn a_redacted_job_cannot_run_again() {
        let errs = parse_str(&one(&format!(
            r#"{{"host":"h","login":"u","password":"{REDACTED}"}}"#
        )))
        .unwrap_err();
        assert!(
            errs[0].starts_with("entries[0].server.password: was redacted"),
            "{errs:?}"
        );
    }

    #[test]
    fn windows_paths_give_plain_remote_names() {
        for local in [
            r"D:\data\file.dwg",
            "D:/data/file.dwg",
            r"\\server\share\file.dwg",
            "//server/share/file.dwg",
            "/data/file.dwg",
        ] {
            let job = parse_str(&format!(
                r#"{{"server":{{"host":"h","login":"u"}},"file":{{"local_path":{},"server_path":"out"}}}}"#,
                serde_json::to_string(local).unwrap()
            ))
            .unwrap();
            let e = &job.entries[0];
            assert_eq!(e.remote_name, "file.dwg", "{local}");
            assert_eq!(e.remote_path(), "out/file.dwg", "{local}");
        }
    }

    #[test]
    fn remote_join() {
        assert_eq!(join_remote("", "a"), "a");
        assert_eq!(join_remote("/", "a"), "/a");
        assert_eq!(join_remote("x/y/", "a"), "x/y/a");
    }
}
