//! The spool's log record scanner, through the public API: the input is written as a segment
//! file, then read by `LogSpool::snapshot` (the read-only scanner of `mailroom queue`) and by
//! `LogSpool::open` (replay, recovery of a torn tail) and listed.
//!
//! Checks: no panic on any segment content; what the read-only snapshot lists, the opened
//! spool lists too (a record either counts or does not, the same for both readers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_store::blocking::MailRepository;
use mailroom_store::file::LogSpool;

fuzz_target!(|data: &[u8]| {
    // In memory where possible: the target writes a file per input.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("mailroom-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Which kind of segment the input is: the first octet's low bit.
    let (kind, body) = match data.split_first() {
        Some((k, rest)) if k & 1 == 1 => ("big", rest),
        Some((_, rest)) => ("seg", rest),
        None => ("seg", data),
    };
    std::fs::write(dir.join(format!("{kind}-{:016}.log", 1)), body).unwrap();
    let snapshot = LogSpool::snapshot(&dir).map(|s| {
        let mut names: Vec<String> = s.mails.iter().map(|m| m.envelope.name.clone()).collect();
        names.sort();
        names
    });
    if let Ok(spool) = LogSpool::open(&dir) {
        let mut listed = spool.list().unwrap_or_default();
        listed.sort();
        if let Ok(seen) = snapshot {
            assert_eq!(seen, listed);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
