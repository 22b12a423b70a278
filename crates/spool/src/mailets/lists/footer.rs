//! `CommandListservFooter`: the list's footer (the `footer` text of its resources) added to a
//! mail. The body is not read into memory: the footer is appended as the body is streamed.
//!
//! A single-part `text/plain` mail (7bit, 8bit, binary or quoted-printable) gets the footer;
//! other mails (HTML, multipart, base64) are passed on unchanged, with a log line.

use std::io::{self, Read};
use std::sync::Arc;

use mailroom_mailet::{BodySource, Mail, Mailet, MailetContext, MailetError, Message};

use super::{media_type, ListStores};
use crate::Registry;

/// Registers `CommandListservFooter` (James builds one inside each `CommandListservProcessor`;
/// here it is a mailet of its own too).
pub(super) fn register(registry: &mut Registry, stores: &Arc<ListStores>) {
    let stores = stores.clone();
    registry
        .add_mailet("CommandListservFooter", move |c| {
            let list = c.required("listName")?;
            let info = stores.manager(list).ok_or_else(|| {
                MailetError::new(format!(
                    "mailet CommandListservFooter: no CommandListservManager with <listName>{list}</listName> comes before it"
                ))
            })?;
            Ok(Box::new(Footer(info.resources.get("footer", "text", &[]))))
        })
        .params(&["listName"])
        .about(
            "Adds the footer of the list `<listName>` (the `footer` text of its \
             CommandListservManager's resources) to a plain-text mail, streaming the body.",
            r#"<mailet match="RecipientIs=list@example.org" class="CommandListservFooter"><listName>list</listName></mailet>"#,
        );
}

struct Footer(String);

impl Mailet for Footer {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        add_footer(mail, &self.0, ctx);
        Ok(())
    }
}

/// Appends `footer` to the mail's text when it is plain text; logs and leaves it otherwise.
pub(super) fn add_footer(mail: &mut Mail, footer: &str, ctx: &dyn MailetContext) {
    match with_footer(&mail.message, footer) {
        Some(message) => {
            mail.message = message;
            mail.envelope.size = mail.message.size();
        }
        None => ctx.log(&format!(
            "{}: no list footer added to a {} message",
            mail.name(),
            media_type(&mail.message)
        )),
    }
}

/// The message with `footer` after its body, when the body is plain text it can be appended
/// to; `None` otherwise.
fn with_footer(message: &Message, footer: &str) -> Option<Message> {
    if media_type(message) != "text/plain" {
        return None;
    }
    let encoding = message
        .header("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".to_string());
    let text = super::crlf(footer);
    let suffix = match encoding.as_str() {
        "7bit" | "8bit" | "binary" => format!("\r\n{text}\r\n"),
        "quoted-printable" => format!("\r\n{}\r\n", quoted_printable(&text)),
        _ => return None,
    };
    let body: Arc<dyn BodySource> = Arc::new(Appended {
        body: message.body().clone(),
        suffix: suffix.into_bytes().into(),
    });
    Some(Message::new(message.header_section().to_vec(), body))
}

/// A body followed by a few octets of our own, read in one stream.
#[derive(Debug)]
struct Appended {
    body: Arc<dyn BodySource>,
    suffix: Arc<[u8]>,
}

impl BodySource for Appended {
    fn len(&self) -> u64 {
        self.body.len() + self.suffix.len() as u64
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(
            self.body
                .open()?
                .chain(io::Cursor::new(self.suffix.clone())),
        ))
    }
}

/// `text` (CRLF lines) quoted-printable: `=`, non-ASCII and trailing blanks escaped, lines
/// cut with soft breaks before 76 characters.
fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let bytes = line.as_bytes();
        let mut width = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let piece = if b == b'='
                || !(b == b' ' || b == b'\t' || b.is_ascii_graphic())
                || (last && (b == b' ' || b == b'\t'))
            {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            width += piece.len();
            out.push_str(&piece);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_gets_the_footer_and_others_do_not() {
        let m = Message::from_bytes(b"Subject: a\r\n\r\nhello\r\n");
        let f = with_footer(&m, "--\nleave: l-unsubscribe@x").unwrap();
        assert_eq!(
            f.to_bytes().unwrap(),
            b"Subject: a\r\n\r\nhello\r\n\r\n--\r\nleave: l-unsubscribe@x\r\n"
        );
        assert_eq!(f.size(), f.to_bytes().unwrap().len() as u64);
        let qp = Message::from_bytes(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n",
        );
        let f = with_footer(&qp, "a=b").unwrap();
        assert!(f.to_bytes().unwrap().ends_with(b"x\r\n\r\na=3Db\r\n"));
        for other in [
            &b"Content-Type: text/html\r\n\r\n<p>x</p>"[..],
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n",
            b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n",
        ] {
            assert!(with_footer(&Message::from_bytes(other), "f").is_none());
        }
    }

    #[test]
    fn quoted_printable_cuts_long_lines() {
        let long = "x".repeat(100) + " ";
        let qp = quoted_printable(&long);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
        assert!(qp.ends_with("=20"));
    }
}
