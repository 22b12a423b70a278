//! A small async SMTP client: one transaction for a group of recipients on one connection.
//!
//! EHLO (HELO when EHLO is refused), `MAIL FROM` with `SIZE` when the server offers it (and a
//! message above its limit refused before sending), one `RCPT TO` per recipient, `DATA` with
//! dot-stuffing, `QUIT`. Every reply line is bounded ([`MAX_LINE`], [`MAX_LINES`]) and every
//! reply waited for at most the `<timeout>`; the connection at most the
//! `<connectiontimeout>`.
//!
//! STARTTLS when the server offers it ([`StartTls`]): opportunistic TLS does not check the
//! server's certificate (any certificate, self-signed or expired, is accepted: it protects
//! against a passive listener only), and neither does `<requireTLS>`, which only makes TLS
//! mandatory. AUTH PLAIN or LOGIN ([`Credentials`]) after TLS, over plain text only when
//! allowed. DSN parameters ([`DsnParams`]) when the server offers DSN. A message with 8-bit
//! octets goes with `BODY=8BITMIME`, or fails with 5.6.3 when the server does not offer
//! 8BITMIME (RFC 6152 §3: convert or fail; no conversion is done). PIPELINING when offered.
//! `SMTPUTF8` (RFC 6531) when the mail came with it or its envelope has a non-ASCII address;
//! such an envelope fails with 5.6.7 at a server that does not offer SMTPUTF8 (no downgrade).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use base64::Engine;
use mailroom_config::Secret;
use mailroom_mailet::{MailAddress, Message};
use mailroom_net::dot::DotEncoder;
use mailroom_store::BlockingReader;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;

/// The longest reply line accepted (RFC 5321 says 512; servers write longer texts).
pub const MAX_LINE: usize = 4096;
/// The most lines in one multi-line reply.
pub const MAX_LINES: usize = 100;

/// The most octets of the message read from storage and written to the socket at a time.
pub const DATA_CHUNK: usize = 64 * 1024;

/// A server's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply made up here (a limit checked before sending, say).
    pub fn local(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.to_string()],
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code (RFC 3463) at the start of the text, else one made from the
    /// code's class (`5.0.0`, `4.0.0`, `2.0.0`).
    pub fn status(&self) -> String {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let word = first.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = word.split('.').collect();
        let valid = parts.len() == 3
            && parts[0] == (self.code / 100).to_string()
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        if valid {
            word.to_string()
        } else {
            format!("{}.0.0", self.code / 100)
        }
    }
}

/// The reply on one line, as the log and bounces show it: `550 5.1.1 no such user`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Why a host could not take the mail at all: try the next one (or later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// What went wrong, for the log and the mail's last error.
    pub text: String,
    /// The server offered STARTTLS and the TLS handshake failed: without `<requireTLS>` the
    /// next attempt to this address goes in plain text.
    pub tls_failed: bool,
}

impl HostError {
    fn new(text: String) -> HostError {
        HostError {
            text,
            tls_failed: false,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether to use STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTls {
    /// When the server offers it (opportunistic); a refused STARTTLS goes on in plain text, a
    /// failed handshake is a [`HostError`] with `tls_failed`.
    Offered,
    /// Always (`<requireTLS>`): a server without STARTTLS, or a failed handshake, is a
    /// [`HostError`] (temporary).
    Required,
    /// Never: this address failed the handshake on an earlier attempt.
    Never,
}

/// AUTH credentials for a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password, never logged.
    pub password: Secret,
    /// Authenticate over a connection without TLS (`<gatewayAuthOverPlain>`).
    pub over_plain: bool,
}

/// What became of one recipient on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptResult {
    /// The server took responsibility (2xx after the data).
    Delivered(Reply),
    /// Try again: a 4xx, or a transaction that broke off.
    Temporary(String),
    /// Refused for good (5xx).
    Permanent(Reply),
}

/// What a transaction needs.
pub struct Envelope<'a> {
    /// `MAIL FROM` (`None`: `<>`).
    pub sender: Option<&'a MailAddress>,
    /// `RCPT TO`, in order.
    pub recipients: &'a [MailAddress],
    /// The message as stored: streamed from storage during DATA, never read whole.
    pub message: &'a Message,
    /// Whether the message has octets above 127 (sent with `BODY=8BITMIME`).
    pub eight_bit: bool,
    /// Whether the mail came with `SMTPUTF8` (RFC 6531): passed on when the server offers it.
    pub smtputf8: bool,
    /// What to pass on when the server offers DSN.
    pub dsn: &'a DsnParams,
}

/// DSN parameters (RFC 3461) as the SMTP server received them (xtext, as sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DsnParams {
    /// `RET=` (`FULL` or `HDRS`).
    pub ret: Option<String>,
    /// `ENVID=`.
    pub envid: Option<String>,
    /// By recipient (its text, `local@domain`): `NOTIFY=` and `ORCPT=`.
    pub recipients: std::collections::BTreeMap<String, (Option<String>, Option<String>)>,
}

/// Whether `value` can go on the command line as a parameter value: printable ASCII without
/// spaces or `=` (xtext, RFC 3461 §4); anything else is dropped.
fn param_value(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'='))
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// EHLO/HELO name.
    pub helo: String,
    /// Wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Wait for each reply (and each write).
    pub timeout: Duration,
    /// With `false`, nothing is sent when any recipient is refused; the accepted ones are
    /// tried again later (James's `sendpartial`).
    pub send_partial: bool,
    /// STARTTLS.
    pub starttls: StartTls,
    /// AUTH to the server, if any.
    pub auth: Option<Credentials>,
    /// The local address to connect from (`<bind>`).
    pub bind: Option<IpAddr>,
}

/// A connection to `addr`, from `bind` when given (any port).
async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect(addr).await;
    };
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind to {local}: {e}")))?;
    socket.connect(addr).await
}

/// Delivers `envelope` to the server at `addr`, which is `host` (an MX's or gateway's name, or
/// an address): `Ok` with one result per recipient, or [`HostError`] when the host took
/// nothing (no connection, a refused greeting, EHLO or `MAIL FROM` 4xx, a broken reply).
pub async fn deliver(
    addr: SocketAddr,
    host: &str,
    settings: &ClientSettings,
    envelope: &Envelope<'_>,
) -> Result<Vec<RcptResult>, HostError> {
    let stream = tokio::time::timeout(settings.connect_timeout, connect(addr, settings.bind))
        .await
        .map_err(|_| HostError::new(format!("{addr}: connection timed out")))?
        .map_err(|e| HostError::new(format!("{addr}: cannot connect: {e}")))?;
    // Each command is one small write that waits for its reply: without this, Nagle's
    // algorithm holds it for the peer's delayed ACK (tens of ms per command).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
    }
    let mut session = Session {
        stream: BufReader::new(Box::new(stream)),
        tls: false,
        timeout: settings.timeout,
        addr,
        host: host.to_string(),
    };
    let result = session.transaction(settings, envelope).await;
    if result.is_ok() {
        // The mail is sent or refused already; a failing QUIT changes nothing.
        let _ = session.command("QUIT").await;
    }
    result
}

/// A plain or TLS stream.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Session {
    stream: BufReader<Box<dyn Stream>>,
    /// Whether STARTTLS succeeded.
    tls: bool,
    timeout: Duration,
    addr: SocketAddr,
    /// The host's name, sent in the TLS handshake (SNI) when it is a name.
    host: String,
}

impl Session {
    async fn transaction(
        &mut self,
        settings: &ClientSettings,
        envelope: &Envelope<'_>,
    ) -> Result<Vec<RcptResult>, HostError> {
        let count = envelope.recipients.len();
        let greeting = self.reply().await?;
        if !greeting.is_positive() {
            return Err(self.refused("greeting", &greeting));
        }
        let mut ehlo = self.command(&format!("EHLO {}", settings.helo)).await?;
        if !ehlo.is_positive() {
            ehlo = self.command(&format!("HELO {}", settings.helo)).await?;
            if !ehlo.is_positive() {
                return Err(self.refused("HELO", &ehlo));
            }
            ehlo.lines.clear();
        }
        if settings.starttls != StartTls::Never && offers(&ehlo, "STARTTLS").is_some() {
            let reply = self.command("STARTTLS").await?;
            if reply.code == 220 {
                self.start_tls().await?;
                ehlo = self.command(&format!("EHLO {}", settings.helo)).await?;
                if !ehlo.is_positive() {
                    return Err(self.refused("EHLO after STARTTLS", &ehlo));
                }
            } else if settings.starttls == StartTls::Required {
                return Err(self.refused("STARTTLS (requireTLS is set)", &reply));
            }
        }
        if settings.starttls == StartTls::Required && !self.tls {
            return Err(HostError::new(format!(
                "{}: does not offer STARTTLS, and requireTLS is set",
                self.addr
            )));
        }
        if let Some(credentials) = &settings.auth {
            self.authenticate(&ehlo, credentials).await?;
        }
        let size_limit = ehlo.lines.iter().skip(1).find_map(|l| {
            let mut words = l.split_whitespace();
            words
                .next()
                .filter(|k| k.eq_ignore_ascii_case("SIZE"))
                .map(|_| {
                    words
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                })
        });
        let size = envelope.message.size();
        if let Some(limit) = size_limit.filter(|&l| l > 0 && size > l) {
            let reply = Reply::local(
                552,
                &format!(
                    "5.3.4 message of {size} octets exceeds the server's SIZE limit of {limit}"
                ),
            );
            return Ok(vec![RcptResult::Permanent(reply); count]);
        }
        if envelope.eight_bit && offers(&ehlo, "8BITMIME").is_none() {
            let reply = Reply::local(
                554,
                "5.6.3 the message has 8-bit octets and the server does not offer 8BITMIME",
            );
            return Ok(vec![RcptResult::Permanent(reply); count]);
        }
        // RFC 6531 §3.2: a mail that needs SMTPUTF8 (a non-ASCII address, or a UTF-8 header
        // section in a mail that came with SMTPUTF8) is not sent to a server without it.
        let non_ascii = |a: &MailAddress| !a.local_part().is_ascii() || !a.domain().is_ascii();
        let utf8_envelope =
            envelope.sender.is_some_and(non_ascii) || envelope.recipients.iter().any(non_ascii);
        let utf8_header = envelope.smtputf8 && !envelope.message.header_section().is_ascii();
        let smtputf8 = offers(&ehlo, "SMTPUTF8").is_some();
        if (utf8_envelope || utf8_header) && !smtputf8 {
            let what = if utf8_envelope {
                "the envelope has non-ASCII addresses"
            } else {
                "the header is UTF-8 (SMTPUTF8)"
            };
            let reply = Reply::local(
                553,
                &format!("5.6.7 {what} and the server does not offer SMTPUTF8"),
            );
            return Ok(vec![RcptResult::Permanent(reply); count]);
        }
        let dsn = offers(&ehlo, "DSN").is_some();
        let sender = envelope.sender.map(ToString::to_string).unwrap_or_default();
        let mut mail_from = format!("MAIL FROM:<{sender}>");
        if size_limit.is_some() {
            mail_from.push_str(&format!(" SIZE={size}"));
        }
        if envelope.eight_bit {
            mail_from.push_str(" BODY=8BITMIME");
        }
        if smtputf8 && (envelope.smtputf8 || utf8_envelope) {
            mail_from.push_str(" SMTPUTF8");
        }
        if dsn {
            if let Some(ret) = param_value(&envelope.dsn.ret) {
                mail_from.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = param_value(&envelope.dsn.envid) {
                mail_from.push_str(&format!(" ENVID={envid}"));
            }
        }
        let rcpt_lines: Vec<String> = envelope
            .recipients
            .iter()
            .map(|rcpt| {
                let mut rcpt_to = format!("RCPT TO:<{rcpt}>");
                if let Some((notify, orcpt)) = envelope.dsn.recipients.get(&rcpt.to_string()) {
                    if let Some(notify) = param_value(notify).filter(|_| dsn) {
                        rcpt_to.push_str(&format!(" NOTIFY={notify}"));
                    }
                    if let Some(orcpt) = param_value(orcpt).filter(|_| dsn) {
                        rcpt_to.push_str(&format!(" ORCPT={orcpt}"));
                    }
                }
                rcpt_to
            })
            .collect();
        // With PIPELINING (RFC 2920), MAIL FROM and every RCPT TO go in one write and their
        // replies are read in order: one round trip instead of one per command.
        let pipelining = offers(&ehlo, "PIPELINING").is_some();
        let reply = if pipelining {
            let mut batch = String::new();
            for line in std::iter::once(&mail_from).chain(&rcpt_lines) {
                batch.push_str(line);
                batch.push_str("\r\n");
            }
            self.write(batch.as_bytes()).await?;
            self.reply().await?
        } else {
            self.command(&mail_from).await?
        };
        if !reply.is_positive() && pipelining {
            // The RCPTs sent with it are answered too (503): read them before anything else.
            for _ in &rcpt_lines {
                self.reply().await?;
            }
        }
        if reply.is_permanent() {
            return Ok(vec![RcptResult::Permanent(reply); count]);
        }
        if !reply.is_positive() {
            return Err(self.refused("MAIL FROM", &reply));
        }
        let mut results = Vec::with_capacity(count);
        let mut accepted = Vec::new();
        for (i, rcpt_to) in rcpt_lines.iter().enumerate() {
            let reply = if pipelining {
                self.reply().await?
            } else {
                self.command(rcpt_to).await?
            };
            results.push(if reply.is_positive() {
                accepted.push(i);
                RcptResult::Delivered(reply)
            } else if reply.is_permanent() {
                RcptResult::Permanent(reply)
            } else {
                RcptResult::Temporary(self.said(&reply))
            });
        }
        let all_accepted = accepted.len() == count;
        if accepted.is_empty() || (!settings.send_partial && !all_accepted) {
            let _ = self.command("RSET").await;
            for &i in &accepted {
                results[i] = RcptResult::Temporary(format!(
                    "{}: not sent because other recipients were refused and sendpartial is false",
                    self.addr
                ));
            }
            return Ok(results);
        }
        let fail_accepted = |results: &mut Vec<RcptResult>, with: RcptResult| {
            for &i in &accepted {
                results[i] = with.clone();
            }
        };
        let data = match self.command("DATA").await {
            Ok(reply) => reply,
            Err(e) => {
                fail_accepted(&mut results, RcptResult::Temporary(e.text));
                return Ok(results);
            }
        };
        if data.code != 354 {
            let outcome = if data.is_permanent() {
                RcptResult::Permanent(data)
            } else {
                RcptResult::Temporary(self.said(&data))
            };
            fail_accepted(&mut results, outcome);
            return Ok(results);
        }
        let end = match self.send_data(envelope.message).await {
            Ok(()) => self.reply().await,
            Err(e) => Err(e),
        };
        match end {
            Ok(reply) if reply.is_positive() => {
                fail_accepted(&mut results, RcptResult::Delivered(reply))
            }
            Ok(reply) if reply.is_permanent() => {
                fail_accepted(&mut results, RcptResult::Permanent(reply))
            }
            Ok(reply) => {
                let said = self.said(&reply);
                fail_accepted(&mut results, RcptResult::Temporary(said))
            }
            // Broken off during or after the data: not acknowledged, so not delivered.
            Err(e) => fail_accepted(&mut results, RcptResult::Temporary(e.text)),
        }
        Ok(results)
    }

    /// `host said: reply`.
    fn said(&self, reply: &Reply) -> String {
        format!("{} said: {reply}", self.addr)
    }

    fn refused(&self, step: &str, reply: &Reply) -> HostError {
        HostError::new(format!("{} refused {step}: {reply}", self.addr))
    }

    /// The TLS handshake after `220` to `STARTTLS`: the server's certificate is not checked.
    async fn start_tls(&mut self) -> Result<(), HostError> {
        let addr = self.addr;
        let failed = |text: String| HostError {
            text: format!("{addr}: TLS handshake failed: {text}"),
            tls_failed: true,
        };
        if !self.stream.buffer().is_empty() {
            // Anything sent before the handshake could be an injection (CVE-2011-0411).
            return Err(failed("the server sent data before the handshake".into()));
        }
        let stream = std::mem::replace(
            &mut self.stream,
            BufReader::new(Box::new(tokio::io::empty())),
        )
        .into_inner();
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        // No certificate is checked: the name only tells a server with several certificates
        // which one to present (SNI, RFC 6066 §3), as other MTAs send it. An address is no
        // name, and SNI carries none.
        let name = match rustls::pki_types::ServerName::try_from(self.host.clone()) {
            Ok(name @ rustls::pki_types::ServerName::DnsName(_)) => name,
            _ => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        let tls = match tokio::time::timeout(self.timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed("timed out".into())),
        };
        self.stream = BufReader::new(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    /// AUTH PLAIN (or LOGIN when only that is offered).
    async fn authenticate(
        &mut self,
        ehlo: &Reply,
        credentials: &Credentials,
    ) -> Result<(), HostError> {
        let addr = self.addr;
        if !self.tls && !credentials.over_plain {
            return Err(HostError::new(format!(
                "{addr}: no TLS, and AUTH over plain text is not allowed (<gatewayAuthOverPlain>)"
            )));
        }
        let mechanisms = offers(ehlo, "AUTH")
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_default();
        let has = |m: &str| mechanisms.split_whitespace().any(|w| w == m);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let user = &credentials.username;
        let password = credentials.password.expose();
        let reply = if has("PLAIN") {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {token}")).await?
        } else if has("LOGIN") {
            let mut reply = self.command("AUTH LOGIN").await?;
            for answer in [user.as_str(), password] {
                if reply.code != 334 {
                    break;
                }
                reply = self.command(&b64(answer.as_bytes())).await?;
            }
            reply
        } else {
            return Err(HostError::new(format!(
                "{addr}: offers neither AUTH PLAIN nor AUTH LOGIN (AUTH {mechanisms})"
            )));
        };
        if reply.code != 235 {
            return Err(self.refused("AUTH", &reply));
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Reply, HostError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.reply().await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        let addr = self.addr;
        let io = async {
            let stream = self.stream.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HostError::new(format!("{addr}: connection lost: {e}"))),
            Err(_) => Err(HostError::new(format!("{addr}: timed out writing"))),
        }
    }

    /// Streams the message from storage in [`DATA_CHUNK`] pieces (read on the blocking pool,
    /// dot-stuffed, written under the `<timeout>`), then the final `.`. A message that cannot
    /// be read to its end is never ended with the `.`: the connection is dropped instead, so
    /// the server discards it and nothing truncated is delivered.
    async fn send_data(&mut self, message: &Message) -> Result<(), HostError> {
        let addr = self.addr;
        let unreadable = |e: std::io::Error| {
            HostError::new(format!(
                "{addr}: cannot read the message from the spool: {e}"
            ))
        };
        let opened = message.clone();
        let reader = tokio::task::spawn_blocking(move || opened.reader())
            .await
            .map_err(|e| unreadable(std::io::Error::other(e)))?
            .map_err(unreadable)?;
        let mut reader = BlockingReader::new(Box::new(reader));
        let mut encoder = DotEncoder::whole();
        let mut chunk = vec![0u8; DATA_CHUNK];
        let mut out = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 8);
        loop {
            let n = reader.read(&mut chunk).await.map_err(unreadable)?;
            if n == 0 {
                break;
            }
            out.clear();
            encoder.encode(&chunk[..n], &mut out);
            self.write(&out).await?;
        }
        out.clear();
        encoder.finish(&mut out);
        self.write(&out).await
    }

    async fn reply(&mut self) -> Result<Reply, HostError> {
        let addr = self.addr;
        match tokio::time::timeout(self.timeout, read_reply(&mut self.stream)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(HostError::new(format!("{addr}: {e}"))),
            Err(_) => Err(HostError::new(format!(
                "{addr}: timed out waiting for a reply"
            ))),
        }
    }
}

/// The rest of the EHLO line of `keyword` when the server offers it (`AUTH=` too).
fn offers<'r>(ehlo: &'r Reply, keyword: &str) -> Option<&'r str> {
    ehlo.lines.iter().skip(1).find_map(|line| {
        let (word, rest) = line.split_once([' ', '=']).unwrap_or((line.as_str(), ""));
        word.eq_ignore_ascii_case(keyword).then_some(rest)
    })
}

/// The client TLS configuration: TLS 1.2 and 1.3 on ring, no certificate checked.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any certificate (opportunistic TLS), still checking the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads one (possibly multi-line) reply.
pub async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Reply> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await?;
        let text = String::from_utf8_lossy(&line);
        let bytes = text.as_bytes();
        let code = (bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit))
            .then(|| text[..3].parse::<u16>().ok())
            .flatten()
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| invalid(format!("not an SMTP reply: {:?}", shorten(&text))))?;
        let more = match bytes.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            _ => return Err(invalid(format!("not an SMTP reply: {:?}", shorten(&text)))),
        };
        if lines.len() >= MAX_LINES {
            return Err(invalid(format!("a reply of more than {MAX_LINES} lines")));
        }
        lines.push((code, text.get(4..).unwrap_or("").trim_end().to_string()));
        if lines.iter().any(|(c, _)| *c != code) {
            return Err(invalid("a multi-line reply whose codes differ".into()));
        }
        if !more {
            return Ok(Reply {
                code,
                lines: lines.into_iter().map(|(_, t)| t).collect(),
            });
        }
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// One line without its CRLF (or LF), at most [`MAX_LINE`] octets.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        let (used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(lf) => (lf + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..used]);
        reader.consume(used);
        if line.len() > MAX_LINE + 2 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a reply line longer than {MAX_LINE} octets"),
            ));
        }
        if done {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> std::io::Result<Reply> {
        let mut reader = BufReader::new(input);
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn replies_are_parsed_and_bounded() {
        let r = parse(b"250-mx.example\r\n250-SIZE 1000\r\n250 PIPELINING\r\n")
            .await
            .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["mx.example", "SIZE 1000", "PIPELINING"]);
        let r = parse(b"550 5.1.1 no such user\n").await.unwrap();
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(r.to_string(), "550 5.1.1 no such user");
        assert_eq!(parse(b"451 try later\r\n").await.unwrap().status(), "4.0.0");
        assert_eq!(parse(b"250\r\n").await.unwrap().lines, vec![""]);
        for bad in [
            &b"hello\r\n"[..],
            b"2500 x\r\n",
            b"250-a\r\n251 b\r\n",
            b"999 x\r\n",
            b"250-x\r\n",
        ] {
            assert!(
                parse(bad).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE + 10));
        assert!(parse(long.as_bytes()).await.is_err());
        let many = "250-x\r\n".repeat(MAX_LINES + 1) + "250 x\r\n";
        assert!(parse(many.as_bytes()).await.is_err());
    }

    #[test]
    fn only_clean_parameter_values_are_passed_on() {
        let v = |s: &str| Some(s.to_string());
        assert_eq!(param_value(&v("rfc822;a+2Bb@x")), Some("rfc822;a+2Bb@x"));
        for bad in ["", "two words", "a\r\nRCPT TO:<x@y>", "a=b", "caf\u{e9}"] {
            assert_eq!(param_value(&v(bad)), None, "{bad:?}");
        }
        assert_eq!(param_value(&None), None);
    }

    #[test]
    fn ehlo_keywords() {
        let ehlo = Reply {
            code: 250,
            lines: vec![
                "mx.example STARTTLS".into(),
                "AUTH=LOGIN".into(),
                "auth PLAIN LOGIN".into(),
                "DSN".into(),
            ],
        };
        // The greeting line is not a keyword.
        assert_eq!(offers(&ehlo, "STARTTLS"), None);
        assert_eq!(offers(&ehlo, "AUTH"), Some("LOGIN"));
        assert_eq!(offers(&ehlo, "DSN"), Some(""));
        assert_eq!(offers(&ehlo, "8BITMIME"), None);
    }
}
