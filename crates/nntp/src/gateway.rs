//! Mail → news: the `ToNewsgroup` mailet, a list gateway that posts each mail it gets into
//! newsgroups of the server's news repository.
//!
//! ```xml
//! <mailet match="RecipientIs=rust-list@example.org" class="ToNewsgroup">
//!   <newsgroup>local.rust</newsgroup>       <!-- one group, or several comma-separated -->
//!   <passThrough>false</passThrough>        <!-- default: the mail ends here (ghost) -->
//! </mailet>
//! ```
//!
//! The mail's header section becomes the article's, with `Newsgroups:` set to the configured
//! groups; `Path`, `Xref`, `Control`, `Return-Path` and `Delivered-To` are dropped (a mail
//! never cancels an article); a missing From is the envelope sender, a missing Subject
//! `(no subject)`. Then the rules of POST apply ([`crate::article::prepare`]): the article gets
//! a Message-ID (the mail's own when it has one), Date, Path and Lines. A Message-ID already
//! in the repository counts as posted (the same mail through two gateways, or after a
//! restart); a group that does not exist, or a mail that is no valid article, is a permanent
//! error; a repository failure is temporary (the mail stays in the spool and is retried).

use std::sync::{Arc, OnceLock};

use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{state, Mail, Mailet, MailetConfig, MailetContext, MailetError};
use mailroom_spool::Registry;
use mailroom_store::news::{body_of, header_section};
use mailroom_store::{NewsRepository, StoreError};

use crate::article::{prepare, Injection};

/// What `ToNewsgroup` mailets post through: the news repository, set once it is open (the
/// processor tree is built before the repositories), and the runtime to wait on it from the
/// spool's worker threads.
pub struct NewsGateway {
    news: OnceLock<Arc<dyn NewsRepository>>,
    runtime: Option<tokio::runtime::Handle>,
    /// This server's name in `Path:`.
    host: String,
    /// The right-hand side of generated Message-IDs.
    domain: String,
}

impl NewsGateway {
    /// A gateway posting as `host` with Message-IDs `@domain`, waiting on `runtime`.
    pub fn new(host: &str, domain: &str, runtime: Option<tokio::runtime::Handle>) -> Arc<Self> {
        Arc::new(NewsGateway {
            news: OnceLock::new(),
            runtime,
            host: host.to_string(),
            domain: domain.to_string(),
        })
    }

    /// Sets the repository the mailets post into (once).
    pub fn open(&self, news: Arc<dyn NewsRepository>) {
        let _ = self.news.set(news);
    }
}

/// Registers `ToNewsgroup` in `registry`, its mailets posting through `gateway`.
pub fn register(registry: &mut Registry, gateway: &Arc<NewsGateway>) {
    let gateway = gateway.clone();
    registry
        .add_mailet("ToNewsgroup", move |config: &MailetConfig| {
            let groups = config.required("newsgroup")?.to_string();
            for g in groups.split(',') {
                if !mailroom_store::news::valid_group_name(g.trim()) {
                    return Err(MailetError::new(format!(
                        "mailet ToNewsgroup: <newsgroup> {g:?} is not a valid newsgroup name"
                    )));
                }
            }
            Ok(Box::new(ToNewsgroup {
                gateway: gateway.clone(),
                groups,
                pass_through: config.bool_param("passThrough", false)?,
            }))
        }).about("Posts the mail into <newsgroup> (comma-separated) of the news repository and ghosts it (<passThrough>true lets it go on).", "<mailet match=\"RecipientIs=rust@example.org\" class=\"ToNewsgroup\"><newsgroup>local.rust</newsgroup></mailet>")
        .params(&["newsgroup", "passThrough"]);
}

struct ToNewsgroup {
    gateway: Arc<NewsGateway>,
    groups: String,
    pass_through: bool,
}

/// Header fields of a mail that do not go into the article.
const DROPPED: [&str; 6] = [
    "Newsgroups",
    "Path",
    "Xref",
    "Control",
    "Return-Path",
    "Delivered-To",
];

/// The mail as an article for `groups`: CRLF line ends, the header section rewritten.
pub fn article_of(message: &[u8], groups: &str, sender: Option<&str>) -> Vec<u8> {
    let mut crlf = Vec::with_capacity(message.len() + message.len() / 32);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    let head = header_section(&crlf);
    let body = body_of(&crlf);
    let mut out = format!("Newsgroups: {groups}\r\n").into_bytes();
    let (mut from, mut subject) = (false, false);
    let mut keep = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if keep {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).trim().to_string();
        keep = !DROPPED.iter().any(|d| d.eq_ignore_ascii_case(&name));
        from |= name.eq_ignore_ascii_case("From");
        subject |= name.eq_ignore_ascii_case("Subject");
        if keep {
            out.extend_from_slice(line);
        }
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    if !from {
        out.extend_from_slice(
            format!("From: {}\r\n", sender.unwrap_or("MAILER-DAEMON")).as_bytes(),
        );
    }
    if !subject {
        out.extend_from_slice(b"Subject: (no subject)\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

impl Mailet for ToNewsgroup {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        let (Some(news), Some(runtime)) = (self.gateway.news.get(), &self.gateway.runtime) else {
            return Err(MailetError::temporary(
                "ToNewsgroup: no news repository is open (enable an <nntpserver>)",
            ));
        };
        let message = mail
            .message
            .to_bytes()
            .map_err(|e| MailetError::temporary(format!("ToNewsgroup: reading the mail: {e}")))?;
        let sender = mail.sender().map(ToString::to_string);
        let octets = article_of(&message, &self.groups, sender.as_deref());
        let generated = format!("<{}@{}>", mail.name(), self.gateway.domain);
        let injection = Injection {
            path_host: &self.gateway.host,
            message_id: generated,
            announced: None,
            date: crate::time::rfc5322_date(std::time::SystemTime::now()),
        };
        let prepared = prepare(&octets, &injection).map_err(|why| {
            MailetError::permanent(format!("ToNewsgroup: not a valid article: {}", why.0))
        })?;
        let id = prepared.article.message_id.clone();
        let posted = match runtime.block_on(news.post(&prepared.article)) {
            Ok(numbers) => format!("{numbers:?}"),
            Err(StoreError::AlreadyExists(_)) => "already posted".to_string(),
            Err(StoreError::NotFound(_)) => {
                return Err(MailetError::permanent(format!(
                    "ToNewsgroup: none of the newsgroups {} exists",
                    self.groups
                )))
            }
            Err(e) => return Err(MailetError::temporary(format!("ToNewsgroup: {e}"))),
        };
        for rcpt in mail.recipients() {
            ctx.log(
                &Outcome::new(mail.name(), rcpt, Status::Stored)
                    .field("newsgroups", &self.groups)
                    .field("message_id", &id)
                    .field("numbers", &posted)
                    .to_string(),
            );
        }
        if !self.pass_through {
            mail.set_state(state::GHOST);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_becomes_an_article() {
        let mail = b"Return-Path: <a@b>\nFrom: A <a@b>\nNewsgroups: evil.group\nControl: cancel <x@y>\nTo: list@x\n  continued\nSubject: hi\n\nbody\n";
        let article = String::from_utf8(article_of(mail, "local.list", Some("a@b"))).unwrap();
        assert_eq!(
            article,
            "Newsgroups: local.list\r\nFrom: A <a@b>\r\nTo: list@x\r\n  continued\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        let bare = String::from_utf8(article_of(b"To: x\r\n\r\nb\r\n", "g", None)).unwrap();
        assert_eq!(
            bare,
            "Newsgroups: g\r\nTo: x\r\nFrom: MAILER-DAEMON\r\nSubject: (no subject)\r\n\r\nb\r\n"
        );
    }
}
