//! `<fetchmail>`: the POP3 puller's tasks, usually included from `james-fetchmail.xml`.
//!
//! Options follow James 2.3's FetchMail. Defaults are the cautious ones (rejected mail is left
//! on the server). Only POP3 is supported as the JavaMail provider (`pop3`, `pop3s`); an
//! `imap` provider is refused with its file and line until an IMAP client exists.
//!
//! The connection options come from James's `<javaMailProperties>` (`mail.pop3.port`,
//! `mail.pop3.connectiontimeout`, `mail.pop3.timeout`, `mail.pop3.starttls.enable`,
//! `mail.pop3.starttls.required`, `mail.pop3.apop.enable`, `mail.pop3.ssl.trust="*"`; the same
//! under `mail.pop3s.`) and from Mailroom's own `<port>` and `<cafile>` children of `<fetch>`.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Location;
use crate::secret::Secret;
use crate::values::Ctx;
use crate::xml::Element;

/// The `<fetchmail>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetchmail {
    /// The `enabled` attribute (default true when the block is present).
    pub enabled: bool,
    /// The `<fetch>` tasks; each runs on its own interval.
    pub tasks: Vec<FetchTask>,
    /// Where the block starts.
    pub location: Location,
}

/// What to do with a message on the remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// `leaveonserver`: keep it on the server (else delete it).
    pub leave_on_server: bool,
    /// `markseen`: mark a kept message as seen.
    pub mark_seen: bool,
}

/// A filter (`<recipientnotfound>`, `<blacklist>`, `<userundefined>`, `<remoterecipient>`,
/// `<maxmessagesize>`) and what happens to the mail it catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// `reject`: refuse the mail (else accept it and mark it with a mail attribute).
    pub reject: bool,
    /// What happens on the server to a rejected mail.
    pub disposition: Disposition,
}

/// One `<account user= password= recipient= ignorercpt-header=/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAccount {
    /// Remote login.
    pub user: String,
    /// Remote password.
    pub password: Secret,
    /// Local recipient used when none can be deduced (or always with `ignore_rcpt_header`).
    pub recipient: String,
    /// `ignorercpt-header`: always deliver to `recipient`.
    pub ignore_rcpt_header: bool,
    /// `customrcpt-header`: the header naming the envelope recipient (`X-Envelope-To`).
    pub custom_rcpt_header: Option<String>,
    /// Where the element is.
    pub location: Location,
}

/// `<alllocal>`: one account per local user, `userprefix + user + usersuffix` remotely and
/// `recipientprefix + user + recipientsuffix` locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllLocal {
    /// `userprefix`.
    pub user_prefix: String,
    /// `usersuffix`.
    pub user_suffix: String,
    /// `password`, shared by every account.
    pub password: Secret,
    /// `recipientprefix`.
    pub recipient_prefix: String,
    /// `recipientsuffix`.
    pub recipient_suffix: String,
    /// `ignorercpt-header`.
    pub ignore_rcpt_header: bool,
    /// `customrcpt-header`.
    pub custom_rcpt_header: Option<String>,
}

/// Whether the POP3 client upgrades a plain connection with STLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Never (`mail.pop3.starttls.enable=false`).
    Off,
    /// When the server offers it (the default).
    Optional,
    /// Always; a server without STLS is an error (`mail.pop3.starttls.required=true`).
    Required,
}

/// One `<fetch name=...>` task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTask {
    /// The unique task name (also the value of the `org.apache.james.fetchmail.fetchtask`
    /// attribute of fetched mail).
    pub name: String,
    /// `<host>`: the remote server (host name or IP address).
    pub host: String,
    /// `<interval>` (milliseconds in the file).
    pub interval: Duration,
    /// `<javaMailProviderName>`: `pop3` (default) or `pop3s` (implicit TLS).
    pub provider: String,
    /// The remote port: `<port>`, else `mail.pop3.port` (`mail.pop3s.port`), else 110 (995).
    pub port: u16,
    /// `pop3s`: TLS from the first octet.
    pub implicit_tls: bool,
    /// STLS on a plain connection.
    pub start_tls: StartTls,
    /// `mail.pop3.apop.enable`: log in with APOP when the greeting has a timestamp.
    pub apop: bool,
    /// `<cafile>`: PEM certificates trusted for the server (else the system bundle).
    pub ca_file: Option<PathBuf>,
    /// `mail.pop3.ssl.trust="*"`: accept any certificate (insecure; logged).
    pub trust_all: bool,
    /// `mail.pop3.connectiontimeout` (default 60 s).
    pub connect_timeout: Duration,
    /// `mail.pop3.timeout`: the longest wait for a read or a write (default 180 s).
    pub timeout: Duration,
    /// `<javaMailFolderName>` (default `INBOX`).
    pub folder: String,
    /// `<fetchall>` (default false): fetch messages already seen too.
    pub fetch_all: bool,
    /// `<recursesubfolders>` (default false).
    pub recurse_subfolders: bool,
    /// `<defaultdomain>`: appended to a sender without a domain.
    pub default_domain: Option<String>,
    /// `<accounts><account>` entries.
    pub accounts: Vec<FetchAccount>,
    /// `<accounts><alllocal>`, if present.
    pub all_local: Option<AllLocal>,
    /// `<fetched>` (default: delete from the server).
    pub fetched: Disposition,
    /// `<undeliverable>` (default: leave on the server, not seen).
    pub undeliverable: Disposition,
    /// `<recipientnotfound>` (default: reject, leave on the server).
    pub recipient_not_found: Rejection,
    /// `<recipientnotfound defer>`: the first time, leave the message for the next run.
    pub recipient_not_found_defer: bool,
    /// `<remotereceivedheader index>`: the `Received:` header (0 is the newest) naming the
    /// remote client; -1 (default) does not look.
    pub remote_received_header_index: i32,
    /// `<remotereceivedheader>`: a mail whose header at that index names no valid client.
    pub remote_received_header: Rejection,
    /// `<blacklist>` (default: reject, leave on the server).
    pub blacklist: Rejection,
    /// The `<blacklist>` addresses (comma, tab or space separated).
    pub blacklist_addresses: Vec<String>,
    /// `<userundefined>` (default: reject, leave on the server).
    pub user_undefined: Rejection,
    /// `<remoterecipient>` (default: reject, leave on the server).
    pub remote_recipient: Rejection,
    /// `<maxmessagesize limit=...>` in KiB; 0 (default) means no limit.
    pub max_message_size_kib: u64,
    /// What happens to a message over `max_message_size_kib` (default: not rejected, James's
    /// behaviour of marking it).
    pub max_message_size: Rejection,
    /// The raw `<fetch>` element, for options not typed here.
    pub element: Element,
    /// Where the `<fetch>` element is.
    pub location: Location,
}

const KEEP: Disposition = Disposition {
    leave_on_server: true,
    mark_seen: false,
};

fn disposition(ctx: &mut Ctx, el: Option<&Element>, default: Disposition) -> Disposition {
    match el {
        None => default,
        Some(e) => Disposition {
            leave_on_server: ctx.bool_attr(e, "leaveonserver", default.leave_on_server),
            mark_seen: ctx.bool_attr(e, "markseen", default.mark_seen),
        },
    }
}

fn rejection(ctx: &mut Ctx, el: Option<&Element>, reject: bool) -> Rejection {
    Rejection {
        reject: el.map_or(reject, |e| ctx.bool_attr(e, "reject", reject)),
        disposition: disposition(ctx, el, KEEP),
    }
}

/// Whether `host` looks like a host name or an IP address.
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

pub(crate) fn parse(ctx: &mut Ctx, el: &Element) -> Fetchmail {
    let enabled = ctx.bool_attr(el, "enabled", true);
    let mut tasks: Vec<FetchTask> = Vec::new();
    for f in &el.children {
        if f.name != "fetch" {
            ctx.err(
                f,
                format!("<{}> is not allowed in <fetchmail>; only <fetch>", f.name),
            );
            continue;
        }
        let Some(task) = fetch(ctx, f) else { continue };
        if let Some(first) = tasks.iter().find(|t| t.name == task.name) {
            ctx.err(
                f,
                format!(
                    "fetch task \"{}\" is defined twice (first at {})",
                    task.name, first.location
                ),
            );
            continue;
        }
        tasks.push(task);
    }
    Fetchmail {
        enabled,
        tasks,
        location: el.location(),
    }
}

fn fetch(ctx: &mut Ctx, f: &Element) -> Option<FetchTask> {
    let name = ctx.required_attr(f, "name");
    let host = match ctx.single(f, "host") {
        Some(h) if valid_host(&h.text) => Some(h.text.clone()),
        Some(h) => {
            ctx.err(
                h,
                format!(
                    "<host> must be a host name or IP address, got \"{}\"",
                    h.text
                ),
            );
            None
        }
        None => {
            ctx.err(f, "<fetch> needs a <host>");
            None
        }
    };
    let interval = match ctx.single(f, "interval") {
        Some(i) => ctx.number(i, "<interval>", &i.text, 1u64, 31_536_000_000),
        None => {
            ctx.err(f, "<fetch> needs an <interval> (milliseconds between runs)");
            None
        }
    };
    let provider = ctx
        .text(f, "javaMailProviderName")
        .filter(|p| !p.is_empty())
        .unwrap_or("pop3")
        .to_string();
    if provider != "pop3" && provider != "pop3s" {
        let at = f.child("javaMailProviderName").unwrap_or(f);
        let why = if provider.starts_with("imap") {
            "Mailroom has no IMAP client yet; use pop3 or pop3s"
        } else {
            "use pop3 or pop3s"
        };
        ctx.err(
            at,
            format!("<javaMailProviderName> \"{provider}\" is not supported ({why})"),
        );
    }
    let implicit_tls = provider == "pop3s";
    let props = properties(ctx, f);
    let prop = |name: &str| {
        props
            .iter()
            .find(|(n, _, _)| {
                n.strip_prefix("mail.pop3s.")
                    .or_else(|| n.strip_prefix("mail.pop3."))
                    == Some(name)
            })
            .map(|(_, v, el)| (v.as_str(), el))
    };
    let port = match (ctx.single(f, "port"), prop("port")) {
        (Some(p), _) => ctx.number(p, "<port>", &p.text, 1u16, u16::MAX),
        (None, Some((v, el))) => ctx.number(el, "property mail.pop3.port", v, 1u16, u16::MAX),
        (None, None) => Some(if implicit_tls { 995 } else { 110 }),
    };
    let mut prop_bool = |name: &str, default: bool| match prop(name) {
        Some((v, el)) => ctx.bool_value(el, &format!("property mail.pop3.{name}"), v, default),
        None => default,
    };
    let start_tls = match (
        prop_bool("starttls.enable", true),
        prop_bool("starttls.required", false),
    ) {
        (_, true) => StartTls::Required,
        (true, false) => StartTls::Optional,
        (false, false) => StartTls::Off,
    };
    let apop = prop_bool("apop.enable", false);
    let trust_all = prop("ssl.trust").is_some_and(|(v, _)| v == "*");
    let mut prop_ms = |name: &str, default: u64| match prop(name) {
        Some((v, el)) => Duration::from_millis(
            ctx.number(
                el,
                &format!("property mail.pop3.{name}"),
                v,
                1u64,
                86_400_000,
            )
            .unwrap_or(default),
        ),
        None => Duration::from_millis(default),
    };
    let connect_timeout = prop_ms("connectiontimeout", 60_000);
    let timeout = prop_ms("timeout", 180_000);
    let ca_file = ctx
        .text(f, "cafile")
        .filter(|t| !t.is_empty())
        .map(|t| crate::url::resolve_path(&ctx.home, t));
    let received_el = ctx.single(f, "remotereceivedheader");
    let remote_received_header_index = received_el.map_or(-1, |e| match e.attr("index") {
        None => -1,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if n >= -1 => n,
            _ => {
                ctx.err(
                    e,
                    format!("attribute index of <remotereceivedheader> must be -1 or more, got \"{v}\""),
                );
                -1
            }
        },
    });
    let remote_received_header = rejection(ctx, received_el, false);
    let rnf_el = ctx.single(f, "recipientnotfound");
    let recipient_not_found_defer = rnf_el.is_some_and(|e| ctx.bool_attr(e, "defer", false));
    let mut accounts = Vec::new();
    let mut all_local = None;
    match ctx.single(f, "accounts") {
        None => ctx.err(
            f,
            "<fetch> needs an <accounts> element with <account> or <alllocal> entries",
        ),
        Some(acc) => {
            for a in &acc.children {
                match a.name.as_str() {
                    "account" => {
                        let user = ctx.required_attr(a, "user");
                        let recipient = ctx.required_attr(a, "recipient");
                        if let (Some(user), Some(recipient)) = (user, recipient) {
                            accounts.push(FetchAccount {
                                user,
                                password: a.attr("password").unwrap_or_default().into(),
                                recipient,
                                ignore_rcpt_header: ctx.bool_attr(a, "ignorercpt-header", false),
                                custom_rcpt_header: custom_header(a),
                                location: a.location(),
                            });
                        }
                    }
                    "alllocal" if all_local.is_some() => {
                        ctx.err(a, "only one <alllocal> is allowed in <accounts>")
                    }
                    "alllocal" => {
                        let s = |n: &str| a.attr(n).unwrap_or_default().to_string();
                        all_local = Some(AllLocal {
                            user_prefix: s("userprefix"),
                            user_suffix: s("usersuffix"),
                            password: s("password").into(),
                            recipient_prefix: s("recipientprefix"),
                            recipient_suffix: s("recipientsuffix"),
                            ignore_rcpt_header: ctx.bool_attr(a, "ignorercpt-header", false),
                            custom_rcpt_header: custom_header(a),
                        });
                    }
                    other => ctx.err(
                        a,
                        format!(
                            "<{other}> is not allowed in <accounts>; use <account> or <alllocal>"
                        ),
                    ),
                }
            }
            if accounts.is_empty() && all_local.is_none() {
                ctx.err(acc, "<accounts> lists no <account> and no <alllocal>");
            }
        }
    }
    let blacklist_el = ctx.single(f, "blacklist");
    let max_el = ctx.single(f, "maxmessagesize");
    let task = FetchTask {
        provider,
        port: port?,
        implicit_tls,
        start_tls,
        apop,
        ca_file,
        trust_all,
        connect_timeout,
        timeout,
        recipient_not_found_defer,
        remote_received_header_index,
        remote_received_header,
        folder: ctx
            .text(f, "javaMailFolderName")
            .filter(|p| !p.is_empty())
            .unwrap_or("INBOX")
            .to_string(),
        fetch_all: ctx.bool_child(f, "fetchall", false),
        recurse_subfolders: ctx.bool_child(f, "recursesubfolders", false),
        default_domain: ctx
            .text(f, "defaultdomain")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        accounts,
        all_local,
        fetched: {
            let el = ctx.single(f, "fetched");
            disposition(
                ctx,
                el,
                Disposition {
                    leave_on_server: false,
                    mark_seen: true,
                },
            )
        },
        undeliverable: {
            let el = ctx.single(f, "undeliverable");
            disposition(ctx, el, KEEP)
        },
        recipient_not_found: rejection(ctx, rnf_el, true),
        blacklist: rejection(ctx, blacklist_el, true),
        blacklist_addresses: blacklist_el
            .map(|b| {
                b.text
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        user_undefined: {
            let el = ctx.single(f, "userundefined");
            rejection(ctx, el, true)
        },
        remote_recipient: {
            let el = ctx.single(f, "remoterecipient");
            rejection(ctx, el, true)
        },
        max_message_size_kib: max_el
            .map_or(0, |m| ctx.num_attr(m, "limit", 0u64, u64::MAX / 1024, 0)),
        max_message_size: rejection(ctx, max_el, false),
        element: f.clone(),
        location: f.location(),
        name: name?,
        host: host?,
        interval: Duration::from_millis(interval?),
    };
    Some(task)
}

/// `customrcpt-header`, when set and not empty.
fn custom_header(a: &Element) -> Option<String> {
    a.attr("customrcpt-header")
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The `<javaMailProperties><property name= value=/>` of a `<fetch>`: name, value, element.
fn properties<'a>(ctx: &mut Ctx, f: &'a Element) -> Vec<(String, String, &'a Element)> {
    let Some(props) = ctx.single(f, "javaMailProperties") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in &props.children {
        if p.name != "property" {
            ctx.err(
                p,
                format!(
                    "<{}> is not allowed in <javaMailProperties>; only <property name= value=/>",
                    p.name
                ),
            );
            continue;
        }
        if let Some(name) = ctx.required_attr(p, "name") {
            out.push((name, p.attr("value").unwrap_or_default().to_string(), p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(valid_host("pop.example.com"));
        assert!(valid_host("10.0.0.1"));
        assert!(valid_host("::1"));
        assert!(!valid_host("pop example.com"));
        assert!(!valid_host(""));
        assert!(!valid_host("-bad.example"));
    }
}
