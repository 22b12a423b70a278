//! The listening services (`<smtpserver>`, `<pop3server>`, `<nntpserver>`, `<remotemanager>`)
//! and the network plumbing shared by them (`<connections>`, `<dnsserver>`, the global `<tls>`).
//!
//! Every service block may appear several times: each block is one listener (say SMTP on 2525
//! with STARTTLS and on 4465 with implicit TLS). Only the options are parsed here; binding,
//! TLS and limits are the `net` and protocol crates' work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Location;
use crate::network::NetworkList;
use crate::secret::Secret;
use crate::values::Ctx;
use crate::xml::Element;

/// Options every service block has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCommon {
    /// The `enabled` attribute (default true). A disabled block is parsed and checked but does
    /// not listen.
    pub enabled: bool,
    /// `<port>`; the protocol's well-known port when absent.
    pub port: u16,
    /// `<bind>`: the address to listen on (0.0.0.0 by default, 127.0.0.1 for the RemoteManager).
    /// A host name is resolved when the configuration is read (its first address).
    pub bind: IpAddr,
    /// `<helloName>` in the handler: the name announced in greetings (default: the first
    /// servername).
    pub hello_name: String,
    /// `autodetect` attribute of `<helloName>` (default false): when true, the server should
    /// announce the machine's host name instead of `hello_name`, falling back to it.
    pub hello_name_autodetect: bool,
    /// `<connectiontimeout>` in the handler (milliseconds in the file): idle time before the
    /// server closes the connection.
    pub connection_timeout: Duration,
    /// `<connectionLimit>`, in the service block beside `<port>` (where James reads it) or in
    /// the handler: concurrent connections on this listener, else `<connections>
    /// <max-connections>` (stock 30); `None` means no limit (`0` in either place).
    pub connection_limit: Option<u32>,
    /// TLS for this listener.
    pub tls: ServiceTls,
    /// Where the block starts.
    pub location: Location,
}

/// TLS settings of one listener, in James 3's shape
/// (`<tls socketTLS="false" startTLS="true"><certificate/><privateKey/></tls>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTls {
    /// Implicit TLS on the port (`socketTLS="true"`, or James 2.3's `<useTLS>true</useTLS>`).
    pub socket_tls: bool,
    /// Offer STARTTLS/STLS. Defaults to true for SMTP, POP3 and NNTP (unless `socket_tls`), so
    /// that `requireTLSForAuth` leaves a way to log in; false for the RemoteManager, whose
    /// protocol has no STARTTLS.
    pub start_tls: bool,
    /// PEM certificate chain overriding the global `<tls>` one (resolved against the home).
    pub certificate: Option<PathBuf>,
    /// PEM private key overriding the global `<tls>` one (resolved against the home).
    pub private_key: Option<PathBuf>,
}

impl ServiceTls {
    /// Whether this listener uses TLS at all.
    pub fn enabled(&self) -> bool {
        self.socket_tls || self.start_tls
    }

    /// The certificate and key to use: this block's pair, else the global one; `None` means
    /// "generate a self-signed pair under `var/tls/`".
    pub fn files(&self, global: &TlsFiles) -> Option<(PathBuf, PathBuf)> {
        match (&self.certificate, &self.private_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => global.certificate.clone().zip(global.private_key.clone()),
        }
    }
}

/// `<authRequired>` of the SMTP handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequired {
    /// No AUTH (default).
    False,
    /// AUTH required to relay from outside `authorizedAddresses`; announced only to those
    /// clients.
    True,
    /// Like `True`, but AUTH is always announced.
    Announce,
}

/// One `<smtpserver>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    /// Port, bind, hello name, timeouts, TLS.
    pub common: ServiceCommon,
    /// `<maxmessagesize>` in KiB (default [`DEFAULT_MAX_MESSAGE_KIB`], 50 MiB); 0 means no
    /// limit. See [`SmtpServer::max_message_bytes`].
    pub max_message_size_kib: u64,
    /// `<authRequired>`.
    pub auth_required: AuthRequired,
    /// `<authorizedAddresses>` as written; `None` when absent. See [`SmtpServer::relay_networks`].
    pub authorized_addresses: Option<NetworkList>,
    /// `<verifyIdentity>` (default true): an authenticated user may only send as themselves.
    pub verify_identity: bool,
    /// `<heloEhloEnforcement>` (default true): HELO/EHLO required before MAIL.
    pub helo_ehlo_enforcement: bool,
    /// `<maxRcpt>`: recipients per transaction (default [`DEFAULT_MAX_RCPT`]); 0 means no
    /// limit.
    pub max_rcpt: u32,
    /// `<requireTLSForAuth>` (default true): AUTH only over TLS.
    pub require_tls_for_auth: bool,
    /// `<addressBracketsEnforcement>` (default true): `MAIL FROM:<...>` needs the brackets.
    pub address_brackets_enforcement: bool,
    /// `<smtpGreeting>`: replaces the default greeting text.
    pub greeting: Option<String>,
    /// `<verifyRecipients>` (Mailroom's own; default true): a recipient in a local domain that
    /// is no user and no virtual-table source gets `550 5.1.1` at RCPT. False restores James
    /// 2.3's accept-then-file.
    pub verify_recipients: bool,
    /// `<submission>` (Mailroom's own; default false): a message submission listener (RFC
    /// 6409): every MAIL FROM needs AUTH first, from any address, loopback included. Needs
    /// `<authRequired>` true or announce.
    pub submission: bool,
}

impl SmtpServer {
    /// The message size limit in bytes; `None` when unlimited.
    pub fn max_message_bytes(&self) -> Option<u64> {
        (self.max_message_size_kib > 0).then(|| self.max_message_size_kib.saturating_mul(1024))
    }

    /// Who may relay without authenticating: `authorizedAddresses` when configured, else only
    /// loopback (127.0.0.0/8 and ::1). Unlike James 2.3, there is never an open relay by
    /// default.
    pub fn relay_networks(&self) -> NetworkList {
        self.authorized_addresses
            .clone()
            .unwrap_or_else(NetworkList::loopback)
    }
}

/// One `<pop3server>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Server {
    /// Port, bind, hello name, timeouts, TLS.
    pub common: ServiceCommon,
    /// `<enableAPOP>` (default false).
    pub enable_apop: bool,
    /// `<requireTLSForAuth>` (default true): USER/PASS and AUTH only over TLS.
    pub require_tls_for_auth: bool,
}

/// One `<nntpserver>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NntpServer {
    /// Port, bind, hello name, timeouts, TLS.
    pub common: ServiceCommon,
    /// `<authRequired>` (default false): AUTHINFO needed before reading or posting.
    pub auth_required: bool,
    /// `<requireTLSForAuth>` (default true): AUTHINFO only over TLS.
    pub require_tls_for_auth: bool,
    /// `<maxArticleSize>` in KiB (Mailroom's own; default 1024, 0 = unlimited): larger
    /// articles are refused.
    pub max_article_size_kib: u64,
}

/// One `<remotemanager>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManager {
    /// Port, bind (127.0.0.1 by default), hello name, timeouts, TLS.
    pub common: ServiceCommon,
    /// `<administrator_accounts><account login= password=/>`. There is no built-in account:
    /// with none configured the RemoteManager does not start.
    pub administrators: Vec<AdminAccount>,
    /// `<prompt>`: text added before every reply (James's default: none).
    pub prompt: String,
}

impl RemoteManager {
    /// Whether this listener should start (enabled and at least one administrator).
    pub fn can_start(&self) -> bool {
        self.common.enabled && !self.administrators.is_empty()
    }
}

/// A RemoteManager administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccount {
    /// Login name.
    pub login: String,
    /// Password as written in the config.
    pub password: Secret,
}

impl AdminAccount {
    /// Why this account's password must not be used, if it must not: it equals the login, or
    /// is a well-known default (`root`, `admin`, `password`, `james`, empty). The stock James
    /// file ships `root`/`root`, the account of the published James 2.3.2 RemoteManager exploit.
    pub fn weakness(&self) -> Option<String> {
        const DEFAULTS: &[&str] = &["", "root", "admin", "password", "james"];
        let password = self.password.expose();
        if password.eq_ignore_ascii_case(&self.login) {
            Some(format!("the password of \"{}\" is its login", self.login))
        } else if DEFAULTS.iter().any(|d| password.eq_ignore_ascii_case(d)) {
            Some(format!(
                "the password of \"{}\" is a well-known default ({})",
                self.login,
                if password.is_empty() {
                    "empty"
                } else {
                    "root, admin, password, james"
                }
            ))
        } else {
            None
        }
    }
}

/// The global `<tls>` block: certificate and key used by every listener without its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (resolved against the home).
    pub certificate: Option<PathBuf>,
    /// PEM private key (resolved against the home).
    pub private_key: Option<PathBuf>,
}

/// `<connections>`: defaults for every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    /// `<idle-timeout>` (ms in the file, default 300000).
    pub idle_timeout: Duration,
    /// `<max-connections>` per listener (default 30, 0 = no limit): the limit of every
    /// listener without its own `<connectionLimit>`.
    pub max_connections: u32,
    /// `<max-connections-per-ip>` (default 10, 0 = no limit): sessions from one client
    /// address (an IPv6 /64) at once, on each listener.
    pub max_connections_per_ip: u32,
    /// `<max-session-bytes>` (default 1 GiB, 0 = no limit): octets a client may send in one
    /// session.
    pub max_session_bytes: u64,
    /// `<max-session-time>` (ms in the file, default one day, 0 = no limit): how long one
    /// session may last.
    pub max_session_time: Option<Duration>,
    /// `<shutdown-deadline>` (ms in the file, default 10 s): how long a stopping server waits
    /// for its sessions before dropping those still waiting on their client.
    pub shutdown_deadline: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            idle_timeout: Duration::from_millis(300_000),
            max_connections: 30,
            max_connections_per_ip: 10,
            max_session_bytes: 1 << 30,
            max_session_time: Some(Duration::from_secs(86_400)),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// `<dnsserver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServer {
    /// `<servers><server>`: resolver addresses (`IP`, `IP:port`, `[IPv6]:port`; port 53 when
    /// none is given).
    pub servers: Vec<SocketAddr>,
    /// `<autodiscover>` (default true): also use the system's resolvers.
    pub autodiscover: bool,
    /// `<authoritative>` (default false): only accept authoritative answers.
    pub authoritative: bool,
    /// `<maxcachesize>` (default 50000 entries).
    pub max_cache_size: u32,
}

impl Default for DnsServer {
    fn default() -> Self {
        DnsServer {
            servers: Vec::new(),
            autodiscover: true,
            authoritative: false,
            max_cache_size: 50_000,
        }
    }
}

/// Protocol-specific defaults of the common options.
struct Defaults {
    port: u16,
    bind: IpAddr,
    timeout_ms: u64,
    start_tls: bool,
}

const SMTP: Defaults = Defaults {
    port: 25,
    bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    timeout_ms: 360_000,
    start_tls: true,
};
const POP3: Defaults = Defaults {
    port: 110,
    bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    // RFC 1939: at least 10 minutes.
    timeout_ms: 600_000,
    start_tls: true,
};
const NNTP: Defaults = Defaults {
    port: 119,
    bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    // RFC 3977: at least 3 minutes.
    timeout_ms: 180_000,
    start_tls: true,
};
const REMOTE_MANAGER: Defaults = Defaults {
    port: 4555,
    bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
    timeout_ms: 60_000,
    start_tls: false,
};

/// Children of a service block handled by [`common`].
const BLOCK_KNOWN: &[&str] = &[
    "port",
    "bind",
    "useTLS",
    "tls",
    "handler",
    "connectionLimit",
];
/// Handler children handled by [`common`].
const HANDLER_COMMON: &[&str] = &["helloName", "connectiontimeout", "connectionLimit"];

fn common(ctx: &mut Ctx, el: &Element, d: &Defaults, first_servername: &str) -> ServiceCommon {
    let enabled = ctx.bool_attr(el, "enabled", true);
    let port = ctx.num_child(el, "port", 1u16, 65535, d.port);
    let bind = match ctx.single(el, "bind") {
        Some(b) if !b.text.is_empty() => bind_address(&b.text).unwrap_or_else(|why| {
            ctx.err(b, format!("<bind> \"{}\": {why}", b.text));
            d.bind
        }),
        _ => d.bind,
    };
    let empty = Element {
        name: "handler".into(),
        attrs: Vec::new(),
        children: Vec::new(),
        text: String::new(),
        file: el.file.clone(),
        line: el.line,
    };
    let handler = ctx.single(el, "handler").unwrap_or(&empty);
    let (hello_name, hello_name_autodetect) = match ctx.single(handler, "helloName") {
        Some(h) => {
            let auto = ctx.bool_attr(h, "autodetect", false);
            let name = if h.text.is_empty() {
                first_servername.to_string()
            } else {
                h.text.clone()
            };
            (name, auto)
        }
        None => (first_servername.to_string(), false),
    };
    let timeout = ctx.num_child(handler, "connectiontimeout", 1u64, 86_400_000, d.timeout_ms);
    // James reads it beside <port>; Mailroom also took it from the handler. Both work.
    let limit_el = match (
        ctx.single(el, "connectionLimit"),
        ctx.single(handler, "connectionLimit"),
    ) {
        (Some(outer), Some(inner)) => {
            ctx.err(
                inner,
                format!(
                    "<connectionLimit> is also given beside <port> (line {}); keep one",
                    outer.line
                ),
            );
            Some(outer)
        }
        (outer, inner) => outer.or(inner),
    };
    let connection_limit =
        limit_el.and_then(|c| ctx.number(c, "<connectionLimit>", &c.text, 0u32, 1_000_000));

    let mut tls = ServiceTls {
        socket_tls: ctx.bool_child(el, "useTLS", false),
        start_tls: d.start_tls,
        certificate: None,
        private_key: None,
    };
    if let Some(t) = ctx.single(el, "tls") {
        tls.socket_tls = ctx.bool_attr(t, "socketTLS", tls.socket_tls);
        tls.start_tls = ctx.bool_attr(t, "startTLS", d.start_tls && !tls.socket_tls);
        let files = tls_files(ctx, t);
        tls.certificate = files.certificate;
        tls.private_key = files.private_key;
    } else if tls.socket_tls {
        tls.start_tls = false;
    }
    ServiceCommon {
        enabled,
        port,
        bind,
        hello_name,
        hello_name_autodetect,
        connection_timeout: Duration::from_millis(timeout),
        connection_limit,
        tls,
        location: el.location(),
    }
}

/// A `<bind>` value: an IP address, or a host name resolved now (its first address, IPv4
/// first, as James bound `InetAddress.getByName`).
pub(crate) fn bind_address(text: &str) -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = text.parse() {
        return Ok(ip);
    }
    let addrs: Vec<IpAddr> = (text, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("not an IP address, and the host name does not resolve ({e})"))?
        .map(|a| a.ip())
        .collect();
    let ip = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or("not an IP address, and the host name has no address")?;
    tracing::info!("<bind> {text}: resolved to {ip}");
    Ok(ip)
}

/// The message size limit of an SMTP listener whose `<maxmessagesize>` is unset, in KiB
/// (50 MiB).
pub const DEFAULT_MAX_MESSAGE_KIB: u64 = 50 * 1024;

/// The recipients per transaction of an SMTP listener whose `<maxRcpt>` is unset (RFC 5321
/// §4.5.3.1.8 asks for at least 100).
pub const DEFAULT_MAX_RCPT: u32 = 100;

/// `<maxmessagesize>` in KiB: 0 or a negative number means no limit, as in James; unset,
/// [`DEFAULT_MAX_MESSAGE_KIB`].
fn max_message_size(ctx: &mut Ctx, handler: &Element) -> u64 {
    let Some(el) = ctx.single(handler, "maxmessagesize") else {
        return DEFAULT_MAX_MESSAGE_KIB;
    };
    match el.text.parse::<i64>() {
        Ok(n) if n <= 0 => 0,
        Ok(n) if (n as u64) <= u64::MAX / 1024 => n as u64,
        _ => {
            ctx.err(
                el,
                format!(
                    "<maxmessagesize> must be a size in KiB (0 or less: no limit), got \"{}\"",
                    el.text
                ),
            );
            0
        }
    }
}

/// `<certificate>` and `<privateKey>` children of a `<tls>` element; both or neither.
pub(crate) fn tls_files(ctx: &mut Ctx, t: &Element) -> TlsFiles {
    let get = |ctx: &mut Ctx, name: &str| {
        ctx.nonempty_text(t, name)
            .map(|p| crate::url::resolve_path(&ctx.home, &p))
    };
    let files = TlsFiles {
        certificate: get(ctx, "certificate"),
        private_key: get(ctx, "privateKey"),
    };
    if files.certificate.is_some() != files.private_key.is_some() {
        ctx.err(
            t,
            "<tls> needs both <certificate> and <privateKey>, or neither",
        );
        return TlsFiles::default();
    }
    files
}

fn handler_of(el: &Element) -> Option<&Element> {
    el.child("handler")
}

fn known(extra: &[&'static str]) -> Vec<&'static str> {
    HANDLER_COMMON.iter().chain(extra).copied().collect()
}

pub(crate) fn smtp(ctx: &mut Ctx, el: &Element, first_servername: &str) -> SmtpServer {
    ctx.warn_unknown(el, BLOCK_KNOWN);
    let common = common(ctx, el, &SMTP, first_servername);
    let mut s = SmtpServer {
        common,
        max_message_size_kib: DEFAULT_MAX_MESSAGE_KIB,
        auth_required: AuthRequired::False,
        authorized_addresses: None,
        verify_identity: true,
        helo_ehlo_enforcement: true,
        max_rcpt: DEFAULT_MAX_RCPT,
        require_tls_for_auth: true,
        address_brackets_enforcement: true,
        greeting: None,
        verify_recipients: true,
        submission: false,
    };
    let Some(h) = handler_of(el) else { return s };
    ctx.warn_unknown(
        h,
        &known(&[
            "maxmessagesize",
            "authRequired",
            "authorizedAddresses",
            "verifyIdentity",
            "heloEhloEnforcement",
            "maxRcpt",
            "requireTLSForAuth",
            "addressBracketsEnforcement",
            "smtpGreeting",
            "handlerchain",
            "verifyRecipients",
            "submission",
        ]),
    );
    s.max_message_size_kib = max_message_size(ctx, h);
    if let Some(a) = ctx.single(h, "authRequired") {
        s.auth_required = match a.text.to_ascii_lowercase().as_str() {
            "true" | "yes" => AuthRequired::True,
            "false" | "no" => AuthRequired::False,
            "announce" => AuthRequired::Announce,
            other => {
                ctx.err(
                    a,
                    format!("<authRequired> must be false, true or announce, got \"{other}\""),
                );
                AuthRequired::False
            }
        };
    }
    if let Some(a) = ctx.single(h, "authorizedAddresses") {
        match NetworkList::parse(&a.text) {
            Ok(list) => s.authorized_addresses = Some(list),
            Err(errors) => {
                for e in errors {
                    ctx.err(a, format!("<authorizedAddresses>: {e}"));
                }
            }
        }
    }
    s.verify_identity = ctx.bool_child(h, "verifyIdentity", true);
    s.helo_ehlo_enforcement = ctx.bool_child(h, "heloEhloEnforcement", true);
    s.max_rcpt = ctx.num_child(h, "maxRcpt", 0u32, 1_000_000, DEFAULT_MAX_RCPT);
    s.require_tls_for_auth = ctx.bool_child(h, "requireTLSForAuth", true);
    s.address_brackets_enforcement = ctx.bool_child(h, "addressBracketsEnforcement", true);
    s.verify_recipients = ctx.bool_child(h, "verifyRecipients", true);
    s.submission = ctx.bool_child(h, "submission", false);
    if s.submission && s.auth_required == AuthRequired::False {
        if let Some(el) = h.child("submission") {
            ctx.err(
                el,
                "<submission>true needs <authRequired>true</authRequired> (or announce): \
                 nobody could send mail through this listener",
            );
        }
    }
    s.greeting = ctx
        .text(h, "smtpGreeting")
        .filter(|g| !g.is_empty())
        .map(str::to_string);
    s
}

pub(crate) fn pop3(ctx: &mut Ctx, el: &Element, first_servername: &str) -> Pop3Server {
    ctx.warn_unknown(el, BLOCK_KNOWN);
    let common = common(ctx, el, &POP3, first_servername);
    let mut s = Pop3Server {
        common,
        enable_apop: false,
        require_tls_for_auth: true,
    };
    if let Some(h) = handler_of(el) {
        ctx.warn_unknown(h, &known(&["enableAPOP", "requireTLSForAuth"]));
        s.enable_apop = ctx.bool_child(h, "enableAPOP", false);
        s.require_tls_for_auth = ctx.bool_child(h, "requireTLSForAuth", true);
    }
    s
}

pub(crate) fn nntp(ctx: &mut Ctx, el: &Element, first_servername: &str) -> NntpServer {
    ctx.warn_unknown(el, BLOCK_KNOWN);
    let common = common(ctx, el, &NNTP, first_servername);
    let mut s = NntpServer {
        common,
        auth_required: false,
        require_tls_for_auth: true,
        max_article_size_kib: 1024,
    };
    if let Some(h) = handler_of(el) {
        ctx.warn_unknown(
            h,
            &known(&["authRequired", "requireTLSForAuth", "maxArticleSize"]),
        );
        s.auth_required = ctx.bool_child(h, "authRequired", false);
        s.require_tls_for_auth = ctx.bool_child(h, "requireTLSForAuth", true);
        s.max_article_size_kib = ctx.num_child(h, "maxArticleSize", 0u64, u64::MAX / 1024, 1024);
    }
    s
}

pub(crate) fn remote_manager(ctx: &mut Ctx, el: &Element, first_servername: &str) -> RemoteManager {
    ctx.warn_unknown(el, BLOCK_KNOWN);
    let common = common(ctx, el, &REMOTE_MANAGER, first_servername);
    let mut r = RemoteManager {
        common,
        administrators: Vec::new(),
        prompt: String::new(),
    };
    let Some(h) = handler_of(el) else { return r };
    ctx.warn_unknown(h, &known(&["administrator_accounts", "prompt"]));
    if let Some(accounts) = ctx.single(h, "administrator_accounts") {
        for a in &accounts.children {
            if a.name != "account" {
                ctx.err(
                    a,
                    format!(
                        "<{}> is not allowed in <administrator_accounts>; only <account>",
                        a.name
                    ),
                );
                continue;
            }
            let (Some(login), Some(password)) = (
                ctx.required_attr(a, "login"),
                ctx.required_attr(a, "password"),
            ) else {
                continue;
            };
            if r.administrators.iter().any(|x| x.login == login) {
                ctx.err(a, format!("administrator \"{login}\" is listed twice"));
                continue;
            }
            r.administrators.push(AdminAccount {
                login,
                password: password.into(),
            });
        }
    }
    // Trimmed like every value: `<prompt>james&gt;</prompt>` is `james>`.
    r.prompt = ctx.text(h, "prompt").unwrap_or_default().to_string();
    r
}

pub(crate) fn connections(ctx: &mut Ctx, el: &Element) -> Connections {
    ctx.warn_unknown(
        el,
        &[
            "idle-timeout",
            "max-connections",
            "max-connections-per-ip",
            "max-session-bytes",
            "max-session-time",
            "shutdown-deadline",
        ],
    );
    let d = Connections::default();
    Connections {
        idle_timeout: Duration::from_millis(ctx.num_child(
            el,
            "idle-timeout",
            0u64,
            86_400_000,
            300_000,
        )),
        max_connections: ctx.num_child(el, "max-connections", 0u32, 1_000_000, d.max_connections),
        max_connections_per_ip: ctx.num_child(
            el,
            "max-connections-per-ip",
            0u32,
            1_000_000,
            d.max_connections_per_ip,
        ),
        max_session_bytes: ctx.num_child(
            el,
            "max-session-bytes",
            0u64,
            u64::MAX,
            d.max_session_bytes,
        ),
        max_session_time: match ctx.num_child(el, "max-session-time", 0u64, 864_000_000, 86_400_000)
        {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        shutdown_deadline: Duration::from_millis(ctx.num_child(
            el,
            "shutdown-deadline",
            0u64,
            3_600_000,
            10_000,
        )),
    }
}

pub(crate) fn dns(ctx: &mut Ctx, el: &Element) -> DnsServer {
    ctx.warn_unknown(
        el,
        &["servers", "autodiscover", "authoritative", "maxcachesize"],
    );
    let mut d = DnsServer::default();
    if let Some(servers) = ctx.single(el, "servers") {
        for s in servers.children_named("server") {
            match dns_server_address(&s.text) {
                Some(addr) => d.servers.push(addr),
                None => ctx.err(
                    s,
                    format!(
                        "<server> must be the IP address of a DNS server (IP, IP:port or \
                         [IPv6]:port), got \"{}\"",
                        s.text
                    ),
                ),
            }
        }
    }
    d.autodiscover = ctx.bool_child(el, "autodiscover", true);
    d.authoritative = ctx.bool_child(el, "authoritative", false);
    d.max_cache_size = ctx.num_child(el, "maxcachesize", 0u32, 100_000_000, 50_000);
    d
}

/// A DNS server's address: `IP` (port 53), `IP:port`, `[IPv6]` or `[IPv6]:port`.
fn dns_server_address(text: &str) -> Option<SocketAddr> {
    const DNS_PORT: u16 = 53;
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    if let Some(ip) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| SocketAddr::new(ip.into(), DNS_PORT));
    }
    text.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_default_admin_passwords_are_refused() {
        let account = |login: &str, password: &str| AdminAccount {
            login: login.into(),
            password: password.into(),
        };
        for (login, password) in [
            ("root", "root"),
            ("ops", "OPS"),
            ("ops", "admin"),
            ("ops", "Password"),
            ("ops", "james"),
            ("ops", ""),
        ] {
            assert!(
                account(login, password).weakness().is_some(),
                "{login}/{password}"
            );
        }
        assert_eq!(account("root", "a long secret").weakness(), None);
    }
}

/// `<authThrottle failures="5" window="600000" delay="1000" maxDelay="30000"/>` (Mailroom's
/// own, not in James): failed logins (SMTP AUTH, POP3) counted per client IP over all
/// listeners; after `failures` within `window` ms, each further failure is answered after
/// `delay` ms, doubled per failure up to `maxDelay` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottle {
    /// Failures allowed within the window before answers slow down.
    pub failures: u32,
    /// How long a failure counts.
    pub window: Duration,
    /// The first throttled answer's delay.
    pub delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for AuthThrottle {
    /// 5 failures per 10 minutes, then 1 s, doubled up to 30 s.
    fn default() -> Self {
        AuthThrottle {
            failures: 5,
            window: Duration::from_secs(600),
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

pub(crate) fn auth_throttle(ctx: &mut Ctx, el: &Element) -> AuthThrottle {
    ctx.warn_unknown(el, &[]);
    let default = AuthThrottle::default();
    let ms = |d: Duration| d.as_millis() as u64;
    let day = 86_400_000u64;
    let failures = ctx.num_attr(el, "failures", 0u32, 1_000_000, default.failures);
    let window = ctx.num_attr(el, "window", 1u64, day, ms(default.window));
    let delay = ctx.num_attr(el, "delay", 0u64, 3_600_000, ms(default.delay));
    let max_delay = ctx.num_attr(el, "maxDelay", 0u64, 3_600_000, ms(default.max_delay));
    if max_delay < delay {
        ctx.err(el, "<authThrottle>: maxDelay must not be below delay");
    }
    AuthThrottle {
        failures,
        window: Duration::from_millis(window),
        delay: Duration::from_millis(delay),
        max_delay: Duration::from_millis(max_delay.max(delay)),
    }
}
