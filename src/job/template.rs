//! Remote names and folders from templates: `in/{date:%Y-%m-%d}`,
//! `{stem}_{job}{ext}`, `{job}.ok`.
//!
//! A template is checked when the job is parsed (an unknown placeholder or
//! a bad strftime format makes the job invalid and names the field) and
//! expanded once, when the job is claimed, against the claim time. The
//! runner keeps the result in the receipt's journal, so a retry after
//! midnight or a resume after a crash uses the same name.
//!
//! Placeholders: `{date:<strftime>}` and `{time:<strftime>}` (the claim
//! time, local; `{date}` is `%Y-%m-%d`, `{time}` is `%H%M%S`), `{job}`,
//! `{name}` (the local file's name), `{stem}` and `{ext}` (its name
//! without and with only its last extension, dot included). `{{` and `}}`
//! are literal braces.

use chrono::{DateTime, Local};

/// What a template's placeholders stand for.
pub(crate) struct Vars<'a> {
    pub(crate) claimed: DateTime<Local>,
    pub(crate) job: &'a str,
    /// The local file's name, where the template belongs to a file.
    pub(crate) name: Option<&'a str>,
}

/// One piece of a template.
enum Piece<'t> {
    Text(&'t str),
    Date(&'t str),
    Job,
    Name,
    Stem,
    Ext,
}

/// The placeholders a template may use, for the error that lists them.
const KNOWN: &str = "{date:<strftime>}, {time:<strftime>}, {job}, {name}, {stem}, {ext}";

/// Does `s` use any placeholder (or escaped brace)? Plain names are the
/// common case and are left alone.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains(['{', '}'])
}

/// Does the template name the file (`{name}`, `{stem}`, `{ext}`)? A done
/// marker whose name does is one per file rather than one per folder.
pub(crate) fn names_file(s: &str) -> bool {
    matches!(pieces(s), Ok(p) if p.iter().any(|p| matches!(p, Piece::Name | Piece::Stem | Piece::Ext)))
}

/// Checks a template: every placeholder known, every format valid, and
/// (`file`) file placeholders only where there is a file.
pub(crate) fn check(s: &str, file: bool) -> Result<(), String> {
    for p in pieces(s)? {
        match p {
            Piece::Date(fmt) => {
                chrono::format::StrftimeItems::new(fmt)
                    .parse()
                    .map_err(|_| format!("{fmt:?} is not a valid strftime format"))?;
            }
            Piece::Name | Piece::Stem | Piece::Ext if !file => {
                return Err("{name}, {stem} and {ext} need a file; a job-wide name may use {date}, {time} and {job}".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A name template (`remote_name`, a done marker's name): valid, and a
/// plain file name once expanded. Expanded with sample values, as
/// `{date:%Y/%m}` in a name would put the file in folders.
pub(crate) fn check_name(t: &str) -> Result<(), String> {
    if t.trim().is_empty() {
        return Err("is empty".into());
    }
    if t.contains(['\r', '\n', '\0']) {
        return Err("contains a line break or a NUL byte".into());
    }
    check(t, true)?;
    let sample = Vars {
        claimed: Local::now(),
        job: "job",
        name: Some("file.txt"),
    };
    let n = expand(t, &sample)?;
    if n.contains(['/', '\\']) || n == "." || n == ".." {
        return Err(format!(
            "must expand to a plain file name without / or \\ (it gives {n:?})"
        ));
    }
    Ok(())
}

/// The template with its placeholders replaced.
pub(crate) fn expand(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(s.len() + 16);
    for p in pieces(s)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Date(fmt) => {
                let items = chrono::format::StrftimeItems::new(fmt)
                    .parse()
                    .map_err(|_| format!("{fmt:?} is not a valid strftime format"))?;
                out.push_str(
                    &vars
                        .claimed
                        .format_with_items(items.into_iter())
                        .to_string(),
                );
            }
            Piece::Job => out.push_str(vars.job),
            Piece::Name | Piece::Stem | Piece::Ext => {
                let name = vars.name.ok_or("{name}, {stem} and {ext} need a file")?;
                let (stem, ext) = split_ext(name);
                out.push_str(match p {
                    Piece::Name => name,
                    Piece::Stem => stem,
                    _ => ext,
                });
            }
        }
    }
    Ok(out)
}

/// `report.tar.gz` → (`report.tar`, `.gz`); `.profile` and `README` have no extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some(i) = rest.find(['{', '}']) else {
            out.push(Piece::Text(rest));
            break;
        };
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push(Piece::Text("{"));
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("}}") {
            out.push(Piece::Text("}"));
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err("has a } without its { (write }} for a literal brace)".into());
        }
        let Some(end) = tail.find('}') else {
            return Err("has a { without its } (write {{ for a literal brace)".into());
        };
        let inner = &tail[1..end];
        let (key, arg) = match inner.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (inner, None),
        };
        out.push(match (key, arg) {
            ("date", a) => Piece::Date(a.unwrap_or("%Y-%m-%d")),
            ("time", a) => Piece::Date(a.unwrap_or("%H%M%S")),
            ("job", None) => Piece::Job,
            ("name", None) => Piece::Name,
            ("stem", None) => Piece::Stem,
            ("ext", None) => Piece::Ext,
            _ => {
                let hint = match crate::suggest::closest(key, &["date", "time", "job", "name", "stem", "ext"]) {
                    Some(m) if m != key => format!(" (did you mean {{{m}}}?)"),
                    _ => String::new(),
                };
                return Err(format!(
                    "unknown placeholder {{{inner}}}{hint}; known: {KNOWN}, and {{{{ }}}} for braces"
                ));
            }
        });
        rest = &tail[end + 1..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn vars(name: Option<&str>) -> Vars<'_> {
        Vars {
            claimed: Local.with_ymd_and_hms(2026, 3, 9, 23, 59, 58).unwrap(),
            job: "orders-17",
            name,
        }
    }

    #[test]
    fn expands_every_placeholder() {
        let v = vars(Some("отчёт.tar.gz"));
        assert_eq!(expand("in/{date:%Y-%m-%d}", &v).unwrap(), "in/2026-03-09");
        assert_eq!(expand("{date}/{time}", &v).unwrap(), "2026-03-09/235958");
        assert_eq!(
            expand("{stem}_{job}{ext}", &v).unwrap(),
            "отчёт.tar_orders-17.gz"
        );
        assert_eq!(expand("{name}.done", &v).unwrap(), "отчёт.tar.gz.done");
        assert_eq!(
            expand("{{literal}} {job}", &v).unwrap(),
            "{literal} orders-17"
        );
        assert_eq!(expand("README", &v).unwrap(), "README");
        assert_eq!(split_ext(".profile"), (".profile", ""));
        assert_eq!(split_ext("README"), ("README", ""));
    }

    #[test]
    fn bad_templates_say_why() {
        let e = check("in/{dat:%Y}", true).unwrap_err();
        assert!(e.contains("unknown placeholder {dat:%Y}"), "{e}");
        assert!(e.contains("did you mean {date}"), "{e}");
        assert!(check("{job", true).unwrap_err().contains("without its }"));
        assert!(check("a}b", true).unwrap_err().contains("without its {"));
        assert!(check("{date:%Q}", true)
            .unwrap_err()
            .contains("not a valid strftime"));
        assert!(check("{name}.ok", false)
            .unwrap_err()
            .contains("need a file"));
        check("{job}.ok", false).unwrap();
        assert!(names_file("{stem}.done") && !names_file("{job}.ok"));
    }
}
