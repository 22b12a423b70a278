//! The server side of TLS, shared by every listener: the acceptor each one uses, which can be
//! swapped for a renewed certificate while connections run, and what a finished handshake
//! tells the protocol (version and cipher, for `Received:` headers and the log).
//!
//! Building a `rustls::ServerConfig` from certificate files (or a generated self-signed pair)
//! is the binary's work; this module only holds and applies it.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ProtocolVersion};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::connection::BoxStream;
use crate::ShutdownWatch;

/// The longest any TLS handshake may take, whatever the connection timeout: a handshake is a
/// few round trips, and a client that stalls in the middle of one holds a connection permit.
pub const MAX_HANDSHAKE: Duration = Duration::from_secs(30);

/// How long a handshake may take on a listener whose connection timeout is
/// `connection_timeout` (`<connectiontimeout>`): that timeout, but at most [`MAX_HANDSHAKE`].
pub fn handshake_timeout(connection_timeout: Duration) -> Duration {
    connection_timeout.min(MAX_HANDSHAKE)
}

/// What a completed handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name rustls gives the cipher suite, `TLS13_AES_256_GCM_SHA384` for instance.
    pub cipher: String,
}

impl TlsInfo {
    /// What the server side of `stream` negotiated.
    pub fn of<S>(stream: &TlsStream<S>) -> TlsInfo {
        let connection = stream.get_ref().1;
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_string(),
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |s| format!("{:?}", s.suite()));
        TlsInfo { version, cipher }
    }
}

/// The TLS configuration of a listener, replaceable at run time: [`ServerTls::acceptor`]
/// gives each new handshake the configuration current at that moment, and
/// [`ServerTls::replace`] (a SIGHUP reload) changes it for later handshakes only, leaving
/// sessions already encrypted untouched. Cloning shares the same configuration.
#[derive(Clone)]
pub struct ServerTls {
    /// The configuration new handshakes use.
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A handle serving `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls {
            current: Arc::new(RwLock::new(config)),
        }
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Serves `config` to every later handshake.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// How one listener uses TLS (`<tls socketTLS=.. startTLS=..>` of its block).
#[derive(Clone, Debug)]
pub struct ListenerTls {
    /// The certificate it serves; shared with the reload that may replace it.
    pub config: ServerTls,
    /// Implicit TLS: the handshake comes first, before the banner (SMTPS, POP3S).
    pub implicit: bool,
    /// STARTTLS/STLS is offered on a plain connection.
    pub starttls: bool,
}

/// The handshake of an implicit-TLS port (SMTPS, POP3S): accepts TLS on a freshly accepted
/// connection within `timeout`, so that a client that stalls mid-handshake, or sends plain
/// text, costs the server a bounded wait and nothing else. Shutdown ends the wait at once.
pub async fn accept(
    tls: &ServerTls,
    stream: TcpStream,
    timeout: Duration,
    shutdown: &mut ShutdownWatch,
) -> io::Result<(TlsStream<TcpStream>, TlsInfo)> {
    let stream = bounded_handshake(tls.acceptor().accept(stream), timeout, shutdown).await?;
    let info = TlsInfo::of(&stream);
    Ok((stream, info))
}

/// An accepted connection, ready for its protocol: the plain stream, or, on an implicit-TLS
/// listener, the stream after the handshake (bounded by `timeout` and shutdown) with what it
/// negotiated. `None` when the handshake failed or stalled: logged at info level with
/// `protocol` (`SMTPS`, `POP3S`, `NNTPS`), and the connection is closed.
pub async fn accepted(
    tls: Option<&ListenerTls>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    timeout: Duration,
    shutdown: &mut ShutdownWatch,
    protocol: &str,
) -> Option<(BoxStream, Option<TlsInfo>)> {
    let Some(listener_tls) = tls.filter(|t| t.implicit) else {
        return Some((Box::new(stream), None));
    };
    // Boxed: the handshake's state lives only while it runs, not in every session's task.
    match Box::pin(accept(&listener_tls.config, stream, timeout, shutdown)).await {
        Ok((stream, info)) => {
            tracing::debug!(%peer, version = %info.version, cipher = %info.cipher,
                "{protocol} handshake");
            Some((Box::new(stream), Some(info)))
        }
        Err(error) => {
            tracing::info!(%peer, %error, "{protocol}: TLS handshake failed");
            None
        }
    }
}

/// Waits for a server handshake at most `timeout`, and not past shutdown.
pub(crate) async fn bounded_handshake<T>(
    handshake: impl std::future::Future<Output = io::Result<T>>,
    timeout: Duration,
    shutdown: &mut ShutdownWatch,
) -> io::Result<T> {
    tokio::select! {
        done = tokio::time::timeout(timeout, handshake) => match done {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        },
        () = shutdown.recv() => Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "TLS handshake cut short: the server is stopping",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shutdown;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    fn server_tls() -> ServerTls {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        ServerTls::new(Arc::new(config))
    }

    #[tokio::test]
    async fn a_stalled_handshake_ends_at_shutdown_not_at_its_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A client that connects and never says hello.
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let shutdown = Shutdown::new();
        let mut watch = shutdown.watch();
        let tls = server_tls();
        let started = std::time::Instant::now();
        let handshake = tokio::spawn(async move {
            accept(&tls, stream, Duration::from_secs(60), &mut watch)
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(5), handshake)
            .await
            .expect("the handshake ended at shutdown")
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
