//! Group commit's own tests, on std's locks (apart from the module so that its loom model,
//! which builds the module again on loom's locks, does not build them too).

use std::io;
use std::time::Duration;

use super::group_commit::{FlushError, GroupCommit};
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn one_flush_covers_every_write_before_it_and_a_failure_poisons() {
    let commit = GroupCommit::new(Vec::<u64>::new(), "test flush");
    let a = commit.add(|p| p.push(1));
    let b = commit.add(|p| p.push(2));
    let flushes = AtomicUsize::new(0);
    let run = |ticket| {
        commit.wait(ticket, Duration::ZERO, std::mem::take, |batch: Vec<u64>| {
            flushes.fetch_add(1, Ordering::SeqCst);
            assert_eq!(batch, [1, 2]);
            Ok(())
        })
    };
    run(a).unwrap();
    run(b).unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 1);
    assert_eq!(commit.durable(), 2);
    let c = commit.add(|p| p.push(3));
    let failed = commit.wait(c, Duration::ZERO, std::mem::take, |_| {
        Err(io::Error::other("disk gone").into())
    });
    assert!(failed.is_err());
    let d = commit.add(|p| p.push(4));
    let again = commit.wait(d, Duration::ZERO, std::mem::take, |_| Ok(()));
    assert!(again.unwrap_err().to_string().contains("test flush"));
    assert!(commit.wait_passively(d).is_err());
}

#[test]
fn a_retryable_failure_fails_its_waiters_only_and_what_was_put_back_is_flushed_next() {
    let commit = GroupCommit::new(Vec::<u64>::new(), "test flush");
    let a = commit.add(|p| p.push(1));
    let failed = commit.wait(a, Duration::ZERO, std::mem::take, |batch: Vec<u64>| {
        commit.with_pending(|p| p.extend(batch));
        Err(FlushError::Retry(io::Error::other("no descriptors")))
    });
    assert_eq!(failed.unwrap_err().to_string(), "no descriptors");
    assert_eq!(
        commit.durable(),
        0,
        "a failed write is never reported durable"
    );
    let b = commit.add(|p| p.push(2));
    commit
        .wait(b, Duration::ZERO, std::mem::take, |batch: Vec<u64>| {
            assert_eq!(batch, [1, 2]);
            Ok(())
        })
        .unwrap();
    assert_eq!(commit.durable(), 2);
    assert!(commit.wait_passively(a).is_ok());
}
