//! JDBCListserv: James 2.3's mailing list whose members and settings are rows of a database.
//!
//! `<data_source>` names a data source of `<database-connections>`; `<listserv_table>` holds
//! the list's settings (`listserv_id`, `members_only`, `attachments_allowed`, `reply_to_list`,
//! `subject_prefix`, `list_address`), `<members_table>` its members (`listserv_id`, `member`).
//! Both are read on the list's first mail and kept (`<cache_settings>`, default true), or read
//! for every mail when it is false. A list without its settings row is a configuration error.
//!
//! A mail to the list is handled as James's `GenericListserv` does, by the code AvalonListserv
//! shares ([`post::serve`]): it goes on to every member from the postmaster, `Return-Path:`
//! removed, the subject prefixed `[prefix] ` (with James's `Re:` normalising), `Reply-To:` the
//! list when `reply_to_list`, `X-been-there:` the list; a non-member's mail to a members-only
//! list, or a multipart mail to a list that takes no attachments, is answered with a notice
//! to its sender. Only where the members and settings come from differs. A database that is
//! away keeps the mail in the spool.

use std::sync::{Arc, Mutex};

use mailroom_mailet::{Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError};

use super::lists::post::{self, PostRules};

use crate::sql::{check_table, identifier, SqlSources};
use crate::Registry;

pub(super) fn register_sql(registry: &mut Registry, sources: Arc<dyn SqlSources>) {
    registry
        .add_mailet("JDBCListserv", move |c| {
            Ok(Box::new(JdbcListserv::new(c, sources.clone())?))
        })
        .params(&[
            "data_source",
            "listserv_id",
            "listserv_table",
            "members_table",
            "cache_settings",
        ])
        .about(
            "A mailing list kept in a database: members in <members_table> (listserv_id, \
             member), settings in <listserv_table> (members_only, attachments_allowed, \
             reply_to_list, subject_prefix, list_address) for <listserv_id> on <data_source>. \
             Sends the mail on to every member from the postmaster.",
            "<mailet match=\"RecipientIs=list@example.org\" class=\"JDBCListserv\">\
             <data_source>maildb</data_source><listserv_id>list</listserv_id>\
             <listserv_table>listserv</listserv_table><members_table>listserv_members\
             </members_table></mailet>",
        );
}

/// A list's settings and members, as read from the database.
#[derive(Clone, Debug, PartialEq)]
struct List {
    members: Vec<MailAddress>,
    rules: PostRules,
    address: Option<MailAddress>,
}

struct JdbcListserv {
    sources: Arc<dyn SqlSources>,
    source: String,
    id: String,
    settings_query: String,
    members_query: String,
    cache: bool,
    cached: Mutex<Option<List>>,
}

impl JdbcListserv {
    fn new(c: &MailetConfig, sources: Arc<dyn SqlSources>) -> Result<Self, MailetError> {
        let source = c.required("data_source")?.trim().to_string();
        let known = sources.names();
        if !known.contains(&source) {
            return Err(MailetError::new(format!(
                "{}: <data_source> {source:?} is not a data source of <database-connections> \
                 (configured: {})",
                c.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let id = c.required("listserv_id")?.trim().to_string();
        let table = |name: &str| -> Result<String, MailetError> {
            Ok(identifier(&format!("{}: <{name}>", c.name), c.required(name)?.trim())?.to_string())
        };
        let (lists, members) = (table("listserv_table")?, table("members_table")?);
        for name in [&lists, &members] {
            check_table(&c.name, sources.as_ref(), &source, name)?;
        }
        Ok(JdbcListserv {
            sources,
            source,
            id,
            settings_query: format!(
                "SELECT members_only, attachments_allowed, reply_to_list, subject_prefix, \
                 list_address FROM {lists} WHERE listserv_id = ?"
            ),
            members_query: format!("SELECT member FROM {members} WHERE listserv_id = ?"),
            cache: c.bool_param("cache_settings", true)?,
            cached: Mutex::default(),
        })
    }

    /// The list, from the cache or the database.
    fn list(&self, ctx: &dyn MailetContext) -> Result<List, MailetError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = cached.as_ref().filter(|_| self.cache) {
            return Ok(list.clone());
        }
        let mut members = Vec::new();
        for row in self
            .sources
            .query(&self.source, &self.members_query, &[&self.id])?
        {
            let text = row.into_iter().next().flatten().unwrap_or_default();
            match MailAddress::parse(text.trim()) {
                Ok(member) => members.push(member),
                Err(_) => ctx.log(&format!(
                    "error parsing address '{text}' in listserv '{}'",
                    self.id
                )),
            }
        }
        let rows = self
            .sources
            .query(&self.source, &self.settings_query, &[&self.id])?;
        let row = rows.into_iter().next().ok_or_else(|| {
            MailetError::permanent(format!("Could not find listserv record for '{}'", self.id))
        })?;
        let cell = |i: usize| row.get(i).cloned().flatten();
        let flag = |i: usize| {
            cell(i).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "t" | "yes" | "y"
                )
            })
        };
        let address = cell(4).and_then(|a| match MailAddress::parse(a.trim()) {
            Ok(address) => Some(address),
            Err(_) => {
                ctx.log(&format!(
                    "invalid listserv address '{a}' for listserv '{}'",
                    self.id
                ));
                None
            }
        });
        let list = List {
            members,
            rules: PostRules {
                members_only: flag(0),
                attachments_allowed: flag(1),
                reply_to_list: flag(2),
                subject_prefix: PostRules::prefix(cell(3).as_deref(), true),
            },
            address,
        };
        *cached = Some(list.clone());
        Ok(list)
    }
}

impl Mailet for JdbcListserv {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let list = self.list(ctx)?;
        post::serve(&list.rules, mail, ctx, list.members, list.address)
    }
}

#[cfg(test)]
#[path = "jdbc_listserv_tests.rs"]
mod tests;
