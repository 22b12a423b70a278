//! Mailets that reach repositories beyond what [`MailetContext`] offers: `FromRepository`
//! (moves the mails of a mail repository back into the spool) and `ToMultiRepository`
//! (delivers each recipient's copy into an inbox repository named by URL).
//!
//! They use [`StoreServices`], which the server creates before the processor tree is built
//! and fills with its repository openers once the repositories are open (`check-config`
//! builds the tree without ever opening them); the factories registered by [`register`]
//! capture it.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use mailroom_config::RepositoryUrl;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, AttributeValue, Mail, MailAddress, Mailet, MailetConfig,
    MailetContext, MailetError,
};
use mailroom_store::{InboxRepository, MailRepository, StoreError};

use crate::context::store_error;
use crate::Registry;

/// Opens the mail repository at a URL.
pub type MailOpener =
    Box<dyn Fn(&str) -> Result<Arc<dyn MailRepository>, StoreError> + Send + Sync>;
/// Opens the inbox repository (an inbox root: one mailbox per user) at a URL.
pub type InboxOpener =
    Box<dyn Fn(&str) -> Result<Arc<dyn InboxRepository>, StoreError> + Send + Sync>;

/// The repositories these mailets reach, opened after the tree is built.
pub struct StoreServices {
    /// Runs the repositories' async calls from the SpoolManager's worker threads; `None`
    /// when the tree is only checked.
    runtime: Option<tokio::runtime::Handle>,
    mail: OnceLock<MailOpener>,
    inbox: OnceLock<InboxOpener>,
}

impl StoreServices {
    /// Services not opened yet; `runtime` is `None` when the tree is only checked.
    pub fn new(runtime: Option<tokio::runtime::Handle>) -> Arc<Self> {
        Arc::new(StoreServices {
            runtime,
            mail: OnceLock::new(),
            inbox: OnceLock::new(),
        })
    }

    /// Gives the services their openers (once; later calls change nothing).
    pub fn open(&self, mail: MailOpener, inbox: InboxOpener) {
        let _ = self.mail.set(mail);
        let _ = self.inbox.set(inbox);
    }

    fn wait<F: Future>(&self, future: F) -> Result<F::Output, MailetError> {
        match &self.runtime {
            Some(runtime) => Ok(runtime.block_on(future)),
            None => Err(MailetError::temporary("repositories are not open")),
        }
    }

    fn mail_repository(&self, url: &str) -> Result<Arc<dyn MailRepository>, MailetError> {
        let open = self
            .mail
            .get()
            .ok_or_else(|| MailetError::temporary("repositories are not open"))?;
        open(url).map_err(store_error)
    }

    fn inbox_repository(&self, url: &str) -> Result<Arc<dyn InboxRepository>, MailetError> {
        let open = self
            .inbox
            .get()
            .ok_or_else(|| MailetError::temporary("repositories are not open"))?;
        open(url).map_err(store_error)
    }
}

/// Registers FromRepository and ToMultiRepository over `services`.
pub fn register(registry: &mut Registry, services: &Arc<StoreServices>) {
    let s = services.clone();
    registry
        .add_mailet("FromRepository", move |c| {
            Ok(Box::new(FromRepository::new(c, s.clone())?))
        })
        .params(&["repositoryPath", "processor", "delete"])
        .about(
            "When a mail reaches it (the trigger, which is ghosted), puts every mail of the \
             repository `repositoryPath` back into the spool at `processor` (default `root`), \
             with the attribute `FromRepository` = true; removes them from the repository when \
             `delete` is true (default false).",
            r#"<mailet match="RecipientIs=respool@example.org" class="FromRepository"><repositoryPath>file://var/mail/error/</repositoryPath><processor>transport</processor><delete>true</delete></mailet>"#,
        );
    let s = services.clone();
    registry
        .add_mailet("ToMultiRepository", move |c| {
            Ok(Box::new(ToMultiRepository::new(c, s.clone())?))
        })
        .params(&[
            "repositoryUrl",
            "repositoryType",
            "addDeliveryHeader",
            "resetReturnPath",
        ])
        .about(
            "Delivers a copy for each recipient into the mailbox named by the recipient's \
             local part: in the inbox repository at `repositoryUrl` (an inbox root, \
             `file://var/mail/inboxes2/` or `db://maildb/inbox2`; `repositoryType` MAIL), else \
             in the server's inbox. `addDeliveryHeader` names a field set to the recipient \
             (`Delivered-To`); `resetReturnPath` (default false) sets `Return-Path:` from the \
             sender. Recipients that fail go to `error` as a new mail; the mail is ghosted.",
            r#"<mailet match="RecipientIsLocal" class="ToMultiRepository"><addDeliveryHeader>Delivered-To</addDeliveryHeader><resetReturnPath>true</resetReturnPath></mailet>"#,
        );
}

/// A repository URL the factory can check without opening it.
fn checked_url(mailet: &str, param: &str, url: &str) -> Result<String, MailetError> {
    if !url.contains("://") {
        return Err(MailetError::new(format!(
            "mailet {mailet}: <{param}> {url:?} is not a repository URL (file://, db://, dbfile://)"
        )));
    }
    RepositoryUrl::parse(url, Path::new("."))
        .map_err(|e| MailetError::new(format!("mailet {mailet}: <{param}> {url:?}: {e}")))?;
    Ok(url.to_string())
}

/// James's FromRepository.
struct FromRepository {
    url: String,
    processor: String,
    delete: bool,
    services: Arc<StoreServices>,
}

impl FromRepository {
    fn new(c: &MailetConfig, services: Arc<StoreServices>) -> Result<Self, MailetError> {
        let processor = c.param("processor").unwrap_or(state::ROOT).trim();
        if processor.is_empty() || processor == state::GHOST {
            return Err(MailetError::new(format!(
                "mailet FromRepository: <processor> must name a processor, got {processor:?}"
            )));
        }
        Ok(FromRepository {
            url: checked_url(
                "FromRepository",
                "repositoryPath",
                c.required("repositoryPath")?,
            )?,
            processor: processor.to_string(),
            delete: c.bool_param("delete", false)?,
            services,
        })
    }
}

impl Mailet for FromRepository {
    fn service(&self, trigger: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let repository = self.services.mail_repository(&self.url)?;
        let names = self
            .services
            .wait(repository.list())?
            .map_err(store_error)?;
        let mut spooled = 0usize;
        for key in names {
            let mail = match self.services.wait(repository.retrieve(&key))? {
                Ok(Some(mail)) => mail,
                Ok(None) => continue, // removed meanwhile
                Err(e) => {
                    ctx.log(&format!(
                        "FromRepository: unable to re-spool mail {key} from {}: {e}",
                        self.url
                    ));
                    continue;
                }
            };
            if mail.recipients().is_empty() {
                continue;
            }
            let mut copy = mail.clone();
            // A fresh name: without `delete`, the same mail may be spooled again later.
            copy.envelope.name = derived_mail_name(&key);
            copy.set_state(&self.processor);
            copy.envelope.error_message = None;
            copy.set_attribute("FromRepository", AttributeValue::Bool(true));
            let new_name = copy.name().to_string();
            ctx.send_mail(copy)?;
            ctx.log(&format!(
                "mail={key} FromRepository: spooled from {} as {new_name} at processor {}",
                self.url, self.processor
            ));
            spooled += 1;
            if self.delete {
                if let Err(e) = self.services.wait(repository.remove(&key))? {
                    ctx.log(&format!(
                        "FromRepository: mail {key} spooled but not removed from {}: {e}",
                        self.url
                    ));
                }
            }
        }
        ctx.log(&format!(
            "mail={} FromRepository: {spooled} mails spooled from {}",
            trigger.name(),
            self.url
        ));
        trigger.set_state(state::GHOST);
        Ok(())
    }
}

/// James's ToMultiRepository.
struct ToMultiRepository {
    /// The inbox root; `None`: the server's inbox.
    url: Option<String>,
    delivery_header: Option<String>,
    reset_return_path: bool,
    services: Arc<StoreServices>,
}

impl ToMultiRepository {
    fn new(c: &MailetConfig, services: Arc<StoreServices>) -> Result<Self, MailetError> {
        let url = match c.param("repositoryUrl").filter(|u| !u.is_empty()) {
            Some(u) => Some(checked_url("ToMultiRepository", "repositoryUrl", u)?),
            None => None,
        };
        match c
            .param("repositoryType")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("") | Some("MAIL") => {}
            Some(other) => {
                return Err(MailetError::new(format!(
                    "mailet ToMultiRepository: <repositoryType> must be MAIL, got {other:?}"
                )))
            }
        }
        let delivery_header = match c.param("addDeliveryHeader").filter(|h| !h.is_empty()) {
            Some(h) if h.bytes().all(|b| b.is_ascii_graphic() && b != b':') => Some(h.to_string()),
            Some(h) => {
                return Err(MailetError::new(format!(
                    "mailet ToMultiRepository: <addDeliveryHeader> is not a header name: {h:?}"
                )))
            }
            None => None,
        };
        Ok(ToMultiRepository {
            url,
            delivery_header,
            reset_return_path: c.bool_param("resetReturnPath", false)?,
            services,
        })
    }

    fn store(
        &self,
        ctx: &dyn MailetContext,
        mail: &Mail,
        rcpt: &MailAddress,
    ) -> Result<(), MailetError> {
        let trace = match &self.delivery_header {
            Some(name) => format!("{name}: {rcpt}\r\n").into_bytes(),
            None => Vec::new(),
        };
        let user = rcpt.local_part();
        match &self.url {
            // The server's inbox: under the user's stored name (`Bob@` is `bob` when names
            // ignore case), as LocalDelivery files it.
            None => {
                let stored = ctx.local_user(user)?.map(|u| u.name);
                ctx.deliver_to_inbox(stored.as_deref().unwrap_or(user), &trace, mail)
            }
            Some(url) => {
                let inbox = self.services.inbox_repository(url)?;
                let delivery = self
                    .services
                    .wait(inbox.deliver_once(mail.name(), user, &trace, &mail.message))?
                    .map_err(store_error)?;
                self.services
                    .wait(inbox.sync(&[delivery]))?
                    .map_err(store_error)
            }
        }
    }
}

impl Mailet for ToMultiRepository {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut copy = mail.clone();
        if self.reset_return_path {
            let path = match mail.sender() {
                Some(s) => format!("<{s}>"),
                None => "<>".to_string(),
            };
            copy.message.remove_header("Return-Path");
            copy.message.prepend_header("Return-Path", &path);
        }
        let mut failed = Vec::new();
        // Recipients that met a temporary fault (a full disk, a database away): they stay
        // in the spool and are tried again, as LocalDelivery's; those delivered leave.
        let mut retry: Vec<(MailAddress, String)> = Vec::new();
        for rcpt in mail.recipients() {
            match self.store(ctx, &copy, rcpt) {
                Ok(()) => {
                    let mut line = Outcome::new(mail.name(), rcpt, Status::Delivered)
                        .field("mailbox", rcpt.local_part());
                    if let Some(url) = &self.url {
                        line = line.field("repository", url);
                    }
                    ctx.log(&line.to_string());
                }
                Err(e) if e.is_temporary() => retry.push((rcpt.clone(), e.to_string())),
                Err(e) => {
                    ctx.log(&format!(
                        "mail={} rcpt={rcpt} ToMultiRepository: error while storing mail: {e}",
                        mail.name()
                    ));
                    failed.push((rcpt.clone(), e.to_string()));
                }
            }
        }
        if !failed.is_empty() {
            let mut errors = mail.split_off(
                derived_mail_name(mail.name()),
                failed.iter().map(|(r, _)| r.clone()).collect(),
            );
            errors.set_state(state::ERROR);
            errors.envelope.error_message = Some(failed[0].1.clone());
            if let Err(e) = ctx.send_mail(errors) {
                // Not in the spool: these recipients stay with the mail and are tried again
                // (rather than the whole mail, whose delivered copies would be duplicated).
                retry.extend(failed.into_iter().map(|(r, why)| {
                    (
                        r,
                        format!("{why}, and not sent to the error processor: {e}"),
                    )
                }));
            }
        }
        if !retry.is_empty() {
            let why: Vec<String> = retry.iter().map(|(r, w)| format!("{r}: {w}")).collect();
            mail.set_recipients(retry.into_iter().map(|(r, _)| r).collect());
            return Err(MailetError::temporary(format!(
                "ToMultiRepository: {}",
                why.join("; ")
            )));
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

#[cfg(test)]
#[path = "repository_tests.rs"]
mod tests;
