//! The SpoolManager: the mailet container.
//!
//! Worker threads lease mails from the spool and run each through the processor named by its
//! state, starting at `root`, following the contract of DESIGN.md §2: matchers split mails by
//! recipient, mailets act on them, every move to another processor is persisted to the spool,
//! and a mail leaves the spool only when it is ghosted.
//!
//! * [`registry`]: short names (and Java-qualified names) → matcher and mailet factories.
//! * [`tree`]: the processor tree built from `<spoolmanager>`, checked at start-up.
//! * [`composite`]: James 3's composite matchers (`<matcher name="x" match="Or">`).
//! * [`manager`]: the workers and the processing rules.
//! * [`context`]: what mailets may ask of the server.
//! * [`matchers`] and [`mailets`]: the standard library.
//! * [`sql`]: the data sources James's JDBC mailets and matchers query.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod composite;
pub mod context;
pub mod leases;
pub mod mailets;
pub mod manager;
pub mod matchers;
pub mod registry;
pub mod sql;
pub mod tree;

pub use context::{Repositories, ServerContext, UsernameRules};
pub use manager::{SpoolManager, SpoolManagerHandle};
pub use registry::{Doc, Registry};
pub use tree::ProcessorTree;
