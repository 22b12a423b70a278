//! `listspool`, `flushspool`, `deletespool`: the mails of the spool or of a mail repository
//! (the error repository, where the `error` processor stores what could not be processed).
//!
//! The repository is named by its URL, as in `ToRepository` (`file://var/mail/error/`); the
//! binary's opener admits only the repositories its configuration names. A selection is
//! narrowed by `state=<state>`, by `key=<name>` and by `header=<name> regex=<pattern>` (a mail
//! matches when one of its values of that header matches the whole pattern). `listspool` shows
//! mails of every state; `flushspool` and `deletespool`, as in James, act only on mails in
//! state `error` unless `state=<state>` (or `state=all`) says otherwise, so that an old script
//! run on the spool cannot empty the queue. Flushing a mail of a repository sends it back to the spool in
//! state `root`, with its error message cleared: it is stored in the spool first and removed
//! from the repository after, so a crash in between duplicates it but never loses it.
//! Flushing a mail of a spool — the main spool, or a RemoteDelivery outgoing spool — makes it
//! due at once where it is ([`mailroom_store::SpoolRepository::make_due`]: a mail a worker
//! holds is left to it and not counted), so that its next attempt (a remote delivery's retry)
//! is made now.
//!
//! A listing keeps James's line, `key: <key> sender: <sender> recipient: <r1> <r2> ...`, which
//! scripts parse, and adds below each an indented line with the mail's state and error
//! message (`    state: error error: 550 ...`), which no James line starts like; in a spool,
//! a mail waiting for a later attempt also has its time there
//! (`    state: root next: Tue, 01 Dec 2026 16:20:00 GMT error: 421 ...`).

use std::time::SystemTime;

use mailroom_mailet::Mail;
use mailroom_store::admin::{flush_to_spool, one_line};
use regex::Regex;

use crate::session::Out;
use crate::{Console, Opened};

const LIST_USAGE: &str =
    "Usage: LISTSPOOL [spoolrepositoryname] ([header=headername] [regex=regexValue])";
const FLUSH_USAGE: &str = "Usage: FLUSHSPOOL [spoolrepositoryname] ([key=mKey] | [header=headername] [regex=regexValue] )";
const DELETE_USAGE: &str = "Usage: DELETESPOOL [spoolrepositoryname] ([key=mKey] | [header=headername] [regex=regexValue])";

/// A selected mail: its name and its `listspool` line.
type Selected = (String, String);

/// Which mails of the repository a command acts on.
struct Selection {
    url: String,
    key: Option<String>,
    header: Option<(String, Regex)>,
    state: Option<String>,
}

impl Selection {
    /// Parses `<url> [state=s] [key=k | header=h regex=r]`; `allow_key` for flush and delete,
    /// which act on `error` mails unless a `state=` says otherwise (`all`: every state).
    fn parse(argument: Option<&str>, allow_key: bool) -> Option<Selection> {
        let args: Vec<&str> = argument?.split(' ').filter(|a| !a.is_empty()).collect();
        let (url, rest) = args.split_first()?;
        let mut selection = Selection {
            url: url.to_string(),
            key: None,
            header: None,
            state: None,
        };
        let (mut header, mut regex) = (None, None);
        for arg in rest {
            let (name, value) = arg.split_once('=')?;
            let slot = match name {
                "key" if allow_key => &mut selection.key,
                "state" => &mut selection.state,
                "header" => &mut header,
                "regex" => &mut regex,
                _ => return None,
            };
            if slot.replace(value.to_string()).is_some() {
                return None;
            }
        }
        match selection.state.as_deref() {
            Some("all") => selection.state = None,
            None if allow_key => selection.state = Some(mailroom_mailet::state::ERROR.into()),
            _ => {}
        }
        match (header, regex) {
            (None, None) => {}
            (Some(header), Some(regex)) => {
                let whole = Regex::new(&format!("^(?:{regex})$")).ok()?;
                selection.header = Some((header, whole));
            }
            _ => return None,
        }
        Some(selection)
    }

    fn matches(&self, mail: &Mail) -> bool {
        self.state
            .as_ref()
            .is_none_or(|state| mail.state() == state)
            && self.key.as_ref().is_none_or(|key| mail.name() == key)
            && self.header.as_ref().is_none_or(|(name, regex)| {
                mail.message
                    .headers(name)
                    .iter()
                    .any(|value| regex.is_match(value.trim()))
            })
    }

    /// The repository and the names of its selected mails, each with its listing line. Mails
    /// are read one at a time and dropped: a retrieved mail keeps its file open, and a large
    /// error repository must not exhaust the process's file descriptors. `Err` carries the
    /// reason to print.
    async fn select(&self, console: &Console) -> Result<(Opened, Vec<Selected>), String> {
        // Opening may create a directory: not on a runtime thread.
        let (open, url) = (console.open_repository.clone(), self.url.clone());
        let opened = tokio::task::spawn_blocking(move || open(&url))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let repository = opened.mails();
        let mut selected = Vec::new();
        for name in repository.list().await.map_err(|e| e.to_string())? {
            // A mail removed since the listing is simply not selected.
            if let Some(mail) = repository
                .retrieve(&name)
                .await
                .map_err(|e| e.to_string())?
            {
                if self.matches(&mail) {
                    let next = match &opened {
                        Opened::Spool(spool) => {
                            spool.next_attempt(&name).await.map_err(|e| e.to_string())?
                        }
                        Opened::Mail(_) => None,
                    };
                    selected.push((name, listing(&mail, next)));
                }
            }
        }
        Ok((opened, selected))
    }
}

/// `key: <key> sender: <sender> recipient: <r1> <r2> ...` (James's line), then
/// `    state: <state>[ next: <time>][ error: <message>]`.
fn listing(mail: &Mail, next_attempt: Option<SystemTime>) -> String {
    let sender = mail
        .sender()
        .map_or_else(|| "<>".to_string(), ToString::to_string);
    let mut line = format!("key: {} sender: {sender} recipient:", mail.name());
    for recipient in mail.recipients() {
        line.push(' ');
        line.push_str(&recipient.to_string());
    }
    line.push_str("\r\n    state: ");
    line.push_str(&one_line(mail.state()));
    if let Some(at) = next_attempt {
        line.push_str(" next: ");
        line.push_str(&httpdate::fmt_http_date(at));
    }
    if let Some(error) = &mail.envelope.error_message {
        line.push_str(" error: ");
        line.push_str(&one_line(error));
    }
    line
}

/// `listspool <url> [header=h regex=r]`.
pub async fn list(console: &Console, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(selection) = Selection::parse(argument, false) else {
        return out.line(LIST_USAGE);
    };
    let selected = match selection.select(console).await {
        Ok((_, selected)) => selected,
        Err(e) => return out.line(format!("Error opening the spoolrepository {e}")),
    };
    if !selected.is_empty() {
        out.line("Messages in spool:");
    }
    for (_, line) in &selected {
        out.line(line);
    }
    out.line(format!("Number of spooled mails: {}", selected.len()));
}

/// `flushspool <url> [key=k | header=h regex=r]`: back to the spool, state `root`.
pub async fn flush(console: &Console, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(selection) = Selection::parse(argument, true) else {
        return out.line(FLUSH_USAGE);
    };
    let (opened, selected) = match selection.select(console).await {
        Ok(selected) => selected,
        Err(e) => return out.line(format!("Error accessing the spoolrepository {e}")),
    };
    let mut flushed = 0;
    for (name, _) in selected {
        let moved = match &opened {
            Opened::Spool(spool) => spool.make_due(&name).await,
            Opened::Mail(repository) => {
                let select = |mail: &Mail| selection.matches(mail);
                flush_to_spool(&*console.spool, &**repository, &name, &select).await
            }
        };
        match moved {
            Ok(true) => flushed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(mail = %name, error = %e, "RemoteManager: flushing failed");
                out.line(format!("Error flushing the mail with key: {name} {e}"));
            }
        }
    }
    tracing::info!(url = %selection.url, flushed, "RemoteManager: spool flushed");
    out.line(format!("Number of flushed mails: {flushed}"));
}

/// `deletespool <url> [key=k | header=h regex=r]`.
pub async fn delete(console: &Console, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(selection) = Selection::parse(argument, true) else {
        return out.line(DELETE_USAGE);
    };
    let (opened, selected) = match selection.select(console).await {
        Ok(selected) => selected,
        Err(e) => return out.line(format!("Error opening the spoolrepository {e}")),
    };
    let repository = opened.mails();
    let mut deleted = 0;
    for (name, _) in &selected {
        match repository.remove(name).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => out.line(format!("Error deleting the mail with key: {name} {e}")),
        }
    }
    tracing::info!(url = %selection.url, deleted, "RemoteManager: mails deleted");
    out.line(format!("Number of deleted mails: {deleted}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::{Envelope, MailAddress, Message};

    #[test]
    fn selections_take_state_key_and_header_in_any_order() {
        let s =
            Selection::parse(Some("file://x/ state=error header=X-Tag regex=o.e"), false).unwrap();
        assert_eq!(s.state.as_deref(), Some("error"));
        assert!(s.header.is_some() && s.key.is_none());
        assert!(Selection::parse(Some("file://x/ key=k"), false).is_none());
        assert!(Selection::parse(Some("file://x/ key=k state=root"), true).is_some());
        for bad in [
            "file://x/ header=X",
            "file://x/ state=a state=b",
            "file://x/ other=1",
            "",
        ] {
            assert!(Selection::parse(Some(bad), true).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_listing_keeps_james_line_and_adds_state_and_error_below() {
        let mut mail = Mail::new(
            Envelope::new(
                "Mail1",
                MailAddress::parse("a@example.org").ok(),
                vec![MailAddress::parse("b@localhost").unwrap()],
            ),
            Message::from_bytes(b"Subject: x\r\n\r\n"),
        );
        mail.set_state("error");
        mail.envelope.error_message = Some("550 no\r\nsuch".into());
        assert_eq!(
            listing(&mail, None),
            "key: Mail1 sender: a@example.org recipient: b@localhost\r\n    state: error error: 550 no  such"
        );
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        assert!(listing(&mail, Some(at))
            .ends_with("state: error next: Fri, 15 Jan 2027 08:00:00 GMT error: 550 no  such"));
        let listed = Selection::parse(Some("u"), false).unwrap();
        let root = Selection::parse(Some("u state=root"), true).unwrap();
        assert!(listed.matches(&mail) && !root.matches(&mail));
        // Flush and delete act on error mails unless told otherwise, as in James.
        mail.set_state("root");
        let flushed = Selection::parse(Some("u"), true).unwrap();
        let all = Selection::parse(Some("u state=all"), true).unwrap();
        assert!(!flushed.matches(&mail) && root.matches(&mail) && all.matches(&mail));
    }
}
