use mailroom_mailet::{state, Envelope, Mail, Message};

use super::*;
pub(crate) use crate::mailets::testing::config;
use crate::mailets::testing::Recorder;
use crate::sql::testing::Sqlite;

/// Local domains `localhost` and `example.org`; records what is sent and logged.
pub(crate) fn ctx() -> Recorder {
    Recorder {
        local_domains: vec!["localhost", "example.org"],
        ..Recorder::new()
    }
}

pub(crate) fn mail(recipients: &[&str]) -> Mail {
    let recipients = recipients
        .iter()
        .map(|r| MailAddress::parse(r).unwrap())
        .collect();
    let mut envelope = Envelope::new(
        "m1",
        MailAddress::parse("s@remote.example").ok(),
        recipients,
    );
    envelope.remote_addr = "192.0.2.9".into();
    Mail::new(envelope, Message::from_bytes(b"Subject: x\r\n\r\nbody\r\n"))
}

pub(crate) fn texts(addresses: &[MailAddress]) -> Vec<String> {
    addresses.iter().map(ToString::to_string).collect()
}

pub(crate) fn registry_with(sources: Arc<dyn SqlSources>) -> Registry {
    let mut registry = Registry::standard();
    crate::sql::register(&mut registry, sources);
    registry
}

pub(crate) fn build(
    registry: &Registry,
    name: &str,
    params: &[(&str, &str)],
) -> Result<Box<dyn mailroom_mailet::Mailet>, MailetError> {
    registry.mailet(name).unwrap()(&config(name, params))
}

/// The stock config.xml's sample mappings.
const STOCK: &str = "morgoth@middle-earth=sauron@mordor,\
    istari@middle-earth=saruman@isengard;radigast;gandalf,\
    boromir@osgilliath=error:550 Requested action not taken: no such user here,\
    *@osgilliath=regex:(.*)@osgilliath:${1}@minas-tirith,\
    ring@*=onering@mordor;regex:ring@(.*):ring@${1}";

#[test]
fn xml_table_maps_as_james_does() {
    let registry = Registry::standard();
    let mailet = build(&registry, "XMLVirtualUserTable", &[("mapping", STOCK)]).unwrap();
    let ctx = ctx();
    let mut m = mail(&[
        "Istari@middle-earth",
        "boromir@osgilliath",
        "faramir@osgilliath",
        "ring@example.org",
        "plain@example.org",
    ]);
    mailet.service(&mut m, &ctx).unwrap();
    // Local targets stay; the rest left in a new mail sent from this server.
    assert_eq!(
        texts(m.recipients()),
        [
            "radigast@localhost",
            "gandalf@localhost",
            "ring@example.org",
            "plain@example.org"
        ]
    );
    let sent = std::mem::take(&mut *ctx.sent.lock().unwrap());
    assert_eq!(sent.len(), 2, "{sent:?}");
    let forwarded = sent.iter().find(|m| m.state() == state::ROOT).unwrap();
    assert_eq!(
        texts(forwarded.recipients()),
        ["saruman@isengard", "faramir@minas-tirith", "onering@mordor"]
    );
    assert_eq!(forwarded.envelope.remote_addr, "127.0.0.1");
    let refused = sent.iter().find(|m| m.state() == state::ERROR).unwrap();
    assert_eq!(texts(refused.recipients()), ["boromir@osgilliath"]);
    assert_eq!(
        refused.envelope.error_message.as_deref(),
        Some("550 requested action not taken: no such user here")
    );
    // The forwarded mail passes the table once, unmapped.
    let mut again = forwarded.clone();
    mailet.service(&mut again, &ctx).unwrap();
    assert_eq!(texts(again.recipients()), texts(forwarded.recipients()));
    assert!(again
        .attribute(super::super::mapping::MAPPED_MARKER)
        .is_none());
}

#[test]
fn xml_table_checks_its_mappings() {
    let registry = Registry::standard();
    for bad in ["nobody", "a@b=regex:([:x", "x@y=error:abc", "=a@b"] {
        assert!(
            build(&registry, "XMLVirtualUserTable", &[("mapping", bad)]).is_err(),
            "{bad}"
        );
    }
    // No mapping: a table that maps nothing, as James.
    assert!(build(&registry, "XMLVirtualUserTable", &[]).is_ok());
    // The stock config.xml's conditional regex sample, over two lines.
    let lists = "*@listserver=regex:(.*)-on@listserver:${1}-subscribe@listserver;\n   \
                 regex:(.*)-off@listserver:${1}-unsubscribe@listserver";
    let mailet = build(&registry, "XMLVirtualUserTable", &[("mapping", lists)]).unwrap();
    let ctx = ctx();
    let mut m = mail(&["rust-off@listserver"]);
    mailet.service(&mut m, &ctx).unwrap();
    let sent = ctx.sent.into_inner().unwrap();
    assert_eq!(texts(sent[0].recipients()), ["rust-unsubscribe@listserver"]);
}

fn vut_table(db: &Sqlite) {
    db.execute(
        "maildb",
        "CREATE TABLE VirtualUserTable (user varchar(64) NOT NULL default '', \
         domain varchar(255) NOT NULL default '', target_address varchar(255) NOT NULL \
         default '', PRIMARY KEY (user, domain))",
        &[],
    )
    .unwrap();
    for (user, domain, target) in [
        ("sales", "example.org", "alice;bob@example.org"),
        ("%", "example.org", "catchall"),
        ("info", "%", "info-desk@example.org"),
        ("gone", "example.org", "error:550 5.1.1 gone"),
        ("out", "example.org", "friend@remote.example"),
    ] {
        db.execute(
            "maildb",
            "INSERT INTO VirtualUserTable (user, domain, target_address) VALUES (?, ?, ?)",
            &[user, domain, target],
        )
        .unwrap();
    }
}

#[test]
fn jdbc_table_with_james_default_query() {
    let db = Sqlite::new();
    vut_table(&db);
    let registry = registry_with(db.clone());
    let mailet = build(
        &registry,
        "JDBCVirtualUserTable",
        &[("table", "db://maildb/VirtualUserTable")],
    )
    .unwrap();
    let ctx = ctx();
    let mut m = mail(&[
        "Sales@example.org",
        "anyone@example.org",
        "info@example.org",
        "info@nowhere.example",
        "gone@example.org",
        "out@example.org",
    ]);
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(
        texts(m.recipients()),
        [
            "alice@localhost",
            "bob@example.org",
            "catchall@localhost",
            "info-desk@example.org",
            "info@nowhere.example"
        ]
    );
    let sent = ctx.sent.into_inner().unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .any(|m| texts(m.recipients()) == ["friend@remote.example"]));
}

#[test]
fn jdbc_table_with_its_own_query_and_checks() {
    let db = Sqlite::new();
    db.execute(
        "maildb",
        "CREATE TABLE aliases (addr TEXT, target TEXT)",
        &[],
    )
    .unwrap();
    db.execute(
        "maildb",
        "INSERT INTO aliases VALUES ('x@example.org', 'y@example.org')",
        &[],
    )
    .unwrap();
    let registry = registry_with(db.clone());
    let query = "SELECT target FROM aliases WHERE addr = ? || '@' || ?";
    let mailet = build(
        &registry,
        "JDBCVirtualUserTable",
        &[("table", "db://maildb/aliases"), ("sqlquery", query)],
    )
    .unwrap();
    let ctx = ctx();
    let mut m = mail(&["x@example.org"]);
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(texts(m.recipients()), ["y@example.org"]);

    for (params, why) in [
        (vec![("table", "db://otherdb/t")], "no data source"),
        (vec![("table", "db://maildb")], "names no table"),
        (vec![("table", "db://maildb/a;b")], "plain SQL name"),
        (
            vec![
                ("table", "db://maildb/aliases"),
                ("sqlquery", "SELECT ? ? ? ?"),
            ],
            "at most 3",
        ),
        (
            vec![("table", "db://maildb/missing")],
            "could not find table 'missing' in data source 'maildb'",
        ),
        (vec![("table", "x"), ("sqlquery", "SELECT 1")], "db://"),
    ] {
        let e = build(&registry, "JDBCVirtualUserTable", &params)
            .err()
            .unwrap();
        assert!(e.to_string().contains(why), "{e} / {why}");
    }
    // Without db://, Mailroom's own tables, as before.
    assert!(build(&registry, "JDBCVirtualUserTable", &[("table", "default")]).is_ok());
}

#[test]
fn database_away_keeps_the_mail_and_a_bad_query_fails_it() {
    let away = Sqlite::away();
    let registry = registry_with(away);
    let mailet = build(
        &registry,
        "JDBCVirtualUserTable",
        &[("table", "db://maildb/VirtualUserTable")],
    )
    .unwrap();
    let e = mailet
        .service(&mut mail(&["a@example.org"]), &ctx())
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");

    // A query the database refuses (a column that is not there) fails the mail.
    let db = Sqlite::new();
    vut_table(&db);
    let registry = registry_with(db);
    let mailet = build(
        &registry,
        "JDBCVirtualUserTable",
        &[
            ("table", "db://maildb/VirtualUserTable"),
            (
                "sqlquery",
                "SELECT target FROM VirtualUserTable WHERE user = ?",
            ),
        ],
    )
    .unwrap();
    let e = mailet
        .service(&mut mail(&["a@example.org"]), &ctx())
        .unwrap_err();
    assert!(!e.is_temporary(), "{e}");
}
