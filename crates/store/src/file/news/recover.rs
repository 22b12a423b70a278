//! Opening a group after any stop, clean or not: the overview is read into memory, and what a
//! crash may have left half-written is found and dropped.
//!
//! A post is acknowledged after one `syncfs` that covers its article file, its renames and its
//! overview lines, all written before it; a crash before that sync may leave an overview line
//! whose article is empty, short or garbage (the file system wrote the rename and the line but
//! not the article's pages), or an article file with no line. So each overview line carries a
//! CRC-32 of its article (`arrival:crc`), and `.synced` records, after each sync, up to where
//! the overview is known durable with its articles. At open, only the lines past that mark are
//! checked against their articles: a line whose article is missing or differs is dropped, and
//! so is an article file with no line (neither was acknowledged); their numbers stay used. Lines
//! written before checksums existed (no `:crc`) were durable before their line was written and
//! are kept as they are.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    corrupt, next_generation, now_secs, rewrite_group, write_meta, Entry, Group, Meta, META,
    OVERVIEW,
};
use crate::Result;

/// The mark file: `len` (u64 LE) and the CRC-32 of those 8 bytes (u32 LE).
pub(super) const SYNCED: &str = ".synced";

/// Opens (creating if needed) a group's mark file.
pub(super) fn open_mark(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(SYNCED))
}

/// The mark, or 0 when it is missing or torn (everything with a checksum is then checked).
pub(super) fn read_mark(file: &File) -> u64 {
    let mut buf = [0u8; 12];
    if file.read_exact_at(&mut buf, 0).is_err() {
        return 0;
    }
    let (len, crc) = buf.split_at(8);
    if crc32fast::hash(len).to_le_bytes() != crc {
        return 0;
    }
    u64::from_le_bytes(len.try_into().unwrap_or_default())
}

/// Overwrites the mark in place (12 bytes, one sector: a crash leaves the old one, the new one,
/// or a torn one that reads as 0). Not synced: the next sync makes it durable, and it never
/// claims more than a finished sync covered.
pub(super) fn write_mark(file: &File, len: u64) -> io::Result<()> {
    let mut buf = [0u8; 12];
    buf[..8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&buf[..8]);
    buf[8..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&buf, 0)
}

/// One overview line: its entry and its article's checksum (none on lines older than checksums).
/// The second field is `arrival`, `arrival:crc` or `arrival:crc:poster` (hex).
pub(super) fn parse_line(line: &[u8], offset: u64) -> Option<(Entry, Option<u32>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.trim_end_matches('\n').split('\t');
    let number = parts.next()?.parse().ok()?;
    let mut arrival = parts.next()?.split(':');
    let arrived = arrival.next()?.parse().ok()?;
    let crc = match arrival.next() {
        Some(crc) => Some(u32::from_str_radix(crc, 16).ok()?),
        None => None,
    };
    let poster = match arrival.next() {
        Some(hex) => Some(std::sync::Arc::from(unhex(hex)?.as_str())),
        None => None,
    };
    let id = parts.nth(3)?;
    Some((
        Entry {
            number,
            arrived,
            id: std::sync::Arc::from(id),
            poster,
            offset,
            len: line.len() as u32,
        },
        crc,
    ))
}

fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Whether article `number` of `dir` is there with the checksum its line recorded.
fn intact(dir: &Path, number: u64, crc: u32) -> Result<bool> {
    match fs::read(dir.join(number.to_string())) {
        Ok(octets) => Ok(crc32fast::hash(&octets) == crc),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads a group directory: meta, overview (a torn last line is cut off), the lines past the
/// mark checked against their articles, and article files with no line removed.
pub(super) fn load_group(dir: &Path) -> Result<Group> {
    let meta_path = dir.join(META);
    let meta: Meta = match fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(&meta_path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let meta = Meta {
                created: now_secs(),
                high: 0,
            };
            write_meta(dir, &meta)?;
            meta
        }
        Err(e) => return Err(e.into()),
    };
    let path = dir.join(OVERVIEW);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let contents = fs::read(&path)?;
    let mut lines = Vec::new();
    let mut offset = 0u64;
    let mut good = 0u64;
    for line in contents.split_inclusive(|&b| b == b'\n') {
        let len = line.len() as u64;
        if line.ends_with(b"\n") {
            if let Some(parsed) = parse_line(line, offset) {
                lines.push(parsed);
            }
            good = offset + len;
        }
        offset += len;
    }
    if good < contents.len() as u64 {
        file.set_len(good)?;
        file.sync_all()?;
    }
    let mark_file = open_mark(dir)?;
    // A mark past the end, or inside a line, is rounded down to the line before it.
    let mark = read_mark(&mark_file).min(good) as usize;
    let mark = contents[..mark]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1) as u64;

    let files: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    let high = lines
        .iter()
        .map(|(e, _)| e.number)
        .chain(files.iter().copied())
        .fold(meta.high, u64::max);

    // Recorded before anything is dropped: those numbers stay used.
    if high > meta.high {
        write_meta(
            dir,
            &Meta {
                created: meta.created,
                high,
            },
        )?;
    }
    let mut entries = Vec::with_capacity(lines.len());
    let mut dropped = 0usize;
    for (entry, crc) in lines {
        match crc {
            Some(crc) if entry.offset >= mark && !intact(dir, entry.number, crc)? => {
                dropped += 1;
            }
            _ => entries.push(entry),
        }
    }
    // Parallel posts append out of order; a number twice keeps its first line.
    entries.sort_by_key(|e| e.number);
    entries.dedup_by_key(|e| e.number);
    for n in files {
        if entries.binary_search_by_key(&n, |e| e.number).is_err() {
            // Never acknowledged: its line was not durable, or the crash came before it.
            match fs::remove_file(dir.join(n.to_string())) {
                Ok(()) => dropped += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut group = Group {
        dir: dir.to_path_buf(),
        dir_fd: std::sync::Arc::new(File::open(dir)?),
        incarnation: next_generation(),
        created: meta.created,
        high,
        shown_high: high,
        entries,
        in_flight: Vec::new(),
        overview: std::sync::Arc::new(file),
        overview_len: good,
        mark: mark_file,
        synced: mark,
        generation: next_generation(),
    };
    if dropped > 0 {
        tracing::warn!(
            group = %dir.display(),
            dropped,
            "news: dropped articles a crash left unfinished (never acknowledged)"
        );
        rewrite_group(&mut group)?;
    }
    Ok(group)
}
