//! UsersRepositoryAliasingForwarding: applies the users repository's alias and forward
//! settings to the recipients, as James 2.3 does before its `ToMultiRepository`, without
//! delivering. The settings are read exactly as `LocalDelivery` reads them (`delivery.rs`):
//!
//! * a user who forwards: a copy goes to the forward address (`status=forwarded`) and the
//!   recipient leaves the mail;
//! * a user with an alias: the recipient becomes the alias user, in the same domain;
//! * a forwarding loop, or an alias that names no user: the recipient leaves in a copy that
//!   goes to the `error` processor with the reason;
//! * anyone else (other domains, unknown users): stays as is.
//!
//! `Return-Path:` is set from the sender, as James does. A mail left with no recipient is
//! ghosted. `<enableAliases>` / `<enableForwarding>` false turn those settings off (they can
//! only narrow `<James>`'s `<usernames>` flags, which the users repository already applies);
//! `<ignoreCase>` is the users repository's (`<usernames ignoreCase>`), accepted as a check.

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError,
};

use super::delivery::{forward, target, Settings, Target};
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_mailet("UsersRepositoryAliasingForwarding", |c| {
            Ok(Box::new(AliasingForwarding::new(c)?))
        })
        .params(&[
            "enableAliases",
            "enableForwarding",
            "ignoreCase",
            "usersRepository",
        ])
        .about(
            "Applies the users repository's settings without delivering: a forwarding user's \
             copy is sent to the forward address and the recipient removed; an aliased \
             recipient becomes the alias user. <enableAliases>/<enableForwarding> false turn \
             either off.",
            "<mailet match=\"RecipientIsLocal\" class=\"UsersRepositoryAliasingForwarding\"/>",
        );
}

struct AliasingForwarding {
    settings: Settings,
}

impl AliasingForwarding {
    fn new(c: &MailetConfig) -> Result<AliasingForwarding, MailetError> {
        c.bool_param("ignoreCase", false)?;
        match c.param("usersRepository").map(str::trim) {
            None | Some("") | Some("LocalUsers") => {}
            Some(other) => {
                return Err(MailetError::new(format!(
                    "{}: <usersRepository> {other:?}: only the server's users repository \
                     (LocalUsers) is available",
                    c.name
                )))
            }
        }
        Ok(AliasingForwarding {
            settings: Settings {
                aliases: c.bool_param("enableAliases", true)?,
                forwarding: c.bool_param("enableForwarding", true)?,
            },
        })
    }
}

impl Mailet for AliasingForwarding {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let return_path = format!(
            "<{}>",
            mail.sender().map(|s| s.to_string()).unwrap_or_default()
        );
        mail.message.remove_header("Return-Path");
        mail.message.prepend_header("Return-Path", &return_path);
        let mut kept = Vec::new();
        let mut failed: Vec<(MailAddress, String)> = Vec::new();
        // Recipients that met a temporary fault (the users store away, the spool full): they
        // stay in the mail, which is tried again. Failing the whole mail at once instead
        // would send the forwarded copies made so far a second time.
        let mut retry: Vec<(MailAddress, String)> = Vec::new();
        for rcpt in mail.recipients() {
            let step = match target(rcpt, mail, ctx, self.settings) {
                Ok(Target::Forward(to)) => forward(mail, rcpt, &to, ctx).map(|()| None),
                other => other.map(Some),
            };
            let found = match step {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) if e.is_temporary() => {
                    retry.push((rcpt.clone(), e.to_string()));
                    continue;
                }
                Err(e) => {
                    failed.push((rcpt.clone(), e.to_string()));
                    continue;
                }
            };
            match found {
                Target::Unknown(_) => kept.push(rcpt.clone()),
                Target::Inbox(user) if user == rcpt.local_part() => kept.push(rcpt.clone()),
                Target::Inbox(user) => {
                    let to = MailAddress::new(&user, rcpt.domain())
                        .map_err(|e| MailetError::new(format!("alias {user}: {e}")))?;
                    let line = Outcome::new(mail.name(), rcpt, Status::Mapped).field("to", &to);
                    ctx.log(&line.to_string());
                    kept.push(to);
                }
                Target::Forward(_) => unreachable!("forwarded above"),
                Target::Fail(why) => failed.push((rcpt.clone(), why.to_string())),
            }
        }
        if !failed.is_empty() {
            let why: Vec<String> = failed.iter().map(|(r, w)| format!("{r}: {w}")).collect();
            let reason = format!("UsersRepositoryAliasingForwarding: {}", why.join("; "));
            let mut copy = mail.split_off(
                derived_mail_name(mail.name()),
                failed.iter().map(|(r, _)| r.clone()).collect(),
            );
            copy.set_state(state::ERROR);
            copy.envelope.error_message = Some(reason.clone());
            let name = copy.name().to_string();
            if let Err(e) = ctx.send_mail(copy) {
                // Not in the spool: these recipients stay with the mail and are tried again.
                retry.extend(failed.into_iter().map(|(r, why)| {
                    (
                        r,
                        format!("{why}, and not sent to the error processor: {e}"),
                    )
                }));
                failed = Vec::new();
            }
            for (rcpt, why) in &failed {
                let line = Outcome::new(mail.name(), rcpt, Status::Failed)
                    .field("reason", why)
                    .field("copy", &name)
                    .field("next", state::ERROR);
                ctx.log(&line.to_string());
            }
        }
        let mut seen = std::collections::HashSet::new();
        kept.retain(|a| seen.insert(a.clone()));
        if !retry.is_empty() {
            // Those kept are mapped again next time, which changes nothing; those forwarded
            // or sent to `error` have left the mail.
            let why: Vec<String> = retry.iter().map(|(r, w)| format!("{r}: {w}")).collect();
            kept.extend(retry.into_iter().map(|(r, _)| r));
            mail.set_recipients(kept);
            return Err(MailetError::temporary(format!(
                "UsersRepositoryAliasingForwarding: {}",
                why.join("; ")
            )));
        }
        if kept.is_empty() {
            mail.set_state(state::GHOST);
        }
        mail.set_recipients(kept);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mailroom_mailet::{Envelope, Message};

    use super::*;
    use crate::mailets::testing::Recorder;

    /// Users: `fwd` forwards to `far@remote.example`, `al` is an alias of `main`, `bad` an
    /// alias of nobody, `main` plain.
    fn users() -> Recorder {
        Recorder::with_users(
            "example.org",
            &[
                ("fwd", None, Some("far@remote.example")),
                ("al", Some("main"), None),
                ("bad", Some("ghost"), None),
                ("main", None, None),
            ],
        )
    }

    fn run(params: &[(&str, &str)], recipients: &[&str]) -> (Mail, Vec<Mail>) {
        let config = MailetConfig {
            name: "UsersRepositoryAliasingForwarding".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        let mailet = AliasingForwarding::new(&config).unwrap();
        let ctx = users();
        let recipients = recipients
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect();
        let mut mail = Mail::new(
            Envelope::new(
                "m1",
                MailAddress::parse("s@remote.example").ok(),
                recipients,
            ),
            Message::from_bytes(b"Return-Path: <forged@x>\r\nSubject: x\r\n\r\nbody\r\n"),
        );
        mail.envelope.remote_addr = "203.0.113.5".into();
        mail.envelope.remote_host = "outside.example".into();
        mailet.service(&mut mail, &ctx).unwrap();
        (mail, ctx.sent.into_inner().unwrap())
    }

    fn texts(addresses: &[MailAddress]) -> Vec<String> {
        addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn aliases_forwards_and_failures() {
        let (mail, sent) = run(
            &[],
            &[
                "fwd@example.org",
                "al@example.org",
                "main@example.org",
                "bad@example.org",
                "who@example.org",
                "x@remote.example",
            ],
        );
        assert_eq!(
            texts(mail.recipients()),
            ["main@example.org", "who@example.org", "x@remote.example"]
        );
        assert_eq!(mail.message.headers("Return-Path"), ["<s@remote.example>"]);
        assert_eq!(sent.len(), 2);
        assert_eq!(texts(sent[0].recipients()), ["far@remote.example"]);
        // Sent by the server, as James's sendMail: relay checks on the client's address
        // (the stock config's RemoteAddrNotInNetwork=127.0.0.1) let the forward through.
        assert_eq!(sent[0].envelope.remote_addr, "127.0.0.1");
        assert_eq!(
            sent[0].message.header("Delivered-To").as_deref(),
            Some("fwd@example.org")
        );
        assert_eq!(sent[1].state(), state::ERROR);
        assert_eq!(texts(sent[1].recipients()), ["bad@example.org"]);
        assert!(sent[1]
            .envelope
            .error_message
            .as_deref()
            .unwrap()
            .contains("alias names no existing user"));
    }

    #[test]
    fn a_temporary_fault_keeps_the_recipient_and_sends_no_forward_twice() {
        let config = MailetConfig {
            name: "UsersRepositoryAliasingForwarding".into(),
            params: BTreeMap::new(),
        };
        let mailet = AliasingForwarding::new(&config).unwrap();
        let mut ctx = users();
        ctx.unreachable_users.push("flaky");
        let recipients = ["fwd@example.org", "flaky@example.org", "al@example.org"]
            .iter()
            .map(|r| MailAddress::parse(r).unwrap())
            .collect();
        let mut mail = Mail::new(
            Envelope::new(
                "m1",
                MailAddress::parse("s@remote.example").ok(),
                recipients,
            ),
            Message::from_bytes(b"Subject: x\r\n\r\nbody\r\n"),
        );
        let err = mailet.service(&mut mail, &ctx).unwrap_err();
        assert!(err.is_temporary(), "{err}");
        // The forward went out once and fwd has left the mail, so that the retry does not
        // forward again; the alias is already mapped; flaky waits in the spool.
        assert_eq!(ctx.sent().len(), 1);
        assert_eq!(
            texts(mail.recipients()),
            ["main@example.org", "flaky@example.org"]
        );
        assert_ne!(mail.state(), state::GHOST);
    }

    #[test]
    fn settings_turned_off_and_parameters_checked() {
        let (mail, sent) = run(
            &[("enableAliases", "false"), ("enableForwarding", "false")],
            &["fwd@example.org", "al@example.org"],
        );
        assert_eq!(
            texts(mail.recipients()),
            ["fwd@example.org", "al@example.org"]
        );
        assert!(sent.is_empty());
        let (mail, _) = run(&[], &["fwd@example.org"]);
        assert_eq!(mail.state(), state::GHOST);
        for bad in [
            ("enableAliases", "maybe"),
            ("ignoreCase", "2"),
            ("usersRepository", "Other"),
        ] {
            let config = MailetConfig {
                name: "UsersRepositoryAliasingForwarding".into(),
                params: [(bad.0.to_string(), bad.1.to_string())].into(),
            };
            assert!(AliasingForwarding::new(&config).is_err(), "{bad:?}");
        }
    }
}
