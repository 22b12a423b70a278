//! The spool conformance cases on a slow store: every call answers 150 ms late, as a database
//! whose commits wait for a busy disk, or a worker that a loaded machine leaves unscheduled, may.
//! The cases check what the spool promises (a lease is never handed out twice before it
//! expires, a requeued mail never before its time), and a slow but correct store keeps those
//! promises: the cases must not fail on it. (They did, with leases and retry times shorter than
//! the few calls between taking a lease and checking it.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mailroom_mailet::Mail;
use mailroom_store::db::{DataSourceSpec, DataSources};
use mailroom_store::{
    conformance, IncomingMessage, LeaseToken, Leased, MailRepository, Result, SpoolRepository,
};

/// How late every call answers.
const LATE: Duration = Duration::from_millis(150);

/// A spool whose every call answers [`LATE`] after the one it wraps has.
struct Slow(Arc<dyn SpoolRepository>);

async fn late<T>(result: T) -> T {
    tokio::time::sleep(LATE).await;
    result
}

#[async_trait]
impl MailRepository for Slow {
    async fn store(&self, mail: &Mail) -> Result<()> {
        late(self.0.store(mail).await).await
    }
    async fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        late(self.0.retrieve(name).await).await
    }
    async fn remove(&self, name: &str) -> Result<bool> {
        late(self.0.remove(name).await).await
    }
    async fn list(&self) -> Result<Vec<String>> {
        late(self.0.list().await).await
    }
    async fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        late(self.0.incoming().await).await
    }
}

#[async_trait]
impl SpoolRepository for Slow {
    async fn lease(&self, wait: Duration) -> Result<Option<Leased>> {
        late(self.0.lease(wait).await).await
    }
    async fn renew(&self, token: &LeaseToken) -> Result<LeaseToken> {
        late(self.0.renew(token).await).await
    }
    async fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()> {
        late(self.0.update(token, mail).await).await
    }
    async fn release(&self, token: LeaseToken) -> Result<()> {
        late(self.0.release(token).await).await
    }
    async fn requeue(&self, token: LeaseToken, mail: &Mail, at: SystemTime) -> Result<()> {
        late(self.0.requeue(token, mail, at).await).await
    }
    async fn complete(&self, token: LeaseToken) -> Result<()> {
        late(self.0.complete(token).await).await
    }
    async fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>> {
        late(self.0.next_attempt(name).await).await
    }
    async fn make_due(&self, name: &str) -> Result<bool> {
        late(self.0.make_due(name).await).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cases_hold_on_a_slow_sqlite_spool() {
    let home = tempfile::tempdir().unwrap();
    let spec = DataSourceSpec {
        name: "maildb".into(),
        url: "sqlite://var/mail.db".into(),
        user: None,
        password: None,
        max: 8,
        lease: mailroom_store::DEFAULT_LEASE,
    };
    let sources = Arc::new(DataSources::open(&[spec], home.path()).await.unwrap());
    let handle = tokio::runtime::Handle::current();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fresh = || {
        // A repository of its own for each case; reopened as after a restart.
        let repository = format!(
            "s{}",
            next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (sources, handle) = (sources.clone(), handle.clone());
        move |lease| {
            let path = vec!["spool".to_string(), repository.clone()];
            let opened =
                tokio::task::block_in_place(|| handle.block_on(sources.spool("maildb", &path)))
                    .unwrap();
            let spool = Arc::new(Arc::unwrap_or_clone(opened).with_lease_duration(lease));
            Arc::new(Slow(spool)) as Arc<dyn SpoolRepository>
        }
    };
    // The cases with times in them (the eight concurrent workers and make_due have none,
    // and 200 mails at 150 ms a call would take a minute).
    conformance::spool_leases(&fresh()).await;
    conformance::spool_lease_takeover(&fresh()).await;
    conformance::spool_stale_tokens(&fresh()).await;
    conformance::spool_durable_schedule(&fresh()).await;
    conformance::spool_renew(&fresh()).await;
}
