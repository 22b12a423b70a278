//! Bounces and notices: `DSNBounce` (an RFC 3464 delivery status report), `Bounce`,
//! `NotifySender` and `NotifyPostmaster`, with James 2.3's names and parameters.
//!
//! Each builds a new mail from the null sender `<>` about the mail it is given, sends it with
//! [`MailetContext::send_mail`] (state `root`, named after the original with
//! [`derived_mail_name`]), logs one outcome line per recipient of the original
//! (`status=bounced` or `status=notified`), and ghosts the original unless
//! `<passThrough>` is true (James's default: true).
//!
//! **A bounce is never bounced.** Every mail made here has the null sender and carries the
//! attribute [`ATTR_NOTICE`]. `DSNBounce`, `Bounce` and `NotifySender` send nothing about a
//! mail with the null sender (it is dropped, with a `status=dropped` line, or passed through);
//! `NotifyPostmaster` writes to the postmaster about such a mail once, but never about a mail
//! made here, so a notice that fails in turn ends there.
//!
//! The report's text parts are built with `mail-builder`; the returned message is never read
//! into memory: the report's body is the MIME text before it, the original message streamed
//! from storage, and the MIME text after it ([`Spliced`](super::compose::Spliced)), copied into the spool by
//! `send_mail`.

use std::sync::Arc;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, header_section_len, state, AttributeValue, BodySource, Envelope, Mail,
    MailAddress, Mailet, MailetConfig, MailetContext, MailetError, MemoryBody, Message,
};
use regex::Regex;

use super::compose::{crlf, enclose, encoding, has_8bit, one_line};
use crate::Registry;

/// Attribute set by RemoteDelivery: the remote host that refused the mail (`Remote-MTA:`).
/// A string for every recipient, or a map from recipient address to string.
pub const ATTR_REMOTE_MTA: &str = "mailroom.delivery.remote-mta";
/// Attribute set by RemoteDelivery: the RFC 3463 status (`5.1.1`). String or map, as above.
pub const ATTR_STATUS: &str = "mailroom.delivery.status";
/// Attribute set by RemoteDelivery: the remote server's reply (`Diagnostic-Code: smtp; ...`).
/// String or map, as above. Without it, the mail's error message is used.
pub const ATTR_DIAGNOSTIC: &str = "mailroom.delivery.diagnostic";
/// Attribute: `delayed` makes `DSNBounce` write a delay warning (`Action: delayed`, status
/// class 4) instead of a failure report.
pub const ATTR_ACTION: &str = "mailroom.delivery.action";
/// Attribute carried by every bounce and notice made here (its value: the mailet's name), so
/// that none of them causes another.
pub const ATTR_NOTICE: &str = "mailroom.bounce.notice";

/// The SMTP server's DSN attributes (`mailroom_smtp::ATTR_DSN_*`; the spool does not depend on
/// the SMTP crate, a test checks that the names agree).
pub(crate) const ATTR_DSN_RET: &str = "mailroom.smtp.dsn.ret";
pub(crate) const ATTR_DSN_ENVID: &str = "mailroom.smtp.dsn.envid";
pub(crate) const ATTR_DSN_RECIPIENTS: &str = "mailroom.smtp.dsn.recipients";

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("DSNBounce", |c| Ok(Box::new(Notify::new(Kind::Dsn, c)?))).about("Sends the sender an RFC 3464 delivery status report (multipart/report) from <> and ghosts the mail unless <passThrough>.", "<mailet match=\"All\" class=\"DSNBounce\"><passThrough>false</passThrough></mailet>")
        .params(&[
            "notice",
            "message",
            "sender",
            "attachment",
            "prefix",
            "passThrough",
            "attachStackTrace",
            "attachError",
        ]);
    registry
        .add_mailet("Bounce", |c| Ok(Box::new(Notify::new(Kind::Bounce, c)?))).about("Sends the sender a plain multipart/mixed notice with James's message details and the original attached.", "<mailet match=\"All\" class=\"Bounce\"><inline>heads</inline><attachment>message</attachment></mailet>")
        .params(&[
            "notice",
            "message",
            "sender",
            "sendingAddress",
            "inline",
            "attachment",
            "prefix",
            "passThrough",
            "attachStackTrace",
            "attachError",
        ]);
    registry
        .add_mailet("NotifySender", |c| {
            Ok(Box::new(Notify::new(Kind::NotifySender, c)?))
        }).about("Writes to the sender about the mail (default prefix Re:), the original attached.", "<mailet match=\"All\" class=\"NotifySender\"><notice>Your mail was held.</notice></mailet>")
        .params(NOTIFY_PARAMS);
    registry
        .add_mailet("NotifyPostmaster", |c| {
            Ok(Box::new(Notify::new(Kind::NotifyPostmaster, c)?))
        }).about("Writes to the postmaster about the mail (default prefix Re:), the original attached.", "<mailet match=\"All\" class=\"NotifyPostmaster\"><attachError>true</attachError></mailet>")
        .params(NOTIFY_PARAMS);
}

const NOTIFY_PARAMS: &[&str] = &[
    "notice",
    "message",
    "sender",
    "sendingAddress",
    "to",
    "inline",
    "attachment",
    "prefix",
    "passThrough",
    "attachStackTrace",
    "attachError",
];

/// Which of the four mailets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dsn,
    Bounce,
    NotifySender,
    NotifyPostmaster,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dsn => "DSNBounce",
            Kind::Bounce => "Bounce",
            Kind::NotifySender => "NotifySender",
            Kind::NotifyPostmaster => "NotifyPostmaster",
        }
    }

    /// Whether the notice goes to the mail's sender (all but NotifyPostmaster).
    fn to_sender(self) -> bool {
        self != Kind::NotifyPostmaster
    }
}

/// What of the original goes with the notice (`<attachment>`), from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attachment {
    /// Nothing.
    None,
    /// The header section, as `text/rfc822-headers`.
    Heads,
    /// The whole message, as `message/rfc822`.
    Message,
}

impl Attachment {
    fn parse(mailet: &str, value: Option<&str>) -> Result<Self, MailetError> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("message") | Some("all") => Ok(Attachment::Message),
            Some("heads") => Ok(Attachment::Heads),
            Some("none") => Ok(Attachment::None),
            Some(other) => Err(MailetError::new(format!(
                "mailet {mailet}: <attachment> must be message, all, heads or none, got {other:?}"
            ))),
        }
    }
}

/// An address named by `<sender>` or `<to>`: a keyword of James or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Who {
    Postmaster,
    Sender,
    From,
    ReplyTo,
    Unaltered,
    Address(MailAddress),
}

impl Who {
    fn parse(mailet: &str, param: &str, value: &str) -> Result<Self, MailetError> {
        Ok(match value.to_ascii_lowercase().as_str() {
            "postmaster" => Who::Postmaster,
            "sender" => Who::Sender,
            "from" => Who::From,
            "replyto" | "reversepath" => Who::ReplyTo,
            "unaltered" => Who::Unaltered,
            _ => Who::Address(MailAddress::parse(value).map_err(|e| {
                MailetError::new(format!(
                    "mailet {mailet}: <{param}> is neither postmaster, sender, from, replyTo, \
                     unaltered nor an address: {value:?}: {e}"
                ))
            })?),
        })
    }

    /// The header value this stands for; `field` is the original's field that `unaltered`
    /// keeps.
    fn render(&self, mail: &Mail, site: &Site, field: &str) -> String {
        let postmaster = || format!("Mail Delivery System <{}>", site.postmaster);
        let sender = || match mail.sender() {
            Some(s) => format!("<{s}>"),
            None => postmaster(),
        };
        match self {
            Who::Postmaster => postmaster(),
            Who::Sender => sender(),
            Who::From => mail.message.header("From").unwrap_or_else(sender),
            Who::ReplyTo => mail
                .message
                .header("Reply-To")
                .or_else(|| mail.message.header("From"))
                .unwrap_or_else(sender),
            Who::Unaltered => mail.message.header(field).unwrap_or_else(sender),
            Who::Address(a) => format!("<{a}>"),
        }
    }
}

/// One of the four mailets, configured.
struct Notify {
    kind: Kind,
    /// `<notice>` (or James's older `<message>`): the first paragraph of the text part.
    notice: Option<String>,
    /// `<sender>` (`<sendingAddress>`): the notice's `From:`. Default: the postmaster.
    from: Who,
    /// `<to>`: the notice's `To:` (NotifySender and NotifyPostmaster; who receives the notice
    /// does not change).
    to: Option<Who>,
    attachment: Attachment,
    /// `<inline>heads</inline>`: the original's header section in the text part (James's
    /// `none` is the default; `body`, `all` and `message` are refused, so that no message is
    /// read into memory).
    inline_heads: bool,
    /// `<prefix>`: put before the original's subject.
    prefix: String,
    pass_through: bool,
    /// `<attachStackTrace>` (`<attachError>`): the error message as an `error.txt` part.
    attach_error: bool,
}

impl Notify {
    fn new(kind: Kind, c: &MailetConfig) -> Result<Self, MailetError> {
        let name = kind.name();
        let notice = c
            .param("notice")
            .or(c.param("message"))
            .filter(|n| !n.is_empty())
            .map(crlf);
        let from = match c.param("sender").or(c.param("sendingAddress")) {
            None | Some("") => Who::Postmaster,
            Some(v) => Who::parse(name, "sender", v)?,
        };
        let to = match c.param("to") {
            None | Some("") => None,
            Some(v) => Some(Who::parse(name, "to", v)?),
        };
        let prefix = match c.param("prefix") {
            Some(p) => p.to_string(),
            None if matches!(kind, Kind::Dsn | Kind::Bounce) => "Undelivered:".to_string(),
            None => "Re:".to_string(),
        };
        // Both read (not `||`), so that a malformed second one is reported too.
        let attach_stack_trace = c.bool_param("attachStackTrace", false)?;
        let attach_error = c.bool_param("attachError", false)?;
        Ok(Notify {
            kind,
            notice,
            from,
            to,
            attachment: Attachment::parse(name, c.param("attachment"))?,
            inline_heads: match c.param("inline").map(str::to_ascii_lowercase).as_deref() {
                None | Some("") | Some("none") => false,
                Some("heads") => true,
                Some(other) => {
                    return Err(MailetError::new(format!(
                        "mailet {name}: <inline> must be none or heads in this build, got {other:?}"
                    )))
                }
            },
            prefix,
            pass_through: c.bool_param("passThrough", true)?,
            attach_error: attach_stack_trace || attach_error,
        })
    }

    /// Leaves the mail without a notice: logged, and ghosted unless passing through.
    fn skip(&self, mail: &mut Mail, ctx: &dyn MailetContext, reason: &str) {
        if self.pass_through {
            ctx.log(&format!(
                "mail={} {}: no notice sent: {reason}",
                mail.name(),
                self.kind.name()
            ));
            return;
        }
        for rcpt in mail.recipients() {
            let line = Outcome::new(mail.name(), rcpt, Status::Dropped).field("reason", reason);
            ctx.log(&line.to_string());
        }
        mail.set_state(state::GHOST);
    }
}

impl Mailet for Notify {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let is_notice = mail.attribute(ATTR_NOTICE).is_some();
        let recipient = if self.kind.to_sender() {
            match mail.sender() {
                Some(sender) => sender.clone(),
                None => {
                    self.skip(mail, ctx, "null sender: a bounce is never bounced");
                    return Ok(());
                }
            }
        } else {
            if is_notice {
                self.skip(mail, ctx, "a notice about a notice is never sent");
                return Ok(());
            }
            ctx.postmaster().clone()
        };
        let site = Site {
            host: ctx.server_name(),
            postmaster: ctx.postmaster(),
        };
        let Some((notice, reports, unwanted)) = self.notice(mail, &site, &recipient)? else {
            self.skip(mail, ctx, "the sender asked for no report (NOTIFY)");
            return Ok(());
        };
        let notice_name = notice.name().to_string();
        ctx.send_mail(notice)?;
        if matches!(self.kind, Kind::Dsn | Kind::Bounce) {
            metrics::counter!("mailroom_bounces_total").increment(1);
        }
        let status = match self.kind {
            Kind::Dsn | Kind::Bounce => Status::Bounced,
            Kind::NotifySender | Kind::NotifyPostmaster => Status::Notified,
        };
        for report in &reports {
            let mut line = Outcome::new(mail.name(), &report.address, status)
                .field("to", &recipient)
                .field("notice", &notice_name);
            if let Some(reason) = &report.diagnostic {
                line = line.field("reason", reason);
            }
            if self.kind == Kind::Dsn {
                line = line.field("dsn_status", &report.status);
            }
            ctx.log(&line.to_string());
        }
        for report in &unwanted {
            ctx.log(
                &Outcome::new(mail.name(), &report.address, Status::Dropped)
                    .field("reason", "the sender asked for no report (NOTIFY)")
                    .to_string(),
            );
        }
        if !self.pass_through {
            mail.set_state(state::GHOST);
        }
        Ok(())
    }
}

/// Who makes a notice: the server's name (`Reporting-MTA:`) and its postmaster (`From:`).
struct Site<'a> {
    host: &'a str,
    postmaster: &'a MailAddress,
}

/// What [`dsn_report`] made of a failed mail.
#[derive(Debug)]
pub enum DsnReport {
    /// The report (from `<>`, to the sender, state `root`, named with [`derived_mail_name`]),
    /// the recipients it reports on with their status code, and those whose `NOTIFY` asked
    /// for no report.
    Report {
        /// The report, ready for the spool.
        notice: Box<Mail>,
        /// The recipients reported on, each with its status code (`5.1.1`).
        reported: Vec<(MailAddress, String)>,
        /// The recipients left out: their `NOTIFY` asked for no failure report.
        unwanted: Vec<MailAddress>,
    },
    /// No report: the mail has the null sender (a bounce is never bounced).
    NullSender,
    /// No report: every recipient asked for none (`NOTIFY`).
    NotWanted,
}

/// The RFC 3464 report `DSNBounce` (with its default parameters) makes about `mail`, whose
/// recipients all failed: the failure from the error message and the `mailroom.delivery.*`
/// attributes, `RET`/`ENVID`/`NOTIFY`/`ORCPT` from the SMTP server's attributes.
/// `server_name` is the `Reporting-MTA`, `postmaster` the report's `From:`. For
/// RemoteDelivery without a `<bounceProcessor>`.
pub fn dsn_report(
    mail: &Mail,
    server_name: &str,
    postmaster: &MailAddress,
) -> Result<DsnReport, MailetError> {
    let Some(sender) = mail.sender().cloned() else {
        return Ok(DsnReport::NullSender);
    };
    let config = MailetConfig {
        name: Kind::Dsn.name().to_string(),
        params: Default::default(),
    };
    let dsn = Notify::new(Kind::Dsn, &config)?;
    let site = Site {
        host: server_name,
        postmaster,
    };
    Ok(match dsn.notice(mail, &site, &sender)? {
        None => DsnReport::NotWanted,
        Some((notice, reports, unwanted)) => DsnReport::Report {
            notice: Box::new(notice),
            reported: reports.into_iter().map(|r| (r.address, r.status)).collect(),
            unwanted: unwanted.into_iter().map(|r| r.address).collect(),
        },
    })
}

impl Notify {
    /// The notice about `mail` to `recipient`, with the recipients reported on and those
    /// left out (`NOTIFY`); `None` when none is reported on.
    #[allow(clippy::type_complexity)]
    fn notice(
        &self,
        mail: &Mail,
        site: &Site,
        recipient: &MailAddress,
    ) -> Result<Option<(Mail, Vec<RecipientReport>, Vec<RecipientReport>)>, MailetError> {
        let delayed = self.kind == Kind::Dsn
            && mail
                .attribute(ATTR_ACTION)
                .is_some_and(|a| a.to_string().eq_ignore_ascii_case("delayed"));
        let reports: Vec<RecipientReport> = mail
            .recipients()
            .iter()
            .map(|rcpt| RecipientReport::of(mail, rcpt, delayed))
            .collect();
        // RFC 3461: a recipient given NOTIFY without FAILURE (or DELAY) gets no report.
        let (reports, unwanted): (Vec<_>, Vec<_>) = if self.kind == Kind::Dsn {
            reports.into_iter().partition(|r| r.wanted(delayed))
        } else {
            (reports, Vec::new())
        };
        if reports.is_empty() {
            return Ok(None);
        }
        let notice = self.build(mail, site, recipient, &reports, delayed)?;
        Ok(Some((notice, reports, unwanted)))
    }
}

/// What the report says about one recipient of the original.
struct RecipientReport {
    address: MailAddress,
    /// `ORCPT` as the client sent it, decoded from xtext.
    original: Option<String>,
    /// `NOTIFY` as the client sent it.
    notify: Option<String>,
    status: String,
    remote_mta: Option<String>,
    /// The remote reply, else the mail's error message.
    diagnostic: Option<String>,
}

impl RecipientReport {
    fn of(mail: &Mail, rcpt: &MailAddress, delayed: bool) -> Self {
        let diagnostic = per_recipient(mail, ATTR_DIAGNOSTIC, rcpt)
            .or_else(|| mail.envelope.error_message.clone())
            .map(|d| one_line(&d))
            .filter(|d| !d.is_empty());
        let status = per_recipient(mail, ATTR_STATUS, rcpt)
            .filter(|s| status_code().is_match(s))
            .or_else(|| {
                let text = diagnostic.as_deref()?;
                Some(status_code().find(text)?.as_str().to_string())
            })
            .unwrap_or_else(|| if delayed { "4.0.0" } else { "5.0.0" }.to_string());
        let dsn = dsn_params(mail, rcpt);
        RecipientReport {
            address: rcpt.clone(),
            original: dsn
                .as_ref()
                .and_then(|m| m.0.clone())
                .map(|o| xtext_decode(&o)),
            notify: dsn.and_then(|m| m.1),
            status,
            remote_mta: per_recipient(mail, ATTR_REMOTE_MTA, rcpt).map(|h| one_line(&h)),
            diagnostic,
        }
    }

    fn wanted(&self, delayed: bool) -> bool {
        let Some(notify) = &self.notify else {
            return true;
        };
        let word = if delayed { "DELAY" } else { "FAILURE" };
        notify
            .split(',')
            .any(|n| n.trim().eq_ignore_ascii_case(word))
    }

    /// The per-recipient fields of the `message/delivery-status` part.
    fn fields(&self, action: &str) -> String {
        let mut out = String::new();
        if let Some(original) = &self.original {
            let (kind, address) = original.split_once(';').unwrap_or(("rfc822", original));
            out.push_str(&format!(
                "Original-Recipient: {}; {}\r\n",
                kind.trim(),
                one_line(address.trim())
            ));
        }
        out.push_str(&format!("Final-Recipient: rfc822; {}\r\n", self.address));
        out.push_str(&format!("Action: {action}\r\n"));
        out.push_str(&format!("Status: {}\r\n", self.status));
        if let Some(host) = &self.remote_mta {
            out.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
        }
        if let Some(text) = &self.diagnostic {
            let kind = if smtp_reply().is_match(text) {
                "smtp"
            } else {
                "X-Mailroom"
            };
            out.push_str(&format!("Diagnostic-Code: {kind}; {text}\r\n"));
        }
        out
    }
}

/// An RFC 3463 status code (`5.1.1`).
fn status_code() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b[245]\.\d{1,3}\.\d{1,3}\b").expect("valid"))
}

/// Text that starts with an SMTP reply code.
fn smtp_reply() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[2-5]\d\d([ -]|$)").expect("valid"))
}

/// A delivery attribute for one recipient: a string for all, or a map by address.
fn per_recipient(mail: &Mail, name: &str, rcpt: &MailAddress) -> Option<String> {
    match mail.attribute(name)? {
        AttributeValue::Map(map) => {
            let key = rcpt.to_string();
            map.get(&key)
                .or_else(|| {
                    map.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                        .map(|(_, v)| v)
                })
                .map(ToString::to_string)
        }
        other => Some(other.to_string()),
    }
    .filter(|s| !s.trim().is_empty())
}

/// The recipient's `(ORCPT, NOTIFY)` as the SMTP server kept them.
fn dsn_params(mail: &Mail, rcpt: &MailAddress) -> Option<(Option<String>, Option<String>)> {
    let AttributeValue::Map(all) = mail.attribute(ATTR_DSN_RECIPIENTS)? else {
        return None;
    };
    let AttributeValue::Map(entry) = all.get(&rcpt.to_string())? else {
        return None;
    };
    Some((
        entry.get("orcpt").map(ToString::to_string),
        entry.get("notify").map(ToString::to_string),
    ))
}

/// Decodes RFC 3461 xtext (`+2B` is `+`); a malformed escape is kept as it is.
fn xtext_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// When the mail arrived: the time in its name (`Mail<millis>-...`, which copies keep), else
/// when its envelope last changed.
fn arrival(mail: &Mail) -> Date {
    let millis = mail
        .name()
        .strip_prefix("Mail")
        .and_then(|rest| rest.get(..13))
        .and_then(|digits| digits.parse::<u64>().ok())
        .unwrap_or(mail.envelope.last_updated);
    Date::new((millis / 1000) as i64)
}

impl Notify {
    /// What of the original goes with the notice: the mailet's `<attachment>`, and for a DSN
    /// no more than `RET` asks (`HDRS`: the header section).
    fn attachment_for(&self, mail: &Mail) -> Attachment {
        let ret = mail.attribute(ATTR_DSN_RET).map(ToString::to_string);
        match ret.as_deref() {
            Some(r) if self.kind == Kind::Dsn && r.eq_ignore_ascii_case("HDRS") => {
                self.attachment.min(Attachment::Heads)
            }
            _ => self.attachment,
        }
    }

    /// The notice, ready for `send_mail`.
    fn build(
        &self,
        mail: &Mail,
        site: &Site,
        recipient: &MailAddress,
        reports: &[RecipientReport],
        delayed: bool,
    ) -> Result<Mail, MailetError> {
        let host = site.host.to_string();
        let name = derived_mail_name(mail.name());
        let original_subject = mail.message.subject().unwrap_or_default();
        let subject = format!("{} {}", self.prefix, one_line(&original_subject))
            .trim()
            .to_string();
        let subject = if subject.is_empty() {
            format!("{} notice", self.kind.name())
        } else {
            subject
        };
        let to = match &self.to {
            Some(who) => who.render(mail, site, "To"),
            None => format!("<{recipient}>"),
        };
        let mut builder = MessageBuilder::new()
            .header("From", Raw::new(self.from.render(mail, site, "From")))
            .header("To", Raw::new(to))
            .subject(subject)
            .date(Date::now())
            .message_id(format!("{name}@{host}"))
            .header("Auto-Submitted", Raw::new("auto-replied"));
        if let Some(id) = mail.message.header("Message-ID") {
            let id = one_line(&id);
            builder = builder
                .header("In-Reply-To", Raw::new(id.clone()))
                .header("References", Raw::new(id));
        }

        let mut parts = vec![MimePart::new(
            ContentType::new("text/plain").attribute("charset", "utf-8"),
            BodyPart::Text(self.human_text(mail, &host, reports, delayed).into()),
        )];
        if self.kind == Kind::Dsn {
            let action = if delayed { "delayed" } else { "failed" };
            let mut status = format!("Reporting-MTA: dns; {host}\r\n");
            if let Some(envid) = mail.attribute(ATTR_DSN_ENVID) {
                status.push_str(&format!(
                    "Original-Envelope-Id: {}\r\n",
                    one_line(&xtext_decode(&envid.to_string()))
                ));
            }
            status.push_str(&format!("Arrival-Date: {}\r\n", arrival(mail).to_rfc822()));
            for report in reports {
                status.push_str("\r\n");
                status.push_str(&report.fields(action));
            }
            let eight_bit = !status.is_ascii();
            parts.push(
                MimePart::new(
                    "message/delivery-status",
                    BodyPart::Binary(status.into_bytes().into()),
                )
                .transfer_encoding(encoding(eight_bit)),
            );
        }
        if self.attach_error {
            if let Some(error) = &mail.envelope.error_message {
                parts.push(
                    MimePart::new(
                        ContentType::new("text/plain").attribute("charset", "utf-8"),
                        BodyPart::Text(crlf(error).into()),
                    )
                    .attachment("error.txt"),
                );
            }
        }
        // The original's place in the MIME text: a marker that cannot occur in it (the
        // boundaries are random too), replaced by the streamed message.
        let marker = format!("\u{1}mailroom-original-{name}\u{1}");
        let attachment = self.attachment_for(mail);
        match attachment {
            Attachment::None => {}
            Attachment::Heads => {
                let heads = mail.message.header_section();
                parts.push(
                    MimePart::new("text/rfc822-headers", BodyPart::Binary(heads.into()))
                        .transfer_encoding(encoding(!heads.is_ascii())),
                );
            }
            Attachment::Message => {
                let eight_bit = has_8bit(mail.message.reader()?)?;
                parts.push(
                    MimePart::new(
                        "message/rfc822",
                        BodyPart::Binary(marker.clone().into_bytes().into()),
                    )
                    .transfer_encoding(encoding(eight_bit)),
                );
            }
        }
        let content_type = if self.kind == Kind::Dsn {
            ContentType::new("multipart/report").attribute("report-type", "delivery-status")
        } else {
            ContentType::new("multipart/mixed")
        };
        let bytes = builder
            .body(MimePart::new(content_type, BodyPart::Multipart(parts)))
            .write_to_vec()?;
        let header_len = header_section_len(&bytes);
        let (header, body) = bytes.split_at(header_len);
        let enclosed = (attachment == Attachment::Message)
            .then(|| enclose(body, marker.as_bytes(), &mail.message))
            .flatten();
        let body: Arc<dyn BodySource> = match enclosed {
            Some(spliced) => Arc::new(spliced),
            None => Arc::new(MemoryBody::new(body)),
        };
        let mut envelope = Envelope::new(name, None, vec![recipient.clone()]);
        envelope.attributes.insert(
            ATTR_NOTICE.to_string(),
            AttributeValue::String(self.kind.name().to_string()),
        );
        Ok(Mail::new(envelope, Message::new(header.to_vec(), body)))
    }

    /// The human-readable part.
    fn human_text(
        &self,
        mail: &Mail,
        host: &str,
        reports: &[RecipientReport],
        delayed: bool,
    ) -> String {
        let mut text = String::new();
        match (&self.notice, self.kind) {
            (Some(notice), _) => text.push_str(notice),
            (None, Kind::Dsn) if delayed => text.push_str(&format!(
                "This is the mail system at {host}.\r\n\r\n\
                 Your message has not been delivered yet to the recipients below.\r\n\
                 The mail system will keep trying; you need not send it again."
            )),
            (None, Kind::Dsn | Kind::Bounce) => text.push_str(&format!(
                "This is the mail system at {host}.\r\n\r\n\
                 I'm sorry to have to tell you that your message could not be delivered\r\n\
                 to the recipients below. This is a permanent error; I've given up.\r\n\
                 The reason for each recipient follows."
            )),
            (None, _) => text.push_str(
                "We were unable to deliver the attached message because of an error in the \
                 mail server.",
            ),
        }
        text.push_str("\r\n\r\n");
        for report in reports {
            text.push_str(&format!("<{}>", report.address));
            if let Some(reason) = &report.diagnostic {
                text.push_str(&format!(": {reason}"));
            }
            text.push_str("\r\n");
        }
        if self.kind != Kind::Dsn {
            if let Some(error) = &mail.envelope.error_message {
                text.push_str(&format!("\r\nError message below:\r\n{}\r\n", crlf(error)));
            }
            text.push_str("\r\nMessage details:\r\n");
            let field = |name: &str| one_line(&mail.message.header(name).unwrap_or_default());
            text.push_str(&format!(
                "  Subject: {}\r\n",
                one_line(&mail.message.subject().unwrap_or_default())
            ));
            text.push_str(&format!("  Sent date: {}\r\n", field("Date")));
            text.push_str(&format!(
                "  MAIL FROM: <{}>\r\n",
                mail.sender().map(ToString::to_string).unwrap_or_default()
            ));
            let rcpts: Vec<String> = mail.recipients().iter().map(|r| r.to_string()).collect();
            text.push_str(&format!("  RCPT TO: {}\r\n", rcpts.join(", ")));
            text.push_str(&format!("  From: {}\r\n", field("From")));
            text.push_str(&format!("  To: {}\r\n", field("To")));
            text.push_str(&format!("  Size (in bytes): {}\r\n", mail.size()));
        }
        if self.inline_heads {
            text.push_str("\r\nMessage headers follow:\r\n");
            text.push_str(&crlf(&String::from_utf8_lossy(
                mail.message.header_section(),
            )));
        }
        text
    }
}

#[cfg(test)]
mod tests;
