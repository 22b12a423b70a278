//! James 2.3's white list: for each local user, the remote addresses whose mail is never to be
//! taken for spam, kept in James's `whitelist` table (`localUser`, `localHost`, `remoteUser`,
//! `remoteHost`, all lower-case; created on first use) on a data source of
//! `<database-connections>`.
//!
//! * `WhiteListManager` (a mailet): mail from a local user to remote recipients adds them to
//!   the sender's list (`<automaticInsert>`); mail from a local user to
//!   `<whitelistManagerAddress>` alone is a command, by its subject: `<displayFlag>` (the list
//!   is sent back), `<insertFlag>` / `<removeFlag>` (the remote addresses in the plain-text body
//!   are added / removed). A command mail is consumed and the postmaster replies to its sender.
//! * `IsInWhiteList=db://SOURCE` (a matcher): the local recipients in whose list the (remote)
//!   sender is.
//!
//! User names are taken to their primary name (an alias's target), as James does. A database
//! that is away is a temporary failure (the mail stays in the spool).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mail_parser::MimeHeaders;
use mailroom_mailet::{
    state, Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError, Matcher,
    MatcherConfig, Message,
};

use super::compose::Reply;
use crate::sql::{db_url, SqlSources};
use crate::Registry;

/// The most of a command mail's body that is read.
const MAX_COMMAND_BODY: u64 = 256 * 1024;

pub(super) fn register_sql(registry: &mut Registry, sources: Arc<dyn SqlSources>) {
    let matcher_sources = sources.clone();
    registry
        .add_mailet("WhiteListManager", move |c| {
            Ok(Box::new(WhiteListManager::new(c, sources.clone())?))
        })
        .params(&[
            "repositoryPath",
            "automaticInsert",
            "whitelistManagerAddress",
            "displayFlag",
            "insertFlag",
            "removeFlag",
        ])
        .about(
            "Keeps each local user's white list in the whitelist table of <repositoryPath> \
             (db://DATA-SOURCE): <automaticInsert> adds the remote recipients of a local \
             sender's mail; mail to <whitelistManagerAddress> with subject <displayFlag>, \
             <insertFlag> or <removeFlag> lists, adds or removes the addresses in its body, \
             and the postmaster replies.",
            "<mailet match=\"SMTPAuthSuccessful\" class=\"WhiteListManager\"><repositoryPath>\
             db://maildb</repositoryPath><automaticInsert>true</automaticInsert>\
             <whitelistManagerAddress>whitelist.manager@example.org</whitelistManagerAddress>\
             <displayFlag>display</displayFlag><insertFlag>insert</insertFlag><removeFlag>\
             remove</removeFlag></mailet>",
        );
    registry
        .add_matcher("IsInWhiteList", move |c| {
            Ok(Box::new(IsInWhiteList::new(c, matcher_sources.clone())?))
        })
        .about(
            "The local recipients whose white list (kept by WhiteListManager in the data \
             source) holds the mail's remote sender.",
            "<mailet match=\"IsInWhiteList=db://maildb\" class=\"ToProcessor\" \
             onMatchException=\"noMatch\"><processor>transport</processor></mailet>",
        );
}

/// The whitelist table on one data source.
struct WhiteList {
    sources: Arc<dyn SqlSources>,
    source: String,
    table: String,
    created: AtomicBool,
}

/// (user, host) of one side of an entry, lower-case.
type Party = (String, String);

fn party(address: &MailAddress) -> Party {
    (
        address.local_part().to_lowercase(),
        address.domain().to_lowercase(),
    )
}

impl WhiteList {
    fn new(what: &str, url: &str, sources: Arc<dyn SqlSources>) -> Result<WhiteList, MailetError> {
        let (source, table) = db_url(what, url, sources.as_ref())?;
        Ok(WhiteList {
            sources,
            source,
            table: table.unwrap_or_else(|| "whitelist".into()),
            created: AtomicBool::new(false),
        })
    }

    /// Creates the table the first time it is used (James's `createWhiteListTable`). Two
    /// creators at once (two workers, two nodes on one PostgreSQL) may see the other's
    /// `CREATE TABLE IF NOT EXISTS` fail; a table that is there afterwards is all that counts.
    fn ensure(&self) -> Result<(), MailetError> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (localUser varchar(64) NOT NULL, \
             localHost varchar(255) NOT NULL, remoteUser varchar(64) NOT NULL, \
             remoteHost varchar(255) NOT NULL, \
             PRIMARY KEY (localUser, localHost, remoteUser, remoteHost))",
            self.table
        );
        if let Err(e) = self.sources.execute(&self.source, &ddl, &[]) {
            let probe = format!("SELECT localUser FROM {} WHERE 1 = 0", self.table);
            if e.is_temporary() || self.sources.query(&self.source, &probe, &[]).is_err() {
                return Err(e);
            }
        }
        self.created.store(true, Ordering::Release);
        Ok(())
    }

    fn contains(&self, local: &Party, remote: &Party) -> Result<bool, MailetError> {
        self.ensure()?;
        let sql = format!(
            "SELECT localUser, localHost FROM {} WHERE (localUser=? AND localHost=? AND \
             remoteUser=? AND remoteHost=?)",
            self.table
        );
        let rows = self.sources.query(
            &self.source,
            &sql,
            &[&local.0, &local.1, &remote.0, &remote.1],
        )?;
        Ok(!rows.is_empty())
    }

    fn insert(&self, local: &Party, remote: &Party) -> Result<bool, MailetError> {
        if self.contains(local, remote)? {
            return Ok(false);
        }
        let sql = format!(
            "INSERT INTO {} (localUser, localHost, remoteUser, remoteHost) VALUES (?,?,?,?)",
            self.table
        );
        match self.sources.execute(
            &self.source,
            &sql,
            &[&local.0, &local.1, &remote.0, &remote.1],
        ) {
            Ok(_) => Ok(true),
            // Another worker (or node) inserted the same entry since the check: the primary
            // key refuses the second insert, which is no failure of this mail.
            Err(e) if !e.is_temporary() && self.contains(local, remote)? => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, local: &Party, remote: &Party) -> Result<bool, MailetError> {
        self.ensure()?;
        let sql = format!(
            "DELETE FROM {} WHERE (localUser=? AND localHost=? AND remoteUser=? AND \
             remoteHost=?)",
            self.table
        );
        let n = self.sources.execute(
            &self.source,
            &sql,
            &[&local.0, &local.1, &remote.0, &remote.1],
        )?;
        Ok(n > 0)
    }

    fn list(&self, local: &Party) -> Result<Vec<String>, MailetError> {
        self.ensure()?;
        let sql = format!(
            "SELECT remoteUser, remoteHost FROM {} WHERE (localUser=? AND localHost=?) \
             ORDER BY remoteUser, remoteHost",
            self.table
        );
        let rows = self
            .sources
            .query(&self.source, &sql, &[&local.0, &local.1])?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut cells = r.into_iter().map(Option::unwrap_or_default);
                let user = cells.next().unwrap_or_default();
                format!("{user}@{}", cells.next().unwrap_or_default())
            })
            .collect())
    }
}

/// The user's primary name: an alias's target, else the name itself (James's
/// `getPrimaryName`). A users store that is away is a temporary error: the list of the
/// wrong name would be read (or written) otherwise, where James quietly used the name itself.
fn primary_name(user: &str, ctx: &dyn MailetContext) -> Result<String, MailetError> {
    match ctx.local_user(user) {
        Ok(Some(record)) => Ok(record.alias.unwrap_or(record.name).to_lowercase()),
        Err(e) if e.is_temporary() => Err(e),
        _ => Ok(user.to_string()),
    }
}

/// Whether `address` is a local user's.
fn is_local_user(address: &MailAddress, ctx: &dyn MailetContext) -> Result<bool, MailetError> {
    Ok(ctx.is_local_server(address.domain()) && ctx.local_user(address.local_part())?.is_some())
}

struct WhiteListManager {
    list: WhiteList,
    automatic_insert: bool,
    manager: Option<MailAddress>,
    display: Option<String>,
    insert: Option<String>,
    remove: Option<String>,
}

/// What a command mail asks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Insert,
    Remove,
}

impl WhiteListManager {
    fn new(c: &MailetConfig, sources: Arc<dyn SqlSources>) -> Result<Self, MailetError> {
        let path = c.param("repositoryPath").ok_or_else(|| {
            MailetError::new(format!(
                "{}: <repositoryPath> is required: the white list is kept in a data source \
                 of <database-connections> (<repositoryPath>db://maildb</repositoryPath>)",
                c.name
            ))
        })?;
        let list = WhiteList::new(&format!("{}: <repositoryPath>", c.name), path, sources)?;
        let manager = match c.param("whitelistManagerAddress").map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(MailAddress::parse(text).map_err(|e| {
                MailetError::new(format!(
                    "{}: <whitelistManagerAddress> {text:?}: {e}",
                    c.name
                ))
            })?),
        };
        let flag = |name: &str| {
            c.param(name)
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
        };
        Ok(WhiteListManager {
            list,
            automatic_insert: c.bool_param("automaticInsert", false)?,
            manager,
            display: flag("displayFlag"),
            insert: flag("insertFlag"),
            remove: flag("removeFlag"),
        })
    }

    /// Runs a command mail's subject; the reply's text.
    fn command(
        &self,
        mail: &Mail,
        manager: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<String, MailetError> {
        let sender = mail.sender().expect("checked by service");
        let subject = mail.message.subject().unwrap_or_default();
        let local = (
            primary_name(&sender.local_part().to_lowercase(), ctx)?,
            sender.domain().to_lowercase(),
        );
        let owner = format!("{}@{}", local.0, local.1);
        let mut out = format!("Answering on behalf of: {manager}\n");
        let is = |flag: &Option<String>| flag.as_deref() == Some(subject.trim());
        if is(&self.display) {
            out.push_str(&format!("Displaying white list of {owner}:\n\n"));
            for address in self.list.list(&local)? {
                out.push_str(&address);
                out.push('\n');
            }
        } else if is(&self.insert) || is(&self.remove) {
            let command = if is(&self.insert) {
                Command::Insert
            } else {
                Command::Remove
            };
            out.push_str(&match command {
                Command::Insert => format!("Inserting in the white list of {owner} ...\n\n"),
                Command::Remove => format!("Removing from the white list of {owner} ...\n\n"),
            });
            match plain_body(&mail.message) {
                None => out.push_str("The message must be plain - no action\n"),
                Some(text) => {
                    for token in
                        text.split([' ', '\t', '\n', '\r', '\x0c', ',', ';', ':', '<', '>'])
                    {
                        let Ok(address) = MailAddress::parse(token) else {
                            continue;
                        };
                        if ctx.is_local_server(address.domain()) {
                            continue;
                        }
                        let remote = party(&address);
                        let done = match command {
                            Command::Insert => self.list.insert(&local, &remote)?,
                            Command::Remove => self.list.remove(&local, &remote)?,
                        };
                        out.push_str(&match (command, done) {
                            (Command::Insert, true) => format!("Inserted: {address}\n"),
                            (Command::Remove, true) => format!("Removed: {address}\n"),
                            (_, false) => format!("Skipped: {address}\n"),
                        });
                    }
                }
            }
        } else {
            out.push_str(&format!(
                "ERROR: Unknown command in the subject line: {subject}\n"
            ));
            return Ok(out);
        }
        out.push_str("\nFinished\n");
        Ok(out)
    }
}

/// The text of a `text/plain` message (no Content-Type counts as one), decoded; `None` for
/// anything else or a body too large to be a command.
fn plain_body(message: &Message) -> Option<String> {
    if message.size() > MAX_COMMAND_BODY {
        return None;
    }
    let bytes = message.to_bytes().ok()?;
    let parsed = mail_parser::MessageParser::default().parse(&bytes)?;
    let plain = parsed.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
    });
    if !plain {
        return None;
    }
    Some(
        parsed
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
    )
}

/// The postmaster's reply to a command mail's sender.
fn reply(mail: &Mail, text: String, ctx: &dyn MailetContext) -> Result<(), MailetError> {
    let sender = mail.sender().expect("checked by service");
    let subject = mail.message.subject().unwrap_or_default();
    let subject = if subject.starts_with("Re:") {
        subject
    } else {
        format!("Re:{subject}")
    };
    let reply = Reply {
        from: (None, ctx.postmaster()),
        to: (None, sender),
        subject: &subject,
        text: &text,
        reply_to: None,
        auto_submitted: false,
    };
    ctx.send_mail(reply.to_mail(mail, ctx.server_name())?)
}

impl Mailet for WhiteListManager {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let Some(sender) = mail.sender().cloned() else {
            return Ok(());
        };
        if !is_local_user(&sender, ctx)? {
            return Ok(());
        }
        if let Some(manager) = &self.manager {
            if mail.recipients() == std::slice::from_ref(manager) {
                let text = self.command(mail, manager, ctx)?;
                reply(mail, text, ctx)?;
                mail.set_state(state::GHOST);
                return Ok(());
            }
        }
        if self.automatic_insert {
            let local = (
                primary_name(&sender.local_part().to_lowercase(), ctx)?,
                sender.domain().to_lowercase(),
            );
            for rcpt in mail.recipients() {
                if !ctx.is_local_server(rcpt.domain()) {
                    self.list.insert(&local, &party(rcpt))?;
                }
            }
        }
        Ok(())
    }
}

struct IsInWhiteList {
    list: WhiteList,
}

impl IsInWhiteList {
    fn new(c: &MatcherConfig, sources: Arc<dyn SqlSources>) -> Result<Self, MailetError> {
        let condition = c.required_condition()?;
        let url = condition
            .split([',', ' ', '\t'])
            .find(|t| !t.is_empty())
            .unwrap_or(condition);
        Ok(IsInWhiteList {
            list: WhiteList::new(&format!("matcher {}", c.name), url, sources)?,
        })
    }
}

impl Matcher for IsInWhiteList {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let Some(sender) = mail.sender() else {
            return Ok(Vec::new());
        };
        if is_local_user(sender, ctx)? {
            return Ok(Vec::new());
        }
        let remote = party(sender);
        let mut matched = Vec::new();
        for rcpt in mail.recipients() {
            if !ctx.is_local_server(rcpt.domain()) {
                continue;
            }
            let local = (
                primary_name(&rcpt.local_part().to_lowercase(), ctx)?,
                rcpt.domain().to_lowercase(),
            );
            if self.list.contains(&local, &remote)? {
                matched.push(rcpt.clone());
            }
        }
        Ok(matched)
    }
}

#[cfg(test)]
#[path = "whitelist_tests.rs"]
mod tests;
