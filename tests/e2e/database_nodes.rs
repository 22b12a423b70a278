//! Two Mailroom nodes (their own homes and ports) on one PostgreSQL, sharing users, inboxes and
//! the spool: a user added on one node logs in on the other at once, POP3 on one node sees
//! mail the other delivered, a mailbox open on one node is locked on the other, and with one
//! node killed (`kill -9`) in the middle of a burst of SMTP into both, every acknowledged mail
//! is delivered exactly once — the dead node's leased mails are taken over when their leases
//! expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::database::in_database;
use crate::harness::{console, Server, Setup, ADMIN};
use crate::pg::{
    data_sources, mailbox_ids, open_mailbox, try_send, wait_long, Outcomes, PgCluster, Pop3,
};

fn uidls(port: u16, user: &str, password: &str) -> Vec<String> {
    let mut pop = open_mailbox(port, user, password);
    let list = pop.multi("UIDL").unwrap().unwrap();
    let _ = pop.cmd("QUIT");
    list
}

fn login(port: u16, user: &str, password: &str) -> (Pop3, String) {
    let mut pop = Pop3::connect(port).unwrap();
    let reply = pop.login(user, password).unwrap();
    (pop, reply)
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl) and root; run by .ci/run"]
fn two_nodes_on_one_postgresql() {
    let pg = PgCluster::start();
    // Leases of 5 s: the dead node's mails are taken over soon.
    let extra = data_sources(&pg.url(), 5);
    let setup = Setup {
        pop3_handler: Some(""),
        remote_manager_handler: Some(ADMIN),
        extra: &extra,
        ..Setup::default()
    };
    let mut a = Server::start_edited(&setup, in_database);
    let said = console(&a, &["adduser bob secret"]);
    assert!(said.contains("User bob added"), "{said}");
    let reply = try_send(a.smtp_port, "bob@localhost", "<first@test>").unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    wait_long("node A's delivery", Duration::from_secs(30), || {
        mailbox_ids(a.pop3_port, "bob", "secret") == ["<first@test>"]
    });

    // Node B, started now, sees what node A delivered, under the same UIDLs.
    let b = Server::start_edited(&setup, in_database);
    assert_eq!(
        uidls(b.pop3_port, "bob", "secret"),
        uidls(a.pop3_port, "bob", "secret")
    );
    // A user added on node B logs in on node A at once.
    let said = console(&b, &["adduser carol pw"]);
    assert!(said.contains("User carol added"), "{said}");
    let (_, reply) = login(a.pop3_port, "carol", "pw");
    assert!(reply.starts_with("+OK"), "{reply}");
    // A mailbox open on node A is locked on node B, and free again once A's session ends.
    let mut held = open_mailbox(a.pop3_port, "bob", "secret");
    let (_, reply) = login(b.pop3_port, "bob", "secret");
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    assert!(held.cmd("QUIT").unwrap().starts_with("+OK"));
    wait_long("the lock released", Duration::from_secs(10), || {
        login(b.pop3_port, "bob", "secret").1.starts_with("+OK")
    });

    // A burst into both nodes; node A killed in the middle of it.
    let outcomes: Outcomes = Arc::default();
    let senders: Vec<_> = [("a", a.smtp_port), ("b", b.smtp_port)]
        .into_iter()
        .flat_map(|(node, port)| (0..3).map(move |t| (node, port, t)))
        .map(|(node, port, t)| {
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                for n in 0..40 {
                    let id = format!("<burst-{node}-{t}-{n}@test>");
                    let reply = try_send(port, "bob@localhost", &id).ok();
                    let gone = reply.is_none();
                    outcomes.lock().unwrap().push((id, reply));
                    if gone {
                        return; // the node was killed
                    }
                }
            })
        })
        .collect();
    let accepted = |outcomes: &[(String, Option<String>)]| -> Vec<String> {
        outcomes
            .iter()
            .filter(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("250")))
            .map(|(id, _)| id.clone())
            .collect()
    };
    wait_long("half the burst", Duration::from_secs(120), || {
        accepted(&outcomes.lock().unwrap()).len() >= 60
    });
    // Frozen first, so that the mails node A holds stay leased; node B finishes its own
    // meanwhile. Whatever is leased then is node A's, taken over once its leases expire.
    let pid = a.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(2));
    let held_by_a = pg.query("SELECT count(*) FROM spool WHERE mailroom_lease_id IS NOT NULL");
    eprintln!("mails leased by the killed node: {held_by_a}");
    a.kill();
    for sender in senders {
        sender.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    for (id, reply) in &outcomes {
        if let Some(reply) = reply {
            assert!(reply.starts_with("250"), "{id}: {reply}");
        }
    }
    let accepted = accepted(&outcomes);
    assert!(
        accepted.iter().any(|id| id.starts_with("<burst-a-"))
            && accepted
                .iter()
                .filter(|id| id.starts_with("<burst-b-"))
                .count()
                == 120,
        "{accepted:?}"
    );

    // Read from the surviving node: every acknowledged mail exactly once (a mail node A
    // took but did not acknowledge may be there, once at most).
    wait_long("the spool empty", Duration::from_secs(120), || {
        pg.query("SELECT count(*) FROM spool") == "0"
    });
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for id in mailbox_ids(b.pop3_port, "bob", "secret") {
        *delivered.entry(id).or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(delivered.get(id), Some(&1), "{id}: {delivered:?}");
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    if pg.query("SELECT to_regclass('mail') IS NOT NULL") == "t" {
        assert_eq!(pg.query("SELECT count(*) FROM mail"), "0", "{}", b.log());
    }
}
