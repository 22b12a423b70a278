//! SMTP AUTH session tests (RFC 4954): PLAIN and LOGIN, bad input, policy (what is offered
//! when, relaying, verifyIdentity, submission), the `Received:` protocol and the envelope
//! attribute. Every case is replayed whole, split at every byte boundary and byte by byte.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use mailroom_mailet::{AttributeValue, Envelope, MailAddress};
use mailroom_net::tls::TlsInfo;
use mailroom_smtp::{
    AuthPolicy, AuthVerdict, Authenticator, DataStart, Outcome, SenderVerdict, Session,
    SmtpSettings, ATTR_AUTH_USER,
};

/// Knows `alice` (password `secret`, canonical spelling `alice`), who owns `sales@` as an
/// alias; `broken` makes the store fail. Records every password check.
#[derive(Default)]
struct Users {
    checks: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl Authenticator for Users {
    async fn authenticate(&self, user: &str, password: &str) -> AuthVerdict {
        self.checks
            .lock()
            .unwrap()
            .push((user.to_string(), password.to_string()));
        match (user.to_ascii_lowercase().as_str(), password) {
            ("alice", "secret") => AuthVerdict::Accepted("alice".into()),
            ("broken", _) => AuthVerdict::Unavailable,
            _ => AuthVerdict::Rejected,
        }
    }

    async fn may_send_as(&self, user: &str, sender: &MailAddress) -> SenderVerdict {
        match (user, sender.local_part()) {
            ("alice", "sales") => SenderVerdict::Own,
            (_, "flaky") => SenderVerdict::Unavailable,
            _ => SenderVerdict::NotOwn,
        }
    }
}

#[derive(Debug, PartialEq)]
struct Transcript {
    out: String,
    envelopes: Vec<Envelope>,
    bodies: Vec<String>,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Plays the driver over `chunks`, answering every outcome.
fn drive(settings: &Arc<SmtpSettings>, session: Session, chunks: &[&[u8]]) -> Transcript {
    let mut session = session;
    let (mut out, mut body) = (Vec::new(), Vec::new());
    let (mut envelopes, mut bodies) = (Vec::new(), Vec::new());
    let mut current: Option<Vec<u8>> = None;
    let authenticator = settings.authenticator.clone();
    session.greet(&mut out);
    'chunks: for chunk in chunks {
        let mut input = *chunk;
        loop {
            let (used, outcome) = session.ingest(input, &mut out, &mut body);
            input = &input[used..];
            if let Some(message) = current.as_mut() {
                message.append(&mut body);
            }
            match outcome {
                Outcome::Continue => break,
                Outcome::OpenMessage => {
                    let start = DataStart {
                        id: format!("m{}", envelopes.len() + 1),
                        date: "Mon, 23 Nov 2026 09:07:51 +0000".into(),
                    };
                    session.begin_data(Ok::<_, ()>(start), &mut out, &mut body);
                    current = Some(std::mem::take(&mut body));
                }
                Outcome::Commit(mut envelope) => {
                    envelope.last_updated = 0;
                    envelopes.push(*envelope);
                    let message = current.take().unwrap();
                    bodies.push(String::from_utf8_lossy(&message).into_owned());
                    session.committed(Ok::<(), ()>(()), &mut out);
                }
                Outcome::CheckRecipient(_) => panic!("recipients are not checked here"),
                Outcome::StartTls => panic!("no listener here has STARTTLS (see starttls.rs)"),
                Outcome::Authenticate(credentials) => {
                    let verdict = block_on(
                        authenticator
                            .as_ref()
                            .unwrap()
                            .authenticate(&credentials.user, &credentials.password),
                    );
                    session.authenticated(verdict, &mut out);
                }
                Outcome::CheckRoom(_) => session.room_checked(Ok::<(), ()>(()), &mut out),
                Outcome::CheckSender { user, sender } => {
                    let verdict =
                        block_on(authenticator.as_ref().unwrap().may_send_as(&user, &sender));
                    session.sender_checked(verdict, &mut out);
                }
                Outcome::Discard => current = None,
                Outcome::Close => break 'chunks,
            }
        }
    }
    Transcript {
        out: String::from_utf8_lossy(&out).into_owned(),
        envelopes,
        bodies,
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

/// A fresh session: over TLS or not.
fn session(settings: &Arc<SmtpSettings>, peer: IpAddr, over_tls: bool) -> Session {
    let session = Session::new(settings.clone(), peer);
    if over_tls {
        session.with_tls(tls())
    } else {
        session
    }
}

/// Runs `input` whole, split at every boundary and byte by byte; all must agree.
fn replay(settings: &SmtpSettings, peer: IpAddr, over_tls: bool, input: &str) -> Transcript {
    let settings = Arc::new(settings.clone());
    let input = input.as_bytes();
    let whole = drive(&settings, session(&settings, peer, over_tls), &[input]);
    for i in 1..input.len() {
        let split = drive(
            &settings,
            session(&settings, peer, over_tls),
            &[&input[..i], &input[i..]],
        );
        assert_eq!(split, whole, "split at {i} differs");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let one_by_one = drive(&settings, session(&settings, peer, over_tls), &bytes);
    assert_eq!(one_by_one, whole, "byte by byte differs");
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
                Some(w) if w.split('.').count() == 3 && w.as_bytes()[1] == b'.' => {
                    format!("{code} {w}")
                }
                _ => code,
            }
        })
        .collect()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn remote() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn settings(auth: AuthPolicy) -> SmtpSettings {
    SmtpSettings {
        hello_name: "mx.example.org".into(),
        is_local_domain: Arc::new(|d| d == "example.org"),
        auth,
        authenticator: Some(Arc::new(Users::default())),
        ..SmtpSettings::default()
    }
}

/// AUTH over TLS from a remote client, as `<authRequired>true`.
fn run(input: &str) -> Transcript {
    replay(&settings(AuthPolicy::Required), remote(), true, input)
}

const EHLO: &str = "EHLO client.example\r\n";

#[test]
fn plain_with_and_without_initial_response() {
    let plain = b64("\0alice\0secret");
    let t = run(&format!("{EHLO}AUTH PLAIN {plain}\r\nQUIT\r\n"));
    assert_eq!(codes(&t.out)[2..], ["235 2.7.0", "221 2.0.0"], "{}", t.out);
    let t = run(&format!("{EHLO}AUTH plain\r\n{plain}\r\nQUIT\r\n"));
    assert_eq!(codes(&t.out)[2..], ["334", "235 2.7.0", "221 2.0.0"]);
    assert!(t.out.contains("\r\n334 \r\n"), "{}", t.out);
    // An authorization identity equal to the login name is accepted, in any case.
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {}\r\n",
        b64("Alice\0alice\0secret")
    ));
    assert_eq!(codes(&t.out)[2..], ["235 2.7.0"]);
}

#[test]
fn login_with_and_without_initial_response() {
    let t = run(&format!(
        "{EHLO}AUTH LOGIN\r\n{}\r\n{}\r\nQUIT\r\n",
        b64("alice"),
        b64("secret")
    ));
    assert_eq!(
        codes(&t.out)[2..],
        ["334", "334", "235 2.7.0", "221 2.0.0"],
        "{}",
        t.out
    );
    assert!(t.out.contains("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"));
    let t = run(&format!(
        "{EHLO}AUTH LOGIN {}\r\n{}\r\n",
        b64("alice"),
        b64("secret")
    ));
    assert_eq!(codes(&t.out)[2..], ["334", "235 2.7.0"]);
}

#[test]
fn wrong_credentials_and_store_failures() {
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {}\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\n",
        b64("\0alice\0wrong"),
        b64("\0broken\0x"),
        b64("\0alice\0secret"),
    ));
    assert_eq!(
        codes(&t.out)[2..],
        ["535 5.7.8", "454 4.7.0", "235 2.7.0"],
        "{}",
        t.out
    );
}

#[test]
fn the_third_failed_auth_closes_the_connection() {
    let wrong = b64("\0alice\0wrong");
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {wrong}\r\nAUTH PLAIN {wrong}\r\nAUTH PLAIN {wrong}\r\nAUTH PLAIN {}\r\n",
        b64("\0alice\0secret"),
    ));
    assert_eq!(
        codes(&t.out)[2..],
        ["535 5.7.8", "535 5.7.8", "535 5.7.8", "421 4.7.0"],
        "{}",
        t.out
    );
}

#[test]
fn bad_input_ends_the_exchange_with_501() {
    let t = run(&format!(
        "{EHLO}AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!notbase64\r\nAUTH PLAIN\r\n@@@\r\n\
         AUTH PLAIN =\r\nAUTH PLAIN {}\r\nAUTH LOGIN =\r\nAUTH CRAM-MD5\r\nAUTH\r\nNOOP\r\n",
        b64("no separators"),
    ));
    assert_eq!(
        codes(&t.out)[2..],
        [
            "334",
            "501 5.7.0", // cancelled
            "334",
            "501 5.7.0",
            "501 5.5.2", // bad base64 in the initial response
            "334",
            "501 5.5.2", // bad base64 in a response line
            "501 5.5.2", // `=`: an empty PLAIN message
            "501 5.5.2", // no NULs
            "501 5.5.2", // empty LOGIN name
            "504 5.5.4",
            "501 5.5.4",
            "250 2.0.0"
        ],
        "{}",
        t.out
    );
    assert!(t.out.contains("501 5.5.2 Invalid base64 data\r\n"));
}

#[test]
fn another_authorization_identity_is_refused_without_a_password_check() {
    let users = Arc::new(Users::default());
    let s = SmtpSettings {
        authenticator: Some(users.clone()),
        ..settings(AuthPolicy::Required)
    };
    let t = drive(
        &Arc::new(s.clone()),
        session(&Arc::new(s), remote(), true),
        &[format!("{EHLO}AUTH PLAIN {}\r\n", b64("bob\0alice\0secret")).as_bytes()],
    );
    assert_eq!(codes(&t.out)[2..], ["535 5.7.8"]);
    assert!(t.out.contains("Cannot authorize as another user"));
    assert!(users.checks.lock().unwrap().is_empty());
}

#[test]
fn sequence_auth_twice_in_a_transaction_and_before_ehlo() {
    let plain = b64("\0alice\0secret");
    let t = run(&format!(
        "AUTH PLAIN {plain}\r\nHELO c\r\nAUTH PLAIN {plain}\r\n{EHLO}MAIL FROM:<x@client.example>\r\n\
         AUTH PLAIN {plain}\r\nRSET\r\nAUTH PLAIN {plain}\r\nAUTH PLAIN {plain}\r\n"
    ));
    assert_eq!(
        codes(&t.out)[1..],
        [
            "503 5.5.1",
            "250",
            "503 5.5.1",
            "250",
            "250 2.1.0",
            "503 5.5.1",
            "250 2.0.0",
            "235 2.7.0",
            "503 5.5.1"
        ],
        "{}",
        t.out
    );
    assert!(t
        .out
        .contains("AUTH not permitted during a mail transaction"));
    assert!(t.out.contains("already authenticated"));
}

#[test]
fn auth_lines_may_reach_12288_octets_other_commands_4096() {
    // A 12000-octet initial response: allowed length, refused credentials.
    let long = b64(&format!("\0alice\0{}", "x".repeat(8900)));
    assert!(long.len() > 11_000 && long.len() < 12_270);
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {long}\r\nNOOP {}\r\nNOOP\r\n",
        "y".repeat(5000)
    ));
    assert_eq!(
        codes(&t.out)[2..],
        ["535 5.7.8", "500 5.5.2", "250 2.0.0"],
        "{}",
        t.out
    );
    // 100 KiB: the line limit, then a clean next command.
    let huge = "A".repeat(100 * 1024);
    let s = Arc::new(settings(AuthPolicy::Required));
    let input = format!("{EHLO}AUTH PLAIN {huge}\r\nAUTH PLAIN\r\n{huge}\r\nNOOP\r\n");
    let t = drive(&s, session(&s, remote(), true), &[input.as_bytes()]);
    assert_eq!(
        codes(&t.out)[2..],
        ["500 5.5.2", "334", "500 5.5.2", "250 2.0.0"],
        "{}",
        t.out
    );
}

#[test]
fn pipelined_commands_wait_for_the_verdict() {
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<x@remote.example>\r\n\
         DATA\r\nhi\r\n.\r\nQUIT\r\n",
        b64("\0alice\0secret")
    ));
    assert_eq!(
        codes(&t.out)[2..],
        [
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ],
        "{}",
        t.out
    );
    let envelope = &t.envelopes[0];
    assert_eq!(
        envelope.attributes.get(ATTR_AUTH_USER),
        Some(&AttributeValue::String("alice".into()))
    );
    assert!(
        t.bodies[0].contains("with ESMTPSA id m1"),
        "{}",
        t.bodies[0]
    );
}

#[test]
fn what_is_offered_and_where() {
    let ehlo_of = |s: &SmtpSettings, peer, over_tls| replay(s, peer, over_tls, EHLO).out;
    let required = settings(AuthPolicy::Required);
    // Over TLS, to a client that may not relay by address.
    assert!(ehlo_of(&required, remote(), true).contains("250 AUTH PLAIN LOGIN\r\n"));
    // `true` as James: not to clients in authorizedAddresses (loopback here)...
    assert!(!ehlo_of(&required, loopback(), true).contains("AUTH"));
    // ...but `announce` tells everybody.
    let announce = settings(AuthPolicy::Announce);
    assert!(ehlo_of(&announce, loopback(), true).contains("AUTH PLAIN LOGIN"));
    // Never before TLS while TLS is required for it; AUTH there is 538.
    assert!(!ehlo_of(&announce, remote(), false).contains("AUTH"));
    let t = replay(&announce, remote(), false, &format!("{EHLO}AUTH PLAIN\r\n"));
    assert!(
        t.out
            .ends_with("538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        "{}",
        t.out
    );
    let plaintext = SmtpSettings {
        require_tls_for_auth: false,
        ..settings(AuthPolicy::Announce)
    };
    assert!(ehlo_of(&plaintext, remote(), false).contains("AUTH PLAIN LOGIN"));
    // `false`: neither offered nor accepted.
    let off = settings(AuthPolicy::Off);
    assert!(!ehlo_of(&off, remote(), true).contains("AUTH"));
    let t = replay(&off, remote(), true, &format!("{EHLO}AUTH PLAIN\r\n"));
    assert_eq!(codes(&t.out)[2..], ["502 5.5.1"]);
}

#[test]
fn relaying_needs_auth_where_it_is_offered() {
    let relay = "MAIL FROM:<a@client.example>\r\nRCPT TO:<x@remote.example>\r\n\
                 RCPT TO:<b@example.org>\r\n";
    let t = run(&format!("{EHLO}{relay}"));
    assert_eq!(codes(&t.out)[2..], ["250 2.1.0", "530 5.7.0", "250 2.1.5"]);
    assert!(t.out.contains("530 5.7.0 Authentication required\r\n"));
    // Without AUTH on the listener: relaying denied, as before.
    let t = replay(
        &settings(AuthPolicy::Off),
        remote(),
        true,
        &format!("{EHLO}{relay}"),
    );
    assert_eq!(codes(&t.out)[2..], ["250 2.1.0", "550 5.7.1", "250 2.1.5"]);
    // Authenticated: may relay (with its own local address as sender).
    let t = run(&format!(
        "{EHLO}AUTH PLAIN {}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<x@remote.example>\r\n",
        b64("\0alice\0secret")
    ));
    assert_eq!(codes(&t.out)[2..], ["235 2.7.0", "250 2.1.0", "250 2.1.5"]);
}

#[test]
fn verify_identity() {
    let auth = format!("{EHLO}AUTH PLAIN {}\r\n", b64("\0alice\0secret"));
    let mails = "MAIL FROM:<bob@example.org>\r\nMAIL FROM:<flaky@example.org>\r\n\
                 MAIL FROM:<sales@example.org>\r\nRSET\r\nMAIL FROM:<ALICE@example.org>\r\nRSET\r\n\
                 MAIL FROM:<>\r\nRSET\r\nMAIL FROM:<alice@elsewhere.example>\r\n";
    let t = run(&format!("{auth}{mails}"));
    assert_eq!(
        codes(&t.out)[3..],
        [
            "553 5.7.1",
            "451 4.3.0",
            "250 2.1.0",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.0.0",
            "250 2.1.0"
        ],
        "{}",
        t.out
    );
    assert!(t
        .out
        .contains("553 5.7.1 <bob@example.org>: sender address not owned by user alice\r\n"));
    // Off: anything goes.
    let lax = SmtpSettings {
        verify_identity: false,
        ..settings(AuthPolicy::Required)
    };
    let t = replay(
        &lax,
        remote(),
        true,
        &format!("{auth}MAIL FROM:<bob@example.org>\r\n"),
    );
    assert_eq!(codes(&t.out)[3..], ["250 2.1.0"]);
    // Unauthenticated clients are not checked (inbound mail).
    let t = run(&format!("{EHLO}MAIL FROM:<bob@example.org>\r\n"));
    assert_eq!(codes(&t.out)[2..], ["250 2.1.0"]);
}

#[test]
fn submission_needs_auth_before_mail_even_from_loopback() {
    let submission = SmtpSettings {
        submission: true,
        ..settings(AuthPolicy::Required)
    };
    let t = replay(
        &submission,
        loopback(),
        true,
        &format!(
            "{EHLO}MAIL FROM:<alice@example.org>\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@example.org>\r\n",
            b64("\0alice\0secret")
        ),
    );
    assert_eq!(
        codes(&t.out)[2..],
        ["530 5.7.0", "235 2.7.0", "250 2.1.0"],
        "{}",
        t.out
    );
    // And submission advertises AUTH even to loopback clients.
    assert!(t.out.contains("AUTH PLAIN LOGIN"), "{}", t.out);
}

#[test]
fn received_protocol() {
    let data = "MAIL FROM:<alice@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhi\r\n.\r\n";
    let auth = format!("AUTH PLAIN {}\r\n", b64("\0alice\0secret"));
    let plaintext = SmtpSettings {
        require_tls_for_auth: false,
        ..settings(AuthPolicy::Announce)
    };
    let with = |over_tls, input: String| {
        let t = replay(&plaintext, remote(), over_tls, &input);
        let body = t.bodies[0].clone();
        let line = body
            .lines()
            .find(|l| l.trim_start().starts_with("by "))
            .unwrap()
            .to_string();
        (line, t.envelopes[0].attributes.get(ATTR_AUTH_USER).cloned())
    };
    let (line, user) = with(false, format!("{EHLO}{auth}{data}"));
    assert!(line.contains("with ESMTPA id"), "{line}");
    assert_eq!(user, Some(AttributeValue::String("alice".into())));
    let (line, user) = with(false, format!("{EHLO}{data}"));
    assert!(line.contains("with ESMTP id"), "{line}");
    assert_eq!(user, None);
    let (line, _) = with(true, format!("{EHLO}{data}"));
    assert!(line.contains("with ESMTPS id"), "{line}");
    let (line, _) = with(true, format!("{EHLO}{auth}{data}"));
    assert!(line.contains("with ESMTPSA id"), "{line}");
}

#[test]
fn credentials_never_show_in_debug_output() {
    let s = Arc::new(settings(AuthPolicy::Required));
    let mut session = session(&s, remote(), true);
    let (mut out, mut body) = (Vec::new(), Vec::new());
    let input = format!("{EHLO}AUTH PLAIN {}\r\n", b64("\0alice\0hunter2"));
    let (_, outcome) = session.ingest(input.as_bytes(), &mut out, &mut body);
    let shown = format!("{outcome:?} {session:?}");
    assert!(matches!(outcome, Outcome::Authenticate(_)));
    assert!(
        shown.contains("alice") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn random_input_in_sasl_mode_never_panics() {
    let s = Arc::new(settings(AuthPolicy::Announce));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut input = format!("{EHLO}AUTH LOGIN\r\n").into_bytes();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            input.push(b"AB=*\r\n\0 +/:"[(seed % 11) as usize]);
        }
        drive(&s, session(&s, remote(), true), &[&input]);
    }
}
