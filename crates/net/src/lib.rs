//! Listener plumbing shared by every Mailroom network server (SMTP, POP3, NNTP,
//! RemoteManager).
//!
//! This crate owns what is the same for every protocol and nothing that is protocol-specific:
//!
//! * [`Listener`]: a bound TCP socket (`SO_REUSEADDR`, a deep backlog);
//! * [`serve`]: the accept loop. It takes a connection permit *before* `accept()` so that a
//!   server at its limit leaves new connections in the kernel backlog instead of accepting and
//!   dropping them, moves the permit into the session task (released when the task ends, RAII),
//!   sets `TCP_NODELAY`, and never gives up on accept errors: it logs them and backs off;
//! * [`Shutdown`] / [`ShutdownWatch`]: two-phase shutdown. `main` triggers the signal, every
//!   session says its protocol's goodbye and ends, and [`Shutdown::wait`] returns when the last
//!   [`ShutdownWatch`] (each session holds one) has been dropped — the mpsc-senders trick of
//!   mini-redis;
//! * [`connection`]: one client connection — stream, read buffer, pending replies, idle and
//!   write timeouts, shutdown — and the read / handle / write loop every protocol runs through
//!   a [`Handler`]; its stream can be upgraded in place (STARTTLS, STLS);
//! * [`lines`]: bounded line framing, the same for every line-based protocol;
//! * [`dot`]: the dot-stuffing codec of message bodies (SMTP DATA, POP3 RETR/TOP, NNTP);
//! * [`tls`]: the reloadable server TLS configuration of a listener, the implicit-TLS
//!   handshake, and what a handshake negotiated;
//! * [`throttle`]: failed logins counted per client IP, and the delay they earn.
//!
//! It parses no protocol's commands, and it holds no reply text.
//!
//! **TLS plugs in here**: [`Connection::start_tls`] upgrades a connection with a
//! `tokio_rustls::TlsAcceptor` (ring provider); an implicit-TLS listener accepts the
//! handshake with [`tls::accept`] before building its [`Connection`] (and marks it
//! [`Connection::with_tls`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod connection;
pub mod dot;
pub mod lines;
pub mod throttle;
pub mod tls;

pub use connection::{Connection, End, Flow, Handler};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// How many connections the kernel may queue while the server is at its connection limit.
const BACKLOG: i32 = 1024;

/// The first pause after an accept error; doubled after each further error up to
/// [`MAX_BACKOFF`], reset by the next successful accept.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between two accepts after errors (out of file descriptors, say).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Running out of descriptors is logged at most once in this time, however often accepts
/// fail (or succeed in between, as descriptors come and go).
const STARVED_LOG_EVERY: Duration = Duration::from_secs(60);

/// A bound, listening TCP socket.
#[derive(Debug)]
pub struct Listener {
    /// The tokio listener; registered with the runtime that called [`Listener::bind`].
    inner: TcpListener,
}

impl Listener {
    /// Binds `addr` with `SO_REUSEADDR` (so that a restarted server can bind while old
    /// connections are in TIME_WAIT) and starts listening. Port 0 picks a free port; see
    /// [`Listener::local_addr`]. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            // `[::]` means IPv6 only; bind `0.0.0.0` separately for IPv4.
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let inner = TcpListener::from_std(socket.into())?;
        Ok(Listener { inner })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Held by `main`: triggers shutdown and waits until every session has finished.
#[derive(Debug)]
pub struct Shutdown {
    /// Flips to `true` once; every [`ShutdownWatch`] sees it.
    signal: watch::Sender<bool>,
    /// Flips to `true` when the deadline of [`Shutdown::wait_until`] has passed: sessions
    /// still blocked on their client (a write to one that stopped reading) give up at once.
    force: watch::Sender<bool>,
    /// Cloned into every watch; `wait` drops this one and then sees the channel close when the
    /// last watch is gone.
    alive: mpsc::Sender<()>,
    /// Receives nothing ever: it only learns when all senders are dropped.
    drained: mpsc::Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A shutdown signal not yet triggered.
    pub fn new() -> Shutdown {
        let (signal, _) = watch::channel(false);
        let (force, _) = watch::channel(false);
        let (alive, drained) = mpsc::channel(1);
        Shutdown {
            signal,
            force,
            alive,
            drained,
        }
    }

    /// A watch to hand to a server (which clones it into each session).
    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch {
            signal: self.signal.subscribe(),
            force: self.force.subscribe(),
            _alive: self.alive.clone(),
        }
    }

    /// Phase one: tells every server and session to stop. Sessions finish their current step,
    /// send their goodbye and close.
    pub fn trigger(&self) {
        self.signal.send_replace(true);
    }

    /// Phase two: triggers the signal if not done yet, then waits until every
    /// [`ShutdownWatch`] handed out (directly or by cloning) has been dropped, that is until
    /// every accept loop and session has ended.
    pub async fn wait(self) {
        self.wait_until(None).await;
    }

    /// Like [`Shutdown::wait`], but once `deadline` has passed, the sessions still running
    /// are forced: every wait on their client (a write to a client that stopped reading, a
    /// read, the close) ends at once with an error, so they end without another word. Store
    /// calls in progress are not interrupted: what a session was committing is committed, and
    /// nothing is acknowledged that was not. Returns `false` when sessions had to be forced.
    pub async fn wait_until(self, deadline: Option<Duration>) -> bool {
        self.trigger();
        let Shutdown {
            signal,
            force,
            alive,
            mut drained,
        } = self;
        drop(alive);
        // `recv` returns `None` once every sender (one per watch) is gone.
        let in_time = match deadline {
            None => {
                let _ = drained.recv().await;
                true
            }
            Some(deadline) => match tokio::time::timeout(deadline, drained.recv()).await {
                Ok(_) => true,
                Err(_) => {
                    force.send_replace(true);
                    let _ = drained.recv().await;
                    false
                }
            },
        };
        drop((signal, force));
        in_time
    }
}

/// A session's or accept loop's view of the shutdown signal. While it exists, [`Shutdown::wait`]
/// keeps waiting: hold it for as long as the task runs.
#[derive(Clone, Debug)]
pub struct ShutdownWatch {
    /// Becomes `true` when shutdown is triggered.
    signal: watch::Receiver<bool>,
    /// Becomes `true` when the shutdown deadline has passed.
    force: watch::Receiver<bool>,
    /// Never used to send: its drop tells [`Shutdown::wait`] that this holder has finished.
    _alive: mpsc::Sender<()>,
}

impl ShutdownWatch {
    /// Whether shutdown has been triggered (sticky: once true, always true).
    pub fn is_shutdown(&self) -> bool {
        *self.signal.borrow()
    }

    /// Completes when shutdown is triggered (at once if it already was). A dropped
    /// [`Shutdown`] counts as triggered, since nobody could trigger it any more. Cancel-safe:
    /// use it in `tokio::select!`.
    pub async fn recv(&mut self) {
        let _ = self.signal.wait_for(|down| *down).await;
    }

    /// Completes when the shutdown deadline has passed ([`Shutdown::wait_until`]); never if
    /// the [`Shutdown`] was dropped without one. Cancel-safe.
    pub async fn forced(&mut self) {
        if self.force.wait_for(|forced| *forced).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Who a listener lets in: at most `connections` sessions at once, at most `per_ip` of them
/// from one client (one IPv4 address, one IPv6 /64), and what a client over either limit is
/// told before it is closed (the protocol's temporary refusal: SMTP `421 4.7.0`, POP3
/// `-ERR [SYS/TEMP]`, NNTP `400`).
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Sessions served at once; `None`: no limit.
    pub connections: Option<usize>,
    /// Sessions from one client at once; `None`: no limit.
    pub per_ip: Option<usize>,
    /// The line written to a refused client (CRLF included).
    pub refusal: Vec<u8>,
}

/// The safe defaults of the per-session limits, for settings whose configuration says nothing.
pub mod defaults {
    use std::time::Duration;

    /// Sessions from one client address at once on one listener.
    pub const PER_IP: usize = 10;
    /// Octets a client may send in one session (1 GiB).
    pub const SESSION_BYTES: u64 = 1 << 30;
    /// How long a session may last (one day: a POP3 download of a large mailbox over a slow
    /// link, or a newsreader left open, must end with its QUIT, or its deletions never commit).
    pub const SESSION_LIFETIME: Duration = Duration::from_secs(86_400);
}

/// Bounds on one session, whatever its protocol: see [`Connection::with_limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sessions from one client at once (for the listener's [`Admission`]); `None`: no limit.
    pub per_ip: Option<usize>,
    /// Octets the client may send in one session; `None`: no limit.
    pub session_bytes: Option<u64>,
    /// How long one session may last; `None`: no limit.
    pub session_lifetime: Option<Duration>,
}

impl Default for Limits {
    /// The [`defaults`]: 10 sessions per client, 1 GiB and one day per session.
    fn default() -> Self {
        Limits {
            per_ip: Some(defaults::PER_IP),
            session_bytes: Some(defaults::SESSION_BYTES),
            session_lifetime: Some(defaults::SESSION_LIFETIME),
        }
    }
}

/// Counts the sessions of each client address of one listener.
#[derive(Debug, Default)]
struct PerIp {
    /// Sessions by client key ([`client_key`]); an entry is removed when it drops to zero.
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// Releases one session's place in [`PerIp`] when dropped.
struct IpPlace {
    /// The listener's table.
    table: Arc<PerIp>,
    /// The client key counted.
    key: std::net::IpAddr,
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl PerIp {
    /// A place for `ip` if it has fewer than `limit` sessions.
    fn enter(table: &Arc<PerIp>, ip: std::net::IpAddr, limit: usize) -> Option<IpPlace> {
        let key = client_key(ip);
        let mut counts = table.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpPlace {
            table: table.clone(),
            key,
        })
    }
}

/// The key a client is counted under: its IPv4 address (also when mapped into IPv6), or the
/// /64 of its IPv6 address, since one IPv6 host usually owns a whole /64.
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Whether an accept error means the process (or the system) has no file descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Runs the accept loop on `listener` until shutdown is triggered.
///
/// Every connection is accepted; one beyond `admission.connections` sessions at once, or
/// beyond `admission.per_ip` from its client, gets `admission.refusal` (written without
/// waiting: a fresh socket's send buffer takes it) and is closed at once, so that the
/// descriptors held stay bounded by the limits. An admitted one gets `TCP_NODELAY` and is
/// handed to `handler` with its peer address and a clone of `shutdown`; the future it returns
/// runs in its own task, which holds the session's places until it ends. Accept errors (a
/// peer that reset before accept, no file descriptors left) are followed by a short, growing
/// pause, so that the loop never spins; running out of descriptors is logged once until an
/// accept succeeds again. The loop only ends on shutdown. Returns once it has stopped
/// accepting; sessions still running are awaited through [`Shutdown::wait`].
pub async fn serve<H, F>(
    listener: Listener,
    admission: Admission,
    mut shutdown: ShutdownWatch,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, ShutdownWatch) -> F,
    F: Future + Send + 'static,
{
    let permits = admission.connections.map(|n| Arc::new(Semaphore::new(n)));
    let per_ip = Arc::new(PerIp::default());
    let local = listener.local_addr().ok();
    let mut backoff = MIN_BACKOFF;
    // Set when running out of descriptors was logged, cleared (and the recovery logged) at
    // the next accept; `said` keeps the error to one line per STARVED_LOG_EVERY.
    let mut starved = false;
    let mut said: Option<tokio::time::Instant> = None;
    // Refusals since the last admitted connection: the first one is logged, not every one.
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.inner.accept() => accepted,
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if out_of_descriptors(&e) {
                    if said.is_none_or(|at| at.elapsed() >= STARVED_LOG_EVERY) {
                        tracing::error!(listener = ?local, error = %e,
                            "out of file descriptors: new connections wait in the backlog");
                        said = Some(tokio::time::Instant::now());
                        starved = true;
                    } else {
                        tracing::debug!(listener = ?local, error = %e, "accept failed");
                    }
                } else {
                    tracing::debug!(listener = ?local, error = %e, "accept failed; backing off {:?}", backoff);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.recv() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        if std::mem::take(&mut starved) {
            tracing::warn!(listener = ?local, "file descriptors available again");
        }
        let permit = match &permits {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    refuse(
                        &stream,
                        &admission.refusal,
                        peer,
                        local,
                        &mut refused,
                        "connection limit",
                    );
                    continue;
                }
            },
            None => None,
        };
        let place = match admission.per_ip {
            Some(limit) => match PerIp::enter(&per_ip, peer.ip(), limit) {
                Some(place) => Some(place),
                None => {
                    refuse(
                        &stream,
                        &admission.refusal,
                        peer,
                        local,
                        &mut refused,
                        "per-client limit",
                    );
                    continue;
                }
            },
            None => None,
        };
        refused = 0;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let session = handler(stream, peer, shutdown.clone());
        tokio::spawn(async move {
            session.await;
            drop((permit, place));
        });
    }
    tracing::debug!(listener = ?local, "accept loop stopped");
}

/// Tells a client over a limit so and lets the stream drop (closing it). Logs the first
/// refusal after an admitted connection as a warning, the others at debug level.
fn refuse(
    stream: &TcpStream,
    refusal: &[u8],
    peer: SocketAddr,
    local: Option<SocketAddr>,
    refused: &mut u64,
    why: &str,
) {
    // Never waits: a client that does not read loses the refusal, not the server's time.
    let _ = stream.try_write(refusal);
    *refused += 1;
    if *refused == 1 {
        tracing::warn!(listener = ?local, %peer, "refusing connections: {why} reached");
    } else {
        tracing::debug!(listener = ?local, %peer, "refused: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn admit(connections: Option<usize>, per_ip: Option<usize>) -> Admission {
        Admission {
            connections,
            per_ip,
            refusal: b"busy\n".to_vec(),
        }
    }

    #[tokio::test]
    async fn serves_limits_and_drains_on_shutdown() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(
            listener,
            admit(Some(1), None),
            shutdown.watch(),
            |mut stream: TcpStream, _peer, mut watch: ShutdownWatch| async move {
                assert!(stream.nodelay().unwrap());
                stream.write_all(b"hello\n").await.unwrap();
                watch.recv().await;
                stream.write_all(b"bye\n").await.unwrap();
            },
        ));

        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 6];
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello\n");

        // At the limit: the second connection is told so and closed at once.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut refused = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut refused))
            .await
            .expect("closed at once")
            .unwrap();
        assert_eq!(refused, b"busy\n");

        shutdown.wait().await;
        server.await.unwrap();
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye\n");
    }

    #[tokio::test]
    async fn limits_sessions_per_client_address() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(serve(
            listener,
            admit(None, Some(2)),
            shutdown.watch(),
            |mut stream: TcpStream, _peer, mut watch: ShutdownWatch| async move {
                stream.write_all(b"hello\n").await.unwrap();
                let mut b = [0u8; 1];
                tokio::select! {
                    _ = stream.read(&mut b) => {}
                    _ = watch.recv() => {}
                }
            },
        ));
        async fn first_line(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut line = vec![0u8; 5];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut line))
                .await
                .expect("an answer")
                .unwrap();
            line.truncate(n);
            (c, line)
        }
        let (a, line) = first_line(addr).await;
        assert_eq!(line, b"hello");
        let (_b, line) = first_line(addr).await;
        assert_eq!(line, b"hello");
        let (_c, line) = first_line(addr).await;
        assert_eq!(line, b"busy\n", "a third one from the same address");
        // One leaves: its place is free again.
        drop(a);
        let mut again = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            again = first_line(addr).await.1;
            if again == b"hello" {
                break;
            }
        }
        assert_eq!(again, b"hello");
        assert_eq!(
            client_key("2001:db8::1".parse().unwrap()),
            client_key("2001:db8::ffff:1".parse().unwrap())
        );
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("drained");
    }

    #[tokio::test]
    async fn permit_is_released_when_session_ends() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(serve(
            listener,
            admit(Some(1), None),
            shutdown.watch(),
            |mut stream: TcpStream, _peer, _watch| async move {
                let _ = stream.write_all(b"x").await;
            },
        ));
        for _ in 0..3 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut b))
                .await
                .expect("served")
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("drained");
    }
}
