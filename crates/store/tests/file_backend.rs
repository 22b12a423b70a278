//! The conformance suite and Maildir checks against the file backend.

use std::fs;
use std::sync::Arc;

use mailroom_mailet::Message;
use mailroom_store::blocking::InboxRepository;
use mailroom_store::file::{FileMailRepository, FileUsersRepository, LogSpool, Maildir};
use mailroom_store::{conformance, Blocking};

#[tokio::test]
async fn file_mail_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Blocking::new(FileMailRepository::open(dir.path()).unwrap());
    conformance::mail_repository(&repo).await;
}

#[tokio::test]
async fn log_spool() {
    let dir = tempfile::tempdir().unwrap();
    conformance::mail_repository(&Blocking::new(LogSpool::open(dir.path()).unwrap())).await;
    conformance::spool_repository(&|| {
        let dir = tempfile::tempdir().unwrap();
        Box::new(move |lease| {
            Arc::new(Blocking::new(
                LogSpool::open(dir.path())
                    .unwrap()
                    .with_lease_duration(lease),
            ))
        })
    })
    .await;
}

#[tokio::test]
async fn file_users_repository() {
    let dir = tempfile::tempdir().unwrap();
    let users = Blocking::new(FileUsersRepository::open(dir.path()).unwrap());
    conformance::users_repository(&users).await;
}

#[test]
fn reopening_cleans_crash_leftovers_and_keeps_mail() {
    use mailroom_store::blocking::MailRepository;
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    let mut incoming = spool.incoming().unwrap();
    std::io::Write::write_all(&mut incoming, b"Subject: half\r\n").unwrap();
    std::mem::forget(incoming); // as if the process died mid-write
    let mut kept = spool.incoming().unwrap();
    std::io::Write::write_all(&mut kept, b"Subject: kept\r\n\r\nbody\r\n").unwrap();
    let kept_name = kept.name().to_string();
    kept.commit(mailroom_mailet::Envelope::new("x", None, vec![]))
        .unwrap();
    drop(spool);
    let spool = LogSpool::open(dir.path()).unwrap();
    let leftovers = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    assert_eq!(spool.list().unwrap(), vec![kept_name.clone()]);
    let mail = spool.retrieve(&kept_name).unwrap().unwrap();
    assert_eq!(
        mail.message.to_bytes().unwrap(),
        b"Subject: kept\r\n\r\nbody\r\n"
    );
}

#[tokio::test]
async fn maildir_inbox_repository() {
    let dir = tempfile::tempdir().unwrap();
    conformance::inbox_repository(&Blocking::new(Maildir::open(dir.path()).unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    conformance::inbox_import(&Blocking::new(Maildir::open(dir.path()).unwrap())).await;
}

#[test]
fn maildir_reads_what_other_programs_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Maildir::open(dir.path()).unwrap();
    let user = inbox.user_dir("carol").unwrap();
    // LF line ends and no ,W= (as an MDA writes), seen and flagged by a mail reader; a
    // hidden file; a name too long for UIDL.
    fs::write(
        user.join("cur/1700000000.M5P1.host,S=11:2,S"),
        b"A: b\n\nbody\n",
    )
    .unwrap();
    fs::write(user.join("new/.hidden"), b"x").unwrap();
    let long = format!("1700000001.M1P1.{}", "h".repeat(80));
    fs::write(user.join("new").join(&long), b"A: b\r\n\r\nx\r\n").unwrap();
    // Delivered later in the same second: ordered by microseconds, not as text.
    fs::write(user.join("new/1700000000.M40P1.host,S=3,W=3"), b"x\r\n").unwrap();

    let mut mailbox = inbox.open_mailbox("carol").unwrap();
    let listed = mailbox.messages().to_vec();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].uid, "1700000000.M5P1.host");
    assert_eq!(listed[0].size, 14);
    assert_eq!(listed[1].uid, "1700000000.M40P1.host");
    assert_eq!(listed[1].size, 3);
    assert_eq!(listed[2].uid.len(), 40, "{}", listed[2].uid);
    assert_eq!(listed[2].size, 11);

    // A reader renamed it meanwhile (new flags): still readable and deletable by UID.
    fs::rename(
        user.join("cur/1700000000.M5P1.host,S=11:2,S"),
        user.join("cur/1700000000.M5P1.host,S=11:2,ST"),
    )
    .unwrap();
    let mut first = String::new();
    std::io::Read::read_to_string(&mut mailbox.open_message(0).unwrap(), &mut first).unwrap();
    assert_eq!(first, "A: b\n\nbody\n");
    mailbox.delete(&[0, 2]).unwrap();
    drop(mailbox);
    let mailbox = inbox.open_mailbox("carol").unwrap();
    assert_eq!(mailbox.messages().len(), 1);
    assert_eq!(mailbox.messages()[0].uid, "1700000000.M40P1.host");
}

#[test]
fn maildir_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Maildir::open(dir.path()).unwrap();
    let msg = Message::from_bytes(b"Subject: hi\r\n\r\nbody\r\n");
    let first = inbox
        .deliver("alice", b"Return-Path: <>\r\n", &msg)
        .unwrap();
    let second = inbox.deliver("alice", b"", &msg).unwrap();
    inbox.sync(&[first, second]).unwrap();
    let new: Vec<_> = fs::read_dir(dir.path().join("alice/new"))
        .unwrap()
        .collect();
    assert_eq!(new.len(), 2);
    for sub in ["tmp", "cur"] {
        assert!(dir.path().join("alice").join(sub).is_dir());
    }
    let mut contents: Vec<Vec<u8>> = new
        .into_iter()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            // LF line ends in the file; `,W=` is the size POP3 sends, with CRLF ends.
            let len = bytes.len();
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            assert!(!bytes.contains(&b'\r'), "{name}");
            assert!(
                name.ends_with(&format!(",S={len},W={}", len + lines)),
                "{name}"
            );
            bytes
        })
        .collect();
    contents.sort();
    assert_eq!(contents[0], b"Return-Path: <>\nSubject: hi\n\nbody\n");
    assert_eq!(contents[1], b"Subject: hi\n\nbody\n");
    // A Maildir removed while the server runs is made again.
    fs::remove_dir_all(dir.path().join("alice")).unwrap();
    let again = inbox.deliver("alice", b"", &msg).unwrap();
    // Nothing shows in new/ before the group commit; then it does.
    let in_new = || fs::read_dir(dir.path().join("alice/new")).unwrap().count();
    assert_eq!(in_new(), 0);
    inbox.sync(&[again]).unwrap();
    assert_eq!(in_new(), 1);
    assert!(inbox.deliver("../escape", b"", &msg).is_err());
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[test]
fn an_old_spool_file_cut_short_by_a_crash_is_not_imported() {
    use mailroom_store::blocking::{MailRepository, SpoolRepository};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    // A spool of the one-file-per-mail format, as an older version left it.
    let old = FileMailRepository::open(dir.path()).unwrap();
    let mut names = Vec::new();
    for body in [&b"first"[..], b"second"] {
        let mut incoming = old.incoming().unwrap();
        std::io::Write::write_all(&mut incoming, b"Subject: x\r\n\r\n").unwrap();
        std::io::Write::write_all(&mut incoming, body).unwrap();
        names.push(incoming.name().to_string());
        incoming
            .commit(mailroom_mailet::Envelope::new("x", None, vec![]))
            .unwrap();
    }
    drop(old);
    // The second file's record reached the disk but a block of its message did not.
    let damaged = dir.path().join(format!("{}.mail", names[1]));
    fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .write_all_at(b"\0\0\0\0", 2)
        .unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    let first = spool
        .lease(std::time::Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!(first.mail.name(), names[0]);
    assert!(spool
        .lease(std::time::Duration::from_millis(50))
        .unwrap()
        .is_none());
    assert!(dir
        .path()
        .join("corrupt")
        .join(format!("{}.mail", names[1]))
        .exists());
}

#[test]
fn a_delivery_whose_rename_fails_fails_its_own_sync_alone_and_is_never_retried_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = Maildir::open(dir.path()).unwrap();
    let message = |n: u32| Message::from_bytes(format!("Subject: {n}\r\n\r\nbody\r\n").as_bytes());
    let subjects = |user: &str| -> Vec<String> {
        let mut all: Vec<String> = fs::read_dir(dir.path().join(user).join("new"))
            .map(|entries| {
                entries
                    .map(|e| {
                        let text = fs::read_to_string(e.unwrap().path()).unwrap();
                        text.lines().next().unwrap().to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort();
        all
    };
    // bob's `new/` cannot take the rename (as when there is no space for it to grow, or bob's
    // Maildir was removed meanwhile).
    let alice = maildir.deliver("alice", b"", &message(1)).unwrap();
    let bob = maildir.deliver("bob", b"", &message(2)).unwrap();
    let new = dir.path().join("bob/new");
    fs::remove_dir(&new).unwrap();
    fs::write(&new, b"not a directory").unwrap();
    // Whoever runs the commit, alice's delivery is durable and bob's is not.
    assert!(
        maildir.sync(&[bob]).is_err(),
        "a delivery that is not visible is not durable"
    );
    maildir.sync(&[alice]).unwrap();
    assert_eq!(subjects("alice"), ["Subject: 1"]);
    // bob's failure blocks nobody: later deliveries commit while bob's stays broken.
    let later = maildir.deliver("alice", b"", &message(3)).unwrap();
    maildir.sync(&[later]).unwrap();
    let retried = maildir.deliver("bob", b"", &message(2)).unwrap();
    assert!(maildir.sync(&[retried]).is_err());
    // Once bob's Maildir is mended, the next try delivers once: the failed ones were dropped
    // with their files, not kept to pile up.
    fs::remove_file(&new).unwrap();
    fs::create_dir(&new).unwrap();
    let mended = maildir.deliver("bob", b"", &message(2)).unwrap();
    maildir.sync(&[mended]).unwrap();
    assert_eq!(subjects("bob"), ["Subject: 2"]);
    assert_eq!(subjects("alice"), ["Subject: 1", "Subject: 3"]);
    assert_eq!(fs::read_dir(dir.path().join("bob/tmp")).unwrap().count(), 0);
}
