//! Administration of a server whose repositories are all in the embedded SQLite database:
//! users added, changed and deleted on the RemoteManager live in James's `users` table and
//! log in over POP3 before and after a restart; a `kill -9` in the middle of a burst loses
//! no acknowledged mail and delivers none twice; a database written by a newer Mailroom stops
//! the start with a message that says so (on SQLite, and on PostgreSQL in `.ci/run`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{console, python, Server, Setup, ADMIN, BIN};
use crate::pg::{mailbox_ids, try_send, wait_long, Pop3};

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
fn kill_9_during_a_burst_into_sqlite_loses_nothing_and_delivers_once() {
    let mut server = Server::start_edited(&setup(), in_database);
    server.add_user("bob", "secret");
    let port = server.smtp_port;
    // Each send is a session of its own: a kill ends at most one per sender.
    let outcomes: crate::pg::Outcomes = Arc::default();
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                for n in 0..100 {
                    let id = format!("<kill-{t}-{n}@test>");
                    let reply = try_send(port, "bob@localhost", &id).ok();
                    let gone = reply.is_none();
                    outcomes.lock().unwrap().push((id, reply));
                    if gone {
                        return;
                    }
                }
            })
        })
        .collect();
    let accepted = |outcomes: &[(String, Option<String>)]| -> Vec<String> {
        outcomes
            .iter()
            .filter(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("250")))
            .map(|(id, _)| id.clone())
            .collect()
    };
    wait_long("part of the burst", Duration::from_secs(60), || {
        accepted(&outcomes.lock().unwrap()).len() >= 40
    });
    server.kill();
    for sender in senders {
        sender.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let accepted = accepted(&outcomes);
    assert!(
        outcomes.iter().any(|(_, r)| r.is_none()),
        "the burst ended before the kill: {} sent",
        outcomes.len()
    );
    for (id, reply) in &outcomes {
        if let Some(reply) = reply {
            assert!(reply.starts_with("250"), "{id}: {reply}");
        }
    }

    // What the restart has to finish: mails acknowledged and not yet delivered, and mails
    // delivered but not yet removed from the spool (delivered again: the inbox keeps one).
    let left = sqlite(&server, "SELECT count(*) FROM spool");
    let inboxed = sqlite(&server, "SELECT count(*) FROM inbox");
    server.spawn();
    let mut delivered: HashMap<String, usize> = HashMap::new();
    wait_long(
        "every acknowledged mail delivered",
        Duration::from_secs(60),
        || {
            delivered.clear();
            for id in mailbox_ids(server.pop3_port, "bob", "secret") {
                *delivered.entry(id).or_default() += 1;
            }
            accepted.iter().all(|id| delivered.contains_key(id))
        },
    );
    wait_long("the spool empty", Duration::from_secs(60), || {
        sqlite(&server, "SELECT count(*) FROM spool") == "0\n"
    });
    // A database inbox delivers idempotently: once, even for the mails being delivered when
    // the server died (a mail acknowledged as the kill came may be there too, once).
    delivered.clear();
    for id in mailbox_ids(server.pop3_port, "bob", "secret") {
        *delivered.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    eprintln!(
        "{} acknowledged before the kill; then {} in the spool, {} in the inbox; {} delivered",
        accepted.len(),
        left.trim(),
        inboxed.trim(),
        delivered.len()
    );
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
