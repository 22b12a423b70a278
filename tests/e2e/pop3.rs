//! POP3 end to end: mail sent over SMTP to the real binary, read back with Python's poplib, a
//! raw client, and (in `.ci/run`) the Debian clients fetchmail and mpop.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{maildir_messages, python, wait_for, Server, Setup};

/// A server with POP3 enabled (with these extra handler options) and one user.
fn pop3_server(handler: &str, user: &str, password: &str) -> Server {
    let server = Server::start_setup(&Setup {
        pop3_handler: Some(handler),
        ..Setup::default()
    });
    server.add_user(user, password);
    server
}

/// Sends each message (raw bytes, CRLF) over SMTP to `rcpt`, then waits until `inbox` holds
/// `expect` messages.
fn send(server: &Server, rcpt: &str, messages: &[&[u8]], inbox: &Path, expect: usize) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.example.net").starts_with("250"));
    for message in messages {
        assert!(smtp
            .cmd("MAIL FROM:<sender@example.net>")
            .starts_with("250"));
        assert!(smtp.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        assert!(smtp.cmd("DATA").starts_with("354"));
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                smtp.send(b".");
            }
            smtp.send(line);
        }
        let reply = smtp.cmd(".");
        assert!(reply.starts_with("250"), "{reply}");
    }
    smtp.cmd("QUIT");
    wait_for("delivery", || maildir_messages(inbox).len() == expect);
}

/// A raw POP3 client for protocol tests.
struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    banner: String,
}

impl Pop3 {
    fn connect(port: u16) -> Pop3 {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut pop = Pop3 {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            banner: String::new(),
        };
        pop.banner = pop.line();
        assert!(pop.banner.starts_with("+OK"), "{}", pop.banner);
        pop
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// The lines of a multi-line response up to the `.` line.
    fn multiline(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    fn login(port: u16, user: &str, password: &str) -> Pop3 {
        let mut pop = Pop3::connect(port);
        assert!(pop.cmd(&format!("USER {user}")).starts_with("+OK"));
        let reply = pop.cmd(&format!("PASS {password}"));
        assert!(reply.starts_with("+OK"), "{reply}");
        pop
    }

    fn uidl(&mut self) -> Vec<String> {
        assert!(self.cmd("UIDL").starts_with("+OK"));
        self.multiline()
    }
}

/// Reads everything with poplib and prints it as JSON (message contents in base64).
const POPLIB_READ: &str = r#"
import base64, json, poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.user(sys.argv[2])
p.pass_(sys.argv[3])
count, size = p.stat()
listing = [l.decode() for l in p.list()[1]]
uidl = [l.decode() for l in p.uidl()[1]]
retr, top = [], []
for i in range(1, count + 1):
    resp, lines, octets = p.retr(i)
    retr.append(base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode())
    resp, lines, octets = p.top(i, 0)
    top.append(base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode())
p.quit()
print(json.dumps({"count": count, "size": size, "list": listing, "uidl": uidl, "retr": retr, "top": top}))
"#;

/// Stored octets as POP3 sends them: each LF without a CR before it as CRLF.
fn crlf(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 32);
    let mut after_cr = false;
    for &b in stored {
        if b == b'\n' && !after_cr {
            out.push(b'\r');
        }
        out.push(b);
        after_cr = b == b'\r';
    }
    out
}

/// A Maildir file's `,<field>=` size.
fn size_field(name: &str, field: &str) -> usize {
    let start = name.find(&format!(",{field}=")).unwrap() + field.len() + 2;
    let digits: String = name[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn maildir_files_have_lf_ends_and_pop3_sends_the_exact_crlf_octets() {
    let server = pop3_server("", "dora", "pw dora");
    let inbox = server.path("var/mail/inboxes/dora");
    let sent: &[u8] = b"From: a@example.net\r\nSubject: lf\r\n\r\nbody line\r\n.dot\r\n\r\nend\r\n";
    send(&server, "dora@localhost", &[sent], &inbox, 1);
    let entry = std::fs::read_dir(inbox.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let name = entry.file_name().into_string().unwrap();
    let file = std::fs::read(entry.path()).unwrap();
    // As Postfix's local(8) and Dovecot store it: no CR anywhere, LF line ends.
    assert!(!file.contains(&b'\r'), "{}", String::from_utf8_lossy(&file));
    let lf: Vec<u8> = String::from_utf8_lossy(sent)
        .replace("\r\n", "\n")
        .into_bytes();
    assert!(file.ends_with(&lf), "{}", String::from_utf8_lossy(&file));
    // `,S=` is the file's size, `,W=` the size with CRLF line ends.
    assert_eq!(size_field(&name, "S"), file.len(), "{name}");
    assert_eq!(size_field(&name, "W"), crlf(&file).len(), "{name}");

    // A file with CRLF line ends, as an earlier version wrote it, keeps working (the older
    // delivery time makes it message 1).
    let old: &[u8] = b"Return-Path: <x@example.net>\r\nSubject: old\r\n\r\nold body\r\n";
    let old_name = format!("1600000000.M1P1.host,S={0},W={0}", old.len());
    std::fs::write(inbox.join("new").join(&old_name), old).unwrap();

    let mut pop = Pop3::login(server.pop3_port, "dora", "pw dora");
    let wire = crlf(&file);
    assert_eq!(pop.cmd("STAT"), format!("+OK 2 {}", old.len() + wire.len()));
    assert!(pop.cmd("LIST").starts_with("+OK"));
    assert_eq!(
        pop.multiline(),
        [format!("1 {}", old.len()), format!("2 {}", wire.len())]
    );
    // RETR sends exactly the CRLF octets (dot-stuffed), octet for octet.
    for (index, expected) in [(1, old.to_vec()), (2, wire)] {
        pop.send(format!("RETR {index}\r\n").as_bytes());
        assert!(pop.line().starts_with("+OK"));
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            pop.reader.read_until(b'\n', &mut line).unwrap();
            if line == b".\r\n" {
                break;
            }
            let unstuffed = if line.starts_with(b"..") {
                &line[1..]
            } else {
                &line[..]
            };
            raw.extend_from_slice(unstuffed);
        }
        assert_eq!(
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(&expected),
            "RETR {index}"
        );
        assert!(raw.ends_with(if index == 1 { old } else { sent }));
    }
    assert!(pop.cmd("QUIT").starts_with("+OK"));
}

fn b64(text: &str) -> Vec<u8> {
    // Tiny decoder to keep the test crate free of dependencies.
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(table(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn poplib_reads_back_byte_for_byte_what_smtp_delivered() {
    let server = pop3_server("", "Alice", "pass word");
    let inbox = server.path("var/mail/inboxes/Alice");
    let big: Vec<u8> = (0..3000)
        .flat_map(|i| format!("line {i:05} {}\r\n", "x".repeat(60)).into_bytes())
        .collect();
    let big = [&b"Subject: big\r\n\r\n"[..], &big].concat();
    let sent: [&[u8]; 3] = [
        b"From: a@example.net\r\nTo: alice@localhost\r\nSubject: one\r\n\r\nfirst body\r\n",
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n. \r\nend\r\n",
        &big,
    ];
    send(&server, "alice@localhost", &sent, &inbox, 3);

    // Logging in with another case of the name opens the same (canonical) mailbox.
    let out = python(
        POPLIB_READ,
        &[&server.pop3_port.to_string(), "alice", "pass word"],
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The files have LF line ends; POP3 sends them with CRLF.
    let stored: Vec<Vec<u8>> = maildir_messages(&inbox).iter().map(|m| crlf(m)).collect();
    let retr: Vec<Vec<u8>> = json["retr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| b64(m.as_str().unwrap()))
        .collect();
    assert_eq!(json["count"], 3);
    let total: usize = stored.iter().map(Vec::len).sum();
    assert_eq!(json["size"], total);

    // Each sent message is one RETR (the spool's workers may deliver them in any order), and
    // each RETR is the stored file.
    for (i, sent) in sent.iter().enumerate() {
        assert!(
            retr.iter().any(|message| message.ends_with(sent)),
            "sent message {} not retrieved",
            i + 1
        );
    }
    for (i, message) in retr.iter().enumerate() {
        assert!(
            stored.contains(message),
            "message {} differs from the file",
            i + 1
        );
        assert_eq!(json["list"][i], format!("{} {}", i + 1, message.len()));
        // TOP n 0 is the header section and the blank line.
        let top = b64(json["top"][i].as_str().unwrap());
        let header_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(top, &message[..header_end]);
    }
    let uids: Vec<&str> = json["uidl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(uids.len(), 3);
    assert!(uids[0] != uids[1] && uids[1] != uids[2] && uids[0] != uids[2]);
    // Reading deleted nothing.
    assert_eq!(maildir_messages(&inbox).len(), 3);
}

#[test]
fn poplib_dele_rset_quit_and_a_dropped_connection_deletes_nothing() {
    let mut server = pop3_server("", "bob", "secret");
    let inbox = server.path("var/mail/inboxes/bob");
    let messages: [&[u8]; 3] = [
        b"Subject: 1\r\n\r\none\r\n",
        b"Subject: 2\r\n\r\ntwo\r\n",
        b"Subject: 3\r\n\r\nthree\r\n",
    ];
    send(&server, "bob@localhost", &messages, &inbox, 3);
    let uids_before = Pop3::login(server.pop3_port, "bob", "secret").uidl();

    let script = r#"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.user("bob"); p.pass_("secret")
p.dele(1)
try:
    p.retr(1)
    raise SystemExit("RETR of a deleted message worked")
except poplib.error_proto as e:
    assert b"deleted" in str(e).encode(), e
p.rset()
assert p.stat()[0] == 3
p.dele(1); p.dele(2)
if sys.argv[2] == "drop":
    p.sock.close()
else:
    p.quit()
"#;
    let port = server.pop3_port.to_string();
    python(script, &[&port, "drop"]);
    // The dropped session's lock is released and nothing was deleted.
    wait_for("the dropped session to end", || {
        let mut pop = Pop3::connect(server.pop3_port);
        pop.cmd("USER bob");
        pop.cmd("PASS secret").starts_with("+OK")
    });
    assert_eq!(maildir_messages(&inbox).len(), 3);
    python(script, &[&port, "quit"]);
    assert_eq!(maildir_messages(&inbox).len(), 1);
    let left = Pop3::login(server.pop3_port, "bob", "secret").uidl();
    assert_eq!(
        left,
        vec![format!("1 {}", uids_before[2].split(' ').nth(1).unwrap())]
    );

    // UIDs survive a restart.
    server.kill();
    server.spawn();
    assert_eq!(Pop3::login(server.pop3_port, "bob", "secret").uidl(), left);
}

#[test]
fn poplib_apop_one_session_per_mailbox_and_new_mail_in_the_next_session() {
    let server = pop3_server("<enableAPOP>true</enableAPOP>", "carol", "apop secret");
    let inbox = server.path("var/mail/inboxes/carol");
    send(
        &server,
        "carol@localhost",
        &[b"Subject: 1\r\n\r\none\r\n"],
        &inbox,
        1,
    );
    let stored = std::fs::read_to_string(server.path("var/users/carol.user")).unwrap();
    assert!(stored.contains("apop_secret"), "{stored}");

    let script = r#"
import os, poplib, smtplib, sys, time
port, smtp_port, new_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
p = poplib.POP3("127.0.0.1", port)
banner = p.getwelcome()
assert b"<" in banner and b"=" not in banner.split(b"<")[1], banner
p.apop("carol", "apop secret")
assert p.stat()[0] == 1
# A second session on the same mailbox.
q = poplib.POP3("127.0.0.1", port)
q.user("carol")
try:
    q.pass_("apop secret")
    raise SystemExit("second session opened the mailbox")
except poplib.error_proto as e:
    assert str(e).startswith("b'-ERR [IN-USE]"), e
q.quit()
# A wrong APOP digest.
w = poplib.POP3("127.0.0.1", port)
try:
    w.apop("carol", "wrong")
    raise SystemExit("wrong APOP accepted")
except poplib.error_proto as e:
    assert str(e).startswith("b'-ERR [AUTH]"), e
# Mail that arrives during the session shows in the next one.
with smtplib.SMTP("127.0.0.1", smtp_port) as s:
    s.sendmail("x@example.net", ["carol@localhost"], b"Subject: 2\r\n\r\ntwo\r\n")
while len(os.listdir(new_dir)) < 2:
    time.sleep(0.05)
assert p.stat()[0] == 1
p.quit()
r = poplib.POP3("127.0.0.1", port)
r.apop("carol", "apop secret")
assert r.stat()[0] == 2
assert r.retr(2)[1][-1] == b"two"
r.quit()
"#;
    python(
        script,
        &[
            &server.pop3_port.to_string(),
            &server.smtp_port.to_string(),
            inbox.join("new").to_str().unwrap(),
        ],
    );
}

#[test]
fn bad_input_gets_err_and_the_session_goes_on() {
    let server = pop3_server("", "dave", "pw");
    let inbox = server.path("var/mail/inboxes/dave");
    send(
        &server,
        "dave@localhost",
        &[b"Subject: x\r\n\r\nx\r\n"],
        &inbox,
        1,
    );
    let mut pop = Pop3::connect(server.pop3_port);
    assert!(
        !pop.banner.contains('<'),
        "no APOP timestamp when APOP is off"
    );
    assert_eq!(
        pop.cmd("STAT"),
        "-ERR log in first (USER and PASS, APOP or AUTH)"
    );
    assert!(pop.cmd("CAPA").starts_with("+OK"));
    let capa = pop.multiline();
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
    ] {
        assert!(capa.iter().any(|c| c == cap), "{capa:?}");
    }
    assert!(capa.iter().any(|c| c == "SASL PLAIN"), "{capa:?}");
    // AUTH PLAIN with the continuation form: base64("\0dave\0pw").
    assert_eq!(pop.cmd("AUTH PLAIN"), "+ ");
    assert!(pop.cmd("AGRhdmUAcHc=").starts_with("+OK"));
    assert_eq!(pop.cmd("FROB"), "-ERR unknown command FROB");
    assert_eq!(pop.cmd("RETR"), "-ERR syntax: RETR message-number");
    assert_eq!(pop.cmd("RETR abc"), "-ERR syntax: RETR message-number");
    assert_eq!(
        pop.cmd("RETR 2"),
        "-ERR no message 2; the maildrop has messages 1 to 1"
    );
    assert_eq!(pop.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(pop.cmd("TOP 1 1"), "-ERR message 1 is deleted");
    // A 10 MB line.
    let long = vec![b'A'; 10 * 1024 * 1024];
    pop.send(&long);
    assert_eq!(pop.cmd(""), "-ERR line too long");
    let size = crlf(&maildir_messages(&inbox)[0]).len();
    assert_eq!(
        pop.cmd("RSET"),
        format!("+OK maildrop has 1 messages ({size} octets)")
    );
    // Pipelined: all answers arrive, in order.
    pop.send(b"NOOP\r\nSTAT\r\nLIST 1\r\n");
    assert_eq!(pop.line(), "+OK");
    assert!(pop.line().starts_with("+OK 1 "));
    assert!(pop.line().starts_with("+OK 1 "));
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    assert_eq!(maildir_messages(&inbox).len(), 1);
}

#[test]
fn failed_logins_are_delayed_without_holding_up_others_and_aliases_are_not_logins() {
    // Every failure throttled at once (the default lets 5 through first).
    let server = Server::start_setup(&Setup {
        pop3_handler: Some(""),
        extra: r#"<authThrottle failures="0" delay="1500" maxDelay="1500"/>"#,
        ..Setup::default()
    });
    server.add_user("erin", "right");
    server.add_user("frank", "frank pw");
    // frank is an alias of erin: mail to frank lands in erin's mailbox.
    let frank = server.path("var/users/frank.user");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&frank).unwrap()).unwrap();
    record["alias"] = "erin".into();
    record["alias_enabled"] = true.into();
    std::fs::write(&frank, record.to_string()).unwrap();
    let erin = server.path("var/mail/inboxes/erin");
    send(
        &server,
        "frank@localhost",
        &[b"Subject: x\r\n\r\nx\r\n"],
        &erin,
        1,
    );

    let port = server.pop3_port;
    let failing = std::thread::spawn(move || {
        let mut pop = Pop3::connect(port);
        pop.cmd("USER erin");
        let start = Instant::now();
        let reply = pop.cmd("PASS wrong");
        (reply, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    // The alias logs into its own (empty) mailbox, not erin's.
    let mut own = Pop3::login(port, "frank", "frank pw");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "held up by a failed login"
    );
    assert_eq!(own.cmd("STAT"), "+OK 0 0");
    own.cmd("QUIT");
    let (reply, waited) = failing.join().unwrap();
    assert_eq!(reply, "-ERR [AUTH] invalid user name or password");
    assert!(
        waited >= Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    assert!(
        server.log().contains("POP3 login failed"),
        "{}",
        server.log()
    );
    // A user that does not exist gets the same answer.
    let mut pop = Pop3::connect(port);
    pop.cmd("USER nobody");
    assert_eq!(
        pop.cmd("PASS x"),
        "-ERR [AUTH] invalid user name or password"
    );
}

#[test]
fn shutdown_says_err_and_deletes_nothing() {
    let mut server = pop3_server("", "gina", "pw");
    let inbox = server.path("var/mail/inboxes/gina");
    send(
        &server,
        "gina@localhost",
        &[b"Subject: x\r\n\r\nx\r\n"],
        &inbox,
        1,
    );
    let mut pop = Pop3::login(server.pop3_port, "gina", "pw");
    assert_eq!(pop.cmd("DELE 1"), "+OK message 1 deleted");
    assert!(server.terminate().success());
    assert_eq!(
        pop.line(),
        "-ERR [SYS/TEMP] server shutting down; nothing was deleted"
    );
    assert_eq!(maildir_messages(&inbox).len(), 1);
}

/// Runs a Debian client; fails with its output when it fails.
fn run_client(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the client is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// Files in a directory.
fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

#[test]
#[ignore = "needs fetchmail from Debian; run by .ci/run"]
fn fetchmail_with_uidl_and_keep_fetches_each_mail_once() {
    let server = pop3_server("", "hank", "fetch me");
    let inbox = server.path("var/mail/inboxes/hank");
    let sent: [&[u8]; 2] = [
        b"Subject: f1\r\n\r\nfirst\r\n.dot line\r\n",
        b"Subject: f2\r\n\r\nsecond\r\n",
    ];
    send(&server, "hank@localhost", &sent, &inbox, 2);
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let rc = work.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\n\
             poll 127.0.0.1 service {port} protocol pop3 uidl auth password:\n\
             \tuser hank there with password \"fetch me\" is hank here\n\
             \tkeep sslproto '' no sslcertck\n\
             \tmda \"cat > {out}/msg.$$\"\n",
            port = server.pop3_port,
            out = out_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fetch = || {
        let mut cmd = Command::new("fetchmail");
        cmd.arg("-f")
            .arg(&rc)
            .args(["--nodetach", "-v"])
            .env("FETCHMAILHOME", work.path())
            .env("HOME", work.path());
        let out = cmd
            .output()
            .expect("fetchmail is installed (.ci/run installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // fetchmail exits 1 when there was no new mail.
        (out.status.code(), text)
    };
    let (code, text) = fetch();
    assert_eq!(code, Some(0), "{text}");
    let fetched = files_in(&out_dir);
    assert_eq!(fetched.len(), 2, "{text}");
    for message in sent {
        // fetchmail hands the MDA LF line ends and adds its own Received: header.
        let lf: Vec<u8> = String::from_utf8_lossy(message)
            .replace("\r\n", "\n")
            .into_bytes();
        assert!(fetched.iter().any(|f| f.ends_with(&lf)), "{text}");
    }
    // Kept on the server, and a second run fetches nothing new.
    assert_eq!(maildir_messages(&inbox).len(), 2);
    let (code, text) = fetch();
    assert_eq!(code, Some(1), "no new mail expected: {text}");
    assert_eq!(files_in(&out_dir).len(), 2, "{text}");
}

#[test]
#[ignore = "needs mpop from Debian; run by .ci/run"]
fn mpop_retrieves_and_deletes() {
    let server = pop3_server("", "ivan", "mpop pw");
    let inbox = server.path("var/mail/inboxes/ivan");
    let sent: [&[u8]; 2] = [
        b"Subject: m1\r\n\r\nfirst\r\n.dot line\r\n",
        b"Subject: m2\r\n\r\nsecond\r\n",
    ];
    send(&server, "ivan@localhost", &sent, &inbox, 2);
    let work = tempfile::tempdir().unwrap();
    let maildir = work.path().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let rc = work.path().join("mpoprc");
    std::fs::write(
        &rc,
        format!(
            "account test\nhost 127.0.0.1\nport {port}\ntls off\nauth user\nuser ivan\n\
             password mpop pw\ndelivery maildir {dir}\nkeep off\nuidls_file {work}/uidls\n",
            port = server.pop3_port,
            dir = maildir.display(),
            work = work.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = run_client(
        Command::new("mpop")
            .arg("--file")
            .arg(&rc)
            .arg("--quiet")
            .arg("test"),
    );
    let fetched = files_in(&maildir.join("new"));
    assert_eq!(fetched.len(), 2, "{text}");
    for message in sent {
        // mpop stores LF line ends in the Maildir, after its own Received: header.
        let lf: Vec<u8> = String::from_utf8_lossy(message)
            .replace("\r\n", "\n")
            .into_bytes();
        assert!(
            fetched.iter().any(|f| f.ends_with(&lf)),
            "{text}{:?}",
            fetched
                .iter()
                .map(|f| String::from_utf8_lossy(f))
                .collect::<Vec<_>>()
        );
    }
    // Deleted on the server after the retrieval.
    assert_eq!(maildir_messages(&inbox).len(), 0);
}
