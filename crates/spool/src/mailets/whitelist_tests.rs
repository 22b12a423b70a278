use std::collections::BTreeMap;

use mailroom_mailet::Envelope;

use super::*;
use crate::mailets::testing::Recorder;
use crate::sql::testing::Sqlite;

/// Local domain `example.org` with users `alice`, `bob` and `al` (an alias of `alice`).
fn users() -> Recorder {
    Recorder::with_users(
        "example.org",
        &[
            ("alice", None, None),
            ("bob", None, None),
            ("al", Some("alice"), None),
        ],
    )
}

/// The text of each reply sent (and taken), each from the postmaster.
fn replies_to(ctx: &Recorder) -> Vec<String> {
    ctx.take()
        .into_iter()
        .map(|m| {
            assert_eq!(m.sender(), Some(&ctx.postmaster));
            let bytes = m.message.to_bytes().unwrap();
            let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
            parsed.body_text(0).unwrap().into_owned()
        })
        .collect()
}

fn registry(sources: Arc<dyn SqlSources>) -> Registry {
    let mut registry = Registry::new();
    register_sql(&mut registry, sources);
    registry
}

const PARAMS: &[(&str, &str)] = &[
    ("repositoryPath", "db://maildb"),
    ("automaticInsert", "true"),
    ("whitelistManagerAddress", "whitelist.manager@example.org"),
    ("displayFlag", "display"),
    ("insertFlag", "insert"),
    ("removeFlag", "remove"),
];

fn manager(registry: &Registry, params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
    registry.mailet("WhiteListManager").unwrap()(&MailetConfig {
        name: "WhiteListManager".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn matcher(registry: &Registry, condition: &str) -> Result<Box<dyn Matcher>, MailetError> {
    registry.matcher("IsInWhiteList").unwrap()(&MatcherConfig {
        name: "IsInWhiteList".into(),
        condition: Some(condition.into()),
    })
}

fn mail(from: &str, to: &[&str], subject: &str, body: &str) -> Mail {
    let recipients = to.iter().map(|r| MailAddress::parse(r).unwrap()).collect();
    let text = format!("Subject: {subject}\r\nMessage-ID: <c1@x>\r\n\r\n{body}");
    Mail::new(
        Envelope::new("m1", MailAddress::parse(from).ok(), recipients),
        Message::from_bytes(text.as_bytes()),
    )
}

fn texts(addresses: &[MailAddress]) -> Vec<String> {
    addresses.iter().map(ToString::to_string).collect()
}

#[test]
fn commands_automatic_insert_and_the_matcher() {
    let db = Sqlite::new();
    let registry = registry(db.clone());
    let mailet = manager(&registry, PARAMS).unwrap();
    let is_in = matcher(&registry, "db://maildb").unwrap();
    let ctx = users();
    let manager_address = ["whitelist.manager@example.org"];

    // Insert through the alias: the list is alice's.
    let mut m = mail(
        "al@example.org",
        &manager_address,
        "insert",
        "Friend@Remote.example, <other@far.example>\r\nnot-an-address bob@example.org\r\n",
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    let replies = replies_to(&ctx);
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].contains("Inserting in the white list of alice@example.org"),
        "{}",
        replies[0]
    );
    assert!(
        replies[0].contains("Inserted: Friend@remote.example"),
        "{}",
        replies[0]
    );
    assert!(
        replies[0].contains("Inserted: other@far.example"),
        "{}",
        replies[0]
    );
    assert!(!replies[0].contains("bob@"), "{}", replies[0]);

    // Automatic insert: bob writes to a remote address.
    let mut m = mail(
        "bob@example.org",
        &["pal@remote.example", "alice@example.org"],
        "hi",
        "x",
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::ROOT);
    assert!(replies_to(&ctx).is_empty());

    // The matcher: remote senders in a recipient's list.
    let incoming = mail(
        "friend@remote.example",
        &[
            "alice@example.org",
            "al@example.org",
            "bob@example.org",
            "x@other.example",
        ],
        "hello",
        "x",
    );
    assert_eq!(
        texts(&is_in.matches(&incoming, &ctx).unwrap()),
        ["alice@example.org", "al@example.org"]
    );
    let incoming = mail("pal@remote.example", &["bob@example.org"], "hi", "x");
    assert_eq!(
        texts(&is_in.matches(&incoming, &ctx).unwrap()),
        ["bob@example.org"]
    );
    // A local sender is never matched.
    let local = mail("alice@example.org", &["bob@example.org"], "hi", "x");
    assert!(is_in.matches(&local, &ctx).unwrap().is_empty());

    // Display, remove, unknown commands.
    let mut m = mail("alice@example.org", &manager_address, "display", "");
    mailet.service(&mut m, &ctx).unwrap();
    let shown = replies_to(&ctx).remove(0);
    assert!(
        shown.contains("friend@remote.example\n") || shown.contains("friend@remote.example\r\n"),
        "{shown}"
    );
    assert!(shown.contains("other@far.example"), "{shown}");
    let mut m = mail(
        "alice@example.org",
        &manager_address,
        "remove",
        "friend@remote.example nobody@x.example",
    );
    mailet.service(&mut m, &ctx).unwrap();
    let removed = replies_to(&ctx).remove(0);
    assert!(
        removed.contains("Removed: friend@remote.example"),
        "{removed}"
    );
    assert!(removed.contains("Skipped: nobody@x.example"), "{removed}");
    let incoming = mail(
        "friend@remote.example",
        &["alice@example.org"],
        "hello",
        "x",
    );
    assert!(is_in.matches(&incoming, &ctx).unwrap().is_empty());
    let mut m = mail("alice@example.org", &manager_address, "what", "");
    mailet.service(&mut m, &ctx).unwrap();
    assert!(replies_to(&ctx)[0].contains("ERROR: Unknown command in the subject line: what"));
    // Not a local user: not a command, nothing stored.
    let mut m = mail(
        "eve@remote.example",
        &manager_address,
        "insert",
        "a@b.example",
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::ROOT);
    assert!(replies_to(&ctx).is_empty());
}

#[test]
fn parameters_are_checked_and_an_absent_database_keeps_the_mail() {
    let db = Sqlite::new();
    let registry = registry(db);
    let some: Vec<_> = PARAMS
        .iter()
        .copied()
        .filter(|(k, _)| *k != "repositoryPath")
        .collect();
    let e = manager(&registry, &some).err().unwrap();
    assert!(
        e.to_string().contains("<repositoryPath> is required"),
        "{e}"
    );
    for (key, value, why) in [
        ("repositoryPath", "file://var/whitelist", "db://"),
        ("repositoryPath", "db://nodb", "no data source"),
        ("automaticInsert", "often", "true or false"),
        (
            "whitelistManagerAddress",
            "not an address",
            "whitelistManagerAddress",
        ),
    ] {
        let mut some: Vec<_> = PARAMS.iter().copied().filter(|(k, _)| *k != key).collect();
        some.push((key, value));
        let e = manager(&registry, &some).err().unwrap();
        assert!(e.to_string().contains(why), "{e} / {why}");
    }
    assert!(matcher(&registry, "db://nodb").is_err());
    assert!(registry.matcher("IsInWhiteList").unwrap()(&MatcherConfig {
        name: "IsInWhiteList".into(),
        condition: None,
    })
    .is_err());

    let away = registry_away();
    let mailet = manager(&away, PARAMS).unwrap();
    let mut m = mail("alice@example.org", &["pal@remote.example"], "hi", "x");
    let e = mailet.service(&mut m, &users()).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let incoming = mail("pal@remote.example", &["alice@example.org"], "hi", "x");
    let e = matcher(&away, "db://maildb")
        .unwrap()
        .matches(&incoming, &users())
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
}

#[test]
fn a_users_store_away_keeps_the_mail_rather_than_reading_the_wrong_list() {
    let registry = registry(Sqlite::new());
    let incoming = mail("pal@remote.example", &["flaky@example.org"], "hi", "x");
    let e = matcher(&registry, "db://maildb")
        .unwrap()
        .matches(&incoming, &{
            let mut ctx = users();
            ctx.unreachable_users.push("flaky");
            ctx
        })
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
}

/// SQLite where another worker inserts the same entry between the check and the insert.
struct Racing(Arc<Sqlite>);

impl SqlSources for Racing {
    fn names(&self) -> Vec<String> {
        self.0.names()
    }
    fn query(
        &self,
        source: &str,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<crate::sql::TextRow>, MailetError> {
        self.0.query(source, sql, params)
    }
    fn execute(&self, source: &str, sql: &str, params: &[&str]) -> Result<u64, MailetError> {
        if sql.starts_with("INSERT") {
            self.0.execute(source, sql, params)?;
        }
        self.0.execute(source, sql, params)
    }
}

#[test]
fn an_entry_inserted_meanwhile_by_another_worker_is_no_error() {
    let registry = registry(Arc::new(Racing(Sqlite::new())));
    let mailet = manager(&registry, PARAMS).unwrap();
    let mut m = mail("alice@example.org", &["pal@remote.example"], "hi", "x");
    mailet.service(&mut m, &users()).unwrap();
    assert_eq!(m.state(), state::ROOT);
}

fn registry_away() -> Registry {
    registry(Sqlite::away())
}
