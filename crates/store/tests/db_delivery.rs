//! Local delivery from a database spool to a database inbox of the same data source: the
//! inbox rows and the spool row's removal are one transaction (both happen or neither), and
//! the rows name the spool mail's body instead of copying it. On SQLite in every `cargo
//! test`, on PostgreSQL when `MAILROOM_TEST_POSTGRES` names a server (`.ci/run` sets it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailroom_mailet::{Envelope, Mail, MailAddress, Message};
use mailroom_store::db::{DataSourceSpec, DataSources, Pool};
use mailroom_store::{conformance, InboxRepository, MailRepository, SpoolRepository, StoreError};

fn spec(url: String) -> DataSourceSpec {
    DataSourceSpec {
        name: "maildb".into(),
        url,
        user: None,
        password: None,
        max: 8,
        lease: mailroom_store::DEFAULT_LEASE,
    }
}

async fn sqlite(home: &std::path::Path) -> DataSources {
    DataSources::open(&[spec("sqlite://var/mail.db".into())], home)
        .await
        .unwrap()
}

async fn postgres(home: &std::path::Path) -> DataSources {
    let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
    DataSources::open(&[spec(url)], home).await.unwrap()
}

/// A table name of this run alone (PostgreSQL tests share the database).
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a statement on the data source (test set-up).
async fn execute(pool: &Pool, statement: &str) {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match pool {
        Pool::Sqlite(p) => sqlx::raw_sql(statement).execute(p).await.map(|_| ()),
        Pool::Postgres(p) => sqlx::raw_sql(statement).execute(p).await.map(|_| ()),
    }
    .unwrap();
}

async fn count(pool: &Pool, statement: &str) -> i64 {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match pool {
        Pool::Sqlite(p) => sqlx::query_scalar(statement).fetch_one(p).await,
        Pool::Postgres(p) => sqlx::query_scalar(statement).fetch_one(p).await,
    }
    .unwrap()
}

fn mail(name: &str, users: &[&str]) -> Mail {
    Mail::new(
        Envelope::new(
            name,
            None,
            users
                .iter()
                .map(|u| MailAddress::parse(&format!("{u}@example.org")).unwrap())
                .collect(),
        ),
        Message::from_bytes(b"Subject: one transaction\r\n\r\nbody\r\n"),
    )
}

async fn delivery(sources: DataSources, sqlite: bool) {
    let pool = sources.pool("maildb").unwrap().clone();
    let (spool_table, inbox_table) = (unique("dspool"), unique("dinbox"));
    let spool = sources
        .spool("maildb", &[spool_table.clone(), "spool".into()])
        .await
        .unwrap();
    let inbox = sources
        .inbox("maildb", std::slice::from_ref(&inbox_table))
        .await
        .unwrap();
    conformance::spool_delivery(spool.as_ref(), inbox.as_ref()).await;

    // Two recipients of a mail delivered as stored: one transaction, one stored body.
    let bodies = |table: &str| {
        format!("SELECT count(*) FROM mailroom_bodies WHERE body_id LIKE '{table}/%'")
    };
    let before = count(&pool, &bodies(&spool_table)).await;
    let copies = count(&pool, &bodies(&inbox_table)).await;
    spool
        .store(&mail("shared-1", &["ann", "ben"]))
        .await
        .unwrap();
    let leased = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let mut deliveries = Vec::new();
    for user in ["ann", "ben"] {
        let trace = format!("Delivered-To: {user}@example.org\r\n");
        deliveries.push(
            inbox
                .deliver_once(
                    leased.mail.name(),
                    user,
                    trace.as_bytes(),
                    &leased.mail.message,
                )
                .await
                .unwrap(),
        );
    }
    // Nothing is written before the spool commits the deliveries.
    assert!(inbox
        .open_mailbox("ann")
        .await
        .unwrap()
        .messages()
        .is_empty());
    assert!(spool
        .complete_delivered(&leased.token, inbox.as_ref(), &deliveries)
        .await
        .unwrap());
    assert!(spool.list().await.unwrap().is_empty());
    assert_eq!(count(&pool, &bodies(&spool_table)).await, before + 1);
    assert_eq!(count(&pool, &bodies(&inbox_table)).await, copies, "no copy");
    let mut ann = inbox.open_mailbox("ann").await.unwrap();
    ann.delete(&[0]).await.unwrap();
    drop(ann);
    // Ben's row still names the body.
    assert_eq!(count(&pool, &bodies(&spool_table)).await, before + 1);
    let mut ben = inbox.open_mailbox("ben").await.unwrap();
    assert_eq!(ben.messages().len(), 1);
    ben.delete(&[0]).await.unwrap();
    drop(ben);
    assert_eq!(
        count(&pool, &bodies(&spool_table)).await,
        before,
        "removed with the last row"
    );

    // The removal fails after the inbox rows were inserted: neither happens.
    let trigger = if sqlite {
        format!(
            "CREATE TRIGGER {spool_table}_refuse BEFORE DELETE ON {spool_table} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    } else {
        format!(
            "CREATE FUNCTION {spool_table}_refuse() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER {spool_table}_refuse BEFORE DELETE ON {spool_table} \
             FOR EACH ROW EXECUTE FUNCTION {spool_table}_refuse()"
        )
    };
    execute(&pool, &trigger).await;
    spool.store(&mail("atomic-1", &["cleo"])).await.unwrap();
    let leased = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let deliver = || {
        inbox.deliver_once(
            leased.mail.name(),
            "cleo",
            b"Delivered-To: cleo@example.org\r\n",
            &leased.mail.message,
        )
    };
    let first = deliver().await.unwrap();
    match spool
        .complete_delivered(&leased.token, inbox.as_ref(), &[first])
        .await
    {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(inbox
        .open_mailbox("cleo")
        .await
        .unwrap()
        .messages()
        .is_empty());
    assert_eq!(spool.list().await.unwrap(), ["atomic-1"]);
    // Spent: the mail is delivered again (the SpoolManager runs it again).
    assert!(inbox.sync(&[first]).await.is_err());
    let drop_trigger = if sqlite {
        format!("DROP TRIGGER {spool_table}_refuse")
    } else {
        format!("DROP TRIGGER {spool_table}_refuse ON {spool_table}")
    };
    execute(&pool, &drop_trigger).await;
    let again = deliver().await.unwrap();
    assert!(spool
        .complete_delivered(&leased.token, inbox.as_ref(), &[again])
        .await
        .unwrap());
    assert_eq!(
        inbox.open_mailbox("cleo").await.unwrap().messages().len(),
        1
    );
    assert!(spool.list().await.unwrap().is_empty());

    // A lease lost (another worker has the mail): nothing is delivered nor removed.
    let short = std::sync::Arc::unwrap_or_clone(spool.clone())
        .with_lease_duration(Duration::from_millis(50));
    short.store(&mail("lost-1", &["dan"])).await.unwrap();
    let stale = short.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let taker = short.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let d = inbox
        .deliver_once(stale.mail.name(), "dan", b"", &stale.mail.message)
        .await
        .unwrap();
    assert!(matches!(
        short
            .complete_delivered(&stale.token, inbox.as_ref(), &[d])
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(inbox
        .open_mailbox("dan")
        .await
        .unwrap()
        .messages()
        .is_empty());
    short.complete(taker.token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delivery_and_removal_are_one_transaction() {
    let home = tempfile::tempdir().unwrap();
    delivery(sqlite(home.path()).await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_delivery_and_removal_are_one_transaction() {
    let home = tempfile::tempdir().unwrap();
    delivery(postgres(home.path()).await, false).await;
}

/// Concurrent SMTP-like stores into the spool (group commit on SQLite): every one that
/// returned is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_stores_are_all_durable_and_listed() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    let spool = sources
        .spool("maildb", &["spool".into(), "spool".into()])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let mut incoming = spool.incoming().await.unwrap();
                incoming
                    .write(format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes())
                    .await
                    .unwrap();
                let name = incoming.name().to_string();
                incoming
                    .commit(Envelope::new(name.clone(), None, Vec::new()))
                    .await
                    .unwrap();
                name
            })
        })
        .collect();
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    sources.close().await;
    drop(spool);
    // Reopened, as after a restart.
    let sources = sqlite(home.path()).await;
    let spool = sources
        .mail("maildb", &["spool".into(), "spool".into()])
        .await
        .unwrap();
    let mut listed = spool.list().await.unwrap();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    for name in &names {
        let mail = spool.retrieve(name).await.unwrap().unwrap();
        let subject = mail.message.header("Subject").unwrap();
        assert!(mail
            .message
            .to_bytes()
            .unwrap()
            .ends_with(format!("body {}\r\n", subject.trim()).as_bytes()));
    }
}

/// The spool row of a leased mail replaced meanwhile by a store from elsewhere (another
/// handle on the table: another node, `mailroom queue`): the replacement deleted the body the
/// staged deliveries would name. The deliveries must not commit naming a body that is gone;
/// the mail is delivered again (from what is stored now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_body_replaced_under_the_lease_is_never_named() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await;
    let spool = sources
        .spool("maildb", &["spool".into(), "spool".into()])
        .await
        .unwrap();
    let elsewhere = sources
        .mail("maildb", &["spool".into(), "spool".into()])
        .await
        .unwrap();
    let inbox = sources.inbox("maildb", &["inbox".into()]).await.unwrap();
    spool.store(&mail("replaced-1", &["eve"])).await.unwrap();
    let leased = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let d = inbox
        .deliver_once(leased.mail.name(), "eve", b"", &leased.mail.message)
        .await
        .unwrap();
    let mut other = mail("replaced-1", &["eve"]);
    other.message = Message::from_bytes(b"Subject: other\r\n\r\nanother body\r\n");
    elsewhere.store(&other).await.unwrap();
    let done = spool
        .complete_delivered(&leased.token, inbox.as_ref(), &[d])
        .await;
    let eve = inbox.open_mailbox("eve").await.unwrap();
    for i in 0..eve.messages().len() {
        // Every committed row has its body.
        let mut text = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut eve.open_message(i).await.unwrap(), &mut text)
            .await
            .unwrap();
        assert!(
            text.ends_with(b"\r\n\r\nbody\r\n"),
            "{done:?}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    assert!(done.is_err(), "{done:?}");
    assert!(eve.messages().is_empty());
    drop(eve);
    assert_eq!(spool.list().await.unwrap(), ["replaced-1"]);
}

/// Two data sources naming one database, a dbfile spool in one and the inbox in the other:
/// their body files are under different directories (`var/dbfile/<source>`), so a delivery
/// must not name (nor copy into) the spool's: every delivered message reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_sources_of_one_database_deliver_readable_bodies() {
    let home = tempfile::tempdir().unwrap();
    let mut other = spec("sqlite://var/mail.db".into());
    other.name = "otherdb".into();
    let sources = DataSources::open(&[spec("sqlite://var/mail.db".into()), other], home.path())
        .await
        .unwrap();
    let spool = sources
        .with_file_bodies()
        .spool("maildb", &["spool".into(), "spool".into()])
        .await
        .unwrap();
    let inbox = sources.inbox("otherdb", &["inbox".into()]).await.unwrap();
    spool.store(&mail("two-sources-1", &["fay"])).await.unwrap();
    let leased = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let d = inbox
        .deliver_once(leased.mail.name(), "fay", b"", &leased.mail.message)
        .await
        .unwrap();
    // Either one transaction or the usual sync then removal: the caller does what it says.
    if !spool
        .complete_delivered(&leased.token, inbox.as_ref(), &[d])
        .await
        .unwrap()
    {
        inbox.sync(&[d]).await.unwrap();
        spool.complete(leased.token).await.unwrap();
    }
    let fay = inbox.open_mailbox("fay").await.unwrap();
    assert_eq!(fay.messages().len(), 1);
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut fay.open_message(0).await.unwrap(), &mut text)
        .await
        .unwrap();
    assert!(
        text.ends_with(b"\r\n\r\nbody\r\n"),
        "{}",
        String::from_utf8_lossy(&text)
    );
}
