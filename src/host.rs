//! Hosts as jobs and the configuration write them: how a server is named
//! (`host:port`), what cannot be a host name (and what to write instead),
//! and a password pasted into one, hidden.

/// `host:port` (`[v6]:port`): how metrics and the status API name a
/// server, without login or scheme.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a host as written cannot be one, with what to write instead; `None` if it can.
pub(crate) fn bad_host(host: &str) -> Option<String> {
    let shown = without_password(host.trim());
    let host = host.trim();
    if let Some((scheme, rest)) = host.split_once("://") {
        let rest = rest.rsplit('@').next().unwrap_or(rest);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let hint = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() && !h.contains(':') => {
                format!("\"host\": {h:?}, \"port\": {p}")
            }
            _ => format!("\"host\": {hostport:?}"),
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ftps" => ", \"tls\": \"implicit\"",
            "ftpes" => ", \"tls\": \"explicit\"",
            _ => "",
        };
        return Some(format!(
            "{shown:?} is a URL, not a host name; write {hint}{tls}"
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || crate::job::confine::valid_name(host) {
        return None;
    }
    if let Some((h, p)) = host.rsplit_once(':') {
        if p.parse::<u16>().is_ok() && crate::job::confine::valid_name(h) {
            return Some(format!(
                "{host:?} includes a port; write \"host\": {h:?}, \"port\": {p}"
            ));
        }
    }
    Some(format!("{shown:?} is not a host name or an IP address"))
}

/// `host` as it may be shown: a password in a URL's user part (`user:pw@`)
/// replaced by `***`. A host field is not a place for one, but people paste
/// URLs, and the message goes to the receipt, the log and the live feed.
pub(crate) fn without_password(host: &str) -> String {
    let (scheme, rest) = match host.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), host),
    };
    let Some((user, after)) = rest.rsplit_once('@') else {
        return host.to_string();
    };
    let user = match user.split_once(':') {
        Some((name, _)) => format!("{name}:***"),
        None => user.to_string(),
    };
    format!("{scheme}{user}@{after}")
}
