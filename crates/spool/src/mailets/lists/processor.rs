//! `CommandListservProcessor`: a post to the list goes out to every member, as James 2.3 sends
//! it: checked (allowed posters, attachments, `X-been-there` loops), the footer added, the
//! subject prefixed, `Reply-To:` set to the list, and sent from `<listOwner>` in one mail to
//! all the members. The post itself ends there (it is ghosted).

use std::sync::Arc;

use mailroom_mailet::{state, Mail, MailAddress, Mailet, MailetContext, MailetError};

use super::command::ListInfo;
use super::{address_param, is_multipart, list_copy, normalize_subject, ListStores, Members};
use crate::Registry;

/// Registers `CommandListservProcessor`.
pub(super) fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    let stores = stores.clone();
    registry
        .add_mailet("CommandListservProcessor", move |c| {
            let list_name = c.required("listName")?;
            let list = stores.manager(list_name).ok_or_else(|| {
                MailetError::new(format!(
                    "mailet CommandListservProcessor: no CommandListservManager with \
                     <listName>{list_name}</listName> comes before it"
                ))
            })?;
            let mut allowed = Vec::new();
            for poster in c.param("allowedposters").unwrap_or_default().split(',') {
                let poster = poster.trim();
                if !poster.is_empty() {
                    allowed.push(MailAddress::parse(poster).map_err(|e| {
                        MailetError::new(format!(
                            "mailet CommandListservProcessor: <allowedposters> {poster:?}: {e}"
                        ))
                    })?);
                }
            }
            Ok(Box::new(ListProcessor {
                members_only: c.bool_param("membersonly", false)?,
                attachments_allowed: c.bool_param("attachmentsallowed", true)?,
                reply_to_list: c.bool_param("replytolist", true)?,
                subject_prefix: c.param("subjectprefix").map(str::to_string),
                auto_bracket: c.bool_param("autobracket", true)?,
                owner: address_param(c, "listOwner")?,
                members: stores.members("CommandListservProcessor", c.required("repositoryName")?)?,
                specified_posters_only: c.bool_param("specifiedpostersonly", false)?,
                allowed,
                list,
            }))
        })
        .params(&[
            "membersonly",
            "attachmentsallowed",
            "replytolist",
            "repositoryName",
            "subjectprefix",
            "autobracket",
            "listOwner",
            "listName",
            "specifiedpostersonly",
            "allowedposters",
        ])
        .about(
            "Sends a post to the list `<listName>` (of a CommandListservManager before it) to \
             every member of `<repositoryName>`, from `<listOwner>`: `membersonly`, \
             `attachmentsallowed`, `specifiedpostersonly`/`allowedposters` checked, the footer \
             added, `[subjectprefix]` (`autobracket`), `Reply-To:` the list (`replytolist`), \
             `X-been-there` against loops. The body is streamed, not read into memory.",
            r#"<mailet match="RecipientIs=list@example.org" class="CommandListservProcessor"><listName>list</listName><listOwner>owner@example.org</listOwner><repositoryName>list-test</repositoryName><subjectprefix>List</subjectprefix></mailet>"#,
        );
}

struct ListProcessor {
    members_only: bool,
    attachments_allowed: bool,
    reply_to_list: bool,
    subject_prefix: Option<String>,
    auto_bracket: bool,
    owner: MailAddress,
    members: Members,
    specified_posters_only: bool,
    allowed: Vec<MailAddress>,
    list: Arc<ListInfo>,
}

impl ListProcessor {
    fn refuse(&self, mail: &Mail, ctx: &dyn MailetContext, key: &str) -> Result<(), MailetError> {
        let r = &self.list.resources;
        let subject = r.get("List Manager", "invalid.mail.subject", &[]);
        self.list
            .on_error(mail, ctx, &subject, &r.get("List Manager", key, &[]))
    }

    fn post(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let members = self.members.list()?;
        let Some(list_address) = mail.recipients().first().cloned() else {
            return Ok(());
        };
        let sender = mail.sender();
        let is_member = sender.is_some_and(|s| members.contains(s));
        let allowed = sender.is_some_and(|s| self.allowed.contains(s));
        if !((!self.specified_posters_only && (!self.members_only || is_member)) || allowed) {
            return self.refuse(mail, ctx, "error.membersonly");
        }
        if !self.attachments_allowed && is_multipart(&mail.message) {
            return self.refuse(mail, ctx, "error.attachments");
        }
        let address = list_address.to_string();
        let been_there = mail.message.header("X-been-there");
        if been_there.is_some_and(|b| b.eq_ignore_ascii_case(&address)) {
            ctx.log(&format!(
                "{}: already sent through {address}; dropped",
                mail.name()
            ));
            return Ok(());
        }
        super::footer::add_footer(mail, &super::footer::Footer::of(&self.list.resources), ctx);
        if members.is_empty() {
            ctx.log(&format!(
                "list {}: no members; post {} dropped",
                self.list.list_name,
                mail.name()
            ));
            return Ok(());
        }
        let copy = list_copy(mail, &self.owner, members, |message| {
            message.remove_header("Return-Path");
            message.set_header("X-been-there", &address);
            if self.reply_to_list {
                message.set_header("Reply-To", &address);
            }
            if let Some(prefix) = &self.subject_prefix {
                // James 2.3.2 wrote `[prefix]` with no space before the subject; AvalonListserv
                // and later James versions put one, as here.
                let prefix = if self.auto_bracket {
                    format!("[{prefix}] ")
                } else {
                    prefix.clone()
                };
                let subject = message.subject().unwrap_or_default();
                super::set_subject(message, &normalize_subject(&subject, &prefix));
            }
        });
        ctx.send_mail(copy)
    }
}

impl Mailet for ListProcessor {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let result = self.post(mail, ctx);
        // A temporary failure keeps the post in the spool, to be sent later; otherwise the
        // post ends here, as in James.
        if !result.as_ref().is_err_and(MailetError::is_temporary) {
            mail.set_state(state::GHOST);
        }
        result
    }
}
