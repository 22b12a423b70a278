//! `mailroom store copy`: a server's users, inboxes and mail repositories copied from files to
//! the embedded SQLite, and from there back to files (and on to PostgreSQL in `.ci/run`); POP3
//! on the new server shows the same messages, sizes and UIDLs to the same passwords, and a
//! second copy copies nothing.

use std::path::Path;
use std::process::Command;

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{Server, Setup, BIN};
use crate::pg::{self, PgCluster};

/// What POP3 shows of a mailbox: `UIDL` and `LIST` lines, and every message as `RETR` sends it.
type Shown = (Vec<String>, Vec<String>, Vec<Vec<String>>);

fn shown(port: u16, user: &str, password: &str) -> Shown {
    let mut pop = pg::open_mailbox(port, user, password);
    let uidl = pop.multi("UIDL").unwrap().unwrap();
    let list = pop.multi("LIST").unwrap().unwrap();
    let messages = (1..=list.len())
        .map(|n| pop.multi(&format!("RETR {n}")).unwrap().unwrap())
        .collect();
    let _ = pop.cmd("QUIT");
    (uidl, list, messages)
}

/// Runs `mailroom store copy`; its exit status and standard error.
fn copy(from: &Path, to: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The counts of the summary line: copied, already there, copied earlier and gone since.
fn counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.split("copy done: ").nth(1))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Each message's UIDL, size and text, in UIDL order.
fn unordered((uidl, list, messages): Shown) -> Vec<(String, String, Vec<String>)> {
    let field = |l: &String| l.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut all: Vec<_> = uidl
        .iter()
        .zip(&list)
        .zip(messages)
        .map(|((u, l), m)| (field(u), field(l), m))
        .collect();
    all.sort();
    all
}

fn setup() -> Setup<'static> {
    Setup {
        pop3_handler: Some(""),
        // Unknown local users' mail is filed in the address-error repository.
        smtp_handler: "<verifyRecipients>false</verifyRecipients>",
        ..Setup::default()
    }
}

/// A stopped file server with mail in inboxes and repositories, and what POP3 showed of it.
fn file_server() -> (Server, Vec<(&'static str, Shown)>) {
    let mut old = Server::start_setup(&setup());
    old.add_user("bob", "bob's secret");
    old.add_user("carol", "carol pw");
    old.add_user("dave", "dave pw");
    let mut smtp = old.smtp();
    smtp.cmd("EHLO client.example.net");
    for (to, n) in [("bob", 3), ("carol", 1)] {
        for i in 0..n {
            smtp.send_mail(
                "sender@example.net",
                &[&format!("{to}@localhost")],
                &format!("Subject: {to} {i}\r\nMessage-ID: <{to}.{i}@x>\r\n\r\nline\nbare LF {i}\r\n..dot\r\n"),
            );
        }
    }
    smtp.send_mail(
        "s@example.net",
        &["nobody@localhost"],
        "Subject: lost\r\n\r\nx\r\n",
    );
    smtp.send_mail(
        "s@example.net",
        &["far@remote.example"],
        "Subject: far\r\n\r\nx\r\n",
    );
    smtp.cmd("QUIT");
    crate::harness::wait_for("the deliveries", || {
        shown(old.pop3_port, "bob", "bob's secret").0.len() == 3
            && shown(old.pop3_port, "carol", "carol pw").0.len() == 1
            && crate::harness::repository_count(&old.path("var/mail/address-error")) == 1
            && crate::harness::repository_count(&old.path("var/mail/outgoing")) == 1
    });
    let before = vec![
        ("bob", shown(old.pop3_port, "bob", "bob's secret")),
        ("carol", shown(old.pop3_port, "carol", "carol pw")),
        ("dave", shown(old.pop3_port, "dave", "dave pw")),
    ];
    assert!(old.terminate().success());
    // The address-error mail goes back to the spool, where it stays while the server is
    // stopped: the spool has a mail to copy.
    let out = old.cli(&["queue", "flush", "--all", "file://var/mail/address-error/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (old, before)
}

/// A server over `edit`ed repositories, started once (its schema made) and stopped.
fn stopped_server(edit: impl FnOnce(String) -> String) -> Server {
    let mut server = Server::start_edited(&setup(), edit);
    assert!(server.terminate().success());
    server
}

/// Copies `from` into `to` (refused while `to` runs), twice; then starts `to` and checks that
/// POP3 shows `before`.
fn copy_and_check(from: &Server, to: &mut Server, before: &[(&str, Shown)], spooled: bool) {
    to.spawn();
    // The control socket, by which a running server is known, is bound once the server runs
    // (in a file spool's directory, or under var/run for a spool in a database).
    let config = std::fs::read_to_string(&to.config).unwrap();
    let in_database =
        config.contains("db://maildb/spool/") || config.contains("dbfile://maildb/spool/");
    let socket = to.path(if in_database {
        "var/run/db-spool/control.sock"
    } else {
        "var/mail/spool/control.sock"
    });
    crate::harness::wait_for("the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let (ok, err) = copy(&from.config, &to.config);
    assert!(!ok && err.contains("is running"), "{err}");
    assert!(to.terminate().success());

    let (ok, err) = copy(&from.config, &to.config);
    assert!(ok, "{err}");
    // 3 users, 4 messages, the spooled (or address-error) and outgoing mails.
    assert!(
        err.contains("copy done: 9 item(s) copied, 0 already there"),
        "{err}"
    );
    let (ok, err) = copy(&from.config, &to.config);
    assert!(ok, "{err}");
    assert!(
        err.contains("copy done: 0 item(s) copied, 9 already there"),
        "{err}"
    );
    if spooled {
        // The stopped server's spool, in its database, lists the copied mail.
        let out = to.cli(&["queue", "list"]);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listed.contains("1 mail(s) in the spool") && listed.contains("state=root"),
            "{listed}"
        );
    }

    to.spawn();
    for (user, shown_before) in before {
        let password = match *user {
            "bob" => "bob's secret",
            "carol" => "carol pw",
            _ => "dave pw",
        };
        assert_eq!(&shown(to.pop3_port, user, password), shown_before, "{user}");
    }
}

fn to_sqlite(xml: String) -> String {
    in_database(xml)
        .replace("file://var/mail/outgoing/", "db://maildb/mail/outgoing/")
        .replace("</config>", &format!("{DATA_SOURCES}\n</config>"))
}

#[test]
fn file_to_sqlite_keeps_messages_uidls_and_passwords() {
    let (old, before) = file_server();
    let mut new = stopped_server(to_sqlite);
    copy_and_check(&old, &mut new, &before, true);

    // A message a user deleted and a user removed on the new server are not copied again
    // (nor is the spooled mail it has processed by now, if it has).
    let mut pop = pg::open_mailbox(new.pop3_port, "bob", "bob's secret");
    assert!(pop.cmd("DELE 2").unwrap().starts_with("+OK"));
    assert!(pop.cmd("QUIT").unwrap().starts_with("+OK"));
    assert!(new.terminate().success());
    let out = new.cli(&["user", "del", "carol"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    let (copied, present, earlier) = counts(&err);
    assert_eq!((copied, present + earlier), (0, 9), "{err}");
    assert!(earlier >= 2, "{err}");

    // What an interrupted run leaves (some items copied and written down, others not) is
    // completed by the next one: the ledger forgets those two, as if the run had stopped
    // before them, and they are copied again, alone.
    let ledger_dir = new.path("var/store-copy");
    let ledger = std::fs::read_dir(&ledger_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bob_uid = before[0].1 .0[1]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let kept: Vec<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .filter(|l| *l != "user\tcarol" && *l != format!("inbox\tbob\t{bob_uid}"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ledger, kept.concat()).unwrap();
    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err).0, 2, "{err}");
    new.spawn();
    // The message copied again comes last in the database inbox (a real interruption
    // leaves a prefix copied, and the order as it was): the same messages, UIDLs and sizes.
    assert_eq!(
        unordered(shown(new.pop3_port, "bob", "bob's secret")),
        unordered(before[0].1.clone())
    );
    assert_eq!(shown(new.pop3_port, "carol", "carol pw"), before[1].1);
}

#[test]
#[ignore = "needs PostgreSQL; run by .ci/run"]
fn file_to_sqlite_to_postgresql_keeps_messages_uidls_and_passwords() {
    let (old, before) = file_server();
    let mut sqlite = stopped_server(to_sqlite);
    copy_and_check(&old, &mut sqlite, &before, true);
    assert!(sqlite.terminate().success());

    let cluster = PgCluster::start();
    let url = cluster.url();
    let mut postgres = stopped_server(|xml| {
        in_database(xml)
            .replace("file://var/mail/outgoing/", "db://maildb/mail/outgoing/")
            .replace(
                "</config>",
                &format!("{}\n</config>", pg::data_sources(&url, 300)),
            )
    });
    // The spooled mail may be in the spool or processed into address-error by now.
    copy_and_check(&sqlite, &mut postgres, &before, false);
}

/// DBFile both ways: files to `dbfile://` (rows in SQLite, bodies in files under
/// `var/dbfile/`), then on to a second file server; POP3 shows the same messages, UIDLs and
/// sizes on each.
#[test]
fn file_to_dbfile_to_file_keeps_messages_and_uidls() {
    let (old, before) = file_server();
    let mut dbfile = stopped_server(|xml| {
        to_sqlite(xml)
            .replace("db://maildb/inbox/", "dbfile://maildb/inbox/")
            .replace("db://maildb/spool/spool", "dbfile://maildb/spool/spool")
            .replace("db://maildb/mail/", "dbfile://maildb/mail/")
    });
    copy_and_check(&old, &mut dbfile, &before, true);
    let bodies = std::fs::read_dir(dbfile.path("var/dbfile/maildb/inbox"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(bodies, 4);
    assert!(dbfile.terminate().success());
    let mut files = stopped_server(|xml| xml);
    let (ok, err) = copy(&dbfile.config, &files.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err).0, 9, "{err}");
    files.spawn();
    for ((user, password), (_, shown_before)) in [
        ("bob", "bob's secret"),
        ("carol", "carol pw"),
        ("dave", "dave pw"),
    ]
    .into_iter()
    .zip(&before)
    {
        assert_eq!(
            &shown(files.pop3_port, user, password),
            shown_before,
            "{user}"
        );
    }
}

/// Back from the database to files: the same messages, UIDLs (Maildir file names) and sizes;
/// progress bars at a terminal.
#[test]
fn file_to_sqlite_and_back_to_files_keeps_messages_uidls_and_passwords() {
    let (old, before) = file_server();
    let mut sqlite = stopped_server(to_sqlite);
    copy_and_check(&old, &mut sqlite, &before, true);
    assert!(sqlite.terminate().success());
    let mut files = stopped_server(|xml| xml);
    // The spooled mail may be in the spool or processed into address-error by now.
    copy_and_check(&sqlite, &mut files, &before, false);
    assert!(!files.path("var/mail.db").exists());

    // At a terminal (script(1) gives it one), each repository has a progress bar.
    assert!(files.terminate().success());
    let command = format!(
        "{BIN} store copy --from {} --to {}",
        sqlite.config.display(),
        files.config.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    for bar in ["users [", "] 3/3", "inboxes ["] {
        assert!(shown.contains(bar), "{bar:?} not in {shown:?}");
    }
    // Without one, no bar: the log lines alone.
    let (ok, err) = copy(&sqlite.config, &files.config);
    assert!(ok && !err.contains("users ["), "{err}");
}

/// The virtual user tables: mappings added on a file server's console are copied into a
/// SQLite server whose `default` table is in the database (James's `VirtualUserTable`) and
/// whose `sales` table stays a file; a second copy copies nothing, and a mapping removed on
/// the new server is not copied back.
#[test]
fn file_to_sqlite_copies_the_virtual_user_tables() {
    use crate::harness::{console, ADMIN};
    let with_console = || Setup {
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    };
    let mut old = Server::start_setup(&with_console());
    let said = console(
        &old,
        &[
            "addmapping info@localhost alice@localhost",
            "addmapping info@localhost domain:example.net",
            "addmapping *@example.test bob",
            "addmapping table=sales orders@localhost carol@localhost",
        ],
    );
    assert_eq!(said.matches("successful: true").count(), 4, "{said}");
    assert!(old.terminate().success());
    let mut new = Server::start_edited(&with_console(), |xml| {
        to_sqlite(xml).replace(
            "</config>",
            r#"<virtualusertable-store>
    <table name="default" class="org.apache.james.vut.JDBCVirtualUserTable"
           destinationURL="db://maildb/VirtualUserTable"/>
  </virtualusertable-store>
</config>"#,
        )
    });
    assert!(new.terminate().success());

    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err).0, 4, "{err}");
    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err).0, 0, "{err}");
    let rows = crate::harness::python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         print(sorted(db.execute('SELECT \"user\", domain, target_address FROM virtualusertable').fetchall()))",
        &[new.path("var/mail.db").to_str().unwrap()],
    );
    assert_eq!(
        rows.trim(),
        "[('%', 'example.test', 'bob'), ('info', 'localhost', 'alice@localhost;domain:example.net')]"
    );
    assert!(new.path("var/virtual/sales.json").exists());

    new.spawn();
    let said = console(
        &new,
        &[
            "listallmappings",
            "listallmappings table=sales",
            "removemapping info@localhost domain:example.net",
        ],
    );
    assert!(
        said.contains("*@example.test -> bob")
            && said.contains("info@localhost -> alice@localhost, domain:example.net")
            && said.contains("orders@localhost -> carol@localhost")
            && said.contains("Removing mapping successful: true"),
        "{said}"
    );
    assert!(new.terminate().success());
    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err), (0, 3, 1), "{err}");
}

/// News: groups and articles of a file news repository copied into SQLite, each article once
/// with its groups and one `Xref:` of the target's; a second copy copies nothing.
#[test]
fn file_to_sqlite_copies_the_news() {
    use crate::nntp::{Client, GROUPS};
    let news = |extra: &'static str| Setup {
        nntp_handler: Some(""),
        extra,
        ..Setup::default()
    };
    let mut old = Server::start_setup(&news(GROUPS));
    let (mut c, _) = Client::connect(old.nntp_port);
    assert!(c.post("<one@r>", "comp.test").starts_with("240"));
    assert!(c.post("<two@r>", "comp.test,alt.test").starts_with("240"));
    assert!(c.post("<three@r>", "alt.test").starts_with("240"));
    drop(c);
    assert!(old.terminate().success());
    let in_sqlite: &'static str = Box::leak(
        format!(
            "{DATA_SOURCES}\n{}",
            GROUPS.replace(
                "<nntp-repository>",
                "<nntp-repository><rootPath>db://maildb/</rootPath>"
            )
        )
        .into_boxed_str(),
    );
    let mut new = Server::start_setup(&news(in_sqlite));
    assert!(new.terminate().success());

    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err).0, 3, "{err}");
    let (ok, err) = copy(&old.config, &new.config);
    assert!(ok, "{err}");
    assert_eq!(counts(&err), (0, 3, 0), "{err}");

    new.spawn();
    let (mut c, _) = Client::connect(new.nntp_port);
    assert_eq!(c.cmd("GROUP comp.test"), "211 2 1 2 comp.test\r\n");
    assert_eq!(c.cmd("GROUP alt.test"), "211 2 1 2 alt.test\r\n");
    assert!(c.cmd("ARTICLE <two@r>").starts_with("220"));
    let mut xrefs = Vec::new();
    loop {
        let line = c.line();
        if line == ".\r\n" || line.is_empty() {
            break;
        }
        if line.starts_with("Xref:") {
            xrefs.push(line);
        }
    }
    assert_eq!(xrefs.len(), 1, "{xrefs:?}");
    assert!(
        xrefs[0].ends_with(" comp.test:2 alt.test:1\r\n"),
        "{xrefs:?}"
    );
}
