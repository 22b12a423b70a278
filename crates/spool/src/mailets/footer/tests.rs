//! AddFooter on every shape James handles, parsed back with mail-parser.
use mail_parser::{MessageParser, MimeHeaders};

use super::super::testing::{build, mail, Recorder};
use super::*;

const FOOTER: &str = "-- \nlist footer \u{e9}";

fn footer(message: &[u8]) -> (Mail, Vec<String>) {
    let ctx = Recorder::new();
    let mailet = build("AddFooter", &[("text", FOOTER)]).unwrap();
    let mut m = mail(Some("a@example.net"), &["b@example.org"], message);
    mailet.service(&mut m, &ctx).unwrap();
    let bytes = m.message.to_bytes().unwrap();
    assert_eq!(bytes.len() as u64, m.size(), "size agrees with content");
    (m, ctx.log())
}

fn parse(m: &Mail) -> Vec<u8> {
    m.message.to_bytes().unwrap()
}

#[test]
fn plain_text_keeps_its_charset_and_encoding() {
    // 8bit UTF-8.
    let (m, _) = footer(b"Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello\r\n");
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_text(0).unwrap(),
        "Hello\r\n-- \r\nlist footer \u{e9}"
    );
    // No line end at the end: one is added first; ISO-8859-1 gets its own octet.
    let (m, _) = footer(b"Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9");
    assert!(parse(&m).ends_with(b"Caf\xe9\r\n-- \r\nlist footer \xe9"));
    // No Content-Type: US-ASCII, 7bit: relabelled UTF-8 and 8bit.
    let (m, _) = footer(b"Subject: a\r\n\r\nHello\r\n");
    assert_eq!(
        m.message.header("Content-Transfer-Encoding").unwrap(),
        "8bit"
    );
    assert_eq!(
        m.message.header("Content-Type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(m.message.header("MIME-Version").unwrap(), "1.0");
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_text(0).unwrap(),
        "Hello\r\n-- \r\nlist footer \u{e9}"
    );
}

#[test]
fn quoted_printable_and_base64_text() {
    let (m, _) = footer(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 soft=\r\nbreak");
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_text(0).unwrap(),
        "Caf\u{e9} softbreak\r\n-- \r\nlist footer \u{e9}"
    );
    assert!(parse(&m).is_ascii());

    for original in ["Hello base64 world\r\n", "Hi", "Hello!"] {
        use base64::Engine;
        let enc = base64::engine::general_purpose::STANDARD.encode(original);
        let msg = format!("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{enc}\r\n");
        let (m, _) = footer(msg.as_bytes());
        let bytes = parse(&m);
        let p = MessageParser::new().parse(&bytes).unwrap();
        let want = if original.ends_with('\n') {
            format!("{original}-- \r\nlist footer \u{e9}")
        } else {
            format!("{original}\r\n-- \r\nlist footer \u{e9}")
        };
        assert_eq!(p.body_text(0).unwrap(), want, "{original:?}");
        // Only the last quantum was rewritten: the original's other base64 text is kept.
        let kept = &enc[..enc.len() - 4];
        assert!(String::from_utf8_lossy(&bytes).contains(kept));
    }
}

#[test]
fn html_gets_the_footer_before_body_close() {
    let (m, _) =
        footer(b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>Hi</body></html>\r\n");
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_html(0).unwrap(),
        "<html><body>Hi<br>-- <br />\r\nlist footer \u{e9}</body></html>\r\n"
    );
    let (m, _) = footer(b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>x</p></BODY>\r\n");
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_html(0).unwrap(),
        "<p>x</p><br>-- <br />\r\nlist footer \u{e9}</BODY>\r\n"
    );
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode("<body>b64</body>");
    let (m, _) = footer(format!("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{enc}\r\n").as_bytes());
    let bytes = parse(&m);
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_html(0).unwrap(),
        "<body>b64<br>-- <br />\r\nlist footer \u{e9}</body>"
    );
}

const MULTIPART: &[u8] = b"Subject: m\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
preamble\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=inner\r\n\r\n\
--inner\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n\
plain text\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<html><body>html text</body></html>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: text/plain; name=notes.txt\r\n\
Content-Disposition: attachment; filename=notes.txt\r\n\r\n\
attached text, not changed\r\n\
--outer--\r\n\
epilogue\r\n";

#[test]
fn multipart_structure_is_kept_and_only_the_first_part_changes() {
    let (m, log) = footer(MULTIPART);
    assert!(log.is_empty(), "{log:?}");
    let bytes = parse(&m);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("Subject: m\r\n"));
    assert!(
        text.contains("preamble\r\n--outer\r\n") && text.ends_with("--outer--\r\nepilogue\r\n")
    );
    let p = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        p.body_text(0).unwrap(),
        "plain text\r\n-- \r\nlist footer \u{e9}"
    );
    assert_eq!(
        p.body_html(0).unwrap(),
        "<html><body>html text<br>-- <br />\r\nlist footer \u{e9}</body></html>"
    );
    let attachment = p.attachment(0).unwrap();
    assert_eq!(attachment.attachment_name(), Some("notes.txt"));
    assert_eq!(attachment.contents(), b"attached text, not changed");
    // The US-ASCII part was relabelled in its own header, and 8bit.
    assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain text"));
    // The body is spliced from the stored one, not copied.
    assert!(format!("{:?}", m.message.body()).contains("Range"));
}

#[test]
fn what_cannot_be_changed_is_left_with_a_log_line() {
    for message in [
        &b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"[..],
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--b--\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfeh\x00",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n",
    ] {
        let (m, log) = footer(message);
        assert_eq!(parse(&m), message);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("unable to add footer"), "{log:?}");
    }
    assert!(build("AddFooter", &[]).is_err());
}

#[test]
fn a_large_message_is_read_in_bounded_memory() {
    // 64 MiB of body that is generated, never held: the footer goes after it.
    #[derive(Debug)]
    struct Big;
    const SIZE: u64 = 64 << 20;
    impl BodySource for Big {
        fn len(&self) -> u64 {
            SIZE
        }
        fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            use std::io::Read;
            Ok(Box::new(
                std::io::repeat(b'x').take(SIZE - 2).chain(&b"\r\n"[..]),
            ))
        }
    }
    let ctx = Recorder::new();
    let mailet = build("AddFooter", &[("text", "footer")]).unwrap();
    let mut m = mail(Some("a@example.net"), &["b@example.org"], b"");
    m.message = Message::new(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n".to_vec(),
        Arc::new(Big),
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.size(), 43 + SIZE + 6);
    let mut tail = Vec::new();
    use std::io::Read;
    m.message.reader().unwrap().read_to_end(&mut tail).unwrap();
    assert!(tail.ends_with(b"xx\r\nfooter"));
}
