//! James 2.3's FetchMail rules, read from a fetched message's header section (no I/O):
//! the intended recipient (`customrcpt-header`, else the envelope recipient of a
//! `Received: ... for <x>`, else the only To/Cc/Bcc address, else none), the sender (From, with
//! James's defaults for a missing local part or domain), the bounce-loop test (three
//! `X-fetched-from` fields naming this task), and the remote client of `<remotereceivedheader>`.

use mailroom_mailet::{MailAddress, Message};

/// James's prefix of the attributes FetchMail sets on the mails it spools.
pub const ATTRIBUTE_PREFIX: &str = "org.apache.james.fetchmail.";

/// The local part James uses for a message without a usable From.
pub const DEFAULT_LOCAL_PART: &str = "FETCHMAIL-SERVICE";

/// The header that names the task a mail was fetched by (and detects loops).
pub const FETCHED_FROM: &str = "X-fetched-from";

/// The recipient the message was meant for, by James's rules; `None` when none can be found.
/// `ignore_rcpt_header` and the account's fixed recipient are the caller's business.
pub fn intended_recipient(message: &Message, custom_header: Option<&str>) -> Option<String> {
    if let Some(name) = custom_header {
        // James: with a custom header configured, only that header counts.
        return message
            .header(name)
            .map(|v| strip_brackets(v.trim()).to_string())
            .filter(|v| !v.is_empty());
    }
    for received in message.headers("Received") {
        if let Some(rcpt) = received_for(&received) {
            return Some(rcpt);
        }
    }
    let parsed = mail_parser::MessageParser::new().parse_headers(message.header_section())?;
    let mut all = Vec::new();
    for list in [parsed.to(), parsed.cc(), parsed.bcc()]
        .into_iter()
        .flatten()
    {
        all.extend(list.iter().filter_map(|a| a.address()).map(str::to_string));
    }
    (all.len() == 1).then(|| all.remove(0))
}

/// The address after `for ` in a `Received:` value, when it has an `@` (James's scan: up to a
/// space or `;`, angle brackets removed).
fn received_for(received: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = received[from..].find("for ") {
        let start = from + i + 4;
        // James needs "for " at an index above 0.
        if from + i == 0 {
            from = start;
            continue;
        }
        let rest = &received[start..];
        let end = rest.find([' ', ';']).unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches([',', '\r', '\n']);
        if candidate.contains('@') {
            return Some(strip_brackets(candidate).to_string());
        }
        from = start;
    }
    None
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

/// The sender James gives the fetched mail, and whether it used the default local part or
/// domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The reverse-path (`None` when even the defaults make no valid address).
    pub address: Option<MailAddress>,
    /// The From had no usable address: [`DEFAULT_LOCAL_PART`] was used.
    pub default_local_part: bool,
    /// The address had no domain: `default_domain` was used.
    pub default_domain: bool,
}

/// The first From address; without one, [`DEFAULT_LOCAL_PART`]; without a domain,
/// `default_domain`.
pub fn sender(message: &Message, default_domain: &str) -> Sender {
    let from = mail_parser::MessageParser::new()
        .parse_headers(message.header_section())
        .and_then(|p| {
            p.from()
                .and_then(|f| f.first())
                .and_then(|a| a.address())
                .map(|a| a.trim().to_string())
        })
        .filter(|a| !a.is_empty())
        .or_else(|| {
            // A bare local part (`From: bob`), which the address parser does not take.
            let raw = message.header("From")?;
            let raw = strip_brackets(raw.trim()).to_string();
            let plain = !raw.is_empty() && raw.chars().all(|c| c.is_ascii_graphic() && c != ',');
            plain.then_some(raw)
        });
    let default_local_part = from.is_none();
    let from = from.unwrap_or_else(|| DEFAULT_LOCAL_PART.to_string());
    let (text, default_domain) = if from.contains('@') {
        (from, false)
    } else {
        (format!("{from}@{default_domain}"), true)
    };
    Sender {
        address: MailAddress::parse(&text).ok(),
        default_local_part,
        default_domain,
    }
}

/// James's bounce-loop test: the message already passed through this task three times.
pub fn is_bouncing(message: &Message, task: &str) -> bool {
    message
        .headers(FETCHED_FROM)
        .iter()
        .filter(|v| v.trim() == task)
        .count()
        >= 3
}

/// The remote client named by the `Received:` field at `index` (0 is the newest) or, failing
/// that, a newer one, as James reads it: the tokens after `from` up to the next clause.
/// Returns `(host, address)`; `None` when no field names a client whose address is an IP
/// literal (`[192.0.2.1]` or `(192.0.2.1)`) or a parseable IP.
pub fn remote_client(message: &Message, index: i32) -> Option<(String, String)> {
    if index < 0 {
        return None;
    }
    let fields = message.headers("Received");
    if fields.is_empty() {
        return None;
    }
    let start = (index as usize).min(fields.len() - 1);
    for field in fields[..=start].iter().rev() {
        let mut tokens = field
            .split([' ', '\n', '\r', '\t'])
            .filter(|t| !t.is_empty());
        if !tokens.any(|t| t == "from") {
            continue;
        }
        let domain: Vec<&str> = tokens
            .take_while(|t| !["from", "by", "via", "with", "id", "for", ";"].contains(t))
            .collect();
        if domain.is_empty() {
            continue;
        }
        let text = domain.join(" ");
        let host = domain[0].to_string();
        let literal = ['[', '(']
            .iter()
            .zip([']', ')'])
            .find_map(|(open, close)| {
                let s = text.find(*open)? + 1;
                let e = s + text[s..].find(close)?;
                Some(text[s..e].trim_start_matches("IPv6:").to_string())
            })
            .unwrap_or_else(|| host.clone());
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return Some((host, ip.to_string()));
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(header: &str) -> Message {
        Message::from_bytes(format!("{header}\r\n\r\nbody\r\n").as_bytes())
    }

    #[test]
    fn recipient_rules_in_james_order() {
        let m = msg("X-Envelope-To: <env@example.com>\r\nReceived: from a by b for <rcv@example.com>; now\r\nTo: to@example.com");
        assert_eq!(
            intended_recipient(&m, Some("X-Envelope-To")).as_deref(),
            Some("env@example.com")
        );
        assert_eq!(intended_recipient(&m, Some("X-Missing")), None);
        assert_eq!(
            intended_recipient(&m, None).as_deref(),
            Some("rcv@example.com")
        );
        let m = msg("Received: from a by b with SMTP; now\r\nTo: Alice <to@example.com>");
        assert_eq!(
            intended_recipient(&m, None).as_deref(),
            Some("to@example.com")
        );
        let m = msg("Received: from a by b for postmaster; now\r\nTo: a@x.org\r\nCc: b@x.org");
        assert_eq!(
            intended_recipient(&m, None),
            None,
            "two addresses and no usable for"
        );
        let m = msg("Subject: none");
        assert_eq!(intended_recipient(&m, None), None);
    }

    #[test]
    fn senders() {
        let m = msg("From: Bob <bob@example.org>");
        let s = sender(&m, "local.test");
        assert_eq!(s.address.unwrap().to_string(), "bob@example.org");
        assert!(!s.default_local_part && !s.default_domain);
        let s = sender(&msg("Subject: x"), "local.test");
        assert_eq!(
            s.address.unwrap().to_string(),
            "FETCHMAIL-SERVICE@local.test"
        );
        assert!(s.default_local_part && s.default_domain);
        let s = sender(&msg("From: bob"), "local.test");
        assert!(s.default_domain && !s.default_local_part, "{s:?}");
    }

    #[test]
    fn bouncing_needs_three() {
        let two = msg("X-fetched-from: t\r\nX-fetched-from: t\r\nX-fetched-from: other");
        assert!(!is_bouncing(&two, "t"));
        let three = msg("X-fetched-from: t\r\nX-fetched-from: t\r\nX-fetched-from:  t");
        assert!(is_bouncing(&three, "t"));
    }

    #[test]
    fn remote_clients() {
        let m = msg("Received: from mx.example.com ([192.0.2.7]) by us with ESMTP; now\r\nReceived: from inner by mx; now");
        assert_eq!(
            remote_client(&m, 0),
            Some(("mx.example.com".into(), "192.0.2.7".into()))
        );
        assert_eq!(remote_client(&m, -1), None);
        // Index 1 names "inner" (no address): invalid.
        assert_eq!(remote_client(&m, 1), None);
        assert_eq!(remote_client(&m, 9), None);
        assert_eq!(remote_client(&msg("Subject: x"), 0), None);
    }
}
