//! The control connection ([`Control`]): commands out, replies in, each
//! reply matched to the command it answers. The session above it speaks in
//! operations; this is the one place a reply is read.
//!
//! Several commands may go out at once (pipelining), so that a batch costs
//! one round trip instead of one per command. FTP allows a client to send
//! the next command before the last reply, but not every server processes
//! commands strictly in order: libunftp runs them concurrently, so a
//! pipelined `RNTO` can run before its `RNFR` ("450 Please tell me what
//! file you want to rename first"). Whether a server keeps order is decided
//! by [`crate::ftp::Session::probe_pipelining`], once per server (the
//! verdict is kept in `ftpdrop-learned.json`), never assumed; a reply that
//! does not fit its command later is a desync (see [`Control::reply`]).
//!
//! A [`Control::batch`] has the same meaning pipelined or not: every command
//! in it is sent, whatever the replies to the ones before it, so callers put
//! together only commands for which that is safe (`SIZE temp` with `RNFR
//! temp`: an RNFR without RNTO publishes nothing). Without the verdict, a
//! batch is sent one command at a time. On a TLS control connection, whose
//! stream suppaftp owns, pipelined commands go through the stream's
//! [`crate::ftp::tls::Outbox`].

use crate::ftp::fault::Fault;
use crate::ftp::tls::FtpsStream;
use crate::secret::scrub;
use crate::secret::Secret;
use std::collections::VecDeque;
use std::time::Duration;
use suppaftp::tokio::ImplAsyncFtpStream;
use suppaftp::types::Response;
use suppaftp::FtpError;
use tokio::sync::oneshot;

pub(crate) type Ftp = ImplAsyncFtpStream<FtpsStream>;

/// How long a connection, a command and a data transfer may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data: Duration,
}

/// A command sent whose reply nobody has read yet, and who waits for it.
pub(crate) struct Owed {
    command: String,
    to: oneshot::Sender<Result<Reply, Fault>>,
}

/// The reply to an owed command, once the session has read it.
pub(crate) type Pending = oneshot::Receiver<Result<Reply, Fault>>;

/// One reply, whatever its code.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: u32,
    response: Response,
}

impl Reply {
    fn of(response: Response) -> Reply {
        let code = crate::ftp::fault::reply_code_of(&response);
        Reply { code, response }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.response.body)
            .trim()
            .to_string()
    }

    /// A positive completion (2xx) or intermediate (3xx) reply.
    pub(crate) fn ok(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// This reply as the fault of the command `what`.
    pub(crate) fn fault(&self, what: impl std::fmt::Display) -> Fault {
        Fault::from_ftp(what, &FtpError::UnexpectedResponse(self.response.clone()))
    }
}

/// Whether a control connection can still be trusted to be in step with
/// its server. Once it cannot, it never can again: the session ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Link {
    #[default]
    Sound,
    /// A command failed, timed out or left a reply unread: what the server
    /// will say next is not known.
    Broken,
    /// Given up while the server still answers: out of step (`desync`: the
    /// command and the reply that showed it), a probe's lost reply, or a
    /// login held back before its password. The link works, so closing it
    /// is how the server learns the session is over, and nothing is gained
    /// by waiting for it (`Session::linger`).
    GivenUp { desync: Option<(String, String)> },
}

impl Link {
    /// The connection failed: broken, unless it was already given up.
    pub(crate) fn fail(&mut self) {
        if *self == Link::Sound {
            *self = Link::Broken;
        }
    }

    /// Given up while the server still answers (see [`Link::GivenUp`]).
    pub(crate) fn give_up_alive(&mut self) {
        if !matches!(self, Link::GivenUp { .. }) {
            *self = Link::GivenUp { desync: None };
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        *self != Link::Sound
    }

    pub(crate) fn is_alive(&self) -> bool {
        matches!(self, Link::GivenUp { .. })
    }

    /// The command and the reply that showed the server out of order.
    pub(crate) fn desync(&self) -> Option<&(String, String)> {
        match self {
            Link::GivenUp { desync } => desync.as_ref(),
            _ => None,
        }
    }
}

/// How a reply is read.
#[derive(Clone, Copy)]
enum Reading {
    /// Owed to the command it is read for, within the command timeout: a
    /// reply that does not fit that command is a desync.
    Owed,
    /// In a probe, which sends look-alike commands on purpose and judges
    /// the codes itself: taken as it comes, within `wait` (a server that
    /// mishandles pipelining may lose replies, and gets a few round trips,
    /// not the command timeout).
    Probe { wait: Duration },
}

/// The control connection: the FTP stream, and what is in flight on it.
/// Commands go out through [`Control::write_commands`] (or suppaftp), and
/// every reply is read through [`Control::reply`], which matches it to the
/// command it answers: a reply that does not fit is a desync, and ends the
/// connection.
pub(crate) struct Control {
    pub(super) ftp: Ftp,
    pub(super) timeouts: Timeouts,
    /// Kept only to scrub it from server replies that echo it.
    pub(super) password: Secret,
    /// Whether the connection can still be trusted to be in step.
    pub(super) link: Link,
    /// The round trip `TYPE I` took at login.
    pub(super) rtt: Duration,
    /// Does the server keep pipelined commands in order? `None` until probed.
    pub(super) pipelining: Option<bool>,
    /// The connection is TLS: its writes go through suppaftp's stream only.
    pub(super) tls: bool,
    /// Where pipelined commands go on a TLS connection.
    pub(super) outbox: crate::ftp::tls::Outbox,
    /// Commands sent whose replies are not read yet: an upload's rename,
    /// whose outcome its entry awaits while the next entry already uses the
    /// session. Read before anything else is.
    pub(super) owed: VecDeque<Owed>,
    /// The code page names travel in (see [`crate::ftp::codepage`]).
    pub(super) page: crate::config::CodePage,
}

impl Control {
    /// Sends names in `page` from now on, through suppaftp and our own writes alike.
    pub(super) async fn set_page(&mut self, page: crate::config::CodePage) {
        if page != self.page {
            self.ftp
                .set_encoding(crate::ftp::codepage::Page(page))
                .await;
            self.page = page;
        }
    }

    /// May commands be pipelined here: the server keeps order (probed).
    pub(crate) fn pipelines(&self) -> bool {
        self.pipelining == Some(true)
    }

    /// Sends `commands` now and leaves their replies unread: each comes to
    /// its [`Pending`] when the session next reads (whoever uses it next,
    /// or [`crate::ftp::Session::settle`]). Only where [`crate::ftp::Session::pipelines`]: the
    /// next user's commands go out behind these, before their replies.
    pub(crate) async fn send_owed(&mut self, commands: &[String]) -> Result<Vec<Pending>, Fault> {
        debug_assert!(self.pipelines());
        let mut in_flight: Vec<&str> = self.owed.iter().map(|o| o.command.as_str()).collect();
        in_flight.extend(commands.iter().map(String::as_str));
        if !distinct(&in_flight) {
            self.settle().await?;
        }
        self.write_commands(commands).await?;
        Ok(commands
            .iter()
            .map(|c| {
                let (to, pending) = oneshot::channel();
                self.owed.push_back(Owed {
                    command: c.clone(),
                    to,
                });
                pending
            })
            .collect())
    }

    /// Renames `from` to `to` without waiting: `RNFR`, `RNTO` and a `SIZE`
    /// of `to` go out now, and their replies come to the [`OwedRename`] when
    /// the session is next used. Only where [`crate::ftp::Session::pipelines`].
    pub(crate) async fn rename_owed(&mut self, from: &str, to: &str) -> Result<OwedRename, Fault> {
        let replies = self
            .send_owed(&[
                format!("RNFR {from}"),
                format!("RNTO {to}"),
                format!("SIZE {to}"),
            ])
            .await?;
        Ok(OwedRename {
            replies,
            from: from.to_string(),
            to: to.to_string(),
        })
    }

    /// Does the session owe replies to commands sent earlier?
    pub(crate) fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Reads the replies owed (see [`crate::ftp::Session::send_owed`]) and hands each to
    /// whoever waits for it. On a broken connection every one still owed
    /// gets the fault, and the caller gets [`Fault::inherited`]: the fault
    /// belongs to the entries that sent those commands, not to whoever
    /// happened to read their replies.
    pub(crate) async fn settle(&mut self) -> Result<(), Fault> {
        while let Some(o) = self.owed.pop_front() {
            match self.reply(&o.command).await {
                Ok(r) => {
                    let _ = o.to.send(Ok(r));
                }
                Err(f) => {
                    let _ = o.to.send(Err(f.clone()));
                    for rest in self.owed.drain(..) {
                        let _ = rest.to.send(Err(f.clone()));
                    }
                    return Err(Fault::inherited(&f));
                }
            }
        }
        Ok(())
    }

    /// The connection failed with `f` while replies are owed: they are
    /// the fault of the entries that sent those commands (they get `f`),
    /// and the caller's fault is [`Fault::inherited`].
    fn fail_owed(&mut self, f: Fault) -> Fault {
        if self.owed.is_empty() {
            return f;
        }
        for o in self.owed.drain(..) {
            let _ = o.to.send(Err(f.clone()));
        }
        Fault::inherited(&f)
    }

    /// Sends a transfer command behind the owed commands, then reads their
    /// replies and its own (150 or 125): the next upload starts while the
    /// last one's rename is still on its way.
    pub(super) async fn behind_owed(&mut self, command: &str) -> Result<String, Fault> {
        let mut in_flight: Vec<&str> = self.owed.iter().map(|o| o.command.as_str()).collect();
        in_flight.push(command);
        if !distinct(&in_flight) {
            self.settle().await?;
        }
        if let Err(f) = self.write_commands(&[command.to_string()]).await {
            return Err(self.fail_owed(f));
        }
        self.settle().await?;
        let r = self.reply(command).await?;
        match r.code {
            125 | 150 => Ok(r.text()),
            _ => Err(scrub_fault(r.fault(command), self)),
        }
    }

    /// Writes `commands` at once on the control connection. On TLS they go
    /// into the stream's [`crate::ftp::tls::Outbox`], sent when the stream is
    /// next written or read (the wait for their replies, at the latest).
    pub(super) async fn write_commands(&mut self, commands: &[String]) -> Result<(), Fault> {
        if let Some(bad) = commands.iter().find(|c| c.contains(['\r', '\n'])) {
            return Err(Fault::permanent(format!(
                "{}: a line break in a command",
                scrub(bad, &[&self.password])
            )));
        }
        let what = commands.join(", ");
        let wire = crate::ftp::codepage::wire(self.page, commands)
            .map_err(|e| Fault::permanent(format!("{}: {e}", scrub(&what, &[&self.password]))))?;
        if self.tls {
            self.outbox.push(&wire);
            return Ok(());
        }
        let written = {
            let socket = self.ftp.get_ref().await;
            tokio::time::timeout(self.timeouts.command, write_all(&socket, &wire)).await
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.link.fail();
                Err(Fault::transient(format!("{what}: connection error: {e}")))
            }
            Err(_) => {
                self.link.fail();
                Err(Fault::timeout(format!(
                    "{what}: could not send within {} s",
                    self.timeouts.command.as_secs()
                )))
            }
        }
    }

    /// Sends `commands` and reads one reply to each, in order. Pipelined
    /// where [`crate::ftp::Session::pipelines`] and the commands are told
    /// apart by their text, else one at a time; every command is sent either
    /// way. An error means the connection is no longer in step (the session
    /// is then broken); a refusal is a [`Reply`].
    pub(crate) async fn batch(&mut self, commands: &[String]) -> Result<Vec<Reply>, Fault> {
        self.settle().await?;
        let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
        let mut replies = Vec::with_capacity(commands.len());
        if self.pipelines() && distinct(&refs) {
            self.write_commands(commands).await?;
            for c in commands {
                replies.push(self.reply(c).await?);
            }
        } else {
            for c in commands {
                replies.push(self.exchange(c).await?);
            }
        }
        Ok(replies)
    }

    /// A probe's batch: `commands` go out at once, whatever is known about
    /// the server, and their replies are taken as they come, each within
    /// `wait` (see [`Reading::Probe`]): the probe sends look-alike commands
    /// on purpose and judges the codes itself.
    pub(super) async fn probe_batch(
        &mut self,
        commands: &[String],
        wait: Duration,
    ) -> Result<Vec<Reply>, Fault> {
        self.settle().await?;
        self.write_commands(commands).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            replies.push(self.read(c, Reading::Probe { wait }).await?);
        }
        Ok(replies)
    }

    /// How long a probe waits for a reply: ten of the round trips that
    /// `TYPE I` took at login, at least a second.
    pub(super) fn probe_wait(&self) -> std::time::Duration {
        (self.rtt * 10).clamp(std::time::Duration::from_secs(1), self.timeouts.command)
    }

    /// Reads the next reply, owed to `what`. A positive reply that `what`
    /// never gets is another command's: the session is out of step (a
    /// desync) and ends here.
    pub(super) async fn reply(&mut self, what: &str) -> Result<Reply, Fault> {
        self.read(what, Reading::Owed).await
    }

    /// Reads the next reply as a probe does: see [`Reading::Probe`].
    pub(super) async fn probe_reply(&mut self, what: &str, wait: Duration) -> Result<Reply, Fault> {
        self.read(what, Reading::Probe { wait }).await
    }

    async fn read(&mut self, what: &str, how: Reading) -> Result<Reply, Fault> {
        let t = match how {
            Reading::Owed => self.timeouts.command,
            Reading::Probe { wait } => wait,
        };
        let read = tokio::time::timeout(t, self.ftp.read_response_in(&[])).await;
        let r = self.answered(what, t, read)?;
        if matches!(how, Reading::Owed) && !fits(what, r.code) {
            // Out of step: this session ends, and no session of this
            // server pipelines again (the pool learns it from this one).
            self.pipelining = Some(false);
            self.link = Link::GivenUp {
                desync: Some((
                    scrub(what, &[&self.password]),
                    scrub(&r.text(), &[&self.password]),
                )),
            };
            return Err(scrub_fault(Fault::desync(what, r.code, &r.text()), self));
        }
        Ok(r)
    }

    /// Sends one command and reads its reply, whatever its code.
    pub(super) async fn exchange(&mut self, command: &str) -> Result<Reply, Fault> {
        let t = self.timeouts.command;
        let read = tokio::time::timeout(t, self.ftp.custom_command(command, &[])).await;
        self.answered(command, t, read)
    }

    /// A reply of any code, or the fault of a connection out of step
    /// (the session is then broken).
    fn answered(
        &mut self,
        what: &str,
        limit: std::time::Duration,
        read: Result<suppaftp::FtpResult<Response>, tokio::time::error::Elapsed>,
    ) -> Result<Reply, Fault> {
        match read {
            Ok(Err(FtpError::UnexpectedResponse(r))) | Ok(Ok(r)) => Ok(Reply::of(r)),
            Ok(Err(e)) => {
                self.link.fail();
                Err(scrub_fault(Fault::from_ftp(what, &e), self))
            }
            Err(_) => {
                self.link.fail();
                Err(Fault::timeout(format!(
                    "{what}: no reply within {} s",
                    limit.as_secs()
                )))
            }
        }
    }
}

/// A rename sent on a session that may have been put back since (see
/// [`crate::ftp::Session::rename_owed`]).
#[derive(Debug)]
pub(crate) struct OwedRename {
    replies: Vec<Pending>,
    from: String,
    to: String,
}

/// What an owed rename came to: whether the server renamed, and the size
/// it then gave for the new name (`None`: no such file).
pub(crate) struct Renamed {
    pub(crate) renamed: Result<(), Fault>,
    pub(crate) size: Result<Option<u64>, Fault>,
}

impl OwedRename {
    /// Waits for the replies; `nudge` makes the idle sessions of the
    /// server read what they owe, and is called whenever a reply is a
    /// moment late (its session was put back, and the entry it was put back
    /// for took another). An error is a session that broke before it answered.
    pub(crate) async fn replies<F, Fut>(self, mut nudge: F) -> Result<Renamed, Fault>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut replies = Vec::new();
        for mut rx in self.replies {
            let reply = loop {
                tokio::select! {
                    r = &mut rx => break r.unwrap_or_else(|_| {
                        Err(Fault::transient("the connection closed before the rename was answered"))
                    })?,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => nudge().await,
                }
            };
            replies.push(reply);
        }
        let what = format!("RNFR {} / RNTO {}", self.from, self.to);
        let renamed = match (&replies[0], &replies[1]) {
            (f, _) if f.code != 350 => Err(f.fault(&what)),
            (_, t) if !(200..300).contains(&t.code) => Err(t.fault(&what)),
            _ => Ok(()),
        };
        Ok(Renamed {
            renamed,
            size: size_of(&replies[2], &self.to),
        })
    }
}

/// The positive replies (1xx to 3xx) that `command` can get; `None` for a
/// command not listed, which may get any. A refusal (4xx, 5xx) fits every
/// command: it cannot be told apart, and it never makes anything done.
fn positive_replies(command: &str) -> Option<&'static [u32]> {
    let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
    Some(match verb.as_str() {
        "SIZE" | "MDTM" | "MFMT" => &[213],
        "FEAT" => &[211],
        "RNFR" | "REST" => &[350],
        "RNTO" | "DELE" | "RMD" | "CWD" => &[250, 200],
        "MKD" => &[257, 250],
        "STOR" | "APPE" | "RETR" | "LIST" | "NLST" | "MLSD" => &[125, 150],
        "EPSV" => &[229],
        "PASV" => &[227],
        "TYPE" | "NOOP" | "OPTS" | "PBSZ" | "PROT" | "PORT" | "EPRT" => &[200],
        "QUIT" => &[221],
        _ => return None,
    })
}

/// Does a reply with `code` belong to `command`?
pub(crate) fn fits(command: &str, code: u32) -> bool {
    code >= 400 || positive_replies(command).is_none_or(|ok| ok.contains(&code))
}

/// Can replies to `commands`, all in flight at once, never be mistaken for
/// one another: no two of them can get the same positive reply? Then a
/// reply matched to the wrong command never fits it, and is caught (a
/// `213` for one file's SIZE can never answer another's). Commands not
/// listed in [`positive_replies`] are never pipelined with others.
pub(crate) fn distinct(commands: &[&str]) -> bool {
    let mut seen: Vec<u32> = Vec::new();
    for c in commands {
        let Some(codes) = positive_replies(c) else {
            return commands.len() <= 1;
        };
        if codes.iter().any(|c| seen.contains(c)) {
            return false;
        }
        seen.extend_from_slice(codes);
    }
    true
}

/// A SIZE reply: the size, `None` for "no such file", else a fault.
pub(crate) fn size_of(r: &Reply, path: &str) -> Result<Option<u64>, Fault> {
    let what = format!("SIZE {path}");
    match r.code {
        213 => crate::ftp::reply::size(&r.text())
            .map(Some)
            .ok_or_else(|| Fault::transient(format!("{what}: reply not understood: {}", r.text()))),
        550 | 450 | 553 => Ok(None),
        _ => Err(r.fault(what)),
    }
}

fn scrub_fault(mut f: Fault, s: &Control) -> Fault {
    f.message = scrub(&f.message, &[&s.password]);
    f
}

/// Writes all of `bytes` to the control socket (a shared reference: the
/// lock that suppaftp's guard holds keeps everyone else off it).
async fn write_all(socket: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_fits_only_its_own_command() {
        assert!(fits("SIZE a", 213));
        assert!(!fits("SIZE a", 229));
        assert!(!fits("SIZE a", 250));
        assert!(!fits("APPE t", 213));
        assert!(!fits("RNFR t", 250));
        assert!(fits("RNTO f", 250));
        // Refusals fit anything: they never make anything done.
        assert!(fits("SIZE a", 550));
        assert!(fits("RNTO f", 553));
        // Commands not listed take any reply.
        assert!(fits("SITE CHMOD 600 x", 200));
    }

    #[test]
    fn look_alike_commands_are_never_in_flight_together() {
        assert!(distinct(&["RNFR t", "RNTO f", "SIZE f", "APPE u"]));
        assert!(distinct(&["SIZE t", "EPSV"]));
        assert!(!distinct(&["RNFR t", "RNTO f", "SIZE f", "SIZE u"]));
        assert!(!distinct(&["MKD a", "MKD a/b"]));
        // REST answers as RNFR does.
        assert!(!distinct(&["RNFR t", "REST 5"]));
        assert!(!distinct(&["SIZE t", "XSHA256 t"]));
        assert!(distinct(&["XSHA256 t"]));
    }
}
