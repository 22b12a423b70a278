//! The `<James>` block: postmaster, served domains, user-name flags and the inbox repository.

use std::path::Path;

use crate::error::Location;
use crate::url::RepositoryUrl;
use crate::values::Ctx;
use crate::xml::Element;

/// The `<James>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct James {
    /// `<postmaster>` (default `postmaster@localhost`); a bare local part gets `@` and the
    /// first servername appended, as James does.
    pub postmaster: String,
    /// `<servernames><servername>`: the local domains, lower-cased, duplicates removed, in
    /// order (default `localhost`). The first one is the default hello name.
    pub servernames: Vec<String>,
    /// `autodetect` of `<servernames>` (default false): the machine's host name is added to
    /// `servernames` when the configuration is read. Mailroom's default differs from James's
    /// so that the local domains are exactly the listed ones unless asked.
    pub servernames_autodetect: bool,
    /// `autodetectIP` of `<servernames>` (default false): the addresses of every servername
    /// (the host name included) are added as address literals (`[127.0.0.1]`), so that
    /// `alice@[127.0.0.1]` is local, as in James.
    pub servernames_autodetect_ip: bool,
    /// `<usernames>` flags.
    pub usernames: Usernames,
    /// `<inboxRepository><repository destinationURL=... type="MAIL"/>` (default
    /// `file://var/mail/inboxes/`).
    pub inbox_repository: RepositoryRef,
}

impl James {
    /// Adds what `autodetect` and `autodetectIP` ask for: `host_name`, then the address
    /// literals of every servername (resolved now; a name that does not resolve adds nothing).
    pub(crate) fn autodetect(&mut self, host_name: Option<&str>) {
        use std::net::ToSocketAddrs;
        if self.servernames_autodetect {
            match host_name {
                Some(h) if !self.servernames.iter().any(|s| s == h) => {
                    self.servernames.push(h.to_string())
                }
                Some(_) => {}
                None => {
                    tracing::warn!("<servernames autodetect=\"true\">: the host name is unknown")
                }
            }
        }
        if !self.servernames_autodetect_ip {
            return;
        }
        let mut names = self.servernames.clone();
        if let Some(h) = host_name {
            if !names.iter().any(|s| s == h) {
                names.push(h.to_string());
            }
        }
        for name in names {
            let Ok(addrs) = (name.as_str(), 0u16).to_socket_addrs() else {
                continue;
            };
            for addr in addrs {
                let literal = match addr.ip() {
                    std::net::IpAddr::V4(v4) => format!("[{v4}]"),
                    std::net::IpAddr::V6(v6) => format!("[ipv6:{v6}]"),
                };
                if !self.servernames.contains(&literal) {
                    self.servernames.push(literal);
                }
            }
        }
        tracing::info!(servernames = %self.servernames.join(", "), "local domains (autodetected)");
    }

    /// Whether `domain` is one of the servernames (case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.servernames
            .iter()
            .any(|s| s.eq_ignore_ascii_case(domain))
    }
}

/// `<usernames ignoreCase= enableAliases= enableForwarding=/>` (all default true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usernames {
    /// User names are case-insensitive.
    pub ignore_case: bool,
    /// Users may have a local alias.
    pub enable_aliases: bool,
    /// Users may forward their mail.
    pub enable_forwarding: bool,
}

/// A repository named by a URL in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRef {
    /// The URL as written (or the default).
    pub url: String,
    /// The parsed URL (file paths resolved against the home).
    pub target: RepositoryUrl,
    /// Where it was written; `None` for a default.
    pub location: Option<Location>,
}

impl RepositoryRef {
    pub(crate) fn default_for(url: &str, home: &Path) -> RepositoryRef {
        RepositoryRef {
            url: url.to_string(),
            target: RepositoryUrl::parse(url, home).expect("built-in URL is valid"),
            location: None,
        }
    }
}

/// Reads a repository written either as `<block destinationURL= type=/>` or as
/// `<block><repository destinationURL= type=/></block>`; `kind` is the expected `type`.
pub(crate) fn repository(
    ctx: &mut Ctx,
    block: &Element,
    kind: &str,
    default: &str,
) -> RepositoryRef {
    let el = if block.attr("destinationURL").is_some() {
        block
    } else {
        match ctx.single(block, "repository") {
            Some(r) => r,
            None => {
                ctx.err(
                    block,
                    format!(
                        "<{}> needs a <repository destinationURL=\"...\" type=\"{kind}\"/>",
                        block.name
                    ),
                );
                return RepositoryRef::default_for(default, &ctx.home);
            }
        }
    };
    if let Some(t) = el.attr("type") {
        if t != kind {
            ctx.err(
                el,
                format!("<{}> must have type=\"{kind}\", got \"{t}\"", block.name),
            );
        }
    }
    let Some(url) = ctx.required_attr(el, "destinationURL") else {
        return RepositoryRef::default_for(default, &ctx.home);
    };
    match ctx.url(el, &url) {
        Some(target) => RepositoryRef {
            url,
            target,
            location: Some(el.location()),
        },
        None => RepositoryRef::default_for(default, &ctx.home),
    }
}

pub(crate) fn parse(ctx: &mut Ctx, el: Option<&Element>) -> James {
    let mut j = James {
        postmaster: "postmaster@localhost".into(),
        servernames: Vec::new(),
        servernames_autodetect: false,
        servernames_autodetect_ip: false,
        usernames: Usernames {
            ignore_case: true,
            enable_aliases: true,
            enable_forwarding: true,
        },
        inbox_repository: RepositoryRef::default_for("file://var/mail/inboxes/", &ctx.home),
    };
    let Some(el) = el else {
        j.servernames.push("localhost".into());
        return j;
    };
    ctx.warn_unknown(
        el,
        &["postmaster", "servernames", "usernames", "inboxRepository"],
    );
    if let Some(s) = ctx.single(el, "servernames") {
        j.servernames_autodetect = ctx.bool_attr(s, "autodetect", false);
        j.servernames_autodetect_ip = ctx.bool_attr(s, "autodetectIP", false);
        for n in s.children_named("servername") {
            let name = n.text.to_ascii_lowercase();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@' || c == '/')
            {
                ctx.err(
                    n,
                    format!("<servername> must be a domain name, got \"{}\"", n.text),
                );
            } else if !j.servernames.contains(&name) {
                j.servernames.push(name);
            }
        }
    }
    if j.servernames.is_empty() {
        j.servernames.push("localhost".into());
    }
    if let Some(p) = ctx.single(el, "postmaster") {
        let pm = p.text.clone();
        match pm.split_once('@') {
            None if !pm.is_empty() && !pm.contains(char::is_whitespace) => {
                j.postmaster = format!("{pm}@{}", j.servernames[0]);
            }
            Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !pm.contains(char::is_whitespace) =>
            {
                j.postmaster = pm;
            }
            _ => ctx.err(
                p,
                format!("<postmaster> must be an e-mail address, got \"{pm}\""),
            ),
        }
    }
    if let Some(u) = ctx.single(el, "usernames") {
        j.usernames = Usernames {
            ignore_case: ctx.bool_attr(u, "ignoreCase", true),
            enable_aliases: ctx.bool_attr(u, "enableAliases", true),
            enable_forwarding: ctx.bool_attr(u, "enableForwarding", true),
        };
    }
    if let Some(i) = ctx.single(el, "inboxRepository") {
        j.inbox_repository = repository(ctx, i, "MAIL", "file://var/mail/inboxes/");
    }
    j
}
