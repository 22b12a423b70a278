//! The tokio driver of the SMTP session: everything with a socket, a clock or a store.
//!
//! Per connection: the banner, then a read loop that feeds each read to the
//! [`Session`] and writes all the replies it produced in one write (so a
//! pipelined batch is answered in one segment). The driver enforces the idle timeout, says
//! `421` on shutdown, opens a message in the spool when DATA starts, streams the message
//! octets into it as they arrive, and commits it; the session writes `250` only after the
//! commit (which makes the mail durable) returned `Ok`. The store is async: no call here
//! blocks a runtime thread. It parses nothing itself and formats no reply.
//!
//! The connection handler is generic over the stream, so implicit TLS (a later issue) passes
//! a TLS stream here unchanged, and STARTTLS will replace the stream and the session in
//! [`handle_connection`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_mailet::Envelope;
use mailroom_net::{Listener, ShutdownWatch};
use mailroom_store::{IncomingMessage, SpoolRepository};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::session::{DataStart, Outcome, Session};
use crate::SmtpSettings;

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
        tracing::info!(%addr, host = %settings.hello_name, "SMTP server listening");
    }
    let limit = settings.connection_limit;
    mailroom_net::serve(listener, limit, shutdown, move |stream, peer, shutdown| {
        handle_connection(stream, peer, settings.clone(), spool.clone(), shutdown)
    })
    .await;
}

/// How a session ended, for the log.
#[derive(Debug)]
enum End {
    /// QUIT, or the session closed itself after too many errors.
    Closed,
    /// The client disconnected.
    PeerClosed,
    /// The idle timeout expired (`421 4.4.2` sent).
    Timeout,
    /// The server is stopping (`421 4.3.2` sent).
    Shutdown,
}

/// Serves one SMTP connection over any byte stream (plain TCP today, TLS later) until QUIT,
/// disconnection, timeout or shutdown. Logs the end of the session and each accepted mail.
pub async fn handle_connection<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<SmtpSettings>,
    spool: Arc<dyn SpoolRepository>,
    mut shutdown: ShutdownWatch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    tracing::debug!(%peer, "SMTP connection");
    let mut connection = Connection {
        session: Session::new(settings.clone(), peer.ip()),
        stream,
        settings,
        spool,
        peer,
        out: Vec::new(),
        body: Vec::new(),
        message: None,
        accepted: 0,
    };
    match connection.run(&mut shutdown).await {
        Ok(end) => tracing::info!(%peer, ?end, mails = connection.accepted, "SMTP session ended"),
        Err(error) => {
            tracing::info!(%peer, %error, mails = connection.accepted, "SMTP session failed")
        }
    }
    let _ = connection.stream.shutdown().await;
}

/// A message open in the spool while DATA is received.
struct OpenMessage {
    /// Where the octets go.
    incoming: Box<dyn IncomingMessage>,
    /// The first write error; the message is then refused at its end with `451`.
    failed: Option<io::Error>,
}

/// One connection's state on the driver side.
struct Connection<S> {
    /// The protocol state machine.
    session: Session,
    /// The client.
    stream: S,
    /// Timeouts and names.
    settings: Arc<SmtpSettings>,
    /// Where accepted mail goes.
    spool: Arc<dyn SpoolRepository>,
    /// The client's address, for the log.
    peer: SocketAddr,
    /// Replies waiting to be written: written once per read.
    out: Vec<u8>,
    /// Message octets from the session, drained into `message` after every call.
    body: Vec<u8>,
    /// The message being received, between `OpenMessage` and `Commit`/`Discard`.
    message: Option<OpenMessage>,
    /// Mails accepted in this session, for the log.
    accepted: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    async fn run(&mut self, shutdown: &mut ShutdownWatch) -> io::Result<End> {
        self.session.greet(&mut self.out);
        self.flush().await?;
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let timeout = self.settings.connection_timeout;
            let read = tokio::select! {
                read = tokio::time::timeout(timeout, self.stream.read(&mut buf)) => read,
                _ = shutdown.recv() => {
                    self.session.shutdown(&mut self.out);
                    self.flush().await?;
                    return Ok(End::Shutdown);
                }
            };
            let n = match read {
                Err(_elapsed) => {
                    self.session.timeout(&mut self.out);
                    self.flush().await?;
                    return Ok(End::Timeout);
                }
                Ok(Ok(0)) => return Ok(End::PeerClosed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            let mut input = &buf[..n];
            while !input.is_empty() {
                let (used, outcome) = self.session.ingest(input, &mut self.out, &mut self.body);
                input = &input[used..];
                self.drain_body().await;
                match outcome {
                    // Everything consumed (or, defensively, nothing more can be).
                    Outcome::Continue => break,
                    Outcome::OpenMessage => self.open_message().await,
                    Outcome::Commit(envelope) => self.commit(*envelope).await,
                    Outcome::Discard => self.message = None,
                    Outcome::Close => {
                        self.flush().await?;
                        return Ok(End::Closed);
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Writes the pending replies in one write, bounded by the connection timeout.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.settings.connection_timeout;
        match tokio::time::timeout(timeout, self.stream.write_all(&self.out)).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
        self.out.clear();
        self.stream.flush().await
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
    async fn open_message(&mut self) {
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
        self.session
            .begin_data(opened, &mut self.out, &mut self.body);
        self.drain_body().await;
    }

    /// The message is complete: makes it durable, then lets the session answer.
    async fn commit(&mut self, envelope: Envelope) {
        let id = envelope.name.clone();
        let sender = envelope
            .sender
            .as_ref()
            .map_or_else(|| "<>".to_string(), |s| format!("<{s}>"));
        let rcpts = envelope.recipients.len();
        let size = envelope.size;
        let result: Result<(), String> = match self.message.take() {
            None => Err("no message open".to_string()),
            Some(OpenMessage {
                failed: Some(e), ..
            }) => Err(e.to_string()),
            Some(OpenMessage {
                incoming,
                failed: None,
            }) => incoming.commit(envelope).await.map_err(|e| e.to_string()),
        };
        match &result {
            Ok(()) => {
                self.accepted += 1;
                tracing::info!(peer = %self.peer, %id, from = %sender, rcpts, size, "mail accepted");
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %id, %error, "cannot commit mail to the spool")
            }
        }
        self.session.committed(result, &mut self.out);
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
