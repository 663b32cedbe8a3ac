//! JSON Schemas of the job file and the configuration, generated from types.
//!
//! The config schema comes from [`Config`] itself. The job parser walks raw
//! JSON (to name every bad field, not just the first), so the job file's
//! shape is declared here once more as plain types; `tests/schema.rs` keeps
//! the two honest by running every example through both. The schemas are
//! committed under `schema/` for editors (`"$schema"`), and a test fails
//! when they drift from the code.

use crate::config::{Config, MarkerSpec, TlsMode};
use crate::job::{After, IfExists, Verify};
use schemars::{JsonSchema, Schema};
use serde_json::Value;

/// A job file: an array of entries, a single entry object, or entries with
/// job-wide defaults.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum JobFile {
    Entries(Vec<JobEntry>),
    Entry(Box<JobEntry>),
    WithDefaults(JobWithDefaults),
}

/// Entries, and defaults for every entry that does not set its own.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JobWithDefaults {
    #[serde(rename = "$schema")]
    schema: Option<String>,
    entries: Vec<JobEntry>,
    /// What becomes of each local file once it is uploaded, verified and published.
    after: Option<After>,
    /// A file uploaded after every file of the job in a remote folder (one
    /// per folder, or one per file when its name uses `{name}`, `{stem}` or
    /// `{ext}`), and only if they all arrived. Replaces the named server's
    /// default; `null` turns that off.
    done_marker: Option<MarkerSpec>,
}

/// One local file to upload to one place.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JobEntry {
    /// The schema this file follows, for editors; ignored by ftpdrop.
    #[serde(rename = "$schema")]
    schema: Option<String>,
    /// The server: inline, or the name of one in the daemon's configuration.
    server: ServerRef,
    file: FileSpec,
    /// Overrides the inline server's TLS mode.
    tls: Option<TlsMode>,
    /// PEM bundle of CAs trusted for an inline server.
    ca_file: Option<String>,
    /// When the remote file exists: `overwrite` (default), `skip`, `fail`, or
    /// `skip_if_identical` (skipped when the server's file has the same size
    /// and, where the server hashes, the same digest; replaced otherwise).
    if_exists: Option<IfExists>,
    /// `sha256`: publish `<name>.sha256` (the `sha256sum` format) after the
    /// file; `none` (default).
    sidecar: Option<Sidecar>,
    /// `auto` (size, and a server-side hash where offered; default), `size`,
    /// `download` (read back), or `none` (a drop box without SIZE: the
    /// receipt says "sent, not verified"). Unset: the named server's.
    verify: Option<Verify>,
    /// What becomes of the local file once it is uploaded, verified and
    /// published: `keep` (default), `delete`, or `{"move_to": "/dir"}`.
    after: Option<After>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Sidecar {
    None,
    Sha256,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ServerRef {
    /// A server defined in the configuration's `servers`.
    Named(String),
    Inline(InlineServer),
}

/// A server given in the job itself (refused when the daemon sets `require_named_servers`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct InlineServer {
    /// Host name or IP address, not a URL.
    host: String,
    /// Port, a number or a string; default 21.
    port: Option<Port>,
    login: String,
    password: Option<String>,
    tls: Option<TlsMode>,
    ca_file: Option<String>,
    /// Accept any certificate (logged as a warning at every connect).
    insecure_skip_verify: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Port {
    Number(#[schemars(range(min = 1, max = 65535))] u16),
    Text(#[schemars(regex(pattern = r"^\s*[0-9]{1,5}\s*$"))] String),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FileSpec {
    /// The local file (any Unicode name; Windows paths allowed).
    local_path: String,
    /// Remote directory, created as needed; relative to the login directory
    /// unless it starts with `/`. A template: `{date:<strftime>}` and
    /// `{time:<strftime>}` (the claim time, local), `{job}`, `{name}`,
    /// `{stem}`, `{ext}`; `{{` and `}}` for braces. Expanded once, when the
    /// job is claimed.
    server_path: String,
    /// File name on the server, if not the local one's; a template like
    /// `server_path` (`"{stem}_{job}{ext}"`).
    remote_name: Option<String>,
}

fn generate<T: JsonSchema>(id: &str) -> Value {
    let gen = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema: Schema = gen.into_root_schema_for::<T>();
    let mut v = schema.to_value();
    allow_comment_keys(&mut v);
    if let Value::Object(map) = &mut v {
        map.insert(
            "$id".into(),
            Value::String(format!("https://ftpdrop.invalid/schema/{id}")),
        );
    }
    v
}

/// Objects that refuse unknown keys still take `//` keys: the config's
/// comments (the daemon drops them before reading).
fn allow_comment_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.insert("patternProperties".into(), serde_json::json!({"^//": {}}));
            }
            map.values_mut().for_each(allow_comment_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(allow_comment_keys),
        _ => {}
    }
}

/// The job file's schema.
pub fn job() -> Value {
    let mut v = generate::<JobFile>("job.schema.json");
    // A job's entries take no comment keys: the job parser refuses them.
    strip_comment_keys(&mut v);
    v
}

fn strip_comment_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("patternProperties");
            map.values_mut().for_each(strip_comment_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_comment_keys),
        _ => {}
    }
}

/// The configuration file's schema.
pub fn config() -> Value {
    let mut v = generate::<Config>("config.schema.json");
    if let Some(Value::Object(props)) = v.get_mut("properties") {
        props.insert(
            "$schema".into(),
            serde_json::json!({"type": "string", "description": "The schema this file follows, for editors; ignored by ftpdrop."}),
        );
    }
    v
}

/// A schema as committed: pretty JSON and a final newline.
pub fn render(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a schema serializes");
    s.push('\n');
    s
}
