//! The standard mailets, with James 2.3's names and parameters.
//!
//! Shared within the crate, for mailets that compose or rewrite mail (the list server's):
//! `compose` (streamed bodies spliced from stored ranges and new octets, header helpers),
//! `footer::AddFooter::new(text)` (a footer added in bounded memory), and the
//! Redirect/Resend factories (`Registry::standard().mailet("Resend")` with a `MailetConfig`).

mod aliasing;
pub mod bayes;
pub mod bounce;
mod clamav;
pub(crate) mod compose;
mod delivery;
pub(crate) mod footer;
mod habeas;
mod headers;
mod jdbc;
mod jdbc_listserv;
pub mod lists;
mod mapping;
mod misc;
mod redirect;
pub mod repository;
mod routing;
pub mod smime;
#[cfg(test)]
pub(crate) mod testing;
mod vut;
mod whitelist;

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
    vut::register(registry);
    lists::register_matchers(registry);
}

/// Registers the mailets and matchers that use the server's data sources (see [`crate::sql`]).
pub(crate) fn register_sql(
    registry: &mut Registry,
    sources: std::sync::Arc<dyn crate::sql::SqlSources>,
) {
    vut::register_sql(registry, sources.clone());
    jdbc::register_sql(registry, sources.clone());
    jdbc_listserv::register_sql(registry, sources.clone());
    whitelist::register_sql(registry, sources);
}
