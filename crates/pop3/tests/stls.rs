//! STLS (RFC 2595) and `<requireTLSForAuth>` in the session: when STLS is offered, what CAPA
//! lists before and after it, logins refused in plain text and accepted over TLS. The driver's
//! part (the handshake, plaintext discarded after the command) is tested end to end in
//! `tests/e2e/tls.rs` against the real binary.

use std::sync::Arc;

use mailroom_net::tls::{ListenerTls, ServerTls};
use mailroom_pop3::{Credential, Login, Outcome, Pop3Settings, Session};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

fn server_tls() -> ServerTls {
    let certified = rcgen::generate_simple_self_signed(vec!["pop.example.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    ServerTls::new(Arc::new(config))
}

/// A listener with STLS (or implicit TLS) that requires TLS for logins, APOP on.
fn strict(implicit: bool) -> Arc<Pop3Settings> {
    Arc::new(Pop3Settings {
        hello_name: "pop.example.test".into(),
        enable_apop: true,
        plaintext_auth: false,
        tls: Some(ListenerTls {
            config: server_tls(),
            implicit,
            starttls: !implicit,
        }),
        ..Pop3Settings::default()
    })
}

fn feed(session: &mut Session, input: &str) -> (String, Outcome, usize) {
    let mut out = Vec::new();
    let (used, outcome) = session.ingest(input.as_bytes(), &mut out);
    (String::from_utf8(out).unwrap(), outcome, used)
}

fn capa(session: &mut Session) -> Vec<String> {
    let (out, outcome, _) = feed(session, "CAPA\r\n");
    assert_eq!(outcome, Outcome::Continue);
    out.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn plain_connection_offers_only_stls_and_refuses_logins() {
    let mut session = Session::new(strict(false), 9);
    let mut banner = Vec::new();
    session.greet(&mut banner);
    // The APOP timestamp stays in the banner: APOP works after STLS, with no new banner.
    assert!(String::from_utf8(banner)
        .unwrap()
        .contains("@pop.example.test>"));
    let caps = capa(&mut session);
    assert!(caps.contains(&"STLS".to_string()), "{caps:?}");
    assert!(!caps.contains(&"USER".to_string()), "{caps:?}");
    assert!(!caps.contains(&"SASL PLAIN".to_string()), "{caps:?}");
    let refused = "-ERR [AUTH] logins need TLS here: send STLS first\r\n";
    for command in [
        "USER alice",
        "PASS secret",
        "APOP alice 0123456789abcdef0123456789abcdef",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        "AUTH PLAIN",
    ] {
        let (out, outcome, _) = feed(&mut session, &format!("{command}\r\n"));
        assert_eq!(
            (out.as_str(), outcome),
            (refused, Outcome::Continue),
            "{command}"
        );
    }
    // Listing mechanisms is harmless.
    let (out, _, _) = feed(&mut session, "AUTH\r\n");
    assert!(out.starts_with("+OK"), "{out}");

    // STLS, with a command pipelined after it: not consumed (the driver discards it).
    let (out, outcome, used) = feed(&mut session, "STLS\r\nUSER evil\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation\r\n");
    assert_eq!(outcome, Outcome::StartTls);
    assert_eq!(used, "STLS\r\n".len());
    let (out, outcome, used) = feed(&mut session, "NOOP\r\n");
    assert_eq!((out.as_str(), outcome, used), ("", Outcome::StartTls, 0));
}

#[test]
fn after_stls_logins_work_and_stls_is_gone() {
    let mut session = Session::new(strict(false), 9).with_tls();
    let caps = capa(&mut session);
    assert!(!caps.contains(&"STLS".to_string()), "{caps:?}");
    assert!(caps.contains(&"USER".to_string()), "{caps:?}");
    assert!(caps.contains(&"SASL PLAIN".to_string()), "{caps:?}");
    let (out, _, _) = feed(&mut session, "STLS\r\n");
    assert_eq!(out, "-ERR TLS is already active\r\n");
    let (out, _, _) = feed(&mut session, "USER alice\r\n");
    assert_eq!(out, "+OK send PASS\r\n");
    let (_, outcome, _) = feed(&mut session, "PASS a secret\r\n");
    assert_eq!(
        outcome,
        Outcome::Login(Login {
            user: "alice".into(),
            credential: Credential::Password("a secret".into()),
        })
    );
}

#[test]
fn implicit_tls_and_plain_listeners() {
    // POP3S: never STLS, logins allowed.
    let mut session = Session::new(strict(true), 9).with_tls();
    let caps = capa(&mut session);
    assert!(!caps.contains(&"STLS".to_string()) && caps.contains(&"USER".to_string()));
    // requireTLSForAuth off: plaintext logins, and STLS still offered.
    let relaxed = Arc::new(Pop3Settings {
        plaintext_auth: true,
        ..(*strict(false)).clone()
    });
    let mut session = Session::new(relaxed, 9);
    let caps = capa(&mut session);
    assert!(caps.contains(&"STLS".to_string()) && caps.contains(&"USER".to_string()));
    let (out, _, _) = feed(&mut session, "USER alice\r\n");
    assert_eq!(out, "+OK send PASS\r\n");
    // After login STLS is no longer possible (RFC 2595: AUTHORIZATION state only).
    let (_, outcome, _) = feed(&mut session, "PASS x\r\n");
    assert!(matches!(outcome, Outcome::Login(_)));
    session.logged_in(Ok(Vec::new()), &mut Vec::new());
    let (out, _, _) = feed(&mut session, "STLS\r\n");
    assert_eq!(out, "-ERR already logged in\r\n");
    assert!(!capa(&mut session).contains(&"STLS".to_string()));
}
