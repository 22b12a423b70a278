//! Repositories: where Mailroom keeps users, mails, the spool and news.
//!
//! Each kind of repository is a trait, so that the file, SQLite, PostgreSQL and DBFile backends
//! are interchangeable behind a `destinationURL`; [`conformance`] holds the test-suite every
//! backend runs. The traits are synchronous: the SpoolManager's workers are threads, and the
//! network servers call them from blocking tasks.
//!
//! Durability is part of every contract here: when a call that writes returns `Ok`, the data
//! survives a crash (written, fsync'd, renamed or committed).
#![deny(missing_docs)]

use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, Mail, Message};

pub mod conformance;
pub mod file;
pub mod mappings;
mod names;
mod news;
pub mod password;
mod users;
mod verified;

pub use mappings::MappingsRepository;
pub use names::{new_mail_name, validate_mail_name, validate_user_name};
pub use news::{GroupInfo, NewsRepository, Overview};
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
}

/// The result of a repository call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A repository of mails (envelope + message) keyed by name: the error repository, the
/// `local-address-error` repository, anything `ToRepository` writes to.
pub trait MailRepository: Send + Sync {
    /// Stores the mail under its name, replacing any mail of that name. Durable on return.
    fn store(&self, mail: &Mail) -> Result<()>;

    /// The mail called `name`.
    fn retrieve(&self, name: &str) -> Result<Option<Mail>>;

    /// Removes the mail called `name`; returns whether it existed.
    fn remove(&self, name: &str) -> Result<bool>;

    /// The names of every mail, oldest first.
    fn list(&self) -> Result<Vec<String>>;

    /// Starts a new mail whose message is streamed in: write the message, then
    /// [`IncomingMessage::commit`] it with its envelope. Dropping it uncommitted discards it.
    fn incoming(&self) -> Result<Box<dyn IncomingMessage>>;
}

/// A message being streamed into a repository (SMTP DATA, a fetched POP3 message).
pub trait IncomingMessage: Write + Send {
    /// The name the mail will have.
    fn name(&self) -> &str;

    /// Makes the mail durable with `envelope` (whose name and size are set from this message).
    /// Only after this returns may a server acknowledge the mail.
    fn commit(self: Box<Self>, envelope: Envelope) -> Result<()>;
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
pub trait SpoolRepository: MailRepository {
    /// Waits up to `wait` for a mail that is due and not leased (or whose lease expired),
    /// leases it and returns it.
    fn lease(&self, wait: Duration) -> Result<Option<Leased>>;

    /// Extends a lease by the spool's lease duration from now; returns the new token.
    fn renew(&self, token: &LeaseToken) -> Result<LeaseToken>;

    /// Stores a change of the leased mail (a processor hop: state, recipients, error message,
    /// attributes, headers), keeping the lease. Durable on return.
    fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()>;

    /// Ends the lease; the mail is due again at once.
    fn release(&self, token: LeaseToken) -> Result<()>;

    /// Ends the lease and stores `mail` with its next attempt time: it is not leased before
    /// `next_attempt_at`, also after a restart. Durable on return.
    fn requeue(&self, token: LeaseToken, mail: &Mail, next_attempt_at: SystemTime) -> Result<()>;

    /// Removes the leased mail: its processing has ended.
    fn complete(&self, token: LeaseToken) -> Result<()>;

    /// When the mail called `name` was requeued for (`None`: no such mail, or due at once).
    fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>>;
}

/// Users' inboxes: where `LocalDelivery` puts mail and POP3 reads it.
pub trait InboxRepository: Send + Sync {
    /// Appends a message to `user`'s inbox, with `trace_header` (Return-Path, Delivered-To)
    /// above its header section. The message is whole and visible on return, and durable once
    /// [`InboxRepository::sync`] has returned: the spool removes a delivered mail only after
    /// that, and syncs once for a batch of deliveries.
    fn deliver(&self, user: &str, trace_header: &[u8], message: &Message) -> Result<()>;

    /// Makes every delivery that returned before this call durable.
    fn sync(&self) -> Result<()>;

    /// Opens `user`'s inbox for a reader (a POP3 session): locks it exclusively — a second
    /// open fails with [`StoreError::InUse`] until the returned [`Mailbox`] is dropped, also
    /// across processes where the backend can — and takes a snapshot of its messages. Mail
    /// delivered while it is open is not in the snapshot; it shows in the next one. `user` is
    /// the canonical name [`UsersRepository::get`] returns, which is what delivery uses. A user
    /// without mail yet has an empty inbox.
    fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>>;
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

/// A user's inbox opened by [`InboxRepository::open_mailbox`]; dropping it releases the lock
/// without changing anything.
pub trait Mailbox: Send {
    /// The messages of the snapshot, oldest first. Indexes into this slice name messages in
    /// the other methods.
    fn messages(&self) -> &[MailboxMessage];

    /// Streams message `index` as stored, never whole in memory. Lines may end in a bare LF
    /// (a Maildir written by another program); [`MailboxMessage::size`] counts each as CRLF.
    fn open_message(&self, index: usize) -> Result<Box<dyn Read + Send>>;

    /// Removes the messages at `indexes` (a message removed meanwhile by someone else is not
    /// an error). Durable on return: a POP3 server answers QUIT only after this.
    fn delete(&mut self, indexes: &[usize]) -> Result<()>;
}

/// The users repository: accounts, password hashes, aliases and forwards.
pub trait UsersRepository: Send + Sync {
    /// Adds a new user; fails with [`StoreError::AlreadyExists`] if the name is taken.
    fn add(&self, user: &User) -> Result<()>;

    /// The user called `name`. Names are case-insensitive: `Bob` finds `bob`.
    fn get(&self, name: &str) -> Result<Option<User>>;

    /// Replaces an existing user's record; fails with [`StoreError::NotFound`] otherwise.
    fn update(&self, user: &User) -> Result<()>;

    /// Removes a user; returns whether it existed.
    fn remove(&self, name: &str) -> Result<bool>;

    /// Every user name, sorted.
    fn list(&self) -> Result<Vec<String>>;

    /// How many users there are.
    fn count(&self) -> Result<usize> {
        Ok(self.list()?.len())
    }

    /// Replaces a user's password hash if it is still `old`, so that an upgrade computed from a
    /// password (argon2 takes tens of milliseconds) never undoes a change an administrator made
    /// meanwhile. Returns whether it was replaced.
    fn replace_password_hash(&self, name: &str, old: &str, new: String) -> Result<bool> {
        let Some(mut user) = self.get(name)? else {
            return Ok(false);
        };
        if user.password_hash != old {
            return Ok(false);
        }
        user.password_hash = new;
        self.update(&user)?;
        Ok(true)
    }

    /// Checks a password. A hash in an older scheme (James's SHA-1) that matches is upgraded to
    /// argon2id on the way.
    fn verify_password(&self, name: &str, password: &str) -> Result<bool> {
        let Some(user) = self.get(name)? else {
            // Spend the time a real check takes so that timing does not reveal user names.
            password::verify(password::DUMMY_HASH, password);
            return Ok(false);
        };
        match password::verify(&user.password_hash, password) {
            password::Verified::No => Ok(false),
            password::Verified::Yes => Ok(true),
            password::Verified::YesButUpgrade => {
                self.replace_password_hash(name, &user.password_hash, password::hash(password))?;
                Ok(true)
            }
        }
    }
}
