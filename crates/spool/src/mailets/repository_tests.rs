//! FromRepository and ToMultiRepository against the file backends.
use std::sync::Arc;

use mailroom_store::file::{FileMailRepository, Maildir};
use mailroom_store::Blocking;

use super::super::testing::{mail, Recorder};
use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    repo: Arc<dyn MailRepository>,
    inboxes: std::path::PathBuf,
    services: Arc<StoreServices>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let repo: Arc<dyn MailRepository> = Arc::new(Blocking::new(
        FileMailRepository::open(&dir.path().join("error")).unwrap(),
    ));
    let inboxes = dir.path().join("inboxes2");
    let services = StoreServices::new(Some(runtime.handle().clone()));
    let r = repo.clone();
    let root = inboxes.clone();
    services.open(
        Box::new(move |url| {
            assert_eq!(url, "file://var/mail/error/");
            Ok(r.clone())
        }),
        Box::new(move |url| {
            assert_eq!(url, "file://var/mail/inboxes2/");
            Ok(Arc::new(Blocking::new(Maildir::open(&root)?)) as Arc<dyn InboxRepository>)
        }),
    );
    Fixture {
        _dir: dir,
        runtime,
        repo,
        inboxes,
        services,
    }
}

fn build(f: &Fixture, name: &str, params: &[(&str, &str)]) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::new();
    register(&mut registry, &f.services);
    registry.mailet(name).unwrap()(&super::super::testing::config(name, params))
}

const MSG: &[u8] = b"Subject: stored\r\n\r\nbody\r\n";

#[test]
fn from_repository_respools_at_the_processor_and_deletes_when_asked() {
    let f = fixture();
    let ctx = Recorder::new();
    let stored = mail(Some("a@example.net"), &["b@example.org"], MSG);
    let empty = mail(Some("a@example.net"), &[], MSG);
    f.runtime.block_on(f.repo.store(&stored)).unwrap();
    f.runtime.block_on(f.repo.store(&empty)).unwrap();
    let keep = build(
        &f,
        "FromRepository",
        &[
            ("repositoryPath", "file://var/mail/error/"),
            ("processor", "transport"),
        ],
    )
    .unwrap();
    let mut trigger = mail(Some("admin@example.org"), &["respool@example.org"], MSG);
    keep.service(&mut trigger, &ctx).unwrap();
    assert_eq!(trigger.state(), state::GHOST);
    let sent = ctx.sent();
    assert_eq!(sent.len(), 1, "the mail without recipients stays");
    assert_eq!(sent[0].state(), "transport");
    assert_eq!(
        sent[0].attribute("FromRepository"),
        Some(&AttributeValue::Bool(true))
    );
    assert_eq!(sent[0].message.to_bytes().unwrap(), MSG);
    assert_ne!(sent[0].name(), stored.name());
    assert_eq!(f.runtime.block_on(f.repo.list()).unwrap().len(), 2);

    let delete = build(
        &f,
        "FromRepository",
        &[
            ("repositoryPath", "file://var/mail/error/"),
            ("delete", "true"),
        ],
    )
    .unwrap();
    delete.service(&mut trigger, &ctx).unwrap();
    assert_eq!(ctx.sent()[1].state(), state::ROOT);
    assert_eq!(
        f.runtime.block_on(f.repo.list()).unwrap(),
        vec![empty.name().to_string()]
    );

    for bad in [
        vec![],
        vec![("repositoryPath", "ftp://x/")],
        vec![
            ("repositoryPath", "file://var/mail/error/"),
            ("delete", "maybe"),
        ],
        vec![
            ("repositoryPath", "file://var/mail/error/"),
            ("processor", "ghost"),
        ],
    ] {
        assert!(build(&f, "FromRepository", &bad).is_err(), "{bad:?}");
    }
}

#[test]
fn to_multi_repository_delivers_each_recipient_into_the_named_inbox_root() {
    let f = fixture();
    let ctx = Recorder::new();
    let mailet = build(
        &f,
        "ToMultiRepository",
        &[
            ("repositoryUrl", "file://var/mail/inboxes2/"),
            ("addDeliveryHeader", "Delivered-To"),
            ("resetReturnPath", "true"),
        ],
    )
    .unwrap();
    let mut m = mail(
        Some("a@example.net"),
        &[
            "bob@example.org",
            "\"../evil\"@example.org",
            "carol@example.org",
        ],
        MSG,
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    for (user, rcpt) in [("bob", "bob@example.org"), ("carol", "carol@example.org")] {
        let new = f.inboxes.join(user).join("new");
        let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
        assert_eq!(files.len(), 1, "{user}");
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        // Maildir keeps LF line ends.
        let text = text.replace("\r\n", "\n");
        let want = format!("Delivered-To: {rcpt}\nReturn-Path: <a@example.net>\nSubject: stored\n");
        assert!(text.starts_with(&want), "{text}");
    }
    // The recipient whose mailbox name is refused goes to `error` as a new mail.
    let sent = ctx.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state(), state::ERROR);
    assert_eq!(
        sent[0].recipients()[0].to_string(),
        "\"../evil\"@example.org"
    );
    assert!(
        ctx.log()
            .iter()
            .filter(|l| l.contains("status=delivered"))
            .count()
            == 2
    );

    for bad in [
        vec![("repositoryUrl", "nowhere")],
        vec![("repositoryType", "SPOOL")],
        vec![("addDeliveryHeader", "Bad Name:")],
        vec![("resetReturnPath", "sometimes")],
    ] {
        assert!(build(&f, "ToMultiRepository", &bad).is_err(), "{bad:?}");
    }
}

#[test]
fn unopened_services_are_a_temporary_error() {
    let services = StoreServices::new(None);
    let mut registry = Registry::new();
    register(&mut registry, &services);
    let mailet = registry.mailet("FromRepository").unwrap()(&super::super::testing::config(
        "FromRepository",
        &[("repositoryPath", "file://var/mail/error/")],
    ))
    .unwrap();
    let ctx = Recorder::new();
    let mut m = mail(Some("a@example.net"), &["b@example.org"], MSG);
    assert!(mailet.service(&mut m, &ctx).unwrap_err().is_temporary());
}

/// Delivers into a recorded list of inboxes; `carol`'s is away (a temporary fault).
struct FlakyInboxes {
    inner: Recorder,
    delivered: std::sync::Mutex<Vec<String>>,
}

impl MailetContext for FlakyInboxes {
    fn is_local_server(&self, domain: &str) -> bool {
        self.inner.is_local_server(domain)
    }
    fn local_user(&self, name: &str) -> Result<Option<mailroom_mailet::UserRecord>, MailetError> {
        self.inner.local_user(name)
    }
    fn server_name(&self) -> &str {
        self.inner.server_name()
    }
    fn postmaster(&self) -> &MailAddress {
        self.inner.postmaster()
    }
    fn send_mail(&self, mail: Mail) -> Result<(), MailetError> {
        self.inner.send_mail(mail)
    }
    fn store_mail(&self, url: &str, mail: &Mail) -> Result<(), MailetError> {
        self.inner.store_mail(url, mail)
    }
    fn deliver_to_inbox(&self, user: &str, _: &[u8], _: &Mail) -> Result<(), MailetError> {
        match user {
            "carol" => Err(MailetError::temporary("inbox of carol: disk full")),
            "dave" => Err(MailetError::permanent("no such mailbox")),
            _ => {
                self.delivered.lock().unwrap().push(user.to_string());
                Ok(())
            }
        }
    }
    fn log(&self, message: &str) {
        MailetContext::log(&self.inner, message)
    }
}

#[test]
fn to_multi_repository_keeps_temporarily_failed_recipients_in_the_spool() {
    let f = fixture();
    let ctx = FlakyInboxes {
        inner: Recorder::new(),
        delivered: Default::default(),
    };
    let mailet = build(&f, "ToMultiRepository", &[]).unwrap();
    let mut m = mail(
        Some("a@example.net"),
        &[
            "bob@mx.example.org",
            "carol@mx.example.org",
            "dave@mx.example.org",
        ],
        MSG,
    );
    // carol's fault is temporary: the mail stays in the spool for her alone (bob has his
    // copy; dave's permanent failure goes to `error`), rather than carol going to `error`.
    let err = mailet.service(&mut m, &ctx).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(m.recipients().len(), 1);
    assert_eq!(m.recipients()[0].to_string(), "carol@mx.example.org");
    assert_ne!(m.state(), state::GHOST);
    assert_eq!(*ctx.delivered.lock().unwrap(), ["bob"]);
    let sent = ctx.inner.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state(), state::ERROR);
    assert_eq!(sent[0].recipients()[0].to_string(), "dave@mx.example.org");
}
