//! Names of the states (processors) every mail server has.
//!
//! A mail's state is the name of the processor it is in. Any other processor name configured in
//! `<spoolmanager>` is also a valid state.

/// Where every new mail starts.
pub const ROOT: &str = "root";
/// Where mails go when a matcher or mailet fails, or when they are sent to an unknown processor.
pub const ERROR: &str = "error";
/// The processor that routes mail to local or remote delivery in the default tree.
pub const TRANSPORT: &str = "transport";
/// Not a processor: a mail in this state has finished processing and leaves the spool.
pub const GHOST: &str = "ghost";
