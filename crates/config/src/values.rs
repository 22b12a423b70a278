//! Reading typed values out of [`Element`]s while collecting errors.
//!
//! Every helper records a located error and falls back to the default, so one pass over the
//! document reports every problem.

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::url::{resolve_path, RepositoryUrl};
use crate::xml::Element;

/// `true`/`false`/`yes`/`no`, case-insensitive.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

/// The parsing context: the home directory and the errors so far.
pub(crate) struct Ctx {
    pub home: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl Ctx {
    pub fn new(home: &Path) -> Ctx {
        Ctx {
            home: home.to_path_buf(),
            errors: Vec::new(),
        }
    }

    pub fn err(&mut self, el: &Element, message: impl Into<String>) {
        self.errors.push(el.error(message));
    }

    /// The child `name`, reporting a repeated one (a single-valued option written twice is
    /// nearly always a mistake).
    pub fn single<'a>(&mut self, parent: &'a Element, name: &str) -> Option<&'a Element> {
        let found: Vec<&'a Element> = parent.children.iter().filter(|c| c.name == name).collect();
        let first = *found.first()?;
        for dup in &found[1..] {
            self.err(
                dup,
                format!(
                    "<{name}> appears more than once in <{}> (first at line {})",
                    parent.name, first.line
                ),
            );
        }
        Some(first)
    }

    /// Trimmed text of the single child `name`.
    pub fn text<'a>(&mut self, parent: &'a Element, name: &str) -> Option<&'a str> {
        self.single(parent, name).map(|e| e.text.as_str())
    }

    /// Trimmed text of the single child `name`, which must not be empty when present.
    pub fn nonempty_text(&mut self, parent: &Element, name: &str) -> Option<String> {
        let el = self.single(parent, name)?;
        if el.text.is_empty() {
            self.err(el, format!("<{name}> must not be empty"));
            return None;
        }
        Some(el.text.clone())
    }

    pub fn bool_value(&mut self, el: &Element, what: &str, value: &str, default: bool) -> bool {
        parse_bool(value).unwrap_or_else(|| {
            self.err(
                el,
                format!("{what} must be true or false (or yes/no), got \"{value}\""),
            );
            default
        })
    }

    /// A boolean child element; `default` when absent.
    pub fn bool_child(&mut self, parent: &Element, name: &str, default: bool) -> bool {
        match self.single(parent, name) {
            Some(el) => self.bool_value(el, &format!("<{name}>"), &el.text, default),
            None => default,
        }
    }

    /// A boolean attribute of `el`; `default` when absent.
    pub fn bool_attr(&mut self, el: &Element, attr: &str, default: bool) -> bool {
        match el.attr(attr) {
            Some(v) => self.bool_value(
                el,
                &format!("attribute {attr} of <{}>", el.name),
                v,
                default,
            ),
            None => default,
        }
    }

    /// A number within `min..=max` written in `value`; records an error and returns `None` when
    /// it is not one.
    pub fn number<T>(&mut self, el: &Element, what: &str, value: &str, min: T, max: T) -> Option<T>
    where
        T: Copy + Into<u64> + TryFrom<u64> + std::fmt::Display,
    {
        match value.parse::<u64>() {
            Ok(n) if n >= min.into() && n <= max.into() => T::try_from(n).ok(),
            _ => {
                self.err(
                    el,
                    format!("{what} must be a number from {min} to {max}, got \"{value}\""),
                );
                None
            }
        }
    }

    /// A numeric child element within `min..=max`; `default` when absent or wrong.
    pub fn num_child<T>(&mut self, parent: &Element, name: &str, min: T, max: T, default: T) -> T
    where
        T: Copy + Into<u64> + TryFrom<u64> + std::fmt::Display,
    {
        match self.single(parent, name) {
            Some(el) => self
                .number(el, &format!("<{name}>"), &el.text, min, max)
                .unwrap_or(default),
            None => default,
        }
    }

    /// A numeric attribute within `min..=max`; `default` when absent or wrong.
    pub fn num_attr<T>(&mut self, el: &Element, attr: &str, min: T, max: T, default: T) -> T
    where
        T: Copy + Into<u64> + TryFrom<u64> + std::fmt::Display,
    {
        match el.attr(attr) {
            Some(v) => self
                .number(
                    el,
                    &format!("attribute {attr} of <{}>", el.name),
                    v,
                    min,
                    max,
                )
                .unwrap_or(default),
            None => default,
        }
    }

    /// A required attribute; records an error when it is absent or empty.
    pub fn required_attr(&mut self, el: &Element, attr: &str) -> Option<String> {
        match el.attr(attr) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            Some(_) => {
                self.err(
                    el,
                    format!("attribute {attr} of <{}> must not be empty", el.name),
                );
                None
            }
            None => {
                self.err(
                    el,
                    format!("<{}> needs a {attr}=\"...\" attribute", el.name),
                );
                None
            }
        }
    }

    /// A path child element resolved against the home; `default` (also resolved) when absent.
    pub fn path_child(&mut self, parent: &Element, name: &str, default: &str) -> PathBuf {
        let text = self
            .text(parent, name)
            .filter(|t| !t.is_empty())
            .unwrap_or(default);
        resolve_path(&self.home, text)
    }

    /// A repository URL written at `el`.
    pub fn url(&mut self, el: &Element, url: &str) -> Option<RepositoryUrl> {
        RepositoryUrl::parse(url, &self.home)
            .map_err(|e| self.err(el, e))
            .ok()
    }

    /// Logs (without failing) children of `el` that are not in `known`, so typos are visible.
    pub fn warn_unknown(&self, el: &Element, known: &[&str]) {
        for c in &el.children {
            if !known.contains(&c.name.as_str()) {
                tracing::warn!(
                    "{}: unknown element <{}> in <{}> ignored (known: {})",
                    c.location(),
                    c.name,
                    el.name,
                    known.join(", ")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for (s, v) in [
            ("true", true),
            ("YES", true),
            (" False ", false),
            ("no", false),
        ] {
            assert_eq!(parse_bool(s), Some(v));
        }
        assert_eq!(parse_bool("1"), None);
    }
}
