//! James 2.3's simple list server: `AvalonListserv` sends a post to every member (from the
//! postmaster), `AvalonListservManager` adds the sender of a mail to `list-on@` and removes
//! the sender of a mail to `list-off@`. Answers and refusals are notices to the sender (James's
//! `MailetContext.bounce`).

use std::sync::Arc;

use mailroom_mailet::{state, Mail, MailAddress, Mailet, MailetContext, MailetError};

use super::{is_multipart, list_copy, normalize_subject, notify_sender, ListStores, Members};
use crate::Registry;

/// Registers `AvalonListserv` and `AvalonListservManager`.
pub(super) fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    let s = stores.clone();
    registry
        .add_mailet("AvalonListserv", move |c| {
            Ok(Box::new(Listserv {
                members_only: c.bool_param("membersonly", false)?,
                attachments_allowed: c.bool_param("attachmentsallowed", true)?,
                reply_to_list: c.bool_param("replytolist", true)?,
                subject_prefix: c.param("subjectprefix").map(str::to_string),
                auto_bracket: c.bool_param("autobracket", true)?,
                members: s.members("AvalonListserv", c.required("repositoryName")?)?,
            }))
        })
        .params(&[
            "membersonly",
            "attachmentsallowed",
            "replytolist",
            "subjectprefix",
            "autobracket",
            "repositoryName",
        ])
        .about(
            "Sends a mail to the list (its recipient) on to every member of the users \
             repository `<repositoryName>`, from the postmaster: `membersonly` and \
             `attachmentsallowed` refuse with a notice, `[subjectprefix] ` (`autobracket`), \
             `Reply-To:` the list (`replytolist`), `X-been-there` against loops.",
            r#"<mailet match="RecipientIs=list@example.org" class="AvalonListserv"><repositoryName>list-test</repositoryName><subjectprefix>List</subjectprefix></mailet>"#,
        );
    let s = stores.clone();
    registry
        .add_mailet("AvalonListservManager", move |c| {
            Ok(Box::new(Manager {
                members: s.members("AvalonListservManager", c.required("repositoryName")?)?,
            }))
        })
        .params(&["repositoryName"])
        .about(
            "Subscribes the sender of a mail to `list-on@domain` and unsubscribes the sender of \
             a mail to `list-off@domain` in the users repository `<repositoryName>`, and tells \
             them so (use with CommandForListserv).",
            r#"<mailet match="CommandForListserv=list@example.org" class="AvalonListservManager"><repositoryName>list-test</repositoryName></mailet>"#,
        );
}

struct Listserv {
    members_only: bool,
    attachments_allowed: bool,
    reply_to_list: bool,
    subject_prefix: Option<String>,
    auto_bracket: bool,
    members: Members,
}

impl Mailet for Listserv {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let members = self.members.list()?;
        let is_member = mail.sender().is_some_and(|s| members.contains(s));
        if self.members_only && !is_member {
            notify_sender(mail, ctx, "Only members of this list may send mail to it.")?;
            mail.set_state(state::GHOST);
            return Ok(());
        }
        if !self.attachments_allowed && is_multipart(&mail.message) {
            notify_sender(mail, ctx, "This list does not accept attachments.")?;
            mail.set_state(state::GHOST);
            return Ok(());
        }
        let Some(list) = mail.recipients().first().map(ToString::to_string) else {
            return Ok(());
        };
        let been_there = mail.message.header("X-been-there");
        if been_there.is_some_and(|b| b.eq_ignore_ascii_case(&list)) || members.is_empty() {
            mail.set_state(state::GHOST);
            return Ok(());
        }
        let copy = list_copy(mail, ctx.postmaster(), members, |message| {
            message.remove_header("Return-Path");
            if let Some(prefix) = &self.subject_prefix {
                // James's AvalonListserv brackets with a space after: `[prefix] `.
                let prefix = if self.auto_bracket {
                    format!("[{prefix}] ")
                } else {
                    prefix.clone()
                };
                let subject = message.subject().unwrap_or_default();
                super::set_subject(message, &normalize_subject(&subject, &prefix));
            }
            if self.reply_to_list {
                message.set_header("Reply-To", &list);
            }
            message.set_header("X-been-there", &list);
        });
        ctx.send_mail(copy)?;
        mail.set_state(state::GHOST);
        Ok(())
    }
}

struct Manager {
    members: Members,
}

impl Manager {
    fn answer(
        &self,
        recipient: &MailAddress,
        sender: &MailAddress,
    ) -> Result<&'static str, MailetError> {
        let user = recipient.local_part();
        Ok(if user.ends_with("-off") {
            if self.members.remove(sender)? {
                "You have been removed from the list."
            } else {
                "You are not a member of this list."
            }
        } else if user.ends_with("-on") {
            if self.members.add(sender)? {
                "You have been added to the list."
            } else {
                "You are a member of this list already."
            }
        } else {
            "This list manager knows two commands: list-on@domain to join and list-off@domain to leave."
        })
    }
}

impl Mailet for Manager {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let text = match (mail.sender().cloned(), mail.recipients()) {
            (None, _) => None,
            (Some(_), [_, _, ..]) => Some("Send one command at a time to this list manager."),
            (Some(sender), [recipient]) => Some(self.answer(recipient, &sender)?),
            (Some(_), []) => None,
        };
        if let Some(text) = text {
            notify_sender(mail, ctx, text)?;
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}
