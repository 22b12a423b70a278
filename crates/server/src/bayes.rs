//! The data sources of `<database-connections>` as the token stores of BayesianAnalysis and
//! BayesianAnalysisFeeder (James's `bayesiananalysis_*` tables).

use std::collections::HashMap;
use std::sync::Arc;

use mailroom_mailet::MailetError;
use mailroom_spool::mailets::bayes::{Feed, TokenCounts, TokenStore, TokenStores};
use mailroom_store::db::DbBayes;

use crate::databases::Databases;

/// The server's data sources; `None` where nothing may be opened (`list-mailets`).
pub struct BayesStores(pub Option<Arc<Databases>>);

impl TokenStores for BayesStores {
    fn has_source(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|d| d.has_source(name))
    }

    fn open(&self, name: &str) -> Result<Arc<dyn TokenStore>, MailetError> {
        let databases = self
            .0
            .clone()
            .ok_or_else(|| MailetError::temporary("no database in this mode"))?;
        let tables = databases.bayes(name).map_err(store_error)?;
        Ok(Arc::new(BayesTables { databases, tables }))
    }
}

/// One data source's tables, used from a spool worker thread.
struct BayesTables {
    databases: Arc<Databases>,
    tables: DbBayes,
}

fn store_error(e: mailroom_store::StoreError) -> MailetError {
    MailetError::temporary(e.to_string())
}

impl TokenStore for BayesTables {
    fn load(&self) -> Result<TokenCounts, MailetError> {
        self.databases
            .block(self.tables.load())
            .map_err(store_error)
    }

    fn add(&self, feed: Feed, tokens: &HashMap<String, u32>) -> Result<(), MailetError> {
        self.databases
            .block(self.tables.add(feed, tokens))
            .map_err(store_error)
    }
}
