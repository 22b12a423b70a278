//! The server's one DNS resolver: MX, A/AAAA, TXT and PTR lookups with typed answers and a
//! cache, shared by the matchers and mailets (through the SpoolManager's context) and by remote
//! delivery.
//!
//! [`Resolver`] is asynchronous (hickory-resolver on the server's tokio runtime). The
//! SpoolManager's workers are plain threads that run synchronous mailets, so they reach it
//! through a [`BlockingResolver`], which waits for an answer with the runtime's
//! `Handle::block_on` — allowed there because a worker thread is not a runtime thread.
//!
//! Errors tell an answer from its absence ([`DnsError`]): NXDOMAIN and "no records of that
//! type" are answers (permanent), a timeout, SERVFAIL, a refused query or an unreachable server
//! are not (temporary: ask again later).
//!
//! Names are looked up as absolute names (`example.com.`): the search domains of
//! `/etc/resolv.conf` never apply to mail domains.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod settings;

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
pub use mailroom_mailet::{DnsError, MxRecord};

pub use settings::ResolverSettings;

/// A caching DNS resolver. Cheap to share behind an [`Arc`]; every clone of that `Arc` shares
/// one cache.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver asking `settings.servers` in order.
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, String> {
        if settings.servers.is_empty() {
            return Err("no DNS server to ask".to_string());
        }
        let servers = settings
            .servers
            .iter()
            .map(|addr| {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![
                        connection(ConnectionConfig::udp()),
                        connection(ConnectionConfig::tcp()),
                    ],
                )
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts;
        options.cache_size = settings.cache_size;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Resolver { inner })
    }

    /// The mail exchangers of `domain`, sorted by preference (lowest first; equal preferences
    /// keep the server's order). A null MX (RFC 7505: "this domain accepts no mail") is an
    /// exchange of `""`.
    pub async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        let name = absolute(domain)?;
        let lookup = self
            .inner
            .lookup(name, RecordType::MX)
            .await
            .map_err(|e| classify(domain, "MX", e))?;
        let mut records: Vec<MxRecord> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(MxRecord {
                    preference: mx.preference,
                    exchange: host_name(&mx.exchange),
                }),
                _ => None,
            })
            .collect();
        records.sort_by_key(|mx| mx.preference);
        non_empty(records, domain, "MX")
    }

    /// The IPv4 and IPv6 addresses of `host` (A and AAAA records; an IP literal is its own
    /// answer).
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = absolute(host)?;
        let lookup = self
            .inner
            .lookup_ip(name)
            .await
            .map_err(|e| classify(host, "A/AAAA", e))?;
        non_empty(lookup.iter().collect(), host, "A/AAAA")
    }

    /// The TXT records of `name`, each one's character-strings joined (as SPF and DNSBL
    /// readers expect).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let absolute_name = absolute(name)?;
        let lookup = self
            .inner
            .lookup(absolute_name, RecordType::TXT)
            .await
            .map_err(|e| classify(name, "TXT", e))?;
        let texts = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        non_empty(texts, name, "TXT")
    }

    /// The host names of `ip` (PTR records), without the trailing dot.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut name = Name::from(ip);
        name.set_fqdn(true);
        let shown = ip.to_string();
        let lookup = self
            .inner
            .lookup(name, RecordType::PTR)
            .await
            .map_err(|e| classify(&shown, "PTR", e))?;
        let names = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => Some(host_name(&ptr.0)),
                _ => None,
            })
            .collect();
        non_empty(names, &shown, "PTR")
    }
}

/// A [`Resolver`] for synchronous callers on threads that are not the runtime's own (the
/// SpoolManager's workers): each call waits for the answer with the runtime's
/// `Handle::block_on`.
#[derive(Clone)]
pub struct BlockingResolver {
    resolver: Arc<Resolver>,
    runtime: tokio::runtime::Handle,
}

impl BlockingResolver {
    /// Lookups through `resolver`, driven by the runtime of `runtime` (which must be a
    /// multi-threaded runtime: its own threads run the resolver's network I/O).
    pub fn new(resolver: Arc<Resolver>, runtime: tokio::runtime::Handle) -> Self {
        BlockingResolver { resolver, runtime }
    }

    /// The shared asynchronous resolver.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// [`Resolver::mx`], waiting for the answer.
    pub fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        self.wait(domain, self.resolver.mx(domain))
    }

    /// [`Resolver::ips`], waiting for the answer.
    pub fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.wait(host, self.resolver.ips(host))
    }

    /// [`Resolver::txt`], waiting for the answer.
    pub fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.wait(name, self.resolver.txt(name))
    }

    /// [`Resolver::ptr`], waiting for the answer.
    pub fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.wait(&ip.to_string(), self.resolver.ptr(ip))
    }

    fn wait<T>(
        &self,
        name: &str,
        lookup: impl std::future::Future<Output = Result<T, DnsError>>,
    ) -> Result<T, DnsError> {
        // Blocking inside an async task would stall (or panic) the runtime: refuse instead.
        if tokio::task::try_id().is_some() {
            return Err(DnsError::Temporary {
                name: name.to_string(),
                reason: "blocking DNS lookup called from an async task".to_string(),
            });
        }
        self.runtime.block_on(lookup)
    }
}

/// `name` as an absolute DNS name, so that no search domain is tried.
fn absolute(name: &str) -> Result<Name, DnsError> {
    let invalid = || DnsError::InvalidName {
        name: name.to_string(),
    };
    if name.is_empty() || name.starts_with('.') {
        return Err(invalid());
    }
    let mut parsed = Name::from_utf8(name).map_err(|_| invalid())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A host name from DNS as mail code writes it: no trailing dot.
fn host_name(name: &Name) -> String {
    name.to_utf8().trim_end_matches('.').to_string()
}

/// An empty answer (only CNAMEs, say) is "no records" too.
fn non_empty<T>(found: Vec<T>, name: &str, record_type: &'static str) -> Result<Vec<T>, DnsError> {
    if found.is_empty() {
        Err(DnsError::NoRecords {
            name: name.to_string(),
            record_type,
        })
    } else {
        Ok(found)
    }
}

/// NXDOMAIN and NODATA are answers; anything else (timeouts, SERVFAIL, REFUSED, network
/// errors) is the absence of one.
fn classify(name: &str, record_type: &'static str, e: NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NoSuchDomain {
            name: name.to_string(),
        }
    } else if e.is_no_records_found() {
        DnsError::NoRecords {
            name: name.to_string(),
            record_type,
        }
    } else {
        DnsError::Temporary {
            name: name.to_string(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_absolute_and_checked() {
        assert_eq!(absolute("example.com").unwrap().to_utf8(), "example.com.");
        assert_eq!(absolute("example.com.").unwrap().to_utf8(), "example.com.");
        assert!(absolute("").is_err());
        assert!(absolute(".example").is_err());
        assert!(absolute("a..b").is_err());
    }

    #[test]
    fn a_resolver_needs_a_server() {
        let settings = ResolverSettings {
            servers: Vec::new(),
            ..ResolverSettings::default()
        };
        assert!(Resolver::new(&settings).is_err());
    }
}
