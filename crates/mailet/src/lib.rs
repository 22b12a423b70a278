//! The mailet API: what a matcher or mailet sees of a mail and of the server.
//!
//! This crate is small, documented and stable so that a user crate can depend on it alone to
//! write its own matchers and mailets. It performs no I/O: message bodies are read through the
//! [`BodySource`] trait that the storage layer implements, and everything a mailet may ask of the
//! server goes through [`MailetContext`].
//!
//! A mail flows through the processor tree of the SpoolManager. A [`Matcher`] picks the
//! recipients a [`Mailet`] applies to; the mailet then acts on the [`Mail`] and may change its
//! [`Mail::state`] to move it to another processor, or to [`state::GHOST`] to end its
//! processing. A mailet that makes a new mail (a bounce, a forward) names it with
//! [`new_mail_name`] and hands it to [`MailetContext::send_mail`].
//!
//! # Threads, and why the traits are synchronous
//!
//! The SpoolManager runs matchers and mailets on its own worker threads (`<threads>` of
//! `<spoolmanager>`), which are plain OS threads, not threads of the server's async runtime. So
//! [`Matcher::matches`] and [`Mailet::service`] are ordinary functions that may block. What is
//! asynchronous inside the server (DNS lookups, the store) is reached through the synchronous
//! methods of [`MailetContext`]: the server's context waits for the answer on the worker thread
//! (it holds a handle to the runtime and calls `block_on`, which is allowed precisely because a
//! worker is not a runtime thread). A mailet must therefore not start an async runtime of its own
//! to call the context from inside it.
//!
//! # Errors
//!
//! A [`MailetError`] is [temporary](ErrorKind::Temporary) or [permanent](ErrorKind::Permanent).
//! A temporary error (any I/O error, a DNS timeout, a remote server that is away) leaves the
//! mail in the spool to be tried again later; a permanent one is handled as the mailet's
//! `onMailetException` (or the matcher's `onMatchException`) says, by default by moving the mail
//! to the `error` processor.
//!
//! # Writing a mailet
//!
//! ```
//! use mailroom_mailet::{Mail, Mailet, MailetConfig, MailetContext, MailetError};
//!
//! /// Sends the mail to `processor` when its sender's domain has no mail exchanger.
//! struct NoMxSender {
//!     processor: String,
//! }
//!
//! impl NoMxSender {
//!     fn new(config: &MailetConfig) -> Result<Self, MailetError> {
//!         Ok(NoMxSender { processor: config.required("processor")?.to_string() })
//!     }
//! }
//!
//! impl Mailet for NoMxSender {
//!     fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
//!         let Some(sender) = mail.sender() else { return Ok(()) };
//!         match ctx.dns_mx(sender.domain()) {
//!             Ok(_) => Ok(()),
//!             Err(e) if e.is_not_found() => {
//!                 mail.set_state(&self.processor);
//!                 Ok(())
//!             }
//!             // A timeout: keep the mail and try again later.
//!             Err(e) => Err(e.into()),
//!         }
//!     }
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod address;
mod attribute;
mod component;
pub mod dns;
mod error;
mod mail;
mod message;
mod name;
pub mod outcome;
pub mod state;

pub use address::{check_domain, AddressError, MailAddress, MAX_DOMAIN, MAX_LOCAL_PART};
pub use attribute::AttributeValue;
pub use component::{Mailet, MailetConfig, MailetContext, Matcher, MatcherConfig, UserRecord};
pub use dns::{DnsError, MxRecord};
pub use error::{ErrorKind, MailetError};
pub use mail::{Envelope, Mail, ATTR_DELIVERY_KEY};
pub use message::{
    header_section_len, BodySource, MemoryBody, Message, MessageReader, MAX_HEADER_SECTION,
};
pub use name::{derived_mail_name, is_valid_mail_name, new_mail_name, MAX_MAIL_NAME};

/// The mail attribute holding the user name a client authenticated as with SMTP AUTH (a
/// string), under James's name so that James matchers and configurations keep working.
pub const ATTR_SMTP_AUTH_USER: &str = "org.apache.james.SMTPAuthUser";

/// The mail attribute FetchMail sets on each mail it spools: the name of the task that fetched
/// it (a string), under James's name. Unlike the `X-fetched-from` field written beside it,
/// no sender can set it.
pub const ATTR_FETCHMAIL_TASK: &str = "org.apache.james.fetchmail.taskName";
