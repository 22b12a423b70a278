//! `mailroom queue` with the server running and stopped, the console's repository rules, and a
//! start on a busy port that leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{
    config_xml, maildir_messages, repository_count, wait_for, Server, Setup, BIN,
};

/// Runs `mailroom queue <args>`: (success, stdout, stderr).
fn queue(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = server.cli(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The listing of the spool or a repository; panics if the command fails.
fn list(server: &Server, url: Option<&str>) -> String {
    let mut args = vec!["list"];
    args.extend(url);
    let (ok, out, err) = queue(server, &args);
    assert!(ok, "{err}");
    out
}

/// The name of the first mail listed.
fn first_name(listing: &str) -> String {
    listing.split(' ').next().unwrap().to_string()
}

/// bob's Maildir becomes a symbolic link to itself: every delivery to bob fails temporarily
/// (ELOOP), and his mail stays in the spool with an error and a next attempt.
fn break_bobs_inbox(server: &Server) {
    let bob = server.path("var/mail/inboxes/bob");
    std::fs::create_dir_all(bob.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&bob, &bob).unwrap();
}

#[test]
fn queue_lists_shows_flushes_and_deletes_with_the_server_running_and_stopped() {
    // Unknown users accepted and filed, as in James, to have a mail in a repository.
    let mut server = Server::start_with(
        crate::harness::DEFAULT_TREE,
        "<verifyRecipients>false</verifyRecipients>",
    );
    server.add_user("bob", "pw");
    break_bobs_inbox(&server);
    let mut smtp = server.smtp();
    smtp.send_mail(
        "sender@example.org",
        &["bob@localhost"],
        "Subject: stuck\n\nbody\n",
    );
    smtp.send_mail(
        "sender@example.org",
        &["nobody@localhost"],
        "Subject: lost\n\nbody\n",
    );
    let address_error = server.path("var/mail/address-error");
    wait_for("the unknown user's mail in address-error", || {
        repository_count(&address_error) == 1
    });
    wait_for("the stuck mail listed with its error", || {
        list(&server, None).contains("    error: ")
    });

    // list and show read the spool of the running server.
    let listing = list(&server, None);
    let line = listing.lines().next().unwrap();
    assert!(line.starts_with("Mail"), "{listing}");
    for field in [
        " state=transport ",
        " sender=<sender@example.org> ",
        " recipients=bob@localhost",
        " age=",
        " next=",
        " size=",
    ] {
        assert!(line.contains(field), "{field} not in {listing}");
    }
    assert!(listing.ends_with("1 mail(s) in the spool\n"), "{listing}");
    let stuck = first_name(&listing);
    let (ok, shown, err) = queue(&server, &["show", &stuck]);
    assert!(ok, "{err}");
    for part in [
        "state: transport\n",
        "recipients: bob@localhost\n",
        "next attempt: ",
        "\nerror: ",
        "Subject: stuck\r\n",
    ] {
        assert!(shown.contains(part), "{part:?} not in {shown}");
    }
    assert!(!shown.contains("body"), "{shown}");

    // A repository the configuration names.
    let repo = list(&server, Some("file://var/mail/address-error/"));
    assert!(repo.contains(" recipients=nobody@localhost"), "{repo}");
    assert!(
        repo.ends_with("1 mail(s) in file://var/mail/address-error/\n"),
        "{repo}"
    );
    let lost = first_name(&repo);

    // Others are refused, and a configured one that does not exist is not created.
    let (ok, _, err) = queue(&server, &["list", "file:///tmp/"]);
    assert!(
        !ok && err.contains("not a repository that the configuration names"),
        "{err}"
    );
    let (ok, _, err) = queue(&server, &["list", "file://var/mail/error/"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    assert!(!server.path("var/mail/error").exists());
    let (ok, _, err) = queue(&server, &["delete", "--all", "file://var/mail/typo/"]);
    assert!(!ok && err.contains("not a repository"), "{err}");

    // Flush from a repository while running: once nobody exists, back to the spool and
    // delivered.
    server.add_user("nobody", "pw");
    let (ok, out, err) = queue(&server, &["flush", &lost, "file://var/mail/address-error/"]);
    assert_eq!((ok, out.as_str()), (true, "flushed 1 mail(s)\n"), "{err}");
    wait_for("the flushed mail in nobody's Maildir", || {
        maildir_messages(&server.path("var/mail/inboxes/nobody")).len() == 1
    });
    assert_eq!(repository_count(&address_error), 0);
    let (ok, _, err) = queue(&server, &["flush", &lost, "file://var/mail/address-error/"]);
    assert!(!ok && err.contains("no mail"), "{err}");

    // Delete from the spool while running: the server removes it.
    let (ok, out, err) = queue(&server, &["delete", &stuck]);
    assert_eq!((ok, out.as_str()), (true, "deleted 1 mail(s)\n"), "{err}");
    assert!(list(&server, None).ends_with("0 mail(s) in the spool\n"));
    assert!(server.log().contains("queue request done"));

    // With the server stopped.
    smtp.send_mail(
        "sender@example.org",
        &["bob@localhost"],
        "Subject: again\n\nbody\n",
    );
    smtp.send_mail(
        "sender@example.org",
        &["nobody2@localhost"],
        "Subject: lost\n\nx\n",
    );
    wait_for("the second stuck mail listed with its error", || {
        list(&server, None).contains("    error: ")
    });
    wait_for("the second mail in address-error", || {
        repository_count(&address_error) == 1
    });
    drop(smtp);
    assert!(server.terminate().success());
    assert!(!server.path("var/mail/spool/control.sock").exists());
    let listing = list(&server, None);
    assert!(listing.contains(" state=transport "), "{listing}");
    let (ok, out, err) = queue(&server, &["flush", "--all"]);
    assert_eq!((ok, out.as_str()), (true, "flushed 1 mail(s)\n"), "{err}");
    assert!(list(&server, None).contains(" next=now "));
    let (ok, out, err) = queue(
        &server,
        &["delete", "--all", "file://var/mail/address-error/"],
    );
    assert_eq!((ok, out.as_str()), (true, "deleted 1 mail(s)\n"), "{err}");
    assert_eq!(repository_count(&address_error), 0);

    // Fixed, and started again: the flushed mail is delivered, the deleted one never was.
    std::fs::remove_file(server.path("var/mail/inboxes/bob")).unwrap();
    server.spawn();
    wait_for("the flushed mail in bob's Maildir", || {
        maildir_messages(&server.path("var/mail/inboxes/bob")).len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let bob = maildir_messages(&server.path("var/mail/inboxes/bob"));
    assert_eq!(bob.len(), 1);
    assert!(String::from_utf8_lossy(&bob[0]).contains("Subject: again"));
}

/// Logs in to the console and runs `commands`; returns every reply line after the welcome.
fn console(port: u16, commands: &[&str]) -> Vec<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut input = "root\r\nsecret pass\r\n".to_string();
    for command in commands {
        input.push_str(command);
        input.push_str("\r\n");
    }
    input.push_str("quit\r\n");
    stream.write_all(input.as_bytes()).unwrap();
    let lines: Vec<String> = BufReader::new(stream).lines().map(|l| l.unwrap()).collect();
    let welcome = lines.iter().position(|l| l.starts_with("Welcome")).unwrap();
    lines[welcome + 1..].to_vec()
}

#[test]
fn the_console_opens_only_configured_repositories_and_reading_changes_nothing() {
    let server = Server::start_setup(&Setup {
        remote_manager_handler: Some(
            r#"<administrator_accounts><account login="root" password="secret pass"/></administrator_accounts>"#,
        ),
        ..Setup::default()
    });
    // Files that listing a directory used to clean up or quarantine.
    let outside = server.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("junk.tmp"), "x").unwrap();
    std::fs::write(outside.join("Mail-x.mail"), "not a mail").unwrap();
    let absolute = format!("file://{}/", outside.display());
    let refused = [
        "listspool file://outside/".to_string(),
        "listspool file://var/mail/error/../../../outside/".to_string(),
        format!("listspool {absolute}"),
        format!("deletespool {absolute}"),
        format!("flushspool {absolute}"),
    ];
    let mut commands: Vec<&str> = refused.iter().map(String::as_str).collect();
    commands.extend([
        "listspool file://var/mail/error/",
        "listspool file://var/mail/spool/ state=nosuch",
    ]);
    let replies = console(server.remote_manager_port, &commands);
    for (i, command) in refused.iter().enumerate() {
        assert!(
            replies[i].starts_with("Error ")
                && replies[i].ends_with("not a repository that the configuration names"),
            "{command}: {replies:?}"
        );
    }
    assert_eq!(
        replies[refused.len()],
        "Error opening the spoolrepository repository file://var/mail/error/ does not exist"
    );
    assert_eq!(replies[refused.len() + 1], "Number of spooled mails: 0");
    assert!(outside.join("junk.tmp").exists());
    assert!(outside.join("Mail-x.mail").exists());
    assert!(!outside.join("corrupt").exists());
    assert!(!server.path("var/mail/error").exists());
}

#[test]
fn a_start_on_a_busy_port_leaves_no_storage_behind() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.xml");
    std::fs::write(&config, config_xml(port, crate::harness::DEFAULT_TREE, "")).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot listen"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["config.xml"], "{stderr}");
}

/// A mail stuck in the spool of a running server (bob's inbox is broken); returns its name.
fn stuck_mail(server: &Server) -> String {
    server.add_user("bob", "pw");
    break_bobs_inbox(server);
    server.smtp().send_mail(
        "sender@example.org",
        &["bob@localhost"],
        "Subject: stuck\n\nbody\n",
    );
    wait_for("the stuck mail listed with its error", || {
        list(server, None).contains("    error: ")
    });
    first_name(&list(server, None))
}

/// Sends `request` to the control socket and returns the answer ("" when none).
fn control(server: &Server, request: &[u8]) -> String {
    use std::io::Read;
    let path = server.path("var/mail/spool/control.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A refused peer may find the connection closed already.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn the_control_socket_refuses_cut_short_requests_and_other_users() {
    let server = Server::start();
    let stuck = stuck_mail(&server);
    // Cut short: no line feed before the end.
    let answer = control(&server, b"delete * -");
    assert!(answer.starts_with("ERR "), "{answer}");
    assert!(list(&server, None).contains(&stuck));

    // Another user, let through the file modes on purpose: the peer's uid is checked.
    if rustix::process::getuid().is_root() {
        use std::os::unix::fs::PermissionsExt;
        for dir in ["", "var", "var/mail", "var/mail/spool"] {
            let perms = std::fs::Permissions::from_mode(0o711);
            std::fs::set_permissions(server.path(dir), perms).unwrap();
        }
        let socket = server.path("var/mail/spool/control.sock");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let answer = std::thread::scope(|s| {
            s.spawn(|| {
                // This thread alone becomes `nobody`.
                rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
                control(&server, b"delete * -\n")
            })
            .join()
            .unwrap()
        });
        assert_eq!(answer, "");
        assert!(list(&server, None).contains(&stuck));
        assert!(server.log().contains("request from another user refused"));
    }
    // The server's own user is answered.
    assert_eq!(control(&server, b"delete * -\n"), "OK 1\n");
}

#[test]
fn a_delete_in_a_repository_with_the_server_stopped_leaves_the_spool_alone() {
    let mut server = Server::start();
    assert!(server.terminate().success());
    let spool = server.path("var/mail/spool");
    let segments = || -> Vec<_> {
        let mut names: Vec<_> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = segments();
    std::fs::create_dir_all(server.path("var/mail/address-error")).unwrap();
    let url = "file://var/mail/address-error/";
    let (ok, out, err) = queue(&server, &["delete", "--all", url]);
    assert_eq!((ok, out.as_str()), (true, "deleted 0 mail(s)\n"), "{err}");
    assert_eq!(segments(), before);

    // No spool at all: neither created by a delete nor by a flush, which says why it fails.
    std::fs::remove_dir_all(&spool).unwrap();
    let (ok, _, err) = queue(&server, &["delete", "--all", url]);
    assert!(ok, "{err}");
    let (ok, _, err) = queue(&server, &["flush", "--all", url]);
    assert!(!ok && err.contains("no spool"), "{err}");
    let (ok, out, err) = queue(&server, &["flush", "--all"]);
    assert_eq!((ok, out.as_str()), (true, "flushed 0 mail(s)\n"), "{err}");
    assert!(!spool.exists());
}

/// The spool's `big-*.log` segments (one per mail over 256 KiB), sorted.
fn big_segments(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.path("var/mail/spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("big-"))
        .collect();
    names.sort();
    names
}

#[test]
fn flushing_a_spooled_mail_makes_it_due_without_writing_it_again() {
    let server = Server::start_setup(&Setup {
        remote_manager_handler: Some(
            r#"<administrator_accounts><account login="root" password="secret pass"/></administrator_accounts>"#,
        ),
        ..Setup::default()
    });
    server.add_user("bob", "pw");
    break_bobs_inbox(&server);
    // Over 256 KiB: the message has a segment of its own, which a rewrite would replace.
    let body = "x".repeat(76).repeat(4000);
    server.smtp().send_mail(
        "sender@example.org",
        &["bob@localhost"],
        &format!("Subject: big\n\n{body}\n"),
    );
    let requeued = || {
        let listing = list(&server, None);
        listing.contains("    error: ") && !listing.contains(" next=now ")
    };
    wait_for("the big mail requeued with its error", requeued);
    let segments = big_segments(&server);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let name = first_name(&list(&server, None));

    let (ok, out, err) = queue(&server, &["flush", &name]);
    assert_eq!((ok, out.as_str()), (true, "flushed 1 mail(s)\n"), "{err}");
    wait_for("the flushed mail tried and requeued again", || {
        server.log().matches("status=deferred").count() >= 2 && requeued()
    });
    assert_eq!(big_segments(&server), segments);

    // The console's flushspool on the spool does the same.
    let replies = console(
        server.remote_manager_port,
        &["flushspool file://var/mail/spool/ state=transport"],
    );
    assert_eq!(replies[0], "Number of flushed mails: 1", "{replies:?}");
    wait_for("the mail tried and requeued a third time", || {
        server.log().matches("status=deferred").count() >= 3 && requeued()
    });
    assert_eq!(big_segments(&server), segments);
    assert_eq!(list(&server, None).lines().count(), 3, "one mail");
}

/// Runs `mailroom queue <args>` allowed at most `files` open files.
fn queue_with_few_files(server: &Server, files: u32, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("prlimit")
        .arg(format!("--nofile={files}"))
        .arg(BIN)
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(&server.config)
        .arg("--home")
        .arg(server.path(""))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_and_show_keep_one_mail_open_at_a_time() {
    use mailroom_mailet::{Envelope, Mail, MailAddress, Message};
    use mailroom_store::blocking::MailRepository as _;
    let mut server = Server::start();
    assert!(server.terminate().success());
    // More mails than the files the command may open: large spooled mails (a segment each)
    // and mails of a repository (a file each).
    let mails = 150;
    let big = "y".repeat(300 * 1024);
    let mail = |i: usize| {
        let envelope = Envelope::new(
            mailroom_mailet::new_mail_name(),
            MailAddress::parse("sender@example.org").ok(),
            vec![MailAddress::parse("bob@localhost").unwrap()],
        );
        let text = format!("Subject: number {i}\r\n\r\n{big}\r\n");
        Mail::new(envelope, Message::from_bytes(text.as_bytes()))
    };
    let spool = mailroom_store::file::LogSpool::open(&server.path("var/mail/spool")).unwrap();
    let repo =
        mailroom_store::file::FileMailRepository::open(&server.path("var/mail/address-error"))
            .unwrap();
    let mut last = String::new();
    for i in 0..mails {
        spool.store(&mail(i)).unwrap();
        let m = mail(i);
        last = m.name().to_string();
        repo.store(&m).unwrap();
    }
    drop(spool);
    // The size from the envelope: no message is opened to list.
    let size = format!(" size={} ", mail(100).message.size());
    for url in [None, Some("file://var/mail/address-error/")] {
        let mut args = vec!["list"];
        args.extend(url);
        let (ok, out, err) = queue_with_few_files(&server, 64, &args);
        assert!(ok, "{err}");
        assert_eq!(out.lines().filter(|l| l.starts_with("Mail")).count(), mails);
        assert_eq!(out.lines().filter(|l| l.contains(&size)).count(), 50);
    }
    let first = first_name(&list(&server, None));
    let (ok, shown, err) = queue_with_few_files(&server, 64, &["show", &first]);
    assert!(ok && shown.contains("Subject: number 0\r\n"), "{err}");
    let (ok, shown, err) = queue_with_few_files(
        &server,
        64,
        &["show", &last, "file://var/mail/address-error/"],
    );
    assert!(
        ok && shown.contains(&format!("Subject: number {}\r\n", mails - 1)),
        "{err}"
    );
}
