//! `<fetchmail>`: the POP3 puller's tasks, usually included from `james-fetchmail.xml`.
//!
//! Options follow James 2.3's FetchMail. Defaults are the cautious ones (rejected mail is left
//! on the server). Only POP3 is supported as the JavaMail provider (`pop3`, `pop3s`).

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
        ctx.err(
            at,
            format!("<javaMailProviderName> \"{provider}\" is not supported (use pop3 or pop3s)"),
        );
    }
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
        recipient_not_found: {
            let el = ctx.single(f, "recipientnotfound");
            rejection(ctx, el, true)
        },
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
