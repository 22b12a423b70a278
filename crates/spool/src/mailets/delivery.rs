//! LocalDelivery: puts mail in local users' inboxes, honouring aliases and forwards from the
//! users repository.
//!
//! Each delivered copy gets `Return-Path:` (replacing any the message carried) and
//! `Delivered-To:` on top. A forwarded copy also carries `Delivered-To:`, which is how a
//! forwarding loop (a → b → a) is recognised and stopped. Recipients that are not local users go
//! to the `error` processor in a mail of their own; the delivered mail is ghosted.

use mailroom_mailet::{
    new_mail_name, state, Envelope, Mail, MailAddress, Mailet, MailetContext, MailetError,
};

use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry.add_mailet("LocalDelivery", |_| Ok(Box::new(LocalDelivery)));
}

struct LocalDelivery;

/// Where one recipient's mail goes.
enum Target {
    Inbox(String),
    Forward(MailAddress),
    Fail(&'static str),
}

impl LocalDelivery {
    fn target(
        rcpt: &MailAddress,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Target, MailetError> {
        if !ctx.is_local_server(rcpt.domain()) {
            return Ok(Target::Fail("not a local domain"));
        }
        let Some(user) = ctx.local_user(rcpt.local_part())? else {
            return Ok(Target::Fail("no such local user"));
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
        if let Some(forward) = user.forward {
            return Ok(Target::Forward(forward));
        }
        match user.alias {
            None => Ok(Target::Inbox(user.name)),
            Some(alias) => match ctx.local_user(&alias)? {
                Some(target) => Ok(Target::Inbox(target.name)),
                None => Ok(Target::Fail("alias names no existing user")),
            },
        }
    }
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
        let mut any_temporary = false;
        for rcpt in mail.recipients() {
            let outcome = Self::target(rcpt, mail, ctx).and_then(|target| match target {
                Target::Inbox(user) => {
                    let trace = format!("{return_path}Delivered-To: {rcpt}\r\n");
                    ctx.deliver_to_inbox(&user, trace.as_bytes(), &delivery)
                }
                Target::Forward(to) => {
                    let mut envelope =
                        Envelope::new(new_mail_name(), mail.sender().cloned(), vec![to]);
                    envelope.remote_addr = mail.envelope.remote_addr.clone();
                    envelope.remote_host = mail.envelope.remote_host.clone();
                    let mut message = mail.message.clone();
                    message.prepend_header("Delivered-To", &rcpt.to_string());
                    ctx.send_mail(Mail::new(envelope, message))
                }
                Target::Fail(why) => Err(MailetError::new(why)),
            });
            if let Err(e) = outcome {
                any_temporary |= e.is_temporary();
                failed.push((rcpt.clone(), e.to_string()));
            }
        }
        if failed.len() == mail.recipients().len() && !failed.is_empty() {
            // Nothing was delivered: the mail as a whole goes where onMailetException says,
            // unless a failure may pass (a full disk): then all of it is tried again later,
            // and the recipients that fail for good are told apart on that later try.
            let why: Vec<String> = failed
                .iter()
                .map(|(r, why)| format!("{r}: {why}"))
                .collect();
            let message = format!("LocalDelivery: {}", why.join("; "));
            return Err(if any_temporary {
                MailetError::temporary(message)
            } else {
                MailetError::permanent(message)
            });
        }
        if !failed.is_empty() {
            let why: Vec<String> = failed
                .iter()
                .map(|(r, why)| format!("{r}: {why}"))
                .collect();
            let mut rest = mail.split_off(
                new_mail_name(),
                failed.into_iter().map(|(r, _)| r).collect(),
            );
            rest.envelope.error_message = Some(format!("LocalDelivery: {}", why.join("; ")));
            rest.set_state(state::ERROR);
            ctx.send_mail(rest)?;
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}
