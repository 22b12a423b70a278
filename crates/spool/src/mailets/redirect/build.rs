//! The new mail of Redirect, Resend and Forward: the original with edited header fields
//! (`inline` = `unaltered`), or a new multipart message quoting and attaching it, streamed.

use super::*;

/// Header fields of the original that an altered message keeps (James's list).
const KEPT_FIELDS: &[&str] = &["Date", "From", "Reply-To", "To", "Subject", "Return-Path"];

impl Redirect {
    /// The new mail, named `name`, before the sender-domain check.
    pub(super) fn compose(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
        name: &str,
    ) -> Result<Mail, MailetError> {
        let mut message = if self.inline == Part::Unaltered {
            // Shares the original's body: nothing is copied.
            mail.message.clone()
        } else {
            self.altered(mail, ctx, name)?
        };
        let mut envelope = mail.envelope.clone();
        envelope.name = name.to_string();
        envelope.state = state::ROOT.to_string();
        // Not the original client's address: matchers that look at it (spam checks) would
        // otherwise judge the server's own mail by the client that sent the original.
        envelope.remote_addr = "127.0.0.1".to_string();
        envelope.remote_host = "localhost".to_string();
        if let Some(list) = &self.recipients {
            if !(list.len() == 1
                && matches!(
                    list[0],
                    Addr::Special(Special::Unaltered | Special::Recipients)
                ))
            {
                envelope.recipients = envelope_addresses(mail, ctx, list);
            }
        }
        if let Some(list) = &self.to {
            if !(list.len() == 1
                && matches!(list[0], Addr::Special(Special::Unaltered | Special::To)))
            {
                let values = header_values(mail, ctx, list);
                if values.is_empty() {
                    message.remove_header("To");
                } else {
                    message.set_header("To", &values.join(", "));
                }
            }
        }
        if self.prefix.is_some() || self.subject.is_some() {
            let base = match &self.subject {
                Some(s) => s.clone(),
                None => mail.message.subject().unwrap_or_default(),
            };
            let subject = match &self.prefix {
                Some(p) if p.ends_with(char::is_whitespace) || base.is_empty() => {
                    format!("{p}{base}")
                }
                Some(p) => format!("{p} {base}"),
                None => base,
            };
            message.set_header("Subject", &encode_header_text(&subject));
        }
        if message.header("Date").is_none() {
            message.set_header("Date", &Date::now().to_rfc822());
        }
        match &self.reply_to {
            Some(Addr::Special(Special::Null)) => {
                message.remove_header("Reply-To");
            }
            Some(Addr::Special(Special::Postmaster)) => {
                message.set_header("Reply-To", &format!("<{}>", ctx.postmaster()));
            }
            Some(Addr::Special(Special::Sender)) => {
                if let Some(sender) = mail.sender() {
                    message.set_header("Reply-To", &format!("<{sender}>"));
                }
            }
            Some(Addr::Plain(a)) => message.set_header("Reply-To", &format!("<{a}>")),
            _ => {}
        }
        if let Some(reverse_path) = self.new_reverse_path(ctx) {
            envelope.sender = reverse_path;
        }
        if let Some(from) = self.new_from(ctx) {
            message.set_header("From", &format!("<{from}>"));
        }
        if self.is_reply {
            if let Some(id) = mail.message.header("Message-ID") {
                message.set_header("In-Reply-To", &one_line(&id));
            }
        }
        Ok(Mail::new(envelope, message))
    }

    /// A new message: the kept header fields, then a `multipart/mixed` body with the text
    /// (the `message` parameter and what `inline` quotes), the attachment, and the error.
    fn altered(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
        name: &str,
    ) -> Result<Message, MailetError> {
        let original = &mail.message;
        let body = original.body();
        let body_segment = || Segment::Range {
            source: body.clone(),
            start: 0,
            end: body.len(),
        };
        let head = String::from_utf8_lossy(original.header_section()).into_owned();
        let head = crlf(head.trim_end());
        // Read (streamed) only when the body goes into the new message.
        let body_used = matches!(self.inline, Part::Body | Part::All)
            || matches!(self.attachment, Part::Body | Part::All);
        let body_8bit = body_used && has_8bit(body.open()?)?;

        let mut markers = Vec::new();
        let mut text = String::new();
        if !self.message.is_empty() {
            text.push_str(&self.message);
            text.push_str("\r\n");
        }
        if matches!(self.inline, Part::Heads | Part::All) {
            text.push_str("Message Headers:\r\n");
            text.push_str(&head);
            text.push_str("\r\n\r\n");
        }
        let mut text_8bit = !text.is_ascii();
        if matches!(self.inline, Part::Body | Part::All) {
            text.push_str("Message:\r\n");
            let m = marker(name, "inline-body");
            text.push_str(&m);
            text.push_str("\r\n");
            markers.push((m, body_segment()));
            text_8bit |= body_8bit;
        }
        let text_part = MimePart::new(
            ContentType::new("text/plain").attribute("charset", "utf-8"),
            BodyPart::Binary(text.into_bytes().into()),
        )
        .inline()
        .transfer_encoding(encoding(text_8bit));
        let mut parts = vec![MimePart::new(
            "multipart/alternative",
            BodyPart::Multipart(vec![text_part]),
        )];
        let attached = match self.attachment {
            Part::Heads => Some((head.clone().into_bytes(), !head.is_ascii(), None)),
            Part::Body => {
                let m = marker(name, "attached-body");
                markers.push((m.clone(), body_segment()));
                Some((m.into_bytes(), body_8bit, None))
            }
            Part::All => {
                let m = marker(name, "attached-all");
                markers.push((m.clone(), body_segment()));
                let text = format!("{head}\r\n\r\nMessage:\r\n{m}");
                Some((text.into_bytes(), body_8bit || !head.is_ascii(), None))
            }
            Part::Message => {
                let m = marker(name, "attached-message");
                markers.push((m.clone(), Segment::Message(original.clone())));
                let eight = has_8bit(original.reader()?)?;
                Some((m.into_bytes(), eight, Some("message/rfc822")))
            }
            Part::None | Part::Unaltered => None,
        };
        if let Some((bytes, eight_bit, content_type)) = attached {
            let content_type = match content_type {
                Some(t) => ContentType::new(t),
                None => ContentType::new("text/plain").attribute("charset", "utf-8"),
            };
            parts.push(
                MimePart::new(content_type, BodyPart::Binary(bytes.into()))
                    .header("Content-Disposition", ContentType::new("attachment"))
                    .transfer_encoding(encoding(eight_bit)),
            );
        }
        if self.attach_error {
            if let Some(error) = &mail.envelope.error_message {
                parts.push(MimePart::new(
                    ContentType::new("text/plain").attribute("charset", "utf-8"),
                    BodyPart::Text(crlf(error).into()),
                ));
            }
        }
        let mut builder = MessageBuilder::new().message_id(format!("{name}@{}", ctx.server_name()));
        for field in KEPT_FIELDS {
            for value in original.headers(field) {
                builder = builder.header(*field, Raw::new(one_line(&value)));
            }
        }
        let bytes = builder
            .body(MimePart::new("multipart/mixed", BodyPart::Multipart(parts)))
            .write_to_vec()?;
        let split = header_section_len(&bytes);
        let (header, rest) = bytes.split_at(split);
        let body: Arc<dyn BodySource> = if markers.is_empty() {
            Arc::new(MemoryBody::new(rest))
        } else {
            Arc::new(splice_markers(rest, markers).ok_or_else(|| {
                MailetError::new("the composed message lost a placeholder (a bug)")
            })?)
        };
        Ok(Message::new(header.to_vec(), body))
    }
}

/// Envelope recipients: specials resolved against the original (James's
/// `replaceMailAddresses`), duplicates dropped.
fn envelope_addresses(mail: &Mail, ctx: &dyn MailetContext, list: &[Addr]) -> Vec<MailAddress> {
    let mut out: Vec<MailAddress> = Vec::new();
    let mut add = |a: MailAddress| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for item in list {
        match item {
            Addr::Plain(a) => add(a.clone()),
            Addr::Special(Special::Postmaster) => add(ctx.postmaster().clone()),
            Addr::Special(Special::Sender | Special::From | Special::ReversePath) => {
                if let Some(s) = mail.sender() {
                    add(s.clone());
                }
            }
            Addr::Special(Special::ReplyTo) => {
                let reply_to = header_addresses(&mail.message, "Reply-To");
                if reply_to.is_empty() {
                    if let Some(s) = mail.sender() {
                        add(s.clone());
                    }
                }
                reply_to.into_iter().for_each(&mut add);
            }
            Addr::Special(Special::Recipients | Special::To) => {
                mail.recipients().iter().cloned().for_each(&mut add);
            }
            Addr::Special(Special::Unaltered | Special::Null) => {}
        }
    }
    out
}

/// `To:` values: specials resolved against the original's header (James's
/// `replaceInternetAddresses`).
fn header_values(mail: &Mail, ctx: &dyn MailetContext, list: &[Addr]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let sender = || mail.sender().map(|s| format!("<{s}>"));
    let field_or_sender = |field: &str, out: &mut Vec<String>| {
        let values = mail.message.headers(field);
        if values.is_empty() {
            out.extend(sender());
        } else {
            out.extend(values.iter().map(|v| one_line(v)));
        }
    };
    for item in list {
        match item {
            Addr::Plain(a) => out.push(format!("<{a}>")),
            Addr::Special(Special::Postmaster) => out.push(format!("<{}>", ctx.postmaster())),
            Addr::Special(Special::Sender | Special::ReversePath) => out.extend(sender()),
            Addr::Special(Special::From) => field_or_sender("From", &mut out),
            Addr::Special(Special::ReplyTo) => field_or_sender("Reply-To", &mut out),
            Addr::Special(Special::To | Special::Recipients) => {
                out.extend(mail.message.headers("To").iter().map(|v| one_line(v)));
            }
            Addr::Special(Special::Unaltered | Special::Null) => {}
        }
    }
    out.dedup();
    out
}
