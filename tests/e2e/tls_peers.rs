//! TLS with the Debian clients that `.ci/run` installs (ignored in a plain `cargo test`):
//! swaks `--tls` (STARTTLS) and `--tlsc` (SMTPS), fetchmail with `sslcertck` and the generated
//! certificate as its CA file (STLS and POP3S), mpop with `tls_trust_file` (STLS and POP3S).

use std::path::Path;
use std::process::Command;

use crate::harness::{maildir_messages, wait_for};
use crate::tls::TlsServer;

/// Runs a client; returns its output, asserting it succeeded.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the client is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

#[test]
#[ignore = "needs swaks with Net::SSLeay; run by .ci/run"]
fn swaks_tls_and_tls_on_connect() {
    let tls = TlsServer::start("");
    for (flag, port) in [("--tls", tls.server.smtp_port), ("--tlsc", tls.smtps_port)] {
        let text = run(Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{port}")])
            .args(["--to", "alice@localhost", "--from", "sender@example.net"])
            .args(["--helo", "swaks.example.net", flag])
            .args(["--tls-verify", "--tls-ca-path", &tls.ca()])
            .args(["--tls-sni", "localhost"])
            .args(["--header", &format!("Subject: swaks {flag}")]));
        assert!(text.contains("TLS started"), "{text}");
        assert!(text.contains("250 2.0.0"), "{text}");
    }
    let inbox = tls.server.path("var/mail/inboxes/alice");
    wait_for("both mails", || maildir_messages(&inbox).len() == 2);
    for mail in maildir_messages(&inbox) {
        let text = String::from_utf8(mail).unwrap();
        assert!(text.contains("with ESMTPS id"), "{text}");
        assert!(text.contains("(using TLSv1."), "{text}");
    }
}

/// Two mails for alice, delivered.
fn two_mails(tls: &TlsServer) {
    for subject in ["one", "two"] {
        tls.server.smtp().send_mail(
            "sender@example.net",
            &["alice@localhost"],
            &format!("Subject: {subject}\n\n{subject} body\n"),
        );
    }
    let inbox = tls.server.path("var/mail/inboxes/alice");
    wait_for("two mails", || maildir_messages(&inbox).len() == 2);
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |e| e.count())
}

#[test]
#[ignore = "needs fetchmail from Debian; run by .ci/run"]
fn fetchmail_with_sslcertck_over_stls_and_pop3s() {
    let tls = TlsServer::start("");
    two_mails(&tls);
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // STLS on the POP3 port (requireTLSForAuth is on: a plaintext login would be refused),
    // then POP3S; each keeps the mail, so the second fetches both again.
    for (n, (port, tls_options)) in [
        (tls.server.pop3_port, "sslproto tls1.2+"),
        (tls.pop3s_port, "ssl"),
    ]
    .into_iter()
    .enumerate()
    {
        let rc = work.path().join(format!("fetchmailrc{n}"));
        std::fs::write(
            &rc,
            format!(
                "set no syslog\n\
                 poll 127.0.0.1 service {port} protocol pop3 auth password:\n\
                 \tuser alice there with password \"alice's secret\" is alice here\n\
                 \tkeep {tls_options} sslcertck sslcertfile {ca} sslcommonname localhost\n\
                 \tmda \"cat > {out}/msg{n}.$$\"\n",
                ca = tls.ca(),
                out = out_dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = run(Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "-v", "--all"])
            .env("FETCHMAILHOME", work.path())
            .env("HOME", work.path()));
        assert!(!text.contains("certificate verification failed"), "{text}");
        assert_eq!(count_files(&out_dir), 2 * (n + 1), "{text}");
    }
}

#[test]
#[ignore = "needs mpop from Debian; run by .ci/run"]
fn mpop_with_tls_trust_file_over_stls_and_pop3s() {
    let tls = TlsServer::start("");
    two_mails(&tls);
    let work = tempfile::tempdir().unwrap();
    for (n, (port, starttls)) in [(tls.server.pop3_port, "on"), (tls.pop3s_port, "off")]
        .into_iter()
        .enumerate()
    {
        let maildir = work.path().join(format!("Maildir{n}"));
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let rc = work.path().join(format!("mpoprc{n}"));
        std::fs::write(
            &rc,
            format!(
                "account test\nhost localhost\nport {port}\ntls on\ntls_starttls {starttls}\n\
                 tls_trust_file {ca}\nauth user\nuser alice\npassword alice's secret\n\
                 delivery maildir {dir}\nkeep on\nuidls_file {work}/uidls{n}\n",
                ca = tls.ca(),
                dir = maildir.display(),
                work = work.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = run(Command::new("mpop")
            .arg("--file")
            .arg(&rc)
            .arg("--quiet")
            .arg("test"));
        assert_eq!(count_files(&maildir.join("new")), 2, "{text}");
    }
}
