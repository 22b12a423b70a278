//! Repositories: where Mailroom keeps users, mails, the spool and news.
//!
//! Each kind of repository is a trait, so that the file, SQLite, PostgreSQL and DBFile backends
//! are interchangeable behind a `destinationURL`; [`conformance`] holds the test-suite every
//! backend runs.
//!
//! **The traits are async** (`async fn` through `async_trait`, so that they stay dyn-safe: the
//! server holds every repository as an `Arc<dyn ...>` chosen by URL at start-up). Callers
//! `.await` them from tokio tasks — the SMTP, POP3 and RemoteManager drivers — and never block a
//! runtime worker thread on a disk or a database:
//!
//! * a backend whose driver is async (sqlx) implements these traits directly;
//! * a backend whose I/O blocks (the file backend) implements the synchronous twins in
//!   [`blocking`] and is wrapped in [`Blocking`], which runs every call on tokio's blocking
//!   pool (`spawn_blocking`). Streams are adapted too: an incoming message's octets are
//!   buffered and written in 64 KiB steps on the pool, and a stored message is read through
//!   an `AsyncRead` that reads on the pool.
//!
//! The SpoolManager's workers are OS threads of their own (James's `<threads>`), not runtime
//! threads; they call these traits through a runtime handle's `block_on`, and since they may
//! block, [`Blocking`] runs their calls inline ([`may_block_on_this_thread`]).
//!
//! Durability is part of every contract here: when a call that writes returns `Ok`, the data
//! survives a crash (written, fsync'd, renamed or committed).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mailroom_mailet::{Envelope, Mail, Message};
use tokio::io::AsyncRead;

mod adapter;
pub mod admin;
pub mod blocking;
pub mod conformance;
pub mod db;
pub mod file;
pub mod mappings;
mod names;
pub mod news;
pub mod password;
mod users;
mod verified;

pub use adapter::{may_block_on_this_thread, Blocking, BlockingReader};
pub use mappings::MappingsRepository;
pub use names::{new_mail_name, validate_mail_name, validate_user_name};
pub use news::{Arrival, Article, GroupInfo, NewArticle, NewsRepository, Overview};
pub use users::User;
pub use verified::VerifiedLogins;

/// What can go wrong in a repository.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system or database failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A user or mail name that could escape the repository or is otherwise not allowed.
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// The named entry does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The named entry exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Stored data that cannot be read back.
    #[error("corrupt entry {0}: {1}")]
    Corrupt(String, String),
    /// The entry is locked by another holder (a mailbox open in another POP3 session).
    #[error("{0} is in use")]
    InUse(String),
    /// A spool lease that is no longer held: it expired and the mail was leased again, or the
    /// mail was removed. Nothing was changed.
    #[error("the lease of {0} was lost")]
    LeaseLost(String),
    /// A repository URL that names no repository this server may use.
    #[error("invalid repository URL {0}: {1}")]
    InvalidUrl(String, String),
}

impl StoreError {
    /// Whether the storage is out of space (a full file system, a quota, a full database):
    /// a temporary failure that SMTP answers with `452 4.3.1`.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ))
    }
}

/// The result of a repository call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A repository of mails (envelope + message) keyed by name: the error repository, the
/// `local-address-error` repository, anything `ToRepository` writes to.
#[async_trait]
pub trait MailRepository: Send + Sync {
    /// Stores the mail under its name, replacing any mail of that name. Durable on return.
    async fn store(&self, mail: &Mail) -> Result<()>;

    /// The mail called `name`.
    async fn retrieve(&self, name: &str) -> Result<Option<Mail>>;

    /// Removes the mail called `name`; returns whether it existed.
    async fn remove(&self, name: &str) -> Result<bool>;

    /// The names of every mail, oldest first.
    async fn list(&self) -> Result<Vec<String>>;

    /// Starts a new mail whose message is streamed in: write the message, then
    /// [`IncomingMessage::commit`] it with its envelope. Dropping it uncommitted discards it.
    async fn incoming(&self) -> Result<Box<dyn IncomingMessage>>;
}

/// A message being streamed into a repository (SMTP DATA, a fetched POP3 message).
#[async_trait]
pub trait IncomingMessage: Send {
    /// The name the mail will have.
    fn name(&self) -> &str;

    /// Appends octets of the message. A backend may buffer them until [`commit`].
    ///
    /// [`commit`]: IncomingMessage::commit
    async fn write(&mut self, octets: &[u8]) -> io::Result<()>;

    /// Makes the mail durable with `envelope` (whose name and size are set from this message).
    /// Only after this returns may a server acknowledge the mail.
    async fn commit(self: Box<Self>, envelope: Envelope) -> Result<()>;
}

/// How long a spool lease lasts unless renewed, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);

/// Proof of a spool lease: which mail, which lease of it, and until when.
///
/// Lease ids are unique across the spool's life, so a token from an earlier lease of the same
/// mail is told apart from the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseToken {
    name: String,
    id: u64,
    expires_at: SystemTime,
}

impl LeaseToken {
    /// A token, as a backend hands it out.
    pub fn new(name: impl Into<String>, id: u64, expires_at: SystemTime) -> Self {
        LeaseToken {
            name: name.into(),
            id,
            expires_at,
        }
    }

    /// The leased mail's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When the lease expires unless renewed; after that another worker may take the mail over.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// A mail handed out by [`SpoolRepository::lease`], with its lease.
#[derive(Debug)]
pub struct Leased {
    /// The mail as last stored.
    pub mail: Mail,
    /// What the worker hands back to change or end the lease.
    pub token: LeaseToken,
}

/// The spool: a mail repository from which the SpoolManager's workers lease mails one at a time.
///
/// A leased mail is handed to no other worker (and, on a shared database, no other node) until
/// the lease ends or expires; an expired lease is taken over by the next [`lease`] call, so a
/// worker that dies loses nothing. Every call that takes a token refuses a stale one with
/// [`StoreError::LeaseLost`], changing nothing. Leases do not survive a restart; the retry
/// schedule does: a mail [`requeue`]d for later is not leased before its time, also after a
/// restart. [`MailRepository::store`] of a spooled mail replaces it and makes it due at once
/// (a leased one stays leased).
///
/// [`lease`]: SpoolRepository::lease
/// [`requeue`]: SpoolRepository::requeue
#[async_trait]
pub trait SpoolRepository: MailRepository {
    /// Waits up to `wait` for a mail that is due and not leased (or whose lease expired),
    /// leases it and returns it.
    async fn lease(&self, wait: Duration) -> Result<Option<Leased>>;

    /// Extends a lease by the spool's lease duration from now; returns the new token.
    async fn renew(&self, token: &LeaseToken) -> Result<LeaseToken>;

    /// Stores a change of the leased mail (a processor hop: state, recipients, error message,
    /// attributes, headers), keeping the lease. Durable on return.
    async fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()>;

    /// Ends the lease; the mail is due again at once.
    async fn release(&self, token: LeaseToken) -> Result<()>;

    /// Ends the lease and stores `mail` with its next attempt time: it is not leased before
    /// `next_attempt_at`, also after a restart. Durable on return.
    async fn requeue(
        &self,
        token: LeaseToken,
        mail: &Mail,
        next_attempt_at: SystemTime,
    ) -> Result<()>;

    /// Removes the leased mail: its processing has ended.
    async fn complete(&self, token: LeaseToken) -> Result<()>;

    /// Removes the leased mail and makes its `deliveries` to `inbox` durable **in one
    /// transaction**, where the spool and the inbox share one (a database spool delivering to
    /// a database inbox of the same data source): a crash at any point leaves either the mail
    /// in the spool and none of its deliveries, or the deliveries and no mail. Returns
    /// `Ok(false)`, having done nothing, when this spool cannot for this inbox: the caller then
    /// syncs the deliveries ([`InboxRepository::sync`]) and completes as usual. On an error
    /// nothing is done, and the deliveries are spent (the mail is to be delivered again);
    /// a lease not held is [`StoreError::LeaseLost`].
    async fn complete_delivered(
        &self,
        _token: &LeaseToken,
        _inbox: &dyn InboxRepository,
        _deliveries: &[Delivery],
    ) -> Result<bool> {
        Ok(false)
    }

    /// When the mail called `name` was requeued for (`None`: no such mail, or due at once).
    async fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>>;

    /// Makes a waiting mail due at once (an administrator's flush): its next attempt is
    /// dropped, durably, and nothing else of it changes — no message is written again. Done
    /// atomically with respect to the workers: a mail that is leased (a worker holds it) or
    /// gone is left as it is, and `false` is returned; an unchanged mail could never come back
    /// after a worker completed it, as a retrieve-then-store could. Returns `true` when the
    /// mail is waiting and is now due (also when it was due already).
    async fn make_due(&self, name: &str) -> Result<bool>;

    /// Whether a message of `size` octets (as `MAIL FROM ... SIZE=` announces it) would find
    /// room now: fails with a [`StoreError::is_storage_full`] error when the spool's storage has not
    /// that much free beside its reserve, so that SMTP can answer `452 4.3.1` before the
    /// message is sent (RFC 1870 §6.1). A spool that cannot tell (its storage is on another
    /// machine) says yes; the message is still refused at its end if space runs out.
    async fn room_for(&self, _size: u64) -> Result<()> {
        Ok(())
    }
}

/// One delivery to an inbox, from [`InboxRepository::deliver`] until
/// [`InboxRepository::sync`] has made it durable. The number is the backend's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delivery(pub u64);

/// Users' inboxes: where `LocalDelivery` puts mail and POP3 reads it.
#[async_trait]
pub trait InboxRepository: Send + Sync {
    /// Appends a message to `user`'s inbox, with `trace_header` (Return-Path, Delivered-To)
    /// above its header section. The message is whole on return, and visible and durable once
    /// [`InboxRepository::sync`] of the returned delivery has returned `Ok`: the spool removes
    /// a delivered mail only after that, and syncs once for a batch of deliveries.
    async fn deliver(&self, user: &str, trace_header: &[u8], message: &Message)
        -> Result<Delivery>;

    /// [`InboxRepository::deliver`] of the delivery named `key` (the spool mail's name: the
    /// same for every attempt at that mail). A backend shared by several processes (the
    /// database) stores one message per `key`, user and trace header, so that a mail delivered
    /// again — its node died before removing it from the spool, or a removal failed — is not
    /// duplicated; others deliver as `deliver` does.
    async fn deliver_once(
        &self,
        _key: &str,
        user: &str,
        trace_header: &[u8],
        message: &Message,
    ) -> Result<Delivery> {
        self.deliver(user, trace_header, message).await
    }

    /// Makes `deliveries` durable: `Ok` only when every one of them is. A delivery that failed
    /// (its file could not be moved into place) fails the sync that names it, and only that
    /// one; it is not tried again by the repository: its mail is delivered again.
    async fn sync(&self, deliveries: &[Delivery]) -> Result<()>;

    /// Drops `deliveries` that will be neither synced nor committed (their mail failed and is
    /// delivered again from what is stored): a backend that holds deliveries until then
    /// ([`InboxRepository::deliver_once`] on a database) lets go of them at once rather than
    /// after an hour. The default has nothing held.
    fn forget(&self, _deliveries: &[Delivery]) {}

    /// Opens `user`'s inbox for a reader (a POP3 session): locks it exclusively — a second
    /// open fails with [`StoreError::InUse`] until the returned [`Mailbox`] is dropped, also
    /// across processes where the backend can — and takes a snapshot of its messages. Mail
    /// delivered while it is open is not in the snapshot; it shows in the next one. `user` is
    /// the canonical name [`UsersRepository::get`] returns, which is what delivery uses. A user
    /// without mail yet has an empty inbox.
    async fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>>;

    /// Stores `message` (whole, trace header included, as a [`Mailbox`] streamed it) in
    /// `user`'s inbox under the UIDL `uid`, unless a message with that UIDL is there already:
    /// what `mailroom store copy` uses so that a copied inbox keeps its UIDLs (POP3 clients that
    /// leave mail on the server fetch nothing twice) and a second copy adds nothing. Durable on
    /// return; returns whether it was stored. A backend that cannot keep a given UIDL refuses.
    async fn import(&self, user: &str, uid: &str, _message: &Message) -> Result<bool> {
        Err(StoreError::InvalidName(
            format!("{user}/{uid}"),
            "this inbox backend cannot import messages",
        ))
    }

    /// The repository itself, for a spool that commits deliveries together with its removal
    /// ([`SpoolRepository::complete_delivered`]) to find a backend it shares a transaction
    /// with; `None` (the default) for the others.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Where `user`'s mail is kept (a Maildir's path), for the log lines that say where a mail
    /// was delivered; `None` when the backend has nothing to show. Touches no storage.
    fn location(&self, _user: &str) -> Option<String> {
        None
    }

    /// The octets held in `user`'s inbox: the sum of its messages' sizes as POP3 counts them
    /// (what quota matchers compare). Takes no lock, so a POP3 session in progress does not
    /// stop it; the answer may already be old when it returns. A user without mail has 0.
    /// The default opens the mailbox for a moment (and so fails while it is open).
    async fn size(&self, user: &str) -> Result<u64> {
        let mailbox = self.open_mailbox(user).await?;
        Ok(mailbox.messages().iter().map(|m| m.size).sum())
    }
}

/// One message in a [`Mailbox`] snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxMessage {
    /// A name that never changes while the message exists, across sessions and restarts, and
    /// is never given to another message of the mailbox: 1 to 70 octets from `!` to `~`, as
    /// POP3's UIDL requires (RFC 1939 §7).
    pub uid: String,
    /// The exact size in octets of the message with every line ending as CRLF, as POP3 sends
    /// it (before dot-stuffing).
    pub size: u64,
}

/// A stored message being read.
pub type MessageStream = Box<dyn AsyncRead + Send + Unpin>;

/// A user's inbox opened by [`InboxRepository::open_mailbox`]; dropping it releases the lock
/// without changing anything.
#[async_trait]
pub trait Mailbox: Send {
    /// The messages of the snapshot, oldest first. Indexes into this slice name messages in
    /// the other methods.
    fn messages(&self) -> &[MailboxMessage];

    /// Streams message `index` as stored, never whole in memory. Lines may end in a bare LF
    /// (a Maildir written by another program); [`MailboxMessage::size`] counts each as CRLF.
    async fn open_message(&self, index: usize) -> Result<MessageStream>;

    /// Removes the messages at `indexes` (a message removed meanwhile by someone else is not
    /// an error). Durable on return: a POP3 server answers QUIT only after this. Fails with
    /// [`StoreError::InUse`], removing nothing, when the mailbox's lock was lost meanwhile
    /// (a database's, with its connection) and another session may have the mailbox.
    async fn delete(&mut self, indexes: &[usize]) -> Result<()>;
}

/// The users repository: accounts, password hashes, aliases and forwards.
#[async_trait]
pub trait UsersRepository: Send + Sync {
    /// Adds a new user; fails with [`StoreError::AlreadyExists`] if the name is taken.
    async fn add(&self, user: &User) -> Result<()>;

    /// The user called `name`. Names are case-insensitive: `Bob` finds `bob`.
    async fn get(&self, name: &str) -> Result<Option<User>>;

    /// Replaces an existing user's record; fails with [`StoreError::NotFound`] otherwise.
    async fn update(&self, user: &User) -> Result<()>;

    /// Removes a user; returns whether it existed.
    async fn remove(&self, name: &str) -> Result<bool>;

    /// Every user name, sorted.
    async fn list(&self) -> Result<Vec<String>>;

    /// How many users there are.
    async fn count(&self) -> Result<usize>;

    /// Replaces a user's password hash if it is still `old`, so that an upgrade computed from a
    /// password (argon2 takes tens of milliseconds) never undoes a change an administrator made
    /// meanwhile. Returns whether it was replaced.
    async fn replace_password_hash(&self, name: &str, old: &str, new: String) -> Result<bool>;

    /// Checks a password. A hash in an older scheme (James's SHA-1) that matches is upgraded to
    /// argon2id on the way. The hash is checked on the blocking pool (argon2 is slow on
    /// purpose).
    async fn verify_password(&self, name: &str, password: &str) -> Result<bool> {
        let user = self.get(name).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_string();
        let (verified, password) = password::in_pool(move || {
            // Without a user, spend the time a real check takes so that timing does not
            // reveal user names.
            let hash = stored.as_deref().unwrap_or(password::DUMMY_HASH);
            (password::verify(hash, &password), password)
        })
        .await?;
        match (user, verified) {
            (None, _) | (_, password::Verified::No) => Ok(false),
            (Some(_), password::Verified::Yes) => Ok(true),
            (Some(user), password::Verified::YesButUpgrade) => {
                let new = password::in_pool(move || password::hash(&password)).await?;
                self.replace_password_hash(name, &user.password_hash, new)
                    .await?;
                Ok(true)
            }
        }
    }
}

/// Runs CPU-heavy or blocking work on tokio's blocking pool.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(format!("blocking task failed: {e}"))))
}
