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
                // after it); octets without one do not.
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
mod tests {
    use super::*;
    use crate::lines::{LineEvent, LineReader};
    use crate::Shutdown;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{duplex, AsyncBufReadExt, BufReader, DuplexStream, ReadBuf};

    const SHORT: Duration = Duration::from_millis(200);

    /// How the test protocol upgrades at `STARTTLS`.
    enum Upgrade {
        /// With a fake "encryption" that flips every octet.
        Flip,
        /// With real TLS.
        Tls(TlsAcceptor),
    }

    /// A line protocol: `QUIT` closes, `STARTTLS` upgrades, anything else is echoed back.
    struct Echo {
        lines: LineReader,
        upgrade: Upgrade,
        /// Octets of plaintext discarded by the last upgrade.
        discarded: Arc<AtomicUsize>,
    }

    impl Echo {
        fn new(upgrade: Upgrade) -> Echo {
            Echo {
                lines: LineReader::default(),
                upgrade,
                discarded: Arc::default(),
            }
        }
    }

    impl Handler for Echo {
        fn greet(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"hello\r\n");
        }
        fn timeout(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"idle\r\n");
        }
        fn shutdown(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"stopping\r\n");
        }
        async fn input(&mut self, conn: &mut Connection) -> io::Result<Flow> {
            while !conn.input().is_empty() {
                let lines = &mut self.lines;
                let event = conn.ingest(|input, _| lines.read(input));
                let Some(LineEvent::Line(line)) = event else {
                    continue;
                };
                match &line[..] {
                    b"QUIT" => {
                        conn.out().extend_from_slice(b"bye\r\n");
                        return Ok(Flow::Close);
                    }
                    b"STARTTLS" => {
                        conn.out().extend_from_slice(b"go ahead\r\n");
                        let discarded = match &self.upgrade {
                            Upgrade::Flip => {
                                conn.upgrade(|s| async move { Ok(Box::new(Flip(s)) as BoxStream) })
                                    .await?
                            }
                            Upgrade::Tls(acceptor) => {
                                let unread = conn.input().len();
                                let info = conn.start_tls(acceptor).await?;
                                assert_eq!(conn.tls(), Some(&info));
                                assert!(info.version.starts_with("TLSv1."), "{info:?}");
                                unread
                            }
                        };
                        self.discarded.store(discarded, Ordering::SeqCst);
                        // A fresh parser: nothing of the plaintext survives.
                        self.lines = LineReader::default();
                    }
                    _ => {
                        let out = conn.out();
                        out.extend_from_slice(b"got ");
                        out.extend_from_slice(&line);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            Ok(Flow::Continue)
        }
    }

    /// A stream wrapper that flips every octet both ways: a stand-in for encryption.
    struct Flip<S>(S);

    impl<S: AsyncRead + Unpin> AsyncRead for Flip<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let poll = Pin::new(&mut self.0).poll_read(cx, buf);
            for b in &mut buf.filled_mut()[before..] {
                *b = !*b;
            }
            poll
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Flip<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let flipped: Vec<u8> = buf.iter().map(|b| !b).collect();
            Pin::new(&mut self.0).poll_write(cx, &flipped)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A stream that counts the writes made to it.
    struct Counted(DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// Runs an [`Echo`] over one end of a pipe; returns the other end and the session.
    fn start(
        upgrade: Upgrade,
        timeout: Duration,
        shutdown: &Shutdown,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<io::Result<End>>,
        Arc<AtomicUsize>,
    ) {
        let (client, server) = duplex(64 * 1024);
        let mut echo = Echo::new(upgrade);
        let discarded = echo.discarded.clone();
        let mut conn = Connection::new(server, timeout, shutdown.watch());
        let task = tokio::spawn(async move {
            let end = conn.run(&mut echo).await;
            conn.close().await;
            end
        });
        (client, task, discarded)
    }

    async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .expect("a line in time")
            .unwrap();
        line
    }

    #[tokio::test]
    async fn a_pipelined_batch_is_answered_in_one_write() {
        let shutdown = Shutdown::new();
        let (client, server) = duplex(64 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let mut conn = Connection::new(
            Counted(server, writes.clone()),
            Duration::from_secs(5),
            shutdown.watch(),
        );
        let session = tokio::spawn(async move {
            let mut echo = Echo::new(Upgrade::Flip);
            conn.run(&mut echo).await
        });
        let (read, mut write) = tokio::io::split(client);
        let mut read = BufReader::new(read);
        assert_eq!(read_line(&mut read).await, "hello\r\n");
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        // A line split across reads, then three lines in one read.
        write.write_all(b"on").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        write
            .write_all(b"e\r\ntwo\r\nthree\nQUIT\r\n")
            .await
            .unwrap();
        for expected in ["got one\r\n", "got two\r\n", "got three\r\n", "bye\r\n"] {
            assert_eq!(read_line(&mut read).await, expected);
        }
        assert_eq!(session.await.unwrap().unwrap(), End::Closed);
        assert_eq!(writes.load(Ordering::SeqCst), 2, "one write for the batch");
    }

    #[tokio::test]
    async fn idle_client_gets_the_timeout_goodbye() {
        let shutdown = Shutdown::new();
        let (client, session, _) = start(Upgrade::Flip, SHORT, &shutdown);
        let mut client = BufReader::new(client);
        assert_eq!(read_line(&mut client).await, "hello\r\n");
        assert_eq!(read_line(&mut client).await, "idle\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Timeout);
        assert_eq!(read_line(&mut client).await, "", "closed after the goodbye");
    }

    #[tokio::test]
    async fn shutdown_sends_the_goodbye_and_drains() {
        let shutdown = Shutdown::new();
        let (client, session, _) = start(Upgrade::Flip, Duration::from_secs(60), &shutdown);
        let mut client = BufReader::new(client);
        assert_eq!(read_line(&mut client).await, "hello\r\n");
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("the session ends on shutdown");
        assert_eq!(read_line(&mut client).await, "stopping\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Shutdown);
    }

    #[tokio::test]
    async fn pause_ends_on_shutdown() {
        let shutdown = Shutdown::new();
        let (_client, server) = duplex(64);
        let mut conn = Connection::new(server, SHORT, shutdown.watch());
        assert!(conn.pause(Duration::from_millis(10)).await);
        assert!(!conn.is_shutdown());
        shutdown.trigger();
        let cut =
            tokio::time::timeout(Duration::from_secs(5), conn.pause(Duration::from_secs(600)));
        assert!(!cut.await.expect("cut short"));
        assert!(conn.is_shutdown());
    }

    #[tokio::test]
    async fn peer_close_ends_the_session() {
        let shutdown = Shutdown::new();
        let (mut client, session, _) = start(Upgrade::Flip, Duration::from_secs(60), &shutdown);
        client.write_all(b"ping\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello\r\ngot ping\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::PeerClosed);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_times_out_the_write() {
        let shutdown = Shutdown::new();
        // A pipe too small for the replies, and a client that never reads.
        let (mut client, server) = duplex(16);
        let mut conn = Connection::new(server, Duration::from_secs(60), shutdown.watch())
            .with_write_timeout(SHORT);
        let session = tokio::spawn(async move {
            let mut echo = Echo::new(Upgrade::Flip);
            conn.run(&mut echo).await
        });
        client.write_all(b"a long enough line\r\n").await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the write gave up")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn unconsumed_input_stays_buffered_and_a_full_buffer_is_an_error() {
        let shutdown = Shutdown::new();
        let (mut client, server) = duplex(64);
        let mut conn = Connection::new(server, SHORT, shutdown.watch()).with_read_buffer(8);
        client.write_all(b"abcdef").await.unwrap();
        assert_eq!(conn.read().await.unwrap(), Read::Input);
        assert_eq!(conn.input(), b"abcdef");
        conn.consume(4);
        client.write_all(b"ghijkl").await.unwrap();
        assert_eq!(conn.read().await.unwrap(), Read::Input);
        assert_eq!(conn.input(), b"efgh");
        // At the end of the buffer, the rest moves to the front and new input follows it.
        assert_eq!(conn.read().await.unwrap(), Read::Input);
        assert_eq!(conn.input(), b"efghijkl");
        let err = conn.read().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        conn.consume(8);
        assert_eq!(conn.read().await.unwrap(), Read::Timeout);
    }

    #[tokio::test]
    async fn upgrade_discards_plaintext_read_before_it() {
        let shutdown = Shutdown::new();
        let (mut client, session, discarded) =
            start(Upgrade::Flip, Duration::from_secs(5), &shutdown);
        // The command and an injected one in the same packet, as in CVE-2011-0411.
        client.write_all(b"STARTTLS\r\nINJECTED\r\n").await.unwrap();
        let mut buf = vec![0u8; b"hello\r\ngo ahead\r\n".len()];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, b"hello\r\ngo ahead\r\n");
        // Now "encrypted": flipped both ways.
        let flip = |b: &[u8]| b.iter().map(|b| !b).collect::<Vec<u8>>();
        client
            .write_all(&flip(b"secret\r\nQUIT\r\n"))
            .await
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(flip(&rest), b"got secret\r\nbye\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Closed);
        assert_eq!(discarded.load(Ordering::SeqCst), b"INJECTED\r\n".len());
    }

    #[tokio::test]
    async fn a_stalled_starttls_handshake_times_out() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
            certified.signing_key.serialize_der().into(),
        );
        let server = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let shutdown = Shutdown::new();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let (mut client, session, _) = start(Upgrade::Tls(acceptor), SHORT, &shutdown);
        // The command, then half a ClientHello record, then nothing.
        client.write_all(b"STARTTLS\r\n").await.unwrap();
        let mut buf = vec![0u8; b"hello\r\ngo ahead\r\n".len()];
        client.read_exact(&mut buf).await.unwrap();
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the handshake gave up")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(crate::tls::handshake_timeout(SHORT), SHORT);
        assert_eq!(
            crate::tls::handshake_timeout(Duration::from_secs(600)),
            crate::tls::MAX_HANDSHAKE
        );
    }

    #[tokio::test]
    async fn start_tls_upgrades_to_rustls_and_discards_plaintext() {
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let shutdown = Shutdown::new();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let (mut client, session, discarded) =
            start(Upgrade::Tls(acceptor), Duration::from_secs(5), &shutdown);
        client.write_all(b"STARTTLS\r\nINJECTED\r\n").await.unwrap();
        let mut buf = vec![0u8; b"hello\r\ngo ahead\r\n".len()];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, b"hello\r\ngo ahead\r\n");

        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, client).await.unwrap();
        tls.write_all(b"secret\r\nQUIT\r\n").await.unwrap();
        let mut tls = BufReader::new(tls);
        assert_eq!(read_line(&mut tls).await, "got secret\r\n");
        assert_eq!(read_line(&mut tls).await, "bye\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Closed);
        assert_eq!(discarded.load(Ordering::SeqCst), b"INJECTED\r\n".len());
    }
    #[tokio::test]
    async fn a_trickled_line_must_end_within_the_timeout() {
        let shutdown = Shutdown::new();
        let timeout = Duration::from_millis(300);
        let (client, session, _) = start(Upgrade::Flip, timeout, &shutdown);
        let (read, mut write) = tokio::io::split(client);
        let mut read = BufReader::new(read);
        assert_eq!(read_line(&mut read).await, "hello\r\n");
        let started = std::time::Instant::now();
        // One octet every 100 ms, each well within the idle timeout, and no line end.
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if write.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        assert_eq!(read_line(&mut read).await, "idle\r\n");
        assert!(started.elapsed() < 3 * timeout, "{:?}", started.elapsed());
        assert_eq!(session.await.unwrap().unwrap(), End::Timeout);
        trickle.abort();
    }

    #[tokio::test]
    async fn complete_lines_keep_a_session_alive() {
        let shutdown = Shutdown::new();
        let timeout = Duration::from_millis(300);
        let (client, session, _) = start(Upgrade::Flip, timeout, &shutdown);
        let (read, mut write) = tokio::io::split(client);
        let mut read = BufReader::new(read);
        assert_eq!(read_line(&mut read).await, "hello\r\n");
        for _ in 0..6 {
            write.write_all(b"a\r\n").await.unwrap();
            assert_eq!(read_line(&mut read).await, "got a\r\n");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        write.write_all(b"QUIT\r\n").await.unwrap();
        assert_eq!(read_line(&mut read).await, "bye\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Closed);
    }

    #[tokio::test]
    async fn the_byte_budget_and_the_lifetime_end_a_session() {
        let shutdown = Shutdown::new();
        let limits = crate::Limits {
            per_ip: None,
            session_bytes: Some(10),
            session_lifetime: None,
        };
        let (mut client, server) = duplex(1024);
        let mut conn =
            Connection::new(server, Duration::from_secs(60), shutdown.watch()).with_limits(&limits);
        let session = tokio::spawn(async move { conn.run(&mut Echo::new(Upgrade::Flip)).await });
        client.write_all(b"abc\r\ndefghijk\r\n").await.unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        // Ten octets read: the first line answered, the rest never seen.
        assert_eq!(all, "hello\r\ngot abc\r\nidle\r\n");
        assert_eq!(session.await.unwrap().unwrap(), End::Limit);

        let limits = crate::Limits {
            per_ip: None,
            session_bytes: None,
            session_lifetime: Some(Duration::from_millis(300)),
        };
        let (client, server) = duplex(1024);
        let mut conn =
            Connection::new(server, Duration::from_secs(60), shutdown.watch()).with_limits(&limits);
        let session = tokio::spawn(async move { conn.run(&mut Echo::new(Upgrade::Flip)).await });
        let (read, mut write) = tokio::io::split(client);
        let mut read = BufReader::new(read);
        assert_eq!(read_line(&mut read).await, "hello\r\n");
        let started = std::time::Instant::now();
        // Busy, never idle: the lifetime still ends it.
        loop {
            if write.write_all(b"a\r\n").await.is_err() {
                break;
            }
            let line = read_line(&mut read).await;
            if line == "idle\r\n" {
                break;
            }
            assert_eq!(line, "got a\r\n");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(session.await.unwrap().unwrap(), End::Limit);
    }

    #[tokio::test]
    async fn past_the_shutdown_deadline_a_blocked_write_is_dropped() {
        let shutdown = Shutdown::new();
        // A client that never reads, and a pipe too small for the replies.
        let (mut client, server) = duplex(16);
        let mut conn = Connection::new(server, Duration::from_secs(600), shutdown.watch());
        let session = tokio::spawn(async move {
            let end = conn.run(&mut Echo::new(Upgrade::Flip)).await;
            conn.close().await;
            end
        });
        client.write_all(b"a long enough line\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let in_time = tokio::time::timeout(
            Duration::from_secs(5),
            shutdown.wait_until(Some(Duration::from_millis(300))),
        )
        .await
        .expect("the deadline ends the wait");
        assert!(!in_time, "the session had to be forced");
        assert!(started.elapsed() < Duration::from_secs(2));
        let error = session.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn buffers_start_small_grow_with_bulk_and_shrink_when_quiet() {
        let shutdown = Shutdown::new();
        let (mut client, server) = duplex(256 * 1024);
        let mut conn = Connection::new(server, SHORT, shutdown.watch()).with_read_buffer(64 * 1024);
        client.write_all(b"x\n").await.unwrap();
        assert_eq!(conn.read().await.unwrap(), Read::Input);
        assert_eq!(conn.buffer.len(), SMALL_BUFFER);
        conn.consume(2);
        client.write_all(&vec![b'y'; 200 * 1024]).await.unwrap();
        let mut total = 0;
        while total < 200 * 1024 {
            assert_eq!(conn.read().await.unwrap(), Read::Input);
            let n = conn.input().len();
            total += n;
            conn.consume(n);
        }
        assert_eq!(conn.buffer.len(), 64 * 1024, "grown while reads fill it");
        // Then a small read: once quiet, the big buffer goes.
        client.write_all(b"z\n").await.unwrap();
        assert_eq!(conn.read().await.unwrap(), Read::Input);
        conn.consume(2);
        conn.out().extend_from_slice(&[b'r'; 10_000]);
        conn.flush().await.unwrap();
        let mut drain = vec![0u8; 10_000];
        client.read_exact(&mut drain).await.unwrap();
        assert_eq!(conn.read().await.unwrap(), Read::Timeout);
        assert_eq!(conn.buffer.len(), SMALL_BUFFER, "shrunk when quiet");
        assert_eq!(conn.out.capacity(), 0, "the reply buffer given back");
    }
}
