//! Starts the real `mailroom` binary on free loopback ports with a temporary home, and stops
//! it (kill, then wait) when the handle is dropped, even when the test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// A free TCP port on 127.0.0.1 (bound then released; the server binds it right after).
///
/// The kernel may offer a port it just released again, so ports this process handed out are
/// remembered and never given twice (two listeners of one server on one port refuse to start).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The processor tree most tests use: James's default tree.
pub const DEFAULT_TREE: &str = r#"
    <processor name="root">
      <mailet match="RelayLimit=30" class="Null"/>
      <mailet match="All" class="PostmasterAlias"/>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="HostIsLocal" class="ToProcessor">
        <processor>local-address-error</processor>
        <notice>550 - Requested action not taken: no such user here</notice>
      </mailet>
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/outgoing/</repositoryPath></mailet>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>
    <processor name="local-address-error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/address-error/</repositoryPath></mailet>
    </processor>
"#;

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// Its home directory (removed on drop).
    pub home: tempfile::TempDir,
    /// The SMTP port.
    pub smtp_port: u16,
    /// The POP3 port (listening only when the setup enables POP3).
    pub pop3_port: u16,
    /// The RemoteManager port (listening only when the setup enables it).
    pub remote_manager_port: u16,
    /// The NNTP port (listening only when the setup enables NNTP).
    pub nntp_port: u16,
    /// Every port the server listens on; [`Server::spawn`] waits for all of them.
    listening: Vec<u16>,
    /// The config file.
    pub config: PathBuf,
}

/// What a test server runs: its processor tree and the contents of each service's `<handler>`
/// (`None`: that service is disabled).
pub struct Setup<'a> {
    /// The `<processor>` elements of the spoolmanager.
    pub tree: &'a str,
    /// Extra `<handler>` options of the SMTP server.
    pub smtp_handler: &'a str,
    /// Extra `<handler>` options of the POP3 server, which is enabled when this is set.
    pub pop3_handler: Option<&'a str>,
    /// Extra `<handler>` options of the RemoteManager (its administrator accounts...), which
    /// is enabled when this is set. Start-up waits for its port only when these options name
    /// an `<account>`: without one the console does not start.
    pub remote_manager_handler: Option<&'a str>,
    /// Extra `<handler>` options of the NNTP server, which is enabled when this is set.
    pub nntp_handler: Option<&'a str>,
    /// More top-level blocks (`<dnsserver>`...), put at the end of `<config>`.
    pub extra: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            tree: DEFAULT_TREE,
            smtp_handler: "",
            pop3_handler: None,
            remote_manager_handler: None,
            nntp_handler: None,
            extra: "",
        }
    }
}

/// A service block listening on `port` with these `<handler>` options, or disabled.
fn service_xml(element: &str, port: u16, handler: Option<&str>) -> String {
    match handler {
        None => format!(r#"<{element} enabled="false"/>"#),
        Some(handler) => format!(
            r#"<{element} enabled="true">
    <port>{port}</port>
    <bind>127.0.0.1</bind>
    <handler>
      <helloName autodetect="false">mail.example.test</helloName>
      <connectiontimeout>20000</connectiontimeout>
      {handler}
    </handler>
  </{element}>"#
        ),
    }
}

/// Builds a config.xml with the given processors and SMTP handler options.
pub fn config_xml(smtp_port: u16, tree: &str, smtp_handler: &str) -> String {
    let ports = (smtp_port, 0, 0, 0);
    config_xml_for(
        ports,
        &Setup {
            tree,
            smtp_handler,
            ..Setup::default()
        },
    )
}

/// Builds a config.xml for `setup`, with SMTP, POP3, RemoteManager and NNTP on these ports.
pub fn config_xml_for(
    (smtp_port, pop3_port, remote_manager_port, nntp_port): (u16, u16, u16, u16),
    setup: &Setup,
) -> String {
    let Setup {
        tree,
        smtp_handler,
        extra,
        ..
    } = setup;
    // Plaintext POP3 logins on loopback, as the tests before TLS were written, unless the
    // test says otherwise (tls.rs tests <requireTLSForAuth> and STLS).
    let pop3_handler = setup.pop3_handler.map(|h| {
        if h.contains("requireTLSForAuth") {
            h.to_string()
        } else {
            format!("<requireTLSForAuth>false</requireTLSForAuth>{h}")
        }
    });
    let pop3 = service_xml("pop3server", pop3_port, pop3_handler.as_deref());
    // The same for NNTP's AUTHINFO (nntp_tls.rs tests <requireTLSForAuth> and STARTTLS).
    let nntp_handler = setup.nntp_handler.map(|h| {
        if h.contains("requireTLSForAuth") {
            h.to_string()
        } else {
            format!("<requireTLSForAuth>false</requireTLSForAuth>{h}")
        }
    });
    let nntp = service_xml("nntpserver", nntp_port, nntp_handler.as_deref());
    let remote_manager = service_xml(
        "remotemanager",
        remote_manager_port,
        setup.remote_manager_handler,
    );
    format!(
        r#"<?xml version="1.0"?>
<config>
  <James>
    <postmaster>postmaster@localhost</postmaster>
    <servernames autodetect="false"><servername>localhost</servername><servername>example.test</servername></servernames>
    <usernames ignoreCase="true" enableAliases="true" enableForwarding="true"/>
    <inboxRepository><repository destinationURL="file://var/mail/inboxes/" type="MAIL"/></inboxRepository>
  </James>
  <spoolmanager>
    <threads>2</threads>
    {tree}
  </spoolmanager>
  <spoolrepository><repository destinationURL="file://var/mail/spool/" type="SPOOL"/></spoolrepository>
  <users-store><repository name="LocalUsers" class="org.apache.james.userrepository.UsersFileRepository" destinationURL="file://var/users/"/></users-store>
  <smtpserver enabled="true">
    <port>{smtp_port}</port>
    <bind>127.0.0.1</bind>
    <handler>
      <helloName autodetect="false">mail.example.test</helloName>
      <connectiontimeout>20000</connectiontimeout>
      {smtp_handler}
    </handler>
  </smtpserver>
  {pop3}
  {nntp}
  {remote_manager}
  {extra}
</config>
"#
    )
}

impl Server {
    /// Starts a server with the default tree.
    pub fn start() -> Server {
        Server::start_with(DEFAULT_TREE, "")
    }

    /// Starts a server with this processor tree and these extra SMTP handler options.
    pub fn start_with(tree: &str, smtp_handler: &str) -> Server {
        Server::start_setup(&Setup {
            tree,
            smtp_handler,
            ..Setup::default()
        })
    }

    /// Starts a server as `setup` says.
    pub fn start_setup(setup: &Setup) -> Server {
        Server::start_edited(setup, |xml| xml)
    }

    /// Starts a server as `setup` says, its config.xml passed through `edit` first (to put
    /// repositories in a database, say).
    pub fn start_edited(setup: &Setup, edit: impl FnOnce(String) -> String) -> Server {
        Server::start_in(&std::env::temp_dir(), setup, edit)
    }

    /// Starts a server as [`Server::start_edited`] does, its home a new directory in `parent`
    /// (a file system the test mounted).
    pub fn start_in(parent: &Path, setup: &Setup, edit: impl FnOnce(String) -> String) -> Server {
        let home = tempfile::tempdir_in(parent).unwrap();
        let (smtp_port, pop3_port, remote_manager_port, nntp_port) =
            (free_port(), free_port(), free_port(), free_port());
        let config = home.path().join("config.xml");
        let xml = edit(config_xml_for(
            (smtp_port, pop3_port, remote_manager_port, nntp_port),
            setup,
        ));
        std::fs::write(&config, xml).unwrap();
        let mut listening = vec![smtp_port];
        if setup.pop3_handler.is_some() {
            listening.push(pop3_port);
        }
        if setup.nntp_handler.is_some() {
            listening.push(nntp_port);
        }
        if setup
            .remote_manager_handler
            .is_some_and(|h| h.contains("<account"))
        {
            listening.push(remote_manager_port);
        }
        let mut server = Server {
            child: None,
            home,
            smtp_port,
            pop3_port,
            remote_manager_port,
            nntp_port,
            listening,
            config,
        };
        server.spawn();
        server
    }

    /// Starts (again) the binary over the same home.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("server.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("--home")
            .arg(self.home.path())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .listening
            .iter()
            .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the server and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for the server to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait()
    }

    /// Waits (up to 20 s) for the server to exit on its own; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("server.log")).unwrap_or_default()
    }

    /// A path under the home directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// Runs `mailroom <args> --config <config>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--home")
            .arg(self.home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Whether `mailroom queue list` shows no mail in the spool: the spool's removals are
    /// written (a mail whose removal is not, when the server is killed, is delivered again).
    pub fn spool_empty(&self) -> bool {
        let out = String::from_utf8_lossy(&self.cli(&["queue", "list"]).stdout).into_owned();
        out.starts_with("0 mail(s)") || out.contains("\n0 mail(s)")
    }

    /// Adds a user through the CLI.
    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.cli(&["user", "add", name, "--password", password]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Connects to SMTP and reads the banner.
    pub fn smtp(&self) -> Smtp {
        Smtp::connect(self.smtp_port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // A failed test shows what the server said (the test harness prints it with the
        // failure).
        if std::thread::panicking() {
            eprintln!("--- the server's log ---\n{}", self.log());
        }
    }
}

/// The files in a Maildir's `new/`, read, sorted by content.
pub fn maildir_messages(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    let mut all: Vec<Vec<u8>> = entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    all.sort();
    all
}

/// Number of mails (envelope files) in a file mail repository.
pub fn repository_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "mail")
            })
            .count()
    })
}

/// Waits until `check` holds, up to 20 s.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal raw SMTP client for protocol tests.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    /// Connects and reads the 220 banner.
    pub fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let banner = smtp.reply();
        assert!(banner.starts_with("220"), "{banner}");
        smtp
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one (possibly multi-line) reply; returns all its lines joined with `\n`.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; got so far: {all:?}");
            all.push_str(line.trim_end());
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
            all.push('\n');
        }
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends one mail (`message` with LF or CRLF line ends, no dot-stuffing needed for the
    /// tests' texts) and asserts every reply up to the final `250`.
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &str) {
        assert!(self.cmd("EHLO client.test").starts_with("250"));
        assert!(self.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        for rcpt in to {
            let reply = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(reply.starts_with("250"), "RCPT {rcpt}: {reply}");
        }
        assert!(self.cmd("DATA").starts_with("354"));
        let body = message.replace("\r\n", "\n").replace('\n', "\r\n");
        self.send(format!("{body}\r\n.\r\n").as_bytes());
        let reply = self.reply();
        assert!(reply.starts_with("250"), "DATA: {reply}");
    }
}

/// The envelope of a mail file of a file repository: its last record (see the store crate's
/// `file::mail` module for the format).
pub fn envelope_of(path: &Path) -> serde_json::Value {
    const MAGIC: &[u8] = b"\xffMRENV\x00\x01";
    let bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(MAGIC.len())
        .rposition(|w| w == MAGIC)
        .expect("an envelope record");
    let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[at - len..at]).unwrap()
}

/// An administrator account for test consoles, with the password [`console`] logs in with.
pub const ADMIN: &str = r#"<administrator_accounts><account login="root" password="secret pass"/></administrator_accounts>"#;

/// Runs RemoteManager commands as the [`ADMIN`] root and returns everything the console said.
pub fn console(server: &Server, commands: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", server.remote_manager_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let script: String = ["root", "secret pass"]
        .iter()
        .chain(commands)
        .chain(&["quit"])
        .map(|line| format!("{line}\r\n"))
        .collect();
    std::io::Write::write_all(&mut stream, script.as_bytes()).unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut stream, &mut all).unwrap();
    all
}

/// Runs a Python script with these arguments; returns its standard output.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
