//! The synchronous face of the repositories, for backends whose I/O blocks (the file backend).
//!
//! Callers never use these traits directly: a backend written against them is served to the
//! rest of the server through [`crate::Blocking`], which implements the async traits of the
//! crate root by running each call on tokio's blocking pool (`spawn_blocking`), so that no
//! runtime worker thread ever waits for a disk. A backend whose driver is async (sqlx) implements
//! the async traits directly instead.
//!
//! The contracts are those of the async traits of the same names; durability included: when a
//! call that writes returns `Ok`, the data survives a crash.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, Mail, Message};

use crate::mappings::{Source, Target};
use crate::news::{Arrival, Article, GroupInfo, NewArticle, Overview};
use crate::{Delivery, LeaseToken, Leased, MailboxMessage, Result, User};

/// See [`crate::MailRepository`].
pub trait MailRepository: Send + Sync {
    /// See [`crate::MailRepository::store`].
    fn store(&self, mail: &Mail) -> Result<()>;
    /// See [`crate::MailRepository::retrieve`].
    fn retrieve(&self, name: &str) -> Result<Option<Mail>>;
    /// See [`crate::MailRepository::remove`].
    fn remove(&self, name: &str) -> Result<bool>;
    /// See [`crate::MailRepository::list`].
    fn list(&self) -> Result<Vec<String>>;
    /// See [`crate::MailRepository::incoming`]. Must return at once, doing no I/O (create
    /// files at the first write): it is called on the async caller's thread, which saves a
    /// hop to the blocking pool per received mail.
    fn incoming(&self) -> Result<Box<dyn IncomingMessage>>;
}

/// A message being streamed into a repository; see [`crate::IncomingMessage`].
pub trait IncomingMessage: Write + Send {
    /// The name the mail will have.
    fn name(&self) -> &str;
    /// Makes the mail durable with `envelope` (whose name and size are set from this message).
    fn commit(self: Box<Self>, envelope: Envelope) -> Result<()>;
}

/// See [`crate::SpoolRepository`].
pub trait SpoolRepository: MailRepository {
    /// See [`crate::SpoolRepository::lease`].
    fn lease(&self, wait: Duration) -> Result<Option<Leased>>;
    /// See [`crate::SpoolRepository::renew`].
    fn renew(&self, token: &LeaseToken) -> Result<LeaseToken>;
    /// See [`crate::SpoolRepository::update`].
    fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()>;
    /// See [`crate::SpoolRepository::release`].
    fn release(&self, token: LeaseToken) -> Result<()>;
    /// See [`crate::SpoolRepository::requeue`].
    fn requeue(&self, token: LeaseToken, mail: &Mail, next_attempt_at: SystemTime) -> Result<()>;
    /// See [`crate::SpoolRepository::complete`].
    fn complete(&self, token: LeaseToken) -> Result<()>;
    /// See [`crate::SpoolRepository::next_attempt`].
    fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>>;
    /// See [`crate::SpoolRepository::make_due`].
    fn make_due(&self, name: &str) -> Result<bool>;
    /// See [`crate::SpoolRepository::room_for`]. Called on the async caller's thread, as
    /// `incoming` is: nothing slower than a `statvfs`.
    fn room_for(&self, _size: u64) -> Result<()> {
        Ok(())
    }
}

/// See [`crate::InboxRepository`].
pub trait InboxRepository: Send + Sync {
    /// See [`crate::InboxRepository::deliver`].
    fn deliver(&self, user: &str, trace_header: &[u8], message: &Message) -> Result<Delivery>;
    /// See [`crate::InboxRepository::sync`].
    fn sync(&self, deliveries: &[Delivery]) -> Result<()>;
    /// See [`crate::InboxRepository::open_mailbox`].
    fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>>;
    /// See [`crate::InboxRepository::import`].
    fn import(&self, user: &str, uid: &str, message: &Message) -> Result<bool>;
    /// See [`crate::InboxRepository::location`].
    fn location(&self, _user: &str) -> Option<String> {
        None
    }
    /// See [`crate::InboxRepository::size`].
    fn size(&self, user: &str) -> Result<u64> {
        let mailbox = self.open_mailbox(user)?;
        Ok(mailbox.messages().iter().map(|m| m.size).sum())
    }
}

/// See [`crate::Mailbox`].
pub trait Mailbox: Send {
    /// See [`crate::Mailbox::messages`].
    fn messages(&self) -> &[MailboxMessage];
    /// Streams message `index` as stored; see [`crate::Mailbox::open_message`].
    fn open_message(&self, index: usize) -> Result<Box<dyn Read + Send>>;
    /// See [`crate::Mailbox::delete`].
    fn delete(&mut self, indexes: &[usize]) -> Result<()>;
}

/// See [`crate::UsersRepository`].
pub trait UsersRepository: Send + Sync {
    /// See [`crate::UsersRepository::add`].
    fn add(&self, user: &User) -> Result<()>;
    /// See [`crate::UsersRepository::get`].
    fn get(&self, name: &str) -> Result<Option<User>>;
    /// See [`crate::UsersRepository::update`].
    fn update(&self, user: &User) -> Result<()>;
    /// See [`crate::UsersRepository::remove`].
    fn remove(&self, name: &str) -> Result<bool>;
    /// See [`crate::UsersRepository::list`].
    fn list(&self) -> Result<Vec<String>>;
    /// See [`crate::UsersRepository::count`].
    fn count(&self) -> Result<usize> {
        Ok(self.list()?.len())
    }
    /// See [`crate::UsersRepository::replace_password_hash`]. The default reads and writes
    /// the record; a backend that can do it atomically overrides it.
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
}

/// See [`crate::MappingsRepository`].
pub trait MappingsRepository: Send + Sync {
    /// See [`crate::MappingsRepository::add`].
    fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool>;
    /// See [`crate::MappingsRepository::remove`].
    fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool>;
    /// See [`crate::MappingsRepository::get`].
    fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>>;
    /// See [`crate::MappingsRepository::all`].
    fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>>;
}

/// See [`crate::NewsRepository`].
pub trait NewsRepository: Send + Sync {
    /// See [`crate::NewsRepository::groups`].
    fn groups(&self) -> Result<Vec<GroupInfo>>;
    /// See [`crate::NewsRepository::group`].
    fn group(&self, name: &str) -> Result<Option<GroupInfo>>;
    /// See [`crate::NewsRepository::create_group`].
    fn create_group(&self, name: &str) -> Result<bool>;
    /// See [`crate::NewsRepository::remove_group`].
    fn remove_group(&self, name: &str) -> Result<bool>;
    /// See [`crate::NewsRepository::post`].
    fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>>;
    /// See [`crate::NewsRepository::article`].
    fn article(&self, group: &str, number: u64) -> Result<Option<Article>>;
    /// See [`crate::NewsRepository::article_by_id`].
    fn article_by_id(&self, message_id: &str) -> Result<Option<Article>>;
    /// See [`crate::NewsRepository::locate`].
    fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>>;
    /// See [`crate::NewsRepository::numbers`].
    fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>>;
    /// See [`crate::NewsRepository::overview`].
    fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>>;
    /// See [`crate::NewsRepository::arrived_since`].
    fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>>;
    /// See [`crate::NewsRepository::remove_article`].
    fn remove_article(&self, message_id: &str) -> Result<bool>;
    /// See [`crate::NewsRepository::expire`].
    fn expire(&self, group: &str, before: SystemTime) -> Result<u64>;
}
