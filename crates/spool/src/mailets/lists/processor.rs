//! `CommandListservProcessor`: a post to the list goes out to every member, as James 2.3 sends
//! it: checked (allowed posters, attachments, `X-been-there` loops), the footer added, the
//! subject prefixed, `Reply-To:` set to the list, and sent from `<listOwner>` in one mail to
//! all the members. The post itself ends there (it is ghosted).

use std::sync::Arc;

use mailroom_mailet::{state, Mail, MailAddress, Mailet, MailetContext, MailetError};

use super::command::ListInfo;
use super::footer::footer;
use super::post::{PostRules, Refusal};
use super::{address_param, ListStores, Members};
use crate::mailets::footer::AddFooter;
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
                rules: PostRules::from_config(c)?,
                footer: footer(&list.resources),
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
    rules: PostRules,
    footer: AddFooter,
    owner: MailAddress,
    members: Members,
    specified_posters_only: bool,
    allowed: Vec<MailAddress>,
    list: Arc<ListInfo>,
}

impl ListProcessor {
    fn post(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let members = self.members.list()?;
        let Some(list_address) = mail.recipients().first().cloned() else {
            return Ok(());
        };
        let refusal =
            self.rules
                .refusal(mail, &members, &self.allowed, self.specified_posters_only);
        if let Some(refusal) = refusal {
            let key = match refusal {
                Refusal::MembersOnly => "error.membersonly",
                Refusal::Attachments => "error.attachments",
            };
            let r = &self.list.resources;
            let subject = r.get("List Manager", "invalid.mail.subject", &[]);
            return self
                .list
                .on_error(mail, ctx, &subject, &r.get("List Manager", key, &[]));
        }
        if PostRules::came_back(mail, &list_address) {
            ctx.log(&format!(
                "{}: already sent through {list_address}; dropped",
                mail.name()
            ));
            return Ok(());
        }
        if members.is_empty() {
            ctx.log(&format!(
                "list {}: no members; post {} dropped",
                self.list.list_name,
                mail.name()
            ));
            return Ok(());
        }
        // The footer goes into the copy: a post kept for a retry is never footed twice.
        let mut copy = self.rules.copy(mail, &self.owner, members, &list_address);
        self.footer.service(&mut copy, ctx)?;
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
