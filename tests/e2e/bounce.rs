//! Bounces with the real binary: a tree that fails mail for `bounce.test` (as RemoteDelivery
//! will, with its attributes set by `SetMailAttribute`) and sends it to a `bounces` processor
//! whose `DSNBounce` reports to the local sender's Maildir; a null-sender mail is never
//! bounced; `NotifyPostmaster` reaches the postmaster's mailbox.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::harness::{maildir_messages, wait_for, Server};

const TREE: &str = r#"
    <processor name="root">
      <mailet match="HostIs=bounce.test" class="SetMailAttribute">
        <mailroom.delivery.remote-mta>mx1.bounce.test</mailroom.delivery.remote-mta>
        <mailroom.delivery.status>5.1.1</mailroom.delivery.status>
        <mailroom.delivery.diagnostic>550 5.1.1 &lt;x@bounce.test&gt;: Recipient address rejected</mailroom.delivery.diagnostic>
      </mailet>
      <mailet match="HostIs=bounce.test" class="ToProcessor">
        <processor>bounces</processor><notice>550 5.1.1 unknown user</notice>
      </mailet>
      <mailet match="HostIs=plain.test" class="ToProcessor">
        <processor>bounces</processor><notice>mailbox unavailable</notice>
      </mailet>
      <mailet match="HostIs=notify.test" class="ToProcessor">
        <processor>notify</processor><notice>no route to notify.test</notice>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="bounces">
      <mailet match="All" class="DSNBounce"><passThrough>false</passThrough></mailet>
    </processor>
    <processor name="notify">
      <mailet match="All" class="NotifyPostmaster">
        <passThrough>false</passThrough>
        <attachment>heads</attachment>
      </mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

const MESSAGE: &str = "From: Alice <alice@localhost>\nTo: x@bounce.test\n\
    Subject: the report\nMessage-ID: <m1@localhost>\n\nHello,\nhere it is.\n";

/// `Name: value` of the `message/delivery-status` part, grouped as RFC 3464 writes them.
fn status_groups(raw: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.lines()
                .map(|l| {
                    let (k, v) = l.split_once(": ").unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .collect()
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn part<'a>(
    msg: &'a mail_parser::Message<'a>,
    ctype: &str,
) -> Option<&'a mail_parser::MessagePart<'a>> {
    msg.parts.iter().find(|p| {
        p.content_type().is_some_and(|c| {
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).eq_ignore_ascii_case(ctype)
        })
    })
}

#[test]
fn a_failed_recipient_gets_the_sender_a_delivery_status_report() {
    let server = Server::start_with(TREE, "");
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    let alice = server.path("var/mail/inboxes/alice");
    let bob = server.path("var/mail/inboxes/bob");

    // One mail to a local user and a failing remote one: bob gets it, alice the report.
    let mut smtp = server.smtp();
    smtp.send_mail(
        "alice@localhost",
        &["bob@localhost", "x@bounce.test"],
        MESSAGE,
    );
    wait_for("the report", || maildir_messages(&alice).len() == 1);
    wait_for("bob's copy", || maildir_messages(&bob).len() == 1);

    let report = &maildir_messages(&alice)[0];
    let text = String::from_utf8_lossy(report);
    assert!(text.starts_with("Return-Path: <>\n"), "{text}");
    assert!(
        text.contains("Content-Type: message/delivery-status\n")
            && text.contains("Content-Type: message/rfc822\n"),
        "no charset on message parts: {text}"
    );
    let msg = MessageParser::new().parse(report).unwrap();
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("postmaster@localhost")
    );
    assert_eq!(msg.subject(), Some("Undelivered: the report"));
    assert_eq!(msg.in_reply_to().as_text(), Some("m1@localhost"));
    let human = msg.body_text(0).unwrap();
    assert!(
        human.contains("<x@bounce.test>: 550 5.1.1 <x@bounce.test>: Recipient address rejected"),
        "{human}"
    );

    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(field(&groups[0], "Reporting-MTA"), Some("dns; localhost"));
    assert!(field(&groups[0], "Arrival-Date").is_some());
    let x = &groups[1];
    assert_eq!(field(x, "Final-Recipient"), Some("rfc822; x@bounce.test"));
    assert_eq!(field(x, "Action"), Some("failed"));
    assert_eq!(field(x, "Status"), Some("5.1.1"));
    assert_eq!(field(x, "Remote-MTA"), Some("dns; mx1.bounce.test"));
    assert_eq!(
        field(x, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <x@bounce.test>: Recipient address rejected")
    );
    let returned = part(&msg, "message/rfc822").unwrap();
    let PartType::Message(inner) = &returned.body else {
        panic!("{:?}", returned.body)
    };
    assert_eq!(inner.subject(), Some("the report"));
    assert!(inner.body_text(0).unwrap().contains("here it is."));

    // One outcome line for the bounced recipient, none more.
    let log = server.log();
    let bounced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("status=bounced"))
        .collect();
    assert_eq!(bounced.len(), 1, "{log}");
    assert!(
        bounced[0].contains("rcpt=x@bounce.test status=bounced to=alice@localhost notice=Mail"),
        "{}",
        bounced[0]
    );
    assert!(
        log.contains("rcpt=alice@localhost status=delivered"),
        "{log}"
    );
}

#[test]
fn dsn_parameters_choose_what_comes_back_and_null_senders_get_nothing() {
    let server = Server::start_with(TREE, "");
    server.add_user("alice", "a");
    server.add_user("postmaster", "p");
    let alice = server.path("var/mail/inboxes/alice");
    let postmaster = server.path("var/mail/inboxes/postmaster");

    // RET=HDRS: headers only; the error message stands in for the remote reply.
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    let reply = smtp.cmd("MAIL FROM:<alice@localhost> RET=HDRS ENVID=env+2B1");
    assert!(reply.starts_with("250"), "{reply}");
    let reply = smtp.cmd("RCPT TO:<y@plain.test> NOTIFY=FAILURE ORCPT=rfc822;y@plain.test");
    assert!(reply.starts_with("250"), "{reply}");
    let reply = smtp.cmd("RCPT TO:<z@plain.test> NOTIFY=NEVER");
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd("Subject: headers only\r\n\r\nsecret body\r\n.");
    assert!(reply.starts_with("250"), "{reply}");

    // A bounce coming in (null sender) that fails too: dropped, never bounced.
    let reply = smtp.cmd("MAIL FROM:<>");
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("RCPT TO:<w@bounce.test>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd("Subject: a bounce\r\n\r\nbody\r\n.");
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");

    wait_for("the report", || maildir_messages(&alice).len() == 1);
    wait_for("the null-sender mail dropped", || {
        server.log().contains("rcpt=w@bounce.test status=dropped")
    });
    let report = &maildir_messages(&alice)[0];
    let msg = MessageParser::new().parse(report).unwrap();
    assert!(part(&msg, "message/rfc822").is_none());
    let heads = part(&msg, "text/rfc822-headers").unwrap();
    let heads = String::from_utf8_lossy(heads.contents()).into_owned();
    assert!(heads.contains("Subject: headers only"), "{heads}");
    assert!(!String::from_utf8_lossy(report).contains("secret body"));
    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(groups.len(), 2, "z asked for no report: {groups:?}");
    assert_eq!(field(&groups[0], "Original-Envelope-Id"), Some("env+1"));
    let y = &groups[1];
    assert_eq!(field(y, "Original-Recipient"), Some("rfc822; y@plain.test"));
    assert_eq!(field(y, "Final-Recipient"), Some("rfc822; y@plain.test"));
    assert_eq!(field(y, "Status"), Some("5.0.0"));
    assert_eq!(field(y, "Remote-MTA"), None);
    assert_eq!(
        field(y, "Diagnostic-Code"),
        Some("X-Mailroom; mailbox unavailable")
    );

    let log = server.log();
    assert!(
        log.contains(
            "rcpt=w@bounce.test status=dropped reason=\"null sender: a bounce is never bounced\""
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "rcpt=z@plain.test status=dropped reason=\"the sender asked for no report (NOTIFY)\""
        ),
        "{log}"
    );
    // Nothing went to the postmaster, and nothing is left in the spool.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(maildir_messages(&postmaster).is_empty());
    assert_eq!(maildir_messages(&alice).len(), 1);
}

#[test]
fn notify_postmaster_reaches_the_postmasters_mailbox_once() {
    let server = Server::start_with(TREE, "");
    server.add_user("postmaster", "p");
    let postmaster = server.path("var/mail/inboxes/postmaster");

    // From the null sender: the postmaster still hears of it.
    let mut smtp = server.smtp();
    smtp.send_mail("", &["v@notify.test"], "Subject: lost bounce\n\nbody\n");
    smtp.cmd("QUIT");
    wait_for("the notice", || maildir_messages(&postmaster).len() == 1);
    let notice = &maildir_messages(&postmaster)[0];
    let msg = MessageParser::new().parse(notice).unwrap();
    assert_eq!(msg.subject(), Some("Re: lost bounce"));
    let human = msg.body_text(0).unwrap();
    assert!(human.contains("no route to notify.test"), "{human}");
    assert!(human.contains("MAIL FROM: <>"), "{human}");
    assert!(part(&msg, "text/rfc822-headers").is_some());
    let log = server.log();
    assert!(
        log.contains("rcpt=v@notify.test status=notified to=postmaster@localhost"),
        "{log}"
    );
}
