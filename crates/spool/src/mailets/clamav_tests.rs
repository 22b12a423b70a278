use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mailroom_mailet::{Envelope, MailAddress, Message};

use super::*;
use crate::mailets::testing::Recorder;

/// The mailet tests' context (it records what it is given), its postmaster at `localhost`.
fn ctx() -> Recorder {
    Recorder {
        postmaster: MailAddress::parse("postmaster@localhost").unwrap(),
        ..Recorder::new()
    }
}

/// What the fake clamd saw of one connection: the command and the chunk sizes.
#[derive(Debug, Default, Clone)]
struct Seen {
    command: String,
    chunks: Vec<usize>,
    data: Vec<u8>,
}

/// A clamd that answers `connections` connections: PONG to PING; for INSTREAM, FOUND when
/// the data holds `EVIL`, `size limit` past 2000 octets, OK otherwise.
fn fake_clamd(connections: usize) -> (u16, JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut all = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Seen::default();
            let mut byte = [0u8; 1];
            while s.read_exact(&mut byte).is_ok() && byte[0] != 0 {
                seen.command.push(byte[0] as char);
            }
            if seen.command == "zPING" {
                s.write_all(b"PONG\0").unwrap();
            } else {
                let mut over = false;
                loop {
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).unwrap();
                    let len = u32::from_be_bytes(len) as usize;
                    if len == 0 {
                        break;
                    }
                    let mut chunk = vec![0u8; len];
                    s.read_exact(&mut chunk).unwrap();
                    seen.chunks.push(len);
                    seen.data.extend_from_slice(&chunk);
                    if seen.data.len() > 2000 {
                        over = true;
                        break;
                    }
                }
                let reply: &[u8] = if over {
                    b"INSTREAM size limit exceeded. ERROR\0"
                } else if seen.data.windows(4).any(|w| w == b"EVIL") {
                    b"stream: Test.Evil FOUND\0"
                } else {
                    b"stream: OK\0"
                };
                s.write_all(reply).unwrap();
                // What the client still sends is read, so that closing sends no reset.
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            }
            all.push(seen);
        }
        all
    });
    (port, handle)
}

fn scanner(params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::default();
    register(&mut registry);
    let config = MailetConfig {
        name: "ClamAVScan".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    registry.mailet("ClamAVScan").unwrap()(&config)
}

fn mail(body: &str) -> Mail {
    let envelope = Envelope::new(
        "m1",
        MailAddress::parse("a@example.net").ok(),
        vec![MailAddress::parse("b@localhost").unwrap()],
    );
    let text = format!("Subject: t\r\n\r\n{body}\r\n");
    Mail::new(envelope, Message::from_bytes(text.as_bytes()))
}

#[test]
fn clean_and_infected_mails_are_marked_as_james() {
    let (port, clamd) = fake_clamd(3);
    let port = port.to_string();
    let scan = scanner(&[("host", "127.0.0.1"), ("port", &port), ("maxPings", "1")]).unwrap();
    let mut clean = mail("hello");
    scan.service(&mut clean, &ctx()).unwrap();
    assert_eq!(clean.message.header(HEADER).as_deref(), Some("false"));
    assert_eq!(clean.attribute(ATTRIBUTE), Some(&"false".into()));
    assert_eq!(clean.envelope.error_message, None);

    let mut infected = mail("this is EVIL");
    infected.envelope.error_message = Some("earlier".into());
    scan.service(&mut infected, &ctx()).unwrap();
    assert_eq!(infected.message.header(HEADER).as_deref(), Some("true"));
    assert_eq!(infected.attribute(ATTRIBUTE), Some(&"true".into()));
    let error = infected.envelope.error_message.clone().unwrap();
    assert!(
        error.starts_with("earlier\r\nstream: Test.Evil FOUND (by CLAMD on 127.0.0.1:"),
        "{error}"
    );
    // Already scanned: no connection (the fake answers 3 and has had them).
    scan.service(&mut infected, &ctx()).unwrap();
    let seen = clamd.join().unwrap();
    assert_eq!(seen[0].command, "zPING");
    assert_eq!(seen[1].command, "zINSTREAM");
    // The whole message went, header included.
    assert_eq!(seen[1].data, b"Subject: t\r\n\r\nhello\r\n");
}

#[test]
fn streams_in_chunks_of_stream_buffer_size() {
    let (port, clamd) = fake_clamd(1);
    let port = port.to_string();
    let scan = scanner(&[
        ("port", &port),
        ("host", "127.0.0.1"),
        ("maxPings", "0"),
        ("streamBufferSize", "100"),
    ])
    .unwrap();
    let mut m = mail(&"x".repeat(1000));
    let size = m.message.size() as usize;
    scan.service(&mut m, &ctx()).unwrap();
    let seen = clamd.join().unwrap();
    assert_eq!(seen[0].data.len(), size);
    assert!(seen[0].chunks.iter().all(|c| *c == 100 || *c == size % 100));
    assert_eq!(seen[0].chunks.len(), size.div_ceil(100));
}

#[test]
fn clamd_away_is_temporary_and_leaves_the_mail_alone() {
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let scan = scanner(&[
        ("host", "127.0.0.1"),
        ("port", &port),
        ("maxPings", "2"),
        ("pingIntervalMilli", "10"),
    ])
    .unwrap();
    let mut m = mail("hello");
    let e = scan.service(&mut m, &ctx()).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(e.message().contains("maxPings"), "{e}");
    // The wait is done once; later mails fail fast on the connection.
    let e = scan.service(&mut m, &ctx()).unwrap_err();
    assert!(
        e.is_temporary() && e.message().contains("unable to connect"),
        "{e}"
    );
    assert_eq!(m.message.header(HEADER), None);
    assert_eq!(m.attribute(ATTRIBUTE), None);
}

#[test]
fn a_stream_over_clamds_limit_is_a_permanent_error() {
    let (port, clamd) = fake_clamd(1);
    let port = port.to_string();
    let scan = scanner(&[("host", "127.0.0.1"), ("port", &port), ("maxPings", "0")]).unwrap();
    let mut m = mail(&"y".repeat(50_000));
    let e = scan.service(&mut m, &ctx()).unwrap_err();
    assert!(
        !e.is_temporary() && e.message().contains("size limit"),
        "{e}"
    );
    assert_eq!(m.attribute(ATTRIBUTE), None);
    clamd.join().unwrap();
}

#[test]
fn an_unexpected_answer_is_temporary() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let replies = Arc::new(Mutex::new(vec![&b"UNKNOWN COMMAND\0"[..], &b""[..]]));
    let r = replies.clone();
    let server = std::thread::spawn(move || {
        while let Some(reply) = r.lock().unwrap().pop() {
            let (mut s, _) = listener.accept().unwrap();
            // Read what comes, then answer (or just close).
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            s.write_all(reply).ok();
        }
    });
    let scan = scanner(&[("host", "127.0.0.1"), ("port", &port), ("maxPings", "0")]).unwrap();
    let mut m = mail("hello");
    // Closed without a verdict, then a reply that is no verdict.
    for _ in 0..2 {
        let e = scan.service(&mut m, &ctx()).unwrap_err();
        assert!(e.is_temporary(), "{e}");
    }
    server.join().unwrap();
    assert_eq!(m.attribute(ATTRIBUTE), None);
}

#[test]
fn factory_checks_every_parameter() {
    let bad: &[(&str, &str)] = &[
        ("port", "0"),
        ("port", "70000"),
        ("port", "x"),
        ("maxPings", "-1"),
        ("pingIntervalMilli", "soon"),
        ("streamBufferSize", "0"),
        ("streamBufferSize", "999999999"),
        ("debug", "maybe"),
        ("host", "two words"),
    ];
    for (name, value) in bad {
        let e = scanner(&[(name, value)])
            .err()
            .unwrap_or_else(|| panic!("{name}={value}"));
        assert!(e.message().contains(name), "{name}: {e}");
    }
    assert!(scanner(&[]).is_ok());
    assert!(scanner(&[
        ("debug", "true"),
        ("host", "clamd.example"),
        ("port", "3310")
    ])
    .is_ok());
}
