//! Group commit for SQLite: the writes of concurrent callers (SMTP sessions storing mail, spool
//! workers leasing, delivering and removing it) share one transaction and so one `fsync` of
//! the WAL, as the file spool's sessions share one `fdatasync`.
//!
//! SQLite has a single writer, so one writer task per database file takes the jobs queued
//! while its previous batch was committing, runs them in one `BEGIN IMMEDIATE … COMMIT`, each
//! in a savepoint of its own (a job that fails is rolled back alone; the others commit), and
//! answers each caller only once the `COMMIT` has returned: what a caller is told is done is
//! durable (`synchronous=FULL`). A failed `COMMIT`, or a failure that takes the transaction
//! down (a full disk), fails every job of the batch with the same kind of error.
//!
//! [`write_tx!`] writes a transaction once for both engines: on SQLite it is a job of the
//! file's writer, on PostgreSQL a transaction of its own (PostgreSQL merges concurrent WAL
//! flushes itself).
//!
//! The writer owns no pool: each job brings the pool it came from, and the writer takes a
//! connection from the first job's pool for each batch, so a pool that is closed or dropped
//! is not kept alive by an idle writer.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes (the rest wait for the next one).
const MAX_BATCH: usize = 512;

/// A future borrowing the writer's connection.
pub(crate) type JobFuture<'c, T> = Pin<Box<dyn Future<Output = sqlx::Result<T>> + Send + 'c>>;

type Erased = Box<dyn Any + Send>;
type JobFn = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, Erased> + Send>;

struct Job {
    pool: SqlitePool,
    run: JobFn,
    reply: oneshot::Sender<sqlx::Result<Erased>>,
}

/// The writer of each database file in this process.
static WRITERS: LazyLock<Mutex<HashMap<PathBuf, mpsc::UnboundedSender<Job>>>> =
    LazyLock::new(Default::default);

/// Runs `job` in the next group transaction of `pool`'s database file; returns once that
/// transaction has committed (or `job` failed, rolled back to its own savepoint).
pub(crate) async fn run<T, F>(pool: &SqlitePool, job: F) -> sqlx::Result<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c, T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let mut job = Job {
        pool: pool.clone(),
        run: Box::new(move |conn| {
            Box::pin(async move { job(conn).await.map(|v| Box::new(v) as Erased) })
        }),
        reply,
    };
    let file = pool.connect_options().get_filename().to_path_buf();
    // A writer whose runtime has gone (a test's) is replaced: at most once per call.
    for _ in 0..2 {
        let sender = {
            let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
            writers
                .entry(file.clone())
                .or_insert_with(spawn_writer)
                .clone()
        };
        match sender.send(job) {
            Ok(()) => {
                let result = answer.await.map_err(|_| {
                    sqlx::Error::Io(io::Error::other("the database writer stopped"))
                })?;
                return result.map(|v| *v.downcast::<T>().expect("the job's own type"));
            }
            Err(mpsc::error::SendError(back)) => {
                job = back;
                WRITERS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&file);
            }
        }
    }
    Err(sqlx::Error::Io(io::Error::other(
        "no database writer could be started",
    )))
}

fn spawn_writer() -> mpsc::UnboundedSender<Job> {
    let (sender, mut jobs) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        while let Some(first) = jobs.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            commit_batch(batch).await;
        }
    });
    sender
}

/// Runs a batch in one transaction and answers every job after the `COMMIT`.
async fn commit_batch(batch: Vec<Job>) {
    let pool = batch[0].pool.clone();
    let mut replies = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let outcome: sqlx::Result<()> = async {
        let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => {
                replies.extend(jobs.by_ref().map(|j| (j.reply, None)));
                return Err(e);
            }
        };
        while let Some(job) = jobs.next() {
            let mut savepoint = match tx.begin().await {
                Ok(s) => s,
                Err(e) => {
                    replies.push((job.reply, None));
                    replies.extend(jobs.by_ref().map(|j| (j.reply, None)));
                    return Err(e);
                }
            };
            match CatchPanic((job.run)(&mut savepoint)).await {
                Ok(value) => {
                    let released = savepoint.commit().await;
                    replies.push((job.reply, Some(Ok(value))));
                    if let Err(e) = released {
                        replies.extend(jobs.by_ref().map(|j| (j.reply, None)));
                        return Err(e);
                    }
                }
                Err(e) => {
                    let undone = savepoint.rollback().await;
                    let fatal = undone.is_err() || takes_transaction_down(&e);
                    let cause = fatal.then(|| undone.err().unwrap_or_else(|| like(&e)));
                    replies.push((job.reply, Some(Err(e))));
                    if let Some(cause) = cause {
                        replies.extend(jobs.by_ref().map(|j| (j.reply, None)));
                        return Err(cause);
                    }
                }
            }
        }
        tx.commit().await
    }
    .await;
    match outcome {
        Ok(()) => {
            for (reply, result) in replies {
                let _ = reply.send(result.expect("every job ran"));
            }
        }
        Err(e) => {
            // Nothing of the batch is committed: every job fails, the one whose own error
            // brought it down with that error, the others with one of the same kind.
            for (reply, result) in replies {
                let _ = reply.send(Err(match result {
                    Some(Err(own)) => own,
                    _ => like(&e),
                }));
            }
        }
    }
}

/// A job's future whose panic (a bug) becomes that job's error, rolled back to its savepoint,
/// instead of ending the writer task and with it every job of its batch and of the queue.
struct CatchPanic<'c>(JobFuture<'c, Erased>);

impl Future for CatchPanic<'_> {
    type Output = sqlx::Result<Erased>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let job = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                std::task::Poll::Ready(Err(sqlx::Error::Protocol("a database job panicked".into())))
            }
        }
    }
}

/// Whether a statement's error leaves SQLite's transaction rolled back or unusable (a full
/// disk, an I/O error, no memory), so that the batch cannot go on.
fn takes_transaction_down(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => e
            .as_database_error()
            .and_then(|d| d.code())
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 7 | 10 | 11 | 13)),
    }
}

/// An error of the same kind as `e` (a full disk stays a full disk) for a job that did not
/// cause it.
fn like(e: &sqlx::Error) -> sqlx::Error {
    let full = match e {
        sqlx::Error::Io(io) => io.kind() == io::ErrorKind::StorageFull,
        _ => e
            .as_database_error()
            .and_then(|d| d.code())
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|c| c & 0xff == 13),
    };
    let kind = if full {
        io::ErrorKind::StorageFull
    } else {
        io::ErrorKind::Other
    };
    sqlx::Error::Io(io::Error::new(
        kind,
        format!("the group transaction failed: {e}"),
    ))
}

/// Says that a transaction body's error is sqlx's (for [`write_tx!`]'s inference).
pub(crate) fn typed<T, F: Future<Output = sqlx::Result<T>>>(f: F) -> F {
    f
}

/// Runs `$body` (an expression of type `sqlx::Result<T>` that uses `$c`, a `&mut` connection,
/// as executor: `.execute(&mut *$c)`) in a write transaction of `$pool`: a job of the
/// SQLite file's writer, or a transaction of its own on PostgreSQL. Variables the body uses
/// are moved into it (the SQLite job runs on the writer's task).
macro_rules! write_tx {
    ($pool:expr, $c:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite(p) => {
                $crate::db::batch::run(p, move |$c| Box::pin(async move { $body })).await
            }
            $crate::db::Pool::Postgres(p) => {
                async move {
                    let mut tx = p.begin().await?;
                    let value = {
                        let $c = &mut *tx;
                        $crate::db::batch::typed(async move { $body }).await?
                    };
                    tx.commit().await?;
                    Ok(value)
                }
                .await
            }
        }
    };
}
pub(crate) use write_tx;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    async fn pool(dir: &std::path::Path) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    fn insert(pool: &SqlitePool, k: String) -> impl Future<Output = sqlx::Result<u64>> {
        let pool = pool.clone();
        async move {
            run(&pool, move |c| {
                Box::pin(async move {
                    let done = sqlx::query("INSERT INTO t (k, v) VALUES ($1, 1)")
                        .bind(k)
                        .execute(&mut *c)
                        .await?;
                    Ok(done.rows_affected())
                })
            })
            .await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_jobs_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| tokio::spawn(insert(&pool, format!("k{i}"))))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 1);
        }
        // Every acknowledged job is visible, from a connection of another pool too.
        pool.close().await;
        let other = SqlitePoolOptions::new()
            .connect_with(SqliteConnectOptions::new().filename(dir.path().join("t.db")))
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&other)
            .await
            .unwrap();
        assert_eq!(n, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_job_leaves_the_others_committed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        insert(&pool, "taken".into()).await.unwrap();
        // Queue many jobs at once, one of which violates the key: they share batches.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let k = if i == 25 {
                    "taken".to_string()
                } else {
                    format!("k{i}")
                };
                tokio::spawn(insert(&pool, k))
            })
            .collect();
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(1) => {}
                Ok(n) => panic!("{n} rows"),
                Err(e) => {
                    assert!(e.as_database_error().unwrap().is_unique_violation(), "{e}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 1);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 50);
    }

    #[tokio::test]
    async fn a_job_that_writes_then_fails_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let p = pool.clone();
        let half = tokio::spawn(async move {
            run(&p, |c| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t (k, v) VALUES ('half', 1)")
                        .execute(&mut *c)
                        .await?;
                    sqlx::query("INSERT INTO missing VALUES (1)")
                        .execute(&mut *c)
                        .await?;
                    Ok(())
                })
            })
            .await
        });
        let whole = tokio::spawn(insert(&pool, "whole".into()));
        assert!(half.await.unwrap().is_err());
        assert_eq!(whole.await.unwrap().unwrap(), 1);
        let keys: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(keys, ["whole"]);
    }

    /// A job that panics fails alone: the jobs of its batch before and after it commit, and
    /// the writer goes on with the next batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_panicking_job_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let p = pool.clone();
                tokio::spawn(async move {
                    run(&p, move |c| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (k, v) VALUES ($1, 1)")
                                .bind(format!("k{i}"))
                                .execute(&mut *c)
                                .await?;
                            if i == 25 {
                                panic!("a job's bug");
                            }
                            Ok(())
                        })
                    })
                    .await
                })
            })
            .collect();
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        insert(&pool, "after".into()).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            n, 50,
            "49 jobs and the one after, not the panicking one's row"
        );
    }
}
