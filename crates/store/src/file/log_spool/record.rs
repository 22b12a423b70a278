//! The record format: headers, their CRCs, and reading a segment's records back ([`scan`]).
//! No state and no writing beyond building bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_mailet::Envelope;

pub(super) const MAGIC: &[u8; 4] = b"MRLG";
pub(super) const HEADER: usize = 36;
pub(super) const KIND_MAIL: u8 = 1;
pub(super) const KIND_ENVELOPE: u8 = 2;
pub(super) const KIND_DONE: u8 = 3;
pub(super) const KIND_ENVELOPE_AT: u8 = 4;

pub(super) fn segment_path(dir: &Path, number: u64, big: bool) -> PathBuf {
    dir.join(format!(
        "{}-{number:016}.log",
        if big { "big" } else { "seg" }
    ))
}

/// The CRC of a header's first 32 octets, salted with the number of the segment it belongs to:
/// a record is only ever valid in its own segment, so stale blocks of a deleted segment that
/// surface in another file after a power loss are never read as records.
pub(super) fn header_crc(h: &[u8; HEADER], segment: u64) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[0..32]);
    crc.update(&segment.to_le_bytes());
    crc.finalize()
}

/// The header of a record in `segment`.
pub(super) fn header(
    segment: u64,
    kind: u8,
    seq: u64,
    name: &str,
    payload_len: u64,
    payload_crc: u32,
) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(MAGIC);
    h[4] = kind;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    h[20..28].copy_from_slice(&payload_len.to_le_bytes());
    h[28..32].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = header_crc(&h, segment);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn envelope_json(envelope: &Envelope) -> io::Result<Vec<u8>> {
    serde_json::to_vec(envelope).map_err(io::Error::other)
}

/// A next attempt time as stored: milliseconds since the Unix epoch.
pub(super) fn time_octets(at: SystemTime) -> [u8; 8] {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX).to_le_bytes()
}

fn time_from(octets: [u8; 8]) -> SystemTime {
    let millis = u64::from_le_bytes(octets);
    UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .unwrap_or(UNIX_EPOCH)
}

/// The envelope at the end of a MAIL payload: `(envelope, message length)`.
fn mail_envelope(file: &File, payload: u64, payload_len: u64) -> io::Result<(Envelope, u64)> {
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, payload + payload_len - 4)?;
    let json_len = u64::from(u32::from_le_bytes(len));
    let message_len = payload_len
        .checked_sub(4 + json_len)
        .ok_or_else(|| io::Error::other("envelope longer than its record"))?;
    let mut json = vec![0u8; json_len as usize];
    file.read_exact_at(&mut json, payload + message_len)?;
    let envelope = serde_json::from_slice(&json).map_err(io::Error::other)?;
    Ok((envelope, message_len))
}

/// One record found by [`scan`].
pub(super) struct Scanned {
    pub kind: u8,
    pub seq: u64,
    pub name: String,
    /// The envelope of MAIL and ENVELOPE(_AT) records.
    pub envelope: Option<Envelope>,
    /// The next attempt time of an ENVELOPE_AT record.
    pub next_attempt: Option<SystemTime>,
    /// Where a MAIL record's message is.
    pub message: Option<(u64, u64)>,
}

/// Reads the whole records of a segment, in order; stops at the first one that is not whole.
/// Also says whether what follows looks like damage rather than a torn last record: a whole
/// record header further on.
pub(super) fn scan(file: &File, segment: u64) -> io::Result<(Vec<Scanned>, bool)> {
    let (records, at) = scan_from(file, segment, 0)?;
    let len = file.metadata()?.len();
    let damaged = at < len && header_after(file, segment, at + 1, len)?;
    Ok((records, damaged))
}

/// The whole records from `from` on (where an earlier scan stopped: a segment is only
/// appended to), and where this scan stopped. Looks for no damage beyond.
pub(super) fn scan_from(file: &File, segment: u64, from: u64) -> io::Result<(Vec<Scanned>, u64)> {
    let len = file.metadata()?.len();
    let mut records = Vec::new();
    let mut at = from;
    let mut buf = vec![0u8; 64 * 1024];
    while at + HEADER as u64 <= len {
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, at)?;
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 octets"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 octets"));
        if &h[0..4] != MAGIC || u32_at(32) != header_crc(&h, segment) {
            break;
        }
        let kind = h[4];
        let seq = u64_at(8);
        let name_len = u64::from(u32_at(16));
        let payload_len = u64_at(20);
        let payload_crc = u32_at(28);
        let payload = at + HEADER as u64 + name_len;
        let Some(end) = payload.checked_add(payload_len).filter(|end| *end <= len) else {
            break;
        };
        // Check the name and payload against their CRC.
        let mut crc = crc32fast::Hasher::new();
        let mut pos = at + HEADER as u64;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            crc.update(&buf[..n]);
            pos += n as u64;
        }
        if crc.finalize() != payload_crc {
            break;
        }
        let mut name = vec![0u8; name_len as usize];
        file.read_exact_at(&mut name, at + HEADER as u64)?;
        let Ok(name) = String::from_utf8(name) else {
            break;
        };
        let mut scanned = Scanned {
            kind,
            seq,
            name,
            envelope: None,
            next_attempt: None,
            message: None,
        };
        match kind {
            KIND_MAIL => {
                let Ok((envelope, message_len)) = mail_envelope(file, payload, payload_len) else {
                    break;
                };
                scanned.envelope = Some(envelope);
                scanned.message = Some((payload, message_len));
            }
            KIND_ENVELOPE | KIND_ENVELOPE_AT => {
                let mut json = vec![0u8; payload_len as usize];
                file.read_exact_at(&mut json, payload)?;
                let json = if kind == KIND_ENVELOPE_AT {
                    let Some((time, json)) = json.split_first_chunk::<8>() else {
                        break;
                    };
                    scanned.next_attempt = Some(time_from(*time));
                    json
                } else {
                    &json[..]
                };
                let Ok(envelope) = serde_json::from_slice(json) else {
                    break;
                };
                scanned.envelope = Some(envelope);
            }
            KIND_DONE => {}
            _ => break,
        }
        records.push(scanned);
        at = end;
    }
    Ok((records, at))
}

/// Whether a record header with a valid CRC starts anywhere in `from..len`.
fn header_after(file: &File, segment: u64, from: u64, len: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos + HEADER as u64 <= len {
        let n = (chunk.len() as u64).min(len - pos) as usize;
        file.read_exact_at(&mut chunk[..n], pos)?;
        for i in chunk[..n]
            .windows(MAGIC.len())
            .enumerate()
            .filter(|(_, w)| w == MAGIC)
            .map(|(i, _)| i)
        {
            let mut h = [0u8; HEADER];
            let at = pos + i as u64;
            if at + HEADER as u64 <= len {
                file.read_exact_at(&mut h, at)?;
                let crc = u32::from_le_bytes(h[32..36].try_into().expect("4 octets"));
                if crc == header_crc(&h, segment) {
                    return Ok(true);
                }
            }
        }
        // Overlap so that a header across two chunks is seen.
        pos += n.saturating_sub(HEADER) as u64 + 1;
    }
    Ok(false)
}
