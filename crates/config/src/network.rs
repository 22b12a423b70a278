//! IP network lists in the forms James accepts for `authorizedAddresses` and the
//! `RemoteAddrInNetwork` / `RemoteAddrNotInNetwork` matchers.
//!
//! Accepted entries, separated by commas and/or whitespace:
//! * a plain address: `192.168.1.10`, `::1`, `[::1]`;
//! * CIDR: `10.0.0.0/8`, `2001:db8::/32`;
//! * an IPv4 netmask: `127.0.0.0/255.0.0.0` (the mask must be contiguous);
//! * IPv4 wildcards: `127.*`, `192.168.1.*` (`*` stands for every remaining octet);
//! * `localhost` (optionally with a prefix, `localhost/8`), meaning `127.0.0.1` (and `::1` when
//!   no prefix is given).
//!
//! Other host names are accepted as James accepted them, with a warning each: a name is resolved
//! once, when the configuration is read, and its addresses are used from then on (the answer
//! may change while the server runs, and a relay permission granted to a name follows whoever
//! controls its DNS: write the addresses instead); a name that does not resolve, and a host-name
//! wildcard such as `abc.de.*` or `*.example.com` (which would need a reverse lookup of every
//! client), are skipped. Malformed addresses, masks and octets stay errors.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a dual-stack socket reports for IPv4
//! clients) match the IPv4 networks, and IPv4-mapped IPv6 networks are stored as IPv4 ones.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A list entry that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{entry}\": {reason}")]
pub struct NetworkError {
    /// The entry as written.
    pub entry: String,
    /// Why it was rejected.
    pub reason: String,
}

/// One IP network: an address with its host bits cleared and a prefix length. The prefix
/// arithmetic is `ipnet`'s; this type adds the James forms and the IPv4-mapped rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    /// The network `addr/prefix`; host bits of `addr` are cleared. IPv4-mapped IPv6 networks
    /// (`::ffff:a.b.c.d/96+n`) become the IPv4 network `a.b.c.d/n`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Network, String> {
        let net = IpNet::new(addr, prefix).map_err(|_| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            format!("prefix /{prefix} is longer than {max} bits")
        })?;
        Ok(Network::from_ipnet(net))
    }

    /// `net` with its host bits cleared, IPv4-mapped IPv6 networks stored as IPv4 ones.
    fn from_ipnet(net: IpNet) -> Network {
        if let IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                return Network(IpNet::new_assert(IpAddr::V4(v4), v6.prefix_len() - 96).trunc());
            }
        }
        Network(net.trunc())
    }

    /// Parses one entry (see the module documentation for the forms).
    pub fn parse(entry: &str) -> Result<Vec<Network>, NetworkError> {
        // The CIDR form is ipnet's own syntax; the James forms are handled below.
        if let Ok(net) = entry.parse::<IpNet>() {
            return Ok(vec![Network::from_ipnet(net)]);
        }
        let fail = |reason: String| NetworkError {
            entry: entry.to_string(),
            reason,
        };
        let (host, mask) = match entry.split_once('/') {
            Some((h, m)) => (h, Some(m)),
            None => (entry, None),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);

        if host.contains('*') {
            if mask.is_some() {
                return Err(fail("a wildcard cannot also have a mask".into()));
            }
            return wildcard(host).map(|n| vec![n]).map_err(fail);
        }
        let addrs: Vec<IpAddr> =
            if host.eq_ignore_ascii_case("localhost") {
                let mut v = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
                if mask.is_none() {
                    v.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
                }
                v
            } else {
                match host.parse::<IpAddr>() {
                    Ok(a) => vec![a],
                    Err(_) => return Err(fail(
                        "not an IP address or network; host names are not accepted because they \
                         would need DNS at start-up (write the addresses instead)"
                            .into(),
                    )),
                }
            };
        addrs
            .into_iter()
            .map(|addr| match mask {
                None => Network::new(addr, if addr.is_ipv4() { 32 } else { 128 }).map_err(&fail),
                Some(m) => with_mask(addr, m).map_err(&fail),
            })
            .collect()
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix())
    }
}

/// `addr/8` or, for IPv4, `addr/255.0.0.0`.
fn with_mask(addr: IpAddr, mask: &str) -> Result<Network, String> {
    if let Ok(n) = mask.parse::<u8>() {
        return Network::new(addr, n);
    }
    match (addr, mask.parse::<Ipv4Addr>()) {
        (IpAddr::V4(_), Ok(m)) => IpNet::with_netmask(addr, IpAddr::V4(m))
            .map(Network::from_ipnet)
            .map_err(|_| format!("netmask {m} is not contiguous")),
        _ => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            Err(format!("\"{mask}\" is not a prefix length from 0 to {max}"))
        }
    }
}

/// `192.168.*` → `192.168.0.0/16`; `*` may only stand for trailing octets.
fn wildcard(host: &str) -> Result<Network, String> {
    let parts: Vec<&str> = host.split('.').collect();
    let stars = parts.iter().position(|p| *p == "*").unwrap_or(parts.len());
    if parts.len() > 4 || parts[stars..].iter().any(|p| *p != "*") {
        return Err("a wildcard must look like 192.168.* (whole trailing octets only)".into());
    }
    let mut octets = [0u8; 4];
    for (i, p) in parts[..stars].iter().enumerate() {
        octets[i] = p
            .parse()
            .map_err(|_| format!("\"{p}\" is not an octet from 0 to 255"))?;
    }
    Network::new(IpAddr::V4(Ipv4Addr::from(octets)), (stars * 8) as u8)
}

/// `None` when `entry` is not a host name; else its networks (the name resolved now), or why
/// it is skipped.
fn host_name_entry(entry: &str) -> Option<Result<Vec<Network>, String>> {
    use std::net::ToSocketAddrs;
    let (host, mask) = match entry.split_once('/') {
        Some((h, m)) => (h, Some(m)),
        None => (entry, None),
    };
    // IPv6 addresses have letters too, but always a colon; `localhost` is handled as a network.
    if !host.contains(|c: char| c.is_ascii_alphabetic())
        || host.contains(':')
        || host.eq_ignore_ascii_case("localhost")
    {
        return None;
    }
    if host.contains('*') {
        return Some(Err(
            "a host-name wildcard would need a reverse DNS lookup of every \
                         client, which Mailroom does not do; write the addresses instead"
                .into(),
        ));
    }
    let addrs: Vec<IpAddr> = match (host, 0u16).to_socket_addrs() {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(e) => return Some(Err(format!("the host name does not resolve ({e})"))),
    };
    if addrs.is_empty() {
        return Some(Err("the host name has no address".into()));
    }
    let mut networks = Vec::new();
    for addr in &addrs {
        let net = match mask {
            None => Network::new(*addr, if addr.is_ipv4() { 32 } else { 128 }),
            Some(m) => with_mask(*addr, m),
        };
        match net {
            Ok(n) if !networks.contains(&n) => networks.push(n),
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    let list: Vec<String> = networks.iter().map(ToString::to_string).collect();
    tracing::warn!(
        "network list entry \"{entry}\": host name resolved once, now, to {}; write the \
         addresses to stop depending on DNS",
        list.join(", ")
    );
    Some(Ok(networks))
}

/// A set of networks; an address is in the list when any network contains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkList {
    networks: Vec<Network>,
}

impl NetworkList {
    /// Parses entries separated by commas and/or whitespace. Every bad entry is reported.
    pub fn parse(list: &str) -> Result<NetworkList, Vec<NetworkError>> {
        let mut networks = Vec::new();
        let mut errors = Vec::new();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if let Some(named) = host_name_entry(entry) {
                match named {
                    Ok(found) => networks.extend(found),
                    Err(why) => tracing::warn!("network list entry \"{entry}\": {why}; skipped"),
                }
                continue;
            }
            match Network::parse(entry) {
                Ok(n) => networks.extend(n),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(NetworkList { networks })
        } else {
            Err(errors)
        }
    }

    /// `127.0.0.0/8` and `::1/128`: who may relay when nothing else is configured.
    pub fn loopback() -> NetworkList {
        NetworkList {
            networks: vec![
                Network::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("valid"),
                Network::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).expect("valid"),
            ],
        }
    }

    /// Whether any network of the list contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The networks, in the order written.
    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Whether the list has no network (contains nothing).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

impl fmt::Display for NetworkList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.networks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forms() {
        let l = NetworkList::parse(
            "127.0.0.0/8, 192.168.1.*  10.0.0.0/255.255.0.0,2001:db8::/32 172.16.5.4\n::1",
        )
        .unwrap();
        for yes in [
            "127.1.2.3",
            "192.168.1.77",
            "10.0.200.1",
            "2001:db8:1::5",
            "172.16.5.4",
            "::1",
        ] {
            assert!(l.contains(ip(yes)), "{yes}");
        }
        for no in [
            "128.0.0.1",
            "192.168.2.1",
            "10.1.0.1",
            "2001:db9::1",
            "172.16.5.5",
            "::2",
        ] {
            assert!(!l.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn wildcards_and_equivalents() {
        let a = NetworkList::parse("127.*").unwrap();
        let b = NetworkList::parse("127.0.0.0/255.0.0.0").unwrap();
        let c = NetworkList::parse("localhost/8").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), "127.0.0.0/8");
        assert!(NetworkList::parse("1.2.*.*")
            .unwrap()
            .contains(ip("1.2.3.4")));
        assert!(NetworkList::parse("1.*.3").is_err());
    }

    #[test]
    fn ipv4_mapped() {
        let l = NetworkList::parse("10.0.0.0/8").unwrap();
        assert!(l.contains(ip("::ffff:10.9.8.7")));
        assert!(!l.contains(ip("::ffff:11.9.8.7")));
        let m = NetworkList::parse("::ffff:192.168.0.0/112").unwrap();
        assert_eq!(m.to_string(), "192.168.0.0/16");
        assert!(m.contains(ip("192.168.4.4")));
    }

    #[test]
    fn host_bits_are_cleared_and_localhost_covers_both() {
        assert_eq!(
            NetworkList::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        let l = NetworkList::parse("localhost").unwrap();
        assert!(l.contains(ip("127.0.0.1")) && l.contains(ip("::1")));
        assert!(!l.contains(ip("127.0.0.2")));
    }

    #[test]
    fn ipv6_prefixes_brackets_and_edge_masks() {
        let l = NetworkList::parse("2001:db8::1/64 [::1] [fe80::]/10 0.0.0.0/0.0.0.0").unwrap();
        assert_eq!(
            l.to_string(),
            "2001:db8::/64, ::1/128, fe80::/10, 0.0.0.0/0"
        );
        assert!(l.contains(ip("2001:db8::ffff")));
        assert!(l.contains(ip("fe80::1")));
        assert!(!l.contains(ip("2001:db8:0:1::1")));
        // 0.0.0.0/0 holds every IPv4 address, and IPv4-mapped ones, but no IPv6 address.
        let any4 = NetworkList::parse("0.0.0.0/0").unwrap();
        assert!(any4.contains(ip("203.0.113.9")) && any4.contains(ip("::ffff:1.2.3.4")));
        assert!(!any4.contains(ip("2001:db8::1")));
        let e = NetworkList::parse("::/129, ::1/255.0.0.0, 10.0.0.0/x").unwrap_err();
        assert!(e[0].reason.contains("longer than 128"), "{}", e[0]);
        assert!(e[1].reason.contains("from 0 to 128"), "{}", e[1]);
        assert!(e[2].reason.contains("from 0 to 32"), "{}", e[2]);
    }

    #[test]
    fn errors() {
        let e = NetworkList::parse("10.0.0.0/33, 10.0.0.0/255.0.255.0, 300.1.*").unwrap_err();
        assert_eq!(e.len(), 3);
        assert!(e[0].reason.contains("longer than 32"));
        assert!(e[1].reason.contains("not contiguous"));
        assert!(e[2].reason.contains("octet"));
        assert!(NetworkList::parse("").unwrap().is_empty());
    }

    #[test]
    fn host_name_wildcards_are_skipped_not_errors() {
        // The stock James file's own example.
        let l = NetworkList::parse("127.0.0.1, abc.de.*, *.example.com, 192.168.0.*").unwrap();
        assert_eq!(l.to_string(), "127.0.0.1/32, 192.168.0.0/24");
        assert_eq!(host_name_entry("10.0.0.1"), None);
        assert_eq!(host_name_entry("::1"), None);
        assert!(matches!(host_name_entry("abc.de.*"), Some(Err(_))));
    }
}
