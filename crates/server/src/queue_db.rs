//! `mailroom queue` on a spool or a mail repository in a database (`db://SOURCE/TABLE/REPOSITORY`,
//! such as `db://maildb/mail/error/`): the rows are read and changed through the database
//! itself, with the server running or stopped (a
//! database is shared by design: a running server's workers hold leases there, which an
//! opener here leaves alone; see `DataSources::spool`). Flush and delete still go to a running
//! server's control socket first, as for a file spool, so that they are done by the process
//! that owns the spool.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use mailroom_config::Config;
use mailroom_mailet::Mail;
use mailroom_store::{MailRepository, SpoolRepository};

use crate::databases::Databases;

/// The configuration's database spool, open, with the runtime its pool runs on.
pub struct DbSpool {
    // Dropped in this order: the spool and its pool before the runtime they run on.
    spool: Arc<dyn SpoolRepository>,
    _db: Arc<Databases>,
    runtime: tokio::runtime::Runtime,
}

/// The runtime a database pool of the CLI runs on. Not a current-thread runtime: a handle's
/// `block_on` drives no I/O there (see `users::run`).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl DbSpool {
    /// Opens the spool of `config`, which must be in a database.
    pub fn open(config: &Config) -> Result<DbSpool> {
        let runtime = runtime()?;
        let db = Databases::new(config, runtime.handle().clone());
        let spool = crate::repositories::spool(config, &db)?;
        Ok(DbSpool {
            spool,
            _db: db,
            runtime,
        })
    }

    /// The RemoteDelivery outgoing spool of `config` at `url`, which must be in a database.
    pub fn outgoing(config: &Config, url: &str) -> Result<DbSpool> {
        let runtime = runtime()?;
        let db = Databases::new(config, runtime.handle().clone());
        let spool = crate::repositories::outgoing(config, &db, url)
            .map_err(|e| anyhow::anyhow!("outgoing spool {url}: {e}"))?;
        Ok(DbSpool {
            spool,
            _db: db,
            runtime,
        })
    }

    /// The spool.
    pub fn spool(&self) -> Arc<dyn SpoolRepository> {
        self.spool.clone()
    }

    /// Runs `work` on the spool's runtime.
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// The mail called `name` with its next attempt (`None`: due now), if it is spooled.
    pub fn find(&self, name: &str) -> Result<Option<(Mail, Option<SystemTime>)>> {
        self.block_on(async {
            let Some(mail) = self.spool.retrieve(name).await? else {
                return Ok(None);
            };
            let next = self.spool.next_attempt(name).await?;
            Ok(Some((mail, next)))
        })
    }

    /// Every spooled mail's name, oldest first.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.block_on(self.spool.list())?)
    }
}

/// A mail repository of the configuration in a database (`db://maildb/mail/error/`), open,
/// with the runtime its pool runs on.
pub struct DbMail {
    // Dropped in this order: the repository and its pool before the runtime they run on.
    repository: Arc<dyn MailRepository>,
    db: Arc<Databases>,
    runtime: tokio::runtime::Runtime,
}

impl DbMail {
    /// Opens the repository at `url` (a `db://` URL the configuration names).
    pub fn open(config: &Config, url: &str) -> Result<DbMail> {
        let runtime = runtime()?;
        let db = Databases::new(config, runtime.handle().clone());
        let repositories = crate::repositories::MailRepositories::new(config, db.clone())?;
        let repository = repositories
            .open(url)
            .with_context(|| format!("opening {url}"))?;
        Ok(DbMail {
            repository,
            db,
            runtime,
        })
    }

    /// The repository.
    pub fn repository(&self) -> Arc<dyn MailRepository> {
        self.repository.clone()
    }

    /// The spool of `config` when it is in the database too (on this runtime).
    pub fn spool(&self, config: &Config) -> Result<Arc<dyn SpoolRepository>> {
        crate::repositories::spool(config, &self.db)
    }

    /// Runs `work` on the repository's runtime.
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// The mail called `name`, if it is there.
    pub fn find(&self, name: &str) -> Result<Option<Mail>> {
        Ok(self.block_on(self.repository.retrieve(name))?)
    }

    /// Every mail's name.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.block_on(self.repository.list())?)
    }
}
