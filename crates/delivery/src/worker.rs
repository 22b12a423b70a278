//! One delivery worker: leases a mail from the outgoing spool, delivers each domain's
//! recipients, logs one outcome line per recipient, then completes, requeues (the recipients
//! left, on the `<delayTime>` schedule) and bounces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailroom_dns::Resolver;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{state, AttributeValue, Mail, MailAddress};
use mailroom_spool::leases::Leases;
use mailroom_spool::mailets::bounce::{dsn_report, DsnReport};
use mailroom_store::{Leased, SpoolRepository};
use tokio::sync::watch;

use crate::bounce::{self, Failure};
use crate::client::{self, ClientSettings, RcptResult, StartTls};
use crate::route::{self, RouteError, Target};
use crate::settings::Settings;
use crate::{ATTEMPTS, PLAIN_TEXT};

/// The SMTP server's DSN attributes (`mailroom_smtp::ATTR_DSN_*`; this crate does not depend
/// on the SMTP server).
const ATTR_DSN_RET: &str = "mailroom.smtp.dsn.ret";
const ATTR_DSN_ENVID: &str = "mailroom.smtp.dsn.envid";
const ATTR_DSN_RECIPIENTS: &str = "mailroom.smtp.dsn.recipients";
/// The SMTP server's `SMTPUTF8` attribute (`mailroom_smtp::ATTR_SMTPUTF8`).
const ATTR_SMTPUTF8: &str = "mailroom.smtp.smtputf8";

/// What every worker of one outgoing spool shares.
pub(crate) struct Worker {
    pub settings: Settings,
    pub outgoing: Arc<dyn SpoolRepository>,
    /// The main spool, where failed recipients go.
    pub spool: Arc<dyn SpoolRepository>,
    pub resolver: Arc<Resolver>,
    /// Keeps the lease of every mail in delivery alive (renewed once half of it has passed,
    /// by the outgoing spool's one renewing task), so that a delivery longer than the lease
    /// (a slow server: up to `<timeout>` per reply, for every host) never sees its mail taken
    /// over by another worker and sent twice.
    pub leases: Arc<Leases>,
    /// The server's name (a report's `Reporting-MTA`) and postmaster (its `From:`), for the
    /// reports made here without a `<bounceProcessor>`.
    pub server_name: String,
    pub postmaster: MailAddress,
}

/// How long one lease call waits for a due mail (and so how soon a stop is seen when idle).
const LEASE_WAIT: Duration = Duration::from_secs(1);

/// Leases and delivers until told to stop.
pub(crate) async fn run(worker: Arc<Worker>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let leased = tokio::select! {
            leased = worker.outgoing.lease(LEASE_WAIT) => leased,
            _ = stop.changed() => return,
        };
        match leased {
            Ok(Some(leased)) => worker.deliver(leased).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(outgoing = %worker.settings.outgoing, "remote delivery: cannot lease: {e}");
                tokio::time::sleep(LEASE_WAIT).await;
            }
        }
    }
}

/// What became of one recipient in this attempt.
enum Result1 {
    Delivered { host: String, reply: String },
    Temporary { host: Option<String>, text: String },
    Failed(Failure),
}

impl Worker {
    async fn deliver(&self, leased: Leased) {
        let Leased { mut mail, token } = leased;
        // Held until the mail is completed or requeued (renewal keeps the token's id, so the
        // token in hand stays valid).
        let _held = self.leases.hold(&token);
        let attempt = match mail.attribute(ATTEMPTS) {
            Some(AttributeValue::Number(n)) if *n >= 0.0 => *n as u32 + 1,
            _ => 1,
        };
        let mut plain = plain_text_addresses(&mail);
        let known_plain = plain.len();
        metrics::counter!("mailroom_delivery_attempts_total").increment(1);
        let started = std::time::Instant::now();
        let results = self.attempt(&mail, &mut plain).await;
        metrics::histogram!("mailroom_delivery_duration_seconds").record(started.elapsed());
        let retry = attempt <= self.settings.max_retries;
        let delay = self.settings.delay_before(attempt);
        let mut failed = Vec::new();
        let mut again = Vec::new();
        let mut last_error = None;
        for (rcpt, result) in results {
            let line = Outcome::new(mail.name(), &rcpt, status_of(&result, retry));
            let line = match &result {
                Result1::Delivered { host, reply } => {
                    line.field("host", host).field("reply", reply)
                }
                Result1::Temporary { host, text } if retry => line
                    .field("host", host.as_deref().unwrap_or("none"))
                    .field("attempts", attempt)
                    .field("retry_in", format!("{}s", delay.as_secs_f64()))
                    .field("reason", text),
                Result1::Temporary { host, text } => line
                    .field("host", host.as_deref().unwrap_or("none"))
                    .field("attempts", attempt)
                    .field(
                        "reason",
                        format!("{text} (gave up after {attempt} attempts)"),
                    )
                    .field("next", self.bounce_to()),
                Result1::Failed(f) => line
                    .field("host", f.remote_mta.as_deref().unwrap_or("none"))
                    .field("attempts", attempt)
                    .field("reason", &f.text)
                    .field("next", self.bounce_to()),
            };
            tracing::info!(target: "delivery", "{line}");
            match result {
                Result1::Delivered { .. } => {}
                Result1::Temporary { host, text } if retry => {
                    last_error = Some(text.clone());
                    let _ = host;
                    again.push(rcpt);
                }
                Result1::Temporary { host, text } => {
                    let status = if text.contains(" 4.") {
                        status_in(&text)
                    } else {
                        None
                    };
                    failed.push((
                        rcpt,
                        Failure {
                            remote_mta: host,
                            status: status.unwrap_or_else(|| "4.4.7".to_string()),
                            text: format!("{text} (gave up after {attempt} attempts)"),
                        },
                    ))
                }
                Result1::Failed(f) => failed.push((rcpt, f)),
            }
        }
        // The bounces first: a crash before the outgoing mail is finished brings it back (a
        // second bounce at worst), never loses a failure.
        if !failed.is_empty() {
            if let Err(e) = self.bounce(&mail, &failed).await {
                // Kept for another try with only the recipients not delivered (the failed ones
                // are tried, and failed, again), counting the attempt: those delivered now are
                // not sent again, and maxRetries still ends it.
                tracing::warn!(mail = %mail.name(), "remote delivery: cannot spool the failed recipients ({e}); they are tried again");
                again.extend(failed.into_iter().map(|(rcpt, _)| rcpt));
                mail.set_recipients(again);
                mail.set_attribute(ATTEMPTS, AttributeValue::Number(f64::from(attempt)));
                mail.envelope.touch();
                let at = SystemTime::now() + delay.max(Duration::from_secs(60));
                if let Err(e) = self.outgoing.requeue(token, &mail, at).await {
                    tracing::warn!(mail = %mail.name(), "remote delivery: cannot update the outgoing spool: {e}");
                }
                return;
            }
        }
        let done = if again.is_empty() {
            self.outgoing.complete(token).await
        } else {
            mail.set_recipients(again);
            mail.set_attribute(ATTEMPTS, AttributeValue::Number(f64::from(attempt)));
            if plain.len() > known_plain {
                let list = plain.into_iter().map(AttributeValue::String).collect();
                mail.set_attribute(PLAIN_TEXT, AttributeValue::List(list));
            }
            mail.envelope.error_message = last_error;
            mail.envelope.touch();
            self.outgoing
                .requeue(token, &mail, SystemTime::now() + delay)
                .await
        };
        if let Err(e) = done {
            tracing::warn!(mail = %mail.name(), "remote delivery: cannot update the outgoing spool: {e}");
        }
    }

    /// Where the failed recipients go: the `<bounceProcessor>`, else a report to the sender.
    fn bounce_to(&self) -> &str {
        self.settings
            .bounce_processor
            .as_deref()
            .unwrap_or("sender")
    }

    /// The failed recipients: copies to the `<bounceProcessor>`; without one, as James does,
    /// the RFC 3464 report `DSNBounce` makes, put in the main spool as a new mail (state
    /// `root`, from `<>`). A mail from `<>` gets no report (a bounce is never bounced): its
    /// failed recipients are dropped, each with a `status=dropped` line.
    async fn bounce(
        &self,
        mail: &Mail,
        failed: &[(MailAddress, Failure)],
    ) -> Result<(), mailroom_store::StoreError> {
        let Some(processor) = &self.settings.bounce_processor else {
            for copy in bounce::copies(mail, failed, state::ROOT) {
                self.report(copy).await?;
            }
            return Ok(());
        };
        for copy in bounce::copies(mail, failed, processor) {
            self.spool.store(&copy).await?;
        }
        Ok(())
    }

    /// Spools the report about `copy` (a copy of the failed mail for recipients that failed
    /// alike), and logs one line per recipient.
    async fn report(&self, copy: Mail) -> Result<(), mailroom_store::StoreError> {
        let dropped = |rcpts: &mut dyn Iterator<Item = &MailAddress>, reason: &str| {
            for rcpt in rcpts {
                let line = Outcome::new(copy.name(), rcpt, Status::Dropped).field("reason", reason);
                tracing::info!(target: "delivery", "{line}");
            }
        };
        match dsn_report(&copy, &self.server_name, &self.postmaster) {
            Ok(DsnReport::NullSender) => dropped(
                &mut copy.recipients().iter(),
                "null sender: a bounce is never bounced",
            ),
            Ok(DsnReport::NotWanted) => dropped(
                &mut copy.recipients().iter(),
                "the sender asked for no report (NOTIFY)",
            ),
            Ok(DsnReport::Report {
                notice,
                reported,
                unwanted,
            }) => {
                self.spool.store(&notice).await?;
                metrics::counter!("mailroom_bounces_total").increment(1);
                let to = copy.sender().map(ToString::to_string).unwrap_or_default();
                for (rcpt, status) in &reported {
                    let line = Outcome::new(copy.name(), rcpt, Status::Bounced)
                        .field("to", &to)
                        .field("notice", notice.name())
                        .field("dsn_status", status);
                    tracing::info!(target: "delivery", "{line}");
                }
                dropped(
                    &mut unwanted.iter(),
                    "the sender asked for no report (NOTIFY)",
                );
            }
            Err(e) => {
                // The failure is kept where a postmaster sees it rather than lost.
                tracing::warn!(mail = %copy.name(), "remote delivery: cannot make the report to the sender ({e}); the failed recipients go to the error processor");
                let mut copy = copy;
                copy.set_state(state::ERROR);
                self.spool.store(&copy).await?;
            }
        }
        Ok(())
    }

    /// One attempt for every recipient: each domain's on its own connection.
    /// `plain`: the addresses (`ip:port`) whose TLS handshake failed on an earlier attempt;
    /// those that fail now are added.
    async fn attempt(&self, mail: &Mail, plain: &mut Vec<String>) -> Vec<(MailAddress, Result1)> {
        let mut groups: Vec<(String, Vec<MailAddress>)> = Vec::new();
        for rcpt in mail.recipients() {
            // Through a gateway, one connection carries every recipient.
            let key = if self.settings.gateways.is_empty() {
                rcpt.domain().to_ascii_lowercase()
            } else {
                String::new()
            };
            match groups.iter_mut().find(|(d, _)| *d == key) {
                Some((_, rcpts)) => rcpts.push(rcpt.clone()),
                None => groups.push((key, vec![rcpt.clone()])),
            }
        }
        let dsn = dsn_params(mail);
        let eight_bit = match eight_bit(&mail.message).await {
            Ok(eight_bit) => eight_bit,
            Err(e) => {
                let text = format!("cannot read the message: {e}");
                return mail
                    .recipients()
                    .iter()
                    .map(|r| {
                        let failure = Result1::Temporary {
                            host: None,
                            text: text.clone(),
                        };
                        (r.clone(), failure)
                    })
                    .collect();
            }
        };
        let mut results = Vec::new();
        for (domain, rcpts) in groups {
            results.extend(
                self.deliver_domain(mail, (eight_bit, &dsn), &domain, rcpts, plain)
                    .await,
            );
        }
        results
    }

    async fn deliver_domain(
        &self,
        mail: &Mail,
        (eight_bit, dsn): (bool, &client::DsnParams),
        domain: &str,
        rcpts: Vec<MailAddress>,
        plain: &mut Vec<String>,
    ) -> Vec<(MailAddress, Result1)> {
        let settings = &self.settings;
        let all = |rcpts: Vec<MailAddress>, result: &dyn Fn() -> Result1| {
            rcpts.into_iter().map(|r| (r, result())).collect::<Vec<_>>()
        };
        let targets = match route::targets(
            &self.resolver,
            domain,
            &settings.gateways,
            settings.mx_port,
        )
        .await
        {
            Ok(targets) => targets,
            Err(e) => return all(rcpts, &|| route_failure(&e)),
        };
        let implicit = settings.gateways.is_empty()
            && targets.len() == 1
            && targets[0].host.eq_ignore_ascii_case(domain);
        let mut client = ClientSettings {
            helo: settings.helo_name.clone(),
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            send_partial: settings.send_partial,
            starttls: StartTls::Offered,
            auth: settings.gateway_auth.clone(),
            bind: settings.bind,
        };
        let mut pending = rcpts;
        let mut done = Vec::new();
        let mut last: (Option<String>, String) = (None, "no host to try".to_string());
        for target in &targets {
            let ips = match route::addresses(&self.resolver, target).await {
                Ok(ips) => ips,
                Err(e @ RouteError::Permanent { .. }) if implicit => {
                    done.extend(all(pending, &|| route_failure(&e)));
                    return done;
                }
                Err(RouteError::Permanent { text, .. } | RouteError::Temporary(text)) => {
                    last = (None, format!("{}: {text}", target.host));
                    continue;
                }
            };
            // The first address that answers at all is the host's answer.
            for ip in ips {
                let addr = SocketAddr::new(ip, target.port);
                let envelope = client::Envelope {
                    sender: mail.sender(),
                    recipients: &pending,
                    message: &mail.message,
                    eight_bit,
                    smtputf8: matches!(
                        mail.attribute(ATTR_SMTPUTF8),
                        Some(AttributeValue::Bool(true))
                    ),
                    dsn,
                };
                client.starttls = if settings.require_tls {
                    StartTls::Required
                } else if plain.contains(&addr.to_string()) {
                    StartTls::Never
                } else {
                    StartTls::Offered
                };
                match client::deliver(addr, &target.host, &client, &envelope).await {
                    Err(e) => {
                        if e.tls_failed && !settings.require_tls {
                            plain.push(addr.to_string());
                        }
                        tracing::info!(target: "delivery", mail = %mail.name(), host = %target.host, "{e}; trying the next host");
                        last = (Some(target.host.clone()), e.text);
                    }
                    Ok(results) => {
                        let mut left = Vec::new();
                        for (rcpt, result) in pending.drain(..).zip(results) {
                            match result {
                                RcptResult::Delivered(reply) => done.push((
                                    rcpt,
                                    Result1::Delivered {
                                        host: describe(target, addr),
                                        reply: reply.to_string(),
                                    },
                                )),
                                RcptResult::Permanent(reply) => done.push((
                                    rcpt,
                                    Result1::Failed(Failure {
                                        remote_mta: Some(target.host.clone()),
                                        status: reply.status(),
                                        text: format!("{} said: {reply}", target.host),
                                    }),
                                )),
                                RcptResult::Temporary(text) => {
                                    last = (Some(target.host.clone()), text);
                                    left.push(rcpt);
                                }
                            }
                        }
                        pending = left;
                        break;
                    }
                }
            }
            if pending.is_empty() {
                return done;
            }
        }
        let (host, text) = last;
        done.extend(all(pending, &|| Result1::Temporary {
            host: host.clone(),
            text: text.clone(),
        }));
        done
    }
}

fn status_of(result: &Result1, retry: bool) -> Status {
    match result {
        Result1::Delivered { .. } => Status::Delivered,
        Result1::Temporary { .. } if retry => Status::Deferred,
        _ => Status::Failed,
    }
}

fn route_failure(e: &RouteError) -> Result1 {
    match e {
        RouteError::Permanent { status, text } => Result1::Failed(Failure {
            remote_mta: None,
            status: status.to_string(),
            text: text.clone(),
        }),
        RouteError::Temporary(text) => Result1::Temporary {
            host: None,
            text: text.clone(),
        },
    }
}

/// The DSN parameters the SMTP server kept with `mail` (`mailroom_smtp::ATTR_DSN_*`).
fn dsn_params(mail: &Mail) -> client::DsnParams {
    let text = |value: Option<&AttributeValue>| match value {
        Some(AttributeValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut params = client::DsnParams {
        ret: text(mail.attribute(ATTR_DSN_RET)),
        envid: text(mail.attribute(ATTR_DSN_ENVID)),
        ..Default::default()
    };
    if let Some(AttributeValue::Map(all)) = mail.attribute(ATTR_DSN_RECIPIENTS) {
        for (rcpt, entry) in all {
            if let AttributeValue::Map(entry) = entry {
                params.recipients.insert(
                    rcpt.clone(),
                    (text(entry.get("notify")), text(entry.get("orcpt"))),
                );
            }
        }
    }
    params
}

/// The addresses that failed the TLS handshake on an earlier attempt of `mail`.
fn plain_text_addresses(mail: &Mail) -> Vec<String> {
    match mail.attribute(PLAIN_TEXT) {
        Some(AttributeValue::List(list)) => list
            .iter()
            .filter_map(|v| match v {
                AttributeValue::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `mx.example[192.0.2.1]:25`.
fn describe(target: &Target, addr: SocketAddr) -> String {
    if target.host == addr.ip().to_string() {
        addr.to_string()
    } else {
        format!("{}[{}]:{}", target.host, addr.ip(), addr.port())
    }
}

/// An enhanced status code (`4.2.2`) in a reply text.
fn status_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// Whether the message has octets above 127 (it then needs `BODY=8BITMIME`): read through
/// once on the blocking pool, never whole in memory.
async fn eight_bit(message: &mailroom_mailet::Message) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let reader = {
        let message = message.clone();
        tokio::task::spawn_blocking(move || message.reader())
            .await
            .map_err(std::io::Error::other)??
    };
    let mut reader = mailroom_store::BlockingReader::new(Box::new(reader));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        if chunk[..n].iter().any(|&b| b >= 0x80) {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::{Envelope, Message};
    use mailroom_store::file::LogSpool;
    use mailroom_store::Blocking;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// An SMTP server that takes the data, then waits `delay` before its 250.
    async fn slow_server(delay: Duration) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sessions.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 slow\r\n").await.unwrap();
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &[u8] = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            tokio::time::sleep(delay).await;
                            b"250 2.0.0 at last\r\n"
                        } else if line == "DATA" {
                            in_data = true;
                            b"354 go on\r\n"
                        } else if line == "QUIT" {
                            b"221 bye\r\n"
                        } else {
                            b"250 ok\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, sessions)
    }

    /// A delivery longer than twice the outgoing spool's lease keeps its mail: no other
    /// worker can lease it meanwhile, and it is sent once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_longer_than_the_lease_keeps_its_mail() {
        let lease = Duration::from_secs(3);
        let (port, sessions) = slow_server(lease * 2).await;
        let dir = tempfile::tempdir().unwrap();
        let outgoing: Arc<dyn SpoolRepository> = Arc::new(Blocking::new(
            LogSpool::open(dir.path())
                .unwrap()
                .with_lease_duration(lease),
        ));
        let main_dir = tempfile::tempdir().unwrap();
        let spool: Arc<dyn SpoolRepository> =
            Arc::new(Blocking::new(LogSpool::open(main_dir.path()).unwrap()));
        let config = mailroom_mailet::MailetConfig {
            name: "RemoteDelivery".into(),
            params: [
                ("outgoing", "file://var/mail/outgoing/".to_string()),
                ("gateway", format!("127.0.0.1:{port}")),
                ("timeout", "30000".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        let (settings, _) = Settings::parse(&config, "relay.test").unwrap();
        let leases = Leases::new(outgoing.clone());
        let renewer = tokio::spawn(leases.clone().renew_forever(Duration::from_millis(100)));
        let worker = Arc::new(Worker {
            settings,
            outgoing: outgoing.clone(),
            spool,
            resolver: Arc::new(Resolver::new(&Default::default()).unwrap()),
            leases,
            server_name: "relay.test".into(),
            postmaster: MailAddress::parse("postmaster@relay.test").unwrap(),
        });
        let mail = Mail::new(
            Envelope::new(
                "slow-1",
                Some(MailAddress::parse("s@example.test").unwrap()),
                vec![MailAddress::parse("r@far.test").unwrap()],
            ),
            Message::from_bytes(b"Subject: slow\r\n\r\nbody\r\n"),
        );
        outgoing.store(&mail).await.unwrap();
        let leased = outgoing
            .lease(Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        let delivering = tokio::spawn({
            let worker = worker.clone();
            async move { worker.deliver(leased).await }
        });
        // Past the first lease's end, and well into a second one: still ours.
        tokio::time::sleep(lease + lease / 2).await;
        assert!(!delivering.is_finished());
        assert!(outgoing
            .lease(Duration::from_millis(lease.as_millis() as u64))
            .await
            .unwrap()
            .is_none());
        delivering.await.unwrap();
        assert!(outgoing.list().await.unwrap().is_empty());
        assert_eq!(sessions.load(std::sync::atomic::Ordering::SeqCst), 1);
        renewer.abort();
    }
}
