//! Message bodies in `mailroom_bodies`, one row per chunk of at most [`CHUNK`] octets: written
//! chunk by chunk as they arrive (each insert commits on its own, so no transaction stays open
//! during a long SMTP DATA; the last, partial chunk goes in the transaction of the row that
//! names the body, so a small body costs no commit of its own), read back one chunk per query.
//! The row that names a body (`mailroom_body_id`) is written after it; a body no row names (a
//! transfer cut off, a crash) is swept when its table is opened, and every six hours after.
//!
//! [`Bodies`] says where a repository's bodies go: chunks in `mailroom_bodies` (`db://`) or
//! files under the home ([`super::body_files`], `dbfile://`). Every repository reads either
//! kind, told apart by the id, so a repository moved from one URL to the other keeps its mail.

use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mailroom_mailet::{BodySource, MemoryBody};
use tokio::io::{AsyncRead, ReadBuf};

use super::body_files::{self, BodyFiles, FileWriter};
use super::{db_error, now_ms, on_pool, sql, Pool};
use crate::{on_blocking_pool, MessageStream, Result, StoreError};

/// Where a repository's bodies are kept: the pool (chunks, and the rows) and the data
/// source's body files.
#[derive(Clone, Debug)]
pub(crate) struct Bodies {
    pub(crate) pool: Pool,
    /// The data source's body files (`var/dbfile/<source>`): read whichever way new bodies go.
    pub(crate) files: Arc<BodyFiles>,
    /// Whether new bodies go to files (`dbfile://`) rather than to `mailroom_bodies`.
    pub(crate) write_files: bool,
}

impl Bodies {
    /// Bodies written to `mailroom_bodies` (or to files with `write_files`).
    pub(crate) fn new(pool: Pool, files: Arc<BodyFiles>, write_files: bool) -> Bodies {
        Bodies {
            pool,
            files,
            write_files,
        }
    }
}

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

/// Deletes a body (best effort, for cleanup after a failure: a leftover is swept later). A
/// body file goes only if the database says no row names it (see [`body_files::discard`]).
pub(crate) async fn delete_body(bodies: &Bodies, body_id: &str) {
    if body_files::is_file_id(body_id) {
        return body_files::discard(&bodies.files, &bodies.pool, body_id).await;
    }
    let pool = &bodies.pool;
    // Not if a row names it: a failed COMMIT may have committed all the same.
    let Some(Ok(table)) = body_id.split_once('/').map(|(t, _)| super::table_name(t)) else {
        return;
    };
    let statement = format!(
        "DELETE FROM mailroom_bodies WHERE body_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM {table} WHERE mailroom_body_id = $1)"
    );
    let result = on_pool!(pool, p => sqlx::query(sql(statement))
        .bind(body_id)
        .execute(p)
        .await
        .map(|_| ()));
    if let Err(e) = result {
        tracing::warn!("database: cannot remove body {body_id} (it will be swept later): {e}");
    }
}

/// After a transaction that deleted rows (and their chunks, when no other row names them)
/// has committed: removes the body files of those rows, named by `ids`, that no row names
/// any more (chunk ids among them are skipped: they went with the transaction).
pub(crate) async fn removed(bodies: &Bodies, ids: Vec<String>) {
    for id in ids.iter().filter(|id| body_files::is_file_id(id)) {
        body_files::discard(&bodies.files, &bodies.pool, id).await;
    }
}

/// How often a table's orphan bodies are swept again while the server runs (the first sweep
/// is when the table is opened): a body whose row's COMMIT failed without saying whether it
/// committed (the database went away) is kept for the sweep, and not until the next start.
#[cfg(not(test))]
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
#[cfg(test)]
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

/// Sweeps `table`'s orphans now, and then every [`SWEEP_EVERY`] until the data source is
/// closed: one task per table and body directory, however many repositories open the table.
pub(crate) async fn sweep_orphans_from_now_on(bodies: &Bodies, table: &str) -> Result<()> {
    type Key = (std::path::PathBuf, String);
    static SWEEPING: std::sync::Mutex<Vec<Key>> = std::sync::Mutex::new(Vec::new());
    /// Its table's entry in `SWEEPING`, removed when its task ends (or its runtime drops it).
    struct Sweeping(Key);
    impl Drop for Sweeping {
        fn drop(&mut self) {
            let mut sweeping = SWEEPING.lock().unwrap_or_else(|p| p.into_inner());
            sweeping.retain(|k| *k != self.0);
        }
    }

    sweep_orphans(bodies, table).await?;
    let key = (bodies.files.root().to_path_buf(), table.to_string());
    {
        let mut sweeping = SWEEPING.lock().unwrap_or_else(|p| p.into_inner());
        if sweeping.contains(&key) {
            return Ok(());
        }
        sweeping.push(key.clone());
    }
    let sweeping = Sweeping(key);
    let bodies = bodies.clone();
    tokio::spawn(async move {
        let (_, table) = &sweeping.0;
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            if bodies.pool.is_closed() {
                return;
            }
            if let Err(e) = sweep_orphans(&bodies, table).await {
                // The database is away: the next sweep takes them.
                tracing::warn!(%table, error = %e, "cannot sweep orphan bodies now");
            }
        }
    });
    Ok(())
}

/// Deletes the bodies of `table` that no row names and that are old enough not to be in
/// transfer: chunks, and body files. Rows of any table may name them (an inbox row names the
/// body of the spool mail it was delivered from), so every table with a `mailroom_body_id`
/// column is looked at.
pub(crate) async fn sweep_orphans(bodies: &Bodies, table: &str) -> Result<u64> {
    let naming = naming_rows(&bodies.pool, table).await?;
    let files = body_files::sweep(
        &bodies.files,
        &bodies.pool,
        table,
        &naming,
        std::time::Duration::from_millis(ORPHAN_AGE_MS as u64),
    )
    .await?;
    Ok(files + sweep_chunks(&bodies.pool, table, &naming).await?)
}

/// A query of every body id a row names, in every table that has a `mailroom_body_id`
/// column (`table` at least).
pub(crate) async fn naming_rows(pool: &Pool, table: &str) -> Result<String> {
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
    let mut tables: Vec<String> =
        on_pool!(pool, p => sqlx::query_scalar(list).fetch_all(p).await).map_err(db_error)?;
    tables.push(table.to_string());
    tables.sort();
    tables.dedup();
    Ok(tables
        .iter()
        .filter_map(|t| super::table_name(t).ok())
        .map(|t| format!("SELECT mailroom_body_id FROM {t} WHERE mailroom_body_id IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" UNION ALL "))
}

async fn sweep_chunks(pool: &Pool, table: &str, naming: &str) -> Result<u64> {
    let prefix = format!("{table}/");
    let statement = format!(
        "DELETE FROM mailroom_bodies WHERE substr(body_id, 1, $2) = $1 AND written_at < $3 \
         AND body_id NOT IN ({naming})"
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

/// Writes a body as its octets arrive: chunk by chunk to `mailroom_bodies`, or to a file.
pub(crate) struct BodyWriter {
    pool: Pool,
    id: String,
    buf: Vec<u8>,
    seq: i32,
    len: u64,
    /// The body's file, for a `dbfile://` repository.
    file: Option<FileWriter>,
}

impl BodyWriter {
    pub(crate) fn new(bodies: Bodies, table: &str) -> BodyWriter {
        let file = bodies
            .write_files
            .then(|| FileWriter::new(bodies.files.clone(), table));
        BodyWriter {
            pool: bodies.pool,
            id: file
                .as_ref()
                .map_or_else(|| new_body_id(table), FileWriter::id),
            buf: Vec::new(),
            seq: 0,
            len: 0,
            file,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether a chunk reached the database (so that there is something to clean up; a
    /// body file not yet placed removes itself).
    pub(crate) fn wrote_any(&self) -> bool {
        self.seq > 0
    }

    pub(crate) async fn write(&mut self, mut octets: &[u8]) -> Result<()> {
        if let Some(file) = &mut self.file {
            return file.write(octets).await;
        }
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

    /// Ends the body. A body file is then whole and durable (fsync'd and renamed into place,
    /// its directory fsync'd); of a chunked body the full chunks are in the database and the
    /// last one is handed back, to be written with the row that names the body.
    pub(crate) async fn finish(mut self) -> Result<(WrittenBody, Tail)> {
        if let Some(file) = self.file.take() {
            let len = file.finish().await?;
            return Ok((WrittenBody { id: self.id, len }, Tail::default()));
        }
        let tail = Tail {
            seq: self.seq,
            data: std::mem::take(&mut self.buf),
        };
        let body = WrittenBody {
            id: self.id,
            len: self.len,
        };
        Ok((body, tail))
    }
}

/// Writes `source` (a body held in memory or a file) to the database, counting its bare LFs
/// into `lf`. A body read from a file is read on the blocking pool, a chunk at a time. Its
/// last chunk is handed back (see [`BodyWriter::finish`]).
pub(crate) async fn write_source(
    bodies: &Bodies,
    table: &str,
    source: &Arc<dyn BodySource>,
    lf: &mut BareLf,
) -> Result<(WrittenBody, Tail)> {
    let mut writer = BodyWriter::new(bodies.clone(), table);
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
        Ok(()) => {
            let id = writer.id().to_string();
            match writer.finish().await {
                Ok(written) => Ok(written),
                Err(e) => {
                    delete_body(bodies, &id).await;
                    Err(e)
                }
            }
        }
        Err(e) => {
            if writer.wrote_any() {
                delete_body(bodies, writer.id()).await;
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

/// Reads a body of `len` octets back: a body file where it is; chunks into memory when small,
/// else into an unlinked file in `tmp_dir`, one chunk at a time.
pub(crate) async fn load(
    bodies: &Bodies,
    body_id: &str,
    len: u64,
    tmp_dir: &Path,
) -> Result<Arc<dyn BodySource>> {
    if body_files::is_file_id(body_id) {
        return Ok(Arc::new(
            body_files::load(&bodies.files, body_id, len).await?,
        ));
    }
    let pool = &bodies.pool;
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

/// A body streamed out (a POP3 RETR): its file, or its chunks one query at a time. With its
/// length known, a body that ends short (a chunk or a file's tail lost from a damaged store)
/// is an error at its end rather than passing for the whole message, which a POP3 client
/// would then delete.
pub(crate) async fn open_stream(
    bodies: &Bodies,
    body_id: &str,
    len: Option<u64>,
) -> Result<MessageStream> {
    let stream: MessageStream = if body_files::is_file_id(body_id) {
        Box::new(body_files::open_stream(&bodies.files, body_id).await?)
    } else {
        Box::new(ChunkStream::new(bodies.pool.clone(), body_id.to_string()))
    };
    Ok(match len {
        Some(len) => Box::new(NotShort {
            inner: stream,
            left: len,
        }),
        None => stream,
    })
}

/// A stream that fails with [`io::ErrorKind::UnexpectedEof`] when it ends before `left`
/// more octets.
struct NotShort {
    inner: MessageStream,
    left: u64,
}

impl AsyncRead for NotShort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = out.filled().len();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {
                let read = (out.filled().len() - before) as u64;
                if read == 0 && self.left > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the stored body is {} octets short", self.left),
                    )));
                }
                self.left = self.left.saturating_sub(read);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The message of a row James wrote (no `mailroom_body_id`): its `message_body`, followed,
/// when James's DBFile kept the body in its `filestore`, by that file (read where it is).
pub(crate) async fn james_message(
    bodies: &Bodies,
    name: &str,
    stored: Vec<u8>,
) -> Result<mailroom_mailet::Message> {
    use mailroom_mailet::Message;
    match body_files::james_body(&bodies.files, name).await? {
        Some(body) if mailroom_mailet::header_section_len(&stored) == stored.len() => {
            Ok(Message::new(stored, Arc::new(body)))
        }
        Some(_) => {
            tracing::warn!(
                "mail {name}: James's message_body is more than a header section; \
                 its filestore file is not read"
            );
            Ok(Message::from_bytes(&stored))
        }
        None => Ok(Message::from_bytes(&stored)),
    }
}

/// A row James wrote, streamed out: `message_body`, then James's body file if there is one.
pub(crate) async fn james_stream(
    bodies: &Bodies,
    name: &str,
    stored: Vec<u8>,
) -> Result<MessageStream> {
    use tokio::io::AsyncReadExt;
    if mailroom_mailet::header_section_len(&stored) == stored.len() {
        if let Some(file) = body_files::james_open(&bodies.files, name).await? {
            return Ok(Box::new(AsyncReadExt::chain(io::Cursor::new(stored), file)));
        }
    }
    Ok(Box::new(io::Cursor::new(stored)))
}

/// Whether James 2.3's DBFile `filestore` (`var/dbmail`) is there to read bodies from.
pub(crate) fn james_filestore(bodies: &Bodies) -> bool {
    bodies.files.james_dir().is_dir()
}

/// What James's body file of mail `name` adds to the POP3 size of its row (`None`: none).
pub(crate) async fn james_wire_size(bodies: &Bodies, name: &str) -> Result<Option<u64>> {
    body_files::james_wire_size(&bodies.files, name).await
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
