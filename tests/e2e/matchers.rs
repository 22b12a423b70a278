//! Issue 15's matchers in the real binary: the message and attachment matchers on mail sent
//! with Python's smtplib, James 3's composite matchers routing mail (and their mistakes
//! reported by `check-config` at file:line), and the DNS matchers against a scripted DNS
//! server (dnslib).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::delivery::envelopes;
use crate::harness::{maildir_messages, python, repository_count, wait_for, Server, Setup, BIN};

/// Sends, with smtplib, each (subject, recipient, kind) mail: `kind` picks the content
/// (`plain`, `exe`, `zip-exe`, `zip-clean`, `score:N`, `habeas`, `big`).
const SEND: &str = r#"
import io, smtplib, sys, zipfile
from email.message import EmailMessage
port = int(sys.argv[1])
HABEAS = [
    ("X-Habeas-SWE-1", "winter into spring"),
    ("X-Habeas-SWE-2", "brightly anticipated"),
    ("X-Habeas-SWE-3", "like Habeas SWE (tm)"),
    ("X-Habeas-SWE-4", "Copyright 2002 Habeas (tm)"),
    ("X-Habeas-SWE-5", "Sender Warranted Email (SWE) (tm). The sender of this"),
    ("X-Habeas-SWE-6", "email in exchange for a license for this Habeas"),
    ("X-Habeas-SWE-7", "warrant mark warrants that this is a Habeas Compliant"),
    ("X-Habeas-SWE-8", "Message (HCM) and not spam. Please report use of this"),
    ("X-Habeas-SWE-9", "mark in spam to <http://www.habeas.com/report/>."),
]
def zipped(*names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n in names:
            z.writestr(n, b"MZ" + b"x" * 5000)
    return buf.getvalue()
with smtplib.SMTP("127.0.0.1", port) as s:
    for spec in sys.argv[2:]:
        subject, rcpt, kind = spec.split("|")
        m = EmailMessage()
        m["From"] = "sender@example.net"
        m["To"] = rcpt
        m["Subject"] = subject
        m.set_content("hello\n")
        if kind == "exe":
            m.add_attachment(b"MZ\x90\x00", maintype="application", subtype="octet-stream", filename="Setup.EXE")
        elif kind == "zip-exe":
            m.add_attachment(zipped("readme.txt", "bin/tool.exe"), maintype="application", subtype="zip", filename="tools.zip")
        elif kind == "zip-clean":
            m.add_attachment(zipped("a.txt", "b.pdf"), maintype="application", subtype="zip", filename="docs.zip")
        elif kind.startswith("score:"):
            m["X-Spam-Score"] = kind[6:]
        elif kind == "habeas":
            for name, value in HABEAS:
                m[name] = value
        elif kind == "big":
            m.set_content("x" * 2000 + "\n")
        s.send_message(m, from_addr="sender@example.net", to_addrs=[rcpt])
"#;

/// Sends mails described as `subject|recipient|kind`.
fn send(server: &Server, specs: &[&str]) {
    let mut args = vec![server.smtp_port.to_string()];
    args.extend(specs.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(SEND, &args);
}

/// The subjects of the mails in a file repository (the message starts each `.mail` file),
/// sorted.
fn subjects(dir: &std::path::Path) -> Vec<String> {
    let mut subjects: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "mail"))
                .filter_map(|p| std::fs::read(p).ok())
                .filter_map(|bytes| subject_of(&bytes))
                .collect()
        })
        .unwrap_or_default();
    subjects.sort();
    subjects
}

fn subject_of(message: &[u8]) -> Option<String> {
    String::from_utf8_lossy(message)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
}

fn repo(name: &str) -> String {
    format!(
        r#"<mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/{name}/</repositoryPath></mailet>"#
    )
}

#[test]
fn message_and_attachment_matchers_route_mail_sent_over_smtp() {
    // The pattern file is named relative to the server home (which is a new directory in the
    // temporary directory): `../<this dir>/patterns` finds it only from there.
    let patterns = tempfile::tempdir().unwrap();
    std::fs::write(
        patterns.path().join("patterns"),
        "Subject:.*[Vv]iagra.*\nX-Mailer:Avalanche\n",
    )
    .unwrap();
    let relative = format!(
        "../{}/patterns",
        patterns.path().file_name().unwrap().to_str().unwrap()
    );
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="AttachmentFileNameIs=-z *.exe *.scr" class="ToProcessor"><processor>virus</processor></mailet>
      <mailet match="FileRegexMatcher={relative}" class="ToProcessor"><processor>spam</processor></mailet>
      <mailet match="CompareNumericHeaderValue=X-Spam-Score &gt;= 5" class="ToProcessor"><processor>spam</processor></mailet>
      <mailet match="HasHabeasWarrantMark" class="SetMimeHeader"><name>X-Warranted</name><value>yes</value></mailet>
      <mailet match="HasAttachment" class="SetMimeHeader"><name>X-Attached</name><value>yes</value></mailet>
      <mailet match="RecipientIsRegex=carol@.*" class="AddHabeasWarrantMark"/>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <!-- Dave's only: alice's inbox may pass 1 KiB too, depending on which of her mails the
           spool delivers first. -->
      <matcher name="daveOverQuota" match="And">
        <matcher match="RecipientIs=dave@localhost"/>
        <matcher match="RecipientIsOverFixedQuota=1k"/>
      </matcher>
      <mailet match="daveOverQuota" class="ToProcessor"><processor>overquota</processor></mailet>
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="virus">{virus}</processor>
    <processor name="spam">{spam}</processor>
    <processor name="overquota">{overquota}</processor>
    <processor name="error">{error}</processor>
"#,
        virus = repo("virus"),
        spam = repo("spam"),
        overquota = repo("overquota"),
        error = repo("error"),
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        ..Setup::default()
    });
    for user in ["alice", "bob", "carol", "dave"] {
        server.add_user(user, "pw");
    }
    send(
        &server,
        &[
            "exe|alice@localhost|exe",
            "zipped exe|alice@localhost|zip-exe",
            "zipped docs|alice@localhost|zip-clean",
            "cheap viagra|alice@localhost|plain",
            "score 7|alice@localhost|score:7.5",
            "score 2|alice@localhost|score:2",
            "warranted|bob@localhost|habeas",
            "to carol|carol@localhost|plain",
        ],
    );
    let inbox = |user: &str| server.path(&format!("var/mail/inboxes/{user}"));
    wait_for("alice's two", || {
        maildir_messages(&inbox("alice")).len() == 2
    });
    wait_for("bob's and carol's", || {
        maildir_messages(&inbox("bob")).len() == 1 && maildir_messages(&inbox("carol")).len() == 1
    });
    wait_for("virus and spam", || {
        repository_count(&server.path("var/mail/virus")) == 2
            && repository_count(&server.path("var/mail/spam")) == 2
    });
    assert_eq!(
        subjects(&server.path("var/mail/virus")),
        vec!["exe", "zipped exe"]
    );
    assert_eq!(
        subjects(&server.path("var/mail/spam")),
        vec!["cheap viagra", "score 7"]
    );
    let alice: Vec<String> = maildir_messages(&inbox("alice"))
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let docs = alice
        .iter()
        .find(|m| m.contains("Subject: zipped docs"))
        .unwrap();
    assert!(docs.contains("X-Attached: yes"), "{docs}");
    let score = alice
        .iter()
        .find(|m| m.contains("Subject: score 2"))
        .unwrap();
    assert!(!score.contains("X-Attached"), "{score}");
    let bob = String::from_utf8(maildir_messages(&inbox("bob")).remove(0)).unwrap();
    assert!(bob.contains("X-Warranted: yes"), "{bob}");
    // Carol's mail got the mark (after the matcher looked), so it is not X-Warranted.
    let carol = String::from_utf8(maildir_messages(&inbox("carol")).remove(0)).unwrap();
    assert!(carol.contains("X-Habeas-SWE-9: mark in spam to <http://www.habeas.com/report/>."));
    assert!(!carol.contains("X-Warranted"), "{carol}");

    // Quota: dave's inbox is empty, so a first big mail gets in; then it holds over 1500 octets
    // (alice's two mails together stay under, in whatever order they arrive) and
    // the next one is held back.
    send(&server, &["first big|dave@localhost|big"]);
    wait_for("dave's first", || {
        maildir_messages(&inbox("dave")).len() == 1
    });
    send(&server, &["second big|dave@localhost|big"]);
    wait_for("over quota", || {
        repository_count(&server.path("var/mail/overquota")) == 1
    });
    assert_eq!(
        subjects(&server.path("var/mail/overquota")),
        vec!["second big"]
    );
    assert_eq!(maildir_messages(&inbox("dave")).len(), 1);
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
}

const COMPOSITE_TREE: &str = r#"
    <processor name="root">
      <matcher name="bigOrFlagged" match="Or">
        <matcher match="SizeGreaterThan=1k"/>
        <matcher match="HasHeader=X-Flag"/>
      </matcher>
      <matcher name="onlyOneMark" match="Xor">
        <matcher match="HasHeader=X-A"/>
        <matcher match="HasHeader=X-B"/>
      </matcher>
      <matcher name="lists" match="Or">
        <matcher match="RecipientIsRegex=list-[a-z]+@localhost"/>
        <matcher match="UserIs=abuse"/>
      </matcher>
      <mailet match="lists" class="ToRepository"><repositoryPath>file://var/mail/lists/</repositoryPath></mailet>
      <mailet match="bigOrFlagged" class="ToProcessor"><processor>held</processor></mailet>
      <mailet match="onlyOneMark" class="SetMimeHeader"><name>X-One-Mark</name><value>yes</value></mailet>
      <mailet match="localButNotBob" class="LocalDelivery"/>
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/rest/</repositoryPath></mailet>
    </processor>
    <processor name="held">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/held/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

/// Declared at the top of `<spoolmanager>`, so every processor may use it.
const SHARED_MATCHER: &str = r#"
      <matcher name="localButNotBob" match="And">
        <matcher match="RecipientIsLocal"/>
        <matcher match="Not"><matcher match="UserIs=bob"/></matcher>
      </matcher>
"#;

#[test]
fn composite_matchers_route_mail_and_their_mistakes_are_reported_at_their_lines() {
    let tree = format!("{SHARED_MATCHER}{COMPOSITE_TREE}");
    let server = Server::start_setup(&Setup {
        tree: &tree,
        ..Setup::default()
    });
    for user in ["alice", "bob"] {
        server.add_user(user, "pw");
    }
    let mut smtp = server.smtp();
    smtp.send_mail(
        "s@example.net",
        &["alice@localhost", "bob@localhost"],
        "Subject: small\r\nX-A: 1\r\n\r\nhi\r\n",
    );
    smtp.send_mail(
        "s@example.net",
        &["alice@localhost"],
        "Subject: both marks\r\nX-A: 1\r\nX-B: 1\r\n\r\nhi\r\n",
    );
    smtp.send_mail(
        "s@example.net",
        &["alice@localhost"],
        "Subject: flagged\r\nX-Flag: 1\r\n\r\nhi\r\n",
    );
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(3000));
    smtp.send_mail("s@example.net", &["alice@localhost"], &big);
    let alice = server.path("var/mail/inboxes/alice");
    wait_for("alice's two", || maildir_messages(&alice).len() == 2);
    wait_for("held and rest", || {
        repository_count(&server.path("var/mail/held")) == 2
            && repository_count(&server.path("var/mail/rest")) == 1
    });
    // Addresses only a declaration routes (no user behind them) pass the RCPT check; others
    // do not.
    smtp.send_mail(
        "s@example.net",
        &["list-rust@localhost", "abuse@localhost"],
        "Subject: to lists\r\n\r\nhi\r\n",
    );
    wait_for("the lists' mail", || {
        repository_count(&server.path("var/mail/lists")) == 1
    });
    let lists = envelopes(&server.path("var/mail/lists"));
    assert_eq!(
        lists[0]["recipients"],
        serde_json::json!(["list-rust@localhost", "abuse@localhost"])
    );
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    let reply = smtp.cmd("RCPT TO:<list-RUST1@localhost>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    let mut held = subjects(&server.path("var/mail/held"));
    held.sort();
    assert_eq!(held, vec!["big", "flagged"]);
    // Bob is local but excluded by Not: his copy of "small" went on to the rest.
    let rest = envelopes(&server.path("var/mail/rest"));
    assert_eq!(rest[0]["recipients"], serde_json::json!(["bob@localhost"]));
    let inbox: Vec<String> = maildir_messages(&alice)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let small = inbox.iter().find(|m| m.contains("Subject: small")).unwrap();
    assert!(small.contains("X-One-Mark: yes"), "{small}");
    let both = inbox
        .iter()
        .find(|m| m.contains("Subject: both marks"))
        .unwrap();
    assert!(!both.contains("X-One-Mark"), "{both}");
    drop(server);

    // Mistakes stop check-config with the file and line of the <matcher> at fault (given as
    // its line within the declaration).
    let mistakes = [
        (
            "<matcher name=\"loop\" match=\"Not\">\n<matcher match=\"loop\"/>\n</matcher>",
            "refer to each other in a cycle: loop -> loop",
            1,
        ),
        (
            "<matcher name=\"x\" match=\"Or\">\n<matcher match=\"NoSuchMatcher=1\"/>\n</matcher>",
            "unknown matcher \"NoSuchMatcher\"",
            1,
        ),
        (
            "<matcher name=\"x\" match=\"Not\">\n</matcher>",
            "Not needs nested <matcher> elements to combine",
            0,
        ),
        (
            "<matcher name=\"RecipientIsLocal\" match=\"Or\">\n<matcher match=\"All\"/>\n</matcher>",
            "RecipientIsLocal is the name of a matcher",
            0,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (declaration, expected, offset) in mistakes {
        let tree = format!(
            "<processor name=\"root\">\n<mailet match=\"All\" class=\"Null\"/>\n{declaration}\n</processor>\n\
             <processor name=\"error\"><mailet match=\"All\" class=\"Null\"/></processor>"
        );
        let xml = crate::harness::config_xml(crate::harness::free_port(), &tree, "");
        let path = dir.path().join("config.xml");
        std::fs::write(&path, &xml).unwrap();
        let first_line = declaration.lines().next().unwrap();
        let line = 1 + offset + xml.lines().position(|l| l == first_line).unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{all}");
        let at = format!("config.xml:{line}: ");
        assert!(
            all.lines().any(|l| l.contains(&at) && l.contains(expected)),
            "{expected} at {at}: {all}"
        );
    }
}

/// A DNS server for a test zone, scripted with dnslib: names → (type, value) records; names
/// under `servfail.test` answer SERVFAIL, unknown names NXDOMAIN. Stopped when dropped.
struct DnsServer {
    child: Child,
    port: u16,
}

const DNS_SERVER: &str = r#"
import json, sys
from dnslib import RR, QTYPE, RCODE, A, MX
from dnslib.server import DNSServer, BaseResolver
zone = json.loads(sys.argv[1])
class Zone(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower()
        if name.endswith("servfail.test."):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        records = zone.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for kind, value in records:
            if QTYPE[request.q.qtype] != kind:
                continue
            if kind == "A":
                reply.add_answer(RR(name, QTYPE.A, rdata=A(value), ttl=1))
            elif kind == "MX":
                reply.add_answer(RR(name, QTYPE.MX, rdata=MX(value + ".", 10), ttl=1))
        return reply
server = DNSServer(Zone(), port=0, address="127.0.0.1")
server.start_thread()
print(server.server.server_address[1], flush=True)
sys.stdin.read()
"#;

impl DnsServer {
    fn start(zone: serde_json::Value) -> DnsServer {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(DNS_SERVER)
            .arg(zone.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the dnslib server did not start (is dnslib installed?): {line:?}")
        });
        DnsServer { child, port }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs python3-dnslib; run by .ci/run"]
fn dns_matchers_against_a_scripted_dns_server() {
    let dns = DnsServer::start(serde_json::json!({
        // The SMTP client is 127.0.0.1: listed in one blacklist, not in another.
        "1.0.0.127.listed.test.": [["A", "127.0.0.2"]],
        "good.test.": [["MX", "mx.good.test"]],
        "mx.good.test.": [["A", "192.0.2.25"]],
        "parked.test.": [["MX", "mx.parked.test"]],
        "mx.parked.test.": [["A", "198.51.100.7"]],
        "a-only.test.": [["A", "192.0.2.80"]],
    }));
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="SubjectStartsWith=listed" class="ToProcessor"><processor>listed</processor></mailet>
      <mailet match="SubjectStartsWith=clean" class="ToProcessor"><processor>clean</processor></mailet>
      <mailet match="SubjectStartsWith=broken" class="ToProcessor"><processor>broken</processor></mailet>
      <mailet match="All" class="ToProcessor"><processor>fake</processor></mailet>
    </processor>
    <processor name="listed">
      <mailet match="InSpammerBlacklist=listed.test." class="ToProcessor"><processor>spam</processor></mailet>
      {ham}
    </processor>
    <processor name="clean">
      <mailet match="InSpammerBlacklist=clean.test." class="ToProcessor"><processor>spam</processor></mailet>
      {ham}
    </processor>
    <processor name="broken">
      <mailet match="InSpammerBlacklist=servfail.test." class="ToProcessor"><processor>spam</processor></mailet>
      {ham}
    </processor>
    <processor name="fake">
      <mailet match="SenderInFakeDomain=198.51.100.0/24" class="ToProcessor"><processor>spam</processor></mailet>
      {ham}
    </processor>
    <processor name="spam">{spam}</processor>
    <processor name="error">{error}</processor>
"#,
        ham = repo("ham"),
        spam = repo("spam"),
        error = repo("error"),
    );
    let extra = format!(
        "<dnsserver><servers><server>127.0.0.1:{}</server></servers><autodiscover>false</autodiscover></dnsserver>",
        dns.port
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        extra: &extra,
        ..Setup::default()
    });
    let mut smtp = server.smtp();
    let mail = |smtp: &mut crate::harness::Smtp, from: &str, subject: &str| {
        smtp.send_mail(
            from,
            &["postmaster@localhost"],
            &format!("Subject: {subject}\r\n\r\nhi\r\n"),
        );
    };
    mail(&mut smtp, "a@good.test", "listed");
    mail(&mut smtp, "a@good.test", "clean");
    mail(&mut smtp, "a@good.test", "fake good");
    mail(&mut smtp, "a@a-only.test", "fake a-only");
    mail(&mut smtp, "a@parked.test", "fake parked");
    mail(&mut smtp, "a@nowhere.test", "fake nowhere");
    mail(&mut smtp, "a@good.test", "broken");
    let (spam, ham) = (server.path("var/mail/spam"), server.path("var/mail/ham"));
    wait_for("six judged", || {
        repository_count(&spam) + repository_count(&ham) == 6
    });
    assert_eq!(
        subjects(&spam),
        vec!["fake nowhere", "fake parked", "listed"]
    );
    assert_eq!(subjects(&ham), vec!["clean", "fake a-only", "fake good"]);
    // SERVFAIL is no answer: the mail waits in the spool, and is not judged.
    wait_for("the failed lookup logged", || {
        server
            .log()
            .contains("matcher InSpammerBlacklist=servfail.test./ToProcessor failed")
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!server.spool_empty());
    assert_eq!(repository_count(&spam) + repository_count(&ham), 6);
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
}

/// The peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 22 MiB message whose 16 MiB zip attachment names an .exe as its last entry: the
/// attachment matchers walk it from the spool in bounded memory (the server's peak grows by
/// less than the message; reading it whole, and the zip beside it, would take 38 MiB).
#[test]
fn attachment_matchers_walk_a_large_message_in_bounded_memory() {
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="HasAttachment" class="SetMimeHeader"><name>X-Attached</name><value>yes</value></mailet>
      <mailet match="AttachmentFileNameIs=-z *.exe" class="ToProcessor"><processor>virus</processor></mailet>
      {clean}
    </processor>
    <processor name="virus">{virus}</processor>
    <processor name="error">{error}</processor>
"#,
        clean = repo("clean"),
        virus = repo("virus"),
        error = repo("error"),
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        smtp_handler: "<maxmessagesize>0</maxmessagesize>",
        ..Setup::default()
    });
    let before = peak_rss_kib(server.pid());
    let started = std::time::Instant::now();
    python(
        r#"
import io, os, smtplib, sys, zipfile
from email.message import EmailMessage
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    for i in range(2):
        z.writestr("data%d.bin" % i, os.urandom(8 * 1024 * 1024))
    z.writestr("payload/Setup.EXE", b"MZ")
m = EmailMessage()
m["From"] = "s@example.net"
m["To"] = "postmaster@localhost"
m["Subject"] = "large"
m.set_content("see attached\n")
m.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="big.zip")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.send_message(m)
"#,
        &[&server.smtp_port.to_string()],
    );
    let sent = started.elapsed();
    wait_for("the large mail judged", || {
        repository_count(&server.path("var/mail/virus")) == 1
    });
    let elapsed = started.elapsed();
    let grown = peak_rss_kib(server.pid()).saturating_sub(before);
    eprintln!(
        "22 MiB message with a 16 MiB zip: sent in {sent:?}, judged {:?} later; server peak \
         RSS grew by {grown} KiB (from {before} KiB)",
        elapsed - sent
    );
    assert!(grown < 20 * 1024, "peak RSS grew by {grown} KiB");
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
}
