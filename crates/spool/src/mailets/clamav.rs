//! ClamAVScan: James 2.3.2's virus check through a clamd daemon, with its parameters (`host`,
//! `port`, `maxPings`, `pingIntervalMilli`, `streamBufferSize`, `debug`), its header
//! `X-MessageIsInfected` and its attribute `org.apache.james.infected` (`"true"`/`"false"`).
//!
//! James spoke clamd's old `STREAM` command (a second connection to a port clamd names);
//! current clamd has dropped it, so the message goes through `zINSTREAM` on the one
//! connection, in chunks of `streamBufferSize` octets read from the stored message as they are
//! sent: the message is never whole in memory. Every address `host` resolves to is tried in
//! turn (James's round robin); none answering is a temporary error, and the mail stays in
//! the spool until clamd is back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mailroom_mailet::{Mail, Mailet, MailetConfig, MailetContext, MailetError};

use crate::Registry;

/// The attribute set to `"true"` or `"false"` once a mail is scanned.
pub const ATTRIBUTE: &str = "org.apache.james.infected";
/// The header set to `true` or `false`.
pub const HEADER: &str = "X-MessageIsInfected";
const DEFAULT_PORT: u16 = 3310;
const DEFAULT_MAX_PINGS: u32 = 6;
const DEFAULT_PING_INTERVAL_MILLI: u64 = 30_000;
const DEFAULT_STREAM_BUFFER_SIZE: usize = 8192;
/// The largest chunk accepted for `streamBufferSize` (memory per scan stays bounded).
const MAX_STREAM_BUFFER_SIZE: usize = 16 << 20;
/// James's connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long clamd may take to take a chunk or to give its verdict (a large archive can take
/// a while to scan).
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest reply read from clamd.
const MAX_REPLY: u64 = 4096;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("ClamAVScan", |c| Ok(Box::new(ClamAvScan::new(c)?)))
        .params(&[
            "debug",
            "host",
            "port",
            "maxPings",
            "pingIntervalMilli",
            "streamBufferSize",
        ])
        .about(
            "Scans the message with a clamd daemon (host, default localhost; port, default \
             3310; clamd's INSTREAM command, the message streamed in chunks of \
             streamBufferSize octets). Sets the header X-MessageIsInfected and the attribute \
             org.apache.james.infected to true or false, and adds clamd's verdict to the error \
             message of an infected mail; a mail already scanned is left alone. Before its \
             first scan it waits for clamd (maxPings PINGs, pingIntervalMilli apart; 0: no \
             wait). clamd unreachable is a temporary error: the mail stays in the spool.",
            r#"<mailet match="All" class="ClamAVScan"><host>127.0.0.1</host><port>3310</port></mailet>"#,
        );
}

/// `ClamAVScan`.
struct ClamAvScan {
    host: String,
    port: u16,
    max_pings: u32,
    ping_interval: Duration,
    stream_buffer_size: usize,
    debug: bool,
    /// The address to try first next time (round robin over what `host` resolves to).
    next_address: AtomicUsize,
    /// Whether the start-up wait for clamd (James's `ping()` at init) was done.
    pinged: AtomicBool,
}

fn number<T: std::str::FromStr>(
    config: &MailetConfig,
    name: &str,
    default: T,
    what: &str,
) -> Result<T, MailetError> {
    match config.param(name) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            MailetError::new(format!(
                "mailet {}: <{name}> must be {what}, got {v:?}",
                config.name
            ))
        }),
    }
}

impl ClamAvScan {
    fn new(config: &MailetConfig) -> Result<ClamAvScan, MailetError> {
        let host = config.param("host").unwrap_or("localhost").to_string();
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(MailetError::new(format!(
                "mailet {}: <host> must be a host name or an address, got {host:?}",
                config.name
            )));
        }
        let port = number(config, "port", DEFAULT_PORT, "a port number (1-65535)")?;
        if port == 0 {
            return Err(MailetError::new(format!(
                "mailet {}: <port> must be a port number (1-65535), got 0",
                config.name
            )));
        }
        let stream_buffer_size = number(
            config,
            "streamBufferSize",
            DEFAULT_STREAM_BUFFER_SIZE,
            "a number of octets",
        )?;
        if !(1..=MAX_STREAM_BUFFER_SIZE).contains(&stream_buffer_size) {
            return Err(MailetError::new(format!(
                "mailet {}: <streamBufferSize> must be between 1 and {MAX_STREAM_BUFFER_SIZE}, \
                 got {stream_buffer_size}",
                config.name
            )));
        }
        Ok(ClamAvScan {
            host,
            port,
            max_pings: number(config, "maxPings", DEFAULT_MAX_PINGS, "a number")?,
            ping_interval: Duration::from_millis(number(
                config,
                "pingIntervalMilli",
                DEFAULT_PING_INTERVAL_MILLI,
                "a number of milliseconds",
            )?),
            stream_buffer_size,
            debug: config.bool_param("debug", false)?,
            next_address: AtomicUsize::new(0),
            pinged: AtomicBool::new(false),
        })
    }

    fn addresses(&self) -> Result<Vec<SocketAddr>, MailetError> {
        let addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| MailetError::temporary(format!("ClamAVScan: host {}: {e}", self.host)))?
            .collect();
        if addresses.is_empty() {
            return Err(MailetError::temporary(format!(
                "ClamAVScan: host {} has no address",
                self.host
            )));
        }
        Ok(addresses)
    }

    /// A connection to the next address that answers.
    fn connect(&self, ctx: &dyn MailetContext) -> Result<(TcpStream, SocketAddr), MailetError> {
        let addresses = self.addresses()?;
        let first = self.next_address.fetch_add(1, Ordering::Relaxed);
        for i in 0..addresses.len() {
            let address = addresses[(first + i) % addresses.len()];
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    return Ok((stream, address));
                }
                Err(e) => ctx.log(&format!(
                    "ClamAVScan: connecting to CLAMD on {address}: {e}"
                )),
            }
        }
        Err(MailetError::temporary(
            "ClamAVScan: unable to connect to CLAMD, all addresses failed",
        ))
    }

    /// James's start-up check: each address answers `PING` with `PONG` within `maxPings`
    /// tries. Done before the first scan rather than at start-up, so that `check-config`
    /// and the start of the server do not wait for clamd; done once.
    fn ping_once(&self, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        if self.max_pings == 0 || self.pinged.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for address in self.addresses()? {
            let mut trial = 1;
            let mut stream = loop {
                match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                    Ok(stream) => break stream,
                    Err(e) if trial < self.max_pings => {
                        ctx.log(&format!(
                            "ClamAVScan: trial #{trial}/{} connecting to {address}: {e}; \
                             waiting {} ms before retrying",
                            self.max_pings,
                            self.ping_interval.as_millis()
                        ));
                        trial += 1;
                        std::thread::sleep(self.ping_interval);
                    }
                    Err(e) => {
                        return Err(MailetError::temporary(format!(
                            "ClamAVScan: maxPings exceeded ({}), clamd on {address} seems not \
                             to be running: {e}",
                            self.max_pings
                        )))
                    }
                }
            };
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            stream.write_all(b"zPING\0")?;
            let reply = read_reply(&mut stream)?;
            if self.debug {
                ctx.log(&format!("ClamAVScan: PING to {address}: {reply:?}"));
            }
            if reply != "PONG" {
                return Err(MailetError::temporary(format!(
                    "ClamAVScan: bad answer from PING to {address}: expecting PONG, got {reply:?}"
                )));
            }
        }
        Ok(())
    }

    /// Streams the message to clamd and returns its verdict line.
    fn scan(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<(String, SocketAddr), MailetError> {
        let (mut stream, address) = self.connect(ctx)?;
        let sent = (|| -> std::io::Result<()> {
            stream.write_all(b"zINSTREAM\0")?;
            let mut message = mail.message.reader()?;
            let mut chunk = vec![0u8; self.stream_buffer_size];
            loop {
                let n = fill(&mut message, &mut chunk)?;
                if n == 0 {
                    break;
                }
                stream.write_all(&(n as u32).to_be_bytes())?;
                stream.write_all(&chunk[..n])?;
            }
            stream.write_all(&0u32.to_be_bytes())?;
            stream.flush()
        })();
        // clamd may stop reading early (a stream over its StreamMaxLength) and then says
        // why: its reply tells more than the write error.
        let reply = read_reply(&mut stream);
        match (sent, reply) {
            (_, Ok(reply)) if !reply.is_empty() => Ok((reply, address)),
            (Err(e), _) | (Ok(()), Err(e)) => Err(MailetError::temporary(format!(
                "ClamAVScan: scanning with CLAMD on {address}: {e}"
            ))),
            (Ok(()), Ok(_)) => Err(MailetError::temporary(format!(
                "ClamAVScan: CLAMD on {address} closed the connection without a verdict"
            ))),
        }
    }
}

/// Reads until `buf` is full or the message ends.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One NUL-terminated reply (the `z` commands' form), without its terminator.
fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    let mut limited = stream.take(MAX_REPLY);
    while limited.read(&mut byte)? == 1 && byte[0] != 0 {
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_string())
}

impl Mailet for ClamAvScan {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        // Already checked.
        if mail.attribute(ATTRIBUTE).is_some() {
            return Ok(());
        }
        self.ping_once(ctx)?;
        let (reply, address) = self.scan(mail, ctx)?;
        if reply.ends_with("FOUND") {
            let verdict = format!("{reply} (by CLAMD on {address})");
            ctx.log(&format!(
                "ClamAVScan: {verdict}; mail {} from {} to {}",
                mail.name(),
                mail.sender().map_or("<>".to_string(), |s| s.to_string()),
                mail.recipients()
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            mail.set_attribute(ATTRIBUTE, "true".into());
            let error = match mail.envelope.error_message.take() {
                Some(previous) => format!("{previous}\r\n{verdict}\r\n"),
                None => format!("{verdict}\r\n"),
            };
            mail.envelope.error_message = Some(error);
            mail.message.set_header(HEADER, "true");
        } else if reply.ends_with("OK") {
            if self.debug {
                ctx.log(&format!("ClamAVScan: OK (by CLAMD on {address})"));
            }
            mail.set_attribute(ATTRIBUTE, "false".into());
            mail.message.set_header(HEADER, "false");
        } else if reply.contains("size limit exceeded") {
            // Sending it again will not help: the mail goes where onMailetException says.
            return Err(MailetError::permanent(format!(
                "ClamAVScan: CLAMD on {address}: {reply} (raise clamd's StreamMaxLength)"
            )));
        } else {
            return Err(MailetError::temporary(format!(
                "ClamAVScan: CLAMD on {address} answered {reply:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "clamav_tests.rs"]
mod tests;
