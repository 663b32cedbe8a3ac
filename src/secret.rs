//! A string that must never be shown: passwords from job files and config.
//!
//! `Secret` prints as `***` in `Debug` and `Display` and serializes as `***`,
//! so a password cannot leak through a log line, a receipt or an error chain
//! by accident. The only way to read it is [`Secret::expose`], which the FTP
//! session calls once, at login.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A credential. Cloning is cheap enough for passwords.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value. Call it only where the value goes on the wire.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "writeOnly": true})
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every occurrence of each non-empty secret in `text` with `***`.
///
/// Server replies and OS errors are outside our control; a server that echoes
/// the password back in a reply must not get it into a receipt.
pub(crate) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        // One-character passwords would turn every message into stars.
        if s.0.len() >= 3 && out.contains(&s.0) {
            out = out.replace(&s.0, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_json_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn scrub_removes_echoed_passwords() {
        let s = Secret::new("hunter2");
        assert_eq!(scrub("530 bad pass hunter2", &[&s]), "530 bad pass ***");
    }
}

/// A URL as it may be shown (logs, live events, `check-config`): a
/// password in its user part and every query value replaced by `***`.
/// Webhook and NATS URLs carry credentials and tokens there. Several URLs
/// separated by commas (NATS) are each redacted.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            // A lone user part is often a token itself (nats://TOKEN@host).
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, format!("#{f}")),
                None => (query, String::new()),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=***"),
                    None => kv.to_string(),
                })
                .collect();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Serializes a URL redacted (see [`redact_url`]).
pub(crate) fn serialize_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Serializes header values as `***` (they are API keys as often as not).
pub(crate) fn serialize_header_values<S: Serializer>(
    headers: &std::collections::BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(headers.len()))?;
    for k in headers.keys() {
        m.serialize_entry(k, "***")?;
    }
    m.end()
}

#[cfg(test)]
mod url_tests {
    use super::redact_url;

    #[test]
    fn urls_lose_passwords_tokens_and_query_values() {
        assert_eq!(
            redact_url("https://hook:s3cret@example.net/in?token=abc&x=1#f"),
            "https://hook:***@example.net/in?token=***&x=***#f"
        );
        assert_eq!(
            redact_url("nats://TOKEN@n1:4222,nats://u:p@n2:4222"),
            "nats://***@n1:4222,nats://u:***@n2:4222"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080/hook"
        );
    }
}
