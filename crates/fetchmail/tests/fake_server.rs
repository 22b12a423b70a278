//! The FetchMail task against a scripted POP3 server written here: the happy path, the
//! never-lose / never-repeat rules, and a server that misbehaves (lying sizes, an unterminated
//! or cut RETR, `-ERR` to DELE, overlong lines).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use mailroom_config::Config;
use mailroom_fetchmail::task::Task;
use mailroom_fetchmail::{Env, Summary};
use mailroom_mailet::Mail;
use mailroom_store::file::{FileUsersRepository, LogSpool};
use mailroom_store::{
    Blocking, IncomingMessage, LeaseToken, Leased, MailRepository, Result as StoreResult,
    SpoolRepository, User, UsersRepository,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the fake server misbehaves.
#[derive(Clone, Copy, Default, PartialEq)]
enum Quirk {
    #[default]
    None,
    /// LIST says 10 octets, RETR sends 3 MB.
    LyingSize,
    /// RETR of message 2 sends part of it and closes.
    CutRetr,
    /// RETR of message 2 never sends the final `.` line (and then stalls).
    Unterminated,
    /// DELE answers `-ERR`.
    DeleRefused,
    /// The connection drops right after the first DELE's `+OK` (a crash before QUIT).
    DropAfterDele,
    /// The greeting is a 10 kB line.
    LongGreeting,
}

#[derive(Default)]
struct Mailbox {
    messages: Vec<(String, Vec<u8>)>,
    commands: Vec<String>,
}

async fn fake_server(mailbox: Arc<Mutex<Mailbox>>, quirk: Quirk) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let (r, mut w) = socket.into_split();
                let mut r = BufReader::new(r);
                if quirk == Quirk::LongGreeting {
                    let _ = w
                        .write_all(format!("+OK {}\r\n", "x".repeat(10_000)).as_bytes())
                        .await;
                } else {
                    let _ = w.write_all(b"+OK fake ready\r\n").await;
                }
                let mut deleted = BTreeSet::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_string();
                    mailbox.lock().unwrap().commands.push(cmd.clone());
                    let mut words = cmd.split(' ');
                    let verb = words.next().unwrap_or("").to_ascii_uppercase();
                    let arg: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    // Only what the command needs (a mailbox may hold 100,000 messages).
                    let count = mailbox.lock().unwrap().messages.len();
                    let one = (1..=count)
                        .contains(&arg)
                        .then(|| mailbox.lock().unwrap().messages[arg - 1].1.clone());
                    let reply: Vec<u8> = match verb.as_str() {
                        "CAPA" => b"+OK\r\nUIDL\r\nUSER\r\n.\r\n".to_vec(),
                        "USER" | "PASS" | "NOOP" => b"+OK\r\n".to_vec(),
                        "UIDL" => {
                            let mut s = String::from("+OK\r\n");
                            for (i, (uid, _)) in mailbox.lock().unwrap().messages.iter().enumerate()
                            {
                                if !deleted.contains(&(i + 1)) {
                                    s += &format!("{} {uid}\r\n", i + 1);
                                }
                            }
                            (s + ".\r\n").into_bytes()
                        }
                        "LIST" => {
                            let mut s = String::from("+OK\r\n");
                            for (i, (_, m)) in mailbox.lock().unwrap().messages.iter().enumerate() {
                                let size = if quirk == Quirk::LyingSize {
                                    10
                                } else {
                                    m.len()
                                };
                                if !deleted.contains(&(i + 1)) {
                                    s += &format!("{} {size}\r\n", i + 1);
                                }
                            }
                            (s + ".\r\n").into_bytes()
                        }
                        "RETR" if one.is_some() => {
                            let m = one.as_ref().expect("checked");
                            let mut out = b"+OK\r\n".to_vec();
                            match quirk {
                                Quirk::LyingSize => {
                                    out.extend_from_slice(&m[..m.len() / 2]);
                                    out.extend(std::iter::repeat_n(b'y', 3 << 20));
                                    out.extend_from_slice(b"\r\n.\r\n");
                                }
                                Quirk::CutRetr if arg == 2 => {
                                    out.extend_from_slice(&m[..m.len() / 2]);
                                    let _ = w.write_all(&out).await;
                                    return;
                                }
                                Quirk::Unterminated if arg == 2 => {
                                    out.extend_from_slice(m);
                                    let _ = w.write_all(&out).await;
                                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                                    return;
                                }
                                _ => {
                                    for l in m.split_inclusive(|&b| b == b'\n') {
                                        if l.starts_with(b".") {
                                            out.push(b'.');
                                        }
                                        out.extend_from_slice(l);
                                    }
                                    out.extend_from_slice(b".\r\n");
                                }
                            }
                            out
                        }
                        "DELE" if quirk == Quirk::DeleRefused => b"-ERR cannot\r\n".to_vec(),
                        "DELE" => {
                            deleted.insert(arg);
                            if quirk == Quirk::DropAfterDele {
                                let _ = w.write_all(b"+OK\r\n").await;
                                return;
                            }
                            b"+OK\r\n".to_vec()
                        }
                        "QUIT" => {
                            {
                                let mut mb = mailbox.lock().unwrap();
                                let kept: Vec<_> = mb
                                    .messages
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, _)| !deleted.contains(&(i + 1)))
                                    .map(|(_, m)| m.clone())
                                    .collect();
                                mb.messages = kept;
                            }
                            let _ = w.write_all(b"+OK bye\r\n").await;
                            return;
                        }
                        _ => b"-ERR unknown\r\n".to_vec(),
                    };
                    if w.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

const SPOOL: &str = r#"<spoolmanager><processor name="root"><mailet match="All" class="Null"/></processor><processor name="error"><mailet match="All" class="Null"/></processor></spoolmanager>"#;

struct Fixture {
    dir: tempfile::TempDir,
    spool: Arc<dyn SpoolRepository>,
    users: Arc<dyn UsersRepository>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spool: Arc<dyn SpoolRepository> = Arc::new(Blocking::new(
            LogSpool::open(&dir.path().join("spool")).unwrap(),
        ));
        let users: Arc<dyn UsersRepository> = Arc::new(Blocking::new(
            FileUsersRepository::open(&dir.path().join("users")).unwrap(),
        ));
        Fixture { dir, spool, users }
    }

    /// A task from `<fetch>` children (host, port, interval and accounts given here).
    fn task(&self, port: u16, accounts: &str, extra: &str) -> Task {
        self.task_with(port, accounts, extra, self.spool.clone())
    }

    /// [`Fixture::task`] with another spool.
    fn task_with(
        &self,
        port: u16,
        accounts: &str,
        extra: &str,
        spool: Arc<dyn SpoolRepository>,
    ) -> Task {
        let xml = format!(
            "<config><fetchmail enabled=\"true\"><fetch name=\"fake\"><host>127.0.0.1</host>\
             <port>{port}</port><interval>60000</interval><accounts>{accounts}</accounts>\
             <javaMailProperties><property name=\"mail.pop3.timeout\" value=\"2000\"/></javaMailProperties>\
             {extra}</fetch></fetchmail>{SPOOL}</config>"
        );
        let config = Config::from_str_with_name(&xml, "config.xml", self.dir.path(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let task = config.fetchmail.unwrap().tasks.remove(0);
        let env = Arc::new(Env {
            spool,
            users: self.users.clone(),
            is_local_domain: Arc::new(|d: &str| d == "localhost"),
            state_dir: self.dir.path().join("var/fetchmail"),
            default_domain: "localhost".into(),
        });
        // No system bundle is needed for plain POP3; a CA file keeps the test hermetic.
        let ca = self.dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let mut task = task;
        task.ca_file = Some(ca);
        Task::new(task, env).unwrap()
    }

    async fn spooled(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for name in self.spool.list().await.unwrap() {
            let mail = self.spool.retrieve(&name).await.unwrap().unwrap();
            out.push(mail.message.to_bytes().unwrap());
        }
        out
    }

    async fn add_user(&self, name: &str) {
        self.users.add(&User::new(name, "pw")).await.unwrap();
    }
}

fn message(to: &str, subject: &str) -> Vec<u8> {
    format!("From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.leading dot\r\n")
        .into_bytes()
}

fn mailbox(msgs: &[(&str, Vec<u8>)]) -> Arc<Mutex<Mailbox>> {
    Arc::new(Mutex::new(Mailbox {
        messages: msgs
            .iter()
            .map(|(u, m)| (u.to_string(), m.clone()))
            .collect(),
        commands: Vec::new(),
    }))
}

const ACCOUNT: &str =
    r#"<account user="u" password="p" recipient="alice@localhost" ignorercpt-header="true"/>"#;

fn commands(mb: &Arc<Mutex<Mailbox>>, verb: &str) -> usize {
    mb.lock()
        .unwrap()
        .commands
        .iter()
        .filter(|c| c.starts_with(verb))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_and_deletes_after_commit() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[
        ("u1", message("x@y.org", "one")),
        ("u2", message("x@y.org", "two")),
    ]);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let task = f.task(port, ACCOUNT, "");
    let s = task.run_once().await;
    assert_eq!(
        s,
        Summary {
            accounts_ok: 1,
            fetched: 2,
            ..Summary::default()
        }
    );
    let spooled = f.spooled().await;
    assert_eq!(spooled.len(), 2);
    let text =
        String::from_utf8_lossy(&spooled[0]).to_string() + &String::from_utf8_lossy(&spooled[1]);
    assert!(
        text.starts_with("X-fetched-from: fake\r\nFrom: sender@example.org"),
        "{text}"
    );
    assert!(
        text.contains("\r\n.leading dot\r\n") && !text.contains("..leading"),
        "{text}"
    );
    assert!(mb.lock().unwrap().messages.is_empty(), "deleted at QUIT");
    let mail = f
        .spool
        .retrieve(&f.spool.list().await.unwrap()[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mail.envelope.recipients[0].to_string(), "alice@localhost");
    assert_eq!(
        mail.envelope.sender.unwrap().to_string(),
        "sender@example.org"
    );
    assert!(mail
        .envelope
        .attributes
        .contains_key("org.apache.james.fetchmail.taskName"));
}

#[tokio::test(flavor = "multi_thread")]
async fn leave_on_server_never_fetches_twice_even_after_restart() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[("u1", message("x@y.org", "one"))]);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let keep = r#"<fetched leaveonserver="true" markseen="false"/>"#;
    assert_eq!(f.task(port, ACCOUNT, keep).run_once().await.fetched, 1);
    assert_eq!(
        f.task(port, ACCOUNT, keep).run_once().await.fetched,
        0,
        "restart"
    );
    mb.lock()
        .unwrap()
        .messages
        .push(("u2".into(), message("x@y.org", "two")));
    assert_eq!(
        f.task(port, ACCOUNT, keep).run_once().await.fetched,
        1,
        "only the new one"
    );
    assert_eq!(f.spooled().await.len(), 2);
    assert_eq!(commands(&mb, "DELE"), 0);
    // A vanished UID is forgotten.
    mb.lock().unwrap().messages.remove(0);
    f.task(port, ACCOUNT, keep).run_once().await;
    let record = std::fs::read_to_string(f.dir.path().join("var/fetchmail/fake/u.uidl")).unwrap();
    assert_eq!(record.trim(), "D u2");
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_before_quit_refetches_nothing() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[
        ("u1", message("x@y.org", "one")),
        ("u2", message("x@y.org", "two")),
    ]);
    let port = fake_server(mb.clone(), Quirk::DropAfterDele).await;
    let s = f.task(port, ACCOUNT, "").run_once().await;
    assert_eq!((s.fetched, s.accounts_failed), (1, 1));
    assert_eq!(
        mb.lock().unwrap().messages.len(),
        2,
        "no QUIT: nothing deleted"
    );
    // Next run (a good server now): u1 is only deleted, u2 fetched.
    let port = fake_server(mb.clone(), Quirk::None).await;
    let s = f.task(port, ACCOUNT, "").run_once().await;
    assert_eq!(s.fetched, 1);
    assert_eq!(f.spooled().await.len(), 2, "u1 once, u2 once");
    assert!(mb.lock().unwrap().messages.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_servers_lose_nothing_and_store_nothing_half() {
    for quirk in [
        Quirk::LyingSize,
        Quirk::CutRetr,
        Quirk::Unterminated,
        Quirk::LongGreeting,
    ] {
        let f = Fixture::new();
        f.add_user("alice").await;
        let mb = mailbox(&[
            ("u1", message("x@y.org", "one")),
            ("u2", message("x@y.org", "two")),
        ]);
        let port = fake_server(mb.clone(), quirk).await;
        let s = f.task(port, ACCOUNT, "").run_once().await;
        assert_eq!(s.accounts_failed, 1);
        let spooled = f.spooled().await;
        // Only whole messages, each one committed before its DELE.
        for m in &spooled {
            assert!(String::from_utf8_lossy(m).ends_with(".leading dot\r\n"));
        }
        assert_eq!(
            mb.lock().unwrap().messages.len(),
            2,
            "no QUIT, nothing deleted"
        );
        assert!(spooled.len() <= 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dele_refused_keeps_going_and_never_refetches() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[("u1", message("x@y.org", "one"))]);
    let port = fake_server(mb.clone(), Quirk::DeleRefused).await;
    assert_eq!(f.task(port, ACCOUNT, "").run_once().await.fetched, 1);
    assert_eq!(f.task(port, ACCOUNT, "").run_once().await.fetched, 0);
    assert_eq!(commands(&mb, "DELE"), 2, "deleted again, not fetched again");
    assert_eq!(commands(&mb, "RETR"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn recipient_rules_and_filters() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let header_rcpt = r#"<account user="u" password="p" recipient="postmaster@localhost" ignorercpt-header="false"/>"#;
    let mb = mailbox(&[
        ("u1", message("alice@localhost", "to alice")),
        ("u2", message("nobody@localhost", "undefined user")),
        ("u3", message("someone@remote.example", "remote")),
        ("u4", message("wibble@localhost", "blacklisted")),
        ("u5", b"From: a@b.org\r\nTo: a@localhost, b@localhost\r\n\r\nx\r\n".to_vec()),
        ("u6", b"Received: from mx by us for <alice@localhost>; now\r\nFrom: a@b.org\r\nTo: a@localhost, b@localhost\r\n\r\nx\r\n".to_vec()),
    ]);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let extra = r#"<blacklist reject="true" leaveonserver="false" markseen="false">wibble@localhost</blacklist>
        <userundefined reject="true" leaveonserver="true" markseen="true"/>
        <remoterecipient reject="true" leaveonserver="true" markseen="false"/>
        <recipientnotfound reject="true" leaveonserver="true" markseen="false"/>"#;
    let s = f.task(port, header_rcpt, extra).run_once().await;
    assert_eq!((s.fetched, s.rejected), (2, 4));
    let left: Vec<String> = mb
        .lock()
        .unwrap()
        .messages
        .iter()
        .map(|m| m.0.clone())
        .collect();
    assert_eq!(
        left,
        ["u2", "u3", "u5"],
        "blacklisted deleted, the others left"
    );
    // Second run: u2 was marked seen (skipped); u3 and u5 are looked at again.
    let retr_before = commands(&mb, "RETR");
    f.task(port, header_rcpt, extra).run_once().await;
    assert_eq!(commands(&mb, "RETR") - retr_before, 2);
    // Not rejected: marked with James's attributes instead.
    let f2 = Fixture::new();
    let mb = mailbox(&[("u1", message("ghost@localhost", "undefined"))]);
    let port = fake_server(mb, Quirk::None).await;
    let s = f2
        .task(port, header_rcpt, r#"<userundefined reject="false"/>"#)
        .run_once()
        .await;
    assert_eq!(s.fetched, 1);
    let name = f2.spool.list().await.unwrap().remove(0);
    let mail = f2.spool.retrieve(&name).await.unwrap().unwrap();
    assert!(mail
        .envelope
        .attributes
        .contains_key("org.apache.james.fetchmail.isUserUndefined"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bouncing_mail_goes_to_error() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let looped = b"X-fetched-from: fake\r\nX-fetched-from: fake\r\nX-fetched-from: fake\r\nFrom: a@b.org\r\n\r\nx\r\n".to_vec();
    let mb = mailbox(&[("u1", looped)]);
    let port = fake_server(mb, Quirk::None).await;
    f.task(port, ACCOUNT, "").run_once().await;
    let name = f.spool.list().await.unwrap().remove(0);
    let mail = f.spool.retrieve(&name).await.unwrap().unwrap();
    assert_eq!(mail.envelope.state, "error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uid_listed_twice_never_deletes_an_unfetched_message() {
    // A server that gives two different messages the same UID: the second is not "already
    // fetched" (deleting it unread would lose it); without a usable UID both are fetched.
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[
        ("dup", message("x@y.org", "one")),
        ("dup", message("x@y.org", "two")),
    ]);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let s = f.task(port, ACCOUNT, "").run_once().await;
    assert_eq!((s.fetched, s.accounts_ok), (2, 1));
    let spooled = f.spooled().await;
    let text: String = spooled.iter().map(|m| String::from_utf8_lossy(m)).collect();
    assert!(
        text.contains("Subject: one") && text.contains("Subject: two"),
        "{text}"
    );
    assert!(mb.lock().unwrap().messages.is_empty());
}

/// `n` one-line messages `u1`..`un`, and a UIDL record saying all but the last `fresh` of the
/// first `recorded` were delivered (as a long-running `leaveonserver` account's would).
fn huge_mailbox(f: &Fixture, n: usize, recorded: usize, fresh: usize) -> Arc<Mutex<Mailbox>> {
    let body = b"From: s@example.org\r\nTo: x@y.org\r\n\r\nhi\r\n".to_vec();
    let messages = (1..=n).map(|i| (format!("u{i}"), body.clone())).collect();
    let record: String = (1..=recorded - fresh)
        .map(|i| format!("D u{i}\n"))
        .collect();
    let path = f.dir.path().join("var/fetchmail/fake/u.uidl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, record).unwrap();
    Arc::new(Mutex::new(Mailbox {
        messages,
        commands: Vec::new(),
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_of_100000_messages_is_handled_in_one_quick_session() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = huge_mailbox(&f, 100_000, 100_000, 5);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let keep = r#"<fetched leaveonserver="true" markseen="false"/>"#;
    let started = std::time::Instant::now();
    let s = f.task(port, ACCOUNT, keep).run_once().await;
    assert_eq!((s.fetched, s.accounts_ok), (5, 1), "{s:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(commands(&mb, "RETR"), 5);
    let record = std::fs::read_to_string(f.dir.path().join("var/fetchmail/fake/u.uidl")).unwrap();
    assert_eq!(record.lines().count(), 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_over_the_listing_cap_is_fetched_in_parts() {
    use mailroom_fetchmail::client::MAX_MESSAGES;
    let f = Fixture::new();
    f.add_user("alice").await;
    // Past the cap: the session handles the first MAX_MESSAGES, the rest wait.
    let mb = huge_mailbox(&f, MAX_MESSAGES + 3, MAX_MESSAGES, 2);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let keep = r#"<fetched leaveonserver="true" markseen="false"/>"#;
    let s = f.task(port, ACCOUNT, keep).run_once().await;
    assert_eq!((s.fetched, s.accounts_ok), (2, 1), "{s:?}");
    // The record is not rewritten from a partial listing: nothing recorded is forgotten.
    let record = std::fs::read_to_string(f.dir.path().join("var/fetchmail/fake/u.uidl")).unwrap();
    assert_eq!(record.lines().count(), MAX_MESSAGES);
}

/// The fixture's spool, whose `n`th commit (counting from 1) fails.
struct FailingCommit {
    inner: Arc<dyn SpoolRepository>,
    commits: Arc<std::sync::atomic::AtomicUsize>,
    fail_at: usize,
}

struct FailingIncoming {
    inner: Box<dyn IncomingMessage>,
    fail: bool,
}

#[async_trait::async_trait]
impl IncomingMessage for FailingIncoming {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn write(&mut self, octets: &[u8]) -> std::io::Result<()> {
        self.inner.write(octets).await
    }
    async fn commit(self: Box<Self>, envelope: mailroom_mailet::Envelope) -> StoreResult<()> {
        if self.fail {
            return Err(std::io::Error::other("disk full (test)").into());
        }
        self.inner.commit(envelope).await
    }
}

#[async_trait::async_trait]
impl MailRepository for FailingCommit {
    async fn store(&self, mail: &Mail) -> StoreResult<()> {
        self.inner.store(mail).await
    }
    async fn retrieve(&self, name: &str) -> StoreResult<Option<Mail>> {
        self.inner.retrieve(name).await
    }
    async fn remove(&self, name: &str) -> StoreResult<bool> {
        self.inner.remove(name).await
    }
    async fn list(&self) -> StoreResult<Vec<String>> {
        self.inner.list().await
    }
    async fn incoming(&self) -> StoreResult<Box<dyn IncomingMessage>> {
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        Ok(Box::new(FailingIncoming {
            inner: self.inner.incoming().await?,
            fail: n == self.fail_at,
        }))
    }
}

#[async_trait::async_trait]
impl SpoolRepository for FailingCommit {
    async fn lease(&self, wait: std::time::Duration) -> StoreResult<Option<Leased>> {
        self.inner.lease(wait).await
    }
    async fn renew(&self, token: &LeaseToken) -> StoreResult<LeaseToken> {
        self.inner.renew(token).await
    }
    async fn update(&self, token: &LeaseToken, mail: &Mail) -> StoreResult<()> {
        self.inner.update(token, mail).await
    }
    async fn release(&self, token: LeaseToken) -> StoreResult<()> {
        self.inner.release(token).await
    }
    async fn requeue(
        &self,
        token: LeaseToken,
        mail: &Mail,
        at: std::time::SystemTime,
    ) -> StoreResult<()> {
        self.inner.requeue(token, mail, at).await
    }
    async fn complete(&self, token: LeaseToken) -> StoreResult<()> {
        self.inner.complete(token).await
    }
    async fn next_attempt(&self, name: &str) -> StoreResult<Option<std::time::SystemTime>> {
        self.inner.next_attempt(name).await
    }
    async fn make_due(&self, name: &str) -> StoreResult<bool> {
        self.inner.make_due(name).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_spool_commit_deletes_nothing_and_the_next_run_fetches_it() {
    let f = Fixture::new();
    f.add_user("alice").await;
    let mb = mailbox(&[
        ("u1", message("x@y.org", "one")),
        ("u2", message("x@y.org", "two")),
        ("u3", message("x@y.org", "three")),
    ]);
    let port = fake_server(mb.clone(), Quirk::None).await;
    let failing: Arc<dyn SpoolRepository> = Arc::new(FailingCommit {
        inner: f.spool.clone(),
        commits: Arc::default(),
        fail_at: 2,
    });
    let s = f.task_with(port, ACCOUNT, "", failing).run_once().await;
    assert_eq!((s.fetched, s.accounts_failed), (1, 1), "{s:?}");
    assert_eq!(commands(&mb, "QUIT"), 0, "the session ends without QUIT");
    assert_eq!(mb.lock().unwrap().messages.len(), 3, "nothing deleted");
    assert_eq!(f.spooled().await.len(), 1, "nothing half-stored");
    // The next interval: u1 (recorded) only deleted, u2 and u3 fetched.
    let s = f.task(port, ACCOUNT, "").run_once().await;
    assert_eq!((s.fetched, s.accounts_ok), (2, 1), "{s:?}");
    assert_eq!(commands(&mb, "RETR"), 4);
    assert_eq!(f.spooled().await.len(), 3);
    assert!(mb.lock().unwrap().messages.is_empty());
}
