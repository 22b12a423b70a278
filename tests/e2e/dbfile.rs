//! DBFile (`dbfile://maildb/...`): the spool, the inboxes and the error repositories keep
//! their rows in the embedded SQLite database and their bodies in files under
//! `var/dbfile/maildb/`. SMTP in, POP3 out with UIDLs stable across a restart, `mailroom
//! queue` on a dbfile repository, a body file removed by hand (an error for that message
//! alone), kill -9 in the middle of a burst (nothing acknowledged lost), and a 100 MiB message
//! through all of it with the server's memory measured.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::database::{in_database, Pop3, DATA_SOURCES};
use crate::harness::{wait_for, Server, Setup, Smtp};

/// The harness's config with the spool, inboxes and error repositories in `dbfile://` (users
/// in `db://`: they have no bodies).
pub(crate) fn in_dbfile(xml: String) -> String {
    in_database(xml)
        .replace("db://maildb/inbox/", "dbfile://maildb/inbox/")
        .replace("db://maildb/spool/spool", "dbfile://maildb/spool/spool")
        .replace("db://maildb/mail/", "dbfile://maildb/mail/")
}

fn start(smtp_handler: &str) -> Server {
    Server::start_edited(
        &Setup {
            smtp_handler,
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_dbfile,
    )
}

/// The body files of a table (temporary ones aside).
fn body_files(server: &Server, table: &str) -> Vec<PathBuf> {
    let dir = server.path(&format!("var/dbfile/maildb/{table}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The body files of the inboxes' rows once the spool is done: a delivery from the spool
/// names the spool mail's file (no copy), so they are under `spool/` as well as `inbox/`.
fn delivered_files(server: &Server) -> Vec<PathBuf> {
    let mut files = body_files(server, "spool");
    files.extend(body_files(server, "inbox"));
    files
}

fn send(server: &Server, rcpt: &str, subject: &str) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.example.net").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n..dot\r\n").as_bytes());
    let reply = smtp.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
}

fn run(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn smtp_in_pop3_out_with_bodies_in_files() {
    let mut server = start("<verifyRecipients>false</verifyRecipients>");
    server.add_user("bob", "secret");
    for subject in ["one", "two", "three"] {
        send(&server, "bob@localhost", subject);
    }
    // Mail for nobody goes to the address-error repository, in dbfile too.
    send(&server, "nobody@localhost", "lost");
    wait_for("three deliveries", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 3
    });
    wait_for("three body files for three deliveries", || {
        delivered_files(&server).len() == 3
    });
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let uids = pop.uidl();
    let retr = pop.try_multi("RETR 1").unwrap();
    assert!(retr.iter().any(|l| l == "..dot"), "{retr:?}");
    assert!(
        retr.iter().any(|l| l.starts_with("Return-Path:")),
        "{retr:?}"
    );
    pop.cmd("QUIT");

    // The error repository in dbfile, read by `mailroom queue` through the database.
    const ERRORS: &str = "dbfile://maildb/mail/address-error/";
    wait_for("the mail in address-error", || {
        run(&server, &["queue", "list", ERRORS]).contains("1 mail(s) in")
    });
    assert_eq!(body_files(&server, "mail").len(), 1);
    let listed = run(&server, &["queue", "list", ERRORS]);
    let name = listed
        .lines()
        .find(|l| l.starts_with("Mail"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let shown = run(&server, &["queue", "show", &name, ERRORS]);
    assert!(shown.contains("Subject: lost"), "{shown}");

    // Restarted: the same UIDLs; a deletion holds and takes its body file with it.
    assert!(server.terminate().success());
    run(&server, &["queue", "delete", &name, ERRORS]);
    assert!(body_files(&server, "mail").is_empty());
    server.spawn();
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    assert_eq!(pop.uidl(), uids);
    assert!(pop.cmd("DELE 1").starts_with("+OK"));
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    wait_for("the deleted body file removed", || {
        delivered_files(&server).len() == 2
    });

    // A body file removed by hand: that message is an error, the session and the other
    // message go on, and the server keeps running.
    std::fs::remove_file(&delivered_files(&server)[0]).unwrap();
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let results: Vec<Result<Vec<String>, String>> = (1..=2)
        .map(|n| pop.try_multi(&format!("RETR {n}")))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
    let ok = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    assert!(ok.iter().any(|l| l.starts_with("Subject: ")), "{ok:?}");
    assert!(pop.cmd("NOOP").starts_with("+OK"));
    pop.cmd("QUIT");
    send(&server, "bob@localhost", "after");
    wait_for("the next delivery", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 3
    });
    let log = server.log();
    assert!(log.contains("is missing"), "{log}");
    // Nothing went to the file repositories.
    for dir in ["var/mail/inboxes", "var/mail/spool", "var/mail/error"] {
        assert!(!server.path(dir).exists(), "{dir} exists");
    }
}

/// The Message-IDs in bob's mailbox, read over POP3.
fn delivered(port: u16) -> HashSet<String> {
    let mut pop = Pop3::login(port, "bob", "secret");
    let count = pop.uidl().len();
    let ids = (1..=count)
        .filter_map(|n| pop.try_multi(&format!("TOP {n} 0")).ok())
        .filter_map(|lines| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
        })
        .collect();
    pop.cmd("QUIT");
    ids
}

#[test]
fn kill_9_during_a_burst_loses_nothing_with_dbfile() {
    let mut server = start("");
    server.add_user("bob", "secret");
    let port = server.smtp_port;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(move || {
                    let mut smtp = Smtp::connect(port);
                    smtp.cmd("EHLO crash");
                    for i in 0..150 {
                        smtp.cmd("MAIL FROM:<s@example.net>");
                        smtp.cmd("RCPT TO:<bob@localhost>");
                        smtp.cmd("DATA");
                        let id = format!("<burst-{t}-{i}@test>");
                        let reply = smtp.cmd(&format!("Message-ID: {id}\r\n\r\nbody {i}\r\n."));
                        if reply.starts_with("250") {
                            accepted.lock().unwrap().push(id);
                        }
                    }
                });
            })
        })
        .collect();
    let db = server.path("var/mail.db");
    wait_for("some deliveries", || {
        crate::harness::python(
            "import sqlite3, sys\n\
             print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM inbox').fetchone()[0])",
            &[db.to_str().unwrap()],
        )
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
            >= 40
    });
    server.kill();
    for sender in senders {
        let _ = sender.join();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 40, "only {} accepted", accepted.len());

    server.spawn();
    wait_for("every accepted mail delivered", || {
        let seen = delivered(server.pop3_port);
        accepted.iter().all(|id| seen.contains(id))
    });
    // Every message listed can be read (no row without its body).
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let count = pop.uidl().len();
    for n in 1..=count {
        pop.try_multi(&format!("RETR {n}")).unwrap();
    }
    pop.cmd("QUIT");
}

/// The server's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A 100 MiB message: SMTP into the dbfile spool, delivered to a dbfile inbox, read back
/// with POP3 RETR; the server's peak memory grows by less than 32 MiB.
#[test]
fn a_100_mib_message_through_dbfile_with_bounded_memory() {
    let server = start("<maxmessagesize>0</maxmessagesize>");
    server.add_user("bob", "secret");
    // Warm up every path once (SQLite pages, the POP3 session) before the baseline.
    send(&server, "bob@localhost", "warm-up");
    wait_for("the warm-up", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 1
    });
    let before = peak_rss_kib(server.pid());

    let line = [b'x'; 998];
    let lines = 100 * 1024 * 1024 / 1000;
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO big").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<bob@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: big\r\n\r\n");
    let mut block = Vec::with_capacity(1000 * 64);
    for _ in 0..64 {
        block.extend_from_slice(&line);
        block.extend_from_slice(b"\r\n");
    }
    for _ in 0..lines / 64 {
        smtp.send(&block);
    }
    let reply = smtp.cmd(".");
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
    let sent = 16 + (lines / 64 * 64 * 1000) as u64;

    wait_for("the big delivery", || {
        Pop3::login(server.pop3_port, "bob", "secret").uidl().len() == 2
    });
    let mut pop = Pop3::login(server.pop3_port, "bob", "secret");
    let listed = pop.cmd("LIST 2");
    let size: u64 = listed.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(size > sent, "{listed}");
    // RETR, counted as it streams.
    assert!(pop.cmd("RETR 2").starts_with("+OK"));
    let mut received = 0u64;
    loop {
        let l = pop.line();
        if l == "." {
            break;
        }
        received += l.len() as u64 + 2;
    }
    assert_eq!(received, size);
    pop.cmd("QUIT");
    let after = peak_rss_kib(server.pid());
    let growth = after.saturating_sub(before);
    eprintln!("dbfile 100 MiB: peak RSS {before} KiB before, {after} KiB after (+{growth} KiB)");
    assert!(growth < 32 * 1024, "peak RSS grew by {growth} KiB");
    assert_eq!(delivered_files(&server).len(), 2);
    assert!(file_len(&delivered_files(&server)) > 100 * 1000 * 1000);
}

fn file_len(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p: &PathBuf| std::fs::metadata(Path::new(p)).unwrap().len())
        .sum()
}

/// The body files' file system full (the database has room): new mail gets `452 4.3.1`, small
/// or large (ENOSPC while streaming), the session goes on, deliveries wait; once space
/// returns mail is accepted again, and every mail acknowledged is delivered exactly once.
#[test]
#[ignore = "needs root to mount a small tmpfs; run by .ci/run"]
fn a_full_body_file_system_answers_452_and_loses_nothing() {
    use crate::full_disk::{fill, Tmpfs};
    use crate::pg::{mailbox_ids, try_send, wait_long};
    let mut server = start("<maxmessagesize>0</maxmessagesize>");
    server.kill();
    let dir = server.path("var/dbfile");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let _tmpfs = Tmpfs::mount(&dir, "32m");
    server.spawn();
    server.add_user("alice", "a");

    let mut accepted = Vec::new();
    let mut send = |n: usize| {
        let id = format!("<dbfile-full-{n}@test>");
        let reply = try_send(server.smtp_port, "alice@localhost", &id).unwrap();
        assert!(
            reply.starts_with("250") || reply.starts_with("452 4.3.1"),
            "{reply}\n{}",
            server.log()
        );
        if reply.starts_with("250") {
            accepted.push(id);
        }
        reply.starts_with("250")
    };
    for n in 0..5 {
        assert!(send(n));
    }
    wait_long("the first five delivered", Duration::from_secs(60), || {
        mailbox_ids(server.pop3_port, "alice", "a").len() == 5
    });
    let filler = dir.join("filler");
    fill(&filler);
    let refused = (5..15).filter(|n| !send(*n)).count();
    assert!(refused > 0, "nothing refused on a full disk");
    // A large message under way: ENOSPC while its body streams, 452 at its end, and the
    // session goes on.
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("EHLO big").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: big\r\n\r\n");
    let line = [b'y'; 998];
    for _ in 0..4 * 1024 {
        smtp.send(&line);
        smtp.send(b"\r\n");
    }
    let reply = smtp.cmd(".");
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert!(smtp.cmd("NOOP").starts_with("250"));
    smtp.cmd("QUIT");
    // Space returns: the server goes on by itself.
    std::fs::remove_file(&filler).unwrap();
    for n in 15..20 {
        assert!(send(n), "mail {n} refused once space returned");
    }
    let mut delivered = std::collections::HashMap::new();
    wait_long(
        "every accepted mail delivered",
        Duration::from_secs(60),
        || {
            delivered.clear();
            for id in mailbox_ids(server.pop3_port, "alice", "a") {
                *delivered.entry(id).or_insert(0) += 1;
            }
            accepted.iter().all(|id| delivered.contains_key(id))
        },
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(delivered.len(), accepted.len(), "{delivered:?}");
    let log = server.log();
    assert!(!log.contains("state=error"), "{log}");
    // Nothing half-written is left in the temporary directories.
    for table in ["spool", "inbox"] {
        let tmp = server.path(&format!("var/dbfile/maildb/{table}/tmp"));
        let left = std::fs::read_dir(&tmp).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{}", tmp.display());
    }
}

/// DBFile over PostgreSQL with the database stopped under a message: its body file is written,
/// its row cannot be, and the client gets `451 4.3.0` (as new sessions do at RCPT); once the
/// database is back mail is accepted again, and what was acknowledged is delivered once.
#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn dbfile_over_postgresql_answers_451_while_the_database_is_away() {
    use crate::pg::{data_sources, mailbox_ids, try_send, wait_long, PgCluster};
    let pg = PgCluster::start();
    let extra = data_sources(&pg.url(), 10);
    let server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_dbfile,
    );
    server.add_user("bob", "secret");
    let mut accepted = Vec::new();
    for n in 0..3 {
        let id = format!("<pg-before-{n}@test>");
        let reply = try_send(server.smtp_port, "bob@localhost", &id).unwrap();
        assert!(reply.starts_with("250"), "{reply}");
        accepted.push(id);
    }
    // A message under way when the database goes.
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("EHLO t").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<bob@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Message-ID: <pg-lost@test>\r\n\r\n");
    smtp.send(&vec![b'z'; 300 * 1024]);
    pg.down();
    let reply = smtp.cmd("\r\n.");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    let reply = try_send(server.smtp_port, "bob@localhost", "<pg-away@test>").unwrap();
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    pg.up();
    let mut n = 0;
    wait_long("mail accepted again", Duration::from_secs(90), || {
        n += 1;
        let id = format!("<pg-after-{n}@test>");
        let ok =
            try_send(server.smtp_port, "bob@localhost", &id).is_ok_and(|r| r.starts_with("250"));
        if ok {
            accepted.push(id);
        }
        ok
    });
    let mut delivered = Vec::new();
    wait_long(
        "every accepted mail delivered",
        Duration::from_secs(90),
        || {
            delivered = mailbox_ids(server.pop3_port, "bob", "secret");
            accepted.iter().all(|id| delivered.contains(id))
        },
    );
    delivered.sort();
    accepted.sort();
    assert_eq!(
        delivered, accepted,
        "each acknowledged mail once, nothing else"
    );
    // Nothing half-written is left in the temporary directory.
    let tmp = server.path("var/dbfile/maildb/spool/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map_or(0, |d| d.count()), 0);
}

/// Power cuts (XFS shut down, as in `power_loss_more.rs`) in the middle of SMTP bursts into a
/// dbfile spool and inbox: every mail acknowledged before the cut is read whole over POP3
/// afterwards (its body file was durable before its row committed).
#[test]
#[ignore = "needs root and xfsprogs; run by .ci/run"]
fn dbfile_mail_acknowledged_before_a_power_cut_is_delivered_whole() {
    use crate::power_loss::{burst, cycles, reboot, Random, Xfs};
    use crate::power_loss_more::{check_database_inbox, smtp_clients};
    let xfs = Xfs::new();
    let mut random = Random::new("dbfile");
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_dbfile,
    );
    server.add_user("alice", "secret");
    xfs.sync();
    let mut total = 0;
    for cycle in 0..cycles() {
        let clients = smtp_clients(server.smtp_port, &format!("f{cycle}"));
        let acked = burst(&xfs, &mut random, 1000, clients);
        reboot(&mut server, &xfs);
        let found = check_database_inbox(&server, cycle, &acked);
        eprintln!(
            "cycle {cycle}: {} acknowledged, {found} delivered",
            acked.len()
        );
        total += acked.len();
    }
    eprintln!("dbfile: {total} acknowledged, 0 lost");
}
