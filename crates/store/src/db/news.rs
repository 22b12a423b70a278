//! The news repository in the database (James 2.3 kept news only in files, so the tables are
//! Mailroom's own): `mailroom_news_groups` (name, the highest number ever given, creation
//! time), `mailroom_news_articles` (one row per article, stored once whatever its groups:
//! Message-ID, octets with the `Xref:` added, poster, arrival) and `mailroom_news_numbers`
//! (group, number, Message-ID, place among the article's groups, and the overview fields, so
//! that `OVER` reads no article).
//!
//! A post is one transaction: the groups' `high` are raised in name order (two cross-posts
//! never wait for each other in a cycle), so a number is given once, also across nodes and
//! restarts. An article left in no group is deleted with its last number.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{db_error, from_ms, is_unique_violation, now_ms, on_pool, to_ms, Dialect, Pool};
use super::{sql, WriteTx};
use crate::news::{header_section, valid_group_name, Arrival, Article, GroupInfo, NewArticle};
use crate::news::{NewsRepository, Overview};
use crate::{Result, StoreError};

/// The news repository in a data source.
#[derive(Clone, Debug)]
pub struct DbNews {
    pool: Pool,
    /// Names this server in `Xref:` headers.
    xref_host: String,
}

/// A group's numbers: the count and lowest number held, and the highest given.
const GROUP_INFO: &str = "SELECT g.name, g.high, g.created, \
     (SELECT COUNT(*) FROM mailroom_news_numbers n WHERE n.grp = g.name), \
     (SELECT MIN(n.number) FROM mailroom_news_numbers n WHERE n.grp = g.name) \
     FROM mailroom_news_groups g";

type GroupRow = (String, i64, i64, i64, Option<i64>);

fn group_info((name, high, created, count, low): GroupRow) -> GroupInfo {
    let high = high.max(0) as u64;
    GroupInfo {
        name,
        count: count.max(0) as u64,
        low: low.map_or(high + 1, |l| l.max(0) as u64),
        high,
        created: from_ms(created),
    }
}

/// Deletes the articles no group holds any more.
const DROP_ORPHANS: &str = "DELETE FROM mailroom_news_articles WHERE NOT EXISTS \
     (SELECT 1 FROM mailroom_news_numbers n WHERE n.message_id = mailroom_news_articles.message_id)";

/// A number as the database keeps it.
fn db_number(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl DbNews {
    /// Opens the news repository in `pool`, creating its tables; `xref_host` names this server
    /// in `Xref:` headers.
    pub async fn open(pool: Pool, xref_host: &str) -> Result<DbNews> {
        let d = pool.dialect();
        let statements = [
            "CREATE TABLE IF NOT EXISTS mailroom_news_groups (name VARCHAR(255) NOT NULL, \
             high BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL, PRIMARY KEY (name))"
                .to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS mailroom_news_articles (message_id VARCHAR(998) NOT \
                 NULL, octets {} NOT NULL, poster VARCHAR(255), arrived BIGINT NOT NULL, \
                 PRIMARY KEY (message_id))",
                d.blob()
            ),
            "CREATE INDEX IF NOT EXISTS mailroom_news_articles_arrived \
             ON mailroom_news_articles (arrived)"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS mailroom_news_numbers (grp VARCHAR(255) NOT NULL, \
             number BIGINT NOT NULL, message_id VARCHAR(998) NOT NULL, place INTEGER NOT NULL, \
             overview TEXT NOT NULL, PRIMARY KEY (grp, number))"
                .to_string(),
            "CREATE INDEX IF NOT EXISTS mailroom_news_numbers_id \
             ON mailroom_news_numbers (message_id)"
                .to_string(),
        ];
        let result: sqlx::Result<()> = on_pool!(&pool, p => async {
            let mut tx = p.write_tx().await?;
            if d == Dialect::Postgres {
                // Two nodes starting together must not both create a table.
                sqlx::query("SELECT pg_advisory_xact_lock(727276)").execute(&mut *tx).await?;
            }
            for statement in statements {
                sqlx::query(sql(statement)).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        result.map_err(db_error)?;
        Ok(DbNews {
            pool,
            xref_host: xref_host.to_string(),
        })
    }

    /// The groups and numbers of `message_id`, in the order it was posted to them.
    async fn places(&self, message_id: &str) -> Result<Vec<(String, u64)>> {
        let rows: sqlx::Result<Vec<(String, i64)>> = on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT grp, number FROM mailroom_news_numbers WHERE message_id = $1 \
                 ORDER BY place",
            )
            .bind(message_id)
            .fetch_all(p)
            .await
        });
        Ok(rows
            .map_err(db_error)?
            .into_iter()
            .map(|(g, n)| (g, n.max(0) as u64))
            .collect())
    }

    /// The stored article `message_id` (octets and poster).
    async fn stored(&self, message_id: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let row: sqlx::Result<Option<(Vec<u8>, Option<String>)>> = on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT octets, poster FROM mailroom_news_articles WHERE message_id = $1",
            )
            .bind(message_id)
            .fetch_optional(p)
            .await
        });
        row.map_err(db_error)
    }

    /// Deletes the numbers `condition` selects (binding `$1` and `$2`), then the articles left
    /// in no group; returns how many numbers went.
    async fn remove_numbers(&self, condition: &str, first: &str, second: i64) -> Result<u64> {
        let delete = format!("DELETE FROM mailroom_news_numbers WHERE {condition}");
        let result: sqlx::Result<u64> = on_pool!(&self.pool, p => async {
            let mut tx = p.write_tx().await?;
            let gone = sqlx::query(sql(delete))
                .bind(first)
                .bind(second)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone > 0 {
                sqlx::query(DROP_ORPHANS).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(gone)
        }
        .await);
        result.map_err(db_error)
    }
}

#[async_trait]
impl NewsRepository for DbNews {
    async fn groups(&self) -> Result<Vec<GroupInfo>> {
        let select = format!("{GROUP_INFO} ORDER BY g.name");
        let rows: sqlx::Result<Vec<GroupRow>> = on_pool!(&self.pool, p => {
            sqlx::query_as(sql(select)).fetch_all(p).await
        });
        Ok(rows
            .map_err(db_error)?
            .into_iter()
            .map(group_info)
            .collect())
    }

    async fn group(&self, name: &str) -> Result<Option<GroupInfo>> {
        let select = format!("{GROUP_INFO} WHERE g.name = $1");
        let row: sqlx::Result<Option<GroupRow>> = on_pool!(&self.pool, p => {
            sqlx::query_as(sql(select)).bind(name).fetch_optional(p).await
        });
        Ok(row.map_err(db_error)?.map(group_info))
    }

    async fn create_group(&self, name: &str) -> Result<bool> {
        if !valid_group_name(name) {
            return Err(StoreError::InvalidName(
                name.to_string(),
                "not a newsgroup name",
            ));
        }
        let result: sqlx::Result<u64> = on_pool!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO mailroom_news_groups (name, high, created) VALUES ($1, 0, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(now_ms())
            .execute(p)
            .await
            .map(|done| done.rows_affected())
        });
        Ok(result.map_err(db_error)? == 1)
    }

    async fn remove_group(&self, name: &str) -> Result<bool> {
        let result: sqlx::Result<bool> = on_pool!(&self.pool, p => async {
            let mut tx = p.write_tx().await?;
            let gone = sqlx::query("DELETE FROM mailroom_news_groups WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM mailroom_news_numbers WHERE grp = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(DROP_ORPHANS).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(gone == 1)
        }
        .await);
        result.map_err(db_error)
    }

    async fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>> {
        let mut wanted: Vec<String> = Vec::new();
        for g in &article.groups {
            if !wanted.contains(g) {
                wanted.push(g.clone());
            }
        }
        let mut sorted = wanted.clone();
        sorted.sort();
        let id = article.message_id.as_str();
        let head = header_section(&article.octets).len();
        let xref_host = self.xref_host.clone();
        let octets = &article.octets;
        let poster = article.poster.as_deref();
        let result: sqlx::Result<std::result::Result<Vec<(String, u64)>, StoreError>> = on_pool!(&self.pool, p => async {
            let mut tx = p.write_tx().await?;
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM mailroom_news_articles WHERE message_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                return Ok(Err(StoreError::AlreadyExists(id.to_string())));
            }
            // Numbers taken in name order, then put back in the article's order.
            let mut taken: Vec<(String, u64)> = Vec::new();
            for g in &sorted {
                let high: Option<i64> = sqlx::query_scalar(
                    "UPDATE mailroom_news_groups SET high = high + 1 WHERE name = $1 \
                     RETURNING high",
                )
                .bind(g)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(high) = high {
                    taken.push((g.clone(), high.max(0) as u64));
                }
            }
            let places: Vec<(String, u64)> = wanted
                .iter()
                .filter_map(|g| taken.iter().find(|(t, _)| t == g).cloned())
                .collect();
            if places.is_empty() {
                return Ok(Err(StoreError::NotFound(format!(
                    "newsgroups {}",
                    wanted.join(",")
                ))));
            }
            let mut xref = format!("Xref: {xref_host}");
            for (g, n) in &places {
                xref.push_str(&format!(" {g}:{n}"));
            }
            xref.push_str("\r\n");
            let mut stored = Vec::with_capacity(octets.len() + xref.len());
            stored.extend_from_slice(&octets[..head]);
            stored.extend_from_slice(xref.as_bytes());
            stored.extend_from_slice(&octets[head..]);
            let inserted = sqlx::query(
                "INSERT INTO mailroom_news_articles (message_id, octets, poster, arrived) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(&stored)
            .bind(poster)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
            match inserted {
                // Posted meanwhile by another node.
                Err(e) if is_unique_violation(&e) => {
                    return Ok(Err(StoreError::AlreadyExists(id.to_string())))
                }
                other => other?,
            };
            let fields = Overview::of_article(0, &stored).fields;
            let overview = serde_json::to_string(&fields).unwrap_or_default();
            for (place, (g, n)) in places.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO mailroom_news_numbers (grp, number, message_id, place, overview) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(g)
                .bind(db_number(*n))
                .bind(id)
                .bind(place as i32)
                .bind(&overview)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(Ok(places))
        }
        .await);
        result.map_err(db_error)?
    }

    async fn article(&self, group: &str, number: u64) -> Result<Option<Article>> {
        let row: sqlx::Result<Option<(String, Vec<u8>, Option<String>)>> = on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT a.message_id, a.octets, a.poster FROM mailroom_news_numbers n \
                 JOIN mailroom_news_articles a ON a.message_id = n.message_id \
                 WHERE n.grp = $1 AND n.number = $2",
            )
            .bind(group)
            .bind(db_number(number))
            .fetch_optional(p)
            .await
        });
        Ok(row
            .map_err(db_error)?
            .map(|(message_id, octets, poster)| Article {
                number,
                message_id,
                octets,
                poster,
            }))
    }

    async fn article_by_id(&self, message_id: &str) -> Result<Option<Article>> {
        let Some((_, number)) = self.places(message_id).await?.into_iter().next() else {
            return Ok(None);
        };
        Ok(self
            .stored(message_id)
            .await?
            .map(|(octets, poster)| Article {
                number,
                message_id: message_id.to_string(),
                octets,
                poster,
            }))
    }

    async fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>> {
        let places = self.places(message_id).await?;
        Ok((!places.is_empty()).then_some(places))
    }

    async fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>> {
        let rows: sqlx::Result<Vec<i64>> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(
                "SELECT number FROM mailroom_news_numbers WHERE grp = $1 \
                 AND number >= $2 AND number <= $3 ORDER BY number",
            )
            .bind(group)
            .bind(db_number(low))
            .bind(db_number(high))
            .fetch_all(p)
            .await
        });
        Ok(rows
            .map_err(db_error)?
            .into_iter()
            .map(|n| n.max(0) as u64)
            .collect())
    }

    async fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>> {
        let rows: sqlx::Result<Vec<(i64, String)>> = on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT number, overview FROM mailroom_news_numbers WHERE grp = $1 \
                 AND number >= $2 AND number <= $3 ORDER BY number",
            )
            .bind(group)
            .bind(db_number(low))
            .bind(db_number(high))
            .fetch_all(p)
            .await
        });
        rows.map_err(db_error)?
            .into_iter()
            .map(|(number, fields)| {
                let fields: Vec<String> = serde_json::from_str(&fields).map_err(|e| {
                    StoreError::Corrupt(format!("overview of {group}:{number}"), e.to_string())
                })?;
                Ok(Overview {
                    number: number.max(0) as u64,
                    fields,
                })
            })
            .collect()
    }

    async fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>> {
        let rows: sqlx::Result<Vec<(String, String)>> = on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT a.message_id, n.grp FROM mailroom_news_articles a \
                 JOIN mailroom_news_numbers n ON n.message_id = a.message_id \
                 WHERE a.arrived >= $1 ORDER BY a.arrived, a.message_id, n.place",
            )
            .bind(to_ms(since))
            .fetch_all(p)
            .await
        });
        let mut arrivals: Vec<Arrival> = Vec::new();
        for (message_id, group) in rows.map_err(db_error)? {
            match arrivals.last_mut() {
                Some(last) if last.message_id == message_id => last.groups.push(group),
                _ => arrivals.push(Arrival {
                    message_id,
                    groups: vec![group],
                }),
            }
        }
        Ok(arrivals)
    }

    async fn remove_article(&self, message_id: &str) -> Result<bool> {
        Ok(self
            .remove_numbers("message_id = $1 AND $2 = 0", message_id, 0)
            .await?
            > 0)
    }

    async fn expire(&self, group: &str, before: SystemTime) -> Result<u64> {
        self.remove_numbers(
            "grp = $1 AND message_id IN (SELECT message_id FROM mailroom_news_articles \
             WHERE arrived < $2)",
            group,
            to_ms(before),
        )
        .await
    }
}
