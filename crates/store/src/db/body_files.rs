//! Message bodies as files, for `dbfile://` repositories: the envelope and index stay in the
//! table's row as with `db://`, and the body is one file under the home,
//! `var/dbfile/<data source>/<table>/<unique>`, named by the row's `mailroom_body_id`
//! (`dbfile:<table>/<unique>`).
//!
//! A body is streamed into `<table>/tmp/`, fsync'd, renamed into `<table>/`, and that directory
//! is fsync'd before the caller commits the row that names it: a crash in between leaves a
//! file no row names (an orphan, swept a day later), never a row without its body. A file is
//! removed only after the transaction that removed its row has committed.
//!
//! This module owns the files only; which rows name them is the table code's business.
//!
//! It also reads the bodies of rows James 2.3's DBFile repositories wrote: James put the
//! header section in `message_body` and the body in its `filestore` (`var/dbmail/`), in a file
//! named by the mail name alone, `<name in upper-case hex>.Repository.FileStreamStore`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{db_error, on_pool, sql, Pool};
use crate::file::fsutil::{self, FileBody};
use crate::{on_blocking_pool, Result, StoreError};

/// How a file body's id starts in `mailroom_body_id` (a chunked body's id starts with its
/// table's name, which cannot contain `:`).
pub(crate) const PREFIX: &str = "dbfile:";

/// Octets gathered before one write to the file (and so the most a writer holds).
const WRITE_BUFFER: usize = 256 * 1024;

/// The body files of one data source: `<root>/<table>/<unique>`.
#[derive(Debug)]
pub(crate) struct BodyFiles {
    root: PathBuf,
    /// James 2.3's `filestore` directory (`var/dbmail` under the home), read only.
    james: PathBuf,
}

impl BodyFiles {
    /// The body files under `root` (`var/dbfile/<data source>`), and James's under `james`;
    /// nothing is created.
    pub(crate) fn new(root: PathBuf, james: PathBuf) -> BodyFiles {
        BodyFiles { root, james }
    }

    /// Where this data source's body files are (`var/dbfile/<source>`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// James's `filestore` directory.
    pub(crate) fn james_dir(&self) -> &Path {
        &self.james
    }

    /// The file James 2.3's DBFile kept the body of mail `name` in.
    fn james_path(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02X}")).collect();
        self.james.join(format!("{hex}.Repository.FileStreamStore"))
    }

    /// The directory of `table`'s bodies.
    pub(crate) fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    /// The file of body `id`, checked so that a row cannot name a file elsewhere.
    pub(crate) fn path_of(&self, id: &str) -> Result<PathBuf> {
        let bad = || StoreError::Corrupt(id.to_string(), "not a body file id".into());
        let rest = id.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (table, unique) = rest.split_once('/').ok_or_else(bad)?;
        let plain = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
        };
        if !plain(table, b"") || !plain(unique, b"-.") || unique.starts_with('.') {
            return Err(bad());
        }
        Ok(self.root.join(table).join(unique))
    }
}

/// Whether `id` names a body file rather than chunks in `mailroom_bodies`.
pub(crate) fn is_file_id(id: &str) -> bool {
    id.starts_with(PREFIX)
}

/// A body being written to a file: created on the first write, in `<table>/tmp/`.
pub(crate) struct FileWriter {
    files: Arc<BodyFiles>,
    table: String,
    unique: String,
    file: Option<File>,
    buf: Vec<u8>,
    len: u64,
    /// Set once the temporary file may exist (its creation was tried).
    created: bool,
    /// Set once the file is renamed into place: from then on it is the caller's to remove.
    placed: bool,
}

impl FileWriter {
    pub(crate) fn new(files: Arc<BodyFiles>, table: &str) -> FileWriter {
        FileWriter {
            files,
            table: table.to_string(),
            unique: mailroom_mailet::new_mail_name(),
            file: None,
            buf: Vec::new(),
            len: 0,
            created: false,
            placed: false,
        }
    }

    /// The id the row will name the body by.
    pub(crate) fn id(&self) -> String {
        format!("{PREFIX}{}/{}", self.table, self.unique)
    }

    fn tmp_path(&self) -> PathBuf {
        self.files
            .table_dir(&self.table)
            .join("tmp")
            .join(&self.unique)
    }

    pub(crate) async fn write(&mut self, octets: &[u8]) -> Result<()> {
        self.len += octets.len() as u64;
        self.buf.extend_from_slice(octets);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is buffered, creating the file first if need be.
    async fn flush(&mut self) -> Result<()> {
        let file = self.file.take();
        let mut buf = std::mem::take(&mut self.buf);
        let tmp = self.tmp_path();
        self.created = true;
        let (file, buf) = on_blocking_pool(move || {
            let mut file = match file {
                Some(file) => file,
                None => {
                    fsutil::create_dir_durable(tmp.parent().expect("tmp/ has a parent"))?;
                    File::options().write(true).create_new(true).open(&tmp)?
                }
            };
            file.write_all(&buf)?;
            buf.clear();
            Ok::<_, io::Error>((file, buf))
        })
        .await??;
        self.file = Some(file);
        self.buf = buf;
        Ok(())
    }

    /// Makes the body durable in its place (data fsync'd, renamed, directory fsync'd): the
    /// row naming it may be committed once this returns.
    pub(crate) async fn finish(mut self) -> Result<u64> {
        self.flush().await?;
        let file = self.file.take().expect("created by flush");
        let tmp = self.tmp_path();
        let dir = self.files.table_dir(&self.table);
        let target = dir.join(&self.unique);
        on_blocking_pool(move || {
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &target)?;
            fsutil::sync_dir(&dir)
        })
        .await??;
        self.placed = true;
        Ok(self.len)
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Not placed: the temporary file is nobody's (an unlink is quick enough to do here).
        if self.created && !self.placed {
            let _ = fs::remove_file(self.tmp_path());
        }
    }
}

/// Opens body file `id` of `len` octets as a message body (read where it is: no copy).
pub(crate) async fn load(files: &BodyFiles, id: &str, len: u64) -> Result<FileBody> {
    let path = files.path_of(id)?;
    let id = id.to_string();
    on_blocking_pool(move || {
        let file = File::open(&path).map_err(|e| missing(&id, &path, e))?;
        let actual = file.metadata()?.len();
        if actual != len {
            return Err(StoreError::Corrupt(
                id,
                format!(
                    "body file {} has {actual} octets, expected {len}",
                    path.display()
                ),
            ));
        }
        Ok(FileBody::new(Arc::new(file), 0, len))
    })
    .await?
}

/// Opens body file `id` for streaming (a POP3 RETR).
pub(crate) async fn open_stream(files: &BodyFiles, id: &str) -> Result<tokio::fs::File> {
    let path = files.path_of(id)?;
    tokio::fs::File::open(&path)
        .await
        .map_err(|e| missing(id, &path, e))
}

/// A body file that cannot be opened: [`StoreError::Corrupt`] when it is not there (a row
/// without its body is damage, not a passing fault), the I/O error otherwise.
fn missing(id: &str, path: &Path, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::Corrupt(
            id.to_string(),
            format!("its body file {} is missing", path.display()),
        )
    } else {
        StoreError::Io(io::Error::new(
            e.kind(),
            format!("body file {}: {e}", path.display()),
        ))
    }
}

/// The body James 2.3's DBFile kept for mail `name`, if there is one (a row of James's whose
/// `message_body` is then the header section alone).
pub(crate) async fn james_body(files: &BodyFiles, name: &str) -> Result<Option<FileBody>> {
    let path = files.james_path(name);
    on_blocking_pool(move || match File::open(&path) {
        Ok(file) => {
            let len = file.metadata()?.len();
            Ok(Some(FileBody::new(Arc::new(file), 0, len)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io(e)),
    })
    .await?
}

/// James's body file of mail `name`, opened for streaming, if there is one.
pub(crate) async fn james_open(files: &BodyFiles, name: &str) -> Result<Option<tokio::fs::File>> {
    match tokio::fs::File::open(files.james_path(name)).await {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// The octets POP3 sends of James's body file of mail `name` (every bare LF as CRLF), read
/// once through; `None` when there is no such file. Whether the file ends after a CR matters
/// not: the header section before it ends with a line end.
pub(crate) async fn james_wire_size(files: &BodyFiles, name: &str) -> Result<Option<u64>> {
    if !files.james.is_dir() {
        return Ok(None);
    }
    let path = files.james_path(name);
    on_blocking_pool(move || {
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let mut lf = super::body::BareLf::default();
        let mut total = 0u64;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            lf.feed(&buf[..n]);
            total += n as u64;
        }
        Ok(Some(total + lf.count))
    })
    .await?
}

/// Removes body files whose rows are gone (committed). A file that cannot be removed stays as
/// an orphan for the sweep.
pub(crate) async fn remove(files: &Arc<BodyFiles>, ids: Vec<String>) {
    let files = files.clone();
    let result = on_blocking_pool(move || {
        for id in ids {
            match files.path_of(&id).map(fs::remove_file) {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Ok(Err(e)) => {
                    tracing::warn!("dbfile: cannot remove body {id} (it will be swept): {e}")
                }
                Err(e) => tracing::warn!("dbfile: {e}"),
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::warn!("dbfile: removing bodies: {e}");
    }
}

/// Removes body file `id` unless a row names it: after a write that failed (a failed `COMMIT`
/// may have committed all the same: the connection broke before the answer), or after a row
/// that named it was deleted (other rows may name it too: the inbox rows of one delivery name
/// the spool mail's body). A row must never lose its body: when the database cannot say, the
/// file stays for the sweep.
pub(crate) async fn discard(files: &Arc<BodyFiles>, pool: &Pool, id: &str) {
    let table = id
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .map(|(table, _)| table);
    let Some(Ok(table)) = table.map(super::table_name) else {
        return;
    };
    let named = async {
        let naming = super::body::naming_rows(pool, &table).await?;
        let statement =
            format!("SELECT COUNT(*) FROM ({naming}) AS named WHERE mailroom_body_id = $1");
        on_pool!(pool, p => sqlx::query_scalar::<_, i64>(sql(statement))
            .bind(id)
            .fetch_one(p)
            .await)
        .map_err(db_error)
    };
    match named.await {
        Ok(0) => remove(files, vec![id.to_string()]).await,
        Ok(_) => {}
        Err(e) => tracing::info!(
            "dbfile: body {id} kept for the sweep (cannot tell whether a row names it: {e})"
        ),
    }
}

/// Removes `table`'s body files that are older than `age` and that no row names (`naming`:
/// see [`super::body::naming_rows`]), and temporary files older than `age` (a transfer cut off
/// by a crash). Returns how many.
pub(crate) async fn sweep(
    files: &Arc<BodyFiles>,
    pool: &Pool,
    table: &str,
    naming: &str,
    age: Duration,
) -> Result<u64> {
    let dir = files.table_dir(table);
    let (old, mut removed) = on_blocking_pool(move || old_files(&dir, age)).await??;
    if old.is_empty() {
        return Ok(removed);
    }
    let statement = format!(
        "SELECT mailroom_body_id FROM ({naming}) AS named \
         WHERE substr(mailroom_body_id, 1, $2) = $1"
    );
    let prefix = format!("{PREFIX}{table}/");
    let named: Vec<String> = on_pool!(pool, p => sqlx::query_scalar(sql(statement))
        .bind(&prefix)
        .bind(prefix.len() as i32)
        .fetch_all(p)
        .await)
    .map_err(db_error)?;
    let named: HashSet<String> = named.into_iter().collect();
    let orphans: Vec<String> = old
        .into_iter()
        .map(|unique| format!("{prefix}{unique}"))
        .filter(|id| !named.contains(id))
        .collect();
    removed += orphans.len() as u64;
    if !orphans.is_empty() {
        tracing::info!(
            "dbfile: {} body file(s) of table {table} that no row names are removed",
            orphans.len()
        );
    }
    remove(files, orphans).await;
    Ok(removed)
}

/// The names of the body files in `dir` older than `age`; temporary files that old are
/// removed at once (counted in the second value).
fn old_files(dir: &Path, age: Duration) -> io::Result<(Vec<String>, u64)> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let old = |entry: &fs::DirEntry| {
        entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t <= cutoff)
    };
    let mut names = Vec::new();
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((names, 0)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "tmp" {
            for tmp in fs::read_dir(entry.path())? {
                let tmp = tmp?;
                if old(&tmp) && fs::remove_file(tmp.path()).is_ok() {
                    removed += 1;
                }
            }
        } else if entry.file_type()?.is_file() && old(&entry) {
            names.push(name);
        }
    }
    Ok((names, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{DataSourceSpec, DataSources};
    use crate::MailRepository;

    fn sqlite_spec() -> DataSourceSpec {
        DataSourceSpec {
            name: "maildb".into(),
            url: "sqlite://var/mail.db".into(),
            user: None,
            password: None,
            max: 2,
            lease: crate::DEFAULT_LEASE,
        }
    }

    /// After a failed write, a body is removed only if no row names it: a COMMIT that failed
    /// may have committed all the same, and a row must keep its body (files and chunks alike).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_never_takes_a_named_body() {
        let home = tempfile::tempdir().unwrap();
        let spec = sqlite_spec();
        let plain = DataSources::open(&[spec], home.path()).await.unwrap();
        for sources in [plain.with_file_bodies(), plain.clone()] {
            let repo = sources
                .mail("maildb", &["mail".into(), "error".into()])
                .await
                .unwrap();
            let mail = mailroom_mailet::Mail::new(
                mailroom_mailet::Envelope::new("Mail1-x", None, vec![]),
                mailroom_mailet::Message::from_bytes(b"Subject: x\r\n\r\nbody\r\n"),
            );
            repo.store(&mail).await.unwrap();
            let bodies = sources.bodies("maildb").unwrap();
            let id: String = on_pool!(&bodies.pool, p => sqlx::query_scalar(
                "SELECT mailroom_body_id FROM mail WHERE message_name = 'Mail1-x'"
            )
            .fetch_one(p)
            .await)
            .unwrap();
            super::super::body::delete_body(&bodies, &id).await;
            let read = repo.retrieve("Mail1-x").await.unwrap().unwrap();
            assert_eq!(
                read.message.to_bytes().unwrap(),
                b"Subject: x\r\n\r\nbody\r\n"
            );
            assert!(repo.remove("Mail1-x").await.unwrap());
        }
        // A file no row names goes.
        let bodies = plain.with_file_bodies().bodies("maildb").unwrap();
        let lone = home.path().join("var/dbfile/maildb/mail/Mail2-lone");
        std::fs::write(&lone, b"x").unwrap();
        super::super::body::delete_body(&bodies, "dbfile:mail/Mail2-lone").await;
        assert!(!lone.exists());
    }

    /// While the server runs, orphans (a file or chunks no row names, older than a day) are
    /// swept again, not only when the table is opened; young ones and named ones stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_are_swept_while_the_server_runs() {
        let home = tempfile::tempdir().unwrap();
        let spec = sqlite_spec();
        let sources = DataSources::open(&[spec], home.path())
            .await
            .unwrap()
            .with_file_bodies();
        let repo = sources
            .mail("maildb", &["mail".into(), "error".into()])
            .await
            .unwrap();
        let mail = mailroom_mailet::Mail::new(
            mailroom_mailet::Envelope::new("Mail1-kept", None, vec![]),
            mailroom_mailet::Message::from_bytes(b"Subject: x\r\n\r\nkept\r\n"),
        );
        repo.store(&mail).await.unwrap();
        // Left after the table was opened: a file and chunks whose rows never committed.
        let dir = home.path().join("var/dbfile/maildb/mail");
        let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
        let orphan = dir.join("Mail0000000000000-1-0000000000000000");
        let young = dir.join("Mail0000000000000-2-0000000000000000");
        for file in [&orphan, &young] {
            fs::write(file, b"left by a failed commit").unwrap();
        }
        fs::File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let bodies = sources.bodies("maildb").unwrap();
        let chunks = |id: &'static str| {
            let pool = bodies.pool.clone();
            async move {
                let n: i64 = on_pool!(&pool, p => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM mailroom_bodies WHERE body_id = $1")
                .bind(id)
                .fetch_one(p)
                .await)
                .unwrap();
                n
            }
        };
        on_pool!(&bodies.pool, p => sqlx::query(
            "INSERT INTO mailroom_bodies (body_id, seq, data, written_at) \
             VALUES ('mail/Mail0000000000000-3-00', 0, x'00', 0)")
        .execute(p)
        .await
        .map(|_| ()))
        .unwrap();
        assert_eq!(chunks("mail/Mail0000000000000-3-00").await, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while orphan.exists() || chunks("mail/Mail0000000000000-3-00").await > 0 {
            assert!(std::time::Instant::now() < deadline, "not swept");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(young.exists());
        let read = repo.retrieve("Mail1-kept").await.unwrap().unwrap();
        assert!(read.message.to_bytes().unwrap().ends_with(b"kept\r\n"));
    }

    #[test]
    fn ids_cannot_leave_the_root() {
        let files = BodyFiles::new(
            PathBuf::from("/home/var/dbfile/maildb"),
            PathBuf::from("/home/var/dbmail"),
        );
        assert_eq!(
            files.james_path("Mail1-2"),
            PathBuf::from("/home/var/dbmail/4D61696C312D32.Repository.FileStreamStore")
        );
        assert_eq!(
            files.path_of("dbfile:spool/Mail1-2-ab").unwrap(),
            PathBuf::from("/home/var/dbfile/maildb/spool/Mail1-2-ab")
        );
        for bad in [
            "spool/Mail1",
            "dbfile:spool",
            "dbfile:../x/y",
            "dbfile:spool/../../etc",
            "dbfile:spool/a/b",
            "dbfile:spool/.hidden",
            "dbfile:/abs",
            "dbfile:spool/",
        ] {
            assert!(files.path_of(bad).is_err(), "{bad}");
        }
    }
}
