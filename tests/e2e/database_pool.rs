//! A PostgreSQL data source as James 2.3 writes it: `jdbc:postgresql://host:port/db` with
//! `<user>` and `<password>` (checked by the server: SCRAM), and `<max>` the most connections
//! the server opens to it, under a load of SMTP sessions and POP3 readers at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::database::in_database;
use crate::harness::{Server, Setup, BIN};
use crate::pg::{mailbox_ids, open_mailbox, try_send, wait_long, PgCluster};

/// The role the server logs in as, and its password (a space in it, as James allows).
const ROLE: &str = "mailroom";
const PASSWORD: &str = "pass word";

/// A cluster with database `mail` owned by [`ROLE`], which must give its password.
fn cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.query(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"));
    pg.query(&format!("CREATE DATABASE mail OWNER {ROLE}"));
    pg.require_password(ROLE);
    pg
}

/// James's data source block for `pg`, in the JDBC form (and no limit of connections per
/// client address: every client here is 127.0.0.1).
fn jdbc_sources(pg: &PgCluster, password: &str, max: u32) -> String {
    format!(
        r#"<database-connections>
      <data-source name="maildb" class="org.apache.james.util.dbcp.JdbcDataSource">
        <driver>org.postgresql.Driver</driver>
        <dburl>jdbc:postgresql://127.0.0.1:{}/mail</dburl>
        <user>{ROLE}</user>
        <password>{password}</password>
        <max>{max}</max>
      </data-source>
  </database-connections>
  <connections><max-connections-per-ip>0</max-connections-per-ip></connections>"#,
        pg.port
    )
}

/// The connections [`ROLE`] has open now.
fn connections(pg: &PgCluster) -> u64 {
    pg.query(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{ROLE}'"
    ))
    .parse()
    .unwrap()
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn jdbc_url_with_user_and_password_and_at_most_max_connections() {
    const MAX: u64 = 4;
    let pg = cluster();
    let extra = jdbc_sources(&pg, PASSWORD, MAX as u32);
    let setup = Setup {
        pop3_handler: Some(""),
        extra: &extra,
        ..Setup::default()
    };
    let server = Server::start_edited(&setup, in_database);
    server.add_user("bob", "secret");
    // The tables are the role's: the server logged in as <user>.
    assert_eq!(
        pg.query_in(
            "mail",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'users'"
        ),
        ROLE
    );

    // A wrong password is refused by the server, and said so.
    let wrong = server.home.path().join("wrong.xml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&server.config)
            .unwrap()
            .replace(PASSWORD, "not it"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["user", "list", "--config"])
        .arg(&wrong)
        .arg("--home")
        .arg(server.home.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("password authentication failed"), "{said}");

    // Eight SMTP senders and a POP3 reader at once; the connections are sampled meanwhile.
    let stop = AtomicBool::new(false);
    let most = AtomicU64::new(0);
    let ids: Vec<String> = (0..8)
        .flat_map(|t| (0..10).map(move |n| format!("<pool-{t}-{n}@test>")))
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                most.fetch_max(connections(&pg), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let _ = mailbox_ids(server.pop3_port, "bob", "secret");
            }
        });
        let senders: Vec<_> = ids
            .chunks(10)
            .map(|chunk| {
                let port = server.smtp_port;
                s.spawn(move || {
                    for id in chunk {
                        let reply = try_send(port, "bob@localhost", id).unwrap();
                        assert!(reply.starts_with("250"), "{id}: {reply}");
                    }
                })
            })
            .collect();
        for sender in senders {
            if sender.join().is_err() {
                stop.store(true, Ordering::SeqCst);
                panic!("a sender failed");
            }
        }
        wait_long("every mail delivered", Duration::from_secs(60), || {
            let got = mailbox_ids(server.pop3_port, "bob", "secret");
            ids.iter().all(|id| got.contains(id))
        });
        stop.store(true, Ordering::SeqCst);
    });
    let most = most.load(Ordering::SeqCst);
    eprintln!("at most {most} connection(s) open with <max>{MAX}</max>");
    assert!((1..=MAX).contains(&most), "{most} connections open");
}

/// POP3 sessions left open (a mail client that keeps its session while the user reads) must
/// not take every connection of the pool: mail is still accepted and delivered, and another
/// user still logs in.
#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn open_pop3_sessions_leave_connections_for_smtp_and_the_spool() {
    const MAX: u32 = 3;
    let pg = cluster();
    let extra = jdbc_sources(&pg, PASSWORD, MAX);
    let setup = Setup {
        pop3_handler: Some(""),
        extra: &extra,
        ..Setup::default()
    };
    let server = Server::start_edited(&setup, in_database);
    let users = ["u0", "u1", "u2", "u3", "bob"];
    for user in users {
        server.add_user(user, "secret");
    }
    // As many open mailboxes as the pool has connections.
    let held: Vec<_> = users[..MAX as usize]
        .iter()
        .map(|user| open_mailbox(server.pop3_port, user, "secret"))
        .collect();
    let started = std::time::Instant::now();
    let reply = try_send(server.smtp_port, "bob@localhost", "<while-held@test>").unwrap();
    let took = started.elapsed();
    assert!(reply.starts_with("250"), "{reply} after {took:?}");
    assert!(took < Duration::from_secs(5), "250 after {took:?}");
    let mut pop = crate::pg::Pop3::connect(server.pop3_port).unwrap();
    let reply = pop.login("u3", "secret").unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    drop(pop);
    drop(held);
    wait_long("the mail delivered", Duration::from_secs(30), || {
        mailbox_ids(server.pop3_port, "bob", "secret") == ["<while-held@test>"]
    });
}
