//! The database backend: users, mail repositories, inboxes, the spool, virtual user tables and
//! news in SQLite (embedded,
//! nothing to install) or PostgreSQL, through sqlx.
//!
//! * [`DataSources`]: one connection pool per `<data-source>` (`sqlite://var/mail.db` relative
//!   to the home, `postgres://…`, James's `jdbc:postgresql://host:port/db` with `<user>` and
//!   `<password>`; `<max>` connections), with the versioned migrations run at start and a
//!   database written by a newer Mailroom refused.
//! * James 2.3.2's tables, named by the URL as James names them (`db://maildb/inbox/` is table
//!   `inbox`, `db://maildb/mail/error/` is table `mail` with `repository_name` `error`), created
//!   on first use with James's columns plus Mailroom's own (`mailroom_*`), so that a James 2.3
//!   database is served as it is.
//! * Bodies are kept in `mailroom_bodies` in chunks of [`body::CHUNK`] octets (SQLite blobs,
//!   PostgreSQL `bytea`), written and read one chunk at a time, so memory stays bounded whatever
//!   a message's size. A `dbfile://` repository keeps them as files under the home instead
//!   (`var/dbfile/<source>/<table>/`, see [`body_files`]): [`DataSources::with_file_bodies`].
//!
//! Every write commits before it returns: SQLite runs in WAL mode with `synchronous=FULL`, and
//! PostgreSQL's default `synchronous_commit` holds the commit until it is on disk. On SQLite
//! the writes of the mail path share group transactions ([`batch`]: one writer per file).

mod batch;
mod bayes;
mod body;
mod body_files;
mod inbox;
mod mail;
mod mappings;
mod news;
mod node_lock;
pub mod sql;
mod table;
mod users;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqlSafeStr;

pub use bayes::{Corpus, DbBayes, TokenCounts};
pub use inbox::DbInbox;
pub use mail::DbMailRepository;
pub use mappings::DbMappings;
pub use news::DbNews;
pub use users::DbUsersRepository;

use crate::{Result, StoreError};

/// A connection pool of one data source.
#[derive(Clone, Debug)]
pub enum Pool {
    /// An embedded SQLite database file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// Runs the same code on either engine's pool: `$p` is the `SqlitePool` or the `PgPool`. The
/// code is written once and compiled for both, so statements must be valid on both engines
/// (`$1` placeholders work on SQLite too); where they differ, [`Dialect`] gives the text.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Pool {
    /// The SQL spelling of this engine.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Connections open now, how many of them are idle, and the most the pool opens (for the
    /// metrics).
    pub fn usage(&self) -> (u32, usize, u32) {
        on_pool!(self, p => (p.size(), p.num_idle(), p.options().get_max_connections()))
    }

    /// Whether the pool was closed (the data sources are closed: the server is stopping).
    pub(crate) fn is_closed(&self) -> bool {
        on_pool!(self, p => p.is_closed())
    }
}

/// Where the two engines' SQL differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The type of binary columns.
    pub(crate) fn blob(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }

    /// The size POP3 sends of a James row's `message_body` (every LF without a CR before it
    /// counted as CRLF), computed by the database so that listing a mailbox reads no body:
    /// octets + LFs − CRLFs, the LFs and CRLFs counted by what `replace` removes. On
    /// PostgreSQL the `bytea` is counted in its `escape` text form, which keeps CR and LF
    /// as they are (and spells only NUL, high-bit octets and `\` otherwise).
    pub(crate) fn james_wire_size(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "(length(CAST(message_body AS BLOB)) \
                 + length(CAST(message_body AS BLOB)) \
                 - length(CAST(replace(message_body, x'0a', x'') AS BLOB)) \
                 - (length(CAST(message_body AS BLOB)) \
                    - length(CAST(replace(message_body, x'0d0a', x'') AS BLOB))) / 2)"
            }
            Dialect::Postgres => {
                "(octet_length(message_body) \
                 + length(encode(message_body, 'escape')) \
                 - length(replace(encode(message_body, 'escape'), chr(10), '')) \
                 - (length(encode(message_body, 'escape')) \
                    - length(replace(encode(message_body, 'escape'), chr(13) || chr(10), ''))) / 2)"
            }
        }
    }

    /// `last_updated` in milliseconds since the epoch (a James `timestamp` on PostgreSQL).
    pub(crate) fn updated_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "last_updated",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM last_updated) * 1000 AS BIGINT)",
        }
    }

    /// The value written to `last_updated` from parameter `$n` in milliseconds.
    pub(crate) fn updated_param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("to_timestamp(CAST(${n} AS DOUBLE PRECISION) / 1000)"),
        }
    }

    /// The column that orders a table's rows by insertion.
    pub(crate) fn seq(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "mailroom_seq",
        }
    }
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`): a deferred transaction that read first could not be upgraded while another
/// connection writes, and would fail instead of waiting.
pub(crate) trait WriteTx {
    type Db: sqlx::Database;
    fn write_tx(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl WriteTx for SqlitePool {
    type Db = sqlx::Sqlite;
    fn write_tx(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl WriteTx for PgPool {
    type Db = sqlx::Postgres;
    fn write_tx(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>>> + Send
    {
        self.begin()
    }
}

/// Whether two pools reach the same database (one SQLite file, or one PostgreSQL database),
/// so that one transaction can write through both.
pub(crate) fn same_database(a: &Pool, b: &Pool) -> bool {
    match (a, b) {
        (Pool::Sqlite(a), Pool::Sqlite(b)) => {
            a.connect_options().get_filename() == b.connect_options().get_filename()
        }
        (Pool::Postgres(a), Pool::Postgres(b)) => {
            let (a, b) = (a.connect_options(), b.connect_options());
            (
                a.get_host(),
                a.get_port(),
                a.get_database(),
                a.get_username(),
            ) == (
                b.get_host(),
                b.get_port(),
                b.get_database(),
                b.get_username(),
            )
        }
        _ => false,
    }
}

/// A database error as a store error (temporary: the database may come back).
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    // SQLITE_FULL (13) and PostgreSQL's disk_full (53100), or a write that failed for lack
    // of space: a full disk, answered as one (SMTP `452 4.3.1`).
    let full = match &e {
        sqlx::Error::Io(io) => io.kind() == io::ErrorKind::StorageFull,
        _ => e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "13" || code == "53100"),
    };
    let kind = if full {
        io::ErrorKind::StorageFull
    } else {
        io::ErrorKind::Other
    };
    StoreError::Io(io::Error::new(kind, format!("database: {e}")))
}

/// Whether a database's error code says the fault is passing (worth another try later) rather
/// than the statement's: SQLite's BUSY, LOCKED, IOERR and FULL (primary codes 5, 6, 10, 13;
/// `code` may be an extended code, whose low byte is the primary one), PostgreSQL's SQLSTATE
/// classes 08 (connection), 53 (insufficient resources), 57 (operator intervention, e.g. a
/// shutdown), 58 (system error) and the serialization failure and deadlock of class 40.
pub(crate) fn temporary_code(sqlite: bool, code: &str) -> bool {
    if sqlite {
        code.parse::<u32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13))
    } else {
        matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
            || matches!(code, "40001" | "40P01")
    }
}

/// Whether a database error is a passing fault (see [`temporary_code`]).
pub(crate) fn is_temporary_database_error(e: &dyn sqlx::error::DatabaseError) -> bool {
    let sqlite = e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
    e.code().is_some_and(|code| temporary_code(sqlite, &code))
}

/// Whether `e` is a unique-key violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// SQL built at run time (table names come from repository URLs, checked by [`table_name`]).
pub(crate) fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// Checks a table name taken from a repository URL: a plain SQL identifier that cannot
/// inject anything, and not one of Mailroom's own tables.
pub(crate) fn table_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.to_ascii_lowercase().starts_with("mailroom_")
        && !name.to_ascii_lowercase().starts_with("_sqlx");
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(StoreError::InvalidUrl(
            name.to_string(),
            "a table name is letters, digits and _ (at most 48), not starting with mailroom_"
                .into(),
        ))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    to_ms(std::time::SystemTime::now())
}

/// A time as milliseconds since the Unix epoch.
pub(crate) fn to_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// A time from milliseconds since the Unix epoch.
pub(crate) fn from_ms(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// One `<data-source>` as the store needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSourceSpec {
    /// The name `db://NAME/...` URLs use.
    pub name: String,
    /// `<dburl>`.
    pub url: String,
    /// `<user>`, overriding one in the URL.
    pub user: Option<String>,
    /// `<password>`, overriding one in the URL.
    pub password: Option<String>,
    /// `<max>`: the most connections the pool opens.
    pub max: u32,
    /// `<leaseTime>`: how long a spool lease lasts unless renewed (a dead node's mails are
    /// taken over once it has passed).
    pub lease: Duration,
}

/// The schema versions this build knows, per engine.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "bodies",
    include_str!("migrations/sqlite_0001_bodies.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "bodies",
    include_str!("migrations/postgres_0001_bodies.sql"),
)];

/// Where the applied versions are recorded.
const MIGRATIONS_TABLE: &str = "mailroom_migrations";

fn migrator(dialect: Dialect) -> Migrator {
    let list = match dialect {
        Dialect::Sqlite => SQLITE_MIGRATIONS,
        Dialect::Postgres => POSTGRES_MIGRATIONS,
    };
    let mut migrator = Migrator::with_migrations(
        list.iter()
            .map(|(version, name, text)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    text.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The data sources of a configuration, each an open, migrated pool.
#[derive(Clone, Debug, Default)]
pub struct DataSources {
    pools: HashMap<String, Pool>,
    /// The spool lease of each data source.
    leases: HashMap<String, Duration>,
    /// The database file of each SQLite data source, beside which spool owners' lock files go.
    sqlite_files: HashMap<String, PathBuf>,
    /// Where large bodies read back from a database are kept while a mail is in use (unlinked
    /// files: nothing stays behind).
    tmp_dir: PathBuf,
    /// Where `dbfile://` repositories keep bodies: `<this>/<source>/<table>/`.
    dbfile_root: PathBuf,
    /// Whether the repositories opened through this value write bodies to files
    /// ([`DataSources::with_file_bodies`]).
    write_files: bool,
}

impl DataSources {
    /// Opens every data source: connects, creates an SQLite file that does not exist yet, and
    /// brings its schema up to this build's version. A database whose schema is newer than
    /// this build knows is refused.
    pub async fn open(specs: &[DataSourceSpec], home: &Path) -> Result<DataSources> {
        let tmp_dir = home.join("var/tmp/db");
        std::fs::create_dir_all(&tmp_dir)?;
        let mut pools = HashMap::new();
        let mut leases = HashMap::new();
        let mut sqlite_files = HashMap::new();
        for spec in specs {
            let pool = connect(spec, home).await?;
            pools.insert(spec.name.clone(), pool);
            leases.insert(spec.name.clone(), spec.lease);
            if let Some(path) = sqlite_path(&spec.url) {
                sqlite_files.insert(spec.name.clone(), resolve(home, path));
            }
        }
        Ok(DataSources {
            pools,
            leases,
            sqlite_files,
            tmp_dir,
            dbfile_root: home.join("var/dbfile"),
            write_files: false,
        })
    }

    /// The same data sources for `dbfile://` repositories: what they open keeps its rows in
    /// the database as `db://` does, and its bodies in files under the home
    /// (`var/dbfile/<source>/<table>/`), as James's `filestore` did. Either kind reads the
    /// bodies of both.
    pub fn with_file_bodies(&self) -> DataSources {
        DataSources {
            write_files: true,
            ..self.clone()
        }
    }

    /// Where the repositories of data source `source` keep their bodies.
    fn bodies(&self, source: &str) -> Result<body::Bodies> {
        let plain = !matches!(source, "" | "." | "..") && !source.contains(['/', '\\', '\0']);
        if self.write_files && !plain {
            return Err(StoreError::InvalidUrl(
                format!("dbfile://{source}/"),
                "a data source whose name cannot be a directory name".into(),
            ));
        }
        Ok(body::Bodies::new(
            self.pool(source)?.clone(),
            Arc::new(body_files::BodyFiles::new(
                self.dbfile_root.join(source),
                self.dbfile_root.with_file_name("dbmail"),
            )),
            self.write_files,
        ))
    }

    /// The pool of the data source called `name`.
    pub fn pool(&self, name: &str) -> Result<&Pool> {
        self.pools.get(name).ok_or_else(|| {
            StoreError::InvalidUrl(
                format!("db://{name}/"),
                format!("no data source \"{name}\" in <database-connections>"),
            )
        })
    }

    /// Closes every pool (waiting for connections in use to come back).
    pub async fn close(&self) {
        for pool in self.pools.values() {
            on_pool!(pool, p => p.close().await);
        }
    }

    /// The users repository at `db://SOURCE/TABLE` (James's default table is `users`).
    pub async fn users(&self, source: &str, path: &[String]) -> Result<Arc<DbUsersRepository>> {
        let table = path.first().map_or("users", String::as_str);
        Ok(Arc::new(
            DbUsersRepository::open(self.pool(source)?.clone(), table).await?,
        ))
    }

    /// The mail repository (or spool) at `db://SOURCE/TABLE/REPOSITORY`: James's table and
    /// `repository_name` (which defaults to the table's name).
    pub async fn mail(&self, source: &str, path: &[String]) -> Result<Arc<DbMailRepository>> {
        let (table, repository) = table_and_repository(source, path)?;
        Ok(Arc::new(
            DbMailRepository::open(
                self.bodies(source)?,
                &table,
                &repository,
                self.tmp_dir.clone(),
            )
            .await?,
        ))
    }

    /// The spool at `db://SOURCE/TABLE/REPOSITORY`.
    ///
    /// On SQLite (one machine) the opener owns the spool while it holds an `flock` on a lock
    /// file beside the database (`<db>.spool-<digest>.lock`, one per spool): the first opener,
    /// when no other process holds it, knows that every lease left in the spool is stale (its
    /// holder is gone) and drops them, so that a restarted server does not wait for them to
    /// expire. An opener that finds the lock held (a server runs and `mailroom queue` or
    /// `store copy` opens the spool too) leaves the leases alone: they are live. On
    /// PostgreSQL leases are other nodes' until they expire.
    pub async fn spool(&self, source: &str, path: &[String]) -> Result<Arc<DbMailRepository>> {
        let lease = self
            .leases
            .get(source)
            .copied()
            .unwrap_or(crate::DEFAULT_LEASE);
        let mut spool =
            Arc::unwrap_or_clone(self.mail(source, path).await?).with_lease_duration(lease);
        if let Some(file) = self.sqlite_files.get(source) {
            let (table, repository) = table_and_repository(source, path)?;
            let digest = format!("{table}/{repository}")
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            let lock = file.with_extension(format!("spool-{digest:016x}.lock"));
            let owner = tokio::task::spawn_blocking(move || crate::file::fsutil::try_lock(&lock))
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
            if let Some(owner) = owner {
                spool.drop_stale_leases().await?;
                spool = spool.owning(owner);
            }
        }
        Ok(Arc::new(spool))
    }

    /// James's Bayesian token tables in data source `source` (BayesianAnalysis).
    pub async fn bayes(&self, source: &str) -> Result<DbBayes> {
        DbBayes::open(self.pool(source)?.clone()).await
    }

    /// Virtual user tables in data source `source`: each `(name, table)` is the mapping table
    /// `name` kept in database table `table` (James's `VirtualUserTable` columns).
    pub async fn mappings(&self, source: &str, tables: &[(String, String)]) -> Result<DbMappings> {
        DbMappings::open(self.pool(source)?.clone(), tables).await
    }

    /// The news repository in data source `source` (Mailroom's `mailroom_news_*` tables);
    /// `xref_host` names this server in `Xref:` headers.
    pub async fn news(&self, source: &str, xref_host: &str) -> Result<DbNews> {
        DbNews::open(self.pool(source)?.clone(), xref_host).await
    }

    /// The inboxes at `db://SOURCE/TABLE/`: one `repository_name` per user, as James keeps them.
    pub async fn inbox(&self, source: &str, path: &[String]) -> Result<Arc<DbInbox>> {
        let table = path.first().map_or("inbox", String::as_str);
        Ok(Arc::new(DbInbox::open(self.bodies(source)?, table).await?))
    }
}

/// `["mail", "error"]` is table `mail`, repository `error`; `["spool"]` is table and
/// repository `spool`.
fn table_and_repository(source: &str, path: &[String]) -> Result<(String, String)> {
    match path {
        [table] => Ok((table.clone(), table.clone())),
        [table, repository] => Ok((table.clone(), repository.clone())),
        _ => Err(StoreError::InvalidUrl(
            format!("db://{source}/{}", path.join("/")),
            "expected db://SOURCE/TABLE/REPOSITORY".into(),
        )),
    }
}

/// Connects to one data source and migrates it.
pub async fn connect(spec: &DataSourceSpec, home: &Path) -> Result<Pool> {
    let url = spec.url.trim();
    let invalid = |why: String| StoreError::InvalidUrl(url.to_string(), why);
    let pool = if let Some(path) = sqlite_path(url) {
        if path.is_empty() {
            return Err(invalid("names no database file".into()));
        }
        let file = crate::db::resolve(home, path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(spec.max.max(1))
            .acquire_timeout(Duration::from_secs(30))
            // A COMMIT refused with SQLITE_FULL may have rolled the transaction back already:
            // sqlx's ROLLBACK then fails and the connection stays "in a transaction", every
            // later BEGIN on it failing. Such a connection is closed, not handed out again.
            .before_acquire(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await
            .map_err(|e| db_open_error(spec, e))?;
        // Two processes on one file (the server and `mailroom user add`, say) may start
        // together; SQLite gives sqlx's migrator no lock, so a file lock beside the database
        // makes the second wait and then find the schema done. PostgreSQL's migrator locks.
        let lock = file.with_extension("migrate-lock");
        let _held = tokio::task::spawn_blocking(move || migration_lock(&lock))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let pool = Pool::Sqlite(pool);
        migrate(&pool, &spec.name).await?;
        return Ok(pool);
    } else {
        let mut options = postgres_options(url).map_err(invalid)?;
        if let Some(user) = &spec.user {
            options = options.username(user);
        }
        if let Some(password) = &spec.password {
            options = options.password(password);
        }
        let pool = PgPoolOptions::new()
            .max_connections(spec.max.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| db_open_error(spec, e))?;
        Pool::Postgres(pool)
    };
    migrate(&pool, &spec.name).await?;
    Ok(pool)
}

fn db_open_error(spec: &DataSourceSpec, e: sqlx::Error) -> StoreError {
    StoreError::Io(io::Error::other(format!(
        "data source \"{}\": cannot connect: {e}",
        spec.name
    )))
}

/// `postgres://…` as libpq reads it, or James's `jdbc:postgresql://host[:port]/db[?…]`.
fn postgres_options(url: &str) -> std::result::Result<PgConnectOptions, String> {
    let with_ssl_off = |options: PgConnectOptions, url: &str| {
        // This build has no TLS for database connections: ask for none unless told.
        if url.contains("sslmode=") {
            options
        } else {
            options.ssl_mode(PgSslMode::Disable)
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        return Ok(with_ssl_off(options, url));
    }
    let Some(rest) = url.strip_prefix("jdbc:postgresql://") else {
        return Err(
            "unknown database URL (known: sqlite://PATH, postgres://…, jdbc:postgresql://HOST:PORT/DB)"
                .into(),
        );
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let (host_port, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("bad port \"{port}\""))?,
        ),
        None => (host_port, 5432),
    };
    if host.is_empty() || database.is_empty() {
        return Err("expected jdbc:postgresql://HOST[:PORT]/DATABASE".into());
    }
    let options = PgConnectOptions::new_without_pgpass()
        .host(host)
        .port(port)
        .database(database);
    Ok(with_ssl_off(options, url))
}

/// The file part of an `sqlite://PATH[?...]` URL.
fn sqlite_path(url: &str) -> Option<&str> {
    let path = url
        .trim()
        .strip_prefix("sqlite://")
        .or_else(|| url.trim().strip_prefix("sqlite:"))?;
    Some(path.split('?').next().unwrap_or_default())
}

/// Takes an exclusive lock on `path` (created if missing), held until the file is dropped.
fn migration_lock(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// Brings the schema up to this build's version; refuses a newer one.
async fn migrate(pool: &Pool, name: &str) -> Result<()> {
    let migrator = migrator(pool.dialect());
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let result = on_pool!(pool, p => migrator.run(p).await);
    result.map_err(|e| match e {
        MigrateError::VersionMissing(version) => StoreError::Corrupt(
            format!("data source \"{name}\""),
            format!(
                "its schema version {version} was written by a newer Mailroom (this build knows \
                 versions up to {latest}); upgrade Mailroom to use it"
            ),
        ),
        other => StoreError::Io(io::Error::other(format!(
            "data source \"{name}\": migrating the schema: {other}"
        ))),
    })
}

/// A path from a `sqlite://` URL: relative to the home unless absolute.
pub(crate) fn resolve(home: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        home.join(p.strip_prefix("./").unwrap_or(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_urls() {
        let o = postgres_options("jdbc:postgresql://db.example:5433/james").unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_database(), Some("james"));
        let o = postgres_options("jdbc:postgresql://db/james?ssl=false").unwrap();
        assert_eq!(o.get_port(), 5432);
        assert!(postgres_options("jdbc:postgresql://db:x/james").is_err());
        assert!(postgres_options("jdbc:postgresql://db").is_err());
        assert!(postgres_options("jdbc:mysql://db/james").is_err());
        let o = postgres_options("postgres://u:p@h:6000/d").unwrap();
        assert_eq!(o.get_port(), 6000);
        assert_eq!(o.get_username(), "u");
    }

    #[test]
    fn table_names() {
        assert_eq!(table_name("inbox").unwrap(), "inbox");
        assert_eq!(table_name("Spool_2").unwrap(), "spool_2");
        for bad in [
            "",
            "1x",
            "a;drop",
            "a b",
            "mailroom_bodies",
            "x\"y",
            &"a".repeat(49),
        ] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
    }
}
