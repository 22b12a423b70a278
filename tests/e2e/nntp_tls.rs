//! NNTP over TLS end to end (issue 11 item 7, issue 12): STARTTLS (RFC 4642) and implicit
//! NNTPS against the generated certificate, `<requireTLSForAuth>` (AUTHINFO refused in plain
//! text with `483`), plaintext pipelined after STARTTLS discarded, failed AUTHINFO logins
//! counted by the throttle POP3 and SMTP share, and bad input on the TLS ports. The clients are
//! Python's nntplib and ssl, and `openssl s_client -starttls nntp`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::python;
use crate::harness::{free_port, wait_for, Server, Setup};

const GROUPS: &str =
    "<nntp-repository><articleIDDomainSuffix>news.example.test</articleIDDomainSuffix>\
    <newsgroups><newsgroup>comp.test</newsgroup></newsgroups></nntp-repository>";

/// A server whose NNTP listener offers STARTTLS and requires TLS for AUTHINFO, an implicit-TLS
/// NNTP block (2 s connection timeout), and the user alice.
struct NewsTls {
    server: Server,
    nntps_port: u16,
}

impl NewsTls {
    fn start() -> NewsTls {
        let nntps_port = free_port();
        let extra = format!(
            r#"<nntpserver><port>{nntps_port}</port><bind>127.0.0.1</bind>
                 <tls socketTLS="true"/>
                 <handler><helloName>mail.example.test</helloName>
                   <connectiontimeout>2000</connectiontimeout></handler></nntpserver>
               {GROUPS}"#
        );
        let server = Server::start_setup(&Setup {
            nntp_handler: Some("<requireTLSForAuth>true</requireTLSForAuth>"),
            extra: &extra,
            ..Setup::default()
        });
        wait_for("the NNTPS port", || {
            TcpStream::connect(("127.0.0.1", nntps_port)).is_ok()
        });
        server.add_user("alice", "alice's secret");
        NewsTls { server, nntps_port }
    }

    /// The generated self-signed certificate, which clients use as their CA file.
    fn ca(&self) -> String {
        self.server.path("var/tls/cert.pem").display().to_string()
    }
}

/// nntplib: AUTHINFO refused in plain text (and not listed), then `starttls()` verifying the
/// generated certificate and `login()`; `NNTP_SSL` on the implicit port.
#[test]
fn nntplib_starttls_and_nntp_ssl_with_require_tls_for_auth() {
    let news = NewsTls::start();
    let out = python(
        r#"
import io, ssl, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import nntplib
ca, port, nntps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
s = nntplib.NNTP("localhost", port, timeout=20)
caps = s.getcapabilities()
print("before", "STARTTLS" in caps, "AUTHINFO" in caps)
try:
    s.login("alice", "alice's secret")
    print("AUTHINFO accepted in plain text")
except nntplib.NNTPTemporaryError as e:
    print("refused", e.response)
s.starttls(context=ctx)
caps = s.getcapabilities()
print("after", "STARTTLS" in caps, caps.get("AUTHINFO"))
s.login("alice", "alice's secret")
s.post(io.BytesIO(b"From: alice@localhost\r\nNewsgroups: comp.test\r\nSubject: over tls\r\n\r\nhi\r\n"))
print("group", s.group("comp.test")[1])
s.quit()
s = nntplib.NNTP_SSL("localhost", nntps, ssl_context=ctx, timeout=20)
caps = s.getcapabilities()
print("nntps", "STARTTLS" in caps, caps.get("AUTHINFO"))
s.login("alice", "alice's secret")
print("nntps group", s.group("comp.test")[1])
s.quit()
"#,
        &[
            &news.ca(),
            &news.server.nntp_port.to_string(),
            &news.nntps_port.to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "before True False",
            "refused 483 Encryption or stronger authentication required",
            "after False ['USER']",
            "group 1",
            "nntps False ['USER']",
            "nntps group 1",
        ],
        "{out}"
    );
}

/// Reads one CRLF line.
fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Commands pipelined after STARTTLS in the same packet are dropped, not run in the TLS
/// session; STARTTLS works without MODE READER first, and a second one is refused.
#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let news = NewsTls::start();
    let out = python(
        r#"
import socket, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=ca)
def lines(f, n):
    return [f.readline().decode().rstrip("\r\n") for _ in range(n)]
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rb")
assert f.readline().startswith(b"200")
s.sendall(b"STARTTLS\r\nAUTHINFO USER alice\r\n")
print(lines(f, 1)[0])
t = ctx.wrap_socket(s, server_hostname="localhost")
f = t.makefile("rb")
t.sendall(b"AUTHINFO PASS alice's secret\r\nSTARTTLS\r\nAUTHINFO USER alice\r\nAUTHINFO PASS alice's secret\r\nQUIT\r\n")
print(lines(f, 5))
"#,
        &[&news.ca(), &news.server.nntp_port.to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "382 Continue with TLS negotiation", "{out}");
    // The plaintext AUTHINFO USER did not run: PASS is out of sequence.
    assert_eq!(
        lines[1],
        "['482 send AUTHINFO USER first', '502 already using TLS', '381 password required', \
         '281 authentication accepted', '205 closing connection']",
        "{out}"
    );
    let log = news.server.log();
    assert!(
        log.contains("plaintext pipelined after STARTTLS discarded"),
        "{log}"
    );
}

/// `openssl s_client -starttls nntp` and `-connect` to the NNTPS port, verifying the generated
/// certificate, then logging in.
#[test]
fn openssl_s_client_starttls_nntp_and_nntps() {
    let news = NewsTls::start();
    let ca = news.ca();
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
    let login = "CAPABILITIES\nAUTHINFO USER alice\nAUTHINFO PASS alice's secret\nQUIT\n";
    let plain = format!("127.0.0.1:{}", news.server.nntp_port);
    let text = run(&["-starttls", "nntp", "-connect", &plain], login);
    assert!(text.contains("\nAUTHINFO USER"), "{text}");
    assert!(text.contains("281 authentication accepted"), "{text}");
    assert!(text.contains("205 closing connection"), "{text}");

    let nntps = format!("127.0.0.1:{}", news.nntps_port);
    let text = run(&["-connect", &nntps], login);
    assert!(
        text.contains("200 mail.example.test Mailroom NNTP service ready"),
        "{text}"
    );
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.contains("281 authentication accepted"), "{text}");
}

/// Reads until the server closes the connection (or 10 s pass); returns what came.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not closed");
    }
}

/// Plain text to the NNTPS port and garbage after STARTTLS's 382 close only that connection.
#[test]
fn bad_input_on_nntp_tls_ports_closes_only_that_connection() {
    let news = NewsTls::start();
    let bystander = TcpStream::connect(("127.0.0.1", news.server.nntp_port)).unwrap();
    bystander
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(bystander.try_clone().unwrap());
    let mut writer = bystander;
    assert!(line(&mut reader).starts_with("200"));

    let mut plain = TcpStream::connect(("127.0.0.1", news.nntps_port)).unwrap();
    plain.write_all(b"CAPABILITIES\r\n").unwrap();
    let got = read_until_closed(&mut plain);
    assert!(
        !got.starts_with(b"200") && !got.starts_with(b"101"),
        "{got:?}"
    );

    let mut garbage = TcpStream::connect(("127.0.0.1", news.server.nntp_port)).unwrap();
    garbage.write_all(b"STARTTLS\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xfe])
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut garbage)).into_owned();
    assert!(got.contains("382 Continue with TLS negotiation"), "{got}");

    wait_for("the failed handshakes in the log", || {
        let log = news.server.log();
        log.contains("NNTPS: TLS handshake failed")
            && log.contains("NNTP STARTTLS: TLS handshake failed")
    });
    writer.write_all(b"DATE\r\n").unwrap();
    assert!(line(&mut reader).starts_with("111 "));
}

/// Failed AUTHINFO logins count toward the throttle POP3 and SMTP share: two NNTP failures are
/// answered at once, the third (which also closes the session) and a POP3 failure after it
/// are held back.
#[test]
fn failed_authinfo_logins_count_toward_the_shared_throttle() {
    let server = Server::start_setup(&Setup {
        nntp_handler: Some(""),
        pop3_handler: Some(""),
        extra: &format!(
            r#"<authThrottle failures="2" window="60000" delay="700" maxDelay="700"/>{GROUPS}"#
        ),
        ..Setup::default()
    });
    server.add_user("alice", "alice pw");
    let slow = Duration::from_millis(650);
    let fast = Duration::from_millis(450);

    let stream = TcpStream::connect(("127.0.0.1", server.nntp_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    assert!(line(&mut reader).starts_with("200"));
    let mut fail = |reader: &mut BufReader<TcpStream>| {
        writer.write_all(b"AUTHINFO USER alice\r\n").unwrap();
        assert!(line(reader).starts_with("381"));
        let start = Instant::now();
        writer.write_all(b"AUTHINFO PASS wrong\r\n").unwrap();
        assert_eq!(line(reader), "481 authentication failed");
        start.elapsed()
    };
    for _ in 0..2 {
        let took = fail(&mut reader);
        assert!(took < fast, "{took:?}");
    }
    let took = fail(&mut reader);
    assert!(took >= slow, "third failure answered after {took:?}");
    // The third failure in a session closes it.
    assert_eq!(line(&mut reader), "");

    // POP3 from the same address is now held back too.
    let pop = TcpStream::connect(("127.0.0.1", server.pop3_port)).unwrap();
    pop.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(pop.try_clone().unwrap());
    let mut writer = pop;
    assert!(line(&mut reader).starts_with("+OK"));
    writer.write_all(b"USER alice\r\n").unwrap();
    assert!(line(&mut reader).starts_with("+OK"));
    let start = Instant::now();
    writer.write_all(b"PASS wrong\r\n").unwrap();
    assert!(line(&mut reader).starts_with("-ERR"));
    assert!(start.elapsed() >= slow, "{:?}", start.elapsed());

    // A correct AUTHINFO is not slowed.
    let stream = TcpStream::connect(("127.0.0.1", server.nntp_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    assert!(line(&mut reader).starts_with("200"));
    writer.write_all(b"AUTHINFO USER alice\r\n").unwrap();
    assert!(line(&mut reader).starts_with("381"));
    let start = Instant::now();
    writer.write_all(b"AUTHINFO PASS alice pw\r\n").unwrap();
    assert_eq!(line(&mut reader), "281 authentication accepted");
    assert!(start.elapsed() < fast, "{:?}", start.elapsed());
}
