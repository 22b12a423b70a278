//! The test-suite every backend runs: call these from a backend's tests with a fresh, empty
//! repository. They panic on the first broken contract.

use std::time::Duration;
use tokio::io::AsyncReadExt;

use mailroom_mailet::{AttributeValue, Envelope, Mail, MailAddress, Message};

use crate::{
    InboxRepository, MailRepository, Mailbox, MappingsRepository, SpoolRepository, StoreError,
    User, UsersRepository,
};

fn sample_mail(name: &str) -> Mail {
    let mut env = Envelope::new(
        name,
        None,
        vec![MailAddress::parse("a@example.org").unwrap()],
    );
    env.attributes
        .insert("n".into(), AttributeValue::Number(7.0));
    env.error_message = Some("why".into());
    Mail::new(
        env,
        Message::from_bytes(b"Subject: test\r\n\r\nline 1\r\n.line 2\r\n"),
    )
}

/// Store, retrieve, replace, list and remove in a mail repository.
pub async fn mail_repository(repo: &dyn MailRepository) {
    assert!(repo.list().await.unwrap().is_empty());
    let mut mail = sample_mail("m-1");
    repo.store(&mail).await.unwrap();
    let back = repo.retrieve("m-1").await.unwrap().expect("stored mail");
    assert_eq!(back.envelope.recipients, mail.envelope.recipients);
    assert_eq!(back.envelope.sender, None);
    assert_eq!(back.envelope.attributes, mail.envelope.attributes);
    assert_eq!(back.envelope.size, mail.message.size());
    assert_eq!(
        back.message.to_bytes().unwrap(),
        mail.message.to_bytes().unwrap()
    );

    // Replacing: the envelope alone, then a modified header.
    mail.set_state("spam");
    repo.store(&mail).await.unwrap();
    assert_eq!(repo.retrieve("m-1").await.unwrap().unwrap().state(), "spam");
    let mut changed = repo.retrieve("m-1").await.unwrap().unwrap();
    changed.message.set_header("X-Changed", "yes");
    repo.store(&changed).await.unwrap();
    let back = repo.retrieve("m-1").await.unwrap().unwrap();
    assert_eq!(back.message.header("x-changed").as_deref(), Some("yes"));
    // The body read from the old version is still intact after the rewrite.
    assert!(changed
        .message
        .to_bytes()
        .unwrap()
        .ends_with(b".line 2\r\n"));

    repo.store(&sample_mail("m-2")).await.unwrap();
    assert_eq!(repo.list().await.unwrap(), vec!["m-1", "m-2"]);
    assert!(repo.remove("m-1").await.unwrap());
    assert!(!repo.remove("m-1").await.unwrap());
    assert!(repo.retrieve("m-1").await.unwrap().is_none());
    assert!(matches!(
        repo.retrieve("../../etc/passwd").await,
        Err(StoreError::InvalidName(..))
    ));

    // Streaming a new message in.
    let mut incoming = repo.incoming().await.unwrap();
    let name = incoming.name().to_string();
    incoming.write(b"Subject: streamed\r\n\r\n").await.unwrap();
    incoming.write(b"body\r\n").await.unwrap();
    incoming
        .commit(Envelope::new("ignored", None, vec![]))
        .await
        .unwrap();
    let back = repo.retrieve(&name).await.unwrap().unwrap();
    assert_eq!(back.envelope.name, name);
    assert_eq!(back.envelope.size, 27);
    assert_eq!(back.message.header("subject").as_deref(), Some("streamed"));

    // An uncommitted message leaves nothing behind.
    let mut dropped = repo.incoming().await.unwrap();
    let dropped_name = dropped.name().to_string();
    dropped.write(b"x").await.unwrap();
    drop(dropped);
    assert!(repo.retrieve(&dropped_name).await.unwrap().is_none());
}

/// Leases: one holder at a time, release hands the mail out again, remove ends it, new mail
/// wakes a waiting worker.
pub async fn spool_repository(spool: &dyn SpoolRepository) {
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    spool.store(&sample_mail("s-1")).await.unwrap();
    spool.store(&sample_mail("s-2")).await.unwrap();
    let first = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let second = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_ne!(first.name(), second.name());
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());

    // Storing a leased mail (a processor hop) keeps it leased.
    let mut hop = first.clone();
    hop.set_state("transport");
    spool.store(&hop).await.unwrap();
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());

    // A delayed release hides the mail until its time.
    spool
        .release(first.name(), Duration::from_millis(300))
        .await;
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    let again = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(again.name(), first.name());
    assert_eq!(again.state(), "transport");
    assert!(spool.remove(again.name()).await.unwrap());
    assert!(spool.remove(second.name()).await.unwrap());
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());

    // A committed incoming mail wakes a waiting lease.
    let waiter = spool.lease(Duration::from_secs(5));
    let commit = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut incoming = spool.incoming().await.unwrap();
        incoming.write(b"Subject: wake\r\n\r\n").await.unwrap();
        incoming
            .commit(Envelope::new("x", None, vec![]))
            .await
            .unwrap();
    };
    let (got, ()) = tokio::join!(waiter, commit);
    let got = got.unwrap().expect("woken by the new mail");
    assert_eq!(got.message.header("subject").as_deref(), Some("wake"));
    spool.remove(got.name()).await.unwrap();
}

/// Add, get (case-insensitively), update, list, count, remove and password checks.
pub async fn users_repository(users: &dyn UsersRepository) {
    assert_eq!(users.count().await.unwrap(), 0);
    users.add(&User::new("Alice", "pass word")).await.unwrap();
    users.add(&User::new("bob", "secret")).await.unwrap();
    assert!(matches!(
        users.add(&User::new("alice", "x")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        users.add(&User::new("../../etc/x", "y")).await,
        Err(StoreError::InvalidName(..))
    ));
    let alice = users.get("ALICE").await.unwrap().expect("case-insensitive");
    assert_eq!(alice.name, "Alice");
    assert!(users.verify_password("alice", "pass word").await.unwrap());
    assert!(!users.verify_password("alice", "pass").await.unwrap());
    assert!(!users.verify_password("nobody", "pass").await.unwrap());

    let mut bob = users.get("bob").await.unwrap().unwrap();
    bob.alias = Some("Alice".into());
    bob.alias_enabled = true;
    users.update(&bob).await.unwrap();
    assert_eq!(
        users.get("bob").await.unwrap().unwrap().alias.as_deref(),
        Some("Alice")
    );
    assert!(matches!(
        users.update(&User::new("carol", "x")).await,
        Err(StoreError::NotFound(_))
    ));

    // An imported James SHA-1 hash works and is upgraded.
    let mut legacy = User::new("legacy", "unused");
    legacy.password_hash = "5en6G6MezRroT3XKqkdPOmY/BfQ=".into();
    users.add(&legacy).await.unwrap();
    assert!(users.verify_password("legacy", "secret").await.unwrap());
    assert!(users
        .get("legacy")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .starts_with("$argon2id$"));
    assert!(users.verify_password("legacy", "secret").await.unwrap());
    // An upgrade computed against a hash that has changed since does not undo the change.
    let current = users.get("legacy").await.unwrap().unwrap().password_hash;
    assert!(!users
        .replace_password_hash("legacy", "stale", "x".into())
        .await
        .unwrap());
    assert_eq!(
        users.get("legacy").await.unwrap().unwrap().password_hash,
        current
    );

    assert_eq!(users.list().await.unwrap(), vec!["Alice", "bob", "legacy"]);
    assert_eq!(users.count().await.unwrap(), 3);
    assert!(users.remove("BOB").await.unwrap());
    assert!(!users.remove("bob").await.unwrap());
    assert!(users.get("bob").await.unwrap().is_none());
    assert!(users.get("../x").await.unwrap().is_none());
}

/// Add, list and remove mappings, in two tables that do not see each other's entries.
pub async fn mappings_repository(repo: &dyn MappingsRepository) {
    use crate::mappings::{Source, Target, DEFAULT_TABLE};
    let source = Source::parse("Info@Example.org").unwrap();
    let alice = Target::parse("alice@example.org").unwrap();
    let refuse = Target::parse("error:550 gone").unwrap();
    assert!(repo.all(DEFAULT_TABLE).await.unwrap().is_empty());
    assert!(repo.get(DEFAULT_TABLE, &source).await.unwrap().is_empty());

    assert!(repo.add(DEFAULT_TABLE, &source, &alice).await.unwrap());
    assert!(
        !repo.add(DEFAULT_TABLE, &source, &alice).await.unwrap(),
        "added twice"
    );
    assert!(repo.add(DEFAULT_TABLE, &source, &refuse).await.unwrap());
    let wildcard = Source::parse("*@example.net").unwrap();
    assert!(repo.add(DEFAULT_TABLE, &wildcard, &alice).await.unwrap());
    // Sources are case-insensitive; targets keep their order.
    let lower = Source::parse("info@example.org").unwrap();
    assert_eq!(
        repo.get(DEFAULT_TABLE, &lower).await.unwrap(),
        vec![alice.clone(), refuse.clone()]
    );
    assert_eq!(
        repo.all(DEFAULT_TABLE).await.unwrap(),
        vec![
            (wildcard.clone(), vec![alice.clone()]),
            (lower.clone(), vec![alice.clone(), refuse.clone()]),
        ]
    );
    assert!(repo.all("other").await.unwrap().is_empty());
    assert!(repo.add("other", &source, &refuse).await.unwrap());
    assert_eq!(
        repo.get("other", &source).await.unwrap(),
        vec![refuse.clone()]
    );

    assert!(repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap());
    assert!(
        !repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap(),
        "removed twice"
    );
    assert!(repo.remove(DEFAULT_TABLE, &source, &refuse).await.unwrap());
    assert!(repo.get(DEFAULT_TABLE, &source).await.unwrap().is_empty());
    assert_eq!(
        repo.all(DEFAULT_TABLE).await.unwrap().len(),
        1,
        "empty sources are dropped"
    );
    assert!(!repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap());
}

/// Every message of a mailbox, read whole.
async fn read_all(mailbox: &dyn Mailbox) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for i in 0..mailbox.messages().len() {
        let mut bytes = Vec::new();
        let mut stream = mailbox.open_message(i).await.unwrap();
        stream.read_to_end(&mut bytes).await.unwrap();
        all.push(bytes);
    }
    all
}

/// Delivery and reading: a mailbox lists what was delivered, oldest first, with stable UIDs
/// and exact CRLF sizes; it is locked while open; mail delivered meanwhile shows next time;
/// deletes take effect once committed and only for the messages named.
pub async fn inbox_repository(inbox: &dyn InboxRepository) {
    let empty = inbox.open_mailbox("Alice").await.unwrap();
    assert!(empty.messages().is_empty());
    drop(empty);

    let bodies: [&[u8]; 3] = [
        b"Subject: one\r\n\r\nfirst\r\n",
        b"Subject: two\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: three\r\n\r\nthird\r\n",
    ];
    for body in bodies {
        inbox
            .deliver("Alice", b"Return-Path: <>\r\n", &Message::from_bytes(body))
            .await
            .unwrap();
        // Distinct delivery times, so that the order is the delivery order on every backend.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    inbox.sync().await.unwrap();

    let mut mailbox = inbox.open_mailbox("Alice").await.unwrap();
    let listed = mailbox.messages().to_vec();
    assert_eq!(listed.len(), 3);
    let contents = read_all(mailbox.as_ref()).await;
    for ((message, body), content) in listed.iter().zip(bodies).zip(&contents) {
        let expected = [&b"Return-Path: <>\r\n"[..], body].concat();
        assert_eq!(content, &expected);
        assert_eq!(message.size, expected.len() as u64);
        assert!(!message.uid.is_empty() && message.uid.len() <= 70);
        assert!(message.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    assert!(listed[0].uid != listed[1].uid && listed[1].uid != listed[2].uid);
    assert!(mailbox.open_message(3).await.is_err());

    // One session at a time.
    assert!(matches!(
        inbox.open_mailbox("Alice").await,
        Err(StoreError::InUse(_))
    ));
    // Mail delivered during the session is not in its snapshot.
    inbox
        .deliver(
            "Alice",
            b"",
            &Message::from_bytes(b"Subject: four\r\n\r\n4\r\n"),
        )
        .await
        .unwrap();
    inbox.sync().await.unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    mailbox.delete(&[1]).await.unwrap();
    drop(mailbox);

    // Reopened: the deleted one is gone, the others keep their UIDs, the new one is last.
    let mailbox = inbox.open_mailbox("Alice").await.unwrap();
    let uids: Vec<&str> = mailbox.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids.len(), 3);
    assert_eq!(
        &uids[..2],
        &[listed[0].uid.as_str(), listed[2].uid.as_str()]
    );
    assert!(!uids[..2].contains(&listed[1].uid.as_str()));
    assert_eq!(
        read_all(mailbox.as_ref()).await[2],
        b"Subject: four\r\n\r\n4\r\n"
    );
    // Dropping a mailbox without delete changes nothing.
    drop(mailbox);
    let mut mailbox = inbox.open_mailbox("Alice").await.unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    // Mailboxes are per user.
    let other = inbox.open_mailbox("bob").await.unwrap();
    assert!(other.messages().is_empty());
    mailbox.delete(&[0, 1, 2]).await.unwrap();
    drop(mailbox);
    assert!(inbox
        .open_mailbox("Alice")
        .await
        .unwrap()
        .messages()
        .is_empty());
    assert!(matches!(
        inbox.open_mailbox("../escape").await,
        Err(StoreError::InvalidName(..))
    ));
}
