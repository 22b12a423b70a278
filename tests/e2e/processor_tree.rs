//! A custom processor tree: routing on subject, a ToProcessor to a missing processor, failing
//! mailets with and without `onMailetException="ignore"`, recipient splitting.

use crate::delivery::envelopes;
use crate::harness::{maildir_messages, repository_count, wait_for, Server};

const TREE: &str = r#"
    <processor name="root">
      <mailet match="SubjectStartsWith=[SPAM]" class="ToProcessor"><processor> spam </processor></mailet>
      <mailet match="SubjectStartsWith=fail" class="ToRepository">
        <repositoryPath>file:///dev/null/cannot/</repositoryPath>
      </mailet>
      <mailet match="SubjectStartsWith=ignored" class="ToRepository" onMailetException="ignore">
        <repositoryPath>file:///dev/null/cannot/</repositoryPath>
      </mailet>
      <mailet match="RecipientIs=bob@localhost" class="SetMimeHeader">
        <name>X-Split</name><value>bob only</value>
      </mailet>
      <mailet match="SubjectStartsWith=deadend" class="ToProcessor"><processor>deadend</processor></mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="spam">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/spam/</repositoryPath></mailet>
    </processor>
    <processor name="deadend">
      <mailet match="All" class="SetMailAttribute"><seen>yes</seen></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#;

fn send(server: &Server, subject: &str, rcpts: &[&str]) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO test").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@example.net>")
        .starts_with("250"));
    for rcpt in rcpts {
        assert!(smtp.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    }
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd(&format!("Subject: {subject}\r\n\r\nbody\r\n."));
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
}

#[test]
fn custom_tree_follows_the_processing_rules() {
    let server = Server::start_with(TREE, "");
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    let alice = server.path("var/mail/inboxes/alice");
    let bob = server.path("var/mail/inboxes/bob");
    let error = server.path("var/mail/error");

    send(&server, "[SPAM] buy now", &["alice@localhost"]);
    wait_for("spam", || {
        repository_count(&server.path("var/mail/spam")) == 1
    });

    // (A ToProcessor naming a processor that does not exist is a configuration error since
    // issue 9; first_hour.rs checks it.)
    send(&server, "fail hard", &["alice@localhost"]);
    wait_for("one error", || repository_count(&error) == 1);
    let messages: Vec<String> = envelopes(&error)
        .iter()
        .map(|e| e["error_message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        messages[0].contains("ToRepository") && messages[0].contains("failed"),
        "{messages:?}"
    );

    send(&server, "ignored failure", &["alice@localhost"]);
    wait_for("ignored delivered", || maildir_messages(&alice).len() == 1);

    send(&server, "split", &["alice@localhost", "bob@localhost"]);
    wait_for("split delivered", || {
        maildir_messages(&alice).len() == 2 && maildir_messages(&bob).len() == 1
    });
    let bob_text = String::from_utf8(maildir_messages(&bob)[0].clone()).unwrap();
    assert!(bob_text.contains("X-Split: bob only"), "{bob_text}");
    assert!(maildir_messages(&alice)
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains("X-Split")));

    send(&server, "deadend", &["alice@localhost"]);
    wait_for("end-of-processor warning", || {
        server.log().contains("reached the end of its processor")
    });
    wait_for("empty spool", || {
        repository_count(&server.path("var/mail/spool")) == 0
    });
    // Nothing else reached the inboxes or the error repository.
    assert_eq!(maildir_messages(&alice).len(), 2);
    assert_eq!(repository_count(&error), 1);
}

#[test]
fn unknown_names_stop_the_server_with_file_and_line() {
    let tree = TREE.replace("class=\"Null\"", "class=\"Nul\"");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.xml");
    std::fs::write(&config, crate::harness::config_xml(1, &tree, "")).unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = crate::harness::config_xml(1, &tree, "")
        .lines()
        .position(|l| l.contains("class=\"Nul\""))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("config.xml:{line}: unknown mailet \"Nul\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains("LocalDelivery"),
        "lists the known names: {stderr}"
    );
}
