//! The log spool's own tests: what the conformance suite cannot see (segments, damage,
//! compaction, the old format, restarts).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, Mail, MailAddress, Message};

use super::record::{segment_path, HEADER, MAGIC};
use super::*;
use crate::blocking::{MailRepository, SpoolRepository};
use crate::file::FileMailRepository;

fn mail(name: &str, body: &[u8]) -> Mail {
    let envelope = Envelope::new(
        name,
        None,
        vec![MailAddress::parse("a@example.org").unwrap()],
    );
    let mut bytes = b"Subject: log\r\n\r\n".to_vec();
    bytes.extend_from_slice(body);
    Mail::new(envelope, Message::from_bytes(&bytes))
}

fn incoming(spool: &LogSpool, body: &[u8]) -> String {
    let mut incoming = spool.incoming().unwrap();
    let name = incoming.name().to_string();
    incoming.write_all(b"Subject: in\r\n\r\n").unwrap();
    incoming.write_all(body).unwrap();
    incoming.commit(Envelope::new("x", None, vec![])).unwrap();
    name
}

/// Changes one octet of the `index`th record of a segment, past its header.
fn damage_record(segment: &Path, index: usize) {
    let bytes = fs::read(segment).unwrap();
    let at = bytes
        .windows(MAGIC.len())
        .enumerate()
        .filter(|(_, w)| w == MAGIC)
        .nth(index)
        .unwrap()
        .0;
    let file = File::options().write(true).open(segment).unwrap();
    file.write_all_at(b"?", (at + HEADER + 3) as u64).unwrap();
}

/// The oldest small segment.
fn first_segment(dir: &Path) -> PathBuf {
    dir.join(
        segments(dir)
            .into_iter()
            .find(|n| n.starts_with("seg-"))
            .unwrap(),
    )
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn mails_hops_and_removals_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big_body = vec![b'x'; INLINE_MAX + 10];
    let (small, big, gone) = {
        let spool = LogSpool::open(dir.path()).unwrap();
        let small = incoming(&spool, b"small\r\n");
        let big = incoming(&spool, &big_body);
        let gone = incoming(&spool, b"gone\r\n");
        // A hop of a leased mail, and a removal.
        let crate::Leased {
            mail: mut leased,
            token,
        } = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(leased.name(), small);
        leased.set_state("transport");
        spool.update(&token, &leased).unwrap();
        assert!(spool.remove(&gone).unwrap());
        (small, big, gone)
    };
    assert!(segments(dir.path()).iter().any(|n| n.starts_with("big-")));
    let spool = LogSpool::open(dir.path()).unwrap();
    assert_eq!(spool.list().unwrap(), [small.clone(), big.clone()]);
    let back = spool.retrieve(&small).unwrap().unwrap();
    assert_eq!(back.state(), "transport");
    assert_eq!(
        back.message.to_bytes().unwrap(),
        b"Subject: in\r\n\r\nsmall\r\n"
    );
    let back = spool.retrieve(&big).unwrap().unwrap();
    assert_eq!(back.envelope.size, big_body.len() as u64 + 15);
    assert!(back.message.to_bytes().unwrap().ends_with(&big_body));
    assert!(spool.retrieve(&gone).unwrap().is_none());
    // Removing the large mail deletes its segment.
    assert!(spool.remove(&big).unwrap());
    assert!(!segments(dir.path()).iter().any(|n| n.starts_with("big-")));
}

#[test]
fn a_torn_tail_keeps_every_whole_record_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = {
        let spool = LogSpool::open(dir.path()).unwrap();
        (incoming(&spool, b"one\r\n"), incoming(&spool, b"two\r\n"))
    };
    let segment = first_segment(dir.path());
    // Damage the second record, as a crash during its write would.
    damage_record(&segment, 1);
    let spool = LogSpool::open(dir.path()).unwrap();
    assert_eq!(spool.list().unwrap(), [first]);
    assert!(spool.retrieve(&second).unwrap().is_none());
    // Appends go on in a new segment; nothing after the torn record is ever read.
    let third = incoming(&spool, b"three\r\n");
    drop(spool);
    let spool = LogSpool::open(dir.path()).unwrap();
    assert_eq!(spool.list().unwrap().len(), 2);
    assert!(spool.retrieve(&third).unwrap().is_some());
}

#[test]
fn segments_rotate_and_are_deleted_or_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
    // One mail stays for long; the others come and go.
    let kept = incoming(&spool, &[b'k'; 1000]);
    for _ in 0..100 {
        let name = incoming(&spool, &[b'x'; 1000]);
        assert!(spool.remove(&name).unwrap());
    }
    let count = |prefix: &str| {
        segments(dir.path())
            .iter()
            .filter(|n| n.starts_with(prefix))
            .count()
    };
    // About 25 segments were written; the kept mail moved forward, so few remain.
    assert!(
        count("seg-") <= MAX_SEGMENTS + 1,
        "{:?}",
        segments(dir.path())
    );
    drop(spool);
    let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
    assert_eq!(spool.list().unwrap(), std::slice::from_ref(&kept));
    let back = spool.retrieve(&kept).unwrap().unwrap();
    assert!(back.message.to_bytes().unwrap().ends_with(&[b'k'; 1000]));
}

#[test]
fn a_large_mail_is_readable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    let big = incoming(&spool, &vec![b'x'; INLINE_MAX + 10]);
    assert!(spool.retrieve(&big).unwrap().is_some());
    let leased = spool.lease(Duration::from_secs(1)).unwrap().unwrap().mail;
    assert_eq!(leased.name(), big);
    assert_eq!(leased.message.size(), INLINE_MAX as u64 + 10 + 15);
}

#[test]
fn a_superseded_segment_outlives_the_records_that_supersede_it_until_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
    let m = incoming(&spool, &[b'm'; 3000]);
    let y = incoming(&spool, &[b'y'; 1500]);
    let z = incoming(&spool, &[b'z'; 100]); // in the next segment
    let old_segment = lock(&spool.shared.inner).mails[&m].content.segment;
    assert_ne!(
        old_segment,
        lock(&spool.shared.inner).mails[&z].content.segment
    );
    assert!(spool.remove(&y).unwrap());
    // The leaseholder stores m with a changed header; before it waits for durability,
    // another worker's removal collects garbage.
    let crate::Leased { mut mail, token } = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(mail.name(), m);
    mail.message.set_header("X-Changed", "yes");
    let ticket = spool
        .shared
        .write_mail(&mail, &mail.envelope.clone(), Some(&token))
        .unwrap();
    assert!(spool.remove(&z).unwrap());
    let durable = spool.shared.commits.durable();
    assert!(
        segment_path(dir.path(), old_segment, false).exists() || durable >= ticket,
        "the only durable copy of a mail was deleted"
    );
}

#[test]
fn one_process_per_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    let second = LogSpool::open(dir.path());
    assert!(
        second.is_err(),
        "a second spool on the same directory opened"
    );
    drop(spool);
    LogSpool::open(dir.path()).unwrap();
}

#[test]
fn a_segment_damaged_in_the_middle_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = {
        let spool = LogSpool::open(dir.path()).unwrap();
        ["one", "two", "three"]
            .iter()
            .map(|body| incoming(&spool, body.as_bytes()))
            .collect()
    };
    let segment = first_segment(dir.path());
    damage_record(&segment, 1);
    let spool = LogSpool::open(dir.path()).unwrap();
    assert_eq!(spool.list().unwrap(), names[..1]);
    // The first mail leaves; the segment stays for an administrator.
    assert!(spool.remove(&names[0]).unwrap());
    drop(spool);
    let spool = LogSpool::open(dir.path()).unwrap();
    assert!(segment.exists());
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn records_count_only_in_their_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let name = {
        let spool = LogSpool::open(dir.path()).unwrap();
        incoming(&spool, b"once\r\n")
    };
    let original = first_segment(dir.path());
    fs::copy(&original, saved.path().join("old")).unwrap();
    {
        let spool = LogSpool::open(dir.path()).unwrap();
        assert!(spool.remove(&name).unwrap());
    }
    assert!(!original.exists());
    // Reopened, the spool no longer needs the removal's record either: only the new active
    // segment is left.
    drop(LogSpool::open(dir.path()).unwrap());
    assert_eq!(
        segments(dir.path())
            .iter()
            .filter(|n| n.starts_with("seg-"))
            .count(),
        1
    );
    // The old blocks show up in another file (after a power loss, say): the mail they hold
    // was removed and must not come back.
    fs::copy(
        saved.path().join("old"),
        segment_path(dir.path(), 999, false),
    )
    .unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn imports_mails_of_the_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let old = FileMailRepository::open(dir.path()).unwrap();
    old.store(&mail("old-1", b"hello\r\n")).unwrap();
    drop(old);
    let spool = LogSpool::open(dir.path()).unwrap();
    assert_eq!(spool.list().unwrap(), ["old-1"]);
    assert!(!segments(dir.path()).iter().any(|n| n.ends_with(".mail")));
    let leased = spool.lease(Duration::from_secs(1)).unwrap().unwrap().mail;
    assert!(leased.message.to_bytes().unwrap().ends_with(b"hello\r\n"));
}

#[test]
fn a_requeued_mail_waits_for_its_time_across_a_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let delay = Duration::from_millis(1500);
    let (name, at) = {
        let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
        let name = incoming(&spool, &[b'r'; 1000]);
        let crate::Leased { mut mail, token } =
            spool.lease(Duration::from_secs(1)).unwrap().unwrap();
        mail.set_state("retry");
        let at = SystemTime::now() + delay;
        spool.requeue(token, &mail, at).unwrap();
        // Enough traffic that the requeued mail's segment is compacted away.
        for _ in 0..60 {
            let other = incoming(&spool, &[b'x'; 1000]);
            assert!(spool.remove(&other).unwrap());
        }
        assert!(!first_segment(dir.path()).ends_with("seg-0000000000000001.log"));
        // (On a loaded machine the traffic can outlast the delay: then only the lease's
        // time is checked, below.)
        if SystemTime::now() + Duration::from_millis(100) < at {
            assert!(spool.lease(Duration::from_millis(10)).unwrap().is_none());
        }
        (name, at)
    };
    let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
    assert!(spool.next_attempt(&name).unwrap().is_some());
    if SystemTime::now() + Duration::from_millis(200) < at {
        assert!(spool.lease(Duration::from_millis(100)).unwrap().is_none());
    }
    let due = spool.lease(Duration::from_secs(5)).unwrap().unwrap();
    assert!(SystemTime::now() + Duration::from_millis(2) >= at);
    assert_eq!(due.mail.name(), name);
    assert_eq!(due.mail.state(), "retry");
    assert!(due
        .mail
        .message
        .to_bytes()
        .unwrap()
        .ends_with(&[b'r'; 1000]));
}

#[test]
fn a_snapshot_reads_the_spool_of_a_running_owner_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        LogSpool::snapshot(&dir.path().join("none")),
        Err(crate::StoreError::NotFound(_))
    ));
    assert!(!dir.path().join("none").exists());
    let spool = LogSpool::open(dir.path()).unwrap();
    let kept = incoming(&spool, b"kept\r\n");
    let retried = incoming(&spool, b"retried\r\n");
    let gone = incoming(&spool, b"gone\r\n");
    let big = incoming(&spool, &vec![b'x'; INLINE_MAX + 10]);
    spool.remove(&gone).unwrap();
    // A hop and a requeue for later.
    let at = SystemTime::now() + Duration::from_secs(3600);
    loop {
        let leased = spool.lease(Duration::ZERO).unwrap().unwrap();
        let mut mail = leased.mail;
        if mail.name() == retried {
            mail.set_state("transport");
            mail.envelope.error_message = Some("451 try later".into());
            spool.requeue(leased.token, &mail, at).unwrap();
            break;
        }
        spool.release(leased.token).unwrap();
    }
    let before = segments(dir.path());
    // The owner holds the lock; the snapshot needs none.
    let snapshot = LogSpool::snapshot(dir.path()).unwrap();
    assert!(snapshot.complete);
    let seen = &snapshot.mails;
    let names: Vec<&str> = seen.iter().map(|s| s.envelope.name.as_str()).collect();
    assert_eq!(names, [kept.as_str(), retried.as_str(), big.as_str()]);
    assert_eq!(seen[1].envelope.state, "transport");
    assert_eq!(
        seen[1].envelope.error_message.as_deref(),
        Some("451 try later")
    );
    let millis = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(seen[1].next_attempt.map(millis), Some(millis(at)));
    assert_eq!(seen[0].next_attempt, None);
    assert_eq!(
        snapshot.message(&seen[0]).unwrap().to_bytes().unwrap(),
        b"Subject: in\r\n\r\nkept\r\n"
    );
    assert_eq!(seen[2].envelope.size, (INLINE_MAX + 10 + 15) as u64);
    assert_eq!(
        snapshot.message(&seen[2]).unwrap().size(),
        seen[2].envelope.size
    );
    assert_eq!(segments(dir.path()), before);
}

/// Snapshots taken while large mails arrive and leave (each in a segment of its own, deleted
/// once done) and small ones are compacted: each succeeds, shows every long-lived mail once,
/// and never a mail removed before it started.
#[test]
fn snapshots_under_load_neither_give_up_nor_lie() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(LogSpool::open_with(dir.path(), 64 * 1024).unwrap());
    let kept: Vec<String> = (0..20)
        .map(|i| incoming(&spool, format!("kept {i}\r\n").as_bytes()))
        .collect();
    let removed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (spool, removed, stop) = (spool.clone(), removed.clone(), stop.clone());
        std::thread::spawn(move || {
            let big = vec![b'b'; INLINE_MAX + 1];
            while !stop.load(Ordering::Relaxed) {
                let name = incoming(&spool, &big);
                let small = incoming(&spool, &[b's'; 20_000]);
                spool.remove(&name).unwrap();
                spool.remove(&small).unwrap();
                removed.lock().unwrap().extend([name, small]);
            }
        })
    };
    let (mut complete, mut taken) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        taken += 1;
        let removed_before: HashSet<String> = removed.lock().unwrap().iter().cloned().collect();
        let snapshot = LogSpool::snapshot(dir.path()).unwrap();
        let names: Vec<&str> = snapshot
            .mails
            .iter()
            .map(|m| m.envelope.name.as_str())
            .collect();
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "listed twice");
        if snapshot.complete {
            complete += 1;
            for name in &kept {
                assert!(unique.contains(name.as_str()), "{name} missing");
            }
        }
        for name in &names {
            assert!(!removed_before.contains(*name), "{name} was removed");
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    eprintln!(
        "{complete} of {taken} snapshots complete; {} mails churned",
        removed.lock().unwrap().len()
    );
    assert!(complete > 0);
}

#[test]
fn below_its_reserve_the_spool_refuses_new_mail_but_finishes_the_mail_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let spool = LogSpool::open(dir.path()).unwrap();
    let kept = incoming(&spool, b"accepted before the disk filled\r\n");
    let open = spool.incoming().unwrap();
    // No file system has this much free: as if it were full.
    let spool = spool.with_space_reserve(u64::MAX);
    let refused = spool.incoming().err().expect("refused at DATA");
    assert!(refused.is_storage_full(), "{refused}");
    // A message begun before is refused when complete, and leaves nothing behind.
    let late = open
        .commit(Envelope::new("x", None, vec![]))
        .expect_err("refused at the end of DATA");
    assert!(late.is_storage_full(), "{late}");
    assert_eq!(spool.list().unwrap(), vec![kept.clone()]);
    // What was accepted still moves: a hop, a retry and the removal use the space kept.
    let leased = spool.lease(Duration::ZERO).unwrap().unwrap();
    let mut mail = leased.mail;
    mail.set_state("transport");
    spool.update(&leased.token, &mail).unwrap();
    spool.complete(leased.token).unwrap();
    assert!(spool.list().unwrap().is_empty());
    drop(spool);
    assert!(LogSpool::open(dir.path())
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
}

/// A removal whose DONE record cannot be written (a full disk) changes nothing, and the same
/// lease removes the mail once writing works again. (The lease used to be dropped before the
/// append: the retry found it lost and gave up, the record was never written, and after a
/// restart the mail was processed, and delivered, a second time.)
#[test]
fn a_removal_that_fails_keeps_its_lease_for_the_retry_and_the_mail_stays_removed() {
    let dir = tempfile::tempdir().unwrap();
    let name = {
        let spool = LogSpool::open(dir.path()).unwrap();
        let name = incoming(&spool, b"delivered\r\n");
        let leased = spool.lease(Duration::ZERO).unwrap().unwrap();
        let (active, writable) = {
            let mut inner = lock(&spool.shared.inner);
            let active = inner.active;
            let segment = inner.segments.get_mut(&active).unwrap();
            let read_only = Arc::new(File::open(&segment.path).unwrap());
            (active, std::mem::replace(&mut segment.file, read_only))
        };
        assert!(spool.complete(leased.token.clone()).is_err());
        assert_eq!(spool.list().unwrap(), vec![name.clone()]);
        lock(&spool.shared.inner)
            .segments
            .get_mut(&active)
            .unwrap()
            .file = writable;
        spool.complete(leased.token).unwrap();
        assert!(spool.list().unwrap().is_empty());
        name
    };
    let spool = LogSpool::open(dir.path()).unwrap();
    assert!(spool.list().unwrap().is_empty(), "{name} came back");
    assert!(spool.lease(Duration::ZERO).unwrap().is_none());
}
