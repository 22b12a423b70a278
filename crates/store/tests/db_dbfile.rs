//! DBFile (`dbfile://`) beyond the conformance suite (which `db_backend.rs` runs on it): where
//! the body files go, that they go when their rows do, that a missing one is an error for
//! that mail alone, that orphans are swept, and that `db://` and `dbfile://` read each
//! other's mail. On an embedded SQLite file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, MailAddress, Message};
use mailroom_store::db::{DataSourceSpec, DataSources, Pool};
use mailroom_store::{InboxRepository, MailRepository, SpoolRepository, StoreError};
use tokio::io::AsyncReadExt;

async fn sqlite(home: &Path) -> DataSources {
    let spec = DataSourceSpec {
        name: "maildb".into(),
        url: "sqlite://var/mail.db".into(),
        user: None,
        password: None,
        max: 4,
        lease: mailroom_store::DEFAULT_LEASE,
    };
    DataSources::open(&[spec], home).await.unwrap()
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The body files of `table` (not the temporary ones), sorted.
fn files(home: &Path, table: &str) -> Vec<PathBuf> {
    let dir = home.join("var/dbfile/maildb").join(table);
    let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

fn tmp_files(home: &Path, table: &str) -> usize {
    std::fs::read_dir(home.join("var/dbfile/maildb").join(table).join("tmp"))
        .map_or(0, |d| d.count())
}

async fn count(sources: &DataSources, statement: &str) -> i64 {
    let Pool::Sqlite(pool) = sources.pool("maildb").unwrap().clone() else {
        unreachable!()
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(statement.to_string()))
        .fetch_one(&pool)
        .await
        .unwrap()
}

fn mail(name: &str, text: &[u8]) -> mailroom_mailet::Mail {
    let envelope = Envelope::new(
        name,
        MailAddress::parse("a@example.org").ok(),
        vec![MailAddress::parse("b@example.org").unwrap()],
    );
    mailroom_mailet::Mail::new(envelope, Message::from_bytes(text))
}

/// A large message streamed into a dbfile spool lands in one file (nothing in
/// `mailroom_bodies`, `message_body` empty as with `db://`), is read where it is, delivered
/// to a dbfile inbox (its own file) and streamed out; removing the rows removes the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_files_and_go_with_their_rows() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await.with_file_bodies();
    let spool = sources
        .spool("maildb", &path(&["spool", "spool"]))
        .await
        .unwrap();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let lines = 4 * 1024 * 1024 / line.len();
    let mut incoming = spool.incoming().await.unwrap();
    incoming.write(b"Subject: big\r\n\r\n").await.unwrap();
    for _ in 0..lines {
        incoming.write(line).await.unwrap();
    }
    let name = incoming.name().to_string();
    incoming
        .commit(Envelope::new("x", None, vec![]))
        .await
        .unwrap();
    let body_len = (lines * line.len()) as u64;
    let spool_files = files(home.path(), "spool");
    assert_eq!(spool_files.len(), 1);
    assert_eq!(std::fs::metadata(&spool_files[0]).unwrap().len(), body_len);
    assert_eq!(tmp_files(home.path(), "spool"), 0);
    assert_eq!(
        count(&sources, "SELECT COUNT(*) FROM mailroom_bodies").await,
        0
    );
    assert_eq!(
        count(
            &sources,
            "SELECT COUNT(*) FROM spool WHERE length(message_body) = 0 \
             AND mailroom_body_id LIKE 'dbfile:spool/%'"
        )
        .await,
        1
    );

    let mail = spool.retrieve(&name).await.unwrap().unwrap();
    assert_eq!(mail.message.size(), 16 + body_len);
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
    assert_eq!(files(home.path(), "inbox").len(), 1);
    let mut mailbox = inbox.open_mailbox("bob").await.unwrap();
    assert_eq!(mailbox.messages()[0].size, 17 + 16 + body_len);
    let mut text = Vec::new();
    mailbox
        .open_message(0)
        .await
        .unwrap()
        .read_to_end(&mut text)
        .await
        .unwrap();
    assert_eq!(text.len() as u64, 17 + 16 + body_len);
    assert!(text.starts_with(b"Return-Path: <>\r\nSubject: big\r\n\r\n0123"));
    drop(body);
    drop(mail);

    // Changed under a lease, its body unchanged: the row keeps its file (no copy).
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let mut changed = leased.mail.clone();
    changed.envelope.state = "transport".into();
    spool.update(&leased.token, &changed).await.unwrap();
    let after = files(home.path(), "spool");
    assert_eq!(after, spool_files);
    drop(changed);
    drop(leased.mail);
    spool.complete(leased.token).await.unwrap();
    assert!(files(home.path(), "spool").is_empty());
    mailbox.delete(&[0]).await.unwrap();
    drop(mailbox);
    assert!(files(home.path(), "inbox").is_empty());

    // A message dropped before its commit leaves no file either.
    let mut incoming = spool.incoming().await.unwrap();
    incoming.write(b"Subject: gone\r\n\r\n").await.unwrap();
    incoming.write(&vec![b'x'; 600 * 1024]).await.unwrap();
    drop(incoming);
    assert!(files(home.path(), "spool").is_empty());
    assert_eq!(tmp_files(home.path(), "spool"), 0);
}

/// A body file removed by hand: that message is an error (`Corrupt`, naming the file), the
/// others are read; in the spool the mail is put aside for an hour and the next one leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_body_file_fails_that_mail_alone() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await.with_file_bodies();
    let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
    for text in [
        &b"Subject: 1\r\n\r\none\r\n"[..],
        b"Subject: 2\r\n\r\ntwo\r\n",
    ] {
        inbox
            .deliver("joe", b"", &Message::from_bytes(text))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let listed = files(home.path(), "inbox");
    assert_eq!(listed.len(), 2);
    let mailbox = inbox.open_mailbox("joe").await.unwrap();
    // Which file is the first message's: the one holding "one".
    let first = listed
        .iter()
        .find(|p| std::fs::read(p).unwrap() == b"one\r\n")
        .unwrap();
    std::fs::remove_file(first).unwrap();
    assert_eq!(mailbox.messages().len(), 2);
    match mailbox.open_message(0).await {
        Err(StoreError::Corrupt(_, why)) => assert!(why.contains("missing"), "{why}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a message without its body file was opened"),
    }
    let mut text = Vec::new();
    mailbox
        .open_message(1)
        .await
        .unwrap()
        .read_to_end(&mut text)
        .await
        .unwrap();
    assert_eq!(text, b"Subject: 2\r\n\r\ntwo\r\n");
    drop(mailbox);

    let spool = sources
        .spool("maildb", &path(&["spool", "spool"]))
        .await
        .unwrap();
    spool
        .store(&mail("Mail1-a", b"Subject: a\r\n\r\nfirst\r\n"))
        .await
        .unwrap();
    spool
        .store(&mail("Mail1-b", b"Subject: b\r\n\r\nsecond\r\n"))
        .await
        .unwrap();
    let first = files(home.path(), "spool")
        .into_iter()
        .find(|p| std::fs::read(p).unwrap() == b"first\r\n")
        .unwrap();
    std::fs::remove_file(first).unwrap();
    assert!(matches!(
        spool.retrieve("Mail1-a").await,
        Err(StoreError::Corrupt(..))
    ));
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(leased.mail.name(), "Mail1-b");
    let later = spool.next_attempt("Mail1-a").await.unwrap().unwrap();
    assert!(later > SystemTime::now() + Duration::from_secs(3000));
    spool.complete(leased.token).await.unwrap();
    assert!(spool.lease(Duration::ZERO).await.unwrap().is_none());
    // Its row can still be removed by an administrator.
    assert!(spool.remove("Mail1-a").await.unwrap());
}

/// Files no row names, older than a day, are swept when the table is opened (and temporary
/// files that old); a file a row names stays, however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_files_are_swept() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await.with_file_bodies();
    let repo = sources
        .mail("maildb", &path(&["mail", "error"]))
        .await
        .unwrap();
    repo.store(&mail("Mail1-kept", b"Subject: k\r\n\r\nkept\r\n"))
        .await
        .unwrap();
    let dir = home.path().join("var/dbfile/maildb/mail");
    let kept = files(home.path(), "mail");
    assert_eq!(kept.len(), 1);
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    let age = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap()
    };
    age(&kept[0]);
    let orphan = dir.join("Mail0000000000000-1-0000000000000000");
    std::fs::write(&orphan, b"left by a crash").unwrap();
    age(&orphan);
    let young = dir.join("Mail0000000000000-2-0000000000000000");
    std::fs::write(&young, b"maybe being committed").unwrap();
    let tmp = dir.join("tmp/Mail0000000000000-3-0000000000000000");
    std::fs::write(&tmp, b"a transfer cut off").unwrap();
    age(&tmp);
    drop(repo);

    let repo = sources
        .mail("maildb", &path(&["mail", "error"]))
        .await
        .unwrap();
    assert!(!orphan.exists());
    assert!(!tmp.exists());
    assert!(young.exists());
    assert!(kept[0].exists());
    let mail = repo.retrieve("Mail1-kept").await.unwrap().unwrap();
    assert_eq!(
        mail.message.to_bytes().unwrap(),
        b"Subject: k\r\n\r\nkept\r\n"
    );
}

/// A table written by `db://` and then opened as `dbfile://` (or back) serves every mail:
/// the id says where each body is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_and_dbfile_read_each_other() {
    let home = tempfile::tempdir().unwrap();
    let plain = sqlite(home.path()).await;
    let files_too = plain.with_file_bodies();
    let db = plain
        .mail("maildb", &path(&["mail", "error"]))
        .await
        .unwrap();
    db.store(&mail("Mail1-db", b"Subject: db\r\n\r\nchunks\r\n"))
        .await
        .unwrap();
    let dbfile = files_too
        .mail("maildb", &path(&["mail", "error"]))
        .await
        .unwrap();
    dbfile
        .store(&mail("Mail1-file", b"Subject: file\r\n\r\nfile\r\n"))
        .await
        .unwrap();
    assert_eq!(files(home.path(), "mail").len(), 1);
    for repo in [&db, &dbfile] {
        for (name, body) in [
            ("Mail1-db", &b"chunks\r\n"[..]),
            ("Mail1-file", b"file\r\n"),
        ] {
            let mail = repo.retrieve(name).await.unwrap().unwrap();
            assert!(mail.message.to_bytes().unwrap().ends_with(body));
        }
    }
    // Removed through the db:// handle, the file goes too.
    assert!(db.remove("Mail1-file").await.unwrap());
    assert!(files(home.path(), "mail").is_empty());
}

/// Rows James 2.3's DBFile wrote: the header section in `message_body`, the body in
/// `var/dbmail/<name in hex>.Repository.FileStreamStore`. POP3 lists and sends the whole
/// message, the mail repository reads it whole; a James row without such a file is its
/// `message_body`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn james_dbfile_rows_are_read() {
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
    let header: &[u8] = b"Subject: from James DBFile\r\nFrom: a@example.org\r\n\r\n";
    let body: &[u8] = b"line one\nline two\r\n";
    for (name, repo, text) in [
        ("Mail1170000000000-0", "joe", header),
        ("Mail1170000000000-1", "error", header),
        (
            "Mail1170000000000-2",
            "joe",
            &b"Subject: whole\r\n\r\nin the row\r\n"[..],
        ),
    ] {
        sqlx::query(
            "INSERT INTO inbox VALUES ($1, $2, 'root', NULL, 'a@example.org', \
             'joe@example.org', 'mx.example', '192.0.2.1', $3, NULL, 1170000000000)",
        )
        .bind(name)
        .bind(repo)
        .bind(text)
        .execute(&pool)
        .await
        .unwrap();
    }
    let dbmail = home.path().join("var/dbmail");
    std::fs::create_dir_all(&dbmail).unwrap();
    for name in ["Mail1170000000000-0", "Mail1170000000000-1"] {
        let hex: String = name.bytes().map(|b| format!("{b:02X}")).collect();
        std::fs::write(
            dbmail.join(format!("{hex}.Repository.FileStreamStore")),
            body,
        )
        .unwrap();
    }
    let whole = [header, body].concat();

    for sources in [sources.clone(), sources.with_file_bodies()] {
        let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
        let mailbox = inbox.open_mailbox("joe").await.unwrap();
        let listed = mailbox.messages().to_vec();
        assert_eq!(listed.len(), 2);
        // One bare LF in the body file.
        assert_eq!(listed[0].size, whole.len() as u64 + 1);
        assert_eq!(listed[1].size, 30);
        let mut text = Vec::new();
        mailbox
            .open_message(0)
            .await
            .unwrap()
            .read_to_end(&mut text)
            .await
            .unwrap();
        assert_eq!(text, whole);
        let mut text = Vec::new();
        mailbox
            .open_message(1)
            .await
            .unwrap()
            .read_to_end(&mut text)
            .await
            .unwrap();
        assert_eq!(text, b"Subject: whole\r\n\r\nin the row\r\n");
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
        assert_eq!(mail.message.to_bytes().unwrap(), whole);
        assert_eq!(
            mail.message.header("subject").as_deref(),
            Some("from James DBFile")
        );
    }
}

/// Delivered from a dbfile spool to a dbfile inbox in one transaction: the inbox rows name
/// the spool mail's body file (no copy), which outlives the spool row and goes with the last
/// inbox row that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_body_file_goes_with_the_last_row_naming_it() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await.with_file_bodies();
    let spool = sources
        .spool("maildb", &path(&["spool", "spool"]))
        .await
        .unwrap();
    let inbox = sources.inbox("maildb", &path(&["inbox"])).await.unwrap();
    spool
        .store(&mail("shared-1", b"Subject: shared\r\n\r\nbody\r\n"))
        .await
        .unwrap();
    let leased = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    let mut deliveries = Vec::new();
    for user in ["ann", "ben"] {
        let trace = format!("Delivered-To: {user}@example.org\r\n");
        let message = &leased.mail.message;
        let delivery = inbox.deliver_once(leased.mail.name(), user, trace.as_bytes(), message);
        deliveries.push(delivery.await.unwrap());
    }
    assert!(spool
        .complete_delivered(&leased.token, inbox.as_ref(), &deliveries)
        .await
        .unwrap());
    assert!(spool.list().await.unwrap().is_empty());
    let shared = files(home.path(), "spool");
    assert_eq!(
        shared.len(),
        1,
        "the spool's body file stays: the inbox rows name it"
    );
    assert!(files(home.path(), "inbox").is_empty(), "no copy");

    let mut ann = inbox.open_mailbox("ann").await.unwrap();
    ann.delete(&[0]).await.unwrap();
    drop(ann);
    assert_eq!(
        files(home.path(), "spool"),
        shared,
        "ben's row still names it"
    );
    let mut ben = inbox.open_mailbox("ben").await.unwrap();
    let mut text = Vec::new();
    ben.open_message(0)
        .await
        .unwrap()
        .read_to_end(&mut text)
        .await
        .unwrap();
    assert!(text.ends_with(b"\r\n\r\nbody\r\n"), "{text:?}");
    ben.delete(&[0]).await.unwrap();
    drop(ben);
    assert!(
        files(home.path(), "spool").is_empty(),
        "gone with the last row"
    );
}

/// A body file that cannot be read (an I/O error, not a missing file: here a symbolic link
/// to itself, as a bad sector or a wrong mode would fail it) holds up that mail alone: the
/// workers that meet it give it back for a while, and the mails behind it are leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_body_file_does_not_hold_up_the_spool() {
    let home = tempfile::tempdir().unwrap();
    let sources = sqlite(home.path()).await.with_file_bodies();
    let spool = sources
        .spool("maildb", &path(&["spool", "spool"]))
        .await
        .unwrap();
    spool
        .store(&mail("Mail1-a", b"Subject: a\r\n\r\nfirst\r\n"))
        .await
        .unwrap();
    spool
        .store(&mail("Mail1-b", b"Subject: b\r\n\r\nsecond\r\n"))
        .await
        .unwrap();
    let first = files(home.path(), "spool")
        .into_iter()
        .find(|p| std::fs::read(p).unwrap() == b"first\r\n")
        .unwrap();
    std::fs::remove_file(&first).unwrap();
    std::os::unix::fs::symlink(&first, &first).unwrap();
    // As a worker does: a failed lease is tried again a moment later.
    let mut leased = None;
    for _ in 0..5 {
        match spool.lease(Duration::from_millis(200)).await {
            Ok(Some(mail)) => {
                leased = Some(mail);
                break;
            }
            Ok(None) => {}
            Err(e) => assert!(matches!(e, StoreError::Io(_)), "{e}"),
        }
    }
    let leased = leased.expect("the mail behind the unreadable one was never leased");
    assert_eq!(leased.mail.name(), "Mail1-b");
    spool.complete(leased.token).await.unwrap();
    // The unreadable one is still there, for later.
    assert!(spool.list().await.unwrap().contains(&"Mail1-a".to_string()));
    assert!(spool.next_attempt("Mail1-a").await.unwrap().is_some());
}
