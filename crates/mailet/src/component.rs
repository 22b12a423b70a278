//! The traits a user implements ([`Matcher`], [`Mailet`]), what they are configured with, and
//! what they may ask of the server ([`MailetContext`]).

use std::collections::BTreeMap;

use std::net::IpAddr;

use crate::{DnsError, Mail, MailAddress, MailetError, MxRecord};

/// How a matcher is configured: `match="Name=condition"`.
#[derive(Clone, Debug, Default)]
pub struct MatcherConfig {
    /// The short name (`RecipientIs`).
    pub name: String,
    /// The text after the first `=`, trimmed, if any.
    pub condition: Option<String>,
}

impl MatcherConfig {
    /// The condition, or an error naming the matcher when it is absent or empty.
    pub fn required_condition(&self) -> Result<&str, MailetError> {
        match self.condition.as_deref() {
            Some(c) if !c.is_empty() => Ok(c),
            _ => Err(MailetError::new(format!(
                "matcher {} needs a condition ({}=...)",
                self.name, self.name
            ))),
        }
    }
}

/// How a mailet is configured: its class and its parameters (the child elements of
/// `<mailet>`; a repeated name is joined with `,`).
#[derive(Clone, Debug, Default)]
pub struct MailetConfig {
    /// The short name (`LocalDelivery`).
    pub name: String,
    /// Parameter name → trimmed value.
    pub params: BTreeMap<String, String>,
}

impl MailetConfig {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A parameter that must be present and non-empty.
    pub fn required(&self, name: &str) -> Result<&str, MailetError> {
        match self.param(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(MailetError::new(format!(
                "mailet {} needs the parameter <{name}>",
                self.name
            ))),
        }
    }

    /// A boolean parameter (`true`/`false`/`yes`/`no`), or `default` when absent.
    pub fn bool_param(&self, name: &str, default: bool) -> Result<bool, MailetError> {
        match self.param(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Ok(default),
            Some("true") | Some("yes") => Ok(true),
            Some("false") | Some("no") => Ok(false),
            Some(other) => Err(MailetError::new(format!(
                "mailet {}: <{name}> must be true or false, got {other:?}",
                self.name
            ))),
        }
    }
}

/// Picks the recipients of a mail that a mailet applies to.
pub trait Matcher: Send + Sync {
    /// The recipients matched: none skips the mailet, all of them hands it the mail, some of
    /// them splits the mail.
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError>;
}

/// Acts on a mail: delivers, stores, rewrites, or moves it to another processor by changing its
/// state.
pub trait Mailet: Send + Sync {
    /// Processes the mail.
    fn service(&self, mail: &mut Mail, ctx: &dyn MailetContext) -> Result<(), MailetError>;
}

/// What the users repository says about a local user, as far as delivery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's name as stored (the Maildir name).
    pub name: String,
    /// Another local user whose mailbox receives this user's mail, when aliasing is on.
    pub alias: Option<String>,
    /// An address this user's mail is forwarded to, when forwarding is on.
    pub forward: Option<MailAddress>,
}

/// What mailets and matchers may ask of the server. Implemented by the SpoolManager.
pub trait MailetContext: Send + Sync {
    /// Whether `domain` is one of this server's names (`<servernames>`).
    fn is_local_server(&self, domain: &str) -> bool;

    /// The user called `name`, if the users repository has one (enabled alias and forward
    /// only).
    fn local_user(&self, name: &str) -> Result<Option<UserRecord>, MailetError>;

    /// Whether `address` is a local mailbox: a local domain and an existing user.
    fn is_local_email(&self, address: &MailAddress) -> bool {
        self.is_local_server(address.domain())
            && matches!(self.local_user(address.local_part()), Ok(Some(_)))
    }

    /// The postmaster's address.
    fn postmaster(&self) -> &MailAddress;

    /// This server's own name, for what it writes about itself (the `Reporting-MTA:` of a
    /// delivery report): the first of `<servernames>`. `localhost` in contexts that do not say.
    fn server_name(&self) -> &str {
        "localhost"
    }

    /// Puts a new mail in the spool (its state says where processing starts). Durable on
    /// return.
    fn send_mail(&self, mail: Mail) -> Result<(), MailetError>;

    /// Stores a copy of the mail in the mail repository at `url` (`file://var/mail/error/`...).
    fn store_mail(&self, url: &str, mail: &Mail) -> Result<(), MailetError>;

    /// Delivers the message to a local user's inbox, with `trace_header` (Return-Path,
    /// Delivered-To) put above its header section. Durable on return.
    fn deliver_to_inbox(
        &self,
        user: &str,
        trace_header: &[u8],
        mail: &Mail,
    ) -> Result<(), MailetError>;

    /// Where [`MailetContext::deliver_to_inbox`] puts `user`'s mail (a Maildir's path), for
    /// log lines; `None` when the context does not say.
    fn inbox_location(&self, _user: &str) -> Option<String> {
        None
    }

    /// The octets held in `user`'s inbox (the sum of its messages' sizes): what quota
    /// matchers such as `RecipientIsOverFixedQuota` compare. `user` is the user's stored name,
    /// as [`MailetContext::deliver_to_inbox`] takes it. Contexts without inboxes answer a
    /// permanent error.
    fn inbox_size(&self, user: &str) -> Result<u64, MailetError> {
        Err(MailetError::permanent(format!(
            "this context cannot measure the inbox of {user}"
        )))
    }

    /// The targets `address` maps to in the virtual user table `table`, as text in the
    /// mapping syntax (`user@domain`, `user`, `error:550 text`, `regex:pattern:replacement`,
    /// `domain:other.example`). The most specific source wins: `user@domain`, then `user@*`,
    /// then `*@domain`. Empty when nothing maps it (and in contexts without tables).
    fn address_mappings(
        &self,
        _table: &str,
        _address: &MailAddress,
    ) -> Result<Vec<String>, MailetError> {
        Ok(Vec::new())
    }

    /// The mail exchangers of `domain`, sorted by preference (lowest first; equal preferences
    /// in the order the DNS server gave). [`DnsError::NoRecords`] when the domain has none:
    /// RFC 5321 then says to deliver to the domain's own addresses.
    ///
    /// Like every DNS method, this blocks the calling worker thread until the answer comes
    /// (answers are cached). Contexts without a resolver answer [`DnsError::Temporary`].
    fn dns_mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        Err(no_resolver(domain))
    }

    /// The IPv4 and IPv6 addresses of `host` (A and AAAA records).
    fn dns_ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        Err(no_resolver(host))
    }

    /// The TXT records of `name`, each one's strings joined.
    fn dns_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Err(no_resolver(name))
    }

    /// The host names of `ip` (PTR records under `in-addr.arpa` / `ip6.arpa`), without the
    /// trailing dot.
    fn dns_ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        Err(no_resolver(&ip.to_string()))
    }

    /// Writes a line to the server log on behalf of a mailet.
    fn log(&self, message: &str);
}

/// What the DNS methods of a context without a resolver answer.
fn no_resolver(name: &str) -> DnsError {
    DnsError::Temporary {
        name: name.to_string(),
        reason: "no DNS resolver in this context".to_string(),
    }
}
