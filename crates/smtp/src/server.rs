//! The tokio driver of the SMTP session: what SMTP adds to a [`mailroom_net::Connection`].
//!
//! The connection runs the loop (banner, reads, idle timeout, shutdown, one write per batch
//! of input, write timeouts); this driver is its [`Handler`]: it feeds each batch to the
//! [`Session`], gives the `421` goodbyes on timeout and shutdown, and does the spool calls,
//! kept together in the `impl Driver` block: it opens a message in the spool when DATA starts,
//! streams the message octets into it as they arrive, and commits it; the session writes `250`
//! only after the commit (which makes the mail durable) returned `Ok`. AUTH credentials and
//! `<verifyIdentity>` go to the [`Authenticator`]; a failed AUTH is answered after the delay
//! the shared [`mailroom_net::throttle::AuthThrottle`] gives for the client's address (this
//! session waits, no other does), a correct one at once. The store is async: no call here
//! blocks a runtime thread. It parses nothing itself and formats no reply.
//!
//! TLS: on an implicit-TLS listener (SMTPS) the handshake comes first
//! ([`mailroom_net::tls::accept`], bounded by [`mailroom_net::tls::handshake_timeout`] of the
//! connection timeout, so that a stalled handshake holds its connection permit for at most
//! 30 s), then the session runs over the TLS stream. STARTTLS upgrades the
//! [`mailroom_net::Connection`] in place, which discards plaintext read after the command
//! (CVE-2011-0411), and starts a fresh [`Session`] in the pre-EHLO state. A failed handshake
//! closes the connection, logged at info level.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_mailet::outcome::{self, Status};
use mailroom_mailet::{Envelope, MailAddress};
use mailroom_net::connection::Stream;
use mailroom_net::tls::{self, TlsInfo};
use mailroom_net::{Admission, Connection, Flow, Handler, Listener, ShutdownWatch};
use mailroom_store::{IncomingMessage, SpoolRepository, StoreError};
use tokio::net::TcpStream;

use crate::reply::Reply;
use crate::session::{Credentials, DataStart, Outcome, Session};
use crate::{AuthVerdict, RecipientVerdict, SenderVerdict, SmtpSettings};

/// Octets read from the client at a time; also bounds what one `ingest` call can produce.
const READ_BUFFER: usize = 64 * 1024;

/// Runs an SMTP listener until `shutdown`: accepts connections (at most
/// `settings.connection_limit` at once) and serves each with [`handle_connection`], putting
/// accepted mail into `spool`. Returns when the accept loop has stopped; the sessions end on
/// their own with `421` and are awaited through [`mailroom_net::Shutdown::wait`].
pub async fn serve(
    listener: Listener,
    settings: Arc<SmtpSettings>,
    spool: Arc<dyn SpoolRepository>,
    shutdown: ShutdownWatch,
) {
    if let Ok(addr) = listener.local_addr() {
        let tls = settings.tls.as_ref();
        tracing::info!(%addr, host = %settings.hello_name,
            implicit_tls = tls.is_some_and(|t| t.implicit),
            starttls = tls.is_some_and(|t| t.starttls && !t.implicit),
            "SMTP server listening");
    }
    // An implicit-TLS client expects a handshake, not plain text: it is only closed.
    let implicit_tls = settings.tls.as_ref().is_some_and(|t| t.implicit);
    let admission = Admission {
        connections: settings.connection_limit,
        per_ip: settings.limits.per_ip,
        refusal: if implicit_tls {
            Vec::new()
        } else {
            Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} Too many connections, try again later",
                    settings.hello_name
                ),
            )
            .to_bytes()
        },
    };
    mailroom_net::serve(
        listener,
        admission,
        shutdown,
        move |stream, peer, shutdown| {
            metrics::counter!("mailroom_connections_total", "protocol" => "smtp").increment(1);
            accept(stream, peer, settings.clone(), spool.clone(), shutdown)
        },
    )
    .await;
}

/// Serves one accepted connection: on an implicit-TLS listener, after the handshake (a failed
/// or stalled one closes the connection, logged at info level).
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<SmtpSettings>,
    spool: Arc<dyn SpoolRepository>,
    mut shutdown: ShutdownWatch,
) {
    let timeout = tls::handshake_timeout(settings.connection_timeout);
    let tls = settings.tls.as_ref();
    if let Some((stream, info)) =
        tls::accepted(tls, stream, peer, timeout, &mut shutdown, "SMTPS").await
    {
        serve_stream(stream, info, peer, settings, spool, shutdown).await
    }
}

/// Serves one SMTP connection over a plain byte stream (TCP, or a test pipe) until QUIT,
/// disconnection, timeout or shutdown. Logs the end of the session and each accepted mail.
pub async fn handle_connection<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<SmtpSettings>,
    spool: Arc<dyn SpoolRepository>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    serve_stream(stream, None, peer, settings, spool, shutdown).await;
}

/// Serves one connection over `stream`, which is already encrypted when `tls` says so.
async fn serve_stream<S>(
    stream: S,
    tls: Option<TlsInfo>,
    peer: SocketAddr,
    settings: Arc<SmtpSettings>,
    spool: Arc<dyn SpoolRepository>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    tracing::debug!(%peer, tls = ?tls, "SMTP connection");
    let mut connection = Connection::new(stream, settings.connection_timeout, shutdown)
        .with_read_buffer(READ_BUFFER)
        .with_limits(&settings.limits);
    let mut session = Session::new(settings.clone(), peer.ip());
    if let Some(info) = tls {
        session = session.with_tls(info.clone());
        connection = connection.with_tls(info);
    }
    let mut driver = Driver {
        settings,
        session,
        spool,
        peer,
        body: Vec::new(),
        message: None,
        accepted: 0,
    };
    let result = connection.run(&mut driver).await;
    let user = driver.session.auth_user().unwrap_or("-").to_string();
    match result {
        Ok(end) => {
            tracing::info!(%peer, %user, ?end, mails = driver.accepted, "SMTP session ended")
        }
        Err(error) => {
            tracing::info!(%peer, %user, %error, mails = driver.accepted, "SMTP session failed")
        }
    }
    connection.close().await;
}

/// A message open in the spool while DATA is received.
struct OpenMessage {
    /// Where the octets go.
    incoming: Box<dyn IncomingMessage>,
    /// The first write error; the message is then refused at its end with `451` (`452` for a
    /// full disk).
    failed: Option<io::Error>,
}

/// What SMTP adds to a [`Connection`]: the session, and the message on its way to the spool.
struct Driver {
    /// The protocol state machine.
    session: Session,
    /// The listener's settings: a fresh session after STARTTLS, and its TLS acceptor.
    settings: Arc<SmtpSettings>,
    /// Where accepted mail goes.
    spool: Arc<dyn SpoolRepository>,
    /// The client's address, for the log.
    peer: SocketAddr,
    /// Message octets from the session, drained into `message` after every call.
    body: Vec<u8>,
    /// The message being received, between `OpenMessage` and `Commit`/`Discard`.
    message: Option<OpenMessage>,
    /// Mails accepted in this session, for the log.
    accepted: u64,
}

impl Handler for Driver {
    fn greet(&mut self, out: &mut Vec<u8>) {
        self.session.greet(out);
    }

    fn timeout(&mut self, out: &mut Vec<u8>) {
        self.session.timeout(out);
    }

    fn shutdown(&mut self, out: &mut Vec<u8>) {
        self.session.shutdown(out);
    }

    fn exceeded(&mut self, out: &mut Vec<u8>) {
        self.session.exceeded(out);
    }

    async fn input(&mut self, connection: &mut Connection) -> io::Result<Flow> {
        // Not `while` input is left: an answered check can start another with nothing left
        // to read (MAIL FROM with SIZE= checks the room, then the identity), which only
        // another call reports; with nothing pending the call says Continue.
        loop {
            let (session, body) = (&mut self.session, &mut self.body);
            let before = connection.input().len();
            let outcome = connection.ingest(|input, out| session.ingest(input, out, body));
            self.drain_body().await;
            match outcome {
                // Input left after progress: a batch of replies is pending (REPLY_BATCH).
                // Write it before reading more of the client's pipeline.
                Outcome::Continue if (1..before).contains(&connection.input().len()) => {
                    connection.flush().await?;
                }
                // Everything consumed (or, defensively, nothing more can be).
                Outcome::Continue => break,
                Outcome::OpenMessage => self.open_message(connection.out()).await,
                Outcome::CheckRecipient(address) => {
                    self.check_recipient(address, connection.out()).await
                }
                Outcome::Commit(envelope) => self.commit(*envelope, connection.out()).await,
                Outcome::Discard => self.message = None,
                Outcome::Authenticate(credentials) => {
                    self.authenticate(credentials, connection).await
                }
                Outcome::CheckRoom(size) => {
                    let room = self.spool.room_for(size).await;
                    if let Err(error) = &room {
                        tracing::warn!(peer = %self.peer, size, %error,
                            "MAIL FROM: cannot take a message of the announced size now");
                    }
                    self.session.room_checked(room, connection.out());
                }
                Outcome::CheckSender { user, sender } => {
                    self.check_sender(&user, &sender, connection.out()).await
                }
                Outcome::StartTls => {
                    if !self.start_tls(connection).await {
                        return Ok(Flow::Close);
                    }
                }
                Outcome::Close => return Ok(Flow::Close),
            }
        }
        Ok(Flow::Continue)
    }
}

impl Driver {
    /// STARTTLS was accepted: writes the `220`, upgrades the connection (which discards the
    /// plaintext read after the command) and starts a fresh session over TLS. Returns `false`
    /// when the handshake failed, which ends the session (logged at info level).
    async fn start_tls(&mut self, connection: &mut Connection) -> bool {
        let Some(listener_tls) = &self.settings.tls else {
            // The session offers STARTTLS only with a TLS configuration.
            return false;
        };
        let unread = connection.input().len();
        match connection.start_tls(&listener_tls.config.acceptor()).await {
            Ok(info) => {
                if unread > 0 {
                    tracing::info!(peer = %self.peer, octets = unread,
                        "plaintext pipelined after STARTTLS discarded");
                }
                tracing::debug!(peer = %self.peer, version = %info.version,
                    cipher = %info.cipher, "STARTTLS");
                self.session = Session::new(self.settings.clone(), self.peer.ip()).with_tls(info);
                true
            }
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "STARTTLS: TLS handshake failed");
                false
            }
        }
    }
}

/// The store calls: look up a recipient, open, stream and commit a message.
impl Driver {
    /// A RCPT to a local recipient: looks it up and lets the session answer. A refusal is
    /// logged, so that an administrator sees who was turned away and why.
    async fn check_recipient(&mut self, address: MailAddress, out: &mut Vec<u8>) {
        let verdict = match &self.settings.recipient_check {
            Some(check) => check.check(&address).await,
            None => RecipientVerdict::Known,
        };
        let reason = match &verdict {
            RecipientVerdict::Known => None,
            RecipientVerdict::Unknown => Some("no such user".to_string()),
            RecipientVerdict::Refused { code, text } => {
                Some(format!("mapping error:{code} {text}"))
            }
            RecipientVerdict::Unavailable => Some("lookup failed".to_string()),
        };
        if let Some(reason) = reason {
            let line = outcome::Outcome::without_mail(&address, Status::Refused)
                .field("reason", reason)
                .field("peer", self.peer);
            tracing::info!("{line}");
        }
        self.session.recipient_checked(verdict, out);
    }

    /// AUTH credentials: checked by the authenticator; a failure is answered after the
    /// throttle's delay for this client's address (cut short by shutdown), a success at once.
    async fn authenticate(&mut self, credentials: Credentials, connection: &mut Connection) {
        let ip = self.peer.ip();
        let verdict = match &self.settings.authenticator {
            Some(authenticator) => {
                authenticator
                    .authenticate(&credentials.user, &credentials.password)
                    .await
            }
            None => AuthVerdict::Unavailable,
        };
        match &verdict {
            AuthVerdict::Accepted(name) => {
                tracing::info!(peer = %self.peer, user = %name, "SMTP AUTH succeeded");
            }
            AuthVerdict::Rejected => {
                let delay = self.settings.auth_throttle.failed(ip);
                metrics::counter!("mailroom_auth_failures_total", "protocol" => "smtp")
                    .increment(1);
                tracing::warn!(peer = %self.peer, user = ?credentials.user, ?delay,
                    "SMTP AUTH failed");
                if !delay.is_zero() {
                    connection.pause(delay).await;
                }
            }
            AuthVerdict::Unavailable => {
                tracing::warn!(peer = %self.peer, user = ?credentials.user,
                    "SMTP AUTH could not be checked");
            }
        }
        self.session.authenticated(verdict, connection.out());
    }

    /// `<verifyIdentity>`: whether the authenticated user may send as `sender`.
    async fn check_sender(&mut self, user: &str, sender: &MailAddress, out: &mut Vec<u8>) {
        let verdict = match &self.settings.authenticator {
            Some(authenticator) => authenticator.may_send_as(user, sender).await,
            None => SenderVerdict::NotOwn,
        };
        if verdict != SenderVerdict::Own {
            tracing::info!(peer = %self.peer, %user, %sender, ?verdict,
                "MAIL FROM refused: not the authenticated user's address");
        }
        self.session.sender_checked(verdict, out);
    }

    /// Moves the session's message octets into the open message.
    async fn drain_body(&mut self) {
        if self.body.is_empty() {
            return;
        }
        if let Some(message) = &mut self.message {
            if message.failed.is_none() {
                if let Err(e) = message.incoming.write(&self.body).await {
                    tracing::warn!(peer = %self.peer, id = message.incoming.name(), error = %e,
                        "cannot write message to the spool");
                    message.failed = Some(e);
                }
            }
        }
        self.body.clear();
    }

    /// DATA was accepted: opens a message in the spool and starts the data phase.
    async fn open_message(&mut self, out: &mut Vec<u8>) {
        let opened = match self.spool.incoming().await {
            Ok(incoming) => {
                let start = DataStart {
                    id: incoming.name().to_string(),
                    date: rfc5322_date(SystemTime::now()),
                };
                self.message = Some(OpenMessage {
                    incoming,
                    failed: None,
                });
                Ok(start)
            }
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "cannot open a message in the spool");
                Err(error)
            }
        };
        self.session.begin_data(opened, out, &mut self.body);
        self.drain_body().await;
    }

    /// The message is complete: makes it durable, then lets the session answer.
    async fn commit(&mut self, envelope: Envelope, out: &mut Vec<u8>) {
        let id = envelope.name.clone();
        let sender = envelope
            .sender
            .as_ref()
            .map_or_else(|| "<>".to_string(), |s| format!("<{s}>"));
        let rcpts = envelope.recipients.len();
        let size = envelope.size;
        let result: Result<(), StoreError> = match self.message.take() {
            None => Err(StoreError::Io(io::Error::other("no message open"))),
            Some(OpenMessage {
                failed: Some(e), ..
            }) => Err(StoreError::Io(e)),
            Some(OpenMessage {
                incoming,
                failed: None,
            }) => incoming.commit(envelope).await,
        };
        match &result {
            Ok(()) => {
                self.accepted += 1;
                metrics::counter!("mailroom_mails_received_total", "source" => "smtp").increment(1);
                tracing::info!(peer = %self.peer, %id, from = %sender, rcpts, size, "mail accepted");
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %id, %error, "cannot commit mail to the spool")
            }
        }
        self.session.committed(result, out);
    }
}

/// `Mon, 23 Nov 2026 09:07:51 +0000`: an RFC 5322 date in UTC.
pub fn rfc5322_date(time: SystemTime) -> String {
    let http = httpdate::fmt_http_date(time);
    match http.strip_suffix("GMT") {
        Some(head) => format!("{head}+0000"),
        None => http,
    }
}
