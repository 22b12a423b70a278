//! HasMailAttribute and HasMailAttributeWithValue.

use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher};

use super::all_if;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("HasMailAttribute", |c| {
            Ok(Box::new(HasMailAttribute(
                c.required_condition()?.to_string(),
            )))
        })
        .about(
            "Every recipient when the mail has the attribute.",
            "<mailet match=\"HasMailAttribute=org.apache.james.infected\" class=\"Null\"/>",
        );
    registry.add_matcher("HasMailAttributeWithValue", |c| {
        let condition = c.required_condition()?;
        let (name, value) = condition.split_once(',').ok_or_else(|| {
            MailetError::new("HasMailAttributeWithValue needs name, value (HasMailAttributeWithValue=name, value)")
        })?;
        Ok(Box::new(HasMailAttributeWithValue {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
        }))
    }).about("Every recipient when the attribute's value (as a string) equals the value given after the comma.", "<mailet match=\"HasMailAttributeWithValue=org.apache.james.infected, true\" class=\"Null\"/>");
}

/// Every recipient when the mail has the attribute.
struct HasMailAttribute(String);

impl Matcher for HasMailAttribute {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        all_if(mail, mail.attribute(&self.0).is_some())
    }
}

/// Every recipient when the attribute's value, as text, equals the given value.
struct HasMailAttributeWithValue {
    name: String,
    value: String,
}

impl Matcher for HasMailAttributeWithValue {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let hit = mail
            .attribute(&self.name)
            .is_some_and(|v| v.to_string() == self.value);
        all_if(mail, hit)
    }
}
