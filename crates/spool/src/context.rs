//! The server side of [`MailetContext`]: local domains, the users repository, the inboxes, the
//! spool, the mail repositories that mailets name by URL, and DNS.
//!
//! The repositories are async; matchers and mailets are not (as in James, they run on the
//! SpoolManager's own worker threads, which may block). This context bridges the two with the
//! runtime's `block_on`, which is legal because the workers are not runtime threads: the
//! runtime's threads never wait here.
//!
//! Store errors become mailet errors here: I/O errors (a full disk, no file descriptors) and a
//! mailbox in use are temporary, so the mail is retried; anything else is permanent.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use mailroom_dns::BlockingResolver;
use mailroom_mailet::{
    DnsError, Mail, MailAddress, MailetContext, MailetError, MxRecord, UserRecord,
};
use mailroom_store::mappings::targets_of;
use mailroom_store::{
    Delivery, InboxRepository, LeaseToken, MailRepository, MappingsRepository, SpoolRepository,
    StoreError, UsersRepository,
};

thread_local! {
    /// Inbox deliveries made on this thread and not taken yet: a worker runs all of a mail's
    /// mailets on its own thread, so these are the deliveries of the mail it processes.
    static DELIVERIES: std::cell::RefCell<Vec<Delivery>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes the inbox deliveries made on this thread since the last call.
pub(crate) fn take_deliveries() -> Vec<Delivery> {
    DELIVERIES.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Opens the mail repository at a URL (`file://var/mail/error/`...). Called for every store,
/// so it keeps what it opened.
pub type RepositoryOpener =
    Box<dyn Fn(&str) -> Result<Arc<dyn MailRepository>, StoreError> + Send + Sync>;

/// How user names and their aliases and forwards are looked up (`<usernames>` of `<James>`).
#[derive(Clone, Copy, Debug)]
pub struct UsernameRules {
    /// `Bob@domain` finds the user `bob`.
    pub ignore_case: bool,
    /// Users' aliases are honoured.
    pub enable_aliases: bool,
    /// Users' forwards are honoured.
    pub enable_forwarding: bool,
}

/// The repositories a [`ServerContext`] works on.
pub struct Repositories {
    /// Users, with their aliases and forwards.
    pub users: Arc<dyn UsersRepository>,
    /// Where `LocalDelivery` puts mail.
    pub inbox: Arc<dyn InboxRepository>,
    /// Where new mails (`send_mail`) go.
    pub spool: Arc<dyn SpoolRepository>,
    /// Opens the mail repositories that mailets name by URL.
    pub opener: RepositoryOpener,
}

/// The MailetContext the SpoolManager hands to matchers and mailets.
pub struct ServerContext {
    /// This server's domains, lower-cased.
    servernames: Vec<String>,
    postmaster: MailAddress,
    rules: UsernameRules,
    users: Arc<dyn UsersRepository>,
    inbox: Arc<dyn InboxRepository>,
    spool: Arc<dyn SpoolRepository>,
    opener: RepositoryOpener,
    /// The virtual user tables, when the server has them.
    mappings: Option<Arc<dyn MappingsRepository>>,
    /// The runtime the repositories' async calls run on.
    runtime: tokio::runtime::Handle,
    /// The server's shared resolver; the SpoolManager's workers are not runtime threads, so
    /// they may wait for its answers.
    dns: Option<BlockingResolver>,
}

impl ServerContext {
    /// A context over the given repositories, whose async calls run on `runtime`.
    pub fn new(
        servernames: Vec<String>,
        postmaster: MailAddress,
        rules: UsernameRules,
        repositories: Repositories,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let Repositories {
            users,
            inbox,
            spool,
            opener,
        } = repositories;
        ServerContext {
            servernames: servernames.iter().map(|s| s.to_lowercase()).collect(),
            postmaster,
            rules,
            users,
            inbox,
            spool,
            opener,
            mappings: None,
            runtime,
            dns: None,
        }
    }

    /// Answers the DNS methods with this resolver (without one they answer a temporary error).
    pub fn with_dns(mut self, dns: BlockingResolver) -> Self {
        self.dns = Some(dns);
        self
    }

    /// Gives the mapping mailets these virtual user tables.
    pub fn with_mappings(mut self, mappings: Arc<dyn MappingsRepository>) -> Self {
        self.mappings = Some(mappings);
        self
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<dyn SpoolRepository> {
        &self.spool
    }

    /// Removes a finished mail together with its inbox deliveries in one transaction, when
    /// the spool and the inbox share one; `Ok(false)` when they do not (nothing done).
    /// Several at once: each its own transaction, so that they can share a group commit.
    pub fn complete_delivered(
        &self,
        finished: Vec<(LeaseToken, Vec<Delivery>)>,
    ) -> Vec<Result<bool, StoreError>> {
        let calls: Vec<_> = finished
            .into_iter()
            .map(|(token, deliveries)| {
                let (spool, inbox) = (self.spool.clone(), self.inbox.clone());
                self.runtime.spawn(async move {
                    spool.complete_delivered(&token, &*inbox, &deliveries).await
                })
            })
            .collect();
        self.wait(async move {
            let mut results = Vec::with_capacity(calls.len());
            for call in calls {
                results.push(call.await.unwrap_or_else(|e| {
                    Err(StoreError::Io(std::io::Error::other(format!(
                        "removing a finished mail: {e}"
                    ))))
                }));
            }
            results
        })
    }

    /// Drops inbox deliveries that will not be made durable (their mail is tried again).
    pub fn forget_inbox(&self, deliveries: &[Delivery]) {
        self.inbox.forget(deliveries);
    }

    /// Makes these inbox deliveries durable (`Ok` only if every one of them is).
    pub fn sync_inbox(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.wait(self.inbox.sync(deliveries))
    }

    /// Waits for an async repository call on this (worker) thread. Must not be called from a
    /// runtime thread.
    pub fn wait<F: Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }

    /// The runtime the repositories run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

/// A store error as a mailet error: I/O and resource errors are temporary, except those that
/// say the path itself is wrong (a configuration error that waiting will not mend).
pub(crate) fn store_error(e: StoreError) -> MailetError {
    use std::io::ErrorKind::{InvalidFilename, IsADirectory, NotADirectory};
    match &e {
        StoreError::Io(io)
            if matches!(io.kind(), NotADirectory | IsADirectory | InvalidFilename) =>
        {
            MailetError::permanent("").with_cause(e)
        }
        StoreError::Io(_) | StoreError::InUse(_) => MailetError::temporary("").with_cause(e),
        _ => MailetError::permanent("").with_cause(e),
    }
}

impl ServerContext {
    fn resolver(&self, name: &str) -> Result<&BlockingResolver, DnsError> {
        self.dns.as_ref().ok_or_else(|| DnsError::Temporary {
            name: name.to_string(),
            reason: "no DNS resolver configured".to_string(),
        })
    }
}

impl MailetContext for ServerContext {
    fn is_local_server(&self, domain: &str) -> bool {
        let domain = domain.to_lowercase();
        self.servernames.contains(&domain)
    }

    fn inbox_size(&self, user: &str) -> Result<u64, MailetError> {
        self.wait(self.inbox.size(user)).map_err(store_error)
    }

    fn local_user(&self, name: &str) -> Result<Option<UserRecord>, MailetError> {
        let Some(user) = self.wait(self.users.get(name)).map_err(store_error)? else {
            return Ok(None);
        };
        if !self.rules.ignore_case && user.name != name {
            return Ok(None);
        }
        let alias = user
            .alias
            .filter(|_| self.rules.enable_aliases && user.alias_enabled);
        let forward = user
            .forward
            .filter(|_| self.rules.enable_forwarding && user.forward_enabled)
            .and_then(|f| MailAddress::parse(&f).ok());
        Ok(Some(UserRecord {
            name: user.name,
            alias,
            forward,
        }))
    }

    fn postmaster(&self) -> &MailAddress {
        &self.postmaster
    }

    fn server_name(&self) -> &str {
        self.servernames.first().map_or("localhost", String::as_str)
    }

    fn send_mail(&self, mail: Mail) -> Result<(), MailetError> {
        self.wait(self.spool.store(&mail)).map_err(store_error)
    }

    fn store_mail(&self, url: &str, mail: &Mail) -> Result<(), MailetError> {
        let repository = (self.opener)(url).map_err(store_error)?;
        self.wait(repository.store(mail)).map_err(store_error)
    }

    fn deliver_to_inbox(
        &self,
        user: &str,
        trace_header: &[u8],
        mail: &Mail,
    ) -> Result<(), MailetError> {
        let delivery = self
            .wait(
                self.inbox
                    .deliver_once(mail.delivery_key(), user, trace_header, &mail.message),
            )
            .map_err(store_error)?;
        DELIVERIES.with(|d| d.borrow_mut().push(delivery));
        Ok(())
    }

    fn inbox_location(&self, user: &str) -> Option<String> {
        self.inbox.location(user)
    }

    fn address_mappings(
        &self,
        table: &str,
        address: &MailAddress,
    ) -> Result<Vec<String>, MailetError> {
        let Some(mappings) = &self.mappings else {
            return Ok(Vec::new());
        };
        let targets = self
            .wait(targets_of(&**mappings, table, address))
            .map_err(store_error)?;
        Ok(targets.iter().map(ToString::to_string).collect())
    }

    fn dns_mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        self.resolver(domain)?.mx(domain)
    }

    fn dns_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.resolver(host)?.ips(host)
    }

    fn dns_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.resolver(name)?.txt(name)
    }

    fn dns_ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.resolver(&ip.to_string())?.ptr(ip)
    }

    fn log(&self, message: &str) {
        tracing::info!(target: "mailet", "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::ErrorKind;
    use mailroom_store::StoreError;

    #[test]
    fn io_errors_are_temporary_and_the_rest_permanent() {
        let full = StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "No space left on device",
        ));
        let e = store_error(full);
        assert_eq!(e.kind(), ErrorKind::Temporary);
        assert_eq!(e.to_string(), "I/O error: No space left on device");
        assert!(store_error(StoreError::InUse("bob".into())).is_temporary());
        let emfile = StoreError::Io(std::io::Error::from_raw_os_error(24));
        assert!(store_error(emfile).is_temporary());
        for permanent in [
            StoreError::Io(std::io::ErrorKind::NotADirectory.into()),
            StoreError::InvalidUrl("file:///dev/null/x".into(), "not a directory".into()),
            StoreError::InvalidName("../x".into(), "bad"),
            StoreError::NotFound("m1".into()),
            StoreError::Corrupt("m1".into(), "bad record".into()),
        ] {
            assert_eq!(store_error(permanent).kind(), ErrorKind::Permanent);
        }
    }
}
