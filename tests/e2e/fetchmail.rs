//! FetchMail end to end: a Mailroom pulls, over POP3, the mail of an account on a second
//! Mailroom, started through `<fetchmail enabled="true">` and run on demand with
//! `mailroom fetchmail run NAME`; kept mail is never fetched twice, across a kill -9 and a
//! restart. The Dovecot variants (plain, STLS, POP3S) run in `.ci/run`.

use crate::harness::{maildir_messages, wait_for, Server, Setup, DEFAULT_TREE};

/// A FetchMail block pulling `alice` on `127.0.0.1:port` for `bob@localhost`.
fn fetch_block(port: u16, options: &str) -> String {
    format!(
        r#"<fetchmail enabled="true"><fetch name="pull">
      <host>127.0.0.1</host><port>{port}</port><interval>3600000</interval>
      <javaMailProperties><property name="mail.pop3.starttls.enable" value="false"/></javaMailProperties>
      <accounts><account user="alice" password="a secret" recipient="bob@localhost" ignorercpt-header="true"/></accounts>
      {options}
    </fetch></fetchmail>"#
    )
}

/// A source server holding `n` mails for alice.
fn source_with_mail(n: usize) -> Server {
    let source = Server::start_setup(&Setup {
        pop3_handler: Some(""),
        ..Setup::default()
    });
    source.add_user("alice", "a secret");
    let mut smtp = source.smtp();
    for i in 0..n {
        smtp.send_mail(
            "carol@example.net",
            &["alice@localhost"],
            &format!("Subject: mail {i}\r\n\r\nbody {i}\r\n"),
        );
    }
    wait_for("the source's mails", || stored(&source) == n);
    source
}

/// Messages in alice's Maildir on the source (new and cur).
fn stored(source: &Server) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(source.path(&format!("var/mail/inboxes/alice/{d}")))
                .map_or(0, |r| r.count())
        })
        .sum()
}

fn run_task(server: &Server) -> String {
    // The control socket comes up just after the listeners.
    let mut out = server.cli(&["fetchmail", "run", "pull"]);
    for _ in 0..50 {
        if out.status.success()
            || !String::from_utf8_lossy(&out.stderr).contains("no running server")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = server.cli(&["fetchmail", "run", "pull"]);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The default tree, with mail the task `pull` fetched marked by `FetchedFrom`.
fn tree_marking_fetched_mail() -> String {
    DEFAULT_TREE.replacen(
        r#"<processor name="root">"#,
        r#"<processor name="root">
      <mailet match="FetchedFrom=pull" class="SetMimeHeader"><name>X-Matched</name><value>fetched</value></mailet>"#,
        1,
    )
}

#[test]
fn pulls_from_a_second_mailroom_and_deletes_there() {
    let source = source_with_mail(2);
    let tree = tree_marking_fetched_mail();
    let puller = Server::start_setup(&Setup {
        tree: &tree,
        extra: &fetch_block(source.pop3_port, ""),
        ..Setup::default()
    });
    puller.add_user("bob", "b secret");
    // A sender writing the task's field itself is not taken for fetched mail.
    puller.smtp().send_mail(
        "mallory@example.net",
        &["bob@localhost"],
        "X-fetched-from: pull\r\nSubject: forged\r\n\r\nbody\r\n",
    );
    // The first run (at start) may have come before bob existed: rejected and left there.
    let out = run_task(&puller);
    assert!(out.contains("accounts_failed=0"), "{out}");
    let bob = puller.path("var/mail/inboxes/bob");
    wait_for("bob's fetched mail", || maildir_messages(&bob).len() == 3);
    for m in maildir_messages(&bob) {
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("\nX-fetched-from: pull\n"), "{text}");
        let forged = text.contains("Subject: forged");
        assert_eq!(text.contains("X-Matched: fetched"), !forged, "{text}");
    }
    assert_eq!(stored(&source), 0, "deleted on the source");
    assert!(run_task(&puller).contains("fetched=0"));
    let log = puller.log();
    assert!(
        log.contains("fetched message") && log.contains("spooled as"),
        "{log}"
    );
    let out = puller.cli(&["fetchmail", "run", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no fetch task named"));
}

#[test]
fn kept_mail_is_not_fetched_again_after_kill_and_restart() {
    let source = source_with_mail(3);
    let mut puller = Server::start_setup(&Setup {
        extra: &fetch_block(
            source.pop3_port,
            // Before bob exists, the start-up run leaves the mail there (userundefined).
            r#"<fetched leaveonserver="true" markseen="false"/>"#,
        ),
        ..Setup::default()
    });
    puller.add_user("bob", "b secret");
    let bob = puller.path("var/mail/inboxes/bob");
    run_task(&puller);
    wait_for("bob's fetched mail", || maildir_messages(&bob).len() == 3);
    // The spool's removals too: one not yet written when killed delivers its mail again.
    wait_for("the spool empty", || puller.spool_empty());
    puller.kill();
    puller.spawn();
    // The start-up run, then one on demand: neither fetches the kept mail again.
    let out = run_task(&puller);
    assert!(out.contains("fetched=0"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(maildir_messages(&bob).len(), 3);
    assert_eq!(stored(&source), 3, "kept on the source");
}
