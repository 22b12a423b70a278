//! Crash safety with every repository in the embedded SQLite database: `kill -9` while
//! several SMTP sessions send and the spool delivers (group commits of the sessions' mails,
//! deliveries committed with their mails' removal in one transaction). After the restart every
//! mail that got `250` is in the inbox exactly once: no loss, and no duplicate either; the
//! restart finishes both what was acknowledged and not yet delivered and what was delivered
//! and not yet removed from the spool.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{python, wait_for, Server, Setup, Smtp};

/// The Message-IDs in `user`'s inbox, read over POP3, with how many times each is there.
fn inbox_ids(server: &Server, user: &str, password: &str) -> HashMap<String, usize> {
    let listing = python(
        "import poplib, sys\n\
         p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=30)\n\
         p.user(sys.argv[2]); p.pass_(sys.argv[3])\n\
         for i in range(1, p.stat()[0] + 1):\n\
         \x20   for line in p.retr(i)[1]:\n\
         \x20       if line.lower().startswith(b'message-id:'):\n\
         \x20           print(line.split(b':', 1)[1].strip().decode())\n\
         p.quit()",
        &[&server.pop3_port.to_string(), user, password],
    );
    let mut ids = HashMap::new();
    for id in listing.lines() {
        *ids.entry(id.to_string()).or_insert(0) += 1;
    }
    ids
}

/// The rows of `user`'s inbox (read beside the running server: SQLite in WAL mode).
fn inbox_rows(server: &Server, user: &str) -> usize {
    python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1], timeout=30)\n\
         try:\n\
         \x20   print(db.execute('SELECT count(*) FROM inbox WHERE repository_name = ?', (sys.argv[2],)).fetchone()[0])\n\
         except sqlite3.OperationalError:\n\
         \x20   print(0)",
        &[server.path("var/mail.db").to_str().unwrap(), user],
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn kill_9_during_a_burst_into_sqlite_delivers_every_accepted_mail_exactly_once() {
    let mut server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("alice", "a");
    let port = server.smtp_port;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    // Any reply but 250 to a whole mail, and the sessions that sent all theirs.
    let refused = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|session| {
            let (accepted, refused, finished) =
                (accepted.clone(), refused.clone(), finished.clone());
            std::thread::spawn(move || {
                // The server is killed under the sessions: their panics are expected.
                let _ = std::panic::catch_unwind(move || {
                    let mut smtp = Smtp::connect(port);
                    smtp.cmd("EHLO crash");
                    for i in 0..150 {
                        smtp.cmd("MAIL FROM:<s@example.net>");
                        smtp.cmd("RCPT TO:<alice@localhost>");
                        smtp.cmd("DATA");
                        let id = format!("<crash-{session}-{i}@test>");
                        let reply = smtp.cmd(&format!("Message-ID: {id}\r\n\r\nbody {i}\r\n."));
                        if reply.starts_with("250") {
                            accepted.lock().unwrap().push(id);
                        } else {
                            refused.lock().unwrap().push((id, reply));
                        }
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            })
        })
        .collect();
    wait_for("some deliveries", || inbox_rows(&server, "alice") >= 60);
    server.kill();
    for sender in senders {
        let _ = sender.join();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 60, "only {} accepted", accepted.len());
    assert!(
        finished.load(Ordering::SeqCst) < 4,
        "the burst ended before the kill"
    );
    let refused = refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "refused before the kill: {refused:?}");

    // What the restart has to finish: mails acknowledged and not yet delivered, and mails
    // delivered but not yet removed from the spool (delivered again: the inbox keeps one).
    let left = sqlite_count(&server, "SELECT count(*) FROM spool");
    let inboxed = inbox_rows(&server, "alice");
    server.spawn();
    wait_for("every accepted mail delivered", || {
        inbox_rows(&server, "alice") >= accepted.len()
    });
    let ids = inbox_ids(&server, "alice", "a");
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let twice: Vec<(&String, &usize)> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // Nothing is left in the spool: every mail was delivered and removed.
    wait_for("an empty spool", || {
        sqlite_count(&server, "SELECT count(*) FROM spool") == 0
    });
    eprintln!(
        "{} acknowledged before the kill; then {left} in the spool, {inboxed} in the inbox; \
         {} delivered",
        accepted.len(),
        ids.len()
    );
}

/// The count one SQL query returns, read beside the running server (SQLite in WAL mode).
fn sqlite_count(server: &Server, query: &str) -> usize {
    python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1], timeout=30)\n\
         print(db.execute(sys.argv[2]).fetchone()[0])",
        &[server.path("var/mail.db").to_str().unwrap(), query],
    )
    .trim()
    .parse()
    .unwrap()
}
