//! Issue 16's limits against the real binary: connection limits on every listener (per
//! listener and per client address, with each protocol's temporary refusal), a command line
//! that must end within `connectiontimeout`, a client that pipelines without reading, the
//! shutdown deadline, and 10,000 idle connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Server, Setup, Smtp};

const ADMIN: &str = r#"<administrator_accounts><account login="root" password="secret pass"/></administrator_accounts>"#;

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Connects and reads the first line the server says.
fn first_line(port: u16) -> (TcpStream, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (stream, line)
}

/// Connects until the server greets with `banner` rather than refusing, and returns that
/// connection: the start-up probe's session (or a test's earlier one) may still hold its place
/// for a moment on a loaded machine, so a place taken at once could be refused.
fn admitted(port: u16, banner: &str) -> TcpStream {
    let mut held = None;
    crate::harness::wait_for("a place", || {
        let (stream, line) = first_line(port);
        let ok = line.starts_with(banner);
        if ok {
            held = Some(stream);
        }
        ok
    });
    held.expect("admitted")
}

/// Whether the server closed `stream` (EOF after whatever it still had to say).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok()
}

#[test]
fn every_listener_refuses_beyond_its_limits_with_its_protocols_refusal() {
    let setup = Setup {
        pop3_handler: Some(""),
        nntp_handler: Some(""),
        remote_manager_handler: Some(ADMIN),
        extra: "<connections><max-connections>2</max-connections>\
                <max-connections-per-ip>0</max-connections-per-ip></connections>",
        ..Setup::default()
    };
    let server = Server::start_setup(&setup);
    for (port, banner, refusal) in [
        (server.smtp_port, "220 ", "421 4.7.0 "),
        (server.pop3_port, "+OK", "-ERR [SYS/TEMP] "),
        (server.nntp_port, "20", "400 "),
        (
            server.remote_manager_port,
            "Mailroom Remote",
            "Too many connections",
        ),
    ] {
        let held: Vec<TcpStream> = (0..2).map(|_| admitted(port, banner)).collect();
        let (mut third, line) = first_line(port);
        assert!(line.starts_with(refusal), "{port}: {line}");
        assert!(closed(&mut third), "refused and closed");
        drop(held);
        // The places are given back when the sessions end.
        crate::harness::wait_for("a place again", || first_line(port).1.starts_with(banner));
    }
    assert!(server.log().contains("connection limit reached"));
}

#[test]
fn one_client_address_gets_at_most_max_connections_per_ip() {
    let server = Server::start_setup(&Setup {
        extra: "<connections><max-connections>50</max-connections>\
                <max-connections-per-ip>3</max-connections-per-ip></connections>",
        ..Setup::default()
    });
    let held: Vec<TcpStream> = (0..3).map(|_| admitted(server.smtp_port, "220 ")).collect();
    let (mut fourth, line) = first_line(server.smtp_port);
    assert!(line.starts_with("421 4.7.0 "), "{line}");
    assert!(closed(&mut fourth));
    drop(held);
    crate::harness::wait_for("a place again", || {
        first_line(server.smtp_port).1.starts_with("220 ")
    });
}

#[test]
fn unset_limits_have_safe_defaults() {
    // No <connections>, no <maxmessagesize>, no <maxRcpt>.
    let server = Server::start();
    let held: Vec<TcpStream> = (0..10)
        .map(|_| admitted(server.smtp_port, "220 "))
        .collect();
    let (_eleventh, line) = first_line(server.smtp_port);
    assert!(
        line.starts_with("421 4.7.0 "),
        "10 per client address: {line}"
    );
    drop(held);
    crate::harness::wait_for("a place again", || {
        first_line(server.smtp_port).1.starts_with("220 ")
    });
    let mut smtp = Smtp::connect(server.smtp_port);
    let ehlo = smtp.cmd("EHLO client.test");
    assert!(ehlo.contains("250-SIZE 52428800"), "{ehlo}");
    assert!(smtp.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    for n in 0..100 {
        // Loopback may relay: every remote recipient is accepted up to the limit.
        let reply = smtp.cmd(&format!("RCPT TO:<r{n}@remote.example>"));
        assert!(reply.starts_with("250"), "{n}: {reply}");
    }
    let reply = smtp.cmd("RCPT TO:<r100@remote.example>");
    assert!(reply.starts_with("452 4.5.3"), "{reply}");
}

#[test]
fn a_client_trickling_a_line_is_cut_off_within_three_timeouts() {
    let server = Server::start_edited(&Setup::default(), |xml| {
        xml.replace(
            "<connectiontimeout>20000</connectiontimeout>",
            "<connectiontimeout>1500</connectiontimeout>",
        )
    });
    let (stream, banner) = first_line(server.smtp_port);
    assert!(banner.starts_with("220 "));
    let started = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    // One octet every half second, never a line end: each octet is well within the timeout.
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let cut = started.elapsed();
    assert!(line.starts_with("421 4.4.2 "), "{line}");
    assert!(cut < Duration::from_millis(4500), "cut off after {cut:?}");
    let mut rest = Vec::new();
    assert!(reader.read_to_end(&mut rest).is_ok(), "closed");
    trickle.join().unwrap();
}

/// Writes pipelined EHLOs (each answered with a multi-line reply) without reading, until the
/// server stops reading them or `for_at_most` has passed. Returns the stream and whether the
/// server stopped reading.
fn pipeline_without_reading(port: u16, for_at_most: Duration) -> (TcpStream, bool) {
    let (mut stream, _) = first_line(port);
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let batch = b"EHLO client.test\r\n".repeat(512);
    let started = Instant::now();
    while started.elapsed() < for_at_most {
        match stream.write(&batch) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (stream, true);
            }
            Err(e) => panic!("{e}"),
        }
    }
    (stream, false)
}

#[test]
fn a_client_that_pipelines_for_ten_seconds_without_reading_costs_little_memory() {
    let server = Server::start();
    let pid = server.pid();
    // Warm up: one ordinary session.
    Smtp::connect(server.smtp_port).cmd("EHLO warm.test");
    let before = rss_kib(pid);
    let started = Instant::now();
    let (stream, _) = pipeline_without_reading(server.smtp_port, Duration::from_secs(10));
    // Keep pushing for the rest of the ten seconds (each write may block for a second).
    let mut stream = stream;
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while started.elapsed() < Duration::from_secs(10) {
        let _ = stream.write(b"EHLO client.test\r\n");
    }
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    eprintln!("pipelining 10 s without reading: RSS {before} KiB -> {after} KiB");
    assert!(growth < 32 * 1024, "grew {growth} KiB");
    // The server still serves others.
    assert!(Smtp::connect(server.smtp_port)
        .cmd("NOOP")
        .starts_with("250"));
}

#[test]
fn sigterm_drops_a_session_blocked_on_a_client_that_does_not_read_at_the_deadline() {
    let mut server = Server::start_setup(&Setup {
        extra: "<connections><shutdown-deadline>1000</shutdown-deadline></connections>",
        ..Setup::default()
    });
    // An acknowledged mail first: it must survive the forced shutdown.
    server.add_user("alice", "a long secret");
    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.send_mail(
        "a@client.test",
        &["alice@localhost"],
        "Subject: kept\r\n\r\nacknowledged before the stop\r\n",
    );
    drop(smtp);
    let (_blocked, stopped_reading) =
        pipeline_without_reading(server.smtp_port, Duration::from_secs(30));
    assert!(
        stopped_reading,
        "the server kept reading a client that never reads"
    );
    let started = Instant::now();
    assert!(server.terminate().success(), "{}", server.log());
    let took = started.elapsed();
    // The connection timeout is 20 s: without the deadline the stop would wait for it.
    assert!(took < Duration::from_secs(6), "stopped after {took:?}");
    assert!(
        server.log().contains("shutdown deadline"),
        "{}",
        server.log()
    );
    server.spawn();
    let inbox = server.path("var/mail/inboxes/alice");
    crate::harness::wait_for("the acknowledged mail delivered", || {
        crate::harness::maildir_messages(&inbox)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("acknowledged before the stop"))
    });
}

/// Raises this process's open-files soft limit to its hard limit; returns the new soft limit.
fn raise_own_open_files() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[test]
fn ten_thousand_idle_connections_cost_little_and_a_new_client_is_still_served() {
    const IDLE: usize = 10_000;
    let open_files = raise_own_open_files();
    assert!(
        open_files > IDLE as u64 + 100,
        "this test needs `ulimit -n` above {IDLE} (hard limit), got {open_files}"
    );
    let server = Server::start_edited(
        &Setup {
            extra: "<connections><max-connections>20000</max-connections>\
                    <max-connections-per-ip>0</max-connections-per-ip></connections>",
            ..Setup::default()
        },
        |xml| {
            xml.replace(
                "<connectiontimeout>20000</connectiontimeout>",
                "<connectiontimeout>300000</connectiontimeout>",
            )
        },
    );
    let pid = server.pid();
    Smtp::connect(server.smtp_port).cmd("EHLO warm.test");
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(IDLE);
    let mut banner = [0u8; 4];
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(("127.0.0.1", server.smtp_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.read_exact(&mut banner).unwrap();
        assert_eq!(&banner, b"220 ");
        idle.push(stream);
    }
    let during = rss_kib(pid);
    let growth = during.saturating_sub(before);
    let per_connection = growth * 1024 / IDLE as u64;
    eprintln!(
        "{IDLE} idle connections: RSS {before} KiB -> {during} KiB ({per_connection} B each)"
    );
    assert!(growth < 150 * 1024, "grew {growth} KiB");
    // 12 KiB each before issue 16's fix, about 4.8 KiB after (debug build).
    assert!(per_connection < 8 * 1024, "{per_connection} octets each");
    // A new client is still served.
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("NOOP").starts_with("250"));
    drop(idle);
    // Closed again: the sessions end and their memory is given back (within 15 s).
    let mut after = rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(40);
    while after > before + growth / 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kib(pid);
    }
    eprintln!("after they closed: RSS {after} KiB");
    assert!(
        after <= before + growth / 2,
        "{after} KiB kept after they closed"
    );
}

/// Runs `clients` POP3 clients at once, each failing `attempts` logins; returns the server's
/// RSS growth in KiB.
fn failing_pop3_logins(server: &Server, clients: usize, attempts: usize) -> u64 {
    let before = rss_kib(server.pid());
    let port = server.pop3_port;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let (stream, banner) = first_line(port);
                assert!(banner.starts_with("+OK"), "{banner}");
                stream
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                for _ in 0..attempts {
                    writer.write_all(b"USER alice\r\nPASS wrong\r\n").unwrap();
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    assert!(line.starts_with("+OK"), "{line}");
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert!(line.starts_with("-ERR"), "{line}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    rss_kib(server.pid()).saturating_sub(before)
}

#[test]
fn failing_logins_from_many_clients_do_not_grow_memory_without_bound() {
    let server = Server::start_setup(&Setup {
        pop3_handler: Some(""),
        extra: r#"<connections><max-connections>200</max-connections>
                  <max-connections-per-ip>0</max-connections-per-ip></connections>
                  <authThrottle failures="1000000" window="1000" delay="1000" maxDelay="1000"/>"#,
        ..Setup::default()
    });
    server.add_user("alice", "a long secret");
    let ten = failing_pop3_logins(&server, 10, 3);
    let hundred = failing_pop3_logins(&server, 100, 2);
    let again = failing_pop3_logins(&server, 100, 2);
    eprintln!(
        "failing POP3 logins: RSS growth {ten} KiB (10 clients), then {hundred} KiB (100 \
         clients), then {again} KiB (100 more)"
    );
    // One argon2 memory (19 MiB) per hashing thread at most, and no growth once they have it.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    assert!(
        ten + hundred < (cpus.min(4) * 19 + 24) * 1024,
        "{ten} + {hundred} KiB"
    );
    assert!(again < 8 * 1024, "{again} KiB more for the same load");
}

#[test]
fn client_strings_are_sanitised_and_numbers_out_of_range_are_refused() {
    let server = Server::start_setup(&Setup {
        pop3_handler: Some(""),
        ..Setup::default()
    });
    server.add_user("alice", "a long secret");
    // EHLO with an escape sequence and a tab: none of it reaches Received:.
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("EHLO evil\x1b[31m\tname").starts_with("250"));
    // ENVID must be xtext (RFC 3461).
    let reply = smtp.cmd("MAIL FROM:<a@client.test> ENVID=a=b");
    assert!(reply.starts_with("501"), "{reply}");
    let reply = smtp.cmd("MAIL FROM:<a@client.test> ENVID=a+2");
    assert!(reply.starts_with("501"), "{reply}");
    assert!(smtp
        .cmd("MAIL FROM:<a@client.test> ENVID=ok+2Bfine")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: sanitised\r\n\r\nbody\r\n.\r\n");
    let reply = smtp.reply();
    assert!(reply.starts_with("250"), "{reply}");
    let inbox = server.path("var/mail/inboxes/alice");
    crate::harness::wait_for("the mail", || {
        !crate::harness::maildir_messages(&inbox).is_empty()
    });
    let mail = String::from_utf8_lossy(&crate::harness::maildir_messages(&inbox)[0]).to_string();
    let received = mail
        .lines()
        .find(|l| l.starts_with("Received: "))
        .unwrap_or_default();
    // The name ends at the tab; its escape character is replaced.
    assert!(
        received.starts_with("Received: from evil?[31m ("),
        "{received}"
    );
    assert!(!mail.contains('\x1b'), "{mail:?}");

    // POP3 USER with an escape sequence: logged escaped, never raw.
    let (stream, _) = first_line(server.pop3_port);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(b"USER \x1b[2Jevil\x1b]0;title\x07\r\nPASS wrong\r\n")
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("-ERR"), "{line}");
    // Numbers out of range are said to be, not clamped.
    writer
        .write_all(b"USER alice\r\nPASS a long secret\r\nRETR 18446744073709551616\r\nQUIT\r\n")
        .unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("-ERR number out of range: 18446744073709551616\r\n"),
        "{rest}"
    );
    assert!(!rest.contains("18446744073709551615"), "{rest}");
    crate::harness::wait_for("the failed login logged", || {
        server.log().contains("POP3 login failed")
    });
    let log = server.log();
    assert!(
        !log.contains('\x1b') && !log.contains('\x07'),
        "raw control characters in the log"
    );
}

#[test]
fn a_hundred_thousand_recipients_in_one_transaction_take_linear_time() {
    const RCPTS: usize = 100_000;
    let server = Server::start_with(crate::harness::DEFAULT_TREE, "<maxRcpt>0</maxRcpt>");
    let (stream, _) = first_line(server.smtp_port);
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        writer
            .write_all(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n")
            .unwrap();
        let batch: Vec<u8> = (0..RCPTS)
            .flat_map(|n| format!("RCPT TO:<r{n}@remote.example>\r\n").into_bytes())
            .collect();
        writer.write_all(&batch).unwrap();
        writer
            .write_all(b"DATA\r\nSubject: many\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            .unwrap();
    });
    let mut accepted = 0;
    let mut line = String::new();
    let mut last = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("250 2.1.5") {
            accepted += 1;
        }
        last = std::mem::take(&mut line);
    }
    sender.join().unwrap();
    let took = started.elapsed();
    eprintln!("{RCPTS} RCPTs and the mail: {took:?}");
    assert_eq!(accepted, RCPTS);
    assert!(last.starts_with("221"), "{last}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The spool hands the mail on (to var/mail/outgoing/ here) in linear time too.
    let outgoing = server.path("var/mail/outgoing");
    crate::harness::wait_for("the mail through the spool", || {
        crate::harness::repository_count(&outgoing) == 1
    });
}

/// The server's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_descriptors_is_logged_once_and_does_not_spin() {
    let server = Server::start_setup(&Setup {
        extra: "<connections><max-connections>0</max-connections>\
                <max-connections-per-ip>0</max-connections-per-ip></connections>",
        ..Setup::default()
    });
    let pid = server.pid();
    assert!(
        server.log().contains("open files limit"),
        "{}",
        server.log()
    );
    // Few descriptors left to the running server (util-linux's prlimit).
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=80:80"])
        .status()
        .unwrap();
    assert!(limited.success());
    // More clients than descriptors: the accepts beyond them fail with EMFILE.
    let clients: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(("127.0.0.1", server.smtp_port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(pid) - before;
    // Backing off: a few accept attempts a second, not a busy loop (300 ticks = 3 s of CPU).
    assert!(
        spent < 30,
        "{spent} ticks of CPU in 3 s while out of descriptors"
    );
    let log = server.log();
    assert_eq!(
        log.matches("out of file descriptors").count(),
        1,
        "logged once: {log}"
    );
    // Descriptors come back: the waiting clients are served, and so is a new one.
    drop(clients);
    crate::harness::wait_for("served again", || {
        TcpStream::connect(("127.0.0.1", server.smtp_port)).is_ok_and(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220")
        })
    });
    crate::harness::wait_for("the recovery logged", || {
        server.log().contains("file descriptors available again")
    });
}

#[test]
fn refused_console_adduser_commands_do_not_grow_memory() {
    let server = Server::start_setup(&Setup {
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    });
    server.add_user("alice", "a long secret");
    let pid = server.pid();
    let refused = |times: usize| {
        let commands: Vec<String> = (0..times)
            .map(|n| format!("adduser alice another secret {n}"))
            .collect();
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        let before = rss_kib(pid);
        let said = crate::harness::console(&server, &commands);
        assert_eq!(
            said.matches("User alice already exists").count(),
            times,
            "{said}"
        );
        std::thread::sleep(Duration::from_millis(300));
        rss_kib(pid).saturating_sub(before)
    };
    let first = refused(5);
    let then = refused(20);
    eprintln!("refused adduser: RSS growth {first} KiB (5), then {then} KiB (20 more)");
    // The hashing threads' memory once (19 MiB each), and nothing more after.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    assert!(first < (cpus.min(4) * 19 + 8) * 1024, "{first} KiB");
    assert!(then < 4 * 1024, "{then} KiB more");
}

#[test]
fn nntp_numbers_out_of_range_get_a_clear_error() {
    let server = Server::start_setup(&Setup {
        nntp_handler: Some(""),
        ..Setup::default()
    });
    let (stream, banner) = first_line(server.nntp_port);
    assert!(banner.starts_with("20"), "{banner}");
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(b"ARTICLE 18446744073709551616\r\nLISTGROUP misc.test 1-18446744073709551616\r\nQUIT\r\n")
        .unwrap();
    let mut all = String::new();
    reader.read_to_string(&mut all).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("501 "), "{all}");
    assert!(lines[1].starts_with("501 "), "{all}");
    assert!(!all.contains("18446744073709551615"), "{all}");
}

#[test]
fn an_implicit_tls_listener_over_its_limit_closes_without_plain_text() {
    let server = Server::start_edited(
        &Setup {
            extra: "<connections><max-connections>1</max-connections></connections>",
            ..Setup::default()
        },
        |xml| {
            xml.replacen(
                "<bind>127.0.0.1</bind>",
                r#"<bind>127.0.0.1</bind><tls socketTLS="true" startTLS="false"/>"#,
                1,
            )
        },
    );
    // The start-up probe's place is given back once its handshake fails (at once: it closed).
    std::thread::sleep(Duration::from_millis(300));
    let _held = TcpStream::connect(("127.0.0.1", server.smtp_port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = TcpStream::connect(("127.0.0.1", server.smtp_port)).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    refused.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "plain text to a TLS client: {got:?}");
    assert!(
        server.log().contains("connection limit reached"),
        "{}",
        server.log()
    );
}
