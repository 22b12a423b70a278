//! The async POP3 client (RFC 1939, CAPA of RFC 2449, STLS of RFC 2595, AUTH PLAIN of RFC 5034):
//! one connection to one remote account.
//!
//! Every read and write has the task's timeout; every line is bounded ([`crate::reply`]);
//! a mailbox listing keeps its first [`MAX_MESSAGES`] lines and counts the rest; a message body is handed out chunk by chunk
//! ([`Client::next_chunk`]) so that a message of any size passes in bounded memory. STLS drops
//! any plaintext the server sent after its `+OK` (an injection attempt) and fails on it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mailroom_net::dot::DotDecoder;
use mailroom_net::lines::{LineEvent, LineReader};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::TlsConnector;

use crate::reply::{self, Listing, ReplyError, Status, MAX_LINE};

pub use mailroom_config::fetchmail::StartTls;

/// The most messages of a mailbox one session looks at (a bound on the client's memory: about
/// 100 octets each); a session over a larger mailbox handles the first ones, and later
/// sessions the rest as those are deleted.
pub const MAX_MESSAGES: usize = 200_000;

/// A mailbox listing (UIDL, LIST): its first [`MAX_MESSAGES`] entries and how many more the
/// server listed.
#[derive(Debug)]
pub struct Listed<T> {
    /// The entries, in the server's order.
    pub entries: Vec<T>,
    /// Entries past [`MAX_MESSAGES`], read and dropped.
    pub skipped: usize,
}

/// How much is read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// What went wrong in a POP3 session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or broke.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The server closed the connection in the middle of a reply.
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    /// A reply that breaks the protocol.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// The server answered `-ERR` to a command.
    #[error("{command} refused: -ERR {text}")]
    Refused {
        /// The command, without arguments that could be secret.
        command: &'static str,
        /// The server's text.
        text: String,
    },
    /// TLS could not be set up (handshake, certificate, STLS missing when required).
    #[error("TLS: {0}")]
    Tls(String),
    /// The message was longer than the server had announced (beyond any tolerance).
    #[error("message {0} is longer than the {1} octets the server announced")]
    Oversized(u32, u64),
}

/// How to reach and log in to one remote account.
#[derive(Clone)]
pub struct Options {
    /// Host name or IP address (also the name the certificate must carry).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS from the first octet (POP3S).
    pub implicit_tls: bool,
    /// STLS on a plain connection.
    pub start_tls: StartTls,
    /// Log in with APOP when the greeting has a timestamp.
    pub apop: bool,
    /// The TLS client configuration (certificate verification).
    pub tls: Arc<rustls::ClientConfig>,
    /// How long connecting (and the TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How long any one read or write may take.
    pub timeout: Duration,
}

/// The connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => write_flush(s, bytes).await,
            Stream::Tls(s) => write_flush(s.as_mut(), bytes).await,
        }
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// A message being read ([`Client::retr`] to the end of [`Client::next_chunk`]).
struct Body {
    number: u32,
    decoder: DotDecoder,
    /// Octets decoded so far.
    octets: u64,
    /// The most octets accepted before the message counts as oversized.
    limit: u64,
}

/// One POP3 session.
pub struct Client {
    stream: Option<Stream>,
    /// Read but not yet consumed.
    buf: Vec<u8>,
    timeout: Duration,
    greeting: String,
    capabilities: Vec<String>,
    body: Option<Body>,
}

impl Client {
    /// Connects (with TLS first for POP3S), reads the greeting, asks for CAPA and upgrades with
    /// STLS as `options` say.
    pub async fn connect(options: &Options) -> Result<Client, Error> {
        let addr = (options.host.as_str(), options.port);
        let tcp = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout("connecting"))??;
        let _ = tcp.set_nodelay(true);
        let stream = if options.implicit_tls {
            Stream::Tls(Box::new(handshake(options, tcp).await?))
        } else {
            Stream::Plain(tcp)
        };
        let mut client = Client {
            stream: Some(stream),
            buf: Vec::new(),
            timeout: options.timeout,
            greeting: String::new(),
            capabilities: Vec::new(),
            body: None,
        };
        let greeting = client.status().await?;
        if !greeting.ok {
            return Err(Error::Refused {
                command: "greeting",
                text: greeting.text,
            });
        }
        client.greeting = greeting.text;
        client.capabilities = client.capa().await?;
        if !options.implicit_tls && options.start_tls != StartTls::Off {
            if client.offers("STLS") {
                client.stls(options).await?;
            } else if options.start_tls == StartTls::Required {
                return Err(Error::Tls(
                    "the server does not offer STLS and mail.pop3.starttls.required is set".into(),
                ));
            }
        }
        Ok(client)
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Some(Stream::Tls(_)))
    }

    /// Whether CAPA listed `capability` (its first word).
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split_ascii_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(capability))
        })
    }

    /// Whether CAPA listed SASL with `mechanism`.
    fn offers_sasl(&self, mechanism: &str) -> bool {
        self.capabilities.iter().any(|c| {
            let mut words = c.split_ascii_whitespace();
            words.next().is_some_and(|w| w.eq_ignore_ascii_case("SASL"))
                && words.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    /// CAPA's lines; none when the server does not know CAPA.
    async fn capa(&mut self) -> Result<Vec<String>, Error> {
        self.send(b"CAPA\r\n").await?;
        if !self.status().await?.ok {
            return Ok(Vec::new());
        }
        self.listing(1000).await
    }

    async fn stls(&mut self, options: &Options) -> Result<(), Error> {
        self.command("STLS", b"STLS\r\n").await?;
        if !self.buf.is_empty() {
            return Err(Error::Tls(
                "the server sent data after its STLS reply, before the handshake".into(),
            ));
        }
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            return Err(Error::Tls(
                "STLS on a connection that has TLS already".into(),
            ));
        };
        self.stream = Some(Stream::Tls(Box::new(handshake(options, tcp).await?)));
        // RFC 2595: capabilities may differ after the upgrade.
        self.capabilities = self.capa().await?;
        Ok(())
    }

    /// Logs in: APOP when asked for and the greeting has a timestamp, else AUTH PLAIN when
    /// offered, else USER and PASS.
    pub async fn login(
        &mut self,
        options: &Options,
        user: &str,
        password: &str,
    ) -> Result<(), Error> {
        if options.apop {
            if let Some(stamp) = reply::apop_timestamp(&self.greeting) {
                let digest = Md5::digest(format!("{stamp}{password}").as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let line = format!("APOP {user} {hex}\r\n");
                return self.command("APOP", line.as_bytes()).await.map(drop);
            }
        }
        if self.offers_sasl("PLAIN") {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            let line = format!("AUTH PLAIN {token}\r\n");
            return self.command("AUTH PLAIN", line.as_bytes()).await.map(drop);
        }
        self.command("USER", format!("USER {user}\r\n").as_bytes())
            .await?;
        self.command("PASS", format!("PASS {password}\r\n").as_bytes())
            .await
            .map(drop)
    }

    /// UIDL: message number and unique id of every message.
    pub async fn uidl(&mut self) -> Result<Listed<(u32, String)>, Error> {
        self.command("UIDL", b"UIDL\r\n").await?;
        let (lines, skipped) = self.mailbox_listing().await?;
        Ok(Listed {
            entries: reply::numbered(&lines)?,
            skipped,
        })
    }

    /// LIST: message number and size of every message.
    pub async fn list(&mut self) -> Result<Listed<(u32, u64)>, Error> {
        self.command("LIST", b"LIST\r\n").await?;
        let (lines, skipped) = self.mailbox_listing().await?;
        let entries = reply::numbered(&lines)?
            .into_iter()
            .map(|(n, size)| match size.parse::<u64>() {
                Ok(size) => Ok((n, size)),
                Err(_) => Err(ReplyError::BadListing(format!("{n} {size}")).into()),
            })
            .collect::<Result<_, Error>>()?;
        Ok(Listed { entries, skipped })
    }

    /// STAT: message count and total size.
    pub async fn stat(&mut self) -> Result<(u64, u64), Error> {
        let status = self.command("STAT", b"STAT\r\n").await?;
        let mut words = status.text.split_ascii_whitespace().map(str::parse::<u64>);
        match (words.next(), words.next()) {
            (Some(Ok(count)), Some(Ok(size))) => Ok((count, size)),
            _ => Err(ReplyError::BadListing(status.text).into()),
        }
    }

    /// Starts RETR of message `number`, announced as `size` octets; read the body with
    /// [`Client::next_chunk`] to its end before the next command.
    pub async fn retr(&mut self, number: u32, size: u64) -> Result<(), Error> {
        self.command("RETR", format!("RETR {number}\r\n").as_bytes())
            .await?;
        self.body = Some(Body {
            number,
            decoder: DotDecoder::new(),
            octets: 0,
            // Sizes are "exact" per RFC 1939, but some servers count LF line ends; be lenient.
            limit: size.saturating_mul(2).saturating_add(1 << 20),
        });
        Ok(())
    }

    /// Appends the next octets of the message being read to `out` (at most one read's worth);
    /// returns true once the message ended.
    pub async fn next_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        if self.body.is_none() {
            return Ok(true);
        }
        if self.buf.is_empty() {
            self.fill("in the middle of a message").await?;
        }
        let body = self.body.as_mut().expect("checked above");
        let before = out.len();
        let decoded = body.decoder.decode(&self.buf, Some(out));
        self.buf.drain(..decoded.consumed);
        body.octets += (out.len() - before) as u64;
        if body.octets > body.limit {
            return Err(Error::Oversized(body.number, body.limit));
        }
        if decoded.ended {
            self.body = None;
        }
        Ok(decoded.ended)
    }

    /// DELE: marks message `number` deleted (the server removes it at QUIT).
    pub async fn dele(&mut self, number: u32) -> Result<(), Error> {
        self.command("DELE", format!("DELE {number}\r\n").as_bytes())
            .await
            .map(drop)
    }

    /// QUIT: the server removes the messages marked deleted. Only a `+OK` means it did.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.command("QUIT", b"QUIT\r\n").await.map(drop)
    }

    /// Sends `line` and reads a status that must be `+OK`.
    async fn command(&mut self, command: &'static str, line: &[u8]) -> Result<Status, Error> {
        self.send(line).await?;
        let status = self.status().await?;
        if status.ok {
            Ok(status)
        } else {
            Err(Error::Refused {
                command,
                text: status.text,
            })
        }
    }

    async fn send(&mut self, line: &[u8]) -> Result<(), Error> {
        let stream = self
            .stream
            .as_mut()
            .ok_or(Error::Closed("before a command"))?;
        tokio::time::timeout(self.timeout, stream.write_all(line))
            .await
            .map_err(|_| Error::Timeout("sending a command"))??;
        Ok(())
    }

    /// Reads more input into `buf`.
    async fn fill(&mut self, during: &'static str) -> Result<(), Error> {
        let stream = self.stream.as_mut().ok_or(Error::Closed(during))?;
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = tokio::time::timeout(self.timeout, stream.read(&mut chunk))
            .await
            .map_err(|_| Error::Timeout("waiting for the server"))??;
        if n == 0 {
            return Err(Error::Closed(during));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads one status line.
    async fn status(&mut self) -> Result<Status, Error> {
        let mut reader = LineReader::with_limit(MAX_LINE);
        loop {
            let (used, event) = reader.read(&self.buf);
            self.buf.drain(..used);
            match event {
                Some(LineEvent::Line(line)) => return Ok(reply::parse_status(&line)?),
                Some(LineEvent::TooLong) => return Err(ReplyError::TooLong.into()),
                None => self.fill("before its reply").await?,
            }
        }
    }

    /// Reads the lines of a multi-line reply.
    async fn listing(&mut self, max_lines: usize) -> Result<Vec<String>, Error> {
        self.read_listing_into(&mut Listing::new(max_lines)).await
    }

    /// Reads a mailbox listing: its first [`MAX_MESSAGES`] lines, and how many more there were.
    async fn mailbox_listing(&mut self) -> Result<(Vec<String>, usize), Error> {
        let mut listing = Listing::capped(MAX_MESSAGES);
        let lines = self.read_listing_into(&mut listing).await?;
        Ok((lines, listing.skipped()))
    }

    async fn read_listing_into(&mut self, listing: &mut Listing) -> Result<Vec<String>, Error> {
        loop {
            let (used, done) = listing.feed(&self.buf)?;
            self.buf.drain(..used);
            if let Some(lines) = done {
                return Ok(lines);
            }
            self.fill("in the middle of a listing").await?;
        }
    }
}

async fn handshake(options: &Options, tcp: TcpStream) -> Result<TlsStream<TcpStream>, Error> {
    let name = ServerName::try_from(options.host.clone())
        .map_err(|e| Error::Tls(format!("{}: {e}", options.host)))?;
    let connector = TlsConnector::from(options.tls.clone());
    match tokio::time::timeout(options.connect_timeout, connector.connect(name, tcp)).await {
        Err(_) => Err(Error::Timeout("in the TLS handshake")),
        Ok(Err(e)) => Err(Error::Tls(e.to_string())),
        Ok(Ok(s)) => Ok(s),
    }
}
