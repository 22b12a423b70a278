//! The standard mailets, with James 2.3's names and parameters.
//!
//! Shared within the crate, for mailets that compose or rewrite mail (the list server's):
//! `compose` (streamed bodies spliced from stored ranges and new octets, header helpers),
//! `footer::AddFooter::new(text)` (a footer added in bounded memory), and the
//! Redirect/Resend factories (`Registry::standard().mailet("Resend")` with a `MailetConfig`).

pub mod bayes;
pub mod bounce;
mod clamav;
pub(crate) mod compose;
mod delivery;
pub(crate) mod footer;
mod habeas;
mod headers;
mod mapping;
mod misc;
mod redirect;
pub mod repository;
mod routing;
pub mod smime;
#[cfg(test)]
pub(crate) mod testing;

use crate::Registry;

/// Registers every standard mailet.
pub fn register(registry: &mut Registry) {
    delivery::register(registry);
    routing::register(registry);
    headers::register(registry);
    mapping::register(registry);
    bounce::register(registry);
    habeas::register(registry);
    misc::register(registry);
    footer::register(registry);
    redirect::register(registry);
    clamav::register(registry);
    smime::register(registry);
}
