//! Where a mail went: one log line per recipient outcome, in the stable `key=value` shape
//! (`mail=NAME rcpt=ADDRESS status=...`), with addresses shown plainly.

use std::time::{Duration, Instant};

use crate::harness::{console, Server, Setup, ADMIN, DEFAULT_TREE};

#[test]
fn every_recipient_outcome_is_one_greppable_line() {
    let tree = DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="All" class="VirtualUserTable"/>"#,
        1,
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        // nobody@localhost gets through to the tree, which files it as an address error.
        smtp_handler: "<verifyRecipients>false</verifyRecipients>",
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    });
    for user in ["alice", "carol", "erin", "frank"] {
        server.add_user(user, "a password");
    }
    let said = console(
        &server,
        &[
            "setforwarding carol bob@remote.example",
            "setalias erin frank",
            "deluser frank",
            "addmapping info@localhost alice@localhost",
            "addmapping gone@localhost error:550 5.1.1 gone away",
        ],
    );
    assert!(
        said.contains("Forwarding destination for carol set to:bob@remote.example"),
        "{said}"
    );
    assert!(said.contains("Adding mapping successful: true"), "{said}");

    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.example.net").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@example.net>")
        .starts_with("250"));
    for rcpt in [
        "alice@localhost",
        "carol@localhost",
        "erin@localhost",
        "info@localhost",
        "gone@localhost",
        "nobody@localhost",
        "x@remote.example",
    ] {
        let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd("Subject: where did it go\r\n\r\nhi\r\n.");
    // `250 2.0.0 Message accepted for delivery (id NAME)`
    let name = reply
        .rsplit_once("(id ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    smtp.cmd("QUIT");

    let maildir = server.path("var/mail/inboxes/alice");
    // Each outcome, after `mail=<the name SMTP gave>` or the name of a copy made from it
    // (`<name>-<random>`: a split, a forward, a copy sent to `error`).
    let expected = [
        "rcpt=info@localhost status=mapped to=alice@localhost table=default".to_string(),
        format!(
            "rcpt=alice@localhost status=delivered mailbox=alice maildir={}",
            maildir.display()
        ),
        "rcpt=carol@localhost status=forwarded to=bob@remote.example forward=".to_string(),
        "rcpt=erin@localhost status=failed reason=\"alias names no existing user\" copy="
            .to_string(),
        "rcpt=gone@localhost status=refused reason=\"550 5.1.1 gone away\" copy=".to_string(),
        "rcpt=nobody@localhost status=stored repository=file://var/mail/address-error/ \
         error=\"550 - Requested action not taken: no such user here\""
            .to_string(),
        "rcpt=x@remote.example status=stored repository=file://var/mail/outgoing/".to_string(),
        "rcpt=bob@remote.example status=stored repository=file://var/mail/outgoing/".to_string(),
        "rcpt=erin@localhost status=stored repository=file://var/mail/error/ \
         error=\"LocalDelivery: erin@localhost: alias names no existing user\""
            .to_string(),
        "rcpt=gone@localhost status=stored repository=file://var/mail/error/ \
         error=\"550 5.1.1 gone away\""
            .to_string(),
    ];
    // The log lines with this outcome, each checked to start `mail=<name>`.
    let lines_of = |log: &str, outcome: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(outcome))
            .map(str::to_string)
            .collect()
    };
    let missing = || -> Vec<&String> {
        let log = server.log();
        expected
            .iter()
            .filter(|o| lines_of(&log, o).is_empty())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !missing().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    assert!(missing().is_empty(), "missing {:#?} in\n{log}", missing());
    // Each outcome once, on a line that a search for the mail's name finds.
    for outcome in &expected {
        let lines = lines_of(&log, outcome);
        assert_eq!(lines.len(), 1, "{outcome}\n{log}");
        let at = lines[0].find(" mail=").expect("mail= first") + 1;
        let mail = lines[0][at..].split(' ').next().unwrap();
        assert!(
            mail == format!("mail={name}") || mail.starts_with(&format!("mail={name}-")),
            "{}",
            lines[0]
        );
        assert!(
            lines[0][at..].starts_with(&format!("{mail} {outcome}")),
            "{}",
            lines[0]
        );
    }
    // Nothing printed as Rust debug output.
    for debug in ["Ok(", "Some(", "MailAddress"] {
        assert!(!log.contains(debug), "{debug} in the log:\n{log}");
    }
}
