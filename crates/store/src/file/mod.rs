//! The file backend: everything under a directory, nothing to install.
//!
//! * [`FileMailRepository`]: one directory of mails, one file `<name>.mail` each: the message
//!   followed by checksummed envelope records, the last of which is in force.
//! * [`LogSpool`]: the spool, as segments of appended records with group commit.
//! * [`Maildir`]: one Maildir per user (`<root>/<user>/{tmp,new,cur}`), readable by Dovecot,
//!   mutt and friends.
//! * [`FileUsersRepository`]: one JSON file per user.
//! * [`FileMappingsRepository`]: one JSON file per virtual user table.
//! * [`FileNewsRepository`]: one directory per newsgroup, with overview and message-id indexes.
//!
//! Every write goes to a temporary file, is fsync'd, renamed into place, and the directory is
//! fsync'd, so that a crash leaves either the old or the new version.

pub(crate) mod fsutil;
mod group_commit;
#[cfg(test)]
mod group_commit_model;
#[cfg(test)]
mod group_commit_tests;
mod log_spool;
mod mail;
mod maildir;
mod mappings;
mod news;
mod users;

/// The locks group commit is built on: std's (its loom model has its own `sync`).
mod sync {
    pub(super) use std::sync::{Condvar, Mutex, MutexGuard};
}

pub use log_spool::{LogSpool, Snapshot, SpooledMail};
pub use mail::FileMailRepository;
pub use maildir::{file_name_fields, Maildir};
pub use mappings::FileMappingsRepository;
pub use news::{FileNews, FileNewsRepository};
pub use users::FileUsersRepository;
