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

/// What `mailroom list-mailets` / `list-matchers` and the README's table show of an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Doc {
    /// One or two sentences: what it does, with James 2.3's semantics.
    pub summary: &'static str,
    /// A configuration line using it (`<mailet match="All" class="X"><p>v</p></mailet>`).
    pub example: &'static str,
}

/// A registered matcher: its factory and whether it takes a condition.
#[derive(Clone)]
struct MatcherEntry {
    factory: MatcherFactory,
    doc: Option<Doc>,
    /// `false` when declared with [`MatcherDeclaration::no_condition`]: a condition written
    /// for it is warned about. `true` (not checked) otherwise.
    takes_condition: bool,
}

/// A registered mailet: its factory and the parameters it reads.
#[derive(Clone)]
struct MailetEntry {
    factory: MailetFactory,
    doc: Option<Doc>,
    /// The parameter names it reads, when declared with [`MailetDeclaration::params`]; any
    /// other parameter is warned about (a typo is otherwise silently ignored). `None`: not
    /// declared, nothing is checked (a mailet such as `SetMailAttribute` takes any name).
    params: Option<&'static [&'static str]>,
}

/// Returned by [`Registry::add_mailet`] to declare, on the same line, what the mailet reads.
pub struct MailetDeclaration<'a>(&'a mut MailetEntry);

impl MailetDeclaration<'_> {
    /// The mailet reads exactly these parameters; any other one gets a warning at its line.
    pub fn params(self, names: &'static [&'static str]) -> Self {
        self.0.params = Some(names);
        self
    }

    /// What it does and an example, for `mailroom list-mailets` and the README.
    pub fn about(self, summary: &'static str, example: &'static str) -> Self {
        self.0.doc = Some(Doc { summary, example });
        self
    }
}

/// Returned by [`Registry::add_matcher`] to declare, on the same line, what the matcher reads.
pub struct MatcherDeclaration<'a>(&'a mut MatcherEntry);

impl MatcherDeclaration<'_> {
    /// The matcher takes no condition (`All`): `All=x` gets a warning.
    pub fn no_condition(self) -> Self {
        self.0.takes_condition = false;
        self
    }

    /// What it matches and an example, for `mailroom list-matchers` and the README.
    pub fn about(self, summary: &'static str, example: &'static str) -> Self {
        self.0.doc = Some(Doc { summary, example });
        self
    }
}

/// Matchers and mailets known by short name.
#[derive(Clone, Default)]
pub struct Registry {
    matchers: BTreeMap<String, MatcherEntry>,
    mailets: BTreeMap<String, MailetEntry>,
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
    /// `.no_condition()` on the result declares that it takes no condition.
    pub fn add_matcher<F>(&mut self, name: &str, factory: F) -> MatcherDeclaration<'_>
    where
        F: Fn(&MatcherConfig) -> Result<Box<dyn Matcher>, MailetError> + Send + Sync + 'static,
    {
        let entry = MatcherEntry {
            factory: Arc::new(factory),
            doc: None,
            takes_condition: true,
        };
        self.matchers.insert(name.to_string(), entry);
        MatcherDeclaration(self.matchers.get_mut(name).expect("just inserted"))
    }

    /// Registers a mailet under a short name (replacing any mailet of that name).
    /// `.params(&["a", "b"])` on the result declares the parameters it reads, so that any
    /// other one is warned about.
    pub fn add_mailet<F>(&mut self, name: &str, factory: F) -> MailetDeclaration<'_>
    where
        F: Fn(&MailetConfig) -> Result<Box<dyn Mailet>, MailetError> + Send + Sync + 'static,
    {
        let entry = MailetEntry {
            factory: Arc::new(factory),
            doc: None,
            params: None,
        };
        self.mailets.insert(name.to_string(), entry);
        MailetDeclaration(self.mailets.get_mut(name).expect("just inserted"))
    }

    /// The matcher factory for a short name.
    pub fn matcher(&self, name: &str) -> Option<&MatcherFactory> {
        self.matchers.get(name).map(|e| &e.factory)
    }

    /// Whether the matcher `name` takes a condition (`true` when unknown or not declared).
    pub fn matcher_takes_condition(&self, name: &str) -> bool {
        self.matchers.get(name).is_none_or(|e| e.takes_condition)
    }

    /// The parameters the mailet `name` reads, when declared.
    pub fn mailet_params(&self, name: &str) -> Option<&'static [&'static str]> {
        self.mailets.get(name).and_then(|e| e.params)
    }

    /// The mailet factory for a short name.
    pub fn mailet(&self, name: &str) -> Option<&MailetFactory> {
        self.mailets.get(name).map(|e| &e.factory)
    }

    /// Every matcher name, sorted (for error messages).
    pub fn matcher_names(&self) -> Vec<&str> {
        self.matchers.keys().map(String::as_str).collect()
    }

    /// Every matcher, sorted by name: whether it takes a condition, and its documentation.
    pub fn matcher_docs(&self) -> impl Iterator<Item = (&str, bool, Option<Doc>)> {
        self.matchers
            .iter()
            .map(|(name, e)| (name.as_str(), e.takes_condition, e.doc))
    }

    /// Every mailet, sorted by name: the parameters it declares, and its documentation.
    pub fn mailet_docs(
        &self,
    ) -> impl Iterator<Item = (&str, Option<&'static [&'static str]>, Option<Doc>)> {
        self.mailets
            .iter()
            .map(|(name, e)| (name.as_str(), e.params, e.doc))
    }

    /// Every mailet name, sorted (for error messages).
    pub fn mailet_names(&self) -> Vec<&str> {
        self.mailets.keys().map(String::as_str).collect()
    }
}

/// Resolves a `class=`/`match=` name to a short name: a short name stays as it is; a
/// Java-qualified name is accepted when its package is one of `packages`.
///
/// James's `debug.X` mailets are named relative to a listed package (`debug.Counter` is
/// `org.apache.james.transport.mailets.debug.Counter`): such a name resolves to the
/// registered name `debug.X`, written either way.
pub fn short_name<'a>(name: &'a str, packages: &[String]) -> Result<&'a str, String> {
    if let Some(short) = debug_name(name, packages) {
        return Ok(short);
    }
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

/// `debug.X`, or `P.debug.X` with `P` a listed package: the suffix `debug.X`.
fn debug_name<'a>(name: &'a str, packages: &[String]) -> Option<&'a str> {
    let at = if name.starts_with("debug.") {
        0
    } else {
        let at = name.rfind(".debug.")?;
        let package = &name[..at];
        packages
            .iter()
            .any(|p| p.trim_end_matches('.') == package)
            .then_some(at + 1)?
    };
    let short = &name[at..];
    let class = &short["debug.".len()..];
    (!class.is_empty() && !class.contains('.')).then_some(short)
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
    fn debug_mailets_resolve_from_relative_and_qualified_names() {
        let xml = r#"<config><spoolmanager>
            <processor name="root">
              <mailet match="All" class="debug.Identity"/>
              <mailet match="All" class="org.apache.james.transport.mailets.debug.Counter"/>
            </processor>
            <processor name="error"><mailet match="All" class="debug.DumpSystemErr"/></processor>
            </spoolmanager></config>"#;
        let config =
            Config::from_str_with_name(xml, "t.xml", std::path::Path::new("."), None).unwrap();
        let packages = vec!["org.apache.james.transport.mailets".to_string()];
        ProcessorTree::build(&config.spool_manager, &Registry::standard(), &[], &packages)
            .unwrap_or_else(|e| panic!("{e:?}"));
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
        assert_eq!(short_name("debug.Counter", &packages), Ok("debug.Counter"));
        assert_eq!(
            short_name(
                "org.apache.james.transport.mailets.debug.Identity",
                &packages
            ),
            Ok("debug.Identity")
        );
        assert!(short_name("com.example.debug.Counter", &packages).is_err());
        assert!(short_name("debug.a.B", &packages).is_err());
    }
}
