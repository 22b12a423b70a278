//! RemoteDelivery: Mailroom sends mail to the rest of the world.
//!
//! * The **`RemoteDelivery` mailet** ([`register`]) stores each mail it is given into its
//!   outgoing spool (`<outgoing>`, a spool repository of its own) and ghosts it: from then on
//!   the mail is the delivery workers' business.
//! * The **delivery workers** ([`RemoteDeliveries::start`], `<deliveryThreads>` async tasks
//!   per outgoing spool on the server's runtime) lease mails from that spool, group their
//!   recipients by domain, find the hosts ([`mod@route`]: the gateways, or MX records with the
//!   implicit MX and null MX rules) and hand each group to the [`client`]: one connection per
//!   host for all of a domain's recipients.
//! * Per recipient, 2xx is done, 4xx is retried on the `<delayTime>` schedule (the attempt
//!   count is kept in the mail's attribute [`ATTEMPTS`], the time of the next attempt in the
//!   spool: both survive a restart), 5xx, or 4xx after `<maxRetries>`, fails: a copy of the
//!   mail for the failed recipients goes to `<bounceProcessor>` (see [`bounce`] for what it
//!   carries).
//!
//! This crate must not touch the main spool's mails other than by adding bounces to it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bounce;
pub mod client;
pub mod route;
pub mod settings;
mod worker;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mailroom_dns::Resolver;
use mailroom_mailet::outcome::{Outcome, Status};
use mailroom_mailet::{
    derived_mail_name, state, Mail, MailAddress, Mailet, MailetConfig, MailetContext, MailetError,
};
use mailroom_spool::leases::{self, Leases};
use mailroom_spool::Registry;
use mailroom_store::SpoolRepository;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use settings::Settings;

/// The mail attribute that counts the delivery attempts made so far.
pub const ATTEMPTS: &str = "mailroom.delivery.attempts";

/// The mail attribute listing the addresses (`ip:port`) whose STARTTLS handshake failed on an
/// earlier attempt: without `<requireTLS>` they are tried in plain text.
pub const PLAIN_TEXT: &str = "mailroom.delivery.plain-text";

/// The outgoing spool URL of a configured mailet when it is a RemoteDelivery (its
/// `<outgoing>`, else James's default), read from the configuration alone: `mailroom queue`
/// knows the outgoing spools without building the processor tree.
pub fn configured_outgoing(mailet: &mailroom_config::MailetConfig) -> Option<String> {
    if mailet.class.rsplit('.').next() != Some("RemoteDelivery") {
        return None;
    }
    let url = mailet.param("outgoing").filter(|o| !o.is_empty());
    Some(url.unwrap_or(settings::DEFAULT_OUTGOING).to_string())
}

/// One configured outgoing spool and how its mails are delivered.
struct Instance {
    settings: Settings,
    /// Opened by [`RemoteDeliveries::open`] once the server's ports are bound (a start that
    /// fails early leaves no storage behind); empty in `check-config`.
    spool: OnceLock<Arc<dyn SpoolRepository>>,
}

/// The RemoteDelivery mailets of a processor tree: their settings and outgoing spools, and
/// the workers that deliver from them.
pub struct RemoteDeliveries {
    default_helo: String,
    /// Runs the mailets' spool writes (the SpoolManager's threads are not runtime threads);
    /// `None` in `check-config`, where no mail is served.
    runtime: Option<tokio::runtime::Handle>,
    instances: Mutex<Vec<Arc<Instance>>>,
}

impl RemoteDeliveries {
    /// `default_helo` is the `<heloName>` when none is given; `runtime` is `None` when the
    /// tree is only checked.
    pub fn new(default_helo: &str, runtime: Option<tokio::runtime::Handle>) -> Arc<Self> {
        Arc::new(RemoteDeliveries {
            default_helo: default_helo.to_string(),
            runtime,
            instances: Mutex::default(),
        })
    }

    fn instances(&self) -> Vec<Arc<Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The outgoing spool URLs configured (for the administrator's repository list).
    pub fn outgoing_urls(&self) -> Vec<String> {
        self.instances()
            .iter()
            .map(|i| i.settings.outgoing.clone())
            .collect()
    }

    /// Every opened outgoing spool, with its URL (for the administrator's commands).
    pub fn spools(&self) -> Vec<(String, Arc<dyn SpoolRepository>)> {
        self.instances()
            .iter()
            .filter_map(|i| Some((i.settings.outgoing.clone(), i.spool.get()?.clone())))
            .collect()
    }

    /// Builds a mailet for `config`: one instance per `<outgoing>`; two mailets naming the
    /// same outgoing spool must agree on everything else (the workers serve them alike).
    fn mailet(&self, config: &MailetConfig) -> Result<RemoteDelivery, MailetError> {
        let (settings, notes) = Settings::parse(config, &self.default_helo)?;
        for note in notes {
            tracing::info!("RemoteDelivery: {note}");
        }
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let instance = match instances
            .iter()
            .find(|i| i.settings.outgoing == settings.outgoing)
        {
            Some(i) if i.settings == settings => i.clone(),
            Some(_) => {
                return Err(MailetError::new(format!(
                    "mailet RemoteDelivery: another RemoteDelivery uses <outgoing> {} with \
                     other parameters; give each its own outgoing spool",
                    settings.outgoing
                )))
            }
            None => {
                let i = Arc::new(Instance {
                    settings,
                    spool: OnceLock::new(),
                });
                instances.push(i.clone());
                i
            }
        };
        Ok(RemoteDelivery {
            instance,
            runtime: self.runtime.clone(),
        })
    }

    /// Opens every outgoing spool with `opener`.
    pub fn open(
        &self,
        opener: impl Fn(&str) -> Result<Arc<dyn SpoolRepository>, String>,
    ) -> Result<(), String> {
        for instance in self.instances() {
            let spool = opener(&instance.settings.outgoing).map_err(|e| {
                format!(
                    "RemoteDelivery <outgoing> {}: {e}",
                    instance.settings.outgoing
                )
            })?;
            let _ = instance.spool.set(spool);
        }
        Ok(())
    }

    /// Starts the workers of every opened outgoing spool on `runtime`. Failed recipients are
    /// sent to the bounce processor through `spool` (the main spool).
    pub fn start(
        &self,
        runtime: &tokio::runtime::Handle,
        resolver: Arc<Resolver>,
        spool: Arc<dyn SpoolRepository>,
        (server_name, postmaster): (&str, &MailAddress),
    ) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut renewers = Vec::new();
        for instance in self.instances() {
            let Some(outgoing) = instance.spool.get().cloned() else {
                continue;
            };
            let settings = &instance.settings;
            tracing::info!(
                outgoing = %settings.outgoing,
                threads = settings.threads,
                gateways = ?settings.gateways,
                "remote delivery started"
            );
            let leases = Leases::new(outgoing.clone());
            renewers.push(runtime.spawn(leases.clone().renew_forever(leases::SCAN)));
            let shared = Arc::new(worker::Worker {
                settings: settings.clone(),
                leases,
                outgoing,
                spool: spool.clone(),
                resolver: resolver.clone(),
                server_name: server_name.to_string(),
                postmaster: postmaster.clone(),
            });
            for _ in 0..settings.threads {
                tasks.push(runtime.spawn(worker::run(shared.clone(), stopped.clone())));
            }
        }
        Workers {
            stop,
            tasks,
            renewers,
        }
    }
}

/// The running delivery workers.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The lease-renewing task of each outgoing spool.
    renewers: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Tells the workers to stop leasing and waits up to `grace` for the deliveries in hand;
    /// one still running after that is abandoned (its mail is leased again at the next start;
    /// at worst delivered twice, never lost).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("remote delivery: deliveries still running at shutdown were abandoned; they are retried at the next start");
        }
        for renewer in self.renewers {
            renewer.abort();
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Registers `RemoteDelivery` in `registry`, its mailets served by `deliveries`.
pub fn register(registry: &mut Registry, deliveries: &Arc<RemoteDeliveries>) {
    let deliveries = deliveries.clone();
    registry
        .add_mailet("RemoteDelivery", move |config| {
            Ok(Box::new(deliveries.mailet(config)?))
        }).about("Queues the mail in its outgoing spool and ghosts it; workers deliver by MX (or <gateway>) with retries on <delayTime>, and bounce to <bounceProcessor>.", "<mailet match=\"All\" class=\"RemoteDelivery\"><outgoing>file://var/mail/outgoing/</outgoing><delayTime>5 minutes</delayTime><maxRetries>5</maxRetries></mailet>")
        .params(settings::PARAMS);
}

/// The mailet: puts the mail into the outgoing spool and ghosts it.
struct RemoteDelivery {
    instance: Arc<Instance>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Mailet for RemoteDelivery {
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError> {
        if mail.recipients().is_empty() {
            mail.set_state(state::GHOST);
            return Ok(());
        }
        let url = &self.instance.settings.outgoing;
        let (Some(spool), Some(runtime)) = (self.instance.spool.get(), &self.runtime) else {
            return Err(MailetError::temporary(format!(
                "RemoteDelivery: the outgoing spool {url} is not open"
            )));
        };
        let mut queued = mail.clone();
        queued.envelope.name = derived_mail_name(mail.name());
        queued.set_state(state::ROOT);
        queued.envelope.error_message = None;
        queued.envelope.attributes.remove(ATTEMPTS);
        queued.envelope.attributes.remove(PLAIN_TEXT);
        queued.envelope.touch();
        runtime
            .block_on(spool.store(&queued))
            .map_err(|e| MailetError::temporary(format!("RemoteDelivery: {url}: {e}")))?;
        for rcpt in mail.recipients() {
            ctx.log(
                &Outcome::new(mail.name(), rcpt, Status::Stored)
                    .field("repository", url)
                    .field("outgoing", queued.name())
                    .to_string(),
            );
        }
        mail.set_state(state::GHOST);
        Ok(())
    }
}
