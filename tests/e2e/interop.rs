//! Real Debian clients that `.ci/run` installs. In a plain `cargo test` these are ignored;
//! `.ci/run` runs them with `--ignored`.

use std::process::Command;

use crate::harness::{maildir_messages, wait_for, Server};

#[test]
#[ignore = "needs swaks (installed by .ci/run)"]
fn swaks_sends_a_mail_with_pipelining() {
    let server = Server::start();
    server.add_user("alice", "a");
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", server.smtp_port)])
        .args(["--to", "alice@localhost", "--from", "sender@example.net"])
        .args(["--helo", "swaks.example.net", "--pipeline"])
        .args(["--header", "Subject: from swaks", "--body", "swaks body"])
        .output()
        .expect("swaks is installed");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("250 2.0.0"), "{transcript}");
    let inbox = server.path("var/mail/inboxes/alice");
    wait_for("swaks mail", || maildir_messages(&inbox).len() == 1);
    let text = String::from_utf8(maildir_messages(&inbox)[0].clone()).unwrap();
    assert!(
        text.contains("Subject: from swaks") && text.contains("swaks body"),
        "{text}"
    );
    assert!(text.contains("Received: from swaks.example.net"), "{text}");
}
