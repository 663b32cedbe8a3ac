//! The job parser and validator, with and without confinement, and the
//! redaction of ended jobs: never a panic, and a redacted job keeps no
//! password but the marker.
#![no_main]

use ftpdrop::job::REDACTED;
use ftpdrop::Config;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

fn confined() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut cfg: Config = ftpdrop::config::parse(
            r#"{"allowed_hosts": ["ftp.example.net", "*.example.org", "10.0.0.0/8", "::1"],
                "local_roots": ["/nonexistent-ftpdrop-fuzz-root"],
                "servers": {"backup": {"host": "ftp.example.net", "login": "u", "password": "p"}}}"#,
        )
        .unwrap();
        cfg.max_job_bytes = 1 << 20;
        cfg
    })
}

fn passwords_left(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (k == "password" && v.as_str().is_some_and(|s| !s.is_empty() && s != REDACTED))
                || passwords_left(v)
        }),
        Value::Array(a) => a.iter().any(passwords_left),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ftpdrop::job::parse(data, &Config::default());
    let mut strict = confined().clone();
    let _ = ftpdrop::job::parse(data, &strict);
    strict.require_named_servers = true;
    if let Ok(job) = ftpdrop::job::parse(data, &strict) {
        for e in &job.entries {
            assert_eq!(
                e.server.host, "ftp.example.net",
                "an inline host got through"
            );
        }
    }
    if let Some(out) = ftpdrop::run::housekeeping::redacted(data) {
        match serde_json::from_slice::<Value>(&out) {
            Ok(v) => assert!(!passwords_left(&v), "a password survived redaction"),
            // The redaction keeps everything but the passwords byte for
            // byte, so a number beyond what `Value` holds (211E34943719) is
            // kept too: valid JSON that `Value` cannot read. Then the input
            // must not read either (the unit test
            // `a_number_beyond_f64_is_kept_and_the_password_still_goes`
            // checks the password).
            Err(_) => assert!(
                serde_json::from_slice::<Value>(data).is_err(),
                "redaction broke JSON that read"
            ),
        }
    }
});
