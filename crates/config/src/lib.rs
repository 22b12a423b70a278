/*!
`mailroom-config` turns a James-2.3-style `config.xml` into typed configuration.

* [`xml`] reads the file (and its `<!ENTITY name SYSTEM "file">` includes) into an owned
  [`Element`] tree where every element knows its file and line.
* The block modules ([`james`], [`spoolmanager`], [`services`], [`stores`], [`fetchmail`]) read
  typed values from that tree, collecting every problem as a [`ConfigError`] located at
  `file:line`; [`Config::load`] returns them all at once as [`ConfigErrors`].
* [`network`] parses `authorizedAddresses`-style network lists; [`url`] parses repository URLs
  and resolves paths against the server home.

This crate checks structure and values (ports, booleans, URLs, required processors); it does
not know the matchers and mailets (the spool crate checks those against the [`Location`]s kept
here) and it opens no sockets or databases.

```
let config = mailroom_config::Config::embedded_default(Some(std::path::Path::new("/srv/mail")))
    .expect("the default configuration is valid");
assert_eq!(config.smtp[0].common.port, 2525);
assert_eq!(config.resolve_path("file://var/mail/spool/"), std::path::Path::new("/srv/mail/var/mail/spool/"));
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod fetchmail;
pub mod james;
pub mod metrics;
pub mod network;
pub mod secret;
pub mod services;
pub mod spoolmanager;
pub mod stores;
pub mod url;
mod values;
pub mod xml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors, Location};
pub use fetchmail::{FetchTask, Fetchmail};
pub use james::{James, RepositoryRef, Usernames};
pub use network::{Network, NetworkList};
pub use secret::Secret;
pub use services::{
    AdminAccount, AuthRequired, AuthThrottle, Connections, DnsServer, NntpServer, Pop3Server,
    RemoteManager, ServiceCommon, ServiceTls, SmtpServer, TlsFiles,
};
pub use spoolmanager::{split_matcher, MailetConfig, MatcherDecl, ProcessorConfig, SpoolManager};
pub use stores::{
    DataSource, ExpireRule, MailstoreEntry, NntpRepository, RepositoryType, UsersRepository,
    UsersRepositoryKind, VirtualUserTableRef,
};
pub use url::RepositoryUrl;
pub use values::parse_bool;
pub use xml::Element;

use values::Ctx;

/// The built-in configuration (`default-config.xml` in this crate): everything on 127.0.0.1,
/// SMTP 2525, POP3 1110, NNTP 1119, RemoteManager 4555 without an administrator (so it does
/// not start), file storage under `./var`, and the James-like default processor tree.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.xml");

/// Top-level blocks that are parsed.
const KNOWN_BLOCKS: &[&str] = &[
    "James",
    "mailetpackages",
    "matcherpackages",
    "spoolmanager",
    "spoolrepository",
    "smtpserver",
    "pop3server",
    "nntpserver",
    "nntp-repository",
    "remotemanager",
    "fetchmail",
    "mailstore",
    "users-store",
    "virtualusertable-store",
    "database-connections",
    "dnsserver",
    "connections",
    "tls",
    "authThrottle",
    "metrics",
];

/// Top-level blocks of James's Avalon container that have no meaning here: accepted, logged,
/// ignored.
const IGNORED_BLOCKS: &[&str] = &[
    "sockets",
    "thread-manager",
    "objectstorage",
    "scheduler",
    "time-scheduler",
    "jmx",
    "logs",
];

/// Blocks that may appear several times (one listener each).
const REPEATABLE: &[&str] = &["smtpserver", "pop3server", "nntpserver", "remotemanager"];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server home: relative paths and `file://` URLs resolve against it. `--home DIR`,
    /// else the config file's directory, else the current directory; always absolute.
    pub home: PathBuf,
    /// The configuration's name in messages (its path, or `<default config>`).
    pub source: Arc<Path>,
    /// The `<James>` block.
    pub james: James,
    /// `<mailetpackages><mailetpackage>`: Java packages whose qualified mailet names resolve to
    /// the built-ins.
    pub mailet_packages: Vec<String>,
    /// `<matcherpackages><matcherpackage>`: the same for matchers.
    pub matcher_packages: Vec<String>,
    /// `<spoolmanager>`: worker count and processor tree.
    pub spool_manager: SpoolManager,
    /// `<spoolrepository>` (default `file://var/mail/spool/`).
    pub spool_repository: RepositoryRef,
    /// Every `<smtpserver>` block (one listener each), disabled ones included.
    pub smtp: Vec<SmtpServer>,
    /// Every `<pop3server>` block.
    pub pop3: Vec<Pop3Server>,
    /// Every `<nntpserver>` block.
    pub nntp: Vec<NntpServer>,
    /// Every `<remotemanager>` block.
    pub remote_manager: Vec<RemoteManager>,
    /// `<nntp-repository>` (defaults under `var/nntp/` when absent).
    pub nntp_repository: NntpRepository,
    /// `<fetchmail>`, if present.
    pub fetchmail: Option<Fetchmail>,
    /// `<mailstore>`'s repository table (checked, informational).
    pub mailstore: Vec<MailstoreEntry>,
    /// `<users-store>` repositories; always contains `LocalUsers` (default `file://var/users/`).
    pub users_repositories: Vec<UsersRepository>,
    /// `<virtualusertable-store>`: the virtual user tables kept in a database (the others are
    /// files under `var/virtual/`).
    pub virtual_user_tables: Vec<VirtualUserTableRef>,
    /// `<database-connections>` data sources.
    pub data_sources: Vec<DataSource>,
    /// `<dnsserver>`.
    pub dns: DnsServer,
    /// `<connections>`.
    pub connections: Connections,
    /// The global `<tls>` certificate and key.
    pub tls: TlsFiles,
    /// `<authThrottle>` (Mailroom's own): how failed logins slow down, per client IP.
    pub auth_throttle: AuthThrottle,
    /// `<metrics>` (Mailroom's own): the Prometheus `/metrics` and `/health` endpoints.
    pub metrics: metrics::Metrics,
}

impl Config {
    /// Loads `path`. `home` is `--home`; without it the file's directory is the home, or, in
    /// James's layout (`.../apps/james/SAR-INF/config.xml`), the directory above `SAR-INF`,
    /// against which James resolved `file://var/`.
    pub fn load(path: &Path, home: Option<&Path>) -> Result<Config, ConfigErrors> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => absolute(p),
            _ => absolute(Path::new(".")),
        };
        let dir = match dir.parent() {
            Some(above) if dir.file_name() == Some(std::ffi::OsStr::new("SAR-INF")) => {
                above.to_path_buf()
            }
            _ => dir,
        };
        let root = xml::load_document(path)?;
        Config::from_element(&root, &absolute(home.unwrap_or(&dir)))
    }

    /// Parses `text`. `name` names it in messages, entity includes resolve against `base_dir`,
    /// and the home is `home`, else `base_dir`.
    pub fn from_str_with_name(
        text: &str,
        name: &str,
        base_dir: &Path,
        home: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let root = xml::parse_document(text, Arc::from(Path::new(name)), base_dir)?;
        Config::from_element(&root, &absolute(home.unwrap_or(base_dir)))
    }

    /// The built-in [`DEFAULT_CONFIG`]; the home is `home`, else the current directory.
    pub fn embedded_default(home: Option<&Path>) -> Result<Config, ConfigErrors> {
        Config::from_str_with_name(
            DEFAULT_CONFIG,
            "<default config>",
            Path::new("."),
            home.or(Some(Path::new("."))),
        )
    }

    /// Reads the configuration from an already parsed `<config>` element; `home` should be
    /// absolute.
    pub fn from_element(root: &Element, home: &Path) -> Result<Config, ConfigErrors> {
        let mut ctx = Ctx::new(home);
        if root.name != "config" {
            ctx.err(
                root,
                format!("the root element must be <config>, not <{}>", root.name),
            );
            return Err(ConfigErrors(ctx.errors));
        }
        let mut seen: Vec<&Element> = Vec::new();
        for c in &root.children {
            let name = c.name.as_str();
            if IGNORED_BLOCKS.contains(&name) {
                tracing::info!(
                    "{}: <{name}> is James container plumbing; ignored",
                    c.location()
                );
            } else if !KNOWN_BLOCKS.contains(&name) {
                ctx.err(
                    c,
                    format!(
                        "unknown block <{name}> (known: {}; ignored: {})",
                        KNOWN_BLOCKS.join(", "),
                        IGNORED_BLOCKS.join(", ")
                    ),
                );
            } else if !REPEATABLE.contains(&name) {
                if let Some(first) = seen.iter().find(|s| s.name == name) {
                    ctx.err(
                        c,
                        format!(
                            "<{name}> appears more than once (first at line {})",
                            first.line
                        ),
                    );
                } else {
                    seen.push(c);
                }
            }
        }
        let block = |name: &str| seen.iter().copied().find(|e| e.name == name);

        let james = james::parse(&mut ctx, block("James"));
        let first_servername = james.servernames[0].clone();
        let packages = |ctx: &mut Ctx, outer: &str, inner: &str| -> Vec<String> {
            let Some(el) = block(outer) else {
                return Vec::new();
            };
            ctx.warn_unknown(el, &[inner]);
            el.children_named(inner)
                .filter(|p| !p.text.is_empty())
                .map(|p| p.text.clone())
                .collect()
        };
        let mailet_packages = packages(&mut ctx, "mailetpackages", "mailetpackage");
        let matcher_packages = packages(&mut ctx, "matcherpackages", "matcherpackage");
        let spool_manager = match block("spoolmanager") {
            Some(el) => spoolmanager::parse(&mut ctx, el),
            None => {
                ctx.err(root, "<config> has no <spoolmanager> block; it needs at least the root and error processors");
                SpoolManager {
                    threads: 1,
                    processors: Vec::new(),
                    matchers: Vec::new(),
                    location: root.location(),
                }
            }
        };
        let spool_repository = match block("spoolrepository") {
            Some(el) => james::repository(&mut ctx, el, "SPOOL", "file://var/mail/spool/"),
            None => RepositoryRef::default_for("file://var/mail/spool/", home),
        };
        let mut config = Config {
            home: home.to_path_buf(),
            source: root.file.clone(),
            mailet_packages,
            matcher_packages,
            spool_manager,
            spool_repository,
            smtp: Vec::new(),
            pop3: Vec::new(),
            nntp: Vec::new(),
            remote_manager: Vec::new(),
            nntp_repository: match block("nntp-repository") {
                Some(el) => stores::nntp_repository(&mut ctx, el, &first_servername),
                None => NntpRepository::defaults(home, &first_servername),
            },
            fetchmail: block("fetchmail").map(|el| fetchmail::parse(&mut ctx, el)),
            mailstore: block("mailstore")
                .map(|el| stores::mailstore(&mut ctx, el))
                .unwrap_or_default(),
            users_repositories: block("users-store")
                .map(|el| stores::users_store(&mut ctx, el))
                .unwrap_or_default(),
            virtual_user_tables: block("virtualusertable-store")
                .map(|el| stores::virtual_user_tables(&mut ctx, el))
                .unwrap_or_default(),
            data_sources: block("database-connections")
                .map(|el| stores::data_sources(&mut ctx, el))
                .unwrap_or_default(),
            dns: block("dnsserver")
                .map(|el| services::dns(&mut ctx, el))
                .unwrap_or_default(),
            connections: block("connections")
                .map(|el| services::connections(&mut ctx, el))
                .unwrap_or_default(),
            tls: block("tls")
                .map(|el| services::tls_files(&mut ctx, el))
                .unwrap_or_default(),
            auth_throttle: block("authThrottle")
                .map(|el| services::auth_throttle(&mut ctx, el))
                .unwrap_or_default(),
            metrics: block("metrics")
                .map(|el| metrics::parse(&mut ctx, el))
                .unwrap_or_default(),
            james,
        };
        for c in &root.children {
            match c.name.as_str() {
                "smtpserver" => config
                    .smtp
                    .push(services::smtp(&mut ctx, c, &first_servername)),
                "pop3server" => config
                    .pop3
                    .push(services::pop3(&mut ctx, c, &first_servername)),
                "nntpserver" => config
                    .nntp
                    .push(services::nntp(&mut ctx, c, &first_servername)),
                "remotemanager" => config.remote_manager.push(services::remote_manager(
                    &mut ctx,
                    c,
                    &first_servername,
                )),
                _ => {}
            }
        }
        let host_name = (config.james.servernames_autodetect
            || config.james.servernames_autodetect_ip)
            .then(host_name)
            .flatten();
        config.james.autodetect(host_name.as_deref());
        // <connections><max-connections> is the default of every listener; 0 means no limit.
        let max_connections = config.connections.max_connections;
        let commons = config
            .smtp
            .iter_mut()
            .map(|s| &mut s.common)
            .chain(config.pop3.iter_mut().map(|s| &mut s.common))
            .chain(config.nntp.iter_mut().map(|s| &mut s.common))
            .chain(config.remote_manager.iter_mut().map(|s| &mut s.common));
        for common in commons {
            let limit = common.connection_limit.unwrap_or(max_connections);
            common.connection_limit = (limit > 0).then_some(limit);
            if common.hello_name_autodetect {
                match host_name.clone().or_else(self::host_name) {
                    Some(name) => common.hello_name = name,
                    None => tracing::warn!(
                        "{}: <helloName autodetect=\"true\">: the host name is unknown; using \"{}\"",
                        common.location,
                        common.hello_name
                    ),
                }
            }
        }
        match block("users-store") {
            None => config.users_repositories.push(UsersRepository {
                name: "LocalUsers".into(),
                class: None,
                kind: UsersRepositoryKind::File,
                url: "file://var/users/".into(),
                target: RepositoryUrl::parse("file://var/users/", home)
                    .expect("built-in URL is valid"),
                location: root.location(),
            }),
            Some(el) if config.local_users().is_none() => ctx.err(
                el,
                "<users-store> needs a <repository name=\"LocalUsers\" ...> for the server's users",
            ),
            Some(_) => {}
        }
        config.cross_check(&mut ctx);
        // Blocks are read in dependency order; report in reading order (main file first).
        ctx.errors.sort_by(|a, b| {
            (a.file != root.file, &a.file, a.line).cmp(&(b.file != root.file, &b.file, b.line))
        });
        if ctx.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(ctx.errors))
        }
    }

    /// Checks that span blocks: data sources named by URLs exist; listeners do not collide.
    fn cross_check(&self, ctx: &mut Ctx) {
        let mut urls: Vec<(&RepositoryUrl, &str, Location)> = Vec::new();
        for r in [&self.james.inbox_repository, &self.spool_repository] {
            if let Some(loc) = &r.location {
                urls.push((&r.target, &r.url, loc.clone()));
            }
        }
        for u in &self.users_repositories {
            urls.push((&u.target, &u.url, u.location.clone()));
        }
        for t in &self.virtual_user_tables {
            urls.push((&t.target, &t.url, t.location.clone()));
        }
        // Mailet parameters and matcher conditions holding a database URL (a repositoryPath,
        // a JDBC virtual user table, IsInWhiteList=db://maildb): the data source must exist.
        let mut mailet_urls: Vec<(RepositoryUrl, String, Location)> = Vec::new();
        for entry in self
            .spool_manager
            .processors
            .iter()
            .flat_map(|p| &p.mailets)
        {
            let condition = entry
                .matcher_condition()
                .map(|c| (c.trim(), entry.location.clone()));
            let params = entry
                .element
                .children
                .iter()
                .map(|c| (c.text.as_str(), c.location()));
            for (value, loc) in condition.into_iter().chain(params) {
                let lower = value.to_ascii_lowercase();
                if lower.starts_with("db://") || lower.starts_with("dbfile://") {
                    if let Ok(target) = RepositoryUrl::parse(value, &self.home) {
                        mailet_urls.push((target, value.to_string(), loc));
                    }
                }
            }
        }
        for (target, url, loc) in &mailet_urls {
            urls.push((target, url, loc.clone()));
        }
        if let Some((source, loc)) = &self.nntp_repository.root_db {
            if self.data_source(source).is_none() {
                ctx.errors.push(loc.error(format!(
                    "<rootPath> uses data source \"{source}\", which <database-connections> does not define"
                )));
            }
        }
        for (target, url, loc) in urls {
            if let Some(source) = target.data_source() {
                if self.data_source(source).is_none() {
                    ctx.errors.push(loc.error(format!(
                        "\"{url}\" uses data source \"{source}\", which <database-connections> does not define"
                    )));
                }
            }
        }
        let mut listeners: Vec<(&ServiceCommon, &str)> = Vec::new();
        let all = self
            .smtp
            .iter()
            .map(|s| (&s.common, "smtpserver"))
            .chain(self.pop3.iter().map(|s| (&s.common, "pop3server")))
            .chain(self.nntp.iter().map(|s| (&s.common, "nntpserver")))
            .chain(
                self.remote_manager
                    .iter()
                    .map(|s| (&s.common, "remotemanager")),
            );
        for (c, kind) in all.filter(|(c, _)| c.enabled) {
            let clash = listeners.iter().find(|(o, _)| {
                o.port == c.port
                    && (o.bind == c.bind || o.bind.is_unspecified() || c.bind.is_unspecified())
            });
            if let Some((o, okind)) = clash {
                ctx.errors.push(c.location.error(format!(
                    "<{kind}> listens on {}:{}, which <{okind}> at {} already uses",
                    c.bind, c.port, o.location
                )));
            } else {
                listeners.push((c, kind));
            }
        }
        self.metrics.cross_check(ctx, &listeners);
    }

    /// Resolves a path or `file:` URL against the home: `file://var/x` and `var/x` are
    /// `HOME/var/x`; `file:///abs` and `/abs` are absolute.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        url::resolve_path(&self.home, path)
    }

    /// Parses a repository URL (for example a mailet's `repositoryPath`) against the home.
    pub fn repository_url(&self, url: &str) -> Result<RepositoryUrl, String> {
        RepositoryUrl::parse(url, &self.home)
    }

    /// The `LocalUsers` repository: the server's own users.
    pub fn local_users(&self) -> Option<&UsersRepository> {
        self.users_repositories
            .iter()
            .find(|r| r.name == "LocalUsers")
    }

    /// The data source called `name`.
    pub fn data_source(&self, name: &str) -> Option<&DataSource> {
        self.data_sources.iter().find(|d| d.name == name)
    }
}

/// The machine's host name (`uname -n`), lower-cased; `None` when it is empty.
pub fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname
        .nodename()
        .to_string_lossy()
        .trim()
        .to_ascii_lowercase();
    (!name.is_empty() && name != "(none)").then_some(name)
}

/// `p` made absolute against the current directory (without touching the file system).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) if p == Path::new(".") || p == Path::new("./") => cwd,
        Ok(cwd) => cwd.join(p),
        Err(_) => p.to_path_buf(),
    }
}
