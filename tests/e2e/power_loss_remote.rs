//! Power loss (see [`crate::power_loss`] for the rig) for mail relayed to a remote domain: it
//! goes from the spool to RemoteDelivery's outgoing spool, then to a catching SMTP server that
//! runs in the test (and so survives the cut). Every mail acknowledged with `250` must reach it
//! whole.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::harness::{Server, Setup};
use crate::power_loss::{
    burst, check_message, cycles, reboot, smtp_client, wait_long, Random, Xfs,
};

/// A catching SMTP server: the messages it took, by Message-ID, with their counts.
struct Sink {
    port: u16,
    received: Arc<Mutex<HashMap<String, usize>>>,
    /// Messages that were not whole.
    bad: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(HashMap::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (r, b) = (received.clone(), bad.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, b) = (r.clone(), b.clone());
                std::thread::spawn(move || {
                    let _ = sink_session(stream, &r, &b);
                });
            }
        });
        Sink {
            port,
            received,
            bad,
        }
    }
}

/// One SMTP session of the sink: no extensions, one reply per command.
fn sink_session(
    stream: TcpStream,
    received: &Mutex<HashMap<String, usize>>,
    bad: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    writer.write_all(b"220 sink.test ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink.test\r\n",
            "DATA" => {
                writer.write_all(b"354 go ahead\r\n")?;
                let mut message = Vec::new();
                loop {
                    let mut data = String::new();
                    if reader.read_line(&mut data)? == 0 {
                        return Ok(());
                    }
                    if data == ".\r\n" {
                        break;
                    }
                    let data = data.strip_prefix('.').unwrap_or(&data);
                    message.extend_from_slice(data.as_bytes());
                }
                match check_message(&message) {
                    Ok(id) => *received.lock().unwrap().entry(id).or_insert(0) += 1,
                    Err(e) => bad.lock().unwrap().push(e),
                }
                b"250 2.0.0 taken\r\n"
            }
            "QUIT" => {
                writer.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        writer.write_all(reply)?;
    }
}

#[test]
#[ignore = "needs root and xfsprogs; run by .ci/run"]
fn relayed_mail_acknowledged_before_a_power_cut_reaches_the_remote_server_whole() {
    let xfs = Xfs::new();
    let mut random = Random::new("remote");
    let sink = Sink::start();
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="RemoteDelivery">
        <outgoing>file://var/mail/outgoing/</outgoing>
        <gateway>127.0.0.1:{}</gateway>
        <delayTime>1 second</delayTime>
        <maxRetries>100</maxRetries>
      </mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
"#,
        sink.port
    );
    let mut server = Server::start_in(
        xfs.path(),
        &Setup {
            tree: &tree,
            ..Setup::default()
        },
        |xml| xml,
    );
    xfs.sync();
    let mut acknowledged = Vec::new();
    for cycle in 0..cycles() {
        let port = server.smtp_port;
        let clients: Vec<_> = (0..4)
            .map(|t| {
                move |stop: &AtomicBool, acked: &Mutex<Vec<String>>| {
                    smtp_client(
                        port,
                        "bob@remote.test",
                        &format!("r{cycle}-t{t}"),
                        stop,
                        acked,
                    )
                }
            })
            .collect();
        let acked = burst(&xfs, &mut random, 1000, clients);
        reboot(&mut server, &xfs);
        acknowledged.extend(acked.iter().cloned());
        wait_long("every acknowledged mail relayed", || {
            let received = sink.received.lock().unwrap();
            acknowledged.iter().all(|id| received.contains_key(id))
        });
        let bad = sink.bad.lock().unwrap().clone();
        assert!(bad.is_empty(), "cycle {cycle}: {bad:?}");
        let received = sink.received.lock().unwrap();
        let again: usize = received.values().map(|n| n - 1).sum();
        eprintln!(
            "cycle {cycle}: {} acknowledged, {} relayed in all, {again} relayed again",
            acked.len(),
            received.len()
        );
        assert_eq!(
            crate::harness::repository_count(&server.path("var/mail/error")),
            0,
            "cycle {cycle}: mails in the error repository"
        );
    }
    eprintln!("remote: {} acknowledged, 0 lost", acknowledged.len());
}
