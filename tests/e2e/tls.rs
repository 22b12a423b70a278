//! TLS end to end (issue 11): the self-signed certificate made at first start, STARTTLS and
//! STLS, implicit SMTPS and POP3S, `<requireTLSForAuth>`, the CVE-2011-0411 injection,
//! reloads (SIGHUP and the RemoteManager's `reloadtls`), and bad input (plain text to a TLS
//! port, handshake garbage, a stalled handshake). The clients are Python's smtplib, poplib and
//! ssl, and `openssl s_client`; `tls_peers.rs` has the Debian clients (swaks, fetchmail, mpop).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    console, free_port, maildir_messages, python, wait_for, Server, Setup, ADMIN,
};

/// A server with STARTTLS on SMTP and STLS on POP3 (the defaults), `<requireTLSForAuth>` on
/// POP3, an implicit-TLS SMTP block and POP3 block with a 2 s connection timeout (so a
/// stalled handshake is cut off quickly), and `extra` blocks; the user alice.
pub struct TlsServer {
    pub server: Server,
    pub smtps_port: u16,
    pub pop3s_port: u16,
}

impl TlsServer {
    pub fn start(extra: &str) -> TlsServer {
        TlsServer::start_with(extra, "")
    }

    /// Also with these RemoteManager handler options (the console starts when they name an
    /// account).
    pub fn start_with(extra: &str, remote_manager: &str) -> TlsServer {
        let (smtps_port, pop3s_port) = (free_port(), free_port());
        let blocks = format!(
            r#"<smtpserver><port>{smtps_port}</port><bind>127.0.0.1</bind>
                 <tls socketTLS="true"/>
                 <handler><helloName>mail.example.test</helloName>
                   <connectiontimeout>2000</connectiontimeout></handler></smtpserver>
               <pop3server><port>{pop3s_port}</port><bind>127.0.0.1</bind>
                 <useTLS>true</useTLS>
                 <handler><helloName>mail.example.test</helloName>
                   <connectiontimeout>2000</connectiontimeout></handler></pop3server>
               {extra}"#
        );
        let server = Server::start_setup(&Setup {
            pop3_handler: Some("<requireTLSForAuth>true</requireTLSForAuth>"),
            remote_manager_handler: (!remote_manager.is_empty()).then_some(remote_manager),
            extra: &blocks,
            ..Setup::default()
        });
        for port in [smtps_port, pop3s_port] {
            wait_for("the implicit-TLS port", || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        server.add_user("alice", "alice's secret");
        TlsServer {
            server,
            smtps_port,
            pop3s_port,
        }
    }

    /// The generated self-signed certificate, which clients use as their CA file.
    pub fn ca(&self) -> String {
        self.server.path("var/tls/cert.pem").display().to_string()
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM file: `AB:CD:...`.
fn file_fingerprint(pem: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", pem])
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The SHA-256 fingerprint (`AB:CD:...`) of the certificate an implicit-TLS port serves to a
/// new client.
fn served_fingerprint(port: u16) -> String {
    python(
        r#"
import hashlib, socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)) as s:
    digest = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest().upper()
print(":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))
"#,
        &[&port.to_string()],
    )
    .trim()
    .to_string()
}

#[test]
fn a_self_signed_certificate_is_made_at_first_start_and_reused() {
    let mut tls = TlsServer::start("");
    let cert = tls.server.path("var/tls/cert.pem");
    let key = tls.server.path("var/tls/key.pem");
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&key), 0o600);
    let fingerprint = file_fingerprint(&tls.ca());
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    let log = tls.server.log();
    assert!(log.contains("generated a self-signed one"), "{log}");
    assert!(log.contains(&fingerprint), "{log}");
    assert!(!log.contains("readable by"), "{log}");
    // Every listener serves the one pair.
    assert_eq!(served_fingerprint(tls.smtps_port), fingerprint);
    assert_eq!(served_fingerprint(tls.pop3s_port), fingerprint);
    // The names: the servernames and the hello name.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in", &tls.ca()])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&text.stdout);
    for name in ["localhost", "example.test", "mail.example.test"] {
        assert!(names.contains(&format!("DNS:{name}")), "{names}");
    }

    // A second start reuses it.
    let before = std::fs::read(&cert).unwrap();
    tls.server.terminate();
    tls.server.spawn();
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    let log = tls.server.log();
    assert_eq!(
        log.matches("generated a self-signed one").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches(&fingerprint).count(), 3, "{log}");
    assert_eq!(served_fingerprint(tls.smtps_port), fingerprint);
}

/// Python: STARTTLS and SMTP_SSL, verified against the generated certificate, each sending a
/// mail; `Received:` records TLS.
#[test]
fn python_smtplib_starttls_and_smtp_ssl_send_mail() {
    let tls = TlsServer::start("");
    let out = python(
        r#"
import smtplib, ssl, sys
ca, port, smtps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.ehlo("client.example.net")
    assert s.has_extn("starttls"), s.esmtp_features
    s.starttls(context=ctx)
    s.ehlo("client.example.net")
    assert not s.has_extn("starttls"), s.esmtp_features
    s.sendmail("sender@example.net", ["alice@localhost"], "Subject: over starttls\r\n\r\nhello\r\n")
    print(s.sock.version())
with smtplib.SMTP_SSL("localhost", smtps, context=ctx, timeout=20) as s:
    s.ehlo("client.example.net")
    assert not s.has_extn("starttls"), s.esmtp_features
    s.sendmail("sender@example.net", ["alice@localhost"], "Subject: over smtps\r\n\r\nhello\r\n")
"#,
        &[
            &tls.ca(),
            &tls.server.smtp_port.to_string(),
            &tls.smtps_port.to_string(),
        ],
    );
    assert_eq!(out.trim(), "TLSv1.3");
    let inbox = tls.server.path("var/mail/inboxes/alice");
    wait_for("two mails", || maildir_messages(&inbox).len() == 2);
    for mail in maildir_messages(&inbox) {
        let text = String::from_utf8(mail).unwrap();
        assert!(
            text.contains("\n\t(using TLSv1.3 with cipher TLS13_"),
            "{text}"
        );
        assert!(text.contains(" with ESMTPS id "), "{text}");
    }
}

/// Python: poplib is refused in plain text (requireTLSForAuth), logs in after STLS, and over
/// POP3S.
#[test]
fn python_poplib_stls_and_pop3_ssl_with_require_tls_for_auth() {
    let tls = TlsServer::start("");
    tls.server.smtp().send_mail(
        "sender@example.net",
        &["alice@localhost"],
        "Subject: x\n\nbody\n",
    );
    let inbox = tls.server.path("var/mail/inboxes/alice");
    wait_for("the mail", || maildir_messages(&inbox).len() == 1);
    let out = python(
        r#"
import poplib, ssl, sys
ca, port, pop3s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3("localhost", port, timeout=20)
caps = p.capa()
print("before", sorted(caps))
try:
    p.user("alice")
    print("USER accepted in plain text")
except poplib.error_proto as e:
    print("refused", e.args[0].decode())
p.stls(context=ctx)
caps = p.capa()
print("after", sorted(caps))
p.user("alice")
p.pass_("alice's secret")
print("stat", p.stat())
p.quit()
p = poplib.POP3_SSL("localhost", pop3s, context=ctx, timeout=20)
assert "STLS" not in p.capa()
p.user("alice")
p.pass_("alice's secret")
print("pop3s", len(p.retr(1)[1]) > 0)
p.quit()
"#,
        &[
            &tls.ca(),
            &tls.server.pop3_port.to_string(),
            &tls.pop3s_port.to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("'STLS'") && !lines[0].contains("'USER'"),
        "{out}"
    );
    assert!(!lines[0].contains("'SASL'"), "{out}");
    assert_eq!(
        lines[1],
        "refused -ERR [AUTH] logins need TLS here: send STLS first"
    );
    assert!(
        !lines[2].contains("'STLS'") && lines[2].contains("'USER'"),
        "{out}"
    );
    assert!(lines[2].contains("'SASL'"), "{out}");
    assert!(lines[3].starts_with("stat (1, "), "{out}");
    assert_eq!(lines[4], "pop3s True");
}

/// CVE-2011-0411: commands pipelined after STARTTLS/STLS in the same packet are dropped, not
/// run in the TLS session.
#[test]
fn commands_pipelined_after_starttls_and_stls_are_discarded() {
    let tls = TlsServer::start("");
    let out = python(
        r#"
import socket, ssl, sys
ca, port, pop3 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)

def lines(f, n):
    return [f.readline().decode().rstrip("\r\n") for _ in range(n)]

s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rb")
assert f.readline().startswith(b"220")
s.sendall(b"EHLO c.example\r\n")
while not f.readline().startswith(b"250 "):
    pass
s.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.net>\r\n")
print(lines(f, 1)[0])
t = ctx.wrap_socket(s, server_hostname="localhost")
f = t.makefile("rb")
t.sendall(b"RCPT TO:<alice@localhost>\r\nNOOP\r\n")
print(lines(f, 2))
# STARTTLS twice is out of sequence, and the session goes on.
t.sendall(b"STARTTLS\r\nNOOP\r\n")
print(lines(f, 2))
# STARTTLS inside a transaction (on a plain connection) is refused; the transaction goes on.
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rb")
assert f.readline().startswith(b"220")
s.sendall(b"HELO c.example\r\nMAIL FROM:<a@example.net>\r\nSTARTTLS\r\nRCPT TO:<alice@localhost>\r\n")
print(lines(f, 4)[2:])
s.close()

s = socket.create_connection(("127.0.0.1", pop3), timeout=20)
f = s.makefile("rb")
assert f.readline().startswith(b"+OK")
s.sendall(b"STLS\r\nUSER alice\r\n")
print(lines(f, 1)[0])
t = ctx.wrap_socket(s, server_hostname="localhost")
f = t.makefile("rb")
t.sendall(b"PASS alice's secret\r\nNOOP\r\n")
print(lines(f, 2))
"#,
        &[
            &tls.ca(),
            &tls.server.smtp_port.to_string(),
            &tls.server.pop3_port.to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "220 2.0.0 Ready to start TLS");
    // No MAIL ran: RCPT is out of sequence, and nothing answered RSET or MAIL.
    assert_eq!(
        lines[1],
        "['503 5.5.1 Error: need MAIL before RCPT', '250 2.0.0 Ok']"
    );
    assert_eq!(
        lines[2],
        "['503 5.5.1 Error: TLS is already active', '250 2.0.0 Ok']"
    );
    assert_eq!(
        lines[3],
        "['503 5.5.1 Error: STARTTLS is not allowed in a mail transaction', '250 2.1.5 Recipient ok']"
    );
    assert_eq!(lines[4], "+OK Begin TLS negotiation");
    assert_eq!(
        lines[5],
        "['-ERR send USER first', '-ERR log in first (USER and PASS, APOP or AUTH)']"
    );
    let log = tls.server.log();
    assert!(
        log.contains("plaintext pipelined after STARTTLS discarded"),
        "{log}"
    );
    assert!(
        log.contains("plaintext pipelined after STLS discarded"),
        "{log}"
    );
}

/// `openssl s_client -starttls smtp|pop3` and `-connect` to the implicit ports, verifying the
/// generated certificate.
#[test]
fn openssl_s_client_starttls_and_implicit_ports() {
    let tls = TlsServer::start("");
    let ca = tls.ca();
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .args(["-CAfile", &ca, "-verify_return_error", "-verify_hostname"])
            .arg("localhost")
            .args(["-crlf", "-ign_eof"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        text
    };
    let smtp = format!("127.0.0.1:{}", tls.server.smtp_port);
    let text = run(
        &["-starttls", "smtp", "-connect", &smtp],
        "EHLO openssl.example\nQUIT\n",
    );
    assert!(text.contains("250-mail.example.test"), "{text}");
    // Over TLS, EHLO no longer offers STARTTLS (openssl prints the plaintext EHLO's reply,
    // whose last line is STARTTLS, on its own).
    assert!(text.contains("250 ENHANCEDSTATUSCODES"), "{text}");
    assert!(text.contains("221 2.0.0"), "{text}");

    let pop3 = format!("127.0.0.1:{}", tls.server.pop3_port);
    let text = run(
        &["-starttls", "pop3", "-connect", &pop3],
        "USER alice\nPASS alice's secret\nSTAT\nQUIT\n",
    );
    assert!(text.contains("+OK maildrop has 0 messages"), "{text}");

    let smtps = format!("127.0.0.1:{}", tls.smtps_port);
    let text = run(&["-connect", &smtps], "EHLO openssl.example\nQUIT\n");
    assert!(text.contains("220 mail.example.test ESMTP"), "{text}");
    assert!(!text.contains("STARTTLS"), "{text}");

    let pop3s = format!("127.0.0.1:{}", tls.pop3s_port);
    let text = run(&["-connect", &pop3s], "CAPA\nQUIT\n");
    assert!(text.contains("+OK mail.example.test POP3"), "{text}");
    assert!(text.contains("\nUSER"), "{text}");
    // TLS 1.2 is served too.
    let text = run(&["-tls1_2", "-connect", &smtps], "QUIT\n");
    assert!(text.contains("Protocol  : TLSv1.2"), "{text}");
}

/// Reads from `stream` until the server closes it (or `limit` passes); returns what came and
/// how long it took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (all, start.elapsed()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        assert!(start.elapsed() < limit, "not closed");
    }
}

#[test]
fn bad_input_on_tls_ports_closes_only_that_connection() {
    let tls = TlsServer::start("");
    // A session in progress, which must not notice anything.
    let mut bystander = tls.server.smtp();
    assert!(bystander.cmd("EHLO b.example").starts_with("250"));

    // Plain text to an implicit-TLS port: the handshake fails and the connection closes.
    for port in [tls.smtps_port, tls.pop3s_port] {
        let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
        plain.write_all(b"EHLO plain.example\r\n").unwrap();
        let (got, _) = read_until_closed(&mut plain, Duration::from_secs(10));
        assert!(
            !got.starts_with(b"220") && !got.starts_with(b"+OK"),
            "{got:?}"
        );
    }
    // Garbage after STARTTLS's 220.
    let mut smtp = TcpStream::connect(("127.0.0.1", tls.server.smtp_port)).unwrap();
    smtp.write_all(b"STARTTLS\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    smtp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xfe])
        .unwrap();
    let (got, _) = read_until_closed(&mut smtp, Duration::from_secs(10));
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("220 2.0.0 Ready to start TLS"), "{got}");

    // A handshake that stalls halfway (a record header announcing more than comes) is cut off
    // after the handshake timeout: the listener's 2 s connection timeout.
    let mut stalled = TcpStream::connect(("127.0.0.1", tls.smtps_port)).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let (_, took) = read_until_closed(&mut stalled, Duration::from_secs(15));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    wait_for("the timed-out handshake in the log", || {
        tls.server.log().contains("TLS handshake timed out")
    });
    let log = tls.server.log();
    assert!(log.contains("SMTPS: TLS handshake failed"), "{log}");
    assert!(log.contains("POP3S: TLS handshake failed"), "{log}");
    assert!(log.contains("STARTTLS: TLS handshake failed"), "{log}");

    assert!(bystander.cmd("NOOP").starts_with("250"));
    // And the TLS ports still serve good clients.
    assert_eq!(
        served_fingerprint(tls.smtps_port),
        file_fingerprint(&tls.ca())
    );
}

/// A certificate and key in PEM for `names`.
fn pair(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn fingerprint_of(pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).unwrap();
    file_fingerprint(&path.display().to_string())
}

#[test]
fn sighup_and_reloadtls_serve_a_renewed_certificate_and_keep_the_old_one_when_broken() {
    let conf = tempfile::tempdir().unwrap();
    let (cert, key) = (conf.path().join("cert.pem"), conf.path().join("key.pem"));
    let (first_cert, first_key) = pair(&["localhost"]);
    std::fs::write(&cert, &first_cert).unwrap();
    // Readable by everyone: warned about.
    std::fs::write(&key, &first_key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let global = format!(
        "<tls><certificate>{}</certificate><privateKey>{}</privateKey></tls>",
        cert.display(),
        key.display()
    );
    let tls = TlsServer::start_with(&global, ADMIN);
    let log = tls.server.log();
    assert!(
        log.contains("is readable by every user (mode 0644)"),
        "{log}"
    );
    assert!(!tls.server.path("var/tls").exists(), "nothing generated");
    let first = fingerprint_of(&first_cert);
    assert_eq!(served_fingerprint(tls.smtps_port), first);

    // A session open before the reloads keeps going.
    let mut before = TcpStream::connect(("127.0.0.1", tls.server.smtp_port)).unwrap();
    before
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    // Renewed: SIGHUP, and a new client sees the new certificate.
    let (second_cert, second_key) = pair(&["localhost", "mail.example.test"]);
    std::fs::write(&cert, &second_cert).unwrap();
    std::fs::write(&key, &second_key).unwrap();
    let pid = tls.server.pid().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let second = fingerprint_of(&second_cert);
    wait_for("the renewed certificate", || {
        served_fingerprint(tls.smtps_port) == second
    });
    assert_eq!(served_fingerprint(tls.pop3s_port), second);
    assert!(tls.server.log().contains("TLS certificate reloaded"));

    // Broken: a key that does not match. SIGHUP keeps the old one and says why.
    let (_, other_key) = pair(&["localhost"]);
    std::fs::write(&key, other_key).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let shown = cert.display().to_string();
    wait_for("the failed reload in the log", || {
        tls.server.log().contains("TLS reload failed")
    });
    assert_eq!(served_fingerprint(tls.smtps_port), second);
    let log = tls.server.log();
    let failed = log
        .lines()
        .find(|l| l.contains("TLS reload failed"))
        .unwrap();
    assert!(failed.contains(&shown), "{failed}");

    // The RemoteManager asks for it too, and says what happened.
    let said = console(&tls.server, &["reloadtls"]);
    assert!(
        said.contains(&format!("Kept the old certificate for {shown}: ")),
        "{said}"
    );
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let said = console(&tls.server, &["reloadtls"]);
    assert!(said.contains(&format!("{shown}: bad PEM")), "{said}");
    let (third_cert, third_key) = pair(&["localhost"]);
    std::fs::write(&cert, &third_cert).unwrap();
    std::fs::write(&key, &third_key).unwrap();
    let third = fingerprint_of(&third_cert);
    let said = console(&tls.server, &["reloadtls"]);
    assert!(
        said.contains(&format!("Reloaded {shown} (SHA-256 {third})")),
        "{said}"
    );
    assert_eq!(served_fingerprint(tls.smtps_port), third);

    // The server did not stop on SIGHUP; the session from before still works.
    let mut banner = [0u8; 3];
    before.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"220");
}

#[test]
fn check_config_loads_the_configured_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pair(&["localhost"]);
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let check = |tls: &str| {
        let setup = Setup {
            extra: tls,
            ..Setup::default()
        };
        let path = dir.path().join("config.xml");
        std::fs::write(
            &path,
            crate::harness::config_xml_for((free_port(), 0, 0, 0), &setup),
        )
        .unwrap();
        Command::new(crate::harness::BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let good =
        check("<tls><certificate>cert.pem</certificate><privateKey>key.pem</privateKey></tls>");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // A missing key file is named, and nothing is generated in its place.
    let bad =
        check("<tls><certificate>cert.pem</certificate><privateKey>nokey.pem</privateKey></tls>");
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{said}");
    assert!(said.contains("nokey.pem: cannot read"), "{said}");
    assert!(!dir.path().join("var/tls").exists());
}
