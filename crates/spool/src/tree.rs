//! The processor tree: `<spoolmanager>` turned into matcher/mailet instances, with every name
//! checked at start-up so that a typo stops the server with the file and line.

use std::collections::BTreeMap;

use mailroom_config::{ConfigError, SpoolManager as SpoolManagerConfig};
use mailroom_mailet::{state, Mailet, MailetConfig, Matcher, MatcherConfig};

use crate::registry::{short_name, Registry};

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
        for processor in &config.processors {
            let mut steps = Vec::new();
            for entry in &processor.mailets {
                let err = |message: String| entry.location.error(message);
                let (matcher_text, condition) = (entry.matcher_name(), entry.matcher_condition());
                let matcher = short_name(matcher_text, matcher_packages)
                    .and_then(|short| {
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
                    })
                    .map_err(err);
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
