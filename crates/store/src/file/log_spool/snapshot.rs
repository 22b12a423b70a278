//! Reading a spool without opening it: what `mailroom queue list|show` shows while a server
//! runs on the spool.
//!
//! A running server holds the spool's `flock` and keeps its index in memory, so another
//! process may not open the spool; but the log is plain files, written forward and never
//! changed in place (a segment is only appended to, and deleted once nothing in it is needed).
//! A reader that takes no lock and writes nothing can therefore rebuild the index itself:
//! list the segments, read their whole records (a record being appended right now is not
//! whole yet, and reading stops before it), and replay them as [`super::replay`] does. A
//! segment may be deleted (compaction, garbage collection) between the listing and the
//! reading: then its live mails were written again in a newer segment first, so the reader
//! starts over while the set of segments keeps changing under it. What it returns is the
//! spool as it was a moment ago: leases live in the server's memory and are not seen.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_mailet::{Envelope, Mail};

use super::record::{scan, Scanned, KIND_DONE, KIND_ENVELOPE, KIND_ENVELOPE_AT, KIND_MAIL};
use super::LogSpool;
use crate::file::fsutil::open_message_at;
use crate::{Result, StoreError};

/// How often the reader starts over when segments keep changing under it.
const ATTEMPTS: usize = 20;

/// A spooled mail as read by [`LogSpool::snapshot`].
#[derive(Debug)]
pub struct SpooledMail {
    /// The mail as last stored (its message is read from the segment on demand).
    pub mail: Mail,
    /// When it was requeued for (`None`: due at once).
    pub next_attempt: Option<SystemTime>,
}

/// The segment files of `dir`, sorted by number: `(number, file name)`.
fn segment_names(dir: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_suffix(".log")
            .and_then(|stem| stem.split_once('-'))
            .filter(|(kind, _)| *kind == "seg" || *kind == "big")
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, name.to_string()));
        }
    }
    found.sort();
    Ok(found)
}

impl LogSpool {
    /// The mails of the spool in `dir`, oldest first, read without the spool's lock and
    /// without writing anything, so that it works while a server runs on the spool. A
    /// directory that does not exist is [`StoreError::NotFound`].
    pub fn snapshot(dir: &Path) -> Result<Vec<SpooledMail>> {
        if !dir.is_dir() {
            return Err(StoreError::NotFound(format!("spool {}", dir.display())));
        }
        for _ in 0..ATTEMPTS {
            let names = segment_names(dir)?;
            let mut files = HashMap::new();
            let mut records = Vec::new();
            let mut vanished = false;
            for (number, name) in &names {
                let file = match File::open(dir.join(name)) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        vanished = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                // Damage is the server's to report; a reader stops there as it does.
                let (scanned, _damaged) = scan(&file, *number)?;
                records.extend(scanned.into_iter().map(|r| (*number, r)));
                files.insert(*number, Arc::new(file));
            }
            // A segment added or deleted meanwhile may hold newer records: read again.
            if vanished || segment_names(dir)? != names {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            return rebuild(records, &files);
        }
        Err(io::Error::other("the spool kept changing while it was read; try again").into())
    }
}

/// The live mails of `records`, oldest first.
fn rebuild(
    records: Vec<(u64, Scanned)>,
    files: &HashMap<u64, Arc<File>>,
) -> Result<Vec<SpooledMail>> {
    #[derive(Default)]
    struct Seen {
        /// seq, segment, envelope, (offset, len)
        mail: Option<(u64, u64, Envelope, (u64, u64))>,
        envelope: Option<(u64, Envelope, Option<SystemTime>)>,
        done: Option<u64>,
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for (segment, record) in records {
        let s = seen.entry(record.name).or_default();
        match record.kind {
            KIND_MAIL if s.mail.as_ref().is_none_or(|m| m.0 < record.seq) => {
                if let (Some(envelope), Some(at)) = (record.envelope, record.message) {
                    s.mail = Some((record.seq, segment, envelope, at));
                }
            }
            KIND_ENVELOPE | KIND_ENVELOPE_AT
                if s.envelope.as_ref().is_none_or(|e| e.0 < record.seq) =>
            {
                if let Some(envelope) = record.envelope {
                    s.envelope = Some((record.seq, envelope, record.next_attempt));
                }
            }
            KIND_DONE => s.done = s.done.max(Some(record.seq)),
            _ => {}
        }
    }
    let mut live = Vec::new();
    for (_, s) in seen {
        let Some((seq, segment, envelope, (offset, len))) = s.mail else {
            continue;
        };
        if s.done.is_some_and(|d| d > seq) {
            continue;
        }
        let (envelope, next_attempt) = match s.envelope {
            Some((at, envelope, next)) if at > seq => (envelope, next),
            _ => (envelope, None),
        };
        let message = open_message_at(files[&segment].clone(), offset, len)?;
        live.push((
            seq,
            SpooledMail {
                mail: Mail { envelope, message },
                next_attempt,
            },
        ));
    }
    live.sort_by_key(|(seq, _)| *seq);
    Ok(live.into_iter().map(|(_, m)| m).collect())
}
