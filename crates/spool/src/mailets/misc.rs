//! Small mailets of James 2.3's library: UseHeaderRecipients, ServerTime, LogMessage,
//! RemoveMailAttribute, RemoveAllMailAttributes, and the `debug.*` helpers (Counter,
//! Identity, DumpSystemErr, ExceptionThrowingMailet), registered under their relative names
//! `debug.Counter`... as James resolves them under `org.apache.james.transport.mailets`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use mail_builder::headers::date::Date;
use mailroom_mailet::{
    derived_mail_name, state, AttributeValue, Mail, Mailet, MailetConfig, MailetContext,
    MailetError,
};

use super::compose::{header_addresses, Reply};
use super::redirect::{ATTR_REDIRECTS, MAX_REDIRECTS};
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("UseHeaderRecipients", |c| {
            c.bool_param("debug", false)?;
            Ok(Box::new(UseHeaderRecipients))
        })
        .params(&["debug"])
        .about(
            "Replaces the recipients with the addresses of the `Mail-For:` fields, else of \
             `To:` and `Cc:`, and sends the mail again from `root` (the original is ghosted).",
            r#"<mailet match="All" class="UseHeaderRecipients"/>"#,
        );
    registry
        .add_mailet("ServerTime", |_| Ok(Box::new(ServerTime)))
        .params(&[])
        .about(
            "Replies to the sender with the server's current time (subject `The time is \
             now...`), from the mail's first recipient; the mail goes on unchanged.",
            r#"<mailet match="RecipientIs=time@example.org" class="ServerTime"/>"#,
        );
    registry
        .add_mailet("LogMessage", |c| Ok(Box::new(LogMessage::new(c)?)))
        .params(&["headers", "body", "maxBody", "comment", "passThrough"])
        .about(
            "Writes the mail's header section (`headers`, default true) and body (`body`, \
             default true; at most `maxBody` octets, 0 = all) to the server log with an \
             optional `comment`; ghosts the mail when `passThrough` is false (default true).",
            r#"<mailet match="All" class="LogMessage"><maxBody>2048</maxBody><comment>audit</comment></mailet>"#,
        );
    registry
        .add_mailet("RemoveMailAttribute", |c| {
            let names: Vec<String> = c
                .required("name")?
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Err(MailetError::new(
                    "mailet RemoveMailAttribute: <name> lists no attribute",
                ));
            }
            Ok(Box::new(RemoveMailAttribute(names)))
        })
        .params(&["name"])
        .about(
            "Removes the mail attributes named in `name` (a comma-separated list).",
            r#"<mailet match="All" class="RemoveMailAttribute"><name>org.example.a, org.example.b</name></mailet>"#,
        );
    registry
        .add_mailet("RemoveAllMailAttributes", |_| {
            Ok(Box::new(RemoveAllMailAttributes))
        })
        .params(&[])
        .about(
            "Removes every attribute of the mail.",
            r#"<mailet match="All" class="RemoveAllMailAttributes"/>"#,
        );
    registry
        .add_mailet("debug.Counter", |_| {
            Ok(Box::new(Counter(AtomicU64::new(0))))
        })
        .params(&[])
        .about(
            "Counts the mails it sees (the count is logged) and ghosts each one.",
            r#"<mailet match="All" class="debug.Counter"/>"#,
        );
    registry
        .add_mailet("debug.Identity", |_| Ok(Box::new(Identity)))
        .params(&[])
        .about(
            "Does nothing: the mail goes on unchanged.",
            r#"<mailet match="All" class="debug.Identity"/>"#,
        );
    registry
        .add_mailet("debug.DumpSystemErr", |_| Ok(Box::new(DumpSystemErr)))
        .params(&[])
        .about(
            "Writes the whole message to the server's standard error.",
            r#"<mailet match="All" class="debug.DumpSystemErr"/>"#,
        );
    registry
        .add_mailet("debug.ExceptionThrowingMailet", |_| {
            Ok(Box::new(ExceptionThrowingMailet))
        })
        .params(&[])
        .about(
            "Fails every mail with a permanent error (`General protection fault`), to test \
             `onMailetException` and the error processor.",
            r#"<mailet match="All" class="debug.ExceptionThrowingMailet"/>"#,
        );
}

/// James's UseHeaderRecipients.
struct UseHeaderRecipients;

impl Mailet for UseHeaderRecipients {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut recipients = header_addresses(&mail.message, "Mail-For");
        if recipients.is_empty() {
            recipients = header_addresses(&mail.message, "To");
            recipients.extend(header_addresses(&mail.message, "Cc"));
        }
        if recipients.is_empty() {
            ctx.log(&format!(
                "mail={} UseHeaderRecipients: no recipient in Mail-For, To or Cc; mail dropped",
                mail.name()
            ));
        } else {
            // A header that names an address this mailet serves (To: the address it matches)
            // would send the mail round for ever, as in James: the hops are counted, with
            // Redirect's counter, and the ninth is refused as a loop.
            let hops = match mail.attribute(ATTR_REDIRECTS) {
                Some(AttributeValue::Number(n)) => *n,
                _ => 0.0,
            };
            if hops >= MAX_REDIRECTS {
                return Err(MailetError::permanent(format!(
                    "UseHeaderRecipients: mail {} was resent {hops} times in a row; a loop in \
                     the processor tree?",
                    mail.name()
                )));
            }
            let mut copy = mail.split_off(derived_mail_name(mail.name()), recipients);
            copy.set_state(state::ROOT);
            // A new mail, as James's: no attributes (an SMTP AUTH user among them would let
            // addresses taken from the header relay). Its client address stays the original's,
            // where James's would come from localhost.
            copy.envelope.attributes.clear();
            copy.set_attribute(ATTR_REDIRECTS, AttributeValue::Number(hops + 1.0));
            ctx.send_mail(copy)?;
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}

/// James's ServerTime.
struct ServerTime;

impl Mailet for ServerTime {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let (Some(sender), Some(from)) = (mail.sender(), mail.recipients().first()) else {
            ctx.log(&format!(
                "mail={} ServerTime: no reply to a mail with the null sender",
                mail.name()
            ));
            return Ok(());
        };
        // No reply to an automatic message (RFC 3834), nor to the address the reply comes
        // from: a mail from time@ to time@ (a forged sender) would otherwise be answered by
        // a reply that this mailet answers again, for ever.
        let automatic = mail
            .message
            .header("Auto-Submitted")
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
        if automatic || mail.recipients().contains(sender) {
            ctx.log(&format!(
                "mail={} ServerTime: no reply to an automatic message or to itself",
                mail.name()
            ));
            return Ok(());
        }
        let now = Date::now();
        let text = format!("This mail server thinks it's {}.\r\n", now.to_rfc822());
        let reply = Reply {
            from: (None, from),
            to: (None, sender),
            subject: "The time is now...",
            text: &text,
            reply_to: None,
            auto_submitted: true,
        }
        .to_mail(mail, ctx.server_name())?;
        ctx.send_mail(reply)
    }
}

/// James's LogMessage.
struct LogMessage {
    headers: bool,
    body: bool,
    /// Octets of the body logged; 0: all of it (logged in pieces, never held whole).
    max_body: u64,
    comment: Option<String>,
    pass_through: bool,
}

/// The largest piece of body written in one log event.
const LOG_PIECE: usize = 64 * 1024;

impl LogMessage {
    fn new(c: &MailetConfig) -> Result<Self, MailetError> {
        let max_body = match c.param("maxBody") {
            None | Some("") => 0,
            Some(v) => v.parse::<u64>().map_err(|_| {
                MailetError::new(format!(
                    "mailet LogMessage: <maxBody> must be a number of octets, got {v:?}"
                ))
            })?,
        };
        Ok(LogMessage {
            headers: c.bool_param("headers", true)?,
            body: c.bool_param("body", true)?,
            max_body,
            comment: c.param("comment").map(str::to_string),
            pass_through: c.bool_param("passThrough", true)?,
        })
    }
}

impl Mailet for LogMessage {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        let name = mail.name().to_string();
        tracing::info!(mail = %name, "LogMessage: logging mail");
        if let Some(comment) = &self.comment {
            tracing::info!(mail = %name, "LogMessage: {comment}");
        }
        if self.headers {
            let head = String::from_utf8_lossy(mail.message.header_section());
            tracing::info!(mail = %name, "LogMessage: headers:\n{}", head.trim_end());
        }
        if self.body {
            let limit = if self.max_body > 0 {
                self.max_body
            } else {
                u64::MAX
            };
            let mut reader = mail.message.body().open()?.take(limit);
            let mut piece = vec![0u8; LOG_PIECE];
            loop {
                let mut filled = 0;
                while filled < piece.len() {
                    let n = reader.read(&mut piece[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&piece[..filled]);
                tracing::info!(mail = %name, "LogMessage: body:\n{text}");
                if filled < piece.len() {
                    break;
                }
            }
        }
        if !self.pass_through {
            mail.set_state(state::GHOST);
        }
        Ok(())
    }
}

/// James's RemoveMailAttribute.
struct RemoveMailAttribute(Vec<String>);

impl Mailet for RemoveMailAttribute {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        for name in &self.0 {
            mail.envelope.attributes.remove(name);
        }
        Ok(())
    }
}

/// James's RemoveAllMailAttributes.
struct RemoveAllMailAttributes;

impl Mailet for RemoveAllMailAttributes {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        mail.envelope.attributes.clear();
        Ok(())
    }
}

/// `debug.Counter`.
struct Counter(AtomicU64);

impl Mailet for Counter {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.log(&format!("mail={} debug.Counter: {n}", mail.name()));
        mail.set_state(state::GHOST);
        Ok(())
    }
}

/// `debug.Identity`.
struct Identity;

impl Mailet for Identity {
    fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        Ok(())
    }
}

/// `debug.DumpSystemErr`.
struct DumpSystemErr;

impl Mailet for DumpSystemErr {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut reader = mail.message.reader()?;
        let stderr = std::io::stderr();
        let mut out = stderr.lock();
        if let Err(e) = std::io::copy(&mut reader, &mut out).and_then(|_| out.flush()) {
            ctx.log(&format!(
                "mail={} debug.DumpSystemErr: error printing message: {e}",
                mail.name()
            ));
        }
        Ok(())
    }
}

/// `debug.ExceptionThrowingMailet`.
struct ExceptionThrowingMailet;

impl Mailet for ExceptionThrowingMailet {
    fn service(&self, _: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        Err(MailetError::permanent("General protection fault"))
    }
}

#[cfg(test)]
#[path = "misc_tests.rs"]
mod tests;
