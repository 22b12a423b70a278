//! Recipients at RCPT (`<verifyRecipients>`, on by default): unknown local recipients are
//! refused with `550 5.1.1`, a virtual-table `error:` mapping with its own code and text, and
//! postmaster is always accepted; pipelined replies come back in order. Also the start-up
//! warning when the configured postmaster is a local user that does not exist.

use crate::harness::{
    console, envelope_of, maildir_messages, repository_count, wait_for, Server, Setup, ADMIN,
    DEFAULT_TREE,
};

#[test]
fn unknown_local_recipients_and_error_mappings_are_refused_at_rcpt_in_order() {
    let tree = DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="All" class="VirtualUserTable"/>"#,
        1,
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    });
    server.add_user("alice", "alice pass");
    let said = console(
        &server,
        &[
            "addmapping info@localhost alice@localhost",
            "addmapping gone@localhost error:551 5.1.6 gone away, write to new@example.net",
            "addmapping *@example.test alice@localhost",
        ],
    );
    assert_eq!(
        said.matches("Adding mapping successful: true").count(),
        3,
        "{said}"
    );

    // One pipelined batch: every reply comes back, in order.
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.example.net").contains("PIPELINING"));
    smtp.send(
        b"MAIL FROM:<sender@example.net>\r\n\
          RCPT TO:<nobody@localhost>\r\n\
          RCPT TO:<alice@localhost>\r\n\
          RCPT TO:<gone@localhost>\r\n\
          RCPT TO:<info@localhost>\r\n\
          RCPT TO:<anyone@example.test>\r\n\
          RCPT TO:<PostMaster@localhost>\r\n\
          RCPT TO:<postmaster>\r\n\
          RCPT TO:<Nobody@Localhost>\r\n\
          DATA\r\n",
    );
    let replies: Vec<String> = (0..10).map(|_| smtp.reply()).collect();
    assert_eq!(
        replies,
        [
            "250 2.1.0 Sender ok",
            "550 5.1.1 <nobody@localhost>: no such user here",
            "250 2.1.5 Recipient ok",
            "551 5.1.6 gone away, write to new@example.net",
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
            "250 2.1.5 Recipient ok",
            "550 5.1.1 <Nobody@localhost>: no such user here",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    smtp.send(b"Subject: hello\r\n\r\nhi\r\n.\r\n");
    assert!(smtp.reply().starts_with("250 2.0.0"));
    assert!(smtp.cmd("QUIT").starts_with("221"));

    // alice gets one copy (hers, info's and example.test's are one recipient after mapping);
    // the only address error is postmaster@localhost's copy (there is no such user here, as
    // the start-up warning said), not the refused recipients'. Each refusal is logged.
    wait_for("alice's mail", || {
        maildir_messages(&server.path("var/mail/inboxes/alice")).len() == 1
    });
    let address_error = server.path("var/mail/address-error");
    wait_for("the postmaster's copy", || {
        repository_count(&address_error) == 1
    });
    let filed = std::fs::read_dir(&address_error)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mail"))
        .unwrap();
    assert_eq!(
        envelope_of(&filed)["recipients"],
        serde_json::json!(["postmaster@localhost"])
    );
    let log = server.log();
    assert!(
        log.contains("rcpt=nobody@localhost")
            && log.contains(r#"status=refused reason="no such user""#),
        "{log}"
    );
    assert!(log.contains("rcpt=gone@localhost"), "{log}");
}

#[test]
fn verify_recipients_false_accepts_and_files_unknown_local_recipients() {
    let server = Server::start_with(DEFAULT_TREE, "<verifyRecipients>false</verifyRecipients>");
    let mut smtp = server.smtp();
    smtp.send_mail(
        "sender@example.net",
        &["nobody@localhost"],
        "Subject: to nobody\n\nhi\n",
    );
    wait_for("the address error", || {
        repository_count(&server.path("var/mail/address-error")) == 1
    });
}

#[test]
fn a_postmaster_that_is_no_user_is_warned_about_at_start_up() {
    // The harness's postmaster is postmaster@localhost, and there is no user yet.
    let server = Server::start();
    let warning = "the postmaster postmaster@localhost is not a local user";
    wait_for("the warning", || server.log().contains(warning));
    let log = server.log();
    assert!(log.contains("mailroom user add postmaster"), "{log}");
    assert_eq!(log.matches(warning).count(), 1, "{log}");

    // Once the user exists, a new start says nothing.
    let mut server = server;
    server.add_user("postmaster", "pm pass");
    server.kill();
    let before = server.log().len();
    server.spawn();
    // The SMTP port is bound after the check, so the log is complete enough here.
    let mut smtp = server.smtp();
    smtp.cmd("QUIT");
    assert!(!server.log()[before..].contains(warning));
}

#[test]
fn addresses_the_tree_routes_by_name_are_accepted_and_unused_tables_are_not_consulted() {
    // A migrated James tree handling abuse@ with a matcher, no user behind it, and no mapping
    // mailet: the default table's mappings do nothing in this tree.
    let tree = DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="RecipientIs=abuse@localhost" class="ToRepository">
        <repositoryPath>file://var/mail/abuse/</repositoryPath>
      </mailet>"#,
        1,
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    });
    server.add_user("alice", "alice pass");
    let said = console(&server, &["addmapping info@localhost alice@localhost"]);
    assert!(said.contains("Adding mapping successful: true"), "{said}");
    let mut smtp = server.smtp();
    smtp.send_mail(
        "sender@example.net",
        &["abuse@localhost"],
        "Subject: report\n\nspam seen\n",
    );
    wait_for("the abuse report", || {
        repository_count(&server.path("var/mail/abuse")) == 1
    });
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO t").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<s@example.net>").starts_with("250"));
    let reply = smtp.cmd("RCPT TO:<info@localhost>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
}
