//! The standard matchers, with James 2.3's names and condition syntax.

mod attachment;
mod attribute;
mod auth;
mod dns;
mod header;
mod message;
mod mime;
mod network;
mod pattern;
mod quota;
mod recipient;
#[cfg(test)]
pub(crate) mod testing;

pub use header::HABEAS_WARRANT_MARK;
pub use pattern::register_file_regex;

use mailroom_mailet::{Mail, MailAddress, MailetError};

use crate::Registry;

/// Registers every standard matcher.
pub fn register(registry: &mut Registry) {
    recipient::register(registry);
    network::register(registry);
    message::register(registry);
    attribute::register(registry);
    auth::register(registry);
    header::register(registry);
    pattern::register(registry);
    quota::register(registry);
    dns::register(registry);
    attachment::register(registry);
    crate::composite::register(registry);
}

/// All recipients when `yes`, none otherwise: for matchers that judge the mail as a whole.
fn all_if(mail: &Mail, yes: bool) -> Result<Vec<MailAddress>, MailetError> {
    Ok(if yes {
        mail.recipients().to_vec()
    } else {
        Vec::new()
    })
}

/// Splits a comma- or space-separated condition into its non-empty items.
fn list(condition: &str) -> impl Iterator<Item = &str> {
    condition
        .split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Parses a list of addresses, naming the matcher on error.
fn addresses(name: &str, condition: &str) -> Result<Vec<MailAddress>, MailetError> {
    list(condition)
        .map(|a| {
            MailAddress::parse(a)
                .map_err(|e| MailetError::new(format!("{name}: {a:?} is not an address: {e}")))
        })
        .collect()
}
