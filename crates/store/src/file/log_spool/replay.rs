//! Opening a spool: the directory lock, reading every segment, rebuilding the index from the
//! records, and importing mails of the older one-file-per-mail format.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mailroom_mailet::Envelope;

use super::record::{scan, Scanned, KIND_ENVELOPE, KIND_ENVELOPE_AT, KIND_MAIL};
use super::segments::Segment;
use super::{Content, Entry, Inner, LogSpool};
use crate::blocking::MailRepository;
use crate::file::fsutil::{try_lock, FileLock};
use crate::file::FileMailRepository;
use crate::Result;

/// Locks the spool directory for this process: a second process on the same spool would
/// delete segments the first one still writes.
pub(super) fn lock_directory(dir: &Path) -> Result<FileLock> {
    try_lock(&dir.join("lock"))?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another process", dir.display()),
        )
        .into()
    })
}

/// Every segment of a spool directory, by number, and their whole records in order, each
/// with the number of its segment.
pub(super) type Loaded = (BTreeMap<u64, Segment>, Vec<(u64, Scanned)>);

/// Reads every segment of `dir`.
pub(super) fn load(dir: &Path) -> Result<Loaded> {
    let mut found: Vec<(u64, bool, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parsed = file_name.strip_suffix(".log").and_then(|stem| {
            let (kind, number) = stem.split_once('-')?;
            Some((number.parse::<u64>().ok()?, kind == "big"))
        });
        if let Some((number, big)) = parsed {
            found.push((number, big, path));
        } else if file_name.ends_with(".log.tmp") {
            // A large mail whose commit a crash cut short: never acknowledged.
            let _ = fs::remove_file(&path);
        }
    }
    found.sort();
    let mut segments = BTreeMap::new();
    let mut records: Vec<(u64, Scanned)> = Vec::new();
    for (number, big, path) in found {
        let file = File::options().read(true).write(true).open(&path)?;
        // After a kill -9 the last records may be in the page cache only: make them
        // durable before trusting them to supersede older ones.
        file.sync_data()?;
        let (scanned, damaged) = scan(&file, number)?;
        if damaged {
            // Records after a damaged one cannot be trusted (nor found safely), and
            // acknowledged mails may be among them: keep the file for an administrator.
            tracing::error!(segment = %path.display(), records = scanned.len(),
                "spool segment damaged in the middle; reading stopped there, and the file is kept");
        }
        records.extend(scanned.into_iter().map(|r| (number, r)));
        let mut segment = Segment::new(number, file, path, big);
        segment.keep = damaged;
        segments.insert(number, segment);
    }
    Ok((segments, records))
}

/// Rebuilds the index from the records of every segment.
pub(super) fn replay(inner: &mut Inner, records: Vec<(u64, Scanned)>) {
    #[derive(Default)]
    struct Seen {
        mail: Option<(u64, u64, Envelope, Content)>,
        envelope: Option<(u64, u64, Envelope, Option<SystemTime>)>,
        done: Option<(u64, u64)>,
        mail_segments: Vec<u64>,
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for (segment, record) in records {
        let s = seen.entry(record.name).or_default();
        match record.kind {
            KIND_MAIL => {
                let (offset, len) = record.message.expect("MAIL records have a message");
                s.mail_segments.push(segment);
                if s.mail.as_ref().is_none_or(|m| m.0 < record.seq) {
                    let content = Content {
                        segment,
                        offset,
                        len,
                    };
                    let envelope = record.envelope.expect("MAIL records have an envelope");
                    s.mail = Some((record.seq, segment, envelope, content));
                }
            }
            KIND_ENVELOPE | KIND_ENVELOPE_AT => {
                if s.envelope.as_ref().is_none_or(|e| e.0 < record.seq) {
                    let envelope = record.envelope.expect("ENVELOPE records have one");
                    s.envelope = Some((record.seq, segment, envelope, record.next_attempt));
                }
            }
            _ => {
                if s.done.is_none_or(|d| d.0 < record.seq) {
                    s.done = Some((record.seq, segment));
                }
            }
        }
    }
    for (name, s) in seen {
        let Some((mail_seq, mail_segment, mail_envelope, content)) = s.mail else {
            continue;
        };
        if let Some((_, done_segment)) = s.done.filter(|d| d.0 > mail_seq) {
            // Ended: its DONE must outlive every MAIL record of it.
            if let Some(segment) = inner.segments.get_mut(&done_segment) {
                segment.done_refs.extend(
                    s.mail_segments
                        .iter()
                        .copied()
                        .filter(|&m| m != done_segment),
                );
            }
            continue;
        }
        let (envelope_segment, envelope, next_attempt) = match s.envelope {
            Some((seq, segment, envelope, at)) if seq > mail_seq => (segment, envelope, at),
            _ => (mail_segment, mail_envelope, None),
        };
        let content_pin = inner.segments[&content.segment].pin();
        let envelope_pin = inner.segments[&envelope_segment].pin();
        inner.mails.insert(
            name,
            Entry {
                seq: mail_seq,
                content,
                _content_pin: content_pin,
                envelope,
                envelope_pin,
                next_attempt,
                mail_segments: s.mail_segments,
            },
        );
    }
}

impl LogSpool {
    /// Moves mails of the one-file-per-mail format into the log.
    pub(super) fn import_mail_files(&self, dir: &Path) -> Result<()> {
        let has_mail_files = fs::read_dir(dir)?.any(|e| {
            e.ok().is_some_and(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".mail") || name.ends_with(".free")
            })
        });
        if !has_mail_files {
            return Ok(());
        }
        let old = FileMailRepository::open(dir)?;
        let names = old.list()?;
        tracing::info!(spool = %dir.display(), mails = names.len(), "importing spooled mails into the log");
        for name in &names {
            if let Some((mail, _)) = old.retrieve_checked(name, true)? {
                self.store(&mail)?;
            }
        }
        // Durable in the log (each store waited for it): the old files can go.
        for name in &names {
            old.remove(name)?;
        }
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "free") {
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }
}
