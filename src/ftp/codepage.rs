//! File names on servers that do not speak UTF-8: Russian hosting and
//! Windows servers store names in cp1251 (sometimes koi8-r or cp866), and
//! a name sent as UTF-8 lands there as mojibake.
//!
//! [`Page`] is suppaftp's `Encoding` for a code page: every command suppaftp
//! sends goes through it, and so do the command lines the control
//! connection writes itself ([`wire`]). A name the code page cannot write is
//! refused before anything is sent ([`representable`]): nothing ever goes
//! to a server under a lossy name. `я` is 0xFF in cp1251, the Telnet IAC
//! byte, and is doubled on the wire as RFC 854 asks.

use crate::config::CodePage;
use std::io;

/// suppaftp's view of a code page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page(pub(crate) CodePage);

fn table(page: CodePage) -> &'static encoding_rs::Encoding {
    match page {
        CodePage::Utf8 => encoding_rs::UTF_8,
        CodePage::Cp1251 => encoding_rs::WINDOWS_1251,
        CodePage::Koi8R => encoding_rs::KOI8_R,
        CodePage::Cp866 => encoding_rs::IBM866,
    }
}

/// How operators spell it: `cp1251`, `koi8-r`, ...
pub(crate) fn name(page: CodePage) -> &'static str {
    match page {
        CodePage::Utf8 => "utf-8",
        CodePage::Cp1251 => "cp1251",
        CodePage::Koi8R => "koi8-r",
        CodePage::Cp866 => "cp866",
    }
}

/// `text` in `page`, or the first character it cannot write.
fn encode(page: CodePage, text: &str) -> Result<Vec<u8>, char> {
    if page == CodePage::Utf8 {
        return Ok(text.as_bytes().to_vec());
    }
    let (bytes, _, lossy) = table(page).encode(text);
    if !lossy {
        return Ok(bytes.into_owned());
    }
    let bad = text
        .chars()
        .find(|c| table(page).encode(c.encode_utf8(&mut [0; 4])).2)
        .unwrap_or('\u{fffd}');
    Err(bad)
}

/// Can `page` write `path`? The error names the character.
pub(crate) fn representable(page: CodePage, path: &str) -> Result<(), String> {
    encode(page, path).map(|_| ()).map_err(|c| {
        format!(
            "{path:?}: the server's names are {}, which has no {c:?} (U+{:04X}); \
             not sent under a lossy name (rename the file, or set the server's \"encoding\")",
            name(page),
            c as u32
        )
    })
}

/// Command lines as bytes for the wire: each in `page`, 0xFF doubled,
/// ended by CRLF.
pub(crate) fn wire(page: CodePage, commands: &[String]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for c in commands {
        let bytes = encode(page, c)
            .map_err(|bad| format!("{bad:?} cannot be written in {}", name(page)))?;
        for b in bytes {
            out.push(b);
            if b == 0xff {
                out.push(0xff);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

impl suppaftp::Encoding for Page {
    fn decode(&self, bytes: &[u8]) -> String {
        table(self.0)
            .decode_without_bom_handling(bytes)
            .0
            .into_owned()
    }

    fn encode(&self, text: &str) -> io::Result<Vec<u8>> {
        encode(self.0, text).map_err(|c| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{c:?} cannot be written in {}", name(self.0)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyrillic_in_each_code_page_and_iac_doubled() {
        assert_eq!(
            encode(CodePage::Cp1251, "План").unwrap(),
            [0xcf, 0xeb, 0xe0, 0xed]
        );
        assert_eq!(encode(CodePage::Koi8R, "я").unwrap(), [0xd1]);
        assert_eq!(encode(CodePage::Cp866, "я").unwrap(), [0xef]);
        assert_eq!(
            wire(CodePage::Cp1251, &["STOR я.txt".into()]).unwrap(),
            b"STOR \xff\xff.txt\r\n"
        );
        use suppaftp::Encoding;
        assert_eq!(Page(CodePage::Cp1251).decode(b"\xcf\xeb\xe0\xed"), "План");
    }

    #[test]
    fn a_name_the_page_cannot_write_is_named() {
        let e = representable(CodePage::Cp1251, "in/Strom ő.txt").unwrap_err();
        assert!(e.contains("'ő' (U+0151)"), "{e}");
        assert!(e.contains("cp1251"), "{e}");
        representable(CodePage::Cp1251, "in/План отчёт 2024.txt").unwrap();
        representable(CodePage::Utf8, "in/ő.txt").unwrap();
    }
}
