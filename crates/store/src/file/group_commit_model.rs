//! A loom model of group commit: `group_commit.rs` built again on loom's locks, and its callers'
//! patterns (writers that wait, a passive waiter and the flusher thread that serves it, a flush
//! that fails and puts its batch back) run under every interleaving within loom's
//! bounds. What must hold in each: a `wait` that returns `Ok` finds its write in what the flushes
//! made durable; `durable` never passes a write that no successful flush covered; nobody waits
//! forever (loom reports a deadlock); a flush covers every write counted before it starts.

/// loom's locks, which the module below is built on.
mod sync {
    pub(super) use loom::sync::{Condvar, Mutex, MutexGuard};
}

// The same file as `super::group_commit`, on purpose: built on the `sync` above.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "group_commit.rs"]
mod model;

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use model::{FlushError, GroupCommit};

/// The tickets of the writes counted but not flushed yet.
type Pending = Vec<u64>;

/// The "disk": the writes (by ticket) flushes made durable, and how many flushes ran.
#[derive(Default)]
struct Disk {
    durable: Mutex<HashSet<u64>>,
    flushes: AtomicUsize,
}

impl Disk {
    fn flush(&self, batch: Pending) -> Result<(), FlushError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.durable.lock().unwrap().extend(batch);
        Ok(())
    }

    fn has(&self, ticket: u64) -> bool {
        self.durable.lock().unwrap().contains(&ticket)
    }
}

/// Counts a write, as a spool append does once its octets are in the OS; returns its ticket.
fn write(commit: &GroupCommit<Pending>) -> u64 {
    commit.add_numbered(|pending, ticket| pending.push(ticket))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn writers_that_wait_return_only_once_their_write_is_durable() {
    model(|| {
        let commit = Arc::new(GroupCommit::new(Pending::new(), "model flush"));
        let disk = Arc::new(Disk::default());
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (commit, disk) = (commit.clone(), disk.clone());
                thread::spawn(move || {
                    let ticket = write(&commit);
                    commit
                        .wait(ticket, Duration::ZERO, std::mem::take, |b| disk.flush(b))
                        .unwrap();
                    assert!(
                        disk.has(ticket),
                        "wait returned before {ticket} was durable"
                    );
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        // Each waiter ran at most one flush, and the last covers everything.
        assert!(disk.flushes.load(Ordering::SeqCst) <= 3);
        assert_eq!(commit.durable(), 3);
    });
}

/// No lost wake-up between a passive waiter and the flusher thread: only the flusher can
/// serve it here. (loom never times a wait out, so a flusher whose waiter was served by
/// someone else would wait for good in the model, while it loops every 200 ms for real: the
/// model has no other writer.)
#[test]
fn a_passive_waiter_is_served_by_the_flusher_thread() {
    model(|| {
        let commit = Arc::new(GroupCommit::new(Pending::new(), "model flush"));
        let disk = Arc::new(Disk::default());
        let passive = {
            let (commit, disk) = (commit.clone(), disk.clone());
            thread::spawn(move || {
                let ticket = write(&commit);
                commit.wait_passively(ticket).unwrap();
                assert!(
                    disk.has(ticket),
                    "a passive wait returned before its write was durable"
                );
            })
        };
        // The flusher thread's loop, once: it wakes for the passive waiter and syncs all.
        let flusher = {
            let (commit, disk) = (commit.clone(), disk.clone());
            thread::spawn(move || {
                assert!(commit.wait_for_passive_waiters(Duration::from_secs(3600)));
                let written = commit.written();
                commit
                    .wait(written, Duration::ZERO, std::mem::take, |b| disk.flush(b))
                    .unwrap();
            })
        };
        for thread in [passive, flusher] {
            thread.join().unwrap();
        }
        assert_eq!(commit.durable(), 1);
    });
}

#[test]
fn a_failed_flush_that_puts_its_batch_back_never_counts_it_durable() {
    model(|| {
        let commit = Arc::new(GroupCommit::new(Pending::new(), "model flush"));
        let disk = Arc::new(Disk::default());
        let failed_once = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (commit, disk, failed_once) =
                    (commit.clone(), disk.clone(), failed_once.clone());
                thread::spawn(move || {
                    let ticket = write(&commit);
                    let result =
                        commit.wait(ticket, Duration::ZERO, std::mem::take, |batch: Pending| {
                            // The first flush fails before anything is lost (a rename
                            // refused): its batch goes back for the next one.
                            if !failed_once.swap(true, Ordering::SeqCst) {
                                commit.with_pending(|p| p.extend(batch));
                                return Err(FlushError::Retry(io::Error::other("no room")));
                            }
                            disk.flush(batch)
                        });
                    if result.is_ok() {
                        assert!(disk.has(ticket), "Ok before {ticket} was durable");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        // Whatever `durable` says is on the disk.
        let durable = commit.durable();
        for ticket in 1..=durable {
            assert!(disk.has(ticket), "durable is {durable} but {ticket} is not");
        }
        // What was put back is flushed by the next waiter.
        let last = commit.written();
        commit
            .wait(last, Duration::ZERO, std::mem::take, |b| disk.flush(b))
            .unwrap();
        assert!(disk.has(1) && disk.has(2));
    });
}
