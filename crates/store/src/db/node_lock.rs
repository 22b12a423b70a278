//! Mailbox locks across the nodes that share a PostgreSQL: session advisory locks, all held on
//! one connection of the pool per inbox repository, so that open POP3 sessions cost one
//! connection in all rather than one each (which starved SMTP and the spool of connections).
//!
//! Advisory locks of one session are counted: a mailbox closed and at once reopened on this
//! node locks its key a second time before the first unlock has run, and stays locked after
//! it. If the lock connection fails, PostgreSQL has dropped every lock it held: the next lock
//! takes a fresh connection, and unlocks meant for the dead one are not sent.

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::Mutex;

use super::db_error;
use crate::Result;

/// How long a lock waits for another session's lock to go before it answers "in use": a
/// session that has just ended (this user's last POP3 session, here or on another node)
/// releases its lock only when its QUIT has been handled, a few milliseconds later.
const GRACE: Duration = Duration::from_secs(1);

/// The advisory locks this process holds for one inbox repository.
pub(crate) struct NodeLocks {
    pool: PgPool,
    /// The connection holding the locks, and its generation (raised at each new connection).
    conn: Mutex<(Option<PoolConnection<Postgres>>, u64)>,
    /// Where a lock dropped off any runtime (a blocking caller's thread) is unlocked: else
    /// its key stayed locked on the kept connection, on every node, until the process ended.
    runtime: Option<tokio::runtime::Handle>,
}

/// A held lock: dropping it unlocks the key.
pub(crate) struct NodeLock {
    locks: Arc<NodeLocks>,
    key: i64,
    generation: u64,
}

impl NodeLocks {
    pub(crate) fn new(pool: PgPool) -> Arc<NodeLocks> {
        Arc::new(NodeLocks {
            pool,
            conn: Mutex::new((None, 0)),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Locks `key`, waiting up to [`GRACE`] for another holder to let go; `None` when it is
    /// still held elsewhere.
    pub(crate) async fn lock(self: &Arc<Self>, key: i64) -> Result<Option<NodeLock>> {
        let deadline = tokio::time::Instant::now() + GRACE;
        loop {
            if let Some(generation) = self.try_lock(key).await? {
                return Ok(Some(NodeLock {
                    locks: self.clone(),
                    key,
                    generation,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            // The connection is free for other mailboxes while this one waits.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One attempt: the generation of the connection that took the lock, or `None`. A kept
    /// connection that fails (broken since its last use: PostgreSQL restarted) is replaced
    /// and the lock tried again on the fresh one, so that the first mailbox opened once the
    /// database is back is not refused.
    async fn try_lock(&self, key: i64) -> Result<Option<u64>> {
        let mut held = self.conn.lock().await;
        loop {
            let fresh = held.0.is_none();
            if fresh {
                let conn = self.pool.acquire().await.map_err(db_error)?;
                *held = (Some(conn), held.1 + 1);
            }
            let conn = held.0.as_mut().expect("connected above");
            match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut **conn)
                .await
            {
                Ok(true) => return Ok(Some(held.1)),
                Ok(false) => return Ok(None),
                Err(e) => {
                    Self::forget(&mut held.0);
                    if fresh {
                        return Err(db_error(e));
                    }
                    tracing::warn!(error = %e, "mailbox lock connection failed; its locks are released");
                }
            }
        }
    }

    /// Drops a failed lock connection: closing it is what releases its locks in PostgreSQL.
    fn forget(conn: &mut Option<PoolConnection<Postgres>>) {
        if let Some(mut conn) = conn.take() {
            conn.close_on_drop();
        }
    }

    async fn unlock(&self, key: i64, generation: u64) {
        let mut held = self.conn.lock().await;
        if held.1 != generation {
            return;
        }
        let Some(conn) = held.0.as_mut() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut **conn)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "mailbox lock connection failed; its locks are released");
            Self::forget(&mut held.0);
        }
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        let (locks, key, generation) = (self.locks.clone(), self.key, self.generation);
        // With no runtime at all the process is ending, and closing the connection unlocks.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| locks.runtime.clone());
        if let Some(runtime) = runtime {
            runtime.spawn(async move { locks.unlock(key, generation).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock connection broken (PostgreSQL restarted, the back end killed): the next lock
    /// is taken on a fresh connection, not refused once with the dead one's error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_lock_dropped_off_the_runtime_is_unlocked() {
        let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
        let pool = PgPool::connect(&url).await.unwrap();
        let locks = NodeLocks::new(pool.clone());
        let key = 0x5eed_1000 + i64::from(std::process::id());
        let held = locks.lock(key).await.unwrap().expect("free");
        // A mailbox dropped on a thread of no runtime (a blocking caller's).
        std::thread::spawn(move || drop(held)).join().unwrap();
        let other = NodeLocks::new(pool.clone());
        assert!(other.lock(key).await.unwrap().is_some(), "unlocked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_broken_lock_connection_is_replaced_at_the_next_lock() {
        let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
        let pool = PgPool::connect(&url).await.unwrap();
        let locks = NodeLocks::new(pool.clone());
        let key = 0x5eed_0000 + i64::from(std::process::id());
        let held = locks.lock(key).await.unwrap().expect("free");
        let pid: i32 = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::oid",
        )
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap();
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(killed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = locks.lock(key + 1).await.unwrap();
        assert!(again.is_some());
        // The first lock went with its connection: taken again here, its holder's unlock
        // (meant for the dead connection) does not undo it.
        drop(held);
        let first = locks
            .lock(key)
            .await
            .unwrap()
            .expect("released with the connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = NodeLocks::new(pool.clone());
        assert!(other.lock(key).await.unwrap().is_none(), "still held");
        drop(first);
    }
}
