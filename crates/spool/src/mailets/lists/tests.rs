//! The list mailets against a real File users repository and a context that records what is
//! sent.

use std::path::Path;

use mailroom_mailet::{state, Mailet, Matcher, MatcherConfig};
use mailroom_store::file::FileUsersRepository;
use mailroom_store::Blocking;

use super::members::{decode, key};
use super::post::normalize_subject;
use super::*;
use crate::mailets::testing::{config, Recorder};

/// The mailet tests' recording context, its postmaster at `localhost`.
fn recorder() -> Recorder {
    Recorder {
        postmaster: MailAddress::parse("postmaster@localhost").unwrap(),
        ..Recorder::new()
    }
}

/// A registry whose list mailets keep members in `list-test` under `dir`.
struct Lists {
    registry: Registry,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn lists() -> Lists {
    lists_over(|home, _| {
        let repo = FileUsersRepository::open(&home.join("var/lists/list-test")).unwrap();
        Arc::new(Blocking::new(repo))
    })
}

/// The list mailets over the `list-test` repository that `open` opens in the home.
fn lists_over(
    open: impl FnOnce(&Path, &tokio::runtime::Runtime) -> Arc<dyn UsersRepository>,
) -> Lists {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let names = vec!["LocalUsers".to_string(), "list-test".to_string()];
    let stores = ListStores::new(names, dir.path(), Some(runtime.handle().clone()));
    stores.open(vec![("list-test".to_string(), open(dir.path(), &runtime))]);
    let mut registry = Registry::standard();
    register(&mut registry, &stores);
    Lists {
        registry,
        _runtime: runtime,
        _dir: dir,
    }
}

impl Lists {
    fn mailet(&self, name: &str, params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
        (self.registry.mailet(name).unwrap())(&config(name, params))
    }
}

const MANAGER: &[(&str, &str)] = &[
    ("resources", "/nonexistent/miResources.xml"),
    ("listName", "testlist"),
    ("displayName", "Test mailing list"),
    ("listOwner", "owner@localhost"),
    ("repositoryName", "list-test"),
    ("listDomain", "localhost"),
    (
        "commandpackages",
        "org.apache.james.transport.mailets.listservcommands",
    ),
    (
        "commands",
        "name=subscribe;class=Subscribe,name=subscribe-confirm;class=SubscribeConfirm,\
         name=unsubscribe;class=UnSubscribe,name=unsubscribe-confirm;class=UnSubscribeConfirm,\
         name=error;class=ErrorCommand,name=owner;class=Owner,name=info;class=Info",
    ),
];

const PROCESSOR: &[(&str, &str)] = &[
    ("membersonly", "false"),
    ("attachmentsallowed", "true"),
    ("replytolist", "true"),
    ("repositoryName", "list-test"),
    ("subjectprefix", "Test"),
    ("autobracket", "true"),
    ("listOwner", "owner@localhost"),
    ("listName", "testlist"),
];

/// A mail received from outside (remote address 192.0.2.7).
fn mail(from: Option<&str>, to: &[&str], text: &str) -> Mail {
    let mut envelope = Envelope::new(
        mailroom_mailet::new_mail_name(),
        from.map(|f| MailAddress::parse(f).unwrap()),
        to.iter().map(|t| MailAddress::parse(t).unwrap()).collect(),
    );
    envelope.remote_addr = "192.0.2.7".into();
    envelope.remote_host = "outside.example".into();
    Mail::new(envelope, Message::from_bytes(text.as_bytes()))
}

fn text(mail: &Mail) -> String {
    String::from_utf8(mail.message.to_bytes().unwrap()).unwrap()
}

fn addr(a: &str) -> MailAddress {
    MailAddress::parse(a).unwrap()
}

#[test]
fn member_names_round_trip() {
    for a in [
        "alice@example.org",
        "a.b+c@example.org",
        "\"we ird..\"@example.org",
        "x%y@example.org",
    ] {
        let a = addr(a);
        let name = key(&a);
        mailroom_store::validate_user_name(&name).unwrap();
        assert_eq!(decode(&name).as_deref(), Some(a.to_string().as_str()));
    }
    let long = addr(&format!(
        "{}@{}.example.org",
        "l".repeat(60),
        "d".repeat(40)
    ));
    let name = key(&long);
    mailroom_store::validate_user_name(&name).unwrap();
    assert_eq!(decode(&name), None);
    assert_eq!(key(&long), name, "stable");
}

#[test]
fn members_are_added_listed_and_removed() {
    let l = lists();
    let stores = ListStores::new(vec!["list-test".into()], Path::new("."), None);
    assert!(stores.members("X", "nope").is_err());
    assert!(stores.members("X", "LocalUsers").is_err());
    // Through the manager's repository: Avalon on/off.
    let manager = l
        .mailet("AvalonListservManager", &[("repositoryName", "list-test")])
        .unwrap();
    let ctx = recorder();
    let long = format!("{}@{}.example.org", "l".repeat(60), "d".repeat(40));
    for sender in ["alice@example.org", long.as_str()] {
        let mut m = mail(Some(sender), &["list-on@localhost"], "Subject: on\r\n\r\n");
        manager.service(&mut m, &ctx).unwrap();
        assert_eq!(m.state(), state::GHOST);
    }
    let mut m = mail(Some("alice@example.org"), &["list-on@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    let notices = ctx.take();
    assert_eq!(notices.len(), 3);
    assert!(text(&notices[0]).contains("You have been added"));
    assert!(text(&notices[2]).contains("a member of this list already"));
    assert_eq!(notices[0].sender(), None);
    assert_eq!(notices[0].recipients(), &[addr("alice@example.org")]);
    // The list server sends one mail to both, from the postmaster.
    let serv = l
        .mailet(
            "AvalonListserv",
            &[("repositoryName", "list-test"), ("subjectprefix", "T")],
        )
        .unwrap();
    let mut post = mail(
        Some("x@example.net"),
        &["list@localhost"],
        "Subject: Re: hi\r\nReturn-Path: <x@example.net>\r\n\r\nbody\r\n",
    );
    serv.service(&mut post, &ctx).unwrap();
    assert_eq!(post.state(), state::GHOST);
    let sent = ctx.take();
    assert_eq!(sent.len(), 1);
    let mut rcpts: Vec<String> = sent[0].recipients().iter().map(|r| r.to_string()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["alice@example.org".to_string(), long.clone()]);
    assert_eq!(sent[0].sender(), Some(&addr("postmaster@localhost")));
    // Sent by the server, so a relay check lets it reach remote members.
    assert_eq!(sent[0].envelope.remote_addr, "127.0.0.1");
    assert_eq!(sent[0].message.header("Subject").unwrap(), "[T] RE: hi");
    assert_eq!(
        sent[0].message.header("X-been-there").unwrap(),
        "list@localhost"
    );
    assert_eq!(
        sent[0].message.header("Reply-To").unwrap(),
        "list@localhost"
    );
    assert!(sent[0].message.header("Return-Path").is_none());
    // A copy coming back through the list is dropped.
    let mut again = sent[0].clone();
    again.set_recipients(vec![addr("list@localhost")]);
    serv.service(&mut again, &ctx).unwrap();
    assert!(ctx.take().is_empty());
    // Off.
    let mut m = mail(Some(&long), &["list-off@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    assert!(text(&ctx.take()[0]).contains("removed"));
    let mut post = mail(Some("alice@example.org"), &["list@localhost"], "\r\nb\r\n");
    serv.service(&mut post, &ctx).unwrap();
    assert_eq!(ctx.take()[0].recipients(), &[addr("alice@example.org")]);
}

#[test]
fn avalon_refuses_non_members_and_attachments_when_told() {
    let l = lists();
    let ctx = recorder();
    let serv = l
        .mailet(
            "AvalonListserv",
            &[
                ("repositoryName", "list-test"),
                ("membersonly", "true"),
                ("attachmentsallowed", "false"),
            ],
        )
        .unwrap();
    let mut post = mail(
        Some("x@example.net"),
        &["list@localhost"],
        "Subject: s\r\n\r\nb\r\n",
    );
    serv.service(&mut post, &ctx).unwrap();
    assert_eq!(post.state(), state::GHOST);
    let sent = ctx.take();
    assert_eq!(sent.len(), 1);
    assert!(text(&sent[0]).contains("Only members"));
    assert_eq!(sent[0].recipients(), &[addr("x@example.net")]);
}

#[test]
fn subscribe_confirm_post_info_owner_unsubscribe() {
    let l = lists();
    let ctx = recorder();
    let manager = l.mailet("CommandListservManager", MANAGER).unwrap();
    let processor = l.mailet("CommandListservProcessor", PROCESSOR).unwrap();
    let bob = "bob@example.org";

    // subscribe: a request to confirm, nothing added yet.
    let mut m = mail(
        Some(bob),
        &["testlist-subscribe@localhost"],
        "Subject: x\r\n\r\n",
    );
    manager.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    let sent = ctx.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sender(), Some(&addr("owner@localhost")));
    assert_eq!(sent[0].recipients(), &[addr(bob)]);
    assert_eq!(
        sent[0].message.header("Reply-To").unwrap(),
        "<testlist-subscribe-confirm@localhost>"
    );
    assert!(text(&sent[0]).contains(bob));
    assert!(sent[0]
        .message
        .header("From")
        .unwrap()
        .contains("Test mailing list"));

    // A post now reaches nobody.
    let mut post = mail(
        Some(bob),
        &["testlist@localhost"],
        "Subject: hello\r\n\r\nhi all\r\n",
    );
    processor.service(&mut post, &ctx).unwrap();
    assert_eq!(post.state(), state::GHOST);
    assert!(ctx.take().is_empty());

    // The confirmation adds, and welcomes.
    let mut m = mail(Some(bob), &["testlist-subscribe-confirm@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    let sent = ctx.take();
    assert!(sent[0].message.subject().unwrap().contains("Welcome"));
    assert!(text(&sent[0]).contains("testlist-unsubscribe@localhost"));
    // Twice: an error reply.
    manager.service(&mut m.clone(), &ctx).unwrap();
    let sent = ctx.take();
    assert_eq!(sent[0].message.subject().unwrap(), "Invalid request");

    // A post goes to the member, from the owner, streamed with the footer.
    let mut post = mail(
        Some("carol@example.net"),
        &["testlist@localhost"],
        "Subject: Re: [Test] hello\r\nReturn-Path: <carol@example.net>\r\n\r\nhi all\r\n",
    );
    processor.service(&mut post, &ctx).unwrap();
    let sent = ctx.take();
    assert_eq!(sent.len(), 1);
    let copy = &sent[0];
    assert_eq!(copy.sender(), Some(&addr("owner@localhost")));
    assert_eq!(copy.recipients(), &[addr(bob)]);
    assert_eq!(copy.envelope.remote_addr, "127.0.0.1");
    assert_eq!(copy.message.header("Subject").unwrap(), "[Test] RE: hello");
    assert_eq!(
        copy.message.header("Reply-To").unwrap(),
        "testlist@localhost"
    );
    assert_eq!(
        copy.message.header("X-been-there").unwrap(),
        "testlist@localhost"
    );
    assert!(copy.message.header("Return-Path").is_none());
    let body = text(copy);
    assert!(body.contains("hi all\r\n"), "{body}");
    assert!(
        body.ends_with("Other commands: testlist-info@localhost"),
        "{body}"
    );
    assert_eq!(copy.size(), body.len() as u64);

    // info lists the members; owner reaches the owner; an unknown command is answered.
    let mut m = mail(Some(bob), &["testlist-info@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    assert!(text(&ctx.take()[0]).contains(&format!("    {bob}")));
    let mut m = mail(
        Some(bob),
        &["testlist-owner@localhost"],
        "Subject: help\r\n\r\n?\r\n",
    );
    manager.service(&mut m, &ctx).unwrap();
    let sent = ctx.take();
    assert_eq!(sent[0].recipients(), &[addr("owner@localhost")]);
    assert_eq!(sent[0].sender(), Some(&addr(bob)));
    assert_eq!(sent[0].envelope.remote_addr, "127.0.0.1");
    assert_eq!(sent[0].message.header("Subject").unwrap(), "help");
    let mut m = mail(Some(bob), &["testlist-frobnicate@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    let sent = ctx.take();
    assert_eq!(sent[0].message.subject().unwrap(), "unknown command");
    assert!(text(&sent[0]).contains("\"frobnicate\""));
    // A bounce to a command address is not answered.
    let mut m = mail(None, &["testlist-subscribe@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    assert!(ctx.take().is_empty());

    // unsubscribe, then confirm.
    let mut m = mail(Some(bob), &["testlist-unsubscribe@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    assert_eq!(
        ctx.take()[0].message.header("Reply-To").unwrap(),
        "<testlist-unsubscribe-confirm@localhost>"
    );
    let mut m = mail(
        Some(bob),
        &["testlist-unsubscribe-confirm@localhost"],
        "\r\n",
    );
    manager.service(&mut m, &ctx).unwrap();
    ctx.take();
    let mut m = mail(Some(bob), &["testlist-info@localhost"], "\r\n");
    manager.service(&mut m, &ctx).unwrap();
    assert!(!text(&ctx.take()[0]).contains(&format!("    {bob}")));
}

#[test]
fn members_only_and_attachments_are_refused_through_the_error_command() {
    let l = lists();
    let ctx = recorder();
    l.mailet("CommandListservManager", MANAGER).unwrap();
    let mut params = PROCESSOR.to_vec();
    params.retain(|(k, _)| *k != "membersonly" && *k != "attachmentsallowed");
    params.push(("membersonly", "true"));
    params.push(("attachmentsallowed", "false"));
    let processor = l.mailet("CommandListservProcessor", &params).unwrap();
    let mut post = mail(
        Some("eve@example.net"),
        &["testlist@localhost"],
        "Subject: s\r\n\r\nb\r\n",
    );
    processor.service(&mut post, &ctx).unwrap();
    assert_eq!(post.state(), state::GHOST);
    let sent = ctx.take();
    assert_eq!(sent.len(), 1);
    assert!(
        text(&sent[0]).contains("Only members"),
        "{}",
        text(&sent[0])
    );
    assert_eq!(sent[0].recipients(), &[addr("eve@example.net")]);
}

#[test]
fn parameters_are_checked() {
    let l = lists();
    let with = |base: &[(&'static str, &'static str)], k: &'static str, v: &'static str| {
        let mut p: Vec<(&str, &str)> = base.iter().copied().filter(|(n, _)| *n != k).collect();
        p.push((k, v));
        p
    };
    // The processor needs its manager first.
    let e = l
        .mailet("CommandListservProcessor", PROCESSOR)
        .err()
        .unwrap();
    assert!(e.to_string().contains("comes before it"), "{e}");
    for (k, v, says) in [
        ("listOwner", "not an address", "listOwner"),
        ("repositoryName", "list-other", "not a repository"),
        ("repositoryName", "LocalUsers", "own users"),
        ("listDomain", "bad domain", "listDomain"),
        ("commands", "name=error;class=Nope", "unknown class"),
        ("commands", "name=info;class=Info", "ErrorCommand"),
        ("commandpackages", "com.example", "commands come from"),
        ("listName", "", "listName"),
    ] {
        let e = l
            .mailet("CommandListservManager", &with(MANAGER, k, v))
            .err();
        let e = e.unwrap_or_else(|| panic!("{k}={v} accepted"));
        assert!(e.to_string().contains(says), "{k}={v}: {e}");
    }
    l.mailet("CommandListservManager", MANAGER).unwrap();
    let e = l.mailet("CommandListservManager", MANAGER).err().unwrap();
    assert!(e.to_string().contains("has a manager already"), "{e}");
    for (k, v) in [
        ("membersonly", "maybe"),
        ("listOwner", "@"),
        ("allowedposters", "x"),
    ] {
        assert!(
            l.mailet("CommandListservProcessor", &with(PROCESSOR, k, v))
                .is_err(),
            "{k}"
        );
    }
    assert!(l
        .mailet(
            "AvalonListserv",
            &[("repositoryName", "list-test"), ("replytolist", "x")]
        )
        .is_err());
    assert!(l.mailet("AvalonListservManager", &[]).is_err());
    assert!(l
        .mailet("CommandListservFooter", &[("listName", "testlist")])
        .is_ok());
}

#[test]
fn resources_come_from_mi_resources_with_tags_and_built_in_fallbacks() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/james-2.3.2/apps/james/conf/miResources.xml");
    let standard = |name: &str| {
        vec![
            ("LIST_NAME".to_string(), name.to_string()),
            ("DISPLAY_NAME".to_string(), name.to_string()),
            ("DOMAIN_NAME".to_string(), "localhost".to_string()),
        ]
    };
    let r = resources::Resources::load(Some(&fixture), standard("testlist")).unwrap();
    let t = r.get("subscribe", "text", &[("SENDER_ADDR", "bob@x")]);
    assert!(t.contains("To confirm that you would like"), "{t}");
    assert!(t.contains("bob@x") && t.contains("testlist-subscribe-confirm@localhost"));
    assert!(r
        .get("header", "text", &[])
        .contains("Hi! This is the list serv"));
    // `<matcher for="custom" match="My Custom List"/>` picks the custom header.
    let r = resources::Resources::load(Some(&fixture), standard("my custom list")).unwrap();
    assert_eq!(
        r.get("header", "text", &[]),
        "This is my custom HEADER resource"
    );
    // Missing file: built-in texts.
    let r = resources::Resources::load(Some(Path::new("/nonexistent.xml")), standard("l")).unwrap();
    assert!(
        r.get("subscribe", "confirm.subscribe.address", &[]) == "l-subscribe-confirm@localhost"
    );
    // A file that is not XML is an error.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "<resources>").unwrap();
    assert!(resources::Resources::load(Some(bad.path()), standard("l")).is_err());
}

#[test]
fn subjects_are_normalized_as_james_does() {
    for (subject, prefix, want) in [
        ("hello", "[Test] ", "[Test] hello"),
        ("Re: hello", "[Test] ", "[Test] RE: hello"),
        ("Re: [Test] hello", "[Test] ", "[Test] RE: hello"),
        ("[Test] Re: Re: hello", "[Test] ", "[Test] RE: hello"),
        ("", "[Test] ", "[Test] "),
        ("café  au lait", "[é] ", "[é] café au lait"),
        ("Re:Re:Re: x", "[L] ", "[L] RE: x"),
        ("RE: RERE::E: x", "[L] ", "[L] RE: E: x"),
        ("Fwd: Re: a Re:b", "[L] ", "[L] Fwd: RE: a b"),
        ("  two  spaces  ", "[L] ", "[L]  two spaces "),
        (" lead", "[L] ", "[L]  lead"),
        ("a [L] b", "[L] ", "[L] a b"),
        ("Re: x", "", "RE: x"),
        ("x RE: y", "[RE:] ", "[RE:] x RE: y"),
        ("x y", "xRE: ", "xRE: x y"),
        ("Ré: Re:  é", "[é] ", "[é] Ré: RE: é"),
    ] {
        assert_eq!(normalize_subject(subject, prefix), want, "{subject:?}");
    }
}

/// A hostile subject (800 KB of `Re: ` and spaces) is normalised in one pass; removing each
/// `RE:` with a search from the start, as before, took minutes on this one.
#[test]
fn a_huge_subject_is_normalized_in_linear_time() {
    let subject = "Re: ".repeat(200_000) + "  Re:  hello  " + &"  ".repeat(100_000) + "end";
    assert_eq!(normalize_subject(&subject, "[L] "), "[L] RE: hello end");
    // Each removal joins an `R` and an `E:` into the next `RE:` to remove.
    let subject = "Re: x ".to_string() + &"R".repeat(100_000) + &"E:".repeat(100_000) + " y";
    assert_eq!(normalize_subject(&subject, "[L] "), "[L] RE: x y");
}

#[test]
fn matchers_pick_command_addresses() {
    let registry = Registry::standard();
    let build = |name: &str, cond: Option<&str>| {
        (registry.matcher(name).unwrap())(&MatcherConfig {
            name: name.to_string(),
            condition: cond.map(str::to_string),
        })
    };
    assert!(build("CommandForListserv", None).is_err());
    assert!(build("CommandListservMatcher", Some("not an address")).is_err());
    let m = mail(
        Some("a@b.c"),
        &[
            "list@localhost",
            "list-on@localhost",
            "list-off@LOCALHOST",
            "list-info@localhost",
            "list-on@other.example",
            "listx-on@localhost",
        ],
        "\r\n",
    );
    let ctx = recorder();
    let found = |matcher: Box<dyn Matcher>| -> Vec<String> {
        matcher
            .matches(&m, &ctx)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        found(build("CommandForListserv", Some("list@localhost")).unwrap()),
        ["list-on@localhost", "list-off@localhost"]
    );
    assert_eq!(
        found(build("CommandListservMatcher", Some("list@localhost")).unwrap()),
        [
            "list-on@localhost",
            "list-off@localhost",
            "list-info@localhost"
        ]
    );
}

#[test]
fn members_on_the_sqlite_backend() {
    members_on_a_database("sqlite://var/mail.db", "listtest");
}

#[test]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
fn members_on_the_postgresql_backend() {
    let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
    // A table of its own: runs share the database.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    members_on_a_database(&url, &format!("list_{}_{nanos}", std::process::id()));
}

/// Subscribing, listing, posting and unsubscribing with the members in the users table
/// `table` of the database at `url`.
fn members_on_a_database(url: &str, table: &str) {
    let l = lists_over(|home, runtime| {
        let spec = mailroom_store::db::DataSourceSpec {
            name: "maildb".into(),
            url: url.into(),
            user: None,
            password: None,
            max: 4,
            lease: mailroom_store::DEFAULT_LEASE,
        };
        runtime.block_on(async {
            let sources = mailroom_store::db::DataSources::open(&[spec], home)
                .await
                .unwrap();
            let repo: Arc<dyn UsersRepository> =
                sources.users("maildb", &[table.to_string()]).await.unwrap();
            repo
        })
    });
    let ctx = recorder();
    let manager = l.mailet("CommandListservManager", MANAGER).unwrap();
    let long = format!("{}@{}.example.org", "l".repeat(60), "d".repeat(40));
    for who in ["bob@example.org", long.as_str()] {
        let mut m = mail(Some(who), &["testlist-subscribe-confirm@localhost"], "\r\n");
        manager.service(&mut m, &ctx).unwrap();
    }
    let mut m = mail(
        Some("bob@example.org"),
        &["testlist-info@localhost"],
        "\r\n",
    );
    manager.service(&mut m, &ctx).unwrap();
    let info = ctx.take().last().unwrap().message.to_bytes().unwrap();
    let parsed = mail_parser::MessageParser::new().parse(&info).unwrap();
    let info = parsed.body_text(0).unwrap();
    assert!(info.lines().any(|l| l == "    bob@example.org"), "{info}");
    assert!(info.lines().any(|l| l == format!("    {long}")), "{info}");
    let processor = l.mailet("CommandListservProcessor", PROCESSOR).unwrap();
    let mut post = mail(
        Some("x@example.net"),
        &["testlist@localhost"],
        "Subject: s\r\n\r\nb\r\n",
    );
    processor.service(&mut post, &ctx).unwrap();
    assert_eq!(ctx.take()[0].recipients().len(), 2);
    let mut m = mail(
        Some(&long),
        &["testlist-unsubscribe-confirm@localhost"],
        "\r\n",
    );
    manager.service(&mut m, &ctx).unwrap();
    ctx.take();
    let mut post = mail(
        Some("x@example.net"),
        &["testlist@localhost"],
        "Subject: s\r\n\r\nb\r\n",
    );
    processor.service(&mut post, &ctx).unwrap();
    assert_eq!(ctx.take()[0].recipients(), &[addr("bob@example.org")]);
}
