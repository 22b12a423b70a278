//! The SpoolManager over a database spool and inbox (embedded SQLite): inbox deliveries are
//! held until the spool commits them with the mail's removal, and let go of when the mail
//! fails and is to run again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailroom_config::Config;
use mailroom_mailet::{state, Envelope, Mail, MailAddress, MailetContext, MailetError, Message};
use mailroom_spool::{
    ProcessorTree, Registry, Repositories, ServerContext, SpoolManager, UsernameRules,
};
use mailroom_store::db::{DataSourceSpec, DataSources, Pool};
use mailroom_store::file::{FileMailRepository, FileUsersRepository};
use mailroom_store::{Blocking, InboxRepository, MailRepository, SpoolRepository, User};

/// Fails its first `<times>` calls temporarily, then lets mail through.
struct Flaky(AtomicU32);

impl mailroom_mailet::Mailet for Flaky {
    fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        let left = self.0.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.0.store(left - 1, Ordering::SeqCst);
        Err(MailetError::temporary("flaky for now"))
    }
}

async fn execute(pool: &Pool, statement: &str) {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match pool {
        Pool::Sqlite(p) => sqlx::raw_sql(statement).execute(p).await.map(|_| ()),
        Pool::Postgres(p) => sqlx::raw_sql(statement).execute(p).await.map(|_| ()),
    }
    .unwrap();
}

/// The mail removed from the spool under its lease (as another node does once the lease
/// has expired and it has delivered the mail), then sent to another processor.
struct Vanish(
    Arc<mailroom_store::db::DbMailRepository>,
    tokio::runtime::Handle,
);

impl mailroom_mailet::Mailet for Vanish {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        let (repo, name) = (self.0.clone(), mail.name().to_string());
        std::thread::scope(|s| {
            s.spawn(|| self.1.block_on(repo.remove(&name)).unwrap());
        });
        mail.set_state("next");
        Ok(())
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    _home: tempfile::TempDir,
    sources: DataSources,
    spool: Arc<mailroom_store::db::DbMailRepository>,
    inbox: Arc<mailroom_store::db::DbInbox>,
    manager: Arc<SpoolManager>,
}

impl Fixture {
    /// Leases and processes mail until the spool is empty (at most 30 s).
    fn process_until_the_spool_is_empty(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.runtime.block_on(self.spool.list()).unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "mails left in the spool"
            );
            if let Some(leased) = self
                .runtime
                .block_on(self.spool.lease(Duration::from_millis(200)))
                .unwrap()
            {
                self.manager.process(leased);
            }
        }
    }
}

fn fixture(processors: &str) -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec = DataSourceSpec {
        name: "maildb".into(),
        url: "sqlite://var/mail.db".into(),
        user: None,
        password: None,
        max: 4,
        lease: mailroom_store::DEFAULT_LEASE,
    };
    let sources = runtime
        .block_on(DataSources::open(&[spec], home.path()))
        .unwrap();
    let spool = runtime
        .block_on(sources.spool("maildb", &["spool".into(), "spool".into()]))
        .unwrap();
    let inbox = runtime
        .block_on(sources.inbox("maildb", &["inbox".into()]))
        .unwrap();
    let users = Arc::new(FileUsersRepository::open(&home.path().join("users")).unwrap());
    for user in ["alice", "bob", "carol"] {
        mailroom_store::blocking::UsersRepository::add(&*users, &User::new(user, "x")).unwrap();
    }
    let xml = format!(
        r#"<config><James><servernames><servername>localhost</servername></servernames></James>
        <spoolmanager>{processors}
        <processor name="error">
          <mailet match="All" class="ToRepository"><repositoryPath>file://error</repositoryPath></mailet>
        </processor></spoolmanager></config>"#
    );
    let config =
        Config::from_str_with_name(&xml, "test.xml", home.path(), Some(home.path())).unwrap();
    let mut registry = Registry::standard();
    registry.add_mailet("Flaky", |_| Ok(Box::new(Flaky(AtomicU32::new(1)))));
    let elsewhere = runtime
        .block_on(sources.mail("maildb", &["spool".into(), "spool".into()]))
        .unwrap();
    let handle = runtime.handle().clone();
    registry.add_mailet("Vanish", move |_| {
        Ok(Box::new(Vanish(elsewhere.clone(), handle.clone())))
    });
    let tree = ProcessorTree::build(&config.spool_manager, &registry, &[], &[])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let root = home.path().to_path_buf();
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
            inbox: inbox.clone(),
            spool: spool.clone(),
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
        runtime,
        _home: home,
        sources,
        spool,
        inbox,
        manager,
    }
}

fn mail(name: &str, users: &[&str]) -> Mail {
    let mut envelope = Envelope::new(
        name,
        MailAddress::parse("s@example.net").ok(),
        users
            .iter()
            .map(|u| MailAddress::parse(&format!("{u}@localhost")).unwrap())
            .collect(),
    );
    envelope.state = state::ROOT.into();
    Mail::new(envelope, Message::from_bytes(b"Subject: t\r\n\r\nbody\r\n"))
}

/// A mail whose processing stops on a storage failure after a split copy was delivered (the
/// store of another copy fails) is run again from the spool: the delivery it staged is let
/// go of at once (it used to stay in memory, with its body, for an hour), and the mail is
/// delivered once in the end.
#[test]
fn a_storage_failure_lets_go_of_the_deliveries_it_staged() {
    let f = fixture(
        r#"<processor name="root">
          <mailet match="RecipientIs=alice@localhost" class="LocalDelivery"/>
          <mailet match="RecipientIs=bob@localhost" class="Flaky"/>
          <mailet match="All" class="LocalDelivery"/>
        </processor>"#,
    );
    let (runtime, spool, inbox) = (&f.runtime, &f.spool, &f.inbox);
    // bob's split copy, which Flaky fails, cannot be stored in the spool.
    let pool = f.sources.pool("maildb").unwrap().clone();
    runtime.block_on(execute(
        &pool,
        "CREATE TRIGGER refuse_copies BEFORE INSERT ON spool \
         WHEN NEW.message_name LIKE 'split-parent-%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    ));
    let mail = mail("split-parent", &["alice", "bob", "carol"]);
    runtime.block_on(spool.store(&mail)).unwrap();
    let leased = runtime
        .block_on(spool.lease(Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    f.manager.process(leased);
    assert_eq!(runtime.block_on(spool.list()).unwrap(), ["split-parent"]);
    assert_eq!(
        inbox.staged_count(),
        0,
        "the failed run's delivery is let go of"
    );

    runtime.block_on(execute(&pool, "DROP TRIGGER refuse_copies"));
    runtime.block_on(spool.make_due("split-parent")).unwrap();
    f.process_until_the_spool_is_empty();
    for user in ["alice", "bob", "carol"] {
        let mailbox = runtime.block_on(inbox.open_mailbox(user)).unwrap();
        assert_eq!(mailbox.messages().len(), 1, "{user}");
    }
    assert_eq!(inbox.staged_count(), 0);
}

/// A mail gone from the spool under its lease (another node took it once the lease expired,
/// and delivered it): the worker that held it lets go of its stored body (kept for the
/// one-transaction delivery) instead of holding it, and a temporary file of a large one,
/// until the process ends.
#[test]
fn a_mail_gone_under_its_lease_leaves_no_body_held() {
    let f = fixture(
        r#"<processor name="root">
          <mailet match="All" class="Vanish"/>
        </processor>
        <processor name="next">
          <mailet match="All" class="LocalDelivery"/>
        </processor>"#,
    );
    let (runtime, spool) = (&f.runtime, &f.spool);
    runtime
        .block_on(spool.store(&mail("vanishing", &["alice"])))
        .unwrap();
    let leased = runtime
        .block_on(spool.lease(Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    assert_eq!(spool.leased_count(), 1);
    f.manager.process(leased);
    assert!(runtime.block_on(spool.list()).unwrap().is_empty());
    assert_eq!(
        spool.leased_count(),
        0,
        "the body of a mail gone is let go of"
    );
}

/// A split copy delivered to an inbox made durable at the parent's processor hop, and then the
/// hop's store of the parent fails (a crash there does the same): the parent runs again from
/// its stored state and splits again. The copy has the same delivery key at every run, so the
/// database inbox, which stores one message per key and user, does not deliver it twice.
#[test]
fn a_split_copy_delivered_before_a_failed_hop_is_not_delivered_again() {
    let f = fixture(
        r#"<processor name="root">
          <mailet match="RecipientIs=alice@localhost" class="LocalDelivery"/>
          <mailet match="All" class="ToProcessor"><processor>next</processor></mailet>
        </processor>
        <processor name="next">
          <mailet match="All" class="LocalDelivery"/>
        </processor>"#,
    );
    let (runtime, spool, inbox) = (&f.runtime, &f.spool, &f.inbox);
    let pool = f.sources.pool("maildb").unwrap().clone();
    runtime.block_on(execute(
        &pool,
        "CREATE TRIGGER refuse_hop BEFORE UPDATE ON spool \
         WHEN NEW.message_state = 'next' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    ));
    runtime
        .block_on(spool.store(&mail("hop-parent", &["alice", "bob"])))
        .unwrap();
    let leased = runtime
        .block_on(spool.lease(Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    f.manager.process(leased);
    assert_eq!(runtime.block_on(spool.list()).unwrap(), ["hop-parent"]);

    runtime.block_on(execute(&pool, "DROP TRIGGER refuse_hop"));
    runtime.block_on(spool.make_due("hop-parent")).unwrap();
    f.process_until_the_spool_is_empty();
    for user in ["alice", "bob"] {
        let mailbox = runtime.block_on(inbox.open_mailbox(user)).unwrap();
        assert_eq!(mailbox.messages().len(), 1, "{user}");
    }
}
