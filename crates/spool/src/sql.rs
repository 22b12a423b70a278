//! The data sources of `<database-connections>` as James's JDBC mailets and matchers reach
//! them (`JDBCVirtualUserTable`, `JDBCAlias`, `WhiteListManager`, `IsInWhiteList`), and their
//! `db://SOURCE[/TABLE]` URLs.
//!
//! The server implements [`SqlSources`] over its data sources (connected on first use) and
//! hands it to [`register`]; a factory checks at its `<mailet>`'s line that the data source it
//! names is configured, so nothing connects while a configuration is checked. A database that
//! is away gives a temporary error (the mail stays in the spool and is tried again); a
//! statement the database refuses gives a permanent one.

use std::sync::Arc;

use mailroom_mailet::MailetError;

pub use mailroom_store::db::sql::TextRow;

use crate::Registry;

/// Runs configured SQL on named data sources, from a mailet's thread (blocking).
pub trait SqlSources: Send + Sync {
    /// The names of the configured data sources.
    fn names(&self) -> Vec<String>;

    /// Every row of a query (JDBC `?` placeholders, `params` bound in order), as text.
    fn query(&self, source: &str, sql: &str, params: &[&str]) -> Result<Vec<TextRow>, MailetError>;

    /// Runs a statement that changes rows; how many it changed.
    fn execute(&self, source: &str, sql: &str, params: &[&str]) -> Result<u64, MailetError>;

    /// Whether `table` exists on the data source, when that can be told now: `None` while a
    /// configuration is only checked (nothing connects) or when the database is away, which
    /// must not stop the server from starting.
    fn table_exists(&self, _source: &str, _table: &str) -> Option<bool> {
        None
    }
}

/// James's start-up check of a JDBC mailet's table: a table the database says it lacks is a
/// configuration error at the mailet's line.
pub fn check_table(
    what: &str,
    sources: &dyn SqlSources,
    source: &str,
    table: &str,
) -> Result<(), MailetError> {
    match sources.table_exists(source, table) {
        Some(false) => Err(MailetError::new(format!(
            "{what}: could not find table '{table}' in data source '{source}'"
        ))),
        _ => Ok(()),
    }
}

/// A store's SQL error as a mailet error: away is temporary, refused is permanent.
pub fn sql_error(source: &str, e: mailroom_store::db::sql::SqlError) -> MailetError {
    use mailroom_store::db::sql::SqlError;
    match e {
        SqlError::Unavailable(_) => {
            MailetError::temporary(format!("data source \"{source}\": {e}"))
        }
        SqlError::Statement(_) => MailetError::permanent(format!("data source \"{source}\": {e}")),
    }
}

/// A `db://SOURCE[/TABLE]` URL: its data source (which must be configured) and table, if any.
pub fn db_url(
    what: &str,
    url: &str,
    sources: &dyn SqlSources,
) -> Result<(String, Option<String>), MailetError> {
    let rest = url.trim().strip_prefix("db://").ok_or_else(|| {
        MailetError::new(format!(
            "{what} {url:?} is not a db://DATA-SOURCE/... URL: store it in a data source of \
             <database-connections>"
        ))
    })?;
    let (source, table) = match rest.split_once('/') {
        Some((source, table)) => (source, Some(table.trim_end_matches('/'))),
        None => (rest, None),
    };
    let known = sources.names();
    if !known.iter().any(|n| n == source) {
        let listed = if known.is_empty() {
            "the configuration has no <database-connections> data source".to_string()
        } else {
            format!("configured: {}", known.join(", "))
        };
        return Err(MailetError::new(format!(
            "{what} {url:?}: no data source \"{source}\" in <database-connections> ({listed})"
        )));
    }
    let table = table.filter(|t| !t.is_empty());
    if let Some(table) = table {
        identifier(what, table)?;
    }
    Ok((source.to_string(), table.map(str::to_string)))
}

/// Checks a table or column name that goes into SQL text: letters, digits and `_`.
pub fn identifier<'a>(what: &str, name: &'a str) -> Result<&'a str, MailetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(MailetError::new(format!(
            "{what}: {name:?} is not a plain SQL name (letters, digits and _)"
        )))
    }
}

/// Registers the mailets and matchers that use data sources: `JDBCVirtualUserTable` (James's
/// `db://` form beside Mailroom's own tables), `JDBCAlias`, `WhiteListManager`, `IsInWhiteList`.
pub fn register(registry: &mut Registry, sources: Arc<dyn SqlSources>) {
    crate::mailets::register_sql(registry, sources);
}

#[cfg(test)]
pub(crate) mod testing {
    //! An SQLite data source for unit tests.

    use super::*;
    use mailroom_store::db::{self, DataSourceSpec, Pool};

    /// `maildb` on a fresh SQLite file, with its own runtime.
    pub(crate) struct Sqlite {
        pub(crate) pool: Option<Pool>,
        runtime: tokio::runtime::Runtime,
        _home: tempfile::TempDir,
    }

    impl Sqlite {
        pub(crate) fn new() -> Arc<Sqlite> {
            let home = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let spec = DataSourceSpec {
                name: "maildb".into(),
                url: "sqlite://var/mail.db".into(),
                user: None,
                password: None,
                max: 2,
                lease: std::time::Duration::from_secs(60),
            };
            let pool = runtime.block_on(db::connect(&spec, home.path())).unwrap();
            Arc::new(Sqlite {
                pool: Some(pool),
                runtime,
                _home: home,
            })
        }

        /// A data source that is configured but away.
        pub(crate) fn away() -> Arc<Sqlite> {
            let mut s = Arc::into_inner(Sqlite::new()).unwrap();
            s.pool = None;
            Arc::new(s)
        }

        fn pool(&self, source: &str) -> Result<&Pool, MailetError> {
            assert_eq!(source, "maildb");
            self.pool
                .as_ref()
                .ok_or_else(|| MailetError::temporary("data source \"maildb\": cannot connect"))
        }
    }

    impl SqlSources for Sqlite {
        fn names(&self) -> Vec<String> {
            vec!["maildb".into()]
        }
        fn query(
            &self,
            source: &str,
            sql: &str,
            params: &[&str],
        ) -> Result<Vec<TextRow>, MailetError> {
            let pool = self.pool(source)?;
            self.runtime
                .block_on(db::sql::query_text(pool, sql, params))
                .map_err(|e| sql_error(source, e))
        }
        fn execute(&self, source: &str, sql: &str, params: &[&str]) -> Result<u64, MailetError> {
            let pool = self.pool(source)?;
            self.runtime
                .block_on(db::sql::execute(pool, sql, params))
                .map_err(|e| sql_error(source, e))
        }
        fn table_exists(&self, source: &str, table: &str) -> Option<bool> {
            let pool = self.pool(source).ok()?;
            self.runtime
                .block_on(db::sql::table_exists(pool, table))
                .ok()
        }
    }
}
