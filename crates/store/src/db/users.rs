//! The users repository in James 2.3's `users` table (`JamesUsersJdbcRepository`): `username`,
//! `pwdHash`, `pwdAlgorithm`, `useForwarding`, `forwardDestination`, `useAlias`, `alias`.
//!
//! James's `pwdHash` is 50 characters wide, too narrow for argon2id: Mailroom's hashes go to
//! `mailroom_password_hash` (and the APOP secret to `mailroom_apop_secret`). A user James wrote
//! has only `pwdHash` (base64 SHA-1, `pwdAlgorithm` `SHA`); it logs in with it, and the login
//! moves it to argon2id (`pwdHash` is then cleared and `pwdAlgorithm` is `argon2id`). Names
//! are unique regardless of case (an index on `lower(username)`).

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::Row;

use super::{db_error, is_unique_violation, on_pool, sql, Dialect, Pool, WriteTx};
use crate::{validate_user_name, Result, StoreError, User, UsersRepository};

/// A users repository in a database table.
#[derive(Clone, Debug)]
pub struct DbUsersRepository {
    pool: Pool,
    table: String,
}

/// A hash Mailroom writes, rather than James's SHA-1.
fn is_mailroom_hash(hash: &str) -> bool {
    hash.starts_with('$')
}

impl DbUsersRepository {
    /// Opens the users in `table`, creating it (or adding Mailroom's columns to James's).
    pub async fn open(pool: Pool, table: &str) -> Result<DbUsersRepository> {
        let table = super::table_name(table)?;
        let d = pool.dialect();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (username VARCHAR(64) NOT NULL, \
             pwdHash VARCHAR(50), pwdAlgorithm VARCHAR(20), useForwarding SMALLINT, \
             forwardDestination VARCHAR(255), useAlias SMALLINT, alias VARCHAR(255), \
             PRIMARY KEY (username))"
        );
        let index = format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_mailroom_lower ON {table} (lower(username))"
        );
        let t = table.clone();
        let result: sqlx::Result<()> = on_pool!(&pool, p => async {
            let mut tx = p.write_tx().await?;
            if d == Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(727274)").execute(&mut *tx).await?;
            }
            sqlx::query(sql(create)).execute(&mut *tx).await?;
            let existing: HashSet<String> = match d {
                Dialect::Sqlite => sqlx::query_scalar(sql(format!(
                    "SELECT name FROM pragma_table_info('{t}')"
                )))
                .fetch_all(&mut *tx)
                .await?,
                Dialect::Postgres => sqlx::query_scalar(
                    "SELECT column_name::TEXT FROM information_schema.columns \
                     WHERE table_name = $1 AND table_schema = current_schema()",
                )
                .bind(&t)
                .fetch_all(&mut *tx)
                .await?,
            }
            .into_iter()
            .map(|c: String| c.to_ascii_lowercase())
            .collect();
            for column in ["mailroom_password_hash", "mailroom_apop_secret"] {
                if !existing.contains(column) {
                    sqlx::query(sql(format!("ALTER TABLE {t} ADD COLUMN {column} TEXT")))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(sql(index)).execute(&mut *tx).await?;
            tx.commit().await
        }
        .await);
        result.map_err(db_error)?;
        Ok(DbUsersRepository { pool, table })
    }

    fn columns() -> &'static str {
        "username, pwdHash, pwdAlgorithm, useForwarding, forwardDestination, useAlias, alias, \
         mailroom_password_hash, mailroom_apop_secret"
    }

    /// The columns read, named in lower case: PostgreSQL folds unquoted names, SQLite keeps
    /// them as written.
    fn select() -> &'static str {
        "username AS username, pwdHash AS pwd_hash, useForwarding AS use_forwarding, \
         forwardDestination AS forward_destination, useAlias AS use_alias, alias AS alias, \
         mailroom_password_hash AS mailroom_password_hash, \
         mailroom_apop_secret AS mailroom_apop_secret"
    }
}

/// James's two hash columns and Mailroom's, for a hash.
fn hash_columns(hash: &str) -> (Option<&str>, &'static str, Option<&str>) {
    if is_mailroom_hash(hash) {
        (None, "argon2id", Some(hash))
    } else {
        (Some(hash), "SHA", None)
    }
}

fn flag(on: bool) -> i16 {
    i16::from(on)
}

#[async_trait]
impl UsersRepository for DbUsersRepository {
    async fn add(&self, user: &User) -> Result<()> {
        validate_user_name(&user.name)?;
        let statement = format!(
            "INSERT INTO {} ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            self.table,
            Self::columns()
        );
        let (james, algorithm, ours) = hash_columns(&user.password_hash);
        let result = on_pool!(&self.pool, p => sqlx::query(sql(statement))
            .bind(&user.name)
            .bind(james)
            .bind(algorithm)
            .bind(flag(user.forward_enabled))
            .bind(&user.forward)
            .bind(flag(user.alias_enabled))
            .bind(&user.alias)
            .bind(ours)
            .bind(&user.apop_secret)
            .execute(p)
            .await
            .map(|_| ()));
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(user.name.clone())),
            Err(e) => Err(db_error(e)),
        }
    }

    async fn get(&self, name: &str) -> Result<Option<User>> {
        if validate_user_name(name).is_err() {
            return Ok(None);
        }
        let statement = format!(
            "SELECT {} FROM {} WHERE lower(username) = lower($1)",
            Self::select(),
            self.table
        );
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sql(statement))
                .bind(name)
                .fetch_optional(p)
                .await
                .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let read = || -> sqlx::Result<User> {
                let james: Option<String> = row.try_get("pwd_hash")?;
                let ours: Option<String> = row.try_get("mailroom_password_hash")?;
                let forwarding: Option<i16> = row.try_get("use_forwarding")?;
                let alias: Option<i16> = row.try_get("use_alias")?;
                Ok(User {
                    name: row.try_get("username")?,
                    password_hash: ours.or(james).unwrap_or_default(),
                    alias: row.try_get("alias")?,
                    alias_enabled: alias.unwrap_or(0) != 0,
                    forward: row.try_get("forward_destination")?,
                    forward_enabled: forwarding.unwrap_or(0) != 0,
                    apop_secret: row.try_get("mailroom_apop_secret")?,
                })
            };
            read().map(Some).map_err(db_error)
        })
    }

    async fn update(&self, user: &User) -> Result<()> {
        validate_user_name(&user.name)?;
        let statement = format!(
            "UPDATE {} SET pwdHash = $2, pwdAlgorithm = $3, useForwarding = $4, \
             forwardDestination = $5, useAlias = $6, alias = $7, mailroom_password_hash = $8, \
             mailroom_apop_secret = $9 WHERE lower(username) = lower($1)",
            self.table
        );
        let (james, algorithm, ours) = hash_columns(&user.password_hash);
        let changed = on_pool!(&self.pool, p => sqlx::query(sql(statement))
            .bind(&user.name)
            .bind(james)
            .bind(algorithm)
            .bind(flag(user.forward_enabled))
            .bind(&user.forward)
            .bind(flag(user.alias_enabled))
            .bind(&user.alias)
            .bind(ours)
            .bind(&user.apop_secret)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("user {}", user.name)));
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        if validate_user_name(name).is_err() {
            return Ok(false);
        }
        let statement = format!(
            "DELETE FROM {} WHERE lower(username) = lower($1)",
            self.table
        );
        let gone = on_pool!(&self.pool, p => sqlx::query(sql(statement))
            .bind(name)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(gone > 0)
    }

    async fn list(&self) -> Result<Vec<String>> {
        let statement = format!("SELECT username FROM {}", self.table);
        let mut names: Vec<String> = on_pool!(&self.pool, p => sqlx::query_scalar(sql(statement))
            .fetch_all(p)
            .await)
        .map_err(db_error)?;
        // Sorted here: the database's collation would differ between engines.
        names.sort();
        Ok(names)
    }

    async fn count(&self) -> Result<usize> {
        let statement = format!("SELECT COUNT(*) FROM {}", self.table);
        let n: i64 = on_pool!(&self.pool, p => sqlx::query_scalar(sql(statement))
            .fetch_one(p)
            .await)
        .map_err(db_error)?;
        Ok(n.max(0) as usize)
    }

    async fn replace_password_hash(&self, name: &str, old: &str, new: String) -> Result<bool> {
        if validate_user_name(name).is_err() {
            return Ok(false);
        }
        let statement = format!(
            "UPDATE {} SET pwdHash = $3, pwdAlgorithm = $4, mailroom_password_hash = $5 \
             WHERE lower(username) = lower($1) \
             AND COALESCE(mailroom_password_hash, pwdHash) = $2",
            self.table
        );
        let (james, algorithm, ours) = hash_columns(&new);
        let changed = on_pool!(&self.pool, p => sqlx::query(sql(statement))
            .bind(name)
            .bind(old)
            .bind(james)
            .bind(algorithm)
            .bind(ours)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(changed > 0)
    }
}
