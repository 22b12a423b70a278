//! The RCPT-time recipient check (`<verifyRecipients>`, on by default): whether an address in a
//! local domain is a user or a virtual-table source, so that the SMTP server refuses unknown
//! local recipients with `550 5.1.1` instead of accepting and filing them (no backscatter).
//!
//! It reads the users repository and the virtual user tables through the async store traits;
//! the SMTP driver awaits it between a RCPT and its reply (see `mailroom_smtp::RecipientCheck`).
//! It answers what the processor tree would do with the recipient, not more: mail that the
//! tree would deliver or map is accepted, and the tree still has the last word.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use mailroom_config::{split_matcher, Config};
use mailroom_mailet::MailAddress;
use mailroom_smtp::{RecipientCheck, RecipientVerdict};
use mailroom_spool::registry::short_name;
use mailroom_store::mappings::{targets_of, Target, DEFAULT_TABLE};
use mailroom_store::{MappingsRepository, StoreError, UsersRepository};

/// The mailets that apply a virtual user table (see `mailroom_spool::mailets::mapping`).
const TABLE_MAILETS: [&str; 2] = ["VirtualUserTable", "JDBCVirtualUserTable"];

/// Looks local recipients up in the users repository and the virtual user tables.
#[derive(Clone)]
pub struct LocalRecipients {
    users: Arc<dyn UsersRepository>,
    mappings: Arc<dyn MappingsRepository>,
    /// The tables the processor tree's mapping mailets read, in the order they are consulted
    /// (none when the tree has no mapping mailet: its mappings would do nothing).
    tables: Vec<String>,
    /// `<usernames ignoreCase>`: without it, `Bob@` is not the user `bob`, as in delivery.
    ignore_case: bool,
    /// Addresses the tree routes by name (`RecipientIs=abuse@example.org`), lower-cased: a
    /// migrated James configuration may handle them with no user behind them.
    routed: HashSet<String>,
    /// Local parts the tree routes by name (`UserIs=abuse`), lower-cased.
    routed_users: HashSet<String>,
    /// Addresses the tree routes by pattern (`RecipientIsRegex=list-.*@example.org`).
    routed_patterns: Vec<regex::Regex>,
    /// The sources of the tree's `XMLVirtualUserTable` mappings (`user@dom`, `user@*`,
    /// `*@dom`), lower-cased.
    inline_sources: HashSet<String>,
    /// Whether the tree maps through James's database table (`JDBCVirtualUserTable` on a
    /// `db://` table), which is not read here: an unknown local recipient is then accepted
    /// and the tree decides.
    database_table: bool,
    /// The command addresses of mailing lists (`CommandListservMatcher=list@example.org`
    /// routes every `list-command@example.org`): `list-` and the domain, lower-cased.
    list_commands: Vec<(String, String)>,
}

/// The `match=` of every `<matcher>` declaration in `decls` and below.
fn collect_declared<'a>(decls: &'a [mailroom_config::MatcherDecl], out: &mut Vec<&'a str>) {
    for decl in decls {
        out.push(&decl.matcher);
        collect_declared(&decl.children, out);
    }
}

impl LocalRecipients {
    /// A check over these repositories, reading the tables that `config`'s tree uses.
    pub fn new(
        config: &Config,
        users: Arc<dyn UsersRepository>,
        mappings: Arc<dyn MappingsRepository>,
    ) -> Self {
        let mut tables = Vec::new();
        let (mut routed, mut routed_users) = (HashSet::new(), HashSet::new());
        let mut list_commands = Vec::new();
        let (mut inline_sources, mut database_table) = (HashSet::new(), false);
        let mut routed_patterns = Vec::new();
        // Every matcher of the tree: the mailets' and those of the <matcher> declarations.
        let spool_manager = &config.spool_manager;
        let mut declared = Vec::new();
        collect_declared(&spool_manager.matchers, &mut declared);
        for processor in &spool_manager.processors {
            collect_declared(&processor.matchers, &mut declared);
        }
        let matchers = spool_manager
            .processors
            .iter()
            .flat_map(|p| &p.mailets)
            .map(|m| m.matcher.as_str())
            .chain(declared);
        for text in matchers {
            let (matcher, condition) = split_matcher(text);
            let matcher = short_name(matcher, &config.matcher_packages).unwrap_or("");
            let names = condition
                .unwrap_or("")
                .split([',', ' ', '\t'])
                .map(|n| n.trim().to_lowercase())
                .filter(|n| !n.is_empty());
            match matcher {
                "RecipientIs" => routed.extend(names),
                "UserIs" => routed_users.extend(names),
                // Anchored as the matcher anchors it; a bad one stops the tree anyway.
                "RecipientIsRegex" => routed_patterns.extend(
                    regex::Regex::new(&format!("^(?:{})$", condition.unwrap_or("").trim())).ok(),
                ),
                "CommandForListserv" => {
                    for (list, domain) in names.filter_map(|n| split_address(&n)) {
                        routed.insert(format!("{list}-on@{domain}"));
                        routed.insert(format!("{list}-off@{domain}"));
                    }
                }
                "CommandListservMatcher" => list_commands.extend(
                    names
                        .filter_map(|n| split_address(&n))
                        .map(|(list, domain)| (format!("{list}-"), domain)),
                ),
                _ => {}
            }
        }
        for mailet in spool_manager.processors.iter().flat_map(|p| &p.mailets) {
            let class = short_name(&mailet.class, &config.mailet_packages).unwrap_or("");
            if class == "WhiteListManager" {
                // Its commands come by mail to this address, which need be no user.
                let manager = mailet
                    .params
                    .iter()
                    .filter(|(n, _)| n == "whitelistManagerAddress");
                routed.extend(manager.map(|(_, value)| value.trim().to_lowercase()));
                continue;
            }
            if class == "XMLVirtualUserTable" {
                let mappings = mailet.params.iter().filter(|(name, _)| name == "mapping");
                inline_sources.extend(mappings.flat_map(|(_, value)| {
                    value
                        .split(',')
                        .filter_map(|m| Some(m.split_once('=')?.0.trim().to_lowercase()))
                        .collect::<Vec<_>>()
                }));
                continue;
            }
            if !TABLE_MAILETS.contains(&class) {
                continue;
            }
            let table = mailet
                .params
                .iter()
                .find(|(name, _)| name == "table")
                .map_or(DEFAULT_TABLE, |(_, value)| value.as_str());
            if table.starts_with("db://") {
                database_table = true;
                continue;
            }
            if !tables.iter().any(|t| t == table) {
                tables.push(table.to_string());
            }
        }
        LocalRecipients {
            users,
            mappings,
            tables,
            ignore_case: config.james.usernames.ignore_case,
            routed,
            routed_users,
            routed_patterns,
            inline_sources,
            database_table,
            list_commands,
        }
    }

    /// The virtual user tables the processor tree reads, in the order it consults them.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Logs one warning when the `<postmaster>` is in a local domain but is no user and no
    /// virtual-table source: bounces and mail to `postmaster@` every local domain go there,
    /// and would be filed as address errors where nobody reads them.
    pub async fn warn_if_postmaster_is_missing(&self, config: &Config, postmaster: &MailAddress) {
        if !config.james.is_local_domain(postmaster.domain()) {
            return;
        }
        if self.check(postmaster).await == RecipientVerdict::Unknown {
            tracing::warn!(
                "the postmaster {postmaster} is not a local user, so mail to the postmaster \
                 (bounces, postmaster@ every local domain) is filed as an address error: add \
                 the user with `mailroom user add {}`, or map the address to a user with the \
                 RemoteManager's `addmapping {postmaster} someone@{}`",
                postmaster.local_part(),
                postmaster.domain()
            );
        }
    }

    async fn lookup(&self, recipient: &MailAddress) -> Result<RecipientVerdict, StoreError> {
        let address = recipient.to_string();
        if self.routed.contains(&address.to_lowercase())
            || self
                .routed_users
                .contains(&recipient.local_part().to_lowercase())
            || self.routed_patterns.iter().any(|p| p.is_match(&address))
            || self.list_commands.iter().any(|(prefix, domain)| {
                recipient.local_part().to_lowercase().starts_with(prefix)
                    && recipient.domain().eq_ignore_ascii_case(domain)
            })
        {
            return Ok(RecipientVerdict::Known);
        }
        let (user, domain) = (
            recipient.local_part().to_lowercase(),
            recipient.domain().to_lowercase(),
        );
        if [
            format!("{user}@{domain}"),
            format!("{user}@*"),
            format!("*@{domain}"),
        ]
        .iter()
        .any(|source| self.inline_sources.contains(source))
        {
            return Ok(RecipientVerdict::Known);
        }
        // Tables first: the tree maps recipients before it delivers, so a mapping (an
        // `error:` one in particular) wins over a user of the same name.
        for table in &self.tables {
            let targets = targets_of(&*self.mappings, table, recipient).await?;
            if targets.is_empty() {
                continue;
            }
            // Refused only when every target refuses; otherwise some copy goes somewhere and
            // the tree reports the refused part.
            let refusal = targets.iter().find_map(|t| match t {
                Target::Error { code, text } => Some((*code, text.clone())),
                _ => None,
            });
            let all_errors = targets.iter().all(|t| matches!(t, Target::Error { .. }));
            return Ok(match refusal {
                Some((code, text)) if all_errors => RecipientVerdict::Refused { code, text },
                _ => RecipientVerdict::Known,
            });
        }
        let name = recipient.local_part();
        match self.users.get(name).await {
            Ok(Some(user)) if self.ignore_case || user.name == name => Ok(RecipientVerdict::Known),
            Ok(_) if self.database_table => Ok(RecipientVerdict::Known),
            Ok(_) => Ok(RecipientVerdict::Unknown),
            // A local part that cannot be a user name (`a/b`) is no user.
            Err(StoreError::InvalidName(..)) => Ok(RecipientVerdict::Unknown),
            Err(e) => Err(e),
        }
    }
}

/// `list@domain` as (`list`, `domain`).
fn split_address(address: &str) -> Option<(String, String)> {
    let (list, domain) = address.rsplit_once('@')?;
    Some((list.to_string(), domain.to_string()))
}

#[async_trait]
impl RecipientCheck for LocalRecipients {
    async fn check(&self, recipient: &MailAddress) -> RecipientVerdict {
        // Several repository calls: made in one hop to the blocking pool, where a blocking
        // backend runs them inline, rather than one hop each (a hop costs tens of µs of CPU,
        // and every RCPT makes one).
        let (this, rcpt) = (self.clone(), recipient.clone());
        let runtime = tokio::runtime::Handle::current();
        let looked_up = tokio::task::spawn_blocking(move || {
            mailroom_store::may_block_on_this_thread();
            runtime.block_on(this.lookup(&rcpt))
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e.to_string()))));
        looked_up.unwrap_or_else(|error| {
            tracing::warn!(rcpt = %recipient, %error, "cannot look up a recipient; answered 451");
            RecipientVerdict::Unavailable
        })
    }
}
