//! Content scanning: ClamAVScan against a real clamd (Debian's `clamav-daemon`, started here
//! on a free loopback port with a local test signature, nothing downloaded), and Bayesian
//! training by mail (BayesianAnalysisFeeder) then scoring (BayesianAnalysis) on the embedded
//! SQLite data source.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::database::DATA_SOURCES;
use crate::harness::{
    free_port, maildir_messages, python, repository_count, wait_for, Server, Setup,
};

/// The string the test signature matches (not a real virus: a made-up marker).
const MARKER: &str = "MAILROOM-CLAMAV-TEST-SIGNATURE-7f3a";

/// A clamd on a loopback port with a one-signature database of its own; killed on drop.
struct Clamd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Clamd {
    fn start() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        // An .ndb body signature: Name:TargetType(0 = any):Offset(* = anywhere):hex.
        let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            db.join("mailroom-test.ndb"),
            format!("Mailroom.Test.Signature:0:*:{hex}\n"),
        )
        .unwrap();
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {}\n\
                 TemporaryDirectory {}\nLogFile {}\n",
                db.display(),
                dir.path().join("tmp").display(),
                dir.path().join("clamd.log").display()
            ),
        )
        .unwrap();
        let mut clamd = Clamd {
            child: None,
            dir,
            port,
        };
        clamd.spawn();
        clamd
    }

    /// Starts clamd (again) and waits until it answers PING.
    fn spawn(&mut self) {
        let child = Command::new("clamd")
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd is installed (clamav-daemon)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.pong() {
            assert!(
                Instant::now() < deadline,
                "clamd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = Vec::new();
        s.write_all(b"zPING\0").is_ok() && s.read_to_end(&mut reply).is_ok() && reply == b"PONG\0"
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn clamav_tree(port: u16) -> String {
    format!(
        r#"
    <processor name="root">
      <mailet match="All" class="ClamAVScan">
        <host>127.0.0.1</host><port>{port}</port>
        <maxPings>3</maxPings><pingIntervalMilli>500</pingIntervalMilli>
      </mailet>
      <mailet match="HasMailAttributeWithValue=org.apache.james.infected, true" class="ToRepository">
        <repositoryPath>file://var/mail/infected/</repositoryPath>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>"#
    )
}

/// A message whose attachment (base64) carries the test signature: clamd decodes it.
fn infected_message() -> String {
    let encoded = python(
        "import base64,sys; print(base64.b64encode(sys.argv[1].encode()).decode())",
        &[&format!("attached: {MARKER} end")],
    );
    format!(
        "Subject: infected\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
         --b\nContent-Type: text/plain\n\nsee attached\n--b\n\
         Content-Type: application/octet-stream; name=x.bin\nContent-Transfer-Encoding: base64\n\n\
         {}\n--b--\n",
        encoded.trim()
    )
}

fn one_file(dir: &Path) -> String {
    let mail = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mail"))
        .unwrap();
    String::from_utf8_lossy(&std::fs::read(mail).unwrap()).into_owned()
}

#[test]
#[ignore = "needs clamav-daemon; run by .ci/run"]
fn clamav_scan_against_a_real_clamd() {
    let mut clamd = Clamd::start();
    let tree = clamav_tree(clamd.port);
    let server = Server::start_with(&tree, "");
    server.add_user("bob", "b");
    let inbox = server.path("var/mail/inboxes/bob");

    server.smtp().send_mail(
        "a@example.net",
        &["bob@localhost"],
        "Subject: clean\n\nhello\n",
    );
    server
        .smtp()
        .send_mail("a@example.net", &["bob@localhost"], &infected_message());
    wait_for("the clean mail delivered", || {
        maildir_messages(&inbox).len() == 1
    });
    let clean = String::from_utf8_lossy(&maildir_messages(&inbox)[0]).into_owned();
    assert!(clean.contains("X-MessageIsInfected: false"), "{clean}");
    let infected_dir = server.path("var/mail/infected");
    wait_for("the infected mail kept", || {
        repository_count(&infected_dir) == 1
    });
    let infected = one_file(&infected_dir);
    assert!(infected.contains("X-MessageIsInfected: true"), "{infected}");
    assert!(
        infected.contains("Mailroom.Test.Signature.UNOFFICIAL FOUND"),
        "the verdict in the error message: {infected}"
    );

    // clamd away: the mail waits in the spool (temporary error), and goes once it is back.
    clamd.stop();
    server.smtp().send_mail(
        "a@example.net",
        &["bob@localhost"],
        "Subject: later\n\nhello again\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(maildir_messages(&inbox).len(), 1);
    assert!(!server.spool_empty());
    assert_eq!(repository_count(&server.path("var/mail/error")), 0);
    clamd.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while maildir_messages(&inbox).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "not delivered after clamd came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let later = maildir_messages(&inbox)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .find(|m| m.contains("Subject: later"))
        .unwrap();
    assert!(later.contains("X-MessageIsInfected: false"), "{later}");
}

const BAYES_TREE: &str = r#"
    <processor name="root">
      <mailet match="RecipientIs=spam@localhost" class="BayesianAnalysisFeeder">
        <repositoryPath>db://maildb</repositoryPath><feedType>spam</feedType>
      </mailet>
      <mailet match="RecipientIs=ham@localhost" class="BayesianAnalysisFeeder">
        <repositoryPath>db://maildb</repositoryPath><feedType>ham</feedType>
      </mailet>
      <mailet match="All" class="BayesianAnalysis">
        <repositoryPath>db://maildb</repositoryPath>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>"#;

#[test]
fn bayesian_training_by_mail_then_scoring() {
    let server = Server::start_setup(&Setup {
        tree: BAYES_TREE,
        extra: DATA_SOURCES,
        ..Setup::default()
    });
    for user in ["bob", "spam", "ham"] {
        server.add_user(user, "p");
    }
    let spams = [
        "Buy cheap pills now! Cheap viagra, best price, click here",
        "Cheap pills and viagra at the best price, click here today",
        "Click here for cheap viagra pills, unbeatable price",
        "Best price on viagra: cheap pills, click here now",
        "cheap pills cheap viagra click here best price",
    ];
    let hams = [
        "Hello team, the meeting notes and the project schedule are attached",
        "The project meeting moved to Thursday; schedule attached",
        "Notes from the team meeting: the project schedule is on track",
        "Hello, please review the meeting notes before the project review",
        "Team, the schedule for the project meeting is attached",
    ];
    for (spam, ham) in spams.iter().zip(hams) {
        server.smtp().send_mail(
            "x@example.net",
            &["spam@localhost"],
            &format!("Subject: offer\n\n{spam}\n"),
        );
        server.smtp().send_mail(
            "y@example.net",
            &["ham@localhost"],
            &format!("Subject: work\n\n{ham}\n"),
        );
    }
    wait_for("the training", || server.spool_empty());
    // Trained, not delivered.
    assert!(maildir_messages(&server.path("var/mail/inboxes/spam")).is_empty());
    // James's tables, in the data source.
    let counts = python(
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
         print(c.execute('SELECT hamcount, spamcount FROM bayesiananalysis_messagecounts').fetchall(), \
         c.execute(\"SELECT occurrences FROM bayesiananalysis_spam WHERE token='viagra'\").fetchall())",
        &[server.path("var/mail.db").to_str().unwrap()],
    );
    assert_eq!(counts.trim(), "[(5, 5)] [(5,)]");

    server.smtp().send_mail(
        "z@example.net",
        &["bob@localhost"],
        "Subject: hi\n\ncheap viagra pills, click here\n",
    );
    server.smtp().send_mail(
        "w@example.net",
        &["bob@localhost"],
        "Subject: tomorrow\n\nthe project meeting schedule\n",
    );
    let inbox = server.path("var/mail/inboxes/bob");
    wait_for("both delivered", || maildir_messages(&inbox).len() == 2);
    let mails: Vec<String> = maildir_messages(&inbox)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect();
    let spam = mails.iter().find(|m| m.contains("viagra")).unwrap();
    let ham = mails.iter().find(|m| m.contains("meeting")).unwrap();
    let score = |m: &str| -> f64 {
        let line = m
            .lines()
            .find_map(|l| l.strip_prefix("X-MessageIsSpamProbability: "))
            .unwrap_or_else(|| panic!("no header in {m}"));
        line.trim().parse().unwrap()
    };
    assert!(score(spam) > 0.9, "{spam}");
    assert!(spam.contains("% SPAM] hi"), "{spam}");
    assert!(score(ham) < 0.1, "{ham}");
    assert!(ham.contains("Subject: tomorrow"), "{ham}");
}

/// `mailroom check-config` on a config with this root processor: its output, and the line
/// numbers of its config.
fn check_config(root: &str) -> (String, String, std::path::PathBuf, tempfile::TempDir) {
    let tree = format!(
        r#"
    <processor name="root">
      {root}
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error"><mailet match="All" class="Null"/></processor>"#
    );
    let dir = tempfile::tempdir().unwrap();
    let xml = crate::harness::config_xml_for(
        (free_port(), free_port(), free_port(), free_port()),
        &Setup {
            tree: &tree,
            extra: DATA_SOURCES,
            ..Setup::default()
        },
    );
    let path = dir.path().join("config.xml");
    std::fs::write(&path, &xml).unwrap();
    let out = Command::new(crate::harness::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.success(),
        all.contains("configuration is valid"),
        "{all}"
    );
    (all, xml, path, dir)
}

#[test]
fn check_config_reports_bad_scanning_parameters() {
    let (all, xml, path, dir) = check_config(
        r#"<mailet match="All" class="ClamAVScan"><port>clamd</port></mailet>
      <mailet match="All" class="BayesianAnalysis"><repositoryPath>file://var/bayes/</repositoryPath></mailet>
      <mailet match="All" class="BayesianAnalysisFeeder"><repositoryPath>db://maildb</repositoryPath><feedType>eggs</feedType></mailet>"#,
    );
    assert!(!all.contains("configuration is valid"), "{all}");
    let line = |needle: &str| xml.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let file = path.display();
    for (needle, message) in [
        ("<port>clamd", "<port> must be a port number"),
        (
            "file://var/bayes/",
            "<repositoryPath> must be db://DATASOURCE",
        ),
        ("eggs", "<feedType> must be ham or spam"),
    ] {
        assert!(
            all.lines().any(|l| l.starts_with(&format!("{file}:{}:", line(needle)))
                && l.contains(message)),
            "{needle}: {all}"
        );
    }
    // A data source that is not declared.
    let (all, ..) = check_config(
        r#"<mailet match="All" class="BayesianAnalysis"><repositoryPath>db://nosuch</repositoryPath></mailet>"#,
    );
    assert!(all.contains("nosuch"), "{all}");
    assert!(!all.contains("configuration is valid"), "{all}");
    // Well formed: valid, and nothing was opened (no database file, no clamd needed).
    let (all, _, _, valid) = check_config(
        r#"<mailet match="All" class="ClamAVScan"><host>127.0.0.1</host><port>1</port></mailet>
      <mailet match="All" class="BayesianAnalysis"><repositoryPath>db://maildb</repositoryPath><maxSize>200000</maxSize></mailet>"#,
    );
    assert!(all.contains("configuration is valid"), "{all}");
    assert!(!valid.path().join("var/mail.db").exists());
    drop(dir);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In `d`: a test CA (`ca.pem`, `ca.key`) and a certificate for S/MIME signed by it
/// (`LEAF.pem`, `LEAF.key`) with `subject`.
fn make_pki(d: &Path, leaf: &str, subject: &str) {
    let (key, csr, pem) = (
        format!("{leaf}.key"),
        format!("{leaf}.csr"),
        format!("{leaf}.pem"),
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Test CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            subject,
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn smime_signed_mail_is_checked_and_stripped() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_pki(d, "a", "/CN=alice");
    std::fs::write(
        d.join("content.txt"),
        "Content-Type: text/plain\r\n\r\nSigned hello.\r\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "smime",
            "-sign",
            "-binary",
            "-in",
            "content.txt",
            "-signer",
            "a.pem",
            "-inkey",
            "a.key",
            "-out",
            "signed.eml",
        ],
    );
    let signed = std::fs::read_to_string(d.join("signed.eml")).unwrap();

    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="IsSMIMESigned" class="SMIMECheckSignature">
        <keyStoreType>pem</keyStoreType><keyStoreFileName>{}</keyStoreFileName><strip>true</strip>
      </mailet>
      <mailet match="HasMailAttribute=org.apache.james.SMIMECheckSignature" class="SetMimeHeader">
        <name>X-Signature</name><value>checked</value>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>"#,
        d.join("ca.pem").display()
    );
    let server = Server::start_with(&tree, "");
    server.add_user("bob", "b");
    server.smtp().send_mail(
        "alice@example.net",
        &["bob@localhost"],
        &format!("Subject: signed\n{signed}"),
    );
    // The same, changed on the way: not checked, left as it is.
    server.smtp().send_mail(
        "alice@example.net",
        &["bob@localhost"],
        &format!(
            "Subject: changed\n{}",
            signed.replace("Signed hello", "Signed h3llo")
        ),
    );
    let inbox = server.path("var/mail/inboxes/bob");
    wait_for("both delivered", || maildir_messages(&inbox).len() == 2);
    let mails: Vec<String> = maildir_messages(&inbox)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).replace("\r\n", "\n"))
        .collect();
    let good = mails
        .iter()
        .find(|m| m.contains("Subject: signed"))
        .unwrap();
    assert!(good.contains("X-Signature: checked"), "{good}");
    assert!(good.contains("\nContent-Type: text/plain\n"), "{good}");
    assert!(!good.contains("pkcs7-signature"), "stripped: {good}");
    assert!(good.ends_with("\n\nSigned hello.\n"), "{good}");
    let changed = mails
        .iter()
        .find(|m| m.contains("Subject: changed"))
        .unwrap();
    assert!(!changed.contains("X-Signature"), "{changed}");
    assert!(changed.contains("multipart/signed"), "{changed}");
}

#[test]
fn smime_sign_for_an_authenticated_sender_then_openssl_verifies() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_pki(d, "s", "/CN=Mailroom Signer/emailAddress=signer@localhost");
    let mut pem = std::fs::read(d.join("s.key")).unwrap();
    pem.extend(std::fs::read(d.join("s.pem")).unwrap());
    std::fs::write(d.join("signing.pem"), pem).unwrap();
    let tree = format!(
        r#"
    <processor name="root">
      <mailet match="SMTPAuthSuccessful" class="SMIMESign">
        <keyStoreType>pem</keyStoreType><keyStoreFileName>{}</keyStoreFileName>
      </mailet>
      <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
    </processor>
    <processor name="transport">
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor name="error">
      <mailet match="All" class="ToRepository"><repositoryPath>file://var/mail/error/</repositoryPath></mailet>
    </processor>"#,
        d.join("signing.pem").display()
    );
    let server = Server::start_with(
        &tree,
        "<authRequired>true</authRequired><requireTLSForAuth>false</requireTLSForAuth>\
         <authorizedAddresses>192.0.2.0/24</authorizedAddresses>",
    );
    server.add_user("alice", "alice pw");
    server.add_user("bob", "b");
    python(
        r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.login('alice', 'alice pw')
s.sendmail('alice@localhost', ['bob@localhost'],
    'From: alice@localhost\r\nTo: bob@localhost\r\nSubject: please sign\r\n\r\nSigned by the server.\r\n')
s.quit()
"#,
        &[&server.smtp_port.to_string()],
    );
    let inbox = server.path("var/mail/inboxes/bob");
    wait_for("delivered", || maildir_messages(&inbox).len() == 1);
    let delivered = maildir_messages(&inbox).remove(0);
    let text = String::from_utf8_lossy(&delivered).into_owned();
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(
        text.contains("Sender: \"Mailroom Signer\" <signer@localhost>"),
        "{text}"
    );
    std::fs::write(d.join("delivered.eml"), &delivered).unwrap();
    openssl(
        d,
        &[
            "smime",
            "-verify",
            "-in",
            "delivered.eml",
            "-CAfile",
            "ca.pem",
            "-out",
            "content.txt",
        ],
    );
    let content = std::fs::read_to_string(d.join("content.txt")).unwrap();
    assert!(content.contains("Signed by the server."), "{content}");
    assert!(content.contains("SignatureExplanation.txt"), "{content}");
}
