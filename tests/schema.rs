//! The committed JSON Schemas match the code, and every example in the repo
//! (job files, the example config) passes both the schema and ftpdrop's own
//! validation, so the schema an editor uses tells the truth.

use serde_json::Value;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed(name: &str) -> String {
    std::fs::read_to_string(repo().join("schema").join(name))
        .unwrap_or_else(|e| panic!("schema/{name}: {e}"))
}

#[test]
fn committed_schemas_match_the_code() {
    for (name, generated) in [
        ("job.schema.json", ftpdrop::job::schema::job()),
        ("config.schema.json", ftpdrop::job::schema::config()),
    ] {
        assert!(
            committed(name) == ftpdrop::job::schema::render(&generated),
            "schema/{name} drifted from the code: regenerate it with \
             `cargo run -- schema {} > schema/{name}`",
            name.split('.').next().unwrap()
        );
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&committed(name)).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The configuration the job examples assume: the `backup` server exists.
fn example_config() -> ftpdrop::Config {
    let text = std::fs::read_to_string(repo().join("config.example.json")).unwrap();
    ftpdrop::config::parse(&text).unwrap()
}

fn job_examples() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    assert!(out.len() >= 3, "job examples: {out:?}");
    out
}

#[test]
fn every_example_job_passes_the_schema_and_the_parser() {
    let v = validator("job.schema.json");
    let mut cfg = example_config();
    // The examples name hosts of their own; confinement is not what is checked here.
    cfg.allowed_hosts.clear();
    for path in job_examples() {
        let bytes = std::fs::read(&path).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let errs = errors(&v, &doc);
        assert!(errs.is_empty(), "{}: {errs:?}", path.display());
        std::env::set_var("FTPDROP_BACKUP_PASSWORD", "example");
        ftpdrop::job::parse(&bytes, &cfg).unwrap_or_else(|p| panic!("{}: {p:?}", path.display()));
    }
}

#[test]
fn the_example_config_passes_the_schema_and_the_loader() {
    let v = validator("config.schema.json");
    let path = repo().join("config.example.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let errs = errors(&v, &doc);
    assert!(errs.is_empty(), "{errs:?}");
    example_config().validate().unwrap();
}

/// The schema and the parser agree on what is wrong, too.
#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let v = validator("job.schema.json");
    let bad = [
        r#"[{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a"}}]"#,
        r#"[{"server": {"host": "h", "login": "u", "prot": 1}, "file": {"local_path": "/a", "server_path": ""}}]"#,
        r#"{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a", "server_path": ""}, "if_exists": "replace"}"#,
        r#"{"server": 7, "file": {"local_path": "/a", "server_path": ""}}"#,
        r#"{"server": {"host": "h", "login": "u", "port": 0}, "file": {"local_path": "/a", "server_path": ""}}"#,
        r#"{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a", "server_path": ""}, "if_exists": "skip_if_same"}"#,
        r#"{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a", "server_path": ""}, "sidecar": "md5"}"#,
        r#"{"done_marker": {"name": "{job}.ok", "content": "list"}, "entries": [{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a", "server_path": ""}}]}"#,
        r#"{"done_marker": {"nam": "{job}.ok"}, "entries": [{"server": {"host": "h", "login": "u"}, "file": {"local_path": "/a", "server_path": ""}}]}"#,
    ];
    for text in bad {
        let doc: Value = serde_json::from_str(text).unwrap();
        assert!(!errors(&v, &doc).is_empty(), "the schema accepts {text}");
        assert!(
            ftpdrop::job::parse(text.as_bytes(), &ftpdrop::Config::default()).is_err(),
            "the parser accepts {text}"
        );
    }
}
