//! The POP3 session state machine, driven directly: no sockets, no store.

use std::sync::Arc;

use mailroom_pop3::codec::DotEncoder;
use mailroom_pop3::{Credential, Login, LoginFailure, Outcome, Pop3Settings, Session};
use mailroom_store::MailboxMessage;

fn settings(apop: bool) -> Arc<Pop3Settings> {
    Arc::new(Pop3Settings {
        hello_name: "pop.example.test".into(),
        enable_apop: apop,
        ..Pop3Settings::default()
    })
}

fn snapshot() -> Vec<MailboxMessage> {
    vec![
        MailboxMessage {
            uid: "1700000000.M1P1Q0.host".into(),
            size: 120,
        },
        MailboxMessage {
            uid: "1700000001.M2P1Q1.host".into(),
            size: 200,
        },
    ]
}

/// Feeds `input` until the session needs the driver or has consumed it all; returns what it
/// wrote, the outcome, and the octets not consumed.
fn feed(session: &mut Session, input: &str) -> (String, Outcome, String) {
    let mut out = Vec::new();
    let (used, outcome) = session.ingest(input.as_bytes(), &mut out);
    (
        String::from_utf8(out).unwrap(),
        outcome,
        input[used..].to_string(),
    )
}

/// Sends one complete exchange that needs no driver and returns the replies.
fn say(session: &mut Session, input: &str) -> String {
    let (out, outcome, rest) = feed(session, input);
    assert_eq!(outcome, Outcome::Continue, "{out}");
    assert!(rest.is_empty());
    out
}

/// A session logged in as alice over the two-message snapshot.
fn logged_in() -> Session {
    let mut session = Session::new(settings(false), 7);
    assert_eq!(say(&mut session, "USER alice\r\n"), "+OK send PASS\r\n");
    let (_, outcome, _) = feed(&mut session, "PASS secret\r\n");
    assert!(matches!(outcome, Outcome::Login(_)));
    let mut out = Vec::new();
    assert_eq!(
        session.logged_in(Ok(snapshot()), &mut out),
        Outcome::Continue
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "+OK maildrop has 2 messages (320 octets)\r\n"
    );
    session
}

#[test]
fn greeting_carries_an_apop_timestamp_only_when_apop_is_on() {
    let mut out = Vec::new();
    Session::new(settings(false), 1).greet(&mut out);
    assert_eq!(out, b"+OK pop.example.test POP3 Mailroom ready\r\n");

    let odd = Arc::new(Pop3Settings {
        hello_name: "pop=odd.example".into(),
        enable_apop: true,
        ..Pop3Settings::default()
    });
    let mut out = Vec::new();
    Session::new(odd, 0xabc).greet(&mut out);
    let banner = String::from_utf8(out).unwrap();
    let ts = &banner[banner.find('<').unwrap()..banner.find('>').unwrap() + 1];
    assert_eq!(ts, "<0000000000000abc@popodd.example>");
    assert!(!ts.contains('='));
}

#[test]
fn user_pass_with_spaces_logs_in() {
    let mut session = Session::new(settings(false), 1);
    assert_eq!(
        say(&mut session, "PASS early\r\n"),
        "-ERR send USER first\r\n"
    );
    say(&mut session, "user Alice\r\n");
    let (out, outcome, _) = feed(&mut session, "PASS  a pass phrase \r\n");
    assert_eq!(out, "");
    // Logged outcomes never show the password.
    let printed = format!("{outcome:?}");
    assert!(!printed.contains("pass phrase"), "{printed}");
    assert_eq!(
        outcome,
        Outcome::Login(Login {
            user: "Alice".into(),
            credential: Credential::Password(" a pass phrase ".into()),
        })
    );
    let mut out = Vec::new();
    session.logged_in(Ok(Vec::new()), &mut out);
    assert_eq!(out, b"+OK maildrop has 0 messages (0 octets)\r\n");
    assert_eq!(session.user(), Some("Alice"));
    assert_eq!(
        say(&mut session, "USER bob\r\n"),
        "-ERR already logged in\r\n"
    );
}

#[test]
fn commands_before_login_are_refused_and_the_session_goes_on() {
    let mut session = Session::new(settings(false), 1);
    for cmd in [
        "STAT", "LIST", "RETR 1", "DELE 1", "TOP 1 1", "UIDL", "RSET", "NOOP",
    ] {
        assert_eq!(
            say(&mut session, &format!("{cmd}\r\n")),
            "-ERR log in first (USER and PASS, APOP or AUTH)\r\n",
            "{cmd}"
        );
    }
    assert_eq!(
        say(&mut session, "APOP alice 0123\r\n"),
        "-ERR APOP is not enabled on this server\r\n"
    );
    assert_eq!(
        say(&mut session, "STLS\r\n"),
        "-ERR STLS is not available on this server\r\n"
    );
    let capa = say(&mut session, "CAPA\r\n");
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "SASL PLAIN",
    ] {
        assert!(capa.contains(&format!("\r\n{cap}\r\n")), "{capa}");
    }
    assert!(capa.starts_with("+OK") && capa.ends_with("\r\n.\r\n"));
    let (out, outcome, _) = feed(&mut session, "QUIT\r\n");
    assert_eq!(out, "+OK pop.example.test POP3 server signing off\r\n");
    assert_eq!(outcome, Outcome::Close);
}

#[test]
fn transaction_commands() {
    let mut s = logged_in();
    assert_eq!(say(&mut s, "STAT\r\n"), "+OK 2 320\r\n");
    assert_eq!(
        say(&mut s, "LIST\r\n"),
        "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    );
    assert_eq!(say(&mut s, "LIST 2\r\n"), "+OK 2 200\r\n");
    assert_eq!(
        say(&mut s, "UIDL\r\n"),
        "+OK unique-id listing follows\r\n1 1700000000.M1P1Q0.host\r\n2 1700000001.M2P1Q1.host\r\n.\r\n"
    );
    assert_eq!(
        say(&mut s, "UIDL 1\r\n"),
        "+OK 1 1700000000.M1P1Q0.host\r\n"
    );
    assert_eq!(say(&mut s, "NOOP\r\n"), "+OK\r\n");
    assert_eq!(say(&mut s, "DELE 1\r\n"), "+OK message 1 deleted\r\n");
    assert_eq!(say(&mut s, "DELE 1\r\n"), "-ERR message 1 is deleted\r\n");
    assert_eq!(say(&mut s, "RETR 1\r\n"), "-ERR message 1 is deleted\r\n");
    assert_eq!(say(&mut s, "STAT\r\n"), "+OK 1 200\r\n");
    assert_eq!(
        say(&mut s, "LIST\r\n"),
        "+OK 1 messages (200 octets)\r\n2 200\r\n.\r\n"
    );
    assert_eq!(say(&mut s, "UIDL\r\n").lines().count(), 3);
    assert_eq!(
        say(&mut s, "RSET\r\n"),
        "+OK maildrop has 2 messages (320 octets)\r\n"
    );
    assert_eq!(say(&mut s, "LIST 1\r\n"), "+OK 1 120\r\n");
}

#[test]
fn bad_input_gets_a_clear_error_and_the_session_goes_on() {
    let mut s = logged_in();
    let none = "-ERR no message 3; the maildrop has messages 1 to 2\r\n";
    assert_eq!(say(&mut s, "RETR 3\r\n"), none);
    assert_eq!(
        say(&mut s, "LIST 0\r\n"),
        "-ERR no message 0; the maildrop has messages 1 to 2\r\n"
    );
    assert_eq!(
        say(&mut s, "TOP 99999999999999999999999 1\r\n"),
        // Said as sent, not clamped to another number (issue 16).
        "-ERR number out of range: 99999999999999999999999\r\n"
    );
    assert_eq!(
        say(&mut s, "RETR\r\n"),
        "-ERR syntax: RETR message-number\r\n"
    );
    assert_eq!(
        say(&mut s, "DELE x\r\n"),
        "-ERR syntax: DELE message-number\r\n"
    );
    assert_eq!(
        say(&mut s, "TOP 1\r\n"),
        "-ERR syntax: TOP message-number lines\r\n"
    );
    assert_eq!(say(&mut s, "FOO bar\r\n"), "-ERR unknown command FOO\r\n");
    assert_eq!(say(&mut s, "\r\n"), "-ERR empty command\r\n");
    // A 10 MB line: one error once it ends, then the session goes on.
    let mut out = Vec::new();
    let long = vec![b'x'; 10 * 1024 * 1024];
    assert_eq!(s.ingest(&long, &mut out), (long.len(), Outcome::Continue));
    assert!(out.is_empty());
    assert_eq!(
        say(&mut s, "xx\r\nSTAT\r\n"),
        "-ERR line too long\r\n+OK 2 320\r\n"
    );
}

#[test]
fn pipelined_commands_stop_where_the_driver_is_needed() {
    let mut s = logged_in();
    let (out, outcome, rest) = feed(&mut s, "STAT\r\nTOP 2 5\r\nNOOP\r\nRETR 1\r\nQUIT\r\n");
    assert_eq!(out, "+OK 2 320\r\n");
    assert_eq!(
        outcome,
        Outcome::Send {
            index: 1,
            body_lines: Some(5)
        }
    );
    assert_eq!(rest, "NOOP\r\nRETR 1\r\nQUIT\r\n");
    // Until the driver answers, nothing more is consumed.
    assert_eq!(feed(&mut s, &rest).1, Outcome::Continue);
    assert_eq!(feed(&mut s, &rest).2, rest);
    let mut out = Vec::new();
    s.message_opened(true, &mut out);
    assert_eq!(out, b"+OK top of message follows\r\n");
    let (out, outcome, rest) = feed(&mut s, &rest);
    assert_eq!(out, "+OK\r\n");
    assert_eq!(
        outcome,
        Outcome::Send {
            index: 0,
            body_lines: None
        }
    );
    let mut out = Vec::new();
    s.message_opened(true, &mut out);
    // The body follows from the driver, through the encoder.
    let mut encoder = DotEncoder::whole();
    encoder.encode(b".hidden\r\n", &mut out);
    encoder.finish(&mut out);
    assert_eq!(out, b"+OK 120 octets\r\n..hidden\r\n.\r\n");
    let (out, outcome, _) = feed(&mut s, &rest);
    assert_eq!(
        out,
        "+OK pop.example.test POP3 server signing off (2 messages left)\r\n"
    );
    assert_eq!(outcome, Outcome::Close);
}

#[test]
fn a_message_that_cannot_be_opened_is_a_temporary_error() {
    let mut s = logged_in();
    assert!(matches!(feed(&mut s, "RETR 2\r\n").1, Outcome::Send { .. }));
    let mut out = Vec::new();
    s.message_opened(false, &mut out);
    assert_eq!(out, b"-ERR [SYS/TEMP] message 2 cannot be read now\r\n");
    assert_eq!(say(&mut s, "NOOP\r\n"), "+OK\r\n");
}

#[test]
fn quit_deletes_only_in_update() {
    let mut s = logged_in();
    say(&mut s, "DELE 2\r\n");
    let (out, outcome, _) = feed(&mut s, "QUIT\r\n");
    assert_eq!(out, "");
    assert_eq!(outcome, Outcome::Commit(vec![1]));
    let mut out = Vec::new();
    assert_eq!(s.committed(true, &mut out), Outcome::Close);
    assert_eq!(
        out,
        b"+OK pop.example.test POP3 server signing off (1 messages left)\r\n"
    );

    let mut s = logged_in();
    say(&mut s, "DELE 1\r\n");
    feed(&mut s, "QUIT\r\n");
    let mut out = Vec::new();
    s.committed(false, &mut out);
    assert_eq!(
        out,
        b"-ERR [SYS/TEMP] some deleted messages were not removed\r\n"
    );

    // Shutdown and timeout say goodbye and delete nothing.
    let mut s = logged_in();
    say(&mut s, "DELE 1\r\n");
    let mut out = Vec::new();
    s.shutdown(&mut out);
    assert_eq!(
        out,
        b"-ERR [SYS/TEMP] server shutting down; nothing was deleted\r\n"
    );
    assert_eq!(feed(&mut s, "QUIT\r\n").1, Outcome::Close);
    let mut s = logged_in();
    let mut out = Vec::new();
    s.timeout(&mut out);
    assert!(out.starts_with(b"-ERR "));
}

#[test]
fn login_failures_carry_response_codes_and_end_the_session_at_the_third() {
    let mut s = Session::new(settings(false), 1);
    let fail = |s: &mut Session, failure| {
        say(s, "USER alice\r\n");
        assert!(matches!(feed(s, "PASS wrong\r\n").1, Outcome::Login(_)));
        let mut out = Vec::new();
        let outcome = s.logged_in(Err(failure), &mut out);
        (String::from_utf8(out).unwrap(), outcome)
    };
    assert_eq!(
        fail(&mut s, LoginFailure::InUse),
        (
            "-ERR [IN-USE] mailbox is open in another session\r\n".into(),
            Outcome::Continue
        )
    );
    assert_eq!(
        fail(&mut s, LoginFailure::Temporary).0,
        "-ERR [SYS/TEMP] cannot open the mailbox now; try again later\r\n"
    );
    let auth = "-ERR [AUTH] invalid user name or password\r\n";
    assert_eq!(fail(&mut s, LoginFailure::Credentials).0, auth);
    assert_eq!(fail(&mut s, LoginFailure::Credentials).0, auth);
    assert_eq!(
        fail(&mut s, LoginFailure::Credentials),
        (
            "-ERR [AUTH] invalid user name or password; closing\r\n".into(),
            Outcome::Close
        )
    );
}

#[test]
fn auth_plain_initial_response_and_continuation() {
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let login = |user: &str, pw: &str| {
        Outcome::Login(Login {
            user: user.into(),
            credential: Credential::Password(pw.into()),
        })
    };
    let mut s = Session::new(settings(false), 1);
    assert_eq!(
        say(&mut s, "AUTH\r\n"),
        "+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
    );
    assert_eq!(
        feed(
            &mut s,
            &format!("AUTH PLAIN {}\r\n", b64("\0alice\0pass word"))
        )
        .1,
        login("alice", "pass word")
    );
    let mut s = Session::new(settings(false), 1);
    assert_eq!(
        feed(
            &mut s,
            &format!("auth plain {}\r\n", b64("Alice\0alice\0pw"))
        )
        .1,
        login("alice", "pw")
    );

    let mut s = Session::new(settings(false), 1);
    assert_eq!(say(&mut s, "AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(
        feed(&mut s, &format!("{}\r\n", b64("\0bob\0s"))).1,
        login("bob", "s")
    );

    let mut s = Session::new(settings(false), 1);
    assert_eq!(say(&mut s, "AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(say(&mut s, "*\r\n"), "-ERR authentication cancelled\r\n");
    assert_eq!(
        say(&mut s, &format!("AUTH PLAIN {}\r\n", b64("bob\0alice\0pw"))),
        "-ERR [AUTH] cannot log in as another user\r\n"
    );
    assert_eq!(
        say(&mut s, "AUTH PLAIN !!!\r\n"),
        "-ERR malformed AUTH PLAIN response\r\n"
    );
    assert_eq!(
        say(&mut s, "AUTH PLAIN =\r\n"),
        "-ERR malformed AUTH PLAIN response\r\n"
    );
    assert_eq!(
        say(&mut s, "AUTH CRAM-MD5\r\n"),
        "-ERR unsupported SASL mechanism CRAM-MD5\r\n"
    );
}

#[test]
fn apop_hands_the_banner_timestamp_to_the_driver() {
    let mut s = Session::new(settings(true), 0x1234);
    let mut banner = Vec::new();
    s.greet(&mut banner);
    let banner = String::from_utf8(banner).unwrap();
    assert!(
        banner.ends_with(" <0000000000001234@pop.example.test>\r\n"),
        "{banner}"
    );
    let outcome = feed(&mut s, "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n").1;
    let printed = format!("{outcome:?}");
    assert!(!printed.contains("c4c9334b"), "{printed}");
    assert_eq!(
        outcome,
        Outcome::Login(Login {
            user: "alice".into(),
            credential: Credential::Apop {
                timestamp: "<0000000000001234@pop.example.test>".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
            },
        })
    );
}

#[test]
fn plaintext_logins_are_refused_where_tls_is_required() {
    let strict = Arc::new(Pop3Settings {
        plaintext_auth: false,
        ..Pop3Settings::default()
    });
    let mut s = Session::new(strict, 1);
    // No TLS on this listener at all: only an implicit-TLS port could take the login.
    let refused = "-ERR [AUTH] logins need TLS here: connect to the POP3S port\r\n";
    assert_eq!(say(&mut s, "USER alice\r\n"), refused);
    assert_eq!(say(&mut s, "AUTH PLAIN\r\n"), refused);
}

#[test]
fn every_split_of_a_pipelined_batch_gives_the_same_replies() {
    let batch = "STAT\r\nLIST\nUIDL 2\r\nDELE 1\r\nRSET\r\nNOOP\r\nXYZ\r\nLIST 1\r\n";
    let whole = say(&mut logged_in(), batch);
    for split in 0..batch.len() {
        let mut s = logged_in();
        let mut out = say(&mut s, &batch[..split]);
        out.push_str(&say(&mut s, &batch[split..]));
        assert_eq!(out, whole, "split at {split}");
    }
}

#[test]
fn a_pipelined_batch_of_listings_is_answered_in_bounded_parts() {
    let mut session = Session::new(settings(false), 7);
    say(&mut session, "USER alice\r\n");
    feed(&mut session, "PASS secret\r\n");
    let many: Vec<MailboxMessage> = (0..3000)
        .map(|i| MailboxMessage {
            uid: format!("1700000000.M{i}P1Q{i}.host"),
            size: 1000,
        })
        .collect();
    session.logged_in(Ok(many), &mut Vec::new());
    let pipeline = "UIDL\r\n".repeat(100);
    let (out, outcome, rest) = feed(&mut session, &pipeline);
    assert_eq!(outcome, Outcome::Continue);
    // One listing is about 100 KB: the session stops after the one that passes the batch
    // size, and leaves the rest of the pipeline for after the write.
    assert!(out.len() >= mailroom_pop3::session::REPLY_BATCH);
    assert!(
        out.len() < 3 * mailroom_pop3::session::REPLY_BATCH,
        "{}",
        out.len()
    );
    assert!(!rest.is_empty() && rest.len() % 6 == 0);
}
