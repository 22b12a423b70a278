//! Matchers that ask the DNS, through the context's resolver: InSpammerBlacklist (a DNS
//! blacklist) and SenderInFakeDomain (a sender domain that cannot receive mail).
//!
//! NXDOMAIN and "no records" are answers; a timeout or a server failure is not, and is a
//! temporary matcher error: the mail stays in the spool and is tried again later, rather than
//! being judged on a lookup that did not happen.

use std::fmt::Write as _;
use std::net::IpAddr;

use mailroom_config::NetworkList;
use mailroom_mailet::{
    check_domain, DnsError, Mail, MailAddress, MailetContext, MailetError, Matcher,
};

use super::all_if;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry
        .add_matcher("InSpammerBlacklist", |c| {
            let zone = c.required_condition()?.trim().trim_end_matches('.').to_string();
            check_domain(&zone).map_err(|e| {
                MailetError::new(format!("InSpammerBlacklist: {zone:?} is not a DNS zone: {e}"))
            })?;
            Ok(Box::new(InSpammerBlacklist { zone }))
        })
        .about(
            "Every recipient when the client's IP address is listed in the DNS blacklist zone: \
             the reversed address (IPv4 octets, IPv6 nibbles) under the zone has an A record. \
             A DNS failure keeps the mail in the spool to be tried again.",
            r#"<mailet match="InSpammerBlacklist=zen.spamhaus.org." class="ToProcessor"><processor>spam</processor></mailet>"#,
        );
    registry
        .add_matcher("SenderInFakeDomain", |c| {
            let networks = match c.condition.as_deref().map(str::trim) {
                None | Some("") => NetworkList::default(),
                Some(list) => NetworkList::parse(list).map_err(|errors| {
                    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    MailetError::new(format!("SenderInFakeDomain: {}", text.join("; ")))
                })?,
            };
            Ok(Box::new(SenderInFakeDomain { networks }))
        })
        .about(
            "Every recipient when the sender's domain has no mail server (no MX and no \
             address, or a null MX), or when its first mail server's addresses all lie in the \
             listed networks (optional: addresses that bogus domains resolve to). Never for \
             the null sender. A DNS failure keeps the mail in the spool to be tried again.",
            r#"<mailet match="SenderInFakeDomain=64.55.105.9, 198.51.100.0/24" class="ToProcessor"><processor>spam</processor></mailet>"#,
        );
}

/// The DNS name under which a blacklist lists `ip`: `4.3.2.1` for 1.2.3.4, the 32 nibbles in
/// reverse for IPv6 (an IPv4-mapped IPv6 address is looked up as IPv4).
pub(crate) fn reversed(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(63);
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            name.pop();
            name
        }
    }
}

/// `InSpammerBlacklist=zone`.
struct InSpammerBlacklist {
    /// Without the trailing dot.
    zone: String,
}

impl Matcher for InSpammerBlacklist {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let addr = mail.envelope.remote_addr.trim_matches(['[', ']']);
        let Ok(ip) = addr.parse::<IpAddr>() else {
            // Nothing to look up (a mail made inside the server says so): not listed.
            return Ok(Vec::new());
        };
        let name = format!("{}.{}", reversed(ip), self.zone);
        match ctx.dns_ips(&name) {
            Ok(ips) => all_if(mail, !ips.is_empty()),
            Err(e) if e.is_temporary() => Err(MailetError::from(e)),
            Err(_) => Ok(Vec::new()),
        }
    }
}

/// `SenderInFakeDomain=networks`.
struct SenderInFakeDomain {
    /// Empty: only a domain without any mail server is fake.
    networks: NetworkList,
}

impl SenderInFakeDomain {
    /// The host mail for `domain` goes to first: its most preferred MX, else the domain itself
    /// when it has addresses (as James's `getMailServers`). `None`: no mail server at all.
    fn first_server(domain: &str, ctx: &dyn MailetContext) -> Result<Option<String>, DnsError> {
        match ctx.dns_mx(domain) {
            // A null MX (RFC 7505, an exchange of ".") says the domain takes no mail.
            Ok(mxs) => Ok(mxs
                .into_iter()
                .map(|mx| mx.exchange)
                .find(|exchange| !exchange.is_empty() && exchange != ".")),
            Err(e) if e.is_temporary() => Err(e),
            Err(DnsError::InvalidName { .. }) => Ok(None),
            Err(_) => match ctx.dns_ips(domain) {
                Ok(ips) if !ips.is_empty() => Ok(Some(domain.to_string())),
                Ok(_) => Ok(None),
                Err(e) if e.is_temporary() => Err(e),
                Err(_) => Ok(None),
            },
        }
    }
}

impl Matcher for SenderInFakeDomain {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let Some(sender) = mail.sender() else {
            return Ok(Vec::new());
        };
        let Some(server) = Self::first_server(sender.domain(), ctx)? else {
            ctx.log(&format!(
                "SenderInFakeDomain: no MX or address record for {}",
                sender.domain()
            ));
            return all_if(mail, true);
        };
        if self.networks.networks().is_empty() {
            return Ok(Vec::new());
        }
        let ips = match ctx.dns_ips(&server) {
            Ok(ips) => ips,
            Err(e) if e.is_temporary() => return Err(e.into()),
            // An MX host without addresses: nothing to compare (James does the same).
            Err(_) => return Ok(Vec::new()),
        };
        let banned = !ips.is_empty() && ips.iter().all(|ip| self.networks.contains(*ip));
        all_if(mail, banned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::testing::{build, mail_from, run_in, try_build, TestContext};
    use mailroom_mailet::{ErrorKind, MxRecord};

    fn temporary(name: &str) -> DnsError {
        DnsError::Temporary {
            name: name.into(),
            reason: "timed out".into(),
        }
    }

    #[test]
    fn reverses_addresses() {
        assert_eq!(reversed("192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(reversed("::ffff:192.0.2.1".parse().unwrap()), "1.2.0.192");
        assert_eq!(
            reversed("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    #[test]
    fn blacklist_lookups() {
        let mut ctx = TestContext::default();
        ctx.a.insert(
            "2.0.0.127.bl.example".into(),
            Ok(vec!["127.0.0.2".parse().unwrap()]),
        );
        ctx.a
            .insert("9.0.0.127.bl.example".into(), Err(temporary("x")));
        let m = build("InSpammerBlacklist", Some("bl.example."));
        let mut mail = mail_from(
            Some("s@a.example"),
            &["r@b.example", "q@b.example"],
            b"\r\nx",
        );
        mail.envelope.remote_addr = "127.0.0.2".into();
        assert_eq!(run_in(&*m, &mail, &ctx).len(), 2);
        mail.envelope.remote_addr = "127.0.0.3".into();
        assert!(run_in(&*m, &mail, &ctx).is_empty());
        mail.envelope.remote_addr = "127.0.0.9".into();
        let e = m.matches(&mail, &ctx).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Temporary);
        mail.envelope.remote_addr = "2001:db8::1".into();
        assert!(run_in(&*m, &mail, &ctx).is_empty());
        assert_eq!(
            ctx.asked.lock().unwrap().last().unwrap(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
        );
        assert!(try_build("InSpammerBlacklist", None).is_err());
        assert!(try_build("InSpammerBlacklist", Some("bad zone")).is_err());
    }

    #[test]
    fn fake_domains() {
        let mut ctx = TestContext::default();
        let mx = |host: &str| {
            Ok(vec![
                MxRecord {
                    preference: 10,
                    exchange: host.into(),
                },
                MxRecord {
                    preference: 20,
                    exchange: "backup.example".into(),
                },
            ])
        };
        let ip = |s: &str| Ok(vec![s.parse().unwrap()]);
        ctx.mx.insert("good.example".into(), mx("mx.good.example"));
        ctx.a.insert("mx.good.example".into(), ip("192.0.2.25"));
        ctx.mx
            .insert("parked.example".into(), mx("mx.parked.example"));
        ctx.a.insert("mx.parked.example".into(), ip("198.51.100.7"));
        ctx.a.insert("a-only.example".into(), ip("192.0.2.80"));
        ctx.a.insert("a-parked.example".into(), ip("198.51.100.8"));
        ctx.mx.insert(
            "nullmx.example".into(),
            Ok(vec![MxRecord {
                preference: 0,
                exchange: "".into(),
            }]),
        );
        ctx.mx
            .insert("slow.example".into(), Err(temporary("slow.example")));
        ctx.mx
            .insert("slow-mx.example".into(), mx("mx.slow-mx.example"));
        ctx.a
            .insert("mx.slow-mx.example".into(), Err(temporary("mx")));

        let with_networks = build("SenderInFakeDomain", Some("198.51.100.0/24, 203.0.113.5"));
        let plain = build("SenderInFakeDomain", None);
        let matched = |m: &dyn Matcher, sender: &str| {
            let mail = mail_from(Some(sender), &["r@local.example"], b"\r\nx");
            m.matches(&mail, &ctx).map(|r| r.len())
        };
        for (sender, networks, without) in [
            ("a@good.example", 0, 0),
            ("a@parked.example", 1, 0),
            ("a@a-only.example", 0, 0),
            ("a@a-parked.example", 1, 0),
            ("a@nowhere.example", 1, 1),
            ("a@nullmx.example", 1, 1),
        ] {
            assert_eq!(
                matched(&*with_networks, sender).unwrap(),
                networks,
                "{sender}"
            );
            assert_eq!(matched(&*plain, sender).unwrap(), without, "{sender}");
        }
        for sender in ["a@slow.example", "a@slow-mx.example"] {
            let e = matched(&*with_networks, sender).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Temporary, "{sender}");
        }
        let bounce = mail_from(None, &["r@local.example"], b"\r\nx");
        assert!(run_in(&*with_networks, &bounce, &ctx).is_empty());
        assert!(try_build("SenderInFakeDomain", Some("10.0.0.0/99")).is_err());
    }
}
