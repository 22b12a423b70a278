//! What the PostgreSQL end-to-end tests share: a private cluster per test (`initdb` and
//! `pg_ctl` as the `postgres` user, on a free loopback port, in a temporary directory, stopped
//! on drop) that a test may stop and start again under load, the config of servers whose every
//! repository is in it, and SMTP and POP3 clients that report failures instead of panicking
//! (the server they talk to may be killed under them).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// Every send's Message-ID and the reply that ended it (`None`: the connection failed).
pub type Outcomes = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A PostgreSQL cluster of this test's own.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest installed PostgreSQL's programs.
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect("no initdb under /usr/lib/postgresql")
}

/// Runs a shell command as the `postgres` user; panics with its output if it fails.
fn as_postgres(command: &str) -> String {
    let out = Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", command])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgCluster {
    /// Creates and starts a cluster.
    pub fn start() -> PgCluster {
        PgCluster::start_in(&std::env::temp_dir())
    }

    /// Creates and starts a cluster in a new directory in `parent` (a file system the test
    /// mounted).
    pub fn start_in(parent: &std::path::Path) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("mailroom-pg")
            .tempdir_in(parent)
            .unwrap();
        let status = Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown postgres (the test needs root)");
        let cluster = PgCluster {
            bin: pg_bin(),
            port: free_port(),
            dir,
        };
        as_postgres(&format!(
            "{}/initdb -D {}/data -A trust -U postgres >/dev/null",
            cluster.bin.display(),
            cluster.dir.path().display()
        ));
        cluster.up();
        cluster
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn up(&self) {
        let dir = self.dir.path().display();
        as_postgres(&format!(
            "{}/pg_ctl -D {dir}/data -o '-c listen_addresses=127.0.0.1 -p {} -k {dir} \
             -c max_connections=200' -l {dir}/log -w start >/dev/null",
            self.bin.display(),
            self.port
        ));
    }

    /// Stops the server: its clients are disconnected, new connections refused.
    pub fn down(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/data -m fast -w stop >/dev/null",
            self.bin.display(),
            self.dir.path().display()
        ));
    }

    /// Makes connections over TCP as `role` prove their password (SCRAM), where the rest of
    /// the cluster trusts everyone, and reloads the server.
    pub fn require_password(&self, role: &str) {
        let hba = self.dir.path().join("data/pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .unwrap();
        as_postgres(&format!(
            "{}/pg_ctl -D {}/data reload >/dev/null",
            self.bin.display(),
            self.dir.path().display()
        ));
    }

    /// The postmaster's process id (to kill it when its file system is gone).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Its URL, as a `<dburl>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The answer of one SQL query, as psql prints it unaligned.
    pub fn query(&self, sql: &str) -> String {
        self.query_in("postgres", sql)
    }

    /// The answer of one SQL query in database `db`.
    pub fn query_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!(
                "{}/pg_ctl -D {}/data -m immediate stop",
                self.bin.display(),
                self.dir.path().display()
            ))
            .output();
    }
}

/// `<database-connections>` with data source `maildb` at `url`, leases of `lease_secs`.
pub fn data_sources(url: &str, lease_secs: u64) -> String {
    format!(
        r#"<database-connections>
    <data-sources>
      <data-source name="maildb" class="org.apache.james.util.dbcp.JdbcDataSource">
        <driver>org.postgresql.Driver</driver>
        <dburl>{url}</dburl>
        <max>10</max>
        <leaseTime>{lease_secs}</leaseTime>
      </data-source>
    </data-sources>
  </database-connections>"#
    )
}

/// Sends one mail with Message-ID `id` to `rcpt` over a session of its own. `Ok` holds the
/// reply that ended it: the `250` after the data, or the first refusal. `Err`: the connection
/// failed (the server is gone).
pub fn try_send(port: u16, rcpt: &str, id: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut reply = || -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            all.push_str(line.trim_end());
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
            all.push('\n');
        }
    };
    let banner = reply()?;
    if !banner.starts_with("220") {
        return Ok(banner);
    }
    let message = format!("Message-ID: {id}\r\nSubject: load {id}\r\n\r\nbody of {id}\r\n.\r\n");
    for (line, expect) in [
        ("EHLO load.example".to_string(), "250"),
        ("MAIL FROM:<load@example.net>".to_string(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA".to_string(), "354"),
    ] {
        writer.write_all(format!("{line}\r\n").as_bytes())?;
        let got = reply()?;
        if !got.starts_with(expect) {
            let _ = writer.write_all(b"QUIT\r\n");
            return Ok(got);
        }
    }
    writer.write_all(message.as_bytes())?;
    let got = reply()?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(got)
}

/// The reply to each line of a POP3 dialogue (`+OK`/`-ERR` lines; a multi-line answer's lines
/// follow its status line), or the I/O error that ended it.
pub struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> std::io::Result<Pop3> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut pop = Pop3 {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = pop.line()?;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        Ok(pop)
    }

    /// USER and PASS: the reply to PASS (or to USER when that failed).
    pub fn login(&mut self, user: &str, password: &str) -> std::io::Result<String> {
        let reply = self.cmd(&format!("USER {user}"))?;
        if !reply.starts_with("+OK") {
            return Ok(reply);
        }
        self.cmd(&format!("PASS {password}"))
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// One command, one status line.
    pub fn cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.line()
    }

    /// A command with a multi-line answer: its lines (dot-unstuffed), or the `-ERR`.
    pub fn multi(&mut self, line: &str) -> std::io::Result<Result<Vec<String>, String>> {
        let status = self.cmd(line)?;
        if !status.starts_with("+OK") {
            return Ok(Err(status));
        }
        let mut lines = Vec::new();
        loop {
            let l = self.line()?;
            if l == "." {
                return Ok(Ok(lines));
            }
            lines.push(l.strip_prefix('.').map_or(l.clone(), str::to_string));
        }
    }

    /// The Message-ID of every message of the mailbox (from `TOP n 0`), in mailbox order.
    pub fn message_ids(&mut self) -> std::io::Result<Vec<String>> {
        let list = self.multi("LIST")?.expect("LIST");
        let mut ids = Vec::new();
        for n in 1..=list.len() {
            let head = self.multi(&format!("TOP {n} 0"))?.expect("TOP");
            let id = head
                .iter()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("message-id")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default();
            ids.push(id);
        }
        Ok(ids)
    }
}

/// The Message-IDs in `user`'s mailbox read over POP3 on `port`, once the session opens.
pub fn mailbox_ids(port: u16, user: &str, password: &str) -> Vec<String> {
    let mut pop = open_mailbox(port, user, password);
    let ids = pop.message_ids().unwrap();
    let _ = pop.cmd("QUIT");
    ids
}

/// A POP3 session logged in as `user`. The lock of a session before may be released a moment
/// after its QUIT was answered: `-ERR [IN-USE]` is tried again.
pub fn open_mailbox(port: u16, user: &str, password: &str) -> Pop3 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut pop = Pop3::connect(port).unwrap();
        let reply = pop.login(user, password).unwrap();
        if reply.starts_with("+OK") {
            return pop;
        }
        assert!(
            reply.starts_with("-ERR [IN-USE]") && Instant::now() < deadline,
            "{reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `check` holds, up to `limit`.
pub fn wait_long(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
