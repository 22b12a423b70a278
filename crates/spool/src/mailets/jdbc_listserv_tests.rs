use std::collections::BTreeMap;

use mailroom_mailet::{state, Envelope, Message};

use super::*;
use crate::mailets::compose::encode_header_text;
use crate::mailets::lists::post::normalize_subject;
use crate::mailets::testing::Recorder;
use crate::sql::testing::Sqlite;

fn ctx() -> Recorder {
    Recorder::new()
}

fn tables(db: &Sqlite, members_only: &str, attachments: &str) {
    for sql in [
        "CREATE TABLE listserv (listserv_id varchar(255) PRIMARY KEY, members_only SMALLINT, \
         attachments_allowed SMALLINT, reply_to_list SMALLINT, subject_prefix varchar(50), \
         list_address varchar(255))",
        "CREATE TABLE listserv_members (listserv_id varchar(255), member varchar(255))",
    ] {
        db.execute("maildb", sql, &[]).unwrap();
    }
    db.execute(
        "maildb",
        "INSERT INTO listserv VALUES ('james', ?, ?, 1, 'James', 'james@example.org')",
        &[members_only, attachments],
    )
    .unwrap();
    for member in ["a@example.org", "b@remote.example", "not an address"] {
        db.execute(
            "maildb",
            "INSERT INTO listserv_members VALUES ('james', ?)",
            &[member],
        )
        .unwrap();
    }
}

fn listserv(
    sources: Arc<dyn SqlSources>,
    extra: &[(&str, &str)],
) -> Result<Box<dyn Mailet>, MailetError> {
    let mut registry = Registry::new();
    register_sql(&mut registry, sources);
    let mut params: BTreeMap<String, String> = [
        ("data_source", "maildb"),
        ("listserv_id", "james"),
        ("listserv_table", "listserv"),
        ("members_table", "listserv_members"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        if v.is_empty() {
            params.remove(*k);
        } else {
            params.insert(k.to_string(), v.to_string());
        }
    }
    registry.mailet("JDBCListserv").unwrap()(&MailetConfig {
        name: "JDBCListserv".into(),
        params,
    })
}

/// A post received from outside (remote address 192.0.2.7).
fn mail(from: &str, header: &str) -> Mail {
    let text = format!("Return-Path: <{from}>\r\n{header}\r\n\r\nhello\r\n");
    let mut envelope = Envelope::new(
        "m1",
        MailAddress::parse(from).ok(),
        vec![MailAddress::parse("james@example.org").unwrap()],
    );
    envelope.remote_addr = "192.0.2.7".into();
    Mail::new(envelope, Message::from_bytes(text.as_bytes()))
}

#[test]
fn distributes_to_the_members_as_james() {
    let db = Sqlite::new();
    tables(&db, "1", "0");
    let mailet = listserv(db.clone(), &[]).unwrap();
    let ctx = ctx();
    let mut m = mail("a@example.org", "Subject: Re: [James] Re:  hello");
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    let sent = std::mem::take(&mut *ctx.sent.lock().unwrap());
    assert_eq!(sent.len(), 1);
    let out = &sent[0];
    assert_eq!(out.sender(), Some(&ctx.postmaster));
    // Sent by the server: a relay check must let it reach b@remote.example.
    assert_eq!(out.envelope.remote_addr, "127.0.0.1");
    let members: Vec<String> = out.recipients().iter().map(ToString::to_string).collect();
    assert_eq!(members, ["a@example.org", "b@remote.example"]);
    assert_eq!(out.message.subject().as_deref(), Some("[James] RE: hello"));
    assert_eq!(
        out.message.header("Reply-To").as_deref(),
        Some("james@example.org")
    );
    assert_eq!(
        out.message.header("X-been-there").as_deref(),
        Some("james@example.org")
    );
    assert!(out.message.header("Return-Path").is_none());

    // A stranger, an attachment, a mail come back around.
    let mut m = mail("x@remote.example", "Subject: spam");
    mailet.service(&mut m, &ctx).unwrap();
    let mut m = mail(
        "a@example.org",
        "Subject: file\r\nContent-Type: multipart/mixed; boundary=x",
    );
    mailet.service(&mut m, &ctx).unwrap();
    // Refused as James's GenericListserv refuses: a notice to the sender.
    let refused = std::mem::take(&mut *ctx.sent.lock().unwrap());
    let reasons: Vec<_> = refused
        .iter()
        .map(|m| {
            assert_eq!(m.sender(), None);
            String::from_utf8(m.message.to_bytes().unwrap()).unwrap()
        })
        .collect();
    assert_eq!(refused[0].recipients()[0].to_string(), "x@remote.example");
    assert!(reasons[0].contains("Only members"), "{reasons:?}");
    assert!(reasons[1].contains("attachments"), "{reasons:?}");
    let mut m = mail(
        "a@example.org",
        "Subject: x\r\nX-been-there: james@example.org",
    );
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    assert!(ctx.sent.lock().unwrap().is_empty());

    // Cached: a new member is not seen until the settings are read again.
    db.execute(
        "maildb",
        "INSERT INTO listserv_members VALUES ('james', 'c@example.org')",
        &[],
    )
    .unwrap();
    mailet
        .service(&mut mail("a@example.org", "Subject: x"), &ctx)
        .unwrap();
    assert_eq!(
        ctx.sent.lock().unwrap().pop().unwrap().recipients().len(),
        2
    );
    let fresh = listserv(db.clone(), &[("cache_settings", "false")]).unwrap();
    fresh
        .service(&mut mail("a@example.org", "Subject: x"), &ctx)
        .unwrap();
    assert_eq!(
        ctx.sent.lock().unwrap().pop().unwrap().recipients().len(),
        3
    );
}

#[test]
fn subjects_are_normalised_as_james() {
    let p = "[L] ";
    assert_eq!(normalize_subject("hello", p), "[L] hello");
    assert_eq!(normalize_subject("[L] hello", p), "[L] hello");
    assert_eq!(normalize_subject("Re: [L] hello", p), "[L] RE: hello");
    assert_eq!(normalize_subject("Re: Re: Re:   x", p), "[L] RE: x");
    assert!(encode_header_text("héllo").starts_with("=?"));
}

#[test]
fn parameters_missing_list_and_database_away() {
    let db = Sqlite::new();
    tables(&db, "0", "1");
    for (key, why) in [
        ("data_source", "<data_source>"),
        ("listserv_id", "<listserv_id>"),
        ("listserv_table", "<listserv_table>"),
        ("members_table", "<members_table>"),
    ] {
        let e = listserv(db.clone(), &[(key, "")]).err().unwrap();
        assert!(e.to_string().contains(why), "{e}");
    }
    let e = listserv(db.clone(), &[("data_source", "other")])
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a data source"), "{e}");
    let e = listserv(db.clone(), &[("members_table", "m; drop")])
        .err()
        .unwrap();
    assert!(e.to_string().contains("plain SQL name"), "{e}");
    let e = listserv(db.clone(), &[("cache_settings", "sometimes")])
        .err()
        .unwrap();
    assert!(e.to_string().contains("true or false"), "{e}");
    let e = listserv(db.clone(), &[("members_table", "nosuch")])
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("could not find table 'nosuch'"),
        "{e}"
    );
    let mailet = listserv(db.clone(), &[("listserv_id", "nolist")]).unwrap();
    let e = mailet
        .service(&mut mail("a@example.org", "Subject: x"), &ctx())
        .unwrap_err();
    assert!(!e.is_temporary() && e.to_string().contains("nolist"), "{e}");

    let mailet = listserv(Sqlite::away(), &[]).unwrap();
    let e = mailet
        .service(&mut mail("a@example.org", "Subject: x"), &ctx())
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
}
