//! Mailing lists, with James 2.3's classes and parameters: the simple list server
//! (`AvalonListserv`, with `AvalonListservManager` for `list-on@`/`list-off@` and the matcher
//! `CommandForListserv`) and the command list manager of the stock `james-listmanager.xml`
//! (`CommandListservManager`, `CommandListservProcessor`, `CommandListservFooter`, the matcher
//! `CommandListservMatcher`).
//!
//! Members live in a users repository of `<users-store>` named by `<repositoryName>`, one user
//! per member (see [`Members`]); the repositories are opened after the processor tree is built,
//! so the mailets reach them through a shared [`ListStores`] that the server fills in
//! ([`ListStores::open`]). A post goes out as one new mail to every member, whose body is the
//! original's body, streamed from storage (a footer is spliced in as it is read).
//!
//! This module owns list membership and list mail; it does not deliver (the copies go back to
//! the spool through [`MailetContext::send_mail`]).

mod avalon;
mod command;
mod footer;
mod members;
pub(crate) mod post;
mod processor;
mod resources;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mailroom_mailet::{
    derived_mail_name, Envelope, Mail, MailAddress, MailetContext, MailetError, MatcherConfig,
    Message,
};
use mailroom_store::UsersRepository;

use crate::mailets::compose::{crlf, encoding, one_line};
use crate::Registry;

pub use members::Members;

/// The server's own users: never a list's member store (a member would become a login name).
const LOCAL_USERS: &str = "LocalUsers";

/// What the list mailets share with the server: the `<users-store>` repositories by name
/// (opened after the processor tree is built), the runtime to wait on them from the spool's
/// worker threads, and the command list managers by list name (for the processors and footers
/// that name them).
pub struct ListStores {
    /// The repository names `<users-store>` declares, to check `<repositoryName>` at start-up.
    names: Vec<String>,
    /// The server's home: a relative `<resources>` path is taken from there.
    home: PathBuf,
    runtime: Option<tokio::runtime::Handle>,
    repositories: OnceLock<BTreeMap<String, Arc<dyn UsersRepository>>>,
    /// `CommandListservManager`s by `<listName>`, in the order the tree builds them.
    managers: Mutex<BTreeMap<String, Arc<command::ListInfo>>>,
}

impl ListStores {
    /// The list stores of a configuration whose `<users-store>` declares `names`; `runtime`
    /// is `None` where no mail is processed (`check-config`).
    pub fn new(
        names: Vec<String>,
        home: &Path,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Arc<Self> {
        Arc::new(ListStores {
            names,
            home: home.to_path_buf(),
            runtime,
            repositories: OnceLock::new(),
            managers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Hands over the opened repositories (once).
    pub fn open(&self, repositories: Vec<(String, Arc<dyn UsersRepository>)>) {
        let _ = self.repositories.set(repositories.into_iter().collect());
    }

    /// The members store `<repositoryName>` names, checked against `<users-store>`.
    fn members(self: &Arc<Self>, mailet: &str, name: &str) -> Result<Members, MailetError> {
        if name == LOCAL_USERS {
            return Err(MailetError::new(format!(
                "mailet {mailet}: <repositoryName> {LOCAL_USERS} is the server's own users; \
                 a list needs a repository of its own in <users-store>"
            )));
        }
        if !self.names.iter().any(|n| n == name) {
            return Err(MailetError::new(format!(
                "mailet {mailet}: <repositoryName> {name:?} is not a repository of \
                 <users-store> (it has: {})",
                self.names.join(", ")
            )));
        }
        Ok(Members::new(self.clone(), name))
    }

    /// A relative path from the home.
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.home.join(path)
        }
    }

    fn manager(&self, list: &str) -> Option<Arc<command::ListInfo>> {
        let managers = self.managers.lock().unwrap_or_else(|e| e.into_inner());
        managers.get(list).cloned()
    }
}

/// Registers the list mailets, their members in `stores`.
pub fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    avalon::register(registry, stores);
    command::register(registry, stores);
    processor::register(registry, stores);
    footer::register(registry, stores);
}

/// Registers `CommandForListserv` and `CommandListservMatcher` (they need no service).
pub fn register_matchers(registry: &mut Registry) {
    registry
        .add_matcher("CommandForListserv", |c| {
            let list = list_address(c)?;
            Ok(Box::new(CommandFor {
                list,
                any_command: false,
            }))
        })
        .about(
            "The recipients that are the on/off commands of the list at the condition: \
             `list-on@domain` and `list-off@domain` (for AvalonListservManager).",
            r#"<mailet match="CommandForListserv=list@example.org" class="AvalonListservManager">"#,
        );
    registry
        .add_matcher("CommandListservMatcher", |c| {
            let list = list_address(c)?;
            Ok(Box::new(CommandFor {
                list,
                any_command: true,
            }))
        })
        .about(
            "The recipients that are commands of the list at the condition: any \
             `list-command@domain` (for CommandListservManager).",
            r#"<mailet match="CommandListservMatcher=list@example.org" class="CommandListservManager">"#,
        );
}

fn list_address(config: &MatcherConfig) -> Result<MailAddress, MailetError> {
    let text = config.required_condition()?;
    MailAddress::parse(text).map_err(|e| {
        MailetError::new(format!(
            "matcher {}: {text:?} is not a list address: {e}",
            config.name
        ))
    })
}

/// `CommandForListserv` (`-on`/`-off` only) and `CommandListservMatcher` (any `-command`).
struct CommandFor {
    list: MailAddress,
    any_command: bool,
}

impl mailroom_mailet::Matcher for CommandFor {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let user = self.list.local_part();
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| r.domain().eq_ignore_ascii_case(self.list.domain()))
            .filter(|r| {
                let Some(command) = r
                    .local_part()
                    .strip_prefix(user)
                    .and_then(|rest| rest.strip_prefix('-'))
                else {
                    return false;
                };
                self.any_command || command == "on" || command == "off"
            })
            .cloned()
            .collect())
    }
}

/// A parameter that must be a mail address.
fn address_param(
    config: &mailroom_mailet::MailetConfig,
    name: &str,
) -> Result<MailAddress, MailetError> {
    let text = config.required(name)?;
    MailAddress::parse(text).map_err(|e| {
        MailetError::new(format!(
            "mailet {}: <{name}> {text:?} is not a mail address: {e}",
            config.name
        ))
    })
}

/// What James's `MailetContext.bounce(mail, text)` does: a notice from the postmaster to the
/// sender saying `text`, with the original's header section attached. The envelope sender
/// is null, so a notice is never answered with another. Nothing when the mail itself has the
/// null sender.
fn notify_sender(mail: &Mail, ctx: &dyn MailetContext, text: &str) -> Result<(), MailetError> {
    let Some(sender) = mail.sender() else {
        ctx.log(&format!("{}: not notifying <> of: {text}", mail.name()));
        return Ok(());
    };
    let name = derived_mail_name(mail.name());
    let postmaster = ctx.postmaster().to_string();
    let subject = format!(
        "Re: {}",
        one_line(&mail.message.subject().unwrap_or_default())
    );
    let heads = mail.message.header_section().to_vec();
    let eight_bit = !heads.is_ascii();
    let parts = vec![
        MimePart::new(
            ContentType::new("text/plain").attribute("charset", "utf-8"),
            BodyPart::Text(crlf(&format!("{text}\n")).into()),
        ),
        MimePart::new("text/rfc822-headers", BodyPart::Binary(heads.into()))
            .transfer_encoding(encoding(eight_bit)),
    ];
    let to = sender.to_string();
    let mut builder = MessageBuilder::new()
        .from(postmaster.as_str())
        .to(to.as_str())
        .subject(subject)
        .date(Date::now())
        .message_id(format!("{name}@{}", ctx.server_name()))
        .header("Auto-Submitted", Raw::new("auto-replied"));
    if let Some(id) = mail.message.header("Message-ID") {
        builder = builder.header("In-Reply-To", Raw::new(one_line(&id)));
    }
    let bytes = builder
        .body(MimePart::new("multipart/mixed", BodyPart::Multipart(parts)))
        .write_to_vec()?;
    let envelope = Envelope::new(name, None, vec![sender.clone()]);
    ctx.send_mail(Mail::new(envelope, Message::from_bytes(&bytes)))
}
