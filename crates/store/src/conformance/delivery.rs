//! Local delivery from the spool to an inbox, as the SpoolManager ends a delivered mail:
//! [`SpoolRepository::complete_delivered`] where the backends share a transaction, else an
//! inbox sync and a removal.

use mailroom_mailet::{Envelope, Mail, MailAddress, MemoryBody, Message};

use super::read_all;
use crate::{Delivery, InboxRepository, LeaseToken, SpoolRepository};

/// Ends a leased mail the way the SpoolManager does: in one step where the spool can, else a
/// sync of its deliveries and a removal.
async fn finish(
    spool: &dyn SpoolRepository,
    inbox: &dyn InboxRepository,
    token: LeaseToken,
    deliveries: &[Delivery],
) {
    if !spool
        .complete_delivered(&token, inbox, deliveries)
        .await
        .unwrap()
    {
        inbox.sync(deliveries).await.unwrap();
        spool.complete(token).await.unwrap();
    }
}

/// For an inbox whose `deliver_once` stores one message per key (the database).
///
/// A mail for two users delivered as stored and a third with a body of its own (a mailet
/// rewrote it); each inbox holds its message once, with the trace header, the right POP3
/// size (bare LFs count two octets) and a UIDL; a second delivery of the same mail (its
/// removal was lost) adds nothing; a message removed from one inbox stays readable in the
/// others (they may share one stored body); the spool is empty at the end.
pub async fn spool_delivery(spool: &dyn SpoolRepository, inbox: &dyn InboxRepository) {
    let users = ["dora", "eve", "finn"];
    let recipients = users
        .iter()
        .map(|u| MailAddress::parse(&format!("{u}@example.org")).unwrap())
        .collect();
    let header = b"Subject: delivered\r\n\r\n".to_vec();
    let body = b"bare\nline\r\n.dot\r\n".to_vec();
    let mail = Mail::new(
        Envelope::new("delivered-1", None, recipients),
        Message::from_bytes(&[&header[..], &body[..]].concat()),
    );
    for round in 0..2 {
        spool.store(&mail).await.unwrap();
        let leased = spool
            .lease(std::time::Duration::from_secs(5))
            .await
            .unwrap()
            .expect("the stored mail");
        let mut deliveries = Vec::new();
        for user in &users[..2] {
            let mut copy = leased.mail.clone();
            copy.message.remove_header("Return-Path");
            let trace = format!("Delivered-To: {user}@example.org\r\n");
            deliveries.push(
                inbox
                    .deliver_once(copy.name(), user, trace.as_bytes(), &copy.message)
                    .await
                    .unwrap(),
            );
        }
        let rewritten = Message::new(
            leased.mail.message.header_section().to_vec(),
            std::sync::Arc::new(MemoryBody::new(b"rewritten\r\n".to_vec())),
        );
        deliveries.push(
            inbox
                .deliver_once(
                    leased.mail.name(),
                    "finn",
                    b"Delivered-To: finn@example.org\r\n",
                    &rewritten,
                )
                .await
                .unwrap(),
        );
        finish(spool, inbox, leased.token, &deliveries).await;
        assert!(spool.list().await.unwrap().is_empty(), "round {round}");
    }
    let expected = |user: &str, body: &[u8]| {
        let mut wire = format!("Delivered-To: {user}@example.org\r\n").into_bytes();
        wire.extend_from_slice(&header);
        wire.extend_from_slice(&body.iter().fold(Vec::new(), |mut out, &b| {
            if b == b'\n' && out.last() != Some(&b'\r') {
                out.push(b'\r');
            }
            out.push(b);
            out
        }));
        wire
    };
    let mut uids = Vec::new();
    for (user, body) in [
        ("dora", &body[..]),
        ("eve", &body[..]),
        ("finn", b"rewritten\r\n"),
    ] {
        let mailbox = inbox.open_mailbox(user).await.unwrap();
        assert_eq!(
            mailbox.messages().len(),
            1,
            "{user}: delivered exactly once"
        );
        let wire = expected(user, body);
        assert_eq!(
            read_all(mailbox.as_ref()).await,
            std::slice::from_ref(&wire),
            "{user}"
        );
        assert_eq!(mailbox.messages()[0].size, wire.len() as u64, "{user}");
        uids.push(mailbox.messages()[0].uid.clone());
    }
    assert!(uids[0] != uids[1] && uids[1] != uids[2]);
    let mut dora = inbox.open_mailbox("dora").await.unwrap();
    dora.delete(&[0]).await.unwrap();
    drop(dora);
    assert!(inbox
        .open_mailbox("dora")
        .await
        .unwrap()
        .messages()
        .is_empty());
    let eve = inbox.open_mailbox("eve").await.unwrap();
    assert_eq!(read_all(eve.as_ref()).await, [expected("eve", &body)]);
}
