//! One `<fetch>` task: its accounts (`<account>` and `<alllocal>`), one POP3 session per
//! account per run, James's filters and dispositions, and the spool.
//!
//! Per message: RETR is read up to the end of the header section, the rules decide, and a
//! message that is accepted streams into `SpoolRepository::incoming()` (with
//! `X-fetched-from: TASK` first) and is committed. Only then is its UID recorded as delivered
//! (fsync'd at once when the message is kept; else with the session's others before QUIT, which
//! is what makes DELE take effect) and, unless it is kept, DELE sent. A UID recorded as delivered is never fetched
//! again: it is only deleted (a crash came between the commit and QUIT). Any error in a session
//! ends that session without deleting anything not yet durable; the next interval retries.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mailroom_config::fetchmail::{Disposition, FetchTask, Rejection};
use mailroom_mailet::{AttributeValue, Envelope, MailAddress, MemoryBody, Message};
use mailroom_store::{SpoolRepository, UsersRepository};

use crate::client::{self, Client, Options};
use crate::rules::{self, ATTRIBUTE_PREFIX, FETCHED_FROM};
use crate::uidl::{self, Mark, UidStore};

/// What a task needs from the server.
pub struct Env {
    /// Where fetched mail goes.
    pub spool: Arc<dyn SpoolRepository>,
    /// Local users (`<alllocal>`, `<userundefined>`).
    pub users: Arc<dyn UsersRepository>,
    /// Whether a domain is one of ours (`<remoterecipient>`).
    pub is_local_domain: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The directory of the UIDL records (`var/fetchmail` under the home).
    pub state_dir: PathBuf,
    /// The domain for a sender without one when the task has no `<defaultdomain>`.
    pub default_domain: String,
}

/// One remote account of a task.
#[derive(Clone, Debug)]
pub struct Account {
    /// Remote login.
    pub user: String,
    password: String,
    /// The fixed local recipient.
    pub recipient: String,
    ignore_rcpt_header: bool,
    custom_rcpt_header: Option<String>,
}

/// What one run of a task did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Accounts whose session ended cleanly.
    pub accounts_ok: usize,
    /// Accounts whose session failed (connection, login, protocol, spool).
    pub accounts_failed: usize,
    /// Messages committed to the spool.
    pub fetched: usize,
    /// Messages rejected by a filter.
    pub rejected: usize,
}

/// What happened to one message.
enum Outcome {
    /// Committed to the spool under this name.
    Spooled(String),
    /// Refused by a filter (and why).
    Rejected(&'static str, Disposition),
    /// Recipient not found, deferred to the next run.
    Deferred,
    /// No valid envelope could be made.
    Undeliverable(String),
}

/// A configured task, ready to run.
pub struct Task {
    config: FetchTask,
    env: Arc<Env>,
    options: Options,
    /// Messages whose recipient was not found once (`<recipientnotfound defer>`).
    deferred: Mutex<HashSet<(String, String)>>,
    /// One run at a time (the interval and `fetchmail run` may meet).
    running: tokio::sync::Mutex<()>,
}

impl Task {
    /// Prepares `config`'s task: its TLS settings are read here (an unreadable `<cafile>` is
    /// an error).
    pub fn new(config: FetchTask, env: Arc<Env>) -> Result<Task, String> {
        let tls = if config.trust_all {
            tracing::warn!(task = %config.name, "mail.pop3.ssl.trust=\"*\": the server's \
                certificate is NOT verified (insecure)");
            crate::tls::trust_all()
        } else {
            match &config.ca_file {
                Some(ca) => crate::tls::verifying(ca)
                    .map_err(|e| format!("fetch task {}: <cafile> {e}", config.name))?,
                None => crate::tls::verifying(std::path::Path::new(crate::tls::SYSTEM_BUNDLE))
                    .unwrap_or_else(|e| {
                        // Plain POP3 still works; any TLS will fail its verification.
                        tracing::warn!(task = %config.name, error = %e, "no system CA bundle: \
                            TLS servers cannot be verified; name a <cafile>");
                        crate::tls::no_roots()
                    }),
            }
        };
        let options = Options {
            host: config.host.clone(),
            port: config.port,
            implicit_tls: config.implicit_tls,
            start_tls: config.start_tls,
            apop: config.apop,
            tls,
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
        };
        Ok(Task {
            config,
            env,
            options,
            deferred: Mutex::new(HashSet::new()),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The interval between runs.
    pub fn interval(&self) -> std::time::Duration {
        self.config.interval
    }

    /// The accounts of this run: the `<account>`s, then one per local user for `<alllocal>`.
    pub async fn accounts(&self) -> Vec<Account> {
        let mut accounts: Vec<Account> = self
            .config
            .accounts
            .iter()
            .map(|a| Account {
                user: a.user.clone(),
                password: a.password.expose().to_string(),
                recipient: a.recipient.clone(),
                ignore_rcpt_header: a.ignore_rcpt_header,
                custom_rcpt_header: a.custom_rcpt_header.clone(),
            })
            .collect();
        if let Some(all) = &self.config.all_local {
            match self.env.users.list().await {
                Ok(users) => accounts.extend(users.into_iter().map(|u| Account {
                    user: format!("{}{u}{}", all.user_prefix, all.user_suffix),
                    password: all.password.expose().to_string(),
                    recipient: format!("{}{u}{}", all.recipient_prefix, all.recipient_suffix),
                    ignore_rcpt_header: all.ignore_rcpt_header,
                    custom_rcpt_header: all.custom_rcpt_header.clone(),
                })),
                Err(e) => tracing::warn!(task = %self.config.name, error = %e,
                    "<alllocal>: cannot list the local users"),
            }
        }
        accounts
    }

    /// Runs the task once over every account; a failing account is logged and the others go
    /// on.
    pub async fn run_once(&self) -> Summary {
        let _one = self.running.lock().await;
        let mut summary = Summary::default();
        for account in self.accounts().await {
            match self.fetch_account(&account, &mut summary).await {
                Ok(()) => summary.accounts_ok += 1,
                Err(e) => {
                    summary.accounts_failed += 1;
                    metrics::counter!("mailroom_fetchmail_account_failures_total").increment(1);
                    tracing::warn!(task = %self.config.name, account = %account.user,
                        host = %self.config.host, port = self.config.port, error = %e,
                        "fetch failed; retried at the next interval");
                }
            }
        }
        metrics::counter!("mailroom_fetchmail_runs_total").increment(1);
        summary
    }

    async fn fetch_account(&self, account: &Account, summary: &mut Summary) -> Result<(), String> {
        let mut client = Client::connect(&self.options)
            .await
            .map_err(|e| e.to_string())?;
        client
            .login(&self.options, &account.user, &account.password)
            .await
            .map_err(|e| e.to_string())?;
        let uids = match client.uidl().await {
            Ok(uids) => Some(uids),
            Err(client::Error::Refused { .. }) => {
                tracing::warn!(task = %self.config.name, account = %account.user,
                    "the server has no UIDL: kept messages will be fetched again each run");
                None
            }
            Err(e) => return Err(e.to_string()),
        };
        let sizes = client.list().await.map_err(|e| e.to_string())?;
        let skipped = sizes.skipped.max(uids.as_ref().map_or(0, |u| u.skipped));
        if skipped > 0 {
            tracing::warn!(task = %self.config.name, account = %account.user,
                listed = sizes.entries.len() + skipped, handled = client::MAX_MESSAGES,
                "mailbox larger than one session handles: this session looks at the first \
                 messages only; the rest wait for later sessions (as these are deleted)");
        }
        let path = self
            .env
            .state_dir
            .join(uidl::file_name(&self.config.name))
            .join(format!("{}.uidl", uidl::file_name(&account.user)));
        let mut store = UidStore::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // By number, for lookups in large mailboxes. A UID the server gives to two messages
        // identifies neither: were it recorded for one, the other would be taken for fetched
        // and deleted unread. Such messages are handled as if the server had no UIDL.
        let mut seen_uids: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::new();
        for (_, uid) in uids.iter().flat_map(|u| &u.entries) {
            *seen_uids.entry(uid.as_str()).or_default() += 1;
        }
        let uid_index: std::collections::HashMap<u32, &str> = uids
            .iter()
            .flat_map(|u| &u.entries)
            .filter(|(_, uid)| uidl::valid_uid(uid) && seen_uids.get(uid.as_str()) == Some(&1))
            .map(|(n, uid)| (*n, uid.as_str()))
            .collect();
        if uid_index.len() < seen_uids.values().sum::<usize>() {
            tracing::warn!(task = %self.config.name, account = %account.user,
                "the server's UIDL has invalid or repeated UIDs: those messages are fetched \
                 as if it had no UIDL");
        }
        for &(number, size) in &sizes.entries {
            let uid = uid_index.get(&number).copied();
            match uid.and_then(|u| store.get(u)) {
                Some(Mark::Delivered) => {
                    // Durable here already (a crash came before QUIT last time).
                    if !self.config.fetched.leave_on_server {
                        self.dele(&mut client, account, number).await?;
                    }
                    continue;
                }
                Some(Mark::Seen) if !self.config.fetch_all => continue,
                _ => {}
            }
            let outcome = self
                .fetch_message(&mut client, account, number, size, uid)
                .await?;
            let (what, disposition) = match &outcome {
                Outcome::Spooled(name) => {
                    summary.fetched += 1;
                    if let Some(uid) = uid {
                        // Kept: durable now. Deleted: durable before QUIT (see uidl).
                        let recorded = if self.config.fetched.leave_on_server {
                            store.record(uid, Mark::Delivered)
                        } else {
                            store.record_lazily(uid, Mark::Delivered)
                        };
                        recorded.map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                    (format!("spooled as {name}"), self.config.fetched)
                }
                Outcome::Rejected(why, disposition) => {
                    summary.rejected += 1;
                    (format!("rejected: {why}"), *disposition)
                }
                Outcome::Undeliverable(why) => {
                    (format!("undeliverable: {why}"), self.config.undeliverable)
                }
                Outcome::Deferred => (
                    "deferred: recipient not found".to_string(),
                    Disposition {
                        leave_on_server: true,
                        mark_seen: false,
                    },
                ),
            };
            tracing::info!(task = %self.config.name, account = %account.user,
                uid = uid.unwrap_or("-"), size, outcome = %what,
                kept = disposition.leave_on_server, "fetched message");
            if !matches!(outcome, Outcome::Spooled(_)) && disposition.mark_seen {
                if let Some(uid) = uid {
                    store
                        .record(uid, Mark::Seen)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            if !disposition.leave_on_server {
                self.dele(&mut client, account, number).await?;
            }
        }
        // Every mark durable before QUIT makes the DELEs take effect.
        store
            .sync()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Forget the UIDs that vanished; not from a partial listing, where the rest are unknown.
        if uids.is_some() && skipped == 0 {
            let present: HashSet<&str> = uid_index.values().copied().collect();
            if let Err(e) = store.compact(&present) {
                tracing::warn!(path = %path.display(), error = %e, "cannot rewrite the UIDL record");
            }
        }
        client.quit().await.map_err(|e| e.to_string())
    }

    /// DELE; a `-ERR` is logged and the session goes on (the message stays on the server and,
    /// being recorded, is only deleted again next time).
    async fn dele(
        &self,
        client: &mut Client,
        account: &Account,
        number: u32,
    ) -> Result<(), String> {
        match client.dele(number).await {
            Ok(()) => Ok(()),
            Err(client::Error::Refused { text, .. }) => {
                tracing::warn!(task = %self.config.name, account = %account.user, number,
                    error = %text, "DELE refused; the message stays on the server");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads message `number` and applies the rules; spools it when accepted.
    async fn fetch_message(
        &self,
        client: &mut Client,
        account: &Account,
        number: u32,
        size: u64,
        uid: Option<&str>,
    ) -> Result<Outcome, String> {
        let e = |e: client::Error| e.to_string();
        client.retr(number, size).await.map_err(e)?;
        // The header section first (bounded).
        let mut head = Vec::new();
        let mut ended = false;
        while !ended && !header_complete(&head) {
            ended = client.next_chunk(&mut head).await.map_err(e)?;
        }
        let split = mailroom_mailet::header_section_len(&head);
        let message = Message::new(
            head[..split].to_vec(),
            Arc::new(MemoryBody::new(Vec::new())),
        );
        let outcome = self.decide(account, &message, size, uid).await;
        let (envelope, truncate) = match outcome {
            Ok(x) => x,
            Err(outcome) => {
                drain(client, ended).await.map_err(e)?;
                return Ok(outcome);
            }
        };
        let mut incoming = self
            .env
            .spool
            .incoming()
            .await
            .map_err(|e| format!("cannot open a message in the spool: {e}"))?;
        let spool_err = |e: std::io::Error| format!("cannot write to the spool: {e}");
        let fetched = format!(
            "{FETCHED_FROM}: {}\r\n",
            self.config.name.replace(['\r', '\n'], " ")
        );
        incoming
            .write(fetched.as_bytes())
            .await
            .map_err(spool_err)?;
        if truncate {
            incoming.write(&head[..split]).await.map_err(spool_err)?;
            drain(client, ended).await.map_err(e)?;
        } else {
            incoming.write(&head).await.map_err(spool_err)?;
            let mut chunk = Vec::new();
            while !ended {
                chunk.clear();
                ended = client.next_chunk(&mut chunk).await.map_err(e)?;
                incoming.write(&chunk).await.map_err(spool_err)?;
            }
        }
        let name = incoming.name().to_string();
        incoming
            .commit(envelope)
            .await
            .map_err(|e| format!("cannot commit to the spool: {e}"))?;
        metrics::counter!("mailroom_mails_received_total", "source" => "fetchmail").increment(1);
        Ok(Outcome::Spooled(name))
    }

    /// James's decisions for one message, in James's order: the envelope to spool it with (and
    /// whether only its header section is kept: over `<maxmessagesize>`), or the outcome that
    /// keeps it out of the spool.
    async fn decide(
        &self,
        account: &Account,
        message: &Message,
        size: u64,
        uid: Option<&str>,
    ) -> Result<(Envelope, bool), Outcome> {
        let c = &self.config;
        let mut found = if account.ignore_rcpt_header {
            Some(account.recipient.clone())
        } else {
            rules::intended_recipient(message, account.custom_rcpt_header.as_deref())
        };
        let not_found = found.is_none();
        if not_found {
            if c.recipient_not_found_defer {
                let key = (account.user.clone(), uid.unwrap_or_default().to_string());
                let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
                if uid.is_some() && deferred.insert(key.clone()) {
                    return Err(Outcome::Deferred);
                }
                deferred.remove(&key);
            }
            if c.recipient_not_found.reject {
                return Err(Outcome::Rejected(
                    "recipient not found",
                    c.recipient_not_found.disposition,
                ));
            }
            found = Some(account.recipient.clone());
        }
        let text = found.unwrap_or_default();
        let text = if text.contains('@') {
            text
        } else {
            format!("{text}@{}", self.default_domain())
        };
        let recipient = MailAddress::parse(&text)
            .map_err(|e| Outcome::Undeliverable(format!("recipient {text:?}: {e}")))?;
        let blacklisted = c
            .blacklist_addresses
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&recipient.to_string()));
        let remote = !(self.env.is_local_domain)(recipient.domain());
        let user_undefined = remote
            || !matches!(
                self.env.users.get(recipient.local_part()).await,
                Ok(Some(_))
            );
        let too_big = c.max_message_size_kib > 0 && size > c.max_message_size_kib * 1024;
        let client = rules::remote_client(message, c.remote_received_header_index);
        let received_invalid = c.remote_received_header_index >= 0 && client.is_none();
        let reject = |r: &Rejection, hit: bool| r.reject && hit;
        if reject(&c.blacklist, blacklisted) {
            return Err(Outcome::Rejected(
                "blacklisted recipient",
                c.blacklist.disposition,
            ));
        }
        if reject(&c.remote_recipient, remote) {
            return Err(Outcome::Rejected(
                "remote recipient",
                c.remote_recipient.disposition,
            ));
        }
        if reject(&c.user_undefined, user_undefined) {
            return Err(Outcome::Rejected(
                "undefined user",
                c.user_undefined.disposition,
            ));
        }
        if reject(&c.max_message_size, too_big) {
            return Err(Outcome::Rejected(
                "over the size limit",
                c.max_message_size.disposition,
            ));
        }
        if reject(&c.remote_received_header, received_invalid) {
            return Err(Outcome::Rejected(
                "invalid Received: header",
                c.remote_received_header.disposition,
            ));
        }
        let sender = rules::sender(message, &self.default_domain());
        let Some(sender_address) = sender.address.clone() else {
            return Err(Outcome::Undeliverable("no valid sender".into()));
        };
        let mut envelope = Envelope::new("", Some(sender_address), vec![recipient]);
        if let Some((host, addr)) = &client {
            envelope.remote_host = host.clone();
            envelope.remote_addr = addr.clone();
        }
        envelope.attributes.insert(
            mailroom_mailet::ATTR_FETCHMAIL_TASK.into(),
            AttributeValue::String(c.name.clone()),
        );
        let mut set = |name: &str, value: AttributeValue| {
            envelope
                .attributes
                .insert(format!("{ATTRIBUTE_PREFIX}{name}"), value);
        };
        set("folderName", AttributeValue::String(c.folder.clone()));
        let flags = [
            ("isRemoteRecipient", remote),
            ("isUserUndefined", user_undefined),
            ("isBlacklistedRecipient", blacklisted),
            ("isRecipientNotFound", not_found),
            ("isRemoteReceivedHeaderInvalid", received_invalid),
            ("isDefaultSenderLocalPart", sender.default_local_part),
            ("isDefaultSenderDomainPart", sender.default_domain),
            (
                "isDefaultRemoteAddress",
                c.remote_received_header_index >= 0 && client.is_none(),
            ),
        ];
        for (name, on) in flags {
            if on {
                set(name, AttributeValue::Bool(true));
            }
        }
        if too_big {
            set(
                "isMaxMessageSizeExceeded",
                AttributeValue::String(size.to_string()),
            );
            envelope.error_message = Some(format!(
                "Message size ({}KB) exceeds the maximum permitted size of {}KB.",
                size / 1024,
                c.max_message_size_kib
            ));
        }
        if rules::is_bouncing(message, &c.name) {
            envelope.state = mailroom_mailet::state::ERROR.to_string();
            envelope.error_message = Some(format!(
                "This mail from FetchMail task {} seems to be bouncing!",
                c.name
            ));
        }
        Ok((envelope, too_big))
    }

    fn default_domain(&self) -> String {
        self.config
            .default_domain
            .clone()
            .unwrap_or_else(|| self.env.default_domain.clone())
    }
}

/// Whether `head` holds a whole header section (or as much as is ever kept).
fn header_complete(head: &[u8]) -> bool {
    head.starts_with(b"\r\n")
        || head.starts_with(b"\n")
        || head.windows(4).any(|w| w == b"\r\n\r\n")
        || head.windows(2).any(|w| w == b"\n\n")
        || head.len() > mailroom_mailet::MAX_HEADER_SECTION
}

/// Reads the rest of a message without keeping it.
async fn drain(client: &mut Client, mut ended: bool) -> Result<(), client::Error> {
    let mut sink = Vec::new();
    while !ended {
        sink.clear();
        ended = client.next_chunk(&mut sink).await?;
    }
    Ok(())
}
