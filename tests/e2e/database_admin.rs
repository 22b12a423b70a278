//! Administration of a server whose repositories are all in the embedded SQLite database:
//! users added, changed and deleted on the RemoteManager live in James's `users` table and
//! log in over POP3 before and after a restart; a database written by a newer Mailroom stops
//! the start with a message that says so (on SQLite, and on PostgreSQL in `.ci/run`). A
//! `kill -9` in the middle of a burst is `database_crash`'s.

use std::time::Duration;

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{console, python, Server, Setup, ADMIN, BIN};
use crate::pg::{wait_long, Pop3};

/// Rows of one SQL query on the server's SQLite file, one line each, columns joined by `|`.
fn sqlite(server: &Server, query: &str) -> String {
    python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         for row in db.execute(sys.argv[2]).fetchall(): print('|'.join(str(c) for c in row))\n\
         db.commit()",
        &[server.path("var/mail.db").to_str().unwrap(), query],
    )
}

/// The reply to PASS (or USER) of a fresh POP3 session.
fn login(server: &Server, user: &str, password: &str) -> String {
    let mut pop = Pop3::connect(server.pop3_port).unwrap();
    let reply = pop.login(user, password).unwrap();
    let _ = pop.cmd("QUIT");
    reply
}

fn setup() -> Setup<'static> {
    Setup {
        pop3_handler: Some(""),
        remote_manager_handler: Some(ADMIN),
        extra: DATA_SOURCES,
        ..Setup::default()
    }
}

#[test]
fn console_users_in_sqlite_log_in_across_a_restart() {
    let mut server = Server::start_edited(&setup(), in_database);
    let said = console(
        &server,
        &[
            "adduser alice first pass",
            "adduser bob pw",
            "adduser ALICE other",
            "countusers",
            "verify bob",
            "setpassword alice second pass",
            "deluser bob",
            "verify bob",
            "listusers",
        ],
    );
    for line in [
        "User alice added",
        "User bob added",
        "User ALICE already exists",
        "Existing accounts 2",
        "User bob exists",
        "Password for alice reset",
        "User bob deleted",
        "User bob does not exist",
        "Existing accounts 1\r\nuser: alice",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    // James's table holds them, with argon2id hashes.
    assert_eq!(
        sqlite(
            &server,
            "SELECT username, pwdAlgorithm, pwdHash IS NULL, \
             mailroom_password_hash LIKE '$argon2id$%' FROM users"
        ),
        "alice|argon2id|1|1\n"
    );
    assert!(login(&server, "alice", "second pass").starts_with("+OK"));
    assert!(login(&server, "alice", "first pass").starts_with("-ERR"));
    assert!(login(&server, "bob", "pw").starts_with("-ERR"));

    // Restarted: the same users, from the database.
    assert!(server.terminate().success());
    server.spawn();
    assert!(login(&server, "Alice", "second pass").starts_with("+OK"));
    let said = console(&server, &["countusers"]);
    assert!(said.contains("Existing accounts 1"), "{said}");
    assert!(!server.path("var/users").exists());
}

#[test]
fn a_database_from_a_newer_mailroom_stops_the_start() {
    let mut server = Server::start_edited(&setup(), in_database);
    assert!(server.terminate().success());
    sqlite(
        &server,
        "INSERT INTO mailroom_migrations (version, description, success, checksum, \
         execution_time) VALUES (9999, 'from the future', 1, X'00', 0)",
    );
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&server.config)
        .arg("--home")
        .arg(server.home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("maildb") && said.contains("9999") && said.contains("newer Mailroom"),
        "{said}"
    );
    // Nothing was changed: the row from the future is still there, and the server starts
    // again once it is gone.
    assert_eq!(
        sqlite(
            &server,
            "SELECT count(*) FROM mailroom_migrations WHERE version = 9999"
        ),
        "1\n"
    );
    sqlite(
        &server,
        "DELETE FROM mailroom_migrations WHERE version = 9999",
    );
    server.spawn();
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn a_postgresql_database_from_a_newer_mailroom_stops_the_start() {
    let pg = crate::pg::PgCluster::start();
    let extra = crate::pg::data_sources(&pg.url(), 300);
    let mut server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    assert!(server.terminate().success());
    pg.query(
        "INSERT INTO mailroom_migrations (version, description, success, checksum, \
         execution_time) VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    );
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&server.config)
        .arg("--home")
        .arg(server.home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("maildb") && said.contains("9999") && said.contains("newer Mailroom"),
        "{said}"
    );
    pg.query("DELETE FROM mailroom_migrations WHERE version = 9999");
    server.spawn();
}

/// Mapping rows James wrote in mixed case: the mappings repository looks sources up
/// lower-cased, so the console lists them lower-cased but cannot find or remove them; the
/// `JDBCVirtualUserTable` mailet's own query finds a row whose domain is lower-case for a
/// recipient whose local part is spelled as the row's user (domains arrive lower-cased, so a
/// mixed-case domain is never found). The README's limit.
#[test]
fn mixed_case_james_mapping_rows_are_found_by_the_jdbc_mailet_only() {
    let extra = format!(
        r#"{DATA_SOURCES}
  <virtualusertable-store>
    <table name="DefaultVirtualUserTable" destinationURL="db://maildb/VirtualUserTable"/>
  </virtualusertable-store>"#
    );
    let mut server = Server::start_edited(
        &Setup {
            smtp_handler: "<verifyRecipients>false</verifyRecipients>",
            pop3_handler: Some(""),
            remote_manager_handler: Some(ADMIN),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("carol", "secret");
    assert!(server.terminate().success());
    sqlite(
        &server,
        "INSERT INTO VirtualUserTable VALUES ('Info', 'LocalHost', 'carol'), \
         ('Sales', 'localhost', 'carol')",
    );
    // The mailet checks its table at start: it is added once the table exists.
    let xml = std::fs::read_to_string(&server.config).unwrap().replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="All" class="JDBCVirtualUserTable"><table>db://maildb/VirtualUserTable</table></mailet>"#,
        1,
    );
    std::fs::write(&server.config, xml).unwrap();
    server.spawn();
    let said = console(
        &server,
        &[
            "listallmappings",
            "listmapping sales@localhost",
            "removemapping sales@localhost carol",
        ],
    );
    for line in [
        "info@localhost -> carol",
        "sales@localhost -> carol",
        "No mappings found",
        "Removing mapping successful: false",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    for rcpt in ["Info@LocalHost", "Sales@localhost", "sales@localhost"] {
        server.smtp().send_mail(
            "s@example.net",
            &[rcpt],
            &format!("Subject: to {rcpt}\r\n\r\nx\r\n"),
        );
    }
    wait_long("the mails processed", Duration::from_secs(30), || {
        server.spool_empty()
    });
    let mut pop = crate::pg::open_mailbox(server.pop3_port, "carol", "secret");
    let top = pop.multi("TOP 1 0").unwrap().unwrap();
    assert!(
        top.iter().any(|l| l == "Subject: to Sales@localhost"),
        "{top:?}"
    );
    assert!(pop.cmd("STAT").unwrap().starts_with("+OK 1 "));
    let _ = pop.cmd("QUIT");
    let out = server.cli(&["queue", "list", "db://maildb/mail/address-error/"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("2 mail(s) in"), "{listed}");
    // The rows are as James wrote them.
    assert_eq!(
        sqlite(&server, "SELECT * FROM VirtualUserTable ORDER BY domain"),
        "Info|LocalHost|carol\nSales|localhost|carol\n"
    );
}
