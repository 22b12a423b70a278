//! POP3 load generator for `bench/pop3.sh`: runs full sessions against one server and prints
//! the rate.
//!
//! ```text
//! pop3-load HOST:PORT USER PASSWORD SESSIONS CONCURRENCY
//! ```
//!
//! A POP3 mailbox serves one session at a time, so each thread logs in as its own user: `%`
//! in USER is replaced by the thread's number (1 to CONCURRENCY).
//!
//! Each session is what a mail client does when it reads a whole mailbox: connect, read the
//! banner, USER, PASS, STAT, UIDL, TOP n 0 of every message, RETR of every message, QUIT, one
//! command at a time (no pipelining: most clients wait for each answer). CONCURRENCY threads
//! run the sessions between them. It prints one line:
//! `sessions=N seconds=S rate=R octets_per_session=O`, and exits non-zero on any `-ERR` or
//! protocol error, so that a server that fails fast is never reported as a fast server.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

type Result<T> = std::result::Result<T, String>;

/// One POP3 connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Octets of message data received (RETR and TOP bodies), to compare servers.
    octets: usize,
}

impl Client {
    fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = Client {
            reader: BufReader::with_capacity(
                64 * 1024,
                stream.try_clone().map_err(|e| e.to_string())?,
            ),
            writer: stream,
            octets: 0,
        };
        client.status()?;
        Ok(client)
    }

    /// Reads a status line; an `-ERR` is an error.
    fn status(&mut self) -> Result<String> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.starts_with("+OK") {
            Ok(line)
        } else {
            Err(format!("unexpected reply {line:?}"))
        }
    }

    fn cmd(&mut self, line: &str) -> Result<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.status()
    }

    /// A command with a multi-line answer: reads up to the `.` line.
    fn multi(&mut self, line: &str) -> Result<usize> {
        self.cmd(line)?;
        let mut data = Vec::new();
        let mut octets = 0;
        loop {
            data.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut data)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed in a multi-line reply".into());
            }
            if data == b".\r\n" {
                return Ok(octets);
            }
            octets += n;
        }
    }

    fn session(addr: &str, user: &str, password: &str) -> Result<usize> {
        let mut c = Client::connect(addr)?;
        c.cmd(&format!("USER {user}"))?;
        c.cmd(&format!("PASS {password}"))?;
        let stat = c.cmd("STAT")?;
        let count: usize = stat
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad STAT reply {stat:?}"))?;
        c.multi("UIDL")?;
        for i in 1..=count {
            c.octets += c.multi(&format!("TOP {i} 0"))?;
        }
        for i in 1..=count {
            c.octets += c.multi(&format!("RETR {i}"))?;
        }
        c.cmd("QUIT")?;
        // Wait for the server to close, so that the next session starts on a clean slate.
        let _ = c.reader.read(&mut [0u8; 1]);
        Ok(c.octets)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: pop3-load HOST:PORT USER PASSWORD SESSIONS CONCURRENCY");
        std::process::exit(2);
    }
    let (addr, user, password) = (args[1].clone(), args[2].clone(), args[3].clone());
    let sessions: usize = args[4].parse().expect("SESSIONS is a number");
    let concurrency: usize = args[5].parse().expect("CONCURRENCY is a number");
    let next = Arc::new(AtomicUsize::new(0));
    let octets = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|thread| {
            let user = user.replace('%', &(thread + 1).to_string());
            let (addr, password) = (addr.clone(), password.clone());
            let (next, octets) = (next.clone(), octets.clone());
            std::thread::spawn(move || -> Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < sessions {
                    let got = Client::session(&addr, &user, &password)?;
                    octets.store(got, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        if let Err(e) = thread.join().expect("no panic") {
            eprintln!("pop3-load: {addr}: {e}");
            std::process::exit(1);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "sessions={sessions} seconds={seconds:.3} rate={:.0} octets_per_session={}",
        sessions as f64 / seconds,
        octets.load(Ordering::Relaxed)
    );
}
