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
//! The same resolution serves James's `XMLVirtualUserTable` and the `db://` form of
//! `JDBCVirtualUserTable` (see `vut.rs`): only where the targets come from differs ([`Lookup`]),
//! and, as James's `AbstractVirtualUserTable` does, mapped targets in other domains leave in a
//! mail of their own, sent from this server (so that relay checks let it through), marked so
//! that the table does not map it again.
//!
//! Each recipient rewritten logs `status=mapped` with its new addresses, each refused one
//! `status=refused` with the reply and the copy that goes to `error` (see
//! [`mailroom_mailet::outcome`]).

use std::collections::{BTreeMap, HashSet};

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, AttributeValue, Mail, MailAddress, Mailet, MailetConfig,
    MailetContext, MailetError,
};
use mailroom_store::mappings::{Target, DEFAULT_TABLE};
use regex::Regex;

use crate::Registry;

/// How many times a mapped address is mapped again.
const MAX_DEPTH: usize = 10;

/// The attribute that marks a mail a James-form table sent for its remote targets: the table
/// lets it pass once (James's `AbstractVirtualUserTable.mapped`).
pub(super) const MAPPED_MARKER: &str =
    "org.apache.james.transport.mailets.AbstractVirtualUserTable.mapped";

pub(super) fn register(registry: &mut Registry) {
    for name in ["VirtualUserTable", "JDBCVirtualUserTable"] {
        registry
            .add_mailet(name, |c| {
                if c.param("table").is_some_and(|t| t.starts_with("db://")) {
                    return Err(MailetError::new(format!(
                        "{}: a db:// table needs the server's data sources (not available here)",
                        c.name
                    )));
                }
                store_form(c)
            })
            .params(&["table", "sqlquery"])
            .about(
                "Rewrites recipients through a table of the mappings repository (RemoteManager \
                 addmapping): user@dom, user@*, *@dom sources; address, user, domain:, regex:, \
                 error: targets; chains followed up to 10 deep. JDBCVirtualUserTable with a \
                 db://SOURCE/TABLE table reads James's VirtualUserTable table instead.",
                "<mailet match=\"All\" class=\"VirtualUserTable\"><table>default</table></mailet>",
            );
    }
}

/// `VirtualUserTable` / `JDBCVirtualUserTable` on a table of the mappings repository.
pub(super) fn store_form(c: &MailetConfig) -> Result<Box<dyn Mailet>, MailetError> {
    if c.param("sqlquery").is_some() {
        return Err(MailetError::new(format!(
            "{}: <sqlquery> is James's, for a <table> of the form db://DATA-SOURCE/TABLE",
            c.name
        )));
    }
    let table = c.param("table").unwrap_or(DEFAULT_TABLE);
    if table.is_empty() || table.contains(char::is_whitespace) {
        return Err(MailetError::new(format!(
            "{}: <table> {table:?} is not a table name",
            c.name
        )));
    }
    Ok(Box::new(VirtualUserTable::store(table)))
}

/// Where a table's targets for an address come from.
pub(super) trait Lookup: Send + Sync {
    /// The target texts of `address` (in [`Target::parse`]'s syntax), empty when unmapped.
    fn targets(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<String>, MailetError>;

    /// The table's name, for the log.
    fn name(&self) -> &str;
}

/// A table of the mappings repository.
struct StoreTable(String);

impl Lookup for StoreTable {
    fn targets(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<String>, MailetError> {
        ctx.address_mappings(&self.0, address)
    }
    fn name(&self) -> &str {
        &self.0
    }
}

/// A virtual user table: where its targets come from, and what it does with remote ones.
/// Mailroom's own tables follow chains of mappings; James's forms map once, as James does.
pub(super) struct VirtualUserTable {
    lookup: Box<dyn Lookup>,
    /// James's forms: mapped targets in other domains leave in a mail of their own.
    james: bool,
}

/// Where one recipient ends up.
#[derive(Default)]
struct Resolved {
    addresses: Vec<MailAddress>,
    /// Refusals: the reply text, as the error message of the mail that carries them.
    errors: Vec<String>,
}

impl VirtualUserTable {
    /// A table of the mappings repository (Mailroom's own form).
    fn store(table: &str) -> Self {
        VirtualUserTable {
            lookup: Box::new(StoreTable(table.to_string())),
            james: false,
        }
    }

    /// A table in James's form (`XMLVirtualUserTable`, `JDBCVirtualUserTable` on `db://`).
    pub(super) fn james(lookup: Box<dyn Lookup>) -> Self {
        VirtualUserTable {
            lookup,
            james: true,
        }
    }

    fn resolve(
        &self,
        address: &MailAddress,
        ctx: &dyn MailetContext,
        depth: usize,
        out: &mut Resolved,
    ) -> Result<(), MailetError> {
        if self.james && depth > 0 {
            // James maps a recipient once: a target is not looked up again (a catch-all row
            // must not swallow the addresses other rows map to).
            out.addresses.push(address.clone());
            return Ok(());
        }
        let targets = self.lookup.targets(address, ctx)?;
        if targets.is_empty() {
            out.addresses.push(address.clone());
            return Ok(());
        }
        if depth == MAX_DEPTH {
            out.errors.push(format!(
                "550 5.4.6 mapping loop for {address} in table {}",
                self.lookup.name()
            ));
            return Ok(());
        }
        let mut produced = false;
        for text in targets {
            let target = Target::parse(&text).map_err(|e| {
                MailetError::new(format!(
                    "table {}: bad target {text:?}: {e}",
                    self.lookup.name()
                ))
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
        if self.james && mail.envelope.attributes.remove(MAPPED_MARKER).is_some() {
            // Sent by a table for its remote targets: mapped already.
            return Ok(());
        }
        let mut addresses = Vec::new();
        // James's forms: mapped targets in other domains, sent on in a mail of their own.
        let mut remote = Vec::new();
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
                        .field("table", self.lookup.name()),
                );
                if self.james {
                    let (here, away): (Vec<_>, Vec<_>) = one
                        .addresses
                        .into_iter()
                        .partition(|a| ctx.is_local_server(a.domain()));
                    one.addresses = here;
                    remote.extend(away);
                }
            }
            addresses.extend(one.addresses);
            for reply in one.errors {
                refused.entry(reply).or_default().push(recipient.clone());
            }
        }
        let mut seen = HashSet::new();
        addresses.retain(|a| seen.insert(a.clone()));
        if addresses.as_slice() == mail.recipients() && refused.is_empty() && remote.is_empty() {
            return Ok(());
        }
        if !remote.is_empty() {
            let mut seen = HashSet::new();
            remote.retain(|a| seen.insert(a.clone()));
            let mut copy = mail.split_off(derived_mail_name(mail.name()), remote);
            copy.set_state(state::ROOT);
            copy.envelope.remote_addr = "127.0.0.1".into();
            copy.envelope.remote_host = "localhost".into();
            copy.set_attribute(MAPPED_MARKER, AttributeValue::Bool(true));
            ctx.send_mail(copy)?;
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
        let mailet = VirtualUserTable::store(DEFAULT_TABLE);
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
