//! James 2.3.2's stock configuration with its list-manager include enabled: `check-config`
//! accepts it unchanged, and the real binary, started on it with only ports, bind addresses,
//! include paths and the DNS server (the test's own) changed, delivers local mail, queues
//! remote mail for RemoteDelivery, bounces, and runs the mailing list (subscribe by mail,
//! confirm, post to the members).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{
    free_port, maildir_messages, python, repository_count, wait_for, Server, Setup, BIN,
    DEFAULT_TREE,
};
use crate::remote_delivery::start_dns;

/// The stock `apps/james` directory.
fn stock() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/james-2.3.2/apps/james")
}

/// `mailroom check-config FILE`: its exit status and output.
fn check(file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn stock_configs_with_and_without_the_list_include_pass_check_config_unchanged() {
    for file in ["config.xml", "config-with-lists.xml"] {
        let (ok, all) = check(&stock().join("SAR-INF").join(file));
        assert!(ok, "{file}: {all}");
        assert!(all.contains("configuration is valid"), "{file}: {all}");
        assert!(!all.contains("ERROR"), "{file}: {all}");
        assert!(!all.contains("CommandListserv"), "{file}: {all}");
    }
    let (_, all) = check(&stock().join("SAR-INF/config-with-lists.xml"));
    // The stock <resources> path does not exist here: one warning, the built-in texts.
    assert_eq!(
        all.matches("/opt/james/apps/james/conf/miResources.xml does not exist")
            .count(),
        1,
        "{all}"
    );
}

/// Replaces `from` by `to` in `text`, which must hold it exactly `times` times.
fn substitute(text: &str, from: &str, to: &str, times: usize) -> String {
    assert_eq!(text.matches(from).count(), times, "{from:?}");
    text.replace(from, to)
}

/// The stock config-with-lists.xml with only what a test run needs changed: the ports (SMTP,
/// POP3 and NNTP on the harness's ports, the RemoteManager on a free one), every service bound
/// to 127.0.0.1 (the stock file has the `<bind>` commented out), the includes' paths made
/// absolute (the harness writes the file into its temporary home), and `<dnsserver>` pointed
/// at the test's own DNS server `dns` with `<autodiscover>false</autodiscover>`. That is the
/// only change beyond ports and binds, and it is there so that the bounce part never depends
/// on the machine: the stock file asks the system's resolvers, which a CI box may not have,
/// and RemoteDelivery bounces at once only when a resolver says the domain does not exist.
fn stock_for_test(ports: (u16, u16, u16), dns: SocketAddr) -> String {
    let (smtp, pop3, nntp) = ports;
    let text = std::fs::read_to_string(stock().join("SAR-INF/config-with-lists.xml")).unwrap();
    let conf = stock().join("conf").canonicalize().unwrap();
    let text = substitute(
        &text,
        "SYSTEM \"../conf/",
        &format!("SYSTEM \"{}/", conf.display()),
        4,
    );
    let text = substitute(&text, "<port>25</port>", &format!("<port>{smtp}</port>"), 1);
    let text = substitute(
        &text,
        "<port>110</port>",
        &format!("<port>{pop3}</port>"),
        1,
    );
    let text = substitute(
        &text,
        "<port>119</port>",
        &format!("<port>{nntp}</port>"),
        1,
    );
    let text = substitute(
        &text,
        "<port>4555</port>",
        &format!("<port>{}</port>", free_port()),
        1,
    );
    let text = substitute(
        &text,
        "<!--\n          <server>127.0.0.1</server>\n         -->",
        &format!("<server>{dns}</server>"),
        1,
    );
    let text = substitute(
        &text,
        "<autodiscover>true</autodiscover>",
        "<autodiscover>false</autodiscover>",
        1,
    );
    substitute(
        &text,
        "<!--\n      <bind> </bind>\n      -->",
        "<bind>127.0.0.1</bind>",
        4,
    )
}

/// The harness's ports, read back from the config it generated: SMTP, POP3, NNTP in order.
fn harness_ports(xml: &str) -> (u16, u16, u16) {
    let ports: Vec<u16> = xml
        .split("<port>")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().parse().unwrap())
        .collect();
    (ports[0], ports[1], ports[2])
}

/// Every message of a POP3 mailbox (STLS first: the stock POP3 server asks for TLS before a
/// password), separated by a line of `=`.
const POP3_ALL: &str = r#"
import poplib, ssl, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.stls(context=ssl._create_unverified_context())
p.user(sys.argv[2])
p.pass_(sys.argv[3])
count, _ = p.stat()
for i in range(1, count + 1):
    print("\n".join(l.decode("utf-8", "replace") for l in p.retr(i)[1]))
    print("=" * 20)
p.quit()
"#;

fn mailbox(server: &Server, user: &str) -> Vec<String> {
    let all = python(POP3_ALL, &[&server.pop3_port.to_string(), user, "secret"]);
    all.split(&format!("{}\n", "=".repeat(20)))
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits until `user`'s mailbox has a message containing every one of `parts`; returns it.
fn wait_mail(server: &Server, user: &str, parts: &[&str]) -> String {
    let mut found = None;
    let what = format!("a mail to {user} with {parts:?}");
    wait_for(&what, || {
        found = mailbox(server, user)
            .into_iter()
            .find(|m| parts.iter().all(|p| m.contains(p)));
        found.is_some()
    });
    found.unwrap()
}

/// Sends one mail over SMTP from 127.0.0.2: port, sender, recipient, message.
const FROM_OUTSIDE: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.0.2", 0))
s.sendmail(sys.argv[2], [sys.argv[3]], sys.argv[4].encode())
s.quit()
"#;

#[test]
fn the_stock_config_runs_local_remote_bounce_and_the_list_server() {
    // A DNS server of the test's own that knows no name: `mailroom-test.invalid` does not
    // exist, whatever resolvers this machine has or lacks.
    let dns = start_dns(Vec::new());
    let mut ports = None;
    let server = Server::start_edited(
        &Setup {
            pop3_handler: Some(""),
            nntp_handler: Some(""),
            ..Setup::default()
        },
        |generated| {
            let p = harness_ports(&generated);
            ports = Some(p);
            stock_for_test(p, dns)
        },
    );
    assert_eq!(
        ports,
        Some((server.smtp_port, server.pop3_port, server.nntp_port))
    );
    for user in ["alice", "bob"] {
        server.add_user(user, "secret");
    }
    let log = server.log();
    assert!(
        log.contains("miResources.xml does not exist"),
        "the stock resources path falls back to the built-in texts: {log}"
    );

    // Local mail, read over POP3.
    let mut smtp = server.smtp();
    smtp.send_mail(
        "alice@localhost",
        &["bob@localhost"],
        "From: alice@localhost\r\nTo: bob@localhost\r\nSubject: local hello\r\n\r\nhi bob\r\n",
    );
    wait_mail(&server, "bob", &["Subject: local hello", "hi bob"]);

    // Remote mail: RemoteDelivery's outgoing queue (192.0.2.1 is TEST-NET, never reached).
    smtp.send_mail(
        "alice@localhost",
        &["someone@[192.0.2.1]"],
        "From: alice@localhost\r\nSubject: far away\r\n\r\nhello\r\n",
    );
    let outgoing = "file://var/mail/outgoing/";
    wait_for("the remote mail in the outgoing queue", || {
        let out = server.cli(&["queue", "list", outgoing]);
        String::from_utf8_lossy(&out.stdout).contains("someone@[192.0.2.1]")
    });

    // A bounce: a domain that does not exist fails at once, DSNBounce tells alice.
    smtp.send_mail(
        "alice@localhost",
        &["nobody@mailroom-test.invalid"],
        "From: alice@localhost\r\nSubject: lost\r\n\r\nhello\r\n",
    );
    let dsn = wait_mail(
        &server,
        "alice",
        &["multipart/report", "nobody@mailroom-test.invalid"],
    );
    assert!(dsn.contains("Action: failed"), "{dsn}");

    // The list: bob subscribes, gets the request to confirm, confirms, is welcomed.
    smtp.send_mail(
        "bob@localhost",
        &["testlist-subscribe@localhost"],
        "From: bob@localhost\r\nSubject: subscribe\r\n\r\n",
    );
    let request = wait_mail(
        &server,
        "bob",
        &["Reply-To: <testlist-subscribe-confirm@localhost>"],
    );
    assert!(request.contains("owner@localhost"), "{request}");
    smtp.send_mail(
        "bob@localhost",
        &["testlist-subscribe-confirm@localhost"],
        "From: bob@localhost\r\nSubject: Re: confirm\r\n\r\n",
    );
    wait_mail(&server, "bob", &["Welcome to the testlist mailing list"]);
    let listed = server.cli(&["queue", "list"]);
    assert!(listed.status.success());
    // alice too, then a post from someone who is not a member (the list is open) reaches both.
    smtp.send_mail(
        "alice@localhost",
        &["testlist-subscribe@localhost"],
        "Subject: s\r\n\r\n",
    );
    wait_mail(&server, "alice", &["testlist-subscribe-confirm@localhost"]);
    smtp.send_mail(
        "alice@localhost",
        &["testlist-subscribe-confirm@localhost"],
        "Subject: c\r\n\r\n",
    );
    wait_mail(&server, "alice", &["Welcome to the testlist mailing list"]);
    // And a remote member (its request to confirm and welcome go to the outgoing queue).
    let far = "someone@[192.0.2.1]";
    for to in [
        "testlist-subscribe@localhost",
        "testlist-subscribe-confirm@localhost",
    ] {
        smtp.send_mail(far, &[to], "Subject: s\r\n\r\n");
    }
    let in_outgoing = || {
        let out = server.cli(&["queue", "list", outgoing]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.contains(far))
            .count()
    };
    wait_for("the request and the welcome in the outgoing queue", || {
        in_outgoing() >= 3
    });
    // The post comes from outside (127.0.0.2 is not the stock `RemoteAddrNotInNetwork`'s
    // 127.0.0.1): the list's copy is sent by the server, so the relay check lets it reach the
    // remote member.
    python(
        FROM_OUTSIDE,
        &[
            &server.smtp_port.to_string(),
            "carol@localhost",
            "testlist@localhost",
            "From: carol@localhost\r\nSubject: Re: news\r\n\r\nthe news of the day\r\n",
        ],
    );
    wait_for(
        "the post for the remote member in the outgoing queue",
        || in_outgoing() >= 4,
    );
    for user in ["alice", "bob"] {
        let post = wait_mail(&server, user, &["Subject: [Test] RE: news"]);
        assert!(post.contains("the news of the day"), "{post}");
        assert!(post.contains("Reply-To: testlist@localhost"), "{post}");
        assert!(post.contains("X-been-there: testlist@localhost"), "{post}");
        assert!(
            post.contains("testlist-unsubscribe@localhost"),
            "footer: {post}"
        );
        assert!(post.contains("Return-Path: <owner@localhost>"), "{post}");
    }
    // A text-and-HTML post gets the footer in both alternatives.
    smtp.send_mail(
        "carol@localhost",
        &["testlist@localhost"],
        "From: carol@localhost\r\nSubject: both\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain\r\n\r\nplain words\r\n\
         --alt\r\nContent-Type: text/html\r\n\r\n<html><body>html words</body></html>\r\n\
         --alt--\r\n",
    );
    let post = wait_mail(&server, "bob", &["Subject: [Test] both"]);
    assert!(post.contains("plain words\n\n-----"), "{post}");
    assert!(
        post.contains("<a href=\"mailto:testlist-unsubscribe@localhost\">"),
        "{post}"
    );
    assert!(post.contains("</a></body></html>"), "{post}");
    // Nothing went wrong on the way (the repositories are made by the first mail filed).
    for dir in ["var/mail/error", "var/mail/address-error"] {
        let dir = server.path(dir);
        assert!(
            !dir.exists() || repository_count(&dir) == 0,
            "{}",
            dir.display()
        );
    }
    // The members are users of the repository list-test (`@` is written `%40` in a name).
    let mut members: Vec<String> = std::fs::read_dir(server.path("var/lists/list-test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".user"))
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            "alice%40localhost.user",
            "bob%40localhost.user",
            "someone%40%5b192.0.2.1%5d.user"
        ]
    );
}

/// James's simple list server: `club-on@` and `club-off@` (CommandForListserv and
/// AvalonListservManager) and posts through AvalonListserv, members in a users repository.
#[test]
fn avalon_list_on_off_and_post() {
    let tree = DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="CommandForListserv=club@localhost" class="AvalonListservManager">
        <repositoryName>club</repositoryName>
      </mailet>
      <mailet match="RecipientIs=club@localhost" class="AvalonListserv">
        <repositoryName>club</repositoryName>
        <subjectprefix>Club</subjectprefix>
      </mailet>"#,
        1,
    );
    let server = Server::start_edited(
        &Setup {
            tree: &tree,
            ..Setup::default()
        },
        |xml| {
            substitute(
                &xml,
                "</users-store>",
                r#"<repository name="club" class="org.apache.james.userrepository.UsersFileRepository" destinationURL="file://var/lists/club/"/></users-store>"#,
                1,
            )
        },
    );
    for user in ["alice", "bob", "postmaster"] {
        server.add_user(user, "secret");
    }
    let inbox = |user: &str| -> Vec<String> {
        maildir_messages(&server.path(&format!("var/mail/inboxes/{user}")))
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    };
    let mut smtp = server.smtp();
    for user in ["alice", "bob"] {
        smtp.send_mail(
            &format!("{user}@localhost"),
            &["club-on@localhost"],
            "Subject: join\r\n\r\n",
        );
        wait_for("the notice", || {
            inbox(user)
                .iter()
                .any(|m| m.contains("You have been added"))
        });
    }
    smtp.send_mail(
        "bob@localhost",
        &["club-off@localhost"],
        "Subject: off\r\n\r\n",
    );
    wait_for("the notice", || {
        inbox("bob")
            .iter()
            .any(|m| m.contains("You have been removed"))
    });
    smtp.send_mail(
        "bob@localhost",
        &["club@localhost"],
        "From: bob@localhost\r\nSubject: hello\r\n\r\nto the club\r\n",
    );
    wait_for("the post", || {
        inbox("alice")
            .iter()
            .any(|m| m.contains("Subject: [Club] hello"))
    });
    let post = inbox("alice")
        .into_iter()
        .find(|m| m.contains("to the club"))
        .unwrap();
    assert!(
        post.contains("Return-Path: <postmaster@localhost>"),
        "{post}"
    );
    assert!(post.contains("X-been-there: club@localhost"), "{post}");
    // bob left: the post did not reach him.
    wait_for("the spool to empty", || server.spool_empty());
    assert!(!inbox("bob").iter().any(|m| m.contains("to the club")));
}
