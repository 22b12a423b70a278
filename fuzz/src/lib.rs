//! What the fuzz targets share: splitting an input in two, feeding line readers piece by
//! piece, and a driver that answers every outcome of the sans-I/O SMTP session the same way,
//! so that a whole input and the same input in pieces can be compared.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use mailroom_mailet::MailAddress;
use mailroom_net::lines::{LineEvent, LineReader};
use mailroom_smtp::session::{DataStart, Outcome, Session};
use mailroom_smtp::{
    AuthPolicy, AuthVerdict, Authenticator, RecipientCheck, RecipientVerdict, SenderVerdict,
    SmtpSettings,
};

/// The split point (from the first two octets) and the rest of `data`: the input is fed whole,
/// then as `rest[..at]` and `rest[at..]`.
pub fn split(data: &[u8]) -> (usize, &[u8]) {
    if data.len() < 2 {
        return (0, data);
    }
    let rest = &data[2..];
    let at = usize::from(u16::from_le_bytes([data[0], data[1]])) % (rest.len() + 1);
    (at, rest)
}

/// Every line event of `pieces`, fed one after the other to one reader.
pub fn lines(reader: &mut LineReader, pieces: &[&[u8]]) -> Vec<LineEvent> {
    let mut events = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            let (used, event) = reader.read(rest);
            assert!(used <= rest.len());
            rest = &rest[used..];
            match event {
                Some(event) => events.push(event),
                None => assert!(rest.is_empty(), "no event, but input left unread"),
            }
        }
    }
    events
}

/// Accepts `good@...` recipients and users, refuses the rest.
struct Verdicts;

#[async_trait::async_trait]
impl RecipientCheck for Verdicts {
    async fn check(&self, _: &MailAddress) -> RecipientVerdict {
        RecipientVerdict::Known
    }
}

#[async_trait::async_trait]
impl Authenticator for Verdicts {
    async fn authenticate(&self, _: &str, _: &str) -> AuthVerdict {
        AuthVerdict::Rejected
    }
    async fn may_send_as(&self, _: &str, _: &MailAddress) -> SenderVerdict {
        SenderVerdict::Own
    }
}

/// SMTP settings that open every path of the session: AUTH offered in plain text, recipient
/// checks, small size and recipient limits.
pub fn smtp_settings() -> Arc<SmtpSettings> {
    Arc::new(SmtpSettings {
        hello_name: "mx.fuzz.test".into(),
        max_message_size: 4096,
        max_rcpt: 5,
        is_local_domain: Arc::new(|d| d.eq_ignore_ascii_case("fuzz.test")),
        recipient_check: Some(Arc::new(Verdicts)),
        auth: AuthPolicy::Announce,
        authenticator: Some(Arc::new(Verdicts)),
        require_tls_for_auth: false,
        ..SmtpSettings::default()
    })
}

/// What a session did with an input: every octet written to the client, and each mail
/// committed (sender, recipients, body).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct SmtpRun {
    pub out: Vec<u8>,
    pub mails: Vec<String>,
    /// The session ended (QUIT, STARTTLS, too many errors): later input is not read.
    pub ended: bool,
}

/// Runs a fresh session over `pieces`, answering each outcome at once and alike (recipients
/// known, AUTH refused, the sender the user's own, every message opened and committed).
pub fn run_smtp(settings: &Arc<SmtpSettings>, pieces: &[&[u8]]) -> SmtpRun {
    let mut session = Session::new(settings.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut run = SmtpRun::default();
    session.greet(&mut run.out);
    let mut body = Vec::new();
    let mut opened = 0;
    'pieces: for piece in pieces {
        let mut rest = *piece;
        loop {
            let (used, outcome) = session.ingest(rest, &mut run.out, &mut body);
            assert!(used <= rest.len());
            rest = &rest[used..];
            match outcome {
                Outcome::Continue => {
                    assert!(rest.is_empty(), "Continue with input left unread");
                    break;
                }
                Outcome::OpenMessage => {
                    opened += 1;
                    let start = DataStart {
                        id: format!("Mail{opened}"),
                        date: "Tue, 1 Dec 2026 00:00:00 +0000".into(),
                    };
                    session.begin_data(Ok::<_, ()>(start), &mut run.out, &mut body);
                }
                Outcome::CheckRecipient(address) => {
                    let verdict = if address.local_part().starts_with("good") {
                        RecipientVerdict::Known
                    } else {
                        RecipientVerdict::Unknown
                    };
                    session.recipient_checked(verdict, &mut run.out);
                }
                Outcome::Commit(envelope) => {
                    run.mails.push(format!(
                        "{:?} {:?} {:?}",
                        envelope.sender,
                        envelope.recipients,
                        String::from_utf8_lossy(&body)
                    ));
                    body.clear();
                    session.committed(Ok::<_, ()>(()), &mut run.out);
                }
                Outcome::Discard => body.clear(),
                Outcome::Authenticate(_) => {
                    session.authenticated(AuthVerdict::Rejected, &mut run.out)
                }
                Outcome::CheckRoom(size) => {
                    // A spool with room for up to a mebibyte.
                    let room = match size > 1 << 20 {
                        true => Err(std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            "no space left",
                        )),
                        false => Ok(()),
                    };
                    session.room_checked(room, &mut run.out)
                }
                Outcome::CheckSender { .. } => {
                    session.sender_checked(SenderVerdict::Own, &mut run.out)
                }
                Outcome::StartTls | Outcome::Close => {
                    run.ended = true;
                    break 'pieces;
                }
            }
        }
    }
    run
}
