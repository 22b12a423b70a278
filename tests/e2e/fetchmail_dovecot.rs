//! FetchMail against Dovecot's POP3 server (`../shared/peers/dovecot-pop3.sh`, over a Maildir
//! tree on loopback): plain, STLS (required) and POP3S with certificate verification;
//! `leaveonserver` true and false across a restart; `markseen`; the recipient rules;
//! `<alllocal>`; `<blacklist>` and `<userundefined>` with `reject` true and false and the
//! attributes reaching `HasMailAttribute`; the stock `james-fetchmail.xml`; a kill -9 between
//! RETR and QUIT. Run by `.ci/run` (`--ignored`).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{free_port, maildir_messages, wait_for, Server, Setup, DEFAULT_TREE};

/// The peer script, in `../shared` beside the repository.
const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/peers/dovecot-pop3.sh"
);

/// `nobody:nogroup`, whom Dovecot reads and deletes the mail as.
const NOBODY: u32 = 65534;

/// A Dovecot POP3 server; stopped on drop (even when the test fails).
struct Dovecot {
    dir: tempfile::TempDir,
    port: u16,
    pop3s_port: u16,
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` accounts, their Maildirs empty.
    fn start(accounts: &[(&str, &str)]) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let passwd: String = accounts
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        for (user, _) in accounts {
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(dir.path().join("mail").join(user).join(sub)).unwrap();
            }
        }
        let (port, pop3s_port) = (free_port(), free_port());
        let dovecot = Dovecot {
            dir,
            port,
            pop3s_port,
        };
        let out = Command::new("bash")
            .arg(PEER)
            .arg(dovecot.dir.path())
            .arg(port.to_string())
            .arg(pop3s_port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dovecot-pop3.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("Dovecot's ports", || {
            [port, pop3s_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        dovecot
    }

    /// Puts a message into `user`'s Maildir (as a delivery agent would).
    fn deliver(&self, user: &str, name: &str, message: &[u8]) {
        let dir = self.dir.path().join("mail").join(user);
        let tmp = dir.join("tmp").join(name);
        std::fs::write(&tmp, message).unwrap();
        std::os::unix::fs::chown(&tmp, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::rename(&tmp, dir.join("new").join(name)).unwrap();
    }

    /// Messages left in `user`'s mailbox.
    fn count(&self, user: &str) -> usize {
        ["new", "cur"]
            .iter()
            .map(|d| {
                std::fs::read_dir(self.dir.path().join("mail").join(user).join(d))
                    .map_or(0, |r| r.count())
            })
            .sum()
    }

    /// The certificate Dovecot serves (self-signed, for `localhost` and 127.0.0.1).
    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// How many logins Dovecot logged, and how many of them over TLS.
    fn logins(&self) -> (usize, usize) {
        let log = self.log();
        let logins: Vec<&str> = log.lines().filter(|l| l.contains(" Login: ")).collect();
        let tls = logins.iter().filter(|l| l.contains(", TLS")).count();
        (logins.len(), tls)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("run/master.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            // The master removes its pid file when it is gone.
            for _ in 0..100 {
                if !self.dir.path().join("run/master.pid").exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A `<fetch>` task against 127.0.0.1: `props` are `<javaMailProperties>`, `body` the rest.
fn task(name: &str, port: u16, props: &str, body: &str) -> String {
    format!(
        r#"<fetch name="{name}">
      <host>127.0.0.1</host><port>{port}</port><interval>3600000</interval>
      <javaMailProperties>{props}</javaMailProperties>
      {body}
    </fetch>"#
    )
}

const NO_STLS: &str = r#"<property name="mail.pop3.starttls.enable" value="false"/>"#;

/// A message with these header fields.
fn message(fields: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: carol@example.net\r\n{fields}Subject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

/// Starts a Mailroom with these tasks and local users; returns once the start-up run of every
/// task is over (so that what a test puts on Dovecot afterwards is fetched by its own runs).
fn puller(tasks: &[String], users: &[&str], tree: &str) -> Server {
    let extra = format!(
        r#"<fetchmail enabled="true">{}</fetchmail>"#,
        tasks.concat()
    );
    let server = Server::start_setup(&Setup {
        tree,
        extra: &extra,
        ..Setup::default()
    });
    for user in users {
        server.add_user(user, "local secret");
    }
    wait_for("the start-up runs", || {
        server.log().matches("fetch run done").count() >= tasks.len()
    });
    server
}

/// `mailroom fetchmail run NAME`; its output line.
fn run(server: &Server, name: &str) -> String {
    let out = server.cli(&["fetchmail", "run", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inbox(server: &Server, user: &str) -> Vec<String> {
    maildir_messages(&server.path(&format!("var/mail/inboxes/{user}")))
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// Waits for `user` to hold `n` messages, and a moment more to see that no more come.
fn expect_inbox(server: &Server, user: &str, n: usize) -> Vec<String> {
    wait_for(&format!("{n} messages for {user}"), || {
        inbox(server, user).len() >= n
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = inbox(server, user);
    let subjects: Vec<&str> = got
        .iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("Subject:")))
        .collect();
    assert_eq!(got.len(), n, "{user}: {subjects:?}\n{}", server.log());
    got
}

/// The log lines of messages `task` handled.
fn fetched_lines(server: &Server, task: &str) -> usize {
    let key = format!("task={task} ");
    server
        .log()
        .lines()
        .filter(|l| l.contains("fetched message") && l.contains(&key))
        .count()
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn plain_pop3_fetches_and_deletes_on_dovecot() {
    let dovecot = Dovecot::start(&[("alice", "a secret")]);
    let account = r#"<accounts><account user="alice" password="a secret" recipient="bob@localhost" ignorercpt-header="true"/></accounts>
      <fetched leaveonserver="false" markseen="false"/>"#;
    let server = puller(
        &[task("plain", dovecot.port, NO_STLS, account)],
        &["bob"],
        DEFAULT_TREE,
    );
    for i in 0..3 {
        dovecot.deliver(
            "alice",
            &format!("m{i}"),
            &message("To: x@example.net\r\n", &format!("m{i}")),
        );
    }
    let out = run(&server, "plain");
    assert!(
        out.contains("fetched=3") && out.contains("accounts_failed=0"),
        "{out}"
    );
    for m in expect_inbox(&server, "bob", 3) {
        assert!(m.contains("\nX-fetched-from: plain\n"), "{m}");
    }
    assert_eq!(dovecot.count("alice"), 0, "deleted on Dovecot");
    assert!(run(&server, "plain").contains("fetched=0"));
    let (logins, tls) = dovecot.logins();
    assert!(logins >= 2 && tls == 0, "plain POP3: {}", dovecot.log());
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn stls_required_keeps_mail_and_never_fetches_it_twice_across_a_restart() {
    let dovecot = Dovecot::start(&[("alice", "a secret")]);
    let props = r#"<property name="mail.pop3.starttls.required" value="true"/>"#;
    let account = r#"<accounts><account user="alice" password="a secret" recipient="bob@localhost" ignorercpt-header="true"/></accounts>
      <fetched leaveonserver="true" markseen="false"/>"#;
    let verified = format!("<cafile>{}</cafile>{account}", dovecot.ca().display());
    let mut server = puller(
        &[
            task("stls", dovecot.port, props, &verified),
            // The system bundle does not know Dovecot's self-signed certificate.
            task("unverified", dovecot.port, props, account),
        ],
        &["bob"],
        DEFAULT_TREE,
    );
    dovecot.deliver("alice", "m1", &message("", "m1"));
    dovecot.deliver("alice", "m2", &message("", "m2"));
    let out = run(&server, "unverified");
    assert!(
        out.contains("accounts_failed=1") && out.contains("fetched=0"),
        "{out}"
    );
    let out = run(&server, "stls");
    assert!(
        out.contains("fetched=2") && out.contains("accounts_failed=0"),
        "{out}"
    );
    expect_inbox(&server, "bob", 2);
    assert_eq!(dovecot.count("alice"), 2, "left on Dovecot");
    let (logins, tls) = dovecot.logins();
    assert!(logins >= 1 && tls == logins, "STLS: {}", dovecot.log());
    assert!(run(&server, "stls").contains("fetched=0"));
    server.kill();
    server.spawn();
    wait_for("the start-up runs", || {
        server.log().matches("fetch run done").count() >= 6
    });
    assert!(run(&server, "stls").contains("fetched=0"));
    expect_inbox(&server, "bob", 2);
    assert_eq!(dovecot.count("alice"), 2);
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn pop3s_with_certificate_verification() {
    let dovecot = Dovecot::start(&[("alice", "a secret")]);
    let props = format!(
        r#"<property name="mail.pop3.port" value="{}"/>"#,
        dovecot.pop3s_port
    );
    let body = format!(
        r#"<javaMailProviderName>pop3s</javaMailProviderName><cafile>{}</cafile>
      <accounts><account user="alice" password="a secret" recipient="bob@localhost" ignorercpt-header="true"/></accounts>"#,
        dovecot.ca().display()
    );
    // No <port>: the port comes from mail.pop3.port.
    let pop3s = task("pop3s", 0, &props, &body).replace("<port>0</port>", "");
    let server = puller(&[pop3s], &["bob"], DEFAULT_TREE);
    dovecot.deliver("alice", "m1", &message("", "m1"));
    let out = run(&server, "pop3s");
    assert!(
        out.contains("fetched=1") && out.contains("accounts_failed=0"),
        "{out}"
    );
    expect_inbox(&server, "bob", 1);
    assert_eq!(dovecot.count("alice"), 0);
    let (logins, tls) = dovecot.logins();
    assert!(logins >= 1 && tls == logins, "POP3S: {}", dovecot.log());
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn markseen_on_a_rejected_message_left_on_dovecot() {
    let dovecot = Dovecot::start(&[("one", "pw1"), ("two", "pw2")]);
    let body = |user: &str, pw: &str, seen: bool| {
        format!(
            r#"<accounts><account user="{user}" password="{pw}" recipient="bob@localhost" ignorercpt-header="false"/></accounts>
      <blacklist reject="true" leaveonserver="true" markseen="{seen}">spam@localhost</blacklist>"#
        )
    };
    let server = puller(
        &[
            task("alpha", dovecot.port, NO_STLS, &body("one", "pw1", true)),
            task("beta", dovecot.port, NO_STLS, &body("two", "pw2", false)),
        ],
        &["bob", "spam"],
        DEFAULT_TREE,
    );
    for user in ["one", "two"] {
        dovecot.deliver(user, "m1", &message("To: spam@localhost\r\n", "m1"));
    }
    for _ in 0..2 {
        assert!(run(&server, "alpha").contains("rejected="));
        assert!(run(&server, "beta").contains("rejected="));
    }
    // Marked seen: looked at once, skipped after; not marked: looked at on every run.
    assert_eq!(fetched_lines(&server, "alpha"), 1, "{}", server.log());
    assert_eq!(fetched_lines(&server, "beta"), 2, "{}", server.log());
    assert_eq!((dovecot.count("one"), dovecot.count("two")), (1, 1));
    assert!(inbox(&server, "spam").is_empty());
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn recipient_rules_custom_header_received_for_single_to_and_default() {
    let dovecot = Dovecot::start(&[("alice", "pw"), ("dave", "pw")]);
    let body = r#"<accounts>
        <account user="alice" password="pw" recipient="erin@localhost" ignorercpt-header="false"/>
        <account user="dave" password="pw" recipient="erin@localhost" ignorercpt-header="false" customrcpt-header="X-Envelope-To"/>
      </accounts>
      <recipientnotfound defer="false" reject="false" leaveonserver="false" markseen="false"/>"#;
    let server = puller(
        &[task("rules", dovecot.port, NO_STLS, body)],
        &["bob", "carol", "erin"],
        DEFAULT_TREE,
    );
    dovecot.deliver(
        "alice",
        "received",
        &message(
            "Received: from mx.example.net by pop.example.net\r\n\tfor <bob@localhost>; Mon, 1 Dec 2025 10:00:00 +0000\r\nTo: list@example.net, other@example.net\r\n",
            "received",
        ),
    );
    dovecot.deliver(
        "alice",
        "single",
        &message("To: Carol <carol@localhost>\r\n", "single"),
    );
    dovecot.deliver(
        "alice",
        "many",
        &message("To: bob@localhost, carol@localhost\r\n", "many"),
    );
    dovecot.deliver(
        "dave",
        "custom",
        &message(
            "X-Envelope-To: carol@localhost\r\nTo: bob@localhost\r\n",
            "custom",
        ),
    );
    let out = run(&server, "rules");
    assert!(out.contains("fetched=4"), "{out}");
    let bob = expect_inbox(&server, "bob", 1);
    assert!(bob[0].contains("Subject: received"), "{bob:?}");
    let carol = expect_inbox(&server, "carol", 2);
    assert!(
        carol.iter().any(|m| m.contains("Subject: single")),
        "{carol:?}"
    );
    assert!(
        carol.iter().any(|m| m.contains("Subject: custom")),
        "{carol:?}"
    );
    let erin = expect_inbox(&server, "erin", 1);
    assert!(erin[0].contains("Subject: many"), "{erin:?}");
    assert_eq!(dovecot.count("alice") + dovecot.count("dave"), 0);
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn alllocal_fetches_one_remote_account_per_local_user() {
    let dovecot = Dovecot::start(&[("bob.remote", "shared"), ("carol.remote", "shared")]);
    let body = r#"<accounts><alllocal userprefix="" usersuffix=".remote" password="shared" recipientprefix="" recipientsuffix="@localhost" ignorercpt-header="true"/></accounts>"#;
    let server = puller(
        &[task("all", dovecot.port, NO_STLS, body)],
        &["bob", "carol"],
        DEFAULT_TREE,
    );
    dovecot.deliver(
        "bob.remote",
        "b",
        &message("To: x@example.net\r\n", "for-bob"),
    );
    dovecot.deliver(
        "carol.remote",
        "c",
        &message("To: x@example.net\r\n", "for-carol"),
    );
    let out = run(&server, "all");
    assert!(
        out.contains("fetched=2") && out.contains("accounts_ok=2"),
        "{out}"
    );
    assert!(expect_inbox(&server, "bob", 1)[0].contains("Subject: for-bob"));
    assert!(expect_inbox(&server, "carol", 1)[0].contains("Subject: for-carol"));
}

/// Routes mail carrying FetchMail's filter attributes to repositories.
const ATTRIBUTE_TREE: &str = r#"
    <processor name="root">
      <mailet match="HasMailAttribute=org.apache.james.fetchmail.isBlacklistedRecipient" class="ToRepository"><repositoryPath>file://var/mail/blacklisted/</repositoryPath></mailet>
      <mailet match="HasMailAttribute=org.apache.james.fetchmail.isUserUndefined" class="ToRepository"><repositoryPath>file://var/mail/undefined/</repositoryPath></mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/outgoing/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn blacklist_and_userundefined_reject_or_mark_for_matchers() {
    let dovecot = Dovecot::start(&[("strict", "pw"), ("lenient", "pw")]);
    let body = |user: &str, reject: bool| {
        format!(
            r#"<accounts><account user="{user}" password="pw" recipient="bob@localhost" ignorercpt-header="false"/></accounts>
      <blacklist reject="{reject}" leaveonserver="true" markseen="false">spam@localhost</blacklist>
      <userundefined reject="{reject}" leaveonserver="true" markseen="false"/>"#
        )
    };
    let server = puller(
        &[
            task("strict", dovecot.port, NO_STLS, &body("strict", true)),
            task("lenient", dovecot.port, NO_STLS, &body("lenient", false)),
        ],
        &["bob", "spam"],
        ATTRIBUTE_TREE,
    );
    for user in ["strict", "lenient"] {
        dovecot.deliver(user, "b", &message("To: spam@localhost\r\n", "blacklisted"));
        dovecot.deliver(user, "u", &message("To: ghost@localhost\r\n", "ghost"));
        dovecot.deliver(user, "ok", &message("To: bob@localhost\r\n", "fine"));
    }
    let out = run(&server, "strict");
    assert!(
        out.contains("fetched=1") && out.contains("rejected=2"),
        "{out}"
    );
    let log = server.log();
    assert!(log.contains("rejected: blacklisted recipient"), "{log}");
    assert!(log.contains("rejected: undefined user"), "{log}");
    assert_eq!(dovecot.count("strict"), 2, "rejected mail left on Dovecot");
    let out = run(&server, "lenient");
    assert!(
        out.contains("fetched=3") && out.contains("rejected=0"),
        "{out}"
    );
    assert_eq!(dovecot.count("lenient"), 0);
    let repo =
        |name: &str| crate::harness::repository_count(&server.path(&format!("var/mail/{name}")));
    wait_for("the marked mail in its repositories", || {
        repo("blacklisted") == 1 && repo("undefined") == 1
    });
    expect_inbox(&server, "bob", 2);
    assert!(inbox(&server, "spam").is_empty());
}

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn the_stock_james_fetchmail_xml_loads_and_fetches() {
    let dovecot = Dovecot::start(&[
        ("myglobalaccount", "password"),
        ("bob@myaccount", "password"),
    ]);
    let stock = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/james-2.3.2/apps/james/conf/james-fetchmail.xml"
    ))
    .unwrap();
    // What an administrator changes: enable it, name the server, its port and its certificate
    // (Dovecot offers STLS, which the stock file uses).
    let edited = stock
        .replacen(
            r#"<fetchmail enabled="false">"#,
            r#"<fetchmail enabled="true">"#,
            1,
        )
        .replacen(
            "<host>pop.server.com</host>",
            &format!(
                "<host>127.0.0.1</host><cafile>{}</cafile>",
                dovecot.ca().display()
            ),
            1,
        )
        .replacen(
            "<javaMailProperties>",
            &format!(
                r#"<javaMailProperties><property name="mail.pop3.port" value="{}"/>"#,
                dovecot.port
            ),
            1,
        );
    assert_ne!(edited, stock);
    let conf = tempfile::tempdir().unwrap();
    let included = conf.path().join("james-fetchmail.xml");
    std::fs::write(&included, edited).unwrap();
    let server = Server::start_edited(
        &Setup {
            extra: "&fetchmailConfig;",
            ..Setup::default()
        },
        |xml| {
            xml.replacen(
                "<config>",
                &format!(
                    "<!DOCTYPE config [\n<!ENTITY fetchmailConfig SYSTEM \"{}\">\n]>\n<config>",
                    included.display()
                ),
                1,
            )
        },
    );
    server.add_user("bob", "local secret");
    wait_for("the start-up run", || {
        server.log().contains("fetch run done")
    });
    // The stock file asks for a valid second Received: field (remotereceivedheader index=1).
    let received = "Received: from pop.server.com by localhost; Mon, 1 Dec 2025 10:00:00 +0000\r\n\
                    Received: from mx.example.net (mx.example.net [192.0.2.7]) by pop.server.com; Mon, 1 Dec 2025 09:59:00 +0000\r\n";
    dovecot.deliver(
        "myglobalaccount",
        "g",
        &message(&format!("{received}To: bob@localhost\r\n"), "global"),
    );
    dovecot.deliver("bob@myaccount", "b", &message(received, "alllocal"));
    let out = run(&server, "mydomain.com");
    assert!(
        out.contains("fetched=1")
            && out.contains("rejected=1")
            && out.contains("accounts_failed=0"),
        "{out}\n{}",
        server.log()
    );
    let bob = expect_inbox(&server, "bob", 1);
    assert!(bob[0].contains("Subject: global"), "{bob:?}");
    // <alllocal recipientsuffix="@mydomain.com">: not a domain of ours, and the stock file
    // rejects remote recipients and leaves them on the server.
    assert!(
        server.log().contains("rejected: remote recipient"),
        "{}",
        server.log()
    );
    assert_eq!(dovecot.count("myglobalaccount"), 0);
    assert_eq!(dovecot.count("bob@myaccount"), 1);
}

/// The size of the message a kill -9 lands in the middle of.
const BIG: usize = 64 << 20;

#[test]
#[ignore = "needs dovecot; run by .ci/run"]
fn kill_9_between_retr_and_quit_loses_nothing_and_refetches_nothing() {
    for keep in [false, true] {
        kill_9_while_streaming(keep);
    }
}

fn kill_9_while_streaming(keep: bool) {
    let dovecot = Dovecot::start(&[("alice", "pw")]);
    let body = format!(
        r#"<accounts><account user="alice" password="pw" recipient="bob@localhost" ignorercpt-header="true"/></accounts>
      <fetched leaveonserver="{keep}" markseen="false"/>"#
    );
    let mut server = puller(
        &[task("crash", dovecot.port, NO_STLS, &body)],
        &["bob"],
        DEFAULT_TREE,
    );
    // Five small messages first (Dovecot lists in delivery order), then a big one to kill in.
    for i in 0..5 {
        dovecot.deliver(
            "alice",
            &format!("{}.m{i}", 1000 + i),
            &message("", &format!("small{i}")),
        );
    }
    let mut big = message("", "big");
    let line = format!("{}\r\n", "x".repeat(998));
    while big.len() < BIG {
        big.extend_from_slice(line.as_bytes());
    }
    dovecot.deliver("alice", "2000.big", &big);
    let mut cli = Command::new(crate::harness::BIN)
        .args(["fetchmail", "run", "crash", "--config"])
        .arg(&server.config)
        .arg("--home")
        .arg(server.home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // All five small ones spooled (and DELE'd unless kept): now the big one streams.
    wait_for("the five small messages", || {
        fetched_lines(&server, "crash") >= 5
    });
    server.kill();
    let _ = cli.wait();
    assert_eq!(
        fetched_lines(&server, "crash"),
        5,
        "the kill came after the big message: {}",
        server.log()
    );
    assert_eq!(
        dovecot.count("alice"),
        6,
        "no QUIT: nothing deleted on Dovecot"
    );
    server.spawn();
    // The start-up run after the restart: the five are only deleted (or skipped), the big one
    // fetched.
    wait_for("the big message", || {
        inbox(&server, "bob")
            .iter()
            .any(|m| m.contains("Subject: big"))
    });
    assert!(run(&server, "crash").contains("fetched=0"));
    // FetchMail fetched every message exactly once over both lives.
    let log = server.log();
    let mut uids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fetched message") && l.contains("task=crash "))
        .filter_map(|l| l.split("uid=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(uids.len(), 6, "{log}");
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 6, "a message fetched twice: {log}");
    let left = if keep { 6 } else { 0 };
    wait_for("Dovecot's mailbox after the restart", || {
        dovecot.count("alice") == left
    });
    // Nothing lost. (The spool itself may deliver a mail twice that it was processing at the
    // kill — its removal records are not waited for — so each is there at least once.)
    let bob = inbox(&server, "bob");
    for subject in (0..5).map(|i| format!("small{i}")).chain(["big".into()]) {
        let line = format!("Subject: {subject}\n");
        assert!(
            bob.iter().any(|m| m.contains(&line)),
            "{subject} lost (keep={keep})"
        );
    }
}
