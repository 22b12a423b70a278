//! TLS and SMTP AUTH together (issue 11), with the default `<requireTLSForAuth>true`: AUTH
//! appears and works only after STARTTLS (Python's smtplib, PLAIN and LOGIN), over SMTPS
//! (`SMTP_SSL`), on the embedded default's submission listener (MAIL needs AUTH even from
//! loopback, verifyIdentity), relaying with and without AUTH, POP3 AUTH PLAIN over STLS and
//! the failed-login throttle shared between POP3 over TLS and SMTP AUTH, and bad AUTH input
//! after STARTTLS. The Debian clients (swaks, msmtp) are in `tls_auth_peers.rs`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use crate::harness::python;
use crate::harness::{
    envelope_of, free_port, maildir_messages, repository_count, wait_for, Server, Setup, BIN,
};

/// AUTH on the STARTTLS listener with the default `<requireTLSForAuth>` (true); only a
/// documentation network may relay by address, so the loopback clients need AUTH to relay.
pub const SMTP_AUTH: &str = "<authRequired>true</authRequired>\
    <authorizedAddresses>192.0.2.0/24</authorizedAddresses>";

/// A server with STARTTLS + AUTH on its SMTP port, an SMTPS port with AUTH, POP3 with STLS
/// and a POP3S port (logins need TLS), `extra` top-level blocks; the users alice and bob.
pub struct AuthTls {
    pub server: Server,
    pub smtps_port: u16,
    pub pop3s_port: u16,
}

impl AuthTls {
    pub fn start(extra: &str) -> AuthTls {
        let (smtps_port, pop3s_port) = (free_port(), free_port());
        let blocks = format!(
            r#"<smtpserver><port>{smtps_port}</port><bind>127.0.0.1</bind>
                 <tls socketTLS="true"/>
                 <handler><helloName>mail.example.test</helloName>
                   <connectiontimeout>20000</connectiontimeout>{SMTP_AUTH}</handler></smtpserver>
               <pop3server><port>{pop3s_port}</port><bind>127.0.0.1</bind>
                 <tls socketTLS="true"/>
                 <handler><helloName>mail.example.test</helloName>
                   <connectiontimeout>20000</connectiontimeout></handler></pop3server>
               {extra}"#
        );
        let server = Server::start_setup(&Setup {
            smtp_handler: SMTP_AUTH,
            pop3_handler: Some("<requireTLSForAuth>true</requireTLSForAuth>"),
            extra: &blocks,
            ..Setup::default()
        });
        for port in [smtps_port, pop3s_port] {
            wait_for("the implicit-TLS port", || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        server.add_user("alice", "alice pw");
        server.add_user("bob", "bob pw");
        AuthTls {
            server,
            smtps_port,
            pop3s_port,
        }
    }

    /// The generated self-signed certificate, the clients' CA file.
    pub fn ca(&self) -> String {
        self.server.path("var/tls/cert.pem").display().to_string()
    }
}

/// The mails of a file repository: envelope and text.
pub fn repository_mails(dir: &Path) -> Vec<(serde_json::Value, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mail"))
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (envelope_of(&p), text)
        })
        .collect()
}

/// Python helpers every script below starts with: `plain(user, pw)` is an AUTH PLAIN
/// argument, `ctx` verifies the generated certificate (argv[1]).
const PRELUDE: &str = r#"
import base64, poplib, smtplib, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
def plain(user, pw):
    return "PLAIN " + base64.b64encode(("\0%s\0%s" % (user, pw)).encode()).decode()
def reply(code_text):
    code, text = code_text
    return "%d %s" % (code, text.decode().replace("\n", " | "))
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// Before STARTTLS no AUTH is offered and AUTH gets 538; after it, AUTH is offered and PLAIN
/// and LOGIN log in; the mail says ESMTPSA and the TLS version and cipher. Relaying needs AUTH
/// (530 where AUTH is offered) and works after it.
#[test]
fn smtplib_auth_only_after_starttls_then_relay() {
    let tls = AuthTls::start("");
    let out = python(
        &script(
            r#"
port = int(sys.argv[2])
s = smtplib.SMTP("localhost", port, timeout=20)
s.ehlo("py.example")
print("plain auth offered", s.has_extn("auth"))
print("plain", reply(s.docmd("AUTH", plain("alice", "alice pw"))))
s.starttls(context=ctx)
s.ehlo("py.example")
print("tls auth", s.esmtp_features.get("auth").strip())
# Not authenticated, over TLS: relaying needs AUTH; local mail does not.
print("mail", reply(s.docmd("MAIL", "FROM:<x@client.example>")))
print("relay", reply(s.docmd("RCPT", "TO:<friend@far.example>")))
print("local", reply(s.docmd("RCPT", "TO:<bob@localhost>")))
s.rset()
s.quit()
for mech in ["PLAIN", "LOGIN"]:
    s = smtplib.SMTP("localhost", port, timeout=20)
    s.starttls(context=ctx)
    s.ehlo("py.example")
    s.user, s.password = "alice", "alice pw"
    code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()))
    print(mech, code, s.sock.version())
    s.sendmail("alice@localhost", ["bob@localhost", "friend@far.example"],
               "Subject: %s over TLS\r\n\r\nbody\r\n" % mech)
    s.quit()
"#,
        ),
        &[&tls.ca(), &tls.server.smtp_port.to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "plain auth offered False", "{out}");
    assert_eq!(
        lines[1],
        "plain 538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(lines[2], "tls auth PLAIN LOGIN", "{out}");
    assert!(lines[3].starts_with("mail 250"), "{out}");
    assert_eq!(lines[4], "relay 530 5.7.0 Authentication required");
    assert!(lines[5].starts_with("local 250"), "{out}");
    assert!(lines[6].starts_with("PLAIN 235 TLSv1."), "{out}");
    assert!(lines[7].starts_with("LOGIN 235 TLSv1."), "{out}");

    // The local copies were delivered, the remote ones went to the outgoing spool, all with
    // ESMTPSA and the cipher, and the user on the envelope.
    let inbox = tls.server.path("var/mail/inboxes/bob");
    wait_for("two local mails", || maildir_messages(&inbox).len() == 2);
    for mail in maildir_messages(&inbox) {
        let text = String::from_utf8(mail).unwrap();
        assert!(text.contains(" with ESMTPSA id "), "{text}");
        assert!(text.contains("\n\t(using TLSv1."), "{text}");
        assert!(text.contains(" with cipher TLS"), "{text}");
    }
    let outgoing = tls.server.path("var/mail/outgoing");
    wait_for("two relayed mails", || repository_count(&outgoing) == 2);
    for (envelope, text) in repository_mails(&outgoing) {
        assert_eq!(
            envelope["attributes"]["org.apache.james.SMTPAuthUser"]["value"], "alice",
            "{envelope}"
        );
        assert_eq!(
            envelope["recipients"],
            serde_json::json!(["friend@far.example"])
        );
        assert!(text.contains(" with ESMTPSA id "), "{text}");
    }
}

/// SMTPS (implicit TLS): AUTH is offered at once, and PLAIN logs in and relays.
#[test]
fn smtp_ssl_with_auth_plain_relays() {
    let tls = AuthTls::start("");
    let out = python(
        &script(
            r#"
s = smtplib.SMTP_SSL("localhost", int(sys.argv[2]), context=ctx, timeout=20)
s.ehlo("py.example")
print("auth", s.esmtp_features.get("auth").strip(), "starttls", s.has_extn("starttls"))
print("before", reply(s.docmd("MAIL", "FROM:<alice@localhost>")),
      reply(s.docmd("RCPT", "TO:<friend@far.example>")))
s.rset()
print("login", reply(s.docmd("AUTH", plain("alice", "alice pw"))))
s.sendmail("alice@localhost", ["friend@far.example"], "Subject: smtps\r\n\r\nbody\r\n")
s.quit()
"#,
        ),
        &[&tls.ca(), &tls.smtps_port.to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "auth PLAIN LOGIN starttls False", "{out}");
    assert!(
        lines[1].ends_with("530 5.7.0 Authentication required"),
        "{out}"
    );
    assert_eq!(lines[2], "login 235 2.7.0 Authentication successful");
    let outgoing = tls.server.path("var/mail/outgoing");
    wait_for("the relayed mail", || repository_count(&outgoing) == 1);
    let (envelope, text) = repository_mails(&outgoing).remove(0);
    assert_eq!(envelope["sender"], "alice@localhost", "{envelope}");
    assert!(text.contains(" with ESMTPSA id "), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher TLS13_"), "{text}");
}

/// POP3: AUTH PLAIN over STLS logs in. Failed POP3 logins over TLS count toward the throttle
/// that SMTP AUTH shares: the next SMTP AUTH failure from the same address is held back, a
/// correct login is not.
#[test]
fn pop3_auth_plain_over_stls_and_the_shared_throttle() {
    let tls =
        AuthTls::start(r#"<authThrottle failures="2" window="60000" delay="800" maxDelay="800"/>"#);
    tls.server.smtp().send_mail(
        "sender@example.net",
        &["alice@localhost"],
        "Subject: for pop\n\nbody\n",
    );
    wait_for("the mail", || {
        maildir_messages(&tls.server.path("var/mail/inboxes/alice")).len() == 1
    });
    let out = python(
        &script(
            r#"
pop3, pop3s, smtp = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def timed(f):
    start = time.monotonic()
    try:
        r = f()
    except (poplib.error_proto, smtplib.SMTPException) as e:
        r = e
    return r, time.monotonic() - start

p = poplib.POP3("localhost", pop3, timeout=20)
p.stls(context=ctx)
print("sasl", " ".join(p.capa()["SASL"]))
print(p._shortcmd("AUTH " + plain("alice", "alice pw")).decode())
print("stat", p.stat()[0])
p.quit()

# Two failures over TLS (STLS, then POP3S): under the threshold, answered at once.
p = poplib.POP3("localhost", pop3, timeout=20)
p.stls(context=ctx)
r, took = timed(lambda: p._shortcmd("AUTH " + plain("alice", "wrong")))
print("fail1", r, took < 0.5)
p.quit()
p = poplib.POP3_SSL("localhost", pop3s, context=ctx, timeout=20)
p.user("alice")
r, took = timed(lambda: p.pass_("wrong"))
print("fail2", r, took < 0.5)
p.quit()

# The third, an SMTP AUTH over STARTTLS from the same address, is held back.
s = smtplib.SMTP("localhost", smtp, timeout=20)
s.starttls(context=ctx)
s.ehlo("py.example")
r, took = timed(lambda: s.docmd("AUTH", plain("alice", "wrong")))
print("smtp", reply(r), took >= 0.75)
# A correct login is answered at once, and does not clear the count.
r, took = timed(lambda: s.docmd("AUTH", plain("alice", "alice pw")))
print("good", reply(r), took < 0.5)
s.quit()
p = poplib.POP3_SSL("localhost", pop3s, context=ctx, timeout=20)
p.user("alice")
r, took = timed(lambda: p.pass_("wrong"))
print("after", took >= 0.75)
p.quit()
"#,
        ),
        &[
            &tls.ca(),
            &tls.server.pop3_port.to_string(),
            &tls.pop3s_port.to_string(),
            &tls.server.smtp_port.to_string(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "sasl PLAIN", "{out}");
    assert!(lines[1].starts_with("+OK maildrop has 1 messages"), "{out}");
    assert_eq!(lines[2], "stat 1", "{out}");
    assert_eq!(
        lines[3], "fail1 b'-ERR [AUTH] invalid user name or password' True",
        "{out}"
    );
    assert_eq!(
        lines[4], "fail2 b'-ERR [AUTH] invalid user name or password' True",
        "{out}"
    );
    assert_eq!(
        lines[5], "smtp 535 5.7.8 Authentication credentials invalid True",
        "{out}"
    );
    assert_eq!(
        lines[6], "good 235 2.7.0 Authentication successful True",
        "{out}"
    );
    assert_eq!(lines[7], "after True", "{out}");
    let log = tls.server.log();
    assert!(
        log.contains("answers to this address are now delayed"),
        "{log}"
    );
}

/// Bad AUTH input after STARTTLS: bad base64 and `*` get 501, a 100 KiB AUTH line 500, and
/// the session goes on (a correct AUTH then works); another session is not disturbed.
#[test]
fn bad_auth_input_over_tls_gets_errors_and_the_session_goes_on() {
    let tls = AuthTls::start("");
    let out = python(
        &script(
            r#"
port = int(sys.argv[2])
bystander = smtplib.SMTP("localhost", port, timeout=20)
bystander.starttls(context=ctx)
bystander.ehlo("bystander.example")

s = smtplib.SMTP("localhost", port, timeout=20)
s.starttls(context=ctx)
s.ehlo("py.example")
print(reply(s.docmd("AUTH", "PLAIN !!!not*base64!!!")))
print(reply(s.docmd("AUTH", "LOGIN")))
print(reply(s.docmd("*")))
print(reply(s.docmd("AUTH", "PLAIN")))
print(reply(s.docmd("*")))
print(reply(s.docmd("AUTH", "PLAIN " + "A" * (100 * 1024))))
print(reply(s.docmd("AUTH", "LOGIN")))
print(reply(s.docmd("B" * (100 * 1024))))
print(reply(s.docmd("NOOP")))
print(reply(s.docmd("AUTH", plain("alice", "alice pw"))))
print(reply(bystander.noop()))
bystander.sendmail("x@client.example", ["bob@localhost"], "Subject: bystander\r\n\r\nhi\r\n")
bystander.quit()
s.sendmail("alice@localhost", ["bob@localhost"], "Subject: after bad input\r\n\r\nhi\r\n")
s.quit()
"#,
        ),
        &[&tls.ca(), &tls.server.smtp_port.to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "501 5.5.2 Invalid base64 data",
            "334 VXNlcm5hbWU6",
            "501 5.7.0 Authentication cancelled",
            "334 ",
            "501 5.7.0 Authentication cancelled",
            "500 5.5.2 Line too long",
            "334 VXNlcm5hbWU6",
            "500 5.5.2 Line too long",
            "250 2.0.0 Ok",
            "235 2.7.0 Authentication successful",
            "250 2.0.0 Ok",
        ],
        "{out}"
    );
    let inbox = tls.server.path("var/mail/inboxes/bob");
    wait_for("both mails", || maildir_messages(&inbox).len() == 2);
}

/// The embedded default configuration as shipped, with its ports moved onto free ones.
pub struct DefaultServer {
    child: std::process::Child,
    home: tempfile::TempDir,
    pub smtp_port: u16,
    pub submission_port: u16,
}

impl DefaultServer {
    pub fn start() -> DefaultServer {
        const DEFAULT: &str = include_str!("../../crates/config/default-config.xml");
        let (smtp_port, submission_port) = (free_port(), free_port());
        let mut xml = DEFAULT.to_string();
        for (from, to) in [
            ("<port>2525</port>", smtp_port),
            ("<port>5587</port>", submission_port),
            ("<port>1110</port>", free_port()),
            // NNTP, once it is served.
            ("<port>1119</port>", free_port()),
            ("<port>9465</port>", free_port()),
        ] {
            assert!(
                xml.contains(from) || from.contains("1119"),
                "the default config no longer has {from}"
            );
            xml = xml.replace(from, &format!("<port>{to}</port>"));
        }
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("config.xml");
        std::fs::write(&config, xml).unwrap();
        let log = std::fs::File::create(home.path().join("server.log")).unwrap();
        let child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--home")
            .arg(home.path())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = DefaultServer {
            child,
            home,
            smtp_port,
            submission_port,
        };
        wait_for("the default's SMTP and submission ports", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("exited with {status}: {}", server.log());
            }
            [smtp_port, submission_port]
                .iter()
                .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
        });
        server
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let out = std::process::Command::new(BIN)
            .args(["user", "add", name, "--password", password])
            .arg("--config")
            .arg(self.path("config.xml"))
            .arg("--home")
            .arg(self.home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    pub fn ca(&self) -> String {
        self.path("var/tls/cert.pem").display().to_string()
    }
}

impl Drop for DefaultServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The embedded default's submission listener: MAIL before AUTH gets 530 even from loopback
/// (and AUTH needs STARTTLS first); STARTTLS + AUTH + send works; verifyIdentity refuses
/// another local user's address.
#[test]
fn the_embedded_default_submission_listener_needs_starttls_and_auth() {
    let server = DefaultServer::start();
    server.add_user("alice", "alice's long pw");
    server.add_user("bob", "bob's long pw");
    let out = python(
        &script(
            r#"
port = int(sys.argv[2])
s = smtplib.SMTP("localhost", port, timeout=20)
s.ehlo("py.example")
print("plain", s.has_extn("auth"), s.has_extn("starttls"))
print(reply(s.docmd("MAIL", "FROM:<alice@localhost>")))
print(reply(s.docmd("AUTH", plain("alice", "alice's long pw"))))
s.starttls(context=ctx)
s.ehlo("py.example")
print("tls", s.esmtp_features.get("auth").strip())
print(reply(s.docmd("MAIL", "FROM:<alice@localhost>")))
print(reply(s.docmd("AUTH", plain("alice", "alice's long pw"))))
print(reply(s.docmd("MAIL", "FROM:<bob@localhost>")))
s.sendmail("alice@localhost", ["bob@localhost"], "Subject: submitted\r\n\r\nhi bob\r\n")
s.quit()
"#,
        ),
        &[&server.ca(), &server.submission_port.to_string()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "plain False True", "{out}");
    assert_eq!(lines[1], "530 5.7.0 Authentication required", "{out}");
    assert!(lines[2].starts_with("538 5.7.11"), "{out}");
    assert_eq!(lines[3], "tls PLAIN LOGIN", "{out}");
    assert_eq!(lines[4], "530 5.7.0 Authentication required", "{out}");
    assert_eq!(lines[5], "235 2.7.0 Authentication successful", "{out}");
    assert_eq!(
        lines[6], "553 5.7.1 <bob@localhost>: sender address not owned by user alice",
        "{out}"
    );
    let inbox = server.path("var/mail/inboxes/bob");
    wait_for("the submitted mail", || maildir_messages(&inbox).len() == 1);
    let text = String::from_utf8(maildir_messages(&inbox).remove(0)).unwrap();
    assert!(text.contains(" with ESMTPSA id "), "{text}");
    assert!(text.contains("Subject: submitted"), "{text}");
    // The ordinary SMTP port of the default takes loopback mail without AUTH, as before.
    crate::harness::Smtp::connect(server.smtp_port).send_mail(
        "x@localhost",
        &["bob@localhost"],
        "Subject: port 2525\n\nhi\n",
    );
    wait_for("the second mail", || maildir_messages(&inbox).len() == 2);
}
