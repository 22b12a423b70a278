//! Mail repositories and the spool in a James mail table: the rows of one `repository_name`
//! (`db://maildb/mail/error/` is table `mail`, repository `error`).
//!
//! The spool leases a mail by setting `mailroom_lease_id` (unique across the data source's
//! life) and `mailroom_lease_until` in one statement that picks a due, unleased row: with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL, so that nodes sharing the database never wait on
//! nor hand out the same mail; in a `BEGIN IMMEDIATE` transaction (SQLite's single writer) on
//! SQLite. `mailroom_next_attempt` is the durable retry schedule, indexed with the repository
//! name. Every call that takes a token matches its lease id, so a stale token changes nothing.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mailroom_mailet::{BodySource, Envelope, Mail};
use tokio::sync::Notify;

use super::batch::write_tx;
use super::body::{self, insert_tail, BareLf, Bodies, BodyWriter, WrittenBody};
use super::table::{self, bind_row, fetch_row, RowValues, Table};
use super::{db_error, now_ms, on_pool, sql, to_ms, Dialect, Pool};
use crate::{
    validate_mail_name, Delivery, InboxRepository, IncomingMessage, LeaseToken, Leased,
    MailRepository, Result, SpoolRepository, StoreError, DEFAULT_LEASE,
};

mod delivery;
mod room;

/// How often a waiting [`SpoolRepository::lease`] looks again for mail that became due
/// (retries, expired leases, mail another node spooled); mail spooled here wakes it at once.
const POLL: Duration = Duration::from_millis(100);

/// How long a mail that cannot be read (a missing body file) waits before it is tried again.
const CORRUPT_RETRY: Duration = Duration::from_secs(3600);

/// How long a mail whose read failed after its lease (the database went away, or its body
/// cannot be read: an I/O error) waits once given back: due at once, it was the oldest due
/// mail, leased again first by every worker, and the mails behind it never came.
const ORPHAN_RETRY: Duration = Duration::from_secs(15);

/// The stored body of a leased mail, as handed out.
struct LeasedBody {
    id: String,
    /// The body the leased mail was given: a message whose body is this one (the same
    /// allocation) has this stored body.
    body: Arc<dyn BodySource>,
    lf: BareLf,
}

/// Whether two bodies are the same one (not merely equal).
fn same_body(a: &Arc<dyn BodySource>, b: &Arc<dyn BodySource>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

/// A mail repository, or the spool, in a database table.
#[derive(Clone)]
pub struct DbMailRepository {
    inner: Arc<Inner>,
}

struct Inner {
    table: Table,
    repository: String,
    lease: Duration,
    /// Wakes workers waiting in `lease` when this process spools mail.
    spooled: Notify,
    /// Leases taken whose mail could not be read (the database went away meanwhile): given
    /// back at the next `lease`, rather than left to expire.
    orphans: std::sync::Mutex<Vec<(String, i64)>>,
    /// The stored body of each mail leased here, by name and lease id: a delivery whose
    /// message still has that very body names it rather than copying it
    /// ([`SpoolRepository::complete_delivered`]).
    leased: std::sync::Mutex<HashMap<(String, i64), LeasedBody>>,
    /// Whether the last look for due mail found some (then the next one skips the read that
    /// tells whether there is any).
    busy: std::sync::atomic::AtomicBool,
    /// On SQLite, the lock that says this process owns the spool (see
    /// [`super::DataSources::spool`]); held as long as the repository is.
    _owner: Option<crate::file::fsutil::FileLock>,
}

impl DbMailRepository {
    /// Opens repository `repository` of table `table`, creating the table or adding
    /// Mailroom's columns to James's as needed.
    pub(crate) async fn open(
        bodies: Bodies,
        table: &str,
        repository: &str,
        tmp_dir: std::path::PathBuf,
    ) -> Result<DbMailRepository> {
        let table = super::table_name(table)?;
        if repository.is_empty() || repository.len() > 255 {
            return Err(StoreError::InvalidUrl(
                repository.to_string(),
                "a repository name is 1 to 255 octets".into(),
            ));
        }
        table::ensure(&bodies, &table).await?;
        Ok(DbMailRepository {
            inner: Arc::new(Inner {
                table: Table {
                    pool: bodies.pool.clone(),
                    bodies,
                    name: table,
                    tmp_dir: Arc::new(tmp_dir),
                },
                repository: repository.to_string(),
                lease: DEFAULT_LEASE,
                spooled: Notify::new(),
                orphans: Default::default(),
                leased: Default::default(),
                busy: Default::default(),
                _owner: None,
            }),
        })
    }

    /// The same repository with leases of `lease` (tests use short ones).
    pub fn with_lease_duration(self, lease: Duration) -> DbMailRepository {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            table: shared.table.clone(),
            repository: shared.repository.clone(),
            lease: shared.lease,
            spooled: Notify::new(),
            orphans: Default::default(),
            leased: Default::default(),
            busy: Default::default(),
            _owner: None,
        });
        DbMailRepository {
            inner: Arc::new(Inner { lease, ..inner }),
        }
    }

    /// The same repository holding `owner` for as long as it lives.
    pub(crate) fn owning(self, owner: crate::file::fsutil::FileLock) -> DbMailRepository {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            table: shared.table.clone(),
            repository: shared.repository.clone(),
            lease: shared.lease,
            spooled: Notify::new(),
            orphans: Default::default(),
            leased: Default::default(),
            busy: Default::default(),
            _owner: None,
        });
        DbMailRepository {
            inner: Arc::new(Inner {
                _owner: Some(owner),
                ..inner
            }),
        }
    }

    /// On SQLite, ends every lease: called only by the owner of the spool, which knows that
    /// whoever held them is gone.
    pub(crate) async fn drop_stale_leases(&self) -> Result<()> {
        if let Pool::Sqlite(p) = self.pool() {
            let statement = format!(
                "UPDATE {} SET mailroom_lease_id = NULL, mailroom_lease_until = NULL \
                 WHERE repository_name = $1 AND mailroom_lease_id IS NOT NULL",
                self.table()
            );
            sqlx::query(sql(statement))
                .bind(&self.inner.repository)
                .execute(p)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    fn pool(&self) -> &Pool {
        &self.inner.table.pool
    }

    fn leased(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), LeasedBody>> {
        self.inner.leased.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many leased mails' stored bodies are held (tests).
    #[doc(hidden)]
    pub fn leased_count(&self) -> usize {
        self.leased().len()
    }

    fn table(&self) -> &str {
        &self.inner.table.name
    }

    fn bodies(&self) -> &Bodies {
        &self.inner.table.bodies
    }

    fn dialect(&self) -> Dialect {
        self.pool().dialect()
    }

    /// Writes the row of a mail just received under a fresh name (no row can have it yet), its
    /// body's last chunk with it: on PostgreSQL one statement, which needs no `BEGIN` and
    /// `COMMIT` round trips.
    async fn put_new(&self, values: RowValues) -> Result<()> {
        let insert = table::insert_sql(self.dialect(), self.table());
        let repository = self.inner.repository.clone();
        let body_id = values.body_id.clone();
        let result: sqlx::Result<()> = match self.pool() {
            Pool::Postgres(p) if !values.tail.data.is_empty() => {
                let statement = format!(
                    "WITH chunk AS (INSERT INTO mailroom_bodies (body_id, seq, data, written_at) \
                     VALUES ($13, $16, $17, $18)) {insert}"
                );
                bind_row!(sqlx::query(sql(statement)), values, &repository)
                    .bind(values.tail.seq)
                    .bind(&values.tail.data)
                    .bind(now_ms())
                    .execute(p)
                    .await
                    .map(|_| ())
            }
            pool => write_tx!(pool, c => {
                insert_tail!(&mut *c, &values.body_id, values.tail);
                bind_row!(sqlx::query(sql(insert)), values, &repository)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            }),
        };
        if let Err(e) = result {
            body::delete_body(self.bodies(), &body_id).await;
            return Err(db_error(e));
        }
        self.inner.spooled.notify_waiters();
        Ok(())
    }

    /// Writes `values` as the row of its name: a new row, or the replacement of one (its lease
    /// kept, its schedule dropped: due at once). The old body goes in the same transaction.
    async fn put(&self, values: RowValues) -> Result<()> {
        let d = self.dialect();
        let t = self.table();
        let select_old =
            format!(
            "SELECT mailroom_body_id FROM {t} WHERE repository_name = $1 AND message_name = $2{}",
            if d == Dialect::Postgres { " FOR UPDATE" } else { "" }
        );
        let upsert = format!(
            "{} ON CONFLICT (repository_name, message_name) DO UPDATE SET {}, \
             mailroom_next_attempt = NULL",
            table::insert_sql(d, t),
            table::set_sql(d)
        );
        let repository = self.inner.repository.clone();
        let body_id = values.body_id.clone();
        // A leaseholder here no longer has the stored body (this replaces it).
        self.leased().retain(|(name, _), _| name != &values.name);
        let result: sqlx::Result<Option<String>> = write_tx!(self.pool(), c => {
            let old: Option<Option<String>> = sqlx::query_scalar(sql(select_old))
                .bind(&repository)
                .bind(&values.name)
                .fetch_optional(&mut *c)
                .await?;
            insert_tail!(&mut *c, &values.body_id, values.tail);
            bind_row!(sqlx::query(sql(upsert)), values, &repository)
                .execute(&mut *c)
                .await?;
            let old = old.flatten().filter(|o| *o != values.body_id);
            if let Some(old) = &old {
                sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1")
                    .bind(old)
                    .execute(&mut *c)
                    .await?;
            }
            Ok(old)
        });
        match result {
            Err(e) => {
                body::delete_body(self.bodies(), &body_id).await;
                return Err(db_error(e));
            }
            // A body file goes only once the row that named it is gone for good.
            Ok(old) => body::removed(self.bodies(), old.into_iter().collect()).await,
        }
        self.inner.spooled.notify_waiters();
        Ok(())
    }

    /// Changes the row of a held lease, or deletes it: `extra` are further assignments (`$16`
    /// is the lease id, `$17` is `time` when given). With `values`, the mail is rewritten (its
    /// old body removed). A lease not held is [`StoreError::LeaseLost`].
    async fn under_lease(
        &self,
        token: &LeaseToken,
        values: Option<RowValues>,
        extra: &str,
        time: Option<i64>,
        delete: bool,
    ) -> Result<()> {
        let d = self.dialect();
        let t = self.table();
        let select_old =
            format!(
            "SELECT mailroom_body_id FROM {t} WHERE repository_name = $1 AND message_name = $2 \
             AND mailroom_lease_id = $3{}",
            if d == Dialect::Postgres { " FOR UPDATE" } else { "" }
        );
        let change = if delete {
            format!("DELETE FROM {t} WHERE repository_name = $1 AND message_name = $2 AND mailroom_lease_id = $3")
        } else if values.is_some() {
            format!(
                "UPDATE {t} SET {}{extra} WHERE repository_name = $2 AND message_name = $1 \
                 AND mailroom_lease_id = $16",
                table::set_sql(d)
            )
        } else {
            format!(
                "UPDATE {t} SET {} WHERE repository_name = $1 AND message_name = $2 \
                 AND mailroom_lease_id = $3",
                extra
                    .trim_start_matches(", ")
                    .replace("$16", "$3")
                    .replace("$17", "$4")
            )
        };
        let repository = self.inner.repository.clone();
        let name = token.name().to_string();
        let id = token.id() as i64;
        let key = (name.clone(), id);
        let kept = self.leased().get(&key).map(|l| l.id.clone());
        let same_body = values
            .as_ref()
            .is_none_or(|v| kept.as_ref() == Some(&v.body_id));
        if delete || !same_body || extra.contains("mailroom_lease_id = NULL") {
            // The lease ends or the body changes: the stored body is no longer the mail's.
            self.leased().remove(&key);
        }
        // A body written for this change (not the one kept), removed should the change fail.
        let new_body = values
            .as_ref()
            .map(|v| v.body_id.clone())
            .filter(|n| kept.as_ref() != Some(n));
        let replaced = new_body.clone();
        let written = new_body.clone();
        let result: sqlx::Result<(bool, Option<String>)> = write_tx!(self.pool(), c => {
            let old: Option<Option<String>> = sqlx::query_scalar(sql(select_old))
                .bind(&repository)
                .bind(&name)
                .bind(id)
                .fetch_optional(&mut *c)
                .await?;
            let Some(old) = old else {
                return Ok((false, None));
            };
            if written.is_none() && values.as_ref().is_some_and(|v| old.as_ref() != Some(&v.body_id)) {
                // The kept body was replaced meanwhile (a store elsewhere): never name a
                // body that is gone. The change fails; the mail is tried again.
                return Err(sqlx::Error::Protocol("the stored body changed under the lease".into()));
            }
            match &values {
                Some(v) => {
                    insert_tail!(&mut *c, &v.body_id, v.tail);
                    let mut query = bind_row!(sqlx::query(sql(change)), v, &repository).bind(id);
                    if let Some(time) = time {
                        query = query.bind(time);
                    }
                    query.execute(&mut *c).await?;
                }
                None => {
                    let mut query = sqlx::query(sql(change))
                        .bind(&repository)
                        .bind(&name)
                        .bind(id);
                    if let Some(time) = time {
                        query = query.bind(time);
                    }
                    query.execute(&mut *c).await?;
                }
            }
            let old = old.filter(|o| delete || replaced.as_ref().is_some_and(|n| n != o));
            if let Some(old) = &old {
                sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1")
                    .bind(old)
                    .execute(&mut *c)
                    .await?;
            }
            Ok((true, old))
        });
        let held = match result {
            Ok((held, old)) => {
                body::removed(self.bodies(), old.into_iter().collect()).await;
                held
            }
            Err(e) => {
                if let Some(new) = &new_body {
                    body::delete_body(self.bodies(), new).await;
                }
                return Err(db_error(e));
            }
        };
        if !held {
            // The lease is gone for good (the mail too, or another has it): so is the body
            // kept for it.
            self.leased().remove(&key);
            if let Some(new) = &new_body {
                body::delete_body(self.bodies(), new).await;
            }
            return Err(StoreError::LeaseLost(token.name().to_string()));
        }
        Ok(())
    }

    /// Gives back the leases [`Inner::orphans`] holds, due in [`ORPHAN_RETRY`]; those that
    /// cannot be yet stay there.
    async fn release_orphans(&self) -> Result<()> {
        let orphans =
            std::mem::take(&mut *self.inner.orphans.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, (name, id)) in orphans.iter().enumerate() {
            let token = LeaseToken::new(name.clone(), *id as u64, SystemTime::now());
            let later = now_ms() + ORPHAN_RETRY.as_millis() as i64;
            let given_back = self
                .under_lease(
                    &token,
                    None,
                    ", mailroom_lease_id = NULL, mailroom_lease_until = NULL, \
                     mailroom_next_attempt = $17",
                    Some(later),
                    false,
                )
                .await;
            match given_back {
                Ok(()) | Err(StoreError::LeaseLost(_)) => {}
                Err(e) => {
                    self.inner
                        .orphans
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(orphans[i..].iter().cloned());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether a mail is due and not leased (a read).
    async fn any_due(&self, now: i64) -> Result<bool> {
        let due = format!(
            "SELECT 1 FROM {} WHERE repository_name = $1 \
             AND (mailroom_lease_until IS NULL OR mailroom_lease_until <= $2) \
             AND (mailroom_next_attempt IS NULL OR mailroom_next_attempt <= $2) LIMIT 1",
            self.table()
        );
        let any: Option<i32> = on_pool!(self.pool(), p => sqlx::query_scalar(sql(due))
            .bind(&self.inner.repository)
            .bind(now)
            .fetch_optional(p)
            .await)
        .map_err(db_error)?;
        Ok(any.is_some())
    }

    /// The values to store a leased mail with: its stored body kept when the mail still has it
    /// (a processor hop changes the envelope or the header, not the body), else a new one.
    async fn values_of(&self, token: &LeaseToken, mail: &Mail) -> Result<RowValues> {
        let kept = self
            .leased()
            .get(&(token.name().to_string(), token.id() as i64))
            .filter(|l| same_body(&l.body, mail.message.body()))
            .map(|l| {
                (
                    WrittenBody {
                        id: l.id.clone(),
                        len: l.body.len(),
                    },
                    l.lf,
                )
            });
        match kept {
            Some((body, body_lf)) => {
                let header = mail.message.header_section().to_vec();
                let mut header_lf = BareLf::default();
                header_lf.feed(&header);
                RowValues::new(&mail.envelope, header, &body, header_lf, body_lf)
            }
            None => {
                RowValues::write(self.bodies(), self.table(), &mail.envelope, &mail.message).await
            }
        }
    }

    /// Leases one due, unleased mail if there is one: its name and lease id.
    async fn try_lease(&self) -> Result<Option<(String, i64, i64)>> {
        let d = self.dialect();
        let t = self.table();
        let now = now_ms();
        let until = now + self.inner.lease.as_millis() as i64;
        let pick = format!(
            "SELECT message_name FROM {t} WHERE repository_name = $1 \
             AND (mailroom_lease_until IS NULL OR mailroom_lease_until <= $3) \
             AND (mailroom_next_attempt IS NULL OR mailroom_next_attempt <= $3) \
             ORDER BY {} LIMIT 1{}",
            d.seq(),
            if d == Dialect::Postgres {
                " FOR UPDATE SKIP LOCKED"
            } else {
                ""
            }
        );
        // Nothing due (an idle spool, polled): a read, which costs no write transaction. While
        // the spool is busy (the last look found mail) that read is skipped.
        let busy = &self.inner.busy;
        if !busy.load(std::sync::atomic::Ordering::Relaxed) && !self.any_due(now).await? {
            return Ok(None);
        }
        let id_expr = match d {
            Dialect::Sqlite => "(SELECT value + 1 FROM mailroom_counters WHERE name = 'lease')",
            Dialect::Postgres => "nextval('mailroom_lease_ids')",
        };
        let lease = format!(
            "UPDATE {t} SET mailroom_lease_id = {id_expr}, mailroom_lease_until = $2 \
             WHERE repository_name = $1 AND message_name = ({pick}) \
             RETURNING message_name, mailroom_lease_id"
        );
        let repository = self.inner.repository.clone();
        let result: sqlx::Result<Option<(String, Option<i64>)>> = match self.pool() {
            // One statement, atomic by itself: no `BEGIN` and `COMMIT` round trips.
            Pool::Postgres(p) => {
                sqlx::query_as(sql(lease))
                    .bind(&repository)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(p)
                    .await
            }
            pool => write_tx!(pool, c => {
                let leased: Option<(String, Option<i64>)> = sqlx::query_as(sql(lease))
                    .bind(&repository)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(&mut *c)
                    .await?;
                if leased.is_some() && d == Dialect::Sqlite {
                    // The id just given: lease ids are unique for the database's life.
                    sqlx::query("UPDATE mailroom_counters SET value = value + 1 WHERE name = 'lease'")
                        .execute(&mut *c)
                        .await?;
                }
                Ok(leased)
            }),
        };
        let leased = result.map_err(db_error)?;
        busy.store(leased.is_some(), std::sync::atomic::Ordering::Relaxed);
        Ok(leased.map(|(name, id)| (name, id.unwrap_or_default(), until)))
    }
}

#[async_trait]
impl MailRepository for DbMailRepository {
    async fn store(&self, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        let values =
            RowValues::write(self.bodies(), self.table(), &mail.envelope, &mail.message).await?;
        self.put(values).await
    }

    async fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        validate_mail_name(name)?;
        match fetch_row(&self.inner.table, &self.inner.repository, name).await? {
            Some(row) => Ok(Some(
                row.into_mail(self.bodies(), &self.inner.table.tmp_dir)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    async fn remove(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let statement = format!(
            "DELETE FROM {} WHERE repository_name = $1 AND message_name = $2 \
             RETURNING mailroom_body_id",
            self.table()
        );
        let repository = self.inner.repository.clone();
        let name = name.to_string();
        let result: sqlx::Result<Option<Option<String>>> = write_tx!(self.pool(), c => {
            let gone: Option<Option<String>> = sqlx::query_scalar(sql(statement))
                .bind(&repository)
                .bind(&name)
                .fetch_optional(&mut *c)
                .await?;
            if let Some(Some(body)) = &gone {
                sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1")
                    .bind(body)
                    .execute(&mut *c)
                    .await?;
            }
            Ok(gone)
        });
        let gone = result.map_err(db_error)?;
        body::removed(self.bodies(), gone.clone().flatten().into_iter().collect()).await;
        Ok(gone.is_some())
    }

    async fn list(&self) -> Result<Vec<String>> {
        let statement = format!(
            "SELECT message_name FROM {} WHERE repository_name = $1 ORDER BY {}",
            self.table(),
            self.dialect().seq()
        );
        on_pool!(self.pool(), p => sqlx::query_scalar(sql(statement))
            .bind(&self.inner.repository)
            .fetch_all(p)
            .await)
        .map_err(db_error)
    }

    async fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        Ok(Box::new(Incoming {
            repo: self.clone(),
            name: mailroom_mailet::new_mail_name(),
            head: Vec::new(),
            header_done: false,
            body: Some(BodyWriter::new(self.bodies().clone(), self.table())),
            body_lf: BareLf::default(),
        }))
    }
}

/// A message streamed into a database repository: the header section is kept until it is
/// whole, the body goes to `mailroom_bodies` a chunk at a time.
struct Incoming {
    repo: DbMailRepository,
    name: String,
    head: Vec<u8>,
    header_done: bool,
    body: Option<BodyWriter>,
    body_lf: BareLf,
}

impl Incoming {
    /// Once the header section is known to be complete, moves what follows it to the body.
    async fn split_header(&mut self, at_end: bool) -> io::Result<()> {
        let split = mailroom_mailet::header_section_len(&self.head);
        let ends_blank = self.head.ends_with(b"\n\r\n")
            || self.head.ends_with(b"\n\n")
            || self.head == b"\r\n"
            || self.head == b"\n";
        if at_end || split < self.head.len() || ends_blank {
            let rest = self.head.split_off(split);
            self.header_done = true;
            self.write_body(&rest).await?;
        }
        Ok(())
    }

    async fn write_body(&mut self, octets: &[u8]) -> io::Result<()> {
        self.body_lf.feed(octets);
        let body = self.body.as_mut().expect("written before commit");
        body.write(octets).await.map_err(|e| match e {
            // Kept as it is: a full disk is answered `452 4.3.1`.
            StoreError::Io(e) => e,
            e => io::Error::other(e.to_string()),
        })
    }
}

#[async_trait]
impl IncomingMessage for Incoming {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, octets: &[u8]) -> io::Result<()> {
        if self.header_done {
            return self.write_body(octets).await;
        }
        self.head.extend_from_slice(octets);
        self.split_header(false).await
    }

    async fn commit(mut self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        if !self.header_done {
            self.split_header(true).await?;
        }
        let body = self.body.take().expect("committed once");
        let (body, tail) = body.finish().await?;
        envelope.name = self.name.clone();
        let mut header_lf = BareLf::default();
        header_lf.feed(&self.head);
        let values = RowValues::new(
            &envelope,
            std::mem::take(&mut self.head),
            &body,
            header_lf,
            self.body_lf,
        );
        let values = match values {
            Ok(values) => RowValues { tail, ..values },
            Err(e) => {
                body::delete_body(self.repo.bodies(), &body.id).await;
                return Err(e);
            }
        };
        self.repo.put_new(values).await
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Not committed: remove the chunks written so far (a sweep removes them otherwise).
        if let Some(body) = self.body.take().filter(BodyWriter::wrote_any) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let bodies = self.repo.bodies().clone();
                let id = body.id().to_string();
                runtime.spawn(async move { body::delete_body(&bodies, &id).await });
            }
        }
    }
}

#[async_trait]
impl SpoolRepository for DbMailRepository {
    async fn lease(&self, wait: Duration) -> Result<Option<Leased>> {
        self.release_orphans().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let spooled = self.inner.spooled.notified();
            tokio::pin!(spooled);
            spooled.as_mut().enable();
            while let Some((name, id, until)) = self.try_lease().await? {
                let token = LeaseToken::new(name.clone(), id as u64, super::from_ms(until));
                let read = match fetch_row(&self.inner.table, &self.inner.repository, &name).await {
                    Ok(Some(row)) => {
                        let body = row.body_lf();
                        row.into_mail(self.bodies(), &self.inner.table.tmp_dir)
                            .await
                            .map(|mail| Some((mail, body)))
                    }
                    other => other.map(|_| None),
                };
                match read {
                    Ok(Some((mail, body))) => {
                        if let Some((body_id, lf)) = body {
                            self.leased().insert(
                                (name, id),
                                LeasedBody {
                                    id: body_id,
                                    body: mail.message.body().clone(),
                                    lf,
                                },
                            );
                        }
                        return Ok(Some(Leased { mail, token }));
                    }
                    // Removed between the lease and the read: look for another.
                    Ok(None) => continue,
                    // Damaged (its body file missing, say): put aside for a while, so that
                    // the mails behind it are not held up, and said in the log.
                    Err(StoreError::Corrupt(what, why)) => {
                        tracing::error!(
                            "spool {}: mail {name} cannot be read ({what}: {why}); \
                             tried again in an hour",
                            self.inner.repository
                        );
                        let later = now_ms() + CORRUPT_RETRY.as_millis() as i64;
                        self.under_lease(
                            &token,
                            None,
                            ", mailroom_lease_id = NULL, mailroom_lease_until = NULL, \
                             mailroom_next_attempt = $17",
                            Some(later),
                            false,
                        )
                        .await?;
                        continue;
                    }
                    Err(e) => {
                        self.inner
                            .orphans
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((name, id));
                        return Err(e);
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = (deadline - now).min(POLL);
            tokio::select! {
                _ = &mut spooled => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn renew(&self, token: &LeaseToken) -> Result<LeaseToken> {
        let until = now_ms() + self.inner.lease.as_millis() as i64;
        self.under_lease(
            token,
            None,
            ", mailroom_lease_until = $17",
            Some(until),
            false,
        )
        .await?;
        Ok(LeaseToken::new(
            token.name(),
            token.id(),
            super::from_ms(until),
        ))
    }

    async fn update(&self, token: &LeaseToken, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        if mail.name() != token.name() {
            return Err(StoreError::LeaseLost(mail.name().to_string()));
        }
        let values = self.values_of(token, mail).await?;
        self.under_lease(token, Some(values), "", None, false).await
    }

    async fn release(&self, token: LeaseToken) -> Result<()> {
        self.under_lease(
            &token,
            None,
            ", mailroom_lease_id = NULL, mailroom_lease_until = NULL, \
             mailroom_next_attempt = NULL",
            None,
            false,
        )
        .await?;
        self.inner.spooled.notify_waiters();
        Ok(())
    }

    async fn requeue(
        &self,
        token: LeaseToken,
        mail: &Mail,
        next_attempt_at: SystemTime,
    ) -> Result<()> {
        validate_mail_name(mail.name())?;
        if mail.name() != token.name() {
            return Err(StoreError::LeaseLost(mail.name().to_string()));
        }
        let values = self.values_of(&token, mail).await?;
        self.under_lease(
            &token,
            Some(values),
            ", mailroom_lease_id = NULL, mailroom_lease_until = NULL, \
             mailroom_next_attempt = $17",
            Some(to_ms(next_attempt_at)),
            false,
        )
        .await?;
        self.inner.spooled.notify_waiters();
        Ok(())
    }

    async fn complete(&self, token: LeaseToken) -> Result<()> {
        self.under_lease(&token, None, "", None, true).await
    }

    /// With a database inbox of the same data source, one transaction inserts the inbox rows
    /// and deletes the spool row (and its body, unless a row now names it).
    async fn complete_delivered(
        &self,
        token: &LeaseToken,
        inbox: &dyn InboxRepository,
        deliveries: &[Delivery],
    ) -> Result<bool> {
        self.complete_with_deliveries(token, inbox, deliveries)
            .await
    }

    async fn next_attempt(&self, name: &str) -> Result<Option<SystemTime>> {
        validate_mail_name(name)?;
        let statement = format!(
            "SELECT mailroom_next_attempt FROM {} WHERE repository_name = $1 \
             AND message_name = $2",
            self.table()
        );
        let at: Option<Option<i64>> = on_pool!(self.pool(), p => sqlx::query_scalar(sql(statement))
            .bind(&self.inner.repository)
            .bind(name)
            .fetch_optional(p)
            .await)
        .map_err(db_error)?;
        Ok(table::time_of(at.flatten()))
    }

    async fn room_for(&self, size: u64) -> Result<()> {
        self.room(size).await
    }

    async fn make_due(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let statement = format!(
            "UPDATE {} SET mailroom_next_attempt = NULL WHERE repository_name = $1 \
             AND message_name = $2 AND (mailroom_lease_until IS NULL OR mailroom_lease_until <= $3)",
            self.table()
        );
        let changed = on_pool!(self.pool(), p => sqlx::query(sql(statement))
            .bind(&self.inner.repository)
            .bind(name)
            .bind(now_ms())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        if changed > 0 {
            self.inner.spooled.notify_waiters();
        }
        Ok(changed > 0)
    }
}
