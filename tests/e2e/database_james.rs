//! A James 2.3 PostgreSQL database served as it is: tables made with the statements of James
//! 2.3.2's `sqlResources.xml` (PostgreSQL dialect: `bytea` bodies, `timestamp`s), rows as
//! James wrote them (SHA-1 base64 password hashes, LF line ends, Java-serialized attributes).
//! Its user logs in over POP3 with the old password, which is then kept as argon2id; the mails
//! James stored are listed and read, their attributes skipped with one warning per mail.

use crate::database::in_database;
use crate::harness::{Server, Setup};
use crate::pg::{data_sources, open_mailbox, PgCluster, Pop3};

/// James 2.3.2's `JamesUsersJdbcRepository` table (its default `createTable`).
const USERS: &str = "CREATE TABLE users (username VARCHAR(64) NOT NULL, pwdHash VARCHAR(50), \
    pwdAlgorithm VARCHAR(20), useForwarding SMALLINT, forwardDestination VARCHAR(255), \
    useAlias SMALLINT, alias VARCHAR(255), PRIMARY KEY(username))";

/// James 2.3.2's mail repository table in the PostgreSQL dialect, named `table`.
fn mail_table(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (message_name varchar (200) NOT NULL, \
         repository_name varchar (255) NOT NULL, message_state varchar (30) NOT NULL, \
         error_message varchar (200) NULL, sender varchar (255) NULL, \
         recipients text NOT NULL, remote_host varchar (255) NOT NULL, \
         remote_addr varchar (20) NOT NULL, message_body bytea NOT NULL, \
         message_attributes bytea NULL, last_updated timestamp NOT NULL, \
         PRIMARY KEY (repository_name, message_name))"
    )
}

/// A row as James's `JDBCMailRepository` stored it: the whole message in `message_body`,
/// the attributes a Java-serialized `HashMap` (its stream header and a class name).
fn james_row(table: &str, name: &str, repository: &str, state: &str, body: &str) -> String {
    let body: String = body.bytes().map(|b| format!("{b:02x}")).collect();
    let attributes: String = b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "INSERT INTO {table} VALUES ('{name}', '{repository}', '{state}', NULL, \
         'sender@example.org', 'joe@localhost', 'mx.example.org', '192.0.2.7', \
         '\\x{body}', '\\x{attributes}', TIMESTAMP '2007-01-28 16:00:00')"
    )
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn a_james_2_3_postgresql_database_is_served_as_it_is() {
    let pg = PgCluster::start();
    pg.query(USERS);
    // "secret", hashed as James 2.3 hashes: base64 of its SHA-1.
    pg.query(
        "INSERT INTO users VALUES ('joe', '5en6G6MezRroT3XKqkdPOmY/BfQ=', 'SHA', 0, NULL, 0, \
         NULL)",
    );
    pg.query(&mail_table("inbox"));
    pg.query(&mail_table("mail"));
    let first =
        "Subject: first from James\nMessage-ID: <j1@james>\n\nline one\n.starts with a dot\n";
    let second = "Subject: second from James\nMessage-ID: <j2@james>\n\nline two\n";
    pg.query(&james_row(
        "inbox",
        "Mail1170000000000-1",
        "joe",
        "root",
        first,
    ));
    pg.query(&james_row(
        "inbox",
        "Mail1170000000000-2",
        "joe",
        "root",
        second,
    ));
    pg.query(&james_row(
        "mail",
        "Mail1170000000000-3",
        "error",
        "error",
        "Subject: kept by James\n\nstuck\n",
    ));

    let extra = data_sources(&pg.url(), 300);
    let server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    // The old password works, a wrong one does not.
    let mut pop = Pop3::connect(server.pop3_port).unwrap();
    let reply = pop.login("joe", "wrong").unwrap();
    assert!(reply.starts_with("-ERR"), "{reply}");
    let mut pop = open_mailbox(server.pop3_port, "joe", "secret");
    let uidl = pop.multi("UIDL").unwrap().unwrap();
    assert_eq!(
        uidl,
        ["1 Mail1170000000000-1", "2 Mail1170000000000-2"],
        "James's message names are the UIDLs"
    );
    // Sizes and texts as POP3 sends them: CRLF line ends, dot-stuffed on the wire.
    let list = pop.multi("LIST").unwrap().unwrap();
    let crlf = |text: &str| text.replace('\n', "\r\n");
    assert_eq!(
        list,
        [
            format!("1 {}", crlf(first).len()),
            format!("2 {}", crlf(second).len())
        ]
    );
    let retr = pop.multi("RETR 1").unwrap().unwrap();
    let expected: Vec<&str> = first.lines().collect();
    assert_eq!(retr, expected);
    assert!(pop.cmd("QUIT").unwrap().starts_with("+OK"));

    // The login moved the hash to argon2id; James's column holds no hash now.
    assert_eq!(
        pg.query("SELECT pwdhash IS NULL, pwdalgorithm FROM users WHERE username = 'joe'"),
        "t|argon2id"
    );
    let mut pop = open_mailbox(server.pop3_port, "JOE", "secret");
    assert!(pop.cmd("STAT").unwrap().starts_with("+OK 2 "));
    let _ = pop.cmd("QUIT");

    // The mail James left in its error repository is listed and shown; its Java attributes
    // are skipped with a warning, once per reading of the mail.
    let out = server.cli(&["queue", "list", "db://maildb/mail/error/"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warned}");
    assert!(
        listed.contains("1 mail(s) in")
            && listed.contains("Mail1170000000000-3")
            && listed.contains("recipients=joe@localhost"),
        "{listed}"
    );
    assert_eq!(
        warned.matches("Java serialized").count(),
        1,
        "one warning for the one mail: {warned}"
    );
    let out = server.cli(&[
        "queue",
        "show",
        "Mail1170000000000-3",
        "db://maildb/mail/error/",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("Subject: kept by James"), "{shown}");
}
