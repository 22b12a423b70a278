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
        let (alive, drained) = mpsc::channel(1);
        Shutdown {
            signal,
            alive,
            drained,
        }
    }

    /// A watch to hand to a server (which clones it into each session).
    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch {
            signal: self.signal.subscribe(),
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
        self.trigger();
        let Shutdown {
            signal,
            alive,
            mut drained,
        } = self;
        drop(alive);
        // `recv` returns `None` once every sender (one per watch) is gone.
        let _ = drained.recv().await;
        drop(signal);
    }
}

/// A session's or accept loop's view of the shutdown signal. While it exists, [`Shutdown::wait`]
/// keeps waiting: hold it for as long as the task runs.
#[derive(Clone, Debug)]
pub struct ShutdownWatch {
    /// Becomes `true` when shutdown is triggered.
    signal: watch::Receiver<bool>,
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
}

/// Runs the accept loop on `listener` until shutdown is triggered.
///
/// At most `limit` connections are served at once (`None`: no limit): the permit is taken
/// before `accept()` and released when the session task ends. Each accepted connection gets
/// `TCP_NODELAY` and is handed to `handler` with its peer address and a clone of `shutdown`,
/// and the future it returns runs in its own task. Accept errors (a peer that reset before
/// accept, no file descriptors left) are logged and followed by a short, growing pause; the
/// loop only ends on shutdown. Returns once the loop has stopped accepting; sessions still
/// running are awaited through [`Shutdown::wait`].
pub async fn serve<H, F>(
    listener: Listener,
    limit: Option<usize>,
    mut shutdown: ShutdownWatch,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, ShutdownWatch) -> F,
    F: Future + Send + 'static,
{
    let permits = limit.map(|n| Arc::new(Semaphore::new(n)));
    let local = listener.local_addr().ok();
    let mut backoff = MIN_BACKOFF;
    loop {
        let permit = match &permits {
            Some(sem) => tokio::select! {
                permit = sem.clone().acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    // The semaphore is never closed; treat it as the end anyway.
                    Err(_) => break,
                },
                _ = shutdown.recv() => break,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.inner.accept() => accepted,
            _ = shutdown.recv() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                let session = handler(stream, peer, shutdown.clone());
                tokio::spawn(async move {
                    session.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(listener = ?local, error = %e, "accept failed; backing off {:?}", backoff);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.recv() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!(listener = ?local, "accept loop stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_limits_and_drains_on_shutdown() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(
            listener,
            Some(1),
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

        // At the limit: the second connection is queued by the kernel but not served.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(200), second.read(&mut buf)).await;
        assert!(early.is_err(), "second connection served beyond the limit");

        shutdown.wait().await;
        server.await.unwrap();
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye\n");
    }

    #[tokio::test]
    async fn permit_is_released_when_session_ends() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(serve(
            listener,
            Some(1),
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
