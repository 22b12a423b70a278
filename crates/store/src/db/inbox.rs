//! Inboxes in a James mail table (`db://maildb/inbox/`): a user's mails are the rows whose
//! `repository_name` is the user's name, as James 2.3 kept them.
//!
//! A message's UIDL is its `message_name`, which never changes (a James name that is not a
//! valid UIDL is replaced by a digest of it); its POP3 size is kept at delivery
//! (`mailroom_pop3_size`, counting every bare LF as CRLF). A mailbox is locked in this process
//! and, on PostgreSQL, across nodes by a session advisory lock held for as long as the mailbox
//! is open (all of them on one connection: [`super::node_lock`]).
//!
//! `deliver_once` (LocalDelivery's) stages a delivery in memory and writes nothing: the row
//! is written by `sync`, or — when the mail comes from a database spool on the same data
//! source — by the spool's removal of the mail, in the same transaction
//! ([`crate::SpoolRepository::complete_delivered`]), and then the row names the spool mail's
//! body rather than a copy of it. A body may so be named by several rows (one per
//! recipient): a row's removal removes its body only when no other row of the table names it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mailroom_mailet::{Envelope, Message};
use sqlx::Row;
use tokio::io::AsyncReadExt;

use super::batch::write_tx;
use super::body::{self, insert_tail, BareLf, Bodies, WrittenBody};
use super::node_lock::{NodeLock, NodeLocks};
use super::table::{self, bind_row, RowValues};
use super::{db_error, on_pool, sql, Pool};
use crate::{
    validate_user_name, Delivery, InboxRepository, Mailbox, MailboxMessage, MessageStream, Result,
    StoreError,
};

/// Users' inboxes in a database table.
pub struct DbInbox {
    pool: Pool,
    /// Where bodies go (chunks or files) and are read from.
    bodies: Bodies,
    table: String,
    /// Mailboxes open in this process, by user.
    open: Arc<Mutex<HashSet<String>>>,
    /// On PostgreSQL, the mailbox locks across nodes.
    node_locks: Option<Arc<NodeLocks>>,
    deliveries: std::sync::atomic::AtomicU64,
    /// Deliveries `deliver_once` made and nobody wrote yet, by delivery number.
    staged: Mutex<HashMap<u64, Staged>>,
}

/// The delivery numbers of staged deliveries have this bit set (the others are written).
const STAGED: u64 = 1 << 63;

/// How long a staged delivery that is neither synced nor committed is kept (its mail failed:
/// it is delivered again when it is retried).
const STAGED_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A delivery made and not written yet: the row it becomes, but for its body.
pub(crate) struct Staged {
    pub(crate) name: String,
    pub(crate) user: String,
    /// The trace header and the message's header section.
    pub(crate) header: Vec<u8>,
    pub(crate) header_lf: BareLf,
    /// The message, whose body is written (or, by the spool, named) with the row.
    pub(crate) message: Message,
    at: std::time::Instant,
}

impl Staged {
    /// The values of the row, its body being `body` with `body_lf` bare LFs.
    pub(crate) fn values(self, body: &WrittenBody, body_lf: BareLf) -> Result<RowValues> {
        let mut envelope = Envelope::new(self.name, None, Vec::new());
        envelope.state = "inbox".into();
        RowValues::new(&envelope, self.header, body, self.header_lf, body_lf)
    }

    /// Writes the body (its last chunk stays in the values, for the row's transaction).
    pub(crate) async fn write(self, bodies: &Bodies, table: &str) -> Result<RowValues> {
        let mut body_lf = BareLf::default();
        let (body, tail) =
            body::write_source(bodies, table, self.message.body(), &mut body_lf).await?;
        match self.values(&body, body_lf) {
            Ok(values) => Ok(RowValues { tail, ..values }),
            Err(e) => {
                body::delete_body(bodies, &body.id).await;
                Err(e)
            }
        }
    }
}

/// Inserts inbox rows in a write transaction (`$c`, see [`write_tx!`]): each of `$rows`, an
/// iterator of `(user, values, named)` where `named` says that the body is another row's
/// (the spool's), with `ON CONFLICT DO NOTHING` (`$insert`, from [`insert_once_sql`]). A row
/// already there is an earlier delivery of the same mail: its own copy of the body goes. The
/// value is whether a row naming a body of another was stored, and the ids of the bodies
/// deleted (for [`body::removed`] once the transaction has committed).
macro_rules! insert_rows {
    ($c:ident, $insert:expr, $rows:expr) => {{
        let mut named_stored = false;
        let mut gone = Vec::new();
        for (user, v, named) in $rows {
            let stored = bind_row!(sqlx::query(sql($insert.clone())), v, user)
                .execute(&mut *$c)
                .await?
                .rows_affected()
                > 0;
            match (stored, *named) {
                (true, true) => named_stored = true,
                (true, false) => {
                    $crate::db::body::insert_tail!(&mut *$c, &v.body_id, v.tail);
                }
                (false, true) => {}
                (false, false) => {
                    sqlx::query("DELETE FROM mailroom_bodies WHERE body_id = $1")
                        .bind(&v.body_id)
                        .execute(&mut *$c)
                        .await?;
                    gone.push(v.body_id.clone());
                }
            }
        }
        (named_stored, gone)
    }};
}
pub(crate) use insert_rows;

/// The insert of an inbox row that stores nothing when the row is there already.
pub(crate) fn insert_once_sql(d: super::Dialect, table: &str) -> String {
    format!(
        "{} ON CONFLICT (repository_name, message_name) DO NOTHING",
        table::insert_sql(d, table)
    )
}

impl DbInbox {
    /// Opens the inboxes in `table`, creating it or adding Mailroom's columns to James's.
    pub(crate) async fn open(bodies: Bodies, table: &str) -> Result<DbInbox> {
        let pool = bodies.pool.clone();
        let table = super::table_name(table)?;
        table::ensure(&bodies, &table).await?;
        // A row's removal looks for other rows naming its body. Under the schema lock: nodes
        // starting together each create it.
        let index = format!(
            "CREATE INDEX IF NOT EXISTS {table}_mailroom_body ON {table} (mailroom_body_id)"
        );
        table::create_locked(&pool, index).await?;
        let node_locks = match &pool {
            Pool::Postgres(p) => Some(NodeLocks::new(p.clone())),
            Pool::Sqlite(_) => None,
        };
        Ok(DbInbox {
            pool,
            node_locks,
            bodies,
            table,
            open: Arc::default(),
            deliveries: Default::default(),
            staged: Mutex::default(),
        })
    }

    /// The data source's pool.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where its bodies are written and read.
    pub(crate) fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Takes the staged deliveries among `deliveries` (the others were written when made).
    /// A staged delivery no longer here (taken before, or dropped as too old) is an error:
    /// its mail must be delivered again.
    /// Every one of them is taken, even when one is missing (none is left behind).
    pub(crate) fn take_staged(&self, deliveries: &[Delivery]) -> Result<Vec<Staged>> {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        let mut missing = None;
        for d in deliveries.iter().filter(|d| d.0 & STAGED != 0) {
            match staged.remove(&d.0) {
                Some(s) => taken.push(s),
                None => missing = missing.or(Some(d.0 & !STAGED)),
            }
        }
        match missing {
            Some(d) => Err(StoreError::Io(std::io::Error::other(format!(
                "inbox delivery {d} is no longer pending"
            )))),
            None => Ok(taken),
        }
    }

    /// How many staged deliveries are held (tests).
    #[doc(hidden)]
    pub fn staged_count(&self) -> usize {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writes staged deliveries: their bodies, then their rows in one transaction.
    async fn write_staged(&self, staged: Vec<Staged>) -> Result<()> {
        let mut rows = Vec::with_capacity(staged.len());
        for s in staged {
            let user = s.user.clone();
            match s.write(&self.bodies, &self.table).await {
                Ok(values) => rows.push((user, values, false)),
                Err(e) => {
                    for (_, v, _) in &rows {
                        body::delete_body(&self.bodies, &v.body_id).await;
                    }
                    return Err(e);
                }
            }
        }
        let bodies: Vec<String> = rows.iter().map(|(_, v, _)| v.body_id.clone()).collect();
        let insert = insert_once_sql(self.pool.dialect(), &self.table);
        let result: sqlx::Result<(bool, Vec<String>)> = write_tx!(&self.pool, c => {
            Ok(insert_rows!(c, insert, rows.iter()))
        });
        match result {
            Ok((_, gone)) => {
                body::removed(&self.bodies, gone).await;
                Ok(())
            }
            Err(e) => {
                for id in &bodies {
                    body::delete_body(&self.bodies, id).await;
                }
                Err(db_error(e))
            }
        }
    }
}

/// A stable 64-bit digest (FNV-1a): advisory lock keys and UIDLs for odd James names must be
/// the same in every process.
fn digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The UIDL of a message: its name when that is a valid UIDL (RFC 1939 §7).
fn uid_of(name: &str) -> String {
    if !name.is_empty() && name.len() <= 70 && name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        name.to_string()
    } else {
        format!("j{:016x}", digest(name))
    }
}

impl DbInbox {
    /// Stores a message as row `name` of `user`; with `once`, a row of that name already
    /// there is the same delivery made before, and nothing is stored.
    async fn insert(
        &self,
        name: String,
        once: bool,
        user: &str,
        trace_header: &[u8],
        message: &Message,
    ) -> Result<(Delivery, bool)> {
        validate_user_name(user)?;
        let mut header = trace_header.to_vec();
        header.extend_from_slice(message.header_section());
        let mut header_lf = BareLf::default();
        header_lf.feed(&header);
        let mut body_lf = header_lf;
        body_lf.count = 0;
        let (body, tail) =
            body::write_source(&self.bodies, &self.table, message.body(), &mut body_lf).await?;
        let mut envelope = Envelope::new(name, None, Vec::new());
        envelope.state = "inbox".into();
        let values = match RowValues::new(&envelope, header, &body, header_lf, body_lf) {
            Ok(values) => RowValues { tail, ..values },
            Err(e) => {
                body::delete_body(&self.bodies, &body.id).await;
                return Err(e);
            }
        };
        let mut statement = table::insert_sql(self.pool.dialect(), &self.table);
        if once {
            statement.push_str(" ON CONFLICT (repository_name, message_name) DO NOTHING");
        }
        let user = user.to_string();
        let result: sqlx::Result<u64> = write_tx!(&self.pool, c => {
            let stored = bind_row!(sqlx::query(sql(statement)), values, &user)
                .execute(&mut *c)
                .await?
                .rows_affected();
            if stored > 0 {
                insert_tail!(&mut *c, &values.body_id, values.tail);
            }
            Ok(stored)
        });
        let stored = match result {
            Err(e) => {
                body::delete_body(&self.bodies, &body.id).await;
                return Err(db_error(e));
            }
            // Delivered before: this copy's body goes.
            Ok(0) => {
                body::delete_body(&self.bodies, &body.id).await;
                false
            }
            Ok(_) => true,
        };
        let delivery = Delivery(
            self.deliveries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        Ok((delivery, stored))
    }
}

/// The row name of the delivery `key` to `user` with `trace_header` (which names the
/// recipient: one mail may reach a user twice, through two addresses). A SHA-1 in hex: the
/// same in every process, and a valid UIDL.
fn delivery_name(key: &str, user: &str, trace_header: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut hash = Sha1::new();
    for part in [key.as_bytes(), user.as_bytes(), trace_header] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl InboxRepository for DbInbox {
    async fn deliver(
        &self,
        user: &str,
        trace_header: &[u8],
        message: &Message,
    ) -> Result<Delivery> {
        let name = mailroom_mailet::new_mail_name();
        Ok(self
            .insert(name, false, user, trace_header, message)
            .await?
            .0)
    }

    async fn deliver_once(
        &self,
        key: &str,
        user: &str,
        trace_header: &[u8],
        message: &Message,
    ) -> Result<Delivery> {
        validate_user_name(user)?;
        let mut header = trace_header.to_vec();
        header.extend_from_slice(message.header_section());
        let mut header_lf = BareLf::default();
        header_lf.feed(&header);
        let staged = Staged {
            name: delivery_name(key, user, trace_header),
            user: user.to_string(),
            header,
            header_lf,
            message: message.clone(),
            at: std::time::Instant::now(),
        };
        let number = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            | STAGED;
        let mut all = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.at.elapsed() < STAGED_AGE);
        all.insert(number, staged);
        Ok(Delivery(number))
    }

    /// The row is named `uid` (a UIDL is its row's name), so a second import of it is the
    /// same row and stores nothing. The trace header is part of `message` already.
    async fn import(&self, user: &str, uid: &str, message: &Message) -> Result<bool> {
        if uid_of(uid) != uid {
            return Err(StoreError::InvalidName(uid.to_string(), "not a UIDL"));
        }
        Ok(self
            .insert(uid.to_string(), true, user, &[], message)
            .await?
            .1)
    }

    /// Writes the staged deliveries among `deliveries` (the others committed when made).
    async fn sync(&self, deliveries: &[Delivery]) -> Result<()> {
        let staged = self.take_staged(deliveries)?;
        if staged.is_empty() {
            return Ok(());
        }
        self.write_staged(staged).await
    }

    fn forget(&self, deliveries: &[Delivery]) {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        for d in deliveries {
            staged.remove(&d.0);
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    /// The sizes `open_mailbox` lists, summed, without its locks.
    async fn size(&self, user: &str) -> Result<u64> {
        validate_user_name(user)?;
        let statement = format!(
            "SELECT COALESCE(mailroom_pop3_size, \
             CASE WHEN mailroom_body_id IS NULL THEN {} END) \
             FROM {} WHERE repository_name = $1",
            self.pool.dialect().james_wire_size(),
            self.table,
        );
        let sizes: Vec<Option<i64>> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sql(statement))
                .bind(user)
                .fetch_all(p)
                .await
                .map_err(db_error)?
        });
        Ok(sizes
            .into_iter()
            .map(|s| s.unwrap_or(0).max(0) as u64)
            .fold(0, u64::saturating_add))
    }

    async fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>> {
        validate_user_name(user)?;
        let key = user.to_string();
        if !self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return Err(StoreError::InUse(format!("mailbox of {user}")));
        }
        let local = LocalLock {
            set: self.open.clone(),
            key,
        };
        let node_lock = match &self.node_locks {
            None => None,
            Some(locks) => {
                let key = digest(&format!("{}/{user}", self.table)) as i64;
                match locks.lock(key).await? {
                    Some(lock) => Some(lock),
                    None => return Err(StoreError::InUse(format!("mailbox of {user}"))),
                }
            }
        };
        // A row James wrote has no stored POP3 size: the database computes it, and no body
        // is read.
        let statement = format!(
            "SELECT message_name, COALESCE(mailroom_pop3_size, \
             CASE WHEN mailroom_body_id IS NULL THEN {} END) \
             FROM {} WHERE repository_name = $1 ORDER BY {}",
            self.pool.dialect().james_wire_size(),
            self.table,
            self.pool.dialect().seq()
        );
        let rows: Vec<(String, Option<i64>)> = on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql(statement))
                .bind(user)
                .fetch_all(p)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<sqlx::Result<Vec<_>>>()
                .map_err(db_error)?
        });
        let mut messages = Vec::with_capacity(rows.len());
        let mut names = Vec::with_capacity(rows.len());
        for (name, pop3_size) in rows {
            let size = pop3_size.unwrap_or(0).max(0) as u64;
            messages.push(MailboxMessage {
                uid: uid_of(&name),
                size,
            });
            names.push(name);
        }
        // Rows James's DBFile wrote: their bodies are files, which the database cannot size.
        if body::james_filestore(&self.bodies) {
            for (message, name) in messages.iter_mut().zip(&names) {
                if let Some(extra) = body::james_wire_size(&self.bodies, name).await? {
                    message.size += extra;
                }
            }
        }
        Ok(Box::new(DbMailbox {
            pool: self.pool.clone(),
            bodies: self.bodies.clone(),
            table: self.table.clone(),
            user: user.to_string(),
            messages,
            names,
            _local: local,
            node_lock,
        }))
    }
}

/// This process's hold on a mailbox, released on drop.
struct LocalLock {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

struct DbMailbox {
    pool: Pool,
    bodies: Bodies,
    table: String,
    user: String,
    messages: Vec<MailboxMessage>,
    names: Vec<String>,
    _local: LocalLock,
    node_lock: Option<NodeLock>,
}

#[async_trait]
impl Mailbox for DbMailbox {
    fn messages(&self) -> &[MailboxMessage] {
        &self.messages
    }

    async fn open_message(&self, index: usize) -> Result<MessageStream> {
        let name = self
            .names
            .get(index)
            .ok_or_else(|| StoreError::NotFound(format!("message {}", index + 1)))?;
        let statement = format!(
            "SELECT mailroom_header, mailroom_body_id, \
             CASE WHEN mailroom_body_id IS NULL THEN message_body END AS james_body, \
             mailroom_size \
             FROM {} WHERE repository_name = $1 AND message_name = $2",
            self.table
        );
        type Row = (
            Option<Vec<u8>>,
            Option<String>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let row: Option<Row> = on_pool!(&self.pool, p => {
            let row = sqlx::query(sql(statement))
                .bind(&self.user)
                .bind(name)
                .fetch_optional(p)
                .await
                .map_err(db_error)?;
            row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .transpose()
                .map_err(db_error)?
        });
        match row {
            Some((header, Some(body_id), _, size)) => {
                let header = header.unwrap_or_default();
                let body_len = size.map(|s| (s.max(0) as u64).saturating_sub(header.len() as u64));
                Ok(Box::new(std::io::Cursor::new(header).chain(
                    body::open_stream(&self.bodies, &body_id, body_len).await?,
                )))
            }
            Some((_, None, Some(whole), _)) => body::james_stream(&self.bodies, name, whole).await,
            _ => Err(StoreError::NotFound(format!("message {name}"))),
        }
    }

    async fn delete(&mut self, indexes: &[usize]) -> Result<()> {
        let names: Vec<&String> = indexes.iter().filter_map(|&i| self.names.get(i)).collect();
        if names.is_empty() {
            return Ok(());
        }
        // A lock lost with its connection: another session (on another node) may have the
        // mailbox now, and this snapshot is no longer this session's to act on.
        if let Some(lock) = &self.node_lock {
            if !lock.confirm().await? {
                return Err(StoreError::InUse(format!(
                    "mailbox of {} (its lock was lost while the database was away)",
                    self.user
                )));
            }
        }
        let statement = format!(
            "DELETE FROM {} WHERE repository_name = $1 AND message_name = $2 \
             RETURNING mailroom_body_id",
            self.table
        );
        let delete_body = format!(
            "DELETE FROM mailroom_bodies WHERE body_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM {} WHERE mailroom_body_id = $1)",
            self.table
        );
        let names: Vec<String> = names.into_iter().cloned().collect();
        let user = self.user.clone();
        let result: sqlx::Result<Vec<String>> = write_tx!(&self.pool, c => {
            let mut bodies = Vec::new();
            for name in names {
                let gone: Option<Option<String>> = sqlx::query_scalar(sql(statement.clone()))
                    .bind(&user)
                    .bind(name)
                    .fetch_optional(&mut *c)
                    .await?;
                if let Some(Some(body)) = gone {
                    // Other recipients' rows may name the same body.
                    sqlx::query(sql(delete_body.clone()))
                        .bind(&body)
                        .execute(&mut *c)
                        .await?;
                    bodies.push(body);
                }
            }
            Ok(bodies)
        });
        // Body files go once their rows are gone for good (and no other row names them).
        body::removed(&self.bodies, result.map_err(db_error)?).await;
        Ok(())
    }
}
