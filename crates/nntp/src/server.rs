//! The tokio driver of the NNTP session: everything with a socket, a clock or a store.
//!
//! A [`mailroom_net::Connection`] runs the loop (banner, reads, idle timeout, shutdown, one
//! write per batch of input, write timeouts); this driver is its [`Handler`]: it feeds each
//! batch to the [`Session`], answers its [`Query`]s with the news repository (async: no call
//! blocks a runtime thread), checks AUTHINFO logins through the verified-logins cache (argon2
//! on the blocking pool, a bounded number at a time), holds back the answer to a failed login
//! as the shared [`mailroom_net::throttle::AuthThrottle`] says for the client's address,
//! without holding up other sessions, and writes a pipelined batch in bounded parts. It parses
//! nothing itself and formats no reply.
//!
//! TLS, as POP3's: on an implicit-TLS listener (NNTPS, 563-style) the handshake comes first
//! ([`mailroom_net::tls::accept`], bounded by [`mailroom_net::tls::handshake_timeout`]), then
//! the session runs over the TLS stream. STARTTLS (RFC 4642): the session answers `382` and
//! returns [`Outcome::StartTls`]; this driver calls [`Connection::start_tls`] (which discards
//! plaintext read after the command) and starts a fresh [`Session`] over TLS, with no new
//! banner. A failed handshake closes the connection, logged at info level.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_net::connection::Stream;
use mailroom_net::tls;
use mailroom_net::{Admission, Connection, Flow, Handler, Listener, ShutdownWatch};
use mailroom_store::{NewsRepository, StoreError, VerifiedLogins};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::session::{Answer, Outcome, PostFailure, Query, Session};
use crate::NntpSettings;

/// Octets read from the client at a time.
const READ_BUFFER: usize = 64 * 1024;

/// What NNTP reads and writes: the users (behind the verified-logins cache) and the news.
pub struct NntpStore {
    /// Password checks, cached after argon2.
    logins: Arc<VerifiedLogins>,
    /// The articles.
    news: Arc<dyn NewsRepository>,
    /// Logins checked at once, so that a flood of failing logins queues here rather than
    /// filling the blocking pool.
    login_slots: Semaphore,
}

impl NntpStore {
    /// The store of every NNTP listener of a server.
    pub fn new(logins: Arc<VerifiedLogins>, news: Arc<dyn NewsRepository>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        NntpStore {
            logins,
            news,
            login_slots: Semaphore::new(cpus),
        }
    }
}

/// Runs an NNTP listener until `shutdown`; the sessions end with `400` and are awaited through
/// [`mailroom_net::Shutdown::wait`].
pub async fn serve(
    listener: Listener,
    settings: Arc<NntpSettings>,
    store: Arc<NntpStore>,
    shutdown: ShutdownWatch,
) {
    if let Ok(addr) = listener.local_addr() {
        let tls = settings.tls.as_ref();
        tracing::info!(%addr, host = %settings.hello_name, read_only = settings.read_only,
            implicit_tls = tls.is_some_and(|t| t.implicit),
            starttls = tls.is_some_and(|t| t.starttls && !t.implicit),
            plaintext_logins = settings.plaintext_auth,
            "NNTP server listening");
    }
    let admission = Admission {
        connections: settings.connection_limit,
        per_ip: settings.limits.per_ip,
        // RFC 3977 §5.1.1: 400, service temporarily unavailable; an implicit-TLS client
        // expects a handshake, not plain text: it is only closed.
        refusal: if settings.tls.as_ref().is_some_and(|t| t.implicit) {
            Vec::new()
        } else {
            b"400 too many connections, try again later\r\n".to_vec()
        },
    };
    mailroom_net::serve(
        listener,
        admission,
        shutdown,
        move |stream, peer, shutdown| {
            metrics::counter!("mailroom_connections_total", "protocol" => "nntp").increment(1);
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
    settings: Arc<NntpSettings>,
    store: Arc<NntpStore>,
    mut shutdown: ShutdownWatch,
) {
    let timeout = tls::handshake_timeout(settings.connection_timeout);
    let tls = settings.tls.as_ref();
    if let Some((stream, info)) =
        tls::accepted(tls, stream, peer, timeout, &mut shutdown, "NNTPS").await
    {
        serve_stream(stream, info.is_some(), peer, settings, store, shutdown).await
    }
}

/// Serves one NNTP connection over any plain byte stream until QUIT, disconnection, timeout or
/// shutdown, and logs how it ended.
pub async fn handle_connection<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<NntpSettings>,
    store: Arc<NntpStore>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    serve_stream(stream, false, peer, settings, store, shutdown).await;
}

/// A random nonce for a session's generated Message-IDs.
fn nonce() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

/// Serves one connection over `stream`, which is already encrypted when `encrypted` says so.
async fn serve_stream<S>(
    stream: S,
    encrypted: bool,
    peer: SocketAddr,
    settings: Arc<NntpSettings>,
    store: Arc<NntpStore>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    tracing::debug!(%peer, encrypted, "NNTP connection");
    let mut connection = Connection::new(stream, settings.connection_timeout, shutdown)
        .with_read_buffer(READ_BUFFER)
        .with_limits(&settings.limits);
    let mut driver = Driver {
        session: Session::new(settings.clone(), nonce(), encrypted),
        settings,
        store,
        peer,
        posted: 0,
    };
    let result = connection.run(&mut driver).await;
    let user = driver.session.user().unwrap_or("-").to_string();
    let posted = driver.posted;
    match result {
        Ok(end) => tracing::info!(%peer, %user, ?end, posted, "NNTP session ended"),
        Err(error) => tracing::info!(%peer, %user, %error, posted, "NNTP session failed"),
    }
    connection.close().await;
}

/// What NNTP adds to a [`Connection`].
struct Driver {
    session: Session,
    settings: Arc<NntpSettings>,
    store: Arc<NntpStore>,
    /// The client's address, for the log.
    peer: SocketAddr,
    /// Articles stored, for the log.
    posted: u64,
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

    async fn input(&mut self, connection: &mut Connection) -> io::Result<Flow> {
        while !connection.input().is_empty() {
            let session = &mut self.session;
            let (used, mut outcome) = connection.ingest(|input, out| {
                let (used, outcome) = session.ingest(input, out);
                (used, (used, outcome))
            });
            let direct = outcome == Outcome::Continue;
            loop {
                outcome = match outcome {
                    Outcome::Continue => break,
                    Outcome::Close => return Ok(Flow::Close),
                    Outcome::Query(query) => {
                        let answer = self.run(query).await;
                        self.session.answer(answer, connection.out())
                    }
                    Outcome::Login { user, password } => {
                        let found = self.login(&user, password.expose(), connection).await;
                        self.session.logged_in(found, connection.out())
                    }
                    Outcome::StartTls => self.start_tls(connection).await,
                };
            }
            if direct && used == 0 {
                break;
            }
            if connection.pending() >= crate::session::REPLY_BATCH {
                connection.flush().await?;
            }
        }
        Ok(Flow::Continue)
    }
}

impl Driver {
    /// STARTTLS was accepted: writes the `382`, upgrades the connection (which discards the
    /// plaintext read after the command) and starts a fresh session over TLS (with a fresh
    /// nonce: its article count starts again). A failed handshake closes the session.
    async fn start_tls(&mut self, connection: &mut Connection) -> Outcome {
        let Some(listener_tls) = &self.settings.tls else {
            // The session offers STARTTLS only with a TLS configuration.
            return Outcome::Close;
        };
        let unread = connection.input().len();
        match connection.start_tls(&listener_tls.config.acceptor()).await {
            Ok(info) => {
                if unread > 0 {
                    tracing::info!(peer = %self.peer, octets = unread,
                        "plaintext pipelined after STARTTLS discarded");
                }
                tracing::debug!(peer = %self.peer, version = %info.version,
                    cipher = %info.cipher, "NNTP STARTTLS");
                self.session = Session::new(self.settings.clone(), nonce(), true);
                Outcome::Continue
            }
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "NNTP STARTTLS: TLS handshake failed");
                Outcome::Close
            }
        }
    }

    /// Checks a login; `Some(canonical name)` when right. A failure is answered after the
    /// throttle's delay for this client's address (cut short by shutdown).
    async fn login(
        &mut self,
        user: &str,
        password: &str,
        connection: &mut Connection,
    ) -> Option<String> {
        let slot = self.store.login_slots.acquire().await.ok();
        let checked = self.store.logins.login(user, password).await;
        drop(slot);
        match checked {
            Ok(Some(found)) => {
                tracing::debug!(peer = %self.peer, user = %found.name, "NNTP login");
                Some(found.name)
            }
            Ok(None) => {
                let delay = self.settings.auth_throttle.failed(self.peer.ip());
                metrics::counter!("mailroom_auth_failures_total", "protocol" => "nntp")
                    .increment(1);
                tracing::warn!(peer = %self.peer, %user, ?delay, "NNTP login failed");
                if !delay.is_zero() {
                    connection.pause(delay).await;
                }
                None
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %user, %error, "NNTP login: store failure");
                None
            }
        }
    }

    /// Runs one query against the news repository.
    async fn run(&mut self, query: Query) -> Answer {
        let news = &self.store.news;
        let result = match query {
            Query::Groups => news.groups().await.map(Answer::Groups),
            Query::Group(name) => news.group(&name).await.map(Answer::Group),
            Query::Numbers { group, low, high } => {
                news.numbers(&group, low, high).await.map(Answer::Numbers)
            }
            Query::Article { group, number } => {
                news.article(&group, number).await.map(Answer::Article)
            }
            Query::ArticleById(id) => news.article_by_id(&id).await.map(Answer::Article),
            Query::Locate(id) => news.locate(&id).await.map(Answer::Located),
            Query::Overview { group, low, high } => {
                news.overview(&group, low, high).await.map(Answer::Overview)
            }
            Query::Headers {
                group,
                low,
                high,
                field,
            } => headers(&**news, &group, low, high, &field)
                .await
                .map(Answer::Headers),
            Query::Arrivals(since) => news.arrived_since(since).await.map(Answer::Arrivals),
            Query::Cancel(id) => {
                let done = news.remove_article(&id).await;
                if let Ok(true) = done {
                    tracing::info!(peer = %self.peer, message_id = %id, "NNTP article cancelled");
                }
                done.map(Answer::Cancelled)
            }
            Query::Post(article) => {
                let posted = match news.post(&article).await {
                    Ok(numbers) => {
                        self.posted += 1;
                        tracing::info!(peer = %self.peer, message_id = %article.message_id,
                            ?numbers, size = article.octets.len(), "NNTP article stored");
                        Ok(numbers)
                    }
                    Err(StoreError::AlreadyExists(_)) => Err(PostFailure::Duplicate),
                    Err(StoreError::NotFound(_)) => Err(PostFailure::NoSuchGroup),
                    Err(error) => {
                        tracing::error!(peer = %self.peer, %error, "NNTP article not stored");
                        Err(PostFailure::Temporary)
                    }
                };
                return Answer::Posted(posted);
            }
        };
        result.unwrap_or_else(|error| {
            tracing::error!(peer = %self.peer, %error, "news repository failed");
            Answer::Failed
        })
    }
}

/// A header of each article of a range, read one article at a time.
async fn headers(
    news: &dyn NewsRepository,
    group: &str,
    low: u64,
    high: u64,
    field: &str,
) -> Result<Vec<(u64, String)>, StoreError> {
    let mut values = Vec::new();
    for number in news.numbers(group, low, high).await? {
        if let Some(article) = news.article(group, number).await? {
            values.push((number, crate::header_value(&article.octets, field)));
        }
    }
    Ok(values)
}
