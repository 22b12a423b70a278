//! A context for unit tests of mailets: records what is sent and logged, and answers DNS
//! questions from a table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use mailroom_mailet::{
    DnsError, Mail, MailAddress, MailetConfig, MailetContext, MailetError, MxRecord, UserRecord,
};

/// Records mails sent and lines logged.
pub(crate) struct Recorder {
    pub(crate) postmaster: MailAddress,
    pub(crate) sent: Mutex<Vec<Mail>>,
    pub(crate) log: Mutex<Vec<String>>,
    /// Domain → its mail exchangers; a domain absent here has no such domain.
    pub(crate) mx: BTreeMap<String, Vec<String>>,
    /// The local domains (`mx.example.org` unless told).
    pub(crate) local_domains: Vec<&'static str>,
    /// The local users by name (none unless told).
    pub(crate) users: BTreeMap<String, UserRecord>,
    /// Users whose lookup fails with a temporary error (a users store that is away).
    pub(crate) unreachable_users: Vec<&'static str>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            postmaster: MailAddress::parse("postmaster@mx.example.org").unwrap(),
            sent: Mutex::default(),
            log: Mutex::default(),
            mx: BTreeMap::new(),
            local_domains: vec!["mx.example.org"],
            users: BTreeMap::new(),
            unreachable_users: Vec::new(),
        }
    }
    /// A context whose local domain is `domain` (its postmaster there) with these users:
    /// `(name, alias of, forwards to)`.
    pub(crate) fn with_users(
        domain: &'static str,
        users: &[(&str, Option<&str>, Option<&str>)],
    ) -> Self {
        let users = users
            .iter()
            .map(|&(name, alias, forward)| {
                let record = UserRecord {
                    name: name.to_string(),
                    alias: alias.map(str::to_string),
                    forward: forward.map(|f| MailAddress::parse(f).unwrap()),
                };
                (name.to_string(), record)
            })
            .collect();
        Recorder {
            postmaster: MailAddress::parse(&format!("postmaster@{domain}")).unwrap(),
            local_domains: vec![domain],
            users,
            ..Recorder::new()
        }
    }
    pub(crate) fn sent(&self) -> Vec<Mail> {
        self.sent.lock().unwrap().clone()
    }
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    /// The mails sent so far, taken (the next call sees only newer ones).
    pub(crate) fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl MailetContext for Recorder {
    fn is_local_server(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
    fn local_user(&self, name: &str) -> Result<Option<UserRecord>, MailetError> {
        if self.unreachable_users.contains(&name) {
            return Err(MailetError::temporary("users store: timed out"));
        }
        Ok(self.users.get(name).cloned())
    }
    fn server_name(&self) -> &str {
        "mx.example.org"
    }
    fn postmaster(&self) -> &MailAddress {
        &self.postmaster
    }
    fn send_mail(&self, mail: Mail) -> Result<(), MailetError> {
        self.sent.lock().unwrap().push(mail);
        Ok(())
    }
    fn store_mail(&self, _: &str, _: &Mail) -> Result<(), MailetError> {
        Err(MailetError::new("no repositories in tests"))
    }
    fn deliver_to_inbox(&self, _: &str, _: &[u8], _: &Mail) -> Result<(), MailetError> {
        Err(MailetError::new("no inboxes in tests"))
    }
    fn dns_mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        match self.mx.get(domain) {
            Some(hosts) if hosts.is_empty() => Err(DnsError::NoRecords {
                name: domain.to_string(),
                record_type: "MX",
            }),
            Some(hosts) => Ok(hosts
                .iter()
                .map(|h| MxRecord {
                    preference: 10,
                    exchange: h.clone(),
                })
                .collect()),
            None if domain.ends_with(".timeout") => Err(DnsError::Temporary {
                name: domain.to_string(),
                reason: "timed out".to_string(),
            }),
            None => Err(DnsError::NoSuchDomain {
                name: domain.to_string(),
            }),
        }
    }
    fn dns_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self.mx.get(host) {
            Some(_) => Ok(vec!["192.0.2.1".parse().unwrap()]),
            None => Err(DnsError::NoSuchDomain {
                name: host.to_string(),
            }),
        }
    }
    fn log(&self, message: &str) {
        self.log.lock().unwrap().push(message.to_string());
    }
}

/// A configuration for mailet `name` with these parameters.
pub(crate) fn config(name: &str, params: &[(&str, &str)]) -> MailetConfig {
    MailetConfig {
        name: name.to_string(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Builds mailet `name` from the standard registry.
pub(crate) fn build(
    name: &str,
    params: &[(&str, &str)],
) -> Result<Box<dyn mailroom_mailet::Mailet>, MailetError> {
    let registry = crate::Registry::standard();
    let factory = registry.mailet(name).expect("registered");
    factory(&config(name, params))
}

/// A mail from `sender` to `rcpts` with this message.
pub(crate) fn mail(sender: Option<&str>, rcpts: &[&str], message: &[u8]) -> Mail {
    Mail::new(
        mailroom_mailet::Envelope::new(
            mailroom_mailet::new_mail_name(),
            sender.map(|s| MailAddress::parse(s).unwrap()),
            rcpts
                .iter()
                .map(|r| MailAddress::parse(r).unwrap())
                .collect(),
        ),
        mailroom_mailet::Message::from_bytes(message),
    )
}
