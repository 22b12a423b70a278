//! Mailbox locks across the nodes that share a PostgreSQL: session advisory locks, all held on
//! one connection of the pool per inbox repository, so that open POP3 sessions cost one
//! connection in all rather than one each (which starved SMTP and the spool of connections).
//!
//! Each key is locked once in PostgreSQL and counted here: a mailbox closed and at once
//! reopened on this node shares the key with the first holder, whose unlock has not run yet.
//!
//! The connection is watched. When it breaks (PostgreSQL restarted, the back end killed),
//! PostgreSQL has dropped every lock it held: they are taken again on a fresh connection, at
//! the next check or the next lock. A key another session took meanwhile (on another node) is
//! lost: its holder learns it from [`NodeLock::confirm`] and must not act on its snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
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

/// How often the lock connection is checked while it holds locks: how long a broken one can
/// leave this node's mailboxes unlocked for the other nodes.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The advisory locks this process holds for one inbox repository.
pub(crate) struct NodeLocks {
    pool: PgPool,
    state: Mutex<State>,
    /// Where a lock dropped off any runtime (a blocking caller's thread) is unlocked: else
    /// its key stayed locked on the kept connection, on every node, until the process ended.
    runtime: Option<tokio::runtime::Handle>,
    check_every: Duration,
    watched: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The connection holding the locks; `None` when it broke and no new one is made yet.
    conn: Option<PoolConnection<Postgres>>,
    /// The keys held on `conn` (to lock again on the next one when it is `None`).
    held: HashMap<i64, Held>,
}

struct Held {
    holders: u32,
    /// Raised when the key was lost with a broken connection.
    lost: Arc<AtomicBool>,
}

/// A held lock: dropping it unlocks the key.
pub(crate) struct NodeLock {
    locks: Arc<NodeLocks>,
    key: i64,
    lost: Arc<AtomicBool>,
}

impl NodeLocks {
    pub(crate) fn new(pool: PgPool) -> Arc<NodeLocks> {
        Self::checked_every(pool, CHECK_EVERY)
    }

    fn checked_every(pool: PgPool, check_every: Duration) -> Arc<NodeLocks> {
        Arc::new(NodeLocks {
            pool,
            state: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            check_every,
            watched: AtomicBool::new(false),
        })
    }

    /// Locks `key`, waiting up to [`GRACE`] for another holder to let go; `None` when it is
    /// still held elsewhere.
    pub(crate) async fn lock(self: &Arc<Self>, key: i64) -> Result<Option<NodeLock>> {
        self.watch();
        let deadline = tokio::time::Instant::now() + GRACE;
        loop {
            if let Some(lost) = self.try_lock(key).await? {
                return Ok(Some(NodeLock {
                    locks: self.clone(),
                    key,
                    lost,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            // The connection is free for other mailboxes while this one waits.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One attempt: the key's lost flag when it is held now, or `None`. A kept connection that
    /// fails (broken since its last use) is replaced and the lock tried again on the fresh
    /// one, so that the first mailbox opened once the database is back is not refused.
    async fn try_lock(&self, key: i64) -> Result<Option<Arc<AtomicBool>>> {
        let mut state = self.state.lock().await;
        if let Some(held) = state.held.get_mut(&key) {
            held.holders += 1;
            return Ok(Some(held.lost.clone()));
        }
        loop {
            let fresh = state.conn.is_none();
            if fresh {
                state.reconnect(&self.pool).await?;
            }
            let conn = state.conn.as_mut().expect("connected above");
            match try_advisory_lock(conn, key).await {
                Ok(true) => {
                    let lost = Arc::new(AtomicBool::new(false));
                    let held = Held {
                        holders: 1,
                        lost: lost.clone(),
                    };
                    state.held.insert(key, held);
                    return Ok(Some(lost));
                }
                Ok(false) => return Ok(None),
                Err(e) => {
                    state.disconnect(&e);
                    if fresh {
                        return Err(db_error(e));
                    }
                }
            }
        }
    }

    /// Checks the lock connection while it holds locks, and takes them again on a new one
    /// when it broke.
    async fn check(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        if state.held.is_empty() {
            return Ok(());
        }
        if let Some(conn) = state.conn.as_mut() {
            match sqlx::query("SELECT 1").execute(&mut **conn).await {
                Ok(_) => return Ok(()),
                Err(e) => state.disconnect(&e),
            }
        }
        state.reconnect(&self.pool).await
    }

    /// Starts the task that checks the lock connection, once.
    fn watch(self: &Arc<Self>) {
        if self.watched.swap(true, Ordering::SeqCst) {
            return;
        }
        let locks: Weak<NodeLocks> = Arc::downgrade(self);
        let every = self.check_every;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(locks) = locks.upgrade() else {
                    return;
                };
                if let Err(e) = locks.check().await {
                    // The database is away: tried again at the next check.
                    tracing::debug!(error = %e, "cannot take the mailbox locks again yet");
                }
            }
        });
    }

    async fn unlock(&self, key: i64, lost: &Arc<AtomicBool>) {
        let mut state = self.state.lock().await;
        let Some(held) = state.held.get_mut(&key) else {
            return;
        };
        // A key lost and since locked again by a new holder is not this holder's.
        if !Arc::ptr_eq(&held.lost, lost) {
            return;
        }
        held.holders -= 1;
        if held.holders > 0 {
            return;
        }
        state.held.remove(&key);
        let Some(conn) = state.conn.as_mut() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut **conn)
            .await;
        if let Err(e) = unlocked {
            // Its other keys are taken again on a new connection.
            state.disconnect(&e);
        }
    }
}

impl State {
    /// Drops a failed lock connection: closing it is what releases its locks in PostgreSQL.
    fn disconnect(&mut self, e: &sqlx::Error) {
        if let Some(mut conn) = self.conn.take() {
            tracing::warn!(error = %e, locks = self.held.len(),
                "mailbox lock connection failed; its locks are taken again on a new one");
            conn.close_on_drop();
        }
    }

    /// Takes a new lock connection and locks the held keys on it again; a key that another
    /// session took meanwhile is lost.
    async fn reconnect(&mut self, pool: &PgPool) -> Result<()> {
        let mut conn = pool.acquire().await.map_err(db_error)?;
        let mut lost = Vec::new();
        for &key in self.held.keys() {
            match try_advisory_lock(&mut conn, key).await {
                Ok(true) => {}
                Ok(false) => lost.push(key),
                Err(e) => {
                    conn.close_on_drop();
                    return Err(db_error(e));
                }
            }
        }
        for key in lost {
            if let Some(held) = self.held.remove(&key) {
                held.lost.store(true, Ordering::SeqCst);
                tracing::warn!(
                    key,
                    "a mailbox lock was lost while its connection was down: \
                    another session holds the mailbox"
                );
            }
        }
        self.conn = Some(conn);
        Ok(())
    }
}

async fn try_advisory_lock(conn: &mut PoolConnection<Postgres>, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut **conn)
        .await
}

impl NodeLock {
    /// Whether this lock is still held, checked with the database now: `false` when it was
    /// lost while its connection was down and another session has the mailbox. An error when
    /// the database cannot say.
    pub(crate) async fn confirm(&self) -> Result<bool> {
        if !self.lost.load(Ordering::SeqCst) {
            self.locks.check().await?;
        }
        Ok(!self.lost.load(Ordering::SeqCst))
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        let (locks, key, lost) = (self.locks.clone(), self.key, self.lost.clone());
        // With no runtime at all the process is ending, and closing the connection unlocks.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| locks.runtime.clone());
        if let Some(runtime) = runtime {
            runtime.spawn(async move { locks.unlock(key, &lost).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> PgPool {
        let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
        PgPool::connect(&url).await.unwrap()
    }

    /// A key no other test or run uses.
    fn key(n: i64) -> i64 {
        0x5eed_0000_0000 + (i64::from(std::process::id()) << 8) + n
    }

    /// Kills the back end holding the advisory lock `key`, as a PostgreSQL restart would.
    async fn kill_holder(pool: &PgPool, key: i64) {
        let killed: bool = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1",
        )
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(killed);
        // Until the back end is gone, its locks are still held.
        for _ in 0..100 {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid",
            )
            .bind(key)
            .fetch_one(pool)
            .await
            .unwrap();
            if held == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the killed back end kept its lock");
    }

    /// Whether another node (a pool of its own) could lock `key` now.
    async fn free_elsewhere(pool: &PgPool, key: i64) -> bool {
        let mut conn = pool.acquire().await.unwrap();
        let free = try_advisory_lock(&mut conn, key).await.unwrap();
        conn.close_on_drop();
        free
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_lock_dropped_off_the_runtime_is_unlocked() {
        let pool = pool().await;
        let locks = NodeLocks::new(pool.clone());
        let held = locks.lock(key(1)).await.unwrap().expect("free");
        // A mailbox dropped on a thread of no runtime (a blocking caller's).
        std::thread::spawn(move || drop(held)).join().unwrap();
        let other = NodeLocks::new(pool.clone());
        assert!(other.lock(key(1)).await.unwrap().is_some(), "unlocked");
    }

    /// A mailbox closed and at once reopened on this node shares the key until both let go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_key_locked_twice_here_is_held_until_both_let_go() {
        let pool = pool().await;
        let locks = NodeLocks::new(pool.clone());
        let first = locks.lock(key(2)).await.unwrap().expect("free");
        let second = locks.lock(key(2)).await.unwrap().expect("shared");
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !free_elsewhere(&pool, key(2)).await,
            "still held by the second"
        );
        drop(second);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(free_elsewhere(&pool, key(2)).await, "unlocked");
    }

    /// The lock connection broken (PostgreSQL restarted, the back end killed): the next lock
    /// takes a fresh connection, and the held keys are locked again on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_broken_lock_connection_is_replaced_with_its_locks_at_the_next_lock() {
        let pool = pool().await;
        let locks = NodeLocks::checked_every(pool.clone(), Duration::from_secs(3600));
        let held = locks.lock(key(3)).await.unwrap().expect("free");
        kill_holder(&pool, key(3)).await;
        assert!(locks.lock(key(4)).await.unwrap().is_some());
        assert!(!free_elsewhere(&pool, key(3)).await, "locked again");
        assert!(held.confirm().await.unwrap());
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(free_elsewhere(&pool, key(3)).await, "unlocked");
    }

    /// The check finds the broken connection by itself and locks the keys again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_broken_lock_connection_is_replaced_with_its_locks_by_the_check() {
        let pool = pool().await;
        let locks = NodeLocks::checked_every(pool.clone(), Duration::from_millis(100));
        let held = locks.lock(key(5)).await.unwrap().expect("free");
        kill_holder(&pool, key(5)).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!free_elsewhere(&pool, key(5)).await, "locked again");
        assert!(held.confirm().await.unwrap());
    }

    /// A key another node took while the connection was down is lost: `confirm` says so, and
    /// the holder's unlock leaves the other node's lock alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
    async fn a_lock_taken_elsewhere_while_its_connection_was_down_is_lost() {
        let pool = pool().await;
        let locks = NodeLocks::checked_every(pool.clone(), Duration::from_secs(3600));
        let held = locks.lock(key(6)).await.unwrap().expect("free");
        kill_holder(&pool, key(6)).await;
        let other = NodeLocks::new(pool.clone());
        let theirs = other
            .lock(key(6))
            .await
            .unwrap()
            .expect("went with the connection");
        assert!(!held.confirm().await.unwrap(), "lost");
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !free_elsewhere(&pool, key(6)).await,
            "still the other node's"
        );
        // Here the key is locked anew (not shared with the lost holder).
        drop(theirs);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(locks.lock(key(6)).await.unwrap().is_some());
    }
}
