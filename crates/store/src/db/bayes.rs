//! The token store of the BayesianAnalysis and BayesianAnalysisFeeder mailets, in James
//! 2.3.2's tables (`JDBCBayesianAnalyzer`, `sqlResources.xml`): `bayesiananalysis_ham` and
//! `bayesiananalysis_spam` (`token`, `occurrences`) and `bayesiananalysis_messagecounts`
//! (`hamcount`, `spamcount`, one row). A database James trained is read as it is.

use std::collections::HashMap;

use sqlx::Row;

use super::{db_error, on_pool, Dialect, Pool, WriteTx};
use crate::Result;

/// Which corpus a message is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corpus {
    /// Wanted mail.
    Ham,
    /// Unwanted mail.
    Spam,
}

impl Corpus {
    fn table(self) -> &'static str {
        match self {
            Corpus::Ham => "bayesiananalysis_ham",
            Corpus::Spam => "bayesiananalysis_spam",
        }
    }

    fn count_column(self) -> &'static str {
        match self {
            Corpus::Ham => "hamcount",
            Corpus::Spam => "spamcount",
        }
    }
}

/// Everything the store holds: how often each token was seen in each corpus, and how many
/// messages each corpus was trained with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Token → occurrences in ham.
    pub ham: HashMap<String, u32>,
    /// Token → occurrences in spam.
    pub spam: HashMap<String, u32>,
    /// Ham messages trained.
    pub ham_messages: u32,
    /// Spam messages trained.
    pub spam_messages: u32,
}

/// James's Bayesian tables in one data source.
#[derive(Clone, Debug)]
pub struct DbBayes {
    pool: Pool,
}

impl DbBayes {
    /// Opens the tables, creating the ones that do not exist (James's columns; `token` is
    /// case-sensitive on both engines, as James asks of MySQL with `binary`).
    pub async fn open(pool: Pool) -> Result<DbBayes> {
        let result: sqlx::Result<()> = on_pool!(&pool, p => async {
            let mut tx = p.write_tx().await?;
            for corpus in [Corpus::Ham, Corpus::Spam] {
                let create = format!(
                    "CREATE TABLE IF NOT EXISTS {} (token VARCHAR(128) NOT NULL, \
                     occurrences INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (token))",
                    corpus.table()
                );
                sqlx::query(super::sql(create)).execute(&mut *tx).await?;
            }
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS bayesiananalysis_messagecounts \
                 (hamcount INTEGER NOT NULL DEFAULT 0, spamcount INTEGER NOT NULL DEFAULT 0)",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await);
        result.map_err(db_error)?;
        Ok(DbBayes { pool })
    }

    /// Reads every count (James's `loadHamNSpam`, without its filter: the analyzer decides).
    pub async fn load(&self) -> Result<TokenCounts> {
        let result: sqlx::Result<TokenCounts> = on_pool!(&self.pool, p => async {
            let mut counts = TokenCounts::default();
            for corpus in [Corpus::Ham, Corpus::Spam] {
                let select = format!(
                    "SELECT token, CAST(occurrences AS BIGINT) FROM {}",
                    corpus.table()
                );
                let rows = sqlx::query(super::sql(select)).fetch_all(p).await?;
                let map = match corpus {
                    Corpus::Ham => &mut counts.ham,
                    Corpus::Spam => &mut counts.spam,
                };
                for row in rows {
                    let token: String = row.try_get(0)?;
                    let n: i64 = row.try_get(1)?;
                    map.insert(token, n.clamp(0, i64::from(u32::MAX)) as u32);
                }
            }
            let row = sqlx::query(
                "SELECT CAST(hamcount AS BIGINT), CAST(spamcount AS BIGINT) \
                 FROM bayesiananalysis_messagecounts",
            )
            .fetch_optional(p)
            .await?;
            if let Some(row) = row {
                let (ham, spam): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                counts.ham_messages = ham.clamp(0, i64::from(u32::MAX)) as u32;
                counts.spam_messages = spam.clamp(0, i64::from(u32::MAX)) as u32;
            }
            Ok(counts)
        }
        .await);
        result.map_err(db_error)
    }

    /// Adds one trained message's token occurrences to `corpus` and counts it, in one
    /// transaction (James's `updateHamTokens`/`updateSpamTokens` and the message count).
    pub async fn add(&self, corpus: Corpus, tokens: &HashMap<String, u32>) -> Result<()> {
        let d = self.pool.dialect();
        let upsert = format!(
            "INSERT INTO {table} (token, occurrences) VALUES ($1, $2) \
             ON CONFLICT (token) DO UPDATE SET occurrences = {table}.occurrences + $2",
            table = corpus.table()
        );
        let bump = format!(
            "UPDATE bayesiananalysis_messagecounts SET {c} = {c} + 1",
            c = corpus.count_column()
        );
        let result: sqlx::Result<()> = on_pool!(&self.pool, p => async {
            let mut tx = p.write_tx().await?;
            if d == Dialect::Postgres {
                // Feeders on several nodes: one at a time, so that the single counts row is
                // created once.
                sqlx::query("SELECT pg_advisory_xact_lock(727275)").execute(&mut *tx).await?;
            }
            for (token, n) in tokens {
                sqlx::query(super::sql(upsert.clone()))
                    .bind(token)
                    .bind(i64::from(*n))
                    .execute(&mut *tx)
                    .await?;
            }
            let updated = sqlx::query(super::sql(bump.clone())).execute(&mut *tx).await?;
            if updated.rows_affected() == 0 {
                sqlx::query(
                    "INSERT INTO bayesiananalysis_messagecounts (hamcount, spamcount) VALUES (0, 0)",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(super::sql(bump)).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await);
        result.map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{connect, DataSourceSpec};

    #[tokio::test(flavor = "multi_thread")]
    async fn counts_accumulate_and_survive_a_reopen() {
        let home = tempfile::tempdir().unwrap();
        let spec = DataSourceSpec {
            name: "maildb".into(),
            url: "sqlite://var/mail.db".into(),
            user: None,
            password: None,
            max: 2,
            lease: std::time::Duration::from_secs(60),
        };
        let pool = connect(&spec, home.path()).await.unwrap();
        let store = DbBayes::open(pool.clone()).await.unwrap();
        assert_eq!(store.load().await.unwrap(), TokenCounts::default());
        let one: HashMap<String, u32> =
            [("viagra".to_string(), 2), ("Subject:Buy".into(), 1)].into();
        store.add(Corpus::Spam, &one).await.unwrap();
        store.add(Corpus::Spam, &one).await.unwrap();
        let ham: HashMap<String, u32> = [("Viagra".to_string(), 1)].into();
        store.add(Corpus::Ham, &ham).await.unwrap();
        let again = DbBayes::open(pool).await.unwrap();
        let counts = again.load().await.unwrap();
        assert_eq!(counts.spam["viagra"], 4);
        assert_eq!(counts.spam["Subject:Buy"], 2);
        // Case-sensitive, as James's tables.
        assert_eq!(counts.ham["Viagra"], 1);
        assert!(!counts.ham.contains_key("viagra"));
        assert_eq!((counts.ham_messages, counts.spam_messages), (1, 2));
    }
}
