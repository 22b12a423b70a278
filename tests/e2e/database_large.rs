//! A 100 MiB message through SMTP into a spool and an inbox in a database, and out again by
//! POP3 RETR: the text comes back byte for byte (a SHA-256 of the body, the header lines
//! sent, LIST's size), and the server's peak resident memory (`VmHWM`) grows by less than
//! 32 MiB on the way (issue 14, item 3). On the embedded SQLite in every `cargo test`; on a
//! PostgreSQL cluster of the test's own in `.ci/run`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::database::{in_database, DATA_SOURCES};
use crate::harness::{Server, Setup, Smtp};
use crate::pg::{data_sources, open_mailbox, wait_long, PgCluster};

/// The size of the body sent, in octets (the header section adds a few more).
const BODY: usize = 100 * 1024 * 1024;

/// Peak resident memory growth allowed while the message goes through, in KiB.
const GROWTH_KIB: u64 = 32 * 1024;

/// The server's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Body line `n` (CRLF included): numbered, so that a chunk lost, repeated or reordered
/// changes the digest; every 997th starts with a dot (stuffed on the wire both ways), and the
/// text varies (a cheap generator) so that no two chunks of the store are alike.
fn body_line(n: u64, out: &mut Vec<u8>) {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if n.is_multiple_of(997) {
        out.push(b'.');
    }
    write!(out, "{n:09} ").unwrap();
    for _ in 0..5 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        write!(out, "{x:016x} ").unwrap();
    }
    out.extend_from_slice(b"\r\n");
}

/// What was sent: the body's SHA-256 and size (before dot-stuffing), its line count.
struct Sent {
    digest: Vec<u8>,
    octets: u64,
    lines: u64,
}

/// Sends the large mail to `rcpt` over one SMTP session, a megabyte at a time; asserts `250`.
fn send_large(port: u16, rcpt: &str, header: &str) -> Sent {
    let mut smtp = Smtp::connect(port);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp
        .cmd(&format!(
            "MAIL FROM:<sender@example.net> SIZE={}",
            BODY + 200
        ))
        .starts_with("250"));
    let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(header.as_bytes());
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut octets, mut lines) = (0u64, 0u64);
    let mut line = Vec::with_capacity(128);
    let mut wire = Vec::with_capacity(1 << 20);
    while (octets as usize) < BODY {
        line.clear();
        body_line(lines, &mut line);
        lines += 1;
        octets += line.len() as u64;
        digest.update(&line);
        if line[0] == b'.' {
            wire.push(b'.');
        }
        wire.extend_from_slice(&line);
        if wire.len() >= 1 << 20 {
            smtp.send(&wire);
            wire.clear();
        }
    }
    wire.extend_from_slice(b".\r\n");
    smtp.send(&wire);
    let reply = smtp.reply();
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
    Sent {
        digest: digest.finish().as_ref().to_vec(),
        octets,
        lines,
    }
}

/// Reads message 1 of `user`'s mailbox by RETR, a line at a time: checks that its header
/// section holds every line of `header`, and that the body is what was sent, and that LIST's
/// size is the octets RETR sent (dot-unstuffed).
fn retrieve_and_check(port: u16, user: &str, password: &str, header: &str, sent: &Sent) {
    // One session, read through a buffer: RETR's answer is 100 MiB. A mailbox still held by
    // the session before (its end not yet noticed by the server) is tried again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut reader, mut writer) = loop {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
        let mut writer = stream;
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("+OK"), "{status}");
        writer
            .write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
            .unwrap();
        for _ in 0..2 {
            status.clear();
            reader.read_line(&mut status).unwrap();
        }
        if status.starts_with("+OK") {
            break (reader, writer);
        }
        assert!(
            status.starts_with("-ERR [IN-USE]") && Instant::now() < deadline,
            "{status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    writer.write_all(b"LIST 1\r\nRETR 1\r\n").unwrap();
    let mut line = Vec::new();
    let mut next = |line: &mut Vec<u8>| {
        line.clear();
        assert!(reader.read_until(b'\n', line).unwrap() > 0, "closed");
    };
    next(&mut line);
    let list = String::from_utf8_lossy(&line).trim_end().to_string();
    assert!(list.starts_with("+OK 1 "), "{list}");
    let listed: u64 = list[6..].trim().parse().unwrap();
    next(&mut line);
    assert!(
        line.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    let mut head = Vec::new();
    loop {
        next(&mut line);
        if line == b"\r\n" {
            break;
        }
        assert!(head.len() < 64 * 1024, "no end to the header section");
        head.extend_from_slice(&line);
    }
    let head = String::from_utf8(head).unwrap();
    for want in header.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(
            head.contains(&format!("{want}\r\n")),
            "{want} not in {head}"
        );
    }
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut octets, mut lines) = (0u64, 0u64);
    loop {
        next(&mut line);
        if line == b".\r\n" {
            break;
        }
        let text = line.strip_prefix(b".").unwrap_or(&line);
        assert!(text.ends_with(b"\r\n"), "a line without CRLF");
        digest.update(text);
        octets += text.len() as u64;
        lines += 1;
    }
    writer.write_all(b"QUIT\r\n").unwrap();
    assert_eq!((octets, lines), (sent.octets, sent.lines));
    assert!(
        digest.finish().as_ref() == sent.digest.as_slice(),
        "the body differs"
    );
    assert_eq!(listed, head.len() as u64 + 2 + octets);
}

/// The whole round trip on `server` (all of whose repositories are in a database), with the
/// memory check.
fn round_trip(server: &Server, backend: &str) {
    server.add_user("bob", "secret");
    // A small mail first: pools, caches and workers are warmed up before the baseline.
    let mut smtp = server.smtp();
    smtp.send_mail(
        "sender@example.net",
        &["bob@localhost"],
        "Subject: small\r\n\r\nwarm-up\r\n",
    );
    drop(smtp);
    wait_long("the small mail delivered", Duration::from_secs(30), || {
        let mut pop = open_mailbox(server.pop3_port, "bob", "secret");
        let stat = pop.cmd("STAT").unwrap();
        let _ = pop.cmd("QUIT");
        stat.starts_with("+OK 1 ")
    });
    let mut pop = open_mailbox(server.pop3_port, "bob", "secret");
    assert!(pop.cmd("DELE 1").unwrap().starts_with("+OK"));
    assert!(pop.cmd("QUIT").unwrap().starts_with("+OK"));

    let pid = server.pid();
    let before = peak_rss_kib(pid);
    let start = Instant::now();
    let header = "Subject: large\r\nMessage-ID: <large@db.test>\r\nX-Backend: test\r\n\r\n";
    let sent = send_large(server.smtp_port, "bob@localhost", header);
    let sent_at = start.elapsed();
    wait_long("the large mail delivered", Duration::from_secs(300), || {
        let mut pop = open_mailbox(server.pop3_port, "bob", "secret");
        let stat = pop.cmd("STAT").unwrap();
        let _ = pop.cmd("QUIT");
        stat.starts_with("+OK 1 ")
    });
    let delivered_at = start.elapsed();
    retrieve_and_check(server.pop3_port, "bob", "secret", header, &sent);
    let after = peak_rss_kib(pid);
    let growth = after.saturating_sub(before);
    eprintln!(
        "{backend}: {} MiB message: 250 after {:.1} s, delivered after {:.1} s, read back after \
         {:.1} s; peak RSS {before} KiB -> {after} KiB (+{growth} KiB)",
        sent.octets >> 20,
        sent_at.as_secs_f64(),
        delivered_at.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        growth < GROWTH_KIB,
        "{backend}: peak RSS grew {growth} KiB (limit {GROWTH_KIB} KiB)"
    );
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_100_mib_message_through_sqlite_with_bounded_memory() {
    let server = Server::start_edited(
        &Setup {
            smtp_handler: "<maxmessagesize>0</maxmessagesize>",
            pop3_handler: Some(""),
            extra: DATA_SOURCES,
            ..Setup::default()
        },
        in_database,
    );
    round_trip(&server, "sqlite");
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn a_100_mib_message_through_postgresql_with_bounded_memory() {
    let pg = PgCluster::start();
    let extra = data_sources(&pg.url(), 300);
    let server = Server::start_edited(
        &Setup {
            smtp_handler: "<maxmessagesize>0</maxmessagesize>",
            pop3_handler: Some(""),
            extra: &extra,
            ..Setup::default()
        },
        in_database,
    );
    round_trip(&server, "postgresql");
}
