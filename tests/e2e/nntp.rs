//! NNTP end to end: the real binary read and fed with Python's nntplib through every command,
//! raw clients for bad input, article numbers across a restart, a kill -9 during posting,
//! AUTHINFO against the users repository, and the console's group commands. (tin and slrn run
//! in `.ci/run`.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{console, free_port, wait_for, Server, Setup, ADMIN};

pub(crate) const GROUPS: &str = "<nntp-repository><articleIDDomainSuffix>news.example.test</articleIDDomainSuffix>\
    <newsgroups><newsgroup>comp.test</newsgroup><newsgroup description=\"Alternative tests\">alt.test</newsgroup></newsgroups></nntp-repository>";

fn news_server(handler: &str) -> Server {
    Server::start_setup(&Setup {
        nntp_handler: Some(handler),
        remote_manager_handler: Some(ADMIN),
        extra: GROUPS,
        ..Setup::default()
    })
}

fn python(script: &str, port: u16) -> String {
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore::DeprecationWarning")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every reader and transit command through Python's nntplib (RFC 3977 client).
const NNTPLIB: &str = r#"
import io, sys, nntplib, datetime
port = int(sys.argv[1])
s = nntplib.NNTP("127.0.0.1", port, readermode=True)
assert s.getwelcome().startswith("200 "), s.getwelcome()
caps = s.getcapabilities()
for c in ["VERSION", "READER", "POST", "IHAVE", "OVER", "HDR", "LIST", "NEWNEWS", "AUTHINFO"]:
    assert c in caps, (c, caps)
assert caps["LIST"] == ["ACTIVE", "ACTIVE.TIMES", "DISTRIB.PATS", "HEADERS", "NEWSGROUPS", "OVERVIEW.FMT"], caps
def post(groups, subject, body, extra=b""):
    art = (b"From: Alice <alice@example.org>\r\nNewsgroups: " + groups.encode() + b"\r\nSubject: "
           + subject.encode() + b"\r\n" + extra + b"\r\n" + body)
    return s.post(io.BytesIO(art))
assert post("comp.test", "first", b"line one\r\n.starts with a dot\r\n").startswith("240")
assert post("comp.test,alt.test", "cross", b"both\r\n").startswith("240")
assert post("comp.test", "third", b"three\r\n", b"Message-ID: <third@example.org>\r\nReferences: <x@y>\r\n").startswith("240")
try:
    post("comp.test", "again", b"dup\r\n", b"Message-ID: <third@example.org>\r\n"); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("441"), e
try:
    post("no.such.group", "x", b"x\r\n"); assert False
except nntplib.NNTPTemporaryError as e:
    assert "no such newsgroup" in str(e), e
try:
    s.post(io.BytesIO(b"Newsgroups: comp.test\r\nSubject: no from\r\n\r\nx\r\n")); assert False
except nntplib.NNTPTemporaryError as e:
    assert "missing From" in str(e), e
# IHAVE: a new article is transferred, a known one is refused at once.
ihave = b"From: feed@example.net\r\nNewsgroups: alt.test\r\nSubject: fed\r\nMessage-ID: <fed@example.net>\r\nPath: upstream\r\nDate: Tue, 01 Jul 2025 12:00:00 +0000\r\n\r\nfed\r\n"
assert s.ihave("<fed@example.net>", io.BytesIO(ihave)).startswith("235")
try:
    s.ihave("<fed@example.net>", io.BytesIO(ihave)); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("435"), e

resp, groups = s.list()
active = {g.group: g for g in groups}
assert active["comp.test"].last == "3" and active["comp.test"].first == "1" and active["comp.test"].flag == "y", groups
assert active["alt.test"].last == "2", groups
resp, groups = s.list("alt.*")
assert [g.group for g in groups] == ["alt.test"], groups
resp, lines = s._longcmdstring("LIST ACTIVE.TIMES")
assert lines[0].startswith("alt.test ") and lines[0].endswith(" news@news.example.test"), lines
resp, lines = s._longcmdstring("LIST DISTRIB.PATS")
assert resp.startswith("215") and lines == [], (resp, lines)
resp, lines = s._longcmdstring("LIST HEADERS")
assert lines == [":", ":bytes", ":lines"], lines
resp, desc = s.descriptions("comp.*")
assert list(desc) == ["comp.test"], desc
assert s.description("comp.test") == "(no description)", s.description("comp.test")
assert s.description("alt.test") == "Alternative tests", s.description("alt.test")
fmt = s._getoverviewfmt()
assert fmt == ["subject", "from", "date", "message-id", "references", ":bytes", ":lines", "xref"], fmt

resp, count, first, last, name = s.group("comp.test")
assert (count, first, last, name) == (3, 1, 3, "comp.test"), (count, first, last, name)
resp, number, mid = s.stat()
assert number == 1, number
resp, number, mid2 = s.next()
assert number == 2, number
resp, number, mid3 = s.next()
assert (number, mid3) == (3, "<third@example.org>"), (number, mid3)
try:
    s.next(); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("421"), e
resp, number, _ = s.last()
assert number == 2
resp, info = s.article(1)
assert info.number == 1 and info.message_id == mid
assert b".starts with a dot" in info.lines, info.lines
assert any(l.startswith(b"Xref: ") and l.endswith(b"comp.test:1") for l in info.lines), info.lines
assert any(l.startswith(b"Path: ") for l in info.lines) and any(l.startswith(b"Date: ") for l in info.lines)
resp, info = s.head(mid3)
assert info.number == 0 and b"Subject: third" in info.lines and b"three" not in info.lines
resp, info = s.body(3)
assert info.lines == [b"three"], info.lines
resp, number, m = s.stat("<third@example.org>")
assert m == "<third@example.org>"
try:
    s.article("<nope@x>"); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("430"), e
try:
    s.article(99); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("423"), e

resp, overviews = s.over((1, 3))
assert [n for n, _ in overviews] == [1, 2, 3], overviews
n, ov = overviews[2]
assert ov["subject"] == "third" and ov["message-id"] == "<third@example.org>" and ov["references"] == "<x@y>", ov
assert int(ov[":lines"]) == 1 and int(ov[":bytes"]) > 100 and ov["xref"].endswith("comp.test:3"), ov
resp, overviews = s.xover(2, 3)
assert [n for n, _ in overviews] == [2, 3]
resp, overviews = s.over("<third@example.org>")
assert overviews[0][0] == 0
resp, lines = s._longcmdstring("HDR Subject 1-3")
assert resp.startswith("225") and lines == ["1 first", "2 cross", "3 third"], lines
resp, lines = s._longcmdstring("HDR :lines <third@example.org>")
assert lines == ["0 1"], lines
resp, headers = s.xhdr("newsgroups", "2-")
assert headers[0] == ("2", "comp.test,alt.test"), headers
resp, lines = s._longcmdstring("XPAT Subject 1- c* f*")
assert lines == ["1 first", "2 cross"], lines
resp, lines = s._longcmdstring("LISTGROUP comp.test 2-")
assert resp.startswith("211 3 1 3 comp.test") and lines == ["2", "3"], (resp, lines)
resp, lines = s._longcmdstring("LISTGROUP")
assert lines == ["1", "2", "3"], lines

resp, date = s.date()
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
assert abs((now - date).total_seconds()) < 60, (date, now)
since = datetime.datetime(2000, 1, 1)
resp, new = s.newgroups(since)
assert sorted(g.group for g in new) == ["alt.test", "comp.test"], new
resp, new = s.newgroups(datetime.datetime(2099, 1, 1))
assert new == []
resp, ids = s.newnews("alt.*", since)
assert sorted(ids) == sorted([mid2, "<fed@example.net>"]), ids
resp, text = s.help()
assert any("ARTICLE" in l for l in text), text
try:
    s._shortcmd("MODE STREAM"); assert False
except nntplib.NNTPPermanentError as e:
    assert str(e).startswith("501"), e
assert s.slave().startswith("202")
resp, lines = s._longcmdstring("LIST EXTENSIONS")
assert "OVER" in lines, lines
try:
    s._shortcmd("XYZZY"); assert False
except nntplib.NNTPPermanentError as e:
    assert str(e).startswith("500"), e
try:
    s.group("no.such"); assert False
except nntplib.NNTPTemporaryError as e:
    assert str(e).startswith("411"), e
print(s.quit())
"#;

#[test]
fn nntplib_through_every_command() {
    let server = news_server("");
    let out = python(NNTPLIB, server.nntp_port);
    assert!(out.starts_with("205"), "{out}\n{}", server.log());
    // The console sees the groups and their numbers.
    let said = console(&server, &["listgroups"]);
    assert!(said.contains("Existing newsgroups: 2\r\nalt.test articles=2 low=1 high=2\r\ncomp.test articles=3 low=1 high=3\r\n"), "{said}");
}

/// A raw NNTP client.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub(crate) fn connect(port: u16) -> (Client, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let banner = client.line();
        (client, banner)
    }

    /// The next line; empty when the server closed or reset the connection (a killed server
    /// must end a client loop, not panic its thread).
    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        if self.reader.read_line(&mut line).is_err() {
            line.clear();
        }
        line
    }

    /// Writes `bytes`; a server gone away shows in the next reply (empty).
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    pub(crate) fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    pub(crate) fn post(&mut self, id: &str, group: &str) -> String {
        let reply = self.cmd("POST");
        assert!(reply.starts_with("340"), "{reply}");
        self.send(
            format!("From: a@example.org\r\nNewsgroups: {group}\r\nSubject: s\r\nMessage-ID: {id}\r\n\r\nbody\r\n.\r\n")
                .as_bytes(),
        );
        self.line()
    }
}

#[test]
fn bad_input_gets_protocol_errors_and_stores_nothing() {
    let server = news_server("");
    let (mut c, banner) = Client::connect(server.nntp_port);
    assert!(banner.starts_with("200 "), "{banner}");
    let code = |reply: String| reply[..3].to_string();
    c.send(&vec![b'x'; 100_000]);
    assert_eq!(code(c.cmd("")), "501"); // the overlong line, once
    assert_eq!(code(c.cmd("GROUP comp.test")), "211");
    assert_eq!(code(c.cmd("FROB")), "500");
    assert_eq!(code(c.cmd("ARTICLE one")), "501");
    assert_eq!(code(c.cmd("LIST ACTIVE [comp")), "501");
    assert_eq!(code(c.cmd("NEWNEWS * 20251399 000000")), "501");
    assert_eq!(code(c.cmd("NEWGROUPS 20250101 25")), "501");
    c.send(b"GROUP comp\0test\r\n");
    assert_eq!(code(c.line()), "501");
    assert_eq!(code(c.cmd("AUTHINFO PASS x")), "482");
    // Garbage headers, NUL in the body, invalid UTF-8 headers: 441, nothing stored.
    for article in [
        &b"this is not a header\r\n\r\nbody\r\n"[..],
        b"From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\n\r\nnul \0 here\r\n",
        b"From: a@b\r\nNewsgroups: comp.test\r\nSubject: \xff\xfe\r\n\r\nbody\r\n",
    ] {
        assert_eq!(code(c.cmd("POST")), "340");
        c.send(article);
        c.send(b".\r\n");
        assert_eq!(code(c.line()), "441");
    }
    assert_eq!(code(c.cmd("GROUP comp.test")), "211");
    let reply = c.cmd("GROUP comp.test");
    assert!(reply.starts_with("211 0 "), "{reply}");
    assert_eq!(code(c.cmd("QUIT")), "205");
    // A POST that is never ended: the session is closed at shutdown with 400, nothing stored.
    let (mut c, _) = Client::connect(server.nntp_port);
    assert_eq!(code(c.cmd("POST")), "340");
    c.send(b"From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\n\r\nunfinished\r\n");
    let mut server = server;
    server.terminate();
    assert_eq!(code(c.line()), "400");
}

#[test]
fn a_post_that_never_ends_is_cut_off_by_the_idle_timeout() {
    // A second listener with a short <connectiontimeout> (ms).
    let port = free_port();
    let extra = format!(
        r#"<nntpserver><port>{port}</port><bind>127.0.0.1</bind><handler>
             <helloName>mail.example.test</helloName><connectiontimeout>1500</connectiontimeout>
           </handler></nntpserver>{GROUPS}"#
    );
    let _server = Server::start_setup(&Setup {
        nntp_handler: Some(""),
        extra: &extra,
        ..Setup::default()
    });
    wait_for("the second NNTP listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (mut c, banner) = Client::connect(port);
    assert!(banner.starts_with("200 "), "{banner}");
    assert!(c.cmd("POST").starts_with("340"));
    c.send(b"From: a@b\r\nNewsgroups: comp.test\r\nSubject: s\r\n\r\nnever ends\r\n");
    let started = std::time::Instant::now();
    let reply = c.line();
    let waited = started.elapsed();
    assert!(reply.starts_with("400 "), "{reply:?}");
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(c.line(), "", "closed after the 400");
    // Nothing stored; the server goes on.
    let (mut c, _) = Client::connect(port);
    assert_eq!(c.cmd("GROUP comp.test"), "211 0 1 0 comp.test\r\n");
    assert!(c.post("<after@r>", "comp.test").starts_with("240"));
}

#[test]
fn numbers_continue_after_a_restart_and_kill_9_loses_no_acknowledged_article() {
    let mut server = news_server("");
    server.add_user("alice", "a long secret");
    let (mut c, _) = Client::connect(server.nntp_port);
    assert!(c.cmd("AUTHINFO USER alice").starts_with("381"));
    assert!(c.cmd("AUTHINFO PASS a long secret").starts_with("281"));
    for i in 1..=3 {
        assert!(c.post(&format!("<{i}@r>"), "comp.test").starts_with("240"));
    }
    // A cancel by the poster frees nothing: number 3 is never given again.
    assert_eq!(
        c.cmd("POST"),
        "340 send article to be posted; end with <CR-LF>.<CR-LF>\r\n"
    );
    c.send(b"From: a@example.org\r\nNewsgroups: comp.test\r\nSubject: cmsg cancel <3@r>\r\nControl: cancel <3@r>\r\n\r\n.\r\n");
    assert!(c.line().starts_with("240"));
    server.terminate();
    server.spawn();
    let (mut c, _) = Client::connect(server.nntp_port);
    assert!(c.post("<4@r>", "comp.test").starts_with("240"));
    assert_eq!(c.cmd("STAT <4@r>"), "223 0 <4@r>\r\n");
    assert_eq!(c.cmd("GROUP comp.test"), "211 3 1 4 comp.test\r\n");
    assert_eq!(c.cmd("STAT 4"), "223 4 <4@r>\r\n");

    // Posting as fast as possible from another thread; kill -9 in the middle.
    let port = server.nntp_port;
    let posted = Arc::new(AtomicUsize::new(0));
    let counter = posted.clone();
    let poster = std::thread::spawn(move || {
        let (mut c, _) = Client::connect(port);
        let mut acknowledged = Vec::new();
        for i in 0..100_000 {
            let id = format!("<k{i}@r>");
            if c.cmd("POST").is_empty() {
                break;
            }
            c.send(format!("From: a@b\r\nNewsgroups: comp.test,alt.test\r\nSubject: k\r\nMessage-ID: {id}\r\n\r\nx\r\n.\r\n").as_bytes());
            let reply = c.line();
            if !reply.starts_with("240") {
                break;
            }
            acknowledged.push(id);
            counter.fetch_add(1, Ordering::SeqCst);
        }
        acknowledged
    });
    // Some posts acknowledged (however loaded the machine), then the kill in the middle.
    wait_for("a few acknowledged posts", || {
        posted.load(Ordering::SeqCst) >= 5
    });
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    let acknowledged = poster.join().unwrap();
    assert!(!acknowledged.is_empty());
    server.spawn();
    let (mut c, _) = Client::connect(server.nntp_port);
    for id in &acknowledged {
        let reply = c.cmd(&format!("STAT {id}"));
        assert!(reply.starts_with("223"), "{id} lost: {reply}");
    }
    // Numbers go on above everything given before the kill.
    let group = c.cmd("GROUP alt.test");
    let high: u64 = group.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(high >= acknowledged.len() as u64, "{group}");
    assert!(c.post("<after@r>", "alt.test").starts_with("240"));
    assert_eq!(c.cmd("STAT <after@r>"), "223 0 <after@r>\r\n");
    let after = c.cmd("GROUP alt.test");
    let new_high: u64 = after.split(' ').nth(3).unwrap().parse().unwrap();
    assert_eq!(new_high, high + 1, "{after}");
}

#[test]
fn authinfo_against_the_users_repository() {
    let server = news_server("<authRequired>true</authRequired>");
    server.add_user("alice", "a long secret");
    let (mut c, _) = Client::connect(server.nntp_port);
    assert!(c.cmd("GROUP comp.test").starts_with("480"));
    assert!(c.cmd("POST").starts_with("480"));
    assert!(c.cmd("AUTHINFO USER alice").starts_with("381"));
    assert!(c.cmd("AUTHINFO PASS wrong").starts_with("481"));
    assert!(c.cmd("AUTHINFO USER Alice").starts_with("381"));
    assert!(c.cmd("AUTHINFO PASS a long secret").starts_with("281"));
    assert!(c.cmd("GROUP comp.test").starts_with("211"));
    assert!(c.post("<auth@r>", "comp.test").starts_with("240"));
    // A cancel is the posting login's alone: bob's, with alice's From, is refused.
    server.add_user("bob", "another secret");
    let cancel = |c: &mut Client| {
        assert!(c.cmd("POST").starts_with("340"));
        c.send(b"From: Alice <alice@example.org>\r\nNewsgroups: comp.test\r\nSubject: cmsg cancel <auth@r>\r\nControl: cancel <auth@r>\r\n\r\n.\r\n");
        c.line()
    };
    let (mut b, _) = Client::connect(server.nntp_port);
    assert!(b.cmd("AUTHINFO USER bob").starts_with("381"));
    assert!(b.cmd("AUTHINFO PASS another secret").starts_with("281"));
    assert!(cancel(&mut b).starts_with("441 cancel refused"));
    assert!(c.cmd("STAT <auth@r>").starts_with("223"));
    assert!(c.post("<auth2@r>", "comp.test").starts_with("240"));
    assert!(cancel(&mut c).starts_with("240"));
    assert!(c.cmd("STAT <auth@r>").starts_with("430"));
    let out = python(
        r#"
import sys, nntplib
s = nntplib.NNTP("127.0.0.1", int(sys.argv[1]), user="alice", password="a long secret")
print(s.group("comp.test")[1])
"#,
        server.nntp_port,
    );
    assert_eq!(out.trim(), "1");
}

#[test]
fn console_adds_and_removes_groups_seen_by_readers() {
    let server = news_server("");
    let said = console(
        &server,
        &[
            "addgroup rec.new",
            "addgroup Bad..Name",
            "delgroup alt.test",
            "listgroups",
        ],
    );
    assert!(said.contains("Newsgroup rec.new added\r\n"), "{said}");
    assert!(said.contains("Error adding newsgroup Bad..Name"), "{said}");
    assert!(said.contains("Newsgroup alt.test deleted\r\n"), "{said}");
    let (mut c, _) = Client::connect(server.nntp_port);
    assert_eq!(c.cmd("GROUP rec.new"), "211 0 1 0 rec.new\r\n");
    assert!(c.cmd("GROUP alt.test").starts_with("411"));
}

#[test]
fn to_newsgroup_posts_mail_sent_to_a_list_address() {
    let tree = crate::harness::DEFAULT_TREE.replace(
        r#"<mailet match="All" class="PostmasterAlias"/>"#,
        r#"<mailet match="All" class="PostmasterAlias"/>
      <mailet match="RecipientIs=rust-list@localhost" class="ToNewsgroup"><newsgroup>comp.test, alt.test</newsgroup></mailet>"#,
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        nntp_handler: Some(""),
        extra: GROUPS,
        ..Setup::default()
    });
    let mut smtp = server.smtp();
    smtp.send_mail(
        "bob@example.net",
        &["rust-list@localhost"],
        "From: Bob <bob@example.net>\r\nSubject: via mail\r\nMessage-ID: <mail-1@example.net>\r\n\r\nposted by mail\r\n",
    );
    crate::harness::wait_for("the article", || {
        let (mut c, _) = Client::connect(server.nntp_port);
        c.cmd("STAT <mail-1@example.net>").starts_with("223")
    });
    let (mut c, _) = Client::connect(server.nntp_port);
    assert_eq!(c.cmd("GROUP alt.test"), "211 1 1 1 alt.test\r\n");
    assert!(c.cmd("ARTICLE 1").starts_with("220 1 <mail-1@example.net>"));
    let mut article = String::new();
    loop {
        let line = c.line();
        if line == ".\r\n" {
            break;
        }
        article.push_str(&line);
    }
    assert!(
        article.contains("Newsgroups: comp.test, alt.test\r\n"),
        "{article}"
    );
    assert!(
        article.contains("Xref: mail.example.test comp.test:1 alt.test:1\r\n"),
        "{article}"
    );
    assert!(article.contains("\r\n\r\nposted by mail\r\n"), "{article}");
    // The article is visible a moment before the mailet's post returns and logs.
    crate::harness::wait_for("the outcome line", || {
        server.log().contains("status=stored newsgroups=")
    });
}

/// The news in the embedded SQLite database (`<rootPath>db://maildb/</rootPath>`): every
/// command through nntplib, then the numbers and articles across a restart; no group
/// directory is made.
#[test]
fn news_in_sqlite_through_every_command_and_a_restart() {
    let extra = format!(
        "{}\n{}",
        crate::database::DATA_SOURCES,
        GROUPS.replace(
            "<nntp-repository>",
            "<nntp-repository><rootPath>db://maildb/</rootPath>"
        )
    );
    let mut server = Server::start_setup(&Setup {
        nntp_handler: Some(""),
        remote_manager_handler: Some(ADMIN),
        extra: &extra,
        ..Setup::default()
    });
    let out = python(NNTPLIB, server.nntp_port);
    assert!(out.starts_with("205"), "{out}\n{}", server.log());
    let said = console(&server, &["listgroups"]);
    assert!(said.contains("Existing newsgroups: 2\r\nalt.test articles=2 low=1 high=2\r\ncomp.test articles=3 low=1 high=3\r\n"), "{said}");
    assert!(!server.path("var/nntp/groups").exists());
    assert!(server.path("var/mail.db").exists());

    server.terminate();
    server.spawn();
    let (mut c, _) = Client::connect(server.nntp_port);
    assert_eq!(c.cmd("GROUP comp.test"), "211 3 1 3 comp.test\r\n");
    assert!(c.post("<after@r>", "comp.test").starts_with("240"));
    assert_eq!(c.cmd("STAT <after@r>"), "223 0 <after@r>\r\n");
    assert_eq!(c.cmd("STAT 4"), "223 4 <after@r>\r\n");
    assert_eq!(c.cmd("GROUP comp.test"), "211 4 1 4 comp.test\r\n");
    let reply = c.post("<after@r>", "comp.test");
    assert!(reply.starts_with("441"), "{reply}");
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}
