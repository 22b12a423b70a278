//! The tokio driver: reads lines, feeds them to the [`Session`] on a blocking thread (commands
//! use the repositories), writes the replies, and enforces the idle timeout, the connection
//! limit and the server's shutdown.
//!
//! Telnet clients may send option negotiation (`IAC` sequences); they are dropped from the
//! input. A line longer than [`MAX_LINE`] is answered with an error and discarded.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_net::{Listener, ShutdownWatch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::session::Session;
use crate::{Console, RemoteManagerSettings};

/// The longest command line accepted, in octets.
pub const MAX_LINE: usize = 8192;

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
    let limit = settings.connection_limit;
    mailroom_net::serve(listener, limit, shutdown, move |stream, peer, shutdown| {
        handle_connection(stream, peer, settings.clone(), console.clone(), shutdown)
    })
    .await;
}

/// Serves one console connection.
pub async fn handle_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    settings: Arc<RemoteManagerSettings>,
    console: Arc<Console>,
    mut shutdown: ShutdownWatch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    tracing::info!(%peer, "RemoteManager connection");
    let session = Session::new(settings.clone(), console.clone());
    let result = run(&mut stream, session, &settings, &console, &mut shutdown).await;
    if let Err(error) = result {
        tracing::info!(%peer, %error, "RemoteManager session failed");
    }
    let _ = stream.shutdown().await;
    tracing::info!(%peer, "RemoteManager connection closed");
}

async fn run<S>(
    stream: &mut S,
    mut session: Session,
    settings: &RemoteManagerSettings,
    console: &Console,
    shutdown: &mut ShutdownWatch,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let timeout = settings.connection_timeout;
    write(stream, Session::banner().as_bytes(), timeout).await?;
    let mut lines = LineReader::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::select! {
            read = tokio::time::timeout(settings.connection_timeout, stream.read(&mut buf)) => match read {
                Err(_elapsed) => return Ok(()),
                Ok(read) => read?,
            },
            _ = shutdown.recv() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        lines.push(&buf[..n]);
        while let Some(line) = lines.next_line() {
            let step = match line {
                Ok(line) => session.line(&line).await,
                Err(TooLong) => session.line_too_long(MAX_LINE),
            };
            if let Some(delay) = step.delay {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.recv() => return Ok(()),
                }
            }
            write(stream, step.output.as_bytes(), timeout).await?;
            if step.shutdown {
                (console.request_shutdown)();
            }
            if step.close {
                return Ok(());
            }
        }
    }
}

/// Writes `bytes`, giving up after `timeout`: a client that stops reading must not hold its
/// session, and with it the server's shutdown, forever.
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: std::time::Duration,
) -> io::Result<()> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

/// A line over [`MAX_LINE`] octets.
#[derive(Debug, PartialEq, Eq)]
struct TooLong;

/// Splits input into lines (LF or CRLF), dropping telnet negotiation.
#[derive(Default)]
struct LineReader {
    /// The current line so far.
    line: Vec<u8>,
    /// Complete lines not yet handed out.
    ready: std::collections::VecDeque<Result<String, TooLong>>,
    /// Skipping the rest of an overlong line.
    discarding: bool,
    /// Where a telnet command sequence is.
    telnet: Telnet,
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

impl LineReader {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.telnet = match (self.telnet, b) {
                (Telnet::Data, IAC) => Telnet::Command,
                (Telnet::Data, _) => {
                    self.data(b);
                    Telnet::Data
                }
                // IAC IAC is a literal 255.
                (Telnet::Command, IAC) => {
                    self.data(b);
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
    }

    fn data(&mut self, b: u8) {
        if b == b'\n' {
            if self.discarding {
                self.discarding = false;
            } else {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.ready
                    .push_back(Ok(String::from_utf8_lossy(&line).into_owned()));
            }
            self.line.clear();
        } else if !self.discarding {
            self.line.push(b);
            if self.line.len() > MAX_LINE {
                self.line.clear();
                self.discarding = true;
                self.ready.push_back(Err(TooLong));
            }
        }
    }

    fn next_line(&mut self) -> Option<Result<String, TooLong>> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]]) -> Vec<Result<String, TooLong>> {
        let mut reader = LineReader::default();
        for chunk in input {
            reader.push(chunk);
        }
        std::iter::from_fn(|| reader.next_line()).collect()
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
                Ok("root".to_string()),
                Ok("pass word".to_string()),
                Ok("a\u{fffd}b".to_string())
            ]
        );
    }

    #[test]
    fn overlong_line_is_reported_once_and_skipped() {
        let long = vec![b'x'; MAX_LINE * 3];
        let got = lines(&[&long, b"\r\nverify bob\r\n"]);
        assert_eq!(got, vec![Err(TooLong), Ok("verify bob".to_string())]);
    }
}
