//! STARTTLS in the session (RFC 3207): when it is offered, what it answers in each state, the
//! fresh pre-EHLO session after the handshake, and what `Received:` records over TLS. The
//! driver's part (the handshake, plaintext discarded after the command) is tested end to end
//! in `tests/e2e/tls.rs` against the real binary.

use std::net::IpAddr;
use std::sync::Arc;

use mailroom_net::tls::{ListenerTls, ServerTls, TlsInfo};
use mailroom_smtp::{DataStart, Outcome, Session, SmtpSettings};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

fn server_tls() -> ServerTls {
    let certified = rcgen::generate_simple_self_signed(vec!["mx.example.org".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    ServerTls::new(Arc::new(config))
}

fn settings(implicit: bool, starttls: bool) -> Arc<SmtpSettings> {
    Arc::new(SmtpSettings {
        hello_name: "mx.example.org".into(),
        is_local_domain: Arc::new(|d| d == "example.org"),
        tls: Some(ListenerTls {
            config: server_tls(),
            implicit,
            starttls,
        }),
        ..SmtpSettings::default()
    })
}

fn info() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

fn peer() -> IpAddr {
    "192.0.2.7".parse().unwrap()
}

/// Feeds `input` and answers the spool outcomes; stops at STARTTLS, returning the replies,
/// the octets consumed and whether STARTTLS was accepted. Message bodies go to `bodies`.
fn feed(session: &mut Session, input: &str, bodies: &mut Vec<String>) -> (String, usize, bool) {
    let (mut out, mut body) = (Vec::new(), Vec::new());
    let mut input = input.as_bytes();
    let mut consumed = 0;
    loop {
        let (used, outcome) = session.ingest(input, &mut out, &mut body);
        consumed += used;
        input = &input[used..];
        match outcome {
            Outcome::Continue | Outcome::Close => break,
            Outcome::StartTls => {
                return (String::from_utf8(out).unwrap(), consumed, true);
            }
            Outcome::OpenMessage => {
                let start = DataStart {
                    id: "m1".into(),
                    date: "Mon, 23 Nov 2026 09:07:51 +0000".into(),
                };
                session.begin_data(Ok::<_, ()>(start), &mut out, &mut body);
            }
            Outcome::Commit(_) => {
                bodies.push(String::from_utf8(std::mem::take(&mut body)).unwrap());
                session.committed(Ok::<(), ()>(()), &mut out);
            }
            Outcome::CheckRecipient(_)
            | Outcome::Discard
            | Outcome::Authenticate(_)
            | Outcome::CheckRoom(_)
            | Outcome::CheckSender { .. } => unreachable!(),
        }
    }
    (String::from_utf8(out).unwrap(), consumed, false)
}

#[test]
fn starttls_is_offered_accepted_and_the_session_starts_over_over_tls() {
    let settings = settings(false, true);
    let mut session = Session::new(settings.clone(), peer());
    let mut bodies = Vec::new();
    let (out, _, started) = feed(&mut session, "EHLO client.example\r\n", &mut bodies);
    assert!(!started);
    assert!(
        out.contains("250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"),
        "{out}"
    );

    // The command and what a client (or an attacker in the path) pipelined after it.
    let input = "STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n";
    let (out, consumed, started) = feed(&mut session, input, &mut bodies);
    assert!(started);
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(
        consumed,
        "STARTTLS\r\n".len(),
        "the rest is left to be discarded"
    );
    // The session waits for the driver: nothing more is consumed.
    let (out, consumed, started) = feed(&mut session, "NOOP\r\n", &mut bodies);
    assert_eq!((out.as_str(), consumed, started), ("", 0, true));

    // The driver's fresh session over TLS: pre-EHLO, STARTTLS no longer offered.
    let mut session = Session::new(settings, peer()).with_tls(info());
    let (out, _, _) = feed(
        &mut session,
        "MAIL FROM:<a@client.example>\r\n",
        &mut bodies,
    );
    assert!(out.starts_with("503 5.5.1"), "{out}");
    let (out, _, _) = feed(&mut session, "EHLO client.example\r\n", &mut bodies);
    assert!(!out.contains("STARTTLS"), "{out}");
    assert!(out.ends_with("250 ENHANCEDSTATUSCODES\r\n"), "{out}");
    let (out, _, started) = feed(&mut session, "STARTTLS\r\n", &mut bodies);
    assert!(!started);
    assert_eq!(out, "503 5.5.1 Error: TLS is already active\r\n");

    let mail = "MAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
    let (out, _, _) = feed(&mut session, mail, &mut bodies);
    assert!(
        out.ends_with("250 2.0.0 Message accepted for delivery (id m1)\r\n"),
        "{out}"
    );
    assert_eq!(
        bodies[0],
        "Received: from client.example ([192.0.2.7])\r\n\
         \t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\
         \tby mx.example.org (Mailroom) with ESMTPS id m1\r\n\tfor <b@example.org>;\r\n\
         \tMon, 23 Nov 2026 09:07:51 +0000\r\nSubject: x\r\n\r\nhi\r\n"
    );
}

#[test]
fn starttls_refusals() {
    let mut bodies = Vec::new();
    // Not offered: a listener without STARTTLS, or without TLS at all.
    for settings in [settings(false, false), Arc::new(SmtpSettings::default())] {
        let mut session = Session::new(settings, peer());
        let (out, _, started) = feed(&mut session, "EHLO c\r\nSTARTTLS\r\n", &mut bodies);
        assert!(!started);
        assert!(
            !out.contains("250 STARTTLS") && !out.contains("250-STARTTLS"),
            "{out}"
        );
        assert!(
            out.ends_with("502 5.5.1 Error: STARTTLS is not offered here\r\n"),
            "{out}"
        );
    }
    // On an implicit-TLS connection it is never offered, and refused as already active.
    let mut session = Session::new(settings(true, false), peer()).with_tls(info());
    let (out, _, started) = feed(&mut session, "EHLO c\r\nSTARTTLS\r\n", &mut bodies);
    assert!(!started && !out.contains("STARTTLS\r\n"), "{out}");
    assert!(
        out.ends_with("503 5.5.1 Error: TLS is already active\r\n"),
        "{out}"
    );

    let settings = settings(false, true);
    // With a parameter: 501.
    let mut session = Session::new(settings.clone(), peer());
    let (out, _, started) = feed(&mut session, "STARTTLS now\r\n", &mut bodies);
    assert!(!started);
    assert!(out.starts_with("501 5.5.4"), "{out}");
    // Inside a transaction: 503, and the transaction goes on.
    let (out, _, started) = feed(
        &mut session,
        "EHLO c\r\nMAIL FROM:<a@c.example>\r\nSTARTTLS\r\nRCPT TO:<b@example.org>\r\n",
        &mut bodies,
    );
    assert!(!started);
    assert!(
        out.contains("503 5.5.1 Error: STARTTLS is not allowed in a mail transaction\r\n250 2.1.5"),
        "{out}"
    );
    // After RSET it is accepted; without EHLO first too (RFC 3207 does not require it).
    let (_, _, started) = feed(&mut session, "RSET\r\nSTARTTLS\r\n", &mut bodies);
    assert!(started);
    let mut session = Session::new(settings, peer());
    let (_, _, started) = feed(&mut session, "starttls\r\n", &mut bodies);
    assert!(started);
}

#[test]
fn received_protocol_without_tls_and_after_helo() {
    let mut bodies = Vec::new();
    let mail = "MAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\r\nx\r\n.\r\n";
    let mut session = Session::new(settings(false, true), peer());
    feed(&mut session, &format!("EHLO c\r\n{mail}"), &mut bodies);
    let mut session = Session::new(settings(true, false), peer()).with_tls(info());
    feed(&mut session, &format!("HELO c\r\n{mail}"), &mut bodies);
    assert!(
        bodies[0].contains("by mx.example.org (Mailroom) with ESMTP id"),
        "{}",
        bodies[0]
    );
    assert!(!bodies[0].contains("using"), "{}", bodies[0]);
    assert!(bodies[1].contains("(using TLSv1.3"), "{}", bodies[1]);
    assert!(bodies[1].contains("with SMTP id"), "{}", bodies[1]);
}
