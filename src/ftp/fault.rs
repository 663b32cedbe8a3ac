//! The one typed error: is a failure worth retrying or not.
//!
//! Everything else in ftpdrop uses `anyhow`. A [`Fault`] exists because the
//! scheduler must branch on its kind: retry a transient fault with backoff,
//! fail a permanent one at once, and treat "too many connections" as
//! back-pressure. FTP reply codes are mapped to kinds here and nowhere else.

use std::fmt;
use suppaftp::{FtpError, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// Dropped connections, timeouts, 4xx replies: worth another attempt.
    Transient,
    /// The server refuses more connections from us: use fewer, then retry.
    TooManyConnections,
    /// Bad credentials, permission denied, missing local file: retrying will not help.
    Permanent,
    /// A reply did not fit the pipelined command it was matched to: the
    /// server answered out of order. The server's pipelining verdict turns
    /// to no, and the entry is tried again on a clean session at once,
    /// without counting an attempt (the fault was ours to avoid).
    Desync,
    /// The session broke while reading replies that an earlier entry was
    /// owed: the fault is that entry's (it gets it too), and this one tries
    /// again at once on a clean session without counting an attempt.
    Inherited,
}

/// What failed, for the callers that must tell failures apart: they match
/// on this, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The server answered no ([`Fault::code`] and [`Fault::verb`] say to what).
    Refused,
    /// The server answered no because the connection is not encrypted.
    TlsRequired,
    /// The TLS layer failed: a handshake, or a certificate.
    Tls(TlsProblem),
    /// The connection broke, or carried something that is not FTP.
    Broken,
    /// Nothing came within the time allowed.
    Timeout,
    /// Something on this side: a setting, a name, a local file.
    Local,
}

/// Why a TLS handshake failed, where it says what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsProblem {
    /// The certificate is signed by no CA the client trusts.
    UnknownIssuer,
    /// The certificate does not name the host connected to.
    WrongName,
    Expired,
    Other,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub(crate) kind: FaultKind,
    pub(crate) cause: Cause,
    /// Human-readable, already free of credentials.
    pub message: String,
    /// The server's reply code, when the fault is a reply.
    pub(crate) code: Option<u32>,
    /// The verb of the command the reply answered (`REST`, `STOR`, ...),
    /// when the fault is a reply to a command.
    pub verb: Option<String>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fault {}

impl Fault {
    /// A connection that broke (or went out of step): worth another attempt.
    pub(crate) fn transient(message: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Transient,
            cause: Cause::Broken,
            message: message.into(),
            code: None,
            verb: None,
        }
    }

    /// Something on this side that another attempt would not change.
    pub(crate) fn permanent(message: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Permanent,
            cause: Cause::Local,
            message: message.into(),
            code: None,
            verb: None,
        }
    }

    /// Nothing came within the time allowed: worth another attempt.
    pub(crate) fn timeout(message: impl Into<String>) -> Fault {
        Fault {
            cause: Cause::Timeout,
            ..Fault::transient(message)
        }
    }

    /// A TLS handshake or certificate failed.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.cause, Cause::Tls(_))
    }

    /// A TLS handshake that failed for something else than the
    /// certificate: the connection went, or the peer refused what was offered.
    pub(crate) fn tls_handshake_broke(&self) -> bool {
        matches!(self.cause, Cause::Tls(TlsProblem::Other))
    }

    /// The server does not implement the command (500, 502, 504): a fact
    /// about the server, not a verdict on the file.
    pub(crate) fn not_implemented(&self) -> bool {
        self.code.is_some_and(not_implemented)
    }

    /// `what` got a reply that belongs to another command.
    pub(crate) fn desync(what: impl fmt::Display, code: u32, text: &str) -> Fault {
        Fault {
            kind: FaultKind::Desync,
            cause: Cause::Broken,
            message: format!(
                "{what}: server replied {text}, a reply to another command: the server \
                 answered pipelined commands out of order (pipelining is now off for it)"
            ),
            code: Some(code),
            verb: None,
        }
    }

    /// This entry's view of `owed`, a fault of the replies an earlier entry
    /// was owed on the session it took over.
    pub(crate) fn inherited(owed: &Fault) -> Fault {
        if owed.kind == FaultKind::Desync {
            return owed.clone();
        }
        Fault {
            kind: FaultKind::Inherited,
            cause: Cause::Broken,
            message: format!(
                "the session broke on an earlier entry's replies ({}); starting again on a clean session",
                owed.message
            ),
            code: None,
            verb: None,
        }
    }

    /// The server answered, and said no (as opposed to a connection that
    /// broke or timed out).
    pub(crate) fn is_refusal(&self) -> bool {
        self.code.is_some()
    }

    /// The server refused to go on with a file from an offset: `REST`, or
    /// the `STOR` or `APPE` after it (not a broken connection).
    pub(crate) fn refused_resume(&self) -> bool {
        self.code.is_some_and(|c| c >= 400)
            && matches!(self.verb.as_deref(), Some("REST" | "STOR" | "APPE"))
    }

    /// The server said the file is not there (or may not be touched: a
    /// 550 says either).
    pub(crate) fn file_unavailable(&self) -> bool {
        self.code == Some(550)
    }

    pub(crate) fn is_permanent(&self) -> bool {
        self.kind == FaultKind::Permanent
    }

    /// Prefixes the message with what was being done, keeping the kind.
    pub(crate) fn context(mut self, what: impl fmt::Display) -> Fault {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Classifies a suppaftp error raised while doing `what`.
    pub fn from_ftp(what: impl fmt::Display, err: &FtpError) -> Fault {
        let (kind, cause, detail) = match err {
            FtpError::ConnectionError(io) => (
                FaultKind::Transient,
                match io.kind() {
                    std::io::ErrorKind::TimedOut => Cause::Timeout,
                    _ => Cause::Broken,
                },
                format!("connection error: {io}"),
            ),
            FtpError::SecureError(msg) => {
                // suppaftp wraps its own error's text again: "Secure error: ...".
                let msg = msg.trim_start_matches("Secure error: ");
                (
                    classify_tls(msg),
                    Cause::Tls(tls_problem(msg)),
                    format!("TLS error: {msg}"),
                )
            }
            FtpError::UnexpectedResponse(resp) => {
                let text = String::from_utf8_lossy(&resp.body).trim().to_string();
                let code = code_of(resp);
                let text = if text.starts_with(&code.to_string()) {
                    text
                } else {
                    format!("{code} {text}")
                };
                let cause = match demands_tls(&text) {
                    true => Cause::TlsRequired,
                    false => Cause::Refused,
                };
                (
                    classify_reply(code, &text),
                    cause,
                    format!("server replied {text}"),
                )
            }
            FtpError::BadResponse => (
                FaultKind::Transient,
                Cause::Broken,
                "malformed reply from server".to_string(),
            ),
            FtpError::InvalidAddress(e) => (
                FaultKind::Transient,
                Cause::Broken,
                format!("bad passive address: {e}"),
            ),
            FtpError::DataConnectionAlreadyOpen => (
                FaultKind::Transient,
                Cause::Local,
                "internal: data connection already open".to_string(),
            ),
        };
        let what = what.to_string();
        let code = Fault::reply_code(err);
        let verb = code.and_then(|_| verb_of(&what));
        let hint = code.and_then(|c| drop_box_hint(verb.as_deref(), c, &what));
        Fault {
            kind,
            cause,
            message: format!("{what}: {detail}{}", hint.unwrap_or_default()),
            code,
            verb,
        }
    }

    /// The reply code, when the fault came from a server reply.
    pub(crate) fn reply_code(err: &FtpError) -> Option<u32> {
        match err {
            FtpError::UnexpectedResponse(r) => Some(code_of(r)),
            _ => None,
        }
    }
}

/// Where a refusal may be a drop box's (a bank or partner inbox that takes
/// STOR and nothing else), what to set: never chosen silently.
fn drop_box_hint(verb: Option<&str>, code: u32, what: &str) -> Option<&'static str> {
    match (verb?, code) {
        ("SIZE", c) if not_implemented(c) => Some(
            " (a drop box that allows no SIZE: set the server's \"verify\": \"none\", \
             and the receipt will say \"sent, not verified\")",
        ),
        ("RNFR" | "RNTO", c) if not_implemented(c) => Some(
            " (a drop box that allows no rename: set the server's \"publish\": \"direct\")",
        ),
        ("STOR" | "APPE", 553) if what.contains("/.ftpdrop-") || what.contains(" .ftpdrop-") => {
            Some(" (if the server refuses hidden or temporary names: set the server's \"publish\": \"direct\")")
        }
        _ => None,
    }
}

/// The verb that starts the command `what`, if it is one.
fn verb_of(what: &str) -> Option<String> {
    let v = what.split(' ').next()?;
    ((3..=4).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_uppercase())).then(|| v.to_string())
}

/// suppaftp maps codes it has no name for to `Unknown` (0); the body still starts with the digits.
/// The reply code of `resp`, also for codes suppaftp has no name for.
pub(crate) fn reply_code_of(resp: &suppaftp::types::Response) -> u32 {
    code_of(resp)
}

fn code_of(resp: &suppaftp::types::Response) -> u32 {
    match resp.status {
        Status::Unknown => resp
            .body
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
        s => s.code(),
    }
}

/// Servers say "too many connections" with 421 (vsftpd, pure-ftpd) or 530 (proftpd).
fn is_too_many(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("too many") || t.contains("maximum number") || t.contains("connection limit")
}

/// Does a refusal say that the server talks only over TLS? vsftpd: `530
/// Non-anonymous sessions must use encryption.`; pure-ftpd: `421 Sorry,
/// cleartext sessions are not accepted on this server.`; proftpd: `550 SSL/TLS
/// required on the control channel`.
pub fn demands_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("must use encryption")
        || t.contains("cleartext sessions")
        || t.contains("tls required")
        || t.contains("ssl/tls required")
        || t.contains("ssl required")
        || t.contains("tls is required")
        || t.contains("policy requires ssl")
}

fn classify_reply(code: u32, text: &str) -> FaultKind {
    if (code == 421 || code == 530) && is_too_many(text) {
        return FaultKind::TooManyConnections;
    }
    if demands_tls(text) {
        // Asking again without TLS gets the same answer.
        return FaultKind::Permanent;
    }
    // vsftpd's "522 SSL connection failed: session reuse required" (or a
    // data connection's failed handshake): a fresh session may well succeed.
    if code == 522 && text.to_ascii_lowercase().contains("ssl") {
        return FaultKind::Transient;
    }
    match code {
        400..=499 => FaultKind::Transient,
        _ => FaultKind::Permanent,
    }
}

/// A certificate the client will not trust stays untrusted on retry; a reset
/// during the handshake may not.
fn classify_tls(msg: &str) -> FaultKind {
    let m = msg.to_ascii_lowercase();
    if m.contains("certificate")
        || m.contains("unknownissuer")
        || m.contains("notvalidforname")
        || m.contains("invalid dns name")
        // No TLS version or cipher in common: the same next time.
        || m.contains("protocolversion")
        || m.contains("handshakefailure")
        || m.contains("peerincompatible")
    {
        FaultKind::Permanent
    } else {
        FaultKind::Transient
    }
}

/// What a failed handshake's message says about the certificate.
fn tls_problem(msg: &str) -> TlsProblem {
    let m = msg.to_ascii_lowercase();
    if m.contains("unknownissuer") || m.contains("unknown issuer") {
        TlsProblem::UnknownIssuer
    } else if m.contains("not valid for name") || m.contains("notvalidforname") {
        TlsProblem::WrongName
    } else if m.contains("expired") {
        TlsProblem::Expired
    } else {
        TlsProblem::Other
    }
}

/// Reply codes that say "command not implemented" (500, 502, 504).
pub(crate) fn not_implemented(code: u32) -> bool {
    matches!(code, 500 | 502 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use suppaftp::types::Response;

    fn reply(code: u32, text: &str) -> FtpError {
        FtpError::UnexpectedResponse(Response::new(Status::from(code), text.as_bytes().to_vec()))
    }

    #[test]
    fn a_refused_resume_is_told_by_the_command_not_the_text() {
        let refused = |what: &str, e: &FtpError| Fault::from_ftp(what, e).refused_resume();
        assert!(refused(
            "REST 4096",
            &reply(502, "502 Command not implemented.")
        ));
        assert!(refused("APPE a/.part", &reply(550, "550 Not allowed.")));
        assert!(refused("STOR a/.part", &reply(554, "554 REST beyond end.")));
        // A broken connection is no refusal; nor is a refusal of another command.
        let broken = FtpError::ConnectionError(std::io::Error::other("reset"));
        assert!(!refused("STOR a/.part", &broken));
        assert!(!refused("SIZE a/.part", &reply(550, "550 No such file.")));
        // A message given more context keeps what it refused.
        let f = Fault::from_ftp("REST 1", &reply(500, "500 Unknown.")).context("entry 3");
        assert!(f.refused_resume());
    }

    #[test]
    fn reply_codes_map_to_kinds() {
        assert_eq!(
            Fault::from_ftp("x", &reply(530, "530 Login incorrect.")).kind,
            FaultKind::Permanent
        );
        assert_eq!(
            Fault::from_ftp("x", &reply(550, "550 Permission denied.")).kind,
            FaultKind::Permanent
        );
        assert_eq!(
            Fault::from_ftp("x", &reply(553, "553 Could not create file.")).kind,
            FaultKind::Permanent
        );
        for code in [421, 425, 426, 450, 451, 452] {
            assert_eq!(
                Fault::from_ftp("x", &reply(code, "busy")).kind,
                FaultKind::Transient,
                "{code}"
            );
        }
        assert_eq!(
            Fault::from_ftp(
                "x",
                &reply(
                    421,
                    "421 There are too many connections from your internet address."
                )
            )
            .kind,
            FaultKind::TooManyConnections
        );
        assert_eq!(
            Fault::from_ftp("x", &reply(530, "530 Sorry, the maximum number of clients (2) from your host are already connected.")).kind,
            FaultKind::TooManyConnections
        );
        assert_eq!(
            Fault::from_ftp(
                "x",
                &reply(530, "530 Non-anonymous sessions must use encryption.")
            )
            .kind,
            FaultKind::Permanent
        );
        assert_eq!(
            Fault::from_ftp(
                "x",
                &reply(
                    421,
                    "421 Sorry, cleartext sessions are not accepted on this server."
                )
            )
            .kind,
            FaultKind::Permanent
        );
        assert_eq!(
            Fault::from_ftp(
                "x",
                &reply(522, "522 SSL connection failed: session reuse required")
            )
            .kind,
            FaultKind::Transient
        );
        assert_eq!(
            Fault::from_ftp(
                "x",
                &FtpError::SecureError("invalid peer certificate: UnknownIssuer".into())
            )
            .kind,
            FaultKind::Permanent
        );
        let io =
            FtpError::ConnectionError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Fault::from_ftp("connect", &io).kind, FaultKind::Transient);
    }

    #[test]
    fn causes_are_told_by_the_error_not_the_message() {
        let cause = |e: &FtpError| Fault::from_ftp("AUTH TLS with h", e).cause;
        assert_eq!(cause(&reply(530, "530 Login incorrect.")), Cause::Refused);
        assert_eq!(
            cause(&reply(
                530,
                "530 Non-anonymous sessions must use encryption."
            )),
            Cause::TlsRequired
        );
        assert_eq!(
            cause(&reply(534, "534 Policy requires SSL.")),
            Cause::TlsRequired
        );
        assert_eq!(
            cause(&FtpError::SecureError(
                "invalid peer certificate: UnknownIssuer".into()
            )),
            Cause::Tls(TlsProblem::UnknownIssuer)
        );
        assert_eq!(
            cause(&FtpError::SecureError(
                "invalid peer certificate: NotValidForName".into()
            )),
            Cause::Tls(TlsProblem::WrongName)
        );
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(cause(&FtpError::ConnectionError(timed_out)), Cause::Timeout);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(cause(&FtpError::ConnectionError(reset)), Cause::Broken);
        // The verb of a refused AUTH is known without reading the text.
        let f = Fault::from_ftp("AUTH TLS with h", &reply(502, "502 No."));
        assert_eq!(f.verb.as_deref(), Some("AUTH"));
        // A message that merely mentions TLS is no TLS failure.
        assert!(!Fault::transient("TLS session reuse: connection reset").is_tls());
    }
}
