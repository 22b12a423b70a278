//! The standard mailets, with James 2.3's names and parameters.

pub mod bayes;
pub mod bounce;
mod clamav;
mod delivery;
mod headers;
mod mapping;
mod routing;
pub mod smime;

use crate::Registry;

/// Registers every standard mailet.
pub fn register(registry: &mut Registry) {
    delivery::register(registry);
    routing::register(registry);
    headers::register(registry);
    mapping::register(registry);
    bounce::register(registry);
    clamav::register(registry);
    smime::register(registry);
}
