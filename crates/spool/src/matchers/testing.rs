//! What the matchers' unit tests share: a context with scripted users, DNS answers and inbox
//! sizes, and short ways to build a matcher and a mail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use mailroom_mailet::{
    DnsError, Envelope, Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig,
    Message, MxRecord, UserRecord,
};

use crate::Registry;

/// A matcher from the standard registry.
pub fn build(name: &str, condition: Option<&str>) -> Box<dyn Matcher> {
    try_build(name, condition).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A matcher from the standard registry, or the factory's error.
pub fn try_build(name: &str, condition: Option<&str>) -> Result<Box<dyn Matcher>, MailetError> {
    let registry = Registry::standard();
    let factory = registry.matcher(name).expect("registered");
    factory(&MatcherConfig {
        name: name.into(),
        condition: condition.map(str::to_string),
    })
}

/// A mail from `sender` to `rcpts` with this message text.
pub fn mail_from(sender: Option<&str>, rcpts: &[&str], text: &[u8]) -> Mail {
    let rcpts = rcpts
        .iter()
        .map(|r| MailAddress::parse(r).unwrap())
        .collect();
    let sender = sender.map(|s| MailAddress::parse(s).unwrap());
    Mail::new(
        Envelope::new("m1", sender, rcpts),
        Message::from_bytes(text),
    )
}

/// The matched recipients as text, through a default [`TestContext`].
pub fn run(matcher: &dyn Matcher, mail: &Mail) -> Vec<String> {
    run_in(matcher, mail, &TestContext::default())
}

/// The matched recipients as text.
pub fn run_in(matcher: &dyn Matcher, mail: &Mail, ctx: &TestContext) -> Vec<String> {
    matcher
        .matches(mail, ctx)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A scripted context: local domain `local.example`, the users listed, DNS answers by name
/// (an absent name is NXDOMAIN), inbox sizes by user.
pub struct TestContext {
    pub postmaster: MailAddress,
    pub users: Vec<UserRecord>,
    pub a: BTreeMap<String, Result<Vec<IpAddr>, DnsError>>,
    pub mx: BTreeMap<String, Result<Vec<MxRecord>, DnsError>>,
    pub inbox_sizes: BTreeMap<String, u64>,
    /// Every DNS name asked, in order.
    pub asked: Mutex<Vec<String>>,
}

impl Default for TestContext {
    fn default() -> Self {
        TestContext {
            postmaster: MailAddress::parse("postmaster@local.example").unwrap(),
            users: Vec::new(),
            a: BTreeMap::new(),
            mx: BTreeMap::new(),
            inbox_sizes: BTreeMap::new(),
            asked: Mutex::new(Vec::new()),
        }
    }
}

impl TestContext {
    pub fn user(mut self, name: &str, alias: Option<&str>) -> Self {
        self.users.push(UserRecord {
            name: name.into(),
            alias: alias.map(str::to_string),
            forward: None,
        });
        self
    }

    fn answer<T: Clone>(
        &self,
        table: &BTreeMap<String, Result<Vec<T>, DnsError>>,
        name: &str,
        record_type: &'static str,
    ) -> Result<Vec<T>, DnsError> {
        self.asked.lock().unwrap().push(name.to_string());
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        match table.get(&key) {
            Some(answer) => answer.clone(),
            None if self.a.contains_key(&key) || self.mx.contains_key(&key) => {
                Err(DnsError::NoRecords {
                    name: name.into(),
                    record_type,
                })
            }
            None => Err(DnsError::NoSuchDomain { name: name.into() }),
        }
    }
}

impl MailetContext for TestContext {
    fn is_local_server(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case("local.example")
    }
    fn local_user(&self, name: &str) -> Result<Option<UserRecord>, MailetError> {
        Ok(self.users.iter().find(|u| u.name == name).cloned())
    }
    fn postmaster(&self) -> &MailAddress {
        &self.postmaster
    }
    fn send_mail(&self, _: Mail) -> Result<(), MailetError> {
        unreachable!("matchers send no mail")
    }
    fn store_mail(&self, _: &str, _: &Mail) -> Result<(), MailetError> {
        unreachable!("matchers store no mail")
    }
    fn deliver_to_inbox(&self, _: &str, _: &[u8], _: &Mail) -> Result<(), MailetError> {
        unreachable!("matchers deliver no mail")
    }
    fn inbox_size(&self, user: &str) -> Result<u64, MailetError> {
        Ok(self.inbox_sizes.get(user).copied().unwrap_or(0))
    }
    fn dns_mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        self.answer(&self.mx, domain, "MX")
    }
    fn dns_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse() {
            return Ok(vec![ip]);
        }
        self.answer(&self.a, host, "A/AAAA")
    }
    fn log(&self, _: &str) {}
}
