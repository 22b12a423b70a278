//! The standard mailets, with James 2.3's names and parameters.

mod aliasing;
pub mod bounce;
mod delivery;
mod headers;
mod jdbc;
mod jdbc_listserv;
mod mapping;
mod routing;
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
    vut::register(registry);
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
