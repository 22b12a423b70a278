//! James 2.3's simple list server: `AvalonListserv` sends a post to every member (from the
//! postmaster), `AvalonListservManager` adds the sender of a mail to `list-on@` and removes
//! the sender of a mail to `list-off@`. Answers and refusals are notices to the sender (James's
//! `MailetContext.bounce`).

use std::sync::Arc;

use mailroom_mailet::{state, Mail, MailAddress, Mailet, MailetContext, MailetError};

use super::post::{self, PostRules};
use super::{notify_sender, ListStores, Members};
use crate::Registry;

/// Registers `AvalonListserv` and `AvalonListservManager`.
pub(super) fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    let s = stores.clone();
    registry
        .add_mailet("AvalonListserv", move |c| {
            Ok(Box::new(Listserv {
                rules: PostRules::from_config(c)?,
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
    rules: PostRules,
    members: Members,
}

impl Mailet for Listserv {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        // James's AvalonListserv has no address of its own: the post's recipient is the list.
        post::serve(&self.rules, mail, ctx, self.members.list()?, None)
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
