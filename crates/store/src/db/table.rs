//! A James 2.3 mail table (`inbox`, `spool`, `mail`…): its schema, made or adopted on open, and
//! the reading and writing of rows shared by mail repositories, the spool and inboxes.
//!
//! James's columns are written as James wrote them (truncated to James's widths), so a James
//! reading the table sees the mails; Mailroom's own columns hold what James's cannot:
//! `mailroom_envelope` (the whole envelope as JSON, attributes included), `mailroom_header` and
//! `mailroom_body_id` (the header section, and the body: its chunks in `mailroom_bodies`, or
//! its file for `dbfile://`),
//! `mailroom_size` and `mailroom_pop3_size`, and the spool's lease and schedule. A row James
//! wrote has none of them: its message is `message_body`, its envelope James's columns.

use std::collections::HashSet;
use std::sync::Arc;

use mailroom_mailet::{Envelope, Mail, MailAddress, Message};
use sqlx::Row;

use super::body::{self, BareLf, Bodies, Tail, WrittenBody};
use super::{db_error, from_ms, on_pool, sql, Dialect, Pool, WriteTx};
use crate::{Result, StoreError};

/// Mailroom's columns, added to a James table that lacks them.
fn mailroom_columns(d: Dialect) -> Vec<(&'static str, String)> {
    let mut columns = vec![
        ("mailroom_envelope", "TEXT".to_string()),
        ("mailroom_header", d.blob().to_string()),
        ("mailroom_body_id", "TEXT".to_string()),
        ("mailroom_size", "BIGINT".to_string()),
        ("mailroom_pop3_size", "BIGINT".to_string()),
        ("mailroom_lease_id", "BIGINT".to_string()),
        ("mailroom_lease_until", "BIGINT".to_string()),
        ("mailroom_next_attempt", "BIGINT".to_string()),
    ];
    if d == Dialect::Postgres {
        // SQLite orders by rowid; PostgreSQL rows need a column for insertion order.
        columns.push(("mailroom_seq", "BIGSERIAL".to_string()));
    }
    columns
}

/// The advisory lock that serializes schema changes on PostgreSQL: nodes starting together
/// must not race to create the same table or index (`IF NOT EXISTS` does not stop two
/// sessions creating one at once: one fails on a duplicate `pg_class` entry).
const SCHEMA_LOCK: i64 = 727274;

/// Runs `statement`, a `CREATE … IF NOT EXISTS`, under [`SCHEMA_LOCK`] on PostgreSQL.
pub(crate) async fn create_locked(pool: &Pool, statement: String) -> Result<()> {
    let d = pool.dialect();
    let result: sqlx::Result<()> = on_pool!(pool, p => async {
        let mut tx = p.write_tx().await?;
        if d == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(sql(statement)).execute(&mut *tx).await?;
        tx.commit().await
    }
    .await);
    result.map_err(db_error)
}

/// Creates table `table` with James's columns if it does not exist, and adds Mailroom's.
pub(crate) async fn ensure(bodies: &Bodies, table: &str) -> Result<()> {
    let pool = &bodies.pool;
    let d = pool.dialect();
    let (blob, ts) = (
        d.blob(),
        match d {
            Dialect::Sqlite => "BIGINT",
            Dialect::Postgres => "TIMESTAMP",
        },
    );
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            message_name VARCHAR(200) NOT NULL,
            repository_name VARCHAR(255) NOT NULL,
            message_state VARCHAR(30) NOT NULL,
            error_message VARCHAR(200) NULL,
            sender VARCHAR(255) NULL,
            recipients TEXT NOT NULL,
            remote_host VARCHAR(255) NOT NULL,
            remote_addr VARCHAR(20) NOT NULL,
            message_body {blob} NOT NULL,
            message_attributes {blob} NULL,
            last_updated {ts} NOT NULL,
            PRIMARY KEY (repository_name, message_name)
        )"
    );
    let index = format!(
        "CREATE INDEX IF NOT EXISTS {table}_mailroom_due \
         ON {table} (repository_name, mailroom_next_attempt)"
    );
    let columns = mailroom_columns(d);
    let result: sqlx::Result<()> = on_pool!(pool, p => async {
        let mut tx = p.write_tx().await?;
        if d == Dialect::Postgres {
            // Nodes starting together must not race to create the same table.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(sql(create)).execute(&mut *tx).await?;
        let existing: HashSet<String> = match d {
            Dialect::Sqlite => sqlx::query_scalar(sql(format!(
                "SELECT name FROM pragma_table_info('{table}')"
            )))
            .fetch_all(&mut *tx)
            .await?,
            Dialect::Postgres => sqlx::query_scalar(
                "SELECT column_name::TEXT FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = current_schema()",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await?,
        }
        .into_iter()
        .map(|c: String| c.to_ascii_lowercase())
        .collect();
        for (name, kind) in &columns {
            if !existing.contains(*name) {
                sqlx::query(sql(format!("ALTER TABLE {table} ADD COLUMN {name} {kind}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(sql(index)).execute(&mut *tx).await?;
        if d == Dialect::Postgres {
            // The spool leases its oldest due mail: walked in this index's order, not sorted
            // from a scan of every row (SQLite's rowid order is the table's own).
            sqlx::query(sql(format!(
                "CREATE INDEX IF NOT EXISTS {table}_mailroom_order \
                 ON {table} (repository_name, mailroom_seq)"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
    .await);
    result.map_err(db_error)?;
    body::sweep_orphans_from_now_on(bodies, table).await
}

/// The columns a row is read with (see [`StoredRow::from_row`]).
pub(crate) fn select_columns(d: Dialect) -> String {
    format!(
        "message_name, message_state, error_message, sender, recipients, remote_host, \
         remote_addr, {} AS updated_ms, mailroom_envelope, mailroom_header, mailroom_body_id, \
         mailroom_size, mailroom_pop3_size, message_attributes, \
         CASE WHEN mailroom_body_id IS NULL THEN message_body END AS james_body",
        d.updated_ms()
    )
}

/// A row as read, before its body is loaded.
pub(crate) struct StoredRow {
    pub(crate) envelope: Envelope,
    pub(crate) header: Vec<u8>,
    pub(crate) body_id: Option<String>,
    pub(crate) size: u64,
    /// The size POP3 sends (Mailroom's rows).
    pub(crate) pop3_size: Option<i64>,
    /// The whole message of a row James wrote.
    pub(crate) james_body: Option<Vec<u8>>,
}

impl StoredRow {
    pub(crate) fn from_row<R: Row>(row: &R) -> sqlx::Result<StoredRow>
    where
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
        for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database>,
        for<'r> Vec<u8>: sqlx::Type<R::Database>,
        for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
        i64: sqlx::Type<R::Database>,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
    {
        let name: String = row.try_get("message_name")?;
        let envelope_json: Option<String> = row.try_get("mailroom_envelope")?;
        let envelope = match envelope_json
            .as_deref()
            .map(serde_json::from_str::<Envelope>)
        {
            Some(Ok(envelope)) => envelope,
            parsed => {
                if let Some(Err(e)) = parsed {
                    tracing::warn!(
                        "mail {name}: unreadable mailroom_envelope ({e}); using James's columns"
                    );
                }
                james_envelope(row, &name)?
            }
        };
        let header: Option<Vec<u8>> = row.try_get("mailroom_header")?;
        let size: Option<i64> = row.try_get("mailroom_size")?;
        let james_body: Option<Vec<u8>> = row.try_get("james_body")?;
        Ok(StoredRow {
            pop3_size: row.try_get("mailroom_pop3_size")?,
            size: size.map_or(james_body.as_ref().map_or(0, |b| b.len() as u64), |s| {
                s.max(0) as u64
            }),
            envelope,
            header: header.unwrap_or_default(),
            body_id: row.try_get("mailroom_body_id")?,
            james_body,
        })
    }

    /// The body id of a Mailroom row and the bare LFs of its body (from its POP3 size, which
    /// counts those of the header section and of the body).
    pub(crate) fn body_lf(&self) -> Option<(String, BareLf)> {
        let id = self.body_id.clone()?;
        let mut header = BareLf::default();
        header.feed(&self.header);
        let body = self.pop3_size?.checked_sub(self.size as i64)? - header.count as i64;
        let mut lf = BareLf::default();
        lf.count = u64::try_from(body).ok()?;
        Some((id, lf))
    }

    /// The mail, its body loaded (bounded memory: see [`body::load`]).
    pub(crate) async fn into_mail(
        self,
        bodies: &Bodies,
        tmp_dir: &std::path::Path,
    ) -> Result<Mail> {
        let message = match (self.body_id, self.james_body) {
            (Some(id), _) => {
                let body_len =
                    self.size
                        .checked_sub(self.header.len() as u64)
                        .ok_or_else(|| {
                            StoreError::Corrupt(
                                self.envelope.name.clone(),
                                "size below header".into(),
                            )
                        })?;
                Message::new(
                    self.header,
                    body::load(bodies, &id, body_len, tmp_dir).await?,
                )
            }
            // James's DBFile kept the body in a file of its own.
            (None, Some(whole)) => body::james_message(bodies, &self.envelope.name, whole).await?,
            (None, None) => {
                return Err(StoreError::Corrupt(
                    self.envelope.name,
                    "neither a body id nor message_body".into(),
                ))
            }
        };
        let mut envelope = self.envelope;
        envelope.size = message.size();
        Ok(Mail { envelope, message })
    }
}

/// The envelope of a row James wrote. Attributes James serialized as Java objects cannot be
/// read: they are skipped, with one warning per mail.
fn james_envelope<R: Row>(row: &R, name: &str) -> sqlx::Result<Envelope>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database>,
    for<'r> Vec<u8>: sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
    i64: sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let sender: Option<String> = row.try_get("sender")?;
    let recipients: String = row.try_get("recipients")?;
    let attributes: Option<Vec<u8>> = row.try_get("message_attributes")?;
    if attributes.is_some_and(|a| !a.is_empty()) {
        tracing::warn!("mail {name}: its attributes are Java serialized objects, which Mailroom cannot read; skipped");
    }
    let mut envelope = Envelope::new(
        name,
        sender
            .as_deref()
            .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>'))
            .filter(|s| !s.is_empty())
            .and_then(|s| MailAddress::parse(s).ok()),
        recipients
            .split(['\r', '\n', ','])
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .filter_map(|r| match MailAddress::parse(r.trim_matches(['<', '>'])) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!("mail {name}: recipient {r:?} skipped: {e}");
                    None
                }
            })
            .collect(),
    );
    envelope.state = row.try_get("message_state")?;
    envelope.error_message = row.try_get("error_message")?;
    envelope.remote_host = row.try_get("remote_host")?;
    envelope.remote_addr = row.try_get("remote_addr")?;
    let updated: Option<i64> = row.try_get("updated_ms")?;
    envelope.last_updated = updated.unwrap_or(0).max(0) as u64;
    Ok(envelope)
}

/// `text` cut to at most `max` characters (James's column widths).
fn fit(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// What a row is written with: James's columns and Mailroom's.
pub(crate) struct RowValues {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) error_message: Option<String>,
    pub(crate) sender: Option<String>,
    pub(crate) recipients: String,
    pub(crate) remote_host: String,
    pub(crate) remote_addr: String,
    pub(crate) last_updated: i64,
    pub(crate) envelope_json: String,
    pub(crate) header: Vec<u8>,
    pub(crate) body_id: String,
    pub(crate) size: i64,
    pub(crate) pop3_size: i64,
    /// The body's last chunk, written in the transaction that writes the row.
    pub(crate) tail: Tail,
}

impl RowValues {
    /// The values of `envelope` with a header section and a written body.
    pub(crate) fn new(
        envelope: &Envelope,
        header: Vec<u8>,
        body: &WrittenBody,
        header_lf: BareLf,
        body_lf: BareLf,
    ) -> Result<RowValues> {
        let size = header.len() as u64 + body.len;
        let mut envelope = envelope.clone();
        envelope.size = size;
        let envelope_json = serde_json::to_string(&envelope)
            .map_err(|e| StoreError::Corrupt(envelope.name.clone(), e.to_string()))?;
        Ok(RowValues {
            name: envelope.name.clone(),
            state: fit(&envelope.state, 30),
            error_message: envelope.error_message.as_deref().map(|e| fit(e, 200)),
            sender: envelope.sender.as_ref().map(|s| fit(&s.to_string(), 255)),
            recipients: envelope
                .recipients
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\r\n"),
            remote_host: fit(&envelope.remote_host, 255),
            remote_addr: fit(&envelope.remote_addr, 20),
            last_updated: envelope.last_updated.min(i64::MAX as u64) as i64,
            envelope_json,
            header,
            body_id: body.id.clone(),
            size: size as i64,
            pop3_size: (size + header_lf.count + body_lf.count) as i64,
            tail: Tail::default(),
        })
    }

    /// Writes the header of `message` and its body; the values to store it with.
    pub(crate) async fn write(
        bodies: &Bodies,
        table: &str,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<RowValues> {
        let header = message.header_section().to_vec();
        let mut header_lf = BareLf::default();
        header_lf.feed(&header);
        let mut body_lf = header_lf;
        body_lf.count = 0;
        let (body, tail) = body::write_source(bodies, table, message.body(), &mut body_lf).await?;
        match RowValues::new(envelope, header, &body, header_lf, body_lf) {
            Ok(values) => Ok(RowValues { tail, ..values }),
            Err(e) => {
                body::delete_body(bodies, &body.id).await;
                Err(e)
            }
        }
    }
}

/// The column list and placeholders of an insert of [`RowValues`] into repository `$2`.
pub(crate) fn insert_sql(d: Dialect, table: &str) -> String {
    format!(
        "INSERT INTO {table} (message_name, repository_name, message_state, error_message, \
         sender, recipients, remote_host, remote_addr, message_body, last_updated, \
         mailroom_envelope, mailroom_header, mailroom_body_id, mailroom_size, mailroom_pop3_size) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {}, $11, $12, $13, $14, $15)",
        d.updated_param(10)
    )
}

/// `SET` assignments of every [`RowValues`] column, numbered as in [`insert_sql`] (`$2`, the
/// repository, is in the `WHERE`).
pub(crate) fn set_sql(d: Dialect) -> String {
    format!(
        "message_state = $3, error_message = $4, sender = $5, recipients = $6, \
         remote_host = $7, remote_addr = $8, message_body = $9, message_attributes = NULL, \
         last_updated = {}, mailroom_envelope = $11, mailroom_header = $12, \
         mailroom_body_id = $13, mailroom_size = $14, mailroom_pop3_size = $15",
        d.updated_param(10)
    )
}

/// Binds [`RowValues`] as `$1`… `$15` (with the repository name as `$2`).
macro_rules! bind_row {
    ($query:expr, $v:expr, $repository:expr) => {
        $query
            .bind(&$v.name)
            .bind($repository)
            .bind(&$v.state)
            .bind(&$v.error_message)
            .bind(&$v.sender)
            .bind(&$v.recipients)
            .bind(&$v.remote_host)
            .bind(&$v.remote_addr)
            .bind(Vec::<u8>::new())
            .bind($v.last_updated)
            .bind(&$v.envelope_json)
            .bind(&$v.header)
            .bind(&$v.body_id)
            .bind($v.size)
            .bind($v.pop3_size)
    };
}
pub(crate) use bind_row;

/// A mail's row in a table, shared by the spool and the mail repositories.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) pool: Pool,
    /// Where the bodies its rows name are kept (the same pool, and the body files).
    pub(crate) bodies: Bodies,
    pub(crate) name: String,
    pub(crate) tmp_dir: Arc<std::path::PathBuf>,
}

/// Reads one row of `repository` by message name.
pub(crate) async fn fetch_row(
    table: &Table,
    repository: &str,
    name: &str,
) -> Result<Option<StoredRow>> {
    let d = table.pool.dialect();
    let statement = format!(
        "SELECT {} FROM {} WHERE repository_name = $1 AND message_name = $2",
        select_columns(d),
        table.name
    );
    on_pool!(&table.pool, p => {
        let row = sqlx::query(sql(statement))
            .bind(repository)
            .bind(name)
            .fetch_optional(p)
            .await
            .map_err(db_error)?;
        row.as_ref().map(StoredRow::from_row).transpose().map_err(db_error)
    })
}

/// Milliseconds as a `SystemTime`, for the spool's schedule.
pub(crate) fn time_of(ms: Option<i64>) -> Option<std::time::SystemTime> {
    ms.map(from_ms)
}
