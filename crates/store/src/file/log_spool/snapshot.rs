//! Reading a spool without opening it: what `mailroom queue list|show` shows while a server
//! runs on the spool.
//!
//! A running server holds the spool's `flock` and keeps its index in memory, so another
//! process may not open the spool; but the log is plain files, written forward and never
//! changed in place (a segment is only appended to, and deleted once nothing in it is needed).
//! A reader that takes no lock and writes nothing can therefore rebuild the index itself:
//! list the segments, read their whole records (a record being appended right now is not
//! whole yet, and reading stops before it), and replay them as [`super::replay`] does.
//!
//! Segments come and go while they are read (a mail over 256 KiB arrives in a new
//! `big-<n>.log`; compaction and garbage collection delete segments), so the reader works in
//! rounds instead of starting over: each round lists the segments again, reads the new ones
//! whole and the small ones (the only ones appended to) from where it stopped, and notes the
//! ones that are gone. It keeps no file open between rounds (one open file per segment would
//! exhaust the descriptors of a spool of many large mails), and no message: where each is,
//! for [`Snapshot::message`] to open the one asked for.
//!
//! The records of a segment that is gone are left out. That is sound because of when the
//! spool deletes a segment (see the [module docs](super)): only once nothing in it is needed
//! — what superseded its records (a newer MAIL or envelope record, a compacted copy) was
//! made durable first, in a segment that existed then, and a segment's DONE records only
//! once every segment holding a MAIL record of those mails is gone. So leaving a gone
//! segment out never brings back a removed mail (its MAIL record's segment went first, and is
//! seen gone too), and what replaced its records is read by the round that sees it gone (they
//! were appended before the deletion, hence before that round reads the tails). Records are
//! keyed by mail name, so no mail is listed twice. Reading stops after a round that found no
//! segment gone: then every mail live when the reading started is seen, with a state it had
//! at some moment since. Under a load that deletes segments in every round, the reading stops
//! after [`ROUNDS`] and says it may have missed mails ([`Snapshot::complete`]): what it shows
//! is still true as of a moment ago. Leases live in the server's memory and are not seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_mailet::{Envelope, Message};

use super::record::{scan_from, KIND_DONE, KIND_ENVELOPE, KIND_ENVELOPE_AT, KIND_MAIL};
use super::LogSpool;
use crate::file::fsutil::open_message_at;
use crate::{Result, StoreError};

/// How many rounds the reader makes at most before it settles for what it has.
const ROUNDS: usize = 50;

/// The spool as read by [`LogSpool::snapshot`]; the default is an empty spool.
#[derive(Debug, Default)]
pub struct Snapshot {
    dir: PathBuf,
    /// The live mails, oldest first.
    pub mails: Vec<SpooledMail>,
    /// Whether the reading ended with a round in which no segment went away. When `false`
    /// (the spool changed in every round), a mail may be missing; the ones shown are true.
    pub complete: bool,
}

/// A spooled mail as read by [`LogSpool::snapshot`]: its envelope, and where its message is.
#[derive(Debug)]
pub struct SpooledMail {
    /// The envelope as last stored; its `size` is the message's.
    pub envelope: Envelope,
    /// When it was requeued for (`None`: due at once).
    pub next_attempt: Option<SystemTime>,
    /// The segment file and the message's place in it.
    message: (String, u64, u64),
}

impl Snapshot {
    /// Opens the message of `mail`. [`StoreError::NotFound`] when its segment was deleted
    /// since the reading (the mail was removed, or moved: read the spool again).
    pub fn message(&self, mail: &SpooledMail) -> Result<Message> {
        let (file, offset, len) = &mail.message;
        match File::open(self.dir.join(file)) {
            Ok(f) => Ok(open_message_at(Arc::new(f), *offset, *len)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(format!(
                "the message of {} (it changed since the spool was read)",
                mail.envelope.name
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

/// The segment files of `dir`: number → file name.
fn segment_names(dir: &Path) -> io::Result<BTreeMap<u64, String>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_suffix(".log")
            .and_then(|stem| stem.split_once('-'))
            .filter(|(kind, _)| *kind == "seg" || *kind == "big")
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.insert(number, name.to_string());
        }
    }
    Ok(found)
}

/// What one segment says of one mail: its latest record of each kind there.
#[derive(Default)]
struct Seen {
    /// seq, envelope, (offset, len) of the message
    mail: Option<(u64, Envelope, (u64, u64))>,
    /// seq, envelope, next attempt
    envelope: Option<(u64, Envelope, Option<SystemTime>)>,
    done: Option<u64>,
}

/// A segment as read so far.
struct Read {
    file: String,
    /// Where reading stopped; a small segment may grow past it.
    end: u64,
    mails: HashMap<String, Seen>,
}

impl Read {
    /// Reads the records from `end` on; `false` when the segment is gone.
    fn advance(&mut self, dir: &Path, number: u64) -> io::Result<bool> {
        let file = match File::open(dir.join(&self.file)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        // Damage is the server's to report; a reader stops there as it does.
        let (records, end) = scan_from(&file, number, self.end)?;
        self.end = end;
        for record in records {
            let s = self.mails.entry(record.name).or_default();
            match record.kind {
                KIND_MAIL if s.mail.as_ref().is_none_or(|m| m.0 < record.seq) => {
                    if let (Some(envelope), Some(at)) = (record.envelope, record.message) {
                        s.mail = Some((record.seq, envelope, at));
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
        Ok(true)
    }
}

impl LogSpool {
    /// The mails of the spool in `dir`, read without the spool's lock and without writing
    /// anything, so that it works while a server runs on the spool; see the
    /// [module docs](self). A directory that does not exist is [`StoreError::NotFound`].
    pub fn snapshot(dir: &Path) -> Result<Snapshot> {
        if !dir.is_dir() {
            return Err(StoreError::NotFound(format!("spool {}", dir.display())));
        }
        let mut read: BTreeMap<u64, Read> = BTreeMap::new();
        let mut gone: HashSet<u64> = HashSet::new();
        let mut complete = false;
        for _ in 0..ROUNDS {
            let listed = segment_names(dir)?;
            let mut vanished = false;
            // Deleted since the last round.
            for number in read.keys() {
                if !listed.contains_key(number) && gone.insert(*number) {
                    vanished = true;
                }
            }
            for (number, file) in listed {
                if gone.contains(&number) {
                    continue;
                }
                let segment = read.entry(number).or_insert_with(|| Read {
                    file: file.clone(),
                    end: 0,
                    mails: HashMap::new(),
                });
                // A large mail's segment is whole once it is listed (written aside and
                // renamed): read once. A small one may have grown.
                if segment.end > 0 && file.starts_with("big-") {
                    continue;
                }
                if !segment.advance(dir, number)? {
                    gone.insert(number);
                    vanished = true;
                }
            }
            if !vanished {
                complete = true;
                break;
            }
        }
        for number in &gone {
            read.remove(number);
        }
        let dir = dir.to_path_buf();
        Ok(Snapshot {
            mails: rebuild(read),
            dir,
            complete,
        })
    }
}

/// The live mails of the segments read, oldest first.
fn rebuild(read: BTreeMap<u64, Read>) -> Vec<SpooledMail> {
    #[derive(Default)]
    struct Latest {
        /// seq, segment, envelope, (offset, len)
        mail: Option<(u64, u64, Envelope, (u64, u64))>,
        envelope: Option<(u64, Envelope, Option<SystemTime>)>,
        done: Option<u64>,
    }
    let mut files = HashMap::new();
    let mut latest: HashMap<String, Latest> = HashMap::new();
    for (number, segment) in read {
        files.insert(number, segment.file);
        for (name, seen) in segment.mails {
            let l = latest.entry(name).or_default();
            if let Some((seq, envelope, at)) = seen.mail {
                if l.mail.as_ref().is_none_or(|m| m.0 < seq) {
                    l.mail = Some((seq, number, envelope, at));
                }
            }
            if let Some(e) = seen.envelope {
                if l.envelope.as_ref().is_none_or(|x| x.0 < e.0) {
                    l.envelope = Some(e);
                }
            }
            l.done = l.done.max(seen.done);
        }
    }
    let mut live = Vec::new();
    for (_, l) in latest {
        let Some((seq, segment, envelope, (offset, len))) = l.mail else {
            continue;
        };
        if l.done.is_some_and(|d| d > seq) {
            continue;
        }
        let (envelope, next_attempt) = match l.envelope {
            Some((at, envelope, next)) if at > seq => (envelope, next),
            _ => (envelope, None),
        };
        live.push((
            seq,
            SpooledMail {
                envelope,
                next_attempt,
                message: (files[&segment].clone(), offset, len),
            },
        ));
    }
    live.sort_by_key(|(seq, _)| *seq);
    live.into_iter().map(|(_, m)| m).collect()
}
