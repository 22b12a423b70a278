//! The standard mailets, with James 2.3's names and parameters.

pub mod bounce;
pub(crate) mod compose;
mod delivery;
mod footer;
mod headers;
mod mapping;
mod misc;
mod redirect;
pub mod repository;
mod routing;
#[cfg(test)]
mod testing;

use crate::Registry;

/// Registers every standard mailet.
pub fn register(registry: &mut Registry) {
    delivery::register(registry);
    routing::register(registry);
    headers::register(registry);
    mapping::register(registry);
    bounce::register(registry);
    misc::register(registry);
    footer::register(registry);
    redirect::register(registry);
}
