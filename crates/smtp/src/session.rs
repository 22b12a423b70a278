//! The SMTP session: a state machine from client bytes to replies, with no socket, no clock
//! and no store.
//!
//! The driver feeds it what it reads with [`Session::ingest`]; the session appends replies to
//! the driver's `out` buffer (one write per read, which is what PIPELINING needs) and the
//! message octets of DATA — dot-unstuffed, preceded by the `Received:` header — to the driver's
//! `body` buffer, which the driver drains into the spool after every call, so a message is
//! never held whole in memory. When the session needs the outside world it stops and says so
//! in its [`Outcome`]:
//!
//! * [`Outcome::OpenMessage`]: DATA was accepted; the driver opens a message in the spool and
//!   calls [`Session::begin_data`] with its name and the date (or a failure);
//! * [`Outcome::CheckRecipient`]: a RCPT names a recipient in a local domain and recipients
//!   are verified; the driver looks it up ([`crate::RecipientCheck`]) and calls
//!   [`Session::recipient_checked`], which writes the RCPT's reply. Commands pipelined after it
//!   wait, so replies stay in order;
//! * [`Outcome::Commit`]: the end of data arrived and the message is good; the driver commits
//!   the envelope and calls [`Session::committed`]. Only then is `250` written, and only then
//!   are the commands pipelined after the data processed;
//! * [`Outcome::Discard`]: the message was refused (size, bare CR/LF); the reply is written and
//!   the driver drops the open message;
//! * [`Outcome::Authenticate`]: an AUTH exchange gave a user name and password; the driver
//!   checks them ([`crate::Authenticator`]), holds a failure back as the throttle says, and
//!   calls [`Session::authenticated`]. Pipelined commands wait;
//! * [`Outcome::CheckRoom`]: a MAIL FROM announces the message's size (`SIZE=`, RFC 1870);
//!   the driver asks the spool whether it has room for it and calls [`Session::room_checked`]
//!   (`452 4.3.1` at once when it has not, rather than after the message was sent);
//! * [`Outcome::CheckSender`]: an authenticated client's MAIL FROM names a local address that
//!   is not the user's own (`<verifyIdentity>`); the driver asks whether it is an alias of
//!   theirs and calls [`Session::sender_checked`];
//! * [`Outcome::StartTls`]: STARTTLS was accepted and `220` written; the driver upgrades the
//!   connection (discarding any plaintext pipelined after the command) and carries on with a
//!   fresh session made [`Session::with_tls`], in the pre-EHLO state (RFC 3207 §4.2);
//! * [`Outcome::Close`]: the session is over; flush `out` and close.
//!
//! *What kind of bytes come next* (`Mode`) is kept apart from *the transaction so far*
//! (`Transaction`), and which command is allowed when is decided in one place
//! (`Session::gate`). The AUTH exchange (RFC 4954) lives in the `sasl` submodule.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use mailroom_mailet::{AttributeValue, Envelope, MailAddress};
use mailroom_net::tls::TlsInfo;

use crate::codec::{
    exceeds_command_limit, parse_command, Command, CommandError, DotDecoder, LineEvent, LineReader,
    MailParams, RcptParams, Recipient, MAX_AUTH_LINE,
};
use crate::reply::Reply;
use crate::{
    RecipientVerdict, SmtpSettings, ATTR_AUTH_USER, ATTR_BODY, ATTR_DSN_ENVID, ATTR_DSN_RECIPIENTS,
    ATTR_DSN_RET, ATTR_HELO, ATTR_SMTPUTF8,
};

mod sasl;

/// Replies pending after which [`Session::ingest`] stops with input left: what one batch of
/// pipelined commands can make the server hold for a client that does not read.
pub const REPLY_BATCH: usize = 64 * 1024;

pub use sasl::Credentials;

/// A spool failure as the session sees it: whether the spool is out of space (`452 4.3.1`,
/// RFC 3463's "mail system full") or failed otherwise (`451 4.3.0`).
pub trait SpoolFailure {
    /// Whether the failure is a lack of storage.
    fn storage_full(&self) -> bool {
        false
    }
}

impl SpoolFailure for () {}
impl SpoolFailure for &str {}
impl SpoolFailure for String {}

impl SpoolFailure for std::io::Error {
    fn storage_full(&self) -> bool {
        matches!(
            self.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    }
}

impl SpoolFailure for mailroom_store::StoreError {
    fn storage_full(&self) -> bool {
        self.is_storage_full()
    }
}

/// Whether an address is all ASCII (else it needs SMTPUTF8).
fn is_ascii(address: &MailAddress) -> bool {
    address.local_part().is_ascii() && address.domain().is_ascii()
}

/// The reply to a failed open or commit of a message.
fn spool_failure_reply(failure: &impl SpoolFailure) -> Reply {
    if failure.storage_full() {
        Reply::insufficient_storage()
    } else {
        Reply::local_error()
    }
}
use sasl::SaslStep;

/// After this many protocol errors (unknown commands, syntax, bad sequence) the client is
/// disconnected with `421 4.7.0` (as Postfix's `smtpd_hard_error_limit`).
pub const MAX_ERRORS: u32 = 20;

/// After this many failed AUTH attempts the client is disconnected with `421 4.7.0`, as POP3
/// does after three failed logins: one connection cannot guess forever (the shared throttle
/// also slows the answers of an address that keeps failing).
pub const MAX_AUTH_FAILURES: u32 = 3;

/// What the driver must do after [`Session::ingest`].
#[derive(Debug)]
pub enum Outcome {
    /// Every input octet was consumed; read more.
    Continue,
    /// DATA was accepted: open a message in the spool, then call [`Session::begin_data`].
    OpenMessage,
    /// RCPT names this recipient in a local domain: look it up, then call
    /// [`Session::recipient_checked`]. Input after the RCPT was not consumed.
    CheckRecipient(MailAddress),
    /// The message is complete: commit it with this envelope, then call
    /// [`Session::committed`] with the result. Input after the end of data was not consumed.
    Commit(Box<Envelope>),
    /// The message was refused and the reply written: drop the open message.
    Discard,
    /// AUTH gave these credentials: check them, then call [`Session::authenticated`]. Input
    /// after the exchange was not consumed.
    Authenticate(Credentials),
    /// A MAIL FROM announces a message of this many octets: ask the spool whether it has
    /// room, then call [`Session::room_checked`]. Input after the MAIL was not consumed.
    CheckRoom(u64),
    /// The authenticated `user` gives `sender`, a local address not their own, as MAIL FROM:
    /// ask whether it is theirs, then call [`Session::sender_checked`]. Input after the MAIL
    /// was not consumed.
    CheckSender {
        /// The authenticated user.
        user: String,
        /// The reverse-path in question.
        sender: MailAddress,
    },
    /// STARTTLS was accepted and its `220` written: write `out`, start TLS on the connection,
    /// and replace this session by a fresh one [`Session::with_tls`]. Input after the command
    /// was not consumed: it arrived in plaintext and must be discarded.
    StartTls,
    /// The session is over: write `out` and close the connection.
    Close,
}

/// What the driver hands the session when a message has been opened in the spool.
#[derive(Clone, Debug)]
pub struct DataStart {
    /// The name (queue id) of the mail in the spool.
    pub id: String,
    /// The current date in RFC 5322 form (`Mon, 23 Nov 2026 09:07:51 +0000`).
    pub date: String,
}

/// What kind of input comes next.
#[derive(Debug)]
enum Mode {
    /// Command lines.
    Command,
    /// DATA was accepted; waiting for [`Session::begin_data`].
    AwaitOpen,
    /// A RCPT waits for [`Session::recipient_checked`].
    AwaitRecipient {
        /// The recipient being looked up.
        address: MailAddress,
        /// Its DSN parameters, kept for when it is accepted.
        params: RcptParams,
    },
    /// Message content being written to the body buffer.
    Data {
        /// Dot-unstuffing and end-of-data detection.
        scanner: DotDecoder,
        /// The mail's name, for the envelope and the final reply.
        id: String,
        /// Client octets received so far (the `Received:` header is not counted).
        size: u64,
    },
    /// Message content being read and dropped until the end of data, then `reply` is sent.
    Discard {
        /// End-of-data detection.
        scanner: DotDecoder,
        /// The one reply to send at the end of data.
        reply: Reply,
    },
    /// The end of data arrived; waiting for [`Session::committed`].
    AwaitCommit {
        /// The mail's name, for the `250` reply.
        id: String,
    },
    /// An AUTH exchange waits for the client's next response line.
    Sasl(SaslStep),
    /// AUTH credentials wait for [`Session::authenticated`].
    AwaitAuth(Credentials),
    /// A MAIL FROM with `SIZE=` waits for [`Session::room_checked`].
    AwaitRoom {
        /// The reverse-path.
        sender: Option<MailAddress>,
        /// Its parameters, with the size.
        params: MailParams,
    },
    /// A MAIL FROM waits for [`Session::sender_checked`] (`<verifyIdentity>`).
    AwaitSender {
        /// The authenticated user.
        user: String,
        /// The reverse-path in question.
        sender: MailAddress,
        /// Its parameters, kept for when it is accepted.
        params: MailParams,
    },
    /// STARTTLS was accepted; the driver replaces this session once TLS is up.
    StartTls,
    /// QUIT, timeout, shutdown or too many errors.
    Closed,
}

/// The client's HELO/EHLO.
#[derive(Clone, Debug)]
struct Helo {
    /// The name the client gave.
    name: String,
    /// EHLO (ESMTP) rather than HELO.
    extended: bool,
}

/// The mail transaction so far (between MAIL FROM and the end of DATA or RSET).
#[derive(Clone, Debug)]
struct Transaction {
    /// The reverse-path; `None` is `<>`.
    sender: Option<MailAddress>,
    /// MAIL FROM parameters, kept for the envelope's attributes.
    params: MailParams,
    /// Accepted recipients, without duplicates, with their DSN parameters, in RCPT order.
    rcpts: Vec<(MailAddress, RcptParams)>,
    /// The addresses of `rcpts`: a duplicate RCPT is found without a scan (a client may send
    /// tens of thousands when `maxRcpt` allows it).
    seen: HashSet<MailAddress>,
}

/// One SMTP session. See the module documentation for the protocol between it and its driver.
#[derive(Debug)]
pub struct Session {
    /// Limits, names and relay policy of the listener.
    settings: Arc<SmtpSettings>,
    /// The client's address: relay decisions, `Received:` and the envelope.
    peer: IpAddr,
    /// What kind of input comes next.
    mode: Mode,
    /// Splits command input into bounded lines.
    lines: LineReader,
    /// Set by HELO/EHLO.
    helo: Option<Helo>,
    /// Set by MAIL FROM, cleared by RSET, HELO/EHLO and the end of a message.
    txn: Option<Transaction>,
    /// Protocol errors so far; see [`MAX_ERRORS`].
    errors: u32,
    /// Failed AUTH attempts so far; see [`MAX_AUTH_FAILURES`].
    auth_failures: u32,
    /// What TLS negotiated, when the connection is encrypted (implicit TLS, or a fresh
    /// session after STARTTLS): decides what is offered (STARTTLS, AUTH) and what the
    /// `Received:` header records.
    tls: Option<TlsInfo>,
    /// The user the client authenticated as (AUTH), as the users repository spells it: may
    /// relay, is checked by `<verifyIdentity>`, and is recorded on the envelope.
    auth_user: Option<String>,
}

impl Session {
    /// A new session for a client at `peer`.
    pub fn new(settings: Arc<SmtpSettings>, peer: IpAddr) -> Session {
        Session {
            settings,
            peer,
            mode: Mode::Command,
            // AUTH lines may be longer than other commands; see `exceeds_command_limit`.
            lines: LineReader::with_limit(MAX_AUTH_LINE),
            helo: None,
            txn: None,
            errors: 0,
            auth_failures: 0,
            tls: None,
            auth_user: None,
        }
    }

    /// The session of an encrypted connection (implicit TLS, or after STARTTLS).
    pub fn with_tls(mut self, info: TlsInfo) -> Session {
        self.tls = Some(info);
        self
    }

    /// Writes the `220` banner.
    pub fn greet(&mut self, out: &mut Vec<u8>) {
        Reply::greeting(&self.settings.hello_name).write_to(out);
    }

    /// The user the client authenticated as, if it did.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Whether the session is over (the driver should close once `out` is written).
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Whether message content is being received (the driver has a message open).
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data { .. } | Mode::Discard { .. })
    }

    /// The client was idle too long: writes `421 4.4.2` and ends the session.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        Reply::timeout(&self.settings.hello_name).write_to(out);
        self.mode = Mode::Closed;
    }

    /// The session read its byte budget or reached its lifetime: writes `421 4.7.0` and
    /// ends the session.
    pub fn exceeded(&mut self, out: &mut Vec<u8>) {
        Reply::new(
            421,
            "4.7.0",
            format!("{} Error: session limit reached", self.settings.hello_name),
        )
        .write_to(out);
        self.mode = Mode::Closed;
    }

    /// The server is stopping: writes `421 4.3.2` and ends the session.
    pub fn shutdown(&mut self, out: &mut Vec<u8>) {
        Reply::shutting_down(&self.settings.hello_name).write_to(out);
        self.mode = Mode::Closed;
    }

    /// Processes client input. Returns how many octets of `input` were consumed and what the
    /// driver must do; with [`Outcome::Continue`] all of it was consumed. Replies are appended
    /// to `out`, message octets to `body`. While an [`Outcome::OpenMessage`] or
    /// [`Outcome::Commit`] has not been answered, nothing is consumed. Never panics.
    pub fn ingest(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) -> (usize, Outcome) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match &mut self.mode {
                Mode::Closed => return (input.len(), Outcome::Close),
                Mode::StartTls => return (pos, Outcome::StartTls),
                Mode::AwaitOpen => return (pos, Outcome::OpenMessage),
                Mode::AwaitRecipient { address, .. } => {
                    return (pos, Outcome::CheckRecipient(address.clone()))
                }
                Mode::AwaitCommit { .. } => return (pos, Outcome::Continue),
                Mode::AwaitAuth(credentials) => {
                    return (pos, Outcome::Authenticate(credentials.clone()))
                }
                Mode::AwaitRoom { params, .. } => {
                    return (pos, Outcome::CheckRoom(params.size.unwrap_or(0)))
                }
                Mode::AwaitSender { user, sender, .. } => {
                    let (user, sender) = (user.clone(), sender.clone());
                    return (pos, Outcome::CheckSender { user, sender });
                }
                _ if rest.is_empty() => return (pos, Outcome::Continue),
                Mode::Command | Mode::Sasl(_) => {
                    let (used, event) = self.lines.read(rest);
                    pos += used;
                    let Some(event) = event else { continue };
                    let reply = if matches!(self.mode, Mode::Sasl(_)) {
                        self.sasl_input(event)
                    } else {
                        self.command(event)
                    };
                    if let Some(reply) = reply {
                        self.reply(reply, out);
                    }
                    match &self.mode {
                        Mode::Closed => return (input.len(), Outcome::Close),
                        Mode::StartTls => return (pos, Outcome::StartTls),
                        Mode::AwaitOpen => return (pos, Outcome::OpenMessage),
                        Mode::AwaitRecipient { address, .. } => {
                            return (pos, Outcome::CheckRecipient(address.clone()))
                        }
                        // The waiting modes answer at the top of the loop.
                        _ => {}
                    }
                    // A client pipelining commands without reading their replies: stop here,
                    // with input left, so that the replies are written before more is read.
                    if out.len() >= REPLY_BATCH {
                        return (pos, Outcome::Continue);
                    }
                }
                Mode::Data { scanner, id, size } => {
                    let before = body.len();
                    let scan = scanner.decode(rest, Some(body));
                    pos += scan.consumed;
                    *size += (body.len() - before) as u64;
                    let max = self.settings.max_message_size;
                    let refusal = if scan.bare {
                        Some(Reply::bare_line_ending())
                    } else if max > 0 && *size > max {
                        Some(Reply::too_big())
                    } else {
                        None
                    };
                    if let Some(reply) = refusal {
                        // Stop emitting; the driver drops what it already wrote.
                        body.truncate(before);
                        let scanner = std::mem::take(scanner);
                        self.mode = Mode::Discard { scanner, reply };
                        if scan.ended {
                            return (pos, self.end_discard(out));
                        }
                    } else if scan.ended {
                        let (id, size) = (std::mem::take(id), *size);
                        let envelope = self.envelope(&id, size);
                        self.mode = Mode::AwaitCommit { id };
                        return (pos, Outcome::Commit(Box::new(envelope)));
                    }
                }
                Mode::Discard { scanner, .. } => {
                    let scan = scanner.decode(rest, None);
                    pos += scan.consumed;
                    if scan.ended {
                        return (pos, self.end_discard(out));
                    }
                }
            }
        }
    }

    /// Answers [`Outcome::OpenMessage`]: with the spool's name for the mail and the date,
    /// writes `354` and the `Received:` header (into `body`); on failure, `451` (`452` when
    /// the spool is full) and the session stays in command mode. Does nothing in any other state.
    pub fn begin_data<E: SpoolFailure>(
        &mut self,
        opened: Result<DataStart, E>,
        out: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) {
        if !matches!(self.mode, Mode::AwaitOpen) {
            return;
        }
        match opened {
            Ok(start) => {
                self.received_header(&start, body);
                Reply::start_data().write_to(out);
                self.mode = Mode::Data {
                    scanner: DotDecoder::new(),
                    id: start.id,
                    size: 0,
                };
            }
            Err(e) => {
                spool_failure_reply(&e).write_to(out);
                self.mode = Mode::Command;
            }
        }
    }

    /// Answers [`Outcome::CheckRecipient`] with the lookup's verdict: writes the RCPT's reply
    /// (`250` and the recipient joins the transaction, or the refusal) and command input
    /// resumes. Does nothing in any other state.
    pub fn recipient_checked(&mut self, verdict: RecipientVerdict, out: &mut Vec<u8>) {
        if !matches!(self.mode, Mode::AwaitRecipient { .. }) {
            return;
        }
        let Mode::AwaitRecipient { address, params } =
            std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        let text = address.to_string();
        let reply = match verdict {
            RecipientVerdict::Known => match self.txn.as_mut() {
                Some(txn) => {
                    txn.seen.insert(address.clone());
                    txn.rcpts.push((address, params));
                    Reply::recipient_ok()
                }
                None => Reply::bad_sequence("need MAIL before RCPT"),
            },
            RecipientVerdict::Unknown => Reply::unknown_recipient(&text),
            RecipientVerdict::Refused { code, text } => Reply::mapping_error(code, &text),
            RecipientVerdict::Unavailable => Reply::recipient_lookup_failed(&text),
        };
        self.reply(reply, out);
    }

    /// Answers [`Outcome::Commit`]: `250` with the mail's name when the spool committed it,
    /// `452 4.3.1` when it is full, `451` otherwise. Either way the transaction ends and command input resumes. Does nothing
    /// in any other state.
    pub fn committed<E: SpoolFailure>(&mut self, result: Result<(), E>, out: &mut Vec<u8>) {
        let Mode::AwaitCommit { id } = &self.mode else {
            return;
        };
        match result {
            Ok(()) => Reply::accepted(id).write_to(out),
            Err(e) => spool_failure_reply(&e).write_to(out),
        }
        self.txn = None;
        self.mode = Mode::Command;
    }

    /// One command line (or an overlong one): parsed, gated, run. Returns its reply, if any.
    fn command(&mut self, event: LineEvent) -> Option<Reply> {
        let result = match event {
            LineEvent::Line(line) if exceeds_command_limit(&line) => Err(CommandError::TooLong),
            LineEvent::Line(line) => {
                parse_command(&line, self.settings.address_brackets_enforcement)
            }
            LineEvent::TooLong => Err(CommandError::TooLong),
        };
        match result {
            Ok(command) => match self.gate(&command) {
                Ok(()) => self.execute(command),
                Err(reply) => Some(reply),
            },
            Err(error) => Some(error.reply()),
        }
    }

    /// Writes a reply, counting protocol errors and closing after too many.
    fn reply(&mut self, reply: Reply, out: &mut Vec<u8>) {
        let protocol_error = matches!(reply.code, 500..=504 | 555);
        reply.write_to(out);
        if protocol_error {
            self.errors += 1;
            if self.errors >= MAX_ERRORS && !matches!(self.mode, Mode::Closed) {
                Reply::too_many_errors(&self.settings.hello_name).write_to(out);
                self.mode = Mode::Closed;
            }
        }
    }

    /// The end of a refused message: its one reply, and the transaction is over.
    fn end_discard(&mut self, out: &mut Vec<u8>) -> Outcome {
        if let Mode::Discard { reply, .. } = std::mem::replace(&mut self.mode, Mode::Command) {
            reply.write_to(out);
        }
        self.txn = None;
        Outcome::Discard
    }

    /// The permission gate: whether `command` may run now. The one place that knows the order
    /// of SMTP commands.
    fn gate(&self, command: &Command) -> Result<(), Reply> {
        match command {
            Command::Mail { .. } if self.helo.is_none() && self.settings.helo_ehlo_enforcement => {
                Err(Reply::bad_sequence("send HELO/EHLO first"))
            }
            Command::Mail { .. } if self.txn.is_some() => {
                Err(Reply::bad_sequence("nested MAIL command"))
            }
            Command::Rcpt { .. } if self.txn.is_none() => {
                Err(Reply::bad_sequence("need MAIL before RCPT"))
            }
            Command::Data if self.txn.is_none() => Err(Reply::bad_sequence("need MAIL command")),
            Command::Data if self.txn.as_ref().is_some_and(|t| t.rcpts.is_empty()) => {
                Err(Reply::no_recipients())
            }
            Command::Mail { .. } if self.settings.submission && self.auth_user.is_none() => {
                Err(Reply::auth_required())
            }
            Command::Auth { .. } => self.auth_gate(),
            // RFC 3207 §4: a second STARTTLS is a bad sequence (Postfix says 554; 503 is
            // the code for "not now", and counts as a protocol error).
            Command::StartTls if self.tls.is_some() => {
                Err(Reply::bad_sequence("TLS is already active"))
            }
            Command::StartTls if !self.starttls_offered() => Err(Reply::starttls_not_offered()),
            Command::StartTls if self.txn.is_some() => Err(Reply::bad_sequence(
                "STARTTLS is not allowed in a mail transaction",
            )),
            _ => Ok(()),
        }
    }

    /// Runs a command the gate allowed. Returns its reply, or `None` when the reply comes
    /// later (DATA: from [`Session::begin_data`]).
    fn execute(&mut self, command: Command) -> Option<Reply> {
        Some(match command {
            Command::Ehlo(name) => {
                self.helo = Some(Helo {
                    name,
                    extended: true,
                });
                self.txn = None;
                Reply::ehlo(&self.settings.hello_name, self.extensions())
            }
            Command::Helo(name) => {
                self.helo = Some(Helo {
                    name,
                    extended: false,
                });
                self.txn = None;
                Reply::helo(&self.settings.hello_name)
            }
            Command::Mail { sender, params } => {
                let max = self.settings.max_message_size;
                if max > 0 && params.size.is_some_and(|size| size > max) {
                    return Some(Reply::too_big());
                }
                if !params.smtputf8 && sender.as_ref().is_some_and(|s| !is_ascii(s)) {
                    return Some(Reply::utf8_needs_smtputf8());
                }
                if params.size.is_some() {
                    self.mode = Mode::AwaitRoom { sender, params };
                    return None;
                }
                return self.mail(sender, params);
            }
            Command::Rcpt { recipient, params } => return self.rcpt(recipient, params),
            Command::Data => {
                // The 354 is written by `begin_data`, once the spool has a place for the mail.
                self.mode = Mode::AwaitOpen;
                return None;
            }
            Command::Rset => {
                self.txn = None;
                Reply::ok()
            }
            Command::Noop => Reply::ok(),
            Command::Quit => {
                self.mode = Mode::Closed;
                Reply::bye(&self.settings.hello_name)
            }
            Command::Vrfy => Reply::cannot_vrfy(),
            Command::Expn => Reply::disabled("EXPN"),
            Command::Help => Reply::help(),
            Command::Auth { mechanism, initial } => return self.start_auth(&mechanism, initial),
            Command::StartTls => {
                self.mode = Mode::StartTls;
                Reply::ready_for_tls()
            }
        })
    }

    /// Whether STARTTLS is offered: on a plain connection to a listener that has it.
    fn starttls_offered(&self) -> bool {
        self.tls.is_none() && self.settings.tls.as_ref().is_some_and(|t| t.starttls)
    }

    /// A MAIL FROM that passed its size checks: the identity check, or the transaction starts
    /// (`250`); `None` when a check is pending.
    fn mail(&mut self, sender: Option<MailAddress>, params: MailParams) -> Option<Reply> {
        if let Some((user, sender)) = self.identity_to_check(sender.as_ref()) {
            self.mode = Mode::AwaitSender {
                user,
                sender,
                params,
            };
            return None;
        }
        self.start_transaction(sender, params);
        Some(Reply::sender_ok())
    }

    /// Answers [`Outcome::CheckRoom`]: `452 4.3.1` when the spool has no room for the
    /// announced size, else the MAIL goes on (its `250`, or the identity check). Any other
    /// failure to tell lets the MAIL go on: the message is refused at its end if need be.
    /// Does nothing in any other state.
    pub fn room_checked<E: SpoolFailure>(&mut self, room: Result<(), E>, out: &mut Vec<u8>) {
        if !matches!(self.mode, Mode::AwaitRoom { .. }) {
            return;
        }
        let Mode::AwaitRoom { sender, params } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        let reply = match room {
            Err(e) if e.storage_full() => Some(Reply::insufficient_storage()),
            _ => self.mail(sender, params),
        };
        if let Some(reply) = reply {
            self.reply(reply, out);
        }
    }

    /// A MAIL FROM accepted: the transaction starts.
    fn start_transaction(&mut self, sender: Option<MailAddress>, params: MailParams) {
        self.txn = Some(Transaction {
            sender,
            params,
            rcpts: Vec::new(),
            seen: HashSet::new(),
        });
    }

    /// The EHLO keywords.
    fn extensions(&self) -> Vec<String> {
        let size = match self.settings.max_message_size {
            0 => "SIZE".to_string(),
            max => format!("SIZE {max}"),
        };
        let mut extensions = vec![
            "PIPELINING".to_string(),
            size,
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.starttls_offered() {
            extensions.push("STARTTLS".to_string());
        }
        if self.auth_offered() {
            extensions.push("AUTH PLAIN LOGIN".to_string());
        }
        extensions
    }

    /// RCPT TO: the relay policy, then the recipient limit, then (for a local recipient, when
    /// recipients are verified) the lookup: `None` then, as the driver answers it.
    fn rcpt(&mut self, recipient: Recipient, params: RcptParams) -> Option<Reply> {
        let settings = &self.settings;
        let address = match recipient {
            // RFC 5321 §4.5.1: always accepted, whatever the relay policy.
            Recipient::Postmaster => MailAddress::new("postmaster", &settings.hello_name)
                .or_else(|_| MailAddress::new("postmaster", "localhost"))
                .expect("postmaster@localhost is a valid address"),
            Recipient::Address(address) => {
                if !(settings.is_local_domain)(address.domain())
                    && !(settings.relay_allowed)(self.peer)
                    && self.auth_user.is_none()
                {
                    // RFC 4954 §6: where AUTH would let the client relay, say so.
                    return Some(if self.auth_enabled() {
                        Reply::auth_required()
                    } else {
                        Reply::relay_denied()
                    });
                }
                address
            }
        };
        let Some(txn) = self.txn.as_mut() else {
            return Some(Reply::bad_sequence("need MAIL before RCPT"));
        };
        if !txn.params.smtputf8 && !is_ascii(&address) {
            return Some(Reply::utf8_needs_smtputf8());
        }
        if txn.seen.contains(&address) {
            return Some(Reply::recipient_ok());
        }
        if settings.max_rcpt > 0 && txn.rcpts.len() >= settings.max_rcpt {
            return Some(Reply::too_many_recipients());
        }
        // Mail to postmaster@ a local domain is always accepted (RFC 5321 §4.5.1).
        if settings.recipient_check.is_some()
            && (settings.is_local_domain)(address.domain())
            && !address.local_part().eq_ignore_ascii_case("postmaster")
        {
            self.mode = Mode::AwaitRecipient { address, params };
            return None;
        }
        txn.seen.insert(address.clone());
        txn.rcpts.push((address, params));
        Some(Reply::recipient_ok())
    }

    /// The envelope to commit for the current transaction.
    fn envelope(&self, id: &str, size: u64) -> Envelope {
        let ip = self.peer.to_string();
        let (sender, params, rcpts) = match &self.txn {
            Some(t) => (t.sender.clone(), t.params.clone(), t.rcpts.clone()),
            None => (None, MailParams::default(), Vec::new()),
        };
        let mut envelope = Envelope::new(
            id,
            sender,
            rcpts.iter().map(|(address, _)| address.clone()).collect(),
        );
        envelope.remote_addr = ip.clone();
        envelope.remote_host = self.helo.as_ref().map_or(ip, |h| h.name.clone());
        envelope.size = size;
        let attributes = &mut envelope.attributes;
        if let Some(helo) = &self.helo {
            attributes.insert(ATTR_HELO.into(), helo.name.clone().into());
        }
        if let Some(user) = &self.auth_user {
            attributes.insert(ATTR_AUTH_USER.into(), user.clone().into());
        }
        if let Some(body) = params.body {
            attributes.insert(ATTR_BODY.into(), body.into());
        }
        if let Some(ret) = params.ret {
            attributes.insert(ATTR_DSN_RET.into(), ret.into());
        }
        if let Some(envid) = params.envid {
            attributes.insert(ATTR_DSN_ENVID.into(), envid.into());
        }
        if params.smtputf8 {
            attributes.insert(ATTR_SMTPUTF8.into(), AttributeValue::Bool(true));
        }
        let mut dsn = BTreeMap::new();
        for (address, p) in rcpts {
            let mut entry = BTreeMap::new();
            if let Some(notify) = p.notify {
                entry.insert("notify".to_string(), notify.into());
            }
            if let Some(orcpt) = p.orcpt {
                entry.insert("orcpt".to_string(), orcpt.into());
            }
            if !entry.is_empty() {
                dsn.insert(address.to_string(), AttributeValue::Map(entry));
            }
        }
        if !dsn.is_empty() {
            attributes.insert(ATTR_DSN_RECIPIENTS.into(), AttributeValue::Map(dsn));
        }
        envelope
    }

    /// The `with` protocol of the `Received:` header (RFC 3848): `ESMTP` (`UTF8SMTP` for a
    /// transaction with SMTPUTF8, RFC 6531 §3.7.3), plus `S` over TLS and `A` once
    /// authenticated; `SMTP` after HELO.
    fn protocol(&self) -> &'static str {
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return "SMTP";
        }
        let utf8 = self.txn.as_ref().is_some_and(|t| t.params.smtputf8);
        match (utf8, self.tls.is_some(), self.auth_user.is_some()) {
            (false, false, false) => "ESMTP",
            (false, false, true) => "ESMTPA",
            (false, true, false) => "ESMTPS",
            (false, true, true) => "ESMTPSA",
            (true, false, false) => "UTF8SMTP",
            (true, false, true) => "UTF8SMTPA",
            (true, true, false) => "UTF8SMTPS",
            (true, true, true) => "UTF8SMTPSA",
        }
    }

    /// The trace header of RFC 5321 §4.4, folded over three lines.
    fn received_header(&self, start: &DataStart, body: &mut Vec<u8>) {
        let literal = match self.peer {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };
        // The client's name, as it gave it, but only as printable US-ASCII: a control
        // character (an escape sequence, a bare CR) must not reach the header.
        let helo: String = self
            .helo
            .as_ref()
            .map_or(literal.as_str(), |h| h.name.as_str())
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        let protocol = self.protocol();
        let tls = match &self.tls {
            Some(info) => format!("\r\n\t(using {} with cipher {})", info.version, info.cipher),
            None => String::new(),
        };
        let single = match self.txn.as_ref().map(|t| t.rcpts.as_slice()) {
            Some([(only, _)]) => format!("\r\n\tfor <{only}>"),
            _ => String::new(),
        };
        let header = format!(
            "Received: from {helo} ({literal}){tls}\r\n\tby {host} (Mailroom) with {protocol} id {id}{single};\r\n\t{date}\r\n",
            host = self.settings.hello_name,
            id = start.id,
            date = start.date,
        );
        body.extend_from_slice(header.as_bytes());
    }
}
