//! TLS load generator for `bench/tls.sh`: the same client against Mailroom and the real peer.
//!
//! ```text
//! tls-load submit HOST:PORT CA.pem USER PASSWORD MESSAGES SESSIONS
//! tls-load pop3s  HOST:PORT CA.pem CONNECTIONS CONCURRENCY
//! ```
//!
//! * `submit`: SESSIONS sessions at once, each: connect, EHLO, STARTTLS, EHLO, AUTH PLAIN,
//!   then its share of MESSAGES messages of 1 KiB (MAIL FROM, RCPT TO `USER@localhost`,
//!   DATA, one command at a time, as smtp-source does), QUIT. Prints
//!   `messages=N seconds=S rate=R` (messages per second).
//! * `pop3s`: CONNECTIONS connections to an implicit-TLS POP3 port, CONCURRENCY at a time,
//!   each: connect, full TLS handshake, read the banner, QUIT. Prints
//!   `handshakes=N seconds=S rate=R`.
//!
//! The server certificate is verified against CA.pem for the name `localhost`. Session
//! resumption is off, so every connection pays a full handshake, as separate client processes
//! do. Any unexpected reply is an error (non-zero exit), so that a server that fails fast is
//! never reported as a fast server.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Result<T> = std::result::Result<T, String>;

/// A line-oriented connection, plain or TLS.
enum Link {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<StreamOwned<ClientConnection, TcpStream>>>),
}

impl Link {
    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = match self {
            Link::Plain(r) => r.read_line(&mut line),
            Link::Tls(r) => r.read_line(&mut line),
        }
        .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(line)
    }

    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Link::Plain(r) => r.get_mut().write_all(data),
            Link::Tls(r) => r.get_mut().write_all(data),
        }
        .map_err(|e| e.to_string())
    }

    /// An SMTP reply (all its lines); fails unless its code starts with `expect`.
    fn smtp_reply(&mut self, expect: char) -> Result<()> {
        loop {
            let line = self.read_line()?;
            if !line.starts_with(expect) {
                return Err(format!("unexpected reply {line:?}"));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    fn smtp(&mut self, command: &str, expect: char) -> Result<()> {
        self.write_all(format!("{command}\r\n").as_bytes())?;
        self.smtp_reply(expect)
    }

    fn into_tls(self, config: &Arc<ClientConfig>) -> Result<Link> {
        let Link::Plain(reader) = self else {
            return Err("already TLS".into());
        };
        if !reader.buffer().is_empty() {
            return Err("the server sent data after its STARTTLS reply".into());
        }
        tls(reader.into_inner(), config)
    }
}

fn tls(stream: TcpStream, config: &Arc<ClientConfig>) -> Result<Link> {
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut connection = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut stream = stream;
    // Complete the handshake now, so that a failure is reported as such.
    while connection.is_handshaking() {
        connection
            .complete_io(&mut stream)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(Link::Tls(Box::new(BufReader::with_capacity(
        16 * 1024,
        StreamOwned::new(connection, stream),
    ))))
}

fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn client_config(ca: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// `\0user\0password` in base64 (RFC 4616), without a dependency for 20 lines.
fn plain_credentials(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One submission session: STARTTLS, AUTH PLAIN, `messages` messages, QUIT.
fn submit_session(
    addr: &str,
    config: &Arc<ClientConfig>,
    auth: &str,
    user: &str,
    messages: usize,
) -> Result<()> {
    let mut link = Link::Plain(BufReader::new(connect(addr)?));
    link.smtp_reply('2')?;
    link.smtp("EHLO load.example", '2')?;
    link.smtp("STARTTLS", '2')?;
    let mut link = link.into_tls(config)?;
    link.smtp("EHLO load.example", '2')?;
    link.smtp(&format!("AUTH PLAIN {auth}"), '2')?;
    let mut body =
        String::from("From: load@example.net\r\nTo: bench@localhost\r\nSubject: load\r\n\r\n");
    while body.len() < 1024 {
        body.push_str(
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n",
        );
    }
    body.push_str(".\r\n");
    for _ in 0..messages {
        link.smtp(&format!("MAIL FROM:<{user}@localhost>"), '2')?;
        link.smtp(&format!("RCPT TO:<{user}@localhost>"), '2')?;
        link.smtp("DATA", '3')?;
        link.write_all(body.as_bytes())?;
        link.smtp_reply('2')?;
    }
    link.smtp("QUIT", '2')
}

/// One POP3S connection: handshake, banner, QUIT.
fn pop3s_connection(addr: &str, config: &Arc<ClientConfig>) -> Result<()> {
    let mut link = tls(connect(addr)?, config)?;
    let banner = link.read_line()?;
    if !banner.starts_with("+OK") {
        return Err(format!("unexpected banner {banner:?}"));
    }
    link.write_all(b"QUIT\r\n")?;
    let bye = link.read_line()?;
    if !bye.starts_with("+OK") {
        return Err(format!("unexpected reply {bye:?}"));
    }
    // Drain to the server's close_notify/EOF so that the server finished its side too.
    let mut rest = Vec::new();
    if let Link::Tls(r) = &mut link {
        let _ = r.read_to_end(&mut rest);
    }
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tls-load submit HOST:PORT CA USER PASSWORD MESSAGES SESSIONS | \
                 tls-load pop3s HOST:PORT CA CONNECTIONS CONCURRENCY";
    let number = |s: &String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    match args.get(1).map(String::as_str) {
        Some("submit") if args.len() == 8 => {
            let (addr, config) = (args[2].clone(), client_config(&args[3])?);
            let (user, auth) = (args[4].clone(), plain_credentials(&args[4], &args[5]));
            let (messages, sessions) = (number(&args[6])?, number(&args[7])?.max(1));
            let start = Instant::now();
            let threads: Vec<_> = (0..sessions)
                .map(|i| {
                    let share = messages / sessions + usize::from(i < messages % sessions);
                    let (addr, config, auth, user) =
                        (addr.clone(), config.clone(), auth.clone(), user.clone());
                    std::thread::spawn(move || submit_session(&addr, &config, &auth, &user, share))
                })
                .collect();
            for t in threads {
                t.join().map_err(|_| "a session panicked".to_string())??;
            }
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "messages={messages} seconds={seconds:.3} rate={:.1}",
                messages as f64 / seconds
            );
            Ok(())
        }
        Some("pop3s") if args.len() == 6 => {
            let (addr, config) = (args[2].clone(), client_config(&args[3])?);
            let (connections, concurrency) = (number(&args[4])?, number(&args[5])?.max(1));
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let threads: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (addr, config, next) = (addr.clone(), config.clone(), next.clone());
                    std::thread::spawn(move || -> Result<()> {
                        while next.fetch_add(1, Ordering::Relaxed) < connections {
                            pop3s_connection(&addr, &config)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for t in threads {
                t.join()
                    .map_err(|_| "a connection panicked".to_string())??;
            }
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "handshakes={connections} seconds={seconds:.3} rate={:.1}",
                connections as f64 / seconds
            );
            Ok(())
        }
        _ => Err(usage.into()),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("tls-load: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::plain_credentials;

    #[test]
    fn plain_credentials_are_rfc4616_base64() {
        // printf '\0bench\0bench' | base64
        assert_eq!(plain_credentials("bench", "bench"), "AGJlbmNoAGJlbmNo");
        assert_eq!(plain_credentials("a", "b"), "AGEAYg==");
    }
}
