//! The test-suite every backend runs: call these from a backend's tests with a fresh, empty
//! repository. They panic on the first broken contract.

use std::io::{Read, Write};
use std::time::Duration;

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
pub fn mail_repository(repo: &dyn MailRepository) {
    assert!(repo.list().unwrap().is_empty());
    let mut mail = sample_mail("m-1");
    repo.store(&mail).unwrap();
    let back = repo.retrieve("m-1").unwrap().expect("stored mail");
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
    repo.store(&mail).unwrap();
    assert_eq!(repo.retrieve("m-1").unwrap().unwrap().state(), "spam");
    let mut changed = repo.retrieve("m-1").unwrap().unwrap();
    changed.message.set_header("X-Changed", "yes");
    repo.store(&changed).unwrap();
    let back = repo.retrieve("m-1").unwrap().unwrap();
    assert_eq!(back.message.header("x-changed").as_deref(), Some("yes"));
    // The body read from the old version is still intact after the rewrite.
    assert!(changed
        .message
        .to_bytes()
        .unwrap()
        .ends_with(b".line 2\r\n"));

    repo.store(&sample_mail("m-2")).unwrap();
    assert_eq!(repo.list().unwrap(), vec!["m-1", "m-2"]);
    assert!(repo.remove("m-1").unwrap());
    assert!(!repo.remove("m-1").unwrap());
    assert!(repo.retrieve("m-1").unwrap().is_none());
    assert!(matches!(
        repo.retrieve("../../etc/passwd"),
        Err(StoreError::InvalidName(..))
    ));

    // Streaming a new message in.
    let mut incoming = repo.incoming().unwrap();
    let name = incoming.name().to_string();
    incoming.write_all(b"Subject: streamed\r\n\r\n").unwrap();
    incoming.write_all(b"body\r\n").unwrap();
    incoming
        .commit(Envelope::new("ignored", None, vec![]))
        .unwrap();
    let back = repo.retrieve(&name).unwrap().unwrap();
    assert_eq!(back.envelope.name, name);
    assert_eq!(back.envelope.size, 27);
    assert_eq!(back.message.header("subject").as_deref(), Some("streamed"));

    // An uncommitted message leaves nothing behind.
    let mut dropped = repo.incoming().unwrap();
    let dropped_name = dropped.name().to_string();
    dropped.write_all(b"x").unwrap();
    drop(dropped);
    assert!(repo.retrieve(&dropped_name).unwrap().is_none());
}

/// Leases: one holder at a time, release hands the mail out again, remove ends it, new mail
/// wakes a waiting worker.
pub fn spool_repository(spool: &dyn SpoolRepository) {
    assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());
    spool.store(&sample_mail("s-1")).unwrap();
    spool.store(&sample_mail("s-2")).unwrap();
    let first = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    let second = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    assert_ne!(first.name(), second.name());
    assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());

    // Storing a leased mail (a processor hop) keeps it leased.
    let mut hop = first.clone();
    hop.set_state("transport");
    spool.store(&hop).unwrap();
    assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());

    // A delayed release hides the mail until its time.
    spool.release(first.name(), Duration::from_millis(300));
    assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());
    let again = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(again.name(), first.name());
    assert_eq!(again.state(), "transport");
    assert!(spool.remove(again.name()).unwrap());
    assert!(spool.remove(second.name()).unwrap());
    assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());

    // A committed incoming mail wakes a waiting lease.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| spool.lease(Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let mut incoming = spool.incoming().unwrap();
        incoming.write_all(b"Subject: wake\r\n\r\n").unwrap();
        incoming.commit(Envelope::new("x", None, vec![])).unwrap();
        let got = waiter.join().unwrap().expect("woken by the new mail");
        assert_eq!(got.message.header("subject").as_deref(), Some("wake"));
        spool.remove(got.name()).unwrap();
    });
}

/// Add, get (case-insensitively), update, list, count, remove and password checks.
pub fn users_repository(users: &dyn UsersRepository) {
    assert_eq!(users.count().unwrap(), 0);
    users.add(&User::new("Alice", "pass word")).unwrap();
    users.add(&User::new("bob", "secret")).unwrap();
    assert!(matches!(
        users.add(&User::new("alice", "x")),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        users.add(&User::new("../../etc/x", "y")),
        Err(StoreError::InvalidName(..))
    ));
    let alice = users.get("ALICE").unwrap().expect("case-insensitive");
    assert_eq!(alice.name, "Alice");
    assert!(users.verify_password("alice", "pass word").unwrap());
    assert!(!users.verify_password("alice", "pass").unwrap());
    assert!(!users.verify_password("nobody", "pass").unwrap());

    let mut bob = users.get("bob").unwrap().unwrap();
    bob.alias = Some("Alice".into());
    bob.alias_enabled = true;
    users.update(&bob).unwrap();
    assert_eq!(
        users.get("bob").unwrap().unwrap().alias.as_deref(),
        Some("Alice")
    );
    assert!(matches!(
        users.update(&User::new("carol", "x")),
        Err(StoreError::NotFound(_))
    ));

    // An imported James SHA-1 hash works and is upgraded.
    let mut legacy = User::new("legacy", "unused");
    legacy.password_hash = "5en6G6MezRroT3XKqkdPOmY/BfQ=".into();
    users.add(&legacy).unwrap();
    assert!(users.verify_password("legacy", "secret").unwrap());
    assert!(users
        .get("legacy")
        .unwrap()
        .unwrap()
        .password_hash
        .starts_with("$argon2id$"));
    assert!(users.verify_password("legacy", "secret").unwrap());
    // An upgrade computed against a hash that has changed since does not undo the change.
    let current = users.get("legacy").unwrap().unwrap().password_hash;
    assert!(!users
        .replace_password_hash("legacy", "stale", "x".into())
        .unwrap());
    assert_eq!(users.get("legacy").unwrap().unwrap().password_hash, current);

    assert_eq!(users.list().unwrap(), vec!["Alice", "bob", "legacy"]);
    assert_eq!(users.count().unwrap(), 3);
    assert!(users.remove("BOB").unwrap());
    assert!(!users.remove("bob").unwrap());
    assert!(users.get("bob").unwrap().is_none());
    assert!(users.get("../x").unwrap().is_none());
}

/// Add, list and remove mappings, in two tables that do not see each other's entries.
pub fn mappings_repository(repo: &dyn MappingsRepository) {
    use crate::mappings::{Source, Target, DEFAULT_TABLE};
    let source = Source::parse("Info@Example.org").unwrap();
    let alice = Target::parse("alice@example.org").unwrap();
    let refuse = Target::parse("error:550 gone").unwrap();
    assert!(repo.all(DEFAULT_TABLE).unwrap().is_empty());
    assert!(repo.get(DEFAULT_TABLE, &source).unwrap().is_empty());

    assert!(repo.add(DEFAULT_TABLE, &source, &alice).unwrap());
    assert!(
        !repo.add(DEFAULT_TABLE, &source, &alice).unwrap(),
        "added twice"
    );
    assert!(repo.add(DEFAULT_TABLE, &source, &refuse).unwrap());
    let wildcard = Source::parse("*@example.net").unwrap();
    assert!(repo.add(DEFAULT_TABLE, &wildcard, &alice).unwrap());
    // Sources are case-insensitive; targets keep their order.
    let lower = Source::parse("info@example.org").unwrap();
    assert_eq!(
        repo.get(DEFAULT_TABLE, &lower).unwrap(),
        vec![alice.clone(), refuse.clone()]
    );
    assert_eq!(
        repo.all(DEFAULT_TABLE).unwrap(),
        vec![
            (wildcard.clone(), vec![alice.clone()]),
            (lower.clone(), vec![alice.clone(), refuse.clone()]),
        ]
    );
    assert!(repo.all("other").unwrap().is_empty());
    assert!(repo.add("other", &source, &refuse).unwrap());
    assert_eq!(repo.get("other", &source).unwrap(), vec![refuse.clone()]);

    assert!(repo.remove(DEFAULT_TABLE, &source, &alice).unwrap());
    assert!(
        !repo.remove(DEFAULT_TABLE, &source, &alice).unwrap(),
        "removed twice"
    );
    assert!(repo.remove(DEFAULT_TABLE, &source, &refuse).unwrap());
    assert!(repo.get(DEFAULT_TABLE, &source).unwrap().is_empty());
    assert_eq!(
        repo.all(DEFAULT_TABLE).unwrap().len(),
        1,
        "empty sources are dropped"
    );
    assert!(!repo.remove(DEFAULT_TABLE, &source, &alice).unwrap());
}

/// Every message of a mailbox, read whole.
fn read_all(mailbox: &dyn Mailbox) -> Vec<Vec<u8>> {
    (0..mailbox.messages().len())
        .map(|i| {
            let mut bytes = Vec::new();
            mailbox
                .open_message(i)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
        .collect()
}

/// Delivery and reading: a mailbox lists what was delivered, oldest first, with stable UIDs
/// and exact CRLF sizes; it is locked while open; mail delivered meanwhile shows next time;
/// deletes take effect once committed and only for the messages named.
pub fn inbox_repository(inbox: &dyn InboxRepository) {
    let empty = inbox.open_mailbox("Alice").unwrap();
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
            .unwrap();
        // Distinct delivery times, so that the order is the delivery order on every backend.
        std::thread::sleep(Duration::from_millis(2));
    }
    inbox.sync().unwrap();

    let mut mailbox = inbox.open_mailbox("Alice").unwrap();
    let listed = mailbox.messages().to_vec();
    assert_eq!(listed.len(), 3);
    let contents = read_all(mailbox.as_ref());
    for ((message, body), content) in listed.iter().zip(bodies).zip(&contents) {
        let expected = [&b"Return-Path: <>\r\n"[..], body].concat();
        assert_eq!(content, &expected);
        assert_eq!(message.size, expected.len() as u64);
        assert!(!message.uid.is_empty() && message.uid.len() <= 70);
        assert!(message.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    assert!(listed[0].uid != listed[1].uid && listed[1].uid != listed[2].uid);
    assert!(mailbox.open_message(3).is_err());

    // One session at a time.
    assert!(matches!(
        inbox.open_mailbox("Alice"),
        Err(StoreError::InUse(_))
    ));
    // Mail delivered during the session is not in its snapshot.
    inbox
        .deliver(
            "Alice",
            b"",
            &Message::from_bytes(b"Subject: four\r\n\r\n4\r\n"),
        )
        .unwrap();
    inbox.sync().unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    mailbox.delete(&[1]).unwrap();
    drop(mailbox);

    // Reopened: the deleted one is gone, the others keep their UIDs, the new one is last.
    let mailbox = inbox.open_mailbox("Alice").unwrap();
    let uids: Vec<&str> = mailbox.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids.len(), 3);
    assert_eq!(
        &uids[..2],
        &[listed[0].uid.as_str(), listed[2].uid.as_str()]
    );
    assert!(!uids[..2].contains(&listed[1].uid.as_str()));
    assert_eq!(read_all(mailbox.as_ref())[2], b"Subject: four\r\n\r\n4\r\n");
    // Dropping a mailbox without delete changes nothing.
    drop(mailbox);
    let mut mailbox = inbox.open_mailbox("Alice").unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    // Mailboxes are per user.
    let other = inbox.open_mailbox("bob").unwrap();
    assert!(other.messages().is_empty());
    mailbox.delete(&[0, 1, 2]).unwrap();
    drop(mailbox);
    assert!(inbox.open_mailbox("Alice").unwrap().messages().is_empty());
    assert!(matches!(
        inbox.open_mailbox("../escape"),
        Err(StoreError::InvalidName(..))
    ));
}
