//! Matchers on the message: SubjectStartsWith, SubjectIs, SizeGreaterThan, RelayLimit,
//! HasHeader, FetchedFrom.

use mailroom_mailet::{
    AttributeValue, Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig,
    ATTR_FETCHMAIL_TASK,
};

use super::all_if;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry.add_matcher("SubjectStartsWith", |c| {
        Ok(Box::new(Subject {
            text: c.required_condition()?.to_string(),
            whole: false,
        }))
    }).about("Every recipient when the (decoded) Subject starts with the text.", "<mailet match=\"SubjectStartsWith=[SPAM]\" class=\"ToRepository\"><repositoryPath>file://var/mail/spam/</repositoryPath></mailet>");
    registry
        .add_matcher("SubjectIs", |c| {
            Ok(Box::new(Subject {
                text: c.required_condition()?.to_string(),
                whole: true,
            }))
        })
        .about(
            "Every recipient when the (decoded) Subject is exactly the text.",
            "<mailet match=\"SubjectIs=test\" class=\"Null\"/>",
        );
    registry.add_matcher("SizeGreaterThan", |c| {
        Ok(Box::new(SizeGreaterThan(size(c)?)))
    }).about("Every recipient when the message is larger than the size (octets, or with a k or m suffix).", "<mailet match=\"SizeGreaterThan=10m\" class=\"Bounce\"/>");
    registry.add_matcher("RelayLimit", |c| {
        let limit = c.required_condition()?.parse().map_err(|_| {
            MailetError::new("RelayLimit needs a number of Received headers (RelayLimit=30)")
        })?;
        Ok(Box::new(RelayLimit(limit)))
    }).about("Every recipient when the message has at least that many Received: headers (a mail loop).", "<mailet match=\"RelayLimit=30\" class=\"Null\"/>");
    registry.add_matcher("HasHeader", |c| {
        let name = c.required_condition()?.trim();
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(MailetError::new(format!(
                "HasHeader: {name:?} is not a header field name"
            )));
        }
        Ok(Box::new(HasHeader(name.to_string())))
    }).about("Every recipient when the message has a header of that name.", "<mailet match=\"HasHeader=X-Spam-Flag\" class=\"ToProcessor\"><processor>spam</processor></mailet>");
    registry.add_matcher("FetchedFrom", |c| {
        Ok(Box::new(FetchedFrom(c.required_condition()?.to_string())))
    }).about("Every recipient of a mail that the FetchMail task of that name fetched (its attribute org.apache.james.fetchmail.taskName, which no sender can forge, unlike the X-fetched-from field James 2.3 tested).", "<mailet match=\"FetchedFrom=pop.example.org\" class=\"ToProcessor\"><processor>fetched</processor></mailet>");
}

/// `SizeGreaterThan=1m`: a size in octets with an optional `k` or `m` suffix.
fn size(config: &MatcherConfig) -> Result<u64, MailetError> {
    let text = config.required_condition()?.to_ascii_lowercase();
    let (digits, unit) = match text.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match text.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (text.as_str(), 1),
        },
    };
    // checked_mul: `99999999999999999m` is refused, not an overflow panic.
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            MailetError::new(format!(
                "SizeGreaterThan: {text:?} is not a size like 100k or 2m"
            ))
        })
}

/// Every recipient when the decoded subject starts with (or, `whole`, equals) the text.
struct Subject {
    text: String,
    whole: bool,
}

impl Matcher for Subject {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail.message.subject().is_some_and(|s| {
            if self.whole {
                s == self.text
            } else {
                s.starts_with(&self.text)
            }
        });
        all_if(mail, hit)
    }
}

/// Every recipient when the message is larger than this many octets.
struct SizeGreaterThan(u64);

impl Matcher for SizeGreaterThan {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.size() > self.0)
    }
}

/// Every recipient when the message has at least this many `Received:` headers: a mail loop.
struct RelayLimit(usize);

impl Matcher for RelayLimit {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.message.headers("Received").len() >= self.0)
    }
}

/// `FetchedFrom=TASK`: every recipient of mail that FetchMail's task `TASK` fetched. James 2.3
/// tests the `X-fetched-from` field, which any sender can write into a mail and so steer it;
/// here it is the task's attribute, which FetchMail sets beside the field and no sender can.
struct FetchedFrom(String);

impl Matcher for FetchedFrom {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let task = mail.attribute(ATTR_FETCHMAIL_TASK);
        all_if(
            mail,
            matches!(task, Some(AttributeValue::String(t)) if *t == self.0),
        )
    }
}

/// `HasHeader=X-Spam-Flag`: every recipient when the header is present.
struct HasHeader(String);

impl Matcher for HasHeader {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.message.header(&self.0).is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::matchers::testing::try_build;

    #[test]
    fn conditions_are_checked() {
        assert!(try_build("SizeGreaterThan", Some("10m")).is_ok());
        for bad in ["99999999999999999m", "18014398509481984k", "ten", "-1"] {
            assert!(try_build("SizeGreaterThan", Some(bad)).is_err(), "{bad}");
        }
        assert!(try_build("HasHeader", Some("X-Spam-Flag")).is_ok());
        for bad in ["X Spam", "X-Spam:", "Sübject"] {
            assert!(try_build("HasHeader", Some(bad)).is_err(), "{bad}");
        }
    }
}
