//! The POP3 session: a state machine from client bytes to replies, with no socket, no clock
//! and no store.
//!
//! The driver feeds it what it reads with [`Session::ingest`]; the session appends replies to
//! the driver's `out` buffer (one write per read, which is what PIPELINING needs). When it
//! needs the outside world it stops consuming input and says so in its [`Outcome`]:
//!
//! * [`Outcome::Login`]: check these credentials and open the user's mailbox, then call
//!   [`Session::logged_in`] with the snapshot of its messages or the reason it failed;
//! * [`Outcome::Send`]: open message `index`, call [`Session::message_opened`], and if it
//!   opened, stream it through a [`DotEncoder`] made by [`Outcome::Send`]'s fields;
//! * [`Outcome::Commit`]: QUIT in TRANSACTION: delete these messages (the UPDATE state), then
//!   call [`Session::committed`]. Nothing is ever deleted otherwise: a dropped connection, a
//!   timeout or a shutdown leaves the mailbox as it was;
//! * [`Outcome::StartTls`]: STLS was accepted and `+OK` written; the driver upgrades the
//!   connection (discarding plaintext pipelined after the command) and carries on with a
//!   fresh session [`Session::with_tls`] made with the same nonce (so the APOP timestamp of
//!   the banner still holds: there is no new banner after STLS);
//! * [`Outcome::Close`]: the session is over; flush `out` and close.
//!
//! `<requireTLSForAuth>` ([`Pop3Settings::plaintext_auth`] false): on a connection without
//! TLS, USER, PASS, APOP and AUTH PLAIN are refused with `-ERR [AUTH]`, and CAPA lists
//! neither USER nor SASL PLAIN (RFC 2595 §4), only STLS. APOP is refused too, though it sends
//! no password: an MD5 digest seen on the wire can be attacked offline. The banner keeps its
//! APOP timestamp, since APOP is usable after STLS and no new banner comes then.
//!
//! *What kind of input comes next* (`Mode`: commands, an AUTH PLAIN response, or nothing
//! while the driver works) is kept apart from *the protocol state* (`State`: AUTHORIZATION or
//! TRANSACTION with its maildrop), and which command is allowed in which state is decided in
//! one place (`Session::gate`).
//!
//! [`DotEncoder`]: crate::codec::DotEncoder

use std::sync::Arc;

use base64::Engine;
use mailroom_config::Secret;
use mailroom_store::MailboxMessage;

use crate::codec::{parse_command, Command, LineEvent, LineReader};
use crate::reply::{Code, Reply};
use crate::Pop3Settings;

/// Pending replies past which [`Session::ingest`] stops and lets the driver write.
pub const REPLY_BATCH: usize = 128 * 1024;

/// After this many failed logins in one session the client is disconnected.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// What the driver must do after [`Session::ingest`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every input octet was consumed; read more.
    Continue,
    /// Check a login and open the mailbox; then call [`Session::logged_in`].
    Login(Login),
    /// Open message `index` of the mailbox; then call [`Session::message_opened`] and, if it
    /// opened, send it through `DotEncoder::new(body_lines)`.
    Send {
        /// The index in the mailbox snapshot (message number − 1).
        index: usize,
        /// TOP: the body lines wanted; `None` for RETR.
        body_lines: Option<u64>,
    },
    /// Delete these messages (indexes in the snapshot); then call [`Session::committed`].
    Commit(Vec<usize>),
    /// STLS was accepted and its `+OK` written: write `out`, start TLS, and replace this
    /// session by a fresh one [`Session::with_tls`]. Input after the command was not
    /// consumed: it arrived in plaintext and must be discarded.
    StartTls,
    /// The session is over: write `out` and close the connection.
    Close,
}

/// Credentials to check.
#[derive(Debug, PartialEq, Eq)]
pub struct Login {
    /// The name the client gave, as given (names are case-insensitive in the repository).
    pub user: String,
    /// What proves it.
    pub credential: Credential,
}

/// What the client offered as proof of identity. `Debug` prints neither the password nor
/// the digest.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// A password (USER/PASS or AUTH PLAIN).
    Password(Secret),
    /// APOP: `digest` must be the MD5, in hex, of `timestamp` followed by the user's secret.
    Apop {
        /// The timestamp of this session's banner, angle brackets included.
        timestamp: String,
        /// What the client sent.
        digest: Secret,
    },
}

/// Why a login did not open the mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user or wrong secret (the two are not told apart).
    Credentials,
    /// The mailbox is open in another session.
    InUse,
    /// The store failed.
    Temporary,
}

/// What kind of input comes next.
#[derive(Debug)]
enum Mode {
    /// Command lines.
    Command,
    /// The client's response to `AUTH PLAIN`'s empty challenge.
    SaslPlain,
    /// Waiting for [`Session::logged_in`] for this user.
    AwaitLogin(String),
    /// Waiting for [`Session::message_opened`].
    AwaitMessage {
        /// The index in the snapshot.
        index: usize,
        /// TOP rather than RETR.
        top: bool,
    },
    /// Waiting for [`Session::committed`].
    AwaitCommit,
    /// STLS was accepted; the driver replaces this session once TLS is up.
    StartTls,
    /// QUIT, timeout, shutdown or too many failed logins.
    Closed,
}

/// The protocol state (RFC 1939 §3).
#[derive(Debug)]
enum State {
    /// Before a successful login.
    Authorization {
        /// The name given by USER, waiting for PASS.
        user: Option<String>,
    },
    /// Logged in: the mailbox snapshot and the messages marked deleted.
    Transaction {
        /// The canonical user name, for replies.
        user: String,
        /// The snapshot taken at login.
        messages: Vec<MailboxMessage>,
        /// Marked by DELE, cleared by RSET, deleted at QUIT.
        deleted: Vec<bool>,
    },
}

/// One POP3 session. See the module documentation for the protocol between it and its driver.
#[derive(Debug)]
pub struct Session {
    /// The listener's settings.
    settings: Arc<Pop3Settings>,
    /// The APOP timestamp of the banner, when APOP is enabled.
    timestamp: Option<String>,
    /// Splits input into bounded lines.
    lines: LineReader,
    /// What kind of input comes next.
    mode: Mode,
    /// AUTHORIZATION or TRANSACTION.
    state: State,
    /// Failed logins so far.
    login_failures: u32,
    /// Whether the connection is encrypted (implicit TLS, or a fresh session after STLS).
    tls: bool,
}

impl Session {
    /// A new session. `nonce` makes the APOP timestamp unique: the driver draws it at random.
    pub fn new(settings: Arc<Pop3Settings>, nonce: u64) -> Session {
        // The timestamp is `<nonce@host>`; RFC 1939 wants msg-id syntax, and some clients
        // choke on `=` in it, so only a plain host name goes in.
        let host: String = settings
            .hello_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect();
        let timestamp = settings
            .enable_apop
            .then(|| format!("<{nonce:016x}@{host}>"));
        Session {
            settings,
            timestamp,
            lines: LineReader::default(),
            mode: Mode::Command,
            state: State::Authorization { user: None },
            login_failures: 0,
            tls: false,
        }
    }

    /// The session of an encrypted connection (implicit TLS, or after STLS).
    pub fn with_tls(mut self) -> Session {
        self.tls = true;
        self
    }

    /// The logged-in user, if any (for the driver's log).
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Transaction { user, .. } => Some(user),
            State::Authorization { .. } => None,
        }
    }

    /// Writes the greeting (`+OK`, with the APOP timestamp when APOP is on).
    pub fn greet(&self, out: &mut Vec<u8>) {
        let text = match &self.timestamp {
            Some(ts) => format!("{} POP3 Mailroom ready {ts}", self.settings.hello_name),
            None => format!("{} POP3 Mailroom ready", self.settings.hello_name),
        };
        Reply::ok(text).write_to(out);
    }

    /// Feeds client input. Returns how many octets were consumed and what the driver must do.
    /// Input after a line that needs the driver is not consumed: pass it again once the driver
    /// has answered.
    ///
    /// It stops early, with input left, once [`REPLY_BATCH`] octets of replies are pending.
    pub fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Outcome) {
        let mut used = 0;
        while used < input.len() {
            match self.mode {
                Mode::Command | Mode::SaslPlain => {}
                Mode::Closed => return (input.len(), Outcome::Close),
                Mode::StartTls => return (used, Outcome::StartTls),
                // The driver owes an answer first.
                _ => return (used, Outcome::Continue),
            }
            let (n, event) = self.lines.read(&input[used..]);
            used += n;
            let outcome = match event {
                None => break,
                Some(LineEvent::TooLong) => {
                    self.mode = Mode::Command;
                    Reply::err("line too long").write_to(out);
                    Outcome::Continue
                }
                Some(LineEvent::Line(line)) => {
                    if matches!(self.mode, Mode::SaslPlain) {
                        self.mode = Mode::Command;
                        self.plain_response(&String::from_utf8_lossy(&line), out)
                    } else {
                        self.command(&line, out)
                    }
                }
            };
            if outcome != Outcome::Continue {
                return (used, outcome);
            }
            if out.len() >= REPLY_BATCH {
                // A pipelined batch of listings (UIDL of a large mailbox, many times) must not
                // grow without bound: the driver writes this much before feeding the rest.
                return (used, Outcome::Continue);
            }
        }
        (used, Outcome::Continue)
    }

    /// Which commands are allowed in which state.
    fn gate(&self, cmd: &Command) -> Result<(), Reply> {
        let authorization = matches!(self.state, State::Authorization { .. });
        match cmd {
            Command::Capa | Command::Quit => Ok(()),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::Stls => {
                if authorization {
                    Ok(())
                } else {
                    Err(Reply::err("already logged in"))
                }
            }
            _ if authorization => Err(Reply::err("log in first (USER and PASS, APOP or AUTH)")),
            _ => Ok(()),
        }
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                Reply::err(e.to_string()).write_to(out);
                return Outcome::Continue;
            }
        };
        if let Err(reply) = self.gate(&cmd) {
            reply.write_to(out);
            return Outcome::Continue;
        }
        let reply = match cmd {
            Command::Capa => {
                self.capabilities(out);
                return Outcome::Continue;
            }
            Command::Quit => return self.quit(out),
            Command::User(name) => {
                if let Err(reply) = self.plaintext_allowed() {
                    reply
                } else {
                    self.state = State::Authorization { user: Some(name) };
                    Reply::ok("send PASS")
                }
            }
            Command::Pass(_) | Command::Apop { .. } if self.plaintext_allowed().is_err() => self
                .plaintext_allowed()
                .err()
                .unwrap_or_else(|| Reply::err("TLS required")),
            Command::Pass(password) => {
                let State::Authorization { user } = &mut self.state else {
                    unreachable!("gated")
                };
                match user.take() {
                    None => Reply::err("send USER first"),
                    Some(user) => return self.login(user, Credential::Password(password.into())),
                }
            }
            Command::Apop { name, digest } => match &self.timestamp {
                None => Reply::err("APOP is not enabled on this server"),
                Some(timestamp) => {
                    let credential = Credential::Apop {
                        timestamp: timestamp.clone(),
                        digest: digest.into(),
                    };
                    return self.login(name, credential);
                }
            },
            Command::Auth {
                mechanism: None, ..
            } => {
                Reply::ok("SASL mechanisms follow").write_to(out);
                out.extend_from_slice(b"PLAIN\r\n.\r\n");
                return Outcome::Continue;
            }
            Command::Auth {
                mechanism: Some(mechanism),
                initial,
            } => {
                if mechanism != "PLAIN" {
                    Reply::err(format!("unsupported SASL mechanism {mechanism}"))
                } else if let Err(reply) = self.plaintext_allowed() {
                    reply
                } else if let Some(initial) = initial {
                    return self.plain_response(&initial, out);
                } else {
                    self.mode = Mode::SaslPlain;
                    out.extend_from_slice(b"+ \r\n");
                    return Outcome::Continue;
                }
            }
            Command::Stls if self.tls => Reply::err("TLS is already active"),
            Command::Stls if !self.stls_offered() => {
                Reply::err("STLS is not available on this server")
            }
            Command::Stls => {
                Reply::ok("Begin TLS negotiation").write_to(out);
                self.mode = Mode::StartTls;
                return Outcome::StartTls;
            }
            Command::Stat => {
                let (count, size) = self.totals();
                Reply::ok(format!("{count} {size}"))
            }
            Command::List(None) => {
                let (count, size) = self.totals();
                Reply::ok(format!("{count} messages ({size} octets)")).write_to(out);
                self.scan_listing(out, |m| m.size.to_string());
                return Outcome::Continue;
            }
            Command::List(Some(n)) => match self.message(n) {
                Ok(index) => Reply::ok(format!("{n} {}", self.messages()[index].size)),
                Err(reply) => reply,
            },
            Command::Uidl(None) => {
                Reply::ok("unique-id listing follows").write_to(out);
                self.scan_listing(out, |m| m.uid.clone());
                return Outcome::Continue;
            }
            Command::Uidl(Some(n)) => match self.message(n) {
                Ok(index) => Reply::ok(format!("{n} {}", self.messages()[index].uid)),
                Err(reply) => reply,
            },
            Command::Retr(n) => return self.send(n, None, out),
            Command::Top { msg, lines } => return self.send(msg, Some(lines), out),
            Command::Dele(n) => match self.message(n) {
                Ok(index) => {
                    if let State::Transaction { deleted, .. } = &mut self.state {
                        deleted[index] = true;
                    }
                    Reply::ok(format!("message {n} deleted"))
                }
                Err(reply) => reply,
            },
            Command::Noop => Reply::ok(""),
            Command::Rset => {
                if let State::Transaction { deleted, .. } = &mut self.state {
                    deleted.fill(false);
                }
                let (count, size) = self.totals();
                Reply::ok(format!("maildrop has {count} messages ({size} octets)"))
            }
        };
        reply.write_to(out);
        Outcome::Continue
    }

    /// The refusal of a plaintext login where TLS is required (`<requireTLSForAuth>`).
    fn plaintext_allowed(&self) -> Result<(), Reply> {
        if self.tls || self.settings.plaintext_auth {
            Ok(())
        } else if self.stls_offered() {
            Err(Reply::err_code(
                Code::Auth,
                "logins need TLS here: send STLS first",
            ))
        } else {
            Err(Reply::err_code(
                Code::Auth,
                "logins need TLS here: connect to the POP3S port",
            ))
        }
    }

    /// Whether STLS can be used now: on a plain connection to a listener that offers it,
    /// before login.
    fn stls_offered(&self) -> bool {
        !self.tls
            && matches!(self.state, State::Authorization { .. })
            && self.settings.tls.as_ref().is_some_and(|t| t.starttls)
    }

    fn login(&mut self, user: String, credential: Credential) -> Outcome {
        self.mode = Mode::AwaitLogin(user.clone());
        Outcome::Login(Login { user, credential })
    }

    /// The client's AUTH PLAIN response (RFC 4616): base64 of `authzid NUL authcid NUL
    /// password`, `=` for empty, `*` to cancel.
    fn plain_response(&mut self, response: &str, out: &mut Vec<u8>) -> Outcome {
        let response = response.trim();
        if response == "*" {
            Reply::err("authentication cancelled").write_to(out);
            return Outcome::Continue;
        }
        let decoded = if response == "=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(response)
        };
        let fields = decoded
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| {
                let mut parts = text.splitn(3, '\0');
                let fields = (
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                );
                Some(fields)
            });
        match fields {
            Some((authzid, authcid, password))
                if !authcid.is_empty()
                    && (authzid.is_empty() || authzid.eq_ignore_ascii_case(&authcid)) =>
            {
                self.login(authcid, Credential::Password(password.into()))
            }
            Some((_, authcid, _)) if !authcid.is_empty() => {
                Reply::err_code(Code::Auth, "cannot log in as another user").write_to(out);
                Outcome::Continue
            }
            _ => {
                Reply::err("malformed AUTH PLAIN response").write_to(out);
                Outcome::Continue
            }
        }
    }

    /// The driver's answer to [`Outcome::Login`]: the mailbox snapshot, or why not. Returns
    /// [`Outcome::Close`] after too many failures, else [`Outcome::Continue`].
    pub fn logged_in(
        &mut self,
        result: Result<Vec<MailboxMessage>, LoginFailure>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let Mode::AwaitLogin(user) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return Outcome::Continue;
        };
        match result {
            Ok(messages) => {
                let deleted = vec![false; messages.len()];
                self.state = State::Transaction {
                    user,
                    messages,
                    deleted,
                };
                let (count, size) = self.totals();
                Reply::ok(format!("maildrop has {count} messages ({size} octets)")).write_to(out);
            }
            Err(LoginFailure::Credentials) => {
                self.login_failures += 1;
                if self.login_failures >= MAX_LOGIN_FAILURES {
                    Reply::err_code(Code::Auth, "invalid user name or password; closing")
                        .write_to(out);
                    self.mode = Mode::Closed;
                    return Outcome::Close;
                }
                Reply::err_code(Code::Auth, "invalid user name or password").write_to(out);
            }
            Err(LoginFailure::InUse) => {
                Reply::err_code(Code::InUse, "mailbox is open in another session").write_to(out)
            }
            Err(LoginFailure::Temporary) => Reply::err_code(
                Code::SysTemp,
                "cannot open the mailbox now; try again later",
            )
            .write_to(out),
        }
        Outcome::Continue
    }

    /// RETR (`body_lines: None`) or TOP of message number `n`.
    fn send(&mut self, n: u64, body_lines: Option<u64>, out: &mut Vec<u8>) -> Outcome {
        match self.message(n) {
            Ok(index) => {
                self.mode = Mode::AwaitMessage {
                    index,
                    top: body_lines.is_some(),
                };
                Outcome::Send { index, body_lines }
            }
            Err(reply) => {
                reply.write_to(out);
                Outcome::Continue
            }
        }
    }

    /// The driver's answer to [`Outcome::Send`]: whether the message could be opened. When it
    /// could, the driver sends the message body after what this writes.
    pub fn message_opened(&mut self, opened: bool, out: &mut Vec<u8>) {
        let Mode::AwaitMessage { index, top } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        let reply = if !opened {
            Reply::err_code(
                Code::SysTemp,
                format!("message {} cannot be read now", index + 1),
            )
        } else if top {
            Reply::ok("top of message follows")
        } else {
            Reply::ok(format!("{} octets", self.messages()[index].size))
        };
        reply.write_to(out);
    }

    fn quit(&mut self, out: &mut Vec<u8>) -> Outcome {
        let State::Transaction { deleted, .. } = &self.state else {
            Reply::ok(format!(
                "{} POP3 server signing off",
                self.settings.hello_name
            ))
            .write_to(out);
            self.mode = Mode::Closed;
            return Outcome::Close;
        };
        let marked: Vec<usize> = (0..deleted.len()).filter(|&i| deleted[i]).collect();
        if marked.is_empty() {
            return self.committed(true, out);
        }
        self.mode = Mode::AwaitCommit;
        Outcome::Commit(marked)
    }

    /// The driver's answer to [`Outcome::Commit`]: whether the deletes are durable. Always
    /// ends the session ([`Outcome::Close`]).
    pub fn committed(&mut self, ok: bool, out: &mut Vec<u8>) -> Outcome {
        let reply = if ok {
            let (count, _) = self.totals();
            Reply::ok(format!(
                "{} POP3 server signing off ({count} messages left)",
                self.settings.hello_name
            ))
        } else {
            Reply::err_code(Code::SysTemp, "some deleted messages were not removed")
        };
        reply.write_to(out);
        self.mode = Mode::Closed;
        Outcome::Close
    }

    /// The idle timeout expired: says so; nothing is deleted.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        Reply::err("autologout: idle for too long").write_to(out);
        self.mode = Mode::Closed;
    }

    /// The session read its byte budget or reached its lifetime: says goodbye; nothing is
    /// deleted.
    pub fn exceeded(&mut self, out: &mut Vec<u8>) {
        Reply::err_code(Code::SysTemp, "session limit reached; nothing was deleted").write_to(out);
        self.mode = Mode::Closed;
    }

    /// The server is stopping: says goodbye; nothing is deleted.
    pub fn shutdown(&mut self, out: &mut Vec<u8>) {
        Reply::err_code(Code::SysTemp, "server shutting down; nothing was deleted").write_to(out);
        self.mode = Mode::Closed;
    }

    /// CAPA: STLS only where it can be used, USER and SASL PLAIN only where logins are
    /// allowed (RFC 2595 §4).
    fn capabilities(&self, out: &mut Vec<u8>) {
        Reply::ok("capability list follows").write_to(out);
        let logins = self.plaintext_allowed().is_ok();
        out.extend_from_slice(b"TOP\r\nUIDL\r\n");
        if logins {
            out.extend_from_slice(b"USER\r\n");
        }
        out.extend_from_slice(b"RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
        if logins {
            out.extend_from_slice(b"SASL PLAIN\r\n");
        }
        if self.stls_offered() {
            out.extend_from_slice(b"STLS\r\n");
        }
        out.extend_from_slice(b"EXPIRE NEVER\r\nIMPLEMENTATION Mailroom\r\n.\r\n");
    }

    /// The snapshot (empty before login).
    fn messages(&self) -> &[MailboxMessage] {
        match &self.state {
            State::Transaction { messages, .. } => messages,
            State::Authorization { .. } => &[],
        }
    }

    /// The index of message number `n`, unless it does not exist or is marked deleted.
    fn message(&self, n: u64) -> Result<usize, Reply> {
        let State::Transaction { deleted, .. } = &self.state else {
            return Err(Reply::err("log in first"));
        };
        let count = deleted.len();
        match usize::try_from(n) {
            Ok(n) if n >= 1 && n <= count => {
                if deleted[n - 1] {
                    Err(Reply::err(format!("message {n} is deleted")))
                } else {
                    Ok(n - 1)
                }
            }
            _ => Err(Reply::err(format!(
                "no message {n}; the maildrop has messages 1 to {count}"
            ))),
        }
    }

    /// Messages not marked deleted, and their total size.
    fn totals(&self) -> (usize, u64) {
        let State::Transaction {
            messages, deleted, ..
        } = &self.state
        else {
            return (0, 0);
        };
        messages
            .iter()
            .zip(deleted)
            .filter(|(_, &d)| !d)
            .fold((0, 0), |(n, s), (m, _)| (n + 1, s + m.size))
    }

    /// `n value` for each message not marked deleted, then the `.` line.
    fn scan_listing(&self, out: &mut Vec<u8>, value: impl Fn(&MailboxMessage) -> String) {
        if let State::Transaction {
            messages, deleted, ..
        } = &self.state
        {
            for (i, m) in messages.iter().enumerate() {
                if !deleted[i] {
                    out.extend_from_slice(format!("{} {}\r\n", i + 1, value(m)).as_bytes());
                }
            }
        }
        out.extend_from_slice(b".\r\n");
    }
}
