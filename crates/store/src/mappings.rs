//! Virtual user table mappings: which addresses a recipient is rewritten to.
//!
//! A table maps a source — `user@domain`, `*@domain` (every user of a domain) or `user@*`
//! (that user in every domain) — to one or more targets, in James's syntax:
//!
//! * an address `someone@example.org`, or a bare local user name `someone`;
//! * `error:CODE text`: refuse the recipient with that SMTP code and text;
//! * `regex:pattern:replacement`: rewrite the address with a regular expression;
//! * `domain:other.example`: the same user in another domain.
//!
//! Sources are compared case-insensitively (they are stored lower-cased). The RemoteManager
//! edits the tables; the spool's mapping mailets read them.

use std::fmt;

use mailroom_mailet::MailAddress;

use crate::Result;

/// The table used when a command names none.
pub const DEFAULT_TABLE: &str = "default";

/// A store of mapping tables, each named (`table=name` in the RemoteManager).
#[async_trait::async_trait]
pub trait MappingsRepository: Send + Sync {
    /// Adds `target` to the mappings of `source` in `table` (created on first use). Returns
    /// false if that mapping is there already. Both must be valid ([`Source::parse`],
    /// [`Target::parse`]); callers check first.
    async fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool>;

    /// Removes one mapping; returns whether it was there.
    async fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool>;

    /// The targets of exactly `source` (no wildcard resolution), in the order they were added.
    async fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>>;

    /// Every source of `table` with its targets, sorted by source.
    async fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>>;
}

/// Mapping tables kept in different repositories: the tables named in `routes` (each in its
/// own repository, a database's), every other table in `rest` (the files under the home).
pub struct RoutedMappings {
    routes: std::collections::HashMap<String, std::sync::Arc<dyn MappingsRepository>>,
    rest: std::sync::Arc<dyn MappingsRepository>,
}

impl RoutedMappings {
    /// `routes`: table name → its repository; other tables go to `rest`.
    pub fn new(
        routes: impl IntoIterator<Item = (String, std::sync::Arc<dyn MappingsRepository>)>,
        rest: std::sync::Arc<dyn MappingsRepository>,
    ) -> Self {
        RoutedMappings {
            routes: routes
                .into_iter()
                .map(|(name, repo)| (name.to_lowercase(), repo))
                .collect(),
            rest,
        }
    }

    fn route(&self, table: &str) -> &dyn MappingsRepository {
        self.routes
            .get(&table.to_lowercase())
            .map_or(&*self.rest, |repo| &**repo)
    }
}

#[async_trait::async_trait]
impl MappingsRepository for RoutedMappings {
    async fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        self.route(table).add(table, source, target).await
    }

    async fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        self.route(table).remove(table, source, target).await
    }

    async fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>> {
        self.route(table).get(table, source).await
    }

    async fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>> {
        self.route(table).all(table).await
    }
}

/// The targets `address` maps to in `table`: the most specific source wins, `user@domain`,
/// then `user@*`, then `*@domain`. Empty when nothing maps it. A local part that cannot be a
/// source (quoted, odd characters) has no mapping.
pub async fn targets_of(
    repo: &dyn MappingsRepository,
    table: &str,
    address: &MailAddress,
) -> Result<Vec<Target>> {
    let (user, domain) = (address.local_part(), address.domain());
    for source in [
        format!("{user}@{domain}"),
        format!("{user}@*"),
        format!("*@{domain}"),
    ] {
        let Ok(source) = Source::parse(&source) else {
            continue;
        };
        let targets = repo.get(table, &source).await?;
        if !targets.is_empty() {
            return Ok(targets);
        }
    }
    Ok(Vec::new())
}

/// The left side of a mapping: `user@domain`, `*@domain` or `user@*`, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(String);

impl Source {
    /// Parses and lower-cases a source; the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Source, String> {
        let text = text.trim().to_lowercase();
        let (user, domain) = text
            .rsplit_once('@')
            .ok_or_else(|| format!("{text:?} is not user@domain"))?;
        if user.is_empty() || domain.is_empty() {
            return Err(format!("{text:?} is not user@domain"));
        }
        if user == "*" && domain == "*" {
            return Err("*@* would map every address".into());
        }
        // Check the concrete parts as an address would be checked.
        let probe = format!(
            "{}@{}",
            if user == "*" { "x" } else { user },
            if domain == "*" { "x.invalid" } else { domain }
        );
        MailAddress::parse(&probe).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Source(text))
    }

    /// The source as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The right side of a mapping, checked when it is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Deliver to this address.
    Address(MailAddress),
    /// Deliver to this local user (of the default domain).
    User(String),
    /// `error:CODE text`: refuse with this SMTP reply.
    Error {
        /// A 4xx or 5xx code.
        code: u16,
        /// The reply text.
        text: String,
    },
    /// `regex:pattern:replacement`, the pattern being a valid regular expression.
    Regex {
        /// Matched against the whole address.
        pattern: String,
        /// `$1`... refer to the pattern's groups.
        replacement: String,
    },
    /// `domain:other.example`: the same user in this domain.
    Domain(String),
}

impl Target {
    /// Parses a target; the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Target, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("error:") {
            let (code, reply) = rest.split_once(' ').unwrap_or((rest, ""));
            let code: u16 = code
                .parse()
                .ok()
                .filter(|c| (400..600).contains(c))
                .ok_or_else(|| format!("error:{code} needs a 4xx or 5xx code"))?;
            return Ok(Target::Error {
                code,
                text: reply.trim().to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("regex:") {
            let (pattern, replacement) = rest
                .rsplit_once(':')
                .ok_or("regex: needs pattern:replacement")?;
            regex::Regex::new(pattern).map_err(|e| format!("bad regular expression: {e}"))?;
            return Ok(Target::Regex {
                pattern: pattern.to_string(),
                replacement: replacement.to_string(),
            });
        }
        if let Some(domain) = text.strip_prefix("domain:") {
            let domain = domain.to_lowercase();
            MailAddress::parse(&format!("x@{domain}")).map_err(|e| format!("{domain:?}: {e}"))?;
            return Ok(Target::Domain(domain));
        }
        if text.contains('@') {
            return MailAddress::parse(text)
                .map(Target::Address)
                .map_err(|e| format!("{text:?}: {e}"));
        }
        crate::validate_user_name(text).map_err(|e| e.to_string())?;
        if text.is_empty() || text.contains([' ', ':']) {
            return Err(format!("{text:?} is not an address or a user name"));
        }
        Ok(Target::User(text.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(address) => write!(f, "{address}"),
            Target::User(user) => f.write_str(user),
            Target::Error { code, text } if text.is_empty() => write!(f, "error:{code}"),
            Target::Error { code, text } => write!(f, "error:{code} {text}"),
            Target::Regex {
                pattern,
                replacement,
            } => write!(f, "regex:{pattern}:{replacement}"),
            Target::Domain(domain) => write!(f, "domain:{domain}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("Bob@Example.ORG").unwrap().as_str(),
            "bob@example.org"
        );
        assert_eq!(
            Source::parse("*@example.org").unwrap().as_str(),
            "*@example.org"
        );
        assert_eq!(Source::parse("bob@*").unwrap().as_str(), "bob@*");
        for bad in ["bob", "@example.org", "bob@", "*@*", "a b@example.org", ""] {
            assert!(Source::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets_round_trip() {
        for text in [
            "alice@example.org",
            "alice",
            "error:550 no such user",
            "error:421",
            "regex:(.*)@example.org:$1@example.net",
            "domain:example.net",
        ] {
            let target = Target::parse(text).unwrap();
            assert_eq!(target.to_string(), text);
        }
    }

    #[test]
    fn bad_targets() {
        for bad in [
            "error:250 fine",
            "error:abc",
            "regex:([:x",
            "regex:nocolon",
            "domain:",
            "a@",
            "../etc",
            "two words",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
