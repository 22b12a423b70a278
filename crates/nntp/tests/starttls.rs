//! STARTTLS (RFC 4642) and `<requireTLSForAuth>` in the session: when STARTTLS is offered and
//! refused, what CAPABILITIES lists before and after it, input pipelined after STARTTLS left
//! for the driver to discard, AUTHINFO refused in plain text (`483`) and accepted over TLS.
//! The driver's part (the handshake, the discarded plaintext, NNTPS) is tested end to end in
//! `tests/e2e/nntp_tls.rs` against the real binary.

use std::sync::Arc;

use mailroom_net::tls::{ListenerTls, ServerTls};
use mailroom_nntp::{NntpSettings, Outcome, Session};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

fn server_tls() -> ServerTls {
    let certified = rcgen::generate_simple_self_signed(vec!["news.example.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    ServerTls::new(Arc::new(config))
}

/// A listener with STARTTLS (or implicit TLS, or none), AUTHINFO in plain text as `plaintext`.
fn settings(tls: Option<bool>, plaintext: bool) -> Arc<NntpSettings> {
    Arc::new(NntpSettings {
        hello_name: "news.example.test".into(),
        plaintext_auth: plaintext,
        tls: tls.map(|implicit| ListenerTls {
            config: server_tls(),
            implicit,
            starttls: !implicit,
        }),
        ..NntpSettings::default()
    })
}

/// Feeds `input` once; answers a login (alice/secret is right) as the driver would.
fn feed(session: &mut Session, input: &str) -> (String, Outcome, usize) {
    let mut out = Vec::new();
    let (used, mut outcome) = session.ingest(input.as_bytes(), &mut out);
    if let Outcome::Login { user, password } = outcome {
        let right = user == "alice" && password.expose() == "secret";
        outcome = session.logged_in(right.then(|| "alice".to_string()), &mut out);
    }
    (String::from_utf8(out).unwrap(), outcome, used)
}

/// Feeds whole commands one at a time; returns every reply.
fn run(session: &mut Session, commands: &[&str]) -> String {
    let mut all = String::new();
    for command in commands {
        let (out, outcome, _) = feed(session, &format!("{command}\r\n"));
        assert_eq!(outcome, Outcome::Continue, "{command}: {out}");
        all += &out;
    }
    all
}

fn capabilities(session: &mut Session) -> Vec<String> {
    let out = run(session, &["CAPABILITIES"]);
    assert!(out.starts_with("101 "), "{out}");
    out.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn plain_connection_offers_starttls_and_refuses_authinfo() {
    let mut session = Session::new(settings(Some(false), false), 1, false);
    let caps = capabilities(&mut session);
    assert!(caps.contains(&"STARTTLS".to_string()), "{caps:?}");
    assert!(!caps.iter().any(|c| c.starts_with("AUTHINFO")), "{caps:?}");
    let out = run(
        &mut session,
        &["AUTHINFO USER alice", "AUTHINFO PASS secret"],
    );
    assert_eq!(
        out,
        "483 Encryption or stronger authentication required\r\n\
         483 Encryption or stronger authentication required\r\n"
    );
    // STARTTLS needs no MODE READER first, and works after other commands too.
    let out = run(&mut session, &["MODE READER", "LIST OVERVIEW.FMT", "DATE"]);
    assert!(out.starts_with("200 reader mode"), "{out}");
    let (out, outcome, used) = feed(&mut session, "STARTTLS\r\n");
    assert_eq!(
        (out.as_str(), outcome, used),
        (
            "382 Continue with TLS negotiation\r\n",
            Outcome::StartTls,
            10
        )
    );
}

#[test]
fn input_pipelined_after_starttls_is_left_unconsumed() {
    let mut session = Session::new(settings(Some(false), false), 1, false);
    let input = "STARTTLS\r\nAUTHINFO USER alice\r\nAUTHINFO PASS secret\r\nQUIT\r\n";
    let (out, outcome, used) = feed(&mut session, input);
    // Only the command itself is consumed: the rest is the driver's to discard, never run.
    assert_eq!(
        (out.as_str(), outcome, used),
        (
            "382 Continue with TLS negotiation\r\n",
            Outcome::StartTls,
            10
        )
    );
    let (out, outcome, used) = feed(&mut session, &input[used..]);
    assert_eq!((out.as_str(), outcome, used), ("", Outcome::StartTls, 0));
}

#[test]
fn over_tls_authinfo_is_offered_and_starttls_refused() {
    for implicit in [false, true] {
        let mut session = Session::new(settings(Some(implicit), false), 2, true);
        let caps = capabilities(&mut session);
        assert!(!caps.contains(&"STARTTLS".to_string()), "{caps:?}");
        assert!(caps.contains(&"AUTHINFO USER".to_string()), "{caps:?}");
        let out = run(
            &mut session,
            &["STARTTLS", "AUTHINFO USER alice", "AUTHINFO PASS secret"],
        );
        assert_eq!(
            out,
            "502 already using TLS\r\n381 password required\r\n281 authentication accepted\r\n"
        );
        let caps = capabilities(&mut session);
        assert!(!caps.iter().any(|c| c.starts_with("AUTHINFO")), "{caps:?}");
    }
}

#[test]
fn starttls_is_refused_after_authentication() {
    // requireTLSForAuth off: a plaintext login, after which STARTTLS is neither listed nor
    // allowed (RFC 4642 §2.2.2).
    let mut session = Session::new(settings(Some(false), true), 3, false);
    let caps = capabilities(&mut session);
    assert!(caps.contains(&"STARTTLS".to_string()), "{caps:?}");
    assert!(caps.contains(&"AUTHINFO USER".to_string()), "{caps:?}");
    let out = run(
        &mut session,
        &["AUTHINFO USER alice", "AUTHINFO PASS secret", "STARTTLS"],
    );
    assert_eq!(
        out,
        "381 password required\r\n281 authentication accepted\r\n\
         502 STARTTLS is not allowed after authentication\r\n"
    );
    let caps = capabilities(&mut session);
    assert!(!caps.contains(&"STARTTLS".to_string()), "{caps:?}");
}

#[test]
fn without_starttls_on_the_listener_it_is_neither_listed_nor_started() {
    // No TLS at all, or an implicit-TLS listener (whose sessions are encrypted anyway).
    for tls in [None, Some(true)] {
        let mut session = Session::new(settings(tls, true), 4, false);
        let caps = capabilities(&mut session);
        assert!(!caps.contains(&"STARTTLS".to_string()), "{caps:?}");
        let out = run(&mut session, &["STARTTLS", "DATE"]);
        assert!(
            out.starts_with("580 TLS is not available on this server\r\n111 "),
            "{out}"
        );
    }
    // Strict, with no TLS: nobody can log in, and CAPABILITIES does not pretend otherwise.
    let mut session = Session::new(settings(None, false), 5, false);
    let caps = capabilities(&mut session);
    assert!(!caps.iter().any(|c| c.starts_with("AUTHINFO")), "{caps:?}");
    let out = run(&mut session, &["AUTHINFO USER alice"]);
    assert_eq!(
        out,
        "483 Encryption or stronger authentication required\r\n"
    );
}
