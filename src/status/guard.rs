//! What a browser may not make the status API do, decided from the
//! request's headers alone (pure functions, fuzzed).
//!
//! - `Host` must be an IP literal, `localhost`, or a name in
//!   `status.allowed_hosts`: a page on a name its owner controls (DNS
//!   rebinding) is refused, whatever that name resolves to.
//! - A request a browser marks as coming from another site is refused:
//!   `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` that
//!   is not this very API (`null` included). The dashboard page itself
//!   (`GET /`) may be opened from a link anywhere; it holds no data.
//! - Anything that changes state needs `Content-Type: application/json`:
//!   a cross-site form or `text/plain` POST cannot be made without a
//!   preflight, which the API never answers.

/// Why a request was refused (the message the client gets).
pub(crate) type Refusal = (u16, &'static str);

/// The host part of a `Host` header value (brackets of an IPv6 literal
/// kept off, port dropped), lower-cased.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return Some(ip.to_ascii_lowercase());
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Whether the API answers to `host` (the `Host` header's value).
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(name) = host.and_then(host_name) else {
        return false;
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Whether `origin` is the API itself, as reached through `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host.trim())
}

/// The headers [`check`] looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// `Ok` if the request may go on to authentication and its handler.
pub fn check(r: &Seen, allowed_hosts: &[String]) -> Result<(), Refusal> {
    if !host_allowed(r.host, allowed_hosts) {
        return Err((
            421,
            "this Host is not one the API serves (add it to status.allowed_hosts)",
        ));
    }
    let page = r.path == "/" && matches!(r.method, "GET" | "HEAD");
    if !page {
        if let Some(site) = r.fetch_site {
            if !matches!(site.trim(), "same-origin" | "none") {
                return Err((403, "cross-site requests are refused"));
            }
        }
        if let Some(origin) = r.origin {
            if !same_origin(origin, r.host.unwrap_or("")) {
                return Err((403, "cross-origin requests are refused"));
            }
        }
    }
    if !matches!(r.method, "GET" | "HEAD" | "OPTIONS") {
        let json = r.content_type.is_some_and(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
        if !json {
            return Err((
                415,
                "a request that changes state needs Content-Type: application/json",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &'static str, host: &'static str) -> Seen<'static> {
        Seen {
            method: "GET",
            path,
            host: Some(host),
            ..Default::default()
        }
    }

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1:9180",
            "localhost:9180",
            "[::1]:9180",
            "LOCALHOST",
            "10.1.2.3",
        ] {
            assert!(host_allowed(Some(ok), none), "{ok}");
        }
        for bad in [
            "evil.example:9180",
            "",
            "127.0.0.1.nip.io",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(!host_allowed(Some(bad), none), "{bad}");
        }
        assert!(!host_allowed(None, none));
        assert!(host_allowed(
            Some("ftpdrop.corp:443"),
            &["ftpdrop.corp".into()]
        ));
    }

    #[test]
    fn cross_site_and_content_type() {
        let none: &[String] = &[];
        assert!(check(&get("/api/jobs", "127.0.0.1:9180"), none).is_ok());
        assert_eq!(
            check(&get("/api/jobs", "evil.example"), none)
                .unwrap_err()
                .0,
            421
        );
        let mut r = get("/api/ws", "127.0.0.1:9180");
        r.origin = Some("http://evil.example");
        assert_eq!(check(&r, none).unwrap_err().0, 403);
        r.origin = Some("null");
        assert_eq!(check(&r, none).unwrap_err().0, 403);
        r.origin = Some("http://127.0.0.1:9180");
        assert!(check(&r, none).is_ok());
        r.fetch_site = Some("cross-site");
        assert_eq!(check(&r, none).unwrap_err().0, 403);
        let mut page = get("/", "127.0.0.1:9180");
        page.fetch_site = Some("cross-site");
        assert!(check(&page, none).is_ok(), "the page opens from a link");

        let mut post = get("/api/jobs", "127.0.0.1:9180");
        post.method = "POST";
        post.content_type = Some("text/plain");
        assert_eq!(check(&post, none).unwrap_err().0, 415);
        post.content_type = Some("application/x-www-form-urlencoded");
        assert_eq!(check(&post, none).unwrap_err().0, 415);
        post.content_type = Some("application/json; charset=utf-8");
        assert!(check(&post, none).is_ok());
        post.fetch_site = Some("same-site");
        assert_eq!(check(&post, none).unwrap_err().0, 403);
    }
}
