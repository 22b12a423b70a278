//! Mailets that edit the header or attributes: SetMimeHeader (alias AddHeader),
//! RemoveMimeHeader, SetMailAttribute.

use mailroom_mailet::{Mail, Mailet, MailetConfig, MailetContext, MailetError};

use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    // Captures nothing, so it is `Copy` and registers under both names.
    let set_header = |c: &MailetConfig| -> Result<Box<dyn Mailet>, MailetError> {
        let name = c.required("name")?.trim();
        if !is_field_name(name) {
            return Err(MailetError::new(format!(
                "mailet {}: <name> {name:?} is not a header field name (printable ASCII, \
                 no spaces or ':')",
                c.name
            )));
        }
        // James 2.3 refuses a missing or empty value too ("Please configure a name and a
        // value").
        let value = c.required("value")?;
        Ok(Box::new(SetMimeHeader {
            name: name.to_string(),
            value: value.to_string(),
        }))
    };
    registry
        .add_mailet("SetMimeHeader", set_header).about("Sets the header <name> to <value>, replacing any field of that name.", "<mailet match=\"All\" class=\"SetMimeHeader\"><name>X-Processed</name><value>yes</value></mailet>")
        .params(&["name", "value"]);
    registry
        .add_mailet("AddHeader", set_header).about("Another name of SetMimeHeader.", "<mailet match=\"All\" class=\"AddHeader\"><name>X-Processed</name><value>yes</value></mailet>")
        .params(&["name", "value"]);
    registry
        .add_mailet("RemoveMimeHeader", |c| {
            let names: Vec<String> = c
                .required("name")?
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            if let Some(bad) = names.iter().find(|n| !is_field_name(n)) {
                return Err(MailetError::new(format!(
                    "mailet RemoveMimeHeader: <name> {bad:?} is not a header field name"
                )));
            }
            Ok(Box::new(RemoveMimeHeader(names)))
        }).about("Removes every field called one of <name> (comma-separated).", "<mailet match=\"All\" class=\"RemoveMimeHeader\"><name>X-Spam-Flag, X-Spam-Score</name></mailet>")
        .params(&["name"]);
    registry.add_mailet("SetMailAttribute", |c| {
        if c.params.is_empty() {
            return Err(MailetError::new(
                "SetMailAttribute needs at least one <attributeName>value</attributeName>",
            ));
        }
        Ok(Box::new(SetMailAttribute(
            c.params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )))
    }).about("Each parameter becomes a mail attribute of that name, with its text as a string value.", "<mailet match=\"All\" class=\"SetMailAttribute\"><org.example.seen>true</org.example.seen></mailet>");
}

/// An RFC 5322 field name: printable ASCII without spaces or ':'.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// `<name>X-Header</name><value>text</value>`: sets the header, replacing any of that name.
struct SetMimeHeader {
    name: String,
    value: String,
}

impl Mailet for SetMimeHeader {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        mail.message.set_header(&self.name, &self.value);
        Ok(())
    }
}

/// `<name>X-A,X-B</name>`: removes these headers.
struct RemoveMimeHeader(Vec<String>);

impl Mailet for RemoveMimeHeader {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        for name in &self.0 {
            mail.message.remove_header(name);
        }
        Ok(())
    }
}

/// Every parameter `<name>value</name>` becomes a string attribute of the mail.
struct SetMailAttribute(Vec<(String, String)>);

impl Mailet for SetMailAttribute {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        for (name, value) in &self.0 {
            mail.set_attribute(name.clone(), value.as_str().into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::build as try_build;

    #[test]
    fn set_mime_header_checks_its_name_and_value() {
        assert!(try_build("SetMimeHeader", &[("name", "X-Ok"), ("value", "yes")]).is_ok());
        for bad in ["X Bad", "X-Bad:", "X-Bad\r\nInjected", "Sübject"] {
            let err = try_build("SetMimeHeader", &[("name", bad), ("value", "v")]).err();
            assert!(err.is_some(), "{bad:?} accepted");
        }
        // James 2.3 requires a value as well.
        assert!(try_build("AddHeader", &[("name", "X-Ok")]).is_err());
        assert!(try_build("AddHeader", &[("name", "X-Ok"), ("value", "")]).is_err());
        assert!(try_build("RemoveMimeHeader", &[("name", "X-A, X-B")]).is_ok());
        assert!(try_build("RemoveMimeHeader", &[("name", "X-A, X B")]).is_err());
    }
}
