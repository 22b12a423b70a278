//! Redirect, Resend and Forward: parameters, specials, and the mails they send.
use mail_parser::{MessageParser, MimeHeaders};
use mailroom_mailet::ErrorKind;

use super::super::testing::{build, mail, Recorder};
use super::*;

const ORIGINAL: &[u8] = b"From: Ann <ann@example.net>\r\n\
    To: Bob <bob@mx.example.org>\r\n\
    Cc: carl@example.com\r\n\
    Reply-To: replies@example.net\r\n\
    Subject: figures\r\n\
    Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
    Message-ID: <orig-1@example.net>\r\n\
    X-Other: kept only when unaltered\r\n\
    \r\n\
    Hello Bob,\r\nthe figures: \xc3\xa9.\r\n";

fn original() -> Mail {
    let mut m = mail(
        Some("ann@example.net"),
        &["bob@mx.example.org", "eve@mx.example.org"],
        ORIGINAL,
    );
    m.envelope.remote_addr = "203.0.113.9".into();
    m.envelope.error_message = Some("550 no such user".into());
    m
}

fn run(name: &str, params: &[(&str, &str)]) -> (Mail, Vec<Mail>, Vec<String>) {
    let ctx = Recorder::new();
    let mailet = build(name, params).unwrap_or_else(|e| panic!("{e}"));
    let mut m = original();
    mailet.service(&mut m, &ctx).unwrap();
    (m, ctx.sent(), ctx.log())
}

fn rcpts(m: &Mail) -> Vec<String> {
    m.recipients().iter().map(|a| a.to_string()).collect()
}

#[test]
fn forward_sends_the_message_unaltered_and_ghosts_the_original() {
    let (orig, sent, log) = run("Forward", &[("forwardto", "x@example.com, sender")]);
    assert_eq!(orig.state(), state::GHOST);
    let new = &sent[0];
    assert_eq!(rcpts(new), ["x@example.com", "ann@example.net"]);
    assert_eq!(new.sender().unwrap().to_string(), "ann@example.net");
    assert_eq!(new.state(), state::ROOT);
    assert_eq!(new.envelope.remote_addr, "127.0.0.1");
    assert!(new.name().starts_with(&format!("{}-", orig.name())));
    // Same message: header and body, the body shared rather than copied.
    assert_eq!(new.message.to_bytes().unwrap(), ORIGINAL);
    assert!(Arc::ptr_eq(new.message.body(), orig.message.body()));
    assert_eq!(log.len(), 2);
    assert!(
        log[0].contains("status=forwarded") && log[0].contains("to=x@example.com,ann@example.net")
    );

    let (orig, _, log) = run(
        "Forward",
        &[("forwardTo", "x@example.com"), ("passThrough", "true")],
    );
    assert_eq!(orig.state(), state::ROOT);
    assert!(!log[0].contains("status="));
}

#[test]
fn factories_refuse_bad_parameters() {
    for (name, params) in [
        ("Forward", vec![]),
        ("Forward", vec![("forwardto", "not an address")]),
        ("Forward", vec![("forwardto", " , ")]),
        (
            "Forward",
            vec![
                ("forwardto", "x@example.com"),
                ("forwardTo", "not an address"),
            ],
        ),
        ("Redirect", vec![]),
        (
            "Redirect",
            vec![("recipients", "a@b.example"), ("inline", "most")],
        ),
        (
            "Redirect",
            vec![("to", "a@b.example"), ("attachment", "unaltered")],
        ),
        ("Redirect", vec![("to", "a@b.example"), ("sender", "from")]),
        ("Redirect", vec![("to", "a@b.example"), ("replyTo", "to")]),
        (
            "Redirect",
            vec![("to", "a@b.example"), ("reversePath", "unaltered")],
        ),
        (
            "Redirect",
            vec![("to", "a@b.example"), ("passThrough", "perhaps")],
        ),
        ("Redirect", vec![("to", "a@b.example"), ("static", "2")]),
        ("Resend", vec![("sender", "bad@@x")]),
        ("Resend", vec![("fakeDomainCheck", "sure")]),
    ] {
        assert!(build(name, &params).is_err(), "{name} {params:?}");
    }
    // Resend accepts `reversePath` unaltered, Redirect does not; every special is known.
    build("Resend", &[("reversePath", "unaltered")]).unwrap();
    build(
        "Resend",
        &[(
            "recipients",
            "postmaster, sender, from, replyTo, reversePath, unaltered, recipients, to, null",
        )],
    )
    .unwrap();
    build("Resend", &[("to", "Some One <one@example.org>, delete")]).unwrap();
    let registry = Registry::standard();
    assert!(registry
        .mailet_params("Resend")
        .unwrap()
        .iter()
        .all(|p| *p != "static"));
    assert!(registry
        .mailet_params("Redirect")
        .unwrap()
        .contains(&"static"));
}

#[test]
fn redirect_defaults_quote_the_body_in_a_new_message() {
    let (orig, sent, _) = run(
        "Redirect",
        &[("recipients", "x@example.com"), ("message", "See below.")],
    );
    assert_eq!(orig.state(), state::GHOST);
    let new = &sent[0];
    assert_eq!(rcpts(new), ["x@example.com"]);
    // `to` follows `recipients`.
    assert_eq!(new.message.header("To").unwrap(), "<x@example.com>");
    assert_eq!(new.message.header("Subject").unwrap(), "figures");
    assert_eq!(new.message.header("X-Other"), None);
    assert_ne!(
        new.message.header("Message-ID").unwrap(),
        "<orig-1@example.net>"
    );
    // The body is streamed, not copied.
    assert!(format!("{:?}", new.message.body()).contains("Range"));
    let bytes = new.message.to_bytes().unwrap();
    assert_eq!(bytes.len() as u64, new.size());
    let parsed = MessageParser::new().parse(&bytes).unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(
        text.starts_with("See below.\r\nMessage:\r\nHello Bob,"),
        "{text:?}"
    );
    assert!(text.contains("figures: é."));
    assert_eq!(parsed.attachment_count(), 0);
}

#[test]
fn resend_edits_header_fields_of_the_unaltered_message() {
    let (orig, sent, _) = run(
        "Resend",
        &[
            ("recipients", "replyTo, postmaster"),
            ("to", "from, x@example.com"),
            ("sender", "postmaster"),
            ("replyto", "sender"),
            ("reversePath", "null"),
            ("prefix", "[fwd]"),
            ("isReply", "true"),
            ("passThrough", "true"),
        ],
    );
    assert_eq!(orig.state(), state::ROOT);
    let new = &sent[0];
    assert_eq!(
        rcpts(new),
        ["replies@example.net", "postmaster@mx.example.org"]
    );
    assert_eq!(new.sender(), None);
    let m = &new.message;
    assert_eq!(
        m.header("To").unwrap(),
        "Ann <ann@example.net>, <x@example.com>"
    );
    assert_eq!(m.header("From").unwrap(), "<postmaster@mx.example.org>");
    assert_eq!(m.header("Reply-To").unwrap(), "<ann@example.net>");
    assert_eq!(m.header("Subject").unwrap(), "[fwd] figures");
    assert_eq!(m.header("In-Reply-To").unwrap(), "<orig-1@example.net>");
    assert_eq!(m.header("Message-ID").unwrap(), "<orig-1@example.net>");
    assert_eq!(m.header("X-Other").unwrap(), "kept only when unaltered");
    // The original is untouched.
    assert_eq!(orig.message.to_bytes().unwrap(), ORIGINAL);

    // `null` removes the field; `recipients` alone keeps the recipients.
    let (_, sent, _) = run(
        "Resend",
        &[
            ("to", "null"),
            ("replyTo", "null"),
            ("recipients", "recipients"),
        ],
    );
    assert_eq!(sent[0].message.header("To"), None);
    assert_eq!(sent[0].message.header("Reply-To"), None);
    assert_eq!(
        rcpts(&sent[0]),
        ["bob@mx.example.org", "eve@mx.example.org"]
    );
    // Redirect: `sender` also sets the reverse path.
    let (_, sent, _) = run(
        "Redirect",
        &[
            ("to", "unaltered"),
            ("recipients", "x@example.com"),
            ("sender", "list@example.org"),
        ],
    );
    assert_eq!(sent[0].sender().unwrap().to_string(), "list@example.org");
    assert_eq!(
        sent[0].message.header("To").unwrap(),
        "Bob <bob@mx.example.org>"
    );
}

#[test]
fn attachments_and_inline_heads_follow_james() {
    let (_, sent, _) = run(
        "Resend",
        &[
            ("recipients", "x@example.com"),
            ("inline", "heads"),
            ("attachment", "message"),
            ("attachError", "true"),
            ("subject", "Überblick"),
        ],
    );
    let new = &sent[0];
    assert!(new
        .message
        .header("Subject")
        .unwrap()
        .starts_with("=?utf-8?B?"));
    assert_eq!(new.message.subject().unwrap(), "Überblick");
    let bytes = new.message.to_bytes().unwrap();
    let parsed = MessageParser::new().parse(&bytes).unwrap();
    assert!(parsed
        .body_text(0)
        .unwrap()
        .contains("Message Headers:\r\nFrom: Ann <ann@example.net>"));
    let attached = parsed
        .attachments()
        .find(|p| p.content_type().is_some_and(|c| c.ctype() == "message"))
        .expect("message/rfc822 part");
    let inner = attached.message().expect("parsed as a message");
    assert_eq!(inner.raw_message(), ORIGINAL);
    assert!(String::from_utf8_lossy(&bytes).contains("550 no such user"));

    for (attachment, expect) in [
        ("heads", "X-Other: kept only"),
        ("body", "Hello Bob"),
        ("all", "Message:\r\nHello Bob"),
    ] {
        let (_, sent, _) = run(
            "Redirect",
            &[
                ("recipients", "x@example.com"),
                ("inline", "none"),
                ("attachment", attachment),
            ],
        );
        let bytes = sent[0].message.to_bytes().unwrap();
        let parsed = MessageParser::new().parse(&bytes).unwrap();
        let part = parsed.attachment(0).expect(attachment);
        let text = String::from_utf8_lossy(part.contents());
        assert!(text.contains(expect), "{attachment}: {text}");
    }
}

#[test]
fn fake_domain_check_uses_the_context_dns() {
    let mut ctx = Recorder::new();
    ctx.mx
        .insert("example.net".into(), vec!["mx.example.net".into()]);
    ctx.mx.insert("a-only.example".into(), vec![]);
    let check = |sender: &str, ctx: &Recorder| {
        let mailet = build(
            "Resend",
            &[
                ("recipients", "x@example.com"),
                ("fakeDomainCheck", "true"),
                ("reversePath", sender),
            ],
        )
        .unwrap();
        let mut m = original();
        mailet.service(&mut m, ctx)
    };
    assert!(check("ann@example.net", &ctx).is_ok());
    assert!(check("ann@a-only.example", &ctx).is_ok());
    let e = check("ann@nowhere.example", &ctx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(
        e.to_string()
            .contains("nowhere.example has no mail servers"),
        "{e}"
    );
    assert_eq!(
        check("ann@slow.timeout", &ctx).unwrap_err().kind(),
        ErrorKind::Temporary
    );
    // The null sender is not checked.
    assert!(check("null", &ctx).is_ok());
    assert_eq!(ctx.sent().len(), 3);
}

#[test]
fn a_large_body_is_streamed_into_the_new_mail() {
    // A body that claims 1 GiB: building the new mail must not read it.
    #[derive(Debug)]
    struct Huge;
    impl BodySource for Huge {
        fn len(&self) -> u64 {
            1 << 30
        }
        fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::io::repeat(b'a').take(1 << 30)))
        }
    }
    use std::io::Read;
    let ctx = Recorder::new();
    let mailet = build(
        "Resend",
        &[
            ("recipients", "x@example.com"),
            ("inline", "none"),
            ("attachment", "message"),
        ],
    )
    .unwrap();
    let mut m = original();
    m.message = Message::new(m.message.header_section().to_vec(), Arc::new(Huge));
    let started = std::time::Instant::now();
    // has_8bit reads the body once (streamed, 64 KiB at a time).
    mailet.service(&mut m, &ctx).unwrap();
    let sent = ctx.sent();
    assert!(sent[0].size() > 1 << 30);
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn a_redirection_loop_is_stopped() {
    let ctx = Recorder::new();
    let mailet = build("Resend", &[("prefix", "again")]).unwrap();
    let mut m = original();
    for _ in 0..8 {
        mailet.service(&mut m, &ctx).unwrap();
        m = ctx.sent().pop().unwrap();
    }
    assert_eq!(
        m.attribute(ATTR_REDIRECTS),
        Some(&AttributeValue::Number(8.0))
    );
    let e = mailet.service(&mut m, &ctx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(e.to_string().contains("loop"), "{e}");
}

/// The over-quota warning of James 2.3.2's stock config.xml (commented out there).
#[test]
fn the_stock_configs_over_quota_resend_is_accepted_and_works() {
    let (orig, sent, _) = run(
        "Resend",
        &[
            ("sender", "postmaster"),
            ("replyTo", "postmaster"),
            ("reversePath", "null"),
            ("inline", "none"),
            ("attachment", "message"),
            ("prefix", "[OVER QUOTA WARNING]"),
            (
                "message",
                "When receiving the attached message, your mailbox is larger than 20 MB.",
            ),
        ],
    );
    assert_eq!(orig.state(), state::GHOST);
    let new = &sent[0];
    assert_eq!(rcpts(new), rcpts(&orig));
    assert_eq!(new.sender(), None);
    assert_eq!(
        new.message.subject().unwrap(),
        "[OVER QUOTA WARNING] figures"
    );
    assert_eq!(
        new.message.header("From").unwrap(),
        "<postmaster@mx.example.org>"
    );
    let bytes = new.message.to_bytes().unwrap();
    let parsed = MessageParser::new().parse(&bytes).unwrap();
    assert!(parsed.body_text(0).unwrap().starts_with("When receiving"));
    assert_eq!(
        parsed
            .attachment(0)
            .unwrap()
            .message()
            .unwrap()
            .raw_message(),
        ORIGINAL
    );
}
