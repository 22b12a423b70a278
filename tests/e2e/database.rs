//! Every repository in the embedded SQLite database (`db://maildb/...`): users, inboxes, the
//! spool and the error repository. Mail goes in over SMTP and out over POP3, with UIDLs that
//! stay the same across a restart; nothing is written to the file repositories.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{wait_for, Server, Setup};

/// James's data source block, on the embedded SQLite file.
pub(crate) const DATA_SOURCES: &str = r#"<database-connections>
    <data-sources>
      <data-source name="maildb" class="org.apache.james.util.dbcp.JdbcDataSource">
        <driver>org.sqlite.JDBC</driver>
        <dburl>sqlite://var/mail.db</dburl>
        <user></user><password></password>
        <max>8</max>
      </data-source>
    </data-sources>
  </database-connections>"#;

/// The harness's config with every repository moved into the database.
pub(crate) fn in_database(xml: String) -> String {
    xml.replace("file://var/mail/inboxes/", "db://maildb/inbox/")
        .replace("file://var/mail/spool/", "db://maildb/spool/spool")
        .replace("file://var/mail/error/", "db://maildb/mail/error/")
        .replace("file://var/mail/address-error/", "db://maildb/mail/address-error/")
        .replace(
            r#"class="org.apache.james.userrepository.UsersFileRepository" destinationURL="file://var/users/""#,
            r#"class="org.apache.james.userrepository.JamesUsersJdbcRepository" destinationURL="db://maildb/users""#,
        )
}

/// A POP3 session: sends a command, reads the reply (and the lines of a multi-line one).
pub(crate) struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    /// Logs in; a mailbox still held by a session the test just dropped (the server has not
    /// seen its end yet) is tried again for a while.
    pub(crate) fn login(port: u16, user: &str, password: &str) -> Pop3 {
        for _ in 0..100 {
            match Pop3::try_login(port, user, password) {
                Ok(pop) => return pop,
                Err(reply) if reply.contains("[IN-USE]") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(reply) => panic!("{reply}"),
            }
        }
        panic!("the mailbox stayed in use");
    }

    fn try_login(port: u16, user: &str, password: &str) -> Result<Pop3, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut pop = Pop3 {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(pop.line().starts_with("+OK"));
        assert!(pop.cmd(&format!("USER {user}")).starts_with("+OK"));
        let reply = pop.cmd(&format!("PASS {password}"));
        if reply.starts_with("+OK") {
            Ok(pop)
        } else {
            Err(reply)
        }
    }

    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        assert!(self.reader.read_line(&mut line).unwrap() > 0, "closed");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    pub(crate) fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    fn multi(&mut self, line: &str) -> Vec<String> {
        self.try_multi(line)
            .unwrap_or_else(|reply| panic!("{line}: {reply}"))
    }

    /// A multi-line reply's lines, or the `-ERR` line.
    pub(crate) fn try_multi(&mut self, line: &str) -> Result<Vec<String>, String> {
        let reply = self.cmd(line);
        if !reply.starts_with("+OK") {
            return Err(reply);
        }
        let mut lines = Vec::new();
        loop {
            match self.line() {
                end if end == "." => return Ok(lines),
                l => lines.push(l),
            }
        }
    }

    pub(crate) fn uidl(&mut self) -> Vec<String> {
        self.multi("UIDL")
    }
}

fn send(server: &Server, rcpt: &str, subject: &str) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.example.net").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@example.net>")
        .starts_with("250"));
    let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n..dot\r\n").as_bytes());
    let reply = smtp.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
}

#[test]
fn smtp_in_pop3_out_all_in_sqlite() {
    let mut server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("Bob", "secret");
    for subject in ["one", "two", "three"] {
        send(&server, "bob@localhost", subject);
    }
    wait_for("three deliveries", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 3
    });
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let uids = pop.uidl();
    // The spool's workers may deliver the three in any order: find "two".
    let (number, retr) = (1..=3)
        .map(|n| (n, pop.multi(&format!("RETR {n}"))))
        .find(|(_, retr)| retr.iter().any(|l| l == "Subject: two"))
        .expect("the message \"two\" is in the mailbox");
    assert!(retr.iter().any(|l| l == "..dot"), "dot-stuffed: {retr:?}");
    assert!(
        retr.iter().any(|l| l.starts_with("Return-Path:")),
        "{retr:?}"
    );
    // The size LIST gives is the octets RETR sends (every line CRLF, before stuffing).
    let reply = pop.cmd(&format!("LIST {number}"));
    let listed: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    let sent: u64 = retr
        .iter()
        .map(|l| {
            if l.starts_with("..") {
                &l[1..]
            } else {
                l.as_str()
            }
        })
        .map(|l| l.len() as u64 + 2)
        .sum();
    assert_eq!(listed, sent);
    pop.cmd("QUIT");

    // Restarted: the same messages with the same UIDLs; a deletion holds.
    assert!(server.terminate().success());
    server.spawn();
    let mut pop = Pop3::login(server.pop3_port, "BOB", "secret");
    assert_eq!(pop.uidl(), uids);
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    let left: Vec<String> = Pop3::login(server.pop3_port, "bob", "secret")
        .uidl()
        .into_iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    let expected: Vec<String> = uids[1..]
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(left, expected);

    // Everything is in the database: no file repository was made.
    assert!(server.path("var/mail.db").exists());
    for dir in [
        "var/mail/inboxes",
        "var/mail/spool",
        "var/users",
        "var/mail/error",
    ] {
        assert!(!server.path(dir).exists(), "{dir} exists");
    }
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `mailroom queue` on a spool in SQLite with the server stopped: a mail flushed into it from
/// a file repository is listed, shown and deleted through the database.
#[test]
fn queue_reads_and_changes_a_database_spool_with_the_server_stopped() {
    let mut server = Server::start_edited(
        &Setup {
            smtp_handler: "<verifyRecipients>false</verifyRecipients>",
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        |xml| {
            in_database(xml).replace(
                "db://maildb/mail/address-error/",
                "file://var/mail/address-error/",
            )
        },
    );
    server.smtp().send_mail(
        "s@example.net",
        &["nobody@localhost"],
        "Subject: lost\r\n\r\nx\r\n",
    );
    wait_for("the address-error mail", || {
        crate::harness::repository_count(&server.path("var/mail/address-error")) == 1
    });
    assert!(server.terminate().success());
    let run = |args: &[&str]| {
        let out = server.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["queue", "list"]).contains("0 mail(s) in the spool"));
    run(&["queue", "flush", "--all", "file://var/mail/address-error/"]);
    let listed = run(&["queue", "list"]);
    assert!(listed.contains("1 mail(s) in the spool"), "{listed}");
    let name = listed.split_whitespace().next().unwrap().to_string();
    assert!(
        listed.contains("state=root") && listed.contains("recipients=nobody@localhost"),
        "{listed}"
    );
    let shown = run(&["queue", "show", &name]);
    assert!(shown.contains("Subject: lost"), "{shown}");
    run(&["queue", "delete", &name]);
    assert!(run(&["queue", "list"]).contains("0 mail(s) in the spool"));
}

/// The virtual user table in SQLite, in James's `<virtualusertable-store>` form: a mapping
/// added on the console is kept in James's `VirtualUserTable` table (not in `var/virtual/`)
/// and routes mail after a restart; removed, the address is refused again.
#[test]
fn console_mappings_in_sqlite_route_mail_across_a_restart() {
    let tree = crate::harness::DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="All" class="VirtualUserTable"/>"#,
        1,
    );
    let extra = format!(
        r#"{DATA_SOURCES}
  <virtualusertable-store>
    <table name="DefaultVirtualUserTable" class="org.apache.james.vut.JDBCVirtualUserTable"
           destinationURL="db://maildb/VirtualUserTable"/>
  </virtualusertable-store>"#
    );
    let mut server = Server::start_edited(
        &Setup {
            tree: &tree,
            pop3_handler: Some(""),
            remote_manager_handler: Some(crate::harness::ADMIN),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("bob", "secret");
    let said = crate::harness::console(
        &server,
        &[
            "addmapping Info@localhost bob@localhost",
            "addmapping info@localhost domain:example.net",
        ],
    );
    assert_eq!(
        said.matches("Adding mapping successful: true").count(),
        2,
        "{said}"
    );
    // Kept as James keeps it: one row, the targets joined by `;`.
    let row = crate::harness::python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         print(db.execute('SELECT \"user\", domain, target_address FROM virtualusertable').fetchall())",
        &[server.path("var/mail.db").to_str().unwrap()],
    );
    assert_eq!(
        row.trim(),
        "[('info', 'localhost', 'bob@localhost;domain:example.net')]"
    );
    assert!(!server.path("var/virtual/default.json").exists());

    assert!(server.terminate().success());
    server.spawn();
    let said = crate::harness::console(
        &server,
        &[
            "listmapping info@localhost",
            "removemapping info@localhost domain:example.net",
        ],
    );
    assert!(
        said.contains("Mappings: bob@localhost, domain:example.net"),
        "{said}"
    );
    assert!(said.contains("Removing mapping successful: true"), "{said}");
    send(&server, "info@localhost", "mapped");
    wait_for("the mapped mail in bob's inbox", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 1
    });
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let retr = pop.multi("RETR 1");
    assert!(retr.iter().any(|l| l == "Subject: mapped"), "{retr:?}");
    pop.cmd("QUIT");

    // Removed: info@ is no address any more.
    let said = crate::harness::console(&server, &["removemapping info@localhost bob@localhost"]);
    assert!(said.contains("Removing mapping successful: true"), "{said}");
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO t").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    let reply = smtp.cmd("RCPT TO:<info@localhost>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `mailroom queue` on a mail repository in SQLite (`db://maildb/mail/address-error/`): with
/// the server running, list and show read it through the database and flush goes to the
/// server; with it stopped, delete and flush act through the database, the flushed mail
/// waiting in the spool (in the database too) until the server starts again.
#[test]
fn queue_commands_on_a_database_error_repository() {
    const URL: &str = "db://maildb/mail/address-error/";
    let mut server = Server::start_edited(
        &Setup {
            smtp_handler: "<verifyRecipients>false</verifyRecipients>",
            pop3_handler: Some(""),
            remote_manager_handler: Some(crate::harness::ADMIN),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    let run = |server: &Server, args: &[&str]| {
        let out = server.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = |listed: &str| -> Vec<String> {
        listed
            .lines()
            .filter(|l| l.starts_with("Mail"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    send(&server, "first@localhost", "first");
    wait_for("the first mail in the error repository", || {
        run(&server, &["queue", "list", URL]).contains("1 mail(s) in")
    });
    let listed = run(&server, &["queue", "list", URL]);
    assert!(
        listed.contains("recipients=first@localhost") && listed.contains("error:"),
        "{listed}"
    );
    let first = names(&listed).remove(0);
    let shown = run(&server, &["queue", "show", &first, URL]);
    assert!(shown.contains("Subject: first"), "{shown}");
    // A URL the configuration does not name is refused.
    let out = server.cli(&["queue", "list", "db://maildb/mail/other/"]);
    assert!(!out.status.success());
    // The console's spool commands read it too.
    let said = crate::harness::console(
        &server,
        &[
            &format!("listspool {URL}"),
            "listspool db://maildb/mail/other/",
        ],
    );
    assert!(said.contains("Number of spooled mails: 1"), "{said}");
    assert!(
        said.contains("not a repository that the configuration names"),
        "{said}"
    );

    // Running: the flush goes to the server, which delivers the mail to its new user.
    server.add_user("first", "pass");
    assert!(run(&server, &["queue", "flush", &first, URL]).contains("flushed 1 mail(s)"));
    wait_for("the flushed mail delivered", || {
        Pop3::login(server.pop3_port, "first", "pass").uidl().len() == 1
    });
    assert!(run(&server, &["queue", "list", URL]).contains("0 mail(s) in"));

    send(&server, "second@localhost", "second");
    send(&server, "third@localhost", "third");
    wait_for("two mails in the error repository", || {
        run(&server, &["queue", "list", URL]).contains("2 mail(s) in")
    });
    assert!(server.terminate().success());

    // Stopped: read, deleted and flushed through the database.
    let listed = run(&server, &["queue", "list", URL]);
    let (mut second, mut third) = (None, None);
    for line in listed.lines().filter(|l| l.starts_with("Mail")) {
        let name = line.split_whitespace().next().unwrap().to_string();
        if line.contains("recipients=second@localhost") {
            second = Some(name);
        } else if line.contains("recipients=third@localhost") {
            third = Some(name);
        }
    }
    let (second, third) = (second.expect("second listed"), third.expect("third listed"));
    assert!(run(&server, &["queue", "show", &third, URL]).contains("Subject: third"));
    assert!(run(&server, &["queue", "delete", &second, URL]).contains("deleted 1 mail(s)"));
    let out = server.cli(&["queue", "delete", &second, URL]);
    assert!(!out.status.success(), "deleted twice");
    server.add_user("third", "pass");
    assert!(run(&server, &["queue", "flush", "--all", URL]).contains("flushed 1 mail(s)"));
    assert!(run(&server, &["queue", "list", URL]).contains("0 mail(s) in"));
    let spooled = run(&server, &["queue", "list"]);
    assert!(
        spooled.contains("1 mail(s) in the spool")
            && spooled.contains("recipients=third@localhost")
            && spooled.contains("state=root"),
        "{spooled}"
    );

    server.spawn();
    wait_for("the mail flushed while stopped delivered", || {
        Pop3::login(server.pop3_port, "third", "pass").uidl().len() == 1
    });
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}

/// `mailroom queue` on a RemoteDelivery outgoing spool in SQLite (`db://maildb/mail/outgoing/`):
/// the mail waiting for its retry (its gateway refuses connections) is listed and shown with
/// the server running, its retry made due through the server, and deleted through the
/// database with the server stopped.
#[test]
fn queue_commands_on_a_database_outgoing_spool() {
    const URL: &str = "db://maildb/mail/outgoing/";
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="All" class="RemoteDelivery">
        <outgoing>{URL}</outgoing>
        <gateway>127.0.0.1</gateway><gatewayPort>{port}</gatewayPort>
        <delayTime>1 hour</delayTime>
      </mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>db://maildb/mail/error/</repositoryPath></mailet>
    </processor>
"#
    );
    let mut server = Server::start_edited(
        &Setup {
            tree: &tree,
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    let run = |server: &Server, args: &[&str]| {
        let out = server.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    send(&server, "far@remote.example", "far");
    // Waiting for its retry, an hour away.
    wait_for("the mail waiting in the outgoing spool", || {
        let listed = run(&server, &["queue", "list", URL]);
        listed.contains("1 mail(s) in") && !listed.contains("next=now")
    });
    let listed = run(&server, &["queue", "list", URL]);
    assert!(listed.contains("recipients=far@remote.example"), "{listed}");
    let name = listed.split_whitespace().next().unwrap().to_string();
    assert!(run(&server, &["queue", "show", &name, URL]).contains("Subject: far"));
    // Running: made due by the server, which tries again at once (and fails again).
    assert!(run(&server, &["queue", "flush", &name, URL]).contains("flushed 1 mail(s)"));
    wait_for("the second attempt", || {
        let shown = run(&server, &["queue", "show", &name, URL]);
        !shown.contains("next attempt: now") && shown.contains("error:")
    });
    assert!(server.terminate().success());

    let listed = run(&server, &["queue", "list", URL]);
    assert!(listed.contains(&format!("{name} ")), "{listed}");
    assert!(run(&server, &["queue", "delete", "--all", URL]).contains("deleted 1 mail(s)"));
    assert!(run(&server, &["queue", "list", URL]).contains("0 mail(s) in"));
    assert!(!server.path("var/mail/outgoing").exists());
}
