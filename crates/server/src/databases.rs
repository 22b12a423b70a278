//! The data sources of `<database-connections>`, opened for the repositories whose URLs are
//! `db://SOURCE/...`: each when a repository first needs it (so that a data source no
//! repository uses is never connected to), then shared by every repository on it.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mailroom_config::{Config, RepositoryUrl};
use mailroom_mailet::MailetError;
use mailroom_spool::sql::{sql_error, SqlSources, TextRow};
use mailroom_store::db::{DataSourceSpec, DataSources};
use mailroom_store::{InboxRepository, MailRepository, SpoolRepository, StoreError};
use mailroom_store::{Result as StoreResult, UsersRepository};
use tokio::runtime::Handle;

/// The configured data sources, connected on first use.
pub struct Databases {
    home: PathBuf,
    specs: Vec<DataSourceSpec>,
    runtime: Handle,
    opened: Mutex<HashMap<String, DataSources>>,
}

impl Databases {
    /// The data sources of `config`, none connected yet; pools run on `runtime`.
    pub fn new(config: &Config, runtime: Handle) -> Arc<Databases> {
        let specs = config
            .data_sources
            .iter()
            .map(|d| DataSourceSpec {
                name: d.name.clone(),
                url: d.url.clone(),
                user: d.user.clone(),
                password: d.password.as_ref().map(|p| p.expose().to_string()),
                max: d.max,
                lease: std::time::Duration::from_secs(d.lease_secs),
            })
            .collect();
        Arc::new(Databases {
            home: config.home.clone(),
            specs,
            runtime,
            opened: Mutex::default(),
        })
    }

    /// Runs `work` to its end from synchronous code: start-up, or a mailet's thread (a runtime
    /// worker thread is allowed to block for it).
    pub(crate) fn block<F: Future>(&self, work: F) -> F::Output {
        if Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.runtime.block_on(work))
        } else {
            self.runtime.block_on(work)
        }
    }

    /// The data source called `name`, connected (and its schema migrated) on first use.
    fn source(&self, name: &str) -> StoreResult<DataSources> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sources) = opened.get(name) {
            return Ok(sources.clone());
        }
        let spec = self.specs.iter().find(|s| s.name == name).ok_or_else(|| {
            StoreError::InvalidUrl(
                format!("db://{name}/"),
                format!("no data source \"{name}\" in <database-connections>"),
            )
        })?;
        let sources = self.block(DataSources::open(std::slice::from_ref(spec), &self.home))?;
        opened.insert(name.to_string(), sources.clone());
        Ok(sources)
    }

    /// Data source `name` for repositories whose bodies go to files (`dbfile://`, under
    /// `var/dbfile/<name>/` in the home) when `files`, else to the database.
    fn bodies_in(&self, name: &str, files: bool) -> StoreResult<DataSources> {
        let sources = self.source(name)?;
        Ok(if files {
            sources.with_file_bodies()
        } else {
            sources
        })
    }

    /// The use of each connected data source's pool: name, (open, idle, most).
    pub fn pool_usage(&self) -> Vec<(String, (u32, usize, u32))> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let pools = opened
            .iter()
            .filter_map(|(name, s)| Some((name, s.pool(name).ok()?)));
        pools
            .map(|(name, pool)| (name.clone(), pool.usage()))
            .collect()
    }

    /// Whether `<database-connections>` declares a data source called `name`.
    pub fn has_source(&self, name: &str) -> bool {
        self.specs.iter().any(|s| s.name == name)
    }

    /// James's Bayesian token tables in data source `source`.
    pub fn bayes(&self, source: &str) -> StoreResult<mailroom_store::db::DbBayes> {
        let sources = self.source(source)?;
        self.block(sources.bayes(source))
    }

    /// The users repository at a `db://` URL.
    pub fn users(&self, source: &str, path: &[String]) -> StoreResult<Arc<dyn UsersRepository>> {
        let sources = self.source(source)?;
        Ok(self.block(sources.users(source, path))?)
    }

    /// The inboxes at a `db://` URL (with `files`, `dbfile://`: bodies in files).
    pub fn inbox(
        &self,
        source: &str,
        path: &[String],
        files: bool,
    ) -> StoreResult<Arc<dyn InboxRepository>> {
        let sources = self.bodies_in(source, files)?;
        Ok(self.block(sources.inbox(source, path))?)
    }

    /// A spool at a `db://` URL (with `files`, `dbfile://`: bodies in files).
    pub fn spool(
        &self,
        source: &str,
        path: &[String],
        files: bool,
    ) -> StoreResult<Arc<dyn SpoolRepository>> {
        let sources = self.bodies_in(source, files)?;
        Ok(self.block(sources.spool(source, path))?)
    }

    /// The virtual user tables kept in data source `source`: `(name, database table)` each.
    pub fn mappings(
        &self,
        source: &str,
        tables: &[(String, String)],
    ) -> StoreResult<mailroom_store::db::DbMappings> {
        let sources = self.source(source)?;
        self.block(sources.mappings(source, tables))
    }

    /// The news repository in data source `source`.
    pub fn news(&self, source: &str, xref_host: &str) -> StoreResult<mailroom_store::db::DbNews> {
        let sources = self.source(source)?;
        self.block(sources.news(source, xref_host))
    }

    /// A mail repository at a `db://` URL (with `files`, `dbfile://`: bodies in files).
    pub fn mail(
        &self,
        source: &str,
        path: &[String],
        files: bool,
    ) -> StoreResult<Arc<dyn MailRepository>> {
        let sources = self.bodies_in(source, files)?;
        Ok(self.block(sources.mail(source, path))?)
    }
}

/// What James's JDBC mailets and matchers run (`JDBCVirtualUserTable`, `JDBCAlias`, the
/// whitelist): their SQL on a data source, connected on first use. A data source that cannot
/// be reached now is a temporary failure (the mail waits in the spool).
impl SqlSources for Databases {
    fn names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.name.clone()).collect()
    }

    fn query(&self, source: &str, sql: &str, params: &[&str]) -> Result<Vec<TextRow>, MailetError> {
        let sources = self
            .source(source)
            .map_err(|e| unreachable_source(source, e))?;
        let pool = sources
            .pool(source)
            .map_err(|e| unreachable_source(source, e))?;
        self.block(mailroom_store::db::sql::query_text(pool, sql, params))
            .map_err(|e| sql_error(source, e))
    }

    fn execute(&self, source: &str, sql: &str, params: &[&str]) -> Result<u64, MailetError> {
        let sources = self
            .source(source)
            .map_err(|e| unreachable_source(source, e))?;
        let pool = sources
            .pool(source)
            .map_err(|e| unreachable_source(source, e))?;
        self.block(mailroom_store::db::sql::execute(pool, sql, params))
            .map_err(|e| sql_error(source, e))
    }

    fn table_exists(&self, source: &str, table: &str) -> Option<bool> {
        let sources = self.source(source).ok()?;
        let pool = sources.pool(source).ok()?;
        self.block(mailroom_store::db::sql::table_exists(pool, table))
            .ok()
    }
}

fn unreachable_source(source: &str, e: StoreError) -> MailetError {
    let message = format!("data source \"{source}\": {e}");
    match e {
        StoreError::InvalidUrl(..) | StoreError::Corrupt(..) => MailetError::permanent(message),
        _ => MailetError::temporary(message),
    }
}

/// The data sources' names only, for `check-config` and `list-mailets` (nothing connects).
pub struct DataSourceNames(pub Vec<String>);

impl SqlSources for DataSourceNames {
    fn names(&self) -> Vec<String> {
        self.0.clone()
    }

    fn query(&self, source: &str, _: &str, _: &[&str]) -> Result<Vec<TextRow>, MailetError> {
        Err(MailetError::temporary(format!(
            "data source \"{source}\" is not connected while checking"
        )))
    }

    fn execute(&self, source: &str, _: &str, _: &[&str]) -> Result<u64, MailetError> {
        Err(MailetError::temporary(format!(
            "data source \"{source}\" is not connected while checking"
        )))
    }
}

/// A `db://` URL's data source and path, for what has no message bodies (users, virtual
/// user tables): `dbfile://` is refused there.
pub fn db_parts<'a>(url: &'a RepositoryUrl, what: &str) -> anyhow::Result<(&'a str, &'a [String])> {
    match url {
        RepositoryUrl::Db { source, path } => Ok((source, path)),
        RepositoryUrl::DbFile { .. } => anyhow::bail!(
            "{what}: dbfile:// keeps mail bodies in files, and a {what} has none; use db://"
        ),
        RepositoryUrl::File(_) => anyhow::bail!("{what}: not a database URL"),
    }
}

/// A `db://` or `dbfile://` URL of mail (a mail repository, a spool, inboxes): its data
/// source, its path, and whether its bodies go to files (`dbfile://`). `None` for a file URL.
pub fn mail_parts(url: &RepositoryUrl) -> Option<(&str, &[String], bool)> {
    match url {
        RepositoryUrl::Db { source, path } => Some((source, path, false)),
        RepositoryUrl::DbFile { source, path } => Some((source, path, true)),
        RepositoryUrl::File(_) => None,
    }
}
