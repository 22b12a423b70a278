//! Tests of [`Connection`] over in-memory pipes: batching, timeouts, limits, shutdown,
//! upgrades and buffer sizes.
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
    let cut = tokio::time::timeout(Duration::from_secs(5), conn.pause(Duration::from_secs(600)));
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
    let (mut client, session, discarded) = start(Upgrade::Flip, Duration::from_secs(5), &shutdown);
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
    // Wide margins (each pause is 0.7 s short of the timeout): a loaded CI machine may hold
    // this thread for a few hundred milliseconds.
    let timeout = Duration::from_secs(1);
    let (client, session, _) = start(Upgrade::Flip, timeout, &shutdown);
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    assert_eq!(read_line(&mut read).await, "hello\r\n");
    // Longer in all than the timeout: the line clock does not add up across lines.
    for _ in 0..6 {
        write.write_all(b"a\r\n").await.unwrap();
        assert_eq!(read_line(&mut read).await, "got a\r\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    assert_eq!(read_line(&mut read).await, "bye\r\n");
    assert_eq!(session.await.unwrap().unwrap(), End::Closed);
}

/// A line that begins arriving late in an idle spell gets the whole timeout from its first
/// octet, not what was left of the idle one. (The clock used to start when the wait began:
/// such a line was cut off short of its time.)
#[tokio::test]
async fn a_line_begun_late_in_an_idle_spell_gets_its_full_time() {
    let shutdown = Shutdown::new();
    let timeout = Duration::from_secs(1);
    let (client, session, _) = start(Upgrade::Flip, timeout, &shutdown);
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    assert_eq!(read_line(&mut read).await, "hello\r\n");
    // Idle for 0.7 s, then half a line, then its end 0.6 s later: 1.3 s after the wait
    // began, 0.6 s after the line did.
    tokio::time::sleep(Duration::from_millis(700)).await;
    write.write_all(b"ab").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    write.write_all(b"c\r\nQUIT\r\n").await.unwrap();
    assert_eq!(read_line(&mut read).await, "got abc\r\n");
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
