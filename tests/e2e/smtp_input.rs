//! Bad SMTP input gets the right reply and the session (and server) go on.

use crate::harness::{maildir_messages, wait_for, Server};

#[test]
fn bad_input_gets_clear_errors_and_the_session_goes_on() {
    let server = Server::start_with(
        crate::harness::DEFAULT_TREE,
        "<maxmessagesize>1</maxmessagesize><maxRcpt>100</maxRcpt>",
    );
    server.add_user("alice", "a");
    let mut smtp = server.smtp();
    let ehlo = smtp.cmd("EHLO test");
    for ext in ["PIPELINING", "SIZE 1024", "8BITMIME", "ENHANCEDSTATUSCODES"] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }

    // Overlong line.
    let long = format!("NOOP {}", "x".repeat(10_000));
    assert!(smtp.cmd(&long).starts_with("500"), "overlong line");
    assert!(smtp.cmd("NOOP").starts_with("250"));

    // Missing brackets.
    assert!(smtp.cmd("MAIL FROM:alice@localhost").starts_with("501"));
    assert!(smtp.cmd("MAIL FROM:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:bob@localhost").starts_with("501"));

    // 101 recipients over maxRcpt=100 (remote ones: loopback may relay).
    for i in 0..100 {
        let reply = smtp.cmd(&format!("RCPT TO:<user{i}@example.net>"));
        assert!(reply.starts_with("250"), "{i}: {reply}");
    }
    assert!(smtp
        .cmd("RCPT TO:<one-too-many@example.net>")
        .starts_with("452"));
    assert!(smtp.cmd("RSET").starts_with("250"));

    // Relaying from loopback is allowed by default; declared size over the limit is not.
    assert!(smtp
        .cmd("MAIL FROM:<a@example.net> SIZE=5000")
        .starts_with("552"));

    // Actual size over the limit.
    assert!(smtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    let big = "x".repeat(100);
    let mut data = String::from("Subject: big\r\n\r\n");
    for _ in 0..30 {
        data.push_str(&big);
        data.push_str("\r\n");
    }
    assert!(smtp.cmd(&format!("{data}.")).starts_with("552"));

    // SMTP smuggling: a bare-LF end of data must not end the data nor run what follows.
    assert!(smtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(
        b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n",
    );
    let reply = smtp.reply();
    assert!(reply.starts_with("550 5.6.2"), "{reply}");
    // The next reply belongs to our next command, not to a smuggled one.
    assert!(smtp.cmd("NOOP").starts_with("250"));

    // Then a good mail goes through on the same session.
    assert!(smtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@localhost>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    assert!(smtp.cmd("Subject: fine\r\n\r\nok\r\n.").starts_with("250"));
    assert!(smtp.cmd("QUIT").starts_with("221"));

    let inbox = server.path("var/mail/inboxes/alice");
    wait_for("the good mail", || maildir_messages(&inbox).len() == 1);
    let text = String::from_utf8(maildir_messages(&inbox)[0].clone()).unwrap();
    assert!(text.contains("Subject: fine"), "{text}");
    assert!(!text.contains("smuggled"));

    // The server still serves new sessions.
    let mut again = server.smtp();
    assert!(again.cmd("HELO again").starts_with("250"));
}

#[test]
fn no_open_relay_from_unauthorized_addresses() {
    // Only 10.9.9.9 may relay: the loopback test client may not.
    let server = Server::start_with(
        crate::harness::DEFAULT_TREE,
        "<authorizedAddresses>10.9.9.9/32</authorizedAddresses>",
    );
    server.add_user("alice", "a");
    let mut smtp = server.smtp();
    smtp.cmd("EHLO test");
    assert!(smtp.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    let reply = smtp.cmd("RCPT TO:<victim@remote.example>");
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // Local recipients are still accepted.
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
}
