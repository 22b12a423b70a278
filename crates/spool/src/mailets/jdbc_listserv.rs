//! JDBCListserv: James 2.3's mailing list whose members and settings are rows of a database.
//!
//! `<data_source>` names a data source of `<database-connections>`; `<listserv_table>` holds
//! the list's settings (`listserv_id`, `members_only`, `attachments_allowed`, `reply_to_list`,
//! `subject_prefix`, `list_address`), `<members_table>` its members (`listserv_id`, `member`).
//! Both are read on the list's first mail and kept (`<cache_settings>`, default true), or read
//! for every mail when it is false. A list without its settings row is a configuration error.
//!
//! A mail to the list goes on to every member, from the postmaster (bounces come back to the
//! postmaster, not the list), as James's `GenericListserv` sends it: `Return-Path:` removed,
//! the subject prefixed `[prefix] ` (with James's `Re:` normalising), `Reply-To:` the list when
//! `reply_to_list`, and `X-been-there:` the list, which stops a mail that comes back around.
//! A non-member's mail to a members-only list, or a multipart mail to a list that takes no
//! attachments, is refused: it goes to the `error` processor with James's reason as its error
//! message. The list's mail itself is consumed. A database that is away keeps the mail in the
//! spool.

use std::sync::{Arc, Mutex};

use mail_builder::headers::text::Text;
use mail_builder::headers::Header;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, Envelope, Mail, MailAddress, Mailet, MailetConfig, MailetContext,
    MailetError,
};

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
    members_only: bool,
    attachments_allowed: bool,
    reply_to_list: bool,
    subject_prefix: Option<String>,
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
            members_only: flag(0),
            attachments_allowed: flag(1),
            reply_to_list: flag(2),
            subject_prefix: cell(3),
            address,
        };
        *cached = Some(list.clone());
        Ok(list)
    }
}

/// James's `normalizeSubject`: the prefix first, every `Re:` spelled `RE:` and only the first
/// kept, runs of blanks reduced to one.
fn normalize_subject(subject: &str, prefix: &str) -> String {
    let mut s = subject.to_string();
    match s.find(prefix) {
        Some(0) => {}
        Some(i) => {
            s.replace_range(i..i + prefix.len(), "");
            s.insert_str(0, prefix);
        }
        None => s.insert_str(0, prefix),
    }
    let p = prefix.len();
    let rest = s[p..].replace("Re:", "RE:");
    let rest = match rest.find("RE:") {
        Some(first) => {
            let (head, tail) = rest.split_at(first + 3);
            format!("{head}{}", tail.replace("RE:", ""))
        }
        None => rest,
    };
    let mut rest = rest;
    while rest.contains("  ") {
        rest = rest.replace("  ", " ");
    }
    format!("{}{rest}", &s[..p])
}

/// A header value as it is written: raw when ASCII, RFC 2047 words otherwise.
fn encoded(value: &str) -> String {
    if value.is_ascii() {
        return value.to_string();
    }
    let mut out = Vec::new();
    Text::new(value).write_header(&mut out, "Subject: ".len());
    String::from_utf8_lossy(&out).trim_end().to_string()
}

impl JdbcListserv {
    /// Sends a refused mail to `error` with James's reason.
    fn refuse(
        &self,
        mail: &mut Mail,
        why: &str,
        ctx: &dyn MailetContext,
    ) -> Result<(), MailetError> {
        let mut copy = mail.split_off(derived_mail_name(mail.name()), mail.recipients().to_vec());
        copy.set_state(state::ERROR);
        copy.envelope.error_message = Some(why.to_string());
        let name = copy.name().to_string();
        ctx.send_mail(copy)?;
        for rcpt in mail.recipients() {
            let line = Outcome::new(mail.name(), rcpt, Status::Refused)
                .field("reason", why)
                .field("copy", &name)
                .field("next", state::ERROR);
            ctx.log(&line.to_string());
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

impl Mailet for JdbcListserv {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let list = self.list(ctx)?;
        if list.members_only && !mail.sender().is_some_and(|s| list.members.contains(s)) {
            return self.refuse(
                mail,
                "Only members of this listserv are allowed to send a message to this address.",
                ctx,
            );
        }
        let multipart = mail
            .message
            .header("Content-Type")
            .is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with("multipart/"));
        if !list.attachments_allowed && multipart {
            return self.refuse(mail, "You cannot send attachments to this listserv.", ctx);
        }
        let Some(address) = list
            .address
            .clone()
            .or_else(|| mail.recipients().first().cloned())
        else {
            mail.set_state(state::GHOST);
            return Ok(());
        };
        let been_there = mail.message.headers("X-been-there");
        if been_there
            .iter()
            .any(|b| b.trim().eq_ignore_ascii_case(&address.to_string()))
        {
            // The list's own mail come back around: swallowed.
            mail.set_state(state::GHOST);
            return Ok(());
        }
        let mut message = mail.message.clone();
        message.remove_header("Return-Path");
        if let Some(prefix) = &list.subject_prefix {
            let subject = mail.message.subject().unwrap_or_default();
            let subject = normalize_subject(&subject, &format!("[{prefix}] "));
            message.set_header("Subject", &encoded(&subject));
        }
        if list.reply_to_list {
            message.set_header("Reply-To", &address.to_string());
        }
        message.set_header("X-been-there", &address.to_string());
        if !list.members.is_empty() {
            let mut envelope = Envelope::new(
                derived_mail_name(mail.name()),
                Some(ctx.postmaster().clone()),
                list.members.clone(),
            );
            envelope.remote_addr = mail.envelope.remote_addr.clone();
            envelope.remote_host = mail.envelope.remote_host.clone();
            let name = envelope.name.clone();
            ctx.send_mail(Mail::new(envelope, message))?;
            ctx.log(&format!(
                "mail={} list={address} status=distributed members={} copy={name}",
                mail.name(),
                list.members.len()
            ));
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

#[cfg(test)]
#[path = "jdbc_listserv_tests.rs"]
mod tests;
