//! VirtualUserTable: rewrites recipients through a virtual user table (the tables the
//! RemoteManager's `addmapping` edits). James 2.3 called the database version
//! `JDBCVirtualUserTable`; both names are accepted.
//!
//! Each recipient's targets replace it: an address; a bare user name (in the recipient's
//! domain); `domain:other` (same user, other domain); `regex:pattern:replacement` (applied to
//! the whole address; no match gives nothing); `error:CODE text` (the recipient is refused:
//! a copy of the mail for the refused recipients goes to the `error` processor with that
//! text as its error message). A recipient whose targets give nothing is kept. Targets are
//! mapped again, up to 10 levels, so that chains work and loops end.
//!
//! Each recipient rewritten logs `status=mapped` with its new addresses, each refused one
//! `status=refused` with the reply and the copy that goes to `error` (see
//! [`mailroom_mailet::outcome`]).

use std::collections::{BTreeMap, HashSet};

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{state, Mail, MailAddress, Mailet, MailetContext, MailetError};
use mailroom_store::mappings::{Target, DEFAULT_TABLE};
use regex::Regex;

use crate::Registry;

/// How many times a mapped address is mapped again.
const MAX_DEPTH: usize = 10;

pub(super) fn register(registry: &mut Registry) {
    for name in ["VirtualUserTable", "JDBCVirtualUserTable"] {
        registry
            .add_mailet(name, |c| {
                Ok(Box::new(VirtualUserTable {
                    table: c.param("table").unwrap_or(DEFAULT_TABLE).to_string(),
                }))
            })
            .params(&["table"])
            .about(
                "Rewrites each recipient through the virtual user table <table> (default: default), edited with the console's addmapping: user@domain, user@*, *@domain, error:, regex:, domain:.",
                "<mailet match=\"All\" class=\"VirtualUserTable\"><table>default</table></mailet>",
            );
    }
}

/// `<table>name</table>` (default: the default table).
struct VirtualUserTable {
    table: String,
}

/// Where one recipient ends up.
#[derive(Default)]
struct Resolved {
    addresses: Vec<MailAddress>,
    /// Refusals: the reply text, as the error message of the mail that carries them.
    errors: Vec<String>,
}

impl VirtualUserTable {
    fn resolve(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
        depth: usize,
        out: &mut Resolved,
    ) -> Result<(), MailetError> {
        let targets = ctx.address_mappings(&self.table, address)?;
        if targets.is_empty() {
            out.addresses.push(address.clone());
            return Ok(());
        }
        if depth == MAX_DEPTH {
            out.errors.push(format!(
                "550 5.4.6 mapping loop for {address} in table {}",
                self.table
            ));
            return Ok(());
        }
        let mut produced = false;
        for text in targets {
            let target = Target::parse(&text).map_err(|e| {
                MailetError::new(format!("table {}: bad target {text:?}: {e}", self.table))
            })?;
            let next = match target {
                Target::Error { code, text } => {
                    out.errors.push(format!("{code} {text}"));
                    produced = true;
                    continue;
                }
                Target::Address(next) => Some(next),
                Target::User(user) => MailAddress::new(&user, address.domain()).ok(),
                Target::Domain(domain) => address.with_domain(&domain).ok(),
                Target::Regex {
                    pattern,
                    replacement,
                } => rewrite(&pattern, &replacement, address)?,
            };
            let Some(next) = next else { continue };
            produced = true;
            if next == *address {
                // Mapping an address to itself too (keep a copy plus forward): stop here.
                out.addresses.push(next);
            } else {
                self.resolve(&next, ctx, depth + 1, out)?;
            }
        }
        if !produced {
            out.addresses.push(address.clone());
        }
        Ok(())
    }
}

/// Applies `regex:pattern:replacement` to the whole address; `None` when it does not match or
/// the result is not an address.
fn rewrite(
    pattern: &str,
    replacement: &str,
    address: &MailAddress,
) -> Result<Option<MailAddress>, MailetError> {
    let whole = Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| MailetError::new(format!("bad regular expression {pattern:?}: {e}")))?;
    let text = address.to_string();
    if !whole.is_match(&text) {
        return Ok(None);
    }
    Ok(MailAddress::parse(&whole.replace(&text, replacement)).ok())
}

impl Mailet for VirtualUserTable {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let mut addresses = Vec::new();
        // Refused recipients by reply: each reply leaves in its own copy for `error`.
        let mut refused: BTreeMap<String, Vec<MailAddress>> = BTreeMap::new();
        // The log lines of rewritten recipients, written once the mail has changed.
        let mut mapped = Vec::new();
        for recipient in mail.recipients() {
            let mut one = Resolved::default();
            self.resolve(recipient, ctx, 0, &mut one)?;
            if !one.addresses.is_empty() && one.addresses.as_slice() != [recipient.clone()] {
                mapped.push(
                    Outcome::new(mail.name(), recipient, Status::Mapped)
                        .field("to", join(&one.addresses))
                        .field("table", &self.table),
                );
            }
            addresses.extend(one.addresses);
            for reply in one.errors {
                refused.entry(reply).or_default().push(recipient.clone());
            }
        }
        let mut seen = HashSet::new();
        addresses.retain(|a| seen.insert(a.clone()));
        if addresses.as_slice() == mail.recipients() && refused.is_empty() {
            return Ok(());
        }
        for (reply, recipients) in refused {
            let mut copy = mail.split_off(
                mailroom_mailet::derived_mail_name(mail.name()),
                recipients.clone(),
            );
            copy.set_state(state::ERROR);
            copy.envelope.error_message = Some(reply.clone());
            let name = copy.name().to_string();
            ctx.send_mail(copy)?;
            for rcpt in &recipients {
                let line = Outcome::new(mail.name(), rcpt, Status::Refused)
                    .field("reason", &reply)
                    .field("copy", &name)
                    .field("next", state::ERROR);
                ctx.log(&line.to_string());
            }
        }
        for line in mapped {
            ctx.log(&line.to_string());
        }
        if addresses.is_empty() {
            mail.set_state(state::GHOST);
        }
        mail.set_recipients(addresses);
        Ok(())
    }
}

fn join(addresses: &[MailAddress]) -> String {
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    texts.join(",")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use mailroom_mailet::{Envelope, Message, UserRecord};

    use super::*;

    /// A context with an in-memory table (sources as the server looks them up) that records
    /// the mails sent.
    struct Tables {
        table: HashMap<&'static str, Vec<&'static str>>,
        postmaster: MailAddress,
        sent: Mutex<Vec<Mail>>,
    }

    impl MailetContext for Tables {
        fn is_local_server(&self, domain: &str) -> bool {
            domain == "localhost"
        }
        fn local_user(&self, _: &str) -> Result<Option<UserRecord>, MailetError> {
            Ok(None)
        }
        fn postmaster(&self) -> &MailAddress {
            &self.postmaster
        }
        fn send_mail(&self, mail: Mail) -> Result<(), MailetError> {
            self.sent.lock().unwrap().push(mail);
            Ok(())
        }
        fn store_mail(&self, _: &str, _: &Mail) -> Result<(), MailetError> {
            unreachable!()
        }
        fn deliver_to_inbox(&self, _: &str, _: &[u8], _: &Mail) -> Result<(), MailetError> {
            unreachable!()
        }
        fn address_mappings(
            &self,
            table: &str,
            address: &MailAddress,
        ) -> Result<Vec<String>, MailetError> {
            assert_eq!(table, DEFAULT_TABLE);
            let (user, domain) = (address.local_part(), address.domain());
            for source in [
                format!("{user}@{domain}"),
                format!("{user}@*"),
                format!("*@{domain}"),
            ] {
                if let Some(targets) = self.table.get(source.as_str()) {
                    return Ok(targets.iter().map(|t| t.to_string()).collect());
                }
            }
            Ok(Vec::new())
        }
        fn log(&self, _: &str) {}
    }

    fn run(table: &[(&'static str, &[&'static str])], recipients: &[&str]) -> (Mail, Vec<Mail>) {
        let ctx = Tables {
            table: table.iter().map(|(s, t)| (*s, t.to_vec())).collect(),
            postmaster: MailAddress::parse("postmaster@localhost").unwrap(),
            sent: Mutex::default(),
        };
        let recipients = recipients
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect();
        let mut mail = Mail::new(
            Envelope::new("m1", None, recipients),
            Message::from_bytes(b"Subject: x\r\n\r\nbody\r\n"),
        );
        let mailet = VirtualUserTable {
            table: DEFAULT_TABLE.into(),
        };
        mailet.service(&mut mail, &ctx).unwrap();
        (mail, ctx.sent.into_inner().unwrap())
    }

    fn texts(addresses: &[MailAddress]) -> Vec<String> {
        addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_kind_of_target_and_chains() {
        let (mail, sent) = run(
            &[
                ("sales@localhost", &["alice@localhost", "bob"]),
                ("alice@localhost", &["domain:example.net"]),
                (
                    "*@old.example",
                    &["regex:(.*)@old\\.example:$1@new.example"],
                ),
                ("postmaster@*", &["root@localhost"]),
            ],
            &[
                "sales@localhost",
                "joe@old.example",
                "postmaster@other.example",
                "plain@localhost",
            ],
        );
        assert_eq!(
            texts(mail.recipients()),
            [
                "alice@example.net",
                "bob@localhost",
                "joe@new.example",
                "root@localhost",
                "plain@localhost"
            ]
        );
        assert!(sent.is_empty());
        assert_eq!(mail.state(), state::ROOT);
    }

    #[test]
    fn errors_leave_for_the_error_processor_and_loops_end() {
        let (mail, sent) = run(
            &[
                ("gone@localhost", &["error:550 5.1.1 gone"]),
                ("ping@localhost", &["pong@localhost"]),
                ("pong@localhost", &["ping@localhost"]),
            ],
            &["gone@localhost", "ping@localhost"],
        );
        assert!(mail.recipients().is_empty());
        assert_eq!(mail.state(), state::GHOST);
        let mut replies: Vec<_> = sent
            .iter()
            .map(|m| {
                assert_eq!(m.state(), state::ERROR);
                assert_ne!(m.name(), "m1");
                (
                    texts(m.recipients()),
                    m.envelope.error_message.clone().unwrap(),
                )
            })
            .collect();
        replies.sort();
        assert_eq!(
            replies[0],
            (vec!["gone@localhost".to_string()], "550 5.1.1 gone".into())
        );
        assert_eq!(replies[1].0, ["ping@localhost"]);
        assert!(replies[1].1.contains("mapping loop"), "{}", replies[1].1);
    }

    #[test]
    fn unmapped_mail_is_untouched_and_self_mapping_keeps_a_copy() {
        let (mail, _) = run(
            &[("me@localhost", &["me@localhost", "archive@localhost"])],
            &["me@localhost", "you@localhost"],
        );
        assert_eq!(
            texts(mail.recipients()),
            ["me@localhost", "archive@localhost", "you@localhost"]
        );
    }
}
