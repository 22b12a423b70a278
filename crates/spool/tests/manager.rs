//! The processing rules of DESIGN.md §2, run in-process over a file spool.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mailroom_config::Config;
use mailroom_mailet::{
    state, Envelope, Mail, MailAddress, MailetContext, MailetError, Matcher, Message,
};
use mailroom_spool::{
    ProcessorTree, Registry, Repositories, ServerContext, SpoolManager, UsernameRules,
};
use mailroom_store::blocking::{MailRepository, SpoolRepository, UsersRepository};
use mailroom_store::file::{FileMailRepository, FileUsersRepository, LogSpool, Maildir};
use mailroom_store::{Blocking, User};

/// A mailet that fails unless the Maildir `<dir>` already shows a delivered message: it
/// checks that deliveries are durable (committed) before a hop is persisted.
struct RequireDelivered(std::path::PathBuf);

impl mailroom_mailet::Mailet for RequireDelivered {
    fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        let delivered = std::fs::read_dir(self.0.join("new")).map_or(0, |e| e.count());
        if delivered > 0 {
            Ok(())
        } else {
            Err(MailetError::new("the delivery is not committed"))
        }
    }
}

/// Fails its first `<times>` calls — temporarily, or permanently with `<permanent>true` —
/// then lets mail through.
struct Flaky {
    failures_left: AtomicU32,
    permanent: bool,
}

impl mailroom_mailet::Mailet for Flaky {
    fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.failures_left.store(left - 1, Ordering::SeqCst);
        Err(if self.permanent {
            MailetError::permanent("flaky for good")
        } else {
            MailetError::temporary("flaky for now")
        })
    }
}

/// Adds an `X-Stamp:` field each time it runs: a step that must not run twice.
struct Stamp;

impl mailroom_mailet::Mailet for Stamp {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        mail.message.prepend_header("X-Stamp", "1");
        Ok(())
    }
}

/// A matcher that always fails, registered the way a user registers their own.
struct Explode;

impl Matcher for Explode {
    fn matches(&self, _: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Err(MailetError::new("boom"))
    }
}

struct Fixture {
    /// The repositories' async calls run here; the SpoolManager waits for them from the test
    /// thread, as it does from its worker threads.
    _runtime: tokio::runtime::Runtime,
    home: tempfile::TempDir,
    spool: Arc<LogSpool>,
    manager: Arc<SpoolManager>,
}

fn fixture(processors: &str) -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let processors = processors.replace("{HOME}", home.path().to_str().unwrap());
    let xml = format!(
        "<config><James><servernames><servername>localhost</servername></servernames></James>\
         <spoolmanager>{processors}</spoolmanager></config>"
    );
    let config =
        Config::from_str_with_name(&xml, "test.xml", home.path(), Some(home.path())).unwrap();
    let mut registry = Registry::standard();
    registry.add_matcher("Explode", |_| Ok(Box::new(Explode)));
    registry.add_mailet("Stamp", |_| Ok(Box::new(Stamp)));
    registry.add_mailet("Flaky", |c| {
        Ok(Box::new(Flaky {
            failures_left: AtomicU32::new(c.required("times")?.parse().unwrap()),
            permanent: c.bool_param("permanent", false)?,
        }))
    });
    registry.add_mailet("RequireDelivered", |c| {
        Ok(Box::new(RequireDelivered(c.required("dir")?.into())))
    });
    let tree = ProcessorTree::build(&config.spool_manager, &registry, &[], &[])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let users = Arc::new(FileUsersRepository::open(&home.path().join("users")).unwrap());
    users.add(&User::new("alice", "x")).unwrap();
    // bob's mail goes to alice's mailbox; carol's is forwarded to alice; dave and erin forward
    // to each other (a loop).
    for (name, alias, forward) in [
        ("bob", Some("alice"), None),
        ("carol", None, Some("alice@localhost")),
        ("dave", None, Some("erin@localhost")),
        ("erin", None, Some("dave@localhost")),
    ] {
        let mut user = User::new(name, "x");
        user.alias = alias.map(str::to_string);
        user.alias_enabled = alias.is_some();
        user.forward = forward.map(str::to_string);
        user.forward_enabled = forward.is_some();
        users.add(&user).unwrap();
    }
    let spool = Arc::new(LogSpool::open(&home.path().join("spool")).unwrap());
    let root = home.path().to_path_buf();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let context = ServerContext::new(
        vec!["localhost".into()],
        MailAddress::parse("postmaster@localhost").unwrap(),
        UsernameRules {
            ignore_case: true,
            enable_aliases: true,
            enable_forwarding: true,
        },
        Repositories {
            users: Arc::new(Blocking::from_arc(users)),
            inbox: Arc::new(Blocking::new(
                Maildir::open(&home.path().join("inboxes")).unwrap(),
            )),
            spool: Arc::new(Blocking::from_arc(spool.clone())),
            opener: Box::new(move |url| {
                let dir = root.join(url.trim_start_matches("file://"));
                FileMailRepository::open(&dir)
                    .map(|r| Arc::new(Blocking::new(r)) as Arc<dyn mailroom_store::MailRepository>)
            }),
        },
        runtime.handle().clone(),
    );
    let manager = SpoolManager::new(tree, Arc::new(context));
    Fixture {
        _runtime: runtime,
        home,
        spool,
        manager,
    }
}

fn mail(state_name: &str, rcpts: &[&str]) -> Mail {
    let mut env = Envelope::new(
        mailroom_store::new_mail_name(),
        MailAddress::parse("s@example.net").ok(),
        rcpts
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect(),
    );
    env.state = state_name.to_string();
    Mail::new(env, Message::from_bytes(b"Subject: t\r\n\r\nbody\r\n"))
}

impl Fixture {
    /// Spools a mail and processes every mail until the spool is empty.
    fn run(&self, mail: Mail) {
        self.spool.store(&mail).unwrap();
        while let Some(leased) = self.spool.lease(Duration::from_millis(50)).unwrap() {
            self.manager.process(leased);
        }
        assert!(self.spool.list().unwrap().is_empty());
    }

    /// Spools a mail and processes every mail, waiting for those kept for a later try, until
    /// the spool is empty.
    fn run_until_empty(&self, mail: Mail) {
        self.spool.store(&mail).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.spool.list().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "mails left in the spool");
            if let Some(leased) = self.spool.lease(Duration::from_millis(200)).unwrap() {
                self.manager.process(leased);
            }
        }
    }

    /// The files delivered to a user's Maildir.
    fn delivered(&self, user: &str) -> Vec<String> {
        let dir = self.home.path().join("inboxes").join(user).join("new");
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn repo(&self, name: &str) -> Vec<Mail> {
        let repo = FileMailRepository::open(&self.home.path().join(name)).unwrap();
        repo.list()
            .unwrap()
            .iter()
            .map(|n| repo.retrieve(n).unwrap().unwrap())
            .collect()
    }
}

const ERROR_STORE: &str = r#"<processor name="error">
    <mailet match="All" class="ToRepository"><repositoryPath>file://error</repositoryPath></mailet>
  </processor>"#;

#[test]
fn matcher_failure_policies() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="Explode" class="SetMimeHeader" onMatchException="noMatch"><name>X-No</name><value>1</value></mailet>
             <mailet match="Explode" class="SetMimeHeader" onMatchException="matchAll"><name>X-All</name><value>1</value></mailet>
             <mailet match="All" class="ToRepository"><repositoryPath>file://seen</repositoryPath><passThrough>true</passThrough></mailet>
             <mailet match="Explode" class="Null" onMatchException="quarantine"/>
           </processor>
           <processor name="quarantine">
             <mailet match="All" class="ToRepository"><repositoryPath>file://quarantine</repositoryPath></mailet>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run(mail(state::ROOT, &["alice@localhost"]));
    let seen = f.repo("seen");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].message.header("X-No").is_none());
    assert!(seen[0].message.header("X-All").is_some());
    let quarantined = f.repo("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert!(quarantined[0]
        .envelope
        .error_message
        .as_ref()
        .unwrap()
        .contains("boom"));
    assert!(f.repo("error").is_empty());
}

#[test]
fn failures_inside_error_keep_the_mail_for_a_later_try() {
    let f = fixture(
        r#"<processor name="root">
             <mailet match="All" class="ToProcessor"><processor>error</processor></mailet>
           </processor>
           <processor name="error">
             <mailet match="Explode" class="Null"/>
             <mailet match="All" class="ToRepository"><repositoryPath>file://never</repositoryPath></mailet>
           </processor>"#,
    );
    let sent = mail(state::ROOT, &["alice@localhost"]);
    let name = sent.name().to_string();
    f.spool.store(&sent).unwrap();
    let leased = f.spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    f.manager.process(leased);
    // Neither deleted nor looping: kept in `error`, due again later.
    assert!(f.repo("never").is_empty());
    let kept = f.spool.retrieve(&name).unwrap().expect("kept in the spool");
    assert_eq!(kept.state(), state::ERROR);
    let why = kept.envelope.error_message.unwrap();
    assert!(
        why.contains("in the error processor") && why.contains("boom"),
        "{why}"
    );
    assert!(f.spool.next_attempt(&name).unwrap().unwrap() > SystemTime::now());
    assert!(f.spool.lease(Duration::from_millis(100)).unwrap().is_none());
}

#[test]
fn a_permanent_failure_inside_error_is_tried_again_and_the_mail_kept() {
    let f = fixture(
        r#"<processor name="root">
             <mailet match="All" class="ToProcessor"><processor>error</processor></mailet>
           </processor>
           <processor name="error">
             <mailet match="All" class="Flaky"><times>1</times><permanent>true</permanent></mailet>
             <mailet match="All" class="ToRepository"><repositoryPath>file://kept</repositoryPath></mailet>
           </processor>"#,
    );
    f.run_until_empty(mail(state::ROOT, &["alice@localhost"]));
    let kept = f.repo("kept");
    assert_eq!(kept.len(), 1);
    assert!(kept[0]
        .envelope
        .error_message
        .as_ref()
        .unwrap()
        .contains("flaky for good"));
}

#[test]
fn a_temporary_failure_keeps_the_mail_with_a_durable_backoff_and_it_is_delivered_once() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="All" class="Stamp"/>
             <mailet match="All" class="Flaky"><times>2</times></mailet>
             <mailet match="All" class="LocalDelivery"/>
           </processor>
           {ERROR_STORE}"#
    ));
    let sent = mail(state::ROOT, &["alice@localhost"]);
    let name = sent.name().to_string();
    f.spool.store(&sent).unwrap();
    let leased = f.spool.lease(Duration::from_secs(1)).unwrap().unwrap();
    f.manager.process(leased);
    // Kept as it was, with its failure counted, the step to resume at (the one that failed)
    // and a next attempt stored with it.
    let kept = f.spool.retrieve(&name).unwrap().expect("kept in the spool");
    assert_eq!(kept.state(), state::ROOT);
    assert_eq!(
        kept.attribute(mailroom_spool::manager::RESUME_STEP),
        Some(&mailroom_mailet::AttributeValue::String(
            "1 All/Flaky".into()
        ))
    );
    assert_eq!(
        kept.attribute(mailroom_spool::manager::TEMPORARY_FAILURES),
        Some(&mailroom_mailet::AttributeValue::Number(1.0))
    );
    assert!(kept
        .envelope
        .error_message
        .unwrap()
        .contains("flaky for now"));
    let next = f
        .spool
        .next_attempt(&name)
        .unwrap()
        .expect("a next attempt");
    assert!(next > SystemTime::now() + Duration::from_millis(500));
    assert!(f.spool.lease(Duration::from_millis(100)).unwrap().is_none());

    let started = Instant::now();
    while !f.spool.list().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never delivered"
        );
        if let Some(leased) = f.spool.lease(Duration::from_millis(200)).unwrap() {
            f.manager.process(leased);
        }
    }
    // The second failure waited 2 s after the first retry's 1 s.
    assert!(started.elapsed() >= Duration::from_millis(2500));
    let delivered = f.delivered("alice");
    assert_eq!(delivered.len(), 1);
    // Resumed at the failed step: the steps before it ran once.
    assert_eq!(
        delivered[0].matches("X-Stamp").count(),
        1,
        "{}",
        delivered[0]
    );
    assert!(f.repo("error").is_empty());
}

#[test]
fn a_split_copy_that_fails_temporarily_is_kept_and_delivered_once() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="RecipientIs=bob@localhost" class="Flaky"><times>1</times></mailet>
             <mailet match="All" class="LocalDelivery"/>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run_until_empty(mail(state::ROOT, &["alice@localhost", "bob@localhost"]));
    // bob is an alias of alice: one copy each, however often bob's copy was tried.
    let delivered = f.delivered("alice");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    for rcpt in ["alice@localhost", "bob@localhost"] {
        let to = format!("Delivered-To: {rcpt}");
        assert_eq!(delivered.iter().filter(|m| m.contains(&to)).count(), 1);
    }
    assert!(f.repo("error").is_empty());
}

#[test]
fn a_spooled_mail_resumes_in_its_persisted_processor() {
    // As after a crash: the mail was persisted in `transport` and is processed from there.
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="All" class="ToRepository"><repositoryPath>file://from-root</repositoryPath></mailet>
           </processor>
           <processor name="transport">
             <mailet match="All" class="ToRepository"><repositoryPath>file://from-transport</repositoryPath></mailet>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run(mail(state::TRANSPORT, &["alice@localhost"]));
    assert_eq!(f.repo("from-transport").len(), 1);
    assert!(f.repo("from-root").is_empty());
    // A mail in a processor that no longer exists goes to error.
    f.run(mail("retired", &["alice@localhost"]));
    let errors = f.repo("error");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].envelope.error_message.as_deref(),
        Some("Unknown processor retired")
    );
}

#[test]
fn split_mails_and_state_changes_are_persisted_hops() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="RecipientIs=bob@example.net" class="ToProcessor"><processor>remote</processor></mailet>
             <mailet match="All" class="SetMailAttribute"><seen>root</seen></mailet>
             <mailet match="All" class="ToProcessor"><processor>local</processor></mailet>
           </processor>
           <processor name="remote">
             <mailet match="All" class="ToRepository"><repositoryPath>file://remote</repositoryPath></mailet>
           </processor>
           <processor name="local">
             <mailet match="HasMailAttributeWithValue=seen, root" class="LocalDelivery"/>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run(mail(state::ROOT, &["alice@localhost", "bob@example.net"]));
    let remote = f.repo("remote");
    assert_eq!(remote.len(), 1);
    assert_eq!(
        remote[0].recipients(),
        [MailAddress::parse("bob@example.net").unwrap()]
    );
    assert!(
        remote[0].attribute("seen").is_none(),
        "split before the attribute was set"
    );
    let inbox = f.home.path().join("inboxes/alice/new");
    assert_eq!(std::fs::read_dir(inbox).unwrap().count(), 1);
}

#[test]
fn unknown_names_and_bad_parameters_are_reported_with_lines() {
    let home = tempfile::tempdir().unwrap();
    let xml = "<config>\n<spoolmanager>\n<processor name=\"root\">\n\
               <mailet match=\"NoSuchMatcher\" class=\"Null\"/>\n\
               <mailet match=\"All\" class=\"ToRepository\"/>\n\
               <mailet match=\"All\" class=\"org.example.Custom\"/>\n\
               </processor>\n<processor name=\"error\"/>\n</spoolmanager>\n</config>";
    let config = Config::from_str_with_name(xml, "c.xml", home.path(), None).unwrap();
    let errors = ProcessorTree::build(&config.spool_manager, &Registry::standard(), &[], &[])
        .err()
        .unwrap();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(
        text[0].starts_with("c.xml:4: unknown matcher \"NoSuchMatcher\""),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("c.xml:5: mailet ToRepository needs the parameter <repositoryPath>"),
        "{text:?}"
    );
    assert!(
        text[2].starts_with("c.xml:6: org.example.Custom: package org.example"),
        "{text:?}"
    );
}

#[test]
fn local_delivery_follows_aliases_and_forwards_and_stops_loops() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="All" class="ToProcessor"><processor>transport</processor></mailet>
           </processor>
           <processor name="transport">
             <mailet match="RecipientIsLocal" class="LocalDelivery"/>
             <mailet match="All" class="ToRepository"><repositoryPath>file://unknown</repositoryPath></mailet>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run(mail(
        state::ROOT,
        &["bob@localhost", "carol@localhost", "dave@localhost"],
    ));
    let inbox = f.home.path().join("inboxes/alice/new");
    let mut delivered: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    delivered.sort();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    // bob's copy: delivered to alice's mailbox under bob's address.
    assert!(delivered
        .iter()
        .any(|m| m.starts_with("Return-Path: <s@example.net>\nDelivered-To: bob@localhost\n")));
    // carol's copy: forwarded as a new mail, then delivered to alice.
    assert!(delivered
        .iter()
        .any(|m| m.contains("Delivered-To: alice@localhost\n")
            && m.contains("Delivered-To: carol@localhost\n")));
    assert!(!inbox
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bob")
        .exists());
    // dave -> erin -> dave: the loop is caught and ends in the error processor.
    let errors = f.repo("error");
    assert_eq!(errors.len(), 1);
    assert!(errors[0]
        .envelope
        .error_message
        .as_ref()
        .unwrap()
        .contains("forwarding loop"));
    assert!(f.repo("unknown").is_empty());
}

#[test]
fn deliveries_are_committed_before_a_hop_that_drops_their_recipients() {
    // alice's copy is split off and delivered; the rest (bob) then moves to `remote`. When it
    // gets there, alice's delivery must already be committed: the spool now only knows of bob.
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="RecipientIsLocal" class="LocalDelivery"/>
             <mailet match="All" class="ToProcessor"><processor>remote</processor></mailet>
           </processor>
           <processor name="remote">
             <mailet match="All" class="RequireDelivered"><dir>{{HOME}}/inboxes/alice</dir></mailet>
             <mailet match="All" class="ToRepository"><repositoryPath>file://remote</repositoryPath></mailet>
           </processor>
           {ERROR_STORE}"#
    ));
    f.run(mail(state::ROOT, &["alice@localhost", "bob@example.net"]));
    assert!(
        f.repo("error").is_empty(),
        "{:?}",
        f.repo("error")[0].envelope.error_message
    );
    assert_eq!(f.repo("remote").len(), 1);
}

#[test]
fn a_resume_mark_that_names_another_step_starts_the_processor_again() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="All" class="Stamp"/>
             <mailet match="All" class="LocalDelivery"/>
           </processor>
           {ERROR_STORE}"#
    ));
    // Kept for a retry at a step that a configuration change has since removed.
    let mut sent = mail(state::ROOT, &["alice@localhost"]);
    sent.set_attribute(
        mailroom_spool::manager::RESUME_STEP,
        mailroom_mailet::AttributeValue::String("1 All/Flaky".into()),
    );
    f.run_until_empty(sent);
    let delivered = f.delivered("alice");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].matches("X-Stamp").count(), 1, "started again");
}

/// Issue 16: a mail with tens of thousands of recipients costs the spool time linear in their
/// number (matching and splitting once scanned the matched list for every recipient: 3.5 s of
/// CPU for 32,000, quadratic).
#[test]
fn a_mail_with_many_recipients_is_processed_in_linear_time() {
    let f = fixture(&format!(
        r#"<processor name="root">
             <mailet match="RecipientIs=r7@example.net" class="ToProcessor"><processor>one</processor></mailet>
             <mailet match="All" class="ToRepository"><repositoryPath>file://rest</repositoryPath></mailet>
           </processor>
           <processor name="one">
             <mailet match="All" class="ToRepository"><repositoryPath>file://one</repositoryPath></mailet>
           </processor>
           {ERROR_STORE}"#
    ));
    let rcpts: Vec<String> = (0..60_000).map(|n| format!("r{n}@example.net")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let big = mail(state::ROOT, &rcpts);
    let started = Instant::now();
    f.run(big);
    let took = started.elapsed();
    assert_eq!(f.repo("one")[0].recipients().len(), 1);
    assert_eq!(f.repo("rest")[0].recipients().len(), 59_999);
    // Quadratic, this took 34 s (debug build); linear, 3 s with the repositories' writes,
    // which a loaded 2-core CI machine may make several times slower: the bound sits between.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
