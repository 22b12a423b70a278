//! The tokio driver: what the console adds to a [`mailroom_net::Connection`], which runs the
//! loop (banner, reads, idle timeout, shutdown, write timeouts, the connection limit).
//!
//! This driver is the connection's [`Handler`]: it drops telnet option negotiation (`IAC`
//! sequences) from the input, splits it into lines with `mailroom-net`'s [`LineReader`],
//! feeds each line to the [`Session`] (whose commands await the repositories) and writes each
//! answer as soon as it is ready. A failed login's delay ends early on
//! shutdown. As in James 2.3, an idle or stopping console closes without a goodbye. A line
//! longer than [`MAX_LINE`] is discarded and answered with an error once it ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_net::connection::Stream;
use mailroom_net::lines::{LineEvent, LineReader};
use mailroom_net::{Admission, Connection, Flow, Handler, Listener, ShutdownWatch};

use crate::session::Session;
use crate::{Console, RemoteManagerSettings};

/// The longest command line accepted, in octets (its LF not counted, a CR before it counted).
pub const MAX_LINE: usize = 8192;

/// Octets read from the client at a time.
const READ_BUFFER: usize = 4096;

/// Telnet's "interpret as command" octet, and the commands followed by an option octet.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;

/// Runs a RemoteManager listener until `shutdown`.
pub async fn serve(
    listener: Listener,
    settings: Arc<RemoteManagerSettings>,
    console: Arc<Console>,
    shutdown: ShutdownWatch,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "RemoteManager listening");
    }
    let admission = Admission {
        connections: settings.connection_limit,
        per_ip: settings.limits.per_ip,
        refusal: b"Too many connections, try again later\r\n".to_vec(),
    };
    mailroom_net::serve(
        listener,
        admission,
        shutdown,
        move |stream, peer, shutdown| {
            metrics::counter!("mailroom_connections_total", "protocol" => "remotemanager")
                .increment(1);
            handle_connection(stream, peer, settings.clone(), console.clone(), shutdown)
        },
    )
    .await;
}

/// Serves one console connection.
pub async fn handle_connection<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<RemoteManagerSettings>,
    console: Arc<Console>,
    shutdown: ShutdownWatch,
) where
    S: Stream + 'static,
{
    tracing::info!(%peer, "RemoteManager connection");
    let mut connection = Connection::new(stream, settings.connection_timeout, shutdown)
        .with_read_buffer(READ_BUFFER)
        .with_limits(&settings.limits);
    let mut driver = Driver {
        session: Session::new(settings, console.clone()),
        console,
        telnet: TelnetFilter::default(),
        // The limit counts the LF; MAX_LINE does not.
        lines: LineReader::with_limit(MAX_LINE + 1),
    };
    if let Err(error) = connection.run(&mut driver).await {
        tracing::info!(%peer, %error, "RemoteManager session failed");
    }
    connection.close().await;
    tracing::info!(%peer, "RemoteManager connection closed");
}

/// What the console adds to a [`Connection`].
struct Driver {
    /// The dialogue; its commands await the repositories.
    session: Session,
    /// What the `shutdown` command stops.
    console: Arc<Console>,
    /// Drops telnet negotiation from the input.
    telnet: TelnetFilter,
    /// Splits the filtered input into lines.
    lines: LineReader,
}

impl Handler for Driver {
    fn greet(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(Session::banner().as_bytes());
    }

    fn timeout(&mut self, _out: &mut Vec<u8>) {}

    fn shutdown(&mut self, _out: &mut Vec<u8>) {}

    async fn input(&mut self, connection: &mut Connection) -> io::Result<Flow> {
        let telnet = &mut self.telnet;
        let data = connection.ingest(|input, _| (input.len(), telnet.filter(input)));
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (used, event) = self.lines.read(rest);
            rest = &rest[used..];
            let step = match event {
                None => break,
                Some(LineEvent::Line(line)) => {
                    self.session.line(&String::from_utf8_lossy(&line)).await
                }
                Some(LineEvent::TooLong) => self.session.line_too_long(MAX_LINE),
            };
            if let Some(delay) = step.delay {
                if !connection.pause(delay).await {
                    return Ok(Flow::Close);
                }
            }
            connection.out().extend_from_slice(step.output.as_bytes());
            connection.flush().await?;
            if step.shutdown {
                (self.console.request_shutdown)();
            }
            if step.close {
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }
}

/// Telnet command parsing state.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    #[default]
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: one option octet follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// IAC inside a subnegotiation.
    SubCommand,
}

/// Drops telnet command sequences from the input, across reads (public for the fuzz targets).
#[derive(Default)]
pub struct TelnetFilter {
    state: Telnet,
}

impl TelnetFilter {
    /// The data octets of `bytes`.
    pub fn filter(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(bytes.len());
        for &b in bytes {
            self.state = match (self.state, b) {
                (Telnet::Data, IAC) => Telnet::Command,
                (Telnet::Data, _) => {
                    data.push(b);
                    Telnet::Data
                }
                // IAC IAC is a literal 255.
                (Telnet::Command, IAC) => {
                    data.push(b);
                    Telnet::Data
                }
                (Telnet::Command, SB) => Telnet::Sub,
                (Telnet::Command, 251..=254) => Telnet::Option,
                (Telnet::Command, _) | (Telnet::Option, _) => Telnet::Data,
                (Telnet::Sub, IAC) => Telnet::SubCommand,
                (Telnet::Sub, _) => Telnet::Sub,
                (Telnet::SubCommand, SE) => Telnet::Data,
                (Telnet::SubCommand, _) => Telnet::Sub,
            };
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines (or `None` for an overlong one) in `input`, read in these chunks.
    fn lines(input: &[&[u8]]) -> Vec<Option<String>> {
        let mut telnet = TelnetFilter::default();
        let mut reader = LineReader::with_limit(MAX_LINE + 1);
        let mut got = Vec::new();
        for chunk in input {
            let data = telnet.filter(chunk);
            let mut rest = &data[..];
            while let (used, Some(event)) = reader.read(rest) {
                rest = &rest[used..];
                got.push(match event {
                    LineEvent::Line(line) => Some(String::from_utf8_lossy(&line).into_owned()),
                    LineEvent::TooLong => None,
                });
            }
        }
        got
    }

    #[test]
    fn splits_lines_and_drops_telnet_negotiation() {
        let got = lines(&[
            b"\xff\xfb\x01ro",
            b"ot\r\n\xff\xfa\x18\x01\xff\xf0pass word\n",
            b"a\xff\xffb\r\n",
        ]);
        assert_eq!(
            got,
            vec![
                Some("root".to_string()),
                Some("pass word".to_string()),
                Some("a\u{fffd}b".to_string())
            ]
        );
    }

    #[test]
    fn overlong_line_is_reported_once_and_skipped() {
        let long = vec![b'x'; MAX_LINE * 3];
        let got = lines(&[&long, b"\r\nverify bob\r\n"]);
        assert_eq!(got, vec![None, Some("verify bob".to_string())]);
        // MAX_LINE octets before the LF (a CR counted among them) are accepted.
        let exact = vec![b'x'; MAX_LINE];
        assert_eq!(lines(&[&exact, b"\n"]).len(), 1);
        assert!(lines(&[&exact, b"\n"])[0].is_some());
        let mut over = exact.clone();
        over.push(b'x');
        assert_eq!(lines(&[&over, b"\n"]), vec![None]);
    }
}
