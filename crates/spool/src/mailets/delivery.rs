//! LocalDelivery: puts mail in local users' inboxes, honouring aliases and forwards from the
//! users repository.
//!
//! Each delivered copy gets `Return-Path:` (replacing any the message carried) and
//! `Delivered-To:` on top. A forwarded copy also carries `Delivered-To:`, which is how a
//! forwarding loop (a → b → a) is recognised and stopped. Recipients that are not local users go
//! to the `error` processor in a mail of their own; the delivered mail is ghosted. Recipients
//! whose delivery failed temporarily (a full disk) stay in the mail, which the mailet fails
//! temporarily: the SpoolManager keeps it in the spool and tries them again later.
//!
//! Each recipient's outcome is logged in the shape of [`mailroom_mailet::outcome`]:
//! `status=delivered` with the mailbox and its Maildir, `status=forwarded` with the new
//! address and the forwarded mail's name, `status=failed` with the reason (and the name of the
//! copy that goes on to `error`). Temporary failures are logged by the SpoolManager, which
//! keeps those recipients for another try (`status=deferred`).

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, Envelope, Mail, MailAddress, Mailet, MailetContext, MailetError,
};

use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("LocalDelivery", |_| Ok(Box::new(LocalDelivery))).about("Delivers to each recipient's inbox with Return-Path: and Delivered-To:, honouring the users' alias and forward; a recipient that is not a local user goes to error.", "<mailet match=\"RecipientIsLocal\" class=\"LocalDelivery\"/>")
        .params(&[]);
    super::aliasing::register(registry);
}

struct LocalDelivery;

/// Where one recipient's mail goes, by the users repository (shared with
/// `UsersRepositoryAliasingForwarding`).
pub(super) enum Target {
    Inbox(String),
    Forward(MailAddress),
    /// Not a local domain, or no such user: not the users repository's to decide.
    Unknown(&'static str),
    Fail(&'static str),
}

/// Which of a user's settings apply (`UsersRepositoryAliasingForwarding` may turn either off).
#[derive(Clone, Copy)]
pub(super) struct Settings {
    pub(super) aliases: bool,
    pub(super) forwarding: bool,
}

impl Settings {
    const ALL: Settings = Settings {
        aliases: true,
        forwarding: true,
    };
}

/// Where `rcpt`'s mail goes: forwarding first, then the alias, then the user's own inbox.
pub(super) fn target(
    rcpt: &MailAddress,
    mail: &Mail,
    ctx: &dyn MailetContext,
    settings: Settings,
) -> Result<Target, MailetError> {
    if !ctx.is_local_server(rcpt.domain()) {
        return Ok(Target::Unknown("not a local domain"));
    }
    let Some(user) = ctx.local_user(rcpt.local_part())? else {
        return Ok(Target::Unknown("no such local user"));
    };
    let delivered_to = rcpt.to_string();
    if mail
        .message
        .headers("Delivered-To")
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&delivered_to))
    {
        return Ok(Target::Fail("mail forwarding loop"));
    }
    if let Some(forward) = user.forward.filter(|_| settings.forwarding) {
        return Ok(Target::Forward(forward));
    }
    match user.alias.filter(|_| settings.aliases) {
        None => Ok(Target::Inbox(user.name)),
        Some(alias) => match ctx.local_user(&alias)? {
            Some(target) => Ok(Target::Inbox(target.name)),
            None => Ok(Target::Fail("alias names no existing user")),
        },
    }
}

/// Sends `rcpt`'s copy of `mail` on to `to` (with `Delivered-To: rcpt`, which stops loops) and
/// logs `status=forwarded`.
pub(super) fn forward(
    mail: &Mail,
    rcpt: &MailAddress,
    to: &MailAddress,
    ctx: &dyn MailetContext,
) -> Result<(), MailetError> {
    // Sent by this server (remote address 127.0.0.1, as James's `sendMail` does): the forward
    // address is the user's setting, not the sender's choice, and a relay check such as the
    // stock config's `RemoteAddrNotInNetwork=127.0.0.1` in `transport` must let it through
    // when the original came from outside.
    let envelope = Envelope::new(
        derived_mail_name(mail.name()),
        mail.sender().cloned(),
        vec![to.clone()],
    );
    let forwarded = envelope.name.clone();
    let mut message = mail.message.clone();
    message.prepend_header("Delivered-To", &rcpt.to_string());
    ctx.send_mail(Mail::new(envelope, message))?;
    let line = Outcome::new(mail.name(), rcpt, Status::Forwarded)
        .field("to", to)
        .field("forward", forwarded);
    ctx.log(&line.to_string());
    Ok(())
}

impl Mailet for LocalDelivery {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut delivery = mail.clone();
        delivery.message.remove_header("Return-Path");
        let return_path = format!(
            "Return-Path: <{}>\r\n",
            mail.sender().map(|s| s.to_string()).unwrap_or_default()
        );
        // Each recipient succeeds or fails on its own: a failure for one must not send the
        // others, who already have the mail, to `error` (and so to a second copy or a bounce).
        let mut failed: Vec<(MailAddress, String)> = Vec::new();
        let mut retry: Vec<(MailAddress, String)> = Vec::new();
        for rcpt in mail.recipients() {
            let outcome = target(rcpt, mail, ctx, Settings::ALL).and_then(|target| match target {
                Target::Inbox(user) => {
                    let trace = format!("{return_path}Delivered-To: {rcpt}\r\n");
                    ctx.deliver_to_inbox(&user, trace.as_bytes(), &delivery)?;
                    let mut line =
                        Outcome::new(mail.name(), rcpt, Status::Delivered).field("mailbox", &user);
                    if let Some(maildir) = ctx.inbox_location(&user) {
                        line = line.field("maildir", maildir);
                    }
                    ctx.log(&line.to_string());
                    Ok(())
                }
                Target::Forward(to) => forward(mail, rcpt, &to, ctx),
                Target::Fail(why) | Target::Unknown(why) => Err(MailetError::new(why)),
            });
            match outcome {
                Ok(()) => {}
                Err(e) if e.is_temporary() => retry.push((rcpt.clone(), e.to_string())),
                Err(e) => failed.push((rcpt.clone(), e.to_string())),
            }
        }
        if retry.is_empty() && failed.len() == mail.recipients().len() && !failed.is_empty() {
            // Nothing was delivered: the mail as a whole goes where onMailetException says.
            for (rcpt, why) in &failed {
                let line = Outcome::new(mail.name(), rcpt, Status::Failed).field("reason", why);
                ctx.log(&line.to_string());
            }
            return Err(MailetError::permanent(reasons(&failed)));
        }
        if !failed.is_empty() {
            let mut rest = mail.split_off(
                derived_mail_name(mail.name()),
                failed.iter().map(|(r, _)| r.clone()).collect(),
            );
            rest.envelope.error_message = Some(reasons(&failed));
            rest.set_state(state::ERROR);
            let copy = rest.name().to_string();
            if let Err(e) = ctx.send_mail(rest) {
                // Not in the spool: these recipients are tried again with the others.
                retry.extend(failed.into_iter().map(|(r, why)| {
                    (
                        r,
                        format!("{why}, and not sent to the error processor: {e}"),
                    )
                }));
            } else {
                for (rcpt, why) in &failed {
                    let line = Outcome::new(mail.name(), rcpt, Status::Failed)
                        .field("reason", why)
                        .field("copy", &copy)
                        .field("next", state::ERROR);
                    ctx.log(&line.to_string());
                }
            }
        }
        if !retry.is_empty() {
            // Tried again later (a full disk, say): the mail keeps only these recipients.
            let message = reasons(&retry);
            mail.set_recipients(retry.into_iter().map(|(r, _)| r).collect());
            return Err(MailetError::temporary(message));
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

/// `LocalDelivery: rcpt: why; rcpt: why`, for the log and the error message.
fn reasons(failures: &[(MailAddress, String)]) -> String {
    let why: Vec<String> = failures
        .iter()
        .map(|(r, why)| format!("{r}: {why}"))
        .collect();
    format!("LocalDelivery: {}", why.join("; "))
}
