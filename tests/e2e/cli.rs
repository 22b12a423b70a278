//! `mailroom user ...` manages the users repository, and a running server sees the change.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{maildir_messages, repository_count, wait_for, Server, BIN};

#[test]
fn user_commands_and_live_changes() {
    let server = Server::start();
    // A user added while the server runs receives mail at once.
    server.add_user("carol", "pw one");
    let list = server.cli(&["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "carol");

    // Password from stdin, --config after the subcommand.
    let mut child = Command::new(BIN)
        .args(["user", "add", "dave", "--config"])
        .arg(&server.config)
        .arg("--home")
        .arg(server.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"secret with spaces\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read_to_string(server.path("var/users/dave.user")).unwrap();
    assert!(stored.contains("$argon2id$"), "{stored}");
    assert!(!stored.contains("secret with spaces"));

    // Bad names and duplicates are refused.
    let out = server.cli(&["user", "add", "../../etc/x", "--password", "y"]);
    assert!(!out.status.success());
    assert!(!server.path("etc").exists() && !server.path("var/etc").exists());
    assert!(!server
        .cli(&["user", "add", "carol", "--password", "z"])
        .status
        .success());

    assert!(server
        .cli(&["user", "passwd", "carol", "--password", "pw two"])
        .status
        .success());
    assert!(!server
        .cli(&["user", "passwd", "nobody", "--password", "x"])
        .status
        .success());

    let mut smtp = server.smtp();
    smtp.cmd("HELO t");
    smtp.cmd("MAIL FROM:<x@example.net>");
    smtp.cmd("RCPT TO:<carol@localhost>");
    smtp.cmd("DATA");
    assert!(smtp.cmd("Subject: hi\r\n\r\nhi\r\n.").starts_with("250"));
    wait_for("carol's mail", || {
        maildir_messages(&server.path("var/mail/inboxes/carol")).len() == 1
    });

    // A deleted user is refused at once, with no restart.
    assert!(server.cli(&["user", "del", "carol"]).status.success());
    assert!(!server.cli(&["user", "del", "carol"]).status.success());
    smtp.cmd("MAIL FROM:<x@example.net>");
    let reply = smtp.cmd("RCPT TO:<carol@localhost>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    assert_eq!(repository_count(&server.path("var/mail/address-error")), 0);
    let list = server.cli(&["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "dave");
}

#[test]
fn sigterm_says_goodbye_to_sessions_and_exits_cleanly() {
    let mut server = Server::start();
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO t").starts_with("250"));
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let goodbye = smtp.reply();
    assert!(goodbye.starts_with("421 4.3.2"), "{goodbye}");
    assert!(server.log().contains("stopped"));
}
