//! `CommandListservFooter`: the list's footer (the `footer` and `footer_html` texts of its
//! resources) added to a mail's text parts, where [`splice`](super::splice) finds they go. The
//! body is not read into memory: the footer octets are spliced in as the body is streamed.
//! A mail with no part the footer can go in (an image, base64 text) is passed on unchanged,
//! with a log line.

use std::sync::Arc;

use mailroom_mailet::{BodySource, Mail, Mailet, MailetContext, MailetError, Message};

use super::splice::{self, Leaf, PartType, Spliced};
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
            Ok(Box::new(Footer::of(&info.resources)))
        })
        .params(&["listName"])
        .about(
            "Adds the footer of the list `<listName>` (the `footer`/`footer_html` texts of \
             its CommandListservManager's resources) to the mail's text and HTML parts, as \
             James's AddFooter does, streaming the body.",
            r#"<mailet match="RecipientIs=list@example.org" class="CommandListservFooter"><listName>list</listName></mailet>"#,
        );
}

/// A list's footer, in text and in HTML.
pub(super) struct Footer {
    text: String,
    html: String,
}

impl Footer {
    /// The `footer` and `footer_html` texts of a list.
    pub(super) fn of(resources: &super::resources::Resources) -> Footer {
        Footer {
            text: resources.get("footer", "text", &[]),
            html: resources.get("footer_html", "text", &[]),
        }
    }
}

impl Mailet for Footer {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        add_footer(mail, self, ctx);
        Ok(())
    }
}

/// Adds the footer to the mail's text parts; logs and leaves a mail without one.
pub(super) fn add_footer(mail: &mut Mail, footer: &Footer, ctx: &dyn MailetContext) {
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

/// The message with the footer in its text parts (see [`splice`](super::splice)); `None`
/// when it has none the footer can go in.
fn with_footer(message: &Message, footer: &Footer) -> Option<Message> {
    let top = PartType::new(
        message.header("Content-Type").as_deref(),
        message.header("Content-Transfer-Encoding").as_deref(),
    );
    let body = message.body();
    let inserts = match splice::plan(&top, body.as_ref()) {
        Ok(inserts) if !inserts.is_empty() => inserts,
        _ => return None,
    };
    let text = super::crlf(&footer.text);
    let html = super::crlf(&footer.html).replace("\r\n", " <br />\r\n");
    let bytes = inserts
        .iter()
        .map(|insert| {
            let (content, qp) = match insert.leaf {
                Leaf::Plain { qp } => (&text, qp),
                Leaf::Html { qp } => (&html, qp),
            };
            let content = if qp {
                quoted_printable(content)
            } else {
                content.clone()
            };
            // At the very end of the body the footer ends its own line; elsewhere the line
            // end that follows (before a delimiter or `</body>`) does.
            let end = if insert.at >= body.len() { "\r\n" } else { "" };
            (insert.at, format!("\r\n{content}{end}").into_bytes().into())
        })
        .collect::<Vec<(u64, Arc<[u8]>)>>();
    let body: Arc<dyn BodySource> = Arc::new(Spliced {
        body: body.clone(),
        inserts: bytes.into(),
    });
    Some(Message::new(message.header_section().to_vec(), body))
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

    fn footer(text: &str) -> Footer {
        Footer {
            text: text.to_string(),
            html: "<hr>\nleave".to_string(),
        }
    }

    fn footed(message: &[u8], text: &str) -> Option<Vec<u8>> {
        let m = Message::from_bytes(message);
        let f = with_footer(&m, &footer(text))?;
        let bytes = f.to_bytes().unwrap();
        assert_eq!(f.size(), bytes.len() as u64);
        // Read in small pieces too: the insertions land at the same places.
        let mut small = Vec::new();
        let mut reader = f.reader().unwrap();
        let mut buf = [0u8; 3];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            small.extend_from_slice(&buf[..n]);
        }
        assert_eq!(small, bytes);
        Some(bytes)
    }

    #[test]
    fn plain_text_gets_the_footer_and_others_do_not() {
        assert_eq!(
            footed(b"Subject: a\r\n\r\nhello\r\n", "--\nleave: l-unsubscribe@x").unwrap(),
            b"Subject: a\r\n\r\nhello\r\n\r\n--\r\nleave: l-unsubscribe@x\r\n"
        );
        let qp = footed(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n",
            "a=b",
        )
        .unwrap();
        assert!(qp.ends_with(b"x\r\n\r\na=3Db\r\n"));
        let html = footed(
            b"Content-Type: text/html\r\n\r\n<p>x</p></BODY></html>\r\n",
            "f",
        )
        .unwrap();
        assert!(html.ends_with(b"<p>x</p>\r\n<hr> <br />\r\nleave</BODY></html>\r\n"));
        for other in [
            &b"Content-Type: image/png\r\n\r\nxx"[..],
            b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n",
            b"Content-Type: multipart/mixed\r\n\r\n--b--\r\n",
        ] {
            assert!(footed(other, "f").is_none());
        }
    }

    #[test]
    fn multiparts_get_it_in_the_first_part_or_every_alternative() {
        let mail = b"Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\npreamble\r\n\
            --out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n\
            --in\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
            --in\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<body>html</body>\r\n\
            --in--\r\n\
            --out\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n\
            --out--\r\n";
        let out = String::from_utf8(footed(mail, "FOOT").unwrap()).unwrap();
        assert!(out.contains("plain\r\nFOOT\r\n--in\r\n"), "{out}");
        assert!(
            out.contains("<body>html\r\n<hr> <br />\r\nleave</body>"),
            "{out}"
        );
        assert!(out.contains("second part\r\n--out--"), "{out}");
        assert_eq!(out.matches("FOOT").count(), 1);
        let parsed = mail_parser::MessageParser::new()
            .parse(out.as_bytes())
            .unwrap();
        assert!(parsed.body_text(0).unwrap().contains("FOOT"));
        // An attachment first: nothing to add to.
        let attachment = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n";
        assert!(footed(attachment, "f").is_none());
        // LF line ends and an empty first part.
        let lf = footed(
            b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n--b--\n",
            "F",
        )
        .unwrap();
        assert!(String::from_utf8(lf)
            .unwrap()
            .contains("text/plain\n\r\nF\n--b--"));
    }

    #[test]
    fn quoted_printable_cuts_long_lines() {
        let long = "x".repeat(100) + " ";
        let qp = quoted_printable(&long);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
        assert!(qp.ends_with("=20"));
    }
}
