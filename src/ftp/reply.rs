//! Server replies that ftpdrop reads itself: the FEAT list into
//! [`Features`], and SIZE. (Reply codes and the text that classifies a
//! fault are in [`crate::fault`]; digests in [`crate::verify`].) Pure
//! functions of the reply text, so that a fuzzer can feed them anything
//! (`fuzz/fuzz_targets/replies.rs`): a server is not trusted to be sane.

/// What the server said about itself in FEAT. A FEAT that fails leaves this empty ("unknown").
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub utf8: bool,
    pub size: bool,
    pub rest_stream: bool,
    pub mlst: bool,
    pub epsv: bool,
    /// Names as the server spells them: `HASH`, `XSHA256`, `XMD5`, ...
    pub hash_commands: Vec<String>,
    /// The algorithms listed on the `HASH` feature line, e.g. `SHA-256*;MD5`.
    pub hash_algos: Vec<String>,
}

impl Features {
    /// What the (name, value) pairs of a FEAT reply say.
    pub fn parse<'a>(feat: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Features {
        let mut f = Features::default();
        for (name, value) in feat {
            let upper = name.trim().to_ascii_uppercase();
            match upper.as_str() {
                "UTF8" => f.utf8 = true,
                "SIZE" => f.size = true,
                "REST" => {
                    f.rest_stream = value.is_some_and(|v| v.to_ascii_uppercase().contains("STREAM"))
                }
                "MLST" => f.mlst = true,
                "EPSV" => f.epsv = true,
                "HASH" => {
                    if !f.hash_commands.contains(&upper) {
                        f.hash_commands.push(upper.clone());
                    }
                    f.hash_algos = value
                        .unwrap_or("")
                        .split(';')
                        .map(|a| a.trim().trim_end_matches('*').to_ascii_uppercase())
                        .filter(|a| !a.is_empty())
                        .collect();
                }
                "XSHA256" | "XSHA1" | "XSHA512" | "XMD5" | "XCRC" | "MD5"
                    if !f.hash_commands.contains(&upper) =>
                {
                    f.hash_commands.push(upper.clone())
                }
                _ => {}
            }
        }
        f
    }
}

/// A raw FEAT reply (`211-Features:` ... `211 End`) as (name, value)
/// pairs: one feature per indented line, its name up to the first space.
/// The session gets the pairs from suppaftp; this reads them from text, for
/// the fuzzer and for tests.
pub fn feat_pairs(reply: &str) -> Vec<(&str, Option<&str>)> {
    reply
        .lines()
        .filter(|l| !l.starts_with("211"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(' ') {
            Some((n, v)) => (n, Some(v.trim())),
            None => (l, None),
        })
        .collect()
}

/// The size in a `213 <size>` reply. Some servers add words after the number.
pub fn size(reply: &str) -> Option<u64> {
    let line = reply.lines().last()?.trim();
    let rest = line.strip_prefix("213")?;
    let rest = rest.strip_prefix([' ', '-']).unwrap_or(rest).trim_start();
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feat_lines() {
        let f = Features::parse(feat_pairs(
            "211-Features:\r\n UTF8\r\n REST STREAM\r\n HASH SHA-256*;MD5\r\n XCRC\r\n XCRC\r\n size\r\n211 End\r\n",
        ));
        assert!(f.utf8 && f.rest_stream && f.size);
        assert_eq!(f.hash_commands, vec!["HASH", "XCRC"]);
        assert_eq!(f.hash_algos, vec!["SHA-256", "MD5"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(size("213 12345\r\n"), Some(12345));
        assert_eq!(size("213 0"), Some(0));
        assert_eq!(size("213 77 bytes"), Some(77));
        assert_eq!(size("213 "), None);
        assert_eq!(size("213 99999999999999999999999"), None);
        assert_eq!(size("550 no"), None);
        assert_eq!(size(""), None);
    }
}
