//! A full file system is a temporary fault: LocalDelivery fails with ENOSPC, every mail that got
//! `250` stays in the spool and is retried, and once space returns each is delivered once. A
//! full spool refuses new mail with `452 4.3.1` (at DATA, or at the end of a message under way)
//! and keeps what it accepted.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{maildir_messages, repository_count, wait_for, Server, Smtp};

/// A small tmpfs mounted over a directory; unmounted when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "cannot mount a tmpfs (needs root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one file, until it is full.
pub(crate) fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    // Large blocks, then small ones for the last few KiB.
    for size in [64 * 1024, 512] {
        let block = vec![0u8; size];
        while file.write_all(&block).is_ok() {}
    }
    let _ = file.sync_all();
}

/// The Message-IDs of the mails in a Maildir.
/// Whether the running server's spool is empty: every delivered mail's removal written. A
/// kill before that delivers the mail again after the restart (allowed: the removal is not
/// waited for), which a test that counts deliveries must not mistake for a double delivery.
/// Waits until every accepted mail is in `inbox`, restarts the server once the spool's
/// removals are written, and checks that each accepted mail was delivered once, nothing else.
fn delivered_once_across_a_restart(server: &mut Server, inbox: &Path, mut accepted: Vec<String>) {
    wait_for("every accepted mail delivered", || {
        message_ids(inbox).len() >= accepted.len()
    });
    wait_for("the spool's removals written", || server.spool_empty());
    server.kill();
    server.spawn();
    std::thread::sleep(std::time::Duration::from_secs(2));
    wait_for("the spool empty after the restart", || server.spool_empty());
    let mut delivered = message_ids(inbox);
    delivered.sort();
    accepted.sort();
    assert_eq!(
        delivered, accepted,
        "each accepted mail delivered once, nothing else"
    );
}

fn message_ids(dir: &Path) -> Vec<String> {
    maildir_messages(dir)
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m);
            let start = text.find("Message-ID: ")? + 12;
            let end = text[start..].find(['\r', '\n'])? + start;
            Some(text[start..end].to_string())
        })
        .collect()
}

#[test]
#[ignore = "needs root to mount a small tmpfs; run by .ci/run"]
fn a_full_inbox_file_system_loses_nothing_and_delivers_once_space_returns() {
    let mut server = Server::start();
    server.add_user("alice", "a");
    // The inboxes, and only they, on a small file system that is then filled up.
    server.kill();
    let inboxes = server.path("var/mail/inboxes");
    let _tmpfs = Tmpfs::mount(&inboxes, "1m");
    let filler = inboxes.join("filler");
    fill(&filler);
    server.spawn();

    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.cmd("EHLO full");
    let mut accepted = Vec::new();
    for i in 0..25 {
        let id = format!("<full-{i}@test>");
        smtp.cmd("MAIL FROM:<s@example.net>");
        smtp.cmd("RCPT TO:<alice@localhost>");
        smtp.cmd("DATA");
        let reply = smtp.cmd(&format!("Message-ID: {id}\r\n\r\nbody {i}\r\n."));
        assert!(reply.starts_with("250"), "{reply}");
        accepted.push(id);
    }
    smtp.cmd("QUIT");

    wait_for("deliveries failing and kept for retry", || {
        server
            .log()
            .matches("rcpt=alice@localhost status=deferred")
            .count()
            >= 25
    });
    assert!(message_ids(&inboxes.join("alice")).is_empty());

    std::fs::remove_file(&filler).unwrap();
    wait_for("every accepted mail delivered", || {
        message_ids(&inboxes.join("alice")).len() >= accepted.len()
    });
    let delivered = message_ids(&inboxes.join("alice"));
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(delivered.len(), accepted.len(), "each delivered once");
    assert!(accepted.iter().all(|id| unique.contains(id)));
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
    let log = server.log();
    assert!(!log.contains("mail deleted"), "{log}");
}

/// Sends MAIL, RCPT and DATA for alice; returns DATA's reply.
fn begin_mail(smtp: &mut Smtp) -> String {
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    smtp.cmd("DATA")
}

/// Sends the message with Message-ID `id` and `body` after DATA's `354`; returns the reply.
fn end_mail(smtp: &mut Smtp, id: &str, body: &str) -> String {
    smtp.cmd(&format!("Message-ID: {id}\r\n\r\n{body}\r\n."))
}

#[test]
#[ignore = "needs root to mount a small tmpfs; run by .ci/run"]
fn a_full_spool_file_system_answers_452_and_loses_nothing() {
    let mut server = Server::start();
    server.add_user("alice", "a");
    // The spool and the inboxes (all of var/mail) on one small file system.
    server.kill();
    let mail_dir = server.path("var/mail");
    let _tmpfs = Tmpfs::mount(&mail_dir, "64m");
    server.spawn();
    let inbox = mail_dir.join("inboxes/alice");
    // Over 256 KiB: streamed into a segment of its own.
    let big = format!("{}\r\n", "x".repeat(76)).repeat(4000);

    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.cmd("EHLO full");
    let mut accepted = Vec::new();
    for i in 0..3 {
        assert!(begin_mail(&mut smtp).starts_with("354"));
        let id = format!("<before-{i}@test>");
        let reply = end_mail(&mut smtp, &id, "before");
        assert!(reply.starts_with("250"), "{reply}");
        accepted.push(id);
    }
    wait_for("the first mails delivered", || {
        message_ids(&inbox).len() == 3
    });

    // Two messages under way (one small, one large) when the disk fills up.
    let mut small_early = Smtp::connect(server.smtp_port);
    small_early.cmd("EHLO early");
    assert!(begin_mail(&mut small_early).starts_with("354"));
    let mut big_early = Smtp::connect(server.smtp_port);
    big_early.cmd("EHLO early");
    assert!(begin_mail(&mut big_early).starts_with("354"));

    let filler = mail_dir.join("filler");
    fill(&filler);
    let reply = end_mail(&mut small_early, "<early-small@test>", "small");
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    let reply = end_mail(&mut big_early, "<early-big@test>", &big);
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    // New mail is refused at DATA, and at MAIL FROM when it announces its size (RFC 1870),
    // and the session goes on.
    let reply = begin_mail(&mut smtp);
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert!(smtp.cmd("RSET").starts_with("250"));
    let sized = format!("MAIL FROM:<s@example.net> SIZE={}", big.len());
    let reply = smtp.cmd(&sized);
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("503"));

    // Space returns: mail is accepted again, and everything accepted is delivered once.
    std::fs::remove_file(&filler).unwrap();
    assert!(smtp.cmd(&sized).starts_with("250"));
    assert!(smtp.cmd("RSET").starts_with("250"));
    for (i, body) in ["after", big.as_str()].into_iter().enumerate() {
        assert!(begin_mail(&mut smtp).starts_with("354"));
        let id = format!("<after-{i}@test>");
        let reply = end_mail(&mut smtp, &id, body);
        assert!(reply.starts_with("250"), "{reply}");
        accepted.push(id);
    }
    smtp.cmd("QUIT");
    delivered_once_across_a_restart(&mut server, &inbox, accepted);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
#[ignore = "needs root to mount a small tmpfs; run by .ci/run"]
fn mail_accepted_before_both_disks_filled_waits_and_is_delivered_once_when_space_returns() {
    let mut server = Server::start();
    server.add_user("alice", "a");
    server.kill();
    // The spool and the inboxes on two small file systems.
    let spool_dir = server.path("var/mail/spool");
    let inboxes = server.path("var/mail/inboxes");
    let _spool_fs = Tmpfs::mount(&spool_dir, "64m");
    let _inbox_fs = Tmpfs::mount(&inboxes, "1m");
    let inbox_filler = inboxes.join("filler");
    fill(&inbox_filler);
    server.spawn();
    let inbox = inboxes.join("alice");

    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.cmd("EHLO both");
    let mut accepted = Vec::new();
    for i in 0..10 {
        assert!(begin_mail(&mut smtp).starts_with("354"));
        let id = format!("<both-{i}@test>");
        let reply = end_mail(&mut smtp, &id, "waits");
        assert!(reply.starts_with("250"), "{reply}");
        accepted.push(id);
    }
    wait_for("deliveries failing and kept for retry", || {
        server
            .log()
            .matches("rcpt=alice@localhost status=deferred")
            .count()
            >= 10
    });
    // The spool's file system fills up too: no new mail, and the mails it has wait.
    let spool_filler = spool_dir.join("filler");
    fill(&spool_filler);
    let reply = begin_mail(&mut smtp);
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert!(smtp.cmd("RSET").starts_with("250"));
    assert!(message_ids(&inbox).is_empty());

    // The inboxes get room first: the waiting mails are delivered, the spool still full.
    std::fs::remove_file(&inbox_filler).unwrap();
    wait_for("the waiting mails delivered", || {
        message_ids(&inbox).len() >= accepted.len()
    });
    // Then the spool: mail is accepted again.
    std::fs::remove_file(&spool_filler).unwrap();
    assert!(begin_mail(&mut smtp).starts_with("354"));
    let reply = end_mail(&mut smtp, "<both-after@test>", "after");
    assert!(reply.starts_with("250"), "{reply}");
    accepted.push("<both-after@test>".to_string());
    smtp.cmd("QUIT");
    delivered_once_across_a_restart(&mut server, &inbox, accepted);
}
