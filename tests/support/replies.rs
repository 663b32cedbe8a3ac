//! Control-connection proxy that answers chosen FTP commands itself, with a canned reply, instead
//! of forwarding them. For tests of how a client classifies replies (4xx retry, 5xx fail fast)
//! against a real server that would never send them on cue.
//!
//! Only the control connection passes through: the data connections go straight to the server.
//! That works on loopback because clients connect to the control peer's address with the EPSV
//! port (and with the PASV port under the NAT workaround), and server and proxy are both on
//! 127.0.0.1. A command that is answered here never reaches the server, so the server's session
//! stays in step with the client.
//!
//! A command can also be *held*: forwarded only after a delay, so that its reply comes late. For
//! tests that need the client to be waiting at a precise step (e.g. just after a rename).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running reply-injecting proxy. Dropping it stops accepting new connections.
pub struct ReplyProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    /// Client commands seen on all connections, in order, PASS masked.
    commands: Mutex<Vec<String>>,
    /// Canned replies sent instead of forwarding: (command, reply).
    injected: Mutex<Vec<(String, String)>>,
    /// Commands whose forwarding was delayed by a hold rule (counted when the hold starts).
    held: std::sync::atomic::AtomicUsize,
    connections: std::sync::atomic::AtomicUsize,
}

#[derive(Clone)]
enum Action {
    Reply(String),
    Hold(std::time::Duration),
}

struct Rule {
    verb: String,
    arg_contains: String,
    action: Action,
    /// Matching commands still to let through before the rule applies.
    skip: u32,
    times: u32,
}

impl ReplyProxy {
    /// Start on `127.0.0.1:<ephemeral>` forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> ReplyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                st.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(relay(client, upstream, st.clone()));
            }
        });
        ReplyProxy {
            addr,
            state,
            accept_task,
        }
    }

    /// The next `times` commands with this verb (case insensitive) whose argument contains
    /// `arg_contains` are answered with `reply` (e.g. `"451 Local error"`) and not forwarded.
    pub fn inject(&self, verb: &str, arg_contains: &str, reply: &str, times: u32) {
        self.add_rule(verb, arg_contains, Action::Reply(reply.to_string()), times);
    }

    /// Like [`ReplyProxy::inject`], but the first `skip` matching commands are forwarded
    /// (e.g. proftpd without AllowStoreRestart accepts the APPE that creates a file and
    /// refuses the ones that would append to it).
    pub fn inject_after(&self, verb: &str, arg_contains: &str, reply: &str, skip: u32, times: u32) {
        self.add_rule(verb, arg_contains, Action::Reply(reply.to_string()), times);
        self.state.rules.lock().unwrap().last_mut().unwrap().skip = skip;
    }

    /// The next `times` matching commands are forwarded only after `delay`.
    pub fn hold(&self, verb: &str, arg_contains: &str, delay: std::time::Duration, times: u32) {
        self.add_rule(verb, arg_contains, Action::Hold(delay), times);
    }

    fn add_rule(&self, verb: &str, arg_contains: &str, action: Action, times: u32) {
        self.state.rules.lock().unwrap().push(Rule {
            verb: verb.to_ascii_uppercase(),
            arg_contains: arg_contains.to_string(),
            action,
            skip: 0,
            times,
        });
    }

    /// How many commands a hold rule has delayed (counted as the delay starts).
    pub fn held(&self) -> usize {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Commands seen with this verb (forwarded or answered here), e.g. `"STOR"`.
    pub fn commands_with_verb(&self, verb: &str) -> Vec<String> {
        self.state
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| verb_of(c).eq_ignore_ascii_case(verb))
            .cloned()
            .collect()
    }

    /// (command, canned reply) pairs answered by the proxy so far.
    pub fn injected(&self) -> Vec<(String, String)> {
        self.state.injected.lock().unwrap().clone()
    }

    /// Control connections accepted.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for ReplyProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn verb_of(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

impl State {
    /// What to do with this command, if a rule claims it.
    fn claim(&self, line: &str) -> Option<Action> {
        let verb = verb_of(line);
        let arg = line.get(verb.len()..).unwrap_or("").trim_start();
        let mut rules = self.rules.lock().unwrap();
        let pos = rules
            .iter()
            .position(|r| r.verb.eq_ignore_ascii_case(verb) && arg.contains(&r.arg_contains))?;
        if rules[pos].skip > 0 {
            rules[pos].skip -= 1;
            return None;
        }
        let action = rules[pos].action.clone();
        rules[pos].times -= 1;
        if rules[pos].times == 0 {
            rules.remove(pos);
        }
        Some(action)
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Both directions write to the client: server replies and canned replies.
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let down = {
        let cw = cw.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if cw.lock().await.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = cw.lock().await.shutdown().await;
        })
    };
    let mut reader = BufReader::new(cr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let shown = if verb_of(&text).eq_ignore_ascii_case("PASS") {
            "PASS ****".to_string()
        } else {
            text.clone()
        };
        state.commands.lock().unwrap().push(shown.clone());
        match state.claim(&text) {
            Some(Action::Reply(reply)) => {
                state.injected.lock().unwrap().push((shown, reply.clone()));
                if reply_to(&cw, &reply).await.is_err() {
                    break;
                }
                continue;
            }
            Some(Action::Hold(delay)) => {
                state.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(delay).await;
            }
            None => {}
        }
        if sw.write_all(&line).await.is_err() {
            break;
        }
    }
    let _ = sw.shutdown().await;
    let _ = down.await;
}

async fn reply_to(
    cw: &Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    reply: &str,
) -> std::io::Result<()> {
    cw.lock()
        .await
        .write_all(format!("{reply}\r\n").as_bytes())
        .await
}
