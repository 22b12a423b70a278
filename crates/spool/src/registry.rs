//! The registry of matchers and mailets by name.
//!
//! A user adds a matcher or mailet of their own with one line:
//! `registry.add_mailet("MyMailet", |config| Ok(Box::new(MyMailet::new(config)?)))`.
//!
//! A factory is a closure, so it can capture the services its mailets need beyond what
//! [`MailetContext`](mailroom_mailet::MailetContext) offers (the shared DNS resolver, a
//! repository, a data source), each behind an `Arc`:
//!
//! ```
//! # use std::sync::Arc;
//! # use mailroom_mailet::{Mail, Mailet, MailetContext, MailetError};
//! # use mailroom_spool::Registry;
//! struct Audit(Arc<Vec<String>>);
//! impl Mailet for Audit {
//!     fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
//!         Ok(())
//!     }
//! }
//! let service = Arc::new(vec!["audit log".to_string()]);
//! let mut registry = Registry::standard();
//! registry.add_mailet("Audit", move |_| Ok(Box::new(Audit(service.clone()))));
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use mailroom_mailet::{Mailet, MailetConfig, MailetError, Matcher, MatcherConfig};

/// Builds a matcher from its configuration (once for each use in the processor tree).
pub type MatcherFactory =
    Arc<dyn Fn(&MatcherConfig) -> Result<Box<dyn Matcher>, MailetError> + Send + Sync>;
/// Builds a mailet from its configuration (once for each use in the processor tree).
pub type MailetFactory =
    Arc<dyn Fn(&MailetConfig) -> Result<Box<dyn Mailet>, MailetError> + Send + Sync>;

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

    /// Registers a matcher under a short name (replacing any matcher of that name).
    pub fn add_matcher<F>(&mut self, name: &str, factory: F)
    where
        F: Fn(&MatcherConfig) -> Result<Box<dyn Matcher>, MailetError> + Send + Sync + 'static,
    {
        self.matchers.insert(name.to_string(), Arc::new(factory));
    }

    /// Registers a mailet under a short name (replacing any mailet of that name).
    pub fn add_mailet<F>(&mut self, name: &str, factory: F)
    where
        F: Fn(&MailetConfig) -> Result<Box<dyn Mailet>, MailetError> + Send + Sync + 'static,
    {
        self.mailets.insert(name.to_string(), Arc::new(factory));
    }

    /// The matcher factory for a short name.
    pub fn matcher(&self, name: &str) -> Option<&MatcherFactory> {
        self.matchers.get(name)
    }

    /// The mailet factory for a short name.
    pub fn mailet(&self, name: &str) -> Option<&MailetFactory> {
        self.mailets.get(name)
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
    use crate::ProcessorTree;
    use mailroom_config::Config;
    use mailroom_dns::{Resolver, ResolverSettings};
    use mailroom_mailet::{Mail, MailAddress, MailetContext};
    use std::sync::Mutex;

    /// A matcher that holds the server's resolver, the way a DNS blacklist matcher would.
    struct UsesResolver {
        _resolver: Arc<Resolver>,
    }

    impl Matcher for UsesResolver {
        fn matches(
            &self,
            _: &Mail,
            _: &dyn MailetContext,
        ) -> Result<Vec<MailAddress>, MailetError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn factories_capture_services() {
        let resolver = Arc::new(Resolver::new(&ResolverSettings::default()).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::standard();
        {
            let resolver = resolver.clone();
            let seen = seen.clone();
            registry.add_matcher("UsesResolver", move |config| {
                seen.lock().unwrap().push(config.condition.clone());
                Ok(Box::new(UsesResolver {
                    _resolver: resolver.clone(),
                }))
            });
        }
        let xml = r#"<config><spoolmanager>
            <processor name="root">
              <mailet match="UsesResolver=zen.example" class="Null"/>
              <mailet match="UsesResolver" class="Null"/>
            </processor>
            <processor name="error"><mailet match="All" class="Null"/></processor>
            </spoolmanager></config>"#;
        let config =
            Config::from_str_with_name(xml, "t.xml", std::path::Path::new("."), None).unwrap();
        let tree = ProcessorTree::build(&config.spool_manager, &registry, &[], &[])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some("zen.example".to_string()), None]
        );
        // Ours, the factory's, and one in each matcher built.
        assert_eq!(Arc::strong_count(&resolver), 4);
        drop(tree);
        assert_eq!(Arc::strong_count(&resolver), 2);
    }

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
