//! Session tests: every case is replayed whole, split at every byte boundary and fed byte by
//! byte, and must give the same transcript each time.

use std::net::IpAddr;
use std::sync::Arc;

use mailroom_mailet::{AttributeValue, Envelope, MailAddress};
use mailroom_smtp::{DataStart, Outcome, RecipientCheck, RecipientVerdict, Session, SmtpSettings};

/// What a client saw and what the spool got.
#[derive(Debug, PartialEq)]
struct Transcript {
    out: String,
    mails: Vec<Mail>,
    closed: bool,
}

#[derive(Debug, PartialEq)]
struct Mail {
    envelope: Envelope,
    body: String,
}

/// How the fake driver answers the session.
#[derive(Clone, Copy)]
struct Spool {
    open_fails: bool,
    commit_fails: bool,
    /// No room for an announced size (a full disk).
    no_room: bool,
}

const OK_SPOOL: Spool = Spool {
    open_fails: false,
    commit_fails: false,
    no_room: false,
};

/// Plays the driver: feeds `chunks` in order and answers every outcome.
fn drive(settings: &Arc<SmtpSettings>, peer: IpAddr, chunks: &[&[u8]], spool: Spool) -> Transcript {
    let mut session = Session::new(settings.clone(), peer);
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut mails = Vec::new();
    let mut opened = 0;
    let mut closed = false;
    session.greet(&mut out);
    'chunks: for chunk in chunks {
        let mut input = *chunk;
        loop {
            let (used, outcome) = session.ingest(input, &mut out, &mut body);
            assert!(used <= input.len());
            input = &input[used..];
            match current.as_mut() {
                Some(message) => message.append(&mut body),
                None => assert!(body.is_empty(), "body octets outside DATA"),
            }
            match outcome {
                // Input left: a batch of replies is pending (the driver writes it first).
                Outcome::Continue if !input.is_empty() => {
                    assert!(used > 0, "Continue left input without progress");
                    assert!(out.len() >= mailroom_smtp::session::REPLY_BATCH);
                }
                Outcome::Continue => break,
                Outcome::OpenMessage => {
                    opened += 1;
                    let start = DataStart {
                        id: format!("m{opened}"),
                        date: "Mon, 23 Nov 2026 09:07:51 +0000".into(),
                    };
                    if spool.open_fails {
                        session.begin_data(Err::<DataStart, _>("disk full"), &mut out, &mut body);
                        assert!(body.is_empty());
                    } else {
                        session.begin_data(Ok::<_, ()>(start), &mut out, &mut body);
                        current = Some(std::mem::take(&mut body));
                    }
                }
                Outcome::Commit(mut envelope) => {
                    let message = current.take().expect("commit without open message");
                    if spool.commit_fails {
                        session.committed(Err("fsync failed"), &mut out);
                    } else {
                        envelope.last_updated = 0;
                        mails.push(Mail {
                            envelope: *envelope,
                            body: String::from_utf8_lossy(&message).into_owned(),
                        });
                        session.committed(Ok::<(), ()>(()), &mut out);
                    }
                }
                Outcome::CheckRecipient(address) => {
                    let check = settings
                        .recipient_check
                        .as_ref()
                        .expect("checks configured");
                    let verdict = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                        .block_on(check.check(&address));
                    session.recipient_checked(verdict, &mut out);
                }
                Outcome::CheckRoom(_) => {
                    let room = match spool.no_room {
                        true => Err(std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            "no space left",
                        )),
                        false => Ok(()),
                    };
                    session.room_checked(room, &mut out);
                }
                Outcome::Discard => current = None,
                Outcome::Authenticate(_) | Outcome::CheckSender { .. } => {
                    panic!("AUTH is not configured in these tests (see tests/auth.rs)")
                }
                // No listener here has TLS: STARTTLS is tested in starttls.rs.
                Outcome::StartTls => panic!("STARTTLS accepted without TLS"),
                Outcome::Close => {
                    closed = true;
                    break 'chunks;
                }
            }
        }
    }
    Transcript {
        out: String::from_utf8_lossy(&out).into_owned(),
        mails,
        closed,
    }
}

/// Runs `input` whole, split in two at every boundary, and byte by byte; all must agree.
fn replay(settings: &Arc<SmtpSettings>, peer: IpAddr, input: &[u8], spool: Spool) -> Transcript {
    let whole = drive(settings, peer, &[input], spool);
    for i in 1..input.len() {
        let split = drive(settings, peer, &[&input[..i], &input[i..]], spool);
        assert_eq!(split, whole, "split at {i} differs");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        drive(settings, peer, &bytes, spool),
        whole,
        "byte by byte differs"
    );
    whole
}

/// The code (and enhanced code) of the last line of every reply.
fn codes(out: &str) -> Vec<String> {
    out.split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| {
            let mut words = l.split(' ');
            let code = words.next().unwrap_or_default().to_string();
            match words.next() {
                Some(w) if w.len() == 5 && w.as_bytes()[1] == b'.' => format!("{code} {w}"),
                _ => code,
            }
        })
        .collect()
}

fn settings() -> SmtpSettings {
    SmtpSettings {
        hello_name: "mx.example.org".into(),
        is_local_domain: Arc::new(|d| d == "example.org" || d == "localhost"),
        ..SmtpSettings::default()
    }
}

fn remote() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

fn run(settings: SmtpSettings, input: &str) -> Transcript {
    replay(&Arc::new(settings), remote(), input.as_bytes(), OK_SPOOL)
}

const HEAD: &str =
    "EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n";

#[test]
fn one_mail_with_received_header_and_envelope() {
    let t = run(
        settings(),
        &format!("{HEAD}Subject: hi\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n"),
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(t
        .out
        .contains("250 2.0.0 Message accepted for delivery (id m1)\r\n"));
    assert!(t
        .out
        .starts_with("220 mx.example.org ESMTP Mailroom ready\r\n250-mx.example.org\r\n"));
    assert!(t.closed);
    assert_eq!(t.mails.len(), 1);
    let mail = &t.mails[0];
    assert_eq!(
        mail.body,
        "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.org (Mailroom) with ESMTP id m1\r\n\tfor <b@example.org>;\r\n\tMon, 23 Nov 2026 09:07:51 +0000\r\n\
         Subject: hi\r\n\r\nbody\r\n.dot\r\n"
    );
    let env = &mail.envelope;
    assert_eq!(env.name, "m1");
    assert_eq!(env.state, "root");
    assert_eq!(env.sender.as_ref().unwrap().to_string(), "a@client.example");
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.remote_addr, "192.0.2.1");
    assert_eq!(env.remote_host, "client.example");
    assert_eq!(env.size, "Subject: hi\r\n\r\nbody\r\n.dot\r\n".len() as u64);
}

#[test]
fn ehlo_advertises_extensions() {
    let t = run(settings(), "EHLO c\r\n");
    assert!(t.out.ends_with(
        "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
    ));
    let t = run(
        SmtpSettings {
            max_message_size: 1000,
            ..settings()
        },
        "EHLO c\r\nHELO c\r\n",
    );
    assert!(t.out.contains("250-SIZE 1000\r\n"));
    assert!(t.out.ends_with("250 mx.example.org\r\n"));
}

#[test]
fn pipelined_commands_after_data_run_after_the_commit() {
    let t = run(
        settings(),
        &format!(
            "{HEAD}one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\nDATA\r\ntwo\r\n.\r\nNOOP\r\nQUIT\r\n"
        ),
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    let first = t.out.find("(id m1)").unwrap();
    let second_mail = t.out[first..].find("250 2.1.0").unwrap();
    assert!(second_mail > 0);
    assert_eq!(t.mails.len(), 2);
    assert!(t.mails[0].body.ends_with("\r\none\r\n"));
    assert!(t.mails[1].body.ends_with("\r\ntwo\r\n"));
    assert_eq!(t.mails[1].envelope.sender, None);
    assert_eq!(t.mails[1].envelope.recipients.len(), 2);
    // Two recipients: no `for` clause.
    assert!(!t.mails[1].body.contains("\tfor <"));
}

#[test]
fn smuggling_tricks_never_end_data() {
    for trick in [
        "\n.\n",
        "\r.\r",
        "\n.\r\n",
        "\r\n.\n",
        "\r\n.\r",
        "\r.\r\n",
        "\r\n.\r\r\n",
    ] {
        let t = run(
            settings(),
            &format!(
                "{HEAD}Subject: x\r\n\r\nhello{trick}MAIL FROM:<evil@client.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n"
            ),
        );
        assert_eq!(
            codes(&t.out),
            [
                "220",
                "250",
                "250 2.1.0",
                "250 2.1.5",
                "354",
                "550 5.6.2",
                "221 2.0.0"
            ],
            "trick {trick:?}"
        );
        assert!(t.mails.is_empty(), "trick {trick:?} committed a mail");
        assert!(t
            .out
            .contains("550 5.6.2 Message contains bare CR or LF\r\n"));
    }
}

#[test]
fn bare_lf_anywhere_in_data_refuses_the_message() {
    let t = run(settings(), &format!("{HEAD}a\nb\r\n.\r\nRSET\r\n"));
    assert_eq!(codes(&t.out)[5..], ["550 5.6.2", "250 2.0.0"]);
    assert!(t.mails.is_empty());
}

#[test]
fn declared_size_over_the_limit() {
    let s = || SmtpSettings {
        max_message_size: 100,
        ..settings()
    };
    let t = run(
        s(),
        "EHLO c\r\nMAIL FROM:<a@c.example> SIZE=101\r\nMAIL FROM:<a@c.example> SIZE=100\r\n",
    );
    assert_eq!(codes(&t.out), ["220", "250", "552 5.3.4", "250 2.1.0"]);
    assert!(t
        .out
        .contains("552 5.3.4 Message size exceeds fixed maximum message size\r\n"));
}

/// A size announced in MAIL FROM for which the spool has no room: `452 4.3.1` at once (RFC
/// 1870 §6.1), no transaction; a MAIL without SIZE is not checked, and pipelined commands
/// after the refused MAIL are answered in order.
#[test]
fn declared_size_without_room_in_the_spool() {
    let s = Arc::new(settings());
    let no_room = Spool {
        no_room: true,
        ..OK_SPOOL
    };
    let t = replay(
        &s,
        remote(),
        b"EHLO c\r\nMAIL FROM:<a@c.example> SIZE=5000\r\nRCPT TO:<b@example.org>\r\nRSET\r\nMAIL FROM:<a@c.example>\r\n",
        no_room,
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "250",
            "452 4.3.1",
            "503 5.5.1",
            "250 2.0.0",
            "250 2.1.0"
        ]
    );
    let sized = format!("{HEAD}x\r\n.\r\n").replace(
        "MAIL FROM:<a@client.example>",
        "MAIL FROM:<a@client.example> SIZE=5",
    );
    let t = replay(&s, remote(), sized.as_bytes(), OK_SPOOL);
    assert_eq!(codes(&t.out)[2], "250 2.1.0", "{}", t.out);
    assert_eq!(t.mails.len(), 1);
}

#[test]
fn actual_size_over_the_limit_is_discarded_then_refused_once() {
    let s = || SmtpSettings {
        max_message_size: 100,
        ..settings()
    };
    let big = "x".repeat(60);
    let t = run(s(), &format!("{HEAD}{big}\r\n{big}\r\n.\r\nNOOP\r\n"));
    assert_eq!(codes(&t.out)[4..], ["354", "552 5.3.4", "250 2.0.0"]);
    assert!(t.mails.is_empty());
    // Exactly at the limit: accepted (the Received header is not counted).
    let exact = "y".repeat(98);
    let t = run(s(), &format!("{HEAD}{exact}\r\n.\r\n"));
    assert_eq!(codes(&t.out)[5], "250 2.0.0");
    assert_eq!(t.mails[0].envelope.size, 100);
}

/// 100,000 recipients with duplicates among them: each duplicate is answered 250 and kept
/// once (the domain compares without case, the local part with it), the order of first
/// appearance is kept, and the limit counts distinct recipients only. (Run once by hand, this
/// also shows that the duplicate check is not quadratic.)
#[test]
fn many_recipients_duplicates_kept_once() {
    const N: usize = 100_000;
    let mut input = String::from("HELO c\r\nMAIL FROM:<a@c.example>\r\n");
    let mut expected = Vec::new();
    for i in 0..N {
        input.push_str(&format!("RCPT TO:<u{i}@example.org>\r\n"));
        expected.push(format!("u{i}@example.org"));
        if i % 10 == 9 {
            // A duplicate of an earlier recipient, its domain in capitals.
            input.push_str(&format!("RCPT TO:<u{}@EXAMPLE.ORG>\r\n", i / 2));
        }
        if i % 1000 == 0 {
            // Not a duplicate: local parts compare with case.
            input.push_str(&format!("RCPT TO:<U{i}@example.org>\r\n"));
            expected.push(format!("U{i}@example.org"));
        }
    }
    // Over the limit: refused, while a duplicate is still accepted.
    input.push_str("RCPT TO:<over@example.org>\r\nRCPT TO:<u7@example.org>\r\nDATA\r\n.\r\n");
    let settings = Arc::new(SmtpSettings {
        max_rcpt: expected.len(),
        ..settings()
    });
    let t = drive(&settings, remote(), &[input.as_bytes()], OK_SPOOL);
    let codes = codes(&t.out);
    // 220, HELO, MAIL, the RCPTs, 354, 250.
    let end = 3 + N + N / 10 + N / 1000 + 2;
    assert_eq!(codes.len(), end + 2, "{:?}", &codes[codes.len() - 5..]);
    assert!(codes[3..end - 2].iter().all(|c| c == "250 2.1.5"));
    assert_eq!(
        codes[end - 2..],
        ["452 4.5.3", "250 2.1.5", "354", "250 2.0.0"]
    );
    let got: Vec<String> = t.mails[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn max_rcpt() {
    let t = run(
        SmtpSettings { max_rcpt: 2, ..settings() },
        "HELO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\nDATA\r\n.\r\n",
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3",
            "354",
            "250 2.0.0"
        ]
    );
    assert_eq!(t.mails[0].envelope.recipients.len(), 2);
    assert!(t.mails[0].body.starts_with(
        "Received: from c ([192.0.2.1])\r\n\tby mx.example.org (Mailroom) with SMTP id m1;\r\n"
    ));
}

#[test]
fn relay_policy() {
    let input = "EHLO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<x@remote.example>\r\nRCPT TO:<y@Example.ORG>\r\nRCPT TO:<PostMaster>\r\n";
    let t = run(settings(), input);
    assert_eq!(codes(&t.out)[3..], ["550 5.7.1", "250 2.1.5", "250 2.1.5"]);
    assert!(t.out.contains("550 5.7.1 Relaying denied\r\n"));
    let open = SmtpSettings {
        relay_allowed: Arc::new(|_| true),
        ..settings()
    };
    assert_eq!(
        codes(&run(open, input).out)[3..],
        ["250 2.1.5", "250 2.1.5", "250 2.1.5"]
    );
    // The default policy lets loopback clients relay.
    let t = replay(
        &Arc::new(settings()),
        "::1".parse().unwrap(),
        input.as_bytes(),
        OK_SPOOL,
    );
    assert_eq!(codes(&t.out)[3], "250 2.1.5");
    // <postmaster> becomes postmaster@<hello name>.
    let t = run(
        settings(),
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n.\r\n",
    );
    assert_eq!(
        t.mails[0].envelope.recipients[0].to_string(),
        "postmaster@mx.example.org"
    );
}

/// Knows `b` and `b2`; `gone` is mapped to an error, `flaky` cannot be looked up. Panics on
/// `postmaster`, which must never be looked up.
struct Directory;

#[async_trait::async_trait]
impl RecipientCheck for Directory {
    async fn check(&self, recipient: &MailAddress) -> RecipientVerdict {
        match recipient.local_part() {
            "b" | "b2" => RecipientVerdict::Known,
            "gone" => RecipientVerdict::Refused {
                code: 551,
                text: "5.1.6 moved to <new@example.net>".into(),
            },
            "flaky" => RecipientVerdict::Unavailable,
            p if p.eq_ignore_ascii_case("postmaster") => panic!("postmaster looked up"),
            _ => RecipientVerdict::Unknown,
        }
    }
}

#[test]
fn local_recipients_are_looked_up_and_pipelined_replies_stay_in_order() {
    let checked = SmtpSettings {
        recipient_check: Some(Arc::new(Directory)),
        ..settings()
    };
    let input = "EHLO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<nobody@example.org>\r\n\
        RCPT TO:<b@example.org>\r\nRCPT TO:<gone@example.org>\r\nRCPT TO:<flaky@localhost>\r\n\
        RCPT TO:<Postmaster@example.org>\r\nRCPT TO:<x@remote.example>\r\nRCPT TO:<b@example.org>\r\n\
        RCPT TO:<b2@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    let t = run(checked, input);
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "250",
            "250 2.1.0",
            "550 5.1.1",
            "250 2.1.5",
            "551 5.1.6",
            "451 4.3.0",
            "250 2.1.5",
            "550 5.7.1",
            "250 2.1.5",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ],
        "{}",
        t.out
    );
    assert!(t
        .out
        .contains("550 5.1.1 <nobody@example.org>: no such user here\r\n"));
    assert!(t.out.contains("551 5.1.6 moved to <new@example.net>\r\n"));
    let recipients: Vec<String> = t.mails[0]
        .envelope
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        recipients,
        ["b@example.org", "Postmaster@example.org", "b2@example.org"]
    );
    // Without a check (`<verifyRecipients>false</verifyRecipients>`), all are accepted.
    let t = run(settings(), input);
    assert_eq!(t.mails[0].envelope.recipients.len(), 6, "{}", t.out);
}

#[test]
fn brackets_enforcement() {
    let input = "EHLO c\r\nMAIL FROM:a@c.example\r\nRCPT TO:b@example.org\r\n";
    let t = run(settings(), input);
    // Syntax is checked before sequence: the RCPT is refused for its brackets too.
    assert_eq!(codes(&t.out)[2..], ["501 5.5.4", "501 5.5.4"]);
    assert!(t
        .out
        .contains("address must be enclosed in <>, as in MAIL FROM:<user@domain>"));
    let lax = SmtpSettings {
        address_brackets_enforcement: false,
        ..settings()
    };
    assert_eq!(codes(&run(lax, input).out)[2..], ["250 2.1.0", "250 2.1.5"]);
}

#[test]
fn overlong_line_is_answered_once_then_resynchronised() {
    let t = run(
        settings(),
        &format!("NOOP {}\r\nNOOP\r\n", "A".repeat(5000)),
    );
    assert_eq!(codes(&t.out), ["220", "500 5.5.2", "250 2.0.0"]);
    assert!(t.out.contains("500 5.5.2 Line too long\r\n"));
}

#[test]
fn bad_characters_in_commands() {
    let t = run(settings(), "NO\0OP\r\nNOOP \u{e9}\r\nNO\rOP\r\nNOOP\r\n");
    assert_eq!(
        codes(&t.out),
        ["220", "500 5.5.2", "500 5.5.2", "500 5.5.2", "250 2.0.0"]
    );
    assert!(t.out.contains("NUL characters are not allowed"));
    assert!(t.out.contains("8-bit characters are not allowed"));
}

#[test]
fn sequence_and_simple_commands() {
    let t = run(
        settings(),
        "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nEHLO c\r\nDATA\r\nMAIL FROM:<a@c.example>\r\nMAIL FROM:<a@c.example>\r\nDATA\r\nVRFY bob\r\nEXPN list\r\nHELP\r\nFOO\r\nRSET\r\nRCPT TO:<b@example.org>\r\nQUIT\r\nNOOP\r\n",
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "503 5.5.1",
            "503 5.5.1",
            "503 5.5.1",
            "250",
            "503 5.5.1",
            "250 2.1.0",
            "503 5.5.1",
            "554 5.5.1",
            "252 2.5.2",
            "502 5.5.1",
            "214 2.0.0",
            "500 5.5.1",
            "250 2.0.0",
            "503 5.5.1",
            "221 2.0.0"
        ]
    );
    assert!(t.out.contains("554 5.5.1 No valid recipients\r\n"));
    assert!(t
        .out
        .contains("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"));
    assert!(t.closed);
    let lax = SmtpSettings {
        helo_ehlo_enforcement: false,
        ..settings()
    };
    assert_eq!(
        codes(&run(lax, "MAIL FROM:<a@c.example>\r\n").out),
        ["220", "250 2.1.0"]
    );
}

#[test]
fn syntax_errors() {
    let t = run(
        settings(),
        "EHLO\r\nEHLO c\r\nMAIL FROM:<a@@c>\r\nMAIL FROM:<a@c.example> FOO=1\r\nMAIL FROM:<a@c.example> SIZE=big\r\nMAIL TO:<a@c.example>\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<>\r\nRCPT TO:<b@c..d>\r\n",
    );
    assert_eq!(
        codes(&t.out),
        [
            "220",
            "501 5.5.4",
            "250",
            "501 5.1.7",
            "555 5.5.4",
            "501 5.5.4",
            "501 5.5.4",
            "250 2.1.0",
            "501 5.1.3",
            "501 5.1.3"
        ]
    );
}

#[test]
fn lf_only_command_lines_are_accepted() {
    let crlf = run(
        settings(),
        "EHLO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.org>\r\nRSET\r\nQUIT\r\n",
    );
    let lf = run(
        settings(),
        "EHLO c\nMAIL FROM:<a@c.example>\nRCPT TO:<b@example.org>\nRSET\nQUIT\n",
    );
    assert_eq!(crlf, lf);
}

/// RFC 6531: SMTPUTF8 is offered; a transaction with it takes UTF-8 addresses, keeps the
/// parameter as an attribute and says `UTF8SMTP` in its Received header; without it a
/// non-ASCII sender or recipient gets `553 5.6.7`.
#[test]
fn smtputf8_transactions() {
    let t = run(
        settings(),
        "EHLO c\r\nMAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<ünï@example.org>\r\nDATA\r\nSubject: grüße\r\n\r\nx\r\n.\r\n",
    );
    assert!(t.out.contains("250-SMTPUTF8\r\n"), "{}", t.out);
    assert_eq!(
        codes(&t.out)[2..],
        ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "250 2.0.0"]
    );
    let mail = &t.mails[0];
    assert_eq!(
        mail.envelope.sender.as_ref().unwrap().to_string(),
        "jörg@bücher.example"
    );
    assert_eq!(mail.envelope.recipients[1].local_part(), "ünï");
    assert_eq!(
        mail.envelope.attributes.get(mailroom_smtp::ATTR_SMTPUTF8),
        Some(&AttributeValue::Bool(true))
    );
    assert!(mail.body.contains(" with UTF8SMTP id m1"), "{}", mail.body);
    assert!(mail.body.ends_with("Subject: grüße\r\n\r\nx\r\n"));

    let t = run(
        settings(),
        "EHLO c\r\nMAIL FROM:<jörg@bücher.example>\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<ünï@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(
        codes(&t.out)[2..],
        [
            "553 5.6.7",
            "250 2.1.0",
            "553 5.6.7",
            "250 2.1.5",
            "354",
            "250 2.0.0"
        ]
    );
    assert!(!t.mails[0]
        .envelope
        .attributes
        .contains_key(mailroom_smtp::ATTR_SMTPUTF8));
    assert!(t.mails[0].body.contains(" with ESMTP id m1"));
}

#[test]
fn dsn_and_body_parameters_become_attributes() {
    let t = run(
        settings(),
        "EHLO c\r\nMAIL FROM:<a@c.example> RET=HDRS ENVID=QQ314159 BODY=8BITMIME\r\nRCPT TO:<b@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@example.org\r\nRCPT TO:<c@example.org>\r\nDATA\r\n.\r\n",
    );
    let attrs = &t.mails[0].envelope.attributes;
    let s = |v: &str| AttributeValue::String(v.into());
    assert_eq!(attrs.get(mailroom_smtp::ATTR_DSN_RET), Some(&s("HDRS")));
    assert_eq!(
        attrs.get(mailroom_smtp::ATTR_DSN_ENVID),
        Some(&s("QQ314159"))
    );
    assert_eq!(attrs.get(mailroom_smtp::ATTR_BODY), Some(&s("8BITMIME")));
    assert_eq!(attrs.get(mailroom_smtp::ATTR_HELO), Some(&s("c")));
    let Some(AttributeValue::Map(dsn)) = attrs.get(mailroom_smtp::ATTR_DSN_RECIPIENTS) else {
        panic!("no DSN recipients: {attrs:?}");
    };
    assert_eq!(dsn.len(), 1);
    let Some(AttributeValue::Map(b)) = dsn.get("b@example.org") else {
        panic!("{dsn:?}")
    };
    assert_eq!(b.get("notify"), Some(&s("FAILURE,DELAY")));
    assert_eq!(b.get("orcpt"), Some(&s("rfc822;b@example.org")));
}

#[test]
fn spool_failures_give_451() {
    let s = Arc::new(settings());
    let input = format!("{HEAD}x\r\n.\r\nNOOP\r\n");
    let t = replay(
        &s,
        remote(),
        input.as_bytes(),
        Spool {
            commit_fails: true,
            ..OK_SPOOL
        },
    );
    assert_eq!(codes(&t.out)[5..], ["451 4.3.0", "250 2.0.0"]);
    // The transaction is over after a failed commit.
    let t = replay(
        &s,
        remote(),
        format!("{HEAD}x\r\n.\r\nRCPT TO:<b@example.org>\r\n").as_bytes(),
        Spool {
            commit_fails: true,
            ..OK_SPOOL
        },
    );
    assert_eq!(codes(&t.out)[5..], ["451 4.3.0", "503 5.5.1"]);
    let t = replay(
        &s,
        remote(),
        format!("{HEAD}NOOP\r\n").as_bytes(),
        Spool {
            open_fails: true,
            ..OK_SPOOL
        },
    );
    assert_eq!(codes(&t.out)[4..], ["451 4.3.0", "250 2.0.0"]);
}

#[test]
fn a_full_spool_gives_452_at_data_and_at_the_end_of_data() {
    use mailroom_smtp::SpoolFailure;
    let full = || std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
    assert!(full().storage_full());
    assert!(!std::io::Error::other("fsync failed").storage_full());
    let mut session = Session::new(Arc::new(settings()), remote());
    let mut out = Vec::new();
    session.greet(&mut out);
    let mut body = Vec::new();
    let mut input: &[u8] = HEAD.as_bytes();
    while !input.is_empty() {
        let (used, outcome) = session.ingest(input, &mut out, &mut body);
        input = &input[used..];
        if matches!(outcome, Outcome::OpenMessage) {
            session.begin_data(Err::<DataStart, _>(full()), &mut out, &mut body);
        }
    }
    assert_eq!(codes(&String::from_utf8_lossy(&out))[4..], ["452 4.3.1"]);
    // Accepted at DATA, full by its end.
    let mut session = Session::new(Arc::new(settings()), remote());
    let mut out = Vec::new();
    session.greet(&mut out);
    let input = format!("{HEAD}x\r\n.\r\n");
    let mut input: &[u8] = input.as_bytes();
    while !input.is_empty() {
        let (used, outcome) = session.ingest(input, &mut out, &mut body);
        input = &input[used..];
        match outcome {
            Outcome::OpenMessage => {
                let start = DataStart {
                    id: "m1".into(),
                    date: "Mon, 23 Nov 2026 09:07:51 +0000".into(),
                };
                session.begin_data(Ok::<_, ()>(start), &mut out, &mut body);
            }
            Outcome::Commit(_) => session.committed(Err(full()), &mut out),
            _ => {}
        }
    }
    assert_eq!(
        codes(&String::from_utf8_lossy(&out))[4..],
        ["354", "452 4.3.1"]
    );
}

#[test]
fn too_many_errors_close_the_session() {
    let t = run(settings(), &"FOO\r\n".repeat(25));
    assert_eq!(codes(&t.out).len(), 1 + 20 + 1);
    assert!(t
        .out
        .ends_with("421 4.7.0 mx.example.org Error: too many errors\r\n"));
    assert!(t.closed);
}

#[test]
fn timeout_and_shutdown_replies() {
    let s = Arc::new(settings());
    let mut session = Session::new(s.clone(), remote());
    let mut out = Vec::new();
    session.timeout(&mut out);
    assert_eq!(out, b"421 4.4.2 mx.example.org Error: timeout exceeded\r\n");
    assert!(session.is_closed());
    let mut session = Session::new(s, remote());
    let mut out = Vec::new();
    session.shutdown(&mut out);
    assert_eq!(out, b"421 4.3.2 mx.example.org Service shutting down\r\n");
}

/// Random input, biased towards SMTP tokens, with random splits: the session must never panic
/// and must keep its contract with the driver (checked by `drive`).
#[test]
fn random_input_never_panics() {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const TOKENS: &[&[u8]] = &[
        b"EHLO c\r\n",
        b"HELO c\n",
        b"MAIL FROM:<a@c.example>\r\n",
        b"MAIL FROM:<> SIZE=5\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"RCPT TO:<x@remote.example>\r\n",
        b"DATA\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b"\0",
        b"\xff",
        b"RSET\r\n",
        b"QUIT\r\n",
        b"NOOP\r\n",
        b"<",
        b">",
        b":",
        b"=",
        b" ",
        b"MAIL FROM:",
    ];
    let settings = Arc::new(SmtpSettings {
        max_message_size: 50,
        max_rcpt: 2,
        ..settings()
    });
    for _ in 0..3000 {
        let mut input = Vec::new();
        let parts = next() % 40;
        for _ in 0..parts {
            match next() % 4 {
                0 => input.extend((0..next() % 20).map(|_| next() as u8)),
                1 if next() % 50 == 0 => input.extend(std::iter::repeat_n(b'a', 4100)),
                _ => input.extend_from_slice(TOKENS[(next() % TOKENS.len() as u64) as usize]),
            }
        }
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = (next() as usize % 9 + 1).min(rest.len());
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        let spool = Spool {
            open_fails: next() % 7 == 0,
            commit_fails: next() % 5 == 0,
            no_room: next() % 3 == 0,
        };
        let split = drive(&settings, remote(), &chunks, spool);
        let whole = drive(&settings, remote(), &[&input], spool);
        assert_eq!(split, whole, "input {:?}", String::from_utf8_lossy(&input));
    }
}

/// Issue 16: a client that pipelines commands without reading holds at most a batch of
/// replies: the session stops with input left once [`REPLY_BATCH`] octets are pending.
#[test]
fn pipelined_replies_are_bounded_per_batch() {
    use mailroom_smtp::session::REPLY_BATCH;
    let settings = Arc::new(settings());
    let mut session = Session::new(settings, remote());
    let (mut out, mut body) = (Vec::new(), Vec::new());
    let input = "EHLO client.example\r\n".repeat(10_000);
    let (used, outcome) = session.ingest(input.as_bytes(), &mut out, &mut body);
    assert!(matches!(outcome, Outcome::Continue));
    assert!(used < input.len(), "stopped with input left");
    assert!(
        out.len() >= REPLY_BATCH && out.len() < REPLY_BATCH + 1024,
        "{}",
        out.len()
    );
    // Written, the rest goes on from where it stopped.
    out.clear();
    let (more, _) = session.ingest(&input.as_bytes()[used..], &mut out, &mut body);
    assert!(more > 0 && out.starts_with(b"250-mx.example.org"));
}
