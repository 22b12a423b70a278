//! The registry of matchers and mailets by name.
//!
//! A user adds a matcher or mailet of their own with one line:
//! `registry.add_mailet("MyMailet", |config| Ok(Box::new(MyMailet::new(config)?)))`.

use std::collections::BTreeMap;

use mailroom_mailet::{Mailet, MailetConfig, MailetError, Matcher, MatcherConfig};

/// Builds a matcher from its configuration.
pub type MatcherFactory = fn(&MatcherConfig) -> Result<Box<dyn Matcher>, MailetError>;
/// Builds a mailet from its configuration.
pub type MailetFactory = fn(&MailetConfig) -> Result<Box<dyn Mailet>, MailetError>;

/// Matchers and mailets known by short name.
#[derive(Clone, Default)]
pub struct Registry {
    matchers: BTreeMap<String, MatcherFactory>,
    mailets: BTreeMap<String, MailetFactory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The standard matchers and mailets.
    pub fn standard() -> Self {
        let mut registry = Registry::new();
        crate::matchers::register(&mut registry);
        crate::mailets::register(&mut registry);
        registry
    }

    /// Registers a matcher under a short name.
    pub fn add_matcher(&mut self, name: &str, factory: MatcherFactory) {
        self.matchers.insert(name.to_string(), factory);
    }

    /// Registers a mailet under a short name.
    pub fn add_mailet(&mut self, name: &str, factory: MailetFactory) {
        self.mailets.insert(name.to_string(), factory);
    }

    /// The matcher factory for a short name.
    pub fn matcher(&self, name: &str) -> Option<MatcherFactory> {
        self.matchers.get(name).copied()
    }

    /// The mailet factory for a short name.
    pub fn mailet(&self, name: &str) -> Option<MailetFactory> {
        self.mailets.get(name).copied()
    }

    /// Every matcher name, sorted (for error messages).
    pub fn matcher_names(&self) -> Vec<&str> {
        self.matchers.keys().map(String::as_str).collect()
    }

    /// Every mailet name, sorted (for error messages).
    pub fn mailet_names(&self) -> Vec<&str> {
        self.mailets.keys().map(String::as_str).collect()
    }
}

/// Resolves a `class=`/`match=` name to a short name: a short name stays as it is; a
/// Java-qualified name is accepted when its package is one of `packages`.
pub fn short_name<'a>(name: &'a str, packages: &[String]) -> Result<&'a str, String> {
    match name.rsplit_once('.') {
        None => Ok(name),
        Some((package, short)) if packages.iter().any(|p| p.trim_end_matches('.') == package) => {
            Ok(short)
        }
        Some((package, _)) => Err(format!(
            "{name}: package {package} is not listed in the packages of the configuration"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_java_names_through_listed_packages() {
        let packages = vec!["org.apache.james.transport.mailets".to_string()];
        assert_eq!(short_name("LocalDelivery", &packages), Ok("LocalDelivery"));
        assert_eq!(
            short_name(
                "org.apache.james.transport.mailets.LocalDelivery",
                &packages
            ),
            Ok("LocalDelivery")
        );
        assert!(short_name("com.example.Other", &packages).is_err());
    }
}
