//! Message bodies in `mailroom_bodies`, one row per chunk of at most [`CHUNK`] octets: written
//! chunk by chunk as they arrive (each insert commits on its own, so no transaction stays open
//! during a long SMTP DATA; the last, partial chunk goes in the transaction of the row that
//! names the body, so a small body costs no commit of its own), read back one chunk per query.
//! The row that names a body (`mailroom_body_id`) is written after it; a body no row names (a
//! transfer cut off, a crash) is swept when its table is next opened.

use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mailroom_mailet::{BodySource, MemoryBody};
use tokio::io::{AsyncRead, ReadBuf};

use super::{db_error, now_ms, on_pool, sql, Pool};
use crate::{on_blocking_pool, Result, StoreError};

/// The most octets one chunk row holds (and so the most a reader or writer holds at once).
pub(crate) const CHUNK: usize = 256 * 1024;

/// Bodies up to this size are read back into memory; larger ones into an unlinked temporary
/// file, so that memory stays bounded.
const IN_MEMORY: u64 = 1024 * 1024;

/// How old a body no row names must be before it is swept: older than any transfer in progress.
const ORPHAN_AGE_MS: i64 = 24 * 3600 * 1000;

/// A fresh body id for table `table`; the prefix tells which table's rows may name it.
pub(crate) fn new_body_id(table: &str) -> String {
    format!("{table}/{}", mailroom_mailet::new_mail_name())
}

/// Counts LFs without a CR before them, across calls: what POP3 adds when it sends every
/// line ending as CRLF.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BareLf {
    after_cr: bool,
    /// How many were seen.
    pub(crate) count: u64,
}

impl BareLf {
    pub(crate) fn feed(&mut self, octets: &[u8]) {
        for &b in octets {
            if b == b'\n' && !self.after_cr {
                self.count += 1;
            }
            self.after_cr = b == b'\r';
        }
    }
}

/// A body written to the database.
#[derive(Debug)]
pub(crate) struct WrittenBody {
    pub(crate) id: String,
    pub(crate) len: u64,
}

/// Inserts one chunk: `$1` body id, `$2` sequence number, `$3` data, `$4` time written.
pub(crate) const INSERT_CHUNK: &str =
    "INSERT INTO mailroom_bodies (body_id, seq, data, written_at) \
                                       VALUES ($1, $2, $3, $4)";

/// The last, partial chunk of a body, not written yet: it goes in the transaction that writes
/// the row naming the body, so that a body of one chunk and its row cost one commit.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) seq: i32,
    pub(crate) data: Vec<u8>,
}

/// Inserts a [`Tail`] (if it has octets) with the executor `$c` of a write transaction.
macro_rules! insert_tail {
    ($c:expr, $body_id:expr, $tail:expr) => {
        if !$tail.data.is_empty() {
            sqlx::query($crate::db::body::INSERT_CHUNK)
                .bind($body_id)
                .bind($tail.seq)
                .bind(&$tail.data)
                .bind($crate::db::now_ms())
                .execute($c)
                .await?;
        }
    };
}
pub(crate) use insert_tail;

async fn write_chunk(pool: &Pool, body_id: &str, seq: i32, data: &[u8]) -> Result<()> {
    on_pool!(pool, p => sqlx::query(INSERT_CHUNK)
        .bind(body_id)
        .bind(seq)
        .bind(data)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()))
    .map_err(db_error)?;
    Ok(())
}

/// Chunk `seq` of a body; `None` past its end.
pub(crate) async fn read_chunk(pool: &Pool, body_id: &str, seq: i32) -> Result<Option<Vec<u8>>> {
    let statement = "SELECT data FROM mailroom_bodies WHERE body_id = $1 AND seq = $2";
    on_pool!(pool, p => sqlx::query_scalar(statement)
        .bind(body_id)
        .bind(seq)
        .fetch_optional(p)
        .await)
    .map_err(db_error)
}

/// Deletes a body (best effort, for cleanup after a failure: a leftover is swept later).
pub(crate) async fn delete_body(pool: &Pool, body_id: &str) {
    let statement = "DELETE FROM mailroom_bodies WHERE body_id = $1";
    let result =
        on_pool!(pool, p => sqlx::query(statement).bind(body_id).execute(p).await.map(|_| ()));
    if let Err(e) = result {
        tracing::warn!("database: cannot remove body {body_id} (it will be swept later): {e}");
    }
}

/// Deletes the bodies of `table` that no row names and that are old enough not to be in
/// transfer. Rows of any table may name them (an inbox row names the body of the spool mail
/// it was delivered from), so every table with a `mailroom_body_id` column is looked at.
pub(crate) async fn sweep_orphans(pool: &Pool, table: &str) -> Result<u64> {
    let list = match pool.dialect() {
        super::Dialect::Sqlite => {
            "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND p.name = 'mailroom_body_id'"
        }
        super::Dialect::Postgres => {
            "SELECT table_name::TEXT FROM information_schema.columns \
             WHERE column_name = 'mailroom_body_id' AND table_schema = current_schema()"
        }
    };
    let tables: Vec<String> =
        on_pool!(pool, p => sqlx::query_scalar(list).fetch_all(p).await).map_err(db_error)?;
    let mut naming: Vec<String> = tables
        .iter()
        .filter_map(|t| super::table_name(t).ok())
        .map(|t| format!("SELECT mailroom_body_id FROM {t} WHERE mailroom_body_id IS NOT NULL"))
        .collect();
    if naming.is_empty() {
        naming.push(format!(
            "SELECT mailroom_body_id FROM {table} WHERE mailroom_body_id IS NOT NULL"
        ));
    }
    let prefix = format!("{table}/");
    let statement = format!(
        "DELETE FROM mailroom_bodies WHERE substr(body_id, 1, $2) = $1 AND written_at < $3 \
         AND body_id NOT IN ({})",
        naming.join(" UNION ALL ")
    );
    let done = on_pool!(pool, p => sqlx::query(sql(statement))
        .bind(&prefix)
        .bind(prefix.len() as i32)
        .bind(now_ms() - ORPHAN_AGE_MS)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
    .map_err(db_error)?;
    Ok(done)
}

/// Writes a body chunk by chunk as its octets arrive.
pub(crate) struct BodyWriter {
    pool: Pool,
    id: String,
    buf: Vec<u8>,
    seq: i32,
    len: u64,
}

impl BodyWriter {
    pub(crate) fn new(pool: Pool, table: &str) -> BodyWriter {
        BodyWriter {
            pool,
            id: new_body_id(table),
            buf: Vec::new(),
            seq: 0,
            len: 0,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether a chunk reached the database (so that there is something to clean up).
    pub(crate) fn wrote_any(&self) -> bool {
        self.seq > 0
    }

    pub(crate) async fn write(&mut self, mut octets: &[u8]) -> Result<()> {
        self.len += octets.len() as u64;
        while !octets.is_empty() {
            let take = (CHUNK - self.buf.len()).min(octets.len());
            self.buf.extend_from_slice(&octets[..take]);
            octets = &octets[take..];
            if self.buf.len() == CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            write_chunk(&self.pool, &self.id, self.seq, &self.buf).await?;
            self.seq += 1;
            self.buf.clear();
        }
        Ok(())
    }

    /// Ends the body: its full chunks are in the database, its last one is handed back to be
    /// written with the row that names the body.
    pub(crate) fn finish(self) -> (WrittenBody, Tail) {
        let tail = Tail {
            seq: self.seq,
            data: self.buf,
        };
        let body = WrittenBody {
            id: self.id,
            len: self.len,
        };
        (body, tail)
    }
}

/// Writes `source` (a body held in memory or a file) to the database, counting its bare LFs
/// into `lf`. A body read from a file is read on the blocking pool, a chunk at a time. Its
/// last chunk is handed back (see [`BodyWriter::finish`]).
pub(crate) async fn write_source(
    pool: &Pool,
    table: &str,
    source: &Arc<dyn BodySource>,
    lf: &mut BareLf,
) -> Result<(WrittenBody, Tail)> {
    let mut writer = BodyWriter::new(pool.clone(), table);
    let result = async {
        let mut reader = Some(source.open()?);
        loop {
            let mut taken = reader.take().expect("reader is put back after each chunk");
            let (taken, chunk) = if source.len() <= 64 * 1024 {
                let chunk = read_up_to(&mut taken, CHUNK);
                (taken, chunk)
            } else {
                on_blocking_pool(move || {
                    let chunk = read_up_to(&mut taken, CHUNK);
                    (taken, chunk)
                })
                .await?
            };
            let chunk = chunk?;
            if chunk.is_empty() {
                break;
            }
            lf.feed(&chunk);
            writer.write(&chunk).await?;
            reader = Some(taken);
        }
        Ok::<(), StoreError>(())
    }
    .await;
    match result {
        Ok(()) => Ok(writer.finish()),
        Err(e) => {
            if writer.wrote_any() {
                delete_body(pool, writer.id()).await;
            }
            Err(e)
        }
    }
}

fn read_up_to(reader: &mut Box<dyn Read + Send>, max: usize) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(max.min(64 * 1024));
    reader.by_ref().take(max as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// Reads a body of `len` octets back: into memory when small, else into an unlinked file in
/// `tmp_dir`, one chunk at a time.
pub(crate) async fn load(
    pool: &Pool,
    body_id: &str,
    len: u64,
    tmp_dir: &Path,
) -> Result<Arc<dyn BodySource>> {
    let corrupt = |why: String| StoreError::Corrupt(body_id.to_string(), why);
    if len <= IN_MEMORY {
        let mut all = Vec::with_capacity(len as usize);
        let mut seq = 0;
        // Read until `len` octets are there: no query to learn that there is no more.
        while (all.len() as u64) < len {
            let Some(chunk) = read_chunk(pool, body_id, seq).await? else {
                break;
            };
            all.extend_from_slice(&chunk);
            seq += 1;
        }
        if all.len() as u64 != len {
            return Err(corrupt(format!("{} octets, expected {len}", all.len())));
        }
        return Ok(Arc::new(MemoryBody::new(all)));
    }
    let path = tmp_dir.join(format!("body-{}", mailroom_mailet::new_mail_name()));
    let mut file = on_blocking_pool({
        let path = path.clone();
        move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // Unlinked at once: the open file is all there is, and it goes with the last reader.
            std::fs::remove_file(&path)?;
            Ok::<_, io::Error>(file)
        }
    })
    .await??;
    let mut written = 0u64;
    let mut seq = 0;
    while let Some(chunk) = read_chunk(pool, body_id, seq).await? {
        written += chunk.len() as u64;
        seq += 1;
        if written > len {
            break;
        }
        file = on_blocking_pool(move || file.write_all(&chunk).map(|()| file)).await??;
    }
    if written != len {
        return Err(corrupt(format!("{written} octets, expected {len}")));
    }
    Ok(Arc::new(crate::file::fsutil::FileBody::new(
        Arc::new(file),
        0,
        len,
    )))
}

type ChunkFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>>> + Send>>;

/// A body streamed from the database chunk by chunk (a POP3 RETR).
pub(crate) struct ChunkStream {
    pool: Pool,
    body_id: String,
    next: i32,
    buf: Vec<u8>,
    pos: usize,
    fetch: Option<ChunkFuture>,
    done: bool,
}

impl ChunkStream {
    pub(crate) fn new(pool: Pool, body_id: String) -> ChunkStream {
        ChunkStream {
            pool,
            body_id,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            fetch: None,
            done: false,
        }
    }
}

impl AsyncRead for ChunkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - this.pos);
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            let fetch = this.fetch.get_or_insert_with(|| {
                let (pool, id, seq) = (this.pool.clone(), this.body_id.clone(), this.next);
                Box::pin(async move { read_chunk(&pool, &id, seq).await })
            });
            match fetch.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    this.fetch = None;
                    match result {
                        Ok(Some(chunk)) => {
                            this.buf = chunk;
                            this.pos = 0;
                            this.next += 1;
                        }
                        Ok(None) => this.done = true,
                        Err(e) => return Poll::Ready(Err(io::Error::other(e.to_string()))),
                    }
                }
            }
        }
    }
}
