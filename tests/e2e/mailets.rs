//! The message mailets with the real binary, SMTP in and Maildir out:
//! * the footer and header family: AddFooter on a multipart mail (structure, attachment and
//!   charset kept) and on a 64 MiB message with the server's peak memory measured, with
//!   SetMimeHeader, LogMessage, RemoveMailAttribute, UseHeaderRecipients and ToMultiRepository
//!   on the way;
//! * the forward family: Forward, Redirect, Resend, NotifySender and Bounce, each checked in
//!   the Maildir that gets its mail, with its envelope sender (`Return-Path:`) and header.
//! * FromRepository releasing held mail into a processor, and debug.Counter.

use std::io::Write;

use mail_parser::{MessageParser, MimeHeaders};

use crate::harness::{maildir_messages, wait_for, Server, Setup, Smtp};

/// The server's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

const FOOTER_TREE: &str = r#"
    <processor name="root">
      <mailet match="RecipientIs=list@localhost" class="UseHeaderRecipients"/>
      <mailet match="All" class="SetMailAttribute"><org.example.tag>x</org.example.tag></mailet>
      <mailet match="All" class="RemoveMailAttribute"><name>org.example.tag</name></mailet>
      <mailet match="HasMailAttribute=org.example.tag" class="ToProcessor"><processor>error</processor></mailet>
      <mailet match="All" class="LogMessage"><maxBody>64</maxBody><comment>seen by the e2e test</comment></mailet>
      <mailet match="All" class="SetMimeHeader"><name>X-Footer-Test</name><value>yes</value></mailet>
      <mailet match="All" class="AddFooter"><text>-- 
Sent through the Mailroom list, caf&#233;</text></mailet>
      <mailet match="RecipientIs=archive@localhost" class="ToMultiRepository">
        <repositoryUrl>file://var/mail/archive/</repositoryUrl>
        <addDeliveryHeader>Delivered-To</addDeliveryHeader>
      </mailet>
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

const MULTIPART: &str = "From: Alice <alice@localhost>\r\nTo: bob@localhost, archive@localhost\r\n\
Subject: minutes\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
--inner\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
The minutes, r=E9sum=E9 included.\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><p>The minutes</p></body></html>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
AAECAwQFBgcICQ==\r\n\
--outer--\r\n";

#[test]
fn add_footer_and_header_mailets_keep_structure_and_memory_bounded() {
    let server = Server::start_setup(&Setup {
        tree: FOOTER_TREE,
        smtp_handler: "<maxmessagesize>0</maxmessagesize>",
        ..Setup::default()
    });
    for user in ["alice", "bob", "carol", "list", "archive"] {
        server.add_user(user, "secret");
    }
    let bob = server.path("var/mail/inboxes/bob");
    let carol = server.path("var/mail/inboxes/carol");

    // The multipart mail, to bob's inbox and to the archive root of ToMultiRepository.
    server.smtp().send_mail(
        "alice@localhost",
        &["bob@localhost", "archive@localhost"],
        MULTIPART,
    );
    wait_for("bob's copy", || maildir_messages(&bob).len() == 1);
    let archive = server.path("var/mail/archive/archive");
    wait_for("the archived copy", || {
        maildir_messages(&archive).len() == 1
    });
    let archived = String::from_utf8(maildir_messages(&archive).remove(0)).unwrap();
    assert!(
        archived.starts_with("Delivered-To: archive@localhost\n"),
        "{archived}"
    );
    let raw = maildir_messages(&bob).remove(0);
    let msg = MessageParser::new().parse(&raw).unwrap();
    assert_eq!(msg.header_raw("X-Footer-Test").map(str::trim), Some("yes"));
    assert_eq!(
        msg.body_text(0).unwrap().replace("\r\n", "\n"),
        "The minutes, r\u{e9}sum\u{e9} included.\n-- \nSent through the Mailroom list, caf\u{e9}"
    );
    assert_eq!(
        msg.body_html(0).unwrap().replace("\r\n", "\n"),
        "<html><body><p>The minutes</p><br>-- <br />\nSent through the Mailroom list, caf\u{e9}</body></html>"
    );
    let attachment = msg.attachment(0).unwrap();
    assert_eq!(attachment.attachment_name(), Some("data.bin"));
    assert_eq!(attachment.contents(), (0u8..10).collect::<Vec<u8>>());
    // The Latin-1 part stays Latin-1 and quoted-printable.
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("Content-Type: text/plain; charset=iso-8859-1\n"),
        "{text}"
    );
    assert!(
        text.contains("Sent through the Mailroom list, caf=E9"),
        "{text}"
    );
    assert!(server.log().contains("seen by the e2e test"));

    // UseHeaderRecipients: the envelope says list@, the header says carol.
    server.smtp().send_mail(
        "alice@localhost",
        &["list@localhost"],
        "To: carol@localhost\r\nSubject: via header\r\n\r\nhello\r\n",
    );
    wait_for("carol's copy", || maildir_messages(&carol).len() == 1);
    assert!(maildir_messages(&server.path("var/mail/inboxes/list")).is_empty());

    // A 64 MiB single-part message: the footer is appended, and the server's peak memory
    // grows by far less than the message.
    let pid = server.pid();
    let before = peak_rss_kib(pid);
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<bob@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: large\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
    let line = format!("{}\r\n", "y".repeat(98));
    let chunk = line.repeat(10 * 1024); // 1 MiB
    for _ in 0..64 {
        smtp.send(chunk.as_bytes());
    }
    smtp.send(b".\r\n");
    let reply = smtp.reply();
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the large copy", || {
        std::fs::read_dir(bob.join("new")).map_or(0, |d| d.count()) == 2
    });
    wait_for("the spool to empty", || server.spool_empty());
    let after = peak_rss_kib(pid);
    let growth = after.saturating_sub(before);
    eprintln!("64 MiB message with AddFooter: peak RSS {before} KiB -> {after} KiB");
    assert!(growth < 24 * 1024, "peak RSS grew {growth} KiB");
    let large = std::fs::read_dir(bob.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let size = std::fs::metadata(&large).unwrap().len();
    // Maildir keeps LF line ends: 64 Ki lines of 98 octets and LF.
    assert!(size > 64 * 10240 * 99, "{size}");
    let mut file = std::fs::File::open(&large).unwrap();
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::End(-200)).unwrap();
    let mut tail = String::new();
    file.read_to_string(&mut tail).unwrap();
    let tail = tail.replace("\r\n", "\n");
    assert!(
        tail.ends_with("yyyy\n-- \nSent through the Mailroom list, caf\u{e9}")
            || tail.ends_with("yyyy\n-- \nSent through the Mailroom list, caf\u{e9}\n"),
        "{tail:?}"
    );
    let _ = std::io::stdout().flush();
}

const FORWARD_TREE: &str = r#"
    <processor name="root">
      <mailet match="RecipientIs=fwd@localhost" class="Forward"><forwardto>bob@localhost</forwardto></mailet>
      <mailet match="RecipientIs=redir@localhost" class="Redirect">
        <recipients>carol@localhost</recipients>
        <sender>postmaster</sender>
        <prefix>[redirected]</prefix>
        <message>Redirected by the server.</message>
        <inline>heads</inline>
        <attachment>message</attachment>
      </mailet>
      <mailet match="RecipientIs=resend@localhost" class="Resend">
        <recipients>dave@localhost, sender</recipients>
        <to>from</to>
        <reversePath>null</reversePath>
        <replyTo>postmaster</replyTo>
        <isReply>true</isReply>
        <passThrough>true</passThrough>
      </mailet>
      <mailet match="RecipientIs=notify@localhost" class="NotifySender">
        <passThrough>false</passThrough><attachment>heads</attachment>
      </mailet>
      <mailet match="RecipientIs=nobody@localhost" class="Bounce">
        <passThrough>false</passThrough>
      </mailet>
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

fn only(server: &Server, user: &str, count: usize) -> Vec<Vec<u8>> {
    let dir = server.path(&format!("var/mail/inboxes/{user}"));
    wait_for(&format!("{count} mail(s) for {user}"), || {
        maildir_messages(&dir).len() >= count
    });
    let all = maildir_messages(&dir);
    assert_eq!(all.len(), count, "{user}");
    all
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace("\r\n", "\n")
}

#[test]
fn forward_redirect_resend_notify_and_bounce_reach_the_right_mailboxes() {
    let server = Server::start_with(FORWARD_TREE, "");
    for user in [
        "alice", "bob", "carol", "dave", "fwd", "redir", "resend", "notify", "nobody",
    ] {
        server.add_user(user, "secret");
    }
    let message = |to: &str, subject: &str| {
        format!(
            "From: Alice <alice@localhost>\nTo: {to}\nSubject: {subject}\n\
             Message-ID: <{subject}@localhost>\n\nbody of {subject}\n"
        )
    };

    // Forward: the same message, from the same sender, to bob.
    server.smtp().send_mail(
        "alice@localhost",
        &["fwd@localhost"],
        &message("fwd@localhost", "forwarded"),
    );
    let bob = only(&server, "bob", 1);
    let t = text(&bob[0]);
    assert!(t.starts_with("Return-Path: <alice@localhost>\n"), "{t}");
    assert!(t.contains("To: fwd@localhost\n") && t.contains("Message-ID: <forwarded@localhost>"));
    assert!(t.contains("\n\nbody of forwarded\n"), "{t:?}");

    // Redirect: a new message from the postmaster to carol, quoting the header and attaching
    // the original.
    server.smtp().send_mail(
        "alice@localhost",
        &["redir@localhost"],
        &message("redir@localhost", "redirected"),
    );
    let carol = only(&server, "carol", 1);
    let t = text(&carol[0]);
    assert!(
        t.starts_with("Return-Path: <postmaster@localhost>\n"),
        "{t}"
    );
    let msg = MessageParser::new().parse(&carol[0]).unwrap();
    assert_eq!(msg.subject(), Some("[redirected] redirected"));
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("postmaster@localhost")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("carol@localhost")
    );
    let body = msg.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(
        body.starts_with("Redirected by the server.\nMessage Headers:\n"),
        "{body}"
    );
    assert!(body.contains("Subject: redirected\n"));
    let attached = msg
        .attachment(0)
        .unwrap()
        .message()
        .expect("message/rfc822");
    assert_eq!(attached.subject(), Some("redirected"));
    assert_eq!(
        attached.body_text(0).unwrap().replace("\r\n", "\n"),
        "body of redirected\n\n"
    );
    assert!(only(&server, "redir", 0).is_empty());

    // Resend with passThrough: dave and alice get a copy with the null sender, To: from the
    // From: field, Reply-To the postmaster; resend@ keeps the original.
    server.smtp().send_mail(
        "alice@localhost",
        &["resend@localhost"],
        &message("resend@localhost", "resent"),
    );
    let dave = only(&server, "dave", 1);
    let t = text(&dave[0]);
    assert!(t.starts_with("Return-Path: <>\n"), "{t}");
    assert!(t.contains("\nTo: Alice <alice@localhost>\n"), "{t}");
    assert!(t.contains("\nReply-To: <postmaster@localhost>\n"), "{t}");
    assert!(t.contains("\nIn-Reply-To: <resent@localhost>\n"), "{t}");
    let alice = only(&server, "alice", 1);
    assert!(text(&alice[0]).contains("Subject: resent\n"));
    let original = only(&server, "resend", 1);
    assert!(text(&original[0]).starts_with("Return-Path: <alice@localhost>\n"));

    // NotifySender: alice hears about it, from the postmaster with the null sender.
    server.smtp().send_mail(
        "alice@localhost",
        &["notify@localhost"],
        &message("notify@localhost", "noted"),
    );
    let alice = only(&server, "alice", 2);
    let notice = alice
        .iter()
        .find(|m| text(m).contains("Subject: Re: noted"))
        .expect("the notice");
    assert!(text(notice).starts_with("Return-Path: <>\n"));
    assert!(text(notice).contains("Content-Type: text/rfc822-headers"));

    // Bounce: alice gets the bounce; a bounce to the null sender is never sent.
    server.smtp().send_mail(
        "alice@localhost",
        &["nobody@localhost"],
        &message("nobody@localhost", "lost"),
    );
    let alice = only(&server, "alice", 3);
    assert!(alice
        .iter()
        .any(|m| text(m).contains("Subject: Undelivered: lost")));
    server.smtp().send_mail(
        "",
        &["nobody@localhost"],
        &message("nobody@localhost", "loop"),
    );
    wait_for("the spool to empty", || server.spool_empty());
    assert_eq!(only(&server, "alice", 3).len(), 3);
    assert!(only(&server, "nobody", 0).is_empty());
    assert!(server.log().contains("status=forwarded"));
}

const RESPOOL_TREE: &str = r#"
    <processor name="root">
      <mailet match="RecipientIs=held@localhost" class="ToRepository">
        <repositoryPath>file://var/mail/held/</repositoryPath>
      </mailet>
      <mailet match="RecipientIs=respool@localhost" class="FromRepository">
        <repositoryPath>file://var/mail/held/</repositoryPath>
        <processor>release</processor>
        <delete>true</delete>
      </mailet>
      <mailet match="RecipientIs=count@localhost" class="debug.Counter"/>
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="release">
      <mailet match="HasMailAttribute=FromRepository" class="SetMimeHeader">
        <name>X-Released</name><value>yes</value>
      </mailet>
      <mailet match="All" class="LocalDelivery"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

#[test]
fn from_repository_releases_held_mail_into_a_processor() {
    let server = Server::start_with(RESPOOL_TREE, "");
    for user in ["alice", "held", "respool", "count"] {
        server.add_user(user, "secret");
    }
    let held = server.path("var/mail/held");
    for n in 0..3 {
        server.smtp().send_mail(
            "alice@localhost",
            &["held@localhost"],
            &format!("Subject: held {n}\n\nwaiting\n"),
        );
    }
    wait_for("three held mails", || {
        crate::harness::repository_count(&held) == 3
    });
    server.smtp().send_mail(
        "alice@localhost",
        &["count@localhost"],
        "Subject: c\n\ncounted\n",
    );
    // The trigger: the held mails go to `release`, which delivers them to held@.
    server.smtp().send_mail(
        "alice@localhost",
        &["respool@localhost"],
        "Subject: go\n\nrelease\n",
    );
    let inbox = server.path("var/mail/inboxes/held");
    wait_for("the released mails", || maildir_messages(&inbox).len() == 3);
    for raw in maildir_messages(&inbox) {
        assert!(text(&raw).contains("\nX-Released: yes\n"), "{}", text(&raw));
    }
    wait_for("the repository to empty", || {
        crate::harness::repository_count(&held) == 0
    });
    assert!(maildir_messages(&server.path("var/mail/inboxes/respool")).is_empty());
    assert!(maildir_messages(&server.path("var/mail/inboxes/count")).is_empty());
    assert!(server.log().contains("debug.Counter: 1"));
}
