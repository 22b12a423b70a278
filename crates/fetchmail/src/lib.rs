//! FetchMail: pulls mail from remote POP3 accounts into the spool, never losing or repeating
//! one.
//!
//! * [`reply`]: the POP3 client's reply parsing, without I/O;
//! * [`client`]: the async POP3 client (STLS, POP3S, APOP, AUTH PLAIN, UIDL, streamed RETR);
//! * [`tls`]: the client's certificate verification;
//! * [`uidl`]: the durable per-account record of what was fetched and kept;
//! * [`rules`]: James 2.3's recipient rules and filters, applied to a message's header section;
//! * [`task`]: one `<fetch>` task: accounts, policies, the spool, the log.
//!
//! The one rule everything here keeps: a message is deleted on the server only after the spool
//! said it is durable, and a message kept on the server is recorded before the session ends.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod reply;
pub mod rules;
pub mod service;
pub mod task;
pub mod tls;
pub mod uidl;
pub use service::FetchMail;
pub use task::{Env, Summary};
