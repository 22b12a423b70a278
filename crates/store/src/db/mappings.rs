//! Virtual user tables in the database, in the table James keeps them in
//! (`org.apache.james.vut.JDBCVirtualUserTable`, `sqlResources.xml`): `user`, `domain`,
//! `target_address`, one row per source with its targets joined by `;`, `%` standing for any
//! user or any domain. So the RemoteManager's `addmapping` writes rows that the
//! `JDBCVirtualUserTable` mailet (and James) read, and a table James wrote is served as it is.
//!
//! Each named table of the mappings repository (`table=name` on the console) is one database
//! table, given when the repository is opened (`<virtualusertable-store>`).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;

use super::{db_error, on_pool, sql, Dialect, Pool, WriteTx};
use crate::mappings::{MappingsRepository, Source, Target};
use crate::{Result, StoreError};

/// Mapping tables, each in a database table.
#[derive(Clone, Debug)]
pub struct DbMappings {
    pool: Pool,
    /// Table name (lower-cased) → database table.
    tables: HashMap<String, String>,
}

/// A source as James's columns: `*` is `%`.
fn columns(source: &Source) -> (String, String) {
    let (user, domain) = source
        .as_str()
        .rsplit_once('@')
        .expect("a parsed source has an @");
    let wild = |part: &str| {
        if part == "*" {
            "%".to_string()
        } else {
            part.to_string()
        }
    };
    (wild(user), wild(domain))
}

/// The targets of a `target_address` as James wrote it: `;`-separated (James 2.3's mailet also
/// read `,`), an `error:` or a single `regex:` whole. A target that cannot be read is skipped
/// with a warning.
fn parse_targets(text: &str, at: &str) -> Vec<Target> {
    let text = text.trim();
    let tokens: Vec<&str> = if text.contains(';') {
        text.split(';').collect()
    } else if text.starts_with("error:") || text.starts_with("regex:") {
        vec![text]
    } else {
        text.split(',').collect()
    };
    let mut targets = Vec::new();
    for token in tokens.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        match Target::parse(token) {
            Ok(target) if !targets.contains(&target) => targets.push(target),
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(source = %at, target = %token, "unreadable mapping skipped: {why}")
            }
        }
    }
    targets
}

fn join(targets: &[Target]) -> String {
    let texts: Vec<String> = targets.iter().map(ToString::to_string).collect();
    texts.join(";")
}

impl DbMappings {
    /// Opens the mapping tables `tables` (name → database table), creating the database tables
    /// that do not exist with James's columns.
    pub async fn open(pool: Pool, tables: &[(String, String)]) -> Result<DbMappings> {
        let mut named = HashMap::new();
        for (name, table) in tables {
            named.insert(name.to_lowercase(), super::table_name(table)?);
        }
        let d = pool.dialect();
        let creates: Vec<String> = named
            .values()
            .map(|t| {
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (\"user\" VARCHAR(64) NOT NULL DEFAULT '', \
                     domain VARCHAR(255) NOT NULL DEFAULT '', target_address TEXT NOT NULL \
                     DEFAULT '', PRIMARY KEY (\"user\", domain))"
                )
            })
            .collect();
        let result: sqlx::Result<()> = on_pool!(&pool, p => async {
            let mut tx = p.write_tx().await?;
            if d == Dialect::Postgres {
                // Two nodes starting together must not both create a table.
                sqlx::query("SELECT pg_advisory_xact_lock(727277)").execute(&mut *tx).await?;
            }
            for create in creates {
                sqlx::query(sql(create)).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        result.map_err(db_error)?;
        Ok(DbMappings {
            pool,
            tables: named,
        })
    }

    /// The names of the tables kept here.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.sort();
        names
    }

    fn table(&self, name: &str) -> Result<&str> {
        self.tables
            .get(&name.to_lowercase())
            .map(String::as_str)
            .ok_or_else(|| StoreError::NotFound(format!("virtual user table \"{name}\"")))
    }

    /// Reads, changes and writes back the targets of `source` in one transaction; `change`
    /// says whether it changed them.
    async fn edit(
        &self,
        table: &str,
        source: &Source,
        change: impl FnOnce(&mut Vec<Target>) -> bool + Send,
    ) -> Result<bool> {
        let t = self.table(table)?.to_string();
        let (user, domain) = columns(source);
        let lock = match self.pool.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        };
        let at = source.to_string();
        let result: sqlx::Result<bool> = on_pool!(&self.pool, p => async {
            let mut tx = p.write_tx().await?;
            // A row to lock, so that two nodes adding to one source do not lose either target.
            sqlx::query(sql(format!(
                "INSERT INTO {t} (\"user\", domain, target_address) VALUES ($1, $2, '') \
                 ON CONFLICT DO NOTHING"
            )))
            .bind(&user)
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
            let text: String = sqlx::query_scalar(sql(format!(
                "SELECT target_address FROM {t} WHERE \"user\" = $1 AND domain = $2{lock}"
            )))
            .bind(&user)
            .bind(&domain)
            .fetch_one(&mut *tx)
            .await?;
            let mut targets = parse_targets(&text, &at);
            let changed = change(&mut targets);
            if targets.is_empty() {
                sqlx::query(sql(format!("DELETE FROM {t} WHERE \"user\" = $1 AND domain = $2")))
                    .bind(&user)
                    .bind(&domain)
                    .execute(&mut *tx)
                    .await?;
            } else if changed {
                sqlx::query(sql(format!(
                    "UPDATE {t} SET target_address = $3 WHERE \"user\" = $1 AND domain = $2"
                )))
                .bind(&user)
                .bind(&domain)
                .bind(join(&targets))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(changed)
        }
        .await);
        result.map_err(db_error)
    }
}

#[async_trait]
impl MappingsRepository for DbMappings {
    async fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        // `;` separates the targets of a row.
        if target.to_string().contains(';') {
            return Err(StoreError::InvalidName(
                target.to_string(),
                "a target in a database table cannot contain ';'",
            ));
        }
        let target = target.clone();
        self.edit(table, source, move |targets| {
            if targets.contains(&target) {
                false
            } else {
                targets.push(target);
                true
            }
        })
        .await
    }

    async fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        if self.get(table, source).await?.is_empty() {
            return Ok(false);
        }
        let target = target.clone();
        self.edit(table, source, move |targets| {
            let before = targets.len();
            targets.retain(|t| *t != target);
            targets.len() != before
        })
        .await
    }

    async fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>> {
        let Ok(t) = self.table(table) else {
            return Ok(Vec::new());
        };
        let (user, domain) = columns(source);
        let select = format!("SELECT target_address FROM {t} WHERE \"user\" = $1 AND domain = $2");
        let result: sqlx::Result<Option<String>> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sql(select)).bind(&user).bind(&domain).fetch_optional(p).await
        });
        Ok(result
            .map_err(db_error)?
            .map(|text| parse_targets(&text, source.as_str()))
            .unwrap_or_default())
    }

    async fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>> {
        let Ok(t) = self.table(table) else {
            return Ok(Vec::new());
        };
        let select = format!("SELECT \"user\", domain, target_address FROM {t}");
        let rows = on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql(select)).fetch_all(p).await.map_err(db_error)?;
            rows.iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?)))
                .collect::<sqlx::Result<Vec<_>>>()
                .map_err(db_error)?
        });
        let mut all = Vec::new();
        for (user, domain, text) in rows {
            let star = |part: &str| {
                if part == "%" {
                    "*".to_string()
                } else {
                    part.to_string()
                }
            };
            let spelled = format!("{}@{}", star(&user), star(&domain));
            let Ok(source) = Source::parse(&spelled) else {
                tracing::warn!(source = %spelled, table = %t, "unreadable mapping source skipped");
                continue;
            };
            let targets = parse_targets(&text, &spelled);
            if !targets.is_empty() {
                all.push((source, targets));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn james_target_strings() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(
            parse_targets("carol;bob@example.org", "x"),
            vec![t("carol"), t("bob@example.org")]
        );
        assert_eq!(
            parse_targets("a@example.org, b@example.org", "x"),
            vec![t("a@example.org"), t("b@example.org")]
        );
        assert_eq!(
            parse_targets("error:550 no, sorry", "x"),
            vec![t("error:550 no, sorry")]
        );
        assert_eq!(
            parse_targets("regex:(.*)@a{1,3}.org:$1@b.org", "x"),
            vec![t("regex:(.*)@a{1,3}.org:$1@b.org")]
        );
        assert!(parse_targets("", "x").is_empty());
        assert_eq!(parse_targets("../bad;carol", "x"), vec![t("carol")]);
    }

    #[test]
    fn wildcards_are_percent() {
        let s = Source::parse("*@Example.org").unwrap();
        assert_eq!(columns(&s), ("%".into(), "example.org".into()));
        let s = Source::parse("bob@*").unwrap();
        assert_eq!(columns(&s), ("bob".into(), "%".into()));
    }
}
