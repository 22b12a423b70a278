//! The standard mailets, with James 2.3's names and parameters.

pub mod bounce;
mod delivery;
mod headers;
pub mod lists;
mod mapping;
mod routing;

use crate::Registry;

/// Registers every standard mailet.
pub fn register(registry: &mut Registry) {
    delivery::register(registry);
    routing::register(registry);
    headers::register(registry);
    mapping::register(registry);
    bounce::register(registry);
    lists::register_matchers(registry);
}
