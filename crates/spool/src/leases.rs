//! Keeps the leases of the mails the workers hold alive. One background task renews every held
//! lease once half of it has passed, so that neither a mailet slower than the lease (a remote
//! server that takes its time) nor a finished mail waiting for its batch's inbox sync loses its
//! mail to another worker. Holding a lease costs a map entry, not a task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use mailroom_store::{LeaseToken, SpoolRepository, StoreError};

/// How often the held leases are looked at. Leases much shorter than twice this are not kept
/// alive (the spool's are minutes long).
pub const SCAN: Duration = Duration::from_secs(1);

/// The leases the workers hold.
pub struct Leases {
    spool: Arc<dyn SpoolRepository>,
    /// By lease id.
    held: Mutex<HashMap<u64, Held>>,
}

struct Held {
    token: LeaseToken,
    /// How long the lease was for when taken.
    lease: Duration,
    /// How many [`HeldLease`]s hold it (a worker's, and a pending change's).
    holders: usize,
}

/// A lease kept alive until this is dropped.
pub struct HeldLease {
    leases: Arc<Leases>,
    id: u64,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        // Another hold of the same lease (a change left pending) keeps it renewed.
        let mut held = self.leases.held();
        if let Some(h) = held.get_mut(&self.id) {
            h.holders -= 1;
            if h.holders == 0 {
                held.remove(&self.id);
            }
        }
    }
}

impl Leases {
    /// No leases yet, on `spool`.
    pub fn new(spool: Arc<dyn SpoolRepository>) -> Arc<Self> {
        Arc::new(Leases {
            spool,
            held: Mutex::default(),
        })
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `token`'s lease alive until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, token: &LeaseToken) -> HeldLease {
        let lease = token
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        // Held already (a change left pending is held by the worker too): the renewed token
        // and the lease's length are kept. Replacing them with `token`, which may be the
        // first one handed out and past its expiry, stopped the renewals.
        self.held()
            .entry(token.id())
            .and_modify(|held| held.holders += 1)
            .or_insert_with(|| Held {
                token: token.clone(),
                lease,
                holders: 1,
            });
        HeldLease {
            leases: self.clone(),
            id: token.id(),
        }
    }

    /// Renews, every `scan`, the held leases of which half has passed; runs until its task
    /// is aborted.
    pub async fn renew_forever(self: Arc<Self>, scan: Duration) {
        loop {
            tokio::time::sleep(scan).await;
            self.renew_due().await;
        }
    }

    async fn renew_due(&self) {
        let now = SystemTime::now();
        let due: Vec<LeaseToken> = self
            .held()
            .values()
            .filter(|held| {
                let left = held
                    .token
                    .expires_at()
                    .duration_since(now)
                    .unwrap_or_default();
                left < held.lease / 2
            })
            .map(|held| held.token.clone())
            .collect();
        for token in due {
            match self.spool.renew(&token).await {
                Ok(renewed) => {
                    if let Some(held) = self.held().get_mut(&token.id()) {
                        held.token = renewed;
                    }
                }
                Err(StoreError::LeaseLost(_)) => {
                    self.held().remove(&token.id());
                }
                // Tried again at the next scan: the lease may still be saved.
                Err(e) => tracing::warn!(mail = %token.name(), error = %e, "cannot renew a lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::{Envelope, Mail, Message};
    use mailroom_store::file::LogSpool;
    use mailroom_store::Blocking;

    /// A log spool in `dir` whose leases last `lease`.
    fn spool_leasing_for(dir: &std::path::Path, lease: Duration) -> Arc<dyn SpoolRepository> {
        Arc::new(Blocking::new(
            LogSpool::open(dir).unwrap().with_lease_duration(lease),
        ))
    }

    #[tokio::test]
    async fn held_leases_outlive_their_first_expiry_and_dropped_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_millis(600);
        let spool = spool_leasing_for(dir.path(), lease);
        for name in ["kept", "dropped"] {
            let mail = Mail::new(
                Envelope::new(name, None, vec![]),
                Message::from_bytes(b"\r\n"),
            );
            spool.store(&mail).await.unwrap();
        }
        let leases = Leases::new(spool.clone());
        let renewer = tokio::spawn(leases.clone().renew_forever(Duration::from_millis(50)));
        let first = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
        let second = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
        let held = leases.hold(&first.token);
        drop(leases.hold(&second.token));
        tokio::time::sleep(lease * 2).await;
        // The dropped one expired and is handed out again; the held one is still held.
        let again = spool
            .lease(Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.mail.name(), second.mail.name());
        assert!(spool
            .lease(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none());
        spool.complete(first.token).await.unwrap();
        drop(held);
        renewer.abort();
    }

    /// A lease held twice (a worker's hold, and the hold of a spool change left pending on a
    /// storage failure, taken with the token as first handed out) is renewed until both let
    /// go: the first one dropped does not end the second's renewals.
    #[tokio::test]
    async fn a_lease_held_twice_is_renewed_until_both_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Duration::from_millis(600);
        let spool = spool_leasing_for(dir.path(), lease);
        let mail = Mail::new(
            Envelope::new("pending", None, vec![]),
            Message::from_bytes(b"\r\n"),
        );
        spool.store(&mail).await.unwrap();
        let leases = Leases::new(spool.clone());
        let renewer = tokio::spawn(leases.clone().renew_forever(Duration::from_millis(50)));
        let leased = spool.lease(Duration::from_secs(1)).await.unwrap().unwrap();
        let worker = leases.hold(&leased.token);
        // Past the first expiry: the token in hand is stale, the lease renewed.
        tokio::time::sleep(lease + lease / 2).await;
        let pending = leases.hold(&leased.token);
        drop(worker);
        tokio::time::sleep(lease * 2).await;
        assert!(
            spool
                .lease(Duration::from_millis(100))
                .await
                .unwrap()
                .is_none(),
            "the pending mail's lease expired and it was handed out again"
        );
        drop(pending);
        renewer.abort();
    }
}
