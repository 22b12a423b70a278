//! Matchers on recipients and senders: All, RecipientIs, RecipientIsLocal, HostIs, HostIsLocal,
//! SenderIs, SenderIsNull.

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig};

use super::{addresses, all_if, list};
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("All", |_| Ok(Box::new(All)))
        .about(
            "Every recipient.",
            "<mailet match=\"All\" class=\"LocalDelivery\"/>",
        )
        .no_condition();
    registry
        .add_matcher("RecipientIsLocal", |_| Ok(Box::new(RecipientIsLocal)))
        .about(
            "Recipients whose domain is one of the servernames and whose user exists.",
            "<mailet match=\"RecipientIsLocal\" class=\"LocalDelivery\"/>",
        )
        .no_condition();
    registry
        .add_matcher("HostIsLocal", |_| Ok(Box::new(HostIsLocal))).about("Recipients whose domain is one of the servernames (the user need not exist).", "<mailet match=\"HostIsLocal\" class=\"ToProcessor\"><processor>local-address-error</processor></mailet>")
        .no_condition();
    registry
        .add_matcher("SenderIsNull", |_| Ok(Box::new(SenderIsNull)))
        .about(
            "Every recipient of a mail from the null sender <> (a bounce).",
            "<mailet match=\"SenderIsNull\" class=\"Null\"/>",
        )
        .no_condition();
    registry.add_matcher("RecipientIs", |c| {
        Ok(Box::new(RecipientIs(addresses(
            &c.name,
            c.required_condition()?,
        )?)))
    }).about("The recipients equal to one of the listed addresses (comma- or space-separated).", "<mailet match=\"RecipientIs=abuse@example.org, spam@example.org\" class=\"ToProcessor\"><processor>abuse</processor></mailet>");
    registry.add_matcher("SenderIs", |c| {
        Ok(Box::new(SenderIs(addresses(
            &c.name,
            c.required_condition()?,
        )?)))
    }).about("Every recipient when the envelope sender is one of the listed addresses.", "<mailet match=\"SenderIs=boss@example.org\" class=\"SetMimeHeader\"><name>X-Priority</name><value>1</value></mailet>");
    registry.add_matcher("HostIs", |c: &MatcherConfig| {
        let hosts = domains(c)?;
        Ok(Box::new(HostIs(hosts)))
    }).about("The recipients whose domain is one of the listed domains.", "<mailet match=\"HostIs=example.org, example.net\" class=\"RemoteDelivery\"><gateway>relay.example.org</gateway></mailet>");
    registry
        .add_matcher("SenderHostIs", |c| {
            let hosts = domains(c)?;
            Ok(Box::new(SenderHostIs(hosts)))
        })
        .about(
            "Every recipient when the sender's domain is one of these (case-insensitive; \
             never for the null sender).",
            r#"<mailet match="SenderHostIs=spam.example, junk.example" class="Null"/>"#,
        );
    registry
        .add_matcher("UserIs", |c| {
            let users = list(c.required_condition()?).map(str::to_string).collect();
            Ok(Box::new(UserIs(users)))
        })
        .about(
            "The recipients whose user part (before the @, any domain) is one of these, \
             compared exactly as James does.",
            r#"<mailet match="UserIs=postmaster, abuse" class="ToProcessor">"#,
        );
    registry
        .add_matcher("IsSingleRecipient", |_| Ok(Box::new(IsSingleRecipient)))
        .no_condition()
        .about(
            "Every recipient when the mail has exactly one.",
            r#"<mailet match="IsSingleRecipient" class="ToProcessor"><processor>single</processor></mailet>"#,
        );
}

/// The condition's list of domains, lower-case; each must be a domain name or an address
/// literal, so that a typo is reported by check-config rather than matching nothing.
fn domains(c: &MatcherConfig) -> Result<Vec<String>, MailetError> {
    list(c.required_condition()?)
        .map(|host| {
            mailroom_mailet::check_domain(host).map_err(|e| {
                MailetError::new(format!("{}: {host:?} is not a domain: {e}", c.name))
            })?;
            Ok(host.to_lowercase())
        })
        .collect()
}

/// Compares addresses the way administrators expect: the whole address case-insensitively.
fn same_address(a: &MailAddress, b: &MailAddress) -> bool {
    a.domain() == b.domain() && a.local_part().eq_ignore_ascii_case(b.local_part())
}

/// Every recipient.
struct All;

impl Matcher for All {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail.recipients().to_vec())
    }
}

/// Recipients that are local users at a local domain.
struct RecipientIsLocal;

impl Matcher for RecipientIsLocal {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let mut matched = Vec::new();
        for rcpt in mail.recipients() {
            if ctx.is_local_server(rcpt.domain()) && ctx.local_user(rcpt.local_part())?.is_some() {
                matched.push(rcpt.clone());
            }
        }
        Ok(matched)
    }
}

/// Recipients at a local domain, whether or not the user exists.
struct HostIsLocal;

impl Matcher for HostIsLocal {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| ctx.is_local_server(r.domain()))
            .cloned()
            .collect())
    }
}

/// `HostIs=example.org, example.net`: recipients at these domains.
struct HostIs(Vec<String>);

impl Matcher for HostIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| self.0.iter().any(|h| h == r.domain()))
            .cloned()
            .collect())
    }
}

/// `RecipientIs=a@example.org, b@example.org`: these recipients.
struct RecipientIs(Vec<MailAddress>);

impl Matcher for RecipientIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| self.0.iter().any(|a| same_address(a, r)))
            .cloned()
            .collect())
    }
}

/// `SenderIs=a@example.org`: every recipient when the sender is one of these.
struct SenderIs(Vec<MailAddress>);

impl Matcher for SenderIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail
            .sender()
            .is_some_and(|s| self.0.iter().any(|a| same_address(a, s)));
        all_if(mail, hit)
    }
}

/// Every recipient when the sender is the null path `<>` (bounces).
struct SenderIsNull;

impl Matcher for SenderIsNull {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.sender().is_none())
    }
}

/// `SenderHostIs=a.example, b.example`: every recipient when the sender's domain is listed.
struct SenderHostIs(Vec<String>);

impl Matcher for SenderHostIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail
            .sender()
            .is_some_and(|s| self.0.iter().any(|h| h.eq_ignore_ascii_case(s.domain())));
        all_if(mail, hit)
    }
}

/// `UserIs=alice, bob`: the recipients whose local part is listed.
struct UserIs(Vec<String>);

impl Matcher for UserIs {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        Ok(mail
            .recipients()
            .iter()
            .filter(|r| self.0.iter().any(|u| u == r.local_part()))
            .cloned()
            .collect())
    }
}

/// Every recipient when there is exactly one.
struct IsSingleRecipient;

impl Matcher for IsSingleRecipient {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.recipients().len() == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::{build, mail_from, run, try_build};

    #[test]
    fn sender_host_is() {
        let m = build("SenderHostIs", Some("spam.example, Junk.example"));
        let rcpts = ["a@b.example", "c@d.example"];
        assert_eq!(
            run(&*m, &mail_from(Some("x@JUNK.example"), &rcpts, b"\r\nx")).len(),
            2
        );
        assert!(run(&*m, &mail_from(Some("x@ham.example"), &rcpts, b"\r\nx")).is_empty());
        assert!(run(&*m, &mail_from(None, &rcpts, b"\r\nx")).is_empty());
        assert!(try_build("SenderHostIs", None).is_err());
        for bad in [
            "spam..example",
            "spam.example, x@y.example",
            "spam.example;junk",
        ] {
            assert!(try_build("SenderHostIs", Some(bad)).is_err(), "{bad}");
            assert!(try_build("HostIs", Some(bad)).is_err(), "{bad}");
        }
        assert!(try_build("HostIs", Some("localhost, [127.0.0.1]")).is_ok());
    }

    #[test]
    fn user_is_matches_local_parts() {
        let m = build("UserIs", Some("postmaster,abuse"));
        let mail = mail_from(
            None,
            &[
                "postmaster@a.example",
                "bob@a.example",
                "abuse@b.example",
                "Abuse@c.example",
            ],
            b"\r\nx",
        );
        assert_eq!(
            run(&*m, &mail),
            vec!["postmaster@a.example", "abuse@b.example"]
        );
        assert!(try_build("UserIs", None).is_err());
    }

    #[test]
    fn is_single_recipient() {
        let m = build("IsSingleRecipient", None);
        assert_eq!(
            run(&*m, &mail_from(None, &["a@b.example"], b"\r\nx")).len(),
            1
        );
        assert!(run(
            &*m,
            &mail_from(None, &["a@b.example", "c@b.example"], b"\r\nx")
        )
        .is_empty());
    }
}
