//! Where a domain's mail goes: the gateways when configured, else the domain's mail exchangers
//! in preference order (RFC 5321 §5.1): no MX record means the domain itself (implicit MX), a
//! null MX (RFC 7505: one MX whose exchange is `.`) means the domain takes no mail, and an
//! address literal (`[192.0.2.1]`) is its own host.

use std::net::IpAddr;

use mailroom_dns::{DnsError, Resolver};

/// A host to try, by name (what a bounce reports as its Remote-MTA), and its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name, or the address of a literal.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

/// Why a domain has no host to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// For good: no such domain, a null MX. The text says why, with an enhanced status code.
    Permanent {
        /// The enhanced status code (`5.1.2`, `5.1.10`).
        status: &'static str,
        /// What to tell the sender.
        text: String,
    },
    /// For now: DNS gave no answer.
    Temporary(String),
}

/// The hosts for `domain`, in the order to try them.
pub async fn targets(
    resolver: &Resolver,
    domain: &str,
    gateways: &[(String, u16)],
    mx_port: u16,
) -> Result<Vec<Target>, RouteError> {
    if !gateways.is_empty() {
        return Ok(gateways
            .iter()
            .map(|(host, port)| Target {
                host: host.clone(),
                port: *port,
            })
            .collect());
    }
    if let Some(ip) = literal(domain) {
        return Ok(vec![Target {
            host: ip.to_string(),
            port: mx_port,
        }]);
    }
    match resolver.mx(domain).await {
        Ok(records) => {
            if records.iter().any(|mx| mx.exchange.is_empty()) {
                // RFC 7505: a null MX, alone as it must be (or, mixed with others, a
                // misconfiguration that must not be guessed around).
                return Err(RouteError::Permanent {
                    status: "5.1.10",
                    text: format!("556 5.1.10 {domain} does not accept mail (null MX)"),
                });
            }
            Ok(records
                .into_iter()
                .map(|mx| Target {
                    host: mx.exchange,
                    port: mx_port,
                })
                .collect())
        }
        // No MX: the domain itself is the host (its A/AAAA records).
        Err(DnsError::NoRecords { .. }) => Ok(vec![Target {
            host: domain.to_string(),
            port: mx_port,
        }]),
        Err(e) => Err(dns_error(e)),
    }
}

/// The addresses of `target`'s host.
pub async fn addresses(resolver: &Resolver, target: &Target) -> Result<Vec<IpAddr>, RouteError> {
    resolver.ips(&target.host).await.map_err(dns_error)
}

fn dns_error(e: DnsError) -> RouteError {
    match e {
        DnsError::Temporary { .. } => RouteError::Temporary(e.to_string()),
        other => RouteError::Permanent {
            status: "5.1.2",
            text: format!("550 5.1.2 {other}"),
        },
    }
}

/// The address of a domain literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
pub fn literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals() {
        assert_eq!(literal("[192.0.2.1]"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(literal("example.org"), None);
        assert_eq!(literal("[example.org]"), None);
    }
}
