//! SMTPAuthSuccessful and SMTPAuthUserIs: mail whose client authenticated with SMTP AUTH, as
//! the SMTP server records it in the `org.apache.james.SMTPAuthUser` attribute (James's name).

use mailroom_mailet::{
    AttributeValue, Mail, MailAddress, MailetContext, MailetError, Matcher, ATTR_SMTP_AUTH_USER,
};

use super::{all_if, list};
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("SMTPAuthSuccessful", |_| Ok(Box::new(SmtpAuthSuccessful))).about("Every recipient when the client authenticated with SMTP AUTH.", "<mailet match=\"SMTPAuthSuccessful\" class=\"SetMimeHeader\"><name>X-UserIsAuth</name><value>true</value></mailet>")
        .no_condition();
    registry.add_matcher("SMTPAuthUserIs", |c| {
        let users: Vec<String> = list(c.required_condition()?).map(str::to_string).collect();
        Ok(Box::new(SmtpAuthUserIs(users)))
    }).about("Every recipient when the client authenticated as one of the listed users.", "<mailet match=\"SMTPAuthUserIs=alice, bob\" class=\"ToProcessor\"><processor>trusted</processor></mailet>");
}

/// The user a mail's client authenticated as, if it did.
fn auth_user(mail: &Mail) -> Option<&str> {
    match mail.attribute(ATTR_SMTP_AUTH_USER) {
        Some(AttributeValue::String(user)) if !user.is_empty() => Some(user),
        _ => None,
    }
}

/// Every recipient when the client authenticated.
struct SmtpAuthSuccessful;

impl Matcher for SmtpAuthSuccessful {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, auth_user(mail).is_some())
    }
}

/// `SMTPAuthUserIs=alice, bob`: every recipient when the client authenticated as one of these
/// users. Compared without regard to case, as logins are.
struct SmtpAuthUserIs(Vec<String>);

impl Matcher for SmtpAuthUserIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = auth_user(mail)
            .is_some_and(|user| self.0.iter().any(|name| name.eq_ignore_ascii_case(user)));
        all_if(mail, hit)
    }
}

#[cfg(test)]
mod tests {
    use mailroom_mailet::{Envelope, MatcherConfig, Message, ATTR_FETCHMAIL_TASK};

    use super::*;
    use crate::mailets::testing::Recorder;

    fn mail(user: Option<AttributeValue>) -> Mail {
        let rcpts = vec![
            MailAddress::parse("a@example.org").unwrap(),
            MailAddress::parse("b@example.net").unwrap(),
        ];
        let mut envelope = Envelope::new("m1", None, rcpts);
        if let Some(user) = user {
            envelope
                .attributes
                .insert(ATTR_SMTP_AUTH_USER.to_string(), user);
        }
        Mail::new(envelope, Message::from_bytes(b"Subject: x\r\n\r\nx\r\n"))
    }

    fn matched(name: &str, condition: Option<&str>, mail: &Mail) -> usize {
        let mut registry = Registry::default();
        register(&mut registry);
        let factory = registry.matcher(name).unwrap();
        let matcher = factory(&MatcherConfig {
            name: name.into(),
            condition: condition.map(str::to_string),
        })
        .unwrap();
        let context = Recorder::new();
        matcher.matches(mail, &context).unwrap().len()
    }

    #[test]
    fn fetched_from() {
        let mut registry = Registry::default();
        super::super::message::register(&mut registry);
        let factory = registry.matcher("FetchedFrom").unwrap();
        let matcher = factory(&MatcherConfig {
            name: "FetchedFrom".into(),
            condition: Some("pop-task".into()),
        })
        .unwrap();
        let context = Recorder::new();
        let rcpts = vec![MailAddress::parse("a@example.org").unwrap()];
        let m = |task: Option<&str>, text: &[u8]| {
            let mut envelope = Envelope::new("m", None, rcpts.clone());
            if let Some(task) = task {
                envelope.attributes.insert(
                    ATTR_FETCHMAIL_TASK.into(),
                    AttributeValue::String(task.into()),
                );
            }
            Mail::new(envelope, Message::from_bytes(text))
        };
        let text = b"X-fetched-from: pop-task\r\nSubject: x\r\n\r\nx\r\n";
        let matched = |mail: &Mail| matcher.matches(mail, &context).unwrap().len();
        assert_eq!(matched(&m(Some("pop-task"), text)), 1);
        assert_eq!(matched(&m(Some("other"), text)), 0);
        // The field alone, as any sender can write it, is not FetchMail's word.
        assert_eq!(matched(&m(None, text)), 0);
        assert_eq!(matched(&m(None, b"Subject: x\r\n\r\nx\r\n")), 0);
    }

    #[test]
    fn smtp_auth_successful() {
        let alice = mail(Some("alice".into()));
        assert_eq!(matched("SMTPAuthSuccessful", None, &alice), 2);
        assert_eq!(matched("SMTPAuthSuccessful", None, &mail(None)), 0);
        // Not a user name: not authenticated.
        assert_eq!(
            matched("SMTPAuthSuccessful", None, &mail(Some("".into()))),
            0
        );
        assert_eq!(
            matched(
                "SMTPAuthSuccessful",
                None,
                &mail(Some(AttributeValue::Bool(true)))
            ),
            0
        );
    }

    #[test]
    fn smtp_auth_user_is() {
        let alice = mail(Some("alice".into()));
        assert_eq!(matched("SMTPAuthUserIs", Some("bob, Alice"), &alice), 2);
        assert_eq!(matched("SMTPAuthUserIs", Some("bob,carol"), &alice), 0);
        assert_eq!(matched("SMTPAuthUserIs", Some("alice"), &mail(None)), 0);
        let mut registry = Registry::default();
        register(&mut registry);
        let factory = registry.matcher("SMTPAuthUserIs").unwrap();
        let missing = factory(&MatcherConfig {
            name: "SMTPAuthUserIs".into(),
            condition: None,
        });
        assert!(missing.is_err());
    }
}
