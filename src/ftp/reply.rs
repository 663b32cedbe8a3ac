//! Server replies that ftpdrop reads itself: the FEAT list into
//! [`Features`], SIZE, and the passive-mode addresses of EPSV and PASV. (Reply codes and the text that classifies a
//! fault are in [`crate::ftp::fault`]; digests in [`crate::upload::verify`].) Pure
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
    /// `MFMT`: the server sets a file's modification time.
    pub mfmt: bool,
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
                "MFMT" => f.mfmt = true,
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

/// The port in an EPSV reply: `229 Entering Extended Passive Mode (|||6446|)`.
/// RFC 2428 lets the delimiter be any character; the address part is empty.
pub fn epsv_port(reply: &str) -> Option<u16> {
    let line = reply.lines().last()?;
    let inner = line.get(line.find('(')? + 1..line.rfind(')')?)?;
    let d = inner.chars().next()?;
    let fields: Vec<&str> = inner.split(d).collect();
    // "", "", "", port, ""
    match fields.as_slice() {
        [_, _, _, port, ""] => port.trim().parse().ok().filter(|p| *p != 0),
        _ => None,
    }
}

/// The address in a PASV reply: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
/// Some servers leave the parentheses out, so the six numbers are found anywhere.
pub fn pasv_addr(reply: &str) -> Option<std::net::SocketAddrV4> {
    let line = reply.lines().last()?;
    let text = line.strip_prefix("227").unwrap_or(line);
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let nums: Vec<u8> = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|s| !s.is_empty())
        .map(|s| s.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = nums.get(..6)?.try_into().ok()?;
    let port = u16::from(p1) << 8 | u16::from(p2);
    (port != 0).then(|| std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(a, b, c, d), port))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passive_addresses() {
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(epsv_port("229 EPSV ok (!!!21000!)\r\n"), Some(21000));
        assert_eq!(epsv_port("229 (|||0|)"), None);
        assert_eq!(epsv_port("229 (|||70000|)"), None);
        assert_eq!(epsv_port("229 no parens"), None);
        assert_eq!(epsv_port("229 )("), None);
        assert_eq!(
            pasv_addr("227 Entering Passive Mode (127,0,0,1,195,80)."),
            Some("127.0.0.1:50000".parse().unwrap())
        );
        assert_eq!(
            pasv_addr("227 Entering Passive Mode 10,1,2,3,4,5"),
            Some("10.1.2.3:1029".parse().unwrap())
        );
        assert_eq!(pasv_addr("227 (1,2,3,4,5)"), None);
        assert_eq!(pasv_addr("227 (300,2,3,4,5,6)"), None);
        assert_eq!(pasv_addr(""), None);
    }

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
