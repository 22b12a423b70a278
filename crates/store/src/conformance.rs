//! The test-suite every backend runs: call these from a backend's tests with a fresh, empty
//! repository. They panic on the first broken contract.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mailroom_mailet::{AttributeValue, Envelope, Mail, MailAddress, Message};
use tokio::io::AsyncReadExt;

mod delivery;
pub use delivery::spool_delivery;

use crate::{
    InboxRepository, Leased, MailRepository, Mailbox, MappingsRepository, SpoolRepository,
    StoreError, User, UsersRepository,
};

fn sample_mail(name: &str) -> Mail {
    let mut env = Envelope::new(
        name,
        None,
        vec![MailAddress::parse("a@example.org").unwrap()],
    );
    env.attributes
        .insert("n".into(), AttributeValue::Number(7.0));
    env.error_message = Some("why".into());
    Mail::new(
        env,
        Message::from_bytes(b"Subject: test\r\n\r\nline 1\r\n.line 2\r\n"),
    )
}

/// Store, retrieve, replace, list and remove in a mail repository.
pub async fn mail_repository(repo: &dyn MailRepository) {
    assert!(repo.list().await.unwrap().is_empty());
    let mut mail = sample_mail("m-1");
    repo.store(&mail).await.unwrap();
    let back = repo.retrieve("m-1").await.unwrap().expect("stored mail");
    assert_eq!(back.envelope.recipients, mail.envelope.recipients);
    assert_eq!(back.envelope.sender, None);
    assert_eq!(back.envelope.attributes, mail.envelope.attributes);
    assert_eq!(back.envelope.size, mail.message.size());
    assert_eq!(
        back.message.to_bytes().unwrap(),
        mail.message.to_bytes().unwrap()
    );

    // Replacing: the envelope alone, then a modified header.
    mail.set_state("spam");
    repo.store(&mail).await.unwrap();
    assert_eq!(repo.retrieve("m-1").await.unwrap().unwrap().state(), "spam");
    let mut changed = repo.retrieve("m-1").await.unwrap().unwrap();
    changed.message.set_header("X-Changed", "yes");
    repo.store(&changed).await.unwrap();
    let back = repo.retrieve("m-1").await.unwrap().unwrap();
    assert_eq!(back.message.header("x-changed").as_deref(), Some("yes"));
    // The body read from the old version is still intact after the rewrite.
    assert!(changed
        .message
        .to_bytes()
        .unwrap()
        .ends_with(b".line 2\r\n"));

    repo.store(&sample_mail("m-2")).await.unwrap();
    assert_eq!(repo.list().await.unwrap(), vec!["m-1", "m-2"]);
    assert!(repo.remove("m-1").await.unwrap());
    assert!(!repo.remove("m-1").await.unwrap());
    assert!(repo.retrieve("m-1").await.unwrap().is_none());
    assert!(matches!(
        repo.retrieve("../../etc/passwd").await,
        Err(StoreError::InvalidName(..))
    ));

    // Streaming a new message in.
    let mut incoming = repo.incoming().await.unwrap();
    let name = incoming.name().to_string();
    incoming.write(b"Subject: streamed\r\n\r\n").await.unwrap();
    incoming.write(b"body\r\n").await.unwrap();
    incoming
        .commit(Envelope::new("ignored", None, vec![]))
        .await
        .unwrap();
    let back = repo.retrieve(&name).await.unwrap().unwrap();
    assert_eq!(back.envelope.name, name);
    assert_eq!(back.envelope.size, 27);
    assert_eq!(back.message.header("subject").as_deref(), Some("streamed"));

    // An uncommitted message leaves nothing behind.
    let mut dropped = repo.incoming().await.unwrap();
    let dropped_name = dropped.name().to_string();
    dropped.write(b"x").await.unwrap();
    drop(dropped);
    assert!(repo.retrieve(&dropped_name).await.unwrap().is_none());
}

/// Opens the spool under test with leases of the given duration. The first call opens an
/// empty spool; a call made once every handle of the previous one is dropped opens the same
/// spool again, as a restart does.
pub type OpenSpool<'a> = &'a dyn Fn(Duration) -> Arc<dyn SpoolRepository>;

/// Asserts that a mail `lease` handed out, if any, was due by now: it must not come before
/// `due` (a lease's expiry, a retry time). A store slower than the margin a case leaves (a
/// loaded machine) may reach `due` first, which breaks no promise; the cases leave margins of
/// a second or so, so that this stays the exception.
fn not_before(leased: &Option<Leased>, due: SystemTime) {
    if let Some(leased) = leased {
        assert!(
            SystemTime::now() >= due,
            "{} handed out {:?} before its time",
            leased.mail.name(),
            due.duration_since(SystemTime::now()).unwrap_or_default()
        );
    }
}

/// Every spool case, each on a spool of its own: `fresh` returns an [`OpenSpool`] for a new,
/// empty spool each time.
pub async fn spool_repository(
    fresh: &dyn Fn() -> Box<dyn Fn(Duration) -> Arc<dyn SpoolRepository>>,
) {
    spool_leases(&*fresh()).await;
    spool_concurrent_workers(&*fresh()).await;
    spool_lease_takeover(&*fresh()).await;
    spool_stale_tokens(&*fresh()).await;
    spool_durable_schedule(&*fresh()).await;
    spool_renew(&*fresh()).await;
    spool_make_due(&*fresh()).await;
}

/// Leases: one holder at a time; update keeps the lease, release hands the mail out again at
/// once, requeue after its time, complete ends it; new mail wakes a waiting worker.
pub async fn spool_leases(open: OpenSpool<'_>) {
    let spool = open(Duration::from_secs(60));
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    spool.store(&sample_mail("s-1")).await.unwrap();
    spool.store(&sample_mail("s-2")).await.unwrap();
    let first = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let second = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_ne!(first.mail.name(), second.mail.name());
    assert_eq!(first.token.name(), first.mail.name());
    assert_ne!(first.token.id(), second.token.id());
    assert!(first.token.expires_at() > SystemTime::now());
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());

    // A hop under the lease keeps it leased.
    let mut hop = first.mail.clone();
    hop.set_state("transport");
    hop.envelope.error_message = Some("hop".into());
    spool.update(&first.token, &hop).await.unwrap();
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        spool.retrieve(hop.name()).await.unwrap().unwrap().state(),
        "transport"
    );
    // A hop that changes the message too.
    hop.message.set_header("X-Hop", "1");
    spool.update(&first.token, &hop).await.unwrap();

    // Requeued for later: hidden until its time (a second ahead: the calls in between may be
    // slow on a loaded machine, and a lease taken once the time has come breaks no promise).
    let at = SystemTime::now() + Duration::from_secs(1);
    spool.requeue(first.token, &hop, at).await.unwrap();
    assert!(spool.next_attempt(hop.name()).await.unwrap().is_some());
    let early = spool.lease(Duration::from_millis(10)).await.unwrap();
    not_before(&early, at);
    let again = match early {
        Some(again) => again,
        None => spool.lease(Duration::from_secs(5)).await.unwrap().unwrap(),
    };
    assert!(SystemTime::now() + Duration::from_millis(2) >= at);
    assert_eq!(again.mail.name(), hop.name());
    assert_eq!(again.mail.state(), "transport");
    assert_eq!(again.mail.message.header("x-hop").as_deref(), Some("1"));

    // Released: at once again.
    spool.release(again.token).await.unwrap();
    let again = spool
        .lease(Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.mail.name(), hop.name());
    assert_eq!(spool.next_attempt(hop.name()).await.unwrap(), None);
    spool.complete(again.token).await.unwrap();
    spool.complete(second.token).await.unwrap();
    assert!(spool.list().await.unwrap().is_empty());
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());

    // Storing a leased mail (not a hop: anyone's store) keeps it leased; the leaseholder's
    // next update still counts.
    spool.store(&sample_mail("s-3")).await.unwrap();
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let mut changed = leased.mail.clone();
    changed.message.set_header("X-Stored", "yes");
    spool.store(&changed).await.unwrap();
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    let mut hop = leased.mail.clone();
    hop.set_state("spam");
    spool.update(&leased.token, &hop).await.unwrap();
    let back = spool.retrieve("s-3").await.unwrap().unwrap();
    assert_eq!(back.state(), "spam");
    assert_eq!(back.message.header("x-stored"), None);
    // Removed under the lease: the token is stale.
    assert!(spool.remove("s-3").await.unwrap());
    assert!(matches!(
        spool.complete(leased.token).await,
        Err(StoreError::LeaseLost(name)) if name == "s-3"
    ));

    // A committed incoming mail wakes a waiting lease.
    let waiter = spool.lease(Duration::from_secs(5));
    let commit = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut incoming = spool.incoming().await.unwrap();
        incoming.write(b"Subject: wake\r\n\r\n").await.unwrap();
        incoming
            .commit(Envelope::new("x", None, vec![]))
            .await
            .unwrap();
    };
    let (got, ()) = tokio::join!(waiter, commit);
    let got = got.unwrap().expect("woken by the new mail");
    assert_eq!(got.mail.message.header("subject").as_deref(), Some("wake"));
    spool.complete(got.token).await.unwrap();
}

/// Eight workers lease from one spool at once: every mail is processed exactly once.
pub async fn spool_concurrent_workers(open: OpenSpool<'_>) {
    const MAILS: usize = 200;
    let spool = open(Duration::from_secs(60));
    for i in 0..MAILS {
        spool.store(&sample_mail(&format!("c-{i}"))).await.unwrap();
    }
    let processed = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (spool, processed, done) = (spool.clone(), processed.clone(), done.clone());
        workers.spawn(async move {
            while done.load(Ordering::SeqCst) < MAILS {
                let Some(Leased { mut mail, token }) =
                    spool.lease(Duration::from_millis(20)).await.unwrap()
                else {
                    continue;
                };
                *processed
                    .lock()
                    .unwrap()
                    .entry(mail.name().to_string())
                    .or_default() += 1;
                // A hop, then the end, as a worker does.
                mail.set_state(&format!("worker-{worker}"));
                spool.update(&token, &mail).await.unwrap();
                spool.complete(token).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.unwrap();
    }
    let processed = processed.lock().unwrap().clone();
    assert_eq!(processed.len(), MAILS);
    assert!(processed.values().all(|n| *n == 1), "{processed:?}");
    assert!(spool.list().await.unwrap().is_empty());
}

/// A worker that dies (drops its token) loses nothing: once its lease expires, another worker
/// takes the mail over, as last updated.
pub async fn spool_lease_takeover(open: OpenSpool<'_>) {
    let lease = Duration::from_secs(1);
    let spool = open(lease);
    spool.store(&sample_mail("t-1")).await.unwrap();
    let started = Instant::now();
    let dying = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let mut hop = dying.mail.clone();
    hop.set_state("transport");
    spool.update(&dying.token, &hop).await.unwrap();
    let (dead_id, expiry) = (dying.token.id(), dying.token.expires_at());
    drop(dying);
    let early = spool.lease(Duration::from_millis(10)).await.unwrap();
    not_before(&early, expiry);
    let taken = match early {
        Some(taken) => taken,
        None => spool
            .lease(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("taken over after the lease expired"),
    };
    assert!(started.elapsed() >= lease - Duration::from_millis(20));
    assert_eq!(taken.mail.name(), "t-1");
    assert_eq!(taken.mail.state(), "transport");
    assert_ne!(taken.token.id(), dead_id);
    spool.complete(taken.token).await.unwrap();
    assert!(spool.list().await.unwrap().is_empty());
}

/// A stale token (its lease expired and the mail was leased again) is refused by every call
/// with [`StoreError::LeaseLost`], and changes nothing.
pub async fn spool_stale_tokens(open: OpenSpool<'_>) {
    // Long enough for the current holder's lease to outlast the seven calls below.
    let lease = Duration::from_secs(2);
    let spool = open(lease);
    spool.store(&sample_mail("x-1")).await.unwrap();
    let stale = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let current = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(current.mail.name(), "x-1");
    let current_token = spool.renew(&current.token).await.unwrap();

    let lost = |result: crate::Result<()>| {
        assert!(
            matches!(&result, Err(StoreError::LeaseLost(name)) if name == "x-1"),
            "{result:?}"
        );
    };
    let mut changed = stale.mail.clone();
    changed.set_state("changed");
    changed.message.set_header("X-Stale", "yes");
    lost(spool.update(&stale.token, &changed).await);
    lost(
        spool
            .requeue(
                stale.token.clone(),
                &changed,
                SystemTime::now() + Duration::from_secs(3600),
            )
            .await,
    );
    lost(spool.release(stale.token.clone()).await);
    lost(spool.complete(stale.token.clone()).await);
    lost(spool.renew(&stale.token).await.map(|_| ()));
    let back = spool.retrieve("x-1").await.unwrap().unwrap();
    assert_eq!(back.state(), stale.mail.state());
    assert_eq!(back.message.header("x-stale"), None);
    assert_eq!(spool.next_attempt("x-1").await.unwrap(), None);
    // Still the current holder's.
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    spool.update(&current_token, &changed).await.unwrap();
    spool.complete(current_token).await.unwrap();
    assert!(spool.list().await.unwrap().is_empty());
}

/// A requeued mail is not leased before its time, also after a restart, and is after.
pub async fn spool_durable_schedule(open: OpenSpool<'_>) {
    let spool = open(Duration::from_secs(60));
    spool.store(&sample_mail("r-1")).await.unwrap();
    spool.store(&sample_mail("r-2")).await.unwrap();
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(leased.mail.name(), "r-1");
    let mut retry = leased.mail.clone();
    retry.set_state("retry");
    retry.envelope.error_message = Some("4.0.0 try later".into());
    let at = SystemTime::now() + Duration::from_millis(1500);
    spool.requeue(leased.token, &retry, at).await.unwrap();
    // r-2 is due, r-1 is not.
    let other = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(other.mail.name(), "r-2");
    spool.release(other.token).await.unwrap();
    drop(spool);

    let spool = open(Duration::from_secs(60));
    let next = spool
        .next_attempt("r-1")
        .await
        .unwrap()
        .expect("the schedule survives");
    assert!(next.duration_since(at).unwrap_or_else(|e| e.duration()) < Duration::from_millis(2));
    let first = spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.mail.name(), "r-2");
    spool.complete(first.token).await.unwrap();
    if SystemTime::now() + Duration::from_millis(200) < at {
        assert!(spool
            .lease(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none());
    }
    let due = spool.lease(Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(SystemTime::now() + Duration::from_millis(2) >= at);
    assert_eq!(due.mail.name(), "r-1");
    assert_eq!(due.mail.state(), "retry");
    assert_eq!(
        due.mail.envelope.error_message.as_deref(),
        Some("4.0.0 try later")
    );
    spool.complete(due.token).await.unwrap();
    drop(spool);
    assert!(open(Duration::from_secs(60))
        .list()
        .await
        .unwrap()
        .is_empty());
}

/// `make_due`: a requeued mail is due at once, durably, as it was; a leased or gone one is left
/// alone (a flush racing a worker never brings a completed mail back).
pub async fn spool_make_due(open: OpenSpool<'_>) {
    let spool = open(Duration::from_secs(60));
    assert!(!spool.make_due("d-none").await.unwrap());
    spool.store(&sample_mail("d-1")).await.unwrap();
    // Due already: nothing to change.
    assert!(spool.make_due("d-1").await.unwrap());
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    // Held by a worker: left to it.
    assert!(!spool.make_due("d-1").await.unwrap());
    let mut retry = leased.mail.clone();
    retry.set_state("retry");
    retry.envelope.error_message = Some("4.0.0 later".into());
    let later = SystemTime::now() + Duration::from_secs(3600);
    spool.requeue(leased.token, &retry, later).await.unwrap();
    assert!(spool
        .lease(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
    assert!(spool.make_due("d-1").await.unwrap());
    assert_eq!(spool.next_attempt("d-1").await.unwrap(), None);
    drop(spool);

    // Due at once after a restart too, with its state and error as requeued.
    let spool = open(Duration::from_secs(60));
    assert_eq!(spool.next_attempt("d-1").await.unwrap(), None);
    let due = spool
        .lease(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("due at once");
    assert_eq!(due.mail.state(), "retry");
    assert_eq!(
        due.mail.envelope.error_message.as_deref(),
        Some("4.0.0 later")
    );
    // Completed by its worker: a flush afterwards brings nothing back.
    spool.complete(due.token).await.unwrap();
    assert!(!spool.make_due("d-1").await.unwrap());
    assert!(spool.list().await.unwrap().is_empty());
}

/// Renewing keeps a lease alive past its original expiry.
pub async fn spool_renew(open: OpenSpool<'_>) {
    let lease = Duration::from_secs(1);
    let spool = open(lease);
    spool.store(&sample_mail("n-1")).await.unwrap();
    let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
    let original = leased.token.expires_at();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let renewed = spool.renew(&leased.token).await.unwrap();
    assert!(renewed.expires_at() > original);
    assert_eq!(renewed.id(), leased.token.id());
    // Past the original expiry (but not the renewed one): still held.
    let past = original + Duration::from_millis(50);
    tokio::time::sleep(past.duration_since(SystemTime::now()).unwrap_or_default()).await;
    assert!(SystemTime::now() > original);
    let early = spool.lease(Duration::from_millis(10)).await.unwrap();
    not_before(&early, renewed.expires_at());
    if early.is_some() {
        // Slower than the renewed lease: nothing more to check of it.
        return;
    }
    spool.complete(renewed).await.unwrap();
    assert!(spool.list().await.unwrap().is_empty());
}

/// Add, get (case-insensitively), update, list, count, remove and password checks.
pub async fn users_repository(users: &dyn UsersRepository) {
    assert_eq!(users.count().await.unwrap(), 0);
    users.add(&User::new("Alice", "pass word")).await.unwrap();
    users.add(&User::new("bob", "secret")).await.unwrap();
    assert!(matches!(
        users.add(&User::new("alice", "x")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        users.add(&User::new("../../etc/x", "y")).await,
        Err(StoreError::InvalidName(..))
    ));
    let alice = users.get("ALICE").await.unwrap().expect("case-insensitive");
    assert_eq!(alice.name, "Alice");
    assert!(users.verify_password("alice", "pass word").await.unwrap());
    assert!(!users.verify_password("alice", "pass").await.unwrap());
    assert!(!users.verify_password("nobody", "pass").await.unwrap());

    let mut bob = users.get("bob").await.unwrap().unwrap();
    bob.alias = Some("Alice".into());
    bob.alias_enabled = true;
    users.update(&bob).await.unwrap();
    assert_eq!(
        users.get("bob").await.unwrap().unwrap().alias.as_deref(),
        Some("Alice")
    );
    assert!(matches!(
        users.update(&User::new("carol", "x")).await,
        Err(StoreError::NotFound(_))
    ));

    // An imported James SHA-1 hash works and is upgraded.
    let mut legacy = User::new("legacy", "unused");
    legacy.password_hash = "5en6G6MezRroT3XKqkdPOmY/BfQ=".into();
    users.add(&legacy).await.unwrap();
    assert!(users.verify_password("legacy", "secret").await.unwrap());
    assert!(users
        .get("legacy")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .starts_with("$argon2id$"));
    assert!(users.verify_password("legacy", "secret").await.unwrap());
    // An upgrade computed against a hash that has changed since does not undo the change.
    let current = users.get("legacy").await.unwrap().unwrap().password_hash;
    assert!(!users
        .replace_password_hash("legacy", "stale", "x".into())
        .await
        .unwrap());
    assert_eq!(
        users.get("legacy").await.unwrap().unwrap().password_hash,
        current
    );

    assert_eq!(users.list().await.unwrap(), vec!["Alice", "bob", "legacy"]);
    assert_eq!(users.count().await.unwrap(), 3);
    assert!(users.remove("BOB").await.unwrap());
    assert!(!users.remove("bob").await.unwrap());
    assert!(users.get("bob").await.unwrap().is_none());
    assert!(users.get("../x").await.unwrap().is_none());
}

/// Add, list and remove mappings, in two tables that do not see each other's entries.
pub async fn mappings_repository(repo: &dyn MappingsRepository) {
    use crate::mappings::{Source, Target, DEFAULT_TABLE};
    let source = Source::parse("Info@Example.org").unwrap();
    let alice = Target::parse("alice@example.org").unwrap();
    let refuse = Target::parse("error:550 gone").unwrap();
    assert!(repo.all(DEFAULT_TABLE).await.unwrap().is_empty());
    assert!(repo.get(DEFAULT_TABLE, &source).await.unwrap().is_empty());

    assert!(repo.add(DEFAULT_TABLE, &source, &alice).await.unwrap());
    assert!(
        !repo.add(DEFAULT_TABLE, &source, &alice).await.unwrap(),
        "added twice"
    );
    assert!(repo.add(DEFAULT_TABLE, &source, &refuse).await.unwrap());
    let wildcard = Source::parse("*@example.net").unwrap();
    assert!(repo.add(DEFAULT_TABLE, &wildcard, &alice).await.unwrap());
    // Sources are case-insensitive; targets keep their order.
    let lower = Source::parse("info@example.org").unwrap();
    assert_eq!(
        repo.get(DEFAULT_TABLE, &lower).await.unwrap(),
        vec![alice.clone(), refuse.clone()]
    );
    assert_eq!(
        repo.all(DEFAULT_TABLE).await.unwrap(),
        vec![
            (wildcard.clone(), vec![alice.clone()]),
            (lower.clone(), vec![alice.clone(), refuse.clone()]),
        ]
    );
    assert!(repo.all("other").await.unwrap().is_empty());
    assert!(repo.add("other", &source, &refuse).await.unwrap());
    assert_eq!(
        repo.get("other", &source).await.unwrap(),
        vec![refuse.clone()]
    );

    assert!(repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap());
    assert!(
        !repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap(),
        "removed twice"
    );
    assert!(repo.remove(DEFAULT_TABLE, &source, &refuse).await.unwrap());
    assert!(repo.get(DEFAULT_TABLE, &source).await.unwrap().is_empty());
    assert_eq!(
        repo.all(DEFAULT_TABLE).await.unwrap().len(),
        1,
        "empty sources are dropped"
    );
    assert!(!repo.remove(DEFAULT_TABLE, &source, &alice).await.unwrap());
}

/// Every message of a mailbox, read whole, as POP3 sends it: a backend may store lines with
/// LF ends ([`Mailbox::open_message`]), and each LF without a CR before it goes out as CRLF.
async fn read_all(mailbox: &dyn Mailbox) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for i in 0..mailbox.messages().len() {
        let mut bytes = Vec::new();
        let mut stream = mailbox.open_message(i).await.unwrap();
        stream.read_to_end(&mut bytes).await.unwrap();
        let mut wire = Vec::with_capacity(bytes.len());
        let mut after_cr = false;
        for b in bytes {
            if b == b'\n' && !after_cr {
                wire.push(b'\r');
            }
            wire.push(b);
            after_cr = b == b'\r';
        }
        all.push(wire);
    }
    all
}

/// Delivery and reading: a mailbox lists what was delivered, oldest first, with stable UIDs
/// and exact CRLF sizes; it is locked while open; mail delivered meanwhile shows next time;
/// deletes take effect once committed and only for the messages named.
pub async fn inbox_repository(inbox: &dyn InboxRepository) {
    let empty = inbox.open_mailbox("Alice").await.unwrap();
    assert!(empty.messages().is_empty());
    drop(empty);

    let bodies: [&[u8]; 3] = [
        b"Subject: one\r\n\r\nfirst\r\n",
        b"Subject: two\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: three\r\n\r\nthird\r\n",
    ];
    let mut deliveries = Vec::new();
    for body in bodies {
        let delivery = inbox
            .deliver("Alice", b"Return-Path: <>\r\n", &Message::from_bytes(body))
            .await
            .unwrap();
        deliveries.push(delivery);
        // Distinct delivery times, so that the order is the delivery order on every backend.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    inbox.sync(&deliveries).await.unwrap();

    let mut mailbox = inbox.open_mailbox("Alice").await.unwrap();
    let listed = mailbox.messages().to_vec();
    assert_eq!(listed.len(), 3);
    let contents = read_all(mailbox.as_ref()).await;
    for ((message, body), content) in listed.iter().zip(bodies).zip(&contents) {
        let expected = [&b"Return-Path: <>\r\n"[..], body].concat();
        assert_eq!(content, &expected);
        assert_eq!(message.size, expected.len() as u64);
        assert!(!message.uid.is_empty() && message.uid.len() <= 70);
        assert!(message.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    assert!(listed[0].uid != listed[1].uid && listed[1].uid != listed[2].uid);
    assert!(mailbox.open_message(3).await.is_err());
    // The inbox's size (quota matchers) is the listed sizes' sum, also while a session
    // holds the mailbox; a user without mail has none.
    let total: u64 = listed.iter().map(|m| m.size).sum();
    assert_eq!(inbox.size("Alice").await.unwrap(), total);
    assert_eq!(inbox.size("nobody-yet").await.unwrap(), 0);

    // One session at a time.
    assert!(matches!(
        inbox.open_mailbox("Alice").await,
        Err(StoreError::InUse(_))
    ));
    // Mail delivered during the session is not in its snapshot.
    let fourth = inbox
        .deliver(
            "Alice",
            b"",
            &Message::from_bytes(b"Subject: four\r\n\r\n4\r\n"),
        )
        .await
        .unwrap();
    inbox.sync(&[fourth]).await.unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    mailbox.delete(&[1]).await.unwrap();
    drop(mailbox);

    // Reopened: the deleted one is gone, the others keep their UIDs, the new one is last.
    let mailbox = inbox.open_mailbox("Alice").await.unwrap();
    let uids: Vec<&str> = mailbox.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids.len(), 3);
    assert_eq!(
        &uids[..2],
        &[listed[0].uid.as_str(), listed[2].uid.as_str()]
    );
    assert!(!uids[..2].contains(&listed[1].uid.as_str()));
    assert_eq!(
        read_all(mailbox.as_ref()).await[2],
        b"Subject: four\r\n\r\n4\r\n"
    );
    // Dropping a mailbox without delete changes nothing.
    drop(mailbox);
    let mut mailbox = inbox.open_mailbox("Alice").await.unwrap();
    assert_eq!(mailbox.messages().len(), 3);
    // Mailboxes are per user.
    let other = inbox.open_mailbox("bob").await.unwrap();
    assert!(other.messages().is_empty());
    mailbox.delete(&[0, 1, 2]).await.unwrap();
    drop(mailbox);
    assert!(inbox
        .open_mailbox("Alice")
        .await
        .unwrap()
        .messages()
        .is_empty());
    assert!(matches!(
        inbox.open_mailbox("../escape").await,
        Err(StoreError::InvalidName(..))
    ));
}

/// Import (`mailroom store copy`): a message stored under a given UIDL keeps it and its
/// octets and POP3 size; importing that UIDL again stores nothing; imports come in order after
/// what was there; a UIDL that is not one is refused.
pub async fn inbox_import(inbox: &dyn InboxRepository) {
    let first = b"Return-Path: <a@b>\r\nSubject: one\r\n\r\nline\nbare LF\r\n".to_vec();
    let second = b"Subject: two\r\n\r\n2\r\n".to_vec();
    for (uid, text) in [
        ("1700000000.M1P2Q3.host", &first),
        ("1700000001.M1P2Q4.host", &second),
    ] {
        let stored = inbox
            .import("carol", uid, &Message::from_bytes(text))
            .await
            .unwrap();
        assert!(stored, "{uid}");
    }
    assert!(!inbox
        .import(
            "carol",
            "1700000000.M1P2Q3.host",
            &Message::from_bytes(&second)
        )
        .await
        .unwrap());
    let mailbox = inbox.open_mailbox("carol").await.unwrap();
    let uids: Vec<&str> = mailbox.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids, ["1700000000.M1P2Q3.host", "1700000001.M1P2Q4.host"]);
    // One bare LF: one octet more on the wire.
    assert_eq!(mailbox.messages()[0].size, first.len() as u64 + 1);
    let read = read_all(mailbox.as_ref()).await;
    let wire = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    assert_eq!(wire(&read[0]), wire(&first));
    assert_eq!(read[1], second);
    drop(mailbox);
    assert!(matches!(
        inbox
            .import("carol", "has space", &Message::from_bytes(&second))
            .await,
        Err(StoreError::InvalidName(..))
    ));
}

/// Opens the news repository under test: the first call an empty one, each later call (once
/// the previous handle is dropped) the same one again, as a restart does.
pub type OpenNews<'a> = &'a dyn Fn() -> Arc<dyn crate::NewsRepository>;

fn news_article(id: &str, groups: &[&str], body: &str) -> crate::NewArticle {
    crate::NewArticle {
        message_id: id.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        octets: format!(
            "From: a@example.org\r\nNewsgroups: {}\r\nSubject: about {id}\r\nMessage-ID: {id}\r\n\r\n{body}",
            groups.join(",")
        )
        .into_bytes(),
        poster: None,
    }
}

/// Groups, posting, numbers (monotonic, never reused, also across a restart and after
/// removals), cross-posts with `Xref:`, duplicates, overview, lookups by Message-ID, NEWNEWS
/// arrivals, cancels and expiry.
pub async fn news_repository(open: OpenNews<'_>) {
    let repo = open();
    assert!(repo.groups().await.unwrap().is_empty());
    assert!(repo.create_group("comp.test").await.unwrap());
    assert!(!repo.create_group("comp.test").await.unwrap());
    assert!(repo.create_group("alt.test").await.unwrap());
    for bad in ["../etc", "a..b", "", "Upper.Case", "a/b"] {
        assert!(
            matches!(
                repo.create_group(bad).await,
                Err(StoreError::InvalidName(..))
            ),
            "{bad}"
        );
    }
    let groups = repo.groups().await.unwrap();
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["alt.test", "comp.test"]
    );
    let empty = repo.group("comp.test").await.unwrap().unwrap();
    assert_eq!((empty.count, empty.low, empty.high), (0, 1, 0));
    assert!(empty.created <= SystemTime::now());

    // Posting and numbers.
    let posted = repo
        .post(&news_article("<1@t>", &["comp.test"], "one\r\n"))
        .await
        .unwrap();
    assert_eq!(posted, vec![("comp.test".to_string(), 1)]);
    // Posted by a login, which is kept with the article (who may cancel it).
    repo.post(&crate::NewArticle {
        poster: Some("ann@example.org".into()),
        ..news_article("<2@t>", &["comp.test"], "two\r\n.dot\r\n")
    })
    .await
    .unwrap();
    // A cross-post: one article, a number in each group (unknown groups skipped), Xref.
    let cross = repo
        .post(&news_article(
            "<3@t>",
            &["alt.test", "no.such", "comp.test"],
            "three\r\n",
        ))
        .await
        .unwrap();
    assert_eq!(
        cross,
        vec![("alt.test".to_string(), 1), ("comp.test".to_string(), 3)]
    );
    let a = repo.article("alt.test", 1).await.unwrap().unwrap();
    assert_eq!(a.message_id, "<3@t>");
    let text = String::from_utf8(a.octets.clone()).unwrap();
    assert!(text.contains("\r\nXref: "), "{text}");
    assert!(text.contains(" alt.test:1 comp.test:3\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nthree\r\n"), "{text}");
    assert_eq!(
        repo.article("comp.test", 3).await.unwrap().unwrap().octets,
        a.octets
    );
    // Duplicates and unknown groups store nothing.
    assert!(matches!(
        repo.post(&news_article("<1@t>", &["alt.test"], "again\r\n"))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        repo.post(&news_article("<9@t>", &["no.such"], "x\r\n"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(repo.group("alt.test").await.unwrap().unwrap().count, 1);

    // Lookups.
    assert_eq!(
        repo.locate("<3@t>").await.unwrap().unwrap(),
        vec![("alt.test".to_string(), 1), ("comp.test".to_string(), 3)]
    );
    assert!(repo.locate("<nope@t>").await.unwrap().is_none());
    let by_id = repo.article_by_id("<2@t>").await.unwrap().unwrap();
    assert!(by_id.octets.ends_with(b"two\r\n.dot\r\n"));
    assert_eq!(by_id.poster.as_deref(), Some("ann@example.org"));
    assert_eq!(
        repo.article("comp.test", 1).await.unwrap().unwrap().poster,
        None
    );
    assert!(repo.article("comp.test", 4).await.unwrap().is_none());
    assert!(repo.article("no.such", 1).await.unwrap().is_none());
    assert_eq!(repo.numbers("comp.test", 2, 100).await.unwrap(), [2, 3]);
    let over = repo.overview("comp.test", 1, 3).await.unwrap();
    assert_eq!(over.iter().map(|o| o.number).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(over[1].fields[0], "about <2@t>");
    assert_eq!(over[1].fields[1], "a@example.org");
    assert_eq!(over[1].message_id(), "<2@t>");
    assert_eq!(over[1].fields[6], "2");
    assert!(over[2].fields[7].ends_with("alt.test:1 comp.test:3"));
    assert!(repo.overview("comp.test", 5, 9).await.unwrap().is_empty());

    // Arrivals.
    let since = SystemTime::now() - Duration::from_secs(60);
    let arrived = repo.arrived_since(since).await.unwrap();
    let ids: Vec<&str> = arrived.iter().map(|a| a.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"<3@t>"));
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert!(repo.arrived_since(future).await.unwrap().is_empty());

    // A cancel removes the article from every group; its numbers are not given again.
    assert!(repo.remove_article("<3@t>").await.unwrap());
    assert!(!repo.remove_article("<3@t>").await.unwrap());
    assert!(repo.article("alt.test", 1).await.unwrap().is_none());
    let info = repo.group("comp.test").await.unwrap().unwrap();
    assert_eq!((info.count, info.low, info.high), (2, 1, 3));
    let alt = repo.group("alt.test").await.unwrap().unwrap();
    assert_eq!((alt.count, alt.low, alt.high), (0, 2, 1));
    drop(repo);

    // A restart keeps everything, and numbering goes on.
    let repo = open();
    let info = repo.group("comp.test").await.unwrap().unwrap();
    assert_eq!((info.count, info.low, info.high), (2, 1, 3));
    assert_eq!(repo.group("alt.test").await.unwrap().unwrap().high, 1);
    let by_id = repo.article_by_id("<2@t>").await.unwrap().unwrap();
    assert_eq!(by_id.poster.as_deref(), Some("ann@example.org"));
    let next = repo
        .post(&news_article(
            "<4@t>",
            &["comp.test", "alt.test"],
            "four\r\n",
        ))
        .await
        .unwrap();
    assert_eq!(
        next,
        vec![("comp.test".to_string(), 4), ("alt.test".to_string(), 2)]
    );
    assert!(matches!(
        repo.post(&news_article("<2@t>", &["comp.test"], "dup\r\n"))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));

    // Expiry by arrival time, then removing a group keeps cross-posts elsewhere.
    assert_eq!(repo.expire("comp.test", since).await.unwrap(), 0);
    assert_eq!(repo.expire("comp.test", future).await.unwrap(), 3);
    let info = repo.group("comp.test").await.unwrap().unwrap();
    assert_eq!((info.count, info.low, info.high), (0, 5, 4));
    assert!(repo.article_by_id("<1@t>").await.unwrap().is_none());
    assert!(repo.article_by_id("<4@t>").await.unwrap().is_some());
    assert!(repo.remove_group("alt.test").await.unwrap());
    assert!(!repo.remove_group("alt.test").await.unwrap());
    assert!(repo.locate("<4@t>").await.unwrap().is_none());
    drop(repo);
    let repo = open();
    assert_eq!(repo.groups().await.unwrap().len(), 1);
    let info = repo.group("comp.test").await.unwrap().unwrap();
    assert_eq!((info.count, info.high), (0, 4));
    assert_eq!(
        repo.post(&news_article("<5@t>", &["comp.test"], "five\r\n"))
            .await
            .unwrap(),
        vec![("comp.test".to_string(), 5)]
    );
}
