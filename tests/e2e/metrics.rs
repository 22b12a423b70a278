//! `<metrics>`: `/metrics` counters move with real traffic (SMTP mails, a local and a remote
//! delivery, a remote refusal and its bounce, a failed POP3 login), and `/health` goes 503
//! while the spool cannot be written, and back to 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::harness::{free_port, wait_for, Server, Setup, Smtp};

/// A catching SMTP server on 127.0.0.1 that takes every recipient but `nobody@...` (550).
fn sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = sink_session(stream);
            });
        }
    });
    port
}

fn sink_session(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("RCPT") && upper.contains("NOBODY@") {
            b"550 5.1.1 no such user\r\n"
        } else if upper.starts_with("DATA") {
            out.write_all(b"354 go on\r\n")?;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line == ".\r\n" {
                    break;
                }
            }
            b"250 2.0.0 taken\r\n"
        } else if upper.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        out.write_all(reply)?;
    }
}

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the series `series` (`name` or `name{labels}`, exactly as rendered) in a
/// `/metrics` page; 0 when absent.
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn tree(sink: u16) -> String {
    format!(
        r#"
    <processor name="root">
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="RemoteDelivery">
        <outgoing>file://var/mail/outgoing/</outgoing>
        <gateway>127.0.0.1:{sink}</gateway>
        <bounceProcessor>bounces</bounceProcessor>
        <sendpartial>true</sendpartial>
      </mailet>
    </processor>
    <processor name="bounces">
      <mailet match="All" class="DSNBounce"><passThrough>false</passThrough></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#
    )
}

#[test]
fn metrics_move_with_traffic_and_health_follows_the_spool() {
    let sink = sink();
    let metrics = free_port();
    let tree = tree(sink);
    let extra = format!("<metrics enabled=\"true\"><port>{metrics}</port></metrics>");
    let server = Server::start_setup(&Setup {
        tree: &tree,
        pop3_handler: Some(""),
        extra: &extra,
        ..Setup::default()
    });
    server.add_user("alice", "alice's password");
    server.add_user("bob", "bob's password");

    let (status, before) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(value(&before, "mailroom_bounces_total"), 0.0, "{before}");
    assert!(
        before.contains("# TYPE mailroom_bounces_total counter"),
        "{before}"
    );

    let mut smtp = Smtp::connect(server.smtp_port);
    smtp.send_mail(
        "alice@localhost",
        &["bob@localhost"],
        "Subject: one\n\nlocal\n",
    );
    smtp.send_mail(
        "alice@localhost",
        &["ok@far.test", "nobody@far.test"],
        "Subject: two\n\nremote\n",
    );
    assert!(smtp.cmd("QUIT").starts_with("221"));

    // A failed POP3 login.
    let pop3 = TcpStream::connect(("127.0.0.1", server.pop3_port)).unwrap();
    pop3.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(pop3.try_clone().unwrap());
    let mut writer = pop3;
    let mut line = String::new();
    let mut say = |cmd: &str| {
        if !cmd.is_empty() {
            writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        }
        line.clear();
        reader.read_line(&mut line).unwrap();
        line.clone()
    };
    assert!(say("").starts_with("+OK"));
    assert!(say("USER alice").starts_with("+OK"));
    assert!(say("PASS wrong").starts_with("-ERR"));
    assert!(say("QUIT").starts_with("+OK"));

    // Bob's mail, the remote one, and the bounce to Alice all delivered.
    let mut page = String::new();
    wait_for("the counters", || {
        page = get(metrics, "/metrics").1;
        value(&page, "mailroom_bounces_total") >= 1.0
            && value(&page, "mailroom_deliveries_total{outcome=\"delivered\"}") >= 3.0
    });
    let v = |series: &str| value(&page, series);
    assert_eq!(
        v("mailroom_mails_received_total{source=\"smtp\"}"),
        2.0,
        "{page}"
    );
    // At least ours: the harness also connects once to see a port is up.
    assert!(v("mailroom_connections_total{protocol=\"smtp\"}") >= 1.0);
    assert!(v("mailroom_connections_total{protocol=\"pop3\"}") >= 1.0);
    assert_eq!(v("mailroom_auth_failures_total{protocol=\"pop3\"}"), 1.0);
    assert_eq!(v("mailroom_deliveries_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(v("mailroom_bounces_total"), 1.0);
    assert_eq!(v("mailroom_delivery_attempts_total"), 1.0);
    assert_eq!(v("mailroom_delivery_duration_seconds_count"), 1.0);
    assert!(
        page.contains("mailroom_delivery_duration_seconds_bucket{le=\"+Inf\"} 1"),
        "{page}"
    );
    // Gauges read when scraped: everything has left the spools.
    wait_for("empty spools", || {
        page = get(metrics, "/metrics").1;
        page.contains("\nmailroom_spool_depth 0\n")
            && page.contains("\nmailroom_outgoing_depth 0\n")
    });

    let (status, health) = get(metrics, "/health");
    assert_eq!(status, 200, "{health}");
    assert!(health.starts_with("ok\n"), "{health}");
    let smtp_line = format!("SMTP 127.0.0.1:{}: listening", server.smtp_port);
    assert!(health.contains(&smtp_line), "{health}");
    assert!(health.contains("spool: ok"), "{health}");

    // The spool made unwritable: 503 with the reason, then 200 again once it is back.
    let spool = server.path("var/mail/spool");
    let unwritable = Unwritable::make(&spool);
    let (status, health) = get(metrics, "/health");
    assert_eq!(status, 503, "{health}");
    assert!(health.starts_with("unhealthy\nspool: "), "{health}");
    assert!(health.contains("is not writable"), "{health}");
    drop(unwritable);
    let (status, health) = get(metrics, "/health");
    assert_eq!(status, 200, "{health}");
}

/// A directory made unwritable for as long as this lives: its permissions taken away, and,
/// where that does not stop writes (root), the directory moved aside and a file put in its
/// place.
struct Unwritable {
    dir: std::path::PathBuf,
    moved: Option<std::path::PathBuf>,
}

impl Unwritable {
    fn make(dir: &Path) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe-by-the-test");
        let moved = if std::fs::write(&probe, b"x").is_ok() {
            std::fs::remove_file(&probe).unwrap();
            let aside = dir.with_extension("aside");
            std::fs::rename(dir, &aside).unwrap();
            std::fs::write(dir, b"not a directory").unwrap();
            Some(aside)
        } else {
            None
        };
        Unwritable {
            dir: dir.to_path_buf(),
            moved,
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(aside) = &self.moved {
            std::fs::remove_file(&self.dir).unwrap();
            std::fs::rename(aside, &self.dir).unwrap();
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
