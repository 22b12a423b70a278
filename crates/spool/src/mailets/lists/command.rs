//! `CommandListservManager`: the commands mailed to `list-command@domain` (subscribe,
//! subscribe-confirm, unsubscribe, unsubscribe-confirm, error, owner, info), as James 2.3's
//! `listservcommands` do them.
//!
//! A subscription (or its end) is asked for, then confirmed by a second mail from the same
//! address to `list-subscribe-confirm@` (`list-unsubscribe-confirm@`), which is what James
//! 2.3.2 checks: no cookie is carried.

use std::collections::BTreeMap;
use std::sync::Arc;

use mailroom_mailet::{
    state, Envelope, Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError,
};

use super::resources::Resources;
use super::{address_param, ListStores, Members};
use crate::mailets::compose::Reply;
use crate::Registry;

/// The package James loads the commands from.
const COMMAND_PACKAGE: &str = "org.apache.james.transport.mailets.listservcommands";

/// The commands of `james-listmanager.xml`, used when `<commands>` is not given.
const STANDARD_COMMANDS: &[(&str, Command)] = &[
    ("subscribe", Command::Subscribe),
    ("subscribe-confirm", Command::SubscribeConfirm),
    ("unsubscribe", Command::UnSubscribe),
    ("unsubscribe-confirm", Command::UnSubscribeConfirm),
    ("error", Command::Error),
    ("owner", Command::Owner),
    ("info", Command::Info),
];

/// A command class of James's `listservcommands` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Subscribe,
    SubscribeConfirm,
    UnSubscribe,
    UnSubscribeConfirm,
    Error,
    Owner,
    Info,
}

impl Command {
    fn from_class(class: &str) -> Option<Command> {
        Some(match class {
            "Subscribe" => Command::Subscribe,
            "SubscribeConfirm" => Command::SubscribeConfirm,
            "UnSubscribe" => Command::UnSubscribe,
            "UnSubscribeConfirm" => Command::UnSubscribeConfirm,
            "ErrorCommand" => Command::Error,
            "Owner" => Command::Owner,
            "Info" => Command::Info,
            _ => return None,
        })
    }
}

/// One list as its manager describes it; the processor and the footer of the list find it by
/// `<listName>`.
pub(super) struct ListInfo {
    pub(super) list_name: String,
    pub(super) display_name: String,
    pub(super) owner: MailAddress,
    pub(super) members: Members,
    pub(super) resources: Resources,
    commands: BTreeMap<String, Command>,
}

impl ListInfo {
    /// James's `onError`: the error command's reply (header, error, commands) to the sender.
    pub(super) fn on_error(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
        subject: &str,
        message: &str,
    ) -> Result<(), MailetError> {
        let r = &self.resources;
        let props = [("ERROR_MESSAGE", message)];
        let text = format!(
            "{}{}{}",
            r.get("header", "text", &props),
            r.get("error", "text", &props),
            r.get("admincommands", "text", &props)
        );
        self.reply(mail, ctx, subject, &text, None)
    }

    /// James's `sendStandardReply`: from the owner (named as the list) to the sender.
    fn reply(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
        subject: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<(), MailetError> {
        let Some(sender) = mail.sender() else {
            return Ok(());
        };
        let reply = Reply {
            from: (Some(&self.display_name), &self.owner),
            to: (Some(sender.local_part()), sender),
            subject,
            text,
            reply_to,
            auto_submitted: true,
        };
        ctx.send_mail(reply.to_mail(mail, ctx.server_name())?)
    }

    /// The command a recipient names: what follows the first `-` after the list's name.
    fn command_name(&self, recipient: &MailAddress) -> String {
        let user = recipient.local_part();
        let from = self.list_name.len().min(user.len());
        let name = match user.get(from..).and_then(|rest| rest.find('-')) {
            Some(at) => &user[from + at + 1..],
            None => user,
        };
        name.to_ascii_lowercase()
    }

    fn run(
        &self,
        command: Command,
        mail: &Mail,
        sender: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<(), MailetError> {
        let r = &self.resources;
        let address = sender.to_string();
        let props = [("SENDER_ADDR", address.as_str())];
        match command {
            Command::Subscribe | Command::SubscribeConfirm => {
                let group = if command == Command::Subscribe {
                    "subscribe"
                } else {
                    "subscribeConfirm"
                };
                if self.members.contains(sender)? {
                    let text = r.get(group, "already.subscribed", &[]);
                    return self.on_error(mail, ctx, "Invalid request", &text);
                }
                if command == Command::Subscribe {
                    let reply_to = r.get(group, "confirm.subscribe.address", &props);
                    self.reply(
                        mail,
                        ctx,
                        &r.get(group, "confirm.subscribe.subject", &props),
                        &r.get(group, "text", &props),
                        Some(&reply_to),
                    )
                } else {
                    self.members.add(sender)?;
                    ctx.log(&format!("list {}: {sender} subscribed", self.list_name));
                    let text =
                        r.get(group, "text", &props) + &r.get("admincommands", "text", &props);
                    let subject = r.get(group, "welcome.subscribe.address", &props);
                    self.reply(mail, ctx, &subject, &text, None)
                }
            }
            Command::UnSubscribe | Command::UnSubscribeConfirm => {
                let group = if command == Command::UnSubscribe {
                    "unsubscribe"
                } else {
                    "unsubscribeConfirm"
                };
                if !self.members.contains(sender)? {
                    let text = r.get(group, "not.subscribed", &[]);
                    return self.on_error(mail, ctx, "Invalid request", &text);
                }
                if command == Command::UnSubscribe {
                    let reply_to = r.get(group, "confirm.unsubscribe.address", &props);
                    self.reply(
                        mail,
                        ctx,
                        &r.get(group, "confirm.unsubscribe.subject", &props),
                        &r.get(group, "text", &props),
                        Some(&reply_to),
                    )
                } else {
                    self.members.remove(sender)?;
                    ctx.log(&format!("list {}: {sender} unsubscribed", self.list_name));
                    let subject = r.get(group, "goodbye.subscribe.address", &props);
                    self.reply(mail, ctx, &subject, &r.get(group, "text", &props), None)
                }
            }
            Command::Error => self.on_error(
                mail,
                ctx,
                "an unknown error occurred",
                "an unknown error occurred",
            ),
            Command::Owner => {
                // The mail itself goes on to the owner, from its sender, sent by this server
                // (127.0.0.1): the owner is the administrator's setting, so a relay check on
                // the remote address must let it through when the mail came from outside.
                let envelope = Envelope::new(
                    mailroom_mailet::derived_mail_name(mail.name()),
                    Some(sender.clone()),
                    vec![self.owner.clone()],
                );
                ctx.send_mail(Mail::new(envelope, mail.message.clone()))
            }
            Command::Info => {
                let mut list = String::from("\r\n");
                for member in self.members.list()? {
                    list.push_str(&format!("    {member}\r\n"));
                }
                let props = [("MEMBER_LIST", list.as_str())];
                let text = format!(
                    "{}{}{}",
                    r.get("header", "text", &props),
                    r.get("info", "text", &props),
                    r.get("admincommands", "text", &props)
                );
                self.reply(
                    mail,
                    ctx,
                    &r.get("info", "info.subject", &props),
                    &text,
                    None,
                )
            }
        }
    }
}

/// Registers `CommandListservManager`.
pub(super) fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    let stores = stores.clone();
    registry
        .add_mailet("CommandListservManager", move |c| {
            let info = Arc::new(list_info(c, &stores)?);
            let mut managers = stores.managers.lock().unwrap_or_else(|e| e.into_inner());
            if managers.contains_key(&info.list_name) {
                return Err(MailetError::new(format!(
                    "mailet CommandListservManager: the list {} has a manager already",
                    info.list_name
                )));
            }
            managers.insert(info.list_name.clone(), info.clone());
            Ok(Box::new(Manager(info)))
        })
        .params(&[
            "resources",
            "listName",
            "displayName",
            "listOwner",
            "repositoryName",
            "listDomain",
            "commandpackages",
            "commands",
        ])
        .about(
            "James's command list manager: a mail to `list-COMMAND@domain` runs COMMAND \
             (subscribe, subscribe-confirm, unsubscribe, unsubscribe-confirm, info, owner, \
             error) for the list `<listName>`, whose members are the users repository \
             `<repositoryName>` of `<users-store>`; replies use the texts of `<resources>` \
             (miResources.xml; built-in texts when the file does not exist).",
            r#"<mailet match="CommandListservMatcher=list@example.org" class="CommandListservManager"><listName>list</listName><displayName>A list</displayName><listOwner>owner@example.org</listOwner><listDomain>example.org</listDomain><repositoryName>list-test</repositoryName><resources>conf/miResources.xml</resources></mailet>"#,
        );
}

fn list_info(c: &MailetConfig, stores: &Arc<ListStores>) -> Result<ListInfo, MailetError> {
    let bad = |what: String| MailetError::new(format!("mailet CommandListservManager: {what}"));
    let list_name = c.required("listName")?.to_string();
    if list_name.contains(|ch: char| ch.is_whitespace() || ch == '@') {
        return Err(bad(format!("<listName> {list_name:?} is not a list name")));
    }
    let display_name = c.param("displayName").unwrap_or(&list_name).to_string();
    let owner = address_param(c, "listOwner")?;
    let domain = c.required("listDomain")?.to_string();
    mailroom_mailet::check_domain(&domain)
        .map_err(|e| bad(format!("<listDomain> {domain:?}: {e}")))?;
    let members = stores.members("CommandListservManager", c.required("repositoryName")?)?;
    let mut packages = vec![String::new()];
    for package in c.param("commandpackages").unwrap_or_default().split(',') {
        let package = package.trim().trim_end_matches('.');
        if package.is_empty() {
            continue;
        }
        if package != COMMAND_PACKAGE {
            return Err(bad(format!(
                "<commandpackage> {package}: commands come from {COMMAND_PACKAGE} only"
            )));
        }
        packages.push(format!("{package}."));
    }
    let commands = match c.param("commands").filter(|v| !v.trim().is_empty()) {
        None => STANDARD_COMMANDS
            .iter()
            .map(|(n, k)| (n.to_string(), *k))
            .collect(),
        Some(list) => commands(list, &packages).map_err(bad)?,
    };
    if commands.get("error") != Some(&Command::Error) {
        return Err(bad(
            "<commands> needs <command name=\"error\" class=\"ErrorCommand\"/>: errors are \
             answered through it"
                .to_string(),
        ));
    }
    let standard = vec![
        ("LIST_NAME".to_string(), list_name.clone()),
        ("DISPLAY_NAME".to_string(), display_name.clone()),
        ("DOMAIN_NAME".to_string(), domain.clone()),
    ];
    let file = c
        .param("resources")
        .filter(|p| !p.is_empty())
        .map(|p| stores.resolve(p));
    let resources = Resources::load(file.as_deref(), standard).map_err(bad)?;
    Ok(ListInfo {
        list_name,
        display_name,
        owner,
        members,
        resources,
        commands,
    })
}

/// `<commands>` as the configuration flattens it: `name=subscribe;class=Subscribe,...`.
fn commands(list: &str, packages: &[String]) -> Result<BTreeMap<String, Command>, String> {
    let mut commands = BTreeMap::new();
    for item in list.split(',') {
        let attr = |key: &str| {
            item.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let (Some(name), Some(class)) = (attr("name"), attr("class")) else {
            return Err(format!(
                "<commands>: every <command> needs name=\"...\" and class=\"...\" ({item:?})"
            ));
        };
        let short = packages
            .iter()
            .find_map(|p| class.strip_prefix(p.as_str()).filter(|s| !s.contains('.')))
            .ok_or_else(|| {
                format!("<command name={name:?}>: class {class} is not in the command packages")
            })?;
        let command = Command::from_class(short).ok_or_else(|| {
            format!(
                "<command name={name:?}>: unknown class {short} (known: Subscribe, \
                 SubscribeConfirm, UnSubscribe, UnSubscribeConfirm, ErrorCommand, Owner, Info)"
            )
        })?;
        commands.insert(name.to_ascii_lowercase(), command);
    }
    Ok(commands)
}

/// The manager mailet of one list.
struct Manager(Arc<ListInfo>);

impl Mailet for Manager {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let list = &self.0;
        let Some(sender) = mail.sender().cloned() else {
            // Nobody to answer: a bounce sent to a command address.
            ctx.log(&format!(
                "list {}: command mail from <> dropped",
                list.list_name
            ));
            mail.set_state(state::GHOST);
            return Ok(());
        };
        if mail.recipients().len() != 1 {
            super::notify_sender(
                mail,
                ctx,
                "Send one command at a time to this list manager.",
            )?;
            mail.set_state(state::GHOST);
            return Ok(());
        }
        let name = list.command_name(&mail.recipients()[0]);
        match list.commands.get(&name) {
            Some(&command) => list.run(command, mail, &sender, ctx)?,
            None => {
                let text = list.resources.get(
                    "List Manager",
                    "command.not.understood",
                    &[("COMMAND", &name)],
                );
                list.on_error(mail, ctx, "unknown command", &text)?;
            }
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}
