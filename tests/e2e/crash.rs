//! Crash safety: kill -9 while mail is being delivered; every mail that got 250 is delivered
//! after the restart (duplicates allowed, losses not).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::harness::{maildir_messages, wait_for, Server, Smtp};

#[test]
fn kill_9_during_delivery_loses_nothing() {
    let mut server = Server::start();
    server.add_user("alice", "a");
    let port = server.smtp_port;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let Ok(result) = std::panic::catch_unwind(move || {
                let mut smtp = Smtp::connect(port);
                smtp.cmd("EHLO crash");
                for i in 0..200 {
                    smtp.cmd("MAIL FROM:<s@example.net>");
                    smtp.cmd("RCPT TO:<alice@localhost>");
                    smtp.cmd("DATA");
                    let reply = smtp.cmd(&format!(
                        "Message-ID: <crash-{i}@test>\r\n\r\nbody {i}\r\n."
                    ));
                    if reply.starts_with("250") {
                        accepted.lock().unwrap().push(format!("<crash-{i}@test>"));
                    }
                }
            }) else {
                return; // the server was killed under us: expected
            };
            result
        })
    };
    let inbox = server.path("var/mail/inboxes/alice");
    wait_for("some deliveries", || maildir_messages(&inbox).len() >= 30);
    server.kill();
    let _ = sender.join();
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 30, "only {} accepted", accepted.len());

    server.spawn();
    let delivered = || -> HashSet<String> {
        maildir_messages(&inbox)
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(m);
                let start = text.find("Message-ID: ")? + 12;
                let end = text[start..].find('\n')? + start;
                Some(text[start..end].to_string())
            })
            .collect()
    };
    wait_for("every accepted mail delivered", || {
        accepted.iter().all(|id| delivered().contains(id))
    });
}
