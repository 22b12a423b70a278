//! The NNTP server of Mailroom: RFC 3977 for readers and for transit (IHAVE), AUTHINFO
//! USER/PASS (RFC 4643), STARTTLS (RFC 4642) and implicit TLS (NNTPS), wildmats, and the
//! legacy commands readers still send (XOVER, XHDR, XPAT, LIST EXTENSIONS, SLAVE, MODE STREAM),
//! over any [`mailroom_store::NewsRepository`].
//!
//! The layers, bottom up, each in its own module:
//!
//! * [`codec`]: bytes → bounded command lines → typed [`codec::Command`]s; [`wildmat`] and
//!   [`time`] parse what the arguments carry;
//! * [`reply`]: status lines and dot-stuffed multi-line blocks; `answers` formats each
//!   multi-line answer;
//! * [`article`]: what POST and IHAVE check and add (required headers, Message-ID, Date, Path,
//!   Lines, cancel control messages);
//! * [`session`]: the state machine. It owns no socket, no store and reads the time only
//!   through [`NntpSettings::clock`]: the driver feeds it bytes, it appends replies, and it
//!   returns an [`Outcome`] when it needs the repository or a login checked;
//! * [`server`]: the tokio driver on [`mailroom_net::Connection`]: banner, read loop,
//!   timeouts, shutdown (`400`), TLS (the NNTPS handshake, STARTTLS's upgrade), repository
//!   calls, password checks and the failed-login throttle.
//!
//! The caller (the `mailroom` binary) builds an [`NntpSettings`] from an `<nntpserver>` block,
//! binds a [`mailroom_net::Listener`] and runs [`server::serve`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailroom_net::throttle::AuthThrottle;
use mailroom_net::tls::ListenerTls;

mod answers;
pub mod article;
pub mod codec;
pub mod expire;
pub mod gateway;
mod query;
pub mod reply;
pub mod server;
pub mod session;
pub mod time;
pub mod wildmat;

pub use answers::header_value;
pub use server::{serve, NntpStore};
pub use session::{Answer, Outcome, PostFailure, Query, Session};

/// The settings of one NNTP listener, built from an `<nntpserver>` block and the
/// `<nntp-repository>`.
#[derive(Clone, Debug)]
pub struct NntpSettings {
    /// The server's name in the banner and in `Path:` (`<helloName>`).
    pub hello_name: String,
    /// The right-hand side of generated Message-IDs (`<articleIDDomainSuffix>`).
    pub article_id_domain: String,
    /// How long a client may stay silent (`<connectiontimeout>`; RFC 3977 asks for at least
    /// 3 minutes). Also bounds each write and an article that never ends.
    pub connection_timeout: Duration,
    /// The most simultaneous connections (`<connectionLimit>`); `None`: no limit.
    pub connection_limit: Option<usize>,
    /// Sessions per client address, and each session's byte budget and lifetime (safe
    /// defaults: [`mailroom_net::Limits::default`]).
    pub limits: mailroom_net::Limits,
    /// No POST or IHAVE (`<readOnly>` of the repository).
    pub read_only: bool,
    /// Reading needs AUTHINFO first (`<authRequired>`).
    pub auth_for_reading: bool,
    /// Posting needs AUTHINFO first (`<authRequired>`).
    pub auth_for_posting: bool,
    /// Whether AUTHINFO is allowed on a connection without TLS: the opposite of
    /// `<requireTLSForAuth>`. When false, AUTHINFO USER and PASS are refused with `483` and
    /// CAPABILITIES does not list `AUTHINFO USER` until TLS is up (RFC 4643 §2.2).
    pub plaintext_auth: bool,
    /// Failed logins per client IP, shared with every POP3 and SMTP listener of the process: a
    /// failed AUTHINFO PASS is answered after the delay it gives (none below its threshold),
    /// holding up only that session; a correct login is never delayed.
    pub auth_throttle: Arc<AuthThrottle>,
    /// TLS on this listener (implicit, STARTTLS or both); `None`: plain text only.
    pub tls: Option<ListenerTls>,
    /// The largest article accepted, in octets (0: no limit); a larger one is read to its end
    /// and refused (441/437), never stored.
    pub max_article_size: usize,
    /// The time, for DATE, Date headers, generated Message-IDs and NEWNEWS's two-digit years.
    pub clock: fn() -> SystemTime,
    /// Group name → what LIST NEWSGROUPS says of it (`<newsgroup description=...>`); a group
    /// without one is `(no description)`.
    pub descriptions: Arc<HashMap<String, String>>,
}

impl Default for NntpSettings {
    /// `localhost`, 3 minutes idle timeout, no limit, posting allowed without login,
    /// plaintext AUTHINFO allowed, a default [`AuthThrottle`] of its own, no TLS, 1 MiB
    /// articles, the system clock, no group descriptions.
    fn default() -> Self {
        NntpSettings {
            hello_name: "localhost".to_string(),
            article_id_domain: "localhost".to_string(),
            connection_timeout: Duration::from_secs(180),
            connection_limit: None,
            limits: mailroom_net::Limits::default(),
            read_only: false,
            auth_for_reading: false,
            auth_for_posting: false,
            plaintext_auth: true,
            auth_throttle: Arc::new(AuthThrottle::default()),
            tls: None,
            max_article_size: 1024 * 1024,
            clock: SystemTime::now,
            descriptions: Arc::default(),
        }
    }
}
#[cfg(test)]
mod tests;
