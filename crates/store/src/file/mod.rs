//! The file backend: everything under a directory, nothing to install.
//!
//! * [`FileMailRepository`]: one directory of mails, each a message file `<name>.eml` and an
//!   envelope file `<name>.env` (JSON). The envelope is written last, so a mail exists exactly
//!   when its envelope does.
//! * [`FileSpool`]: a mail repository plus the in-process locks and wake-ups of a spool.
//! * [`Maildir`]: one Maildir per user (`<root>/<user>/{tmp,new,cur}`), readable by Dovecot,
//!   mutt and friends.
//! * [`FileUsersRepository`]: one JSON file per user.
//!
//! Every write goes to a temporary file, is fsync'd, renamed into place, and the directory is
//! fsync'd, so that a crash leaves either the old or the new version.

mod fsutil;
mod mail;
mod maildir;
mod spool;
mod users;

pub use mail::FileMailRepository;
pub use maildir::Maildir;
pub use spool::FileSpool;
pub use users::FileUsersRepository;
