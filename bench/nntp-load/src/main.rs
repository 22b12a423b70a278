//! NNTP load generator for `bench/nntp.sh`: reader sessions or posts against one server, and
//! the rate.
//!
//! ```text
//! nntp-load read HOST:PORT GROUP SESSIONS CONCURRENCY
//! nntp-load post HOST:PORT GROUP ARTICLES CONCURRENCY
//! ```
//!
//! A reader session is what a newsreader does when it opens a group: connect, read the banner,
//! MODE READER, GROUP, OVER of the last 100 articles, ARTICLE of 10 of them, QUIT, one command
//! at a time. `post` sends ARTICLES articles of about 1 KiB with POST, CONCURRENCY connections
//! at once. It prints one line: `done=N seconds=S rate=R`, and exits non-zero on any error
//! reply, so that a server that fails fast is never reported as a fast server.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

type Result<T> = std::result::Result<T, String>;

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
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
        };
        client.expect("2")?;
        Ok(client)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(e.to_string()),
        }
    }

    fn expect(&mut self, prefix: &str) -> Result<String> {
        let line = self.line()?;
        if line.starts_with(prefix) {
            Ok(line)
        } else {
            Err(format!("expected {prefix}..., got {}", line.trim_end()))
        }
    }

    fn cmd(&mut self, command: &str, prefix: &str) -> Result<String> {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.expect(prefix)
    }

    /// Reads a multi-line block to its `.` line; returns its lines.
    fn block(&mut self) -> Result<usize> {
        let mut lines = 0;
        loop {
            let line = self.line()?;
            if line == ".\r\n" {
                return Ok(lines);
            }
            lines += 1;
        }
    }
}

fn read_session(addr: &str, group: &str, n: usize) -> Result<()> {
    let mut c = Client::connect(addr)?;
    c.cmd("MODE READER", "20")?;
    let reply = c.cmd(&format!("GROUP {group}"), "211")?;
    let high: u64 = reply
        .split_whitespace()
        .nth(3)
        .and_then(|h| h.parse().ok())
        .ok_or("bad GROUP reply")?;
    let low = high.saturating_sub(99).max(1);
    c.cmd(&format!("OVER {low}-{high}"), "224")?;
    let lines = c.block()?;
    if lines < 100 {
        return Err(format!("OVER gave {lines} lines"));
    }
    for i in 0..10u64 {
        let number = low + (n as u64 * 7 + i * 10) % 100;
        c.cmd(&format!("ARTICLE {number}"), "220")?;
        c.block()?;
    }
    c.cmd("QUIT", "205")?;
    Ok(())
}

fn post_articles(
    addr: &str,
    group: &str,
    next: &AtomicUsize,
    total: usize,
    tag: u128,
) -> Result<()> {
    let mut c = Client::connect(addr)?;
    // INN hands posting readers to nnrpd only after MODE READER.
    c.cmd("MODE READER", "20")?;
    let body = "All work and no play makes Jack a dull boy.\r\n".repeat(20);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        c.cmd("POST", "340")?;
        let article = format!(
            "From: bench@example.test\r\nNewsgroups: {group}\r\nSubject: article {n}\r\nMessage-ID: <{tag}.{n}@bench.example.test>\r\n\r\n{body}.\r\n"
        );
        c.writer
            .write_all(article.as_bytes())
            .map_err(|e| e.to_string())?;
        c.expect("240")?;
    }
    c.cmd("QUIT", "205")?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 || !matches!(args[1].as_str(), "read" | "post") {
        eprintln!("usage: nntp-load read|post HOST:PORT GROUP COUNT CONCURRENCY");
        std::process::exit(2);
    }
    let (mode, addr, group) = (
        args[1].clone(),
        Arc::new(args[2].clone()),
        Arc::new(args[3].clone()),
    );
    let total: usize = args[4].parse().expect("COUNT");
    let concurrency: usize = args[5].parse().expect("CONCURRENCY");
    let next = Arc::new(AtomicUsize::new(0));
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, group, next, mode) =
                (addr.clone(), group.clone(), next.clone(), mode.clone());
            std::thread::spawn(move || -> Result<()> {
                if mode == "post" {
                    return post_articles(&addr, &group, &next, total, tag);
                }
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok(());
                    }
                    read_session(&addr, &group, n)?;
                }
            })
        })
        .collect();
    for t in threads {
        if let Err(e) = t.join().expect("thread") {
            eprintln!("nntp-load: {e}");
            std::process::exit(1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "done={total} seconds={seconds:.2} rate={:.0}",
        total as f64 / seconds
    );
}
