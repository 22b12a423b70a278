//! One client connection, whatever the protocol: the loop that every Mailroom server runs.
//!
//! A [`Connection`] owns the stream, the read buffer, the replies not yet written, the idle
//! and write timeouts and the session's [`ShutdownWatch`]. [`Connection::run`] is the loop:
//! the banner, then read → hand the input to the protocol's [`Handler`] → write everything it
//! produced in one write, until the handler closes, the peer goes away, the client stays
//! silent for the idle timeout or the server shuts down (the handler writes its goodbye for
//! those two). Each write is bounded by the write timeout, so that a client that stops reading
//! cannot hold its session, and with it the server's shutdown, forever.
//!
//! The stream is a boxed [`Stream`], so that [`Connection::upgrade`] (and
//! [`Connection::start_tls`] on top of it) can replace plain TCP by TLS in place for STARTTLS
//! and STLS: pending replies are written first, and input already read in plaintext is
//! discarded (the CVE-2011-0411 class of bugs: commands pipelined after STARTTLS must not run
//! as if they had come over TLS).
//!
//! Bounds, whatever the protocol: a command line must be complete within the idle timeout
//! (a read that brings no line end does not restart it, so a client trickling one octet at a
//! time is cut off like a silent one); a session may read at most a byte budget and last at
//! most a lifetime ([`Connection::with_limits`]); replies are written before more input is
//! read, so a client that never reads holds at most one batch of replies, and after the
//! shutdown deadline ([`crate::Shutdown::wait_until`]) a write to it gives up at once. Memory
//! of an idle connection is small: the read buffer starts at [`SMALL_BUFFER`] octets, grows
//! while reads fill it, and shrinks back when the client goes quiet, as does the reply buffer.
//!
//! It knows no protocol: no command, no reply text, no store.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::tls::TlsInfo;
use crate::ShutdownWatch;

/// A byte stream a connection can run over: plain TCP, TLS, or an in-memory pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The stream of a connection, boxed so that an upgrade can change its type.
pub type BoxStream = Box<dyn Stream>;

/// The default size of the read buffer, in octets.
pub const DEFAULT_READ_BUFFER: usize = 16 * 1024;

/// The size the read buffer starts at and shrinks back to, in octets: what an idle
/// connection holds.
pub const SMALL_BUFFER: usize = 256;

/// A reply buffer with more capacity than this is given back when the session waits for
/// input.
const KEPT_OUT: usize = 4 * 1024;

/// What the protocol decided after a batch of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read more.
    Continue,
    /// Write what is pending and end the session (QUIT, too many errors).
    Close,
}

/// How a session ended, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The protocol closed it (QUIT, too many errors).
    Closed,
    /// The client disconnected.
    PeerClosed,
    /// The idle timeout expired (the handler's timeout goodbye was sent).
    Timeout,
    /// The server is stopping (the handler's shutdown goodbye was sent).
    Shutdown,
    /// The session read its byte budget or reached its lifetime (the handler's
    /// [`Handler::exceeded`] goodbye was sent).
    Limit,
}

/// What one [`Connection::read`] brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// More input is buffered: see [`Connection::input`].
    Input,
    /// The client closed its side.
    PeerClosed,
    /// Nothing arrived within the idle timeout, or a line was not complete within it.
    Timeout,
    /// Shutdown was triggered.
    Shutdown,
    /// The session's byte budget is spent or its lifetime is over.
    Limit,
}

/// What a protocol brings to [`Connection::run`]: its banner, its goodbyes and what it does
/// with input. Everything else (reading, timeouts, shutdown, writing) is the connection's.
pub trait Handler: Send {
    /// Appends the banner sent on connect (nothing, for a protocol without one).
    fn greet(&mut self, out: &mut Vec<u8>);

    /// Appends the goodbye for a client idle too long.
    fn timeout(&mut self, out: &mut Vec<u8>);

    /// Appends the goodbye for a server that is stopping.
    fn shutdown(&mut self, out: &mut Vec<u8>);

    /// Appends the goodbye for a session over its byte budget or lifetime; the timeout
    /// goodbye unless the protocol has a better one.
    fn exceeded(&mut self, out: &mut Vec<u8>) {
        self.timeout(out);
    }

    /// Handles the input buffered in `connection` ([`Connection::ingest`] hands it out with
    /// the reply buffer). It should consume all of it, unless it closes; what it leaves stays
    /// buffered before the next read. It may write in between ([`Connection::flush`]), wait
    /// ([`Connection::pause`]) or upgrade the stream. What it leaves pending is written in one
    /// write when it returns.
    fn input(
        &mut self,
        connection: &mut Connection,
    ) -> impl Future<Output = io::Result<Flow>> + Send;
}

/// One client connection: its stream, buffers, timeouts and shutdown watch.
pub struct Connection {
    /// The client; `None` only after an upgrade failed, which leaves nothing to talk to.
    stream: Option<BoxStream>,
    /// Input read but not consumed is `buffer[start..end]`; its length is the most one read
    /// takes, which bounds what one batch can make the session produce. Starts at
    /// [`SMALL_BUFFER`] octets (allocated at the first read) and grows up to `capacity`.
    buffer: Vec<u8>,
    /// The most the read buffer grows to.
    capacity: usize,
    /// Octets the last read brought: a small read into a big, emptied buffer shrinks it.
    last_read: usize,
    /// Where the unconsumed input starts.
    start: usize,
    /// Where the unconsumed input ends.
    end: usize,
    /// Replies waiting to be written: written in one write per batch of input.
    out: Vec<u8>,
    /// How long a client may stay silent, and how long one line may take.
    idle_timeout: Duration,
    /// When the line not yet complete started arriving: its deadline is this plus the idle
    /// timeout, however many octets trickle in meanwhile. `None` between lines.
    line_since: Option<Instant>,
    /// Octets the client may still send; `None`: no budget.
    budget: Option<u64>,
    /// When the session must end; `None`: no lifetime.
    ends_at: Option<Instant>,
    /// How long one write may take.
    write_timeout: Duration,
    /// How long a STARTTLS handshake may take: [`crate::tls::handshake_timeout`] of the
    /// connection timeout, so that a client that stalls mid-handshake is cut off soon.
    handshake_timeout: Duration,
    /// Ends the read wait (and [`Connection::pause`]) when the server stops.
    shutdown: ShutdownWatch,
    /// What the TLS handshake negotiated, once the stream is encrypted (implicit TLS or
    /// STARTTLS): the protocol decides what to offer and what to record from it.
    tls: Option<TlsInfo>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &(self.end - self.start))
            .field("pending", &self.out.len())
            .field("idle_timeout", &self.idle_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection over `stream` with a read buffer of [`DEFAULT_READ_BUFFER`] octets and
    /// `timeout` as both the idle and the write timeout (as James's `<connectiontimeout>`).
    pub fn new<S: Stream + 'static>(
        stream: S,
        timeout: Duration,
        shutdown: ShutdownWatch,
    ) -> Connection {
        Connection {
            stream: Some(Box::new(stream)),
            buffer: Vec::new(),
            capacity: DEFAULT_READ_BUFFER,
            last_read: 0,
            start: 0,
            end: 0,
            out: Vec::new(),
            idle_timeout: timeout,
            line_since: None,
            budget: None,
            ends_at: None,
            write_timeout: timeout,
            handshake_timeout: crate::tls::handshake_timeout(timeout),
            shutdown,
            tls: None,
        }
    }

    /// Marks the stream as already encrypted (an implicit-TLS port, whose handshake
    /// [`crate::tls::accept`] did before the connection was built).
    pub fn with_tls(mut self, info: TlsInfo) -> Connection {
        self.tls = Some(info);
        self
    }

    /// What TLS negotiated, when the stream is encrypted.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Reads at most `octets` at a time (at least 1).
    pub fn with_read_buffer(mut self, octets: usize) -> Connection {
        self.capacity = octets.max(1);
        self.buffer = Vec::new();
        self
    }

    /// Bounds the session by `limits`: at most `session_bytes` octets read from the client,
    /// and an end `session_lifetime` from now. Either ends the session with the handler's
    /// [`Handler::exceeded`] goodbye ([`End::Limit`]).
    pub fn with_limits(mut self, limits: &crate::Limits) -> Connection {
        self.budget = limits.session_bytes;
        self.ends_at = limits
            .session_lifetime
            .and_then(|life| Instant::now().checked_add(life));
        self
    }

    /// Bounds each write by `timeout` instead of the idle timeout.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Connection {
        self.write_timeout = timeout;
        self
    }

    /// Runs the session: the handler's banner, then reads and hands each batch of input to
    /// the handler, writing what it produced once per batch, until it closes, the peer goes
    /// away, the idle timeout expires or shutdown is triggered (the handler's goodbye is
    /// written for those two). An I/O error (a write timeout among them) ends it as `Err`.
    pub async fn run<H: Handler>(&mut self, handler: &mut H) -> io::Result<End> {
        handler.greet(&mut self.out);
        self.flush().await?;
        loop {
            match self.read().await? {
                Read::Input => {}
                Read::PeerClosed => return Ok(End::PeerClosed),
                Read::Timeout => {
                    handler.timeout(&mut self.out);
                    self.flush().await?;
                    return Ok(End::Timeout);
                }
                Read::Shutdown => {
                    handler.shutdown(&mut self.out);
                    self.flush().await?;
                    return Ok(End::Shutdown);
                }
                Read::Limit => {
                    handler.exceeded(&mut self.out);
                    self.flush().await?;
                    return Ok(End::Limit);
                }
            }
            // Boxed: what the protocol awaits (store calls, TLS upgrades) takes memory only
            // while it runs, not in the task of every idle session.
            let flow = Box::pin(handler.input(self)).await?;
            self.flush().await?;
            if flow == Flow::Close {
                return Ok(End::Closed);
            }
        }
    }

    /// Waits for input (appended after what is still buffered), the idle timeout (or the end
    /// of the time the current line may take), the end of the session's budget or lifetime,
    /// or shutdown, whichever comes first.
    pub async fn read(&mut self) -> io::Result<Read> {
        if self.budget == Some(0) {
            return Ok(Read::Limit);
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            // Quiet after small reads: give the big buffers back while waiting.
            if self.buffer.len() > SMALL_BUFFER && self.last_read < self.buffer.len() / 4 {
                self.buffer = Vec::new();
            }
            if self.out.is_empty() && self.out.capacity() > KEPT_OUT {
                self.out = Vec::new();
            }
        } else if self.end == self.buffer.len() {
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else if self.buffer.len() < self.capacity {
                self.grow();
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the session left a full input buffer unconsumed",
                ));
            }
        }
        if self.buffer.is_empty() {
            self.buffer = vec![0; SMALL_BUFFER.min(self.capacity)];
        }
        let now = Instant::now();
        let mut deadline = now + self.idle_timeout;
        let mut on_deadline = Read::Timeout;
        if let Some(since) = self.line_since {
            deadline = deadline.min(since + self.idle_timeout);
        }
        if let Some(end) = self.ends_at {
            if end <= deadline {
                (deadline, on_deadline) = (end, Read::Limit);
            }
        }
        let stream = self.stream.as_mut().ok_or_else(gone)?;
        let room = match self.budget {
            Some(left) => {
                (self.end + usize::try_from(left).unwrap_or(usize::MAX)).min(self.buffer.len())
            }
            None => self.buffer.len(),
        };
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut self.buffer[self.end..room])) => read,
            _ = self.shutdown.recv() => return Ok(Read::Shutdown),
        };
        match read {
            Err(_elapsed) => Ok(on_deadline),
            Ok(Ok(0)) => Ok(Read::PeerClosed),
            Ok(Ok(n)) => {
                let fresh = &self.buffer[self.end..self.end + n];
                // A line end restarts the line's clock (from now, if a new line has begun
                // after it); octets without one do not. "Now" is when they arrived, not when
                // the wait began: a line begun late in an idle spell still gets its full time.
                let now = Instant::now();
                match fresh.iter().rposition(|&b| b == b'\n') {
                    Some(lf) if lf + 1 == n => self.line_since = None,
                    Some(_) => self.line_since = Some(now),
                    None => self.line_since = self.line_since.or(Some(now)),
                }
                if n == room - self.end && room == self.buffer.len() {
                    // Reads fill the buffer: the client sends in bulk.
                    self.grow();
                }
                self.last_read = n;
                self.end += n;
                if let Some(left) = &mut self.budget {
                    *left = left.saturating_sub(n as u64);
                }
                Ok(Read::Input)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Doubles the read buffer, up to its capacity.
    fn grow(&mut self) {
        let size = (self.buffer.len() * 2).clamp(SMALL_BUFFER, self.capacity.max(SMALL_BUFFER));
        if size > self.buffer.len() {
            self.buffer.resize(size.min(self.capacity), 0);
        }
    }

    /// The input read and not consumed yet.
    pub fn input(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    /// Marks the first `octets` of [`Connection::input`] as consumed.
    pub fn consume(&mut self, octets: usize) {
        self.start = (self.start + octets).min(self.end);
    }

    /// Hands the unconsumed input and the reply buffer to `step`, which returns how many
    /// octets of the input it consumed and its own result.
    pub fn ingest<T>(&mut self, step: impl FnOnce(&[u8], &mut Vec<u8>) -> (usize, T)) -> T {
        let (used, result) = step(&self.buffer[self.start..self.end], &mut self.out);
        self.consume(used);
        result
    }

    /// The replies not written yet, to append to.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// How many octets of replies are waiting to be written.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Writes the pending replies in one write, bounded by the write timeout.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.stream.as_mut().ok_or_else(gone)?;
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        let forced = self.shutdown.forced();
        tokio::select! {
            written = tokio::time::timeout(self.write_timeout, write) => match written {
                Ok(result) => result?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            },
            _ = forced => return Err(past_deadline()),
        }
        self.out.clear();
        Ok(())
    }

    /// Waits `delay` (a failed login held back), or less if shutdown comes first. Returns
    /// `false` if it was cut short by shutdown.
    pub async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.shutdown.recv() => false,
        }
    }

    /// Whether shutdown has been triggered.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    /// Replaces the stream with what `wrap` makes of it (STARTTLS: a TLS stream over it).
    /// Pending replies (the "go ahead") are written first, and input already buffered, which
    /// arrived in plaintext before the upgrade, is discarded; returns how many octets were
    /// discarded. If `wrap` fails, the connection has no stream left and every later read or
    /// write fails.
    pub async fn upgrade<F, Fut>(&mut self, wrap: F) -> io::Result<usize>
    where
        F: FnOnce(BoxStream) -> Fut,
        Fut: Future<Output = io::Result<BoxStream>>,
    {
        self.flush().await?;
        let discarded = self.end - self.start;
        (self.start, self.end) = (0, 0);
        let stream = self.stream.take().ok_or_else(gone)?;
        self.stream = Some(wrap(stream).await?);
        Ok(discarded)
    }

    /// Upgrades the stream to TLS as a server (STARTTLS, STLS), through [`Connection::upgrade`]
    /// (so plaintext input buffered before it is discarded); the handshake is bounded by
    /// [`crate::tls::handshake_timeout`] of the connection timeout. Returns what the handshake
    /// negotiated, also kept in [`Connection::tls`].
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<TlsInfo> {
        let timeout = self.handshake_timeout;
        let mut shutdown = self.shutdown.clone();
        let mut negotiated = None;
        self.upgrade(|stream| async {
            let tls =
                crate::tls::bounded_handshake(acceptor.accept(stream), timeout, &mut shutdown)
                    .await?;
            negotiated = Some(TlsInfo::of(&tls));
            Ok(Box::new(tls) as BoxStream)
        })
        .await?;
        let info = negotiated.ok_or_else(gone)?;
        self.tls = Some(info.clone());
        Ok(info)
    }

    /// Shuts the stream down (TLS: sends close_notify), ignoring errors: the session is over.
    pub async fn close(&mut self) {
        if let Some(stream) = self.stream.as_mut() {
            let forced = self.shutdown.forced();
            tokio::select! {
                _ = tokio::time::timeout(self.write_timeout, stream.shutdown()) => {}
                _ = forced => {}
            }
        }
    }
}

fn past_deadline() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "dropped at the shutdown deadline while waiting for the client",
    )
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection has no stream")
}

#[cfg(test)]
mod tests;
