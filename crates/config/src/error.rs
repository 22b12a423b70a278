//! Configuration errors: every problem names the file and line it comes from.
//!
//! Parsing collects as many problems as it can into a [`ConfigErrors`] so an administrator fixes
//! a broken `config.xml` in one pass instead of one restart per typo.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where a value came from: the file (the main config or an entity-included fragment) and the
/// 1-based line. Kept on processors, mailets and services so later stages (the spool manager,
/// the servers) can report their own errors against the right line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as it was named when loading (used verbatim in messages).
    pub file: Arc<Path>,
    /// 1-based line number; 0 when the problem concerns the whole file.
    pub line: u32,
}

impl Location {
    /// A location in `file` at `line`.
    pub fn new(file: Arc<Path>, line: u32) -> Self {
        Location { file, line }
    }

    /// An error at this location.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// One configuration problem, printed as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", Location::new(.file.clone(), *.line))]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: Arc<Path>,
    /// 1-based line; 0 when the problem concerns the whole file (for example it cannot be read).
    pub line: u32,
    /// What is wrong, phrased for an administrator.
    pub message: String,
}

impl ConfigError {
    /// The location of this error.
    pub fn location(&self) -> Location {
        Location::new(self.file.clone(), self.line)
    }
}

/// Every problem found in one configuration, sorted by file (the main file first) and line.
/// Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, `file:line: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
