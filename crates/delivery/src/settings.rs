//! RemoteDelivery's parameters, as James 2.3 reads them: parsed from the mailet's
//! configuration and validated once, at start-up.

use std::net::IpAddr;
use std::time::Duration;

use mailroom_config::Secret;
use mailroom_mailet::{MailetConfig, MailetError};

use crate::client::Credentials;

/// James 2.3's default `<outgoing>`.
pub const DEFAULT_OUTGOING: &str = "file://var/mail/outgoing/";
/// James 2.3's default delay between attempts: 6 hours.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(6 * 3600);
/// James 2.3's default `<maxRetries>`.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// Every parameter RemoteDelivery reads (declared to the registry so that a typo is warned
/// about). `mxPort`, `requireTLS` and `gatewayAuthOverPlain` are Mailroom's own;
/// `gatewayUsername` is accepted for James's `gatewayusername`.
pub const PARAMS: &[&str] = &[
    "outgoing",
    "delayTime",
    "maxRetries",
    "deliveryThreads",
    "timeout",
    "connectiontimeout",
    "gateway",
    "gatewayPort",
    "heloName",
    "bounceProcessor",
    "sendpartial",
    "mxPort",
    "requireTLS",
    "gatewayusername",
    "gatewayUsername",
    "gatewayPassword",
    "gatewayAuthOverPlain",
    "bind",
];

/// A validated RemoteDelivery configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The outgoing spool's URL (`<outgoing>`).
    pub outgoing: String,
    /// The delay before retry *n* is `delays[n - 1]`: `<delayTime>` expanded by its attempt
    /// counts, with exactly `max_retries` entries (James's rules, see [`parse_delays`]).
    pub delays: Vec<Duration>,
    /// Retries after the first attempt (`<maxRetries>`); the mail is tried `max_retries + 1`
    /// times in all.
    pub max_retries: u32,
    /// Concurrent deliveries from this outgoing spool (`<deliveryThreads>`).
    pub threads: usize,
    /// How long to wait for any one reply of a remote server (`<timeout>`, ms).
    pub timeout: Duration,
    /// How long to wait for a TCP connection (`<connectiontimeout>`, ms).
    pub connect_timeout: Duration,
    /// Smart hosts (`<gateway>`), tried in order instead of MX; empty: MX delivery.
    pub gateways: Vec<(String, u16)>,
    /// The name said in EHLO/HELO (`<heloName>`).
    pub helo_name: String,
    /// Where failed recipients go (`<bounceProcessor>`).
    pub bounce_processor: Option<String>,
    /// Send to the accepted recipients even when others are refused (`<sendpartial>`).
    pub send_partial: bool,
    /// The port of mail exchangers: 25. `<mxPort>` is Mailroom's own parameter, for tests
    /// that run their catching servers on unprivileged ports.
    pub mx_port: u16,
    /// STARTTLS is mandatory (`<requireTLS>`, Mailroom's own): a host without it, or a
    /// failed handshake, is a temporary failure. The certificate is not checked either way.
    pub require_tls: bool,
    /// AUTH to the gateways (`<gatewayusername>`, `<gatewayPassword>`; over plain text only
    /// with Mailroom's `<gatewayAuthOverPlain>true`).
    pub gateway_auth: Option<Credentials>,
    /// The local address outgoing connections are made from (`<bind>`, an IP address);
    /// `None`: the system picks.
    pub bind: Option<IpAddr>,
}

impl Settings {
    /// Reads and validates `config`; `default_helo` is the server's own name.
    pub fn parse(
        config: &MailetConfig,
        default_helo: &str,
    ) -> Result<(Settings, Vec<String>), MailetError> {
        let bad = |what: String| MailetError::new(format!("mailet RemoteDelivery: {what}"));
        let number = |name: &str, default: u64| -> Result<u64, MailetError> {
            match config.param(name) {
                None | Some("") => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| bad(format!("<{name}> must be a whole number, got {v:?}"))),
            }
        };
        let max_retries = u32::try_from(number("maxRetries", DEFAULT_MAX_RETRIES.into())?)
            .map_err(|_| bad("<maxRetries> is too large".into()))?;
        let (delays, max_retries, notes) =
            parse_delays(config.param("delayTime").unwrap_or(""), max_retries).map_err(bad)?;
        let threads = number("deliveryThreads", 1)?;
        if threads == 0 || threads > 1000 {
            return Err(bad(format!(
                "<deliveryThreads> must be 1 to 1000, got {threads}"
            )));
        }
        let timeout = Duration::from_millis(number("timeout", 180_000)?);
        let connect_timeout = Duration::from_millis(number("connectiontimeout", 60_000)?);
        if timeout.is_zero() || connect_timeout.is_zero() {
            return Err(bad(
                "<timeout> and <connectiontimeout> must be above 0".into()
            ));
        }
        let port = |name: &str, default: u64| -> Result<u16, MailetError> {
            match u16::try_from(number(name, default)?) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(format!("<{name}> must be a port from 1 to 65535"))),
            }
        };
        let gateway_port = port("gatewayPort", 25)?;
        let mx_port = port("mxPort", 25)?;
        let mut gateways = Vec::new();
        for gateway in config
            .param("gateway")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            gateways.push(parse_host_port(gateway, gateway_port).map_err(bad)?);
        }
        let helo_name = match config.param("heloName") {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => default_helo.to_string(),
        };
        if helo_name.is_empty() || helo_name.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(bad(format!("<heloName> {helo_name:?} is not a host name")));
        }
        let mut notes = notes;
        let username = ["gatewayusername", "gatewayUsername"]
            .iter()
            .find_map(|name| config.param(name).filter(|u| !u.is_empty()));
        let gateway_auth = match (username, config.param("gatewayPassword")) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(bad("<gatewayPassword> without <gatewayusername>".into()))
            }
            (Some(_), None) => {
                return Err(bad("<gatewayusername> without <gatewayPassword>".into()))
            }
            (Some(user), Some(password)) => {
                if user.contains(|c: char| c.is_control()) {
                    return Err(bad("<gatewayusername> has control characters".into()));
                }
                let over_plain = config.bool_param("gatewayAuthOverPlain", false)?;
                if gateways.is_empty() {
                    notes.push(
                        "<gatewayusername> is ignored: AUTH is only used with a <gateway>".into(),
                    );
                    None
                } else {
                    Some(Credentials {
                        username: user.to_string(),
                        password: Secret::new(password),
                        over_plain,
                    })
                }
            }
        };
        let bind = match config.param("bind") {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| bad(format!("<bind> must be an IP address, got {ip:?}")))?,
            ),
        };
        let bounce_processor = config
            .param("bounceProcessor")
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        Ok((
            Settings {
                outgoing: config
                    .param("outgoing")
                    .filter(|o| !o.is_empty())
                    .unwrap_or(DEFAULT_OUTGOING)
                    .to_string(),
                delays,
                max_retries,
                threads: threads as usize,
                timeout,
                connect_timeout,
                gateways,
                helo_name,
                bounce_processor,
                send_partial: config.bool_param("sendpartial", false)?,
                mx_port,
                require_tls: config.bool_param("requireTLS", false)?,
                gateway_auth,
                bind,
            },
            notes,
        ))
    }

    /// The delay before retry `retry` (1 for the first retry).
    pub fn delay_before(&self, retry: u32) -> Duration {
        let index = (retry.max(1) - 1) as usize;
        self.delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or(DEFAULT_DELAY)
    }
}

/// `host`, `host:port`, `[v6]:port`: a gateway.
fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("<gateway> {text:?} is not host[:port]");
    let (host, port) = match text.rsplit_once(':') {
        // An IPv6 address without brackets has several colons: all of it is the host.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port: u16 = port.parse().map_err(|_| bad())?;
            if port == 0 {
                return Err(bad());
            }
            (host, port)
        }
        _ => (text, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Parses `<delayTime>` (its values joined by `,`) and applies James 2.3's rules against
/// `max_retries`: more attempts listed than `max_retries` raise `max_retries` to their total;
/// fewer give the remaining attempts to the last delay (the default 6 hours when none is
/// listed). Returns one delay per retry, the retries, and notes for the log.
pub fn parse_delays(
    text: &str,
    max_retries: u32,
) -> Result<(Vec<Duration>, u32, Vec<String>), String> {
    let mut delays = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (attempts, delay) = parse_delay(item)?;
        if delays.len() + attempts as usize > 100_000 {
            return Err(format!("<delayTime> {item:?}: too many attempts"));
        }
        delays.extend(std::iter::repeat_n(delay, attempts as usize));
    }
    let mut notes = Vec::new();
    let total = delays.len() as u32;
    let mut max = max_retries;
    if total > max {
        notes.push(format!(
            "the <delayTime> attempts ({total}) exceed <maxRetries>; maxRetries raised from {max} to {total}"
        ));
        max = total;
    } else if total < max {
        let last = delays.last().copied().unwrap_or(DEFAULT_DELAY);
        if total > 0 {
            notes.push(format!(
                "<maxRetries> ({max}) is larger than the <delayTime> attempts ({total}); the last delay is used for the {} more",
                max - total
            ));
        }
        delays.resize(max as usize, last);
    }
    Ok((delays, max, notes))
}

/// One `[attempts*]delay [unit]` item: `5*5 minutes`, `2 * 1 second`, `500` (ms).
pub fn parse_delay(item: &str) -> Result<(u32, Duration), String> {
    let bad = |why: &str| format!("<delayTime> {item:?}: {why}");
    let (attempts, rest) = match item.split_once('*') {
        Some((n, rest)) => {
            let n = n.trim();
            let attempts = if n.is_empty() {
                1
            } else {
                n.parse::<u32>()
                    .map_err(|_| bad("the attempts before * must be a number"))?
            };
            (attempts, rest.trim())
        }
        None => (1, item.trim()),
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits == 0 {
        return Err(bad("expected [attempts*]delay [unit]"));
    }
    let amount: u64 = rest[..digits]
        .parse()
        .map_err(|_| bad("the delay is too large"))?;
    let unit = rest[digits..].trim().to_ascii_lowercase();
    let millis_per = match unit.as_str() {
        "" | "msec" | "msecs" => 1,
        "sec" | "secs" | "second" | "seconds" => 1000,
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => {
            return Err(bad(
                "unknown unit (msec, sec, second, minute, hour, day, or their plurals)",
            ))
        }
    };
    let millis = amount
        .checked_mul(millis_per)
        .ok_or_else(|| bad("the delay is too large"))?;
    Ok((attempts, Duration::from_millis(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn james_delay_syntax() {
        assert_eq!(parse_delay("5*5 minutes").unwrap(), (5, secs(300)));
        assert_eq!(parse_delay("2 * 1 second").unwrap(), (2, secs(1)));
        assert_eq!(parse_delay("500").unwrap(), (1, Duration::from_millis(500)));
        assert_eq!(parse_delay("1 hour").unwrap(), (1, secs(3600)));
        assert_eq!(parse_delay("3 Days").unwrap(), (1, secs(3 * 86400)));
        assert_eq!(
            parse_delay("10 msecs").unwrap(),
            (1, Duration::from_millis(10))
        );
        assert_eq!(parse_delay("4secs").unwrap(), (1, secs(4)));
        for bad in ["", "five minutes", "5 fortnights", "x*5", "5*", "-1"] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn james_rules_for_attempts_against_max_retries() {
        // Fewer attempts than maxRetries: the last delay fills the rest.
        let (d, max, notes) = parse_delays("1 second, 2*2 seconds", 5).unwrap();
        assert_eq!(max, 5);
        assert_eq!(d, vec![secs(1), secs(2), secs(2), secs(2), secs(2)]);
        assert_eq!(notes.len(), 1);
        // More: maxRetries is raised.
        let (d, max, _) = parse_delays("5*5 minutes, 3*1 hour", 2).unwrap();
        assert_eq!(max, 8);
        assert_eq!(d.len(), 8);
        assert_eq!(d[7], secs(3600));
        // None: James's 6 hours.
        let (d, max, notes) = parse_delays("", 3).unwrap();
        assert_eq!((d, max), (vec![DEFAULT_DELAY; 3], 3));
        assert!(notes.is_empty());
        // Exact: unchanged.
        let (d, max, notes) = parse_delays("2*1 second", 2).unwrap();
        assert_eq!((d, max, notes.len()), (vec![secs(1); 2], 2, 0));
    }

    /// A RemoteDelivery configuration with these parameters.
    fn config(pairs: &[(&str, &str)]) -> MailetConfig {
        MailetConfig {
            name: "RemoteDelivery".into(),
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parameters_are_validated() {
        let (s, _) = Settings::parse(&config(&[]), "mail.example").unwrap();
        assert_eq!(s.outgoing, DEFAULT_OUTGOING);
        assert_eq!((s.max_retries, s.threads, s.mx_port), (5, 1, 25));
        assert_eq!(s.helo_name, "mail.example");
        assert!(s.gateways.is_empty() && !s.send_partial);
        let (s, _) = Settings::parse(
            &config(&[
                ("gateway", "smart.example, 127.0.0.1:2526,[::1]:2527"),
                ("gatewayPort", "587"),
                ("delayTime", "2 * 1 second"),
                ("maxRetries", "2"),
                ("timeout", "5000"),
                ("heloName", "out.example"),
                ("bounceProcessor", "bounces"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(
            s.gateways,
            vec![
                ("smart.example".to_string(), 587),
                ("127.0.0.1".to_string(), 2526),
                ("::1".to_string(), 2527)
            ]
        );
        assert_eq!(s.delay_before(1), secs(1));
        assert_eq!(s.delay_before(9), secs(1));
        assert_eq!(s.timeout, Duration::from_millis(5000));
        assert_eq!(s.bounce_processor.as_deref(), Some("bounces"));
        assert_eq!(s.bind, None);
        let (s, _) = Settings::parse(&config(&[("bind", "::1")]), "x").unwrap();
        assert_eq!(s.bind, Some("::1".parse().unwrap()));
        for bad in [
            ("maxRetries", "-1"),
            ("deliveryThreads", "0"),
            ("timeout", "soon"),
            ("gateway", "host:notaport"),
            ("gatewayPort", "70000"),
            ("delayTime", "5 fortnights"),
            ("sendpartial", "maybe"),
            ("heloName", "two words"),
            ("requireTLS", "maybe"),
            ("gatewayusername", "user"),
            ("gatewayPassword", "only"),
            ("bind", "localhost"),
        ] {
            assert!(Settings::parse(&config(&[bad]), "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_and_gateway_auth() {
        let (s, _) = Settings::parse(&config(&[]), "x").unwrap();
        assert!(!s.require_tls && s.gateway_auth.is_none());
        for user in ["gatewayusername", "gatewayUsername"] {
            let (s, notes) = Settings::parse(
                &config(&[
                    ("gateway", "smart.example"),
                    (user, "relay"),
                    ("gatewayPassword", "hunter2"),
                    ("requireTLS", "true"),
                ]),
                "x",
            )
            .unwrap();
            assert!(s.require_tls && notes.is_empty());
            let auth = s.gateway_auth.clone().unwrap();
            assert_eq!((auth.username.as_str(), auth.over_plain), ("relay", false));
            assert_eq!(auth.password.expose(), "hunter2");
            assert!(!format!("{s:?}").contains("hunter2"));
        }
        // Without a gateway, AUTH is not used (and said so).
        let (s, notes) = Settings::parse(
            &config(&[
                ("gatewayusername", "relay"),
                ("gatewayPassword", "p"),
                ("gatewayAuthOverPlain", "true"),
            ]),
            "x",
        )
        .unwrap();
        assert!(s.gateway_auth.is_none());
        assert_eq!(notes.len(), 1);
    }
}
