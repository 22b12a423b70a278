//! RemoteAddrInNetwork and RemoteAddrNotInNetwork: the client's IP address against a list of
//! networks (`127.0.0.0/8`, `192.168.1.*`, `10.0.0.0/255.0.0.0`, IPv6 prefixes).

use std::net::IpAddr;

use mailroom_config::NetworkList;
use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher, MatcherConfig};

use super::all_if;
use crate::Registry;

pub(super) fn register(registry: &mut Registry) {
    registry.add_matcher("RemoteAddrInNetwork", |c| {
        Ok(Box::new(RemoteAddr {
            networks: networks(c)?,
            inside: true,
        }))
    }).about("Every recipient when the client's IP address is in one of the listed networks (IP, CIDR, wildcard, host name).", "<mailet match=\"RemoteAddrInNetwork=127.0.0.1, 192.168.0.0/16\" class=\"ToProcessor\"><processor>transport</processor></mailet>");
    registry.add_matcher("RemoteAddrNotInNetwork", |c| {
        Ok(Box::new(RemoteAddr {
            networks: networks(c)?,
            inside: false,
        }))
    }).about("Every recipient when the client's IP address is in none of the listed networks.", "<mailet match=\"RemoteAddrNotInNetwork=127.0.0.1\" class=\"ToProcessor\"><processor>relay-denied</processor></mailet>");
}

fn networks(config: &MatcherConfig) -> Result<NetworkList, MailetError> {
    NetworkList::parse(config.required_condition()?).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        MailetError::new(format!("{}: {}", config.name, text.join("; ")))
    })
}

/// Every recipient when the remote address is (or, with `inside: false`, is not) in the list.
struct RemoteAddr {
    networks: NetworkList,
    inside: bool,
}

impl Matcher for RemoteAddr {
    fn matches(&self, mail: &Mail, _: &dyn MailetContext) -> Result<Vec<MailAddress>, MailetError> {
        let addr = &mail.envelope.remote_addr;
        let ip: IpAddr = addr.parse().map_err(|_| {
            MailetError::new(format!("remote address {addr:?} is not an IP address"))
        })?;
        all_if(mail, self.networks.contains(ip) == self.inside)
    }
}
