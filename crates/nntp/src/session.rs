//! The NNTP session: a state machine from client bytes to replies, with no socket, no clock of
//! its own and no store.
//!
//! The driver feeds what it reads to [`Session::ingest`]; the session appends replies to the
//! driver's buffer. When a command needs the news repository it stops consuming input and
//! returns [`Outcome::Query`]; the driver runs the [`Query`] and hands the [`Answer`] to
//! [`Session::answer`], which writes the reply or asks the next query (GROUP then its numbers,
//! a Message-ID then its overview line, a cancel's original then the cancel). Logins go the
//! same way through [`Outcome::Login`] and [`Session::logged_in`]. STARTTLS (RFC 4642) is
//! answered `382` and returns [`Outcome::StartTls`] without consuming what follows; the driver
//! upgrades the stream and replaces the session by a fresh one over TLS, so nothing learnt in
//! plain text (MODE READER, the group, AUTHINFO USER) survives the handshake.
//!
//! *What kind of input comes next* (`Mode`: command lines, an article after POST/IHAVE, or
//! nothing while the driver works) is kept apart from *the reading state* (the selected group
//! and current article, the login), and which command is allowed when is decided in one
//! place, `Session::gate`. The reply formats of the multi-line answers are in the private
//! `answers` module, and the handling of the repository's answers in `session/answer.rs`.

use std::sync::Arc;
use std::time::SystemTime;

use mailroom_config::Secret;
use mailroom_net::dot::DotDecoder;
use mailroom_store::GroupInfo;

use crate::article::{self, Injection};
use crate::codec::{
    parse_command, Command, CommandError, LineEvent, LineReader, Part, Range, Target, READ_LIMIT,
};
use crate::reply::status;
use crate::wildmat::Wildmat;
use crate::{answers, time, NntpSettings};

pub use crate::query::{Answer, PostFailure, Query};

mod answer;

/// Pending replies past which [`Session::ingest`] stops and lets the driver write.
pub const REPLY_BATCH: usize = 128 * 1024;

/// After this many failed logins in one session the client is disconnected.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// What the driver must do after [`Session::ingest`] or [`Session::answer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every input octet given was handled; read more.
    Continue,
    /// Run this against the news repository, then call [`Session::answer`].
    Query(Query),
    /// Check these credentials against the users repository, then call [`Session::logged_in`].
    Login {
        /// The name from AUTHINFO USER.
        user: String,
        /// The password from AUTHINFO PASS.
        password: Secret,
    },
    /// STARTTLS was accepted and its `382` written: write `out`, start TLS, and replace this
    /// session by a fresh one over TLS. Input after the command was not consumed: the
    /// driver's upgrade discards it (plaintext pipelined after STARTTLS must not run in the
    /// TLS session).
    StartTls,
    /// The session is over: write what is pending and close.
    Close,
}

/// What kind of input comes next.
#[derive(Debug)]
enum Mode {
    Command,
    /// An article after 340/335.
    Article(Box<Incoming>),
    /// Waiting for [`Session::answer`] or [`Session::logged_in`].
    Await(Pending),
    /// STARTTLS was accepted; the driver replaces this session once TLS is up.
    StartTls,
    Closed,
}

/// An article being received.
#[derive(Debug)]
struct Incoming {
    /// IHAVE's Message-ID; `None` for POST.
    ihave: Option<String>,
    decoder: DotDecoder,
    octets: Vec<u8>,
    /// Over the size limit: the rest is read and dropped, then refused once.
    too_big: bool,
    /// A bare CR or LF was seen.
    bare: bool,
}

/// What an awaited answer is for.
#[derive(Debug)]
enum Pending {
    Login,
    ListActive(Option<Wildmat>),
    ListTimes(Option<Wildmat>),
    ListNewsgroups(Option<Wildmat>),
    NewGroups(SystemTime),
    Group,
    ListGroup(Option<(u64, u64)>),
    ListGroupNumbers(GroupInfo),
    /// NEXT (true) or LAST: the numbers, then the overview line of the one found.
    Step(bool),
    /// The overview line of the article a NEXT/LAST/STAT moves to (`code` 223).
    StatNumber {
        number: u64,
        missing: u16,
    },
    StatId(String),
    Article {
        part: Part,
        by_id: bool,
        missing: u16,
    },
    Over {
        by_id: bool,
        missing: u16,
    },
    OverLocated,
    Hdr(HdrRequest),
    HdrLocated(HdrRequest),
    NewNews(Wildmat),
    IhaveCheck(String),
    Post {
        ihave: bool,
    },
    CancelCheck {
        ihave: bool,
        target: String,
    },
    Cancel {
        ihave: bool,
    },
}

/// HDR, XHDR or XPAT in progress.
#[derive(Debug)]
pub(crate) struct HdrRequest {
    pub field: String,
    pub legacy: bool,
    pub by_id: Option<String>,
    pub pattern: Option<Wildmat>,
    pub missing: u16,
}

/// The group selected by GROUP or LISTGROUP.
#[derive(Debug)]
struct Selected {
    info: GroupInfo,
    /// The current article number, if any.
    current: Option<u64>,
}

/// One NNTP session. See the module documentation for the protocol with its driver.
#[derive(Debug)]
pub struct Session {
    settings: Arc<NntpSettings>,
    /// Makes generated Message-IDs unique across sessions.
    nonce: u64,
    /// Articles posted in this session, for generated Message-IDs.
    posted: u64,
    /// The stream is encrypted (implicit TLS or after STARTTLS).
    tls: bool,
    lines: LineReader,
    mode: Mode,
    group: Option<Selected>,
    /// The name given by AUTHINFO USER.
    auth_user: Option<String>,
    /// The logged-in user.
    user: Option<String>,
    login_failures: u32,
}

impl Session {
    /// A new session; `nonce` (random, drawn by the driver) makes the Message-IDs it
    /// generates unique; `tls` says whether the stream is already encrypted.
    pub fn new(settings: Arc<NntpSettings>, nonce: u64, tls: bool) -> Session {
        Session {
            settings,
            nonce,
            posted: 0,
            tls,
            lines: LineReader::with_limit(READ_LIMIT),
            mode: Mode::Command,
            group: None,
            auth_user: None,
            user: None,
            login_failures: 0,
        }
    }

    /// The logged-in user, for the driver's log.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn posting_allowed(&self) -> bool {
        !self.settings.read_only && (!self.settings.auth_for_posting || self.user.is_some())
    }

    /// Writes the greeting: 200 when posting is possible, 201 when not.
    pub fn greet(&self, out: &mut Vec<u8>) {
        let host = &self.settings.hello_name;
        if self.settings.read_only {
            status(
                out,
                201,
                &format!("{host} Mailroom NNTP service ready, posting prohibited"),
            );
        } else {
            status(
                out,
                200,
                &format!("{host} Mailroom NNTP service ready, posting allowed"),
            );
        }
    }

    /// Writes the goodbye for an idle client.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        self.mode = Mode::Closed;
        status(out, 400, "idle for too long, closing connection");
    }

    /// Writes the goodbye for a server that is stopping.
    pub fn shutdown(&mut self, out: &mut Vec<u8>) {
        self.mode = Mode::Closed;
        status(out, 400, "server shutting down");
    }

    /// Feeds client input; returns how many octets were consumed and what the driver must do.
    /// Input after a command that needs the driver is not consumed: pass it again after the
    /// answer. Stops early, with input left, once [`REPLY_BATCH`] octets are pending.
    pub fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Outcome) {
        let mut used = 0;
        while used < input.len() {
            let outcome = match &mut self.mode {
                Mode::Closed => return (input.len(), Outcome::Close),
                Mode::Await(_) => return (used, Outcome::Continue),
                Mode::StartTls => return (used, Outcome::StartTls),
                Mode::Article(incoming) => {
                    let (n, done) =
                        receive(incoming, &input[used..], self.settings.max_article_size);
                    used += n;
                    if !done {
                        continue;
                    }
                    let Mode::Article(incoming) = std::mem::replace(&mut self.mode, Mode::Command)
                    else {
                        unreachable!("matched above")
                    };
                    self.article_received(*incoming, out)
                }
                Mode::Command => {
                    let (n, event) = self.lines.read(&input[used..]);
                    used += n;
                    match event {
                        None => break,
                        Some(LineEvent::TooLong) => {
                            status(out, 501, "command line too long");
                            Outcome::Continue
                        }
                        Some(LineEvent::Line(line)) => self.command(&line, out),
                    }
                }
            };
            if outcome != Outcome::Continue {
                return (used, outcome);
            }
            if out.len() >= REPLY_BATCH {
                return (used, Outcome::Continue);
            }
        }
        (used, Outcome::Continue)
    }

    /// Which commands are allowed now: login requirements, read-only, a selected group and a
    /// current article. The handlers after it never meet a missing group or login.
    fn gate(&self, cmd: &Command) -> Result<(), (u16, &'static str)> {
        let needs_group = |range_current: bool| -> Result<(), (u16, &'static str)> {
            match &self.group {
                None => Err((412, "no newsgroup selected")),
                Some(g) if range_current && g.current.is_none() => {
                    Err((420, "current article number is invalid"))
                }
                Some(_) => Ok(()),
            }
        };
        match cmd {
            Command::Capabilities
            | Command::Quit
            | Command::Help
            | Command::Date
            | Command::ModeReader
            | Command::ModeStream
            | Command::Slave
            | Command::StartTls
            | Command::AuthUser(_)
            | Command::AuthPass(_) => return Ok(()),
            Command::Post | Command::Ihave(_) => {
                if self.settings.read_only {
                    return Err(match cmd {
                        Command::Post => (440, "posting not permitted"),
                        _ => (435, "article not wanted: this server is read-only"),
                    });
                }
                if self.settings.auth_for_posting && self.user.is_none() {
                    return Err((480, "authentication required (AUTHINFO USER)"));
                }
                return Ok(());
            }
            _ => {}
        }
        if self.settings.auth_for_reading && self.user.is_none() {
            return Err((480, "authentication required (AUTHINFO USER)"));
        }
        match cmd {
            Command::Next | Command::Last => needs_group(true),
            Command::ListGroup(None, _) => needs_group(false),
            Command::Article(_, Target::Current) => needs_group(true),
            Command::Article(_, Target::Number(_)) => needs_group(false),
            Command::Over(r) | Command::Hdr { range: r, .. } | Command::Xpat { range: r, .. } => {
                match r {
                    Range::Current => needs_group(true),
                    Range::Numbers(..) => needs_group(false),
                    Range::MessageId(_) => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(CommandError::Unknown(k)) if k.is_empty() => {
                status(out, 500, "empty command");
                return Outcome::Continue;
            }
            Err(CommandError::Unknown(k)) => {
                status(out, 500, &format!("unknown command {k}"));
                return Outcome::Continue;
            }
            Err(CommandError::Syntax(why)) => {
                status(out, 501, &why);
                return Outcome::Continue;
            }
        };
        if let Err((code, text)) = self.gate(&cmd) {
            status(out, code, text);
            return Outcome::Continue;
        }
        let group = self
            .group
            .as_ref()
            .map(|g| g.info.name.clone())
            .unwrap_or_default();
        let current = self.group.as_ref().and_then(|g| g.current).unwrap_or(0);
        let ask = |session: &mut Session, pending: Pending, query: Query| {
            session.mode = Mode::Await(pending);
            Outcome::Query(query)
        };
        match cmd {
            Command::Capabilities => {
                answers::capabilities(self.caps(), out);
                Outcome::Continue
            }
            Command::Quit => {
                self.mode = Mode::Closed;
                status(out, 205, "closing connection");
                Outcome::Close
            }
            Command::Help => {
                answers::help(out);
                Outcome::Continue
            }
            Command::Date => {
                status(out, 111, &time::nntp_date((self.settings.clock)()));
                Outcome::Continue
            }
            Command::ModeReader => {
                if self.posting_allowed() {
                    status(out, 200, "reader mode, posting allowed");
                } else {
                    status(out, 201, "reader mode, posting prohibited");
                }
                Outcome::Continue
            }
            Command::ModeStream => {
                status(
                    out,
                    501,
                    "streaming (CHECK/TAKETHIS) is not supported; use IHAVE",
                );
                Outcome::Continue
            }
            Command::Slave => {
                status(out, 202, "slave status noted");
                Outcome::Continue
            }
            Command::StartTls => {
                // RFC 4642 §2.2.2: 502 once TLS is up or after a login, 580 where TLS cannot
                // start (this listener has none).
                if self.tls {
                    status(out, 502, "already using TLS");
                } else if self.user.is_some() {
                    status(out, 502, "STARTTLS is not allowed after authentication");
                } else if !self.starttls_offered() {
                    status(out, 580, "TLS is not available on this server");
                } else {
                    status(out, 382, "Continue with TLS negotiation");
                    self.mode = Mode::StartTls;
                    return Outcome::StartTls;
                }
                Outcome::Continue
            }
            Command::AuthUser(_) | Command::AuthPass(_) if self.tls_required_for_auth() => {
                // RFC 4643 §2.2 (and RFC 3977 §3.2.1): 483 until privacy is arranged. The
                // password of a refused PASS is not looked at.
                status(out, 483, "Encryption or stronger authentication required");
                Outcome::Continue
            }
            Command::AuthUser(name) => {
                if self.user.is_some() {
                    status(out, 502, "already authenticated");
                } else {
                    self.auth_user = Some(name);
                    status(out, 381, "password required");
                }
                Outcome::Continue
            }
            Command::AuthPass(password) => {
                if self.user.is_some() {
                    status(out, 502, "already authenticated");
                    return Outcome::Continue;
                }
                match self.auth_user.take() {
                    None => {
                        status(out, 482, "send AUTHINFO USER first");
                        Outcome::Continue
                    }
                    Some(user) => {
                        self.mode = Mode::Await(Pending::Login);
                        Outcome::Login {
                            user,
                            password: password.into(),
                        }
                    }
                }
            }
            Command::List(kind) => {
                use crate::codec::ListKind;
                match kind {
                    ListKind::Active(w) => ask(self, Pending::ListActive(w), Query::Groups),
                    ListKind::ActiveTimes(w) => ask(self, Pending::ListTimes(w), Query::Groups),
                    ListKind::Newsgroups(w) => ask(self, Pending::ListNewsgroups(w), Query::Groups),
                    ListKind::OverviewFmt => {
                        answers::overview_fmt(out);
                        Outcome::Continue
                    }
                    ListKind::Headers => {
                        status(out, 215, "metadata items supported:");
                        for item in [":", ":bytes", ":lines"] {
                            crate::reply::data_line(out, item);
                        }
                        crate::reply::end(out);
                        Outcome::Continue
                    }
                    ListKind::DistribPats => {
                        status(out, 215, "information follows");
                        crate::reply::end(out);
                        Outcome::Continue
                    }
                    ListKind::Extensions => {
                        // RFC 2980 said 202, which clients do not read as multi-line; 215 as LIST does.
                        status(out, 215, "extensions supported:");
                        for item in ["OVER", "HDR", "LISTGROUP", "XPAT"] {
                            crate::reply::data_line(out, item);
                        }
                        // As CAPABILITIES: only where AUTHINFO can be used now.
                        if self.caps().authinfo {
                            crate::reply::data_line(out, "AUTHINFO USER");
                        }
                        crate::reply::end(out);
                        Outcome::Continue
                    }
                }
            }
            Command::NewGroups(date, t) => match self.parse_date(&date, &t) {
                Some(since) => ask(self, Pending::NewGroups(since), Query::Groups),
                None => {
                    status(out, 501, "bad date or time");
                    Outcome::Continue
                }
            },
            Command::NewNews(wildmat, date, t) => match self.parse_date(&date, &t) {
                Some(since) => ask(self, Pending::NewNews(wildmat), Query::Arrivals(since)),
                None => {
                    status(out, 501, "bad date or time");
                    Outcome::Continue
                }
            },
            Command::Group(name) => ask(self, Pending::Group, Query::Group(name)),
            Command::ListGroup(name, range) => {
                let name = name.unwrap_or(group);
                ask(self, Pending::ListGroup(range), Query::Group(name))
            }
            Command::Next => ask(
                self,
                Pending::Step(true),
                Query::Numbers {
                    group,
                    low: current.saturating_add(1),
                    high: u64::MAX,
                },
            ),
            Command::Last => {
                if current <= 1 {
                    status(out, 422, "no previous article in this group");
                    return Outcome::Continue;
                }
                ask(
                    self,
                    Pending::Step(false),
                    Query::Numbers {
                        group,
                        low: 0,
                        high: current - 1,
                    },
                )
            }
            Command::Article(Part::Stat, Target::MessageId(id)) => {
                ask(self, Pending::StatId(id.clone()), Query::Locate(id))
            }
            Command::Article(Part::Stat, target) => {
                let (number, missing) = match target {
                    Target::Number(n) => (n, 423),
                    _ => (current, 420),
                };
                ask(
                    self,
                    Pending::StatNumber { number, missing },
                    Query::Overview {
                        group,
                        low: number,
                        high: number,
                    },
                )
            }
            Command::Article(part, Target::MessageId(id)) => ask(
                self,
                Pending::Article {
                    part,
                    by_id: true,
                    missing: 430,
                },
                Query::ArticleById(id),
            ),
            Command::Article(part, target) => {
                let (number, missing) = match target {
                    Target::Number(n) => (n, 423),
                    _ => (current, 420),
                };
                ask(
                    self,
                    Pending::Article {
                        part,
                        by_id: false,
                        missing,
                    },
                    Query::Article { group, number },
                )
            }
            Command::Over(Range::MessageId(id)) => {
                ask(self, Pending::OverLocated, Query::Locate(id))
            }
            Command::Over(range) => {
                let (low, high, missing) = match range {
                    Range::Numbers(l, h) => (l, h, 423),
                    _ => (current, current, 420),
                };
                ask(
                    self,
                    Pending::Over {
                        by_id: false,
                        missing,
                    },
                    Query::Overview { group, low, high },
                )
            }
            Command::Hdr {
                field,
                range,
                legacy,
            } => self.hdr(
                HdrRequest {
                    field,
                    legacy,
                    by_id: None,
                    pattern: None,
                    missing: 0,
                },
                range,
                group,
                current,
            ),
            Command::Xpat {
                field,
                range,
                pattern,
            } => self.hdr(
                HdrRequest {
                    field,
                    legacy: true,
                    by_id: None,
                    pattern: Some(pattern),
                    missing: 0,
                },
                range,
                group,
                current,
            ),
            Command::Post => {
                status(
                    out,
                    340,
                    "send article to be posted; end with <CR-LF>.<CR-LF>",
                );
                self.mode = Mode::Article(Box::new(Incoming::new(None)));
                Outcome::Continue
            }
            Command::Ihave(id) => ask(self, Pending::IhaveCheck(id.clone()), Query::Locate(id)),
        }
    }

    fn hdr(
        &mut self,
        mut request: HdrRequest,
        range: Range,
        group: String,
        current: u64,
    ) -> Outcome {
        let (low, high) = match range {
            Range::MessageId(id) => {
                request.by_id = Some(id.clone());
                request.missing = 430;
                self.mode = Mode::Await(Pending::HdrLocated(request));
                return Outcome::Query(Query::Locate(id));
            }
            Range::Numbers(l, h) => {
                request.missing = 423;
                (l, h)
            }
            Range::Current => {
                request.missing = 420;
                (current, current)
            }
        };
        let query = if answers::overview_index(&request.field).is_some() {
            Query::Overview { group, low, high }
        } else {
            Query::Headers {
                group,
                low,
                high,
                field: request.field.clone(),
            }
        };
        self.mode = Mode::Await(Pending::Hdr(request));
        Outcome::Query(query)
    }

    fn parse_date(&self, date: &str, t: &str) -> Option<SystemTime> {
        time::parse_date_time(date, t, (self.settings.clock)())
    }

    fn caps(&self) -> answers::Caps {
        answers::Caps {
            post: !self.settings.read_only,
            authinfo: self.user.is_none() && !self.tls_required_for_auth(),
            starttls: self.starttls_offered(),
        }
    }

    /// Whether STARTTLS can be used now: on a plain connection to a listener that offers it,
    /// before a login (RFC 4642 §2.2.2).
    fn starttls_offered(&self) -> bool {
        !self.tls
            && self.user.is_none()
            && self
                .settings
                .tls
                .as_ref()
                .is_some_and(|t| t.starttls && !t.implicit)
    }

    /// Whether AUTHINFO must wait for TLS (`<requireTLSForAuth>` on a plain connection).
    fn tls_required_for_auth(&self) -> bool {
        !self.tls && !self.settings.plaintext_auth
    }

    /// A whole article arrived after POST or IHAVE: check it, then store it (or cancel).
    fn article_received(&mut self, incoming: Incoming, out: &mut Vec<u8>) -> Outcome {
        let ihave = incoming.ihave.is_some();
        let (refuse, name) = if ihave {
            (437, "transfer rejected")
        } else {
            (441, "posting failed")
        };
        if incoming.too_big {
            status(out, refuse, &format!("{name}: article too large"));
            return Outcome::Continue;
        }
        if incoming.bare {
            status(out, refuse, &format!("{name}: bare CR or LF in article"));
            return Outcome::Continue;
        }
        let now = (self.settings.clock)();
        self.posted += 1;
        let generated = format!(
            "<{:x}.{}.{:x}@{}>",
            now.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            self.posted,
            self.nonce,
            self.settings.article_id_domain
        );
        let injection = Injection {
            path_host: &self.settings.hello_name,
            message_id: incoming.ihave.clone().unwrap_or(generated),
            announced: incoming.ihave.as_deref(),
            date: time::rfc5322_date(now),
        };
        match article::prepare(&incoming.octets, &injection) {
            Err(why) => {
                status(out, refuse, &format!("{name}: {}", why.0));
                Outcome::Continue
            }
            Ok(prepared) => match prepared.cancel {
                Some(target) => {
                    self.mode = Mode::Await(Pending::CancelCheck {
                        ihave,
                        target: target.clone(),
                    });
                    Outcome::Query(Query::ArticleById(target))
                }
                None => {
                    self.mode = Mode::Await(Pending::Post { ihave });
                    let mut article = prepared.article;
                    // Kept with the article: the one login that may cancel it.
                    article.poster = self.user.clone();
                    Outcome::Query(Query::Post(article))
                }
            },
        }
    }

    /// The result of [`Outcome::Login`]: `Some(canonical name)` when the credentials are right.
    pub fn logged_in(&mut self, user: Option<String>, out: &mut Vec<u8>) -> Outcome {
        let Mode::Await(Pending::Login) = self.mode else {
            return Outcome::Continue;
        };
        self.mode = Mode::Command;
        match user {
            Some(name) => {
                self.user = Some(name);
                status(out, 281, "authentication accepted");
                Outcome::Continue
            }
            None => {
                self.login_failures += 1;
                status(out, 481, "authentication failed");
                if self.login_failures >= MAX_LOGIN_FAILURES {
                    self.mode = Mode::Closed;
                    return Outcome::Close;
                }
                Outcome::Continue
            }
        }
    }
}

impl Incoming {
    fn new(ihave: Option<String>) -> Incoming {
        Incoming {
            ihave,
            decoder: DotDecoder::new(),
            octets: Vec::new(),
            too_big: false,
            bare: false,
        }
    }
}

/// Feeds article input; returns the octets consumed and whether the article ended.
fn receive(incoming: &mut Incoming, input: &[u8], limit: usize) -> (usize, bool) {
    let body = (!incoming.too_big).then_some(&mut incoming.octets);
    let decoded = incoming.decoder.decode(input, body);
    incoming.bare |= decoded.bare;
    if limit > 0 && incoming.octets.len() > limit {
        incoming.too_big = true;
        incoming.octets = Vec::new();
    }
    (decoded.consumed, decoded.ended)
}
