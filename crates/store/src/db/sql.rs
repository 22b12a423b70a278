//! Statements written by a configuration rather than by Mailroom: James's JDBC mailets and
//! matchers (`JDBCVirtualUserTable`'s `sqlquery`, `JDBCAlias`, the whitelist) run their SQL on
//! a data source through here, with text parameters in and text cells out.
//!
//! JDBC's `?` placeholders are numbered (`$1`, `$2`, ...) before the statement runs, which both
//! engines accept. Errors say whether the database was away (worth another try later) or the
//! statement itself was refused (a configuration error that another try does not mend).

use sqlx::Row;

use super::{on_pool, sql, Pool};

/// Why a statement did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The database could not be reached or did not answer in time: try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the statement (a syntax error, a missing table or column).
    #[error("statement refused: {0}")]
    Statement(String),
}

impl SqlError {
    fn of(e: sqlx::Error) -> SqlError {
        match e {
            // A database that is busy, restarting or out of space answers with an error too,
            // but one that another try may mend.
            sqlx::Error::Database(ref d) if super::is_temporary_database_error(d.as_ref()) => {
                SqlError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::TypeNotFound { .. } => SqlError::Statement(e.to_string()),
            other => SqlError::Unavailable(other.to_string()),
        }
    }
}

/// One row: each column's value as text (`None` for SQL NULL; numbers and booleans spelled
/// out, bytes read as UTF-8).
pub type TextRow = Vec<Option<String>>;

/// `sql` with each `?` outside quoted text and identifiers numbered `$1`, `$2`..., and how
/// many there were.
pub fn number_placeholders(sql: &str) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut count = 0;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"' | '`') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '?') => {
                count += 1;
                out.push_str(&format!("${count}"));
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    (out, count)
}

/// Runs a query (JDBC `?` placeholders) with `params` bound in order; every row, as text.
pub async fn query_text(
    pool: &Pool,
    statement: &str,
    params: &[&str],
) -> Result<Vec<TextRow>, SqlError> {
    let (text, _) = number_placeholders(statement);
    on_pool!(pool, p => {
        let mut query = sqlx::query(sql(text));
        for param in params {
            query = query.bind(param.to_string());
        }
        let rows = query.fetch_all(p).await.map_err(SqlError::of)?;
        Ok(rows
            .iter()
            .map(|row| (0..row.columns().len()).map(|i| cell(row, i)).collect())
            .collect())
    })
}

/// Runs a statement that changes rows (JDBC `?` placeholders); how many it changed.
pub async fn execute(pool: &Pool, statement: &str, params: &[&str]) -> Result<u64, SqlError> {
    let (text, _) = number_placeholders(statement);
    on_pool!(pool, p => {
        let mut query = sqlx::query(sql(text));
        for param in params {
            query = query.bind(param.to_string());
        }
        Ok(query.execute(p).await.map_err(SqlError::of)?.rows_affected())
    })
}

/// Whether `table` exists on the data source (as James's mailets check at start-up).
pub async fn table_exists(pool: &Pool, table: &str) -> Result<bool, SqlError> {
    let lower = table.to_ascii_lowercase();
    let rows = match pool {
        Pool::Sqlite(_) => {
            query_text(
                pool,
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND lower(name) = ?",
                &[&lower],
            )
            .await?
        }
        Pool::Postgres(_) => {
            query_text(
                pool,
                "SELECT table_name FROM information_schema.tables \
                 WHERE lower(table_name) = ? AND table_schema = ANY (current_schemas(false))",
                &[&lower],
            )
            .await?
        }
    };
    Ok(!rows.is_empty())
}

/// A cell as text, whatever its SQL type.
fn cell<R>(row: &R, i: usize) -> Option<String>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    if let Ok(text) = row.try_get::<Option<String>, _>(i) {
        return text;
    }
    if let Ok(n) = row.try_get::<Option<i64>, _>(i) {
        return n.map(|n| n.to_string());
    }
    if let Ok(n) = row.try_get::<Option<i32>, _>(i) {
        return n.map(|n| n.to_string());
    }
    if let Ok(b) = row.try_get::<Option<bool>, _>(i) {
        return b.map(|b| b.to_string());
    }
    if let Ok(x) = row.try_get::<Option<f64>, _>(i) {
        return x.map(|x| x.to_string());
    }
    if let Ok(bytes) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            number_placeholders("SELECT a FROM t WHERE b = ? AND c like '?%' AND d = ?"),
            (
                "SELECT a FROM t WHERE b = $1 AND c like '?%' AND d = $2".to_string(),
                2
            )
        );
        assert_eq!(number_placeholders("x \"?\" `?`").1, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn text_in_text_out_on_sqlite() {
        let home = tempfile::tempdir().unwrap();
        let spec = super::super::DataSourceSpec {
            name: "maildb".into(),
            url: "sqlite://var/t.db".into(),
            user: None,
            password: None,
            max: 2,
            lease: std::time::Duration::from_secs(60),
        };
        let pool = super::super::connect(&spec, home.path()).await.unwrap();
        assert!(!table_exists(&pool, "Things").await.unwrap());
        execute(
            &pool,
            "CREATE TABLE things (name TEXT, n INTEGER, ok BOOLEAN)",
            &[],
        )
        .await
        .unwrap();
        assert!(table_exists(&pool, "Things").await.unwrap());
        let changed = execute(&pool, "INSERT INTO things VALUES (?, 7, 1)", &["a?b"])
            .await
            .unwrap();
        assert_eq!(changed, 1);
        let rows = query_text(
            &pool,
            "SELECT name, n, ok, NULL FROM things WHERE name = ?",
            &["a?b"],
        )
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some("a?b".to_string()),
                Some("7".to_string()),
                Some("1".to_string()),
                None
            ]]
        );
        match query_text(&pool, "SELECT x FROM missing", &[]).await {
            Err(SqlError::Statement(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn database_error_codes_are_classified() {
        use super::super::temporary_code;
        // SQLite: BUSY, LOCKED, IOERR, FULL and their extended codes are temporary.
        for code in ["5", "6", "10", "13", "517", "262", "266", "3338"] {
            assert!(temporary_code(true, code), "sqlite {code}");
        }
        // SQLITE_ERROR (syntax, missing table), CONSTRAINT, READONLY, MISMATCH are not.
        for code in ["1", "19", "2067", "8", "20", "x"] {
            assert!(!temporary_code(true, code), "sqlite {code}");
        }
        for code in [
            "08000", "08006", "08001", "40001", "40P01", "53100", "53300", "57P01", "57P03",
            "58030",
        ] {
            assert!(temporary_code(false, code), "postgres {code}");
        }
        // Syntax error, undefined table/column, unique violation, other class-40 states.
        for code in ["42601", "42P01", "42703", "23505", "40002", "22P02", "5"] {
            assert!(!temporary_code(false, code), "postgres {code}");
        }
    }

    /// A real SQLITE_BUSY (another connection holds the write lock, no busy timeout) is
    /// `Unavailable`; a missing table on the same pool is `Statement`.
    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_busy_is_unavailable() {
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
        let home = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(home.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let holder = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (a TEXT)")
            .execute(&holder)
            .await
            .unwrap();
        let mut lock = holder.begin_with("BEGIN EXCLUSIVE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES ('held')")
            .execute(&mut *lock)
            .await
            .unwrap();
        let other = Pool::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap(),
        );
        match execute(&other, "INSERT INTO t VALUES (?)", &["x"]).await {
            Err(SqlError::Unavailable(why)) => assert!(why.contains("lock"), "{why}"),
            other => panic!("{other:?}"),
        }
        lock.rollback().await.unwrap();
        match query_text(&other, "SELECT x FROM missing", &[]).await {
            Err(SqlError::Statement(_)) => {}
            other => panic!("{other:?}"),
        }
        execute(&other, "INSERT INTO t VALUES (?)", &["x"])
            .await
            .unwrap();
    }
}
