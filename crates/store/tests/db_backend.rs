//! The conformance suite against the database backend (and DBFile, its bodies in files): on
//! an embedded SQLite file in every `cargo test`, and on PostgreSQL when
//! `MAILROOM_TEST_POSTGRES=postgres://…` names a server (`.ci/run` starts a private cluster
//! and sets it; without it those cases are ignored).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mailroom_mailet::Message;
use mailroom_store::db::{DataSourceSpec, DataSources, Pool};
use mailroom_store::{
    conformance, InboxRepository, MailRepository, SpoolRepository, StoreError, UsersRepository,
};
use tokio::io::AsyncReadExt;

const PG_VAR: &str = "MAILROOM_TEST_POSTGRES";

fn sqlite_spec() -> DataSourceSpec {
    DataSourceSpec {
        name: "maildb".into(),
        url: "sqlite://var/mail.db".into(),
        user: None,
        password: None,
        max: 8,
        lease: mailroom_store::DEFAULT_LEASE,
    }
}

async fn sqlite(home: &std::path::Path) -> DataSources {
    DataSources::open(&[sqlite_spec()], home).await.unwrap()
}

/// A PostgreSQL data source on the server the environment names, with tables of a name no
/// other test uses (tests share the database).
async fn postgres(home: &std::path::Path) -> DataSources {
    let url = std::env::var(PG_VAR).expect("MAILROOM_TEST_POSTGRES");
    let spec = DataSourceSpec {
        url,
        ..sqlite_spec()
    };
    DataSources::open(&[spec], home).await.unwrap()
}

/// A name for this run's tables, so that runs and tests never meet.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_micros()
    )
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

async fn all_kinds(sources: DataSources) {
    let sources = Arc::new(sources);
    let users = sources
        .users("maildb", &path(&[&unique("users")]))
        .await
        .unwrap();
    conformance::users_repository(users.as_ref()).await;

    let mail = sources
        .mail("maildb", &path(&[&unique("mail"), "error"]))
        .await
        .unwrap();
    conformance::mail_repository(mail.as_ref()).await;

    let mappings = sources
        .mappings(
            "maildb",
            &[
                ("default".to_string(), unique("vut")),
                ("other".to_string(), unique("vut_other")),
            ],
        )
        .await
        .unwrap();
    conformance::mappings_repository(&mappings).await;

    let inbox = sources
        .inbox("maildb", &path(&[&unique("inbox")]))
        .await
        .unwrap();
    conformance::inbox_repository(inbox.as_ref()).await;
    let inbox = sources
        .inbox("maildb", &path(&[&unique("imported")]))
        .await
        .unwrap();
    conformance::inbox_import(inbox.as_ref()).await;

    let table = unique("spool");
    let spool = sources
        .spool("maildb", &path(&[&table, "spool"]))
        .await
        .unwrap();
    conformance::mail_repository(spool.as_ref()).await;

    let handle = tokio::runtime::Handle::current();
    conformance::spool_repository(&|| {
        // A repository of its own in one table for each case; reopened as after a restart.
        let repository = unique("s");
        let (sources, table, handle) = (sources.clone(), table.clone(), handle.clone());
        Box::new(move |lease| {
            let opened = tokio::task::block_in_place(|| {
                handle.block_on(sources.spool("maildb", &path(&[&table, &repository])))
            })
            .unwrap();
            Arc::new(Arc::unwrap_or_clone(opened).with_lease_duration(lease))
                as Arc<dyn SpoolRepository>
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let home = tempfile::tempdir().unwrap();
    all_kinds(sqlite(home.path()).await).await;
    assert!(home.path().join("var/mail.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_conformance() {
    let home = tempfile::tempdir().unwrap();
    all_kinds(postgres(home.path()).await).await;
}

/// DBFile (`dbfile://`): the same suite with the bodies in files under the home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dbfile_conformance() {
    let home = tempfile::tempdir().unwrap();
    all_kinds(sqlite(home.path()).await.with_file_bodies()).await;
    assert!(home.path().join("var/dbfile/maildb").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_dbfile_conformance() {
    let home = tempfile::tempdir().unwrap();
    all_kinds(postgres(home.path()).await.with_file_bodies()).await;
    assert!(home.path().join("var/dbfile/maildb").is_dir());
}

/// A schema written by a newer Mailroom is refused, saying so.
#[tokio::test]
async fn sqlite_schema_from_the_future_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    let Pool::Sqlite(pool) = sources.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO mailroom_migrations (version, description, success, checksum, \
         execution_time) VALUES (999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = DataSources::open(&[sqlite_spec()], home.path())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("999") && text.contains("newer Mailroom"),
        "{text}"
    );
    // Opening again with the same version works (migrations are not run twice).
    sqlx::query("DELETE FROM mailroom_migrations WHERE version = 999")
        .execute(&pool)
        .await
        .unwrap();
    DataSources::open(&[sqlite_spec()], home.path())
        .await
        .unwrap();
}

/// A James 2.3 users table, written as James wrote it: its users log in with their SHA-1
/// hash, which the login replaces with argon2id.
async fn james_users(sources: DataSources, table: &str) {
    let create = format!(
        "CREATE TABLE {table} (username VARCHAR(64) NOT NULL, pwdHash VARCHAR(50), \
         pwdAlgorithm VARCHAR(20), useForwarding SMALLINT, forwardDestination VARCHAR(255), \
         useAlias SMALLINT, alias VARCHAR(255), PRIMARY KEY(username))"
    );
    let insert = format!(
        "INSERT INTO {table} VALUES ('Joe', '5en6G6MezRroT3XKqkdPOmY/BfQ=', 'SHA', 1, \
         'joe@elsewhere.example', 0, NULL)"
    );
    let pool = sources.pool("maildb").unwrap().clone();
    match &pool {
        Pool::Sqlite(p) => {
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(p)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .execute(p)
                .await
                .unwrap();
        }
        Pool::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(p)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .execute(p)
                .await
                .unwrap();
        }
    }
    let users = sources.users("maildb", &path(&[table])).await.unwrap();
    let joe = users.get("joe").await.unwrap().expect("James's user");
    assert_eq!(joe.name, "Joe");
    assert!(joe.forward_enabled);
    assert_eq!(joe.forward.as_deref(), Some("joe@elsewhere.example"));
    assert!(!joe.alias_enabled);
    assert!(!users.verify_password("joe", "wrong").await.unwrap());
    assert!(users.verify_password("joe", "secret").await.unwrap());
    let upgraded = users.get("joe").await.unwrap().unwrap();
    assert!(upgraded.password_hash.starts_with("$argon2id$"));
    // James's column no longer holds the old hash; the algorithm says what is in force.
    let select = format!("SELECT pwdHash, pwdAlgorithm FROM {table}");
    let (hash, algorithm): (Option<String>, Option<String>) = match &pool {
        Pool::Sqlite(p) => sqlx::query_as(sqlx::AssertSqlSafe(select))
            .fetch_one(p)
            .await
            .unwrap(),
        Pool::Postgres(p) => sqlx::query_as(sqlx::AssertSqlSafe(select))
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(hash, None);
    assert_eq!(algorithm.as_deref(), Some("argon2id"));
    assert!(users.verify_password("JOE", "secret").await.unwrap());
}

#[tokio::test]
async fn sqlite_james_users_table_is_served_and_upgraded() {
    let home = tempfile::tempdir().unwrap();
    james_users(sqlite(home.path()).await, "users").await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_james_users_table_is_served_and_upgraded() {
    let home = tempfile::tempdir().unwrap();
    james_users(postgres(home.path()).await, &unique("jusers")).await;
}

/// A mail James stored (whole message in `message_body`, Java-serialized attributes) is
/// read, its attributes skipped; the inbox serves it over POP3 with a stable UIDL.
#[tokio::test]
async fn sqlite_james_mail_rows_are_served() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    let Pool::Sqlite(pool) = sources.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    sqlx::query(
        "CREATE TABLE inbox (message_name VARCHAR(200) NOT NULL, repository_name VARCHAR(255) \
         NOT NULL, message_state VARCHAR(30) NOT NULL, error_message VARCHAR(200) NULL, \
         sender VARCHAR(255) NULL, recipients TEXT NOT NULL, remote_host VARCHAR(255) NOT NULL, \
         remote_addr VARCHAR(20) NOT NULL, message_body BLOB NOT NULL, message_attributes BLOB \
         NULL, last_updated BIGINT NOT NULL, PRIMARY KEY (repository_name, message_name))",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (name, repo) in [
        ("Mail1170000000000-0", "joe"),
        ("Mail1170000000000-1", "error"),
    ] {
        sqlx::query(
            "INSERT INTO inbox VALUES ($1, $2, 'root', NULL, 'a@example.org', \
             'joe@example.org\r\nann@example.org', 'mx.example', '192.0.2.1', $3, $4, 1170000000000)",
        )
        .bind(name)
        .bind(repo)
        .bind(&b"Subject: from James\n\nbody\n"[..])
        .bind(&b"\xac\xed\x00\x05java"[..])
        .execute(&pool)
        .await
        .unwrap();
    }
    // Sized by the database, without the body read: CRLF, CR CR LF, NUL and high octets.
    let odd: &[u8] = b"Subject: odd\r\n\r\na\r\r\nb\x00\xff\\\n\r\n\n";
    sqlx::query(
        "INSERT INTO inbox VALUES ('Mail1170000000000-2', 'ann', 'root', NULL, NULL, \
         'ann@example.org', 'mx.example', '192.0.2.1', $1, NULL, 1170000000000)",
    )
    .bind(odd)
    .execute(&pool)
    .await
    .unwrap();
    let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
    let ann = inbox.open_mailbox("ann").await.unwrap();
    // Two bare LFs.
    assert_eq!(ann.messages()[0].size, odd.len() as u64 + 2);
    drop(ann);
    let mailbox = inbox.open_mailbox("joe").await.unwrap();
    assert_eq!(mailbox.messages().len(), 1);
    assert_eq!(mailbox.messages()[0].uid, "Mail1170000000000-0");
    // Three bare LFs, each counted as CRLF.
    assert_eq!(mailbox.messages()[0].size, 29);
    let mut text = Vec::new();
    mailbox
        .open_message(0)
        .await
        .unwrap()
        .read_to_end(&mut text)
        .await
        .unwrap();
    assert_eq!(text, b"Subject: from James\n\nbody\n");
    drop(mailbox);

    let errors = sources
        .mail("maildb", &path(&["inbox", "error"]))
        .await
        .unwrap();
    let mail = errors
        .retrieve("Mail1170000000000-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mail.envelope.recipients.len(), 2);
    assert_eq!(mail.envelope.sender.unwrap().to_string(), "a@example.org");
    assert_eq!(mail.envelope.remote_addr, "192.0.2.1");
    assert_eq!(mail.envelope.last_updated, 1_170_000_000_000);
    assert!(mail.envelope.attributes.is_empty());
    assert_eq!(
        mail.message.header("subject").as_deref(),
        Some("from James")
    );
}

/// A large message is written and read a chunk at a time: through the spool (streamed in,
/// read back into a file) and an inbox (streamed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_large_message_round_trip() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    let spool = sources
        .spool("maildb", &path(&["spool", "spool"]))
        .await
        .unwrap();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let lines = 8 * 1024 * 1024 / line.len();
    let mut incoming = spool.incoming().await.unwrap();
    incoming.write(b"Subject: big\r\n\r\n").await.unwrap();
    for _ in 0..lines {
        incoming.write(line).await.unwrap();
    }
    let name = incoming.name().to_string();
    incoming
        .commit(mailroom_mailet::Envelope::new("x", None, vec![]))
        .await
        .unwrap();
    let size = 16 + (lines * line.len()) as u64;
    let mail = spool.retrieve(&name).await.unwrap().unwrap();
    assert_eq!(mail.message.size(), size);
    assert_eq!(mail.message.header("subject").as_deref(), Some("big"));
    let mut body = mail.message.body().open().unwrap();
    let mut buf = vec![0; line.len()];
    std::io::Read::read_exact(&mut body, &mut buf).unwrap();
    assert_eq!(buf, line);

    let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
    let delivery = inbox
        .deliver("bob", b"Return-Path: <>\r\n", &mail.message)
        .await
        .unwrap();
    inbox.sync(&[delivery]).await.unwrap();
    let mailbox = inbox.open_mailbox("bob").await.unwrap();
    assert_eq!(mailbox.messages()[0].size, size + 17);
    let mut stream = mailbox.open_message(0).await.unwrap();
    let mut total = 0u64;
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, size + 17);
    drop(stream);
    drop(mailbox);

    // Removing the mail removes its chunks; nothing else is left behind.
    assert!(spool.remove(&name).await.unwrap());
    let mut mailbox = inbox.open_mailbox("bob").await.unwrap();
    mailbox.delete(&[0]).await.unwrap();
    drop(mailbox);
    let Pool::Sqlite(pool) = sources.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailroom_bodies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(chunks, 0);
}

/// Bad URLs: undefined data sources and table names that could inject SQL are refused.
#[tokio::test]
async fn bad_urls_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    assert!(matches!(
        sources.mail("nodb", &path(&["mail", "error"])).await,
        Err(StoreError::InvalidUrl(..))
    ));
    for bad in ["x;DROP TABLE users", "mailroom_bodies", "a b"] {
        assert!(matches!(
            sources.mail("maildb", &path(&[bad, "error"])).await,
            Err(StoreError::InvalidUrl(..))
        ));
    }
    assert!(sources.users("maildb", &path(&["us\"ers"])).await.is_err());
    let bad = DataSourceSpec {
        url: "mysql://db/x".into(),
        ..sqlite_spec()
    };
    assert!(DataSources::open(&[bad], home.path()).await.is_err());
    let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
    assert!(matches!(
        inbox
            .deliver("../x", b"", &Message::from_bytes(b"a: b\r\n\r\n"))
            .await,
        Err(StoreError::InvalidName(..))
    ));
}

/// A James row on PostgreSQL is sized by the database (its `bytea` never read to list the
/// mailbox), exactly as POP3 sends it: CRLF, CR CR LF, NUL, high octets and `\`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_james_rows_are_sized_by_the_database() {
    let home = tempfile::tempdir().unwrap();
    let sources = postgres(home.path()).await;
    let Pool::Postgres(pool) = sources.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    let table = unique("jinbox");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (message_name VARCHAR(200) NOT NULL, repository_name VARCHAR(255) \
         NOT NULL, message_state VARCHAR(30) NOT NULL, error_message VARCHAR(200) NULL, \
         sender VARCHAR(255) NULL, recipients TEXT NOT NULL, remote_host VARCHAR(255) NOT NULL, \
         remote_addr VARCHAR(20) NOT NULL, message_body BYTEA NOT NULL, message_attributes BYTEA \
         NULL, last_updated TIMESTAMP NOT NULL, PRIMARY KEY (repository_name, message_name))"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let bodies: [&[u8]; 2] = [
        b"Subject: from James\n\nbody\n",
        b"Subject: odd\r\n\r\na\r\r\nb\x00\xff\\\n\r\n\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES ($1, 'joe', 'root', NULL, NULL, 'joe@example.org', \
             'mx.example', '192.0.2.1', $2, NULL, now())"
        )))
        .bind(format!("Mail1170000000000-{i}"))
        .bind(*body)
        .execute(&pool)
        .await
        .unwrap();
    }
    let inbox = sources.inbox("maildb", &path(&[&table])).await.unwrap();
    let mailbox = inbox.open_mailbox("joe").await.unwrap();
    let sizes: Vec<u64> = mailbox.messages().iter().map(|m| m.size).collect();
    assert_eq!(
        sizes,
        [bodies[0].len() as u64 + 3, bodies[1].len() as u64 + 2]
    );
}

/// Opening an SQLite spool drops the leases left in it only when no other process has it
/// open: a second opener (`mailroom queue` beside a running server) leaves the live leases
/// alone; the next opener after the owner is gone takes the stale ones over at once.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_spool_leases_are_dropped_only_when_stale() {
    let home = tempfile::tempdir().unwrap();
    let url = path(&["spool", "spool"]);
    let owner = sqlite(home.path())
        .await
        .spool("maildb", &url)
        .await
        .unwrap();
    let name = mailroom_mailet::new_mail_name();
    owner
        .store(&mailroom_mailet::Mail::new(
            mailroom_mailet::Envelope::new(name.clone(), None, Vec::new()),
            Message::from_bytes(b"Subject: x\r\n\r\nx\r\n"),
        ))
        .await
        .unwrap();
    let leased = owner
        .lease(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the mail is due");

    // Another process opens the spool while the owner runs: the lease holds.
    let other = sqlite(home.path())
        .await
        .spool("maildb", &url)
        .await
        .unwrap();
    assert!(other
        .lease(std::time::Duration::from_millis(200))
        .await
        .unwrap()
        .is_none());
    owner.update(&leased.token, &leased.mail).await.unwrap();
    drop(other);

    // The owner is gone (a crash: its lease is never released): the next opener owns the
    // spool and takes the mail at once, without waiting for the lease to expire.
    drop(owner);
    let next = sqlite(home.path())
        .await
        .spool("maildb", &url)
        .await
        .unwrap();
    let again = next
        .lease(std::time::Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the stale lease was dropped");
    assert_eq!(again.mail.envelope.name, name);
}

/// A virtual user table James wrote (`%` wildcards, targets joined by `;` or `,`, a bare user)
/// is read as it is; what `addmapping` writes, James's mailet query reads.
async fn james_virtual_user_table(sources: DataSources) {
    use mailroom_store::mappings::{targets_of, Source, Target};
    use mailroom_store::MappingsRepository;
    let table = unique("virtualusertable");
    let mappings = sources
        .mappings("maildb", &[("default".to_string(), table.clone())])
        .await
        .unwrap();
    let pool = sources.pool("maildb").unwrap().clone();
    let rows = [
        ("info", "example.org", "carol;bob@example.net"),
        ("%", "example.com", "alice@example.org"),
        ("sales", "%", "dave@example.org, erin@example.org"),
    ];
    for (user, domain, target) in rows {
        let insert =
            format!("INSERT INTO {table} (\"user\", domain, target_address) VALUES ($1, $2, $3)");
        match &pool {
            Pool::Sqlite(p) => {
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(user)
                    .bind(domain)
                    .bind(target)
                    .execute(p)
                    .await
                    .unwrap();
            }
            Pool::Postgres(p) => {
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(user)
                    .bind(domain)
                    .bind(target)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }
    let t = |s: &str| Target::parse(s).unwrap();
    let address = |s: &str| mailroom_mailet::MailAddress::parse(s).unwrap();
    assert_eq!(
        targets_of(&mappings, "default", &address("info@example.org"))
            .await
            .unwrap(),
        vec![t("carol"), t("bob@example.net")]
    );
    assert_eq!(
        targets_of(&mappings, "default", &address("anyone@example.com"))
            .await
            .unwrap(),
        vec![t("alice@example.org")]
    );
    assert_eq!(
        targets_of(&mappings, "default", &address("sales@example.test"))
            .await
            .unwrap(),
        vec![t("dave@example.org"), t("erin@example.org")]
    );
    let all = mappings.all("default").await.unwrap();
    let sources: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sources, ["*@example.com", "info@example.org", "sales@*"]);
    // Added through the repository: one row, targets joined by `;`, as James writes them.
    let info = Source::parse("info@example.org").unwrap();
    assert!(mappings
        .add("default", &info, &t("domain:example.net"))
        .await
        .unwrap());
    let select = format!(
        "SELECT target_address FROM {table} WHERE \"user\" = 'info' AND domain = 'example.org'"
    );
    let stored: String = match &pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(select))
                .fetch_one(p)
                .await
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(select))
                .fetch_one(p)
                .await
        }
    }
    .unwrap();
    assert_eq!(stored, "carol;bob@example.net;domain:example.net");
    // A target with `;` cannot be kept in such a row.
    assert!(mappings
        .add("default", &info, &t("error:550 no; never"))
        .await
        .is_err());
    // An unknown table maps nothing and cannot be written.
    assert!(mappings.get("nosuch", &info).await.unwrap().is_empty());
    assert!(mappings.add("nosuch", &info, &t("carol")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_james_virtual_user_table() {
    let home = tempfile::tempdir().unwrap();
    james_virtual_user_table(sqlite(home.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_james_virtual_user_table() {
    let home = tempfile::tempdir().unwrap();
    james_virtual_user_table(postgres(home.path()).await).await;
}

/// The advisory lock key of `user`'s mailbox in `table` (FNV-1a of `table/user`, as the inbox
/// computes it: every node must agree on it).
fn mailbox_lock_key(table: &str, user: &str) -> i64 {
    format!("{table}/{user}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) as i64
}

/// Two nodes on one PostgreSQL. Node A's mailbox lock connection breaks while A's POP3
/// session has the mailbox open, and node B opens the mailbox meanwhile: A's session must not
/// delete (its snapshot is no longer its own), and the message stays for B. When B is refused
/// instead (A's check took the lock again first), A's lock is held and the test tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_a_mailbox_whose_lock_was_lost_deletes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (postgres(home.path()).await, postgres(home.path()).await);
    let table = unique("locks");
    let inbox_a = a.inbox("maildb", &path(&[&table])).await.unwrap();
    let inbox_b = b.inbox("maildb", &path(&[&table])).await.unwrap();
    let message = Message::from_bytes(b"Subject: kept\r\n\r\nbody\r\n");
    let delivery = inbox_a.deliver("bob", b"", &message).await.unwrap();
    inbox_a.sync(&[delivery]).await.unwrap();
    let Pool::Postgres(pg) = a.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    let key = mailbox_lock_key(&table, "bob");
    for _attempt in 0..5 {
        let mut mine = inbox_a.open_mailbox("bob").await.unwrap();
        assert!(matches!(
            inbox_b.open_mailbox("bob").await,
            Err(StoreError::InUse(_))
        ));
        // PostgreSQL restarted, or the back end killed: its locks go with it.
        let killed: bool = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1",
        )
        .bind(key)
        .fetch_one(&pg)
        .await
        .unwrap();
        assert!(killed);
        let Ok(theirs) = inbox_b.open_mailbox("bob").await else {
            // A's check locked it again before B came: A keeps the mailbox.
            drop(mine);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        assert!(matches!(mine.delete(&[0]).await, Err(StoreError::InUse(_))));
        drop(mine);
        assert_eq!(theirs.messages().len(), 1, "nothing deleted");
        return;
    }
    panic!("node B never opened the mailbox while A's lock connection was down");
}

/// Nodes starting together on a fresh database open the same inbox table at once: every one
/// of them opens it (the index an inbox adds was created outside the lock that serializes
/// the tables' creation, and all but one node failed on a duplicate `pg_class` entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_nodes_starting_together_all_open_the_inbox() {
    let homes: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for home in &homes {
        nodes.push(postgres(home.path()).await);
    }
    for _ in 0..10 {
        let table = unique("together");
        let opens: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, table) = (node.clone(), table.clone());
                tokio::spawn(async move { node.inbox("maildb", &[table]).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
    }
}

/// A body that lost a chunk (a damaged database) or the tail of its file (DBFile) fails at its
/// end when read out, rather than passing for the whole message (a POP3 client would then
/// delete it); an intact one reads whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_ends_short_is_an_error_when_read() {
    let home = tempfile::tempdir().unwrap();
    let plain = sqlite(home.path()).await;
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let mut text = b"Subject: big\r\n\r\n".to_vec();
    while text.len() < 700 * 1024 {
        text.extend_from_slice(line);
    }
    let message = Message::from_bytes(&text);
    for (sources, table) in [
        (plain.clone(), "chunked"),
        (plain.with_file_bodies(), "filed"),
    ] {
        let inbox = sources.inbox("maildb", &path(&[table])).await.unwrap();
        for user in ["intact", "damaged"] {
            let delivery = inbox.deliver(user, b"", &message).await.unwrap();
            inbox.sync(&[delivery]).await.unwrap();
        }
        let mailbox = inbox.open_mailbox("intact").await.unwrap();
        assert_eq!(read_all(&*mailbox).await.unwrap(), text.len());
        drop(mailbox);
        // Damage the second user's body: its second chunk, or the end of its file.
        let Pool::Sqlite(pool) = sources.pool("maildb").unwrap().clone() else {
            unreachable!()
        };
        let select =
            format!("SELECT mailroom_body_id FROM {table} WHERE repository_name = 'damaged'");
        let body_id: String = sqlx::query_scalar(sqlx::AssertSqlSafe(select))
            .fetch_one(&pool)
            .await
            .unwrap();
        match body_id.strip_prefix("dbfile:") {
            None => {
                let gone =
                    sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1 AND seq = 1")
                        .bind(&body_id)
                        .execute(&pool)
                        .await
                        .unwrap();
                assert_eq!(gone.rows_affected(), 1);
            }
            Some(file) => {
                let file = home.path().join("var/dbfile/maildb").join(file);
                let len = std::fs::metadata(&file).unwrap().len();
                std::fs::File::options()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_len(len - 1000)
                    .unwrap();
            }
        }
        let mailbox = inbox.open_mailbox("damaged").await.unwrap();
        let error = read_all(&*mailbox).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{table}");
    }
}

/// Reads the first message of `mailbox` to its end: how many octets.
async fn read_all(mailbox: &dyn mailroom_store::Mailbox) -> std::io::Result<usize> {
    let mut stream = mailbox.open_message(0).await.unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.map(|_| all.len())
}
