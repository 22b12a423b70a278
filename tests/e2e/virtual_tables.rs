//! James's virtual user tables, aliasing and white list through the real binary:
//! `XMLVirtualUserTable` and `JDBCVirtualUserTable` (James's `VirtualUserTable` table, on
//! SQLite and, run by `.ci/run`, PostgreSQL) map mail that comes in over SMTP into Maildirs read
//! back over POP3; a data source that is away keeps the mail in the spool; a missing table
//! stops the start at its line; `UsersRepositoryAliasingForwarding` applies aliases and
//! forwards before delivery; `JDBCListserv` distributes to members kept in the database;
//! `WhiteListManager` takes an `insert` command by mail and `IsInWhiteList` then lets the
//! listed sender's mail through while a stranger's goes to spam.

use std::time::Duration;

use crate::database::DATA_SOURCES;
use crate::harness::{
    free_port, maildir_messages, python, repository_count, wait_for, Server, Setup,
};
use crate::pg::{data_sources, PgCluster};

/// An SQLite database made before the server starts (the JDBC mailets check their tables
/// at start-up, as James's do): its `<database-connections>` block, data source `maildb`.
struct SqliteFile {
    dir: tempfile::TempDir,
}

impl SqliteFile {
    /// A database holding what `statements` make (run with Python's sqlite3).
    fn with(statements: &str) -> SqliteFile {
        let file = SqliteFile {
            dir: tempfile::tempdir().unwrap(),
        };
        python(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], timeout=30)\n\
             db.executescript(sys.argv[2])\n\
             db.commit()\n",
            &[file.path().to_str().unwrap(), statements],
        );
        file
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mail.db")
    }

    fn sources(&self) -> String {
        DATA_SOURCES.replace(
            "sqlite://var/mail.db",
            &format!("sqlite://{}", self.path().display()),
        )
    }
}

/// The subjects of a user's mails, read over POP3 with poplib.
fn pop3_subjects(server: &Server, user: &str) -> Vec<String> {
    let out = python(
        "import poplib, sys, email\n\
         p = poplib.POP3('127.0.0.1', int(sys.argv[1]))\n\
         p.user(sys.argv[2]); p.pass_('secret')\n\
         for i in range(1, p.stat()[0] + 1):\n\
         \x20   msg = email.message_from_bytes(b'\\r\\n'.join(p.retr(i)[1]))\n\
         \x20   print(msg['Subject'])\n\
         p.quit()\n",
        &[&server.pop3_port.to_string(), user],
    );
    let mut subjects: Vec<String> = out.lines().map(str::to_string).collect();
    subjects.sort();
    subjects
}

fn inbox(server: &Server, user: &str) -> Vec<String> {
    maildir_messages(&server.path(&format!("var/mail/inboxes/{user}")))
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect()
}

const VUT_TREE: &str = r#"
    <processor name="root">
      <mailet match="All" class="XMLVirtualUserTable">
        <mapping>sales@localhost=alice;bob@example.test</mapping>
        <mapping>*@old.test=regex:(.*)@old\.test:${1}@localhost</mapping>
        <mapping>gone@localhost=error:550 5.1.1 gone away</mapping>
        <mapping>ext@localhost=someone@far.test</mapping>
      </mailet>
      <mailet match="All" class="JDBCVirtualUserTable">
        <table>db://maildb/VirtualUserTable</table>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="HostIsLocal" class="ToRepository"><repositoryPath>file://var/mail/address-error/</repositoryPath></mailet>
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/outgoing/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

/// James's table, as James's documentation creates it (`%`: any user, any domain); `user`
/// quoted, which PostgreSQL needs.
const VUT_TABLE: &str = "CREATE TABLE VirtualUserTable (\"user\" varchar(64) NOT NULL default '', \
     domain varchar(255) NOT NULL default '', target_address varchar(255) NOT NULL \
     default '', PRIMARY KEY (\"user\", domain));\n\
     INSERT INTO VirtualUserTable VALUES ('info', 'localhost', 'carol');\n\
     INSERT INTO VirtualUserTable VALUES ('%', 'example.test', 'bob@localhost');";

#[test]
fn xml_and_jdbc_virtual_user_tables() {
    let db = SqliteFile::with(VUT_TABLE);
    virtual_tables_on(&db.sources());
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn xml_and_jdbc_virtual_user_tables_on_postgresql() {
    let pg = PgCluster::start();
    pg.query(VUT_TABLE);
    virtual_tables_on(&data_sources(&pg.url(), 60));
}

/// The virtual tables scenario on the data source `maildb` of `sources`, which holds
/// [`VUT_TABLE`].
fn virtual_tables_on(sources: &str) {
    // RCPT checks stay on: the XML table's sources and (unreadable at RCPT) the database
    // table's domain are accepted, and the tree decides.
    let server = Server::start_setup(&Setup {
        tree: VUT_TREE,
        pop3_handler: Some(""),
        extra: sources,
        ..Setup::default()
    });
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "secret");
    }
    let mut smtp = server.smtp();
    for (rcpt, subject) in [
        ("sales@localhost", "to sales"),
        ("joe@old.test", "to old"),
        ("info@localhost", "to info"),
        ("anyone@example.test", "catch-all"),
        ("gone@localhost", "to gone"),
        ("ext@localhost", "to ext"),
    ] {
        smtp.send_mail(
            "sender@remote.test",
            &[rcpt],
            &format!("Subject: {subject}\r\n\r\nhello\r\n"),
        );
    }
    wait_for("every mail processed", || server.spool_empty());
    // sales → alice (XML) and bob@example.test → bob@localhost (the JDBC catch-all).
    assert_eq!(pop3_subjects(&server, "alice"), ["to sales"]);
    assert_eq!(pop3_subjects(&server, "bob"), ["catch-all", "to sales"]);
    assert_eq!(pop3_subjects(&server, "carol"), ["to info"]);
    // The error: mapping's refusal goes to the error processor; joe@old.test becomes
    // joe@localhost by regex, who is no user.
    assert_eq!(repository_count(&server.path("var/mail/error")), 1);
    assert_eq!(repository_count(&server.path("var/mail/address-error")), 1);
    // A remote target leaves in a mail of its own, sent from this server.
    assert_eq!(repository_count(&server.path("var/mail/outgoing")), 1);
    let log = server.log();
    assert!(log.contains("status=mapped"), "{log}");
}

#[test]
fn a_database_that_is_away_keeps_the_mail() {
    let closed = free_port();
    let sources = format!(
        r#"<database-connections><data-sources>
          <data-source name="away"><dburl>postgres://mailroom@127.0.0.1:{closed}/mail</dburl><max>1</max></data-source>
        </data-sources></database-connections>"#
    );
    let tree = VUT_TREE
        .replace("db://maildb/VirtualUserTable", "db://away/VirtualUserTable")
        .replace(
            "<mapping>sales@localhost=alice;bob@example.test</mapping>",
            "",
        );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        smtp_handler: "<verifyRecipients>false</verifyRecipients>",
        extra: &sources,
        ..Setup::default()
    });
    server.add_user("alice", "secret");
    server.smtp().send_mail(
        "s@remote.test",
        &["alice@localhost"],
        "Subject: wait\r\n\r\nx\r\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!server.spool_empty(), "{}", server.log());
    assert!(inbox(&server, "alice").is_empty());
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
}

const WHITELIST_TREE: &str = r#"
    <processor name="root">
      <mailet match="All" class="WhiteListManager">
        <repositoryPath>db://maildb</repositoryPath>
        <automaticInsert>true</automaticInsert>
        <whitelistManagerAddress>whitelist@localhost</whitelistManagerAddress>
        <displayFlag>display</displayFlag>
        <insertFlag>insert</insertFlag>
        <removeFlag>remove</removeFlag>
      </mailet>
      <mailet match="IsInWhiteList=db://maildb" class="ToProcessor" onMatchException="noMatch">
        <processor>transport</processor>
      </mailet>
      <mailet match="SenderIs=postmaster@localhost" class="ToProcessor"><processor>transport</processor></mailet>
      <mailet match="All" class="ToProcessor"><processor>spam</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/outgoing/</repositoryPath></mailet>
    </processor>
    <processor name="spam">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/spam/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

#[test]
fn whitelist_insert_by_mail_then_the_sender_gets_through() {
    whitelist_on(DATA_SOURCES, |server| {
        python(
            "import sqlite3, sys\n\
             print(sqlite3.connect(sys.argv[1]).execute('SELECT localUser, localHost, \
             remoteUser, remoteHost FROM whitelist').fetchall())\n",
            &[server.path("var/mail.db").to_str().unwrap()],
        )
    });
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn whitelist_on_postgresql() {
    let pg = PgCluster::start();
    whitelist_on(&data_sources(&pg.url(), 60), |_| {
        let row = pg.query("SELECT localUser, localHost, remoteUser, remoteHost FROM whitelist");
        let cells: Vec<String> = row.split('|').map(|c| format!("'{c}'")).collect();
        format!("[({})]", cells.join(", "))
    });
}

/// The whitelist scenario on the data source `maildb` of `sources`; `rows` prints the
/// whitelist table as Python prints a list of tuples.
fn whitelist_on(sources: &str, rows: impl FnOnce(&Server) -> String) {
    // RCPT checks stay on: the manager's address is accepted though it is no user.
    let server = Server::start_setup(&Setup {
        tree: WHITELIST_TREE,
        pop3_handler: Some(""),
        extra: sources,
        ..Setup::default()
    });
    server.add_user("alice", "secret");
    let mut smtp = server.smtp();
    smtp.send_mail(
        "alice@localhost",
        &["whitelist@localhost"],
        "Subject: insert\r\n\r\nfriend@remote.test\r\n",
    );
    wait_for("the postmaster's reply", || {
        inbox(&server, "alice").len() == 1
    });
    let reply = &inbox(&server, "alice")[0];
    assert!(reply.contains("Inserted: friend@remote.test"), "{reply}");
    assert!(reply.contains("Subject: Re:insert"), "{reply}");

    smtp.send_mail(
        "friend@remote.test",
        &["alice@localhost"],
        "Subject: from a friend\r\n\r\nhi\r\n",
    );
    smtp.send_mail(
        "stranger@remote.test",
        &["alice@localhost"],
        "Subject: from a stranger\r\n\r\nbuy\r\n",
    );
    wait_for("both mails processed", || server.spool_empty());
    assert_eq!(
        pop3_subjects(&server, "alice"),
        ["Re:insert", "from a friend"]
    );
    assert_eq!(repository_count(&server.path("var/mail/spam")), 1);
    // The list is in James's table.
    assert_eq!(
        rows(&server).trim(),
        "[('alice', 'localhost', 'friend', 'remote.test')]"
    );
}

#[test]
fn check_config_reports_tables_and_whitelist_at_their_lines() {
    let tree = r#"
    <processor name="root">
      <mailet match="All" class="XMLVirtualUserTable">
        <mapping>nobody-here</mapping>
      </mailet>
      <mailet match="All" class="JDBCVirtualUserTable">
        <table>db://nodb/VirtualUserTable</table>
      </mailet>
      <mailet match="All" class="WhiteListManager">
        <automaticInsert>true</automaticInsert>
      </mailet>
      <mailet match="IsInWhiteList=db://maildb" class="Null"/>
      <mailet match="All" class="JDBCAlias">
        <mappings>db://maildb/Aliases</mappings>
        <source_column>src</source_column>
      </mailet>
    </processor>
    <processor name="error"><mailet match="All" class="Null"/></processor>
"#;
    // Without <database-connections>: every db:// URL is reported at its line.
    let (file, xml, all) = check_config(tree, "");
    let line = |xml: &str, needle: &str| xml.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for needle in [
        "db://nodb/VirtualUserTable",
        "IsInWhiteList=db://maildb",
        "db://maildb/Aliases",
    ] {
        let at = format!("{file}:{}:", line(&xml, needle));
        assert!(
            all.lines()
                .any(|l| l.contains(&at) && l.contains("does not define")),
            "{at}\n{all}"
        );
    }
    // With the data source: each mailet's own checks, at its line.
    let tree = tree.replace("db://nodb/", "db://maildb/");
    let (file, xml, all) = check_config(&tree, DATA_SOURCES);
    for (needle, says) in [
        ("class=\"XMLVirtualUserTable\"", "is not source=target"),
        ("class=\"WhiteListManager\"", "<repositoryPath> is required"),
        ("class=\"JDBCAlias\"", "<target_column>"),
    ] {
        let at = format!("{file}:{}:", line(&xml, needle));
        assert!(
            all.lines().any(|l| l.contains(&at) && l.contains(says)),
            "{at} {says}\n{all}"
        );
    }
}

/// Runs `mailroom check-config` on a config with `tree` and `extra`: its file name, its
/// text, and what the command said (which must be a failure).
fn check_config(tree: &str, extra: &str) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let xml = crate::harness::config_xml_for(
        (free_port(), 0, 0, 0),
        &Setup {
            tree,
            extra,
            ..Setup::default()
        },
    );
    let path = dir.path().join("config.xml");
    std::fs::write(&path, &xml).unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    (path.display().to_string(), xml, all)
}

#[test]
fn jdbc_listserv_members_in_the_database() {
    let tree = r#"
    <processor name="root">
      <mailet match="RecipientIs=james@localhost" class="JDBCListserv">
        <data_source>maildb</data_source>
        <listserv_id>james</listserv_id>
        <listserv_table>listserv</listserv_table>
        <members_table>listserv_members</members_table>
      </mailet>
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
    let db = SqliteFile::with(
        "CREATE TABLE listserv (listserv_id varchar(255) PRIMARY KEY, members_only SMALLINT, \
         attachments_allowed SMALLINT, reply_to_list SMALLINT, subject_prefix varchar(50), \
         list_address varchar(255));\n\
         CREATE TABLE listserv_members (listserv_id varchar(255), member varchar(255));\n\
         INSERT INTO listserv VALUES ('james', 1, 1, 1, 'James', 'james@localhost');\n\
         INSERT INTO listserv_members VALUES ('james', 'alice@localhost');\n\
         INSERT INTO listserv_members VALUES ('james', 'bob@localhost');\n\
         INSERT INTO listserv_members VALUES ('james', 'carol@far.test');",
    );
    let server = Server::start_setup(&Setup {
        tree,
        pop3_handler: Some(""),
        extra: &db.sources(),
        ..Setup::default()
    });
    for user in ["alice", "bob"] {
        server.add_user(user, "secret");
    }
    let mut smtp = server.smtp();
    smtp.send_mail(
        "alice@localhost",
        &["james@localhost"],
        "Subject: Re: release\r\n\r\nship it\r\n",
    );
    smtp.send_mail(
        "stranger@remote.test",
        &["james@localhost"],
        "Subject: offer\r\n\r\nbuy\r\n",
    );
    wait_for("both mails processed", || server.spool_empty());
    for user in ["alice", "bob"] {
        assert_eq!(pop3_subjects(&server, user), ["[James] RE: release"]);
        let mail = &inbox(&server, user)[0];
        assert!(mail.contains("Reply-To: james@localhost"), "{mail}");
        assert!(
            mail.contains("Return-Path: <postmaster@localhost>"),
            "{mail}"
        );
    }
    // The remote member's copy leaves, and so does the notice that refuses the stranger's
    // mail (James's GenericListserv answers it; the list's members never see it).
    wait_for("the copy and the notice queued", || {
        repository_count(&server.path("var/mail/outgoing")) == 2
    });
    let error = server.path("var/mail/error");
    assert!(!error.exists() || repository_count(&error) == 0);
}

#[test]
fn a_missing_table_stops_the_start_at_its_line() {
    let db = SqliteFile::with("CREATE TABLE other (x TEXT);");
    let tree = VUT_TREE.replace(
        "db://maildb/VirtualUserTable",
        "db://maildb/VirtualUserTabel",
    );
    let dir = tempfile::tempdir().unwrap();
    let xml = crate::harness::config_xml_for(
        (free_port(), 0, 0, 0),
        &Setup {
            tree: &tree,
            extra: &db.sources(),
            ..Setup::default()
        },
    );
    let path = dir.path().join("config.xml");
    std::fs::write(&path, &xml).unwrap();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(crate::harness::BIN)
        .arg("--config")
        .arg(&path)
        .arg("--home")
        .arg(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Bounded: a server that started anyway is stopped, and the test fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{said}");
    let line = xml
        .lines()
        .position(|l| l.contains("class=\"JDBCVirtualUserTable\""))
        .unwrap()
        + 1;
    assert!(
        said.contains(&format!(
            "{}:{line}: JDBCVirtualUserTable: could not find table 'VirtualUserTabel' in data source 'maildb'",
            path.display()
        )),
        "{said}"
    );
}

#[test]
fn users_repository_aliasing_forwarding_before_delivery() {
    let tree = VUT_TREE.replace(
        r#"<mailet match="All" class="XMLVirtualUserTable">"#,
        r#"<mailet match="RecipientIsLocal" class="UsersRepositoryAliasingForwarding"/>
      <mailet match="All" class="XMLVirtualUserTable">"#,
    );
    let tree = tree.replace(
        "<table>db://maildb/VirtualUserTable</table>",
        "<table>default</table>",
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        remote_manager_handler: Some(crate::harness::ADMIN),
        ..Setup::default()
    });
    for user in ["carol", "erin", "frank"] {
        server.add_user(user, "secret");
    }
    let said = crate::harness::console(
        &server,
        &[
            "setforwarding carol bob@remote.example",
            "setalias erin frank",
        ],
    );
    assert!(
        said.contains("Forwarding destination for carol set to"),
        "{said}"
    );
    server.smtp().send_mail(
        "s@remote.test",
        &["carol@localhost", "erin@localhost"],
        "Subject: both\r\n\r\nhi\r\n",
    );
    wait_for("the mail processed", || server.spool_empty());
    // erin's copy went to frank, carol's left for her forward address.
    assert_eq!(inbox(&server, "frank").len(), 1);
    assert!(inbox(&server, "erin").is_empty() && inbox(&server, "carol").is_empty());
    assert_eq!(repository_count(&server.path("var/mail/outgoing")), 1);
    let log = server.log();
    assert!(
        log.contains("rcpt=erin@localhost status=mapped to=frank@localhost"),
        "{log}"
    );
    assert!(
        log.contains("rcpt=carol@localhost status=forwarded to=bob@remote.example"),
        "{log}"
    );
}
