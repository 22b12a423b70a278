//! One mail over smtplib to two local users and one unknown local user, with James 2.3's
//! accept-then-file (`<verifyRecipients>false</verifyRecipients>`): the unknown user's copy is
//! filed in the address-error repository. (By default it is refused at RCPT: see
//! `smtp_input.rs`.)

use std::process::Command;

use crate::harness::{maildir_messages, repository_count, wait_for, Server};

#[test]
fn smtplib_mail_reaches_maildirs_and_unknown_user_goes_to_address_error() {
    let server = Server::start_with(
        crate::harness::DEFAULT_TREE,
        "<verifyRecipients>false</verifyRecipients>",
    );
    server.add_user("alice", "alice pass");
    server.add_user("bob", "bob pass");
    let script = format!(
        r#"
import smtplib
msg = "From: sender@example.net\r\nTo: alice@localhost\r\nSubject: hello\r\n\r\nHello there.\r\n.leading dot\r\n"
with smtplib.SMTP("127.0.0.1", {port}) as s:
    s.ehlo("client.example.net")
    refused = s.sendmail("sender@example.net", ["alice@localhost", "Bob@LOCALHOST", "nobody@localhost"], msg)
    assert refused == {{}}, refused
"#,
        port = server.smtp_port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let inboxes = server.path("var/mail/inboxes");
    let address_error = server.path("var/mail/address-error");
    wait_for("deliveries", || {
        maildir_messages(&inboxes.join("alice")).len() == 1
            && maildir_messages(&inboxes.join("bob")).len() == 1
            && repository_count(&address_error) == 1
    });
    for (user, rcpt) in [("alice", "alice@localhost"), ("bob", "Bob@localhost")] {
        let messages = maildir_messages(&inboxes.join(user));
        assert_eq!(messages.len(), 1, "{user}");
        let text = String::from_utf8(messages[0].clone()).unwrap();
        assert!(
            text.starts_with("Return-Path: <sender@example.net>\n") && !text.contains('\r'),
            "{text}"
        );
        assert!(text.contains(&format!("Delivered-To: {rcpt}\n")), "{text}");
        assert!(text.contains("Received: from client.example.net"), "{text}");
        assert!(text.contains("by mail.example.test"), "{text}");
        assert!(text.ends_with("\nHello there.\n.leading dot\n"), "{text}");
    }
    let envelope = only_envelope(&address_error);
    assert_eq!(
        envelope["recipients"],
        serde_json::json!(["nobody@localhost"])
    );
    assert_eq!(envelope["state"], "local-address-error");
    assert!(envelope["error_message"]
        .as_str()
        .unwrap()
        .contains("no such user"));
    // Nothing is left in the spool.
    wait_for("empty spool", || {
        repository_count(&server.path("var/mail/spool")) == 0
    });
}

/// The envelope of the only mail in a file repository.
pub fn only_envelope(dir: &std::path::Path) -> serde_json::Value {
    let envs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mail"))
        .collect();
    assert_eq!(envs.len(), 1, "{envs:?}");
    crate::harness::envelope_of(&envs[0])
}

/// Every envelope in a file repository.
pub fn envelopes(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "mail"))
                .map(|p| crate::harness::envelope_of(&p))
                .collect()
        })
        .unwrap_or_default()
}
