//! The database goes away while the server runs: PostgreSQL stopped and started again under a
//! load of SMTP sessions. While it is away, SMTP answers `451 4.3.0` and POP3 `-ERR
//! [SYS/TEMP]`; the server recovers by itself once it is back; every mail acknowledged with
//! `250`, before or after, is delivered exactly once, and none ends in the error repository.
//! Likewise a full disk under SQLite.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::database::in_database;
use crate::full_disk::{fill, Tmpfs};
use crate::harness::{Server, Setup, Smtp};
use crate::pg::{data_sources, mailbox_ids, try_send, wait_long, Outcomes, PgCluster, Pop3};

fn count(outcomes: &Outcomes, accepted: bool) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("250")) == accepted)
        .count()
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn postgres_stopped_and_restarted_under_load() {
    let pg = PgCluster::start();
    // Short leases: a lease taken as the database went away, whose taking was never
    // answered, is not waited for long.
    let extra = data_sources(&pg.url(), 10);
    let server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("bob", "secret");

    let outcomes: Outcomes = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let (outcomes, stop, port) = (outcomes.clone(), stop.clone(), server.smtp_port);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("<fault-{t}-{n}@test>");
                    n += 1;
                    let reply = try_send(port, "bob@localhost", &id).ok();
                    outcomes.lock().unwrap().push((id, reply));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    wait_long("mail accepted", Duration::from_secs(60), || {
        count(&outcomes, true) >= 15
    });
    pg.down();
    let accepted_before_stop = count(&outcomes, true);
    let refused_before = count(&outcomes, false);
    wait_long("sessions refused", Duration::from_secs(90), || {
        count(&outcomes, false) >= refused_before + 3
    });
    // POP3 cannot open a mailbox now: a temporary failure, not a bad password.
    let mut pop = Pop3::connect(server.pop3_port).unwrap();
    let reply = pop.login("bob", "secret").unwrap();
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    drop(pop);

    pg.up();
    // The server recovers by itself: new mail is accepted again, without a restart.
    let accepted_at_restart = count(&outcomes, true);
    wait_long("mail accepted again", Duration::from_secs(90), || {
        count(&outcomes, true) >= accepted_at_restart + 10
    });
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.join().unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let refused: Vec<&String> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().filter(|r| !r.starts_with("250")))
        .collect();
    assert!(!refused.is_empty());
    for reply in &refused {
        assert!(reply.starts_with("451 4.3.0"), "refused with {reply}");
    }
    assert!(
        outcomes.iter().all(|(_, r)| r.is_some()),
        "a session failed"
    );
    let accepted: Vec<&String> = outcomes
        .iter()
        .filter(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("250")))
        .map(|(id, _)| id)
        .collect();
    assert!(accepted.len() > accepted_before_stop);

    // Every acknowledged mail is delivered, once; the spool empties; nothing went to error.
    let mut delivered = HashMap::new();
    wait_long(
        "every accepted mail delivered",
        Duration::from_secs(120),
        || {
            delivered.clear();
            for id in mailbox_ids(server.pop3_port, "bob", "secret") {
                *delivered.entry(id).or_insert(0) += 1;
            }
            accepted.iter().all(|id| delivered.contains_key(*id))
        },
    );
    wait_long("the spool empty", Duration::from_secs(60), || {
        pg.query("SELECT count(*) FROM spool") == "0"
    });
    delivered.clear();
    for id in mailbox_ids(server.pop3_port, "bob", "secret") {
        *delivered.entry(id).or_insert(0) += 1;
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    if pg.query("SELECT to_regclass('mail') IS NOT NULL") == "t" {
        let errors = pg.query("SELECT count(*) FROM mail");
        assert_eq!(errors, "0", "{}", server.log());
    }
    let log = server.log();
    assert!(!log.contains("state=error"), "{log}");
}

#[test]
#[ignore = "needs root to mount a small tmpfs; run by .ci/run"]
fn a_full_disk_under_sqlite_refuses_with_452_and_recovers() {
    let extra = data_sources("sqlite://var/db/mail.db", 300);
    let setup = Setup {
        pop3_handler: Some(""),
        extra: &extra,
        ..Setup::default()
    };
    let mut server = Server::start_edited(&setup, in_database);
    // The database, and only it, on a small file system.
    server.kill();
    let db_dir = server.path("var/db");
    // Absent when the server was killed before it opened its storage (it binds first).
    if db_dir.exists() {
        std::fs::remove_dir_all(&db_dir).unwrap();
    }
    let _tmpfs = Tmpfs::mount(&db_dir, "64m");
    server.spawn();
    server.add_user("alice", "a");

    let mut accepted = Vec::new();
    let mut send = |n: usize| {
        let id = format!("<sqlite-full-{n}@test>");
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
    // Full: what cannot be stored is refused with 452 4.3.1, SQLITE_FULL (what still fits is
    // acknowledged).
    let filler = db_dir.join("filler");
    fill(&filler);
    let refused = (5..25).filter(|n| !send(*n)).count();
    assert!(refused > 0, "nothing refused on a full disk");
    // A size announced at MAIL FROM that the database's file system has no room for: 452 4.3.1
    // at once (RFC 1870), before the message is sent.
    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.cmd("EHLO full");
    let sized = "MAIL FROM:<s@example.net> SIZE=1000000";
    let reply = smtp.cmd(sized);
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    // Space returns: the server goes on by itself.
    std::fs::remove_file(&filler).unwrap();
    assert!(smtp.cmd(sized).starts_with("250"));
    smtp.cmd("QUIT");
    for n in 25..30 {
        assert!(send(n), "mail {n} refused once space returned");
    }
    let mut delivered = HashMap::new();
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
    let log = server.log();
    assert!(!log.contains("state=error"), "{log}");
}
