//! The tokio driver against a real TCP client on 127.0.0.1:0, with an in-memory spool.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, Mail};
use mailroom_net::{Listener, Shutdown};
use mailroom_smtp::SmtpSettings;
use mailroom_store::blocking::{IncomingMessage, MailRepository, SpoolRepository};
use mailroom_store::{Blocking, LeaseToken, Leased, Result, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A spool in memory (served like the file backend, through the blocking-pool adapter) whose
/// commit is slow, so that a `250` sent before the commit finished
/// would be caught.
#[derive(Default)]
struct MemSpool {
    committed: Mutex<Vec<(Envelope, Vec<u8>)>>,
    counter: AtomicUsize,
}

struct MemIncoming {
    name: String,
    data: Vec<u8>,
    spool: Arc<MemSpool>,
}

impl Write for MemIncoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl IncomingMessage for MemIncoming {
    fn name(&self) -> &str {
        &self.name
    }
    fn commit(self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        std::thread::sleep(Duration::from_millis(200));
        envelope.name = self.name.clone();
        envelope.size = self.data.len() as u64;
        self.spool
            .committed
            .lock()
            .unwrap()
            .push((envelope, self.data));
        Ok(())
    }
}

/// `MailRepository` needs an `Arc` to itself for `incoming`; this wrapper carries it.
struct Handle(Arc<MemSpool>);

impl MailRepository for Handle {
    fn store(&self, _mail: &Mail) -> Result<()> {
        unimplemented!("not used by the SMTP server")
    }
    fn retrieve(&self, _name: &str) -> Result<Option<Mail>> {
        Ok(None)
    }
    fn remove(&self, _name: &str) -> Result<bool> {
        Ok(false)
    }
    fn list(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        let n = self.0.counter.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemIncoming {
            name: format!("mail-{n}"),
            data: Vec::new(),
            spool: self.0.clone(),
        }))
    }
}

impl SpoolRepository for Handle {
    fn lease(&self, _wait: Duration) -> Result<Option<Leased>> {
        Ok(None)
    }
    fn renew(&self, token: &LeaseToken) -> Result<LeaseToken> {
        Err(StoreError::LeaseLost(token.name().into()))
    }
    fn update(&self, token: &LeaseToken, _mail: &Mail) -> Result<()> {
        Err(StoreError::LeaseLost(token.name().into()))
    }
    fn release(&self, token: LeaseToken) -> Result<()> {
        Err(StoreError::LeaseLost(token.name().into()))
    }
    fn requeue(&self, token: LeaseToken, _mail: &Mail, _at: SystemTime) -> Result<()> {
        Err(StoreError::LeaseLost(token.name().into()))
    }
    fn complete(&self, token: LeaseToken) -> Result<()> {
        Err(StoreError::LeaseLost(token.name().into()))
    }
    fn next_attempt(&self, _name: &str) -> Result<Option<SystemTime>> {
        Ok(None)
    }
    fn make_due(&self, _name: &str) -> Result<bool> {
        Ok(false)
    }
}

/// Reads one (possibly multi-line) reply.
async fn reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "connection closed; got {all:?}");
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

#[tokio::test]
async fn accepts_a_mail_only_after_commit_and_says_421_on_shutdown() {
    let settings = Arc::new(SmtpSettings {
        hello_name: "mx.test".into(),
        is_local_domain: Arc::new(|d| d == "mx.test"),
        ..SmtpSettings::default()
    });
    let mem = Arc::new(MemSpool::default());
    let spool: Arc<dyn mailroom_store::SpoolRepository> =
        Arc::new(Blocking::new(Handle(mem.clone())));
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(mailroom_smtp::serve(
        listener,
        settings,
        spool,
        shutdown.watch(),
    ));

    let mut client = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(
        reply(&mut client).await,
        "220 mx.test ESMTP Mailroom ready\r\n"
    );
    // Pipelined envelope: all three replies come back.
    client
        .get_mut()
        .write_all(
            b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n",
        )
        .await
        .unwrap();
    assert!(reply(&mut client)
        .await
        .contains("250 ENHANCEDSTATUSCODES\r\n"));
    assert_eq!(reply(&mut client).await, "250 2.1.0 Sender ok\r\n");
    assert_eq!(reply(&mut client).await, "250 2.1.5 Recipient ok\r\n");
    assert!(reply(&mut client).await.starts_with("354 "));
    client
        .get_mut()
        .write_all(b"Subject: test\r\n\r\nHello\r\n..\r\n.\r\nNOOP\r\n")
        .await
        .unwrap();
    let accepted = reply(&mut client).await;
    assert_eq!(
        accepted,
        "250 2.0.0 Message accepted for delivery (id mail-0)\r\n"
    );
    {
        // The 250 arrived, so the (slow) commit must already be done.
        let committed = mem.committed.lock().unwrap();
        assert_eq!(committed.len(), 1);
        let (envelope, data) = &committed[0];
        assert_eq!(envelope.recipients[0].to_string(), "b@mx.test");
        assert_eq!(
            envelope.sender.as_ref().unwrap().to_string(),
            "a@client.test"
        );
        assert_eq!(envelope.remote_addr, "127.0.0.1");
        assert_eq!(envelope.remote_host, "client.test");
        assert_eq!(envelope.state, "root");
        let text = String::from_utf8_lossy(data);
        assert!(text.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Mailroom) with ESMTP id mail-0\r\n\tfor <b@mx.test>;\r\n\t"), "{text}");
        assert!(
            text.ends_with(" +0000\r\nSubject: test\r\n\r\nHello\r\n.\r\n"),
            "{text}"
        );
    }
    assert_eq!(reply(&mut client).await, "250 2.0.0 Ok\r\n");

    // Shutdown: the idle session says 421 and closes; the server drains.
    tokio::time::timeout(Duration::from_secs(10), shutdown.wait())
        .await
        .expect("sessions drained");
    assert_eq!(
        reply(&mut client).await,
        "421 4.3.2 mx.test Service shutting down\r\n"
    );
    let mut rest = String::new();
    assert_eq!(client.read_line(&mut rest).await.unwrap(), 0);
    server.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

/// A server with `settings` and an empty in-memory spool on a free loopback port.
fn serve_on_loopback(settings: Arc<SmtpSettings>) -> (std::net::SocketAddr, Shutdown) {
    let spool: Arc<dyn mailroom_store::SpoolRepository> =
        Arc::new(Blocking::new(Handle(Arc::default())));
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(mailroom_smtp::serve(
        listener,
        settings,
        spool,
        shutdown.watch(),
    ));
    (addr, shutdown)
}

#[tokio::test]
async fn idle_clients_time_out_with_421() {
    let settings = Arc::new(SmtpSettings {
        hello_name: "mx.test".into(),
        connection_timeout: Duration::from_millis(200),
        ..SmtpSettings::default()
    });
    let (addr, shutdown) = serve_on_loopback(settings);
    let mut client = BufReader::new(TcpStream::connect(addr).await.unwrap());
    reply(&mut client).await;
    client.get_mut().write_all(b"NOOP\r\n").await.unwrap();
    assert_eq!(reply(&mut client).await, "250 2.0.0 Ok\r\n");
    assert_eq!(
        reply(&mut client).await,
        "421 4.4.2 mx.test Error: timeout exceeded\r\n"
    );
    shutdown.wait().await;
}

/// Accepts `alice`/`pw`; `sales@mx.test` is an alias of hers.
struct Alice;

#[async_trait::async_trait]
impl mailroom_smtp::Authenticator for Alice {
    async fn authenticate(&self, user: &str, password: &str) -> mailroom_smtp::AuthVerdict {
        match (user, password) {
            ("alice", "pw") => mailroom_smtp::AuthVerdict::Accepted("alice".into()),
            _ => mailroom_smtp::AuthVerdict::Rejected,
        }
    }

    async fn may_send_as(
        &self,
        _user: &str,
        sender: &mailroom_mailet::MailAddress,
    ) -> mailroom_smtp::SenderVerdict {
        match sender.local_part() {
            "sales" => mailroom_smtp::SenderVerdict::Own,
            _ => mailroom_smtp::SenderVerdict::NotOwn,
        }
    }
}

/// A MAIL FROM with `SIZE=` (every client sends it) that also needs the identity check
/// (`<verifyIdentity>`, an alias): both checks run and the MAIL is answered, also when the
/// client waits for the reply before sending more.
#[tokio::test]
async fn a_sized_mail_from_needing_the_identity_check_is_answered() {
    let settings = Arc::new(SmtpSettings {
        hello_name: "mx.test".into(),
        is_local_domain: Arc::new(|d| d == "mx.test"),
        auth: mailroom_smtp::AuthPolicy::Announce,
        authenticator: Some(Arc::new(Alice)),
        require_tls_for_auth: false,
        ..SmtpSettings::default()
    });
    let (addr, shutdown) = serve_on_loopback(settings);
    let mut client = BufReader::new(TcpStream::connect(addr).await.unwrap());
    reply(&mut client).await;
    assert!(cmd(&mut client, "EHLO client.test")
        .await
        .starts_with("250"));
    // "\0alice\0pw"
    assert!(cmd(&mut client, "AUTH PLAIN AGFsaWNlAHB3")
        .await
        .starts_with("235"));
    assert_eq!(
        cmd(&mut client, "MAIL FROM:<sales@mx.test> SIZE=100").await,
        "250 2.1.0 Sender ok\r\n"
    );
    assert!(cmd(&mut client, "RSET").await.starts_with("250"));
    assert!(cmd(&mut client, "MAIL FROM:<bob@mx.test> SIZE=100")
        .await
        .starts_with("553 5.7.1"));
    shutdown.wait().await;
}

/// Sends one command line and reads its reply.
async fn cmd(client: &mut BufReader<TcpStream>, line: &str) -> String {
    let line = format!("{line}\r\n");
    client.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(client).await
}
