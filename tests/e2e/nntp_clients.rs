//! NNTP with the Debian newsreaders and tools (run by `.ci/run`): `tin -Z` counting unread
//! news, tin and `slrn` under tmux listing the groups and reading an article, sinntp's
//! `nntp-push`, `nntp-list`, `nntp-pull` and `nntp-get`, and a transit feed over IHAVE from
//! INN's `innxmit`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{Server, Setup};

const GROUPS: &str = "<nntp-repository><newsgroups><newsgroup>comp.test</newsgroup>\
    <newsgroup>alt.test</newsgroup></newsgroups></nntp-repository>";

fn news_server() -> Server {
    Server::start_setup(&Setup {
        nntp_handler: Some(""),
        extra: GROUPS,
        ..Setup::default()
    })
}

/// Runs a sinntp command against the server with `stdin`; its output.
fn sinntp(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .args(["-S", &format!("127.0.0.1:{}", server.nntp_port)])
        .env("HOME", server.home.path())
        .env("PYTHONWARNINGS", "ignore")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sinntp is installed");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn push(server: &Server, group: &str, subject: &str) {
    let message = format!("From: Bob <bob@example.org>\nSubject: {subject}\n\n{subject} body\n");
    sinntp(server, &["nntp-push", group], message.as_bytes());
}

#[test]
#[ignore = "needs sinntp; run by .ci/run"]
fn sinntp_push_list_pull_and_get() {
    let server = news_server();
    push(&server, "comp.test", "first");
    push(&server, "comp.test", "second");
    let listed = sinntp(&server, &["nntp-list"], b"");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "alt.test\ncomp.test\n"
    );
    let mbox = server.path("pulled.mbox");
    let target = format!("comp.test>{}", mbox.display());
    sinntp(&server, &["nntp-pull", &target], b"");
    let pulled = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(
        pulled.matches("\nSubject: ").count() + usize::from(pulled.starts_with("Subject: ")),
        2,
        "{pulled}"
    );
    assert!(
        pulled.contains("first body") && pulled.contains("second body"),
        "{pulled}"
    );
    // A second pull fetches only what is new.
    push(&server, "comp.test", "third");
    sinntp(&server, &["nntp-pull", &target], b"");
    let pulled = std::fs::read_to_string(&mbox).unwrap();
    assert_eq!(pulled.matches("third body").count(), 1, "{pulled}");
    assert_eq!(pulled.matches("first body").count(), 1, "{pulled}");
    let id = pulled
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID")
        .to_string();
    let got = sinntp(&server, &["nntp-get", &id], b"");
    assert!(String::from_utf8_lossy(&got.stdout).contains("first body"));
}

#[test]
#[ignore = "needs tin; run by .ci/run"]
fn tin_counts_unread_news() {
    let server = news_server();
    push_raw(&server);
    let newsrc = server.path("newsrc");
    std::fs::write(&newsrc, "comp.test: \nalt.test: \n").unwrap();
    let out = Command::new("tin")
        .args([
            "-r",
            "-Z",
            "-v",
            "-g",
            "127.0.0.1",
            "-p",
            &server.nntp_port.to_string(),
            "-f",
        ])
        .arg(&newsrc)
        .env("HOME", server.home.path())
        .output()
        .expect("tin is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // 2: there is unread news.
    assert_eq!(out.status.code(), Some(2), "{text}");
    // Everything read: 0.
    std::fs::write(&newsrc, "comp.test: 1-2\nalt.test: \n").unwrap();
    let out = Command::new("tin")
        .args([
            "-r",
            "-Z",
            "-g",
            "127.0.0.1",
            "-p",
            &server.nntp_port.to_string(),
            "-f",
        ])
        .arg(&newsrc)
        .env("HOME", server.home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// Two articles in comp.test, posted with a raw client.
fn push_raw(server: &Server) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.nntp_port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    for subject in ["one", "two"] {
        writer.write_all(b"POST\r\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        writer
            .write_all(format!("From: a@example.org\r\nNewsgroups: comp.test\r\nSubject: {subject}\r\n\r\n{subject} body\r\n.\r\n").as_bytes())
            .unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("240"), "{line}");
    }
}

/// The tmux pane, once it shows `what` (or after 10 s).
fn pane_showing(session: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .unwrap();
        let pane = String::from_utf8_lossy(&out.stdout).into_owned();
        if pane.contains(what) || Instant::now() > deadline {
            return pane;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs slrn and tmux; run by .ci/run"]
fn slrn_lists_groups_and_reads_an_article() {
    let server = news_server();
    push_raw(&server);
    let home = server.home.path();
    std::fs::write(
        home.join(".slrnrc"),
        "set hostname \"example.test\"\nset username \"alice\"\n",
    )
    .unwrap();
    let session = format!("mailroom-slrn-{}", server.nntp_port);
    let command = format!(
        "env HOME={} TERM=xterm slrn --nntp -h 127.0.0.1 -p {} -f {}/newsrc.slrn --create",
        home.display(),
        server.nntp_port,
        home.display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ])
        .status()
        .expect("tmux is installed");
    assert!(started.success());
    let pane = pane_showing(&session, "comp.test");
    let listed = pane.contains("alt.test") && pane.contains("comp.test");
    // Down to comp.test (the second group), open it, open the first article.
    Command::new("tmux")
        .args(["send-keys", "-t", &session, "Down", "Enter"])
        .status()
        .unwrap();
    let articles = pane_showing(&session, "two");
    Command::new("tmux")
        .args(["send-keys", "-t", &session, "Enter"])
        .status()
        .unwrap();
    let read = pane_showing(&session, "body");
    Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status()
        .unwrap();
    assert!(listed, "{pane}");
    assert!(
        articles.contains("one") && articles.contains("two"),
        "{articles}"
    );
    assert!(
        read.contains("one body") || read.contains("two body"),
        "{read}"
    );
}

#[test]
#[ignore = "needs tin and tmux; run by .ci/run"]
fn tin_reads_a_group_under_tmux() {
    let server = news_server();
    push_raw(&server);
    let home = server.home.path();
    std::fs::write(home.join("newsrc"), "comp.test: \nalt.test: \n").unwrap();
    let session = format!("mailroom-tin-{}", server.nntp_port);
    let command = format!(
        "env HOME={home} TERM=xterm tin -r -g 127.0.0.1 -p {port} -f {home}/newsrc",
        home = home.display(),
        port = server.nntp_port,
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ])
        .status()
        .expect("tmux is installed");
    assert!(started.success());
    let keys = |keys: &[&str]| {
        Command::new("tmux")
            .args(["send-keys", "-t", &session])
            .args(keys)
            .status()
            .unwrap();
    };
    // The first start shows tin's welcome page; then the group selection page.
    let welcome = pane_showing(&session, "Press <RETURN> to continue");
    if welcome.contains("Press <RETURN> to continue") {
        keys(&["Enter"]);
    }
    let groups = pane_showing(&session, "Group Selection");
    // comp.test (the first line, with its 2 unread articles): open it, then its first thread.
    keys(&["Enter"]);
    let index = pane_showing(&session, "two");
    keys(&["Enter"]);
    let read = pane_showing(&session, "one body");
    Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status()
        .unwrap();
    assert!(
        groups.contains("comp.test") && groups.contains("alt.test"),
        "{groups}"
    );
    assert!(index.contains("one") && index.contains("two"), "{index}");
    assert!(read.contains("one body"), "{read}");
}

/// INN's feeder, installed with inn2 (which `.ci/run` configures).
const INNXMIT: &str = "/usr/lib/news/bin/innxmit";

#[test]
#[ignore = "needs inn2; run by .ci/run"]
fn innxmit_feeds_articles_over_ihave() {
    use crate::nntp::Client;
    let server = news_server();
    let dir = server.path("outgoing");
    std::fs::create_dir_all(&dir).unwrap();
    // Articles as INN stores them (LF line ends); one cross-posted, one with a dot-line, one
    // without a Subject (refused), and one named in the batch without its Message-ID.
    let articles = [
        ("1", "comp.test", "Subject: fed one\n", "one\n"),
        (
            "2",
            "comp.test,alt.test",
            "Subject: fed two\n",
            "two\n.\n..two dots\n",
        ),
        ("3", "comp.test", "", "no subject\n"),
        ("4", "alt.test", "Subject: fed four\n", "four\n"),
    ];
    let mut batch = String::new();
    for (n, groups, subject, body) in articles {
        let path = dir.join(n);
        std::fs::write(
            &path,
            format!(
                "Path: upstream.example!poster\nFrom: feed@example.net\nNewsgroups: {groups}\n\
                 {subject}Message-ID: <fed{n}@example.net>\nDate: Tue, 01 Jul 2025 12:00:00 +0000\n\n{body}"
            ),
        )
        .unwrap();
        if n == "4" {
            batch.push_str(&format!("{}\n", path.display()));
        } else {
            batch.push_str(&format!("{} <fed{n}@example.net>\n", path.display()));
        }
    }
    let feed = |batch: &str| {
        let file = dir.join("batch");
        std::fs::write(&file, batch).unwrap();
        // Streaming is tried first (MODE STREAM is refused: innxmit falls back to IHAVE).
        let out = Command::new(INNXMIT)
            .args(["-d", "-l", "-t", "10", "-T", "30", "-P"])
            .arg(server.nntp_port.to_string())
            .arg("127.0.0.1")
            .arg(&file)
            .output()
            .expect("innxmit (inn2) is installed");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "innxmit: {log}");
        log
    };
    let log = feed(&batch);
    assert_eq!(
        log.matches("235 article transferred ok").count(),
        3,
        "{log}"
    );
    assert!(log.contains("437 "), "{log}");

    let (mut c, _) = Client::connect(server.nntp_port);
    assert_eq!(c.cmd("GROUP comp.test"), "211 2 1 2 comp.test\r\n");
    assert_eq!(c.cmd("GROUP alt.test"), "211 2 1 2 alt.test\r\n");
    assert!(c.cmd("STAT <fed3@example.net>").starts_with("430"));
    assert_eq!(
        c.cmd("STAT <fed4@example.net>"),
        "223 0 <fed4@example.net>\r\n"
    );
    // The cross-post is one article with a number in each group, and its body is intact.
    assert!(c.cmd("ARTICLE <fed2@example.net>").starts_with("220"));
    let mut text = String::new();
    loop {
        let line = c.line();
        if line == ".\r\n" || line.is_empty() {
            break;
        }
        text.push_str(&line);
    }
    assert!(
        text.contains("Path: mail.example.test!upstream.example!poster\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Xref: mail.example.test comp.test:2 alt.test:1\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\ntwo\r\n..\r\n...two dots\r\n"), "{text}");

    // Fed again: the server has them all, stores nothing more.
    let log = feed(&batch);
    assert_eq!(log.matches("435 ").count(), 3, "{log}");
    assert_eq!(c.cmd("GROUP comp.test"), "211 2 1 2 comp.test\r\n");
}
