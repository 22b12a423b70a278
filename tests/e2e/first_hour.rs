//! Issue 9, "the first hour": check-config's processor, parameter and data-source checks, the
//! option order, password entry, James 2.3 config fidelity (connection limits, autodetected
//! names, the SAR-INF home, host names where James took them, services not served yet,
//! known-default console passwords), and the stock James 2.3.2 `config.xml` loading with only
//! warnings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{config_xml, free_port, maildir_messages, wait_for, Smtp, BIN, DEFAULT_TREE};

/// A server started by these tests (with arguments of their choosing), killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Runs `mailroom ARGS`, logging to `log`, and waits until `port` accepts connections.
    fn start(args: &[&std::ffi::OsStr], log: &Path, port: u16) -> Running {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut running = Running {
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = running.child.try_wait().unwrap() {
                panic!("server exited with {status}: {}", running.log());
            }
            assert!(Instant::now() < deadline, "not started: {}", running.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The 1-based line of the first line of `xml` containing `needle`.
fn line_of(xml: &str, needle: &str) -> usize {
    xml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// A config with `tree` and `smtp_handler`, written to `dir/config.xml`.
fn write_config(dir: &Path, port: u16, tree: &str, smtp_handler: &str) -> (PathBuf, String) {
    let xml = config_xml(port, tree, smtp_handler);
    let path = dir.join("config.xml");
    std::fs::write(&path, &xml).unwrap();
    (path, xml)
}

#[test]
fn check_config_reports_processors_parameters_and_data_sources_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let tree = DEFAULT_TREE.replace(
        r#"<mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>"#,
        r#"<mailet match="All=everything" class="ToProcessor"><processor>transport</processor></mailet>
      <mailet match="RelayLimit=40" class="ToProcessor">
        <processor>trasnport</processor>
      </mailet>
      <mailet match="RelayLimit=50" class="ToRepository">
        <repositoryPath>file://var/mail/spam/</repositoryPath>
        <passtrough>true</passtrough>
      </mailet>"#,
    );
    let (path, xml) = write_config(dir.path(), free_port(), &tree, "");
    let file = path.display().to_string();
    // --config before the subcommand (item 8).
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(!all.contains("required arguments"), "{all}");
    assert!(
        all.contains(&format!(
            "{file}:{}: <processor> of mailet ToProcessor names processor \"trasnport\", which is not defined",
            line_of(&xml, "trasnport")
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "{file}:{}: mailet ToRepository has no parameter <passtrough>",
            line_of(&xml, "passtrough")
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "{file}:{}: matcher All takes no condition",
            line_of(&xml, "All=everything")
        )),
        "{all}"
    );

    // A database URL in a mailet needs its data source.
    let tree = DEFAULT_TREE.replace("file://var/mail/error/", "db://nodb/error");
    let (path, xml) = write_config(dir.path(), free_port(), &tree, "");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(&format!(
            "{file}:{}: \"db://nodb/error\" uses data source \"nodb\", which <database-connections> does not define",
            line_of(&xml, "db://nodb")
        )),
        "{all}"
    );

    // A valid file passes with --config before, or after, the subcommand, or as FILE.
    let (path, _) = write_config(dir.path(), free_port(), DEFAULT_TREE, "");
    for args in [
        vec![os("--config"), path.as_os_str(), os("check-config")],
        vec![os("check-config"), os("--config"), path.as_os_str()],
        vec![os("check-config"), path.as_os_str()],
        vec![
            os("--home"),
            dir.path().as_os_str(),
            os("check-config"),
            path.as_os_str(),
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("configuration is valid"));
    }
}

#[test]
fn stock_james_2_3_2_config_loads_with_only_warnings() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/james-2.3.2/apps/james/SAR-INF/config.xml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("configuration is valid"), "{all}");
    assert!(!all.contains("ERROR"), "{all}");
    // The DNS and attachment matchers of the stock file are built (issue 15): none is warned
    // about.
    for matcher in [
        "InSpammerBlacklist",
        "SenderInFakeDomain",
        "AttachmentFileNameIs",
    ] {
        assert!(!all.contains(&format!("matcher {matcher}")), "{all}");
    }
    // SMTPAuthSuccessful (line 344) is built.
    assert!(!all.contains("matcher SMTPAuthSuccessful"), "{all}");
    // RemoteDelivery is built: its parameters are read, none is warned about.
    assert!(
        !all.contains("RemoteDelivery is not in this build"),
        "{all}"
    );
    assert!(!all.contains("mailet RemoteDelivery: "), "{all}");
}

#[test]
fn passwords_are_never_empty_and_not_echoed_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_config(dir.path(), free_port(), DEFAULT_TREE, "");
    let user = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = user(&["user", "add", "bob", "--password", ""], b"");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("empty password"), "{}", text(&out));
    let out = user(&["user", "add", "bob"], b"\n");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!dir.path().join("var/users/bob.user").exists());
    // From a pipe: one line, spaces kept.
    let out = user(&["user", "add", "bob"], b"piped secret\n");
    assert!(out.status.success(), "{}", text(&out));
    let out = user(&["user", "passwd", "bob", "--password", ""], b"");
    assert!(!out.status.success());

    // At a terminal (a pty from script(1)): asked twice, never echoed.
    let command = format!(
        "{BIN} user add carol --config {}",
        path.display().to_string().replace(' ', "\\ ")
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    // Each answer is typed after its prompt, as a person would: echo is off by then.
    for prompt in [&b"Password: "[..], &b"Password again: "[..]] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.windows(prompt.len()).any(|w| w == prompt) {
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&seen)
            );
            let buf = stdout.fill_buf().unwrap();
            assert!(!buf.is_empty(), "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(buf);
            let n = buf.len();
            stdout.consume(n);
        }
        seen.clear();
        stdin.write_all(b"typed secret\n").unwrap();
    }
    drop(stdin);
    stdout.read_to_end(&mut seen).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let shown = String::from_utf8_lossy(&seen);
    assert!(!shown.contains("typed secret"), "{shown}");
    assert!(shown.contains("User carol added"), "{shown}");
    assert!(dir.path().join("var/users/carol.user").exists());
}

/// Whether a new SMTP connection gets its banner within `wait`.
fn banner_within(port: u16, wait: Duration) -> bool {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220")
}

#[test]
fn connection_limits_beside_port_in_handler_and_by_default() {
    for (outer, handler, connections, limit) in [
        // James's place, beside <port>.
        ("<connectionLimit>1</connectionLimit>", "", "", Some(1)),
        // <connections><max-connections> is the default...
        (
            "",
            "",
            "<connections><max-connections>2</max-connections></connections>",
            Some(2),
        ),
        // ...and 0 in the handler means no limit, whatever the default.
        (
            "",
            "<connectionLimit>0</connectionLimit>",
            "<connections><max-connections>1</max-connections></connections>",
            None,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let xml = config_xml(port, DEFAULT_TREE, handler)
            .replacen(
                "<bind>127.0.0.1</bind>",
                &format!("<bind>127.0.0.1</bind>{outer}"),
                1,
            )
            .replace("</config>", &format!("{connections}</config>"));
        let path = dir.path().join("config.xml");
        std::fs::write(&path, xml).unwrap();
        let server = Running::start(
            &[os("--config"), path.as_os_str()],
            &dir.path().join("log"),
            port,
        );
        // The start-up probe's connection may still hold a place for a moment: a client over
        // the limit is refused (421), so take the places once they are free.
        let held: Vec<TcpStream> = (0..limit.unwrap_or(3))
            .map(|_| loop {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let mut line = String::new();
                BufReader::new(stream.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                if line.starts_with("220") {
                    break stream;
                }
                std::thread::sleep(Duration::from_millis(50));
            })
            .collect();
        let served = banner_within(port, Duration::from_millis(1500));
        assert_eq!(
            served,
            limit.is_none(),
            "{outer}{handler}{connections}: {}",
            server.log()
        );
        drop(held);
    }
}

#[test]
fn autodetected_servernames_and_hello_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let host = Command::new("uname").arg("-n").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout)
        .trim()
        .to_ascii_lowercase();
    let xml = config_xml(port, DEFAULT_TREE, "")
        .replace(
            r#"<servernames autodetect="false">"#,
            r#"<servernames autodetect="true" autodetectIP="true">"#,
        )
        .replace(
            r#"<helloName autodetect="false">mail.example.test</helloName>"#,
            r#"<helloName autodetect="true">literal.example</helloName>"#,
        )
        // James's stock size (0 = none) and a negative one both mean no limit.
        .replace(
            "<connectiontimeout>20000</connectiontimeout>",
            "<connectiontimeout>20000</connectiontimeout><maxmessagesize>-1</maxmessagesize>",
        )
        // A <bind> may be a host name.
        .replacen("<bind>127.0.0.1</bind>", "<bind>localhost</bind>", 1);
    let path = dir.path().join("config.xml");
    std::fs::write(&path, xml).unwrap();
    let out = Command::new(BIN)
        .args([
            "user",
            "add",
            "alice",
            "--password",
            "a long secret",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let server = Running::start(
        &[os("--config"), path.as_os_str()],
        &dir.path().join("log"),
        port,
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut banner = String::new();
    BufReader::new(stream).read_line(&mut banner).unwrap();
    assert!(banner.starts_with(&format!("220 {host}")), "{banner}");
    assert!(!banner.contains("literal.example"), "{banner}");

    let mut smtp = Smtp::connect(port);
    for rcpt in ["alice@[127.0.0.1]", &format!("alice@{host}")] {
        smtp.send_mail(
            "me@example.net",
            &[rcpt],
            &format!("Subject: to {rcpt}\n\nhello\n"),
        );
    }
    let inbox = dir.path().join("var/mail/inboxes/alice");
    wait_for("both mails in alice's Maildir", || {
        maildir_messages(&inbox).len() == 2
    });
    assert!(
        !dir.path().join("var/mail/outgoing").exists()
            || std::fs::read_dir(dir.path().join("var/mail/outgoing"))
                .unwrap()
                .count()
                == 0,
        "{}",
        server.log()
    );
}

#[test]
fn sar_inf_home_weak_console_and_services_not_served_yet() {
    let base = tempfile::tempdir().unwrap();
    let app = base.path().join("apps/james");
    std::fs::create_dir_all(app.join("SAR-INF")).unwrap();
    let (smtp_port, console_port) = (free_port(), free_port());
    let tree = DEFAULT_TREE.replace(
        r#"<mailet match="RelayLimit=30" class="Null"/>"#,
        r#"<mailet match="RemoteAddrNotInNetwork=127.0.0.1, abc.de.*" class="Null"/>"#,
    );
    let xml = config_xml(
        smtp_port,
        &tree,
        "<authRequired>true</authRequired><verifyRecipients>false</verifyRecipients>",
    ).replace(
        r#"<remotemanager enabled="false"/>"#,
        &format!(
            r#"<remotemanager><port>{console_port}</port><handler>
               <administrator_accounts><account login="root" password="root"/></administrator_accounts>
               </handler></remotemanager>"#
        ),
    ).replace(r#"<nntpserver enabled="false"/>"#, &format!(r#"<nntpserver enabled="true"><port>{}</port></nntpserver>
  <fetchmail enabled="true"><fetch name="x"><host>pop.example.com</host><interval>600000</interval>
    <accounts><account user="u" password="p" recipient="alice@localhost"/></accounts></fetch></fetchmail>"#, free_port()));
    let config = app.join("SAR-INF/config.xml");
    std::fs::write(&config, xml).unwrap();
    let log = base.path().join("log");
    let server = Running::start(&[os("--config"), config.as_os_str()], &log, smtp_port);
    let mut smtp = Smtp::connect(smtp_port);
    smtp.send_mail(
        "me@example.net",
        &["nobody@localhost"],
        "Subject: x\n\nhello\n",
    );
    // The home is the directory above SAR-INF, as James resolved file://var/.
    wait_for("the address-error repository under apps/james/var", || {
        app.join("var/mail/address-error").is_dir()
    });
    assert!(!app.join("SAR-INF/var").exists());
    let logged = server.log();
    assert!(
        logged.contains(&format!("home={}", app.display())),
        "{logged}"
    );
    // root/root: the console is refused, with why and what to do; the rest runs.
    assert!(TcpStream::connect(("127.0.0.1", console_port)).is_err());
    assert!(
        logged.contains("the RemoteManager is not started"),
        "{logged}"
    );
    assert!(
        logged.contains("the password of \"root\" is its login"),
        "{logged}"
    );
    assert!(logged.contains("Set a long password"), "{logged}");
    // Everything the stock config enables is served now: NNTP, FetchMail (its task starts, and
    // its unreachable host is only logged), and AUTH (authRequired), which needs TLS, which
    // the stock SMTP block gets by STARTTLS with a generated certificate.
    assert!(!logged.contains("NNTP (<nntpserver>)"), "{logged}");
    assert!(!logged.contains("FetchMail (<fetchmail"), "{logged}");
    assert!(logged.contains("fetch task started"), "{logged}");
    assert!(!logged.contains("AUTH needs TLS"), "{logged}");
    assert!(
        app.join("var/tls").is_dir(),
        "a self-signed certificate for STARTTLS"
    );
    // A host-name wildcard in a network matcher is skipped with a warning, not an error.
    assert!(logged.contains("\"abc.de.*\""), "{logged}");
}
