//! `Redirect`, `Resend` and `Forward`: James 2.3's AbstractRedirect family. Each sends a new
//! mail made from the one it is given (to other recipients, with other header fields, or as a
//! new message that quotes or attaches it) with [`MailetContext::send_mail`], named after the
//! original with [`derived_mail_name`], and ghosts the original unless `<passThrough>` is
//! true.
//!
//! The parameters are James's, with its defaults: `recipients`, `to`, `sender`,
//! `replyTo`/`replyto`, `reversePath`, `message`, `inline` (Redirect: `body`; Resend:
//! `unaltered`), `attachment` (`none`), `subject`, `prefix`, `attachError`, `isReply`,
//! `static`, `passThrough` (false), `fakeDomainCheck` (false), `debug`; Forward reads only
//! `forwardto`/`forwardTo`, `passThrough`, `fakeDomainCheck` and `debug`. Address parameters take
//! James's special values (`postmaster`, `sender`, `from`, `replyTo`, `reversePath`, `to`,
//! `recipients`, `unaltered`, `null`, and `delete` as `null`), each only where James allows
//! it; the factory refuses any other.
//!
//! A mail made by one of them carries the attribute [`ATTR_REDIRECTS`] (how many were made in
//! a row); the ninth in a row is refused as a loop in the processor tree (a permanent error:
//! the mail goes to `error`), where James would loop until its mail names grew too long.
//!
//! Parameters are read once when the tree is built, so `<static>` changes nothing here (it is
//! checked, and accepted for Redirect only, as James does).
//!
//! A large original is never read into memory: `unaltered` shares the original's body, and
//! `inline`/`attachment` of the body or the whole message stream it from storage into the new
//! mail ([`Spliced`](super::compose::Spliced)).

use std::sync::Arc;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, header_section_len, state, AttributeValue, BodySource, DnsError, Mail,
    MailAddress, Mailet, MailetConfig, MailetContext, MailetError, MemoryBody, Message,
};

use super::compose::{
    crlf, encode_header_text, encoding, has_8bit, header_addresses, marker, one_line,
    splice_markers, Segment,
};
use crate::Registry;

mod build;

const REDIRECT_PARAMS: &[&str] = &[
    "static",
    "debug",
    "passThrough",
    "fakeDomainCheck",
    "inline",
    "attachment",
    "message",
    "recipients",
    "to",
    "replyTo",
    "replyto",
    "reversePath",
    "sender",
    "subject",
    "prefix",
    "attachError",
    "isReply",
];

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("Redirect", |c| Ok(Box::new(Redirect::new(Variant::Redirect, c)?)))
        .params(REDIRECT_PARAMS)
        .about(
            "Sends a new mail made from this one (James's AbstractRedirect): to `recipients` \
             (default: `to`), with `To:` from `to` (default: `recipients`), `From:` from \
             `sender`, envelope sender from `reversePath` (default: `sender`), `Reply-To:` \
             from `replyTo`, the text of `message` with the original inlined as `inline` says \
             (default `body`; also `unaltered`, `heads`, `all`, `none`) and attached as \
             `attachment` says (default `none`; also `heads`, `body`, `all`, `message`), \
             `subject`/`prefix`, `attachError`, `isReply`. Special addresses: postmaster, \
             sender, from, replyTo, reversePath, to, recipients, unaltered, null. Ghosts the \
             original unless `passThrough`; `fakeDomainCheck` refuses a sender domain without \
             MX or address records.",
            r#"<mailet match="RecipientIs=old@example.org" class="Redirect"><recipients>new@example.org</recipients><inline>unaltered</inline></mailet>"#,
        );
    registry
        .add_mailet("Resend", |c| Ok(Box::new(Redirect::new(Variant::Resend, c)?)))
        .params(&REDIRECT_PARAMS[1..])
        .about(
            "Redirect with nothing implied: `inline` defaults to `unaltered`, and `recipients` \
             and `to` do not stand in for each other (absent: unchanged). Same parameters as \
             Redirect except `static`.",
            r#"<mailet match="All" class="Resend"><recipients>archive@example.org</recipients><passThrough>true</passThrough></mailet>"#,
        );
    registry
        .add_mailet("Forward", |c| Ok(Box::new(Redirect::new(Variant::Forward, c)?)))
        .params(&["forwardto", "forwardTo", "passThrough", "fakeDomainCheck", "debug"])
        .about(
            "Sends the message unaltered to the addresses of `forwardto` (required; special \
             addresses as Redirect) and ghosts the original unless `passThrough`.",
            r#"<mailet match="RecipientIs=bob@example.org" class="Forward"><forwardto>bob@elsewhere.example</forwardto></mailet>"#,
        );
}

/// Which of the three mailets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Redirect,
    Resend,
    Forward,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Redirect => "Redirect",
            Variant::Resend => "Resend",
            Variant::Forward => "Forward",
        }
    }
}

/// How much of the original goes into the new message (`inline`, `attachment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The original message itself, header fields edited (`inline` only).
    Unaltered,
    Heads,
    Body,
    All,
    None,
    /// The whole original as `message/rfc822` (`attachment` only in effect).
    Message,
}

impl Part {
    fn parse(mailet: &str, param: &str, value: &str) -> Result<Self, MailetError> {
        Ok(match value.to_ascii_lowercase().as_str() {
            "unaltered" => Part::Unaltered,
            "heads" => Part::Heads,
            "body" => Part::Body,
            "all" => Part::All,
            "none" => Part::None,
            "message" => Part::Message,
            other => {
                return Err(MailetError::new(format!(
                    "mailet {mailet}: <{param}> must be unaltered, heads, body, all, none or \
                     message, got {other:?}"
                )))
            }
        })
    }
}

/// James's special ("magic") address values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    Postmaster,
    Sender,
    From,
    ReplyTo,
    ReversePath,
    To,
    Recipients,
    Unaltered,
    /// `null`, and James's `delete` (which no parameter of 2.3.2 accepts; taken as `null`).
    Null,
}

impl Special {
    fn parse(word: &str) -> Option<Special> {
        Some(match word.to_ascii_lowercase().as_str() {
            "postmaster" => Special::Postmaster,
            "sender" => Special::Sender,
            "from" => Special::From,
            "replyto" => Special::ReplyTo,
            "reversepath" => Special::ReversePath,
            "to" => Special::To,
            "recipients" => Special::Recipients,
            "unaltered" => Special::Unaltered,
            "null" | "delete" => Special::Null,
            _ => return None,
        })
    }
}

/// An address parameter's item: special or plain.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addr {
    Special(Special),
    Plain(MailAddress),
}

/// Which specials a list parameter (`recipients`, `to`, `forwardto`) allows.
const LIST_SPECIALS: &[Special] = &[
    Special::Postmaster,
    Special::Sender,
    Special::From,
    Special::ReplyTo,
    Special::ReversePath,
    Special::Unaltered,
    Special::Recipients,
    Special::To,
    Special::Null,
];
/// `replyTo` and `reversePath` (Redirect's `reversePath` has no `unaltered`: checked below).
const SINGLE_SPECIALS: &[Special] = &[
    Special::Postmaster,
    Special::Sender,
    Special::Null,
    Special::Unaltered,
];
const SENDER_SPECIALS: &[Special] = &[Special::Postmaster, Special::Sender, Special::Unaltered];

fn parse_addr(
    mailet: &str,
    param: &str,
    text: &str,
    allowed: &[Special],
) -> Result<Addr, MailetError> {
    let text = text.trim();
    if let Some(special) = Special::parse(text) {
        if !allowed.contains(&special) {
            return Err(MailetError::new(format!(
                "mailet {mailet}: <{param}> does not take the special address {text:?}"
            )));
        }
        return Ok(Addr::Special(special));
    }
    // `Name <user@domain>`: the address between the angle brackets.
    let bare = match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => &text[open + 1..close],
        _ => text,
    };
    MailAddress::parse(bare.trim())
        .map(Addr::Plain)
        .map_err(|e| {
            MailetError::new(format!(
            "mailet {mailet}: <{param}> has {text:?}, neither an address nor a special value: {e}"
        ))
        })
}

fn parse_list(mailet: &str, param: &str, text: &str) -> Result<Vec<Addr>, MailetError> {
    let items: Vec<Addr> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| parse_addr(mailet, param, t, LIST_SPECIALS))
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(MailetError::new(format!(
            "mailet {mailet}: <{param}> is empty"
        )));
    }
    Ok(items)
}

/// One of the three mailets, configured.
#[derive(Debug)]
struct Redirect {
    variant: Variant,
    pass_through: bool,
    fake_domain_check: bool,
    inline: Part,
    attachment: Part,
    message: String,
    /// New envelope recipients; `None`: the original's.
    recipients: Option<Vec<Addr>>,
    /// New `To:`; `None`: unchanged.
    to: Option<Vec<Addr>>,
    reply_to: Option<Addr>,
    reverse_path: Option<Addr>,
    sender: Option<Addr>,
    subject: Option<String>,
    prefix: Option<String>,
    attach_error: bool,
    is_reply: bool,
}

impl Redirect {
    fn new(variant: Variant, c: &MailetConfig) -> Result<Self, MailetError> {
        let name = variant.name();
        c.bool_param("debug", false)?;
        if variant == Variant::Redirect {
            c.bool_param("static", false)?;
        }
        let param = |p: &str| c.param(p).filter(|v| !v.trim().is_empty());
        let list = |p: &str| param(p).map(|v| parse_list(name, p, v)).transpose();
        let single = |p: &str, v: Option<&str>, allowed: &[Special]| {
            v.map(|v| parse_addr(name, p, v, allowed)).transpose()
        };
        let mut redirect = Redirect {
            variant,
            pass_through: c.bool_param("passThrough", false)?,
            fake_domain_check: c.bool_param("fakeDomainCheck", false)?,
            inline: Part::Unaltered,
            attachment: Part::None,
            message: String::new(),
            recipients: None,
            to: None,
            reply_to: None,
            reverse_path: None,
            sender: None,
            subject: None,
            prefix: None,
            attach_error: false,
            is_reply: false,
        };
        if variant == Variant::Forward {
            // James reads forwardto, else forwardTo; both are checked so that a typo in the
            // one not read is still reported.
            let other = param("forwardTo")
                .map(|t| parse_list(name, "forwardTo", t))
                .transpose()?;
            redirect.recipients = match param("forwardto") {
                Some(text) => Some(parse_list(name, "forwardto", text)?),
                None => other,
            };
            if redirect.recipients.is_none() {
                return Err(MailetError::new(
                    "mailet Forward needs the parameter <forwardto>",
                ));
            }
            return Ok(redirect);
        }
        let default_inline = if variant == Variant::Redirect {
            "body"
        } else {
            "unaltered"
        };
        redirect.inline = Part::parse(name, "inline", param("inline").unwrap_or(default_inline))?;
        redirect.attachment =
            Part::parse(name, "attachment", param("attachment").unwrap_or("none"))?;
        if redirect.attachment == Part::Unaltered {
            // James treats it as no attachment; say so rather than silently.
            return Err(MailetError::new(format!(
                "mailet {name}: <attachment> takes heads, body, all, message or none"
            )));
        }
        redirect.message = c.param("message").map(crlf).unwrap_or_default();
        redirect.recipients = list("recipients")?;
        redirect.to = list("to")?;
        if variant == Variant::Redirect {
            // Redirect: each stands in for the other; one of them is needed.
            if redirect.recipients.is_none() {
                redirect.recipients = redirect.to.clone();
            }
            if redirect.to.is_none() {
                redirect.to = redirect.recipients.clone();
            }
            if redirect.recipients.is_none() {
                return Err(MailetError::new(
                    "mailet Redirect needs the parameter <recipients> or <to>",
                ));
            }
        }
        redirect.reply_to = single(
            "replyTo",
            param("replyTo").or(param("replyto")),
            SINGLE_SPECIALS,
        )?;
        let reverse_specials: &[Special] = if variant == Variant::Redirect {
            &SINGLE_SPECIALS[..3]
        } else {
            SINGLE_SPECIALS
        };
        redirect.reverse_path = single("reversePath", param("reversePath"), reverse_specials)?;
        redirect.sender = single("sender", param("sender"), SENDER_SPECIALS)?;
        redirect.subject = c.param("subject").map(str::to_string);
        redirect.prefix = param("prefix").map(str::to_string);
        redirect.attach_error = c.bool_param("attachError", false)?;
        redirect.is_reply = c.bool_param("isReply", false)?;
        Ok(redirect)
    }

    /// The `From:` address `sender` gives, if it changes it.
    fn new_from(&self, ctx: &dyn MailetContext) -> Option<MailAddress> {
        match &self.sender {
            Some(Addr::Plain(a)) => Some(a.clone()),
            Some(Addr::Special(Special::Postmaster)) => Some(ctx.postmaster().clone()),
            _ => None,
        }
    }

    /// The new envelope sender: `Some(None)` for `<>`, `None` for the original's.
    fn new_reverse_path(&self, ctx: &dyn MailetContext) -> Option<Option<MailAddress>> {
        match &self.reverse_path {
            Some(Addr::Plain(a)) => Some(Some(a.clone())),
            Some(Addr::Special(Special::Postmaster)) => Some(Some(ctx.postmaster().clone())),
            Some(Addr::Special(Special::Null)) => Some(None),
            // Redirect: the reverse path follows `sender` when not given.
            None if self.variant == Variant::Redirect => self.new_from(ctx).map(Some),
            _ => None,
        }
    }
}

/// Attribute counting how many times a mail was made by these mailets from another one.
pub const ATTR_REDIRECTS: &str = "mailroom.redirect.count";
/// How many redirections in a row are allowed before the mail is taken for a loop in the
/// processor tree (James stops at a mail name grown by 8 redirections).
pub(super) const MAX_REDIRECTS: f64 = 8.0;

impl Mailet for Redirect {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let count = match mail.attribute(ATTR_REDIRECTS) {
            Some(AttributeValue::Number(n)) => *n,
            _ => 0.0,
        };
        if count >= MAX_REDIRECTS {
            return Err(MailetError::permanent(format!(
                "{}: mail {} was made by {count} redirections in a row; a loop in the \
                 processor tree?",
                self.variant.name(),
                mail.name()
            )));
        }
        let name = derived_mail_name(mail.name());
        let mut new = self.compose(mail, ctx, &name)?;
        new.set_attribute(ATTR_REDIRECTS, AttributeValue::Number(count + 1.0));
        if new.recipients().is_empty() {
            ctx.log(&format!(
                "mail={} {}: the new mail has no recipients; nothing sent",
                mail.name(),
                self.variant.name()
            ));
        } else {
            if self.fake_domain_check {
                if let Some(sender) = new.sender() {
                    let context = format!(
                        "{} cannot send {}: sender {sender} (consider Resend with another \
                         sender)",
                        self.variant.name(),
                        mail.name()
                    );
                    check_sender_domain(ctx, sender, &context)?;
                }
            }
            new.set_state(state::ROOT);
            let to: Vec<String> = new.recipients().iter().map(|r| r.to_string()).collect();
            let to = to.join(",");
            ctx.send_mail(new)?;
            for rcpt in mail.recipients() {
                let line = if self.pass_through {
                    format!(
                        "mail={} rcpt={rcpt} {}: copy sent to={to} as {name}",
                        mail.name(),
                        self.variant.name()
                    )
                } else {
                    Outcome::new(mail.name(), rcpt, Status::Forwarded)
                        .field("to", &to)
                        .field("forward", &name)
                        .to_string()
                };
                ctx.log(&line);
            }
        }
        if !self.pass_through {
            mail.set_state(state::GHOST);
        }
        Ok(())
    }
}

/// `fakeDomainCheck`: the sender's domain must have mail servers (MX records, else address
/// records). A DNS failure is a temporary error (the mail is tried again).
fn check_sender_domain(
    ctx: &dyn MailetContext,
    sender: &MailAddress,
    context: &str,
) -> Result<(), MailetError> {
    let domain = sender.domain();
    let invalid = || MailetError::permanent(format!("{context}: {domain} has no mail servers"));
    match ctx.dns_mx(domain) {
        Ok(mx) if !mx.is_empty() => Ok(()),
        Ok(_) | Err(DnsError::NoRecords { .. }) => match ctx.dns_ips(domain) {
            Ok(ips) if !ips.is_empty() => Ok(()),
            Ok(_) => Err(invalid()),
            Err(e) if e.is_temporary() => Err(MailetError::temporary(context).with_cause(e)),
            Err(_) => Err(invalid()),
        },
        Err(e) if e.is_temporary() => Err(MailetError::temporary(context).with_cause(e)),
        Err(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests;
