//! The daemon's configuration file: every field, its default, and validation.
//!
//! Every field is optional, so `ftpdrop run` works with no file at all.
//! Unknown keys are rejected by name, because a misspelt key that is silently
//! ignored is a setting the operator believes in but does not have.

use crate::secret::Secret;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS mode of an FTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain FTP.
    #[default]
    None,
    /// `AUTH TLS` on the normal port, then TLS on control and data.
    Explicit,
    /// TLS from the first byte (usually port 990).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Watched folder for `*.json` job files.
    pub inbox: PathBuf,
    /// Claimed jobs and their receipts.
    pub checked: PathBuf,
    /// Global cap on simultaneous FTP control connections (the seeds' MAX_CONNECTIONS).
    pub max_connections: usize,
    /// Cap on simultaneous connections to one server (host, port, login, TLS mode).
    pub max_connections_per_server: usize,
    /// Jobs worked on at once; further job files wait in the inbox (back-pressure).
    pub max_concurrent_jobs: usize,
    /// TCP connect plus greeting, seconds.
    pub connect_timeout_secs: u64,
    /// One FTP command and its reply, seconds.
    pub command_timeout_secs: u64,
    /// A data connection that moves no byte for this long is a fault, seconds.
    pub data_timeout_secs: u64,
    /// A job file is read only after its size and mtime stayed unchanged this long.
    pub settle_ms: u64,
    /// Full scan of the inbox as a safety net for missed events (and NFS), milliseconds.
    pub sweep_interval_ms: u64,
    /// Job files larger than this are rejected as invalid.
    pub max_job_bytes: u64,
    /// Retry policy for transient faults.
    pub retry: RetryConfig,
    /// On SIGTERM/SIGINT, how long in-flight uploads may run before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Idle logged-in sessions are closed after this long.
    pub idle_session_secs: u64,
    /// Files at least this big go over several connections at once, one
    /// segment each, where the server allows it (see `segment`); 0 turns
    /// segmented uploads off.
    pub segment_threshold_bytes: u64,
    /// Most connections one segmented upload uses, the first included; 0 or 1 turns them off.
    pub max_segments: usize,
    /// How long a big file goes in one stream before it may be split; it is
    /// split only if the rest would then take over 2 s at the rate so far.
    /// 0: split at once, without measuring.
    pub segment_after_ms: u64,
    /// Servers that job files may name instead of carrying credentials.
    pub servers: BTreeMap<String, ServerDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per entry, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt, milliseconds; doubles each time.
    pub initial_backoff_ms: u64,
    /// Upper bound of one backoff, milliseconds.
    pub max_backoff_ms: u64,
}

/// A server defined once in the config and named by jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDef {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub login: String,
    /// Inline password (prefer `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM bundle of CAs trusted for this server, instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Logged loudly at every connect.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_port() -> u16 {
    21
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbox: PathBuf::from("files"),
            checked: PathBuf::from("checked"),
            max_connections: 8,
            max_connections_per_server: 4,
            max_concurrent_jobs: 4,
            connect_timeout_secs: 15,
            command_timeout_secs: 30,
            data_timeout_secs: 60,
            settle_ms: 300,
            sweep_interval_ms: 3000,
            max_job_bytes: 16 * 1024 * 1024,
            retry: RetryConfig::default(),
            shutdown_grace_secs: 30,
            idle_session_secs: 60,
            segment_threshold_bytes: 64 * 1024 * 1024,
            max_segments: 4,
            segment_after_ms: 1000,
            servers: BTreeMap::new(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        }
    }
}

impl ServerDef {
    /// The password from wherever the definition says it lives.
    pub fn resolve_password(&self, name: &str) -> Result<Secret> {
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("servers.{name}: give only one of password, password_env, password_file");
        }
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Secret::new).with_context(|| {
                format!("servers.{name}.password_env: variable {var} is not set")
            });
        }
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "servers.{name}.password_file: cannot read {}",
                    file.display()
                )
            })?;
            return Ok(Secret::new(text.lines().next().unwrap_or("").to_string()));
        }
        Ok(Secret::default())
    }
}

/// JSON has no comments; keys starting with `//` serve as comments and are dropped.
fn strip_comments(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.starts_with("//"));
            map.values_mut().for_each(strip_comments);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_comments),
        _ => {}
    }
}

impl Config {
    /// Reads a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let mut value: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("config file {} is not valid JSON", p.display()))?;
                strip_comments(&mut value);
                serde_json::from_value(value)
                    .with_context(|| format!("config file {} is invalid", p.display()))?
            }
        };
        cfg.validate()?;
        cfg.resolve_paths()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.max_connections_per_server == 0 {
            bail!("max_connections_per_server must be at least 1");
        }
        if self.max_concurrent_jobs == 0 {
            bail!("max_concurrent_jobs must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            bail!("retry.max_attempts must be at least 1");
        }
        if self.connect_timeout_secs == 0
            || self.command_timeout_secs == 0
            || self.data_timeout_secs == 0
        {
            bail!("timeouts must be at least 1 second");
        }
        for (name, def) in &self.servers {
            if def.host.is_empty() {
                bail!("servers.{name}.host is empty");
            }
            for (field, value) in [("host", &def.host), ("login", &def.login)] {
                if value.contains(['\r', '\n', '\0']) {
                    bail!("servers.{name}.{field}: contains a line break or NUL");
                }
            }
            def.resolve_password(name)?;
        }
        Ok(())
    }

    /// Makes the folders absolute against the working directory and creates them.
    fn resolve_paths(&mut self) -> Result<()> {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        for (what, dir) in [("inbox", &mut self.inbox), ("checked", &mut self.checked)] {
            if dir.is_relative() {
                *dir = cwd.join(&*dir);
            }
            std::fs::create_dir_all(&*dir)
                .with_context(|| format!("{what}: cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.max_connections, 8);
        assert_eq!(cfg.max_connections_per_server, 4);
        assert_eq!(cfg.inbox, PathBuf::from("files"));
        assert_eq!(cfg.segment_threshold_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.max_segments, 4);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = serde_json::from_str::<Config>(r#"{"max_conections": 3}"#).unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json");
        let text = std::fs::read_to_string(path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        strip_comments(&mut v);
        let cfg: Config = serde_json::from_value(v).unwrap();
        assert!(cfg.servers.contains_key("backup"));
    }

    #[test]
    fn server_password_from_env() {
        std::env::set_var("FTPDROP_TEST_PW", "pw-from-env");
        let def: ServerDef =
            serde_json::from_str(r#"{"host":"h","login":"u","password_env":"FTPDROP_TEST_PW"}"#)
                .unwrap();
        assert_eq!(def.resolve_password("x").unwrap().expose(), "pw-from-env");
        assert_eq!(def.port, 21);
    }
}
