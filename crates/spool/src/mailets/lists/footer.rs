//! `CommandListservFooter`: the list's footer (the `footer` and `footer_html` texts of its
//! resources) added to a mail's text parts by [`AddFooter`]'s machinery: the same placement
//! (James's `AbstractAddFooter`), charset and transfer-encoding handling, and a body that is
//! spliced and streamed, never read into memory. A mail with no part the footer can go in (an
//! image) is passed on unchanged, with a log line.

use std::sync::Arc;

use mailroom_mailet::MailetError;

use super::resources::Resources;
use super::ListStores;
use crate::mailets::footer::AddFooter;
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
            Ok(Box::new(footer(&info.resources)))
        })
        .params(&["listName"])
        .about(
            "Adds the footer of the list `<listName>` (the `footer`/`footer_html` texts of \
             its CommandListservManager's resources) to the mail's text and HTML parts, as \
             James's AddFooter does, streaming the body.",
            r#"<mailet match="RecipientIs=list@example.org" class="CommandListservFooter"><listName>list</listName></mailet>"#,
        );
}

/// A list's footer: its `footer` text for text parts, its `footer_html` text for HTML ones.
pub(super) fn footer(resources: &Resources) -> AddFooter {
    AddFooter::with_html(
        "CommandListservFooter",
        &resources.get("footer", "text", &[]),
        &resources.get("footer_html", "text", &[]),
    )
}

#[cfg(test)]
mod tests {
    use mailroom_mailet::{Mail, Mailet, Message};

    use super::*;
    use crate::mailets::testing::{mail, Recorder};

    /// The message with the footer `text` (`<hr>` and `leave` in HTML), read whole and in
    /// small pieces (the insertions land at the same places); `None` when it is unchanged.
    fn footed(message: &[u8], text: &str) -> Option<Vec<u8>> {
        let ctx = Recorder::new();
        let footer = AddFooter::with_html("CommandListservFooter", text, "<hr>\nleave");
        let mut m: Mail = mail(Some("a@example.net"), &["l@example.org"], message);
        footer.service(&mut m, &ctx).unwrap();
        let bytes = m.message.to_bytes().unwrap();
        assert_eq!(m.message.size(), bytes.len() as u64);
        let mut small = Vec::new();
        let mut reader = m.message.reader().unwrap();
        let mut buf = [0u8; 3];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            small.extend_from_slice(&buf[..n]);
        }
        assert_eq!(small, bytes);
        let unchanged = ctx.log().iter().any(|l| l.contains("unable to add footer"));
        assert_eq!(
            unchanged,
            bytes == Message::from_bytes(message).to_bytes().unwrap()
        );
        (!unchanged).then_some(bytes)
    }

    #[test]
    fn plain_text_gets_the_footer_and_others_do_not() {
        assert_eq!(
            footed(b"Subject: a\r\n\r\nhello\r\n", "--\nleave: l-unsubscribe@x").unwrap(),
            b"Subject: a\r\n\r\nhello\r\n--\r\nleave: l-unsubscribe@x"
        );
        let qp = footed(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n",
            "a=b",
        )
        .unwrap();
        assert!(qp.ends_with(b"x\r\na=3Db"));
        let html = footed(
            b"Content-Type: text/html\r\n\r\n<p>x</p></BODY></html>\r\n",
            "f",
        )
        .unwrap();
        assert!(html.ends_with(b"<p>x</p><br><hr> <br />\r\nleave</BODY></html>\r\n"));
        // Base64 text gets it too (its last quantum re-encoded).
        let b64 = footed(b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n", "f").unwrap();
        let parsed = mail_parser::MessageParser::new().parse(&b64).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), "hi\r\nf");
        for other in [
            &b"Content-Type: image/png\r\n\r\nxx"[..],
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
            out.contains("<body>html=\r\n<br><hr> <br />\r\nleave=\r\n</body>"),
            "{out}"
        );
        assert!(out.contains("second part\r\n--out--"), "{out}");
        assert_eq!(out.matches("FOOT").count(), 1);
        let parsed = mail_parser::MessageParser::new()
            .parse(out.as_bytes())
            .unwrap();
        assert!(parsed.body_text(0).unwrap().contains("FOOT"));
        assert!(parsed
            .body_html(0)
            .unwrap()
            .contains("html<br><hr> <br />\r\nleave</body>"));
        // An attachment first: nothing to add to.
        let attachment = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n";
        assert!(footed(attachment, "f").is_none());
        // LF line ends and an empty first part: the footer ends its own line, the delimiter
        // stays at the start of one.
        let lf = footed(
            b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n--b--\n",
            "F",
        )
        .unwrap();
        let lf = String::from_utf8(lf).unwrap();
        assert!(lf.contains("text/plain\n\nF\r\n--b--"), "{lf:?}");
    }
}
