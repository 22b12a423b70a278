//! Opens the repositories a configuration names, choosing the backend by URL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::databases::{db_parts, mail_parts, Databases};
use anyhow::{anyhow, bail, Result};
use mailroom_config::{Config, RepositoryUrl};
use mailroom_store::file::{
    FileMailRepository, FileMappingsRepository, FileNews, FileNewsRepository, FileUsersRepository,
    LogSpool, Maildir,
};
use mailroom_store::mappings::RoutedMappings;
use mailroom_store::{
    Blocking, InboxRepository, MailRepository, MappingsRepository, NewsRepository, SpoolRepository,
    StoreError, UsersRepository,
};

/// The name of the server's own users repository in `<users-store>`.
const LOCAL_USERS: &str = "LocalUsers";

/// The directory of a file:// URL; other URLs are refused with a clear message (where only
/// the file backend serves).
fn file_path<'a>(url: &'a RepositoryUrl, what: &str) -> Result<&'a Path> {
    match url {
        RepositoryUrl::File(path) => Ok(path),
        other => bail!(
            "{what}: database repositories ({other:?}) are not available here; use a file:// URL"
        ),
    }
}

/// A `db://` URL as one text whatever its spelling (`db://maildb/mail/error/` and
/// `db://maildb/mail/error` are one repository).
fn db_key(source: &str, path: &[String]) -> String {
    format!("db://{source}/{}", path.join("/"))
}

/// Opens a users repository by URL.
fn users_at(target: &RepositoryUrl, db: &Databases) -> Result<Arc<dyn UsersRepository>> {
    if let RepositoryUrl::File(path) = target {
        return Ok(Arc::new(Blocking::new(FileUsersRepository::open(path)?)));
    }
    let (source, path) = db_parts(target, "users repository")?;
    Ok(db.users(source, path)?)
}

/// The `LocalUsers` users repository.
pub fn users(config: &Config, db: &Databases) -> Result<Arc<dyn UsersRepository>> {
    let repo = config
        .users_repositories
        .iter()
        .find(|r| r.name == LOCAL_USERS)
        .ok_or_else(|| anyhow!("<users-store> has no repository named {LOCAL_USERS}"))?;
    users_at(&repo.target, db)
}

/// Every users repository of `<users-store>` by name, `LocalUsers` first (reusing `local`).
pub fn all_users(
    config: &Config,
    local: Arc<dyn UsersRepository>,
    db: &Databases,
) -> Result<Vec<(String, Arc<dyn UsersRepository>)>> {
    let mut all = vec![(LOCAL_USERS.to_string(), local)];
    for repo in config
        .users_repositories
        .iter()
        .filter(|r| r.name != LOCAL_USERS)
    {
        let opened = users_at(&repo.target, db)?;
        all.push((repo.name.clone(), opened));
    }
    Ok(all)
}

/// The virtual user tables: those of `<virtualusertable-store>` in their databases, every
/// other one a file under `var/virtual/` in the home.
pub fn mappings(config: &Config, db: &Databases) -> Result<Arc<dyn MappingsRepository>> {
    let dir = config.home.join("var/virtual");
    let files: Arc<dyn MappingsRepository> =
        Arc::new(Blocking::new(FileMappingsRepository::open(&dir)?));
    if config.virtual_user_tables.is_empty() {
        return Ok(files);
    }
    // One repository per data source, holding its tables.
    let mut by_source: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    for t in &config.virtual_user_tables {
        let (source, path) = db_parts(&t.target, "virtual user table")?;
        let entry = (t.name.clone(), path.join("/"));
        match by_source.iter_mut().find(|(s, _)| *s == source) {
            Some((_, tables)) => tables.push(entry),
            None => by_source.push((source, vec![entry])),
        }
    }
    let mut routes: Vec<(String, Arc<dyn MappingsRepository>)> = Vec::new();
    for (source, tables) in by_source {
        let repo: Arc<dyn MappingsRepository> = Arc::new(
            db.mappings(source, &tables)
                .map_err(|e| anyhow!("<virtualusertable-store>: {e}"))?,
        );
        routes.extend(tables.into_iter().map(|(name, _)| (name, repo.clone())));
    }
    Ok(Arc::new(RoutedMappings::new(routes, files)))
}

/// The news repository of `<nntp-repository>` (groups under `<rootPath>`, temporary files in
/// `<tempPath>`), with the groups of `<newsgroups>` created; `None` when no NNTP server is
/// enabled. `xref_host` names this server in `Xref:` headers.
pub fn news(
    config: &Config,
    xref_host: &str,
    db: &Databases,
) -> Result<Option<Arc<dyn NewsRepository>>> {
    if !config.nntp.iter().any(|s| s.common.enabled) {
        return Ok(None);
    }
    let r = &config.nntp_repository;
    if let Some((source, _)) = &r.root_db {
        // In a database: `<rootPath>db://SOURCE/</rootPath>`.
        let news = db
            .news(source, xref_host)
            .map_err(|e| anyhow!("<nntp-repository> db://{source}/: {e}"))?;
        for group in &r.newsgroups {
            match db.block(NewsRepository::create_group(&news, group)) {
                Ok(true) => tracing::info!(%group, "newsgroup created"),
                Ok(false) => {}
                Err(e) => bail!("<nntp-repository><newsgroups>: {group}: {e}"),
            }
        }
        return Ok(Some(Arc::new(news)));
    }
    for unused in &r.unused {
        tracing::info!(
            element = %unused,
            "<nntp-repository>: <{unused}> is accepted and not used (the Message-ID index lives \
             with the groups; posts are stored at once, with no spool)"
        );
    }
    if r.newsgroups_only {
        tracing::warn!(
            "<nntp-repository>: <newsgroups only=\"true\"> is accepted and removes nothing: \
             groups not listed stay (remove them with delgroup on the console)"
        );
    }
    let repo = FileNewsRepository::open(&r.root_path, &r.temp_path, xref_host)
        .map_err(|e| anyhow!("<nntp-repository> {}: {e}", r.root_path.display()))?;
    for group in &r.newsgroups {
        match mailroom_store::blocking::NewsRepository::create_group(&repo, group) {
            Ok(true) => tracing::info!(%group, "newsgroup created"),
            Ok(false) => {}
            Err(e) => bail!("<nntp-repository><newsgroups>: {group}: {e}"),
        }
    }
    Ok(Some(Arc::new(FileNews::new(repo))))
}

/// The inbox repository (`<inboxRepository>`).
pub fn inbox(config: &Config, db: &Databases) -> Result<Arc<dyn InboxRepository>> {
    let target = &config.james.inbox_repository.target;
    if let Some((source, path, files)) = mail_parts(target) {
        return Ok(db.inbox(source, path, files)?);
    }
    let path = file_path(&config.james.inbox_repository.target, "inbox repository")?;
    Ok(Arc::new(Blocking::new(Maildir::open(path)?)))
}

/// Inbox repositories that mailets name by URL (ToMultiRepository's `repositoryUrl`: an
/// inbox root, one mailbox per user), each opened once.
pub struct InboxRepositories {
    home: PathBuf,
    db: Arc<Databases>,
    open: Mutex<HashMap<String, Arc<dyn InboxRepository>>>,
}

impl InboxRepositories {
    /// The inbox roots of the server at `config`.
    pub fn new(config: &Config, db: Arc<Databases>) -> Self {
        InboxRepositories {
            home: config.home.clone(),
            db,
            open: Mutex::default(),
        }
    }

    /// The inbox root at `url` (`file://var/mail/inboxes2/`, `db://maildb/inbox2`).
    pub fn open(&self, url: &str) -> Result<Arc<dyn InboxRepository>, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(repo) = open.get(url) {
            return Ok(repo.clone());
        }
        let invalid = |why: String| StoreError::InvalidUrl(url.to_string(), why);
        let target = RepositoryUrl::parse(url, &self.home).map_err(invalid)?;
        let repo: Arc<dyn InboxRepository> = match &target {
            RepositoryUrl::File(path) => Arc::new(Blocking::new(Maildir::open(path)?)),
            other => {
                let (source, path, files) =
                    mail_parts(other).ok_or_else(|| invalid("not a database URL".into()))?;
                self.db.inbox(source, path, files)?
            }
        };
        open.insert(url.to_string(), repo.clone());
        Ok(repo)
    }
}

/// The spool (`<spoolrepository>`).
pub fn spool(config: &Config, db: &Databases) -> Result<Arc<dyn SpoolRepository>> {
    let target = &config.spool_repository.target;
    if let Some((source, path, files)) = mail_parts(target) {
        return Ok(db.spool(source, path, files)?);
    }
    let path = file_path(&config.spool_repository.target, "spool repository")?;
    Ok(Arc::new(Blocking::new(LogSpool::open(path)?)))
}

/// The outgoing spool of a RemoteDelivery (`<outgoing>`): a log spool of its own, never the
/// main spool's directory.
pub fn outgoing(
    config: &Config,
    db: &Databases,
    url: &str,
) -> Result<Arc<dyn SpoolRepository>, String> {
    let target = RepositoryUrl::parse(url, &config.home)?;
    if let Some((source, path, files)) = mail_parts(&target) {
        // db:// and dbfile:// of one table and repository are the same rows.
        if let Some((s, p, _)) = mail_parts(&config.spool_repository.target) {
            if db_key(source, path) == db_key(s, p) {
                return Err(
                    "it is the main spool; give the outgoing mail a repository of its own".into(),
                );
            }
        }
        return db.spool(source, path, files).map_err(|e| e.to_string());
    }
    let path = file_path(&target, "outgoing spool").map_err(|e| e.to_string())?;
    let dir = canonical_dir(path).map_err(|e| e.to_string())?;
    // A main spool in a database cannot be this directory.
    if let RepositoryUrl::File(spool) = &config.spool_repository.target {
        if canonical_dir(spool).is_ok_and(|s| s == dir) {
            return Err(
                "it is the main spool; give the outgoing mail a directory of its own".into(),
            );
        }
    }
    let opened = LogSpool::open(&dir).map_err(|e| e.to_string())?;
    Ok(Arc::new(Blocking::new(opened)))
}

/// The mail repositories that mailets name by URL (ToRepository...), opened once per directory:
/// `file://var/mail/error` and `file://var/mail/error/` are one repository, not two that clean
/// up each other's files.
pub struct MailRepositories {
    home: PathBuf,
    /// The spool's directory (or `db://` URL), which no mailet may use as a plain mail
    /// repository.
    spool_dir: PathBuf,
    spool_db: Option<String>,
    db: Arc<Databases>,
    open: Mutex<Opened>,
}

/// The repositories opened so far: by directory (one object each), and by the URL text they
/// were asked for (so that a URL is resolved once).
#[derive(Default)]
struct Opened {
    by_dir: HashMap<PathBuf, Arc<dyn MailRepository>>,
    by_url: HashMap<String, Arc<dyn MailRepository>>,
}

impl MailRepositories {
    /// The repositories of `config`.
    pub fn new(config: &Config, db: Arc<Databases>) -> Result<Self> {
        let (spool_dir, spool_db) = match &config.spool_repository.target {
            RepositoryUrl::File(spool) => (canonical_dir(spool)?, None),
            RepositoryUrl::Db { source, path } | RepositoryUrl::DbFile { source, path } => {
                (PathBuf::new(), Some(db_key(source, path)))
            }
        };
        Ok(MailRepositories {
            home: config.home.clone(),
            spool_dir,
            spool_db,
            db,
            open: Mutex::default(),
        })
    }

    /// The repository at `url`. A URL that cannot name a mail repository is
    /// [`StoreError::InvalidUrl`]; a directory that cannot be made or opened now (no
    /// descriptors left, say) is an I/O error, which is temporary.
    pub fn open(&self, url: &str) -> Result<Arc<dyn MailRepository>, StoreError> {
        if let Some(repo) = self.lock().by_url.get(url) {
            return Ok(repo.clone());
        }
        let invalid = |why: String| StoreError::InvalidUrl(url.to_string(), why);
        let target = RepositoryUrl::parse(url, &self.home).map_err(invalid)?;
        if let Some((source, path, files)) = mail_parts(&target) {
            let key = db_key(source, path);
            if self.spool_db.as_ref() == Some(&key) {
                return Err(invalid("it is the spool; store mails elsewhere".into()));
            }
            // db:// and dbfile:// name the same rows, but write bodies apart: one handle each.
            let key = if files { format!("{key}#files") } else { key };
            if let Some(repo) = self.lock().by_url.get(&key) {
                return Ok(repo.clone());
            }
            let repo = self.db.mail(source, path, files)?;
            let mut open = self.lock();
            open.by_url.insert(key, repo.clone());
            open.by_url.insert(url.to_string(), repo.clone());
            return Ok(repo);
        }
        let path = file_path(&target, "mail repository").map_err(|e| invalid(e.to_string()))?;
        if path.exists() && !path.is_dir() {
            return Err(invalid(format!("{} is not a directory", path.display())));
        }
        let dir = canonical_dir(path)?;
        if dir == self.spool_dir {
            return Err(invalid("it is the spool; store mails elsewhere".into()));
        }
        let mut open = self.lock();
        let repo = match open.by_dir.get(&dir) {
            Some(repo) => repo.clone(),
            None => {
                let repo: Arc<dyn MailRepository> =
                    Arc::new(Blocking::new(FileMailRepository::open(&dir)?));
                open.by_dir.insert(dir, repo.clone());
                repo
            }
        };
        open.by_url.insert(url.to_string(), repo.clone());
        Ok(repo)
    }

    /// The repository in `dir` for an administrator (the console, the control socket): the
    /// one mailets use when it is open, else a handle that creates and changes nothing by
    /// reading ([`FileMailRepository::open_existing`]; not kept, so that the mailets' later
    /// open still cleans up after a crash). A missing directory is [`StoreError::NotFound`].
    pub fn open_existing(
        &self,
        url: &str,
        dir: &Path,
    ) -> Result<Arc<dyn MailRepository>, StoreError> {
        if let Some(repo) = dir
            .canonicalize()
            .ok()
            .and_then(|canonical| self.lock().by_dir.get(&canonical).cloned())
        {
            return Ok(repo);
        }
        match FileMailRepository::open_existing(dir) {
            Ok(repo) => Ok(Arc::new(Blocking::new(repo))),
            Err(StoreError::NotFound(_)) => Err(StoreError::NotFound(format!("repository {url}"))),
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Opened> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A directory's canonical path, creating it first.
fn canonical_dir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}

/// What a repository URL given by an administrator names: which kind of repository it is,
/// and so how its mails are read (a log spool's lock-free snapshot, or a directory of mail
/// files) and what flushing one does (due at once where it is, or back to the spool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminTarget {
    /// The spool.
    Spool,
    /// A RemoteDelivery outgoing spool (`<outgoing>`): a log spool in this directory.
    Outgoing(PathBuf),
    /// The mail repository in this directory.
    Mail(PathBuf),
    /// The mail repository at this `db://` URL (as [`db_key`] spells it).
    DbMail(String),
    /// A RemoteDelivery outgoing spool at this `db://` URL (as [`db_key`] spells it).
    DbOutgoing(String),
}

impl AdminTarget {
    /// How an open outgoing spool is found among a server's (which are keyed by directory):
    /// its directory, or for one in a database its `db://` URL taken as a path (no directory
    /// can be spelled so).
    pub fn outgoing_key(&self) -> Option<PathBuf> {
        match self {
            AdminTarget::Outgoing(dir) => Some(dir.clone()),
            AdminTarget::DbOutgoing(key) => Some(PathBuf::from(key)),
            _ => None,
        }
    }
}

/// The repositories an administrator may name (in the console's `listspool`/`flushspool`/
/// `deletespool` and in `mailroom queue`): only those the configuration names — the spool,
/// every RemoteDelivery's outgoing spool, and every repository URL among the mailets'
/// parameters (`repositoryPath` of ToRepository, the error repository...). Any other URL, absolute or with `..`, is
/// refused before anything is opened, so that these commands can never read, clean up or
/// create files elsewhere.
#[derive(Clone, Debug)]
pub struct AdminRepositories {
    home: PathBuf,
    spool_dir: PathBuf,
    /// The spool's `db://` URL when it is in a database.
    spool_db: Option<String>,
    /// The outgoing spools' directories, normalised.
    outgoing: Vec<PathBuf>,
    /// The configured mail repositories' directories, normalised.
    allowed: Vec<PathBuf>,
    /// The configured mail repositories in a database, as [`db_key`] spells them.
    allowed_db: Vec<String>,
    /// The outgoing spools in a database, as [`db_key`] spells them.
    outgoing_db: Vec<String>,
}

impl AdminRepositories {
    /// The repositories `config` names.
    pub fn new(config: &Config) -> Result<Self> {
        // A spool in a database has no directory: the control socket goes in var/run.
        let (spool_dir, spool_db) = match &config.spool_repository.target {
            RepositoryUrl::File(dir) => (normal(dir), None),
            RepositoryUrl::Db { source, path } | RepositoryUrl::DbFile { source, path } => {
                let dir = config.home.join("var/run/db-spool");
                std::fs::create_dir_all(&dir)?;
                (normal(&dir), Some(db_key(source, path)))
            }
        };
        let mut allowed = Vec::new();
        let mut allowed_db = Vec::new();
        let mut outgoing = Vec::new();
        let mut outgoing_db = Vec::new();
        for processor in &config.spool_manager.processors {
            for mailet in &processor.mailets {
                if let Some(url) = mailroom_delivery::configured_outgoing(mailet) {
                    match RepositoryUrl::parse(&url, &config.home) {
                        Ok(RepositoryUrl::File(dir)) => outgoing.push(normal(&dir)),
                        Ok(RepositoryUrl::Db { source, path })
                        | Ok(RepositoryUrl::DbFile { source, path }) => {
                            outgoing_db.push(db_key(&source, &path))
                        }
                        _ => {}
                    }
                    continue;
                }
                for (_, value) in &mailet.params {
                    let value = value.trim();
                    if value.starts_with("db:") || value.starts_with("dbfile:") {
                        if let Ok(RepositoryUrl::Db { source, path })
                        | Ok(RepositoryUrl::DbFile { source, path }) =
                            RepositoryUrl::parse(value, &config.home)
                        {
                            allowed_db.push(db_key(&source, &path));
                        }
                        continue;
                    }
                    if !value.starts_with("file:") {
                        continue;
                    }
                    if let Ok(RepositoryUrl::File(dir)) = RepositoryUrl::parse(value, &config.home)
                    {
                        allowed.push(normal(&dir));
                    }
                }
            }
        }
        Ok(AdminRepositories {
            home: config.home.clone(),
            spool_dir,
            spool_db,
            outgoing,
            allowed,
            allowed_db,
            outgoing_db,
        })
    }

    /// Whether the spool is in a database (then [`AdminRepositories::spool_dir`] holds only
    /// the control socket).
    pub fn spool_in_database(&self) -> bool {
        self.spool_db.is_some()
    }

    /// The spool's directory.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// What `url` names, if the configuration names it.
    pub fn resolve(&self, url: &str) -> Result<AdminTarget, StoreError> {
        let invalid = |why: &str| StoreError::InvalidUrl(url.to_string(), why.to_string());
        let target = RepositoryUrl::parse(url, &self.home).map_err(|e| invalid(&e))?;
        let dir = match target {
            RepositoryUrl::File(dir) => dir,
            RepositoryUrl::Db { source, path } | RepositoryUrl::DbFile { source, path }
                if self.spool_db.as_deref() == Some(db_key(&source, &path).as_str()) =>
            {
                return Ok(AdminTarget::Spool);
            }
            RepositoryUrl::Db { source, path } | RepositoryUrl::DbFile { source, path }
                if self.allowed_db.contains(&db_key(&source, &path)) =>
            {
                return Ok(AdminTarget::DbMail(db_key(&source, &path)));
            }
            RepositoryUrl::Db { source, path } | RepositoryUrl::DbFile { source, path }
                if self.outgoing_db.contains(&db_key(&source, &path)) =>
            {
                return Ok(AdminTarget::DbOutgoing(db_key(&source, &path)));
            }
            _ => return Err(invalid("not a repository that the configuration names")),
        };
        let dir = normal(&dir);
        if dir == self.spool_dir {
            Ok(AdminTarget::Spool)
        } else if self.outgoing.contains(&dir) {
            Ok(AdminTarget::Outgoing(dir))
        } else if self.allowed.contains(&dir) {
            Ok(AdminTarget::Mail(dir))
        } else {
            Err(invalid("not a repository that the configuration names"))
        }
    }
}

/// A path with `.` and `..` resolved, through symbolic links where it exists (so that two
/// spellings of one directory compare equal), else lexically.
fn normal(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    // The longest existing ancestor may be a link: canonicalise that part.
    let mut existing = out.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return out,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_repositories_resolve() {
        let home = tempfile::tempdir().unwrap();
        let config = Config::embedded_default(Some(home.path())).unwrap();
        let admin = AdminRepositories::new(&config).unwrap();
        assert_eq!(
            admin.resolve("file://var/mail/spool/").unwrap(),
            AdminTarget::Spool
        );
        assert_eq!(
            admin.resolve("file://var/mail/error").unwrap(),
            AdminTarget::Mail(normal(&home.path().join("var/mail/error")))
        );
        assert_eq!(
            admin.resolve("file://var/mail/outgoing").unwrap(),
            AdminTarget::Outgoing(normal(&home.path().join("var/mail/outgoing")))
        );
        for url in [
            "file:///tmp/",
            "file://var/mail/typo/",
            "file://var/mail/error/../../../../tmp/",
            "file://var/users/",
            "db://maildb/error",
        ] {
            assert!(
                matches!(admin.resolve(url), Err(StoreError::InvalidUrl(..))),
                "{url}"
            );
        }
        assert_eq!(
            admin.resolve("file://var/mail/x/../error/").unwrap(),
            admin.resolve("file://var/mail/error/").unwrap()
        );
        // Nothing was created.
        assert!(!home.path().join("var").exists());
    }
}
