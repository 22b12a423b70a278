//! The SMTP server of Mailroom: RFC 5321 with PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES and STARTTLS (RFC 3207), implicit TLS (SMTPS), DSN parameters passed
//! through to the spool, and AUTH PLAIN and LOGIN (RFC 4954) checked by an [`Authenticator`]
//! the caller supplies.
//!
//! The layers, bottom up, each in its own module:
//!
//! * [`codec`]: bytes → bounded command lines, typed [`codec::Command`]s, and the DATA
//!   scanner (dot-unstuffing, `CRLF.CRLF` only, bare CR/LF detection against SMTP smuggling);
//! * [`reply`]: typed [`Reply`] values → bytes (multi-line for EHLO);
//! * [`session`]: the state machine. It owns no socket, no clock and no store: the driver feeds
//!   it bytes with [`Session::ingest`], it appends replies and message octets to buffers the
//!   driver owns, and it returns an [`Outcome`] when it needs the driver to act (open a message
//!   in the spool, commit it, close);
//! * [`server`]: the tokio driver: banner, read loop, idle timeout, shutdown, spool calls.
//!
//! The caller (the `mailroom` binary) builds an [`SmtpSettings`] from `<smtpserver>`, binds a
//! [`mailroom_net::Listener`] and runs [`server::serve`] with the spool and a
//! [`mailroom_net::ShutdownWatch`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mailroom_mailet::MailAddress;
use mailroom_net::throttle::AuthThrottle;
use mailroom_net::tls::ListenerTls;

pub mod codec;
pub mod reply;
pub mod server;
pub mod session;

pub use reply::Reply;
pub use server::serve;
pub use session::{Credentials, DataStart, Outcome, Session, SpoolFailure};

/// A predicate on a domain name (lower case, as [`mailroom_mailet::MailAddress`] keeps it).
pub type DomainPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A predicate on a client's IP address.
pub type AddressPredicate = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// What a [`RecipientCheck`] says about a recipient in a local domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientVerdict {
    /// A user (or a user's alias) or a virtual-table source: accepted.
    Known,
    /// Nobody by that name: `550 5.1.1`.
    Unknown,
    /// A virtual-table `error:CODE text` mapping: refused with that code and text.
    Refused {
        /// The mapping's 4xx or 5xx code.
        code: u16,
        /// The mapping's text.
        text: String,
    },
    /// The lookup failed (a store error): `451 4.3.0`, so the client tries again later.
    Unavailable,
}

/// Looks up recipients in local domains at RCPT (`<verifyRecipients>`). The session does not
/// call it (it does no I/O): it stops with [`Outcome::CheckRecipient`], and the driver awaits
/// the check and hands the verdict back, so the users repository and the virtual user tables
/// are read without blocking a runtime thread, and pipelined commands wait their turn.
#[async_trait::async_trait]
pub trait RecipientCheck: Send + Sync {
    /// The verdict on `recipient`, whose domain is local and whose local part is not
    /// `postmaster` (always accepted).
    async fn check(&self, recipient: &MailAddress) -> RecipientVerdict;
}

/// `<authRequired>`: whether AUTH is offered, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthPolicy {
    /// AUTH is not offered (`false`, the default); `AUTH` gets `502`.
    Off,
    /// AUTH is offered to clients outside `<authorizedAddresses>` and needed to relay (`true`,
    /// as James 2.3).
    Required,
    /// AUTH is offered to every client and needed to relay from outside
    /// `<authorizedAddresses>` (`announce`).
    Announce,
}

/// What an [`Authenticator`] says about a user name and password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Right: the user's name as the users repository spells it.
    Accepted(String),
    /// Wrong name or password: `535 5.7.8`.
    Rejected,
    /// The check could not be made (a store error): `454 4.7.0`, try again later.
    Unavailable,
}

/// What an [`Authenticator`] says about an authenticated user sending as an address in a
/// local domain (`<verifyIdentity>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderVerdict {
    /// The user's own address or one of their aliases.
    Own,
    /// Somebody else's: `553 5.7.1`.
    NotOwn,
    /// The lookup failed: `451 4.3.0`.
    Unavailable,
}

/// Checks SMTP AUTH credentials and who may send as whom. The session does no I/O: it stops
/// with [`Outcome::Authenticate`] or [`Outcome::CheckSender`] and the driver awaits these
/// (argon2 and repository reads happen off the session, without blocking a runtime thread).
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    /// Checks `password` for the login name `user` (as the client sent it).
    async fn authenticate(&self, user: &str, password: &str) -> AuthVerdict;

    /// Whether the authenticated `user` (the name [`AuthVerdict::Accepted`] gave) may use
    /// `sender`, an address in a local domain whose local part is not `user`, as MAIL FROM:
    /// an alias of theirs (another user whose mail goes to them, or a virtual-table address
    /// mapped to them).
    async fn may_send_as(&self, user: &str, sender: &MailAddress) -> SenderVerdict;
}

/// Envelope attribute: the name the client authenticated as with SMTP AUTH (James's name, read
/// by the `SMTPAuthSuccessful` and `SMTPAuthUserIs` matchers).
pub const ATTR_AUTH_USER: &str = mailroom_mailet::ATTR_SMTP_AUTH_USER;

/// Envelope attribute: `BODY=` of MAIL FROM (`7BIT` or `8BITMIME`), when given.
pub const ATTR_BODY: &str = "mailroom.smtp.body";
/// Envelope attribute: `RET=` of MAIL FROM (RFC 3461: `FULL` or `HDRS`), when given.
pub const ATTR_DSN_RET: &str = "mailroom.smtp.dsn.ret";
/// Envelope attribute: `ENVID=` of MAIL FROM (RFC 3461, xtext as sent), when given.
pub const ATTR_DSN_ENVID: &str = "mailroom.smtp.dsn.envid";
/// Envelope attribute: a map from each recipient with DSN parameters to a map with its
/// `notify` and/or `orcpt` values (RFC 3461, as sent).
pub const ATTR_DSN_RECIPIENTS: &str = "mailroom.smtp.dsn.recipients";
/// Envelope attribute: `true` when MAIL FROM had `SMTPUTF8` (RFC 6531): the envelope and the
/// header may be UTF-8, and a relay must pass the mail only to a server that offers SMTPUTF8.
pub const ATTR_SMTPUTF8: &str = "mailroom.smtp.smtputf8";
/// Envelope attribute: the name the client gave in HELO/EHLO.
pub const ATTR_HELO: &str = "mailroom.smtp.helo";

/// The settings of one SMTP listener, built from an `<smtpserver>` block.
#[derive(Clone)]
pub struct SmtpSettings {
    /// The server's name in the banner, replies and `Received:` headers (`<helloName>`).
    pub hello_name: String,
    /// The largest message accepted, in octets; 0 means unlimited (`<maxmessagesize>` is in
    /// KiB: multiply by 1024). Checked against `SIZE=` at MAIL FROM and against the octets
    /// actually received.
    pub max_message_size: u64,
    /// The most recipients per message; 0 means unlimited (`<maxRcpt>`). More get `452`.
    pub max_rcpt: usize,
    /// Whether MAIL FROM before HELO/EHLO is refused with `503` (`<heloEhloEnforcement>`).
    pub helo_ehlo_enforcement: bool,
    /// How long a client may stay silent before it gets `421 4.4.2` and is disconnected
    /// (`<connectiontimeout>`, in ms there). Also bounds each write to a client that does not
    /// read.
    pub connection_timeout: Duration,
    /// The most simultaneous connections (`<connectionLimit>`); further clients get
    /// `421 4.7.0` and are closed. `None`: no limit.
    pub connection_limit: Option<usize>,
    /// Sessions per client address, and each session's byte budget and lifetime (safe
    /// defaults: [`mailroom_net::Limits::default`]).
    pub limits: mailroom_net::Limits,
    /// Whether MAIL FROM / RCPT TO addresses must be in angle brackets, as RFC 5321 says; when
    /// false, `MAIL FROM:a@b` is accepted for old clients.
    pub address_brackets_enforcement: bool,
    /// Whether a domain is one of ours (`<servernames>`): mail to it is never relaying.
    pub is_local_domain: DomainPredicate,
    /// Checks recipients in local domains at RCPT (`<verifyRecipients>`, on by default).
    /// `None`: every local recipient is accepted and the spool files unknown ones (James 2.3).
    pub recipient_check: Option<Arc<dyn RecipientCheck>>,
    /// Whether a client may relay, that is send mail to domains that are not local
    /// (`<authorizedAddresses>`).
    pub relay_allowed: AddressPredicate,
    /// TLS on this listener (implicit, STARTTLS or both); `None`: plain text only.
    pub tls: Option<ListenerTls>,
    /// `<authRequired>`: whether AUTH is offered and to whom. Without an `authenticator`
    /// AUTH is never offered, whatever this says.
    pub auth: AuthPolicy,
    /// Checks AUTH credentials and `<verifyIdentity>`; `None`: no AUTH.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// `<requireTLSForAuth>` (default true): AUTH is offered and accepted only over TLS;
    /// before it, `AUTH` gets `538 5.7.11`.
    pub require_tls_for_auth: bool,
    /// `<verifyIdentity>` (default true): an authenticated client may not use as MAIL FROM an
    /// address in a local domain that is not the user's own or an alias of theirs (`553`).
    pub verify_identity: bool,
    /// `<submission>` (Mailroom's own, default false): a message submission port (RFC 6409)
    /// where every MAIL FROM needs AUTH first (`530 5.7.0`), whatever the client's address.
    pub submission: bool,
    /// Failed logins per client IP, shared by every SMTP and POP3 listener of the process: a
    /// failed AUTH is answered after the delay it gives.
    pub auth_throttle: Arc<AuthThrottle>,
}

impl Default for SmtpSettings {
    /// `localhost`, no size or recipient limits, 5 minutes idle timeout, no connection limit,
    /// brackets and HELO enforced, relaying for loopback clients only (never an open relay), no
    /// AUTH (when it is turned on: only over TLS, identities verified), a default throttle.
    fn default() -> Self {
        SmtpSettings {
            hello_name: "localhost".to_string(),
            max_message_size: 0,
            max_rcpt: 0,
            helo_ehlo_enforcement: true,
            connection_timeout: Duration::from_secs(300),
            connection_limit: None,
            limits: mailroom_net::Limits::default(),
            address_brackets_enforcement: true,
            is_local_domain: Arc::new(|domain| domain == "localhost"),
            recipient_check: None,
            relay_allowed: Arc::new(|ip| ip.is_loopback()),
            tls: None,
            auth: AuthPolicy::Off,
            authenticator: None,
            require_tls_for_auth: true,
            verify_identity: true,
            submission: false,
            auth_throttle: Arc::new(AuthThrottle::default()),
        }
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("hello_name", &self.hello_name)
            .field("max_message_size", &self.max_message_size)
            .field("max_rcpt", &self.max_rcpt)
            .field("helo_ehlo_enforcement", &self.helo_ehlo_enforcement)
            .field("connection_timeout", &self.connection_timeout)
            .field("connection_limit", &self.connection_limit)
            .field("limits", &self.limits)
            .field(
                "address_brackets_enforcement",
                &self.address_brackets_enforcement,
            )
            .field("verify_recipients", &self.recipient_check.is_some())
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("authenticator", &self.authenticator.is_some())
            .field("require_tls_for_auth", &self.require_tls_for_auth)
            .field("verify_identity", &self.verify_identity)
            .field("submission", &self.submission)
            .finish_non_exhaustive()
    }
}
