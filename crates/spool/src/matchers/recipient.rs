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
        let hosts = list(c.required_condition()?)
            .map(str::to_lowercase)
            .collect();
        Ok(Box::new(HostIs(hosts)))
    }).about("The recipients whose domain is one of the listed domains.", "<mailet match=\"HostIs=example.org, example.net\" class=\"RemoteDelivery\"><gateway>relay.example.org</gateway></mailet>");
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
