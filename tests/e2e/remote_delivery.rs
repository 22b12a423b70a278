//! RemoteDelivery end to end: the real binary relays to catching SMTP servers written here (on
//! 127.0.0.1, recording what they receive, answering 4xx/5xx per recipient when told), with
//! MX records served by a DNS server written here. MX hosts are reached on the port of
//! Mailroom's own `<mxPort>` parameter (25 unless set); a host that is "down" is an address
//! of 127.0.0.0/8 other than 127.0.0.1 on which nothing listens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

use base64::Engine;

use crate::delivery::envelopes;
use crate::harness::{
    console, maildir_messages, repository_count, wait_for, Server, Setup, Smtp, ADMIN,
};

/// One mail a sink received.
#[derive(Clone, Debug)]
struct Received {
    helo: String,
    /// After `MAIL FROM:`, parameters included.
    from: String,
    rcpts: Vec<String>,
    /// Each `RCPT TO:`'s parameters (after the address), in order.
    rcpt_params: Vec<String>,
    data: String,
    /// Whether the mail came over TLS (STARTTLS).
    tls: bool,
    /// The name the client's TLS handshake asked for (SNI).
    sni: Option<String>,
    /// The user name the client authenticated as.
    auth: Option<String>,
    /// Where the connection came from.
    peer: Option<SocketAddr>,
    /// The first `RCPT TO` had arrived with `MAIL FROM`, before its reply (PIPELINING).
    pipelined: bool,
}

/// How a sink answers: `RCPT` replies by recipient (`None`: 250), consumed in order when a
/// recipient has several.
#[derive(Default)]
struct Rules {
    rcpt: HashMap<String, Vec<String>>,
    /// What the next connections do wrong, one each, in order; then they behave.
    faults: Vec<Fault>,
}

/// A way for a sink's connection to misbehave.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Greets, then never answers (until the client goes away).
    HangAfterGreeting,
    /// Takes part of the data, then closes the connection.
    DropMidData,
    /// Answers EHLO with something that is not an SMTP reply.
    Garbage,
    /// Answers EHLO with a line far longer than any reply line.
    OverlongLine,
}

/// What a sink offers beyond SIZE and 8BITMIME.
#[derive(Clone, Default)]
struct Offers {
    /// STARTTLS with this certificate.
    tls: Option<Arc<ServerConfig>>,
    /// STARTTLS offered, then the handshake fails (the sink answers garbage).
    broken_tls: bool,
    /// AUTH PLAIN LOGIN (after TLS when `tls` is set), required before MAIL: user, password.
    auth: Option<(String, String)>,
    /// DSN (RFC 3461).
    dsn: bool,
    /// No 8BITMIME.
    seven_bit: bool,
    /// SMTPUTF8 (RFC 6531).
    smtputf8: bool,
}

/// A catching SMTP server on 127.0.0.1.
struct Sink {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    rules: Arc<Mutex<Rules>>,
    /// How many STARTTLS commands it was sent.
    starttls: Arc<Mutex<usize>>,
}

impl Sink {
    fn start() -> Sink {
        Sink::offering(Offers::default())
    }

    fn offering(offers: Offers) -> Sink {
        Sink::on(TcpListener::bind("127.0.0.1:0").unwrap(), offers)
    }

    fn on(listener: TcpListener, offers: Offers) -> Sink {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Mutex::new(Rules::default()));
        let starttls = Arc::new(Mutex::new(0));
        let (r, ru, st) = (received.clone(), rules.clone(), starttls.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, ru, st, offers) = (r.clone(), ru.clone(), st.clone(), offers.clone());
                std::thread::spawn(move || {
                    let _ = session(stream, &r, &ru, &st, &offers);
                });
            }
        });
        Sink {
            port,
            received,
            rules,
            starttls,
        }
    }

    /// `rcpt` gets these replies to its next RCPTs, in order.
    fn answer(&self, rcpt: &str, replies: &[&str]) {
        self.rules.lock().unwrap().rcpt.insert(
            rcpt.to_string(),
            replies.iter().map(|r| r.to_string()).collect(),
        );
    }

    /// The next connections misbehave like this, one fault each.
    fn faults(&self, faults: &[Fault]) {
        self.rules.lock().unwrap().faults = faults.to_vec();
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn starttls_count(&self) -> usize {
        *self.starttls.lock().unwrap()
    }

    /// Waits until a mail for `rcpt` arrived; returns it.
    fn wait_for(&self, rcpt: &str) -> Received {
        let mut found = None;
        wait_for(&format!("a mail for {rcpt}"), || {
            found = self
                .received()
                .into_iter()
                .find(|m| m.rcpts.iter().any(|r| r == rcpt));
            found.is_some()
        });
        found.unwrap()
    }
}

/// A self-signed certificate for the sink's STARTTLS.
fn tls_config() -> Arc<ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["sink.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn say(io: &mut BufReader<Box<dyn ReadWrite>>, text: &str) -> std::io::Result<()> {
    let stream = io.get_mut();
    stream.write_all(format!("{text}\r\n").as_bytes())?;
    stream.flush()
}

fn unbase64(text: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn session(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    rules: &Mutex<Rules>,
    starttls: &Mutex<usize>,
    offers: &Offers,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let peer = stream.peer_addr().ok();
    // The plain socket, to half-close it under a fault.
    let raw = stream.try_clone()?;
    let mut io: BufReader<Box<dyn ReadWrite>> = BufReader::new(Box::new(stream));
    say(&mut io, "220 sink.test ESMTP")?;
    let fault = {
        let mut rules = rules.lock().unwrap();
        (!rules.faults.is_empty()).then(|| rules.faults.remove(0))
    };
    let mut mail = Received {
        helo: String::new(),
        from: String::new(),
        rcpts: Vec::new(),
        rcpt_params: Vec::new(),
        pipelined: false,
        data: String::new(),
        peer,
        tls: false,
        sni: None,
        auth: None,
    };
    let read = |io: &mut BufReader<Box<dyn ReadWrite>>| -> std::io::Result<Option<String>> {
        let mut line = String::new();
        Ok((io.read_line(&mut line)? > 0).then(|| line.trim_end().to_string()))
    };
    while let Some(line) = read(&mut io)? {
        let upper = line.to_ascii_uppercase();
        if matches!(fault, Some(Fault::HangAfterGreeting)) {
            continue;
        }
        if upper.starts_with("EHLO") && matches!(fault, Some(Fault::Garbage)) {
            say(&mut io, "hello there, this is not SMTP at all")?;
        } else if upper.starts_with("EHLO") && matches!(fault, Some(Fault::OverlongLine)) {
            say(&mut io, &format!("250 {}", "x".repeat(100_000)))?;
        } else if upper.starts_with("EHLO") {
            mail.helo = line[5..].to_string();
            let mut lines = vec!["250-sink.test", "250-SIZE 100000000"];
            let tls_offered = offers.tls.is_some() || offers.broken_tls;
            if tls_offered && !mail.tls {
                lines.push("250-STARTTLS");
            }
            if offers.auth.is_some() && (mail.tls || !tls_offered) {
                lines.push("250-AUTH PLAIN LOGIN");
            }
            if offers.dsn {
                lines.push("250-DSN");
            }
            if !offers.seven_bit {
                lines.push("250-8BITMIME");
            }
            if offers.smtputf8 {
                lines.push("250-SMTPUTF8");
            }
            lines.push("250-PIPELINING");
            lines.push("250 HELP");
            say(&mut io, &lines.join("\r\n"))?;
        } else if upper == "STARTTLS" {
            *starttls.lock().unwrap() += 1;
            say(&mut io, "220 2.0.0 go ahead")?;
            match &offers.tls {
                Some(config) if !offers.broken_tls => {
                    let plain = io.into_inner();
                    let conn = ServerConnection::new(config.clone()).unwrap();
                    let mut tls = StreamOwned::new(conn, plain);
                    // The handshake first, for the name the client asked for.
                    while tls.conn.is_handshaking() {
                        tls.conn.complete_io(&mut tls.sock)?;
                    }
                    mail.sni = tls.conn.server_name().map(str::to_string);
                    io = BufReader::new(Box::new(tls));
                    mail.tls = true;
                }
                _ => {
                    io.get_mut().write_all(b"this is not TLS at all\r\n")?;
                    return Ok(());
                }
            }
        } else if let Some(rest) = upper.strip_prefix("AUTH ") {
            let user_pass = match rest.split_whitespace().next() {
                Some("PLAIN") => {
                    let token = match line.split_whitespace().nth(2) {
                        Some(t) => t.to_string(),
                        None => {
                            say(&mut io, "334 ")?;
                            read(&mut io)?.unwrap_or_default()
                        }
                    };
                    let plain = unbase64(&token);
                    let mut parts = plain.split('\0').skip(1);
                    (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    )
                }
                Some("LOGIN") => {
                    say(&mut io, "334 VXNlcm5hbWU6")?;
                    let user = unbase64(&read(&mut io)?.unwrap_or_default());
                    say(&mut io, "334 UGFzc3dvcmQ6")?;
                    (user, unbase64(&read(&mut io)?.unwrap_or_default()))
                }
                _ => {
                    say(&mut io, "504 5.5.4 unknown mechanism")?;
                    continue;
                }
            };
            if offers.auth.as_ref() == Some(&user_pass) {
                mail.auth = Some(user_pass.0);
                say(&mut io, "235 2.7.0 authenticated")?;
            } else {
                say(&mut io, "535 5.7.8 bad credentials")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if offers.auth.is_some() && mail.auth.is_none() {
                say(&mut io, "530 5.7.0 authentication required")?;
                continue;
            }
            mail.from = line[10..].to_string();
            mail.rcpts.clear();
            mail.rcpt_params.clear();
            mail.pipelined = io.buffer().to_ascii_uppercase().starts_with(b"RCPT TO:");
            say(&mut io, "250 2.1.0 ok")?;
        } else if upper.starts_with("RCPT TO:") {
            let rest = &line[8..];
            let (address, params) = rest.split_once('>').unwrap_or((rest, ""));
            let rcpt = address.trim_start_matches('<').to_string();
            let reply = {
                let mut rules = rules.lock().unwrap();
                rules
                    .rcpt
                    .get_mut(&rcpt)
                    .and_then(|r| (!r.is_empty()).then(|| r.remove(0)))
            };
            match reply {
                Some(reply) => say(&mut io, &reply)?,
                None => {
                    mail.rcpts.push(rcpt);
                    mail.rcpt_params.push(params.trim().to_string());
                    say(&mut io, "250 2.1.5 ok")?
                }
            }
        } else if upper == "DATA" {
            say(&mut io, "354 go on")?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if io.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if matches!(fault, Some(Fault::DropMidData)) && data.len() > 10 {
                    // Closed with the data half read: the client must not count it delivered.
                    // Half-closed (FIN), and what the client still sends read and dropped
                    // until it goes away: a socket closed with unread input, or written to
                    // once closed, is reset instead, and on a loaded machine the client then
                    // sees "connection reset" rather than the close (whether its last write
                    // came before the close is a race).
                    raw.shutdown(std::net::Shutdown::Write)?;
                    let mut sink = [0u8; 4096];
                    while matches!(io.get_mut().read(&mut sink), Ok(1..)) {}
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            mail.data = data;
            received.lock().unwrap().push(mail.clone());
            say(&mut io, "250 2.0.0 queued as 1")?;
        } else if upper == "QUIT" {
            say(&mut io, "221 bye")?;
            return Ok(());
        } else {
            say(&mut io, "250 ok")?;
        }
    }
    Ok(())
}

/// A DNS server for the test zone: names → records (`"."` as an MX exchange is a null MX).
/// Names under `servfail.test` get SERVFAIL, names under `silent.test` no answer at all.
/// (The stock-config test in lists.rs starts one with no names: NXDOMAIN for everything.)
pub(crate) fn start_dns(zone: Vec<(&str, RData)>) -> SocketAddr {
    let zone: Vec<(String, RData)> = zone
        .into_iter()
        .map(|(n, r)| (format!("{}.", n.to_ascii_lowercase()), r))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(query) = request.queries.first().cloned() else {
                continue;
            };
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.add_query(query.clone());
            let qname = query.name().to_ascii().to_ascii_lowercase();
            if qname.ends_with("silent.test.") {
                continue;
            }
            if qname.ends_with("servfail.test.") {
                response.metadata.response_code = ResponseCode::ServFail;
                let _ = socket.send_to(&response.to_vec().unwrap(), peer);
                continue;
            }
            let known = zone.iter().any(|(n, _)| *n == qname);
            let answers: Vec<&RData> = zone
                .iter()
                .filter(|(n, r)| *n == qname && r.record_type() == query.query_type())
                .map(|(_, r)| r)
                .collect();
            if !known {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa());
            } else if answers.is_empty() {
                response.add_authority(soa());
            }
            for rdata in answers {
                response.add_answer(Record::from_rdata(query.name().clone(), 1, rdata.clone()));
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer);
        }
    });
    addr
}

fn soa() -> Record {
    let n = |s: &str| Name::from_ascii(s).unwrap();
    Record::from_rdata(
        n("test."),
        1,
        RData::SOA(SOA::new(
            n("ns.test."),
            n("hm.test."),
            1,
            3600,
            600,
            86400,
            1,
        )),
    )
}

fn mx(preference: u16, exchange: &str) -> RData {
    RData::MX(MX::new(
        preference,
        Name::from_ascii(format!("{exchange}.")).unwrap(),
    ))
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(A(ip.into()))
}

/// A tree that relays remote mail with RemoteDelivery (these parameters), failed recipients
/// going to a `bounces` processor that keeps them in `var/mail/bounces/`. The `<timeout>` is
/// 5 s unless the parameters give one.
fn tree(params: &str) -> String {
    let timeout = if params.contains("<timeout>") {
        ""
    } else {
        "<timeout>5000</timeout>"
    };
    format!(
        r#"
    <processor name="root">
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="RemoteDelivery">
        <outgoing>file://var/mail/outgoing/</outgoing>
        <heloName>relay.example.test</heloName>
        {timeout}
        <connectiontimeout>2000</connectiontimeout>
        {params}
      </mailet>
    </processor>
    <processor name="bounces">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/bounces/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#
    )
}

fn start(params: &str, dns: Option<SocketAddr>) -> Server {
    let tree = tree(params);
    let extra = match dns {
        Some(dns) => format!(
            "<dnsserver><servers><server>{dns}</server></servers><autodiscover>false</autodiscover></dnsserver>"
        ),
        None => String::new(),
    };
    Server::start_setup(&Setup {
        tree: &tree,
        extra: &extra,
        ..Setup::default()
    })
}

/// `..leading dot` on the wire to Mailroom is `.leading dot` stored, and must be stuffed again.
const MESSAGE: &str = "From: a@localhost\nSubject: out\n\nHello\n..leading dot\n";

fn send(server: &Server, to: &[&str]) {
    server.smtp().send_mail("sender@localhost", to, MESSAGE);
}

fn bounces(server: &Server) -> Vec<serde_json::Value> {
    envelopes(&server.path("var/mail/bounces"))
}

#[test]
fn mx_preference_with_the_first_mx_down_implicit_mx_and_null_mx() {
    let sink = Sink::start();
    let dns = start_dns(vec![
        // The preferred exchanger is down (nothing listens on 127.0.0.2).
        ("pref.test", mx(10, "down.pref.test")),
        ("pref.test", mx(20, "up.pref.test")),
        ("down.pref.test", a([127, 0, 0, 2])),
        ("up.pref.test", a([127, 0, 0, 1])),
        // No MX: the domain's own address.
        ("plain.test", a([127, 0, 0, 1])),
        // RFC 7505: no mail at all.
        ("null.test", RData::MX(MX::new(0, Name::root()))),
    ]);
    let server = start(
        &format!(
            "<mxPort>{}</mxPort><bounceProcessor>bounces</bounceProcessor>",
            sink.port
        ),
        Some(dns),
    );
    send(
        &server,
        &["alice@pref.test", "bob@plain.test", "carol@null.test"],
    );
    let alice = sink.wait_for("alice@pref.test");
    let bob = sink.wait_for("bob@plain.test");
    // One transaction per domain, the message dot-stuffed on the wire and intact.
    assert_eq!(alice.rcpts, vec!["alice@pref.test"]);
    assert_eq!(bob.rcpts, vec!["bob@plain.test"]);
    assert!(
        alice.from.starts_with("<sender@localhost> SIZE="),
        "{}",
        alice.from
    );
    assert_eq!(alice.helo, "relay.example.test");
    assert!(
        alice.data.contains("\r\n..leading dot\r\n"),
        "{}",
        alice.data
    );
    assert!(alice.data.contains("Subject: out\r\n"));
    wait_for("the null MX bounce", || bounces(&server).len() == 1);
    let bounce = &bounces(&server)[0];
    assert_eq!(bounce["recipients"], serde_json::json!(["carol@null.test"]));
    assert!(bounce["error_message"]
        .as_str()
        .unwrap()
        .contains("null MX"));
    assert_eq!(
        bounce["attributes"]["mailroom.delivery.status"]["value"],
        "5.1.10"
    );
    let log = server.log();
    assert!(
        log.contains("rcpt=alice@pref.test status=delivered host=up.pref.test[127.0.0.1]"),
        "{log}"
    );
    assert!(log.contains("down.pref.test"), "{log}");
    assert!(log.contains("rcpt=carol@null.test status=failed"), "{log}");
    // The outgoing spool is empty once all is done.
    wait_for("empty outgoing spool", || {
        envelopes(&server.path("var/mail/outgoing")).is_empty()
    });
}

#[test]
fn permanent_refusals_go_to_the_bounce_processor_with_the_remote_reply() {
    let sink = Sink::start();
    sink.answer(
        "nobody@x.test",
        &["550 5.1.1 <nobody@x.test>: no such user"],
    );
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><bounceProcessor>bounces</bounceProcessor><sendpartial>true</sendpartial>",
            sink.port
        ),
        None,
    );
    send(&server, &["ok@x.test", "nobody@x.test"]);
    sink.wait_for("ok@x.test");
    wait_for("the bounce", || bounces(&server).len() == 1);
    let bounce = &bounces(&server)[0];
    assert_eq!(bounce["recipients"], serde_json::json!(["nobody@x.test"]));
    assert_eq!(bounce["sender"], "sender@localhost");
    let error = bounce["error_message"].as_str().unwrap();
    assert!(
        error.contains("550 5.1.1 <nobody@x.test>: no such user"),
        "{error}"
    );
    let attr = |name: &str| {
        bounce["attributes"][name]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr("mailroom.delivery.status"), "5.1.1");
    assert_eq!(attr("mailroom.delivery.remote-mta"), "127.0.0.1");
    assert!(attr("mailroom.delivery.diagnostic").contains("550 5.1.1"));
    assert!(attr("delivery-error").contains("no such user"));
    let log = server.log();
    assert!(log.contains("rcpt=nobody@x.test status=failed"), "{log}");
    assert!(log.contains("next=bounces"), "{log}");
}

#[test]
fn a_gateway_carries_every_domain_in_one_transaction() {
    let sink = Sink::start();
    // The first gateway is down; the second takes the mail.
    let down = crate::harness::free_port();
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{down}</gateway><gateway>127.0.0.1:{}</gateway>",
            sink.port
        ),
        None,
    );
    send(&server, &["a@one.test", "b@two.test"]);
    let mail = sink.wait_for("a@one.test");
    assert_eq!(mail.rcpts, vec!["a@one.test", "b@two.test"]);
    assert_eq!(sink.received().len(), 1);
    // The sink offers PIPELINING: MAIL FROM and the RCPTs came in one write.
    assert!(mail.pipelined);
}

#[test]
fn a_4xx_is_retried_and_the_schedule_survives_a_restart() {
    let sink = Sink::start();
    sink.answer("later@x.test", &["451 4.3.0 try again later"]);
    let mut server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><delayTime>4 seconds</delayTime><maxRetries>3</maxRetries>",
            sink.port
        ),
        None,
    );
    let sent = Instant::now();
    send(&server, &["later@x.test"]);
    wait_for("the deferral", || {
        server.log().contains("rcpt=later@x.test status=deferred")
    });
    assert!(server.log().contains("451 4.3.0 try again later"));
    // Stopped while the mail waits for its retry, started again: delivered then, not lost,
    // and not before its time.
    assert_eq!(server.terminate().code(), Some(0));
    assert!(sink.received().is_empty());
    server.spawn();
    let mail = sink.wait_for("later@x.test");
    assert!(
        sent.elapsed() >= Duration::from_secs(4),
        "retried too early"
    );
    assert_eq!(mail.rcpts, vec!["later@x.test"]);
    let log = server.log();
    assert!(log.contains("rcpt=later@x.test status=delivered"), "{log}");
    assert_eq!(sink.received().len(), 1);
}

/// Runs `mailroom queue <args>` and returns its output; panics if it fails.
fn queue(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = server.cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_outgoing_spool_is_listed_and_flushed_by_the_cli_and_the_console() {
    const OUTGOING: &str = "file://var/mail/outgoing/";
    let sink = Sink::start();
    sink.answer("a@x.test", &["451 4.3.0 a is busy"]);
    sink.answer("b@x.test", &["452 4.2.2 b is full"]);
    let tree = tree(&format!(
        "<gateway>127.0.0.1:{}</gateway><delayTime>1 hour</delayTime><maxRetries>3</maxRetries>",
        sink.port
    ));
    let mut server = Server::start_setup(&Setup {
        tree: &tree,
        remote_manager_handler: Some(ADMIN),
        ..Setup::default()
    });
    let sent = Instant::now();
    send(&server, &["a@x.test"]);
    send(&server, &["b@x.test"]);
    wait_for("both deferrals", || {
        let log = server.log();
        log.contains("rcpt=a@x.test status=deferred")
            && log.contains("rcpt=b@x.test status=deferred")
    });

    // Listed with their next attempt (in about an hour) and their last error.
    let listed = queue(&server, &["list", OUTGOING]);
    assert!(
        listed.contains(&format!("2 mail(s) in {OUTGOING}")),
        "{listed}"
    );
    let name_of = |rcpt: &str| {
        listed
            .lines()
            .find(|l| l.ends_with(&format!("recipients={rcpt}")))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{rcpt} not listed: {listed}"))
            .to_string()
    };
    let (a, b) = (name_of("a@x.test"), name_of("b@x.test"));
    for (name, error) in [(&a, "451 4.3.0 a is busy"), (&b, "452 4.2.2 b is full")] {
        let mut lines = listed.lines().skip_while(|l| !l.starts_with(name.as_str()));
        let line = lines.next().unwrap();
        assert!(
            line.contains(" next=59m") || line.contains(" next=1h"),
            "{line}"
        );
        assert!(lines.next().unwrap().contains(error), "{listed}");
    }
    let shown = queue(&server, &["show", &a, OUTGOING]);
    assert!(
        shown.contains("\nerror: ") && shown.contains("said: 451 4.3.0 a is busy"),
        "{shown}"
    );
    assert!(!shown.contains("next attempt: now"), "{shown}");
    // The main spool is not the outgoing one.
    assert!(queue(&server, &["list"]).contains("0 mail(s)"));

    // The console lists them too, with the time of their next attempt.
    let said = console(&server, &[&format!("listspool {OUTGOING}")]);
    assert!(said.contains("Number of spooled mails: 2"), "{said}");
    assert!(
        said.contains(&format!(
            "key: {a} sender: sender@localhost recipient: a@x.test"
        )),
        "{said}"
    );
    assert!(
        said.contains(" next: ") && said.contains("said: 452 4.2.2 b is full"),
        "{said}"
    );

    // Flushed by the CLI: retried at once, well before its hour.
    let flushed = queue(&server, &["flush", &a, OUTGOING]);
    assert!(flushed.contains("flushed 1 mail(s)"), "{flushed}");
    sink.wait_for("a@x.test");
    // Flushed by the console (the outgoing spool's mails are not in state error: state=all).
    let said = console(
        &server,
        &[&format!("flushspool {OUTGOING} key={b} state=all")],
    );
    assert!(said.contains("Number of flushed mails: 1"), "{said}");
    sink.wait_for("b@x.test");
    assert!(
        sent.elapsed() < Duration::from_secs(600),
        "not retried at once"
    );
    wait_for("the outgoing spool to empty", || {
        queue(&server, &["list", OUTGOING]).contains("0 mail(s)")
    });
    let log = server.log();
    assert!(log.contains("rcpt=a@x.test status=delivered"), "{log}");
    assert!(log.contains("rcpt=b@x.test status=delivered"), "{log}");
    assert_eq!(sink.received().len(), 2);

    // With the server stopped: listed from the spool's files, flushed by the CLI itself
    // (taking the outgoing spool's lock), delivered at once when the server starts again.
    sink.answer("c@x.test", &["451 4.3.0 c later"]);
    send(&server, &["c@x.test"]);
    wait_for("the deferral", || {
        server.log().contains("rcpt=c@x.test status=deferred")
    });
    assert_eq!(server.terminate().code(), Some(0));
    let listed = queue(&server, &["list", OUTGOING]);
    assert!(
        listed.contains("1 mail(s)") && listed.contains("c later"),
        "{listed}"
    );
    let c = listed.split(' ').next().unwrap();
    let flushed = queue(&server, &["flush", c, OUTGOING]);
    assert!(flushed.contains("flushed 1 mail(s)"), "{flushed}");
    assert!(queue(&server, &["list", OUTGOING]).contains(" next=now "));
    server.spawn();
    sink.wait_for("c@x.test");
    assert!(
        sent.elapsed() < Duration::from_secs(600),
        "not retried at once"
    );
}

#[test]
fn max_retries_exhausted_fails_the_recipient() {
    let sink = Sink::start();
    sink.answer("busy@x.test", &["452 4.2.2 mailbox full"; 10]);
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><delayTime>1 * 1 second</delayTime><maxRetries>1</maxRetries><bounceProcessor>bounces</bounceProcessor>",
            sink.port
        ),
        None,
    );
    send(&server, &["busy@x.test"]);
    wait_for("the bounce after 2 attempts", || {
        bounces(&server).len() == 1
    });
    let bounce = &bounces(&server)[0];
    let error = bounce["error_message"].as_str().unwrap();
    assert!(error.contains("452 4.2.2 mailbox full"), "{error}");
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert_eq!(
        bounce["attributes"]["mailroom.delivery.status"]["value"],
        "4.2.2"
    );
    let log = server.log();
    assert_eq!(
        log.matches("rcpt=busy@x.test status=deferred").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("rcpt=busy@x.test status=failed").count(),
        1,
        "{log}"
    );
    assert!(sink.received().is_empty());
}

#[test]
fn starttls_when_the_peer_offers_it_and_require_tls() {
    let tls = Sink::offering(Offers {
        tls: Some(tls_config()),
        ..Offers::default()
    });
    let server = start(&format!("<gateway>127.0.0.1:{}</gateway>", tls.port), None);
    send(&server, &["a@tls.test"]);
    // A self-signed certificate: opportunistic TLS does not check it.
    let mail = tls.wait_for("a@tls.test");
    assert!(mail.tls, "not over TLS");
    assert_eq!(mail.helo, "relay.example.test");
    assert!(mail.data.contains("\r\n..leading dot\r\n"));
    // A gateway given as an address: no name in the handshake.
    assert_eq!(mail.sni, None);

    // An MX found by name: the handshake names it (SNI).
    let dns = start_dns(vec![
        ("named.test", mx(10, "mx.named.test")),
        ("mx.named.test", a([127, 0, 0, 1])),
    ]);
    let server = start(&format!("<mxPort>{}</mxPort>", tls.port), Some(dns));
    send(&server, &["a@named.test"]);
    let mail = tls.wait_for("a@named.test");
    assert!(mail.tls, "not over TLS");
    assert_eq!(mail.sni.as_deref(), Some("mx.named.test"));

    // requireTLS: a peer with STARTTLS takes the mail, one without keeps it waiting.
    let plain = Sink::start();
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><requireTLS>true</requireTLS><delayTime>1 second</delayTime>",
            plain.port
        ),
        None,
    );
    send(&server, &["b@plain.test"]);
    wait_for("the deferral", || {
        server.log().contains("rcpt=b@plain.test status=deferred")
    });
    assert!(
        server
            .log()
            .contains("does not offer STARTTLS, and requireTLS is set"),
        "{}",
        server.log()
    );
    assert!(plain.received().is_empty());
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><requireTLS>true</requireTLS>",
            tls.port
        ),
        None,
    );
    send(&server, &["c@tls.test"]);
    assert!(tls.wait_for("c@tls.test").tls);
}

/// Sends a message in a transaction with SMTPUTF8 (RFC 6531), UTF-8 addresses allowed.
fn send_utf8(server: &Server, from: &str, to: &str, subject: &str) {
    let mut smtp = Smtp::connect(server.smtp_port);
    assert!(smtp.cmd("EHLO client.test").contains("SMTPUTF8"));
    let reply = smtp.cmd(&format!("MAIL FROM:<{from}> SMTPUTF8"));
    assert!(reply.starts_with("250"), "{reply}");
    let reply = smtp.cmd(&format!("RCPT TO:<{to}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(smtp.cmd("DATA").starts_with("354"));
    let reply = smtp.cmd(&format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHallo\r\n."
    ));
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
}

/// RFC 6531: a mail that came with SMTPUTF8 goes on with it, UTF-8 addresses and all, to a
/// server that offers it; to one that does not, a non-ASCII envelope or a UTF-8 header
/// bounces with 5.6.7 (no downgrade) and an ASCII mail goes without the parameter.
#[test]
fn smtputf8_is_passed_on_or_a_non_ascii_envelope_bounces() {
    let utf8 = Sink::offering(Offers {
        smtputf8: true,
        ..Offers::default()
    });
    let server = start(&format!("<gateway>127.0.0.1:{}</gateway>", utf8.port), None);
    send_utf8(&server, "jörg@localhost", "ünï@utf8.test", "grüße");
    let mail = utf8.wait_for("ünï@utf8.test");
    assert!(
        mail.from.starts_with("<jörg@localhost> SIZE="),
        "{}",
        mail.from
    );
    assert!(mail.from.ends_with(" SMTPUTF8"), "{}", mail.from);
    assert!(mail.data.contains("Subject: grüße\r\n"), "{}", mail.data);

    let plain = Sink::start();
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><bounceProcessor>bounces</bounceProcessor>",
            plain.port
        ),
        None,
    );
    send_utf8(&server, "a@localhost", "ünï@utf8.test", "hello");
    send_utf8(&server, "a@localhost", "utf8-header@utf8.test", "grüße");
    send_utf8(&server, "a@localhost", "ascii@utf8.test", "hello");
    let mail = plain.wait_for("ascii@utf8.test");
    assert!(!mail.from.contains("SMTPUTF8"), "{}", mail.from);
    wait_for("the bounces", || bounces(&server).len() == 2);
    let mut bounced = bounces(&server);
    bounced.sort_by_key(|b| b["recipients"].to_string());
    assert_eq!(
        bounced[0]["recipients"],
        serde_json::json!(["utf8-header@utf8.test"])
    );
    assert_eq!(
        bounced[1]["recipients"],
        serde_json::json!(["ünï@utf8.test"])
    );
    for (bounce, why) in bounced
        .iter()
        .zip(["the header is UTF-8", "non-ASCII addresses"])
    {
        let error = bounce["error_message"].as_str().unwrap();
        assert!(
            error.contains(why) && error.contains("does not offer SMTPUTF8"),
            "{bounce}"
        );
        assert_eq!(
            bounce["attributes"]["mailroom.delivery.status"]["value"],
            "5.6.7"
        );
    }
    assert!(plain
        .received()
        .iter()
        .all(|m| m.rcpts.iter().all(|r| r.is_ascii())));
}

#[test]
fn a_failed_handshake_is_retried_in_plain_text_unless_tls_is_required() {
    let broken = Offers {
        broken_tls: true,
        ..Offers::default()
    };
    let sink = Sink::offering(broken.clone());
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><delayTime>1 second</delayTime><maxRetries>3</maxRetries>",
            sink.port
        ),
        None,
    );
    send(&server, &["a@x.test"]);
    let mail = sink.wait_for("a@x.test");
    assert!(!mail.tls);
    assert_eq!(sink.starttls_count(), 1, "STARTTLS tried again");
    // The sink has the mail a moment before the server logs the delivery.
    wait_for("the delivery's outcome line", || {
        server.log().contains("rcpt=a@x.test status=delivered")
    });
    let log = server.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert_eq!(
        log.matches("rcpt=a@x.test status=deferred").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("rcpt=a@x.test status=delivered").count(),
        1,
        "{log}"
    );

    // With requireTLS the mail waits in the outgoing spool, every attempt over TLS.
    let sink = Sink::offering(broken);
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><requireTLS>true</requireTLS><delayTime>1 second</delayTime><maxRetries>5</maxRetries>",
            sink.port
        ),
        None,
    );
    send(&server, &["b@x.test"]);
    wait_for("two deferrals", || {
        server
            .log()
            .matches("rcpt=b@x.test status=deferred")
            .count()
            >= 2
    });
    assert!(sink.received().is_empty());
    assert!(sink.starttls_count() >= 2);
    let log = server.log();
    let deferral = log
        .lines()
        .find(|l| l.contains("rcpt=b@x.test status=deferred"))
        .unwrap();
    assert!(deferral.contains("TLS handshake failed"), "{deferral}");
}

#[test]
fn a_gateway_with_auth() {
    let password = "s3cret-Pa55";
    let sink = Sink::offering(Offers {
        tls: Some(tls_config()),
        auth: Some(("relay".into(), password.into())),
        ..Offers::default()
    });
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><gatewayusername>relay</gatewayusername><gatewayPassword>{password}</gatewayPassword>",
            sink.port
        ),
        None,
    );
    send(&server, &["a@x.test"]);
    let mail = sink.wait_for("a@x.test");
    assert_eq!(mail.auth.as_deref(), Some("relay"));
    assert!(mail.tls);
    assert!(!server.log().contains(password));

    // Without TLS, AUTH only with gatewayAuthOverPlain (and James's other spelling).
    let plain = Sink::offering(Offers {
        auth: Some(("relay".into(), password.into())),
        ..Offers::default()
    });
    let params = format!(
        "<gateway>127.0.0.1:{}</gateway><gatewayUsername>relay</gatewayUsername><gatewayPassword>{password}</gatewayPassword><delayTime>1 second</delayTime>",
        plain.port
    );
    let refused = start(&params, None);
    send(&refused, &["b@x.test"]);
    wait_for("the deferral", || {
        refused.log().contains("rcpt=b@x.test status=deferred")
    });
    assert!(
        refused
            .log()
            .contains("AUTH over plain text is not allowed"),
        "{}",
        refused.log()
    );
    let allowed = start(
        &format!("{params}<gatewayAuthOverPlain>true</gatewayAuthOverPlain>"),
        None,
    );
    send(&allowed, &["c@x.test"]);
    let mail = plain.wait_for("c@x.test");
    assert_eq!(mail.auth.as_deref(), Some("relay"));
    assert!(!mail.tls);
    assert!(plain.received().iter().all(|m| m.rcpts != ["b@x.test"]));
}

/// Sends one mail with MAIL/RCPT parameters: `to` is (address, parameters).
fn send_with(server: &Server, from_params: &str, to: &[(&str, &str)], message: &str) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    let reply = smtp.cmd(&format!("MAIL FROM:<sender@localhost> {from_params}"));
    assert!(reply.starts_with("250"), "{reply}");
    for (rcpt, params) in to {
        let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}> {params}"));
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("{}\r\n.\r\n", message.replace('\n', "\r\n")).as_bytes());
    let reply = smtp.reply();
    assert!(reply.starts_with("250"), "{reply}");
}

#[test]
fn dsn_parameters_are_passed_on_when_the_peer_offers_dsn() {
    let dsn = Sink::offering(Offers {
        dsn: true,
        ..Offers::default()
    });
    let without = Sink::start();
    let dns = start_dns(vec![
        ("dsn.test", a([127, 0, 0, 1])),
        ("plain.test", a([127, 0, 0, 1])),
    ]);
    // Both domains resolve to 127.0.0.1: the MX port picks the sink, so two servers.
    for (sink, domain) in [(&dsn, "dsn.test"), (&without, "plain.test")] {
        let server = start(&format!("<mxPort>{}</mxPort>", sink.port), Some(dns));
        let (a, b) = (format!("a@{domain}"), format!("b@{domain}"));
        let orcpt = format!("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{a}");
        send_with(
            &server,
            "RET=HDRS ENVID=QQ314159",
            &[(&a, &orcpt), (&b, "NOTIFY=NEVER")],
            MESSAGE,
        );
        sink.wait_for(&a);
    }
    let mail = dsn.wait_for("a@dsn.test");
    assert!(
        mail.from.ends_with(" RET=HDRS ENVID=QQ314159"),
        "{}",
        mail.from
    );
    assert_eq!(mail.rcpts, vec!["a@dsn.test", "b@dsn.test"]);
    assert_eq!(
        mail.rcpt_params,
        vec![
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@dsn.test",
            "NOTIFY=NEVER"
        ]
    );
    // A peer without DSN gets none of them.
    let mail = without.wait_for("a@plain.test");
    assert!(!mail.from.contains("RET="), "{}", mail.from);
    assert!(!mail.from.contains("ENVID="), "{}", mail.from);
    assert_eq!(mail.rcpt_params, vec!["", ""]);
}

#[test]
fn eight_bit_mail_goes_with_body_8bitmime_or_fails_with_5_6_3() {
    let eight = Sink::start();
    let seven = Sink::offering(Offers {
        seven_bit: true,
        ..Offers::default()
    });
    let utf8 = "From: a@localhost\nSubject: caf\u{e9}\n\nd\u{e9}j\u{e0} vu\n";
    let server = start(
        &format!("<gateway>127.0.0.1:{}</gateway>", eight.port),
        None,
    );
    send_with(&server, "BODY=8BITMIME", &[("a@x.test", "")], utf8);
    send(&server, &["b@x.test"]);
    let mail = eight.wait_for("a@x.test");
    assert!(mail.from.ends_with(" BODY=8BITMIME"), "{}", mail.from);
    assert!(mail.data.contains("d\u{e9}j\u{e0} vu"), "{}", mail.data);
    // A 7-bit message says nothing of its body.
    let mail = eight.wait_for("b@x.test");
    assert!(!mail.from.contains("BODY="), "{}", mail.from);

    // RFC 6152 §3: 8-bit content to a server without 8BITMIME is converted or fails; Mailroom
    // does not convert, so the recipient fails with 5.6.3 and nothing is sent.
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><bounceProcessor>bounces</bounceProcessor>",
            seven.port
        ),
        None,
    );
    send_with(&server, "BODY=8BITMIME", &[("c@x.test", "")], utf8);
    send(&server, &["d@x.test"]);
    seven.wait_for("d@x.test");
    wait_for("the 5.6.3 failure", || bounces(&server).len() == 1);
    let bounce = &bounces(&server)[0];
    assert_eq!(bounce["recipients"], serde_json::json!(["c@x.test"]));
    assert_eq!(
        bounce["attributes"]["mailroom.delivery.status"]["value"],
        "5.6.3"
    );
    assert!(seven.received().iter().all(|m| m.rcpts != ["c@x.test"]));
}

/// The embedded default configuration, as shipped, with only its ports, its DNS server and
/// the MX port moved onto the test's.
#[test]
fn the_embedded_default_relays_remote_mail_from_loopback() {
    const DEFAULT: &str = include_str!("../../crates/config/default-config.xml");
    let sink = Sink::start();
    let dns = start_dns(vec![
        ("far.test", mx(10, "mx.far.test")),
        ("mx.far.test", a([127, 0, 0, 1])),
    ]);
    let (smtp_port, pop3_port) = (crate::harness::free_port(), crate::harness::free_port());
    let replace = |s: String, from: &str, to: &str| {
        assert!(s.contains(from), "the default config no longer has {from}");
        s.replace(from, to)
    };
    let mut xml = DEFAULT.to_string();
    xml = replace(
        xml,
        "<port>2525</port>",
        &format!("<port>{smtp_port}</port>"),
    );
    xml = replace(
        xml,
        "<port>1110</port>",
        &format!("<port>{pop3_port}</port>"),
    );
    xml = replace(
        xml,
        "<port>5587</port>",
        &format!("<port>{}</port>", crate::harness::free_port()),
    );
    xml = replace(
        xml,
        "<port>9465</port>",
        &format!("<port>{}</port>", crate::harness::free_port()),
    );
    xml = replace(
        xml,
        "<port>1119</port>",
        &format!("<port>{}</port>", crate::harness::free_port()),
    );
    xml = replace(
        xml,
        "<maxRetries>25</maxRetries>",
        &format!("<maxRetries>25</maxRetries><mxPort>{}</mxPort>", sink.port),
    );
    xml = replace(
        xml,
        "<servers/>",
        &format!("<servers><server>{dns}</server></servers>"),
    );
    xml = replace(
        xml,
        "<autodiscover>true</autodiscover>",
        "<autodiscover>false</autodiscover>",
    );
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.xml");
    std::fs::write(&config, xml).unwrap();
    let log = home.path().join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(crate::harness::BIN)
        .arg("--config")
        .arg(&config)
        .arg("--home")
        .arg(home.path())
        .env("RUST_LOG", "info")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    wait_for("the server's SMTP port", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        TcpStream::connect(("127.0.0.1", smtp_port)).is_ok()
    });
    let _child = Kill(child);
    crate::harness::Smtp::connect(smtp_port).send_mail("me@localhost", &["bob@far.test"], MESSAGE);
    let mail = sink.wait_for("bob@far.test");
    assert!(mail.data.contains("Subject: out\r\n"));
    assert!(mail.from.starts_with("<me@localhost>"));

    // A refused recipient comes back to the (local) sender as a delivery status notification.
    let added = std::process::Command::new(crate::harness::BIN)
        .args(["user", "add", "me", "--password", "a long secret"])
        .arg("--config")
        .arg(&config)
        .arg("--home")
        .arg(home.path())
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    sink.answer(
        "gone@far.test",
        &["550 5.1.1 <gone@far.test>: no such user"],
    );
    crate::harness::Smtp::connect(smtp_port).send_mail("me@localhost", &["gone@far.test"], MESSAGE);
    let inbox = home.path().join("var/mail/inboxes/me");
    wait_for("the DSN in the sender's Maildir", || {
        !crate::harness::maildir_messages(&inbox).is_empty()
    });
    let dsn = String::from_utf8(crate::harness::maildir_messages(&inbox).remove(0)).unwrap();
    for field in [
        "Return-Path: <>",
        "report-type=\"delivery-status\"",
        "Final-Recipient: rfc822; gone@far.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@far.test>: no such user",
    ] {
        assert!(dsn.contains(field), "{field} not in {dsn}");
    }
}

/// A message far larger than any buffer: streamed from the spool to the socket, and intact
/// at the far end (its dot-stuffed lines included), in one attempt. Its deadlines leave room
/// for a loaded machine (20 MiB through a debug build, synced to the spool while other tests
/// write hundreds of MiB): a minute per read or write on either side instead of 5 or 20 s.
#[test]
fn a_large_message_is_streamed_intact() {
    let sink = Sink::start();
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><timeout>60000</timeout>",
            sink.port
        ),
        None,
    );
    let mut message = String::from("From: a@localhost\r\nSubject: big\r\n\r\n");
    let mut i = 0u64;
    while message.len() < 20 * 1024 * 1024 {
        message.push_str(&format!(".line {i:010} {}\r\n", "y".repeat(60)));
        i += 1;
    }
    // On the wire to Mailroom every leading dot is doubled.
    let stuffed = message.replace("\r\n.", "\r\n..");
    let stream = TcpStream::connect(("127.0.0.1", server.smtp_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "closed: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    assert!(reply().starts_with("220"));
    writer
        .write_all(b"EHLO client.test\r\nMAIL FROM:<sender@localhost>\r\n")
        .unwrap();
    assert!(reply().starts_with("250"));
    assert!(reply().starts_with("250"));
    writer
        .write_all(b"RCPT TO:<big@x.test>\r\nDATA\r\n")
        .unwrap();
    assert!(reply().starts_with("250"));
    assert!(reply().starts_with("354"));
    writer.write_all(stuffed.as_bytes()).unwrap();
    writer.write_all(b".\r\nQUIT\r\n").unwrap();
    let accepted = reply();
    assert!(accepted.starts_with("250"), "{accepted}");
    let mut found = None;
    crate::pg::wait_long("the mail at the sink", Duration::from_secs(120), || {
        found = sink
            .received()
            .into_iter()
            .find(|m| m.rcpts.iter().any(|r| r == "big@x.test"));
        found.is_some()
    });
    let mail = found.unwrap();
    // The sink keeps the data as it came (still stuffed): what was sent in, after the
    // Received: field Mailroom adds on top.
    assert!(mail.data.starts_with("Received: "), "no trace field");
    let added = mail.data.len() - stuffed.len();
    assert!(added < 1024, "{added} octets more than sent");
    assert!(
        mail.data[added..] == stuffed[..],
        "the message changed on the way"
    );
    crate::pg::wait_long("the delivered line", Duration::from_secs(60), || {
        server.log().contains("rcpt=big@x.test status=delivered")
    });
    let log = server.log();
    assert!(!log.contains("rcpt=big@x.test status=deferred"), "{log}");
}

fn faulty(fault: Fault) -> (Sink, Server) {
    let sink = Sink::start();
    sink.faults(&[fault]);
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><delayTime>1 second</delayTime><maxRetries>5</maxRetries><bounceProcessor>bounces</bounceProcessor>",
            sink.port
        ),
        None,
    );
    (sink, server)
}

/// A faulty first connection is deferred with `reason`; the retry delivers exactly once.
fn retried_after(fault: Fault, reason: &str) {
    let (sink, server) = faulty(fault);
    send(&server, &["r@x.test"]);
    let mail = sink.wait_for("r@x.test");
    assert_eq!(mail.rcpts, vec!["r@x.test"]);
    wait_for("the delivered line", || {
        server.log().contains("rcpt=r@x.test status=delivered")
    });
    let log = server.log();
    assert!(log.contains("rcpt=r@x.test status=deferred"), "{log}");
    assert!(log.contains(reason), "{reason} not in {log}");
    assert_eq!(
        log.matches("rcpt=r@x.test status=delivered").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(sink.received().len(), 1);
    assert!(bounces(&server).is_empty());
    wait_for("empty outgoing spool", || {
        envelopes(&server.path("var/mail/outgoing")).is_empty()
    });
}

#[test]
fn a_server_that_hangs_after_the_greeting_times_out_and_is_retried() {
    retried_after(Fault::HangAfterGreeting, "timed out waiting for a reply");
}

#[test]
fn a_connection_dropped_mid_data_is_not_delivered_and_is_retried() {
    retried_after(Fault::DropMidData, "connection closed by the server");
}

#[test]
fn garbage_replies_are_retried_cleanly() {
    retried_after(Fault::Garbage, "not an SMTP reply");
}

#[test]
fn an_overlong_reply_line_is_retried_cleanly() {
    retried_after(Fault::OverlongLine, "longer than 4096 octets");
}

/// SERVFAIL and a DNS server that never answers are temporary (deferred, retried, no
/// bounce); NXDOMAIN is permanent (the bounce processor at once).
#[test]
fn dns_servfail_and_timeouts_are_retried_nxdomain_bounces() {
    let dns = start_dns(vec![("known.test", a([127, 0, 0, 1]))]);
    let server = start(
        "<mxPort>9</mxPort><delayTime>1 second</delayTime><maxRetries>50</maxRetries><bounceProcessor>bounces</bounceProcessor>",
        Some(dns),
    );
    send(
        &server,
        &["a@servfail.test", "b@silent.test", "c@nowhere.test"],
    );
    wait_for("the NXDOMAIN bounce", || bounces(&server).len() == 1);
    let bounce = &bounces(&server)[0];
    assert_eq!(bounce["recipients"], serde_json::json!(["c@nowhere.test"]));
    assert_eq!(
        bounce["attributes"]["mailroom.delivery.status"]["value"],
        "5.1.2"
    );
    wait_for("two attempts of each temporary failure", || {
        let log = server.log();
        log.matches("rcpt=a@servfail.test status=deferred").count() >= 2
            && log.matches("rcpt=b@silent.test status=deferred").count() >= 2
    });
    let log = server.log();
    assert!(!log.contains("rcpt=a@servfail.test status=failed"), "{log}");
    assert!(!log.contains("rcpt=b@silent.test status=failed"), "{log}");
    assert_eq!(bounces(&server).len(), 1);
    assert_eq!(
        log.matches("rcpt=c@nowhere.test status=failed").count(),
        1,
        "{log}"
    );
}

/// `kill -9` while mails are being relayed: after the restart every mail that got its 250 is
/// delivered at least once (duplicates allowed, losses not).
#[test]
fn kill_9_during_remote_delivery_loses_nothing() {
    let sink = Sink::start();
    let mut server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><delayTime>1 second</delayTime>",
            sink.port
        ),
        None,
    );
    let port = server.smtp_port;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let _ = std::panic::catch_unwind(move || {
                let mut smtp = crate::harness::Smtp::connect(port);
                smtp.cmd("EHLO crash");
                for i in 0..300 {
                    smtp.cmd("MAIL FROM:<s@localhost>");
                    let rcpt = format!("m{i}@x.test");
                    smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
                    smtp.cmd("DATA");
                    if smtp
                        .cmd(&format!("Subject: {i}\r\n\r\nbody {i}\r\n."))
                        .starts_with("250")
                    {
                        accepted.lock().unwrap().push(rcpt);
                    }
                }
            });
        })
    };
    wait_for("some remote deliveries", || sink.received().len() >= 20);
    server.kill();
    let _ = sender.join();
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 20, "only {} accepted", accepted.len());
    server.spawn();
    let delivered = || -> std::collections::HashSet<String> {
        sink.received().into_iter().flat_map(|m| m.rcpts).collect()
    };
    wait_for("every accepted mail delivered", || {
        accepted.iter().all(|r| delivered().contains(r))
    });
}

#[test]
fn without_a_bounce_processor_the_sender_gets_the_dsn() {
    let sink = Sink::start();
    sink.answer(
        "nobody@x.test",
        &["550 5.1.1 <nobody@x.test>: no such user"],
    );
    let server = start(&format!("<gateway>127.0.0.1:{}</gateway>", sink.port), None);
    server.add_user("alice", "a");
    let alice = server.path("var/mail/inboxes/alice");
    server
        .smtp()
        .send_mail("alice@localhost", &["nobody@x.test"], MESSAGE);
    wait_for("the report", || maildir_messages(&alice).len() == 1);
    let report = String::from_utf8_lossy(&maildir_messages(&alice)[0]).into_owned();
    for part in [
        "multipart/report",
        "report-type=\"delivery-status\"",
        "Auto-Submitted: auto-replied",
        "Subject: Undelivered: out",
        "Final-Recipient: rfc822; nobody@x.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; 127.0.0.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@x.test>: no such user",
        "message/rfc822",
        "Hello",
    ] {
        assert!(report.contains(part), "{part:?} not in {report}");
    }
    // From the null sender: a bounce of it would never be bounced.
    assert!(report.starts_with("Return-Path: <>"), "{report}");
    let log = server.log();
    assert!(
        log.contains("rcpt=nobody@x.test status=failed") && log.contains("next=sender"),
        "{log}"
    );
    assert!(
        log.contains("rcpt=nobody@x.test status=bounced to=alice@localhost"),
        "{log}"
    );
    assert!(!log.contains("not served yet"), "{log}");
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
}

/// Sends a mail from the null sender (a bounce) to `rcpt`.
fn send_bounce(server: &Server, rcpt: &str) {
    let mut smtp = server.smtp();
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<>").starts_with("250"));
    assert!(smtp.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("{}\r\n.\r\n", MESSAGE.replace('\n', "\r\n")).as_bytes());
    assert!(smtp.reply().starts_with("250"));
}

#[test]
fn a_failed_bounce_is_never_bounced_without_a_bounce_processor() {
    let sink = Sink::start();
    sink.answer("nobody@x.test", &["550 5.1.1 no such user"]);
    let server = start(&format!("<gateway>127.0.0.1:{}</gateway>", sink.port), None);
    send_bounce(&server, "nobody@x.test");
    wait_for("the drop", || {
        server
            .log()
            .contains("rcpt=nobody@x.test status=dropped reason=\"null sender")
    });
    wait_for("empty outgoing spool", || {
        envelopes(&server.path("var/mail/outgoing")).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
    // Only the one attempt reached the sink: no report went anywhere.
    assert!(sink.received().is_empty());
}

#[test]
fn a_failed_bounce_is_never_bounced_by_the_bounce_processor() {
    let sink = Sink::start();
    sink.answer("nobody@x.test", &["550 5.1.1 no such user"]);
    let tree = tree(&format!(
        "<gateway>127.0.0.1:{}</gateway><bounceProcessor>bounces</bounceProcessor>",
        sink.port
    ))
    .replace(
        r#"<mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/bounces/</repositoryPath></mailet>"#,
        r#"<mailet match="All" class="DSNBounce"><passThrough>false</passThrough></mailet>"#,
    );
    let server = Server::start_setup(&Setup {
        tree: &tree,
        ..Setup::default()
    });
    send_bounce(&server, "nobody@x.test");
    wait_for("the drop", || {
        server
            .log()
            .contains("rcpt=nobody@x.test status=dropped reason=\"null sender")
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert!(log.contains("next=bounces"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
    assert!(sink.received().is_empty());
}

#[test]
fn bind_makes_connections_from_that_address() {
    let sink = Sink::start();
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><bind>127.0.0.2</bind>",
            sink.port
        ),
        None,
    );
    send(&server, &["a@x.test"]);
    let mail = sink.wait_for("a@x.test");
    assert_eq!(
        mail.peer.map(|p| p.ip().to_string()).as_deref(),
        Some("127.0.0.2")
    );
    // Without <bind>, the system's choice: 127.0.0.1.
    let sink = Sink::start();
    let server = start(&format!("<gateway>127.0.0.1:{}</gateway>", sink.port), None);
    send(&server, &["b@x.test"]);
    let mail = sink.wait_for("b@x.test");
    assert_eq!(
        mail.peer.map(|p| p.ip().to_string()).as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn an_unusable_bind_address_fails_the_connection_cleanly_and_is_retried() {
    let sink = Sink::start();
    // 192.0.2.1 (TEST-NET-1) is no address of this host: binding to it fails.
    let server = start(
        &format!(
            "<gateway>127.0.0.1:{}</gateway><bind>192.0.2.1</bind><delayTime>1 second</delayTime>",
            sink.port
        ),
        None,
    );
    send(&server, &["a@x.test"]);
    wait_for("a deferral", || {
        let log = server.log();
        log.contains("rcpt=a@x.test status=deferred") && log.contains("cannot bind to 192.0.2.1")
    });
    let log = server.log();
    assert!(log.contains("attempts=1"), "{log}");
    // And again, on the schedule.
    wait_for("a second attempt", || server.log().contains("attempts=2"));
    assert!(sink.received().is_empty());
    assert!(!server.log().contains("status=failed"));
}
