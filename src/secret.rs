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
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
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
