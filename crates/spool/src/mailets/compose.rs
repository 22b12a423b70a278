//! Shared pieces for mailets that make or rewrite messages (bounces, notices, Redirect and its
//! family, AddFooter, the list server): bodies spliced from new bytes and ranges of a stored
//! body, so that a large original is streamed and never read into memory, and small text
//! helpers for header values.
//!
//! Everything here is `pub(crate)`: other mailets in this crate (the list server's) build on
//! it.

use std::io::{self, Read};
use std::sync::Arc;

use mailroom_mailet::{
    derived_mail_name, BodySource, Envelope, Mail, MailAddress, MailetError, MemoryBody, Message,
};

/// One piece of a [`Spliced`] body.
#[derive(Clone, Debug)]
pub(crate) enum Segment {
    /// New bytes, held in memory.
    Bytes(MemoryBody),
    /// Octets `start..end` of a stored body, streamed.
    Range {
        /// The body read from.
        source: Arc<dyn BodySource>,
        /// First octet.
        start: u64,
        /// One past the last octet.
        end: u64,
    },
    /// A whole message (header section and body), streamed: an attached original.
    Message(Message),
}

impl Segment {
    /// New bytes.
    pub(crate) fn bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Segment::Bytes(MemoryBody::new(bytes))
    }

    fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len(),
            Segment::Range { start, end, .. } => end - start,
            Segment::Message(m) => m.size(),
        }
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Segment::Bytes(b) => b.open(),
            Segment::Range { source, start, end } => {
                let mut reader = source.open()?;
                // Skipping reads through the prefix: bodies are streams, not seekable files.
                let skipped = io::copy(&mut (&mut reader).take(*start), &mut io::sink())?;
                if skipped < *start {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored body shorter than recorded",
                    ));
                }
                Ok(Box::new(reader.take(end - start)))
            }
            Segment::Message(m) => Ok(Box::new(m.reader()?)),
        }
    }
}

/// A body made of segments read one after the other: MIME text around a streamed original
/// (a report that returns the message), or an original body with new bytes put in (a footer).
#[derive(Clone, Debug, Default)]
pub(crate) struct Spliced(pub(crate) Vec<Segment>);

impl Spliced {
    /// Appends a segment; empty ranges and empty byte strings are left out.
    pub(crate) fn push(&mut self, segment: Segment) {
        if segment.len() > 0 {
            self.0.push(segment);
        }
    }
}

impl BodySource for Spliced {
    fn len(&self) -> u64 {
        self.0.iter().map(Segment::len).sum()
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        let mut reader: Box<dyn Read + Send> = Box::new(io::empty());
        for segment in &self.0 {
            reader = Box::new(reader.chain(segment.open()?));
        }
        Ok(reader)
    }
}

/// The text on one line: control characters (CR, LF, tabs) become spaces.
pub(crate) fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_string()
}

/// Text with CRLF line ends, whatever it had.
pub(crate) fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Where `needle` first occurs in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the reader gives any octet above 127.
pub(crate) fn has_8bit(mut reader: impl Read) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n].iter().any(|b| *b >= 0x80) {
            return Ok(true);
        }
    }
}

/// The `Content-Transfer-Encoding` for text that is or is not 8-bit.
pub(crate) fn encoding(eight_bit: bool) -> &'static str {
    if eight_bit {
        "8bit"
    } else {
        "7bit"
    }
}

/// A body of MIME text `before` and `after` a marker, with `message` streamed in its place:
/// how a generated report returns the whole original. `None` when the marker is absent.
pub(crate) fn enclose(body: &[u8], marker: &[u8], message: &Message) -> Option<Spliced> {
    let at = find(body, marker)?;
    let mut spliced = Spliced::default();
    spliced.push(Segment::bytes(&body[..at]));
    spliced.push(Segment::Message(message.clone()));
    spliced.push(Segment::bytes(&body[at + marker.len()..]));
    Some(spliced)
}

/// The addresses in every `name` field of the message (`To`, `Cc`, `Reply-To`, or a field
/// of James's such as `Mail-For`), parsed as RFC 5322 address lists (groups flattened);
/// what is not an address is skipped.
pub(crate) fn header_addresses(message: &Message, name: &str) -> Vec<MailAddress> {
    let mut out = Vec::new();
    for value in message.headers(name) {
        // mail-parser reads address lists in `To:`; the value is put under that name.
        let text = format!("To: {}\r\n\r\n", one_line(&value));
        let Some(parsed) = mail_parser::MessageParser::new().parse_headers(text.as_bytes()) else {
            continue;
        };
        let Some(list) = parsed.to() else { continue };
        for addr in list.iter() {
            if let Some(a) = addr.address().and_then(|a| MailAddress::parse(a).ok()) {
                out.push(a);
            }
        }
    }
    out
}

/// Splits `bytes` at each marker (in the order given, each found after the previous one) and
/// puts the marker's segment in its place: how a message built with `mail-builder` around
/// placeholder parts gets its streamed contents. `None` when a marker is missing.
pub(crate) fn splice_markers(bytes: &[u8], markers: Vec<(String, Segment)>) -> Option<Spliced> {
    let mut spliced = Spliced::default();
    let mut rest = bytes;
    for (marker, segment) in markers {
        let at = find(rest, marker.as_bytes())?;
        spliced.push(Segment::bytes(&rest[..at]));
        spliced.push(segment);
        rest = &rest[at + marker.len()..];
    }
    spliced.push(Segment::bytes(rest));
    Some(spliced)
}

/// A placeholder that cannot occur in MIME text (it holds control characters, and the
/// boundaries around it are random): replaced by [`splice_markers`].
pub(crate) fn marker(mail_name: &str, what: &str) -> String {
    format!("\u{1}mailroom-{what}-{mail_name}\u{1}")
}

/// A header value as RFC 2047 encoded words when it is not ASCII (UTF-8, base64, words of at
/// most 45 octets so that each encoded word stays under 75 characters).
pub(crate) fn encode_header_text(text: &str) -> String {
    use base64::Engine;
    let text = one_line(text);
    if text.is_ascii() {
        return text;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A plain-text reply that a mailet writes to a mail (the list server's confirmations and
/// errors, WhiteListManager's answers, ServerTime): `From:`/`To:` with optional display
/// names, a `Date:`, a `Message-ID:` derived from the mail's name, `In-Reply-To:` the mail's
/// `Message-ID:`; its envelope from `from` to `to`.
pub(crate) struct Reply<'a> {
    /// The sender (envelope and `From:`), with a display name.
    pub(crate) from: (Option<&'a str>, &'a MailAddress),
    /// The recipient (envelope and `To:`), with a display name.
    pub(crate) to: (Option<&'a str>, &'a MailAddress),
    pub(crate) subject: &'a str,
    /// The text, any line ends.
    pub(crate) text: &'a str,
    pub(crate) reply_to: Option<&'a str>,
    /// Adds `Auto-Submitted: auto-replied` (RFC 3834).
    pub(crate) auto_submitted: bool,
}

impl Reply<'_> {
    /// The reply to `original`, written by host `host`.
    pub(crate) fn to_mail(&self, original: &Mail, host: &str) -> Result<Mail, MailetError> {
        use mail_builder::headers::address::Address;
        use mail_builder::headers::date::Date;
        use mail_builder::headers::raw::Raw;

        let name = derived_mail_name(original.name());
        let address = |(display, addr): (Option<&str>, &MailAddress)| match display {
            Some(display) => Address::new_address(Some(display.to_string()), addr.to_string()),
            None => Address::new_address(None::<String>, addr.to_string()),
        };
        let mut builder = mail_builder::MessageBuilder::new()
            .from(address(self.from))
            .to(address(self.to))
            .subject(one_line(self.subject))
            .date(Date::now())
            .message_id(format!("{name}@{host}"))
            .text_body(crlf(self.text));
        if self.auto_submitted {
            builder = builder.header("Auto-Submitted", Raw::new("auto-replied"));
        }
        if let Some(id) = original.message.header("Message-ID") {
            builder = builder.header("In-Reply-To", Raw::new(one_line(&id)));
        }
        if let Some(reply_to) = self.reply_to {
            builder = builder.reply_to(reply_to);
        }
        let bytes = builder
            .write_to_vec()
            .map_err(|e| MailetError::new(format!("writing a reply: {e}")))?;
        let envelope = Envelope::new(name, Some(self.from.1.clone()), vec![self.to.1.clone()]);
        Ok(Mail::new(envelope, Message::from_bytes(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_bodies_stream_their_segments_in_order() {
        let source: Arc<dyn BodySource> = Arc::new(MemoryBody::new(&b"0123456789"[..]));
        let mut body = Spliced::default();
        body.push(Segment::bytes(&b"<"[..]));
        body.push(Segment::Range {
            source: source.clone(),
            start: 2,
            end: 5,
        });
        body.push(Segment::bytes(&b""[..]));
        body.push(Segment::Range {
            source,
            start: 8,
            end: 10,
        });
        body.push(Segment::Message(Message::from_bytes(b"A: b\r\n\r\nc")));
        let mut out = Vec::new();
        body.open().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"<23489A: b\r\n\r\nc");
        assert_eq!(body.len(), out.len() as u64);
        assert_eq!(body.0.len(), 4);
    }

    #[test]
    fn a_range_past_the_end_is_an_error_not_a_short_body() {
        let source: Arc<dyn BodySource> = Arc::new(MemoryBody::new(&b"abc"[..]));
        let body = Spliced(vec![Segment::Range {
            source,
            start: 5,
            end: 6,
        }]);
        assert!(body.open().is_err());
    }

    #[test]
    fn markers_are_replaced_in_order() {
        let source: Arc<dyn BodySource> = Arc::new(MemoryBody::new(&b"BODY"[..]));
        let bytes = b"a\x01m1\x01b\x01m2\x01c";
        let spliced = splice_markers(
            bytes,
            vec![
                ("\u{1}m1\u{1}".into(), Segment::bytes(&b"X"[..])),
                (
                    "\u{1}m2\u{1}".into(),
                    Segment::Range {
                        source,
                        start: 0,
                        end: 4,
                    },
                ),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        spliced.open().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"aXbBODYc");
        assert!(splice_markers(b"abc", vec![("x".into(), Segment::bytes(&b""[..]))]).is_none());
    }

    #[test]
    fn non_ascii_header_text_is_encoded() {
        assert_eq!(encode_header_text("plain\r\ntext"), "plain  text");
        let encoded = encode_header_text(&"café ".repeat(20));
        assert!(encoded.is_ascii() && encoded.starts_with("=?utf-8?B?"));
        let field = format!("Subject: {encoded}\r\n\r\n");
        let parsed = mail_parser::MessageParser::new()
            .parse_headers(field.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject().unwrap(), "café ".repeat(20).trim());
    }

    #[test]
    fn reads_address_lists_from_fields() {
        let m = Message::from_bytes(
            b"To: \"Ann, A.\" <ann@example.org>, bob@example.net\r\nCc: team: c@example.com;\r\n\
              Mail-For: d@example.org\r\nTo: not an address\r\n\r\n",
        );
        let to: Vec<String> = header_addresses(&m, "To")
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(to, ["ann@example.org", "bob@example.net"]);
        assert_eq!(header_addresses(&m, "cc")[0].to_string(), "c@example.com");
        assert_eq!(header_addresses(&m, "Mail-For").len(), 1);
        assert!(header_addresses(&m, "Bcc").is_empty());
    }
}
