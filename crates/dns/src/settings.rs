//! Which DNS servers to ask, and how: `<dnsserver>` of the configuration, plus the system's
//! resolvers from `/etc/resolv.conf` when `<autodiscover>` is on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use mailroom_config::DnsServer;

/// Where the system lists its resolvers.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How a [`Resolver`](crate::Resolver) is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSettings {
    /// The servers, asked in this order.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one server's answer.
    pub timeout: Duration,
    /// How many times a query is sent before giving up.
    pub attempts: usize,
    /// How many answers the cache keeps.
    pub cache_size: u64,
}

impl Default for ResolverSettings {
    /// The local resolver (`127.0.0.1:53`), 5 s per query, 2 attempts, 50,000 cached answers.
    fn default() -> Self {
        ResolverSettings {
            servers: vec![local_resolver()],
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 50_000,
        }
    }
}

impl ResolverSettings {
    /// The settings of `<dnsserver>`: its `<servers>` first, then (with `<autodiscover>`) the
    /// resolvers of `/etc/resolv.conf`. When that file cannot be read, or no server is left at
    /// all, this logs why and falls back to `127.0.0.1:53`, as James does: a server must start
    /// even on a host without DNS configuration.
    pub fn from_config(dns: &DnsServer) -> ResolverSettings {
        ResolverSettings::from_config_with(dns, Path::new(RESOLV_CONF))
    }

    /// [`ResolverSettings::from_config`] with another `resolv.conf` (for tests).
    pub fn from_config_with(dns: &DnsServer, resolv_conf: &Path) -> ResolverSettings {
        let mut servers = dns.servers.clone();
        if dns.autodiscover {
            match system_servers(resolv_conf) {
                Ok(found) => servers.extend(found),
                Err(e) => tracing::warn!(
                    "<dnsserver> autodiscover: cannot use {}: {e}",
                    resolv_conf.display()
                ),
            }
        }
        let mut unique = Vec::new();
        for server in servers {
            if !unique.contains(&server) {
                unique.push(server);
            }
        }
        if unique.is_empty() {
            tracing::warn!("no DNS server configured or discovered; using 127.0.0.1:53");
            unique.push(local_resolver());
        }
        if dns.authoritative {
            tracing::warn!(
                "<dnsserver><authoritative>true is not supported; answers from the \
                 configured resolvers are used as they come"
            );
        }
        ResolverSettings {
            servers: unique,
            cache_size: u64::from(dns.max_cache_size),
            ..ResolverSettings::default()
        }
    }
}

fn local_resolver() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)
}

/// The `nameserver` lines of a `resolv.conf`.
fn system_servers(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let (config, _) =
        hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| e.to_string())?;
    Ok(config
        .name_servers()
        .iter()
        .map(|s| {
            let port = s.connections.first().map_or(53, |c| c.port);
            SocketAddr::new(s.ip, port)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &[&str], autodiscover: bool) -> DnsServer {
        DnsServer {
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            autodiscover,
            ..DnsServer::default()
        }
    }

    #[test]
    fn configured_servers_come_first_then_the_system_ones() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "search example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 127.0.0.1\n",
        )
        .unwrap();
        let s = ResolverSettings::from_config_with(&config(&["127.0.0.1:5353"], true), &resolv);
        let expected: Vec<SocketAddr> = [
            "127.0.0.1:5353",
            "192.0.2.53:53",
            "[2001:db8::53]:53",
            "127.0.0.1:53",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(s.servers, expected);
        assert_eq!(s.cache_size, 50_000);

        let s = ResolverSettings::from_config_with(&config(&["127.0.0.1:5353"], false), &resolv);
        assert_eq!(s.servers, vec!["127.0.0.1:5353".parse().unwrap()]);
    }

    #[test]
    fn a_missing_resolv_conf_falls_back_to_the_local_resolver() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let s = ResolverSettings::from_config_with(&config(&[], true), &missing);
        assert_eq!(s.servers, vec![local_resolver()]);
        let s = ResolverSettings::from_config_with(&config(&["192.0.2.1:53"], true), &missing);
        assert_eq!(s.servers, vec!["192.0.2.1:53".parse().unwrap()]);
    }
}
