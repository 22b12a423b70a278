//! Storage configuration: `<mailstore>` (James's table of repository classes, accepted and
//! checked), `<users-store>`, `<database-connections>` and `<nntp-repository>`.
//!
//! Java class names are mapped to what Mailroom has built in; the URL scheme, not the class,
//! decides the backend (see [`crate::url`]).

use std::path::PathBuf;

use crate::error::Location;
use crate::secret::Secret;
use crate::url::RepositoryUrl;
use crate::values::Ctx;
use crate::xml::Element;

/// One `<repository class=...>` row of the `<mailstore>` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailstoreEntry {
    /// The Java class, kept for messages (Mailroom picks its backend by URL scheme).
    pub class: String,
    /// `<protocols><protocol>`: URL schemes served (file, db, dbfile).
    pub protocols: Vec<String>,
    /// `<types><type>`: repository types served.
    pub types: Vec<RepositoryType>,
}

/// A repository type of the `<mailstore>` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryType {
    /// Mail repositories (inboxes, error and address-error stores).
    Mail,
    /// Spool repositories.
    Spool,
    /// James's stream repositories.
    Stream,
    /// James's object repositories.
    Object,
}

/// What a users repository class stores its users in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsersRepositoryKind {
    /// `org.apache.james.userrepository.UsersFileRepository`.
    File,
    /// `JamesUsersJdbcRepository`, `DefaultUsersJdbcRepository`, `ListUsersJdbcRepository`.
    Database,
}

/// One `<users-store><repository>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersRepository {
    /// `name` (`LocalUsers` is the server's own users; others serve mailets such as Listserv).
    pub name: String,
    /// The `class` attribute as written, if any.
    pub class: Option<String>,
    /// What the class stores into (derived from the URL when there is no class).
    pub kind: UsersRepositoryKind,
    /// The URL as written (`destinationURL=` or `<destination URL=.../>`).
    pub url: String,
    /// The parsed URL: this decides the backend.
    pub target: RepositoryUrl,
    /// Where the `<repository>` element is.
    pub location: Location,
}

/// One `<virtualusertable-store><table>` (James's form, `org.apache.james.vut.JDBCVirtualUserTable`):
/// the mapping table `name` kept in a database table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualUserTableRef {
    /// The table's name on the console (`addmapping table=NAME`); James's
    /// `DefaultVirtualUserTable` is Mailroom's `default`.
    pub name: String,
    /// `destinationURL`, as written.
    pub url: String,
    /// The data source and the database table (`db://maildb/VirtualUserTable`).
    pub target: RepositoryUrl,
    /// Where the `<table>` element is.
    pub location: Location,
}

/// `<virtualusertable-store>`: `<table name=... class=... destinationURL="db://SOURCE/TABLE"/>`.
pub(crate) fn virtual_user_tables(ctx: &mut Ctx, el: &Element) -> Vec<VirtualUserTableRef> {
    let mut tables: Vec<VirtualUserTableRef> = Vec::new();
    for t in &el.children {
        if t.name != "table" {
            ctx.err(
                t,
                format!(
                    "<{}> is not allowed in <virtualusertable-store>; only <table>",
                    t.name
                ),
            );
            continue;
        }
        let Some(name) = ctx.required_attr(t, "name") else {
            continue;
        };
        let name = if name == "DefaultVirtualUserTable" {
            "default".to_string()
        } else {
            name.to_lowercase()
        };
        if let Some(class) = t.attr("class") {
            let short = class.rsplit('.').next().unwrap_or(class);
            if short != "JDBCVirtualUserTable" {
                ctx.err(
                    t,
                    format!(
                        "unknown virtual user table class \"{class}\" (known: JDBCVirtualUserTable; \
                         tables not listed here are files under var/virtual/)"
                    ),
                );
                continue;
            }
        }
        let Some(url) = ctx.required_attr(t, "destinationURL") else {
            continue;
        };
        let Some(target) = ctx.url(t, &url) else {
            continue;
        };
        match &target {
            RepositoryUrl::Db { path, .. } if path.len() == 1 => {}
            _ => {
                ctx.err(
                    t,
                    format!(
                        "virtual user table \"{name}\": destinationURL \"{url}\" must be \
                         db://DATA-SOURCE/TABLE (tables not listed here are files under var/virtual/)"
                    ),
                );
                continue;
            }
        }
        if tables.iter().any(|o| o.name == name) {
            ctx.err(t, format!("virtual user table \"{name}\" is listed twice"));
            continue;
        }
        tables.push(VirtualUserTableRef {
            name,
            url,
            target,
            location: t.location(),
        });
    }
    tables
}

/// One `<data-source name=...>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    /// The name used in `db://NAME/...` URLs.
    pub name: String,
    /// James 2.3's pool `class`, accepted and ignored.
    pub class: Option<String>,
    /// `<driver>`: a JDBC driver class in James configs; informational.
    pub driver: Option<String>,
    /// `<dburl>`: `sqlite://var/mail.db` or `postgres://user:pass@host/db`. Which URLs work is
    /// decided by the store crate.
    pub url: String,
    /// `<user>` (empty elements mean none).
    pub user: Option<String>,
    /// `<password>` (empty elements mean none).
    pub password: Option<Secret>,
    /// `<max>`: connection pool size (default 10).
    pub max: u32,
    /// `<leaseTime>` (Mailroom's own; seconds, default 300): how long a spool mail leased by a
    /// node stays its own unless renewed — after a node dies, the others take its mails over
    /// once this has passed.
    pub lease_secs: u64,
    /// Where the `<data-source>` element is.
    pub location: Location,
}

/// `<nntp-repository>`: where news is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NntpRepository {
    /// `<rootPath>db://SOURCE/</rootPath>`: the news is in this data source (and `root_path`
    /// is not used), with where it is written.
    pub root_db: Option<(String, Location)>,
    /// `<readOnly>` (default false): posting disallowed.
    pub read_only: bool,
    /// `<rootPath>` (default `file://var/nntp/groups`).
    pub root_path: PathBuf,
    /// `<tempPath>` (default `file://var/nntp/temp`).
    pub temp_path: PathBuf,
    /// `<articleIDPath>` (default `file://var/nntp/articleid`).
    pub article_id_path: PathBuf,
    /// `<articleIDDomainSuffix>`: right-hand side of generated Message-IDs (default: the first
    /// servername).
    pub article_id_domain_suffix: String,
    /// `<newsgroups><newsgroup>`: groups created at start-up.
    pub newsgroups: Vec<String>,
    /// `<newsgroup description="...">` (Mailroom's own): what LIST NEWSGROUPS says of a group.
    pub descriptions: Vec<(String, String)>,
    /// James's elements that are present and accepted but that Mailroom does not use
    /// (`articleIDPath`, `spool`), for a note at start-up.
    pub unused: Vec<&'static str>,
    /// `<newsgroups only="true">`: only the listed groups exist.
    pub newsgroups_only: bool,
    /// `<spool><configuration><spoolPath>` (default `file://var/nntp/spool`).
    pub spool_path: PathBuf,
    /// `<spool><configuration><threadCount>` (default 1).
    pub spool_threads: u32,
    /// `<expire><group pattern="wildmat" days="n"/>...</expire>` (Mailroom's own): articles of
    /// the groups a pattern matches are removed `days` after they arrived; the first matching
    /// rule applies, and groups no rule matches keep their articles.
    pub expire: Vec<ExpireRule>,
    /// `<expire interval="seconds">` (default 3600): how often expiry runs.
    pub expire_interval_secs: u64,
}

/// One `<expire><group pattern= days=/>` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireRule {
    /// A wildmat over group names (checked when the server starts).
    pub pattern: String,
    /// Days an article is kept after it arrived.
    pub days: u32,
}

impl NntpRepository {
    /// The defaults, with `domain` as the article-ID suffix.
    pub fn defaults(ctx_home: &std::path::Path, domain: &str) -> NntpRepository {
        let p = |s: &str| crate::url::resolve_path(ctx_home, s);
        NntpRepository {
            root_db: None,
            read_only: false,
            root_path: p("file://var/nntp/groups"),
            temp_path: p("file://var/nntp/temp"),
            article_id_path: p("file://var/nntp/articleid"),
            article_id_domain_suffix: domain.to_string(),
            newsgroups: Vec::new(),
            descriptions: Vec::new(),
            unused: Vec::new(),
            newsgroups_only: false,
            spool_path: p("file://var/nntp/spool"),
            spool_threads: 1,
            expire: Vec::new(),
            expire_interval_secs: 3600,
        }
    }
}

/// Protocols of the mailstore table Mailroom serves.
const PROTOCOLS: &[&str] = &["file", "db", "dbfile"];

pub(crate) fn mailstore(ctx: &mut Ctx, el: &Element) -> Vec<MailstoreEntry> {
    let mut entries = Vec::new();
    let Some(repos) = ctx.single(el, "repositories") else {
        return entries;
    };
    for r in &repos.children {
        if r.name != "repository" {
            ctx.err(
                r,
                format!(
                    "<{}> is not allowed in <repositories>; only <repository>",
                    r.name
                ),
            );
            continue;
        }
        let class = ctx.required_attr(r, "class").unwrap_or_default();
        let mut protocols = Vec::new();
        for p in r
            .child("protocols")
            .iter()
            .flat_map(|p| p.children_named("protocol"))
        {
            let proto = p.text.to_ascii_lowercase();
            if PROTOCOLS.contains(&proto.as_str()) {
                protocols.push(proto);
            } else if proto == "mbox" {
                // Stock James 2.3 configs list an mbox repository; accept the row so they load,
                // but any mbox:// URL is rejected where it is used.
                tracing::warn!(
                    "{}: mbox repositories are not supported; row ignored",
                    p.location()
                );
            } else {
                ctx.err(
                    p,
                    format!(
                        "unknown repository protocol \"{}\" (known: file, db, dbfile)",
                        p.text
                    ),
                );
            }
        }
        let mut types = Vec::new();
        for t in r
            .child("types")
            .iter()
            .flat_map(|t| t.children_named("type"))
        {
            match t.text.as_str() {
                "MAIL" => types.push(RepositoryType::Mail),
                "SPOOL" => types.push(RepositoryType::Spool),
                "STREAM" => types.push(RepositoryType::Stream),
                "OBJECT" => types.push(RepositoryType::Object),
                other => ctx.err(
                    t,
                    format!(
                        "unknown repository type \"{other}\" (known: MAIL, SPOOL, STREAM, OBJECT)"
                    ),
                ),
            }
        }
        if !protocols.is_empty() {
            entries.push(MailstoreEntry {
                class,
                protocols,
                types,
            });
        }
    }
    entries
}

/// Maps a users repository class (qualified or short) to its kind.
fn users_class_kind(class: &str) -> Option<UsersRepositoryKind> {
    let short = class.rsplit('.').next().unwrap_or(class);
    match short {
        "UsersFileRepository" => Some(UsersRepositoryKind::File),
        "JamesUsersJdbcRepository" | "DefaultUsersJdbcRepository" | "ListUsersJdbcRepository" => {
            Some(UsersRepositoryKind::Database)
        }
        _ => None,
    }
}

pub(crate) fn users_store(ctx: &mut Ctx, el: &Element) -> Vec<UsersRepository> {
    let mut repos: Vec<UsersRepository> = Vec::new();
    for r in &el.children {
        if r.name != "repository" {
            ctx.err(
                r,
                format!(
                    "<{}> is not allowed in <users-store>; only <repository>",
                    r.name
                ),
            );
            continue;
        }
        let Some(name) = ctx.required_attr(r, "name") else {
            continue;
        };
        let url = match (
            r.attr("destinationURL"),
            r.child("destination").and_then(|d| d.attr("URL")),
        ) {
            (Some(u), _) | (None, Some(u)) => u.to_string(),
            (None, None) => {
                ctx.err(
                    r,
                    format!("users repository \"{name}\" needs destinationURL=\"...\" or <destination URL=\"...\"/>"),
                );
                continue;
            }
        };
        let Some(target) = ctx.url(r, &url) else {
            continue;
        };
        if matches!(target, RepositoryUrl::DbFile { .. }) {
            // James 2.3 read users from db:// URLs only; dbfile:// is for mail bodies.
            ctx.err(
                r,
                format!(
                    "users repository \"{name}\": \"{url}\": dbfile:// keeps mail bodies in \
                     files, and users have none; use db://SOURCE/TABLE"
                ),
            );
            continue;
        }
        let url_kind = match target {
            RepositoryUrl::File(_) => UsersRepositoryKind::File,
            _ => UsersRepositoryKind::Database,
        };
        let class = r.attr("class").map(str::to_string);
        if let Some(c) = &class {
            match users_class_kind(c) {
                None => {
                    ctx.err(
                        r,
                        format!(
                            "unknown users repository class \"{c}\" (known: UsersFileRepository, \
                             JamesUsersJdbcRepository, DefaultUsersJdbcRepository, ListUsersJdbcRepository)"
                        ),
                    );
                    continue;
                }
                Some(k) if k != url_kind => tracing::warn!(
                    "{}: users repository \"{name}\": class {c} does not match URL {url}; the URL decides",
                    r.location()
                ),
                Some(_) => {}
            }
        }
        if repos.iter().any(|x| x.name == name) {
            ctx.err(r, format!("users repository \"{name}\" is defined twice"));
            continue;
        }
        repos.push(UsersRepository {
            name,
            class,
            kind: url_kind,
            url,
            target,
            location: r.location(),
        });
    }
    repos
}

pub(crate) fn data_sources(ctx: &mut Ctx, el: &Element) -> Vec<DataSource> {
    let mut out: Vec<DataSource> = Vec::new();
    // James 3 wraps them in <data-sources>; James 2.3 puts them directly in the block.
    let candidates: Vec<&Element> = el
        .children
        .iter()
        .flat_map(|c| {
            if c.name == "data-sources" {
                c.children.iter().collect()
            } else {
                vec![c]
            }
        })
        .collect();
    for d in candidates {
        if d.name != "data-source" {
            ctx.err(
                d,
                format!(
                    "<{}> is not allowed in <database-connections>; only <data-source>",
                    d.name
                ),
            );
            continue;
        }
        let Some(name) = ctx.required_attr(d, "name") else {
            continue;
        };
        let Some(url) = ctx.nonempty_text(d, "dburl") else {
            if d.child("dburl").is_none() {
                ctx.err(d, format!("data source \"{name}\" needs a <dburl>"));
            }
            continue;
        };
        let opt =
            |ctx: &mut Ctx, n: &str| ctx.text(d, n).filter(|t| !t.is_empty()).map(str::to_string);
        let ds = DataSource {
            class: d.attr("class").map(str::to_string),
            driver: opt(ctx, "driver"),
            user: opt(ctx, "user"),
            password: opt(ctx, "password").map(Secret::from),
            max: ctx.num_child(d, "max", 1u32, 10_000, 10),
            // Held leases are renewed every second once half has passed: 5 s at least.
            lease_secs: ctx.num_child(d, "leaseTime", 5u64, 86_400, 300),
            url,
            location: d.location(),
            name,
        };
        if let Some(first) = out.iter().find(|x| x.name == ds.name) {
            ctx.err(
                d,
                format!(
                    "data source \"{}\" is defined twice (first at {})",
                    ds.name, first.location
                ),
            );
            continue;
        }
        out.push(ds);
    }
    out
}

pub(crate) fn nntp_repository(ctx: &mut Ctx, el: &Element, domain: &str) -> NntpRepository {
    ctx.warn_unknown(
        el,
        &[
            "readOnly",
            "rootPath",
            "tempPath",
            "articleIDPath",
            "articleIDDomainSuffix",
            "newsgroups",
            "spool",
            "expire",
        ],
    );
    // `<rootPath>db://SOURCE/</rootPath>`: the news repository in a database (its tables have
    // fixed names). Other database URLs are refused rather than read as a directory `db:`.
    let mut root_db = None;
    for child in ["rootPath", "tempPath", "articleIDPath"] {
        let Some(c) = el.child(child) else {
            continue;
        };
        let text = c.text.trim();
        let lower = text.to_ascii_lowercase();
        if !(lower.starts_with("db:") || lower.starts_with("dbfile:")) {
            continue;
        }
        match RepositoryUrl::parse(text, &ctx.home) {
            Ok(RepositoryUrl::Db { source, path }) if child == "rootPath" && path.is_empty() => {
                root_db = Some((source, c.location()));
            }
            _ => ctx.err(
                c,
                format!(
                    "<{child}>: \"{text}\" is not a news repository: use a file:// path, or \
                     db://DATA-SOURCE/ in <rootPath> for news in a database (its tables have \
                     fixed names)"
                ),
            ),
        }
    }
    let d = NntpRepository::defaults(&ctx.home, domain);
    let mut r = NntpRepository {
        root_db,
        read_only: ctx.bool_child(el, "readOnly", false),
        root_path: ctx.path_child(el, "rootPath", "file://var/nntp/groups"),
        temp_path: ctx.path_child(el, "tempPath", "file://var/nntp/temp"),
        article_id_path: ctx.path_child(el, "articleIDPath", "file://var/nntp/articleid"),
        article_id_domain_suffix: ctx
            .text(el, "articleIDDomainSuffix")
            .filter(|s| !s.is_empty())
            .unwrap_or(domain)
            .to_string(),
        ..d
    };
    for unused in ["articleIDPath", "spool"] {
        if el.child(unused).is_some() {
            r.unused.push(unused);
        }
    }
    if let Some(groups) = ctx.single(el, "newsgroups") {
        r.newsgroups_only = ctx.bool_attr(groups, "only", false);
        for g in groups.children_named("newsgroup") {
            if g.text.is_empty()
                || g.text
                    .contains(|c: char| c.is_whitespace() || c == ',' || c == '*')
            {
                ctx.err(g, format!("\"{}\" is not a valid newsgroup name", g.text));
            } else if !r.newsgroups.contains(&g.text) {
                r.newsgroups.push(g.text.clone());
                if let Some(d) = g.attr("description") {
                    // One line in LIST NEWSGROUPS: no TAB, CR or LF.
                    let d: String = d
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    r.descriptions.push((g.text.clone(), d.trim().to_string()));
                }
            }
        }
    }
    if let Some(conf) = ctx
        .single(el, "spool")
        .and_then(|s| s.child("configuration"))
    {
        r.spool_path = ctx.path_child(conf, "spoolPath", "file://var/nntp/spool");
        r.spool_threads = ctx.num_child(conf, "threadCount", 0u32, 1024, 1);
    }
    if let Some(expire) = ctx.single(el, "expire") {
        r.expire_interval_secs = ctx.num_attr(expire, "interval", 60u64, 86_400 * 7, 3600);
        for g in &expire.children {
            if g.name != "group" {
                ctx.err(
                    g,
                    format!(
                        "<{}> is not allowed in <expire>; only <group pattern= days=>",
                        g.name
                    ),
                );
                continue;
            }
            let Some(pattern) = ctx.required_attr(g, "pattern") else {
                continue;
            };
            let days = ctx.num_attr(g, "days", 1u32, 100_000, 0);
            if days > 0 {
                r.expire.push(ExpireRule { pattern, days });
            } else if g.attr("days").is_none() {
                ctx.err(g, "<group> in <expire> needs days=\"n\"".to_string());
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_mapping() {
        assert_eq!(
            users_class_kind("org.apache.james.userrepository.UsersFileRepository"),
            Some(UsersRepositoryKind::File)
        );
        assert_eq!(
            users_class_kind("org.apache.james.userrepository.ListUsersJdbcRepository"),
            Some(UsersRepositoryKind::Database)
        );
        assert_eq!(users_class_kind("com.example.LdapUsers"), None);
    }
}
