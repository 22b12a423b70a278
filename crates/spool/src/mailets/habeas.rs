//! AddHabeasWarrantMark: writes the Habeas warrant mark that the HasHabeasWarrantMark matcher
//! checks (one list of fields serves both).

use mailroom_mailet::{Mail, Mailet, MailetContext, MailetError};

use crate::matchers::HABEAS_WARRANT_MARK;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("AddHabeasWarrantMark", |_| {
            Ok(Box::new(AddHabeasWarrantMark))
        })
        .params(&[])
        .about(
            "Sets the nine X-Habeas-SWE-1..9 fields of the Habeas warrant mark (replacing any \
             of those names). Only for senders licensed by Habeas.",
            r#"<mailet match="SMTPAuthSuccessful" class="AddHabeasWarrantMark"/>"#,
        );
}

/// Sets every field of the mark.
struct AddHabeasWarrantMark;

impl Mailet for AddHabeasWarrantMark {
    fn service(&self, mail: &mut Mail, _: &dyn MailetContext) -> Result<(), MailetError> {
        for (name, value) in HABEAS_WARRANT_MARK {
            mail.message.set_header(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mailroom_mailet::MailetConfig;

    use super::*;
    use crate::matchers::testing::{build, mail_from, run, TestContext};

    #[test]
    fn the_mark_written_is_the_mark_matched() {
        let mut registry = Registry::default();
        register(&mut registry);
        let factory = registry.mailet("AddHabeasWarrantMark").unwrap();
        let mailet = factory(&MailetConfig::default()).unwrap();
        // A wrong value already there is replaced, not kept beside the right one.
        let mut mail = mail_from(
            None,
            &["a@b.example"],
            b"Subject: x\r\nX-Habeas-SWE-3: forged\r\n\r\nbody\r\n",
        );
        let matcher = build("HasHabeasWarrantMark", None);
        assert!(run(&*matcher, &mail).is_empty());
        mailet.service(&mut mail, &TestContext::default()).unwrap();
        assert_eq!(run(&*matcher, &mail).len(), 1);
        assert_eq!(mail.message.headers("X-Habeas-SWE-3").len(), 1);
        assert_eq!(mail.message.subject().as_deref(), Some("x"));
        assert!(mail
            .message
            .to_bytes()
            .unwrap()
            .ends_with(b"\r\n\r\nbody\r\n"));
    }
}
