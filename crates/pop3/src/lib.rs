//! The POP3 server of Mailroom: RFC 1939 (USER, PASS, APOP, STAT, LIST, RETR, DELE, NOOP,
//! RSET, QUIT, TOP, UIDL), CAPA and response codes (RFC 2449, RFC 3206), AUTH PLAIN
//! (RFC 5034), STLS (RFC 2595) and implicit TLS (POP3S), over any
//! [`mailroom_store::InboxRepository`].
//!
//! The layers, bottom up, each in its own module:
//!
//! * [`codec`]: bytes → bounded command lines → typed [`codec::Command`]s, and the
//!   [`codec::DotEncoder`] (from `mailroom-net`) that sends a stored message as CRLF lines with dot-stuffing;
//! * [`reply`]: `+OK` / `-ERR [CODE]` status lines;
//! * [`session`]: the state machine (AUTHORIZATION, TRANSACTION, UPDATE). It owns no socket,
//!   no clock and no store: the driver feeds it bytes, it appends replies to the driver's
//!   buffer, and it returns an [`Outcome`] when it needs the outside world (check a login and
//!   open the mailbox, send a message, delete at QUIT);
//! * [`server`]: the tokio driver: banner, read loop, timeouts, shutdown, password checks on
//!   blocking threads, delayed failed logins, streaming messages from the store.
//!
//! The caller (the `mailroom` binary) builds a [`Pop3Settings`] from a `<pop3server>` block,
//! binds a [`mailroom_net::Listener`] and runs [`server::serve`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use mailroom_net::throttle::AuthThrottle;
use mailroom_net::tls::ListenerTls;

pub mod codec;
pub mod reply;
pub mod server;
pub mod session;

pub use mailroom_config::Secret;
pub use reply::Reply;
pub use server::serve;
pub use session::{Credential, Login, LoginFailure, Outcome, Session};

/// The settings of one POP3 listener, built from a `<pop3server>` block.
#[derive(Clone, Debug)]
pub struct Pop3Settings {
    /// The server's name in the banner and the APOP timestamp (`<helloName>`).
    pub hello_name: String,
    /// How long a client may stay silent before it is disconnected (`<connectiontimeout>`, in
    /// ms there; RFC 1939 asks for at least 10 minutes). Also bounds each write to a client
    /// that does not read.
    pub connection_timeout: Duration,
    /// The most simultaneous connections (`<connectionLimit>`); further clients get
    /// `-ERR [SYS/TEMP]` and are closed. `None`: no limit.
    pub connection_limit: Option<usize>,
    /// Sessions per client address, and each session's byte budget and lifetime (safe
    /// defaults: [`mailroom_net::Limits::default`]).
    pub limits: mailroom_net::Limits,
    /// Whether APOP is offered (`<enableAPOP>`): the banner then carries a timestamp. It needs
    /// the users' APOP secrets, which the users repository keeps only where this is on.
    pub enable_apop: bool,
    /// Whether USER/PASS, APOP and AUTH PLAIN are allowed on a connection without TLS: the
    /// opposite of `<requireTLSForAuth>`. When false, they are refused with `-ERR [AUTH]` and
    /// not listed in CAPA until STLS (RFC 2595).
    pub plaintext_auth: bool,
    /// Failed logins per client IP, shared by every POP3 and SMTP listener of the process: a
    /// failed USER/PASS, APOP or AUTH is answered after the delay it gives (none below its
    /// threshold), holding up only that session; a correct login is never delayed.
    pub auth_throttle: Arc<AuthThrottle>,
    /// TLS on this listener (implicit, STLS or both); `None`: plain text only.
    pub tls: Option<ListenerTls>,
}

impl Default for Pop3Settings {
    /// `localhost`, 10 minutes idle timeout, no connection limit, no APOP, plaintext logins
    /// allowed, a default [`AuthThrottle`] of its own, no TLS.
    fn default() -> Self {
        Pop3Settings {
            hello_name: "localhost".to_string(),
            connection_timeout: Duration::from_secs(600),
            connection_limit: None,
            limits: mailroom_net::Limits::default(),
            enable_apop: false,
            plaintext_auth: true,
            auth_throttle: Arc::new(AuthThrottle::default()),
            tls: None,
        }
    }
}
