//! A mail: the envelope the server keeps about a message, and the message.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{state, AttributeValue, MailAddress, Message};

/// Everything the server knows about a mail besides its content. This is what the spool and
/// mail repositories persist next to the message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The repository key: unique within a repository.
    pub name: String,
    /// The processor the mail is in (see [`crate::state`]).
    pub state: String,
    /// The reverse-path; `None` is the null sender `<>` of bounces.
    pub sender: Option<MailAddress>,
    /// The forward-paths still to be handled.
    pub recipients: Vec<MailAddress>,
    /// Host name the mail came from (HELO/EHLO or reverse DNS).
    pub remote_host: String,
    /// IP address the mail came from.
    pub remote_addr: String,
    /// Why the mail is in an error state, if it is.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Data attached by the receiving service and by mailets.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// When the envelope last changed, in milliseconds since the Unix epoch.
    pub last_updated: u64,
    /// Size of the message in octets when the envelope was written.
    pub size: u64,
}

impl Envelope {
    /// A fresh envelope in state `root`.
    pub fn new(
        name: impl Into<String>,
        sender: Option<MailAddress>,
        recipients: Vec<MailAddress>,
    ) -> Self {
        Envelope {
            name: name.into(),
            state: state::ROOT.to_string(),
            sender,
            recipients,
            remote_host: "localhost".to_string(),
            remote_addr: "127.0.0.1".to_string(),
            error_message: None,
            attributes: BTreeMap::new(),
            last_updated: now_millis(),
            size: 0,
        }
    }

    /// Records that the envelope changed now.
    pub fn touch(&mut self) {
        self.last_updated = now_millis();
    }
}

/// The attribute holding a mail's delivery key with the name it belongs to (see
/// [`Mail::delivery_key`]).
pub const ATTR_DELIVERY_KEY: &str = "mailroom.delivery-key";

/// A mail as matchers and mailets see it.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope.
    pub envelope: Envelope,
    /// The message.
    pub message: Message,
}

impl Mail {
    /// A mail from an envelope and a message; the envelope's size is set from the message.
    pub fn new(mut envelope: Envelope, message: Message) -> Self {
        envelope.size = message.size();
        Mail { envelope, message }
    }

    /// The repository key.
    pub fn name(&self) -> &str {
        &self.envelope.name
    }

    /// The current state (processor name).
    pub fn state(&self) -> &str {
        &self.envelope.state
    }

    /// Moves the mail to another processor, or to [`state::GHOST`].
    pub fn set_state(&mut self, state: &str) {
        self.envelope.state = state.to_string();
    }

    /// The reverse-path (`None` for `<>`).
    pub fn sender(&self) -> Option<&MailAddress> {
        self.envelope.sender.as_ref()
    }

    /// The recipients still to be handled.
    pub fn recipients(&self) -> &[MailAddress] {
        &self.envelope.recipients
    }

    /// Replaces the recipients.
    pub fn set_recipients(&mut self, recipients: Vec<MailAddress>) {
        self.envelope.recipients = recipients;
    }

    /// An attribute's value.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.envelope.attributes.get(name)
    }

    /// Sets an attribute, returning the previous value.
    pub fn set_attribute(
        &mut self,
        name: impl Into<String>,
        value: AttributeValue,
    ) -> Option<AttributeValue> {
        self.envelope.attributes.insert(name.into(), value)
    }

    /// Size of the message in octets.
    pub fn size(&self) -> u64 {
        self.message.size()
    }

    /// A copy of this mail under another name with only `recipients`: what the SpoolManager
    /// hands to a mailet when its matcher matched some of the recipients.
    pub fn split_off(&self, name: String, recipients: Vec<MailAddress>) -> Mail {
        let mut copy = self.clone();
        copy.envelope.name = name;
        copy.envelope.recipients = recipients;
        copy
    }

    /// What an inbox that stores one message per delivery (a database's) recognises this
    /// mail's deliveries by: its name, or the key [`Mail::set_delivery_key`] gave it under
    /// this name. A mail made from this one under a new name (a forward, a bounce) has its
    /// own name as its key.
    pub fn delivery_key(&self) -> &str {
        match self.attribute(ATTR_DELIVERY_KEY) {
            Some(AttributeValue::String(held)) => match held.split_once(' ') {
                Some((name, key)) if name == self.name() => key,
                _ => self.name(),
            },
            _ => self.name(),
        }
    }

    /// Names this mail's deliveries `key` while it keeps its present name (see
    /// [`Mail::delivery_key`]): the SpoolManager's split copies, whose random names change at
    /// every run of their parent, take a key made from the parent's and where it split.
    pub fn set_delivery_key(&mut self, key: &str) {
        let held = format!("{} {key}", self.name());
        self.set_attribute(ATTR_DELIVERY_KEY, AttributeValue::String(held));
    }
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery key holds only under the name it was given for: a mail made from this
    /// one under another name (a forward) delivers under its own name.
    #[test]
    fn a_delivery_key_belongs_to_its_name() {
        let mut mail = Mail::new(
            Envelope::new("Mail1-a", None, vec![]),
            crate::Message::from_bytes(b"a: b\r\n\r\n"),
        );
        assert_eq!(mail.delivery_key(), "Mail1-a");
        mail.set_delivery_key("Mail0-p root/2");
        assert_eq!(mail.delivery_key(), "Mail0-p root/2");
        let forward = mail.split_off("Mail1-a-f".into(), vec![]);
        assert_eq!(forward.delivery_key(), "Mail1-a-f");
    }

    #[test]
    fn envelope_round_trips_with_null_sender() {
        let rcpt = MailAddress::parse("b@example.org").unwrap();
        let mut env = Envelope::new("m1", None, vec![rcpt]);
        env.attributes
            .insert("n".into(), AttributeValue::Number(1.0));
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
    }
}
