//! The processor tree: `<spoolmanager>` turned into matcher/mailet instances, with every name
//! checked at start-up so that a typo stops the server with the file and line.
//!
//! Also checked here, since only the registry knows them: a parameter that names a processor
//! (`processor`, or any name ending in `Processor`, James's convention) must name one (an
//! error); a parameter a mailet does not read, or a condition given to a matcher that takes
//! none, is warned about at its line. A `match=` that names a `<matcher>` declaration (James 3's composites) is resolved by [`crate::composite`].

use std::collections::BTreeMap;

use mailroom_config::{
    ConfigError, MailetConfig as MailetEntry, SpoolManager as SpoolManagerConfig,
};
use mailroom_mailet::{state, Mailet, MailetConfig, Matcher, MatcherConfig};

use crate::composite::Composites;
use crate::registry::{short_name, Registry};

/// Whether a mailet parameter names a processor: `processor`, or James's `...Processor`
/// (`bounceProcessor`, `errorProcessor`).
fn names_processor(param: &str) -> bool {
    param == "processor" || param.ends_with("Processor")
}

/// Checks an entry's parameters and condition against what the registry declares: errors for
/// processor names that do not exist, warnings (logged) for what the component ignores.
fn check_entry(
    entry: &MailetEntry,
    matcher: &str,
    mailet: &str,
    registry: &Registry,
    processors: &[&str],
    errors: &mut Vec<ConfigError>,
) {
    if entry.matcher_condition().is_some() && !registry.matcher_takes_condition(matcher) {
        tracing::warn!(
            "{}: matcher {matcher} takes no condition; \"{}\" is ignored",
            entry.location,
            entry.matcher
        );
    }
    let declared = registry.mailet_params(mailet);
    for param in &entry.element.children {
        let name = param.name.as_str();
        if names_processor(name) {
            let value = param.text.trim();
            if value != state::GHOST && !processors.contains(&value) {
                errors.push(param.location().error(format!(
                    "<{name}> of mailet {mailet} names processor {value:?}, which is not \
                     defined (processors: {})",
                    processors.join(", ")
                )));
            }
        }
        if let Some(known) = declared.filter(|known| !known.contains(&name)) {
            tracing::warn!(
                "{}: mailet {mailet} has no parameter <{name}>; ignored (it reads: {})",
                param.location(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
}

/// A matcher from the registry by short name.
fn plain_matcher(
    registry: &Registry,
    short: &str,
    condition: Option<&str>,
) -> Result<Box<dyn Matcher>, String> {
    let factory = registry.matcher(short).ok_or_else(|| {
        format!(
            "unknown matcher {short:?}; known matchers: {}",
            registry.matcher_names().join(", ")
        )
    })?;
    factory(&MatcherConfig {
        name: short.to_string(),
        condition: condition.map(|c| c.trim().to_string()),
    })
    .map_err(|e| e.to_string())
}

/// What to do when a matcher fails (`onMatchException`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnMatchError {
    /// Move the mail to the `error` processor (the default).
    Error,
    /// Act as if no recipient matched.
    NoMatch,
    /// Act as if every recipient matched.
    MatchAll,
    /// Move the mail to this processor.
    Processor(String),
}

/// What to do when a mailet fails (`onMailetException`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnMailetError {
    /// Move the mail to the `error` processor (the default).
    Error,
    /// Go on with the next mailet as if nothing happened.
    Ignore,
    /// Move the mail to this processor.
    Processor(String),
}

/// One matcher/mailet pair of a processor.
pub struct Step {
    /// `Matcher/Mailet` as configured, for logs and error messages.
    pub label: String,
    /// The matcher.
    pub matcher: Box<dyn Matcher>,
    /// The mailet.
    pub mailet: Box<dyn Mailet>,
    /// `onMatchException`.
    pub on_match_error: OnMatchError,
    /// `onMailetException`.
    pub on_mailet_error: OnMailetError,
}

/// A processor: an ordered list of steps.
pub struct Processor {
    /// Its name (and the state of the mails in it).
    pub name: String,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// Every processor by name.
pub struct ProcessorTree {
    processors: BTreeMap<String, Processor>,
}

impl ProcessorTree {
    /// Builds the tree, instantiating every matcher and mailet. All problems are reported,
    /// each at the line of its `<mailet>` element.
    pub fn build(
        config: &SpoolManagerConfig,
        registry: &Registry,
        matcher_packages: &[String],
        mailet_packages: &[String],
    ) -> Result<ProcessorTree, Vec<ConfigError>> {
        let names: Vec<&str> = config.processors.iter().map(|p| p.name.as_str()).collect();
        let mut errors = Vec::new();
        let mut processors = BTreeMap::new();
        let plain =
            |short: &str, condition: Option<&str>| plain_matcher(registry, short, condition);
        let mut global = Composites::new(
            &config.matchers,
            None,
            registry,
            matcher_packages,
            &mut errors,
        );
        global.build_all(&config.matchers, &plain, &mut errors);
        for processor in &config.processors {
            let mut composites = Composites::new(
                &processor.matchers,
                Some(&global),
                registry,
                matcher_packages,
                &mut errors,
            );
            composites.build_all(&processor.matchers, &plain, &mut errors);
            let mut steps = Vec::new();
            for entry in &processor.mailets {
                let err = |message: String| entry.location.error(message);
                let (matcher_text, condition) = (entry.matcher_name(), entry.matcher_condition());
                let matcher_short = short_name(matcher_text, matcher_packages).unwrap_or_default();
                let mailet_short = short_name(&entry.class, mailet_packages).unwrap_or_default();
                check_entry(
                    entry,
                    matcher_short,
                    mailet_short,
                    registry,
                    &names,
                    &mut errors,
                );
                let matcher = if composites.contains(matcher_text) {
                    match condition {
                        Some(_) => Err(err(format!(
                            "{matcher_text} is a <matcher> declaration: it takes no condition"
                        ))),
                        None => composites
                            .use_named(matcher_text, &plain, &mut errors)
                            .ok_or_else(|| {
                                err(format!(
                                    "matcher {matcher_text} cannot be used: its <matcher> \
                                     declaration has errors"
                                ))
                            }),
                    }
                } else {
                    short_name(matcher_text, matcher_packages)
                        .and_then(|short| plain(short, condition))
                        .map_err(err)
                };
                let mailet = short_name(&entry.class, mailet_packages)
                    .and_then(|short| {
                        let factory = registry.mailet(short).ok_or_else(|| {
                            format!(
                                "unknown mailet {short:?}; known mailets: {}",
                                registry.mailet_names().join(", ")
                            )
                        })?;
                        factory(&MailetConfig {
                            name: short.to_string(),
                            params: entry.params.iter().cloned().collect(),
                        })
                        .map_err(|e| e.to_string())
                    })
                    .map_err(err);
                let on_match_error = match entry.on_match_exception.as_deref().map(str::trim) {
                    None | Some("error") => Ok(OnMatchError::Error),
                    Some("noMatch") => Ok(OnMatchError::NoMatch),
                    Some("matchAll") => Ok(OnMatchError::MatchAll),
                    Some(p) if names.contains(&p) => Ok(OnMatchError::Processor(p.to_string())),
                    Some(p) => Err(err(format!(
                        "onMatchException {p:?} is not error, noMatch, matchAll or a processor name"
                    ))),
                };
                let on_mailet_error = match entry.on_mailet_exception.as_deref().map(str::trim) {
                    None | Some("error") => Ok(OnMailetError::Error),
                    Some("ignore") => Ok(OnMailetError::Ignore),
                    Some(p) if names.contains(&p) => Ok(OnMailetError::Processor(p.to_string())),
                    Some(p) => Err(err(format!(
                        "onMailetException {p:?} is not error, ignore or a processor name"
                    ))),
                };
                match (matcher, mailet, on_match_error, on_mailet_error) {
                    (Ok(matcher), Ok(mailet), Ok(on_match_error), Ok(on_mailet_error)) => steps
                        .push(Step {
                            label: format!("{}/{}", entry.matcher, entry.class),
                            matcher,
                            mailet,
                            on_match_error,
                            on_mailet_error,
                        }),
                    (m, a, x, y) => {
                        errors.extend([m.err(), a.err(), x.err(), y.err()].into_iter().flatten())
                    }
                }
            }
            processors.insert(
                processor.name.clone(),
                Processor {
                    name: processor.name.clone(),
                    steps,
                },
            );
        }
        for required in [state::ROOT, state::ERROR] {
            if !processors.contains_key(required) {
                errors.push(
                    config
                        .location
                        .error(format!("a processor named {required:?} is required")),
                );
            }
        }
        if errors.is_empty() {
            Ok(ProcessorTree { processors })
        } else {
            Err(errors)
        }
    }

    /// The processor called `name`.
    pub fn get(&self, name: &str) -> Option<&Processor> {
        self.processors.get(name)
    }
}
