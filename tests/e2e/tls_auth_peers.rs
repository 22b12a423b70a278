//! TLS and SMTP AUTH together with the Debian clients that `.ci/run` installs (ignored in a
//! plain `cargo test`): swaks `--tls --auth PLAIN|LOGIN` verifying the generated certificate,
//! msmtp over STARTTLS to the embedded default's submission listener and over SMTPS, all with
//! `<requireTLSForAuth>` on.

use std::process::{Command, Stdio};

use crate::harness::{maildir_messages, repository_count, wait_for};
use crate::tls_auth::{repository_mails, AuthTls, DefaultServer};

/// Runs a client; returns whether it succeeded and everything it printed.
fn run(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client is installed (.ci/run installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// swaks to the STARTTLS port of `tls` as alice with `mechanism`, verifying the certificate.
fn swaks(tls: &AuthTls, extra: &[&str], password: &str) -> (bool, String) {
    run(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", tls.server.smtp_port)])
            .args(["--to", "friend@far.example", "--from", "alice@localhost"])
            .args(["--helo", "swaks.example.net", "--tls"])
            .args(["--tls-verify", "--tls-ca-path", &tls.ca()])
            .args(["--tls-sni", "localhost"])
            .args(["--auth-user", "alice", "--auth-password", password])
            .args(extra),
        "",
    )
}

#[test]
#[ignore = "needs swaks with Net::SSLeay; run by .ci/run"]
fn swaks_starttls_with_auth_plain_and_login() {
    let tls = AuthTls::start("");
    for mechanism in ["PLAIN", "LOGIN"] {
        let subject = format!("Subject: swaks {mechanism}");
        let (ok, text) = swaks(
            &tls,
            &["--auth", mechanism, "--header", &subject],
            "alice pw",
        );
        assert!(ok, "{text}");
        assert!(text.contains("TLS started"), "{text}");
        // AUTH came after STARTTLS: swaks logs the encrypted lines with `~>`.
        assert!(text.contains(&format!("~> AUTH {mechanism}")), "{text}");
        assert!(text.contains("235 2.7.0"), "{text}");
    }
    // Wrong password: refused, nothing relayed.
    let (ok, text) = swaks(&tls, &["--auth", "PLAIN"], "wrong");
    assert!(!ok && text.contains("535 5.7.8"), "{text}");
    // Without AUTH, over TLS: relaying needs it.
    let (ok, text) = run(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", tls.server.smtp_port)])
            .args(["--to", "friend@far.example", "--from", "alice@localhost"])
            .args(["--tls", "--tls-verify", "--tls-ca-path", &tls.ca()])
            .args(["--tls-sni", "localhost"]),
        "",
    );
    assert!(!ok && text.contains("530 5.7.0"), "{text}");

    let outgoing = tls.server.path("var/mail/outgoing");
    wait_for("two relayed mails", || repository_count(&outgoing) == 2);
    for (envelope, text) in repository_mails(&outgoing) {
        assert_eq!(
            envelope["attributes"]["org.apache.james.SMTPAuthUser"]["value"], "alice",
            "{envelope}"
        );
        assert!(text.contains(" with ESMTPSA id "), "{text}");
        assert!(text.contains("(using TLSv1."), "{text}");
    }
}

/// msmtp with TLS and AUTH PLAIN to `port`, `tls_starttls` as `starttls`, verifying the
/// certificate against `ca`.
fn msmtp(port: u16, starttls: &str, ca: &str, password: &str, to: &str) -> (bool, String) {
    run(
        Command::new("msmtp")
            .args(["--host=localhost", &format!("--port={port}")])
            .args(["--tls=on", &format!("--tls-starttls={starttls}")])
            .arg(format!("--tls-trust-file={ca}"))
            .args(["--auth=plain", "--user=alice"])
            .arg(format!("--passwordeval=echo {password}"))
            .args(["--domain=client.test", "--from=alice@localhost", to]),
        &format!("Subject: msmtp tls_starttls {starttls}\n\nsubmitted\n"),
    )
}

#[test]
#[ignore = "needs msmtp; run by .ci/run"]
fn msmtp_starttls_to_the_default_submission_listener() {
    let server = DefaultServer::start();
    server.add_user("alice", "alice long pw");
    server.add_user("bob", "bob long pw");
    let port = server.submission_port;
    let (ok, said) = msmtp(port, "on", &server.ca(), "alice long pw", "bob@localhost");
    assert!(ok, "{said}\n{}", server.log());
    let (ok, said) = msmtp(port, "on", &server.ca(), "wrong pw", "bob@localhost");
    assert!(!ok && said.contains("535"), "{said}");
    // Without TLS, msmtp does not even find AUTH offered.
    let (ok, said) = run(
        Command::new("msmtp")
            .args(["--host=localhost", &format!("--port={port}"), "--tls=off"])
            .args([
                "--auth=plain",
                "--user=alice",
                "--passwordeval=echo alice long pw",
            ])
            .args(["--from=alice@localhost", "bob@localhost"]),
        "Subject: plain\n\nx\n",
    );
    assert!(!ok && said.contains("not support"), "{said}");
    let inbox = server.path("var/mail/inboxes/bob");
    wait_for("the submitted mail", || maildir_messages(&inbox).len() == 1);
    let text = String::from_utf8(maildir_messages(&inbox).remove(0)).unwrap();
    assert!(text.contains(" with ESMTPSA id "), "{text}");
    assert!(text.contains("msmtp tls_starttls on"), "{text}");
}

#[test]
#[ignore = "needs msmtp; run by .ci/run"]
fn msmtp_over_smtps_with_auth_relays() {
    let tls = AuthTls::start("");
    let (ok, said) = msmtp(
        tls.smtps_port,
        "off",
        &tls.ca(),
        "alice pw",
        "friend@far.example",
    );
    assert!(ok, "{said}");
    let outgoing = tls.server.path("var/mail/outgoing");
    wait_for("the relayed mail", || repository_count(&outgoing) == 1);
    let (envelope, text) = repository_mails(&outgoing).remove(0);
    assert_eq!(envelope["sender"], "alice@localhost", "{envelope}");
    assert!(text.contains(" with ESMTPSA id "), "{text}");
    assert!(text.contains("msmtp tls_starttls off"), "{text}");
}
