//! Property tests of the SMTP command parser: any address in `MAIL FROM:<...>` and
//! `RCPT TO:<...>` comes back as the same address, with any case of the verb, and no line
//! makes the parser panic; a whole SMTP dialogue gives the same replies in any pieces.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use mailroom_mailet::MailAddress;
use mailroom_smtp::codec::{parse_command, Command, Recipient};
use mailroom_smtp::session::{DataStart, Outcome, Session};
use mailroom_smtp::{RecipientVerdict, SmtpSettings};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = MailAddress> {
    (
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[A-Za-z0-9_-]{1,6}){0,2}",
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,3}",
    )
        .prop_map(|(l, d)| MailAddress::new(&l, &d).unwrap())
}

fn case(verb: &str, upper: Vec<bool>) -> String {
    verb.chars()
        .zip(upper.into_iter().chain(std::iter::repeat(false)))
        .map(|(c, u)| {
            if u {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Runs a session over the pieces, answering every outcome alike; the octets written.
fn dialogue(pieces: &[&[u8]]) -> Vec<u8> {
    let settings = Arc::new(SmtpSettings {
        max_message_size: 2000,
        ..SmtpSettings::default()
    });
    let mut session = Session::new(settings, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (mut out, mut body) = (Vec::new(), Vec::new());
    session.greet(&mut out);
    for piece in pieces {
        let mut rest = *piece;
        loop {
            let (used, outcome) = session.ingest(rest, &mut out, &mut body);
            rest = &rest[used..];
            match outcome {
                Outcome::Continue => break,
                Outcome::OpenMessage => {
                    let start = DataStart {
                        id: "M1".into(),
                        date: "d".into(),
                    };
                    session.begin_data(Ok::<_, ()>(start), &mut out, &mut body);
                }
                Outcome::CheckRecipient(_) => {
                    session.recipient_checked(RecipientVerdict::Known, &mut out)
                }
                Outcome::Commit(_) => {
                    out.extend_from_slice(&body);
                    body.clear();
                    session.committed(Ok::<_, ()>(()), &mut out);
                }
                Outcome::Discard => body.clear(),
                _ => return out,
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn mail_and_rcpt_carry_the_address(a in address(), upper in prop::collection::vec(any::<bool>(), 9)) {
        let mail = format!("{}<{a}>", case("MAIL FROM:", upper.clone()));
        match parse_command(mail.as_bytes(), true) {
            Ok(Command::Mail { sender, .. }) => prop_assert_eq!(sender, Some(a.clone())),
            other => prop_assert!(false, "{mail}: {other:?}"),
        }
        let rcpt = format!("{}<{a}> NOTIFY=NEVER", case("RCPT TO:", upper));
        match parse_command(rcpt.as_bytes(), true) {
            Ok(Command::Rcpt { recipient: Recipient::Address(r), params }) => {
                prop_assert_eq!(r, a);
                prop_assert_eq!(params.notify.as_deref(), Some("NEVER"));
            }
            other => prop_assert!(false, "{rcpt}: {other:?}"),
        }
    }

    #[test]
    fn no_line_panics(line in prop::collection::vec(any::<u8>(), 0..200), brackets in any::<bool>()) {
        let _ = parse_command(&line, brackets);
    }

    #[test]
    fn a_dialogue_answers_the_same_in_any_two_pieces(
        body in "[a-z.\\r\\n]{0,80}",
        at in any::<usize>(),
        rcpts in prop::collection::vec(address(), 1..4),
    ) {
        let mut input = String::from("EHLO c.test\r\nMAIL FROM:<s@far.test>\r\n");
        for r in &rcpts {
            input.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        input.push_str(&format!("DATA\r\n{body}\r\n.\r\nNOOP\r\nQUIT\r\n"));
        let input = input.as_bytes();
        let at = at % (input.len() + 1);
        prop_assert_eq!(dialogue(&[input]), dialogue(&[&input[..at], &input[at..]]));
    }
}
