//! The RemoteManager: James 2.3.2's telnet administration console, with its command set and
//! its reply strings byte for byte (administrators' expect and Net::Telnet scripts parse them),
//! plus the spool and mapping commands James added later.
//!
//! * [`session`]: the dialogue with no socket in it — login, command parsing, dispatch — fed
//!   one line at a time; it answers with a [`session::Step`] (the bytes to write, a delay,
//!   whether to close or stop the server);
//! * `commands`, `spool`, `mappings`, `memory`: what the commands do, over the repositories of
//!   a [`Console`];
//! * [`server`]: the tokio driver: lines, telnet option bytes, timeouts, connection limits.
//!
//! Unlike James 2.3 there is no built-in administrator: the binary does not start the console
//! without a configured account. Failed logins are delayed, counted and logged.
#![deny(missing_docs)]
// Only `sys` may use unsafe code.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use mailroom_config::Secret;
use mailroom_store::{
    MailRepository, MappingsRepository, NewsRepository, SpoolRepository, StoreError,
    UsersRepository,
};

mod commands;
mod mappings;
mod memory;
mod news;
pub mod server;
pub mod session;
mod spool;
#[allow(unsafe_code)]
mod sys;

pub use memory::release_free_memory;
pub use server::serve;
pub use session::{Session, Step};

/// Opens the repository at a URL (`file://var/mail/error/`, `file://var/mail/outgoing/`).
pub type RepositoryOpener = Arc<dyn Fn(&str) -> Result<Opened, StoreError> + Send + Sync>;

/// What a URL of the spool commands names.
#[derive(Clone)]
pub enum Opened {
    /// A spool — the main spool, or a RemoteDelivery outgoing spool: its mails wait for an
    /// attempt, and flushing one makes it due at once where it is.
    Spool(Arc<dyn SpoolRepository>),
    /// A mail repository: flushing a mail sends it back to the main spool.
    Mail(Arc<dyn MailRepository>),
}

impl Opened {
    /// The repository's mails, whatever it is.
    pub fn mails(&self) -> Arc<dyn MailRepository> {
        match self {
            Opened::Spool(spool) => spool.clone(),
            Opened::Mail(repository) => repository.clone(),
        }
    }
}

/// The settings of one RemoteManager listener (`<remotemanager>`).
#[derive(Clone, Debug)]
pub struct RemoteManagerSettings {
    /// The administrator accounts: login → password, as configured (never printed).
    pub administrators: Vec<(String, Secret)>,
    /// Written before reading each command (`<prompt>`; empty: nothing).
    pub prompt: String,
    /// A session idle this long is closed (`<connectiontimeout>`).
    pub connection_timeout: Duration,
    /// At most this many sessions at once (`<connectionLimit>`).
    pub connection_limit: Option<usize>,
    /// Sessions per client address, and each session's byte budget and lifetime (safe
    /// defaults: [`mailroom_net::Limits::default`]).
    pub limits: mailroom_net::Limits,
    /// How long a failed login waits before its answer.
    pub login_failure_delay: Duration,
    /// Failed logins after which the connection is closed.
    pub max_login_failures: u32,
}

/// What the commands act on: the server's repositories.
pub struct Console {
    /// The users repositories of `<users-store>`, by configured name; the first is the one a
    /// session starts with (`LocalUsers`).
    pub users: Vec<(String, Arc<dyn UsersRepository>)>,
    /// Whether passwords are also kept as APOP secrets (POP3 `<enableAPOP>`).
    pub keep_apop_secret: bool,
    /// The spool, where flushed mails go back for processing.
    pub spool: Arc<dyn SpoolRepository>,
    /// Opens the repositories that spool commands name.
    pub open_repository: RepositoryOpener,
    /// The virtual user tables.
    pub mappings: Arc<dyn MappingsRepository>,
    /// The news repository (`addgroup`, `delgroup`, `listgroups`), when NNTP is configured.
    pub news: Option<Arc<dyn NewsRepository>>,
    /// Stops the whole server, as SIGTERM does (the `shutdown` command).
    pub request_shutdown: Arc<dyn Fn() + Send + Sync>,
    /// Reads the TLS certificates and keys again, as SIGHUP does (the `reloadtls` command);
    /// returns one line per certificate saying what was reloaded, or why the old one was kept.
    /// It reads files: the session runs it on the blocking pool.
    pub reload_tls: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}
