//! The tokio driver of the POP3 session: everything with a socket, a clock or a store.
//!
//! A [`mailroom_net::Connection`] runs the loop (banner, reads, idle timeout, shutdown, one
//! write per batch of input, write timeouts); this driver is its [`Handler`]: it feeds each
//! batch to the [`Session`], writes a pipelined batch in bounded parts (the session stops at
//! [`crate::session::REPLY_BATCH`] octets of pending replies) and gives the `-ERR` goodbyes
//! on timeout and shutdown. The store calls are kept together in the `impl Driver` block: it
//! checks logins (argon2 runs on the blocking pool, a bounded number at a time, so it never
//! stalls the async workers), holds back the answer to a failed login as the shared
//! [`mailroom_net::throttle::AuthThrottle`] says for the client's address, without holding up
//! other sessions, keeps the opened [`Mailbox`] (and so its lock) for the session, streams
//! messages from the store in chunks through the [`DotEncoder`], and deletes at QUIT (durably)
//! before the session answers `+OK`. The store is async: no call here blocks a runtime thread.
//! It parses nothing itself and formats no reply.
//!
//! TLS: on an implicit-TLS listener (POP3S) the handshake comes first
//! ([`mailroom_net::tls::accept`], bounded by [`mailroom_net::tls::handshake_timeout`] of the
//! connection timeout: at most 30 s), then the session runs over the TLS stream. STLS upgrades
//! the [`mailroom_net::Connection`] in place, which discards plaintext read after the command,
//! and starts a fresh [`Session`] (same APOP timestamp). A failed handshake closes the
//! connection, logged at info level.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_net::connection::Stream;
use mailroom_net::dot::DotEncoder;
use mailroom_net::tls;
use mailroom_net::{Admission, Connection, Flow, Handler, Listener, ShutdownWatch};
use mailroom_store::password::constant_time_eq;
use mailroom_store::{InboxRepository, Mailbox, StoreError, User, VerifiedLogins};
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::reply::{Code, Reply};
use crate::session::{Credential, Login, LoginFailure, Outcome, Session};
use crate::Pop3Settings;

/// Octets read from the client at a time.
const READ_BUFFER: usize = 16 * 1024;

/// Octets of a message read from the store at a time.
const MESSAGE_CHUNK: usize = 64 * 1024;

/// Replies are written once this much is pending, so that a large RETR streams in bounded
/// memory; smaller batches are written whole, once per read.
const FLUSH_AT: usize = crate::session::REPLY_BATCH;

/// What POP3 reads: the users (behind the verified-logins cache) and their inboxes.
pub struct Pop3Store {
    /// Password checks, cached after argon2 (which it runs a bounded number at a time, for
    /// every protocol together); also the users repository for APOP.
    logins: Arc<VerifiedLogins>,
    /// Where the mailboxes are.
    inbox: Arc<dyn InboxRepository>,
}

impl Pop3Store {
    /// The store of every POP3 listener of a server.
    pub fn new(logins: Arc<VerifiedLogins>, inbox: Arc<dyn InboxRepository>) -> Self {
        Pop3Store { logins, inbox }
    }
}

/// Runs a POP3 listener until `shutdown`: accepts connections (at most
/// `settings.connection_limit` at once) and serves each with [`handle_connection`]. Returns
/// when the accept loop has stopped; the sessions end on their own with `-ERR` and are awaited
/// through [`mailroom_net::Shutdown::wait`].
pub async fn serve(
    listener: Listener,
    settings: Arc<Pop3Settings>,
    store: Arc<Pop3Store>,
    shutdown: ShutdownWatch,
) {
    if let Ok(addr) = listener.local_addr() {
        let tls = settings.tls.as_ref();
        tracing::info!(%addr, host = %settings.hello_name, apop = settings.enable_apop,
            implicit_tls = tls.is_some_and(|t| t.implicit),
            stls = tls.is_some_and(|t| t.starttls && !t.implicit),
            plaintext_logins = settings.plaintext_auth,
            "POP3 server listening");
    }
    let mut refusal = Vec::new();
    // An implicit-TLS client expects a handshake, not plain text: it is only closed.
    if !settings.tls.as_ref().is_some_and(|t| t.implicit) {
        Reply::err_code(Code::SysTemp, "too many connections, try again later")
            .write_to(&mut refusal);
    }
    let admission = Admission {
        connections: settings.connection_limit,
        per_ip: settings.limits.per_ip,
        refusal,
    };
    mailroom_net::serve(
        listener,
        admission,
        shutdown,
        move |stream, peer, shutdown| {
            metrics::counter!("mailroom_connections_total", "protocol" => "pop3").increment(1);
            accept(stream, peer, settings.clone(), store.clone(), shutdown)
        },
    )
    .await;
}

/// Serves one accepted connection: on an implicit-TLS listener, after the handshake (a failed
/// or stalled one closes the connection, logged at info level).
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<Pop3Settings>,
    store: Arc<Pop3Store>,
    mut shutdown: ShutdownWatch,
) {
    let timeout = tls::handshake_timeout(settings.connection_timeout);
    let tls = settings.tls.as_ref();
    if let Some((stream, info)) =
        tls::accepted(tls, stream, peer, timeout, &mut shutdown, "POP3S").await
    {
        serve_stream(stream, info.is_some(), peer, settings, store, shutdown).await
    }
}

/// Serves one POP3 connection over a plain byte stream (TCP, or a test pipe) until QUIT,
/// disconnection, timeout or shutdown, and logs how it ended.
pub async fn handle_connection<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<Pop3Settings>,
    store: Arc<Pop3Store>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    serve_stream(stream, false, peer, settings, store, shutdown).await;
}

/// Serves one connection over `stream`, which is already encrypted when `encrypted` says so.
async fn serve_stream<S>(
    stream: S,
    encrypted: bool,
    peer: SocketAddr,
    settings: Arc<Pop3Settings>,
    store: Arc<Pop3Store>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    tracing::debug!(%peer, encrypted, "POP3 connection");
    let nonce = getrandom::u64().unwrap_or_else(|_| {
        // Uniqueness is what matters for the APOP timestamp; the clock gives that.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut connection = Connection::new(stream, settings.connection_timeout, shutdown)
        .with_read_buffer(READ_BUFFER)
        .with_limits(&settings.limits);
    let mut session = Session::new(settings.clone(), nonce);
    if encrypted {
        session = session.with_tls();
    }
    let mut driver = Driver {
        session,
        nonce,
        settings,
        store,
        peer,
        chunk: Vec::new(),
        mailbox: None,
        sent: 0,
        deleted: 0,
    };
    let result = connection.run(&mut driver).await;
    driver.mailbox = None;
    let user = driver.session.user().unwrap_or("-").to_string();
    let (sent, deleted) = (driver.sent, driver.deleted);
    match result {
        Ok(end) => tracing::info!(%peer, %user, ?end, sent, deleted, "POP3 session ended"),
        Err(error) => {
            tracing::info!(%peer, %user, %error, sent, deleted, "POP3 session failed")
        }
    }
    connection.close().await;
}

/// What POP3 adds to a [`Connection`]: the session and the mailbox it opened.
struct Driver {
    /// The protocol state machine.
    session: Session,
    /// The APOP timestamp's nonce, kept for the fresh session after STLS.
    nonce: u64,
    /// Delays, and the TLS acceptor for STLS.
    settings: Arc<Pop3Settings>,
    /// Users and inboxes.
    store: Arc<Pop3Store>,
    /// The client's address, for the log.
    peer: SocketAddr,
    /// The buffer message chunks are read into (allocated at the first RETR or TOP).
    chunk: Vec<u8>,
    /// The mailbox after login; dropping it releases the lock without deleting anything.
    mailbox: Option<Box<dyn Mailbox>>,
    /// Messages sent (RETR and TOP), for the log.
    sent: u64,
    /// Messages deleted at QUIT, for the log.
    deleted: usize,
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
        while !connection.input().is_empty() {
            let session = &mut self.session;
            let (used, outcome) = connection.ingest(|input, out| {
                let (used, outcome) = session.ingest(input, out);
                (used, (used, outcome))
            });
            let outcome = match outcome {
                Outcome::Continue if connection.input().is_empty() || used == 0 => break,
                // The session stopped with a batch of replies pending: write them before
                // it reads more of the client's pipeline.
                Outcome::Continue => {
                    connection.flush().await?;
                    continue;
                }
                Outcome::Login(login) => self.login(login, connection).await,
                Outcome::Send { index, body_lines } => {
                    self.send(index, body_lines, connection).await?;
                    Outcome::Continue
                }
                Outcome::Commit(indexes) => self.commit(indexes, connection.out()).await,
                Outcome::StartTls => self.start_tls(connection).await,
                Outcome::Close => Outcome::Close,
            };
            if outcome == Outcome::Close {
                // Unlock before the goodbye, so that a client that reconnects at once
                // finds its mailbox free.
                self.mailbox = None;
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }
}

impl Driver {
    /// STLS was accepted: writes the `+OK`, upgrades the connection (which discards the
    /// plaintext read after the command) and starts a fresh session over TLS. A failed
    /// handshake closes the session (logged at info level).
    async fn start_tls(&mut self, connection: &mut Connection) -> Outcome {
        let Some(listener_tls) = &self.settings.tls else {
            // The session offers STLS only with a TLS configuration.
            return Outcome::Close;
        };
        let unread = connection.input().len();
        match connection.start_tls(&listener_tls.config.acceptor()).await {
            Ok(info) => {
                if unread > 0 {
                    tracing::info!(peer = %self.peer, octets = unread,
                        "plaintext pipelined after STLS discarded");
                }
                tracing::debug!(peer = %self.peer, version = %info.version,
                    cipher = %info.cipher, "STLS");
                self.session = Session::new(self.settings.clone(), self.nonce).with_tls();
                Outcome::Continue
            }
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "STLS: TLS handshake failed");
                Outcome::Close
            }
        }
    }
}

/// The store calls: logins, messages, deletion at QUIT.
impl Driver {
    /// Checks a login and opens the mailbox; a failure is answered after the throttle's delay
    /// for this client's address (or at once on shutdown, which then closes the session).
    async fn login(&mut self, login: Login, connection: &mut Connection) -> Outcome {
        let name = login.user.clone();
        let opened = open_mailbox(&self.store, &login).await;
        let result = match opened {
            Ok(mailbox) => {
                let messages = mailbox.messages().to_vec();
                tracing::debug!(peer = %self.peer, user = %name, messages = messages.len(),
                    "POP3 login");
                self.mailbox = Some(mailbox);
                Ok(messages)
            }
            Err(LoginFailure::Credentials) => {
                let delay = self.settings.auth_throttle.failed(self.peer.ip());
                metrics::counter!("mailroom_auth_failures_total", "protocol" => "pop3")
                    .increment(1);
                tracing::warn!(peer = %self.peer, user = ?name, ?delay, "POP3 login failed");
                // Shutdown cuts the delay short; the next read then says goodbye.
                if !delay.is_zero() {
                    connection.pause(delay).await;
                }
                Err(LoginFailure::Credentials)
            }
            Err(failure) => {
                tracing::info!(peer = %self.peer, user = ?name, ?failure, "POP3 mailbox not opened");
                Err(failure)
            }
        };
        self.session.logged_in(result, connection.out())
    }

    /// RETR or TOP: the status line, then the message streamed in chunks.
    async fn send(
        &mut self,
        index: usize,
        body_lines: Option<u64>,
        connection: &mut Connection,
    ) -> io::Result<()> {
        let opened = match &self.mailbox {
            Some(mailbox) => mailbox.open_message(index).await,
            None => Err(StoreError::NotFound("mailbox".into())),
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(error) => {
                tracing::warn!(peer = %self.peer, message = index + 1, %error,
                    "cannot open a message");
                self.session.message_opened(false, connection.out());
                return Ok(());
            }
        };
        self.session.message_opened(true, connection.out());
        self.chunk.resize(MESSAGE_CHUNK, 0);
        let mut encoder = DotEncoder::new(body_lines);
        loop {
            // After `+OK` a failed read cannot be reported in the protocol: the error closes
            // the connection, so the client never takes a cut message for a whole one.
            let n = match reader.read(&mut self.chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            encoder.encode(&self.chunk[..n], connection.out());
            if encoder.is_done() {
                break;
            }
            if connection.pending() >= FLUSH_AT {
                connection.flush().await?;
            }
        }
        encoder.finish(connection.out());
        self.sent += 1;
        Ok(())
    }

    /// QUIT in TRANSACTION: deletes the marked messages durably, then lets the session answer.
    async fn commit(&mut self, indexes: Vec<usize>, out: &mut Vec<u8>) -> Outcome {
        let ok = match self.mailbox.take() {
            None => false,
            Some(mut mailbox) => {
                let count = indexes.len();
                match mailbox.delete(&indexes).await {
                    Ok(()) => {
                        self.deleted = count;
                        true
                    }
                    Err(error) => {
                        tracing::error!(peer = %self.peer, %error, "cannot delete messages");
                        false
                    }
                }
            }
        };
        self.session.committed(ok, out)
    }
}

/// Checks `login` and opens the user's own mailbox, under the canonical name the users
/// repository stores (which is the name delivery uses).
async fn open_mailbox(store: &Pop3Store, login: &Login) -> Result<Box<dyn Mailbox>, LoginFailure> {
    let temporary = |error: StoreError| {
        tracing::error!(user = ?login.user, %error, "POP3 login: store failure");
        LoginFailure::Temporary
    };
    let user = match &login.credential {
        Credential::Password(password) => store.logins.login(&login.user, password.expose()).await,
        Credential::Apop { timestamp, digest } => store
            .logins
            .users()
            .get(&login.user)
            .await
            .map(|user| user.filter(|u| apop_matches(u, timestamp, digest.expose()))),
    }
    .map_err(temporary)?
    .ok_or(LoginFailure::Credentials)?;
    match store.inbox.open_mailbox(&user.name).await {
        Ok(mailbox) => Ok(mailbox),
        Err(StoreError::InUse(_)) => Err(LoginFailure::InUse),
        Err(error) => Err(temporary(error)),
    }
}

/// Whether `digest` is MD5(`timestamp` + the user's APOP secret) in hex (RFC 1939 §7). A user
/// without a secret (set while APOP was off) cannot use APOP.
fn apop_matches(user: &User, timestamp: &str, digest: &str) -> bool {
    let Some(secret) = &user.apop_secret else {
        return false;
    };
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    let expected: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let digest = digest.to_ascii_lowercase();
    // Compare in constant time: the digest is a guess at the secret.
    constant_time_eq(expected.as_bytes(), digest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_digest_of_rfc_1939() {
        // The example of RFC 1939 §7.
        let mut user = User::new("mrose", "x");
        user.apop_secret = Some("tanstaaf".into());
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        assert!(apop_matches(&user, ts, "c4c9334bac560ecc979e58001b3e22fb"));
        assert!(apop_matches(&user, ts, "C4C9334BAC560ECC979E58001B3E22FB"));
        assert!(!apop_matches(&user, ts, "c4c9334bac560ecc979e58001b3e22fa"));
        assert!(!apop_matches(&user, ts, ""));
        user.apop_secret = None;
        assert!(!apop_matches(&user, ts, "c4c9334bac560ecc979e58001b3e22fb"));
    }
}
