//! Power loss (see [`crate::power_loss`] for the rig) for POP3 deletions, the SQLite backend
//! and NNTP posts.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{wait_for, Server, Setup};
use crate::pg::{data_sources, PgCluster};
use crate::power_loss::{
    burst, check_message, cycles, message_of, reboot, restart, smtp_client, wait_long, Random, Xfs,
};

/// A line-oriented client (POP3, NNTP) whose failures end its loop instead of panicking.
struct Lines {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lines {
    fn connect(port: u16) -> Option<(Lines, String)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut lines = Lines {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        };
        let greeting = lines.line();
        Some((lines, greeting))
    }

    /// The next line without its end; `None` when the connection failed or closed.
    fn read(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end_matches(['\r', '\n']).to_string()),
            _ => None,
        }
    }

    /// The next line; empty when the connection failed.
    fn line(&mut self) -> String {
        self.read().unwrap_or_default()
    }

    fn cmd(&mut self, line: &str) -> String {
        if self
            .writer
            .write_all(format!("{line}\r\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        self.line()
    }

    /// The lines of a multi-line answer, dot-unstuffed, after a positive status; `None` on
    /// failure.
    fn multi(&mut self, line: &str, ok: &str) -> Option<Vec<String>> {
        if !self.cmd(line).starts_with(ok) {
            return None;
        }
        let mut lines = Vec::new();
        loop {
            let line = self.read()?;
            match line.as_str() {
                "." => return Some(lines),
                l => lines.push(l.strip_prefix('.').unwrap_or(l).to_string()),
            }
        }
    }

    fn pop3_login(port: u16, user: &str) -> Option<Lines> {
        for _ in 0..100 {
            let (mut pop, greeting) = Lines::connect(port)?;
            if !greeting.starts_with("+OK") || !pop.cmd(&format!("USER {user}")).starts_with("+OK")
            {
                return None;
            }
            let reply = pop.cmd("PASS secret");
            if reply.starts_with("+OK") {
                return Some(pop);
            }
            if !reply.contains("IN-USE") {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The messages of a POP3 mailbox: (number, whole text), `None` on failure.
    fn pop3_messages(&mut self) -> Option<Vec<(usize, String)>> {
        let list = self.multi("LIST", "+OK")?;
        let mut messages = Vec::new();
        for entry in list {
            let n: usize = entry.split(' ').next()?.parse().ok()?;
            let text = self.multi(&format!("RETR {n}"), "+OK")?.join("\n");
            messages.push((n, text));
        }
        Some(messages)
    }
}

/// The Message-ID in a message's text.
fn message_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(str::to_string)
}

/// A POP3 client of a burst: logs in again and again, deletes the first message and QUITs. Collects `ack:ID` for deletions QUIT acknowledged and `try:ID` for every DELE sent.
fn pop3_deleter(port: u16, user: &str, stop: &AtomicBool, collected: &Mutex<Vec<String>>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut pop) = Lines::pop3_login(port, user) else {
            return;
        };
        let Some(list) = pop.multi("LIST", "+OK") else {
            return;
        };
        let mut deleted = Vec::new();
        for entry in list.iter().take(1) {
            let n = entry.split(' ').next().unwrap_or_default().to_string();
            let Some(id) = pop
                .multi(&format!("TOP {n} 0"), "+OK")
                .and_then(|head| message_id(&head.join("\n")))
            else {
                return;
            };
            collected.lock().unwrap().push(format!("try:{id}"));
            if !pop.cmd(&format!("DELE {n}")).starts_with("+OK") {
                return;
            }
            deleted.push(id);
        }
        if !pop.cmd("QUIT").starts_with("+OK") || stop.load(Ordering::SeqCst) {
            return;
        }
        let mut collected = collected.lock().unwrap();
        collected.extend(deleted.into_iter().map(|id| format!("ack:{id}")));
        drop(collected);
        if list.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The Message-IDs in a Maildir's `new/` and `cur/`.
fn maildir_ids(dir: &std::path::Path) -> HashSet<String> {
    crate::harness::maildir_messages(dir)
        .iter()
        .filter_map(|m| message_id(&String::from_utf8_lossy(m)))
        .map(|id| id.trim_end_matches('\r').to_string())
        .collect()
}

#[test]
#[ignore = "needs root and xfsprogs; run by .ci/run"]
fn pop3_deletions_acknowledged_before_a_power_cut_stay_deleted() {
    let xfs = Xfs::new();
    let mut random = Random::new("pop3");
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            pop3_handler: Some(""),
            ..Setup::default()
        },
        |xml| xml,
    );
    let users = ["bob", "carol"];
    for user in users {
        server.add_user(user, "secret");
    }
    xfs.sync();
    let mut total = 0;
    for cycle in 0..cycles() {
        // Each mailbox topped up to 60 messages, made durable before the burst.
        let mut sent: Vec<HashSet<String>> = Vec::new();
        for user in users {
            let inbox = server.path(&format!("var/mail/inboxes/{user}"));
            let mut smtp = server.smtp();
            let mut ids = maildir_ids(&inbox);
            for n in 0..60usize.saturating_sub(ids.len()) {
                let id = format!("<p{cycle}-{user}-{n}@power.test>");
                smtp.send_mail(
                    "s@example.net",
                    &[&format!("{user}@localhost")],
                    &message_of(&id, n % 5),
                );
                ids.insert(id);
            }
            wait_for("deliveries", || maildir_ids(&inbox) == ids);
            sent.push(ids);
        }
        // The spool's removals too (a removal lost in the cut delivers the mail again).
        wait_for("the spool empty", || server.spool_empty());
        xfs.sync();
        let port = server.pop3_port;
        let clients: Vec<_> = users
            .iter()
            .map(|user| {
                let user = user.to_string();
                move |stop: &AtomicBool, collected: &Mutex<Vec<String>>| {
                    pop3_deleter(port, &user, stop, collected)
                }
            })
            .collect();
        let collected = burst(&xfs, &mut random, 600, clients);
        reboot(&mut server, &xfs);
        let acknowledged: HashSet<&str> = collected
            .iter()
            .filter_map(|c| c.strip_prefix("ack:"))
            .collect();
        let tried: HashSet<&str> = collected
            .iter()
            .filter_map(|c| c.strip_prefix("try:"))
            .collect();
        for (user, ids) in users.iter().zip(&sent) {
            let left = maildir_ids(&server.path(&format!("var/mail/inboxes/{user}")));
            for id in ids {
                if acknowledged.contains(id.as_str()) {
                    assert!(!left.contains(id), "cycle {cycle}: {id} came back");
                } else if !tried.contains(id.as_str()) {
                    assert!(left.contains(id), "cycle {cycle}: {id} was lost");
                }
            }
        }
        eprintln!(
            "cycle {cycle}: {} deletions acknowledged, {} tried",
            acknowledged.len(),
            tried.len()
        );
        total += acknowledged.len();
    }
    eprintln!("pop3: {total} deletions acknowledged, none came back");
}

/// Reads alice's mailbox over POP3 until every mail of `acked` is there, each whole, then
/// deletes everything; returns how many there were.
pub(crate) fn check_database_inbox(server: &Server, cycle: usize, acked: &[String]) -> usize {
    let mut found = HashSet::new();
    wait_long("every acknowledged mail in the database inbox", || {
        let Some(mut pop) = Lines::pop3_login(server.pop3_port, "alice") else {
            return false;
        };
        let Some(messages) = pop.pop3_messages() else {
            return false;
        };
        found.clear();
        for (_, text) in &messages {
            let id =
                check_message(text.as_bytes()).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            found.insert(id);
        }
        let done = acked.iter().all(|id| found.contains(id));
        if done {
            for (n, _) in &messages {
                assert!(pop.cmd(&format!("DELE {n}")).starts_with("+OK"));
            }
        }
        pop.cmd("QUIT").starts_with("+OK") && done
    });
    found.len()
}

/// SMTP clients of a burst, to alice.
pub(crate) fn smtp_clients(
    port: u16,
    prefix: &str,
) -> Vec<impl FnOnce(&AtomicBool, &Mutex<Vec<String>>) + Send + 'static> {
    (0..4)
        .map(|t| {
            let prefix = format!("{prefix}-t{t}");
            move |stop: &AtomicBool, acked: &Mutex<Vec<String>>| {
                smtp_client(port, "alice@localhost", &prefix, stop, acked)
            }
        })
        .collect()
}

#[test]
#[ignore = "needs root and xfsprogs; run by .ci/run"]
fn sqlite_mail_acknowledged_before_a_power_cut_is_delivered_whole() {
    let xfs = Xfs::new();
    let mut random = Random::new("sqlite");
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("alice", "secret");
    xfs.sync();
    let mut total = 0;
    for cycle in 0..cycles() {
        let clients = smtp_clients(server.smtp_port, &format!("d{cycle}"));
        let acked = burst(&xfs, &mut random, 1000, clients);
        reboot(&mut server, &xfs);
        let found = check_database_inbox(&server, cycle, &acked);
        eprintln!(
            "cycle {cycle}: {} acknowledged, {found} delivered",
            acked.len()
        );
        total += acked.len();
    }
    eprintln!("sqlite: {total} acknowledged, 0 lost");
}

/// SIGKILLs process `pid` and its children (PostgreSQL's postmaster and back ends), and waits
/// until they are gone.
fn kill_tree(pid: u32) {
    let children = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    pids.push(pid.to_string());
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .stderr(std::process::Stdio::null())
            .status();
    }
    wait_for("PostgreSQL's processes gone", || {
        pids.iter()
            .all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });
}

#[test]
#[ignore = "needs root, xfsprogs and PostgreSQL; run by .ci/run"]
fn postgres_mail_acknowledged_before_a_power_cut_is_delivered_whole() {
    let xfs = Xfs::new();
    let mut random = Random::new("postgres");
    // The cluster on the file system that loses power, and the server's home with it.
    let pg = PgCluster::start_in(xfs.path());
    // Short leases: the mails the killed server had leased are taken over soon.
    let extra = data_sources(&pg.url(), 5);
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    server.add_user("alice", "secret");
    xfs.sync();
    let mut total = 0;
    for cycle in 0..cycles() {
        let postmaster = pg.postmaster_pid().expect("postmaster.pid");
        let clients = smtp_clients(server.smtp_port, &format!("g{cycle}"));
        let acked = burst(&xfs, &mut random, 1000, clients);
        // Everything on the machine stops: the server, and PostgreSQL (its back ends follow
        // their postmaster).
        server.kill();
        kill_tree(postmaster);
        xfs.remount();
        pg.up();
        restart(&mut server);
        let found = check_database_inbox(&server, cycle, &acked);
        eprintln!(
            "cycle {cycle}: {} acknowledged, {found} delivered",
            acked.len()
        );
        total += acked.len();
    }
    eprintln!("postgres: {total} acknowledged, 0 lost");
}

/// The groups of tests/e2e/nntp.rs.
const GROUPS: &str = "<nntp-repository><articleIDDomainSuffix>news.example.test</articleIDDomainSuffix>\
    <newsgroups><newsgroup>comp.test</newsgroup><newsgroup>alt.test</newsgroup></newsgroups></nntp-repository>";

/// An NNTP client of a burst: posts until stopped or failing; collects the Message-IDs that
/// got `240`.
fn poster(port: u16, prefix: &str, stop: &AtomicBool, acknowledged: &Mutex<Vec<String>>) {
    let Some((mut news, greeting)) = Lines::connect(port) else {
        return;
    };
    if !greeting.starts_with("200") {
        return;
    }
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("<{prefix}-{n}@power.test>");
        if !news.cmd("POST").starts_with("340") {
            return;
        }
        let groups = if n % 5 == 4 {
            "comp.test,alt.test"
        } else {
            "comp.test"
        };
        let article = format!(
            "From: a@example.org\r\nNewsgroups: {groups}\r\n{}.",
            message_of(&id, n % 5)
        );
        if !news.cmd(&article).starts_with("240") || stop.load(Ordering::SeqCst) {
            return;
        }
        acknowledged.lock().unwrap().push(id);
        n += 1;
    }
}

#[test]
#[ignore = "needs root and xfsprogs; run by .ci/run"]
fn nntp_posts_acknowledged_before_a_power_cut_survive_whole() {
    let xfs = Xfs::new();
    let mut random = Random::new("nntp");
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            nntp_handler: Some(""),
            extra: GROUPS,
            ..Setup::default()
        },
        |xml| xml,
    );
    xfs.sync();
    let mut acknowledged = Vec::new();
    for cycle in 0..cycles() {
        let port = server.nntp_port;
        let clients: Vec<_> = (0..3)
            .map(|t| {
                move |stop: &AtomicBool, acked: &Mutex<Vec<String>>| {
                    poster(port, &format!("n{cycle}-t{t}"), stop, acked)
                }
            })
            .collect();
        let acked = burst(&xfs, &mut random, 1000, clients);
        reboot(&mut server, &xfs);
        acknowledged.extend(acked.iter().cloned());
        let (mut news, greeting) = Lines::connect(server.nntp_port).expect("NNTP");
        assert!(greeting.starts_with("200"), "{greeting}");
        for id in &acknowledged {
            let article = news
                .multi(&format!("ARTICLE {id}"), "220")
                .unwrap_or_else(|| panic!("cycle {cycle}: {id} was acknowledged and is lost"));
            let got = check_message(article.join("\n").as_bytes())
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            assert_eq!(&got, id);
        }
        // Every article a reader can see is whole, acknowledged or not.
        for group in ["comp.test", "alt.test"] {
            let numbers = news
                .multi(&format!("LISTGROUP {group}"), "211")
                .expect("LISTGROUP");
            for n in numbers {
                let article = news
                    .multi(&format!("ARTICLE {n}"), "220")
                    .unwrap_or_else(|| panic!("cycle {cycle}: {group} {n} listed, unreadable"));
                check_message(article.join("\n").as_bytes())
                    .unwrap_or_else(|e| panic!("cycle {cycle}: {group} {n}: {e}"));
            }
        }
        let group = news.cmd("GROUP comp.test");
        assert!(group.starts_with("211"), "{group}");
        news.cmd("QUIT");
        eprintln!(
            "cycle {cycle}: {} acknowledged, {} in all, {group}",
            acked.len(),
            acknowledged.len()
        );
    }
    eprintln!("nntp: {} acknowledged, 0 lost", acknowledged.len());
}
